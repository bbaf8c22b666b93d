//! Delta Lake log actions and commit files (pure).
//!
//! Contract: [`encode_commit`] writes one JSON object per line, each with exactly one
//! action key, as the Delta protocol (reader version 1, writer version 2) defines them;
//! [`decode_commit`] parses what any Delta writer produces: unknown action kinds are skipped
//! (they only matter to features this table never enables, and [`Protocol`] is checked
//! separately), a malformed line is an error naming the line. No IO.
//!
//! ```text
//! <table>/_delta_log/00000000000000000000.json            version 0: protocol + metaData
//! <table>/_delta_log/00000000000000000001.json            one commit = one atomic change
//! <table>/_delta_log/00000000000000000100.checkpoint.parquet   the state as of version 100
//! <table>/_delta_log/_last_checkpoint                      {"version":100,"size":N}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Partition values or tags: Delta writes them as a map of strings (null allowed).
pub type StringMap = BTreeMap<String, Option<String>>;

/// `protocol`: the versions a reader and writer must support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    /// 1: plain Parquet files, no reader features.
    pub min_reader_version: i32,
    /// 2: append-only and invariants (nothing this table uses needs more).
    pub min_writer_version: i32,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
        }
    }
}

/// `metaData.format`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// Always `parquet`.
    pub provider: String,
    /// Empty.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `metaData`: identity, schema and partitioning of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Unique id (a UUID).
    pub id: String,
    /// Table name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// File format.
    pub format: Format,
    /// The schema as Delta's JSON struct type.
    pub schema_string: String,
    /// Partition columns, in path order.
    pub partition_columns: Vec<String>,
    /// Table properties (`delta.*`).
    #[serde(default)]
    pub configuration: BTreeMap<String, String>,
    /// Creation time, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

/// `add`: a data file joins the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// Path relative to the table root (URL-encoding is not used: names are plain ASCII).
    pub path: String,
    /// Partition column -> value as written in the path.
    pub partition_values: StringMap,
    /// Bytes.
    pub size: i64,
    /// Unix ms.
    pub modification_time: i64,
    /// False for a rewrite that does not change the table's rows (compaction).
    pub data_change: bool,
    /// Column statistics as JSON ([`crate::stats::FileStats`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    /// Writer's tags (`hexflow.row_groups`, `hexflow.rows_per_row_group_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<StringMap>,
}

/// `remove`: a data file leaves the table (a tombstone until vacuum deletes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    /// Path relative to the table root.
    pub path: String,
    /// When it was removed, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    /// False for a rewrite (compaction).
    pub data_change: bool,
    /// True: partition values and size are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    /// The file's partition values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<StringMap>,
    /// The file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// `txn`: the version an application reached (idempotent writes: the WAL lsn a flush
/// covers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    /// Application id.
    pub app_id: String,
    /// Its version.
    pub version: i64,
    /// Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// `commitInfo`: provenance, for people (readers ignore it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    /// Unix ms.
    pub timestamp: i64,
    /// `WRITE`, `OPTIMIZE`, `DELETE`, `CREATE TABLE`.
    pub operation: String,
    /// Parameters of the operation (never a device id: the log outlives erasures).
    #[serde(default)]
    pub operation_parameters: BTreeMap<String, String>,
    /// `hexflow/<version>`.
    #[serde(default)]
    pub engine_info: String,
}

/// One log action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `protocol`.
    Protocol(Protocol),
    /// `metaData`.
    Metadata(Metadata),
    /// `add`.
    Add(Add),
    /// `remove`.
    Remove(Remove),
    /// `txn`.
    Txn(Txn),
    /// `commitInfo`.
    CommitInfo(CommitInfo),
}

/// Why a commit file could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A line that is not a JSON object with one action.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line.
        line: usize,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A line with no key or several.
    #[error("line {line}: expected one action key, found {keys}")]
    Shape {
        /// 1-based line.
        line: usize,
        /// How many keys.
        keys: usize,
    },
}

fn line<T: Serialize>(key: &str, v: &T) -> String {
    // Fields in declaration order, as other Delta writers print them.
    let body = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    format!("{{\"{key}\":{body}}}")
}

/// Encodes actions as a commit file (JSON lines, `\n` after each).
pub fn encode_commit(actions: &[Action]) -> Vec<u8> {
    let mut out = String::new();
    for a in actions {
        let l = match a {
            Action::Protocol(p) => line("protocol", p),
            Action::Metadata(m) => line("metaData", m),
            Action::Add(x) => line("add", x),
            Action::Remove(x) => line("remove", x),
            Action::Txn(x) => line("txn", x),
            Action::CommitInfo(x) => line("commitInfo", x),
        };
        out.push_str(&l);
        out.push('\n');
    }
    out.into_bytes()
}

