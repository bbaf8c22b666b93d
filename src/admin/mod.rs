//! The admin endpoint: HTTP/1.1 for operators (hyper), bound to loopback by default.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text: every metric of [`metrics::METRICS`] |
//! | `GET /devices/<id>` | JSON: one device's silence state (last fix, last contact, level) |
//! | `GET /healthz` | `ok`, or 503 once the WAL has failed (never needs a token) |
//!
//! # Contract
//! * Read-only: nothing here changes server state.
//! * Concurrent and bounded: every connection is its own task, at most
//!   `admin.connections_max` at once (more are closed at accept); the request head must
//!   arrive within `admin.request_timeout_ms` and fit 8 KiB; each answer is produced and
//!   written within that deadline; a connection lives at most [`CONNECTION_LIFETIME_MS`].
//!   A slow client therefore holds one slot for a bounded time and never delays `/healthz`
//!   for others.
//! * Private: it reveals device activity (personal data), so it listens on loopback unless
//!   configured otherwise, and with `admin.token_path` set every route but `/healthz`
//!   needs `Authorization: Bearer <token>` (compared in constant time).
//! * Routing (`route`) is a pure function of the request and the sources, tested without
//!   sockets.

mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use ingest::endpoint::EndpointStats;
use silence::{DeviceState, SilenceTable};

pub use metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, METRICS};

/// Largest request head read (request line + headers); hyper's smallest buffer.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Longest one connection may stay open, whatever it does.
pub const CONNECTION_LIFETIME_MS: u64 = 60_000;

/// `[admin]`: the operator endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve `/metrics`, `/healthz` and `/devices/<id>` over HTTP.
    pub enabled: bool,
    /// Address of the admin endpoint; loopback by default (it reveals device activity).
    pub listen: SocketAddr,
    /// File holding the bearer token every route but `/healthz` requires; empty: no token.
    pub token_path: PathBuf,
    /// Admin connections open at once; more are closed when accepted. `1..=10000`.
    pub connections_max: usize,
    /// Deadline for a request head to arrive and for its answer to be written.
    /// `100..=60000`.
    pub request_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token_path: PathBuf::new(),
            connections_max: 64,
            request_timeout_ms: 2_000,
        }
    }
}

/// Why the admin settings or the token were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A setting is out of its bounds (the key named `admin.<key>`).
    #[error(transparent)]
    OutOfRange(#[from] sys::bounds::OutOfRange),
    /// The token file could not be read.
    #[error("admin.token_path {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The token file is empty (or whitespace only).
    #[error("admin.token_path {path}: the token file is empty")]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// Binding the listener failed.
    #[error("admin endpoint {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

impl AdminConfig {
    /// Checks the bounds documented on the fields.
    ///
    /// # Errors
    /// [`AdminError::OutOfRange`] for the first key out of bounds.
    pub fn validate(&self) -> Result<(), AdminError> {
        sys::bounds::check_all(&[
            (
                "admin.connections_max",
                self.connections_max as i128,
                1,
                10_000,
            ),
            (
                "admin.request_timeout_ms",
                self.request_timeout_ms.into(),
                100,
                60_000,
            ),
        ])?;
        Ok(())
    }

    /// Reads the bearer token (`None` when `token_path` is empty).
    ///
    /// # Errors
    /// [`AdminError::Token`] or [`AdminError::EmptyToken`].
    pub fn token(&self, fs: &dyn sys::fs::Fs) -> Result<Option<String>, AdminError> {
        if self.token_path.as_os_str().is_empty() {
            return Ok(None);
        }
        let bytes = fs
            .read(&self.token_path)
            .map_err(|source| AdminError::Token {
                path: self.token_path.clone(),
                source,
            })?;
        let token = String::from_utf8_lossy(&bytes).trim().to_string();
        if token.is_empty() {
            return Err(AdminError::EmptyToken {
                path: self.token_path.clone(),
            });
        }
        Ok(Some(token))
    }
}

/// Explains one device's silence state as a JSON object; `None` when untracked.
pub type Explainer = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// What the admin endpoint reads from.
#[derive(Clone)]
pub struct Sources {
    /// Endpoint counters.
    pub endpoint: Arc<EndpointStats>,
    /// Storage handle (for its counters).
    pub storage: storage::Storage,
    /// The silence table.
    pub silence: Arc<SilenceTable>,
    /// Policy-aware explanation of one device (used by `/devices/<id>` when present).
    pub explain: Option<Explainer>,
    /// Days of coverage left per calendar in use, read at each scrape (the
    /// `silence_calendar_coverage_days` gauge; none when absent).
    pub calendar_days_left: Option<CalendarDaysLeft>,
}

/// Days of coverage left per calendar in use, as of now: `(calendar, days)`.
pub type CalendarDaysLeft = Arc<dyn Fn() -> Vec<(String, i64)> + Send + Sync>;

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// A response: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
    fn json(body: String) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body,
        }
    }
}

