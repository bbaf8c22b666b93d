//! [`Admission`]: the pure admission core. For each incoming QUIC connection it decides
//! [`Decision::Accept`], [`Decision::Retry`] (address validation) or [`Decision::Refuse`],
//! and it keeps the per-source state (open connections, a handshake token bucket, failed
//! logins and their back-off) that the decisions need.
//!
//! # Contract
//! * Pure: no tokio, no quinn, no clock, no IO. Every entry point takes `now_ms` (a
//!   monotonic clock in ms, the caller's) and the source [`IpAddr`]; the same calls give the
//!   same decisions.
//! * Every [`Decision::Accept`] counts one handshake in progress and one connection of its
//!   source; the caller reports the end of the handshake ([`Admission::handshake_done`]) and
//!   of the connection ([`Admission::closed`]) exactly once each (the endpoint ties both to a
//!   guard's drop).
//! * The rules, in order, each an `[endpoint]` key of
//!   [`EndpointConfig`](super::EndpointConfig):
//!   1. a source in login back-off is refused ([`Refusal::LoginBackoff`]);
//!   2. an address not validated yet is sent a Retry once `retry_above_handshakes`
//!      handshakes are in progress (0: always);
//!   3. at `handshakes_max` handshakes in progress, refused ([`Refusal::HandshakesMax`]);
//!   4. at `connections_per_source_max` open connections of the source, refused
//!      ([`Refusal::SourceConnections`]);
//!   5. without a token in the source's bucket (`handshakes_per_source_per_s`, burst
//!      `handshakes_per_source_burst`, one token per accepted handshake), refused
//!      ([`Refusal::SourceRate`]);
//!   6. a new source when `sources_tracked_max` sources are tracked and every one of them
//!      has a connection open, refused ([`Refusal::SourcesFull`]).
//!
//!   A refusal is only ever sent to a validated address: an Initial from an address not
//!   validated that would be refused gets a Retry instead (stateless, smaller than the
//!   Initial, nothing is recorded), so a spoofed source costs one Retry and no state, and a
//!   real one comes back validated and learns its refusal.
//! * Failed logins ([`Admission::login_failed`], a HELLO refused UNAUTHENTICATED): after
//!   `login_failures_before_backoff` failures the source is refused for
//!   `login_backoff_initial_ms`, doubling at each further round up to
//!   `login_backoff_max_ms`. A successful login from the source clears its failure count
//!   and halves the next back-off (one level down); `login_failures_forget_ms` after its
//!   last failure a source starts over. Failed logins are logged at most once per
//!   `login_failure_log_interval_ms`, with the count suppressed since the last line
//!   ([`LoginFailed::log`]).
//! * Sources are IPv4 addresses and IPv6 /64 prefixes (one subscriber's allocation; an
//!   IPv4-mapped IPv6 address is its IPv4 address), see [`Source`].
//! * Memory is bounded: at most `sources_tracked_max` sources (about 150 bytes each). A
//!   source with a connection open is never evicted; when the table is full, a new source
//!   evicts the source that has been without a connection for longest (touched least
//!   recently: every decision about a source touches it). Evicting forgets the source's
//!   bucket and back-off, so a flood of more new, validated sources than
//!   `sources_tracked_max` within one back-off can shorten an attacker's back-off; the
//!   handshake budget and Retry still bound what it can do. Every operation is O(log n).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::config::EndpointConfig;

/// The unit per-source limits apply to: an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 address (also an IPv4-mapped IPv6 address).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// What to do with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Start the handshake (counted until [`Admission::handshake_done`] /
    /// [`Admission::closed`]).
    Accept,
    /// Send a QUIC Retry: the client must prove its address first.
    Retry,
    /// Refuse (QUIC `CONNECTION_REFUSED`), for this reason.
    Refuse(Refusal),
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `handshakes_max` handshakes are in progress.
    HandshakesMax,
    /// The source has `connections_per_source_max` connections open.
    SourceConnections,
    /// The source started more handshakes than `handshakes_per_source_per_s` allows.
    SourceRate,
    /// The source is in login back-off after failed logins.
    LoginBackoff,
    /// `sources_tracked_max` sources are tracked, each with a connection open.
    SourcesFull,
}

/// What [`Admission::login_failed`] asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginFailed {
    /// `Some(n)`: write a log line for this failure, saying `n` more were suppressed since
    /// the previous line. `None`: suppressed (count it, log nothing).
    pub log: Option<u64>,
    /// `Some(ms)`: this failure started a back-off of the source for `ms`.
    pub backoff_ms: Option<u64>,
}

