//! [`Fix`] and [`Fixes`]: one fix, and a batch of fixes in columns.

use crate::{ABSENT_I32, ABSENT_U32};

/// One fix with absolute values; optional fields are `None` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Fix {
    /// Unix time, milliseconds.
    pub time_ms: i64,
    /// Latitude times 1e7, in `[-900_000_000, 900_000_000]`.
    pub lat_e7: i32,
    /// Longitude times 1e7, in `[-1_800_000_000, 1_800_000_000]`.
    pub lon_e7: i32,
    /// Horizontal accuracy radius, centimetres.
    pub accuracy_cm: Option<u32>,
    /// Altitude above the WGS84 ellipsoid, centimetres.
    pub altitude_cm: Option<i32>,
    /// Ground speed, centimetres per second.
    pub speed_cmps: Option<u32>,
    /// Heading in centidegrees, `[0, 36000)`.
    pub heading_cdeg: Option<u32>,
}

impl Fix {
    /// A fix from degrees, rounded to the nearest 1e-7 degree (about 1 cm); optional fields
    /// absent. Out-of-range degrees saturate and are then rejected by [`crate::validate`].
    pub fn from_degrees(time_ms: i64, lat_deg: f64, lon_deg: f64) -> Self {
        // `as` from f64 saturates (NaN becomes 0), which is the documented behaviour.
        Fix {
            time_ms,
            lat_e7: (lat_deg * 1e7).round() as i32,
            lon_e7: (lon_deg * 1e7).round() as i32,
            ..Fix::default()
        }
    }
}

/// A column of [`Fixes`], named as on the wire and in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Column {
    /// `time_ms`
    TimeMs,
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
    /// `h3` (storage's index column beside the fixes)
    H3,
}

impl Column {
    /// The column's name (`lat_e7`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Column::TimeMs => "time_ms",
            Column::LatE7 => "lat_e7",
            Column::LonE7 => "lon_e7",
            Column::AccuracyCm => "accuracy_cm",
            Column::AltitudeCm => "altitude_cm",
            Column::SpeedCmps => "speed_cmps",
            Column::HeadingCdeg => "heading_cdeg",
            Column::H3 => "h3",
        }
    }

    /// True for the columns that may be empty (absent for every fix).
    pub fn is_optional(self) -> bool {
        !matches!(self, Column::TimeMs | Column::LatE7 | Column::LonE7)
    }
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fixes, columnar, absolute values.
///
/// Invariant kept by [`Fixes::push`] and checked by [`crate::validate`]: `lat_e7` and
/// `lon_e7` have one entry per `time_ms` entry; each optional column is empty (absent for
/// every fix) or has one entry per fix, with [`ABSENT_U32`] / [`ABSENT_I32`] for a fix that
/// lacks it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fixes {
    /// Unix time, milliseconds.
    pub time_ms: Vec<i64>,
    /// Latitude times 1e7.
    pub lat_e7: Vec<i32>,
    /// Longitude times 1e7.
    pub lon_e7: Vec<i32>,
    /// Accuracy, cm; empty or one per fix; [`ABSENT_U32`] = absent.
    pub accuracy_cm: Vec<u32>,
    /// Altitude, cm; empty or one per fix; [`ABSENT_I32`] = absent.
    pub altitude_cm: Vec<i32>,
    /// Speed, cm/s; empty or one per fix; [`ABSENT_U32`] = absent.
    pub speed_cmps: Vec<u32>,
    /// Heading, centidegrees; empty or one per fix; [`ABSENT_U32`] = absent.
    pub heading_cdeg: Vec<u32>,
}

fn push_optional<T: Copy>(column: &mut Vec<T>, value: Option<T>, absent: T, len_before: usize) {
    match value {
        Some(v) => {
            // The first present value back-fills the fixes pushed before it.
            if column.is_empty() {
                column.resize(len_before, absent);
            }
            column.push(v);
        }
        None if !column.is_empty() => column.push(absent),
        None => {}
    }
}

fn get_optional<T: Copy + PartialEq>(column: &[T], i: usize, absent: T) -> Option<T> {
    column.get(i).copied().filter(|v| *v != absent)
}

impl Fixes {
    /// Empty fixes with room for `n` fixes in the mandatory columns.
    pub fn with_capacity(n: usize) -> Self {
        Fixes {
            time_ms: Vec::with_capacity(n),
            lat_e7: Vec::with_capacity(n),
            lon_e7: Vec::with_capacity(n),
            ..Fixes::default()
        }
    }

