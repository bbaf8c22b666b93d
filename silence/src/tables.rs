//! Silence events and daily device status as Parquet tables beside `positions`.
//!
//! ```text
//! <data>/events/date=YYYY-MM-DD/part-<from_seq:020>-<to_seq:020>.parquet   one row per event
//! <data>/device_status/date=YYYY-MM-DD/part-YYYYMMDD.parquet               one row per device
//! ```
//!
//! Contract:
//! - Every file is published the way `positions` files are
//!   ([`storage::writer::publish_parquet`]): `.part-….parquet.tmp`, fsync, rename, fsync of the
//!   directory (and of the parent of every directory created). Readers never see a partial file.
//! - Names are deterministic. Events carry a sequence number (1, 2, … over the life of the
//!   data directory, recovered at start from the names already published); a flush names every
//!   file it writes after the sequence range it holds, so a retried flush rewrites the same
//!   names with the same rows. A day's device status file is named after the day.
//! - Events are partitioned by the UTC date of the scan that produced them (`at`), device
//!   status by the UTC date it was taken.
//! - Column types every reader understands: times `TIMESTAMP(MICROS, UTC)`, ids and seconds
//!   `Int64`, kinds, policies and levels as strings; nullable exactly where the JSON line has
//!   `null` or omits the key ([`events_schema`]).
//! - Bounded: at most `rows_max` events are buffered; when a flush fails and the buffer is
//!   full, further events are counted as dropped from the table (they are still in
//!   `silence.jsonl`, which is written first) instead of growing memory.
//! - The JSON Lines file is the durable record; a crash loses at most the events buffered for
//!   the table (at most `flush_interval_ms` of them), never a line of `silence.jsonl`.
//!
//! Never: rewrites a published file with different rows, reads the clock (callers pass `now`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{EventKind, PolicySet, SilenceEvent, SilenceTable};
use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use storage::writer::{FlushError, ParquetOptions, publish_parquet, writer_properties_sorted_by};
use sys::fs::{Fs, RealFs};

const US_PER_S: i64 = 1_000_000;
const S_PER_DAY: i64 = 86_400;

/// Rows per Arrow batch when streaming the device status (bounds memory at 10M devices).
const STATUS_CHUNK_ROWS: usize = 65_536;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of the `events` table. Column ↔ JSON key (`to_json_line`):
///
/// | column | type | null | JSON |
/// |---|---|---|---|
/// | `seq` | Int64 | no | (none: the event's sequence number, unique in the data directory) |
/// | `at` | timestamp µs UTC | no | `at_s` |
/// | `device_id` | Int64 | no | `device_id` |
/// | `kind` | string | no | `kind` |
/// | `policy` | string | no | `policy` |
/// | `from_level`, `to_level` | string | no | `from`, `to` |
/// | `last_fix`, `last_contact` | timestamp µs UTC | yes | `last_fix_s`, `last_contact_s` |
/// | `threshold_s` | Int64 | no | `threshold_s` |
/// | `silent_since` | timestamp µs UTC | yes | `silent_since_s` (`resumed` only) |
/// | `silent_s` | Int64 | yes | `silent_s` (`resumed` only) |
/// | `confirmed_at` | timestamp µs UTC | yes | `confirmed_at_s` (`confirmed` only) |
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("at", ts_type(), false),
        Field::new("device_id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("policy", DataType::Utf8, false),
        Field::new("from_level", DataType::Utf8, false),
        Field::new("to_level", DataType::Utf8, false),
        Field::new("last_fix", ts_type(), true),
        Field::new("last_contact", ts_type(), true),
        Field::new("threshold_s", DataType::Int64, false),
        Field::new("silent_since", ts_type(), true),
        Field::new("silent_s", DataType::Int64, true),
        Field::new("confirmed_at", ts_type(), true),
    ]))
}

