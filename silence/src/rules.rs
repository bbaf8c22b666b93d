//! Silence policies people can rely on: thresholds in durations or working days, policies
//! assigned by device group, exemptions, server outages, confirmations.
//!
//! # Contract
//!
//! * [`PolicySet`] is built once from typed, validated parts (the binary parses the config and
//!   reads the calendar files). [`PolicySet::prepare`] turns it into a [`Prepared`] judge for one
//!   `now`: every (policy, level) cut-off instant is computed **once per scan**, so judging a
//!   device is a group lookup plus two compares. [`Prepared`] implements [`SilencePolicy`].
//! * The rules (written out with a worked table in `docs/SILENCE.md`):
//!   - A threshold fires at `deadline(since)`; a device is at a level when `now >= deadline`.
//!     `Duration(d)`: `deadline = since + d`. `WorkingDays(n)` on calendar C in zone Z: take
//!     the local date `D` and wall time `T` of `since` in Z. If `D` is a working day, the
//!     deadline is wall time `T` on the n-th working day after `D`; otherwise it is 00:00 of
//!     the day after the n-th working day after `D`. Wall times that do not exist (spring
//!     forward) move forward by the gap, repeated ones (fall back) take the first occurrence,
//!     and a `since` inside the repeated hour counts as the end of that hour (keeps deadlines
//!     monotone).
//!   - Silence is counted from the *effective since*: the newest fix (or first contact),
//!     moved later by every server outage after it (outage time is not counted), by the end of
//!     the device's latest ended exemption window, and by a confirmation as the policy's
//!     [`ConfirmResets`] says.
//!   - An exempt device (permanently, or inside its window) is not judged: no events.
//! * Pure: no clock, no IO.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use thiserror::Error;

use super::calendar::{Calendar, date_of_epoch_day, epoch_day};
use super::policy::{Judgement, Level, SilencePolicy};

/// When a threshold fires, relative to the time silence is counted from.
#[derive(Debug, Clone)]
pub enum Threshold {
    /// A fixed number of seconds.
    Duration {
        /// Seconds of silence.
        seconds: u32,
    },
    /// A count of working days on a calendar, in a time zone.
    WorkingDays(WorkingDays),
}

/// `n` working days on a calendar, judged in a time zone.
#[derive(Debug, Clone)]
pub struct WorkingDays {
    /// How many working days, `1..=WorkingDays::MAX`.
    pub n: u32,
    /// The calendar.
    pub calendar: Arc<Calendar>,
    /// The zone the days are counted in (the calendar's own unless the policy overrides it).
    pub time_zone: TimeZone,
}

/// The largest instant the table can hold (`u32` Unix seconds); deadlines are capped there.
const T_MAX: i64 = u32::MAX as i64;

impl WorkingDays {
    /// The largest accepted `n` (a quarter of a year of working days).
    pub const MAX: u32 = 66;

    /// The instant (Unix seconds) this threshold fires for silence counted from `since_s`.
    pub fn deadline_s(&self, since_s: i64) -> i64 {
        let tz = &self.time_zone;
        let Ok(ts) = Timestamp::from_second(since_s) else {
            return T_MAX;
        };
        let ts = end_of_repeated_hour(tz, ts);
        let dt = tz.to_datetime(ts);
        let day = epoch_day(dt.date());
        let (deadline_day, time) = if self.calendar.is_working(day) {
            (self.calendar.nth_working_day_after(day, self.n), dt.time())
        } else {
            (
                self.calendar.nth_working_day_after(day, self.n) + 1,
                Time::midnight(),
            )
        };
        let local = DateTime::from_parts(date_of_epoch_day(deadline_day), time);
        tz.to_timestamp(local)
            .map_or(T_MAX, |t| t.as_second().min(T_MAX))
    }
}

