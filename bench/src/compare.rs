//! Tables from the JSON reports: hexflow against the bare-quinn baseline measured in the
//! same script run (`bench/compare.sh`), and the scale curve (`bench/scale.sh`).
//!
//! # Contract
//! * Pure: reports come in as parsed values, tables go out as Markdown text.
//! * A figure missing from a report (no steady state reached, server not sampled) is shown
//!   as `-` and its ratio too; it is never replaced by zero.
//! * A ratio is always `hexflow / bare` as measured: for rates (per second) above 1 means
//!   hexflow is faster, for costs (CPU, memory, latency) above 1 means hexflow costs more.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::report::RunMeasures;

/// The scenarios `bench/compare.sh` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Connections that connect and stay (hexflow: long-lived devices at a low rate; bare:
    /// `--mode hold`).
    Handshakes,
    /// Connect, one request, close (hexflow: `--batches-per-session 1`; bare: `--mode sessions`).
    Sessions,
    /// Long-lived connections pipelining requests (bare: `--mode messages`).
    Messages,
}

impl Scenario {
    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Handshakes => "handshakes",
            Scenario::Sessions => "sessions",
            Scenario::Messages => "messages",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Scenario::Handshakes, Scenario::Sessions, Scenario::Messages]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// One line of the comparison table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// What is compared, with its unit.
    pub metric: &'static str,
    /// hexflow's figure.
    pub hexflow: Option<f64>,
    /// The baseline's figure.
    pub bare: Option<f64>,
}

impl Row {
    /// `hexflow / bare`, when both are known and `bare` is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.hexflow, self.bare) {
            (Some(h), Some(b)) if b != 0.0 => Some(h / b),
            _ => None,
        }
    }
}

/// The figures of one scenario from both reports.
pub fn rows(scenario: Scenario, hex: &RunMeasures, bare: &RunMeasures) -> Vec<Row> {
    type Pick = fn(&RunMeasures) -> Option<f64>;
    let picks: Vec<(&'static str, Pick)> = match scenario {
        Scenario::Handshakes => vec![
            ("full handshakes/s (connect phase)", |m| {
                m.connect_phase.as_ref().map(|c| c.connections_per_s)
            }),
            ("server CPU per handshake, µs", |m| {
                m.connect_phase
                    .as_ref()?
                    .server
                    .as_ref()?
                    .cpu_us_per_connection
            }),
            ("server RSS per open connection, bytes", |m| {
                m.connect_phase
                    .as_ref()?
                    .server
                    .as_ref()?
                    .rss_bytes_per_connection
            }),
        ],
        Scenario::Sessions => vec![
            ("sessions/s (steady state)", |m| {
                m.steady_state.as_ref().map(|s| s.batches_per_s)
            }),
            ("server CPU per session, µs", |m| {
                m.steady_state.as_ref()?.server.as_ref()?.cpu_us_per_batch
            }),
            ("session latency p50, µs", |m| {
                m.steady_state.as_ref().map(|s| s.ack_latency_us.p50 as f64)
            }),
        ],
        Scenario::Messages => vec![
            ("messages/s (steady state)", |m| {
                m.steady_state.as_ref().map(|s| s.batches_per_s)
            }),
            ("server CPU per message, µs", |m| {
                m.steady_state.as_ref()?.server.as_ref()?.cpu_us_per_batch
            }),
            ("server cores busy", |m| {
                m.steady_state.as_ref()?.server.as_ref().map(|s| s.cores)
            }),
            ("ack latency p50, µs", |m| {
                m.steady_state.as_ref().map(|s| s.ack_latency_us.p50 as f64)
            }),
            ("ack latency p99, µs", |m| {
                m.steady_state.as_ref().map(|s| s.ack_latency_us.p99 as f64)
            }),
        ],
    };
    picks
        .into_iter()
        .map(|(metric, pick)| Row {
            scenario,
            metric,
            hexflow: pick(hex),
            bare: pick(bare),
        })
        .collect()
}

