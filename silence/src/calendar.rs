//! Working-day calendars: weekends, public holidays and transferred working days, as data.
//!
//! # Contract
//!
//! * A [`Calendar`] is built from one [`CalendarYear`] per year (one file per calendar and year
//!   under `config/calendars/<name>/<year>.toml`), for a **contiguous** range of years, all with
//!   the same time zone and weekend. Building validates everything once; afterwards every query
//!   is infallible.
//! * A day is a *working day* when it is not a weekend day and not a holiday, or when it is
//!   listed as a transferred working day (a Saturday worked in exchange for a bridge day).
//!   Outside the covered years only the weekend rule applies (documented in `docs/SILENCE.md`;
//!   the binary warns when the coverage ends soon).
//! * Arithmetic is by precomputed prefix counts (`prefix[i]` = working days before the i-th
//!   covered day), so "the n-th working day after day d" is a binary search, not a walk.
//! * Pure: no IO, no clock. [`CalendarYear::parse`] takes the file's text and a name for error
//!   messages; [`crate::config`] reads the files.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use thiserror::Error;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn epoch_day(date: Date) -> i32 {
    let (y, m, d) = (
        i32::from(date.year()),
        i32::from(date.month()),
        i32::from(date.day()),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of an [`epoch_day`] (its inverse).
pub fn date_of_epoch_day(day: i32) -> Date {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i32::from(m <= 2);
    // Every epoch day reachable from u32 Unix seconds (and far beyond) is a valid jiff date.
    Date::new(y as i16, m as i8, d as i8).expect("epoch day within jiff's date range")
}

/// Monday = 0 … Sunday = 6 of an epoch day (1970-01-01 was a Thursday).
pub fn weekday_index(day: i32) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// Names accepted in `weekend = [...]`, Monday first.
pub const WEEKDAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One named day in a calendar file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDay {
    /// The date.
    pub date: Date,
    /// What it is (e.g. "Neujahr", "working Saturday for 2026-01-02").
    pub name: String,
}

/// One calendar file: a calendar's rules for one year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarYear {
    /// The calendar's name (the directory name, e.g. `de`).
    pub name: String,
    /// The year the file covers.
    pub year: i16,
    /// IANA time zone the calendar's days are in, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Weekend days, Monday = 0.
    pub weekend: [bool; 7],
    /// Days off that would otherwise be working days.
    pub holidays: Vec<NamedDay>,
    /// Weekend days that are working days this year (transferred working days).
    pub working_days: Vec<NamedDay>,
}

/// Why a calendar file or a set of them was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CalendarReason {
    /// Not a `YYYY-MM-DD` date.
    BadDate,
    /// The date is not in the file's `year`.
    OutsideYear,
    /// The date is listed twice.
    Duplicate,
    /// A transferred working day must fall on a weekend day.
    WorkingDayNotWeekend,
    /// The date is both a holiday and a working day.
    HolidayAndWorkingDay,
    /// Not an IANA time zone name known to the bundled database.
    UnknownTimeZone,
    /// Not one of `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`, or listed twice.
    BadWeekday,
    /// Every day of the week is a weekend day: no working day would ever exist.
    NoWorkingWeekday,
    /// The year is outside 1970..=2105 (the range of `u32` Unix seconds).
    YearOutOfRange,
}

impl std::fmt::Display for CalendarReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CalendarReason::BadDate => "not a YYYY-MM-DD date",
            CalendarReason::OutsideYear => "date is not in the file's year",
            CalendarReason::Duplicate => "date listed twice",
            CalendarReason::WorkingDayNotWeekend => {
                "a transferred working day must fall on a weekend day"
            }
            CalendarReason::HolidayAndWorkingDay => "date is both a holiday and a working day",
            CalendarReason::UnknownTimeZone => "unknown IANA time zone",
            CalendarReason::BadWeekday => "weekday must be one of mon..sun, each once",
            CalendarReason::NoWorkingWeekday => "every weekday is a weekend day",
            CalendarReason::YearOutOfRange => "year must be within 1970..=2105",
        })
    }
}

