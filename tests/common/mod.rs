//! Shared helpers for the end-to-end tests: an in-process server on 127.0.0.1 with a
//! controllable clock, raw protocol access for hostile inputs, and a Parquet reader.
#![allow(
    dead_code,
    unused_imports,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use hexflow::config::Config;
use hexflow::server::Server;
use sys::Clock;

pub use sys::ManualClock;

pub fn system_now_ms() -> i64 {
    hexflow::SystemClock.now_ms()
}

/// A test configuration: loopback, port 0, fast flushes, small tables.
pub fn test_config(data_dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.data_dir = data_dir.to_path_buf();
    cfg.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.server.shutdown_grace_ms = 5_000;
    cfg.storage.flush_interval_ms = 300;
    cfg.silence.devices_max = 10_000;
    cfg.silence.scan_interval_ms = 3_600_000;
    cfg.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg
}

pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub ca_pem: Vec<u8>,
    pub key: ingest::auth::TokenKey,
    pub data_dir: PathBuf,
}

pub async fn start(cfg: &Config, clock: Arc<dyn Clock>) -> TestServer {
    let server = Server::start(cfg, clock).await.expect("server starts");
    let addr = server.local_addr();
    let ca_path = server.paths().ca_path.clone().expect("dev CA generated");
    let ca_pem = std::fs::read(ca_path).expect("CA readable");
    let key = hexflow::secret::load(&sys::fs::RealFs, &server.paths().key_path).expect("key");
    TestServer {
        server,
        addr,
        ca_pem,
        key,
        data_dir: cfg.server.data_dir.clone(),
    }
}

impl TestServer {
    /// A client configuration for `device_id` (token minted by this server's key), with a
    /// 10 s ack timeout.
    pub fn client_cfg(&self, device_id: u64) -> ingest::client::ClientConfig {
        let token = self.key.mint(fix::DeviceId::try_from(device_id).unwrap());
        let mut cfg = ingest::client::ClientConfig::new(self.addr, self.ca_pem.clone(), token);
        cfg.ack_timeout_ms = 10_000;
        cfg
    }
}

/// A bare quinn client configuration that trusts `ca_pem` and speaks the hexflow ALPN
/// (TLS 1.3 only): for raw protocol connections, inputs the client library never sends.
pub fn raw_client_config(ca_pem: &[u8]) -> quinn::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ingest::wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// `n` fixes one second apart ending a minute before `now_ms`, a short track from a random
/// start; every third fix carries accuracy, speed and heading, every fourth an altitude.
pub fn random_fixes(rng: &mut impl rand::Rng, n: usize, now_ms: i64) -> fix::Fixes {
    let mut f = fix::Fixes::default();
    let lat0 = rng.random_range(-60.0..60.0);
    let lon0 = rng.random_range(-179.0..179.0);
    for i in 0..n {
        let mut fix = fix::Fix::from_degrees(
            now_ms - 60_000 + i as i64 * 1000,
            lat0 + i as f64 * 1e-4,
            lon0 + i as f64 * 1e-4,
        );
        if i % 3 == 0 {
            fix.accuracy_cm = Some(rng.random_range(100..2000));
            fix.speed_cmps = Some(rng.random_range(0..3000));
            fix.heading_cdeg = Some(rng.random_range(0..36000));
        }
        if i % 4 == 0 {
            fix.altitude_cm = Some(rng.random_range(-1000..300_000));
        }
        f.push(&fix);
    }
    f
}

/// One fix at `now_ms` in Berlin.
pub fn one_fix(now_ms: i64) -> fix::Fixes {
    let mut f = fix::Fixes::default();
    f.push(&fix::Fix::from_degrees(now_ms, 52.52, 13.405));
    f
}

/// Sends [`one_fix`] as batch `seq` and asserts it is acked OK.
pub async fn send_one_ok(device: &ingest::client::Device, seq: u64, now_ms: i64) {
    let ack = device.send(seq, &one_fix(now_ms)).await.unwrap();
    assert_eq!(
        ack.known_status(),
        Some(ingest::wire::Status::Ok),
        "batch {seq}: {}",
        ack.reason
    );
}

/// One stored row, as read back from Parquet.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Row {
    pub device_id: i64,
    pub batch_seq: i64,
    pub time_us: i64,
    pub lat: f64,
    pub lon: f64,
    pub h3: i64,
}

/// The live files of the `positions` Delta table, checking that a reader that ignores the
/// log (a glob over `positions/**/*.parquet`) sees exactly them.
pub fn positions_table_files(data_dir: &Path) -> Vec<PathBuf> {
    let live = storage::positions_files(Arc::new(sys::fs::RealFs), data_dir, Default::default())
        .expect("the positions table opens");
    // Delta checkpoints are Parquet too, but not data.
    let plain: Vec<PathBuf> = parquet_files(&data_dir.join("positions"))
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "_delta_log"))
        .collect();
    assert_eq!(plain, live, "the plain Parquet view differs from the table");
    live
}

/// Every record batch of one Parquet file.
pub fn read_parquet(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Reads every file of the `positions` table (which are exactly the Parquet files under
/// `<data_dir>/positions`), checking the column types.
pub fn read_positions(data_dir: &Path) -> Vec<Row> {
    let files = positions_table_files(data_dir);
    let mut rows = Vec::new();
    for f in files {
        for batch in read_parquet(&f) {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("{name}"))
            };
            assert_eq!(
                col("time").data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            );
            assert_eq!(col("h3").data_type(), &DataType::Int64);
            let dev = col("device_id").as_primitive::<Int64Type>();
            let seq = col("batch_seq").as_primitive::<Int64Type>();
            let time = col("time").as_primitive::<TimestampMicrosecondType>();
            assert_eq!(col("lat").data_type(), &DataType::Decimal128(9, 7));
            assert_eq!(col("lon").data_type(), &DataType::Decimal128(10, 7));
            let lat = col("lat").as_primitive::<Decimal128Type>();
            let lon = col("lon").as_primitive::<Decimal128Type>();
            let h3 = col("h3").as_primitive::<Int64Type>();
            assert_eq!(h3.null_count(), 0);
            for i in 0..batch.num_rows() {
                rows.push(Row {
                    device_id: dev.value(i),
                    batch_seq: seq.value(i),
                    time_us: time.value(i),
                    lat: lat.value(i) as f64 / 1e7,
                    lon: lon.value(i) as f64 / 1e7,
                    h3: h3.value(i),
                });
            }
        }
    }
    rows
}

/// Every file below `dir`, sorted; none when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The Parquet files below `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

/// Rows keyed for an exact multiset comparison.
pub fn count_by_key(rows: &[Row]) -> BTreeMap<(i64, i64, i64, i64, i64), usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        let key = (
            r.device_id,
            r.batch_seq,
            r.time_us,
            (r.lat * 1e7).round() as i64,
            (r.lon * 1e7).round() as i64,
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}
