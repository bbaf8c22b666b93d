//! The QUIC endpoint: accept connections, authenticate devices, read frames, hand batches to
//! a [`BatchSink`], write acks.
//!
//! # Contract
//! * A connection carries exactly one device: the first frame must be `HELLO` with a token
//!   that verifies ([`crate::auth`]); every batch on that connection is stored under that
//!   device id. A connection can never send fixes for another device.
//! * Every `BATCH` frame gets exactly one `ACK`. A success ack (`OK`/`DUPLICATE`) is written
//!   only after the sink reported the batch durable; the endpoint never acks on its own.
//! * A bad batch (undecodable, oversized, invalid values) is answered with its own status
//!   and a precise reason; the connection stays open and other connections are unaffected.
//!   Only protocol violations (no `HELLO`, unknown frame type, a frame far over any limit)
//!   close the connection, with a `CLOSE` frame naming the reason.
//! * Everything is bounded: connections (`connections_max`), pipelined batches per
//!   connection (`inflight_batches_max`, advertised in `WELCOME`), frame sizes, QUIC
//!   receive windows, the hello deadline and the idle timeout.
//! * The endpoint never blocks on storage: [`BatchSink::submit`] must not block; a full
//!   sink answers `OVERLOADED` with a retry-after.
//! * Confirm-location (`docs/PROTOCOL.md` §9): [`Endpoint::request_confirm`] keeps at most
//!   one outstanding request per device (and at most `confirm_pending_max` in total) in a
//!   lock-free registry that also maps connected devices to their writer task. An
//!   outstanding request is written to the device's connection at once if it is connected,
//!   and again right after every later `WELCOME` until the device answers it or it is
//!   cancelled. Every `CONFIRM` gets exactly one `CONFIRM_ACK`; only a verified answer to the
//!   outstanding request reaches [`Activity::on_confirm`], exactly once.
//! * Closing is polite: the endpoint finishes its stream and waits (at most
//!   `close_linger_ms`) for the device to receive it before closing the connection, so acks
//!   already written are not lost.
//!
//! The endpoint reads the time only through the [`Clock`] it is given, so tests control it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use fix::DeviceId;
use sys::Clock;

use crate::auth::TokenKey;
use crate::wire::{self, ConfirmKind, FrameType, Status};

/// What the sink says about one submitted batch; becomes the batch's `ACK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutcome {
    /// Ack status (`OK`, `DUPLICATE`, or a rejection).
    pub status: Status,
    /// Human-readable reason (empty on success).
    pub reason: String,
    /// For transient statuses: how long the device should wait before resending.
    pub retry_after_ms: u32,
}

impl SinkOutcome {
    /// A success outcome.
    pub fn ok() -> Self {
        Self {
            status: Status::Ok,
            reason: String::new(),
            retry_after_ms: 0,
        }
    }
}

/// Called exactly once with the outcome of a submitted batch; may be called from any thread.
pub type SinkCallback = Box<dyn FnOnce(SinkOutcome) + Send + 'static>;

/// A decoded, validated batch handed to the sink.
#[derive(Debug)]
pub struct AcceptedBatch {
    /// The authenticated device.
    pub device_id: DeviceId,
    /// The device's batch sequence number.
    pub batch_seq: u64,
    /// Server time when the batch frame was read (Unix ms).
    pub received_at_ms: i64,
    /// The fixes (validated: coordinates in range, times plausible, columns consistent).
    pub fixes: wire::Fixes,
}

/// Where accepted batches go (the binary connects this to storage).
pub trait BatchSink: Send + Sync + 'static {
    /// Queues a batch without blocking. `done` must eventually be called exactly once, after
    /// the batch is durable (status `OK`), found to be a duplicate of a durable batch
    /// (`DUPLICATE`), or refused. When the sink cannot take the batch right now it may call
    /// `done` immediately with `OVERLOADED`.
    fn submit(&self, batch: AcceptedBatch, done: SinkCallback);
}

/// Observes device activity (the binary feeds the silence table with it).
pub trait Activity: Send + Sync + 'static {
    /// Any frame arrived from the device (including heartbeats), at `now_ms`.
    fn on_contact(&self, device_id: DeviceId, now_ms: i64);
    /// A batch was durably stored; `newest_fix_ms` is its newest fix time.
    fn on_fixes_stored(&self, device_id: DeviceId, newest_fix_ms: i64, now_ms: i64);
    /// The device answered its outstanding confirm-location request with a verified
    /// `CONFIRM`. `at_ms` is, for [`ConfirmKind::Here`], the server time the CONFIRM was read;
    /// for [`ConfirmKind::Fix`], the newest fix time of the referenced batch, capped at the
    /// server time. Called once per answered request. The default ignores it.
    fn on_confirm(&self, device_id: DeviceId, kind: ConfirmKind, at_ms: i64) {
        let _ = (device_id, kind, at_ms);
    }
}

/// Activity sink that ignores everything.
#[derive(Debug, Default)]
pub struct NoActivity;

impl Activity for NoActivity {
    fn on_contact(&self, _: DeviceId, _: i64) {}
    fn on_fixes_stored(&self, _: DeviceId, _: i64, _: i64) {}
}

/// Endpoint limits and settings. Every field is a documented key in `config/hexflow.toml`.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Batch limits and timestamp plausibility window.
    pub limits: wire::Limits,
    /// Open connections allowed at once; more are refused at the QUIC level.
    pub connections_max: usize,
    /// Batches one connection may have waiting for an ack; the endpoint stops reading that
    /// connection's stream while this many are pending (QUIC flow control then pushes back).
    pub inflight_batches_max: u32,
    /// Size of the per-device dedup window, advertised to clients.
    pub dedup_window_batches: u32,
    /// Oversized `BATCH` frames up to this many bytes are read and discarded so the device
    /// gets `BATCH_TOO_LARGE` and the connection lives on; larger frames close the connection.
    pub oversize_discard_bytes_max: u32,
    /// Deadline for the `HELLO` frame after the handshake.
    pub hello_timeout_ms: u64,
    /// QUIC idle timeout.
    pub idle_timeout_ms: u64,
    /// QUIC per-stream receive window.
    pub stream_receive_window_bytes: u32,
    /// QUIC per-connection receive window.
    pub connection_receive_window_bytes: u32,
    /// QUIC per-connection send window.
    pub send_window_bytes: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            limits: wire::Limits::default(),
            connections_max: 10_000,
            inflight_batches_max: 32,
            dedup_window_batches: 64,
            oversize_discard_bytes_max: 4 * 1024 * 1024,
            hello_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            stream_receive_window_bytes: 512 * 1024,
            connection_receive_window_bytes: 1024 * 1024,
            send_window_bytes: 64 * 1024,
        }
    }
}

