//! The attacks of issue 11's table, each a bounded generator of hostile traffic from one
//! source address, written against the protocol as `docs/PROTOCOL.md` states it.
//!
//! # Contract
//! * An attack is `workers` concurrent tasks (or, for [`Attack::InitialFlood`], one paced
//!   loop), each repeating its hostile session until the runtime it runs on is shut down;
//!   nothing here waits without a timeout.
//! * After a failed connection attempt a worker pauses [`FAILED_CONNECT_PAUSE`]: a worker
//!   spinning on refusals would measure the attacker's own CPU, not the server's defence.
//! * Every outcome is counted by name in [`Counts`]: `handshakes`, `connect_failed:<why>`,
//!   `closed:<why>` (how the server ended a connection the attacker kept open), `ack:<status>`
//!   (answers to hostile batches), and the bytes or packets sent. Where the server is the
//!   one that ends a connection, its lifetime goes into the hold histogram.
//! * Attacker device ids start at [`ATTACK_ID_BASE`], far from the legit fleet's; only
//!   [`Attack::PoisonSeq`] uses legit ids (a stolen token of a legit device).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ingest::auth::TokenKey;
use ingest::wire::{self, FRAME_HEADER_LEN, Fix, Fixes, FrameType, Status};
use serde::Serialize;
use tokio::time::{sleep, timeout};

use super::legit::LEGIT_ID_BASE;
use super::{Counts, HostileArgs, HostileError};

/// The first device id an attacker holds a valid token for.
pub const ATTACK_ID_BASE: u64 = 1_000_000_000;
/// Distinct attacker device ids (worker `w`'s n-th session uses `BASE + (w + n·W) mod this`).
pub const ATTACK_IDS: u64 = 100_000;
/// Pause of a worker after a failed connection attempt.
pub const FAILED_CONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for a handshake, a frame, or a write that the attack expects to finish.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an attack connection is kept once the attack has done its part (the server is
/// expected to end it far sooner; hitting this is counted as `held_to_limit`).
const HOLD_MAX: Duration = Duration::from_secs(120);
/// Legit devices whose token [`Attack::PoisonSeq`] uses.
const POISON_TARGETS: u64 = 10;
/// The seq of the poisoned batch (issue 11: 2^62).
const POISON_SEQ: u64 = 1 << 62;
/// Tiny invalid BATCH frames per [`Attack::SlotLeak`] connection.
const SLOT_LEAK_FRAMES: u64 = 100;
/// How long an [`Attack::SlotLeak`] connection lives.
const SLOT_LEAK_LIFETIME: Duration = Duration::from_millis(300);
/// The length a slowloris BATCH header announces (256 KiB).
const SLOWLORIS_ANNOUNCED: u32 = 256 * 1024;
/// The largest HELLO body the protocol allows (`docs/PROTOCOL.md`), announced by
/// [`Attack::PreAuthBytes`].
const HELLO_ANNOUNCED: u32 = 1024;

/// The attacks, one per row of issue 11's table that a network client can mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Valid token; HELLO plus 100 tiny invalid BATCH frames, acks never read, closed
    /// after 0.3 s; repeated (each connection a fresh attacker device).
    SlotLeak,
    /// QUIC Initials that never complete, from one source port, at `--initial-rate`.
    InitialFlood,
    /// Full handshakes that never send HELLO, held open.
    NoHello,
    /// One valid token on many connections at once.
    OneToken,
    /// A stolen token of a legit device sends one batch with seq 2^62.
    PoisonSeq,
    /// After HELLO, a BATCH header announcing 256 KiB, then 1 byte per second.
    Slowloris,
    /// Before HELLO: a header announcing the largest HELLO, then all of its body but the
    /// last byte, held open (quinn's client cannot send out-of-order stream data; the
    /// server's pre-authentication window bounds both the same way).
    PreAuthBytes,
    /// A 151-byte zstd protobuf bomb (4 M packed zeros) per batch, acks read.
    Bomb,
    /// HELLOs with garbage tokens, as fast as the server answers.
    GarbageToken,
}

