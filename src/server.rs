//! Wiring: storage, the silence table and scanner, and the QUIC endpoint, connected through
//! the narrow interfaces each side defines ([`ingest::endpoint::BatchSink`],
//! [`ingest::endpoint::Activity`], [`storage::Storage::submit`]).
//!
//! Start-up order: data directory, token key, TLS material, storage (recovers the WAL before
//! anything is accepted), silence table + scanner thread, endpoint. Shutdown runs in the
//! reverse order: the endpoint stops reading and acks what is in flight, storage flushes
//! every buffered row to Parquet and checkpoints the WAL, the scanner stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fix::DeviceId;
use ingest::endpoint::{
    AcceptedBatch, Activity, BatchSink, Endpoint, EndpointParts, SinkCallback, SinkOutcome,
};
use ingest::silence::{EventKind, Outage, PolicySet, SilenceEvent, SilenceTable};
use ingest::wire::Status;
use sys::Clock;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::events::EventLog;
use crate::events::tables::{EventTable, EventTableConfig};
use crate::events::webhook::{Webhook, json_array};

/// The server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Creating the data directory failed.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Token key.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Storage failed to open or to shut down.
    #[error("storage: {0}")]
    Storage(String),
    /// The endpoint failed to start.
    #[error(transparent)]
    Endpoint(#[from] ingest::endpoint::EndpointError),
    /// The admin endpoint could not bind.
    #[error("admin endpoint {addr}: {source}")]
    Admin {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The events log could not be opened.
    #[error("events log: {0}")]
    Events(std::io::Error),
    /// The silence policy or table settings are invalid.
    #[error("silence: {0}")]
    Policy(String),
    /// The Parquet events table could not be opened.
    #[error("events table: {0}")]
    EventTable(#[from] crate::events::tables::TableError),
}

/// Where things are on disk (printed at start).
#[derive(Debug, Clone)]
pub struct Paths {
    /// Data directory.
    pub data_dir: PathBuf,
    /// The CA file devices trust (development mode), if known.
    pub ca_path: Option<PathBuf>,
    /// Token key file.
    pub key_path: PathBuf,
    /// Parquet root.
    pub positions_dir: PathBuf,
    /// Silence events file.
    pub events_path: PathBuf,
}

/// A running server.
pub struct Server {
    endpoint: Endpoint,
    admin: Option<crate::admin::Admin>,
    storage: storage::Storage,
    lake: Option<lake::maintain::Maintenance>,
    silence: Arc<SilenceTable>,
    scanner: Scanner,
    paths: Paths,
    local_addr: SocketAddr,
    grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Server {
    /// Starts everything on the current tokio runtime.
    ///
    /// # Errors
    /// [`ServerError`] saying which part failed.
    pub async fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Self, ServerError> {
        let data_dir = cfg.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
            path: data_dir.clone(),
            source,
        })?;

        let key_path = crate::secret::key_path(&data_dir);
        let (key, key_new) = crate::secret::load_or_generate(&key_path)?;
        if key_new {
            info!(path = %key_path.display(), "generated token key");
        }

        let tls = if cfg.tls.cert_path.as_os_str().is_empty() {
            crate::tls::load_or_generate_dev(&data_dir.join("tls"), &cfg.tls.server_names)?
        } else {
            crate::tls::load(&cfg.tls.cert_path, &cfg.tls.key_path)?
        };
        if tls.generated {
            info!("generated development CA and server certificate");
        }

        let storage_cfg = cfg.storage_config();
        let positions_dir = data_dir.join("positions");
        let (storage, report) =
            storage::Storage::open(storage_cfg).map_err(|e| ServerError::Storage(e.to_string()))?;
        info!(?report, "storage opened");
        let lake = start_lake(cfg, clock.clone())?;

        let mut policies = cfg
            .silence
            .policy_set()
            .map_err(|e| ServerError::Policy(e.to_string()))?;
        let silence = Arc::new(
            SilenceTable::with_capacity(cfg.silence.devices_max)
                .map_err(|e| ServerError::Policy(e.to_string()))?,
        );
        let start_s = unix_s(clock.now_ms());
        let snapshot_path = crate::events::snapshot_path(&data_dir);
        // Restore before the endpoint starts recording; the time since the last snapshot is an
        // outage, not silence (docs/SILENCE.md, "Restarts").
        let mut outages = Vec::new();
        match crate::events::read_snapshot(&snapshot_path) {
            Ok(Some(bytes)) => match silence.restore_snapshot(&bytes) {
                Ok(info) => {
                    info!(
                        devices = info.devices,
                        taken_s = info.taken_s,
                        "silence state restored"
                    );
                    outages = info.outages;
                    if info.taken_s < start_s {
                        outages.push(Outage {
                            down_s: info.taken_s,
                            up_s: start_s,
                        });
                    }
                }
                Err(e) => {
                    error!(path = %snapshot_path.display(), error = %e, "silence snapshot refused; starting empty");
                }
            },
            Ok(None) => {}
            Err(e) => return Err(ServerError::Events(e)),
        }
        policies.set_outages(outages, cfg.silence.outages_max);
        crate::events::ExemptionLog::sync(&data_dir, policies.exemptions(), start_s)
            .map_err(ServerError::Events)?;
        let policies = Arc::new(policies);
        let events = EventLog::open(&data_dir).map_err(ServerError::Events)?;
        let events_path = events.path().to_path_buf();
        let parquet = storage::writer::ParquetOptions {
            zstd_level: cfg.storage.zstd_level,
            row_group_rows_max: cfg.storage.row_group_rows_max,
        };
        let event_table = EventTable::open(
            &data_dir,
            EventTableConfig {
                rows_max: cfg.silence.events_rows_max,
                flush_interval_ms: cfg.silence.events_flush_interval_ms,
                parquet,
            },
            policies.policies().iter().map(|p| p.name.clone()).collect(),
        )?;
        let webhook = match cfg
            .silence
            .webhook()
            .map_err(|e| ServerError::Policy(e.to_string()))?
        {
            Some(w) => {
                info!(host = %w.url.host, port = w.url.port, path = %w.url.path, "silence webhook on (plain HTTP)");
                Some(Webhook::start(w).map_err(ServerError::Events)?)
            }
            None => None,
        };
        let confirmer = Arc::new(std::sync::OnceLock::new());
        let scanner = Scanner::start(ScannerParts {
            confirmer: confirmer.clone(),
            table: silence.clone(),
            policies,
            log: events,
            event_table,
            webhook,
            data_dir: data_dir.clone(),
            parquet,
            clock: clock.clone(),
            interval: Duration::from_millis(cfg.silence.scan_interval_ms),
            snapshot_path,
            snapshot_interval_s: u32::try_from(cfg.silence.snapshot_interval_ms / 1000)
                .unwrap_or(u32::MAX),
        });

        let h3_resolution = h3o::Resolution::try_from(cfg.storage.h3_resolution)
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        let sink = Arc::new(StorageSink {
            storage: storage.clone(),
            h3_resolution,
            retry_after_ms: cfg.server.overloaded_retry_after_ms,
            jitter: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        });
        let ep_cfg = cfg.endpoint_config();
        let server_config = ingest::endpoint::server_config(tls.cert_chain, tls.key, &ep_cfg)?;
        let endpoint = Endpoint::start_with(
            EndpointParts {
                listen: cfg.server.listen,
                server_config,
                cfg: ep_cfg,
                key,
                sink,
                activity: Arc::new(SilenceActivity::new(silence.clone())),
                clock,
            },
            cfg.session_config(),
        )?;
        let _ = confirmer.set(endpoint.confirmer());
        let admin = if cfg.admin.enabled {
            let sources = crate::admin::Sources {
                endpoint: endpoint.stats(),
                storage: storage.clone(),
                silence: silence.clone(),
                explain: Some(scanner.explainer(silence.clone())),
            };
            let admin =
                crate::admin::Admin::start(cfg.admin.listen, sources).map_err(|source| {
                    ServerError::Admin {
                        addr: cfg.admin.listen,
                        source,
                    }
                })?;
            info!(addr = %admin.local_addr(), "admin endpoint listening");
            Some(admin)
        } else {
            None
        };
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| ServerError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
        let paths = Paths {
            data_dir,
            ca_path: tls.ca_path,
            key_path,
            positions_dir,
            events_path,
        };
        Ok(Self {
            endpoint,
            admin,
            storage,
            lake,
            silence,
            scanner,
            paths,
            local_addr,
            grace: Duration::from_millis(cfg.server.shutdown_grace_ms),
        })
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Paths of the files the server uses.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The silence table (read-only use: lookups for one device).
    pub fn silence(&self) -> &Arc<SilenceTable> {
        &self.silence
    }

    /// The admin endpoint's address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(crate::admin::Admin::local_addr)
    }

    /// Endpoint counters.
    pub fn endpoint_stats(&self) -> Arc<ingest::endpoint::EndpointStats> {
        self.endpoint.stats()
    }

    /// Asks a device to confirm its location over QUIC (see
    /// [`ingest::endpoint::Endpoint::request_confirm`]): sent at once when it is connected,
    /// otherwise right after its next WELCOME; one outstanding request per device.
    ///
    /// # Errors
    /// [`ingest::endpoint::ConfirmRequestError`] when the request cannot be raised.
    pub fn request_confirm(
        &self,
        device_id: DeviceId,
        reason: &str,
    ) -> Result<ingest::endpoint::ConfirmDelivery, ingest::endpoint::ConfirmRequestError> {
        self.endpoint.request_confirm(device_id, reason)
    }

    /// Runs one silence scan now (in addition to the periodic ones) and returns its events
    /// after they were written to the events log.
    pub fn scan_now(&self) -> Vec<SilenceEvent> {
        self.scanner.scan_now()
    }

    /// Explains one device's silence state now (for an admin endpoint); `None` if untracked.
    pub fn explain(&self, device_id: u64) -> Option<ingest::silence::Explanation> {
        self.scanner.explain(&self.silence, device_id)
    }

    /// Graceful shutdown: endpoint, then storage (flush + checkpoint), then the scanner.
    ///
    /// # Errors
    /// [`ServerError::Storage`] when the final flush fails.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        if let Some(admin) = self.admin {
            admin.stop();
        }
        self.endpoint.shutdown(self.grace).await;
        if let Some(lake) = self.lake {
            // Waits for at most one compaction job; ingest has stopped already.
            tokio::task::spawn_blocking(move || lake.stop())
                .await
                .map_err(|e| ServerError::Storage(e.to_string()))?;
        }
        let storage = self.storage;
        let report = tokio::task::spawn_blocking(move || storage.shutdown())
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))?
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        info!(?report, "storage shut down");
        self.scanner.stop();
        Ok(())
    }
}

