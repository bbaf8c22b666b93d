//! The bare-quinn load generator (`bare-client`): the client half of the baseline in
//! [`crate::baseline`], with the same timeline, steady state and server sampling as
//! `hexflow-bench`, so the two reports can be set side by side ([`crate::compare`]).
//!
//! # Modes
//! * `hold`: every connection connects (a full TLS 1.3 handshake), sends one request, reads
//!   its ack, then stays open and idle until `--duration` ends. Measures handshakes/s and
//!   server CPU per handshake (the connect phase) and server memory per open idle
//!   connection.
//! * `sessions`: every connection slot loops: connect, one request, ack, close. A sample
//!   per session (connect to ack). Measures sessions/s and server CPU per session.
//! * `messages`: long-lived connections pipelining up to `--inflight` requests, closed loop
//!   or paced to `--rate` fixes/s. Measures messages/s and server CPU per message.
//!
//! # Contract
//! * Bounded: no request or connection starts after `--duration`; in-flight requests get
//!   `--grace-ms`; connections then close; tasks still running one second after
//!   [`CLOSE_TIMEOUT`] are aborted and counted as `TASK_ABORTED`.
//! * Every failure is counted by a stable name (`CONNECT_FAILED`, `CONNECT_TIMEOUT`,
//!   `CONNECTION_LOST`, `ACK_TIMEOUT`, `BAD_ACK`), never dropped.
//! * Each request frame is one of a fixed set of real BATCH frames (made once at start), so
//!   the client spends nothing on encoding while it runs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use ingest::wire::{self, CONTROL_FRAME_BODY_BYTES_MAX, FRAME_HEADER_LEN, FrameType};
use quinn::VarInt;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{sleep_until, timeout, timeout_at};

use crate::baseline::{self, BaselineError, CLOSE_DONE};
use crate::cli::{ArgsError, BATCH_FIXES_MAX, CONNECTIONS_MAX, DURATION_S_MAX, INFLIGHT_MAX};
use crate::cli::{Pacing, RATE_MAX, RunFlags, range};
use crate::procfs::ServerWatch;
use crate::report::{
    ERR_ACK_TIMEOUT, ERR_CONNECT_FAILED, ERR_CONNECTION_LOST, LatencySummary, RunMeasures, Tally,
};
use crate::run::{ERR_CONNECT_TIMEOUT, ERR_TASK_ABORTED, Pacer};
use crate::timeline::{Sample, SampleBuf, Timeline};
use crate::trajectory::TrajectoryParams;

/// Longest wait for a connection to close at the end.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct request frames made at start (cycled through).
pub const REQUEST_FRAMES: usize = 64;
/// Client-side failure: the server answered with something that is not the expected ACK.
pub const ERR_BAD_ACK: &str = "BAD_ACK";
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the bare client does (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Connect, one request, stay open and idle.
    Hold,
    /// Connect, one request, close; again.
    Sessions,
    /// Long-lived connections pipelining requests.
    Messages,
}