impl Attack {
    /// Concurrent tasks when `--attack-workers` is not given.
    pub fn default_workers(self) -> u64 {
        match self {
            Attack::SlotLeak => 200,
            Attack::InitialFlood | Attack::PoisonSeq => 1,
            Attack::NoHello => 2_000,
            Attack::OneToken | Attack::Slowloris | Attack::PreAuthBytes => 1_000,
            Attack::Bomb => 50,
            Attack::GarbageToken => 500,
        }
    }
}

/// What an attack runs with (in the report).
#[derive(Debug, Clone, Serialize)]
pub struct AttackParams {
    /// Concurrent tasks.
    pub workers: u64,
    /// Initials per second ([`Attack::InitialFlood`] only).
    pub initial_rate: u32,
    /// The source address.
    pub bind: std::net::IpAddr,
}

impl AttackParams {
    /// The parameters `args` asks for.
    pub fn of(args: &HostileArgs) -> Self {
        AttackParams {
            workers: args.attack_workers.unwrap_or(args.attack.default_workers()),
            initial_rate: args.initial_rate,
            bind: args.attack_bind,
        }
    }
}

/// What every attack task shares.
pub struct Ctx {
    server: SocketAddr,
    bind: SocketAddr,
    key: TokenKey,
    quic: quinn::ClientConfig,
    ep: quinn::Endpoint,
    counts: Arc<Counts>,
    hold: Arc<Mutex<Histogram<u64>>>,
    sessions: AtomicU64,
}

impl Ctx {
    /// The attack's endpoint and client configuration. Must run inside the attack's
    /// runtime (the endpoint's driver is spawned on it).
    ///
    /// # Errors
    /// [`HostileError::Setup`] for an unusable CA or source address.
    pub fn new(
        args: &HostileArgs,
        params: &AttackParams,
        key: TokenKey,
        ca_pem: &[u8],
        counts: Arc<Counts>,
        hold: Arc<Mutex<Histogram<u64>>>,
    ) -> Result<Arc<Self>, HostileError> {
        let quic = crate::baseline::client_config_for(ca_pem, false, wire::ALPN)
            .map_err(|e| HostileError::Setup(e.to_string()))?;
        let bind = SocketAddr::new(params.bind, 0);
        let ep = quinn::Endpoint::client(bind)
            .map_err(|e| HostileError::Setup(format!("attack endpoint on {bind}: {e}")))?;
        Ok(Arc::new(Ctx {
            server: args.server,
            bind,
            key,
            quic,
            ep,
            counts,
            hold,
            sessions: AtomicU64::new(0),
        }))
    }

    fn count(&self, name: &str) {
        self.counts.add(name, 1);
    }

    /// A token of the next attacker device.
    fn next_token(&self) -> String {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed) % ATTACK_IDS;
        self.token_of(ATTACK_ID_BASE + n)
    }

    fn token_of(&self, id: u64) -> String {
        // Both id ranges are far inside 1..=i64::MAX.
        fix::DeviceId::try_from(id).map_or_else(|_| String::new(), |id| self.key.mint(id))
    }

    /// A completed QUIC + TLS handshake, or `None` (counted, after the pause).
    async fn connect(&self) -> Option<quinn::Connection> {
        let connecting = match self
            .ep
            .connect_with(self.quic.clone(), self.server, "localhost")
        {
            Ok(c) => c,
            Err(e) => {
                self.count(&format!("connect_failed:{e}"));
                sleep(FAILED_CONNECT_PAUSE).await;
                return None;
            }
        };
        match timeout(STEP_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => {
                self.count("handshakes");
                Some(conn)
            }
            Ok(Err(e)) => {
                self.count(&format!("connect_failed:{}", conn_error_name(&e)));
                sleep(FAILED_CONNECT_PAUSE).await;
                None
            }
            Err(_) => {
                self.count("connect_failed:timeout");
                sleep(FAILED_CONNECT_PAUSE).await;
                None
            }
        }
    }

    /// Waits (at most [`HOLD_MAX`]) for the server to end `conn`; records how long it lived
    /// from `since` and why it ended.
    async fn held_until_closed(&self, conn: &quinn::Connection, since: Instant) {
        match timeout(HOLD_MAX, conn.closed()).await {
            Ok(e) => {
                self.count(&format!("closed:{}", conn_error_name(&e)));
                let ms = since.elapsed().as_micros() as u64;
                self.hold
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(ms.max(1));
            }
            Err(_) => self.count("held_to_limit"),
        }
    }
}

