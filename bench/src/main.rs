//! `hexflow-bench` binary: parses flags, runs the load, prints the summary, writes the JSON
//! report. The only place that touches the terminal, the environment and the report file.
//! Exits non-zero when the run could not start or nothing was acked.

use std::process::ExitCode;

use bench::cli::Args;
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
    args.run
        .write_outputs(&report, &report.measures.timeline, &opts)?;
    if report.fixes_acked == 0 {
        eprintln!("hexflow-bench: nothing was acked");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
