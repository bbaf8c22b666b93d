//! Compaction: merge a partition's small files into large, sorted ones (pure planner,
//! streaming executor).
//!
//! Contract:
//! - [`plan`] is pure. Per partition it takes the live files that are *small* (below half
//!   the target size) or *badly shaped* (several row groups averaging below an eighth of
//!   the configured row-group size), at least `min_file_age_ms` old, oldest first, and
//!   packs them into jobs of at most `target_file_bytes`. A job is emitted when it is full,
//!   when it holds `min_files` files (tiered: its output is merged again later), or when
//!   the partition's day is over (`date` < the UTC day of `now`), so a finished day ends
//!   as files of about the target size, one smaller file at most.
//! - [`execute`] streams: every input is read in batches of [`MERGE_BATCH_ROWS`] rows and
//!   the inputs, each already sorted by the sort columns, are k-way merged, so memory is
//!   the inputs' bytes (at most the target size) plus one batch per input plus the open
//!   row group. The output is sorted by the sort columns (ties: input order, then row
//!   order) and written with the caller's writer properties. It is committed as one
//!   `OPTIMIZE` commit removing exactly the inputs; if another writer removed one first,
//!   the output is deleted and [`TableError::Conflict`] returned.
//! - [`Pace::step`] is called after every output batch with the bytes read and written
//!   since the last call; the caller sleeps there to bound CPU and IO (the server does,
//!   `hexflow lake compact` runs flat out).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use crate::log::{Add, StringMap};
use crate::snapshot::Snapshot;
use crate::stats::FileStats;
use crate::table::{Commit, CommitOutcome, TAG_ROW_GROUPS, Table, TableError};
use crate::time::Date;

/// Rows per batch read from an input and written to the output.
pub const MERGE_BATCH_ROWS: usize = 8_192;

/// What the planner needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactOptions {
    /// Largest output file, bytes (inputs are packed up to it).
    pub target_file_bytes: u64,
    /// A partial job of this many files is merged anyway.
    pub min_files: usize,
    /// Files younger than this are left alone, ms.
    pub min_file_age_ms: u64,
    /// The row-group size files should have, rows.
    pub row_group_rows: u64,
}

/// One merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Directory of the partition, relative to the table root (`date=2026-11-25`).
    pub partition_dir: String,
    /// Its partition values.
    pub partition_values: StringMap,
    /// Input files (table-relative paths), oldest first.
    pub inputs: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
    /// Their rows.
    pub rows: u64,
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn needs_merge(add: &Add, opts: &CompactOptions) -> bool {
    let size = u64::try_from(add.size).unwrap_or(u64::MAX);
    if size < opts.target_file_bytes / 2 {
        return true;
    }
    let groups: u64 = add
        .tags
        .as_ref()
        .and_then(|t| t.get(TAG_ROW_GROUPS).cloned().flatten())
        .and_then(|g| g.parse().ok())
        .unwrap_or(1);
    let rows = FileStats::of(add).map_or(0, |s| s.num_records);
    groups > 1 && rows / groups.max(1) < opts.row_group_rows / 8
}

fn day_over(values: &StringMap, now_ms: i64) -> bool {
    values
        .get("date")
        .cloned()
        .flatten()
        .and_then(|d| Date::parse(&d))
        .is_some_and(|d| d < Date::of_ms(now_ms))
}

