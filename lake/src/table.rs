//! A Delta table: open or create, snapshots, time travel, atomic commits, data files.
//!
//! Contract:
//! - A commit is one object `_delta_log/<version>.json` created with
//!   [`Store::put_if_absent`]: it is visible whole or not at all, and of two writers racing
//!   for the same version exactly one wins. The loser re-reads the winner's commit and
//!   retries on top of it (at most `commit_retries_max` times) unless the two conflict (the
//!   winner removed a file this commit removes): [`TableError::Conflict`].
//! - Idempotent writes: a commit carrying `txn(app_id, version)` is never applied twice. If
//!   the table already records `app_id` at `version` or later (because an earlier attempt
//!   landed although it reported a failure), [`Table::commit`] returns
//!   [`CommitOutcome::AlreadyCommitted`] without writing.
//! - Data files are written with [`Table::write_file`] before the commit that adds them;
//!   until then no table reader sees them.
//! - Every `checkpoint_interval_commits` versions a checkpoint is written
//!   ([`crate::checkpoint`]), then `_last_checkpoint`; a failed checkpoint is logged and
//!   costs nothing but reading speed (the commits are the truth).
//! - [`Table::open`] refuses a table whose partition columns or schema differ from the
//!   spec ([`TableError::LayoutChanged`], [`TableError::SchemaChanged`]) and a root that
//!   holds Parquet files but no log ([`TableError::UntrackedData`]): readers of the
//!   directory would otherwise see two layouts mixed.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use crate::checkpoint::{self, CheckpointError, LastCheckpoint};
use crate::log::{
    self, Action, Add, CommitInfo, Format, LogError, LogFile, Metadata, Protocol, Remove,
    StringMap, Txn,
};
use crate::schema::{SchemaError, TableSpec};
use crate::snapshot::Snapshot;
use crate::stats::FileStats;
use crate::store::{Store, StoreError};

/// Tag naming the number of row groups of a data file (used by the compaction planner).
pub const TAG_ROW_GROUPS: &str = "hexflow.row_groups";

/// How a table commits and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// A checkpoint every this many versions, >= 1.
    pub checkpoint_interval_commits: u64,
    /// Retries of a commit that lost a race, >= 1.
    pub commit_retries_max: u32,
    /// How long a superseded file is kept for running readers and time travel, ms (written
    /// to the table as `delta.deletedFileRetentionDuration`).
    pub superseded_grace_ms: u64,
    /// How long commit files are kept for time travel, ms (`delta.logRetentionDuration`).
    pub log_retention_ms: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            checkpoint_interval_commits: 100,
            commit_retries_max: 20,
            superseded_grace_ms: 300_000,
            log_retention_ms: 7 * 86_400_000,
        }
    }
}

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The store failed.
    #[error("table {table}: {source}")]
    Store {
        /// Table name.
        table: String,
        /// The error.
        #[source]
        source: StoreError,
    },
    /// A commit file is malformed.
    #[error("table {table}: commit {version}: {source}")]
    Log {
        /// Table name.
        table: String,
        /// Its version.
        version: u64,
        /// The error.
        #[source]
        source: LogError,
    },
    /// A checkpoint is unreadable (or could not be encoded).
    #[error("table {table}: checkpoint {version}: {source}")]
    Checkpoint {
        /// Table name.
        table: String,
        /// Its version.
        version: u64,
        /// The error.
        #[source]
        source: CheckpointError,
    },
    /// A version between the checkpoint and the newest commit is missing.
    #[error("table {table}: version {version} is not in the log (oldest available: {oldest:?})")]
    VersionUnavailable {
        /// Table name.
        table: String,
        /// The version wanted.
        version: u64,
        /// The oldest version that can be reconstructed.
        oldest: Option<u64>,
    },
    /// The table's partition columns differ from the configuration.
    #[error(
        "table {table} is partitioned by {existing:?} but the configuration says {configured:?}; \
         a different layout needs a new table (another data directory or bucket prefix)"
    )]
    LayoutChanged {
        /// Table name.
        table: String,
        /// In the table.
        existing: Vec<String>,
        /// Configured.
        configured: Vec<String>,
    },
    /// The table's schema differs from this version of hexflow's.
    #[error("table {table} has schema {existing} but this hexflow writes {expected}")]
    SchemaChanged {
        /// Table name.
        table: String,
        /// In the table.
        existing: String,
        /// What this build writes.
        expected: String,
    },
    /// Parquet files under the table root and no Delta log.
    #[error(
        "table {table}: {files} Parquet file(s) under {root}/ but no {root}/_delta_log/: \
         written without the table format; move them away before starting"
    )]
    UntrackedData {
        /// Table name.
        table: String,
        /// Its root.
        root: String,
        /// Parquet files found.
        files: usize,
    },
    /// A protocol this crate cannot read or write.
    #[error("table {table}: protocol reader {reader} / writer {writer} is not supported")]
    Protocol {
        /// Table name.
        table: String,
        /// minReaderVersion.
        reader: i32,
        /// minWriterVersion.
        writer: i32,
    },
    /// The commit removes a file that is not live (another writer removed it first).
    #[error("table {table}: conflict at version {version}: {path} is no longer in the table")]
    Conflict {
        /// Table name.
        table: String,
        /// The version that removed it.
        version: u64,
        /// The file.
        path: String,
    },
    /// Lost the race for a version `commit_retries_max` times in a row.
    #[error("table {table}: gave up after {attempts} concurrent commits won")]
    TooManyRetries {
        /// Table name.
        table: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The schema cannot be expressed in Delta.
    #[error("table {table}: {source}")]
    Schema {
        /// Table name.
        table: String,
        /// The error.
        #[source]
        source: SchemaError,
    },
    /// Encoding a data file failed.
    #[error("table {table}: writing {path}: {source}")]
    Parquet {
        /// Table name.
        table: String,
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: ParquetError,
    },
    /// A batch given to [`Table::write_file`] was an error.
    #[error("table {table}: batch: {source}")]
    Arrow {
        /// Table name.
        table: String,
        /// The error.
        #[source]
        source: ArrowError,
    },
}

