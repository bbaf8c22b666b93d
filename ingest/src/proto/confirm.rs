//! The confirm-request registry (`docs/PROTOCOL.md` §9), shared by every connection.
//!
//! # Contract
//! * At most one outstanding request per device and at most `pending_max` in total; a
//!   request stays outstanding until answered ([`Confirms::answer`]) or cancelled.
//! * Lock-free: every change of a device's entry is one atomic `compute` on a papaya map,
//!   so a request raised while the device connects is handed over exactly once: either
//!   [`Registry::request`] sees the connection's link, or [`Registry::attach`] sees the
//!   request.
//! * The map holds only connected devices and outstanding requests (an entry with neither
//!   is removed): at most `connections_max + pending_max` entries.
//! * Generic over the link `L` a connection is reached through (the endpoint uses a
//!   channel sender); no IO, no clock: times and ids come in as arguments.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use fix::DeviceId;

use super::server::Confirms;
use crate::wire::{self, ConfirmRequest};

/// Why a confirm request could not be raised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmRequestError {
    /// `confirm_pending_max` requests are already outstanding.
    #[error("{pending} confirm requests outstanding, confirm_pending_max is {pending_max}")]
    PendingFull {
        /// Outstanding now.
        pending: usize,
        /// The limit.
        pending_max: usize,
    },
    /// The reason is longer than [`wire::CONFIRM_REASON_BYTES_MAX`].
    #[error("reason is {len} bytes, at most {len_max}")]
    ReasonTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        len_max: usize,
    },
    /// The endpoint is shutting down.
    #[error("the endpoint is shutting down")]
    ShuttingDown,
}

/// What [`Registry::request`] did.
#[derive(Debug)]
pub enum Raised<L> {
    /// The request is now outstanding; hand it to `link` if the device is connected.
    New {
        /// The new request.
        request: Arc<ConfirmRequest>,
        /// The device's connection, if it has one.
        link: Option<L>,
    },
    /// The device already has an outstanding request; nothing changed.
    AlreadyOutstanding {
        /// Its id.
        request_id: u64,
    },
}

/// Registry entry of one device: its live connection (with the connection's id) and its
/// outstanding request.
#[derive(Clone)]
struct Slot<L> {
    conn: Option<(u64, L)>,
    request: Option<Arc<ConfirmRequest>>,
}

/// Lock-free map of connected devices and outstanding confirm requests.
pub struct Registry<L> {
    slots: papaya::HashMap<DeviceId, Slot<L>>,
    /// Outstanding requests (reserved before insertion, released on answer/cancel).
    pending: AtomicUsize,
    pending_max: usize,
    /// Source of request ids; never 0.
    next_request_id: AtomicU64,
}

impl<L> std::fmt::Debug for Registry<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .field("pending_max", &self.pending_max)
            .finish_non_exhaustive()
    }
}

