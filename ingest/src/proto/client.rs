//! [`ClientSession`]: the device side of one connection's stream, as a state machine, and
//! the pure decisions the client library takes around it (retry delays, what an ACK or a
//! CONFIRM_ACK means for the caller, which confirm requests the app has already seen).
//!
//! # Contract
//! * Sans-IO: no socket, no clock, no task. The driver writes the HELLO built by
//!   [`ClientSession::encode_hello`], feeds received bytes
//!   ([`ClientSession::handle_data`]) and acts on [`ClientEvent`]s.
//! * Waiters are the driver's values (`B` for batch acks, `C` for CONFIRM_ACKs, e.g. the
//!   sending half of a channel), registered by batch seq and by request id; an answer hands
//!   the waiter back with it ([`ClientEvent::Acked`]). At most `inflight_max` waiters of
//!   both kinds together, where `inflight_max = min(ours, WELCOME's)` (WELCOME's 0 means no
//!   server bound). When the session ends every waiter is dropped.
//! * Every frame from the server is checked against [`wire::CONTROL_FRAME_BODY_BYTES_MAX`]
//!   from its header, before its body is buffered; the buffer grows only with received
//!   bytes. Anything a v1 server must not send ends the session with a typed
//!   [`SessionError`].

use std::collections::{HashMap, VecDeque};

use super::recv::RecvBuf;
use crate::wire::{
    self, Ack, CONTROL_FRAME_BODY_BYTES_MAX, ConfirmAck, ConfirmRequest, FrameError, FrameHeader,
    FrameType, Status, StatusClass, Welcome,
};

/// How the client retries a batch or a CONFIRM. Delays use full jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts per batch, the first included (0 is treated as 1). Default 8.
    pub attempts_max: u32,
    /// Backoff cap for the first retry. Default 50 ms.
    pub backoff_initial_ms: u64,
    /// Backoff cap for any retry (the cap doubles per attempt up to this). Default 5 s.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 8,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `failed_attempts` (≥ 1) failures. Pure: `random`
    /// is any random u64.
    ///
    /// Without a server hint the delay is uniform in `[0, cap]` (full jitter) where
    /// `cap = min(backoff_max_ms, backoff_initial_ms * 2^(failed_attempts - 1))`. With a
    /// server hint it is `retry_after_ms` plus a jitter uniform in
    /// `[0, min(cap, retry_after_ms)]`: never earlier than the server asked.
    pub fn delay_ms(&self, failed_attempts: u32, retry_after_ms: u32, random: u64) -> u64 {
        let doublings = failed_attempts.saturating_sub(1).min(63);
        let cap = self
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        if retry_after_ms > 0 {
            let hint = u64::from(retry_after_ms);
            hint + random % (cap.min(hint) + 1)
        } else {
            random % (cap + 1)
        }
    }

    /// The retry decision after `failed_attempts` failed attempts: `None` when every attempt
    /// is used, else the delay before the next one ([`RetryPolicy::delay_ms`]).
    pub fn retry_delay_ms(
        &self,
        failed_attempts: u32,
        retry_after_ms: u32,
        random: u64,
    ) -> Option<u64> {
        (failed_attempts < self.attempts_max.max(1))
            .then(|| self.delay_ms(failed_attempts, retry_after_ms, random))
    }
}

/// Why the server ended a session, or refused at connection level, as read from the stream
/// or the connection's close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The server closed with status OK (for example an idle device).
    #[error("the server closed the connection: {reason}")]
    ServerClosed {
        /// The server's reason.
        reason: String,
    },
    /// The server refused with this status (connection level, or transient).
    #[error("rejected with {status}: {reason}")]
    Rejected {
        /// The server's status.
        status: Status,
        /// The server's reason.
        reason: String,
        /// The server's retry hint (0 = none).
        retry_after_ms: u32,
    },
    /// A status code protocol v1 does not define.
    #[error("server sent unknown status {code}: {reason}")]
    UnknownStatus {
        /// The code.
        code: u32,
        /// The server's reason.
        reason: String,
    },
    /// A frame a v1 client must not receive at this point.
    #[error("server sent an unexpected {frame_type} frame")]
    UnexpectedFrame {
        /// The frame's type.
        frame_type: FrameType,
    },
    /// A frame that could not be decoded, or whose header announced too long a body.
    #[error("server sent a bad frame: {0}")]
    BadFrame(#[source] FrameError),
}

