//! Blocking waits measured on a [`Clock`].
//!
//! Contract: the storage threads (and the silence scanner and webhook, which use these
//! helpers too) never read `Instant`/`SystemTime` themselves: every deadline is a
//! [`Clock::monotonic_us`] value and every blocking wait lasts at most [`Clock::wait_for`]
//! before the clock is read again, so a simulated clock moved by a test is noticed within
//! one wait slice and tests never sleep for a configured interval.

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use sys::Clock;

/// What [`recv_before`] got.
#[derive(Debug)]
pub enum Recv<T> {
    /// A message (one already queued is returned even when the deadline has passed).
    Msg(T),
    /// The deadline passed with nothing queued.
    Deadline,
    /// Every sender is gone and nothing is queued.
    Disconnected,
}

/// Receives the next message before `deadline_us` (a [`Clock::monotonic_us`] value).
pub fn recv_before<T>(rx: &Receiver<T>, clock: &dyn Clock, deadline_us: u64) -> Recv<T> {
    loop {
        match rx.try_recv() {
            Ok(m) => return Recv::Msg(m),
            Err(TryRecvError::Disconnected) => return Recv::Disconnected,
            Err(TryRecvError::Empty) => {}
        }
        let wait = clock.wait_for(deadline_us);
        if wait.is_zero() {
            return Recv::Deadline;
        }
        match rx.recv_timeout(wait) {
            Ok(m) => return Recv::Msg(m),
            Err(RecvTimeoutError::Disconnected) => return Recv::Disconnected,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Blocks until `clock` has advanced by `ms` milliseconds.
pub fn sleep_ms(clock: &dyn Clock, ms: u64) {
    let deadline_us = clock
        .monotonic_us()
        .saturating_add(ms.saturating_mul(1_000));
    loop {
        let wait = clock.wait_for(deadline_us);
        if wait.is_zero() {
            return;
        }
        std::thread::sleep(wait);
    }
}

/// The [`Clock::monotonic_us`] value `ms` milliseconds from now.
pub fn deadline_after_ms(clock: &dyn Clock, ms: u64) -> u64 {
    clock
        .monotonic_us()
        .saturating_add(ms.saturating_mul(1_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use sys::SimClock;

    #[test]
    fn queued_messages_come_first_then_the_deadline() {
        let clock = SimClock::new(0);
        let (tx, rx) = crossbeam_channel::bounded(4);
        tx.send(1).expect("send");
        assert!(matches!(recv_before(&rx, &*clock, 0), Recv::Msg(1)));
        assert!(matches!(recv_before(&rx, &*clock, 0), Recv::Deadline));
        drop(tx);
        assert!(matches!(
            recv_before(&rx, &*clock, u64::MAX),
            Recv::Disconnected
        ));
    }

    #[test]
    fn a_moved_clock_ends_the_wait() {
        let clock = SimClock::new(0);
        let (_tx, rx) = crossbeam_channel::bounded::<u8>(1);
        let mover = {
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(5));
                clock.advance_ms(60_000);
            })
        };
        // A one-minute deadline on the simulated clock ends once the test moves it.
        let deadline = deadline_after_ms(&*clock, 60_000);
        assert!(matches!(
            recv_before(&rx, &*clock, deadline),
            Recv::Deadline
        ));
        mover.join().expect("mover");
        sleep_ms(&*clock, 0);
    }
}
