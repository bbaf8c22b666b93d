//! Silence policies people can rely on: thresholds in durations, working days or calendar
//! days, policies assigned by device group, exemptions, server outages, confirmations,
//! calendar coverage.
//!
//! # Contract
//!
//! * [`PolicySet`] is built once from typed, validated parts (the binary parses the config and
//!   reads the calendar files). [`PolicySet::prepare`] turns it into a [`Prepared`] judge for one
//!   `now`: every (policy, level) cut-off instant is computed **once per scan**, so judging a
//!   device is a group lookup plus two compares. [`Prepared`] implements [`SilencePolicy`].
//! * The rules (written out with worked tables in `docs/SILENCE.md`):
//!   - A threshold fires at `deadline(since)`; a device is at a level when `now >= deadline`.
//!     `Duration(d)`: `deadline = since + d`. Day counts follow their [`Counting`] rule, with
//!     `D` the local date of `since` in the threshold's zone:
//!     [`Counting::Date`] (default): local 00:00 after the n-th (working) day after `D`;
//!     [`Counting::Instant`]: if `D` is a working day, wall time `T` of `since` on the n-th
//!     working day after `D`, otherwise 00:00 of the day after it (wall times that do not
//!     exist move forward by the gap, repeated ones take the first occurrence, and a `since`
//!     inside the repeated hour counts as the end of that hour, which keeps deadlines
//!     monotone); calendar days by `instant` are `n × 24 h`. `date` is never earlier.
//!   - Silence is counted from the *effective since*: the newest fix (or first contact),
//!     moved later by every server outage after it (outage time is not counted), by the end of
//!     the device's latest ended exemption window, and, for the warning only, by a
//!     confirmation ([`ConfirmResets`]).
//!   - An exempt device (permanently, or inside its window) is not judged: no events.
//!   - A working-day count that needs days outside its calendar's years is never silently
//!     computed: [`PastCoverage::Refuse`] gives [`Judgement::PastCoverage`] whenever the
//!     answer depends on those days ([`CoverageSpan::reached`]); `Weekends` counts them by
//!     the weekend rule.
//!   - [`PolicySet::fires`] answers "when does it fire" with these same rules (the CLI's
//!     answer equals the scan's, tested on random exemption windows).
//! * Pure: no clock, no IO.

use std::cell::Cell;
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
    /// A count of calendar days (`"2 days"`), in a time zone.
    Days(CalendarDays),
}

/// How a day-count threshold (`"3 working days"`, `"2 days"`) turns into an instant: the
/// policy key `counting` (docs/SILENCE.md, "Counting rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Counting {
    /// The legal rule: the period starts on the day after the local date of the last fix and
    /// ends at local 00:00 after its N-th full (working) day. Never earlier than
    /// [`Counting::Instant`], so it is the default.
    #[default]
    Date,
    /// The same wall-clock time N (working) days later (hexflow's rule before `counting`
    /// existed); plain `N × 24 h` for calendar days.
    Instant,
}

impl Counting {
    /// `date` or `instant`, as in the config.
    pub const fn as_str(self) -> &'static str {
        match self {
            Counting::Date => "date",
            Counting::Instant => "instant",
        }
    }

    /// Parses `date` or `instant`.
    pub fn parse(text: &str) -> Option<Counting> {
        match text {
            "date" => Some(Counting::Date),
            "instant" => Some(Counting::Instant),
            _ => None,
        }
    }
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
    /// How the days turn into an instant.
    pub counting: Counting,
}

/// What a scan does with a device whose working-day deadline would need days past its
/// calendar's coverage (the silence config key `past_coverage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PastCoverage {
    /// The device is not judged ([`Judgement::PastCoverage`]): its level stays, one
    /// `not_judged` event says why. The default: no deadline is ever guessed.
    #[default]
    Refuse,
    /// Days past the coverage count by the weekend rule only (no holidays); the scan counts
    /// such devices and the scanner logs a warning.
    Weekends,
}

impl PastCoverage {
    /// `refuse` or `weekends`, as in the config.
    pub const fn as_str(self) -> &'static str {
        match self {
            PastCoverage::Refuse => "refuse",
            PastCoverage::Weekends => "weekends",
        }
    }

    /// Parses `refuse` or `weekends`.
    pub fn parse(text: &str) -> Option<PastCoverage> {
        match text {
            "refuse" => Some(PastCoverage::Refuse),
            "weekends" => Some(PastCoverage::Weekends),
            _ => None,
        }
    }
}

