//! The legit fleet of the hostile suite: devices that keep reconnecting and sending, so that
//! every phase has its own connection attempts and its own acks.
//!
//! # Contract
//! * Device `i` (id [`LEGIT_ID_BASE`]` + i`) connects from source `i mod sources`, starts at `i / devices` of the first half of
//!   warmup, then runs sessions of `--legit-session-s` back to back (the first one a random
//!   part of it, so reconnects are spread evenly over time): connect, one 50-fix batch per
//!   `devices × 50 / --legit-rate` seconds, close.
//! * One batch in flight per device; each ack is timed from the send and counted in the
//!   phase the batch was sent in. A failed connect is retried after [`RECONNECT_PAUSE`].
//! * Sequence numbers start at the device's first send, in µs since the Unix epoch, and
//!   grow by one per batch, across sessions (never refused as stale or far ahead).
//! * No send starts after the schedule's end; every wait is bounded ([`CONNECT_TIMEOUT`],
//!   [`ACK_TIMEOUT`], [`DRAIN`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use ingest::auth::TokenKey;
use ingest::client::{self, ClientConfig, Device};
use ingest::wire::{Fix, Fixes, Status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, sleep_until, timeout};

use super::{Counts, HostileArgs, LegitPhase, PHASES, Phase, Schedule, histogram};
use crate::report::LatencySummary;
use crate::run::{client_error_name, connect_error_name};
use crate::timeline::{Sample, Timeline};

/// The first legit device id.
pub const LEGIT_ID_BASE: u64 = 1;
/// Fixes per legit batch.
pub const BATCH_FIXES: usize = 50;
/// Longest wait for one connection attempt (QUIC, TLS, HELLO, WELCOME).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one ack.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connection attempt.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Longest wait for the fleet to finish after the schedule's end.
pub const DRAIN: Duration = Duration::from_secs(15);