/// One atomic change.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// `WRITE`, `OPTIMIZE`, `DELETE`, `RETENTION`.
    pub operation: String,
    /// Shown in `commitInfo.operationParameters` (never personal data).
    pub parameters: BTreeMap<String, String>,
    /// Files to add (written by [`Table::write_file`]).
    pub adds: Vec<Add>,
    /// Live files to remove, by path.
    pub removes: Vec<String>,
    /// `(app_id, version)` for idempotent writes.
    pub txn: Option<(String, i64)>,
}

impl Commit {
    /// An append of `adds`.
    pub fn append(adds: Vec<Add>) -> Commit {
        Commit {
            operation: "WRITE".into(),
            adds,
            ..Commit::default()
        }
    }

    /// Records `app_id` at `version` in the same commit.
    pub fn with_txn(mut self, app_id: &str, version: i64) -> Commit {
        self.txn = Some((app_id.to_string(), version));
        self
    }
}

/// What [`Table::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written as this version.
    Committed {
        /// The new version.
        version: u64,
    },
    /// The table already recorded the commit's txn (an earlier attempt landed).
    AlreadyCommitted {
        /// The version that recorded it (the current version when unknown).
        version: u64,
    },
    /// Nothing to commit.
    Empty,
}

/// An open table (one writer handle; cheap to reopen, not shared between threads).
#[derive(Debug)]
pub struct Table {
    store: Arc<dyn Store>,
    spec: TableSpec,
    opts: TableOptions,
    snapshot: Snapshot,
}

