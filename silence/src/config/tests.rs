#![allow(clippy::unwrap_used)]

use std::path::Path;

use sys::sim::SimFs;

use super::*;

fn check(f: &dyn Fn(&mut SilenceConfig), key: &str) {
    let mut c = SilenceConfig::default();
    f(&mut c);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains(key), "{key}: {e}");
}

/// Each edge: a change to the defaults, and the key its refusal names ("" = accepted).
type Edge<'a> = (&'a dyn Fn(&mut SilenceConfig), &'a str);

fn edges(cases: &[Edge<'_>]) {
    for (change, key) in cases {
        match *key {
            "" => ok(*change),
            key => check(*change, key),
        }
    }
}

fn ok(f: &dyn Fn(&mut SilenceConfig)) {
    let mut c = SilenceConfig::default();
    f(&mut c);
    c.validate().unwrap();
}

#[test]
fn defaults_are_valid() {
    SilenceConfig::default().validate().unwrap();
}

#[test]
fn silence_event_and_webhook_keys_at_their_edges() {
    edges(&[
        (&|c| c.events_flush_interval_ms = 0, ""),
        (&|c| c.events_flush_interval_ms = 86_400_000, ""),
        (
            &|c| c.events_flush_interval_ms = 86_400_001,
            "silence.events_flush_interval_ms",
        ),
        (&|c| c.events_rows_max = 1, ""),
        (&|c| c.events_rows_max = 10_000_000, ""),
        (&|c| c.events_rows_max = 0, "silence.events_rows_max"),
        (
            &|c| c.events_rows_max = 10_000_001,
            "silence.events_rows_max",
        ),
        (&|c| c.webhook_queue_max = 1, ""),
        (&|c| c.webhook_queue_max = 0, "silence.webhook_queue_max"),
        (&|c| c.webhook_attempts_max = 1, ""),
        (&|c| c.webhook_attempts_max = 100, ""),
        (
            &|c| c.webhook_attempts_max = 0,
            "silence.webhook_attempts_max",
        ),
        (
            &|c| c.webhook_attempts_max = 101,
            "silence.webhook_attempts_max",
        ),
        (&|c| c.webhook_timeout_ms = 10, ""),
        (&|c| c.webhook_timeout_ms = 9, "silence.webhook_timeout_ms"),
        (&|c| c.webhook_backoff_ms = c.webhook_backoff_max_ms, ""),
        (
            &|c| c.webhook_backoff_ms = c.webhook_backoff_max_ms + 1,
            "silence.webhook_backoff_ms",
        ),
        (
            &|c| {
                c.webhook_backoff_max_ms = 3_600_001;
            },
            "silence.webhook_backoff_max_ms",
        ),
    ]);
    assert_eq!(SilenceConfig::default().webhook().unwrap(), None);
    edges(&[
        (
            &|c| c.webhook_url = "ftp://example.invalid/x".into(),
            "silence.webhook_url",
        ),
        (&|c| c.webhook_url = "https://example.invalid/x".into(), ""),
    ]);
    let c = SilenceConfig {
        webhook_url: "http://127.0.0.1:9/hook".into(),
        ..SilenceConfig::default()
    };
    c.validate().unwrap();
    let w = c.webhook().unwrap().unwrap();
    assert_eq!((w.url.port, w.url.path.as_str()), (9, "/hook"));
    assert_eq!((w.attempts_max, w.ca_path), (8, None));
    let c = SilenceConfig {
        webhook_url: "https://example.invalid/hook".into(),
        webhook_ca_path: "/etc/hexflow/hook-ca.pem".into(),
        ..SilenceConfig::default()
    };
    let w = c.webhook().unwrap().unwrap();
    assert_eq!(w.url.port, 443);
    assert_eq!(w.ca_path, Some(PathBuf::from("/etc/hexflow/hook-ca.pem")));
}

#[test]
fn table_scanner_and_snapshot_keys_at_their_edges() {
    edges(&[
        (
            &|c| c.expiry_after_s = c.warning_after_s,
            "silence.expiry_after_s",
        ),
        (&|c| c.warning_after_s = 0, "silence.expiry_after_s"),
        (&|c| c.devices_max = 1, ""),
        (&|c| c.devices_max = 0, "silence.devices_max"),
        (
            &|c| c.devices_max = SilenceTable::DEVICES_MAX_LIMIT + 1,
            "silence.devices_max",
        ),
        (&|c| c.scan_interval_ms = 1, ""),
        (&|c| c.scan_interval_ms = 0, "silence.scan_interval_ms"),
        (&|c| c.snapshot_interval_ms = 1_000, ""),
        (
            &|c| c.snapshot_interval_ms = 999,
            "silence.snapshot_interval_ms",
        ),
        (&|c| c.outages_max = 1, ""),
        (&|c| c.outages_max = 10_000, ""),
        (&|c| c.outages_max = 0, "silence.outages_max"),
        (&|c| c.outages_max = 10_001, "silence.outages_max"),
    ]);
    // The default policy's thresholds must fit the table's u32 seconds.
    let c = SilenceConfig {
        warning_after_s: 1,
        expiry_after_s: u64::from(u32::MAX) + 1,
        ..SilenceConfig::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("silence.expiry_after_s"), "{e}");
}

#[test]
fn unknown_keys_are_named_and_missing_keys_take_their_default() {
    let c: SilenceConfig = toml::from_str("scan_interval_ms = 5\n").unwrap();
    assert_eq!(
        c,
        SilenceConfig {
            scan_interval_ms: 5,
            ..SilenceConfig::default()
        }
    );
    let e = toml::from_str::<SilenceConfig>("scan_interval = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("scan_interval"), "{e}");
    let e = toml::from_str::<SilenceConfig>(
        "policies = [{ name = \"p\", warning = \"1h\", expiry = \"2h\", colour = \"red\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("colour"), "{e}");
}

const CAL_2026: &str = "name = \"xx\"\nyear = 2026\ntime_zone = \"UTC\"\nweekend = [\"sat\", \"sun\"]\nstatus = \"official\"\nsource = \"test\"\nholidays = []\nworking_days = []\n";

fn with_calendar_policy(dir: &Path) -> SilenceConfig {
    SilenceConfig {
        calendars_dir: dir.to_path_buf(),
        policies: vec![PolicyConfig {
            name: "p".into(),
            warning: "1 working day".into(),
            expiry: "2 working days".into(),
            calendar: Some("xx".into()),
            time_zone: None,
            confirm_resets: "warning".into(),
            counting: "instant".into(),
        }],
        groups: vec![GroupConfig {
            name: "g".into(),
            policy: "p".into(),
            ranges: vec![[10, 19]],
            devices: vec![3],
        }],
        ..SilenceConfig::default()
    }
}

#[test]
fn policy_set_reads_calendars_through_fs() {
    let fs = SimFs::new();
    let dir = Path::new("/cal");
    let c = with_calendar_policy(dir);
    // No directory: the read error names it.
    let e = c.policy_set_with_fs(&fs).unwrap_err();
    assert!(
        matches!(&e, SilenceConfigError::CalendarRead { path, .. } if path == &dir.join("xx")),
        "{e}"
    );
    // A directory without *.toml files.
    fs.create_dir_all(&dir.join("xx")).unwrap();
    fs.put_durable(&dir.join("xx/README"), b"no calendars here");
    let e = c.policy_set_with_fs(&fs).unwrap_err();
    assert!(
        matches!(&e, SilenceConfigError::CalendarEmpty { calendar, .. } if calendar == "xx"),
        "{e}"
    );
    // A broken file is refused with its file and line.
    fs.put_durable(
        &dir.join("xx/2026.toml"),
        CAL_2026
            .replace(
                "holidays = []",
                "holidays = [{ date = \"2026-13-01\", name = \"x\" }]",
            )
            .as_bytes(),
    );
    let e = c.policy_set_with_fs(&fs).unwrap_err().to_string();
    assert!(e.contains("/cal/xx/2026.toml:7: holidays[0].date"), "{e}");
    // A good one: the policy, its calendar zone and the group are in the set.
    fs.put_durable(&dir.join("xx/2026.toml"), CAL_2026.as_bytes());
    let set = c.policy_set_with_fs(&fs).unwrap();
    let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "p"]);
    assert_eq!(
        set.policy("p").unwrap().confirm_resets,
        ConfirmResets::Warning
    );
    assert_eq!(set.past_coverage(), crate::rules::PastCoverage::Refuse);
    assert_eq!(set.assignment(3).group, Some(0));
    assert_eq!(set.assignment(15).policy, 1);
    assert_eq!(set.assignment(20).policy, 0);
}

#[test]
fn policy_entries_are_refused_with_their_key() {
    let fs = SimFs::new();
    let dir = Path::new("/cal");
    fs.create_dir_all(&dir.join("xx")).unwrap();
    fs.put_durable(&dir.join("xx/2026.toml"), CAL_2026.as_bytes());
    let refused = |f: &dyn Fn(&mut SilenceConfig)| {
        let mut c = with_calendar_policy(dir);
        f(&mut c);
        c.policy_set_with_fs(&fs).unwrap_err().to_string()
    };
    let e = refused(&|c| c.policies[0].warning = "soon".into());
    assert!(e.contains("silence.policies \"p\".warning"), "{e}");
    let e = refused(&|c| c.policies[0].time_zone = Some("Mars/Olympus".into()));
    assert!(e.contains("silence.policies \"p\".time_zone"), "{e}");
    let e = refused(&|c| c.policies[0].confirm_resets = "half".into());
    assert!(e.contains("silence.policies \"p\".confirm_resets"), "{e}");
    // "full" (the expiry counted from a confirmation) was removed; the error says why.
    let e = refused(&|c| c.policies[0].confirm_resets = "full".into());
    assert!(e.contains("never restarts the expiry clock"), "{e}");
    let e = refused(&|c| c.policies[0].counting = "calendar".into());
    assert!(e.contains("silence.policies \"p\".counting"), "{e}");
    let e = refused(&|c| c.past_coverage = "guess".into());
    assert!(e.contains("silence.past_coverage"), "{e}");
    let e = refused(&|c| c.groups[0].policy = "nope".into());
    assert!(e.contains("nope"), "{e}");
    let e = refused(&|c| {
        c.exemptions = vec![ExemptionConfig {
            device: Some(1),
            group: Some("g".into()),
            from: None,
            until: None,
            reason: "both".into(),
        }];
    });
    assert!(e.contains("silence.exemptions[0]"), "{e}");
    let e = refused(&|c| {
        c.exemptions = vec![ExemptionConfig {
            device: Some(1),
            group: None,
            from: Some("yesterday".into()),
            until: None,
            reason: "r".into(),
        }];
    });
    assert!(e.contains("silence.exemptions[0].from"), "{e}");
}

/// The shipped calendars: all load, every German state calendar is the nationwide `de` plus
/// its own holidays, and the examples the docs name hold.
#[test]
fn shipped_calendars_load_and_german_states_extend_de() {
    let c = SilenceConfig {
        calendars_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/calendars"),
        ..SilenceConfig::default()
    };
    let cals = c.calendars_with_fs(&sys::fs::RealFs).unwrap();
    let names: Vec<&str> = cals.iter().map(|c| c.name()).collect();
    let states = [
        "BB", "BE", "BW", "BY", "HB", "HE", "HH", "MV", "NI", "NW", "RP", "SH", "SL", "SN", "ST",
        "TH",
    ];
    let mut expected = vec!["de".to_string()];
    expected.extend(states.iter().map(|s| format!("de-{s}")));
    expected.push("ru".into());
    assert_eq!(names, expected);
    let by = |n: &str| cals.iter().find(|c| c.name() == n).unwrap();
    let de = by("de");
    let date = |s: &str| s.parse::<jiff::civil::Date>().unwrap();
    for s in states {
        let st = by(&format!("de-{s}"));
        assert_eq!(st.years(), (2025, 2027), "{s}");
        assert_eq!(st.time_zone_name(), "Europe/Berlin");
        let (first, last) = st.covered_days();
        for day in first..=last {
            let d = crate::calendar::date_of_epoch_day(day);
            // Every nationwide holiday is one in every state.
            if !de.is_working_date(d) {
                assert!(!st.is_working_date(d), "{s} {d}");
            }
        }
        for y in 2025..=2027 {
            assert_eq!(st.year_status(y).unwrap().as_str(), "official", "{s} {y}");
        }
    }
    // The docs' example: Mon 2027-03-08 (Frauentag) is a holiday in Berlin, not nationwide.
    assert!(de.is_working_date(date("2027-03-08")));
    assert!(!by("de-BE").is_working_date(date("2027-03-08")));
    assert!(!by("de-BE").is_working_date(date("2025-05-08")));
    assert!(by("de-BE").is_working_date(date("2026-05-08")));
    assert!(!by("de-BY").is_working_date(date("2026-01-06")));
    assert!(!by("de-NW").is_working_date(date("2026-06-04")));
    assert!(!by("de-SN").is_working_date(date("2026-11-18")));
    assert!(!by("de-TH").is_working_date(date("2027-09-20")));
    assert!(!by("de-SL").is_working_date(date("2025-08-15")));
    assert!(by("de-BY").is_working_date(date("2025-08-15")));
    assert!(!by("de-NI").is_working_date(date("2025-10-31")));
    assert!(by("de-NW").is_working_date(date("2025-10-31")));
}
