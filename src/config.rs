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

/// The whole configuration: each section is the config struct of the crate that uses it
/// (serde, defaults and bounds defined there, once); this binary only owns `[server]` and
/// `[tls]`, and composes the library structs ([`Config::endpoint_config`],
/// [`Config::storage_config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening address, data directory, shutdown.
    pub server: ServerSection,
    /// Certificates.
    pub tls: TlsSection,
    /// Which device tokens are accepted, token lifetime, the revocation file
    /// (`identity::AuthConfig`).
    pub auth: crate::identity::AuthConfig,
    /// What a BATCH may hold (`ingest::wire::Limits`).
    pub limits: ingest::wire::Limits,
    /// The protocol rules of each connection (`ingest::proto::server::SessionConfig`).
    pub session: ingest::proto::server::SessionConfig,
    /// The QUIC endpoint: connections, handshakes, windows (`ingest::endpoint::EndpointConfig`).
    pub endpoint: ingest::endpoint::EndpointConfig,
    /// WAL, Parquet and partitioning (`storage::StorageConfig`).
    pub storage: storage::StorageConfig,
    /// Silence detection (`silence::SilenceConfig`).
    pub silence: silence::SilenceConfig,
    /// Operator HTTP endpoint: metrics, one device's state (`admin::AdminConfig`).
    pub admin: crate::admin::AdminConfig,
    /// The Delta tables: commits, vacuum, compaction, retention (`lake::LakeConfig`).
    pub lake: lake::LakeConfig,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// Root of everything hexflow writes (relative to the working directory).
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

/// Keys that moved when the sections began to follow the library structs: `(old, new)`.
/// A file or variable still using an old name gets [`ConfigError::Moved`] naming the new
/// one, instead of a bare "unknown field".
const MOVED_KEYS: &[(&str, &str)] = &[
    ("limits.connections_max", "endpoint.connections_max"),
    ("limits.confirm_pending_max", "endpoint.confirm_pending_max"),
    (
        "limits.inflight_batches_max",
        "session.inflight_batches_max",
    ),
    (
        "limits.oversize_discard_bytes_max",
        "session.oversize_discard_bytes_max",
    ),
    ("limits.hello_timeout_ms", "session.hello_timeout_ms"),
    ("limits.frame_timeout_ms", "session.frame_timeout_ms"),
    ("limits.confirm_rejects_max", "session.confirm_rejects_max"),
    ("quic.idle_timeout_ms", "session.idle_timeout_ms"),
    ("quic.handshake_timeout_ms", "endpoint.handshake_timeout_ms"),
    (
        "quic.stream_receive_window_bytes",
        "endpoint.stream_receive_window_bytes",
    ),
    (
        "quic.connection_receive_window_bytes",
        "endpoint.connection_receive_window_bytes",
    ),
    (
        "quic.pre_auth_receive_window_bytes",
        "endpoint.pre_auth_receive_window_bytes",
    ),
    ("quic.send_window_bytes", "endpoint.send_window_bytes"),
    ("quic.close_linger_ms", "endpoint.close_linger_ms"),
];

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
    /// A key of an older layout: it now lives in another section.
    #[error("invalid config {origin}: {old} is now {new}")]
    Moved {
        /// File or environment variable.
        origin: String,
        /// The old `section.key`.
        old: &'static str,
        /// Where it lives now.
        new: &'static str,
    },
    /// A `[limits]`, `[session]`, `[endpoint]` or `[auth]` value is out of range (the key is named as
    /// `section.key`).
    #[error("invalid config: {0}")]
    OutOfRange(#[from] sys::bounds::OutOfRange),
    /// A storage setting is out of range (the key is named, relative to `[storage]`).
    #[error("invalid config: {0}")]
    Storage(#[from] storage::ConfigError),
    /// A `[lake]` setting is out of range.
    #[error("invalid config: {0}")]
    Lake(lake::LakeConfigError),
    /// A `[silence]` value, policy, group, exemption or calendar is invalid (the error names
    /// the key as `silence.…`, or the calendar file and line).
    #[error("invalid config: {0}")]
    Silence(#[from] silence::SilenceConfigError),
    /// An `[admin]` setting is out of range.
    #[error("invalid config: {0}")]
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
    /// The Parquet encoding of `[storage]` (zstd level, row-group size), which the silence
    /// tables and lake maintenance share with the positions writer.
    pub fn parquet_options(&self) -> storage::writer::ParquetOptions {
        storage::writer::ParquetOptions {
            zstd_level: self.storage.zstd_level,
            row_group_rows_max: self.storage.row_group_rows_max,
        }
    }

    /// Loads defaults, then `path` (if any), then `HEXFLOW__…` variables from `env`.
    /// A relative `silence.calendars_dir` given in the file is resolved against the
    /// file's directory (calendars travel with the config); every other path, and a
    /// `calendars_dir` from the environment or the defaults, is relative to the working
    /// directory.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(p) => read_file(p)?,
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix("HEXFLOW__") {
                apply_env(&mut table, &name, rest, value)?;
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

    /// Checks every range and cross-section rule: each library checks its own section
    /// (bounds defined once, beside the struct), this binary only what spans sections.
    ///
    /// # Errors
    /// The first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The composed structs, so that rules between sections (in-flight batches below
        // storage's dedup window, oversize discard above the batch limit) are checked too.
        self.endpoint_config().validate()?;
        self.storage_config().validate()?;
        self.lake.validate().map_err(ConfigError::Lake)?;
        self.silence.validate()?;
        self.admin.validate()?;
        self.auth.validate()?;
        if self.tls.cert_path.as_os_str().is_empty() != self.tls.key_path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "tls.cert_path",
                value: self.tls.cert_path.display().to_string(),
                reason: "tls.cert_path and tls.key_path must be set together".into(),
            });
        }
        Ok(())
    }

    /// Storage's settings: `[storage]` plus what other sections own (`server.data_dir`,
    /// `limits.batch_fixes_max`, `[lake]`'s commit options).
    pub fn storage_config(&self) -> storage::StorageConfig {
        storage::StorageConfig {
            data_dir: self.server.data_dir.clone(),
            batch_fixes_max: self.limits.batch_fixes_max as usize,
            table: self.lake.table_options(),
            ..self.storage.clone()
        }
    }

    /// The endpoint's settings: `[endpoint]`, with `[session]`, `[limits]` and storage's
    /// dedup window as the session each connection runs.
    pub fn endpoint_config(&self) -> ingest::endpoint::EndpointConfig {
        let session = ingest::proto::server::SessionConfig {
            limits: self.limits,
            dedup_window_batches: self.storage.dedup_window_batches,
            ..self.session
        };
        ingest::endpoint::EndpointConfig {
            session,
            ..self.endpoint.clone()
        }
    }
}

