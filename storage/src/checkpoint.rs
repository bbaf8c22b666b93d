//! The checkpoint: the last WAL lsn whose batches are all in published Parquet
//! files, and the dedup windows as of that lsn.
//!
//! Contract: written only after every Parquet file of a flush is durable
//! (renamed and its directory synced), atomically (tmp + fsync + rename + fsync
//! dir), so a reader sees either the old or the new checkpoint, whole.
//! [`encode`] / [`decode`] are pure; decode never panics.
//!
//! ```text
//! +-----------+----------+--------+---------+--------------------------------+--------+
//! | magic     | version  | to_lsn | count   | count x (device_id, hwm,       | crc32c |
//! | "HXFCKPT\0"| u32 LE=1 | u64 LE | u64 LE  |          bitmap) each u64 LE   | u32 LE |
//! +-----------+----------+--------+---------+--------------------------------+--------+
//!  crc32c covers every byte before it.
//! ```

use std::io;
use std::path::Path;

use fix::DeviceId;

use crate::dedup::Window;
use sys::fs::Fs;

/// Checkpoint file magic.
pub const MAGIC: [u8; 8] = *b"HXFCKPT\0";
/// Checkpoint format version.
pub const VERSION: u32 = 1;
/// File name inside `<data>/wal/`.
pub const FILE_NAME: &str = "checkpoint";
const FIXED_LEN: usize = 8 + 4 + 8 + 8;

/// A decoded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Every batch with `lsn <= to_lsn` is in a published Parquet file.
    pub to_lsn: u64,
    /// Dedup windows after applying every batch with `lsn <= to_lsn`, sorted by device.
    pub windows: Vec<(DeviceId, Window)>,
}

/// Why a checkpoint file could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Shorter than its fixed part or its declared entries.
    #[error("checkpoint has {actual} bytes, expected {expected}")]
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// An entry names a device id outside `1..=i64::MAX`.
    #[error("checkpoint names device id {value}, outside 1..=i64::MAX")]
    DeviceId {
        /// The value found.
        value: u64,
    },
    /// Wrong magic.
    #[error("checkpoint magic is wrong")]
    Magic,
    /// Unknown version.
    #[error("checkpoint version {found} unsupported")]
    Version {
        /// Version found.
        found: u32,
    },
    /// Checksum mismatch.
    #[error("checkpoint crc32c {actual:#010x} != stored {expected:#010x}")]
    Crc {
        /// Stored.
        expected: u32,
        /// Computed.
        actual: u32,
    },
}

/// Serializes a checkpoint.
pub fn encode(cp: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + cp.windows.len() * 24 + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&cp.to_lsn.to_le_bytes());
    out.extend_from_slice(&(cp.windows.len() as u64).to_le_bytes());
    for (device_id, w) in &cp.windows {
        out.extend_from_slice(&device_id.get().to_le_bytes());
        out.extend_from_slice(&w.hwm.to_le_bytes());
        out.extend_from_slice(&w.bitmap.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses a checkpoint.
///
/// # Errors
/// A [`CheckpointError`] describing the first problem found.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < FIXED_LEN + 4 {
        return Err(CheckpointError::Length {
            expected: FIXED_LEN + 4,
            actual: bytes.len(),
        });
    }
    if bytes[..8] != MAGIC {
        return Err(CheckpointError::Magic);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(v);
    if version != VERSION {
        return Err(CheckpointError::Version { found: version });
    }
    let to_lsn = u64_at(bytes, 12);
    let count = u64_at(bytes, 20);
    let expected = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(24))
        .and_then(|e| e.checked_add(FIXED_LEN + 4))
        .unwrap_or(usize::MAX);
    if bytes.len() != expected {
        return Err(CheckpointError::Length {
            expected,
            actual: bytes.len(),
        });
    }
    let body = &bytes[..bytes.len() - 4];
    let mut c = [0u8; 4];
    c.copy_from_slice(&bytes[bytes.len() - 4..]);
    let stored = u32::from_le_bytes(c);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(CheckpointError::Crc {
            expected: stored,
            actual,
        });
    }
    let windows = body[FIXED_LEN..]
        .chunks_exact(24)
        .map(|e| {
            let device_id = DeviceId::try_from(u64_at(e, 0))
                .map_err(|e| CheckpointError::DeviceId { value: e.value })?;
            let window = Window {
                hwm: u64_at(e, 8),
                bitmap: u64_at(e, 16),
            };
            Ok((device_id, window))
        })
        .collect::<Result<_, _>>()?;
    Ok(Checkpoint { to_lsn, windows })
}

/// Writes the checkpoint into `wal_dir` atomically and durably.
///
/// # Errors
/// Any IO failure; the previous checkpoint is then still in place.
pub fn write(fs: &dyn Fs, wal_dir: &Path, cp: &Checkpoint) -> io::Result<()> {
    sys::fs::write_atomic(fs, &wal_dir.join(FILE_NAME), &encode(cp))
}

/// Reads the checkpoint in `wal_dir`: `Ok(None)` when there is none yet,
/// `Ok(Some(Err(..)))` when the file exists but is corrupt.
///
/// # Errors
/// Reading the file failed.
pub fn read(
    fs: &dyn Fs,
    wal_dir: &Path,
) -> io::Result<Option<Result<Checkpoint, CheckpointError>>> {
    Ok(sys::fs::read_optional(fs, &wal_dir.join(FILE_NAME))?.map(|bytes| decode(&bytes)))
}

/// Rewrites the checkpoint in `wal_dir` without `device`'s dedup window (erasure: the
/// checkpoint would otherwise still name the device). Returns whether it was there.
///
/// # Errors
/// Reading or writing failed; a corrupt checkpoint is reported as `InvalidData`.
pub fn forget_device(fs: &dyn Fs, wal_dir: &Path, device: DeviceId) -> io::Result<bool> {
    let Some(cp) = read(fs, wal_dir)? else {
        return Ok(false);
    };
    let mut cp = cp.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let before = cp.windows.len();
    cp.windows.retain(|(d, _)| *d != device);
    if cp.windows.len() == before {
        return Ok(false);
    }
    write(fs, wal_dir, &cp)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let cp = Checkpoint {
            to_lsn: 77,
            windows: vec![
                (
                    DeviceId::try_from(1u64).expect("id"),
                    Window {
                        hwm: 10,
                        bitmap: 0b1011,
                    },
                ),
                (
                    DeviceId::try_from(9u64).expect("id"),
                    Window { hwm: 3, bitmap: 1 },
                ),
            ],
        };
        let bytes = encode(&cp);
        assert_eq!(decode(&bytes), Ok(cp.clone()));
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(matches!(decode(&bad), Err(CheckpointError::Crc { .. })));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(CheckpointError::Length { .. })
        ));
        let mut bad = bytes;
        bad[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&bad), Err(CheckpointError::Length { .. })));

        let dir = tempfile::tempdir().expect("tempdir");
        let fs = sys::fs::RealFs;
        assert_eq!(read(&fs, dir.path()).expect("io"), None);
        write(&fs, dir.path(), &cp).expect("write");
        assert_eq!(read(&fs, dir.path()).expect("io"), Some(Ok(cp)));
    }
}
