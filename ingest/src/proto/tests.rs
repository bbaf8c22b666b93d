//! Both sessions stepped against each other in memory, quinn-proto `Pair` style: a
//! controlled clock, a byte pipe per direction that holds client bytes while the server
//! does not read (QUIC flow control), a fake sink that answers when told, the real
//! confirm registry. One test (or more) per frame rule of `docs/PROTOCOL.md`.

use std::collections::VecDeque;
use std::sync::Arc;

use fix::{DeviceId, Fix, Fixes};
use proptest::prelude::*;

use super::Now;
use super::client::{ClientEvent, ClientSession, SessionError};
use super::confirm::{Raised, Registry};
use super::server::{
    Confirms, Ending, HELLO_BYTES_MAX, ServerContext, ServerOutput, ServerSession, SessionConfig,
    SessionState, SinkOutcome, Submission, Ticket,
};
use crate::auth::{Authenticator, ConfirmMasterKey, TokenKey};
use crate::wire::{self, CONTROL_FRAME_BODY_BYTES_MAX, ConfirmKey, ConfirmKind, FrameType, Status};

/// Wall time of every test (Unix ms).
const T0_MS: i64 = 1_700_000_000_000;

fn key() -> TokenKey {
    TokenKey::from_bytes(&[7; 32]).expect("32-byte key")
}

fn dev(id: u64) -> DeviceId {
    DeviceId::try_from(id).expect("valid id")
}

fn token(id: u64) -> String {
    key().mint(dev(id))
}

fn auth() -> Arc<Authenticator> {
    let confirm = ConfirmMasterKey::from_bytes(&[8; 32]).expect("32-byte key");
    Arc::new(Authenticator::v1_only(key(), confirm))
}

/// Wall time `T0_MS` at monotonic time 0.
fn t0() -> Now {
    Now {
        wall_ms: T0_MS,
        mono_ms: 0,
    }
}

fn fixes(n: usize) -> Fixes {
    let mut f = Fixes::default();
    for i in 0..n {
        f.push(&Fix::from_degrees(T0_MS - 1_000 + i as i64, 52.5, 13.4));
    }
    f
}

fn frame(frame_type: FrameType, body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    wire::encode_frame(frame_type, body, &mut out);
    out
}

fn header(frame_type: FrameType, len: u32) -> Vec<u8> {
    let mut out = vec![frame_type.to_byte()];
    out.extend_from_slice(&len.to_be_bytes());
    out
}

fn hello_frame(token: &str) -> Vec<u8> {
    let mut out = vec![];
    ClientSession::<(), ()>::encode_hello(token, "pair/1", &mut out);
    out
}

fn batch_frame(seq: u64, n: usize) -> Vec<u8> {
    let mut out = vec![];
    wire::encode_batch_frame_raw(seq, &fixes(n), &mut out).expect("encodes");
    out
}

fn confirm_frame(c: &wire::Confirm) -> Vec<u8> {
    let mut out = vec![];
    wire::encode_confirm(c, &mut out);
    out
}

fn close_frame(status: Status) -> Vec<u8> {
    let mut out = vec![];
    let close = wire::Close {
        status: status.code(),
        reason: "bye".into(),
        retry_after_ms: 0,
    };
    wire::encode_close(&close, &mut out);
    out
}

/// Splits well-formed frames written by the server.
fn split_frames(mut bytes: &[u8]) -> Vec<(FrameType, Vec<u8>)> {
    let mut frames = vec![];
    while !bytes.is_empty() {
        let (h, rest) = bytes.split_first_chunk::<5>().expect("whole header");
        let h = wire::parse_frame_header(h).expect("server writes valid headers");
        let (body, rest) = rest.split_at(h.len as usize);
        frames.push((h.frame_type, body.to_vec()));
        bytes = rest;
    }
    frames
}

/// A server session and a client session joined by in-memory pipes.
struct Pair {
    server: ServerSession,
    client: ClientSession<u64, u64>,
    registry: Arc<Registry<u32>>,
    now_ms: i64,
    mono_ms: u64,
    /// Client → server bytes the server has not read yet.
    to_server: VecDeque<u8>,
    /// Largest read of the server's driver.
    chunk_max: usize,
    /// The device finished its stream after `to_server`.
    client_finished: bool,
    eof_delivered: bool,
    /// Batches at the fake sink, oldest first.
    sink: VecDeque<Submission>,
    /// Every server output but `Submit`, in order.
    log: Vec<ServerOutput>,
    /// Every frame the server wrote, in order.
    frames: Vec<(FrameType, Vec<u8>)>,
    client_events: Vec<ClientEvent<u64, u64>>,
    /// The most bytes the server ever buffered.
    buffered_max: usize,
}

impl Pair {
    fn new(cfg: SessionConfig) -> Self {
        Pair::with_auth(cfg, auth())
    }

    /// A pair whose server verifies tokens with `auth`.
    fn with_auth(cfg: SessionConfig, auth: Arc<Authenticator>) -> Self {
        let registry = Arc::new(Registry::new(100, 1));
        let ctx = Arc::new(ServerContext {
            cfg,
            auth,
            confirms: registry.clone(),
        });
        let mono_ms = 1_000;
        Pair {
            server: ServerSession::new(ctx, mono_ms),
            client: ClientSession::new(16),
            registry,
            now_ms: T0_MS,
            mono_ms,
            to_server: VecDeque::new(),
            chunk_max: 64 * 1024,
            client_finished: false,
            eof_delivered: false,
            sink: VecDeque::new(),
            log: vec![],
            frames: vec![],
            client_events: vec![],
            buffered_max: 0,
        }
    }

