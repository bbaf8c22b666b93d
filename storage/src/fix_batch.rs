//! The unit of storage: one accepted batch of one device, in columns.
//!
//! Contract: [`validate_batch`] is pure and total. A batch that passes it can be
//! logged, indexed, partitioned and encoded to Parquet without any further
//! failure that depends on its content, which is what lets the WAL acknowledge a
//! batch before the Parquet file that will hold it exists. The fixes themselves
//! are checked by the one validator, [`fix::validate`], over the range storage
//! represents; this module adds what only storage has (sequence, arrival time,
//! the H3 column). It never does IO and never reads the clock.

use fix::{Checks, Column, DeviceId, FixError, Fixes, TIME_MS_MAX, TIME_MS_MIN, TimeBounds};
use h3o::{CellIndex, Resolution};

/// One accepted batch of one device: the fixes as the wire decoded them (the
/// column buffers are moved in, never copied) plus what storage adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixBatch {
    /// Device identity.
    pub device_id: DeviceId,
    /// Per-device sequence number chosen by the device, `1..=i64::MAX`; deduplicated.
    pub batch_seq: u64,
    /// Server clock when the batch arrived, Unix ms.
    pub received_at_ms: i64,
    /// The fixes (see [`Fixes`] for the column invariant).
    pub fixes: Fixes,
    /// H3 cell per fix; empty = not indexed yet (storage indexes it).
    pub h3: Vec<u64>,
}

impl FixBatch {
    /// A batch of `fixes`, not yet indexed.
    pub fn new(device_id: DeviceId, batch_seq: u64, received_at_ms: i64, fixes: Fixes) -> Self {
        FixBatch {
            device_id,
            batch_seq,
            received_at_ms,
            fixes,
            h3: Vec::new(),
        }
    }

    /// Number of fixes.
    pub fn len(&self) -> usize {
        self.fixes.len()
    }

    /// True when the batch holds no fix (never true for a valid batch).
    pub fn is_empty(&self) -> bool {
        self.fixes.is_empty()
    }
}

/// Why a batch was refused before it reached the WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBatch {
    /// The fixes break the schema ([`fix::validate`]).
    #[error(transparent)]
    Fixes(#[from] FixError),
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
    let checks = Checks {
        fixes_max,
        time: TimeBounds::Supported,
    };
    fix::validate(&batch.fixes, &checks)?;
    let n = batch.len();
    if !batch.h3.is_empty() && batch.h3.len() != n {
        return Err(FixError::ColumnLength {
            column: Column::H3,
            len: batch.h3.len(),
            expected: n,
        }
        .into());
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
    use fix::{ABSENT_U32, Fix};

    fn one_fix() -> FixBatch {
        let mut fixes = Fixes::default();
        fixes.push(&Fix {
            time_ms: 1_700_000_000_000,
            lat_e7: 485_000_000,
            lon_e7: 23_000_000,
            ..Fix::default()
        });
        FixBatch::new(device(7), 1, 1_700_000_000_000, fixes)
    }

    fn device(id: u64) -> DeviceId {
        DeviceId::try_from(id).expect("valid id")
    }

    #[test]
    fn accepts_minimal_batch_and_rejects_each_violation() {
        let res = Resolution::Ten;
        assert_eq!(validate_batch(&one_fix(), 1, res), Ok(()));
        let mut b = one_fix();
        b.fixes.time_ms.push(1);
        assert_eq!(
            validate_batch(&b, 2, res),
            Err(InvalidBatch::Fixes(FixError::ColumnLength {
                column: Column::LatE7,
                len: 1,
                expected: 2
            }))
        );
        assert_eq!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Fixes(FixError::TooManyFixes {
                fixes: 2,
                fixes_max: 1
            }))
        );
        // A device id outside 1..=i64::MAX cannot be built, so no batch carries one.
        assert!(DeviceId::try_from(i64::MAX as u64 + 1).is_err());
        let mut b = one_fix();
        b.device_id = device(i64::MAX as u64);
        assert_eq!(validate_batch(&b, 1, res), Ok(()));
        let mut b = one_fix();
        b.batch_seq = 0;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::BatchSeq { batch_seq: 0 })
        ));
        let mut b = one_fix();
        b.fixes.time_ms[0] = TIME_MS_MAX + 1;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Fixes(FixError::TimeOutOfRange {
                index: 0,
                ..
            }))
        ));
        b.fixes.time_ms[0] = TIME_MS_MAX;
        assert_eq!(validate_batch(&b, 1, res), Ok(()));
        let mut b = one_fix();
        b.fixes.lat_e7[0] = 900_000_001;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Fixes(FixError::Latitude { .. }))
        ));
        let mut b = one_fix();
        b.fixes.lon_e7[0] = -1_800_000_001;
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Fixes(FixError::Longitude { .. }))
        ));
        let mut b = one_fix();
        b.fixes.heading_cdeg = vec![36_000];
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Fixes(FixError::Heading { .. }))
        ));
        b.fixes.heading_cdeg = vec![ABSENT_U32];
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
        b.h3 = vec![u64::from(cell); 2];
        assert!(matches!(
            validate_batch(&b, 1, res),
            Err(InvalidBatch::Fixes(FixError::ColumnLength {
                column: Column::H3,
                ..
            }))
        ));
    }
}
