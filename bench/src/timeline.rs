//! Ack latency and throughput per second of a run, the steady state, and the server's CPU
//! and memory over the same seconds.
//!
//! # Contract
//! * Pure: every time is an argument, in µs since the run's start; no clock, no IO.
//! * Bounded: at most [`SLOTS_MAX`] slots. A slot is one second, or for runs longer than
//!   [`SLOTS_MAX`] seconds the smallest whole number of seconds that fits the run in
//!   [`SLOTS_MAX`] slots ([`slot_us_for`]). A sample after the last slot goes to the last slot.
//!   A slot's histogram is only allocated when its first sample arrives.
//! * Samples are binned by **completion** time (when the ack arrived), like HdrHistogram
//!   interval logs: a stall shows as seconds with few or no acks followed by a latency spike
//!   in the second it ends.
//! * The steady state is the whole slots between the moment every connection had connected
//!   ([`Timeline::mark_all_connected`]) and the end of the sending phase
//!   ([`Timeline::new`]'s `load_end_us`). Its latency, throughput and server CPU are computed
//!   over exactly those slots, so the three describe the same interval.
//! * Slot histograms keep [`SLOT_SIGFIG`] significant digits (values within 1 %), which keeps
//!   a slot at ~26 KB; the whole-run totals of the report keep 3 (`report::Tally`).
//! * Recording is batched: a connection task collects samples in a [`SampleBuf`] (at most
//!   [`SAMPLE_BUF_MAX`]) and hands the full buffer over with [`Timeline::record_all`], so
//!   the shared timeline's lock is taken once per [`SAMPLE_BUF_MAX`] acks.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::{LATENCY_MAX_US, LatencySummary};

/// Most slots in a timeline.
pub const SLOTS_MAX: usize = 1024;
/// Samples a [`SampleBuf`] holds before it must be flushed.
pub const SAMPLE_BUF_MAX: usize = 256;
/// Significant decimal digits of a slot's latency histogram.
pub const SLOT_SIGFIG: u8 = 2;
const US_PER_S: u64 = 1_000_000;

/// One acknowledged request: when its ack arrived, how long it took, how many fixes it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Completion time, µs since the run's start.
    pub at_us: u64,
    /// Send-to-ack latency, µs.
    pub latency_us: u64,
    /// Fixes in the request (1 for a bare-quinn message or a handshake).
    pub fixes: u32,
}

/// A connection task's bounded buffer of samples (see the module contract).
#[derive(Debug, Default)]
pub struct SampleBuf {
    samples: Vec<Sample>,
}

impl SampleBuf {
    /// Adds `s`; returns true when the buffer is full and must be flushed before the next push.
    pub fn push(&mut self, s: Sample) -> bool {
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(SAMPLE_BUF_MAX);
        }
        self.samples.push(s);
        self.samples.len() >= SAMPLE_BUF_MAX
    }

    /// Moves every sample into `timeline`; the buffer is empty afterwards.
    pub fn flush_into(&mut self, timeline: &mut Timeline) {
        timeline.record_all(&self.samples);
        self.samples.clear();
    }

    /// Number of buffered samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample is buffered.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// The server's cumulative CPU time and memory at one moment (see `procfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSample {
    /// utime + stime of all the server's threads, µs.
    pub cpu_us: u64,
    /// Resident set size, KiB.
    pub rss_kb: u64,
}

#[derive(Debug)]
struct Slot {
    latency_us: Option<Histogram<u64>>,
    fixes: u64,
}

/// Per-slot latency histograms and fix counts, server samples at slot boundaries, and the
/// moment every connection was up.
#[derive(Debug)]
pub struct Timeline {
    slot_us: u64,
    load_end_us: u64,
    slots: Vec<Slot>,
    /// `boundary[k]`: the server at `k * slot_us` (k = 0 ..= slots).
    boundary: Vec<Option<ServerSample>>,
    all_connected: Option<(u64, Option<ServerSample>)>,
    all_devices_connected_us: Option<u64>,
}

/// The slot length for a run spanning `span_us`: one second, or the smallest number of
/// whole seconds that fits the span in [`SLOTS_MAX`] slots.
pub fn slot_us_for(span_us: u64) -> u64 {
    let slots_max = SLOTS_MAX as u64;
    let seconds = span_us.div_ceil(US_PER_S).max(1);
    seconds.div_ceil(slots_max).max(1) * US_PER_S
}

