//! The table format end to end on a real directory and on the simulated file system:
//! commits, races, idempotent txns, checkpoints, time travel, compaction, vacuum grace,
//! retention, erasure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimestampMicrosecondType};
use lake::compact::{self, CompactOptions, Unpaced};
use lake::log::StringMap;
use lake::{
    Commit, CommitOutcome, FsStore, PartitionColumn, PartitionKind, Store, Table, TableError,
    TableOptions, TableSpec, VacuumOptions,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use sys::fs::{Fs, RealFs};
use sys::sim::SimFs;

const DAY_MS: i64 = 86_400_000;
/// 2026-11-25T00:00:00Z.
const T0_MS: i64 = 1_795_564_800_000;

fn spec() -> TableSpec {
    TableSpec {
        name: "t".into(),
        root: "t".into(),
        schema: Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("time", lake::schema::timestamp_utc(), false),
            Field::new("h3", DataType::Int64, false),
        ])),
        partition_columns: vec![PartitionColumn {
            name: "date".into(),
            kind: PartitionKind::Date,
        }],
    }
}

fn opts() -> TableOptions {
    TableOptions {
        checkpoint_interval_commits: 5,
        ..TableOptions::default()
    }
}

fn local() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::new(Arc::new(RealFs), dir.path()));
    (dir, store)
}

/// Rows `(id, time_us, h3)`, sorted by (h3, time) as the writer sorts them.
fn batch(mut rows: Vec<(i64, i64, i64)>) -> RecordBatch {
    rows.sort_by_key(|&(_, t, h)| (h, t));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    RecordBatch::try_new(spec().schema, cols).unwrap()
}

fn day(date: &str) -> StringMap {
    [("date".to_string(), Some(date.to_string()))].into()
}

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_max_row_group_row_count(Some(1_000))
        .build()
}

/// Appends one file of `rows` to `date` as one commit with txn `w = lsn`.
/// A table of `parts` one-row files `part-<v>.parquet` (row (v, v, v), lsn v), v = 1..=parts.
fn small_files(store: &Arc<dyn Store>, parts: i64) -> Table {
    let mut t = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    for v in 1..=parts {
        append(
            &mut t,
            &format!("part-{v}.parquet"),
            vec![(v, v, v)],
            v,
            T0_MS,
        );
    }
    t
}

fn append(t: &mut Table, name: &str, rows: Vec<(i64, i64, i64)>, lsn: i64, now: i64) -> u64 {
    let add = t
        .write_file(
            "date=2026-11-25",
            name,
            day("2026-11-25"),
            [Ok(batch(rows))],
            props(),
            true,
            now,
        )
        .unwrap();
    match t
        .commit(Commit::append(vec![add]).with_txn("w", lsn), now)
        .unwrap()
    {
        CommitOutcome::Committed { version } => version,
        other => panic!("{other:?}"),
    }
}

