//! The worked table of docs/SILENCE.md (one test per row), policy-set rules, and property tests
//! of the working-day arithmetic against a day-by-day reference walk.

use std::sync::Arc;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::calendar::{self, Calendar, CalendarError, CalendarReason, CalendarYear, NamedDay};

fn calendar(name: &str) -> Arc<Calendar> {
    let files: &[(&str, &str)] = match name {
        "de" => &[
            (
                "de/2025",
                include_str!("../../../config/calendars/de/2025.toml"),
            ),
            (
                "de/2026",
                include_str!("../../../config/calendars/de/2026.toml"),
            ),
            (
                "de/2027",
                include_str!("../../../config/calendars/de/2027.toml"),
            ),
        ],
        _ => &[
            (
                "ru/2025",
                include_str!("../../../config/calendars/ru/2025.toml"),
            ),
            (
                "ru/2026",
                include_str!("../../../config/calendars/ru/2026.toml"),
            ),
            (
                "ru/2027",
                include_str!("../../../config/calendars/ru/2027.toml"),
            ),
        ],
    };
    let years = files
        .iter()
        .map(|(origin, text)| CalendarYear::parse(text, origin).unwrap())
        .collect();
    Arc::new(Calendar::from_years(years).unwrap())
}

fn wd(cal: &str, n: u32) -> Threshold {
    let c = calendar(cal);
    let tz = c.time_zone().clone();
    Threshold::WorkingDays(WorkingDays {
        n,
        calendar: c,
        time_zone: tz,
    })
}

fn t(s: &str) -> i64 {
    crate::parse_rfc3339(s).unwrap()
}

/// One row of the worked table: threshold, last fix, expected firing instant.
fn row(threshold: Threshold, last_fix: &str, fires: &str) {
    let got = threshold.deadline_s(t(last_fix));
    assert_eq!(
        got,
        t(fires),
        "last fix {last_fix}: fired {} expected {fires}",
        crate::rfc3339(got)
    );
    // The cut-off agrees: at the firing instant the fix is past it, one second before not.
    assert!(t(last_fix) < threshold.cutoff_s(got));
    assert!(t(last_fix) >= threshold.cutoff_s(got - 1));
}

#[test]
fn table_1_friday_evening_before_whit_monday_warning() {
    row(
        wd("de", 1),
        "2026-05-22T18:00:00+02:00",
        "2026-05-26T18:00:00+02:00",
    );
}

#[test]
fn table_2_friday_evening_before_whit_monday_expiry() {
    row(
        wd("de", 3),
        "2026-05-22T18:00:00+02:00",
        "2026-05-28T18:00:00+02:00",
    );
}

#[test]
fn table_3_saturday_fix_counts_from_next_working_day() {
    row(
        wd("de", 1),
        "2026-05-23T10:00:00+02:00",
        "2026-05-27T00:00:00+02:00",
    );
    row(
        wd("de", 3),
        "2026-05-23T10:00:00+02:00",
        "2026-05-29T00:00:00+02:00",
    );
}

#[test]
fn table_4_across_spring_forward_keeps_wall_time() {
    row(
        wd("de", 1),
        "2026-03-27T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",
    );
}

#[test]
fn table_5_across_fall_back_keeps_wall_time() {
    row(
        wd("de", 1),
        "2026-10-23T12:00:00+02:00",
        "2026-10-26T12:00:00+01:00",
    );
}

#[test]
fn table_6_fix_in_repeated_hour_counts_as_its_end() {
    // 02:30 CET is the second pass of 02:00-03:00 on 2026-10-25 (a Sunday): non-working, so
    // the rule for non-working days applies anyway; on a working day the end of the hour
    // (03:00) is used as the wall time.
    row(
        wd("de", 1),
        "2026-10-25T02:30:00+01:00",
        "2026-10-27T00:00:00+01:00",
    );
    // Monotone around the fold.
    let th = wd("de", 1);
    let first = th.deadline_s(t("2026-10-25T02:59:59+02:00"));
    let second = th.deadline_s(t("2026-10-25T02:00:00+01:00"));
    assert!(first <= second);
}

