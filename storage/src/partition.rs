//! Partition keys and their hive-style paths (pure).
//!
//! Contract: a fix's partition depends only on its fix time (UTC, not arrival
//! time), its H3 cell and the [`PartitionScheme`]; the path of a key is
//! deterministic and [`PartitionKey::parse`] inverts [`PartitionKey::rel_path`].
//! No IO, no clock.
//!
//! ```text
//! <data>/positions/date=2026-11-25/                       (default scheme)
//! <data>/positions/date=2026-11-25/hour=07/               (hour = true)
//! <data>/positions/date=2026-11-25/hour=07/h3_r3=590...   (hour and h3_r3)
//! ```
//!
//! Keys appear in this order: `date`, then `hour`, then `h3_r3` (the
//! resolution-3 parent of the fix's cell, as a decimal `i64`).

use std::fmt;
use std::path::PathBuf;

use h3o::{CellIndex, Resolution};

/// Which optional keys partition the data (`date` is always a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionScheme {
    /// Add `hour=HH` (UTC hour of the fix).
    pub hour: bool,
    /// Add `h3_r3=<resolution-3 parent cell>`.
    pub h3_r3: bool,
}

pub use lake::time::{Date, date_from_days};

/// `partition_by` in TOML: the scheme as its list of keys, `"date"` first, then optionally
/// `"hour"` and/or `"h3_r3"`, each once (either order; paths always put `hour` first).
/// Serialized in path order.
pub(crate) mod keys {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::PartitionScheme;

    /// Why a `partition_by` list is refused (the rule, stated once).
    const RULE: &str = "partition_by must start with \"date\", then optionally \"hour\" and/or \"h3_r3\", each once";

    pub(crate) fn serialize<S: Serializer>(p: &PartitionScheme, s: S) -> Result<S::Ok, S::Error> {
        let mut keys = vec!["date"];
        if p.hour {
            keys.push("hour");
        }
        if p.h3_r3 {
            keys.push("h3_r3");
        }
        keys.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<PartitionScheme, D::Error> {
        let keys = Vec::<String>::deserialize(d)?;
        parse(&keys).ok_or_else(|| D::Error::custom(format!("{keys:?}: {RULE}")))
    }

    /// The scheme a list names, or `None` when it breaks [`RULE`].
    pub(crate) fn parse(keys: &[String]) -> Option<PartitionScheme> {
        let (first, rest) = keys.split_first()?;
        if first != "date" {
            return None;
        }
        let mut p = PartitionScheme::default();
        for k in rest {
            let slot = match k.as_str() {
                "hour" => &mut p.hour,
                "h3_r3" => &mut p.h3_r3,
                _ => return None,
            };
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        Some(p)
    }
}

impl PartitionScheme {
    /// The table's partition columns under this scheme, in path order.
    pub fn columns(self) -> Vec<lake::PartitionColumn> {
        let col = |name: &str, kind| lake::PartitionColumn {
            name: name.into(),
            kind,
        };
        let mut v = vec![col("date", lake::PartitionKind::Date)];
        if self.hour {
            v.push(col("hour", lake::PartitionKind::Int));
        }
        if self.h3_r3 {
            v.push(col("h3_r3", lake::PartitionKind::Long));
        }
        v
    }
}

/// The partition a fix belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// UTC date of the fix.
    pub date: Date,
    /// UTC hour of the fix, when the scheme has `hour`.
    pub hour: Option<u8>,
    /// Resolution-3 parent of the fix's cell, when the scheme has `h3_r3`.
    pub h3_r3: Option<u64>,
}

use lake::time::MS_PER_DAY;
const MS_PER_HOUR: i64 = 3_600_000;

impl PartitionKey {
    /// The key of a fix at `time_ms` in `h3` under `scheme`.
    ///
    /// `h3` must be a valid cell at resolution >= 3 when `scheme.h3_r3` (the
    /// configuration and [`crate::validate_batch`] ensure it); otherwise the
    /// raw value is used unchanged.
    pub fn for_fix(scheme: PartitionScheme, time_ms: i64, h3: u64) -> PartitionKey {
        let days = time_ms.div_euclid(MS_PER_DAY);
        let hour = scheme.hour.then(|| {
            u8::try_from(time_ms.rem_euclid(MS_PER_DAY) / MS_PER_HOUR)
                .expect("hour of day is below 24")
        });
        let h3_r3 = scheme.h3_r3.then(|| {
            CellIndex::try_from(h3)
                .ok()
                .and_then(|c| c.parent(Resolution::Three))
                .map_or(h3, u64::from)
        });
        PartitionKey {
            date: date_from_days(days),
            hour,
            h3_r3,
        }
    }

    /// The partition values of the table's `add` actions: `date` as `YYYY-MM-DD`,
    /// `hour` and `h3_r3` as decimal integers (the same values the path spells).
    pub fn partition_values(&self) -> lake::log::StringMap {
        let mut m = lake::log::StringMap::new();
        m.insert("date".into(), Some(self.date.to_string()));
        if let Some(h) = self.hour {
            m.insert("hour".into(), Some(h.to_string()));
        }
        if let Some(c) = self.h3_r3 {
            m.insert("h3_r3".into(), Some(c.to_string()));
        }
        m
    }

