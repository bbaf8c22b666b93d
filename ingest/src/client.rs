//! The device client library: connect, authenticate, send batches, await acks, retry.
//!
//! Contract:
//! * One [`Device`] is one device's authenticated QUIC connection with ONE bidirectional
//!   stream carrying every frame (protocol v1, `docs/PROTOCOL.md`). Many tasks may call
//!   [`Device::send_once`] / [`Device::send`] concurrently: batches are pipelined on the
//!   stream, at most `min(ClientConfig::inflight_batches_max, Welcome::inflight_batches_max)`
//!   unacked at a time; acks are matched to callers by `batch_seq`.
//! * A lost connection is replaced transparently by the next call (QUIC connect + HELLO +
//!   WELCOME again). [`Device::send`] resends the SAME `batch_seq` after a transient status
//!   or a connection loss; the server's dedup window makes that idempotent (a batch already
//!   stored is acked DUPLICATE, which counts as success).
//! * Frames are queued whole to a per-connection writer task, so dropping a send future
//!   (cancellation, timeout) never leaves half a frame on the stream.
//! * Confirm-location (`docs/PROTOCOL.md` §9): CONFIRM_REQUEST frames from the server reach
//!   the app through [`Device::confirm_requests`] (each request once per `Device`, even when
//!   the server redelivers it after a reconnect); the app answers with
//!   [`Device::confirm_here`] or [`Device::confirm_with_fix`], which sign the CONFIRM with a
//!   key derived from the device token and await the server's CONFIRM_ACK. Requests arrive
//!   only while a connection is open: an app that may idle should send heartbeats.
//! * TLS is rustls with the *ring* provider, TLS 1.3 only, ALPN `hexflow/1`, trusting only
//!   the CA in [`ClientConfig::ca_pem`]. This module contains no server code.
//!
//! # Choosing `batch_seq`
//! `batch_seq` identifies a batch for deduplication. It must be non-zero and strictly
//! increase per device across app restarts, so pick one of:
//! * a counter persisted (fsync'd) by the app before the batch is first sent, or
//! * the batch's creation time in microseconds since the Unix epoch (unique as long as the
//!   app creates at most one batch per microsecond and the device clock never runs back).
//!
//! The server remembers the last `Welcome::dedup_window_batches` (64) seqs per device and
//! acks older ones STALE_SEQUENCE, so never have more than that many batches unacked: a
//! batch resent after falling out of the window cannot be recognised as a duplicate.

use crate::wire::{
    self, Ack, CONTROL_FRAME_BODY_BYTES_MAX, Close, Confirm, ConfirmAck, ConfirmKey, ConfirmKind,
    ConfirmRequest, EncodeError, FRAME_HEADER_LEN, Fixes, FrameError, FrameType, Hello, Status,
    StatusClass, Welcome,
};
use quinn::VarInt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Mutex as AsyncMutex, Semaphore, mpsc, oneshot};

/// How [`Device::send`] retries. Delays use full jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts per batch, the first included (0 is treated as 1). Default 8.
    pub attempts_max: u32,
    /// Backoff cap for the first retry. Default 50 ms.
    pub backoff_initial_ms: u64,
    /// Backoff cap for any retry (the cap doubles per attempt up to this). Default 5 s.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 8,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `failed_attempts` (≥ 1) failures. Pure: `random`
    /// is any random u64.
    ///
    /// Without a server hint the delay is uniform in `[0, cap]` (full jitter) where
    /// `cap = min(backoff_max_ms, backoff_initial_ms * 2^(failed_attempts - 1))`. With a
    /// server hint it is `retry_after_ms` plus a jitter uniform in
    /// `[0, min(cap, retry_after_ms)]`: never earlier than the server asked.
    pub fn delay_ms(&self, failed_attempts: u32, retry_after_ms: u32, random: u64) -> u64 {
        let doublings = failed_attempts.saturating_sub(1).min(63);
        let cap = self
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        if retry_after_ms > 0 {
            let hint = u64::from(retry_after_ms);
            hint + random % (cap.min(hint) + 1)
        } else {
            random % (cap + 1)
        }
    }
}

/// Everything a [`Device`] needs; build with [`ClientConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's UDP address.
    pub server_addr: SocketAddr,
    /// The TLS server name to verify. Default `localhost`.
    pub server_name: String,
    /// PEM with the CA certificate(s) to trust (the dev certificate itself works).
    pub ca_pem: Vec<u8>,
    /// The device token sent in HELLO.
    pub token: String,
    /// Most unacked batches on this device; the server's WELCOME may lower it. Default 16.
    pub inflight_batches_max: usize,
    /// Retry behaviour of [`Device::send`].
    pub retry: RetryPolicy,
    /// Limit for QUIC handshake plus HELLO/WELCOME. Default 10 s.
    pub connect_timeout_ms: u64,
    /// zstd level for batch payloads. Default 3.
    pub zstd_level: i32,
    /// Sent in HELLO for the server's logs. Default `hexflow-client/<version>`.
    pub client_agent: String,
    /// How long [`Device::send_once`] waits for an ack after queueing the batch. Default 30 s.
    pub ack_timeout_ms: u64,
    /// QUIC keep-alive interval, 0 = off. Keeps NAT bindings and the idle timer alive
    /// between batches. Default 10 s.
    pub keep_alive_interval_ms: u64,
    /// QUIC receive window (per stream and per connection). The client only receives small
    /// control frames, so this stays small to save memory across thousands of connections.
    /// Default 64 KiB.
    pub receive_window_bytes: u32,
    /// How long [`Device::close`] waits for the server to acknowledge the CLOSE frame.
    /// Default 1 s.
    pub close_linger_ms: u64,
    /// Confirm requests buffered for the app ([`Device::confirm_requests`]); when full, a
    /// new request is dropped (the server delivers it again after the next reconnect).
    /// Default 8.
    pub confirm_requests_max: usize,
}

