//! `hexflow-hostile` binary: runs one attack beside a legit fleet (see `bench::hostile`),
//! prints the per-phase summary and the verdict, writes the JSON report. Exits non-zero when
//! the run could not start or the verdict fails.

use std::process::ExitCode;

use bench::hostile::{self, HostileArgs};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bench::exit_code("hexflow-hostile", real_main())
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = HostileArgs::parse();
    bench::init_logging();
    let report = hostile::run(&args)?;
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(if report.verdict.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
