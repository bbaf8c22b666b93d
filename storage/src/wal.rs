//! Write-ahead log: the record format (pure) and segment file IO.
//!
//! Contract: a batch is acknowledged only after the bytes of its record are
//! covered by an `fdatasync` of its segment. [`encode_record`] and
//! [`decode_segment`] are pure; decoding never panics on any input and keeps the
//! longest valid prefix of a segment, reporting why the rest was rejected. The
//! file functions here never decide policy (the WAL thread does).
//!
//! # Segment file `<data>/wal/wal-<first_lsn:020>.log`
//!
//! ```text
//! offset 0        8          12              20
//!        +--------+----------+---------------+--------+--------+---
//!        | magic  | version  | first_lsn     | record | record | ...
//!        | 8 B    | u32 LE=1 | u64 LE        |        |        |
//!        +--------+----------+---------------+--------+--------+---
//!  magic = b"HXFWAL\0\0"
//! ```
//!
//! # Record
//!
//! ```text
//! +-------------+----------------------------+---------------------------------+
//! | len u32 LE  | crc32c(payload) u32 LE     | payload (len bytes)             |
//! +-------------+----------------------------+---------------------------------+
//!
//! payload:
//! +--------+-----------+-----------+----------------+-------+----------+
//! | lsn    | device_id | batch_seq | received_at_ms | n     | presence |
//! | u64 LE | u64 LE    | u64 LE    | i64 LE         | u32LE | u8       |
//! +--------+-----------+-----------+----------------+-------+----------+
//! then the columns as raw little-endian arrays of n values each:
//!   time_ms [i64] | lat_e7 [i32] | lon_e7 [i32]
//!   | accuracy_cm [u32] if presence bit 0 | altitude_cm [i32] if bit 1
//!   | speed_cmps  [u32] if bit 2          | heading_cdeg [u32] if bit 3
//!   | h3 [u64] if bit 4
//! ```
//!
//! The payload length must equal exactly what `n` and `presence` imply, and no
//! other presence bit may be set; anything else is a corrupt record.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::FixBatch;
use fix::{BATCH_FIXES_LIMIT, DeviceId, Fixes};
use sys::fs::{Fs, FsFile};

/// Segment file magic.
pub const MAGIC: [u8; 8] = *b"HXFWAL\0\0";
/// Segment format version.
pub const VERSION: u32 = 1;
/// Bytes of the segment header.
pub const HEADER_LEN: usize = 20;
/// Bytes of a record's `len` + `crc` prefix.
pub const RECORD_PREFIX_LEN: usize = 8;
/// Bytes of the fixed part of a payload (before the columns).
pub const PAYLOAD_FIXED_LEN: usize = 8 + 8 + 8 + 8 + 4 + 1;
/// Largest payload a decoder accepts (a batch of [`BATCH_FIXES_LIMIT`] fixes
/// with every column present).
pub const PAYLOAD_LEN_MAX: usize = PAYLOAD_FIXED_LEN + BATCH_FIXES_LIMIT * 40;

const P_ACCURACY: u8 = 1;
const P_ALTITUDE: u8 = 1 << 1;
const P_SPEED: u8 = 1 << 2;
const P_HEADING: u8 = 1 << 3;
const P_H3: u8 = 1 << 4;
const P_ALL: u8 = P_ACCURACY | P_ALTITUDE | P_SPEED | P_HEADING | P_H3;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log sequence number (consecutive, from 1).
    pub lsn: u64,
    /// The logged batch.
    pub batch: FixBatch,
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version (1).
    pub version: u32,
    /// The lsn the first record of the segment carries.
    pub first_lsn: u64,
}

