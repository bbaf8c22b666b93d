//! Admission over real QUIC on loopback (Linux routes all of 127.0.0.0/8 to `lo`, so a
//! client bound to 127.0.0.2 or 127.0.0.3 is a second and third source): a garbage-token
//! HELLO flood is backed off while a device from another source connects; the per-source
//! connection cap refuses the next connection and frees on close; Retry is sent once
//! handshakes in progress reach the threshold (half-open handshakes made from replayed
//! Initials) and a legit quinn client still completes. Each test is bounded in time and in
//! the number of connections it makes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ingest::client::{ClientConfig, ClientError, Device, SessionError, client_endpoint};
use ingest::endpoint::EndpointStats;
use ingest::wire::Status;

/// Every test ends within this, whatever happens.
const TEST_BOUND: Duration = Duration::from_secs(60);

fn cfg_for(ts: &common::TestServer, token: String) -> ClientConfig {
    let mut cfg = ClientConfig::new(ts.addr, ts.ca_pem.clone(), token);
    cfg.connect_timeout_ms = 3_000;
    cfg
}

fn device_cfg(ts: &common::TestServer, device_id: u64) -> ClientConfig {
    cfg_for(ts, ts.key.mint(fix::DeviceId::try_from(device_id).unwrap()))
}

fn source(ip: &str) -> quinn::Endpoint {
    client_endpoint(format!("{ip}:0").parse().unwrap()).unwrap()
}

async fn assert_acked(dev: &Device, seq: u64) {
    common::send_one_ok(dev, seq, common::system_now_ms()).await;
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::SeqCst)
}

/// Whether the endpoint refused the connection at the QUIC level (CONNECTION_REFUSED).
fn refused(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ConnectionLost(quinn::ConnectionError::ConnectionClosed(c))
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
    )
}