/// Starts the lake's background thread (compaction, retention, vacuum of `positions`)
/// on its own handle of the table: its commits and the writer's never block each other.
fn start_lake(
    cfg: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Option<lake::maintain::Maintenance>, ServerError> {
    let table = crate::lake_cli::positions(cfg, clock.now_ms())
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let props = storage::writer::writer_properties(storage::writer::ParquetOptions {
        zstd_level: cfg.storage.zstd_level,
        row_group_rows_max: cfg.storage.row_group_rows_max,
    })
    .map_err(|e| ServerError::Storage(e.to_string()))?;
    let tables = vec![lake::maintain::MaintainedTable {
        table,
        sort_columns: vec!["h3".into(), "time".into()],
        props,
        row_group_rows: cfg.storage.row_group_rows_max as u64,
        retention_days: cfg.lake.positions_retention_days,
    }];
    lake::maintain::Maintenance::spawn(tables, cfg.lake.clone(), clock)
        .map(Some)
        .map_err(|e| ServerError::Storage(e.to_string()))
}

/// Connects the endpoint to storage.
struct StorageSink {
    storage: storage::Storage,
    h3_resolution: h3o::Resolution,
    retry_after_ms: u32,
    jitter: AtomicU64,
}

impl StorageSink {
    /// `retry_after_ms` plus up to 100% jitter, so refused devices do not come back in step.
    fn retry_after(&self) -> u32 {
        // xorshift on a shared counter: cheap, lock-free, good enough for jitter.
        let mut x = self
            .jitter
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let base = u64::from(self.retry_after_ms.max(1));
        u32::try_from(base + x % base).unwrap_or(u32::MAX)
    }
}

impl BatchSink for StorageSink {
    fn submit(&self, batch: AcceptedBatch, done: SinkCallback) {
        // The decoded column buffers move into storage's batch: no copy.
        let mut fixes = storage::FixBatch::new(
            batch.device_id,
            batch.batch_seq,
            batch.received_at_ms,
            batch.fixes,
        );
        // H3 indexing runs here, on the connection's tokio worker, so it spreads over cores
        // instead of serialising in the storage writer thread.
        storage::index::index_batch(&mut fixes, self.h3_resolution);
        let retry_after_ms = self.retry_after();
        // storage drops the callback uncalled when `submit` fails, so keep `done` where both
        // paths can take it; exactly one of them does.
        let slot = Arc::new(std::sync::Mutex::new(Some(done)));
        let take = |slot: &std::sync::Mutex<Option<SinkCallback>>| {
            slot.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        };
        let callback: storage::Done = {
            let slot = slot.clone();
            Box::new(move |r: Result<storage::Committed, storage::CommitError>| {
                if let Some(done) = take(&slot) {
                    done(commit_outcome(r, retry_after_ms));
                }
            })
        };
        if let Err(e) = self.storage.submit(fixes, callback) {
            if let Some(done) = take(&slot) {
                let (status, reason) = match e {
                    storage::SubmitError::Overloaded { .. } => {
                        (Status::Overloaded, format!("server busy: {e}"))
                    }
                    storage::SubmitError::ShuttingDown => {
                        (Status::ShuttingDown, "server is shutting down".to_string())
                    }
                    other => (Status::Internal, other.to_string()),
                };
                let retry_after_ms = if status.is_retryable() {
                    retry_after_ms
                } else {
                    0
                };
                done(SinkOutcome {
                    status,
                    reason,
                    retry_after_ms,
                });
            }
        }
    }
}

fn commit_outcome(
    r: Result<storage::Committed, storage::CommitError>,
    retry_after_ms: u32,
) -> SinkOutcome {
    match r {
        Ok(storage::Committed::Stored { .. }) => SinkOutcome::ok(),
        Ok(storage::Committed::Duplicate) => SinkOutcome {
            status: Status::Duplicate,
            reason: "batch already stored".into(),
            retry_after_ms: 0,
        },
        Err(e) => {
            let status = match &e {
                storage::CommitError::StaleSequence { .. } => Status::StaleSequence,
                storage::CommitError::DiskFull => Status::Overloaded,
                storage::CommitError::ShuttingDown => Status::ShuttingDown,
                _ => Status::StorageUnavailable,
            };
            if status != Status::StaleSequence {
                warn!(error = %e, "batch not committed");
            }
            let retry = if status.is_retryable() {
                retry_after_ms
            } else {
                0
            };
            SinkOutcome {
                status,
                reason: e.to_string(),
                retry_after_ms: retry,
            }
        }
    }
}

/// Turns scan events into confirm-location requests: a device that just crossed its warning
/// threshold is asked to confirm (now if connected, else at its next connection); one whose
/// silence ended with a fresh fix no longer needs to.
fn request_confirmations(confirmer: &ingest::endpoint::Confirmer, events: &[SilenceEvent]) {
    for e in events {
        // The silence table only holds ids the endpoint authenticated.
        let Ok(device_id) = DeviceId::try_from(e.device_id) else {
            continue;
        };
        match e.kind {
            EventKind::Warned => {
                let reason = "no fix past the warning threshold; please confirm your location";
                match confirmer.request_confirm(device_id, reason) {
                    Ok(delivery) => {
                        info!(
                            device_id = e.device_id,
                            ?delivery,
                            "confirm-location requested"
                        );
                    }
                    Err(err) => {
                        warn!(device_id = e.device_id, error = %err, "confirm-location not requested");
                    }
                }
            }
            EventKind::Resumed { .. } => {
                confirmer.cancel_confirm(device_id);
            }
            EventKind::Expired | EventKind::Confirmed { .. } => {}
        }
    }
}

/// Feeds device activity into the silence table.
struct SilenceActivity {
    table: Arc<SilenceTable>,
    /// Unix second of the last "not tracked" warning: a full table would otherwise log once
    /// per frame of every untracked device.
    last_warning_s: AtomicU64,
}

impl SilenceActivity {
    fn new(table: Arc<SilenceTable>) -> Self {
        Self {
            table,
            last_warning_s: AtomicU64::new(0),
        }
    }

    /// Logs a recording failure at most once a minute (with the count of devices tracked).
    fn warn_untracked(&self, device_id: DeviceId, now_ms: i64, e: &ingest::silence::RecordError) {
        let now_s = u64::from(unix_s(now_ms));
        let last = self.last_warning_s.load(Ordering::Relaxed);
        if now_s >= last.saturating_add(60)
            && self
                .last_warning_s
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                %device_id,
                tracked = self.table.len(),
                error = %e,
                "device not tracked for silence (repeats are silenced for a minute)"
            );
        }
    }
}

