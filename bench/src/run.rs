//! The async runner: connection tasks, device sessions, pacing, pipelining and progress.
//!
//! # Contract
//! * Each of the `--connections` tasks owns a disjoint, fixed share of the devices
//!   (`first + idx`, `first + idx + C`, ...) and cycles through it: connect as the device,
//!   send `--batches-per-session` batches (or, time-sliced, until the device's share of the
//!   time left is used; one device per connection = long-lived), close, next device.
//!   Per device the task keeps one [`SimDevice`] (≤ 64 bytes),
//!   created when the device is first visited, so memory grows with the devices reached,
//!   never with fixes sent.
//! * No task is spawned per batch or per fix: a connection task pipelines up to
//!   `--inflight` sends as futures it polls itself.
//! * The run is bounded: no batch starts after `--duration`; in-flight batches get
//!   `--grace-ms`, then sessions close (each close bounded by [`CLOSE_TIMEOUT`]); tasks
//!   still running after that are aborted and reported under [`ERR_TASK_ABORTED`].
//! * Every failure is counted, by server status name or by a client-side name
//!   (`CONNECT_FAILED`, `CONNECTION_LOST`, `ACK_TIMEOUT`, ...), never silently dropped.
//! * Every ack also goes into the run's [`Timeline`] (per-second latency, steady state):
//!   through the connection's [`SampleBuf`], so the shared lock is taken once per
//!   `SAMPLE_BUF_MAX` acks. The moment every connection task has connected once marks the
//!   start of the steady state. With `--server-pid` the server is sampled at every slot
//!   boundary, at that moment, and at the start and end of the run.
//! * Only this module (and `main`) reads the clock; fix times come from the wall clock,
//!   durations and pacing from the monotonic clock.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::auth::TokenKey;
use ingest::client::{self, ClientConfig, ClientError, Device, SessionError};
use ingest::wire::{Ack, Fixes, Status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout};

use crate::cli::{Args, ArgsError, RunConfig};
use crate::procfs::{self, ServerWatch};
use crate::report::{
    ERR_ACK_TIMEOUT, ERR_CLIENT_REJECTED, ERR_CONNECT_FAILED, ERR_CONNECTION_LOST, LiveCounters,
    Report, RunMeasures, Tally,
};
use crate::timeline::{Sample, SampleBuf, Timeline};
use crate::trajectory::SimDevice;

/// Longest wait for a session to close cleanly.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the UDP endpoints to finish closing their connections at the end.
const ENDPOINT_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Client-side failure: the connection task did not end by itself and was aborted.
pub const ERR_TASK_ABORTED: &str = "TASK_ABORTED";
/// Client-side failure: the connection attempt timed out (`--connect-timeout-ms`).
pub const ERR_CONNECT_TIMEOUT: &str = "CONNECT_TIMEOUT";
/// Backoff after a failed session, doubled per consecutive failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Largest backoff after failed sessions.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Progress bar refresh period.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// Why a run could not start. (Failures during the run are counted, not returned.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A flag is out of bounds.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// `--server` did not resolve to an address.
    #[error("cannot resolve --server {server:?}: {source}")]
    Resolve {
        /// The value given.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// `--server` resolved to no address.
    #[error("--server {server:?} resolved to no address")]
    NoAddress {
        /// The value given.
        server: String,
    },
    /// A file (CA, secret) could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token secret is unusable.
    #[error("token secret {path}: {source}")]
    Secret {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: ingest::auth::KeyError,
    },
    /// Neither `--secret` nor `--data-dir` was given.
    #[error("pass --data-dir DIR or --secret FILE")]
    NoSecret,
    /// The tokio runtime could not be built.
    #[error("cannot build the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The local QUIC endpoint could not be created.
    #[error("cannot create a client endpoint: {0}")]
    Endpoint(ClientError),
}

/// Resolves `--server` (an `ip:port` or `host:port`).
///
/// # Errors
/// [`RunError::Resolve`] or [`RunError::NoAddress`].
pub fn resolve_server(server: &str) -> Result<SocketAddr, RunError> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = server
        .to_socket_addrs()
        .map_err(|source| RunError::Resolve {
            server: server.to_owned(),
            source,
        })?;
    addrs.next().ok_or_else(|| RunError::NoAddress {
        server: server.to_owned(),
    })
}

