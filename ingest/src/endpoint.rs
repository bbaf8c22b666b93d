//! The QUIC endpoint (feature `server`): the quinn driver of [`crate::proto::server`].
//! It accepts connections, pumps each connection's stream through a
//! [`ServerSession`](crate::proto::server::ServerSession), hands batches to a
//! [`BatchSink`] and feeds the outcomes back, tells an [`Activity`] what devices do, and
//! raises confirm-location requests ([`Confirmer`]).
//!
//! # Contract
//! * Every protocol rule lives in the session (`crate::proto`); this module only moves
//!   bytes, timers and port calls. One task per connection selects over the stream, the
//!   sink's outcomes, confirm requests, the session's deadline and shutdown.
//! * A connection carries exactly one device: the first frame must be `HELLO` with a token
//!   that verifies ([`crate::auth`]); every batch on that connection is stored under that
//!   device id.
//! * One session per device: when a connection authenticates as a device that already has
//!   one, the older session stops reading, acks what it has in flight and closes with
//!   `SESSION_REPLACED` (the registry below names the older connection).
//! * Every `BATCH` frame gets exactly one `ACK`; a success ack is written only after the
//!   sink reported the batch durable. A bad batch gets its own status and the connection
//!   stays open; only protocol violations close it, with a `CLOSE` frame naming the reason.
//! * Admission before any handshake work: after `connections_max`, the pure
//!   [`Admission`] core decides each Initial (accept, QUIC Retry for an unvalidated address
//!   under load, or refuse: handshake budget, per-source connections and handshake rate,
//!   login back-off after failed HELLOs); the accept loop only carries the decision out.
//! * Everything is bounded: connections (`connections_max`, each slot owned by a guard that
//!   returns it on drop), pipelined batches per connection (`inflight_batches_max`: the
//!   driver stops reading the stream while the session says so, and QUIC flow control holds
//!   the device back), frame sizes, QUIC windows (a small one before `WELCOME`), the
//!   handshake, HELLO, frame-body and idle deadlines. The
//!   driver never reads while bytes it owes the device are unwritten, so a device that does
//!   not read its acks stalls only itself.
//! * The endpoint never blocks on storage: [`BatchSink::submit`] must not block; a full
//!   sink answers `OVERLOADED` with a retry-after.
//! * Confirm-location (`docs/PROTOCOL.md` §9): at most one outstanding request per device
//!   (and at most `confirm_pending_max` in total) in a lock-free registry that also maps
//!   connected devices to their connection. An outstanding request is written at once if
//!   the device is connected and again right after every later `WELCOME` until answered or
//!   cancelled; only a verified answer reaches [`Activity::on_confirm`], exactly once.
//! * Closing is polite: the endpoint finishes its stream and waits (at most
//!   `close_linger_ms`) for the device to receive it before closing the connection.
//!
//! The endpoint reads time only through the [`Clock`] it is given (wall time for the
//! protocol, monotonic time for the deadlines), so tests control it.

mod admission;
mod config;
mod confirmer;
mod conn;
mod gate;
mod ports;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fix::DeviceId;
use quinn::VarInt;
use sys::Clock;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use self::admission::{Admission, Decision, LoginFailed, Refusal, Source};
pub use self::config::{CONNECTIONS_LIMIT, EndpointConfig};
pub use self::confirmer::{ConfirmDelivery, Confirmer, OutstandingConfirm};
pub use self::ports::{AcceptedBatch, Activity, BatchSink, NoActivity, SinkCallback, SinkOutcome};
pub use self::stats::EndpointStats;
pub use self::tls::server_config;
pub use crate::proto::confirm::ConfirmRequestError;
pub use crate::proto::server::SessionConfig;

use self::confirmer::ConnLink;
use self::gate::{Admit, Gate};
use self::stats::ConnectionSlot;
use crate::auth::Authenticator;
use crate::proto::confirm::Registry;
use crate::proto::server::ServerContext;
use crate::wire::Status;

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

