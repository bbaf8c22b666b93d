//! Configuration: one TOML file, built-in defaults, environment overrides, validated once.
//!
//! Precedence (lowest first): built-in defaults, the TOML file (`--config`), environment
//! variables `HEXFLOW__<SECTION>__<KEY>` (e.g. `HEXFLOW__SERVER__LISTEN=0.0.0.0:4433`; the
//! value is parsed as a TOML value, falling back to a string), then command-line flags.
//! Unknown keys are errors that name the key. `config/hexflow.toml` documents every key and
//! a test proves it parses to exactly [`Config::default`].
//!
//! Only the binary reads files and the environment; libraries get typed values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening address, data directory, shutdown.
    pub server: ServerSection,
    /// Certificates.
    pub tls: TlsSection,
    /// Batch and connection limits.
    pub limits: LimitsSection,
    /// QUIC transport settings.
    pub quic: QuicSection,
    /// WAL, Parquet and partitioning.
    pub storage: StorageSection,
    /// Silence detection.
    pub silence: SilenceSection,
    /// Operator HTTP endpoint (metrics, one device's state).
    pub admin: AdminSection,
    /// The Delta tables: commits, vacuum, compaction, retention.
    pub lake: lake::LakeConfig,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve `/metrics`, `/healthz` and `/devices/<id>` over HTTP.
    pub enabled: bool,
    /// Address of the admin endpoint; loopback by default (it reveals device activity).
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// Root of everything hexflow writes.
    pub data_dir: PathBuf,
    /// On SIGTERM/Ctrl-C, how long connections get to finish their in-flight batches.
    pub shutdown_grace_ms: u64,
    /// Retry-after given to devices when the server is overloaded (jitter is added).
    pub overloaded_retry_after_ms: u32,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("./data"),
            shutdown_grace_ms: 10_000,
            overloaded_retry_after_ms: 200,
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain; empty = use/generate the development CA under `<data_dir>/tls`.
    pub cert_path: PathBuf,
    /// PEM private key; set together with `cert_path`.
    pub key_path: PathBuf,
    /// Names put in the generated development certificate.
    pub server_names: Vec<String>,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest compressed batch payload.
    pub batch_bytes_max: u32,
    /// Most fixes in one batch.
    pub batch_fixes_max: u32,
    /// Largest decompressed batch payload (zstd output cap).
    pub decompressed_bytes_max: u32,
    /// Fixes more than this far in the server's future are refused.
    pub future_skew_ms: i64,
    /// Fixes older than this are refused.
    pub past_age_max_ms: i64,
    /// Open connections at once.
    pub connections_max: usize,
    /// Unacked batches one connection may have in flight.
    pub inflight_batches_max: u32,
    /// Oversized BATCH frames up to this size are discarded (connection lives on); larger close it.
    pub oversize_discard_bytes_max: u32,
    /// Deadline for HELLO after the QUIC handshake.
    pub hello_timeout_ms: u64,
    /// Confirm-location requests outstanding at once across all devices.
    pub confirm_pending_max: usize,
    /// Rejected CONFIRM frames one connection may send before it is closed.
    pub confirm_rejects_max: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let w = ingest::wire::Limits::default();
        let e = ingest::endpoint::EndpointConfig::default();
        let session = ingest::endpoint::SessionConfig::default();
        Self {
            batch_bytes_max: w.batch_bytes_max,
            batch_fixes_max: w.batch_fixes_max,
            decompressed_bytes_max: w.decompressed_bytes_max,
            future_skew_ms: w.future_skew_ms,
            past_age_max_ms: w.past_age_max_ms,
            connections_max: e.connections_max,
            inflight_batches_max: e.inflight_batches_max,
            oversize_discard_bytes_max: e.oversize_discard_bytes_max,
            hello_timeout_ms: e.hello_timeout_ms,
            confirm_pending_max: session.confirm_pending_max,
            confirm_rejects_max: session.confirm_rejects_max,
        }
    }
}

/// `[quic]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicSection {
    /// Connections silent this long are closed.
    pub idle_timeout_ms: u64,
    /// Per-stream receive window.
    pub stream_receive_window_bytes: u32,
    /// Per-connection receive window.
    pub connection_receive_window_bytes: u32,
    /// Per-connection send window.
    pub send_window_bytes: u32,
    /// After sending CLOSE, how long to wait for the device to read it before closing.
    pub close_linger_ms: u64,
}

