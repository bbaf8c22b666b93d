//! Run statistics: per-connection tallies, their merge, and the JSON report.
//!
//! # Contract
//! * Pure: no clock reads, no IO. The runner measures, this module only counts and shapes.
//! * Each connection task owns one [`Tally`] (no locks on the hot path); the runner merges
//!   them once at the end. Live progress uses [`LiveCounters`] (relaxed atomics).
//! * The JSON shape of [`Report`] is what scripts rely on; it is pinned by a test. Fields
//!   are only ever added, never renamed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procfs::ServerUsage;
use crate::timeline::{ConnectPhase, SteadyState, Timeline, TimelineReport};

/// Largest latency the histogram tracks, in µs (one hour); larger values are clamped.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by the latency histogram.
const LATENCY_SIGFIG: u8 = 3;

/// Client-side failure: could not connect or authenticate.
pub const ERR_CONNECT_FAILED: &str = "CONNECT_FAILED";
/// Client-side failure: the connection broke while a batch was in flight.
pub const ERR_CONNECTION_LOST: &str = "CONNECTION_LOST";
/// Client-side failure: the run ended (grace period over) before the ack arrived.
pub const ERR_ACK_TIMEOUT: &str = "ACK_TIMEOUT";
/// Client-side failure: the batch could not be encoded or was refused locally.
pub const ERR_CLIENT_REJECTED: &str = "CLIENT_REJECTED";

/// Counters shared with the progress bar. Updated with relaxed atomics: they are
/// statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Fixes in batches the server acknowledged as durable.
    pub fixes_acked: AtomicU64,
    /// Batches acknowledged as durable (`OK` or `DUPLICATE`).
    pub batches_acked: AtomicU64,
    /// Batches handed to the client library.
    pub batches_sent: AtomicU64,
    /// Failed batches and failed connection attempts.
    pub errors: AtomicU64,
    /// Device sessions currently connected.
    pub sessions_open: AtomicU64,
}

impl LiveCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What one connection task observed. Merged into one with [`Tally::merge`].
#[derive(Debug, Clone)]
pub struct Tally {
    /// Fixes in acknowledged batches.
    pub fixes_acked: u64,
    /// Acknowledged batches (`OK` or `DUPLICATE`).
    pub batches_acked: u64,
    /// Batches handed to the client library.
    pub batches_sent: u64,
    /// Fixes in batches handed to the client library.
    pub fixes_sent: u64,
    /// Device sessions successfully connected.
    pub sessions: u64,
    /// Distinct devices that completed at least one connection.
    pub devices_connected: u64,
    /// Times a device had to wait because it had already reported up to the present.
    pub clock_waits: u64,
    /// Fixes of batches that failed on the client side (connection lost, ack timeout, ...)
    /// after being handed to the client: the server may or may not have stored them.
    pub fixes_in_doubt: u64,
    /// Connection attempts still in progress when the run's sending phase ended (not
    /// errors: nothing was sent on them).
    pub connects_unfinished: u64,
    /// Every ack received, by status name (including `OK`).
    pub acks_by_status: BTreeMap<String, u64>,
    /// Failures by status name: server statuses and client-side names such as
    /// [`ERR_CONNECT_FAILED`].
    pub errors_by_status: BTreeMap<String, u64>,
    /// Send-to-ack latency of acknowledged batches, µs.
    pub ack_latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            fixes_acked: 0,
            batches_acked: 0,
            batches_sent: 0,
            fixes_sent: 0,
            sessions: 0,
            devices_connected: 0,
            clock_waits: 0,
            fixes_in_doubt: 0,
            connects_unfinished: 0,
            acks_by_status: BTreeMap::new(),
            errors_by_status: BTreeMap::new(),
            ack_latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
                .expect("constant bounds 1..=LATENCY_MAX_US with 3 sigfig are valid"),
        }
    }
}

impl Tally {
    /// Records one failure under `name`.
    pub fn error(&mut self, name: &str) {
        *self.errors_by_status.entry(name.to_owned()).or_default() += 1;
    }

