//! Synthetic device trajectories: plausible urban movement generated on the fly.
//!
//! Each simulated device is one [`SimDevice`] of at most 64 bytes (id, position, heading,
//! speed, time of its last fix, next batch sequence number). Fixes are generated when a
//! batch is needed and never stored, so a run can cycle through millions of devices
//! without keeping any history.
//!
//! # Contract
//! * Pure: no clock reads, no IO. `now_ms` is an argument and the randomness comes from the
//!   caller's generator; the initial state of a device depends only on `(seed, device id)`.
//! * Every fix has a valid latitude/longitude and lies within
//!   [`TrajectoryParams::city_radius_m`] of the device's city centre.
//! * Stationary devices report a fixed point plus a few metres of GPS jitter (never more
//!   than [`STATIONARY_JITTER_MAX_M`] from it).
//! * Moving devices walk, cycle or drive with smooth heading changes; their speed never
//!   exceeds the maximum of their motion kind ([`Motion::speed_max_mps`]).
//! * Fix times strictly increase per device, never lie after `now_ms` and never lie more
//!   than [`TrajectoryParams::backlog_max_ms`] before it (a device that was idle for longer
//!   resumes after a gap, like a phone that was switched off).
//! * Batch sequence numbers strictly increase per device, across sessions.

use std::f64::consts::PI;

use ingest::wire::{Fix, Fixes};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Mean Earth radius in metres (the radius h3o and most GIS tools use).
const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// Largest distance of a stationary device's fix from its fixed point.
pub const STATIONARY_JITTER_MAX_M: f64 = 20.0;
/// Largest position noise added to a moving device's fix.
const MOVING_NOISE_MAX_M: f64 = 3.0;
/// Fraction of the city radius beyond which moving devices steer back towards the centre.
const STEER_HOME_FRACTION: f64 = 0.8;
/// Probability that a fix carries no altitude (many phones report none indoors).
const ALTITUDE_ABSENT_P: f64 = 0.15;

/// A city a device lives in: centre and ground altitude.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct City {
    /// Human-readable name (for docs and tests).
    pub name: &'static str,
    /// Centre latitude in degrees.
    pub lat_deg: f64,
    /// Centre longitude in degrees.
    pub lon_deg: f64,
    /// Typical ground altitude in metres above sea level.
    pub altitude_m: f64,
}

/// The cities devices are spread over (inland or mostly inland, so few fixes land in water).
pub const CITIES: [City; 10] = [
    City {
        name: "Berlin",
        lat_deg: 52.5200,
        lon_deg: 13.4050,
        altitude_m: 34.0,
    },
    City {
        name: "Paris",
        lat_deg: 48.8566,
        lon_deg: 2.3522,
        altitude_m: 35.0,
    },
    City {
        name: "Madrid",
        lat_deg: 40.4168,
        lon_deg: -3.7038,
        altitude_m: 657.0,
    },
    City {
        name: "London",
        lat_deg: 51.5072,
        lon_deg: -0.1276,
        altitude_m: 11.0,
    },
    City {
        name: "Rome",
        lat_deg: 41.9028,
        lon_deg: 12.4964,
        altitude_m: 21.0,
    },
    City {
        name: "Warsaw",
        lat_deg: 52.2297,
        lon_deg: 21.0122,
        altitude_m: 100.0,
    },
    City {
        name: "Vienna",
        lat_deg: 48.2082,
        lon_deg: 16.3738,
        altitude_m: 190.0,
    },
    City {
        name: "Munich",
        lat_deg: 48.1351,
        lon_deg: 11.5820,
        altitude_m: 519.0,
    },
    City {
        name: "Prague",
        lat_deg: 50.0755,
        lon_deg: 14.4378,
        altitude_m: 235.0,
    },
    City {
        name: "Milan",
        lat_deg: 45.4642,
        lon_deg: 9.1900,
        altitude_m: 120.0,
    },
];

/// How a device moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Motion {
    /// Parked or indoors: a fixed point plus GPS jitter.
    Stationary,
    /// Pedestrian.
    Walk,
    /// Bicycle or scooter.
    Cycle,
    /// Car, bus or van in city traffic.
    Drive,
}

