//! [`ServerSession`]: the server side of one connection's stream, as a state machine.
//!
//! # Contract
//! * Sans-IO: no socket, no clock, no task. The driver feeds stream bytes as they arrive
//!   ([`ServerSession::handle_data`]), the end of the stream, sink outcomes, confirm
//!   requests, shutdown and timer expiry; it takes back bytes to write
//!   ([`ServerSession::poll_transmit`]) and [`ServerOutput`]s to act on, in order.
//! * Two time bases, both arguments ([`Now`]): wall time (Unix ms; fixes and tokens are
//!   judged against it, WELCOME carries it) and monotonic time in ms (every deadline is
//!   measured in it, [`ServerSession::poll_timeout`] returns it).
//! * Deadlines: HELLO within `hello_timeout_ms` of the connection; every frame body within
//!   `frame_timeout_ms` of its header; after WELCOME a frame at least every
//!   `idle_timeout_ms` while the session waits for the device (QUIC PINGs do not count;
//!   time spent at the in-flight limit, waiting for the sink, does not count either).
//! * Identity: the HELLO token is verified by the [`Authenticator`]; after WELCOME the
//!   session ends with CLOSE(UNAUTHENTICATED), once its in-flight batches are acked, when
//!   the token's expiry passes (a deadline) or when a frame arrives after the token was
//!   revoked (rechecked at every frame header, so an open connection outlives its
//!   revocation by at most `idle_timeout_ms`).
//! * Framing: the session buffers only received bytes, never an announced length; a frame
//!   header is checked before its body is buffered. An oversized BATCH within
//!   `oversize_discard_bytes_max` is counted down and dropped as it arrives (only its first
//!   8 bytes are kept, for the seq of its BATCH_TOO_LARGE ack).
//! * Backpressure: at most `inflight_batches_max` batches wait for their sink outcome. At
//!   the limit the session starts no new frame and [`ServerSession::wants_read`] is false:
//!   the driver stops reading and QUIC flow control holds the device back. The in-flight
//!   table is plain state of the session: dropping the session frees everything it held.
//! * Every BATCH gets exactly one ACK; every CONFIRM exactly one CONFIRM_ACK (unless it
//!   closes the connection as a flood); a success ack is written only after the sink's
//!   outcome. A fatal error, the device's CLOSE, the end of its stream and shutdown all stop
//!   reading at once but end the session only after every in-flight batch is acked
//!   ([`Ending`]).
//! * Every refusal the device can still read is a CLOSE frame (with the status also as the
//!   QUIC application error code); protocol rules are exactly those of `docs/PROTOCOL.md`.

use std::collections::VecDeque;
use std::sync::Arc;

use fix::{DeviceId, Fixes};

use super::Now;
use super::recv::RecvBuf;
use crate::auth::{Authenticator, Claims, TokenError};
use crate::wire::{self, ConfirmKind, FrameHeader, FrameType, Status};

/// Largest HELLO body accepted (a token plus a short agent string; PROTOCOL.md §2): the
/// only frame read before authentication stays small.
pub const HELLO_BYTES_MAX: u32 = 1024;

/// A CONFIRM of kind FIX must name one of this many batches most recently acked
/// OK/DUPLICATE on the connection (PROTOCOL.md §9).
pub const CONFIRM_FIX_RECENT_BATCHES: usize = 64;

/// What one server session enforces and advertises: the `[session]` section of
/// `config/hexflow.toml` (with feature `server`, this struct is its serde form), bounds in
/// [`SessionConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "server",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct SessionConfig {
    /// Batch limits and timestamp plausibility window. Not a `[session]` key: its own
    /// section, `[limits]`, which the binary puts here.
    #[cfg_attr(feature = "server", serde(skip))]
    pub limits: wire::Limits,
    /// Batches one connection may have waiting for an ack; the session stops reading while
    /// this many are pending. Advertised in WELCOME. `1..dedup_window_batches`, default 32.
    pub inflight_batches_max: u32,
    /// Size of the per-device dedup window, advertised in WELCOME. Default 64. Not a
    /// `[session]` key: storage owns the window (`storage.dedup_window_batches`) and the
    /// binary copies it here.
    #[cfg_attr(feature = "server", serde(skip))]
    pub dedup_window_batches: u32,
    /// Oversized BATCH frames up to this many bytes are read and dropped so the device gets
    /// BATCH_TOO_LARGE and the connection lives on; larger frames close the connection.
    /// Default 4 MiB.
    pub oversize_discard_bytes_max: u32,
    /// Deadline for the HELLO frame after the connection was established. Default 10 s.
    pub hello_timeout_ms: u64,
    /// Deadline for a frame's body after its header arrived (slowloris guard; a full-size
    /// batch needs about 13 KB/s). Default 20 s.
    pub frame_timeout_ms: u64,
    /// After WELCOME, a device that sends no frame for this long while the session waits
    /// for it is closed with CLOSE(OK, "idle ..."), whatever QUIC packets (PINGs) it sends.
    /// Also the QUIC idle timeout. Default 60 s.
    pub idle_timeout_ms: u64,
    /// Rejected CONFIRM frames (malformed, invalid, unsolicited, bad signature) one
    /// connection may send; the next one closes it with PROTOCOL_VIOLATION. Default 8.
    pub confirm_rejects_max: u32,
}

