//! Storage configuration: every limit, with documented defaults.
//!
//! Contract: [`StorageConfig::validate`] is pure and is called by
//! [`crate::Storage::open`]; a configuration that passes it cannot make a
//! storage thread panic. The library never reads files or environment
//! variables for its configuration: the binary deserializes this struct from
//! the `[storage]` section of its TOML file (serde: the field names are the
//! keys, defaults and bounds are the ones below, unknown keys are refused) and
//! fills the fields other sections own (`data_dir`, `batch_fixes_max`,
//! `table`), which are not keys of `[storage]`.

use std::path::PathBuf;

use h3o::Resolution;

use crate::dedup::WINDOW_BATCHES_LIMIT;
use crate::partition::PartitionScheme;
use fix::BATCH_FIXES_LIMIT;

/// Upper bound of `flush_interval_ms` by default policy: at most one minute of
/// acknowledged fixes waits in memory (and in the WAL) before it is queryable.
pub const FLUSH_INTERVAL_MS_LIMIT: u64 = 60_000;

/// Storage configuration. See each field for its default and bounds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root directory; `wal/` and `positions/` are created under it.
    /// Default `data`. Not a `[storage]` key: the binary sets it from
    /// `server.data_dir`.
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// H3 resolution of the `h3` column, `0..=15`. Default 10 (cells of about
    /// 15,000 m², edge about 66 m): about the size of a city block and a few
    /// times the typical GPS error, so a device standing still or walking stays
    /// in one cell for many fixes (long runs compress well and sort together),
    /// while a region query at any coarser resolution becomes one id range.
    pub h3_resolution: u8,
    /// Optional partition keys besides `date`. Default: none (date only).
    /// In TOML the key `partition_by`, a list: `"date"` first, then
    /// optionally `"hour"` and/or `"h3_r3"`, each once.
    #[serde(rename = "partition_by", with = "crate::partition::keys")]
    pub partition: PartitionScheme,
    /// A segment is rolled once it holds this many bytes (it can exceed it by
    /// one group). `1 MiB..=4 GiB`, default 64 MiB.
    pub wal_segment_bytes_max: u64,
    /// A group commit stops gathering batches at this many record bytes.
    /// `4 KiB..=256 MiB`, default 4 MiB.
    pub wal_group_commit_bytes_max: usize,
    /// How long a group commit waits for more batches after the first one,
    /// µs, `0..=100_000`. Default 200 (0 = only what is already queued).
    pub wal_group_commit_delay_us: u64,
    /// `fdatasync` each group before acknowledging it. Default true.
    /// **false is UNSAFE: acknowledged batches can be lost on power failure.
    /// Benchmarks only.**
    pub wal_fsync: bool,
    /// Capacity of the submit queue, `1..=1_048_576`; when full `submit`
    /// returns `Overloaded`. Default 8192.
    pub queue_batches_max: usize,
    /// Capacity of the queue from the WAL thread to the writer thread,
    /// `1..=1_048_576`. Default 1024.
    pub writer_queue_batches_max: usize,
    /// Largest batch accepted, fixes, `1..=1_048_576`. Default 10,000. Not a
    /// `[storage]` key: the binary sets it from `limits.batch_fixes_max`.
    #[serde(skip)]
    pub batch_fixes_max: usize,
    /// Buffered rows are flushed to Parquet this often, ms,
    /// `100..=FLUSH_INTERVAL_MS_LIMIT`. Default 10,000.
    pub flush_interval_ms: u64,
    /// Delay between attempts of a failed flush, ms, `1..=60_000`. Default 1,000.
    pub flush_retry_ms: u64,
    /// Attempts of the final flush on shutdown before giving up (the WAL keeps
    /// the data), `1..=100`. Default 3.
    pub shutdown_flush_attempts: u32,
    /// Memory bound: a generation of buffered rows never exceeds this (about
    /// 64 bytes a row); at most two are held, one buffering and one being
    /// published by the encoder thread (plus its working set).
    /// `batch_fixes_max..=u32::MAX`, default 1,000,000.
    pub flush_rows_max: usize,
    /// Rows per Parquet row group, `1..=16_777_216`. Default 131,072: small
    /// enough that min/max statistics on `h3` prune finely.
    pub row_group_rows_max: usize,
    /// zstd level of Parquet pages, `1..=22`. Default 3.
    pub zstd_level: i32,
    /// Nice value of the encoder thread (the sort and zstd encoding of each flush),
    /// `0..=19` (0: as urgent as the threads that carry acks; 19: the least). Default 10:
    /// about a tenth of a core it contends for with one nice-0 thread, all of an idle one.
    /// A process already started at a higher nice keeps it.
    pub encoder_nice: i32,
    /// Anti-replay window per device, batches, `1..=64`. Default 64.
    pub dedup_window_batches: u32,
    /// Devices tracked by deduplication (24 bytes each in the checkpoint, about
    /// twice that in memory per table, two tables); a new device beyond this is
    /// refused. `1..=1_000_000_000`, default 20,000,000.
    pub dedup_devices_max: usize,
    /// How the `positions` table commits and checkpoints. Not a `[storage]`
    /// key: the binary sets it from `[lake]`.
    #[serde(skip)]
    pub table: lake::TableOptions,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data"),
            h3_resolution: 10,
            partition: PartitionScheme::default(),
            wal_segment_bytes_max: 64 << 20,
            wal_group_commit_bytes_max: 4 << 20,
            wal_group_commit_delay_us: 200,
            wal_fsync: true,
            queue_batches_max: 8192,
            writer_queue_batches_max: 1024,
            batch_fixes_max: 10_000,
            flush_interval_ms: 10_000,
            flush_retry_ms: 1_000,
            shutdown_flush_attempts: 3,
            flush_rows_max: 1_000_000,
            row_group_rows_max: 131_072,
            zstd_level: 3,
            encoder_nice: 10,
            dedup_window_batches: 64,
            dedup_devices_max: 20_000_000,
            table: lake::TableOptions::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value outside its documented bounds (the key named `storage.<key>`).
    #[error(transparent)]
    OutOfRange(#[from] sys::bounds::OutOfRange),
    /// `partition.h3_r3` needs cells at resolution 3 or finer.
    #[error("partition by h3_r3 needs h3_resolution >= 3, got {h3_resolution}")]
    H3PartitionTooCoarse {
        /// The configured resolution.
        h3_resolution: u8,
    },
}

