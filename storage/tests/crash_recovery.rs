//! End-to-end storage tests: crash (threads stopped without a flush), torn WAL
//! tail, orphan Parquet files, replay, dedup across restarts, exactly-once
//! content of the Parquet data set, and the submit queue bound.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use storage::partition::{PartitionKey, date_from_days};
use storage::{CommitError, Committed, FixBatch, Storage, StorageConfig, SubmitError};

/// 2026-11-24T23:00:00Z: batches cross midnight, so two date partitions.
const BASE_MS: i64 = 1_795_561_200_000;
const FIXES: usize = 50;

fn batch(device_id: u64, seq: u64) -> FixBatch {
    storage::synthetic::batch(device_id, seq, BASE_MS, FIXES)
}

fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        wal_segment_bytes_max: 1 << 20,
        wal_group_commit_delay_us: 0,
        flush_interval_ms: 60_000,
        flush_rows_max: 20_000,
        row_group_rows_max: 4_096,
        queue_batches_max: 4_096,
        ..StorageConfig::default()
    }
}

type Outcome = Result<Committed, CommitError>;

/// Submits every batch (retrying on Overloaded) and returns the outcomes in order.
fn submit_all(storage: &Storage, batches: Vec<FixBatch>) -> Vec<Outcome> {
    let (tx, rx) = mpsc::channel();
    let n = batches.len();
    for (i, b) in batches.into_iter().enumerate() {
        loop {
            let tx = tx.clone();
            match storage.submit(
                b.clone(),
                Box::new(move |r| tx.send((i, r)).expect("receiver alive")),
            ) {
                Ok(()) => break,
                Err(SubmitError::Overloaded { .. }) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("submit failed: {e}"),
            }
        }
    }
    let mut out: Vec<Option<Outcome>> = vec![None; n];
    for _ in 0..n {
        let (i, r) = rx.recv_timeout(Duration::from_secs(30)).expect("callback");
        assert!(out[i].is_none(), "callback called twice");
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|o| o.expect("every callback ran"))
        .collect()
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            // The Delta log's checkpoints are Parquet too, but not data.
            if !path.ends_with("_delta_log") {
                out.extend(parquet_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// (device_id, batch_seq, time_us) -> occurrences, checking sort order and partition dates.
fn read_all(positions: &Path) -> BTreeMap<(i64, i64, i64), usize> {
    let mut rows = BTreeMap::new();
    let (mut nulls, mut total) = (0, 0);
    for file in parquet_files(positions) {
        let rel = file
            .parent()
            .expect("partition dir")
            .strip_prefix(positions)
            .expect("under positions");
        let key = PartitionKey::parse(rel.to_str().expect("utf-8")).expect("hive path");
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&file).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read");
        let mut last_h3 = i64::MIN;
        for rb in batches {
            let col = |name: &str| rb.column_by_name(name).expect("column").clone();
            let (device, seq, time, h3) =
                (col("device_id"), col("batch_seq"), col("time"), col("h3"));
            let (device, seq) = (
                device.as_primitive::<Int64Type>(),
                seq.as_primitive::<Int64Type>(),
            );
            let time = time.as_primitive::<TimestampMicrosecondType>();
            let h3 = h3.as_primitive::<Int64Type>();
            nulls += col("accuracy_m").null_count();
            total += rb.num_rows();
            for i in 0..rb.num_rows() {
                assert!(
                    h3.value(i) >= last_h3,
                    "{} not sorted by h3",
                    file.display()
                );
                last_h3 = h3.value(i);
                let days = (time.value(i) / 1_000).div_euclid(86_400_000);
                assert_eq!(date_from_days(days), key.date, "fix in the wrong partition");
                *rows
                    .entry((device.value(i), seq.value(i), time.value(i)))
                    .or_insert(0) += 1;
            }
        }
    }
    // One fix in five has no accuracy.
    assert_eq!(nulls * 5, total);
    rows
}

fn expected_rows(batches: &[(u64, u64)]) -> BTreeMap<(i64, i64, i64), usize> {
    storage::synthetic::expected_rows(batches, BASE_MS, FIXES)
}

#[test]
fn crash_replay_dedup_and_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let positions = dir.path().join("positions");

    // Run 1: store, then crash.
    let (storage, report) = Storage::open(cfg.clone()).expect("open");
    assert_eq!(report.next_lsn, 1);
    assert_eq!(report.records_replayed, 0);
    let mut stored: Vec<(u64, u64)> = Vec::new();
    let mut first: Vec<FixBatch> = Vec::new();
    for seq in 1..=60 {
        for device in 1..=20 {
            first.push(batch(device, seq));
            stored.push((device, seq));
        }
    }
    let outcomes = submit_all(&storage, first);
    let mut lsns: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            Ok(Committed::Stored { lsn }) => *lsn,
            other => panic!("expected Stored, got {other:?}"),
        })
        .collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=1_200).collect::<Vec<_>>());
    // Duplicates and a stale sequence number.
    let again = submit_all(&storage, vec![batch(3, 60), batch(3, 59)]);
    assert_eq!(
        again,
        vec![Ok(Committed::Duplicate), Ok(Committed::Duplicate)]
    );
    let jump = submit_all(&storage, vec![batch(4, 130)]);
    assert_eq!(jump, vec![Ok(Committed::Stored { lsn: 1_201 })]);
    stored.push((4, 130));
    let stale = submit_all(&storage, vec![batch(4, 66), batch(4, 130)]);
    assert_eq!(
        stale,
        vec![
            Err(CommitError::StaleSequence {
                device_id: storage::DeviceId::try_from(4u64).expect("id"),
                batch_seq: 66,
                window_low: 67
            }),
            Ok(Committed::Duplicate)
        ]
    );
    let stats = storage.stats();
    assert_eq!(stats.batches_committed, 1_201);
    assert_eq!(stats.fixes_committed, 60_050);
    assert_eq!(stats.duplicates, 3);
    assert_eq!(stats.commit_failures, 1);
    // flush_rows_max forces flushes; the writer runs behind the callbacks.
    let mut waited_ms = 0;
    while storage.stats().files_written == 0 {
        assert!(
            waited_ms < 20_000,
            "no flush although flush_rows_max was crossed"
        );
        std::thread::sleep(Duration::from_millis(10));
        waited_ms += 10;
    }
    storage.abandon().expect("simulated crash");

    // Damage as a crash would: a torn record, a half-written file, an orphan
    // file of a flush whose checkpoint was never written.
    let wal_dir = dir.path().join("wal");
    let segments = storage::wal::list_segments(&sys::fs::RealFs, &wal_dir).expect("segments");
    assert!(!segments.is_empty());
    let (_, last) = segments.last().expect("a segment");
    let mut bytes = fs::read(last).expect("read");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    fs::write(last, &bytes).expect("write");
    let some_partition = parquet_files(&positions)[0]
        .parent()
        .expect("dir")
        .to_path_buf();
    fs::write(
        some_partition.join(storage::partition::tmp_file_name(5_000, 5_001)),
        b"half",
    )
    .expect("tmp");
    let orphan = some_partition.join(storage::partition::part_file_name(5_000, 5_001));
    fs::write(&orphan, b"not parquet").expect("orphan");

    // Run 2: recover, check dedup survived, add more, shut down cleanly.
    let (storage, report) = Storage::open(cfg.clone()).expect("reopen");
    assert!(
        report.checkpoint_lsn > 0 && report.checkpoint_lsn < 1_201,
        "{report:?}"
    );
    assert_eq!(report.records_replayed, 1_201 - report.checkpoint_lsn);
    assert_eq!(
        report.fixes_replayed,
        report.records_replayed * FIXES as u64
    );
    assert_eq!(report.next_lsn, 1_202);
    assert_eq!(report.orphan_files_deleted, vec![orphan.clone()]);
    assert_eq!(report.tmp_files_deleted, 1);
    let torn = report.torn_tail.clone().expect("torn tail found");
    assert_eq!(torn.discarded_bytes, 7);
    assert_eq!(report.dedup_devices, 20);
    assert!(!orphan.exists());
    let again = submit_all(&storage, vec![batch(7, 60), batch(7, 61), batch(21, 1)]);
    assert_eq!(again[0], Ok(Committed::Duplicate));
    assert_eq!(again[1], Ok(Committed::Stored { lsn: 1_202 }));
    assert_eq!(again[2], Ok(Committed::Stored { lsn: 1_203 }));
    stored.push((7, 61));
    stored.push((21, 1));
    let shut = storage.shutdown().expect("shutdown");
    assert_eq!(shut.checkpoint_lsn, 1_203);
    assert!(
        storage::wal::list_segments(&sys::fs::RealFs, &wal_dir)
            .expect("segments")
            .is_empty()
    );

    // Run 3: nothing to replay; duplicates still recognised from the checkpoint.
    let (storage, report) = Storage::open(cfg).expect("reopen");
    assert_eq!(report.records_replayed, 0);
    assert_eq!(report.checkpoint_lsn, 1_203);
    assert_eq!(report.next_lsn, 1_204);
    assert_eq!(report.torn_tail, None);
    let again = submit_all(&storage, vec![batch(21, 1)]);
    assert_eq!(again[0], Ok(Committed::Duplicate));
    let clone = storage.clone();
    storage.shutdown().expect("shutdown");
    assert!(matches!(
        clone.submit(batch(1, 100), Box::new(|_| {})),
        Err(SubmitError::ShuttingDown)
    ));

    // Every committed fix exactly once.
    assert_eq!(read_all(&positions), expected_rows(&stored));
}

