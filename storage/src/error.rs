//! Errors of the public operations, one enum per operation.
//!
//! Contract: structured fields, no catch-all strings; [`CommitError`] is
//! `Clone` because one failed group fails many callbacks with the same cause.

use std::io;
use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::fix_batch::InvalidBatch;
use crate::wal::TailError;
use crate::writer::FlushError;

/// Why [`crate::Storage::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is out of bounds.
    #[error("invalid storage configuration: {0}")]
    Config(#[from] ConfigError),
    /// Another process (or another open [`crate::Storage`]) holds the data directory.
    #[error(
        "data directory is in use: {path} is locked by another hexflow process; stop it first (two writers would corrupt the WAL)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A file or directory operation failed.
    #[error("storage open: IO on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The checkpoint file is corrupt.
    #[error("checkpoint {path} is corrupt: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CheckpointError,
    },
    /// A segment other than the last one is corrupt (acknowledged data would
    /// be lost by truncating it; an operator must decide).
    #[error("WAL segment {segment} is corrupt before its end: {source}")]
    CorruptWal {
        /// The segment file.
        segment: PathBuf,
        /// Where and how.
        #[source]
        source: TailError,
    },
    /// A segment's header disagrees with its file name.
    #[error("WAL segment {segment}: header first_lsn {header_lsn} != name {name_lsn}")]
    SegmentNameMismatch {
        /// The segment file.
        segment: PathBuf,
        /// From the file name.
        name_lsn: u64,
        /// From the header.
        header_lsn: u64,
    },
    /// Records are not consecutive.
    #[error("WAL segment {segment}: expected lsn {expected}, found {found}")]
    LsnGap {
        /// The segment file.
        segment: PathBuf,
        /// The lsn that should have come next.
        expected: u64,
        /// The lsn found.
        found: u64,
    },
    /// A storage thread could not be started.
    #[error("could not spawn the {thread} thread: {source}")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The writer thread stopped during replay.
    #[error("the writer thread stopped during WAL replay")]
    WriterStopped,
    /// The `positions` table could not be opened (or has another layout).
    #[error("positions table: {0}")]
    Table(#[source] lake::TableError),
    /// The checkpoint claims WAL records the table does not hold (their segments may be
    /// gone): the table or the WAL directory was replaced by hand.
    #[error(
        "checkpoint says lsn {checkpoint_lsn} is in Parquet but the positions table only \
         records {table_lsn}: the table or wal/ directory was changed by hand"
    )]
    CheckpointAheadOfTable {
        /// From `wal/checkpoint`.
        checkpoint_lsn: u64,
        /// From the table's txn.
        table_lsn: u64,
    },
}

/// Why [`crate::Storage::submit`] refused a batch (its callback is then
/// dropped without being called).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The submit queue is full: answer OVERLOADED and ask to retry later.
    #[error("storage overloaded: submit queue full ({queue_batches_max} batches)")]
    Overloaded {
        /// The queue's capacity.
        queue_batches_max: usize,
    },
    /// Shutdown has begun.
    #[error("storage is shutting down")]
    ShuttingDown,
    /// The batch breaks an invariant of [`crate::FixBatch`].
    #[error("invalid batch: {0}")]
    Invalid(#[from] InvalidBatch),
}

/// Why a queued batch was not stored (given to its callback).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The WAL failed (a failed fsync or write); nothing is accepted until a
    /// restart. Never followed by a success for the same batch.
    #[error("WAL failed (errno {errno:?}); storage refuses writes until restarted")]
    WalFailed {
        /// The OS error code of the failure, when there was one.
        errno: Option<i32>,
    },
    /// The disk is full; the batch was not logged. Retry later.
    #[error("disk full: batch not logged")]
    DiskFull,
    /// `batch_seq` is below the device's dedup window: it cannot be told apart
    /// from a replay, so it is refused.
    #[error(
        "device {device_id}: batch_seq {batch_seq} is below the window starting at {window_low}"
    )]
    StaleSequence {
        /// The device.
        device_id: fix::DeviceId,
        /// The refused sequence number.
        batch_seq: u64,
        /// Lowest sequence number still accepted.
        window_low: u64,
    },
    /// The dedup table is full and this device is new.
    #[error("dedup table full ({devices_max} devices)")]
    TooManyDevices {
        /// The configured bound.
        devices_max: usize,
    },
    /// Storage stopped before the batch was logged.
    #[error("storage shut down before the batch was logged")]
    ShuttingDown,
}

/// Why [`crate::Storage::shutdown`] did not complete cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Shutdown (or abandon) was already requested through another handle.
    #[error("shutdown already requested")]
    AlreadyShuttingDown,
    /// A storage thread panicked.
    #[error("the {thread} thread panicked")]
    ThreadPanicked {
        /// Which thread.
        thread: &'static str,
    },
    /// The final flush failed; the WAL keeps every acknowledged batch for replay.
    #[error("final flush failed: {0}")]
    Flush(#[from] FlushError),
    /// Deleting WAL segments covered by the final checkpoint failed (harmless:
    /// they are skipped on replay).
    #[error("deleting covered WAL segments in {path}: {source}")]
    Io {
        /// The WAL directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}
