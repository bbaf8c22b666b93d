//! Silence state snapshots: the table's per-device words, the server outages, the pending
//! confirmations and the outstanding confirm-location requests, as one self-describing,
//! checksummed byte string.
//!
//! # Contract
//!
//! * Pure encode/decode: the binary writes the bytes atomically (temp file, fsync, rename,
//!   fsync directory) to `<data>/silence/snapshot.bin` and reads them back at start.
//! * A snapshot is accepted whole or refused whole: magic, version, exact length and a CRC32C
//!   over everything before the checksum are all checked before any device is restored.
//! * Layout (little-endian):
//!
//! ```text
//! magic      8  b"HXSILNC\0"
//! version    4  u32 = 2 (version 1, written before requests were kept, is still read: it
//!               has no `requests` section and restores none)
//! taken_s    4  u32  when the snapshot was taken (server clock, Unix seconds)
//! outages    4  u32 n, then n × (down_s u32, up_s u32)
//! devices    8  u64 m, then m × (device u64, last_fix_s u32, last_contact_s u32,
//!                               since_s u32, state u32)        24 bytes each
//! confirms   4  u32 k, then k × (device u64, at_s u32, reported u32)
//! requests   4  u32 r, then r × (device u64, request_id u64, requested_at_ms i64,
//!                               reason_len u16, reason UTF-8)        (version 2 only)
//! crc32c     4  of every byte before it
//! ```
//!
//! A request's reason is at most [`CONFIRM_REASON_BYTES_MAX`] bytes; a longer one, or one
//! that is not UTF-8, refuses the snapshot as [`SnapshotError::BadRequest`].
//!
//! ```text
//! ```

use thiserror::Error;

use super::rules::Outage;
use super::scanner::ConfirmRequestRecord;
use super::table::{RecordError, SilenceTable, SlotRecord};

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"HXSILNC\0";
/// The version this code writes (it also reads version 1).
pub const SNAPSHOT_VERSION: u32 = 2;
/// The oldest version this code reads.
pub const SNAPSHOT_VERSION_MIN: u32 = 1;
/// Longest reason of a kept confirm-location request (the protocol's bound, PROTOCOL.md §9).
pub const CONFIRM_REASON_BYTES_MAX: usize = 256;

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Shorter than its header and checksum, or its counts promise more bytes than it has.
    #[error("silence snapshot truncated: {expected} bytes needed, {actual} present")]
    Truncated {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// Not a silence snapshot.
    #[error("not a silence snapshot (bad magic)")]
    BadMagic,
    /// Written by another version.
    #[error("silence snapshot version {found}, this build reads {supported}")]
    Version {
        /// The file's version.
        found: u32,
        /// The version read.
        supported: u32,
    },
    /// The checksum does not match: the file is damaged.
    #[error("silence snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored CRC32C.
        stored: u32,
        /// Computed CRC32C.
        computed: u32,
    },
    /// Longer than its counts say.
    #[error("silence snapshot has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// A kept confirm-location request is invalid (device id, empty id, reason).
    #[error("silence snapshot: confirm request {index} is invalid ({what})")]
    BadRequest {
        /// Its position in the snapshot.
        index: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// A device could not be restored (invalid id, or the table is smaller than the snapshot).
    #[error("restoring device from snapshot: {0}")]
    Restore(#[from] RecordError),
}

/// What a snapshot held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// When it was taken.
    pub taken_s: u32,
    /// Devices restored.
    pub devices: u64,
    /// The server outages recorded in it.
    pub outages: Vec<Outage>,
    /// Pending confirmations restored.
    pub confirmations: u32,
    /// The confirm-location requests outstanding when it was taken (none from version 1).
    pub requests: Vec<ConfirmRequestRecord>,
}

