//! The one validator of [`Fixes`].

use crate::{
    ABSENT_U32, Column, Fixes, HEADING_CDEG_END, LAT_E7_MAX, LON_E7_MAX, TIME_MS_MAX, TIME_MS_MIN,
};

/// Which fix times are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBounds {
    /// What a server accepts from a device at `now_ms`: at most `future_skew_ms` ahead and
    /// at most `past_age_max_ms` old (saturating arithmetic).
    Window {
        /// Server time, Unix ms.
        now_ms: i64,
        /// Largest allowed lead over `now_ms`.
        future_skew_ms: i64,
        /// Largest allowed age.
        past_age_max_ms: i64,
    },
    /// What storage can represent: [`TIME_MS_MIN`]`..=`[`TIME_MS_MAX`].
    Supported,
}

/// What [`validate`] checks against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// Most fixes allowed.
    pub fixes_max: usize,
    /// Acceptable fix times.
    pub time: TimeBounds,
}

/// The first rule a batch of fixes breaks. The messages name the fix, the value and the
/// limit; the wire protocol sends them to devices as ack reasons.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FixError {
    /// No fix.
    #[error("batch holds no fix")]
    Empty,
    /// More fixes than allowed.
    #[error("{fixes} fixes exceed batch_fixes_max {fixes_max}")]
    TooManyFixes {
        /// Fixes in the batch.
        fixes: usize,
        /// The limit.
        fixes_max: usize,
    },
    /// A column's length is neither the number of fixes nor (for an optional column) 0.
    #[error("column {column} has {len} entries for {expected} fixes (time_ms has {expected})")]
    ColumnLength {
        /// The column.
        column: Column,
        /// Its length.
        len: usize,
        /// The number of fixes.
        expected: usize,
    },
    /// Latitude outside ±90°.
    #[error("fix {index}: lat_e7 {lat_e7} outside [-{LAT_E7_MAX}, {LAT_E7_MAX}]")]
    Latitude {
        /// The fix.
        index: usize,
        /// Its value.
        lat_e7: i32,
    },
    /// Longitude outside ±180°.
    #[error("fix {index}: lon_e7 {lon_e7} outside [-{LON_E7_MAX}, {LON_E7_MAX}]")]
    Longitude {
        /// The fix.
        index: usize,
        /// Its value.
        lon_e7: i32,
    },
    /// Later than the server accepts.
    #[error(
        "fix {index}: time_ms {time_ms} is after server time {now_ms} + future_skew_ms {future_skew_ms}"
    )]
    TimeInFuture {
        /// The fix.
        index: usize,
        /// Its time.
        time_ms: i64,
        /// Server time.
        now_ms: i64,
        /// The allowed lead.
        future_skew_ms: i64,
    },
    /// Older than the server accepts.
    #[error(
        "fix {index}: time_ms {time_ms} is before server time {now_ms} - past_age_max_ms {past_age_max_ms}"
    )]
    TimeTooOld {
        /// The fix.
        index: usize,
        /// Its time.
        time_ms: i64,
        /// Server time.
        now_ms: i64,
        /// The allowed age.
        past_age_max_ms: i64,
    },
    /// Outside what storage represents (1970 to 9999).
    #[error("fix {index}: time_ms {time_ms} outside [{TIME_MS_MIN}, {TIME_MS_MAX}]")]
    TimeOutOfRange {
        /// The fix.
        index: usize,
        /// Its time.
        time_ms: i64,
    },
    /// A present heading of 360° or more.
    #[error("fix {index}: heading_cdeg {heading_cdeg} outside [0, {HEADING_CDEG_END})")]
    Heading {
        /// The fix.
        index: usize,
        /// Its value.
        heading_cdeg: u32,
    },
}

/// Checks `fixes` against `checks`. Pure and total.
///
/// Rules, in this order (the order `docs/PROTOCOL.md` §4 documents): no fix (with
/// consistent columns) → [`FixError::Empty`]; more than `fixes_max` →
/// [`FixError::TooManyFixes`]; a column length other than n (or 0 for an optional column)
/// → [`FixError::ColumnLength`]; then for each fix in order: latitude, longitude, time,
/// heading.
///
/// # Errors
/// The first broken rule.
pub fn validate(fixes: &Fixes, checks: &Checks) -> Result<(), FixError> {
    let n = fixes.len();
    let mismatch = fixes.column_mismatch();
    if n == 0 && mismatch.is_none() {
        return Err(FixError::Empty);
    }
    if n > checks.fixes_max {
        return Err(FixError::TooManyFixes {
            fixes: n,
            fixes_max: checks.fixes_max,
        });
    }
    if let Some((column, len)) = mismatch {
        return Err(FixError::ColumnLength {
            column,
            len,
            expected: n,
        });
    }
    for index in 0..n {
        check_fix(fixes, index, checks.time)?;
    }
    Ok(())
}

fn check_fix(fixes: &Fixes, index: usize, time: TimeBounds) -> Result<(), FixError> {
    let lat_e7 = fixes.lat_e7[index];
    if !(-LAT_E7_MAX..=LAT_E7_MAX).contains(&lat_e7) {
        return Err(FixError::Latitude { index, lat_e7 });
    }
    let lon_e7 = fixes.lon_e7[index];
    if !(-LON_E7_MAX..=LON_E7_MAX).contains(&lon_e7) {
        return Err(FixError::Longitude { index, lon_e7 });
    }
    check_time(index, fixes.time_ms[index], time)?;
    if let Some(&heading_cdeg) = fixes.heading_cdeg.get(index) {
        if heading_cdeg != ABSENT_U32 && heading_cdeg >= HEADING_CDEG_END {
            return Err(FixError::Heading {
                index,
                heading_cdeg,
            });
        }
    }
    Ok(())
}