impl SessionConfig {
    /// Checks every bound, `limits` included: `inflight_batches_max` at least 1 and below
    /// `dedup_window_batches` (or a resent batch could fall out of the dedup window),
    /// `oversize_discard_bytes_max` at least `limits.batch_bytes_max`, each deadline
    /// `1..=`[`TIMEOUT_MS_LIMIT`](crate::bounds::TIMEOUT_MS_LIMIT) ms, `confirm_rejects_max`
    /// `0..=1000`.
    ///
    /// # Errors
    /// The first value out of bounds, named `limits.<key>` or `session.<key>`.
    pub fn validate(&self) -> Result<(), crate::bounds::OutOfRange> {
        use crate::bounds::{TIMEOUT_MS_LIMIT, check};
        self.limits.validate()?;
        check(
            "session.inflight_batches_max",
            self.inflight_batches_max,
            1,
            self.dedup_window_batches.saturating_sub(1),
        )?;
        check(
            "session.oversize_discard_bytes_max",
            self.oversize_discard_bytes_max,
            self.limits.batch_bytes_max,
            wire::DECOMPRESSED_BYTES_LIMIT,
        )?;
        for (key, ms) in [
            ("session.hello_timeout_ms", self.hello_timeout_ms),
            ("session.frame_timeout_ms", self.frame_timeout_ms),
            ("session.idle_timeout_ms", self.idle_timeout_ms),
        ] {
            check(key, ms, 1, TIMEOUT_MS_LIMIT)?;
        }
        check(
            "session.confirm_rejects_max",
            self.confirm_rejects_max,
            0,
            1000,
        )
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            limits: wire::Limits::default(),
            inflight_batches_max: 32,
            dedup_window_batches: 64,
            oversize_discard_bytes_max: 4 * 1024 * 1024,
            hello_timeout_ms: 10_000,
            frame_timeout_ms: 20_000,
            idle_timeout_ms: 60_000,
            confirm_rejects_max: 8,
        }
    }
}

/// The session's narrow view of the confirm-request registry
/// (`proto::confirm::Registry`, feature `server`, implements it).
pub trait Confirms: Send + Sync {
    /// The id of the device's outstanding confirm request, if it has one.
    fn outstanding_request_id(&self, device_id: DeviceId) -> Option<u64>;
    /// Removes the device's outstanding request if its id is `request_id`; true when this
    /// call removed it (it is then answered, exactly once).
    fn answer(&self, device_id: DeviceId, request_id: u64) -> bool;
}

/// What every session of one server shares: its settings, the authenticator, the registry.
pub struct ServerContext {
    /// The rules each session enforces.
    pub cfg: SessionConfig,
    /// Verifies HELLO tokens and gives each device's confirm key.
    pub auth: Arc<Authenticator>,
    /// Outstanding confirm requests.
    pub confirms: Arc<dyn Confirms>,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// What the sink says about one submitted batch; becomes the batch's ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutcome {
    /// Ack status (`OK`, `DUPLICATE`, or a rejection).
    pub status: Status,
    /// Human-readable reason (empty on success).
    pub reason: String,
    /// For transient statuses: how long the device should wait before resending.
    pub retry_after_ms: u32,
}

impl SinkOutcome {
    /// A success outcome.
    pub fn ok() -> Self {
        Self {
            status: Status::Ok,
            reason: String::new(),
            retry_after_ms: 0,
        }
    }
}

/// Names one submitted batch until its outcome comes back. Unique within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// A decoded, validated batch for the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Hand it back with the outcome ([`ServerSession::on_sink_outcome`]).
    pub ticket: Ticket,
    /// The device's batch sequence number.
    pub batch_seq: u64,
    /// Server time when the BATCH frame began to arrive (Unix ms).
    pub received_at_ms: i64,
    /// The fixes (validated: coordinates in range, times plausible, columns consistent).
    pub fixes: Fixes,
}

/// How a session ended: what the driver does after writing every transmitted byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A CLOSE frame is the last transmitted frame: finish the stream, give the device
    /// `close_linger_ms` to receive it, then close the connection with `status` as the QUIC
    /// application error code and `reason` as the close reason.
    Close {
        /// The status of the CLOSE frame.
        status: Status,
        /// Its reason.
        reason: String,
    },
    /// The device sent CLOSE or finished its stream: finish ours (every ack is written),
    /// give the device `close_linger_ms` to close the connection, then close it with 0.
    PeerClosed,
}

