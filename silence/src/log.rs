//! The silence logs under the data directory: the events log and the exemptions log.
//!
//! * `<data>/events/silence.jsonl`: one JSON object per line
//!   ([`crate::SilenceEvent::to_json_line`]), appended and fsynced after each scan that
//!   produced events, and echoed as structured log lines.
//! * `<data>/events/exemptions.jsonl`: append-only; at start the configured exemptions are
//!   compared with the set the log ends with, and every difference is appended as an `added` or
//!   `removed` line ([`ExemptionLog::sync`]). Replaying the log gives the set in force.
//!
//! Every file operation goes through [`sys::fs::Fs`]: a log is created (its name made durable
//! by an fsync of the directory) when missing, then only appended to at its current end, and
//! every append is followed by `fdatasync` before it returns.
//!
//! Never: rewrites or truncates a log.

use std::path::{Path, PathBuf};

use sys::fs::{Fs, FsFile, create_dir_durable};

use crate::{Exemption, ExemptionTarget, JsonStr, SilenceEvent};

/// Opens `dir/name` for appending, creating it (and making its name durable) when missing.
fn open_append(fs: &dyn Fs, dir: &Path, name: &str) -> std::io::Result<Box<dyn FsFile>> {
    let path = dir.join(name);
    match fs.open_write(&path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = fs.create(&path)?;
            fs.sync_dir(dir)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// Appends `bytes` at the end of `file` and fsyncs its data.
fn append(file: &mut dyn FsFile, bytes: &[u8]) -> std::io::Result<()> {
    let end = file.len_bytes()?;
    file.write_all_at(bytes, end)?;
    file.sync_data()
}

/// Append-only JSON Lines file of silence events.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: Box<dyn FsFile>,
    buf: Vec<u8>,
}

impl EventLog {
    /// The log's path under `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("events").join("silence.jsonl")
    }

    /// Opens (creating) `<data_dir>/events/silence.jsonl` for appending, through `fs`.
    ///
    /// # Errors
    /// The OS error of creating the directory or opening the file.
    pub fn open(fs: &dyn Fs, data_dir: &Path) -> std::io::Result<Self> {
        create_dir_durable(fs, data_dir, Path::new("events"))?;
        let file = open_append(fs, &data_dir.join("events"), "silence.jsonl")?;
        Ok(Self {
            path: Self::path_in(data_dir),
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
        append(&mut *self.file, &self.buf)
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

const ADDED: &str = r#""change":"added","exemption":"#;
const REMOVED: &str = r#""change":"removed","exemption":"#;

impl ExemptionLog {
    /// The log's path under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("events").join("exemptions.jsonl")
    }

    /// Replays `<data>/events/exemptions.jsonl`, compares it with `configured`, appends one line
    /// per difference (`{"at_s":…,"change":"added"|"removed","exemption":{…}}`), fsyncs, and
    /// returns the changes. Lines that do not parse (a torn last line) are skipped. Every file
    /// operation goes through `fs`.
    ///
    /// # Errors
    /// The OS error of reading, writing or syncing.
    pub fn sync(
        fs: &dyn Fs,
        data_dir: &Path,
        configured: &[Exemption],
        now_s: u32,
    ) -> std::io::Result<Vec<ExemptionChange>> {
        create_dir_durable(fs, data_dir, Path::new("events"))?;
        let path = Self::path(data_dir);
        let text = sys::fs::read_optional(fs, &path)?.unwrap_or_default();
        let in_force = Self::replay(&String::from_utf8_lossy(&text));
        let wanted: Vec<String> = configured.iter().map(exemption_json).collect();
        let changes = Self::changes(&in_force, &wanted);
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
        let mut file = open_append(fs, &data_dir.join("events"), "exemptions.jsonl")?;
        append(&mut *file, buf.as_bytes())?;
        Ok(changes)
    }

    /// The exemptions (as [`exemption_json`]) in force after the log `text`, in the order
    /// they were added. Pure.
    fn replay(text: &str) -> Vec<String> {
        let mut in_force: Vec<String> = Vec::new();
        for line in text.lines() {
            let (added, rest) = if let Some(i) = line.find(ADDED) {
                (true, &line[i + ADDED.len()..])
            } else if let Some(i) = line.find(REMOVED) {
                (false, &line[i + REMOVED.len()..])
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
        in_force
    }

    /// What turns `in_force` into `wanted`: removals first, then additions. Pure.
    fn changes(in_force: &[String], wanted: &[String]) -> Vec<ExemptionChange> {
        let mut changes = Vec::new();
        for e in in_force {
            if !wanted.contains(e) {
                changes.push(ExemptionChange {
                    added: false,
                    exemption: e.clone(),
                });
            }
        }
        for e in wanted {
            if !in_force.contains(e) && !changes.iter().any(|c| c.added && &c.exemption == e) {
                changes.push(ExemptionChange {
                    added: true,
                    exemption: e.clone(),
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests;
