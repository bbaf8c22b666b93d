//! Silence tracking: which devices stopped sending fixes, and since when.
//!
//! # Contract
//!
//! * **Per-device state in a lock-free, fixed-capacity table** ([`SilenceTable`]): the newest
//!   fix time seen (by the fix's own timestamp, not arrival) and the newest contact time (any
//!   frame, heartbeats included). Recording never takes a lock, never allocates and never
//!   blocks on the scanner; memory is reserved once, up front, for `devices_max` devices
//!   (24-byte slots at 4/3 of `devices_max`: 32 bytes per device, see [`SilenceTable`]).
//! * **A pure policy** ([`Policy`], behind the [`SilencePolicy`] trait so that later work can
//!   swap in working days, calendars and exemptions) decides a device's [`Level`] from the time
//!   its silence is counted from and `now`.
//! * **A scanner** ([`SilenceTable::scan`]) sweeps the table, asks the policy, and emits each
//!   level change exactly once as a [`SilenceEvent`] (`Reporting → Warned`,
//!   `Warned → Expired`, `Reporting → Expired` when a scan came too late to see the warning,
//!   and `Warned/Expired → Reporting` as [`EventKind::Resumed`] once a newer fix arrives). Only
//!   the scanner writes a device's level, and at most one scan runs at a time.
//! * **Policies people can rely on** ([`PolicySet`], rules in `docs/SILENCE.md`): duration or
//!   working-day thresholds on data calendars ([`calendar`]), groups, exemptions, server
//!   outages not counted, confirmations; prepared once per scan ([`PolicySet::prepare`]).
//! * **Snapshots** ([`SilenceTable::encode_snapshot`] / [`SilenceTable::restore_snapshot`])
//!   and **explanations** ([`explain`]), both pure.
//! * Events serialise to one stable JSON object per line ([`SilenceEvent::to_json_line`]),
//!   which the binary appends under `<data-dir>/events/`.
//!
//! # What it must never do
//!
//! No IO, no clock reads (every function takes `now` as Unix seconds in a `u32`, fine until
//! 2106), no locks, no allocation on the record path, no `unsafe`.
//!
//! # Concurrency testing
//!
//! The atomics come from a small `sync` shim that swaps in loom's under `cfg(loom)`. The loom
//! models live in `ingest/tests/silence_loom.rs`; run them with (a separate target directory,
//! because `--cfg loom` rebuilds every dependency):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p ingest --no-default-features --test silence_loom --release
//! ```
//!
//! No `server` feature there: under `--cfg loom` tokio configures out `tokio::net`, so quinn
//! does not build. This module needs nothing but std (and loom), so `lib.rs` compiles it under
//! `any(feature = "server", loom)`.

pub mod calendar;
mod event;
mod explain;
mod policy;
mod rules;
mod snapshot;
mod table;

pub use event::{EventKind, JsonStr, SilenceEvent};
pub use explain::{Explanation, explain, parse_rfc3339, rfc3339, time_zone};
pub use policy::Judgement;
pub use policy::{Level, Policy, PolicyError, SilencePolicy, next_level};
pub use rules::{
    Assignment, ConfirmResets, Exemption, ExemptionState, ExemptionTarget, GroupDef, JudgeDetail,
    Outage, PolicyDef, PolicySet, PolicySetError, Prepared, Threshold, ThresholdParseError,
    ThresholdParseReason, WorkingDays, parse_threshold,
};
pub use snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError, SnapshotInfo};
pub use table::{DeviceState, RecordError, ScanError, ScanStats, SilenceTable, TableConfigError};

/// Atomics: std's normally, loom's under `cfg(loom)` so the loom models explore this code.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
}