impl<L: Clone + Send + Sync + 'static> Registry<L> {
    /// An empty registry holding at most `pending_max` requests, numbering them from
    /// `first_request_id` (0 is skipped). Seed the ids from the clock so ids from before a
    /// restart are very unlikely to match new ones.
    pub fn new(pending_max: usize, first_request_id: u64) -> Self {
        Self {
            slots: papaya::HashMap::new(),
            pending: AtomicUsize::new(0),
            pending_max,
            next_request_id: AtomicU64::new(first_request_id.max(1)),
        }
    }

    /// Requests outstanding across all devices.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// The device's outstanding request, if any.
    pub fn outstanding(&self, device_id: DeviceId) -> Option<Arc<ConfirmRequest>> {
        self.slots
            .pin()
            .get(&device_id)
            .and_then(|s| s.request.clone())
    }

    /// Raises a request for `device_id` at server time `now_ms` unless it has one.
    ///
    /// # Errors
    /// [`ConfirmRequestError::ReasonTooLong`], [`ConfirmRequestError::PendingFull`].
    pub fn request(
        &self,
        device_id: DeviceId,
        reason: &str,
        now_ms: i64,
    ) -> Result<Raised<L>, ConfirmRequestError> {
        if reason.len() > wire::CONFIRM_REASON_BYTES_MAX {
            return Err(ConfirmRequestError::ReasonTooLong {
                len: reason.len(),
                len_max: wire::CONFIRM_REASON_BYTES_MAX,
            });
        }
        if let Some(existing) = self.outstanding(device_id) {
            return Ok(Raised::AlreadyOutstanding {
                request_id: existing.request_id,
            });
        }
        self.reserve()?;
        let request = Arc::new(ConfirmRequest {
            request_id: self.next_id(),
            requested_at_ms: now_ms,
            reason: reason.to_string(),
        });
        let raised = self.raise(device_id, request);
        if matches!(raised, Raised::AlreadyOutstanding { .. }) {
            self.release();
        }
        Ok(raised)
    }

    /// Makes a request raised before a restart outstanding again, with its id, time and
    /// reason (persisted by the silence snapshot), so the device's answer to it still
    /// matches. Like [`Registry::request`] otherwise: nothing changes if the device already
    /// has a request; new ids are kept above every restored one.
    ///
    /// # Errors
    /// As [`Registry::request`].
    pub fn restore(
        &self,
        device_id: DeviceId,
        request: ConfirmRequest,
    ) -> Result<Raised<L>, ConfirmRequestError> {
        if request.reason.len() > wire::CONFIRM_REASON_BYTES_MAX {
            return Err(ConfirmRequestError::ReasonTooLong {
                len: request.reason.len(),
                len_max: wire::CONFIRM_REASON_BYTES_MAX,
            });
        }
        self.next_request_id
            .fetch_max(request.request_id.saturating_add(1), Ordering::Relaxed);
        if let Some(existing) = self.outstanding(device_id) {
            return Ok(Raised::AlreadyOutstanding {
                request_id: existing.request_id,
            });
        }
        self.reserve()?;
        let raised = self.raise(device_id, Arc::new(request));
        if matches!(raised, Raised::AlreadyOutstanding { .. }) {
            self.release();
        }
        Ok(raised)
    }

    /// Every outstanding request with its device (for snapshots), in no particular order.
    /// A request raised or answered while this runs may be missed or included.
    pub fn outstanding_all(&self) -> Vec<(DeviceId, Arc<ConfirmRequest>)> {
        self.slots
            .pin()
            .iter()
            .filter_map(|(d, s)| s.request.clone().map(|r| (*d, r)))
            .collect()
    }

    /// Drops the device's outstanding request (expired, exempt); a later answer to it is
    /// refused. Returns the dropped request's id.
    pub fn cancel(&self, device_id: DeviceId) -> Option<u64> {
        self.take(device_id, None)
    }

    /// Records the device's new connection `conn_id` (replacing an older one) and returns
    /// the outstanding request to deliver on it.
    pub fn attach(
        &self,
        device_id: DeviceId,
        conn_id: u64,
        link: L,
    ) -> Option<Arc<ConfirmRequest>> {
        self.attach_replacing(device_id, conn_id, link).0
    }

    /// [`Registry::attach`], also returning the link of the older connection it replaced
    /// (the caller ends that connection's session: one session per device).
    pub fn attach_replacing(
        &self,
        device_id: DeviceId,
        conn_id: u64,
        link: L,
    ) -> (Option<Arc<ConfirmRequest>>, Option<L>) {
        let map = self.slots.pin();
        let result = map.compute(device_id, |entry| {
            papaya::Operation::<Slot<L>, ()>::Insert(Slot {
                conn: Some((conn_id, link.clone())),
                request: entry.and_then(|(_, s)| s.request.clone()),
            })
        });
        match result {
            papaya::Compute::Inserted(_, v) => (v.request.clone(), None),
            papaya::Compute::Updated {
                old: (_, old),
                new: (_, v),
            } => (
                v.request.clone(),
                old.conn
                    .as_ref()
                    .filter(|(id, _)| *id != conn_id)
                    .map(|(_, l)| l.clone()),
            ),
            papaya::Compute::Removed(..) | papaya::Compute::Aborted(()) => (None, None),
        }
    }

    /// Forgets the connection `conn_id` of the device (a newer connection is kept).
    pub fn detach(&self, device_id: DeviceId, conn_id: u64) {
        let map = self.slots.pin();
        map.compute(device_id, |entry| match entry {
            Some((_, slot)) if slot.conn.as_ref().is_some_and(|(id, _)| *id == conn_id) => {
                match &slot.request {
                    None => papaya::Operation::Remove,
                    Some(r) => papaya::Operation::Insert(Slot {
                        conn: None,
                        request: Some(r.clone()),
                    }),
                }
            }
            _ => papaya::Operation::Abort(()),
        });
    }

    fn next_id(&self) -> u64 {
        loop {
            let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Takes one of `pending_max` request slots.
    fn reserve(&self) -> Result<(), ConfirmRequestError> {
        let prev = self.pending.fetch_add(1, Ordering::AcqRel);
        if prev >= self.pending_max {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ConfirmRequestError::PendingFull {
                pending: prev,
                pending_max: self.pending_max,
            });
        }
        Ok(())
    }

    fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Makes `request` the device's outstanding request unless it has one.
    fn raise(&self, device_id: DeviceId, request: Arc<ConfirmRequest>) -> Raised<L> {
        let map = self.slots.pin();
        let result = map.compute(device_id, |entry| match entry {
            Some((
                _,
                Slot {
                    request: Some(r), ..
                },
            )) => papaya::Operation::Abort(r.request_id),
            other => papaya::Operation::Insert(Slot {
                conn: other.and_then(|(_, s)| s.conn.clone()),
                request: Some(request.clone()),
            }),
        });
        match result {
            papaya::Compute::Aborted(request_id) => Raised::AlreadyOutstanding { request_id },
            papaya::Compute::Inserted(_, v) | papaya::Compute::Updated { new: (_, v), .. } => {
                Raised::New {
                    request,
                    link: v.conn.as_ref().map(|(_, l)| l.clone()),
                }
            }
            // The closure never removes; treat it as "not connected".
            papaya::Compute::Removed(..) => Raised::New {
                request,
                link: None,
            },
        }
    }

    /// Removes the outstanding request (only if its id is `request_id`, when given),
    /// releases its slot and returns its id.
    fn take(&self, device_id: DeviceId, request_id: Option<u64>) -> Option<u64> {
        let map = self.slots.pin();
        let result = map.compute(device_id, |entry| match entry {
            Some((_, slot))
                if slot
                    .request
                    .as_ref()
                    .is_some_and(|r| request_id.is_none_or(|id| id == r.request_id)) =>
            {
                match &slot.conn {
                    None => papaya::Operation::Remove,
                    Some(c) => papaya::Operation::Insert(Slot {
                        conn: Some(c.clone()),
                        request: None,
                    }),
                }
            }
            _ => papaya::Operation::Abort(()),
        });
        let taken = match result {
            papaya::Compute::Removed(_, old) | papaya::Compute::Updated { old: (_, old), .. } => {
                old.request.as_ref().map(|r| r.request_id)
            }
            papaya::Compute::Inserted(..) | papaya::Compute::Aborted(()) => None,
        };
        if taken.is_some() {
            self.release();
        }
        taken
    }
}

