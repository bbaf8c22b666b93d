//! The `[silence]` configuration section, defined once: keys, defaults, bounds, validation,
//! and the loading of the policy set (calendar files included).
//!
//! # Contract
//!
//! * [`SilenceConfig`] is the section as TOML sees it (`deny_unknown_fields`, every key has a
//!   default); the binary composes it into its config file and `config/hexflow.toml`
//!   documents every key (a test in the binary proves the file equals these defaults).
//! * Every bound is a named constant here and [`SilenceConfig::validate`] checks all of them;
//!   an error names the key as `silence.<key>` ([`SilenceConfigError::Invalid`]), the policy
//!   or exemption entry, or the calendar file and line.
//! * [`SilenceConfig::policy_set`] reads `calendars_dir/<calendar>/*.toml` through
//!   [`sys::fs::Fs`]; nothing else here does IO.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sys::fs::{Fs, RealFs};

use crate::calendar::{Calendar, CalendarError, CalendarYear};
use crate::rules::{
    ConfirmResets, Counting, Exemption, ExemptionTarget, GroupDef, PastCoverage, PhraseContext,
    PolicyDef, PolicySet, PolicySetError, Threshold, ThresholdParseError, parse_threshold,
};
use crate::table::SilenceTable;
use crate::webhook::{WebhookConfig, WebhookUrl};

/// Smallest `snapshot_interval_ms`.
pub const SNAPSHOT_INTERVAL_MS_MIN: u64 = 1_000;
/// Largest `outages_max`.
pub const OUTAGES_MAX_LIMIT: usize = 10_000;
/// Largest `events_flush_interval_ms` (one day).
pub const EVENTS_FLUSH_INTERVAL_MS_MAX: u64 = 86_400_000;
/// Largest `events_rows_max`.
pub const EVENTS_ROWS_MAX_LIMIT: usize = 10_000_000;
/// Largest `webhook_queue_max`.
pub const WEBHOOK_QUEUE_MAX_LIMIT: usize = 1_000_000;
/// Largest `webhook_attempts_max`.
pub const WEBHOOK_ATTEMPTS_MAX_LIMIT: u32 = 100;
/// Smallest `webhook_timeout_ms`.
pub const WEBHOOK_TIMEOUT_MS_MIN: u64 = 10;
/// Largest `webhook_timeout_ms`.
pub const WEBHOOK_TIMEOUT_MS_MAX: u64 = 600_000;
/// Largest `webhook_backoff_max_ms` (one hour).
pub const WEBHOOK_BACKOFF_MAX_MS_LIMIT: u64 = 3_600_000;

/// `[silence]`
///
/// The built-in policy `default` uses `warning_after_s` / `expiry_after_s`; more policies,
/// groups and exemptions are arrays of tables (`[[silence.policies]]`, ...). See
/// `docs/SILENCE.md` for the rules and [`SilenceConfig::policy_set`] for the loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceConfig {
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
    /// A working-day deadline that would need days past its calendar's last year:
    /// `"refuse"` (default: the device is not judged, one `not_judged` event) or
    /// `"weekends"` (count those days by the weekend rule alone, with a logged warning).
    pub past_coverage: String,
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
    /// `https://host:port/path` (or `http://`) that receives each scan's events as a JSON
    /// array; empty: off.
    pub webhook_url: String,
    /// Webhook bodies (one per scan with events) queued at most; more are dropped and counted.
    pub webhook_queue_max: usize,
    /// Attempts per webhook body before its events are dropped and counted.
    pub webhook_attempts_max: u32,
    /// Deadline of one webhook request (resolve, connect, TLS, send, the answer's head).
    pub webhook_timeout_ms: u64,
    /// Delay before the first webhook retry; doubles per retry, with jitter.
    pub webhook_backoff_ms: u64,
    /// Largest delay between webhook retries.
    pub webhook_backoff_max_ms: u64,
    /// PEM file of the CAs an `https://` webhook receiver must chain to (relative to the
    /// config file); empty: the system's root certificates.
    pub webhook_ca_path: PathBuf,
    /// Named policies besides `default`.
    pub policies: Vec<PolicyConfig>,
    /// Device groups, each following one policy.
    pub groups: Vec<GroupConfig>,
    /// Devices or groups that raise no events.
    pub exemptions: Vec<ExemptionConfig>,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        Self {
            devices_max: 1_000_000,
            warning_after_s: 2 * 86_400,
            expiry_after_s: 3 * 86_400,
            scan_interval_ms: 10_000,
            default_policy: "default".into(),
            calendars_dir: PathBuf::from("config/calendars"),
            past_coverage: PastCoverage::default().as_str().into(),
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
            webhook_ca_path: PathBuf::new(),
            policies: Vec::new(),
            groups: Vec::new(),
            exemptions: Vec::new(),
        }
    }
}

