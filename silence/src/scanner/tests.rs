#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Mutex;

use sys::SimClock;
use sys::sim::{OpKind, SimFs};

use super::*;
use crate::Level;
use crate::log::EventLog;
use crate::tables::EventTableConfig;

/// 2026-11-25T10:00:00Z.
const T0_S: i64 = 1_795_600_800;
const DAY_S: i64 = 86_400;

/// The endpoint's registry in miniature: the actions asked of it, in order, and the
/// requests outstanding (one per device, ids from 1); `restore_confirm` is refused until
/// `ready` (the endpoint not yet running).
#[derive(Debug, Default)]
struct RecordedPort(
    Mutex<Vec<ConfirmAction>>,
    Mutex<std::collections::BTreeMap<u64, ConfirmRequestRecord>>,
    std::sync::atomic::AtomicBool,
);

impl RecordedPort {
    fn ready() -> Arc<Self> {
        let port = Self::default();
        port.2.store(true, std::sync::atomic::Ordering::SeqCst);
        Arc::new(port)
    }
}

impl ConfirmPort for RecordedPort {
    fn request_confirm(&self, device_id: DeviceId, reason: &str) {
        assert_eq!(reason, CONFIRM_REASON);
        self.0
            .lock()
            .unwrap()
            .push(ConfirmAction::Request(device_id));
        let mut out = self.1.lock().unwrap();
        let request_id = out.values().map(|r| r.request_id).max().unwrap_or(0) + 1;
        out.entry(device_id.get())
            .or_insert_with(|| ConfirmRequestRecord {
                device_id,
                request_id,
                requested_at_ms: 0,
                reason: reason.into(),
            });
    }
    fn cancel_confirm(&self, device_id: DeviceId) {
        self.0
            .lock()
            .unwrap()
            .push(ConfirmAction::Cancel(device_id));
        self.1.lock().unwrap().remove(&device_id.get());
    }
    fn outstanding(&self) -> Vec<ConfirmRequestRecord> {
        self.1.lock().unwrap().values().cloned().collect()
    }
    fn restore_confirm(&self, request: &ConfirmRequestRecord) -> bool {
        if !self.2.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        self.1
            .lock()
            .unwrap()
            .entry(request.device_id.get())
            .or_insert_with(|| request.clone());
        true
    }
}

fn event(device_id: u64, kind: EventKind) -> SilenceEvent {
    SilenceEvent {
        device_id,
        kind,
        policy: 0,
        from: Level::Reporting,
        to: Level::Warned,
        last_fix_s: 1,
        last_contact_s: 0,
        at_s: 10,
        threshold_s: 5,
    }
}

#[test]
fn warned_devices_are_asked_to_confirm_and_expired_or_resumed_ones_no_longer() {
    let d = |id| DeviceId::try_from(id).unwrap();
    let events = [
        event(1, EventKind::Warned),
        event(2, EventKind::Expired),
        event(3, EventKind::Resumed { silent_since_s: 1 }),
        event(4, EventKind::Confirmed { confirmed_at_s: 9 }),
        event(0, EventKind::Warned),
    ];
    let got: Vec<ConfirmAction> = confirm_actions(&events).collect();
    assert_eq!(
        got,
        [
            ConfirmAction::Request(d(1)),
            ConfirmAction::Cancel(d(2)),
            ConfirmAction::Cancel(d(3))
        ]
    );
}

struct Rig {
    fs: SimFs,
    clock: Arc<SimClock>,
    table: Arc<SilenceTable>,
    port: Arc<RecordedPort>,
    scanner: Scanner,
}

const DATA: &str = "/data";

/// The scan interval of the scanners these tests start: longer than any test moves its
/// clock, so every scan is a `scan_now` and the events a test expects are the ones that
/// call returns. (With a shorter interval the scanner thread may see a clock jump first and
/// scan on its own: the events then come from that periodic scan, not from `scan_now`.)
const NO_PERIODIC_SCAN_MS: u64 = 10 * 365 * 86_400_000;

