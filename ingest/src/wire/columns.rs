//! Decoding the protobuf `Batch` payload with its limits checked before the work.
//!
//! # Contract
//! * Two passes. [`Counter`] walks the protobuf structure (tags, lengths, packed regions)
//!   and counts each column's elements from the bytes alone, incrementally: it can run on
//!   a zstd output as it is produced, so a batch announcing more than `batch_fixes_max`
//!   elements in any column is refused after at most one output chunk, before anything is
//!   allocated for its columns. [`decode`] then allocates every column at its exact count
//!   and decodes the varints.
//! * Accepts what protobuf allows for the `Batch` message: packed and unpacked repeated
//!   fields in any order and repetition (concatenated in order), unknown fields of wire
//!   types VARINT, I64, LEN and I32 (skipped). Refuses groups (deprecated), invalid wire
//!   types, field number 0, truncated or overlong (> 10 bytes) varints, and a varint of a
//!   32-bit column (`sint32`, `uint32`) whose value does not fit in 32 bits (protobuf
//!   would truncate it silently; hexflow refuses it, `docs/PROTOCOL.md` §4).
//! * Pure: no IO, no clock; never panics on any input.

use super::Batch;

/// Columns of the `Batch` message, by field number − 1.
const COLUMNS: usize = 7;
/// Names of the columns (for reasons).
pub(super) const NAMES: [&str; COLUMNS] = [
    "time_ms",
    "lat_e7",
    "lon_e7",
    "accuracy_cm",
    "altitude_cm",
    "speed_cmps",
    "heading_cdeg",
];

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PayloadError {
    /// A column holds more elements than allowed (→ TOO_MANY_FIXES).
    TooManyElements {
        /// Its name.
        column: &'static str,
        /// The limit.
        max: u32,
    },
    /// Not a valid `Batch` (→ MALFORMED_FRAME).
    Malformed(String),
}

fn malformed(reason: impl Into<String>) -> PayloadError {
    PayloadError::Malformed(reason.into())
}

/// Outcome of reading one varint at the start of a buffer.
enum Varint {
    /// The value and the bytes it took.
    Done(u64, usize),
    /// The buffer ends inside the varint.
    Incomplete,
    /// More than 10 bytes, or a 10th byte over 1: no u64.
    Overlong,
}

fn varint(buf: &[u8]) -> Varint {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Varint::Overlong;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Varint::Done(value, i + 1);
        }
    }
    if buf.len() >= 10 {
        Varint::Overlong
    } else {
        Varint::Incomplete
    }
}

/// A region of known length being walked: a packed column (counted) or an unknown LEN
/// field (skipped).
#[derive(Debug, Clone, Copy)]
struct Region {
    column: Option<usize>,
    end: usize,
}

/// Pass 1: counts each column's elements as the payload's bytes become available.
#[derive(Debug, Default)]
pub(super) struct Counter {
    /// Next unparsed byte.
    pos: usize,
    region: Option<Region>,
    counts: [u64; COLUMNS],
}

/// What a tag at the parse position says to do next.
enum Step {
    /// Consumed this many bytes (tag and what follows it).
    Advance(usize),
    /// Entered a region after this many bytes (tag and length).
    Enter(usize, Region),
    /// More bytes needed.
    Wait,
}

impl Counter {
    /// Elements counted per column (valid once [`Counter::scan`] returned `Ok` with
    /// `complete`).
    pub(super) fn counts(&self) -> [u64; COLUMNS] {
        self.counts
    }