/// Settings of the confirm-location exchange and of closing connections. Kept apart from
/// [`EndpointConfig`] so existing constructions of that struct stay valid; pass it to
/// [`Endpoint::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most confirm-location requests outstanding (queued or delivered, not yet answered or
    /// cancelled) across all devices; [`Endpoint::request_confirm`] refuses more. At most
    /// one per device in any case. Default 1 000 000 (about 100 bytes each).
    pub confirm_pending_max: usize,
    /// Rejected `CONFIRM` frames (malformed, unsolicited, bad signature) one connection may
    /// send; the next one closes the connection with `PROTOCOL_VIOLATION`. Default 8.
    pub confirm_rejects_max: u32,
    /// How long closing a connection waits for the device to receive the end of the
    /// stream (and, after the device's `CLOSE`, for it to close the connection). Default
    /// 1 000 ms.
    pub close_linger_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            confirm_pending_max: 1_000_000,
            confirm_rejects_max: 8,
            close_linger_ms: 1_000,
        }
    }
}

/// What [`Endpoint::request_confirm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfirmDelivery {
    /// The device is connected: the `CONFIRM_REQUEST` was handed to its connection's writer.
    /// It is delivered again after the next `WELCOME` if the device reconnects unanswered.
    Sent {
        /// The new request's id.
        request_id: u64,
    },
    /// The device is not connected (or its writer is busy): the request is delivered right
    /// after its next `WELCOME`.
    Queued {
        /// The new request's id.
        request_id: u64,
    },
    /// The device already has an outstanding request; nothing changed (one per device).
    AlreadyOutstanding {
        /// The outstanding request's id.
        request_id: u64,
    },
}

impl ConfirmDelivery {
    /// The id of the request the device is (or will be) asked to answer.
    pub fn request_id(self) -> u64 {
        match self {
            ConfirmDelivery::Sent { request_id }
            | ConfirmDelivery::Queued { request_id }
            | ConfirmDelivery::AlreadyOutstanding { request_id } => request_id,
        }
    }
}

/// Why [`Endpoint::request_confirm`] refused to raise a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmRequestError {
    /// `confirm_pending_max` requests are already outstanding.
    #[error("{pending} confirm requests outstanding, confirm_pending_max is {pending_max}")]
    PendingFull {
        /// Outstanding now.
        pending: usize,
        /// The limit.
        pending_max: usize,
    },
    /// The reason is longer than [`wire::CONFIRM_REASON_BYTES_MAX`].
    #[error("reason is {len} bytes, at most {len_max}")]
    ReasonTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        len_max: usize,
    },
    /// The endpoint is shutting down.
    #[error("the endpoint is shutting down")]
    ShuttingDown,
}

/// An outstanding confirm-location request, as [`Endpoint::outstanding_confirm`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutstandingConfirm {
    /// The request's id.
    pub request_id: u64,
    /// Server time (Unix ms) when it was raised.
    pub requested_at_ms: i64,
    /// Why it was raised.
    pub reason: String,
}

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The TLS configuration was refused.
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls offered no TLS 1.3 cipher suite usable by QUIC.
    #[error("TLS configuration has no QUIC-capable cipher suite")]
    NoQuicCipherSuite,
    /// Binding the UDP socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// A configured limit is out of range.
    #[error("invalid endpoint setting {key}: {reason}")]
    InvalidSetting {
        /// Config key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Builds the quinn server configuration: TLS 1.3 only, ALPN `hexflow/1`, ring provider,
/// one bidirectional stream per connection, bounded windows.
///
/// # Errors
/// [`EndpointError`] when the certificate/key are refused or a setting is out of range.
pub fn server_config(
    cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    cfg: &EndpointConfig,
) -> Result<quinn::ServerConfig, EndpointError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|_| EndpointError::NoQuicCipherSuite)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(cfg)?));
    Ok(server)
}

fn transport_config(cfg: &EndpointConfig) -> Result<quinn::TransportConfig, EndpointError> {
    let idle =
        quinn::IdleTimeout::try_from(Duration::from_millis(cfg.idle_timeout_ms)).map_err(|_| {
            EndpointError::InvalidSetting {
                key: "quic.idle_timeout_ms",
                reason: format!("{} is out of range", cfg.idle_timeout_ms),
            }
        })?;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(cfg.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(cfg.connection_receive_window_bytes))
        .send_window(u64::from(cfg.send_window_bytes))
        .max_idle_timeout(Some(idle))
        .datagram_receive_buffer_size(None);
    Ok(t)
}

/// Live counters of the endpoint (read by metrics and tests).
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Connections open right now.
    pub connections_open: AtomicUsize,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused because `connections_max` was reached.
    pub connections_refused: AtomicU64,
    /// Connections that failed authentication.
    pub auth_failures: AtomicU64,
    /// Batches acked `OK`.
    pub batches_ok: AtomicU64,
    /// Batches acked `DUPLICATE`.
    pub batches_duplicate: AtomicU64,
    /// Batches refused (any other status).
    pub batches_rejected: AtomicU64,
    /// Fixes in batches acked `OK`.
    pub fixes_ok: AtomicU64,
    /// Confirm requests handed to a connected device's writer (first deliveries and
    /// redeliveries after `WELCOME`).
    pub confirm_requests_delivered: AtomicU64,
    /// Confirm requests raised while the device was not connected.
    pub confirm_requests_queued: AtomicU64,
    /// Verified answers recorded (each reached [`Activity::on_confirm`]).
    pub confirms_recorded: AtomicU64,
    /// `CONFIRM` frames answered with a rejection.
    pub confirms_rejected: AtomicU64,
}

/// Shared state of one running endpoint.
struct Shared {
    cfg: EndpointConfig,
    key: TokenKey,
    sink: Arc<dyn BatchSink>,
    activity: Arc<dyn Activity>,
    clock: Arc<dyn Clock>,
    stats: Arc<EndpointStats>,
    shutdown: CancellationToken,
    session: SessionConfig,
    registry: Registry,
    /// Source of connection ids (registry entries name the connection that owns them).
    next_conn_id: AtomicU64,
    /// Source of request ids: seeded from the clock at start so ids from before a restart
    /// are very unlikely to match new ones; never 0.
    next_request_id: AtomicU64,
}