/// The table properties that tell other Delta tools our retention.
fn configuration(opts: &TableOptions) -> BTreeMap<String, String> {
    [
        (
            "delta.deletedFileRetentionDuration",
            format!("interval {} seconds", opts.superseded_grace_ms / 1000),
        ),
        (
            "delta.logRetentionDuration",
            format!("interval {} seconds", opts.log_retention_ms / 1000),
        ),
        (
            "delta.checkpointInterval",
            opts.checkpoint_interval_commits.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A random version-4 UUID (the table id; uniqueness is all Delta asks of it).
fn uuid_v4(seed: i64) -> String {
    let mut x = std::collections::hash_map::RandomState::new();
    let mut h = |n: u64| {
        use std::hash::{BuildHasher, Hasher};
        let mut s = x.build_hasher();
        s.write_u64(n ^ seed as u64);
        x = std::collections::hash_map::RandomState::new();
        s.finish()
    };
    let (a, b) = (h(1), h(2));
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

impl Table {
    fn err(&self) -> impl Fn(StoreError) -> TableError + '_ {
        |source| TableError::Store {
            table: self.spec.name.clone(),
            source,
        }
    }

    fn log_dir(&self) -> String {
        format!("{}/_delta_log", self.spec.root)
    }

    fn log_path(&self, name: &str) -> String {
        format!("{}/_delta_log/{name}", self.spec.root)
    }

    /// Opens the table at `spec.root`, creating version 0 when there is no log.
    ///
    /// # Errors
    /// See [`TableError`].
    pub fn open(
        store: Arc<dyn Store>,
        spec: TableSpec,
        opts: TableOptions,
        now_ms: i64,
    ) -> Result<Table, TableError> {
        let mut table = Table {
            store,
            spec,
            opts,
            snapshot: Snapshot::default(),
        };
        let expected = table
            .spec
            .schema_string()
            .map_err(|source| TableError::Schema {
                table: table.spec.name.clone(),
                source,
            })?;
        match table.latest_version()? {
            Some(v) => table.snapshot = table.load(v)?,
            None => table.create(&expected, now_ms)?,
        }
        let Some(meta) = &table.snapshot.metadata else {
            return Err(TableError::VersionUnavailable {
                table: table.spec.name.clone(),
                version: 0,
                oldest: None,
            });
        };
        if meta.partition_columns != table.spec.partition_names() {
            return Err(TableError::LayoutChanged {
                table: table.spec.name.clone(),
                existing: meta.partition_columns.clone(),
                configured: table.spec.partition_names(),
            });
        }
        if meta.schema_string != expected {
            return Err(TableError::SchemaChanged {
                table: table.spec.name.clone(),
                existing: meta.schema_string.clone(),
                expected,
            });
        }
        let p = &table.snapshot.protocol;
        if p.min_reader_version > 1 || p.min_writer_version > 2 {
            return Err(TableError::Protocol {
                table: table.spec.name.clone(),
                reader: p.min_reader_version,
                writer: p.min_writer_version,
            });
        }
        Ok(table)
    }

    fn create(&mut self, schema_string: &str, now_ms: i64) -> Result<(), TableError> {
        let stray = self
            .store
            .list(&self.spec.root)
            .map_err(self.err())?
            .iter()
            .filter(|o| o.path.ends_with(".parquet"))
            .count();
        if stray > 0 {
            return Err(TableError::UntrackedData {
                table: self.spec.name.clone(),
                root: self.spec.root.clone(),
                files: stray,
            });
        }
        let actions = vec![
            Action::Protocol(Protocol::default()),
            Action::Metadata(Metadata {
                id: uuid_v4(now_ms),
                name: Some(self.spec.name.clone()),
                description: None,
                format: Format {
                    provider: "parquet".into(),
                    options: BTreeMap::new(),
                },
                schema_string: schema_string.to_string(),
                partition_columns: self.spec.partition_names(),
                configuration: configuration(&self.opts),
                created_time: Some(now_ms),
            }),
            commit_info(now_ms, "CREATE TABLE", BTreeMap::new()),
        ];
        match self.store.put_if_absent(
            &self.log_path(&log::commit_name(0)),
            &log::encode_commit(&actions),
        ) {
            Ok(()) => {
                self.snapshot = Snapshot::default();
                self.snapshot.apply(0, &actions);
                Ok(())
            }
            // Another process created it first: use theirs.
            Err(StoreError::AlreadyExists { .. }) => {
                self.snapshot = self.load(0)?;
                Ok(())
            }
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Commits and checkpoints in the log, sorted.
    fn log_files(&self) -> Result<Vec<LogFile>, TableError> {
        let mut out: Vec<LogFile> = self
            .store
            .list(&self.log_dir())
            .map_err(self.err())?
            .iter()
            .filter_map(|o| log::parse_log_name(o.path.rsplit('/').next().unwrap_or("")))
            .collect();
        out.sort();
        Ok(out)
    }

    fn latest_version(&self) -> Result<Option<u64>, TableError> {
        Ok(self
            .log_files()?
            .iter()
            .filter_map(|f| match f {
                LogFile::Commit(v) => Some(*v),
                LogFile::Checkpoint(_) => None,
            })
            .max())
    }

    fn read_commit(&self, version: u64) -> Result<Vec<Action>, TableError> {
        let bytes = self
            .store
            .get(&self.log_path(&log::commit_name(version)))
            .map_err(self.err())?;
        log::decode_commit(&bytes).map_err(|source| TableError::Log {
            table: self.spec.name.clone(),
            version,
            source,
        })
    }

    /// Reconstructs the snapshot at `version` from the newest checkpoint at or below it
    /// and the commits after it.
    ///
    /// # Errors
    /// [`TableError::VersionUnavailable`] when the log no longer holds it.
    pub fn load(&self, version: u64) -> Result<Snapshot, TableError> {
        let files = self.log_files()?;
        let commits = commit_versions(&files);
        let checkpoints: Vec<u64> = files
            .iter()
            .filter_map(|f| match f {
                LogFile::Checkpoint(v) if *v <= version => Some(*v),
                _ => None,
            })
            .collect();
        let unavailable = || TableError::VersionUnavailable {
            table: self.spec.name.clone(),
            version,
            oldest: files
                .iter()
                .find_map(|f| match f {
                    LogFile::Checkpoint(v) => Some(*v),
                    LogFile::Commit(0) => Some(0),
                    LogFile::Commit(_) => None,
                })
                .or(commits.first().copied().filter(|&v| v == 0)),
        };
        let (mut snap, from) = match checkpoints.last() {
            Some(&cp) => {
                let bytes = self
                    .store
                    .get(&self.log_path(&log::checkpoint_name(cp)))
                    .map_err(self.err())?;
                let actions =
                    checkpoint::decode(bytes).map_err(|source| TableError::Checkpoint {
                        table: self.spec.name.clone(),
                        version: cp,
                        source,
                    })?;
                let mut s = Snapshot::default();
                s.apply(cp, &actions);
                (s, cp + 1)
            }
            None => (Snapshot::default(), 0),
        };
        for v in from..=version {
            if !commits.contains(&v) {
                return Err(unavailable());
            }
            let actions = self.read_commit(v)?;
            snap.apply(v, &actions);
        }
        if snap.metadata.is_none() {
            return Err(unavailable());
        }
        Ok(snap)
    }

    /// The snapshot as of the last commit this handle saw.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The spec.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &TableOptions {
        &self.opts
    }

    /// Applies the commits other writers made since this handle's snapshot.
    ///
    /// # Errors
    /// See [`TableError`].
    pub fn refresh(&mut self) -> Result<(), TableError> {
        let Some(latest) = self.latest_version()? else {
            return Ok(());
        };
        for v in self.snapshot.version + 1..=latest {
            let actions = self.read_commit(v)?;
            self.snapshot.apply(v, &actions);
        }
        Ok(())
    }

    /// The store path of a data file given by its table-relative path.
    pub fn data_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.spec.root)
    }

    /// Writes a data file `rel_dir/name` (relative to the table root) with the rows of
    /// `batches`, atomically and durably, and returns its `add` action (statistics from the
    /// footer, row-group count as a tag). Not part of the table until committed.
    ///
    /// # Errors
    /// [`TableError::Store`], [`TableError::Parquet`], [`TableError::Arrow`].
    #[allow(clippy::too_many_arguments)]
    pub fn write_file(
        &self,
        rel_dir: &str,
        name: &str,
        partition_values: StringMap,
        batches: impl IntoIterator<Item = Result<RecordBatch, ArrowError>>,
        props: WriterProperties,
        data_change: bool,
        now_ms: i64,
    ) -> Result<Add, TableError> {
        let rel = if rel_dir.is_empty() {
            name.to_string()
        } else {
            format!("{rel_dir}/{name}")
        };
        let path = self.data_path(&rel);
        let out = self.store.writer(&path).map_err(self.err())?;
        let pq = |source| TableError::Parquet {
            table: self.spec.name.clone(),
            path: path.clone(),
            source,
        };
        let mut writer =
            ArrowWriter::try_new(out, self.spec.schema.clone(), Some(props)).map_err(pq)?;
        for batch in batches {
            let batch = batch.map_err(|source| TableError::Arrow {
                table: self.spec.name.clone(),
                source,
            })?;
            writer.write(&batch).map_err(pq)?;
        }
        // The row groups' metadata before the footer is written: `into_inner` writes it.
        writer.flush().map_err(pq)?;
        let stats = FileStats::from_row_groups(writer.flushed_row_groups(), &self.spec.schema);
        let row_groups = writer.flushed_row_groups().len();
        let out = writer.into_inner().map_err(pq)?;
        let size = out.finish().map_err(self.err())?;
        let tags: StringMap = [(TAG_ROW_GROUPS.to_string(), Some(row_groups.to_string()))].into();
        Ok(Add {
            path: rel,
            partition_values,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            modification_time: now_ms,
            data_change,
            stats: Some(stats.to_json()),
            tags: Some(tags),
        })
    }

    /// Reads a live or superseded data file.
    ///
    /// # Errors
    /// [`TableError::Store`] (`NotFound` once vacuumed).
    pub fn read_file(&self, rel: &str) -> Result<Vec<u8>, TableError> {
        self.store.get(&self.data_path(rel)).map_err(self.err())
    }

    fn actions_of(&self, c: &Commit, now_ms: i64) -> Result<Vec<Action>, TableError> {
        let mut out = Vec::with_capacity(c.adds.len() + c.removes.len() + 2);
        if let Some((app, version)) = &c.txn {
            out.push(Action::Txn(Txn {
                app_id: app.clone(),
                version: *version,
                last_updated: Some(now_ms),
            }));
        }
        for path in &c.removes {
            let Some(add) = self.snapshot.files.get(path) else {
                return Err(TableError::Conflict {
                    table: self.spec.name.clone(),
                    version: self.snapshot.version,
                    path: path.clone(),
                });
            };
            out.push(Action::Remove(Remove {
                path: path.clone(),
                deletion_timestamp: Some(now_ms),
                data_change: c.operation != "OPTIMIZE",
                extended_file_metadata: Some(true),
                partition_values: Some(add.partition_values.clone()),
                size: Some(add.size),
            }));
        }
        out.extend(c.adds.iter().cloned().map(Action::Add));
        let mut params = c.parameters.clone();
        params.insert("files_added".into(), c.adds.len().to_string());
        params.insert("files_removed".into(), c.removes.len().to_string());
        out.push(commit_info(now_ms, &c.operation, params));
        Ok(out)
    }

    fn already_recorded(&self, c: &Commit) -> bool {
        c.txn
            .as_ref()
            .is_some_and(|(app, v)| self.snapshot.txn(app).is_some_and(|have| have >= *v))
    }

    /// Commits `c` atomically as the next version (see the module contract).
    ///
    /// # Errors
    /// [`TableError::Conflict`], [`TableError::TooManyRetries`], or a store failure (the
    /// commit may then have landed or not: retrying with the same txn is safe).
    pub fn commit(&mut self, c: Commit, now_ms: i64) -> Result<CommitOutcome, TableError> {
        if c.adds.is_empty() && c.removes.is_empty() && c.txn.is_none() {
            return Ok(CommitOutcome::Empty);
        }
        let mut attempts = 0;
        loop {
            if self.already_recorded(&c) {
                return Ok(CommitOutcome::AlreadyCommitted {
                    version: self.snapshot.version,
                });
            }
            let actions = self.actions_of(&c, now_ms)?;
            let version = self.snapshot.version + 1;
            let path = self.log_path(&log::commit_name(version));
            match self
                .store
                .put_if_absent(&path, &log::encode_commit(&actions))
            {
                Ok(()) => {
                    self.snapshot.apply(version, &actions);
                    self.maybe_checkpoint(now_ms);
                    return Ok(CommitOutcome::Committed { version });
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    attempts += 1;
                    let theirs = self.read_commit(version)?;
                    self.snapshot.apply(version, &theirs);
                    if self.already_recorded(&c) {
                        return Ok(CommitOutcome::AlreadyCommitted { version });
                    }
                    if attempts >= self.opts.commit_retries_max {
                        return Err(TableError::TooManyRetries {
                            table: self.spec.name.clone(),
                            attempts,
                        });
                    }
                    // actions_of reports a removed file the winner took away.
                }
                Err(e) => return Err(self.err()(e)),
            }
        }
    }

    fn maybe_checkpoint(&mut self, now_ms: i64) {
        let v = self.snapshot.version;
        if v > 0 && v.is_multiple_of(self.opts.checkpoint_interval_commits.max(1)) {
            if let Err(e) = self.checkpoint(now_ms) {
                tracing::warn!(table = %self.spec.name, version = v, error = %e, "checkpoint failed; readers replay more commits meanwhile");
            }
        }
    }

    /// Writes a checkpoint of the current version and points `_last_checkpoint` at it.
    /// Tombstones older than the superseded grace period are left out (their files are
    /// deleted by then).
    ///
    /// # Errors
    /// [`TableError::Checkpoint`] or a store failure.
    pub fn checkpoint(&mut self, now_ms: i64) -> Result<u64, TableError> {
        let v = self.snapshot.version;
        let keep_since =
            now_ms.saturating_sub(i64::try_from(self.opts.superseded_grace_ms).unwrap_or(i64::MAX));
        let actions = self.snapshot.checkpoint_actions(keep_since);
        let bytes = checkpoint::encode(&actions).map_err(|source| TableError::Checkpoint {
            table: self.spec.name.clone(),
            version: v,
            source,
        })?;
        self.store
            .put(&self.log_path(&log::checkpoint_name(v)), &bytes)
            .map_err(self.err())?;
        let last = LastCheckpoint {
            version: v,
            size: actions.len() as u64,
        };
        let json = serde_json::to_vec(&last).unwrap_or_default();
        self.store
            .put(&self.log_path("_last_checkpoint"), &json)
            .map_err(self.err())?;
        Ok(v)
    }

    /// Every version the log can still reconstruct, oldest first.
    ///
    /// # Errors
    /// A store failure.
    pub fn available_versions(&self) -> Result<Vec<u64>, TableError> {
        let files = self.log_files()?;
        let commits = commit_versions(&files);
        let oldest_checkpoint = files.iter().find_map(|f| match f {
            LogFile::Checkpoint(v) => Some(*v),
            LogFile::Commit(_) => None,
        });
        let base = if commits.contains(&0) {
            0
        } else if let Some(cp) = oldest_checkpoint {
            cp
        } else {
            return Ok(Vec::new());
        };
        let mut out = vec![base];
        let mut v = base + 1;
        while commits.contains(&v) {
            out.push(v);
            v += 1;
        }
        Ok(out)
    }

    /// The log files (commits, checkpoints) with their versions, for vacuum.
    pub(crate) fn log_objects(&self) -> Result<Vec<(LogFile, String, i64)>, TableError> {
        Ok(self
            .store
            .list(&self.log_dir())
            .map_err(self.err())?
            .into_iter()
            .filter_map(|o| {
                let f = log::parse_log_name(o.path.rsplit('/').next().unwrap_or(""))?;
                Some((f, o.path, o.modified_ms))
            })
            .collect())
    }
}

fn commit_info(now_ms: i64, operation: &str, params: BTreeMap<String, String>) -> Action {
    Action::CommitInfo(CommitInfo {
        timestamp: now_ms,
        operation: operation.to_string(),
        operation_parameters: params,
        engine_info: concat!("hexflow/", env!("CARGO_PKG_VERSION")).to_string(),
    })
}

/// The versions of the commit files among `files`.
fn commit_versions(files: &[LogFile]) -> std::collections::BTreeSet<u64> {
    files
        .iter()
        .filter_map(|f| match f {
            LogFile::Commit(v) => Some(*v),
            LogFile::Checkpoint(_) => None,
        })
        .collect()
}
