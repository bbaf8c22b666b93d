//! The device client library (feature `client`): connect, authenticate, send batches,
//! await acks, retry. The quinn driver of [`crate::proto::client`].
//!
//! Contract:
//! * One [`Device`] is one device's authenticated QUIC connection with ONE bidirectional
//!   stream carrying every frame (protocol v1, `docs/PROTOCOL.md`). Many tasks may call
//!   [`Device::send_once`] / [`Device::send`] concurrently: batches are pipelined on the
//!   stream, at most `min(ClientConfig::inflight_batches_max, Welcome::inflight_batches_max)`
//!   unacked at a time; acks are matched to callers by `batch_seq`. The protocol side of
//!   this (HELLO, WELCOME limits, waiters, error classification, retry decisions) is the
//!   sans-IO [`ClientSession`](crate::proto::client::ClientSession); this module pumps it.
//! * A lost connection is replaced transparently by the next call (QUIC connect + HELLO +
//!   WELCOME again). [`Device::send`] resends the SAME `batch_seq` after a transient status
//!   or a connection loss; the server's dedup window makes that idempotent (a batch already
//!   stored is acked DUPLICATE, which counts as success).
//! * Frames are queued whole to the connection's task, so dropping a send future
//!   (cancellation, timeout) never leaves half a frame on the stream.
//! * Errors are typed end to end: when a session ends, every caller waiting on it gets a
//!   clone of the same [`ClientError`].
//! * Confirm-location (`docs/PROTOCOL.md` §9): CONFIRM_REQUEST frames from the server reach
//!   the app through [`Device::confirm_requests`] (each request once per `Device`, even when
//!   the server redelivers it after a reconnect); the app answers with
//!   [`Device::confirm_here`] or [`Device::confirm_with_fix`], which sign the CONFIRM with
//!   the device's confirm secret ([`ClientConfig::confirm_secret`]; a version-1 token's
//!   key is derived from the token) and the time of [`ClientConfig::clock`], and await the
//!   server's CONFIRM_ACK. Requests arrive only while a connection is open: an app that
//!   may idle should send heartbeats.
//! * TLS is rustls with the *ring* provider, TLS 1.3 only, ALPN `hexflow/1`, trusting only
//!   the CA in [`ClientConfig::ca_pem`]. This module contains no server code.
//!
//! # Choosing `batch_seq`
//! `batch_seq` identifies a batch for deduplication. It must be non-zero and strictly
//! increase per device across app restarts, so pick one of:
//! * a counter persisted (fsync'd) by the app before the batch is first sent, or
//! * the batch's creation time in microseconds since the Unix epoch (unique as long as the
//!   app creates at most one batch per microsecond and the device clock never runs back).
//!
//! The server remembers the last `Welcome::dedup_window_batches` (64) seqs per device and
//! acks older ones STALE_SEQUENCE, so never have more than that many batches unacked: a
//! batch resent after falling out of the window cannot be recognised as a duplicate.

mod config;
mod error;
mod link;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

pub use self::config::ClientConfig;
pub use self::error::ClientError;
pub use crate::proto::client::{BatchTooLarge, RetryPolicy, SessionError};

use self::link::{Inbox, Link, Outgoing};
use crate::proto::client::{
    AckVerdict, ConfirmVerdict, RequestFilter, ack_verdict, confirm_verdict,
};
use crate::wire::{
    self, Ack, Close, Confirm, ConfirmAck, ConfirmKey, ConfirmKind, ConfirmRequest,
    FRAME_HEADER_LEN, Fixes, Status, StatusClass, Welcome,
};

/// One UDP socket shared by many simulated devices (the load generator opens thousands of
/// connections on one endpoint). Must be called inside a tokio runtime. Per-connection
/// settings (small receive windows, TLS) are applied by [`Device::connect`].
///
/// # Errors
/// [`ClientError::Bind`] when the socket cannot be bound.
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
    quinn::Endpoint::client(bind).map_err(|source| ClientError::Bind {
        addr: bind,
        source: Arc::new(source),
    })
}

