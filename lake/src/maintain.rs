//! The background maintenance thread: compaction, retention and vacuum of every table.
//!
//! Contract:
//! - One thread (`hexflow-lake`), started by [`Maintenance::spawn`], stopped by
//!   [`Maintenance::stop`] (which waits for the current step: at most one compaction job,
//!   itself bounded by `compact_target_file_bytes`).
//! - Every `compact_interval_ms` it plans and runs compaction jobs; every
//!   `vacuum_interval_ms` it applies retention and vacuums. A failure is logged and
//!   retried at the next interval; it never stops ingest (the tables are committed to
//!   optimistically, so the writer's appends and these rewrites never block each other).
//! - Bounded: compaction sleeps after every batch so that it uses at most
//!   `compact_cpu_percent_max` % of one core (work time / wall time) and moves at most
//!   `compact_io_bytes_per_s_max` bytes per second ([`BudgetPace`]). Time is read from
//!   the [`Clock`] only.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use parquet::file::properties::WriterProperties;
use sys::Clock;

use crate::compact::{self, CompactOptions, Pace};
use crate::config::LakeConfig;
use crate::table::Table;

/// A table the thread maintains.
#[derive(Debug)]
pub struct MaintainedTable {
    /// The table (its own handle).
    pub table: Table,
    /// Compaction output order (`["h3", "time"]` for positions).
    pub sort_columns: Vec<String>,
    /// Encoding of compaction and erasure outputs.
    pub props: WriterProperties,
    /// Rows per row group the files should have (the planner's notion of a bad shape).
    pub row_group_rows: u64,
    /// Retention in days (0 = keep forever).
    pub retention_days: u32,
}

#[derive(Debug, Default)]
struct StopFlag {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopFlag {
    /// Sleeps up to `d`; true when stop was requested.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |s| !*s)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
    fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn set(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_all();
    }
}

/// Paces compaction to a CPU share and an IO rate, sleeping in [`Pace::step`].
pub struct BudgetPace<'a> {
    clock: &'a dyn Clock,
    stop: Option<&'a StopFlagRef>,
    cpu_percent: u64,
    bytes_per_s: u64,
    resumed_us: u64,
    /// Work time so far, µs.
    pub work_us: u64,
    /// Time slept so far, µs.
    pub slept_us: u64,
}

/// An opaque handle on the thread's stop flag (for [`BudgetPace::new`]).
#[derive(Debug)]
pub struct StopFlagRef(Arc<StopFlag>);

impl std::fmt::Debug for BudgetPace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetPace")
            .field("work_us", &self.work_us)
            .field("slept_us", &self.slept_us)
            .finish_non_exhaustive()
    }
}

impl<'a> BudgetPace<'a> {
    /// A pace of `cpu_percent` % of a core and `bytes_per_s`, measured on `clock`.
    pub fn new(
        clock: &'a dyn Clock,
        stop: Option<&'a StopFlagRef>,
        cpu_percent: u32,
        bytes_per_s: u64,
    ) -> BudgetPace<'a> {
        BudgetPace {
            clock,
            stop,
            cpu_percent: u64::from(cpu_percent.clamp(1, 100)),
            bytes_per_s: bytes_per_s.max(1),
            resumed_us: clock.monotonic_us(),
            work_us: 0,
            slept_us: 0,
        }
    }

    /// How long to sleep after `work_us` of work that moved `bytes` (pure).
    pub fn sleep_for(work_us: u64, bytes: u64, cpu_percent: u64, bytes_per_s: u64) -> u64 {
        let for_cpu = work_us.saturating_mul(100) / cpu_percent.max(1);
        let for_io = u64::try_from(u128::from(bytes) * 1_000_000 / u128::from(bytes_per_s.max(1)))
            .unwrap_or(u64::MAX);
        for_cpu.max(for_io).saturating_sub(work_us)
    }
}

impl Pace for BudgetPace<'_> {
    fn step(&mut self, bytes: u64) {
        let now = self.clock.monotonic_us();
        let work = now.saturating_sub(self.resumed_us);
        self.work_us += work;
        let sleep = Self::sleep_for(work, bytes, self.cpu_percent, self.bytes_per_s);
        if sleep > 0 {
            let d = Duration::from_micros(sleep);
            match self.stop {
                Some(s) => {
                    s.0.sleep(d);
                }
                None => std::thread::sleep(d),
            }
        }
        let after = self.clock.monotonic_us();
        self.slept_us += after.saturating_sub(now);
        self.resumed_us = after;
    }
}

/// The running maintenance thread. Dropping it stops the thread and waits for it, as
/// [`Maintenance::stop`] does: no exit path leaves a thread writing to the tables.
#[derive(Debug)]
pub struct Maintenance {
    stop: Arc<StopFlag>,
    handle: Option<JoinHandle<()>>,
}

