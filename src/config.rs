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
    /// Silence detection (the section is defined, bounded and validated by the `silence`
    /// crate).
    pub silence: silence::SilenceConfig,
    /// Operator HTTP endpoint (metrics, one device's state).
    pub admin: crate::admin::AdminConfig,
    /// The Delta tables: commits, vacuum, compaction, retention.
    pub lake: lake::LakeConfig,
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
    /// Deadline for a frame's body after its header (slowloris guard).
    pub frame_timeout_ms: u64,
    /// Confirm-location requests outstanding at once across all devices.
    pub confirm_pending_max: usize,
    /// Rejected CONFIRM frames one connection may send before it is closed.
    pub confirm_rejects_max: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let e = ingest::endpoint::EndpointConfig::default();
        let (session, w) = (e.session, e.session.limits);
        Self {
            batch_bytes_max: w.batch_bytes_max,
            batch_fixes_max: w.batch_fixes_max,
            decompressed_bytes_max: w.decompressed_bytes_max,
            future_skew_ms: w.future_skew_ms,
            past_age_max_ms: w.past_age_max_ms,
            connections_max: e.connections_max,
            inflight_batches_max: session.inflight_batches_max,
            oversize_discard_bytes_max: session.oversize_discard_bytes_max,
            hello_timeout_ms: session.hello_timeout_ms,
            frame_timeout_ms: session.frame_timeout_ms,
            confirm_pending_max: e.confirm_pending_max,
            confirm_rejects_max: session.confirm_rejects_max,
        }
    }
}

/// `[quic]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicSection {
    /// Devices that send no frame for this long are closed (QUIC PINGs do not count).
    pub idle_timeout_ms: u64,
    /// Deadline for the QUIC + TLS handshake.
    pub handshake_timeout_ms: u64,
    /// Per-stream receive window.
    pub stream_receive_window_bytes: u32,
    /// Per-connection receive window (after WELCOME).
    pub connection_receive_window_bytes: u32,
    /// Per-connection receive window before WELCOME.
    pub pre_auth_receive_window_bytes: u32,
    /// Per-connection send window.
    pub send_window_bytes: u32,
    /// After sending CLOSE, how long to wait for the device to read it before closing.
    pub close_linger_ms: u64,
}

impl Default for QuicSection {
    fn default() -> Self {
        let e = ingest::endpoint::EndpointConfig::default();
        Self {
            idle_timeout_ms: e.session.idle_timeout_ms,
            handshake_timeout_ms: e.handshake_timeout_ms,
            stream_receive_window_bytes: e.stream_receive_window_bytes,
            connection_receive_window_bytes: e.connection_receive_window_bytes,
            pre_auth_receive_window_bytes: e.pre_auth_receive_window_bytes,
            send_window_bytes: e.send_window_bytes,
            close_linger_ms: e.close_linger_ms,
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
    /// A `[silence]` value, policy, group, exemption or calendar is invalid (the error names
    /// the key as `silence.…`, or the calendar file and line).
    #[error("invalid config: {0}")]
    Silence(#[from] silence::SilenceConfigError),
    /// An `[admin]` setting is out of range.
    #[error("invalid config [admin]: {0}")]
    Admin(#[from] crate::admin::AdminError),
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

    /// The deadlines and QUIC windows of `[limits]` and `[quic]` (issue 11): every deadline
    /// at least 1 ms, the pre-authentication window large enough for one HELLO frame and
    /// no larger than the window after WELCOME.
    fn validate_transport(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: u64, reason: String| ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason,
        };
        let (l, q) = (&self.limits, &self.quic);
        for (key, ms) in [
            ("limits.hello_timeout_ms", l.hello_timeout_ms),
            ("limits.frame_timeout_ms", l.frame_timeout_ms),
            ("quic.handshake_timeout_ms", q.handshake_timeout_ms),
        ] {
            if ms == 0 {
                return Err(invalid(key, 0, "must be at least 1".into()));
            }
        }
        let hello_frame_max = ingest::proto::server::HELLO_BYTES_MAX + 5;
        let window = q.pre_auth_receive_window_bytes;
        if window < hello_frame_max || window > q.connection_receive_window_bytes {
            let reason = format!(
                "must hold a HELLO frame ({hello_frame_max} bytes) and be at most \
                 quic.connection_receive_window_bytes ({})",
                q.connection_receive_window_bytes
            );
            return Err(invalid(
                "quic.pre_auth_receive_window_bytes",
                window.into(),
                reason,
            ));
        }
        Ok(())
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
        self.validate_transport()?;
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
        self.silence.validate()?;
        self.admin.validate()?;
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

    /// The endpoint's settings.
    pub fn endpoint_config(&self) -> ingest::endpoint::EndpointConfig {
        let l = &self.limits;
        ingest::endpoint::EndpointConfig {
            session: ingest::endpoint::SessionConfig {
                limits: ingest::wire::Limits {
                    batch_bytes_max: l.batch_bytes_max,
                    batch_fixes_max: l.batch_fixes_max,
                    decompressed_bytes_max: l.decompressed_bytes_max,
                    future_skew_ms: l.future_skew_ms,
                    past_age_max_ms: l.past_age_max_ms,
                },
                inflight_batches_max: l.inflight_batches_max,
                dedup_window_batches: self.storage.dedup_window_batches,
                oversize_discard_bytes_max: l.oversize_discard_bytes_max,
                hello_timeout_ms: l.hello_timeout_ms,
                frame_timeout_ms: l.frame_timeout_ms,
                idle_timeout_ms: self.quic.idle_timeout_ms,
                confirm_rejects_max: l.confirm_rejects_max,
            },
            connections_max: l.connections_max,
            confirm_pending_max: l.confirm_pending_max,
            close_linger_ms: self.quic.close_linger_ms,
            handshake_timeout_ms: self.quic.handshake_timeout_ms,
            stream_receive_window_bytes: self.quic.stream_receive_window_bytes,
            connection_receive_window_bytes: self.quic.connection_receive_window_bytes,
            pre_auth_receive_window_bytes: self.quic.pre_auth_receive_window_bytes,
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
        // The transport keys of issue 11, each at its edge.
        let refused = |c: &Config| c.validate().unwrap_err().to_string();
        let mut c = Config::default();
        c.limits.frame_timeout_ms = 0;
        assert!(refused(&c).contains("limits.frame_timeout_ms"));
        c.limits.frame_timeout_ms = 1;
        c.quic.handshake_timeout_ms = 0;
        assert!(refused(&c).contains("quic.handshake_timeout_ms"));
        c.quic.handshake_timeout_ms = 1;
        c.quic.pre_auth_receive_window_bytes = 1028;
        assert!(refused(&c).contains("quic.pre_auth_receive_window_bytes"));
        c.quic.pre_auth_receive_window_bytes = 1029;
        assert!(c.validate().is_ok(), "one HELLO frame fits");
        c.quic.pre_auth_receive_window_bytes = c.quic.connection_receive_window_bytes + 1;
        assert!(refused(&c).contains("quic.pre_auth_receive_window_bytes"));
        let mut c = Config::default();
        c.tls.cert_path = "x.pem".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("tls.cert_path")
        );
    }
}
