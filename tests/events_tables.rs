//! The silence `events` and `device_status` Parquet tables and the webhook, through a real
//! server with a controllable clock (devices are fed straight into its silence table; QUIC is
//! covered by `confirm.rs` and `e2e.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use common::ManualClock;
use serde_json::Value;
use silence::tables::{
    EventTable, EventTableConfig, TableError, device_status_schema, events_schema,
};
use silence::webhook::{Webhook, WebhookConfig, WebhookStats, WebhookUrl};
use silence::{EventKind, Level, SilenceEvent};

/// 2026-11-25T10:00:00Z.
const T0_S: i64 = 1_795_600_800;
const DAY_S: i64 = 86_400;

/// Every row of a Parquet table as a JSON object keyed like `to_json_line` (times back to
/// Unix seconds), so rows compare with the JSON lines directly.
fn rows_as_json(batches: &[RecordBatch]) -> Vec<BTreeMap<String, Value>> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (f, col) in b.schema().fields().iter().zip(b.columns()) {
                let v = if col.is_null(i) {
                    Value::Null
                } else {
                    match col.data_type() {
                        DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(i)),
                        DataType::Utf8 => Value::from(col.as_string::<i32>().value(i)),
                        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => {
                            assert_eq!(&**tz, "UTC");
                            let us = col.as_primitive::<TimestampMicrosecondType>().value(i);
                            assert_eq!(us % 1_000_000, 0);
                            Value::from(us / 1_000_000)
                        }
                        other => panic!("unexpected column type {other:?}"),
                    }
                };
                row.insert(f.name().clone(), v);
            }
            rows.push(row);
        }
    }
    rows
}

/// A JSON line re-keyed like the Parquet columns.
fn json_as_row(line: &str) -> BTreeMap<String, Value> {
    let v: Value = serde_json::from_str(line).unwrap();
    let o = v.as_object().unwrap();
    let g = |k: &str| o.get(k).cloned().unwrap_or(Value::Null);
    BTreeMap::from([
        ("at".to_string(), g("at_s")),
        ("device_id".to_string(), g("device_id")),
        ("kind".to_string(), g("kind")),
        ("policy".to_string(), g("policy")),
        ("from_level".to_string(), g("from")),
        ("to_level".to_string(), g("to")),
        ("last_fix".to_string(), g("last_fix_s")),
        ("last_contact".to_string(), g("last_contact_s")),
        ("threshold_s".to_string(), g("threshold_s")),
        ("silent_since".to_string(), g("silent_since_s")),
        ("silent_s".to_string(), g("silent_s")),
        ("confirmed_at".to_string(), g("confirmed_at_s")),
    ])
}

fn s_to_u32(s: i64) -> u32 {
    u32::try_from(s).unwrap()
}

