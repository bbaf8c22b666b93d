//! `hexflow-bench`: a load generator that simulates a fleet of GPS devices against a
//! hexflow server over the real protocol (QUIC, TLS 1.3, the `ingest` client library).
//!
//! * [`cli`]: flags, their limits and validation (pure).
//! * [`trajectory`]: plausible urban device movement, generated on the fly (pure).
//! * [`report`]: per-connection tallies, their merge and the JSON report (pure).
//! * [`run`]: the async runner: connections, device sessions, pacing, pipelining, progress.
//! * [`lakegen`]: `hexflow-lakegen`, a simulated day of positions written straight into
//!   the `positions` Delta table (no network), for compaction and query measurements.
//!
//! Nothing in hexflow depends on this crate. The load generator depends only on `ingest`
//! (wire + client); `lakegen` also uses `storage` and `lake`, to write exactly what the
//! server writes.

pub mod cli;
pub mod lakegen;
pub mod report;
pub mod run;
pub mod trajectory;