/// A calendar file or a set of calendar years was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CalendarError {
    /// The file is not valid TOML or does not have the expected keys and types.
    #[error("{origin}:{line}: {message}")]
    Syntax {
        /// The file (as given by the caller).
        origin: String,
        /// 1-based line of the problem (1 when the parser gave no position).
        line: usize,
        /// The TOML parser's description.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{origin}:{line}: {key} = {value:?}: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// 1-based line of the value.
        line: usize,
        /// The key, e.g. `holidays[3].date`.
        key: String,
        /// The offending value.
        value: String,
        /// Why.
        reason: CalendarReason,
    },
    /// The years of one calendar do not fit together.
    #[error("calendar {calendar:?}: {reason}")]
    Years {
        /// The calendar.
        calendar: String,
        /// Why.
        reason: YearsReason,
    },
}

/// Why the years of a calendar do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum YearsReason {
    /// No file at all.
    #[error("no year files")]
    Empty,
    /// Years must be contiguous: a year is missing.
    #[error("year {missing} is missing between the files for {before} and {after}")]
    Gap {
        /// The year before the gap.
        before: i16,
        /// The missing year.
        missing: i16,
        /// The year after the gap.
        after: i16,
    },
    /// Two files for one year.
    #[error("two files for year {year}")]
    DuplicateYear {
        /// The year.
        year: i16,
    },
    /// All years must use one time zone.
    #[error("year {year} uses time zone {found:?}, year {first_year} uses {expected:?}")]
    TimeZoneDiffers {
        /// The odd year.
        year: i16,
        /// Its zone.
        found: String,
        /// The first year.
        first_year: i16,
        /// The first year's zone.
        expected: String,
    },
    /// All years must have the same weekend.
    #[error("year {year} has a different weekend from year {first_year}")]
    WeekendDiffers {
        /// The odd year.
        year: i16,
        /// The first year.
        first_year: i16,
    },
    /// Files for different calendars were mixed.
    #[error("file for year {year} names calendar {found:?}")]
    NameDiffers {
        /// The odd year.
        year: i16,
        /// The name it gives.
        found: String,
    },
}

mod parse {
    use super::*;
    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileRepr {
        name: Spanned<String>,
        year: Spanned<i64>,
        time_zone: Spanned<String>,
        weekend: Spanned<Vec<String>>,
        #[serde(default)]
        holidays: Vec<DayRepr>,
        #[serde(default)]
        working_days: Vec<DayRepr>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DayRepr {
        date: Spanned<String>,
        name: String,
    }

    fn line_of(text: &str, offset: usize) -> usize {
        text.get(..offset)
            .map_or(1, |before| before.matches('\n').count() + 1)
    }

    impl CalendarYear {
        /// Parses and validates one calendar file. `origin` names the file in errors.
        ///
        /// The format (see `config/calendars/de/2026.toml`):
        ///
        /// ```toml
        /// name = "de"
        /// year = 2026
        /// time_zone = "Europe/Berlin"
        /// weekend = ["sat", "sun"]
        /// holidays = [{ date = "2026-01-01", name = "Neujahr" }]
        /// working_days = []
        /// ```
        ///
        /// # Errors
        /// [`CalendarError::Syntax`] or [`CalendarError::Invalid`], with the 1-based line.
        pub fn parse(text: &str, origin: &str) -> Result<CalendarYear, CalendarError> {
            let repr: FileRepr = toml::from_str(text).map_err(|e| CalendarError::Syntax {
                origin: origin.to_string(),
                line: e.span().map_or(1, |s| line_of(text, s.start)),
                message: e.message().to_string(),
            })?;
            let src = Source { text, origin };
            let year = *repr.year.get_ref();
            if !(1970..=2105).contains(&year) {
                return Err(src.invalid(
                    repr.year.span(),
                    "year".into(),
                    year.to_string(),
                    CalendarReason::YearOutOfRange,
                ));
            }
            let year = year as i16;
            let tz_name = repr.time_zone.get_ref();
            if TimeZone::get(tz_name).is_err() {
                return Err(src.invalid(
                    repr.time_zone.span(),
                    "time_zone".into(),
                    tz_name.clone(),
                    CalendarReason::UnknownTimeZone,
                ));
            }
            let weekend = src.weekend(&repr.weekend)?;
            let [holidays, working_days] = src.days(&repr, year, &weekend)?;
            Ok(CalendarYear {
                name: repr.name.into_inner(),
                year,
                time_zone: tz_name.clone(),
                weekend,
                holidays,
                working_days,
            })
        }
    }

    /// The file being parsed, for error positions.
    struct Source<'a> {
        text: &'a str,
        origin: &'a str,
    }