/// Plans compaction jobs for a snapshot (pure; see the module contract).
pub fn plan(snap: &Snapshot, opts: &CompactOptions, now_ms: i64) -> Vec<Job> {
    let age = i64::try_from(opts.min_file_age_ms).unwrap_or(i64::MAX);
    let mut by_partition: BTreeMap<&str, Vec<&Add>> = BTreeMap::new();
    for add in snap.files.values() {
        if needs_merge(add, opts) && add.modification_time.saturating_add(age) <= now_ms {
            by_partition.entry(dir_of(&add.path)).or_default().push(add);
        }
    }
    let mut jobs = Vec::new();
    for (dir, mut files) in by_partition {
        files.sort_by(|a, b| (a.modification_time, &a.path).cmp(&(b.modification_time, &b.path)));
        let over = day_over(&files[0].partition_values, now_ms);
        let mut job: Option<Job> = None;
        for add in files {
            let size = u64::try_from(add.size).unwrap_or(0);
            if let Some(j) = &job {
                if j.bytes + size > opts.target_file_bytes {
                    jobs.extend(job.take().filter(|j| j.inputs.len() > 1));
                }
            }
            let j = job.get_or_insert_with(|| Job {
                partition_dir: dir.to_string(),
                partition_values: add.partition_values.clone(),
                inputs: Vec::new(),
                bytes: 0,
                rows: 0,
            });
            j.inputs.push(add.path.clone());
            j.bytes += size;
            j.rows += FileStats::of(add).map_or(0, |s| s.num_records);
        }
        if let Some(j) = job {
            if j.inputs.len() > 1 && (over || j.inputs.len() >= opts.min_files) {
                jobs.push(j);
            }
        }
    }
    jobs
}

/// Told after every output batch how many bytes were read and written since the last
/// call; may sleep to bound the rate.
pub trait Pace {
    /// Accounts for `bytes` of IO and the work done since the last call.
    fn step(&mut self, bytes: u64);
}

/// No pacing.
#[derive(Debug, Default)]
pub struct Unpaced;

impl Pace for Unpaced {
    fn step(&mut self, _bytes: u64) {}
}

struct Input {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    rows: Option<Rows>,
    at: usize,
}

/// Merges sorted inputs into sorted batches.
struct Merge<'a> {
    inputs: Vec<Input>,
    converter: RowConverter,
    sort_idx: Vec<usize>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    pace: &'a mut dyn Pace,
    bytes_per_row: u64,
}

impl Merge<'_> {
    fn advance(&mut self, i: usize) -> Result<(), ArrowError> {
        let input = &mut self.inputs[i];
        if input
            .batch
            .as_ref()
            .is_some_and(|b| input.at < b.num_rows())
        {
            let row = input
                .rows
                .as_ref()
                .map(|r| r.row(input.at).as_ref().to_vec());
            if let Some(row) = row {
                self.heap.push(Reverse((row, i)));
            }
            return Ok(());
        }
        match input.reader.next() {
            Some(batch) => {
                let batch = batch?;
                let cols: Vec<ArrayRef> = self
                    .sort_idx
                    .iter()
                    .map(|&c| batch.column(c).clone())
                    .collect();
                input.rows = Some(self.converter.convert_columns(&cols)?);
                input.batch = Some(batch);
                input.at = 0;
                self.advance(i)
            }
            None => {
                input.batch = None;
                input.rows = None;
                Ok(())
            }
        }
    }

    /// The next output batch, or `None` when every input is exhausted.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        // Batches referenced by this output batch: (input, its batch).
        let mut slots: Vec<RecordBatch> = Vec::new();
        let mut slot_of: Vec<Option<usize>> = vec![None; self.inputs.len()];
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(MERGE_BATCH_ROWS);
        while picks.len() < MERGE_BATCH_ROWS {
            let Some(Reverse((_, i))) = self.heap.pop() else {
                break;
            };
            let input = &mut self.inputs[i];
            let Some(batch) = &input.batch else { continue };
            let slot = *slot_of[i].get_or_insert_with(|| {
                slots.push(batch.clone());
                slots.len() - 1
            });
            picks.push((slot, input.at));
            input.at += 1;
            if input.at >= batch.num_rows() {
                // The next batch of this input gets a new slot.
                slot_of[i] = None;
            }
            self.advance(i)?;
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let schema = slots[0].schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn arrow::array::Array> =
                    slots.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &picks)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = RecordBatch::try_new(schema, columns)?;
        self.pace
            .step(self.bytes_per_row.saturating_mul(2 * out.num_rows() as u64));
        Ok(Some(out))
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// The version committed.
    pub version: u64,
    /// The file written (table-relative).
    pub output: String,
    /// Its bytes.
    pub bytes: u64,
    /// Rows merged.
    pub rows: u64,
}

