//! The scanner thread: the executor of the pure scan.
//!
//! # Contract
//!
//! * One thread (`hexflow-scanner`): a sweep is CPU work, not async work. It scans every
//!   `scan_interval_ms` (measured on the [`Clock`]) and whenever [`Scanner::scan_now`] asks,
//!   reading `now` from the [`Clock`] for each scan.
//! * Each scan's events go to the sinks in this order: the JSON Lines events log (written and
//!   fsynced first: it is the durable record), the Parquet `events` table (published on its
//!   own cadence), the webhook (queued, never waited for), then confirm-location requests
//!   through the [`ConfirmPort`] ([`confirm_actions`] says which). A failing sink is logged
//!   and retried at the next scan; it never stops the scanner or the other sinks.
//! * The daily `device_status` table is written once per UTC day: at start when today's file
//!   is missing, else by the first scan of the day (before [`Scanner::scan_now`] returns).
//! * The table is snapshotted ([`SnapshotFile::save`]) once `snapshot_interval_s` has passed
//!   since the last snapshot time (a failed save is logged and tried again at the next one),
//!   and at stop, after the `events` table's last flush. The snapshot keeps the outstanding
//!   confirm-location requests ([`ConfirmPort::outstanding`]); those of the snapshot the
//!   server started from are handed back to the port ([`ConfirmPort::restore_confirm`]) at
//!   every scan until it takes them, so a device's answer after a restart is still matched.
//! * Requests are cancelled when the device's silence ends, when it expires, and when an
//!   exemption covering it comes into force (checked at a scan after a window's `from`
//!   passed, and at the first scan after start).
//!
//! Never: blocks recorders (the table scan is lock-free for them), waits for the webhook,
//! reads `Instant`/`SystemTime`, or writes a file other than through [`sys::fs::Fs`].

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use fix::DeviceId;
use storage::wait::{Recv, deadline_after_ms, recv_before};
use storage::writer::ParquetOptions;
use sys::Clock;
use sys::fs::Fs;
use tracing::{error, info, warn};

use crate::log::EventLog;
use crate::snapshot_file::SnapshotFile;
use crate::tables::{EventTable, device_status_exists, write_device_status};
use crate::webhook::{Webhook, json_array};
use crate::{EventKind, PolicySet, SilenceEvent, SilenceTable, unix_s};

/// Where the scanner sends confirm-location requests. The binary implements it with the QUIC
/// endpoint's registry of connected devices; the implementation reports (logs) each outcome,
/// and must not block: it is called on the scanner thread.
pub trait ConfirmPort: Send + Sync {
    /// Asks `device_id` to confirm its location: now if it is connected, else right after its
    /// next connection. `reason` is shown to the device.
    fn request_confirm(&self, device_id: DeviceId, reason: &str);
    /// Withdraws an outstanding request of `device_id` (its silence ended, it expired, or it
    /// became exempt).
    fn cancel_confirm(&self, device_id: DeviceId);
    /// Every outstanding request (kept in the silence snapshot).
    fn outstanding(&self) -> Vec<ConfirmRequestRecord>;
    /// Makes a request from the snapshot the server started from outstanding again (same id,
    /// time and reason). `false` when the port cannot take it yet (the endpoint is not
    /// running): the scanner offers it again at its next scan.
    fn restore_confirm(&self, request: &ConfirmRequestRecord) -> bool;
}

/// An outstanding confirm-location request as the silence snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmRequestRecord {
    /// The device asked.
    pub device_id: DeviceId,
    /// The request's id (never 0), quoted by the device's answer.
    pub request_id: u64,
    /// When it was raised (server clock, Unix ms).
    pub requested_at_ms: i64,
    /// Why (at most 256 bytes).
    pub reason: String,
}

/// The reason sent with every confirm-location request the scanner raises.
pub const CONFIRM_REASON: &str = "no fix past the warning threshold; please confirm your location";

/// One thing a scan's events ask of the [`ConfirmPort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmAction {
    /// The device just crossed its warning threshold: ask it to confirm.
    Request(DeviceId),
    /// The device's silence ended with a fresh fix, or it expired: it no longer needs to.
    Cancel(DeviceId),
}

