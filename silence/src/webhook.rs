//! The optional silence webhook: each scan's events POSTed as one JSON array.
//!
//! Contract:
//! - HTTP/1.1 through `ureq` (a maintained blocking client; the webhook has its own thread
//!   and silence has no async runtime). URLs `http://host[:port][/path]` or
//!   `https://host[:port][/path]`; HTTPS is TLS through rustls (TLS 1.2/1.3, the ring
//!   provider the QUIC endpoint also uses), verified against the system's roots or, when
//!   `silence.webhook_ca_path` is set, only against the CAs in that PEM file. Prefer HTTPS:
//!   events name devices, which is personal data.
//! - One body per scan that produced events: the JSON array of the scan's
//!   `SilenceEvent::to_json_line` objects, in scan order (`Content-Type: application/json`).
//! - Runs on its own thread behind a queue of at most `queue_max` bodies; the scanner never
//!   waits for the receiver. A body that finds the queue full is dropped and its events counted
//!   ([`WebhookStats::dropped_queue_full_events`]).
//! - Each body is attempted up to `attempts_max` times. Any 2xx answer delivers it; a transport
//!   error, a timeout, 408, 429 or 5xx is retried after an exponential backoff with jitter
//!   ([`backoff_ms`]); any other status is final. A body that is not delivered has its events
//!   counted ([`WebhookStats::dropped_failed_events`]).
//! - Every request has one deadline (`timeout_ms`) covering resolve, connect, TLS, send and
//!   the answer's head (ureq's global timeout). Backoff delays are measured on the [`Clock`]
//!   (its `monotonic_us`), never on `Instant` directly.
//! - On stop the body in flight finishes its current attempt; bodies still queued are counted
//!   as dropped (the events are in `silence.jsonl` and the `events` table regardless).
//!
//! Never: blocks the scanner, retries forever, follows redirects, uses a proxy from the
//! environment, sends a body over TLS that did not verify.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use storage::wait::{Recv, deadline_after_ms, recv_before};
use sys::Clock;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (default port 80).
    Http,
    /// HTTP over TLS (default port 443).
    Https,
}

/// A webhook URL that [`WebhookUrl::parse`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 or 443 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a webhook URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookUrlError {
    /// Neither `http://…` nor `https://…`.
    #[error("webhook URL {url:?} must start with http:// or https://")]
    Scheme {
        /// The URL.
        url: String,
    },
    /// No host.
    #[error("webhook URL {url:?} has no host")]
    Host {
        /// The URL.
        url: String,
    },
    /// The port is not a number in 1..=65535.
    #[error("webhook URL {url:?} has an invalid port")]
    Port {
        /// The URL.
        url: String,
    },
    /// User info, a fragment, spaces or control characters.
    #[error("webhook URL {url:?} contains {what}, which is not supported")]
    Unsupported {
        /// The URL.
        url: String,
        /// What was found.
        what: &'static str,
    },
}