/// Waits (bounded) until `gauge` reads `want`.
async fn gauge_reaches(
    stats: &EndpointStats,
    gauge: fn(&EndpointStats) -> &AtomicUsize,
    want: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(stats).load(Ordering::SeqCst) != want {
        assert!(
            Instant::now() < deadline,
            "gauge at {} instead of {want}",
            gauge(stats).load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_gauges_zero(stats: &EndpointStats) {
    gauge_reaches(stats, |s| &s.connections_open, 0).await;
    gauge_reaches(stats, |s| &s.handshakes_pending, 0).await;
    gauge_reaches(stats, |s| &s.sessions_open, 0).await;
    gauge_reaches(stats, |s| &s.inflight_batches, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_token_flood_is_backed_off_while_another_source_connects() {
    tokio::time::timeout(TEST_BOUND, garbage_token_flood())
        .await
        .unwrap();
}

async fn garbage_token_flood() {
    const FAILURES: u32 = 3;
    const AFTER: u64 = 8;
    const BACKOFF_MS: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.endpoint.login_failures_before_backoff = FAILURES;
    cfg.endpoint.login_backoff_initial_ms = BACKOFF_MS;
    cfg.endpoint.login_backoff_max_ms = BACKOFF_MS;
    cfg.endpoint.login_failure_log_interval_ms = 600_000;
    let ts = common::start(&cfg, common::ManualClock::new(common::system_now_ms())).await;
    let stats = ts.server.endpoint_stats();
    let attacker = source("127.0.0.2");
    let flood_started = Instant::now();
    for i in 0..FAILURES {
        match Device::connect(&attacker, cfg_for(&ts, format!("garbage-{i}"))).await {
            Err(ClientError::Session(SessionError::Rejected { status, .. })) => {
                assert_eq!(status, Status::Unauthenticated);
            }
            other => panic!("failed login {i}: {other:?}"),
        }
    }
    // Backed off: refused before the handshake (after a Retry: refusals go only to
    // validated addresses), so no TLS handshake and no HELLO is spent on them.
    for i in 0..AFTER {
        match Device::connect(&attacker, cfg_for(&ts, format!("garbage-more-{i}"))).await {
            Err(e) => assert!(refused(&e), "attempt {i} during back-off: {e:?}"),
            Ok(_) => panic!("admitted during back-off"),
        }
    }
    assert!(
        flood_started.elapsed() < Duration::from_millis(BACKOFF_MS),
        "the flood took longer than the back-off; the counts below would not hold"
    );
    // Meanwhile a device from another source connects and gets acks.
    let legit = Device::connect(&source("127.0.0.1"), device_cfg(&ts, 1))
        .await
        .unwrap();
    assert_acked(&legit, 1).await;
    assert_eq!(get(&stats.auth_failures), u64::from(FAILURES));
    assert_eq!(get(&stats.login_backoffs), 1);
    assert_eq!(get(&stats.refused_login_backoff), AFTER);
    assert_eq!(get(&stats.retries_sent), AFTER);
    // One line for the first failure, the others suppressed (and counted).
    assert_eq!(
        get(&stats.auth_failure_logs_suppressed),
        u64::from(FAILURES - 1)
    );
    // No lockout once the back-off has passed: the source gets in again.
    let wait = Duration::from_millis(BACKOFF_MS + 200).saturating_sub(flood_started.elapsed());
    tokio::time::sleep(wait).await;
    let back = Device::connect(&attacker, device_cfg(&ts, 2))
        .await
        .unwrap();
    assert_acked(&back, 1).await;
    legit.close().await;
    back.close().await;
    all_gauges_zero(&stats).await;
    ts.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_source_connection_cap_refuses_the_next_and_frees_on_close() {
    tokio::time::timeout(TEST_BOUND, per_source_cap())
        .await
        .unwrap();
}

async fn per_source_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.endpoint.connections_per_source_max = 2;
    let ts = common::start(&cfg, common::ManualClock::new(common::system_now_ms())).await;
    let stats = ts.server.endpoint_stats();
    let shared_nat = source("127.0.0.2");
    let a = Device::connect(&shared_nat, device_cfg(&ts, 1))
        .await
        .unwrap();
    let b = Device::connect(&shared_nat, device_cfg(&ts, 2))
        .await
        .unwrap();
    let third = Device::connect(&shared_nat, device_cfg(&ts, 3)).await;
    match third {
        Err(e) => assert!(refused(&e), "{e:?}"),
        Ok(_) => panic!("a third connection from one source over connections_per_source_max = 2"),
    }
    assert_eq!(get(&stats.refused_source_connections), 1);
    // Other sources are not affected, nor are the two admitted devices.
    let other = Device::connect(&source("127.0.0.1"), device_cfg(&ts, 4))
        .await
        .unwrap();
    for (dev, seq) in [(&a, 1), (&b, 1), (&other, 1)] {
        assert_acked(dev, seq).await;
    }
    // A connection of the source closes: the third device gets in (within 50 attempts).
    a.close().await;
    let mut admitted = None;
    for _ in 0..50 {
        match Device::connect(&shared_nat, device_cfg(&ts, 3)).await {
            Ok(d) => {
                admitted = Some(d);
                break;
            }
            Err(e) => assert!(refused(&e), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = admitted.expect("admitted once a connection of its source closed");
    assert_acked(&c, 1).await;
    for d in [b, c, other] {
        d.close().await;
    }
    all_gauges_zero(&stats).await;
    // The sources stay tracked (their buckets and failures), bounded by sources_tracked_max.
    assert_eq!(stats.sources_tracked.load(Ordering::SeqCst), 2);
    ts.server.shutdown().await.unwrap();
}

/// Captures the first Initial of `n` connection attempts of a real client: a local UDP
/// socket plays the server and records one datagram per destination connection id.
async fn capture_initials(ts: &common::TestServer, n: usize) -> Vec<Vec<u8>> {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let ep = source("127.0.0.1");
    let mut attempts = Vec::new();
    for i in 0..n {
        let mut cfg = device_cfg(ts, 100 + i as u64);
        cfg.server_addr = trap_addr;
        let ep = ep.clone();
        attempts.push(tokio::spawn(async move { Device::connect(&ep, cfg).await }));
    }
    let mut seen = HashSet::new();
    let mut initials = Vec::new();
    let mut buf = vec![0u8; 2048];
    while initials.len() < n {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), trap.recv_from(&mut buf))
            .await
            .expect("the client sends its Initials")
            .unwrap();
        let d = &buf[..len];
        // Long header: flags, version (4), DCID length, DCID.
        assert!(d[0] & 0x80 != 0, "a long-header Initial");
        let dcid = d[6..6 + usize::from(d[5])].to_vec();
        if seen.insert(dcid) {
            initials.push(d.to_vec());
        }
    }
    for a in attempts {
        a.abort();
    }
    initials
}

/// Sends each Initial to the server from its own socket on 127.0.0.3 that never answers:
/// a half-open handshake each (or a Retry that nobody follows).
async fn replay(initials: &[Vec<u8>], to: SocketAddr) -> Vec<tokio::net::UdpSocket> {
    let mut sockets = Vec::new();
    for d in initials {
        let s = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
        s.send_to(d, to).await.unwrap();
        sockets.push(s);
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_is_sent_above_the_threshold_and_a_legit_client_completes() {
    tokio::time::timeout(TEST_BOUND, retry_above_threshold())
        .await
        .unwrap();
}

async fn retry_above_threshold() {
    const HALF_OPEN: usize = 2;
    const FLOOD: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.endpoint.retry_above_handshakes = HALF_OPEN;
    cfg.endpoint.handshake_timeout_ms = 3_000;
    let ts = common::start(&cfg, common::ManualClock::new(common::system_now_ms())).await;
    let stats = ts.server.endpoint_stats();
    let initials = capture_initials(&ts, HALF_OPEN + FLOOD).await;
    // Below the threshold, Initials from an unproven address are accepted: two half-open
    // handshakes.
    let _held = replay(&initials[..HALF_OPEN], ts.addr).await;
    gauge_reaches(&stats, |s| &s.handshakes_pending, HALF_OPEN).await;
    assert_eq!(get(&stats.retries_sent), 0);
    // At the threshold, every further one gets a Retry and costs no handshake.
    let _flood = replay(&initials[HALF_OPEN..], ts.addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&stats.retries_sent) < FLOOD as u64 {
        assert!(
            Instant::now() < deadline,
            "{} Retries",
            get(&stats.retries_sent)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.handshakes_pending.load(Ordering::SeqCst), HALF_OPEN);
    // A real quinn client follows the Retry and completes.
    let dev = Device::connect(&source("127.0.0.1"), device_cfg(&ts, 1))
        .await
        .unwrap();
    assert_eq!(get(&stats.retries_sent), FLOOD as u64 + 1);
    assert_acked(&dev, 1).await;
    dev.close().await;
    // The half-open handshakes end at handshake_timeout_ms: nothing stays held.
    all_gauges_zero(&stats).await;
    assert_eq!(get(&stats.handshakes_timed_out), HALF_OPEN as u64);
    ts.server.shutdown().await.unwrap();
}

/// A client that connected once holds the server's NEW_TOKEN tokens: its next connection
/// (same client config, as a `Device` keeps across reconnects) counts as validated and gets
/// no Retry, even with Retry for everyone. With `validation_tokens_sent = 0` each connection
/// gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_skips_the_retry_with_its_token() {
    tokio::time::timeout(TEST_BOUND, async {
        for (tokens, retries) in [(2u32, 1u64), (0, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = common::test_config(dir.path());
            cfg.endpoint.retry_above_handshakes = 0;
            cfg.endpoint.validation_tokens_sent = tokens;
            let ts = common::start(&cfg, common::ManualClock::new(common::system_now_ms())).await;
            let stats = ts.server.endpoint_stats();
            let client = source("127.0.0.1");
            let quic = common::raw_client_config(&ts.ca_pem);
            for _ in 0..2 {
                let conn = client
                    .connect_with(quic.clone(), ts.addr, "localhost")
                    .unwrap()
                    .await
                    .unwrap();
                // The tokens come once the handshake is confirmed.
                let given = Instant::now() + Duration::from_secs(5);
                while conn.stats().frame_rx.new_token < u64::from(tokens) {
                    assert!(Instant::now() < given, "no NEW_TOKEN from the server");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                conn.close(0u32.into(), b"bye");
                client.wait_idle().await;
            }
            assert_eq!(get(&stats.retries_sent), retries, "{tokens} tokens sent");
            ts.server.shutdown().await.unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_above_zero_handshakes_validates_every_address() {
    tokio::time::timeout(TEST_BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = common::test_config(dir.path());
        cfg.endpoint.retry_above_handshakes = 0;
        let ts = common::start(&cfg, common::ManualClock::new(common::system_now_ms())).await;
        let stats = ts.server.endpoint_stats();
        for id in 1..=2 {
            let dev = Device::connect(&source("127.0.0.1"), device_cfg(&ts, id))
                .await
                .unwrap();
            assert_acked(&dev, 1).await;
            dev.close().await;
        }
        assert_eq!(get(&stats.retries_sent), 2, "one Retry per connection");
        all_gauges_zero(&stats).await;
        ts.server.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}
