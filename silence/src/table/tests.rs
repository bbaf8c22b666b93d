//! Unit, model and stress tests of the silence table and scanner.
// The stress and model tests use std threads and big tables; loom runs its own models.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool as StdAtomicBool, AtomicU32 as StdAtomicU32, Ordering as StdOrdering,
};

use proptest::prelude::*;

use super::*;
use crate::policy::Policy;

const WARN_S: u64 = 100;
const EXPIRE_S: u64 = 300;

fn policy() -> Policy {
    Policy::new(WARN_S, EXPIRE_S).unwrap()
}

fn table(devices_max: usize) -> SilenceTable {
    SilenceTable::with_capacity(devices_max).unwrap()
}

fn scan(t: &SilenceTable, now_s: u32) -> Vec<SilenceEvent> {
    let mut out = Vec::new();
    t.scan(now_s, &policy(), &mut out).unwrap();
    out
}

/// splitmix64: a tiny deterministic generator (the `server`-only build has no `rand`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn with_capacity_limits_and_memory() {
    let limit = SilenceTable::DEVICES_MAX_LIMIT;
    assert_eq!(
        SilenceTable::with_capacity(0).unwrap_err(),
        TableConfigError::DevicesMax {
            devices_max: 0,
            limit
        }
    );
    assert_eq!(
        SilenceTable::with_capacity(limit + 1).unwrap_err(),
        TableConfigError::DevicesMax {
            devices_max: limit + 1,
            limit
        }
    );
    for (devices_max, capacity) in [
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (195, 256),
        (1_000_000, 1_312_820),
    ] {
        let t = table(devices_max);
        assert_eq!(t.capacity(), capacity, "devices_max {devices_max}");
        assert_eq!(t.devices_max(), devices_max);
        assert_eq!(
            t.memory_bytes(),
            std::mem::size_of::<SilenceTable>() + 24 * capacity + 24 * capacity.div_ceil(64)
        );
        assert!(t.is_empty());
    }
    // The memory target: <= 32 bytes per device (plus one block of rounding and the header),
    // summaries included, at every size from 4 on.
    assert_eq!(SilenceTable::SLOT_BYTES, 24);
    for devices_max in (4..2_000).chain([999_999, 1_000_000, 1_000_001]) {
        let t = table(devices_max);
        assert!(t.capacity() > devices_max);
        assert!(
            t.memory_bytes() <= 32 * devices_max + 24 + std::mem::size_of::<SilenceTable>(),
            "devices_max {devices_max}: {} bytes",
            t.memory_bytes()
        );
    }
    // 1,312,820 slots and 20,513 summaries: 31,999,992 bytes, 31.99999 B per device.
    let t = table(1_000_000);
    assert_eq!(
        t.memory_bytes() - std::mem::size_of::<SilenceTable>(),
        31_999_992
    );
}

#[test]
fn record_and_get() {
    let t = table(10);
    assert_eq!(t.get(5), None);
    t.record_fix(5, 1_000).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.get(5),
        Some(DeviceState {
            device_id: 5,
            last_fix_s: Some(1_000),
            last_contact_s: None,
            level: Level::Reporting,
            silent_since_s: None,
        })
    );
    t.record_contact(5, 1_010).unwrap();
    t.record_contact(6, 1_020).unwrap();
    assert_eq!(t.len(), 2);
    let s = t.get(5).unwrap();
    assert_eq!((s.last_fix_s, s.last_contact_s), (Some(1_000), Some(1_010)));
    // A device without a fix is counted from its first contact.
    assert_eq!(
        t.get(6),
        Some(DeviceState {
            device_id: 6,
            last_fix_s: None,
            last_contact_s: Some(1_020),
            level: Level::Reporting,
            silent_since_s: Some(1_020),
        })
    );
    assert_eq!(t.get(7), None);
}

#[test]
fn device_id_and_time_validation() {
    let t = table(4);
    let max = i64::MAX as u64;
    for bad in [0, max + 1, u64::MAX] {
        assert_eq!(
            t.record_fix(bad, 10),
            Err(RecordError::InvalidDeviceId { device_id: bad })
        );
        assert_eq!(
            t.record_contact(bad, 10),
            Err(RecordError::InvalidDeviceId { device_id: bad })
        );
        assert_eq!(t.get(bad), None);
    }
    assert_eq!(
        t.record_fix(3, 0),
        Err(RecordError::ZeroTime { device_id: 3 })
    );
    assert_eq!(
        t.record_contact(3, 0),
        Err(RecordError::ZeroTime { device_id: 3 })
    );
    assert!(t.is_empty(), "refused updates must not claim a slot");
    // The edges of the id range are accepted.
    t.record_fix(1, 10).unwrap();
    t.record_fix(max, 10).unwrap();
    assert_eq!(t.get(max).unwrap().last_fix_s, Some(10));
    assert_eq!(t.len(), 2);
}

#[test]
fn updates_keep_the_newest_time() {
    let t = table(2);
    for fix in [100, 50, 200, 150, 1] {
        t.record_fix(9, fix).unwrap();
    }
    for contact in [300, 400, 350] {
        t.record_contact(9, contact).unwrap();
    }
    let s = t.get(9).unwrap();
    assert_eq!((s.last_fix_s, s.last_contact_s), (Some(200), Some(400)));
    t.record_fix(9, u32::MAX).unwrap();
    assert_eq!(t.get(9).unwrap().last_fix_s, Some(u32::MAX));
    assert_eq!(t.len(), 1);
}

#[test]
fn first_contact_is_kept_while_no_fix() {
    let t = table(2);
    t.record_contact(9, 500).unwrap();
    t.record_contact(9, 400).unwrap();
    t.record_contact(9, 600).unwrap();
    assert_eq!(t.get(9).unwrap().silent_since_s, Some(500));
    assert_eq!(t.get(9).unwrap().last_contact_s, Some(600));
}

#[test]
fn full_table_edge() {
    for devices_max in 1..=40usize {
        let t = table(devices_max);
        // Ids spread over the whole range so probes collide and wrap around.
        let ids: Vec<u64> = (1..=devices_max as u64)
            .map(|i| i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 2)
            .collect();
        for (n, &id) in ids.iter().enumerate() {
            t.record_fix(id, 1_000 + n as u32).unwrap();
        }
        assert_eq!(t.len(), devices_max);
        let new_id = (i64::MAX as u64) - 17;
        assert_eq!(
            t.record_fix(new_id, 5),
            Err(RecordError::TableFull { devices_max })
        );
        assert_eq!(
            t.record_contact(new_id, 5),
            Err(RecordError::TableFull { devices_max })
        );
        assert_eq!(
            t.len(),
            devices_max,
            "a refused device must not take a place"
        );
        assert_eq!(t.get(new_id), None);
        // Known devices keep updating at the limit.
        for (n, &id) in ids.iter().enumerate() {
            t.record_fix(id, 2_000 + n as u32).unwrap();
            t.record_contact(id, 3_000).unwrap();
        }
        for (n, &id) in ids.iter().enumerate() {
            let s = t.get(id).unwrap();
            assert_eq!(
                (s.last_fix_s, s.last_contact_s),
                (Some(2_000 + n as u32), Some(3_000))
            );
        }
        let stats = t.scan(3_000, &policy(), &mut Vec::new()).unwrap();
        assert_eq!(stats.devices, devices_max);
        assert_eq!(stats.slots_scanned, t.capacity());
    }
}

