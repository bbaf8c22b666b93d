//! Fault injection at every file operation of the WAL → Parquet path, over
//! the simulated file system `sys::sim::SimFs` (see its module doc for the
//! crash model: un-fsynced data and names may be lost or kept, torn appends).
//!
//! Invariant checked after every crash: recovery succeeds; every batch whose
//! callback said `Stored`/`Duplicate` is answered `Duplicate` when resent (its
//! dedup state survived) and, after a graceful shutdown, every batch of the
//! workload is in Parquet exactly once; every Parquet file is readable; no
//! `.tmp` file and no WAL segment is left; a second restart replays nothing.
//!
//! A failure prints the crash point `N`, the seed and the last operations;
//! `HEXFLOW_FAULT_SEED` changes the base seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use proptest::prelude::*;
use storage::wal::{self, FileSink, HEADER_LEN, LogSink};
use storage::{CommitError, Committed, FixBatch, Storage, StorageConfig, SubmitError};
use sys::fs::Fs;
use sys::sim::{OpKind, SimFs};

/// 2026-11-24T23:58:00Z: the workload crosses midnight, so two partitions.
const BASE_MS: i64 = 1_795_564_680_000;
const FIXES: usize = 20;

fn data_dir() -> PathBuf {
    PathBuf::from("/sim/data")
}

fn batch(device_id: u64, seq: u64) -> FixBatch {
    storage::synthetic::batch(device_id, seq, BASE_MS, FIXES)
}

fn config() -> StorageConfig {
    StorageConfig {
        data_dir: data_dir(),
        wal_group_commit_delay_us: 0,
        flush_interval_ms: 60_000,
        flush_retry_ms: 1,
        shutdown_flush_attempts: 3,
        batch_fixes_max: 100,
        flush_rows_max: 120,
        row_group_rows_max: 64,
        ..StorageConfig::default()
    }
}

/// 3 devices × 8 batches, interleaved: 24 batches, a flush every 6.
fn workload() -> Vec<(u64, u64)> {
    (1..=8u64)
        .flat_map(|seq| (1..=3u64).map(move |d| (d, seq)))
        .collect()
}

type Outcome = Result<Committed, CommitError>;