/// Schema of the `device_status` table: one row per tracked device when the snapshot was taken.
///
/// | column | type | null | meaning |
/// |---|---|---|---|
/// | `taken_at` | timestamp µs UTC | no | when the snapshot was taken |
/// | `device_id` | Int64 | no | the device |
/// | `last_fix` | timestamp µs UTC | yes | newest fix (device clock); null: never sent one |
/// | `last_contact` | timestamp µs UTC | yes | newest contact (server clock); null: none |
/// | `level` | string | no | `reporting`, `warned` or `expired` (as of the last scan) |
/// | `silent_since` | timestamp µs UTC | yes | when its silence is counted from; null: reporting |
/// | `policy` | string | no | its policy |
/// | `group` | string | yes | its group; null: in no group |
pub fn device_status_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("taken_at", ts_type(), false),
        Field::new("device_id", DataType::Int64, false),
        Field::new("last_fix", ts_type(), true),
        Field::new("last_contact", ts_type(), true),
        Field::new("level", DataType::Utf8, false),
        Field::new("silent_since", ts_type(), true),
        Field::new("policy", DataType::Utf8, false),
        Field::new("group", DataType::Utf8, true),
    ]))
}

/// `date=YYYY-MM-DD` of the UTC day holding Unix second `s`.
pub fn date_dir(s: u32) -> PathBuf {
    let d = storage::partition::date_from_days(i64::from(s).div_euclid(S_PER_DAY));
    PathBuf::from(format!("date={:04}-{:02}-{:02}", d.year, d.month, d.day))
}

/// Name of the events file holding sequence numbers `from_seq..=to_seq`: named as the
/// positions table's parts ([`storage::partition::part_file_name`]).
pub fn events_file_name(from_seq: u64, to_seq: u64) -> String {
    storage::partition::part_file_name(from_seq, to_seq)
}

/// Parses [`events_file_name`] back to `(from_seq, to_seq)`.
pub fn parse_events_file_name(name: &str) -> Option<(u64, u64)> {
    storage::partition::parse_part_file_name(name)
}

/// Name of the device status file of the UTC day holding `s`.
pub fn device_status_file_name(s: u32) -> String {
    let d = storage::partition::date_from_days(i64::from(s).div_euclid(S_PER_DAY));
    format!("part-{:04}{:02}{:02}.parquet", d.year, d.month, d.day)
}

/// An events-table or device-status operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Listing published files at start failed.
    #[error("listing {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Publishing a file failed (the buffer is kept for the retry).
    #[error(transparent)]
    Publish(#[from] FlushError),
}

/// What one [`EventTable::flush`] published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFlush {
    /// Files published (one per date partition).
    pub files: Vec<PathBuf>,
    /// Rows written.
    pub rows: usize,
}

/// Settings of the events table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTableConfig {
    /// Events buffered at most.
    pub rows_max: usize,
    /// Publish when the oldest buffered event has waited this long (0: after every scan that
    /// produced events).
    pub flush_interval_ms: u64,
    /// Encoding.
    pub parquet: ParquetOptions,
}

/// Buffers events and publishes them to `<data>/events/date=…/`.
#[derive(Debug)]
pub struct EventTable {
    fs: Arc<dyn Fs>,
    /// The data directory; files go to `events/date=…/` under it.
    data_dir: PathBuf,
    cfg: EventTableConfig,
    policy_names: Vec<String>,
    buffered: Vec<SilenceEvent>,
    /// Sequence number of `buffered[0]`.
    next_seq: u64,
    /// When the oldest buffered event was added (ms, caller's clock).
    oldest_ms: Option<i64>,
    dropped: u64,
}

impl EventTable {
    /// Opens the table under `data_dir/events`, continuing the sequence after the highest one
    /// published. `policy_names[i]` names policy index `i`.
    ///
    /// # Errors
    /// [`TableError::List`] when the directory cannot be read.
    pub fn open(
        data_dir: &Path,
        cfg: EventTableConfig,
        policy_names: Vec<String>,
    ) -> Result<Self, TableError> {
        Self::open_with_fs(Arc::new(RealFs), data_dir, cfg, policy_names)
    }