#[test]
fn each_transition_exactly_once() {
    let t = table(4);
    t.record_fix(1, 1_000).unwrap();
    t.record_contact(1, 1_005).unwrap();
    assert!(scan(&t, 1_000).is_empty());
    assert!(scan(&t, 1_099).is_empty());
    let warned = scan(&t, 1_100);
    assert_eq!(
        warned,
        vec![SilenceEvent {
            device_id: 1,
            policy: 0,
            kind: EventKind::Warned,
            from: Level::Reporting,
            to: Level::Warned,
            last_fix_s: 1_000,
            last_contact_s: 1_005,
            at_s: 1_100,
            threshold_s: WARN_S,
        }]
    );
    assert!(scan(&t, 1_100).is_empty());
    assert!(scan(&t, 1_299).is_empty());
    assert_eq!(t.get(1).unwrap().level, Level::Warned);
    assert_eq!(t.get(1).unwrap().silent_since_s, Some(1_000));
    let expired = scan(&t, 1_300);
    assert_eq!(
        expired,
        vec![SilenceEvent {
            device_id: 1,
            policy: 0,
            kind: EventKind::Expired,
            from: Level::Warned,
            to: Level::Expired,
            last_fix_s: 1_000,
            last_contact_s: 1_005,
            at_s: 1_300,
            threshold_s: EXPIRE_S,
        }]
    );
    assert!(scan(&t, 1_300).is_empty());
    assert!(scan(&t, 9_999).is_empty());
    t.record_fix(1, 9_990).unwrap();
    t.record_contact(1, 9_995).unwrap();
    let resumed = scan(&t, 10_000);
    assert_eq!(
        resumed,
        vec![SilenceEvent {
            device_id: 1,
            policy: 0,
            kind: EventKind::Resumed {
                silent_since_s: 1_000
            },
            from: Level::Expired,
            to: Level::Reporting,
            last_fix_s: 9_990,
            last_contact_s: 9_995,
            at_s: 10_000,
            threshold_s: EXPIRE_S,
        }]
    );
    assert_eq!(resumed[0].silent_interval_s(), Some(8_990));
    assert!(scan(&t, 10_000).is_empty());
    assert_eq!(t.get(1).unwrap().level, Level::Reporting);
    assert_eq!(t.get(1).unwrap().silent_since_s, None);
}

#[test]
fn scan_that_skipped_the_warning_goes_straight_to_expired() {
    let t = table(4);
    t.record_fix(2, 1_000).unwrap();
    assert!(scan(&t, 1_050).is_empty());
    let e = scan(&t, 1_300);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].kind, e[0].from, e[0].to, e[0].threshold_s),
        (
            EventKind::Expired,
            Level::Reporting,
            Level::Expired,
            EXPIRE_S
        )
    );
    assert!(scan(&t, 1_400).is_empty());
}

#[test]
fn resume_after_warned() {
    let t = table(4);
    t.record_fix(3, 1_000).unwrap();
    assert_eq!(scan(&t, 1_150)[0].kind, EventKind::Warned);
    // A late batch with fixes from before the warning still ends the silence if it is fresh
    // enough at the next scan.
    t.record_fix(3, 1_120).unwrap();
    let e = scan(&t, 1_160);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0].kind,
            e[0].from,
            e[0].to,
            e[0].last_fix_s,
            e[0].threshold_s
        ),
        (
            EventKind::Resumed {
                silent_since_s: 1_000
            },
            Level::Warned,
            Level::Reporting,
            1_120,
            WARN_S
        )
    );
    assert_eq!(e[0].silent_interval_s(), Some(120));
    // And it can go silent again, once per silence.
    assert_eq!(scan(&t, 1_220)[0].kind, EventKind::Warned);
    assert_eq!(t.get(3).unwrap().silent_since_s, Some(1_120));
}

#[test]
fn expired_is_not_downgraded_by_an_old_fix() {
    let t = table(4);
    t.record_fix(4, 1_000).unwrap();
    assert_eq!(scan(&t, 1_300)[0].to, Level::Expired);
    // Newer, but still warned-old at 1_300: stays expired, no event, silence now counted from it.
    t.record_fix(4, 1_150).unwrap();
    assert!(scan(&t, 1_300).is_empty());
    let s = t.get(4).unwrap();
    assert_eq!((s.level, s.silent_since_s), (Level::Expired, Some(1_150)));
    t.record_fix(4, 1_290).unwrap();
    let e = scan(&t, 1_300);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].kind, e[0].from),
        (
            EventKind::Resumed {
                silent_since_s: 1_150
            },
            Level::Expired
        )
    );
}

#[test]
fn contact_without_fix_is_judged_from_first_contact() {
    let t = table(4);
    t.record_contact(5, 1_000).unwrap();
    t.record_contact(5, 1_099).unwrap();
    // Heartbeats do not end a silence: only fixes do.
    let e = scan(&t, 1_100);
    assert_eq!(
        e,
        vec![SilenceEvent {
            device_id: 5,
            policy: 0,
            kind: EventKind::Warned,
            from: Level::Reporting,
            to: Level::Warned,
            last_fix_s: 0,
            last_contact_s: 1_099,
            at_s: 1_100,
            threshold_s: WARN_S,
        }]
    );
    assert_eq!(t.get(5).unwrap().silent_since_s, Some(1_000));
    t.record_fix(5, 1_180).unwrap();
    let e = scan(&t, 1_200);
    assert_eq!(
        (e[0].kind, e[0].silent_interval_s()),
        (
            EventKind::Resumed {
                silent_since_s: 1_000
            },
            Some(180)
        )
    );
}