/// A running QUIC endpoint.
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    stats: Arc<EndpointStats>,
    shutdown: CancellationToken,
    accept_task: tokio::task::JoinHandle<()>,
    connections: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

/// Everything [`Endpoint::start`] needs.
pub struct EndpointParts {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// quinn server configuration (see [`server_config`]).
    pub server_config: quinn::ServerConfig,
    /// Endpoint limits.
    pub cfg: EndpointConfig,
    /// Token key used to verify devices.
    pub key: TokenKey,
    /// Where batches go.
    pub sink: Arc<dyn BatchSink>,
    /// Who hears about device activity.
    pub activity: Arc<dyn Activity>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl Endpoint {
    /// Binds and starts accepting connections on the current tokio runtime, with the
    /// default [`SessionConfig`].
    ///
    /// # Errors
    /// [`EndpointError::Bind`] when the socket cannot be bound.
    pub fn start(parts: EndpointParts) -> Result<Self, EndpointError> {
        Self::start_with(parts, SessionConfig::default())
    }

    /// As [`Endpoint::start`] with explicit confirm-location and close settings.
    ///
    /// # Errors
    /// [`EndpointError::Bind`] when the socket cannot be bound;
    /// [`EndpointError::InvalidSetting`] when `confirm_pending_max` is 0.
    pub fn start_with(parts: EndpointParts, session: SessionConfig) -> Result<Self, EndpointError> {
        if session.confirm_pending_max == 0 {
            return Err(EndpointError::InvalidSetting {
                key: "confirm.pending_max",
                reason: "must be at least 1".into(),
            });
        }
        let endpoint =
            quinn::Endpoint::server(parts.server_config, parts.listen).map_err(|source| {
                EndpointError::Bind {
                    addr: parts.listen,
                    source,
                }
            })?;
        let stats = Arc::new(EndpointStats::default());
        let shutdown = CancellationToken::new();
        let connections = tokio_util::task::TaskTracker::new();
        let seed_ms = u64::try_from(parts.clock.now_ms()).unwrap_or(0);
        let shared = Arc::new(Shared {
            session,
            registry: Registry::default(),
            next_conn_id: AtomicU64::new(1),
            next_request_id: AtomicU64::new((seed_ms << 16).max(1)),
            cfg: parts.cfg,
            key: parts.key,
            sink: parts.sink,
            activity: parts.activity,
            clock: parts.clock,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        });
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            connections.clone(),
        ));
        Ok(Self {
            endpoint,
            shared,
            stats,
            shutdown,
            accept_task,
            connections,
        })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// The OS error if the socket address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<EndpointStats> {
        self.stats.clone()
    }

    /// A cloneable handle that raises and cancels confirm-location requests from any thread
    /// (the silence scanner holds one).
    pub fn confirmer(&self) -> Confirmer {
        Confirmer {
            shared: self.shared.clone(),
        }
    }

    /// Same as [`Confirmer::request_confirm`].
    ///
    /// # Errors
    /// [`ConfirmRequestError`]: too many outstanding, reason too long, bad id, shutting down.
    pub fn request_confirm(
        &self,
        device_id: DeviceId,
        reason: &str,
    ) -> Result<ConfirmDelivery, ConfirmRequestError> {
        self.confirmer().request_confirm(device_id, reason)
    }

    /// Same as [`Confirmer::cancel_confirm`].
    pub fn cancel_confirm(&self, device_id: DeviceId) -> Option<u64> {
        self.confirmer().cancel_confirm(device_id)
    }

    /// The device's outstanding request, if any.
    pub fn outstanding_confirm(&self, device_id: DeviceId) -> Option<OutstandingConfirm> {
        self.shared
            .registry
            .outstanding(device_id)
            .map(|r| OutstandingConfirm {
                request_id: r.request_id,
                requested_at_ms: r.requested_at_ms,
                reason: r.reason.clone(),
            })
    }

    /// Requests outstanding across all devices.
    pub fn confirms_outstanding(&self) -> usize {
        self.shared.registry.pending.load(Ordering::Acquire)
    }

    /// Graceful shutdown: stop accepting, let every connection finish the batches it has in
    /// flight (each gets its ack), send `CLOSE(SHUTTING_DOWN)`, then close the endpoint.
    /// Waits at most `grace` for connections to finish.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future midway leaves connections to the idle timeout.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        self.accept_task.abort();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            warn!("connections still open after the shutdown grace period; closing them");
        }
        self.endpoint.close(
            VarInt::from_u32(Status::ShuttingDown.code()),
            b"shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Raises and cancels confirm-location requests; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Confirmer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Confirmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmer").finish_non_exhaustive()
    }
}

