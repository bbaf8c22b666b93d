//! The unit of storage: one accepted batch of one device, in columns.
//!
//! Contract: [`validate_batch`] is pure and total. A batch that passes it can be
//! logged, indexed, partitioned and encoded to Parquet without any further
//! failure that depends on its content, which is what lets the WAL acknowledge a
//! batch before the Parquet file that will hold it exists. This module never
//! does IO and never reads the clock.

use h3o::{CellIndex, Resolution};

/// Marks "absent for this fix" in the optional `u32` columns.
pub const ABSENT_U32: u32 = u32::MAX;
/// Marks "absent for this fix" in the optional `i32` column (`altitude_cm`).
pub const ABSENT_I32: i32 = i32::MIN;

/// Smallest fix time (and arrival time) storage accepts: 1970-01-01T00:00:00Z.
pub const TIME_MS_MIN: i64 = 0;
/// Largest fix time (and arrival time) storage accepts: 9999-12-31T23:59:59.999Z,
/// so that every partition date has four year digits and `ms * 1000` fits in
/// an `i64` of microseconds.
pub const TIME_MS_MAX: i64 = 253_402_300_799_999;

/// Hard ceiling on fixes in one batch, whatever the configuration says. It
/// bounds one WAL record to about 40 MiB and lets row positions fit in `u32`.
pub const BATCH_FIXES_LIMIT: usize = 1 << 20;

/// One accepted batch of one device, columnar.
///
/// All column `Vec`s have the same length `n >= 1`, except the optional
/// columns, which are either empty (absent for every fix) or of length `n`
/// (with [`ABSENT_U32`] / [`ABSENT_I32`] marking a fix where it is absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FixBatch {
    /// Device identity, `1..=i64::MAX` (stored as Parquet `Int64`).
    pub device_id: u64,
    /// Per-device sequence number chosen by the device, `>= 1`; deduplicated.
    pub batch_seq: u64,
    /// Server clock when the batch arrived, Unix ms.
    pub received_at_ms: i64,
    /// Fix time, Unix ms (UTC).
    pub time_ms: Vec<i64>,
    /// Latitude * 1e7, in `[-90e7, 90e7]`.
    pub lat_e7: Vec<i32>,
    /// Longitude * 1e7, in `[-180e7, 180e7]`.
    pub lon_e7: Vec<i32>,
    /// Horizontal accuracy in cm; [`ABSENT_U32`] marks absent. Optional column.
    pub accuracy_cm: Vec<u32>,
    /// Altitude in cm; [`ABSENT_I32`] marks absent. Optional column.
    pub altitude_cm: Vec<i32>,
    /// Speed in cm/s; [`ABSENT_U32`] marks absent. Optional column.
    pub speed_cmps: Vec<u32>,
    /// Heading in centi-degrees `[0, 36000)`; [`ABSENT_U32`] marks absent. Optional column.
    pub heading_cdeg: Vec<u32>,
    /// H3 cell per fix; empty = not indexed yet (storage indexes it).
    pub h3: Vec<u64>,
}

impl FixBatch {
    /// Number of fixes (the length of `time_ms`).
    pub fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// True when the batch holds no fix (never true for a valid batch).
    pub fn is_empty(&self) -> bool {
        self.time_ms.is_empty()
    }
}

/// The column a [`InvalidBatch::ColumnLength`] error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Column {
    /// `lat_e7`
    LatE7,
    /// `lon_e7`
    LonE7,
    /// `accuracy_cm`
    AccuracyCm,
    /// `altitude_cm`
    AltitudeCm,
    /// `speed_cmps`
    SpeedCmps,
    /// `heading_cdeg`
    HeadingCdeg,
    /// `h3`
    H3,
}