#[test]
fn scan_stats_count_levels() {
    let t = table(10);
    t.record_fix(1, 1_000).unwrap(); // expired at 1_300
    t.record_fix(2, 1_150).unwrap(); // warned
    t.record_fix(3, 1_250).unwrap(); // reporting
    t.record_contact(4, 1_290).unwrap(); // reporting, contact only
    let mut out = vec![];
    let stats = t.scan(1_300, &policy(), &mut out).unwrap();
    assert_eq!(
        stats,
        ScanStats {
            slots_scanned: t.capacity(),
            // The first scan visits every slot (all blocks start dirty).
            slots_visited: t.capacity(),
            blocks_skipped: 0,
            devices: 4,
            reporting: 2,
            warned: 1,
            expired: 1,
            events: 2,
            exempt: 0,
            past_coverage: 0,
        }
    );
    assert_eq!(out.len(), 2);
    // The second scan keeps the counts and emits nothing.
    let stats = t.scan(1_300, &policy(), &mut out).unwrap();
    assert_eq!(
        (stats.reporting, stats.warned, stats.expired, stats.events),
        (2, 1, 1, 0)
    );
    assert_eq!(out.len(), 2, "scan appends; it never clears out");
    // The three devices that are not provably reporting (the warned, the expired and the
    // contact-only one) are watched, and held: none of them can change before 1_390 (the
    // contact-only one's warning), so nothing is loaded, and they still count.
    assert_eq!(stats.slots_visited, 0);
    let stats = t.scan(1_320, &policy(), &mut out).unwrap();
    assert_eq!(
        (stats.slots_visited, stats.devices, stats.reporting),
        (0, 4, 2)
    );
    assert_eq!((stats.warned, stats.expired), (1, 1));
}

/// `devices` devices with ids `1..=devices`, fix at `fresh_s`, except every `silent_every`-th
/// at `old_s`.
/// Room is left for 10 more devices.
fn fleet(devices: u64, silent_every: u64, fresh_s: u32, old_s: u32) -> SilenceTable {
    let t = table(devices as usize + 10);
    for id in 1..=devices {
        let fix_s = if id % silent_every == 0 {
            old_s
        } else {
            fresh_s
        };
        t.record_fix(id, fix_s).unwrap();
    }
    t
}

#[test]
fn summary_skips_reporting_blocks_and_judges_only_watched_slots() {
    const DEVICES: u64 = 10_000;
    let t = fleet(DEVICES, 100, 10_000, 9_000);
    let p = policy();
    let mut out = vec![];
    let first = t.scan(10_050, &p, &mut out).unwrap();
    assert_eq!(first.slots_visited, t.capacity());
    assert_eq!(first.blocks_skipped, 0);
    assert_eq!((first.expired, first.events), (100, 100));
    assert!(
        out.iter()
            .all(|e| e.device_id % 100 == 0 && e.kind == EventKind::Expired)
    );
    // Same inputs again: nothing happens, and nothing is loaded: the 100 expired devices
    // cannot change without a fix, so their blocks are held.
    out.clear();
    let second = t.scan(10_060, &p, &mut out).unwrap();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(second.slots_visited, 0);
    assert_eq!(second.blocks_skipped, t.capacity().div_ceil(64));
    assert!(count_blocks_with_silent(&t, 100) > 0);
    assert_eq!(
        (
            second.devices,
            second.reporting,
            second.warned,
            second.expired
        ),
        (first.devices, first.reporting, first.warned, first.expired)
    );
    assert_eq!(second.slots_scanned, t.capacity());
    // A fix brings an expired device back: it wakes its block, whose watched slots are
    // judged; it is resumed once, then fast, and the block is held again.
    let woken = silent_in_block_of(&t, 500, 100);
    t.record_fix(500, 10_070).unwrap();
    out.clear();
    let third = t.scan(10_070, &p, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].device_id, out[0].kind),
        (
            500,
            EventKind::Resumed {
                silent_since_s: 9_000
            }
        )
    );
    assert_eq!(third.slots_visited, woken);
    let fourth = t.scan(10_070, &p, &mut out).unwrap();
    assert_eq!(fourth.slots_visited, 0);
    assert_eq!(
        (fourth.reporting, fourth.expired),
        (third.reporting, third.expired)
    );
    assert_eq!(third.expired, 99);
}

/// Devices whose id is a multiple of `every` in the block holding `device_id`'s slot.
fn silent_in_block_of(t: &SilenceTable, device_id: u64, every: u64) -> usize {
    let i = t
        .slots
        .iter()
        .position(|s| s.device.load(StdOrdering::Relaxed) == device_id)
        .unwrap();
    let start = i / 64 * 64;
    t.slots[start..(start + 64).min(t.capacity())]
        .iter()
        .filter(|s| {
            let d = s.device.load(StdOrdering::Relaxed);
            d != 0 && d % every == 0
        })
        .count()
}

/// The number of slots in the block holding `device_id`'s slot (64, or fewer for the last).
fn block_len_of(t: &SilenceTable, device_id: u64) -> usize {
    let i = t
        .slots
        .iter()
        .position(|s| s.device.load(StdOrdering::Relaxed) == device_id)
        .unwrap();
    let start = i / 64 * 64;
    (start + 64).min(t.capacity()) - start
}

/// Blocks of 64 slots holding at least one device whose id is a multiple of `every`.
fn count_blocks_with_silent(t: &SilenceTable, every: u64) -> usize {
    let mut blocks = std::collections::BTreeSet::new();
    for (i, slot) in t.slots.iter().enumerate() {
        let d = slot.device.load(StdOrdering::Relaxed);
        if d != 0 && d % every == 0 {
            blocks.insert(i / 64);
        }
    }
    blocks.len()
}

#[test]
fn summary_floor_falling_behind_makes_the_block_judged_again() {
    let t = fleet(1_000, 1_000_000, 10_000, 1);
    let p = policy();
    let mut out = vec![];
    t.scan(10_000, &p, &mut out).unwrap();
    // The look-ahead is an eighth of the 100 s window: 12 s, re-reads start 6 s ahead.
    let skipped = t.scan(10_000 + WARN_S as u32 - 7, &p, &mut out).unwrap();
    assert_eq!(
        skipped.slots_visited, 0,
        "every block is provably reporting beyond the look-ahead"
    );
    // 6 s before the fixes come due: blocks are re-read early, at most one in 32 per scan
    // (here: one), and their devices go on the watch list, held until they are due.
    let early = t.scan(10_000 + WARN_S as u32 - 1, &p, &mut out).unwrap();
    assert_eq!(early.slots_visited, 64, "one block re-read early");
    assert!(out.is_empty());
    let watched = t.blocks[0].watch.load(StdOrdering::Relaxed).count_ones() as usize;
    assert!(watched > 0, "block 0 now watches its devices");
    // One second later every fix is exactly WARN_S old: the early block judges its watched
    // slots, every other block must be read in full.
    let due = t.scan(10_000 + WARN_S as u32, &p, &mut out).unwrap();
    assert_eq!(due.slots_visited, t.capacity() - 64 + watched);
    assert_eq!((due.warned, out.len()), (1_000, 1_000));
    assert!(out.iter().all(|e| e.kind == EventKind::Warned));
}

