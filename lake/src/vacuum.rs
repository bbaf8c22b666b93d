//! Vacuum: delete what no reader needs any more (pure planner, then the executor).
//!
//! Contract ([`plan`] is pure; [`Table::vacuum`] lists, plans, deletes):
//! - A **superseded** file (removed by a commit: compaction, retention, erasure) is deleted
//!   once `superseded_grace_ms` has passed since that commit. Until then a query that
//!   started before the commit, or time travel to an earlier version, still reads it.
//!   Readers that ignore the log see the old and the new files side by side during the
//!   grace period (rows doubled for them), and exactly the table after it.
//! - An **untracked** file (under the table root, named by no commit: the output of a
//!   compaction or erasure that crashed before committing, a leftover temporary file) is
//!   deleted once it is `untracked_grace_ms` old, so a writer still busy with it is never
//!   robbed.
//! - **Log** files older than `log_retention_ms` are deleted when a newer checkpoint
//!   covers them (time travel reaches back to the oldest checkpoint kept).
//! - [`Table::forget_history`] (erasure): checkpoint now, then delete every older commit
//!   and checkpoint at once, so no log file still names a removed row's statistics.
//! - Never deletes a live file, `_last_checkpoint`, the newest checkpoint or a commit
//!   after it.

use std::collections::BTreeSet;

use crate::log::LogFile;
use crate::snapshot::Snapshot;
use crate::store::ObjectMeta;
use crate::table::{Table, TableError};

/// Vacuum's grace periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VacuumOptions {
    /// Superseded files are kept this long after the commit that replaced them, ms.
    pub superseded_grace_ms: u64,
    /// Files no commit names are kept this long after their last modification, ms.
    pub untracked_grace_ms: u64,
    /// Commit files are kept this long, ms (and while no newer checkpoint covers them).
    pub log_retention_ms: u64,
}

/// What to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumPlan {
    /// Superseded data files (store paths).
    pub superseded: Vec<String>,
    /// Untracked files (store paths).
    pub untracked: Vec<String>,
    /// Log files (store paths).
    pub log: Vec<String>,
    /// Bytes of everything above.
    pub bytes: u64,
}

impl VacuumPlan {
    /// Every path to delete.
    pub fn paths(&self) -> Vec<String> {
        let mut v = self.superseded.clone();
        v.extend(self.untracked.iter().cloned());
        v.extend(self.log.iter().cloned());
        v
    }
}

fn older(modified_ms: i64, grace_ms: u64, now_ms: i64) -> bool {
    modified_ms.saturating_add(i64::try_from(grace_ms).unwrap_or(i64::MAX)) <= now_ms
}

/// Plans a vacuum of the table at `root` (pure). `data` is the listing of `root` (the
/// log directory's entries are ignored), `log` the parsed log files.
pub fn plan(
    snap: &Snapshot,
    root: &str,
    data: &[ObjectMeta],
    log: &[(LogFile, String, i64)],
    opts: VacuumOptions,
    now_ms: i64,
) -> VacuumPlan {
    let mut out = VacuumPlan::default();
    let log_prefix = format!("{root}/_delta_log/");
    for o in data {
        if o.path.starts_with(&log_prefix) {
            continue;
        }
        let Some(rel) = o.path.strip_prefix(&format!("{root}/")) else {
            continue;
        };
        if snap.files.contains_key(rel) {
            continue;
        }
        if let Some(r) = snap.tombstones.get(rel) {
            if older(
                r.deletion_timestamp.unwrap_or(0),
                opts.superseded_grace_ms,
                now_ms,
            ) {
                out.superseded.push(o.path.clone());
                out.bytes += o.size;
            }
        } else if older(o.modified_ms, opts.untracked_grace_ms, now_ms) {
            out.untracked.push(o.path.clone());
            out.bytes += o.size;
        }
    }
    let newest_checkpoint = log
        .iter()
        .filter_map(|(f, _, _)| match f {
            LogFile::Checkpoint(v) if *v <= snap.version => Some(*v),
            _ => None,
        })
        .max();
    if let Some(cp) = newest_checkpoint {
        for (f, path, modified) in log {
            let v = match f {
                LogFile::Commit(v) | LogFile::Checkpoint(v) => *v,
            };
            if v < cp && older(*modified, opts.log_retention_ms, now_ms) {
                out.log.push(path.clone());
            }
        }
    }
    out
}

/// What a vacuum deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumReport {
    /// Superseded data files deleted.
    pub superseded_deleted: usize,
    /// Untracked files deleted.
    pub untracked_deleted: usize,
    /// Log files deleted.
    pub log_files_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
}

impl Table {
    fn store_err(&self, source: crate::store::StoreError) -> TableError {
        TableError::Store {
            table: self.spec().name.clone(),
            source,
        }
    }

    /// Lists the table and plans a vacuum (see [`plan`]).
    ///
    /// # Errors
    /// A store failure.
    pub fn plan_vacuum(&self, opts: VacuumOptions, now_ms: i64) -> Result<VacuumPlan, TableError> {
        let data = self
            .store()
            .list(&self.spec().root)
            .map_err(|e| self.store_err(e))?;
        let log = self.log_objects()?;
        Ok(plan(
            self.snapshot(),
            &self.spec().root,
            &data,
            &log,
            opts,
            now_ms,
        ))
    }

    /// Deletes what [`Table::plan_vacuum`] finds (refreshing first).
    ///
    /// # Errors
    /// A store failure (some files may be deleted; the next vacuum finishes).
    pub fn vacuum(&mut self, opts: VacuumOptions, now_ms: i64) -> Result<VacuumReport, TableError> {
        self.refresh()?;
        let p = self.plan_vacuum(opts, now_ms)?;
        self.store()
            .delete_many(&p.paths())
            .map_err(|e| self.store_err(e))?;
        Ok(VacuumReport {
            superseded_deleted: p.superseded.len(),
            untracked_deleted: p.untracked.len(),
            log_files_deleted: p.log.len(),
            bytes_deleted: p.bytes,
        })
    }

    /// Writes a checkpoint of the current version, then deletes every older commit and
    /// checkpoint and every superseded file at once (no grace): after an erasure no file
    /// of the table still holds, or names statistics of, a removed row. Time travel
    /// starts at the current version afterwards.
    ///
    /// # Errors
    /// A store or checkpoint failure (nothing is deleted unless the checkpoint landed).
    pub fn forget_history(&mut self, now_ms: i64) -> Result<VacuumReport, TableError> {
        self.refresh()?;
        // A checkpoint without tombstones: it names no removed file.
        let cp = self.checkpoint(i64::MAX)?;
        let log: Vec<String> = self
            .log_objects()?
            .into_iter()
            .filter(|(f, _, _)| match f {
                LogFile::Commit(v) | LogFile::Checkpoint(v) => *v < cp,
            })
            .map(|(_, p, _)| p)
            .collect();
        let live: BTreeSet<&String> = self.snapshot().files.keys().collect();
        let superseded: Vec<String> = self
            .snapshot()
            .tombstones
            .keys()
            .filter(|p| !live.contains(p))
            .map(|p| self.data_path(p))
            .collect();
        self.store()
            .delete_many(&superseded)
            .map_err(|e| self.store_err(e))?;
        self.store()
            .delete_many(&log)
            .map_err(|e| self.store_err(e))?;
        let _ = now_ms;
        Ok(VacuumReport {
            superseded_deleted: superseded.len(),
            log_files_deleted: log.len(),
            ..VacuumReport::default()
        })
    }
}
