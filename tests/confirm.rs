//! Confirm-location end to end over real QUIC with a controllable clock: a device goes
//! quiet, the server asks it to confirm its location on its live connection, it answers
//! HERE and then with a fresh fix; a disconnected device gets its request right after it
//! reconnects; a forged answer is refused with INVALID_SIGNATURE; the fresh fix lands in
//! the positions table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ManualClock, TestServer};
use ingest::client::{Device, client_endpoint};
use ingest::endpoint::ConfirmDelivery;
use ingest::wire::{self, ConfirmKey, ConfirmKind, ConfirmRequest, Fix, Fixes, FrameType, Status};
use sys::Clock;

const QUIET: u64 = 41;
const OFFLINE: u64 = 42;
const FORGER: u64 = 43;
const DAY_MS: i64 = 86_400_000;

fn fixes_at(time_ms: i64, n: usize) -> Fixes {
    let mut f = Fixes::default();
    for i in 0..n {
        f.push(&Fix::from_degrees(
            time_ms - (n - 1 - i) as i64 * 1000,
            48.8566 + i as f64 * 1e-4,
            2.3522,
        ));
    }
    f
}

async fn next_request(rx: &mut tokio::sync::mpsc::Receiver<ConfirmRequest>) -> ConfirmRequest {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the confirm request arrives on the connection")
        .expect("channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_device_is_asked_and_answers_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let start_ms = common::system_now_ms();
    let clock = ManualClock::new(start_ms);
    let ts = common::start(&common::test_config(dir.path()), clock.clone()).await;
    let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();

    // The device reports once, then goes quiet for two days (the clock is the server's).
    let device = Device::connect(&ep, ts.client_cfg(QUIET)).await.unwrap();
    let mut requests = device.confirm_requests().unwrap();
    let ack = device.send(1, &fixes_at(start_ms, 3)).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok));
    clock.advance_ms(2 * DAY_MS);

    // Connected: the request goes out on its connection at once.
    let delivery = ts
        .server
        .request_confirm(fix::DeviceId::try_from(QUIET).unwrap(), "no fix for 48h")
        .unwrap();
    let ConfirmDelivery::Sent { request_id } = delivery else {
        panic!("expected Sent, got {delivery:?}");
    };
    let req = next_request(&mut requests).await;
    assert_eq!(req.request_id, request_id);
    assert_eq!(req.reason, "no fix for 48h");
    assert_eq!(
        req.requested_at_ms,
        clock.now_ms(),
        "stamped with the server clock"
    );
    let ack = device.confirm_here(request_id).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok), "{}", ack.reason);
    assert_eq!(ack.request_id, request_id);
    let stats = ts.server.endpoint_stats();
    assert_eq!(stats.confirms_recorded.load(Ordering::SeqCst), 1);

    // A second request, answered with a fresh fix (stored like any batch).
    clock.advance_ms(DAY_MS);
    let fix_time_ms = clock.now_ms() - 500;
    let second = ts
        .server
        .request_confirm(fix::DeviceId::try_from(QUIET).unwrap(), "still quiet")
        .unwrap();
    assert!(matches!(second, ConfirmDelivery::Sent { .. }), "{second:?}");
    assert_eq!(
        next_request(&mut requests).await.request_id,
        second.request_id()
    );
    let ack = device
        .confirm_with_fix(second.request_id(), 2, &fixes_at(fix_time_ms, 2))
        .await
        .unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok), "{}", ack.reason);
    assert_eq!(stats.confirms_recorded.load(Ordering::SeqCst), 2);
    // Answered requests are gone: answering again is unsolicited.
    let again = device.confirm_here(second.request_id()).await.unwrap();
    assert_eq!(again.known_status(), Some(Status::UnsolicitedConfirm));
    device.close().await;

    // Not connected: queued, then delivered right after the next WELCOME.
    let queued = ts
        .server
        .request_confirm(fix::DeviceId::try_from(OFFLINE).unwrap(), "no fix for 36h")
        .unwrap();
    assert!(
        matches!(queued, ConfirmDelivery::Queued { .. }),
        "{queued:?}"
    );
    assert_eq!(
        ts.server
            .request_confirm(fix::DeviceId::try_from(OFFLINE).unwrap(), "again")
            .unwrap(),
        ConfirmDelivery::AlreadyOutstanding {
            request_id: queued.request_id()
        },
        "one outstanding request per device"
    );
    let offline = Device::connect(&ep, ts.client_cfg(OFFLINE)).await.unwrap();
    let mut offline_requests = offline.confirm_requests().unwrap();
    assert_eq!(
        next_request(&mut offline_requests).await.request_id,
        queued.request_id()
    );
    let ack = offline.confirm_here(queued.request_id()).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok));
    offline.close().await;
    assert_eq!(stats.confirms_recorded.load(Ordering::SeqCst), 3);

    // A forged answer (signed with another device's token) is refused with its status.
    let forged_id = ts
        .server
        .request_confirm(fix::DeviceId::try_from(FORGER).unwrap(), "quiet")
        .unwrap()
        .request_id();
    let forged = forged_answer(&ts, forged_id).await;
    assert_eq!(forged.known_status(), Some(Status::InvalidSignature));
    assert_eq!(stats.confirms_recorded.load(Ordering::SeqCst), 3);
    assert!(stats.confirms_rejected.load(Ordering::SeqCst) >= 2);

    ts.server.shutdown().await.unwrap();
    // The confirming fix is in the positions table with its own time.
    let rows = common::read_positions(dir.path());
    let confirm_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.device_id == QUIET as i64 && r.batch_seq == 2)
        .collect();
    assert_eq!(confirm_rows.len(), 2);
    assert!(confirm_rows.iter().any(|r| r.time_us == fix_time_ms * 1000));
}