#[test]
fn a_cohort_coming_due_is_watched_before_it_crosses() {
    // 1% of 20,000 devices went silent together; scans every 5 s up to their warning.
    let t = fleet(20_000, 100, 100_000, 10_000);
    let p = Policy::new(8_000, 20_000).unwrap();
    let mut out = vec![];
    t.scan(10_010, &p, &mut out).unwrap();
    let blocks = t.capacity().div_ceil(64);
    let mut max_visited = 0;
    // The look-ahead is 1,000 s; re-reads start 500 s ahead: 100 scans, each re-reading at
    // most one block in 32.
    for now in (17_000..18_000).step_by(5) {
        let stats = t.scan(now, &p, &mut out).unwrap();
        assert!(out.is_empty());
        max_visited = max_visited.max(stats.slots_visited);
    }
    assert!(
        max_visited <= blocks / 32 * 64 + 200,
        "bounded: {max_visited} slots, the early share plus the watched cohort"
    );
    // The crossing scan visits only the watched cohort: no block is read in full.
    let crossing = t.scan(18_000, &p, &mut out).unwrap();
    assert_eq!(out.len(), 200);
    assert!(out.iter().all(|e| e.kind == EventKind::Warned));
    assert_eq!(
        crossing.slots_visited, 200,
        "{crossing:?} of {blocks} blocks"
    );
}

#[test]
fn a_device_claimed_in_a_skipped_block_is_judged_by_the_next_scan() {
    let t = fleet(640, 1_000_000, 10_000, 1);
    let p = policy();
    let mut out = vec![];
    t.scan(10_000, &p, &mut out).unwrap();
    assert_eq!(t.scan(10_010, &p, &mut out).unwrap().slots_visited, 0);
    // A new device whose newest fix is long expired (a late batch after a restart, say): its
    // block's floor still covers the old devices, but the claim marked the block dirty.
    t.record_fix(100_000, 5_000).unwrap();
    let stats = t.scan(10_020, &p, &mut out).unwrap();
    assert_eq!(
        stats.slots_visited,
        block_len_of(&t, 100_000),
        "exactly the dirty block"
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].device_id, out[0].kind, out[0].last_fix_s),
        (100_000, EventKind::Expired, 5_000)
    );
    // A contact-only newcomer is watched until it sends a fix (held, like the expired
    // device: neither can change before the newcomer's warning at 10_120).
    t.record_contact(100_001, 10_020).unwrap();
    t.scan(10_030, &p, &mut out).unwrap();
    assert_eq!(t.scan(10_040, &p, &mut out).unwrap().slots_visited, 0);
    // Its first fix wakes its block (the slot is flagged as held): the block's watched slots
    // are judged and the newcomer turns fast.
    t.record_fix(100_001, 10_040).unwrap();
    let woken = t.scan(10_040, &p, &mut out).unwrap().slots_visited;
    assert!((1..=2).contains(&woken), "{woken}");
    assert_eq!(t.get(100_001).unwrap().level, Level::Reporting);
    assert_eq!(t.scan(10_050, &p, &mut out).unwrap().slots_visited, 0);
    assert_eq!(out.len(), 1, "no other event");
}

#[test]
fn import_into_a_skipped_block_is_judged_by_the_next_scan() {
    let t = fleet(640, 1_000_000, 10_000, 1);
    let p = policy();
    let mut out = vec![];
    t.scan(10_000, &p, &mut out).unwrap();
    assert_eq!(t.scan(10_010, &p, &mut out).unwrap().slots_visited, 0);
    // A snapshot says device 7 was expired, silent since 9_000; its fix is fresh now.
    t.import(SlotRecord {
        device_id: 7,
        last_fix_s: 10_000,
        last_contact_s: 10_000,
        since_s: 9_000,
        state: Level::Expired.to_bits(),
    })
    .unwrap();
    let stats = t.scan(10_020, &p, &mut out).unwrap();
    assert_eq!(stats.slots_visited, block_len_of(&t, 7));
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].device_id, out[0].kind),
        (
            7,
            EventKind::Resumed {
                silent_since_s: 9_000
            }
        )
    );
}

#[test]
fn a_policy_without_a_reporting_bound_visits_every_slot() {
    let t = fleet(200, 1_000_000, 10_000, 1);
    let mut out = vec![];
    for now in [10_000, 10_001] {
        let stats = t.scan(now, &ExemptOdd(policy()), &mut out).unwrap();
        assert_eq!(stats.slots_visited, t.capacity());
        assert_eq!(stats.blocks_skipped, 0);
    }
}

#[test]
fn one_scan_emits_at_most_devices_max_events() {
    let devices_max = 500;
    let t = table(devices_max);
    for id in 1..=devices_max as u64 {
        t.record_fix(id, 1_000).unwrap();
    }
    let mut out = Vec::new();
    let stats = t.scan(1_100, &policy(), &mut out).unwrap();
    assert_eq!((stats.events, out.len()), (devices_max, devices_max));
    let mut ids: Vec<u64> = out.iter().map(|e| e.device_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=devices_max as u64).collect::<Vec<_>>());
    assert!(out.iter().all(|e| e.kind == EventKind::Warned));
    out.clear();
    t.scan(1_150, &policy(), &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_second_scan_is_refused_while_one_runs() {
    let t = table(4);
    t.record_fix(1, 1_000).unwrap();
    let held = ScanGuard::acquire(&t.scanning).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        t.scan(1_100, &policy(), &mut out),
        Err(ScanError::AlreadyRunning)
    );
    assert!(out.is_empty());
    drop(held);
    assert_eq!(t.scan(1_100, &policy(), &mut out).unwrap().events, 1);
}

/// A policy with no fast-path bound and a per-device rule, to prove the scanner only relies on
/// the trait (the seam for calendars and exemptions).
struct ExemptOdd(Policy);

impl SilencePolicy for ExemptOdd {
    fn level(&self, device_id: u64, since_s: u32, now_s: u32) -> Level {
        if device_id % 2 == 1 {
            Level::Reporting
        } else {
            self.0.level(since_s, now_s)
        }
    }

    fn threshold_s(&self, device_id: u64, level: Level) -> u64 {
        SilencePolicy::threshold_s(&self.0, device_id, level)
    }
}

#[test]
fn scanner_uses_only_the_policy_trait() {
    let t = table(10);
    for id in 1..=6 {
        t.record_fix(id, 1_000).unwrap();
    }
    let mut out = Vec::new();
    let p = ExemptOdd(policy());
    let stats = t.scan(1_100, &p, &mut out).unwrap();
    let mut ids: Vec<u64> = out.iter().map(|e| e.device_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![2, 4, 6]);
    assert_eq!((stats.reporting, stats.warned), (3, 3));
    // The same through a trait object.
    let dynamic: &dyn SilencePolicy = &p;
    out.clear();
    assert_eq!(t.scan(1_300, dynamic, &mut out).unwrap().expired, 3);
    assert_eq!(out.len(), 3);
}

