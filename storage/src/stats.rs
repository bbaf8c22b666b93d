//! Counters shared by the storage threads.
//!
//! Contract: monotonic relaxed atomics, readable at any time from any thread
//! through [`crate::Storage::stats`]; never used for synchronization.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters (internal).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) batches_committed: AtomicU64,
    pub(crate) fixes_committed: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) rejected_overloaded: AtomicU64,
    pub(crate) rejected_invalid: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) wal_bytes_written: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_failures: AtomicU64,
    pub(crate) files_written: AtomicU64,
    pub(crate) rows_written: AtomicU64,
    pub(crate) wal_failed: AtomicBool,
}

impl Stats {
    pub(crate) fn record_flush(&self, files: u64, rows: u64) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.files_written.fetch_add(files, Ordering::Relaxed);
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
    }
}

/// A snapshot of storage's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Batches durably logged (acknowledged `Stored`).
    pub batches_committed: u64,
    /// Fixes in those batches.
    pub fixes_committed: u64,
    /// Batches acknowledged `Duplicate`.
    pub duplicates: u64,
    /// Batches whose callback received an error.
    pub commit_failures: u64,
    /// `submit` calls refused with `Overloaded`.
    pub rejected_overloaded: u64,
    /// `submit` calls refused as invalid.
    pub rejected_invalid: u64,
    /// Group commits that reached their sync point (an `fdatasync`, unless
    /// `wal_fsync` is off).
    pub fsyncs: u64,
    /// Bytes appended to WAL segments.
    pub wal_bytes_written: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Failed flush attempts.
    pub flush_failures: u64,
    /// Parquet files published.
    pub files_written: u64,
    /// Rows in those files.
    pub rows_written: u64,
    /// Batches waiting in the submit queue.
    pub queue_depth: usize,
    /// Logged batches waiting for the writer thread.
    pub writer_queue_depth: usize,
    /// True once the WAL has failed (every later batch is refused).
    pub wal_failed: bool,
}

impl Stats {
    pub(crate) fn snapshot(&self, queue_depth: usize, writer_queue_depth: usize) -> StorageStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageStats {
            batches_committed: get(&self.batches_committed),
            fixes_committed: get(&self.fixes_committed),
            duplicates: get(&self.duplicates),
            commit_failures: get(&self.commit_failures),
            rejected_overloaded: get(&self.rejected_overloaded),
            rejected_invalid: get(&self.rejected_invalid),
            fsyncs: get(&self.fsyncs),
            wal_bytes_written: get(&self.wal_bytes_written),
            flushes: get(&self.flushes),
            flush_failures: get(&self.flush_failures),
            files_written: get(&self.files_written),
            rows_written: get(&self.rows_written),
            queue_depth,
            writer_queue_depth,
            wal_failed: self.wal_failed.load(Ordering::Relaxed),
        }
    }
}