    /// Scans `bytes[..]` from where the last call stopped. `complete` says no byte will
    /// follow. Refuses as soon as any column counts more than `max` elements.
    pub(super) fn scan(
        &mut self,
        bytes: &[u8],
        complete: bool,
        max: u32,
    ) -> Result<(), PayloadError> {
        loop {
            if let Some(region) = self.region {
                let stop = region.end.min(bytes.len());
                if let Some(c) = region.column {
                    let ends = bytes[self.pos..stop].iter().filter(|&&b| b < 0x80).count();
                    self.counts[c] += ends as u64;
                    if self.counts[c] > u64::from(max) {
                        return Err(PayloadError::TooManyElements {
                            column: NAMES[c],
                            max,
                        });
                    }
                }
                self.pos = stop;
                if stop < region.end {
                    return match complete {
                        true => Err(malformed("a length-delimited field runs past the payload")),
                        false => Ok(()),
                    };
                }
                self.region = None;
            }
            if self.pos == bytes.len() {
                return Ok(());
            }
            match self.field(&bytes[self.pos..], max)? {
                Step::Advance(n) => self.pos += n,
                Step::Enter(n, mut region) => {
                    self.pos += n;
                    region.end = region.end.saturating_add(self.pos);
                    self.region = Some(region);
                }
                Step::Wait if complete => return Err(malformed("payload ends inside a field")),
                Step::Wait => return Ok(()),
            }
        }
    }

    /// One field at the start of `buf` (a region's `end` is relative to its start).
    fn field(&mut self, buf: &[u8], max: u32) -> Result<Step, PayloadError> {
        let (tag, t) = match varint(buf) {
            Varint::Done(v, n) => (v, n),
            Varint::Incomplete => return Ok(Step::Wait),
            Varint::Overlong => return Err(malformed("overlong tag varint")),
        };
        let (field, wire_type) = check_tag(tag)?;
        let rest = &buf[t..];
        let column = (1..=COLUMNS as u64)
            .contains(&field)
            .then(|| field as usize - 1);
        match (wire_type, column) {
            (0, _) => match varint(rest) {
                Varint::Done(_, n) => {
                    if let Some(c) = column {
                        self.counts[c] += 1;
                        if self.counts[c] > u64::from(max) {
                            return Err(PayloadError::TooManyElements {
                                column: NAMES[c],
                                max,
                            });
                        }
                    }
                    Ok(Step::Advance(t + n))
                }
                Varint::Incomplete => Ok(Step::Wait),
                Varint::Overlong => Err(malformed(format!("field {field}: overlong varint"))),
            },
            (2, _) => match varint(rest) {
                Varint::Done(len, n) => {
                    let end = usize::try_from(len).unwrap_or(usize::MAX);
                    Ok(Step::Enter(t + n, Region { column, end }))
                }
                Varint::Incomplete => Ok(Step::Wait),
                Varint::Overlong => Err(malformed(format!("field {field}: overlong length"))),
            },
            (1, None) if rest.len() >= 8 => Ok(Step::Advance(t + 8)),
            (5, None) if rest.len() >= 4 => Ok(Step::Advance(t + 4)),
            (1 | 5, None) => Ok(Step::Wait),
            (_, Some(c)) => Err(malformed(format!(
                "{} has wire type {wire_type}, expected 0 or 2",
                NAMES[c]
            ))),
            (3 | 4, None) => Err(malformed(format!("field {field}: groups are not accepted"))),
            (_, None) => Err(malformed(format!(
                "field {field}: invalid wire type {wire_type}"
            ))),
        }
    }
}

/// Splits a tag into field number and wire type; refuses field 0 and tags over 32 bits.
fn check_tag(tag: u64) -> Result<(u64, u8), PayloadError> {
    if tag > u64::from(u32::MAX) || tag >> 3 == 0 {
        return Err(malformed(format!("invalid tag {tag}")));
    }
    Ok((tag >> 3, (tag & 7) as u8))
}

/// The `Batch` being filled by [`decode`], each column allocated at its counted length.
struct Columns(Batch);

/// An empty column with room for the `counts[c]` elements counted in pass 1.
fn counted<T>(counts: &[u64; COLUMNS], c: usize) -> Vec<T> {
    Vec::with_capacity(usize::try_from(counts[c]).unwrap_or(0))
}

impl Columns {
    fn with_counts(counts: &[u64; COLUMNS]) -> Self {
        Self(Batch {
            time_ms: counted(counts, 0),
            lat_e7: counted(counts, 1),
            lon_e7: counted(counts, 2),
            accuracy_cm: counted(counts, 3),
            altitude_cm: counted(counts, 4),
            speed_cmps: counted(counts, 5),
            heading_cdeg: counted(counts, 6),
        })
    }

