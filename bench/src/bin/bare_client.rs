//! `bare-client`: the client half of the bare-quinn baseline (`bench::baseline_client`).
//! Parses flags, runs, prints the summary, writes the JSON report and the timeline picture.
//! Exits non-zero when the run could not start or nothing was acked.

use std::process::ExitCode;

use bench::baseline_client::{self, BareArgs, Mode};
use bench::svg::{PerSecond, SvgOptions};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bench::exit_code("bare-client", real_main())
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = BareArgs::parse();
    bench::init_logging();
    let report = baseline_client::run(&args)?;
    print!("{}", report.summary());
    let what = match args.mode {
        Mode::Hold => "connect, one request, stay open",
        Mode::Sessions => "sessions: connect, one request, close",
        Mode::Messages => "long-lived, pipelined requests",
    };
    let opts = SvgOptions {
        title: format!(
            "bare quinn baseline: {} connections, {what} ({} B requests)",
            report.connections, report.request_bytes
        ),
        per_second: PerSecond::Requests,
    };
    args.run
        .write_outputs(&report, &report.measures.timeline, &opts)?;
    if report.batches_acked == 0 {
        eprintln!("bare-client: nothing was acked");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