/// Opens a raw connection as FORGER, reads WELCOME and the queued CONFIRM_REQUEST, answers
/// with a HERE signed under QUIET's token, returns the server's CONFIRM_ACK.
async fn forged_answer(ts: &TestServer, request_id: u64) -> wire::ConfirmAck {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(common::raw_client_config(&ts.ca_pem), ts.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = Vec::new();
    wire::encode_hello(
        &wire::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            token: ts.key.mint(fix::DeviceId::try_from(FORGER).unwrap()),
            client_agent: "forger".into(),
        },
        &mut out,
    );
    send.write_all(&out).await.unwrap();
    let mut read = async || {
        let mut h = [0u8; wire::FRAME_HEADER_LEN];
        tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut h))
            .await
            .unwrap()
            .unwrap();
        let h = wire::parse_frame_header(&h).unwrap();
        let mut body = vec![0u8; h.len as usize];
        recv.read_exact(&mut body).await.unwrap();
        (h.frame_type, body)
    };
    assert_eq!(read().await.0, FrameType::Welcome);
    let (t, body) = read().await;
    assert_eq!(
        t,
        FrameType::ConfirmRequest,
        "delivered right after WELCOME"
    );
    assert_eq!(
        wire::decode_confirm_request(&body).unwrap().request_id,
        request_id
    );
    let wrong_key = ConfirmKey::from_token(&ts.key.mint(fix::DeviceId::try_from(QUIET).unwrap()));
    out.clear();
    wire::encode_confirm(
        &wrong_key.confirm(request_id, ConfirmKind::Here, 0, 1),
        &mut out,
    );
    send.write_all(&out).await.unwrap();
    let (t, body) = read().await;
    assert_eq!(t, FrameType::ConfirmAck);
    let ack = wire::decode_confirm_ack(&body).unwrap();
    conn.close(quinn::VarInt::from_u32(0), b"done");
    ack
}

/// A server on a manual clock at the wall time, and one device connected to it: (its data
/// directory, configuration, clock, server, client endpoint, device).
async fn story(
    device_id: u64,
) -> (
    tempfile::TempDir,
    hexflow::config::Config,
    std::sync::Arc<ManualClock>,
    TestServer,
    quinn::Endpoint,
    Device,
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::test_config(dir.path());
    let clock = ManualClock::new(common::system_now_ms());
    let ts = common::start(&cfg, clock.clone()).await;
    let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let device = Device::connect(&ep, ts.client_cfg(device_id))
        .await
        .unwrap();
    (dir, cfg, clock, ts, ep, device)
}

