//! The admin endpoint: a tiny HTTP/1.1 server for operators, bound to loopback by default.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text format: endpoint, storage and silence counters |
//! | `GET /devices/<id>` | JSON: one device's silence state (last fix, last contact, level) |
//! | `GET /healthz` | `ok`, or 503 once the WAL has failed |
//!
//! # Contract
//! * Read-only: nothing here changes server state.
//! * Bounded: one request at a time on one thread, request head at most
//!   [`REQUEST_BYTES_MAX`], a read timeout of [`READ_TIMEOUT_MS`]; anything else is refused
//!   with 400/404/405. It is an operator tool, not a public API: keep it on loopback (or
//!   behind a proxy) — it reveals device activity, which is personal data.
//! * Routing ([`route`]) is a pure function of the request line and a state snapshot, tested
//!   without sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ingest::endpoint::EndpointStats;
use silence::{DeviceState, SilenceTable};

/// Largest request head read (request line + headers).
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Per-connection read/write timeout.
pub const READ_TIMEOUT_MS: u64 = 2_000;

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
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Admin {
    /// Binds `listen` and serves on a dedicated thread.
    ///
    /// # Errors
    /// The OS error when binding fails.
    pub fn start(listen: SocketAddr, sources: Sources) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("hexflow-admin".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        if let Ok(stream) = conn {
                            if let Err(e) = serve(stream, &sources) {
                                tracing::debug!(error = %e, "admin request failed");
                            }
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread (wakes it with a connection to itself).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let timeout = Some(Duration::from_millis(READ_TIMEOUT_MS));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let mut buf = vec![0u8; REQUEST_BYTES_MAX];
    let mut len = 0;
    // Read until the end of the head, the limit, or EOF.
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = &buf[..len];
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let response = match std::str::from_utf8(&head[..line_end]) {
        Ok(line) => route(line, sources),
        Err(_) => Response::text(400, "request line is not UTF-8\n"),
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    );
    stream.write_all(out.as_bytes())
}

/// Answers one request line (`GET /path HTTP/1.1`). Pure apart from reading counters.
pub fn route(request_line: &str, sources: &Sources) -> Response {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "HTTP/1.x only\n");
    }
    if method != "GET" {
        return Response::text(405, "GET only\n");
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: render_metrics(sources),
        },
        "/healthz" => {
            if sources.storage.stats().wal_failed {
                Response::text(503, "wal failed\n")
            } else {
                Response::text(200, "ok\n")
            }
        }
        p => match p.strip_prefix("/devices/").map(str::parse::<u64>) {
            Some(Ok(id)) => match sources.explain.as_ref().and_then(|explain| explain(id)) {
                Some(json) => Response {
                    status: 200,
                    content_type: "application/json",
                    body: json + "\n",
                },
                None => device_state(id, sources),
            },
            Some(Err(_)) => Response::text(400, "device id must be a decimal integer\n"),
            None => Response::text(404, "routes: /metrics /healthz /devices/<id>\n"),
        },
    }
}

