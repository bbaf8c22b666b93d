//! Every silence file written by its real writer, then one device erased: its lines, rows,
//! record, confirmation and request are gone, every other device's are kept (a device whose
//! id starts with the erased one's digits included), and a second erasure finds nothing.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sys::fs::Fs;
use sys::sim::SimFs;

use super::*;
use crate::log::{EventLog, ExemptionLog};
use crate::scanner::ConfirmRequestRecord;
use crate::tables::{EventTable, EventTableConfig, write_device_status};
use crate::{Exemption, ExemptionTarget, PolicySet, SilenceEvent, SilenceTable};

const DATA: &str = "/data";
const ERASED: u64 = 42;
/// Ids that share digits with `ERASED`: they must stay.
const KEPT: [u64; 3] = [420, 7, 4_242];
const T_S: u32 = 1_795_608_000;
const OPTS: ParquetOptions = ParquetOptions {
    zstd_level: 1,
    row_group_rows_max: 1024,
};

fn event(device_id: u64) -> SilenceEvent {
    crate::event::warned_at(device_id, T_S)
}

fn exempt(device_id: u64) -> Exemption {
    Exemption {
        target: ExemptionTarget::Device(device_id),
        from_s: None,
        until_s: Some(T_S + 86_400),
        reason: "maintenance".into(),
    }
}

/// The ids in the `device_id` column of every Parquet file below `dir`.
fn table_ids(fs: &SimFs, dir: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for path in fs.files_under(&Path::new(DATA).join(dir)) {
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let bytes = bytes::Bytes::from(fs.read(&path).unwrap());
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let col = batch.column_by_name("device_id").unwrap();
            let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
            ids.extend(col.values().iter().map(|&d| d as u64));
        }
    }
    ids.sort_unstable();
    ids
}

