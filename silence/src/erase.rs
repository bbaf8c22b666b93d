//! Erasing one device from the silence files of a data directory (`hexflow lake erase`).
//!
//! # Contract
//!
//! * [`erase_device`] removes every trace of a device id that the silence feature wrote:
//!   its lines in `events/silence.jsonl` and the exemptions log (an exemption naming the
//!   device), its rows in the `events` and `device_status` Parquet tables, and its record,
//!   pending confirmation and outstanding confirm requests in the silence snapshot.
//!   Everything else stays byte for byte (logs) or row for row (tables, same sort order).
//! * Every rewrite is atomic through [`Fs`]: a log or the snapshot is replaced with
//!   [`write_atomic`], a Parquet file is republished under its own name
//!   ([`publish_parquet`]: temporary file, fsync, rename, directory fsync) or, when no row
//!   is left, removed and its directory fsynced. A crash leaves each file old or new.
//! * Run it while no server uses the data directory (the CLI holds the storage lock
//!   first): a running scanner appends to the logs and rewrites the snapshot.
//! * A log line is the device's when it holds `"device_id":<id>` (events) or
//!   `"device":<id>` (exemptions) followed by a non-digit: exactly how the writers format
//!   them. A torn last line is dropped by the same rule when it names the device.

use std::path::{Path, PathBuf};

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use storage::writer::{FlushError, ParquetOptions, publish_parquet, writer_properties_sorted_by};
use sys::fs::{Fs, read_optional, write_atomic};

use crate::log::{EventLog, ExemptionLog};
use crate::snapshot::{SnapshotError, snapshot_without_device};
use crate::snapshot_file::SnapshotFile;

/// What [`erase_device`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseReport {
    /// Lines removed from `events/silence.jsonl`.
    pub event_lines: usize,
    /// Lines removed from `events/exemptions.jsonl`.
    pub exemption_lines: usize,
    /// Rows removed from the `events` table.
    pub event_rows: usize,
    /// Rows removed from the `device_status` table.
    pub status_rows: usize,
    /// Parquet files rewritten (or removed, when no row was left).
    pub files_rewritten: usize,
    /// Whether the snapshot named the device (and was rewritten).
    pub snapshot: bool,
}

/// Why an erasure stopped. Files already rewritten stay rewritten; running it again
/// finishes the job (each step removes only what is still there).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    /// Reading, writing or listing a file failed.
    #[error("erase: {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be read (damaged, or not one of ours).
    #[error("erase: reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Parquet file could not be written back.
    #[error("erase: rewriting a table file: {0}")]
    Write(#[from] FlushError),
    /// The snapshot is damaged; it is left as it is.
    #[error("erase: silence snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> EraseError + '_ {
    move |source| EraseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes `device_id` from every silence file under `data_dir` (see the module doc);
/// Parquet files are rewritten with `parquet`'s encoding.
///
/// # Errors
/// See [`EraseError`].
pub fn erase_device(
    fs: &dyn Fs,
    data_dir: &Path,
    device_id: fix::DeviceId,
    parquet: ParquetOptions,
) -> Result<EraseReport, EraseError> {
    let id = device_id.get();
    let mut report = EraseReport {
        event_lines: erase_lines(fs, &EventLog::path_in(data_dir), "\"device_id\":", id)?,
        exemption_lines: erase_lines(fs, &ExemptionLog::path(data_dir), "\"device\":", id)?,
        ..EraseReport::default()
    };
    // Sort orders as the writers declare them (events: at, device_id; status: device_id).
    let (event_rows, event_files) = erase_table(fs, data_dir, "events", &[1, 2], id, parquet)?;
    let (status_rows, status_files) =
        erase_table(fs, data_dir, "device_status", &[1], id, parquet)?;
    report.event_rows = event_rows;
    report.status_rows = status_rows;
    report.files_rewritten = event_files + status_files;
    let snapshot = SnapshotFile::path_in(data_dir);
    if let Some(bytes) = read_optional(fs, &snapshot).map_err(io_at(&snapshot))?
        && let Some(rewritten) = snapshot_without_device(&bytes, id)?
    {
        write_atomic(fs, &snapshot, &rewritten).map_err(io_at(&snapshot))?;
        report.snapshot = true;
    }
    Ok(report)
}

/// Whether `line` names the device: `needle` (`key` then the id, [`erase_lines`]) directly
/// followed by a non-digit.
fn names_device(line: &[u8], needle: &[u8]) -> bool {
    line.windows(needle.len())
        .enumerate()
        .any(|(at, w)| w == needle && !line.get(at + needle.len()).is_some_and(u8::is_ascii_digit))
}

/// Rewrites the JSON Lines file at `path` without the lines naming the device (every other
/// byte kept as it was); returns how many went. A missing file has none.
fn erase_lines(fs: &dyn Fs, path: &Path, key: &str, id: u64) -> Result<usize, EraseError> {
    let Some(bytes) = read_optional(fs, path).map_err(io_at(path))? else {
        return Ok(0);
    };
    let needle = format!("{key}{id}");
    let mut kept = Vec::with_capacity(bytes.len());
    let mut removed = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if names_device(line, needle.as_bytes()) {
            removed += 1;
        } else {
            kept.extend_from_slice(line);
        }
    }
    if removed > 0 {
        write_atomic(fs, path, &kept).map_err(io_at(path))?;
    }
    Ok(removed)
}