/// Submits one batch and waits for its callback (None: refused by submit).
fn submit_wait(storage: &Storage, b: FixBatch) -> Option<Outcome> {
    let (tx, rx) = mpsc::channel();
    loop {
        let tx = tx.clone();
        match storage.submit(
            b.clone(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        ) {
            Ok(()) => break,
            Err(SubmitError::Overloaded { .. }) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return None,
        }
    }
    Some(
        rx.recv_timeout(Duration::from_secs(30))
            .expect("every callback runs"),
    )
}

fn is_ack(o: &Option<Outcome>) -> bool {
    matches!(o, Some(Ok(Committed::Stored { .. } | Committed::Duplicate)))
}

/// The data files under `positions/` (not the Delta log): what a reader that ignores
/// the log sees.
fn data_files(fs: &SimFs, dir: &Path) -> Vec<PathBuf> {
    let positions = dir.join("positions");
    fs.files_under(&positions)
        .into_iter()
        .filter(|p| !p.starts_with(positions.join("_delta_log")))
        .collect()
}

/// (device, seq, time_us) -> occurrences, over the live files of the `positions` table;
/// panics on an unreadable file, and when a reader that ignores the log would see other
/// files than the table holds.
fn read_parquet(fs: &SimFs, dir: &Path) -> BTreeMap<(i64, i64, i64), usize> {
    let live = storage::positions_files(Arc::new(fs.clone()), dir, Default::default())
        .expect("the positions table opens");
    assert_eq!(
        data_files(fs, dir),
        live,
        "a reader that ignores the log sees other files than the table"
    );
    let mut rows = BTreeMap::new();
    for path in live {
        let bytes = bytes::Bytes::from(fs.read(&path).expect("read"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()))
            .build()
            .expect("reader");
        for rb in reader {
            let rb: RecordBatch = rb.expect("record batch");
            let col = |name: &str| rb.column_by_name(name).expect("column").clone();
            let (device, seq, time) = (col("device_id"), col("batch_seq"), col("time"));
            let (device, seq) = (
                device.as_primitive::<Int64Type>(),
                seq.as_primitive::<Int64Type>(),
            );
            let time = time.as_primitive::<TimestampMicrosecondType>();
            for i in 0..rb.num_rows() {
                *rows
                    .entry((device.value(i), seq.value(i), time.value(i)))
                    .or_insert(0) += 1;
            }
        }
    }
    rows
}

fn expected(batches: &[(u64, u64)]) -> BTreeMap<(i64, i64, i64), usize> {
    storage::synthetic::expected_rows(batches, BASE_MS, FIXES)
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Power loss at op N.
    Crash,
    /// Op N fails with EIO, the run goes on, then a power loss at the end.
    Fail,
}

/// Runs the workload with a fault at op `n`, recovers from a crash image and
/// checks the invariant. Returns the number of ops the first run executed.
fn run_one(mode: Mode, n: u64, seed: u64) -> Result<u64, String> {
    let fs = SimFs::new();
    match mode {
        Mode::Crash => fs.crash_at_op(n),
        Mode::Fail => fs.fail_at_op(n, libc::EIO),
    }
    let mut acked = Vec::new();
    if let Ok((storage, _)) = Storage::open_with_fs(config(), Arc::new(fs.clone())) {
        for (d, s) in workload() {
            let out = submit_wait(&storage, batch(d, s));
            if is_ack(&out) {
                acked.push((d, s));
            } else if fs.crashed() {
                break;
            }
        }
        storage.abandon().map_err(|e| format!("abandon: {e}"))?;
    }
    let ops = fs.ops();
    let image = fs.crash_image(seed);
    let (storage, report) = Storage::open_with_fs(config(), Arc::new(image.clone()))
        .map_err(|e| format!("recovery failed: {e}"))?;
    for (d, s) in workload() {
        let out = submit_wait(&storage, batch(d, s));
        let want_dup = acked.contains(&(d, s));
        match out {
            Some(Ok(Committed::Duplicate)) => {}
            Some(Ok(Committed::Stored { .. })) if !want_dup => {}
            other => {
                return Err(format!(
                    "resend of ({d}, {s}) (acked before: {want_dup}) got {other:?}; {report:?}"
                ));
            }
        }
    }
    storage.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    let rows = read_parquet(&image, &data_dir());
    if rows != expected(&workload()) {
        let extra: Vec<_> = rows.iter().filter(|&(_, &c)| c != 1).take(3).collect();
        return Err(format!(
            "parquet holds {} distinct rows (want {}), duplicated: {extra:?}; {report:?}",
            rows.len(),
            FIXES * workload().len()
        ));
    }
    let leftovers: Vec<_> = image
        .files_under(&data_dir())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".tmp") || name.ends_with(".log")
        })
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("left after shutdown: {leftovers:?}"));
    }
    // A power loss right after the clean shutdown: nothing to replay.
    let again = image.crash_image(seed ^ 0x5555);
    let (storage, report) = Storage::open_with_fs(config(), Arc::new(again))
        .map_err(|e| format!("reopen after shutdown: {e}"))?;
    if report.records_replayed != 0 {
        return Err(format!("replayed after a clean shutdown: {report:?}"));
    }
    storage
        .shutdown()
        .map_err(|e| format!("second shutdown: {e}"))?;
    Ok(ops)
}

