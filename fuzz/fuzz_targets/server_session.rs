//! Arbitrary bytes as a device's stream, fed to a server session in arbitrary chunks, with
//! and without a valid HELLO in front: the session must never panic, never buffer more
//! than it was given, end at most once, and keep its in-flight table within the limit.
#![no_main]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fix::DeviceId;
use ingest::auth::TokenKey;
use ingest::proto::server::{
    Confirms, ServerContext, ServerOutput, ServerSession, SessionConfig, SinkOutcome,
};
use ingest::wire::{self, Status};
use libfuzzer_sys::fuzz_target;

const NOW_MS: i64 = 1_700_000_000_000;

/// One outstanding request (id 1) for every device, answerable once.
struct OneRequest(AtomicBool);

impl Confirms for OneRequest {
    fn outstanding_request_id(&self, _: DeviceId) -> Option<u64> {
        (!self.0.load(Ordering::Acquire)).then_some(1)
    }
    fn answer(&self, _: DeviceId, request_id: u64) -> bool {
        request_id == 1 && !self.0.swap(true, Ordering::AcqRel)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let key = TokenKey::from_bytes(&[3; 32]).expect("32-byte key");
    let cfg = SessionConfig {
        inflight_batches_max: 2,
        confirm_rejects_max: 2,
        oversize_discard_bytes_max: 1 << 20,
        limits: wire::Limits {
            batch_bytes_max: 4096,
            ..wire::Limits::default()
        },
        ..SessionConfig::default()
    };
    let ctx = Arc::new(ServerContext {
        cfg,
        key: key.clone(),
        confirms: Arc::new(OneRequest(AtomicBool::new(false))),
    });
    let mut stream = Vec::new();
    if control & 1 == 1 {
        let hello = wire::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            token: key.mint(DeviceId::try_from(5).expect("valid id")),
            client_agent: "fuzz".into(),
        };
        wire::encode_hello(&hello, &mut stream);
    }
    stream.extend_from_slice(data);
    let chunk = usize::from(control >> 1).max(1);
    let mut session = ServerSession::new(ctx, 0);
    let mut sink = VecDeque::new();
    let mut ends = 0;
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        while !session.wants_read() && !sink.is_empty() {
            let ticket = sink.pop_front().expect("non-empty");
            let status = if sink.len() % 2 == 0 {
                Status::Ok
            } else {
                Status::Overloaded
            };
            let outcome = SinkOutcome {
                status,
                reason: String::new(),
                retry_after_ms: 0,
            };
            session.on_sink_outcome(NOW_MS, ticket, outcome);
            pump(&mut session, &mut sink, &mut ends);
        }
        session.handle_data(NOW_MS, piece);
        pump(&mut session, &mut sink, &mut ends);
        assert!(session.buffered_bytes() <= stream.len());
        assert!(session.inflight() <= 2);
    }
    if control & 0x80 != 0 {
        session.handle_eof();
    } else {
        session.shutdown();
    }
    while let Some(ticket) = sink.pop_front() {
        session.on_sink_outcome(NOW_MS, ticket, SinkOutcome::ok());
        pump(&mut session, &mut sink, &mut ends);
    }
    session.handle_timeout(u64::MAX);
    pump(&mut session, &mut sink, &mut ends);
    session.poll_transmit(&mut out);
    assert_eq!(ends, 1, "every session ends exactly once");
});

fn pump(
    session: &mut ServerSession,
    sink: &mut VecDeque<ingest::proto::server::Ticket>,
    ends: &mut u32,
) {
    while let Some(o) = session.poll_output() {
        match o {
            ServerOutput::Submit(s) => sink.push_back(s.ticket),
            ServerOutput::Authenticated { .. } => session.attached(NOW_MS, None),
            ServerOutput::End(_) => *ends += 1,
            _ => {}
        }
    }
}