impl SessionError {
    /// Classifies a status the server closed with (CLOSE frame or QUIC application close
    /// code) or acked with at connection level.
    pub fn from_status(code: u32, reason: String, retry_after_ms: u32) -> Self {
        match Status::from_code(code) {
            Some(s) if s.is_success() => SessionError::ServerClosed { reason },
            Some(status) => SessionError::Rejected {
                status,
                reason,
                retry_after_ms,
            },
            None => SessionError::UnknownStatus { code, reason },
        }
    }

    /// The error a CLOSE body stands for.
    pub fn from_close(body: &[u8]) -> Self {
        match wire::decode_close(body) {
            Ok(c) => SessionError::from_status(c.status, c.reason, c.retry_after_ms),
            Err(e) => SessionError::BadFrame(e),
        }
    }
}

/// What a batch's ACK means for a caller that retries (the client library's `Device::send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckVerdict {
    /// Final: success, or a permanent 1xx rejection (do not resend). Return the ACK.
    Done,
    /// Transient: resend the same seq after a delay.
    Retry(SessionError),
    /// Connection-level or unknown class: give up.
    Fail(SessionError),
}

/// Classifies an ACK by its status class (PROTOCOL.md §6).
pub fn ack_verdict(ack: &Ack) -> AckVerdict {
    let error = || SessionError::from_status(ack.status, ack.reason.clone(), ack.retry_after_ms);
    match StatusClass::of_code(ack.status) {
        StatusClass::Success | StatusClass::Rejected => AckVerdict::Done,
        StatusClass::Transient => AckVerdict::Retry(error()),
        StatusClass::Connection | StatusClass::Unknown => AckVerdict::Fail(error()),
    }
}

/// What a CONFIRM_ACK means for the caller answering a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmVerdict {
    /// Final (recorded, or refused): return the CONFIRM_ACK.
    Done,
    /// FIX_NOT_FOUND with attempts left: the batch was acked on an earlier connection;
    /// resend it on this one (same seq, acked DUPLICATE), then the CONFIRM.
    ResendBatch,
    /// Transient: retry after a delay.
    Retry(SessionError),
}

/// Classifies a CONFIRM_ACK; `attempts_left` says whether another attempt is allowed.
pub fn confirm_verdict(ack: &ConfirmAck, attempts_left: bool) -> ConfirmVerdict {
    if ack.status == Status::FixNotFound.code() && attempts_left {
        return ConfirmVerdict::ResendBatch;
    }
    if StatusClass::of_code(ack.status) == StatusClass::Transient {
        return ConfirmVerdict::Retry(SessionError::from_status(ack.status, ack.reason.clone(), 0));
    }
    ConfirmVerdict::Done
}

/// The in-flight bound of a session: `min(ours, WELCOME's)`, WELCOME's 0 meaning no server
/// bound, and at least 1.
pub fn effective_inflight(ours: usize, welcome: &Welcome) -> usize {
    let server = match welcome.inflight_batches_max {
        0 => usize::MAX,
        n => n as usize,
    };
    ours.min(server).max(1)
}

/// A BATCH body over the server's `batch_bytes_max` from WELCOME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "batch {batch_seq} encodes to {body_len} bytes, over the server's batch_bytes_max {batch_bytes_max}"
)]
pub struct BatchTooLarge {
    /// The batch.
    pub batch_seq: u64,
    /// The encoded BATCH body length.
    pub body_len: usize,
    /// The server's limit.
    pub batch_bytes_max: u32,
}