    /// As [`EventTable::open`], through `fs`.
    ///
    /// # Errors
    /// As [`EventTable::open`].
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        data_dir: &Path,
        cfg: EventTableConfig,
        policy_names: Vec<String>,
    ) -> Result<Self, TableError> {
        let events_dir = data_dir.join("events");
        let mut last_seq = 0u64;
        let list = |path: &Path| match fs.list_dir(path) {
            Ok(entries) => Ok(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(TableError::List {
                path: path.to_path_buf(),
                source,
            }),
        };
        for dir in list(&events_dir)? {
            if !dir.is_dir || !dir.name.starts_with("date=") {
                continue;
            }
            for f in list(&dir.path)? {
                if let Some((_, to)) = parse_events_file_name(&f.name) {
                    last_seq = last_seq.max(to);
                }
            }
        }
        Ok(Self {
            fs,
            data_dir: data_dir.to_path_buf(),
            cfg: EventTableConfig {
                rows_max: cfg.rows_max.max(1),
                ..cfg
            },
            policy_names,
            buffered: Vec::new(),
            next_seq: last_seq + 1,
            oldest_ms: None,
            dropped: 0,
        })
    }

    /// Events buffered.
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// Events not added to the table because the buffer was full and could not be flushed.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The sequence number the next buffered event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq + self.buffered.len() as u64
    }

    /// Adds `events` at `now_ms`, flushing first whenever the buffer would exceed `rows_max`.
    /// Events that find the buffer full after a failed flush are dropped and counted. Returns
    /// the flushes it made (their errors are returned as the first error after adding what
    /// fits).
    ///
    /// # Errors
    /// The first [`TableError`] of a flush made to make room.
    pub fn push(&mut self, events: &[SilenceEvent], now_ms: i64) -> Result<usize, TableError> {
        let mut rest = events;
        let mut first_err = None;
        let mut flushed = 0;
        while !rest.is_empty() {
            if self.buffered.len() >= self.cfg.rows_max {
                match self.flush() {
                    Ok(f) => flushed += f.rows,
                    Err(e) => {
                        self.dropped += rest.len() as u64;
                        first_err.get_or_insert(e);
                        break;
                    }
                }
            }
            let room = self.cfg.rows_max - self.buffered.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buffered.extend_from_slice(now);
            self.oldest_ms.get_or_insert(now_ms);
            rest = later;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(flushed),
        }
    }

    /// Whether a flush is due at `now_ms`: something is buffered and the oldest buffered event
    /// has waited `flush_interval_ms`, or the buffer is full. Pure.
    pub fn due(&self, now_ms: i64) -> bool {
        match self.oldest_ms {
            None => false,
            Some(oldest) => {
                self.buffered.len() >= self.cfg.rows_max
                    || now_ms.saturating_sub(oldest)
                        >= i64::try_from(self.cfg.flush_interval_ms).unwrap_or(i64::MAX)
            }
        }
    }

    /// Publishes every buffered event, one file per date partition, all named after the
    /// buffer's sequence range. Keeps the buffer when anything fails.
    ///
    /// # Errors
    /// [`TableError::Publish`].
    pub fn flush(&mut self) -> Result<EventFlush, TableError> {
        if self.buffered.is_empty() {
            return Ok(EventFlush::default());
        }
        let from_seq = self.next_seq;
        let to_seq = from_seq + self.buffered.len() as u64 - 1;
        let name = events_file_name(from_seq, to_seq);
        let mut by_date: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (i, e) in self.buffered.iter().enumerate() {
            by_date
                .entry(Path::new("events").join(date_dir(e.at_s)))
                .or_default()
                .push(i);
        }
        let props = writer_properties_sorted_by(self.cfg.parquet, &[1, 2]).map_err(|source| {
            FlushError::Parquet {
                path: self.data_dir.join("events"),
                source,
            }
        })?;
        let mut out = EventFlush::default();
        for (rel, rows) in &by_date {
            let batch = self.event_batch(rows, from_seq);
            let path = publish_parquet(
                &*self.fs,
                &self.data_dir,
                rel,
                &name,
                events_schema(),
                [batch],
                props.clone(),
            )?;
            out.files.push(path);
            out.rows += rows.len();
        }
        self.next_seq = to_seq + 1;
        self.buffered.clear();
        self.oldest_ms = None;
        Ok(out)
    }

    /// The rows `idx` of the buffer (sorted by `(at, device_id)`) as one batch.
    fn event_batch(&self, idx: &[usize], from_seq: u64) -> Result<RecordBatch, ArrowError> {
        let mut idx = idx.to_vec();
        idx.sort_by_key(|&i| (self.buffered[i].at_s, self.buffered[i].device_id, i));
        let n = idx.len();
        let mut seq = Int64Builder::with_capacity(n);
        let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut device = Int64Builder::with_capacity(n);
        let mut kind = StringBuilder::new();
        let mut policy = StringBuilder::new();
        let mut from = StringBuilder::new();
        let mut to = StringBuilder::new();
        let mut last_fix = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut last_contact = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut threshold = Int64Builder::with_capacity(n);
        let mut silent_since = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut silent = Int64Builder::with_capacity(n);
        let mut confirmed = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for &i in &idx {
            let e = &self.buffered[i];
            seq.append_value(i64::try_from(from_seq + i as u64).unwrap_or(i64::MAX));
            at.append_value(us(e.at_s));
            device.append_value(e.device_id as i64);
            kind.append_value(e.kind.as_str());
            policy.append_value(
                self.policy_names
                    .get(usize::from(e.policy))
                    .map_or("", String::as_str),
            );
            from.append_value(e.from.as_str());
            to.append_value(e.to.as_str());
            last_fix.append_option(us_nonzero(e.last_fix_s));
            last_contact.append_option(us_nonzero(e.last_contact_s));
            threshold.append_value(i64::try_from(e.threshold_s).unwrap_or(i64::MAX));
            match e.kind {
                EventKind::Resumed { silent_since_s } => {
                    silent_since.append_value(us(silent_since_s));
                    silent.append_option(e.silent_interval_s().map(i64::from));
                }
                _ => {
                    silent_since.append_null();
                    silent.append_null();
                }
            }
            match e.kind {
                EventKind::Confirmed { confirmed_at_s } => {
                    confirmed.append_value(us(confirmed_at_s));
                }
                _ => confirmed.append_null(),
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(seq.finish()),
            Arc::new(at.finish()),
            Arc::new(device.finish()),
            Arc::new(kind.finish()),
            Arc::new(policy.finish()),
            Arc::new(from.finish()),
            Arc::new(to.finish()),
            Arc::new(last_fix.finish()),
            Arc::new(last_contact.finish()),
            Arc::new(threshold.finish()),
            Arc::new(silent_since.finish()),
            Arc::new(silent.finish()),
            Arc::new(confirmed.finish()),
        ];
        RecordBatch::try_new(events_schema(), columns)
    }
}

