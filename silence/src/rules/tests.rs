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
        counting: Counting::Instant,
    })
}

/// Policy `name`: warning "1 working day", expiry "3 working days" on calendar `cal`, a
/// confirmation resetting the warning.
fn one_and_three_working_days(name: &str, cal: &str, counting: Counting) -> PolicyDef {
    let c = calendar(cal);
    let tz = c.time_zone().clone();
    let ctx = PhraseContext {
        calendar: Some(&c),
        time_zone: Some(&tz),
        counting,
    };
    PolicyDef {
        name: name.into(),
        warning: parse_threshold("1 working day", &ctx).unwrap(),
        expiry: parse_threshold("3 working days", &ctx).unwrap(),
        confirm_resets: ConfirmResets::Warning,
    }
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

// ---- counting = "date": the worked table of docs/SILENCE.md, "Counting rules" ----

fn wd_date(cal: &str, n: u32) -> Threshold {
    match wd(cal, n) {
        Threshold::WorkingDays(w) => Threshold::WorkingDays(WorkingDays {
            counting: Counting::Date,
            ..w
        }),
        other => other,
    }
}

/// One row of the date table: the date rule fires at `date_fires`, the instant rule at
/// `instant_fires` (both checked, with their cut-offs).
fn date_row(cal: &str, n: u32, last_fix: &str, date_fires: &str, instant_fires: &str) {
    row(wd_date(cal, n), last_fix, date_fires);
    row(wd(cal, n), last_fix, instant_fires);
}

#[test]
fn date_1_friday_evening_issue_example() {
    date_row(
        "ru",
        3,
        "2025-10-24T18:00:00+03:00",
        "2025-10-30T00:00:00+03:00",
        "2025-10-29T18:00:00+03:00",
    );
}

#[test]
fn date_2_one_minute_after_midnight_issue_example() {
    date_row(
        "ru",
        3,
        "2026-02-17T00:01:00+03:00",
        "2026-02-21T00:00:00+03:00",
        "2026-02-20T00:01:00+03:00",
    );
}

#[test]
fn date_3_transferred_working_saturday() {
    // Sat 2025-11-01 is worked; Mon 3 off, Tue 4 holiday.
    date_row(
        "ru",
        1,
        "2025-10-31T15:00:00+03:00",
        "2025-11-02T00:00:00+03:00",
        "2025-11-01T15:00:00+03:00",
    );
    date_row(
        "ru",
        3,
        "2025-10-31T15:00:00+03:00",
        "2025-11-07T00:00:00+03:00",
        "2025-11-06T15:00:00+03:00",
    );
}

#[test]
fn date_4_new_year_holidays() {
    // 31 Dec off, 1-8 Jan holidays, 9 Jan off, 10-11 weekend: Mon 12, Tue 13, Wed 14.
    date_row(
        "ru",
        3,
        "2025-12-30T12:00:00+03:00",
        "2026-01-15T00:00:00+03:00",
        "2026-01-14T12:00:00+03:00",
    );
}

#[test]
fn date_5_may_holidays() {
    // 1 May (Fri) holiday, weekend, Mon 4, Tue 5, Wed 6.
    date_row(
        "ru",
        3,
        "2026-04-30T18:00:00+03:00",
        "2026-05-07T00:00:00+03:00",
        "2026-05-06T18:00:00+03:00",
    );
    // 9-10 May weekend, Mon 11 off instead of 9 May: Tue 12, Wed 13, Thu 14.
    date_row(
        "ru",
        3,
        "2026-05-08T12:00:00+03:00",
        "2026-05-15T00:00:00+03:00",
        "2026-05-14T12:00:00+03:00",
    );
}

#[test]
fn date_6_dst_zone() {
    // Spring forward on Sun 2026-03-29: Mon 30 counted, over at Tue 00:00 CEST.
    date_row(
        "de",
        1,
        "2026-03-27T02:30:00+01:00",
        "2026-03-31T00:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    );
    // A fix in the repeated hour of Sun 2026-10-25: its date is Sunday either way.
    date_row(
        "de",
        1,
        "2026-10-25T02:30:00+01:00",
        "2026-10-27T00:00:00+01:00",
        "2026-10-27T00:00:00+01:00",
    );
}

#[test]
fn date_7_last_fix_near_local_midnight_given_in_utc() {
    // Both fixes are on Sunday 2025-10-26 in UTC; in Moscow the first is Sunday 23:59:59
    // (counting starts Monday), the second Monday 00:00:00 (counting starts Tuesday).
    date_row(
        "ru",
        3,
        "2025-10-26T20:59:59Z",
        "2025-10-30T00:00:00+03:00",
        "2025-10-30T00:00:00+03:00",
    );
    date_row(
        "ru",
        3,
        "2025-10-26T21:00:00Z",
        "2025-10-31T00:00:00+03:00",
        "2025-10-30T00:00:00+03:00",
    );
}

#[test]
fn date_8_christmas_de() {
    // Thu 24 is worked in the nationwide calendar; 25, 26 holidays, Sun 27; Mon 28, Tue 29.
    date_row(
        "de",
        3,
        "2026-12-23T17:00:00+01:00",
        "2026-12-30T00:00:00+01:00",
        "2026-12-29T17:00:00+01:00",
    );
}

#[test]
fn date_9_phrases_have_one_meaning_each() {
    let c = calendar("de");
    let tz = c.time_zone().clone();
    let ctx = |counting| PhraseContext {
        calendar: Some(&c),
        time_zone: Some(&tz),
        counting,
    };
    let at = |text: &str, counting| {
        let th = parse_threshold(text, &ctx(counting)).unwrap();
        crate::rfc3339(th.deadline_s(t("2026-05-22T18:00:00+02:00")))
    };
    use Counting::{Date, Instant};
    // "more than N working days" is "N working days": over when the N-th day is.
    assert_eq!(at("more than 3 working days", Date), "2026-05-28T22:00:00Z");
    assert_eq!(at("3 working days", Date), "2026-05-28T22:00:00Z");
    assert_eq!(
        at("More  Than 3 Working Days", Date),
        "2026-05-28T22:00:00Z"
    );
    assert_eq!(
        at("more than 3 working days", Instant),
        "2026-05-28T16:00:00Z"
    );
    // "2 days" by date: Sat 23 and Sun 24 are the two full days; by instant: 48 h.
    assert_eq!(at("2 days", Date), "2026-05-24T22:00:00Z");
    assert_eq!(at("more than 2 days", Date), "2026-05-24T22:00:00Z");
    assert_eq!(at("2 days", Instant), "2026-05-24T16:00:00Z");
    // Compact durations are real seconds under either rule.
    assert_eq!(at("48h", Date), "2026-05-24T16:00:00Z");
    assert_eq!(at("2d", Date), "2026-05-24T16:00:00Z");
    assert_eq!(at("48h", Instant), "2026-05-24T16:00:00Z");
    // Refusals name the reason.
    let reason =
        |text: &str, ctx: &PhraseContext<'_>| parse_threshold(text, ctx).unwrap_err().reason;
    assert_eq!(
        reason("more than", &ctx(Date)),
        ThresholdParseReason::Syntax
    );
    assert_eq!(
        reason("more than 36h", &ctx(Date)),
        ThresholdParseReason::Syntax
    );
    assert_eq!(
        reason("three working days", &ctx(Date)),
        ThresholdParseReason::Number
    );
    assert_eq!(reason("0 days", &ctx(Date)), ThresholdParseReason::Range);
    assert_eq!(reason("367 days", &ctx(Date)), ThresholdParseReason::Range);
    assert!(parse_threshold("366 days", &ctx(Date)).is_ok());
    assert_eq!(
        reason("2 days", &PhraseContext::DURATIONS_ONLY),
        ThresholdParseReason::NoTimeZone
    );
    // By instant, days need no zone (they are 24 h each).
    let utc_instant = PhraseContext {
        counting: Instant,
        ..PhraseContext::DURATIONS_ONLY
    };
    assert!(matches!(
        parse_threshold("2 days", &utc_instant),
        Ok(Threshold::Days(CalendarDays { n: 2, .. }))
    ));
    assert_eq!(
        parse_threshold("2 working days", &ctx(Date))
            .unwrap()
            .describe(),
        "2 working days (de, Europe/Berlin, by date)"
    );
}

#[test]
fn date_is_never_earlier_than_instant() {
    let pairs = [
        (wd("ru", 3), wd_date("ru", 3)),
        (wd("de", 1), wd_date("de", 1)),
    ];
    let mut since = t("2025-01-01T00:00:00Z");
    while since < t("2027-12-20T00:00:00Z") {
        for (instant, date) in &pairs {
            let (i, d) = (instant.deadline_s(since), date.deadline_s(since));
            assert!(d >= i, "since {since}: date {d} < instant {i}");
            assert!(d - i < 86_400, "since {since}: more than a day later");
        }
        since += 3_907;
    }
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
    let ok = "name = \"x\"\nyear = 2026\ntime_zone = \"Europe/Berlin\"\nweekend = [\"sat\", \"sun\"]\nstatus = \"official\"\nsource = \"test\"\n";
    let err = |text: &str| CalendarYear::parse(text, "x/2026.toml").unwrap_err();
    let e = err(&format!(
        "{ok}holidays = [\n  {{ date = \"2026-02-30\", name = \"bad\" }},\n]\n"
    ));
    assert!(
        matches!(&e, CalendarError::Invalid { line: 8, key, reason: CalendarReason::BadDate, .. } if key == "holidays[0].date"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "x/2026.toml:8: holidays[0].date = \"2026-02-30\": not a YYYY-MM-DD date"
    );
    // (file text, line, reason): each refused as Invalid at that line for that reason.
    let cases = [
        (
            format!("{ok}holidays = [{{ date = \"2025-12-31\", name = \"x\" }}]\n"),
            7,
            CalendarReason::OutsideYear,
        ),
        (
            format!("{ok}working_days = [{{ date = \"2026-05-20\", name = \"wed\" }}]\n"),
            7,
            CalendarReason::WorkingDayNotWeekend,
        ),
        (
            format!(
                "{ok}holidays = [{{ date = \"2026-05-23\", name = \"a\" }}]\nworking_days = [{{ date = \"2026-05-23\", name = \"b\" }}]\n"
            ),
            8,
            CalendarReason::HolidayAndWorkingDay,
        ),
        (
            ok.replace("Europe/Berlin", "Mars/Olympus"),
            3,
            CalendarReason::UnknownTimeZone,
        ),
        (
            ok.replace("\"sun\"", "\"sunday\""),
            4,
            CalendarReason::BadWeekday,
        ),
        // Status: one of two words, and a source that is not empty; both required.
        (
            ok.replace("\"official\"", "\"draft\""),
            5,
            CalendarReason::BadStatus,
        ),
        (
            ok.replace("\"test\"", "\"  \""),
            6,
            CalendarReason::EmptySource,
        ),
    ];
    for (text, want_line, want_reason) in cases {
        match err(&text) {
            CalendarError::Invalid { line, reason, .. } => {
                assert_eq!((line, reason), (want_line, want_reason), "{text}");
            }
            e => panic!("{text}: {e:?}"),
        }
    }
    let e = err(&format!("{ok}colour = 1\n"));
    assert!(matches!(e, CalendarError::Syntax { line: 7, .. }), "{e:?}");
    let e = err(&ok.replace("status = \"official\"\n", ""));
    assert!(
        matches!(&e, CalendarError::Syntax { message, .. } if message.contains("status")),
        "{e:?}"
    );
    let y = CalendarYear::parse(&ok.replace("official", "provisional"), "x").unwrap();
    assert_eq!(
        y.status,
        calendar::YearStatus::Provisional {
            source: "test".into()
        }
    );
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
        status: calendar::YearStatus::Official {
            source: "test".into(),
        },
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
    let ctx = PhraseContext {
        calendar: Some(&c),
        time_zone: Some(&tz),
        counting: Counting::Instant,
    };
    assert!(matches!(
        parse_threshold("36h", &PhraseContext::DURATIONS_ONLY),
        Ok(Threshold::Duration { seconds: 129_600 })
    ));
    assert!(matches!(
        parse_threshold("1d12h30m5s", &PhraseContext::DURATIONS_ONLY),
        Ok(Threshold::Duration { seconds: 131_405 })
    ));
    assert!(matches!(
        parse_threshold("3 working days", &ctx),
        Ok(Threshold::WorkingDays(WorkingDays { n: 3, .. }))
    ));
    assert!(parse_threshold("1 working day", &ctx).is_ok());
    assert_eq!(
        parse_threshold("3 working days", &PhraseContext::DURATIONS_ONLY)
            .unwrap_err()
            .reason,
        ThresholdParseReason::NoCalendar
    );
    assert_eq!(
        parse_threshold("67 working days", &ctx).unwrap_err().reason,
        ThresholdParseReason::Range
    );
    assert!(parse_threshold("66 working days", &ctx).is_ok());
    for (phrase, reason) in [
        ("0h", ThresholdParseReason::Range),
        ("36", ThresholdParseReason::Syntax),
        ("", ThresholdParseReason::Syntax),
        ("49711d", ThresholdParseReason::Range),
    ] {
        let e = parse_threshold(phrase, &PhraseContext::DURATIONS_ONLY).unwrap_err();
        assert_eq!(e.reason, reason, "{phrase:?}");
    }
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
        vec![dur("default", 100, 200), dur("other", 100, 200)],
        "default",
        vec![
            group("g", "default", vec![(100, 199)], vec![]),
            group("f", "other", vec![(200, 299)], vec![]),
        ],
        vec![
            ex(ExemptionTarget::Device(7), None, None),
            ex(ExemptionTarget::Group("g".into()), Some(1_000), Some(2_000)),
        ],
    )
    .unwrap();
    use Judgement::{Exempt, Level as L};
    // (now, device, newest fix, confirmed at, judgement)
    let cases = [
        (1_500, 7, 1, 0, Exempt),
        (1_500, 150, 1, 0, Exempt),
        (1_500, 8, 1, 0, L(Level::Expired)),
        // After the window silence counts from its end.
        (2_150, 150, 1, 0, L(Level::Warned)),
        (2_099, 150, 1, 0, L(Level::Reporting)),
        // Before the window starts: judged normally.
        (900, 150, 1, 0, L(Level::Expired)),
        // Confirmation: resets only the warning, never the expiry.
        (1_250, 8, 1_000, 1_200, L(Level::Expired)),
        (1_150, 8, 1_000, 1_100, L(Level::Reporting)),
        (1_150, 8, 1_000, 0, L(Level::Warned)),
        (1_250, 250, 1_000, 1_200, L(Level::Expired)),
    ];
    for (now, device, fix, confirmed, want) in cases {
        let got = set
            .prepare(now)
            .judge_detail(device, fix, confirmed)
            .judgement;
        assert_eq!(
            got, want,
            "device {device} at {now}, fix {fix}, confirmed {confirmed}"
        );
    }
    let p = set.prepare(1_250);
    assert_eq!(p.judge_detail(250, 1_000, 1_200).expiry_from_s, 1_000);
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
    let of_year = |days: &[Date], y: i16, name: &str| -> Vec<NamedDay> {
        let days = days.iter().filter(|d| d.year() == y);
        days.map(|d| NamedDay {
            date: *d,
            name: name.into(),
        })
        .collect()
    };
    let years = (2024..=2027)
        .map(|y| CalendarYear {
            name: "p".into(),
            year: y,
            time_zone: raw.zone.into(),
            weekend: raw.weekend,
            holidays: of_year(&raw.holidays, y, "h"),
            working_days: of_year(&raw.working, y, "w"),
            status: calendar::YearStatus::Provisional {
                source: "proptest".into(),
            },
        })
        .collect();
    Arc::new(Calendar::from_years(years).unwrap())
}

/// `th`'s cut-off at `now_s` is exact (a silence from the cut-off is not due, from one second
/// earlier it is), and deadlines grow with the start of the silence (starts `now_s - a`,
/// `now_s - b`).
fn cutoff_exact_and_monotone(
    th: &Threshold,
    now_s: i64,
    a: i64,
    b: i64,
) -> Result<(), TestCaseError> {
    let c = th.cutoff_s(now_s);
    prop_assert!(th.deadline_s(c) > now_s);
    prop_assert!(th.deadline_s(c - 1) <= now_s);
    let (x, y) = (now_s - a.max(b), now_s - a.min(b));
    prop_assert!(th.deadline_s(x) <= th.deadline_s(y), "monotone");
    prop_assert_eq!(th.deadline_s(x) <= now_s, x < c);
    Ok(())
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

/// The date rule walked one civil day at a time: count the days after the fix's local date,
/// the period ends at 00:00 after the n-th working one (`all_days`: every day counts).
fn reference_date(raw: &RawCal, n: u32, since_s: i64, all_days: bool) -> i64 {
    let tz = TimeZone::get(raw.zone).unwrap();
    let working = |d: Date| {
        all_days
            || raw.working.contains(&d)
            || (!raw.holidays.contains(&d)
                && !raw.weekend[d.weekday().to_monday_zero_offset() as usize])
    };
    let mut d = tz
        .to_datetime(jiff::Timestamp::from_second(since_s).unwrap())
        .date();
    let mut left = n;
    while left > 0 {
        d = d.tomorrow().unwrap();
        if working(d) {
            left -= 1;
        }
    }
    let midnight = DateTime::from_parts(d.tomorrow().unwrap(), jiff::civil::Time::midnight());
    tz.to_timestamp(midnight).unwrap().as_second()
}

/// The scan's deadline memo (`Prepared::deadline_s`) answers exactly as
/// `Threshold::deadline_s` for every instant: a 15-minute walk through both DST changes of
/// each test zone (America/Santiago changes at midnight), alternating two policies that share
/// one memo slot, working days and calendar days, by date and by instant.
#[test]
fn the_day_memo_gives_the_deadline_of_every_instant() {
    let set = PolicySet::durations(100, 200).unwrap();
    let prepared = set.prepare(0);
    let cal = calendar("de");
    for zone in ZONES {
        let tz = TimeZone::get(zone).unwrap();
        let thresholds: Vec<Threshold> = [Counting::Date, Counting::Instant]
            .into_iter()
            .flat_map(|counting| {
                [2, 3]
                    .map(|n| {
                        Threshold::WorkingDays(WorkingDays {
                            n,
                            calendar: cal.clone(),
                            time_zone: tz.clone(),
                            counting,
                        })
                    })
                    .into_iter()
                    .chain([Threshold::Days(CalendarDays {
                        n: 2,
                        time_zone: tz.clone(),
                        counting,
                    })])
            })
            .collect();
        for (from, until) in [("2025-03-01", "2025-05-01"), ("2025-08-20", "2025-11-10")] {
            let (from_s, until_s) = (
                t(&format!("{from}T00:00:00Z")),
                t(&format!("{until}T00:00:00Z")),
            );
            for (k, since_s) in (from_s..until_s).step_by(900).enumerate() {
                for (policy, th) in thresholds.iter().enumerate() {
                    // Policies 2k and 2k+1 share memo slot k % 2.
                    let which = (k + policy / 2) % 2;
                    assert_eq!(
                        prepared.deadline_s(policy as u16, which, th, since_s),
                        th.deadline_s(since_s),
                        "{zone}, since {since_s}, {}",
                        th.describe()
                    );
                }
            }
        }
    }
}

/// `n` calendar days (`days`) or `n` working days on `raw`, counted by date in its zone.
fn date_threshold(raw: &RawCal, n: u32, days: bool) -> Threshold {
    let time_zone = TimeZone::get(raw.zone).unwrap();
    let counting = Counting::Date;
    if days {
        Threshold::Days(CalendarDays {
            n,
            time_zone,
            counting,
        })
    } else {
        let calendar = build(raw);
        Threshold::WorkingDays(WorkingDays {
            n,
            time_zone,
            calendar,
            counting,
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The memo on random calendars and walks (forwards and back by up to ~2 days a step).
    #[test]
    fn the_day_memo_matches_on_random_walks(
        raw in raw_cal(),
        n in 1u32..=10,
        days in any::<bool>(),
        start_s in 1_704_067_200i64..1_830_297_600,
        steps in proptest::collection::vec(-200_000i64..200_000, 1..60),
    ) {
        let th = date_threshold(&raw, n, days);
        let set = PolicySet::durations(100, 200).unwrap();
        let prepared = set.prepare(0);
        let mut since_s = start_s;
        for step in steps {
            since_s += step;
            prop_assert_eq!(prepared.deadline_s(0, 0, &th, since_s), th.deadline_s(since_s), "since {}", since_s);
        }
    }

    #[test]
    fn date_counting_matches_the_day_by_day_walk(
        raw in raw_cal(),
        n in 1u32..=20,
        since_s in 1_688_169_600i64..1_845_936_000,
    ) {
        let tz = TimeZone::get(raw.zone).unwrap();
        let w = WorkingDays { n, time_zone: tz.clone(), calendar: build(&raw), counting: Counting::Date };
        prop_assert_eq!(w.deadline_s(since_s), reference_date(&raw, n, since_s, false));
        let d = CalendarDays { n, time_zone: tz, counting: Counting::Date };
        prop_assert_eq!(d.deadline_s(since_s), reference_date(&raw, n, since_s, true));
    }

    #[test]
    fn date_cutoff_is_exact_and_deadlines_monotone(
        raw in raw_cal(),
        n in 1u32..=10,
        days in any::<bool>(),
        now_s in 1_704_067_200i64..1_830_297_600,
        a in 0i64..40 * 86_400,
        b in 0i64..40 * 86_400,
    ) {
        let th = date_threshold(&raw, n, days);
        cutoff_exact_and_monotone(&th, now_s, a, b)?;
    }

    #[test]
    fn working_days_match_the_day_by_day_walk(
        raw in raw_cal(),
        n in 1u32..=20,
        // 2023-07 .. 2028-06: inside and outside the covered years.
        since_s in 1_688_169_600i64..1_845_936_000,
    ) {
        let cal = build(&raw);
        let w = WorkingDays { n, time_zone: TimeZone::get(raw.zone).unwrap(), calendar: cal, counting: Counting::Instant };
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
        let th = Threshold::WorkingDays(WorkingDays { n, time_zone: TimeZone::get(raw.zone).unwrap(), calendar: cal, counting: Counting::Instant });
        cutoff_exact_and_monotone(&th, now_s, a, b)?;
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
                    counting: Counting::Instant,
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

// ---- calendar coverage ----

#[test]
fn coverage_span_is_the_last_date_whose_count_stays_inside() {
    // ru 2027 ends Wed 29, Thu 30, Fri 31 December (all working): a count of 3 working days
    // stays inside for a fix dated up to Tue 28.
    let Threshold::WorkingDays(w) = wd_date("ru", 3) else {
        unreachable!()
    };
    let c = w.coverage();
    assert_eq!(crate::rfc3339(c.from_s), "2024-12-31T21:00:00Z");
    assert_eq!(crate::rfc3339(c.until_s), "2027-12-28T21:00:00Z");
    assert_eq!(crate::rfc3339(c.deadlines_from_s), "2027-12-31T21:00:00Z");
    let th = Threshold::WorkingDays(w);
    let tue = t("2027-12-28T23:59:59+03:00");
    assert_eq!(
        th.deadline_within(tue, PastCoverage::Refuse),
        Some(t("2028-01-01T00:00:00+03:00"))
    );
    let wed = t("2027-12-29T00:00:00+03:00");
    assert_eq!(th.deadline_within(wed, PastCoverage::Refuse), None);
    assert!(th.deadline_within(wed, PastCoverage::Weekends).is_some());
    // Before the first covered day: refused too.
    assert_eq!(
        th.deadline_within(t("2024-12-31T12:00:00+03:00"), PastCoverage::Refuse),
        None
    );
    // Durations and calendar days need no calendar.
    assert!(Threshold::Duration { seconds: 5 }.coverage().is_none());
    // The provisional year is a declared fact.
    let ru = calendar("ru");
    assert_eq!(
        ru.year_status(2027).map(|s| s.as_str()),
        Some("provisional")
    );
    assert_eq!(ru.year_status(2025).map(|s| s.as_str()), Some("official"));
    assert!(ru.year_status(2026).unwrap().source().contains("2026"));
    assert_eq!(ru.year_status(2028), None);
    let cov = ru.coverage_at(t("2027-11-15T12:00:00Z"));
    assert_eq!((cov.days_left, cov.ends_soon()), (46, true));
    assert_eq!(cov.provisional_years(), [2027]);
    assert!(!ru.coverage_at(t("2027-10-31T12:00:00Z")).ends_soon());
    assert!(cov.to_string().contains("WARNING: in 46 days"), "{cov}");
}

// ---- one answer for the CLI and the scan ----

/// `fires` gives `at`; the scan's judgement agrees one second before and at `at`.
fn scan_agrees(set: &PolicySet, device: u64, fix: i64, at: Firing, level: Level) {
    let Firing::At(at) = at else {
        panic!("expected an instant, got {at:?}")
    };
    let fix = u32::try_from(fix).unwrap();
    let at = u32::try_from(at).unwrap();
    let judged = |now: u32| match set.prepare(now).judge_detail(device, fix, 0).judgement {
        Judgement::Level(l) => Some(l),
        _ => None,
    };
    assert!(
        judged(at - 1).is_none_or(|l| l < level),
        "one second before {}: {:?}",
        crate::rfc3339(at.into()),
        judged(at - 1)
    );
    assert!(
        judged(at).is_some_and(|l| l >= level),
        "at {}: {:?}",
        crate::rfc3339(at.into()),
        judged(at)
    );
}

#[test]
fn policy_when_and_the_scan_agree_on_the_docs_examples() {
    let field = one_and_three_working_days("field", "de", Counting::Date);
    let ex = |target, from: Option<&str>, until: Option<&str>| Exemption {
        target,
        from_s: from.map(|s| u32::try_from(t(s)).unwrap()),
        until_s: until.map(|s| u32::try_from(t(s)).unwrap()),
        reason: "r".into(),
    };
    let set = PolicySet::new(
        vec![dur("default", 100, 200), field.clone()],
        "default",
        vec![group("berlin", "field", vec![(1000, 1999)], vec![42])],
        vec![
            ex(
                ExemptionTarget::Group("berlin".into()),
                Some("2026-08-01T00:00:00Z"),
                Some("2026-08-15T00:00:00Z"),
            ),
            ex(ExemptionTarget::Device(7), None, None),
        ],
    )
    .unwrap();
    // The issue's case: the August window has not started when the May deadlines pass.
    // Each case: the deadlines `policy when` prints, and the scan agrees with them.
    let when = |device, fix, warning, expiry| {
        let w = set.fires(&field, Some(device), fix);
        assert_eq!(
            (w.warning, w.expiry),
            (Firing::At(t(warning)), Firing::At(t(expiry)))
        );
        scan_agrees(&set, device, fix, w.warning, Level::Warned);
        scan_agrees(&set, device, fix, w.expiry, Level::Expired);
        w
    };
    let fix = t("2026-05-22T18:00:00+02:00");
    let w = when(
        42,
        fix,
        "2026-05-27T00:00:00+02:00",
        "2026-05-29T00:00:00+02:00",
    );
    assert_eq!(w, set.fires(&field, None, fix));
    // `--days`: the days the warning counted, each with its kind.
    let days = crate::render_counted_days(
        &field.warning,
        w.warning_from_s,
        t("2026-05-27T00:00:00+02:00"),
    );
    assert_eq!(
        days.as_deref(),
        Some(
            "counted in Europe/Berlin from Fri 2026-05-22: Sat 05-23 weekend, Sun 05-24 weekend, \
             Mon 05-25 holiday (Pfingstmontag), Tue 05-26 working day 1"
        )
    );
    // A fix just before the window: the deadlines fall inside it and move after its end
    // (Sat 15 Aug; Mon 17 counted for the warning; Mon 17 - Wed 19 for the expiry).
    let fix = t("2026-07-31T12:00:00+02:00");
    when(
        1500,
        fix,
        "2026-08-18T00:00:00+02:00",
        "2026-08-20T00:00:00+02:00",
    );
    // A device outside the group is judged from its fix.
    let w = set.fires(&field, Some(5), fix);
    assert_eq!(w.warning, Firing::At(t("2026-08-04T00:00:00+02:00")));
    // Permanent: never.
    let w = set.fires(&field, Some(7), fix);
    assert_eq!((w.warning, w.expiry), (Firing::Never, Firing::Never));
    assert!(
        set.calendars_past_coverage(t("2027-12-31T22:59:59Z"))
            .is_empty()
    );
    assert_eq!(
        set.calendars_past_coverage(t("2027-12-31T23:00:00Z")),
        ["de"]
    );
    // Past the coverage: not computed, as the scan refuses to judge.
    let late = t("2027-12-30T12:00:00+01:00");
    assert_eq!(
        set.fires(&field, Some(42), late).expiry,
        Firing::PastCoverage
    );
    let at = u32::try_from(t("2028-01-10T00:00:00+01:00")).unwrap();
    assert_eq!(
        set.prepare(at)
            .judge_detail(42, u32::try_from(late).unwrap(), 0)
            .judgement,
        Judgement::PastCoverage
    );
}

#[test]
fn explain_says_why_a_device_is_not_judged_and_keeps_levels_as_the_scan_does() {
    use crate::DeviceState;
    let ru = one_and_three_working_days("ru", "ru", Counting::Instant);
    let set = PolicySet::new(
        vec![ru],
        "ru",
        Vec::new(),
        vec![Exemption {
            target: ExemptionTarget::Device(2),
            from_s: Some(u32::try_from(t("2026-03-10T00:00:00Z")).unwrap()),
            until_s: Some(u32::try_from(t("2026-04-10T00:00:00Z")).unwrap()),
            reason: "r".into(),
        }],
    )
    .unwrap();
    let fix = u32::try_from(t("2027-12-30T12:00:00+03:00")).unwrap();
    let state = |device_id, level, fix| DeviceState {
        device_id,
        last_fix_s: Some(fix),
        last_contact_s: None,
        level,
        silent_since_s: Some(fix),
    };
    let now = u32::try_from(t("2028-01-05T12:00:00+03:00")).unwrap();
    let e = crate::explain(&state(1, Level::Warned, fix), &set, None, now);
    assert_eq!(
        e.not_judged.as_deref(),
        Some(crate::NOT_JUDGED_PAST_COVERAGE)
    );
    assert_eq!(e.level_now, Level::Warned);
    assert_eq!(e.expiry_at_s, None);
    assert_eq!(e.warning_at_s, Some(t("2027-12-31T12:00:00+03:00")));
    assert!(e.to_string().contains("not judged: "), "{e}");
    assert!(
        e.to_json().contains(r#""not_judged":"a deadline"#),
        "{}",
        e.to_json()
    );
    // An exemption window that ended does not un-expire a device without a fix.
    let old_fix = u32::try_from(t("2026-03-02T12:00:00Z")).unwrap();
    let after = u32::try_from(t("2026-04-10T06:00:00Z")).unwrap();
    let e = crate::explain(&state(2, Level::Expired, old_fix), &set, None, after);
    assert_eq!((e.level_now, e.not_judged), (Level::Expired, None));
    // (The rules alone would say "reporting": counted from the window's end.)
    let judged = set.prepare(after).judge_detail(2, old_fix, 0).judgement;
    assert_eq!(judged, Judgement::Level(Level::Reporting));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `fires` (the CLI's answer) against the scan's judgement, on random exemption windows:
    /// the level is not reached one second before the answer and is reached at it; `never`
    /// means no scan ever reaches the level.
    #[test]
    fn fires_agrees_with_the_scan_on_random_windows(
        windows in proptest::collection::vec(
            (any::<bool>(), proptest::option::of(0u32..5_000), proptest::option::of(1u32..5_000)),
            0..5,
        ),
        fix in 1u32..3_000,
        warn in 1u32..800,
        extra in 1u32..800,
    ) {
        let exemptions: Vec<Exemption> = windows
            .iter()
            .filter(|(_, f, u)| match (f, u) {
                (Some(f), Some(u)) => u > f,
                _ => true,
            })
            .map(|(mine, from_s, until_s)| Exemption {
                target: ExemptionTarget::Device(if *mine { 1 } else { 2 }),
                from_s: *from_s,
                until_s: *until_s,
                reason: "r".into(),
            })
            .collect();
        let set = PolicySet::new(vec![dur("default", warn, warn + extra)], "default", Vec::new(), exemptions).unwrap();
        let p = &set.policies()[0];
        let when = set.fires(p, Some(1), i64::from(fix));
        for (firing, level) in [(when.warning, Level::Warned), (when.expiry, Level::Expired)] {
            let judged = |now: u32| match set.prepare(now).judge_detail(1, fix, 0).judgement {
                Judgement::Level(l) => Some(l),
                _ => None,
            };
            match firing {
                Firing::At(at) => {
                    let at = u32::try_from(at).unwrap();
                    prop_assert!(judged(at).is_some_and(|l| l >= level), "at {at}: {:?}", judged(at));
                    // No earlier scan sees it (sampled, and the second before).
                    for now in (fix..at).step_by(13).chain([at - 1]) {
                        prop_assert!(judged(now).is_none_or(|l| l < level), "{now} before {at}: {:?}", judged(now));
                    }
                }
                Firing::Never => {
                    // Never reached: before an exemption starts the device may still be
                    // judged (a lower level), but no scan ever sees `level`.
                    for now in (fix..12_000).step_by(7).chain([fix + warn + extra, 100_000]) {
                        prop_assert!(judged(now).is_none_or(|l| l < level), "now {now}: {:?}", judged(now));
                    }
                }
                Firing::PastCoverage => prop_assert!(false, "durations have no calendar"),
            }
        }
    }
}
