#![allow(clippy::unwrap_used)]

use sys::SimClock;
use sys::sim::SimFs;

use super::*;
use crate::{ExemptionConfig, Level};

/// 2026-11-25T10:00:00Z.
const T0_S: i64 = 1_795_600_800;

struct NoConfirm;

impl ConfirmPort for NoConfirm {
    fn request_confirm(&self, _: fix::DeviceId, _: &str) {}
    fn cancel_confirm(&self, _: fix::DeviceId) {}
    fn outstanding(&self) -> Vec<ConfirmRequestRecord> {
        Vec::new()
    }
    fn restore_confirm(&self, _: &ConfirmRequestRecord) -> bool {
        true
    }
}

fn start(fs: &SimFs, clock: &Arc<SimClock>, config: &SilenceConfig) -> Result<Silence, StartError> {
    Silence::start(SilenceParts {
        config,
        data_dir: Path::new("/data"),
        parquet: ParquetOptions {
            zstd_level: 1,
            row_group_rows_max: 1024,
        },
        fs: Arc::new(fs.clone()),
        clock: clock.clone(),
        confirm: Arc::new(NoConfirm),
    })
}

fn config() -> SilenceConfig {
    SilenceConfig {
        devices_max: 100,
        scan_interval_ms: 3_600_000,
        ..SilenceConfig::default()
    }
}

fn secs(s: i64) -> u32 {
    u32::try_from(s).unwrap()
}

/// A restart restores the table from the snapshot taken at stop, and the downtime in between
/// is an outage: not counted as silence.
#[test]
fn a_restart_restores_the_table_and_does_not_count_the_downtime() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    let clock = SimClock::new(T0_S * 1000);
    // The scans are this test's own (`scan_now`): with the hourly interval of `config()`,
    // advancing the clock by 36 h let the background scanner take the warning first (seen
    // once under load), and `scan_now` then found nothing.
    let cfg = SilenceConfig {
        scan_interval_ms: 30 * 86_400_000,
        ..config()
    };
    let s = start(&fs, &clock, &cfg).unwrap();
    assert_eq!(s.events_path(), Path::new("/data/events/silence.jsonl"));
    s.table().record_fix(3, secs(T0_S)).unwrap();
    s.stop();
    // Down for a day and a half; up again: 2 days after the fix, but half a day of it was
    // counted, so no warning yet.
    clock.advance_ms(129_600_000);
    let s = start(&fs, &clock, &cfg).unwrap();
    assert_eq!(s.table().get(3).unwrap().last_fix_s, Some(secs(T0_S)));
    clock.advance_ms(43_200_000);
    assert!(s.scan_now().is_empty(), "the downtime does not count");
    let explained = s.explainer().explain(3).unwrap();
    assert_eq!(explained.level_now, Level::Reporting);
    assert_eq!(
        explained.warning_at_s,
        Some(T0_S + 2 * 86_400 + 129_600),
        "the warning moved by the outage"
    );
    clock.advance_ms(129_600_000);
    let events = s.scan_now();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].to, Level::Warned);
    assert!(s.explainer().explain(99).is_none());
    s.stop();
}

#[test]
fn a_damaged_snapshot_is_refused_and_the_table_starts_empty() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data/silence")).unwrap();
    fs.put_durable(
        &SnapshotFile::path_in(Path::new("/data")),
        b"HXSILNC\0 not a snapshot",
    );
    let clock = SimClock::new(T0_S * 1000);
    let s = start(&fs, &clock, &config()).unwrap();
    assert!(s.table().is_empty());
    s.stop();
}

#[test]
fn start_refuses_bad_parts_with_typed_errors() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    let clock = SimClock::new(T0_S * 1000);
    let mut cfg = config();
    cfg.default_policy = "nope".into();
    assert!(matches!(
        start(&fs, &clock, &cfg),
        Err(StartError::Config(SilenceConfigError::Rules(_)))
    ));
    let mut cfg = config();
    cfg.outages_max = 0;
    assert!(matches!(
        start(&fs, &clock, &cfg),
        Err(StartError::Config(SilenceConfigError::Invalid {
            key: "silence.outages_max",
            ..
        }))
    ));
    // The events directory cannot be created: the exemptions log (first to need it) says so.
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    fs.put_durable(Path::new("/data/events"), b"a file, not a directory");
    let cfg = SilenceConfig {
        exemptions: vec![ExemptionConfig {
            device: Some(1),
            group: None,
            from: None,
            until: None,
            reason: "r".into(),
        }],
        ..config()
    };
    let e = start(&fs, &clock, &cfg).unwrap_err();
    assert!(matches!(e, StartError::ExemptionLog { .. }), "{e}");
}