    /// Records an ack with status `name`.
    pub fn ack(&mut self, name: &str) {
        *self.acks_by_status.entry(name.to_owned()).or_default() += 1;
    }

    /// Records a durable batch of `fixes` fixes acknowledged after `latency_us`.
    pub fn acked(&mut self, fixes: u64, latency_us: u64) {
        self.fixes_acked += fixes;
        self.batches_acked += 1;
        self.ack_latency_us
            .saturating_record(latency_us.clamp(1, LATENCY_MAX_US));
    }

    /// Sum of all failures.
    pub fn errors_total(&self) -> u64 {
        self.errors_by_status.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        self.fixes_acked += other.fixes_acked;
        self.batches_acked += other.batches_acked;
        self.batches_sent += other.batches_sent;
        self.fixes_sent += other.fixes_sent;
        self.sessions += other.sessions;
        self.devices_connected += other.devices_connected;
        self.clock_waits += other.clock_waits;
        self.fixes_in_doubt += other.fixes_in_doubt;
        self.connects_unfinished += other.connects_unfinished;
        for (k, v) in &other.acks_by_status {
            *self.acks_by_status.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors_by_status {
            *self.errors_by_status.entry(k.clone()).or_default() += v;
        }
        // Both histograms share the same bounds, so adding never fails; clamp anyway.
        if self.ack_latency_us.add(&other.ack_latency_us).is_err() {
            for v in other.ack_latency_us.iter_recorded() {
                self.ack_latency_us
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
}

/// Latency percentiles in µs (`Default`: no samples, all zero, as [`LatencySummary::empty`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest recorded.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

impl LatencySummary {
    /// No samples: all zero.
    pub fn empty() -> Self {
        Self {
            p50: 0,
            p99: 0,
            p999: 0,
            max: 0,
            mean: 0.0,
            count: 0,
        }
    }

    /// Summarises `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::empty();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
            count: h.len(),
        }
    }
}

/// What every load generator of this crate (`hexflow-bench`, `bare-client`) reports beside
/// its counters: the steady state, the connect phase, the server's usage and the timeline.
/// The comparison and scale tables read these fields from both kinds of report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeasures {
    /// Whole slots after every connection was up until sending ended (`None`: never reached,
    /// or not one whole slot long).
    pub steady_state: Option<SteadyState>,
    /// From the start until every connection was up (`None`: some never connected).
    pub connect_phase: Option<ConnectPhase>,
    /// The server over the whole run (with `--server-pid`).
    pub server: Option<ServerUsage>,
    /// Per-slot latency, throughput and server figures.
    pub timeline: TimelineReport,
}

impl RunMeasures {
    /// The measures of a finished run of `connections` connections.
    pub fn new(timeline: &Timeline, connections: u64, server: Option<ServerUsage>) -> Self {
        RunMeasures {
            steady_state: timeline.steady_state(),
            connect_phase: timeline.connect_phase(connections),
            server,
            timeline: timeline.report(),
        }
    }