/// Which `since` instants a working-day threshold can count inside its calendar's coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoverageSpan {
    /// Local 00:00 of the first covered day: an earlier `since` counts uncovered days.
    pub from_s: i64,
    /// Every `since` at or after this needs days past the last covered day (local 00:00
    /// after the last date whose count stays inside).
    pub until_s: i64,
    /// Local 00:00 after the last covered day: every deadline that needs uncovered days is at
    /// or after it, so before it such a deadline is known not to have passed.
    pub deadlines_from_s: i64,
}

impl CoverageSpan {
    /// Whether the count for `since_s` stays inside the coverage.
    pub fn covers(&self, since_s: i64) -> bool {
        (self.from_s..self.until_s).contains(&since_s)
    }

    /// Whether the threshold has been reached at `now_s` for `since_s`, given the cut-off
    /// `reached` computed with the weekend fallback: `None` when only the uncovered days could
    /// tell.
    pub fn reached(&self, since_s: i64, now_s: i64, reached: bool) -> Option<bool> {
        if self.covers(since_s) {
            Some(reached)
        } else if since_s >= self.until_s && now_s < self.deadlines_from_s {
            Some(false)
        } else {
            None
        }
    }
}

/// `n` calendar days, judged in a time zone (only [`Counting::Date`] needs the zone).
#[derive(Debug, Clone)]
pub struct CalendarDays {
    /// How many days, `1..=CalendarDays::MAX`.
    pub n: u32,
    /// The zone whose dates are counted.
    pub time_zone: TimeZone,
    /// How the days turn into an instant.
    pub counting: Counting,
}

impl CalendarDays {
    /// The largest accepted `n` (a year).
    pub const MAX: u32 = 366;

    /// The instant (Unix seconds) this threshold fires for silence counted from `since_s`:
    /// [`Counting::Instant`]: `since + n × 86 400`; [`Counting::Date`]: local 00:00 of the
    /// (n+1)-th date after the local date of `since`.
    pub fn deadline_s(&self, since_s: i64) -> i64 {
        match self.counting {
            Counting::Instant => since_s + i64::from(self.n) * 86_400,
            Counting::Date => {
                let Some(day) = local_day(&self.time_zone, since_s) else {
                    return T_MAX;
                };
                start_of_day_s(&self.time_zone, day + self.n as i32 + 1)
            }
        }
    }
}

/// The local date (as an epoch day) of `t_s` in `tz`, `None` outside jiff's range.
fn local_day(tz: &TimeZone, t_s: i64) -> Option<i32> {
    let ts = Timestamp::from_second(t_s).ok()?;
    Some(epoch_day(tz.to_datetime(ts).date()))
}

/// Local 00:00 of epoch day `day` in `tz` (a midnight inside a gap moves forward by the
/// gap), capped at [`T_MAX`].
fn start_of_day_s(tz: &TimeZone, day: i32) -> i64 {
    let local = DateTime::from_parts(date_of_epoch_day(day), Time::midnight());
    tz.to_timestamp(local)
        .map_or(T_MAX, |t| t.as_second().min(T_MAX))
}

/// The largest instant the table can hold (`u32` Unix seconds); deadlines are capped there.
const T_MAX: i64 = u32::MAX as i64;

impl WorkingDays {
    /// The largest accepted `n` (a quarter of a year of working days).
    pub const MAX: u32 = 66;

    /// The instant (Unix seconds) this threshold fires for silence counted from `since_s`,
    /// by [`WorkingDays::counting`].
    pub fn deadline_s(&self, since_s: i64) -> i64 {
        match self.counting {
            Counting::Instant => self.instant_deadline_s(since_s),
            Counting::Date => {
                // Days D+1, D+2, … are counted; the period ends at 00:00 after the n-th
                // working one. D's own kind plays no part.
                let Some(day) = local_day(&self.time_zone, since_s) else {
                    return T_MAX;
                };
                let last = self.calendar.nth_working_day_after(day, self.n);
                start_of_day_s(&self.time_zone, last + 1)
            }
        }
    }

