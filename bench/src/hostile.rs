//! `hexflow-hostile`: one attack from issue 11's table against a running hexflow server,
//! with a legit fleet beside it, measured before, during and after the attack.
//!
//! # Contract
//! * The run has four phases on one monotonic clock: `warmup` (the legit fleet connects; not
//!   judged), `baseline` (legit alone), `attack` (legit plus the attack), `after` (the attack
//!   is gone: its runtime was dropped without closing anything, as a vanished peer).
//! * The legit fleet ([`legit`]) connects from `--legit-sources` addresses from
//!   `--legit-bind` on (127.0.1.1.., 50 by default: devices behind a few NATs), the attacker
//!   ([`attack`]) from `--attack-bind` (127.0.0.3): one source, as in the table.
//! * Every legit connection attempt counts in the phase it started in, every ack in the
//!   phase its batch was sent in; nothing is dropped: a failure is counted by its name.
//! * Bounded: every phase has a fixed length, every connect and ack a timeout; the attack
//!   runs on its own runtime, shut down at the end of its phase whatever its tasks are doing.
//! * The verdict ([`Verdict`]) is the done-when, per attack: legit connects ≥
//!   `--connected-min` during and after the attack, ack p99 during it ≤ `--p99-ratio-max` ×
//!   the baseline's, and the server's RSS growth bounded by `--rss-growth-max-mib`.

pub mod attack;
pub mod legit;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ingest::auth::TokenKey;
use serde::Serialize;

use self::attack::{Attack, AttackParams};
use crate::procfs::{ServerUsage, ServerWatch};
use crate::report::{LATENCY_MAX_US, LatencySummary};
use crate::timeline::{Timeline, TimelineReport};

/// Longest phase, in seconds.
pub const PHASE_S_MAX: u64 = 600;
/// Most legit devices.
pub const LEGIT_DEVICES_MAX: u64 = 100_000;
/// Most attacker workers (concurrent attack tasks).
pub const ATTACK_WORKERS_MAX: u64 = 50_000;

/// `hexflow-hostile`: run one attack against a hexflow server beside a legit fleet.
#[derive(Debug, Clone, clap::Parser, Serialize)]
#[command(name = "hexflow-hostile", version, about, long_about = None)]
pub struct HostileArgs {
    /// Server address (ip:port).
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM file with the CA that signed the server certificate.
    #[arg(long)]
    pub ca: PathBuf,
    /// The server's data directory (the token secret is `<DIR>/secret/token.key`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The server's pid, sampled from /proc for CPU and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The attack.
    #[arg(long, value_enum)]
    pub attack: Attack,
    /// Concurrent attack tasks [default: the attack's own, see `hexflow-hostile --help`].
    #[arg(long)]
    pub attack_workers: Option<u64>,
    /// Nice value of the attacker's threads (0..=19). The attacker shares the box with the
    /// server; at 19 it only gets CPU the server and the legit fleet leave, so what is
    /// measured is the server's defence, not the attacker's own CPU use.
    #[arg(long, default_value_t = 19)]
    pub attack_nice: i32,
    /// Rate of the Initial flood, packets/s.
    #[arg(long, default_value_t = 2_000)]
    pub initial_rate: u32,
    /// Legit devices; each runs sessions of `--legit-session-s`, one after the other.
    #[arg(long, default_value_t = 500)]
    pub legit_devices: u64,
    /// Legit fixes per second, all devices together (50-fix batches).
    #[arg(long, default_value_t = 20_000)]
    pub legit_rate: u32,
    /// Length of one legit session (connect, batches, close), s.
    #[arg(long, default_value_t = 5)]
    pub legit_session_s: u64,
    /// First source address of the legit fleet; device `i` connects from this address
    /// plus `i mod --legit-sources` (legit devices come from many addresses; the server's
    /// per-source limits are per address).
    #[arg(long, default_value = "127.0.1.1")]
    pub legit_bind: std::net::Ipv4Addr,
    /// Distinct legit source addresses.
    #[arg(long, default_value_t = 50)]
    pub legit_sources: u32,
    /// Source address of the attacker.
    #[arg(long, default_value = "127.0.0.3")]
    pub attack_bind: std::net::IpAddr,
    /// Phase lengths, s.
    #[arg(long, default_value_t = 5)]
    pub warmup_s: u64,
    /// Legit alone, s.
    #[arg(long, default_value_t = 10)]
    pub baseline_s: u64,
    /// Legit plus the attack, s (longer than the server's 20 s frame deadline, so that
    /// the attacks it ends are seen ending).
    #[arg(long, default_value_t = 25)]
    pub attack_s: u64,
    /// Legit after the attack is gone, s.
    #[arg(long, default_value_t = 15)]
    pub after_s: u64,
    /// Verdict: least share of legit connection attempts that succeed (attack and after).
    #[arg(long, default_value_t = 0.95)]
    pub connected_min: f64,
    /// Verdict: largest ack p99 during the attack over the baseline's.
    #[arg(long, default_value_t = 2.0)]
    pub p99_ratio_max: f64,
    /// Verdict: largest server RSS growth (peak during attack and after, over the
    /// baseline's peak), MiB.
    #[arg(long, default_value_t = 256)]
    pub rss_growth_max_mib: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A run's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The legit fleet connects; not judged.
    Warmup,
    /// Legit alone.
    Baseline,
    /// Legit plus the attack.
    Attack,
    /// Legit, the attack gone.
    After,
}