impl Motion {
    /// The speed a device of this kind tends towards, in m/s.
    pub fn cruise_speed_mps(self) -> f64 {
        match self {
            Motion::Stationary => 0.0,
            Motion::Walk => 1.4,
            Motion::Cycle => 4.5,
            Motion::Drive => 10.0,
        }
    }

    /// The largest speed a device of this kind ever reaches, in m/s.
    pub fn speed_max_mps(self) -> f64 {
        match self {
            Motion::Stationary => 0.0,
            Motion::Walk => 2.5,
            Motion::Cycle => 9.0,
            Motion::Drive => 22.0,
        }
    }

    /// The largest heading change per second, in degrees (a sharp street corner).
    fn turn_rate_max_deg_per_s(self) -> f64 {
        match self {
            Motion::Stationary => 0.0,
            Motion::Walk => 60.0,
            Motion::Cycle => 40.0,
            Motion::Drive => 30.0,
        }
    }

    /// Speed noise per sqrt(second), m/s.
    fn speed_noise_mps(self) -> f64 {
        match self {
            Motion::Stationary => 0.0,
            Motion::Walk => 0.15,
            Motion::Cycle => 0.5,
            Motion::Drive => 1.5,
        }
    }
}

/// Knobs of the generator, validated by the CLI before a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryParams {
    /// Fixes per batch.
    pub batch_fixes: usize,
    /// Simulated time between two fixes of one device, in ms (the device's report
    /// interval). Shrinks, down to 1 ms, when a device would otherwise report into the future.
    pub report_interval_ms: u32,
    /// Fraction of devices that do not move, in `0.0..=1.0`.
    pub stationary_ratio: f64,
    /// Oldest allowed fix time relative to `now_ms`, in ms. Must stay below the server's
    /// accepted fix age.
    pub backlog_max_ms: i64,
    /// Devices start and stay within this distance of their city centre, in metres.
    pub city_radius_m: f64,
}

impl Default for TrajectoryParams {
    fn default() -> Self {
        Self {
            batch_fixes: 50,
            report_interval_ms: 1000,
            stationary_ratio: 0.3,
            backlog_max_ms: 10 * 60 * 1000,
            city_radius_m: 15_000.0,
        }
    }
}

/// The device cannot produce a batch yet without reporting a fix time after `now_ms`
/// (it already reported up to the present). Happens only when one device sends more than
/// one fix per millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device is ahead of the clock; retry in {wait_ms} ms")]
pub struct AheadOfClock {
    /// How long to wait before the batch fits, in ms.
    pub wait_ms: i64,
}

/// Sentinel for "no fix reported yet".
const NO_FIX_YET: i64 = i64::MIN;

/// One simulated device: all the state the generator keeps per device (at most 64 bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    id: u64,
    /// Current true position (the fixed point for stationary devices), degrees.
    lat_deg: f64,
    lon_deg: f64,
    /// Time of the last fix reported, unix ms, or [`NO_FIX_YET`].
    last_fix_ms: i64,
    next_seq: u64,
    /// Degrees clockwise from north, `0.0..360.0`.
    heading_deg: f32,
    speed_mps: f32,
    motion: Motion,
    city: u8,
}

/// SplitMix64 finaliser: decorrelates `(seed, id)` into a per-device generator seed.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal sample (Box-Muller; one of the pair is discarded, which is fine here).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Moves `(lat, lon)` by `north_m` / `east_m` (local flat-earth approximation; the error
/// over a few kilometres is far below GPS noise).
fn offset(lat_deg: f64, lon_deg: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    let lat = lat_deg + (north_m / EARTH_RADIUS_M).to_degrees();
    let lon = lon_deg + (east_m / (EARTH_RADIUS_M * lat_deg.to_radians().cos())).to_degrees();
    (lat, lon)
}

/// `(north_m, east_m)` of `(lat, lon)` relative to the origin (same approximation).
fn local_xy(origin_lat: f64, origin_lon: f64, lat: f64, lon: f64) -> (f64, f64) {
    let north = (lat - origin_lat).to_radians() * EARTH_RADIUS_M;
    let east = (lon - origin_lon).to_radians() * EARTH_RADIUS_M * origin_lat.to_radians().cos();
    (north, east)
}

