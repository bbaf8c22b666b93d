//! End to end over real QUIC on 127.0.0.1: hundreds of devices send batches through the
//! client library while a hostile device sends every kind of bad input; then the Parquet
//! written by the server must hold exactly the acked fixes (no loss, no duplicates), every
//! H3 cell must equal h3o's answer, and the silence scanner must flag the silent device and
//! not the reporting one.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{ManualClock, Row, TestServer};
use ingest::client::{ClientConfig, Device};
use ingest::wire::{self, Fix, Fixes, FrameType, Status};
use rand::{Rng, SeedableRng};

const DEVICES: u64 = 300;
const BATCHES_PER_DEVICE: u64 = 4;
const HOSTILE_DEVICE: u64 = 1_000_000;

fn client_cfg(ts: &TestServer, device_id: u64) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        ts.addr,
        ts.ca_pem.clone(),
        ts.key.mint(fix::DeviceId::try_from(device_id).unwrap()),
    );
    cfg.server_name = "localhost".into();
    cfg
}

/// A raw protocol connection, for inputs the client library would never send.
struct Raw {
    _conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Raw {
    async fn open(ep: &quinn::Endpoint, ts: &TestServer) -> Self {
        let conn = ep
            .connect_with(common::raw_client_config(&ts.ca_pem), ts.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Self {
            _conn: conn,
            send,
            recv,
        }
    }

    async fn hello(&mut self, token: &str) {
        let hello = wire::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            token: token.into(),
            client_agent: "e2e-raw".into(),
        };
        let mut out = Vec::new();
        wire::encode_hello(&hello, &mut out);
        self.send.write_all(&out).await.unwrap();
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.unwrap();
    }

    async fn read_frame(&mut self) -> Option<(FrameType, Vec<u8>)> {
        let mut h = [0u8; wire::FRAME_HEADER_LEN];
        tokio::time::timeout(Duration::from_secs(10), self.recv.read_exact(&mut h))
            .await
            .expect("server answers within 10 s")
            .ok()?;
        let h = wire::parse_frame_header(&h).unwrap();
        let mut body = vec![0u8; h.len as usize];
        self.recv.read_exact(&mut body).await.ok()?;
        Some((h.frame_type, body))
    }

    async fn expect_ack(&mut self) -> wire::Ack {
        let (t, body) = self.read_frame().await.expect("a frame");
        assert_eq!(t, FrameType::Ack, "expected ACK");
        wire::decode_ack(&body).unwrap()
    }
}

fn batch_frame(seq: u64, encoding: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(9 + payload.len());
    body.extend_from_slice(&seq.to_be_bytes());
    body.push(encoding);
    body.extend_from_slice(payload);
    let mut out = Vec::new();
    wire::encode_frame(FrameType::Batch, &body, &mut out);
    out
}

fn encoded_batch(seq: u64, fixes: &Fixes) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_batch_frame(seq, fixes, 3, &mut out).unwrap();
    out
}