/// The confirm-location actions `events` call for, in event order. Pure.
pub fn confirm_actions(events: &[SilenceEvent]) -> impl Iterator<Item = ConfirmAction> + '_ {
    events.iter().filter_map(|e| {
        // The table only holds ids the endpoint authenticated, so every id converts.
        let device_id = DeviceId::try_from(e.device_id).ok()?;
        match e.kind {
            EventKind::Warned => Some(ConfirmAction::Request(device_id)),
            // An expired device is past asking (docs/PROTOCOL.md §9: cancelled on expiry).
            EventKind::Resumed { .. } | EventKind::Expired => {
                Some(ConfirmAction::Cancel(device_id))
            }
            EventKind::Confirmed { .. } | EventKind::NotJudged => None,
        }
    })
}

/// Everything the scanner thread owns.
pub struct ScannerParts {
    /// The table it sweeps.
    pub table: Arc<SilenceTable>,
    /// The policies it judges by.
    pub policies: Arc<PolicySet>,
    /// The JSON Lines events log.
    pub log: EventLog,
    /// The Parquet `events` table (published on the scanner's cadence).
    pub event_table: EventTable,
    /// Posts each scan's events, when configured.
    pub webhook: Option<Webhook>,
    /// Where confirm-location requests go.
    pub confirm: Arc<dyn ConfirmPort>,
    /// The snapshot file.
    pub snapshot: SnapshotFile,
    /// The file layer for the `device_status` table.
    pub fs: Arc<dyn Fs>,
    /// Where `device_status/` goes.
    pub data_dir: PathBuf,
    /// Encoding of the `device_status` table.
    pub parquet: ParquetOptions,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// Time between periodic scans.
    pub scan_interval_ms: u64,
    /// Time between snapshots.
    pub snapshot_interval_s: u32,
    /// Outstanding confirm requests from the snapshot the server started from, to hand back
    /// to `confirm`.
    pub restored_requests: Vec<ConfirmRequestRecord>,
}

impl std::fmt::Debug for ScannerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScannerParts")
            .field("data_dir", &self.data_dir)
            .field("scan_interval_ms", &self.scan_interval_ms)
            .field("snapshot_interval_s", &self.snapshot_interval_s)
            .finish_non_exhaustive()
    }
}

enum ScanRequest {
    Now(Sender<Vec<SilenceEvent>>),
    Stop,
}

/// The running scanner thread. Dropping it without [`Scanner::stop`] stops it too (the
/// thread sees its request channel close), without waiting for it.
#[derive(Debug)]
pub struct Scanner {
    tx: Sender<ScanRequest>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scanner {
    /// Starts the thread. It writes today's `device_status` file first when it is missing.
    ///
    /// # Errors
    /// The OS error when the thread cannot be spawned.
    pub fn start(parts: ScannerParts) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<ScanRequest>(4);
        let thread = std::thread::Builder::new()
            .name("hexflow-scanner".into())
            .spawn(move || ScanLoop::new(parts).run(&rx))?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// Runs one scan now (in addition to the periodic ones) and returns its events after every
    /// sink has had them (the events log is written, today's `device_status` exists). Empty
    /// when the thread is gone.
    pub fn scan_now(&self) -> Vec<SilenceEvent> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if self.tx.send(ScanRequest::Now(reply_tx)).is_err() {
            return Vec::new();
        }
        reply_rx.recv().unwrap_or_default()
    }

