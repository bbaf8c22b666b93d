//! One connection of a [`super::Device`]: its [`ClientSession`] behind a lock shared by the
//! calling tasks and the connection's one task, which pumps the stream both ways.
//!
//! # Contract
//! * Callers register a waiter with the session (waiting while the in-flight bound is
//!   reached), queue their frame whole to the connection task, and await the answer; a
//!   caller that leaves (answer, timeout, cancellation) unregisters through a guard, which
//!   frees its slot.
//! * The connection task writes queued frames and feeds received bytes to the session,
//!   handing answers to their waiters and confirm requests to the app's inbox. When the
//!   session ends (CLOSE from the server, a protocol break, a transport error), every waiter
//!   is woken and reads the one typed end error.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{ClientConfig, ClientError};
use crate::proto::client::{ClientEvent, ClientSession, RegisterError, RequestFilter, WaiterKey};
use crate::wire::{Ack, ConfirmAck, ConfirmRequest, Welcome};

/// Largest chunk read from the stream at once.
const READ_CHUNK_BYTES_MAX: usize = 16 * 1024;

pub(super) type Session = ClientSession<oneshot::Sender<Ack>, oneshot::Sender<ConfirmAck>>;

/// A frame queued for the connection task.
pub(super) enum Outgoing {
    Frame(Vec<u8>),
    /// Write, finish the stream, wait for the peer to acknowledge it, then signal.
    Close(Vec<u8>, oneshot::Sender<()>),
}

/// Where CONFIRM_REQUESTs go: the app's bounded channel, without repeating the request
/// last handed over (the server redelivers an unanswered request after each reconnect).
pub(super) struct Inbox {
    pub(super) tx: mpsc::Sender<ConfirmRequest>,
    pub(super) filter: Mutex<RequestFilter>,
}

impl Inbox {
    pub(super) fn offer(&self, request: ConfirmRequest) {
        let mut filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
        let id = request.request_id;
        if !filter.is_new(id) {
            return;
        }
        match self.tx.try_send(request) {
            Ok(()) => filter.handed_over(id),
            Err(e) => tracing::warn!(
                request_id = id,
                error = %e,
                "confirm request dropped (app not reading confirm_requests)"
            ),
        }
    }
}

struct Inner {
    session: Session,
    /// Why the session ended; set once.
    ended: Option<ClientError>,
}

/// The session and the end reason, shared by callers and the connection task.
pub(super) struct LinkState {
    inner: Mutex<Inner>,
    /// Woken whenever a waiter leaves (an in-flight slot may be free) or the session ends.
    slot_freed: Notify,
}