fn unix_s(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

impl Activity for SilenceActivity {
    fn on_contact(&self, device_id: DeviceId, now_ms: i64) {
        if let Err(e) = self.table.record_contact(device_id.get(), unix_s(now_ms)) {
            self.warn_untracked(device_id, now_ms, &e);
        }
    }

    fn on_fixes_stored(&self, device_id: DeviceId, newest_fix_ms: i64, now_ms: i64) {
        // A fix claiming to be newer than now (within the allowed skew) counts as now.
        let fix_s = unix_s(newest_fix_ms.min(now_ms));
        if let Err(e) = self.table.record_fix(device_id.get(), fix_s) {
            self.warn_untracked(device_id, now_ms, &e);
        }
    }

    fn on_confirm(&self, device_id: DeviceId, kind: ingest::wire::ConfirmKind, at_ms: i64) {
        if let Err(e) = self
            .table
            .record_confirmation(device_id.get(), unix_s(at_ms))
        {
            warn!(%device_id, ?kind, error = %e, "confirmation not recorded");
        }
    }
}

/// The periodic silence scanner (its own thread: a sweep is CPU work, not async work). It also
/// snapshots the table every `snapshot_interval_s` and when stopped.
struct Scanner {
    tx: crossbeam_channel::Sender<ScanRequest>,
    thread: Option<std::thread::JoinHandle<()>>,
    policies: Arc<PolicySet>,
    clock: Arc<dyn Clock>,
}

enum ScanRequest {
    Now(crossbeam_channel::Sender<Vec<SilenceEvent>>),
    Stop,
}

struct ScannerParts {
    /// Set once the endpoint runs; the scanner asks warned devices to confirm through it.
    confirmer: Arc<std::sync::OnceLock<ingest::endpoint::Confirmer>>,
    table: Arc<SilenceTable>,
    policies: Arc<PolicySet>,
    log: EventLog,
    /// The Parquet `events` table (published on the scanner's cadence).
    event_table: EventTable,
    /// Posts each scan's events, when configured.
    webhook: Option<Webhook>,
    /// Where `device_status/` goes.
    data_dir: PathBuf,
    /// Encoding of the device status table.
    parquet: storage::writer::ParquetOptions,
    clock: Arc<dyn Clock>,
    interval: Duration,
    snapshot_path: PathBuf,
    snapshot_interval_s: u32,
}

/// Writes the `device_status` table once per UTC day (and at start when today's is missing).
struct DailyStatus {
    data_dir: PathBuf,
    parquet: storage::writer::ParquetOptions,
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
        if crate::events::tables::device_status_exists(&self.data_dir, now_s) {
            self.day = Some(today);
            return;
        }
        match crate::events::tables::write_device_status(
            &sys::fs::RealFs,
            &self.data_dir,
            now_s,
            table,
            set,
            self.parquet,
        ) {
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

impl Scanner {
    fn start(parts: ScannerParts) -> Self {
        let ScannerParts {
            confirmer,
            table,
            policies,
            mut log,
            mut event_table,
            webhook,
            data_dir,
            parquet,
            clock,
            interval,
            snapshot_path,
            snapshot_interval_s,
        } = parts;
        let mut daily = DailyStatus {
            data_dir,
            parquet,
            day: None,
        };
        let (tx, rx) = crossbeam_channel::bounded::<ScanRequest>(4);
        let set = policies.clone();
        let thread_clock = clock.clone();
        let thread = std::thread::Builder::new()
            .name("hexflow-scanner".into())
            .spawn(move || {
                let clock = thread_clock;
                let mut events = Vec::new();
                let mut snapshot_buf = Vec::new();
                let mut last_snapshot_s = unix_s(clock.now_ms());
                let snapshot = |now_s: u32, buf: &mut Vec<u8>| {
                    table.encode_snapshot(now_s, set.outages(), buf);
                    if let Err(e) = crate::events::write_atomic(&snapshot_path, buf) {
                        error!(path = %snapshot_path.display(), error = %e, "cannot write silence snapshot");
                    }
                };
                let mut scan = |events: &mut Vec<SilenceEvent>, event_table: &mut EventTable| {
                    events.clear();
                    let now_s = unix_s(clock.now_ms());
                    let prepared = set.prepare(now_s);
                    if let Err(e) = table.scan(now_s, &prepared, events) {
                        // Only one scanner thread exists, so this is a bug; say so loudly.
                        error!(error = %e, "silence scan refused");
                    }
                    let name = &|i: u16| {
                        set.policies()
                            .get(usize::from(i))
                            .map_or_else(String::new, |p| p.name.clone())
                    };
                    if let Err(e) = log.append(events, name) {
                        error!(path = %log.path().display(), error = %e, "cannot write events log");
                    }
                    let now_ms = clock.now_ms();
                    if let Err(e) = event_table.push(events, now_ms) {
                        error!(error = %e, dropped_total = event_table.dropped(), "events table full and not publishable; events dropped from the table (still in the events log)");
                    }
                    if event_table.due(now_ms) {
                        if let Err(e) = event_table.flush() {
                            error!(error = %e, buffered = event_table.buffered(), "cannot publish events table; retrying at the next scan");
                        }
                    }
                    if let Some(webhook) = &webhook {
                        if !events.is_empty() {
                            let lines: Vec<String> = events
                                .iter()
                                .map(|e| e.to_json_line(&name(e.policy)))
                                .collect();
                            webhook.enqueue(json_array(&lines), events.len());
                        }
                    }
                    if let Some(confirmer) = confirmer.get() {
                        request_confirmations(confirmer, events);
                    }
                    now_s
                };
                daily.maybe_write(unix_s(clock.now_ms()), &table, &set);
                loop {
                    let now_s = match rx.recv_timeout(interval) {
                        Ok(ScanRequest::Now(reply)) => {
                            let now_s = scan(&mut events, &mut event_table);
                            // Before the reply, so a caller sees today's status once it returns.
                            daily.maybe_write(now_s, &table, &set);
                            let _ = reply.send(events.clone());
                            now_s
                        }
                        Ok(ScanRequest::Stop)
                        | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            if let Err(e) = event_table.flush() {
                                error!(error = %e, buffered = event_table.buffered(), "cannot publish events table at shutdown; those rows are only in the events log");
                            }
                            snapshot(unix_s(clock.now_ms()), &mut snapshot_buf);
                            // The webhook (if any) is dropped with this thread: its attempt in
                            // flight finishes, queued bodies are counted as dropped.
                            return;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            let now_s = scan(&mut events, &mut event_table);
                            daily.maybe_write(now_s, &table, &set);
                            now_s
                        }
                    };
                    if now_s.saturating_sub(last_snapshot_s) >= snapshot_interval_s {
                        snapshot(now_s, &mut snapshot_buf);
                        last_snapshot_s = now_s;
                    }
                }
            })
            .expect("spawning the scanner thread");
        Self {
            tx,
            thread: Some(thread),
            policies,
            clock,
        }
    }

    fn explain(
        &self,
        table: &SilenceTable,
        device_id: u64,
    ) -> Option<ingest::silence::Explanation> {
        let state = table.get(device_id)?;
        Some(ingest::silence::explain(
            &state,
            &self.policies,
            table.confirmation(device_id),
            unix_s(self.clock.now_ms()),
        ))
    }

    /// A closure explaining one device as JSON, for the admin endpoint.
    fn explainer(&self, table: Arc<SilenceTable>) -> crate::admin::Explainer {
        let policies = self.policies.clone();
        let clock = self.clock.clone();
        Arc::new(move |device_id| {
            let state = table.get(device_id)?;
            let e = ingest::silence::explain(
                &state,
                &policies,
                table.confirmation(device_id),
                unix_s(clock.now_ms()),
            );
            Some(e.to_json())
        })
    }

    fn scan_now(&self) -> Vec<SilenceEvent> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if self.tx.send(ScanRequest::Now(reply_tx)).is_err() {
            return Vec::new();
        }
        reply_rx.recv().unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = self.tx.send(ScanRequest::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Prints where things are, for the operator.
pub fn print_paths(paths: &Paths, local_addr: SocketAddr) {
    println!("hexflow listening on {local_addr} (QUIC, ALPN hexflow/1)");
    println!("  data directory: {}", paths.data_dir.display());
    if let Some(ca) = &paths.ca_path {
        println!("  devices trust:  {}", ca.display());
    }
    println!("  token key:      {}", paths.key_path.display());
    println!("  parquet:        {}", paths.positions_dir.display());
    println!("  silence events: {}", paths.events_path.display());
}