/// A `since` in the second pass of a repeated wall-clock hour (fall back) counts as the end of
/// that hour, so that deadlines never decrease as `since` increases.
fn end_of_repeated_hour(tz: &TimeZone, ts: Timestamp) -> Timestamp {
    let dt = tz.to_datetime(ts);
    let Ok(first) = tz.to_ambiguous_timestamp(dt).earlier() else {
        return ts;
    };
    if first >= ts {
        return ts;
    }
    let fold = ts.as_second() - first.as_second();
    // The transition that started the second pass is at or before ts.
    let Some(transition) = ts
        .checked_add(jiff::SignedDuration::from_secs(1))
        .ok()
        .and_then(|after| tz.preceding(after).next())
    else {
        return ts;
    };
    transition
        .timestamp()
        .checked_add(jiff::SignedDuration::from_secs(fold))
        .unwrap_or(ts)
        .max(ts)
}

impl Threshold {
    /// The instant (Unix seconds) this threshold fires for silence counted from `since_s`.
    pub fn deadline_s(&self, since_s: i64) -> i64 {
        match self {
            Threshold::Duration { seconds } => since_s + i64::from(*seconds),
            Threshold::WorkingDays(w) => w.deadline_s(since_s),
        }
    }

    /// The cut-off at `now_s`: every `since` at or after it has not reached this threshold, and
    /// every `since` before it has (deadlines are monotone in `since`). Exact.
    pub fn cutoff_s(&self, now_s: i64) -> i64 {
        match self {
            Threshold::Duration { seconds } => now_s - i64::from(*seconds) + 1,
            Threshold::WorkingDays(w) => {
                // deadline(t) > t always, so hi = now_s qualifies; find lo with deadline <= now.
                let mut hi = now_s;
                let mut step = 86_400 * (i64::from(w.n) + 2);
                let mut lo = now_s - step;
                while w.deadline_s(lo) > now_s {
                    hi = lo;
                    step *= 2;
                    lo = now_s - step;
                    if lo < -(1 << 40) {
                        return lo;
                    }
                }
                // Invariant: deadline(lo) <= now < deadline(hi).
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if w.deadline_s(mid) > now_s {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi
            }
        }
    }

    /// Human form: `36h` style seconds or `3 working days (de, Europe/Berlin)`.
    pub fn describe(&self) -> String {
        match self {
            Threshold::Duration { seconds } => format!("{seconds}s"),
            Threshold::WorkingDays(w) => format!(
                "{} working day{} ({}, {})",
                w.n,
                if w.n == 1 { "" } else { "s" },
                w.calendar.name(),
                w.time_zone.iana_name().unwrap_or("?")
            ),
        }
    }
}

/// How a confirmation (the device answering the confirm-location request) resets the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfirmResets {
    /// The warning is counted from the confirmation; expiry still from the newest fix.
    Warning,
    /// Both thresholds are counted from the confirmation, as if it were a fix.
    Full,
}

impl ConfirmResets {
    /// `warning` or `full`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfirmResets::Warning => "warning",
            ConfirmResets::Full => "full",
        }
    }
}

/// One named policy.
#[derive(Debug, Clone)]
pub struct PolicyDef {
    /// Its name (in config, events and the CLI).
    pub name: String,
    /// When a device is warned.
    pub warning: Threshold,
    /// When it expires.
    pub expiry: Threshold,
    /// What a confirmation resets.
    pub confirm_resets: ConfirmResets,
}

/// Which devices a group holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    /// Its name (exemptions can name it).
    pub name: String,
    /// The policy its devices follow (a name in the set).
    pub policy: String,
    /// Inclusive device-id ranges.
    pub ranges: Vec<(u64, u64)>,
    /// Individual devices.
    pub devices: Vec<u64>,
}

/// What an exemption covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExemptionTarget {
    /// One device.
    Device(u64),
    /// Every device of a group.
    Group(String),
}

/// A device or group that raises no events, permanently or for `[from_s, until_s)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Exemption {
    /// Who.
    pub target: ExemptionTarget,
    /// Start (Unix seconds); `None` = since ever.
    pub from_s: Option<u32>,
    /// End, exclusive (Unix seconds); `None` = permanent.
    pub until_s: Option<u32>,
    /// Why (recorded in the exemptions log).
    pub reason: String,
}

/// A span of time the server was down (`[down_s, up_s)`), not counted against devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outage {
    /// The last moment the server is known to have been up (its last snapshot).
    pub down_s: u32,
    /// When it came back.
    pub up_s: u32,
}