/// Every hostile input from the protocol spec, each answered with its own status, on one
/// connection that keeps working afterwards. Returns the fixes of the final, valid batch.
async fn hostile_device(ep: &quinn::Endpoint, ts: &TestServer, now_ms: i64) -> (u64, Fixes) {
    let mut raw = Raw::open(ep, ts).await;
    raw.hello(
        &ts.key
            .mint(fix::DeviceId::try_from(HOSTILE_DEVICE).unwrap()),
    )
    .await;
    let (t, body) = raw.read_frame().await.unwrap();
    assert_eq!(t, FrameType::Welcome);
    let welcome = wire::decode_welcome(&body).unwrap();
    assert_eq!(welcome.device_id, HOSTILE_DEVICE);
    let limits = wire::Limits::default();

    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let good = common::random_fixes(&mut rng, 10, now_ms);
    let mut cases: Vec<(Vec<u8>, Status, &str)> = Vec::new();
    cases.push((
        batch_frame(1, 1, b"definitely not zstd"),
        Status::DecompressFailed,
        "zstd",
    ));
    // A zstd bomb: a few KiB on the wire, 16 MiB once expanded (cap: 4 MiB), inside one
    // unknown length-delimited field (valid protobuf so far: only the cap can stop it).
    let mut expanded = vec![0x4a, 0x80, 0x80, 0x80, 0x08];
    expanded.resize(16 * 1024 * 1024 + 5, 0);
    let bomb = zstd::encode_all(&expanded[..], 1).unwrap();
    assert!(bomb.len() < 4096, "the bomb is small on the wire");
    cases.push((batch_frame(2, 1, &bomb), Status::DecompressedTooLarge, ""));
    // A protobuf bomb (issue 11): one packed column of 4 000 000 zero varints, counted
    // from its bytes and refused before any column is decoded.
    let mut expanded = vec![0x0a, 0x80, 0x92, 0xf4, 0x01];
    expanded.resize(4_000_000 + 5, 0);
    let bomb = zstd::encode_all(&expanded[..], 3).unwrap();
    assert!(bomb.len() < 1024, "the bomb is small on the wire");
    cases.push((batch_frame(14, 1, &bomb), Status::TooManyFixes, "time_ms"));
    // A frame asking for a window above the cap is refused before any memory is reserved.
    let wide = zstd::encode_all(&vec![7u8; 16 * 1024 * 1024][..], 19).unwrap();
    cases.push((
        batch_frame(12, 1, &wide),
        Status::DecompressFailed,
        "memory",
    ));
    cases.push((
        batch_frame(3, 7, b"x"),
        Status::UnsupportedEncoding,
        "encoding",
    ));
    cases.push((batch_frame(4, 0, &[0xff; 32]), Status::MalformedFrame, ""));
    let mut bad = good.clone();
    bad.lat_e7[3] = 910_000_000;
    cases.push((encoded_batch(5, &bad), Status::InvalidCoordinates, "3"));
    let mut bad = good.clone();
    bad.lon_e7[0] = -1_800_000_001;
    cases.push((encoded_batch(6, &bad), Status::InvalidCoordinates, "0"));
    let mut bad = good.clone();
    bad.time_ms[9] = now_ms + 3_600_000;
    cases.push((encoded_batch(7, &bad), Status::TimeInFuture, "9"));
    let mut bad = good.clone();
    bad.time_ms[0] = now_ms - 60 * 86_400_000;
    cases.push((encoded_batch(8, &bad), Status::TimeTooOld, "0"));
    cases.push((encoded_batch(9, &Fixes::default()), Status::EmptyBatch, ""));
    let mut many = Fixes::default();
    let one = Fix::from_degrees(now_ms, 52.5, 13.4);
    for _ in 0..=limits.batch_fixes_max {
        many.push(&one);
    }
    cases.push((encoded_batch(10, &many), Status::TooManyFixes, ""));
    // One byte over the limit: batch_bytes_max bounds the whole BATCH body (seq + encoding +
    // payload), so this body is batch_bytes_max + 1 bytes.
    let mut noise = vec![0u8; limits.batch_bytes_max as usize + 1 - 9];
    rng.fill(&mut noise[..]);
    cases.push((batch_frame(11, 1, &noise), Status::BatchTooLarge, ""));
    cases.push((encoded_batch(0, &good), Status::InvalidSequence, ""));

    for (i, (frame, status, needle)) in cases.iter().enumerate() {
        raw.write(frame).await;
        let ack = raw.expect_ack().await;
        assert_eq!(
            Status::from_code(ack.status),
            Some(*status),
            "case {i}: expected {status:?}, got {} ({})",
            ack.status,
            ack.reason
        );
        assert!(
            !ack.reason.is_empty(),
            "case {i}: a rejection carries a reason"
        );
        assert!(
            ack.reason.contains(needle),
            "case {i}: reason {:?} lacks {needle:?}",
            ack.reason
        );
    }
    // The same connection still works, and a rejected seq can be reused with good data.
    raw.write(&encoded_batch(5, &good)).await;
    let ack = raw.expect_ack().await;
    assert_eq!(
        Status::from_code(ack.status),
        Some(Status::Ok),
        "{}",
        ack.reason
    );
    assert_eq!(ack.batch_seq, 5);
    (5, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::test_config(dir.path());
    let start_ms = common::system_now_ms();
    let clock = ManualClock::new(start_ms);
    let ts = common::start(&cfg, clock.clone()).await;
    let ep = ingest::client::client_endpoint(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();

    // Authentication failures close the connection with UNAUTHENTICATED; no WELCOME.
    let other_key = ingest::auth::TokenKey::from_bytes(&[9; 32]).unwrap();
    match Device::connect(
        &ep,
        ClientConfig::new(
            ts.addr,
            ts.ca_pem.clone(),
            other_key.mint(fix::DeviceId::try_from(5).unwrap()),
        ),
    )
    .await
    {
        Err(e) => assert!(e.to_string().contains("UNAUTHENTICATED"), "{e}"),
        Ok(_) => panic!("a token from another key was accepted"),
    }
    // BATCH before HELLO is a protocol violation.
    let mut raw = Raw::open(&ep, &ts).await;
    raw.write(&batch_frame(1, 0, b"")).await;
    if let Some((t, body)) = raw.read_frame().await {
        assert_eq!(t, FrameType::Close);
        let close = wire::decode_close(&body).unwrap();
        assert_eq!(
            Status::from_code(close.status),
            Some(Status::ProtocolViolation)
        );
    }

    // Hundreds of devices in parallel, with a hostile device among them.
    let ts = Arc::new(ts);
    let hostile = {
        let (ep, ts) = (ep.clone(), ts.clone());
        tokio::spawn(async move { hostile_device(&ep, &ts, start_ms).await })
    };
    let mut tasks = Vec::new();
    for device_id in 1..=DEVICES {
        let (ep, ts) = (ep.clone(), ts.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(device_id);
            let dev = Device::connect(&ep, client_cfg(&ts, device_id))
                .await
                .unwrap();
            assert_eq!(dev.device_id(), device_id);
            let mut acked = Vec::new();
            for seq in 1..=BATCHES_PER_DEVICE {
                let n = rng.random_range(1..60);
                let fixes = common::random_fixes(&mut rng, n, start_ms);
                let ack = dev.send(seq, &fixes).await.unwrap();
                assert_eq!(
                    Status::from_code(ack.status),
                    Some(Status::Ok),
                    "{}",
                    ack.reason
                );
                acked.push((seq, fixes));
            }
            // A resend (as after a lost ack) is recognised and stored once.
            let (seq, fixes) = &acked[1];
            let ack = dev.send(*seq, fixes).await.unwrap();
            assert_eq!(
                Status::from_code(ack.status),
                Some(Status::Duplicate),
                "{}",
                ack.reason
            );
            dev.close().await;
            (device_id, acked)
        }));
    }
    let mut expected: BTreeMap<(i64, i64, i64, i64, i64), usize> = BTreeMap::new();
    let mut add = |device_id: u64, seq: u64, f: &Fixes| {
        for i in 0..f.len() {
            let key = (
                device_id as i64,
                seq as i64,
                f.time_ms[i] * 1000,
                i64::from(f.lat_e7[i]),
                i64::from(f.lon_e7[i]),
            );
            *expected.entry(key).or_insert(0) += 1;
        }
    };
    for t in tasks {
        let (device_id, acked) = t.await.unwrap();
        for (seq, f) in &acked {
            add(device_id, *seq, f);
        }
    }
    let (seq, f) = hostile.await.unwrap();
    add(HOSTILE_DEVICE, seq, &f);

    // Silence: everyone reported around start_ms. Two days and a minute later only device 2
    // reports again; device 1 must be warned, device 2 must not.
    let ts = Arc::try_unwrap(ts).ok().expect("all tasks done");
    assert!(ts.server.scan_now().is_empty(), "nobody is silent yet");
    clock.advance_ms((cfg.silence.warning_after_s as i64 + 60) * 1000);
    let now_ms = start_ms + (cfg.silence.warning_after_s as i64 + 60) * 1000;
    let dev2 = Device::connect(&ep, client_cfg(&ts, 2)).await.unwrap();
    let late = common::random_fixes(&mut rand::rngs::SmallRng::seed_from_u64(99), 5, now_ms);
    let ack = dev2.send(100, &late).await.unwrap();
    assert_eq!(
        Status::from_code(ack.status),
        Some(Status::Ok),
        "{}",
        ack.reason
    );
    add(2, 100, &late);
    dev2.close().await;
    let events = ts.server.scan_now();
    let warned: Vec<u64> = events.iter().map(|e| e.device_id).collect();
    assert!(warned.contains(&1), "silent device 1 flagged: {events:?}");
    assert!(!warned.contains(&2), "reporting device 2 not flagged");
    assert_eq!(
        warned.len() as u64,
        DEVICES,
        "all but device 2, plus the hostile device"
    );
    assert!(
        ts.server.scan_now().is_empty(),
        "each transition is emitted once"
    );
    let log = std::fs::read_to_string(&ts.server.paths().events_path).unwrap();
    assert_eq!(
        log.lines().count() as u64,
        DEVICES,
        "one events-log line per transition"
    );
    assert!(log.lines().any(|l| l.contains("\"device_id\":1,")), "{log}");

    // Graceful shutdown flushes everything acked to Parquet.
    let data_dir = ts.data_dir.clone();
    ts.server.shutdown().await.unwrap();
    let rows = common::read_positions(&data_dir);
    let stored = common::count_by_key(&rows);
    assert_eq!(
        rows.len(),
        expected.values().sum::<usize>(),
        "row count equals acked fixes"
    );
    assert_eq!(
        stored, expected,
        "Parquet holds exactly the acked fixes, each once"
    );
    check_h3(&rows, cfg.storage.h3_resolution);
}

fn check_h3(rows: &[Row], res: u8) {
    let res = h3o::Resolution::try_from(res).unwrap();
    for r in rows {
        let cell = h3o::LatLng::new(r.lat, r.lon).unwrap().to_cell(res);
        assert_eq!(r.h3, u64::from(cell) as i64, "h3 of {r:?}");
    }
}
