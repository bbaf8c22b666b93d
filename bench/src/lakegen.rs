//! `hexflow-lakegen`: writes a simulated fleet's positions straight into a `positions`
//! Delta table, shaped exactly as `hexflow serve` would have written it (one file per
//! partition per flush, rows sorted by `(h3, time)`, one commit per flush with the
//! writer's txn), without the network or the WAL: a one-day lake of 10,000 devices in
//! minutes, for compaction and query measurements.
//!
//! # Contract
//! * Rows come from the same trajectories as `hexflow-bench` ([`crate::trajectory`]) and
//!   go through the server's own code: `storage::index` for H3, `storage::batch::RowBuffer`
//!   for the columns, `storage::writer::writer_properties` for the encoding, `lake::Table`
//!   for the files and commits.
//! * Simulated time only: the day starts at `--date` 00:00 UTC; every `--flush-interval-ms`
//!   of simulated time is one flush (one commit). No clock is read.
//! * Not durable: files are written without fsync (benchmark data).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sys::fs::{DirEntry, FileMeta, Fs, FsFile, FsLock, RealFs};

use crate::trajectory::{SimDevice, TrajectoryParams};

/// Flags of `hexflow-lakegen`.
#[derive(Debug, Clone, Parser)]
#[command(name = "hexflow-lakegen", version, about)]
pub struct Args {
    /// Data directory (the table is `<DIR>/positions`; must not hold one yet).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Devices, 1..=1,000,000.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Simulated report interval of every device, ms, 1,000..=3,600,000.
    #[arg(long, default_value_t = 10_000)]
    pub report_interval_ms: u32,
    /// Simulated flush interval of the server, ms, 100..=60,000.
    #[arg(long, default_value_t = 10_000)]
    pub flush_interval_ms: u32,
    /// UTC day to simulate, YYYY-MM-DD.
    #[arg(long, default_value = "2026-11-24")]
    pub date: String,
    /// Hours of that day, 1..=24.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Seed of the trajectories.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakegenError {
    /// A flag is out of range.
    #[error("--{flag} = {value} is outside {range}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        range: &'static str,
    },
    /// The table failed.
    #[error(transparent)]
    Table(#[from] lake::TableError),
    /// Building a batch failed (a bug).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Creating the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// [`RealFs`] without fsync: benchmark data only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSyncFs;

#[derive(Debug)]
struct NoSyncFile(Box<dyn FsFile>);

impl FsFile for NoSyncFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.0.len_bytes()
    }
}

impl Fs for NoSyncFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        RealFs.list_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        RealFs.read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(NoSyncFile(RealFs.create(path)?)))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(NoSyncFile(RealFs.open_write(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.hard_link(from, to)
    }
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        RealFs.metadata(path)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<FsLock> {
        RealFs.lock_exclusive(path)
    }
}

/// What a run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Rows (fixes).
    pub rows: u64,
    /// Files (= commits, at date-only partitioning).
    pub files: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// The table version reached.
    pub version: u64,
}

fn check(
    flag: &'static str,
    v: u64,
    lo: u64,
    hi: u64,
    range: &'static str,
) -> Result<(), LakegenError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(LakegenError::Flag {
            flag,
            value: v.to_string(),
            range,
        })
    }
}