/// The token secret path: `--secret`, else `<data-dir>/secret/token.key`.
pub fn secret_path(args: &Args) -> Option<PathBuf> {
    args.secret.clone().or_else(|| {
        args.data_dir
            .as_ref()
            .map(|d| d.join("secret").join("token.key"))
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, RunError> {
    fs::read(path).map_err(|source| RunError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Current wall-clock time in unix ms (fix times).
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Current wall-clock time in unix µs (the run's sequence-number base).
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// Paces one connection at a fixed batch period: pure, `now` is an argument.
///
/// A connection that falls behind catches up with at most `burst_max` batches at once,
/// then the schedule restarts from `now` (the backlog is dropped, not accumulated).
#[derive(Debug, Clone)]
pub struct Pacer {
    period: Option<Duration>,
    next_at: Instant,
    burst_max: u32,
}

impl Pacer {
    /// A pacer sending one batch per `period` from `start`; `None` = unpaced.
    pub fn new(period: Option<Duration>, start: Instant, burst_max: u32) -> Self {
        Self {
            period,
            next_at: start,
            burst_max: burst_max.max(1),
        }
    }

    /// The per-connection batch period for a total rate of `fixes_per_s`.
    pub fn period_for(fixes_per_s: f64, batch_fixes: usize, connections: u64) -> Duration {
        let batches_per_s_per_conn = fixes_per_s / (batch_fixes as f64 * connections as f64);
        Duration::from_secs_f64((1.0 / batches_per_s_per_conn).min(86_400.0))
    }

    /// When the next batch may go, or `None` if it may go now.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        (self.period.is_some() && self.next_at > now).then_some(self.next_at)
    }

    /// Records that a batch went at `now`.
    pub fn sent(&mut self, now: Instant) {
        if let Some(period) = self.period {
            self.next_at += period;
            let behind = period * self.burst_max;
            if self.next_at + behind < now {
                self.next_at = now;
            }
        }
    }
}

/// The name a failed send or connect is counted under: the server's status name when the
/// server refused, else a stable client-side name.
pub fn client_error_name(e: &ClientError) -> String {
    let name = match e {
        ClientError::Session(SessionError::Rejected { status, .. }) => status.as_str(),
        ClientError::Session(SessionError::UnknownStatus { code, .. }) => {
            return format!("STATUS_{code}");
        }
        ClientError::RetriesExhausted { last, .. } => return client_error_name(last),
        ClientError::ConnectTimeout { .. } => ERR_CONNECT_TIMEOUT,
        ClientError::ConnectionLost(_) => ERR_CONNECTION_LOST,
        ClientError::Read(_) => "STREAM_READ_FAILED",
        ClientError::Write(_) => "STREAM_WRITE_FAILED",
        ClientError::StreamFinished => "STREAM_FINISHED",
        ClientError::Session(SessionError::ServerClosed { .. }) => "SERVER_CLOSED",
        ClientError::Session(_) => "BAD_FRAME",
        ClientError::AckTimeout { .. } => ERR_ACK_TIMEOUT,
        ClientError::Encode(_)
        | ClientError::BatchTooLarge(_)
        | ClientError::SeqInFlight { .. } => ERR_CLIENT_REJECTED,
        ClientError::Closed => "CLOSED",
        ClientError::Bind { .. }
        | ClientError::InvalidCa { .. }
        | ClientError::Tls(_)
        | ClientError::NoInitialCipherSuite
        | ClientError::Connect(_) => ERR_CONNECT_FAILED,
        _ => "CLIENT_ERROR",
    };
    name.to_owned()
}

/// The name a failed [`Device::connect`] is counted under: the server's refusal status
/// (e.g. `UNAUTHENTICATED`), `CONNECT_TIMEOUT`, or `CONNECT_FAILED` for everything else.
pub fn connect_error_name(e: &ClientError) -> String {
    match e {
        ClientError::Session(
            SessionError::Rejected { .. } | SessionError::UnknownStatus { .. },
        )
        | ClientError::ConnectTimeout { .. } => client_error_name(e),
        _ => ERR_CONNECT_FAILED.to_owned(),
    }
}

/// What the server said about a batch, as a name for the report.
fn ack_name(ack: &Ack) -> String {
    match Status::from_code(ack.status) {
        Some(s) => s.as_str().to_owned(),
        None => format!("STATUS_{}", ack.status),
    }
}

/// Everything the connection tasks share (read-only, except the live counters).
struct Shared {
    cfg: RunConfig,
    key: TokenKey,
    ca_pem: Vec<u8>,
    endpoints: Vec<quinn::Endpoint>,
    live: LiveCounters,
    start: Instant,
    /// No batch starts after this.
    deadline: Instant,
    /// In-flight batches are given up after this.
    drain_until: Instant,
    seq_base: u64,
    /// Per-slot latency and server figures, shared by every connection task.
    timeline: Arc<Mutex<Timeline>>,
    /// Connection tasks that have connected at least once.
    conns_up: AtomicU64,
    /// Devices that have connected at least once.
    devices_up: AtomicU64,
    /// Bounds the connection attempts in progress (`--connect-concurrency`).
    connect_permits: Option<Semaphore>,
    /// The server process to sample (`--server-pid`).
    server_pid: Option<u32>,
}

impl Shared {
    /// µs since the run's start.
    fn elapsed_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        // Recording is plain counting: a panic mid-record cannot break an invariant.
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a successful connect of a connection task (its first: `conn_first`) and of a
    /// device (its first: `device_first`); the last of either kind marks the timeline.
    fn connected(&self, conn_first: bool, device_first: bool) {
        let now = Instant::now();
        if conn_first && self.conns_up.fetch_add(1, Ordering::Relaxed) + 1 == self.cfg.connections {
            let server = self.server_pid.and_then(|pid| procfs::sample(pid).ok());
            self.timeline()
                .mark_all_connected(self.elapsed_us(now), server);
        }
        if device_first && self.devices_up.fetch_add(1, Ordering::Relaxed) + 1 == self.cfg.devices {
            self.timeline()
                .mark_all_devices_connected(self.elapsed_us(now));
        }
    }
}

/// How a session ended.
enum SessionEnd {
    /// Batches sent as planned (or the run ended).
    Done,
    /// The connection failed (could not connect, or broke).
    Failed,
}

/// The result of one pipelined send.
type SendResult = (Fixes, Result<Ack, ClientError>, Instant);

async fn send_one(device: &Device, retry: bool, seq: u64, fixes: Fixes) -> SendResult {
    let sent_at = Instant::now();
    let res = if retry {
        device.send(seq, &fixes).await
    } else {
        device.send_once(seq, &fixes).await
    };
    (fixes, res, sent_at)
}

/// Counts one send result; returns false when the session should end (any client error:
/// the client library already retried what it could, and a broken connection would only
/// turn every further batch into another error).
fn account(
    sh: &Shared,
    tally: &mut Tally,
    samples: &mut SampleBuf,
    (fixes, res, sent_at): &SendResult,
) -> bool {
    match res {
        Ok(ack) => {
            let name = ack_name(ack);
            tally.ack(&name);
            match Status::from_code(ack.status) {
                Some(s) if s.is_success() => {
                    let n = fixes.len() as u64;
                    let now = Instant::now();
                    let latency_us = now.saturating_duration_since(*sent_at).as_micros() as u64;
                    tally.acked(n, latency_us);
                    let full = samples.push(Sample {
                        at_us: sh.elapsed_us(now),
                        latency_us,
                        fixes: fixes.len() as u32,
                    });
                    if full {
                        samples.flush_into(&mut sh.timeline());
                    }
                    LiveCounters::add(&sh.live.fixes_acked, n);
                    LiveCounters::add(&sh.live.batches_acked, 1);
                }
                _ => {
                    tally.error(&name);
                    LiveCounters::add(&sh.live.errors, 1);
                }
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "batch failed");
            tally.error(&client_error_name(e));
            // The batch may have reached the server before the failure.
            tally.fixes_in_doubt += fixes.len() as u64;
            LiveCounters::add(&sh.live.errors, 1);
            false
        }
    }
}

/// What one connection task carries from session to session.
struct ConnState {
    tally: Tally,
    /// Acks not yet handed to the shared timeline.
    samples: SampleBuf,
    /// This task has connected at least once.
    connected_once: bool,
    rng: SmallRng,
    /// Reused batch buffers (at most `inflight` + 1 exist).
    pool: Vec<Fixes>,
    pacer: Pacer,
}

/// One device session: connect, send batches pipelined, close. Time-sliced sessions
/// start no batch after `slice_end` (but send at least one).
async fn session(
    sh: &Shared,
    endpoint: &quinn::Endpoint,
    dev: &mut SimDevice,
    st: &mut ConnState,
    slice_end: Instant,
    dev_connected_once: &mut bool,
) -> SessionEnd {
    let tally = &mut st.tally;
    let cfg = &sh.cfg;
    // The CLI keeps ids within 1..=i64::MAX (`--device-id-base`), so this never fails.
    let Ok(device_id) = fix::DeviceId::try_from(dev.id()) else {
        return SessionEnd::Failed;
    };
    let mut ccfg = ClientConfig::new(cfg.server, sh.ca_pem.clone(), sh.key.mint(device_id));
    ccfg.server_name = cfg.server_name.clone();
    ccfg.inflight_batches_max = cfg.inflight;
    ccfg.connect_timeout_ms = cfg.pacing.connect_timeout.as_millis() as u64;
    // The client's own timeout applies; this one only stops a connect at the end of the
    // run (a session that connects after it could not send anything).
    let left = sh.deadline.saturating_duration_since(Instant::now());
    let connect = async {
        // The semaphore is never closed, so acquiring only fails if it were: connect anyway.
        let _permit = match &sh.connect_permits {
            Some(sem) => sem.acquire().await.ok(),
            None => None,
        };
        Device::connect(endpoint, ccfg).await
    };
    let device = match timeout(left, connect).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::debug!(device = dev.id(), error = %e, "connect failed");
            tally.error(&connect_error_name(&e));
            LiveCounters::add(&sh.live.errors, 1);
            return SessionEnd::Failed;
        }
        // The run ended while connecting: nothing was sent, so no error, but counted (a
        // handshake measurement must know how many never finished).
        Err(_) => {
            tally.connects_unfinished += 1;
            return SessionEnd::Failed;
        }
    };
    tally.sessions += 1;
    sh.connected(!st.connected_once, !*dev_connected_once);
    st.connected_once = true;
    *dev_connected_once = true;
    LiveCounters::add(&sh.live.sessions_open, 1);
    let end = pump(sh, &device, dev, st, slice_end).await;
    let _ = timeout(CLOSE_TIMEOUT, device.close()).await;
    sh.live
        .sessions_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    end
}

/// True when the session should start no further batch: `batches_per_session` sent, or
/// (time-sliced) its slice is over and at least one batch went, or the run is over.
fn session_over(
    cfg: &RunConfig,
    started: u64,
    now: Instant,
    slice_end: Instant,
    deadline: Instant,
) -> bool {
    let full = match cfg.batches_per_session {
        Some(b) => started >= b,
        None => started >= 1 && now >= slice_end,
    };
    full || now >= deadline
}

/// How long a time-sliced session sends: the time left, minus the expected connect/close
/// `overhead` of every session still to come, split evenly among the devices of this
/// connection not yet served in this pass. Recomputed before each session, so one pass over
/// all devices ends about at the deadline whatever the handshakes cost.
pub fn session_slice(
    now: Instant,
    deadline: Instant,
    devices_left_in_pass: u64,
    overhead: Duration,
) -> Duration {
    // devices_left_in_pass >= 1; u32 is plenty for a divisor of a duration.
    let n = u32::try_from(devices_left_in_pass.max(1)).unwrap_or(u32::MAX);
    let left = deadline.saturating_duration_since(now);
    left.saturating_sub(overhead.saturating_mul(n)) / n
}

/// Exponentially weighted moving average of session overhead (weight 1/4 for a new sample).
fn ewma(avg: Duration, sample: Duration) -> Duration {
    (avg * 3 + sample) / 4
}

/// Sends this session's batches with up to `inflight` pipelined, then drains.
async fn pump(
    sh: &Shared,
    device: &Device,
    dev: &mut SimDevice,
    st: &mut ConnState,
    slice_end: Instant,
) -> SessionEnd {
    let cfg = &sh.cfg;
    let ConnState {
        tally,
        samples,
        rng,
        pool,
        pacer,
        ..
    } = st;
    // The server's WELCOME may allow fewer unacked batches than asked for (0 = no limit);
    // pipelining more would only make sends queue inside the client and inflate latency.
    let inflight_max = match device.welcome().inflight_batches_max {
        0 => cfg.inflight,
        n => cfg.inflight.min(n as usize),
    };
    let mut inflight = FuturesUnordered::new();
    let mut started: u64 = 0;
    let mut broken = false;
    loop {
        // Start batches while the pipeline has room and the schedule allows.
        let mut wake: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if broken
                || session_over(cfg, started, now, slice_end, sh.deadline)
                || inflight.len() >= inflight_max
            {
                break;
            }
            if let Some(at) = pacer.wait_until(now) {
                wake = Some(at);
                break;
            }
            let mut buf = pool.pop().unwrap_or_default();
            match dev.fill_batch(unix_ms(), &cfg.trajectory, rng, &mut buf) {
                Ok(seq) => {
                    pacer.sent(now);
                    started += 1;
                    tally.batches_sent += 1;
                    tally.fixes_sent += buf.len() as u64;
                    LiveCounters::add(&sh.live.batches_sent, 1);
                    inflight.push(send_one(device, cfg.retry, seq, buf));
                }
                Err(ahead) => {
                    pool.push(buf);
                    tally.clock_waits += 1;
                    let wait = Duration::from_millis(ahead.wait_ms.max(1).unsigned_abs());
                    wake = Some(now + wait);
                    break;
                }
            }
        }
        if inflight.is_empty() {
            if broken || session_over(cfg, started, Instant::now(), slice_end, sh.deadline) {
                break;
            }
            if let Some(at) = wake {
                let mut until = at.min(sh.deadline);
                if started >= 1 && cfg.batches_per_session.is_none() {
                    until = until.min(slice_end);
                }
                sleep_until(until.into()).await;
            }
            continue;
        }
        let wake_at = wake.unwrap_or(sh.drain_until).min(sh.drain_until);
        tokio::select! {
            Some(res) = inflight.next() => {
                if !account(sh, tally, samples, &res) {
                    broken = true;
                }
                let (buf, _, _) = res;
                pool.push(buf);
            }
            () = sleep_until(wake_at.into()) => {
                if Instant::now() >= sh.drain_until {
                    // Grace period over: whatever is still in flight is given up; it may
                    // or may not have been stored.
                    let n = inflight.len() as u64;
                    for _ in 0..n {
                        tally.error(ERR_ACK_TIMEOUT);
                    }
                    tally.fixes_in_doubt += n * cfg.trajectory.batch_fixes as u64;
                    LiveCounters::add(&sh.live.errors, n);
                    break;
                }
            }
        }
    }
    drop(inflight);
    if broken {
        SessionEnd::Failed
    } else {
        SessionEnd::Done
    }
}

/// Device ids served by connection `idx`: `first + idx + k * connections`.
fn device_count_of(idx: u64, devices: u64, connections: u64) -> u64 {
    (devices - idx).div_ceil(connections)
}

/// One connection task: cycles through its devices until the deadline.
async fn connection_task(sh: Arc<Shared>, idx: u64) -> Tally {
    let cfg = &sh.cfg;
    let c = cfg.connections;
    let ramp = cfg.pacing.ramp_up.mul_f64(idx as f64 / c as f64);
    let begin = sh.start + ramp;
    if begin >= sh.deadline {
        return Tally::default();
    }
    sleep_until(begin.into()).await;
    let endpoint = &sh.endpoints[(idx as usize) % sh.endpoints.len()];
    let count = device_count_of(idx, cfg.devices, c);
    let mut devices: Vec<SimDevice> = Vec::new();
    // devices_seen[i]: device i of this task has connected at least once.
    let mut devices_seen: Vec<bool> = Vec::new();
    let period = cfg
        .rate_fixes_per_s
        .map(|r| Pacer::period_for(r, cfg.trajectory.batch_fixes, c));
    let mut st = ConnState {
        tally: Tally::default(),
        samples: SampleBuf::default(),
        connected_once: false,
        rng: SmallRng::seed_from_u64(cfg.seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        pool: Vec::with_capacity(cfg.inflight + 1),
        // Burst at most one pipeline's worth to catch up.
        pacer: Pacer::new(period, begin, cfg.inflight as u32),
    };
    let mut cursor: u64 = 0;
    let mut backoff = BACKOFF_MIN;
    let mut overhead = Duration::ZERO;
    while Instant::now() < sh.deadline {
        if cursor == devices.len() as u64 {
            let id = cfg.device_id_first + idx + cursor * c;
            devices.push(SimDevice::new(id, cfg.seed, sh.seq_base, &cfg.trajectory));
            devices_seen.push(false);
        }
        let now = Instant::now();
        let slice = session_slice(now, sh.deadline, count - cursor, overhead);
        // cursor < devices.len() <= count, which fits in usize since the Vec holds it.
        let dev = &mut devices[cursor as usize];
        let seen = &mut devices_seen[cursor as usize];
        let end = session(&sh, endpoint, dev, &mut st, now + slice, seen).await;
        // Whatever the session took beyond its slice: connect, draining, close.
        overhead = ewma(overhead, now.elapsed().saturating_sub(slice));
        match end {
            SessionEnd::Done => backoff = BACKOFF_MIN,
            SessionEnd::Failed => {
                let jitter = st.rng.random_range(0.5..1.0);
                let until = (Instant::now() + backoff.mul_f64(jitter)).min(sh.deadline);
                sleep_until(until.into()).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        cursor = (cursor + 1) % count;
    }
    st.tally.devices_connected =
        devices.iter().filter(|d| d.last_fix_ms().is_some()).count() as u64;
    st.samples.flush_into(&mut sh.timeline());
    st.tally
}

fn progress_bar(duration: Duration, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(duration.as_secs()), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

async fn progress(sh: Arc<Shared>, pb: ProgressBar) {
    let mut last_fixes = 0u64;
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let fixes = LiveCounters::get(&sh.live.fixes_acked);
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let rate = (fixes - last_fixes) as f64 / dt;
        last_fixes = fixes;
        last_at = now;
        pb.set_position(
            now.duration_since(sh.start)
                .as_secs()
                .min(sh.cfg.duration.as_secs()),
        );
        pb.set_message(format!(
            "{rate:>9.0} fixes/s | {} fixes, {} batches acked | {} sent | {} errors | {} open",
            fixes,
            LiveCounters::get(&sh.live.batches_acked),
            LiveCounters::get(&sh.live.batches_sent),
            LiveCounters::get(&sh.live.errors),
            LiveCounters::get(&sh.live.sessions_open),
        ));
    }
}

/// Validates `args`, runs the load, and returns the report (with `config` = the flags).
///
/// # Errors
/// A [`RunError`] if the run cannot start; failures during the run are counted in the report.
pub fn run(args: &Args) -> Result<Report<Args>, RunError> {
    let server = resolve_server(&args.server)?;
    let cfg = args.validate(server)?;
    let ca_pem = read("CA file", &args.ca)?;
    let secret_path = secret_path(args).ok_or(RunError::NoSecret)?;
    let secret = read("token secret", &secret_path)?;
    let key = TokenKey::from_bytes(&secret).map_err(|source| RunError::Secret {
        path: secret_path,
        source,
    })?;

    let (rt, workers) = args.run.runtime().map_err(RunError::Runtime)?;

    let mut config = args.clone();
    config.connections = Some(cfg.connections);
    let server_pid = args.run.server_pid;
    rt.block_on(async move {
        let endpoints = client_endpoints(server, workers, cfg.connections)?;
        let sh = Arc::new(shared(cfg, key, ca_pem, endpoints, server_pid));
        let hard_stop = sh.drain_until + CLOSE_TIMEOUT + Duration::from_secs(1);
        let watch =
            server_pid.map(|pid| ServerWatch::start(pid, &sh.timeline, sh.start, hard_stop));
        let pb = progress_bar(sh.cfg.duration, args.no_progress);
        let progress_task = tokio::spawn(progress(Arc::clone(&sh), pb.clone()));
        let total = run_connections(&sh, hard_stop).await;
        let elapsed = sh.start.elapsed();
        let usage = watch.and_then(ServerWatch::finish);
        progress_task.abort();
        pb.finish_and_clear();
        close_endpoints(&sh.endpoints).await;
        let measures = RunMeasures::new(&sh.timeline(), sh.cfg.connections, usage);
        Ok(Report::new(
            &total,
            elapsed.as_secs_f64(),
            sh.cfg.devices,
            sh.cfg.connections,
            measures,
            config,
        ))
    })
}

/// One UDP socket (and endpoint driver) per worker thread, shared round-robin.
fn client_endpoints(
    server: SocketAddr,
    workers: usize,
    connections: u64,
) -> Result<Vec<quinn::Endpoint>, RunError> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let n = workers.clamp(1, 64).min(connections as usize);
    (0..n)
        .map(|_| client::client_endpoint(bind).map_err(RunError::Endpoint))
        .collect()
}

/// The state every connection task shares; the run starts now.
fn shared(
    cfg: RunConfig,
    key: TokenKey,
    ca_pem: Vec<u8>,
    endpoints: Vec<quinn::Endpoint>,
    server_pid: Option<u32>,
) -> Shared {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let drain_until = deadline + cfg.pacing.grace;
    let span = cfg.duration + cfg.pacing.grace + CLOSE_TIMEOUT + Duration::from_secs(1);
    let timeline = Timeline::new(span.as_micros() as u64, cfg.duration.as_micros() as u64);
    let connect_permits = cfg.pacing.connect_concurrency.map(Semaphore::new);
    Shared {
        cfg,
        key,
        ca_pem,
        endpoints,
        live: LiveCounters::default(),
        start,
        deadline,
        drain_until,
        seq_base: unix_us(),
        timeline: Arc::new(Mutex::new(timeline)),
        conns_up: AtomicU64::new(0),
        devices_up: AtomicU64::new(0),
        connect_permits,
        server_pid,
    }
}

/// Runs every connection task to its end (aborting stragglers at `hard_stop`) and merges
/// their tallies.
async fn run_connections(sh: &Arc<Shared>, hard_stop: Instant) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..sh.cfg.connections {
        tasks.spawn(connection_task(Arc::clone(sh), idx));
    }
    let mut total = Tally::default();
    loop {
        match tokio::time::timeout_at(hard_stop.into(), tasks.join_next()).await {
            Ok(Some(Ok(t))) => total.merge(&t),
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "connection task failed");
                total.error(ERR_TASK_ABORTED);
            }
            Ok(None) => break,
            Err(_) => {
                let left = tasks.len();
                tasks.abort_all();
                for _ in 0..left {
                    total.error(ERR_TASK_ABORTED);
                }
                break;
            }
        }
    }
    total
}

/// Closes the client endpoints and waits (bounded) for their connections to finish closing.
async fn close_endpoints(endpoints: &[quinn::Endpoint]) {
    for ep in endpoints {
        ep.close(0u32.into(), b"bench done");
    }
    let _ = timeout(ENDPOINT_IDLE_TIMEOUT, async {
        for ep in endpoints {
            ep.wait_idle().await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_batches_and_drops_a_long_backlog() {
        let t0 = Instant::now();
        let p = Duration::from_millis(10);
        let mut pacer = Pacer::new(Some(p), t0, 4);
        assert_eq!(pacer.wait_until(t0), None);
        pacer.sent(t0);
        assert_eq!(pacer.wait_until(t0), Some(t0 + p));
        assert_eq!(pacer.wait_until(t0 + p), None);
        pacer.sent(t0 + p);
        // Far behind: catch up at most burst_max batches, then restart from now.
        let late = t0 + Duration::from_secs(10);
        pacer.sent(late);
        assert_eq!(pacer.wait_until(late), None);
        pacer.sent(late);
        assert_eq!(pacer.wait_until(late), Some(late + p));
        // Unpaced never waits.
        let mut free = Pacer::new(None, t0, 1);
        free.sent(t0);
        assert_eq!(free.wait_until(t0), None);
    }

    #[test]
    fn session_slices_split_the_time_left() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(10);
        let zero = Duration::ZERO;
        let ms = Duration::from_millis;
        assert_eq!(
            session_slice(t0, end, 1, zero),
            Duration::from_secs(10),
            "long-lived"
        );
        assert_eq!(session_slice(t0, end, 10, zero), Duration::from_secs(1));
        // Time lost by earlier sessions shrinks later slices; the pass still ends on time.
        assert_eq!(
            session_slice(t0 + Duration::from_secs(4), end, 4, zero),
            ms(1500)
        );
        // Expected overhead is reserved for every session still to come.
        assert_eq!(session_slice(t0, end, 10, ms(100)), ms(900));
        assert_eq!(session_slice(t0, end, 10, Duration::from_secs(5)), zero);
        assert_eq!(
            session_slice(end + Duration::from_secs(1), end, 3, zero),
            zero
        );
        assert_eq!(
            session_slice(t0, end, 0, zero),
            Duration::from_secs(10),
            "0 is treated as 1"
        );
        assert_eq!(ewma(ms(100), ms(500)), ms(200));
    }

    #[test]
    fn pacer_period_matches_the_rate() {
        // 100 000 fixes/s over 1000 connections of 50-fix batches: 2 batches/s each.
        assert_eq!(
            Pacer::period_for(100_000.0, 50, 1000),
            Duration::from_millis(500)
        );
        assert_eq!(
            Pacer::period_for(1e-9, 50, 1000),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn devices_are_split_evenly_and_completely() {
        for (n, c) in [
            (1u64, 1u64),
            (10, 3),
            (1_000_000, 1000),
            (7, 7),
            (1001, 1000),
        ] {
            let counts: Vec<u64> = (0..c).map(|i| device_count_of(i, n, c)).collect();
            assert_eq!(counts.iter().sum::<u64>(), n, "n={n} c={c}");
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1);
            // The last id of each share is within range and no id repeats across shares.
            for (i, &k) in counts.iter().enumerate() {
                assert!(i as u64 + (k - 1) * c < n);
            }
        }
    }

    #[test]
    fn secret_path_defaults_to_the_data_dir() {
        use clap::Parser;
        let parse = |argv: &str| Args::try_parse_from(argv.split_whitespace()).unwrap();
        let a = parse("b --server 127.0.0.1:1 --ca c --data-dir /d");
        assert_eq!(secret_path(&a), Some(PathBuf::from("/d/secret/token.key")));
        let b = parse("b --server 127.0.0.1:1 --ca c --data-dir /d --secret /k");
        assert_eq!(secret_path(&b), Some(PathBuf::from("/k")));
    }

    #[test]
    fn server_names_resolve() {
        assert_eq!(resolve_server("127.0.0.1:4433").unwrap().port(), 4433);
        assert_eq!(resolve_server("localhost:4433").unwrap().port(), 4433);
        assert!(resolve_server("no port").is_err());
    }

    #[test]
    fn ack_names_cover_unknown_codes() {
        let ack = |status| Ack {
            batch_seq: 1,
            status,
            reason: String::new(),
            retry_after_ms: 0,
        };
        assert_eq!(ack_name(&ack(0)), "OK");
        assert_eq!(ack_name(&ack(300)), "OVERLOADED");
        assert_eq!(ack_name(&ack(777)), "STATUS_777");
    }
}