impl WebhookUrl {
    /// Parses `http[s]://host[:port][/path]`.
    ///
    /// # Errors
    /// [`WebhookUrlError`] saying what is wrong.
    pub fn parse(url: &str) -> Result<Self, WebhookUrlError> {
        let err_url = || url.to_string();
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(WebhookUrlError::Unsupported {
                url: err_url(),
                what: "spaces or control characters",
            });
        }
        let (scheme, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (Scheme::Http, rest),
            (None, Some(rest)) => (Scheme::Https, rest),
            (None, None) => return Err(WebhookUrlError::Scheme { url: err_url() }),
        };
        if rest.contains('#') {
            return Err(WebhookUrlError::Unsupported {
                url: err_url(),
                what: "a fragment",
            });
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(WebhookUrlError::Unsupported {
                url: err_url(),
                what: "user info",
            });
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| WebhookUrlError::Host { url: err_url() })?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(WebhookUrlError::Host { url: err_url() });
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| WebhookUrlError::Port { url: err_url() })?,
        };
        Ok(Self {
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The URL again, normalised: explicit port, IPv6 hosts in brackets.
    pub fn as_uri(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Settings of the webhook thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: WebhookUrl,
    /// Bodies (one per scan with events) queued at most.
    pub queue_max: usize,
    /// Attempts per body, >= 1.
    pub attempts_max: u32,
    /// Deadline of one request: connect, send, status line.
    pub timeout_ms: u64,
    /// Delay before the first retry; doubles per retry.
    pub backoff_ms: u64,
    /// Largest delay between retries.
    pub backoff_max_ms: u64,
    /// PEM file of the CAs an `https` receiver must chain to; `None`: the system's roots.
    pub ca_path: Option<PathBuf>,
}

/// Webhook counters (monotonic).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events delivered (2xx).
    pub delivered_events: AtomicU64,
    /// Bodies delivered.
    pub delivered_bodies: AtomicU64,
    /// HTTP requests attempted.
    pub attempts: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped_queue_full_events: AtomicU64,
    /// Events dropped because every attempt failed, a final status came back, or the server
    /// stopped while they were queued.
    pub dropped_failed_events: AtomicU64,
}

/// The delay before retry number `retry` (1 = after the first failed attempt): the
/// exponential step `min(base_ms * 2^(retry-1), max_ms)`, of which the upper half is replaced
/// by jitter drawn from `random` ("equal jitter": the delay is in `[step/2, step]`). Pure.
pub fn backoff_ms(retry: u32, base_ms: u64, max_ms: u64, random: u64) -> u64 {
    let shift = retry.saturating_sub(1).min(63);
    let step = base_ms.saturating_mul(1u64 << shift).min(max_ms);
    let half = step / 2;
    half + random % (step - half + 1)
}

/// The JSON array body of `lines` (each one JSON object).
pub fn json_array<S: AsRef<str>>(lines: &[S]) -> String {
    let len: usize = lines.iter().map(|l| l.as_ref().len() + 1).sum();
    let mut body = String::with_capacity(len + 2);
    body.push('[');
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(l.as_ref());
    }
    body.push(']');
    body
}

/// One POST failed before a status came back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// The host did not resolve.
    #[error("resolving {host}: no address")]
    Resolve {
        /// The host.
        host: String,
    },
    /// Connecting, sending or reading failed.
    #[error("webhook request: {0}")]
    Io(#[from] std::io::Error),
    /// The deadline passed.
    #[error("webhook request timed out after {timeout_ms} ms")]
    Timeout {
        /// The deadline.
        timeout_ms: u64,
    },
    /// The TLS handshake failed (an untrusted or wrong certificate, no common version).
    #[error("webhook TLS: {0}")]
    Tls(String),
    /// Anything else the HTTP client refused (a malformed answer, a redirect).
    #[error("webhook HTTP: {0}")]
    Http(#[source] ureq::Error),
}

/// Why the webhook's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The CA file cannot be read.
    #[error("silence.webhook_ca_path {path}: {source}")]
    CaRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate (or an unparsable one).
    #[error("silence.webhook_ca_path {path}: no PEM certificate in it")]
    CaEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The system has no usable root certificate (and no CA file is configured).
    #[error("no system root certificates for the https webhook; set silence.webhook_ca_path")]
    NoSystemRoots,
}

/// Why a webhook could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Its HTTP client cannot be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Its thread cannot be spawned.
    #[error("spawning the webhook thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The HTTP client of a webhook: no redirects, no proxy, statuses returned (not errors),