#[test]
fn submit_queue_bound_returns_overloaded_at_its_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig {
        queue_batches_max: 4,
        ..config(dir.path())
    };
    let (storage, _) = Storage::open(cfg).expect("open");
    // Hold the WAL thread inside the first callback.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    storage
        .submit(
            batch(1, 1),
            Box::new(move |r| {
                entered_tx.send(r).expect("test alive");
                release_rx.recv().expect("released");
            }),
        )
        .expect("first submit");
    assert_eq!(
        entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("first callback"),
        Ok(Committed::Stored { lsn: 1 })
    );
    let (tx, rx) = mpsc::channel();
    for seq in 2..=5 {
        let tx = tx.clone();
        storage
            .submit(batch(1, seq), Box::new(move |r| tx.send(r).expect("alive")))
            .expect("room in the queue");
    }
    assert_eq!(storage.stats().queue_depth, 4);
    let refused = storage.submit(
        batch(1, 6),
        Box::new(|_| panic!("refused batches are not answered")),
    );
    assert_eq!(
        refused,
        Err(SubmitError::Overloaded {
            queue_batches_max: 4
        })
    );
    assert_eq!(storage.stats().rejected_overloaded, 1);
    release_tx.send(()).expect("release");
    for _ in 2..=5 {
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(10)).expect("callback"),
            Ok(Committed::Stored { .. })
        ));
    }
    // Invalid batches are refused synchronously.
    let mut bad = batch(1, 7);
    bad.fixes.lat_e7.pop();
    assert!(matches!(
        storage.submit(bad, Box::new(|_| {})),
        Err(SubmitError::Invalid(_))
    ));
    let report = storage.shutdown().expect("shutdown");
    assert_eq!(report.checkpoint_lsn, 5);
    assert_eq!(report.rows_flushed, 5 * FIXES as u64);
}

