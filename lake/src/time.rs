//! Civil dates and timestamp text (pure): what partition values and statistics are made of.
//!
//! Contract: proleptic Gregorian calendar, UTC; [`days_from_date`] inverts
//! [`date_from_days`] for every day; text forms are what Delta and hive paths use
//! (`2026-11-25`, `2026-11-25T07:59:59.999000Z`). No clock, no IO.

use std::fmt;

/// A civil date (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, 1970..=9999 for valid fixes.
    pub year: i32,
    /// Month 1..=12.
    pub month: u8,
    /// Day 1..=31.
    pub day: u8,
}

/// Milliseconds in a day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn date_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if m <= 2 { y + 1 } else { y };
    Date {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: u8::try_from(m).unwrap_or(0),
        day: u8::try_from(d).unwrap_or(0),
    }
}

/// Days since 1970-01-01 of a civil date (inverse of [`date_from_days`]).
pub fn days_from_date(date: Date) -> i64 {
    let (m, d) = (i64::from(date.month), i64::from(date.day));
    let y = i64::from(date.year) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Date {
    /// The UTC date of a Unix ms time.
    pub fn of_ms(ms: i64) -> Date {
        date_from_days(ms.div_euclid(MS_PER_DAY))
    }

    /// Parses `YYYY-MM-DD` (a real calendar day).
    pub fn parse(s: &str) -> Option<Date> {
        let (y, rest) = s.split_once('-')?;
        let (m, d) = rest.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let date = Date {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
            day: d.parse().ok()?,
        };
        (date_from_days(days_from_date(date)) == date).then_some(date)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        days_from_date(self)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` of a Unix µs time (Delta's timestamp statistics).
pub fn format_timestamp_us(us: i64) -> String {
    let days = us.div_euclid(86_400_000_000);
    let rem = us.rem_euclid(86_400_000_000);
    let (s, frac) = (rem / 1_000_000, rem % 1_000_000);
    format!(
        "{}T{:02}:{:02}:{:02}.{frac:06}Z",
        date_from_days(days),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses [`format_timestamp_us`]'s form (also with 0-9 fraction digits and `+00:00`).
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let date = Date::parse(date)?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.split(':');
    let mut next = || -> Option<i64> { parts.next()?.parse().ok() };
    let (h, m, sec) = (next()?, next()?, next()?);
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut us_frac = 0i64;
    for (i, b) in frac.bytes().take(6).enumerate() {
        us_frac += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    Some(date.days() * 86_400_000_000 + (h * 3600 + m * 60 + sec) * 1_000_000 + us_frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in (-800_000..3_000_000).step_by(997) {
            assert_eq!(days_from_date(date_from_days(days)), days);
        }
        assert_eq!(date_from_days(19_782).to_string(), "2024-02-29");
        assert_eq!(Date::parse("2024-02-29").map(Date::days), Some(19_782));
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Date::parse("2023-2-28"), None);
    }

    #[test]
    fn timestamps() {
        let us = 1_795_593_599_999_000;
        let s = format_timestamp_us(us);
        assert_eq!(s, "2026-11-25T07:59:59.999000Z");
        assert_eq!(parse_timestamp_us(&s), Some(us));
        assert_eq!(parse_timestamp_us("2026-11-25T07:59:59.999Z"), Some(us));
        assert_eq!(
            parse_timestamp_us("1969-12-31T23:59:59.000001Z"),
            Some(-999_999)
        );
        assert_eq!(format_timestamp_us(-1), "1969-12-31T23:59:59.999999Z");
    }
}
