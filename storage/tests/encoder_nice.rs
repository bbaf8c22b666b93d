//! `storage.encoder_nice` reaches the encoder thread (Linux: read back from `/proc`).
//!
//! One test in its own binary, so the only `hexflow-encoder` thread of the process is the
//! one this storage starts.

use storage::{Storage, StorageConfig};

/// Nice value of a thread (field 19 of `/proc/self/task/<tid>/stat`, after the `(comm)`).
#[cfg(target_os = "linux")]
fn nice_of(task: &std::path::Path) -> i32 {
    let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    // Fields from 3 (state) on; nice is field 19.
    after_comm
        .split(' ')
        .nth(16)
        .expect("nice")
        .parse()
        .expect("integer")
}

#[cfg(target_os = "linux")]
#[test]
fn the_encoder_thread_runs_at_the_configured_nice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig {
        data_dir: dir.path().to_path_buf(),
        encoder_nice: 13,
        ..StorageConfig::default()
    };
    let process_nice = nice_of(std::path::Path::new("/proc/self"));
    let (storage, _) = Storage::open(cfg).expect("open");
    // The thread lowers its own priority as it starts; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let found = loop {
        let encoders: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "hexflow-encoder")
            })
            .map(|t| nice_of(&t.path()))
            .collect();
        let expected = 13.max(process_nice);
        if encoders == [expected] || std::time::Instant::now() > deadline {
            break (encoders, expected);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(found.0, [found.1], "one encoder thread at nice {}", found.1);
    storage.shutdown().expect("shutdown");
}