fn base_seed() -> u64 {
    std::env::var("HEXFLOW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee)
}

fn sweep(mode: Mode) {
    let base = base_seed();
    // A run without a fault counts the operations of the workload.
    let total = run_one(mode, u64::MAX, base).expect("run without a fault");
    assert!(
        total > 60,
        "the workload should do many operations: {total}"
    );
    let mut failures = Vec::new();
    for n in 0..total {
        let seed = base.wrapping_add(n.wrapping_mul(0x9e37_79b9));
        match std::panic::catch_unwind(|| run_one(mode, n, seed)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("{mode:?} at op N={n}, seed={seed}: {e}")),
            Err(_) => failures.push(format!("{mode:?} at op N={n}, seed={seed}: panicked")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} fault points broke the invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn crash_at_every_operation_keeps_every_ack() {
    sweep(Mode::Crash);
}

#[test]
fn failure_at_every_operation_keeps_every_ack() {
    sweep(Mode::Fail);
}

fn write_segment(fs: &SimFs, first_lsn: u64, batches: &[FixBatch]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    wal::encode_header(first_lsn, &mut bytes);
    let mut ends = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        wal::encode_record(b, first_lsn + i as u64, &mut bytes);
        ends.push(bytes.len());
    }
    let path = data_dir()
        .join("wal")
        .join(wal::segment_file_name(first_lsn));
    fs.put_durable(&path, &bytes);
    (bytes, ends)
}

#[test]
fn torn_tail_at_every_byte_goes_through_open() {
    let batches: Vec<FixBatch> = (1..=3).map(|s| batch(1, s)).collect();
    let (bytes, ends) = write_segment(&SimFs::new(), 1, &batches);
    let path = data_dir().join("wal").join(wal::segment_file_name(1));
    for cut in 0..bytes.len() {
        let fs = SimFs::new();
        fs.put_durable(&path, &bytes[..cut]);
        let (storage, report) = Storage::open_with_fs(config(), Arc::new(fs.clone()))
            .unwrap_or_else(|e| panic!("cut {cut}: open failed: {e}"));
        let complete = ends.iter().filter(|&&end| end <= cut).count() as u64;
        assert_eq!(report.records_replayed, complete, "cut {cut}");
        assert_eq!(report.next_lsn, complete + 1, "cut {cut}");
        let torn = report.torn_tail.clone();
        let boundary = cut == HEADER_LEN || ends.contains(&cut);
        assert_eq!(torn.is_none(), boundary, "cut {cut}: {torn:?}");
        if let Some(t) = torn {
            let valid = if cut < HEADER_LEN {
                0
            } else {
                *ends
                    .iter()
                    .rev()
                    .find(|&&e| e <= cut)
                    .unwrap_or(&HEADER_LEN)
            };
            assert_eq!(t.valid_len, valid as u64, "cut {cut}");
            assert_eq!(t.discarded_bytes, (cut - valid) as u64, "cut {cut}");
        }
        // A new batch gets the next lsn, and exactly the complete records
        // plus it reach Parquet.
        let out = submit_wait(&storage, batch(2, 1));
        assert_eq!(out, Some(Ok(Committed::Stored { lsn: complete + 1 })));
        storage.shutdown().expect("shutdown");
        let mut want: Vec<(u64, u64)> = (1..=complete).map(|s| (1, s)).collect();
        want.push((2, 1));
        assert_eq!(read_parquet(&fs, &data_dir()), expected(&want), "cut {cut}");
    }
}

#[test]
fn wal_disk_full_is_refused_then_resumes_by_itself() {
    let fs = SimFs::new();
    let (storage, _) = Storage::open_with_fs(config(), Arc::new(fs.clone())).expect("open");
    assert_eq!(
        submit_wait(&storage, batch(1, 1)),
        Some(Ok(Committed::Stored { lsn: 1 }))
    );
    // Room for less than one more record.
    fs.set_capacity_bytes(Some(fs.used_bytes() + 100));
    let refused = submit_wait(&storage, batch(1, 2));
    assert_eq!(refused, Some(Err(CommitError::DiskFull)));
    assert_eq!(
        submit_wait(&storage, batch(2, 1)),
        Some(Err(CommitError::DiskFull))
    );
    assert!(!storage.stats().wal_failed, "ENOSPC is not fatal");
    // Space returns: the same batches are accepted, with the next lsns.
    fs.set_capacity_bytes(None);
    assert_eq!(
        submit_wait(&storage, batch(1, 2)),
        Some(Ok(Committed::Stored { lsn: 2 }))
    );
    assert_eq!(
        submit_wait(&storage, batch(2, 1)),
        Some(Ok(Committed::Stored { lsn: 3 }))
    );
    storage.shutdown().expect("shutdown");
    assert_eq!(
        read_parquet(&fs, &data_dir()),
        expected(&[(1, 1), (1, 2), (2, 1)])
    );
}

#[test]
fn parquet_disk_full_retries_the_flush_and_loses_nothing() {
    let fs = SimFs::new();
    let (storage, _) = Storage::open_with_fs(config(), Arc::new(fs.clone())).expect("open");
    let positions = data_dir().join("positions");
    fs.fail_under(OpKind::Write, &positions, libc::ENOSPC);
    // 7 batches of 20 rows cross flush_rows_max = 120: the flush fails.
    let batches: Vec<(u64, u64)> = (1..=7).map(|s| (1, s)).collect();
    for &(d, s) in &batches {
        assert!(is_ack(&submit_wait(&storage, batch(d, s))));
    }
    let mut waited_ms = 0;
    while storage.stats().flush_failures < 3 {
        assert!(waited_ms < 10_000, "the flush is not retried");
        std::thread::sleep(Duration::from_millis(5));
        waited_ms += 5;
    }
    assert_eq!(storage.stats().files_written, 0);
    fs.clear_path_faults();
    while storage.stats().files_written == 0 {
        assert!(waited_ms < 20_000, "the flush did not resume");
        std::thread::sleep(Duration::from_millis(5));
        waited_ms += 5;
    }
    storage.shutdown().expect("shutdown");
    assert_eq!(read_parquet(&fs, &data_dir()), expected(&batches));
    assert!(
        data_files(&fs, &data_dir())
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "parquet")),
        "a failed attempt left a temporary file"
    );
}

