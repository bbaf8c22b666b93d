//! [`Gate`]: the endpoint's [`Admission`] core behind a mutex, reading the clock and
//! counting its decisions in [`EndpointStats`], and [`Admitted`], the guard of one accepted
//! connection.
//!
//! Contract: the mutex is taken only at connection events (an Initial, the end of a
//! handshake, a login's outcome, a connection's end), never per frame, and never across an
//! await. An [`Admitted`] reports the end of its handshake once and the end of its
//! connection on drop, whatever ended it, so the core's counts (and the `handshakes_pending`
//! and `sources_tracked` gauges that mirror them) return to what they were.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sys::Clock;

use super::admission::{Admission, Decision, LoginFailed, Refusal};
use super::config::EndpointConfig;
use super::stats::EndpointStats;

/// The admission core of one endpoint, shared by the accept loop and the connections.
pub(super) struct Gate {
    core: Mutex<Admission>,
    stats: Arc<EndpointStats>,
    clock: Arc<dyn Clock>,
}

/// The accept loop's answer to one Initial.
pub(super) enum Admit {
    /// Start the handshake; the guard owns the connection's admission counts.
    Accept(Admitted),
    /// Send a QUIC Retry.
    Retry,
    /// Refuse the connection.
    Refuse(Refusal),
}

impl Gate {
    pub(super) fn new(
        cfg: &EndpointConfig,
        stats: Arc<EndpointStats>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(Admission::new(cfg)),
            stats,
            clock,
        })
    }

    fn now_ms(&self) -> u64 {
        self.clock.monotonic_us() / 1000
    }

    /// The core; a panic while it was held cannot leave it inconsistent (every method
    /// finishes its bookkeeping before anything that can panic), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Admission> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies the core's counts into the gauges that mirror them.
    fn mirror(&self, core: &Admission) {
        let s = &self.stats;
        s.handshakes_pending
            .store(core.handshakes_in_progress(), Ordering::Relaxed);
        s.sources_tracked
            .store(core.sources_tracked(), Ordering::Relaxed);
    }

    /// Decides about an Initial from `ip` and counts a refusal by its reason.
    pub(super) fn decide(self: &Arc<Self>, ip: IpAddr, validated: bool) -> Admit {
        let now_ms = self.now_ms();
        let decision = {
            let mut core = self.lock();
            let d = core.decide(now_ms, ip, validated);
            self.mirror(&core);
            d
        };
        let s = &self.stats;
        match decision {
            Decision::Accept => Admit::Accept(Admitted {
                gate: self.clone(),
                ip,
                handshaking: true,
            }),
            Decision::Retry => Admit::Retry,
            Decision::Refuse(reason) => {
                let counter = match reason {
                    Refusal::HandshakesMax => &s.refused_handshakes_max,
                    Refusal::SourceConnections => &s.refused_source_connections,
                    Refusal::SourceRate => &s.refused_source_rate,
                    Refusal::LoginBackoff => &s.refused_login_backoff,
                    Refusal::SourcesFull => &s.refused_sources_full,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Admit::Refuse(reason)
            }
        }
    }

    /// A HELLO from `ip` was refused UNAUTHENTICATED; counts a back-off it starts and a log
    /// line it suppresses.
    pub(super) fn login_failed(&self, ip: IpAddr) -> LoginFailed {
        let now_ms = self.now_ms();
        let failed = self.lock().login_failed(now_ms, ip);
        let s = &self.stats;
        if failed.backoff_ms.is_some() {
            s.login_backoffs.fetch_add(1, Ordering::Relaxed);
        }
        if failed.log.is_none() {
            s.auth_failure_logs_suppressed
                .fetch_add(1, Ordering::Relaxed);
        }
        failed
    }

    /// A HELLO from `ip` was accepted.
    pub(super) fn login_succeeded(&self, ip: IpAddr) {
        let now_ms = self.now_ms();
        self.lock().login_succeeded(now_ms, ip);
    }
}

/// One accepted connection's part of the admission counts: a handshake in progress until
/// [`Admitted::handshake_done`], a connection of its source until dropped.
pub(super) struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
    handshaking: bool,
}

impl Admitted {
    /// The source address the connection was admitted from.
    pub(super) fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The handshake is over: its unit of `handshakes_max` is free again.
    pub(super) fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            let now_ms = self.gate.now_ms();
            let mut core = self.gate.lock();
            core.handshake_done(now_ms, self.ip);
            self.gate.mirror(&core);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let now_ms = self.gate.now_ms();
        let mut core = self.gate.lock();
        core.closed(now_ms, self.ip, self.handshaking);
        self.gate.mirror(&core);
    }
}
