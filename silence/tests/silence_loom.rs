//! Loom models of the silence table (`silence::SilenceTable`): every interleaving of two
//! threads on a table of 2–3 slots.
//!
//! Run (a separate target directory, because `--cfg loom` rebuilds every dependency):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p silence --test silence_loom
//! ```
//!
//! Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::Mutex;

use loom::sync::Arc;
use loom::thread;
use silence::{EventKind, Level, Policy, RecordError, ScanStats, SilenceEvent, SilenceTable};

// Every model runs its two actors on spawned threads and only joins on the main thread: loom
// 0.7 fails to explore interleavings when the main thread races a freshly spawned thread whose
// first operation is a load (tokio-rs/loom#392, #166). Each model also records which outcomes
// it saw and asserts that the interesting ones were all explored, so a silent loss of
// exploration fails the test instead of passing it.

fn policy() -> Policy {
    Policy::new(10, 20).expect("valid thresholds")
}

/// A scan at `now_s` by the only scanner, under [`policy`].
fn scan(table: &SilenceTable, now_s: u32, events: &mut Vec<SilenceEvent>) -> ScanStats {
    table.scan(now_s, &policy(), events).expect("only scanner")
}

/// A table for `devices_max` devices holding these (device, fix time) pairs.
fn table_with_fixes(devices_max: usize, fixes: &[(u64, u32)]) -> Arc<SilenceTable> {
    let table = Arc::new(SilenceTable::with_capacity(devices_max).expect("valid size"));
    for &(device_id, fix_s) in fixes {
        table.record_fix(device_id, fix_s).expect("room");
    }
    table
}

/// Runs `a` and `b` on the table on two spawned threads, and returns their results once both
/// are done (joined in that order).
fn race<A, B>(
    table: &Arc<SilenceTable>,
    a: impl FnOnce(&SilenceTable) -> A + Send + 'static,
    b: impl FnOnce(&SilenceTable) -> B + Send + 'static,
) -> (A, B)
where
    A: Send + 'static,
    B: Send + 'static,
{
    let (table_a, table_b) = (table.clone(), table.clone());
    let a = thread::spawn(move || a(&table_a));
    let b = thread::spawn(move || b(&table_b));
    (a.join().expect("thread"), b.join().expect("thread"))
}

/// One thread records a fix of `device_id` at `fix_s` while another scans at `now_s`.
/// Returns the racing scan's events and stats.
fn fix_racing_a_scan(
    table: &Arc<SilenceTable>,
    device_id: u64,
    fix_s: u32,
    now_s: u32,
) -> (Vec<SilenceEvent>, ScanStats) {
    let writer = move |t: &SilenceTable| {
        t.record_fix(device_id, fix_s)
            .expect("room or known device")
    };
    let scanner = move |t: &SilenceTable| {
        let mut events = Vec::new();
        let stats = scan(t, now_s, &mut events);
        (events, stats)
    };
    race(table, writer, scanner).1
}

/// Runs `model` under loom and returns the set of outcomes its iterations reported.
fn explore<T, F>(model: F) -> BTreeSet<T>
where
    T: Ord + Send + 'static,
    F: Fn() -> T + Send + Sync + 'static,
{
    let seen = std::sync::Arc::new(Mutex::new(BTreeSet::new()));
    let sink = seen.clone();
    loom::model(move || {
        let outcome = model();
        sink.lock().expect("not poisoned").insert(outcome);
    });
    let seen = std::mem::take(&mut *seen.lock().expect("not poisoned"));
    seen
}

/// Runs a model whose outcome is a yes or a no under loom, and asserts that both were
/// explored (`what` says which interleavings they stand for).
fn explore_both<F>(what: &str, model: F)
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    assert_eq!(explore(model), BTreeSet::from([false, true]), "{what}");
}

/// Two threads record the same new device at once: both succeed, one slot is taken, and both
/// times are kept.
#[test]
fn concurrent_claim_of_one_device_takes_one_slot() {
    let seen = explore(|| {
        // devices_max 2 → 3 slots: room for a duplicate claim if the CAS were wrong.
        let table = table_with_fixes(2, &[]);
        let first_done = race(
            &table,
            |t| t.record_fix(7, 100),
            |t| t.record_contact(7, 150),
        );
        assert_eq!(first_done, (Ok(()), Ok(())));
        assert_eq!(table.len(), 1);
        let s = table.get(7).expect("tracked");
        assert_eq!((s.last_fix_s, s.last_contact_s), (Some(100), Some(150)));
        // The place a duplicate would have taken is still free, and the limit still holds.
        assert_eq!(table.record_fix(8, 100), Ok(()));
        assert_eq!(
            table.record_fix(9, 100),
            Err(RecordError::TableFull { devices_max: 2 })
        );
    });
    assert_eq!(seen.len(), 1);
}

