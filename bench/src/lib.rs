//! `hexflow-bench`: a load generator that simulates a fleet of GPS devices against a
//! hexflow server over the real protocol (QUIC, TLS 1.3, the `ingest` client library).
//!
//! * [`cli`]: flags, their limits and validation (pure).
//! * [`trajectory`]: plausible urban device movement, generated on the fly (pure).
//! * [`report`]: per-connection tallies, their merge and the JSON report (pure).
//! * [`run`]: the async runner: connections, device sessions, pacing, pipelining, progress.
//!
//! Nothing in hexflow depends on this crate; it depends only on `ingest` (wire + client).

pub mod cli;
pub mod report;
pub mod run;
pub mod trajectory;