/// Wraps degrees into `0.0..360.0`.
fn wrap_deg(d: f64) -> f64 {
    let w = d.rem_euclid(360.0);
    if w >= 360.0 { 0.0 } else { w }
}

/// Signed smallest rotation from `from` to `to`, in `-180.0..=180.0` degrees.
fn angle_diff_deg(from: f64, to: f64) -> f64 {
    let d = (to - from).rem_euclid(360.0);
    if d > 180.0 { d - 360.0 } else { d }
}

fn to_e7(deg: f64) -> i32 {
    // Valid coordinates (|deg| <= 180) always fit: 180e7 < i32::MAX.
    (deg * 1e7).round() as i32
}

impl SimDevice {
    /// Creates device `id` at a random point near one of [`CITIES`]. Deterministic in
    /// `(seed, id)`. Batch sequence numbers start at `seq_base` (the runner passes the run's
    /// start time in µs, so a rerun never reuses a sequence number of an earlier run).
    pub fn new(id: u64, seed: u64, seq_base: u64, params: &TrajectoryParams) -> Self {
        let mut rng = SmallRng::seed_from_u64(mix64(seed ^ mix64(id)));
        let city_idx = rng.random_range(0..CITIES.len());
        let city = CITIES[city_idx];
        // Denser towards the centre, like real activity; 0.95 keeps moving devices off the edge.
        let r = params.city_radius_m * 0.95 * rng.random::<f64>().powf(0.75);
        let bearing = rng.random_range(0.0..2.0 * PI);
        let (lat_deg, lon_deg) = offset(
            city.lat_deg,
            city.lon_deg,
            r * bearing.cos(),
            r * bearing.sin(),
        );
        let motion = if rng.random_bool(params.stationary_ratio.clamp(0.0, 1.0)) {
            Motion::Stationary
        } else {
            match rng.random_range(0..100u32) {
                0..40 => Motion::Walk,
                40..65 => Motion::Cycle,
                _ => Motion::Drive,
            }
        };
        let speed = if motion == Motion::Stationary {
            0.0
        } else {
            motion.cruise_speed_mps() * rng.random_range(0.6..1.2)
        };
        Self {
            id,
            lat_deg,
            lon_deg,
            last_fix_ms: NO_FIX_YET,
            next_seq: seq_base,
            heading_deg: rng.random_range(0.0..360.0),
            speed_mps: speed as f32,
            motion,
            // CITIES has 10 entries, so the index fits a u8.
            city: city_idx as u8,
        }
    }

    /// The device id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How this device moves.
    pub fn motion(&self) -> Motion {
        self.motion
    }

    /// The city this device lives in.
    pub fn city(&self) -> City {
        CITIES[usize::from(self.city)]
    }

    /// The sequence number the next batch will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Time of the last fix reported, unix ms, if any.
    pub fn last_fix_ms(&self) -> Option<i64> {
        (self.last_fix_ms != NO_FIX_YET).then_some(self.last_fix_ms)
    }

