//! The silence snapshot file, `<data>/silence/snapshot.bin`.
//!
//! # Contract
//!
//! * The bytes are [`SilenceTable::encode_snapshot`]'s (self-describing: magic, version,
//!   lengths, CRC32C; layout in `silence/src/snapshot.rs`), written with
//!   [`sys::fs::write_atomic`] through [`Fs`]: temporary file, fsync, rename over the old
//!   snapshot, fsync of the directory. After a crash at any operation the file holds the old
//!   or the new snapshot, never a mix; a snapshot damaged any other way is refused whole by
//!   its checksum at restore.
//! * A failed save returns the error and leaves the old snapshot in place (when only the
//!   final directory fsync failed, the new one is visible but not known durable); the caller
//!   (the scanner) reports it and saves again at its next snapshot time.
//! * [`SnapshotFile::load`] reads the bytes, `None` when there is no snapshot yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sys::fs::{Fs, create_dir_durable, read_optional, write_atomic};

use crate::rules::Outage;
use crate::table::SilenceTable;

/// The snapshot file of one data directory.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    fs: Arc<dyn Fs>,
    data_dir: PathBuf,
    path: PathBuf,
}

impl SnapshotFile {
    /// The snapshot of `data_dir`: `<data_dir>/silence/snapshot.bin`.
    pub fn new(fs: Arc<dyn Fs>, data_dir: &Path) -> Self {
        Self {
            fs,
            data_dir: data_dir.to_path_buf(),
            path: Self::path_in(data_dir),
        }
    }

    /// Path of the snapshot under `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("silence").join("snapshot.bin")
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the snapshot, `None` if there is none.
    ///
    /// # Errors
    /// The OS error other than "not found".
    pub fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        read_optional(&*self.fs, &self.path)
    }

    /// Encodes `table` (taken at `taken_s`, with `outages` and the outstanding confirm
    /// `requests`) into `buf` and replaces the
    /// snapshot with it atomically (creating `<data>/silence/` durably when missing).
    ///
    /// # Errors
    /// The OS error of any step; the old snapshot is then still in place (or, after a failed
    /// directory fsync, the new one, not known durable).
    pub fn save(
        &self,
        table: &SilenceTable,
        taken_s: u32,
        outages: &[Outage],
        requests: &[crate::scanner::ConfirmRequestRecord],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        table.encode_snapshot(taken_s, outages, requests, buf);
        self.write(buf)
    }

    /// Replaces the snapshot with `bytes` atomically.
    ///
    /// # Errors
    /// As [`SnapshotFile::save`].
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        create_dir_durable(&*self.fs, &self.data_dir, Path::new("silence"))?;
        write_atomic(&*self.fs, &self.path, bytes)
    }
}

#[cfg(test)]
mod tests;