impl Default for QuicSection {
    fn default() -> Self {
        let e = ingest::endpoint::EndpointConfig::default();
        Self {
            idle_timeout_ms: e.idle_timeout_ms,
            stream_receive_window_bytes: e.stream_receive_window_bytes,
            connection_receive_window_bytes: e.connection_receive_window_bytes,
            send_window_bytes: e.send_window_bytes,
            close_linger_ms: ingest::endpoint::SessionConfig::default().close_linger_ms,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// H3 resolution of the `h3` column (0–15).
    pub h3_resolution: u8,
    /// Hive partition keys, in order: `date` (required, first), optionally `hour`, `h3_r3`.
    pub partition_by: Vec<String>,
    /// Buffered rows are published as Parquet at least this often.
    pub flush_interval_ms: u64,
    /// After a failed flush (e.g. disk full), wait this long before trying again.
    pub flush_retry_ms: u64,
    /// Flush attempts at shutdown before giving up (the WAL keeps the data either way).
    pub shutdown_flush_attempts: u32,
    /// Buffered rows that force an early flush (memory bound).
    pub flush_rows_max: usize,
    /// Rows per Parquet row group.
    pub row_group_rows_max: usize,
    /// zstd level for Parquet pages.
    pub zstd_level: i32,
    /// WAL segment size before rolling to a new file.
    pub wal_segment_bytes_max: u64,
    /// Bytes gathered into one group commit (one fsync).
    pub wal_group_commit_bytes_max: usize,
    /// Longest a batch waits for others to share its fsync.
    pub wal_group_commit_delay_us: u64,
    /// fsync the WAL before acking. `false` is an UNSAFE benchmark-only mode: acks are then
    /// not durable.
    pub wal_fsync: bool,
    /// Batches waiting for the WAL; when full, devices get OVERLOADED.
    pub queue_batches_max: usize,
    /// Durable batches waiting for the Parquet writer; when full the WAL waits (backpressure).
    pub writer_queue_batches_max: usize,
    /// Per-device dedup window, in batches.
    pub dedup_window_batches: u32,
    /// Devices whose dedup window is kept at most.
    pub dedup_devices_max: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        let d = storage::StorageConfig::default();
        let mut partition_by = vec!["date".to_string()];
        if d.partition.hour {
            partition_by.push("hour".into());
        }
        if d.partition.h3_r3 {
            partition_by.push("h3_r3".into());
        }
        Self {
            h3_resolution: d.h3_resolution,
            partition_by,
            flush_interval_ms: d.flush_interval_ms,
            flush_retry_ms: d.flush_retry_ms,
            shutdown_flush_attempts: d.shutdown_flush_attempts,
            flush_rows_max: d.flush_rows_max,
            row_group_rows_max: d.row_group_rows_max,
            zstd_level: d.zstd_level,
            wal_segment_bytes_max: d.wal_segment_bytes_max,
            wal_group_commit_bytes_max: d.wal_group_commit_bytes_max,
            wal_group_commit_delay_us: d.wal_group_commit_delay_us,
            wal_fsync: d.wal_fsync,
            queue_batches_max: d.queue_batches_max,
            writer_queue_batches_max: d.writer_queue_batches_max,
            dedup_window_batches: d.dedup_window_batches,
            dedup_devices_max: d.dedup_devices_max,
        }
    }
}

/// `[silence]`
///
/// The built-in policy `default` uses `warning_after_s` / `expiry_after_s`; more policies,
/// groups and exemptions are arrays of tables (`[[silence.policies]]`, ...). See
/// `docs/SILENCE.md` for the rules and [`SilenceSection::policy_set`] for the loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceSection {
    /// Devices tracked at most (memory is reserved up front for this many).
    pub devices_max: usize,
    /// A device of the built-in `default` policy is warned after this long without a fix.
    pub warning_after_s: u64,
    /// A device of the built-in `default` policy is expired after this long without a fix.
    pub expiry_after_s: u64,
    /// How often the scanner runs.
    pub scan_interval_ms: u64,
    /// The policy of devices in no group.
    pub default_policy: String,
    /// Directory holding `<calendar>/<year>.toml` files (relative to the working directory).
    pub calendars_dir: PathBuf,
    /// How often the silence state is snapshotted to `<data>/silence/snapshot.bin` (also at
    /// shutdown).
    pub snapshot_interval_ms: u64,
    /// Server outages remembered (not counted against devices); the oldest are dropped.
    pub outages_max: usize,
    /// Events buffered for the Parquet `events` table are published once the oldest has waited
    /// this long (0: after every scan that produced events).
    pub events_flush_interval_ms: u64,
    /// Events buffered for the Parquet `events` table at most (a fuller buffer is flushed first).
    pub events_rows_max: usize,
    /// `http://host:port/path` that receives each scan's events as a JSON array; empty: off.
    /// Plain HTTP only (no TLS in v1).
    pub webhook_url: String,
    /// Webhook bodies (one per scan with events) queued at most; more are dropped and counted.
    pub webhook_queue_max: usize,
    /// Attempts per webhook body before its events are dropped and counted.
    pub webhook_attempts_max: u32,
    /// Deadline of one webhook request (connect, send, status line).
    pub webhook_timeout_ms: u64,
    /// Delay before the first webhook retry; doubles per retry, with jitter.
    pub webhook_backoff_ms: u64,
    /// Largest delay between webhook retries.
    pub webhook_backoff_max_ms: u64,
    /// Named policies besides `default`.
    pub policies: Vec<PolicySection>,
    /// Device groups, each following one policy.
    pub groups: Vec<GroupSection>,
    /// Devices or groups that raise no events.
    pub exemptions: Vec<ExemptionSection>,
}

