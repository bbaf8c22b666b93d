//! hexflow storage: everything after a batch is accepted.
//!
//! Contract: a batch is acknowledged `Stored` only once its WAL record is
//! covered by an fsync; every acknowledged fix lands in exactly one file of the
//! `positions` Delta table, added by exactly one commit, across crashes (see
//! `docs/STORAGE.md`, "exactly once"). This
//! crate never depends on quinn, tokio or `ingest`, runs on three std threads
//! (WAL, writer, and the lower-priority encoder the writer hands sealed
//! generations of rows to), and bounds every queue and buffer by configuration.
//!
//! Data flow:
//!
//! ```text
//! submit() --bounded queue--> WAL thread --bounded queue--> writer thread
//!   (validate,                (dedup, group commit:          (index H3, buffer per
//!    Overloaded when full)     one write + one fdatasync,     partition; seal every
//!                              then callbacks)                flush_interval_ms)
//!                                                                  |
//!                                     one sealed generation at a time (rendezvous)
//!                                                                  v
//!                                                             encoder thread, nice 10
//!                                                             (sort, Parquet, publish,
//!                                                             commit, checkpoint,
//!                                                             delete old segments)
//! ```
//!
//! Modules: [`wal`] (log format + segment IO), [`commit`] (WAL thread),
//! [`dedup`], [`index`] (H3), [`batch`] (Arrow schema), [`partition`] (hive
//! paths), [`writer`] (Parquet + writer thread), [`encoder`] (the
//! encoder thread), [`checkpoint`], [`config`].
//! Every file operation goes through `sys::fs::Fs` (tests inject faults and
//! power losses with `sys::sim::SimFs`).
//!
//! Crash model: the process may die, or the machine lose power, between any
//! two file operations; data and names not yet fsynced may then be lost, kept
//! or torn (see [`sys::sim`]). Invariant, whatever the crash point: after
//! [`Storage::open`] every batch acknowledged `Stored`/`Duplicate` is
//! recognised as a duplicate when resent, and reaches Parquet exactly once.
//! `storage/tests/fault_injection.rs` crashes at every operation to check it.

#![deny(clippy::unwrap_used)]

pub mod batch;
pub mod cell_disk;
pub mod checkpoint;
pub mod commit;
pub mod config;
pub mod dedup;
pub mod encoder;
pub mod error;
pub mod fix_batch;
pub mod index;
pub mod partition;
mod stats;
pub mod synthetic;
pub mod wait;
pub mod wal;
pub mod writer;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

pub use commit::{Committed, Done};
pub use config::{ConfigError, FLUSH_INTERVAL_MS_LIMIT, StorageConfig};
pub use error::{CommitError, OpenError, ShutdownError, SubmitError};
pub use fix::{ABSENT_I32, ABSENT_U32, DeviceId};
pub use fix_batch::{FixBatch, InvalidBatch, validate_batch};
pub use partition::{PartitionKey, PartitionScheme};
pub use stats::StorageStats;
pub use wal::TailError;

use commit::{Ack, GroupCommit, GroupLimits, Submission, WalExit, WalMsg};
use dedup::DedupTable;
use encoder::{Encoder, Flusher};
use stats::Stats;
use sys::fs::{Fs, RealFs};
use sys::{Clock, SystemClock};
use wal::{FileSink, HEADER_LEN};
use writer::{ParquetOptions, Writer, WriterExit, WriterMsg, WriterTiming};

/// A torn or corrupt tail found (and cut off) in the last WAL segment on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: PathBuf,
    /// Bytes kept.
    pub valid_len: u64,
    /// Bytes discarded (never acknowledged: the fsync covering them did not return).
    pub discarded_bytes: u64,
    /// What was wrong at `valid_len`.
    pub error: TailError,
}