    /// Generates the next batch into `out` (cleared first) and returns its sequence number.
    ///
    /// Fix times advance by `report_interval_ms`; when that would pass `now_ms` the
    /// interval shrinks so the batch ends at `now_ms` at the latest. A device that has not
    /// reported for more than `backlog_max_ms` resumes at `now_ms - backlog_max_ms`.
    ///
    /// # Errors
    /// [`AheadOfClock`] when fewer than `batch_fixes` milliseconds are left between the
    /// last fix and `now_ms`; the device state is unchanged then.
    pub fn fill_batch(
        &mut self,
        now_ms: i64,
        params: &TrajectoryParams,
        rng: &mut impl Rng,
        out: &mut Fixes,
    ) -> Result<u64, AheadOfClock> {
        out.clear();
        let fixes = i64::try_from(params.batch_fixes).unwrap_or(i64::MAX).max(1);
        let interval_ms = i64::from(params.report_interval_ms.max(1));
        let oldest_ms = now_ms.saturating_sub(params.backlog_max_ms.max(0));
        let mut t = if self.last_fix_ms == NO_FIX_YET {
            // First batch: end about now, start a little in the past, with a random phase.
            let lead = fixes
                .saturating_mul(interval_ms)
                .saturating_add(rng.random_range(0..interval_ms));
            now_ms.saturating_sub(lead).max(oldest_ms)
        } else {
            self.last_fix_ms.max(oldest_ms)
        };
        let room_ms = now_ms.saturating_sub(t);
        if room_ms < fixes {
            return Err(AheadOfClock {
                wait_ms: fixes - room_ms,
            });
        }
        let step_ms = interval_ms.min(room_ms / fixes);
        for _ in 0..fixes {
            t += step_ms;
            // step_ms >= 1 and t ends at most at now_ms, so times strictly increase.
            let fix = self.step(step_ms as f64 / 1000.0, t, params.city_radius_m, rng);
            out.push(&fix);
        }
        self.last_fix_ms = t;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Advances the true state by `dt_s` seconds and returns the fix reported at `time_ms`.
    fn step(&mut self, dt_s: f64, time_ms: i64, radius_m: f64, rng: &mut impl Rng) -> Fix {
        let city = self.city();
        let (lat, lon, accuracy_m, speed_cmps, heading_cdeg) = if self.motion == Motion::Stationary
        {
            let (n, e) = jitter(rng, 3.0, STATIONARY_JITTER_MAX_M);
            let (lat, lon) = offset(self.lat_deg, self.lon_deg, n, e);
            let speed_cmps = rng.random_range(0..25u32);
            (lat, lon, rng.random_range(5.0..30.0_f64), speed_cmps, None)
        } else {
            self.advance(dt_s, city, radius_m, rng);
            let (n, e) = jitter(rng, 1.0, MOVING_NOISE_MAX_M);
            let (lat, lon) = offset(self.lat_deg, self.lon_deg, n, e);
            // Urban canyons: now and then a much worse fix.
            let accuracy_m: f64 = if rng.random_bool(0.05) {
                rng.random_range(15.0..50.0)
            } else {
                rng.random_range(3.0..15.0)
            };
            let speed = f64::from(self.speed_mps);
            // Below walking pace the heading of a phone is noise; report none.
            let heading = (speed >= 0.5)
                .then(|| ((f64::from(self.heading_deg) * 100.0).round() as u32) % 36_000);
            (
                lat,
                lon,
                accuracy_m,
                (speed * 100.0).round() as u32,
                heading,
            )
        };
        let altitude_cm = (!rng.random_bool(ALTITUDE_ABSENT_P)).then(|| {
            ((city.altitude_m + 4.0 * normal(rng).clamp(-3.0, 3.0)) * 100.0).round() as i32
        });
        Fix {
            time_ms,
            lat_e7: to_e7(lat),
            lon_e7: to_e7(lon),
            accuracy_cm: Some((accuracy_m * 100.0).round() as u32),
            altitude_cm,
            speed_cmps: Some(speed_cmps),
            heading_cdeg,
        }
    }

    /// Moves a non-stationary device: smooth heading and speed changes, steering back
    /// towards the city centre near the edge, clamped to the city radius.
    fn advance(&mut self, dt_s: f64, city: City, radius_m: f64, rng: &mut impl Rng) {
        let motion = self.motion;
        let turn_max = motion.turn_rate_max_deg_per_s() * dt_s;
        let (north, east) = local_xy(city.lat_deg, city.lon_deg, self.lat_deg, self.lon_deg);
        let dist = north.hypot(east);
        let mut heading = f64::from(self.heading_deg);
        let turn = if dist > STEER_HOME_FRACTION * radius_m {
            // Bearing from the device to the centre.
            let home = wrap_deg((-east).atan2(-north).to_degrees());
            angle_diff_deg(heading, home)
        } else {
            12.0 * dt_s.sqrt() * normal(rng)
        };
        heading = wrap_deg(heading + turn.clamp(-turn_max, turn_max));

        let old_speed = f64::from(self.speed_mps);
        let pull = (dt_s / 10.0).min(1.0);
        let noise = motion.speed_noise_mps() * dt_s.sqrt().min(3.0) * normal(rng);
        let new_speed = (old_speed + (motion.cruise_speed_mps() - old_speed) * pull + noise)
            .clamp(0.0, motion.speed_max_mps());
        let dist_m = 0.5 * (old_speed + new_speed) * dt_s;
        let h = heading.to_radians();
        let (mut n2, mut e2) = (north + dist_m * h.cos(), east + dist_m * h.sin());
        // Hard edge, inside the radius by the reported noise so every fix stays within it.
        let edge_m = (radius_m - MOVING_NOISE_MAX_M).max(0.0);
        let d2 = n2.hypot(e2);
        if d2 > edge_m {
            // Pull back onto the circle (moves less than dist_m, never more).
            n2 *= edge_m / d2;
            e2 *= edge_m / d2;
        }
        let (lat, lon) = offset(city.lat_deg, city.lon_deg, n2, e2);
        self.lat_deg = lat;
        self.lon_deg = lon;
        self.heading_deg = heading as f32;
        self.speed_mps = new_speed as f32;
    }
}

/// A 2-D offset with a normal distribution of `sigma_m` per axis, clamped to `max_m`.
fn jitter(rng: &mut impl Rng, sigma_m: f64, max_m: f64) -> (f64, f64) {
    let (n, e) = (sigma_m * normal(rng), sigma_m * normal(rng));
    let d = n.hypot(e);
    if d > max_m {
        (n * max_m / d, e * max_m / d)
    } else {
        (n, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::wire::{Limits, validate};

    const NOW_MS: i64 = 1_790_000_000_000;
    const SEQ_BASE: u64 = 1_790_000_000_000_000;

    /// Great-circle distance in metres (haversine), independent of the generator's
    /// flat-earth approximation.
    fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let dp = p2 - p1;
        let dl = (lon2 - lon1).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().asin()
    }

    fn deg(e7: i32) -> f64 {
        f64::from(e7) / 1e7
    }

    fn fix_distance_m(f: &Fixes, i: usize, j: usize) -> f64 {
        haversine_m(
            deg(f.lat_e7[i]),
            deg(f.lon_e7[i]),
            deg(f.lat_e7[j]),
            deg(f.lon_e7[j]),
        )
    }

    /// Runs `batches` batches of device `id`, each generated when the clock has advanced by
    /// exactly one batch of report intervals (a device reporting in real time).
    fn run_device(id: u64, params: &TrajectoryParams, batches: usize) -> (SimDevice, Vec<Fixes>) {
        let mut dev = SimDevice::new(id, 7, SEQ_BASE, params);
        let mut rng = SmallRng::seed_from_u64(id);
        let mut out = Vec::new();
        let batch_ms = params.batch_fixes as i64 * i64::from(params.report_interval_ms);
        for b in 0..batches {
            let mut f = Fixes::default();
            dev.fill_batch(NOW_MS + b as i64 * batch_ms, params, &mut rng, &mut f)
                .unwrap();
            out.push(f);
        }
        (dev, out)
    }

    #[test]
    fn device_state_is_small() {
        assert!(
            std::mem::size_of::<SimDevice>() <= 64,
            "{} bytes",
            std::mem::size_of::<SimDevice>()
        );
    }

    #[test]
    fn positions_stay_within_the_city_radius_and_are_valid() {
        for (interval_ms, radius_m) in [(1000, 15_000.0), (60_000, 15_000.0), (30_000, 1_000.0)] {
            let params = TrajectoryParams {
                report_interval_ms: interval_ms,
                city_radius_m: radius_m,
                stationary_ratio: 0.3,
                ..TrajectoryParams::default()
            };
            for id in 1..=300u64 {
                let (dev, batches) = run_device(id, &params, 20);
                let city = dev.city();
                for (b, f) in batches.iter().enumerate() {
                    let now = NOW_MS + b as i64 * 50 * i64::from(interval_ms);
                    assert_eq!(
                        validate(f, &Limits::default(), now),
                        Ok(()),
                        "device {id} batch {b}"
                    );
                    assert_eq!(f.len(), 50);
                    for i in 0..f.len() {
                        let (lat, lon) = (deg(f.lat_e7[i]), deg(f.lon_e7[i]));
                        assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
                        let d = haversine_m(city.lat_deg, city.lon_deg, lat, lon);
                        // 0.1% for the flat-earth approximation, 5 cm for e7 rounding.
                        assert!(
                            d <= radius_m * 1.001 + 0.05,
                            "device {id} ({:?}) fix {i} of batch {b}: {d:.1} m from {}",
                            dev.motion(),
                            city.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn stationary_devices_stay_within_50_m() {
        let params = TrajectoryParams {
            stationary_ratio: 1.0,
            ..TrajectoryParams::default()
        };
        for id in 1..=200u64 {
            let (dev, batches) = run_device(id, &params, 10);
            assert_eq!(dev.motion(), Motion::Stationary);
            let mut all = Fixes::default();
            for f in &batches {
                for i in 0..f.len() {
                    all.push(&f.get(i));
                }
            }
            for i in 1..all.len() {
                let d = fix_distance_m(&all, 0, i);
                assert!(d <= 50.0, "device {id}: fix {i} is {d:.1} m from the first");
                assert!(
                    all.heading_cdeg
                        .get(i)
                        .is_none_or(|&h| h == ingest::wire::ABSENT_U32)
                );
                assert!(
                    all.speed_cmps[i] < 50,
                    "stationary speed {} cm/s",
                    all.speed_cmps[i]
                );
            }
        }
    }

    #[test]
    fn speeds_and_headings_are_plausible() {
        let params = TrajectoryParams {
            stationary_ratio: 0.0,
            report_interval_ms: 5000,
            ..TrajectoryParams::default()
        };
        let mut mean_by_motion: std::collections::HashMap<u8, (f64, u64)> = Default::default();
        for id in 1..=300u64 {
            let (dev, batches) = run_device(id, &params, 8);
            let motion = dev.motion();
            assert_ne!(motion, Motion::Stationary);
            let max_cmps = (motion.speed_max_mps() * 100.0).round() as u32;
            let mut prev: Option<Fix> = None;
            for f in &batches {
                for i in 0..f.len() {
                    let fix = f.get(i);
                    let speed = fix.speed_cmps.unwrap();
                    assert!(speed <= max_cmps, "{motion:?} reports {speed} cm/s");
                    let e = mean_by_motion.entry(motion as u8).or_default();
                    e.0 += f64::from(speed) / 100.0;
                    e.1 += 1;
                    if let Some(p) = prev {
                        let dt_s = (fix.time_ms - p.time_ms) as f64 / 1000.0;
                        assert!(dt_s > 0.0);
                        let d = haversine_m(
                            deg(p.lat_e7),
                            deg(p.lon_e7),
                            deg(fix.lat_e7),
                            deg(fix.lon_e7),
                        );
                        // Each reported fix carries up to MOVING_NOISE_MAX_M of noise.
                        let implied = (d - 2.0 * MOVING_NOISE_MAX_M).max(0.0) / dt_s;
                        assert!(
                            implied <= motion.speed_max_mps() * 1.01,
                            "{motion:?} device {id} moved {d:.1} m in {dt_s} s"
                        );
                        if let (Some(h0), Some(h1)) = (p.heading_cdeg, fix.heading_cdeg) {
                            let turn =
                                angle_diff_deg(f64::from(h0) / 100.0, f64::from(h1) / 100.0).abs();
                            assert!(
                                turn <= motion.turn_rate_max_deg_per_s() * dt_s + 0.02,
                                "{motion:?} device {id} turned {turn:.1} deg in {dt_s} s"
                            );
                        }
                    }
                    prev = Some(fix);
                }
            }
        }
        for (motion, lo, hi) in [
            (Motion::Walk, 0.8, 2.0),
            (Motion::Cycle, 3.0, 6.5),
            (Motion::Drive, 6.0, 14.0),
        ] {
            let (sum, n) = mean_by_motion[&(motion as u8)];
            let mean = sum / n as f64;
            assert!(
                (lo..=hi).contains(&mean),
                "{motion:?} mean speed {mean:.2} m/s"
            );
        }
    }

    #[test]
    fn times_increase_and_never_pass_now_or_the_backlog() {
        let params = TrajectoryParams::default();
        let mut dev = SimDevice::new(42, 1, SEQ_BASE, &params);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut f = Fixes::default();
        let mut last = i64::MIN;
        // Sent faster than real time: the interval shrinks, times never pass now.
        for k in 0..100 {
            let now = NOW_MS + k * 1000;
            dev.fill_batch(now, &params, &mut rng, &mut f).unwrap();
            for &t in &f.time_ms {
                assert!(t > last, "times strictly increase");
                assert!(t <= now, "fix at {t} is after now {now}");
                assert!(t >= now - params.backlog_max_ms);
                last = t;
            }
        }
        // After a long pause the device resumes within the backlog, after a gap.
        let now = NOW_MS + 24 * 3600 * 1000;
        dev.fill_batch(now, &params, &mut rng, &mut f).unwrap();
        assert!(f.time_ms[0] > now - params.backlog_max_ms);
        assert_eq!(f.time_ms.last().copied(), dev.last_fix_ms());
        assert!(f.time_ms.last().copied().unwrap() <= now);
    }

    #[test]
    fn a_device_ahead_of_the_clock_waits_and_is_unchanged() {
        let params = TrajectoryParams::default();
        let mut dev = SimDevice::new(9, 1, SEQ_BASE, &params);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut f = Fixes::default();
        let mut sent = 0;
        let err = loop {
            match dev.fill_batch(NOW_MS, &params, &mut rng, &mut f) {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "never ran out of room");
        };
        assert!(sent >= 1);
        assert!(err.wait_ms >= 1 && err.wait_ms <= 50, "{err:?}");
        let before = dev.clone();
        assert_eq!(dev.fill_batch(NOW_MS, &params, &mut rng, &mut f), Err(err));
        assert_eq!(dev, before);
        assert!(
            dev.fill_batch(NOW_MS + err.wait_ms, &params, &mut rng, &mut f)
                .is_ok()
        );
    }

    #[test]
    fn seqs_strictly_increase_across_sessions_and_runs() {
        let params = TrajectoryParams::default();
        let mut dev = SimDevice::new(5, 1, SEQ_BASE, &params);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut f = Fixes::default();
        let mut seqs = Vec::new();
        let mut now = NOW_MS;
        // Three sessions of four batches; the device state survives between sessions.
        for _session in 0..3 {
            for _ in 0..4 {
                seqs.push(dev.fill_batch(now, &params, &mut rng, &mut f).unwrap());
                now += 50_000;
            }
            now += 3_600_000;
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(seqs[0], SEQ_BASE);
        assert_eq!(dev.next_seq(), SEQ_BASE + 12);
        // A rerun starts its base at its own start time in µs, beyond anything sent before.
        let rerun_base = SEQ_BASE + 1_000_000;
        let mut again = SimDevice::new(5, 1, rerun_base, &params);
        let s = again.fill_batch(now, &params, &mut rng, &mut f).unwrap();
        assert!(s > *seqs.last().unwrap());
    }

    #[test]
    fn devices_are_deterministic_and_mixed() {
        let params = TrajectoryParams::default();
        assert_eq!(
            SimDevice::new(77, 5, 1, &params),
            SimDevice::new(77, 5, 1, &params)
        );
        assert_ne!(
            SimDevice::new(77, 5, 1, &params),
            SimDevice::new(77, 6, 1, &params)
        );
        let n = 10_000;
        let mut stationary = 0;
        let mut cities = [0u32; CITIES.len()];
        let mut altitude_absent = 0;
        let mut rng = SmallRng::seed_from_u64(1);
        let mut f = Fixes::default();
        for id in 1..=n {
            let mut d = SimDevice::new(id, 5, 1, &params);
            stationary += u32::from(d.motion() == Motion::Stationary);
            cities[usize::from(d.city)] += 1;
            d.fill_batch(NOW_MS, &params, &mut rng, &mut f).unwrap();
            altitude_absent += f
                .altitude_cm
                .iter()
                .filter(|&&a| a == ingest::wire::ABSENT_I32)
                .count()
                + if f.altitude_cm.is_empty() { f.len() } else { 0 };
        }
        let ratio = f64::from(stationary) / n as f64;
        assert!((0.27..=0.33).contains(&ratio), "stationary ratio {ratio}");
        assert!(cities.iter().all(|&c| c > 700), "cities {cities:?}");
        let absent = altitude_absent as f64 / (n as f64 * 50.0);
        assert!((0.10..=0.20).contains(&absent), "altitude absent {absent}");
    }
}
