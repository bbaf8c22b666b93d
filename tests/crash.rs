//! Crash harness over the real binary: `hexflow serve` runs as a child process
//! under load from many devices (the client library, real QUIC), is killed
//! with SIGKILL at a random moment, restarted on the same data directory, and
//! so on; finally it is stopped with SIGTERM and the Parquet data must hold
//! every fix that was ever acknowledged (OK or DUPLICATE) exactly once, every
//! file readable, no `.tmp` file and no WAL segment left.
//!
//! Reproduce a failure with the printed seed:
//! `HEXFLOW_CRASH_SEED=<seed> cargo test -p hexflow --test crash`.
//! `HEXFLOW_CRASH_CYCLES` sets the number of kill/restart cycles (default 50;
//! `scripts/soak.sh` runs 500 in release mode).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest::client::{ClientConfig, Device, RetryPolicy, client_endpoint};
use ingest::wire::{Fixes, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEVICES: u64 = 50;
const FIXES_PER_BATCH: usize = 20;
const DEFAULT_CYCLES: u32 = 50;
const BATCH_GAP_MS: u64 = 5;
/// Most time the server may take to print its "listening" line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `sig` to the child (SIGKILL: a crash; SIGTERM: graceful stop).
#[allow(unsafe_code)]
fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
    // SAFETY: kill(2) touches no memory of this process; `pid` is our own
    // child, not yet waited for, so it cannot name another process.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// The server process; killed if the test panics.
struct Server {
    child: Option<Child>,
    ca_pem: Vec<u8>,
    key: ingest::auth::TokenKey,
}

impl Server {
    fn start(data_dir: &Path, addr: SocketAddr, log: &Path) -> Server {
        let log = std::fs::File::create(log).expect("server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hexflow"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .env("HEXFLOW__STORAGE__FLUSH_INTERVAL_MS", "200")
            .env("HEXFLOW__ADMIN__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn hexflow");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Forward the lines, then keep draining so the child never blocks.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    continue;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = false;
        let mut ca_path = None;
        let mut key_path = None;
        while ca_path.is_none() || key_path.is_none() || !ready {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("server not ready within {READY_TIMEOUT:?} ({status:?})");
                }
            };
            let line = line.trim();
            if line.starts_with("hexflow listening on") {
                ready = true;
            } else if let Some(p) = line.strip_prefix("devices trust:") {
                ca_path = Some(PathBuf::from(p.trim()));
            } else if let Some(p) = line.strip_prefix("token key:") {
                key_path = Some(PathBuf::from(p.trim()));
            }
        }
        let ca_pem = std::fs::read(ca_path.expect("ca")).expect("CA readable");
        let key =
            hexflow::secret::load(&sys::fs::RealFs, &key_path.expect("key")).expect("token key");
        Server {
            child: Some(child),
            ca_pem,
            key,
        }
    }

    fn stop(mut self, sig: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, sig);
        child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One device's book-keeping, kept across server restarts.
#[derive(Default)]
struct Book {
    next_seq: u64,
    /// The batch being sent (maybe stored, not acked yet): resent as is.
    pending: Option<(u64, Fixes)>,
    /// Every acked batch.
    acked: BTreeMap<u64, Fixes>,
    /// Anything that must not happen (STALE_SEQUENCE, a rejection).
    errors: Vec<String>,
}

fn client_cfg(addr: SocketAddr, server: &Server, device_id: u64) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        addr,
        server.ca_pem.clone(),
        server.key.mint(fix::DeviceId::try_from(device_id).unwrap()),
    );
    cfg.retry = RetryPolicy {
        attempts_max: 50,
        backoff_initial_ms: 10,
        backoff_max_ms: 200,
    };
    cfg.connect_timeout_ms = 5_000;
    cfg.ack_timeout_ms = 10_000;
    cfg.close_linger_ms = 0;
    cfg
}