    impl Source<'_> {
        fn invalid(
            &self,
            span: std::ops::Range<usize>,
            key: String,
            value: String,
            reason: CalendarReason,
        ) -> CalendarError {
            CalendarError::Invalid {
                origin: self.origin.to_string(),
                line: line_of(self.text, span.start),
                key,
                value,
                reason,
            }
        }

        /// `weekend = [...]`: known day names, each once, not all seven.
        fn weekend(&self, repr: &Spanned<Vec<String>>) -> Result<[bool; 7], CalendarError> {
            let mut weekend = [false; 7];
            for w in repr.get_ref() {
                match WEEKDAY_NAMES.iter().position(|n| n == w) {
                    Some(i) if !weekend[i] => weekend[i] = true,
                    _ => {
                        return Err(self.invalid(
                            repr.span(),
                            "weekend".into(),
                            w.clone(),
                            CalendarReason::BadWeekday,
                        ));
                    }
                }
            }
            if weekend.iter().all(|w| *w) {
                return Err(self.invalid(
                    repr.span(),
                    "weekend".into(),
                    format!("{:?}", repr.get_ref()),
                    CalendarReason::NoWorkingWeekday,
                ));
            }
            Ok(weekend)
        }

        /// `holidays` and `working_days`: strict dates in `year`, each once, never in both
        /// lists, transferred working days on weekend days only.
        fn days(
            &self,
            repr: &FileRepr,
            year: i16,
            weekend: &[bool; 7],
        ) -> Result<[Vec<NamedDay>; 2], CalendarError> {
            let mut seen = BTreeMap::new();
            let mut lists: [Vec<NamedDay>; 2] = [Vec::new(), Vec::new()];
            let named = [
                ("holidays", &repr.holidays),
                ("working_days", &repr.working_days),
            ];
            for (list_index, (list_key, list)) in named.into_iter().enumerate() {
                for (i, day) in list.iter().enumerate() {
                    let key = format!("{list_key}[{i}].date");
                    let raw = day.date.get_ref();
                    let err =
                        |reason| self.invalid(day.date.span(), key.clone(), raw.clone(), reason);
                    let date: Date = parse_date(raw).ok_or_else(|| err(CalendarReason::BadDate))?;
                    if date.year() != year {
                        return Err(err(CalendarReason::OutsideYear));
                    }
                    match seen.insert(date, list_index) {
                        Some(prev) if prev == list_index => {
                            return Err(err(CalendarReason::Duplicate));
                        }
                        Some(_) => return Err(err(CalendarReason::HolidayAndWorkingDay)),
                        None => {}
                    }
                    if list_index == 1 && !weekend[weekday_index(epoch_day(date))] {
                        return Err(err(CalendarReason::WorkingDayNotWeekend));
                    }
                    lists[list_index].push(NamedDay {
                        date,
                        name: day.name.clone(),
                    });
                }
            }
            Ok(lists)
        }
    }

    /// Strict `YYYY-MM-DD`.
    fn parse_date(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i32> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        Date::new(
            i16::try_from(y).ok()?,
            i8::try_from(m).ok()?,
            i8::try_from(d).ok()?,
        )
        .ok()
    }
}