#[test]
fn table_7_year_end_with_christmas() {
    row(
        wd("de", 1),
        "2026-12-23T17:00:00+01:00",
        "2026-12-24T17:00:00+01:00",
    );
    row(
        wd("de", 3),
        "2026-12-23T17:00:00+01:00",
        "2026-12-29T17:00:00+01:00",
    );
}

#[test]
fn table_8_transferred_working_saturday() {
    row(
        wd("ru", 1),
        "2025-10-31T15:00:00+03:00",
        "2025-11-01T15:00:00+03:00",
    );
    row(
        wd("ru", 3),
        "2025-10-31T15:00:00+03:00",
        "2025-11-06T15:00:00+03:00",
    );
}

#[test]
fn table_9_new_year_holidays_across_the_year_end() {
    row(
        wd("ru", 1),
        "2025-12-30T12:00:00+03:00",
        "2026-01-12T12:00:00+03:00",
    );
}

#[test]
fn table_10_duration_ignores_calendars() {
    row(
        Threshold::Duration { seconds: 36 * 3600 },
        "2026-05-22T18:00:00+02:00",
        "2026-05-24T06:00:00+02:00",
    );
}

#[test]
fn calendars_count_the_official_working_days() {
    let count = |cal: &Calendar, y: i16| {
        let mut d = Date::constant(y, 1, 1);
        let mut n = 0;
        while d.year() == y {
            n += u32::from(cal.is_working_date(d));
            d = d.tomorrow().unwrap();
        }
        n
    };
    let ru = calendar("ru");
    assert_eq!(count(&ru, 2025), 247);
    assert_eq!(count(&ru, 2026), 247);
    let de = calendar("de");
    assert_eq!(count(&de, 2026), 254);
    assert_eq!(ru.years(), (2025, 2027));
}