impl ClientConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(server_addr: SocketAddr, ca_pem: Vec<u8>, token: String) -> Self {
        ClientConfig {
            server_addr,
            server_name: "localhost".to_string(),
            ca_pem,
            token,
            inflight_batches_max: 16,
            retry: RetryPolicy::default(),
            connect_timeout_ms: 10_000,
            zstd_level: 3,
            client_agent: concat!("hexflow-client/", env!("CARGO_PKG_VERSION")).to_string(),
            ack_timeout_ms: 30_000,
            keep_alive_interval_ms: 10_000,
            receive_window_bytes: 64 * 1024,
            close_linger_ms: 1_000,
            confirm_requests_max: 8,
        }
    }
}

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the client endpoint to {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `ca_pem` holds no parsable certificate.
    #[error("ca_pem: {detail}")]
    InvalidCa {
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the configuration or a certificate.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The rustls configuration offers no TLS 1.3 cipher suite usable by QUIC.
    #[error("the TLS configuration has no QUIC-compatible initial cipher suite")]
    NoInitialCipherSuite,
    /// quinn refused to start the connection (bad server name, endpoint stopping, ...).
    #[error("cannot start connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC handshake plus HELLO/WELCOME took longer than `connect_timeout_ms`.
    #[error("connecting took longer than {timeout_ms} ms")]
    ConnectTimeout {
        /// The configured limit.
        timeout_ms: u64,
    },
    /// The connection failed or was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] quinn::ConnectionError),
    /// Reading from the stream failed.
    #[error("reading from the stream failed: {0}")]
    Read(#[source] quinn::ReadError),
    /// Writing to the stream failed.
    #[error("writing to the stream failed: {0}")]
    Write(#[source] quinn::WriteError),
    /// The server finished the stream.
    #[error("the server finished the stream")]
    StreamFinished,
    /// The server closed the connection with status OK (for example an idle timeout).
    #[error("the server closed the connection: {reason}")]
    ServerClosed {
        /// The server's reason.
        reason: String,
    },
    /// The server refused the connection or a batch at connection level (CLOSE or ACK
    /// with this status), or answered with a transient status on the last attempt.
    #[error("rejected with {status}: {reason}")]
    Rejected {
        /// The server's status.
        status: Status,
        /// The server's reason.
        reason: String,
        /// The server's retry hint (0 = none).
        retry_after_ms: u32,
    },
    /// The server sent a status code protocol v1 does not define.
    #[error("server sent unknown status {code}: {reason}")]
    UnknownStatus {
        /// The code.
        code: u32,
        /// The server's reason.
        reason: String,
    },
    /// The server sent a frame a v1 client must not receive at this point.
    #[error("server sent an unexpected {frame_type} frame")]
    UnexpectedFrame {
        /// The frame's type.
        frame_type: FrameType,
    },
    /// The server sent a frame that could not be decoded.
    #[error("server sent a bad frame: {detail}")]
    BadFrame {
        /// What was wrong with it.
        detail: String,
    },
    /// No ack arrived within `ack_timeout_ms`.
    #[error("no ack for batch {batch_seq} within {timeout_ms} ms")]
    AckTimeout {
        /// The batch.
        batch_seq: u64,
        /// The configured limit.
        timeout_ms: u64,
    },
    /// The batch could not be encoded.
    #[error("cannot encode the batch: {0}")]
    Encode(#[from] EncodeError),
    /// The encoded batch is larger than the server reads; split it.
    #[error(
        "batch {batch_seq} encodes to {body_len} bytes, over the server's batch_bytes_max {batch_bytes_max}"
    )]
    BatchTooLarge {
        /// The batch.
        batch_seq: u64,
        /// The encoded BATCH body length.
        body_len: usize,
        /// The server's limit from WELCOME.
        batch_bytes_max: u32,
    },
    /// Another call is already waiting for an ack of this seq on this device.
    #[error("batch {batch_seq} is already in flight on this device")]
    SeqInFlight {
        /// The batch.
        batch_seq: u64,
    },
    /// [`Device::close`] was called.
    #[error("the device was closed")]
    Closed,
    /// Another call is already waiting for the answer to this confirm request.
    #[error("a CONFIRM for request {request_id} is already in flight on this device")]
    ConfirmInFlight {
        /// The request.
        request_id: u64,
    },
    /// No CONFIRM_ACK arrived within `ack_timeout_ms`.
    #[error("no CONFIRM_ACK for request {request_id} within {timeout_ms} ms")]
    ConfirmTimeout {
        /// The request.
        request_id: u64,
        /// The configured limit.
        timeout_ms: u64,
    },
    /// [`Device::confirm_here`] / [`Device::confirm_with_fix`] used every attempt.
    #[error("confirm of request {request_id} failed after {attempts} attempts; last error: {last}")]
    ConfirmRetriesExhausted {
        /// The request.
        request_id: u64,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<ClientError>,
    },
    /// [`Device::send`] used every attempt.
    #[error("batch {batch_seq} failed after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// The batch.
        batch_seq: u64,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// True when resending the same batch (after a delay, on a new connection if needed)
    /// may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::ConnectTimeout { .. }
            | ClientError::ConnectionLost(_)
            | ClientError::Read(_)
            | ClientError::Write(_)
            | ClientError::StreamFinished
            | ClientError::ServerClosed { .. }
            | ClientError::AckTimeout { .. }
            | ClientError::ConfirmTimeout { .. } => true,
            ClientError::Rejected { status, .. } => status.is_retryable(),
            _ => false,
        }
    }

    /// The server's retry hint carried by this error (0 = none).
    pub fn retry_after_ms(&self) -> u32 {
        match self {
            ClientError::Rejected { retry_after_ms, .. } => *retry_after_ms,
            _ => 0,
        }
    }

    fn from_status(code: u32, reason: String, retry_after_ms: u32) -> Self {
        match Status::from_code(code) {
            Some(s) if s.is_success() => ClientError::ServerClosed { reason },
            Some(status) => ClientError::Rejected {
                status,
                reason,
                retry_after_ms,
            },
            None => ClientError::UnknownStatus { code, reason },
        }
    }

    fn from_connection(e: quinn::ConnectionError) -> Self {
        // The QUIC application error code of a server close is the status (PROTOCOL.md).
        if let quinn::ConnectionError::ApplicationClosed(close) = &e {
            if let Ok(code) = u32::try_from(close.error_code.into_inner()) {
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                return ClientError::from_status(code, reason, 0);
            }
        }
        ClientError::ConnectionLost(e)
    }

    fn from_read(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(_) => ClientError::StreamFinished,
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
                ClientError::from_connection(c)
            }
            quinn::ReadExactError::ReadError(r) => ClientError::Read(r),
        }
    }

    fn from_write(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => ClientError::from_connection(c),
            w => ClientError::Write(w),
        }
    }

    fn from_frame(e: FrameError) -> Self {
        ClientError::BadFrame {
            detail: e.to_string(),
        }
    }

    /// A copy for every waiter of a session that ended (the source errors are `Clone`).
    fn duplicate(&self) -> Self {
        match self {
            ClientError::ConnectionLost(e) => ClientError::ConnectionLost(e.clone()),
            ClientError::Read(e) => ClientError::Read(e.clone()),
            ClientError::Write(e) => ClientError::Write(e.clone()),
            ClientError::StreamFinished => ClientError::StreamFinished,
            ClientError::ServerClosed { reason } => ClientError::ServerClosed {
                reason: reason.clone(),
            },
            ClientError::Rejected {
                status,
                reason,
                retry_after_ms,
            } => ClientError::Rejected {
                status: *status,
                reason: reason.clone(),
                retry_after_ms: *retry_after_ms,
            },
            ClientError::UnknownStatus { code, reason } => ClientError::UnknownStatus {
                code: *code,
                reason: reason.clone(),
            },
            ClientError::UnexpectedFrame { frame_type } => ClientError::UnexpectedFrame {
                frame_type: *frame_type,
            },
            ClientError::Closed => ClientError::Closed,
            other => ClientError::BadFrame {
                detail: other.to_string(),
            },
        }
    }
}

