//! The silence events log: one JSON object per line in `<data-dir>/events/silence.jsonl`,
//! appended and fsynced after each scan that produced events, and echoed as structured log
//! lines. The line format is the one of [`ingest::silence::SilenceEvent::to_json_line`] and
//! is documented in `docs/ARCHITECTURE.md`.

use std::io::Write;
use std::path::{Path, PathBuf};

use ingest::silence::SilenceEvent;

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

    /// Appends `events`, one line each, then fsyncs. Also logs each one.
    ///
    /// # Errors
    /// The OS error if the write or fsync fails.
    pub fn append(&mut self, events: &[SilenceEvent]) -> std::io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for e in events {
            let line = e.to_json_line();
            tracing::info!(target: "hexflow::silence", event = %line, "silence transition");
            self.buf.extend_from_slice(line.as_bytes());
            self.buf.push(b'\n');
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()
    }
}