fn set_s(clock: &ManualClock, s: i64) {
    clock.set_ms(s * 1000);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The test configuration with the events of every scan published at once.
fn publishing_each_scan(data_dir: &Path) -> hexflow::config::Config {
    let mut cfg = common::test_config(data_dir);
    cfg.silence.events_flush_interval_ms = 0;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_table_holds_exactly_the_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = publishing_each_scan(dir.path());
    let clock = ManualClock::new(T0_S * 1000);
    let ts = common::start(&cfg, clock.clone()).await;
    let table = ts.server.silence().clone();
    for d in 1..=5u64 {
        table.record_contact(d, s_to_u32(T0_S)).unwrap();
        table.record_fix(d, s_to_u32(T0_S - 60)).unwrap();
    }
    // Contact only, never a fix: null last_fix in both forms.
    table.record_contact(6, s_to_u32(T0_S)).unwrap();
    assert!(ts.server.scan_now().is_empty());

    // Two days later: all six warned (default policy: 2 days / 3 days).
    set_s(&clock, T0_S + 2 * DAY_S + 10);
    let warned = ts.server.scan_now();
    assert_eq!(warned.len(), 6);
    assert!(warned.iter().all(|e| e.kind == EventKind::Warned));
    // Device 1 resumes, device 2 confirms; a day later the rest expire.
    table
        .record_fix(1, s_to_u32(T0_S + 2 * DAY_S + 20))
        .unwrap();
    table
        .record_confirmation(2, s_to_u32(T0_S + 2 * DAY_S + 30))
        .unwrap();
    set_s(&clock, T0_S + 2 * DAY_S + 40);
    let second = ts.server.scan_now();
    assert!(
        second
            .iter()
            .any(|e| matches!(e.kind, EventKind::Resumed { .. }))
    );
    assert!(
        second
            .iter()
            .any(|e| matches!(e.kind, EventKind::Confirmed { .. }))
    );
    set_s(&clock, T0_S + 3 * DAY_S + 10);
    let third = ts.server.scan_now();
    assert!(third.iter().any(|e| e.kind == EventKind::Expired));
    let total = warned.len() + second.len() + third.len();

    // Published synchronously by each scan (flush interval 0): compare with the JSON lines.
    let events_dir = dir.path().join("events");
    let files = common::parquet_files(&events_dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&events_dir).unwrap();
            rel.display().to_string()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "date=2026-11-27/part-00000000000000000001-00000000000000000006.parquet".to_string(),
            format!(
                "date=2026-11-27/part-{:020}-{:020}.parquet",
                7,
                6 + second.len()
            ),
            format!(
                "date=2026-11-28/part-{:020}-{:020}.parquet",
                7 + second.len(),
                total
            ),
        ]
    );
    let mut table_rows = Vec::new();
    for f in &files {
        let batches = common::read_parquet(f);
        assert_eq!(batches[0].schema(), events_schema());
        table_rows.extend(rows_as_json(&batches));
    }
    let seqs: Vec<i64> = table_rows
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=total as i64).collect::<Vec<_>>());
    // Rows in the table (seq order) equal the lines of the log (file order).
    let mut by_seq: Vec<_> = table_rows.into_iter().collect();
    by_seq.sort_by_key(|r| r["seq"].as_i64().unwrap());
    let log = std::fs::read_to_string(ts.server.paths().events_path.clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), total);
    for (mut row, line) in by_seq.into_iter().zip(&lines) {
        row.remove("seq");
        assert_eq!(row, json_as_row(line), "{line}");
    }
    // Spot checks of the nullable columns.
    let confirmed = lines
        .iter()
        .find(|l| l.contains(r#""kind":"confirmed""#))
        .unwrap();
    assert!(confirmed.contains(&format!(r#""confirmed_at_s":{}"#, T0_S + 2 * DAY_S + 30)));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""device_id":6,"#) && l.contains(r#""last_fix_s":null"#))
    );

    // A restart continues the sequence: nothing published is overwritten.
    ts.server.shutdown().await.unwrap();
    let ts = common::start(&cfg, clock.clone()).await;
    let table = ts.server.silence().clone();
    table
        .record_contact(77, s_to_u32(T0_S + 3 * DAY_S))
        .unwrap();
    set_s(&clock, T0_S + 6 * DAY_S);
    let later = ts.server.scan_now();
    assert!(!later.is_empty());
    let newest = common::parquet_files(&events_dir).pop().unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        name,
        format!("part-{:020}-{:020}.parquet", total + 1, total + later.len())
    );
    assert!(newest.starts_with(events_dir.join("date=2026-12-01")));
    ts.server.shutdown().await.unwrap();
    assert_eq!(common::parquet_files(&events_dir).len(), 4);
    assert!(
        common::files_under(dir.path())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".tmp")),
        "no temporary file left behind"
    );
}

fn ev(device_id: u64, at_s: u32) -> SilenceEvent {
    SilenceEvent {
        device_id,
        kind: EventKind::Warned,
        policy: 0,
        from: Level::Reporting,
        to: Level::Warned,
        last_fix_s: at_s - 100,
        last_contact_s: 0,
        at_s,
        threshold_s: 100,
    }
}

fn table_cfg(rows_max: usize, flush_interval_ms: u64) -> EventTableConfig {
    EventTableConfig {
        rows_max,
        flush_interval_ms,
        parquet: storage::writer::ParquetOptions {
            zstd_level: 3,
            row_group_rows_max: 1024,
        },
    }
}

