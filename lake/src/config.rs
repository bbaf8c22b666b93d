//! The lake's configuration (`[lake]` in `hexflow.toml`): every limit with its default.
//!
//! Contract: [`LakeConfig::validate`] is pure; a configuration that passes it cannot make
//! a lake operation panic or run unbounded. The library never reads files or the
//! environment for it; the binary deserializes it.

use serde::{Deserialize, Serialize};

use crate::table::TableOptions;
use crate::vacuum::VacuumOptions;

const DAY_MS: u64 = 86_400_000;

/// `[lake]`: table commits, vacuum, compaction, retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// A Delta checkpoint every this many commits (readers replay at most this many JSON
    /// commits). `1..=100_000`, default 100.
    pub checkpoint_interval_commits: u64,
    /// Retries of a commit that lost the race for a version to another writer.
    /// `1..=1_000`, default 20.
    pub commit_retries_max: u32,
    /// A file replaced by compaction, retention or erasure is deleted this long after the
    /// commit that replaced it: the longest a running query or time travel can still read
    /// it, and the time readers that ignore the log see both versions. `0..=30 days`,
    /// default 300,000 (5 min).
    pub superseded_grace_ms: u64,
    /// A file no commit names (output of a crashed compaction) is deleted once this old.
    /// `60_000..=30 days`, default 86,400,000 (1 day).
    pub untracked_grace_ms: u64,
    /// Commit files are kept this long for time travel (once a newer checkpoint covers
    /// them). `3_600_000..=365 days`, default 604,800,000 (7 days).
    pub log_retention_ms: u64,
    /// The server vacuums every table this often. `1_000..=1 day`, default 60,000.
    pub vacuum_interval_ms: u64,
    /// Run compaction in the server's background.  Default true.
    pub compact_enabled: bool,
    /// The server plans a compaction this often. `1_000..=1 day`, default 60,000.
    pub compact_interval_ms: u64,
    /// Compaction writes files up to this size (or one whole partition, a day, whichever
    /// comes first). `1 MiB..=1 GiB`, default 128 MiB.
    pub compact_target_file_bytes: u64,
    /// A partition with this many small files gets them merged even before they add up to
    /// the target (tiered: merged files are merged again later). `2..=100_000`, default 32.
    pub compact_min_files: usize,
    /// Files younger than this are left for a later run (the newest flushes of the day).
    /// `0..=1 day`, default 60,000.
    pub compact_min_file_age_ms: u64,
    /// Most bytes a second compaction reads plus writes (it sleeps to stay below).
    /// `1 MiB..=10 GiB`, default 64 MiB.
    pub compact_io_bytes_per_s_max: u64,
    /// Share of one core compaction may use, percent (it sleeps between steps).
    /// `1..=100`, default 25.
    pub compact_cpu_percent_max: u32,
    /// Positions older than this many days (by fix date) are dropped, as a commit.
    /// `0..=36_500`, 0 = keep forever (default).
    pub positions_retention_days: u32,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            checkpoint_interval_commits: 100,
            commit_retries_max: 20,
            superseded_grace_ms: 300_000,
            untracked_grace_ms: DAY_MS,
            log_retention_ms: 7 * DAY_MS,
            vacuum_interval_ms: 60_000,
            compact_enabled: true,
            compact_interval_ms: 60_000,
            compact_target_file_bytes: 128 << 20,
            compact_min_files: 32,
            compact_min_file_age_ms: 60_000,
            compact_io_bytes_per_s_max: 64 << 20,
            compact_cpu_percent_max: 25,
            positions_retention_days: 0,
        }
    }
}

/// A value outside its documented bounds: the workspace's one bound error, the key named
/// `lake.<key>`.
pub type LakeConfigError = sys::bounds::OutOfRange;

impl LakeConfig {
    /// Checks every bound documented on the fields.
    ///
    /// # Errors
    /// The first value out of bounds.
    pub fn validate(&self) -> Result<(), LakeConfigError> {
        let d = i128::from(DAY_MS);
        // (key, value, min, max): one row per bound, checked in this order.
        #[rustfmt::skip]
        let bounds: [(&'static str, i128, i128, i128); 13] = [
            ("lake.checkpoint_interval_commits", self.checkpoint_interval_commits.into(), 1, 100_000),
            ("lake.commit_retries_max", self.commit_retries_max.into(), 1, 1_000),
            ("lake.superseded_grace_ms", self.superseded_grace_ms.into(), 0, 30 * d),
            ("lake.untracked_grace_ms", self.untracked_grace_ms.into(), 60_000, 30 * d),
            ("lake.log_retention_ms", self.log_retention_ms.into(), 3_600_000, 365 * d),
            ("lake.vacuum_interval_ms", self.vacuum_interval_ms.into(), 1_000, d),
            ("lake.compact_interval_ms", self.compact_interval_ms.into(), 1_000, d),
            ("lake.compact_target_file_bytes", self.compact_target_file_bytes.into(), 1 << 20, 1 << 30),
            ("lake.compact_min_files", self.compact_min_files as i128, 2, 100_000),
            ("lake.compact_min_file_age_ms", self.compact_min_file_age_ms.into(), 0, d),
            ("lake.compact_io_bytes_per_s_max", self.compact_io_bytes_per_s_max.into(), 1 << 20, 10 << 30),
            ("lake.compact_cpu_percent_max", self.compact_cpu_percent_max.into(), 1, 100),
            ("lake.positions_retention_days", self.positions_retention_days.into(), 0, 36_500),
        ];
        sys::bounds::check_all(&bounds)
    }

    /// The commit and checkpoint options of a table.
    pub fn table_options(&self) -> TableOptions {
        TableOptions {
            checkpoint_interval_commits: self.checkpoint_interval_commits,
            commit_retries_max: self.commit_retries_max,
            superseded_grace_ms: self.superseded_grace_ms,
            log_retention_ms: self.log_retention_ms,
        }
    }

    /// Vacuum's grace periods.
    pub fn vacuum_options(&self) -> VacuumOptions {
        VacuumOptions {
            superseded_grace_ms: self.superseded_grace_ms,
            untracked_grace_ms: self.untracked_grace_ms,
            log_retention_ms: self.log_retention_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_edges_are_enforced() {
        let c = LakeConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let edge = LakeConfig {
            superseded_grace_ms: 30 * DAY_MS,
            compact_cpu_percent_max: 100,
            ..LakeConfig::default()
        };
        assert_eq!(edge.validate(), Ok(()));
        let over = LakeConfig {
            superseded_grace_ms: 30 * DAY_MS + 1,
            ..LakeConfig::default()
        };
        assert_eq!(
            over.validate().map_err(|e| e.key),
            Err("lake.superseded_grace_ms")
        );
        let zero = LakeConfig {
            compact_cpu_percent_max: 0,
            ..LakeConfig::default()
        };
        assert_eq!(
            zero.validate().map_err(|e| e.key),
            Err("lake.compact_cpu_percent_max")
        );
        let small = LakeConfig {
            compact_target_file_bytes: (1 << 20) - 1,
            ..LakeConfig::default()
        };
        assert!(small.validate().is_err());
    }
}
