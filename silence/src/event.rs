//! Silence events: one per level change, and their stable JSON Lines form.
//!
//! # Contract
//!
//! * A [`SilenceEvent`] records one level change decided by the scanner; the scanner emits each
//!   change exactly once.
//! * [`SilenceEvent::to_json_line`] is the on-disk format of `<data-dir>/events/`. Its field
//!   names and value spellings are stable: add fields, never rename or remove them.
//! * Pure: no IO, no clock, no serde.

use super::policy::Level;

/// What happened to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// It reached [`Level::Warned`] (from `Reporting`).
    Warned,
    /// It reached [`Level::Expired`] (from `Warned`, or straight from `Reporting` when no scan
    /// ran while it was only warned).
    Expired,
    /// The device answered a confirm-location request at `confirmed_at_s` (Unix seconds); the
    /// policy's `confirm_resets` decides what that resets. `from`/`to` may be equal (a
    /// confirmation while reporting, or one that does not lift an expiry).
    Confirmed {
        /// When it confirmed.
        confirmed_at_s: u32,
    },
    /// The scan could not judge the device: a deadline would need days past its calendar's
    /// coverage (`past_coverage = "refuse"`). Its level stays (`from` = `to`); reported once
    /// until it can be judged again.
    NotJudged,
    /// A newer fix ended its silence: back to [`Level::Reporting`].
    Resumed {
        /// When the silence began: the newest fix known while the device was silent, or its
        /// first contact if it had never sent a fix. The silent interval is
        /// `silent_since_s..last_fix_s` of the event.
        silent_since_s: u32,
    },
}

impl EventKind {
    /// Stable lower-case name used in the JSON lines: `warned`, `expired`, `resumed`,
    /// `confirmed`, `not_judged`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Warned => "warned",
            EventKind::Expired => "expired",
            EventKind::Resumed { .. } => "resumed",
            EventKind::Confirmed { .. } => "confirmed",
            EventKind::NotJudged => "not_judged",
        }
    }
}

/// One level change of one device, as decided by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SilenceEvent {
    /// The device.
    pub device_id: u64,
    /// What happened.
    pub kind: EventKind,
    /// Index of the device's policy (the name comes from the policy set, see
    /// [`crate::SilencePolicy::policy_name`]).
    pub policy: u16,
    /// Level before the change.
    pub from: Level,
    /// Level after the change.
    pub to: Level,
    /// The device's newest fix time when the scan judged it (Unix seconds); `0` if it has never
    /// sent a fix (then its silence is counted from its first contact).
    pub last_fix_s: u32,
    /// The device's newest contact time (Unix seconds); `0` if no frame was recorded as contact.
    pub last_contact_s: u32,
    /// The scan's `now` (Unix seconds).
    pub at_s: u32,
    /// The threshold that was crossed, in seconds of silence: the policy's threshold for `to`
    /// for `warned`/`expired` events, and for `from` (the level left) for `resumed` events.
    pub threshold_s: u64,
}

impl SilenceEvent {
    /// For [`EventKind::Resumed`], the length of the silence between fixes:
    /// `last_fix_s - silent_since_s` (0 if the clock went backwards); `None` otherwise.
    pub fn silent_interval_s(&self) -> Option<u32> {
        match self.kind {
            EventKind::Resumed { silent_since_s } => {
                Some(self.last_fix_s.saturating_sub(silent_since_s))
            }
            _ => None,
        }
    }