/// One tracked source.
#[derive(Debug, Clone)]
struct Entry {
    /// Connections open (handshaking or established).
    conns: usize,
    /// Handshake tokens, in thousandths.
    tokens_milli: u64,
    /// When `tokens_milli` was last refilled.
    refilled_ms: u64,
    /// Failed logins since the last back-off, success or forgetting.
    failures: u32,
    /// Back-offs served in a row: the next lasts `initial << level`.
    level: u32,
    /// The last failed login.
    last_failure_ms: u64,
    /// Refused until then (exclusive).
    blocked_until_ms: u64,
    /// The key in the idle index while `conns == 0`.
    idle_key: Option<(u64, u64)>,
}

/// The admission core of one endpoint (see the module doc).
#[derive(Debug)]
pub struct Admission {
    cfg: EndpointConfig,
    handshakes: usize,
    sources: HashMap<Source, Entry>,
    /// Sources without a connection, oldest touch first: `(touched_ms, serial, source)`.
    idle: BTreeSet<(u64, u64, Source)>,
    serial: u64,
    log: LogLimiter,
}

/// Highest back-off level (`initial << level` saturates well before it).
const LEVEL_MAX: u32 = 40;

impl Admission {
    /// An empty core enforcing `cfg`'s admission keys (validated by
    /// [`EndpointConfig::validate`]).
    pub fn new(cfg: &EndpointConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            handshakes: 0,
            sources: HashMap::new(),
            idle: BTreeSet::new(),
            serial: 0,
            log: LogLimiter::new(cfg.login_failure_log_interval_ms),
        }
    }

    /// Handshakes in progress (accepted, not yet done or closed).
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshakes
    }

    /// Sources tracked now (at most `sources_tracked_max`).
    pub fn sources_tracked(&self) -> usize {
        self.sources.len()
    }

    /// Decides about a connection from `ip`; `validated` is whether its address is proven
    /// (a Retry token, or quinn's `remote_address_validated`).
    pub fn decide(&mut self, now_ms: u64, ip: IpAddr, validated: bool) -> Decision {
        let source = Source::from(ip);
        let verdict = self.verdict(now_ms, source, validated);
        match verdict {
            Ok(()) if !validated && self.handshakes >= self.cfg.retry_above_handshakes => {
                Decision::Retry
            }
            Ok(()) => match self.admit(now_ms, source) {
                Ok(()) => Decision::Accept,
                Err(refusal) if validated => Decision::Refuse(refusal),
                Err(_) => Decision::Retry,
            },
            Err(refusal) if validated => Decision::Refuse(refusal),
            Err(_) => Decision::Retry,
        }
    }

    /// Rules 1 and 3–5 for `source`, touching its entry; records nothing else.
    fn verdict(&mut self, now_ms: u64, source: Source, validated: bool) -> Result<(), Refusal> {
        let rate = self.cfg.handshakes_per_source_per_s;
        let burst = self.cfg.handshakes_per_source_burst;
        let per_source_max = self.cfg.connections_per_source_max;
        if validated {
            self.touch(now_ms, source);
        }
        if let Some(e) = self.sources.get_mut(&source) {
            if now_ms < e.blocked_until_ms {
                return Err(Refusal::LoginBackoff);
            }
            refill(e, now_ms, rate, burst);
        }
        if self.handshakes >= self.cfg.handshakes_max {
            return Err(Refusal::HandshakesMax);
        }
        match self.sources.get(&source) {
            Some(e) if e.conns >= per_source_max => Err(Refusal::SourceConnections),
            Some(e) if e.tokens_milli < 1000 => Err(Refusal::SourceRate),
            _ => Ok(()),
        }
    }

    /// Rule 6 and the bookkeeping of an accepted connection.
    fn admit(&mut self, now_ms: u64, source: Source) -> Result<(), Refusal> {
        if !self.sources.contains_key(&source) {
            if self.sources.len() >= self.cfg.sources_tracked_max {
                let (_, _, oldest) = self.idle.pop_first().ok_or(Refusal::SourcesFull)?;
                self.sources.remove(&oldest);
            }
            let burst_milli = u64::from(self.cfg.handshakes_per_source_burst) * 1000;
            self.sources.insert(
                source,
                Entry {
                    conns: 0,
                    tokens_milli: burst_milli,
                    refilled_ms: now_ms,
                    failures: 0,
                    level: 0,
                    last_failure_ms: 0,
                    blocked_until_ms: 0,
                    idle_key: None,
                },
            );
        }
        let Some(e) = self.sources.get_mut(&source) else {
            return Err(Refusal::SourcesFull);
        };
        e.tokens_milli = e.tokens_milli.saturating_sub(1000);
        e.conns += 1;
        if let Some((t, s)) = e.idle_key.take() {
            self.idle.remove(&(t, s, source));
        }
        self.handshakes += 1;
        Ok(())
    }

    /// Moves an idle source to the young end of the idle index.
    fn touch(&mut self, now_ms: u64, source: Source) {
        let Some(e) = self.sources.get_mut(&source) else {
            return;
        };
        if let Some((t, s)) = e.idle_key {
            self.idle.remove(&(t, s, source));
            self.serial += 1;
            e.idle_key = Some((now_ms, self.serial));
            self.idle.insert((now_ms, self.serial, source));
        }
    }

    /// The handshake of a connection from `ip` accepted earlier is over (complete or not).
    pub fn handshake_done(&mut self, _now_ms: u64, _ip: IpAddr) {
        self.handshakes = self.handshakes.saturating_sub(1);
    }

    /// A connection from `ip` accepted earlier ended; `handshaking` when it ended before
    /// [`Admission::handshake_done`] was reported.
    pub fn closed(&mut self, now_ms: u64, ip: IpAddr, handshaking: bool) {
        if handshaking {
            self.handshakes = self.handshakes.saturating_sub(1);
        }
        let source = Source::from(ip);
        let Some(e) = self.sources.get_mut(&source) else {
            return;
        };
        e.conns = e.conns.saturating_sub(1);
        if e.conns == 0 && e.idle_key.is_none() {
            self.serial += 1;
            e.idle_key = Some((now_ms, self.serial));
            self.idle.insert((now_ms, self.serial, source));
        }
    }

    /// A connection from `ip` sent a HELLO whose token was refused.
    pub fn login_failed(&mut self, now_ms: u64, ip: IpAddr) -> LoginFailed {
        let log = self.log.allow(now_ms);
        let cfg = &self.cfg;
        let Some(e) = self.sources.get_mut(&Source::from(ip)) else {
            return LoginFailed {
                log,
                backoff_ms: None,
            };
        };
        if now_ms.saturating_sub(e.last_failure_ms) >= cfg.login_failures_forget_ms {
            e.failures = 0;
            e.level = 0;
        }
        e.failures += 1;
        e.last_failure_ms = now_ms;
        if e.failures < cfg.login_failures_before_backoff {
            return LoginFailed {
                log,
                backoff_ms: None,
            };
        }
        let backoff_ms = cfg
            .login_backoff_initial_ms
            .saturating_mul(1u64 << e.level)
            .min(cfg.login_backoff_max_ms);
        e.failures = 0;
        e.level = (e.level + 1).min(LEVEL_MAX);
        e.blocked_until_ms = now_ms.saturating_add(backoff_ms);
        LoginFailed {
            log,
            backoff_ms: Some(backoff_ms),
        }
    }

    /// A connection from `ip` authenticated: the source's failures are cleared and its
    /// back-off level decays by one.
    pub fn login_succeeded(&mut self, _now_ms: u64, ip: IpAddr) {
        if let Some(e) = self.sources.get_mut(&Source::from(ip)) {
            e.failures = 0;
            e.level = e.level.saturating_sub(1);
        }
    }
}

/// Adds the tokens earned since the last refill, up to the burst.
fn refill(e: &mut Entry, now_ms: u64, per_s: u32, burst: u32) {
    let elapsed_ms = now_ms.saturating_sub(e.refilled_ms);
    // tokens/s × ms = thousandths of a token.
    let earned = elapsed_ms.saturating_mul(u64::from(per_s));
    e.tokens_milli = e
        .tokens_milli
        .saturating_add(earned)
        .min(u64::from(burst) * 1000);
    e.refilled_ms = e.refilled_ms.max(now_ms);
}

/// At most one log line per interval; counts what it suppresses.
#[derive(Debug)]
struct LogLimiter {
    interval_ms: u64,
    last_ms: Option<u64>,
    suppressed: u64,
}

impl LogLimiter {
    fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last_ms: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    fn allow(&mut self, now_ms: u64) -> Option<u64> {
        match self.last_ms {
            Some(last) if now_ms.saturating_sub(last) < self.interval_ms => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests;