fn slot_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, SLOT_SIGFIG)
        .expect("constant bounds 1..=LATENCY_MAX_US with 2 sigfig are valid")
}

impl Timeline {
    /// A timeline for a run spanning `span_us` (everything up to the hard stop) whose
    /// sending phase ends at `load_end_us`.
    pub fn new(span_us: u64, load_end_us: u64) -> Self {
        let slot_us = slot_us_for(span_us);
        // span_us / slot_us <= SLOTS_MAX by construction of slot_us.
        let n = (span_us.div_ceil(slot_us).max(1) as usize).min(SLOTS_MAX);
        let slots = (0..n)
            .map(|_| Slot {
                latency_us: None,
                fixes: 0,
            })
            .collect();
        Timeline {
            slot_us,
            load_end_us: load_end_us.min(span_us),
            slots,
            boundary: vec![None; n + 1],
            all_connected: None,
            all_devices_connected_us: None,
        }
    }

    /// Slot length, µs.
    pub fn slot_us(&self) -> u64 {
        self.slot_us
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the timeline has no slot (never: there is at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot_of(&self, at_us: u64) -> usize {
        ((at_us / self.slot_us) as usize).min(self.slots.len() - 1)
    }

    /// Records one sample.
    pub fn record(&mut self, s: Sample) {
        let i = self.slot_of(s.at_us);
        let slot = &mut self.slots[i];
        slot.fixes += u64::from(s.fixes);
        slot.latency_us
            .get_or_insert_with(slot_histogram)
            .saturating_record(s.latency_us.clamp(1, LATENCY_MAX_US));
    }

    /// Records every sample of `samples`.
    pub fn record_all(&mut self, samples: &[Sample]) {
        for s in samples {
            self.record(*s);
        }
    }

    /// Stores the server sample taken at boundary `k` (time `k * slot_us`); later samples of
    /// the same boundary are ignored, boundaries past the end too.
    pub fn record_server(&mut self, k: usize, sample: ServerSample) {
        if let Some(b @ None) = self.boundary.get_mut(k) {
            *b = Some(sample);
        }
    }

    /// Notes that every connection had connected at `at_us` (first call wins), with the
    /// server's state at that moment when known.
    pub fn mark_all_connected(&mut self, at_us: u64, server: Option<ServerSample>) {
        self.all_connected.get_or_insert((at_us, server));
    }

    /// Notes that every device had connected at least once at `at_us` (first call wins).
    pub fn mark_all_devices_connected(&mut self, at_us: u64) {
        self.all_devices_connected_us.get_or_insert(at_us);
    }

    /// The first and one-past-last slot of the steady state, if it has at least one slot.
    fn steady_slots(&self) -> Option<(usize, usize)> {
        let (at_us, _) = self.all_connected?;
        let first = at_us.div_ceil(self.slot_us) as usize;
        let end = ((self.load_end_us / self.slot_us) as usize).min(self.slots.len());
        (first < end).then_some((first, end))
    }

    /// Every slot and the two moments, as reported.
    pub fn report(&self) -> TimelineReport {
        let slot_s = self.slot_us as f64 / US_PER_S as f64;
        let slots = self
            .slots
            .iter()
            .enumerate()
            .map(|(k, s)| self.slot_report(k, s, slot_s))
            .collect();
        TimelineReport {
            slot_s,
            load_end_s: secs(self.load_end_us),
            all_connected_at_s: self.all_connected.map(|(at, _)| secs(at)),
            all_devices_connected_at_s: self.all_devices_connected_us.map(secs),
            slots,
        }
    }

    fn slot_report(&self, k: usize, s: &Slot, slot_s: f64) -> SlotReport {
        let lat = s
            .latency_us
            .as_ref()
            .map_or_else(LatencySummary::empty, LatencySummary::of);
        let (cpu_s, rss_kb) = match (self.boundary[k], self.boundary[k + 1]) {
            (Some(a), Some(b)) => (Some(cpu_s(a, b)), Some(b.rss_kb)),
            _ => (None, None),
        };
        SlotReport {
            t_s: k as f64 * slot_s,
            batches: lat.count,
            fixes: s.fixes,
            p50_us: lat.p50,
            p99_us: lat.p99,
            p999_us: lat.p999,
            max_us: lat.max,
            server_cpu_s: cpu_s,
            server_rss_kb: rss_kb,
        }
    }

    /// The steady state (see the module contract); `None` when not one whole slot lies
    /// between the moment every connection was up and the end of the sending phase.
    pub fn steady_state(&self) -> Option<SteadyState> {
        let (first, end) = self.steady_slots()?;
        let mut hist = slot_histogram();
        let mut fixes = 0;
        for s in &self.slots[first..end] {
            fixes += s.fixes;
            let Some(h) = &s.latency_us else { continue };
            if hist.add(h).is_err() {
                // Same bounds everywhere, so `add` cannot fail; stay correct anyway.
                for v in h.iter_recorded() {
                    hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
        }
        let duration_us = (end - first) as u64 * self.slot_us;
        let duration_s = secs(duration_us);
        let latency = LatencySummary::of(&hist);
        let server = match (self.boundary[first], self.boundary[end]) {
            (Some(a), Some(b)) => {
                let cpu = cpu_s(a, b);
                let max_rss = self.boundary[first..=end]
                    .iter()
                    .flatten()
                    .map(|b| b.rss_kb)
                    .max()
                    .unwrap_or(b.rss_kb);
                Some(SteadyServer {
                    cpu_s: cpu,
                    cpu_us_per_fix: per(cpu * 1e6, fixes),
                    cpu_us_per_batch: per(cpu * 1e6, latency.count),
                    cores: round3(cpu / duration_s),
                    rss_kb_max: max_rss,
                })
            }
            _ => None,
        };
        Some(SteadyState {
            start_s: secs(first as u64 * self.slot_us),
            end_s: secs(end as u64 * self.slot_us),
            duration_s,
            batches_acked: latency.count,
            fixes_acked: fixes,
            batches_per_s: round1(latency.count as f64 / duration_s),
            fixes_per_s: round1(fixes as f64 / duration_s),
            ack_latency_us: latency,
            server,
        })
    }

    /// The connect phase: from the start to the moment every connection was up, with the
    /// server CPU spent in it when the server was sampled at both ends.
    pub fn connect_phase(&self, connections: u64) -> Option<ConnectPhase> {
        let (at_us, server_at) = self.all_connected?;
        let duration_s = secs(at_us).max(1e-6);
        let server = match (self.boundary[0], server_at) {
            (Some(a), Some(b)) => Some(ConnectServer {
                cpu_s: cpu_s(a, b),
                cpu_us_per_connection: per(cpu_s(a, b) * 1e6, connections),
                rss_kb_start: a.rss_kb,
                rss_kb_all_connected: b.rss_kb,
                rss_bytes_per_connection: per(
                    b.rss_kb.saturating_sub(a.rss_kb) as f64 * 1024.0,
                    connections,
                ),
            }),
            _ => None,
        };
        Some(ConnectPhase {
            connections,
            duration_s: round3(duration_s),
            connections_per_s: round1(connections as f64 / duration_s),
            server,
        })
    }
}

fn secs(us: u64) -> f64 {
    round3(us as f64 / US_PER_S as f64)
}

fn cpu_s(a: ServerSample, b: ServerSample) -> f64 {
    b.cpu_us.saturating_sub(a.cpu_us) as f64 / US_PER_S as f64
}

fn per(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| round3(total / n as f64))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One slot of the timeline, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotReport {
    /// Start of the slot, s since the run's start.
    pub t_s: f64,
    /// Requests acked in the slot (batches, messages, or handshakes).
    pub batches: u64,
    /// Fixes in them.
    pub fixes: u64,
    /// Ack latency percentiles of the slot, µs (0 when nothing was acked).
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Server CPU time spent in the slot, s (`None` without `--server-pid`).
    pub server_cpu_s: Option<f64>,
    /// Server RSS at the end of the slot, KiB.
    pub server_rss_kb: Option<u64>,
}

/// The server during the steady state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteadyServer {
    /// CPU time, s.
    pub cpu_s: f64,
    /// CPU µs per acked fix.
    pub cpu_us_per_fix: Option<f64>,
    /// CPU µs per acked request (batch or message).
    pub cpu_us_per_batch: Option<f64>,
    /// Average cores busy.
    pub cores: f64,
    /// Largest RSS seen at a slot boundary, KiB.
    pub rss_kb_max: u64,
}

/// The steady state: whole slots after every connection was up, until the sending phase ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteadyState {
    /// Start, s since the run's start (a slot boundary).
    pub start_s: f64,
    /// End, s (a slot boundary, at or before the end of the sending phase).
    pub end_s: f64,
    /// `end_s - start_s`.
    pub duration_s: f64,
    /// Requests acked in the interval (by completion time).
    pub batches_acked: u64,
    /// Fixes in them.
    pub fixes_acked: u64,
    /// `batches_acked / duration_s`.
    pub batches_per_s: f64,
    /// `fixes_acked / duration_s`.
    pub fixes_per_s: f64,
    /// Ack latency of the requests acked in the interval (2 significant digits).
    pub ack_latency_us: LatencySummary,
    /// The server over the same interval (with `--server-pid`).
    pub server: Option<SteadyServer>,
}

/// The server during the connect phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectServer {
    /// CPU time from the start to the moment every connection was up, s.
    pub cpu_s: f64,
    /// `cpu_s` per connection, µs: the handshake cost (plus whatever else the phase did).
    pub cpu_us_per_connection: Option<f64>,
    /// RSS at the start, KiB.
    pub rss_kb_start: u64,
    /// RSS when every connection was up, KiB.
    pub rss_kb_all_connected: u64,
    /// `(rss_kb_all_connected - rss_kb_start) * 1024 / connections`.
    pub rss_bytes_per_connection: Option<f64>,
}

/// From the start until every connection was up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectPhase {
    /// Connections opened.
    pub connections: u64,
    /// Length of the phase, s.
    pub duration_s: f64,
    /// `connections / duration_s`.
    pub connections_per_s: f64,
    /// The server in the phase (with `--server-pid`).
    pub server: Option<ConnectServer>,
}

