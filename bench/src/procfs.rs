//! The server process as Linux sees it: cumulative CPU time and memory from `/proc/<pid>`,
//! and a sampler that reads them at every slot boundary of a [`Timeline`].
//!
//! # Contract
//! * The parsers ([`parse_stat_cpu_ticks`], [`parse_status_kb`]) are pure and never panic on
//!   arbitrary text; the readers do one small procfs read each.
//! * CPU is `utime + stime` of the whole thread group (fields 14 and 15 of
//!   `/proc/<pid>/stat`), in clock ticks of [`CLOCK_TICKS_PER_S`]: 10 ms resolution, which
//!   is why the scripts compare seconds of CPU over whole runs or whole slots, never per
//!   request.
//! * The sampler stops by itself at the `until` it is given.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::timeline::{ServerSample, Timeline};

/// `USER_HZ`, the unit of the CPU times in `/proc/<pid>/stat`. Linux fixes it at 100 on
/// every mainstream architecture (x86, arm64, riscv); `getconf CLK_TCK` prints it.
pub const CLOCK_TICKS_PER_S: u64 = 100;

/// Why the server could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// A procfs file could not be read (the process is gone, or not on Linux).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A procfs file did not have the expected shape.
    #[error("unexpected contents in {path}")]
    Parse {
        /// The file.
        path: PathBuf,
    },
}

/// utime + stime (clock ticks) from the text of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may itself contain spaces and parentheses, so fields are counted
/// after its LAST `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; utime and stime are fields 14 and 15.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The value in kB of the line `key:` of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn read(path: PathBuf) -> Result<(String, PathBuf), ProcError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok((s, path)),
        Err(source) => Err(ProcError::Read { path, source }),
    }
}

/// The server's cumulative CPU time and current RSS.
///
/// # Errors
/// [`ProcError`] when the process cannot be read.
pub fn sample(pid: u32) -> Result<ServerSample, ProcError> {
    let (stat, stat_path) = read(PathBuf::from(format!("/proc/{pid}/stat")))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or(ProcError::Parse { path: stat_path })?;
    let (status, status_path) = read(PathBuf::from(format!("/proc/{pid}/status")))?;
    let rss_kb = parse_status_kb(&status, "VmRSS").ok_or(ProcError::Parse { path: status_path })?;
    Ok(ServerSample {
        cpu_us: ticks * (1_000_000 / CLOCK_TICKS_PER_S),
        rss_kb,
    })
}

/// The server's peak RSS (`VmHWM`), KiB.
///
/// # Errors
/// [`ProcError`] when the process cannot be read.
pub fn peak_rss_kb(pid: u32) -> Result<u64, ProcError> {
    let (status, path) = read(PathBuf::from(format!("/proc/{pid}/status")))?;
    parse_status_kb(&status, "VmHWM").ok_or(ProcError::Parse { path })
}

/// The server over a whole run (`--server-pid`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// The process sampled.
    pub pid: u32,
    /// CPU time from the start of the run to its end, s.
    pub cpu_s: f64,
    /// RSS at the start, KiB.
    pub rss_kb_start: u64,
    /// RSS at the end of the run (the bench's sessions have closed), KiB.
    pub rss_kb_end: u64,
    /// Peak RSS of the server's life so far (`VmHWM`), KiB.
    pub rss_kb_peak: u64,
}

impl ServerUsage {
    /// The usage between two samples of process `pid`.
    pub fn between(pid: u32, start: ServerSample, end: ServerSample, peak_kb: u64) -> Self {
        ServerUsage {
            pid,
            cpu_s: end.cpu_us.saturating_sub(start.cpu_us) as f64 / 1e6,
            rss_kb_start: start.rss_kb,
            rss_kb_end: end.rss_kb,
            rss_kb_peak: peak_kb,
        }
    }
}

/// Samples the server at every slot boundary `k * slot` from `start` (k = 1, 2, ...; the
/// caller records boundary 0) into `timeline` until `until`. A failed read is logged and ends
/// the sampler (the process is gone); the slots it did not reach report no server figures.
pub async fn sampler(pid: u32, timeline: Arc<Mutex<Timeline>>, start: Instant, until: Instant) {
    let slot = {
        let t = timeline.lock().unwrap_or_else(PoisonError::into_inner);
        Duration::from_micros(t.slot_us())
    };
    let mut k: u32 = 1;
    loop {
        let at = start + slot * k;
        if at > until {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        match sample(pid) {
            Ok(s) => timeline
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record_server(k as usize, s),
            Err(e) => {
                tracing::warn!(error = %e, "server sampling stopped");
                return;
            }
        }
        k += 1;
    }
}

/// Watches the server for one run: a sample at the start (boundary 0 of the timeline), the
/// [`sampler`] task, and a sample at the end ([`ServerWatch::finish`]).
#[derive(Debug)]
pub struct ServerWatch {
    pid: u32,
    start: Option<ServerSample>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerWatch {
    /// Samples `pid` now into boundary 0 of `timeline` (whose slots count from `start`) and
    /// spawns the sampler until `until`. Must be called inside a tokio runtime.
    pub fn start(
        pid: u32,
        timeline: &Arc<Mutex<Timeline>>,
        start: Instant,
        until: Instant,
    ) -> Self {
        let first = match sample(pid) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot sample the server");
                None
            }
        };
        if let Some(s) = first {
            timeline
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record_server(0, s);
        }
        let task = tokio::spawn(sampler(pid, Arc::clone(timeline), start, until));
        ServerWatch {
            pid,
            start: first,
            task,
        }
    }

    /// Stops the sampler and returns the usage since [`ServerWatch::start`] (`None` if the
    /// server could not be read at either end).
    pub fn finish(self) -> Option<ServerUsage> {
        self.task.abort();
        let start = self.start?;
        let end = sample(self.pid).ok()?;
        let peak = peak_rss_kb(self.pid).unwrap_or(end.rss_kb);
        Some(ServerUsage::between(self.pid, start, end, peak))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_utime_plus_stime_after_the_name() {
        let stat = "4242 (hex flow) (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 5000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("4242 (a) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parens at all"), None);
        assert_eq!(parse_stat_cpu_ticks(""), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&own).is_some(), "{own}");
    }

    #[test]
    fn status_values_are_read_in_kb() {
        let status = "Name:\thexflow\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(10_240));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(20_480));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb("VmRSS: many kB", "VmRSS"), None);
        assert_eq!(parse_status_kb("VmRSSX: 1 kB", "VmRSS"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let pid = std::process::id();
        let s = sample(pid).unwrap();
        assert!(s.rss_kb > 0);
        assert!(peak_rss_kb(pid).unwrap() >= s.rss_kb);
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }
}