/// Every record batch of one of the table's files.
fn batches_of(t: &Table, path: &str) -> Vec<RecordBatch> {
    let bytes = bytes::Bytes::from(t.read_file(path).unwrap());
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every row of the snapshot's live files.
fn rows_of(t: &Table, snap: &lake::Snapshot) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    for path in snap.files.keys() {
        for b in batches_of(t, path) {
            let id = b.column(0).as_primitive::<Int64Type>();
            let time = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let h3 = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push((id.value(i), time.value(i), h3.value(i)));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn commits_time_travel_checkpoints_and_reopen() {
    let (_dir, store) = local();
    let mut t = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    assert_eq!(t.snapshot().version, 0);
    let mut all = Vec::new();
    for v in 1..=12i64 {
        let rows: Vec<_> = (0..10)
            .map(|i| (v * 100 + i, v * 1_000_000 + i, 7 + i % 3))
            .collect();
        all.extend(rows.clone());
        assert_eq!(
            append(&mut t, &format!("part-{v}.parquet"), rows, v, T0_MS + v),
            v as u64
        );
    }
    all.sort();
    assert_eq!(rows_of(&t, t.snapshot()), all);
    assert_eq!(t.snapshot().rows(), 120);
    // Checkpoints at 5 and 10; a new handle reads the same state through them.
    let names: Vec<String> = store
        .list("t/_delta_log")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert!(names.contains(&"t/_delta_log/00000000000000000010.checkpoint.parquet".into()));
    assert!(names.contains(&"t/_delta_log/_last_checkpoint".into()));
    let again = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    assert_eq!(again.snapshot(), t.snapshot());
    assert_eq!(again.snapshot().txn("w"), Some(12));
    // Time travel: version 3 holds exactly the first three appends.
    let v3 = t.load(3).unwrap();
    assert_eq!(v3.files.len(), 3);
    assert_eq!(rows_of(&t, &v3).len(), 30);
    assert_eq!(
        t.available_versions().unwrap(),
        (0..=12).collect::<Vec<_>>()
    );
}

#[test]
fn racing_writers_both_land_and_a_txn_is_never_applied_twice() {
    let (_dir, store) = local();
    let mut a = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    let mut b = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    assert_eq!(append(&mut a, "a1.parquet", vec![(1, 1, 1)], 1, T0_MS), 1);
    // b has not seen version 1: it loses the race, re-reads, and lands as 2.
    let add = b
        .write_file(
            "date=2026-11-25",
            "b1.parquet",
            day("2026-11-25"),
            [Ok(batch(vec![(2, 2, 2)]))],
            props(),
            true,
            T0_MS,
        )
        .unwrap();
    assert_eq!(
        b.commit(
            Commit::append(vec![add.clone()]).with_txn("other", 1),
            T0_MS
        )
        .unwrap(),
        CommitOutcome::Committed { version: 2 }
    );
    // Retrying a's commit (as after an IO error that hid its success) changes nothing.
    let again = Commit::append(vec![add]).with_txn("w", 1);
    assert!(matches!(
        a.commit(again, T0_MS).unwrap(),
        CommitOutcome::AlreadyCommitted { .. }
    ));
    a.refresh().unwrap();
    assert_eq!(a.snapshot().version, 2);
    assert_eq!(rows_of(&a, a.snapshot()), vec![(1, 1, 1), (2, 2, 2)]);
}

#[test]
fn a_changed_partition_layout_is_refused_with_a_clear_error() {
    let (_dir, store) = local();
    Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    let mut other = spec();
    other.partition_columns.push(PartitionColumn {
        name: "hour".into(),
        kind: PartitionKind::Int,
    });
    let e = Table::open(store.clone(), other, opts(), T0_MS).unwrap_err();
    assert!(matches!(e, TableError::LayoutChanged { .. }), "{e}");
    assert!(e.to_string().contains("[\"date\"]"), "{e}");
    // Parquet files without a log are refused too.
    let (_dir2, store2) = local();
    store2.put("t/date=2026-11-25/x.parquet", b"PAR1").unwrap();
    let e = Table::open(store2, spec(), opts(), T0_MS).unwrap_err();
    assert!(
        matches!(e, TableError::UntrackedData { files: 1, .. }),
        "{e}"
    );
}

fn compact_opts() -> CompactOptions {
    CompactOptions {
        target_file_bytes: 1 << 30,
        min_files: 4,
        min_file_age_ms: 0,
        row_group_rows: 1_000,
    }
}

#[test]
fn compaction_merges_sorted_commits_atomically_and_vacuum_keeps_the_grace() {
    let (dir, store) = local();
    let mut t = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    for v in 1..=6i64 {
        let rows: Vec<_> = (0..50)
            .map(|i| (v * 1000 + i, (50 - i) * 10 + v, (i * 7919) % 97))
            .collect();
        append(&mut t, &format!("part-{v}.parquet"), rows, v, T0_MS);
    }
    let before = rows_of(&t, t.snapshot());
    let v_before = t.snapshot().version;
    let jobs = compact::plan(t.snapshot(), &compact_opts(), T0_MS + 1);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].inputs.len(), 6);
    let out = compact::execute(
        &mut t,
        &jobs[0],
        "compact-1.parquet",
        &["h3", "time"],
        props(),
        &mut Unpaced,
        T0_MS + 1,
    )
    .unwrap();
    assert_eq!(out.rows, 300);
    assert_eq!(t.snapshot().files.len(), 1);
    assert_eq!(rows_of(&t, t.snapshot()), before);
    // The output is sorted by (h3, time).
    let mut keys = Vec::new();
    for b in batches_of(&t, &out.output) {
        let time = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let h3 = b.column(2).as_primitive::<Int64Type>();
        keys.extend((0..b.num_rows()).map(|i| (h3.value(i), time.value(i))));
    }
    assert!(keys.windows(2).all(|w| w[0] <= w[1]));
    // Time travel to before the compaction reads the small files during the grace.
    assert_eq!(rows_of(&t, &t.load(v_before).unwrap()), before);
    let grace = VacuumOptions {
        superseded_grace_ms: 60_000,
        untracked_grace_ms: 60_000,
        log_retention_ms: 3_600_000,
    };
    let r = t.vacuum(grace, T0_MS + 30_000).unwrap();
    assert_eq!(r.superseded_deleted, 0, "inside the grace period");
    let r = t.vacuum(grace, T0_MS + 61_001).unwrap();
    assert_eq!(r.superseded_deleted, 6);
    // A reader that ignores the log now sees exactly the table.
    let parquet: Vec<_> = walk(&dir.path().join("t"));
    assert_eq!(parquet, vec![dir.path().join("t").join(&out.output)]);
    // Time travel past the vacuum: the log still reconstructs the version, but its files
    // are gone, and reading them says so.
    let old = t.load(v_before).unwrap();
    let e = t.read_file(old.files.keys().next().unwrap()).unwrap_err();
    assert!(
        matches!(e, TableError::Store { ref source, .. } if source.is_not_found()),
        "{e}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if !p.ends_with("_delta_log") {
                out.extend(walk(&p));
            }
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn compaction_loses_a_race_against_a_delete_and_leaves_the_table_unchanged() {
    let (_dir, store) = local();
    let mut t = small_files(&store, 4);
    let jobs = compact::plan(t.snapshot(), &compact_opts(), T0_MS);
    let mut other = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    other
        .commit(
            Commit {
                operation: "DELETE".into(),
                removes: vec![jobs[0].inputs[0].clone()],
                ..Commit::default()
            },
            T0_MS,
        )
        .unwrap();
    let e = compact::execute(
        &mut t,
        &jobs[0],
        "c.parquet",
        &["h3", "time"],
        props(),
        &mut Unpaced,
        T0_MS,
    )
    .unwrap_err();
    assert!(matches!(e, TableError::Conflict { .. }), "{e}");
    assert!(
        t.read_file("date=2026-11-25/c.parquet").is_err(),
        "the uncommitted output is deleted"
    );
    assert_eq!(rows_of(&t, t.snapshot()).len(), 3);
}

#[test]
fn planner_packs_by_target_and_waits_for_the_day_or_enough_files() {
    let (_dir, store) = local();
    let t = small_files(&store, 3);
    // 3 small files of today, min_files 4: wait.
    assert!(compact::plan(t.snapshot(), &compact_opts(), T0_MS).is_empty());
    // The next day: the day is over, merge what there is.
    assert_eq!(
        compact::plan(t.snapshot(), &compact_opts(), T0_MS + DAY_MS).len(),
        1
    );
    // Too young: wait.
    let young = CompactOptions {
        min_file_age_ms: 2 * DAY_MS as u64,
        ..compact_opts()
    };
    assert!(compact::plan(t.snapshot(), &young, T0_MS + DAY_MS).is_empty());
    // A target smaller than two files: each job holds as many as fit.
    let size = t.snapshot().files.values().next().unwrap().size as u64;
    let tight = CompactOptions {
        target_file_bytes: 2 * size + 3,
        min_files: 2,
        ..compact_opts()
    };
    let jobs = compact::plan(t.snapshot(), &tight, T0_MS);
    assert_eq!(
        jobs.iter().map(|j| j.inputs.len()).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn retention_and_erasure_are_commits_and_erasure_forgets_history() {
    let (dir, store) = local();
    let mut t = Table::open(store.clone(), spec(), opts(), T0_MS).unwrap();
    let secret = 0x5EC2_E70D_DEAD_BEEF_i64 & i64::MAX;
    for v in 1..=7i64 {
        append(
            &mut t,
            &format!("part-{v}.parquet"),
            vec![(v, v, v), (secret, v, 40 + v)],
            v,
            T0_MS,
        );
    }
    let report = t
        .erase_rows("id", secret, props(), "erase-1", T0_MS + 5)
        .unwrap();
    assert_eq!(report.rows_removed, 7);
    assert_eq!(report.files_rewritten, 7);
    assert!(rows_of(&t, t.snapshot()).iter().all(|r| r.0 != secret));
    assert_eq!(rows_of(&t, t.snapshot()).len(), 7);
    // No file under the table holds the id in any encoding a byte scan can see (the test
    // files are not compressed) and the log names none of its statistics.
    let needles = [
        secret.to_le_bytes().to_vec(),
        secret.to_string().into_bytes(),
    ];
    for f in all_files(&dir.path().join("t")) {
        let bytes = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{} holds the id",
                f.display()
            );
        }
    }
    assert_eq!(t.available_versions().unwrap(), vec![t.snapshot().version]);
    // Retention: everything dated 2026-11-25 goes once it is more than 1 day old.
    assert_eq!(t.apply_retention(1, T0_MS + DAY_MS).unwrap(), 0);
    assert_eq!(t.apply_retention(1, T0_MS + 2 * DAY_MS).unwrap(), 7);
    assert!(t.snapshot().files.is_empty());
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A commit is visible whole or not at all at every crash point, and never twice.
#[test]
fn commit_survives_or_vanishes_whole_at_every_crash_point() {
    let probe = SimFs::new();
    probe.create_dir_all(Path::new("/d")).unwrap();
    let run = |fs: &SimFs| -> Result<(), TableError> {
        let store: Arc<dyn Store> = Arc::new(FsStore::new(Arc::new(fs.clone()), "/d"));
        let mut t = Table::open(store, spec(), opts(), T0_MS)?;
        for v in 1..=3i64 {
            let add = t.write_file(
                "date=2026-11-25",
                &format!("p{v}.parquet"),
                day("2026-11-25"),
                [Ok(batch(vec![(v, v, v)]))],
                props(),
                true,
                T0_MS,
            )?;
            t.commit(Commit::append(vec![add]).with_txn("w", v), T0_MS)?;
        }
        Ok(())
    };
    run(&probe).unwrap();
    let total = probe.ops();
    for n in 0..total {
        for seed in 0..3 {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/d")).unwrap();
            fs.sync_dir(Path::new("/")).unwrap();
            fs.crash_at_op(fs.ops() + n);
            let _ = run(&fs);
            let image = fs.crash_image(seed);
            let store: Arc<dyn Store> = Arc::new(FsStore::new(Arc::new(image.clone()), "/d"));
            let t = match Table::open(store, spec(), opts(), T0_MS) {
                Ok(t) => t,
                Err(e) => panic!("op {n} seed {seed}: reopen failed: {e}"),
            };
            let lsn = t.snapshot().txn("w").unwrap_or(0);
            let rows = rows_of(&t, t.snapshot());
            let want: Vec<_> = (1..=lsn).map(|v| (v, v, v)).collect();
            assert_eq!(
                rows, want,
                "op {n} seed {seed}: the table's rows match its txn"
            );
        }
    }
}