/// `bare-client`: quinn with hexflow's transport pattern and no hexflow logic.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "bare-client", version, about, long_about = None)]
pub struct BareArgs {
    /// Server address (ip:port).
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM of the server's certificate (`bare-server --cert-out`).
    #[arg(long)]
    pub ca: PathBuf,
    /// What to do.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Concurrent connections (connection slots in `sessions` mode).
    #[arg(long, default_value_t = 100)]
    pub connections: u64,
    /// Run time in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests pipelined per connection (`messages`).
    #[arg(long, default_value_t = 8)]
    pub inflight: u32,
    /// Offered load in fixes/s over all connections (`messages`; a request carries
    /// `--batch-fixes` fixes); 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Fixes per request batch (sets the request size).
    #[arg(long, default_value_t = 50)]
    pub batch_fixes: u32,
    /// Allow TLS 1.3 session resumption (off: every connection is a full handshake).
    #[arg(long)]
    pub tls_resumption: bool,
    /// Pacing, timeouts, threads and outputs (shared with `hexflow-bench`).
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunFlags,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct BareConfig {
    /// What to do.
    pub mode: Mode,
    /// Server address.
    pub server: SocketAddr,
    /// Connections.
    pub connections: u64,
    /// Run length.
    pub duration: Duration,
    /// Requests pipelined per connection.
    pub inflight: usize,
    /// Offered fixes/s (`None`: closed loop).
    pub rate_fixes_per_s: Option<f64>,
    /// Fixes per request.
    pub batch_fixes: u32,
    /// Pacing and timeouts.
    pub pacing: Pacing,
}

impl BareArgs {
    /// Checks every flag against the same bounds as `hexflow-bench`.
    ///
    /// # Errors
    /// The first flag out of bounds.
    pub fn validate(&self) -> Result<BareConfig, ArgsError> {
        let connections = range("connections", self.connections, 1, CONNECTIONS_MAX)?;
        let duration = range("duration", self.duration, 1, DURATION_S_MAX)?;
        let inflight = range("inflight", self.inflight.into(), 1, INFLIGHT_MAX.into())?;
        let batch_fixes = range(
            "batch-fixes",
            self.batch_fixes.into(),
            1,
            BATCH_FIXES_MAX.into(),
        )?;
        if !(self.rate.is_finite() && (0.0..=RATE_MAX).contains(&self.rate)) {
            return Err(ArgsError::OutOfRangeF64 {
                flag: "rate",
                value: self.rate,
                min: 0.0,
                max: RATE_MAX,
            });
        }
        let pacing = self.run.pacing()?;
        Ok(BareConfig {
            mode: self.mode,
            server: self.server,
            connections,
            duration: Duration::from_secs(duration),
            // Bounded by INFLIGHT_MAX, BATCH_FIXES_MAX and CONNECTIONS_MAX above.
            inflight: inflight as usize,
            rate_fixes_per_s: (self.rate > 0.0).then_some(self.rate),
            batch_fixes: batch_fixes as u32,
            pacing,
        })
    }
}

/// Why a bare run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BareRunError {
    /// A flag is out of bounds.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The CA file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS, transport or request set-up failed.
    #[error(transparent)]
    Setup(#[from] BaselineError),
    /// The runtime or a socket could not be created.
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

/// The bare client's report (`--json`). Field names match `hexflow-bench`'s where the
/// meaning is the same (`batches_*` are requests, `sessions` are connections established).
#[derive(Debug, Clone, Serialize)]
pub struct BareReport {
    /// The mode.
    pub mode: Mode,
    /// Requests acked.
    pub batches_acked: u64,
    /// Requests sent.
    pub batches_sent: u64,
    /// Fixes in the acked requests.
    pub fixes_acked: u64,
    /// Connections established.
    pub sessions: u64,
    /// Concurrent connections.
    pub connections: u64,
    /// Failures by name.
    pub errors_by_status: std::collections::BTreeMap<String, u64>,
    /// Send-to-ack latency (`sessions`, `hold`: connect-to-ack), 3 significant digits.
    pub ack_latency_us: LatencySummary,
    /// Wall time of the run, s.
    pub duration_s: f64,
    /// Request frame size, bytes (header included).
    pub request_bytes: usize,
    /// Steady state, connect phase, server usage, timeline.
    #[serde(flatten)]
    pub measures: RunMeasures,
    /// The flags.
    pub config: BareArgs,
}

impl BareReport {
    /// A short terminal summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let l = &self.ack_latency_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bare-client {:?}: {:.1} s, {} connections, {} sessions, {} requests acked of {} sent ({} B each)",
            self.mode,
            self.duration_s,
            self.connections,
            self.sessions,
            self.batches_acked,
            self.batches_sent,
            self.request_bytes
        );
        let _ = writeln!(
            s,
            "  latency µs: p50 {} p99 {} p99.9 {} max {} (n={})",
            l.p50, l.p99, l.p999, l.max, l.count
        );
        s.push_str(&self.measures.summary_lines());
        let errs: Vec<String> = self
            .errors_by_status
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            s,
            "  errors  {}",
            if errs.is_empty() {
                "none".to_owned()
            } else {
                errs.join(" ")
            }
        );
        s
    }
}

