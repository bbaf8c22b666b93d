//! Delta checkpoints: a table's whole state at one version as one Parquet file.
//!
//! Contract: [`encode`] writes the classic single-file checkpoint of the Delta protocol:
//! one row per action, top-level columns `txn`, `add`, `remove`, `metaData`, `protocol`
//! (exactly one non-null per row), maps as `key_value` entries of `key`/`value` strings and
//! every field nullable, as Spark writes them, so delta-rs, Spark and this crate read it.
//! [`decode`] reads any such file (ours or another writer's) back into actions. The rows go
//! through the same JSON form as commit files (arrow's JSON codec), so there is one
//! definition of each action: [`crate::log`]. Pure (bytes in, bytes out).

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::log::{self, Action, LogError};

/// `_delta_log/_last_checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCheckpoint {
    /// Version of the newest checkpoint.
    pub version: u64,
    /// Actions in it.
    pub size: u64,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Parquet encoding or decoding failed.
    #[error("checkpoint parquet: {0}")]
    Parquet(#[from] ParquetError),
    /// Arrow's JSON codec rejected a row.
    #[error("checkpoint rows: {0}")]
    Arrow(#[from] ArrowError),
    /// A row is not a valid action.
    #[error("checkpoint action: {0}")]
    Action(#[from] LogError),
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn map(name: &str) -> Field {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            s("value"),
        ])),
        false,
    );
    Field::new(name, DataType::Map(Arc::new(entries), false), true)
}

fn strukt(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

/// The checkpoint schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let boolean = |n: &str| Field::new(n, DataType::Boolean, true);
            let int = |n: &str| Field::new(n, DataType::Int32, true);
            Arc::new(Schema::new(vec![
                strukt(
                    "txn",
                    vec![s("appId"), i64f("version"), i64f("lastUpdated")],
                ),
                strukt(
                    "add",
                    vec![
                        s("path"),
                        map("partitionValues"),
                        i64f("size"),
                        i64f("modificationTime"),
                        boolean("dataChange"),
                        s("stats"),
                        map("tags"),
                    ],
                ),
                strukt(
                    "remove",
                    vec![
                        s("path"),
                        i64f("deletionTimestamp"),
                        boolean("dataChange"),
                        boolean("extendedFileMetadata"),
                        map("partitionValues"),
                        i64f("size"),
                    ],
                ),
                strukt(
                    "metaData",
                    vec![
                        s("id"),
                        s("name"),
                        s("description"),
                        strukt("format", vec![s("provider"), map("options")]),
                        s("schemaString"),
                        Field::new(
                            "partitionColumns",
                            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                            true,
                        ),
                        map("configuration"),
                        i64f("createdTime"),
                    ],
                ),
                strukt(
                    "protocol",
                    vec![int("minReaderVersion"), int("minWriterVersion")],
                ),
            ]))
        })
        .clone()
}

/// Rows per Arrow batch while encoding or decoding (bounds memory per step).
const BATCH_ROWS: usize = 8_192;

/// Encodes actions as a checkpoint Parquet file.
///
/// # Errors
/// [`CheckpointError`] (a bug: the actions come from [`crate::log`]).
pub fn encode(actions: &[Action]) -> Result<Vec<u8>, CheckpointError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(props))?;
    for chunk in actions.chunks(BATCH_ROWS) {
        let json = log::encode_commit(chunk);
        let mut decoder = arrow::json::ReaderBuilder::new(schema())
            .with_batch_size(BATCH_ROWS)
            .build_decoder()?;
        let mut at = 0;
        while at < json.len() {
            let n = decoder.decode(&json[at..])?;
            if n == 0 {
                break;
            }
            at += n;
        }
        if let Some(batch) = decoder.flush()? {
            writer.write(&batch)?;
        }
    }
    Ok(writer.into_inner()?)
}

fn batch_json(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(false)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner())
}

/// Decodes a checkpoint file into actions.
///
/// # Errors
/// [`CheckpointError`] when the bytes are not a readable checkpoint.
pub fn decode(bytes: Vec<u8>) -> Result<Vec<Action>, CheckpointError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?
        .with_batch_size(BATCH_ROWS)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        out.extend(log::decode_commit(&batch_json(&batch?)?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Add, Format, Metadata, Protocol, Remove, Txn};

    #[test]
    fn checkpoint_round_trips_every_action_kind() {
        let actions = vec![
            Action::Protocol(Protocol::default()),
            Action::Metadata(Metadata {
                id: "0b6b4a0e-0000-4000-8000-000000000001".into(),
                name: Some("positions".into()),
                description: None,
                format: Format {
                    provider: "parquet".into(),
                    options: Default::default(),
                },
                schema_string: "{\"type\":\"struct\",\"fields\":[]}".into(),
                partition_columns: vec!["date".into()],
                configuration: [("delta.appendOnly".to_string(), "false".to_string())].into(),
                created_time: Some(1),
            }),
            Action::Txn(Txn {
                app_id: "hexflow-positions".into(),
                version: 42,
                last_updated: None,
            }),
            Action::Add(Add {
                path: "date=2026-11-25/part-1.parquet".into(),
                partition_values: [("date".to_string(), Some("2026-11-25".to_string()))].into(),
                size: 1234,
                modification_time: 99,
                data_change: true,
                stats: Some("{\"numRecords\":7}".into()),
                tags: Some([("hexflow.row_groups".to_string(), Some("1".to_string()))].into()),
            }),
            Action::Remove(Remove {
                path: "date=2026-11-24/part-0.parquet".into(),
                deletion_timestamp: Some(5),
                data_change: false,
                extended_file_metadata: Some(true),
                partition_values: Some(
                    [("date".to_string(), Some("2026-11-24".to_string()))].into(),
                ),
                size: Some(10),
            }),
        ];
        let bytes = encode(&actions).expect("encode");
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(decode(bytes).expect("decode"), actions);
    }
}