    /// Terminal lines for the steady state and the connect phase.
    pub fn summary_lines(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        match &self.steady_state {
            Some(st) => {
                let l = &st.ack_latency_us;
                let _ = writeln!(
                    s,
                    "  steady  {:.0}..{:.0} s: {:.0} fixes/s, {:.0} batches/s, ack µs p50 {} p99 {} p99.9 {} max {} (n={})",
                    st.start_s,
                    st.end_s,
                    st.fixes_per_s,
                    st.batches_per_s,
                    l.p50,
                    l.p99,
                    l.p999,
                    l.max,
                    l.count
                );
                if let Some(srv) = &st.server {
                    let _ = writeln!(
                        s,
                        "  server  steady: {:.2} cores, {} µs CPU/fix, {} µs CPU/batch, RSS max {} KiB",
                        srv.cores,
                        opt(srv.cpu_us_per_fix),
                        opt(srv.cpu_us_per_batch),
                        srv.rss_kb_max
                    );
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "  steady  none (not every connection was up for a whole slot before sending ended)"
                );
            }
        }
        if let Some(cp) = &self.connect_phase {
            let _ = write!(
                s,
                "  connect {} connections in {:.2} s ({:.0}/s)",
                cp.connections, cp.duration_s, cp.connections_per_s
            );
            if let Some(srv) = &cp.server {
                let _ = write!(
                    s,
                    "; server {} µs CPU and {} B RSS per connection",
                    opt(srv.cpu_us_per_connection),
                    opt(srv.rss_bytes_per_connection)
                );
            }
            s.push('\n');
        }
        if let Some(u) = &self.server {
            let _ = writeln!(
                s,
                "  server  pid {}: {:.2} s CPU over the run, RSS {} -> {} KiB (peak {} KiB)",
                u.pid, u.cpu_s, u.rss_kb_start, u.rss_kb_end, u.rss_kb_peak
            );
        }
        s
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The end-of-run report (`--json FILE`). `C` is the echoed configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Report<C: Serialize> {
    /// Fixes in batches acknowledged as durable.
    pub fixes_acked: u64,
    /// Batches acknowledged as durable (`OK` or `DUPLICATE`).
    pub batches_acked: u64,
    /// Batches handed to the client library.
    pub batches_sent: u64,
    /// Fixes in batches handed to the client library.
    pub fixes_sent: u64,
    /// Failures by status name (server statuses and client-side names).
    pub errors_by_status: BTreeMap<String, u64>,
    /// Every ack received, by status name.
    pub acks_by_status: BTreeMap<String, u64>,
    /// Send-to-ack latency of acknowledged batches.
    pub ack_latency_us: LatencySummary,
    /// Wall time from the first connection attempt to the end of the grace period, s.
    pub duration_s: f64,
    /// `fixes_acked / duration_s`.
    pub fixes_per_s: f64,
    /// `batches_acked / duration_s`.
    pub batches_per_s: f64,
    /// Devices configured (`--devices`).
    pub devices: u64,
    /// Distinct devices that connected at least once.
    pub devices_connected: u64,
    /// Concurrent connections (`--connections`).
    pub connections: u64,
    /// Device sessions (connect, send, close) completed or started.
    pub sessions: u64,
    /// Times a device waited because it had already reported up to the present.
    pub clock_waits: u64,
    /// Fixes of batches whose outcome is unknown (client-side failure after sending): the
    /// server holds between `fixes_acked` and `fixes_acked + fixes_in_doubt` of this run's fixes.
    pub fixes_in_doubt: u64,
    /// Connection attempts still in progress when sending ended (nothing sent on them).
    pub connects_unfinished: u64,
    /// Steady state, connect phase, server usage, timeline.
    #[serde(flatten)]
    pub measures: RunMeasures,
    /// The flags of the run.
    pub config: C,
}

impl<C: Serialize> Report<C> {
    /// Builds the report from the merged tally and the run's measures.
    pub fn new(
        t: &Tally,
        duration_s: f64,
        devices: u64,
        connections: u64,
        measures: RunMeasures,
        config: C,
    ) -> Self {
        let per_s = |n: u64| {
            if duration_s > 0.0 {
                ((n as f64 / duration_s) * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        Self {
            fixes_acked: t.fixes_acked,
            batches_acked: t.batches_acked,
            batches_sent: t.batches_sent,
            fixes_sent: t.fixes_sent,
            errors_by_status: t.errors_by_status.clone(),
            acks_by_status: t.acks_by_status.clone(),
            ack_latency_us: LatencySummary::of(&t.ack_latency_us),
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            fixes_per_s: per_s(t.fixes_acked),
            batches_per_s: per_s(t.batches_acked),
            devices,
            devices_connected: t.devices_connected,
            connections,
            sessions: t.sessions,
            clock_waits: t.clock_waits,
            fixes_in_doubt: t.fixes_in_doubt,
            connects_unfinished: t.connects_unfinished,
            measures,
            config,
        }
    }

    /// A human-readable multi-line summary for the terminal.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let l = &self.ack_latency_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "hexflow-bench: {:.1} s, {} devices ({} connected), {} connections, {} sessions",
            self.duration_s, self.devices, self.devices_connected, self.connections, self.sessions
        );
        let _ = writeln!(
            s,
            "  acked   {} fixes in {} batches ({:.0} fixes/s, {:.0} batches/s); sent {} batches",
            self.fixes_acked,
            self.batches_acked,
            self.fixes_per_s,
            self.batches_per_s,
            self.batches_sent
        );
        let _ = writeln!(
            s,
            "  ack latency µs: p50 {} p99 {} p99.9 {} max {} mean {:.0} (n={})",
            l.p50, l.p99, l.p999, l.max, l.mean, l.count
        );
        s.push_str(&self.measures.summary_lines());
        if self.errors_by_status.is_empty() {
            let _ = writeln!(s, "  errors  none");
        } else {
            let errs: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "  errors  {}", errs.join(" "));
        }
        if self.fixes_in_doubt > 0 {
            let _ = writeln!(
                s,
                "  note    {} fixes in doubt (failed on the client side; the server may have stored them)",
                self.fixes_in_doubt
            );
        }
        if self.connects_unfinished > 0 {
            let _ = writeln!(
                s,
                "  note    {} connection attempts were still in progress when sending ended",
                self.connects_unfinished
            );
        }
        if self.clock_waits > 0 {
            let _ = writeln!(
                s,
                "  note    devices waited {} times for the clock: a device reports at most one \
                 fix per ms, so throughput may be capped at ~1000 fixes/s per connection; \
                 raise --connections",
                self.clock_waits
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Cfg {
        devices: u64,
        rate: f64,
    }

    fn sample() -> Tally {
        let mut a = Tally {
            batches_sent: 3,
            fixes_sent: 150,
            sessions: 1,
            devices_connected: 1,
            ..Tally::default()
        };
        for us in [100, 200, 300] {
            a.acked(50, us);
            a.ack("OK");
        }
        let mut b = Tally {
            batches_sent: 2,
            fixes_sent: 100,
            connects_unfinished: 2,
            ..Tally::default()
        };
        b.error("OVERLOADED");
        b.error(ERR_CONNECT_FAILED);
        b.error(ERR_CONNECT_FAILED);
        b.ack("OVERLOADED");
        b.acked(50, 10_000);
        b.ack("DUPLICATE");
        a.merge(&b);
        a
    }

    #[test]
    fn merge_adds_everything() {
        let t = sample();
        assert_eq!(t.fixes_acked, 200);
        assert_eq!(t.batches_acked, 4);
        assert_eq!(t.batches_sent, 5);
        assert_eq!(t.errors_total(), 3);
        assert_eq!(t.connects_unfinished, 2);
        assert_eq!(t.errors_by_status[ERR_CONNECT_FAILED], 2);
        assert_eq!(t.acks_by_status["OK"], 3);
        assert_eq!(t.ack_latency_us.len(), 4);
        assert!((10_000..=10_010).contains(&t.ack_latency_us.max()));
    }

    #[test]
    fn report_json_has_the_documented_shape() {
        let t = sample();
        let r = Report::new(
            &t,
            2.0,
            1_000_000,
            1000,
            measures(),
            Cfg {
                devices: 1_000_000,
                rate: 0.0,
            },
        );
        let v = serde_json::to_value(&r).unwrap();
        let o = v.as_object().unwrap();
        for key in [
            "fixes_acked",
            "batches_acked",
            "batches_sent",
            "errors_by_status",
            "ack_latency_us",
            "duration_s",
            "fixes_per_s",
            "devices",
            "connections",
            "config",
            "steady_state",
            "connect_phase",
            "server",
            "timeline",
        ] {
            assert!(o.contains_key(key), "missing {key} in {v}");
        }
        assert_eq!(v["steady_state"]["start_s"], 1.0);
        assert_eq!(v["steady_state"]["fixes_acked"], 150);
        assert_eq!(v["steady_state"]["ack_latency_us"]["count"], 3);
        assert_eq!(v["steady_state"]["server"]["cpu_us_per_batch"], 333_333.333);
        assert_eq!(v["connect_phase"]["connections_per_s"], 2000.0);
        assert_eq!(v["server"]["pid"], 7);
        assert_eq!(v["timeline"]["slots"].as_array().unwrap().len(), 3);
        assert_eq!(v["timeline"]["slots"][1]["batches"], 3);
        // The JSON reads back into the measures the comparison tables use.
        let back: RunMeasures = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r.measures);
        assert_eq!(v["fixes_acked"], 200);
        assert_eq!(v["batches_acked"], 4);
        assert_eq!(v["batches_sent"], 5);
        assert_eq!(v["fixes_per_s"], 100.0);
        assert_eq!(v["duration_s"], 2.0);
        assert_eq!(v["devices"], 1_000_000);
        assert_eq!(v["connections"], 1000);
        assert_eq!(v["errors_by_status"]["CONNECT_FAILED"], 2);
        assert_eq!(v["errors_by_status"]["OVERLOADED"], 1);
        assert_eq!(v["connects_unfinished"], 2);
        assert_eq!(v["config"]["devices"], 1_000_000);
        let lat = v["ack_latency_us"].as_object().unwrap();
        for key in ["p50", "p99", "p999", "max", "mean"] {
            assert!(
                lat[key].is_number(),
                "ack_latency_us.{key} not a number: {v}"
            );
        }
        assert_eq!(v["ack_latency_us"]["p50"], 200);
        let max = v["ack_latency_us"]["max"].as_u64().unwrap();
        assert!((10_000..=10_010).contains(&max), "max {max}");
        assert!(r.summary().contains("CONNECT_FAILED=2"));
        assert!(
            r.summary().contains("steady  1..2 s: 150 fixes/s"),
            "{}",
            r.summary()
        );
    }

    /// Three slots of one second; everything connected at 0.5 s; 3 batches acked in slot 1.
    fn measures() -> RunMeasures {
        use crate::timeline::{Sample, ServerSample};
        let mut tl = Timeline::new(3_000_000, 2_000_000);
        for i in 0..3 {
            tl.record(Sample {
                at_us: 1_000_000 + i * 1000,
                latency_us: 200,
                fixes: 50,
            });
        }
        for k in 0..=3u64 {
            tl.record_server(
                k as usize,
                ServerSample {
                    cpu_us: k * 1_000_000,
                    rss_kb: 100,
                },
            );
        }
        tl.mark_all_connected(500_000, None);
        let usage = ServerUsage {
            pid: 7,
            cpu_s: 3.0,
            rss_kb_start: 100,
            rss_kb_end: 100,
            rss_kb_peak: 120,
        };
        RunMeasures::new(&tl, 1000, Some(usage))
    }

    #[test]
    fn empty_run_reports_zeros() {
        let tl = Timeline::new(1, 1);
        let r = Report::new(
            &Tally::default(),
            0.0,
            1,
            1,
            RunMeasures::new(&tl, 1, None),
            (),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["steady_state"], serde_json::Value::Null);
        assert_eq!(v["connect_phase"], serde_json::Value::Null);
        assert_eq!(v["fixes_per_s"], 0.0);
        assert_eq!(v["ack_latency_us"]["max"], 0);
        assert_eq!(v["errors_by_status"], serde_json::json!({}));
    }

    #[test]
    fn latency_is_clamped_at_the_histogram_bound() {
        let mut t = Tally::default();
        t.acked(1, u64::MAX);
        t.acked(1, 0);
        assert_eq!(t.ack_latency_us.len(), 2);
        assert!(t.ack_latency_us.max() >= LATENCY_MAX_US);
        assert_eq!(t.ack_latency_us.min(), 1);
    }
}