/// Something the driver must act on, in the order the session produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// HELLO verified and WELCOME transmitted. Register the connection for confirm requests
    /// and call [`ServerSession::attached`]; until then the session reads nothing more.
    Authenticated {
        /// What the token says; `claims.device_id` is the device the connection belongs
        /// to, for its whole life.
        claims: Claims,
    },
    /// The HELLO token did not verify, or the admitted token expired or was revoked since
    /// (for the server's log and counters); the session ends with CLOSE(UNAUTHENTICATED).
    AuthFailed {
        /// Why.
        error: TokenError,
    },
    /// A frame arrived from the authenticated device (heartbeats and bad frames included).
    Contact {
        /// When.
        now_ms: i64,
    },
    /// Hand this batch to the sink; its outcome comes back through
    /// [`ServerSession::on_sink_outcome`].
    Submit(Submission),
    /// An ACK was transmitted.
    Acked {
        /// The acked seq.
        batch_seq: u64,
        /// Its status.
        status: Status,
        /// The newest fix time of a batch that reached the sink; `None` when it was refused
        /// before.
        newest_fix_ms: Option<i64>,
        /// Fixes in the batch (0 when refused before the sink).
        fixes: usize,
        /// When the ack was decided.
        now_ms: i64,
    },
    /// A verified CONFIRM answered the device's outstanding request (taken from the
    /// registry); its OK CONFIRM_ACK was transmitted.
    ConfirmRecorded {
        /// HERE or FIX.
        kind: ConfirmKind,
        /// HERE: server time the CONFIRM was read; FIX: newest fix of the named batch,
        /// capped at the server time.
        at_ms: i64,
    },
    /// A CONFIRM was answered with a rejection.
    ConfirmRejected {
        /// The request it named (0 when undecodable).
        request_id: u64,
        /// The rejection.
        status: Status,
    },
    /// The session is over; nothing follows. Write what [`ServerSession::poll_transmit`]
    /// returns, then act on the ending.
    End(Ending),
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for HELLO (a deadline is armed).
    AwaitingHello,
    /// Authenticated and reading frames.
    Open,
    /// No longer reading; waiting for in-flight batches before ending.
    Draining,
    /// Over.
    Ended,
}

#[derive(Debug)]
enum Phase {
    Hello {
        deadline_mono_ms: u64,
    },
    Open {
        device_id: DeviceId,
        attached: bool,
        /// Since when the session has been waiting for the device (the idle deadline
        /// counts from here).
        waiting_since_mono_ms: u64,
    },
    Draining {
        ending: Ending,
    },
    Ended,
}

/// A batch at the sink.
#[derive(Debug)]
struct InFlight {
    ticket: Ticket,
    batch_seq: u64,
    newest_fix_ms: Option<i64>,
    fixes: usize,
}

/// An oversized BATCH body being dropped as it arrives.
#[derive(Debug)]
struct Discard {
    len: u32,
    left: u32,
    seq: [u8; 8],
    seq_len: usize,
}

/// A CONFIRM that passed the reader's checks (shape, outstanding, signature).
struct Checked {
    request_id: u64,
    kind: ConfirmKind,
    batch_seq: u64,
}

/// The server side of one connection's stream. See the module doc for the contract.
#[derive(Debug)]
pub struct ServerSession {
    ctx: Arc<ServerContext>,
    phase: Phase,
    recv: RecvBuf,
    /// A frame whose header was consumed and whose body is awaited, with the wall time the
    /// header arrived.
    pending: Option<(FrameHeader, i64)>,
    discard: Option<Discard>,
    /// When the body of the frame being read (pending or discarded) is due.
    frame_deadline_mono_ms: Option<u64>,
    inflight: Vec<InFlight>,
    next_ticket: u64,
    /// (batch_seq, newest fix ms) of the batches most recently acked OK/DUPLICATE.
    recent: VecDeque<(u64, i64)>,
    confirm_key: Option<wire::ConfirmKey>,
    /// What the HELLO token said, rechecked at every later frame header.
    claims: Option<Claims>,
    /// When the token expires (monotonic ms), for a token with an expiry.
    expiry_mono_ms: Option<u64>,
    confirm_rejects: u32,
    tx: Vec<u8>,
    outputs: VecDeque<ServerOutput>,
}

impl ServerSession {
    /// A session for a connection established at monotonic time `mono_ms`; HELLO is due
    /// within `hello_timeout_ms`.
    pub fn new(ctx: Arc<ServerContext>, mono_ms: u64) -> Self {
        let deadline_mono_ms = mono_ms.saturating_add(ctx.cfg.hello_timeout_ms);
        let inflight_max = ctx.cfg.inflight_batches_max.max(1) as usize;
        Self {
            ctx,
            phase: Phase::Hello { deadline_mono_ms },
            recv: RecvBuf::default(),
            pending: None,
            discard: None,
            frame_deadline_mono_ms: None,
            inflight: Vec::with_capacity(inflight_max.min(1024)),
            next_ticket: 0,
            recent: VecDeque::new(),
            confirm_key: None,
            claims: None,
            expiry_mono_ms: None,
            confirm_rejects: 0,
            tx: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Where the session is.
    pub fn state(&self) -> SessionState {
        match self.phase {
            Phase::Hello { .. } => SessionState::AwaitingHello,
            Phase::Open { .. } => SessionState::Open,
            Phase::Draining { .. } => SessionState::Draining,
            Phase::Ended => SessionState::Ended,
        }
    }

    /// True when the driver should read more stream bytes now. False while
    /// `inflight_batches_max` batches await their outcome, before [`Self::attached`], and
    /// once the session stops reading.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Hello { .. } => true,
            Phase::Open { attached, .. } => attached && (self.mid_frame() || self.slot_free()),
            Phase::Draining { .. } | Phase::Ended => false,
        }
    }