/// One device's authenticated connection; `Send + Sync`, share it behind an `Arc` between
/// tasks. Reconnects transparently when the connection is lost.
pub struct Device {
    endpoint: quinn::Endpoint,
    cfg: ClientConfig,
    quic: quinn::ClientConfig,
    link: AsyncMutex<Option<Arc<Link>>>,
    welcome: StdMutex<Welcome>,
    closed: AtomicBool,
    confirm_key: ConfirmKey,
    inbox: Arc<Inbox>,
    confirm_rx: StdMutex<Option<mpsc::Receiver<ConfirmRequest>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("server_addr", &self.cfg.server_addr)
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

impl Device {
    /// QUIC connect, send HELLO, wait for WELCOME.
    ///
    /// # Errors
    /// [`ClientError::Session`] (`SessionError::Rejected`) when the server answers HELLO with CLOSE (for example
    /// UNAUTHENTICATED or UNSUPPORTED_VERSION); TLS, connection and timeout errors.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        cfg: ClientConfig,
    ) -> Result<Device, ClientError> {
        let quic = config::quic_client_config(&cfg)?;
        let (confirm_tx, confirm_rx) = mpsc::channel(cfg.confirm_requests_max.max(1));
        let device = Device {
            endpoint: endpoint.clone(),
            confirm_key: match &cfg.confirm_secret {
                Some(secret) => ConfirmKey::from_secret(secret),
                None => ConfirmKey::from_token(&cfg.token),
            },
            cfg,
            quic,
            link: AsyncMutex::new(None),
            welcome: StdMutex::new(Welcome::default()),
            closed: AtomicBool::new(false),
            inbox: Arc::new(Inbox {
                tx: confirm_tx,
                filter: StdMutex::new(RequestFilter::default()),
            }),
            confirm_rx: StdMutex::new(Some(confirm_rx)),
        };
        device.link().await?;
        Ok(device)
    }

    /// The device id from the latest WELCOME.
    pub fn device_id(&self) -> u64 {
        self.welcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .device_id
    }

