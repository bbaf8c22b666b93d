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
    ok(&|c| c.events_flush_interval_ms = 0);
    ok(&|c| c.events_flush_interval_ms = 86_400_000);
    check(
        &|c| c.events_flush_interval_ms = 86_400_001,
        "silence.events_flush_interval_ms",
    );
    ok(&|c| c.events_rows_max = 1);
    ok(&|c| c.events_rows_max = 10_000_000);
    check(&|c| c.events_rows_max = 0, "silence.events_rows_max");
    check(
        &|c| c.events_rows_max = 10_000_001,
        "silence.events_rows_max",
    );
    ok(&|c| c.webhook_queue_max = 1);
    check(&|c| c.webhook_queue_max = 0, "silence.webhook_queue_max");
    ok(&|c| c.webhook_attempts_max = 1);
    ok(&|c| c.webhook_attempts_max = 100);
    check(
        &|c| c.webhook_attempts_max = 0,
        "silence.webhook_attempts_max",
    );
    check(
        &|c| c.webhook_attempts_max = 101,
        "silence.webhook_attempts_max",
    );
    ok(&|c| c.webhook_timeout_ms = 10);
    check(&|c| c.webhook_timeout_ms = 9, "silence.webhook_timeout_ms");
    ok(&|c| c.webhook_backoff_ms = c.webhook_backoff_max_ms);
    check(
        &|c| c.webhook_backoff_ms = c.webhook_backoff_max_ms + 1,
        "silence.webhook_backoff_ms",
    );
    check(
        &|c| {
            c.webhook_backoff_max_ms = 3_600_001;
        },
        "silence.webhook_backoff_max_ms",
    );
    assert_eq!(SilenceConfig::default().webhook().unwrap(), None);
    check(
        &|c| c.webhook_url = "https://example.invalid/x".into(),
        "silence.webhook_url",
    );
    let c = SilenceConfig {
        webhook_url: "http://127.0.0.1:9/hook".into(),
        ..SilenceConfig::default()
    };
    c.validate().unwrap();
    let w = c.webhook().unwrap().unwrap();
    assert_eq!((w.url.port, w.url.path.as_str()), (9, "/hook"));
    assert_eq!(w.attempts_max, 8);
}

#[test]
fn table_scanner_and_snapshot_keys_at_their_edges() {
    check(
        &|c| c.expiry_after_s = c.warning_after_s,
        "silence.expiry_after_s",
    );
    check(&|c| c.warning_after_s = 0, "silence.expiry_after_s");
    ok(&|c| c.devices_max = 1);
    check(&|c| c.devices_max = 0, "silence.devices_max");
    check(
        &|c| c.devices_max = SilenceTable::DEVICES_MAX_LIMIT + 1,
        "silence.devices_max",
    );
    ok(&|c| c.scan_interval_ms = 1);
    check(&|c| c.scan_interval_ms = 0, "silence.scan_interval_ms");
    ok(&|c| c.snapshot_interval_ms = 1_000);
    check(
        &|c| c.snapshot_interval_ms = 999,
        "silence.snapshot_interval_ms",
    );
    ok(&|c| c.outages_max = 1);
    ok(&|c| c.outages_max = 10_000);
    check(&|c| c.outages_max = 0, "silence.outages_max");
    check(&|c| c.outages_max = 10_001, "silence.outages_max");
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

const CAL_2026: &str = "name = \"xx\"\nyear = 2026\ntime_zone = \"UTC\"\nweekend = [\"sat\", \"sun\"]\nholidays = []\nworking_days = []\n";

fn with_calendar_policy(dir: &Path) -> SilenceConfig {
    SilenceConfig {
        calendars_dir: dir.to_path_buf(),
        policies: vec![PolicyConfig {
            name: "p".into(),
            warning: "1 working day".into(),
            expiry: "2 working days".into(),
            calendar: Some("xx".into()),
            time_zone: None,
            confirm_resets: "full".into(),
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
    assert!(e.contains("/cal/xx/2026.toml:5: holidays[0].date"), "{e}");
    // A good one: the policy, its calendar zone and the group are in the set.
    fs.put_durable(&dir.join("xx/2026.toml"), CAL_2026.as_bytes());
    let set = c.policy_set_with_fs(&fs).unwrap();
    let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "p"]);
    assert_eq!(set.policy("p").unwrap().confirm_resets, ConfirmResets::Full);
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