/// Merges a job's inputs into one file sorted by `sort_columns` and commits it (see the
/// module contract). `name` is the output file name (unique per writer).
///
/// # Errors
/// [`TableError`]; a failed job leaves the table unchanged (its output, if written, is
/// deleted or left for vacuum as untracked).
#[allow(clippy::too_many_arguments)]
pub fn execute(
    table: &mut Table,
    job: &Job,
    name: &str,
    sort_columns: &[&str],
    props: WriterProperties,
    pace: &mut dyn Pace,
    now_ms: i64,
) -> Result<JobOutcome, TableError> {
    let mut merge = open_merge(table, job, sort_columns, pace)?;
    let batches = std::iter::from_fn(|| merge.next_batch().transpose());
    let add = table.write_file(
        &job.partition_dir,
        name,
        job.partition_values.clone(),
        batches,
        props,
        false,
        now_ms,
    )?;
    commit_output(table, job, add, now_ms)
}

/// A merge of the job's inputs, each read in `MERGE_BATCH_ROWS` batches and compared on
/// `sort_columns` through one row converter, primed with each input's first row.
fn open_merge<'a>(
    table: &Table,
    job: &Job,
    sort_columns: &[&str],
    pace: &'a mut dyn Pace,
) -> Result<Merge<'a>, TableError> {
    let schema = table.spec().schema.clone();
    let arrow_err = |source| TableError::Arrow {
        table: table.spec().name.clone(),
        source,
    };
    let sort_idx = sort_columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_err)?;
    let fields = sort_idx
        .iter()
        .map(|&i| SortField::new(schema.field(i).data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(arrow_err)?;
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for path in &job.inputs {
        let bytes = bytes::Bytes::from(table.read_file(path)?);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.with_batch_size(MERGE_BATCH_ROWS).build())
            .map_err(|source| TableError::Parquet {
                table: table.spec().name.clone(),
                path: path.clone(),
                source,
            })?;
        inputs.push(Input {
            reader,
            batch: None,
            rows: None,
            at: 0,
        });
    }
    let mut merge = Merge {
        inputs,
        converter,
        sort_idx,
        heap: BinaryHeap::new(),
        pace,
        bytes_per_row: job.bytes / job.rows.max(1),
    };
    for i in 0..merge.inputs.len() {
        merge.advance(i).map_err(arrow_err)?;
    }
    Ok(merge)
}

/// Commits the merged file `add` in place of the job's inputs (one `OPTIMIZE` commit); if
/// the commit fails, the output is deleted (nobody will ever read it).
fn commit_output(
    table: &mut Table,
    job: &Job,
    add: Add,
    now_ms: i64,
) -> Result<JobOutcome, TableError> {
    let rows = FileStats::of(&add).map_or(0, |s| s.num_records);
    let output = add.path.clone();
    let bytes = u64::try_from(add.size).unwrap_or(0);
    let commit = Commit {
        operation: "OPTIMIZE".into(),
        parameters: [
            ("partition".to_string(), job.partition_dir.clone()),
            ("rows".to_string(), rows.to_string()),
        ]
        .into(),
        adds: vec![add],
        removes: job.inputs.clone(),
        txn: None,
    };
    let version = match table.commit(commit, now_ms) {
        Ok(CommitOutcome::Committed { version })
        | Ok(CommitOutcome::AlreadyCommitted { version }) => version,
        Ok(_) => table.snapshot().version,
        Err(e) => {
            let path = table.data_path(&output);
            let _ = table.store().delete_many(&[path]);
            return Err(e);
        }
    };
    Ok(JobOutcome {
        version,
        output,
        bytes,
        rows,
    })
}