fn start_with(
    fs: &SimFs,
    clock: &Arc<SimClock>,
    table: &Arc<SilenceTable>,
    port: &Arc<RecordedPort>,
    policies: PolicySet,
    restored_requests: Vec<ConfirmRequestRecord>,
    scan_interval_ms: u64,
) -> Scanner {
    let data = Path::new(DATA);
    let fs_arc: Arc<dyn Fs> = Arc::new(fs.clone());
    let parquet = ParquetOptions {
        zstd_level: 1,
        row_group_rows_max: 1024,
    };
    Scanner::start(ScannerParts {
        table: table.clone(),
        policies: Arc::new(policies),
        log: EventLog::open(&*fs_arc, data).unwrap(),
        event_table: EventTable::open_with_fs(
            fs_arc.clone(),
            data,
            EventTableConfig {
                rows_max: 100,
                flush_interval_ms: 0,
                parquet,
            },
            vec!["default".into()],
        )
        .unwrap(),
        webhook: None,
        confirm: port.clone(),
        snapshot: SnapshotFile::new(fs_arc.clone(), data),
        fs: fs_arc,
        data_dir: data.to_path_buf(),
        parquet,
        clock: clock.clone(),
        scan_interval_ms,
        snapshot_interval_s: 300,
        restored_requests,
    })
    .unwrap()
}

/// The rigs' policy: warning after 2 days, expiry after 3.
fn two_and_three_days() -> PolicySet {
    PolicySet::durations(2 * 86_400, 3 * 86_400).unwrap()
}

fn rig() -> Rig {
    rig_with(two_and_three_days(), NO_PERIODIC_SCAN_MS)
}

fn rig_with(policies: PolicySet, scan_interval_ms: u64) -> Rig {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(DATA)).unwrap();
    let clock = SimClock::new(T0_S * 1000);
    let table = Arc::new(SilenceTable::with_capacity(100).unwrap());
    let port = RecordedPort::ready();
    let scanner = start_with(
        &fs,
        &clock,
        &table,
        &port,
        policies,
        Vec::new(),
        scan_interval_ms,
    );
    Rig {
        fs,
        clock,
        table,
        port,
        scanner,
    }
}

fn secs(s: i64) -> u32 {
    u32::try_from(s).unwrap()
}

fn files(fs: &SimFs, under: &str) -> Vec<String> {
    fs.files_under(&Path::new(DATA).join(under))
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// One scan through every sink, all on the simulated file system and clock: events log,
/// `events` table, `device_status`, confirm requests; the snapshot at stop.
#[test]
fn a_scan_reaches_every_sink_in_order() {
    let r = rig();
    r.table.record_fix(1, secs(T0_S)).unwrap();
    r.table.record_fix(2, secs(T0_S)).unwrap();
    assert!(r.scanner.scan_now().is_empty());
    assert_eq!(
        files(&r.fs, "device_status"),
        ["/data/device_status/date=2026-11-25/part-20261125.parquet"]
    );
    r.clock.advance_ms(2 * 86_400 * 1000);
    let events = r.scanner.scan_now();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.kind == EventKind::Warned));
    let log = r.fs.read(&EventLog::path_in(Path::new(DATA))).unwrap();
    let log = String::from_utf8(log).unwrap();
    let lines: Vec<String> = events.iter().map(|e| e.to_json_line("default")).collect();
    assert_eq!(log, lines.join("\n") + "\n");
    assert_eq!(
        files(&r.fs, "events"),
        [
            "/data/events/date=2026-11-27/part-00000000000000000001-00000000000000000002.parquet",
            "/data/events/silence.jsonl"
        ]
    );
    let mut asked = r.port.0.lock().unwrap().clone();
    asked.sort_by_key(|a| format!("{a:?}"));
    let d = |id| DeviceId::try_from(id).unwrap();
    assert_eq!(
        asked,
        [ConfirmAction::Request(d(1)), ConfirmAction::Request(d(2))]
    );
    // A new UTC day: its device status is written by that day's first scan.
    assert_eq!(files(&r.fs, "device_status").len(), 2);
    // A fix ends device 1's silence: its request is withdrawn.
    r.table.record_fix(1, secs(T0_S + 2 * DAY_S)).unwrap();
    let events = r.scanner.scan_now();
    assert_eq!(events.len(), 1);
    assert_eq!(
        r.port.0.lock().unwrap().last(),
        Some(&ConfirmAction::Cancel(d(1)))
    );
    r.scanner.stop();
    let snapshot = SnapshotFile::new(Arc::new(r.fs.clone()), Path::new(DATA));
    let restored = SilenceTable::with_capacity(100).unwrap();
    let info = restored
        .restore_snapshot(&snapshot.load().unwrap().unwrap())
        .unwrap();
    assert_eq!(info.taken_s, secs(T0_S + 2 * DAY_S));
    assert_eq!(restored.get(2), r.table.get(2));
    assert_eq!(restored.get(2).unwrap().level, Level::Warned);
}