impl Confirmer {
    /// Asks `device_id` to confirm its location. At most one request per device is
    /// outstanding: if one is, nothing changes and its id is returned. A new request is
    /// handed at once to the device's connection if it has one ([`ConfirmDelivery::Sent`]),
    /// otherwise kept for delivery right after its next `WELCOME`
    /// ([`ConfirmDelivery::Queued`]). The request stays outstanding, and is delivered again
    /// after every reconnect, until the device answers it or [`Confirmer::cancel_confirm`]
    /// drops it. Lock-free; never blocks.
    ///
    /// # Errors
    /// [`ConfirmRequestError`]: too many outstanding, reason too long, bad id, shutting down.
    pub fn request_confirm(
        &self,
        device_id: DeviceId,
        reason: &str,
    ) -> Result<ConfirmDelivery, ConfirmRequestError> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(ConfirmRequestError::ShuttingDown);
        }
        if reason.len() > wire::CONFIRM_REASON_BYTES_MAX {
            return Err(ConfirmRequestError::ReasonTooLong {
                len: reason.len(),
                len_max: wire::CONFIRM_REASON_BYTES_MAX,
            });
        }
        if let Some(existing) = shared.registry.outstanding(device_id) {
            return Ok(ConfirmDelivery::AlreadyOutstanding {
                request_id: existing.request_id,
            });
        }
        let pending_max = shared.session.confirm_pending_max;
        shared.registry.reserve(pending_max).map_err(|pending| {
            ConfirmRequestError::PendingFull {
                pending,
                pending_max,
            }
        })?;
        let request = Arc::new(wire::ConfirmRequest {
            request_id: shared.next_request_id.fetch_add(1, Ordering::Relaxed),
            requested_at_ms: shared.clock.now_ms(),
            reason: reason.to_string(),
        });
        let request_id = request.request_id;
        match shared.registry.raise(device_id, request.clone()) {
            Raise::Outstanding(existing) => {
                shared.registry.release();
                Ok(ConfirmDelivery::AlreadyOutstanding {
                    request_id: existing,
                })
            }
            Raise::Raised(Some(link)) if deliver(&link.tx, request) => {
                shared
                    .stats
                    .confirm_requests_delivered
                    .fetch_add(1, Ordering::Relaxed);
                Ok(ConfirmDelivery::Sent { request_id })
            }
            Raise::Raised(_) => {
                shared
                    .stats
                    .confirm_requests_queued
                    .fetch_add(1, Ordering::Relaxed);
                Ok(ConfirmDelivery::Queued { request_id })
            }
        }
    }

    /// Drops the device's outstanding request (for example when it expired or became
    /// exempt); a later answer to it is refused with `UNSOLICITED_CONFIRM`. Returns the
    /// dropped request's id.
    pub fn cancel_confirm(&self, device_id: DeviceId) -> Option<u64> {
        let id = self.shared.registry.answer(device_id, None)?;
        self.shared.registry.release();
        Some(id)
    }
}

/// A connected device's writer task, tagged with the connection that owns it.
#[derive(Clone)]
struct ConnLink {
    conn_id: u64,
    tx: mpsc::Sender<WriterMsg>,
}

/// Registry entry of one device: its live connection and its outstanding request. An entry
/// with neither is removed, so the map holds only connected devices and outstanding
/// requests (bounded by `connections_max` + `confirm_pending_max`).
#[derive(Clone)]
struct Slot {
    conn: Option<ConnLink>,
    request: Option<Arc<wire::ConfirmRequest>>,
}

enum Raise {
    /// The request is now outstanding; the device's connection, if it has one.
    Raised(Option<ConnLink>),
    /// Another request was outstanding already (its id); nothing changed.
    Outstanding(u64),
}

/// Lock-free map of connected devices and outstanding confirm requests. Every change of a
/// device's entry is one atomic `compute` on papaya's map, so a request raised while the
/// device connects is delivered exactly once: either `raise` sees the connection, or
/// `attach` sees the request.
#[derive(Default)]
struct Registry {
    slots: papaya::HashMap<DeviceId, Slot>,
    /// Outstanding requests (reserved before insertion, released on answer/cancel).
    pending: AtomicUsize,
}

impl Registry {
    /// Takes one of `pending_max` request slots; `Err(outstanding)` when none is left.
    fn reserve(&self, pending_max: usize) -> Result<(), usize> {
        let prev = self.pending.fetch_add(1, Ordering::AcqRel);
        if prev >= pending_max {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(prev);
        }
        Ok(())
    }

    fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    fn outstanding(&self, device_id: DeviceId) -> Option<Arc<wire::ConfirmRequest>> {
        self.slots
            .pin()
            .get(&device_id)
            .and_then(|s| s.request.clone())
    }

    /// Makes `request` the device's outstanding request unless it has one.
    fn raise(&self, device_id: DeviceId, request: Arc<wire::ConfirmRequest>) -> Raise {
        let map = self.slots.pin();
        let result = map.compute(device_id, |entry| match entry {
            Some((
                _,
                Slot {
                    request: Some(r), ..
                },
            )) => papaya::Operation::Abort(r.request_id),
            Some((_, slot)) => papaya::Operation::Insert(Slot {
                conn: slot.conn.clone(),
                request: Some(request.clone()),
            }),
            None => papaya::Operation::Insert(Slot {
                conn: None,
                request: Some(request.clone()),
            }),
        });
        match result {
            papaya::Compute::Aborted(id) => Raise::Outstanding(id),
            papaya::Compute::Inserted(_, v) | papaya::Compute::Updated { new: (_, v), .. } => {
                Raise::Raised(v.conn.clone())
            }
            // The closure never removes; treat it as "not connected".
            papaya::Compute::Removed(..) => Raise::Raised(None),
        }
    }

    /// Records the device's new connection (replacing an older one) and returns the
    /// outstanding request to deliver on it.
    fn attach(&self, device_id: DeviceId, link: ConnLink) -> Option<Arc<wire::ConfirmRequest>> {
        let map = self.slots.pin();
        let result = map.compute(device_id, |entry| {
            papaya::Operation::<Slot, ()>::Insert(Slot {
                conn: Some(link.clone()),
                request: entry.and_then(|(_, s)| s.request.clone()),
            })
        });
        match result {
            papaya::Compute::Inserted(_, v) | papaya::Compute::Updated { new: (_, v), .. } => {
                v.request.clone()
            }
            papaya::Compute::Removed(..) | papaya::Compute::Aborted(()) => None,
        }
    }

    /// Forgets the connection `conn_id` of the device (a newer connection is kept).
    fn detach(&self, device_id: DeviceId, conn_id: u64) {
        let map = self.slots.pin();
        map.compute(device_id, |entry| match entry {
            Some((_, slot)) if slot.conn.as_ref().is_some_and(|c| c.conn_id == conn_id) => {
                if slot.request.is_none() {
                    papaya::Operation::Remove
                } else {
                    papaya::Operation::Insert(Slot {
                        conn: None,
                        request: slot.request.clone(),
                    })
                }
            }
            _ => papaya::Operation::Abort(()),
        });
    }

    /// Removes the outstanding request (only if its id is `request_id`, when given) and
    /// returns its id. The caller releases the reserved slot.
    fn answer(&self, device_id: DeviceId, request_id: Option<u64>) -> Option<u64> {
        let map = self.slots.pin();
        let result = map.compute(device_id, |entry| match entry {
            Some((_, slot))
                if slot
                    .request
                    .as_ref()
                    .is_some_and(|r| request_id.is_none_or(|id| id == r.request_id)) =>
            {
                if slot.conn.is_none() {
                    papaya::Operation::Remove
                } else {
                    papaya::Operation::Insert(Slot {
                        conn: slot.conn.clone(),
                        request: None,
                    })
                }
            }
            _ => papaya::Operation::Abort(()),
        });
        match result {
            papaya::Compute::Removed(_, old) | papaya::Compute::Updated { old: (_, old), .. } => {
                old.request.as_ref().map(|r| r.request_id)
            }
            papaya::Compute::Inserted(..) | papaya::Compute::Aborted(()) => None,
        }
    }
}