    /// A pair whose device 5 is authenticated.
    fn connected(cfg: SessionConfig) -> Self {
        let mut p = Pair::new(cfg);
        p.send(&hello_frame(&token(5)));
        p.drive();
        assert_eq!(p.server.state(), SessionState::Open);
        assert!(p.client.welcome().is_some());
        p.log.clear();
        p.frames.clear();
        p.client_events.clear();
        p
    }

    fn now(&self) -> Now {
        Now {
            wall_ms: self.now_ms,
            mono_ms: self.mono_ms,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.to_server.extend(bytes);
    }

    fn send_batch(&mut self, seq: u64, n: usize) {
        self.client
            .register_batch(seq, seq)
            .expect("room for the batch");
        self.send(&batch_frame(seq, n));
    }

    fn finish(&mut self) {
        self.client_finished = true;
    }

    /// One round: the server reads what flow control lets through, acts on its outputs,
    /// and the client reads what the server wrote. False when nothing moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        while self.server.wants_read() && !self.to_server.is_empty() {
            let n = self.chunk_max.min(self.to_server.len());
            let chunk: Vec<u8> = self.to_server.drain(..n).collect();
            self.server.handle_data(self.now(), &chunk);
            self.buffered_max = self.buffered_max.max(self.server.buffered_bytes());
            self.apply_outputs();
            moved = true;
        }
        let reading = self.server.wants_read();
        if self.client_finished && self.to_server.is_empty() && !self.eof_delivered && reading {
            self.eof_delivered = true;
            self.server.handle_eof();
            self.apply_outputs();
            moved = true;
        }
        let mut out = vec![];
        self.server.poll_transmit(&mut out);
        if !out.is_empty() {
            self.frames.extend(split_frames(&out));
            self.client.handle_data(&out);
            self.client_events
                .extend(std::iter::from_fn(|| self.client.poll_event()));
            moved = true;
        }
        moved
    }

    fn drive(&mut self) {
        while self.step() {}
    }

    fn apply_outputs(&mut self) {
        while let Some(o) = self.server.poll_output() {
            match o {
                ServerOutput::Submit(s) => self.sink.push_back(s),
                ServerOutput::Authenticated { claims } => {
                    let request = self.registry.attach(claims.device_id, 1, 1);
                    self.log.push(o);
                    self.server.attached(self.now(), request.as_deref());
                }
                other => self.log.push(other),
            }
        }
    }

    /// The fake sink answers its oldest `n` batches.
    fn answer(&mut self, n: usize, outcome: &SinkOutcome) {
        for _ in 0..n {
            let s = self.sink.pop_front().expect("a batch at the sink");
            self.server
                .on_sink_outcome(self.now(), s.ticket, outcome.clone());
            self.apply_outputs();
        }
        self.drive();
    }

    fn advance(&mut self, ms: u64) {
        self.mono_ms += ms;
        self.now_ms += ms as i64;
        self.server.handle_timeout(self.mono_ms);
        self.apply_outputs();
        self.drive();
    }

    fn ending(&self) -> Option<&Ending> {
        self.log.iter().find_map(|o| match o {
            ServerOutput::End(e) => Some(e),
            _ => None,
        })
    }

    fn types(&self) -> Vec<FrameType> {
        self.frames.iter().map(|(t, _)| *t).collect()
    }

    fn acks(&self) -> Vec<wire::Ack> {
        self.frames
            .iter()
            .filter(|(t, _)| *t == FrameType::Ack)
            .map(|(_, b)| wire::decode_ack(b).expect("ack"))
            .collect()
    }

    fn confirm_acks(&self) -> Vec<wire::ConfirmAck> {
        self.frames
            .iter()
            .filter(|(t, _)| *t == FrameType::ConfirmAck)
            .map(|(_, b)| wire::decode_confirm_ack(b).expect("confirm ack"))
            .collect()
    }

    /// (batch seq, status) of every ACK, in order.
    fn ack_statuses(&self) -> Vec<(u64, Option<Status>)> {
        let acks = self.acks();
        acks.iter()
            .map(|a| (a.batch_seq, a.known_status()))
            .collect()
    }

    /// (request id, status) of every CONFIRM_ACK, in order.
    fn confirm_statuses(&self) -> Vec<(u64, Option<Status>)> {
        let acks = self.confirm_acks();
        acks.iter()
            .map(|a| (a.request_id, a.known_status()))
            .collect()
    }

    fn close(&self) -> Option<wire::Close> {
        let (t, b) = self.frames.last()?;
        (*t == FrameType::Close).then(|| wire::decode_close(b).expect("close"))
    }

    fn contacts(&self) -> Vec<i64> {
        self.log
            .iter()
            .filter_map(|o| match o {
                ServerOutput::Contact { now_ms } => Some(*now_ms),
                _ => None,
            })
            .collect()
    }
}

/// Asserts the session ended with a CLOSE frame of `status` whose reason contains `needle`,
/// as both the last frame and the ending.
fn assert_closed(p: &Pair, status: Status, needle: &str) {
    let close = p.close().expect("a CLOSE frame is the last frame");
    assert_eq!(
        Status::from_code(close.status),
        Some(status),
        "{}",
        close.reason
    );
    assert!(
        close.reason.contains(needle),
        "{:?} lacks {needle:?}",
        close.reason
    );
    assert_eq!(
        p.ending(),
        Some(&Ending::Close {
            status,
            reason: close.reason.clone()
        })
    );
    assert_eq!(p.server.state(), SessionState::Ended);
}

