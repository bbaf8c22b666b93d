//! One connection's driver: a single task pumping the stream through a
//! [`ServerSession`] and carrying out what it asks.
//!
//! # Contract
//! * No protocol rule here: the session decides, the driver moves bytes, submits batches,
//!   feeds back outcomes and confirm requests, arms the session's deadline and closes the
//!   connection as the session's [`Ending`] says.
//! * The stream is read only while the session wants bytes and every byte owed to the
//!   device is written; at `inflight_batches_max` QUIC flow control then holds the device.
//! * Everything a connection holds is owned by the task: the connection slot and its
//!   admission counts (guards: the handshake unit, the source's connection), its shares of the in-flight and buffered-bytes gauges
//!   ([`Share`]), the session slot, the registry attachment (a guard that detaches), the
//!   session's in-flight table. A sink callback that outlives the connection finds the
//!   channel closed and does nothing; one dropped without being called answers its batch
//!   INTERNAL.
//! * Every await is bounded, so the task (and with it everything above) ends within a
//!   bounded time of the connection's end whatever the device does: the handshake by
//!   `handshake_timeout_ms`, HELLO, frame bodies and idleness by the session's deadlines,
//!   a device that stops reading by the idle deadline (nothing is read while acks are
//!   owed), the close by `close_linger_ms` per step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fix::DeviceId;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::confirmer::ConnLink;
use super::gate::Admitted;
use super::stats::{ConnectionSlot, Share};
use super::{AcceptedBatch, Shared, SinkCallback, SinkOutcome};
use crate::proto::Now;
use crate::proto::server::{Ending, ServerOutput, ServerSession, SessionState, Submission, Ticket};
use crate::wire::{ConfirmRequest, Status};

/// Largest chunk read from the stream at once: what the session may buffer beyond the
/// frame it is reading while it waits for an in-flight slot.
const READ_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Room in a connection's queue for CONFIRM_REQUEST frames (one outstanding request per
/// device; a second slot absorbs a redelivery racing a new request).
const CONFIRM_REQUEST_SLOTS: usize = 2;

/// Serves one incoming connection to its end. `slot` (a `connections_max` slot) is
/// returned when this returns, `admitted`'s handshake unit once the handshake is over and
/// its per-source count when this returns; the handshake gets at most
/// `handshake_timeout_ms`.
pub(super) async fn serve(
    incoming: quinn::Incoming,
    slot: ConnectionSlot,
    mut admitted: Admitted,
    shared: Arc<Shared>,
) {
    let _slot = slot;
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => return debug!(%remote, error = %e, "accept failed"),
    };
    let budget = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    // Dropping an unfinished `Connecting` closes the connection.
    let conn = match tokio::time::timeout(budget, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return debug!(%remote, error = %e, "handshake failed"),
        Err(_) => {
            shared
                .stats
                .handshakes_timed_out
                .fetch_add(1, Ordering::Relaxed);
            return debug!(%remote, "handshake not complete within handshake_timeout_ms");
        }
    };
    admitted.handshake_done();
    Driver::new(conn, shared, admitted).run().await;
}

/// The device's entry in the confirm registry; dropping it forgets this connection.
struct Attachment {
    shared: Arc<Shared>,
    device_id: DeviceId,
    conn_id: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.shared.registry.detach(self.device_id, self.conn_id);
    }
}

/// The sink's `done` for one batch: sends the outcome to the connection's task, or
/// INTERNAL when dropped without being called.
struct OutcomeSender {
    tx: Option<mpsc::Sender<(Ticket, SinkOutcome)>>,
    ticket: Ticket,
}

impl OutcomeSender {
    fn send(mut self, outcome: SinkOutcome) {
        if let Some(tx) = self.tx.take() {
            // Never full: one message per ticket, at most inflight_batches_max tickets. An
            // error means the connection is gone and the ack has no one to go to.
            let _ = tx.try_send((self.ticket, outcome));
        }
    }
}

