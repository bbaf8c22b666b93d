//! A table's definition: its file schema, partition columns and Delta schema string (pure).
//!
//! Contract: [`TableSpec::schema_string`] is the Delta JSON schema of the table: the file
//! columns in file order, then the partition columns (which live in the path, never in
//! the files, as hive and Delta both expect). Only the Arrow types a Delta reader at
//! protocol 1 understands are accepted ([`SchemaError`] otherwise).

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use serde_json::{Value, json};

/// The type of a partition column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// `date` (`YYYY-MM-DD` in the path).
    Date,
    /// `integer`.
    Int,
    /// `long`.
    Long,
}

/// One partition column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    /// Name (the `key` of `key=value` directories).
    pub name: String,
    /// Type.
    pub kind: PartitionKind,
}

/// What a table is.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name (`positions`).
    pub name: String,
    /// Root path in the store (`positions`).
    pub root: String,
    /// Schema of the data files.
    pub schema: SchemaRef,
    /// Partition columns, in path order.
    pub partition_columns: Vec<PartitionColumn>,
}

/// An Arrow type with no Delta equivalent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: type {data_type} has no Delta equivalent")]
pub struct SchemaError {
    /// The column.
    pub column: String,
    /// Its type.
    pub data_type: String,
}

/// The Arrow type of a Delta `timestamp` column: microseconds since the epoch, in UTC (what
/// every hexflow table stores its times as).
pub fn timestamp_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn delta_type(column: &str, dt: &DataType) -> Result<String, SchemaError> {
    Ok(match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "byte".into(),
        DataType::Int16 => "short".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 => "string".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => {
            return Err(SchemaError {
                column: column.into(),
                data_type: other.to_string(),
            });
        }
    })
}

impl PartitionKind {
    fn delta(self) -> &'static str {
        match self {
            PartitionKind::Date => "date",
            PartitionKind::Int => "integer",
            PartitionKind::Long => "long",
        }
    }
}

impl TableSpec {
    /// The Delta schema string.
    ///
    /// # Errors
    /// [`SchemaError`] for a column type Delta cannot express.
    pub fn schema_string(&self) -> Result<String, SchemaError> {
        let mut fields = Vec::new();
        for f in self.schema.fields() {
            fields.push(json!({
                "name": f.name(),
                "type": delta_type(f.name(), f.data_type())?,
                "nullable": f.is_nullable(),
                "metadata": {},
            }));
        }
        for p in &self.partition_columns {
            fields.push(json!({
                "name": p.name,
                "type": p.kind.delta(),
                "nullable": true,
                "metadata": {},
            }));
        }
        Ok(json!({"type": "struct", "fields": Value::Array(fields)}).to_string())
    }

    /// Partition column names in path order.
    pub fn partition_names(&self) -> Vec<String> {
        self.partition_columns
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn delta_schema_string() {
        let spec = TableSpec {
            name: "t".into(),
            root: "t".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("time", timestamp_utc(), false),
                Field::new("lat", DataType::Decimal128(9, 7), false),
            ])),
            partition_columns: vec![PartitionColumn {
                name: "date".into(),
                kind: PartitionKind::Date,
            }],
        };
        let s: Value = serde_json::from_str(&spec.schema_string().expect("valid")).expect("json");
        let types: Vec<&str> = s["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["type"].as_str().expect("type"))
            .collect();
        assert_eq!(types, ["long", "timestamp", "decimal(9,7)", "date"]);
        let bad = TableSpec {
            schema: Arc::new(Schema::new(vec![Field::new("u", DataType::UInt64, false)])),
            ..spec
        };
        assert_eq!(
            bad.schema_string(),
            Err(SchemaError {
                column: "u".into(),
                data_type: "UInt64".into()
            })
        );
    }
}