    /// Batches at the sink, awaiting their outcome.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Received bytes buffered and not yet consumed.
    pub fn buffered_bytes(&self) -> usize {
        self.recv.len()
    }

    /// Memory the receive buffer holds (its capacity), for the driver's accounting.
    pub fn buffered_capacity(&self) -> usize {
        self.recv.capacity()
    }

    /// The next deadline (monotonic ms), if one is armed: the HELLO deadline, the body of
    /// the frame being read, or (waiting for the device with a free in-flight slot) the
    /// idle deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Hello { deadline_mono_ms } => Some(deadline_mono_ms),
            Phase::Open {
                attached,
                waiting_since_mono_ms,
                ..
            } => {
                let reading = attached.then(|| {
                    self.frame_deadline_mono_ms.or_else(|| {
                        self.slot_free().then(|| {
                            waiting_since_mono_ms.saturating_add(self.ctx.cfg.idle_timeout_ms)
                        })
                    })
                });
                [reading.flatten(), self.expiry_mono_ms]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        }
    }

    /// Acts on the deadline if `mono_ms` reached it: no HELLO in time is
    /// PROTOCOL_VIOLATION, a frame body not complete in time too, an idle device is closed
    /// with OK.
    pub fn handle_timeout(&mut self, mono_ms: u64) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if mono_ms < deadline {
            return;
        }
        let cfg = &self.ctx.cfg;
        if let Phase::Hello { .. } = self.phase {
            let reason = format!("no HELLO within {} ms", cfg.hello_timeout_ms);
            return self.end(Ending::Close {
                status: Status::ProtocolViolation,
                reason,
            });
        }
        if let (Some(expiry), Some(claims)) = (self.expiry_mono_ms, self.claims) {
            if mono_ms >= expiry {
                self.expiry_mono_ms = None;
                let expires_s = claims.expires_s.unwrap_or(0);
                return self.deauthorize(TokenError::Expired { expires_s });
            }
        }
        if self.frame_deadline_mono_ms.is_some() {
            let (len, left) = match (&self.pending, &self.discard) {
                (Some((h, _)), _) => (h.len, (h.len as usize).saturating_sub(self.recv.len())),
                (None, Some(d)) => (d.len, d.left as usize),
                (None, None) => (0, 0),
            };
            let reason = format!(
                "frame body of {len} bytes not complete within {} ms ({left} bytes missing)",
                cfg.frame_timeout_ms
            );
            return self.fatal(Status::ProtocolViolation, reason);
        }
        let reason = format!("idle: no frame for {} ms", cfg.idle_timeout_ms);
        self.fatal(Status::Ok, reason);
    }

    /// Consumes stream bytes received at `now`. Bytes arriving after the session stopped
    /// reading are dropped.
    pub fn handle_data(&mut self, now: Now, data: &[u8]) {
        if !self.is_reading() {
            return;
        }
        self.recv.push(data);
        self.process(now);
    }

    /// The device finished its stream. Before HELLO that is PROTOCOL_VIOLATION; after it,
    /// the session drains and ends with [`Ending::PeerClosed`] (a frame cut short by the end
    /// of the stream is dropped).
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Hello { .. } => self.end(Ending::Close {
                status: Status::ProtocolViolation,
                reason: "stream finished before HELLO".into(),
            }),
            Phase::Open { .. } => self.drain(Ending::PeerClosed),
            Phase::Draining { .. } | Phase::Ended => {}
        }
    }

    /// The server is shutting down: stop reading, ack what is in flight, then
    /// CLOSE(SHUTTING_DOWN).
    pub fn shutdown(&mut self) {
        self.evict(Status::ShuttingDown, "server is shutting down".to_string());
    }

    /// The server ends this session for a reason of its own (another connection took the
    /// device's session over, its token was revoked or expired, shutdown): stop reading,
    /// ack what is in flight, then CLOSE with `status` and `reason`. No effect once the
    /// session stopped reading.
    pub fn evict(&mut self, status: Status, reason: String) {
        match self.phase {
            Phase::Hello { .. } => self.end(Ending::Close { status, reason }),
            Phase::Open { .. } => self.drain(Ending::Close { status, reason }),
            Phase::Draining { .. } | Phase::Ended => {}
        }
    }

    /// The driver registered the connection after [`ServerOutput::Authenticated`];
    /// `outstanding` is the device's outstanding confirm request, written right after
    /// WELCOME. Reading resumes.
    pub fn attached(&mut self, now: Now, outstanding: Option<&wire::ConfirmRequest>) {
        if let Phase::Open {
            attached,
            waiting_since_mono_ms,
            ..
        } = &mut self.phase
        {
            if !*attached {
                *attached = true;
                *waiting_since_mono_ms = now.mono_ms;
                if let Some(request) = outstanding {
                    wire::encode_confirm_request(request, &mut self.tx);
                }
                self.process(now);
            }
        }
    }

    /// Writes a CONFIRM_REQUEST raised while the device is connected. False (nothing
    /// written) before the connection is attached or after the session ended.
    pub fn deliver_confirm_request(&mut self, request: &wire::ConfirmRequest) -> bool {
        let open = matches!(self.phase, Phase::Open { attached: true, .. })
            || matches!(self.phase, Phase::Draining { .. });
        if open {
            wire::encode_confirm_request(request, &mut self.tx);
        }
        open
    }

    /// The sink's outcome for a submitted batch, at `now`: transmits its ACK and frees its
    /// in-flight slot (reading resumes if it was at the limit; the idle deadline counts
    /// from here).
    ///
    /// # Panics
    /// In debug builds, on a ticket this session did not issue or already settled (a bug in
    /// the driver); release builds ignore it.
    pub fn on_sink_outcome(&mut self, now: Now, ticket: Ticket, outcome: SinkOutcome) {
        let Some(i) = self.inflight.iter().position(|f| f.ticket == ticket) else {
            debug_assert!(false, "unknown ticket {ticket:?}");
            return;
        };
        let f = self.inflight.swap_remove(i);
        if outcome.status.is_success() {
            if let Some(t) = f.newest_fix_ms {
                if self.recent.len() == CONFIRM_FIX_RECENT_BATCHES {
                    self.recent.pop_front();
                }
                self.recent.push_back((f.batch_seq, t));
            }
        }
        let ack = wire::Ack {
            batch_seq: f.batch_seq,
            status: outcome.status.code(),
            reason: outcome.reason,
            retry_after_ms: outcome.retry_after_ms,
        };
        wire::encode_ack(&ack, &mut self.tx);
        self.outputs.push_back(ServerOutput::Acked {
            batch_seq: f.batch_seq,
            status: outcome.status,
            newest_fix_ms: f.newest_fix_ms,
            fixes: f.fixes,
            now_ms: now.wall_ms,
        });
        match &mut self.phase {
            Phase::Draining { ending } if self.inflight.is_empty() => {
                let ending = ending.clone();
                self.end(ending);
            }
            Phase::Open {
                waiting_since_mono_ms,
                ..
            } => {
                *waiting_since_mono_ms = (*waiting_since_mono_ms).max(now.mono_ms);
                self.process(now);
            }
            _ => {}
        }
    }

    /// The next output to act on.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// Appends the bytes to write on the stream, in order, to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.append(&mut self.tx);
        }
    }

    fn is_reading(&self) -> bool {
        matches!(self.phase, Phase::Hello { .. } | Phase::Open { .. })
    }

    fn mid_frame(&self) -> bool {
        self.pending.is_some() || self.discard.is_some()
    }

    fn inflight_max(&self) -> usize {
        self.ctx.cfg.inflight_batches_max.max(1) as usize
    }

    fn slot_free(&self) -> bool {
        self.inflight.len() < self.inflight_max()
    }

    fn device_id(&self) -> Option<DeviceId> {
        match self.phase {
            Phase::Open { device_id, .. } => Some(device_id),
            _ => None,
        }
    }

    /// Ends the session: a CLOSE ending gets its frame, then [`ServerOutput::End`].
    fn end(&mut self, ending: Ending) {
        if let Ending::Close { status, reason } = &ending {
            let close = wire::Close {
                status: status.code(),
                reason: reason.clone(),
                retry_after_ms: 0,
            };
            wire::encode_close(&close, &mut self.tx);
        }
        self.phase = Phase::Ended;
        self.release_reader();
        self.outputs.push_back(ServerOutput::End(ending));
    }

    /// Stops reading; ends once no batch is in flight.
    fn drain(&mut self, ending: Ending) {
        self.release_reader();
        if self.inflight.is_empty() {
            self.end(ending);
        } else {
            self.phase = Phase::Draining { ending };
        }
    }

    /// A fatal error after WELCOME: CLOSE with `status` once the in-flight batches are acked.
    fn fatal(&mut self, status: Status, reason: String) {
        self.drain(Ending::Close { status, reason });
    }

    fn release_reader(&mut self) {
        self.recv.release();
        self.pending = None;
        self.discard = None;
        self.frame_deadline_mono_ms = None;
    }

    /// Handles every complete frame the buffer holds, as far as the in-flight limit allows.
    fn process(&mut self, now: Now) {
        let mut recv = std::mem::take(&mut self.recv);
        while self.step(now, &mut recv) {}
        if self.is_reading() {
            recv.shrink_when_drained();
            self.recv = recv;
        }
    }

    /// Makes one unit of progress (a header, a body, a discarded chunk); false when the
    /// session must wait for more bytes, for a sink outcome, or stopped reading.
    fn step(&mut self, now: Now, recv: &mut RecvBuf) -> bool {
        let ready = match self.phase {
            Phase::Hello { .. } => true,
            Phase::Open { attached, .. } => attached,
            Phase::Draining { .. } | Phase::Ended => false,
        };
        if !ready {
            return false;
        }
        if self.discard.is_some() {
            return self.discard_step(now, recv);
        }
        let (header, at_ms) = match self.pending.take() {
            Some(p) => p,
            None => {
                if !self.slot_free() {
                    return false;
                }
                let Some(bytes) = recv.take_header() else {
                    return false;
                };
                match self.on_header(now, &bytes) {
                    Some(header) => (header, now.wall_ms),
                    None => return self.is_reading(),
                }
            }
        };
        let len = header.len as usize;
        if recv.len() < len {
            if self.frame_deadline_mono_ms.is_none() && matches!(self.phase, Phase::Open { .. }) {
                self.frame_deadline_mono_ms =
                    Some(now.mono_ms.saturating_add(self.ctx.cfg.frame_timeout_ms));
            }
            self.pending = Some((header, at_ms));
            return false;
        }
        self.frame_deadline_mono_ms = None;
        if let Phase::Open {
            waiting_since_mono_ms,
            ..
        } = &mut self.phase
        {
            *waiting_since_mono_ms = now.mono_ms;
        }
        let body = recv.take(len);
        match header.frame_type {
            FrameType::Hello => {
                self.on_hello(at_ms, body);
                self.arm_expiry(now);
            }
            FrameType::Batch => self.on_batch(at_ms, body),
            FrameType::Confirm => self.on_confirm(at_ms, body),
            FrameType::Close => self.on_close(body),
            other => debug_assert!(false, "{other} body read"),
        }
        true
    }

    /// Checks a header before its body is read. `Some` when the body is to be read and
    /// handled; `None` when the frame is done (heartbeat), being discarded, or fatal.
    fn on_header(&mut self, now: Now, bytes: &[u8; wire::FRAME_HEADER_LEN]) -> Option<FrameHeader> {
        if matches!(self.phase, Phase::Hello { .. }) {
            return self.on_first_header(bytes);
        }
        // A token revoked (or expired) since WELCOME ends the session at its next frame.
        if let Some(claims) = &self.claims {
            let now_s = u64::try_from(now.wall_ms.div_euclid(1000)).unwrap_or(0);
            if let Err(error) = self.ctx.auth.still_valid(claims, now_s) {
                self.deauthorize(error);
                return None;
            }
        }
        if let Phase::Open {
            waiting_since_mono_ms,
            ..
        } = &mut self.phase
        {
            *waiting_since_mono_ms = now.mono_ms;
        }
        self.outputs.push_back(ServerOutput::Contact {
            now_ms: now.wall_ms,
        });
        let header = match wire::parse_frame_header(bytes) {
            Ok(h) => h,
            Err(e) => {
                self.fatal(Status::MalformedFrame, e.to_string());
                return None;
            }
        };
        let control_max = wire::CONTROL_FRAME_BODY_BYTES_MAX;
        match header.frame_type {
            FrameType::Batch => return self.on_batch_header(now, header),
            FrameType::Heartbeat if header.len != 0 => self.fatal(
                Status::MalformedFrame,
                format!("HEARTBEAT must be empty, got {} bytes", header.len),
            ),
            FrameType::Heartbeat => {}
            FrameType::Confirm | FrameType::Close if header.len > control_max => self.fatal(
                Status::MalformedFrame,
                format!(
                    "{} body of {} bytes exceeds {control_max}",
                    header.frame_type, header.len
                ),
            ),
            FrameType::Confirm | FrameType::Close => return Some(header),
            other => self.fatal(
                Status::ProtocolViolation,
                format!("frame {other:?} is not allowed from a device here"),
            ),
        }
        None
    }

    /// The first header must announce a HELLO of at most [`HELLO_BYTES_MAX`] bytes.
    fn on_first_header(&mut self, bytes: &[u8; wire::FRAME_HEADER_LEN]) -> Option<FrameHeader> {
        let refuse = |status: Status, reason: String| Ending::Close { status, reason };
        let header = match wire::parse_frame_header(bytes) {
            Ok(h) => h,
            Err(e) => {
                self.end(refuse(Status::MalformedFrame, e.to_string()));
                return None;
            }
        };
        if header.frame_type != FrameType::Hello {
            let reason = format!("first frame must be HELLO, got {:?}", header.frame_type);
            self.end(refuse(Status::ProtocolViolation, reason));
            return None;
        }
        if header.len > HELLO_BYTES_MAX {
            let reason = format!("HELLO is {} bytes, at most {HELLO_BYTES_MAX}", header.len);
            self.end(refuse(Status::MalformedFrame, reason));
            return None;
        }
        Some(header)
    }

    /// A BATCH over `batch_bytes_max` is discarded (or, beyond
    /// `oversize_discard_bytes_max`, fatal) before any body byte is buffered.
    fn on_batch_header(&mut self, now: Now, header: FrameHeader) -> Option<FrameHeader> {
        let cfg = &self.ctx.cfg;
        // batch_bytes_max bounds the whole BATCH body (seq + encoding + payload).
        let batch_frame_max = wire::frame_body_len_max(FrameType::Batch, &cfg.limits);
        if header.len <= batch_frame_max {
            return Some(header);
        }
        if header.len > cfg.oversize_discard_bytes_max.max(batch_frame_max) {
            let reason = format!(
                "BATCH frame of {} bytes exceeds {} (batch_bytes_max {}); closing",
                header.len, cfg.oversize_discard_bytes_max, cfg.limits.batch_bytes_max
            );
            self.fatal(Status::BatchTooLarge, reason);
            return None;
        }
        self.frame_deadline_mono_ms = Some(now.mono_ms.saturating_add(cfg.frame_timeout_ms));
        self.discard = Some(Discard {
            len: header.len,
            left: header.len,
            seq: [0; 8],
            seq_len: 0,
        });
        None
    }

    /// Drops the next bytes of an oversized body; acks BATCH_TOO_LARGE when it is gone.
    fn discard_step(&mut self, now: Now, recv: &mut RecvBuf) -> bool {
        let Some(d) = self.discard.as_mut() else {
            return false;
        };
        let n = recv.len().min(d.left as usize);
        if n == 0 {
            return false;
        }
        let bytes = recv.take(n);
        let want = (d.seq.len() - d.seq_len).min(n);
        d.seq[d.seq_len..d.seq_len + want].copy_from_slice(&bytes[..want]);
        d.seq_len += want;
        d.left -= n as u32;
        if d.left > 0 {
            return false;
        }
        let seq = (d.seq_len == d.seq.len()).then(|| u64::from_be_bytes(d.seq));
        let reason = format!(
            "BATCH body is {} bytes, batch_bytes_max is {}",
            d.len, self.ctx.cfg.limits.batch_bytes_max
        );
        self.discard = None;
        self.frame_deadline_mono_ms = None;
        // A body under 8 bytes carries no seq; it is acked with seq 0 (PROTOCOL.md §4).
        self.reject_batch(now.wall_ms, seq.unwrap_or(0), Status::BatchTooLarge, reason);
        true
    }

    /// Acks a batch refused before the sink.
    fn reject_batch(&mut self, now_ms: i64, batch_seq: u64, status: Status, reason: String) {
        wire::encode_ack(&wire::Ack::new(batch_seq, status, reason), &mut self.tx);
        self.outputs.push_back(ServerOutput::Acked {
            batch_seq,
            status,
            newest_fix_ms: None,
            fixes: 0,
            now_ms,
        });
    }

    fn on_hello(&mut self, now_ms: i64, body: &[u8]) {
        let refuse = |status: Status, reason: String| Ending::Close { status, reason };
        let hello = match wire::decode_hello(body) {
            Ok(h) => h,
            Err(e) => {
                let reason = format!("undecodable HELLO: {e}");
                return self.end(refuse(Status::MalformedFrame, reason));
            }
        };
        if hello.protocol_version != wire::PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {} not supported, this server speaks {}",
                hello.protocol_version,
                wire::PROTOCOL_VERSION
            );
            return self.end(refuse(Status::UnsupportedVersion, reason));
        }
        let now_s = u64::try_from(now_ms.div_euclid(1000)).unwrap_or(0);
        let claims = match self.ctx.auth.verify(&hello.token, now_s) {
            Ok(claims) => claims,
            Err(error) => {
                self.outputs.push_back(ServerOutput::AuthFailed { error });
                // The device learns only that its token is not valid, not why.
                let reason = "token not valid for this server".to_string();
                return self.end(refuse(Status::Unauthenticated, reason));
            }
        };
        self.confirm_key = Some(self.ctx.auth.confirm_key(&claims, &hello.token));
        self.claims = Some(claims);
        let cfg = &self.ctx.cfg;
        let welcome = wire::Welcome {
            device_id: claims.device_id.get(),
            batch_bytes_max: cfg.limits.batch_bytes_max,
            batch_fixes_max: cfg.limits.batch_fixes_max,
            inflight_batches_max: cfg.inflight_batches_max,
            decompressed_bytes_max: cfg.limits.decompressed_bytes_max,
            server_time_ms: now_ms,
            dedup_window_batches: cfg.dedup_window_batches,
        };
        wire::encode_welcome(&welcome, &mut self.tx);
        self.phase = Phase::Open {
            device_id: claims.device_id,
            attached: false,
            waiting_since_mono_ms: 0,
        };
        self.outputs
            .push_back(ServerOutput::Authenticated { claims });
        self.outputs.push_back(ServerOutput::Contact { now_ms });
    }

    /// Arms the expiry deadline of an admitted token that has one, at `now`.
    fn arm_expiry(&mut self, now: Now) {
        if let Some(Claims {
            expires_s: Some(expires_s),
            ..
        }) = self.claims
        {
            let expires_ms = i64::try_from(expires_s)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
            let left_ms = u64::try_from(expires_ms.saturating_sub(now.wall_ms)).unwrap_or(0);
            self.expiry_mono_ms = Some(now.mono_ms.saturating_add(left_ms));
        }
    }

    /// The admitted token expired or was revoked: ack what is in flight, then
    /// CLOSE(UNAUTHENTICATED) (the device learns only that its token is no longer valid).
    fn deauthorize(&mut self, error: TokenError) {
        self.outputs.push_back(ServerOutput::AuthFailed { error });
        self.evict(Status::Unauthenticated, "token no longer valid".to_string());
    }

    /// The device's CLOSE: a decodable body ends the session after the in-flight acks
    /// (PeerClosed); an undecodable one is CLOSE(MALFORMED_FRAME).
    fn on_close(&mut self, body: &[u8]) {
        match wire::decode_close(body) {
            Ok(_) => self.drain(Ending::PeerClosed),
            Err(e) => self.fatal(Status::MalformedFrame, format!("undecodable CLOSE: {e}")),
        }
    }

    fn on_batch(&mut self, now_ms: i64, body: &[u8]) {
        match wire::decode_batch(body, &self.ctx.cfg.limits, now_ms) {
            // A body under 8 bytes carries no seq; it is acked with seq 0 (PROTOCOL.md §4).
            Err(e) => self.reject_batch(now_ms, e.batch_seq.unwrap_or(0), e.status, e.reason),
            Ok((batch_seq, fixes)) => {
                let ticket = Ticket(self.next_ticket);
                self.next_ticket += 1;
                self.inflight.push(InFlight {
                    ticket,
                    batch_seq,
                    newest_fix_ms: fixes.newest_ms(),
                    fixes: fixes.len(),
                });
                self.outputs.push_back(ServerOutput::Submit(Submission {
                    ticket,
                    batch_seq,
                    received_at_ms: now_ms,
                    fixes,
                }));
            }
        }
    }

    fn on_confirm(&mut self, now_ms: i64, body: &[u8]) {
        let Some(device_id) = self.device_id() else {
            return;
        };
        let ack = match self.check_confirm(device_id, body) {
            Ok(c) => self.settle_confirm(device_id, c, now_ms),
            Err(ack) => {
                self.confirm_rejects += 1;
                let max = self.ctx.cfg.confirm_rejects_max;
                if self.confirm_rejects > max {
                    let reason =
                        format!("more than {max} rejected CONFIRM frames on one connection");
                    return self.fatal(Status::ProtocolViolation, reason);
                }
                self.rejected_confirm(ack)
            }
        };
        wire::encode_confirm_ack(&ack, &mut self.tx);
    }

    fn rejected_confirm(&mut self, ack: wire::ConfirmAck) -> wire::ConfirmAck {
        self.outputs.push_back(ServerOutput::ConfirmRejected {
            request_id: ack.request_id,
            status: ack.known_status().unwrap_or(Status::Internal),
        });
        ack
    }

    /// The checks that count towards the flood limit, in the order of PROTOCOL.md §9:
    /// decodable, shape, names the outstanding request, signature. `Err` is the rejection.
    fn check_confirm(
        &mut self,
        device_id: DeviceId,
        body: &[u8],
    ) -> Result<Checked, wire::ConfirmAck> {
        let c = wire::decode_confirm(body)
            .map_err(|e| wire::ConfirmAck::new(0, Status::MalformedFrame, e.to_string()))?;
        let kind = wire::check_confirm(&c)
            .map_err(|e| wire::ConfirmAck::new(c.request_id, e.status(), e.to_string()))?;
        if self.ctx.confirms.outstanding_request_id(device_id) != Some(c.request_id) {
            let reason = format!(
                "request {} is not outstanding for device {device_id}",
                c.request_id
            );
            return Err(wire::ConfirmAck::new(
                c.request_id,
                Status::UnsolicitedConfirm,
                reason,
            ));
        }
        // Set with WELCOME, before any CONFIRM can be read.
        let Some(confirm_key) = &self.confirm_key else {
            let reason = "no confirm key for this connection".to_string();
            return Err(wire::ConfirmAck::new(
                c.request_id,
                Status::Internal,
                reason,
            ));
        };
        confirm_key
            .verify(&c)
            .map_err(|e| wire::ConfirmAck::new(c.request_id, e.status(), e.to_string()))?;
        Ok(Checked {
            request_id: c.request_id,
            kind,
            batch_seq: c.batch_seq,
        })
    }

    /// Settles a verified CONFIRM: the FIX reference (not counted as abuse when unknown),
    /// then takes the outstanding request. Returns the CONFIRM_ACK to transmit.
    fn settle_confirm(&mut self, device_id: DeviceId, c: Checked, now_ms: i64) -> wire::ConfirmAck {
        let Checked {
            request_id,
            kind,
            batch_seq,
        } = c;
        let at_ms = match kind {
            ConfirmKind::Here => now_ms,
            ConfirmKind::Fix => match self.recent.iter().rev().find(|(s, _)| *s == batch_seq) {
                Some(&(_, newest_fix_ms)) => newest_fix_ms.min(now_ms),
                None => {
                    let reason = format!(
                        "batch {batch_seq} is not among the last {CONFIRM_FIX_RECENT_BATCHES} batches acked on this connection"
                    );
                    let ack = wire::ConfirmAck::new(request_id, Status::FixNotFound, reason);
                    return self.rejected_confirm(ack);
                }
            },
        };
        if !self.ctx.confirms.answer(device_id, request_id) {
            // Answered or cancelled since the check above.
            let reason = format!("request {request_id} is no longer outstanding");
            let ack = wire::ConfirmAck::new(request_id, Status::UnsolicitedConfirm, reason);
            return self.rejected_confirm(ack);
        }
        self.outputs
            .push_back(ServerOutput::ConfirmRecorded { kind, at_ms });
        wire::ConfirmAck::new(request_id, Status::Ok, "")
    }
}