fn us(s: u32) -> i64 {
    i64::from(s) * US_PER_S
}

fn us_nonzero(s: u32) -> Option<i64> {
    (s != 0).then(|| us(s))
}

/// Whether `<data>/device_status/date=<day of now_s>/` already holds that day's file (looked
/// up through `fs`; an unreadable directory counts as "not there", so the write is tried and
/// its error reported).
pub fn device_status_exists(fs: &dyn Fs, data_dir: &Path, now_s: u32) -> bool {
    let dir = data_dir.join("device_status").join(date_dir(now_s));
    let name = device_status_file_name(now_s);
    fs.list_dir(&dir)
        .is_ok_and(|entries| entries.iter().any(|e| !e.is_dir && e.name == name))
}

/// Writes the status at `taken_s` of every device tracked in `table` to
/// `<data>/device_status/date=…/part-YYYYMMDD.parquet`, with its policy and group from `set`.
/// Streams in batches of 65,536 rows. Returns the path and the row count.
///
/// # Errors
/// [`TableError::Publish`].
pub fn write_device_status(
    fs: &dyn Fs,
    data_dir: &Path,
    taken_s: u32,
    table: &SilenceTable,
    set: &PolicySet,
    parquet: ParquetOptions,
) -> Result<(PathBuf, usize), TableError> {
    let mut ids = table.device_ids().peekable();
    let root = data_dir.join("device_status");
    let rel = Path::new("device_status").join(date_dir(taken_s));
    let props =
        writer_properties_sorted_by(parquet, &[1]).map_err(|source| FlushError::Parquet {
            path: root.clone(),
            source,
        })?;
    let mut rows = 0usize;
    let mut first = true;
    let batches = std::iter::from_fn(|| {
        // Always yield at least one (possibly empty) batch so the file has a row group schema.
        if ids.peek().is_none() && !first {
            return None;
        }
        first = false;
        let mut chunk: Vec<u64> = Vec::with_capacity(STATUS_CHUNK_ROWS);
        for id in ids.by_ref() {
            chunk.push(id);
            if chunk.len() == STATUS_CHUNK_ROWS {
                break;
            }
        }
        chunk.sort_unstable();
        let batch = status_batch(taken_s, &chunk, table, set);
        if let Ok(b) = &batch {
            rows += b.num_rows();
        }
        Some(batch)
    });
    let path = publish_parquet(
        fs,
        data_dir,
        &rel,
        &device_status_file_name(taken_s),
        device_status_schema(),
        batches,
        props,
    )?;
    Ok((path, rows))
}