    /// The directory of this partition relative to `<data>/positions`.
    pub fn rel_path(&self) -> PathBuf {
        let mut path = PathBuf::from(format!("date={}", self.date));
        if let Some(hour) = self.hour {
            path.push(format!("hour={hour:02}"));
        }
        if let Some(cell) = self.h3_r3 {
            path.push(format!("h3_r3={cell}"));
        }
        path
    }

    /// Parses a relative path written by [`PartitionKey::rel_path`].
    pub fn parse(rel: &str) -> Option<PartitionKey> {
        let mut parts = rel.split('/').filter(|p| !p.is_empty());
        let date = Date::parse(parts.next()?.strip_prefix("date=")?)?;
        let mut key = PartitionKey {
            date,
            hour: None,
            h3_r3: None,
        };
        for part in parts {
            if let Some(h) = part.strip_prefix("hour=") {
                if key.hour.is_some() || key.h3_r3.is_some() || h.len() != 2 {
                    return None;
                }
                key.hour = Some(h.parse().ok().filter(|&h: &u8| h < 24)?);
            } else if let Some(c) = part.strip_prefix("h3_r3=") {
                if key.h3_r3.is_some() {
                    return None;
                }
                key.h3_r3 = Some(c.parse().ok()?);
            } else {
                return None;
            }
        }
        Some(key)
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rel_path().display())
    }
}

/// Name of a published Parquet file holding WAL records `from_lsn..=to_lsn`.
pub fn part_file_name(from_lsn: u64, to_lsn: u64) -> String {
    format!("part-{from_lsn:020}-{to_lsn:020}.parquet")
}

/// Name of the temporary file a flush writes before publishing [`part_file_name`].
pub fn tmp_file_name(from_lsn: u64, to_lsn: u64) -> String {
    format!(".part-{from_lsn:020}-{to_lsn:020}.parquet.tmp")
}

/// Parses a published file name back to `(from_lsn, to_lsn)`.
pub fn parse_part_file_name(name: &str) -> Option<(u64, u64)> {
    let body = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (from, to) = body.split_once('-')?;
    if from.len() != 20 || to.len() != 20 {
        return None;
    }
    if !from.bytes().chain(to.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((from.parse().ok()?, to.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            date_from_days(0),
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            date_from_days(-1),
            Date {
                year: 1969,
                month: 12,
                day: 31
            }
        );
        // 2024-02-29 is day 19782.
        assert_eq!(
            date_from_days(19_782),
            Date {
                year: 2024,
                month: 2,
                day: 29
            }
        );
        assert_eq!(
            date_from_days(19_783),
            Date {
                year: 2024,
                month: 3,
                day: 1
            }
        );
        assert_eq!(
            date_from_days(fix::TIME_MS_MAX / MS_PER_DAY),
            Date {
                year: 9999,
                month: 12,
                day: 31
            }
        );
    }

    #[test]
    fn paths() {
        let cell = u64::from(crate::index::cell_of(
            485_000_000,
            23_000_000,
            Resolution::Ten,
        ));
        // 2026-11-25T07:59:59.999Z
        let t = 1_795_593_599_999;
        let key = PartitionKey::for_fix(PartitionScheme::default(), t, cell);
        assert_eq!(key.rel_path(), PathBuf::from("date=2026-11-25"));
        // One ms later is still the same day, next hour.
        let both = PartitionScheme {
            hour: true,
            h3_r3: true,
        };
        let key = PartitionKey::for_fix(both, t, cell);
        let parent = u64::from(
            CellIndex::try_from(cell)
                .expect("valid")
                .parent(Resolution::Three)
                .expect("coarser"),
        );
        assert_eq!(
            key.rel_path(),
            PathBuf::from(format!("date=2026-11-25/hour=07/h3_r3={parent}"))
        );
        assert_eq!(PartitionKey::parse(&key.to_string()), Some(key));
        let key = PartitionKey::for_fix(both, t + 1, cell);
        assert_eq!(key.hour, Some(8));
        // Midnight boundary.
        let midnight = 1_795_564_800_000; // 2026-11-25T00:00:00Z
        let before = PartitionKey::for_fix(
            PartitionScheme {
                hour: true,
                h3_r3: false,
            },
            midnight - 1,
            cell,
        );
        assert_eq!(before.rel_path(), PathBuf::from("date=2026-11-24/hour=23"));
        assert_eq!(PartitionKey::parse("date=2026-11-24/hour=24"), None);
        assert_eq!(PartitionKey::parse("date=2026-1-24"), None);
        assert_eq!(PartitionKey::parse("hour=01"), None);
    }

    #[test]
    fn file_names() {
        assert_eq!(
            part_file_name(1, 22),
            "part-00000000000000000001-00000000000000000022.parquet"
        );
        assert_eq!(
            tmp_file_name(1, 22),
            ".part-00000000000000000001-00000000000000000022.parquet.tmp"
        );
        assert_eq!(parse_part_file_name(&part_file_name(7, 9)), Some((7, 9)));
        assert_eq!(parse_part_file_name(&tmp_file_name(7, 9)), None);
        assert_eq!(parse_part_file_name("part-1-2.parquet"), None);
    }
}