/// Two threads race for the last place with different devices: exactly one gets it, and
/// either may.
#[test]
fn last_place_goes_to_exactly_one_device() {
    let seen = explore(|| {
        let table = table_with_fixes(1, &[]);
        let (r3, r4) = race(&table, |t| t.record_fix(3, 100), |t| t.record_fix(4, 100));
        let full = Err(RecordError::TableFull { devices_max: 1 });
        assert!(
            (r3 == Ok(()) && r4 == full) || (r3 == full && r4 == Ok(())),
            "device 3: {r3:?}, device 4: {r4:?}"
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(3).is_some(), r3.is_ok());
        assert_eq!(table.get(4).is_some(), r4.is_ok());
        if r3.is_ok() { 3 } else { 4 }
    });
    assert_eq!(
        seen,
        BTreeSet::from([3, 4]),
        "both winners must be explored"
    );
}

/// A newer fix racing with a scan is never lost: the scan either sees it or the next scan
/// does, and the events form a valid sequence.
#[test]
fn update_racing_a_scan_is_seen_by_a_later_scan() {
    explore_both(
        "the scan must be explored before and after the update",
        || {
            let table = table_with_fixes(1, &[(5, 100)]);
            // At 150 the old fix is expired (50 s >= 20 s); the new one is from the future.
            let (mut events, _) = fix_racing_a_scan(&table, 5, 200, 150);
            scan(&table, 205, &mut events);
            let s = table.get(5).expect("tracked");
            assert_eq!(s.last_fix_s, Some(200));
            assert_eq!(
                s.level,
                Level::Reporting,
                "the later scan must see the newer fix"
            );
            match events.as_slice() {
                [] => false,
                [expired, resumed] => {
                    assert_eq!(
                        (expired.kind, expired.from, expired.to, expired.last_fix_s),
                        (EventKind::Expired, Level::Reporting, Level::Expired, 100)
                    );
                    assert_eq!(
                        (resumed.kind, resumed.from, resumed.to, resumed.last_fix_s),
                        (
                            EventKind::Resumed {
                                silent_since_s: 100
                            },
                            Level::Expired,
                            Level::Reporting,
                            200
                        )
                    );
                    true
                }
                other => panic!("invalid event sequence {other:?}"),
            }
        },
    );
}

/// Two threads scan at once: the transition is emitted exactly once, whether the scans
/// overlap (one is refused) or run one after the other.
#[test]
fn concurrent_scans_emit_a_transition_once() {
    explore_both("overlapping and sequential scans must be explored", || {
        let table = table_with_fixes(1, &[(5, 100)]);
        let scanner = |t: &SilenceTable| {
            let mut events: Vec<SilenceEvent> = Vec::new();
            let ran = t.scan(115, &policy(), &mut events).is_ok();
            (ran, events)
        };
        let ((ran_a, mut events), (ran_b, events_b)) = race(&table, scanner, scanner);
        assert!(ran_a || ran_b, "at least one scan runs");
        events.extend(events_b);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].kind, events[0].to),
            (EventKind::Warned, Level::Warned)
        );
        assert_eq!(table.get(5).expect("tracked").level, Level::Warned);
        ran_a && ran_b
    });
}

/// A new device (fix 50, expired at 105) is claimed while a scan at 105 runs, and a final scan
/// at 105 follows. With `dirty_before`, a third device was claimed just before, so the racing
/// scan visits the whole block and the claim can land in the middle of that visit; without,
/// the racing scan finds the block summarised as all reporting. Either way the claim marks
/// the block dirty, the device is judged by one of the two scans, and its transition is
/// emitted exactly once; the other devices, reporting, produce nothing.
fn claim_racing_a_scan(dirty_before: bool) {
    explore_both(
        "the claim must be explored before and after the scan",
        move || {
            // devices_max 3 → 4 slots, one summary block.
            let table = table_with_fixes(3, &[(5, 100)]);
            let mut events = Vec::new();
            scan(&table, 100, &mut events);
            // The summary now proves device 5 reporting: nothing is loaded.
            let stats = scan(&table, 101, &mut events);
            assert_eq!(stats.slots_visited, 0);
            assert!(events.is_empty());
            if dirty_before {
                table.record_fix(7, 100).expect("room");
            }
            // Fix 50 is 55 s old at 105: expired (>= 20 s). Fix 100 is 5 s old: reporting.
            let (mut events, _) = fix_racing_a_scan(&table, 6, 50, 105);
            let racing_scan_saw_it = !events.is_empty();
            scan(&table, 105, &mut events);
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(
                (events[0].device_id, events[0].kind, events[0].last_fix_s),
                (6, EventKind::Expired, 50)
            );
            assert_eq!(table.get(6).expect("tracked").level, Level::Expired);
            assert_eq!(table.get(5).expect("tracked").level, Level::Reporting);
            racing_scan_saw_it
        },
    )
}

