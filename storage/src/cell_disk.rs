//! A fast, exact shortcut for H3-indexing slow movers.
//!
//! Most consecutive fixes of a walking, cycling or parked device stay in the same cell. A
//! [`CellDisk`] is a spherical cap around a cell's centre that lies wholly inside the
//! cell; a point inside the cap is in the cell, so its index is known without asking h3o.
//!
//! # Why the cap is inside the cell
//! An H3 cell is a polygon whose edges are great-circle arcs: h3o assigns a point by its
//! gnomonic projection on an icosahedron face, where the cell is a straight-edged hexagon
//! (or pentagon), and gnomonic straight lines are great circles; a cell crossing a face
//! edge has extra vertices where its edges change face, still joined by great-circle arcs.
//! `CellIndex::boundary` returns those vertices. For a convex spherical polygon that
//! contains its centre `c`, the distance from `c` to the polygon's boundary is at least
//! the smallest angular distance from `c` to the great circles through its edges,
//! `min_i asin(|c · n_i|)` with `n_i` the unit normal of edge `i`. The cap uses that
//! radius minus [`MARGIN_RAD`] (about 6 mm on Earth), which absorbs the floating-point
//! error of both this test and h3o's own projection by orders of magnitude.
//!
//! # Contract
//! * Exact: whenever [`CellDisk::contains`] says yes for a point, h3o maps that point to
//!   [`CellDisk::cell`]. Property tests check it against h3o near cell edges and vertices,
//!   on pentagons and across icosahedron faces.
//! * Conservative: a point near the edge of a cell is always given to h3o.
//! * Pure: no IO, no clock, no allocation.

use h3o::{CellIndex, LatLng};

/// Safety margin subtracted from the computed inradius, in radians (~6.4 mm on Earth).
pub const MARGIN_RAD: f64 = 1e-9;

type Vec3 = [f64; 3];

fn dot(a: &Vec3, b: &Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: &Vec3, b: &Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// The unit vector of a position given in degrees.
pub fn unit_vector_deg(lat_deg: f64, lon_deg: f64) -> Vec3 {
    let (sin_lat, cos_lat) = lat_deg.to_radians().sin_cos();
    let (sin_lon, cos_lon) = lon_deg.to_radians().sin_cos();
    [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat]
}

fn unit_vector(ll: LatLng) -> Vec3 {
    let (sin_lat, cos_lat) = ll.lat_radians().sin_cos();
    let (sin_lon, cos_lon) = ll.lng_radians().sin_cos();
    [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat]
}

/// A spherical cap wholly inside one H3 cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellDisk {
    cell: CellIndex,
    center: Vec3,
    /// Cosine of the cap's angular radius: inside when `dot(p, center) > cos_radius`.
    cos_radius: f64,
}

impl CellDisk {
    /// The cap of `cell`; `None` if the cell is too small for the margin (never at the
    /// resolutions storage allows, but the function is total).
    pub fn new(cell: CellIndex) -> Option<Self> {
        let center = unit_vector(LatLng::from(cell));
        let vertices: Vec<Vec3> = cell.boundary().iter().map(|v| unit_vector(*v)).collect();
        let mut radius = f64::INFINITY;
        for (i, a) in vertices.iter().enumerate() {
            let b = &vertices[(i + 1) % vertices.len()];
            let n = cross(a, b);
            let len = dot(&n, &n).sqrt();
            if len == 0.0 {
                // Repeated vertex: no edge.
                continue;
            }
            let sin_d = (dot(&center, &n) / len).abs().min(1.0);
            radius = radius.min(sin_d.asin());
        }
        let radius = radius - MARGIN_RAD;
        (radius.is_finite() && radius > 0.0).then(|| CellDisk {
            cell,
            center,
            cos_radius: radius.cos(),
        })
    }

    /// The cell this cap is inside of.
    pub fn cell(&self) -> CellIndex {
        self.cell
    }

