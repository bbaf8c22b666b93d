//! Silence tracking: which devices stopped sending fixes, and since when; and everything the
//! server does about it.
//!
//! # Contract
//!
//! The pure core (no IO, no clock reads: every function takes `now` as Unix seconds in a
//! `u32`, fine until 2106):
//!
//! * **Per-device state in a lock-free, fixed-capacity table** ([`SilenceTable`]): the newest
//!   fix time seen (by the fix's own timestamp, not arrival) and the newest contact time (any
//!   frame, heartbeats included). Recording a fix or a contact never takes a lock, never
//!   allocates and never blocks on the scanner; memory is reserved once, up front, for
//!   `devices_max` devices (24-byte slots at 4/3 of `devices_max`: 32 bytes per device, see
//!   [`SilenceTable`]). Confirmations (rare, off the fix path) take a short lock.
//! * **A pure policy** ([`Policy`], behind the [`SilencePolicy`] trait) decides a device's
//!   [`Level`] from the time its silence is counted from and `now`.
//! * **A scan** ([`SilenceTable::scan`]) sweeps the table, asks the policy, and emits each
//!   level change exactly once as a [`SilenceEvent`] (`Reporting → Warned`,
//!   `Warned → Expired`, `Reporting → Expired` when a scan came too late to see the warning,
//!   and `Warned/Expired → Reporting` as [`EventKind::Resumed`] once a newer fix arrives). Only
//!   the scan writes a device's level, and at most one scan runs at a time.
//! * **Policies people can rely on** ([`PolicySet`], rules in `docs/SILENCE.md`): duration or
//!   working-day thresholds on data calendars ([`calendar`]), groups, exemptions, server
//!   outages not counted, confirmations; prepared once per scan ([`PolicySet::prepare`]).
//! * **Snapshots** ([`SilenceTable::encode_snapshot`] / [`SilenceTable::restore_snapshot`])
//!   and **explanations** ([`explain`]), both pure.
//! * Events serialise to one stable JSON object per line ([`SilenceEvent::to_json_line`]).
//!
//! The executor (threads and IO; every file operation through [`sys::fs::Fs`], every time
//! read through [`sys::Clock`]):
//!
//! * [`config`]: the `[silence]` section ([`SilenceConfig`]): keys, defaults, bounds,
//!   validation, and the policy set loaded from the calendar files.
//! * [`erase`]: removing one device from every silence file of a data directory (logs,
//!   tables, snapshot), for `hexflow lake erase`.
//! * [`Silence`] ([`service`]): opens everything at start (snapshot restore, outages,
//!   exemptions log, events log, Parquet tables, webhook) and runs the [`Scanner`] thread
//!   ([`scanner`]), which sweeps every `scan_interval_ms` and hands each scan's events to the
//!   sinks in a fixed order: the JSON Lines events log ([`log`], fsynced first), the Parquet
//!   `events` table and the daily `device_status` table ([`tables`]), the webhook
//!   ([`webhook`]), and confirm-location requests through the [`ConfirmPort`] the binary
//!   implements. It snapshots the table ([`snapshot_file`]) every `snapshot_interval_ms` and
//!   at stop.
//!
//! # What it must never do
//!
//! Depend on `ingest`, quinn or tokio; lock or allocate on the fix/contact record path; read
//! the clock or touch files in the pure core; use `unsafe`.
//!
//! # Concurrency testing
//!
//! The table's atomics come from a small `sync` shim that swaps in loom's under `cfg(loom)`.
//! The loom models live in `silence/tests/silence_loom.rs`; run them with (a separate target
//! directory, because `--cfg loom` rebuilds every dependency):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p silence --release --test silence_loom
//! ```

pub mod calendar;
pub mod config;
pub mod erase;
mod event;
mod explain;
pub mod log;
mod policy;
mod rules;
pub mod scanner;
pub mod service;
mod snapshot;
pub mod snapshot_file;
mod table;
pub mod tables;
pub mod webhook;

pub use config::{ExemptionConfig, GroupConfig, PolicyConfig, SilenceConfig, SilenceConfigError};
pub use event::{EventKind, JsonStr, SilenceEvent};
pub use explain::{
    COUNTED_DAYS_SHOWN, Explanation, NOT_JUDGED_PAST_COVERAGE, explain, parse_rfc3339,
    render_counted_days, render_when, rfc3339, time_zone,
};
pub use policy::Judgement;
pub use policy::{Level, Policy, PolicyError, SilencePolicy, next_level};
pub use rules::{
    Assignment, CalendarDays, ConfirmResets, Counting, CoverageSpan, Exemption, ExemptionState,
    ExemptionTarget, Firing, GroupDef, JudgeDetail, Outage, PastCoverage, PhraseContext, PolicyDef,
    PolicySet, PolicySetError, Prepared, Threshold, ThresholdParseError, ThresholdParseReason,
    When, WorkingDays, parse_threshold,
};
pub use scanner::{ConfirmPort, ConfirmRequestRecord, Scanner, ScannerParts};
pub use service::{Explainer, Silence, SilenceParts, StartError};
pub use snapshot::{
    SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SNAPSHOT_VERSION_MIN, SnapshotError, SnapshotInfo,
};
pub use table::{DeviceState, RecordError, ScanError, ScanStats, SilenceTable, TableConfigError};

/// Unix seconds of a [`sys::Clock::now_ms`] reading as the table keeps them: negative times
/// count as 0 and times past 2106 as `u32::MAX`.
pub fn unix_s(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

/// Atomics: std's normally, loom's under `cfg(loom)` so the loom models explore this code.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
}