/// The fleet and its per-phase tallies.
pub struct Fleet {
    server: SocketAddr,
    binds: Vec<SocketAddr>,
    ca_pem: Vec<u8>,
    key: TokenKey,
    devices: u64,
    session: Duration,
    period: Duration,
    schedule: Schedule,
    attempts: [AtomicU64; PHASES],
    connected: [AtomicU64; PHASES],
    connect_failures: [Counts; PHASES],
    batch_failures: [Counts; PHASES],
    /// Ack latency of the OK batches per phase (its length is the phase's OK count).
    latency: [Mutex<Histogram<u64>>; PHASES],
    /// The same acks per second of the run, shared with the server sampler.
    timeline: Arc<Mutex<Timeline>>,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `BATCH_FIXES` fixes one second apart, ending now, around (`lat`, `lon`).
fn batch(rng: &mut SmallRng, lat: f64, lon: f64) -> Fixes {
    let now_ms = unix_ms();
    let mut fixes = Fixes::default();
    for k in 0..BATCH_FIXES as i64 {
        let t = now_ms - (BATCH_FIXES as i64 - 1 - k) * 1000;
        let mut jitter = || rng.random_range(-1e-4..1e-4);
        let (dlat, dlon) = (jitter(), jitter());
        fixes.push(&Fix::from_degrees(t, lat + dlat, lon + dlon));
    }
    fixes
}

impl Fleet {
    /// The fleet `args` describes, on `schedule`.
    pub fn new(
        args: &HostileArgs,
        key: TokenKey,
        ca_pem: Vec<u8>,
        schedule: Schedule,
        timeline: &Arc<Mutex<Timeline>>,
    ) -> Arc<Self> {
        let batches_per_s = f64::from(args.legit_rate) / BATCH_FIXES as f64;
        Arc::new(Fleet {
            server: args.server,
            binds: (0..args.legit_sources)
                .map(|k| {
                    let ip = u32::from(args.legit_bind).saturating_add(k);
                    SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), 0)
                })
                .collect(),
            ca_pem,
            key,
            devices: args.legit_devices,
            session: Duration::from_secs(args.legit_session_s),
            period: Duration::from_secs_f64(args.legit_devices as f64 / batches_per_s),
            schedule,
            attempts: Default::default(),
            connected: Default::default(),
            connect_failures: Default::default(),
            batch_failures: Default::default(),
            latency: std::array::from_fn(|_| Mutex::new(histogram())),
            timeline: Arc::clone(timeline),
        })
    }

    /// Runs every device to the schedule's end; the tallies are then in [`Fleet::phases`].
    pub async fn run(self: Arc<Self>) {
        let mut eps = Vec::new();
        for bind in &self.binds {
            match client::client_endpoint(*bind) {
                Ok(ep) => eps.push(ep),
                Err(e) => {
                    self.connect_failures[0].add(&format!("ENDPOINT {bind}: {e}"), 1);
                    return;
                }
            }
        }
        let tasks: Vec<_> = (0..self.devices)
            .map(|i| {
                let ep = eps[i as usize % eps.len()].clone();
                tokio::spawn(Arc::clone(&self).device(i, ep))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        for ep in &eps {
            ep.wait_idle().await;
        }
    }

    /// The tallies so far.
    pub fn phases(&self) -> BTreeMap<Phase, LegitPhase> {
        Phase::ALL
            .into_iter()
            .map(|p| {
                let i = p.index();
                let attempts = self.attempts[i].load(Ordering::Relaxed);
                let connected = self.connected[i].load(Ordering::Relaxed);
                let h = self.latency[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let phase = LegitPhase {
                    connect_attempts: attempts,
                    connected,
                    connected_ratio: if attempts == 0 {
                        1.0
                    } else {
                        connected as f64 / attempts as f64
                    },
                    connect_failures: self.connect_failures[i].snapshot(),
                    acked: h.len(),
                    batch_failures: self.batch_failures[i].snapshot(),
                    ack: LatencySummary::of(&h),
                    server: None,
                };
                (p, phase)
            })
            .collect()
    }

    async fn device(self: Arc<Self>, i: u64, ep: quinn::Endpoint) {
        let Ok(id) = fix::DeviceId::try_from(LEGIT_ID_BASE + i) else {
            return;
        };
        let token = self.key.mint(id);
        let mut rng = SmallRng::seed_from_u64(i);
        let (lat, lon) = (
            rng.random_range(-50.0..50.0),
            rng.random_range(-170.0..170.0),
        );
        let ramp = (self.schedule.ends[0] - self.schedule.start) / 2;
        sleep_until((self.schedule.start + ramp.mul_f64(i as f64 / self.devices as f64)).into())
            .await;
        let mut seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let mut session = self.session.mul_f64(rng.random_range(0.2..1.0));
        while Instant::now() < self.schedule.end() {
            let started = Instant::now();
            let phase = self.schedule.phase_at(started).index();
            self.attempts[phase].fetch_add(1, Ordering::Relaxed);
            let mut cfg = ClientConfig::new(self.server, self.ca_pem.clone(), token.clone());
            cfg.server_name = "localhost".into();
            cfg.connect_timeout_ms = CONNECT_TIMEOUT.as_millis() as u64;
            let device = match timeout(CONNECT_TIMEOUT, Device::connect(&ep, cfg)).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    self.connect_failures[phase].add(&connect_error_name(&e), 1);
                    sleep(RECONNECT_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    self.connect_failures[phase].add("CONNECT_TIMEOUT", 1);
                    continue;
                }
            };
            self.connected[phase].fetch_add(1, Ordering::Relaxed);
            let session_end = (Instant::now() + session).min(self.schedule.end());
            session = self.session;
            let mut next = Instant::now() + self.period.mul_f64(rng.random_range(0.0..1.0));
            while next < session_end {
                sleep_until(next.into()).await;
                next += self.period;
                let fixes = batch(&mut rng, lat, lon);
                if !self.send(&device, seq, &fixes).await {
                    break;
                }
                seq += 1;
            }
            let _ = timeout(Duration::from_secs(2), device.close()).await;
        }
    }

    /// Sends one batch and counts its outcome; false when the session is broken.
    async fn send(&self, device: &Device, seq: u64, fixes: &Fixes) -> bool {
        let sent = Instant::now();
        let phase = self.schedule.phase_at(sent).index();
        match timeout(ACK_TIMEOUT, device.send_once(seq, fixes)).await {
            Ok(Ok(ack)) if ack.status == Status::Ok.code() => {
                let us = sent.elapsed().as_micros() as u64;
                let mut h = self.latency[phase]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                h.saturating_record(us.max(1));
                drop(h);
                // One ack per device per period (hundreds per second in all): one lock per
                // ack is cheap enough here, no SampleBuf needed.
                let at_us = (Instant::now() - self.schedule.start).as_micros() as u64;
                self.timeline
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(Sample {
                        at_us,
                        latency_us: us.max(1),
                        fixes: BATCH_FIXES as u32,
                    });
                true
            }
            Ok(Ok(ack)) => {
                let name = Status::from_code(ack.status).map_or("UNKNOWN_STATUS", Status::as_str);
                self.batch_failures[phase].add(name, 1);
                true
            }
            Ok(Err(e)) => {
                self.batch_failures[phase].add(&client_error_name(&e), 1);
                false
            }
            Err(_) => {
                self.batch_failures[phase].add("ACK_TIMEOUT", 1);
                false
            }
        }
    }
}