fn check_time(index: usize, time_ms: i64, bounds: TimeBounds) -> Result<(), FixError> {
    match bounds {
        TimeBounds::Window {
            now_ms,
            future_skew_ms,
            past_age_max_ms,
        } => {
            if time_ms > now_ms.saturating_add(future_skew_ms) {
                return Err(FixError::TimeInFuture {
                    index,
                    time_ms,
                    now_ms,
                    future_skew_ms,
                });
            }
            if time_ms < now_ms.saturating_sub(past_age_max_ms) {
                return Err(FixError::TimeTooOld {
                    index,
                    time_ms,
                    now_ms,
                    past_age_max_ms,
                });
            }
        }
        TimeBounds::Supported => {
            if !(TIME_MS_MIN..=TIME_MS_MAX).contains(&time_ms) {
                return Err(FixError::TimeOutOfRange { index, time_ms });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fix;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000_000;

    fn window() -> Checks {
        Checks {
            fixes_max: 3,
            time: TimeBounds::Window {
                now_ms: NOW,
                future_skew_ms: 1_000,
                past_age_max_ms: 10_000,
            },
        }
    }

    fn one(fix: Fix) -> Fixes {
        let mut f = Fixes::default();
        f.push(&fix);
        f
    }

    #[test]
    fn each_rule_at_its_edge() {
        let c = window();
        let at = |lat, lon, t| Fix {
            time_ms: t,
            lat_e7: lat,
            lon_e7: lon,
            ..Fix::default()
        };
        assert_eq!(validate(&Fixes::default(), &c), Err(FixError::Empty));
        assert_eq!(
            validate(&one(at(LAT_E7_MAX, -LON_E7_MAX, NOW + 1_000)), &c),
            Ok(())
        );
        assert_eq!(validate(&one(at(0, 0, NOW - 10_000)), &c), Ok(()));
        assert_eq!(
            validate(&one(at(LAT_E7_MAX + 1, 0, NOW)), &c),
            Err(FixError::Latitude {
                index: 0,
                lat_e7: LAT_E7_MAX + 1
            })
        );
        assert!(matches!(
            validate(&one(at(0, -LON_E7_MAX - 1, NOW)), &c),
            Err(FixError::Longitude { .. })
        ));
        assert_eq!(
            validate(&one(at(0, 0, NOW + 1_001)), &c).map_err(|e| e.to_string()),
            Err(format!(
                "fix 0: time_ms {} is after server time {NOW} + future_skew_ms 1000",
                NOW + 1_001
            ))
        );
        assert!(matches!(
            validate(&one(at(0, 0, NOW - 10_001)), &c),
            Err(FixError::TimeTooOld { .. })
        ));
        let mut f = one(Fix {
            heading_cdeg: Some(HEADING_CDEG_END),
            ..at(0, 0, NOW)
        });
        assert_eq!(
            validate(&f, &c).map_err(|e| e.to_string()),
            Err("fix 0: heading_cdeg 36000 outside [0, 36000)".into())
        );
        f.heading_cdeg = vec![ABSENT_U32];
        assert_eq!(validate(&f, &c), Ok(()));
        let mut many = Fixes::default();
        for _ in 0..4 {
            many.push(&at(0, 0, NOW));
        }
        assert_eq!(
            validate(&many, &c).map_err(|e| e.to_string()),
            Err("4 fixes exceed batch_fixes_max 3".into())
        );
        many.time_ms.pop();
        many.lat_e7.pop();
        many.lat_e7.pop();
        assert_eq!(
            validate(&many, &c).map_err(|e| e.to_string()),
            Err("column lat_e7 has 2 entries for 3 fixes (time_ms has 3)".into())
        );
    }

    #[test]
    fn supported_range_is_1970_to_9999() {
        let c = Checks {
            fixes_max: 1,
            time: TimeBounds::Supported,
        };
        for (t, ok) in [
            (TIME_MS_MIN, true),
            (TIME_MS_MAX, true),
            (-1, false),
            (TIME_MS_MAX + 1, false),
        ] {
            let r = validate(&one(Fix::from_degrees(t, 1.0, 1.0)), &c);
            assert_eq!(r.is_ok(), ok, "{t}: {r:?}");
        }
    }

    proptest! {
        #[test]
        fn pushed_in_range_fixes_always_validate(
            fixes in prop::collection::vec(
                (-LAT_E7_MAX..=LAT_E7_MAX, -LON_E7_MAX..=LON_E7_MAX, NOW - 10_000..=NOW + 1_000,
                 prop::option::of(0..HEADING_CDEG_END)),
                1..=3,
            )
        ) {
            let mut f = Fixes::default();
            for (lat_e7, lon_e7, time_ms, heading_cdeg) in fixes {
                f.push(&Fix { time_ms, lat_e7, lon_e7, heading_cdeg, ..Fix::default() });
            }
            prop_assert_eq!(validate(&f, &window()), Ok(()));
        }
    }
}
