//! Silence files under the data directory: the events log, the exemptions log and the silence
//! state snapshot.
//!
//! * `<data>/events/silence.jsonl`: one JSON object per line
//!   ([`ingest::silence::SilenceEvent::to_json_line`]), appended and fsynced after each scan
//!   that produced events, and echoed as structured log lines.
//! * `<data>/events/exemptions.jsonl`: append-only; at start the configured exemptions are
//!   compared with the set the log ends with, and every difference is appended as an `added` or
//!   `removed` line ([`ExemptionLog::sync`]). Replaying the log gives the set in force.
//! * `<data>/silence/snapshot.bin`: the table's state (format in `ingest::silence` snapshot
//!   docs), written atomically: temporary file, fsync, rename, fsync of the directory. A torn
//!   or damaged snapshot is refused whole by its checksum.
//! * `<data>/events/date=…/part-….parquet` and `<data>/device_status/date=…/part-….parquet`:
//!   the same events, and a daily status of every device, as Parquet tables ([`tables`]).
//! * The optional HTTP webhook that POSTs each scan's events ([`webhook`]).
//!
//! The JSON Lines file is written (and fsynced) first; the table and the webhook follow it.
//!
//! Never: rewrites or truncates a log.

pub mod tables;
pub mod webhook;

use std::io::Write;
use std::path::{Path, PathBuf};

use ingest::silence::{Exemption, ExemptionTarget, JsonStr, SilenceEvent};

/// Append-only JSON Lines file of silence events.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
}

impl EventLog {
    /// Opens (creating) `<data_dir>/events/silence.jsonl` for appending.
    ///
    /// # Errors
    /// The OS error, with the path in the message.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("events");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("silence.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            buf: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `events`, one line each (`policy_name` maps an event's policy index to its
    /// name), then fsyncs. Also logs each one.
    ///
    /// # Errors
    /// The OS error if the write or fsync fails.
    pub fn append(
        &mut self,
        events: &[SilenceEvent],
        policy_name: impl Fn(u16) -> String,
    ) -> std::io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for e in events {
            let line = e.to_json_line(&policy_name(e.policy));
            tracing::info!(target: "hexflow::silence", event = %line, "silence transition");
            self.buf.extend_from_slice(line.as_bytes());
            self.buf.push(b'\n');
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()
    }
}

/// The canonical JSON of one exemption (the identity used to compare log and config).
pub fn exemption_json(e: &Exemption) -> String {
    let target = match &e.target {
        ExemptionTarget::Device(d) => format!(r#""device":{d}"#),
        ExemptionTarget::Group(g) => format!(r#""group":{}"#, JsonStr(g)),
    };
    let t = |v: Option<u32>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
    format!(
        r#"{{{target},"from_s":{},"until_s":{},"reason":{}}}"#,
        t(e.from_s),
        t(e.until_s),
        JsonStr(&e.reason)
    )
}

/// One change appended by [`ExemptionLog::sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemptionChange {
    /// `true`: added; `false`: removed.
    pub added: bool,
    /// [`exemption_json`] of the exemption.
    pub exemption: String,
}

/// The append-only exemptions log.
#[derive(Debug)]
pub struct ExemptionLog;

impl ExemptionLog {
    /// The log's path under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("events").join("exemptions.jsonl")
    }

    /// Replays `<data>/events/exemptions.jsonl`, compares it with `configured`, appends one line
    /// per difference (`{"at_s":…,"change":"added"|"removed","exemption":{…}}`), fsyncs, and
    /// returns the changes. Lines that do not parse (a torn last line) are skipped.
    ///
    /// # Errors
    /// The OS error of reading, writing or syncing.
    pub fn sync(
        data_dir: &Path,
        configured: &[Exemption],
        now_s: u32,
    ) -> std::io::Result<Vec<ExemptionChange>> {
        let path = Self::path(data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut in_force: Vec<String> = Vec::new();
        for line in text.lines() {
            let (added, rest) = if let Some(i) = line.find(r#""change":"added","exemption":"#) {
                (true, &line[i + r#""change":"added","exemption":"#.len()..])
            } else if let Some(i) = line.find(r#""change":"removed","exemption":"#) {
                (
                    false,
                    &line[i + r#""change":"removed","exemption":"#.len()..],
                )
            } else {
                continue;
            };
            let Some(exemption) = rest.strip_suffix('}') else {
                continue;
            };
            if added {
                if !in_force.iter().any(|e| e == exemption) {
                    in_force.push(exemption.to_string());
                }
            } else {
                in_force.retain(|e| e != exemption);
            }
        }
        let wanted: Vec<String> = configured.iter().map(exemption_json).collect();
        let mut changes = Vec::new();
        for e in &in_force {
            if !wanted.contains(e) {
                changes.push(ExemptionChange {
                    added: false,
                    exemption: e.clone(),
                });
            }
        }
        for e in &wanted {
            if !in_force.contains(e) && !changes.iter().any(|c| c.added && &c.exemption == e) {
                changes.push(ExemptionChange {
                    added: true,
                    exemption: e.clone(),
                });
            }
        }
        if changes.is_empty() {
            return Ok(changes);
        }
        let mut buf = String::new();
        for c in &changes {
            let kind = if c.added { "added" } else { "removed" };
            buf.push_str(&format!(
                r#"{{"at_s":{now_s},"change":"{kind}","exemption":{}}}"#,
                c.exemption
            ));
            buf.push('\n');
            tracing::info!(target: "hexflow::silence", change = kind, exemption = %c.exemption, "exemption changed");
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(buf.as_bytes())?;
        f.sync_data()?;
        Ok(changes)
    }
}

/// Path of the silence snapshot under `data_dir`.
pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("silence").join("snapshot.bin")
}

/// Writes `bytes` to `path` atomically: `<path>.tmp`, fsync, rename over `path`, fsync the
/// directory. A crash leaves either the old or the new snapshot, never a mix.
///
/// # Errors
/// The OS error of any step.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("bin.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the snapshot, `None` if there is none.
///
/// # Errors
/// The OS error other than "not found".
pub fn read_snapshot(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
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
        let c = ExemptionLog::sync(dir.path(), &[a.clone(), b.clone()], 100).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.added));
        // Same config again: nothing to record.
        assert!(
            ExemptionLog::sync(dir.path(), &[b.clone(), a.clone()], 200)
                .unwrap()
                .is_empty()
        );
        // b removed, a changed (new reason): removed a, removed b, added a'.
        let a2 = ex(1, "repair B");
        let c = ExemptionLog::sync(dir.path(), std::slice::from_ref(&a2), 300).unwrap();
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
            ExemptionLog::sync(dir.path(), std::slice::from_ref(&a2), 500)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_path(dir.path());
        assert_eq!(read_snapshot(&p).unwrap(), None);
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(read_snapshot(&p).unwrap().as_deref(), Some(&b"second"[..]));
        assert!(!p.with_extension("bin.tmp").exists());
    }
}
