//! `hexflow lake erase` end to end over real files: a device's fixes, some still only in
//! the WAL tail, are erased from the positions table, the old files and log are gone, the
//! WAL checkpoint no longer names the device, its silence traces (events log, exemptions
//! log, `events` and `device_status` tables, silence snapshot) are gone, and a byte scan of
//! every file under the data directory finds neither its id nor its coordinates; the other
//! device is untouched. (The scan is decisive for the WAL, its checkpoint, the Delta log,
//! the JSON Lines logs and the snapshot, which name ids in clear; Parquet pages are
//! zstd-compressed, so for them the decoded rows are checked.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use hexflow::config::Config;

const ERASED: u64 = 0x0123_4567_89AB_CDEF;
const KEPT: u64 = 77;
/// 2026-11-25T12:00:00Z.
const T_MS: i64 = 1_795_608_000_000;
const ERASED_LAT_E7: i32 = 481_234_567;
const ERASED_LON_E7: i32 = 113_456_789;

fn batch(device: u64, seq: u64, lat_e7: i32, lon_e7: i32) -> storage::FixBatch {
    storage::FixBatch::new(
        fix::DeviceId::try_from(device).unwrap(),
        seq,
        T_MS + seq as i64 * 1_000,
        fix::Fixes {
            time_ms: (0..5).map(|i| T_MS + seq as i64 * 1_000 + i).collect(),
            lat_e7: vec![lat_e7; 5],
            lon_e7: vec![lon_e7; 5],
            ..fix::Fixes::default()
        },
    )
}

/// Every silence file, written by the server's own writers, naming both devices.
fn silence_files(dir: &std::path::Path) {
    use silence::{EventKind, Exemption, ExemptionTarget, Level, SilenceEvent, SilenceTable};
    let fs = sys::fs::RealFs;
    let at_s = (T_MS / 1000) as u32;
    let opts = storage::writer::ParquetOptions {
        zstd_level: 3,
        row_group_rows_max: 1024,
    };
    let event = |device_id| SilenceEvent {
        device_id,
        kind: EventKind::Warned,
        policy: 0,
        from: Level::Reporting,
        to: Level::Warned,
        last_fix_s: at_s - 200_000,
        last_contact_s: at_s - 100,
        at_s,
        threshold_s: 172_800,
    };
    let events = [event(ERASED), event(KEPT)];
    let mut log = silence::log::EventLog::open(&fs, dir).unwrap();
    log.append(&events, |_| "default".into()).unwrap();
    let exemptions: Vec<Exemption> = [ERASED, KEPT]
        .map(|d| Exemption {
            target: ExemptionTarget::Device(d),
            from_s: None,
            until_s: Some(at_s + 86_400),
            reason: "maintenance".into(),
        })
        .to_vec();
    silence::log::ExemptionLog::sync(&fs, dir, &exemptions, at_s).unwrap();
    let cfg = silence::tables::EventTableConfig {
        rows_max: 100,
        flush_interval_ms: 0,
        parquet: opts,
    };
    let mut table = silence::tables::EventTable::open(dir, cfg, vec!["default".into()]).unwrap();
    table.push(&events, T_MS).unwrap();
    table.flush().unwrap();
    let state = SilenceTable::with_capacity(4).unwrap();
    for d in [ERASED, KEPT] {
        state.record_fix(d, at_s - 200_000).unwrap();
    }
    state.record_confirmation(ERASED, at_s - 50).unwrap();
    let set = silence::PolicySet::durations(172_800, 259_200).unwrap();
    silence::tables::write_device_status(&fs, dir, at_s, &state, &set, opts).unwrap();
    let request = silence::ConfirmRequestRecord {
        device_id: fix::DeviceId::try_from(ERASED).unwrap(),
        request_id: 1,
        requested_at_ms: T_MS,
        reason: "confirm".into(),
    };
    silence::snapshot_file::SnapshotFile::new(std::sync::Arc::new(fs), dir)
        .save(&state, at_s, &[], &[request], &mut Vec::new())
        .unwrap();
}

/// The `device_id` column of every Parquet file under `dir/table`.
fn table_ids(dir: &std::path::Path, table: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = common::parquet_files(&dir.join(table))
        .iter()
        .flat_map(|f| common::read_parquet(f))
        .flat_map(|b| {
            let col = b.column_by_name("device_id").unwrap();
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            col.values().to_vec()
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn submit(st: &storage::Storage, b: storage::FixBatch) {
    let (tx, rx) = mpsc::channel();
    st.submit(
        b,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(30)).unwrap().is_ok());
}

#[test]
fn erase_removes_every_trace_of_the_device_from_positions_and_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.server.data_dir = dir.path().to_path_buf();
    let (st, _) = storage::Storage::open(cfg.storage_config()).unwrap();
    for seq in 1..=3 {
        submit(&st, batch(ERASED, seq, ERASED_LAT_E7, ERASED_LON_E7));
        submit(&st, batch(KEPT, seq, 500_000_000, 20_000_000));
    }
    st.shutdown().unwrap();
    // More fixes that stay in the WAL tail (a crash before the flush).
    let (st, _) = storage::Storage::open(cfg.storage_config()).unwrap();
    submit(&st, batch(ERASED, 4, ERASED_LAT_E7, ERASED_LON_E7));
    submit(&st, batch(KEPT, 4, 500_000_000, 20_000_000));
    st.abandon().unwrap();
    silence_files(dir.path());
    for table in ["events", "device_status"] {
        assert_eq!(table_ids(dir.path(), table), [KEPT as i64, ERASED as i64]);
    }

    let out =
        hexflow::lake_cli::erase(&cfg, fix::DeviceId::try_from(ERASED).unwrap(), T_MS).unwrap();
    assert!(out.contains("20 rows removed"), "{out}");
    assert!(out.contains("wal checkpoint entry removed: true"), "{out}");
    assert!(
        out.contains(
            "silence: 1 event lines, 1 exemption lines, 1 events rows, 1 device_status rows \
             removed (2 files rewritten); snapshot rewritten: true"
        ),
        "{out}"
    );
    for table in ["events", "device_status"] {
        assert_eq!(table_ids(dir.path(), table), [KEPT as i64], "{table}");
    }
    let log = std::fs::read_to_string(dir.path().join("events/silence.jsonl")).unwrap();
    assert!(log.contains(&format!("\"device_id\":{KEPT},")), "{log}");

    let rows = common::read_positions(dir.path());
    assert_eq!(rows.len(), 20, "the other device's 4 batches of 5 fixes");
    assert!(rows.iter().all(|r| r.device_id == KEPT as i64));

    let needles: Vec<Vec<u8>> = vec![
        ERASED.to_le_bytes().to_vec(),
        ERASED.to_be_bytes().to_vec(),
        ERASED.to_string().into_bytes(),
        ERASED_LAT_E7.to_le_bytes().to_vec(),
        ERASED_LON_E7.to_le_bytes().to_vec(),
        "48.1234567".as_bytes().to_vec(),
        "11.3456789".as_bytes().to_vec(),
    ];
    let files = common::files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("_delta_log"))
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{} still holds {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
}