#[test]
fn failed_wal_fsync_is_fatal_never_retried_never_acked() {
    let fs = SimFs::new();
    let (storage, _) = Storage::open_with_fs(config(), Arc::new(fs.clone())).expect("open");
    assert!(is_ack(&submit_wait(&storage, batch(1, 1))));
    let wal_dir = data_dir().join("wal");
    fs.fail_under(OpKind::SyncFile, &wal_dir, libc::EIO);
    let failed = Some(Err(CommitError::WalFailed {
        errno: Some(libc::EIO),
    }));
    assert_eq!(submit_wait(&storage, batch(1, 2)), failed);
    let ops_after_failure = fs.ops();
    fs.clear_path_faults();
    // The disk "works" again, but the page cache cannot be trusted: refused.
    assert_eq!(submit_wait(&storage, batch(1, 3)), failed);
    assert_eq!(submit_wait(&storage, batch(2, 1)), failed);
    assert!(storage.stats().wal_failed);
    let later_wal_syncs = fs.trace()[ops_after_failure as usize..]
        .iter()
        .filter(|op| op.kind == OpKind::SyncFile && op.path.starts_with(&wal_dir))
        .count();
    assert_eq!(later_wal_syncs, 0, "a failed fsync must never be retried");
    storage.abandon().expect("stop");
    // After a restart the acked batch is there; the unacked one may or may
    // not be (it reached the page cache) but a resend settles it exactly once.
    for seed in 0..8 {
        let image = fs.crash_image(seed);
        let (storage, _) = Storage::open_with_fs(config(), Arc::new(image.clone())).expect("open");
        assert_eq!(
            submit_wait(&storage, batch(1, 1)),
            Some(Ok(Committed::Duplicate))
        );
        assert!(is_ack(&submit_wait(&storage, batch(1, 2))));
        storage.shutdown().expect("shutdown");
        assert_eq!(
            read_parquet(&image, &data_dir()),
            expected(&[(1, 1), (1, 2)])
        );
    }
}