impl Default for SilenceSection {
    fn default() -> Self {
        Self {
            devices_max: 1_000_000,
            warning_after_s: 2 * 86_400,
            expiry_after_s: 3 * 86_400,
            scan_interval_ms: 10_000,
            default_policy: "default".into(),
            calendars_dir: PathBuf::from("config/calendars"),
            snapshot_interval_ms: 300_000,
            outages_max: 64,
            events_flush_interval_ms: 60_000,
            events_rows_max: 100_000,
            webhook_url: String::new(),
            webhook_queue_max: 1_000,
            webhook_attempts_max: 8,
            webhook_timeout_ms: 5_000,
            webhook_backoff_ms: 500,
            webhook_backoff_max_ms: 60_000,
            policies: Vec::new(),
            groups: Vec::new(),
            exemptions: Vec::new(),
        }
    }
}

/// `[[silence.policies]]`: one named policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Its name.
    pub name: String,
    /// `"36h"`-style duration or `"N working days"`.
    pub warning: String,
    /// `"36h"`-style duration or `"N working days"`.
    pub expiry: String,
    /// Calendar (a directory under `calendars_dir`) for working-day thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    /// Time zone the days are counted in; default: the calendar's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What a confirmation resets: `"warning"` (default) or `"full"`.
    #[serde(default = "default_confirm_resets")]
    pub confirm_resets: String,
}

fn default_confirm_resets() -> String {
    "warning".into()
}

/// `[[silence.groups]]`: devices following one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Its name.
    pub name: String,
    /// Its policy.
    pub policy: String,
    /// Inclusive id ranges, `[[first, last], ...]`.
    #[serde(default)]
    pub ranges: Vec<[u64; 2]>,
    /// Individual device ids.
    #[serde(default)]
    pub devices: Vec<u64>,
}

/// `[[silence.exemptions]]`: a device or a group that raises no events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptionSection {
    /// One device (set exactly one of `device` and `group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u64>,
    /// A group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Start, RFC 3339; absent = already in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End (exclusive), RFC 3339; absent = permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Why (recorded in `<data>/events/exemptions.jsonl`).
    pub reason: String,
}