fn limits_small() -> SessionConfig {
    SessionConfig {
        limits: wire::Limits {
            batch_bytes_max: 100,
            ..wire::Limits::default()
        },
        oversize_discard_bytes_max: 1_000,
        ..SessionConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// HELLO and the first frame (PROTOCOL.md §3)

#[test]
fn no_hello_within_the_deadline_is_a_protocol_violation_with_a_close_frame() {
    let mut p = Pair::new(SessionConfig::default());
    assert_eq!(p.server.poll_timeout(), Some(1_000 + 10_000));
    p.send(&header(FrameType::Hello, 30)[..3]);
    p.drive();
    p.advance(9_999);
    assert_eq!(p.server.state(), SessionState::AwaitingHello);
    p.advance(1);
    assert_closed(&p, Status::ProtocolViolation, "no HELLO within 10000 ms");
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn a_valid_hello_is_welcomed_with_the_servers_limits() {
    let cfg = SessionConfig {
        inflight_batches_max: 3,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.send(&hello_frame(&token(5)));
    p.drive();
    assert_eq!(p.types(), [FrameType::Welcome]);
    let w = wire::decode_welcome(&p.frames[0].1).expect("welcome");
    let l = wire::Limits::default();
    assert_eq!(
        w,
        wire::Welcome {
            device_id: 5,
            batch_bytes_max: l.batch_bytes_max,
            batch_fixes_max: l.batch_fixes_max,
            inflight_batches_max: 3,
            decompressed_bytes_max: l.decompressed_bytes_max,
            server_time_ms: T0_MS,
            dedup_window_batches: 64,
        }
    );
    assert_eq!(
        p.log[..2],
        [
            ServerOutput::Authenticated {
                claims: crate::auth::Claims {
                    device_id: dev(5),
                    key_id: 0,
                    issued_s: 0,
                    expires_s: None
                }
            },
            ServerOutput::Contact { now_ms: T0_MS }
        ]
    );
    assert_eq!(
        p.server.poll_timeout(),
        Some(1_000 + 60_000),
        "the HELLO deadline is replaced by the idle deadline"
    );
    assert_eq!(p.client.inflight_max(), 3, "min(16, 3)");
    assert!(matches!(&p.client_events[0], ClientEvent::Welcomed(got) if *got == w));
}

#[test]
fn any_first_frame_but_hello_is_a_protocol_violation() {
    for first in [
        batch_frame(1, 1),
        frame(FrameType::Heartbeat, &[]),
        close_frame(Status::Ok),
    ] {
        let mut p = Pair::new(SessionConfig::default());
        p.send(&first);
        p.drive();
        assert_closed(&p, Status::ProtocolViolation, "first frame must be HELLO");
        assert_eq!(p.types(), [FrameType::Close], "no WELCOME");
    }
}

#[test]
fn a_token_that_does_not_verify_is_unauthenticated() {
    let other = TokenKey::from_bytes(&[8; 32]).expect("key").mint(dev(5));
    for bad in [other.as_str(), "hf1.5.zz", ""] {
        let mut p = Pair::new(SessionConfig::default());
        p.send(&hello_frame(bad));
        p.drive();
        assert_closed(
            &p,
            Status::Unauthenticated,
            "token not valid for this server",
        );
        assert!(
            matches!(p.log[0], ServerOutput::AuthFailed { .. }),
            "{:?}",
            p.log
        );
        assert!(matches!(
            p.client_events.last(),
            Some(ClientEvent::Ended(SessionError::Rejected {
                status: Status::Unauthenticated,
                ..
            }))
        ));
    }
}

#[test]
fn another_protocol_version_is_unsupported() {
    let mut p = Pair::new(SessionConfig::default());
    let mut out = vec![];
    let hello = wire::Hello {
        protocol_version: 2,
        token: token(5),
        client_agent: String::new(),
    };
    wire::encode_hello(&hello, &mut out);
    p.send(&out);
    p.drive();
    assert_closed(
        &p,
        Status::UnsupportedVersion,
        "protocol version 2 not supported",
    );
}

#[test]
fn hello_is_capped_at_1024_bytes_from_its_header() {
    let padded = |len: usize| {
        let mut hello = wire::Hello {
            protocol_version: 1,
            token: token(5),
            client_agent: String::new(),
        };
        let base = prost::Message::encoded_len(&hello);
        // One tag byte and a two-byte length prefix for agents of 128..16383 bytes.
        hello.client_agent = "a".repeat(len - base - 3);
        let mut out = vec![];
        wire::encode_hello(&hello, &mut out);
        assert_eq!(out.len(), 5 + len);
        out
    };
    let mut p = Pair::new(SessionConfig::default());
    p.send(&padded(HELLO_BYTES_MAX as usize));
    p.drive();
    assert_eq!(
        p.server.state(),
        SessionState::Open,
        "1024 bytes are accepted"
    );
    let mut p = Pair::new(SessionConfig::default());
    p.send(&header(FrameType::Hello, HELLO_BYTES_MAX + 1));
    p.drive();
    assert_closed(
        &p,
        Status::MalformedFrame,
        "HELLO is 1025 bytes, at most 1024",
    );
}

#[test]
fn an_undecodable_hello_is_malformed() {
    let mut p = Pair::new(SessionConfig::default());
    p.send(&frame(FrameType::Hello, &[0xff, 0xff]));
    p.drive();
    assert_closed(&p, Status::MalformedFrame, "undecodable HELLO");
}

#[test]
fn the_end_of_the_stream_before_hello_is_a_protocol_violation() {
    let mut p = Pair::new(SessionConfig::default());
    p.finish();
    p.drive();
    assert_closed(
        &p,
        Status::ProtocolViolation,
        "stream finished before HELLO",
    );
}

// ---------------------------------------------------------------------------------------
// Frame headers (PROTOCOL.md §2)

#[test]
fn an_unknown_frame_type_is_malformed() {
    // Before HELLO, too.
    let mut p = Pair::new(SessionConfig::default());
    p.send(&[0x0a, 0, 0, 0, 0]);
    p.drive();
    assert_closed(&p, Status::MalformedFrame, "unknown frame type 0x0a");
    // After WELCOME: CLOSE(MALFORMED_FRAME).
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&[0x00, 0, 0, 0, 0]);
    p.drive();
    assert_closed(&p, Status::MalformedFrame, "unknown frame type 0x00");
}

#[test]
fn frames_a_device_must_not_send_are_protocol_violations() {
    for t in [
        FrameType::Hello,
        FrameType::Welcome,
        FrameType::Ack,
        FrameType::ConfirmRequest,
        FrameType::ConfirmAck,
    ] {
        let mut p = Pair::connected(SessionConfig::default());
        // Refused from the header: even a huge announced body is never read.
        p.send(&header(t, u32::MAX));
        p.drive();
        assert_closed(
            &p,
            Status::ProtocolViolation,
            "is not allowed from a device here",
        );
        assert!(p.buffered_max <= 5, "{}", p.buffered_max);
    }
}

#[test]
fn a_control_frame_over_16384_bytes_is_malformed_before_its_body() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&header(
        FrameType::Confirm,
        CONTROL_FRAME_BODY_BYTES_MAX + 1,
    ));
    p.drive();
    assert_closed(
        &p,
        Status::MalformedFrame,
        "CONFIRM body of 16385 bytes exceeds 16384",
    );
    // At the limit the body is read (and, being noise, refused as a CONFIRM).
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&frame(
        FrameType::Confirm,
        &vec![0xff; CONTROL_FRAME_BODY_BYTES_MAX as usize],
    ));
    p.drive();
    assert_eq!(
        p.confirm_acks()[0].known_status(),
        Some(Status::MalformedFrame)
    );
    assert_eq!(p.server.state(), SessionState::Open);
}