fn compact_options(cfg: &LakeConfig, t: &MaintainedTable) -> CompactOptions {
    CompactOptions {
        target_file_bytes: cfg.compact_target_file_bytes,
        min_files: cfg.compact_min_files,
        min_file_age_ms: cfg.compact_min_file_age_ms,
        row_group_rows: t.row_group_rows,
    }
}

/// Runs every compaction job the planner finds for `t` now, paced by `pace`; returns
/// the jobs done. Stops early when `stop` says so.
///
/// # Errors
/// The first failed job.
pub fn compact_table(
    t: &mut MaintainedTable,
    cfg: &LakeConfig,
    pace: &mut dyn Pace,
    now_ms: i64,
    mut stop: impl FnMut() -> bool,
) -> Result<Vec<compact::JobOutcome>, crate::TableError> {
    t.table.refresh()?;
    let jobs = compact::plan(t.table.snapshot(), &compact_options(cfg, t), now_ms);
    let sort: Vec<&str> = t.sort_columns.iter().map(String::as_str).collect();
    let mut done = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if stop() {
            break;
        }
        let name = format!(
            "compact-{:020}-{}-{i:04}.parquet",
            t.table.snapshot().version,
            std::process::id()
        );
        done.push(compact::execute(
            &mut t.table,
            job,
            &name,
            &sort,
            t.props.clone(),
            pace,
            now_ms,
        )?);
    }
    Ok(done)
}

impl Maintenance {
    /// Starts the thread.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(
        mut tables: Vec<MaintainedTable>,
        cfg: LakeConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Maintenance> {
        let stop = Arc::new(StopFlag::default());
        let flag = StopFlagRef(stop.clone());
        let handle = std::thread::Builder::new()
            .name("hexflow-lake".into())
            .spawn(move || {
                let tick_ms = cfg.compact_interval_ms.min(cfg.vacuum_interval_ms);
                let (mut next_compact, mut next_vacuum) = (0u64, 0u64);
                while !flag.0.sleep(Duration::from_millis(tick_ms)) {
                    let now_us = clock.monotonic_us();
                    let now_ms = clock.now_ms();
                    for t in &mut tables {
                        if cfg.compact_enabled && now_us >= next_compact {
                            let mut pace = BudgetPace::new(
                                &*clock,
                                Some(&flag),
                                cfg.compact_cpu_percent_max,
                                cfg.compact_io_bytes_per_s_max,
                            );
                            match compact_table(t, &cfg, &mut pace, now_ms, || flag.0.is_set()) {
                                Ok(jobs) if !jobs.is_empty() => tracing::info!(
                                    table = %t.table.spec().name,
                                    jobs = jobs.len(),
                                    work_ms = pace.work_us / 1000,
                                    slept_ms = pace.slept_us / 1000,
                                    "compacted"
                                ),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(table = %t.table.spec().name, error = %e, "compaction failed; retrying next interval"),
                            }
                        }
                        if now_us >= next_vacuum {
                            if let Err(e) = t.table.apply_retention(t.retention_days, now_ms) {
                                tracing::warn!(table = %t.table.spec().name, error = %e, "retention failed");
                            }
                            if let Err(e) = t.table.vacuum(cfg.vacuum_options(), now_ms) {
                                tracing::warn!(table = %t.table.spec().name, error = %e, "vacuum failed");
                            }
                        }
                    }
                    let now_us = clock.monotonic_us();
                    if now_us >= next_compact {
                        next_compact = now_us + cfg.compact_interval_ms * 1000;
                    }
                    if now_us >= next_vacuum {
                        next_vacuum = now_us + cfg.vacuum_interval_ms * 1000;
                    }
                }
            })?;
        Ok(Maintenance {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread after its current step and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.set();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_stops_and_joins_the_thread() {
        let clock: Arc<dyn Clock> = Arc::new(sys::SystemClock);
        let cfg = LakeConfig {
            compact_interval_ms: 86_400_000,
            vacuum_interval_ms: 86_400_000,
            ..LakeConfig::default()
        };
        let m = Maintenance::spawn(Vec::new(), cfg, clock.clone()).expect("spawn");
        assert_eq!(Arc::strong_count(&clock), 2, "the thread holds the clock");
        drop(m);
        // Joined: the thread's closure, and its clone of the clock, are gone (it was
        // asleep for a day and woke on the stop flag).
        assert_eq!(Arc::strong_count(&clock), 1);
    }

    #[test]
    fn pace_arithmetic() {
        // 10 ms of work at 25 %: 30 ms of sleep.
        assert_eq!(BudgetPace::sleep_for(10_000, 0, 25, u64::MAX), 30_000);
        // 1 MiB at 1 MiB/s after 100 ms of work: 900 ms of sleep.
        assert_eq!(
            BudgetPace::sleep_for(100_000, 1 << 20, 100, 1 << 20),
            900_000
        );
        assert_eq!(BudgetPace::sleep_for(5_000, 0, 100, u64::MAX), 0);
    }
}