/// Every `*.parquet` file below `dir` (none when it does not exist), sorted.
fn parquet_files(fs: &dyn Fs, dir: &Path) -> Result<Vec<PathBuf>, EraseError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match fs.list_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(&d)(e)),
        };
        for e in entries {
            if e.is_dir {
                pending.push(e.path);
            } else if e.name.ends_with(".parquet") {
                out.push(e.path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Erases the device from every Parquet file of table `table` (rows sorted by the columns
/// at `sort`); returns the rows removed and the files rewritten or removed.
fn erase_table(
    fs: &dyn Fs,
    data_dir: &Path,
    table: &str,
    sort: &[usize],
    id: u64,
    parquet: ParquetOptions,
) -> Result<(usize, usize), EraseError> {
    let (mut rows, mut files) = (0, 0);
    for path in parquet_files(fs, &data_dir.join(table))? {
        let removed = erase_rows(fs, data_dir, &path, id, parquet, sort)?;
        if removed > 0 {
            rows += removed;
            files += 1;
        }
    }
    Ok((rows, files))
}

/// Rewrites one table file without the device's rows (removes it when none is left);
/// returns how many rows went.
fn erase_rows(
    fs: &dyn Fs,
    data_dir: &Path,
    path: &Path,
    id: u64,
    parquet: ParquetOptions,
    sort: &[usize],
) -> Result<usize, EraseError> {
    let bytes = bytes::Bytes::from(fs.read(path).map_err(io_at(path))?);
    let read_err = |source| EraseError::Read {
        path: path.to_path_buf(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(read_err)?;
    let schema = reader.schema().clone();
    let (mut kept, mut removed) = (Vec::new(), 0);
    for batch in reader.build().map_err(read_err)? {
        let batch = batch.map_err(|e| read_err(e.into()))?;
        let keep = keep_mask(&batch, id);
        removed += batch.num_rows() - keep.true_count();
        kept.push(arrow::compute::filter_record_batch(&batch, &keep).map_err(FlushError::from)?);
    }
    if removed == 0 {
        return Ok(0);
    }
    let dir = path.parent().unwrap_or(data_dir);
    if kept.iter().all(|b| b.num_rows() == 0) {
        fs.remove_file(path).map_err(io_at(path))?;
        fs.sync_dir(dir).map_err(io_at(dir))?;
        return Ok(removed);
    }
    let rel = dir.strip_prefix(data_dir).unwrap_or(dir);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let props =
        writer_properties_sorted_by(parquet, sort).map_err(|source| FlushError::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
    let batches = kept.into_iter().filter(|b| b.num_rows() > 0).map(Ok);
    publish_parquet(fs, data_dir, rel, name, schema, batches, props)?;
    Ok(removed)
}

/// True for the rows of `batch` that are not the device's (all rows when the batch has no
/// `device_id` column of ours).
fn keep_mask(batch: &RecordBatch, id: u64) -> BooleanArray {
    let ids = batch
        .column_by_name("device_id")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
    match ids {
        Some(ids) => ids
            .iter()
            .map(|d| Some(d.is_none_or(|d| d as u64 != id)))
            .collect(),
        None => BooleanArray::from(vec![true; batch.num_rows()]),
    }
}

#[cfg(test)]
mod tests;