/// `[[silence.policies]]`: one named policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
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
    /// What a confirmation resets: `"warning"` (the only value: the warning is counted from
    /// the confirmation, the expiry never).
    #[serde(default = "default_confirm_resets")]
    pub confirm_resets: String,
    /// How day counts (`"3 working days"`, `"2 days"`) become instants: `"date"` (default,
    /// the legal rule: 00:00 after the N-th full day following the fix's date) or
    /// `"instant"` (the same wall time N days later).
    #[serde(default = "default_counting")]
    pub counting: String,
}

fn default_counting() -> String {
    Counting::default().as_str().into()
}

fn default_confirm_resets() -> String {
    "warning".into()
}

/// `[[silence.groups]]`: devices following one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
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
pub struct ExemptionConfig {
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

/// The `[silence]` section is invalid, or its policies, groups, exemptions or calendars
/// could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SilenceConfigError {
    /// A value is out of range.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// Key, as `silence.key`.
        key: &'static str,
        /// Value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
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
    Calendar(#[from] CalendarError),
    /// A threshold string is invalid.
    #[error("silence.policies {policy:?}.{key}: {source}")]
    Threshold {
        /// The policy.
        policy: String,
        /// `warning` or `expiry`.
        key: &'static str,
        /// Why.
        source: ThresholdParseError,
    },
    /// An unknown time zone.
    #[error("silence.policies {policy:?}.time_zone = {time_zone:?}: unknown IANA time zone")]
    TimeZone {
        /// The policy.
        policy: String,
        /// The name.
        time_zone: String,
    },
    /// `confirm_resets` is not `warning` (`full` was removed: a confirmation never restarts
    /// the expiry clock).
    #[error(
        "silence.policies {policy:?}.confirm_resets = {value:?}: must be \"warning\" (\"full\" was removed: a confirmation never restarts the expiry clock, docs/SILENCE.md)"
    )]
    ConfirmResets {
        /// The policy.
        policy: String,
        /// The value.
        value: String,
    },
    /// `counting` is neither `date` nor `instant`.
    #[error("silence.policies {policy:?}.counting = {value:?}: must be \"date\" or \"instant\"")]
    Counting {
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
    Rules(#[from] PolicySetError),
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

fn invalid(
    key: &'static str,
    value: impl ToString,
    reason: impl Into<String>,
) -> SilenceConfigError {
    SilenceConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Refuses `value` of `key` unless `ok`.
fn check(
    ok: bool,
    key: &'static str,
    value: impl ToString,
    reason: impl Into<String>,
) -> Result<(), SilenceConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, value, reason))
    }
}

impl SilenceConfig {
    /// Checks every bound and loads the policy set (so a broken calendar or policy is refused
    /// here, with its file and line).
    ///
    /// # Errors
    /// [`SilenceConfigError`] for the first offending key, entry or file.
    pub fn validate(&self) -> Result<(), SilenceConfigError> {
        self.validate_bounds()?;
        self.webhook()?;
        self.policy_set()?;
        Ok(())
    }

    /// The range checks of the table, scanner, snapshot and events-table keys (the webhook's
    /// are in [`SilenceConfig::webhook`], the policies' in [`SilenceConfig::policy_set`]).
    pub(crate) fn validate_bounds(&self) -> Result<(), SilenceConfigError> {
        check(
            self.warning_after_s > 0 && self.expiry_after_s > self.warning_after_s,
            "silence.expiry_after_s",
            self.expiry_after_s,
            "must be greater than silence.warning_after_s (> 0)",
        )?;
        check(
            (1..=SilenceTable::DEVICES_MAX_LIMIT).contains(&self.devices_max),
            "silence.devices_max",
            self.devices_max,
            format!("must be 1..={}", SilenceTable::DEVICES_MAX_LIMIT),
        )?;
        check(
            self.scan_interval_ms > 0,
            "silence.scan_interval_ms",
            self.scan_interval_ms,
            "must be at least 1",
        )?;
        check(
            self.snapshot_interval_ms >= SNAPSHOT_INTERVAL_MS_MIN,
            "silence.snapshot_interval_ms",
            self.snapshot_interval_ms,
            format!("must be at least {SNAPSHOT_INTERVAL_MS_MIN}"),
        )?;
        check(
            (1..=OUTAGES_MAX_LIMIT).contains(&self.outages_max),
            "silence.outages_max",
            self.outages_max,
            format!("must be 1..={OUTAGES_MAX_LIMIT}"),
        )?;
        check(
            self.events_flush_interval_ms <= EVENTS_FLUSH_INTERVAL_MS_MAX,
            "silence.events_flush_interval_ms",
            self.events_flush_interval_ms,
            format!("must be 0..={EVENTS_FLUSH_INTERVAL_MS_MAX} (one day)"),
        )?;
        check(
            (1..=EVENTS_ROWS_MAX_LIMIT).contains(&self.events_rows_max),
            "silence.events_rows_max",
            self.events_rows_max,
            format!("must be 1..={EVENTS_ROWS_MAX_LIMIT}"),
        )
    }