    /// Number of fixes (length of `time_ms`).
    pub fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// True when there is no fix.
    pub fn is_empty(&self) -> bool {
        self.time_ms.is_empty()
    }

    /// Appends a fix. An optional column stays empty while every fix lacks that field.
    /// A present value equal to the sentinel ([`ABSENT_U32`], [`ABSENT_I32`]) is stored as
    /// absent.
    pub fn push(&mut self, fix: &Fix) {
        let n = self.len();
        self.time_ms.push(fix.time_ms);
        self.lat_e7.push(fix.lat_e7);
        self.lon_e7.push(fix.lon_e7);
        push_optional(&mut self.accuracy_cm, fix.accuracy_cm, ABSENT_U32, n);
        push_optional(&mut self.altitude_cm, fix.altitude_cm, ABSENT_I32, n);
        push_optional(&mut self.speed_cmps, fix.speed_cmps, ABSENT_U32, n);
        push_optional(&mut self.heading_cdeg, fix.heading_cdeg, ABSENT_U32, n);
    }

    /// The fix at index `i`.
    ///
    /// # Panics
    /// If `i >= self.len()` or the mandatory columns are shorter than `time_ms`.
    pub fn get(&self, i: usize) -> Fix {
        Fix {
            time_ms: self.time_ms[i],
            lat_e7: self.lat_e7[i],
            lon_e7: self.lon_e7[i],
            accuracy_cm: get_optional(&self.accuracy_cm, i, ABSENT_U32),
            altitude_cm: get_optional(&self.altitude_cm, i, ABSENT_I32),
            speed_cmps: get_optional(&self.speed_cmps, i, ABSENT_U32),
            heading_cdeg: get_optional(&self.heading_cdeg, i, ABSENT_U32),
        }
    }

    /// Removes every fix, keeping the allocations.
    pub fn clear(&mut self) {
        self.time_ms.clear();
        self.lat_e7.clear();
        self.lon_e7.clear();
        self.accuracy_cm.clear();
        self.altitude_cm.clear();
        self.speed_cmps.clear();
        self.heading_cdeg.clear();
    }

    /// The newest fix time, `None` without fixes.
    pub fn newest_ms(&self) -> Option<i64> {
        self.time_ms.iter().copied().max()
    }

    /// Every column but `time_ms` with its length, in wire order.
    pub fn column_lens(&self) -> [(Column, usize); 6] {
        [
            (Column::LatE7, self.lat_e7.len()),
            (Column::LonE7, self.lon_e7.len()),
            (Column::AccuracyCm, self.accuracy_cm.len()),
            (Column::AltitudeCm, self.altitude_cm.len()),
            (Column::SpeedCmps, self.speed_cmps.len()),
            (Column::HeadingCdeg, self.heading_cdeg.len()),
        ]
    }

    /// The first column whose length breaks the invariant, with that length.
    pub fn column_mismatch(&self) -> Option<(Column, usize)> {
        let n = self.len();
        self.column_lens()
            .into_iter()
            .find(|&(c, len)| len != n && !(c.is_optional() && len == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_columns_stay_empty_until_a_value_then_backfill() {
        let mut f = Fixes::default();
        f.push(&Fix::from_degrees(1, 1.0, 2.0));
        assert!(f.accuracy_cm.is_empty());
        f.push(&Fix {
            accuracy_cm: Some(5),
            ..Fix::from_degrees(2, 1.0, 2.0)
        });
        assert_eq!(f.accuracy_cm, vec![ABSENT_U32, 5]);
        f.push(&Fix::from_degrees(3, 1.0, 2.0));
        assert_eq!(f.accuracy_cm, vec![ABSENT_U32, 5, ABSENT_U32]);
        assert_eq!(f.get(1).accuracy_cm, Some(5));
        assert_eq!(f.get(2).accuracy_cm, None);
        assert_eq!(f.newest_ms(), Some(3));
        assert_eq!(f.column_mismatch(), None);
        f.lon_e7.pop();
        assert_eq!(f.column_mismatch(), Some((Column::LonE7, 2)));
        f.clear();
        assert!(f.is_empty() && f.column_mismatch().is_none());
    }
}