/// The device clock (Unix ms), signed into CONFIRM frames.
fn unix_now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One UDP socket shared by many simulated devices (the load generator opens thousands of
/// connections on one endpoint). Must be called inside a tokio runtime. Per-connection
/// settings (small receive windows, TLS) are applied by [`Device::connect`].
///
/// # Errors
/// [`ClientError::Bind`] when the socket cannot be bound.
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
    quinn::Endpoint::client(bind).map_err(|source| ClientError::Bind { addr: bind, source })
}

/// Builds the quinn client configuration: ring provider, TLS 1.3, ALPN, CA from PEM.
fn quic_client_config(cfg: &ClientConfig) -> Result<quinn::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cfg.ca_pem) {
        let cert = cert.map_err(|e| ClientError::InvalidCa {
            detail: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(ClientError::InvalidCa {
            detail: "no CERTIFICATE block found".to_string(),
        });
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|_| ClientError::NoInitialCipherSuite)?;
    let mut transport = quinn::TransportConfig::default();
    let window = VarInt::from_u32(cfg.receive_window_bytes);
    transport
        .stream_receive_window(window)
        .receive_window(window)
        // The server never opens streams towards a device.
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(
            (cfg.keep_alive_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.keep_alive_interval_ms)),
        );
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

/// A frame queued for the writer task.
enum Outgoing {
    Frame(Vec<u8>),
    /// Write, finish the stream, wait for the peer to acknowledge it, then signal.
    Close(Vec<u8>, oneshot::Sender<()>),
}

/// State shared by a session's callers, its reader and its writer.
struct Shared {
    state: StdMutex<SharedState>,
    inflight: Semaphore,
    next_waiter_id: AtomicU64,
}

/// key -> (waiter id, answer channel). The id stops a finished caller from removing a later
/// caller's registration of the same key.
type Waiters<T> = HashMap<u64, (u64, oneshot::Sender<T>)>;

struct SharedState {
    /// batch seq -> its ACK's waiter.
    waiters: Waiters<Ack>,
    /// request_id -> its CONFIRM_ACK's waiter.
    confirm_waiters: Waiters<ConfirmAck>,
    /// Why the session ended; set once.
    ended: Option<ClientError>,
}

impl Shared {
    fn new(inflight: usize) -> Self {
        Shared {
            state: StdMutex::new(SharedState {
                waiters: HashMap::new(),
                confirm_waiters: HashMap::new(),
                ended: None,
            }),
            inflight: Semaphore::new(inflight),
            next_waiter_id: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        // A panic while holding this lock cannot leave the map inconsistent (single ops).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(
        &self,
        batch_seq: u64,
    ) -> Result<(WaiterGuard<'_>, oneshot::Receiver<Ack>), ClientError> {
        self.register_in(
            batch_seq,
            false,
            |s| &mut s.waiters,
            |batch_seq| ClientError::SeqInFlight { batch_seq },
        )
    }

    fn register_confirm(
        &self,
        request_id: u64,
    ) -> Result<(WaiterGuard<'_>, oneshot::Receiver<ConfirmAck>), ClientError> {
        self.register_in(
            request_id,
            true,
            |s| &mut s.confirm_waiters,
            |request_id| ClientError::ConfirmInFlight { request_id },
        )
    }

    /// Registers a waiter for `key` in the map `waiters` picks (batch acks or confirm acks);
    /// `in_flight` is the error when `key` already has one.
    fn register_in<T>(
        &self,
        key: u64,
        confirm: bool,
        waiters: fn(&mut SharedState) -> &mut Waiters<T>,
        in_flight: fn(u64) -> ClientError,
    ) -> Result<(WaiterGuard<'_>, oneshot::Receiver<T>), ClientError> {
        let mut state = self.lock();
        if let Some(end) = &state.ended {
            return Err(end.duplicate());
        }
        let map = waiters(&mut state);
        if map.contains_key(&key) {
            return Err(in_flight(key));
        }
        let id = self.next_waiter_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        map.insert(key, (id, tx));
        Ok((
            WaiterGuard {
                shared: self,
                key,
                id,
                confirm,
            },
            rx,
        ))
    }

    fn complete_confirm(&self, ack: ConfirmAck) {
        let waiter = self.lock().confirm_waiters.remove(&ack.request_id);
        if let Some((_, tx)) = waiter {
            let _ = tx.send(ack);
        }
    }

    fn complete(&self, ack: Ack) {
        let waiter = self.lock().waiters.remove(&ack.batch_seq);
        // An ack nobody waits for (its caller timed out or was cancelled) is dropped.
        if let Some((_, tx)) = waiter {
            let _ = tx.send(ack);
        }
    }

    fn end(&self, why: ClientError) {
        let mut state = self.lock();
        if state.ended.is_none() {
            state.ended = Some(why);
        }
        // Dropping the senders wakes every waiter, which then reads `ended`.
        state.waiters.clear();
        state.confirm_waiters.clear();
        drop(state);
        self.inflight.close();
    }

    fn end_error(&self) -> ClientError {
        self.lock()
            .ended
            .as_ref()
            .map_or(ClientError::StreamFinished, ClientError::duplicate)
    }

    fn is_ended(&self) -> bool {
        self.lock().ended.is_some()
    }
}

/// Removes a caller's registration when its `send_once` (or confirm) returns or is
/// dropped.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    /// batch_seq, or request_id when `confirm`.
    key: u64,
    id: u64,
    confirm: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if self.confirm {
            if state
                .confirm_waiters
                .get(&self.key)
                .is_some_and(|(id, _)| *id == self.id)
            {
                state.confirm_waiters.remove(&self.key);
            }
        } else if state
            .waiters
            .get(&self.key)
            .is_some_and(|(id, _)| *id == self.id)
        {
            state.waiters.remove(&self.key);
        }
    }
}