impl LinkState {
    pub(super) fn new(inflight_batches_max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                session: Session::new(inflight_batches_max),
                ended: None,
            }),
            slot_freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the session inconsistent for the
        // next caller beyond what it already handles (every method is one short step).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn welcome(&self) -> Option<Welcome> {
        self.lock().session.welcome().cloned()
    }

    /// The WELCOME's `batch_bytes_max`, checked before the batch takes an in-flight slot.
    pub(super) fn check_batch_body(
        &self,
        batch_seq: u64,
        body_len: usize,
    ) -> Result<(), ClientError> {
        Ok(self.lock().session.check_batch_body(batch_seq, body_len)?)
    }

    pub(super) fn is_ended(&self) -> bool {
        self.lock().session.is_ended()
    }

    /// The error every caller of an ended session gets.
    pub(super) fn end_error(&self) -> ClientError {
        self.lock()
            .ended
            .clone()
            .unwrap_or(ClientError::StreamFinished)
    }

    /// Ends the session (first reason wins); every waiter is woken.
    pub(super) fn fail(&self, why: ClientError) {
        let mut inner = self.lock();
        if inner.ended.is_none() {
            tracing::debug!(error = %why, "device session ended");
            inner.ended = Some(why);
        }
        inner.session.end();
        drop(inner);
        self.slot_freed.notify_waiters();
    }

    /// Feeds a read result to the session; false once the session ended.
    pub(super) fn on_read(
        &self,
        read: Result<Option<quinn::Chunk>, quinn::ReadError>,
        inbox: &Inbox,
    ) -> bool {
        match read {
            Ok(Some(chunk)) => self.on_data(&chunk.bytes, inbox),
            Ok(None) => {
                self.fail(ClientError::StreamFinished);
                false
            }
            Err(e) => {
                self.fail(ClientError::from_read(e));
                false
            }
        }
    }

    fn on_data(&self, data: &[u8], inbox: &Inbox) -> bool {
        let mut inner = self.lock();
        inner.session.handle_data(data);
        while let Some(event) = inner.session.poll_event() {
            match event {
                ClientEvent::Welcomed(_) => {}
                ClientEvent::Acked { waiter, ack } => {
                    let _ = waiter.send(ack);
                }
                ClientEvent::ConfirmAcked { waiter, ack } => {
                    let _ = waiter.send(ack);
                }
                ClientEvent::ConfirmRequest(request) => inbox.offer(request),
                ClientEvent::Ended(e) => {
                    tracing::debug!(error = %e, "device session ended");
                    if inner.ended.is_none() {
                        inner.ended = Some(e.into());
                    }
                }
            }
        }
        let alive = !inner.session.is_ended();
        drop(inner);
        self.slot_freed.notify_waiters();
        alive
    }

    /// Registers a waiter with `register`, waiting while the in-flight bound is reached.
    pub(super) async fn register<T>(
        &self,
        register: impl Fn(&mut Session, oneshot::Sender<T>) -> Result<WaiterKey, RegisterError>,
    ) -> Result<(WaiterGuard<'_>, oneshot::Receiver<T>), ClientError> {
        loop {
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot freed in between is not missed.
            freed.as_mut().enable();
            {
                let mut inner = self.lock();
                let (tx, rx) = oneshot::channel();
                match register(&mut inner.session, tx) {
                    Ok(key) => return Ok((WaiterGuard { state: self, key }, rx)),
                    Err(RegisterError::Full) => {}
                    Err(RegisterError::SeqInFlight { batch_seq }) => {
                        return Err(ClientError::SeqInFlight { batch_seq });
                    }
                    Err(RegisterError::ConfirmInFlight { request_id }) => {
                        return Err(ClientError::ConfirmInFlight { request_id });
                    }
                    Err(RegisterError::Ended) => {
                        return Err(inner.ended.clone().unwrap_or(ClientError::StreamFinished));
                    }
                }
            }
            freed.await;
        }
    }
}

/// Removes a caller's registration when its call returns or is dropped.
pub(super) struct WaiterGuard<'a> {
    state: &'a LinkState,
    key: WaiterKey,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let freed = self.state.lock().session.unregister(self.key);
        if freed {
            self.state.slot_freed.notify_waiters();
        }
    }
}

/// One authenticated connection and its stream.
pub(super) struct Link {
    pub(super) conn: quinn::Connection,
    pub(super) frames: mpsc::Sender<Outgoing>,
    pub(super) state: Arc<LinkState>,
    pub(super) welcome: Welcome,
}

impl Link {
    pub(super) fn is_alive(&self) -> bool {
        !self.state.is_ended() && self.conn.close_reason().is_none()
    }

    /// Queues a whole frame for the connection task.
    pub(super) async fn send(&self, item: Outgoing) -> Result<(), ClientError> {
        self.frames
            .send(item)
            .await
            .map_err(|_| self.state.end_error())
    }