/// Why a waiter could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// `inflight_max` waiters are registered; wait until one leaves.
    #[error("in-flight bound reached")]
    Full,
    /// A waiter for this batch seq is registered.
    #[error("batch {batch_seq} is already in flight")]
    SeqInFlight {
        /// The seq.
        batch_seq: u64,
    },
    /// A waiter for this confirm request is registered.
    #[error("a CONFIRM for request {request_id} is already in flight")]
    ConfirmInFlight {
        /// The request.
        request_id: u64,
    },
    /// The session ended.
    #[error("the session ended")]
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaiterKind {
    Batch,
    Confirm,
}

/// Names one registration; hand it to [`ClientSession::unregister`] when the caller leaves.
/// The id stops a finished caller from removing a later caller's registration of the same
/// seq or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaiterKey {
    kind: WaiterKind,
    key: u64,
    id: u64,
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum ClientEvent<B, C> {
    /// WELCOME arrived: the session is open with these limits.
    Welcomed(Welcome),
    /// The ACK for a registered batch; deliver it to the waiter. ACKs nobody waits for
    /// (their caller left) are dropped.
    Acked {
        /// The waiter registered for the seq.
        waiter: B,
        /// The ACK.
        ack: Ack,
    },
    /// The CONFIRM_ACK for a registered request.
    ConfirmAcked {
        /// The waiter registered for the request id.
        waiter: C,
        /// The CONFIRM_ACK.
        ack: ConfirmAck,
    },
    /// The server asks the device to confirm its location (possibly again after a
    /// reconnect; see [`RequestFilter`]).
    ConfirmRequest(ConfirmRequest),
    /// The server ended the session (CLOSE) or broke the protocol; every waiter was dropped.
    Ended(SessionError),
}

#[derive(Debug)]
enum Phase {
    AwaitWelcome,
    Open {
        welcome: Welcome,
        inflight_max: usize,
    },
    Ended,
}

/// The device side of one connection's stream. See the module doc for the contract.
#[derive(Debug)]
pub struct ClientSession<B, C> {
    inflight_ours: usize,
    phase: Phase,
    recv: RecvBuf,
    pending: Option<FrameHeader>,
    batches: HashMap<u64, (u64, B)>,
    confirms: HashMap<u64, (u64, C)>,
    next_waiter_id: u64,
    events: VecDeque<ClientEvent<B, C>>,
}

impl<B, C> ClientSession<B, C> {
    /// A session allowing at most `inflight_batches_max` waiters (WELCOME may lower it).
    pub fn new(inflight_batches_max: usize) -> Self {
        Self {
            inflight_ours: inflight_batches_max.max(1),
            phase: Phase::AwaitWelcome,
            recv: RecvBuf::default(),
            pending: None,
            batches: HashMap::new(),
            confirms: HashMap::new(),
            next_waiter_id: 0,
            events: VecDeque::new(),
        }
    }

