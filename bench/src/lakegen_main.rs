//! `hexflow-lakegen`: see [`bench::lakegen`].

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = bench::lakegen::Args::parse();
    let started = std::time::Instant::now();
    let summary = bench::lakegen::run(&args)?;
    println!("{}", serde_json::to_string(&summary)?);
    eprintln!(
        "lakegen: {} rows in {} files ({} bytes, {:.1} B/row), version {}, {:.1} s",
        summary.rows,
        summary.files,
        summary.bytes,
        summary.bytes as f64 / summary.rows.max(1) as f64,
        summary.version,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