#[test]
fn a_heartbeat_with_a_body_is_malformed() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&frame(FrameType::Heartbeat, &[0]));
    p.drive();
    assert_closed(
        &p,
        Status::MalformedFrame,
        "HEARTBEAT must be empty, got 1 bytes",
    );
}

#[test]
fn heartbeats_count_as_contact_and_get_no_answer() {
    let mut p = Pair::connected(SessionConfig::default());
    let mut hb = vec![];
    wire::encode_heartbeat(&mut hb);
    p.send(&hb);
    p.drive();
    p.now_ms += 30_000;
    p.send(&hb);
    p.drive();
    assert_eq!(p.contacts(), [T0_MS, T0_MS + 30_000]);
    assert!(p.frames.is_empty(), "no answer to a heartbeat");
    assert_eq!(p.server.state(), SessionState::Open);
}

// ---------------------------------------------------------------------------------------
// BATCH (PROTOCOL.md §4)

#[test]
fn batches_are_submitted_and_acked_after_the_sink() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(7, 3);
    p.drive();
    assert!(p.acks().is_empty(), "no ack before the sink decided");
    let s = p.sink.front().expect("submitted");
    assert_eq!(
        (s.batch_seq, s.received_at_ms, s.fixes.len()),
        (7, T0_MS, 3)
    );
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.acks(), [wire::Ack::new(7, Status::Ok, "")]);
    assert!(p.log.contains(&ServerOutput::Acked {
        batch_seq: 7,
        status: Status::Ok,
        newest_fix_ms: Some(T0_MS - 998),
        fixes: 3,
        now_ms: T0_MS
    }));
    assert!(matches!(
        &p.client_events[0],
        ClientEvent::Acked { waiter: 7, .. }
    ));
}

#[test]
fn undecodable_batches_are_acked_with_their_own_status() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&batch_frame(0, 1));
    let mut body = 9u64.to_be_bytes().to_vec();
    p.send(&frame(FrameType::Batch, &body)); // 8 bytes: seq known, no encoding
    body.push(7);
    p.send(&frame(FrameType::Batch, &body)); // encoding 7
    p.send(&frame(FrameType::Batch, &[1, 2, 3])); // no seq
    p.drive();
    assert_eq!(
        p.ack_statuses(),
        [
            (0, Some(Status::InvalidSequence)),
            (9, Some(Status::MalformedFrame)),
            (9, Some(Status::UnsupportedEncoding)),
            // Deviation (issue 11): a body under 8 bytes is acked with seq 0.
            (0, Some(Status::MalformedFrame)),
        ]
    );
    assert!(p.sink.is_empty());
}