fn write_segment(wal_dir: &Path, first_lsn: u64, lsns: &[u64]) -> PathBuf {
    let mut bytes = Vec::new();
    storage::wal::encode_header(first_lsn, &mut bytes);
    for &lsn in lsns {
        storage::wal::encode_record(&batch(1, lsn), lsn, &mut bytes);
    }
    let path = wal_dir.join(storage::wal::segment_file_name(first_lsn));
    fs::write(&path, bytes).expect("write segment");
    path
}

#[test]
fn open_refuses_a_corrupt_middle_segment_and_an_lsn_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("wal");
    fs::create_dir_all(&wal_dir).expect("mkdir");
    let first = write_segment(&wal_dir, 1, &[1, 2]);
    write_segment(&wal_dir, 3, &[3]);
    let mut bytes = fs::read(&first).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&first, bytes).expect("corrupt");
    match Storage::open(config(dir.path())) {
        Err(storage::OpenError::CorruptWal { segment, .. }) => assert_eq!(segment, first),
        other => panic!("expected CorruptWal, got {other:?}"),
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("wal");
    fs::create_dir_all(&wal_dir).expect("mkdir");
    write_segment(&wal_dir, 1, &[1]);
    write_segment(&wal_dir, 5, &[5]);
    match Storage::open(config(dir.path())) {
        Err(storage::OpenError::LsnGap {
            expected, found, ..
        }) => assert_eq!((expected, found), (2, 5)),
        other => panic!("expected LsnGap, got {other:?}"),
    }

    // The same records without the gap replay fine, and land in Parquet.
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("wal");
    fs::create_dir_all(&wal_dir).expect("mkdir");
    write_segment(&wal_dir, 1, &[1, 2]);
    write_segment(&wal_dir, 3, &[3]);
    let (storage, report) = Storage::open(config(dir.path())).expect("open");
    assert_eq!((report.records_replayed, report.next_lsn), (3, 4));
    assert_eq!(storage.shutdown().expect("shutdown").checkpoint_lsn, 3);
    assert_eq!(
        read_all(&dir.path().join("positions")),
        expected_rows(&[(1, 1), (1, 2), (1, 3)])
    );
}