/// Generates the lake (see the module contract).
///
/// # Errors
/// [`LakegenError`].
pub fn run(args: &Args) -> Result<Summary, LakegenError> {
    check("devices", args.devices, 1, 1_000_000, "1..=1000000")?;
    check(
        "report-interval-ms",
        args.report_interval_ms.into(),
        1_000,
        3_600_000,
        "1000..=3600000",
    )?;
    check(
        "flush-interval-ms",
        args.flush_interval_ms.into(),
        100,
        60_000,
        "100..=60000",
    )?;
    check("hours", args.hours.into(), 1, 24, "1..=24")?;
    let date = lake::time::Date::parse(&args.date).ok_or_else(|| LakegenError::Flag {
        flag: "date",
        value: args.date.clone(),
        range: "a YYYY-MM-DD date",
    })?;
    let day_ms = date.days() * lake::time::MS_PER_DAY;
    let end_ms = day_ms + i64::from(args.hours) * 3_600_000;
    NoSyncFs
        .create_dir_all(&args.data_dir)
        .map_err(|source| LakegenError::Io {
            path: args.data_dir.clone(),
            source,
        })?;
    let store: Arc<dyn lake::Store> =
        Arc::new(lake::FsStore::new(Arc::new(NoSyncFs), &args.data_dir));
    let scheme = storage::PartitionScheme::default();
    let opts = lake::TableOptions::default();
    let mut table = lake::Table::open(store, storage::positions_spec(scheme), opts, day_ms)?;
    let storage_cfg = storage::StorageConfig::default();
    let props = storage::writer::writer_properties(storage::writer::ParquetOptions {
        zstd_level: storage_cfg.zstd_level,
        row_group_rows_max: storage_cfg.row_group_rows_max,
    })
    .map_err(|e| LakegenError::Arrow(arrow::error::ArrowError::ExternalError(Box::new(e))))?;
    let params = TrajectoryParams {
        batch_fixes: 1,
        report_interval_ms: args.report_interval_ms,
        backlog_max_ms: i64::from(args.report_interval_ms) * 2,
        ..TrajectoryParams::default()
    };
    let mut devices: Vec<SimDevice> = (0..args.devices)
        .map(|i| SimDevice::new(i + 1, args.seed, 1, &params))
        .collect();
    let mut next_fix_ms: Vec<i64> = (0..args.devices as i64)
        .map(|i| day_ms + (i * 7_919) % i64::from(args.report_interval_ms))
        .collect();
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mut fixes = ingest::wire::Fixes::default();
    let mut summary = Summary::default();
    let mut lsn: u64 = 0;
    let mut flush_start = day_ms;
    while flush_start < end_ms {
        let flush_end = (flush_start + i64::from(args.flush_interval_ms)).min(end_ms);
        let mut partitions: std::collections::BTreeMap<
            storage::PartitionKey,
            storage::batch::RowBuffer,
        > = Default::default();
        let from_lsn = lsn + 1;
        for (i, d) in devices.iter_mut().enumerate() {
            while next_fix_ms[i] < flush_end {
                let Ok(seq) = d.fill_batch(next_fix_ms[i], &params, &mut rng, &mut fixes) else {
                    next_fix_ms[i] += 1;
                    continue;
                };
                next_fix_ms[i] += i64::from(args.report_interval_ms);
                lsn += 1;
                let mut batch = storage::FixBatch::new(
                    fix::DeviceId::try_from(d.id()).map_err(|e| LakegenError::Flag {
                        flag: "devices",
                        value: e.to_string(),
                        range: "device ids 1..=i64::MAX",
                    })?,
                    seq,
                    flush_end,
                    std::mem::take(&mut fixes),
                );
                storage::index::index_batch(&mut batch, storage_cfg.resolution());
                for j in 0..batch.len() {
                    let key =
                        storage::PartitionKey::for_fix(scheme, batch.fixes.time_ms[j], batch.h3[j]);
                    partitions.entry(key).or_default().push_fix(&batch, j);
                }
                fixes = batch.fixes;
            }
        }
        let mut adds = Vec::new();
        for (key, rows) in &partitions {
            let rb = rows.to_record_batch(&rows.sort_order())?;
            summary.rows += rb.num_rows() as u64;
            let add = table.write_file(
                &key.rel_path().to_string_lossy(),
                &storage::partition::part_file_name(from_lsn, lsn),
                key.partition_values(),
                [Ok(rb)],
                props.clone(),
                true,
                flush_end,
            )?;
            summary.bytes += u64::try_from(add.size).unwrap_or(0);
            summary.files += 1;
            adds.push(add);
        }
        if !adds.is_empty() {
            let v = i64::try_from(lsn).unwrap_or(i64::MAX);
            table.commit(
                lake::Commit::append(adds).with_txn(storage::POSITIONS_WRITER, v),
                flush_end,
            )?;
        }
        flush_start = flush_end;
    }
    summary.version = table.snapshot().version;
    Ok(summary)
}