/// Checks one device's events form a valid chain from `Reporting`, agree with the policy at
/// the time they were emitted, and returns the level the chain ends at.
fn check_chain(device_id: u64, events: &[SilenceEvent], p: &Policy) -> Level {
    let mut level = Level::Reporting;
    for e in events {
        assert_eq!(e.device_id, device_id);
        assert_eq!(
            e.from, level,
            "device {device_id}: chain broken at {e:?} in {events:?}"
        );
        assert_ne!(e.from, e.to, "device {device_id}: no-op event {e:?}");
        let judged = if e.last_fix_s != 0 {
            Some(p.level(e.last_fix_s, e.at_s))
        } else {
            None
        };
        match (e.kind, e.from, e.to) {
            (EventKind::Warned, Level::Reporting, Level::Warned) => {
                assert!(judged.is_none_or(|j| j == Level::Warned), "{e:?}");
            }
            (EventKind::Expired, Level::Reporting | Level::Warned, Level::Expired) => {
                assert!(judged.is_none_or(|j| j == Level::Expired), "{e:?}");
            }
            (EventKind::Resumed { .. }, Level::Warned | Level::Expired, Level::Reporting) => {
                assert!(judged.is_none_or(|j| j == Level::Reporting), "{e:?}");
            }
            _ => panic!("device {device_id}: invalid transition {e:?}"),
        }
        level = e.to;
    }
    level
}

#[test]
fn stress_writers_and_scanner() {
    const DEVICES: u64 = 3_000;
    const WRITERS: u64 = 3;
    const SCANS: u32 = 1_500;
    // One place per writer above the fleet: at exactly `devices_max`, two writers racing
    // the first record of the same last device can see `TableFull` for one of them (the
    // place is reserved before the probe knows; see the module doc). That edge is not what
    // this test is about; `full_table_edge` and the loom model `last_place_goes_to_exactly_
    // one_device` cover it.
    let t = Arc::new(table((DEVICES + WRITERS) as usize));
    let clock = Arc::new(StdAtomicU32::new(1_000_000));
    let stop = Arc::new(StdAtomicBool::new(false));
    let p = policy();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (t, clock, stop) = (t.clone(), clock.clone(), stop.clone());
            std::thread::spawn(move || {
                let seed = 0x5EED_0000 + w;
                let mut rng = Rng(seed);
                let mut newest_fix: HashMap<u64, u32> = HashMap::new();
                let mut newest_contact: HashMap<u64, u32> = HashMap::new();
                let mut updates = 0u64;
                while !stop.load(StdOrdering::Relaxed) {
                    let now = clock.load(StdOrdering::Relaxed);
                    // A third of the devices is active at a time, rotating every 300 s, so
                    // devices fall silent, expire and come back.
                    let phase = u64::from(now / 300) % 3;
                    let device = 1 + 3 * rng.below(DEVICES / 3) + phase;
                    if rng.below(4) == 0 {
                        t.record_contact(device, now).unwrap();
                        let c = newest_contact.entry(device).or_default();
                        *c = (*c).max(now);
                    } else {
                        // Mostly fresh fixes, some late ones, a few slightly in the future.
                        let lateness_max_s = if rng.below(8) == 0 { 400 } else { 30 };
                        let fix = (now + 5).saturating_sub(rng.below(lateness_max_s) as u32);
                        t.record_fix(device, fix).unwrap();
                        let f = newest_fix.entry(device).or_default();
                        *f = (*f).max(fix);
                    }
                    updates += 1;
                }
                println!("writer {w} (seed {seed:#x}): {updates} updates");
                (newest_fix, newest_contact)
            })
        })
        .collect();

    let mut events: Vec<SilenceEvent> = Vec::new();
    for _ in 0..SCANS {
        let now = clock.fetch_add(7, StdOrdering::Relaxed) + 7;
        t.scan(now, &p, &mut events).unwrap();
        // Let the writers run between scans (this machine may have fewer cores than threads).
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    stop.store(true, StdOrdering::Relaxed);
    let mut newest_fix: HashMap<u64, u32> = HashMap::new();
    let mut newest_contact: HashMap<u64, u32> = HashMap::new();
    for w in writers {
        let (fixes, contacts) = w.join().unwrap();
        for (d, f) in fixes {
            let e = newest_fix.entry(d).or_default();
            *e = (*e).max(f);
        }
        for (d, c) in contacts {
            let e = newest_contact.entry(d).or_default();
            *e = (*e).max(c);
        }
    }
    // A final scan sees every update; another one after it has nothing to say.
    let final_now = clock.load(StdOrdering::Relaxed) + 1;
    t.scan(final_now, &p, &mut events).unwrap();
    let mut again = Vec::new();
    t.scan(final_now, &p, &mut again).unwrap();
    assert!(again.is_empty(), "events after the final scan: {again:?}");

    let mut by_device: HashMap<u64, Vec<SilenceEvent>> = HashMap::new();
    for e in &events {
        by_device.entry(e.device_id).or_default().push(*e);
    }
    let (mut warned, mut expired, mut resumed) = (0, 0, 0);
    for e in &events {
        match e.kind {
            EventKind::Warned => warned += 1,
            EventKind::Expired => expired += 1,
            EventKind::Resumed { .. } => resumed += 1,
            EventKind::Confirmed { .. } | EventKind::NotJudged => {
                unreachable!("no confirmations or calendars in this run")
            }
        }
    }
    println!(
        "{} events: {warned} warned, {expired} expired, {resumed} resumed",
        events.len()
    );
    assert!(
        warned > 0 && expired > 0 && resumed > 0,
        "the stress run must exercise every transition"
    );

    let tracked: std::collections::HashSet<u64> = newest_fix
        .keys()
        .chain(newest_contact.keys())
        .copied()
        .collect();
    assert_eq!(t.len(), tracked.len());
    for &device in &tracked {
        let s = t.get(device).unwrap();
        assert_eq!(
            s.last_fix_s,
            newest_fix.get(&device).copied(),
            "device {device}"
        );
        assert_eq!(
            s.last_contact_s,
            newest_contact.get(&device).copied(),
            "device {device}"
        );
        let chain_end = check_chain(
            device,
            by_device.get(&device).map_or(&[][..], Vec::as_slice),
            &p,
        );
        assert_eq!(
            s.level, chain_end,
            "device {device}: final level differs from its events"
        );
        let since = s.last_fix_s.or(s.silent_since_s).unwrap();
        let judged = p.level(since, final_now);
        assert!(
            s.level == judged || (s.level == Level::Expired && judged == Level::Warned),
            "device {device}: level {:?} but policy says {judged:?}",
            s.level
        );
    }
    assert!(by_device.keys().all(|d| tracked.contains(d)));
}

// ---- model test: the table beside a trivial in-memory model ----