impl StorageConfig {
    /// Checks every bound documented on the fields.
    ///
    /// # Errors
    /// The first value out of bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // (key, value, min, max): one row per bound, checked in this order.
        #[rustfmt::skip]
        let bounds: [(&'static str, i128, i128, i128); 16] = [
            ("storage.h3_resolution", self.h3_resolution.into(), 0, 15),
            ("storage.wal_segment_bytes_max", self.wal_segment_bytes_max.into(), 1 << 20, 4 << 30),
            ("storage.wal_group_commit_bytes_max", self.wal_group_commit_bytes_max as i128, 4 << 10, 256 << 20),
            ("storage.wal_group_commit_delay_us", self.wal_group_commit_delay_us.into(), 0, 100_000),
            ("storage.queue_batches_max", self.queue_batches_max as i128, 1, 1 << 20),
            ("storage.writer_queue_batches_max", self.writer_queue_batches_max as i128, 1, 1 << 20),
            ("storage.batch_fixes_max", self.batch_fixes_max as i128, 1, BATCH_FIXES_LIMIT as i128),
            ("storage.flush_interval_ms", self.flush_interval_ms.into(), 100, FLUSH_INTERVAL_MS_LIMIT.into()),
            ("storage.flush_retry_ms", self.flush_retry_ms.into(), 1, 60_000),
            ("storage.shutdown_flush_attempts", self.shutdown_flush_attempts.into(), 1, 100),
            ("storage.flush_rows_max", self.flush_rows_max as i128, self.batch_fixes_max as i128, u32::MAX.into()),
            ("storage.row_group_rows_max", self.row_group_rows_max as i128, 1, 1 << 24),
            ("storage.zstd_level", self.zstd_level.into(), 1, 22),
            ("storage.encoder_nice", self.encoder_nice.into(), 0, sys::thread::NICE_MAX.into()),
            ("storage.dedup_window_batches", self.dedup_window_batches.into(), 1, WINDOW_BATCHES_LIMIT.into()),
            ("storage.dedup_devices_max", self.dedup_devices_max as i128, 1, 1_000_000_000),
        ];
        sys::bounds::check_all(&bounds)?;
        if self.partition.h3_r3 && self.h3_resolution < 3 {
            return Err(ConfigError::H3PartitionTooCoarse {
                h3_resolution: self.h3_resolution,
            });
        }
        Ok(())
    }

