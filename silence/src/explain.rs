//! "Why was this device flagged?": a pure explanation of one device's silence state.
//!
//! # Contract
//!
//! * [`explain`] takes a [`DeviceState`] (from [`crate::SilenceTable::get`]), the
//!   [`PolicySet`], the device's pending confirmation and `now`, and returns an
//!   [`Explanation`]: its group and policy, exemption, the instants its warning and expiry are
//!   counted from and fire at, and its level now. It applies exactly the rules the scanner
//!   applies ([`crate::Prepared::judge_detail`]), so the answer matches the events.
//! * Pure: no clock, no IO. [`Explanation`] renders as text (`Display`) and as one JSON object
//!   ([`Explanation::to_json`]) for an admin endpoint.

use super::event::JsonStr;
use super::policy::{Judgement, Level};
use super::rules::{ExemptionState, PolicySet};
use super::table::DeviceState;

/// One device's silence state, explained. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The device.
    pub device_id: u64,
    /// The instant judged.
    pub now_s: u32,
    /// Its policy's name.
    pub policy: String,
    /// Its group's name, `None` for the default policy.
    pub group: Option<String>,
    /// The reason of the exemption in force, if any.
    pub exempt_reason: Option<String>,
    /// Newest fix, if any.
    pub last_fix_s: Option<u32>,
    /// Newest contact, if any.
    pub last_contact_s: Option<u32>,
    /// Pending confirmation, if any.
    pub confirmed_s: Option<u32>,
    /// The level the last scan recorded.
    pub recorded_level: Level,
    /// The level the rules give at `now_s` (the next scan moves `recorded_level` there, except
    /// that an expired device stays expired until a fix makes it reporting).
    pub level_now: Level,
    /// The warning threshold as text.
    pub warning_rule: String,
    /// The expiry threshold as text.
    pub expiry_rule: String,
    /// The instant the warning is counted from (after outages, exemptions, confirmations).
    pub warning_from_s: u32,
    /// The instant the expiry is counted from.
    pub expiry_from_s: u32,
    /// When the warning fires (`None` while exempt).
    pub warning_at_s: Option<i64>,
    /// When the expiry fires (`None` while exempt).
    pub expiry_at_s: Option<i64>,
}

/// Explains `state` under `set` at `now_s`; `confirmed_s` is the device's pending
/// confirmation ([`crate::SilenceTable::confirmation`]).
pub fn explain(
    state: &DeviceState,
    set: &PolicySet,
    confirmed_s: Option<u32>,
    now_s: u32,
) -> Explanation {
    let prepared = set.prepare(now_s);
    let since_s = state
        .last_fix_s
        .or(state.silent_since_s)
        .or(state.last_contact_s)
        .unwrap_or(now_s);
    let detail = prepared.judge_detail(state.device_id, since_s, confirmed_s.unwrap_or(0));
    let policy = &set.policies()[usize::from(detail.assignment.policy)];
    let group = detail
        .assignment
        .group
        .map(|g| set.groups()[usize::from(g)].name.clone());
    let exempt_reason = match set.exemption(state.device_id, now_s) {
        ExemptionState::Exempt(e) => Some(e.reason.clone()),
        ExemptionState::NotExempt { .. } => None,
    };
    let (level_now, warning_at_s, expiry_at_s) = match detail.judgement {
        Judgement::Exempt => (state.level, None, None),
        Judgement::Level(l) => (
            l,
            Some(policy.warning.deadline_s(i64::from(detail.warning_from_s))),
            Some(policy.expiry.deadline_s(i64::from(detail.expiry_from_s))),
        ),
    };
    Explanation {
        device_id: state.device_id,
        now_s,
        policy: policy.name.clone(),
        group,
        exempt_reason,
        last_fix_s: state.last_fix_s,
        last_contact_s: state.last_contact_s,
        confirmed_s,
        recorded_level: state.level,
        level_now,
        warning_rule: policy.warning.describe(),
        expiry_rule: policy.expiry.describe(),
        warning_from_s: detail.warning_from_s,
        expiry_from_s: detail.expiry_from_s,
        warning_at_s,
        expiry_at_s,
    }
}

/// Parses an RFC 3339 time (`2026-05-01T18:00:00+02:00`, `...Z`) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_second)
}

/// A time zone by IANA name, from the bundled database.
pub fn time_zone(name: &str) -> Option<jiff::tz::TimeZone> {
    jiff::tz::TimeZone::get(name).ok()
}

/// Formats Unix seconds as RFC 3339 UTC (or the raw number if out of range).
pub fn rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |ts| ts.to_string())
}

fn opt_time(t: Option<impl Into<i64>>) -> String {
    t.map_or_else(|| "never".to_string(), |t| rfc3339(t.into()))
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "device {} at {}",
            self.device_id,
            rfc3339(self.now_s.into())
        )?;
        writeln!(
            f,
            "policy: {} ({})",
            self.policy,
            self.group
                .as_deref()
                .map_or_else(|| "default policy".to_string(), |g| format!("group {g}"))
        )?;
        writeln!(f, "last fix: {}", opt_time(self.last_fix_s))?;
        writeln!(f, "last contact: {}", opt_time(self.last_contact_s))?;
        if let Some(c) = self.confirmed_s {
            writeln!(f, "confirmed: {}", rfc3339(c.into()))?;
        }
        if let Some(r) = &self.exempt_reason {
            writeln!(f, "exempt: {r}")?;
        }
        writeln!(
            f,
            "warning: {} ({} counted from {})",
            opt_time(self.warning_at_s),
            self.warning_rule,
            rfc3339(self.warning_from_s.into())
        )?;
        writeln!(
            f,
            "expiry: {} ({} counted from {})",
            opt_time(self.expiry_at_s),
            self.expiry_rule,
            rfc3339(self.expiry_from_s.into())
        )?;
        write!(
            f,
            "level: {} (recorded by the last scan: {})",
            self.level_now, self.recorded_level
        )
    }
}

impl Explanation {
    /// One JSON object (times as Unix seconds, `null` when absent).
    pub fn to_json(&self) -> String {
        fn n<T: std::fmt::Display>(v: Option<T>) -> String {
            v.map_or_else(|| "null".to_string(), |v| v.to_string())
        }
        fn s(v: Option<&str>) -> String {
            v.map_or_else(|| "null".to_string(), |v| JsonStr(v).to_string())
        }
        format!(
            r#"{{"device_id":{},"now_s":{},"policy":{},"group":{},"exempt_reason":{},"last_fix_s":{},"last_contact_s":{},"confirmed_s":{},"recorded_level":"{}","level_now":"{}","warning_rule":{},"expiry_rule":{},"warning_from_s":{},"expiry_from_s":{},"warning_at_s":{},"expiry_at_s":{}}}"#,
            self.device_id,
            self.now_s,
            JsonStr(&self.policy),
            s(self.group.as_deref()),
            s(self.exempt_reason.as_deref()),
            n(self.last_fix_s),
            n(self.last_contact_s),
            n(self.confirmed_s),
            self.recorded_level,
            self.level_now,
            JsonStr(&self.warning_rule),
            JsonStr(&self.expiry_rule),
            self.warning_from_s,
            self.expiry_from_s,
            n(self.warning_at_s),
            n(self.expiry_at_s),
        )
    }
}