impl SilenceTable {
    /// Encodes the table's state, `outages`, the pending confirmations and the outstanding
    /// confirm-location `requests` into `buf` (cleared first). Safe while recorders run; each
    /// device is read atomically per word. A request whose reason is longer than
    /// `CONFIRM_REASON_BYTES_MAX` is kept with its reason cut at a character boundary.
    pub fn encode_snapshot(
        &self,
        taken_s: u32,
        outages: &[Outage],
        requests: &[ConfirmRequestRecord],
        buf: &mut Vec<u8>,
    ) {
        buf.clear();
        encode_head(taken_s, outages, buf);
        let count_at = buf.len();
        buf.extend_from_slice(&0u64.to_le_bytes());
        let mut devices = 0u64;
        let confirmations = self.export(|r| {
            devices += 1;
            encode_record(&r, buf);
        });
        buf[count_at..count_at + 8].copy_from_slice(&devices.to_le_bytes());
        encode_tail(&confirmations, requests, buf);
    }

    /// Verifies `bytes` and restores every device and confirmation in it into this table.
    /// Call at start-up, before recorders run. Nothing is restored unless the whole snapshot
    /// verifies.
    ///
    /// # Errors
    /// [`SnapshotError`]: damaged or foreign bytes, or a device the table cannot hold.
    pub fn restore_snapshot(&self, bytes: &[u8]) -> Result<SnapshotInfo, SnapshotError> {
        let decoded = decode(bytes)?;
        let mut devices = 0u64;
        for r in decoded.records {
            self.import(r)?;
            devices += 1;
        }
        let confirmations = decoded.confirmations.len() as u32;
        for (d, at, done) in decoded.confirmations {
            if super::table::valid_device_id(d) && at != 0 {
                self.import_confirmation(d, at, done);
            }
        }
        Ok(SnapshotInfo {
            taken_s: decoded.taken_s,
            devices,
            outages: decoded.outages,
            confirmations,
            requests: decoded.requests,
        })
    }
}

/// The snapshot `bytes` without `device_id`: its device record, its pending confirmation
/// and its outstanding confirm requests are left out, everything else is kept as it was
/// (re-encoded at [`SNAPSHOT_VERSION`]). The bytes are verified whole first, as by a
/// restore. `None` when the snapshot does not name the device (nothing to rewrite). This is
/// how `hexflow lake erase` removes a device from the silence state.
///
/// # Errors
/// [`SnapshotError`]: damaged or foreign bytes.
pub fn snapshot_without_device(
    bytes: &[u8],
    device_id: u64,
) -> Result<Option<Vec<u8>>, SnapshotError> {
    let d = decode(bytes)?;
    let named = d.records.iter().any(|r| r.device_id == device_id)
        || d.confirmations.iter().any(|c| c.0 == device_id)
        || d.requests.iter().any(|r| r.device_id.get() == device_id);
    if !named {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(bytes.len());
    encode_head(d.taken_s, &d.outages, &mut buf);
    let kept: Vec<&SlotRecord> = d
        .records
        .iter()
        .filter(|r| r.device_id != device_id)
        .collect();
    buf.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    for r in kept {
        encode_record(r, &mut buf);
    }
    let confirmations: Vec<(u64, u32, bool)> = d
        .confirmations
        .into_iter()
        .filter(|c| c.0 != device_id)
        .collect();
    let requests: Vec<ConfirmRequestRecord> = d
        .requests
        .into_iter()
        .filter(|r| r.device_id.get() != device_id)
        .collect();
    encode_tail(&confirmations, &requests, &mut buf);
    Ok(Some(buf))
}

/// Magic, version, `taken_s` and the `outages` section.
fn encode_head(taken_s: u32, outages: &[Outage], buf: &mut Vec<u8>) {
    buf.extend_from_slice(&SNAPSHOT_MAGIC);
    buf.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    buf.extend_from_slice(&taken_s.to_le_bytes());
    buf.extend_from_slice(&(outages.len() as u32).to_le_bytes());
    for o in outages {
        buf.extend_from_slice(&o.down_s.to_le_bytes());
        buf.extend_from_slice(&o.up_s.to_le_bytes());
    }
}

/// One `devices` entry.
fn encode_record(r: &SlotRecord, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&r.device_id.to_le_bytes());
    buf.extend_from_slice(&r.last_fix_s.to_le_bytes());
    buf.extend_from_slice(&r.last_contact_s.to_le_bytes());
    buf.extend_from_slice(&r.since_s.to_le_bytes());
    buf.extend_from_slice(&r.state.to_le_bytes());
}