/// The file's table, with a relative `silence.calendars_dir` and `silence.webhook_ca_path`
/// resolved against its directory and keys of the older layout refused with their new name.
fn read_file(p: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.into(),
        source,
    })?;
    let mut table = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError::Parse {
            origin: p.display().to_string(),
            message: e.to_string(),
        })?;
    for (section, keys) in &table {
        if let toml::Value::Table(keys) = keys {
            for key in keys.keys() {
                refuse_moved(section, key, || p.display().to_string())?;
            }
        }
    }
    let dir = p.parent().unwrap_or(Path::new(""));
    if let Some(toml::Value::Table(silence)) = table.get_mut("silence") {
        for key in ["calendars_dir", "webhook_ca_path"] {
            if let Some(toml::Value::String(path)) = silence.get_mut(key)
                && !path.is_empty()
                && Path::new(path.as_str()).is_relative()
            {
                *path = dir.join(path.as_str()).display().to_string();
            }
        }
    }
    Ok(table)
}

/// [`ConfigError::Moved`] when `section.key` is in [`MOVED_KEYS`].
fn refuse_moved(section: &str, key: &str, origin: impl Fn() -> String) -> Result<(), ConfigError> {
    match MOVED_KEYS
        .iter()
        .find(|(old, _)| old.split_once('.') == Some((section, key)))
    {
        Some(&(old, new)) => Err(ConfigError::Moved {
            origin: origin(),
            old,
            new,
        }),
        None => Ok(()),
    }
}