#[test]
fn calendar_errors_name_file_line_and_key() {
    let ok =
        "name = \"x\"\nyear = 2026\ntime_zone = \"Europe/Berlin\"\nweekend = [\"sat\", \"sun\"]\n";
    let err = |text: &str| CalendarYear::parse(text, "x/2026.toml").unwrap_err();
    let e = err(&format!(
        "{ok}holidays = [\n  {{ date = \"2026-02-30\", name = \"bad\" }},\n]\n"
    ));
    assert!(
        matches!(&e, CalendarError::Invalid { line: 6, key, reason: CalendarReason::BadDate, .. } if key == "holidays[0].date"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "x/2026.toml:6: holidays[0].date = \"2026-02-30\": not a YYYY-MM-DD date"
    );
    let e = err(&format!(
        "{ok}holidays = [{{ date = \"2025-12-31\", name = \"x\" }}]\n"
    ));
    assert!(matches!(
        e,
        CalendarError::Invalid {
            reason: CalendarReason::OutsideYear,
            ..
        }
    ));
    let e = err(&format!(
        "{ok}working_days = [{{ date = \"2026-05-20\", name = \"wed\" }}]\n"
    ));
    assert!(matches!(
        e,
        CalendarError::Invalid {
            reason: CalendarReason::WorkingDayNotWeekend,
            ..
        }
    ));
    let e = err(&format!(
        "{ok}holidays = [{{ date = \"2026-05-23\", name = \"a\" }}]\nworking_days = [{{ date = \"2026-05-23\", name = \"b\" }}]\n"
    ));
    assert!(
        matches!(
            e,
            CalendarError::Invalid {
                line: 6,
                reason: CalendarReason::HolidayAndWorkingDay,
                ..
            }
        ),
        "{e:?}"
    );
    let e = err(&ok.replace("Europe/Berlin", "Mars/Olympus"));
    assert!(matches!(
        e,
        CalendarError::Invalid {
            line: 3,
            reason: CalendarReason::UnknownTimeZone,
            ..
        }
    ));
    let e = err(&ok.replace("\"sun\"", "\"sunday\""));
    assert!(matches!(
        e,
        CalendarError::Invalid {
            line: 4,
            reason: CalendarReason::BadWeekday,
            ..
        }
    ));
    let e = err(&format!("{ok}colour = 1\n"));
    assert!(matches!(e, CalendarError::Syntax { line: 5, .. }), "{e:?}");
    let e = err("name = \"x\"\nyear = \n");
    assert!(matches!(e, CalendarError::Syntax { line: 2, .. }), "{e:?}");
    // Years: gap, duplicate, zone mismatch.
    let y = |year: i16, tz: &str| CalendarYear {
        name: "x".into(),
        year,
        time_zone: tz.into(),
        weekend: [false, false, false, false, false, true, true],
        holidays: Vec::new(),
        working_days: Vec::new(),
    };
    let gap = Calendar::from_years(vec![y(2025, "UTC"), y(2027, "UTC")]).unwrap_err();
    assert_eq!(
        gap.to_string(),
        "calendar \"x\": year 2026 is missing between the files for 2025 and 2027"
    );
    assert!(Calendar::from_years(vec![y(2025, "UTC"), y(2025, "UTC")]).is_err());
    assert!(Calendar::from_years(vec![y(2025, "UTC"), y(2026, "Europe/Berlin")]).is_err());
    assert!(Calendar::from_years(Vec::new()).is_err());
}

#[test]
fn thresholds_parse() {
    let c = calendar("de");
    let tz = c.time_zone().clone();
    assert!(matches!(
        parse_threshold("36h", None),
        Ok(Threshold::Duration { seconds: 129_600 })
    ));
    assert!(matches!(
        parse_threshold("1d12h30m5s", None),
        Ok(Threshold::Duration { seconds: 131_405 })
    ));
    assert!(matches!(
        parse_threshold("3 working days", Some((&c, &tz))),
        Ok(Threshold::WorkingDays(WorkingDays { n: 3, .. }))
    ));
    assert!(parse_threshold("1 working day", Some((&c, &tz))).is_ok());
    assert_eq!(
        parse_threshold("3 working days", None).unwrap_err().reason,
        ThresholdParseReason::NoCalendar
    );
    assert_eq!(
        parse_threshold("67 working days", Some((&c, &tz)))
            .unwrap_err()
            .reason,
        ThresholdParseReason::Range
    );
    assert!(parse_threshold("66 working days", Some((&c, &tz))).is_ok());
    assert_eq!(
        parse_threshold("0h", None).unwrap_err().reason,
        ThresholdParseReason::Range
    );
    assert_eq!(
        parse_threshold("36", None).unwrap_err().reason,
        ThresholdParseReason::Syntax
    );
    assert_eq!(
        parse_threshold("", None).unwrap_err().reason,
        ThresholdParseReason::Syntax
    );
    assert_eq!(
        parse_threshold("49711d", None).unwrap_err().reason,
        ThresholdParseReason::Range
    );
}

fn dur(name: &str, w: u32, e: u32) -> PolicyDef {
    PolicyDef {
        name: name.into(),
        warning: Threshold::Duration { seconds: w },
        expiry: Threshold::Duration { seconds: e },
        confirm_resets: ConfirmResets::Warning,
    }
}

fn group(name: &str, policy: &str, ranges: Vec<(u64, u64)>, devices: Vec<u64>) -> GroupDef {
    GroupDef {
        name: name.into(),
        policy: policy.into(),
        ranges,
        devices,
    }
}

#[test]
fn groups_assign_policies_and_are_validated() {
    let set = PolicySet::new(
        vec![dur("default", 100, 200), dur("fast", 10, 20)],
        "default",
        vec![group("g", "fast", vec![(10, 19), (30, 30)], vec![5])],
        Vec::new(),
    )
    .unwrap();
    for (d, p) in [
        (1, 0),
        (5, 1),
        (9, 0),
        (10, 1),
        (19, 1),
        (20, 0),
        (30, 1),
        (31, 0),
    ] {
        assert_eq!(set.assignment(d).policy, p, "device {d}");
    }
    let err = |groups, default: &str| {
        PolicySet::new(
            vec![dur("default", 100, 200), dur("fast", 10, 20)],
            default,
            groups,
            Vec::new(),
        )
        .unwrap_err()
    };
    assert!(matches!(
        err(
            vec![
                group("a", "fast", vec![(1, 10)], vec![]),
                group("b", "fast", vec![(10, 12)], vec![])
            ],
            "default"
        ),
        PolicySetError::Overlap { device_id: 10, .. }
    ));
    assert!(matches!(
        err(
            vec![
                group("a", "fast", vec![], vec![3]),
                group("b", "fast", vec![], vec![3])
            ],
            "default"
        ),
        PolicySetError::Overlap { device_id: 3, .. }
    ));
    assert!(matches!(
        err(vec![group("a", "nope", vec![], vec![])], "default"),
        PolicySetError::UnknownPolicy { .. }
    ));
    assert!(matches!(
        err(vec![], "nope"),
        PolicySetError::UnknownPolicy { .. }
    ));
    assert!(matches!(
        err(vec![group("a", "fast", vec![(5, 4)], vec![])], "default"),
        PolicySetError::BadRange { .. }
    ));
    assert!(matches!(
        PolicySet::new(vec![dur("default", 100, 100)], "default", vec![], vec![]).unwrap_err(),
        PolicySetError::ExpiryNotAfterWarning { .. }
    ));
    assert!(matches!(
        PolicySet::new(
            vec![dur("default", 1, 2), dur("default", 1, 2)],
            "default",
            vec![],
            vec![]
        )
        .unwrap_err(),
        PolicySetError::DuplicatePolicy { .. }
    ));
}

#[test]
fn exemptions_outages_and_confirmations_move_the_clock() {
    let ex = |target, from_s, until_s| Exemption {
        target,
        from_s,
        until_s,
        reason: "r".into(),
    };
    let mut set = PolicySet::new(
        vec![
            dur("default", 100, 200),
            PolicyDef {
                confirm_resets: ConfirmResets::Full,
                ..dur("full", 100, 200)
            },
        ],
        "default",
        vec![
            group("g", "default", vec![(100, 199)], vec![]),
            group("f", "full", vec![(200, 299)], vec![]),
        ],
        vec![
            ex(ExemptionTarget::Device(7), None, None),
            ex(ExemptionTarget::Group("g".into()), Some(1_000), Some(2_000)),
        ],
    )
    .unwrap();
    let p = set.prepare(1_500);
    assert_eq!(p.judge_detail(7, 1, 0).judgement, Judgement::Exempt);
    assert_eq!(p.judge_detail(150, 1, 0).judgement, Judgement::Exempt);
    assert_eq!(
        p.judge_detail(8, 1, 0).judgement,
        Judgement::Level(Level::Expired)
    );
    // After the window silence counts from its end.
    let p = set.prepare(2_150);
    assert_eq!(
        p.judge_detail(150, 1, 0).judgement,
        Judgement::Level(Level::Warned)
    );
    let p = set.prepare(2_099);
    assert_eq!(
        p.judge_detail(150, 1, 0).judgement,
        Judgement::Level(Level::Reporting)
    );
    // Before the window starts: judged normally.
    let p = set.prepare(900);
    assert_eq!(
        p.judge_detail(150, 1, 0).judgement,
        Judgement::Level(Level::Expired)
    );
    // Confirmation: "warning" resets only the warning; "full" both.
    let p = set.prepare(1_250);
    assert_eq!(
        p.judge_detail(8, 1_000, 1_200).judgement,
        Judgement::Level(Level::Expired)
    );
    let p = set.prepare(1_150);
    assert_eq!(
        p.judge_detail(8, 1_000, 1_100).judgement,
        Judgement::Level(Level::Reporting)
    );
    assert_eq!(
        p.judge_detail(8, 1_000, 0).judgement,
        Judgement::Level(Level::Warned)
    );
    let p = set.prepare(1_250);
    assert_eq!(
        p.judge_detail(250, 1_000, 1_200).judgement,
        Judgement::Level(Level::Reporting)
    );
    // Outages are not counted.
    set.set_outages(
        vec![Outage {
            down_s: 5_000,
            up_s: 8_000,
        }],
        8,
    );
    assert_eq!(set.after_outages(4_900), 7_900);
    assert_eq!(set.after_outages(6_000), 8_000);
    assert_eq!(set.after_outages(8_100), 8_100);
    let p = set.prepare(8_040);
    assert_eq!(
        p.judge_detail(8, 4_950, 0).judgement,
        Judgement::Level(Level::Reporting)
    );
    // outages_max keeps the newest.
    set.set_outages(
        (0..10)
            .map(|i| Outage {
                down_s: i * 10,
                up_s: i * 10 + 5,
            })
            .collect(),
        3,
    );
    assert_eq!(set.outages().len(), 3);
    assert_eq!(set.outages()[0].down_s, 70);
}

// ---- property tests: prefix-count arithmetic vs a day-by-day walk ----

const ZONES: [&str; 6] = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Europe/Moscow",
    "America/Santiago",
    "Asia/Kolkata",
];

