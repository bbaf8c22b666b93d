//! Per-file column statistics in Delta's `add.stats` form, from a Parquet footer (pure).
//!
//! Contract: [`FileStats::from_parquet`] merges the row-group statistics the writer
//! recorded: `minValues`/`maxValues` are true bounds of every non-null value of the column
//! (a bound the file does not state exactly, such as a truncated string, is left out),
//! `nullCount` is exact when every row group states it. Values are written as Delta readers
//! expect: integers and decimals as JSON numbers, timestamps as
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`, dates as `YYYY-MM-DD`. Only flat schemas (no nested
//! columns): column `i` of the file is field `i` of the Arrow schema.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Schema};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::log::Add;
use crate::time::{date_from_days, format_timestamp_us, parse_timestamp_us};

/// Delta's per-file statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStats {
    /// Rows in the file.
    pub num_records: u64,
    /// Column -> smallest value.
    #[serde(default)]
    pub min_values: BTreeMap<String, Value>,
    /// Column -> largest value.
    #[serde(default)]
    pub max_values: BTreeMap<String, Value>,
    /// Column -> nulls.
    #[serde(default)]
    pub null_count: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    I(i64),
    F(f64),
    S(String),
}

fn bound_of(stats: &Statistics, max: bool) -> Option<Bound> {
    let exact = if max {
        stats.max_is_exact()
    } else {
        stats.min_is_exact()
    };
    match stats {
        Statistics::Int32(s) => {
            let v = if max { s.max_opt() } else { s.min_opt() };
            v.map(|&v| Bound::I(i64::from(v)))
        }
        Statistics::Int64(s) => {
            let v = if max { s.max_opt() } else { s.min_opt() };
            v.map(|&v| Bound::I(v))
        }
        Statistics::Float(s) => {
            let v = if max { s.max_opt() } else { s.min_opt() };
            v.map(|&v| f64::from(v))
                .filter(|v| v.is_finite())
                .map(Bound::F)
        }
        Statistics::Double(s) => {
            let v = if max { s.max_opt() } else { s.min_opt() };
            v.copied().filter(|v| v.is_finite()).map(Bound::F)
        }
        Statistics::ByteArray(s) if exact => {
            let v = if max { s.max_opt() } else { s.min_opt() };
            v.and_then(|b| b.as_utf8().ok())
                .map(|s| Bound::S(s.to_string()))
        }
        _ => None,
    }
}

fn decimal_json(unscaled: i64, scale: i8) -> Value {
    if scale <= 0 {
        return Value::from(unscaled);
    }
    let p = 10i64.pow(u32::from(scale.unsigned_abs()));
    let text = format!(
        "{}{}.{:0width$}",
        if unscaled < 0 { "-" } else { "" },
        (unscaled / p).unsigned_abs(),
        (unscaled % p).unsigned_abs(),
        width = usize::from(scale.unsigned_abs())
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn to_json(bound: Bound, dt: &DataType) -> Option<Value> {
    Some(match (bound, dt) {
        (Bound::I(v), DataType::Timestamp(unit, _)) => {
            let us = match unit {
                arrow::datatypes::TimeUnit::Second => v.checked_mul(1_000_000)?,
                arrow::datatypes::TimeUnit::Millisecond => v.checked_mul(1_000)?,
                arrow::datatypes::TimeUnit::Microsecond => v,
                // Delta timestamps are microseconds; leave nanoseconds out.
                arrow::datatypes::TimeUnit::Nanosecond => return None,
            };
            Value::from(format_timestamp_us(us))
        }
        (Bound::I(v), DataType::Date32) => Value::from(date_from_days(v).to_string()),
        (Bound::I(v), DataType::Decimal128(_, s)) => decimal_json(v, *s),
        (Bound::I(v), DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) => {
            Value::from(v)
        }
        (Bound::F(v), DataType::Float32 | DataType::Float64) => Value::from(v),
        (Bound::S(v), DataType::Utf8 | DataType::LargeUtf8) => Value::from(v),
        _ => return None,
    })
}

impl FileStats {
    /// Statistics of a Parquet file of `schema` from its footer.
    pub fn from_parquet(meta: &ParquetMetaData, schema: &Schema) -> FileStats {
        FileStats::from_row_groups(meta.row_groups(), schema)
    }

    /// Statistics of a Parquet file of `schema` from its row groups' metadata.
    pub fn from_row_groups(row_groups: &[RowGroupMetaData], schema: &Schema) -> FileStats {
        let mut out = FileStats {
            num_records: row_groups
                .iter()
                .map(|rg| u64::try_from(rg.num_rows()).unwrap_or(0))
                .sum(),
            ..FileStats::default()
        };
        for (i, field) in schema.fields().iter().enumerate() {
            let (mut min, mut max, mut nulls): (Option<Bound>, Option<Bound>, Option<u64>) =
                (None, None, Some(0));
            let mut bounded = true;
            for rg in row_groups {
                let Some(col) = rg.columns().get(i) else {
                    bounded = false;
                    continue;
                };
                let stats = col.statistics();
                nulls = match (nulls, stats.and_then(Statistics::null_count_opt)) {
                    (Some(n), Some(m)) => Some(n + m),
                    _ => None,
                };
                let all_null = stats.and_then(Statistics::null_count_opt)
                    == Some(u64::try_from(rg.num_rows()).unwrap_or(u64::MAX));
                if all_null {
                    continue;
                }
                match (
                    stats.and_then(|s| bound_of(s, false)),
                    stats.and_then(|s| bound_of(s, true)),
                ) {
                    (Some(lo), Some(hi)) => {
                        if min.as_ref().is_none_or(|m| lo < *m) {
                            min = Some(lo);
                        }
                        if max.as_ref().is_none_or(|m| hi > *m) {
                            max = Some(hi);
                        }
                    }
                    _ => bounded = false,
                }
            }
            let name = field.name().clone();
            if let Some(n) = nulls {
                out.null_count.insert(name.clone(), n);
            }
            if bounded {
                if let Some(v) = min.and_then(|b| to_json(b, field.data_type())) {
                    out.min_values.insert(name.clone(), v);
                }
                if let Some(v) = max.and_then(|b| to_json(b, field.data_type())) {
                    out.max_values.insert(name, v);
                }
            }
        }
        out
    }

    /// The statistics of an `add` (`None`: absent or unreadable).
    pub fn of(add: &Add) -> Option<FileStats> {
        serde_json::from_str(add.stats.as_deref()?).ok()
    }

    /// As the JSON string `add.stats` holds.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `[min, max]` of an integer column.
    pub fn i64_range(&self, column: &str) -> Option<(i64, i64)> {
        Some((
            self.min_values.get(column)?.as_i64()?,
            self.max_values.get(column)?.as_i64()?,
        ))
    }

    /// `[min, max]` of a timestamp column, Unix µs.
    pub fn timestamp_range_us(&self, column: &str) -> Option<(i64, i64)> {
        let parse = |v: &Value| parse_timestamp_us(v.as_str()?);
        Some((
            parse(self.min_values.get(column)?)?,
            parse(self.max_values.get(column)?)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Decimal128Array, Float32Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::Field;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    #[test]
    fn footer_statistics_become_delta_stats() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("time", crate::schema::timestamp_utc(), false),
            Field::new("lat", DataType::Decimal128(9, 7), false),
            Field::new("acc", DataType::Float32, true),
            Field::new("kind", DataType::Utf8, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![5, -2, 9])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![3_000_000, 1_000_000, 2_000_000])
                    .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(vec![-123_456_789, 900_000_000, 5])
                    .with_precision_and_scale(9, 7)
                    .expect("decimal"),
            ),
            Arc::new(Float32Array::from(vec![None, Some(2.5), None])),
            Arc::new(StringArray::from(vec!["b", "a", "c"])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).expect("w");
        w.write(&batch).expect("write");
        let meta = w.finish().expect("finish");
        let s = FileStats::from_parquet(&meta, &schema);
        assert_eq!(s.num_records, 3);
        assert_eq!(s.i64_range("id"), Some((-2, 9)));
        assert_eq!(s.timestamp_range_us("time"), Some((1_000_000, 3_000_000)));
        assert_eq!(
            s.min_values["time"],
            Value::from("1970-01-01T00:00:01.000000Z")
        );
        assert_eq!(s.min_values["lat"].to_string(), "-12.3456789");
        assert_eq!(s.max_values["lat"].to_string(), "90.0");
        assert_eq!(s.max_values["acc"], Value::from(2.5));
        assert_eq!(s.null_count["acc"], 2);
        assert_eq!(s.min_values["kind"], Value::from("a"));
        let json = s.to_json();
        assert!(
            json.starts_with("{\"numRecords\":3,\"minValues\":{"),
            "{json}"
        );
        let back: FileStats = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, s);
    }
}