/// Puts `HEXFLOW__<SECTION>__<KEY>` (`rest` is the part after `HEXFLOW__`) into `table`. The
/// value is parsed as a TOML value, falling back to a string.
fn apply_env(
    table: &mut toml::Table,
    name: &str,
    rest: &str,
    value: String,
) -> Result<(), ConfigError> {
    let origin = || format!("environment variable {name}");
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let [section, key] = parts.as_slice() else {
        return Err(ConfigError::Parse {
            origin: origin(),
            message: "expected HEXFLOW__<SECTION>__<KEY>".into(),
        });
    };
    refuse_moved(section, key, origin)?;
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or(toml::Value::String(value));
    let entry = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(key.clone(), parsed);
            Ok(())
        }
        _ => Err(ConfigError::Parse {
            origin: origin(),
            message: format!("{section} is not a section"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hexflow.toml")
    }

    /// Why a configuration file holding `text` (and no environment) is refused.
    fn file_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(Some(&p), Vec::new()).unwrap_err().to_string()
    }

    #[test]
    fn example_file_equals_defaults() {
        let mut cfg = Config::load(Some(&example_path()), Vec::new()).unwrap();
        let default = Config::default();
        // The file's calendars_dir is relative to the file (config/), the default to the
        // working directory (the repository root, where cargo runs this test): the same
        // directory.
        assert_eq!(
            cfg.silence.calendars_dir.canonicalize().unwrap(),
            default.silence.calendars_dir.canonicalize().unwrap()
        );
        cfg.silence.calendars_dir = default.silence.calendars_dir.clone();
        assert_eq!(cfg, default);
    }

    #[test]
    fn calendars_dir_and_webhook_ca_in_a_file_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        let p = sub.join("c.toml");
        std::fs::write(
            &p,
            "[silence]\ncalendars_dir = \"cal\"\nwebhook_ca_path = \"pki/hook.pem\"\n",
        )
        .unwrap();
        // The directory need not exist for loading (the server reports a missing calendar).
        let cfg = Config::load(Some(&p), Vec::new()).unwrap();
        assert_eq!(cfg.silence.calendars_dir, sub.join("cal"));
        assert_eq!(cfg.silence.webhook_ca_path, sub.join("pki/hook.pem"));
        std::fs::write(&p, "[silence]\ncalendars_dir = \"/abs/cal\"\n").unwrap();
        let cfg = Config::load(Some(&p), Vec::new()).unwrap();
        assert_eq!(cfg.silence.calendars_dir, PathBuf::from("/abs/cal"));
        let env = vec![(
            "HEXFLOW__SILENCE__CALENDARS_DIR".to_string(),
            "env/cal".to_string(),
        )];
        let cfg = Config::load(Some(&p), env).unwrap();
        assert_eq!(
            cfg.silence.calendars_dir,
            PathBuf::from("env/cal"),
            "env: cwd"
        );
    }

    #[test]
    fn keys_of_the_old_layout_name_their_new_section() {
        let err = file_error("[quic]\nclose_linger_ms = 5\n");
        assert!(
            err.contains("quic.close_linger_ms is now endpoint.close_linger_ms"),
            "{err}"
        );
        let env = vec![(
            "HEXFLOW__LIMITS__CONNECTIONS_MAX".to_string(),
            "5".to_string(),
        )];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("endpoint.connections_max"), "{err}");
        assert!(err.contains("HEXFLOW__LIMITS__CONNECTIONS_MAX"), "{err}");
        // Every new name is a real key.
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for (_, new) in MOVED_KEYS {
            let (section, key) = new.split_once('.').unwrap();
            assert!(defaults[section].get(key).is_some(), "{new}");
        }
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
        let err = file_error("[server]\nlisten_addr = \"127.0.0.1:1\"\n");
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
        let refused = |c: &Config| c.validate().unwrap_err().to_string();
        let mut c = Config::default();
        c.silence.expiry_after_s = c.silence.warning_after_s;
        assert!(refused(&c).contains("silence.expiry_after_s"));
        let env = |v: &str| vec![("HEXFLOW__STORAGE__PARTITION_BY".to_string(), v.to_string())];
        let err = Config::load(None, env("[\"hour\"]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("partition_by"), "{err}");
        assert!(Config::load(None, env("[\"date\", \"h3_r3\", \"h3_r3\"]")).is_err());
        let mut c = Config::default();
        c.storage.h3_resolution = 2;
        c.storage.partition.h3_r3 = true;
        assert!(refused(&c).contains("h3_r3"));
        let mut c = Config::default();
        c.session.inflight_batches_max = c.storage.dedup_window_batches;
        assert!(refused(&c).contains("inflight_batches_max"));
        // The transport keys of issue 11, each at its edge (bounds: ingest::bounds).
        let mut c = Config::default();
        c.session.frame_timeout_ms = 0;
        assert!(refused(&c).contains("session.frame_timeout_ms"));
        c.session.frame_timeout_ms = 1;
        c.endpoint.handshake_timeout_ms = 0;
        assert!(refused(&c).contains("endpoint.handshake_timeout_ms"));
        c.endpoint.handshake_timeout_ms = 1;
        c.endpoint.pre_auth_receive_window_bytes = 1028;
        assert!(refused(&c).contains("endpoint.pre_auth_receive_window_bytes"));
        c.endpoint.pre_auth_receive_window_bytes = 1029;
        assert!(c.validate().is_ok(), "one HELLO frame fits");
        c.endpoint.pre_auth_receive_window_bytes = c.endpoint.connection_receive_window_bytes + 1;
        assert!(refused(&c).contains("endpoint.pre_auth_receive_window_bytes"));
        // A bound shared by two crates is written once: the fix count storage and the wire
        // both accept.
        let mut c = Config::default();
        c.limits.batch_fixes_max = fix::BATCH_FIXES_LIMIT as u32;
        c.storage.flush_rows_max = fix::BATCH_FIXES_LIMIT;
        assert!(c.validate().is_ok());
        c.limits.batch_fixes_max += 1;
        assert!(refused(&c).contains("limits.batch_fixes_max"));
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