/// The timeline as reported in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineReport {
    /// Slot length, s.
    pub slot_s: f64,
    /// End of the sending phase, s.
    pub load_end_s: f64,
    /// When every connection had connected at least once, s (`None`: never).
    pub all_connected_at_s: Option<f64>,
    /// When every device had connected at least once, s (`None`: never; with more devices
    /// than connections each device only gets a turn late in the run).
    pub all_devices_connected_at_s: Option<f64>,
    /// Every slot, in order.
    pub slots: Vec<SlotReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = US_PER_S;

    fn sample(at_us: u64, latency_us: u64) -> Sample {
        Sample {
            at_us,
            latency_us,
            fixes: 50,
        }
    }

    fn server(cpu_s: u64, rss_kb: u64) -> ServerSample {
        ServerSample {
            cpu_us: cpu_s * S,
            rss_kb,
        }
    }

    #[test]
    fn slot_length_is_a_second_until_the_slots_run_out() {
        assert_eq!(slot_us_for(0), S);
        assert_eq!(slot_us_for(10 * S), S);
        assert_eq!(slot_us_for(SLOTS_MAX as u64 * S), S);
        assert_eq!(slot_us_for(SLOTS_MAX as u64 * S + 1), 2 * S);
        assert_eq!(slot_us_for(7 * 24 * 3600 * S), 591 * S);
        for span in [1, S, 999 * S, 1025 * S, 604_800 * S + 5] {
            assert!(Timeline::new(span, span).len() <= SLOTS_MAX, "span {span}");
        }
        let t = Timeline::new(10 * S + 1, 10 * S);
        assert_eq!(t.len(), 11);
    }

    #[test]
    fn samples_land_in_the_second_of_their_completion() {
        let mut t = Timeline::new(5 * S, 5 * S);
        t.record(sample(0, 100));
        t.record(sample(S - 1, 300));
        t.record(sample(S, 10_000));
        // Past the end: clamped into the last slot.
        t.record(sample(99 * S, 2_000));
        let r = t.report();
        assert_eq!(r.slots.len(), 5);
        assert_eq!(r.slots[0].batches, 2);
        assert_eq!(r.slots[0].fixes, 100);
        assert_eq!(r.slots[1].batches, 1);
        assert!((9_900..=10_100).contains(&r.slots[1].p50_us));
        assert_eq!(r.slots[2].batches, 0);
        assert_eq!(r.slots[2].p99_us, 0);
        assert_eq!(r.slots[4].batches, 1);
        assert_eq!(r.slots[3].t_s, 3.0);
        // Slot histograms keep two significant digits: within 1 %.
        assert!(
            (297..=303).contains(&r.slots[0].max_us),
            "{}",
            r.slots[0].max_us
        );
    }

    #[test]
    fn buffered_samples_reach_the_timeline_when_flushed() {
        let mut t = Timeline::new(3 * S, 3 * S);
        let mut buf = SampleBuf::default();
        for i in 0..SAMPLE_BUF_MAX - 1 {
            assert!(!buf.push(sample(i as u64, 10)), "not full at {i}");
        }
        assert!(buf.push(sample(2 * S, 10)), "full at SAMPLE_BUF_MAX");
        assert_eq!(t.report().slots[0].batches, 0);
        buf.flush_into(&mut t);
        assert!(buf.is_empty());
        let r = t.report();
        assert_eq!(r.slots[0].batches, SAMPLE_BUF_MAX as u64 - 1);
        assert_eq!(r.slots[2].batches, 1);
    }

    #[test]
    fn steady_state_is_the_whole_slots_after_all_connected() {
        let mut t = Timeline::new(12 * S, 10 * S);
        // A slow ramp (latency 1 s) then steady 2 ms; acks after the load ended are excluded.
        for sec in 0..12u64 {
            let lat = if sec < 3 { 1_000_000 } else { 2_000 };
            for i in 0..100 {
                t.record(sample(sec * S + i * 1_000, lat));
            }
        }
        for k in 0..=12 {
            t.record_server(k, server(k as u64 * 2, 1_000 + k as u64));
        }
        assert!(
            t.steady_state().is_none(),
            "no steady state before all connected"
        );
        t.mark_all_connected(2 * S + S / 2, Some(server(5, 1_002)));
        t.mark_all_connected(9 * S, None);
        let r = t.report();
        assert_eq!(r.all_connected_at_s, Some(2.5));
        let st = t.steady_state().expect("steady state");
        assert_eq!((st.start_s, st.end_s, st.duration_s), (3.0, 10.0, 7.0));
        assert_eq!(st.batches_acked, 700);
        assert_eq!(st.fixes_acked, 35_000);
        assert_eq!(st.fixes_per_s, 5_000.0);
        assert!((1_980..=2_020).contains(&st.ack_latency_us.p99), "{st:?}");
        let srv = st.server.expect("server sampled");
        assert_eq!(srv.cpu_s, 14.0);
        assert_eq!(srv.cpu_us_per_batch, Some(20_000.0));
        assert_eq!(srv.cpu_us_per_fix, Some(400.0));
        assert_eq!(srv.cores, 2.0);
        assert_eq!(srv.rss_kb_max, 1_010);
        assert_eq!(r.slots[4].server_cpu_s, Some(2.0));
        assert_eq!(r.slots[4].server_rss_kb, Some(1_005));
        let cp = t.connect_phase(1_000).expect("connect phase");
        assert_eq!(cp.duration_s, 2.5);
        assert_eq!(cp.connections_per_s, 400.0);
        let cs = cp.server.expect("server sampled");
        assert_eq!(cs.cpu_s, 5.0);
        assert_eq!(cs.cpu_us_per_connection, Some(5_000.0));
        assert_eq!(cs.rss_bytes_per_connection, Some(2.048));
    }

    #[test]
    fn no_steady_state_without_a_whole_slot() {
        let mut t = Timeline::new(10 * S, 5 * S);
        t.mark_all_connected(4 * S + 1, None);
        assert!(t.steady_state().is_none());
        let mut t = Timeline::new(10 * S, 5 * S);
        t.mark_all_connected(4 * S, None);
        let st = t.steady_state().expect("one slot");
        assert_eq!(st.duration_s, 1.0);
        assert_eq!(st.batches_acked, 0);
        assert!(st.server.is_none(), "server never sampled");
        assert!(t.connect_phase(10).unwrap().server.is_none());
    }

    #[test]
    fn server_samples_are_first_wins_and_bounded() {
        let mut t = Timeline::new(2 * S, 2 * S);
        t.record_server(0, server(1, 10));
        t.record_server(0, server(9, 90));
        t.record_server(1, server(2, 20));
        t.record_server(99, server(3, 30));
        let r = t.report();
        assert_eq!(r.slots[0].server_cpu_s, Some(1.0));
        assert_eq!(r.slots[1].server_cpu_s, None, "boundary 2 missing");
        t.mark_all_devices_connected(S);
        t.mark_all_devices_connected(2 * S);
        assert_eq!(t.report().all_devices_connected_at_s, Some(1.0));
    }
}