/// Where CONFIRM_REQUESTs go: the app's bounded channel, without repeating the request
/// last handed over (the server redelivers an unanswered request after each reconnect).
struct Inbox {
    tx: mpsc::Sender<ConfirmRequest>,
    last_request_id: AtomicU64,
}

impl Inbox {
    fn offer(&self, request: ConfirmRequest) {
        let id = request.request_id;
        if self.last_request_id.load(Ordering::Acquire) == id {
            return;
        }
        match self.tx.try_send(request) {
            Ok(()) => self.last_request_id.store(id, Ordering::Release),
            Err(e) => tracing::warn!(
                request_id = id,
                error = %e,
                "confirm request dropped (app not reading confirm_requests)"
            ),
        }
    }
}

/// One authenticated connection and its stream.
struct Session {
    conn: quinn::Connection,
    frames: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    welcome: Welcome,
}

impl Session {
    fn is_alive(&self) -> bool {
        !self.shared.is_ended() && self.conn.close_reason().is_none()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Ends the reader task; harmless when the connection is already closed.
        self.conn.close(
            VarInt::from_u32(Status::Ok.code()),
            b"client dropped the connection",
        );
    }
}

/// Reads one control frame, refusing bodies over [`CONTROL_FRAME_BODY_BYTES_MAX`] unread.
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<(FrameType, Vec<u8>), ClientError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header)
        .await
        .map_err(ClientError::from_read)?;
    let header = wire::parse_frame_header(&header).map_err(ClientError::from_frame)?;
    if header.len > CONTROL_FRAME_BODY_BYTES_MAX {
        return Err(ClientError::from_frame(FrameError::TooLong {
            frame_type: header.frame_type,
            len: header.len,
            len_max: CONTROL_FRAME_BODY_BYTES_MAX,
        }));
    }
    let mut body = vec![0u8; header.len as usize];
    recv.read_exact(&mut body)
        .await
        .map_err(ClientError::from_read)?;
    Ok((header.frame_type, body))
}