/// What [`Storage::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The last lsn the `positions` table holds (0 = none): records above it are replayed.
    pub checkpoint_lsn: u64,
    /// Version of the `positions` table at open.
    pub table_version: u64,
    /// The lsn the next stored batch gets.
    pub next_lsn: u64,
    /// WAL segments read.
    pub segments_read: usize,
    /// Records above the checkpoint, replayed into the writer.
    pub records_replayed: u64,
    /// Fixes in those records.
    pub fixes_replayed: u64,
    /// Records at or below the checkpoint (already in Parquet), skipped.
    pub records_skipped: u64,
    /// Torn tail cut off the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Parquet files of a flush whose commit never landed, deleted.
    pub orphan_files_deleted: Vec<PathBuf>,
    /// Temporary `.*.tmp` files deleted.
    pub tmp_files_deleted: usize,
    /// Devices in the rebuilt dedup table.
    pub dedup_devices: usize,
}

/// What [`Storage::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The final checkpoint: every stored batch has `lsn <= checkpoint_lsn`.
    pub checkpoint_lsn: u64,
    /// Rows written by the final flush.
    pub rows_flushed: u64,
    /// Files written by the final flush.
    pub files_written: usize,
    /// WAL segments deleted after the final checkpoint.
    pub wal_segments_deleted: usize,
}

struct Threads {
    wal: JoinHandle<WalExit>,
    writer: JoinHandle<WriterExit>,
}

struct Inner {
    /// The exclusive lock on the data directory, released when the threads stopped.
    lock: Mutex<Option<sys::fs::FsLock>>,
    tx: Sender<WalMsg>,
    writer_tx: Sender<WriterMsg>,
    shutting_down: AtomicBool,
    writer_stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Mutex<Option<Threads>>,
    fs: Arc<dyn Fs>,
    wal_dir: PathBuf,
    queue_batches_max: usize,
    batch_fixes_max: usize,
    resolution: h3o::Resolution,
}

/// Handle to the storage threads. Cheap to clone; `Send + Sync`.
///
/// Dropping every handle without [`Storage::shutdown`] lets the threads finish
/// in the background (best effort); call `shutdown` to know the data is in
/// Parquet.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("wal_dir", &self.inner.wal_dir)
            .finish_non_exhaustive()
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The `txn` application id under which the writer records, in each commit, the last WAL
/// lsn whose rows the commit completes.
pub const POSITIONS_WRITER: &str = "hexflow-positions-writer";

/// The `positions` table: its Delta definition under a partition scheme.
pub fn positions_spec(scheme: PartitionScheme) -> lake::TableSpec {
    lake::TableSpec {
        name: "positions".into(),
        root: "positions".into(),
        schema: batch::schema(),
        partition_columns: scheme.columns(),
    }
}

/// The data files of the `positions` table under `data_dir` (partitioned by `scheme`), as
/// paths, in the table's order: what a reader that follows the Delta log reads.
///
/// # Errors
/// The table does not open (see [`lake::TableError`]).
pub fn positions_files(
    fs: Arc<dyn Fs>,
    data_dir: &Path,
    scheme: PartitionScheme,
) -> Result<Vec<PathBuf>, lake::TableError> {
    let store: Arc<dyn lake::Store> = Arc::new(lake::FsStore::new(fs, data_dir));
    let spec = positions_spec(scheme);
    let table = lake::Table::open(store, spec, lake::TableOptions::default(), 0)?;
    let root = data_dir.join("positions");
    Ok(table
        .snapshot()
        .files
        .keys()
        .map(|p| root.join(p))
        .collect())
}

/// Deletes temporary files (`.*.tmp`) and flush files the table does not hold whose
/// `from_lsn` is above `table_lsn` (written by a flush whose commit never landed) under
/// `dir` (depth bounded by the scheme: 3). Any other file is left alone: it is either in
/// the table or vacuum's business.
fn delete_orphans(
    fs: &dyn Fs,
    dir: &Path,
    table: &lake::Snapshot,
    table_lsn: u64,
    rel: &str,
    depth: usize,
    report: &mut RecoveryReport,
) -> Result<(), OpenError> {
    let mut removed = false;
    for entry in fs.list_dir(dir).map_err(io_at(dir))? {
        let path = entry.path;
        let name = entry.name.as_str();
        let rel_path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        if entry.is_dir {
            if depth < 3 {
                delete_orphans(fs, &path, table, table_lsn, &rel_path, depth + 1, report)?;
            }
            continue;
        }
        if name.starts_with('.') && name.ends_with(".tmp") {
            fs.remove_file(&path).map_err(io_at(&path))?;
            report.tmp_files_deleted += 1;
            removed = true;
        } else if let Some((from_lsn, _)) = partition::parse_part_file_name(name) {
            if rel.ends_with("_delta_log") {
                continue;
            }
            if from_lsn > table_lsn && !table.files.contains_key(&rel_path) {
                fs.remove_file(&path).map_err(io_at(&path))?;
                report.orphan_files_deleted.push(path);
                removed = true;
            }
        }
    }
    if removed {
        fs.sync_dir(dir).map_err(io_at(dir))?;
    }
    Ok(())
}

