//! Command-line flags of `hexflow-bench` and their validation.
//!
//! # Contract
//! * Flags are parsed and validated here, once; the runner receives a [`RunConfig`] whose
//!   values are all within their documented bounds.
//! * Pure: no file reads (the runner loads the CA and the secret), no clock.
//! * Every limit is a named constant and is tested at its edge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::trajectory::TrajectoryParams;

/// Most concurrent connections one bench process opens (each is a QUIC connection with
/// its own TLS state; beyond this, run several bench processes).
pub const CONNECTIONS_MAX: u64 = 100_000;
/// Most batches pipelined on one connection: the server's dedup window (64 seqs per
/// device). With more unacked batches, a resent batch could fall out of the window and be
/// refused STALE_SEQUENCE instead of recognised as a duplicate.
pub const INFLIGHT_MAX: u32 = 64;
/// Most fixes per batch: the server's default `batch_fixes_max` (checked by a test).
pub const BATCH_FIXES_MAX: u32 = 10_000;
/// Longest run, in seconds (one week).
pub const DURATION_S_MAX: u64 = 7 * 24 * 3600;
/// Longest simulated report interval, in ms (one hour).
pub const REPORT_INTERVAL_MS_MAX: u32 = 3_600_000;
/// Longest grace period for in-flight batches and for connection attempts, in ms.
pub const WAIT_MS_MAX: u64 = 600_000;
/// Smallest and largest city radius, in metres.
pub const CITY_RADIUS_M_RANGE: (f64, f64) = (1_000.0, 100_000.0);
/// Highest target rate, in fixes per second.
pub const RATE_MAX: f64 = 1e9;

/// `hexflow-bench`: simulate a fleet of GPS devices against a hexflow server.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "hexflow-bench", version, about, long_about = None)]
pub struct Args {
    /// Server address (host:port or ip:port).
    #[arg(long)]
    pub server: String,
    /// PEM file with the CA (or self-signed certificate) that signed the server certificate.
    #[arg(long)]
    pub ca: PathBuf,
    /// The server's data directory; the token secret is read from `<DIR>/secret/token.key`.
    #[arg(long, required_unless_present = "secret")]
    pub data_dir: Option<PathBuf>,
    /// The token secret (32 raw bytes); overrides `--data-dir`.
    #[arg(long)]
    pub secret: Option<PathBuf>,
    /// Number of distinct devices simulated (ids `device-id-base ..`).
    #[arg(long, default_value_t = 1000)]
    pub devices: u64,
    /// First device id.
    #[arg(long, default_value_t = 1)]
    pub device_id_base: u64,
    /// Run time in seconds; then in-flight batches get `--grace-ms` and connections close.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Concurrent device connections [default: min(devices, 1000)].
    #[arg(long)]
    pub connections: Option<u64>,
    /// Fixes per batch.
    #[arg(long, default_value_t = 50)]
    pub batch_fixes: u32,
    /// Simulated interval between two fixes of one device, ms.
    #[arg(long, default_value_t = 1000)]
    pub report_interval_ms: u32,
    /// Batches per device session (connect, send, close). 0 = time-sliced: the devices of a
    /// connection share the run time equally (with connections = devices: one long-lived
    /// session each).
    #[arg(long, default_value_t = 0)]
    pub batches_per_session: u64,
    /// Target total rate in fixes/s; 0 = as fast as the server acks.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Batches pipelined per connection (waiting for their ack).
    #[arg(long, default_value_t = 8)]
    pub inflight: u32,
    /// Fraction of devices that do not move.
    #[arg(long, default_value_t = 0.3)]
    pub stationary_ratio: f64,
    /// Seed of the trajectory generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// TLS server name to verify.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Devices stay within this distance of their city centre, m.
    #[arg(long, default_value_t = 15_000.0)]
    pub city_radius_m: f64,
    /// Oldest fix time sent, relative to now, ms (must be below the server's past_age_max).
    #[arg(long, default_value_t = 600_000)]
    pub backlog_max_ms: u32,
    /// Send each batch once (no client-side retries of transient statuses).
    #[arg(long)]
    pub no_retry: bool,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Pacing, timeouts, threads and outputs (shared with `bare-client`).
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunFlags,
}