    /// The configured resolution as an h3o value (valid after [`validate`](Self::validate)).
    pub fn resolution(&self) -> Resolution {
        Resolution::try_from(self.h3_resolution).unwrap_or(Resolution::Ten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_edges_are_enforced() {
        let cfg = StorageConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.resolution(), Resolution::Ten);
        let edge = StorageConfig {
            flush_interval_ms: FLUSH_INTERVAL_MS_LIMIT,
            ..StorageConfig::default()
        };
        assert_eq!(edge.validate(), Ok(()));
        let over = StorageConfig {
            flush_interval_ms: FLUSH_INTERVAL_MS_LIMIT + 1,
            ..StorageConfig::default()
        };
        assert!(matches!(
            over.validate(),
            Err(ConfigError::OutOfRange(sys::bounds::OutOfRange {
                key: "storage.flush_interval_ms",
                value: 60_001,
                ..
            }))
        ));
        // The key of the out-of-range setting a configuration is refused for.
        let refused_key = |cfg: StorageConfig| match cfg.validate() {
            Err(ConfigError::OutOfRange(e)) => Some(e.key),
            _ => None,
        };
        let zero_queue = StorageConfig {
            queue_batches_max: 0,
            ..StorageConfig::default()
        };
        assert_eq!(refused_key(zero_queue), Some("storage.queue_batches_max"));
        let rows = StorageConfig {
            flush_rows_max: 9_999,
            ..StorageConfig::default()
        };
        assert_eq!(refused_key(rows), Some("storage.flush_rows_max"));
        for (nice, refused) in [(-1, true), (0, false), (19, false), (20, true)] {
            let cfg = StorageConfig {
                encoder_nice: nice,
                ..StorageConfig::default()
            };
            let expected = refused.then_some("storage.encoder_nice");
            assert_eq!(refused_key(cfg), expected, "encoder_nice = {nice}");
        }
        let window = StorageConfig {
            dedup_window_batches: 65,
            ..StorageConfig::default()
        };
        assert!(window.validate().is_err());
        let coarse = StorageConfig {
            h3_resolution: 2,
            partition: PartitionScheme {
                hour: false,
                h3_r3: true,
            },
            ..StorageConfig::default()
        };
        assert_eq!(
            coarse.validate(),
            Err(ConfigError::H3PartitionTooCoarse { h3_resolution: 2 })
        );
    }
    #[test]
    fn toml_keys_are_the_fields_and_partition_by_is_checked() {
        let parse = |text: &str| toml::from_str::<StorageConfig>(text);
        assert_eq!(parse("").unwrap(), StorageConfig::default());
        let c = parse("flush_interval_ms = 500\npartition_by = [\"date\", \"h3_r3\", \"hour\"]")
            .unwrap();
        assert_eq!(c.flush_interval_ms, 500);
        assert_eq!(
            c.partition,
            PartitionScheme {
                hour: true,
                h3_r3: true
            }
        );
        let text = toml::to_string(&c).unwrap();
        assert!(
            text.contains("partition_by = [\"date\", \"hour\", \"h3_r3\"]"),
            "{text}"
        );
        assert!(
            !text.contains("data_dir") && !text.contains("batch_fixes_max"),
            "{text}"
        );
        for bad in [
            "partition_by = []",
            "partition_by = [\"hour\"]",
            "partition_by = [\"date\", \"h3_r3\", \"h3_r3\"]",
            "partition_by = [\"date\", \"minute\"]",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("partition_by must start with"), "{bad}: {err}");
        }
        for owned_elsewhere in ["data_dir = \"x\"", "batch_fixes_max = 5", "nope = 1"] {
            assert!(parse(owned_elsewhere).is_err(), "{owned_elsewhere}");
        }
    }
}