/// What the connection tasks share.
struct Ctx {
    cfg: BareConfig,
    quic: quinn::ClientConfig,
    endpoints: Vec<quinn::Endpoint>,
    frames: Vec<Vec<u8>>,
    start: Instant,
    deadline: Instant,
    drain_until: Instant,
    timeline: Arc<Mutex<Timeline>>,
    conns_up: AtomicU64,
    permits: Option<Semaphore>,
    server_pid: Option<u32>,
}

impl Ctx {
    fn elapsed_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the first successful connect of a connection task.
    fn first_connect(&self) {
        if self.conns_up.fetch_add(1, Ordering::Relaxed) + 1 == self.cfg.connections {
            let server = self
                .server_pid
                .and_then(|pid| crate::procfs::sample(pid).ok());
            let at = self.elapsed_us(Instant::now());
            self.timeline().mark_all_connected(at, server);
        }
    }

    /// Records an acked request (or session) that started at `sent_at`.
    fn acked(&self, st: &mut TaskState, sent_at: Instant) {
        let now = Instant::now();
        let latency_us = now.saturating_duration_since(sent_at).as_micros() as u64;
        st.tally.acked(u64::from(self.cfg.batch_fixes), latency_us);
        let full = st.samples.push(Sample {
            at_us: self.elapsed_us(now),
            latency_us,
            fixes: self.cfg.batch_fixes,
        });
        if full {
            st.samples.flush_into(&mut self.timeline());
        }
    }
}

/// One connection task's own counters.
#[derive(Default)]
struct TaskState {
    tally: Tally,
    samples: SampleBuf,
    next_seq: u64,
    frame: usize,
    connected_once: bool,
}

impl TaskState {
    /// The next request frame, with a fresh seq written into it.
    fn next_request(&mut self, frames: &[Vec<u8>]) -> Vec<u8> {
        self.next_seq += 1;
        self.frame = (self.frame + 1) % frames.len();
        let mut f = frames[self.frame].clone();
        baseline::set_seq(&mut f, self.next_seq);
        f
    }
}

/// Connects (a full handshake unless `--tls-resumption`), bounded by the connect timeout;
/// returns the connection and when the attempt started (after waiting for a permit of
/// `--connect-concurrency`).
async fn connect(
    ctx: &Ctx,
    endpoint: &quinn::Endpoint,
) -> Result<(quinn::Connection, Instant), &'static str> {
    let _permit = match &ctx.permits {
        Some(sem) => sem.acquire().await.ok(),
        None => None,
    };
    let started = Instant::now();
    let connecting = endpoint
        .connect_with(ctx.quic.clone(), ctx.cfg.server, "localhost")
        .map_err(|_| ERR_CONNECT_FAILED)?;
    match timeout(ctx.cfg.pacing.connect_timeout, connecting).await {
        Ok(Ok(c)) => Ok((c, started)),
        Ok(Err(_)) => Err(ERR_CONNECT_FAILED),
        Err(_) => Err(ERR_CONNECT_TIMEOUT),
    }
}

/// Reads one ACK frame and returns its seq.
async fn read_ack(recv: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> Result<u64, &'static str> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header)
        .await
        .map_err(|_| ERR_CONNECTION_LOST)?;
    let h = wire::parse_frame_header(&header).map_err(|_| ERR_BAD_ACK)?;
    if h.frame_type != FrameType::Ack || h.len > CONTROL_FRAME_BODY_BYTES_MAX {
        return Err(ERR_BAD_ACK);
    }
    buf.resize(h.len as usize, 0);
    recv.read_exact(buf)
        .await
        .map_err(|_| ERR_CONNECTION_LOST)?;
    let ack = wire::decode_ack(buf).map_err(|_| ERR_BAD_ACK)?;
    Ok(ack.batch_seq)
}

/// The streams of an open connection.
type Open = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

