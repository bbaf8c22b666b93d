//! The silence policy: pure functions from "silent since" and `now` to a [`Level`].
//!
//! # Contract
//!
//! * Pure: no clock, no IO, no shared state. The same inputs always give the same level.
//! * [`SilencePolicy`] is the seam later work extends (working days, calendars, per-device
//!   exemptions): the scanner only talks to the trait. [`Policy`] is v0: two fixed thresholds.
//! * [`next_level`] is the one place that decides which level changes exist: a silent device
//!   only moves up the ladder (`Warned → Expired`) or back to `Reporting` (with a fix; a
//!   warning also with a confirmation); it is never moved down from `Expired` to `Warned`.

use thiserror::Error;

/// How silent a device is, as judged by a [`SilencePolicy`]. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fixes arrive often enough.
    Reporting,
    /// Silent for at least the warning threshold.
    Warned,
    /// Silent for at least the expiry threshold.
    Expired,
}

impl Level {
    /// Stable lower-case name, as used in the JSON event lines: `reporting`, `warned`,
    /// `expired`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Reporting => "reporting",
            Level::Warned => "warned",
            Level::Expired => "expired",
        }
    }

    /// The compact encoding kept in a slot's `state` word (bits 0..2).
    pub(crate) const fn to_bits(self) -> u32 {
        match self {
            Level::Reporting => 0,
            Level::Warned => 1,
            Level::Expired => 2,
        }
    }

    /// Decodes [`Level::to_bits`]. Only the scanner writes the state word, and it only writes
    /// values from `to_bits`, so the other bit patterns never occur.
    pub(crate) const fn from_bits(bits: u32) -> Level {
        match bits & LEVEL_MASK {
            0 => Level::Reporting,
            1 => Level::Warned,
            _ => Level::Expired,
        }
    }
}

/// Bits of a slot's `state` word that hold the level; the others are reserved for flags.
pub(crate) const LEVEL_MASK: u32 = 0b11;

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides how silent a device is. Implementations must be pure: no clock, no IO.
pub trait SilencePolicy {
    /// The level of `device_id`, silent since `since_s` (its newest fix, or its first contact
    /// if it never sent a fix), judged at `now_s`. Both are Unix seconds. A `since_s` after
    /// `now_s` (a device clock running ahead) must count as no silence at all.
    fn level(&self, device_id: u64, since_s: u32, now_s: u32) -> Level;

    /// The silence (seconds) after which `device_id` reaches `level`; `0` for
    /// [`Level::Reporting`]. Carried in events as `threshold_s`.
    fn threshold_s(&self, device_id: u64, level: Level) -> u64;

    /// A fast-path bound for the scanner: every device whose `since_s` is at or after the
    /// returned value is [`Level::Reporting`] at `now_s`, whatever its id. The scanner then
    /// skips the per-device [`SilencePolicy::level`] call for it. The default, `u64::MAX`,
    /// promises nothing and is always correct; returning a bound that is too low is a bug.
    fn reporting_from_s(&self, now_s: u32) -> u64 {
        let _ = now_s;
        u64::MAX
    }

    /// [`SilencePolicy::reporting_from_s`] for a later instant, the scanner's look-ahead:
    /// every device whose `since_s` is at or after the returned value is still
    /// [`Level::Reporting`] at `later_s` (`>= now_s`, the instant this policy was asked about
    /// in `reporting_from_s`). The scanner keeps the devices that come due before `later_s` on
    /// a watch list and judges them one by one, so a block of slots is not re-read in full
    /// the moment one of its devices crosses a threshold. The default, `u64::MAX`, promises
    /// nothing (the scanner then looks no further than `now_s`); a bound that is too low is a
    /// bug.
    fn reporting_from_later_s(&self, now_s: u32, later_s: u32) -> u64 {
        let _ = (now_s, later_s);
        u64::MAX
    }

    /// The scanner's deadline for one device: an instant `until_s` such that
    /// [`SilencePolicy::judge`]`(device_id, since_s, confirmed_s, t)` equals its value at
    /// `now_s` for every `t` in `now_s..until_s`. The scanner does not judge a silent (or
    /// exempt, or soon due) device again before `until_s` unless a fix, a confirmation or a
    /// claim in its block wakes it, so scans cost nothing for devices whose level cannot
    /// change. The default, `0`, promises nothing (the device is judged at every scan) and is
    /// always correct; a deadline later than the first change is a bug. A table must be
    /// scanned with one policy (or policies that answer alike), because the scanner keeps
    /// these answers from one scan to the next.
    fn judgement_until_s(&self, device_id: u64, since_s: u32, confirmed_s: u32, now_s: u32) -> u32 {
        let _ = (device_id, since_s, confirmed_s, now_s);
        0
    }