/// A snapshot that cannot be written is reported and written at the next snapshot time; the
/// scans go on meanwhile.
#[test]
fn a_failed_snapshot_is_retried_at_the_next_snapshot_time() {
    let r = rig();
    let snapshot = SnapshotFile::new(Arc::new(r.fs.clone()), Path::new(DATA));
    // A scan first: the thread runs, so its snapshot times count from T0.
    r.scanner.scan_now();
    // `scan_now` replies before the scan's snapshot step; the reply to the next request
    // comes after it.
    let scan = |r: &Rig| {
        r.scanner.scan_now();
        r.scanner.scan_now();
    };
    r.table.record_fix(1, secs(T0_S)).unwrap();
    r.fs.fail_under(OpKind::Rename, &Path::new(DATA).join("silence"), 28);
    r.clock.advance_ms(300_000);
    scan(&r);
    assert_eq!(snapshot.load().unwrap(), None, "the rename failed");
    assert!(
        r.fs.files_under(&Path::new(DATA).join("silence"))
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".tmp")),
        "the save was attempted"
    );
    r.fs.clear_path_faults();
    // Not yet due again: the failed attempt counts as this interval's snapshot.
    r.clock.advance_ms(299_000);
    scan(&r);
    assert_eq!(snapshot.load().unwrap(), None);
    r.clock.advance_ms(1_000);
    scan(&r);
    let restored = SilenceTable::with_capacity(100).unwrap();
    let info = restored
        .restore_snapshot(&snapshot.load().unwrap().unwrap())
        .unwrap();
    assert_eq!(info.taken_s, secs(T0_S + 600));
    assert_eq!(restored.get(1), r.table.get(1));
    r.scanner.stop();
}

