//! hexflow's boundary to the machine: the one clock and the one file layer.
//!
//! # Contract
//! * [`clock`]: every thread of hexflow that needs the time reads it from a [`Clock`]
//!   handed to it, never from `SystemTime`/`Instant` directly, so tests control time.
//!   Wall time (`now_ms`, what fixes and silence are judged against) and elapsed time
//!   (`monotonic_us`, what intervals and deadlines are measured in) are separate readings.
//! * [`fs`]: every durable file operation (WAL, Parquet, checkpoint, silence snapshot,
//!   events, TLS and secret files) goes through the [`fs::Fs`] trait; [`fs::RealFs`] maps
//!   each call to one system call, creates files `0600` and directories `0700` (location
//!   data is personal data), and [`fs::write_atomic`] is the one atomic-replace routine.
//! * [`sim`]: an in-memory [`fs::Fs`] that fails or "loses power" at any chosen operation,
//!   for the fault-injection suites.
//! * [`thread`]: lowering the calling thread's CPU priority (bulk background work).
//! * [`mem`]: cache hints for large in-memory tables (a prefetch that cannot fault).
//!
//! * [`bounds`]: the one range check of every config struct ([`bounds::OutOfRange`]).
//!
//! Nothing here decides policy: callers decide what a failure or a time means.

pub mod bounds;
pub mod clock;
pub mod fs;
pub mod mem;
pub mod sim;
pub mod thread;

pub use clock::{Clock, ManualClock, SimClock, SystemClock};