/// Why the bytes from `offset` on were not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("segment has {actual} bytes, a header needs {expected}")]
    HeaderTooShort {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Wrong magic.
    #[error("segment magic {found:?} is not HXFWAL")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Unknown version.
    #[error("segment version {found} unsupported (expected {VERSION})")]
    BadVersion {
        /// The version found.
        found: u32,
    },
    /// A record prefix or payload runs past the end (a torn write).
    #[error("record at offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// Start of the record.
        offset: usize,
        /// Bytes the record claims.
        needed: usize,
        /// Bytes left in the segment.
        available: usize,
    },
    /// A record claims a payload longer than [`PAYLOAD_LEN_MAX`] (or shorter than the fixed part).
    #[error("record at offset {offset} claims an impossible payload length {len}")]
    BadLength {
        /// Start of the record.
        offset: usize,
        /// The claimed length.
        len: usize,
    },
    /// The payload's checksum does not match.
    #[error("record at offset {offset}: crc32c {actual:#010x} != stored {expected:#010x}")]
    BadCrc {
        /// Start of the record.
        offset: usize,
        /// Stored checksum.
        expected: u32,
        /// Checksum of the bytes present.
        actual: u32,
    },
    /// The checksum matches but the payload is inconsistent.
    #[error("record at offset {offset}: payload inconsistent ({reason})")]
    BadPayload {
        /// Start of the record.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl TailError {
    /// Length of the valid prefix of the segment (where truncation should cut).
    pub fn valid_len(&self) -> usize {
        match self {
            TailError::HeaderTooShort { .. }
            | TailError::BadMagic { .. }
            | TailError::BadVersion { .. } => 0,
            TailError::Truncated { offset, .. }
            | TailError::BadLength { offset, .. }
            | TailError::BadCrc { offset, .. }
            | TailError::BadPayload { offset, .. } => *offset,
        }
    }
}

/// Appends a segment header to `out`.
pub fn encode_header(first_lsn: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&first_lsn.to_le_bytes());
}

/// Decodes a segment header.
///
/// # Errors
/// [`TailError::HeaderTooShort`], [`TailError::BadMagic`] or [`TailError::BadVersion`].
pub fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, TailError> {
    let mut r = Reader { bytes, pos: 0 };
    let (Some(magic), Some(version), Some(first_lsn)) = (r.array::<8>(), r.u32(), r.u64()) else {
        return Err(TailError::HeaderTooShort {
            expected: HEADER_LEN,
            actual: bytes.len(),
        });
    };
    if magic != MAGIC {
        return Err(TailError::BadMagic { found: magic });
    }
    if version != VERSION {
        return Err(TailError::BadVersion { found: version });
    }
    Ok(SegmentHeader { version, first_lsn })
}

fn presence(batch: &FixBatch) -> u8 {
    let mut p = 0;
    if !batch.fixes.accuracy_cm.is_empty() {
        p |= P_ACCURACY;
    }
    if !batch.fixes.altitude_cm.is_empty() {
        p |= P_ALTITUDE;
    }
    if !batch.fixes.speed_cmps.is_empty() {
        p |= P_SPEED;
    }
    if !batch.fixes.heading_cdeg.is_empty() {
        p |= P_HEADING;
    }
    if !batch.h3.is_empty() {
        p |= P_H3;
    }
    p
}

fn payload_len(n: usize, presence: u8) -> usize {
    let mut per_fix = 8 + 4 + 4;
    for (bit, width) in [
        (P_ACCURACY, 4),
        (P_ALTITUDE, 4),
        (P_SPEED, 4),
        (P_HEADING, 4),
        (P_H3, 8),
    ] {
        if presence & bit != 0 {
            per_fix += width;
        }
    }
    PAYLOAD_FIXED_LEN + n * per_fix
}

/// Bytes [`encode_record`] appends for `batch` (prefix included).
pub fn record_len(batch: &FixBatch) -> usize {
    RECORD_PREFIX_LEN + payload_len(batch.len(), presence(batch))
}

