//! `hexflow-bench` binary: parses flags, runs the load, prints the summary, writes the JSON
//! report. The only place that touches the terminal, the environment and the report file.
//! Exits non-zero when the run could not start or nothing was acked.

use std::process::ExitCode;

use anyhow::Context as _;
use bench::cli::{Args, svg_path};
use bench::svg::{PerSecond, SvgOptions};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bench::exit_code("hexflow-bench", real_main())
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    bench::init_logging();
    let report = bench::run::run(&args)?;
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("serialising the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = svg_path(args.json.as_deref(), args.svg.as_deref()) {
        let rate = match args.rate {
            r if r > 0.0 => format!("open loop {r:.0} fixes/s"),
            _ => "closed loop".to_owned(),
        };
        let opts = SvgOptions {
            title: format!(
                "hexflow-bench: {} devices over {} connections, {rate}, {} fixes/batch, inflight {}",
                report.devices, report.connections, args.batch_fixes, args.inflight
            ),
            per_second: PerSecond::Fixes,
        };
        let svg = bench::svg::render(&report.measures.timeline, &opts);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.fixes_acked == 0 {
        eprintln!("hexflow-bench: nothing was acked");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