/// The years (sorted by year) must be non-empty, contiguous, unique, and agree on name, time
/// zone and weekend. Returns the first and the last.
fn check_years(years: &[CalendarYear]) -> Result<(&CalendarYear, &CalendarYear), CalendarError> {
    let (Some(first), Some(last)) = (years.first(), years.last()) else {
        return Err(CalendarError::Years {
            calendar: String::new(),
            reason: YearsReason::Empty,
        });
    };
    let years_err = |reason| CalendarError::Years {
        calendar: first.name.clone(),
        reason,
    };
    for pair in years.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.year == b.year {
            return Err(years_err(YearsReason::DuplicateYear { year: a.year }));
        }
        if b.year != a.year + 1 {
            return Err(years_err(YearsReason::Gap {
                before: a.year,
                missing: a.year + 1,
                after: b.year,
            }));
        }
    }
    for y in years {
        if y.name != first.name {
            return Err(years_err(YearsReason::NameDiffers {
                year: y.year,
                found: y.name.clone(),
            }));
        }
        if y.time_zone != first.time_zone {
            return Err(years_err(YearsReason::TimeZoneDiffers {
                year: y.year,
                found: y.time_zone.clone(),
                first_year: first.year,
                expected: first.time_zone.clone(),
            }));
        }
        if y.weekend != first.weekend {
            return Err(years_err(YearsReason::WeekendDiffers {
                year: y.year,
                first_year: first.year,
            }));
        }
    }
    Ok((first, last))
}

/// Every holiday (`false`) and transferred working day (`true`) of `years`, by epoch day.
fn named_days(years: &[CalendarYear]) -> BTreeMap<i32, (bool, String)> {
    let mut named = BTreeMap::new();
    for y in years {
        for h in &y.holidays {
            named.insert(epoch_day(h.date), (false, h.name.clone()));
        }
        for w in &y.working_days {
            named.insert(epoch_day(w.date), (true, w.name.clone()));
        }
    }
    named
}

/// `prefix[i]` = working days in `first_day .. first_day + i`, for every day up to `last_day`.
fn prefix_counts(
    first_day: i32,
    last_day: i32,
    named: &BTreeMap<i32, (bool, String)>,
    weekend: &[bool; 7],
) -> Vec<u32> {
    let days = (last_day - first_day + 1) as usize;
    let mut prefix = Vec::with_capacity(days + 1);
    let mut count = 0u32;
    prefix.push(0);
    for i in 0..days {
        let day = first_day + i as i32;
        let working = match named.get(&day) {
            Some((working, _)) => *working,
            None => !weekend[weekday_index(day)],
        };
        count += u32::from(working);
        prefix.push(count);
    }
    prefix
}