/// Shared state of one running endpoint.
struct Shared {
    cfg: EndpointConfig,
    /// What every connection's session is built from.
    session: Arc<ServerContext>,
    registry: Arc<Registry<ConnLink>>,
    sink: Arc<dyn BatchSink>,
    activity: Arc<dyn Activity>,
    clock: Arc<dyn Clock>,
    stats: Arc<EndpointStats>,
    /// Admission: handshake budget, Retry, per-source limits, login back-off.
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    /// Source of connection ids (registry entries name the connection that owns them).
    next_conn_id: AtomicU64,
}

/// A running QUIC endpoint.
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
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
    /// Verifies device tokens (key ring, revocations) and gives confirm keys.
    pub auth: Arc<Authenticator>,
    /// Where batches go.
    pub sink: Arc<dyn BatchSink>,
    /// Who hears about device activity.
    pub activity: Arc<dyn Activity>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl Endpoint {
    /// Binds and starts accepting connections on the current tokio runtime.
    ///
    /// # Errors
    /// [`EndpointError::Bind`] when the socket cannot be bound;
    /// [`EndpointError::InvalidSetting`] when `confirm_pending_max` is 0.
    pub fn start(parts: EndpointParts) -> Result<Self, EndpointError> {
        if parts.cfg.confirm_pending_max == 0 {
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
        // Request ids seeded from the clock: ids from before a restart are very unlikely to
        // match new ones.
        let seed_ms = u64::try_from(parts.clock.now_ms()).unwrap_or(0);
        let registry = Arc::new(Registry::new(parts.cfg.confirm_pending_max, seed_ms << 16));
        let session = Arc::new(ServerContext {
            cfg: parts.cfg.session,
            auth: parts.auth,
            confirms: registry.clone(),
        });
        let stats = Arc::new(EndpointStats::default());
        let gate = Gate::new(&parts.cfg, stats.clone(), parts.clock.clone());
        let shared = Arc::new(Shared {
            cfg: parts.cfg,
            session,
            registry,
            sink: parts.sink,
            activity: parts.activity,
            clock: parts.clock,
            stats,
            gate,
            shutdown: CancellationToken::new(),
            next_conn_id: AtomicU64::new(1),
        });
        let connections = tokio_util::task::TaskTracker::new();
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            connections.clone(),
        ));
        Ok(Self {
            endpoint,
            shared,
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
        self.shared.stats.clone()
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
    /// [`ConfirmRequestError`]: too many outstanding, reason too long, shutting down.
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
        self.shared.registry.pending()
    }

    /// Graceful shutdown: stop accepting, let every connection finish the batches it has in
    /// flight (each gets its ack), send `CLOSE(SHUTTING_DOWN)`, then close the endpoint.
    /// Waits at most `grace` for connections to finish.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future midway leaves connections to the idle timeout.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.shutdown.cancel();
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

/// Admits or turns away each Initial: `connections_max` first (a slot held for the
/// connection's life), then the admission core ([`Admission`]), which may ask for a Retry.
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
        let stats = &shared.stats;
        let remote = incoming.remote_address();
        let Some(slot) = ConnectionSlot::try_acquire(stats, shared.cfg.connections_max) else {
            stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            debug!(%remote, "connections_max reached, refusing");
            incoming.refuse();
            continue;
        };
        match shared
            .gate
            .decide(remote.ip(), incoming.remote_address_validated())
        {
            Admit::Accept(admitted) => {
                stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                tracker.spawn(conn::serve(incoming, slot, admitted, shared.clone()));
            }
            Admit::Retry => match incoming.retry() {
                Ok(()) => {
                    stats.retries_sent.fetch_add(1, Ordering::Relaxed);
                }
                // Only an Initial that already carries a Retry token cannot be retried, and
                // the core asks for a Retry only for addresses not validated.
                Err(e) => e.into_incoming().refuse(),
            },
            Admit::Refuse(reason) => {
                debug!(%remote, ?reason, "connection refused by admission");
                incoming.refuse();
            }
        }
    }
}
