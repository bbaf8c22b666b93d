//! `bare-client`: the client half of the bare-quinn baseline (`bench::baseline_client`).
//! Parses flags, runs, prints the summary, writes the JSON report and the timeline picture.
//! Exits non-zero when the run could not start or nothing was acked.

use std::process::ExitCode;

use anyhow::Context as _;
use bench::baseline_client::{self, BareArgs, Mode};
use bench::cli::svg_path;
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
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("serialising the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = svg_path(args.json.as_deref(), args.svg.as_deref()) {
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
        let svg = bench::svg::render(&report.measures.timeline, &opts);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.batches_acked == 0 {
        eprintln!("bare-client: nothing was acked");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