/// What kind of day a date is in a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayKind<'a> {
    /// An ordinary working day.
    Working,
    /// A weekend day.
    Weekend,
    /// A public holiday, with its name.
    Holiday(&'a str),
    /// A weekend day that is a working day, with its name.
    TransferredWorkingDay(&'a str),
    /// Outside the covered years: only the weekend rule applies; `true` when working.
    Uncovered(bool),
}

/// A validated working-day calendar over a contiguous range of years.
#[derive(Debug, Clone)]
pub struct Calendar {
    name: String,
    time_zone: TimeZone,
    time_zone_name: String,
    weekend: [bool; 7],
    first_year: i16,
    last_year: i16,
    /// Epoch day of January 1st of `first_year`.
    first_day: i32,
    /// Epoch day of December 31st of `last_year`.
    last_day: i32,
    /// `prefix[i]` = working days in `first_day .. first_day + i`; `len = covered days + 1`.
    prefix: Vec<u32>,
    /// Working days per week outside the covered years.
    weekly_working_days: u32,
    /// Named special days (holidays and transferred working days).
    named: BTreeMap<i32, (bool, String)>,
}

impl Calendar {
    /// Builds a calendar from its year files (any order).
    ///
    /// # Errors
    /// [`CalendarError::Years`] if the years are not contiguous, repeat, or disagree on name,
    /// time zone or weekend; [`CalendarError::Invalid`] if the time zone is unknown.
    pub fn from_years(mut years: Vec<CalendarYear>) -> Result<Calendar, CalendarError> {
        years.sort_by_key(|y| y.year);
        let (first, last) = check_years(&years)?;
        let name = first.name.clone();
        let time_zone = TimeZone::get(&first.time_zone).map_err(|_| CalendarError::Invalid {
            origin: format!("calendar {name}"),
            line: 1,
            key: "time_zone".into(),
            value: first.time_zone.clone(),
            reason: CalendarReason::UnknownTimeZone,
        })?;
        let weekend = first.weekend;
        if weekend.iter().all(|w| *w) {
            return Err(CalendarError::Invalid {
                origin: format!("calendar {name}"),
                line: 1,
                key: "weekend".into(),
                value: format!("{weekend:?}"),
                reason: CalendarReason::NoWorkingWeekday,
            });
        }
        let (first_year, last_year) = (first.year, last.year);
        let first_day = epoch_day(Date::constant(first_year, 1, 1));
        let last_day = epoch_day(Date::constant(last_year, 12, 31));
        let named = named_days(&years);
        let prefix = prefix_counts(first_day, last_day, &named, &weekend);
        Ok(Calendar {
            name,
            time_zone,
            time_zone_name: first.time_zone.clone(),
            weekend,
            first_year,
            last_year,
            first_day,
            last_day,
            prefix,
            weekly_working_days: weekend.iter().filter(|w| !**w).count() as u32,
            named,
        })
    }

    /// The calendar's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The calendar's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    /// The IANA name of the calendar's time zone.
    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    /// The covered years, inclusive.
    pub fn years(&self) -> (i16, i16) {
        (self.first_year, self.last_year)
    }

    /// Whether `date` is a working day.
    pub fn is_working_date(&self, date: Date) -> bool {
        self.is_working(epoch_day(date))
    }

    /// What kind of day `date` is (for explanations).
    pub fn day_kind(&self, date: Date) -> DayKind<'_> {
        let day = epoch_day(date);
        if day < self.first_day || day > self.last_day {
            return DayKind::Uncovered(!self.weekend[weekday_index(day)]);
        }
        match self.named.get(&day) {
            Some((true, name)) => DayKind::TransferredWorkingDay(name),
            Some((false, name)) => DayKind::Holiday(name),
            None if self.weekend[weekday_index(day)] => DayKind::Weekend,
            None => DayKind::Working,
        }
    }

    /// Whether the epoch day `day` is a working day.
    pub fn is_working(&self, day: i32) -> bool {
        if day < self.first_day || day > self.last_day {
            return !self.weekend[weekday_index(day)];
        }
        let i = (day - self.first_day) as usize;
        self.prefix[i + 1] > self.prefix[i]
    }

    /// The `n`-th working day strictly after epoch day `day` (`n >= 1`; `n == 0` gives `day`).
    /// Prefix counts inside the covered years, whole weeks outside them.
    pub fn nth_working_day_after(&self, day: i32, n: u32) -> i32 {
        let mut d = day;
        let mut left = n;
        while left > 0 {
            if d + 1 >= self.first_day && d < self.last_day {
                // Jump inside the covered years.
                let from = (d + 1 - self.first_day) as usize;
                let base = self.prefix[from];
                let available = self.prefix[self.prefix.len() - 1] - base;
                if left <= available {
                    let target = base + left;
                    // The smallest i with prefix[i] >= target; day first_day + i - 1.
                    let i = self.prefix.partition_point(|&c| c < target);
                    return self.first_day + i as i32 - 1;
                }
                left -= available;
                d = self.last_day;
                continue;
            }
            let before_coverage = d + 7 < self.first_day;
            if (before_coverage || d >= self.last_day) && left > self.weekly_working_days {
                d += 7;
                left -= self.weekly_working_days;
                continue;
            }
            d += 1;
            if self.is_working(d) {
                left -= 1;
            }
        }
        d
    }
}
