//! Deterministic synthetic batches for tests, benches and measurements.
//!
//! # Contract
//!
//! * [`batch`] is a pure function of its arguments: the same call gives the same
//!   [`FixBatch`], so a test can rebuild the batch it submitted to compare what storage
//!   kept. Never used on the ingest path.
//! * Batch `seq` of a device holds `fixes` fixes one second apart starting at
//!   `base_ms + seq * fixes * 1000` (consecutive sequence numbers never overlap in time),
//!   received 60 s after its first fix, always within the value ranges of [`fix`]: the
//!   device's position depends on `device_id % 1000`, one fix in five has no accuracy
//!   ([`crate::ABSENT_U32`]), every fix has a speed of 1.2 m/s.

use std::collections::BTreeMap;

use crate::FixBatch;

/// Batch `seq` of `device_id`: `fixes` fixes from `base_ms + seq * fixes * 1000` (see the
/// module doc).
///
/// # Panics
/// If `device_id` is not a valid [`fix::DeviceId`] (0 or above `i64::MAX`).
pub fn batch(device_id: u64, seq: u64, base_ms: i64, fixes: usize) -> FixBatch {
    let t0_ms = base_ms + (seq as i64 * fixes as i64) * 1_000;
    let place = (device_id % 1_000) as i32;
    let step = (seq % 1_000_000) as i32 * 50;
    let n = fixes as i32;
    FixBatch {
        device_id: fix::DeviceId::try_from(device_id).expect("valid device id"),
        batch_seq: seq,
        received_at_ms: t0_ms + 60_000,
        fixes: fix::Fixes {
            time_ms: (0..fixes as i64).map(|i| t0_ms + i * 1_000).collect(),
            lat_e7: (0..n)
                .map(|i| 485_000_000 + place * 100_000 + step + i * 3)
                .collect(),
            lon_e7: (0..n)
                .map(|i| 23_000_000 - place * 70_000 + i * 2)
                .collect(),
            accuracy_cm: (0..fixes as u32)
                .map(|i| {
                    if i % 5 == 0 {
                        crate::ABSENT_U32
                    } else {
                        300 + i
                    }
                })
                .collect(),
            speed_cmps: vec![120; fixes],
            ..fix::Fixes::default()
        },
        h3: Vec::new(),
    }
}

/// The rows the [`batch`]es `(device_id, seq)` become in the `positions` table, keyed by
/// (device_id, batch_seq, time in µs), each counted once: what exactly-once storage of
/// them holds.
pub fn expected_rows(
    batches: &[(u64, u64)],
    base_ms: i64,
    fixes: usize,
) -> BTreeMap<(i64, i64, i64), usize> {
    let mut rows = BTreeMap::new();
    for &(device_id, seq) in batches {
        for t_ms in batch(device_id, seq, base_ms, fixes).fixes.time_ms {
            rows.insert((device_id as i64, seq as i64, t_ms * 1_000), 1);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_repeatable_and_do_not_overlap() {
        let a = batch(1_234, 7, 1_795_561_200_000, 50);
        assert_eq!(a, batch(1_234, 7, 1_795_561_200_000, 50));
        assert_eq!(a.fixes.time_ms.len(), 50);
        assert_eq!(a.fixes.time_ms[0], 1_795_561_200_000 + 7 * 50_000);
        let next = batch(1_234, 8, 1_795_561_200_000, 50);
        assert!(a.fixes.time_ms[49] < next.fixes.time_ms[0]);
        assert_eq!(a.fixes.accuracy_cm[0], crate::ABSENT_U32);
        assert_eq!(a.fixes.accuracy_cm[1], 301);
        let checks = fix::Checks {
            fixes_max: 50,
            time: fix::TimeBounds::Supported,
        };
        fix::validate(&a.fixes, &checks).expect("within the fix ranges");
        let far = batch(999_999, 999_999, 1_795_561_200_000, 50);
        fix::validate(&far.fixes, &checks).expect("any device and seq stays in range");
        let rows = expected_rows(&[(1_234, 7), (1_234, 8)], 1_795_561_200_000, 50);
        assert_eq!(rows.len(), 100);
        assert_eq!(
            rows.keys().next(),
            Some(&(1_234, 7, (1_795_561_200_000 + 350_000) * 1_000))
        );
    }
}