fn device_state(id: u64, sources: &Sources) -> Response {
    match sources.silence.get(id) {
        Some(state) => Response {
            status: 200,
            content_type: "application/json",
            body: device_json(&state),
        },
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

/// Prometheus text exposition of every counter.
pub fn render_metrics(sources: &Sources) -> String {
    use std::fmt::Write as _;
    let e = &sources.endpoint;
    let s = sources.storage.stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP hexflow_{name} {help}\n# TYPE hexflow_{name} {kind}"
        );
        let _ = writeln!(out, "hexflow_{name} {value}");
    };
    let open = e.connections_open.load(Ordering::Relaxed) as u64;
    metric(
        "connections_open",
        "gauge",
        "QUIC connections open now.",
        open,
    );
    metric(
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        get(&e.connections_accepted),
    );
    metric(
        "connections_refused_total",
        "counter",
        "Connections refused at connections_max.",
        get(&e.connections_refused),
    );
    metric(
        "auth_failures_total",
        "counter",
        "Connections whose token did not verify.",
        get(&e.auth_failures),
    );
    metric(
        "batches_ok_total",
        "counter",
        "Batches acked OK.",
        get(&e.batches_ok),
    );
    metric(
        "batches_duplicate_total",
        "counter",
        "Batches acked DUPLICATE.",
        get(&e.batches_duplicate),
    );
    metric(
        "batches_rejected_total",
        "counter",
        "Batches refused with any other status.",
        get(&e.batches_rejected),
    );
    metric(
        "fixes_committed_total",
        "counter",
        "Fixes made durable in the WAL.",
        s.fixes_committed,
    );
    metric(
        "wal_fsyncs_total",
        "counter",
        "WAL group commits (fsyncs).",
        s.fsyncs,
    );
    metric(
        "wal_bytes_written_total",
        "counter",
        "Bytes appended to the WAL.",
        s.wal_bytes_written,
    );
    metric(
        "storage_overloaded_total",
        "counter",
        "Batches refused because the WAL queue was full.",
        s.rejected_overloaded,
    );
    metric(
        "storage_queue_depth",
        "gauge",
        "Batches waiting for the WAL.",
        s.queue_depth as u64,
    );
    metric(
        "writer_queue_depth",
        "gauge",
        "Durable batches waiting for the Parquet writer.",
        s.writer_queue_depth as u64,
    );
    metric(
        "parquet_files_written_total",
        "counter",
        "Parquet files published.",
        s.files_written,
    );
    metric(
        "parquet_rows_written_total",
        "counter",
        "Rows published to Parquet.",
        s.rows_written,
    );
    metric(
        "flush_failures_total",
        "counter",
        "Parquet flushes that failed and were retried.",
        s.flush_failures,
    );
    metric(
        "wal_failed",
        "gauge",
        "1 once the WAL has failed (server refuses all batches).",
        u64::from(s.wal_failed),
    );
    metric(
        "silence_devices_tracked",
        "gauge",
        "Devices in the silence table.",
        sources.silence.len() as u64,
    );
    metric(
        "silence_table_bytes",
        "gauge",
        "Memory of the silence table.",
        sources.silence.memory_bytes() as u64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &std::path::Path) -> Sources {
        let cfg = storage::StorageConfig {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        let (storage, _) = storage::Storage::open(cfg).unwrap();
        let silence = Arc::new(SilenceTable::with_capacity(10).unwrap());
        silence.record_fix(7, 1_700_000_000).unwrap();
        Sources {
            endpoint: Arc::new(EndpointStats::default()),
            storage,
            silence,
            explain: None,
        }
    }

    #[test]
    fn routes() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        let m = route("GET /metrics HTTP/1.1", &s);
        assert_eq!(m.status, 200);
        assert!(
            m.body.contains("hexflow_silence_devices_tracked 1\n"),
            "{}",
            m.body
        );
        assert!(m.body.contains("# TYPE hexflow_batches_ok_total counter"));
        let d = route("GET /devices/7 HTTP/1.1", &s);
        assert_eq!(d.status, 200);
        assert!(
            d.body
                .starts_with("{\"device_id\":7,\"last_fix_s\":1700000000,"),
            "{}",
            d.body
        );
        assert_eq!(route("GET /devices/8 HTTP/1.1", &s).status, 404);
        assert_eq!(route("GET /devices/x HTTP/1.1", &s).status, 400);
        assert_eq!(route("POST /metrics HTTP/1.1", &s).status, 405);
        assert_eq!(route("GET /metrics", &s).status, 400);
        assert_eq!(route("GET /healthz HTTP/1.0", &s).status, 200);
        assert_eq!(route("GET / HTTP/1.1", &s).status, 404);
        s.storage.shutdown().unwrap();
    }

    #[test]
    fn serves_over_tcp_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        let admin = Admin::start(SocketAddr::from(([127, 0, 0, 1], 0)), s.clone()).unwrap();
        let mut c = TcpStream::connect(admin.local_addr()).unwrap();
        c.write_all(b"GET /devices/7 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("\"level\":\"reporting\""), "{resp}");
        // An oversized head is cut at the limit and refused, and the server lives on.
        let mut c = TcpStream::connect(admin.local_addr()).unwrap();
        let _ = c.write_all(&vec![b'A'; REQUEST_BYTES_MAX + 100]);
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        admin.stop();
        s.storage.shutdown().unwrap();
    }
}
