//! `bench-table`: the Markdown tables of `bench/compare.sh` and `bench/scale.sh`, from the
//! JSON reports of `hexflow-bench` and `bare-client` (`bench::compare`). Reads the machine's
//! core count, CPU model, memory and load average for the header.
//!
//! ```text
//! bench-table compare SCENARIO HEXFLOW.json BARE.json [SCENARIO HEXFLOW.json BARE.json ...]
//! bench-table scale REPORT.json [REPORT.json ...]
//! bench-table fold PERF_SCRIPT_TXT OUT_PREFIX [TOP_N]   # OUT_PREFIX.folded, .svg, .md
//! ```

use std::path::Path;

use anyhow::{Context as _, bail};
use bench::compare::{self, ScalePoint, Scenario};
use bench::folded;
use bench::procfs::parse_status_kb;
use bench::report::RunMeasures;

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> anyhow::Result<T> {
    let bytes = std::fs::read(Path::new(path)).with_context(|| format!("reading {path}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {path}"))
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    compare::machine_header(
        nproc,
        compare::cpu_model(&cpuinfo).unwrap_or("unknown"),
        parse_status_kb(&meminfo, "MemTotal").unwrap_or(0),
        &loadavg,
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("usage: bench-table compare SCENARIO HEX.json BARE.json ... | scale REPORT.json ...");
    };
    match cmd.as_str() {
        "compare" => {
            if rest.is_empty() || rest.len() % 3 != 0 {
                bail!("compare takes triples: SCENARIO HEXFLOW.json BARE.json");
            }
            let mut rows = Vec::new();
            for t in rest.chunks(3) {
                let scenario = Scenario::from_name(&t[0]).with_context(|| {
                    format!(
                        "unknown scenario {:?} (handshakes, sessions, messages)",
                        t[0]
                    )
                })?;
                let hex: RunMeasures = read_json(&t[1])?;
                let bare: RunMeasures = read_json(&t[2])?;
                rows.extend(compare::rows(scenario, &hex, &bare));
            }
            print!("{}", compare::render_compare(&machine(), &rows));
        }
        "scale" => {
            if rest.is_empty() {
                bail!("scale takes at least one hexflow-bench report");
            }
            let points = rest
                .iter()
                .map(|p| read_json::<ScalePoint>(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", compare::render_scale(&machine(), &points));
        }
        "fold" => fold(rest)?,
        other => bail!("unknown command {other:?}: compare, scale or fold"),
    }
    Ok(())
}

/// `fold PERF_SCRIPT_TXT OUT_PREFIX [TOP_N]`: folded stacks, a flame graph and the top
/// symbols (also printed).
fn fold(rest: &[String]) -> anyhow::Result<()> {
    let (input, prefix) = match rest {
        [i, p] | [i, p, _] => (i, p),
        _ => bail!("fold takes PERF_SCRIPT_TXT OUT_PREFIX [TOP_N]"),
    };
    let top_n: usize = match rest.get(2) {
        Some(n) => n.parse().with_context(|| format!("TOP_N {n:?}"))?,
        None => 25,
    };
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?;
    let stacks = folded::fold(text.lines());
    let write = |ext: &str, body: String| {
        let path = format!("{prefix}.{ext}");
        std::fs::write(&path, body).with_context(|| format!("writing {path}"))
    };
    write("folded", folded::to_text(&stacks))?;
    write(
        "svg",
        folded::flamegraph(&stacks, &format!("{input}: flame graph (root at the top)")),
    )?;
    let report = folded::top_report(&stacks, top_n);
    write("md", report.clone())?;
    print!("{report}");
    Ok(())
}