    /// Appends the HELLO frame, the first thing a client writes.
    pub fn encode_hello(token: &str, client_agent: &str, out: &mut Vec<u8>) {
        let hello = wire::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            token: token.to_string(),
            client_agent: client_agent.to_string(),
        };
        wire::encode_hello(&hello, out);
    }

    /// The server's WELCOME, once it arrived.
    pub fn welcome(&self) -> Option<&Welcome> {
        match &self.phase {
            Phase::Open { welcome, .. } => Some(welcome),
            _ => None,
        }
    }

    /// The in-flight bound: ours before WELCOME, [`effective_inflight`] after.
    pub fn inflight_max(&self) -> usize {
        match &self.phase {
            Phase::Open { inflight_max, .. } => *inflight_max,
            _ => self.inflight_ours,
        }
    }

    /// Registered waiters of both kinds.
    pub fn inflight(&self) -> usize {
        self.batches.len() + self.confirms.len()
    }

    /// True once the session ended.
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// Checks an encoded BATCH body against the server's `batch_bytes_max` (0 = none).
    ///
    /// # Errors
    /// [`BatchTooLarge`] when the body is over it.
    pub fn check_batch_body(&self, batch_seq: u64, body_len: usize) -> Result<(), BatchTooLarge> {
        let batch_bytes_max = self.welcome().map_or(0, |w| w.batch_bytes_max);
        if batch_bytes_max != 0 && body_len > batch_bytes_max as usize {
            return Err(BatchTooLarge {
                batch_seq,
                body_len,
                batch_bytes_max,
            });
        }
        Ok(())
    }

    /// Registers the waiter of batch `batch_seq`'s ACK.
    ///
    /// # Errors
    /// [`RegisterError::Ended`], [`RegisterError::Full`] (checked in this order), then
    /// [`RegisterError::SeqInFlight`].
    pub fn register_batch(
        &mut self,
        batch_seq: u64,
        waiter: B,
    ) -> Result<WaiterKey, RegisterError> {
        self.check_room()?;
        if self.batches.contains_key(&batch_seq) {
            return Err(RegisterError::SeqInFlight { batch_seq });
        }
        let id = self.next_id();
        self.batches.insert(batch_seq, (id, waiter));
        Ok(WaiterKey {
            kind: WaiterKind::Batch,
            key: batch_seq,
            id,
        })
    }

    /// Registers the waiter of request `request_id`'s CONFIRM_ACK. A CONFIRM takes one of
    /// the server's in-flight slots until its answer arrives, so it counts like a batch.
    ///
    /// # Errors
    /// As [`Self::register_batch`], with [`RegisterError::ConfirmInFlight`].
    pub fn register_confirm(
        &mut self,
        request_id: u64,
        waiter: C,
    ) -> Result<WaiterKey, RegisterError> {
        self.check_room()?;
        if self.confirms.contains_key(&request_id) {
            return Err(RegisterError::ConfirmInFlight { request_id });
        }
        let id = self.next_id();
        self.confirms.insert(request_id, (id, waiter));
        Ok(WaiterKey {
            kind: WaiterKind::Confirm,
            key: request_id,
            id,
        })
    }

    /// Removes a registration whose caller left (answered, timed out, cancelled); true when
    /// it was still registered (its in-flight slot is free again).
    pub fn unregister(&mut self, key: WaiterKey) -> bool {
        match key.kind {
            WaiterKind::Batch => remove_if(&mut self.batches, key),
            WaiterKind::Confirm => remove_if(&mut self.confirms, key),
        }
    }

    /// Ends the session from outside (connection lost, closed by the app): every waiter is
    /// dropped; no event.
    pub fn end(&mut self) {
        self.phase = Phase::Ended;
        self.batches.clear();
        self.confirms.clear();
        self.recv.release();
        self.pending = None;
    }

    /// Consumes bytes received from the server.
    pub fn handle_data(&mut self, data: &[u8]) {
        if self.is_ended() {
            return;
        }
        self.recv.push(data);
        let mut recv = std::mem::take(&mut self.recv);
        while self.step(&mut recv) {}
        if !self.is_ended() {
            self.recv = recv;
        }
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<ClientEvent<B, C>> {
        self.events.pop_front()
    }

    fn check_room(&self) -> Result<(), RegisterError> {
        if self.is_ended() {
            return Err(RegisterError::Ended);
        }
        if self.inflight() >= self.inflight_max() {
            return Err(RegisterError::Full);
        }
        Ok(())
    }

    fn next_id(&mut self) -> u64 {
        self.next_waiter_id += 1;
        self.next_waiter_id
    }

    fn fail(&mut self, error: SessionError) {
        self.end();
        self.events.push_back(ClientEvent::Ended(error));
    }

    /// Handles one frame (or its header); false when more bytes are needed or it ended.
    fn step(&mut self, recv: &mut RecvBuf) -> bool {
        let header = match self.pending.take() {
            Some(h) => h,
            None => {
                let Some(bytes) = recv.take_header() else {
                    return false;
                };
                match wire::parse_frame_header(&bytes) {
                    Ok(h) if h.len > CONTROL_FRAME_BODY_BYTES_MAX => {
                        self.fail(SessionError::BadFrame(FrameError::TooLong {
                            frame_type: h.frame_type,
                            len: h.len,
                            len_max: CONTROL_FRAME_BODY_BYTES_MAX,
                        }));
                        return false;
                    }
                    Ok(h) => h,
                    Err(e) => {
                        self.fail(SessionError::BadFrame(e));
                        return false;
                    }
                }
            }
        };
        if recv.len() < header.len as usize {
            self.pending = Some(header);
            return false;
        }
        let body = recv.take(header.len as usize);
        if let Err(e) = self.on_frame(header.frame_type, body) {
            self.fail(e);
        }
        !self.is_ended()
    }

    fn on_frame(&mut self, frame_type: FrameType, body: &[u8]) -> Result<(), SessionError> {
        let open = matches!(self.phase, Phase::Open { .. });
        match frame_type {
            FrameType::Close => return Err(SessionError::from_close(body)),
            FrameType::Welcome if !open => {
                let welcome = wire::decode_welcome(body).map_err(SessionError::BadFrame)?;
                let inflight_max = effective_inflight(self.inflight_ours, &welcome);
                self.events
                    .push_back(ClientEvent::Welcomed(welcome.clone()));
                self.phase = Phase::Open {
                    welcome,
                    inflight_max,
                };
            }
            FrameType::Ack if open => {
                let ack = wire::decode_ack(body).map_err(SessionError::BadFrame)?;
                if let Some((_, waiter)) = self.batches.remove(&ack.batch_seq) {
                    self.events.push_back(ClientEvent::Acked { waiter, ack });
                }
            }
            FrameType::ConfirmAck if open => {
                let ack = wire::decode_confirm_ack(body).map_err(SessionError::BadFrame)?;
                if let Some((_, waiter)) = self.confirms.remove(&ack.request_id) {
                    self.events
                        .push_back(ClientEvent::ConfirmAcked { waiter, ack });
                }
            }
            FrameType::ConfirmRequest if open => {
                let request = wire::decode_confirm_request(body).map_err(SessionError::BadFrame)?;
                self.events.push_back(ClientEvent::ConfirmRequest(request));
            }
            frame_type => return Err(SessionError::UnexpectedFrame { frame_type }),
        }
        Ok(())
    }
}