/// Number of phases.
const PHASES: usize = 4;

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; PHASES] = [Phase::Warmup, Phase::Baseline, Phase::Attack, Phase::After];

    fn index(self) -> usize {
        self as usize
    }
}

/// The phase boundaries, from the run's start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The run's start.
    pub start: Instant,
    /// End of warmup, baseline, attack and after (the run's end).
    pub ends: [Instant; PHASES],
}

impl Schedule {
    /// Phases of the given lengths, starting at `start`.
    pub fn new(start: Instant, lengths_s: [u64; PHASES]) -> Self {
        let mut at = start;
        let ends = lengths_s.map(|s| {
            at += Duration::from_secs(s);
            at
        });
        Schedule { start, ends }
    }

    /// The phase `t` falls in (the last one after the end).
    pub fn phase_at(&self, t: Instant) -> Phase {
        match self.ends.iter().position(|&end| t < end) {
            Some(0) => Phase::Warmup,
            Some(1) => Phase::Baseline,
            Some(2) => Phase::Attack,
            _ => Phase::After,
        }
    }

    /// The run's end.
    pub fn end(&self) -> Instant {
        self.ends[PHASES - 1]
    }
}

/// Named counters, shared by the tasks of a fleet or an attack.
#[derive(Debug, Default)]
pub struct Counts(Mutex<BTreeMap<String, u64>>);

impl Counts {
    /// Adds `n` to `name`.
    pub fn add(&self, name: &str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match m.get_mut(name) {
            Some(v) => *v += n,
            None => {
                m.insert(name.to_owned(), n);
            }
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A histogram of µs with the bounds and precision of the load generator's totals
/// (`report::Tally`).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .expect("constant bounds 1..=LATENCY_MAX_US with 3 sigfig are valid")
}

/// The server as /proc saw it during one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerPhase {
    /// CPU seconds (utime + stime) spent in the phase.
    pub cpu_s: f64,
    /// Largest RSS sampled (at the end of each second) in the phase, MiB.
    pub rss_max_mib: f64,
    /// RSS at the phase's end, MiB.
    pub rss_end_mib: f64,
}

/// The legit fleet in one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LegitPhase {
    /// Connection attempts started in the phase.
    pub connect_attempts: u64,
    /// Of those, how many got WELCOME.
    pub connected: u64,
    /// `connected / connect_attempts` (1 when nothing was attempted).
    pub connected_ratio: f64,
    /// Failed attempts by name.
    pub connect_failures: BTreeMap<String, u64>,
    /// Acks of batches sent in the phase, with status OK.
    pub acked: u64,
    /// Batches sent in the phase that did not get OK, by name.
    pub batch_failures: BTreeMap<String, u64>,
    /// Ack latency of the OK batches, µs.
    pub ack: LatencySummary,
    /// The server in the phase (with `--server-pid`).
    pub server: Option<ServerPhase>,
}

