//! Deadlines and server-side endings (issue 11): frame bodies, idleness, eviction.

use super::*;

#[test]
fn a_frame_body_must_arrive_within_frame_timeout_ms() {
    let mut p = Pair::connected(SessionConfig::default());
    // A slowloris: a BATCH announcing 200 000 bytes, then a trickle.
    p.send(&header(FrameType::Batch, 200_000));
    p.send(&[0; 10]);
    p.drive();
    assert_eq!(p.server.poll_timeout(), Some(1_000 + 20_000));
    for _ in 0..19 {
        p.send(&[0]);
        p.advance(1_000);
    }
    p.advance(999);
    assert_eq!(
        p.server.state(),
        SessionState::Open,
        "not before the deadline"
    );
    assert!(
        p.buffered_max <= 5 + 10 + 19,
        "only received bytes are buffered: {}",
        p.buffered_max
    );
    p.advance(1);
    assert_closed(
        &p,
        Status::ProtocolViolation,
        "frame body of 200000 bytes not complete within 20000 ms (199971 bytes missing)",
    );
}

#[test]
fn a_discarded_body_has_the_same_deadline() {
    let mut p = Pair::connected(limits_small());
    p.send(&header(FrameType::Batch, 900));
    p.send(&[0; 100]);
    p.drive();
    p.advance(20_000);
    assert_closed(&p, Status::ProtocolViolation, "(800 bytes missing)");
}

#[test]
fn a_frame_completing_in_time_disarms_its_deadline() {
    let mut p = Pair::connected(SessionConfig::default());
    let batch = batch_frame(1, 1);
    p.send(&batch[..8]);
    p.drive();
    p.advance(19_999);
    p.send(&batch[8..]);
    p.drive();
    assert_eq!(p.sink.len(), 1);
    assert_eq!(
        p.server.poll_timeout(),
        Some(1_000 + 19_999 + 60_000),
        "the idle deadline counts from the end of the frame"
    );
    p.advance(1);
    assert_eq!(p.server.state(), SessionState::Open);
}

#[test]
fn an_idle_device_is_closed_with_ok_and_frames_keep_it_open() {
    let mut p = Pair::connected(SessionConfig::default());
    let mut hb = vec![];
    wire::encode_heartbeat(&mut hb);
    p.advance(59_999);
    p.send(&hb);
    p.drive();
    p.advance(59_999);
    assert_eq!(
        p.server.state(),
        SessionState::Open,
        "the heartbeat counted"
    );
    // QUIC PINGs never reach the session: time passing without frames is idleness.
    p.advance(1);
    assert_closed(&p, Status::Ok, "idle: no frame for 60000 ms");
}

#[test]
fn time_at_the_inflight_limit_is_not_idleness() {
    let cfg = SessionConfig {
        inflight_batches_max: 1,
        ..SessionConfig::default()
    };
    let mut p = Pair::connected(cfg);
    p.send_batch(1, 1);
    p.drive();
    assert_eq!(
        p.server.poll_timeout(),
        None,
        "waiting for the sink, not the device"
    );
    p.advance(120_000);
    assert_eq!(p.server.state(), SessionState::Open);
    p.answer(1, &SinkOutcome::ok());
    p.advance(59_999);
    assert_eq!(
        p.server.state(),
        SessionState::Open,
        "idleness counts from the ack"
    );
    p.advance(1);
    assert_closed(&p, Status::Ok, "idle");
    assert_eq!(p.acks().len(), 1);
}

#[test]
fn an_evicted_session_acks_what_is_in_flight_then_closes_with_the_status() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(1, 1);
    p.drive();
    p.server.evict(
        Status::SessionReplaced,
        "another connection took over".into(),
    );
    p.send_batch(2, 1);
    p.drive();
    assert_eq!(p.server.state(), SessionState::Draining);
    assert_eq!(p.sink.len(), 1, "nothing read after the eviction");
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.types(), [FrameType::Ack, FrameType::Close]);
    assert_closed(&p, Status::SessionReplaced, "another connection took over");
    assert!(matches!(
        p.client_events.last(),
        Some(ClientEvent::Ended(SessionError::Rejected {
            status: Status::SessionReplaced,
            ..
        }))
    ));
}
