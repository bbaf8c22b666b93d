//! Silence state snapshots: the table's per-device words, the server outages and the pending
//! confirmations, as one self-describing, checksummed byte string.
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
//! version    4  u32 = 1
//! taken_s    4  u32  when the snapshot was taken (server clock, Unix seconds)
//! outages    4  u32 n, then n × (down_s u32, up_s u32)
//! devices    8  u64 m, then m × (device u64, last_fix_s u32, last_contact_s u32,
//!                               since_s u32, state u32)        24 bytes each
//! confirms   4  u32 k, then k × (device u64, at_s u32, reported u32)
//! crc32c     4  of every byte before it
//! ```

use thiserror::Error;

use super::rules::Outage;
use super::table::{RecordError, SilenceTable, SlotRecord};

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"HXSILNC\0";
/// The version this code writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

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
}

impl SilenceTable {
    /// Encodes the table's state, `outages` and the pending confirmations into `buf`
    /// (cleared first). Safe while recorders run; each device is read atomically per word.
    pub fn encode_snapshot(&self, taken_s: u32, outages: &[Outage], buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&SNAPSHOT_MAGIC);
        buf.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        buf.extend_from_slice(&taken_s.to_le_bytes());
        buf.extend_from_slice(&(outages.len() as u32).to_le_bytes());
        for o in outages {
            buf.extend_from_slice(&o.down_s.to_le_bytes());
            buf.extend_from_slice(&o.up_s.to_le_bytes());
        }
        let count_at = buf.len();
        buf.extend_from_slice(&0u64.to_le_bytes());
        let mut devices = 0u64;
        let confirmations = self.export(|r| {
            devices += 1;
            buf.extend_from_slice(&r.device_id.to_le_bytes());
            buf.extend_from_slice(&r.last_fix_s.to_le_bytes());
            buf.extend_from_slice(&r.last_contact_s.to_le_bytes());
            buf.extend_from_slice(&r.since_s.to_le_bytes());
            buf.extend_from_slice(&r.state.to_le_bytes());
        });
        buf[count_at..count_at + 8].copy_from_slice(&devices.to_le_bytes());
        buf.extend_from_slice(&(confirmations.len() as u32).to_le_bytes());
        for (d, at, done) in confirmations {
            buf.extend_from_slice(&d.to_le_bytes());
            buf.extend_from_slice(&at.to_le_bytes());
            buf.extend_from_slice(&u32::from(done).to_le_bytes());
        }
        let crc = crc32c::crc32c(buf);
        buf.extend_from_slice(&crc.to_le_bytes());
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
        })
    }
}

struct Decoded {
    taken_s: u32,
    outages: Vec<Outage>,
    records: Vec<SlotRecord>,
    confirmations: Vec<(u64, u32, bool)>,
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
    if version != SNAPSHOT_VERSION {
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
    let k = r.u32()?;
    r.need(u64::from(k), 16)?;
    let mut confirmations = Vec::with_capacity(k as usize);
    for _ in 0..k {
        let d = r.u64()?;
        let at = r.u32()?;
        let done = r.u32()? != 0;
        confirmations.push((d, at, done));
    }
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
        t.encode_snapshot(6_000, &outages, &mut buf);
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
        u.encode_snapshot(6_000, &outages, &mut again);
        assert_eq!(again, buf);
    }

    #[test]
    fn damage_is_refused_whole() {
        let t = table_with_state();
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &[], &mut buf);
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
        let mut v2 = buf.clone();
        v2[8] = 2;
        let n = v2.len();
        let crc = crc32c::crc32c(&v2[..n - 4]);
        v2[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SilenceTable::with_capacity(100)
                .unwrap()
                .restore_snapshot(&v2),
            Err(SnapshotError::Version {
                found: 2,
                supported: 1
            })
        );
    }

    #[test]
    fn snapshot_larger_than_table_is_refused() {
        let t = table_with_state();
        let mut buf = Vec::new();
        t.encode_snapshot(6_000, &[], &mut buf);
        let small = SilenceTable::with_capacity(2).unwrap();
        assert!(matches!(
            small.restore_snapshot(&buf),
            Err(SnapshotError::Restore(RecordError::TableFull {
                devices_max: 2
            }))
        ));
    }
}