#[test]
fn an_oversized_batch_within_the_discard_limit_is_dropped_as_it_arrives() {
    let mut p = Pair::connected(limits_small());
    p.chunk_max = 3; // the seq arrives split over three reads
    let mut body = 42u64.to_be_bytes().to_vec();
    body.resize(500, 0xab);
    p.send(&frame(FrameType::Batch, &body));
    p.drive();
    assert!(p.buffered_max <= 5, "buffered {} bytes", p.buffered_max);
    p.send_batch(43, 1); // the connection lives on
    p.drive();
    let ack = &p.acks()[0];
    assert_eq!(
        (ack.batch_seq, ack.known_status()),
        (42, Some(Status::BatchTooLarge))
    );
    assert_eq!(
        ack.reason,
        "BATCH body is 500 bytes, batch_bytes_max is 100"
    );
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.acks()[1], wire::Ack::new(43, Status::Ok, ""));
}

#[test]
fn the_oversize_discard_limit_holds_at_its_edge() {
    // At oversize_discard_bytes_max: discarded and acked.
    let mut p = Pair::connected(limits_small());
    let mut body = 1u64.to_be_bytes().to_vec();
    body.resize(1_000, 0);
    p.send(&frame(FrameType::Batch, &body));
    p.drive();
    assert_eq!(p.acks()[0].known_status(), Some(Status::BatchTooLarge));
    assert_eq!(p.server.state(), SessionState::Open);
    // One byte more: the connection is closed, from the header alone.
    let mut p = Pair::connected(limits_small());
    p.send(&header(FrameType::Batch, 1_001));
    p.drive();
    assert_closed(
        &p,
        Status::BatchTooLarge,
        "BATCH frame of 1001 bytes exceeds 1000 (batch_bytes_max 100); closing",
    );
    // batch_bytes_max itself is accepted.
    let mut p = Pair::connected(limits_small());
    let mut body = 3u64.to_be_bytes().to_vec();
    body.resize(100, 0);
    p.send(&frame(FrameType::Batch, &body));
    p.drive();
    assert_ne!(p.acks()[0].known_status(), Some(Status::BatchTooLarge));
}

#[test]
fn an_oversized_body_under_8_bytes_is_acked_with_seq_0() {
    let cfg = SessionConfig {
        limits: wire::Limits {
            batch_bytes_max: 4,
            ..wire::Limits::default()
        },
        ..SessionConfig::default()
    };
    let mut p = Pair::connected(cfg);
    p.send(&frame(FrameType::Batch, &[0, 0, 0, 0, 0, 9]));
    p.drive();
    // Deviation (issue 11): no seq to ack with.
    assert_eq!(
        (p.acks()[0].batch_seq, p.acks()[0].known_status()),
        (0, Some(Status::BatchTooLarge))
    );
}

#[test]
fn at_the_inflight_limit_the_session_stops_reading_until_an_outcome() {
    let cfg = SessionConfig {
        inflight_batches_max: 2,
        ..SessionConfig::default()
    };
    let mut p = Pair::connected(cfg);
    // One frame per read, so what the server does not read stays in the pipe.
    p.chunk_max = batch_frame(1, 1).len();
    for seq in 1..=3 {
        p.send(&batch_frame(seq, 1));
    }
    p.send(&frame(FrameType::Heartbeat, &[]));
    p.drive();
    assert_eq!(p.sink.len(), 2);
    assert_eq!(p.server.inflight(), 2);
    assert!(!p.server.wants_read(), "at the limit");
    assert!(
        !p.to_server.is_empty(),
        "batch 3 waits in the pipe (flow control)"
    );
    assert_eq!(p.contacts().len(), 2, "batch 3's header is not read yet");
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.sink.len(), 2, "batch 3 read once a slot was free");
    assert_eq!(p.sink.back().map(|s| s.batch_seq), Some(3));
    assert!(!p.server.wants_read());
    p.answer(2, &SinkOutcome::ok());
    assert!(p.server.wants_read());
    assert!(p.to_server.is_empty());
    assert_eq!(p.contacts().len(), 4, "the heartbeat was read too");
    let seqs: Vec<_> = p.acks().iter().map(|a| a.batch_seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn sink_rejections_are_acked_with_the_sinks_status_and_retry_hint() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(4, 1);
    p.drive();
    let busy = SinkOutcome {
        status: Status::Overloaded,
        reason: "queue full".into(),
        retry_after_ms: 250,
    };
    p.answer(1, &busy);
    let ack = &p.acks()[0];
    assert_eq!(
        (ack.status, ack.retry_after_ms),
        (Status::Overloaded.code(), 250)
    );
    // An overloaded batch is not "acked" for confirm-location purposes.
    let id = raise(&p, 5);
    let c = good_key().confirm(id, ConfirmKind::Fix, 4, 0);
    p.send(&confirm_frame(&c));
    p.drive();
    assert_eq!(
        p.confirm_acks()[0].known_status(),
        Some(Status::FixNotFound)
    );
}

// ---------------------------------------------------------------------------------------
// Confirm-location (PROTOCOL.md §9)

/// Raises a request for `device`; returns its id.
fn raise(p: &Pair, device: u64) -> u64 {
    match p.registry.request(dev(device), "no fix for 36h", T0_MS) {
        Ok(Raised::New { request, .. }) => request.request_id,
        Ok(Raised::AlreadyOutstanding { request_id }) => request_id,
        Err(e) => panic!("{e}"),
    }
}

fn good_key() -> ConfirmKey {
    ConfirmKey::from_token(&token(5))
}