fn close_error(body: &[u8]) -> ClientError {
    match wire::decode_close(body) {
        Ok(c) => ClientError::from_status(c.status, c.reason, c.retry_after_ms),
        Err(e) => ClientError::from_frame(e),
    }
}

async fn read_loop(mut recv: quinn::RecvStream, shared: Arc<Shared>, inbox: Arc<Inbox>) {
    let why = loop {
        match read_frame(&mut recv).await {
            Ok((FrameType::Ack, body)) => match wire::decode_ack(&body) {
                Ok(ack) => shared.complete(ack),
                Err(e) => break ClientError::from_frame(e),
            },
            Ok((FrameType::Close, body)) => break close_error(&body),
            Ok((FrameType::ConfirmRequest, body)) => match wire::decode_confirm_request(&body) {
                Ok(request) => inbox.offer(request),
                Err(e) => break ClientError::from_frame(e),
            },
            Ok((FrameType::ConfirmAck, body)) => match wire::decode_confirm_ack(&body) {
                Ok(ack) => shared.complete_confirm(ack),
                Err(e) => break ClientError::from_frame(e),
            },
            Ok((frame_type, _)) => break ClientError::UnexpectedFrame { frame_type },
            Err(e) => break e,
        }
    };
    tracing::debug!(error = %why, "device session ended");
    shared.end(why);
}

async fn write_loop(
    mut send: quinn::SendStream,
    mut frames: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    linger: Duration,
) {
    while let Some(item) = frames.recv().await {
        match item {
            Outgoing::Frame(frame) => {
                if let Err(e) = send.write_all(&frame).await {
                    shared.end(ClientError::from_write(e));
                    return;
                }
            }
            Outgoing::Close(frame, done) => {
                if send.write_all(&frame).await.is_ok() && send.finish().is_ok() {
                    let _ = tokio::time::timeout(linger, send.stopped()).await;
                }
                let _ = done.send(());
                return;
            }
        }
    }
    let _ = send.finish();
}

