//! The one source of time.
//!
//! Contract: [`Clock::now_ms`] is wall time (Unix milliseconds): it may jump, and it is
//! what fixes, tokens and silence are judged against. [`Clock::monotonic_us`] never goes
//! back and is what intervals and deadlines are measured in. A thread that blocks waiting
//! for a deadline blocks at most [`Clock::wait_slice`] before reading the clock again, so
//! a test clock that is moved by hand is noticed promptly.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time. Implementations are cheap to call from any thread.
pub trait Clock: Send + Sync + 'static {
    /// Current wall time, Unix milliseconds.
    fn now_ms(&self) -> i64;

    /// Microseconds elapsed since an arbitrary origin fixed for the process; never
    /// decreases. The default reads the real monotonic clock.
    fn monotonic_us(&self) -> u64 {
        real_monotonic_us()
    }

    /// Longest a thread may block on a deadline measured with this clock before it reads
    /// the clock again. `None` (the default): block until the deadline itself.
    fn wait_slice(&self) -> Option<Duration> {
        None
    }

    /// How long to block now to reach `deadline_us` (a [`Clock::monotonic_us`] value),
    /// never more than [`Clock::wait_slice`]. Zero when the deadline has passed.
    fn wait_for(&self, deadline_us: u64) -> Duration {
        let left = Duration::from_micros(deadline_us.saturating_sub(self.monotonic_us()));
        match self.wait_slice() {
            Some(slice) => left.min(slice),
            None => left,
        }
    }
}

fn real_monotonic_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The machine's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Wall time set by hand; elapsed time is real. For tests that judge fixes and silence at
/// chosen moments while the storage threads keep their real intervals.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: AtomicI64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            wall_ms: AtomicI64::new(now_ms),
        })
    }
    /// Moves wall time forward by `ms` (backward when negative).
    pub fn advance_ms(&self, ms: i64) {
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
    }
    /// Sets wall time.
    pub fn set_ms(&self, ms: i64) {
        self.wall_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
}

/// Wall and elapsed time both set by hand (elapsed time moves with every
/// [`SimClock::advance_ms`]); threads waiting on it re-read it every millisecond. For tests
/// of timed behaviour (flush intervals, retries) that must not sleep for those intervals.
#[derive(Debug)]
pub struct SimClock {
    wall_ms: AtomicI64,
    mono_us: AtomicU64,
}

impl SimClock {
    /// A clock showing `now_ms`, elapsed time 0.
    pub fn new(now_ms: i64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            wall_ms: AtomicI64::new(now_ms),
            mono_us: AtomicU64::new(0),
        })
    }
    /// Moves both clocks forward by `ms` (≥ 0).
    pub fn advance_ms(&self, ms: u64) {
        self.wall_ms
            .fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::SeqCst);
        self.mono_us
            .fetch_add(ms.saturating_mul(1_000), Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
    fn monotonic_us(&self) -> u64 {
        self.mono_us.load(Ordering::SeqCst)
    }
    fn wait_slice(&self) -> Option<Duration> {
        Some(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020_and_monotonic_never_goes_back() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
        let a = SystemClock.monotonic_us();
        let b = SystemClock.monotonic_us();
        assert!(b >= a);
        assert_eq!(SystemClock.wait_slice(), None);
        assert_eq!(SystemClock.wait_for(0), Duration::ZERO);
    }

    #[test]
    fn manual_clock_moves_wall_time_only() {
        let c = ManualClock::new(1_000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set_ms(7);
        assert_eq!(c.now_ms(), 7);
    }

    #[test]
    fn sim_clock_moves_both_and_waits_in_slices() {
        let c = SimClock::new(10_000);
        assert_eq!(c.monotonic_us(), 0);
        assert_eq!(c.wait_for(5_000_000), Duration::from_millis(1));
        c.advance_ms(5_000);
        assert_eq!((c.now_ms(), c.monotonic_us()), (15_000, 5_000_000));
        assert_eq!(c.wait_for(5_000_000), Duration::ZERO);
    }
}