    /// The `since` instants whose count stays inside the calendar's coverage (the count
    /// depends only on the local date of `since`, under either counting rule).
    pub fn coverage(&self) -> CoverageSpan {
        let tz = &self.time_zone;
        let (first, last) = self.calendar.covered_days();
        let from_s = start_of_day_s(tz, first);
        let until_s = self
            .calendar
            .last_covered_start(self.n)
            .map_or(from_s, |d| start_of_day_s(tz, d + 1));
        CoverageSpan {
            from_s,
            until_s,
            deadlines_from_s: start_of_day_s(tz, last + 1),
        }
    }

    /// [`Counting::Instant`]: wall time of `since` on the n-th working day after its date (a
    /// non-working date: 00:00 after the n-th working day).
    fn instant_deadline_s(&self, since_s: i64) -> i64 {
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
            Threshold::Days(d) => d.deadline_s(since_s),
        }
    }

    /// For a threshold counted in dates ([`Counting::Date`], working or calendar days): its
    /// deadline for `since_s` with the span of instants that share it, `(from_s, until_s,
    /// deadline_s)`: the local day of `since_s`, from its 00:00 to the next, when no time-zone
    /// transition falls inside that day (a date-counted deadline depends only on the local
    /// date of `since`, and with one offset all day every instant of the span has that date).
    /// `None` for the other thresholds, for a day with a transition inside it, and outside
    /// jiff's range: the caller then asks [`Threshold::deadline_s`].
    pub fn day_deadline(&self, since_s: i64) -> Option<(i64, i64, i64)> {
        let (tz, after_day): (&TimeZone, &dyn Fn(i32) -> i32) = match self {
            Threshold::WorkingDays(w) if w.counting == Counting::Date => (&w.time_zone, &|day| {
                w.calendar.nth_working_day_after(day, w.n) + 1
            }),
            Threshold::Days(d) if d.counting == Counting::Date => {
                (&d.time_zone, &|day| day + d.n as i32 + 1)
            }
            _ => return None,
        };
        let day = local_day(tz, since_s)?;
        let from_s = start_of_day_s(tz, day);
        let until_s = start_of_day_s(tz, day + 1);
        let inner_transition = Timestamp::from_second(until_s)
            .ok()
            .and_then(|t| tz.preceding(t).next())
            .is_some_and(|t| t.timestamp().as_second() > from_s);
        if inner_transition || !(from_s..until_s).contains(&since_s) || until_s >= T_MAX {
            return None;
        }
        Some((from_s, until_s, start_of_day_s(tz, after_day(day))))
    }

    /// The calendar coverage of a working-day threshold; `None` for the others (they need no
    /// calendar).
    pub fn coverage(&self) -> Option<CoverageSpan> {
        match self {
            Threshold::WorkingDays(w) => Some(w.coverage()),
            Threshold::Duration { .. } | Threshold::Days(_) => None,
        }
    }

    /// The deadline for `since_s`, or `None` when it needs days past the calendar's coverage
    /// and `past_coverage` is [`PastCoverage::Refuse`].
    pub fn deadline_within(&self, since_s: i64, past_coverage: PastCoverage) -> Option<i64> {
        match (self.coverage(), past_coverage) {
            (Some(c), PastCoverage::Refuse) if !c.covers(since_s) => None,
            _ => Some(self.deadline_s(since_s)),
        }
    }

    /// The cut-off at `now_s`: every `since` at or after it has not reached this threshold, and
    /// every `since` before it has (deadlines are monotone in `since`). Exact.
    pub fn cutoff_s(&self, now_s: i64) -> i64 {
        match self {
            Threshold::Duration { seconds } => now_s - i64::from(*seconds) + 1,
            Threshold::Days(d) if d.counting == Counting::Instant => {
                now_s - i64::from(d.n) * 86_400 + 1
            }
            Threshold::Days(d) => bisect_cutoff(|t| d.deadline_s(t), d.n, now_s),
            Threshold::WorkingDays(w) => bisect_cutoff(|t| w.deadline_s(t), w.n, now_s),
        }
    }

    /// Human form: `36h` style seconds, `3 working days (de, Europe/Berlin, by date)` or
    /// `2 days (Europe/Berlin, by date)`.
    pub fn describe(&self) -> String {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        match self {
            Threshold::Duration { seconds } => format!("{seconds}s"),
            Threshold::WorkingDays(w) => format!(
                "{} working day{} ({}, {}, by {})",
                w.n,
                plural(w.n),
                w.calendar.name(),
                w.time_zone.iana_name().unwrap_or("?"),
                w.counting.as_str()
            ),
            Threshold::Days(d) => format!(
                "{} day{} ({}, by {})",
                d.n,
                plural(d.n),
                d.time_zone.iana_name().unwrap_or("?"),
                d.counting.as_str()
            ),
        }
    }
}