#[derive(Debug, Clone)]
enum Op {
    Fix { device: u64, at_s: u32 },
    Contact { device: u64, at_s: u32 },
    Scan { now_s: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let device = 1u64..=12;
    let time = 1u32..2_000;
    prop_oneof![
        3 => (device.clone(), time.clone()).prop_map(|(device, at_s)| Op::Fix { device, at_s }),
        2 => (device, time.clone()).prop_map(|(device, at_s)| Op::Contact { device, at_s }),
        2 => time.prop_map(|now_s| Op::Scan { now_s }),
    ]
}

#[derive(Debug, Default, Clone, Copy)]
struct ModelDevice {
    fix: u32,
    contact: u32,
    first_contact: u32,
    level: Option<Level>,
    since: u32,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn table_matches_model(devices_max in 1usize..10, ops in proptest::collection::vec(op(), 1..120)) {
        let t = table(devices_max);
        let p = policy();
        let mut model: HashMap<u64, ModelDevice> = HashMap::new();
        for op in ops {
            match op {
                Op::Fix { device, at_s } | Op::Contact { device, at_s } => {
                    let is_fix = matches!(op, Op::Fix { .. });
                    let result = if is_fix { t.record_fix(device, at_s) } else { t.record_contact(device, at_s) };
                    if !model.contains_key(&device) && model.len() == devices_max {
                        prop_assert_eq!(result, Err(RecordError::TableFull { devices_max }));
                        continue;
                    }
                    prop_assert_eq!(result, Ok(()));
                    let m = model.entry(device).or_default();
                    if is_fix {
                        m.fix = m.fix.max(at_s);
                    } else {
                        m.contact = m.contact.max(at_s);
                        if m.first_contact == 0 { m.first_contact = at_s; }
                    }
                }
                Op::Scan { now_s } => {
                    let mut out = Vec::new();
                    t.scan(now_s, &p, &mut out).unwrap();
                    let mut expected = Vec::new();
                    for (&device, m) in model.iter_mut() {
                        let prev = m.level.unwrap_or(Level::Reporting);
                        let from = if m.fix != 0 { m.fix } else if m.since != 0 { m.since } else { m.first_contact };
                        let fresh_fix = prev == Level::Reporting || from != m.since;
                        let next = next_level(prev, p.level(from, now_s), fresh_fix, false);
                        if next != Level::Reporting { m.since = from; }
                        if next != prev {
                            let kind = match next {
                                Level::Reporting => EventKind::Resumed { silent_since_s: m.since },
                                Level::Warned => EventKind::Warned,
                                Level::Expired => EventKind::Expired,
                            };
                            let threshold_level = if next == Level::Reporting { prev } else { next };
                            expected.push(SilenceEvent {
                                device_id: device,
                                policy: 0,
                                kind,
                                from: prev,
                                to: next,
                                last_fix_s: m.fix,
                                last_contact_s: m.contact,
                                at_s: now_s,
                                threshold_s: SilencePolicy::threshold_s(&p, device, threshold_level),
                            });
                        }
                        m.level = Some(next);
                    }
                    out.sort_by_key(|e| e.device_id);
                    expected.sort_by_key(|e| e.device_id);
                    prop_assert_eq!(out, expected);
                }
            }
        }
        prop_assert_eq!(t.len(), model.len());
        for (&device, m) in &model {
            let s = t.get(device).unwrap();
            prop_assert_eq!(s.last_fix_s, non_zero(m.fix));
            prop_assert_eq!(s.last_contact_s, non_zero(m.contact));
            prop_assert_eq!(s.level, m.level.unwrap_or(Level::Reporting));
        }
    }
}

#[test]
fn policy_set_scan_exemptions_confirmations_and_restart() {
    use crate::{
        ConfirmResets, Exemption, ExemptionTarget, Outage, PolicyDef, PolicySet, Threshold,
    };
    let def = PolicyDef {
        name: "default".into(),
        warning: Threshold::Duration { seconds: 100 },
        expiry: Threshold::Duration { seconds: 1_000 },
        confirm_resets: ConfirmResets::Warning,
    };
    let set = PolicySet::new(
        vec![def],
        "default",
        Vec::new(),
        vec![Exemption {
            target: ExemptionTarget::Device(2),
            from_s: None,
            until_s: None,
            reason: "lab".into(),
        }],
    )
    .unwrap();
    let t = SilenceTable::with_capacity(10).unwrap();
    t.record_fix(1, 1_000).unwrap();
    t.record_fix(2, 1_000).unwrap();
    let mut out = Vec::new();
    let stats = t.scan(1_150, &set.prepare(1_150), &mut out).unwrap();
    // Exempt device 2 raises nothing.
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].device_id, out[0].kind), (1, EventKind::Warned));
    assert_eq!(out[0].threshold_s, 100);
    assert_eq!(stats.exempt, 1);
    // A confirmation is reported exactly once and lifts the warning.
    t.record_confirmation(1, 1_160).unwrap();
    out.clear();
    t.scan(1_170, &set.prepare(1_170), &mut out).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].kind, out[0].from, out[0].to),
        (
            EventKind::Confirmed {
                confirmed_at_s: 1_160
            },
            Level::Warned,
            Level::Reporting
        )
    );
    out.clear();
    t.scan(1_180, &set.prepare(1_180), &mut out).unwrap();
    assert!(out.is_empty(), "{out:?}");
    // Warned again 100 s after the confirmation, expired 1000 s after the fix.
    t.scan(1_260, &set.prepare(1_260), &mut out).unwrap();
    assert_eq!(
        out.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Warned]
    );
    out.clear();
    // Snapshot at 1_900, server down until 5_000: restored, the outage is not counted.
    let mut buf = Vec::new();
    t.encode_snapshot(1_900, &[], &[], &mut buf);
    let u = SilenceTable::with_capacity(10).unwrap();
    let info = u.restore_snapshot(&buf).unwrap();
    let mut set2 = set.clone();
    set2.set_outages(
        vec![Outage {
            down_s: info.taken_s,
            up_s: 5_000,
        }],
        8,
    );
    u.scan(5_001, &set2.prepare(5_001), &mut out).unwrap();
    assert!(out.is_empty(), "a restart must not expire devices: {out:?}");
    // 1_000 s of counted silence: 900 before the outage, 100 after it.
    u.scan(5_100, &set2.prepare(5_100), &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].device_id, out[0].kind), (1, EventKind::Expired));
    out.clear();
    // A late batch with a fix inside the silent period but still old: nothing re-fires.
    u.record_fix(1, 1_050).unwrap();
    u.scan(5_200, &set2.prepare(5_200), &mut out).unwrap();
    assert!(out.is_empty());
    // A fresh fix closes the silence and records the interval.
    u.record_fix(1, 5_150).unwrap();
    u.scan(5_210, &set2.prepare(5_210), &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].kind,
        EventKind::Resumed {
            silent_since_s: 1_050
        }
    );
    assert_eq!(out[0].silent_interval_s(), Some(4_100));
}

/// Kinds and levels of a scan's events.
fn kinds(out: &[SilenceEvent]) -> Vec<(u64, EventKind, Level, Level)> {
    let mut v: Vec<_> = out
        .iter()
        .map(|e| (e.device_id, e.kind, e.from, e.to))
        .collect();
    v.sort_by_key(|e| e.0);
    v
}