    /// Judges `device_id`, silent since `since_s`, that last confirmed its location at
    /// `confirmed_s` (0: never), at `now_s`: [`Judgement::Exempt`] (the scanner leaves it alone
    /// and raises nothing) or its level. The default ignores confirmations and exemptions.
    fn judge(&self, device_id: u64, since_s: u32, confirmed_s: u32, now_s: u32) -> Judgement {
        let _ = confirmed_s;
        Judgement::Level(self.level(device_id, since_s, now_s))
    }

    /// For an event taking `device_id` to (or, for `resumed`, out of) `level`, silent since
    /// `counted_from_s`: the index of its policy and the silence (seconds) the threshold
    /// amounted to. The default: policy 0 and [`SilencePolicy::threshold_s`].
    fn event_info(&self, device_id: u64, level: Level, counted_from_s: u32) -> (u16, u64) {
        let _ = counted_from_s;
        (0, self.threshold_s(device_id, level))
    }

    /// The name of policy `policy` (an index from [`SilencePolicy::event_info`]).
    fn policy_name(&self, policy: u16) -> &str {
        let _ = policy;
        "default"
    }
}

/// How a scan judges one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Exempt: leave its level alone, raise nothing.
    Exempt,
    /// Its level.
    Level(Level),
    /// Not judged: a deadline would need days past its calendar's coverage
    /// (`past_coverage = "refuse"`). Its level stays; the scan reports it once.
    PastCoverage,
}

/// Silence policy v0: warned after `warning_after_s` without a fix, expired after
/// `expiry_after_s`, the same for every device and every day.
///
/// The rule: with `silent_s = now_s - since_s` (0 if `since_s` is in the future), the level is
/// `Expired` when `silent_s >= expiry_after_s`, else `Warned` when
/// `silent_s >= warning_after_s`, else `Reporting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    warning_after_s: u64,
    expiry_after_s: u64,
}

/// [`Policy::new`] refused its thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A zero warning threshold would warn every device at every scan.
    #[error("warning_after_s must be at least 1")]
    WarningZero,
    /// Expiry must come strictly after the warning.
    #[error(
        "expiry_after_s ({expiry_after_s}) must be greater than warning_after_s ({warning_after_s})"
    )]
    ExpiryNotAfterWarning {
        /// The configured warning threshold.
        warning_after_s: u64,
        /// The configured expiry threshold.
        expiry_after_s: u64,
    },
    /// Times are `u32` Unix seconds, so a longer threshold could never be reached.
    #[error("expiry_after_s ({expiry_after_s}) exceeds the largest reachable silence ({max_s} s)")]
    ExpiryTooLarge {
        /// The configured expiry threshold.
        expiry_after_s: u64,
        /// The largest accepted value.
        max_s: u64,
    },
}

impl Policy {
    /// The largest accepted threshold: the longest silence `u32` Unix seconds can express.
    pub const THRESHOLD_MAX_S: u64 = u32::MAX as u64;

    /// A policy with the given thresholds.
    ///
    /// # Errors
    /// [`PolicyError::WarningZero`] if `warning_after_s == 0`,
    /// [`PolicyError::ExpiryNotAfterWarning`] if `expiry_after_s <= warning_after_s`,
    /// [`PolicyError::ExpiryTooLarge`] if `expiry_after_s > Policy::THRESHOLD_MAX_S`.
    pub fn new(warning_after_s: u64, expiry_after_s: u64) -> Result<Self, PolicyError> {
        if warning_after_s == 0 {
            return Err(PolicyError::WarningZero);
        }
        if expiry_after_s <= warning_after_s {
            return Err(PolicyError::ExpiryNotAfterWarning {
                warning_after_s,
                expiry_after_s,
            });
        }
        if expiry_after_s > Self::THRESHOLD_MAX_S {
            return Err(PolicyError::ExpiryTooLarge {
                expiry_after_s,
                max_s: Self::THRESHOLD_MAX_S,
            });
        }
        Ok(Self {
            warning_after_s,
            expiry_after_s,
        })
    }