    /// The server limits from the latest WELCOME.
    pub fn welcome(&self) -> Welcome {
        self.welcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The live connection, connecting first if there is none or it died.
    async fn link(&self) -> Result<Arc<Link>, ClientError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        // Held while connecting so that concurrent callers wait for one reconnect.
        let mut slot = self.link.lock().await;
        if let Some(l) = slot.as_ref() {
            if l.is_alive() {
                return Ok(Arc::clone(l));
            }
        }
        *slot = None;
        let timeout_ms = self.cfg.connect_timeout_ms;
        let open = Link::open(&self.endpoint, &self.quic, &self.cfg, self.inbox.clone());
        let link = tokio::time::timeout(Duration::from_millis(timeout_ms), open)
            .await
            .map_err(|_| ClientError::ConnectTimeout { timeout_ms })??;
        let link = Arc::new(link);
        *self.welcome.lock().unwrap_or_else(PoisonError::into_inner) = link.welcome.clone();
        *slot = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Sends one batch and awaits its ack, WITHOUT retry (it connects first if the
    /// connection is gone). Many calls may be in flight concurrently from different tasks,
    /// pipelined on the one stream and bounded by `min(inflight_batches_max, server's)`.
    /// Returns the server's Ack whatever its status.
    ///
    /// # Cancel safety
    /// Dropping the future never corrupts the stream: the frame is queued whole or not at
    /// all. A batch that was queued may still be stored; resend it with the same seq.
    ///
    /// # Errors
    /// Encoding and size errors, connection errors, [`ClientError::AckTimeout`],
    /// [`ClientError::SeqInFlight`], [`ClientError::Closed`].
    pub async fn send_once(&self, batch_seq: u64, fixes: &Fixes) -> Result<Ack, ClientError> {
        let link = self.link().await?;
        let mut frame = Vec::new();
        wire::encode_batch_frame(batch_seq, fixes, self.cfg.zstd_level, &mut frame)?;
        let body_len = frame.len() - FRAME_HEADER_LEN;
        link.state.check_batch_body(batch_seq, body_len)?;
        link.request(
            frame,
            |s, tx| s.register_batch(batch_seq, tx),
            self.cfg.ack_timeout_ms,
            |timeout_ms| ClientError::AckTimeout {
                batch_seq,
                timeout_ms,
            },
        )
        .await
    }

    /// Sends with retries: on a transient status waits at least the server's
    /// `retry_after_ms` (plus jitter) or a jittered backoff; on connection loss reconnects
    /// and resends the SAME seq (idempotent thanks to server dedup). Returns the final Ack
    /// (OK/DUPLICATE or a permanent 1xx rejection) or an error when attempts are exhausted
    /// or the error cannot be retried (connection-level statuses such as UNAUTHENTICATED).
    ///
    /// # Cancel safety
    /// As [`Device::send_once`].
    ///
    /// # Errors
    /// [`ClientError::RetriesExhausted`] wrapping the last error, or the first
    /// non-retryable error.
    pub async fn send(&self, batch_seq: u64, fixes: &Fixes) -> Result<Ack, ClientError> {
        let policy = &self.cfg.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last: ClientError = match self.send_once(batch_seq, fixes).await {
                Ok(ack) => match ack_verdict(&ack) {
                    AckVerdict::Done => return Ok(ack),
                    AckVerdict::Retry(e) => e.into(),
                    AckVerdict::Fail(e) => return Err(e.into()),
                },
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            let retry_after_ms = last.retry_after_ms();
            let Some(delay_ms) = policy.retry_delay_ms(attempt, retry_after_ms, rand::random())
            else {
                return Err(ClientError::RetriesExhausted {
                    batch_seq,
                    attempts: attempt,
                    last: Box::new(last),
                });
            };
            tracing::debug!(batch_seq, attempt, delay_ms, error = %last, "retrying batch");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// The server's confirm-location requests, in arrival order. Only the first call gets
    /// the receiver (`None` afterwards). Each request appears once even if the server
    /// redelivers it after a reconnect; answer it with [`Device::confirm_here`] or
    /// [`Device::confirm_with_fix`]. At most `ClientConfig::confirm_requests_max` wait
    /// unread.
    pub fn confirm_requests(&self) -> Option<mpsc::Receiver<ConfirmRequest>> {
        self.confirm_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Answers request `request_id` with a signed HERE ("I am here", no position) and
    /// returns the server's CONFIRM_ACK whatever its status (OK = recorded). Retries like
    /// [`Device::send`] after connection loss or a transient status; a retry whose first
    /// attempt was in fact recorded is answered UNSOLICITED_CONFIRM.
    ///
    /// # Cancel safety
    /// As [`Device::send_once`]: the frame is queued whole or not at all.
    ///
    /// # Errors
    /// Connection errors, [`ClientError::ConfirmRetriesExhausted`],
    /// [`ClientError::ConfirmInFlight`], [`ClientError::Closed`].
    pub async fn confirm_here(&self, request_id: u64) -> Result<ConfirmAck, ClientError> {
        self.confirm_retrying(request_id, None).await
    }

    /// Answers request `request_id` with a fresh position: sends `fixes` as batch
    /// `batch_seq` (with retries, as [`Device::send`]), then a signed CONFIRM of kind FIX
    /// naming it, and returns the server's CONFIRM_ACK whatever its status. If the
    /// connection was replaced between the two (the server then answers FIX_NOT_FOUND), the
    /// batch is resent with the same seq (acked DUPLICATE) and the CONFIRM repeated.
    ///
    /// # Cancel safety
    /// As [`Device::send_once`].
    ///
    /// # Errors
    /// [`ClientError::Session`] (`Rejected`) when the batch itself is refused (1xx), the errors of
    /// [`Device::send`], and those of [`Device::confirm_here`].
    pub async fn confirm_with_fix(
        &self,
        request_id: u64,
        batch_seq: u64,
        fixes: &Fixes,
    ) -> Result<ConfirmAck, ClientError> {
        self.confirm_retrying(request_id, Some((batch_seq, fixes)))
            .await
    }

    async fn confirm_retrying(
        &self,
        request_id: u64,
        fix: Option<(u64, &Fixes)>,
    ) -> Result<ConfirmAck, ClientError> {
        let policy = &self.cfg.retry;
        let attempts_max = policy.attempts_max.max(1);
        let (kind, batch_seq) = match fix {
            Some((seq, _)) => (ConfirmKind::Fix, seq),
            None => (ConfirmKind::Here, 0),
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some((seq, fixes)) = fix {
                let ack = self.send(seq, fixes).await?;
                if StatusClass::of_code(ack.status) != StatusClass::Success {
                    return Err(ClientError::from_status(
                        ack.status,
                        ack.reason,
                        ack.retry_after_ms,
                    ));
                }
            }
            let device_time_ms = self.cfg.clock.now_ms();
            let confirm = self
                .confirm_key
                .confirm(request_id, kind, batch_seq, device_time_ms);
            let last: ClientError = match self.confirm_once(&confirm).await {
                Ok(ack) => match confirm_verdict(&ack, attempt < attempts_max) {
                    ConfirmVerdict::Done => return Ok(ack),
                    ConfirmVerdict::ResendBatch => {
                        // The batch was acked on an earlier connection; resend it on this one.
                        tracing::debug!(
                            request_id,
                            batch_seq,
                            "FIX_NOT_FOUND, resending the batch"
                        );
                        continue;
                    }
                    ConfirmVerdict::Retry(e) => e.into(),
                },
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            let Some(delay_ms) =
                policy.retry_delay_ms(attempt, last.retry_after_ms(), rand::random())
            else {
                return Err(ClientError::ConfirmRetriesExhausted {
                    request_id,
                    attempts: attempt,
                    last: Box::new(last),
                });
            };
            tracing::debug!(request_id, attempt, delay_ms, error = %last, "retrying confirm");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// Sends one CONFIRM and awaits its CONFIRM_ACK, without retry.
    async fn confirm_once(&self, confirm: &Confirm) -> Result<ConfirmAck, ClientError> {
        let link = self.link().await?;
        let mut frame = Vec::new();
        wire::encode_confirm(confirm, &mut frame);
        let request_id = confirm.request_id;
        // A CONFIRM takes one of the server's in-flight slots until its answer arrives.
        link.request(
            frame,
            |s, tx| s.register_confirm(request_id, tx),
            self.cfg.ack_timeout_ms,
            |timeout_ms| ClientError::ConfirmTimeout {
                request_id,
                timeout_ms,
            },
        )
        .await
    }

    /// Sends a HEARTBEAT (the device is alive without fixes). No answer is expected.
    ///
    /// # Errors
    /// Connection errors and [`ClientError::Closed`].
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        let link = self.link().await?;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN);
        wire::encode_heartbeat(&mut frame);
        link.send(Outgoing::Frame(frame)).await
    }

    /// Sends CLOSE(OK), waits up to `close_linger_ms` for it to be delivered, then closes
    /// the connection. Batches still awaiting an ack fail (resend them later with the same
    /// seq); later calls return [`ClientError::Closed`].
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let Some(link) = self.link.lock().await.take() else {
            return;
        };
        let mut frame = Vec::new();
        wire::encode_close(
            &Close {
                status: Status::Ok.code(),
                reason: "client closing".to_string(),
                retry_after_ms: 0,
            },
            &mut frame,
        );
        let (done_tx, done_rx) = oneshot::channel();
        let linger = Duration::from_millis(self.cfg.close_linger_ms);
        // Bounded: a server that stopped reading must not keep close() waiting.
        let _ = tokio::time::timeout(linger, async {
            if link.send(Outgoing::Close(frame, done_tx)).await.is_ok() {
                let _ = done_rx.await;
            }
        })
        .await;
        link.conn.close(
            quinn::VarInt::from_u32(Status::Ok.code()),
            b"client closing",
        );
        link.state.fail(ClientError::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Device>();
        check::<ClientError>();
    }

    #[test]
    fn inbox_hands_each_request_once_and_is_bounded() {
        let (tx, mut rx) = mpsc::channel(2);
        let inbox = Inbox {
            tx,
            filter: StdMutex::new(RequestFilter::default()),
        };
        let req = |id| ConfirmRequest {
            request_id: id,
            requested_at_ms: 5,
            reason: "r".into(),
        };
        inbox.offer(req(7));
        inbox.offer(req(7)); // redelivered after a reconnect: not repeated
        inbox.offer(req(8));
        inbox.offer(req(9)); // channel full (2): dropped, the server redelivers later
        assert_eq!(rx.try_recv().expect("7").request_id, 7);
        assert_eq!(rx.try_recv().expect("8").request_id, 8);
        assert!(rx.try_recv().is_err());
        inbox.offer(req(9));
        assert_eq!(rx.try_recv().expect("9 on redelivery").request_id, 9);
    }
}