/// Connect, open the stream, one request, its ack: the start of every mode. The sample's
/// latency runs from the connect when `from_connect`, else from the request.
async fn open_and_ask(
    ctx: &Ctx,
    endpoint: &quinn::Endpoint,
    st: &mut TaskState,
    from_connect: bool,
) -> Result<Open, &'static str> {
    let (conn, connect_at) = connect(ctx, endpoint).await?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| ERR_CONNECTION_LOST)?;
    let frame = st.next_request(&ctx.frames);
    st.tally.batches_sent += 1;
    let t0 = if from_connect {
        connect_at
    } else {
        Instant::now()
    };
    send.write_all(&frame)
        .await
        .map_err(|_| ERR_CONNECTION_LOST)?;
    let mut buf = Vec::new();
    let seq = timeout_at(ctx.drain_until.into(), read_ack(&mut recv, &mut buf))
        .await
        .map_err(|_| ERR_ACK_TIMEOUT)??;
    if seq != st.next_seq {
        return Err(ERR_BAD_ACK);
    }
    st.tally.sessions += 1;
    if !std::mem::replace(&mut st.connected_once, true) {
        ctx.first_connect();
    }
    ctx.acked(st, t0);
    Ok((conn, send, recv))
}

async fn hold_task(ctx: &Ctx, endpoint: &quinn::Endpoint, st: &mut TaskState) {
    match open_and_ask(ctx, endpoint, st, true).await {
        Ok((conn, _send, _recv)) => {
            sleep_until(ctx.deadline.into()).await;
            conn.close(VarInt::from_u32(CLOSE_DONE), b"done");
        }
        Err(name) => st.tally.error(name),
    }
}