/// [`PolicySet::new`] refused its parts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PolicySetError {
    /// Two policies with one name.
    #[error("policy {name:?} is defined twice")]
    DuplicatePolicy {
        /// The name.
        name: String,
    },
    /// A name that is not a defined policy.
    #[error("{context} names unknown policy {name:?}")]
    UnknownPolicy {
        /// Where it was named (`default_policy`, `group "x"`).
        context: String,
        /// The name.
        name: String,
    },
    /// Two groups with one name.
    #[error("group {name:?} is defined twice")]
    DuplicateGroup {
        /// The name.
        name: String,
    },
    /// A range whose end is before its start, or ids outside 1..=i64::MAX.
    #[error("group {group:?}: range {start}..={end} is empty or outside 1..=i64::MAX")]
    BadRange {
        /// The group.
        group: String,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
    },
    /// A device in two groups (explicitly or by overlapping ranges).
    #[error("device {device_id} is in both group {first:?} and group {second:?}")]
    Overlap {
        /// A device in both.
        device_id: u64,
        /// One group.
        first: String,
        /// The other.
        second: String,
    },
    /// A threshold of zero, or a working-day count outside `1..=WorkingDays::MAX`.
    #[error("policy {policy:?}: {which} threshold is out of range")]
    ThresholdRange {
        /// The policy.
        policy: String,
        /// `warning` or `expiry`.
        which: &'static str,
    },
    /// Expiry must fire after the warning (checked when both are the same kind).
    #[error("policy {policy:?}: expiry must come after warning")]
    ExpiryNotAfterWarning {
        /// The policy.
        policy: String,
    },
    /// An exemption names a group that does not exist.
    #[error("exemption names unknown group {group:?}")]
    UnknownGroup {
        /// The name.
        group: String,
    },
    /// An exemption window that ends before it starts.
    #[error("exemption for {target}: until_s {until_s} is not after from_s {from_s}")]
    EmptyWindow {
        /// Who.
        target: String,
        /// Start.
        from_s: u32,
        /// End.
        until_s: u32,
    },
    /// Too many policies (the policy index must fit the events' `u16`).
    #[error("{count} policies; at most {max}")]
    TooManyPolicies {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Where one device belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Index of its policy in [`PolicySet::policies`].
    pub policy: u16,
    /// Index of its group in [`PolicySet::groups`], `None` for the default policy.
    pub group: Option<u16>,
}

/// All policies, groups, exemptions and outages; see the module doc.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: Vec<PolicyDef>,
    groups: Vec<GroupDef>,
    default_policy: u16,
    /// Sorted, non-overlapping `(start, end, group)`.
    ranges: Vec<(u64, u64, u16)>,
    devices: HashMap<u64, u16>,
    exemptions: Vec<Exemption>,
    /// Sorted by `down_s`.
    outages: Vec<Outage>,
}

impl PolicySet {
    /// The most policies one set may hold.
    pub const POLICIES_MAX: usize = 1024;

    /// Validates and indexes the parts.
    ///
    /// # Errors
    /// See [`PolicySetError`].
    pub fn new(
        policies: Vec<PolicyDef>,
        default_policy: &str,
        groups: Vec<GroupDef>,
        exemptions: Vec<Exemption>,
    ) -> Result<Self, PolicySetError> {
        check_policies(&policies)?;
        let default_policy = policy_index(&policies, default_policy, || "default_policy".into())?;
        let GroupIndex { ranges, devices } = index_groups(&groups, &policies)?;
        check_exemptions(&exemptions, &groups)?;
        Ok(Self {
            policies,
            groups,
            default_policy,
            ranges,
            devices,
            exemptions,
            outages: Vec::new(),
        })
    }

    /// A set with one duration policy named `default` and nothing else (v0 behaviour).
    ///
    /// # Errors
    /// As [`PolicySet::new`].
    pub fn durations(warning_after_s: u32, expiry_after_s: u32) -> Result<Self, PolicySetError> {
        Self::new(
            vec![PolicyDef {
                name: "default".into(),
                warning: Threshold::Duration {
                    seconds: warning_after_s,
                },
                expiry: Threshold::Duration {
                    seconds: expiry_after_s,
                },
                confirm_resets: ConfirmResets::Warning,
            }],
            "default",
            Vec::new(),
            Vec::new(),
        )
    }

