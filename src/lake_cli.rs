//! `hexflow lake …`: the operator's and analyst's view of the Delta tables.
//!
//! Contract: every command works on the tables under the configured data directory and
//! prints one line per fact (stable `key: value` text, for people and scripts). Writing
//! commands (`compact`, `vacuum`, `erase`) commit like the server does (optimistic
//! commits), so `compact` and `vacuum` are safe beside a running server; `erase` opens the
//! WAL to flush it into the table first and must run with the server stopped.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use lake::compact::{CompactOptions, Unpaced};
use lake::{FsStore, Store, Table, TableError};
use sys::fs::RealFs;

use crate::config::Config;

/// Why a lake command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeCliError {
    /// A table operation failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Opening storage (to flush the WAL into the table) before an erasure failed; a
    /// running server holds the data directory's lock and refuses it with `Locked`.
    #[error("opening storage before the erasure: {0}")]
    StorageOpen(#[from] storage::OpenError),
    /// Flushing the WAL into the table before an erasure failed.
    #[error("flushing the WAL before the erasure: {0}")]
    StorageShutdown(#[from] storage::ShutdownError),
    /// Rewriting the WAL checkpoint failed.
    #[error("rewriting the WAL checkpoint: {0}")]
    Checkpoint(std::io::Error),
    /// Removing the device from the silence files failed (the positions table and the WAL
    /// are already erased; running the erasure again finishes it).
    #[error(transparent)]
    Silence(#[from] silence::erase::EraseError),
}

/// The store over the data directory.
pub fn store(data_dir: &Path) -> Arc<dyn Store> {
    Arc::new(FsStore::new(Arc::new(RealFs), data_dir))
}

/// Opens the positions table of `cfg`.
///
/// # Errors
/// See [`Table::open`].
pub fn positions(cfg: &Config, now_ms: i64) -> Result<Table, TableError> {
    let s = cfg.storage_config();
    Table::open(
        store(&cfg.server.data_dir),
        storage::positions_spec(s.partition),
        cfg.lake.table_options(),
        now_ms,
    )
}

fn writer_props(cfg: &Config) -> parquet::file::properties::WriterProperties {
    storage::writer::writer_properties(cfg.parquet_options()).unwrap_or_default()
}

/// `hexflow lake status`.
///
/// # Errors
/// The table cannot be opened.
pub fn status(cfg: &Config, now_ms: i64) -> Result<String, LakeCliError> {
    let t = positions(cfg, now_ms)?;
    let s = t.snapshot();
    let mut out = String::new();
    let dates: Vec<String> = s
        .files
        .values()
        .filter_map(|a| a.partition_values.get("date").cloned().flatten())
        .collect();
    let times: Vec<(i64, i64)> = s
        .files
        .values()
        .filter_map(|a| lake::stats::FileStats::of(a)?.timestamp_range_us("time"))
        .collect();
    let versions = t.available_versions()?;
    let mut sizes: Vec<i64> = s.files.values().map(|a| a.size).collect();
    sizes.sort_unstable();
    let _ = writeln!(out, "table: positions ({})", t.store().url());
    let _ = writeln!(out, "version: {}", s.version);
    let _ = writeln!(
        out,
        "versions available: {}..={}",
        versions.first().copied().unwrap_or(0),
        versions.last().copied().unwrap_or(0)
    );
    let _ = writeln!(out, "files: {}", s.files.len());
    let _ = writeln!(out, "bytes: {}", s.bytes());
    let _ = writeln!(
        out,
        "median file bytes: {}",
        sizes.get(sizes.len() / 2).copied().unwrap_or(0)
    );
    let _ = writeln!(out, "rows: {}", s.rows());
    let _ = writeln!(
        out,
        "superseded files awaiting vacuum: {}",
        s.tombstones.len()
    );
    let _ = writeln!(
        out,
        "dates: {} .. {}",
        dates.iter().min().map_or("-", String::as_str),
        dates.iter().max().map_or("-", String::as_str)
    );
    let fmt = |us: Option<i64>| us.map_or("-".into(), lake::time::format_timestamp_us);
    let _ = writeln!(
        out,
        "fix times: {} .. {}",
        fmt(times.iter().map(|t| t.0).min()),
        fmt(times.iter().map(|t| t.1).max())
    );
    let _ = writeln!(
        out,
        "last writer lsn: {}",
        s.txn(storage::POSITIONS_WRITER).unwrap_or(0)
    );
    Ok(out)
}

/// `hexflow lake compact`: runs every job the planner finds, unpaced. With `all`, files of
/// today and young files are merged too (every day treated as finished).
///
/// # Errors
/// The first failed job (earlier jobs stay committed).
pub fn compact(cfg: &Config, all: bool, now_ms: i64) -> Result<String, LakeCliError> {
    let table = positions(cfg, now_ms)?;
    let mut t = lake::maintain::MaintainedTable {
        table,
        sort_columns: vec!["h3".into(), "time".into()],
        props: writer_props(cfg),
        row_group_rows: cfg.storage.row_group_rows_max as u64,
        retention_days: cfg.lake.positions_retention_days,
    };
    let mut lake_cfg = cfg.lake.clone();
    if all {
        lake_cfg.compact_min_files = 2;
        lake_cfg.compact_min_file_age_ms = 0;
    }
    // "All days over": plan as of the end of time, with ages measured from now.
    let plan_now = if all { i64::MAX / 4 } else { now_ms };
    let opts = CompactOptions {
        target_file_bytes: lake_cfg.compact_target_file_bytes,
        min_files: lake_cfg.compact_min_files,
        min_file_age_ms: lake_cfg.compact_min_file_age_ms,
        row_group_rows: t.row_group_rows,
    };
    let mut out = String::new();
    let (mut jobs, mut rows, mut bytes) = (0usize, 0u64, 0u64);
    loop {
        t.table.refresh()?;
        let plan = lake::compact::plan(t.table.snapshot(), &opts, plan_now);
        if plan.is_empty() {
            break;
        }
        for (i, job) in plan.iter().enumerate() {
            let name = format!(
                "compact-{:020}-{}-{i:04}.parquet",
                t.table.snapshot().version,
                std::process::id()
            );
            let done = lake::compact::execute(
                &mut t.table,
                job,
                &name,
                &["h3", "time"],
                t.props.clone(),
                &mut Unpaced,
                now_ms,
            )?;
            let _ = writeln!(
                out,
                "version {}: {} files of {} -> {} ({} rows, {} bytes)",
                done.version,
                job.inputs.len(),
                job.partition_dir,
                done.output,
                done.rows,
                done.bytes
            );
            jobs += 1;
            rows += done.rows;
            bytes += done.bytes;
        }
    }
    let _ = writeln!(
        out,
        "compacted: {jobs} jobs, {rows} rows, {bytes} bytes written"
    );
    Ok(out)
}

/// `hexflow lake vacuum`: deletes superseded files past the grace period (`now`: no
/// grace), untracked files past theirs, and old log files.
///
/// # Errors
/// A store failure.
pub fn vacuum(cfg: &Config, now: bool, now_ms: i64) -> Result<String, LakeCliError> {
    let mut t = positions(cfg, now_ms)?;
    let mut opts = cfg.lake.vacuum_options();
    if now {
        opts.superseded_grace_ms = 0;
    }
    let r = t.vacuum(opts, now_ms)?;
    Ok(format!(
        "superseded deleted: {}\nuntracked deleted: {}\nlog files deleted: {}\nbytes freed: {}\n",
        r.superseded_deleted, r.untracked_deleted, r.log_files_deleted, r.bytes_deleted
    ))
}

/// `hexflow lake erase --device ID`: flushes the WAL into the table (opening and closing
/// storage), erases every row of the device from `positions` as one commit, deletes the
/// old files and the older log at once, drops the device from the WAL checkpoint, and
/// removes it from every silence file (events log, exemptions log, `events` and
/// `device_status` tables, silence snapshot: [`silence::erase`]).
///
/// # Errors
/// See [`LakeCliError`].
pub fn erase(cfg: &Config, device: fix::DeviceId, now_ms: i64) -> Result<String, LakeCliError> {
    let (st, _) = storage::Storage::open(cfg.storage_config())?;
    st.shutdown()?;
    let mut t = positions(cfg, now_ms)?;
    let prefix = format!("erase-{:020}-{}", t.snapshot().version, std::process::id());
    let r = t.erase_rows(
        "device_id",
        device.as_i64(),
        writer_props(cfg),
        &prefix,
        now_ms,
    )?;
    let wal_dir = cfg.server.data_dir.join("wal");
    let forgot = storage::checkpoint::forget_device(&RealFs, &wal_dir, device)
        .map_err(LakeCliError::Checkpoint)?;
    let s =
        silence::erase::erase_device(&RealFs, &cfg.server.data_dir, device, cfg.parquet_options())?;
    Ok(format!(
        "positions: {} rows removed from {} of {} files scanned (version {})\n\
         superseded files deleted: {}\nlog files deleted: {}\nwal checkpoint entry removed: {forgot}\n\
         silence: {} event lines, {} exemption lines, {} events rows, {} device_status rows \
         removed ({} files rewritten); snapshot rewritten: {}\n",
        r.rows_removed,
        r.files_rewritten,
        r.files_scanned,
        r.version.map_or("-".into(), |v| v.to_string()),
        r.vacuum.superseded_deleted,
        r.vacuum.log_files_deleted,
        s.event_lines,
        s.exemption_lines,
        s.event_rows,
        s.status_rows,
        s.files_rewritten,
        s.snapshot,
    ))
}
