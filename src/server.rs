//! Wiring: storage, the silence table and scanner, and the QUIC endpoint, connected through
//! the narrow interfaces each side defines ([`ingest::endpoint::BatchSink`],
//! [`ingest::endpoint::Activity`], [`storage::Storage::submit`]).
//!
//! Start-up order: data directory, token key, TLS material, storage (recovers the WAL before
//! anything is accepted), silence table + scanner thread, endpoint. Shutdown runs in the
//! reverse order: the endpoint stops reading and acks what is in flight, storage flushes
//! every buffered row to Parquet and checkpoints the WAL, the scanner stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fix::DeviceId;
use ingest::endpoint::{
    AcceptedBatch, Activity, BatchSink, Confirmer, Endpoint, EndpointParts, SinkCallback,
    SinkOutcome,
};
use ingest::wire::Status;
use silence::{ConfirmPort, Silence, SilenceEvent, SilenceParts, SilenceTable, unix_s};
use sys::Clock;
use tracing::{info, warn};

use crate::config::Config;

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
    /// The token key ring or the revocation file could not be loaded.
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Storage failed to open (its data directory, lock, WAL replay or threads).
    #[error("storage: {0}")]
    StorageOpen(#[from] storage::OpenError),
    /// The final flush and checkpoint failed; the WAL still holds every acked batch.
    #[error("storage shutdown: {0}")]
    StorageShutdown(#[from] storage::ShutdownError),
    /// The shutdown task panicked or was cancelled before storage shut down.
    #[error("storage shutdown task: {0}")]
    ShutdownTask(#[from] tokio::task::JoinError),
    /// The lake's positions table could not be opened.
    #[error("lake: {0}")]
    Lake(#[from] lake::TableError),
    /// The Parquet writer properties are invalid (zstd level, row-group size).
    #[error("parquet writer properties: {0}")]
    WriterProperties(#[from] parquet::errors::ParquetError),
    /// The lake's maintenance thread could not be spawned.
    #[error("lake maintenance thread: {0}")]
    LakeThread(#[source] std::io::Error),
    /// The endpoint's bound address could not be read back from its socket.
    #[error("reading the endpoint's local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// `storage.h3_resolution` is not an H3 resolution (0..=15).
    #[error("storage.h3_resolution: {0}")]
    H3Resolution(#[from] h3o::error::InvalidResolution),
    /// The endpoint failed to start.
    #[error(transparent)]
    Endpoint(#[from] ingest::endpoint::EndpointError),
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// Silence tracking could not start (its configuration, snapshot, logs, tables or
    /// threads; the error says which).
    #[error("silence: {0}")]
    Silence(#[from] silence::StartError),
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
    silence: Silence,
    revocations: RevocationReload,
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
        // 0700: location data is personal data (sys::fs creates every file 0600).
        sys::fs::Fs::create_dir_all(&sys::fs::RealFs, &data_dir).map_err(|source| {
            ServerError::DataDir {
                path: data_dir.clone(),
                source,
            }
        })?;

        let (auth, key_path) = load_secrets(cfg, &data_dir)?;
        let revocations = RevocationReload::start(&cfg.auth, auth.clone());
        let tls = load_tls(cfg, &data_dir)?;

        let storage_cfg = cfg.storage_config();
        let positions_dir = data_dir.join("positions");
        let (storage, report) = storage::Storage::open(storage_cfg)?;
        info!(?report, "storage opened");
        let lake = start_lake(cfg, clock.clone())?;

        // Before the endpoint, so the snapshot is restored before anything is recorded. The
        // confirm port reaches the endpoint once it runs.
        let confirmer = Arc::new(std::sync::OnceLock::new());
        let silence = Silence::start(SilenceParts {
            config: &cfg.silence,
            data_dir: &data_dir,
            parquet: cfg.parquet_options(),
            fs: Arc::new(sys::fs::RealFs),
            clock: clock.clone(),
            confirm: Arc::new(EndpointConfirms(confirmer.clone())),
        })?;
        let events_path = silence.events_path().to_path_buf();

        let sink = Arc::new(StorageSink::new(cfg, storage.clone())?);
        let ep_cfg = cfg.endpoint_config();
        let server_config = ingest::endpoint::server_config(tls.cert_chain, tls.key, &ep_cfg)?;
        let endpoint = Endpoint::start(EndpointParts {
            listen: cfg.server.listen,
            server_config,
            cfg: ep_cfg,
            auth,
            sink,
            activity: Arc::new(SilenceActivity::new(silence.table().clone())),
            clock,
        })?;
        let _ = confirmer.set(endpoint.confirmer());
        let admin = start_admin(cfg, &endpoint, &storage, &silence)?;
        let local_addr = endpoint.local_addr().map_err(ServerError::LocalAddr)?;
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
            revocations,
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
        self.silence.table()
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

    /// The device's outstanding confirm-location request, if any (see
    /// [`ingest::endpoint::Endpoint::outstanding_confirm`]).
    pub fn outstanding_confirm(
        &self,
        device_id: DeviceId,
    ) -> Option<ingest::endpoint::OutstandingConfirm> {
        self.endpoint.outstanding_confirm(device_id)
    }

    /// Runs one silence scan now (in addition to the periodic ones) and returns its events
    /// after they were written to the events log.
    pub fn scan_now(&self) -> Vec<SilenceEvent> {
        self.silence.scan_now()
    }

    /// Explains one device's silence state now (for an admin endpoint); `None` if untracked.
    pub fn explain(&self, device_id: u64) -> Option<silence::Explanation> {
        self.silence.explainer().explain(device_id)
    }

    /// Graceful shutdown: endpoint, then storage (flush + checkpoint), then the scanner.
    ///
    /// # Errors
    /// [`ServerError::StorageShutdown`] when the final flush fails.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        drop(self.revocations);
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        self.endpoint.shutdown(self.grace).await;
        if let Some(lake) = self.lake {
            // Waits for at most one compaction job; ingest has stopped already.
            tokio::task::spawn_blocking(move || lake.stop()).await?;
        }
        let storage = self.storage;
        let report = tokio::task::spawn_blocking(move || storage.shutdown()).await??;
        info!(?report, "storage shut down");
        self.silence.stop();
        Ok(())
    }
}

/// The token key ring and the confirm master key (generated on first start, 0600), the
/// revocation list (`auth.revocations_path`, read once here: an invalid file refuses the
/// start), and the authenticator over them; also the legacy token key's path (printed at
/// start).
fn load_secrets(
    cfg: &Config,
    data_dir: &Path,
) -> Result<(Arc<ingest::auth::Authenticator>, PathBuf), ServerError> {
    let (ring, created) =
        crate::identity::load_ring(&sys::fs::RealFs, data_dir, cfg.auth.accept_v1)?;
    for path in created {
        info!(path = %path.display(), "generated token key");
    }
    let confirm_path = crate::secret::confirm_key_path(data_dir);
    let confirm = crate::secret::load_or_generate_confirm(&sys::fs::RealFs, &confirm_path)?;
    let auth = Arc::new(ingest::auth::Authenticator::new(ring, confirm));
    if !cfg.auth.revocations_path.as_os_str().is_empty() {
        auth.set_revocations(crate::identity::load_revocations(
            &cfg.auth.revocations_path,
        )?);
    }
    Ok((auth, crate::secret::key_path(data_dir)))
}

/// Reads the revocation file again every `auth.revocations_reload_ms` (when one is
/// configured); an unreadable or invalid file keeps the previous list and is logged.
/// Stopped when dropped.
struct RevocationReload(Option<tokio::task::JoinHandle<()>>);

impl RevocationReload {
    fn start(cfg: &crate::identity::AuthConfig, auth: Arc<ingest::auth::Authenticator>) -> Self {
        if cfg.revocations_path.as_os_str().is_empty() {
            return Self(None);
        }
        let path = cfg.revocations_path.clone();
        let period = Duration::from_millis(cfg.revocations_reload_ms);
        Self(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let p = path.clone();
                match tokio::task::spawn_blocking(move || crate::identity::load_revocations(&p))
                    .await
                {
                    Ok(Ok(list)) => auth.set_revocations(list),
                    Ok(Err(error)) => {
                        warn!(%error, "revocation file not reloaded; the previous list stays")
                    }
                    Err(error) => warn!(%error, "revocation reload failed"),
                }
            }
        })))
    }
}

impl Drop for RevocationReload {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The configured certificate and key, or the development CA and server certificate under
/// `<data-dir>/tls` (generated on first start) when none is configured.
fn load_tls(cfg: &Config, data_dir: &Path) -> Result<crate::tls::TlsMaterial, ServerError> {
    let tls = if cfg.tls.cert_path.as_os_str().is_empty() {
        crate::tls::load_or_generate_dev(
            &sys::fs::RealFs,
            &data_dir.join("tls"),
            &cfg.tls.server_names,
        )?
    } else {
        crate::tls::load(&sys::fs::RealFs, &cfg.tls.cert_path, &cfg.tls.key_path)?
    };
    if tls.generated {
        info!("generated development CA and server certificate");
    }
    Ok(tls)
}

/// The admin endpoint over the running parts, when `admin.enabled`.
fn start_admin(
    cfg: &Config,
    endpoint: &Endpoint,
    storage: &storage::Storage,
    silence: &Silence,
) -> Result<Option<crate::admin::Admin>, ServerError> {
    if !cfg.admin.enabled {
        return Ok(None);
    }
    let explainer = silence.explainer();
    let sources = crate::admin::Sources {
        endpoint: endpoint.stats(),
        storage: storage.clone(),
        silence: silence.table().clone(),
        explain: Some(Arc::new(move |device_id| {
            explainer.explain(device_id).map(|e| e.to_json())
        })),
        calendar_days_left: Some({
            let explainer = silence.explainer();
            Arc::new(move || explainer.calendar_days_left())
        }),
    };
    let admin = crate::admin::Admin::start(&cfg.admin, sources)?;
    info!(addr = %admin.local_addr(), "admin endpoint listening");
    Ok(Some(admin))
}

/// Starts the lake's background thread (compaction, retention, vacuum of `positions`)
/// on its own handle of the table: its commits and the writer's never block each other.
fn start_lake(
    cfg: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Option<lake::maintain::Maintenance>, ServerError> {
    let table = crate::lake_cli::positions(cfg, clock.now_ms())?;
    let props = storage::writer::writer_properties(cfg.parquet_options())?;
    let tables = vec![lake::maintain::MaintainedTable {
        table,
        sort_columns: vec!["h3".into(), "time".into()],
        props,
        row_group_rows: cfg.storage.row_group_rows_max as u64,
        retention_days: cfg.lake.positions_retention_days,
    }];
    lake::maintain::Maintenance::spawn(tables, cfg.lake.clone(), clock)
        .map(Some)
        .map_err(ServerError::LakeThread)
}

/// Connects the endpoint to storage.
struct StorageSink {
    storage: storage::Storage,
    h3_resolution: h3o::Resolution,
    retry_after_ms: u32,
    jitter: AtomicU64,
}

impl StorageSink {
    /// The sink over `storage`, indexing at `storage.h3_resolution`.
    fn new(cfg: &Config, storage: storage::Storage) -> Result<Self, ServerError> {
        Ok(StorageSink {
            storage,
            h3_resolution: h3o::Resolution::try_from(cfg.storage.h3_resolution)?,
            retry_after_ms: cfg.server.overloaded_retry_after_ms,
            jitter: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        })
    }

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

/// The scanner's confirm-location requests, raised through the endpoint's registry once the
/// endpoint runs (before that they are dropped: no device is connected yet; requests restored
/// from the snapshot are offered again at the next scan).
struct EndpointConfirms(Arc<std::sync::OnceLock<Confirmer>>);

impl ConfirmPort for EndpointConfirms {
    fn request_confirm(&self, device_id: DeviceId, reason: &str) {
        let Some(confirmer) = self.0.get() else {
            return;
        };
        match confirmer.request_confirm(device_id, reason) {
            Ok(delivery) => {
                info!(
                    device_id = device_id.get(),
                    ?delivery,
                    "confirm-location requested"
                );
            }
            Err(err) => {
                warn!(device_id = device_id.get(), error = %err, "confirm-location not requested");
            }
        }
    }

    fn cancel_confirm(&self, device_id: DeviceId) {
        if let Some(confirmer) = self.0.get() {
            confirmer.cancel_confirm(device_id);
        }
    }

    fn outstanding(&self) -> Vec<silence::ConfirmRequestRecord> {
        let Some(confirmer) = self.0.get() else {
            return Vec::new();
        };
        confirmer
            .outstanding_confirms()
            .into_iter()
            .map(|(device_id, r)| silence::ConfirmRequestRecord {
                device_id,
                request_id: r.request_id,
                requested_at_ms: r.requested_at_ms,
                reason: r.reason,
            })
            .collect()
    }

    fn restore_confirm(&self, r: &silence::ConfirmRequestRecord) -> bool {
        let Some(confirmer) = self.0.get() else {
            return false;
        };
        let request = ingest::endpoint::OutstandingConfirm {
            request_id: r.request_id,
            requested_at_ms: r.requested_at_ms,
            reason: r.reason.clone(),
        };
        match confirmer.restore_confirm(r.device_id, request) {
            Ok(delivery) => {
                info!(
                    device_id = r.device_id.get(),
                    ?delivery,
                    "confirm-location request restored"
                );
            }
            Err(err) => {
                warn!(device_id = r.device_id.get(), error = %err, "confirm-location request not restored");
            }
        }
        true
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
    fn warn_untracked(&self, device_id: DeviceId, now_ms: i64, e: &silence::RecordError) {
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