    /// Silence after which a device is warned.
    pub fn warning_after_s(&self) -> u64 {
        self.warning_after_s
    }

    /// Silence after which a device is expired.
    pub fn expiry_after_s(&self) -> u64 {
        self.expiry_after_s
    }

    /// The level of a device whose silence is counted from `last_fix_s`, at `now_s`.
    pub fn level(&self, last_fix_s: u32, now_s: u32) -> Level {
        let silent_s = u64::from(now_s.saturating_sub(last_fix_s));
        if silent_s >= self.expiry_after_s {
            Level::Expired
        } else if silent_s >= self.warning_after_s {
            Level::Warned
        } else {
            Level::Reporting
        }
    }
}

impl SilencePolicy for Policy {
    fn level(&self, _device_id: u64, since_s: u32, now_s: u32) -> Level {
        Policy::level(self, since_s, now_s)
    }

    fn threshold_s(&self, _device_id: u64, level: Level) -> u64 {
        match level {
            Level::Reporting => 0,
            Level::Warned => self.warning_after_s,
            Level::Expired => self.expiry_after_s,
        }
    }

    fn reporting_from_s(&self, now_s: u32) -> u64 {
        // since_s >= now_s + 1 - warning  <=>  now_s - since_s < warning (or since_s in the
        // future, which saturates to 0 silence).
        (u64::from(now_s) + 1).saturating_sub(self.warning_after_s)
    }

    fn reporting_from_later_s(&self, _now_s: u32, later_s: u32) -> u64 {
        SilencePolicy::reporting_from_s(self, later_s)
    }

    fn judgement_until_s(&self, _device_id: u64, since_s: u32, _confirmed: u32, now_s: u32) -> u32 {
        // The level changes when the silence `t - since_s` (0 before `since_s`) reaches the
        // next threshold, i.e. at `since_s + threshold`; an expired device never changes.
        let silent_s = u64::from(now_s.saturating_sub(since_s));
        let next_s = if silent_s < self.warning_after_s {
            self.warning_after_s
        } else if silent_s < self.expiry_after_s {
            self.expiry_after_s
        } else {
            return u32::MAX;
        };
        u32::try_from(u64::from(since_s) + next_s).unwrap_or(u32::MAX)
    }
}