/// The flags both load generators (`hexflow-bench`, `bare-client`) take: connection pacing,
/// timeouts, runtime threads and where the reports go.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct RunFlags {
    /// Time in-flight requests get to be answered after `--duration`, ms.
    #[arg(long, default_value_t = 5_000)]
    pub grace_ms: u64,
    /// Timeout of one connection attempt (QUIC + TLS, plus HELLO for hexflow), ms.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Connections start spread over this many ms (avoids a handshake storm).
    #[arg(long, default_value_t = 1_000)]
    pub ramp_up_ms: u64,
    /// Most connection attempts in progress at once; 0 = no limit (then `--ramp-up-ms` alone
    /// spreads them).
    #[arg(long, default_value_t = 0)]
    pub connect_concurrency: u64,
    /// Worker threads of the tokio runtime (and UDP sockets) [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Sample this server process's CPU and memory from /proc during the run (same machine).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the timeline picture (SVG) here [default: the `--json` path with `.svg`].
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// The validated pacing part of [`RunFlags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Grace period after the run's duration.
    pub grace: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Connection start spread.
    pub ramp_up: Duration,
    /// Most connection attempts in progress at once; `None` = no limit.
    pub connect_concurrency: Option<usize>,
}

impl RunFlags {
    /// Checks the pacing flags and `--threads`.
    ///
    /// # Errors
    /// The first flag found outside its bounds.
    pub fn pacing(&self) -> Result<Pacing, ArgsError> {
        let grace = range("grace-ms", self.grace_ms, 0, WAIT_MS_MAX)?;
        let connect = range(
            "connect-timeout-ms",
            self.connect_timeout_ms,
            1,
            WAIT_MS_MAX,
        )?;
        let ramp = range("ramp-up-ms", self.ramp_up_ms, 0, WAIT_MS_MAX)?;
        if let Some(t) = self.threads {
            range("threads", t as u64, 1, 1024)?;
        }
        let concurrency = range(
            "connect-concurrency",
            self.connect_concurrency,
            0,
            CONNECTIONS_MAX,
        )?;
        Ok(Pacing {
            grace: Duration::from_millis(grace),
            connect_timeout: Duration::from_millis(connect),
            ramp_up: Duration::from_millis(ramp),
            // Bounded by CONNECTIONS_MAX above.
            connect_concurrency: (concurrency > 0).then_some(concurrency as usize),
        })
    }

    /// The multi-threaded tokio runtime `--threads` asks for, and its number of workers.
    ///
    /// # Errors
    /// The runtime cannot be built.
    pub fn runtime(&self) -> std::io::Result<(tokio::runtime::Runtime, usize)> {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.enable_all();
        if let Some(t) = self.threads {
            rt.worker_threads(t);
        }
        let workers = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok((rt.build()?, workers))
    }

