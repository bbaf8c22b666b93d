//! Device identity in the running server, over real QUIC on 127.0.0.1: version-2 tokens from
//! the key ring on disk are accepted, version-1 tokens only while `auth.accept_v1`, and the
//! revocation file is reloaded while the server runs: a revoked device can no longer
//! connect and its open session ends at its next frame, while other devices carry on.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ingest::client::{ClientConfig, ClientError, Device, SessionError, client_endpoint};
use ingest::wire::Status;

fn client(ts: &common::TestServer, token: String) -> ClientConfig {
    let mut cfg = ClientConfig::new(ts.addr, ts.ca_pem.clone(), token);
    cfg.connect_timeout_ms = 5_000;
    cfg.retry.attempts_max = 1;
    cfg
}

fn v2_token(ts: &common::TestServer, device_id: u64, now_ms: i64) -> String {
    let (ring, _) = hexflow::identity::load_ring(&sys::fs::RealFs, &ts.data_dir, true).unwrap();
    let now_s = (now_ms / 1000) as u64;
    ring.mint(
        fix::DeviceId::try_from(device_id).unwrap(),
        now_s,
        now_s + 3_600,
    )
    .unwrap()
}

/// Writes `text` to `dir/revoked.txt`; returns that path and a test configuration (data in
/// `dir/data`) that reads its revocations there.
fn with_revocation_file(dir: &Path, text: &str) -> (PathBuf, hexflow::config::Config) {
    let revoked = dir.join("revoked.txt");
    std::fs::write(&revoked, text).unwrap();
    let mut cfg = common::test_config(&dir.join("data"));
    cfg.auth.revocations_path = revoked.clone();
    (revoked, cfg)
}

fn is_unauthenticated(e: &ClientError) -> bool {
    let inner = match e {
        ClientError::RetriesExhausted { last, .. } => last.as_ref(),
        other => other,
    };
    matches!(
        inner,
        ClientError::Session(SessionError::Rejected {
            status: Status::Unauthenticated,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_tokens_and_a_reloaded_revocation_file() {
    let dir = tempfile::tempdir().unwrap();
    let (revoked, mut cfg) = with_revocation_file(dir.path(), "# none yet\n");
    cfg.auth.accept_v1 = false;
    cfg.auth.revocations_reload_ms = 100;
    let now_ms = common::system_now_ms();
    let ts = common::start(&cfg, common::ManualClock::new(now_ms)).await;
    let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();

    // Version 2 is accepted; version 1 is not while accept_v1 = false.
    let a = Device::connect(&ep, client(&ts, v2_token(&ts, 1, now_ms)))
        .await
        .unwrap();
    let b = Device::connect(&ep, client(&ts, v2_token(&ts, 2, now_ms)))
        .await
        .unwrap();
    let v1 = ts.key.mint(fix::DeviceId::try_from(3).unwrap());
    let err = Device::connect(&ep, client(&ts, v1)).await.unwrap_err();
    assert!(is_unauthenticated(&err), "{err}");
    for (dev, seq) in [(&a, 1), (&b, 1)] {
        common::send_one_ok(dev, seq, now_ms).await;
    }

    // Revoke device 2 while the server runs.
    std::fs::write(&revoked, "2  # lost\n").unwrap();
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(e) = Device::connect(&ep, client(&ts, v2_token(&ts, 2, now_ms))).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("device 2 refused within 5 s of the revocation");
    assert!(is_unauthenticated(&refused), "{refused}");
    // Its open session ends at its next frame; device 1 carries on.
    let err = b.send(2, &common::one_fix(now_ms)).await.unwrap_err();
    assert!(!matches!(err, ClientError::AckTimeout { .. }), "{err}");
    common::send_one_ok(&a, 2, now_ms).await;

    // An invalid file keeps the previous list: device 2 stays revoked, device 1 stays in.
    std::fs::write(&revoked, "not-a-device\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = Device::connect(&ep, client(&ts, v2_token(&ts, 2, now_ms)))
        .await
        .unwrap_err();
    assert!(is_unauthenticated(&err), "{err}");
    common::send_one_ok(&a, 3, now_ms).await;

    a.close().await;
    ts.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_revocation_file_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = with_revocation_file(dir.path(), "1\n0\n");
    let err = hexflow::server::Server::start(&cfg, common::ManualClock::new(0))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("revoked.txt:2"), "{err}");
}

/// `hexflow token`: a v2 token by default that the ring on disk verifies for that device and
/// expires after `--ttl-s`; `--v1` the legacy form; `--rotate` a new signing key that
/// leaves earlier tokens valid.
#[test]
fn the_token_command_mints_what_the_server_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hexflow"))
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["9", "--ttl-s", "600", "--confirm-secret"]);
    let mut lines = out.lines();
    let token = lines.next().unwrap().to_string();
    let secret = lines.next().unwrap();
    assert!(token.starts_with("hf2.1.9."), "{token}");
    assert_eq!(secret.len(), 64, "32 bytes in hex");
    let (ring, _) = hexflow::identity::load_ring(&sys::fs::RealFs, dir.path(), false).unwrap();
    let none = ingest::auth::Revocations::default();
    let claims = ring
        .verify(&token, common::system_now_ms() as u64 / 1000, &none)
        .unwrap();
    assert_eq!(claims.device_id.get(), 9);
    let expires_s = claims.expires_s.unwrap();
    assert!(
        ring.verify(&token, expires_s + 1, &none).is_err(),
        "expired after --ttl-s"
    );
    assert!(run(&["9", "--v1"]).starts_with("hf1.9."));
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_hexflow"))
        .args(["token", "9", "--ttl-s", "59", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("auth.token_ttl_s = 59"),
        "the one bound of AuthConfig"
    );
    assert_eq!(run(&["--rotate"]).trim(), "2");
    assert!(run(&["9"]).starts_with("hf2.2.9."), "the new key signs");
    let (ring, _) = hexflow::identity::load_ring(&sys::fs::RealFs, dir.path(), false).unwrap();
    assert!(
        ring.verify(&token, claims.issued_s, &none).is_ok(),
        "key 1 still verifies"
    );
}