#[test]
fn an_outstanding_request_is_the_first_frame_after_welcome() {
    let mut p = Pair::new(SessionConfig::default());
    let id = raise(&p, 5);
    p.send(&hello_frame(&token(5)));
    p.send_batch(1, 1); // pipelined right behind HELLO
    p.drive();
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(
        p.types(),
        [
            FrameType::Welcome,
            FrameType::ConfirmRequest,
            FrameType::Ack
        ]
    );
    assert!(matches!(
        &p.client_events[1],
        ClientEvent::ConfirmRequest(r) if r.request_id == id && r.reason == "no fix for 36h"
    ));
}

#[test]
fn a_request_raised_while_connected_is_written_at_once() {
    let mut p = Pair::connected(SessionConfig::default());
    let Ok(Raised::New {
        request,
        link: Some(1),
    }) = p.registry.request(dev(5), "quiet", T0_MS)
    else {
        panic!("the connection is attached");
    };
    assert!(p.server.deliver_confirm_request(&request));
    p.drive();
    assert_eq!(p.types(), [FrameType::ConfirmRequest]);
}

#[test]
fn a_here_answer_is_recorded_once() {
    let mut p = Pair::connected(SessionConfig::default());
    let id = raise(&p, 5);
    p.now_ms += 5;
    let here = good_key().confirm(id, ConfirmKind::Here, 0, 123);
    p.send(&confirm_frame(&here));
    p.drive();
    assert_eq!(
        p.confirm_acks(),
        [wire::ConfirmAck::new(id, Status::Ok, "")]
    );
    assert!(p.log.contains(&ServerOutput::ConfirmRecorded {
        kind: ConfirmKind::Here,
        at_ms: T0_MS + 5
    }));
    assert_eq!(p.registry.pending(), 0);
    p.send(&confirm_frame(&here));
    p.drive();
    assert_eq!(
        p.confirm_acks()[1].known_status(),
        Some(Status::UnsolicitedConfirm)
    );
}

#[test]
fn a_fix_answer_names_a_batch_acked_on_this_connection() {
    let mut p = Pair::connected(SessionConfig::default());
    let id = raise(&p, 5);
    p.send_batch(17, 3);
    p.drive();
    p.answer(1, &SinkOutcome::ok());
    let fix = good_key().confirm(id, ConfirmKind::Fix, 17, 0);
    p.send(&confirm_frame(&fix));
    p.drive();
    assert_eq!(p.confirm_acks()[0].known_status(), Some(Status::Ok));
    assert!(p.log.contains(&ServerOutput::ConfirmRecorded {
        kind: ConfirmKind::Fix,
        at_ms: T0_MS - 998 // the newest fix of batch 17, below the server clock
    }));
}

#[test]
fn a_fix_answer_naming_an_unknown_batch_is_refused_but_not_counted() {
    let cfg = SessionConfig {
        confirm_rejects_max: 0,
        ..SessionConfig::default()
    };
    let mut p = Pair::connected(cfg);
    let id = raise(&p, 5);
    p.send(&confirm_frame(&good_key().confirm(
        id,
        ConfirmKind::Fix,
        999,
        0,
    )));
    p.drive();
    let ack = &p.confirm_acks()[0];
    assert_eq!(ack.known_status(), Some(Status::FixNotFound));
    assert!(
        ack.reason.contains("batch 999 is not among the last 64"),
        "{}",
        ack.reason
    );
    assert_eq!(p.server.state(), SessionState::Open, "not abuse");
    assert_eq!(p.registry.outstanding_request_id(dev(5)), Some(id));
    // The first counted rejection is one too many with confirm_rejects_max = 0.
    p.send(&confirm_frame(&good_key().confirm(
        id + 1,
        ConfirmKind::Here,
        0,
        0,
    )));
    p.drive();
    assert_closed(
        &p,
        Status::ProtocolViolation,
        "more than 0 rejected CONFIRM frames",
    );
}

#[test]
fn confirm_checks_run_in_the_documented_order() {
    let mut p = Pair::connected(SessionConfig::default());
    let id = raise(&p, 5);
    let forged = ConfirmKey::from_token(&token(6));
    let mut bad_kind = good_key().confirm(id, ConfirmKind::Here, 0, 0);
    bad_kind.kind = 3;
    let mut short_sig = good_key().confirm(id, ConfirmKind::Here, 0, 0);
    short_sig.signature.pop();
    p.send(&frame(FrameType::Confirm, &[0xff]));
    p.send(&confirm_frame(&bad_kind));
    // Wrong id and wrong key: "unsolicited" is decided before the signature is checked.
    p.send(&confirm_frame(&forged.confirm(
        id + 1,
        ConfirmKind::Here,
        0,
        0,
    )));
    p.send(&confirm_frame(&forged.confirm(id, ConfirmKind::Here, 0, 0)));
    p.send(&confirm_frame(&short_sig));
    p.drive();
    assert_eq!(
        p.confirm_statuses(),
        [
            (0, Some(Status::MalformedFrame)),
            (id, Some(Status::InvalidField)),
            (id + 1, Some(Status::UnsolicitedConfirm)),
            (id, Some(Status::InvalidSignature)),
            (id, Some(Status::InvalidSignature)),
        ]
    );
    assert!(
        !p.log
            .iter()
            .any(|o| matches!(o, ServerOutput::ConfirmRecorded { .. }))
    );
    assert_eq!(
        p.registry.outstanding_request_id(dev(5)),
        Some(id),
        "refusals leave the request outstanding"
    );
}