    /// Replaces the list of server outages (from the silence snapshot), keeping the newest
    /// `outages_max`.
    pub fn set_outages(&mut self, mut outages: Vec<Outage>, outages_max: usize) {
        outages.retain(|o| o.up_s > o.down_s);
        outages.sort_by_key(|o| o.down_s);
        let excess = outages.len().saturating_sub(outages_max);
        outages.drain(..excess);
        self.outages = outages;
    }

    /// The outages not counted against devices.
    pub fn outages(&self) -> &[Outage] {
        &self.outages
    }

    /// The policies, in configuration order.
    pub fn policies(&self) -> &[PolicyDef] {
        &self.policies
    }

    /// The groups, in configuration order.
    pub fn groups(&self) -> &[GroupDef] {
        &self.groups
    }

    /// The exemptions, in configuration order.
    pub fn exemptions(&self) -> &[Exemption] {
        &self.exemptions
    }

    /// A policy by name.
    pub fn policy(&self, name: &str) -> Option<&PolicyDef> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The group and policy of `device_id`: explicit device lists first, then ranges, then the
    /// default policy.
    pub fn assignment(&self, device_id: u64) -> Assignment {
        let group = self.devices.get(&device_id).copied().or_else(|| {
            let i = self.ranges.partition_point(|r| r.0 <= device_id);
            i.checked_sub(1)
                .map(|i| self.ranges[i])
                .filter(|r| device_id <= r.1)
                .map(|r| r.2)
        });
        let policy = group.map_or(self.default_policy, |g| {
            let name = &self.groups[usize::from(g)].policy;
            self.policies
                .iter()
                .position(|p| &p.name == name)
                .map_or(self.default_policy, |i| i as u16)
        });
        Assignment { policy, group }
    }

    /// The exemption state of `device_id` at `now_s`: `Exempt` with the reason, or the end of
    /// its most recent ended window (silence is not counted before it).
    pub fn exemption(&self, device_id: u64, now_s: u32) -> ExemptionState<'_> {
        let group = self
            .assignment(device_id)
            .group
            .map(|g| self.groups[usize::from(g)].name.as_str());
        let mut ended_s = 0u32;
        for e in &self.exemptions {
            let applies = match &e.target {
                ExemptionTarget::Device(d) => *d == device_id,
                ExemptionTarget::Group(g) => Some(g.as_str()) == group,
            };
            if !applies {
                continue;
            }
            let started = e.from_s.is_none_or(|f| f <= now_s);
            match e.until_s {
                Some(u) if u <= now_s => ended_s = ended_s.max(u),
                _ if started => return ExemptionState::Exempt(e),
                _ => {}
            }
        }
        ExemptionState::NotExempt { ended_s }
    }

    /// `since_s` moved later by every outage after it (outage time does not count).
    pub fn after_outages(&self, since_s: u32) -> u32 {
        let mut shift = 0u64;
        for o in &self.outages {
            if since_s < o.down_s {
                shift += u64::from(o.up_s - o.down_s);
            } else if since_s < o.up_s {
                shift += u64::from(o.up_s - since_s);
            }
        }
        u32::try_from(u64::from(since_s) + shift).unwrap_or(u32::MAX)
    }

    /// Precomputes every cut-off for one scan at `now_s`.
    pub fn prepare(&self, now_s: u32) -> Prepared<'_> {
        let now = i64::from(now_s);
        let clamp = |c: i64| c.clamp(0, T_MAX + 1) as u64;
        let cutoffs: Vec<[u64; 2]> = self
            .policies
            .iter()
            .map(|p| {
                [
                    clamp(p.warning.cutoff_s(now)),
                    clamp(p.expiry.cutoff_s(now)),
                ]
            })
            .collect();
        let reporting_from_s = cutoffs.iter().map(|c| c[0].max(c[1])).max().unwrap_or(0);
        Prepared {
            set: self,
            now_s,
            cutoffs,
            reporting_from_s,
        }
    }

    /// When the thresholds of `policy` fire for a device of that policy whose newest fix is
    /// at `last_fix_s` (no outage, exemption or confirmation applied): `(warning, expiry)`.
    pub fn when(&self, policy: &PolicyDef, last_fix_s: i64) -> (i64, i64) {
        (
            policy.warning.deadline_s(last_fix_s),
            policy.expiry.deadline_s(last_fix_s),
        )
    }
}

