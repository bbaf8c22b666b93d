//! Measures recovery time per GB of WAL (ignored: run it in release mode).
//!
//! ```text
//! HEXFLOW_RECOVERY_WAL_MB=1024 cargo test -p storage --release \
//!     --test recovery_time -- --ignored --nocapture
//! ```
//!
//! Writes `HEXFLOW_RECOVERY_WAL_MB` MiB of WAL segments (default 256; the
//! state a crash leaves when nothing was flushed yet, no checkpoint), then
//! times `Storage::open` (WAL read + checksum + decode + dedup rebuild,
//! records handed to the writer, which indexes and flushes every
//! `flush_rows_max` rows meanwhile) and the final flush (`shutdown`: Parquet
//! encoding, fsync, checkpoint, segment deletion), default configuration.

use std::time::Instant;

use storage::{FixBatch, Storage, StorageConfig, wal};

const FIXES: usize = 1_000;

fn batch(device_id: u64, seq: u64) -> FixBatch {
    storage::synthetic::batch(device_id, seq, 1_795_561_200_000, FIXES)
}

#[test]
#[ignore = "measurement: run in release mode with --ignored"]
fn recovery_time_per_gb_of_wal() {
    let wal_mb: u64 = std::env::var("HEXFLOW_RECOVERY_WAL_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    // The WAL a crashed server leaves: segments of wal_segment_bytes_max, no
    // checkpoint, nothing in Parquet (what `wal_fsync = false` writes, minus
    // the time of the write itself).
    let wal_dir = dir.path().join("wal");
    std::fs::create_dir_all(&wal_dir).expect("mkdir");
    let target = wal_mb << 20;
    let t = Instant::now();
    let (mut lsn, mut written, mut segment) = (1u64, 0u64, Vec::new());
    let mut first = lsn;
    while written < target {
        if segment.is_empty() {
            first = lsn;
            wal::encode_header(first, &mut segment);
        }
        wal::encode_record(
            &batch(1 + lsn % 10_000, 1 + lsn / 10_000),
            lsn,
            &mut segment,
        );
        lsn += 1;
        if segment.len() as u64 >= cfg.wal_segment_bytes_max
            || written + segment.len() as u64 >= target
        {
            written += segment.len() as u64;
            std::fs::write(wal_dir.join(wal::segment_file_name(first)), &segment).expect("write");
            segment.clear();
        }
    }
    let records = lsn - 1;
    let write_s = t.elapsed().as_secs_f64();
    let gib = written as f64 / (1u64 << 30) as f64;

    let t = Instant::now();
    let (storage, report) = Storage::open(cfg).expect("recover");
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(report.records_replayed, records);
    let shut = storage.shutdown().expect("flush");
    let total_s = t.elapsed().as_secs_f64();
    assert_eq!(shut.checkpoint_lsn, records);
    eprintln!(
        "WAL {written} bytes ({gib:.3} GiB, {records} records, {} fixes) written in {write_s:.1} s",
        records * FIXES as u64
    );
    eprintln!(
        "recovery: open+replay {open_s:.2} s, until everything is durable in Parquet {total_s:.2} s => {:.1} s per GiB",
        total_s / gib
    );
}