#[test]
fn a_confirm_flood_closes_the_connection() {
    let cfg = SessionConfig {
        confirm_rejects_max: 3,
        ..SessionConfig::default()
    };
    let mut p = Pair::connected(cfg);
    let unsolicited = good_key().confirm(77, ConfirmKind::Here, 0, 0);
    for _ in 0..3 {
        p.send(&confirm_frame(&unsolicited));
    }
    p.drive();
    assert_eq!(p.confirm_acks().len(), 3);
    assert_eq!(
        p.server.state(),
        SessionState::Open,
        "3 rejections are allowed"
    );
    p.send(&confirm_frame(&unsolicited));
    p.drive();
    assert_closed(
        &p,
        Status::ProtocolViolation,
        "more than 3 rejected CONFIRM frames on one connection",
    );
    assert_eq!(p.confirm_acks().len(), 3, "the fourth is not answered");
    let rejected = p
        .log
        .iter()
        .filter(|o| matches!(o, ServerOutput::ConfirmRejected { .. }))
        .count();
    assert_eq!(rejected, 3);
}

// ---------------------------------------------------------------------------------------
// Closing (PROTOCOL.md §3) and shutdown

#[test]
fn the_devices_close_drains_pending_acks_without_a_close_frame() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(1, 1);
    p.send_batch(2, 1);
    p.send(&close_frame(Status::Ok));
    p.send_batch(3, 1); // after CLOSE: never read
    p.drive();
    assert_eq!(p.server.state(), SessionState::Draining);
    assert_eq!(p.sink.len(), 2);
    assert!(
        p.ending().is_none(),
        "not before the in-flight batches are acked"
    );
    p.answer(2, &SinkOutcome::ok());
    assert_eq!(p.ending(), Some(&Ending::PeerClosed));
    assert_eq!(
        p.types(),
        [FrameType::Ack, FrameType::Ack],
        "no CLOSE frame"
    );
}

#[test]
fn an_oversized_or_undecodable_close_is_malformed() {
    // Oversized: refused from its header, its body never buffered.
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&header(FrameType::Close, CONTROL_FRAME_BODY_BYTES_MAX + 1));
    p.send(&[0xff; 64]);
    p.drive();
    assert_closed(
        &p,
        Status::MalformedFrame,
        "CLOSE body of 16385 bytes exceeds 16384",
    );
    assert!(p.buffered_max <= 5 + 64);
    // Undecodable.
    let mut p = Pair::connected(SessionConfig::default());
    p.send(&frame(FrameType::Close, &[0xff, 0xff]));
    p.drive();
    assert_closed(&p, Status::MalformedFrame, "undecodable CLOSE");
    // At its edge: a CLOSE of exactly 16 384 bytes is read and is a normal close.
    let mut p = Pair::connected(SessionConfig::default());
    let close = wire::Close {
        status: 0,
        reason: "x".repeat(CONTROL_FRAME_BODY_BYTES_MAX as usize - 3),
        retry_after_ms: 0,
    };
    let mut bytes = vec![];
    wire::encode_close(&close, &mut bytes);
    assert_eq!(bytes.len(), 5 + CONTROL_FRAME_BODY_BYTES_MAX as usize);
    p.send(&bytes);
    p.drive();
    assert_eq!(p.ending(), Some(&Ending::PeerClosed));
    assert!(p.frames.is_empty(), "no CLOSE frame in answer");
}

#[test]
fn the_end_of_the_devices_stream_is_a_close() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(1, 1);
    p.send(&batch_frame(2, 1)[..7]); // cut short by the end of the stream
    p.finish();
    p.drive();
    assert!(p.ending().is_none());
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.ending(), Some(&Ending::PeerClosed));
    assert_eq!(p.acks().len(), 1);
}

#[test]
fn a_fatal_error_waits_for_inflight_acks_then_closes() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(1, 1);
    p.send(&[0x42, 0, 0, 0, 0]);
    p.drive();
    assert_eq!(p.server.state(), SessionState::Draining);
    assert!(p.close().is_none());
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.types(), [FrameType::Ack, FrameType::Close]);
    assert_closed(&p, Status::MalformedFrame, "unknown frame type 0x42");
}

#[test]
fn a_server_close_reaches_the_client_as_a_typed_error() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(1, 1);
    p.drive();
    p.server.shutdown();
    p.answer(1, &SinkOutcome::ok());
    assert_closed(&p, Status::ShuttingDown, "server is shutting down");
    assert!(matches!(
        &p.client_events[0],
        ClientEvent::Acked { waiter: 1, .. }
    ));
    assert!(matches!(
        p.client_events.last(),
        Some(ClientEvent::Ended(SessionError::Rejected {
            status: Status::ShuttingDown,
            ..
        }))
    ));
    assert!(p.client.is_ended());
}

#[test]
fn shutdown_before_hello_closes_at_once() {
    let mut p = Pair::new(SessionConfig::default());
    p.server.shutdown();
    p.apply_outputs();
    p.drive();
    assert_closed(&p, Status::ShuttingDown, "server is shutting down");
}

#[test]
fn shutdown_stops_reading_and_acks_what_is_in_flight() {
    let mut p = Pair::connected(SessionConfig::default());
    p.send_batch(1, 1);
    p.drive();
    p.server.shutdown();
    p.send_batch(2, 1);
    p.drive();
    assert_eq!(p.sink.len(), 1, "nothing read after shutdown");
    p.server.shutdown(); // twice is harmless
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.types(), [FrameType::Ack, FrameType::Close]);
    assert_closed(&p, Status::ShuttingDown, "server is shutting down");
}