fn lines(fs: &SimFs, path: &Path) -> Vec<String> {
    String::from_utf8(fs.read(path).unwrap())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Writes every silence file for `ERASED` and `KEPT` through the writers the server uses.
fn data_dir_with_every_silence_file(fs: &SimFs) {
    let data = Path::new(DATA);
    fs.create_dir_all(data).unwrap();
    let fs_arc: Arc<dyn Fs> = Arc::new(fs.clone());
    let all: Vec<u64> = std::iter::once(ERASED).chain(KEPT).collect();
    let events: Vec<SilenceEvent> = all.iter().map(|&d| event(d)).collect();
    let mut log = EventLog::open(fs, data).unwrap();
    log.append(&events, |_| "default".into()).unwrap();
    let exemptions: Vec<Exemption> = all.iter().map(|&d| exempt(d)).collect();
    ExemptionLog::sync(fs, data, &exemptions, T_S).unwrap();
    let cfg = EventTableConfig {
        rows_max: 100,
        flush_interval_ms: 0,
        parquet: OPTS,
    };
    let mut table =
        EventTable::open_with_fs(fs_arc.clone(), data, cfg, vec!["default".into()]).unwrap();
    table.push(&events, i64::from(T_S) * 1000).unwrap();
    table.flush().unwrap();
    let silence = SilenceTable::with_capacity(16).unwrap();
    for &d in &all {
        silence.record_fix(d, T_S - 200_000).unwrap();
    }
    silence.record_confirmation(ERASED, T_S - 50).unwrap();
    silence.record_confirmation(7, T_S - 40).unwrap();
    let set = PolicySet::durations(172_800, 259_200).unwrap();
    write_device_status(fs, data, T_S, &silence, &set, OPTS).unwrap();
    let requests: Vec<ConfirmRequestRecord> = [ERASED, 420]
        .iter()
        .zip(1..)
        .map(|(&d, request_id)| ConfirmRequestRecord {
            device_id: fix::DeviceId::try_from(d).unwrap(),
            request_id,
            requested_at_ms: i64::from(T_S) * 1000,
            reason: "confirm".into(),
        })
        .collect();
    SnapshotFile::new(fs_arc, data)
        .save(&silence, T_S, &[], &requests, &mut Vec::new())
        .unwrap();
}

#[test]
fn erasing_a_device_removes_it_from_every_silence_file_and_keeps_the_others() {
    let fs = SimFs::new();
    data_dir_with_every_silence_file(&fs);
    let data = Path::new(DATA);
    assert_eq!(table_ids(&fs, "events"), [7, 42, 420, 4_242]);
    assert_eq!(table_ids(&fs, "device_status"), [7, 42, 420, 4_242]);

    let device = fix::DeviceId::try_from(ERASED).unwrap();
    let report = erase_device(&fs, data, device, OPTS).unwrap();
    assert_eq!(
        report,
        EraseReport {
            event_lines: 1,
            exemption_lines: 1,
            event_rows: 1,
            status_rows: 1,
            files_rewritten: 2,
            snapshot: true,
        }
    );

    assert_eq!(table_ids(&fs, "events"), [7, 420, 4_242]);
    assert_eq!(table_ids(&fs, "device_status"), [7, 420, 4_242]);
    let events = lines(&fs, &EventLog::path_in(data));
    assert_eq!(events.len(), 3);
    assert!(
        events.iter().all(|l| !l.contains("\"device_id\":42,")),
        "{events:?}"
    );
    for kept in KEPT {
        let needle = format!("\"device_id\":{kept},");
        assert!(events.iter().any(|l| l.contains(&needle)), "{kept} kept");
    }
    let exemptions = lines(&fs, &ExemptionLog::path(data));
    assert_eq!(exemptions.len(), 3);
    assert!(exemptions.iter().all(|l| !l.contains("\"device\":42,")));

    let restored = SilenceTable::with_capacity(16).unwrap();
    let snapshot = fs.read(&SnapshotFile::path_in(data)).unwrap();
    let info = restored.restore_snapshot(&snapshot).unwrap();
    assert_eq!(info.devices, 3);
    assert_eq!(restored.get(ERASED), None);
    assert_eq!(restored.confirmation(ERASED), None);
    assert_eq!(restored.confirmation(7), Some(T_S - 40));
    let asked: Vec<u64> = info.requests.iter().map(|r| r.device_id.get()).collect();
    assert_eq!(asked, [420]);

    // Nothing left to remove: a second run changes no file.
    let again = erase_device(&fs, data, device, OPTS).unwrap();
    assert_eq!(again, EraseReport::default());
}

#[test]
fn a_file_left_without_rows_is_removed_and_missing_files_are_fine() {
    let fs = SimFs::new();
    let data = Path::new(DATA);
    // Nothing at all under the data directory: nothing to do.
    fs.create_dir_all(data).unwrap();
    let device = fix::DeviceId::try_from(ERASED).unwrap();
    assert_eq!(
        erase_device(&fs, data, device, OPTS).unwrap(),
        EraseReport::default()
    );
    // A status file holding only the erased device goes away.
    let silence = SilenceTable::with_capacity(4).unwrap();
    silence.record_fix(ERASED, T_S - 10).unwrap();
    let set = PolicySet::durations(172_800, 259_200).unwrap();
    let (path, rows) = write_device_status(&fs, data, T_S, &silence, &set, OPTS).unwrap();
    assert_eq!(rows, 1);
    let report = erase_device(&fs, data, device, OPTS).unwrap();
    assert_eq!((report.status_rows, report.files_rewritten), (1, 1));
    assert!(fs.read(&path).is_err(), "removed");
}

#[test]
fn a_line_names_a_device_only_by_its_whole_id() {
    for (line, id, named) in [
        (r#"{"device_id":42,"kind":"warned"}"#, 42, true),
        (r#"{"device_id":420,"kind":"warned"}"#, 42, false),
        (r#"{"device_id":4,"kind":"warned"}"#, 42, false),
        (r#"{"device_id":42"#, 42, true),
        (r#"{"at_s":42,"device_id":7}"#, 42, false),
    ] {
        assert_eq!(
            names_device(line.as_bytes(), format!("\"device_id\":{id}").as_bytes()),
            named,
            "{line}"
        );
    }
}

#[test]
fn lines_of_other_devices_are_kept_byte_for_byte() {
    let fs = SimFs::new();
    let data = Path::new(DATA);
    fs.create_dir_all(&data.join("events")).unwrap();
    let path = EventLog::path_in(data);
    // Not UTF-8 in a kept line, and a torn last line naming the device.
    let mut bytes = b"{\"device_id\":7,\"policy\":\"\xff\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"device_id\":42,\"kind\":\"warned\"}\n{\"device_id\":42");
    sys::fs::write_atomic(&fs, &path, &bytes).unwrap();
    let device = fix::DeviceId::try_from(ERASED).unwrap();
    assert_eq!(
        erase_device(&fs, data, device, OPTS).unwrap().event_lines,
        2
    );
    assert_eq!(
        fs.read(&path).unwrap(),
        b"{\"device_id\":7,\"policy\":\"\xff\"}\n"
    );
}
