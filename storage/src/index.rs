//! Fix -> H3 cell, and H3 cell ranges for region queries.
//!
//! Contract: pure functions, no IO, no clock. [`index_batch`] only writes the
//! `h3` column, and only when it is empty; it never fails on a batch that
//! passed [`crate::validate_batch`] (every `i32 / 1e7` is a finite degree value).
//!
//! # Why a region is one id range
//!
//! An H3 cell index is laid out (most significant bit first) as
//!
//! ```text
//! bit 63    62..59  58..56    55..52       51..45      44..0
//! +-----+--------+--------+------------+-----------+----------------------------+
//! |  0  | mode=1 |   0    | resolution | base cell | 15 digits x 3 bits         |
//! +-----+--------+--------+------------+-----------+----------------------------+
//!                                                    digit 1 (bits 44..42) first;
//!                                                    digits below the resolution = 7
//! ```
//!
//! All descendants at resolution `R` of a cell `P` at resolution `r <= R` share
//! the bits of `P` except the resolution field (= `R`) and digits `r+1..=R`,
//! which range over `0..=6`. So, among cells at resolution `R` (every `h3` value
//! in one hexflow data set has the same resolution), the descendants of `P` are
//! exactly the ids in `[min, max]` where `min` has those digits all 0 and `max`
//! has them all 6. [`descendant_range`] computes it; a Parquet reader that
//! filters `h3 BETWEEN min AND max` skips every row group whose min/max
//! statistics do not overlap, and files are sorted by `h3` so they rarely do.

use h3o::{CellIndex, LatLng, Resolution};

use crate::FixBatch;

const RES_SHIFT: u32 = 52;
const RES_MASK: u64 = 0xF << RES_SHIFT;

fn digit_shift(digit: u8) -> u32 {
    // Digit 1 sits at bits 44..42, digit 15 at bits 2..0.
    u32::from(15 - digit) * 3
}

/// Fills `batch.h3` with one cell per fix at `resolution`, using h3o's
/// `LatLng::to_cell`. Does nothing when `batch.h3` is already filled.
///
/// A fix with exactly the same `lat_e7`/`lon_e7` as the previous fix of the
/// batch reuses the previous cell instead of recomputing it (stationary
/// devices report the same position many times in a row).
pub fn index_batch(batch: &mut FixBatch, resolution: Resolution) {
    if !batch.h3.is_empty() {
        return;
    }
    let f = &batch.fixes;
    let n = f.lat_e7.len().min(f.lon_e7.len());
    let mut cells = Vec::with_capacity(n);
    let mut previous: Option<(i32, i32, u64)> = None;
    for (&lat_e7, &lon_e7) in f.lat_e7.iter().zip(&f.lon_e7) {
        let cell = match previous {
            Some((lat, lon, cell)) if lat == lat_e7 && lon == lon_e7 => cell,
            _ => u64::from(cell_of(lat_e7, lon_e7, resolution)),
        };
        previous = Some((lat_e7, lon_e7, cell));
        cells.push(cell);
    }
    batch.h3 = cells;
}

/// The H3 cell containing a position given in 1e-7 degrees.
pub fn cell_of(lat_e7: i32, lon_e7: i32, resolution: Resolution) -> CellIndex {
    let lat = f64::from(lat_e7) / 1e7;
    let lon = f64::from(lon_e7) / 1e7;
    LatLng::new(lat, lon)
        .expect("an i32 divided by 1e7 is always a finite number of degrees")
        .to_cell(resolution)
}