/// Name of the lock file in the data directory.
pub const LOCK_FILE_NAME: &str = "lock";

/// Takes the data directory's exclusive lock: one storage (one server) per directory.
fn lock_data_dir(fs: &dyn Fs, data_dir: &Path) -> Result<sys::fs::FsLock, OpenError> {
    let path = data_dir.join(LOCK_FILE_NAME);
    fs.lock_exclusive(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::WouldBlock {
            OpenError::Locked { path: path.clone() }
        } else {
            OpenError::Io {
                path: path.clone(),
                source,
            }
        }
    })
}

/// Reads the checkpoint and opens the positions table; the table, not the checkpoint, is
/// the truth about what reached Parquet. Deletes Parquet files of flushes whose commit never
/// landed (orphans).
fn recover_table(
    cfg: &StorageConfig,
    fs: &Arc<dyn Fs>,
    clock: &dyn Clock,
    report: &mut RecoveryReport,
) -> Result<(checkpoint::Checkpoint, lake::Table), OpenError> {
    let wal_dir = cfg.data_dir.join("wal");
    let checkpoint = match checkpoint::read(&**fs, &wal_dir).map_err(io_at(&wal_dir))? {
        None => checkpoint::Checkpoint::default(),
        Some(Ok(cp)) => cp,
        Some(Err(source)) => {
            return Err(OpenError::Checkpoint {
                path: wal_dir.join(checkpoint::FILE_NAME),
                source,
            });
        }
    };
    let store: Arc<dyn lake::Store> = Arc::new(lake::FsStore::new(fs.clone(), &cfg.data_dir));
    let table = lake::Table::open(
        store,
        positions_spec(cfg.partition),
        cfg.table,
        clock.now_ms(),
    )
    .map_err(OpenError::Table)?;
    let table_lsn = table
        .snapshot()
        .txn(POSITIONS_WRITER)
        .map_or(0, |v| u64::try_from(v).unwrap_or(0));
    if checkpoint.to_lsn > table_lsn {
        return Err(OpenError::CheckpointAheadOfTable {
            checkpoint_lsn: checkpoint.to_lsn,
            table_lsn,
        });
    }
    // The checkpoint only saves replaying the dedup windows from the start.
    let checkpoint = checkpoint::Checkpoint {
        to_lsn: table_lsn,
        windows: checkpoint.windows,
    };
    report.checkpoint_lsn = checkpoint.to_lsn;
    report.table_version = table.snapshot().version;
    let positions_dir = cfg.data_dir.join("positions");
    delete_orphans(
        &**fs,
        &positions_dir,
        table.snapshot(),
        table_lsn,
        "",
        0,
        report,
    )?;
    Ok((checkpoint, table))
}

/// The running writer thread while `open_with` is still replaying: its channel, stop flag
/// and handle.
struct StartedWriter {
    tx: Sender<WriterMsg>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<WriterExit>,
}

impl StartedWriter {
    /// Stops the writer without flushing (open failed) and returns `e`.
    fn abort(self, e: OpenError) -> OpenError {
        self.stop.store(true, Ordering::Release);
        let _ = self.tx.send(WriterMsg::Abandon);
        let _ = self.handle.join();
        e
    }
}