/// The index of the policy called `name`; `context` says where it was named.
fn policy_index(
    policies: &[PolicyDef],
    name: &str,
    context: impl FnOnce() -> String,
) -> Result<u16, PolicySetError> {
    policies
        .iter()
        .position(|p| p.name == name)
        .map(|i| i as u16)
        .ok_or_else(|| PolicySetError::UnknownPolicy {
            context: context(),
            name: name.to_string(),
        })
}

/// At most [`PolicySet::POLICIES_MAX`] policies, unique names, thresholds in range, and
/// expiry after warning where the two are comparable.
fn check_policies(policies: &[PolicyDef]) -> Result<(), PolicySetError> {
    if policies.len() > PolicySet::POLICIES_MAX {
        return Err(PolicySetError::TooManyPolicies {
            count: policies.len(),
            max: PolicySet::POLICIES_MAX,
        });
    }
    for (i, p) in policies.iter().enumerate() {
        if policies[..i].iter().any(|q| q.name == p.name) {
            return Err(PolicySetError::DuplicatePolicy {
                name: p.name.clone(),
            });
        }
        for (which, t) in [("warning", &p.warning), ("expiry", &p.expiry)] {
            let ok = match t {
                Threshold::Duration { seconds } => *seconds > 0,
                Threshold::WorkingDays(w) => (1..=WorkingDays::MAX).contains(&w.n),
            };
            if !ok {
                return Err(PolicySetError::ThresholdRange {
                    policy: p.name.clone(),
                    which,
                });
            }
        }
        let ordered = match (&p.warning, &p.expiry) {
            (Threshold::Duration { seconds: w }, Threshold::Duration { seconds: e }) => e > w,
            (Threshold::WorkingDays(w), Threshold::WorkingDays(e))
                if Arc::ptr_eq(&w.calendar, &e.calendar) && w.time_zone == e.time_zone =>
            {
                e.n > w.n
            }
            // Mixed kinds: allowed; a device may go straight to expired (docs/SILENCE.md).
            _ => true,
        };
        if !ordered {
            return Err(PolicySetError::ExpiryNotAfterWarning {
                policy: p.name.clone(),
            });
        }
    }
    Ok(())
}

/// Where the groups' devices are looked up.
struct GroupIndex {
    /// Sorted, non-overlapping `(start, end, group)`.
    ranges: Vec<(u64, u64, u16)>,
    /// Explicitly listed devices.
    devices: HashMap<u64, u16>,
}

/// Indexes the groups, checking unique names, known policies, valid ranges, and that no
/// device is in two groups.
fn index_groups(groups: &[GroupDef], policies: &[PolicyDef]) -> Result<GroupIndex, PolicySetError> {
    let mut ranges = Vec::new();
    let mut devices: HashMap<u64, u16> = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        if groups[..gi].iter().any(|h| h.name == g.name) {
            return Err(PolicySetError::DuplicateGroup {
                name: g.name.clone(),
            });
        }
        policy_index(policies, &g.policy, || format!("group {:?}", g.name))?;
        for &(start, end) in &g.ranges {
            if start == 0 || end < start || end > i64::MAX as u64 {
                return Err(PolicySetError::BadRange {
                    group: g.name.clone(),
                    start,
                    end,
                });
            }
            ranges.push((start, end, gi as u16));
        }
        for &d in &g.devices {
            if let Some(prev) = devices.insert(d, gi as u16) {
                return Err(PolicySetError::Overlap {
                    device_id: d,
                    first: groups[usize::from(prev)].name.clone(),
                    second: g.name.clone(),
                });
            }
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[1].0 <= pair[0].1 {
            return Err(PolicySetError::Overlap {
                device_id: pair[1].0,
                first: groups[usize::from(pair[0].2)].name.clone(),
                second: groups[usize::from(pair[1].2)].name.clone(),
            });
        }
    }
    Ok(GroupIndex { ranges, devices })
}