#[test]
fn events_are_batched_by_interval_and_bounded_by_rows_max() {
    let dir = tempfile::tempdir().unwrap();
    let at = s_to_u32(T0_S);
    let mut t = EventTable::open(dir.path(), table_cfg(3, 60_000), vec!["p".into()]).unwrap();
    assert!(!t.due(0));
    assert_eq!(t.push(&[ev(1, at), ev(2, at)], 1_000).unwrap(), 0);
    assert!(!t.due(60_999), "one ms before the interval");
    assert!(t.due(61_000), "at the interval");
    // The buffer never exceeds rows_max: 2 + 5 events flush at 3 and 6.
    assert_eq!(
        t.push(
            &[ev(3, at), ev(4, at), ev(5, at), ev(6, at), ev(7, at)],
            2_000
        )
        .unwrap(),
        6
    );
    assert_eq!(t.buffered(), 1);
    assert!(!t.due(2_000));
    let flushed = t.flush().unwrap();
    assert_eq!(flushed.rows, 1);
    assert_eq!(t.next_seq(), 8);
    let files = common::parquet_files(&dir.path().join("events"));
    assert_eq!(files.len(), 3);
    let mut ids = Vec::new();
    for f in &files {
        for b in common::read_parquet(f) {
            assert!(b.num_rows() <= 3);
            ids.extend(
                b.column(2)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=7).collect::<Vec<i64>>());
    // Reopening continues after the highest published sequence.
    let t = EventTable::open(dir.path(), table_cfg(3, 0), vec!["p".into()]).unwrap();
    assert_eq!(t.next_seq(), 8);

    // A failing flush keeps the buffer; once it is full, further events are dropped, counted.
    let bad = tempfile::tempdir().unwrap();
    let mut t = EventTable::open(bad.path(), table_cfg(2, 0), vec!["p".into()]).unwrap();
    std::fs::write(bad.path().join("events"), b"not a directory").unwrap();
    t.push(&[ev(1, at), ev(2, at)], 0).unwrap();
    assert!(t.due(0));
    assert!(matches!(t.flush(), Err(TableError::Publish(_))));
    assert_eq!(t.buffered(), 2);
    assert!(t.push(&[ev(3, at), ev(4, at), ev(5, at)], 0).is_err());
    assert_eq!((t.buffered(), t.dropped()), (2, 3));
    // The obstacle goes away: the retry publishes the same names with the kept rows.
    std::fs::remove_file(bad.path().join("events")).unwrap();
    assert_eq!(t.flush().unwrap().rows, 2);
    let files = common::parquet_files(&bad.path().join("events"));
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .ends_with("date=2026-11-25/part-00000000000000000001-00000000000000000002.parquet")
    );
}

fn status_path(data: &Path, day: &str) -> PathBuf {
    data.join("device_status")
        .join(format!("date={day}"))
        .join(format!("part-{}.parquet", day.replace('-', "")))
}