    /// One request: registers its waiter with `register` (see [`LinkState::register`]),
    /// queues `frame`, and awaits the answer for up to `timeout_ms`; `timed_out(timeout_ms)`
    /// is the error when it does not come in time. The registration ends when this returns
    /// or is dropped.
    pub(super) async fn request<T>(
        &self,
        frame: Vec<u8>,
        register: impl Fn(&mut Session, oneshot::Sender<T>) -> Result<WaiterKey, RegisterError>,
        timeout_ms: u64,
        timed_out: impl FnOnce(u64) -> ClientError,
    ) -> Result<T, ClientError> {
        let (_guard, rx) = self.state.register(register).await?;
        self.send(Outgoing::Frame(frame)).await?;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(self.state.end_error()),
            Err(_) => Err(timed_out(timeout_ms)),
        }
    }

    /// QUIC connect, HELLO, WELCOME; then the connection task runs until the session ends.
    pub(super) async fn open(
        endpoint: &quinn::Endpoint,
        quic: &quinn::ClientConfig,
        cfg: &ClientConfig,
        inbox: Arc<Inbox>,
    ) -> Result<Link, ClientError> {
        let conn = endpoint
            .connect_with(quic.clone(), cfg.server_addr, &cfg.server_name)?
            .await
            .map_err(ClientError::from_connection)?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(ClientError::from_connection)?;
        let mut hello = Vec::new();
        Session::encode_hello(&cfg.token, &cfg.client_agent, &mut hello);
        send.write_all(&hello)
            .await
            .map_err(ClientError::from_write)?;
        let state = Arc::new(LinkState::new(cfg.inflight_batches_max));
        // Frames after WELCOME in the same read (a confirm request) are handled here too.
        let welcome = loop {
            let read = recv.read_chunk(READ_CHUNK_BYTES_MAX, true).await;
            if !state.on_read(read, &inbox) {
                return Err(state.end_error());
            }
            if let Some(w) = state.welcome() {
                break w;
            }
        };
        let inflight = state.lock().session.inflight_max();
        // Room for every in-flight frame plus heartbeats and the final CLOSE.
        let (frames, frames_rx) = mpsc::channel(inflight.saturating_add(4).min(4096));
        let linger = Duration::from_millis(cfg.close_linger_ms);
        tokio::spawn(drive(send, recv, frames_rx, state.clone(), inbox, linger));
        tracing::debug!(device_id = welcome.device_id, inflight, "device connected");
        Ok(Link {
            conn,
            frames,
            state,
            welcome,
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Ends the connection task; harmless when the connection is already closed.
        self.conn.close(
            quinn::VarInt::from_u32(crate::wire::Status::Ok.code()),
            b"client dropped the connection",
        );
    }
}

/// The connection task: writes queued frames, reads the server's, until the session ends
/// or the [`Link`] is dropped.
async fn drive(
    mut send: SendStream,
    mut recv: RecvStream,
    mut frames: mpsc::Receiver<Outgoing>,
    state: Arc<LinkState>,
    inbox: Arc<Inbox>,
    linger: Duration,
) {
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut closing: Option<oneshot::Sender<()>> = None;
    loop {
        let flushing = written < out.len();
        tokio::select! {
            read = recv.read_chunk(READ_CHUNK_BYTES_MAX, true) => {
                if !state.on_read(read, &inbox) {
                    return;
                }
            }
            r = send.write(&out[written..]), if flushing => match r {
                Ok(n) => written += n,
                Err(e) => return state.fail(ClientError::from_write(e)),
            },
            item = frames.recv(), if !flushing && closing.is_none() => match item {
                Some(Outgoing::Frame(frame)) => (out, written) = (frame, 0),
                Some(Outgoing::Close(frame, done)) => {
                    (out, written) = (frame, 0);
                    closing = Some(done);
                }
                None => {
                    let _ = send.finish();
                    return;
                }
            },
        }
        if written == out.len() {
            if let Some(done) = closing.take() {
                if send.finish().is_ok() {
                    let _ = tokio::time::timeout(linger, send.stopped()).await;
                }
                let _ = done.send(());
                return;
            }
        }
    }
}