    /// Writes the JSON report (`--json`) and the timeline picture ([`svg_path`]) the flags
    /// ask for.
    ///
    /// # Errors
    /// A file cannot be written.
    pub fn write_outputs<R: Serialize>(
        &self,
        report: &R,
        timeline: &crate::timeline::TimelineReport,
        svg: &crate::svg::SvgOptions,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        if let Some(path) = &self.json {
            let json = serde_json::to_vec_pretty(report).context("serialising the report")?;
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = svg_path(self.json.as_deref(), self.svg.as_deref()) {
            let picture = crate::svg::render(timeline, svg);
            std::fs::write(&path, picture)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// A flag value outside its bounds. One variant per kind of problem, naming the flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// An integer flag is outside `min..=max`.
    #[error("--{flag} {value} is outside {min}..={max}")]
    OutOfRange {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A real-valued flag is outside `min..=max` (or not finite).
    #[error("--{flag} {value} is outside {min}..={max}")]
    OutOfRangeF64 {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// Device ids must lie in `1..=i64::MAX`.
    #[error("device ids {first}..={last} leave 1..=i64::MAX")]
    DeviceIds {
        /// First id.
        first: u64,
        /// Last id (saturated).
        last: u64,
    },
    /// More connections than devices: a device can hold only one connection.
    #[error("--connections {connections} exceeds --devices {devices}")]
    MoreConnectionsThanDevices {
        /// Connections asked for.
        connections: u64,
        /// Devices configured.
        devices: u64,
    },
}

/// The validated run configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Server address, resolved.
    pub server: SocketAddr,
    /// TLS server name.
    pub server_name: String,
    /// First device id.
    pub device_id_first: u64,
    /// Number of devices.
    pub devices: u64,
    /// Concurrent connections.
    pub connections: u64,
    /// Run length (new batches are only started before it ends).
    pub duration: Duration,
    /// Batches per session; `None` = time-sliced: a connection splits the time left
    /// evenly among the devices it has not served yet, so every device gets a turn (with
    /// one device per connection: one long-lived session for the whole run).
    pub batches_per_session: Option<u64>,
    /// Target fixes per second; `None` = as fast as possible.
    pub rate_fixes_per_s: Option<f64>,
    /// Batches pipelined per connection.
    pub inflight: usize,
    /// Trajectory generator knobs.
    pub trajectory: TrajectoryParams,
    /// Generator seed.
    pub seed: u64,
    /// Pacing and timeouts.
    pub pacing: Pacing,
    /// Retry transient statuses in the client library.
    pub retry: bool,
}

pub(crate) fn range(flag: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ArgsError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ArgsError::OutOfRange {
            flag,
            value,
            min,
            max,
        })
    }
}

fn range_f64(flag: &'static str, value: f64, min: f64, max: f64) -> Result<f64, ArgsError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ArgsError::OutOfRangeF64 {
            flag,
            value,
            min,
            max,
        })
    }
}

/// Where the timeline picture goes: `svg` if given, else `json` with the extension `.svg`,
/// else nowhere.
pub fn svg_path(json: Option<&Path>, svg: Option<&Path>) -> Option<PathBuf> {
    svg.map(Path::to_path_buf)
        .or_else(|| json.map(|j| j.with_extension("svg")))
}

impl Args {
    /// The effective number of connections: `--connections`, or min(devices, 1000).
    pub fn connections_effective(&self) -> u64 {
        self.connections.unwrap_or(self.devices.min(1000))
    }

