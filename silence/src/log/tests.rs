#![allow(clippy::unwrap_used)]

use std::io::Write;

use sys::fs::RealFs;
use sys::sim::SimFs;

use super::*;

fn ex(d: u64, reason: &str) -> Exemption {
    Exemption {
        target: ExemptionTarget::Device(d),
        from_s: None,
        until_s: Some(2_000_000_000),
        reason: reason.into(),
    }
}

#[test]
fn exemption_log_records_every_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = ex(1, "repair \"A\"");
    let b = Exemption {
        target: ExemptionTarget::Group("berlin".into()),
        from_s: Some(5),
        until_s: None,
        reason: "holiday".into(),
    };
    let c = ExemptionLog::sync(&RealFs, dir.path(), &[a.clone(), b.clone()], 100).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| c.added));
    // Same config again: nothing to record.
    assert!(
        ExemptionLog::sync(&RealFs, dir.path(), &[b.clone(), a.clone()], 200)
            .unwrap()
            .is_empty()
    );
    // b removed, a changed (new reason): removed a, removed b, added a'.
    let a2 = ex(1, "repair B");
    let c = ExemptionLog::sync(&RealFs, dir.path(), std::slice::from_ref(&a2), 300).unwrap();
    assert_eq!(
        c.iter().filter(|c| !c.added).count(),
        2,
        "both old ones removed: {c:?}"
    );
    assert_eq!(
        c.iter().filter(|c| c.added).map(|c| &c.exemption).next(),
        Some(&exemption_json(&a2))
    );
    let text = std::fs::read_to_string(ExemptionLog::path(dir.path())).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().next().unwrap().starts_with(r#"{"at_s":100,"change":"added","exemption":{"device":1,"from_s":null,"until_s":2000000000,"reason":"repair \"A\""}"#));
    // A torn last line is ignored.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ExemptionLog::path(dir.path()))
        .unwrap();
    f.write_all(b"{\"at_s\":400,\"change\":\"removed\",\"exem")
        .unwrap();
    drop(f);
    assert!(
        ExemptionLog::sync(&RealFs, dir.path(), std::slice::from_ref(&a2), 500)
            .unwrap()
            .is_empty()
    );
}

fn event(device_id: u64, at_s: u32) -> SilenceEvent {
    crate::event::warned_at(device_id, at_s)
}

#[test]
fn events_log_appends_lines_after_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let name = |_: u16| "default".to_string();
    let mut log = EventLog::open(&RealFs, dir.path()).unwrap();
    assert_eq!(log.path(), EventLog::path_in(dir.path()));
    log.append(&[], name).unwrap();
    assert!(std::fs::read(log.path()).unwrap().is_empty());
    log.append(&[event(1, 1_000), event(2, 1_000)], name)
        .unwrap();
    drop(log);
    // Reopened: appends after the existing lines, never truncates.
    let mut log = EventLog::open(&RealFs, dir.path()).unwrap();
    log.append(&[event(3, 2_000)], name).unwrap();
    let text = std::fs::read_to_string(log.path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], event(1, 1_000).to_json_line("default"));
    assert_eq!(lines[2], event(3, 2_000).to_json_line("default"));
}

/// A power loss at any operation of an append keeps every line acknowledged before it, and
/// the lines of the append itself once it returned: at most a torn tail of the unfinished one.
#[test]
fn events_log_keeps_acknowledged_lines_at_every_crash_point() {
    let name = |_: u16| "default".to_string();
    let data = Path::new("/data");
    let first = [event(1, 1_000)];
    let second = [event(2, 2_000), event(3, 2_000)];
    let old: String = first
        .iter()
        .map(|e| e.to_json_line("default") + "\n")
        .collect();
    let new: String = old.clone()
        + &second
            .iter()
            .map(|e| e.to_json_line("default") + "\n")
            .collect::<String>();
    for crash_at in 0..4 {
        for seed in 0..8 {
            let fs = SimFs::new();
            fs.create_dir_all(data).unwrap();
            let mut log = EventLog::open(&fs, data).unwrap();
            log.append(&first, name).unwrap();
            fs.crash_at_op(fs.ops() + crash_at);
            let done = log.append(&second, name).is_ok();
            let image = fs.crash_image(seed);
            let got = image.read(&EventLog::path_in(data)).unwrap();
            let got = String::from_utf8(got).unwrap();
            assert!(
                got.starts_with(&old) && new.starts_with(&got),
                "crash at +{crash_at}, seed {seed}: {got:?}"
            );
            if done {
                assert_eq!(got, new, "an acknowledged append is durable");
            }
        }
    }
}