/// Everything a request is answered from.
struct State {
    sources: Sources,
    registry: prometheus_client::registry::Registry,
    token: Option<String>,
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Binds `cfg.listen` and serves on the current tokio runtime.
    ///
    /// # Errors
    /// [`AdminError`]: settings out of range, unreadable token, bind failure.
    pub fn start(cfg: &AdminConfig, sources: Sources) -> Result<Self, AdminError> {
        cfg.validate()?;
        let token = cfg.token(&sys::fs::RealFs)?;
        let bind = |source| AdminError::Bind {
            addr: cfg.listen,
            source,
        };
        let std_listener = std::net::TcpListener::bind(cfg.listen).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let addr = std_listener.local_addr().map_err(bind)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind)?;
        let state = Arc::new(State {
            registry: metrics::registry(sources.clone()),
            sources,
            token,
        });
        let stop = CancellationToken::new();
        let limits = Limits {
            slots: Arc::new(Semaphore::new(cfg.connections_max)),
            timeout: Duration::from_millis(cfg.request_timeout_ms),
        };
        let task = tokio::spawn(accept_loop(listener, state, limits, stop.clone()));
        Ok(Self { addr, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; connections still open end within their deadline.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct Limits {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    limits: Limits,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        // No free slot: close at once rather than queue (a flood costs an accept each).
        let Ok(slot) = Arc::clone(&limits.slots).try_acquire_owned() else {
            tracing::debug!(%peer, "admin connections_max reached; closing");
            continue;
        };
        let state = Arc::clone(&state);
        let timeout = limits.timeout;
        tokio::spawn(async move {
            serve_connection(stream, state, timeout).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<State>, timeout: Duration) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(answer(&req, &state, timeout).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(REQUEST_BYTES_MAX)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let lifetime = Duration::from_millis(CONNECTION_LIFETIME_MS);
    match tokio::time::timeout(lifetime, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "admin connection ended"),
        Err(_) => tracing::debug!("admin connection closed at its lifetime"),
    }
}

async fn answer(
    req: &Request<Incoming>,
    state: &State,
    timeout: Duration,
) -> hyper::Response<Full<Bytes>> {
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Answers are computed synchronously from counters; the deadline guards the rare slow
    // path (a policy explanation) so a stuck answer never pins a slot.
    let work = async { route(req.method(), req.uri().path(), authorization, state) };
    let r = tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Response::text(503, "deadline exceeded\n"));
    let mut resp = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    if r.status == 401 {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// True when `header` is `Bearer <token>`; compares in time independent of where they differ.
fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers one request. Pure apart from reading counters.
fn route(method: &Method, path: &str, authorization: Option<&str>, state: &State) -> Response {
    if method != Method::GET {
        return Response::text(405, "GET only\n");
    }
    if path == "/healthz" {
        return if state.sources.storage.stats().wal_failed {
            Response::text(503, "wal failed\n")
        } else {
            Response::text(200, "ok\n")
        };
    }
    if let Some(token) = &state.token {
        if !bearer_matches(authorization, token) {
            return Response::text(401, "bearer token required (admin.token_path)\n");
        }
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: metrics::render(&state.registry),
        },
        p => match p.strip_prefix("/devices/").map(str::parse::<u64>) {
            Some(Ok(id)) => device(id, &state.sources),
            Some(Err(_)) => Response::text(400, "device id must be a decimal integer\n"),
            None => Response::text(404, "routes: /metrics /healthz /devices/<id>\n"),
        },
    }
}

fn device(id: u64, sources: &Sources) -> Response {
    if let Some(json) = sources.explain.as_ref().and_then(|explain| explain(id)) {
        return Response::json(json + "\n");
    }
    match sources.silence.get(id) {
        Some(state) => Response::json(device_json(&state)),
        None => Response::text(404, format!("device {id} is not tracked\n")),
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// One device's state as a JSON object (times in Unix seconds).
pub fn device_json(s: &DeviceState) -> String {
    format!(
        "{{\"device_id\":{},\"last_fix_s\":{},\"last_contact_s\":{},\"level\":\"{}\",\"silent_since_s\":{}}}\n",
        s.device_id,
        opt(s.last_fix_s),
        opt(s.last_contact_s),
        s.level.as_str(),
        opt(s.silent_since_s)
    )
}

#[cfg(test)]
mod tests;