    /// Appends one raw varint value to column `c`, checking its width: `sint64` (zigzag
    /// over 64 bits) for `time_ms`, `sint32` (zigzag over 32 bits) for the coordinates and
    /// the altitude, `uint32` for the rest; a 32-bit column's varint must fit in 32 bits.
    fn push(&mut self, c: usize, raw: u64) -> Result<(), PayloadError> {
        let narrow = || {
            u32::try_from(raw).map_err(|_| {
                malformed(format!("{} varint {raw} does not fit in 32 bits", NAMES[c]))
            })
        };
        let zigzag32 = |v: u32| (v >> 1) as i32 ^ -((v & 1) as i32);
        let b = &mut self.0;
        match c {
            0 => b.time_ms.push((raw >> 1) as i64 ^ -((raw & 1) as i64)),
            1 => b.lat_e7.push(zigzag32(narrow()?)),
            2 => b.lon_e7.push(zigzag32(narrow()?)),
            3 => b.accuracy_cm.push(narrow()?),
            4 => b.altitude_cm.push(zigzag32(narrow()?)),
            5 => b.speed_cmps.push(narrow()?),
            _ => b.heading_cdeg.push(narrow()?),
        }
        Ok(())
    }
}

/// Pass 2: decodes a whole payload that [`Counter::scan`] accepted with `complete`, every
/// column allocated at its counted length.
pub(super) fn decode(bytes: &[u8], counts: &[u64; COLUMNS]) -> Result<Batch, PayloadError> {
    let mut cols = Columns::with_counts(counts);
    let mut pos = 0;
    while pos < bytes.len() {
        let Varint::Done(tag, t) = varint(&bytes[pos..]) else {
            return Err(malformed("bad tag varint"));
        };
        let (field, wire_type) = check_tag(tag)?;
        pos += t;
        let column = (1..=COLUMNS as u64)
            .contains(&field)
            .then(|| field as usize - 1);
        let take = |pos: usize| match varint(&bytes[pos..]) {
            Varint::Done(v, n) => Ok((v, n)),
            _ => Err(malformed(format!(
                "field {field}: truncated or overlong varint"
            ))),
        };
        match (wire_type, column) {
            (0, Some(c)) => {
                let (v, n) = take(pos)?;
                cols.push(c, v)?;
                pos += n;
            }
            (0, None) => pos += take(pos)?.1,
            (2, _) => {
                let (len, n) = take(pos)?;
                pos += n;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(|| {
                        malformed(format!("field {field}: length {len} past the end"))
                    })?;
                if let Some(c) = column {
                    while pos < end {
                        let Varint::Done(v, n) = varint(&bytes[pos..end]) else {
                            return Err(malformed(format!(
                                "{}: truncated or overlong varint in a packed field",
                                NAMES[c]
                            )));
                        };
                        cols.push(c, v)?;
                        pos += n;
                    }
                }
                pos = end;
            }
            (1, None) => pos += 8,
            (5, None) => pos += 4,
            _ => return Err(malformed(format!("field {field}: wire type {wire_type}"))),
        }
        if pos > bytes.len() {
            return Err(malformed("payload ends inside a field"));
        }
    }
    Ok(cols.0)
}

