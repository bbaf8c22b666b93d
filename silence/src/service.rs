//! Silence as the server runs it: everything opened at start, in order, and the scanner.
//!
//! # Contract
//!
//! [`Silence::start`] runs, in this order, and refuses to start (a typed [`StartError`]) when
//! a step fails:
//!
//! 1. the configuration: every bound checked, the policy set loaded (calendars read through
//!    the [`Fs`]), the webhook settings;
//! 2. the table, all its memory reserved;
//! 3. the snapshot restored before any device is recorded: the time between the snapshot and
//!    now is a server outage, not silence (docs/SILENCE.md, "Restarts"). A snapshot that is
//!    refused (damaged, foreign, too large for the table) is logged and the table starts
//!    empty; a snapshot that cannot be read is an error;
//! 4. the exemptions log brought up to date with the configured exemptions;
//! 5. the events log, the Parquet `events` table (its sequence continued), the webhook;
//! 6. the [`Scanner`] thread.
//!
//! [`Silence::stop`] stops the scanner after its last flush and snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use storage::writer::ParquetOptions;
use sys::Clock;
use sys::fs::Fs;
use tracing::{error, info, warn};

use crate::config::{SilenceConfig, SilenceConfigError};
use crate::log::{EventLog, ExemptionLog};
use crate::scanner::{ConfirmPort, ConfirmRequestRecord, Scanner, ScannerParts};
use crate::snapshot_file::SnapshotFile;
use crate::tables::{EventTable, EventTableConfig, TableError};
use crate::webhook::{Webhook, WebhookConfig};
use crate::{
    Explanation, Outage, PolicySet, SilenceEvent, SilenceTable, TableConfigError, explain, unix_s,
};

/// What [`Silence::start`] needs.
pub struct SilenceParts<'a> {
    /// The `[silence]` section (checked again here: every bound, the policy set read
    /// through `fs`, the webhook settings).
    pub config: &'a SilenceConfig,
    /// The data directory (`events/`, `device_status/`, `silence/` go under it).
    pub data_dir: &'a Path,
    /// Encoding of the Parquet tables.
    pub parquet: ParquetOptions,
    /// Every file operation goes through it.
    pub fs: Arc<dyn Fs>,
    /// Every time read goes through it.
    pub clock: Arc<dyn Clock>,
    /// Where confirm-location requests go.
    pub confirm: Arc<dyn ConfirmPort>,
}