/// The done-when of issue 11, for this attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Legit connect ratio during the attack ≥ `connected_min`.
    pub connected_during: bool,
    /// Legit connect ratio after the attack ≥ `connected_min` (no lockout).
    pub connected_after: bool,
    /// Ack p99 during the attack ≤ `p99_ratio_max` × baseline's.
    pub p99_within: bool,
    /// The measured ratio.
    pub p99_ratio: f64,
    /// Server RSS growth ≤ `rss_growth_max_mib` (true without `--server-pid`).
    pub memory_bounded: bool,
    /// The measured growth, MiB.
    pub rss_growth_mib: f64,
    /// All of the above.
    pub pass: bool,
}

/// The JSON report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct HostileReport {
    /// The attack.
    pub attack: Attack,
    /// What the attack was run with.
    pub attack_params: AttackParams,
    /// The attacker's own counters (attempts, how the server answered).
    pub attack_counts: BTreeMap<String, u64>,
    /// How long the server let attack connections live, where the attack measures it.
    pub attack_hold: Option<LatencySummary>,
    /// The legit fleet per phase: warmup, baseline, attack, after.
    pub legit: BTreeMap<Phase, LegitPhase>,
    /// The legit fleet per second of the run (acks by completion time, the server's CPU
    /// and RSS), to see when a stall happened.
    pub legit_timeline: TimelineReport,
    /// The server over the whole run, peak RSS included (with `--server-pid`).
    pub server: Option<ServerUsage>,
    /// The judgement.
    pub verdict: Verdict,
    /// The flags.
    pub config: HostileArgs,
}

impl HostileReport {
    /// One line per phase and the verdict, for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!("attack {:?}: {:?}\n", self.attack, self.attack_counts);
        if let Some(h) = &self.attack_hold {
            s += &format!(
                "  attack connections held: p50 {:.0} ms, max {:.0} ms ({} closed)\n",
                ms(h.p50),
                ms(h.max),
                h.count
            );
        }
        for (phase, p) in &self.legit {
            let server = p.server.as_ref().map_or(String::new(), |v| {
                format!(
                    ", server cpu {:.2} s rss max {:.1} MiB",
                    v.cpu_s, v.rss_max_mib
                )
            });
            s += &format!(
                "  {phase:?}: connected {}/{} ({:.1} %), acked {}, p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms{server}; failures {:?} {:?}\n",
                p.connected,
                p.connect_attempts,
                p.connected_ratio * 100.0,
                p.acked,
                ms(p.ack.p50),
                ms(p.ack.p99),
                ms(p.ack.p999),
                p.connect_failures,
                p.batch_failures,
            );
        }
        let v = &self.verdict;
        s += &format!(
            "  verdict: {} (connected during {}, after {}, p99 ratio {:.2} {}, rss growth {:.1} MiB {})\n",
            if v.pass { "PASS" } else { "FAIL" },
            v.connected_during,
            v.connected_after,
            v.p99_ratio,
            v.p99_within,
            v.rss_growth_mib,
            v.memory_bounded,
        );
        s
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostileError {
    /// A flag is out of its bounds.
    #[error("--{flag} = {value} is outside {min}..={max}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token secret is unusable.
    #[error("token secret: {0}")]
    Secret(String),
    /// The CA or a QUIC endpoint could not be set up.
    #[error("set-up: {0}")]
    Setup(String),
}

fn check(flag: &'static str, value: u64, min: u64, max: u64) -> Result<(), HostileError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(HostileError::Flag {
            flag,
            value,
            min,
            max,
        })
    }
}