/// Appends the record of `batch` with `lsn` to `out`.
///
/// The batch must be valid (see [`crate::validate_batch`]): optional columns
/// are written when non-empty and are assumed to have `batch.len()` values.
pub fn encode_record(batch: &FixBatch, lsn: u64, out: &mut Vec<u8>) {
    let n = batch.len();
    let p = presence(batch);
    let len = payload_len(n, p);
    out.reserve(RECORD_PREFIX_LEN + len);
    let start = out.len();
    let len_u32 = u32::try_from(len).expect("validated batches are far below 4 GiB per record");
    out.extend_from_slice(&len_u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&batch.device_id.get().to_le_bytes());
    out.extend_from_slice(&batch.batch_seq.to_le_bytes());
    out.extend_from_slice(&batch.received_at_ms.to_le_bytes());
    let n_u32 = u32::try_from(n).expect("validated batches hold at most BATCH_FIXES_LIMIT fixes");
    out.extend_from_slice(&n_u32.to_le_bytes());
    out.push(p);
    let f = &batch.fixes;
    put_le(out, &f.time_ms, i64::to_le_bytes);
    put_le(out, &f.lat_e7, i32::to_le_bytes);
    put_le(out, &f.lon_e7, i32::to_le_bytes);
    put_le(out, &f.accuracy_cm, u32::to_le_bytes);
    put_le(out, &f.altitude_cm, i32::to_le_bytes);
    put_le(out, &f.speed_cmps, u32::to_le_bytes);
    put_le(out, &f.heading_cdeg, u32::to_le_bytes);
    put_le(out, &batch.h3, u64::to_le_bytes);
    debug_assert_eq!(out.len() - start, RECORD_PREFIX_LEN + len);
    let crc = crc32c::crc32c(&out[start + RECORD_PREFIX_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends each value of a column as its little-endian bytes.
fn put_le<T: Copy, const N: usize>(out: &mut Vec<u8>, values: &[T], le: fn(T) -> [u8; N]) {
    values.iter().for_each(|&v| out.extend_from_slice(&le(v)));
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let chunk = self.bytes.get(self.pos..end)?;
        self.pos = end;
        chunk.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|a| a[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }
    fn column<const N: usize, T>(&mut self, n: usize, f: fn([u8; N]) -> T) -> Option<Vec<T>> {
        let end = self.pos.checked_add(n.checked_mul(N)?)?;
        let chunk = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(
            chunk
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
                .collect(),
        )
    }
}

/// Decodes one payload (checksum already verified).
fn decode_payload(payload: &[u8]) -> Result<Record, &'static str> {
    let mut r = Reader {
        bytes: payload,
        pos: 0,
    };
    let short = "payload shorter than its fixed part";
    let lsn = r.u64().ok_or(short)?;
    let device_id =
        DeviceId::try_from(r.u64().ok_or(short)?).map_err(|_| "device id out of range")?;
    let batch_seq = r.u64().ok_or(short)?;
    let received_at_ms = r.i64().ok_or(short)?;
    let n = r.u32().ok_or(short)? as usize;
    let p = r.u8().ok_or(short)?;
    if p & !P_ALL != 0 {
        return Err("unknown presence bit");
    }
    if n == 0 || n > BATCH_FIXES_LIMIT {
        return Err("fix count is 0 or above BATCH_FIXES_LIMIT");
    }
    if payload_len(n, p) != payload.len() {
        return Err("payload length does not match fix count and presence");
    }
    let cols = "columns shorter than declared";
    // An optional column has `n` entries when its presence bit is set, none otherwise.
    let len = |bit: u8| if p & bit != 0 { n } else { 0 };
    // The columns in record order: a struct expression evaluates its fields as written.
    let fixes = Fixes {
        time_ms: r.column(n, i64::from_le_bytes).ok_or(cols)?,
        lat_e7: r.column(n, i32::from_le_bytes).ok_or(cols)?,
        lon_e7: r.column(n, i32::from_le_bytes).ok_or(cols)?,
        accuracy_cm: r.column(len(P_ACCURACY), u32::from_le_bytes).ok_or(cols)?,
        altitude_cm: r.column(len(P_ALTITUDE), i32::from_le_bytes).ok_or(cols)?,
        speed_cmps: r.column(len(P_SPEED), u32::from_le_bytes).ok_or(cols)?,
        heading_cdeg: r.column(len(P_HEADING), u32::from_le_bytes).ok_or(cols)?,
    };
    let h3 = r.column(len(P_H3), u64::from_le_bytes).ok_or(cols)?;
    Ok(Record {
        lsn,
        batch: FixBatch {
            device_id,
            batch_seq,
            received_at_ms,
            fixes,
            h3,
        },
    })
}

/// Decodes the records that follow the header, from `bytes[HEADER_LEN..]`
/// when the header is valid. Keeps every record up to the first torn or
/// corrupt one and reports that one; never panics.
pub fn decode_segment(bytes: &[u8]) -> (Vec<Record>, Option<TailError>) {
    if let Err(e) = decode_header(bytes) {
        return (Vec::new(), Some(e));
    }
    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        let available = bytes.len() - offset;
        if available < RECORD_PREFIX_LEN {
            return (
                records,
                Some(TailError::Truncated {
                    offset,
                    needed: RECORD_PREFIX_LEN,
                    available,
                }),
            );
        }
        let mut r = Reader { bytes, pos: offset };
        let (Some(len), Some(expected)) = (r.u32(), r.u32()) else {
            unreachable!("at least RECORD_PREFIX_LEN bytes are available");
        };
        let len = len as usize;
        if !(PAYLOAD_FIXED_LEN..=PAYLOAD_LEN_MAX).contains(&len) {
            return (records, Some(TailError::BadLength { offset, len }));
        }
        if available - RECORD_PREFIX_LEN < len {
            return (
                records,
                Some(TailError::Truncated {
                    offset,
                    needed: RECORD_PREFIX_LEN + len,
                    available,
                }),
            );
        }
        let payload = &bytes[offset + RECORD_PREFIX_LEN..offset + RECORD_PREFIX_LEN + len];
        let actual = crc32c::crc32c(payload);
        if actual != expected {
            return (
                records,
                Some(TailError::BadCrc {
                    offset,
                    expected,
                    actual,
                }),
            );
        }
        match decode_payload(payload) {
            Ok(record) => records.push(record),
            Err(reason) => return (records, Some(TailError::BadPayload { offset, reason })),
        }
        offset += RECORD_PREFIX_LEN + len;
    }
    (records, None)
}

/// File name of the segment starting at `first_lsn`.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

/// Parses a segment file name back to its first lsn.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `wal_dir`, sorted by first lsn.
///
/// # Errors
/// Reading the directory failed.
pub fn list_segments(fs: &dyn Fs, wal_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs.list_dir(wal_dir)? {
        if let Some(first_lsn) = parse_segment_file_name(&entry.name) {
            segments.push((first_lsn, entry.path));
        }
    }
    segments.sort_unstable_by_key(|&(lsn, _)| lsn);
    Ok(segments)
}

/// The destination of WAL appends: one segment file at a time.
///
/// Abstracted so the group-commit logic can be tested against injected
/// failures (ENOSPC, failed fsync) without a real failing disk.
pub trait LogSink: Send {
    /// Appends `bytes` at the end of the current segment (one write).
    ///
    /// # Errors
    /// The write failed; the segment may hold a partial append.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    ///
    /// # Errors
    /// The sync failed: whether the data reached the disk is unknown.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the current segment back to its length before the last failed append.
    ///
    /// # Errors
    /// The truncation failed.
    fn truncate_to_good(&mut self) -> io::Result<()>;
    /// Bytes in the current segment.
    fn segment_len(&self) -> u64;
    /// Closes the current segment and starts `wal-<first_lsn>.log`.
    ///
    /// # Errors
    /// Creating, writing or syncing the new segment failed.
    fn roll(&mut self, first_lsn: u64) -> io::Result<()>;
}

/// [`LogSink`] over segment files in a directory of an [`Fs`].
#[derive(Debug)]
pub struct FileSink {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    file: Box<dyn FsFile>,
    good_len: u64,
    fsync: bool,
}

impl FileSink {
    /// Creates (or truncates) `wal-<first_lsn>.log` in `dir`, writes and syncs
    /// its header and the directory. With `fsync == false`, `sync` does nothing
    /// (UNSAFE, benchmarks only).
    ///
    /// # Errors
    /// Any IO failure.
    pub fn create(
        fs: Arc<dyn Fs>,
        dir: &Path,
        first_lsn: u64,
        fsync: bool,
    ) -> io::Result<FileSink> {
        let file = create_segment(&*fs, dir, first_lsn)?;
        Ok(FileSink {
            fs,
            dir: dir.to_path_buf(),
            file,
            good_len: HEADER_LEN as u64,
            fsync,
        })
    }
}

fn create_segment(fs: &dyn Fs, dir: &Path, first_lsn: u64) -> io::Result<Box<dyn FsFile>> {
    let path = dir.join(segment_file_name(first_lsn));
    let mut file = fs.create(&path)?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    encode_header(first_lsn, &mut header);
    file.write_all_at(&header, 0)?;
    file.sync_all()?;
    fs.sync_dir(dir)?;
    Ok(file)
}

impl LogSink for FileSink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.good_len)?;
        self.good_len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.fsync {
            self.file.sync_data()
        } else {
            Ok(())
        }
    }

    fn truncate_to_good(&mut self) -> io::Result<()> {
        self.file.set_len(self.good_len)?;
        // Make the cut durable before anything else: a rolled segment must
        // never leave a garbage tail behind in a segment that is not the last.
        if self.fsync {
            self.file.sync_all()?;
        }
        Ok(())
    }

    fn segment_len(&self) -> u64 {
        self.good_len
    }

    fn roll(&mut self, first_lsn: u64) -> io::Result<()> {
        let file = create_segment(&*self.fs, &self.dir, first_lsn)?;
        self.file = file;
        self.good_len = HEADER_LEN as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ABSENT_I32, ABSENT_U32};
    use proptest::prelude::*;

    fn batch(device_id: u64, seq: u64, n: usize, full: bool) -> FixBatch {
        let mut b = FixBatch {
            device_id: fix::DeviceId::try_from(device_id).expect("valid device id"),
            batch_seq: seq,
            received_at_ms: 1_700_000_000_123,
            fixes: fix::Fixes {
                time_ms: (0..n as i64).map(|i| 1_700_000_000_000 + i).collect(),
                lat_e7: (0..n as i32).map(|i| 485_000_000 + i).collect(),
                lon_e7: (0..n as i32).map(|i| -23_000_000 - i).collect(),
                ..fix::Fixes::default()
            },
            h3: Vec::new(),
        };
        if full {
            b.fixes.accuracy_cm = (0..n as u32)
                .map(|i| if i == 0 { ABSENT_U32 } else { i })
                .collect();
            b.fixes.altitude_cm = (0..n as i32)
                .map(|i| if i == 0 { ABSENT_I32 } else { -i })
                .collect();
            b.fixes.speed_cmps = vec![150; n];
            b.fixes.heading_cdeg = vec![35_999; n];
            b.h3 = vec![0x8a1fb46622dffff; n];
        }
        b
    }

    fn segment(batches: &[FixBatch]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        encode_header(1, &mut out);
        let mut ends = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            encode_record(b, i as u64 + 1, &mut out);
            ends.push(out.len());
        }
        (out, ends)
    }

    #[test]
    fn round_trip() {
        let batches = vec![
            batch(1, 1, 3, false),
            batch(2, 9, 5, true),
            batch(3, 2, 1, true),
        ];
        let (bytes, _) = segment(&batches);
        assert_eq!(
            decode_header(&bytes),
            Ok(SegmentHeader {
                version: 1,
                first_lsn: 1
            })
        );
        let (records, tail) = decode_segment(&bytes);
        assert_eq!(tail, None);
        assert_eq!(records.len(), 3);
        for (i, (r, b)) in records.iter().zip(&batches).enumerate() {
            assert_eq!(r.lsn, i as u64 + 1);
            assert_eq!(&r.batch, b);
        }
        assert_eq!(
            record_len(&batches[1]),
            bytes.len() - HEADER_LEN - record_len(&batches[0]) - record_len(&batches[2])
        );
    }

    #[test]
    fn torn_tail_at_every_offset_keeps_complete_records() {
        let batches = vec![
            batch(1, 1, 2, true),
            batch(1, 2, 3, false),
            batch(1, 3, 4, true),
        ];
        let (bytes, ends) = segment(&batches);
        let last_start = ends[1];
        for cut in last_start + 1..bytes.len() {
            let (records, tail) = decode_segment(&bytes[..cut]);
            assert_eq!(records.len(), 2, "cut at {cut}");
            assert_eq!(records[1].batch, batches[1]);
            let tail = tail.expect("torn tail reported");
            assert_eq!(tail.valid_len(), last_start, "cut at {cut}");
            assert!(
                matches!(tail, TailError::Truncated { .. }),
                "cut at {cut}: {tail:?}"
            );
        }
        let (records, tail) = decode_segment(&bytes);
        assert_eq!((records.len(), tail), (3, None));
        // Header cuts.
        for cut in 0..HEADER_LEN {
            let (records, tail) = decode_segment(&bytes[..cut]);
            assert!(records.is_empty());
            assert!(matches!(tail, Some(TailError::HeaderTooShort { .. })));
        }
    }

    #[test]
    fn corruption_is_detected() {
        let batches = vec![batch(1, 1, 2, true), batch(1, 2, 3, true)];
        let (bytes, ends) = segment(&batches);
        // Flip one bit in the payload of the second record.
        let mut bad = bytes.clone();
        bad[ends[0] + RECORD_PREFIX_LEN + 20] ^= 0x10;
        let (records, tail) = decode_segment(&bad);
        assert_eq!(records.len(), 1);
        assert!(matches!(tail, Some(TailError::BadCrc { offset, .. }) if offset == ends[0]));
        // Flip a bit of the stored crc.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 5] ^= 1;
        let (records, tail) = decode_segment(&bad);
        assert!(records.is_empty());
        assert!(matches!(
            tail,
            Some(TailError::BadCrc {
                offset: HEADER_LEN,
                ..
            })
        ));
        // Impossible length.
        let mut bad = bytes.clone();
        bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (_, tail) = decode_segment(&bad);
        assert!(matches!(tail, Some(TailError::BadLength { .. })));
        // Bad magic and version.
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode_segment(&bad).1,
            Some(TailError::BadMagic { .. })
        ));
        let mut bad = bytes;
        bad[8] = 2;
        assert!(matches!(
            decode_segment(&bad).1,
            Some(TailError::BadVersion { found: 2 })
        ));
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "wal-00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("wal-00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("wal-42.log"), None);
        assert_eq!(parse_segment_file_name("checkpoint"), None);
    }

    prop_compose! {
        /// Columns for `n` fixes with any values (the log does not validate), each optional
        /// column present (`n` entries) or empty as `present` says.
        fn arb_fixes(n: usize, present: [bool; 4])(
            time_ms in proptest::collection::vec(any::<i64>(), n),
            lat_e7 in proptest::collection::vec(any::<i32>(), n),
            lon_e7 in proptest::collection::vec(any::<i32>(), n),
            accuracy_cm in proptest::collection::vec(any::<u32>(), if present[0] { n } else { 0 }),
            altitude_cm in proptest::collection::vec(any::<i32>(), if present[1] { n } else { 0 }),
            speed_cmps in proptest::collection::vec(any::<u32>(), if present[2] { n } else { 0 }),
            heading_cdeg in proptest::collection::vec(any::<u32>(), if present[3] { n } else { 0 }),
        ) -> Fixes {
            Fixes {
                time_ms,
                lat_e7,
                lon_e7,
                accuracy_cm,
                altitude_cm,
                speed_cmps,
                heading_cdeg,
            }
        }
    }

    prop_compose! {
        fn arb_batch()(n in 1usize..20, present in any::<[bool; 4]>(), with_h3 in any::<bool>())(
            device_id in 1..=fix::DeviceId::MAX,
            batch_seq in any::<u64>(),
            received_at_ms in any::<i64>(),
            fixes in arb_fixes(n, present),
            h3 in proptest::collection::vec(any::<u64>(), if with_h3 { n } else { 0 }),
        ) -> FixBatch {
            FixBatch {
                device_id: fix::DeviceId::try_from(device_id).expect("valid device id"),
                batch_seq,
                received_at_ms,
                fixes,
                h3,
            }
        }
    }

    proptest! {
        #[test]
        fn prop_round_trip(batches in proptest::collection::vec(arb_batch(), 1..8), first in 1u64..1_000_000) {
            let mut bytes = Vec::new();
            encode_header(first, &mut bytes);
            for (i, b) in batches.iter().enumerate() {
                encode_record(b, first + i as u64, &mut bytes);
            }
            let (records, tail) = decode_segment(&bytes);
            prop_assert_eq!(tail, None);
            prop_assert_eq!(records.len(), batches.len());
            for (i, (r, b)) in records.iter().zip(&batches).enumerate() {
                prop_assert_eq!(r.lsn, first + i as u64);
                prop_assert_eq!(&r.batch, b);
            }
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = Vec::new();
            encode_header(1, &mut bytes);
            bytes.extend_from_slice(&tail);
            let (records, err) = decode_segment(&bytes);
            if let Some(e) = err {
                prop_assert!(e.valid_len() <= bytes.len());
            } else {
                prop_assert!(records.len() <= tail.len() / RECORD_PREFIX_LEN);
            }
        }
    }
}