/// Every exemption names a known group (if a group) and a non-empty window.
fn check_exemptions(exemptions: &[Exemption], groups: &[GroupDef]) -> Result<(), PolicySetError> {
    for e in exemptions {
        if let ExemptionTarget::Group(g) = &e.target
            && !groups.iter().any(|h| &h.name == g)
        {
            return Err(PolicySetError::UnknownGroup { group: g.clone() });
        }
        if let (Some(from_s), Some(until_s)) = (e.from_s, e.until_s)
            && until_s <= from_s
        {
            return Err(PolicySetError::EmptyWindow {
                target: e.target.to_string(),
                from_s,
                until_s,
            });
        }
    }
    Ok(())
}

impl std::fmt::Display for ExemptionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExemptionTarget::Device(d) => write!(f, "device {d}"),
            ExemptionTarget::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A device's exemption state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExemptionState<'a> {
    /// Exempt now, by this exemption.
    Exempt(&'a Exemption),
    /// Not exempt; silence is not counted before `ended_s` (0: no window ended).
    NotExempt {
        /// End of its most recent ended exemption window, Unix seconds, or 0.
        ended_s: u32,
    },
}

/// A [`PolicySet`] prepared for one `now`: cut-offs computed, judging is two compares.
#[derive(Debug, Clone)]
pub struct Prepared<'a> {
    set: &'a PolicySet,
    now_s: u32,
    /// Per policy: `[warning, expiry]` cut-offs (Unix seconds, 0..=2^32).
    cutoffs: Vec<[u64; 2]>,
    reporting_from_s: u64,
}

impl Prepared<'_> {
    /// The `now` this was prepared for.
    pub fn now_s(&self) -> u32 {
        self.now_s
    }

    /// The set.
    pub fn set(&self) -> &PolicySet {
        self.set
    }

    /// Judges a device silent since `since_s` (newest fix, else first contact) that confirmed
    /// at `confirmed_s` (0: never), at this `now`. Also returns the effective instants the
    /// warning and expiry are counted from.
    pub fn judge_detail(&self, device_id: u64, since_s: u32, confirmed_s: u32) -> JudgeDetail {
        let a = self.set.assignment(device_id);
        let ended_s = match self.set.exemption(device_id, self.now_s) {
            ExemptionState::Exempt(_) => {
                return JudgeDetail {
                    assignment: a,
                    judgement: Judgement::Exempt,
                    warning_from_s: since_s,
                    expiry_from_s: since_s,
                };
            }
            ExemptionState::NotExempt { ended_s } => ended_s,
        };
        let base = self.set.after_outages(since_s).max(ended_s);
        let policy = &self.set.policies[usize::from(a.policy)];
        let confirmed = if confirmed_s > since_s {
            self.set.after_outages(confirmed_s)
        } else {
            0
        };
        let warning_from_s = base.max(confirmed);
        let expiry_from_s = match policy.confirm_resets {
            ConfirmResets::Full => warning_from_s,
            ConfirmResets::Warning => base,
        };
        let [cut_w, cut_e] = self.cutoffs[usize::from(a.policy)];
        let level = if u64::from(expiry_from_s) < cut_e {
            Level::Expired
        } else if u64::from(warning_from_s) < cut_w {
            Level::Warned
        } else {
            Level::Reporting
        };
        JudgeDetail {
            assignment: a,
            judgement: Judgement::Level(level),
            warning_from_s,
            expiry_from_s,
        }
    }
}

/// The full result of [`Prepared::judge_detail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgeDetail {
    /// Its group and policy.
    pub assignment: Assignment,
    /// Exempt, or its level.
    pub judgement: Judgement,
    /// The instant its warning is counted from.
    pub warning_from_s: u32,
    /// The instant its expiry is counted from.
    pub expiry_from_s: u32,
}