impl<L: Clone + Send + Sync + 'static> Confirms for Registry<L> {
    fn outstanding_request_id(&self, device_id: DeviceId) -> Option<u64> {
        self.outstanding(device_id).map(|r| r.request_id)
    }

    fn answer(&self, device_id: DeviceId, request_id: u64) -> bool {
        self.take(device_id, Some(request_id)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: u64) -> DeviceId {
        DeviceId::try_from(id).expect("valid id")
    }

    #[test]
    fn one_request_per_device_bounded_in_total() {
        let r = Registry::<u8>::new(2, 0);
        let Ok(Raised::New {
            request,
            link: None,
        }) = r.request(dev(1), "quiet", 5)
        else {
            panic!("raised while not connected");
        };
        assert_eq!(
            (request.request_id, request.requested_at_ms),
            (1, 5),
            "ids skip 0"
        );
        assert!(matches!(
            r.request(dev(1), "again", 6),
            Ok(Raised::AlreadyOutstanding { request_id: 1 })
        ));
        assert!(r.request(dev(2), "x", 6).is_ok());
        assert_eq!(
            r.request(dev(3), "x", 6).err(),
            Some(ConfirmRequestError::PendingFull {
                pending: 2,
                pending_max: 2
            })
        );
        assert_eq!(r.cancel(dev(2)), Some(2));
        assert_eq!(r.cancel(dev(2)), None);
        assert_eq!(r.pending(), 1);
        let long = "r".repeat(wire::CONFIRM_REASON_BYTES_MAX + 1);
        assert_eq!(
            r.request(dev(3), &long, 6).err(),
            Some(ConfirmRequestError::ReasonTooLong {
                len: 257,
                len_max: 256
            })
        );
    }

    #[test]
    fn attach_hands_over_the_outstanding_request_and_raise_sees_the_link() {
        let r = Registry::<u8>::new(10, 7);
        let Ok(Raised::New { request, .. }) = r.request(dev(1), "queued", 0) else {
            panic!("raised");
        };
        assert_eq!(
            r.attach(dev(1), 100, 1).map(|q| q.request_id),
            Some(request.request_id)
        );
        assert!(!r.answer(dev(1), request.request_id + 1), "wrong id");
        assert!(r.answer(dev(1), request.request_id));
        assert!(!r.answer(dev(1), request.request_id), "answered once");
        assert_eq!(r.pending(), 0);
        // Connected: a new request names the link.
        assert!(matches!(
            r.request(dev(1), "now", 0),
            Ok(Raised::New { link: Some(1), .. })
        ));
        // A newer connection replaces the older; detaching the older keeps it.
        assert!(r.attach(dev(1), 101, 2).is_some());
        r.detach(dev(1), 100);
        assert!(matches!(
            r.request(dev(2), "other", 0),
            Ok(Raised::New { link: None, .. })
        ));
        r.detach(dev(1), 101);
        assert_eq!(r.outstanding_request_id(dev(1)), Some(8));
        assert_eq!(r.cancel(dev(1)), Some(8));
        assert!(
            r.slots.pin().get(&dev(1)).is_none(),
            "empty entries are removed"
        );
    }

    #[test]
    fn a_restored_request_keeps_its_id_and_new_ids_stay_above_it() {
        let r = Registry::<u8>::new(10, 1);
        let old = ConfirmRequest {
            request_id: 500,
            requested_at_ms: 7,
            reason: "before the restart".into(),
        };
        assert!(matches!(
            r.restore(dev(3), old.clone()),
            Ok(Raised::New { link: None, .. })
        ));
        assert_eq!(r.pending(), 1);
        assert_eq!(r.outstanding(dev(3)).as_deref(), Some(&old));
        assert_eq!(r.outstanding_all().len(), 1);
        let Ok(Raised::New { request, .. }) = r.request(dev(4), "new", 8) else {
            panic!("raised");
        };
        assert_eq!(request.request_id, 501, "above the restored id");
        assert!(matches!(
            r.restore(dev(3), old),
            Ok(Raised::AlreadyOutstanding { request_id: 500 })
        ));
        assert_eq!(r.pending(), 2);
        assert!(
            r.answer(dev(3), 500),
            "the answer to the restored id matches"
        );
    }

    #[test]
    fn attach_replacing_names_the_older_connection_of_the_same_device() {
        let r = Registry::<u8>::new(10, 1);
        assert_eq!(
            r.attach_replacing(dev(4), 1, 10).1,
            None,
            "first connection"
        );
        assert_eq!(r.attach_replacing(dev(4), 2, 20).1, Some(10));
        r.detach(dev(4), 1);
        assert_eq!(
            r.attach_replacing(dev(4), 3, 30).1,
            Some(20),
            "the replaced connection leaving later changes nothing"
        );
        assert_eq!(
            r.attach_replacing(dev(5), 4, 40).1,
            None,
            "devices are separate"
        );
        r.detach(dev(4), 3);
        assert_eq!(
            r.attach_replacing(dev(4), 5, 50).1,
            None,
            "a connection that left is not replaced"
        );
    }
}