/// Why a batch was refused before it reached the WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBatch {
    /// The batch has no fix.
    #[error("batch has no fix")]
    Empty,
    /// More fixes than `batch_fixes_max`.
    #[error("batch has {fixes} fixes, more than the maximum {fixes_max}")]
    TooManyFixes {
        /// Fixes in the batch.
        fixes: usize,
        /// Configured maximum.
        fixes_max: usize,
    },
    /// A column's length differs from `time_ms`'s (optional columns may also be empty).
    #[error("column {column:?} has {len} values, expected {expected}")]
    ColumnLength {
        /// The offending column.
        column: Column,
        /// Its length.
        len: usize,
        /// The length of `time_ms`.
        expected: usize,
    },
    /// `device_id` outside `1..=i64::MAX`.
    #[error("device_id {device_id} outside 1..=i64::MAX")]
    DeviceId {
        /// The offending id.
        device_id: u64,
    },
    /// `batch_seq` outside `1..=i64::MAX`.
    #[error("batch_seq {batch_seq} outside 1..=i64::MAX")]
    BatchSeq {
        /// The offending sequence number.
        batch_seq: u64,
    },
    /// `received_at_ms` outside the supported time range.
    #[error("received_at_ms {received_at_ms} outside [{TIME_MS_MIN}, {TIME_MS_MAX}]")]
    ReceivedAt {
        /// The offending time.
        received_at_ms: i64,
    },
    /// A fix time outside the supported time range.
    #[error("fix {index}: time_ms {time_ms} outside [{TIME_MS_MIN}, {TIME_MS_MAX}]")]
    Time {
        /// Position of the fix in the batch.
        index: usize,
        /// The offending time.
        time_ms: i64,
    },
    /// A latitude outside `[-90, 90]` degrees.
    #[error("fix {index}: lat_e7 {lat_e7} outside [-900000000, 900000000]")]
    Latitude {
        /// Position of the fix in the batch.
        index: usize,
        /// The offending value.
        lat_e7: i32,
    },
    /// A longitude outside `[-180, 180]` degrees.
    #[error("fix {index}: lon_e7 {lon_e7} outside [-1800000000, 1800000000]")]
    Longitude {
        /// Position of the fix in the batch.
        index: usize,
        /// The offending value.
        lon_e7: i32,
    },
    /// A heading outside `[0, 36000)` centi-degrees that is not the absent marker.
    #[error("fix {index}: heading_cdeg {heading_cdeg} outside [0, 36000)")]
    Heading {
        /// Position of the fix in the batch.
        index: usize,
        /// The offending value.
        heading_cdeg: u32,
    },
    /// A supplied H3 value that is not a valid cell.
    #[error("fix {index}: {cell:#x} is not a valid H3 cell")]
    H3Cell {
        /// Position of the fix in the batch.
        index: usize,
        /// The offending value.
        cell: u64,
    },
    /// A supplied H3 cell at another resolution than the configured one.
    #[error("fix {index}: H3 cell at resolution {resolution}, expected {expected}")]
    H3Resolution {
        /// Position of the fix in the batch.
        index: usize,
        /// Resolution of the supplied cell.
        resolution: u8,
        /// Configured resolution.
        expected: u8,
    },
}

