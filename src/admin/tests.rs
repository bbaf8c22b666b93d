#![allow(clippy::unwrap_used)]

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
        calendar_days_left: Some(Arc::new(|| {
            vec![("ru".to_string(), 395), ("de-BE".to_string(), -3)]
        })),
    }
}

fn state(sources: Sources, token: Option<&str>) -> State {
    State {
        registry: metrics::registry(sources.clone()),
        sources,
        token: token.map(str::to_string),
    }
}

#[test]
fn routes() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(sources(dir.path()), None);
    let get = |p: &str| route(&Method::GET, p, None, &st);
    let m = get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("hexflow_silence_devices_tracked 1\n"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("# TYPE hexflow_batches_ok counter"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("hexflow_batches_ok_total 0\n"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("# TYPE hexflow_silence_calendar_coverage_days gauge"),
        "{}",
        m.body
    );
    for line in [
        "hexflow_silence_calendar_coverage_days{calendar=\"ru\"} 395\n",
        "hexflow_silence_calendar_coverage_days{calendar=\"de-BE\"} -3\n",
    ] {
        assert!(m.body.contains(line), "{line} in {}", m.body);
    }
    assert!(m.body.ends_with("# EOF\n"), "OpenMetrics terminator");
    for metric in METRICS {
        assert!(
            m.body.contains(&format!("# HELP hexflow_{} ", metric.name)),
            "{} missing",
            metric.name
        );
    }
    let d = get("/devices/7");
    assert_eq!(d.status, 200);
    assert!(
        d.body
            .starts_with("{\"device_id\":7,\"last_fix_s\":1700000000,"),
        "{}",
        d.body
    );
    assert_eq!(get("/devices/8").status, 404);
    assert_eq!(get("/devices/x").status, 400);
    assert_eq!(route(&Method::POST, "/metrics", None, &st).status, 405);
    assert_eq!(get("/healthz").status, 200);
    assert_eq!(get("/").status, 404);
    st.sources.storage.shutdown().unwrap();
}

#[test]
fn a_configured_token_guards_everything_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(sources(dir.path()), Some("s3cret"));
    let with = |auth: Option<&str>, p: &str| route(&Method::GET, p, auth, &st).status;
    assert_eq!(with(None, "/metrics"), 401);
    assert_eq!(with(Some("Bearer s3cre"), "/metrics"), 401);
    assert_eq!(with(Some("Bearer s3cret!"), "/devices/7"), 401);
    assert_eq!(with(Some("Basic s3cret"), "/metrics"), 401);
    assert_eq!(with(Some("Bearer s3cret"), "/metrics"), 200);
    assert_eq!(with(Some("Bearer s3cret"), "/devices/7"), 200);
    assert_eq!(with(None, "/healthz"), 200);
    st.sources.storage.shutdown().unwrap();
}

#[test]
fn settings_and_token_file_are_checked() {
    let mut c = AdminConfig::default();
    c.validate().unwrap();
    c.connections_max = 0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("admin.connections_max")
    );
    let mut c = AdminConfig {
        request_timeout_ms: 99,
        ..AdminConfig::default()
    };
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("admin.request_timeout_ms")
    );
    c.request_timeout_ms = 100;
    c.validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.token_path = dir.path().join("token");
    assert!(matches!(
        c.token(&sys::fs::RealFs),
        Err(AdminError::Token { .. })
    ));
    std::fs::write(&c.token_path, " \n").unwrap();
    assert!(matches!(
        c.token(&sys::fs::RealFs),
        Err(AdminError::EmptyToken { .. })
    ));
    std::fs::write(&c.token_path, "abc\n").unwrap();
    assert_eq!(c.token(&sys::fs::RealFs).unwrap().as_deref(), Some("abc"));
}

async fn request(addr: SocketAddr, head: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp).await;
    resp
}

fn cfg(connections_max: usize, request_timeout_ms: u64) -> AdminConfig {
    AdminConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        connections_max,
        request_timeout_ms,
        ..AdminConfig::default()
    }
}

#[tokio::test]
async fn a_slow_client_never_delays_healthz_and_is_cut_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let s = sources(dir.path());
    let admin = Admin::start(&cfg(8, 500), s.clone()).unwrap();
    let addr = admin.local_addr();
    // A slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let resp = request(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("ok\n"), "{resp}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "healthz waited for the slow client"
    );
    // The slow client is disconnected once its head deadline passes.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "slow client still connected after 5 s");
    admin.stop().await;
    s.storage.shutdown().unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_heads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = sources(dir.path());
    let admin = Admin::start(&cfg(2, 300), s.clone()).unwrap();
    let addr = admin.local_addr();
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Both slots are taken by idle connections: the third is closed without an answer.
    let resp = request(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(resp, "", "answered beyond connections_max");
    // Once the idle ones hit their deadline, slots free up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = request(
        addr,
        "GET /devices/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("\"level\":\"reporting\""), "{resp}");
    // A head over the limit is refused and the endpoint lives on.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(REQUEST_BYTES_MAX + 100)
    );
    let resp = request(addr, &big).await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431"),
        "{resp}"
    );
    let resp = request(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    admin.stop().await;
    s.storage.shutdown().unwrap();
}

/// The admission rows read their own counters (each set to a value of its own).
#[test]
fn admission_metrics_read_their_own_counters() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let sources = sources(dir.path());
    let e = &sources.endpoint;
    e.refused_handshakes_max.store(11, Relaxed);
    e.refused_source_connections.store(12, Relaxed);
    e.refused_source_rate.store(13, Relaxed);
    e.refused_login_backoff.store(14, Relaxed);
    e.refused_sources_full.store(15, Relaxed);
    e.retries_sent.store(16, Relaxed);
    e.login_backoffs.store(17, Relaxed);
    e.auth_failure_logs_suppressed.store(18, Relaxed);
    e.sources_tracked.store(19, Relaxed);
    let st = state(sources, None);
    let m = route(&Method::GET, "/metrics", None, &st);
    for line in [
        "hexflow_connections_refused_handshakes_max_total 11\n",
        "hexflow_connections_refused_source_connections_total 12\n",
        "hexflow_connections_refused_source_rate_total 13\n",
        "hexflow_connections_refused_login_backoff_total 14\n",
        "hexflow_connections_refused_sources_full_total 15\n",
        "hexflow_quic_retries_sent_total 16\n",
        "hexflow_login_backoffs_total 17\n",
        "hexflow_auth_failure_logs_suppressed_total 18\n",
        "hexflow_admission_sources_tracked 19\n",
    ] {
        assert!(m.body.contains(line), "{line} in {}", m.body);
    }
}