/// The claim races a scan that skips the block by its summary.
#[test]
fn claim_racing_a_scan_of_a_summarised_block_is_never_skipped() {
    claim_racing_a_scan(false);
}

/// The claim races a scan that rebuilds the block's summary: the rebuilt summary must not
/// hide the new device (the final compare-exchange from "visiting" fails).
#[test]
fn claim_racing_a_summary_rebuild_is_never_skipped() {
    claim_racing_a_scan(true);
}

/// A silent (watched, held) device resumes while a scan that may skip its block's reporting
/// slots runs: the resume is emitted exactly once, and the block is summarised again
/// afterwards. The fix wakes the held block (or the racing scan already saw it).
#[test]
fn fix_racing_a_partial_visit_resumes_once() {
    explore_both(
        "the fix must be explored before and after the racing scan",
        || {
            let table = table_with_fixes(2, &[(5, 100), (6, 70)]);
            let mut events = Vec::new();
            // At 100 device 6 is 30 s old: expired; device 5 is fast.
            scan(&table, 100, &mut events);
            assert_eq!(events.len(), 1);
            let (mut events, racing) = fix_racing_a_scan(&table, 6, 104, 105);
            // Device 6 is held (expired, it cannot change without a fix): the racing scan loads
            // it only if the fix already woke its block.
            assert!(
                racing.slots_visited <= 1,
                "only the watched device may be loaded"
            );
            let racing_scan_saw_it = !events.is_empty();
            let stats = scan(&table, 105, &mut events);
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(
                (events[0].device_id, events[0].kind, events[0].last_fix_s),
                (6, EventKind::Resumed { silent_since_s: 70 }, 104)
            );
            if racing_scan_saw_it {
                assert_eq!(
                    stats.slots_visited, 0,
                    "both devices are provably reporting"
                );
            }
            racing_scan_saw_it
        },
    );
}

/// A warned device crosses into expired in a scan that judges only its block's watched slots
/// and then holds the block (an expired device cannot change without a fix), while a newer fix
/// arrives. The fix/hold handshake (a SeqCst fence on both sides) guarantees that either the
/// recorder sees the slot flagged and wakes the block, or the scanner's re-load sees the fix
/// and does not hold it: the final scan always resumes the device, exactly once.
#[test]
fn fix_racing_a_hold_wakes_the_block() {
    explore_both("the fix must be explored before and after the hold", || {
        let table = table_with_fixes(1, &[(5, 100)]);
        let mut events = Vec::new();
        // At 111 the fix is 11 s old: warned (>= 10 s), held until its expiry at 120.
        scan(&table, 111, &mut events);
        assert_eq!(events.len(), 1);
        let held = scan(&table, 115, &mut events);
        assert_eq!(held.slots_visited, 0, "held until the expiry deadline");
        assert_eq!((held.warned, held.devices), (1, 1));
        // At 121 the old fix is expired; the new one (130) is from the future.
        let (mut events, _) = fix_racing_a_scan(&table, 5, 130, 121);
        let racing_scan_expired_it = events.iter().any(|e| e.kind == EventKind::Expired);
        let stats = scan(&table, 131, &mut events);
        assert_eq!(table.get(5).expect("tracked").level, Level::Reporting);
        assert_eq!((stats.reporting, stats.expired), (1, 0));
        match events.as_slice() {
            [resumed] => assert_eq!(
                (resumed.kind, resumed.from, resumed.last_fix_s),
                (
                    EventKind::Resumed {
                        silent_since_s: 100
                    },
                    Level::Warned,
                    130
                )
            ),
            [expired, resumed] => {
                assert_eq!(
                    (expired.kind, expired.to, expired.last_fix_s),
                    (EventKind::Expired, Level::Expired, 100)
                );
                assert_eq!(
                    (resumed.kind, resumed.from, resumed.last_fix_s),
                    (
                        EventKind::Resumed {
                            silent_since_s: 100
                        },
                        Level::Expired,
                        130
                    )
                );
            }
            other => panic!("invalid event sequence {other:?}"),
        }
        racing_scan_expired_it
    });
}