    /// True when the unit vector `p` lies inside the cap (and so inside the cell).
    pub fn contains(&self, p: &Vec3) -> bool {
        dot(p, &self.center) > self.cos_radius
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h3o::Resolution;
    use proptest::prelude::*;

    fn h3o_cell(lat: f64, lon: f64, res: Resolution) -> CellIndex {
        LatLng::new(lat, lon).expect("finite").to_cell(res)
    }

    /// Every point the cap claims is in the cell h3o computes; returns how many it claimed.
    fn check_around(cell: CellIndex, res: Resolution, steps: usize, spread: f64) -> usize {
        let disk = CellDisk::new(cell).expect("disk");
        let c = LatLng::from(cell);
        let mut claimed = 0;
        // A grid of points over the cell and beyond it (spread in cell radii).
        let edge_deg = res.edge_length_m() / 111_000.0;
        for i in 0..steps {
            for j in 0..steps {
                let dy = (i as f64 / (steps - 1) as f64 - 0.5) * 2.0 * spread * edge_deg;
                let dx = (j as f64 / (steps - 1) as f64 - 0.5) * 2.0 * spread * edge_deg;
                let lat = (c.lat() + dy).clamp(-90.0, 90.0);
                let lon = c.lng() + dx / c.lat().to_radians().cos().max(0.01);
                let lon = ((lon + 540.0) % 360.0) - 180.0;
                if disk.contains(&unit_vector_deg(lat, lon)) {
                    claimed += 1;
                    assert_eq!(
                        h3o_cell(lat, lon, res),
                        cell,
                        "({lat}, {lon}) in the cap of {cell}"
                    );
                }
            }
        }
        claimed
    }

    #[test]
    fn caps_are_exact_on_every_pentagon_and_cover_most_of_the_cell() {
        for res in [Resolution::Seven, Resolution::Ten, Resolution::Twelve] {
            for pentagon in res.pentagons() {
                let claimed = check_around(pentagon, res, 41, 1.5);
                assert!(
                    claimed > 100,
                    "{pentagon}: cap claims only {claimed} points"
                );
            }
        }
    }

    #[test]
    fn caps_are_exact_on_cells_that_cross_icosahedron_faces() {
        let mut crossing = 0;
        for base in CellIndex::base_cells() {
            // Children of every base cell at res 5, keep those on two faces or more.
            for cell in base.children(Resolution::Five).step_by(97) {
                if cell.icosahedron_faces().len() > 1 {
                    crossing += 1;
                    check_around(cell, Resolution::Five, 21, 1.3);
                }
            }
        }
        assert!(crossing > 20, "only {crossing} face-crossing cells sampled");
    }

    #[test]
    fn points_on_and_beside_vertices_and_edges_go_to_h3o() {
        let res = Resolution::Ten;
        let cell = h3o_cell(48.8566, 2.3522, res);
        let disk = CellDisk::new(cell).expect("disk");
        for v in cell.boundary().iter() {
            assert!(
                !disk.contains(&unit_vector_deg(v.lat(), v.lng())),
                "a vertex is inside"
            );
        }
        // The centre is inside.
        let c = LatLng::from(cell);
        assert!(disk.contains(&unit_vector_deg(c.lat(), c.lng())));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn cap_membership_implies_the_h3o_cell(
            lat in -89.9f64..89.9, lon in -180f64..180.0,
            dlat in -1.0f64..1.0, dlon in -1.0f64..1.0,
            res in prop::sample::select(vec![Resolution::Eight, Resolution::Ten, Resolution::Eleven]),
        ) {
            let cell = h3o_cell(lat, lon, res);
            let disk = CellDisk::new(cell).expect("disk");
            // A second point within about one edge length of the first.
            let edge_deg = res.edge_length_m() / 111_000.0;
            let lat2 = (lat + dlat * edge_deg).clamp(-90.0, 90.0);
            let lon2 = lon + dlon * edge_deg / lat.to_radians().cos().max(0.01);
            if disk.contains(&unit_vector_deg(lat2, lon2)) {
                prop_assert_eq!(h3o_cell(lat2, lon2, res), cell);
            }
        }
    }
}