/// The inclusive id range `[min, max]` that holds exactly the descendants of
/// `parent` at `resolution` among cells at `resolution`, or `None` when
/// `resolution` is coarser than the parent's.
///
/// Example: the resolution-3 cell over Paris, `0x831fb4fffffffff`
/// (`590529347178201087`, the `h3_r3` of a fix at 48.8566 N 2.3522 E), has its
/// resolution-10 descendants in `[0x8a1fb4000007fff, 0x8a1fb4db6db7fff]`,
/// decimal `622054475850350591..=622054534752731135` (see the unit test).
pub fn descendant_range(parent: CellIndex, resolution: Resolution) -> Option<(u64, u64)> {
    let r = u8::from(parent.resolution());
    let target = u8::from(resolution);
    if target < r {
        return None;
    }
    let base = (u64::from(parent) & !RES_MASK) | (u64::from(target) << RES_SHIFT);
    let mut min = base;
    let mut max = base;
    for digit in (r + 1)..=target {
        let shift = digit_shift(digit);
        min &= !(0b111 << shift);
        max = (max & !(0b111 << shift)) | (0b110 << shift);
    }
    Some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_h3o_and_reuses_stationary_cells() {
        let mut batch = FixBatch {
            device_id: fix::DeviceId::try_from(1u64).expect("valid device id"),
            batch_seq: 1,
            received_at_ms: 0,
            fixes: fix::Fixes {
                lat_e7: vec![485_000_000, 485_000_000, 485_010_000, -337_000_000],
                lon_e7: vec![23_000_000, 23_000_000, 23_010_000, 1_512_000_000],
                time_ms: vec![0; 4],
                ..fix::Fixes::default()
            },
            h3: Vec::new(),
        };
        index_batch(&mut batch, Resolution::Ten);
        let expected: Vec<u64> = batch
            .fixes
            .lat_e7
            .iter()
            .zip(&batch.fixes.lon_e7)
            .map(|(&la, &lo)| {
                u64::from(
                    LatLng::new(f64::from(la) / 1e7, f64::from(lo) / 1e7)
                        .expect("finite")
                        .to_cell(Resolution::Ten),
                )
            })
            .collect();
        assert_eq!(batch.h3, expected);
        assert_eq!(batch.h3[0], batch.h3[1]);
        // Already indexed: untouched.
        batch.h3 = vec![1, 2, 3, 4];
        index_batch(&mut batch, Resolution::Ten);
        assert_eq!(batch.h3, vec![1, 2, 3, 4]);
    }

    #[test]
    fn descendant_range_holds_exactly_the_children() {
        let parent = cell_of(485_000_000, 23_000_000, Resolution::Three);
        let (min, max) = descendant_range(parent, Resolution::Six).expect("finer");
        let children: Vec<u64> = parent.children(Resolution::Six).map(u64::from).collect();
        assert_eq!(
            children.len() as u64,
            parent.children_count(Resolution::Six)
        );
        assert_eq!(children.iter().min(), Some(&min));
        assert_eq!(children.iter().max(), Some(&max));
        // Cells of a neighbouring parent fall outside the range.
        for neighbour in parent.grid_disk::<Vec<_>>(1) {
            if neighbour == parent {
                continue;
            }
            for child in neighbour.children(Resolution::Six) {
                let id = u64::from(child);
                assert!(id < min || id > max);
            }
        }
        // Same resolution: the cell itself.
        assert_eq!(
            descendant_range(parent, Resolution::Three),
            Some((u64::from(parent), u64::from(parent)))
        );
        assert_eq!(descendant_range(parent, Resolution::Two), None);
        // The documented example.
        let doc = cell_of(488_566_000, 23_522_000, Resolution::Three);
        assert_eq!(u64::from(doc), 0x831fb4fffffffff);
        assert_eq!(u64::from(doc), 590_529_347_178_201_087);
        assert_eq!(
            descendant_range(doc, Resolution::Ten),
            Some((0x8a1fb4000007fff, 0x8a1fb4db6db7fff))
        );
        assert_eq!(0x8a1fb4000007fff_u64, 622_054_475_850_350_591);
        assert_eq!(0x8a1fb4db6db7fff_u64, 622_054_534_752_731_135);
        let fix = cell_of(485_000_000, 23_000_000, Resolution::Ten);
        let (lo, hi) = descendant_range(
            fix.parent(Resolution::Three).expect("coarser"),
            Resolution::Ten,
        )
        .expect("finer");
        assert!((lo..=hi).contains(&u64::from(fix)));
    }
}