/// Sends batches for one device until `stop` (or, with `drain`, until its
/// pending batch is acked).
async fn drive(
    cfg: ClientConfig,
    endpoint: quinn::Endpoint,
    book: Arc<Mutex<Book>>,
    seed: u64,
    drain: bool,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = loop {
        match Device::connect(&endpoint, cfg.clone()).await {
            Ok(d) => break d,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    loop {
        let (seq, fixes) = {
            let mut b = book.lock().unwrap();
            if drain && b.pending.is_none() {
                break;
            }
            if b.pending.is_none() {
                b.next_seq += 1;
                let seq = b.next_seq;
                b.pending = Some((
                    seq,
                    common::random_fixes(&mut rng, FIXES_PER_BATCH, common::system_now_ms()),
                ));
            }
            b.pending.clone().expect("just set")
        };
        match device.send(seq, &fixes).await {
            Ok(ack) => {
                let mut b = book.lock().unwrap();
                match Status::from_code(ack.status) {
                    Some(Status::Ok | Status::Duplicate) => {
                        b.acked.insert(seq, fixes);
                        b.pending = None;
                    }
                    other => {
                        b.errors
                            .push(format!("seq {seq}: {other:?} {}", ack.reason));
                        b.pending = None;
                    }
                }
            }
            // The server is gone (killed): keep the batch pending.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        // A device sends a batch every few ms, not flat out: enough load to
        // keep group commits and flushes busy, little enough to verify fast.
        tokio::time::sleep(Duration::from_millis(BATCH_GAP_MS)).await;
    }
    device.close().await;
}

fn free_udp_addr() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.local_addr().expect("addr")
}

/// Runs one cycle: start, load for `load_ms` (or until drained), then stop with `sig`.
#[allow(clippy::too_many_arguments)]
/// What every cycle of one harness run shares: the client runtime, the server's data
/// directory, address and log, and each device's book.
struct Rig {
    rt: tokio::runtime::Runtime,
    data_dir: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
    books: Vec<Arc<Mutex<Book>>>,
}

fn cycle(rig: &Rig, seed: u64, load_ms: Option<u64>, sig: libc::c_int) -> ExitStatus {
    let Rig {
        rt,
        data_dir,
        addr,
        log,
        books,
    } = rig;
    let (data_dir, addr, log) = (data_dir.as_path(), *addr, log.as_path());
    let server = Server::start(data_dir, addr, log);
    let endpoint = {
        let _guard = rt.enter();
        client_endpoint(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint")
    };
    let tasks: Vec<_> = books
        .iter()
        .enumerate()
        .map(|(i, book)| {
            let device_id = i as u64 + 1;
            rt.spawn(drive(
                client_cfg(addr, &server, device_id),
                endpoint.clone(),
                book.clone(),
                seed ^ (device_id << 32),
                load_ms.is_none(),
            ))
        })
        .collect();
    match load_ms {
        Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
        None => rt.block_on(async {
            for t in tasks.iter() {
                while !t.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }),
    }
    let status = server.stop(sig);
    for t in &tasks {
        t.abort();
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    endpoint.close(0u32.into(), b"cycle over");
    status
}

#[test]
fn sigkill_at_random_moments_loses_no_acked_fix() {
    let seed: u64 = std::env::var("HEXFLOW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cycles: u32 = std::env::var("HEXFLOW_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    eprintln!("crash harness: HEXFLOW_CRASH_SEED={seed} HEXFLOW_CRASH_CYCLES={cycles}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let addr = free_udp_addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let books: Vec<Arc<Mutex<Book>>> = (0..DEVICES)
        .map(|_| Arc::new(Mutex::new(Book::default())))
        .collect();
    let rig = Rig {
        rt,
        data_dir,
        addr,
        log,
        books,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for c in 0..cycles {
        let load_ms = rng.random_range(150..700);
        let cycle_seed = rng.random::<u64>();
        let status = cycle(&rig, cycle_seed, Some(load_ms), libc::SIGKILL);
        assert!(
            !status.success(),
            "seed {seed}, cycle {c}: the server exited by itself before the kill ({status}); see {}",
            std::fs::read_to_string(&rig.log).unwrap_or_default()
        );
    }
    // Last run: every pending batch gets its answer, then a graceful stop.
    let status = cycle(&rig, rng.random(), None, libc::SIGTERM);
    assert!(
        status.success(),
        "seed {seed}: graceful stop failed ({status}): {}",
        std::fs::read_to_string(&rig.log).unwrap_or_default()
    );
    eprintln!(
        "crash harness: {cycles} cycles in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every acked fix exactly once, nothing else.
    let mut expected: BTreeMap<(i64, i64, i64, i64, i64), usize> = BTreeMap::new();
    let mut acked_batches = 0;
    for (i, book) in rig.books.iter().enumerate() {
        let b = book.lock().unwrap();
        assert!(
            b.errors.is_empty(),
            "seed {seed}: device {}: {:?}",
            i + 1,
            b.errors
        );
        assert!(b.pending.is_none());
        acked_batches += b.acked.len();
        for (&seq, fixes) in &b.acked {
            for j in 0..fixes.time_ms.len() {
                let key = (
                    i as i64 + 1,
                    seq as i64,
                    fixes.time_ms[j] * 1_000,
                    i64::from(fixes.lat_e7[j]),
                    i64::from(fixes.lon_e7[j]),
                );
                assert!(expected.insert(key, 1).is_none(), "test bug: duplicate key");
            }
        }
    }
    assert!(
        acked_batches as u32 >= cycles,
        "seed {seed}: only {acked_batches} batches acked in {cycles} cycles: the harness made no progress"
    );
    let rows = common::read_positions(&rig.data_dir);
    let got = common::count_by_key(&rows);
    if got != expected {
        let dup: Vec<_> = got.iter().filter(|&(_, &c)| c > 1).take(5).collect();
        let missing: Vec<_> = expected
            .keys()
            .filter(|k| !got.contains_key(k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !expected.contains_key(k))
            .take(5)
            .collect();
        panic!(
            "seed {seed}: parquet != acked fixes ({} rows, {} expected); duplicated {dup:?}, missing {missing:?}, unexpected {extra:?}",
            rows.len(),
            expected.len()
        );
    }
    let files = common::files_under(&rig.data_dir);
    let leftovers: Vec<_> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".tmp") || (name.starts_with("wal-") && name.ends_with(".log"))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "seed {seed}: left after a graceful stop: {leftovers:?}"
    );
    eprintln!(
        "crash harness: {acked_batches} batches ({} fixes) acked, all in parquet exactly once",
        expected.len()
    );
}
