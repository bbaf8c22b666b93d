//! Arrow schema of the `positions` data set and the row buffers that feed it.
//!
//! Contract: pure, no IO. [`RowBuffer`] holds raw integer columns (64 bytes a
//! row) so buffering costs no float conversion; [`RowBuffer::to_record_batch`]
//! converts to the public schema, in any row order the caller gives.
//!
//! | column       | Arrow type                     | null | from                     |
//! |--------------|--------------------------------|------|--------------------------|
//! | device_id    | Int64                          | no   | `device_id`              |
//! | batch_seq    | Int64                          | no   | `batch_seq`              |
//! | time         | Timestamp(Microsecond, "UTC")  | no   | `time_ms * 1000`         |
//! | lat          | Decimal128(9, 7) (degrees)     | no   | `lat_e7`, exact          |
//! | lon          | Decimal128(10, 7) (degrees)    | no   | `lon_e7`, exact          |
//! | h3           | Int64 (cell id, < 2^63)        | no   | `h3`                     |
//! | accuracy_m   | Float32                        | yes  | `accuracy_cm / 100`      |
//! | altitude_m   | Float32                        | yes  | `altitude_cm / 100`      |
//! | speed_mps    | Float32                        | yes  | `speed_cmps / 100`       |
//! | heading_deg  | Float32                        | yes  | `heading_cdeg / 100`     |
//! | received_at  | Timestamp(Microsecond, "UTC")  | no   | `received_at_ms * 1000`  |
//!
//! Coordinates are decimals of exactly the 1e-7 degree integers the device sent (Parquet
//! `DECIMAL` over `INT32`/`INT64`): every reader shows degrees, nothing is rounded, and the
//! integers delta-encode far smaller than doubles.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Decimal128Array, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::{ABSENT_I32, ABSENT_U32, FixBatch};

/// Column position of `h3` in [`schema`].
pub const COL_H3: usize = 5;
/// Column position of `time` in [`schema`].
pub const COL_TIME: usize = 2;
/// Decimal type of `lat`: ±90.0000000 needs 9 digits.
pub const LAT_TYPE: DataType = DataType::Decimal128(9, 7);
/// Decimal type of `lon`: ±180.0000000 needs 10 digits.
pub const LON_TYPE: DataType = DataType::Decimal128(10, 7);

/// The schema of every Parquet file storage writes.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("device_id", DataType::Int64, false),
                Field::new("batch_seq", DataType::Int64, false),
                Field::new("time", lake::schema::timestamp_utc(), false),
                Field::new("lat", LAT_TYPE, false),
                Field::new("lon", LON_TYPE, false),
                Field::new("h3", DataType::Int64, false),
                Field::new("accuracy_m", DataType::Float32, true),
                Field::new("altitude_m", DataType::Float32, true),
                Field::new("speed_mps", DataType::Float32, true),
                Field::new("heading_deg", DataType::Float32, true),
                Field::new("received_at", lake::schema::timestamp_utc(), false),
            ]))
        })
        .clone()
}

/// Rows of one partition, column by column, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowBuffer {
    /// `device_id` per row.
    pub device_id: Vec<i64>,
    /// `batch_seq` per row.
    pub batch_seq: Vec<i64>,
    /// Fix time, Unix ms.
    pub time_ms: Vec<i64>,
    /// Latitude * 1e7.
    pub lat_e7: Vec<i32>,
    /// Longitude * 1e7.
    pub lon_e7: Vec<i32>,
    /// H3 cell.
    pub h3: Vec<u64>,
    /// Accuracy in cm, [`ABSENT_U32`] = null.
    pub accuracy_cm: Vec<u32>,
    /// Altitude in cm, [`ABSENT_I32`] = null.
    pub altitude_cm: Vec<i32>,
    /// Speed in cm/s, [`ABSENT_U32`] = null.
    pub speed_cmps: Vec<u32>,
    /// Heading in centi-degrees, [`ABSENT_U32`] = null.
    pub heading_cdeg: Vec<u32>,
    /// Arrival time, Unix ms.
    pub received_at_ms: Vec<i64>,
}

fn opt<T: Copy>(col: &[T], i: usize, absent: T) -> T {
    col.get(i).copied().unwrap_or(absent)
}