/// The level a device moves to when it was at `previous` and the policy now judges `judged`;
/// `fresh_fix`: a fix arrived since the device was last judged silent; `confirmed`: it has a
/// pending confirmation (a HERE answer).
///
/// * Up the ladder whenever the policy says so; never down from `Expired` to `Warned`.
/// * Back to [`Level::Reporting`] only with a fresh fix, or, from `Warned` only, with a
///   confirmation. So nothing but a fix un-expires a device, and the end of an exemption
///   window or an outage (which move the count later) never lowers a level by itself.
pub fn next_level(previous: Level, judged: Level, fresh_fix: bool, confirmed: bool) -> Level {
    match judged {
        Level::Reporting if fresh_fix => Level::Reporting,
        Level::Reporting if previous == Level::Warned && confirmed => Level::Reporting,
        Level::Reporting => previous,
        _ => previous.max(judged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates_thresholds() {
        assert_eq!(Policy::new(0, 10), Err(PolicyError::WarningZero));
        assert_eq!(
            Policy::new(10, 10),
            Err(PolicyError::ExpiryNotAfterWarning {
                warning_after_s: 10,
                expiry_after_s: 10
            })
        );
        assert_eq!(
            Policy::new(10, 9),
            Err(PolicyError::ExpiryNotAfterWarning {
                warning_after_s: 10,
                expiry_after_s: 9
            })
        );
        let max = Policy::THRESHOLD_MAX_S;
        assert_eq!(
            Policy::new(10, max + 1),
            Err(PolicyError::ExpiryTooLarge {
                expiry_after_s: max + 1,
                max_s: max
            })
        );
        // The edges that are accepted.
        let p = Policy::new(1, 2).unwrap();
        assert_eq!((p.warning_after_s(), p.expiry_after_s()), (1, 2));
        let p = Policy::new(max - 1, max).unwrap();
        assert_eq!(p.level(0, u32::MAX), Level::Expired);
        assert_eq!(p.level(1, u32::MAX), Level::Warned);
    }

    #[test]
    fn level_thresholds_are_inclusive() {
        let p = Policy::new(100, 300).unwrap();
        let fix = 1_000_000;
        assert_eq!(p.level(fix, fix), Level::Reporting);
        assert_eq!(p.level(fix, fix + 99), Level::Reporting);
        assert_eq!(p.level(fix, fix + 100), Level::Warned);
        assert_eq!(p.level(fix, fix + 299), Level::Warned);
        assert_eq!(p.level(fix, fix + 300), Level::Expired);
        assert_eq!(p.level(fix, u32::MAX), Level::Expired);
        // A fix from the future (device clock ahead) is no silence at all.
        assert_eq!(p.level(fix + 5_000, fix), Level::Reporting);
    }

    #[test]
    fn trait_matches_inherent_rule_and_thresholds() {
        let p = Policy::new(100, 300).unwrap();
        for now in [0u32, 50, 99, 100, 101, 299, 300, 301, 10_000] {
            for since in [0u32, 1, 50, 100, 200, 300, 9_999, 10_000, 20_000] {
                assert_eq!(SilencePolicy::level(&p, 7, since, now), p.level(since, now));
            }
        }
        assert_eq!(p.threshold_s(7, Level::Reporting), 0);
        assert_eq!(p.threshold_s(7, Level::Warned), 100);
        assert_eq!(p.threshold_s(7, Level::Expired), 300);
    }

    #[test]
    fn reporting_from_is_exact_for_v0() {
        let p = Policy::new(100, 300).unwrap();
        for now in [0u32, 1, 99, 100, 101, 1_000, u32::MAX] {
            let from = p.reporting_from_s(now);
            for since in [
                0u32,
                1,
                50,
                100,
                500,
                899,
                900,
                901,
                1_000,
                u32::MAX - 100,
                u32::MAX,
            ] {
                let fast = u64::from(since) >= from;
                let reporting = p.level(since, now) == Level::Reporting;
                assert_eq!(fast, reporting, "now {now} since {since} from {from}");
            }
        }
    }

    #[test]
    fn judgement_until_is_the_next_threshold_for_v0() {
        let p = Policy::new(100, 300).unwrap();
        for since in [0u32, 1, 500, 1_000, u32::MAX - 150, u32::MAX] {
            for now in [
                0u32,
                1,
                99,
                100,
                599,
                600,
                1_099,
                1_100,
                1_299,
                1_300,
                u32::MAX,
            ] {
                let until = p.judgement_until_s(7, since, 0, now);
                let at_now = p.level(since, now);
                // Unchanged on [now, until) (probed at its edges), changed at until.
                for t in [now, until.saturating_sub(1).max(now)] {
                    assert_eq!(p.level(since, t), at_now, "since {since} now {now} t {t}");
                }
                if until > now && until != u32::MAX {
                    assert_ne!(p.level(since, until), at_now, "since {since} now {now}");
                }
                if at_now == Level::Expired {
                    assert_eq!(until, u32::MAX);
                }
            }
        }
    }

    #[test]
    fn next_level_escalates_or_resumes() {
        use Level::*;
        let table = [
            (Reporting, Reporting, Reporting),
            (Reporting, Warned, Warned),
            (Reporting, Expired, Expired),
            (Warned, Reporting, Reporting),
            (Warned, Warned, Warned),
            (Warned, Expired, Expired),
            (Expired, Reporting, Reporting),
            (Expired, Warned, Expired),
            (Expired, Expired, Expired),
        ];
        for (prev, judged, next) in table {
            assert_eq!(
                next_level(prev, judged, true, false),
                next,
                "{prev} judged {judged}"
            );
        }
        // Without a fix nothing goes down, except a warning lifted by a confirmation.
        let table = [
            (Reporting, Reporting, false, Reporting),
            (Warned, Reporting, false, Warned),
            (Warned, Reporting, true, Reporting),
            (Expired, Reporting, false, Expired),
            (Expired, Reporting, true, Expired),
            (Reporting, Warned, false, Warned),
            (Warned, Expired, true, Expired),
        ];
        for (prev, judged, confirmed, next) in table {
            assert_eq!(
                next_level(prev, judged, false, confirmed),
                next,
                "{prev} judged {judged} confirmed {confirmed}"
            );
        }
    }

    #[test]
    fn level_bits_round_trip() {
        for l in [Level::Reporting, Level::Warned, Level::Expired] {
            assert_eq!(Level::from_bits(l.to_bits()), l);
            assert_eq!(l.to_bits() & !LEVEL_MASK, 0);
        }
        assert_eq!(Level::Warned.to_string(), "warned");
    }
}