/// Spawns the writer thread (Parquet, Delta commits, checkpoints) over `table`.
fn start_writer(
    cfg: &StorageConfig,
    fs: &Arc<dyn Fs>,
    clock: &Arc<dyn Clock>,
    checkpoint: &checkpoint::Checkpoint,
    table: lake::Table,
    dedup: &DedupTable,
    stats: &Arc<Stats>,
) -> Result<StartedWriter, OpenError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded(cfg.writer_queue_batches_max);
    let writer = Writer {
        scheme: cfg.partition,
        resolution: cfg.resolution(),
        flush_rows_max: cfg.flush_rows_max,
        partitions: BTreeMap::new(),
        rows: 0,
        from_lsn: None,
        to_lsn: checkpoint.to_lsn,
        dedup: dedup.clone(),
        spare: Vec::new(),
    };
    let flusher = Flusher {
        fs: fs.clone(),
        positions_dir: cfg.data_dir.join("positions"),
        wal_dir: cfg.data_dir.join("wal"),
        parquet: ParquetOptions {
            zstd_level: cfg.zstd_level,
            row_group_rows_max: cfg.row_group_rows_max,
        },
        checkpoint_lsn: checkpoint.to_lsn,
        stats: stats.clone(),
        table,
        clock: clock.clone(),
        order: Vec::new(),
    };
    let timing = WriterTiming {
        flush_interval_ms: cfg.flush_interval_ms,
        flush_retry_ms: cfg.flush_retry_ms,
        shutdown_flush_attempts: cfg.shutdown_flush_attempts,
    };
    let encoder =
        Encoder::spawn(flusher, timing, cfg.encoder_nice, stop.clone()).map_err(|source| {
            OpenError::Spawn {
                thread: "encoder",
                source,
            }
        })?;
    let writer_clock = clock.clone();
    let handle = spawn("writer", move || {
        writer.run(rx, encoder, timing, writer_clock)
    })?;
    Ok(StartedWriter { tx, stop, handle })
}

/// Opens the WAL's next segment at `next_lsn` and spawns the WAL thread (group commit,
/// dedup, acks); returns the submit queue's sender and the thread.
fn start_wal(
    cfg: &StorageConfig,
    fs: &Arc<dyn Fs>,
    clock: Arc<dyn Clock>,
    dedup: DedupTable,
    next_lsn: u64,
    writer: &StartedWriter,
    stats: &Arc<Stats>,
) -> Result<(Sender<WalMsg>, JoinHandle<WalExit>), OpenError> {
    let wal_dir = cfg.data_dir.join("wal");
    let sink = FileSink::create(fs.clone(), &wal_dir, next_lsn, cfg.wal_fsync).map_err(|e| {
        OpenError::Io {
            path: wal_dir,
            source: e,
        }
    })?;
    let gc = GroupCommit::new(
        sink,
        dedup,
        next_lsn,
        cfg.wal_segment_bytes_max,
        cfg.dedup_devices_max,
        stats.clone(),
    );
    let limits = GroupLimits {
        bytes_max: cfg.wal_group_commit_bytes_max,
        delay_us: cfg.wal_group_commit_delay_us,
    };
    let (tx, rx) = crossbeam_channel::bounded(cfg.queue_batches_max);
    let wal_writer_tx = writer.tx.clone();
    let handle = spawn("wal", move || {
        commit::run(gc, rx, wal_writer_tx, limits, &*clock)
    })?;
    Ok((tx, handle))
}

fn spawn<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, OpenError> {
    std::thread::Builder::new()
        .name(format!("hexflow-{name}"))
        .spawn(f)
        .map_err(|source| OpenError::Spawn {
            thread: name,
            source,
        })
}

/// Cuts the torn tail `error` found in the last segment `path` (`len` bytes read): a
/// segment whose creation did not complete (no full header) is removed, otherwise it is
/// truncated to its valid prefix and synced. Recorded in `report`.
fn cut_torn_tail(
    fs: &dyn Fs,
    wal_dir: &Path,
    path: &Path,
    len: usize,
    error: wal::TailError,
    report: &mut RecoveryReport,
) -> Result<(), OpenError> {
    let valid_len = error.valid_len();
    if valid_len < HEADER_LEN {
        fs.remove_file(path).map_err(io_at(path))?;
        fs.sync_dir(wal_dir).map_err(io_at(wal_dir))?;
    } else {
        let mut file = fs.open_write(path).map_err(io_at(path))?;
        file.set_len(valid_len as u64).map_err(io_at(path))?;
        file.sync_all().map_err(io_at(path))?;
    }
    tracing::warn!(segment = %path.display(), valid_len, error = %error, "cut a torn WAL tail");
    report.torn_tail = Some(TornTail {
        segment: path.to_path_buf(),
        valid_len: valid_len as u64,
        discarded_bytes: (len - valid_len) as u64,
        error,
    });
    Ok(())
}