/// Checks every documented invariant of a [`FixBatch`]. Pure.
///
/// # Errors
/// The first violated invariant, as an [`InvalidBatch`].
pub fn validate_batch(
    batch: &FixBatch,
    fixes_max: usize,
    resolution: Resolution,
) -> Result<(), InvalidBatch> {
    let n = batch.time_ms.len();
    if n == 0 {
        return Err(InvalidBatch::Empty);
    }
    if n > fixes_max {
        return Err(InvalidBatch::TooManyFixes {
            fixes: n,
            fixes_max,
        });
    }
    let required = [
        (Column::LatE7, batch.lat_e7.len()),
        (Column::LonE7, batch.lon_e7.len()),
    ];
    for (column, len) in required {
        if len != n {
            return Err(InvalidBatch::ColumnLength {
                column,
                len,
                expected: n,
            });
        }
    }
    let optional = [
        (Column::AccuracyCm, batch.accuracy_cm.len()),
        (Column::AltitudeCm, batch.altitude_cm.len()),
        (Column::SpeedCmps, batch.speed_cmps.len()),
        (Column::HeadingCdeg, batch.heading_cdeg.len()),
        (Column::H3, batch.h3.len()),
    ];
    for (column, len) in optional {
        if len != 0 && len != n {
            return Err(InvalidBatch::ColumnLength {
                column,
                len,
                expected: n,
            });
        }
    }
    if batch.device_id == 0 || batch.device_id > i64::MAX as u64 {
        return Err(InvalidBatch::DeviceId {
            device_id: batch.device_id,
        });
    }
    if batch.batch_seq == 0 || batch.batch_seq > i64::MAX as u64 {
        return Err(InvalidBatch::BatchSeq {
            batch_seq: batch.batch_seq,
        });
    }
    if !(TIME_MS_MIN..=TIME_MS_MAX).contains(&batch.received_at_ms) {
        return Err(InvalidBatch::ReceivedAt {
            received_at_ms: batch.received_at_ms,
        });
    }
    for (index, &time_ms) in batch.time_ms.iter().enumerate() {
        if !(TIME_MS_MIN..=TIME_MS_MAX).contains(&time_ms) {
            return Err(InvalidBatch::Time { index, time_ms });
        }
    }
    for (index, &lat_e7) in batch.lat_e7.iter().enumerate() {
        if !(-900_000_000..=900_000_000).contains(&lat_e7) {
            return Err(InvalidBatch::Latitude { index, lat_e7 });
        }
    }
    for (index, &lon_e7) in batch.lon_e7.iter().enumerate() {
        if !(-1_800_000_000..=1_800_000_000).contains(&lon_e7) {
            return Err(InvalidBatch::Longitude { index, lon_e7 });
        }
    }
    for (index, &heading_cdeg) in batch.heading_cdeg.iter().enumerate() {
        if heading_cdeg != ABSENT_U32 && heading_cdeg >= 36_000 {
            return Err(InvalidBatch::Heading {
                index,
                heading_cdeg,
            });
        }
    }
    for (index, &cell) in batch.h3.iter().enumerate() {
        let parsed = CellIndex::try_from(cell).map_err(|_| InvalidBatch::H3Cell { index, cell })?;
        if parsed.resolution() != resolution {
            return Err(InvalidBatch::H3Resolution {
                index,
                resolution: u8::from(parsed.resolution()),
                expected: u8::from(resolution),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_fix() -> FixBatch {
        FixBatch {
            device_id: 7,
            batch_seq: 1,
            received_at_ms: 1_700_000_000_000,
            time_ms: vec![1_700_000_000_000],
            lat_e7: vec![485_000_000],
            lon_e7: vec![23_000_000],
            ..FixBatch::default()
        }
    }

    #[test]
    fn accepts_minimal_batch_and_rejects_each_violation() {
        let res = Resolution::Ten;
        assert_eq!(validate_batch(&one_fix(), 1, res), Ok(()));
        let mut b = one_fix();
        b.time_ms.push(1);
        assert_eq!(
            validate_batch(&b, 2, res),
            Err(InvalidBatch::ColumnLength {
                column: Column::LatE7,
                len: 1,
                expected: 2
            })
        );
        assert_eq!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::TooManyFixes {
                fixes: 2,
                fixes_max: 1
            })
        );
        let mut b = one_fix();
        b.device_id = i64::MAX as u64 + 1;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::DeviceId { .. })
        ));
        b.device_id = i64::MAX as u64;
        assert_eq!(validate_batch(&b, 1, res), Ok(()));
        let mut b = one_fix();
        b.batch_seq = 0;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::BatchSeq { batch_seq: 0 })
        ));
        let mut b = one_fix();
        b.time_ms[0] = TIME_MS_MAX + 1;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Time { index: 0, .. })
        ));
        b.time_ms[0] = TIME_MS_MAX;
        assert_eq!(validate_batch(&b, 1, res), Ok(()));
        let mut b = one_fix();
        b.lat_e7[0] = 900_000_001;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Latitude { .. })
        ));
        let mut b = one_fix();
        b.lon_e7[0] = -1_800_000_001;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Longitude { .. })
        ));
        let mut b = one_fix();
        b.heading_cdeg = vec![36_000];
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Heading { .. })
        ));
        b.heading_cdeg = vec![ABSENT_U32];
        assert_eq!(validate_batch(&b, 1, res), Ok(()));
        let mut b = one_fix();
        b.h3 = vec![0];
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::H3Cell { .. })
        ));
        let cell = h3o::LatLng::new(48.5, 2.3)
            .expect("finite")
            .to_cell(Resolution::Nine);
        b.h3 = vec![u64::from(cell)];
        assert_eq!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::H3Resolution {
                index: 0,
                resolution: 9,
                expected: 10
            })
        );
    }
}