/// Decodes a commit file (or the JSON lines of a checkpoint).
///
/// # Errors
/// [`LogError`] naming the first bad line.
pub fn decode_commit(bytes: &[u8]) -> Result<Vec<Action>, LogError> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let json = |source| LogError::Json { line, source };
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(l).map_err(json)?;
        // A checkpoint row rendered as JSON carries the other columns as nulls.
        let present: Vec<_> = obj.iter().filter(|(_, v)| !v.is_null()).collect();
        let [(key, value)] = present.as_slice() else {
            return Err(LogError::Shape {
                line,
                keys: present.len(),
            });
        };
        let v = (*value).clone();
        let action = match key.as_str() {
            "protocol" => Action::Protocol(serde_json::from_value(v).map_err(json)?),
            "metaData" => Action::Metadata(serde_json::from_value(v).map_err(json)?),
            "add" => Action::Add(serde_json::from_value(v).map_err(json)?),
            "remove" => Action::Remove(serde_json::from_value(v).map_err(json)?),
            "txn" => Action::Txn(serde_json::from_value(v).map_err(json)?),
            "commitInfo" => Action::CommitInfo(serde_json::from_value(v).map_err(json)?),
            _ => continue,
        };
        out.push(action);
    }
    Ok(out)
}

/// `_delta_log/<version:020>.json`.
pub fn commit_name(version: u64) -> String {
    format!("{version:020}.json")
}

/// `_delta_log/<version:020>.checkpoint.parquet`.
pub fn checkpoint_name(version: u64) -> String {
    format!("{version:020}.checkpoint.parquet")
}

/// What a `_delta_log/` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogFile {
    /// A commit of that version.
    Commit(u64),
    /// A single-file checkpoint of that version.
    Checkpoint(u64),
}

/// Parses a `_delta_log/` file name (other names: `None`).
pub fn parse_log_name(name: &str) -> Option<LogFile> {
    let digits = |s: &str| {
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(v) = name.strip_suffix(".checkpoint.parquet") {
        return digits(v).map(LogFile::Checkpoint);
    }
    name.strip_suffix(".json")
        .and_then(digits)
        .map(LogFile::Commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_round_trip_and_foreign_actions() {
        let actions = vec![
            Action::Txn(Txn {
                app_id: "w".into(),
                version: 7,
                last_updated: Some(1),
            }),
            Action::Add(Add {
                path: "date=2026-11-25/part-1.parquet".into(),
                partition_values: [("date".to_string(), Some("2026-11-25".to_string()))].into(),
                size: 10,
                modification_time: 5,
                data_change: true,
                stats: Some("{\"numRecords\":3}".into()),
                tags: None,
            }),
            Action::Remove(Remove {
                path: "x.parquet".into(),
                deletion_timestamp: Some(9),
                data_change: false,
                extended_file_metadata: None,
                partition_values: None,
                size: None,
            }),
        ];
        let bytes = encode_commit(&actions);
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert_eq!(text.lines().count(), 3);
        assert!(text.starts_with("{\"txn\":{\"appId\":\"w\",\"version\":7"));
        assert_eq!(decode_commit(&bytes).expect("decode"), actions);
        // Spark and delta-rs write actions this table never uses: skipped.
        let foreign = b"{\"cdc\":{\"path\":\"x\"}}\n{\"txn\":{\"appId\":\"a\",\"version\":1}}\n";
        assert_eq!(decode_commit(foreign).expect("decode").len(), 1);
        assert!(matches!(
            decode_commit(b"{\"add\":1,\"txn\":2}"),
            Err(LogError::Shape { line: 1, keys: 2 })
        ));
        assert!(matches!(
            decode_commit(b"\n{oops"),
            Err(LogError::Json { line: 2, .. })
        ));
    }

    #[test]
    fn log_names() {
        assert_eq!(commit_name(12), "00000000000000000012.json");
        assert_eq!(parse_log_name(&commit_name(12)), Some(LogFile::Commit(12)));
        assert_eq!(
            parse_log_name(&checkpoint_name(100)),
            Some(LogFile::Checkpoint(100))
        );
        assert_eq!(parse_log_name("_last_checkpoint"), None);
        assert_eq!(parse_log_name("12.json"), None);
        assert_eq!(parse_log_name(".00000000000000000012.json.1-0.tmp"), None);
    }
}