/// One replayed record: every record feeds `dedup`; those above the checkpoint go to the
/// writer again.
fn replay_record(
    record: wal::Record,
    checkpoint_lsn: u64,
    dedup: &mut DedupTable,
    writer_tx: &Sender<WriterMsg>,
    report: &mut RecoveryReport,
) -> Result<(), OpenError> {
    dedup.observe(record.batch.device_id, record.batch.batch_seq);
    if record.lsn <= checkpoint_lsn {
        report.records_skipped += 1;
        return Ok(());
    }
    report.records_replayed += 1;
    report.fixes_replayed += record.batch.len() as u64;
    writer_tx
        .send(WriterMsg::Batch {
            lsn: record.lsn,
            batch: record.batch,
        })
        .map_err(|_| OpenError::WriterStopped)
}

/// Reads every segment, cuts a torn tail off the last one, feeds records
/// above the checkpoint to the writer and every record to `dedup`.
fn replay(
    fs: &dyn Fs,
    wal_dir: &Path,
    checkpoint_lsn: u64,
    dedup: &mut DedupTable,
    writer_tx: &Sender<WriterMsg>,
    report: &mut RecoveryReport,
) -> Result<u64, OpenError> {
    let segments = wal::list_segments(fs, wal_dir).map_err(io_at(wal_dir))?;
    let mut last_lsn = checkpoint_lsn;
    let mut expected: Option<u64> = None;
    for (i, (name_lsn, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let bytes = fs.read(path).map_err(io_at(path))?;
        report.segments_read += 1;
        let (records, tail) = wal::decode_segment(&bytes);
        if let Some(error) = tail {
            if !is_last {
                return Err(OpenError::CorruptWal {
                    segment: path.clone(),
                    source: error,
                });
            }
            cut_torn_tail(fs, wal_dir, path, bytes.len(), error, report)?;
        }
        if let Ok(header) = wal::decode_header(&bytes) {
            if header.first_lsn != *name_lsn {
                return Err(OpenError::SegmentNameMismatch {
                    segment: path.clone(),
                    name_lsn: *name_lsn,
                    header_lsn: header.first_lsn,
                });
            }
        }
        for record in records {
            // Records are consecutive, and the first one may not skip past
            // the checkpoint (segments are only deleted when fully covered).
            let want = expected.unwrap_or_else(|| record.lsn.min(checkpoint_lsn + 1));
            if record.lsn != want {
                return Err(OpenError::LsnGap {
                    segment: path.clone(),
                    expected: want,
                    found: record.lsn,
                });
            }
            expected = Some(record.lsn + 1);
            last_lsn = last_lsn.max(record.lsn);
            replay_record(record, checkpoint_lsn, dedup, writer_tx, report)?;
        }
    }
    Ok(last_lsn + 1)
}

impl Storage {
    /// Opens (creating directories) and recovers: deletes orphan Parquet files
    /// of an unfinished flush, replays the WAL past the checkpoint into the
    /// writer, rebuilds the dedup state, then starts the WAL and writer threads.
    ///
    /// # Errors
    /// See [`OpenError`]; on error no thread is left running.
    pub fn open(cfg: StorageConfig) -> Result<(Storage, RecoveryReport), OpenError> {
        Storage::open_with(cfg, Arc::new(RealFs), Arc::new(SystemClock))
    }

    /// [`Storage::open`] on the given file system (tests inject faults and
    /// crashes through [`sys::sim::SimFs`]), with the system clock.
    ///
    /// # Errors
    /// See [`OpenError`]; on error no thread is left running.
    pub fn open_with_fs(
        cfg: StorageConfig,
        fs: Arc<dyn Fs>,
    ) -> Result<(Storage, RecoveryReport), OpenError> {
        Storage::open_with(cfg, fs, Arc::new(SystemClock))
    }

    /// [`Storage::open`] on the given file system and clock: the WAL and writer
    /// threads measure the group-commit delay, the flush interval and the retry
    /// delays on `clock` and never read the time otherwise.
    ///
    /// # Errors
    /// See [`OpenError`]; on error no thread is left running.
    pub fn open_with(
        cfg: StorageConfig,
        fs: Arc<dyn Fs>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Storage, RecoveryReport), OpenError> {
        cfg.validate()?;
        let data_dir = cfg.data_dir.clone();
        fs.create_dir_all(&data_dir).map_err(io_at(&data_dir))?;
        let lock = lock_data_dir(&*fs, &data_dir)?;
        for sub in ["wal", "positions"] {
            sys::fs::create_dir_durable(&*fs, &data_dir, Path::new(sub))
                .map_err(io_at(&data_dir))?;
        }
        let wal_dir = data_dir.join("wal");
        let mut report = RecoveryReport::default();
        let (checkpoint, table) = recover_table(&cfg, &fs, &*clock, &mut report)?;

        let mut dedup = DedupTable::new(cfg.dedup_window_batches, cfg.dedup_devices_max);
        dedup.load(&checkpoint.windows);
        let stats = Arc::new(Stats::default());
        let writer = start_writer(&cfg, &fs, &clock, &checkpoint, table, &dedup, &stats)?;

        // From here on, a failure stops the writer before returning.
        let next_lsn = match replay(
            &*fs,
            &wal_dir,
            checkpoint.to_lsn,
            &mut dedup,
            &writer.tx,
            &mut report,
        ) {
            Ok(next) => next,
            Err(e) => return Err(writer.abort(e)),
        };
        report.next_lsn = next_lsn;
        report.dedup_devices = dedup.len();
        let (tx, wal_handle) = match start_wal(&cfg, &fs, clock, dedup, next_lsn, &writer, &stats) {
            Ok(started) => started,
            Err(e) => return Err(writer.abort(e)),
        };
        if !cfg.wal_fsync {
            tracing::warn!(
                "wal_fsync = false: acknowledged batches can be lost on power failure (benchmark mode)"
            );
        }
        let storage = Storage {
            inner: Arc::new(Inner {
                lock: Mutex::new(Some(lock)),
                tx,
                writer_tx: writer.tx,
                shutting_down: AtomicBool::new(false),
                writer_stop: writer.stop,
                stats,
                threads: Mutex::new(Some(Threads {
                    wal: wal_handle,
                    writer: writer.handle,
                })),
                fs,
                wal_dir,
                queue_batches_max: cfg.queue_batches_max,
                batch_fixes_max: cfg.batch_fixes_max,
                resolution: cfg.resolution(),
            }),
        };
        Ok((storage, report))
    }

    /// Queues a batch without blocking. `done` is called exactly once, from the
    /// WAL thread, after the fsync that covers the batch (or with the error).
    ///
    /// # Errors
    /// - [`SubmitError::Overloaded`] when the bounded queue is full (answer
    ///   OVERLOADED + retry-after),
    /// - [`SubmitError::ShuttingDown`] after shutdown began,
    /// - [`SubmitError::Invalid`] for a batch breaking [`FixBatch`]'s invariants.
    ///
    /// On `Err`, `done` is dropped without being called.
    pub fn submit(&self, batch: FixBatch, done: Done) -> Result<(), SubmitError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        if let Err(e) = validate_batch(&batch, inner.batch_fixes_max, inner.resolution) {
            inner.stats.rejected_invalid.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Invalid(e));
        }
        let msg = WalMsg::Submit(Submission {
            batch,
            ack: Ack::new(done),
        });
        match inner.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                if let WalMsg::Submit(s) = msg {
                    s.ack.disarm();
                }
                inner
                    .stats
                    .rejected_overloaded
                    .fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Overloaded {
                    queue_batches_max: inner.queue_batches_max,
                })
            }
            Err(TrySendError::Disconnected(msg)) => {
                if let WalMsg::Submit(s) = msg {
                    s.ack.disarm();
                }
                Err(SubmitError::ShuttingDown)
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StorageStats {
        self.inner
            .stats
            .snapshot(self.inner.tx.len(), self.inner.writer_tx.len())
    }

    fn begin_stop(&self, abandon: bool) -> Result<Threads, ShutdownError> {
        let inner = &self.inner;
        if inner.shutting_down.swap(true, Ordering::AcqRel) {
            return Err(ShutdownError::AlreadyShuttingDown);
        }
        // A flush that keeps failing must not hold shutdown forever: the
        // writer gives up after its current attempt (the WAL keeps the data).
        inner.writer_stop.store(true, Ordering::Release);
        let threads = inner
            .threads
            .lock()
            .map_err(|_| ShutdownError::ThreadPanicked { thread: "caller" })?
            .take()
            .ok_or(ShutdownError::AlreadyShuttingDown)?;
        // Blocks while the queue is full; the WAL thread is draining it.
        let _ = inner.tx.send(WalMsg::Stop { abandon });
        Ok(threads)
    }

    /// Commits everything queued, flushes everything to Parquet, writes the
    /// checkpoint, deletes the covered WAL segments and stops the threads.
    /// After this a restart has nothing to replay.
    ///
    /// # Errors
    /// See [`ShutdownError`]; after a failed final flush the WAL still holds
    /// every acknowledged batch and the next open replays it.
    pub fn shutdown(self) -> Result<ShutdownReport, ShutdownError> {
        // Only the caller that began the stop owns the lock's release.
        let threads = self.begin_stop(false)?;
        let result = self.join_and_flush(threads);
        self.release_lock();
        result
    }

    fn join_and_flush(&self, threads: Threads) -> Result<ShutdownReport, ShutdownError> {
        let wal_exit = threads
            .wal
            .join()
            .map_err(|_| ShutdownError::ThreadPanicked { thread: "wal" })?;
        // Every batch the WAL thread stored is queued ahead of this marker.
        let _ = self.inner.writer_tx.send(WriterMsg::Finish);
        let writer_exit = threads
            .writer
            .join()
            .map_err(|_| ShutdownError::ThreadPanicked { thread: "writer" })?;
        match writer_exit {
            WriterExit::Flushed {
                checkpoint_lsn,
                rows,
                files,
            } => {
                let deleted = writer::delete_covered_segments(
                    &*self.inner.fs,
                    &self.inner.wal_dir,
                    checkpoint_lsn,
                    Some(wal_exit.next_lsn),
                )
                .map_err(|source| ShutdownError::Io {
                    path: self.inner.wal_dir.clone(),
                    source,
                })?;
                Ok(ShutdownReport {
                    checkpoint_lsn,
                    rows_flushed: rows,
                    files_written: files,
                    wal_segments_deleted: deleted,
                })
            }
            WriterExit::Failed(e) => Err(ShutdownError::Flush(e)),
            WriterExit::Abandoned => Err(ShutdownError::ThreadPanicked { thread: "writer" }),
        }
    }

    /// Test hook simulating a crash: stops both threads WITHOUT flushing
    /// Parquet or writing a checkpoint. Acknowledged batches stay durable in
    /// the WAL; the next [`Storage::open`] replays them.
    ///
    /// # Errors
    /// Shutdown was already requested, or a thread panicked.
    pub fn abandon(self) -> Result<(), ShutdownError> {
        let threads = self.begin_stop(true)?;
        let wal = threads.wal.join();
        let writer = threads.writer.join();
        // The "crashed" process lets go of the directory like a dead one would.
        self.release_lock();
        wal.map_err(|_| ShutdownError::ThreadPanicked { thread: "wal" })?;
        writer.map_err(|_| ShutdownError::ThreadPanicked { thread: "writer" })?;
        Ok(())
    }

    /// Lets go of the data directory; called once the threads have stopped.
    fn release_lock(&self) {
        let mut lock = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(lock.take());
    }
}