/// A figure with a precision that suits its size.
pub fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The start of a Markdown page: the title, the machine line, then the header of a table
/// with `columns`.
fn table_head(title: &str, machine: &str, columns: &[&str]) -> String {
    format!(
        "# {title}\n\n{machine}\n\n| {} |\n|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len())
    )
}

/// The comparison as a Markdown table under a header naming the machine.
pub fn render_compare(machine: &str, rows: &[Row]) -> String {
    let mut s = table_head(
        "hexflow vs bare quinn, same run",
        machine,
        &[
            "scenario",
            "metric",
            "hexflow",
            "bare quinn",
            "hexflow / bare",
        ],
    );
    for r in rows {
        let ratio = r
            .ratio()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {ratio} |",
            r.scenario.name(),
            r.metric,
            fmt_value(r.hexflow),
            fmt_value(r.bare)
        );
    }
    s
}

/// The few flags of a hexflow-bench report the scale table needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ScaleConfig {
    /// `--batches-per-session` (0: time-sliced).
    pub batches_per_session: u64,
}

/// The fields of a hexflow-bench report the scale table reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ScalePoint {
    /// Devices simulated.
    pub devices: u64,
    /// Concurrent connections.
    pub connections: u64,
    /// Sessions.
    pub sessions: u64,
    /// Fixes acked over the whole run.
    pub fixes_acked: u64,
    /// Distinct devices that sent.
    pub devices_connected: u64,
    /// Steady state, server usage, ...
    #[serde(flatten)]
    pub measures: RunMeasures,
    /// The flags.
    pub config: ScaleConfig,
}

impl ScalePoint {
    /// `long-lived` (one connection per device, time-sliced) or `sessions`.
    pub fn mode(&self) -> &'static str {
        if self.devices == self.connections && self.config.batches_per_session == 0 {
            "long-lived"
        } else {
            "sessions"
        }
    }

    /// Server CPU per fix, µs: over the steady state when there is one, else over the run.
    pub fn cpu_us_per_fix(&self) -> Option<f64> {
        let steady = self
            .measures
            .steady_state
            .as_ref()
            .and_then(|s| s.server.as_ref()?.cpu_us_per_fix);
        steady.or_else(|| {
            let u = self.measures.server.as_ref()?;
            (self.fixes_acked > 0).then(|| u.cpu_s * 1e6 / self.fixes_acked as f64)
        })
    }

    /// Server memory per device, bytes: (largest RSS in the steady state, else peak RSS,
    /// minus RSS at the start) over the devices that connected.
    pub fn rss_bytes_per_device(&self) -> Option<f64> {
        let u = self.measures.server.as_ref()?;
        let top = self
            .measures
            .steady_state
            .as_ref()
            .and_then(|s| s.server.as_ref().map(|v| v.rss_kb_max))
            .unwrap_or(u.rss_kb_peak);
        let devices = self.devices_connected.max(1) as f64;
        Some(top.saturating_sub(u.rss_kb_start) as f64 * 1024.0 / devices)
    }
}

/// The scale curve as a Markdown table (one line per report, in the order given).
pub fn render_scale(machine: &str, points: &[ScalePoint]) -> String {
    let mut s = table_head(
        "hexflow scale curve",
        machine,
        &[
            "devices",
            "mode",
            "connections",
            "devices connected",
            "sessions",
            "fixes acked",
            "steady fixes/s",
            "server CPU µs/fix",
            "server RSS bytes/device",
            "steady ack p99 µs",
        ],
    );
    for p in points {
        let st = p.measures.steady_state.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.devices,
            p.mode(),
            p.connections,
            p.devices_connected,
            p.sessions,
            p.fixes_acked,
            fmt_value(st.map(|s| s.fixes_per_s)),
            fmt_value(p.cpu_us_per_fix()),
            fmt_value(p.rss_bytes_per_device()),
            fmt_value(st.map(|s| s.ack_latency_us.p99 as f64)),
        );
    }
    s
}

