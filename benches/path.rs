//! Isolated ceilings of the per-fix path stages that have no bench elsewhere, for the cost
//! model in `docs/PERFORMANCE.md` (run beside `benches/wire.rs` and `benches/storage.rs`):
//!
//! * `path/tls13_handshake`: a full TLS 1.3 handshake in memory with hexflow's TLS stack
//!   (rustls + ring, an rcgen ECDSA P-256 certificate like the development CA's, X25519):
//!   client and server together, and the server's calls alone (`iter_custom`).
//! * `path/h3_latlng_to_cell`: h3o resolution 10 per fix, on points a moving device visits.
//! * `path/ack_encode`: one ACK frame per batch.
//! * `path/handoff`: one round trip between two threads over crossbeam channels (two
//!   hand-offs, each waking the other side as the server's queues do), and a round trip
//!   from a thread to a tokio task and back (the WAL callback waking a connection task).
//!
//! Run: `cargo bench --bench path`. Elements are fixes, batches, handshakes or round trips
//! as each group says.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};
use ingest::wire::{self, Ack, Status};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// TLS client and server configurations as hexflow builds them (TLS 1.3, ring).
fn tls_configs() -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server cert");
    server.alpn_protocols = vec![wire::ALPN.to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![wire::ALPN.to_vec()];
    // Every handshake full, as hexflow's client does today.
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(client), Arc::new(server))
}

/// Moves everything `from` wants to write into `to`; returns the time spent in the calls of
/// whichever side is the server (`server_is_from` says which).
fn pump(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    server_is_from: bool,
    buf: &mut Vec<u8>,
) -> Duration {
    buf.clear();
    let t0 = Instant::now();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls");
    }
    let write = t0.elapsed();
    let t1 = Instant::now();
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("handshake");
    }
    let read = t1.elapsed();
    if server_is_from { write } else { read }
}

/// One full handshake; returns the server's share of the time.
fn handshake(
    client_cfg: &Arc<rustls::ClientConfig>,
    server_cfg: &Arc<rustls::ServerConfig>,
) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client: rustls::Connection =
        rustls::ClientConnection::new(Arc::clone(client_cfg), name)
            .expect("client")
            .into();
    let t1 = Instant::now();
    let mut server: rustls::Connection = rustls::ServerConnection::new(Arc::clone(server_cfg))
        .expect("server")
        .into();
    let mut server_time = t1.elapsed();
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..8 {
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            break;
        }
        server_time += pump(&mut client, &mut server, false, &mut buf);
        server_time += pump(&mut server, &mut client, true, &mut buf);
    }
    assert!(
        !client.is_handshaking() && !server.is_handshaking(),
        "handshake finished"
    );
    server_time
}

fn bench_tls(c: &mut Criterion) {
    let (client_cfg, server_cfg) = tls_configs();
    let mut group = c.benchmark_group("path/tls13_handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("client_and_server", |b| {
        b.iter(|| black_box(handshake(&client_cfg, &server_cfg)))
    });
    group.bench_function("server_side", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| handshake(&client_cfg, &server_cfg))
                .sum()
        })
    });
    group.finish();
}

fn bench_h3(c: &mut Criterion) {
    // A walk through Paris, ~1 m per fix: mostly the same cell, as real devices.
    let points: Vec<h3o::LatLng> = (0..1_000)
        .map(|i| {
            h3o::LatLng::new(48.8566 + f64::from(i) * 1e-5, 2.3522 + f64::from(i) * 7e-6)
                .expect("valid")
        })
        .collect();
    let mut group = c.benchmark_group("path/h3_latlng_to_cell");
    group.throughput(Throughput::Elements(points.len() as u64));
    group.bench_function("resolution_10", |b| {
        b.iter(|| {
            let mut x = 0u64;
            for p in &points {
                x ^= u64::from(black_box(*p).to_cell(h3o::Resolution::Ten));
            }
            x
        })
    });
    group.finish();
}

fn bench_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("path/ack_encode");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(64);
    let mut seq = 1_790_000_000_000_000u64;
    group.bench_function("ok_frame", |b| {
        b.iter(|| {
            out.clear();
            seq += 1;
            wire::encode_ack(&Ack::new(black_box(seq), Status::Ok, ""), &mut out);
            out.len()
        })
    });
    group.finish();
}

fn bench_handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("path/handoff");
    group.throughput(Throughput::Elements(1));
    {
        let (to_tx, to_rx) = crossbeam_channel::bounded::<u64>(1);
        let (back_tx, back_rx) = crossbeam_channel::bounded::<u64>(1);
        let echo = std::thread::spawn(move || {
            while let Ok(v) = to_rx.recv() {
                if back_tx.send(v).is_err() {
                    break;
                }
            }
        });
        group.bench_function("crossbeam_round_trip", |b| {
            b.iter(|| {
                to_tx.send(black_box(1)).expect("echo alive");
                back_rx.recv().expect("echo alive")
            })
        });
        drop(to_tx);
        echo.join().expect("echo thread");
    }
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (to_tx, mut to_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let (back_tx, back_rx) = crossbeam_channel::bounded::<u64>(1);
        rt.spawn(async move {
            while let Some(v) = to_rx.recv().await {
                if back_tx.send(v).is_err() {
                    break;
                }
            }
        });
        group.bench_function("thread_to_tokio_task_round_trip", |b| {
            b.iter(|| {
                to_tx.blocking_send(black_box(1)).expect("task alive");
                back_rx.recv().expect("task alive")
            })
        });
        drop(to_tx);
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    group.finish();
}

// A private module: `criterion_group!` generates an undocumented `pub fn`.
mod entry {
    use super::{bench_ack, bench_h3, bench_handoff, bench_tls};
    criterion::criterion_group!(benches, bench_tls, bench_h3, bench_ack, bench_handoff);
}
criterion_main!(entry::benches);
