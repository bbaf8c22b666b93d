//! The one fix schema of hexflow, shared by the wire codec, the client, storage and the
//! load generator.
//!
//! # Contract
//! * [`DeviceId`] can only hold a valid device id (`1..=i64::MAX`, because it is stored as
//!   Parquet `Int64`); every crate passes ids in this type.
//! * [`Fixes`] is the columnar layout of a batch: mandatory columns `time_ms`, `lat_e7`,
//!   `lon_e7` with one entry per fix, optional columns either empty (absent for every fix)
//!   or with one entry per fix, [`ABSENT_U32`] / [`ABSENT_I32`] marking a fix that lacks
//!   the value. The wire codec decodes into it and storage logs and indexes it, moving the
//!   column buffers (never copying them field by field).
//! * [`validate`] is the one validator: pure (time is an argument), total, and it reports
//!   the first offending fix with its index, the value and the limit as a [`FixError`].
//!
//! No IO, no clock, no allocation beyond the columns themselves.

mod device;
mod fixes;
mod validate;

pub use device::{DeviceId, InvalidDeviceId};
pub use fixes::{Column, Fix, Fixes};
pub use validate::{Checks, FixError, TimeBounds, validate};

/// Marks "absent for this fix" in the optional `u32` columns.
pub const ABSENT_U32: u32 = u32::MAX;
/// Marks "absent for this fix" in the optional `i32` column (`altitude_cm`).
pub const ABSENT_I32: i32 = i32::MIN;
/// Latitudes are accepted in `[-LAT_E7_MAX, LAT_E7_MAX]` (±90°).
pub const LAT_E7_MAX: i32 = 900_000_000;
/// Longitudes are accepted in `[-LON_E7_MAX, LON_E7_MAX]` (±180°).
pub const LON_E7_MAX: i32 = 1_800_000_000;
/// Headings are accepted in `[0, HEADING_CDEG_END)` centidegrees (or absent).
pub const HEADING_CDEG_END: u32 = 36_000;
/// Smallest fix time (and arrival time) storage accepts: 1970-01-01T00:00:00Z.
pub const TIME_MS_MIN: i64 = 0;
/// Largest fix time (and arrival time) storage accepts: 9999-12-31T23:59:59.999Z, so that
/// every partition date has four year digits and `ms * 1000` fits in an `i64` of µs.
pub const TIME_MS_MAX: i64 = 253_402_300_799_999;
/// Hard ceiling on fixes in one batch, whatever a configuration says: it bounds one WAL
/// record to about 40 MiB and lets row positions fit in `u32`.
pub const BATCH_FIXES_LIMIT: usize = 1 << 20;