/// The machine header: cores, CPU model, memory, load average when the table was made.
pub fn machine_header(nproc: usize, cpu_model: &str, mem_total_kb: u64, loadavg: &str) -> String {
    format!(
        "Machine: `nproc` = {nproc}, CPU \"{}\", {:.1} GiB RAM; load average (1/5/15 min) at the end: {}.",
        cpu_model.trim(),
        mem_total_kb as f64 / (1024.0 * 1024.0),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The `model name` of the first CPU in `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<&str> {
    cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ServerUsage;
    use crate::timeline::{Sample, ServerSample, Timeline};

    const S: u64 = 1_000_000;

    /// A 10 s run: everything connected at `connected_s` with `cpu_at_connect_s` of server
    /// CPU; `per_s` acks per second of latency `lat_us`; the server burns `cores` cores.
    fn measures(
        connected_s: u64,
        cpu_at_connect_s: u64,
        per_s: u64,
        lat_us: u64,
        cores: u64,
    ) -> RunMeasures {
        let mut t = Timeline::new(10 * S, 10 * S);
        for sec in 0..10 {
            for i in 0..per_s {
                t.record(Sample {
                    at_us: sec * S + i,
                    latency_us: lat_us,
                    fixes: 50,
                });
            }
        }
        for k in 0..=10u64 {
            t.record_server(
                k as usize,
                ServerSample {
                    cpu_us: k * cores * S,
                    rss_kb: 1_000 + k * 100,
                },
            );
        }
        t.mark_all_connected(
            connected_s * S,
            Some(ServerSample {
                cpu_us: cpu_at_connect_s * S,
                rss_kb: 1_000 + 2_000,
            }),
        );
        let usage = ServerUsage {
            pid: 1,
            cpu_s: 10.0 * cores as f64,
            rss_kb_start: 1_000,
            rss_kb_end: 2_000,
            rss_kb_peak: 3_000,
        };
        RunMeasures::new(&t, 1_000, Some(usage))
    }

    #[test]
    fn ratios_are_hexflow_over_bare() {
        let hex = measures(4, 2, 100, 4_000, 1);
        let bare = measures(2, 1, 400, 1_000, 1);
        let handshakes = rows(Scenario::Handshakes, &hex, &bare);
        assert_eq!(handshakes.len(), 3);
        // 1000 connections in 4 s vs 2 s.
        assert_eq!(handshakes[0].hexflow, Some(250.0));
        assert_eq!(handshakes[0].bare, Some(500.0));
        assert_eq!(handshakes[0].ratio(), Some(0.5));
        // 2 s vs 1 s of CPU for 1000 handshakes.
        assert_eq!(handshakes[1].hexflow, Some(2_000.0));
        assert_eq!(handshakes[1].ratio(), Some(2.0));
        // 2000 KiB more for 1000 connections, both.
        assert_eq!(handshakes[2].hexflow, Some(2_048.0));
        assert_eq!(handshakes[2].ratio(), Some(1.0));
        let messages = rows(Scenario::Messages, &hex, &bare);
        assert_eq!(messages[0].metric, "messages/s (steady state)");
        assert_eq!(messages[0].ratio(), Some(0.25));
        // One core for 100 vs 400 messages per second.
        assert_eq!(messages[1].hexflow, Some(10_000.0));
        assert_eq!(messages[1].ratio(), Some(4.0));
        assert_eq!(messages[2].ratio(), Some(1.0));
        let p99 = messages
            .iter()
            .find(|r| r.metric == "ack latency p99, µs")
            .unwrap();
        assert!((3.9..=4.1).contains(&p99.ratio().unwrap()), "{p99:?}");
    }

    #[test]
    fn missing_figures_stay_missing() {
        let hex = measures(4, 2, 100, 4_000, 1);
        let mut bare = measures(2, 1, 400, 1_000, 1);
        bare.steady_state = None;
        bare.connect_phase = None;
        for scenario in [Scenario::Handshakes, Scenario::Sessions, Scenario::Messages] {
            for r in rows(scenario, &hex, &bare) {
                assert!(r.hexflow.is_some(), "{r:?}");
                assert_eq!((r.bare, r.ratio()), (None, None), "{r:?}");
            }
        }
        let zero = Row {
            scenario: Scenario::Sessions,
            metric: "m",
            hexflow: Some(1.0),
            bare: Some(0.0),
        };
        assert_eq!(zero.ratio(), None);
        let table = render_compare("Machine: test.", &rows(Scenario::Sessions, &hex, &bare));
        assert!(
            table.contains("| sessions | sessions/s (steady state) | 100 | - | - |"),
            "{table}"
        );
    }

    #[test]
    fn the_table_has_a_header_and_one_line_per_row() {
        let hex = measures(4, 2, 100, 4_000, 1);
        let bare = measures(2, 1, 400, 1_000, 1);
        let mut all = rows(Scenario::Handshakes, &hex, &bare);
        all.extend(rows(Scenario::Messages, &hex, &bare));
        let header = machine_header(2, " AMD EPYC ", 24 * 1024 * 1024, "3.10 2.00 1.50 2/300 99");
        assert_eq!(
            header,
            "Machine: `nproc` = 2, CPU \"AMD EPYC\", 24.0 GiB RAM; load average (1/5/15 min) at the end: 3.10 2.00 1.50."
        );
        let table = render_compare(&header, &all);
        assert!(table.contains(&header));
        assert_eq!(
            table.lines().filter(|l| l.starts_with("| ")).count(),
            1 + all.len()
        );
        assert!(
            table.contains("| handshakes | server CPU per handshake, µs | 2000 | 1000 | 2.00× |"),
            "{table}"
        );
        assert_eq!(Scenario::from_name("messages"), Some(Scenario::Messages));
        assert_eq!(Scenario::from_name("nope"), None);
    }

    #[test]
    fn values_are_formatted_by_size() {
        assert_eq!(fmt_value(None), "-");
        assert_eq!(fmt_value(Some(123_456.7)), "123457");
        assert_eq!(fmt_value(Some(12.345)), "12.3");
        assert_eq!(fmt_value(Some(0.456)), "0.46");
    }

    #[test]
    fn scale_points_read_from_a_report() {
        let m = measures(2, 1, 100, 2_000, 1);
        let mut v = serde_json::to_value(&m).unwrap();
        let o = v.as_object_mut().unwrap();
        o.insert("devices".into(), 1_000.into());
        o.insert("connections".into(), 1_000.into());
        o.insert("sessions".into(), 1_000.into());
        o.insert("fixes_acked".into(), 50_000.into());
        o.insert("devices_connected".into(), 1_000.into());
        o.insert("unrelated".into(), "ignored".into());
        o.insert(
            "config".into(),
            serde_json::json!({ "batches_per_session": 0, "rate": 1.0 }),
        );
        let p: ScalePoint = serde_json::from_value(v).unwrap();
        assert_eq!(p.mode(), "long-lived");
        // Steady: 8 s, 8 core-s, 800 acks of 50 fixes: 200 µs per fix.
        assert_eq!(p.cpu_us_per_fix(), Some(200.0));
        // Largest steady RSS 2000 KiB over 1000 KiB at the start, 1000 devices.
        assert_eq!(p.rss_bytes_per_device(), Some(1_024.0 * 1_000.0 / 1_000.0));
        let table = render_scale("Machine: t.", std::slice::from_ref(&p));
        assert!(
            table.contains("| 1000 | long-lived | 1000 | 1000 | 1000 | 50000 | 5000 | 200 |"),
            "{table}"
        );
        let mut q = p;
        q.measures.steady_state = None;
        q.config.batches_per_session = 1;
        assert_eq!(q.mode(), "sessions");
        // Whole run: 10 core-s over 50,000 fixes.
        assert_eq!(q.cpu_us_per_fix(), Some(200.0));
        assert_eq!(q.rss_bytes_per_device(), Some(2_048.0));
    }

    #[test]
    fn cpu_model_is_read_from_cpuinfo() {
        let info =
            "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t: x\n";
        assert_eq!(cpu_model(info), Some("AMD EPYC"));
        assert_eq!(cpu_model("nothing"), None);
    }
}
