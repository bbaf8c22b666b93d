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
//! * [`hostile`]: `hexflow-hostile`, one attack of issue 11 beside a legit fleet, judged.
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
pub mod hostile;
pub mod lakegen;
pub mod procfs;
pub mod report;
pub mod run;
pub mod svg;
pub mod timeline;
pub mod trajectory;

/// What every bench binary does first: log to stderr at `RUST_LOG` (default `warn`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The exit code of a bench binary's `real_main`: its own, or `FAILURE` after printing
/// `<name>: error: <e>` with every cause.
pub fn exit_code(
    name: &str,
    result: anyhow::Result<std::process::ExitCode>,
) -> std::process::ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("{name}: error: {e:#}");
        std::process::ExitCode::FAILURE
    })
}