/// TLS verified against `cfg.ca_path`'s CAs or the system's roots.
///
/// # Errors
/// [`ClientError`]: the CA file is unreadable or empty, or there are no system roots.
pub fn client(cfg: &WebhookConfig) -> Result<ureq::Agent, ClientError> {
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
    let roots: Vec<Certificate<'static>> = match &cfg.ca_path {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
                path: path.clone(),
                source,
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(ClientError::CaEmpty { path: path.clone() });
            }
            certs
        }
        None if cfg.url.scheme == Scheme::Http => Vec::new(),
        None => {
            let found = rustls_native_certs::load_native_certs();
            let certs: Vec<_> = found
                .certs
                .iter()
                .map(|der| Certificate::from_der(der.as_ref()).to_owned())
                .collect();
            if certs.is_empty() {
                return Err(ClientError::NoSystemRoots);
            }
            certs
        }
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .max_idle_connections(0)
        .user_agent(format!("hexflow/{}", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// Sends one POST of `body` to `url` through `agent` and returns the status code. The
/// whole exchange (resolve, connect, TLS, send, the answer's head) shares one deadline,
/// `timeout_ms`.
///
/// # Errors
/// [`PostError`].
pub fn post(
    agent: &ureq::Agent,
    url: &WebhookUrl,
    body: &str,
    timeout_ms: u64,
) -> Result<u16, PostError> {
    let answer = agent
        .post(url.as_uri())
        .config()
        .timeout_global(Some(Duration::from_millis(timeout_ms)))
        .build()
        .header("Content-Type", "application/json")
        .send(body.as_bytes());
    match answer {
        Ok(response) => Ok(response.status().as_u16()),
        Err(ureq::Error::Timeout(_)) => Err(PostError::Timeout { timeout_ms }),
        Err(ureq::Error::Io(e)) => Err(PostError::Io(e)),
        Err(ureq::Error::HostNotFound) => Err(PostError::Resolve {
            host: url.host.clone(),
        }),
        Err(ureq::Error::Tls(what)) => Err(PostError::Tls(what.to_string())),
        Err(ureq::Error::Rustls(e)) => Err(PostError::Tls(e.to_string())),
        Err(e) => Err(PostError::Http(e)),
    }
}

/// Whether a status is worth retrying: 408, 429, 5xx. Pure.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

struct Body {
    json: String,
    events: u64,
}

/// The running webhook thread.
#[derive(Debug)]
pub struct Webhook {
    tx: Option<Sender<Body>>,
    stop_tx: Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<WebhookStats>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("events", &self.events)
            .finish()
    }
}

impl Webhook {
    /// Builds the HTTP client ([`client`]) and starts the thread; it measures backoff
    /// delays on `clock`.
    ///
    /// # Errors
    /// [`StartError`]: the client cannot be built, or the thread cannot be spawned.
    pub fn start(cfg: WebhookConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let agent = client(&cfg)?;
        let (tx, rx) = crossbeam_channel::bounded::<Body>(cfg.queue_max.max(1));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let stats = Arc::new(WebhookStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("hexflow-webhook".into())
            .spawn(move || {
                let poster = Poster {
                    cfg,
                    agent,
                    stop_rx,
                    stats: thread_stats,
                    clock,
                };
                poster.run(&rx);
            })
            .map_err(StartError::Spawn)?;
        Ok(Self {
            tx: Some(tx),
            stop_tx,
            thread: Some(thread),
            stats,
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Queues one body of `events` events without waiting; returns `false` (and counts the
    /// events as dropped) when the queue is full.
    pub fn enqueue(&self, json: String, events: usize) -> bool {
        let events = events as u64;
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(Body { json, events }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats
                    .dropped_queue_full_events
                    .fetch_add(events, Ordering::Relaxed);
                tracing::warn!(
                    target: "hexflow::silence",
                    events,
                    "webhook queue full; events not posted"
                );
                false
            }
        }
    }

    /// Stops the thread: the attempt in flight finishes, queued bodies are dropped (counted).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop_tx.try_send(());
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The webhook thread's state.
struct Poster {
    cfg: WebhookConfig,
    agent: ureq::Agent,
    stop_rx: Receiver<()>,
    stats: Arc<WebhookStats>,
    clock: Arc<dyn Clock>,
}

/// How one body's attempts ended.
struct Delivery {
    delivered: bool,
    /// The stop signal arrived during a backoff.
    stopped: bool,
}

impl Poster {
    /// Posts queued bodies until stopped (stop wins over queued bodies) or until the queue's
    /// sender is gone.
    fn run(&self, rx: &Receiver<Body>) {
        use std::hash::{BuildHasher, Hasher};
        let mut random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        loop {
            // Stop wins over queued bodies (select! would pick at random when both are ready).
            if self.stop_rx.try_recv().is_ok() {
                self.drop_rest(rx);
                return;
            }
            let body = crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(b) => b,
                    Err(_) => return,
                },
                recv(self.stop_rx) -> _ => {
                    self.drop_rest(rx);
                    return;
                }
            };
            let d = self.deliver(&body, &mut random);
            self.account(&body, d.delivered);
            if d.stopped {
                self.drop_rest(rx);
                return;
            }
        }
    }

    /// Attempts `body` up to `attempts_max` times, backing off between retryable failures.
    fn deliver(&self, body: &Body, random: &mut u64) -> Delivery {
        let attempts_max = self.cfg.attempts_max.max(1);
        for attempt in 1..=attempts_max {
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            let outcome = post(
                &self.agent,
                &self.cfg.url,
                &body.json,
                self.cfg.timeout_ms.max(1),
            );
            let retry = match &outcome {
                Ok(status) if (200..300).contains(status) => {
                    return Delivery {
                        delivered: true,
                        stopped: false,
                    };
                }
                Ok(status) => retryable_status(*status),
                Err(_) => true,
            };
            let status = outcome.as_ref().ok().copied();
            let error = outcome.as_ref().err().map(ToString::to_string);
            tracing::warn!(
                target: "hexflow::silence",
                attempt,
                attempts_max,
                ?status,
                ?error,
                "webhook POST failed"
            );
            if !retry || attempt == attempts_max {
                break;
            }
            // xorshift64: jitter only, not security.
            *random ^= *random << 13;
            *random ^= *random >> 7;
            *random ^= *random << 17;
            let delay = backoff_ms(
                attempt,
                self.cfg.backoff_ms,
                self.cfg.backoff_max_ms,
                *random,
            );
            let deadline_us = deadline_after_ms(&*self.clock, delay);
            match recv_before(&self.stop_rx, &*self.clock, deadline_us) {
                Recv::Deadline => {}
                Recv::Msg(()) | Recv::Disconnected => {
                    return Delivery {
                        delivered: false,
                        stopped: true,
                    };
                }
            }
        }
        Delivery {
            delivered: false,
            stopped: false,
        }
    }

    /// Counts `body`'s events as delivered or dropped.
    fn account(&self, body: &Body, delivered: bool) {
        if delivered {
            self.stats
                .delivered_events
                .fetch_add(body.events, Ordering::Relaxed);
            self.stats.delivered_bodies.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats
                .dropped_failed_events
                .fetch_add(body.events, Ordering::Relaxed);
            tracing::error!(
                target: "hexflow::silence",
                events = body.events,
                "webhook gave up; events not posted"
            );
        }
    }

    /// Counts every queued body as dropped (at stop).
    fn drop_rest(&self, rx: &Receiver<Body>) {
        for b in rx.try_iter() {
            self.stats
                .dropped_failed_events
                .fetch_add(b.events, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("http://127.0.0.1:8080/hooks/silence?x=1").expect("ok");
        assert_eq!(
            u,
            WebhookUrl {
                scheme: Scheme::Http,
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hooks/silence?x=1".into()
            }
        );
        assert_eq!(u.as_uri(), "http://127.0.0.1:8080/hooks/silence?x=1");
        let u = WebhookUrl::parse("http://example.invalid").expect("ok");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = WebhookUrl::parse("https://example.invalid").expect("ok");
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Https, 443, "/")
        );
        assert_eq!(u.as_uri(), "https://example.invalid:443/");
        let u = WebhookUrl::parse("https://[::1]:9/x").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.as_uri(), "https://[::1]:9/x");
        assert_eq!(
            WebhookUrl::parse("http://h?q").expect("ok").path,
            "/?q".to_string()
        );
        for bad in [
            "ftp://h/",
            "h:80/",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:70000/",
            "http://u@h/",
            "http://h/a b",
            "http://h/#f",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        assert_eq!(backoff_ms(1, 100, 10_000, 0), 50);
        assert_eq!(backoff_ms(1, 100, 10_000, 50), 100);
        assert_eq!(backoff_ms(1, 100, 10_000, 51), 50);
        assert_eq!(backoff_ms(3, 100, 10_000, 0), 200);
        assert_eq!(backoff_ms(3, 100, 10_000, 200), 400);
        // Capped, and no overflow at absurd retry numbers.
        assert_eq!(backoff_ms(40, 100, 1_000, 500), 1_000);
        assert_eq!(
            backoff_ms(u32::MAX, u64::MAX, u64::MAX, 7),
            u64::MAX / 2 + 7
        );
        for r in 0..1000u64 {
            let d = backoff_ms(2, 100, 10_000, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!((100..=200).contains(&d), "{d}");
        }
    }

    #[test]
    fn retryable_statuses() {
        assert!(retryable_status(503) && retryable_status(429) && retryable_status(408));
        assert!(!retryable_status(404) && !retryable_status(400));
    }

    #[test]
    fn json_arrays() {
        assert_eq!(json_array::<&str>(&[]), "[]");
        assert_eq!(
            json_array(&[r#"{"a":1}"#, r#"{"b":2}"#]),
            r#"[{"a":1},{"b":2}]"#
        );
    }
}