    /// Stops the thread after its last `events` table flush and snapshot, and waits for it.
    pub fn stop(mut self) {
        let _ = self.tx.send(ScanRequest::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes the `device_status` table once per UTC day (and at start when today's is missing).
struct DailyStatus {
    fs: Arc<dyn Fs>,
    data_dir: PathBuf,
    parquet: ParquetOptions,
    /// The UTC day (days since 1970) whose file is known to exist.
    day: Option<u32>,
}

impl DailyStatus {
    /// Writes today's file unless it was written (or found) already; a failure is logged and
    /// retried at the next scan.
    fn maybe_write(&mut self, now_s: u32, table: &SilenceTable, set: &PolicySet) {
        let today = now_s / 86_400;
        if self.day == Some(today) {
            return;
        }
        if device_status_exists(&*self.fs, &self.data_dir, now_s) {
            self.day = Some(today);
            return;
        }
        match write_device_status(&*self.fs, &self.data_dir, now_s, table, set, self.parquet) {
            Ok((path, rows)) => {
                info!(path = %path.display(), rows, "device status written");
                self.day = Some(today);
            }
            Err(e) => {
                error!(error = %e, "cannot write device status; retrying at the next scan");
            }
        }
    }
}

/// The scanner thread's state between scans.
struct ScanLoop {
    table: Arc<SilenceTable>,
    set: Arc<PolicySet>,
    log: EventLog,
    event_table: EventTable,
    webhook: Option<Webhook>,
    confirm: Arc<dyn ConfirmPort>,
    snapshot: SnapshotFile,
    daily: DailyStatus,
    clock: Arc<dyn Clock>,
    scan_interval_ms: u64,
    snapshot_interval_s: u32,
    /// The last scan's events (reused: cleared per scan).
    events: Vec<SilenceEvent>,
    snapshot_buf: Vec<u8>,
    last_snapshot_s: u32,
    /// The UTC day (Unix days) of the last "calendar coverage has ended" log line.
    coverage_logged_day: Option<u32>,
    /// Restored requests the port has not taken yet (kept in snapshots meanwhile).
    unrestored: Vec<ConfirmRequestRecord>,
    /// The previous scan's `now` (exemption windows that started since then are checked).
    last_scan_s: Option<u32>,
}

impl ScanLoop {
    fn new(p: ScannerParts) -> Self {
        let last_snapshot_s = unix_s(p.clock.now_ms());
        Self {
            daily: DailyStatus {
                fs: p.fs,
                data_dir: p.data_dir,
                parquet: p.parquet,
                day: None,
            },
            table: p.table,
            set: p.policies,
            log: p.log,
            event_table: p.event_table,
            webhook: p.webhook,
            confirm: p.confirm,
            snapshot: p.snapshot,
            clock: p.clock,
            scan_interval_ms: p.scan_interval_ms,
            snapshot_interval_s: p.snapshot_interval_s,
            events: Vec::new(),
            snapshot_buf: Vec::new(),
            last_snapshot_s,
            coverage_logged_day: None,
            unrestored: p.restored_requests,
            last_scan_s: None,
        }
    }

    /// Scans every `scan_interval_ms` and on request until told to stop (or until the
    /// [`Scanner`] is dropped), then flushes and snapshots.
    fn run(mut self, rx: &Receiver<ScanRequest>) {
        self.daily
            .maybe_write(unix_s(self.clock.now_ms()), &self.table, &self.set);
        loop {
            let deadline_us = deadline_after_ms(&*self.clock, self.scan_interval_ms);
            let now_s = match recv_before(rx, &*self.clock, deadline_us) {
                Recv::Msg(ScanRequest::Now(reply)) => {
                    let now_s = self.scan();
                    // Before the reply, so a caller sees today's status once it returns.
                    self.daily.maybe_write(now_s, &self.table, &self.set);
                    let _ = reply.send(self.events.clone());
                    now_s
                }
                Recv::Msg(ScanRequest::Stop) | Recv::Disconnected => {
                    self.finish();
                    return;
                }
                Recv::Deadline => {
                    let now_s = self.scan();
                    self.daily.maybe_write(now_s, &self.table, &self.set);
                    now_s
                }
            };
            if now_s.saturating_sub(self.last_snapshot_s) >= self.snapshot_interval_s {
                self.save_snapshot(now_s);
                self.last_snapshot_s = now_s;
            }
        }
    }

    /// One scan at the clock's `now`, its events handed to every sink; returns that `now`.
    fn scan(&mut self) -> u32 {
        self.events.clear();
        self.restore_requests();
        let now_s = unix_s(self.clock.now_ms());
        let prepared = self.set.prepare(now_s);
        if let Err(e) = self.table.scan(now_s, &prepared, &mut self.events) {
            // Only one scanner thread exists, so this is a bug; say so loudly.
            error!(error = %e, "silence scan refused");
        }
        self.publish();
        self.cancel_exempted(now_s);
        self.last_scan_s = Some(now_s);
        self.log_ended_coverage(now_s);
        now_s
    }

    /// Hands the snapshot's outstanding requests back to the port (until it takes them).
    fn restore_requests(&mut self) {
        if self.unrestored.is_empty() {
            return;
        }
        let confirm = &self.confirm;
        self.unrestored.retain(|r| !confirm.restore_confirm(r));
        if self.unrestored.is_empty() {
            info!("outstanding confirm requests restored from the snapshot");
        }
    }

    /// Cancels the outstanding requests of devices an exemption now covers, when a window
    /// came into force since the last scan (or this is the first scan). The port's list is
    /// only read then: exemptions starting are rare.
    fn cancel_exempted(&self, now_s: u32) {
        if !self.set.exemption_began(self.last_scan_s, now_s) {
            return;
        }
        for r in self.confirm.outstanding() {
            if matches!(
                self.set.exemption(r.device_id.get(), now_s),
                crate::ExemptionState::Exempt(_)
            ) {
                info!(
                    device_id = r.device_id.get(),
                    request_id = r.request_id,
                    "confirm request cancelled: the device is exempt"
                );
                self.confirm.cancel_confirm(r.device_id);
            }
        }
    }

    /// Once per UTC day while a calendar in use has ended: what the scan does about it
    /// (`past_coverage`: devices not judged, or counted by weekends only).
    fn log_ended_coverage(&mut self, now_s: u32) {
        let day = now_s / 86_400;
        if self.coverage_logged_day == Some(day) {
            return;
        }
        let ended = self.set.calendars_past_coverage(i64::from(now_s));
        if ended.is_empty() {
            return;
        }
        self.coverage_logged_day = Some(day);
        match self.set.past_coverage() {
            crate::PastCoverage::Refuse => error!(calendars = ?ended,
                "calendar coverage has ended: devices whose deadline needs later days are NOT judged (past_coverage = refuse); add the next year's file"),
            crate::PastCoverage::Weekends => warn!(calendars = ?ended,
                "calendar coverage has ended: later days count by weekends only, holidays ignored (past_coverage = weekends); add the next year's file"),
        }
    }

    fn policy_name(set: &PolicySet, i: u16) -> String {
        set.policies()
            .get(usize::from(i))
            .map_or_else(String::new, |p| p.name.clone())
    }

    /// Hands the last scan's events to the sinks, in the order of the module doc.
    fn publish(&mut self) {
        let (set, events) = (&*self.set, &self.events);
        if let Err(e) = self.log.append(events, |i| Self::policy_name(set, i)) {
            error!(path = %self.log.path().display(), error = %e, "cannot write events log");
        }
        let now_ms = self.clock.now_ms();
        let table = &mut self.event_table;
        if let Err(e) = table.push(events, now_ms) {
            error!(error = %e, dropped_total = table.dropped(), "events table full and not publishable; events dropped from the table (still in the events log)");
        }
        if table.due(now_ms)
            && let Err(e) = table.flush()
        {
            error!(error = %e, buffered = table.buffered(), "cannot publish events table; retrying at the next scan");
        }
        if let Some(webhook) = &self.webhook
            && !events.is_empty()
        {
            let lines: Vec<String> = events
                .iter()
                .map(|e| e.to_json_line(&Self::policy_name(set, e.policy)))
                .collect();
            webhook.enqueue(json_array(&lines), events.len());
        }
        for action in confirm_actions(events) {
            match action {
                ConfirmAction::Request(d) => self.confirm.request_confirm(d, CONFIRM_REASON),
                ConfirmAction::Cancel(d) => self.confirm.cancel_confirm(d),
            }
        }
    }

    fn save_snapshot(&mut self, now_s: u32) {
        let mut requests = self.confirm.outstanding();
        requests.extend(self.unrestored.iter().cloned());
        if let Err(e) = self.snapshot.save(
            &self.table,
            now_s,
            self.set.outages(),
            &requests,
            &mut self.snapshot_buf,
        ) {
            error!(path = %self.snapshot.path().display(), error = %e, "cannot write silence snapshot");
        }
    }

    /// At stop: the `events` table's last flush, then the last snapshot. The webhook (if any)
    /// is dropped with this thread: its attempt in flight finishes, queued bodies are counted
    /// as dropped.
    fn finish(mut self) {
        if let Err(e) = self.event_table.flush() {
            error!(error = %e, buffered = self.event_table.buffered(), "cannot publish events table at shutdown; those rows are only in the events log");
        }
        self.save_snapshot(unix_s(self.clock.now_ms()));
    }
}

#[cfg(test)]
mod tests;