    /// Validates every flag and returns the typed configuration. `server` is `--server`
    /// already resolved by the caller (name resolution is IO and does not belong here).
    ///
    /// # Errors
    /// The first flag found outside its bounds.
    pub fn validate(&self, server: SocketAddr) -> Result<RunConfig, ArgsError> {
        let id_max = i64::MAX as u64;
        let devices = range("devices", self.devices, 1, id_max)?;
        let first = range("device-id-base", self.device_id_base, 1, id_max)?;
        let last = first.saturating_add(devices - 1);
        if last > id_max {
            return Err(ArgsError::DeviceIds { first, last });
        }
        let connections = range(
            "connections",
            self.connections_effective(),
            1,
            CONNECTIONS_MAX,
        )?;
        if connections > devices {
            return Err(ArgsError::MoreConnectionsThanDevices {
                connections,
                devices,
            });
        }
        let duration_s = range("duration", self.duration, 1, DURATION_S_MAX)?;
        let batch_fixes = range(
            "batch-fixes",
            self.batch_fixes.into(),
            1,
            BATCH_FIXES_MAX.into(),
        )?;
        let interval = range(
            "report-interval-ms",
            self.report_interval_ms.into(),
            1,
            REPORT_INTERVAL_MS_MAX.into(),
        )?;
        let inflight = range("inflight", self.inflight.into(), 1, INFLIGHT_MAX.into())?;
        let rate = range_f64("rate", self.rate, 0.0, RATE_MAX)?;
        let stationary = range_f64("stationary-ratio", self.stationary_ratio, 0.0, 1.0)?;
        let radius = range_f64(
            "city-radius-m",
            self.city_radius_m,
            CITY_RADIUS_M_RANGE.0,
            CITY_RADIUS_M_RANGE.1,
        )?;
        // At least one batch worth of fixes at 1 ms spacing must fit in the backlog.
        let backlog = range(
            "backlog-max-ms",
            self.backlog_max_ms.into(),
            batch_fixes,
            u32::MAX.into(),
        )?;
        let pacing = self.run.pacing()?;
        Ok(RunConfig {
            server,
            server_name: self.server_name.clone(),
            device_id_first: first,
            devices,
            connections,
            duration: Duration::from_secs(duration_s),
            batches_per_session: (self.batches_per_session > 0).then_some(self.batches_per_session),
            rate_fixes_per_s: (rate > 0.0).then_some(rate),
            // Bounded by INFLIGHT_MAX above.
            inflight: inflight as usize,
            trajectory: TrajectoryParams {
                batch_fixes: batch_fixes as usize,
                report_interval_ms: interval as u32,
                stationary_ratio: stationary,
                backlog_max_ms: backlog as i64,
                city_radius_m: radius,
            },
            seed: self.seed,
            pacing,
            retry: !self.no_retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 4433))
    }

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec![
            "hexflow-bench",
            "--server",
            "127.0.0.1:4433",
            "--ca",
            "ca.pem",
            "--data-dir",
            "d",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_are_documented_values() {
        let a = parse(&["--devices", "5000", "--batches-per-session", "1"]);
        assert_eq!(a.connections_effective(), 1000);
        let c = a.validate(addr()).unwrap();
        assert_eq!(c.connections, 1000);
        assert_eq!(c.inflight, 8);
        assert_eq!(c.trajectory.batch_fixes, 50);
        assert_eq!(c.trajectory.report_interval_ms, 1000);
        assert_eq!(c.trajectory.stationary_ratio, 0.3);
        assert_eq!(c.device_id_first, 1);
        assert_eq!(c.rate_fixes_per_s, None);
        assert_eq!(c.batches_per_session, Some(1));
        assert_eq!(c.server_name, "localhost");
        assert!(c.retry);
        assert_eq!(c.pacing.connect_concurrency, None);
        assert_eq!(a.run.server_pid, None);
        let small = parse(&["--devices", "10"]);
        assert_eq!(small.validate(addr()).unwrap().connections, 10);
        assert_eq!(small.validate(addr()).unwrap().batches_per_session, None);
    }

    #[test]
    fn the_picture_goes_next_to_the_report() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            svg_path(Some(&p("/t/run.json")), None),
            Some(p("/t/run.svg"))
        );
        assert_eq!(svg_path(Some(&p("/t/run")), None), Some(p("/t/run.svg")));
        assert_eq!(
            svg_path(Some(&p("/t/run.json")), Some(&p("/u/x.svg"))),
            Some(p("/u/x.svg"))
        );
        assert_eq!(svg_path(None, Some(&p("x.svg"))), Some(p("x.svg")));
        assert_eq!(svg_path(None, None), None);
    }

    #[test]
    fn connect_concurrency_is_bounded() {
        let c = parse(&["--devices", "10", "--connect-concurrency", "4"])
            .validate(addr())
            .unwrap();
        assert_eq!(c.pacing.connect_concurrency, Some(4));
        let at_max = parse(&[
            "--devices",
            "10",
            "--connect-concurrency",
            &CONNECTIONS_MAX.to_string(),
        ]);
        assert!(at_max.validate(addr()).is_ok());
        let over = parse(&[
            "--devices",
            "10",
            "--connect-concurrency",
            &(CONNECTIONS_MAX + 1).to_string(),
        ]);
        assert!(matches!(
            over.validate(addr()).unwrap_err(),
            ArgsError::OutOfRange {
                flag: "connect-concurrency",
                ..
            }
        ));
    }

    #[test]
    fn batch_fixes_limit_matches_the_server_default() {
        assert_eq!(
            BATCH_FIXES_MAX,
            ingest::wire::Limits::default().batch_fixes_max
        );
    }

    #[test]
    fn secret_or_data_dir_is_required() {
        let argv = ["hexflow-bench", "--server", "127.0.0.1:1", "--ca", "c"];
        assert!(Args::try_parse_from(argv).is_err());
        let mut with_secret = argv.to_vec();
        with_secret.extend_from_slice(&["--secret", "k", "--devices", "1"]);
        assert!(
            Args::try_parse_from(with_secret)
                .unwrap()
                .validate(addr())
                .is_ok()
        );
    }

    /// The flag an `ArgsError` names (`None` for the errors that name none).
    fn flag_of(e: &ArgsError) -> Option<&'static str> {
        match e {
            ArgsError::OutOfRange { flag, .. } | ArgsError::OutOfRangeF64 { flag, .. } => {
                Some(flag)
            }
            _ => None,
        }
    }

    #[test]
    fn limits_hold_at_their_edges() {
        // (flags after `--devices 1`, the flag the refusal names; "" = accepted)
        let cases = [
            ("--batch-fixes 10000", ""),
            ("--batch-fixes 10001", "batch-fixes"),
            ("--batch-fixes 0", "batch-fixes"),
            ("--inflight 64", ""),
            ("--inflight 65", "inflight"),
            ("--inflight 0", "inflight"),
            ("--duration 604800", ""),
            ("--duration 604801", "duration"),
            ("--duration 0", "duration"),
            ("--stationary-ratio 1.0", ""),
            ("--stationary-ratio 1.01", "stationary-ratio"),
            ("--rate NaN", "rate"),
            ("--rate=-1", "rate"),
            ("--batch-fixes 50 --backlog-max-ms 50", ""),
            ("--batch-fixes 50 --backlog-max-ms 49", "backlog-max-ms"),
            ("--report-interval-ms 3600000", ""),
            ("--report-interval-ms 3600001", "report-interval-ms"),
            ("--city-radius-m 999", "city-radius-m"),
        ];
        for (flags, refused) in cases {
            let mut argv = vec!["--devices", "1"];
            argv.extend(flags.split_whitespace());
            let got = parse(&argv).validate(addr());
            match refused {
                "" => assert!(got.is_ok(), "{flags}: {got:?}"),
                flag => assert_eq!(got.err().as_ref().and_then(flag_of), Some(flag), "{flags}"),
            }
        }
        let e = parse(&["--devices", "1", "--batch-fixes", "10001"])
            .validate(addr())
            .unwrap_err();
        assert!(
            matches!(e, ArgsError::OutOfRange { value: 10001, .. }),
            "{e}"
        );
        let many = "--devices 200000 --batches-per-session 1 --connections";
        let at = |n: &str| {
            let mut argv: Vec<&str> = many.split_whitespace().collect();
            argv.push(n);
            parse(&argv).validate(addr())
        };
        assert!(at("100000").is_ok());
        assert_eq!(
            at("100001").err().as_ref().and_then(flag_of),
            Some("connections")
        );
    }

    #[test]
    fn device_ids_stay_in_the_valid_range() {
        let max = (i64::MAX as u64).to_string();
        assert!(
            parse(&["--devices", "1", "--device-id-base", &max])
                .validate(addr())
                .is_ok()
        );
        assert!(matches!(
            parse(&[
                "--devices",
                "2",
                "--connections",
                "1",
                "--batches-per-session",
                "1",
                "--device-id-base",
                &max
            ])
            .validate(addr())
            .unwrap_err(),
            ArgsError::DeviceIds { .. }
        ));
        assert!(matches!(
            parse(&["--devices", "1", "--device-id-base", "0"])
                .validate(addr())
                .unwrap_err(),
            ArgsError::OutOfRange {
                flag: "device-id-base",
                ..
            }
        ));
    }

    #[test]
    fn connections_and_sessions_are_consistent() {
        assert!(matches!(
            parse(&["--devices", "5", "--connections", "6"])
                .validate(addr())
                .unwrap_err(),
            ArgsError::MoreConnectionsThanDevices {
                connections: 6,
                devices: 5
            }
        ));
        // Without --batches-per-session, more devices than connections is fine: the
        // devices share the run time (sessions are time-sliced).
        let c = parse(&["--devices", "5000", "--duration", "10"])
            .validate(addr())
            .unwrap();
        assert_eq!(c.batches_per_session, None);
        assert_eq!(c.connections, 1000);
    }
}