/// Hands a CONFIRM_REQUEST to a connection's writer without waiting; false when the
/// writer is gone or its queue is full (the request stays outstanding and is delivered
/// after the next WELCOME).
fn deliver(tx: &mpsc::Sender<WriterMsg>, request: Arc<wire::ConfirmRequest>) -> bool {
    tx.try_send(WriterMsg::Request(request)).is_ok()
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    tracker: tokio_util::task::TaskTracker,
) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.shutdown.is_cancelled() {
            incoming.refuse();
            continue;
        }
        let open = shared.stats.connections_open.fetch_add(1, Ordering::AcqRel);
        if open >= shared.cfg.connections_max {
            shared.stats.connections_open.fetch_sub(1, Ordering::AcqRel);
            shared
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(remote = %incoming.remote_address(), "connections_max reached, refusing");
            incoming.refuse();
            continue;
        }
        shared
            .stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tracker.spawn(async move {
            let remote = incoming.remote_address();
            match incoming.accept() {
                Ok(connecting) => match connecting.await {
                    Ok(conn) => serve_connection(conn, &shared).await,
                    Err(e) => debug!(%remote, error = %e, "handshake failed"),
                },
                Err(e) => debug!(%remote, error = %e, "accept failed"),
            }
            shared.stats.connections_open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Why a connection ended early (for logs).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("{status:?}: {reason}")]
    Refused { status: Status, reason: String },
}

/// Writes CLOSE, finishes the stream and waits up to `linger` for the peer to receive it.
async fn write_close(send: &mut SendStream, linger: Duration, status: Status, reason: &str) {
    let body = wire::Close {
        status: status.code(),
        reason: reason.to_string(),
        retry_after_ms: 0,
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(wire::FRAME_HEADER_LEN + body.len());
    wire::encode_frame(FrameType::Close, &body, &mut out);
    if send.write_all(&out).await.is_ok() {
        finish_politely(send, linger).await;
    }
}

/// Finishes the stream and waits up to `linger` until the peer has received all of it
/// (closing the connection earlier could discard acks the device has not read yet).
async fn finish_politely(send: &mut SendStream, linger: Duration) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(linger, send.stopped()).await;
    }
}

async fn serve_connection(conn: quinn::Connection, shared: &Arc<Shared>) {
    let remote = conn.remote_address();
    let hello_deadline = Duration::from_millis(shared.cfg.hello_timeout_ms);
    let result = tokio::select! {
        r = tokio::time::timeout(hello_deadline, handshake(&conn, shared)) => match r {
            Ok(r) => r,
            Err(_) => Err(ConnError::Refused {
                status: Status::ProtocolViolation,
                reason: format!("no HELLO within {} ms", shared.cfg.hello_timeout_ms),
            }),
        },
        () = shared.shutdown.cancelled() => Err(ConnError::Refused {
            status: Status::ShuttingDown,
            reason: "server is shutting down".into(),
        }),
    };
    let (device_id, send, recv) = match result {
        Ok(v) => v,
        Err(e) => {
            debug!(%remote, error = %e, "connection refused during hello");
            let (code, reason) = match &e {
                ConnError::Refused { status, reason } => (status.code(), reason.clone()),
                _ => (Status::ProtocolViolation.code(), e.to_string()),
            };
            conn.close(VarInt::from_u32(code), reason.as_bytes());
            return;
        }
    };
    debug!(%remote, %device_id, "device authenticated");
    match serve_device(device_id, send, recv, shared).await {
        Ok(ReadEnd::PeerClosed) => {
            // The device sent CLOSE (or finished its stream) and closes the connection
            // itself once our end of the stream arrived; give it that moment.
            let linger = Duration::from_millis(shared.session.close_linger_ms);
            let _ = tokio::time::timeout(linger, conn.closed()).await;
            conn.close(VarInt::from_u32(0), b"bye");
        }
        Ok(ReadEnd::Shutdown) => conn.close(
            VarInt::from_u32(Status::ShuttingDown.code()),
            b"server is shutting down",
        ),
        Err(ConnError::Refused { status, reason }) => {
            info!(%remote, %device_id, ?status, %reason, "closing connection");
            conn.close(VarInt::from_u32(status.code()), reason.as_bytes());
        }
        Err(e) => debug!(%remote, %device_id, error = %e, "connection ended"),
    }
}

/// Reads `HELLO`, verifies the token, writes `WELCOME`.
async fn handshake(
    conn: &quinn::Connection,
    shared: &Arc<Shared>,
) -> Result<(DeviceId, SendStream, RecvStream), ConnError> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut header = [0u8; wire::FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await?;
    let refuse = |status: Status, reason: String| ConnError::Refused { status, reason };
    let linger = Duration::from_millis(shared.session.close_linger_ms);
    let header = wire::parse_frame_header(&header)
        .map_err(|e| refuse(Status::MalformedFrame, e.to_string()))?;
    if header.frame_type != FrameType::Hello {
        let reason = format!("first frame must be HELLO, got {:?}", header.frame_type);
        write_close(&mut send, linger, Status::ProtocolViolation, &reason).await;
        return Err(refuse(Status::ProtocolViolation, reason));
    }
    if header.len > HELLO_BYTES_MAX {
        let reason = format!("HELLO is {} bytes, at most {HELLO_BYTES_MAX}", header.len);
        write_close(&mut send, linger, Status::MalformedFrame, &reason).await;
        return Err(refuse(Status::MalformedFrame, reason));
    }
    let mut body = vec![0u8; header.len as usize];
    recv.read_exact(&mut body).await?;
    let hello = match wire::decode_hello(&body) {
        Ok(h) => h,
        Err(e) => {
            let reason = format!("undecodable HELLO: {e}");
            write_close(&mut send, linger, Status::MalformedFrame, &reason).await;
            return Err(refuse(Status::MalformedFrame, reason));
        }
    };
    if hello.protocol_version != wire::PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} not supported, this server speaks {}",
            hello.protocol_version,
            wire::PROTOCOL_VERSION
        );
        write_close(&mut send, linger, Status::UnsupportedVersion, &reason).await;
        return Err(refuse(Status::UnsupportedVersion, reason));
    }
    let device_id = match shared.key.verify(&hello.token) {
        Ok(id) => id,
        Err(e) => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            info!(remote = %conn.remote_address(), error = %e, "authentication failed");
            // The device learns only that its token is not valid, not why.
            let reason = "token not valid for this server".to_string();
            write_close(&mut send, linger, Status::Unauthenticated, &reason).await;
            return Err(refuse(Status::Unauthenticated, reason));
        }
    };
    let now_ms = shared.clock.now_ms();
    shared.activity.on_contact(device_id, now_ms);
    let limits = &shared.cfg.limits;
    let welcome = wire::Welcome {
        device_id: device_id.get(),
        batch_bytes_max: limits.batch_bytes_max,
        batch_fixes_max: limits.batch_fixes_max,
        inflight_batches_max: shared.cfg.inflight_batches_max,
        decompressed_bytes_max: limits.decompressed_bytes_max,
        server_time_ms: now_ms,
        dedup_window_batches: shared.cfg.dedup_window_batches,
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(wire::FRAME_HEADER_LEN + welcome.len());
    wire::encode_frame(FrameType::Welcome, &welcome, &mut out);
    send.write_all(&out).await?;
    Ok((device_id, send, recv))
}