/// Both passes over a complete payload.
pub(super) fn count_and_decode(bytes: &[u8], max: u32) -> Result<Batch, PayloadError> {
    let mut counter = Counter::default();
    counter.scan(bytes, true, max)?;
    decode(bytes, &counter.counts())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prost::Message;

    fn sample() -> Batch {
        Batch {
            time_ms: vec![1_700_000_000_000, 1_000, -5, i64::MIN, i64::MAX],
            lat_e7: vec![1, -1, i32::MIN, i32::MAX, 0],
            lon_e7: vec![5, 6, 7, 8, 9],
            accuracy_cm: vec![0, u32::MAX, 3, 4, 5],
            altitude_cm: vec![],
            speed_cmps: vec![1, 2, 3, 4, 5],
            heading_cdeg: vec![35_999, 0, 1, 2, u32::MAX],
        }
    }

    #[test]
    fn decodes_what_prost_encodes_packed_or_split_anywhere() {
        let b = sample();
        let bytes = b.encode_to_vec();
        assert_eq!(count_and_decode(&bytes, 10).unwrap(), b);
        // Incremental counting over any split gives the same counts.
        for cut in 0..bytes.len() {
            let mut c = Counter::default();
            c.scan(&bytes[..cut], false, 10).unwrap();
            c.scan(&bytes, true, 10).unwrap();
            assert_eq!(c.counts(), [5, 5, 5, 5, 0, 5, 5], "cut at {cut}");
        }
    }

    #[test]
    fn unpacked_repeated_and_unknown_fields_are_accepted() {
        // field 1 unpacked twice (zigzag 3 = -2, 4 = 2), unknown fields 9 (varint), 10 (I64),
        // 11 (LEN), 12 (I32), then field 2 packed.
        let mut bytes = vec![0x08, 3, 0x08, 4, 0x48, 0x7f, 0x51];
        bytes.extend([0; 8]);
        bytes.extend([0x5a, 2, 0xff, 0xff, 0x65, 1, 2, 3, 4, 0x12, 2, 2, 4]);
        let b = count_and_decode(&bytes, 10).unwrap();
        assert_eq!(b.time_ms, [-2, 2]);
        assert_eq!(b.lat_e7, [1, 2]);
        assert_eq!(b, Batch::decode(bytes.as_slice()).unwrap(), "same as prost");
    }

    #[test]
    fn a_column_over_the_limit_is_refused_before_the_payload_ends() {
        // A packed time_ms column announcing 4 MiB of zero varints: refused after max + 1.
        let mut bytes = vec![0x0a, 0x80, 0x80, 0x80, 0x02];
        bytes.extend([0u8; 10_001]);
        let mut c = Counter::default();
        assert_eq!(
            c.scan(&bytes, false, 10_000),
            Err(PayloadError::TooManyElements {
                column: "time_ms",
                max: 10_000
            })
        );
        // At the edge: exactly max elements pass.
        let mut c = Counter::default();
        c.scan(&bytes[..5 + 10_000], false, 10_000).unwrap();
        // Any column counts, unpacked ones too.
        let unpacked: Vec<u8> = (0..3).flat_map(|_| [0x38, 1]).collect();
        assert!(matches!(
            count_and_decode(&unpacked, 2),
            Err(PayloadError::TooManyElements {
                column: "heading_cdeg",
                ..
            })
        ));
    }

    #[test]
    fn a_32_bit_column_refuses_a_wider_varint() {
        // lat_e7 (sint32) holding 2^32 + 10 as a 5-byte varint: protobuf would truncate it.
        let mut bytes = vec![0x10];
        let mut v: u64 = (1 << 32) + 10;
        while v >= 0x80 {
            bytes.push((v as u8) | 0x80);
            v >>= 7;
        }
        bytes.push(v as u8);
        let err = count_and_decode(&bytes, 10).unwrap_err();
        assert_eq!(
            err,
            PayloadError::Malformed("lat_e7 varint 4294967306 does not fit in 32 bits".into())
        );
        // u32::MAX fits.
        let ok = [0x20, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(count_and_decode(&ok, 10).unwrap().accuracy_cm, [u32::MAX]);
    }

    #[test]
    fn structural_errors_are_malformed() {
        for bad in [
            &[0x0a, 5, 1, 2][..], // packed length past the end
            &[0x08][..],          // tag without value
            &[0x00, 1][..],       // field 0
            &[0x0b][..],          // group start in a column
            &[0x4b, 0x4c][..],    // unknown group
            &[0x0e][..],          // wire type 6
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ][..], // overlong
            &[0x0a, 2, 0x80, 0x80][..], // packed varint cut at the region end
        ] {
            assert!(
                matches!(count_and_decode(bad, 10), Err(PayloadError::Malformed(_))),
                "{bad:02x?}"
            );
        }
    }
}
