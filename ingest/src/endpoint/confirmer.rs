//! [`Confirmer`]: raises and cancels confirm-location requests (`docs/PROTOCOL.md` §9)
//! from any thread, on the registry shared by every connection
//! ([`crate::proto::confirm::Registry`]), handing new requests to the device's connection
//! when it has one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fix::DeviceId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::proto::confirm::{ConfirmRequestError, Raised};
use crate::wire::ConfirmRequest;

/// How the registry reaches a connected device: its connection's request queue, and the
/// token that ends its session when a newer connection of the device authenticates.
#[derive(Clone)]
pub(super) struct ConnLink {
    /// The connection's confirm-request queue.
    pub(super) requests: mpsc::Sender<Arc<ConfirmRequest>>,
    /// Cancelled when another connection takes the device's session over.
    pub(super) takeover: CancellationToken,
}

/// What [`Confirmer::request_confirm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfirmDelivery {
    /// The device is connected: the `CONFIRM_REQUEST` was handed to its connection.
    /// It is delivered again after the next `WELCOME` if the device reconnects unanswered.
    Sent {
        /// The new request's id.
        request_id: u64,
    },
    /// The device is not connected (or its connection's queue is full): the request is
    /// delivered right after its next `WELCOME`.
    Queued {
        /// The new request's id.
        request_id: u64,
    },
    /// The device already has an outstanding request; nothing changed (one per device).
    AlreadyOutstanding {
        /// The outstanding request's id.
        request_id: u64,
    },
}

impl ConfirmDelivery {
    /// The id of the request the device is (or will be) asked to answer.
    pub fn request_id(self) -> u64 {
        match self {
            ConfirmDelivery::Sent { request_id }
            | ConfirmDelivery::Queued { request_id }
            | ConfirmDelivery::AlreadyOutstanding { request_id } => request_id,
        }
    }
}

/// An outstanding confirm-location request, as [`super::Endpoint::outstanding_confirm`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutstandingConfirm {
    /// The request's id.
    pub request_id: u64,
    /// Server time (Unix ms) when it was raised.
    pub requested_at_ms: i64,
    /// Why it was raised.
    pub reason: String,
}

/// Raises and cancels confirm-location requests; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Confirmer {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Confirmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmer").finish_non_exhaustive()
    }
}

impl Confirmer {
    /// Asks `device_id` to confirm its location. At most one request per device is
    /// outstanding: if one is, nothing changes and its id is returned. A new request is
    /// handed at once to the device's connection if it has one ([`ConfirmDelivery::Sent`]),
    /// otherwise kept for delivery right after its next `WELCOME`
    /// ([`ConfirmDelivery::Queued`]). The request stays outstanding, and is delivered again
    /// after every reconnect, until the device answers it or [`Confirmer::cancel_confirm`]
    /// drops it. Lock-free; never blocks.
    ///
    /// # Errors
    /// [`ConfirmRequestError`]: too many outstanding, reason too long, shutting down.
    pub fn request_confirm(
        &self,
        device_id: DeviceId,
        reason: &str,
    ) -> Result<ConfirmDelivery, ConfirmRequestError> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(ConfirmRequestError::ShuttingDown);
        }
        let raised = shared
            .registry
            .request(device_id, reason, shared.clock.now_ms())?;
        Ok(self.deliver(raised))
    }

    /// Makes a request raised before a restart (its id, time and reason from the silence
    /// snapshot) outstanding again and delivers it as [`Confirmer::request_confirm`] does, so
    /// the device's answer to that id is matched. Nothing changes if the device already has a
    /// request.
    ///
    /// # Errors
    /// As [`Confirmer::request_confirm`].
    pub fn restore_confirm(
        &self,
        device_id: DeviceId,
        request: OutstandingConfirm,
    ) -> Result<ConfirmDelivery, ConfirmRequestError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(ConfirmRequestError::ShuttingDown);
        }
        let raised = self.shared.registry.restore(
            device_id,
            ConfirmRequest {
                request_id: request.request_id,
                requested_at_ms: request.requested_at_ms,
                reason: request.reason,
            },
        )?;
        Ok(self.deliver(raised))
    }

    /// Every outstanding request with its device (for the silence snapshot).
    pub fn outstanding_confirms(&self) -> Vec<(DeviceId, OutstandingConfirm)> {
        self.shared
            .registry
            .outstanding_all()
            .into_iter()
            .map(|(d, r)| {
                (
                    d,
                    OutstandingConfirm {
                        request_id: r.request_id,
                        requested_at_ms: r.requested_at_ms,
                        reason: r.reason.clone(),
                    },
                )
            })
            .collect()
    }

    /// Hands a newly raised request to the device's connection, if it has one.
    fn deliver(&self, raised: Raised<ConnLink>) -> ConfirmDelivery {
        let stats = &self.shared.stats;
        match raised {
            Raised::AlreadyOutstanding { request_id } => {
                ConfirmDelivery::AlreadyOutstanding { request_id }
            }
            Raised::New {
                request,
                link: Some(link),
            } if link.requests.try_send(request.clone()).is_ok() => {
                stats
                    .confirm_requests_delivered
                    .fetch_add(1, Ordering::Relaxed);
                ConfirmDelivery::Sent {
                    request_id: request.request_id,
                }
            }
            Raised::New { request, .. } => {
                stats
                    .confirm_requests_queued
                    .fetch_add(1, Ordering::Relaxed);
                ConfirmDelivery::Queued {
                    request_id: request.request_id,
                }
            }
        }
    }

    /// Drops the device's outstanding request (for example when it expired or became
    /// exempt); a later answer to it is refused with `UNSOLICITED_CONFIRM`. Returns the
    /// dropped request's id.
    pub fn cancel_confirm(&self, device_id: DeviceId) -> Option<u64> {
        self.shared.registry.cancel(device_id)
    }
}