impl SilencePolicy for Prepared<'_> {
    fn level(&self, device_id: u64, since_s: u32, now_s: u32) -> Level {
        let _ = now_s;
        match self.judge_detail(device_id, since_s, 0).judgement {
            Judgement::Exempt => Level::Reporting,
            Judgement::Level(l) => l,
        }
    }

    fn threshold_s(&self, device_id: u64, level: Level) -> u64 {
        let p = &self.set.policies[usize::from(self.set.assignment(device_id).policy)];
        match (level, level_threshold(p, level)) {
            (_, Some(Threshold::Duration { seconds })) => u64::from(*seconds),
            _ => 0,
        }
    }

    fn reporting_from_s(&self, now_s: u32) -> u64 {
        if now_s == self.now_s {
            self.reporting_from_s
        } else {
            u64::MAX
        }
    }

    fn judge(&self, device_id: u64, since_s: u32, confirmed_s: u32, now_s: u32) -> Judgement {
        if now_s != self.now_s {
            // Prepared for another instant: judge afresh (slow, correct).
            return self
                .set
                .prepare(now_s)
                .judge(device_id, since_s, confirmed_s, now_s);
        }
        self.judge_detail(device_id, since_s, confirmed_s).judgement
    }

    fn event_info(&self, device_id: u64, level: Level, counted_from_s: u32) -> (u16, u64) {
        let a = self.set.assignment(device_id);
        let p = &self.set.policies[usize::from(a.policy)];
        let threshold_s = match level_threshold(p, level) {
            Some(t) => {
                let from = i64::from(self.set.after_outages(counted_from_s));
                u64::try_from(t.deadline_s(from) - i64::from(counted_from_s)).unwrap_or(0)
            }
            None => 0,
        };
        (a.policy, threshold_s)
    }

    fn policy_name(&self, policy: u16) -> &str {
        self.set
            .policies
            .get(usize::from(policy))
            .map_or("", |p| p.name.as_str())
    }
}

fn level_threshold(p: &PolicyDef, level: Level) -> Option<&Threshold> {
    match level {
        Level::Reporting => None,
        Level::Warned => Some(&p.warning),
        Level::Expired => Some(&p.expiry),
    }
}

/// Parses a threshold: a duration (`36h`, `90m`, `2d`, `1d12h`, `45s`) or `N working days`
/// (`N working day` for 1). Working days need a calendar, given by the caller.
///
/// # Errors
/// [`ThresholdParseError`] naming the text.
pub fn parse_threshold(
    text: &str,
    calendar: Option<(&Arc<Calendar>, &TimeZone)>,
) -> Result<Threshold, ThresholdParseError> {
    let t = text.trim();
    let bad = |reason| ThresholdParseError {
        text: text.to_string(),
        reason,
    };
    let words: Vec<&str> = t.split_whitespace().collect();
    if let [n, "working", unit] = words.as_slice()
        && (*unit == "days" || *unit == "day")
    {
        let n: u32 = n.parse().map_err(|_| bad(ThresholdParseReason::Number))?;
        if !(1..=WorkingDays::MAX).contains(&n) {
            return Err(bad(ThresholdParseReason::Range));
        }
        let (calendar, tz) = calendar.ok_or_else(|| bad(ThresholdParseReason::NoCalendar))?;
        return Ok(Threshold::WorkingDays(WorkingDays {
            n,
            calendar: calendar.clone(),
            time_zone: tz.clone(),
        }));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    if t.is_empty() {
        return Err(bad(ThresholdParseReason::Syntax));
    }
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad(ThresholdParseReason::Syntax)),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| bad(ThresholdParseReason::Syntax))?;
        digits.clear();
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !digits.is_empty() {
        return Err(bad(ThresholdParseReason::Syntax));
    }
    let seconds = u32::try_from(total).map_err(|_| bad(ThresholdParseReason::Range))?;
    if seconds == 0 {
        return Err(bad(ThresholdParseReason::Range));
    }
    Ok(Threshold::Duration { seconds })
}

/// A threshold string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("threshold {text:?}: {reason}")]
pub struct ThresholdParseError {
    /// The text.
    pub text: String,
    /// Why.
    pub reason: ThresholdParseReason,
}

/// Why a threshold string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ThresholdParseReason {
    /// Neither `<number><s|m|h|d>...` nor `N working days`.
    #[error("expected a duration like \"36h\" or \"3 working days\"")]
    Syntax,
    /// The count is not a number.
    #[error("the working-day count is not a number")]
    Number,
    /// Zero, too long, or more than `WorkingDays::MAX` working days.
    #[error("out of range (1 s ..= u32::MAX s, or 1..=66 working days)")]
    Range,
    /// Working days need `calendar = "..."` in the policy.
    #[error("working days need a calendar")]
    NoCalendar,
}

#[cfg(test)]
mod tests;
