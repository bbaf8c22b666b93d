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
use silence::{EventKind, Level, Policy, RecordError, SilenceEvent, SilenceTable};

// Every model runs its two actors on spawned threads and only joins on the main thread: loom
// 0.7 fails to explore interleavings when the main thread races a freshly spawned thread whose
// first operation is a load (tokio-rs/loom#392, #166). Each model also records which outcomes
// it saw and asserts that the interesting ones were all explored, so a silent loss of
// exploration fails the test instead of passing it.

fn policy() -> Policy {
    Policy::new(10, 20).expect("valid thresholds")
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

/// Two threads record the same new device at once: both succeed, one slot is taken, and both
/// times are kept.
#[test]
fn concurrent_claim_of_one_device_takes_one_slot() {
    let seen = explore(|| {
        // devices_max 2 → 3 slots: room for a duplicate claim if the CAS were wrong.
        let table = Arc::new(SilenceTable::with_capacity(2).expect("valid size"));
        let (a, b) = (table.clone(), table.clone());
        let fixer = thread::spawn(move || a.record_fix(7, 100));
        let contact = thread::spawn(move || b.record_contact(7, 150));
        let first_done = (
            fixer.join().expect("thread"),
            contact.join().expect("thread"),
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
        let table = Arc::new(SilenceTable::with_capacity(1).expect("valid size"));
        let (a, b) = (table.clone(), table.clone());
        let t3 = thread::spawn(move || a.record_fix(3, 100));
        let t4 = thread::spawn(move || b.record_fix(4, 100));
        let (r3, r4) = (t3.join().expect("thread"), t4.join().expect("thread"));
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
    let seen = explore(|| {
        let table = Arc::new(SilenceTable::with_capacity(1).expect("valid size"));
        table.record_fix(5, 100).expect("room");
        let (writer_table, scanner_table) = (table.clone(), table.clone());
        let writer = thread::spawn(move || writer_table.record_fix(5, 200).expect("known device"));
        let scanner = thread::spawn(move || {
            let mut events = Vec::new();
            // At 150 the old fix is expired (50 s >= 20 s); the new one is from the future.
            scanner_table
                .scan(150, &policy(), &mut events)
                .expect("only scanner");
            events
        });
        writer.join().expect("thread");
        let mut events = scanner.join().expect("thread");
        table
            .scan(205, &policy(), &mut events)
            .expect("only scanner");
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
    });
    assert_eq!(
        seen,
        BTreeSet::from([false, true]),
        "the scan must be explored before and after the update"
    );
}

/// Two threads scan at once: the transition is emitted exactly once, whether the scans
/// overlap (one is refused) or run one after the other.
#[test]
fn concurrent_scans_emit_a_transition_once() {
    let seen = explore(|| {
        let table = Arc::new(SilenceTable::with_capacity(1).expect("valid size"));
        table.record_fix(5, 100).expect("room");
        let scan = |table: Arc<SilenceTable>| {
            move || {
                let mut events: Vec<SilenceEvent> = Vec::new();
                let ran = table.scan(115, &policy(), &mut events).is_ok();
                (ran, events)
            }
        };
        let a = thread::spawn(scan(table.clone()));
        let b = thread::spawn(scan(table.clone()));
        let ((ran_a, mut events), (ran_b, events_b)) =
            (a.join().expect("thread"), b.join().expect("thread"));
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
    assert_eq!(
        seen,
        BTreeSet::from([false, true]),
        "overlapping and sequential scans must be explored"
    );
}

/// A new device (fix 50, expired at 105) is claimed while a scan at 105 runs, and a final scan
/// at 105 follows. With `dirty_before`, a third device was claimed just before, so the racing
/// scan visits the whole block and the claim can land in the middle of that visit; without,
/// the racing scan finds the block summarised as all reporting. Either way the claim marks
/// the block dirty, the device is judged by one of the two scans, and its transition is
/// emitted exactly once; the other devices, reporting, produce nothing.
fn claim_racing_a_scan(dirty_before: bool) -> BTreeSet<bool> {
    explore(move || {
        // devices_max 3 → 4 slots, one summary block.
        let table = Arc::new(SilenceTable::with_capacity(3).expect("valid size"));
        table.record_fix(5, 100).expect("room");
        let mut events = Vec::new();
        table
            .scan(100, &policy(), &mut events)
            .expect("only scanner");
        // The summary now proves device 5 reporting: nothing is loaded.
        let stats = table
            .scan(101, &policy(), &mut events)
            .expect("only scanner");
        assert_eq!(stats.slots_visited, 0);
        assert!(events.is_empty());
        if dirty_before {
            table.record_fix(7, 100).expect("room");
        }
        let (writer_table, scanner_table) = (table.clone(), table.clone());
        // Fix 50 is 55 s old at 105: expired (>= 20 s). Fix 100 is 5 s old: reporting.
        let writer = thread::spawn(move || writer_table.record_fix(6, 50).expect("room"));
        let scanner = thread::spawn(move || {
            let mut events = Vec::new();
            scanner_table
                .scan(105, &policy(), &mut events)
                .expect("only scanner");
            events
        });
        writer.join().expect("thread");
        let mut events = scanner.join().expect("thread");
        let racing_scan_saw_it = !events.is_empty();
        table
            .scan(105, &policy(), &mut events)
            .expect("only scanner");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0].device_id, events[0].kind, events[0].last_fix_s),
            (6, EventKind::Expired, 50)
        );
        assert_eq!(table.get(6).expect("tracked").level, Level::Expired);
        assert_eq!(table.get(5).expect("tracked").level, Level::Reporting);
        racing_scan_saw_it
    })
}

/// The claim races a scan that skips the block by its summary.
#[test]
fn claim_racing_a_scan_of_a_summarised_block_is_never_skipped() {
    assert_eq!(
        claim_racing_a_scan(false),
        BTreeSet::from([false, true]),
        "the claim must be explored before and after the scan"
    );
}

/// The claim races a scan that rebuilds the block's summary: the rebuilt summary must not
/// hide the new device (the final compare-exchange from "visiting" fails).
#[test]
fn claim_racing_a_summary_rebuild_is_never_skipped() {
    assert_eq!(
        claim_racing_a_scan(true),
        BTreeSet::from([false, true]),
        "the claim must be explored before and after the scan"
    );
}

/// A silent (watched, held) device resumes while a scan that may skip its block's reporting
/// slots runs: the resume is emitted exactly once, and the block is summarised again
/// afterwards. The fix wakes the held block (or the racing scan already saw it).
#[test]
fn fix_racing_a_partial_visit_resumes_once() {
    let seen = explore(|| {
        let table = Arc::new(SilenceTable::with_capacity(2).expect("valid size"));
        table.record_fix(5, 100).expect("room");
        table.record_fix(6, 70).expect("room");
        let mut events = Vec::new();
        // At 100 device 6 is 30 s old: expired; device 5 is fast.
        table
            .scan(100, &policy(), &mut events)
            .expect("only scanner");
        assert_eq!(events.len(), 1);
        events.clear();
        let (writer_table, scanner_table) = (table.clone(), table.clone());
        let writer = thread::spawn(move || writer_table.record_fix(6, 104).expect("known"));
        let scanner = thread::spawn(move || {
            let mut events = Vec::new();
            let stats = scanner_table
                .scan(105, &policy(), &mut events)
                .expect("only scanner");
            // Device 6 is held (expired, it cannot change without a fix): it is loaded only
            // if the fix already woke its block.
            assert!(
                stats.slots_visited <= 1,
                "only the watched device may be loaded"
            );
            events
        });
        writer.join().expect("thread");
        let mut events = scanner.join().expect("thread");
        let racing_scan_saw_it = !events.is_empty();
        let stats = table
            .scan(105, &policy(), &mut events)
            .expect("only scanner");
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
    });
    assert_eq!(seen, BTreeSet::from([false, true]));
}

/// A warned device crosses into expired in a scan that judges only its block's watched slots
/// and then holds the block (an expired device cannot change without a fix), while a newer fix
/// arrives. The fix/hold handshake (a SeqCst fence on both sides) guarantees that either the
/// recorder sees the slot flagged and wakes the block, or the scanner's re-load sees the fix
/// and does not hold it: the final scan always resumes the device, exactly once.
#[test]
fn fix_racing_a_hold_wakes_the_block() {
    let seen = explore(|| {
        let table = Arc::new(SilenceTable::with_capacity(1).expect("valid size"));
        table.record_fix(5, 100).expect("room");
        let mut events = Vec::new();
        // At 111 the fix is 11 s old: warned (>= 10 s), held until its expiry at 120.
        table
            .scan(111, &policy(), &mut events)
            .expect("only scanner");
        assert_eq!(events.len(), 1);
        let held = table
            .scan(115, &policy(), &mut events)
            .expect("only scanner");
        assert_eq!(held.slots_visited, 0, "held until the expiry deadline");
        assert_eq!((held.warned, held.devices), (1, 1));
        events.clear();
        let (writer_table, scanner_table) = (table.clone(), table.clone());
        let writer = thread::spawn(move || writer_table.record_fix(5, 130).expect("known"));
        let scanner = thread::spawn(move || {
            let mut events = Vec::new();
            // At 121 the old fix is expired; the new one (130) is from the future.
            scanner_table
                .scan(121, &policy(), &mut events)
                .expect("only scanner");
            events
        });
        writer.join().expect("thread");
        let mut events = scanner.join().expect("thread");
        let racing_scan_expired_it = events.iter().any(|e| e.kind == EventKind::Expired);
        let stats = table
            .scan(131, &policy(), &mut events)
            .expect("only scanner");
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
    assert_eq!(
        seen,
        BTreeSet::from([false, true]),
        "the fix must be explored before and after the hold"
    );
}