/// A short, stable name for how a connection ended.
pub fn conn_error_name(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::ApplicationClosed(a) => {
            let code = a.error_code.into_inner();
            let status = u32::try_from(code).ok().and_then(Status::from_code);
            status.map_or_else(|| format!("app_{code}"), |s| s.as_str().to_owned())
        }
        E::ConnectionClosed(c) => format!("transport_{}", u64::from(c.error_code)),
        E::TimedOut => "timed_out".to_owned(),
        E::Reset => "reset".to_owned(),
        E::LocallyClosed => "locally_closed".to_owned(),
        E::VersionMismatch => "version_mismatch".to_owned(),
        E::TransportError(t) => format!("transport_error_{}", u64::from(t.code)),
        E::CidsExhausted => "cids_exhausted".to_owned(),
    }
}

fn hello(token: &str) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_hello(
        &wire::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            token: token.to_owned(),
            client_agent: "hexflow-hostile".into(),
        },
        &mut out,
    );
    out
}

/// A frame header alone: `frame_type`, announcing `len` body bytes.
fn header(frame_type: FrameType, len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0] = frame_type.to_byte();
    h[1..].copy_from_slice(&len.to_be_bytes());
    h
}

/// Reads one frame (bounded by [`STEP_TIMEOUT`] and the control-frame size).
async fn read_frame(recv: &mut quinn::RecvStream) -> Option<(FrameType, Vec<u8>)> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    timeout(STEP_TIMEOUT, recv.read_exact(&mut h))
        .await
        .ok()?
        .ok()?;
    let h = wire::parse_frame_header(&h).ok()?;
    if h.len > wire::CONTROL_FRAME_BODY_BYTES_MAX {
        return None;
    }
    let mut body = vec![0u8; h.len as usize];
    timeout(STEP_TIMEOUT, recv.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Some((h.frame_type, body))
}

/// `ack:<STATUS>` for an ACK body (`ack:?` when it does not decode or the code is unknown).
fn ack_name(body: &[u8]) -> String {
    let status = wire::decode_ack(body)
        .ok()
        .and_then(|a| Status::from_code(a.status));
    format!("ack:{}", status.map_or("?", Status::as_str))
}

/// Opens the stream, sends HELLO with `token` and waits for WELCOME.
async fn session(
    ctx: &Ctx,
    conn: &quinn::Connection,
    token: &str,
) -> Option<(quinn::SendStream, quinn::RecvStream)> {
    let (mut send, mut recv) = timeout(STEP_TIMEOUT, conn.open_bi()).await.ok()?.ok()?;
    timeout(STEP_TIMEOUT, send.write_all(&hello(token)))
        .await
        .ok()?
        .ok()?;
    match read_frame(&mut recv).await {
        Some((FrameType::Welcome, _)) => {
            ctx.count("welcomed");
            Some((send, recv))
        }
        Some((FrameType::Close, body)) => {
            let status = wire::decode_close(&body)
                .ok()
                .and_then(|c| Status::from_code(c.status));
            ctx.count(&format!("refused:{}", status.map_or("?", Status::as_str)));
            None
        }
        _ => {
            ctx.count("no_welcome");
            None
        }
    }
}

