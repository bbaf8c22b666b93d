//! Retention and per-row erasure: removing data as commits.
//!
//! Contract:
//! - [`plan_retention`] (pure) names the live files whose `date` partition is more than
//!   `days` days before the UTC day of `now`; [`Table::apply_retention`] removes them in
//!   one `DELETE` commit (their bytes go after the superseded grace period, by vacuum).
//! - [`Table::erase_rows`] rewrites every live file that may hold a row whose `column`
//!   equals `value` (by the file's min/max statistics; a file without them is read) into
//!   a file without those rows (same order, same encoding) and commits all removals and
//!   additions as ONE `DELETE` commit, then [`Table::forget_history`] deletes the old files
//!   and every older log entry at once. The commit's parameters never name the value.

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use crate::snapshot::Snapshot;
use crate::stats::FileStats;
use crate::table::{Commit, Table, TableError};
use crate::time::Date;
use crate::vacuum::VacuumReport;

/// Live files whose `date` partition is older than `days` days before the day of
/// `now_ms` (pure). `days == 0`: none.
pub fn plan_retention(snap: &Snapshot, days: u32, now_ms: i64) -> Vec<String> {
    if days == 0 {
        return Vec::new();
    }
    let cutoff = Date::of_ms(now_ms).days() - i64::from(days);
    snap.files
        .values()
        .filter(|a| {
            a.partition_values
                .get("date")
                .cloned()
                .flatten()
                .and_then(|d| Date::parse(&d))
                .is_some_and(|d| d.days() < cutoff)
        })
        .map(|a| a.path.clone())
        .collect()
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseReport {
    /// Files read.
    pub files_scanned: usize,
    /// Files rewritten (or dropped when nothing else was in them).
    pub files_rewritten: usize,
    /// Rows removed.
    pub rows_removed: u64,
    /// The commit (`None`: nothing matched).
    pub version: Option<u64>,
    /// What forgetting the history deleted.
    pub vacuum: VacuumReport,
}

impl Table {
    /// Removes the files [`plan_retention`] names in one commit.
    ///
    /// # Errors
    /// See [`Table::commit`].
    pub fn apply_retention(&mut self, days: u32, now_ms: i64) -> Result<usize, TableError> {
        self.refresh()?;
        let removes = plan_retention(self.snapshot(), days, now_ms);
        let n = removes.len();
        if n > 0 {
            let commit = Commit {
                operation: "DELETE".into(),
                parameters: [("predicate".to_string(), format!("older than {days} days"))].into(),
                removes,
                ..Commit::default()
            };
            self.commit(commit, now_ms)?;
        }
        Ok(n)
    }

    /// Erases every row whose Int64 `column` equals `value` (see the module contract).
    /// New files are named `<name_prefix>-<n>.parquet` beside the files they replace.
    ///
    /// # Errors
    /// [`TableError`]; before the commit the table is unchanged (new files are untracked
    /// and vacuum removes them).
    pub fn erase_rows(
        &mut self,
        column: &str,
        value: i64,
        props: WriterProperties,
        name_prefix: &str,
        now_ms: i64,
    ) -> Result<EraseReport, TableError> {
        self.refresh()?;
        let col = self
            .spec()
            .schema
            .index_of(column)
            .map_err(|source| TableError::Arrow {
                table: self.spec().name.clone(),
                source,
            })?;
        let candidates: Vec<_> = self
            .snapshot()
            .files
            .values()
            .filter(|a| {
                FileStats::of(a)
                    .and_then(|s| s.i64_range(column))
                    .is_none_or(|(lo, hi)| lo <= value && value <= hi)
            })
            .cloned()
            .collect();
        let mut report = EraseReport::default();
        let mut commit = Commit {
            operation: "DELETE".into(),
            parameters: [("predicate".to_string(), format!("{column} = <erased>"))].into(),
            ..Commit::default()
        };
        for (n, add) in candidates.iter().enumerate() {
            report.files_scanned += 1;
            let kept = self.rows_without(&add.path, col, value)?;
            let total: usize = kept.iter().map(|(_, all)| all).sum();
            let left: usize = kept.iter().map(|(b, _)| b.num_rows()).sum();
            if left == total {
                continue;
            }
            report.rows_removed += (total - left) as u64;
            report.files_rewritten += 1;
            commit.removes.push(add.path.clone());
            if left > 0 {
                let dir = add.path.rsplit_once('/').map_or("", |(d, _)| d);
                let name = format!("{name_prefix}-{n:06}.parquet");
                let new = self.write_file(
                    dir,
                    &name,
                    add.partition_values.clone(),
                    kept.into_iter().map(|(b, _)| Ok(b)),
                    props.clone(),
                    true,
                    now_ms,
                )?;
                commit.adds.push(new);
            }
        }
        if commit.removes.is_empty() {
            return Ok(report);
        }
        report.version = match self.commit(commit, now_ms)? {
            crate::CommitOutcome::Committed { version } => Some(version),
            _ => None,
        };
        report.vacuum = self.forget_history(now_ms)?;
        Ok(report)
    }

    /// The batches of a file with the rows `column == value` filtered out, each with the
    /// number of rows it had.
    fn rows_without(
        &self,
        path: &str,
        col: usize,
        value: i64,
    ) -> Result<Vec<(RecordBatch, usize)>, TableError> {
        let pq = |source| TableError::Parquet {
            table: self.spec().name.clone(),
            path: path.to_string(),
            source,
        };
        let arrow = |source| TableError::Arrow {
            table: self.spec().name.clone(),
            source,
        };
        let bytes = bytes::Bytes::from(self.read_file(path)?);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(pq)?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(arrow)?;
            let ids = batch
                .column(col)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| {
                    arrow(arrow::error::ArrowError::SchemaError(format!(
                        "column {col} is not Int64"
                    )))
                })?;
            let keep: BooleanArray = ids.iter().map(|v| Some(v != Some(value))).collect();
            let n = batch.num_rows();
            let kept = filter_record_batch(&batch, &keep).map_err(arrow)?;
            out.push((kept, n));
        }
        Ok(out)
    }
}
