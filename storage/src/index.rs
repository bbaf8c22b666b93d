//! Fix -> H3 cell, and H3 cell ranges for region queries.
//!
//! Contract: pure functions, no IO, no clock. [`index_batch`] only writes the
//! `h3` column, and only when it is empty; it never fails on a batch that
//! passed [`crate::validate_batch`] (every `i32 / 1e7` is a finite degree value),
//! and its cells are bit-identical to h3o's for every fix (the shortcuts of
//! [`Indexer`] are exact, see [`crate::cell_disk`]).
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
use crate::cell_disk::{CellDisk, unit_vector_deg};

const RES_SHIFT: u32 = 52;
const RES_MASK: u64 = 0xF << RES_SHIFT;

fn digit_shift(digit: u8) -> u32 {
    // Digit 1 sits at bits 44..42, digit 15 at bits 2..0.
    u32::from(15 - digit) * 3
}

/// Fills `batch.h3` with one cell per fix at `resolution`, bit-identical to h3o's
/// `LatLng::to_cell`. Does nothing when `batch.h3` is already filled.
///
/// Uses an [`Indexer`]: a fix at exactly the previous position reuses its cell, and a fix
/// inside the [`CellDisk`] of the current cell gets that cell without calling h3o.
pub fn index_batch(batch: &mut FixBatch, resolution: Resolution) {
    if !batch.h3.is_empty() {
        return;
    }
    let f = &batch.fixes;
    let mut indexer = Indexer::new(resolution);
    batch.h3 = f
        .lat_e7
        .iter()
        .zip(&f.lon_e7)
        .map(|(&lat_e7, &lon_e7)| indexer.cell(lat_e7, lon_e7))
        .collect();
}

/// Indexes a sequence of positions (one device's fixes in time order), skipping h3o
/// when the answer is provably known: the same position as the previous fix, or a point
/// inside the inscribed cap of the current cell ([`CellDisk`]). The cap is built only once
/// two consecutive h3o answers name the same cell (the device is moving slowly), so fast
/// movers pay nothing for it.
#[derive(Debug, Clone)]
pub struct Indexer {
    resolution: Resolution,
    previous: Option<(i32, i32, u64)>,
    last_h3o: Option<u64>,
    disk: Option<CellDisk>,
    /// Fixes answered by h3o (for benches and tests).
    pub h3o_calls: u64,
}

impl Indexer {
    /// A fresh indexer at `resolution`.
    pub fn new(resolution: Resolution) -> Self {
        Self {
            resolution,
            previous: None,
            last_h3o: None,
            disk: None,
            h3o_calls: 0,
        }
    }

    /// The cell of a position in 1e-7 degrees (valid coordinates: see [`cell_of`]).
    pub fn cell(&mut self, lat_e7: i32, lon_e7: i32) -> u64 {
        if let Some((lat, lon, cell)) = self.previous {
            if lat == lat_e7 && lon == lon_e7 {
                return cell;
            }
        }
        let in_disk = self.disk.as_ref().and_then(|d| {
            let p = unit_vector_deg(f64::from(lat_e7) / 1e7, f64::from(lon_e7) / 1e7);
            d.contains(&p).then(|| u64::from(d.cell()))
        });
        let cell = match in_disk {
            Some(cell) => cell,
            None => self.ask_h3o(lat_e7, lon_e7),
        };
        self.previous = Some((lat_e7, lon_e7, cell));
        cell
    }

    fn ask_h3o(&mut self, lat_e7: i32, lon_e7: i32) -> u64 {
        self.h3o_calls += 1;
        let index = cell_of(lat_e7, lon_e7, self.resolution);
        let cell = u64::from(index);
        let has_disk = self
            .disk
            .as_ref()
            .is_some_and(|d| u64::from(d.cell()) == cell);
        if self.last_h3o == Some(cell) && !has_disk {
            self.disk = CellDisk::new(index);
        }
        self.last_h3o = Some(cell);
        cell
    }
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Random walks (slow and fast, near poles, across the antimeridian): the indexer
        /// with its shortcuts gives exactly h3o's cell for every fix.
        #[test]
        fn indexer_equals_h3o_on_random_walks(
            lat0 in -899_000_000i32..899_000_000,
            lon0 in -1_800_000_000i32..1_800_000_000,
            steps in proptest::collection::vec((-3_000i32..3_000, -3_000i32..3_000), 1..200),
            scale in proptest::sample::select(vec![1i32, 10, 100]),
            res in proptest::sample::select(vec![Resolution::Nine, Resolution::Ten, Resolution::Twelve]),
        ) {
            let mut indexer = Indexer::new(res);
            let (mut lat, mut lon) = (lat0, lon0);
            for (dlat, dlon) in steps {
                lat = (lat + dlat * scale).clamp(-900_000_000, 900_000_000);
                lon = lon.wrapping_add(dlon * scale);
                if !(-1_800_000_000..=1_800_000_000).contains(&lon) {
                    lon = lon.clamp(-1_800_000_000, 1_800_000_000);
                }
                proptest::prop_assert_eq!(indexer.cell(lat, lon), u64::from(cell_of(lat, lon, res)));
            }
        }
    }

    #[test]
    fn slow_movers_skip_h3o() {
        // A walker: 1.4 m per fix (~126 nano-degrees of latitude), 500 fixes.
        let mut indexer = Indexer::new(Resolution::Ten);
        for i in 0..500 {
            let lat = 485_000_000 + i * 126;
            assert_eq!(
                indexer.cell(lat, 23_000_000),
                u64::from(cell_of(lat, 23_000_000, Resolution::Ten))
            );
        }
        assert!(
            indexer.h3o_calls < 100,
            "{} h3o calls for 500 walking fixes",
            indexer.h3o_calls
        );
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