    /// The webhook settings, `None` when `webhook_url` is empty. The `webhook_*` bounds are
    /// checked either way.
    ///
    /// # Errors
    /// [`SilenceConfigError::Invalid`] naming the first offending `webhook_*` key.
    pub fn webhook(&self) -> Result<Option<WebhookConfig>, SilenceConfigError> {
        check(
            (1..=WEBHOOK_QUEUE_MAX_LIMIT).contains(&self.webhook_queue_max),
            "silence.webhook_queue_max",
            self.webhook_queue_max,
            format!("must be 1..={WEBHOOK_QUEUE_MAX_LIMIT}"),
        )?;
        check(
            (1..=WEBHOOK_ATTEMPTS_MAX_LIMIT).contains(&self.webhook_attempts_max),
            "silence.webhook_attempts_max",
            self.webhook_attempts_max,
            format!("must be 1..={WEBHOOK_ATTEMPTS_MAX_LIMIT}"),
        )?;
        check(
            (WEBHOOK_TIMEOUT_MS_MIN..=WEBHOOK_TIMEOUT_MS_MAX).contains(&self.webhook_timeout_ms),
            "silence.webhook_timeout_ms",
            self.webhook_timeout_ms,
            format!("must be {WEBHOOK_TIMEOUT_MS_MIN}..={WEBHOOK_TIMEOUT_MS_MAX}"),
        )?;
        check(
            self.webhook_backoff_ms > 0 && self.webhook_backoff_ms <= self.webhook_backoff_max_ms,
            "silence.webhook_backoff_ms",
            self.webhook_backoff_ms,
            "must be >= 1 and <= silence.webhook_backoff_max_ms",
        )?;
        check(
            self.webhook_backoff_max_ms <= WEBHOOK_BACKOFF_MAX_MS_LIMIT,
            "silence.webhook_backoff_max_ms",
            self.webhook_backoff_max_ms,
            format!("must be <= {WEBHOOK_BACKOFF_MAX_MS_LIMIT} (one hour)"),
        )?;
        if self.webhook_url.is_empty() {
            return Ok(None);
        }
        let url = WebhookUrl::parse(&self.webhook_url)
            .map_err(|e| invalid("silence.webhook_url", &self.webhook_url, e.to_string()))?;
        Ok(Some(WebhookConfig {
            url,
            queue_max: self.webhook_queue_max,
            attempts_max: self.webhook_attempts_max,
            timeout_ms: self.webhook_timeout_ms,
            backoff_ms: self.webhook_backoff_ms,
            backoff_max_ms: self.webhook_backoff_max_ms,
            ca_path: (!self.webhook_ca_path.as_os_str().is_empty())
                .then(|| self.webhook_ca_path.clone()),
        }))
    }

    /// Builds the policy set: reads every calendar a policy names from
    /// `calendars_dir/<calendar>/*.toml`, parses thresholds and exemptions, validates all.
    ///
    /// # Errors
    /// [`SilenceConfigError`] naming the key, file or line.
    pub fn policy_set(&self) -> Result<PolicySet, SilenceConfigError> {
        self.policy_set_with_fs(&RealFs)
    }