impl HostileArgs {
    /// Checks every bounded flag.
    ///
    /// # Errors
    /// [`HostileError::Flag`] for the first one out of bounds.
    pub fn validate(&self) -> Result<(), HostileError> {
        check("legit-devices", self.legit_devices, 1, LEGIT_DEVICES_MAX)?;
        check("legit-rate", u64::from(self.legit_rate), 50, 10_000_000)?;
        check("legit-sources", u64::from(self.legit_sources), 1, 250)?;
        check("legit-session-s", self.legit_session_s, 1, PHASE_S_MAX)?;
        check("warmup-s", self.warmup_s, 1, PHASE_S_MAX)?;
        check("baseline-s", self.baseline_s, 1, PHASE_S_MAX)?;
        check("attack-s", self.attack_s, 1, PHASE_S_MAX)?;
        check("after-s", self.after_s, 1, PHASE_S_MAX)?;
        check(
            "attack-nice",
            u64::try_from(self.attack_nice).unwrap_or(u64::MAX),
            0,
            19,
        )?;
        check("initial-rate", u64::from(self.initial_rate), 1, 1_000_000)?;
        if let Some(w) = self.attack_workers {
            check("attack-workers", w, 1, ATTACK_WORKERS_MAX)?;
        }
        Ok(())
    }
}

/// Judges a run (pure).
pub fn verdict(legit: &BTreeMap<Phase, LegitPhase>, args: &HostileArgs) -> Verdict {
    let get = |p| legit.get(&p).cloned().unwrap_or_default();
    let (base, during, after) = (get(Phase::Baseline), get(Phase::Attack), get(Phase::After));
    let connected_during = during.connected_ratio >= args.connected_min;
    let connected_after = after.connected_ratio >= args.connected_min;
    let p99_ratio = if base.ack.p99 > 0 {
        during.ack.p99 as f64 / base.ack.p99 as f64
    } else {
        f64::INFINITY
    };
    // A phase without a single OK ack fails the latency criterion.
    let p99_within = during.ack.count > 0 && p99_ratio <= args.p99_ratio_max;
    let peak = |p: &LegitPhase| p.server.as_ref().map_or(0.0, |s| s.rss_max_mib);
    let rss_growth_mib = (peak(&during).max(peak(&after)) - peak(&base)).max(0.0);
    let memory_bounded = rss_growth_mib <= args.rss_growth_max_mib as f64;
    Verdict {
        connected_during,
        connected_after,
        p99_within,
        p99_ratio,
        memory_bounded,
        rss_growth_mib,
        pass: connected_during && connected_after && p99_within && memory_bounded,
    }
}