#[test]
fn an_exemption_ending_never_lowers_a_level_without_a_fix() {
    use crate::{ConfirmResets, Exemption, ExemptionTarget, PolicyDef, PolicySet, Threshold};
    let def = PolicyDef {
        name: "default".into(),
        warning: Threshold::Duration { seconds: 100 },
        expiry: Threshold::Duration { seconds: 200 },
        confirm_resets: ConfirmResets::Warning,
    };
    let window = |device| Exemption {
        target: ExemptionTarget::Device(device),
        from_s: Some(1_300),
        until_s: Some(2_000),
        reason: "repair".into(),
    };
    let set = PolicySet::new(vec![def], "default", Vec::new(), vec![window(1), window(2)]).unwrap();
    let t = SilenceTable::with_capacity(10).unwrap();
    t.record_fix(1, 1_000).unwrap();
    t.record_fix(2, 1_100).unwrap();
    let mut out = Vec::new();
    let scan = |now: u32, out: &mut Vec<SilenceEvent>| {
        out.clear();
        t.scan(now, &set.prepare(now), out).unwrap();
    };
    scan(1_250, &mut out);
    assert_eq!(
        kinds(&out),
        [
            (1, EventKind::Expired, Level::Reporting, Level::Expired),
            (2, EventKind::Warned, Level::Reporting, Level::Warned)
        ]
    );
    // Inside the window: nothing.
    scan(1_500, &mut out);
    assert!(out.is_empty(), "{out:?}");
    // The window ended: silence now counts from its end, which judges both "reporting";
    // without a fix neither level goes down (before this fix both resumed here).
    scan(2_050, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(t.get(1).unwrap().level, Level::Expired);
    assert_eq!(t.get(2).unwrap().level, Level::Warned);
    // 200 s after the window's end device 2 expires; a fix resumes device 1.
    t.record_fix(1, 2_210).unwrap();
    scan(2_220, &mut out);
    assert_eq!(
        kinds(&out),
        [
            (
                1,
                EventKind::Resumed {
                    silent_since_s: 1_000
                },
                Level::Expired,
                Level::Reporting
            ),
            (2, EventKind::Expired, Level::Warned, Level::Expired)
        ]
    );
}

#[test]
fn a_here_answer_never_restarts_expiry_nor_un_expires() {
    use crate::{ConfirmResets, PolicyDef, PolicySet, Threshold};
    let def = PolicyDef {
        name: "default".into(),
        warning: Threshold::Duration { seconds: 100 },
        expiry: Threshold::Duration { seconds: 300 },
        confirm_resets: ConfirmResets::Warning,
    };
    let set = PolicySet::new(vec![def], "default", Vec::new(), Vec::new()).unwrap();
    let t = SilenceTable::with_capacity(10).unwrap();
    let mut out = Vec::new();
    let mut scan = |now: u32| {
        out.clear();
        t.scan(now, &set.prepare(now), &mut out).unwrap();
        kinds(&out)
    };
    t.record_fix(1, 1_000).unwrap();
    assert_eq!(
        scan(1_150),
        [(1, EventKind::Warned, Level::Reporting, Level::Warned)]
    );
    // A device that answers every request but never sends a position: each HERE lifts the
    // warning once, but the expiry stays counted from the fix.
    for (here, scan_at) in [(1_160, 1_170), (1_270, 1_280)] {
        t.record_confirmation(1, here).unwrap();
        let got = scan(scan_at);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(matches!(got[0].1, EventKind::Confirmed { .. }), "{got:?}");
    }
    assert_eq!(
        scan(1_300),
        [(1, EventKind::Expired, Level::Reporting, Level::Expired)]
    );
    // A late HERE on an expired device is reported once and leaves it expired.
    t.record_confirmation(1, 1_310).unwrap();
    assert_eq!(
        scan(1_320),
        [(
            1,
            EventKind::Confirmed {
                confirmed_at_s: 1_310
            },
            Level::Expired,
            Level::Expired
        )]
    );
    assert!(scan(1_330).is_empty());
    assert_eq!(t.get(1).unwrap().level, Level::Expired);
}

#[test]
fn past_coverage_is_refused_once_then_judged_again() {
    use crate::calendar::{Calendar, CalendarYear};
    use crate::{
        ConfirmResets, Counting, PastCoverage, PolicyDef, PolicySet, Threshold, WorkingDays,
    };
    let years = [
        include_str!("../../../config/calendars/ru/2025.toml"),
        include_str!("../../../config/calendars/ru/2026.toml"),
        include_str!("../../../config/calendars/ru/2027.toml"),
    ]
    .iter()
    .map(|text| CalendarYear::parse(text, "ru").unwrap())
    .collect();
    let cal = Arc::new(Calendar::from_years(years).unwrap());
    let wd = |n| {
        Threshold::WorkingDays(WorkingDays {
            n,
            time_zone: cal.time_zone().clone(),
            calendar: cal.clone(),
            counting: Counting::Instant,
        })
    };
    let def = PolicyDef {
        name: "ru".into(),
        warning: wd(1),
        expiry: wd(3),
        confirm_resets: ConfirmResets::Warning,
    };
    let t = |s: &str| u32::try_from(crate::parse_rfc3339(s).unwrap()).unwrap();
    let mut set = PolicySet::new(vec![def], "ru", Vec::new(), Vec::new()).unwrap();
    let table = SilenceTable::with_capacity(10).unwrap();
    // The issue's example: a last fix on Thu 2027-12-30, the calendar ends with 2027.
    table.record_fix(1, t("2027-12-30T12:00:00+03:00")).unwrap();
    let mut out = Vec::new();
    // Before the coverage ends the answers are known: the warning (Fri 31 Dec 12:00) is
    // inside it, and the expiry, which needs 2028 days, is not due before 2028 starts.
    let now = t("2027-12-31T23:00:00+03:00");
    let stats = table.scan(now, &set.prepare(now), &mut out).unwrap();
    assert_eq!(
        kinds(&out),
        [(1, EventKind::Warned, Level::Reporting, Level::Warned)]
    );
    assert_eq!(stats.past_coverage, 0);
    out.clear();
    // On 2028-01-05 only the unknown 2028 calendar could tell: not judged, reported once.
    let now = t("2028-01-05T12:00:00+03:00");
    let stats = table.scan(now, &set.prepare(now), &mut out).unwrap();
    assert_eq!(
        kinds(&out),
        [(1, EventKind::NotJudged, Level::Warned, Level::Warned)]
    );
    assert!(out[0].to_json_line("ru").contains(r#""kind":"not_judged""#));
    assert_eq!(stats.past_coverage, 1);
    out.clear();
    let stats = table
        .scan(now + 60, &set.prepare(now + 60), &mut out)
        .unwrap();
    assert!(out.is_empty(), "reported once: {out:?}");
    assert_eq!(stats.past_coverage, 1);
    // With past_coverage = weekends it is judged (weekends only): warned on Fri 31 Dec,
    // expired on Tue 2028-01-04 12:00, in the middle of what will be the New Year holidays.
    set.set_past_coverage(PastCoverage::Weekends);
    // The policy changed: the deadlines the old one gave no longer hold.
    table.policy_changed();
    let stats = table
        .scan(now + 120, &set.prepare(now + 120), &mut out)
        .unwrap();
    assert_eq!(
        kinds(&out),
        [(1, EventKind::Expired, Level::Warned, Level::Expired)]
    );
    assert_eq!(stats.past_coverage, 0);
    // Once the coverage has ended even a fresh fix cannot be judged (its count needs 2028):
    // the scan's fast path must not pass it as reporting.
    set.set_past_coverage(PastCoverage::Refuse);
    out.clear();
    table.record_fix(2, now).unwrap();
    table
        .scan(now + 180, &set.prepare(now + 180), &mut out)
        .unwrap();
    assert_eq!(
        kinds(&out),
        [
            // Device 1 was judged (by weekends) in between, so it is reported again.
            (1, EventKind::NotJudged, Level::Expired, Level::Expired),
            (2, EventKind::NotJudged, Level::Reporting, Level::Reporting)
        ]
    );
    out.clear();
    let stats = table
        .scan(now + 240, &set.prepare(now + 240), &mut out)
        .unwrap();
    assert!(out.is_empty(), "reported once: {out:?}");
    assert_eq!(
        (stats.past_coverage, stats.reporting, stats.expired),
        (2, 1, 1)
    );
    let expiry = set.policies()[0]
        .expiry
        .deadline_s(i64::from(t("2027-12-30T12:00:00+03:00")));
    assert_eq!(crate::rfc3339(expiry), "2028-01-04T09:00:00Z");
}

/// Every recorded confirmation gets exactly one event (docs/SILENCE.md, "Events"): a HERE, a
/// FIX naming a fresh batch, a FIX naming a batch no newer than the warning, a HERE that a
/// fix overtook before the scan, and one recorded while the device is reporting.
#[test]
fn every_confirmation_outcome_has_exactly_one_event() {
    let t = table(10);
    let p = policy();
    let mut out = vec![];
    let scan = |now: u32, out: &mut Vec<SilenceEvent>| {
        out.clear();
        t.scan(now, &p, out).unwrap();
        out.iter()
            .map(|e| (e.kind, e.from, e.to))
            .collect::<Vec<_>>()
    };
    t.record_fix(1, 1_000).unwrap();
    assert_eq!(scan(1_000, &mut out), []);
    assert_eq!(
        scan(1_100, &mut out),
        [(EventKind::Warned, Level::Reporting, Level::Warned)]
    );
    // FIX naming the batch that was already the newest fix (older than the warning): the
    // warning stays, and the confirmation is reported once, from = to = warned.
    t.record_confirmation(1, 1_000).unwrap();
    let old_fix = EventKind::Confirmed {
        confirmed_at_s: 1_000,
    };
    assert_eq!(
        scan(1_110, &mut out),
        [(old_fix, Level::Warned, Level::Warned)]
    );
    assert_eq!(scan(1_120, &mut out), [], "reported once");
    assert_eq!(
        t.confirmation(1),
        None,
        "superseded: dropped after its event"
    );
    // FIX naming a fresh batch: its fix ends the silence; that `resumed` is its one event.
    t.record_fix(1, 1_125).unwrap();
    t.record_confirmation(1, 1_125).unwrap();
    assert_eq!(
        scan(1_130, &mut out),
        [(
            EventKind::Resumed {
                silent_since_s: 1_000
            },
            Level::Warned,
            Level::Reporting
        )]
    );
    assert_eq!(scan(1_140, &mut out), []);
    // A HERE while reporting (nothing to lift): one `confirmed`, from = to = reporting, even
    // though a fix overtook it before the scan.
    t.record_confirmation(1, 1_150).unwrap();
    t.record_fix(1, 1_155).unwrap();
    let here = EventKind::Confirmed {
        confirmed_at_s: 1_150,
    };
    assert_eq!(
        scan(1_160, &mut out),
        [(here, Level::Reporting, Level::Reporting)]
    );
    assert_eq!(scan(1_170, &mut out), []);
    // A HERE on a warned device: one `confirmed`. (The v0 `Policy` ignores confirmations, so
    // it stays warned here; `policy_set_scan_exemptions_confirmations_and_restart` shows a
    // policy set lifting the warning in the same one event.)
    assert_eq!(
        scan(1_260, &mut out),
        [(EventKind::Warned, Level::Reporting, Level::Warned)]
    );
    t.record_confirmation(1, 1_265).unwrap();
    let here = EventKind::Confirmed {
        confirmed_at_s: 1_265,
    };
    assert_eq!(
        scan(1_270, &mut out),
        [(here, Level::Warned, Level::Warned)]
    );
    // A newer confirmation recorded while an older one is being reported is not lost.
    t.record_confirmation(1, 1_280).unwrap();
    assert_eq!(scan(1_290, &mut out).len(), 1);
    assert_eq!(scan(1_300, &mut out), []);
}

/// The rules policy's deadline (`judgement_until_s`) against brute force: for devices with
/// and without exemption windows, an outage and a confirmation, the judgement at every
/// second in `now..until` (up to 1,000 s) equals the one at `now`: a held device is never
/// judged too late.
#[test]
fn policy_set_judgement_until_is_never_late() {
    use crate::{
        ConfirmResets, Exemption, ExemptionTarget, Outage, PolicyDef, PolicySet, Threshold,
    };
    let def = PolicyDef {
        name: "default".into(),
        warning: Threshold::Duration { seconds: 100 },
        expiry: Threshold::Duration { seconds: 250 },
        confirm_resets: ConfirmResets::Warning,
    };
    let window = |device, from_s, until_s| Exemption {
        target: ExemptionTarget::Device(device),
        from_s,
        until_s,
        reason: "w".into(),
    };
    let mut set = PolicySet::new(
        vec![def],
        "default",
        Vec::new(),
        vec![
            window(2, Some(1_150), Some(1_300)),
            window(3, None, Some(1_120)),
            window(4, Some(1_400), None),
        ],
    )
    .unwrap();
    set.set_outages(
        vec![Outage {
            down_s: 1_200,
            up_s: 1_230,
        }],
        10,
    );
    let mut rng = Rng(7);
    for _ in 0..400 {
        let device = 1 + rng.below(4);
        let since = 1_000 + rng.below(300) as u32;
        let confirmed = if rng.below(3) == 0 {
            since + rng.below(200) as u32
        } else {
            0
        };
        let now = 1_000 + rng.below(700) as u32;
        let p = set.prepare(now);
        let at_now = p.judge(device, since, confirmed, now);
        let until = p.judgement_until_s(device, since, confirmed, now);
        assert!(until > now, "device {device} since {since} now {now}");
        for t in now..until.min(now + 1_000) {
            assert_eq!(
                set.prepare(t).judge(device, since, confirmed, t),
                at_now,
                "device {device} since {since} confirmed {confirmed} now {now} until {until} t {t}"
            );
        }
    }
}