/// Largest `HELLO` body accepted (a token plus a short agent string).
const HELLO_BYTES_MAX: u32 = 1024;

/// An ack waiting to be written, with what the activity observer needs.
struct PendingAck {
    ack: wire::Ack,
    newest_fix_ms: Option<i64>,
}

/// Serves an authenticated device until it closes, errs, or the server shuts down.
///
/// A reader loop reads frames and submits batches; a writer task writes acks in completion
/// order. A semaphore of `inflight_batches_max` permits bounds the batches between the two.
async fn serve_device(
    device_id: DeviceId,
    send: SendStream,
    mut recv: RecvStream,
    shared: &Arc<Shared>,
) -> Result<ReadEnd, ConnError> {
    let inflight = shared.cfg.inflight_batches_max.max(1) as usize;
    let permits = Arc::new(Semaphore::new(inflight));
    // Capacity = permits + 1 (a CLOSE request) + room for confirm requests, so `try_send`
    // of an ack never fails for lack of room: a sender holds a permit for each ack it may
    // send. Confirm requests hold no permit; when their room is taken they wait for the
    // next WELCOME.
    let (ack_tx, ack_rx) = mpsc::channel::<WriterMsg>(inflight + 1 + CONFIRM_REQUEST_SLOTS);
    let writer = tokio::spawn(ack_writer(
        send,
        ack_rx,
        permits.clone(),
        device_id,
        shared.clone(),
    ));
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let link = ConnLink {
        conn_id,
        tx: ack_tx.clone(),
    };
    // WELCOME is already written, so an outstanding request goes right after it.
    if let Some(request) = shared.registry.attach(device_id, link) {
        if deliver(&ack_tx, request) {
            shared
                .stats
                .confirm_requests_delivered
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    let read_result = read_frames(device_id, &mut recv, &permits, &ack_tx, shared).await;
    shared.registry.detach(device_id, conn_id);
    // Wait until every pending ack is written (all permits back), unless the writer dies
    // first (connection gone): then there is no one left to ack to.
    let mut writer = writer;
    let mut write_result = None;
    tokio::select! {
        drained = permits.acquire_many(inflight as u32) => {
            let final_msg = match &read_result {
                Ok(ReadEnd::PeerClosed) => None,
                Ok(ReadEnd::Shutdown) => {
                    Some((Status::ShuttingDown, "server is shutting down".to_string()))
                }
                Err(ConnError::Refused { status, reason }) => Some((*status, reason.clone())),
                Err(_) => None,
            };
            let _ = ack_tx.send(WriterMsg::Close(final_msg)).await;
            drop(drained);
        }
        r = &mut writer => write_result = Some(r),
    }
    drop(ack_tx);
    let write_result = match write_result {
        Some(r) => r,
        None => writer.await,
    }
    .unwrap_or(Ok(()));
    write_result.and(read_result)
}

/// Room in a connection's writer queue for CONFIRM_REQUEST frames (one outstanding request
/// per device; a second slot absorbs a redelivery racing a new request).
const CONFIRM_REQUEST_SLOTS: usize = 2;

/// A CONFIRM of kind FIX must name one of this many batches most recently acked
/// OK/DUPLICATE on the connection (PROTOCOL.md §9).
const CONFIRM_FIX_RECENT_BATCHES: usize = 64;

enum WriterMsg {
    /// A batch ack; its sender holds a permit.
    Ack(PendingAck),
    /// A CONFIRM_ACK decided by the reader (a rejection); its sender holds a permit.
    ConfirmAck(wire::ConfirmAck),
    /// A shape-checked, signature-verified answer to the outstanding request, for the
    /// writer to settle (it knows which batches were acked); its sender holds a permit.
    Confirm {
        request_id: u64,
        kind: ConfirmKind,
        batch_seq: u64,
        now_ms: i64,
    },
    /// A CONFIRM_REQUEST to write; holds no permit.
    Request(Arc<wire::ConfirmRequest>),
    Close(Option<(Status, String)>),
}

enum ReadEnd {
    PeerClosed,
    Shutdown,
}

async fn ack_writer(
    mut send: SendStream,
    mut rx: mpsc::Receiver<WriterMsg>,
    permits: Arc<Semaphore>,
    device_id: DeviceId,
    shared: Arc<Shared>,
) -> Result<(), ConnError> {
    let mut out = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(128);
    let mut msgs = Vec::with_capacity(64);
    // (batch_seq, newest fix ms) of the batches most recently acked OK/DUPLICATE.
    let mut recent: std::collections::VecDeque<(u64, i64)> =
        std::collections::VecDeque::with_capacity(CONFIRM_FIX_RECENT_BATCHES);
    let linger = Duration::from_millis(shared.session.close_linger_ms);
    loop {
        if rx.recv_many(&mut msgs, 64).await == 0 {
            return Ok(());
        }
        out.clear();
        let mut close = None;
        let mut acks = 0;
        for msg in msgs.drain(..) {
            match msg {
                WriterMsg::Ack(p) => {
                    acks += 1;
                    let status = Status::from_code(p.ack.status);
                    if let (Some(s), Some(t)) = (status, p.newest_fix_ms) {
                        if s.is_success() {
                            if recent.len() == CONFIRM_FIX_RECENT_BATCHES {
                                recent.pop_front();
                            }
                            recent.push_back((p.ack.batch_seq, t));
                        }
                    }
                    match status {
                        Some(Status::Ok) => {
                            shared.stats.batches_ok.fetch_add(1, Ordering::Relaxed);
                            if let Some(t) = p.newest_fix_ms {
                                shared.activity.on_fixes_stored(
                                    device_id,
                                    t,
                                    shared.clock.now_ms(),
                                );
                            }
                        }
                        Some(Status::Duplicate) => {
                            shared
                                .stats
                                .batches_duplicate
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            shared
                                .stats
                                .batches_rejected
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    body.clear();
                    p.ack.encode(&mut body).expect("Vec grows as needed");
                    wire::encode_frame(FrameType::Ack, &body, &mut out);
                }
                WriterMsg::ConfirmAck(a) => {
                    acks += 1;
                    wire::encode_confirm_ack(&a, &mut out);
                }
                WriterMsg::Confirm {
                    request_id,
                    kind,
                    batch_seq,
                    now_ms,
                } => {
                    acks += 1;
                    let a = settle_confirm(
                        device_id, request_id, kind, batch_seq, now_ms, &recent, &shared,
                    );
                    wire::encode_confirm_ack(&a, &mut out);
                }
                WriterMsg::Request(r) => wire::encode_confirm_request(&r, &mut out),
                WriterMsg::Close(c) => close = Some(c),
            }
        }
        if !out.is_empty() {
            let r = send.write_all(&out).await;
            permits.add_permits(acks);
            r?;
        }
        if let Some(c) = close {
            if let Some((status, reason)) = c {
                write_close(&mut send, linger, status, &reason).await;
            } else {
                finish_politely(&mut send, linger).await;
            }
            return Ok(());
        }
    }
}

/// Settles a verified CONFIRM: checks the FIX reference, takes the outstanding request,
/// tells the activity observer. Returns the CONFIRM_ACK to write.
fn settle_confirm(
    device_id: DeviceId,
    request_id: u64,
    kind: ConfirmKind,
    batch_seq: u64,
    now_ms: i64,
    recent: &std::collections::VecDeque<(u64, i64)>,
    shared: &Shared,
) -> wire::ConfirmAck {
    let at_ms = match kind {
        ConfirmKind::Here => now_ms,
        ConfirmKind::Fix => match recent.iter().rev().find(|(s, _)| *s == batch_seq) {
            Some(&(_, newest_fix_ms)) => newest_fix_ms.min(now_ms),
            None => {
                shared
                    .stats
                    .confirms_rejected
                    .fetch_add(1, Ordering::Relaxed);
                return wire::ConfirmAck::new(
                    request_id,
                    Status::FixNotFound,
                    format!(
                        "batch {batch_seq} is not among the last {CONFIRM_FIX_RECENT_BATCHES} batches acked on this connection"
                    ),
                );
            }
        },
    };
    if shared
        .registry
        .answer(device_id, Some(request_id))
        .is_none()
    {
        // Answered or cancelled between the reader's check and now.
        shared
            .stats
            .confirms_rejected
            .fetch_add(1, Ordering::Relaxed);
        return wire::ConfirmAck::new(
            request_id,
            Status::UnsolicitedConfirm,
            format!("request {request_id} is no longer outstanding"),
        );
    }
    shared.registry.release();
    shared.activity.on_confirm(device_id, kind, at_ms);
    shared
        .stats
        .confirms_recorded
        .fetch_add(1, Ordering::Relaxed);
    debug!(%device_id, request_id, %kind, at_ms, "location confirmed");
    wire::ConfirmAck::new(request_id, Status::Ok, "")
}

/// The reader's checks of a CONFIRM body: decodable, well-formed, answering the device's
/// outstanding request, correctly signed. `Err` is the rejection to send.
fn check_confirm_frame(
    device_id: DeviceId,
    body: &[u8],
    now_ms: i64,
    key: &mut Option<wire::ConfirmKey>,
    shared: &Shared,
) -> Result<WriterMsg, wire::ConfirmAck> {
    let c = wire::decode_confirm(body)
        .map_err(|e| wire::ConfirmAck::new(0, Status::MalformedFrame, e.to_string()))?;
    let kind = wire::check_confirm(&c)
        .map_err(|e| wire::ConfirmAck::new(c.request_id, e.status(), e.to_string()))?;
    match shared.registry.outstanding(device_id) {
        Some(r) if r.request_id == c.request_id => {}
        _ => {
            return Err(wire::ConfirmAck::new(
                c.request_id,
                Status::UnsolicitedConfirm,
                format!(
                    "request {} is not outstanding for device {device_id}",
                    c.request_id
                ),
            ));
        }
    }
    // The device's token is re-minted from the server key: no per-device secret is stored.
    let key = key.get_or_insert_with(|| wire::ConfirmKey::from_token(&shared.key.mint(device_id)));
    key.verify(&c)
        .map_err(|e| wire::ConfirmAck::new(c.request_id, e.status(), e.to_string()))?;
    Ok(WriterMsg::Confirm {
        request_id: c.request_id,
        kind,
        batch_seq: c.batch_seq,
        now_ms,
    })
}

async fn read_frames(
    device_id: DeviceId,
    recv: &mut RecvStream,
    permits: &Arc<Semaphore>,
    ack_tx: &mpsc::Sender<WriterMsg>,
    shared: &Arc<Shared>,
) -> Result<ReadEnd, ConnError> {
    let limits = &shared.cfg.limits;
    // batch_bytes_max bounds the whole BATCH body (seq + encoding + payload), as the
    // protocol spec says; checked from the header before any body byte is read.
    let batch_frame_max = wire::frame_body_len_max(FrameType::Batch, limits);
    let mut header = [0u8; wire::FRAME_HEADER_LEN];
    let mut body: Vec<u8> = Vec::new();
    let mut confirm_key = None;
    let mut confirm_rejects = 0u32;
    loop {
        // Take a permit before reading the next frame: with `inflight_batches_max` acks
        // pending we stop reading and QUIC flow control holds the device back.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            () = shared.shutdown.cancelled() => return Ok(ReadEnd::Shutdown),
        };
        let read = tokio::select! {
            r = read_header(recv, &mut header) => r?,
            () = shared.shutdown.cancelled() => return Ok(ReadEnd::Shutdown),
        };
        if !read {
            return Ok(ReadEnd::PeerClosed);
        }
        let now_ms = shared.clock.now_ms();
        shared.activity.on_contact(device_id, now_ms);
        let header = match wire::parse_frame_header(&header) {
            Ok(h) => h,
            Err(e) => {
                return Err(ConnError::Refused {
                    status: Status::MalformedFrame,
                    reason: e.to_string(),
                });
            }
        };
        match header.frame_type {
            FrameType::Batch => {}
            FrameType::Heartbeat => {
                if header.len != 0 {
                    return Err(ConnError::Refused {
                        status: Status::MalformedFrame,
                        reason: format!("HEARTBEAT must be empty, got {} bytes", header.len),
                    });
                }
                drop(permit);
                continue;
            }
            FrameType::Close => return Ok(ReadEnd::PeerClosed),
            FrameType::Confirm => {
                if header.len > wire::CONTROL_FRAME_BODY_BYTES_MAX {
                    return Err(ConnError::Refused {
                        status: Status::MalformedFrame,
                        reason: format!(
                            "CONFIRM body of {} bytes exceeds {}",
                            header.len,
                            wire::CONTROL_FRAME_BODY_BYTES_MAX
                        ),
                    });
                }
                body.clear();
                body.resize(header.len as usize, 0);
                recv.read_exact(&mut body).await?;
                let msg =
                    match check_confirm_frame(device_id, &body, now_ms, &mut confirm_key, shared) {
                        Ok(msg) => msg,
                        Err(ack) => {
                            confirm_rejects += 1;
                            if confirm_rejects > shared.session.confirm_rejects_max {
                                return Err(ConnError::Refused {
                                    status: Status::ProtocolViolation,
                                    reason: format!(
                                        "more than {} rejected CONFIRM frames on one connection",
                                        shared.session.confirm_rejects_max
                                    ),
                                });
                            }
                            shared
                                .stats
                                .confirms_rejected
                                .fetch_add(1, Ordering::Relaxed);
                            WriterMsg::ConfirmAck(ack)
                        }
                    };
                // The permit travels with the message; the writer returns it.
                permit.forget();
                send_writer(ack_tx, msg);
                continue;
            }
            other => {
                return Err(ConnError::Refused {
                    status: Status::ProtocolViolation,
                    reason: format!("frame {other:?} is not allowed from a device here"),
                });
            }
        }
        if header.len > batch_frame_max {
            if header.len > shared.cfg.oversize_discard_bytes_max.max(batch_frame_max) {
                return Err(ConnError::Refused {
                    status: Status::BatchTooLarge,
                    reason: format!(
                        "BATCH frame of {} bytes exceeds {} (batch_bytes_max {}); closing",
                        header.len, shared.cfg.oversize_discard_bytes_max, limits.batch_bytes_max
                    ),
                });
            }
            let seq = discard_body(recv, header.len).await?;
            let reason = format!(
                "BATCH body is {} bytes, batch_bytes_max is {}",
                header.len, limits.batch_bytes_max
            );
            permit.forget();
            send_ack(
                ack_tx,
                reject_ack(seq.unwrap_or(0), Status::BatchTooLarge, reason),
            );
            continue;
        }
        body.clear();
        body.resize(header.len as usize, 0);
        recv.read_exact(&mut body).await?;
        permit.forget();
        match wire::decode_batch(&body, limits, now_ms) {
            Err(e) => {
                send_ack(
                    ack_tx,
                    reject_ack(e.batch_seq.unwrap_or(0), e.status, e.reason),
                );
            }
            Ok((batch_seq, fixes)) => {
                let newest_fix_ms = fixes.time_ms.iter().copied().max();
                let tx = ack_tx.clone();
                let done: SinkCallback = Box::new(move |outcome: SinkOutcome| {
                    let ack = wire::Ack {
                        batch_seq,
                        status: outcome.status.code(),
                        reason: outcome.reason,
                        retry_after_ms: outcome.retry_after_ms,
                    };
                    send_ack(&tx, PendingAck { ack, newest_fix_ms });
                });
                shared.sink.submit(
                    AcceptedBatch {
                        device_id,
                        batch_seq,
                        received_at_ms: now_ms,
                        fixes,
                    },
                    done,
                );
            }
        }
    }
}

fn reject_ack(batch_seq: u64, status: Status, reason: String) -> PendingAck {
    PendingAck {
        ack: wire::Ack {
            batch_seq,
            status: status.code(),
            reason,
            retry_after_ms: 0,
        },
        newest_fix_ms: None,
    }
}

fn send_ack(tx: &mpsc::Sender<WriterMsg>, ack: PendingAck) {
    send_writer(tx, WriterMsg::Ack(ack));
}

fn send_writer(tx: &mpsc::Sender<WriterMsg>, msg: WriterMsg) {
    // Cannot be full for a permit-holding message: each holds one of `inflight` permits
    // and the channel has `inflight + 1` slots beyond the confirm-request room. It can be
    // closed only if the writer died, in which case the connection is gone and the answer
    // has no one to go to.
    if tx.try_send(msg).is_err() {
        debug!("answer dropped: connection writer is gone");
    }
}

/// Reads a frame header; `Ok(false)` on a clean end of stream before any header byte.
async fn read_header(
    recv: &mut RecvStream,
    header: &mut [u8; wire::FRAME_HEADER_LEN],
) -> Result<bool, ConnError> {
    match recv.read_exact(header).await {
        Ok(()) => Ok(true),
        Err(quinn::ReadExactError::FinishedEarly(0)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads and drops an oversized body, returning its batch seq when present.
async fn discard_body(recv: &mut RecvStream, len: u32) -> Result<Option<u64>, ConnError> {
    let mut left = len as usize;
    let mut seq = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut first = true;
    while left > 0 {
        let n = left.min(buf.len());
        recv.read_exact(&mut buf[..n]).await?;
        if first && n >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[..8]);
            seq = Some(u64::from_be_bytes(b));
        }
        first = false;
        left -= n;
    }
    Ok(seq)
}