/// The whole story, driven by the scanner: a device reports, goes quiet past its warning
/// threshold, the scan warns it and the server asks it (on its live connection) to confirm;
/// it answers HERE, the next scan records the confirmation; a fresh fix later ends the
/// silence. The events log tells it in order, each transition once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_warns_requests_and_records_the_answer() {
    const STORY: u64 = 77;
    let (_dir, cfg, clock, ts, _ep, device) = story(STORY).await;
    let start_ms = clock.now_ms();
    let mut requests = device.confirm_requests().unwrap();
    let ack = device.send(1, &fixes_at(start_ms, 3)).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok));
    assert!(ts.server.scan_now().is_empty());

    // Quiet past the warning threshold (but not the expiry): the scan warns and asks.
    clock.advance_ms((cfg.silence.warning_after_s as i64 + 60) * 1000);
    device.heartbeat().await.unwrap(); // connected and alive, but no fix
    let now_s = (clock.now_ms() / 1000) as u32;
    for _ in 0..100 {
        let state = ts.server.silence().get(STORY).unwrap();
        if state.last_contact_s >= Some(now_s) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = ts.server.scan_now();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].device_id, STORY);
    assert!(matches!(events[0].kind, silence::EventKind::Warned));
    assert!(
        events[0].last_contact_s > events[0].last_fix_s,
        "contact and fix are tracked apart"
    );
    let req = next_request(&mut requests).await;
    assert!(req.reason.contains("warning"), "{}", req.reason);
    let ack = device.confirm_here(req.request_id).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok), "{}", ack.reason);

    let events = ts.server.scan_now();
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, silence::EventKind::Confirmed { .. })),
        "the confirmation is an event: {events:?}"
    );
    // A fresh fix ends the silence.
    clock.advance_ms(60_000);
    let ack = device.send(2, &fixes_at(clock.now_ms(), 2)).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok));
    let _ = ts.server.scan_now();
    assert!(ts.server.scan_now().is_empty(), "nothing fires twice");

    let log = std::fs::read_to_string(&ts.server.paths().events_path).unwrap();
    let kinds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"device_id\":{STORY},")))
        .map(|l| {
            let k = l.split("\"kind\":\"").nth(1).unwrap();
            &k[..k.find('"').unwrap()]
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"warned"), "{log}");
    assert!(kinds.contains(&"confirmed"), "{log}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "warned").count(),
        1,
        "warned once: {log}"
    );
    device.close().await;
    let data_dir = ts.data_dir.clone();
    ts.server.shutdown().await.unwrap();

    // The Parquet events table tells the same story (flushed at shutdown).
    let parquet_kinds = read_event_kinds(&data_dir.join("events"), STORY);
    assert_eq!(parquet_kinds, kinds, "events table equals the JSON lines");
}

/// `kind` of every row of one device in the Parquet `events` table, ordered by `seq`.
fn read_event_kinds(dir: &std::path::Path, device_id: u64) -> Vec<String> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let mut rows = Vec::new();
    for p in common::parquet_files(dir) {
        for batch in common::read_parquet(&p) {
            let seq = batch
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<Int64Type>();
            let dev = batch
                .column_by_name("device_id")
                .unwrap()
                .as_primitive::<Int64Type>();
            let kind = batch.column_by_name("kind").unwrap().as_string::<i32>();
            for i in 0..batch.num_rows() {
                if dev.value(i) == device_id as i64 {
                    rows.push((seq.value(i), kind.value(i).to_string()));
                }
            }
        }
    }
    rows.sort();
    rows.into_iter().map(|(_, k)| k).collect()
}

/// A request the scanner raised survives a restart (kept in the silence snapshot): after the
/// server comes back the device gets the same request id right after its WELCOME, its answer
/// is matched (OK, not UNSOLICITED_CONFIRM), and the next scan reports it by exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outstanding_request_survives_a_restart_and_its_answer_is_matched() {
    const RESTART: u64 = 78;
    let (_dir, cfg, clock, ts, ep, device) = story(RESTART).await;
    let start_ms = clock.now_ms();
    let ack = device.send(1, &fixes_at(start_ms, 2)).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok));
    device.close().await;
    assert!(ts.server.scan_now().is_empty());
    // Quiet past the warning while disconnected: the scan warns and queues the request.
    clock.advance_ms((cfg.silence.warning_after_s as i64 + 60) * 1000);
    let events = ts.server.scan_now();
    assert_eq!(events.len(), 1, "{events:?}");
    let id = fix::DeviceId::try_from(RESTART).unwrap();
    let before = ts
        .server
        .outstanding_confirm(id)
        .expect("the warning raised a request");
    ts.server.shutdown().await.unwrap();

    let ts = common::start(&cfg, clock.clone()).await;
    // The first scan hands the snapshot's requests back to the endpoint.
    assert!(ts.server.scan_now().is_empty(), "no event fires twice");
    assert_eq!(ts.server.outstanding_confirm(id), Some(before.clone()));
    let device = Device::connect(&ep, ts.client_cfg(RESTART)).await.unwrap();
    let mut requests = device.confirm_requests().unwrap();
    let req = next_request(&mut requests).await;
    assert_eq!(req.request_id, before.request_id, "the same request");
    let ack = device.confirm_here(req.request_id).await.unwrap();
    assert_eq!(ack.known_status(), Some(Status::Ok), "{}", ack.reason);
    let events = ts.server.scan_now();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(
        events[0].kind,
        silence::EventKind::Confirmed { .. }
    ));
    device.close().await;
    ts.server.shutdown().await.unwrap();
}