impl Drop for OutcomeSender {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let outcome = SinkOutcome {
                status: Status::Internal,
                reason: "the sink dropped the batch without an outcome".into(),
                retry_after_ms: 0,
            };
            let _ = tx.try_send((self.ticket, outcome));
        }
    }
}

struct Driver {
    conn: quinn::Connection,
    remote: SocketAddr,
    /// This connection's admission counts (its source's open connections).
    admitted: Admitted,
    shared: Arc<Shared>,
    session: ServerSession,
    device_id: Option<DeviceId>,
    attachment: Option<Attachment>,
    outcomes_tx: mpsc::Sender<(Ticket, SinkOutcome)>,
    outcomes: mpsc::Receiver<(Ticket, SinkOutcome)>,
    requests_tx: mpsc::Sender<Arc<ConfirmRequest>>,
    requests: mpsc::Receiver<Arc<ConfirmRequest>>,
    /// Bytes owed to the device; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    /// This connection's part of `EndpointStats::inflight_batches`.
    inflight: Share,
    /// This connection's part of `EndpointStats::buffered_bytes`.
    buffered: Share,
    /// Counted in `EndpointStats::sessions_open` once authenticated.
    session_slot: Option<ConnectionSlot>,
    /// Cancelled by a newer connection of the same device (one session per device).
    takeover: CancellationToken,
    takeover_seen: bool,
    shutdown_seen: bool,
    ending: Option<Ending>,
}

