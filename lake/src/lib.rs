//! hexflow's lake: every table as a Delta Lake table (protocol reader 1 / writer 2).
//!
//! Contract:
//! - Every change to a table (a flush, a compaction, a retention run, an erasure) is one
//!   atomic commit ([`table::Table::commit`]): a reader of the table sees the state before
//!   it or after it, never a part, and never a file twice. Earlier versions stay readable
//!   ([`table::Table::load`]) for as long as their files and log entries are kept
//!   ([`vacuum`]).
//! - Data files are plain hive-partitioned Parquet, so a reader that ignores the log still
//!   reads them; what it sees is documented in `docs/STORAGE.md` ("Readers that ignore
//!   the log").
//! - Every byte goes through a [`store::Store`]: [`store::FsStore`] over `sys::fs::Fs`
//!   (local, fault-injectable). WAL and checkpoints of the ingest path are not here: they
//!   stay on local disk in `storage`.
//! - Pure planners ([`vacuum::plan`], [`compact::plan`]) decide; executors do IO. Nothing
//!   here reads a clock: every operation takes `now_ms`.
//!
//! Modules: [`store`] (where bytes live), [`log`] (actions and commit files),
//! [`snapshot`] (replay), [`checkpoint`] (Delta checkpoints), [`schema`] (table
//! definitions), [`stats`] (file statistics), [`table`] (open, commit, time travel,
//! write files), [`vacuum`], [`compact`], [`retention`] (retention and erasure), [`maintain`] (the
//! background thread), [`config`], [`time`] (civil dates).

#![deny(clippy::unwrap_used)]

pub mod checkpoint;
pub mod compact;
pub mod config;
pub mod log;
pub mod maintain;
pub mod retention;
pub mod schema;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod table;
pub mod time;
pub mod vacuum;

pub use config::{LakeConfig, LakeConfigError};
pub use schema::{PartitionColumn, PartitionKind, TableSpec};
pub use snapshot::Snapshot;
pub use store::{FsStore, ObjectMeta, Store, StoreError};
pub use table::{Commit, CommitOutcome, Table, TableError, TableOptions};
pub use vacuum::{VacuumOptions, VacuumReport};