impl RowBuffer {
    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.time_ms.len()
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.time_ms.is_empty()
    }

    /// Appends fix `i` of an indexed, valid `batch` (absent optional columns become null).
    pub fn push_fix(&mut self, batch: &FixBatch, i: usize) {
        // Valid device ids and sequence numbers are <= i64::MAX.
        let f = &batch.fixes;
        self.device_id.push(batch.device_id.as_i64());
        self.batch_seq.push(batch.batch_seq as i64);
        self.time_ms.push(f.time_ms[i]);
        self.lat_e7.push(f.lat_e7[i]);
        self.lon_e7.push(f.lon_e7[i]);
        self.h3.push(batch.h3[i]);
        self.accuracy_cm.push(opt(&f.accuracy_cm, i, ABSENT_U32));
        self.altitude_cm.push(opt(&f.altitude_cm, i, ABSENT_I32));
        self.speed_cmps.push(opt(&f.speed_cmps, i, ABSENT_U32));
        self.heading_cdeg.push(opt(&f.heading_cdeg, i, ABSENT_U32));
        self.received_at_ms.push(batch.received_at_ms);
    }

    /// Appends every fix of an indexed, valid `batch`.
    pub fn push_batch(&mut self, batch: &FixBatch) {
        for i in 0..batch.len() {
            self.push_fix(batch, i);
        }
    }

    /// Removes every row, keeping the allocated capacity for reuse.
    pub fn clear(&mut self) {
        self.device_id.clear();
        self.batch_seq.clear();
        self.time_ms.clear();
        self.lat_e7.clear();
        self.lon_e7.clear();
        self.h3.clear();
        self.accuracy_cm.clear();
        self.altitude_cm.clear();
        self.speed_cmps.clear();
        self.heading_cdeg.clear();
        self.received_at_ms.clear();
    }

    /// Row positions ordered by `(h3, time)`, ties kept in arrival order.
    pub fn sort_order(&self) -> Vec<u32> {
        let mut order = Vec::new();
        self.sort_order_into(&mut order);
        order
    }

    /// [`RowBuffer::sort_order`] into `order` (replacing its contents, reusing its memory).
    pub fn sort_order_into(&self, order: &mut Vec<u32>) {
        let n = u32::try_from(self.len()).expect("flush_rows_max is validated to fit in u32");
        order.clear();
        order.extend(0..n);
        order.sort_unstable_by_key(|&i| (self.h3[i as usize], self.time_ms[i as usize], i));
    }

    /// Builds a [`RecordBatch`] of [`schema`] with the rows at `order`.
    ///
    /// # Errors
    /// Only if Arrow rejects the columns, which would be a bug.
    pub fn to_record_batch(&self, order: &[u32]) -> Result<RecordBatch, ArrowError> {
        let at = |i: &u32| *i as usize;
        let f32_or_null = |col: &[u32]| -> ArrayRef {
            Arc::new(
                order
                    .iter()
                    .map(|i| {
                        let v = col[at(i)];
                        (v != ABSENT_U32).then(|| v as f32 / 100.0)
                    })
                    .collect::<Float32Array>(),
            )
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|i| self.device_id[at(i)]),
            )),
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|i| self.batch_seq[at(i)]),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    order.iter().map(|i| self.time_ms[at(i)] * 1_000),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from_iter_values(
                    order.iter().map(|i| i128::from(self.lat_e7[at(i)])),
                )
                .with_precision_and_scale(9, 7)?,
            ),
            Arc::new(
                Decimal128Array::from_iter_values(
                    order.iter().map(|i| i128::from(self.lon_e7[at(i)])),
                )
                .with_precision_and_scale(10, 7)?,
            ),
            // Valid H3 cells have bit 63 clear, so the cast is lossless.
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|i| self.h3[at(i)] as i64),
            )),
            f32_or_null(&self.accuracy_cm),
            Arc::new(
                order
                    .iter()
                    .map(|i| {
                        let v = self.altitude_cm[at(i)];
                        (v != ABSENT_I32).then(|| v as f32 / 100.0)
                    })
                    .collect::<Float32Array>(),
            ),
            f32_or_null(&self.speed_cmps),
            f32_or_null(&self.heading_cdeg),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    order.iter().map(|i| self.received_at_ms[at(i)] * 1_000),
                )
                .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

/// Builds a [`RecordBatch`] of [`schema`] from indexed, valid batches, sorted
/// by `(h3, time)` (what a flush writes for one partition).
///
/// # Errors
/// Only if Arrow rejects the columns, which would be a bug.
pub fn record_batch_from_batches(batches: &[FixBatch]) -> Result<RecordBatch, ArrowError> {
    let mut rows = RowBuffer::default();
    for b in batches {
        rows.push_batch(b);
    }
    rows.to_record_batch(&rows.sort_order())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn conversion_and_nulls() {
        let batch = FixBatch {
            device_id: fix::DeviceId::try_from(9u64).expect("valid device id"),
            batch_seq: 4,
            received_at_ms: 2_000,
            fixes: fix::Fixes {
                time_ms: vec![1_500, 1_000],
                lat_e7: vec![-123_456_789, 900_000_000],
                lon_e7: vec![1_800_000_000, 5],
                accuracy_cm: vec![ABSENT_U32, 250],
                altitude_cm: vec![-1_050, ABSENT_I32],
                speed_cmps: vec![],
                heading_cdeg: vec![35_999, 0],
            },
            h3: vec![0x8a1fb46622dffff, 0x8a1fb46622dffff],
        };
        let rb = record_batch_from_batches(&[batch]).expect("valid");
        assert_eq!(rb.schema(), schema());
        assert_eq!(rb.num_rows(), 2);
        // Same cell: sorted by time, so the second fix comes first.
        let time = rb
            .column(COL_TIME)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("timestamp");
        assert_eq!(time.values().to_vec(), vec![1_000_000, 1_500_000]);
        let lat = rb
            .column(3)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(lat.value_as_string(0), "90.0000000");
        assert_eq!(lat.value_as_string(1), "-12.3456789");
        let acc = rb
            .column(6)
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("f32");
        assert_eq!(acc.value(0), 2.5);
        assert!(acc.is_null(1));
        let alt = rb
            .column(7)
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("f32");
        assert!(alt.is_null(0));
        assert_eq!(alt.value(1), -10.5);
        assert_eq!(rb.column(8).null_count(), 2);
        let heading = rb
            .column(9)
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("f32");
        assert_eq!((heading.value(0), heading.value(1)), (0.0, 359.99));
    }
}