    /// As [`SilenceConfig::policy_set`], reading the calendars through `fs`.
    ///
    /// # Errors
    /// As [`SilenceConfig::policy_set`].
    pub fn policy_set_with_fs(&self, fs: &dyn Fs) -> Result<PolicySet, SilenceConfigError> {
        let mut policies = vec![self.default_policy_def()?];
        let mut calendars: HashMap<String, Arc<Calendar>> = HashMap::new();
        for p in &self.policies {
            let calendar = match &p.calendar {
                None => None,
                Some(name) => Some(match calendars.get(name) {
                    Some(c) => c.clone(),
                    None => {
                        let c = Arc::new(load_calendar(fs, &self.calendars_dir, name)?);
                        calendars.insert(name.clone(), c.clone());
                        c
                    }
                }),
            };
            policies.push(policy_def(p, calendar)?);
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
        let mut set = PolicySet::new(policies, &self.default_policy, groups, exemptions)?;
        set.set_past_coverage(self.past_coverage_mode()?);
        Ok(set)
    }

    /// `past_coverage`, typed.
    ///
    /// # Errors
    /// [`SilenceConfigError::Invalid`] naming `silence.past_coverage`.
    pub fn past_coverage_mode(&self) -> Result<PastCoverage, SilenceConfigError> {
        PastCoverage::parse(&self.past_coverage).ok_or_else(|| {
            invalid(
                "silence.past_coverage",
                &self.past_coverage,
                "must be \"refuse\" or \"weekends\"",
            )
        })
    }

    /// Every calendar under `calendars_dir` (each subdirectory), loaded and validated, by
    /// name; for `hexflow calendar check` and the start-up coverage warning.
    ///
    /// # Errors
    /// The first directory or file that cannot be read or is invalid.
    pub fn calendars_with_fs(&self, fs: &dyn Fs) -> Result<Vec<Calendar>, SilenceConfigError> {
        let mut names: Vec<String> = fs
            .list_dir(&self.calendars_dir)
            .map_err(|source| SilenceConfigError::CalendarRead {
                path: self.calendars_dir.clone(),
                source,
            })?
            .into_iter()
            .filter(|e| fs.list_dir(&e.path).is_ok())
            .filter_map(|e| e.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| load_calendar(fs, &self.calendars_dir, n))
            .collect()
    }

    /// The built-in `default` policy from `warning_after_s` / `expiry_after_s`.
    fn default_policy_def(&self) -> Result<PolicyDef, SilenceConfigError> {
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
        Ok(PolicyDef {
            name: "default".into(),
            warning: Threshold::Duration {
                seconds: to_u32("warning_after_s", self.warning_after_s)?,
            },
            expiry: Threshold::Duration {
                seconds: to_u32("expiry_after_s", self.expiry_after_s)?,
            },
            confirm_resets: ConfirmResets::Warning,
        })
    }

    /// The exemptions, typed.
    ///
    /// # Errors
    /// [`SilenceConfigError::ExemptionTime`] or [`SilenceConfigError::ExemptionTarget`].
    pub fn exemptions(&self) -> Result<Vec<Exemption>, SilenceConfigError> {
        let time = |index, key, v: &Option<String>| -> Result<Option<u32>, SilenceConfigError> {
            v.as_ref()
                .map(|text| {
                    crate::parse_rfc3339(text)
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

/// Reads calendar `name` from every `*.toml` file of `calendars_dir/name`, in name order.
fn load_calendar(
    fs: &dyn Fs,
    calendars_dir: &Path,
    name: &str,
) -> Result<Calendar, SilenceConfigError> {
    let dir = calendars_dir.join(name);
    let mut files: Vec<PathBuf> = fs
        .list_dir(&dir)
        .map_err(|source| SilenceConfigError::CalendarRead {
            path: dir.clone(),
            source,
        })?
        .into_iter()
        .map(|e| e.path)
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SilenceConfigError::CalendarEmpty {
            calendar: name.to_string(),
            dir,
        });
    }
    let mut years = Vec::new();
    for f in files {
        let read_err = |source| SilenceConfigError::CalendarRead {
            path: f.clone(),
            source,
        };
        let bytes = fs.read(&f).map_err(read_err)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        years.push(CalendarYear::parse(&text, &f.display().to_string())?);
    }
    Ok(Calendar::from_years(years)?)
}

/// One `[[silence.policies]]` entry, typed: its time zone (given, else the calendar's), its
/// thresholds and what a confirmation resets.
fn policy_def(
    p: &PolicyConfig,
    calendar: Option<Arc<Calendar>>,
) -> Result<PolicyDef, SilenceConfigError> {
    let tz = match (&p.time_zone, &calendar) {
        (Some(name), _) => {
            Some(
                crate::time_zone(name).ok_or_else(|| SilenceConfigError::TimeZone {
                    policy: p.name.clone(),
                    time_zone: name.clone(),
                })?,
            )
        }
        (None, Some(c)) => Some(c.time_zone().clone()),
        (None, None) => None,
    };
    let counting = Counting::parse(&p.counting).ok_or_else(|| SilenceConfigError::Counting {
        policy: p.name.clone(),
        value: p.counting.clone(),
    })?;
    let ctx = PhraseContext {
        calendar: calendar.as_ref(),
        time_zone: tz.as_ref(),
        counting,
    };
    let threshold = |key: &'static str, text: &str| {
        parse_threshold(text, &ctx).map_err(|source| SilenceConfigError::Threshold {
            policy: p.name.clone(),
            key,
            source,
        })
    };
    let confirm_resets = match p.confirm_resets.as_str() {
        "warning" => ConfirmResets::Warning,
        other => {
            return Err(SilenceConfigError::ConfirmResets {
                policy: p.name.clone(),
                value: other.to_string(),
            });
        }
    };
    Ok(PolicyDef {
        name: p.name.clone(),
        warning: threshold("warning", &p.warning)?,
        expiry: threshold("expiry", &p.expiry)?,
        confirm_resets,
    })
}

#[cfg(test)]
mod tests;