/// Sleeps for `d`, or forever without a deadline.
async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn new(conn: quinn::Connection, shared: Arc<Shared>, admitted: Admitted) -> Self {
        let inflight_max = shared.cfg.session.inflight_batches_max.max(1) as usize;
        let (outcomes_tx, outcomes) = mpsc::channel(inflight_max);
        let (requests_tx, requests) = mpsc::channel(CONFIRM_REQUEST_SLOTS);
        let mono_ms = shared.clock.monotonic_us() / 1000;
        Self {
            remote: conn.remote_address(),
            admitted,
            conn,
            session: ServerSession::new(shared.session.clone(), mono_ms),
            inflight: Share::new(&shared.stats, |s| &s.inflight_batches),
            buffered: Share::new(&shared.stats, |s| &s.buffered_bytes),
            session_slot: None,
            shared,
            device_id: None,
            attachment: None,
            outcomes_tx,
            outcomes,
            requests_tx,
            requests,
            out: Vec::new(),
            written: 0,
            takeover: CancellationToken::new(),
            takeover_seen: false,
            shutdown_seen: false,
            ending: None,
        }
    }

    async fn run(mut self) {
        let Some((mut send, mut recv)) = self.accept_stream().await else {
            if let Some(ending) = self.ending.take() {
                self.close(None, ending).await;
            }
            return;
        };
        if let Some(ending) = self.pump(&mut send, &mut recv).await {
            self.close(Some(&mut send), ending).await;
        }
    }

    fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    fn now(&self) -> Now {
        Now {
            wall_ms: self.now_ms(),
            mono_ms: self.mono_ms(),
        }
    }

    fn mono_ms(&self) -> u64 {
        self.shared.clock.monotonic_us() / 1000
    }

    /// How long to sleep towards the session's deadline (bounded by the clock's slice).
    fn deadline_wait(&self) -> Option<Duration> {
        let clock = &self.shared.clock;
        self.session
            .poll_timeout()
            .map(|ms| clock.wait_for(ms.saturating_mul(1000)))
    }

    fn on_shutdown(&mut self) {
        self.shutdown_seen = true;
        self.session.shutdown();
    }

    /// Waits for the device's stream under the HELLO deadline and shutdown.
    async fn accept_stream(&mut self) -> Option<(SendStream, RecvStream)> {
        loop {
            let wait = self.deadline_wait();
            tokio::select! {
                r = self.conn.accept_bi() => match r {
                    Ok(streams) => return Some(streams),
                    Err(e) => {
                        debug!(remote = %self.remote, error = %e, "connection lost before its stream");
                        return None;
                    }
                },
                () = sleep_opt(wait) => self.session.handle_timeout(self.mono_ms()),
                () = self.shared.shutdown.cancelled(), if !self.shutdown_seen => self.on_shutdown(),
            }
            self.apply_outputs();
            if self.ending.is_some() {
                return None;
            }
        }
    }

    /// Runs the session until it ends (`Some`) or the connection is lost (`None`).
    async fn pump(&mut self, send: &mut SendStream, recv: &mut RecvStream) -> Option<Ending> {
        loop {
            self.apply_outputs();
            if let Some(ending) = self.ending.take() {
                return Some(ending);
            }
            let wait = self.deadline_wait();
            let flushing = self.written < self.out.len();
            let reading = !flushing && self.session.wants_read();
            tokio::select! {
                r = send.write(&self.out[self.written..]), if flushing => match r {
                    Ok(n) => self.wrote(n),
                    Err(e) => return self.lost("stream write failed", &e),
                },
                Some((ticket, outcome)) = self.outcomes.recv() => {
                    self.session.on_sink_outcome(self.now(), ticket, outcome);
                }
                Some(request) = self.requests.recv() => {
                    self.session.deliver_confirm_request(&request);
                }
                r = recv.read_chunk(READ_CHUNK_BYTES_MAX, true), if reading => match r {
                    Ok(Some(chunk)) => self.session.handle_data(self.now(), &chunk.bytes),
                    Ok(None) | Err(quinn::ReadError::Reset(_)) => self.session.handle_eof(),
                    Err(e) => return self.lost("stream read failed", &e),
                },
                e = self.conn.closed() => return self.lost("connection lost", &e),
                () = sleep_opt(wait) => self.session.handle_timeout(self.mono_ms()),
                () = self.shared.shutdown.cancelled(), if !self.shutdown_seen => self.on_shutdown(),
                () = self.takeover.cancelled(), if !self.takeover_seen => self.on_takeover(),
            }
        }
    }

    /// A newer connection authenticated as this device: this session acks what it has in
    /// flight and closes with SESSION_REPLACED.
    fn on_takeover(&mut self) {
        self.takeover_seen = true;
        self.shared
            .stats
            .sessions_replaced
            .fetch_add(1, Ordering::Relaxed);
        let reason = "another connection authenticated as this device".to_string();
        self.session.evict(Status::SessionReplaced, reason);
    }

    fn lost(&self, what: &str, e: &dyn std::error::Error) -> Option<Ending> {
        debug!(remote = %self.remote, device_id = ?self.device_id, error = %e, "{what}");
        None
    }

    fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }

    /// Carries out the session's outputs and collects the bytes it wants written.
    fn apply_outputs(&mut self) {
        while let Some(output) = self.session.poll_output() {
            let stats = &self.shared.stats;
            match output {
                ServerOutput::Authenticated { claims } => {
                    self.shared.gate.login_succeeded(self.admitted.ip());
                    self.attach(claims.device_id);
                }
                ServerOutput::AuthFailed { error } => {
                    stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    self.auth_failed(&error);
                }
                ServerOutput::Contact { now_ms } => {
                    if let Some(d) = self.device_id {
                        self.shared.activity.on_contact(d, now_ms);
                    }
                }
                ServerOutput::Submit(s) => self.submit(s),
                ServerOutput::Acked {
                    status,
                    newest_fix_ms,
                    fixes,
                    now_ms,
                    ..
                } => self.count_ack(status, newest_fix_ms, fixes, now_ms),
                ServerOutput::ConfirmRecorded { kind, at_ms } => {
                    if let Some(d) = self.device_id {
                        self.shared.activity.on_confirm(d, kind, at_ms);
                        debug!(device_id = %d, %kind, at_ms, "location confirmed");
                    }
                    stats.confirms_recorded.fetch_add(1, Ordering::Relaxed);
                }
                ServerOutput::ConfirmRejected { .. } => {
                    stats.confirms_rejected.fetch_add(1, Ordering::Relaxed);
                }
                ServerOutput::End(ending) => self.ending = Some(ending),
            }
        }
        // A session that stopped reading takes no more confirm requests: new ones wait for
        // the device's next WELCOME.
        if self.session.state() != SessionState::Open {
            self.attachment = None;
            self.session_slot = None;
        }
        self.session.poll_transmit(&mut self.out);
        self.inflight.set(self.session.inflight());
        self.buffered.set(self.session.buffered_capacity());
    }

    /// Counts a refused HELLO against the source (back-off) and logs it unless the log
    /// limiter suppresses it; a token that expired or was revoked during the session is
    /// logged as such (once per session, not a flood).
    fn auth_failed(&self, error: &crate::auth::TokenError) {
        if let Some(device_id) = self.device_id {
            return info!(remote = %self.remote, %device_id, %error, "token no longer valid");
        }
        let failed = self.shared.gate.login_failed(self.admitted.ip());
        if let Some(suppressed) = failed.log {
            info!(
                remote = %self.remote,
                %error,
                suppressed,
                backoff_ms = failed.backoff_ms,
                "authentication failed (suppressed: failures not logged since the previous line)"
            );
        }
    }

    /// Registers the connection for confirm requests; the outstanding one goes right after
    /// WELCOME.
    fn attach(&mut self, device_id: DeviceId) {
        self.device_id = Some(device_id);
        let shared = &self.shared;
        // Authenticated: the device may now fill the full connection window.
        self.conn
            .set_receive_window(VarInt::from_u32(shared.cfg.connection_receive_window_bytes));
        self.session_slot =
            ConnectionSlot::try_acquire_in(&shared.stats, |s| &s.sessions_open, usize::MAX);
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let link = ConnLink {
            requests: self.requests_tx.clone(),
            takeover: self.takeover.clone(),
        };
        let (request, replaced) = shared.registry.attach_replacing(device_id, conn_id, link);
        // One session per device (MQTT-style takeover): the older connection is ended.
        if let Some(older) = replaced {
            older.takeover.cancel();
        }
        if request.is_some() {
            shared
                .stats
                .confirm_requests_delivered
                .fetch_add(1, Ordering::Relaxed);
        }
        self.attachment = Some(Attachment {
            shared: shared.clone(),
            device_id,
            conn_id,
        });
        debug!(remote = %self.remote, %device_id, "device authenticated");
        let now = self.now();
        self.session.attached(now, request.as_deref());
    }

    fn submit(&mut self, s: Submission) {
        let Some(device_id) = self.device_id else {
            return;
        };
        let sender = OutcomeSender {
            tx: Some(self.outcomes_tx.clone()),
            ticket: s.ticket,
        };
        let done: SinkCallback = Box::new(move |outcome| sender.send(outcome));
        let batch = AcceptedBatch {
            device_id,
            batch_seq: s.batch_seq,
            received_at_ms: s.received_at_ms,
            fixes: s.fixes,
        };
        self.shared.sink.submit(batch, done);
    }

    fn count_ack(&self, status: Status, newest_fix_ms: Option<i64>, fixes: usize, now_ms: i64) {
        let stats = &self.shared.stats;
        match status {
            Status::Ok => {
                stats.batches_ok.fetch_add(1, Ordering::Relaxed);
                stats.fixes_ok.fetch_add(fixes as u64, Ordering::Relaxed);
                if let (Some(d), Some(t)) = (self.device_id, newest_fix_ms) {
                    self.shared.activity.on_fixes_stored(d, t, now_ms);
                }
            }
            Status::Duplicate => {
                stats.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Carries out the ending: write what is owed (the CLOSE frame last), finish the
    /// stream, linger, close the connection. Each waiting step takes at most
    /// `close_linger_ms`, so a device that stops reading cannot hold the connection.
    async fn close(&mut self, send: Option<&mut SendStream>, ending: Ending) {
        let linger = Duration::from_millis(self.shared.cfg.close_linger_ms);
        let (status, reason) = match &ending {
            Ending::Close { status, reason } => (*status, reason.as_str()),
            Ending::PeerClosed => (Status::Ok, "bye"),
        };
        match (&ending, self.device_id) {
            (Ending::PeerClosed, _) => {}
            (_, None) => {
                debug!(remote = %self.remote, ?status, %reason, "connection refused during hello")
            }
            (_, Some(_)) if status == Status::ShuttingDown => {}
            // The session closes with OK only when the device went idle.
            (_, Some(d)) if status == Status::Ok => {
                self.shared
                    .stats
                    .sessions_idle_closed
                    .fetch_add(1, Ordering::Relaxed);
                debug!(remote = %self.remote, device_id = %d, %reason, "closing idle connection")
            }
            (_, Some(d)) => {
                info!(remote = %self.remote, device_id = %d, ?status, %reason, "closing connection")
            }
        }
        if let Some(send) = send {
            let owed = &self.out[self.written..];
            let deliver = async {
                if send.write_all(owed).await.is_ok() && send.finish().is_ok() {
                    // Closing earlier could discard acks the device has not read yet.
                    let _ = send.stopped().await;
                }
            };
            let _ = tokio::time::timeout(linger, deliver).await;
        }
        if ending == Ending::PeerClosed {
            // The device closes the connection itself once our end of the stream arrived.
            let _ = tokio::time::timeout(linger, self.conn.closed()).await;
        }
        self.conn
            .close(VarInt::from_u32(status.code()), reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket_of(s: &mut ServerSession) -> Ticket {
        // Tickets are only made by sessions; take one from a real submission.
        loop {
            match s.poll_output() {
                Some(ServerOutput::Submit(sub)) => return sub.ticket,
                Some(_) => {}
                None => panic!("no submission"),
            }
        }
    }

    fn session_with_a_batch() -> (ServerSession, Ticket) {
        use crate::proto::confirm::Registry;
        use crate::proto::server::{ServerContext, SessionConfig};
        let key = crate::auth::TokenKey::from_bytes(&[1; 32]).expect("key");
        let token = key.mint(DeviceId::try_from(3).expect("id"));
        let confirm = crate::auth::ConfirmMasterKey::from_bytes(&[2; 32]).expect("key");
        let ctx = Arc::new(ServerContext {
            cfg: SessionConfig::default(),
            auth: Arc::new(crate::auth::Authenticator::v1_only(key, confirm)),
            confirms: Arc::new(Registry::<()>::new(1, 1)),
        });
        let mut s = ServerSession::new(ctx, 0);
        let mut bytes = vec![];
        crate::proto::client::ClientSession::<(), ()>::encode_hello(&token, "t", &mut bytes);
        let at = |wall_ms| Now {
            wall_ms,
            mono_ms: 0,
        };
        s.handle_data(at(0), &bytes);
        s.attached(at(0), None);
        let mut fixes = crate::wire::Fixes::default();
        fixes.push(&crate::wire::Fix::from_degrees(1_000, 1.0, 1.0));
        bytes.clear();
        crate::wire::encode_batch_frame_raw(9, &fixes, &mut bytes).expect("encodes");
        s.handle_data(at(1_000), &bytes);
        let t = ticket_of(&mut s);
        (s, t)
    }

    #[test]
    fn a_sink_callback_dropped_uncalled_answers_internal() {
        let (_s, ticket) = session_with_a_batch();
        let (tx, mut rx) = mpsc::channel(1);
        let sender = OutcomeSender {
            tx: Some(tx.clone()),
            ticket,
        };
        let done: SinkCallback = Box::new(move |outcome| sender.send(outcome));
        drop(done);
        let (t, outcome) = rx.try_recv().expect("an outcome for the dropped callback");
        assert_eq!((t, outcome.status), (ticket, Status::Internal));
        let sender = OutcomeSender {
            tx: Some(tx),
            ticket,
        };
        sender.send(SinkOutcome::ok());
        assert_eq!(rx.try_recv().expect("sent").1, SinkOutcome::ok());
        assert!(rx.try_recv().is_err(), "exactly one outcome per callback");
    }
}