#[derive(Debug, Clone)]
struct RawCal {
    zone: &'static str,
    weekend: [bool; 7],
    holidays: Vec<Date>,
    working: Vec<Date>,
}

fn raw_cal() -> impl Strategy<Value = RawCal> {
    (
        0..ZONES.len(),
        prop_oneof![
            Just([false, false, false, false, false, true, true]),
            Just([false, false, false, false, true, true, false]),
            Just([false, false, false, false, false, false, true])
        ],
        proptest::collection::vec(0i32..4 * 365, 0..40),
        proptest::collection::vec(0i32..4 * 365, 0..12),
    )
        .prop_map(|(z, weekend, hol, work)| {
            let base = calendar::epoch_day(Date::constant(2024, 1, 1));
            let mut holidays: Vec<Date> = Vec::new();
            let mut working: Vec<Date> = Vec::new();
            for h in hol {
                let d = calendar::date_of_epoch_day(base + h);
                if !weekend[calendar::weekday_index(base + h)] && !holidays.contains(&d) {
                    holidays.push(d);
                }
            }
            for w in work {
                let d = calendar::date_of_epoch_day(base + w);
                if weekend[calendar::weekday_index(base + w)] && !working.contains(&d) {
                    working.push(d);
                }
            }
            RawCal {
                zone: ZONES[z],
                weekend,
                holidays,
                working,
            }
        })
}