#[test]
fn flush_interval_publishes_without_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig {
        flush_interval_ms: 60_000,
        ..config(dir.path())
    };
    // The interval is measured on the storage clock: a simulated minute, not a real one.
    let clock = sys::SimClock::new(BASE_MS);
    let (storage, _) = Storage::open_with(
        cfg.clone(),
        std::sync::Arc::new(sys::fs::RealFs),
        clock.clone(),
    )
    .expect("open");
    let out = submit_all(&storage, vec![batch(9, 1)]);
    assert_eq!(out, vec![Ok(Committed::Stored { lsn: 1 })]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        storage.stats().files_written,
        0,
        "flushed before its interval"
    );
    clock.advance_ms(60_000);
    let mut waited_ms = 0;
    while storage.stats().files_written == 0 {
        assert!(waited_ms < 10_000, "no timed flush");
        std::thread::sleep(Duration::from_millis(10));
        waited_ms += 10;
    }
    assert_eq!(storage.stats().rows_written, FIXES as u64);
    // A crash now loses nothing and replays nothing.
    storage.abandon().expect("crash");
    let (storage, report) = Storage::open(cfg).expect("reopen");
    assert_eq!((report.checkpoint_lsn, report.records_replayed), (1, 0));
    storage.shutdown().expect("shutdown");
    assert_eq!(
        read_all(&dir.path().join("positions")),
        expected_rows(&[(9, 1)])
    );
}

#[test]
fn a_second_storage_on_the_same_directory_is_refused_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let (storage, _) = Storage::open(cfg.clone()).expect("open");
    let out = submit_all(&storage, vec![batch(3, 1)]);
    assert_eq!(out, vec![Ok(Committed::Stored { lsn: 1 })]);
    let wal_before =
        storage::wal::list_segments(&sys::fs::RealFs, &dir.path().join("wal")).expect("segments");
    match Storage::open(cfg.clone()) {
        Err(storage::OpenError::Locked { path }) => {
            assert_eq!(path, dir.path().join(storage::LOCK_FILE_NAME));
        }
        other => panic!("second open must be refused, got {other:?}"),
    }
    // The refused open touched nothing: the live WAL segment is still there and still used.
    let wal_after =
        storage::wal::list_segments(&sys::fs::RealFs, &dir.path().join("wal")).expect("segments");
    assert_eq!(wal_before, wal_after);
    let out = submit_all(&storage, vec![batch(3, 2)]);
    assert_eq!(out, vec![Ok(Committed::Stored { lsn: 2 })]);
    storage.shutdown().expect("shutdown");
    // Released at shutdown: the next server opens it and finds both batches.
    let (storage, _) = Storage::open(cfg).expect("reopen after shutdown");
    storage.shutdown().expect("shutdown");
    assert_eq!(
        read_all(&dir.path().join("positions")),
        expected_rows(&[(3, 1), (3, 2)])
    );
}