/// The server's CPU and RSS per phase, from the timeline's one-second slots (pure): slot
/// `k` belongs to the phase second `k` starts in; `None` where no slot of a phase was sampled.
pub fn server_phases(t: &TimelineReport, schedule: &Schedule) -> [Option<ServerPhase>; PHASES] {
    let mut out: [Option<ServerPhase>; PHASES] = Default::default();
    for slot in &t.slots {
        let (Some(cpu_s), Some(rss_kb)) = (slot.server_cpu_s, slot.server_rss_kb) else {
            continue;
        };
        let at = schedule.start + Duration::from_secs_f64(slot.t_s);
        if at >= schedule.end() {
            break;
        }
        let rss_mib = rss_kb as f64 / 1024.0;
        let p = out[schedule.phase_at(at).index()].get_or_insert_with(ServerPhase::default);
        p.cpu_s += cpu_s;
        p.rss_max_mib = p.rss_max_mib.max(rss_mib);
        p.rss_end_mib = rss_mib;
    }
    out
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, HostileError> {
    std::fs::read(path).map_err(|source| HostileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn runtime(threads: usize, nice: i32) -> Result<tokio::runtime::Runtime, HostileError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .on_thread_start(move || {
            if nice > 0 {
                // Best effort: a refusal leaves the thread at its priority (logged).
                if let Err(e) = sys::thread::lower_priority(nice) {
                    tracing::warn!(error = %e, "cannot lower the attacker's priority");
                }
            }
        })
        .enable_all()
        .build()
        .map_err(|e| HostileError::Setup(format!("tokio runtime: {e}")))
}

/// Runs the four phases and judges them. Blocks the calling thread (no runtime may be
/// running on it): the legit fleet and the attack each get a runtime of their own, and the
/// attack's is shut down at the end of its phase.
///
/// # Errors
/// [`HostileError`] when the run cannot start; failures during it are counted.
pub fn run(args: &HostileArgs) -> Result<HostileReport, HostileError> {
    args.validate()?;
    let ca_pem = read(&args.ca)?;
    let secret = read(&args.data_dir.join("secret").join("token.key"))?;
    let key = TokenKey::from_bytes(&secret).map_err(|e| HostileError::Secret(e.to_string()))?;
    let schedule = Schedule::new(
        Instant::now(),
        [args.warmup_s, args.baseline_s, args.attack_s, args.after_s],
    );
    let span = schedule.end() - schedule.start;
    let timeline = Arc::new(Mutex::new(Timeline::new(
        (span + legit::DRAIN).as_micros() as u64,
        span.as_micros() as u64,
    )));

    let legit_rt = runtime(1, 0)?;
    let watch = {
        // The sampler is a task of the legit runtime.
        let _guard = legit_rt.enter();
        args.server_pid
            .map(|pid| ServerWatch::start(pid, &timeline, schedule.start, schedule.end()))
    };
    let fleet = legit::Fleet::new(args, key.clone(), ca_pem.clone(), schedule, &timeline);
    let fleet_task = legit_rt.spawn(Arc::clone(&fleet).run());

    std::thread::sleep(
        schedule.ends[Phase::Baseline.index()].saturating_duration_since(Instant::now()),
    );
    let params = AttackParams::of(args);
    let attack_counts = Arc::new(Counts::default());
    let hold = Arc::new(Mutex::new(histogram()));
    let attack_rt = runtime(1, args.attack_nice)?;
    {
        // The attack's endpoint driver must run on the attack's runtime.
        let _guard = attack_rt.enter();
        let ctx = attack::Ctx::new(
            args,
            &params,
            key,
            &ca_pem,
            Arc::clone(&attack_counts),
            Arc::clone(&hold),
        )?;
        attack_rt.spawn(attack::run(ctx, args.attack, params.clone()));
    }
    std::thread::sleep(
        schedule.ends[Phase::Attack.index()].saturating_duration_since(Instant::now()),
    );
    // A vanished attacker: its tasks and sockets are dropped, nothing is closed politely.
    attack_rt.shutdown_background();

    // Whether the fleet ended in time or not, its tallies are read as they are.
    // (The timer must be created inside the runtime, hence the async block.)
    let drain = schedule.end().saturating_duration_since(Instant::now()) + legit::DRAIN;
    let _ = legit_rt.block_on(async { tokio::time::timeout(drain, fleet_task).await });
    let server = watch.and_then(ServerWatch::finish);
    legit_rt.shutdown_timeout(Duration::from_secs(1));
    let legit_timeline = timeline
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .report();
    let mut legit = fleet.phases();
    for (phase, s) in Phase::ALL
        .into_iter()
        .zip(server_phases(&legit_timeline, &schedule))
    {
        if let Some(p) = legit.get_mut(&phase) {
            p.server = s;
        }
    }
    let hold = hold.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(HostileReport {
        attack: args.attack,
        attack_counts: attack_counts.snapshot(),
        attack_hold: (!hold.is_empty()).then(|| LatencySummary::of(&hold)),
        verdict: verdict(&legit, args),
        legit,
        legit_timeline,
        server,
        attack_params: params,
        config: args.clone(),
    })
}

#[cfg(test)]
mod tests;