/// Runs `attack` until the runtime is shut down.
pub async fn run(ctx: Arc<Ctx>, attack: Attack, params: AttackParams) {
    if attack == Attack::InitialFlood {
        initial_flood(&ctx, params.initial_rate).await;
        return;
    }
    let workers: Vec<_> = (0..params.workers)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                loop {
                    one(&ctx, attack).await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// One hostile session of `attack`.
async fn one(ctx: &Ctx, attack: Attack) {
    let Some(conn) = ctx.connect().await else {
        return;
    };
    let since = Instant::now();
    match attack {
        Attack::SlotLeak => slot_leak(ctx, &conn).await,
        Attack::NoHello => ctx.held_until_closed(&conn, since).await,
        Attack::OneToken => {
            let token = ctx.token_of(ATTACK_ID_BASE);
            if let Some(_streams) = session(ctx, &conn, &token).await {
                ctx.held_until_closed(&conn, since).await;
            }
        }
        Attack::PoisonSeq => poison_seq(ctx, &conn).await,
        Attack::Slowloris => slowloris(ctx, &conn).await,
        Attack::PreAuthBytes => pre_auth_bytes(ctx, &conn, since).await,
        Attack::Bomb => bomb(ctx, &conn).await,
        Attack::GarbageToken => {
            let token = format!("garbage-{}", ctx.sessions.fetch_add(1, Ordering::Relaxed));
            if session(ctx, &conn, &token).await.is_some() {
                ctx.count("garbage_accepted");
            }
            conn.close(0u32.into(), b"");
        }
        Attack::InitialFlood => {}
    }
}

async fn slot_leak(ctx: &Ctx, conn: &quinn::Connection) {
    let Some((mut send, _recv)) = session(ctx, conn, &ctx.next_token()).await else {
        return;
    };
    let mut frames = Vec::new();
    for seq in 1..=SLOT_LEAK_FRAMES {
        let mut body = seq.to_be_bytes().to_vec();
        body.extend_from_slice(&[7, b'x']); // encoding 7: unsupported
        wire::encode_frame(FrameType::Batch, &body, &mut frames);
    }
    // Acks are never read; the writes get what is left of the 0.3 s.
    let _ = timeout(SLOT_LEAK_LIFETIME, send.write_all(&frames)).await;
    ctx.counts.add("frames_sent", SLOT_LEAK_FRAMES);
    sleep(SLOT_LEAK_LIFETIME).await;
    conn.close(0u32.into(), b"gone");
}

async fn poison_seq(ctx: &Ctx, conn: &quinn::Connection) {
    let n = ctx.sessions.fetch_add(1, Ordering::Relaxed) % POISON_TARGETS;
    let token = ctx.token_of(LEGIT_ID_BASE + n);
    let Some((mut send, mut recv)) = session(ctx, conn, &token).await else {
        return;
    };
    let mut fixes = Fixes::default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    fixes.push(&Fix::from_degrees(now_ms - 1000, 10.0, 10.0));
    let mut frame = Vec::new();
    if wire::encode_batch_frame(POISON_SEQ, &fixes, 3, &mut frame).is_err() {
        return;
    }
    if timeout(STEP_TIMEOUT, send.write_all(&frame)).await.is_ok() {
        match read_frame(&mut recv).await {
            Some((FrameType::Ack, body)) => ctx.count(&ack_name(&body)),
            _ => ctx.count("no_ack"),
        }
    }
    conn.close(0u32.into(), b"");
    sleep(Duration::from_secs(1)).await;
}

async fn slowloris(ctx: &Ctx, conn: &quinn::Connection) {
    let Some((mut send, _recv)) = session(ctx, conn, &ctx.next_token()).await else {
        return;
    };
    let since = Instant::now();
    if timeout(
        STEP_TIMEOUT,
        send.write_all(&header(FrameType::Batch, SLOWLORIS_ANNOUNCED)),
    )
    .await
    .is_err()
    {
        return;
    }
    let trickle = async {
        loop {
            sleep(Duration::from_secs(1)).await;
            match timeout(STEP_TIMEOUT, send.write_all(&[0])).await {
                Ok(Ok(())) => ctx.count("bytes_trickled"),
                _ => break,
            }
        }
    };
    tokio::select! {
        () = trickle => ctx.held_until_closed(conn, since).await,
        () = ctx.held_until_closed(conn, since) => {}
    }
}

async fn pre_auth_bytes(ctx: &Ctx, conn: &quinn::Connection, since: Instant) {
    let Ok(Ok((mut send, _recv))) = timeout(STEP_TIMEOUT, conn.open_bi()).await else {
        return;
    };
    let fill = async {
        let mut bytes = header(FrameType::Hello, HELLO_ANNOUNCED).to_vec();
        bytes.resize(FRAME_HEADER_LEN + HELLO_ANNOUNCED as usize - 1, 0x55);
        let mut at = 0;
        while at < bytes.len() {
            match timeout(STEP_TIMEOUT, send.write(&bytes[at..])).await {
                Ok(Ok(n)) => {
                    at += n;
                    ctx.counts.add("bytes_accepted", n as u64);
                }
                _ => break,
            }
        }
        // Never the last byte: the frame stays incomplete.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = fill => {}
        () = ctx.held_until_closed(conn, since) => {}
    }
}

/// The protobuf bomb of issue 11: a packed column of 4,000,000 zero varints, zstd level 3
/// (a few hundred bytes on the wire, a window the server accepts: only the fix count can
/// stop it).
pub(crate) fn bomb_payload() -> Vec<u8> {
    let mut expanded = vec![0x0a, 0x80, 0x92, 0xf4, 0x01];
    expanded.resize(4_000_000 + 5, 0);
    zstd::encode_all(&expanded[..], 3).unwrap_or_default()
}

async fn bomb(ctx: &Ctx, conn: &quinn::Connection) {
    let Some((mut send, mut recv)) = session(ctx, conn, &ctx.next_token()).await else {
        return;
    };
    let payload = bomb_payload();
    for seq in 1.. {
        let mut body = (seq as u64).to_be_bytes().to_vec();
        body.push(1); // zstd
        body.extend_from_slice(&payload);
        let mut frame = Vec::new();
        wire::encode_frame(FrameType::Batch, &body, &mut frame);
        if !matches!(
            timeout(STEP_TIMEOUT, send.write_all(&frame)).await,
            Ok(Ok(()))
        ) {
            break;
        }
        ctx.count("bombs_sent");
        match read_frame(&mut recv).await {
            Some((FrameType::Ack, body)) => ctx.count(&ack_name(&body)),
            Some((t, _)) => {
                ctx.count(&format!("frame:{}", t.as_str()));
                break;
            }
            None => break,
        }
    }
    ctx.held_until_closed(conn, Instant::now()).await;
}

/// Initials of real connection attempts (made towards a local trap socket, so they are
/// well-formed and each has its own connection id), forwarded to the server from one
/// socket that never reads an answer.
async fn initial_flood(ctx: &Ctx, rate: u32) {
    let Ok(trap) = tokio::net::UdpSocket::bind(ctx.bind).await else {
        ctx.count("setup_failed");
        return;
    };
    let Ok(flood) = tokio::net::UdpSocket::bind(ctx.bind).await else {
        ctx.count("setup_failed");
        return;
    };
    let Ok(trap_addr) = trap.local_addr() else {
        return;
    };
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (f64::from(rate) * TICK.as_secs_f64()).ceil() as usize;
    let mut pending: VecDeque<quinn::Connecting> = VecDeque::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut buf = vec![0u8; 2048];
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        for _ in 0..per_tick {
            if let Ok(c) = ctx
                .ep
                .connect_with(ctx.quic.clone(), trap_addr, "localhost")
            {
                pending.push_back(c);
            }
        }
        // Keep the recent attempts alive until their first Initial is out.
        while pending.len() > 4 * per_tick {
            pending.pop_front();
        }
        let mut sent = 0;
        while sent < per_tick {
            let Ok(Ok((len, _))) = timeout(TICK, trap.recv_from(&mut buf)).await else {
                break;
            };
            let d = &buf[..len];
            // Long header: flags, version (4), DCID length, DCID.
            if len < 7 || d[0] & 0x80 == 0 || len < 6 + usize::from(d[5]) {
                continue;
            }
            if seen.len() > 200_000 {
                seen.clear();
            }
            if seen.insert(d[6..6 + usize::from(d[5])].to_vec()) {
                if flood.send_to(d, ctx.server).await.is_ok() {
                    ctx.count("initials_sent");
                }
                sent += 1;
            }
        }
    }
}