/// The sections after `devices`, then the checksum of everything in `buf`.
fn encode_tail(
    confirmations: &[(u64, u32, bool)],
    requests: &[ConfirmRequestRecord],
    buf: &mut Vec<u8>,
) {
    buf.extend_from_slice(&(confirmations.len() as u32).to_le_bytes());
    for &(d, at, done) in confirmations {
        buf.extend_from_slice(&d.to_le_bytes());
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&u32::from(done).to_le_bytes());
    }
    encode_requests(requests, buf);
    let crc = crc32c::crc32c(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

fn encode_requests(requests: &[ConfirmRequestRecord], buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(requests.len() as u32).to_le_bytes());
    for r in requests {
        let mut end = r.reason.len().min(CONFIRM_REASON_BYTES_MAX);
        while !r.reason.is_char_boundary(end) {
            end -= 1;
        }
        buf.extend_from_slice(&r.device_id.get().to_le_bytes());
        buf.extend_from_slice(&r.request_id.to_le_bytes());
        buf.extend_from_slice(&r.requested_at_ms.to_le_bytes());
        // At most 256: fits.
        buf.extend_from_slice(&(end as u16).to_le_bytes());
        buf.extend_from_slice(&r.reason.as_bytes()[..end]);
    }
}

/// The `confirms` section: (device, confirmed at, reported).
fn decode_confirmations(r: &mut Reader<'_>) -> Result<Vec<(u64, u32, bool)>, SnapshotError> {
    let k = r.u32()?;
    r.need(u64::from(k), 16)?;
    let mut confirmations = Vec::with_capacity(k as usize);
    for _ in 0..k {
        let d = r.u64()?;
        let at = r.u32()?;
        let done = r.u32()? != 0;
        confirmations.push((d, at, done));
    }
    Ok(confirmations)
}

/// The `requests` section (version 2).
fn decode_requests(r: &mut Reader<'_>) -> Result<Vec<ConfirmRequestRecord>, SnapshotError> {
    let n = r.u32()?;
    // Each takes at least 26 bytes: a count that cannot fit is refused before allocating.
    r.need(u64::from(n), 26)?;
    let mut out = Vec::with_capacity(n as usize);
    for index in 0..n {
        let bad = |what| SnapshotError::BadRequest { index, what };
        let device_id = fix::DeviceId::try_from(r.u64()?).map_err(|_| bad("device id"))?;
        let request_id = r.u64()?;
        let requested_at_ms = i64::from_le_bytes(r.take::<8>()?);
        let len = usize::from(u16::from_le_bytes(r.take::<2>()?));
        if request_id == 0 {
            return Err(bad("request id 0"));
        }
        if len > CONFIRM_REASON_BYTES_MAX {
            return Err(bad("reason longer than 256 bytes"));
        }
        r.need(len as u64, 1)?;
        let bytes = &r.bytes[r.at..r.at + len];
        r.at += len;
        let reason = std::str::from_utf8(bytes)
            .map_err(|_| bad("reason not UTF-8"))?
            .to_string();
        out.push(ConfirmRequestRecord {
            device_id,
            request_id,
            requested_at_ms,
            reason,
        });
    }
    Ok(out)
}