/// The periodic scan runs when the clock says the interval passed, not on the wall clock.
#[test]
fn periodic_scans_follow_the_clock() {
    let r = rig_with(two_and_three_days(), 3_600_000);
    r.table.record_fix(7, secs(T0_S)).unwrap();
    r.clock.advance_ms(2 * 86_400 * 1000);
    let log = EventLog::path_in(Path::new(DATA));
    // The scanner's next deadline is one interval (an hour) after it last looked at the
    // clock; move the clock in steps of ten minutes until a periodic scan has run. The wall
    // clock only bounds the test.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while r.fs.read(&log).unwrap().is_empty() {
        assert!(std::time::Instant::now() < give_up, "no periodic scan");
        r.clock.advance_ms(600_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(r.table.get(7).unwrap().level, Level::Warned);
    r.scanner.stop();
}

/// A device that is warned (asked to confirm) and then comes under an exemption window has its
/// request cancelled by the first scan after the window's `from`; one whose window has not
/// begun keeps it.
#[test]
fn an_exemption_coming_into_force_cancels_the_request() {
    let window = |device, from_s: i64| crate::Exemption {
        target: crate::ExemptionTarget::Device(device),
        from_s: Some(secs(from_s)),
        until_s: Some(secs(from_s + 30 * DAY_S)),
        reason: "maintenance".into(),
    };
    let (starts_s, later_s) = (T0_S + 2 * DAY_S + 3_600, T0_S + 20 * DAY_S);
    let policies = PolicySet::new(
        two_and_three_days().policies().to_vec(),
        "default",
        Vec::new(),
        vec![window(1, starts_s), window(2, later_s)],
    )
    .unwrap();
    let Rig {
        clock,
        table,
        port,
        scanner,
        ..
    } = rig_with(policies, NO_PERIODIC_SCAN_MS);
    table.record_fix(1, secs(T0_S)).unwrap();
    table.record_fix(2, secs(T0_S)).unwrap();
    scanner.scan_now();
    clock.advance_ms(2 * 86_400 * 1000);
    assert_eq!(scanner.scan_now().len(), 2, "both warned");
    assert_eq!(port.outstanding().len(), 2, "both asked");
    clock.advance_ms(3_600 * 1000);
    scanner.scan_now();
    let d = |id| DeviceId::try_from(id).unwrap();
    let left: Vec<DeviceId> = port.outstanding().iter().map(|r| r.device_id).collect();
    assert_eq!(
        left,
        [d(2)],
        "device 1's window began: its request is cancelled"
    );
    assert_eq!(
        port.0.lock().unwrap().last(),
        Some(&ConfirmAction::Cancel(d(1)))
    );
    // Nothing more is cancelled while no other window begins.
    let actions = port.0.lock().unwrap().len();
    clock.advance_ms(600 * 1000);
    scanner.scan_now();
    assert_eq!(port.0.lock().unwrap().len(), actions);
    scanner.stop();
}

/// Outstanding requests are kept in the snapshot and handed back to the port after a restart
/// (retried while the port is not ready), with their ids, so an answer is still matched.
#[test]
fn outstanding_requests_survive_a_restart() {
    let r = rig();
    r.table.record_fix(1, secs(T0_S)).unwrap();
    r.scanner.scan_now();
    r.clock.advance_ms(2 * 86_400 * 1000);
    assert_eq!(r.scanner.scan_now().len(), 1);
    let before = r.port.outstanding();
    assert_eq!(before.len(), 1);
    r.scanner.stop();
    // Restart: the table and the requests come back from the snapshot.
    let snapshot = SnapshotFile::new(Arc::new(r.fs.clone()), Path::new(DATA));
    let table = Arc::new(SilenceTable::with_capacity(100).unwrap());
    let info = table
        .restore_snapshot(&snapshot.load().unwrap().unwrap())
        .unwrap();
    assert_eq!(info.requests, before);
    let port = Arc::new(RecordedPort::default());
    let policies = two_and_three_days();
    let scanner = start_with(
        &r.fs,
        &r.clock,
        &table,
        &port,
        policies,
        info.requests,
        NO_PERIODIC_SCAN_MS,
    );
    // Not ready yet: kept, and still written to the next snapshot.
    scanner.scan_now();
    assert!(port.outstanding().is_empty());
    r.clock.advance_ms(300 * 1000);
    scanner.scan_now();
    scanner.scan_now();
    let again = SilenceTable::with_capacity(100).unwrap();
    let kept = again
        .restore_snapshot(&snapshot.load().unwrap().unwrap())
        .unwrap();
    assert_eq!(kept.requests, before, "kept while the port was not ready");
    // Ready: handed over at the next scan, same id; the device is not asked anew.
    port.2.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(scanner.scan_now().is_empty(), "still warned, no new event");
    assert_eq!(port.outstanding(), before);
    assert!(port.0.lock().unwrap().is_empty(), "no new request raised");
    scanner.stop();
}