fn status_batch(
    taken_s: u32,
    ids: &[u64],
    table: &SilenceTable,
    set: &PolicySet,
) -> Result<RecordBatch, ArrowError> {
    let n = ids.len();
    let mut taken = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut device = Int64Builder::with_capacity(n);
    let mut last_fix = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut last_contact = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut level = StringBuilder::new();
    let mut silent_since = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut policy = StringBuilder::new();
    let mut group = StringBuilder::new();
    for &id in ids {
        // A device is never removed from the table, so every id of the snapshot is found.
        let Some(state) = table.get(id) else {
            continue;
        };
        let a = set.assignment(id);
        taken.append_value(us(taken_s));
        device.append_value(id as i64);
        last_fix.append_option(state.last_fix_s.map(us));
        last_contact.append_option(state.last_contact_s.map(us));
        level.append_value(state.level.as_str());
        silent_since.append_option(state.silent_since_s.map(us));
        policy.append_value(
            set.policies()
                .get(usize::from(a.policy))
                .map_or("", |p| p.name.as_str()),
        );
        group.append_option(
            a.group
                .and_then(|g| set.groups().get(usize::from(g)))
                .map(|g| g.name.as_str()),
        );
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(taken.finish()),
        Arc::new(device.finish()),
        Arc::new(last_fix.finish()),
        Arc::new(last_contact.finish()),
        Arc::new(level.finish()),
        Arc::new(silent_since.finish()),
        Arc::new(policy.finish()),
        Arc::new(group.finish()),
    ];
    RecordBatch::try_new(device_status_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(
            events_file_name(1, 12),
            "part-00000000000000000001-00000000000000000012.parquet"
        );
        assert_eq!(
            parse_events_file_name(&events_file_name(7, 9)),
            Some((7, 9))
        );
        assert_eq!(parse_events_file_name("part-1-2.parquet"), None);
        // 2026-11-25T23:59:59Z and the next second.
        assert_eq!(date_dir(1_795_651_199), PathBuf::from("date=2026-11-25"));
        assert_eq!(date_dir(1_795_651_200), PathBuf::from("date=2026-11-26"));
        assert_eq!(
            device_status_file_name(1_795_651_200),
            "part-20261126.parquet"
        );
    }

    #[test]
    fn device_ids_lists_every_tracked_device() {
        let t = SilenceTable::with_capacity(8).expect("table");
        t.record_fix(5, 100).expect("record");
        t.record_contact(9, 200).expect("record");
        let mut ids: Vec<u64> = t.device_ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![5, 9]);
    }
}
