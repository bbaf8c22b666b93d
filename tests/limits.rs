//! Limits at their edges, over real QUIC on 127.0.0.1: `endpoint.connections_max` admits
//! exactly that many devices, refuses the next one without disturbing the others, and admits
//! it again once a slot frees up. Also: configured TLS files replace the development CA.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use ingest::client::{ClientConfig, Device, client_endpoint};

fn cfg_for(ts: &common::TestServer, device_id: u64) -> ClientConfig {
    let mut cfg = ts.client_cfg(device_id);
    cfg.connect_timeout_ms = 3_000;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_max_is_enforced_at_its_edge() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path());
    cfg.endpoint.connections_max = 2;
    let now_ms = common::system_now_ms();
    let ts = common::start(&cfg, common::ManualClock::new(now_ms)).await;
    let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();

    let a = Device::connect(&ep, cfg_for(&ts, 1)).await.unwrap();
    let b = Device::connect(&ep, cfg_for(&ts, 2)).await.unwrap();
    // The third is refused during the handshake.
    let c = Device::connect(&ep, cfg_for(&ts, 3)).await;
    assert!(
        c.is_err(),
        "a third connection over connections_max = 2 was admitted"
    );
    assert!(
        ts.server
            .endpoint_stats()
            .connections_refused
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    // The admitted devices are unaffected.
    for (dev, seq) in [(&a, 1), (&b, 1)] {
        common::send_one_ok(dev, seq, now_ms).await;
    }
    // A slot frees up: the third device gets in.
    a.close().await;
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(d) = Device::connect(&ep, cfg_for(&ts, 3)).await {
            admitted = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = admitted.expect("admitted once a connection closed");
    common::send_one_ok(&c, 1, now_ms).await;
    b.close().await;
    c.close().await;
    ts.server.shutdown().await.unwrap();
}

/// Configured certificate and key files are used instead of the development CA: a device that
/// trusts the configured CA connects and stores a batch, and no development CA is generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_certificates_are_used() {
    let dir = tempfile::tempdir().unwrap();
    // An operator's PKI, made here with the same generator into its own directory.
    let pki = dir.path().join("pki");
    hexflow::tls::load_or_generate_dev(&sys::fs::RealFs, &pki, &["localhost".to_string()]).unwrap();
    let mut cfg = common::test_config(&dir.path().join("data"));
    cfg.tls.cert_path = pki.join("server.pem");
    cfg.tls.key_path = pki.join("server.key");
    let now_ms = common::system_now_ms();
    let server = hexflow::server::Server::start(&cfg, common::ManualClock::new(now_ms))
        .await
        .unwrap();
    assert!(server.paths().ca_path.is_none(), "no development CA in use");
    assert!(
        !dir.path().join("data/tls/ca.pem").exists(),
        "none generated either"
    );
    let key = hexflow::secret::load(&sys::fs::RealFs, &server.paths().key_path).unwrap();
    let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let dev = Device::connect(
        &ep,
        ClientConfig::new(
            server.local_addr(),
            ca,
            key.mint(fix::DeviceId::try_from(9).unwrap()),
        ),
    )
    .await
    .unwrap();
    common::send_one_ok(&dev, 1, now_ms).await;
    dev.close().await;
    server.shutdown().await.unwrap();
}
