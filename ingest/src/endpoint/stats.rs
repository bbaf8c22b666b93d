//! [`EndpointStats`], the endpoint's live counters, and [`ConnectionSlot`], the guard that
//! owns one of the `connections_max` connection slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Live counters of the endpoint (read by metrics and tests).
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Connections open right now.
    pub connections_open: AtomicUsize,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused because `connections_max` was reached.
    pub connections_refused: AtomicU64,
    /// Connections that failed authentication.
    pub auth_failures: AtomicU64,
    /// Batches acked `OK`.
    pub batches_ok: AtomicU64,
    /// Batches acked `DUPLICATE`.
    pub batches_duplicate: AtomicU64,
    /// Batches refused (any other status).
    pub batches_rejected: AtomicU64,
    /// Fixes in batches acked `OK`.
    pub fixes_ok: AtomicU64,
    /// Confirm requests handed to a connected device's connection (first deliveries and
    /// redeliveries after `WELCOME`).
    pub confirm_requests_delivered: AtomicU64,
    /// Confirm requests raised while the device was not connected.
    pub confirm_requests_queued: AtomicU64,
    /// Verified answers recorded (each reached [`super::Activity::on_confirm`]).
    pub confirms_recorded: AtomicU64,
    /// `CONFIRM` frames answered with a rejection.
    pub confirms_rejected: AtomicU64,
}

/// One of the `connections_max` connection slots, counted in
/// [`EndpointStats::connections_open`]; dropping it returns the slot, whatever ended the
/// connection.
#[derive(Debug)]
pub(super) struct ConnectionSlot {
    stats: Arc<EndpointStats>,
}

impl ConnectionSlot {
    /// Takes a slot, or `None` when `connections_max` are open.
    pub(super) fn try_acquire(stats: &Arc<EndpointStats>, connections_max: usize) -> Option<Self> {
        let open = stats.connections_open.fetch_add(1, Ordering::AcqRel);
        if open >= connections_max {
            stats.connections_open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            stats: stats.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned_on_drop() {
        let stats = Arc::new(EndpointStats::default());
        let a = ConnectionSlot::try_acquire(&stats, 2).expect("first");
        let b = ConnectionSlot::try_acquire(&stats, 2).expect("second");
        assert!(
            ConnectionSlot::try_acquire(&stats, 2).is_none(),
            "at connections_max"
        );
        assert_eq!(stats.connections_open.load(Ordering::Acquire), 2);
        drop(a);
        let c = ConnectionSlot::try_acquire(&stats, 2).expect("returned by drop");
        drop((b, c));
        assert_eq!(stats.connections_open.load(Ordering::Acquire), 0);
    }
}