/// The exact cut-off of a monotone `deadline` (with `deadline(t) > t`) at `now_s`: the
/// smallest `t` with `deadline(t) > now_s`, by doubling then bisection. `n` (the day count)
/// only sizes the first step.
fn bisect_cutoff(deadline: impl Fn(i64) -> i64, n: u32, now_s: i64) -> i64 {
    // deadline(t) > t always, so hi = now_s qualifies; find lo with deadline <= now.
    let mut hi = now_s;
    let mut step = 86_400 * (i64::from(n) + 2);
    let mut lo = now_s - step;
    while deadline(lo) > now_s {
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
        if deadline(mid) > now_s {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// How a confirmation (the device answering the confirm-location request) resets the clock.
///
/// There is one rule: a confirmation answers the warning, never the expiry. (`Full`, which
/// counted the expiry from the confirmation too, was removed: a device that answered every
/// request but never sent a position then never expired.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfirmResets {
    /// The warning is counted from the confirmation; expiry still from the newest fix.
    Warning,
}

impl ConfirmResets {
    /// `warning`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfirmResets::Warning => "warning",
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
    past_coverage: PastCoverage,
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
            past_coverage: PastCoverage::default(),
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

    /// Sets what a scan does when a deadline would need days past a calendar's coverage.
    pub fn set_past_coverage(&mut self, past_coverage: PastCoverage) {
        self.past_coverage = past_coverage;
    }

    /// What a scan does when a deadline would need days past a calendar's coverage.
    pub fn past_coverage(&self) -> PastCoverage {
        self.past_coverage
    }

    /// Every distinct calendar a policy counts working days on, in policy order.
    pub fn calendars(&self) -> Vec<Arc<Calendar>> {
        let mut out: Vec<Arc<Calendar>> = Vec::new();
        for p in &self.policies {
            for t in [&p.warning, &p.expiry] {
                if let Threshold::WorkingDays(w) = t
                    && !out.iter().any(|c| Arc::ptr_eq(c, &w.calendar))
                {
                    out.push(w.calendar.clone());
                }
            }
        }
        out
    }

    /// The names of the calendars in use whose coverage has ended at `now_s`.
    pub fn calendars_past_coverage(&self, now_s: i64) -> Vec<String> {
        self.calendars()
            .iter()
            .map(|c| c.coverage_at(now_s))
            .filter(|c| c.days_left < 0)
            .map(|c| c.name)
            .collect()
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

    /// Whether an exemption window came into force in `(after_s, now_s]` and is in force at
    /// `now_s` (with `after_s = None`: whether any is in force at `now_s`). The scanner then
    /// cancels the outstanding confirm requests of the devices it covers.
    pub fn exemption_began(&self, after_s: Option<u32>, now_s: u32) -> bool {
        self.exemptions.iter().any(|e| {
            let in_force =
                e.from_s.is_none_or(|f| f <= now_s) && e.until_s.is_none_or(|u| now_s < u);
            let began = match after_s {
                None => true,
                Some(after) => e.from_s.is_some_and(|f| after < f),
            };
            in_force && began
        })
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
        let (cutoffs, coverage) = self.cutoffs_at(now);
        let reporting_from_s = Self::reporting_bound(&cutoffs, &coverage, now);
        Prepared {
            set: self,
            now_s,
            cutoffs,
            coverage,
            reporting_from_s,
            memo: [Cell::new(None), Cell::new(None)],
        }
    }

    /// [`Prepared`]'s `reporting_from_s` for an instant `now` (Unix seconds), from scratch.
    fn reporting_from_at(&self, now: i64) -> u64 {
        let (cutoffs, coverage) = self.cutoffs_at(now);
        Self::reporting_bound(&cutoffs, &coverage, now)
    }

    /// Per policy, the `[warning, expiry]` cut-offs at `now` (a `since_s` before one has
    /// crossed it) and the calendar coverage that bounds them (none under `weekends`).
    fn cutoffs_at(&self, now: i64) -> (Vec<[u64; 2]>, Vec<[Option<CoverageSpan>; 2]>) {
        let clamp = |c: i64| c.clamp(0, T_MAX + 1) as u64;
        let cutoffs = self
            .policies
            .iter()
            .map(|p| {
                [
                    clamp(p.warning.cutoff_s(now)),
                    clamp(p.expiry.cutoff_s(now)),
                ]
            })
            .collect();
        let coverage = self
            .policies
            .iter()
            .map(|p| match self.past_coverage {
                PastCoverage::Refuse => [p.warning.coverage(), p.expiry.coverage()],
                PastCoverage::Weekends => [None, None],
            })
            .collect();
        (cutoffs, coverage)
    }

    /// The fast-path bound at `now` from its cut-offs and the calendar coverage: a `since_s`
    /// at or after it is reporting at `now` under every policy.
    fn reporting_bound(
        cutoffs: &[[u64; 2]],
        coverage: &[[Option<CoverageSpan>; 2]],
        now: i64,
    ) -> u64 {
        let clamp = |c: i64| c.clamp(0, T_MAX + 1) as u64;
        let mut reporting_from_s = cutoffs.iter().map(|c| c[0].max(c[1])).max().unwrap_or(0);
        // The fast path may only skip devices whose answer the coverage can give: a fix
        // before the coverage starts is never skipped, and once a deadline could lie past
        // its end (now >= deadlines_from_s) a fresh fix is not either (its count needs
        // uncovered days), so then every device is judged.
        for c in coverage.iter().flatten().flatten() {
            let floor = if now >= c.deadlines_from_s {
                T_MAX + 1
            } else {
                c.from_s
            };
            reporting_from_s = reporting_from_s.max(clamp(floor));
        }
        reporting_from_s
    }

    /// When the thresholds of `policy` fire for a device of that policy whose newest fix is
    /// at `last_fix_s` (no outage, exemption or confirmation applied): `(warning, expiry)`.
    pub fn when(&self, policy: &PolicyDef, last_fix_s: i64) -> (i64, i64) {
        (
            policy.warning.deadline_s(last_fix_s),
            policy.expiry.deadline_s(last_fix_s),
        )
    }

    /// When a scan would first see `device_id` (if given; else a device with no exemption)
    /// at each level of `policy`, its newest fix at `last_fix_s` and no confirmation: the
    /// answer of `hexflow policy when`. It applies exactly the rules of
    /// [`Prepared::judge_detail`] (outages, exemption windows with their `from` and `until`,
    /// calendar coverage), so the first scan at or after [`Firing::At`] sees the level and no
    /// scan before it does.
    pub fn fires(&self, policy: &PolicyDef, device_id: Option<u64>, last_fix_s: i64) -> When {
        let (warning, warning_from_s) = self.fire(&policy.warning, device_id, last_fix_s);
        let (expiry, expiry_from_s) = self.fire(&policy.expiry, device_id, last_fix_s);
        When {
            warning,
            expiry,
            warning_from_s,
            expiry_from_s,
        }
    }

    /// One threshold of [`PolicySet::fires`]: the fixpoint of "deadline from the fix, moved
    /// past every exemption window the deadline falls into or after".
    /// Also returns the instant the count started from.
    fn fire(&self, t: &Threshold, device_id: Option<u64>, last_fix_s: i64) -> (Firing, i64) {
        let fix = u32::try_from(last_fix_s.clamp(0, T_MAX)).unwrap_or(u32::MAX);
        let mut from = i64::from(self.after_outages(fix));
        // Each round moves `from` to a later window end, so there are at most as many rounds
        // as exemptions (plus the last).
        for _ in 0..=self.exemptions.len() {
            let Some(at) = t.deadline_within(from, self.past_coverage) else {
                return (Firing::PastCoverage, from);
            };
            let Some(device_id) = device_id else {
                return (Firing::At(at), from);
            };
            let at_u32 = u32::try_from(at.clamp(0, T_MAX)).unwrap_or(u32::MAX);
            match self.exemption(device_id, at_u32) {
                ExemptionState::Exempt(e) => match e.until_s {
                    None => return (Firing::Never, from),
                    Some(until_s) => from = from.max(i64::from(until_s)),
                },
                ExemptionState::NotExempt { ended_s } if i64::from(ended_s) > from => {
                    from = i64::from(ended_s);
                }
                ExemptionState::NotExempt { .. } => return (Firing::At(at), from),
            }
        }
        let firing = t
            .deadline_within(from, self.past_coverage)
            .map_or(Firing::PastCoverage, Firing::At);
        (firing, from)
    }
}

/// When a threshold fires for one device ([`PolicySet::fires`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// The first scan at or after this instant (Unix seconds) sees the level.
    At(i64),
    /// Never: a permanent exemption (or one with no end in sight) is in force then.
    Never,
    /// Not computed: the deadline needs days past the calendar's coverage and
    /// `past_coverage = "refuse"` (the scan would not judge the device).
    PastCoverage,
}

/// Both thresholds of [`PolicySet::fires`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    /// When the device is warned.
    pub warning: Firing,
    /// When it expires.
    pub expiry: Firing,
    /// The instant the warning's count started from (the fix, or an exemption's end).
    pub warning_from_s: i64,
    /// The instant the expiry's count started from.
    pub expiry_from_s: i64,
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
                Threshold::Days(d) => (1..=CalendarDays::MAX).contains(&d.n),
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
            (Threshold::Days(w), Threshold::Days(e)) if w.counting == e.counting => e.n > w.n,
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
    /// Per policy: `[warning, expiry]` calendar coverage, when `past_coverage = refuse` and
    /// the threshold counts working days.
    coverage: Vec<[Option<CoverageSpan>; 2]>,
    reporting_from_s: u64,
    /// Per threshold (`[warning, expiry]`): the last date-counted deadline computed and the
    /// instants it holds for ([`Threshold::day_deadline`]). Devices that went silent on the
    /// same day share it, so a scan in which a cohort crosses computes it once instead of
    /// converting time zones for each device. Only a cache: every answer equals
    /// [`Threshold::deadline_s`] (test `the_day_memo_gives_the_deadline_of_every_instant`).
    memo: [Cell<Option<DayDeadline>>; 2],
}

/// One entry of [`Prepared`]'s deadline memo.
#[derive(Debug, Clone, Copy)]
struct DayDeadline {
    policy: u16,
    from_s: i64,
    until_s: i64,
    deadline_s: i64,
}

impl Prepared<'_> {
    /// Threshold `which` (0 warning, 1 expiry) of policy `policy` (the threshold `t`): its
    /// deadline for silence counted from `from_s`, through the memo.
    fn deadline_s(&self, policy: u16, which: usize, t: &Threshold, from_s: i64) -> i64 {
        let memo = &self.memo[which];
        if let Some(m) = memo.get()
            && m.policy == policy
            && (m.from_s..m.until_s).contains(&from_s)
        {
            return m.deadline_s;
        }
        match t.day_deadline(from_s) {
            Some((day_from_s, until_s, deadline_s)) => {
                memo.set(Some(DayDeadline {
                    policy,
                    from_s: day_from_s,
                    until_s,
                    deadline_s,
                }));
                deadline_s
            }
            None => t.deadline_s(from_s),
        }
    }

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
        // A confirmation never moves the expiry (ConfirmResets has no other rule).
        let ConfirmResets::Warning = policy.confirm_resets;
        let expiry_from_s = base;
        let [cut_w, cut_e] = self.cutoffs[usize::from(a.policy)];
        let [cov_w, cov_e] = &self.coverage[usize::from(a.policy)];
        let now = i64::from(self.now_s);
        let reached = |cov: &Option<CoverageSpan>, from: u32, cut: u64| {
            let r = u64::from(from) < cut;
            cov.map_or(Some(r), |c| c.reached(i64::from(from), now, r))
        };
        let judgement = match (
            reached(cov_e, expiry_from_s, cut_e),
            reached(cov_w, warning_from_s, cut_w),
        ) {
            (Some(true), _) => Judgement::Level(Level::Expired),
            (Some(false), Some(true)) => Judgement::Level(Level::Warned),
            (Some(false), Some(false)) => Judgement::Level(Level::Reporting),
            _ => Judgement::PastCoverage,
        };
        JudgeDetail {
            assignment: a,
            judgement,
            warning_from_s,
            expiry_from_s,
        }
    }
}