async fn sessions_task(ctx: &Ctx, endpoint: &quinn::Endpoint, st: &mut TaskState) {
    let mut backoff = BACKOFF_MIN;
    while Instant::now() < ctx.deadline {
        match open_and_ask(ctx, endpoint, st, true).await {
            Ok((conn, _send, _recv)) => {
                conn.close(VarInt::from_u32(CLOSE_DONE), b"done");
                backoff = BACKOFF_MIN;
            }
            Err(name) => {
                st.tally.error(name);
                sleep_until((Instant::now() + backoff).min(ctx.deadline).into()).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Pipelines requests on one stream until the deadline; acks are read concurrently.
async fn messages_task(ctx: &Ctx, endpoint: &quinn::Endpoint, st: &mut TaskState, begin: Instant) {
    let (conn, mut send, mut recv) = match open_and_ask(ctx, endpoint, st, false).await {
        Ok(c) => c,
        Err(name) => return st.tally.error(name),
    };
    let k = ctx.cfg.inflight;
    let window = Semaphore::new(k);
    let (tx, mut rx) = mpsc::channel::<(u64, Instant)>(k);
    let period = ctx
        .cfg
        .rate_fixes_per_s
        .map(|r| Pacer::period_for(r, ctx.cfg.batch_fixes as usize, ctx.cfg.connections));
    let mut pacer = Pacer::new(period, begin, k as u32);
    let frames = &ctx.frames;
    let mut seqs = TaskState {
        next_seq: st.next_seq,
        frame: st.frame,
        ..TaskState::default()
    };
    let writer = async {
        let mut sent = 0u64;
        loop {
            let now = Instant::now();
            if now >= ctx.deadline {
                break;
            }
            if let Some(at) = pacer.wait_until(now) {
                sleep_until(at.min(ctx.deadline).into()).await;
                continue;
            }
            tokio::select! {
                permit = window.acquire() => match permit {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                },
                () = sleep_until(ctx.deadline.into()) => break,
            }
            let frame = seqs.next_request(frames);
            let sent_at = Instant::now();
            pacer.sent(sent_at);
            let written = timeout_at(ctx.drain_until.into(), send.write_all(&frame)).await;
            if !matches!(written, Ok(Ok(()))) {
                break;
            }
            sent += 1;
            if tx.send((seqs.next_seq, sent_at)).await.is_err() {
                break;
            }
        }
        drop(tx);
        let _ = send.finish();
        sent
    };
    let reader = async {
        let mut buf = Vec::new();
        let mut outcome: Option<&'static str> = None;
        while let Some((seq, sent_at)) = rx.recv().await {
            match timeout_at(ctx.drain_until.into(), read_ack(&mut recv, &mut buf)).await {
                Ok(Ok(got)) if got == seq => {
                    ctx.acked(st, sent_at);
                    window.add_permits(1);
                }
                Ok(Ok(_)) => {
                    outcome = Some(ERR_BAD_ACK);
                    break;
                }
                Ok(Err(name)) => {
                    outcome = Some(name);
                    break;
                }
                Err(_) => {
                    outcome = Some(ERR_ACK_TIMEOUT);
                    break;
                }
            }
        }
        // Everything still queued was sent and never acked; stop the writer too.
        window.close();
        rx.close();
        let mut lost = 0u64;
        while rx.try_recv().is_ok() {
            lost += 1;
        }
        (outcome, lost)
    };
    let (sent, (outcome, lost)) = tokio::join!(writer, reader);
    st.tally.batches_sent += sent;
    if let Some(name) = outcome {
        // The failed request itself, and every one queued behind it.
        for _ in 0..=lost {
            st.tally.error(name);
        }
    }
    st.next_seq = seqs.next_seq;
    conn.close(VarInt::from_u32(CLOSE_DONE), b"done");
}

async fn connection_task(ctx: Arc<Ctx>, idx: u64) -> Tally {
    let c = ctx.cfg.connections;
    let begin = ctx.start + ctx.cfg.pacing.ramp_up.mul_f64(idx as f64 / c as f64);
    let mut st = TaskState::default();
    if begin >= ctx.deadline {
        return st.tally;
    }
    sleep_until(begin.into()).await;
    let endpoint = &ctx.endpoints[idx as usize % ctx.endpoints.len()];
    match ctx.cfg.mode {
        Mode::Hold => hold_task(&ctx, endpoint, &mut st).await,
        Mode::Sessions => sessions_task(&ctx, endpoint, &mut st).await,
        Mode::Messages => messages_task(&ctx, endpoint, &mut st, begin).await,
    }
    st.samples.flush_into(&mut ctx.timeline());
    st.tally
}

/// Runs every connection task to its end (aborting stragglers at `hard_stop`).
async fn run_tasks(ctx: &Arc<Ctx>, hard_stop: Instant) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..ctx.cfg.connections {
        tasks.spawn(connection_task(Arc::clone(ctx), idx));
    }
    let mut total = Tally::default();
    loop {
        match timeout_at(hard_stop.into(), tasks.join_next()).await {
            Ok(Some(Ok(t))) => total.merge(&t),
            Ok(Some(Err(_))) => total.error(ERR_TASK_ABORTED),
            Ok(None) => break,
            Err(_) => {
                for _ in 0..tasks.len() {
                    total.error(ERR_TASK_ABORTED);
                }
                tasks.abort_all();
                break;
            }
        }
    }
    total
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Validates `args`, runs the load and returns the report.
///
/// # Errors
/// [`BareRunError`] when the run cannot start; failures during the run are counted.
pub fn run(args: &BareArgs) -> Result<BareReport, BareRunError> {
    let cfg = args.validate()?;
    let ca = std::fs::read(&args.ca).map_err(|source| BareRunError::Read {
        path: args.ca.clone(),
        source,
    })?;
    let quic = baseline::client_config(&ca, args.tls_resumption)?;
    let params = TrajectoryParams {
        batch_fixes: cfg.batch_fixes as usize,
        ..TrajectoryParams::default()
    };
    let frames = baseline::request_frames(REQUEST_FRAMES, &params, 1, unix_ms())?;
    let request_bytes = frames[0].len();
    let (rt, workers) = args.run.runtime()?;
    rt.block_on(async move {
        let bind: SocketAddr = if cfg.server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let n = workers.clamp(1, 64).min(cfg.connections as usize);
        let endpoints = (0..n)
            .map(|_| quinn::Endpoint::client(bind))
            .collect::<Result<Vec<_>, _>>()?;
        let start = Instant::now();
        let deadline = start + cfg.duration;
        let drain_until = deadline + cfg.pacing.grace;
        let hard_stop = drain_until + CLOSE_TIMEOUT + Duration::from_secs(1);
        let span_us = hard_stop.duration_since(start).as_micros() as u64;
        let timeline = Timeline::new(span_us, cfg.duration.as_micros() as u64);
        let ctx = Arc::new(Ctx {
            permits: cfg.pacing.connect_concurrency.map(Semaphore::new),
            cfg,
            quic,
            endpoints,
            frames,
            start,
            deadline,
            drain_until,
            timeline: Arc::new(Mutex::new(timeline)),
            conns_up: AtomicU64::new(0),
            server_pid: args.run.server_pid,
        });
        let watch = args
            .run
            .server_pid
            .map(|pid| ServerWatch::start(pid, &ctx.timeline, start, hard_stop));
        let total = run_tasks(&ctx, hard_stop).await;
        let elapsed = start.elapsed();
        let usage = watch.and_then(ServerWatch::finish);
        for ep in &ctx.endpoints {
            ep.close(VarInt::from_u32(CLOSE_DONE), b"done");
        }
        let _ = timeout(Duration::from_secs(1), async {
            for ep in &ctx.endpoints {
                ep.wait_idle().await;
            }
        })
        .await;
        let measures = RunMeasures::new(&ctx.timeline(), ctx.cfg.connections, usage);
        Ok(BareReport {
            mode: ctx.cfg.mode,
            batches_acked: total.batches_acked,
            batches_sent: total.batches_sent,
            fixes_acked: total.fixes_acked,
            sessions: total.sessions,
            connections: ctx.cfg.connections,
            errors_by_status: total.errors_by_status.clone(),
            ack_latency_us: LatencySummary::of(&total.ack_latency_us),
            duration_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            request_bytes,
            measures,
            config: args.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> BareArgs {
        let mut argv = vec!["bare-client", "--server", "127.0.0.1:1", "--ca", "c.pem"];
        argv.extend_from_slice(extra);
        BareArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn flags_share_hexflow_bench_bounds() {
        let c = parse(&["--mode", "messages"]).validate().unwrap();
        assert_eq!((c.connections, c.inflight, c.batch_fixes), (100, 8, 50));
        assert_eq!(c.rate_fixes_per_s, None);
        assert_eq!(c.pacing.connect_concurrency, None);
        let over = parse(&[
            "--mode",
            "hold",
            "--connections",
            &(CONNECTIONS_MAX + 1).to_string(),
        ]);
        assert!(matches!(
            over.validate(),
            Err(ArgsError::OutOfRange {
                flag: "connections",
                ..
            })
        ));
        let ok = parse(&[
            "--mode",
            "hold",
            "--connections",
            &CONNECTIONS_MAX.to_string(),
        ]);
        assert!(ok.validate().is_ok());
        for (flag, v) in [
            ("--inflight", "65"),
            ("--inflight", "0"),
            ("--duration", "0"),
        ] {
            assert!(
                parse(&["--mode", "sessions", flag, v]).validate().is_err(),
                "{flag} {v}"
            );
        }
        assert!(
            parse(&["--mode", "messages", "--rate=-1"])
                .validate()
                .is_err()
        );
        assert!(
            BareArgs::try_parse_from([
                "bare-client",
                "--server",
                "x",
                "--ca",
                "c",
                "--mode",
                "hold"
            ])
            .is_err()
        );
    }

    #[test]
    fn requests_get_fresh_seqs_and_cycle_frames() {
        let frames =
            baseline::request_frames(3, &TrajectoryParams::default(), 1, 1_790_000_000_000)
                .unwrap();
        let mut st = TaskState::default();
        let a = st.next_request(&frames);
        let b = st.next_request(&frames);
        assert_eq!(baseline::body_seq(&a[FRAME_HEADER_LEN..]), Some(1));
        assert_eq!(baseline::body_seq(&b[FRAME_HEADER_LEN..]), Some(2));
        for _ in 0..3 {
            st.next_request(&frames);
        }
        assert_eq!(st.next_seq, 5);
        assert_eq!(st.frame, 5 % 3);
    }
}