/// Two fresh data directories holding the same WAL segments replay to
/// byte-identical Parquet data files (same names, same bytes; the Delta log differs
/// only in the table id and the commit times).
#[test]
fn replaying_the_same_wal_twice_is_byte_identical() {
    let images: Vec<SimFs> = (0..2).map(|_| SimFs::new()).collect();
    let mut trees = Vec::new();
    for fs in &images {
        let first: Vec<FixBatch> = workload()[..10].iter().map(|&(d, s)| batch(d, s)).collect();
        let second: Vec<FixBatch> = workload()[10..].iter().map(|&(d, s)| batch(d, s)).collect();
        write_segment(fs, 1, &first);
        write_segment(fs, 11, &second);
        let cfg = StorageConfig {
            flush_rows_max: 1_000,
            ..config()
        };
        let (storage, report) = Storage::open_with_fs(cfg, Arc::new(fs.clone())).expect("open");
        assert_eq!(report.records_replayed, 24);
        storage.shutdown().expect("shutdown");
        let tree: Vec<(PathBuf, Vec<u8>)> = data_files(fs, &data_dir())
            .into_iter()
            .map(|p| {
                let bytes = fs.read(&p).expect("read");
                (p, bytes)
            })
            .collect();
        trees.push(tree);
    }
    assert_eq!(trees[0].len(), 2, "two date partitions");
    assert_eq!(trees[0], trees[1]);
    // Nothing run-dependent in the footer: only the fixed writer id and the
    // Arrow schema.
    let bytes = bytes::Bytes::from(trees[0][0].1.clone());
    let reader = SerializedFileReader::new(bytes).expect("parquet");
    let meta = reader.metadata().file_metadata();
    assert!(
        meta.created_by()
            .is_some_and(|c| c.starts_with("parquet-rs version")),
        "{:?}",
        meta.created_by()
    );
    let keys: Vec<&str> = meta
        .key_value_metadata()
        .map(|kv| kv.iter().map(|e| e.key.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, vec!["ARROW:schema"]);
}

#[derive(Debug, Clone)]
enum WalOp {
    Append(Vec<u8>),
    Sync,
    Roll,
    Crash(u64),
}

fn wal_op() -> impl Strategy<Value = WalOp> {
    prop_oneof![
        5 => (1u8..6).prop_map(|n| WalOp::Append(vec![n; n as usize])),
        3 => Just(WalOp::Sync),
        1 => Just(WalOp::Roll),
        1 => any::<u64>().prop_map(WalOp::Crash),
    ]
}

fn model_batch(lsn: u64, fixes: usize) -> FixBatch {
    let mut b = batch(7, lsn);
    b.fixes.time_ms.truncate(fixes);
    b.fixes.lat_e7.truncate(fixes);
    b.fixes.lon_e7.truncate(fixes);
    b.fixes.accuracy_cm.truncate(fixes);
    b.fixes.speed_cmps.truncate(fixes);
    b
}

/// What recovery keeps: the records of every segment, the last one's torn
/// tail cut (and made durable), exactly as `Storage::open` does.
fn recover(fs: &SimFs, dir: &Path) -> Vec<(u64, FixBatch)> {
    let segments = wal::list_segments(fs, dir).expect("list");
    let mut out = Vec::new();
    for (i, (_, path)) in segments.iter().enumerate() {
        let bytes = fs.read(path).expect("read");
        let (records, tail) = wal::decode_segment(&bytes);
        if let Some(t) = tail {
            assert_eq!(i + 1, segments.len(), "only the last segment may be torn");
            if t.valid_len() < HEADER_LEN {
                fs.remove_file(path).expect("remove");
                fs.sync_dir(dir).expect("sync");
            } else {
                let mut f = fs.open_write(path).expect("open");
                f.set_len(t.valid_len() as u64).expect("cut");
                f.sync_all().expect("sync");
            }
        }
        out.extend(records.into_iter().map(|r| (r.lsn, r.batch)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The WAL (FileSink over SimFs) against a model: a list of appended
    /// records and how many of them an fsync covered. After a crash the log
    /// holds the synced records, possibly some of the unsynced ones in order,
    /// nothing else; appends then continue from there.
    #[test]
    fn wal_matches_the_model(ops in proptest::collection::vec(wal_op(), 1..40)) {
        let dir = data_dir().join("wal");
        let mut fs = SimFs::new();
        fs.create_dir_all(&dir).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync");
        let mut sink = FileSink::create(Arc::new(fs.clone()), &dir, 1, true).expect("create");
        let mut appended: Vec<(u64, FixBatch)> = Vec::new();
        let mut synced = 0usize;
        for op in ops {
            match op {
                WalOp::Append(fixes) => {
                    let lsn = appended.len() as u64 + 1;
                    let b = model_batch(lsn, fixes.len());
                    let mut buf = Vec::new();
                    wal::encode_record(&b, lsn, &mut buf);
                    sink.append(&buf).expect("append");
                    appended.push((lsn, b));
                }
                WalOp::Sync => {
                    sink.sync().expect("sync");
                    synced = appended.len();
                }
                WalOp::Roll => {
                    // The WAL thread rolls only between synced groups.
                    sink.sync().expect("sync");
                    synced = appended.len();
                    sink.roll(appended.len() as u64 + 1).expect("roll");
                }
                WalOp::Crash(seed) => {
                    fs = fs.crash_image(seed);
                    let got = recover(&fs, &dir);
                    prop_assert!(got.len() >= synced, "lost synced records: {} < {}", got.len(), synced);
                    prop_assert!(got.len() <= appended.len());
                    prop_assert_eq!(&got[..], &appended[..got.len()]);
                    appended = got;
                    synced = appended.len();
                    sink = FileSink::create(Arc::new(fs.clone()), &dir, appended.len() as u64 + 1, true)
                        .expect("reopen");
                }
            }
        }
    }
}