fn status_rows(path: &Path) -> Vec<BTreeMap<String, Value>> {
    let batches = common::read_parquet(path);
    assert!(batches.iter().all(|b| b.schema() == device_status_schema()));
    let mut rows = rows_as_json(&batches);
    rows.sort_by_key(|r| r["device_id"].as_i64().unwrap());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_status_is_written_once_per_utc_day() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = publishing_each_scan(dir.path());
    let clock = ManualClock::new(T0_S * 1000);
    let ts = common::start(&cfg, clock.clone()).await;
    // At start, today's file is missing: the scanner writes it (no devices yet).
    let day0 = status_path(dir.path(), "2026-11-25");
    wait_for("the start-up device status", || day0.exists());
    assert!(status_rows(&day0).is_empty());
    let table = ts.server.silence().clone();
    table.record_contact(10, s_to_u32(T0_S)).unwrap();
    table.record_fix(10, s_to_u32(T0_S - 5)).unwrap();
    table.record_contact(11, s_to_u32(T0_S)).unwrap();
    // Same day: not written again.
    set_s(&clock, T0_S + 3_600);
    ts.server.scan_now();
    assert!(status_rows(&day0).is_empty());

    // Next UTC day (2026-11-26T09:00Z): the first scan writes it, with every device.
    set_s(&clock, T0_S + DAY_S - 3_600);
    ts.server.scan_now();
    set_s(&clock, T0_S + 2 * DAY_S + 60);
    ts.server.scan_now(); // warns both: 2026-11-27
    let day2 = status_path(dir.path(), "2026-11-27");
    let rows = status_rows(&day2);
    assert_eq!(rows.len(), 2);
    let taken = T0_S + 2 * DAY_S + 60;
    // Each row is the device's state in the table, as `get` reports it.
    let expect = |id: u64| {
        let st = table.get(id).unwrap();
        assert_eq!(st.level, Level::Warned);
        let t = |v: Option<u32>| v.map_or(Value::Null, |s| Value::from(i64::from(s)));
        BTreeMap::from([
            ("taken_at".to_string(), Value::from(taken)),
            ("device_id".to_string(), Value::from(id)),
            ("last_fix".to_string(), t(st.last_fix_s)),
            ("last_contact".to_string(), t(st.last_contact_s)),
            ("level".to_string(), Value::from("warned")),
            ("silent_since".to_string(), t(st.silent_since_s)),
            ("policy".to_string(), Value::from("default")),
            ("group".to_string(), Value::Null),
        ])
    };
    assert_eq!(rows[0], expect(10));
    assert_eq!(rows[1], expect(11));
    assert_eq!(rows[0]["last_fix"], Value::from(T0_S - 5));
    assert_eq!(rows[1]["last_fix"], Value::Null);
    assert_eq!(rows[1]["last_contact"], Value::from(T0_S));
    assert!(rows.iter().all(|r| r["silent_since"].is_i64()));
    let day1 = status_path(dir.path(), "2026-11-26");
    assert_eq!(status_rows(&day1).len(), 2);
    // A new device later the same day does not rewrite it.
    table.record_contact(12, s_to_u32(taken)).unwrap();
    set_s(&clock, taken + 3_600);
    ts.server.scan_now();
    assert_eq!(status_rows(&day2).len(), 2);
    // A restart on the same day finds it and leaves it alone.
    ts.server.shutdown().await.unwrap();
    let before = std::fs::read(&day2).unwrap();
    let ts = common::start(&cfg, clock.clone()).await;
    ts.server.scan_now();
    assert_eq!(std::fs::read(&day2).unwrap(), before);
    ts.server.shutdown().await.unwrap();
    // A restart on a day without a file writes it at start, before any scan.
    set_s(&clock, T0_S + 4 * DAY_S);
    let ts = common::start(&cfg, clock.clone()).await;
    let day4 = status_path(dir.path(), "2026-11-29");
    wait_for("the device status written at start", || day4.exists());
    let rows = status_rows(&day4);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["device_id"], Value::from(12));
    ts.server.shutdown().await.unwrap();
    assert_eq!(
        common::parquet_files(&dir.path().join("device_status")).len(),
        4
    );
}

/// One request the test receiver read.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: String,
}

/// A receiver on 127.0.0.1 that answers connection `i` with `script[i]`: `Some(status)`, or
/// `None` to close without answering. Past the script it answers 200.
fn receiver(script: Vec<Option<u16>>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/silence", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let Some(req) = read_request(&mut conn) else {
                continue;
            };
            seen.lock().unwrap().push(req);
            match script.get(i).copied().unwrap_or(Some(200)) {
                Some(status) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                None => drop(conn),
            }
        }
    });
    (url, got)
}

fn read_request(conn: &mut impl Read) -> Option<Received> {
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then_some(value)
        })?
        .trim()
        .parse()
        .ok()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        head,
        body: String::from_utf8(body).ok()?,
    })
}

fn webhook_cfg(url: &str, attempts_max: u32, queue_max: usize, timeout_ms: u64) -> WebhookConfig {
    WebhookConfig {
        url: WebhookUrl::parse(url).unwrap(),
        queue_max,
        attempts_max,
        timeout_ms,
        backoff_ms: 20,
        backoff_max_ms: 50,
        ca_path: None,
    }
}

