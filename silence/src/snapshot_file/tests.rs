#![allow(clippy::unwrap_used)]

use sys::sim::SimFs;

use super::*;
use crate::{DeviceState, Policy};

const DEVICES: [u64; 4] = [5, 6, 7, 8];

/// `EIO` on Linux (the errno the injected failures carry).
const EIO: i32 = 5;

/// What a restore must bring back: every device's state, its pending confirmation, and the
/// snapshot's time and outages.
#[derive(Debug, PartialEq, Eq)]
struct Restored {
    taken_s: u32,
    outages: Vec<Outage>,
    devices: Vec<(Option<DeviceState>, Option<u32>)>,
}

fn state(t: &SilenceTable, taken_s: u32, outages: &[Outage]) -> Restored {
    Restored {
        taken_s,
        outages: outages.to_vec(),
        devices: DEVICES
            .iter()
            .map(|&d| (t.get(d), t.confirmation(d)))
            .collect(),
    }
}

fn restore(fs: &SimFs, data: &Path) -> Restored {
    let file = SnapshotFile::new(Arc::new(fs.clone()), data);
    let bytes = file.load().unwrap().expect("a snapshot is always there");
    let t = SilenceTable::with_capacity(100).unwrap();
    let info = t.restore_snapshot(&bytes).unwrap();
    state(&t, info.taken_s, &info.outages)
}

/// A data directory holding the old snapshot, durably, and the table that goes on to the new
/// state; returns the two states expected after a restore.
fn setup() -> (SimFs, SilenceTable, Restored, Restored) {
    let fs = SimFs::new();
    let data = Path::new("/data");
    fs.create_dir_all(data).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let file = SnapshotFile::new(Arc::new(fs.clone()), data);
    let t = SilenceTable::with_capacity(100).unwrap();
    t.record_contact(5, 900).unwrap();
    t.record_fix(5, 1_000).unwrap();
    t.record_contact(6, 1_100).unwrap();
    let old_outages = [Outage {
        down_s: 10,
        up_s: 20,
    }];
    let mut buf = Vec::new();
    file.save(&t, 2_000, &old_outages, &[], &mut buf).unwrap();
    let old = state(&t, 2_000, &old_outages);
    // The new state: a scan moved levels, a device is new, one confirmed.
    t.record_fix(7, 5_000).unwrap();
    t.scan(5_050, &Policy::new(100, 1_000).unwrap(), &mut Vec::new())
        .unwrap();
    t.record_contact(8, 5_055).unwrap();
    t.record_confirmation(7, 5_060).unwrap();
    let new = state(&t, 6_000, &NEW_OUTAGES);
    assert_ne!(old, new);
    (fs, t, old, new)
}

const NEW_OUTAGES: [Outage; 2] = [
    Outage {
        down_s: 10,
        up_s: 20,
    },
    Outage {
        down_s: 3_000,
        up_s: 4_000,
    },
];

/// Mutating file operations of one save (directory check, temporary file, write, fsync,
/// rename, directory fsync).
fn ops_of_one_save() -> u64 {
    let (fs, t, _, _) = setup();
    let before = fs.ops();
    SnapshotFile::new(Arc::new(fs.clone()), Path::new("/data"))
        .save(&t, 6_000, &NEW_OUTAGES, &[], &mut Vec::new())
        .unwrap();
    fs.ops() - before
}

/// A power loss at every operation of a save, with several choices of what the disk kept:
/// the restored state is the old snapshot or the new one, never a mix and never refused; once
/// the save returned `Ok` it is the new one.
#[test]
fn a_crash_at_every_operation_of_a_save_restores_the_old_or_the_new_snapshot() {
    let ops = ops_of_one_save();
    assert!(
        ops >= 5,
        "mkdir check, create, write, fsync, rename, dir fsync: {ops}"
    );
    let data = Path::new("/data");
    for crash_at in 0..=ops {
        for seed in 0..16 {
            let (fs, t, old, new) = setup();
            fs.crash_at_op(fs.ops() + crash_at);
            let saved = SnapshotFile::new(Arc::new(fs.clone()), data)
                .save(&t, 6_000, &NEW_OUTAGES, &[], &mut Vec::new())
                .is_ok();
            assert_eq!(saved, crash_at == ops, "crash at +{crash_at}");
            let got = restore(&fs.crash_image(seed), data);
            assert!(
                got == old || got == new,
                "crash at +{crash_at}, seed {seed}: {got:?}"
            );
            if saved {
                assert_eq!(got, new, "a save that returned Ok is durable (seed {seed})");
            }
        }
    }
}

/// A save failing at any one operation reports the error and leaves the old snapshot in
/// place (only a failure of the final directory fsync, after the rename, leaves the new one
/// visible, its durability unknown); the next save (the scanner's next snapshot time) writes
/// the new one.
#[test]
fn a_failed_save_keeps_the_old_snapshot_and_the_next_save_succeeds() {
    let ops = ops_of_one_save();
    let data = Path::new("/data");
    for fail_at in 0..ops {
        let (fs, t, old, new) = setup();
        fs.fail_at_op(fs.ops() + fail_at, EIO);
        let file = SnapshotFile::new(Arc::new(fs.clone()), data);
        let err = file
            .save(&t, 6_000, &NEW_OUTAGES, &[], &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO), "fail at +{fail_at}");
        let after_rename = fail_at == ops - 1;
        let expect = if after_rename { &new } else { &old };
        assert_eq!(&restore(&fs, data), expect, "fail at +{fail_at}");
        file.save(&t, 6_000, &NEW_OUTAGES, &[], &mut Vec::new())
            .unwrap();
        assert_eq!(
            restore(&fs, data),
            new,
            "retry after a failure at +{fail_at}"
        );
        assert_eq!(restore(&fs.crash_image(fail_at), data), new);
    }
}

#[test]
fn no_snapshot_yet_is_none() {
    let fs = SimFs::new();
    let file = SnapshotFile::new(Arc::new(fs), Path::new("/data"));
    assert_eq!(file.load().unwrap(), None);
    assert_eq!(file.path(), Path::new("/data/silence/snapshot.bin"));
}

#[test]
fn atomic_write_replaces_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = SnapshotFile::new(Arc::new(sys::fs::RealFs), dir.path());
    let p = SnapshotFile::path_in(dir.path());
    assert_eq!(file.load().unwrap(), None);
    file.write(b"first").unwrap();
    file.write(b"second").unwrap();
    assert_eq!(file.load().unwrap().as_deref(), Some(&b"second"[..]));
    assert!(!sys::fs::tmp_path(&p).exists());
}