struct Decoded {
    taken_s: u32,
    outages: Vec<Outage>,
    records: Vec<SlotRecord>,
    confirmations: Vec<(u64, u32, bool)>,
    requests: Vec<ConfirmRequestRecord>,
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.at + N;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(SnapshotError::Truncated {
                expected: end as u64,
                actual: self.bytes.len() as u64,
            })?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    /// Fails early when `count` items of `size` bytes cannot fit (no huge allocation).
    fn need(&self, count: u64, size: u64) -> Result<(), SnapshotError> {
        let expected = (self.at as u64).saturating_add(count.saturating_mul(size));
        if expected > self.bytes.len() as u64 {
            return Err(SnapshotError::Truncated {
                expected,
                actual: self.bytes.len() as u64,
            });
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Decoded, SnapshotError> {
    let min = 8 + 4 + 4 + 4 + 8 + 4 + 4;
    if bytes.len() < min {
        return Err(SnapshotError::Truncated {
            expected: min as u64,
            actual: bytes.len() as u64,
        });
    }
    if bytes[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut r = Reader { bytes: body, at: 8 };
    let version = r.u32()?;
    if !(SNAPSHOT_VERSION_MIN..=SNAPSHOT_VERSION).contains(&version) {
        return Err(SnapshotError::Version {
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let taken_s = r.u32()?;
    let n = r.u32()?;
    r.need(u64::from(n), 8)?;
    let mut outages = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let down_s = r.u32()?;
        let up_s = r.u32()?;
        outages.push(Outage { down_s, up_s });
    }
    let m = r.u64()?;
    r.need(m, 24)?;
    let mut records = Vec::with_capacity(m as usize);
    for _ in 0..m {
        records.push(SlotRecord {
            device_id: r.u64()?,
            last_fix_s: r.u32()?,
            last_contact_s: r.u32()?,
            since_s: r.u32()?,
            state: r.u32()?,
        });
    }
    let confirmations = decode_confirmations(&mut r)?;
    let requests = if version >= 2 {
        decode_requests(&mut r)?
    } else {
        Vec::new()
    };
    if r.at != body.len() {
        return Err(SnapshotError::TrailingBytes {
            extra: (body.len() - r.at) as u64,
        });
    }
    Ok(Decoded {
        taken_s,
        outages,
        records,
        confirmations,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Level, Policy};

    fn table_with_state() -> SilenceTable {
        let t = SilenceTable::with_capacity(100).unwrap();
        t.record_contact(5, 900).unwrap();
        t.record_fix(5, 1_000).unwrap();
        t.record_contact(6, 1_100).unwrap();
        t.record_fix(7, 5_000).unwrap();
        let mut ev = Vec::new();
        t.scan(5_050, &Policy::new(100, 1_000).unwrap(), &mut ev)
            .unwrap();
        t.record_confirmation(7, 5_060).unwrap();
        t
    }

    #[test]
    fn round_trip_restores_every_word() {
        let t = table_with_state();
        let outages = [Outage {
            down_s: 10,
            up_s: 20,
        }];
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &outages, &[], &mut buf);
        let u = SilenceTable::with_capacity(100).unwrap();
        let info = u.restore_snapshot(&buf).unwrap();
        assert_eq!(info.taken_s, 6_000);
        assert_eq!(info.devices, 3);
        assert_eq!(info.outages, outages);
        assert_eq!(info.confirmations, 1);
        for d in [5, 6, 7] {
            assert_eq!(u.get(d), t.get(d), "device {d}");
        }
        assert_eq!(u.get(5).unwrap().level, Level::Expired);
        assert_eq!(u.confirmation(7), Some(5_060));
        // Re-encoding the restored table gives the same bytes.
        let mut again = Vec::new();
        u.encode_snapshot(6_000, &outages, &[], &mut again);
        assert_eq!(again, buf);
    }

    #[test]
    fn damage_is_refused_whole() {
        let t = table_with_state();
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &[], &[], &mut buf);
        for cut in 0..buf.len() {
            let u = SilenceTable::with_capacity(100).unwrap();
            assert!(u.restore_snapshot(&buf[..cut]).is_err(), "cut at {cut}");
            assert!(u.is_empty(), "nothing restored from a cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let u = SilenceTable::with_capacity(100).unwrap();
            assert!(u.restore_snapshot(&bad).is_err(), "flip at {i}");
            assert!(u.is_empty());
        }
        let mut v3 = buf.clone();
        v3[8] = 3;
        let n = v3.len();
        let crc = crc32c::crc32c(&v3[..n - 4]);
        v3[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SilenceTable::with_capacity(100)
                .unwrap()
                .restore_snapshot(&v3),
            Err(SnapshotError::Version {
                found: 3,
                supported: 2
            })
        );
    }

    fn request(device: u64, request_id: u64, reason: &str) -> ConfirmRequestRecord {
        ConfirmRequestRecord {
            device_id: fix::DeviceId::try_from(device).unwrap(),
            request_id,
            requested_at_ms: 1_700_000_000_123,
            reason: reason.into(),
        }
    }

    /// Replaces the CRC after editing the body.
    fn reseal(bytes: &mut [u8]) {
        let n = bytes.len();
        let crc = crc32c::crc32c(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_device_is_erased_from_a_snapshot_and_nothing_else_changes() {
        let t = table_with_state();
        let outages = [Outage {
            down_s: 10,
            up_s: 20,
        }];
        let requests = [
            request(7, 42, "no fix past the warning"),
            request(5, 43, ""),
        ];
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &outages, &requests, &mut buf);
        // Device 7: a record, a pending confirmation and a request.
        let erased = snapshot_without_device(&buf, 7).unwrap().expect("named");
        assert!(!erased.windows(8).any(|w| w == 7u64.to_le_bytes()));
        let u = SilenceTable::with_capacity(100).unwrap();
        let info = u.restore_snapshot(&erased).unwrap();
        assert_eq!((info.taken_s, info.devices), (6_000, 2));
        assert_eq!(info.outages, outages);
        assert_eq!((info.confirmations, u.get(7)), (0, None));
        assert_eq!(info.requests, [request(5, 43, "")]);
        for d in [5, 6] {
            assert_eq!(u.get(d), t.get(d), "device {d} kept");
        }
        // The same as a table that never had device 7, encoded afresh.
        let mut again = Vec::new();
        u.encode_snapshot(6_000, &outages, &info.requests, &mut again);
        assert_eq!(again, erased);
        // A device it does not name: nothing to rewrite; damaged bytes are refused.
        assert_eq!(snapshot_without_device(&buf, 8), Ok(None));
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert!(snapshot_without_device(&bad, 7).is_err());
    }

    #[test]
    fn requests_round_trip_and_version_1_still_reads() {
        let t = table_with_state();
        let requests = [
            request(7, 42, "no fix past the warning"),
            request(9, 43, ""),
        ];
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &[], &requests, &mut buf);
        let u = SilenceTable::with_capacity(100).unwrap();
        let info = u.restore_snapshot(&buf).unwrap();
        assert_eq!(info.requests, requests);
        // A version-1 snapshot (written before requests were kept): the same bytes without
        // the requests section. It restores every device and no request.
        let mut without = Vec::new();
        t.encode_snapshot(6_000, &[], &[], &mut without);
        let mut v1 = without[..without.len() - 8].to_vec();
        v1.extend_from_slice(&[0; 4]);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        reseal(&mut v1);
        let w = SilenceTable::with_capacity(100).unwrap();
        let info = w.restore_snapshot(&v1).unwrap();
        assert_eq!((info.devices, info.requests.len()), (3, 0));
        assert_eq!(w.get(5), t.get(5));
        // Reasons are cut to 256 bytes at a character boundary; a longer one on disk, id 0 or
        // device 0 refuse the snapshot.
        let long = "é".repeat(200);
        let mut cut = Vec::new();
        t.encode_snapshot(6_000, &[], &[request(7, 1, &long)], &mut cut);
        let got = SilenceTable::with_capacity(100)
            .unwrap()
            .restore_snapshot(&cut)
            .unwrap();
        assert_eq!(got.requests[0].reason, "é".repeat(128));
        let at = without.len() - 4;
        for (offset, value, what) in [(0, 0u8, "device id"), (8, 0, "request id 0")] {
            let mut bad = Vec::new();
            t.encode_snapshot(6_000, &[], &[request(7, 1, "x")], &mut bad);
            for b in &mut bad[at + offset..at + offset + 8] {
                *b = value;
            }
            reseal(&mut bad);
            assert_eq!(
                SilenceTable::with_capacity(100)
                    .unwrap()
                    .restore_snapshot(&bad),
                Err(SnapshotError::BadRequest { index: 0, what })
            );
        }
    }

    #[test]
    fn snapshot_larger_than_table_is_refused() {
        let t = table_with_state();
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &[], &[], &mut buf);
        let small = SilenceTable::with_capacity(2).unwrap();
        assert!(matches!(
            small.restore_snapshot(&buf),
            Err(SnapshotError::Restore(RecordError::TableFull {
                devices_max: 2
            }))
        ));
    }
}