/// Silence could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration (policies, calendars, webhook settings) is invalid.
    #[error(transparent)]
    Config(#[from] SilenceConfigError),
    /// The table size is refused.
    #[error("silence table: {0}")]
    Table(#[from] TableConfigError),
    /// The snapshot exists but cannot be read.
    #[error("cannot read silence snapshot {path}: {source}")]
    SnapshotRead {
        /// The snapshot.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The exemptions log cannot be read or appended to.
    #[error("exemptions log {path}: {source}")]
    ExemptionLog {
        /// The log.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The events log cannot be opened.
    #[error("events log {path}: {source}")]
    EventLog {
        /// The log.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet `events` table cannot be opened.
    #[error("events table: {0}")]
    EventTable(#[from] TableError),
    /// A thread (scanner or webhook) cannot be spawned.
    #[error("cannot start the {thread} thread: {source}")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The webhook's HTTP client cannot be built (its CA file, or no system roots).
    #[error(transparent)]
    WebhookClient(#[from] crate::webhook::ClientError),
}

/// Explains one device now: the table, the policies and the clock the scanner uses.
#[derive(Clone)]
pub struct Explainer {
    table: Arc<SilenceTable>,
    policies: Arc<PolicySet>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer").finish_non_exhaustive()
    }
}

impl Explainer {
    /// Per calendar the policies use: days from today (in its zone, at the clock's `now`) to
    /// its last covered day, negative once its coverage has ended (the admin endpoint's
    /// `silence_calendar_coverage_days` gauge).
    pub fn calendar_days_left(&self) -> Vec<(String, i64)> {
        let now_s = self.clock.now_ms().div_euclid(1000);
        self.policies
            .calendars()
            .iter()
            .map(|c| {
                let coverage = c.coverage_at(now_s);
                (coverage.name, coverage.days_left)
            })
            .collect()
    }

    /// `device_id`'s silence state at the clock's `now`; `None` if it is not tracked.
    pub fn explain(&self, device_id: u64) -> Option<Explanation> {
        let state = self.table.get(device_id)?;
        Some(explain(
            &state,
            &self.policies,
            self.table.confirmation(device_id),
            unix_s(self.clock.now_ms()),
        ))
    }
}

/// Silence tracking, running.
#[derive(Debug)]
pub struct Silence {
    table: Arc<SilenceTable>,
    explainer: Explainer,
    scanner: Scanner,
    events_path: PathBuf,
}

impl Silence {
    /// Opens everything and starts the scanner (see the module doc for the order).
    ///
    /// # Errors
    /// [`StartError`] naming the step that failed.
    pub fn start(p: SilenceParts<'_>) -> Result<Self, StartError> {
        let cfg = p.config;
        cfg.validate_bounds()?;
        let mut policies = cfg.policy_set_with_fs(&*p.fs)?;
        let webhook_cfg = cfg.webhook()?;
        let table = Arc::new(SilenceTable::with_capacity(cfg.devices_max)?);
        let start_s = unix_s(p.clock.now_ms());
        warn_coverage(&policies, start_s);
        let snapshot = SnapshotFile::new(p.fs.clone(), p.data_dir);
        let (outages, restored_requests) = restore(&table, &snapshot, start_s)?;
        policies.set_outages(outages, cfg.outages_max);
        ExemptionLog::sync(&*p.fs, p.data_dir, policies.exemptions(), start_s).map_err(
            |source| StartError::ExemptionLog {
                path: ExemptionLog::path(p.data_dir),
                source,
            },
        )?;
        let policies = Arc::new(policies);
        let log = EventLog::open(&*p.fs, p.data_dir).map_err(|source| StartError::EventLog {
            path: EventLog::path_in(p.data_dir),
            source,
        })?;
        let events_path = log.path().to_path_buf();
        let event_table = EventTable::open_with_fs(
            p.fs.clone(),
            p.data_dir,
            EventTableConfig {
                rows_max: cfg.events_rows_max,
                flush_interval_ms: cfg.events_flush_interval_ms,
                parquet: p.parquet,
            },
            policies.policies().iter().map(|p| p.name.clone()).collect(),
        )?;
        let webhook = webhook_cfg
            .map(|w| start_webhook(w, p.clock.clone()))
            .transpose()?;
        let scanner = Scanner::start(ScannerParts {
            table: table.clone(),
            policies: policies.clone(),
            log,
            event_table,
            webhook,
            confirm: p.confirm,
            snapshot,
            fs: p.fs,
            data_dir: p.data_dir.to_path_buf(),
            parquet: p.parquet,
            clock: p.clock.clone(),
            scan_interval_ms: cfg.scan_interval_ms,
            snapshot_interval_s: u32::try_from(cfg.snapshot_interval_ms / 1000).unwrap_or(u32::MAX),
            restored_requests,
        })
        .map_err(|source| StartError::Spawn {
            thread: "scanner",
            source,
        })?;
        Ok(Self {
            explainer: Explainer {
                table: table.clone(),
                policies,
                clock: p.clock,
            },
            table,
            scanner,
            events_path,
        })
    }

    /// The table (the endpoint records activity into it).
    pub fn table(&self) -> &Arc<SilenceTable> {
        &self.table
    }

    /// The events log's path.
    pub fn events_path(&self) -> &Path {
        &self.events_path
    }

    /// Explains devices now (for the admin endpoint).
    pub fn explainer(&self) -> Explainer {
        self.explainer.clone()
    }

    /// Runs one scan now; see [`Scanner::scan_now`].
    pub fn scan_now(&self) -> Vec<SilenceEvent> {
        self.scanner.scan_now()
    }

    /// Stops the scanner after its last flush and snapshot.
    pub fn stop(self) {
        self.scanner.stop();
    }
}

/// Logs every calendar in use whose coverage ends within
/// [`crate::calendar::COVERAGE_WARNING_DAYS`] (an error once it has ended), and every
/// provisional year.
fn warn_coverage(policies: &PolicySet, now_s: u32) {
    for c in policies.calendars() {
        let cov = c.coverage_at(i64::from(now_s));
        let provisional = cov.provisional_years();
        if !provisional.is_empty() {
            warn!(calendar = %cov.name, years = ?provisional, "calendar years are provisional (not backed by an official act yet)");
        }
        if cov.days_left < 0 {
            error!(calendar = %cov.name, last_day = %cov.last_day, past_coverage = policies.past_coverage().as_str(),
                "calendar coverage has ENDED: devices whose deadline needs later days are not judged (refuse) or counted by weekends only; add the next year's file");
        } else if cov.ends_soon() {
            warn!(calendar = %cov.name, last_day = %cov.last_day, days_left = cov.days_left,
                "calendar coverage ends soon; add the next year's file");
        }
    }
}

fn start_webhook(w: WebhookConfig, clock: Arc<dyn Clock>) -> Result<Webhook, StartError> {
    let tls = w.url.scheme == crate::webhook::Scheme::Https;
    info!(host = %w.url.host, port = w.url.port, path = %w.url.path, tls, "silence webhook on");
    Webhook::start(w, clock).map_err(|e| match e {
        crate::webhook::StartError::Client(e) => StartError::WebhookClient(e),
        crate::webhook::StartError::Spawn(source) => StartError::Spawn {
            thread: "webhook",
            source,
        },
    })
}

/// Restores `snapshot` into `table` and returns the outages to apply (those the snapshot
/// recorded plus the time from it to `start_s`) and the confirm requests it kept.
fn restore(
    table: &SilenceTable,
    snapshot: &SnapshotFile,
    start_s: u32,
) -> Result<(Vec<Outage>, Vec<ConfirmRequestRecord>), StartError> {
    let bytes = snapshot.load().map_err(|source| StartError::SnapshotRead {
        path: snapshot.path().to_path_buf(),
        source,
    })?;
    let Some(bytes) = bytes else {
        return Ok((Vec::new(), Vec::new()));
    };
    match table.restore_snapshot(&bytes) {
        Ok(info) => {
            info!(
                devices = info.devices,
                taken_s = info.taken_s,
                confirm_requests = info.requests.len(),
                "silence state restored"
            );
            let mut outages = info.outages;
            if info.taken_s < start_s {
                outages.push(Outage {
                    down_s: info.taken_s,
                    up_s: start_s,
                });
            }
            Ok((outages, info.requests))
        }
        Err(e) => {
            error!(path = %snapshot.path().display(), error = %e, "silence snapshot refused; starting empty");
            Ok((Vec::new(), Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests;
