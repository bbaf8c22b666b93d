//! `hexflow-bench`: a load generator that simulates a fleet of GPS devices against a
//! hexflow server over the real protocol (QUIC, TLS 1.3, the `ingest` client library).
//!
//! * [`cli`]: flags, their limits and validation (pure).
//! * [`trajectory`]: plausible urban device movement, generated on the fly (pure).
//! * [`report`]: per-connection tallies, their merge and the JSON report (pure).
//! * [`run`]: the async runner: connections, device sessions, pacing, pipelining, progress.
//! * [`timeline`]: per-second latency and throughput, the steady state (pure).
//! * [`svg`]: the timeline as a picture (pure).
//! * [`procfs`]: the server's CPU and memory from `/proc/<pid>`, sampled per second.
//! * [`baseline`], [`baseline_client`]: the bare-quinn baseline (server side and load).
//! * [`compare`]: ratio and scale tables from the JSON reports (pure).
//! * [`folded`]: `perf script` folded into stacks, top symbols, a flame graph (pure).
//! * [`lakegen`]: `hexflow-lakegen`, a simulated day of positions written straight into
//!   the `positions` Delta table (no network), for compaction and query measurements.
//!
//! Nothing in hexflow depends on this crate. The load generator depends only on `ingest`
//! (wire + client), plus rustls and rcgen for the baseline's own TLS; `lakegen` also uses
//! `storage` and `lake`, to write exactly what the server writes.

pub mod baseline;
pub mod baseline_client;
pub mod cli;
pub mod compare;
pub mod folded;
pub mod lakegen;
pub mod procfs;
pub mod report;
pub mod run;
pub mod svg;
pub mod timeline;
pub mod trajectory;