/// One device's authenticated connection; `Send + Sync`, share it behind an `Arc` between
/// tasks. Reconnects transparently when the connection is lost.
pub struct Device {
    endpoint: quinn::Endpoint,
    cfg: ClientConfig,
    quic: quinn::ClientConfig,
    session: AsyncMutex<Option<Arc<Session>>>,
    welcome: StdMutex<Welcome>,
    closed: AtomicBool,
    confirm_key: ConfirmKey,
    inbox: Arc<Inbox>,
    confirm_rx: StdMutex<Option<mpsc::Receiver<ConfirmRequest>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("server_addr", &self.cfg.server_addr)
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// QUIC connect, send HELLO, wait for WELCOME.
    ///
    /// # Errors
    /// [`ClientError::Rejected`] when the server answers HELLO with CLOSE (for example
    /// UNAUTHENTICATED or UNSUPPORTED_VERSION); TLS, connection and timeout errors.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        cfg: ClientConfig,
    ) -> Result<Device, ClientError> {
        let quic = quic_client_config(&cfg)?;
        let (confirm_tx, confirm_rx) = mpsc::channel(cfg.confirm_requests_max.max(1));
        let device = Device {
            endpoint: endpoint.clone(),
            confirm_key: ConfirmKey::from_token(&cfg.token),
            cfg,
            quic,
            session: AsyncMutex::new(None),
            welcome: StdMutex::new(Welcome::default()),
            closed: AtomicBool::new(false),
            inbox: Arc::new(Inbox {
                tx: confirm_tx,
                last_request_id: AtomicU64::new(0),
            }),
            confirm_rx: StdMutex::new(Some(confirm_rx)),
        };
        device.session().await?;
        Ok(device)
    }

    /// The device id from the latest WELCOME.
    pub fn device_id(&self) -> u64 {
        self.welcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .device_id
    }

    /// The server limits from the latest WELCOME.
    pub fn welcome(&self) -> Welcome {
        self.welcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The live session, connecting first if there is none or it died.
    async fn session(&self) -> Result<Arc<Session>, ClientError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        // Held while connecting so that concurrent callers wait for one reconnect.
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.is_alive() {
                return Ok(Arc::clone(s));
            }
        }
        *slot = None;
        let timeout_ms = self.cfg.connect_timeout_ms;
        let session = tokio::time::timeout(Duration::from_millis(timeout_ms), self.open_session())
            .await
            .map_err(|_| ClientError::ConnectTimeout { timeout_ms })??;
        let session = Arc::new(session);
        *self.welcome.lock().unwrap_or_else(PoisonError::into_inner) = session.welcome.clone();
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn open_session(&self) -> Result<Session, ClientError> {
        let cfg = &self.cfg;
        let conn = self
            .endpoint
            .connect_with(self.quic.clone(), cfg.server_addr, &cfg.server_name)?
            .await
            .map_err(ClientError::from_connection)?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(ClientError::from_connection)?;
        let mut hello = Vec::new();
        wire::encode_hello(
            &Hello {
                protocol_version: wire::PROTOCOL_VERSION,
                token: cfg.token.clone(),
                client_agent: cfg.client_agent.clone(),
            },
            &mut hello,
        );
        send.write_all(&hello)
            .await
            .map_err(ClientError::from_write)?;
        let welcome = match read_frame(&mut recv).await? {
            (FrameType::Welcome, body) => {
                wire::decode_welcome(&body).map_err(ClientError::from_frame)?
            }
            (FrameType::Close, body) => return Err(close_error(&body)),
            (frame_type, _) => return Err(ClientError::UnexpectedFrame { frame_type }),
        };
        let server_inflight = match welcome.inflight_batches_max {
            0 => usize::MAX,
            n => n as usize,
        };
        let inflight = cfg
            .inflight_batches_max
            .min(server_inflight)
            .clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared::new(inflight));
        // Room for every in-flight batch plus heartbeats and the final CLOSE.
        let (frames, frames_rx) = mpsc::channel(inflight.saturating_add(4).min(4096));
        let linger = Duration::from_millis(cfg.close_linger_ms);
        tokio::spawn(read_loop(
            recv,
            Arc::clone(&shared),
            Arc::clone(&self.inbox),
        ));
        tokio::spawn(write_loop(send, frames_rx, Arc::clone(&shared), linger));
        tracing::debug!(device_id = welcome.device_id, inflight, "device connected");
        Ok(Session {
            conn,
            frames,
            shared,
            welcome,
        })
    }

    /// Sends one batch and awaits its ack, WITHOUT retry (it connects first if the
    /// connection is gone). Many calls may be in flight concurrently from different tasks,
    /// pipelined on the one stream and bounded by `min(inflight_batches_max, server's)`.
    /// Returns the server's Ack whatever its status.
    ///
    /// # Cancel safety
    /// Dropping the future never corrupts the stream: the frame is queued whole or not at
    /// all. A batch that was queued may still be stored; resend it with the same seq.
    ///
    /// # Errors
    /// Encoding and size errors, connection errors, [`ClientError::AckTimeout`],
    /// [`ClientError::SeqInFlight`], [`ClientError::Closed`].
    pub async fn send_once(&self, batch_seq: u64, fixes: &Fixes) -> Result<Ack, ClientError> {
        let session = self.session().await?;
        let mut frame = Vec::new();
        wire::encode_batch_frame(batch_seq, fixes, self.cfg.zstd_level, &mut frame)?;
        let body_len = frame.len() - FRAME_HEADER_LEN;
        let batch_bytes_max = session.welcome.batch_bytes_max;
        if batch_bytes_max != 0 && body_len > batch_bytes_max as usize {
            return Err(ClientError::BatchTooLarge {
                batch_seq,
                body_len,
                batch_bytes_max,
            });
        }
        let shared = &session.shared;
        let _permit = shared
            .inflight
            .acquire()
            .await
            .map_err(|_| shared.end_error())?;
        let (_guard, ack_rx) = shared.register(batch_seq)?;
        session
            .frames
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| shared.end_error())?;
        let timeout_ms = self.cfg.ack_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), ack_rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(shared.end_error()),
            Err(_) => Err(ClientError::AckTimeout {
                batch_seq,
                timeout_ms,
            }),
        }
    }

    /// Sends with retries: on a transient status waits at least the server's
    /// `retry_after_ms` (plus jitter) or a jittered backoff; on connection loss reconnects
    /// and resends the SAME seq (idempotent thanks to server dedup). Returns the final Ack
    /// (OK/DUPLICATE or a permanent 1xx rejection) or an error when attempts are exhausted
    /// or the error cannot be retried (connection-level statuses such as UNAUTHENTICATED).
    ///
    /// # Cancel safety
    /// As [`Device::send_once`].
    ///
    /// # Errors
    /// [`ClientError::RetriesExhausted`] wrapping the last error, or the first
    /// non-retryable error.
    pub async fn send(&self, batch_seq: u64, fixes: &Fixes) -> Result<Ack, ClientError> {
        let policy = &self.cfg.retry;
        let attempts_max = policy.attempts_max.max(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = match self.send_once(batch_seq, fixes).await {
                Ok(ack) => match StatusClass::of_code(ack.status) {
                    StatusClass::Success | StatusClass::Rejected => return Ok(ack),
                    StatusClass::Transient => {
                        ClientError::from_status(ack.status, ack.reason, ack.retry_after_ms)
                    }
                    StatusClass::Connection | StatusClass::Unknown => {
                        return Err(ClientError::from_status(
                            ack.status,
                            ack.reason,
                            ack.retry_after_ms,
                        ));
                    }
                },
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            if attempt >= attempts_max {
                return Err(ClientError::RetriesExhausted {
                    batch_seq,
                    attempts: attempt,
                    last: Box::new(last),
                });
            }
            let delay_ms = policy.delay_ms(attempt, last.retry_after_ms(), rand::random());
            tracing::debug!(batch_seq, attempt, delay_ms, error = %last, "retrying batch");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// The server's confirm-location requests, in arrival order. Only the first call gets
    /// the receiver (`None` afterwards). Each request appears once even if the server
    /// redelivers it after a reconnect; answer it with [`Device::confirm_here`] or
    /// [`Device::confirm_with_fix`]. At most `ClientConfig::confirm_requests_max` wait
    /// unread.
    pub fn confirm_requests(&self) -> Option<mpsc::Receiver<ConfirmRequest>> {
        self.confirm_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Answers request `request_id` with a signed HERE ("I am here", no position) and
    /// returns the server's CONFIRM_ACK whatever its status (OK = recorded). Retries like
    /// [`Device::send`] after connection loss or a transient status; a retry whose first
    /// attempt was in fact recorded is answered UNSOLICITED_CONFIRM.
    ///
    /// # Cancel safety
    /// As [`Device::send_once`]: the frame is queued whole or not at all.
    ///
    /// # Errors
    /// Connection errors, [`ClientError::ConfirmRetriesExhausted`],
    /// [`ClientError::ConfirmInFlight`], [`ClientError::Closed`].
    pub async fn confirm_here(&self, request_id: u64) -> Result<ConfirmAck, ClientError> {
        self.confirm_retrying(request_id, None).await
    }

    /// Answers request `request_id` with a fresh position: sends `fixes` as batch
    /// `batch_seq` (with retries, as [`Device::send`]), then a signed CONFIRM of kind FIX
    /// naming it, and returns the server's CONFIRM_ACK whatever its status. If the
    /// connection was replaced between the two (the server then answers FIX_NOT_FOUND), the
    /// batch is resent with the same seq (acked DUPLICATE) and the CONFIRM repeated.
    ///
    /// # Cancel safety
    /// As [`Device::send_once`].
    ///
    /// # Errors
    /// [`ClientError::Rejected`] when the batch itself is refused (1xx), the errors of
    /// [`Device::send`], and those of [`Device::confirm_here`].
    pub async fn confirm_with_fix(
        &self,
        request_id: u64,
        batch_seq: u64,
        fixes: &Fixes,
    ) -> Result<ConfirmAck, ClientError> {
        self.confirm_retrying(request_id, Some((batch_seq, fixes)))
            .await
    }

    async fn confirm_retrying(
        &self,
        request_id: u64,
        fix: Option<(u64, &Fixes)>,
    ) -> Result<ConfirmAck, ClientError> {
        let policy = &self.cfg.retry;
        let attempts_max = policy.attempts_max.max(1);
        let (kind, batch_seq) = match fix {
            Some((seq, _)) => (ConfirmKind::Fix, seq),
            None => (ConfirmKind::Here, 0),
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some((seq, fixes)) = fix {
                let ack = self.send(seq, fixes).await?;
                if StatusClass::of_code(ack.status) != StatusClass::Success {
                    return Err(ClientError::from_status(
                        ack.status,
                        ack.reason,
                        ack.retry_after_ms,
                    ));
                }
            }
            let confirm = self
                .confirm_key
                .confirm(request_id, kind, batch_seq, unix_now_ms());
            let last = match self.confirm_once(&confirm).await {
                Ok(ack) if ack.status == Status::FixNotFound.code() && attempt < attempts_max => {
                    // The batch was acked on an earlier connection; resend it on this one.
                    tracing::debug!(request_id, batch_seq, "FIX_NOT_FOUND, resending the batch");
                    continue;
                }
                Ok(ack) if StatusClass::of_code(ack.status) == StatusClass::Transient => {
                    ClientError::from_status(ack.status, ack.reason, 0)
                }
                Ok(ack) => return Ok(ack),
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            if attempt >= attempts_max {
                return Err(ClientError::ConfirmRetriesExhausted {
                    request_id,
                    attempts: attempt,
                    last: Box::new(last),
                });
            }
            let delay_ms = policy.delay_ms(attempt, last.retry_after_ms(), rand::random());
            tracing::debug!(request_id, attempt, delay_ms, error = %last, "retrying confirm");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// Sends one CONFIRM and awaits its CONFIRM_ACK, without retry.
    async fn confirm_once(&self, confirm: &Confirm) -> Result<ConfirmAck, ClientError> {
        let session = self.session().await?;
        let mut frame = Vec::new();
        wire::encode_confirm(confirm, &mut frame);
        let shared = &session.shared;
        // A CONFIRM takes one of the server's in-flight slots until its answer arrives.
        let _permit = shared
            .inflight
            .acquire()
            .await
            .map_err(|_| shared.end_error())?;
        let request_id = confirm.request_id;
        let (_guard, rx) = shared.register_confirm(request_id)?;
        session
            .frames
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| shared.end_error())?;
        let timeout_ms = self.cfg.ack_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err(shared.end_error()),
            Err(_) => Err(ClientError::ConfirmTimeout {
                request_id,
                timeout_ms,
            }),
        }
    }

    /// Sends a HEARTBEAT (the device is alive without fixes). No answer is expected.
    ///
    /// # Errors
    /// Connection errors and [`ClientError::Closed`].
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        let session = self.session().await?;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN);
        wire::encode_heartbeat(&mut frame);
        session
            .frames
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| session.shared.end_error())
    }

    /// Sends CLOSE(OK), waits up to `close_linger_ms` for it to be delivered, then closes
    /// the connection. Batches still awaiting an ack fail (resend them later with the same
    /// seq); later calls return [`ClientError::Closed`].
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let Some(session) = self.session.lock().await.take() else {
            return;
        };
        let mut frame = Vec::new();
        wire::encode_close(
            &Close {
                status: Status::Ok.code(),
                reason: "client closing".to_string(),
                retry_after_ms: 0,
            },
            &mut frame,
        );
        let (done_tx, done_rx) = oneshot::channel();
        let linger = Duration::from_millis(self.cfg.close_linger_ms);
        // Bounded: a server that stopped reading must not keep close() waiting.
        let _ = tokio::time::timeout(linger, async {
            if session
                .frames
                .send(Outgoing::Close(frame, done_tx))
                .await
                .is_ok()
            {
                let _ = done_rx.await;
            }
        })
        .await;
        session
            .conn
            .close(VarInt::from_u32(Status::Ok.code()), b"client closing");
        session.shared.end(ClientError::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Device>();
        check::<ClientError>();
    }

    #[test]
    fn config_defaults() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let c = ClientConfig::new(addr, vec![], "t".into());
        assert_eq!(c.server_name, "localhost");
        assert_eq!(
            c.retry,
            RetryPolicy {
                attempts_max: 8,
                backoff_initial_ms: 50,
                backoff_max_ms: 5_000
            }
        );
        assert_eq!(c.inflight_batches_max, 16);
        assert!(c.client_agent.starts_with("hexflow-client/"));
    }

    #[test]
    fn backoff_is_full_jitter_capped_and_doubling() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, 0, 0), 0);
        assert_eq!(p.delay_ms(1, 0, 50), 50);
        assert_eq!(p.delay_ms(1, 0, 51), 0, "uniform in [0, 50]");
        assert_eq!(p.delay_ms(2, 0, 100), 100);
        assert_eq!(p.delay_ms(3, 0, 200), 200);
        assert_eq!(p.delay_ms(20, 0, 5_000), 5_000);
        assert_eq!(p.delay_ms(20, 0, 5_001), 0, "capped at backoff_max_ms");
        assert_eq!(
            p.delay_ms(u32::MAX, 0, u64::MAX),
            u64::MAX % 5_001,
            "no overflow"
        );
    }

    #[test]
    fn server_retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        for r in [0, 1, 17, 1_000_000, u64::MAX] {
            let d = p.delay_ms(1, 300, r);
            assert!((300..=350).contains(&d), "{d}");
        }
        // A hint smaller than the backoff cap bounds the jitter by the hint.
        assert!((10..=20).contains(&p.delay_ms(5, 10, u64::MAX)));
    }

    #[test]
    fn error_classification() {
        let transient = ClientError::from_status(Status::Overloaded.code(), "busy".into(), 200);
        assert!(transient.is_retryable());
        assert_eq!(transient.retry_after_ms(), 200);
        let unauth =
            ClientError::from_status(Status::Unauthenticated.code(), "bad token".into(), 0);
        assert!(matches!(
            &unauth,
            ClientError::Rejected {
                status: Status::Unauthenticated,
                ..
            }
        ));
        assert!(!unauth.is_retryable());
        assert!(matches!(
            ClientError::from_status(0, "idle".into(), 0),
            ClientError::ServerClosed { .. }
        ));
        assert!(matches!(
            ClientError::from_status(777, "?".into(), 0),
            ClientError::UnknownStatus { code: 777, .. }
        ));
        assert!(!ClientError::SeqInFlight { batch_seq: 1 }.is_retryable());
        assert!(
            ClientError::AckTimeout {
                batch_seq: 1,
                timeout_ms: 5
            }
            .is_retryable()
        );
    }

    #[test]
    fn inbox_hands_each_request_once_and_is_bounded() {
        let (tx, mut rx) = mpsc::channel(2);
        let inbox = Inbox {
            tx,
            last_request_id: AtomicU64::new(0),
        };
        let req = |id| ConfirmRequest {
            request_id: id,
            requested_at_ms: 5,
            reason: "r".into(),
        };
        inbox.offer(req(7));
        inbox.offer(req(7)); // redelivered after a reconnect: not repeated
        inbox.offer(req(8));
        inbox.offer(req(9)); // channel full (2): dropped, the server redelivers later
        assert_eq!(rx.try_recv().expect("7").request_id, 7);
        assert_eq!(rx.try_recv().expect("8").request_id, 8);
        assert!(rx.try_recv().is_err());
        inbox.offer(req(9));
        assert_eq!(rx.try_recv().expect("9 on redelivery").request_id, 9);
    }

    #[test]
    fn confirm_waiters_are_matched_by_request_id() {
        let shared = Shared::new(2);
        let (g, mut rx) = shared.register_confirm(5).expect("register");
        assert!(matches!(
            shared.register_confirm(5),
            Err(ClientError::ConfirmInFlight { request_id: 5 })
        ));
        // A batch with the same number is a different namespace.
        let (_b, _brx) = shared.register(5).expect("batch 5");
        shared.complete_confirm(ConfirmAck::new(6, Status::Ok, ""));
        assert!(rx.try_recv().is_err());
        shared.complete_confirm(ConfirmAck::new(5, Status::Ok, ""));
        assert_eq!(rx.try_recv().expect("answered").request_id, 5);
        drop(g);
        let (_g, _rx) = shared.register_confirm(5).expect("free again");
        shared.end(ClientError::StreamFinished);
        assert!(shared.register_confirm(6).is_err());
    }

    #[test]
    fn bad_ca_pem_is_reported() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let c = ClientConfig::new(addr, b"not a pem".to_vec(), "t".into());
        assert!(matches!(
            quic_client_config(&c),
            Err(ClientError::InvalidCa { .. })
        ));
    }

    #[test]
    fn waiters_are_matched_by_seq_and_ended_sessions_fail_fast() {
        let shared = Shared::new(2);
        let (g1, mut rx1) = shared.register(1).expect("register");
        assert!(matches!(
            shared.register(1),
            Err(ClientError::SeqInFlight { batch_seq: 1 })
        ));
        let (_g2, mut rx2) = shared.register(2).expect("register");
        shared.complete(Ack::new(2, Status::Ok, ""));
        assert_eq!(rx2.try_recv().expect("acked").batch_seq, 2);
        assert!(rx1.try_recv().is_err(), "seq 1 not acked yet");
        drop(g1);
        let (_g1b, _rx) = shared
            .register(1)
            .expect("seq free again after its caller left");
        shared.end(ClientError::StreamFinished);
        assert!(matches!(
            shared.register(3),
            Err(ClientError::StreamFinished)
        ));
        assert!(shared.inflight.try_acquire().is_err(), "semaphore closed");
    }
}