impl Prepared<'_> {
    /// [`SilencePolicy::judgement_until_s`] at this `now`: the first instant after it at which
    /// the judgement of the device can change. That is the earliest of: a start or an end of
    /// one of its exemption windows (exempt, or the counting base moves), its warning or expiry
    /// deadline counted from the same instants [`Prepared::judge_detail`] uses (the cut-offs
    /// are exact: a threshold is reached at `now` exactly when its deadline is at or before
    /// `now`), and, under `past_coverage = "refuse"`, the instant a count that needs uncovered
    /// days stops being provably unreached (`deadlines_from_s`). Outages and assignments are
    /// fixed for the set. `u32::MAX` when none lies ahead.
    fn until_s(&self, device_id: u64, since_s: u32, confirmed_s: u32) -> u32 {
        let now = i64::from(self.now_s);
        let mut until = T_MAX;
        let mut ahead = |t: i64| {
            if t > now {
                until = until.min(t);
            }
        };
        let group = self
            .set
            .assignment(device_id)
            .group
            .map(|g| self.set.groups[usize::from(g)].name.as_str());
        for e in &self.set.exemptions {
            let applies = match &e.target {
                ExemptionTarget::Device(d) => *d == device_id,
                ExemptionTarget::Group(g) => Some(g.as_str()) == group,
            };
            if applies {
                e.from_s
                    .into_iter()
                    .chain(e.until_s)
                    .for_each(|b| ahead(i64::from(b)));
            }
        }
        let d = self.judge_detail(device_id, since_s, confirmed_s);
        if d.judgement != Judgement::Exempt {
            let policy = d.assignment.policy;
            let p = &self.set.policies[usize::from(policy)];
            let thresholds = [(&p.warning, d.warning_from_s), (&p.expiry, d.expiry_from_s)];
            for (which, (t, from)) in thresholds.into_iter().enumerate() {
                let from = i64::from(from);
                ahead(self.deadline_s(policy, which, t, from));
                // Set only under `past_coverage = "refuse"`, for working-day thresholds.
                if let Some(c) = &self.coverage[usize::from(policy)][which]
                    && !c.covers(from)
                {
                    ahead(c.deadlines_from_s);
                }
            }
        }
        u32::try_from(until).unwrap_or(u32::MAX)
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
            Judgement::Exempt | Judgement::PastCoverage => Level::Reporting,
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

    fn reporting_from_later_s(&self, now_s: u32, later_s: u32) -> u64 {
        // Cut-offs are monotone in `now`, so the later bound is at least this one.
        if now_s == self.now_s && later_s >= now_s {
            self.set.reporting_from_at(i64::from(later_s))
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

    fn judgement_until_s(&self, device_id: u64, since_s: u32, confirmed_s: u32, now_s: u32) -> u32 {
        if now_s == self.now_s {
            self.until_s(device_id, since_s, confirmed_s)
        } else {
            0
        }
    }

    fn event_info(&self, device_id: u64, level: Level, counted_from_s: u32) -> (u16, u64) {
        let a = self.set.assignment(device_id);
        let p = &self.set.policies[usize::from(a.policy)];
        let threshold_s = match level_threshold(p, level) {
            Some(t) => {
                let which = usize::from(level == Level::Expired);
                let from = i64::from(self.set.after_outages(counted_from_s));
                let deadline_s = self.deadline_s(a.policy, which, t, from);
                u64::try_from(deadline_s - i64::from(counted_from_s)).unwrap_or(0)
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

/// What a day-count phrase needs besides its text: the policy's calendar, its time zone
/// (the policy's `time_zone`, else the calendar's) and its counting rule.
#[derive(Debug, Clone, Copy)]
pub struct PhraseContext<'a> {
    /// The policy's calendar (needed by `N working days`).
    pub calendar: Option<&'a Arc<Calendar>>,
    /// The zone days are counted in (needed by working days, and by `N days` under
    /// [`Counting::Date`]).
    pub time_zone: Option<&'a TimeZone>,
    /// The policy's counting rule.
    pub counting: Counting,
}

impl PhraseContext<'_> {
    /// No calendar, no zone: only durations parse.
    pub const DURATIONS_ONLY: PhraseContext<'static> = PhraseContext {
        calendar: None,
        time_zone: None,
        counting: Counting::Date,
    };
}

/// Parses a threshold. One meaning per form (docs/SILENCE.md, "Thresholds"):
///
/// * a compact duration (`36h`, `90m`, `2d`, `1d12h`, `45s`): exactly that many real
///   seconds, whatever the counting rule;
/// * `N working days` (`N working day` for 1), or `more than N working days` (the same
///   threshold in the words of a regulation: the silence is "more than N working days" from
///   the moment the N-th working day is over): counted on the calendar by `ctx.counting`;
/// * `N days` / `more than N days`: calendar days, counted by `ctx.counting` (`instant`:
///   `N × 24 h`; `date`: 00:00 after the N-th full day, which needs a zone).
///
/// Words are case-insensitive and may be separated by any whitespace.
///
/// # Errors
/// [`ThresholdParseError`] naming the text.
pub fn parse_threshold(
    text: &str,
    ctx: &PhraseContext<'_>,
) -> Result<Threshold, ThresholdParseError> {
    let lower = text.trim().to_ascii_lowercase();
    let bad = |reason| ThresholdParseError {
        text: text.to_string(),
        reason,
    };
    let mut words: Vec<&str> = lower.split_whitespace().collect();
    if let ["more", "than", ..] = words.as_slice() {
        words.drain(..2);
        if words.is_empty() {
            return Err(bad(ThresholdParseReason::Syntax));
        }
    }
    let count = |n: &str, max: u32| -> Result<u32, ThresholdParseError> {
        let n: u32 = n.parse().map_err(|_| bad(ThresholdParseReason::Number))?;
        if (1..=max).contains(&n) {
            Ok(n)
        } else {
            Err(bad(ThresholdParseReason::Range))
        }
    };
    match words.as_slice() {
        [n, "working", "days" | "day"] => {
            let n = count(n, WorkingDays::MAX)?;
            let (Some(calendar), Some(tz)) = (ctx.calendar, ctx.time_zone) else {
                return Err(bad(ThresholdParseReason::NoCalendar));
            };
            Ok(Threshold::WorkingDays(WorkingDays {
                n,
                calendar: calendar.clone(),
                time_zone: tz.clone(),
                counting: ctx.counting,
            }))
        }
        [n, "days" | "day"] => {
            let n = count(n, CalendarDays::MAX)?;
            let time_zone = match (ctx.time_zone, ctx.counting) {
                (Some(tz), _) => tz.clone(),
                (None, Counting::Instant) => TimeZone::UTC,
                (None, Counting::Date) => return Err(bad(ThresholdParseReason::NoTimeZone)),
            };
            Ok(Threshold::Days(CalendarDays {
                n,
                time_zone,
                counting: ctx.counting,
            }))
        }
        [compact] if !lower.starts_with("more") => parse_duration(compact).map_err(bad),
        _ => Err(bad(ThresholdParseReason::Syntax)),
    }
}

/// `36h`, `1d12h30m5s`: real seconds, `1..=u32::MAX`.
fn parse_duration(t: &str) -> Result<Threshold, ThresholdParseReason> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    if t.is_empty() {
        return Err(ThresholdParseReason::Syntax);
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
            _ => return Err(ThresholdParseReason::Syntax),
        };
        let n: u64 = digits.parse().map_err(|_| ThresholdParseReason::Syntax)?;
        digits.clear();
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !digits.is_empty() {
        return Err(ThresholdParseReason::Syntax);
    }
    let seconds = u32::try_from(total).map_err(|_| ThresholdParseReason::Range)?;
    if seconds == 0 {
        return Err(ThresholdParseReason::Range);
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
    /// Not `<number><s|m|h|d>...`, `[more than] N working days` or `[more than] N days`.
    #[error(
        "expected a duration like \"36h\", \"3 working days\", \"more than 3 working days\" or \"2 days\""
    )]
    Syntax,
    /// The count is not a number.
    #[error("the working-day count is not a number")]
    Number,
    /// Zero, too long, more than `WorkingDays::MAX` working days or `CalendarDays::MAX` days.
    #[error("out of range (1 s ..= u32::MAX s, 1..=66 working days, or 1..=366 days)")]
    Range,
    /// Working days need `calendar = "..."` in the policy.
    #[error("working days need a calendar")]
    NoCalendar,
    /// `N days` counted by date need a zone: the policy's `time_zone` or its calendar's.
    #[error("days counted by date need a time zone (time_zone or calendar)")]
    NoTimeZone,
}

#[cfg(test)]
mod tests;