/// An HTTPS receiver on 127.0.0.1 (certificate for `localhost` from a CA generated under
/// `dir`) that answers every request 200: its URL, the CA file, what it received.
fn https_receiver(dir: &Path) -> (String, PathBuf, Arc<Mutex<Vec<Received>>>) {
    let names = ["localhost".to_string()];
    let m = hexflow::tls::load_or_generate_dev(&sys::fs::RealFs, dir, &names).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(m.cert_chain, m.key)
        .unwrap();
    let tls = Arc::new(tls);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { return };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let session = rustls::ServerConnection::new(tls.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(session, tcp);
            // A client that refuses the certificate ends the handshake: nothing to read.
            let Some(req) = read_request(&mut stream) else {
                continue;
            };
            seen.lock().unwrap().push(req);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.flush();
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    });
    let url = format!("https://localhost:{port}/hooks/silence");
    (url, m.ca_path.unwrap(), got)
}

/// Starts a webhook (one attempt) to `url` that trusts the CAs in `ca`, posts `body` (one
/// event), waits for `what` (`done` holds for its counters), stops it and returns the counters.
fn post_one_trusting(
    url: &str,
    ca: PathBuf,
    body: &str,
    what: &str,
    done: impl Fn(&WebhookStats) -> bool,
) -> Arc<WebhookStats> {
    let mut cfg = webhook_cfg(url, 1, 4, 5_000);
    cfg.ca_path = Some(ca);
    let w = Webhook::start(cfg, Arc::new(sys::SystemClock)).unwrap();
    let stats = w.stats();
    assert!(w.enqueue(body.into(), 1));
    wait_for(what, || done(&stats));
    w.stop();
    stats
}

/// HTTPS: delivered when the receiver chains to the configured CA; refused (and never
/// sent) when it does not.
#[test]
fn webhook_posts_over_https_and_verifies_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ca, got) = https_receiver(&dir.path().join("pki"));
    post_one_trusting(&url, ca, "[{\"device_id\":7}]", "delivery over TLS", |s| {
        s.delivered_events.load(Ordering::Relaxed) == 1
    });
    let first = got.lock().unwrap().clone();
    assert_eq!(first.len(), 1);
    assert!(
        first[0]
            .head
            .starts_with("POST /hooks/silence HTTP/1.1\r\n"),
        "{}",
        first[0].head
    );
    assert_eq!(first[0].body, "[{\"device_id\":7}]");

    // Another CA does not vouch for the receiver: the attempt fails in the handshake and
    // the body never reaches it.
    let other = dir.path().join("other");
    let names = ["localhost".to_string()];
    let other_ca = hexflow::tls::load_or_generate_dev(&sys::fs::RealFs, &other, &names)
        .unwrap()
        .ca_path
        .unwrap();
    let stats = post_one_trusting(&url, other_ca, "[{\"device_id\":8}]", "refusal", |s| {
        s.dropped_failed_events.load(Ordering::Relaxed) == 1
    });
    assert_eq!(stats.delivered_events.load(Ordering::Relaxed), 0);
    assert_eq!(
        got.lock().unwrap().len(),
        1,
        "nothing was sent to an unverified receiver"
    );
}

#[test]
fn a_webhook_ca_file_without_a_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut cfg = webhook_cfg("https://localhost:9/x", 1, 4, 1_000);
    cfg.ca_path = Some(ca.clone());
    let e = Webhook::start(cfg, Arc::new(sys::SystemClock)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "silence.webhook_ca_path {}: no PEM certificate in it",
            ca.display()
        )
    );
}

#[test]
fn webhook_retries_with_backoff_until_delivered() {
    // Connection closed without an answer, then 503, then 200.
    let (url, got) = receiver(vec![None, Some(503)]);
    let w = Webhook::start(webhook_cfg(&url, 5, 4, 2_000), Arc::new(sys::SystemClock)).unwrap();
    let stats = w.stats();
    let body = r#"[{"device_id":1},{"device_id":2}]"#.to_string();
    let started = Instant::now();
    assert!(w.enqueue(body.clone(), 2));
    wait_for("delivery", || {
        stats.delivered_events.load(Ordering::Relaxed) == 2
    });
    // Two backoffs of at least 10 ms (first step 20 ms, half of it jittered) and 20 ms.
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(stats.attempts.load(Ordering::Relaxed), 3);
    assert_eq!(stats.delivered_bodies.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped_failed_events.load(Ordering::Relaxed), 0);
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert!(
            r.head.starts_with("POST /hooks/silence HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        // Header names are case-insensitive (the client sends them in lower case).
        let head = r.head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{}",
            r.head
        );
        assert_eq!(r.body, body);
    }
    w.stop();
}