    /// The event as one JSON object, without the trailing newline. Field names, in order:
    ///
    /// | key | type | meaning |
    /// |---|---|---|
    /// | `device_id` | integer | the device |
    /// | `kind` | string | `warned`, `expired`, `resumed`, `confirmed` or `not_judged` |
    /// | `policy` | string | the device's policy name |
    /// | `from`, `to` | string | `reporting`, `warned` or `expired` |
    /// | `last_fix_s` | integer or `null` | newest fix, Unix seconds; `null`: never sent a fix |
    /// | `last_contact_s` | integer or `null` | newest contact, Unix seconds; `null`: none |
    /// | `at_s` | integer | the scan's `now`, Unix seconds |
    /// | `threshold_s` | integer | see [`SilenceEvent::threshold_s`] |
    /// | `silent_since_s` | integer | `resumed` only: when the silence began |
    /// | `silent_s` | integer | `resumed` only: [`SilenceEvent::silent_interval_s`] |
    /// | `confirmed_at_s` | integer | `confirmed` only: when the device confirmed |
    ///
    /// ```
    /// use silence::{EventKind, Level, SilenceEvent};
    /// let e = SilenceEvent {
    ///     device_id: 42,
    ///     kind: EventKind::Warned,
    ///     policy: 0,
    ///     from: Level::Reporting,
    ///     to: Level::Warned,
    ///     last_fix_s: 1_700_000_000,
    ///     last_contact_s: 0,
    ///     at_s: 1_700_172_800,
    ///     threshold_s: 172_800,
    /// };
    /// assert_eq!(
    ///     e.to_json_line("default"),
    ///     r#"{"device_id":42,"kind":"warned","policy":"default","from":"reporting","to":"warned","last_fix_s":1700000000,"last_contact_s":null,"at_s":1700172800,"threshold_s":172800}"#
    /// );
    /// ```
    pub fn to_json_line(&self, policy: &str) -> String {
        let mut line = format!(
            r#"{{"device_id":{},"kind":"{}","policy":{},"from":"{}","to":"{}","last_fix_s":{},"last_contact_s":{},"at_s":{},"threshold_s":{}"#,
            self.device_id,
            self.kind.as_str(),
            JsonStr(policy),
            self.from.as_str(),
            self.to.as_str(),
            NullIfZero(self.last_fix_s),
            NullIfZero(self.last_contact_s),
            self.at_s,
            self.threshold_s,
        );
        if let EventKind::Resumed { silent_since_s } = self.kind {
            let silent_s = self.last_fix_s.saturating_sub(silent_since_s);
            line.push_str(&format!(
                r#","silent_since_s":{silent_since_s},"silent_s":{silent_s}"#
            ));
        }
        if let EventKind::Confirmed { confirmed_at_s } = self.kind {
            line.push_str(&format!(r#","confirmed_at_s":{confirmed_at_s}"#));
        }
        line.push('}');
        line
    }
}

/// Formats a string as a JSON string literal (quotes, backslashes and control characters
/// escaped).
pub struct JsonStr<'a>(pub &'a str);

impl std::fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// Formats a time as JSON, `0` (never) as `null`.
struct NullIfZero(u32);

impl std::fmt::Display for NullIfZero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("null"),
            t => write!(f, "{t}"),
        }
    }
}

/// A `warned` event of `device_id` at `at_s` after 100 s of silence (the fixture the crate's
/// tests share).
#[cfg(test)]
pub(crate) fn warned_at(device_id: u64, at_s: u32) -> SilenceEvent {
    SilenceEvent {
        device_id,
        kind: EventKind::Warned,
        policy: 0,
        from: Level::Reporting,
        to: Level::Warned,
        last_fix_s: at_s - 100,
        last_contact_s: 0,
        at_s,
        threshold_s: 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_warned_and_expired() {
        let e = SilenceEvent {
            device_id: i64::MAX as u64,
            kind: EventKind::Expired,
            policy: 0,
            from: Level::Reporting,
            to: Level::Expired,
            last_fix_s: 0,
            last_contact_s: 1_000,
            at_s: 5_000,
            threshold_s: 3_000,
        };
        assert_eq!(
            e.to_json_line("default"),
            r#"{"device_id":9223372036854775807,"kind":"expired","policy":"default","from":"reporting","to":"expired","last_fix_s":null,"last_contact_s":1000,"at_s":5000,"threshold_s":3000}"#
        );
        assert_eq!(e.silent_interval_s(), None);
    }

    #[test]
    fn json_line_resumed_carries_interval() {
        let e = SilenceEvent {
            device_id: 7,
            kind: EventKind::Resumed {
                silent_since_s: 1_000,
            },
            policy: 1,
            from: Level::Warned,
            to: Level::Reporting,
            last_fix_s: 1_500,
            last_contact_s: 1_510,
            at_s: 1_520,
            threshold_s: 100,
        };
        assert_eq!(e.silent_interval_s(), Some(500));
        assert_eq!(
            e.to_json_line("fleet \"a\""),
            r#"{"device_id":7,"kind":"resumed","policy":"fleet \"a\"","from":"warned","to":"reporting","last_fix_s":1500,"last_contact_s":1510,"at_s":1520,"threshold_s":100,"silent_since_s":1000,"silent_s":500}"#
        );
        assert!(!e.to_json_line("x\ny").contains('\n'));
    }
}