fn remove_if<W>(map: &mut HashMap<u64, (u64, W)>, key: WaiterKey) -> bool {
    if map.get(&key.key).is_some_and(|(id, _)| *id == key.id) {
        map.remove(&key.key);
        return true;
    }
    false
}

/// Hands each confirm request to the app once per device: the server writes an unanswered
/// request again after every WELCOME, with the same id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestFilter {
    last_request_id: u64,
}

impl RequestFilter {
    /// True when `request_id` is not the request last handed to the app.
    pub fn is_new(&self, request_id: u64) -> bool {
        request_id != self.last_request_id
    }

    /// Records that `request_id` was handed to the app.
    pub fn handed_over(&mut self, request_id: u64) {
        self.last_request_id = request_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Session = ClientSession<u32, u32>;

    fn welcome(inflight_batches_max: u32, batch_bytes_max: u32) -> Welcome {
        Welcome {
            device_id: 7,
            batch_bytes_max,
            batch_fixes_max: 10,
            inflight_batches_max,
            decompressed_bytes_max: 100,
            server_time_ms: 1,
            dedup_window_batches: 64,
        }
    }

    fn open(ours: usize, w: &Welcome) -> Session {
        let mut s = Session::new(ours);
        let mut out = vec![];
        wire::encode_welcome(w, &mut out);
        s.handle_data(&out);
        assert!(matches!(s.poll_event(), Some(ClientEvent::Welcomed(got)) if got == *w));
        s
    }

    fn frame<F: FnOnce(&mut Vec<u8>)>(f: F) -> Vec<u8> {
        let mut out = vec![];
        f(&mut out);
        out
    }

    #[test]
    fn welcome_limits_are_the_minimum_of_ours_and_the_servers() {
        assert_eq!(effective_inflight(8, &welcome(2, 0)), 2);
        assert_eq!(effective_inflight(2, &welcome(8, 0)), 2);
        assert_eq!(
            effective_inflight(8, &welcome(0, 0)),
            8,
            "0 = no server bound"
        );
        assert_eq!(effective_inflight(0, &welcome(0, 0)), 1);
        let s = open(8, &welcome(3, 100));
        assert_eq!(s.inflight_max(), 3);
        assert!(s.check_batch_body(1, 100).is_ok());
        assert_eq!(
            s.check_batch_body(1, 101),
            Err(BatchTooLarge {
                batch_seq: 1,
                body_len: 101,
                batch_bytes_max: 100
            })
        );
        assert!(open(8, &welcome(3, 0)).check_batch_body(1, 1 << 30).is_ok());
    }

    #[test]
    fn waiters_are_matched_by_seq_and_ended_sessions_fail_fast() {
        let mut s = open(2, &welcome(2, 0));
        let k1 = s.register_batch(1, 10).expect("register");
        assert_eq!(
            s.register_batch(1, 11),
            Err(RegisterError::SeqInFlight { batch_seq: 1 })
        );
        s.register_batch(2, 20).expect("register");
        assert_eq!(s.register_batch(3, 30), Err(RegisterError::Full), "bound 2");
        s.handle_data(&frame(|o| {
            wire::encode_ack(&Ack::new(2, Status::Ok, ""), o)
        }));
        assert!(
            matches!(s.poll_event(), Some(ClientEvent::Acked { waiter: 20, ack }) if ack.batch_seq == 2)
        );
        assert!(s.poll_event().is_none(), "seq 1 not acked yet");
        // An ACK nobody waits for is dropped.
        s.handle_data(&frame(|o| {
            wire::encode_ack(&Ack::new(9, Status::Ok, ""), o)
        }));
        assert!(s.poll_event().is_none());
        assert!(s.unregister(k1), "the caller of seq 1 left");
        assert!(!s.unregister(k1), "only once");
        let k1b = s
            .register_batch(1, 12)
            .expect("seq free again after its caller left");
        assert!(
            !s.unregister(k1),
            "an old key does not remove a newer registration"
        );
        assert!(s.unregister(k1b));
        s.end();
        assert_eq!(s.register_batch(3, 30), Err(RegisterError::Ended));
        assert_eq!(s.inflight(), 0, "every waiter dropped");
    }

    #[test]
    fn confirm_waiters_are_matched_by_request_id_and_share_the_bound() {
        let mut s = open(2, &welcome(8, 0));
        let g = s.register_confirm(5, 50).expect("register");
        assert_eq!(
            s.register_confirm(5, 51),
            Err(RegisterError::ConfirmInFlight { request_id: 5 })
        );
        // A batch with the same number is a different namespace, and takes the last slot.
        s.register_batch(5, 1).expect("batch 5");
        assert_eq!(s.register_confirm(6, 60), Err(RegisterError::Full));
        let ack = |id| frame(|o| wire::encode_confirm_ack(&ConfirmAck::new(id, Status::Ok, ""), o));
        s.handle_data(&ack(6));
        assert!(s.poll_event().is_none());
        s.handle_data(&ack(5));
        assert!(matches!(
            s.poll_event(),
            Some(ClientEvent::ConfirmAcked { waiter: 50, .. })
        ));
        assert!(!s.unregister(g), "answered: already gone");
        s.register_confirm(5, 52).expect("free again");
    }

    #[test]
    fn frames_split_anywhere_give_the_same_events() {
        let mut bytes = frame(|o| wire::encode_welcome(&welcome(4, 0), o));
        let request = ConfirmRequest {
            request_id: 9,
            requested_at_ms: 3,
            reason: "quiet".into(),
        };
        wire::encode_confirm_request(&request, &mut bytes);
        wire::encode_ack(&Ack::new(1, Status::Ok, ""), &mut bytes);
        for split in 0..=bytes.len() {
            let mut s = Session::new(4);
            s.register_batch(1, 7)
                .expect("room before WELCOME: our own bound");
            s.handle_data(&bytes[..split]);
            s.handle_data(&bytes[split..]);
            let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
            assert_eq!(events.len(), 3, "split {split}: {events:?}");
            assert!(matches!(&events[1], ClientEvent::ConfirmRequest(r) if *r == request));
            assert!(matches!(&events[2], ClientEvent::Acked { waiter: 7, .. }));
        }
    }

    fn close(status: Status, retry_after_ms: u32) -> Vec<u8> {
        frame(|o| {
            wire::encode_close(
                &wire::Close {
                    status: status.code(),
                    reason: "why".into(),
                    retry_after_ms,
                },
                o,
            )
        })
    }

    /// Feeds `bytes` to a session (opened first unless `before_welcome`) with one waiter;
    /// returns the error it ended with, checking the waiter was dropped.
    fn ended(bytes: &[u8], before_welcome: bool) -> SessionError {
        let mut s = if before_welcome {
            Session::new(1)
        } else {
            open(1, &welcome(1, 0))
        };
        s.register_batch(1, 1).expect("room");
        s.handle_data(bytes);
        assert!(s.is_ended());
        assert_eq!(s.inflight(), 0, "waiters dropped");
        match s.poll_event() {
            Some(ClientEvent::Ended(e)) => e,
            other => panic!("expected Ended, got {other:?}"),
        }
    }

    #[test]
    fn a_close_ends_the_session_with_the_servers_status() {
        assert_eq!(
            ended(&close(Status::Unauthenticated, 0), true),
            SessionError::Rejected {
                status: Status::Unauthenticated,
                reason: "why".into(),
                retry_after_ms: 0
            }
        );
        assert_eq!(
            ended(&close(Status::ShuttingDown, 250), false),
            SessionError::Rejected {
                status: Status::ShuttingDown,
                reason: "why".into(),
                retry_after_ms: 250
            }
        );
        assert_eq!(
            ended(&close(Status::Ok, 0), false),
            SessionError::ServerClosed {
                reason: "why".into()
            }
        );
    }

    #[test]
    fn protocol_breaks_end_the_session_with_a_typed_error() {
        let ack = frame(|o| wire::encode_ack(&Ack::new(1, Status::Ok, ""), o));
        assert_eq!(
            ended(&ack, true),
            SessionError::UnexpectedFrame {
                frame_type: FrameType::Ack
            },
            "ACK before WELCOME"
        );
        let second = frame(|o| wire::encode_welcome(&welcome(1, 0), o));
        assert_eq!(
            ended(&second, false),
            SessionError::UnexpectedFrame {
                frame_type: FrameType::Welcome
            }
        );
        assert!(matches!(
            ended(&[0x0a, 0, 0, 0, 0], false),
            SessionError::BadFrame(FrameError::UnknownType { type_byte: 0x0a })
        ));
        // Refused from the header alone: the body is never buffered.
        let mut long = vec![FrameType::Ack.to_byte()];
        long.extend_from_slice(&(CONTROL_FRAME_BODY_BYTES_MAX + 1).to_be_bytes());
        assert!(matches!(
            ended(&long, false),
            SessionError::BadFrame(FrameError::TooLong { len, .. }) if len == CONTROL_FRAME_BODY_BYTES_MAX + 1
        ));
        assert!(matches!(
            ended(&[FrameType::Ack.to_byte(), 0, 0, 0, 1, 0xff], false),
            SessionError::BadFrame(FrameError::Protobuf { .. })
        ));
    }

    #[test]
    fn status_classification_and_verdicts() {
        assert!(matches!(
            SessionError::from_status(0, "idle".into(), 0),
            SessionError::ServerClosed { .. }
        ));
        assert!(matches!(
            SessionError::from_status(777, "?".into(), 0),
            SessionError::UnknownStatus { code: 777, .. }
        ));
        let ack = |status: Status| Ack {
            batch_seq: 1,
            status: status.code(),
            reason: "r".into(),
            retry_after_ms: 300,
        };
        assert_eq!(ack_verdict(&ack(Status::Ok)), AckVerdict::Done);
        assert_eq!(ack_verdict(&ack(Status::Duplicate)), AckVerdict::Done);
        assert_eq!(
            ack_verdict(&ack(Status::InvalidCoordinates)),
            AckVerdict::Done
        );
        assert!(matches!(
            ack_verdict(&ack(Status::Overloaded)),
            AckVerdict::Retry(SessionError::Rejected {
                retry_after_ms: 300,
                ..
            })
        ));
        assert!(matches!(
            ack_verdict(&ack(Status::Unauthenticated)),
            AckVerdict::Fail(SessionError::Rejected { .. })
        ));
        let unknown = Ack {
            status: 777,
            ..ack(Status::Ok)
        };
        assert!(matches!(
            ack_verdict(&unknown),
            AckVerdict::Fail(SessionError::UnknownStatus { .. })
        ));
        let c = |status: Status| ConfirmAck::new(1, status, "r");
        assert_eq!(
            confirm_verdict(&c(Status::FixNotFound), true),
            ConfirmVerdict::ResendBatch
        );
        assert_eq!(
            confirm_verdict(&c(Status::FixNotFound), false),
            ConfirmVerdict::Done
        );
        assert_eq!(confirm_verdict(&c(Status::Ok), true), ConfirmVerdict::Done);
        assert_eq!(
            confirm_verdict(&c(Status::UnsolicitedConfirm), true),
            ConfirmVerdict::Done
        );
        assert!(matches!(
            confirm_verdict(&c(Status::StorageUnavailable), true),
            ConfirmVerdict::Retry(SessionError::Rejected {
                retry_after_ms: 0,
                ..
            })
        ));
    }

    #[test]
    fn backoff_is_full_jitter_capped_and_doubling() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, 0, 0), 0);
        assert_eq!(p.delay_ms(1, 0, 50), 50);
        assert_eq!(p.delay_ms(1, 0, 51), 0, "uniform in [0, 50]");
        assert_eq!(p.delay_ms(2, 0, 100), 100);
        assert_eq!(p.delay_ms(3, 0, 200), 200);
        assert_eq!(p.delay_ms(20, 0, 5_000), 5_000);
        assert_eq!(p.delay_ms(20, 0, 5_001), 0, "capped at backoff_max_ms");
        assert_eq!(
            p.delay_ms(u32::MAX, 0, u64::MAX),
            u64::MAX % 5_001,
            "no overflow"
        );
    }

    #[test]
    fn server_retry_after_is_a_floor_and_attempts_are_bounded() {
        let p = RetryPolicy::default();
        for r in [0, 1, 17, 1_000_000, u64::MAX] {
            let d = p.delay_ms(1, 300, r);
            assert!((300..=350).contains(&d), "{d}");
        }
        // A hint smaller than the backoff cap bounds the jitter by the hint.
        assert!((10..=20).contains(&p.delay_ms(5, 10, u64::MAX)));
        assert_eq!(
            p.retry_delay_ms(7, 0, 0),
            Some(0),
            "attempt 8 of 8 is allowed"
        );
        assert_eq!(p.retry_delay_ms(8, 0, 0), None, "every attempt used");
        let once = RetryPolicy {
            attempts_max: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(once.retry_delay_ms(1, 0, 0), None, "0 is treated as 1");
    }

    #[test]
    fn request_filter_hands_each_request_once() {
        let mut f = RequestFilter::default();
        assert!(f.is_new(7));
        f.handed_over(7);
        assert!(!f.is_new(7), "redelivered after a reconnect: not repeated");
        assert!(f.is_new(8));
    }
}