/// Starts a webhook with `attempts_max` against a receiver answering `statuses`, enqueues
/// one body of `events` events, waits until they are dropped as failed, and checks that
/// took exactly `attempts` requests.
fn gives_up(
    statuses: Vec<Option<u16>>,
    attempts_max: u32,
    events: u64,
    attempts: u64,
) -> (Webhook, Arc<WebhookStats>) {
    let (url, got) = receiver(statuses);
    let w = Webhook::start(
        webhook_cfg(&url, attempts_max, 4, 2_000),
        Arc::new(sys::SystemClock),
    )
    .unwrap();
    let stats = w.stats();
    let body: Vec<String> = (1..=events).map(|e| e.to_string()).collect();
    assert!(w.enqueue(format!("[{}]", body.join(",")), events as usize));
    wait_for("giving up", || {
        stats.dropped_failed_events.load(Ordering::Relaxed) == events
    });
    assert_eq!(stats.attempts.load(Ordering::Relaxed), attempts);
    assert_eq!(got.lock().unwrap().len() as u64, attempts);
    (w, stats)
}

#[test]
fn webhook_gives_up_after_attempts_max_and_on_final_statuses() {
    let (w, stats) = gives_up(vec![Some(500), Some(502), Some(503), Some(200)], 3, 3, 3);
    // The next body is delivered at once (the receiver answers 200 now).
    assert!(w.enqueue("[4]".into(), 1));
    wait_for("delivery", || {
        stats.delivered_events.load(Ordering::Relaxed) == 1
    });
    w.stop();

    // 404 is final: one attempt only.
    let (w, _) = gives_up(vec![Some(404)], 5, 1, 1);
    w.stop();
}

#[test]
fn webhook_queue_is_bounded_and_requests_time_out() {
    // A receiver that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let _ = conn_tx.send(());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(30));
                drop(conn);
            });
        }
    });
    let w = Webhook::start(webhook_cfg(&url, 1, 2, 400), Arc::new(sys::SystemClock)).unwrap();
    let stats = w.stats();
    assert!(w.enqueue("[1]".into(), 1));
    // The first body is in flight once the receiver has its connection.
    conn_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(w.enqueue("[2]".into(), 10));
    assert!(w.enqueue("[3]".into(), 100), "queue_max = 2 bodies");
    assert!(
        !w.enqueue("[4]".into(), 1_000),
        "the third queued body is refused"
    );
    assert_eq!(
        stats.dropped_queue_full_events.load(Ordering::Relaxed),
        1_000
    );
    // The in-flight request times out (400 ms) and, with one attempt, is dropped.
    wait_for("the timeout", || {
        stats.dropped_failed_events.load(Ordering::Relaxed) >= 1
    });
    let stopped = Instant::now();
    w.stop();
    // Stopping waits at most for the attempt in flight; what was queued is counted as dropped.
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(
        stats.dropped_failed_events.load(Ordering::Relaxed)
            + stats.delivered_events.load(Ordering::Relaxed),
        111
    );
    assert_eq!(stats.delivered_events.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_posts_each_scans_events() {
    let (url, got) = receiver(vec![Some(503)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.silence.webhook_url = url;
    cfg.silence.webhook_backoff_ms = 10;
    cfg.silence.webhook_backoff_max_ms = 20;
    let clock = ManualClock::new(T0_S * 1000);
    let ts = common::start(&cfg, clock.clone()).await;
    let table = ts.server.silence().clone();
    for d in [3u64, 4] {
        table.record_fix(d, s_to_u32(T0_S)).unwrap();
    }
    set_s(&clock, T0_S + 2 * DAY_S);
    let events = ts.server.scan_now();
    assert_eq!(events.len(), 2);
    wait_for("the webhook POST", || got.lock().unwrap().len() == 2);
    let got = got.lock().unwrap().clone();
    let log = std::fs::read_to_string(&ts.server.paths().events_path).unwrap();
    let expected = format!("[{}]", log.lines().collect::<Vec<_>>().join(","));
    assert_eq!(got[1].body, expected);
    let posted: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(posted.as_array().unwrap().len(), 2);
    ts.server.shutdown().await.unwrap();
}