// ---------------------------------------------------------------------------------------
// Arbitrary input

/// Feeds `chunks` to a fresh session, answering the sink (OK) whenever the session stops
/// reading and at the end. Returns every output and every transmitted byte.
fn run_chunks(chunks: &[&[u8]]) -> (Vec<ServerOutput>, Vec<u8>) {
    let registry = Arc::new(Registry::<u32>::new(10, 1));
    let _ = registry.request(dev(5), "quiet", T0_MS);
    let ctx = Arc::new(ServerContext {
        cfg: SessionConfig {
            inflight_batches_max: 2,
            ..SessionConfig::default()
        },
        auth: auth(),
        confirms: registry.clone(),
    });
    let mut s = ServerSession::new(ctx, 0);
    let (mut outputs, mut tx, mut sink) = (vec![], vec![], VecDeque::new());
    let pump =
        |s: &mut ServerSession, outputs: &mut Vec<ServerOutput>, sink: &mut VecDeque<Ticket>| {
            while let Some(o) = s.poll_output() {
                match &o {
                    ServerOutput::Submit(sub) => sink.push_back(sub.ticket),
                    ServerOutput::Authenticated { claims } => {
                        let r = registry.attach(claims.device_id, 1, 1);
                        s.attached(t0(), r.as_deref());
                    }
                    _ => {}
                }
                outputs.push(o);
            }
        };
    for chunk in chunks {
        while !s.wants_read() && !sink.is_empty() {
            let t = sink.pop_front().expect("non-empty");
            s.on_sink_outcome(t0(), t, SinkOutcome::ok());
            pump(&mut s, &mut outputs, &mut sink);
        }
        s.handle_data(t0(), chunk);
        pump(&mut s, &mut outputs, &mut sink);
        assert!(s.buffered_bytes() <= chunks.iter().map(|c| c.len()).sum::<usize>());
    }
    while let Some(t) = sink.pop_front() {
        s.on_sink_outcome(t0(), t, SinkOutcome::ok());
        pump(&mut s, &mut outputs, &mut sink);
    }
    s.poll_transmit(&mut tx);
    let ends = outputs
        .iter()
        .filter(|o| matches!(o, ServerOutput::End(_)))
        .count();
    assert!(ends <= 1, "at most one end");
    (outputs, tx)
}

/// A valid stream exercising most frame kinds.
fn valid_stream() -> Vec<u8> {
    let mut s = hello_frame(&token(5));
    for seq in 1..=4 {
        s.extend(batch_frame(seq, seq as usize));
        wire::encode_heartbeat(&mut s);
    }
    s.extend(confirm_frame(&good_key().confirm(
        1,
        ConfirmKind::Fix,
        3,
        0,
    )));
    s.extend(confirm_frame(&good_key().confirm(
        9,
        ConfirmKind::Here,
        0,
        0,
    )));
    s.extend(frame(FrameType::Batch, &[0, 0, 0, 0, 0, 0, 0, 5]));
    s.extend(batch_frame(0, 1));
    s.extend(close_frame(Status::Ok));
    s
}

/// Cuts `bytes` at the given points (taken modulo its length).
fn cut(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

#[test]
fn the_valid_stream_does_what_it_says() {
    let stream = valid_stream();
    let (outputs, tx) = run_chunks(&[&stream]);
    let submitted = outputs
        .iter()
        .filter(|o| matches!(o, ServerOutput::Submit(_)))
        .count();
    assert_eq!(submitted, 4);
    assert!(outputs.contains(&ServerOutput::ConfirmRecorded {
        kind: ConfirmKind::Fix,
        at_ms: T0_MS - 998
    }));
    assert_eq!(outputs.last(), Some(&ServerOutput::End(Ending::PeerClosed)));
    let types: Vec<_> = split_frames(&tx).iter().map(|(t, _)| *t).collect();
    assert_eq!(types.iter().filter(|t| **t == FrameType::Ack).count(), 6);
    assert_eq!(types[..2], [FrameType::Welcome, FrameType::ConfirmRequest]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_valid_stream_split_anywhere_gives_the_same_outputs(
        points in proptest::collection::vec(any::<usize>(), 0..24)
    ) {
        let stream = valid_stream();
        let whole = run_chunks(&[&stream]);
        let chunks = cut(&stream, &points);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(run_chunks(&refs), whole);
    }

    #[test]
    fn arbitrary_bytes_in_arbitrary_chunks_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        points in proptest::collection::vec(any::<usize>(), 0..16),
        after_hello in any::<bool>(),
    ) {
        let mut bytes = if after_hello { hello_frame(&token(5)) } else { vec![] };
        bytes.extend(&data);
        let chunks = cut(&bytes, &points);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let _ = run_chunks(&refs);
    }

    #[test]
    fn arbitrary_frames_after_hello_never_panic(
        frames in proptest::collection::vec((0u8..12, proptest::collection::vec(any::<u8>(), 0..64)), 0..16),
    ) {
        let mut bytes = hello_frame(&token(5));
        for (t, body) in &frames {
            bytes.push(*t);
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(body);
        }
        let _ = run_chunks(&[&bytes]);
    }
}

mod deadlines;
mod identity;