fn build(raw: &RawCal) -> Arc<Calendar> {
    let years = (2024..=2027)
        .map(|y| CalendarYear {
            name: "p".into(),
            year: y,
            time_zone: raw.zone.into(),
            weekend: raw.weekend,
            holidays: raw
                .holidays
                .iter()
                .filter(|d| d.year() == y)
                .map(|d| NamedDay {
                    date: *d,
                    name: "h".into(),
                })
                .collect(),
            working_days: raw
                .working
                .iter()
                .filter(|d| d.year() == y)
                .map(|d| NamedDay {
                    date: *d,
                    name: "w".into(),
                })
                .collect(),
        })
        .collect();
    Arc::new(Calendar::from_years(years).unwrap())
}

/// The reference: the rule of docs/SILENCE.md walked one civil day at a time.
fn reference(raw: &RawCal, n: u32, since_s: i64) -> i64 {
    let tz = TimeZone::get(raw.zone).unwrap();
    let working = |d: Date| {
        if raw.working.contains(&d) {
            return true;
        }
        if raw.holidays.contains(&d) {
            return false;
        }
        let covered = (2024..=2027).contains(&d.year());
        let _ = covered;
        !raw.weekend[d.weekday().to_monday_zero_offset() as usize]
    };
    let mut ts = jiff::Timestamp::from_second(since_s).unwrap();
    // Second pass of a repeated hour: step to the first unambiguous second after it.
    let is_second_pass = |ts: jiff::Timestamp| {
        tz.to_ambiguous_timestamp(tz.to_datetime(ts))
            .earlier()
            .unwrap()
            < ts
    };
    if is_second_pass(ts) {
        while is_second_pass(ts) || tz.to_ambiguous_timestamp(tz.to_datetime(ts)).is_ambiguous() {
            ts = ts.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
        }
    }
    let dt = tz.to_datetime(ts);
    let mut d = dt.date();
    let start_working = working(d);
    let mut left = n;
    while left > 0 {
        d = d.tomorrow().unwrap();
        if working(d) {
            left -= 1;
        }
    }
    let local = if start_working {
        DateTime::from_parts(d, dt.time())
    } else {
        DateTime::from_parts(d.tomorrow().unwrap(), jiff::civil::Time::midnight())
    };
    tz.to_timestamp(local).unwrap().as_second()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn working_days_match_the_day_by_day_walk(
        raw in raw_cal(),
        n in 1u32..=20,
        // 2023-07 .. 2028-06: inside and outside the covered years.
        since_s in 1_688_169_600i64..1_845_936_000,
    ) {
        let cal = build(&raw);
        let w = WorkingDays { n, time_zone: TimeZone::get(raw.zone).unwrap(), calendar: cal };
        prop_assert_eq!(w.deadline_s(since_s), reference(&raw, n, since_s));
    }

    #[test]
    fn cutoff_is_exact_and_deadlines_monotone(
        raw in raw_cal(),
        n in 1u32..=10,
        now_s in 1_704_067_200i64..1_830_297_600,
        a in 0i64..40 * 86_400,
        b in 0i64..40 * 86_400,
    ) {
        let cal = build(&raw);
        let th = Threshold::WorkingDays(WorkingDays { n, time_zone: TimeZone::get(raw.zone).unwrap(), calendar: cal });
        let c = th.cutoff_s(now_s);
        prop_assert!(th.deadline_s(c) > now_s);
        prop_assert!(th.deadline_s(c - 1) <= now_s);
        let (x, y) = (now_s - a.max(b), now_s - a.min(b));
        prop_assert!(th.deadline_s(x) <= th.deadline_s(y), "monotone");
        prop_assert_eq!(th.deadline_s(x) <= now_s, x < c);
    }
}

/// Near every DST transition of the covered years, the two agree second by second on a grid.
#[test]
fn dst_transitions_agree_with_reference() {
    for zone in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "America/Santiago",
    ] {
        let raw = RawCal {
            zone,
            weekend: [false, false, false, false, false, true, true],
            holidays: Vec::new(),
            working: Vec::new(),
        };
        let tz = TimeZone::get(zone).unwrap();
        let cal = build(&raw);
        let start = jiff::Timestamp::from_second(1_704_067_200).unwrap();
        for tr in tz.following(start).take(8) {
            let at = tr.timestamp().as_second();
            for n in [1, 2, 5] {
                let w = WorkingDays {
                    n,
                    time_zone: tz.clone(),
                    calendar: cal.clone(),
                };
                let mut s = at - 2 * 3600 - 7 * 86_400;
                while s < at + 2 * 3600 {
                    // Fixes around the transition and deadlines that land on a transition day.
                    for since in [s, s + 7 * 86_400] {
                        assert_eq!(
                            w.deadline_s(since),
                            reference(&raw, n, since),
                            "{zone} n {n} since {since}"
                        );
                    }
                    s += 599;
                }
            }
        }
    }
}
