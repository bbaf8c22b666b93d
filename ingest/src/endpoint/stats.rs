//! [`EndpointStats`], the endpoint's live counters and gauges, and the guards that own a
//! part of a gauge: [`ConnectionSlot`] (one unit of a gauge: a `connections_max` slot, an
//! open session, the latter counted, not bounded) and [`Share`] (a connection's
//! contribution to a sum such as the bytes buffered). Dropping a guard returns what it
//! holds, whatever ended the connection, so a gauge cannot leak. The handshakes in progress
//! and the sources tracked are the admission core's counts, mirrored here by the gate's
//! guard (`gate.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Live counters (monotonic, `u64`) and gauges (current values, `usize`) of the endpoint,
/// read by metrics and tests. Every gauge returns to 0 when no connection is open.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Gauge: connections open right now (handshaking, awaiting HELLO, or authenticated).
    pub connections_open: AtomicUsize,
    /// Gauge: QUIC/TLS handshakes in progress (at most `handshakes_max`).
    pub handshakes_pending: AtomicUsize,
    /// Gauge: sources (IPv4 addresses, IPv6 /64s) whose admission state is kept (at most
    /// `sources_tracked_max`; sources stay tracked after their connections close).
    pub sources_tracked: AtomicUsize,
    /// Gauge: authenticated sessions (connections past WELCOME).
    pub sessions_open: AtomicUsize,
    /// Gauge: batches handed to the sink and not yet answered, over all connections.
    pub inflight_batches: AtomicUsize,
    /// Gauge: receive-buffer memory held by all sessions, in bytes.
    pub buffered_bytes: AtomicUsize,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused because `connections_max` was reached.
    pub connections_refused: AtomicU64,
    /// Connections refused because `handshakes_max` handshakes were in progress.
    pub refused_handshakes_max: AtomicU64,
    /// Connections refused because their source had `connections_per_source_max` open.
    pub refused_source_connections: AtomicU64,
    /// Connections refused because their source was over `handshakes_per_source_per_s`.
    pub refused_source_rate: AtomicU64,
    /// Connections refused because their source was in login back-off.
    pub refused_login_backoff: AtomicU64,
    /// Connections refused because `sources_tracked_max` sources all had connections open.
    pub refused_sources_full: AtomicU64,
    /// QUIC Retry packets sent (address validation).
    pub retries_sent: AtomicU64,
    /// Login back-offs started (after `login_failures_before_backoff` failed logins).
    pub login_backoffs: AtomicU64,
    /// Failed logins not logged (at most one line per `login_failure_log_interval_ms`).
    pub auth_failure_logs_suppressed: AtomicU64,
    /// Handshakes that did not complete within `handshake_timeout_ms`.
    pub handshakes_timed_out: AtomicU64,
    /// Sessions closed because the device sent no frame for `idle_timeout_ms`.
    pub sessions_idle_closed: AtomicU64,
    /// Sessions ended with SESSION_REPLACED because a newer connection of the same device
    /// authenticated.
    pub sessions_replaced: AtomicU64,
    /// Connections that failed authentication (HELLO refused, or the token expired or was
    /// revoked during the session).
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

/// Picks one gauge of [`EndpointStats`].
pub(super) type Gauge = fn(&EndpointStats) -> &AtomicUsize;

/// One unit of a bounded gauge (a connection slot, a handshake in progress); dropping it
/// gives the unit back.
#[derive(Debug)]
pub(super) struct ConnectionSlot {
    stats: Arc<EndpointStats>,
    gauge: Gauge,
}

impl ConnectionSlot {
    /// Takes a connection slot, or `None` when `connections_max` are open.
    pub(super) fn try_acquire(stats: &Arc<EndpointStats>, connections_max: usize) -> Option<Self> {
        Self::try_acquire_in(stats, |s| &s.connections_open, connections_max)
    }

    /// Takes one unit of `gauge`, or `None` when it is at `max`.
    pub(super) fn try_acquire_in(
        stats: &Arc<EndpointStats>,
        gauge: Gauge,
        max: usize,
    ) -> Option<Self> {
        let held = gauge(stats).fetch_add(1, Ordering::AcqRel);
        if held >= max {
            gauge(stats).fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            stats: stats.clone(),
            gauge,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's current contribution to a summed gauge; [`Share::set`] moves it,
/// dropping the share takes it out of the sum.
#[derive(Debug)]
pub(super) struct Share {
    stats: Arc<EndpointStats>,
    gauge: Gauge,
    held: usize,
}

impl Share {
    /// A share of `gauge` holding 0.
    pub(super) fn new(stats: &Arc<EndpointStats>, gauge: Gauge) -> Self {
        Self {
            stats: stats.clone(),
            gauge,
            held: 0,
        }
    }

    /// Makes this connection's contribution `n`.
    pub(super) fn set(&mut self, n: usize) {
        let gauge = (self.gauge)(&self.stats);
        if n > self.held {
            gauge.fetch_add(n - self.held, Ordering::AcqRel);
        } else if n < self.held {
            gauge.fetch_sub(self.held - n, Ordering::AcqRel);
        }
        self.held = n;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.set(0);
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

    #[test]
    fn shares_move_the_sum_and_leave_it_on_drop() {
        let stats = Arc::new(EndpointStats::default());
        let mut a = Share::new(&stats, |s| &s.buffered_bytes);
        let mut b = Share::new(&stats, |s| &s.buffered_bytes);
        a.set(100);
        b.set(50);
        a.set(30);
        assert_eq!(stats.buffered_bytes.load(Ordering::Acquire), 80);
        drop(a);
        assert_eq!(stats.buffered_bytes.load(Ordering::Acquire), 50);
        drop(b);
        assert_eq!(stats.buffered_bytes.load(Ordering::Acquire), 0);
    }
}