/// The `[silence]` policies, groups, exemptions or calendars could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SilenceConfigError {
    /// A calendar directory or file could not be read.
    #[error("cannot read calendar {path}: {source}")]
    CalendarRead {
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A calendar directory holds no `*.toml` file.
    #[error("calendar {calendar:?}: no *.toml files in {dir}")]
    CalendarEmpty {
        /// The calendar.
        calendar: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// A calendar file is invalid (the error names the file and line).
    #[error(transparent)]
    Calendar(#[from] ingest::silence::calendar::CalendarError),
    /// A threshold string is invalid.
    #[error("silence.policies {policy:?}.{key}: {source}")]
    Threshold {
        /// The policy.
        policy: String,
        /// `warning` or `expiry`.
        key: &'static str,
        /// Why.
        source: ingest::silence::ThresholdParseError,
    },
    /// An unknown time zone.
    #[error("silence.policies {policy:?}.time_zone = {time_zone:?}: unknown IANA time zone")]
    TimeZone {
        /// The policy.
        policy: String,
        /// The name.
        time_zone: String,
    },
    /// `confirm_resets` is neither `warning` nor `full`.
    #[error(
        "silence.policies {policy:?}.confirm_resets = {value:?}: must be \"warning\" or \"full\""
    )]
    ConfirmResets {
        /// The policy.
        policy: String,
        /// The value.
        value: String,
    },
    /// An exemption time is not RFC 3339 within the u32 Unix-seconds range.
    #[error("silence.exemptions[{index}].{key} = {value:?}: not an RFC 3339 time in 1970..2106")]
    ExemptionTime {
        /// Index in the array.
        index: usize,
        /// `from` or `until`.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// An exemption must name exactly one of `device` and `group`.
    #[error("silence.exemptions[{index}]: set exactly one of device and group")]
    ExemptionTarget {
        /// Index in the array.
        index: usize,
    },
    /// A policy, group or exemption rule was violated.
    #[error("silence: {0}")]
    Rules(#[from] ingest::silence::PolicySetError),
    /// A duration is out of range.
    #[error("silence.{key} = {value}: {reason}")]
    Range {
        /// Key.
        key: &'static str,
        /// Value.
        value: u64,
        /// Why.
        reason: &'static str,
    },
}

impl SilenceSection {
    /// The webhook settings, `None` when `webhook_url` is empty.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first offending `webhook_*` key.
    pub fn webhook(&self) -> Result<Option<crate::events::webhook::WebhookConfig>, ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                reason: reason.into(),
            }
        }
        if self.webhook_queue_max == 0 || self.webhook_queue_max > 1_000_000 {
            return Err(invalid(
                "silence.webhook_queue_max",
                self.webhook_queue_max,
                "must be 1..=1000000",
            ));
        }
        if self.webhook_attempts_max == 0 || self.webhook_attempts_max > 100 {
            return Err(invalid(
                "silence.webhook_attempts_max",
                self.webhook_attempts_max,
                "must be 1..=100",
            ));
        }
        if self.webhook_timeout_ms < 10 || self.webhook_timeout_ms > 600_000 {
            return Err(invalid(
                "silence.webhook_timeout_ms",
                self.webhook_timeout_ms,
                "must be 10..=600000",
            ));
        }
        if self.webhook_backoff_ms == 0 || self.webhook_backoff_ms > self.webhook_backoff_max_ms {
            return Err(invalid(
                "silence.webhook_backoff_ms",
                self.webhook_backoff_ms,
                "must be >= 1 and <= silence.webhook_backoff_max_ms",
            ));
        }
        if self.webhook_backoff_max_ms > 3_600_000 {
            return Err(invalid(
                "silence.webhook_backoff_max_ms",
                self.webhook_backoff_max_ms,
                "must be <= 3600000 (one hour)",
            ));
        }
        if self.webhook_url.is_empty() {
            return Ok(None);
        }
        let url = crate::events::webhook::WebhookUrl::parse(&self.webhook_url)
            .map_err(|e| invalid("silence.webhook_url", &self.webhook_url, &e.to_string()))?;
        Ok(Some(crate::events::webhook::WebhookConfig {
            url,
            queue_max: self.webhook_queue_max,
            attempts_max: self.webhook_attempts_max,
            timeout_ms: self.webhook_timeout_ms,
            backoff_ms: self.webhook_backoff_ms,
            backoff_max_ms: self.webhook_backoff_max_ms,
        }))
    }

    /// Builds the policy set: reads every calendar a policy names from
    /// `calendars_dir/<calendar>/*.toml`, parses thresholds and exemptions, validates all.
    ///
    /// # Errors
    /// [`SilenceConfigError`] naming the key, file or line.
    pub fn policy_set(&self) -> Result<ingest::silence::PolicySet, SilenceConfigError> {
        use ingest::silence::calendar::{Calendar, CalendarYear};
        use ingest::silence::{
            ConfirmResets, GroupDef, PolicyDef, PolicySet, Threshold, parse_threshold,
        };
        use std::collections::HashMap;
        use std::sync::Arc;
        let to_u32 = |key, value: u64| {
            u32::try_from(value)
                .ok()
                .filter(|v| *v > 0)
                .ok_or(SilenceConfigError::Range {
                    key,
                    value,
                    reason: "must be 1..=4294967295",
                })
        };
        let mut policies = vec![PolicyDef {
            name: "default".into(),
            warning: Threshold::Duration {
                seconds: to_u32("warning_after_s", self.warning_after_s)?,
            },
            expiry: Threshold::Duration {
                seconds: to_u32("expiry_after_s", self.expiry_after_s)?,
            },
            confirm_resets: ConfirmResets::Warning,
        }];
        let mut calendars: HashMap<String, Arc<Calendar>> = HashMap::new();
        for p in &self.policies {
            let calendar = match &p.calendar {
                None => None,
                Some(name) => {
                    if !calendars.contains_key(name) {
                        let dir = self.calendars_dir.join(name);
                        let read_err = |source| SilenceConfigError::CalendarRead {
                            path: dir.clone(),
                            source,
                        };
                        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                            .map_err(read_err)?
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                            .collect();
                        files.sort();
                        if files.is_empty() {
                            return Err(SilenceConfigError::CalendarEmpty {
                                calendar: name.clone(),
                                dir,
                            });
                        }
                        let mut years = Vec::new();
                        for f in files {
                            let text = std::fs::read_to_string(&f).map_err(|source| {
                                SilenceConfigError::CalendarRead {
                                    path: f.clone(),
                                    source,
                                }
                            })?;
                            years.push(CalendarYear::parse(&text, &f.display().to_string())?);
                        }
                        calendars.insert(name.clone(), Arc::new(Calendar::from_years(years)?));
                    }
                    calendars.get(name).cloned()
                }
            };
            let tz = match (&p.time_zone, &calendar) {
                (Some(name), _) => Some(ingest::silence::time_zone(name).ok_or_else(|| {
                    SilenceConfigError::TimeZone {
                        policy: p.name.clone(),
                        time_zone: name.clone(),
                    }
                })?),
                (None, Some(c)) => Some(c.time_zone().clone()),
                (None, None) => None,
            };
            let cal = calendar.as_ref().zip(tz.as_ref());
            let threshold = |key: &'static str, text: &str| {
                parse_threshold(text, cal).map_err(|source| SilenceConfigError::Threshold {
                    policy: p.name.clone(),
                    key,
                    source,
                })
            };
            let confirm_resets = match p.confirm_resets.as_str() {
                "warning" => ConfirmResets::Warning,
                "full" => ConfirmResets::Full,
                other => {
                    return Err(SilenceConfigError::ConfirmResets {
                        policy: p.name.clone(),
                        value: other.to_string(),
                    });
                }
            };
            policies.push(PolicyDef {
                name: p.name.clone(),
                warning: threshold("warning", &p.warning)?,
                expiry: threshold("expiry", &p.expiry)?,
                confirm_resets,
            });
        }
        let groups = self
            .groups
            .iter()
            .map(|g| GroupDef {
                name: g.name.clone(),
                policy: g.policy.clone(),
                ranges: g.ranges.iter().map(|r| (r[0], r[1])).collect(),
                devices: g.devices.clone(),
            })
            .collect();
        let exemptions = self.exemptions()?;
        Ok(PolicySet::new(
            policies,
            &self.default_policy,
            groups,
            exemptions,
        )?)
    }

    /// The exemptions, typed.
    ///
    /// # Errors
    /// [`SilenceConfigError::ExemptionTime`] or [`SilenceConfigError::ExemptionTarget`].
    pub fn exemptions(&self) -> Result<Vec<ingest::silence::Exemption>, SilenceConfigError> {
        use ingest::silence::{Exemption, ExemptionTarget};
        let time = |index, key, v: &Option<String>| -> Result<Option<u32>, SilenceConfigError> {
            v.as_ref()
                .map(|text| {
                    ingest::silence::parse_rfc3339(text)
                        .and_then(|t| u32::try_from(t).ok())
                        .ok_or_else(|| SilenceConfigError::ExemptionTime {
                            index,
                            key,
                            value: text.clone(),
                        })
                })
                .transpose()
        };
        self.exemptions
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let target = match (&e.device, &e.group) {
                    (Some(d), None) => ExemptionTarget::Device(*d),
                    (None, Some(g)) => ExemptionTarget::Group(g.clone()),
                    _ => return Err(SilenceConfigError::ExemptionTarget { index }),
                };
                Ok(Exemption {
                    target,
                    from_s: time(index, "from", &e.from)?,
                    until_s: time(index, "until", &e.until)?,
                    reason: e.reason.clone(),
                })
            })
            .collect()
    }
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The TOML did not parse or has unknown/mistyped keys.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// File or environment.
        origin: String,
        /// Parser message (names the key).
        message: String,
    },
    /// A storage setting is out of range (the key is named, relative to `[storage]`).
    #[error("invalid config [storage]: {0}")]
    Storage(storage::ConfigError),
    /// A `[lake]` setting is out of range.
    #[error("invalid config [lake]: {0}")]
    Lake(#[from] lake::LakeConfigError),
    /// The `[silence]` policies, groups, exemptions or calendars are invalid.
    #[error("invalid config [silence]: {0}")]
    Silence(#[from] SilenceConfigError),
    /// A value is out of range.
    #[error("invalid config: {key} = {value}: {reason}")]
    Invalid {
        /// Key, as `section.key`.
        key: &'static str,
        /// Value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

impl Config {
    /// Loads defaults, then `path` (if any), then `HEXFLOW__…` variables from `env`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.into(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("HEXFLOW__") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let [section, key] = parts.as_slice() else {
                return Err(ConfigError::Parse {
                    origin: format!("environment variable {name}"),
                    message: "expected HEXFLOW__<SECTION>__<KEY>".into(),
                });
            };
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key.clone(), parsed);
                }
                _ => {
                    return Err(ConfigError::Parse {
                        origin: format!("environment variable {name}"),
                        message: format!("{section} is not a section"),
                    });
                }
            }
        }
        let origin = path.map_or_else(|| "(environment)".to_string(), |p| p.display().to_string());
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin,
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every range and cross-field rule.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                reason: reason.into(),
            }
        }
        let l = &self.limits;
        if l.batch_bytes_max == 0 || l.batch_bytes_max > 64 * 1024 * 1024 {
            return Err(invalid(
                "limits.batch_bytes_max",
                l.batch_bytes_max,
                "must be 1..=64 MiB",
            ));
        }
        if l.batch_fixes_max == 0 || l.batch_fixes_max > 1_000_000 {
            return Err(invalid(
                "limits.batch_fixes_max",
                l.batch_fixes_max,
                "must be 1..=1000000",
            ));
        }
        if l.decompressed_bytes_max < l.batch_bytes_max || l.decompressed_bytes_max > 256 << 20 {
            return Err(invalid(
                "limits.decompressed_bytes_max",
                l.decompressed_bytes_max,
                "must be >= batch_bytes_max and <= 256 MiB",
            ));
        }
        if l.future_skew_ms < 0 || l.past_age_max_ms <= 0 {
            return Err(invalid(
                "limits.past_age_max_ms",
                l.past_age_max_ms,
                "must be positive",
            ));
        }
        if l.connections_max == 0 {
            return Err(invalid("limits.connections_max", 0, "must be at least 1"));
        }
        if l.inflight_batches_max == 0
            || l.inflight_batches_max >= self.storage.dedup_window_batches
        {
            return Err(invalid(
                "limits.inflight_batches_max",
                l.inflight_batches_max,
                "must be >= 1 and below storage.dedup_window_batches, or a resent batch could fall out of the dedup window",
            ));
        }
        let p = &self.storage.partition_by;
        if p.first().map(String::as_str) != Some("date")
            || p.iter().skip(1).any(|k| k != "hour" && k != "h3_r3")
            || (1..p.len()).any(|i| p[i + 1..].contains(&p[i]))
        {
            return Err(invalid(
                "storage.partition_by",
                format!("{p:?}"),
                "must start with \"date\", then optionally \"hour\" and/or \"h3_r3\", each once",
            ));
        }
        self.lake.validate()?;
        if let Err(e) = self.storage_config().validate() {
            return Err(ConfigError::Storage(e));
        }
        let s = &self.silence;
        if s.warning_after_s == 0 || s.expiry_after_s <= s.warning_after_s {
            return Err(invalid(
                "silence.expiry_after_s",
                s.expiry_after_s,
                "must be greater than silence.warning_after_s (> 0)",
            ));
        }
        if s.devices_max == 0 || s.scan_interval_ms == 0 {
            return Err(invalid(
                "silence.devices_max",
                s.devices_max,
                "must be at least 1",
            ));
        }
        if s.snapshot_interval_ms < 1_000 {
            return Err(invalid(
                "silence.snapshot_interval_ms",
                s.snapshot_interval_ms,
                "must be at least 1000",
            ));
        }
        if s.outages_max == 0 || s.outages_max > 10_000 {
            return Err(invalid(
                "silence.outages_max",
                s.outages_max,
                "must be 1..=10000",
            ));
        }
        if s.events_flush_interval_ms > 86_400_000 {
            return Err(invalid(
                "silence.events_flush_interval_ms",
                s.events_flush_interval_ms,
                "must be 0..=86400000 (one day)",
            ));
        }
        if s.events_rows_max == 0 || s.events_rows_max > 10_000_000 {
            return Err(invalid(
                "silence.events_rows_max",
                s.events_rows_max,
                "must be 1..=10000000",
            ));
        }
        s.webhook()?;
        s.policy_set()?;
        if self.tls.cert_path.as_os_str().is_empty() != self.tls.key_path.as_os_str().is_empty() {
            return Err(invalid(
                "tls.cert_path",
                self.tls.cert_path.display(),
                "tls.cert_path and tls.key_path must be set together",
            ));
        }
        Ok(())
    }

    /// Storage's settings.
    pub fn storage_config(&self) -> storage::StorageConfig {
        let s = &self.storage;
        storage::StorageConfig {
            data_dir: self.server.data_dir.clone(),
            h3_resolution: s.h3_resolution,
            partition: storage::partition::PartitionScheme {
                hour: s.partition_by.iter().any(|k| k == "hour"),
                h3_r3: s.partition_by.iter().any(|k| k == "h3_r3"),
            },
            wal_segment_bytes_max: s.wal_segment_bytes_max,
            wal_group_commit_bytes_max: s.wal_group_commit_bytes_max,
            wal_group_commit_delay_us: s.wal_group_commit_delay_us,
            wal_fsync: s.wal_fsync,
            queue_batches_max: s.queue_batches_max,
            writer_queue_batches_max: s.writer_queue_batches_max,
            batch_fixes_max: self.limits.batch_fixes_max as usize,
            flush_interval_ms: s.flush_interval_ms,
            flush_retry_ms: s.flush_retry_ms,
            shutdown_flush_attempts: s.shutdown_flush_attempts,
            flush_rows_max: s.flush_rows_max,
            row_group_rows_max: s.row_group_rows_max,
            zstd_level: s.zstd_level,
            dedup_window_batches: s.dedup_window_batches,
            dedup_devices_max: s.dedup_devices_max,
            table: self.lake.table_options(),
        }
    }

    /// The endpoint's per-session settings (confirm-location bounds, close linger).
    pub fn session_config(&self) -> ingest::endpoint::SessionConfig {
        ingest::endpoint::SessionConfig {
            confirm_pending_max: self.limits.confirm_pending_max,
            confirm_rejects_max: self.limits.confirm_rejects_max,
            close_linger_ms: self.quic.close_linger_ms,
        }
    }

    /// The endpoint's settings.
    pub fn endpoint_config(&self) -> ingest::endpoint::EndpointConfig {
        let l = &self.limits;
        ingest::endpoint::EndpointConfig {
            limits: ingest::wire::Limits {
                batch_bytes_max: l.batch_bytes_max,
                batch_fixes_max: l.batch_fixes_max,
                decompressed_bytes_max: l.decompressed_bytes_max,
                future_skew_ms: l.future_skew_ms,
                past_age_max_ms: l.past_age_max_ms,
            },
            connections_max: l.connections_max,
            inflight_batches_max: l.inflight_batches_max,
            dedup_window_batches: self.storage.dedup_window_batches,
            oversize_discard_bytes_max: l.oversize_discard_bytes_max,
            hello_timeout_ms: l.hello_timeout_ms,
            idle_timeout_ms: self.quic.idle_timeout_ms,
            stream_receive_window_bytes: self.quic.stream_receive_window_bytes,
            connection_receive_window_bytes: self.quic.connection_receive_window_bytes,
            send_window_bytes: self.quic.send_window_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hexflow.toml")
    }

    #[test]
    fn example_file_equals_defaults() {
        let cfg = Config::load(Some(&example_path()), Vec::new()).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn example_file_documents_every_key() {
        let text = std::fs::read_to_string(example_path()).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let toml::Value::Table(sections) = defaults else {
            panic!("not a table")
        };
        for (section, keys) in sections {
            assert!(
                text.contains(&format!("[{section}]")),
                "section [{section}] missing"
            );
            let toml::Value::Table(keys) = keys else {
                panic!("{section} not a table")
            };
            for key in keys.keys() {
                let line = text
                    .lines()
                    .position(|l| l.starts_with(&format!("{key} =")))
                    .unwrap_or_else(|| panic!("{section}.{key} missing from hexflow.toml"));
                let above = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
                assert!(
                    above.starts_with("##"),
                    "{section}.{key} has no ## comment above it"
                );
            }
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&p), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let env = vec![
            (
                "HEXFLOW__SERVER__LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            (
                "HEXFLOW__STORAGE__WAL_FSYNC".to_string(),
                "false".to_string(),
            ),
            (
                "HEXFLOW__SERVER__DATA_DIR".to_string(),
                "/tmp/x y".to_string(),
            ),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let cfg = Config::load(None, env).unwrap();
        assert_eq!(cfg.server.listen.port(), 9999);
        assert!(!cfg.storage.wal_fsync);
        assert_eq!(cfg.server.data_dir, PathBuf::from("/tmp/x y"));
        let bad = vec![("HEXFLOW__SILENCE__NOPE".to_string(), "1".to_string())];
        assert!(
            Config::load(None, bad)
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }

    #[test]
    fn invalid_values_are_refused_with_their_key() {
        let mut c = Config::default();
        c.silence.expiry_after_s = c.silence.warning_after_s;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("silence.expiry_after_s")
        );
        let mut c = Config::default();
        c.storage.partition_by = vec!["hour".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("partition_by")
        );
        let mut c = Config::default();
        c.storage.partition_by = vec!["date".into(), "h3_r3".into(), "h3_r3".into()];
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.limits.inflight_batches_max = c.storage.dedup_window_batches;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("inflight_batches_max")
        );
        let mut c = Config::default();
        c.tls.cert_path = "x.pem".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("tls.cert_path")
        );
    }

    #[test]
    fn silence_event_and_webhook_keys_at_their_edges() {
        let check = |f: &dyn Fn(&mut Config), key: &str| {
            let mut c = Config::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        };
        let ok = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap();
        };
        ok(&|c| c.silence.events_flush_interval_ms = 0);
        ok(&|c| c.silence.events_flush_interval_ms = 86_400_000);
        check(
            &|c| c.silence.events_flush_interval_ms = 86_400_001,
            "silence.events_flush_interval_ms",
        );
        ok(&|c| c.silence.events_rows_max = 1);
        ok(&|c| c.silence.events_rows_max = 10_000_000);
        check(
            &|c| c.silence.events_rows_max = 0,
            "silence.events_rows_max",
        );
        check(
            &|c| c.silence.events_rows_max = 10_000_001,
            "silence.events_rows_max",
        );
        ok(&|c| c.silence.webhook_queue_max = 1);
        check(
            &|c| c.silence.webhook_queue_max = 0,
            "silence.webhook_queue_max",
        );
        ok(&|c| c.silence.webhook_attempts_max = 1);
        ok(&|c| c.silence.webhook_attempts_max = 100);
        check(
            &|c| c.silence.webhook_attempts_max = 0,
            "silence.webhook_attempts_max",
        );
        check(
            &|c| c.silence.webhook_attempts_max = 101,
            "silence.webhook_attempts_max",
        );
        ok(&|c| c.silence.webhook_timeout_ms = 10);
        check(
            &|c| c.silence.webhook_timeout_ms = 9,
            "silence.webhook_timeout_ms",
        );
        ok(&|c| c.silence.webhook_backoff_ms = c.silence.webhook_backoff_max_ms);
        check(
            &|c| c.silence.webhook_backoff_ms = c.silence.webhook_backoff_max_ms + 1,
            "silence.webhook_backoff_ms",
        );
        check(
            &|c| {
                c.silence.webhook_backoff_max_ms = 3_600_001;
            },
            "silence.webhook_backoff_max_ms",
        );
        assert_eq!(Config::default().silence.webhook().unwrap(), None);
        check(
            &|c| c.silence.webhook_url = "https://example.invalid/x".into(),
            "silence.webhook_url",
        );
        let mut c = Config::default();
        c.silence.webhook_url = "http://127.0.0.1:9/hook".into();
        c.validate().unwrap();
        let w = c.silence.webhook().unwrap().unwrap();
        assert_eq!((w.url.port, w.url.path.as_str()), (9, "/hook"));
        assert_eq!(w.attempts_max, 8);
    }
}
