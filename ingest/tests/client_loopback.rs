//! The client library against a minimal in-test quinn server speaking protocol v1:
//! pipelining and the in-flight bound, retry-after honouring, reconnect-and-resend with the
//! same seq, and rejection of a bad token.
#![cfg(feature = "client")]

use ingest::client::{ClientConfig, ClientError, Device, SessionError, client_endpoint};
use ingest::wire::{self, Ack, Close, Fix, Fixes, FrameType, Limits, Status, Welcome};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Self-signed `localhost` certificate (P-256, CA:FALSE, valid until 2126), test only.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBuTCCAV+gAwIBAgIUK4U5zJYG+dbuGOXUj22UdJkUgIkwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNTExMzg1NloYDzIxMjYxMTAx
MTEzODU2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQE9nH94UHCobiXJnccKBGoRjk6ykwisYrWBdNUJl74G3YdfOH0lOZO
8AD8JLeZIIMxGqy85q7z/q2a/PPRTGp3o4GMMIGJMB0GA1UdDgQWBBTk8BfARsED
+2P5V96hY3HbbZAaYTAfBgNVHSMEGDAWgBTk8BfARsED+2P5V96hY3HbbZAaYTAU
BgNVHREEDTALgglsb2NhbGhvc3QwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMC
B4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSAAwRQIgOEokYjFE
b2sUd5PypXHwPdKuW3iDxCcfyZnhQ8u29KMCIQCu050Gc6fEBK9YOzJ+OTZ3obxV
TeSDP6iK24BSgJbGNw==
-----END CERTIFICATE-----
";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg774YSYrfVaidSMh+
mAvK4ALUh0E77UuWLNqNAJMsEsahRANCAAQE9nH94UHCobiXJnccKBGoRjk6ykwi
sYrWBdNUJl74G3YdfOH0lOZO8AD8JLeZIIMxGqy85q7z/q2a/PPRTGp3
-----END PRIVATE KEY-----
";
const TOKEN: &str = "good-token";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn server_endpoint() -> quinn::Endpoint {
    let cert = CertificateDer::from_pem_slice(CERT_PEM.as_bytes()).expect("cert");
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).expect("key");
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("cert and key match");
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic suite");
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind server")
}

fn client_config(addr: SocketAddr, token: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(addr, CERT_PEM.as_bytes().to_vec(), token.to_string());
    cfg.ack_timeout_ms = 5_000;
    cfg.connect_timeout_ms = 5_000;
    cfg
}

fn welcome(inflight_batches_max: u32) -> Welcome {
    let l = Limits::default();
    Welcome {
        device_id: 77,
        batch_bytes_max: l.batch_bytes_max,
        batch_fixes_max: l.batch_fixes_max,
        inflight_batches_max,
        decompressed_bytes_max: l.decompressed_bytes_max,
        server_time_ms: now_ms(),
        dedup_window_batches: 64,
    }
}

fn fixes(n: usize) -> Fixes {
    let mut f = Fixes::default();
    let t = now_ms();
    for i in 0..n {
        f.push(&Fix::from_degrees(
            t - 1000 + i as i64,
            52.52 + i as f64 * 1e-4,
            13.405,
        ));
    }
    f
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Option<(FrameType, Vec<u8>)> {
    let mut header = [0u8; wire::FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await.ok()?;
    let header = wire::parse_frame_header(&header).expect("client sends valid headers");
    header
        .check_len(&Limits::default())
        .expect("client respects limits");
    let mut body = vec![0u8; header.len as usize];
    recv.read_exact(&mut body).await.ok()?;
    Some((header.frame_type, body))
}

async fn write(send: &mut quinn::SendStream, frame: &[u8]) {
    send.write_all(frame).await.expect("server write");
}

async fn ack(send: &mut quinn::SendStream, ack: &Ack) {
    let mut out = vec![];
    wire::encode_ack(ack, &mut out);
    write(send, &out).await;
}

/// Accepts one connection and its stream, checks HELLO; answers WELCOME when the token is
/// right, CLOSE(UNAUTHENTICATED) otherwise (returning `None`).
async fn accept(
    endpoint: &quinn::Endpoint,
    inflight: u32,
) -> Option<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let incoming = endpoint.accept().await?;
    let conn = incoming.await.expect("handshake");
    let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
    let (frame_type, body) = read_frame(&mut recv).await.expect("hello");
    assert_eq!(frame_type, FrameType::Hello, "HELLO comes first");
    let hello = wire::decode_hello(&body).expect("hello body");
    assert_eq!(hello.protocol_version, wire::PROTOCOL_VERSION);
    assert!(hello.client_agent.starts_with("hexflow-client/"));
    let mut out = vec![];
    if hello.token != TOKEN {
        let status = Status::Unauthenticated;
        wire::encode_close(
            &Close {
                status: status.code(),
                reason: "unknown token".into(),
                retry_after_ms: 0,
            },
            &mut out,
        );
        write(&mut send, &out).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        conn.close(quinn::VarInt::from_u32(status.code()), b"unknown token");
        return None;
    }
    wire::encode_welcome(&welcome(inflight), &mut out);
    write(&mut send, &out).await;
    Some((conn, send, recv))
}

/// Keeps the connection open until the client sends CLOSE or goes away: dropping a quinn
/// connection discards acks not yet delivered.
async fn wait_for_client_close(recv: &mut quinn::RecvStream) {
    while let Some((frame_type, body)) = read_frame(recv).await {
        if frame_type == FrameType::Close {
            let close = wire::decode_close(&body).expect("close body");
            assert_eq!(close.status, Status::Ok.code());
            return;
        }
    }
}

async fn read_batch(recv: &mut quinn::RecvStream) -> Option<(u64, Fixes)> {
    loop {
        let (frame_type, body) = read_frame(recv).await?;
        match frame_type {
            FrameType::Batch => {
                return Some(
                    wire::decode_batch(&body, &Limits::default(), now_ms()).expect("valid batch"),
                );
            }
            FrameType::Heartbeat => continue,
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_pipelined_up_to_the_server_bound_and_acks_match_by_seq() {
    let server = server_endpoint();
    let addr = server.local_addr().expect("addr");
    let max_unacked = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&max_unacked);
    let server_task = tokio::spawn(async move {
        let (_conn, mut send, mut recv) = accept(&server, 2).await.expect("session");
        let mut fixes_seen = 0;
        for _round in 0..3 {
            // Two batches arrive back to back (pipelined, no ack in between)...
            let (a, fa) = read_batch(&mut recv).await.expect("batch");
            let (b, fb) = read_batch(&mut recv).await.expect("batch");
            fixes_seen += fa.len() + fb.len();
            seen.fetch_max(2, Ordering::SeqCst);
            // ...and no third one while both are unacked (the WELCOME bound is 2).
            let third =
                tokio::time::timeout(Duration::from_millis(200), read_frame(&mut recv)).await;
            assert!(third.is_err(), "client exceeded inflight_batches_max");
            // Ack out of order: the client must match acks by seq.
            ack(&mut send, &Ack::new(b, Status::Ok, "")).await;
            ack(&mut send, &Ack::new(a, Status::Duplicate, "")).await;
        }
        wait_for_client_close(&mut recv).await;
        fixes_seen
    });

    let endpoint = client_endpoint("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let mut cfg = client_config(addr, TOKEN);
    cfg.inflight_batches_max = 8;
    let device = Arc::new(Device::connect(&endpoint, cfg).await.expect("connect"));
    assert_eq!(device.device_id(), 77);
    assert_eq!(device.welcome().inflight_batches_max, 2);
    device.heartbeat().await.expect("heartbeat");

    let mut tasks = vec![];
    for seq in 1..=6u64 {
        let device = Arc::clone(&device);
        tasks.push(tokio::spawn(async move {
            (seq, device.send_once(seq, &fixes(seq as usize)).await)
        }));
    }
    for task in tasks {
        let (seq, result) = task.await.expect("task");
        let ack = result.expect("acked");
        assert_eq!(ack.batch_seq, seq);
        assert!(ack.known_status().expect("known").is_success());
    }
    device.close().await;
    assert_eq!(
        server_task.await.expect("server"),
        21,
        "every fix of 1..=6 arrived"
    );
    assert_eq!(max_unacked.load(Ordering::SeqCst), 2);
    assert!(matches!(
        device.send_once(9, &fixes(1)).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_status_is_retried_with_the_same_seq_after_retry_after() {
    let server = server_endpoint();
    let addr = server.local_addr().expect("addr");
    let server_task = tokio::spawn(async move {
        let (_conn, mut send, mut recv) = accept(&server, 4).await.expect("session");
        let (seq, first) = read_batch(&mut recv).await.expect("batch");
        let refused_at = Instant::now();
        ack(
            &mut send,
            &Ack {
                batch_seq: seq,
                status: Status::Overloaded.code(),
                reason: "busy".into(),
                retry_after_ms: 300,
            },
        )
        .await;
        let (seq2, second) = read_batch(&mut recv).await.expect("resend");
        let waited = refused_at.elapsed();
        ack(&mut send, &Ack::new(seq2, Status::Ok, "")).await;
        // Permanent rejections are returned, not retried.
        let (seq3, _) = read_batch(&mut recv).await.expect("batch");
        ack(
            &mut send,
            &Ack::new(seq3, Status::InvalidCoordinates, "fix 0: lat_e7 ..."),
        )
        .await;
        // The next frame is the client's CLOSE, not a resend of the rejected batch.
        let (next, _) = read_frame(&mut recv).await.expect("close");
        assert_eq!(next, FrameType::Close, "a 1xx rejection must not be resent");
        assert_eq!(first, second, "same content resent");
        (seq, seq2, waited)
    });

    let endpoint = client_endpoint("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let device = Device::connect(&endpoint, client_config(addr, TOKEN))
        .await
        .expect("connect");
    let ack = device.send(41, &fixes(5)).await.expect("eventually stored");
    assert_eq!((ack.batch_seq, ack.known_status()), (41, Some(Status::Ok)));
    let rejected = device.send(42, &fixes(1)).await.expect("an ack");
    assert_eq!(rejected.known_status(), Some(Status::InvalidCoordinates));
    device.close().await;
    let (seq, seq2, waited) = server_task.await.expect("server");
    assert_eq!((seq, seq2), (41, 41));
    assert!(
        waited >= Duration::from_millis(300),
        "resent after {waited:?}, before retry_after_ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connection_is_reconnected_and_the_batch_resent_with_the_same_seq() {
    let server = server_endpoint();
    let addr = server.local_addr().expect("addr");
    let server_task = tokio::spawn(async move {
        let (conn, _send, mut recv) = accept(&server, 4).await.expect("first session");
        let (seq, _) = read_batch(&mut recv).await.expect("batch");
        // Drop the connection without acking, as a crashing server would.
        conn.close(
            quinn::VarInt::from_u32(Status::ShuttingDown.code()),
            b"restarting",
        );
        let (_conn2, mut send2, mut recv2) = accept(&server, 4).await.expect("second session");
        let (seq2, _) = read_batch(&mut recv2).await.expect("resend");
        ack(
            &mut send2,
            &Ack::new(seq2, Status::Duplicate, "already stored"),
        )
        .await;
        wait_for_client_close(&mut recv2).await;
        (seq, seq2)
    });

    let endpoint = client_endpoint("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let mut cfg = client_config(addr, TOKEN);
    cfg.retry.backoff_initial_ms = 10;
    let device = Device::connect(&endpoint, cfg).await.expect("connect");
    let ack = device
        .send(1_700_000_000_000_000, &fixes(3))
        .await
        .expect("stored");
    assert_eq!(ack.known_status(), Some(Status::Duplicate));
    device.close().await;
    let (seq, seq2) = server_task.await.expect("server");
    assert_eq!(seq, 1_700_000_000_000_000);
    assert_eq!(seq2, seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_is_rejected_at_connect() {
    let server = server_endpoint();
    let addr = server.local_addr().expect("addr");
    let server_task = tokio::spawn(async move { accept(&server, 4).await.is_none() });
    let endpoint = client_endpoint("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let err = Device::connect(&endpoint, client_config(addr, "wrong"))
        .await
        .expect_err("rejected");
    match err {
        ClientError::Session(SessionError::Rejected { status, reason, .. }) => {
            assert_eq!(status, Status::Unauthenticated);
            assert_eq!(reason, "unknown token");
        }
        other => panic!("expected Rejected, got {other}"),
    }
    assert!(
        !ClientError::from(SessionError::Rejected {
            status: Status::Unauthenticated,
            reason: String::new(),
            retry_after_ms: 0
        })
        .is_retryable()
    );
    assert!(server_task.await.expect("server"));
}

// ---------------------------------------------------------------------------------------
// Confirm-location against the real endpoint (ingest::endpoint) with a recording Activity.

mod confirm {
    use super::*;
    use ingest::auth::{Authenticator, ConfirmMasterKey, TokenKey};
    use ingest::endpoint::{
        AcceptedBatch, Activity, BatchSink, ConfirmDelivery, ConfirmRequestError, Endpoint,
        EndpointConfig, EndpointParts, SinkCallback, SinkOutcome,
    };
    use ingest::wire::{ConfirmAck, ConfirmKey, ConfirmKind, ConfirmRequest};
    use std::sync::Mutex;
    use sys::SystemClock;

    /// Acks every batch OK at once.
    struct OkSink;
    impl BatchSink for OkSink {
        fn submit(&self, _batch: AcceptedBatch, done: SinkCallback) {
            done(SinkOutcome::ok());
        }
    }

    /// Records every confirmation.
    #[derive(Default)]
    pub(super) struct Recorder(Mutex<Vec<(u64, ConfirmKind, i64)>>);
    impl Activity for Recorder {
        fn on_contact(&self, _: fix::DeviceId, _: i64) {}
        fn on_fixes_stored(&self, _: fix::DeviceId, _: i64, _: i64) {}
        fn on_confirm(&self, device_id: fix::DeviceId, kind: ConfirmKind, at_ms: i64) {
            self.0
                .lock()
                .expect("lock")
                .push((device_id.get(), kind, at_ms));
        }
    }

    pub(super) fn start(cfg: EndpointConfig) -> (Endpoint, Arc<Recorder>, TokenKey) {
        let cert = CertificateDer::from_pem_slice(CERT_PEM.as_bytes()).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).expect("key");
        let server_config =
            ingest::endpoint::server_config(vec![cert], key, &cfg).expect("server config");
        let token_key = TokenKey::from_bytes(&[9; 32]).expect("key");
        let recorder = Arc::new(Recorder::default());
        let endpoint = Endpoint::start(EndpointParts {
            listen: "127.0.0.1:0".parse().expect("addr"),
            server_config,
            cfg,
            auth: Arc::new(Authenticator::v1_only(
                token_key.clone(),
                ConfirmMasterKey::from_bytes(&[7; 32]).expect("key"),
            )),
            sink: Arc::new(OkSink),
            activity: recorder.clone(),
            clock: Arc::new(SystemClock),
        })
        .expect("endpoint starts");
        (endpoint, recorder, token_key)
    }

    async fn next_request(rx: &mut tokio::sync::mpsc::Receiver<ConfirmRequest>) -> ConfirmRequest {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a confirm request arrives")
            .expect("channel open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_bounded_delivered_and_answered() {
        let (endpoint, recorder, key) = start(EndpointConfig {
            confirm_pending_max: 2,
            ..EndpointConfig::default()
        });
        let addr = endpoint.local_addr().expect("addr");

        // Device 5 is not connected: queued, and one per device.
        let first = endpoint
            .request_confirm(fix::DeviceId::try_from(5).unwrap(), "no fix for 36h")
            .expect("raised");
        let ConfirmDelivery::Queued { request_id: id1 } = first else {
            panic!("expected Queued, got {first:?}");
        };
        assert_eq!(
            endpoint
                .request_confirm(fix::DeviceId::try_from(5).unwrap(), "again")
                .expect("idempotent"),
            ConfirmDelivery::AlreadyOutstanding { request_id: id1 }
        );
        // confirm_pending_max = 2 at its edge.
        let id6 = endpoint
            .request_confirm(fix::DeviceId::try_from(6).unwrap(), "x")
            .expect("second")
            .request_id();
        assert_eq!(
            endpoint.request_confirm(fix::DeviceId::try_from(7).unwrap(), "x"),
            Err(ConfirmRequestError::PendingFull {
                pending: 2,
                pending_max: 2
            })
        );
        assert_eq!(
            endpoint.cancel_confirm(fix::DeviceId::try_from(6).unwrap()),
            Some(id6)
        );
        assert_eq!(
            endpoint.cancel_confirm(fix::DeviceId::try_from(6).unwrap()),
            None
        );
        assert_eq!(endpoint.confirms_outstanding(), 1);
        let long = "r".repeat(wire::CONFIRM_REASON_BYTES_MAX + 1);
        assert!(matches!(
            endpoint.request_confirm(fix::DeviceId::try_from(7).unwrap(), &long),
            Err(ConfirmRequestError::ReasonTooLong { len, len_max: 256 }) if len == 257
        ));
        assert!(
            endpoint
                .request_confirm(
                    fix::DeviceId::try_from(7).unwrap(),
                    &long[..wire::CONFIRM_REASON_BYTES_MAX]
                )
                .is_ok()
        );
        assert!(
            endpoint
                .cancel_confirm(fix::DeviceId::try_from(7).unwrap())
                .is_some()
        );
        // Device id 0 cannot be named: the type refuses it before the endpoint sees it.
        assert!(fix::DeviceId::try_from(0).is_err());

        // The queued request arrives right after WELCOME.
        let client = client_endpoint("127.0.0.1:0".parse().expect("addr")).expect("client");
        let mut cfg = ClientConfig::new(
            addr,
            CERT_PEM.as_bytes().to_vec(),
            key.mint(fix::DeviceId::try_from(5).unwrap()),
        );
        cfg.ack_timeout_ms = 5_000;
        let device = Device::connect(&client, cfg).await.expect("connect");
        let mut requests = device.confirm_requests().expect("first taker");
        assert!(device.confirm_requests().is_none(), "only one taker");
        let req = next_request(&mut requests).await;
        assert_eq!(
            (req.request_id, req.reason.as_str()),
            (id1, "no fix for 36h")
        );

        let before = now_ms();
        let ack = device.confirm_here(id1).await.expect("answered");
        assert_eq!(ack, ConfirmAck::new(id1, Status::Ok, ""));
        {
            let seen = recorder.0.lock().expect("lock").clone();
            assert_eq!(seen.len(), 1);
            assert_eq!((seen[0].0, seen[0].1), (5, ConfirmKind::Here));
            assert!(seen[0].2 >= before && seen[0].2 <= now_ms(), "{seen:?}");
        }
        assert!(
            endpoint
                .outstanding_confirm(fix::DeviceId::try_from(5).unwrap())
                .is_none()
        );
        assert_eq!(endpoint.confirms_outstanding(), 0);
        // Answering twice: the request is gone.
        let again = device.confirm_here(id1).await.expect("an answer");
        assert_eq!(again.known_status(), Some(Status::UnsolicitedConfirm));

        // Connected: the request is sent at once; answered with a fresh fix.
        let sent = endpoint
            .request_confirm(fix::DeviceId::try_from(5).unwrap(), "still quiet")
            .expect("raised");
        let ConfirmDelivery::Sent { request_id: id2 } = sent else {
            panic!("expected Sent, got {sent:?}");
        };
        assert_eq!(next_request(&mut requests).await.request_id, id2);
        let f = fixes(3);
        let newest = *f.time_ms.iter().max().expect("fixes");
        let ack = device
            .confirm_with_fix(id2, 100, &f)
            .await
            .expect("answered");
        assert_eq!(ack.known_status(), Some(Status::Ok), "{}", ack.reason);
        assert_eq!(
            recorder.0.lock().expect("lock").last().copied(),
            Some((5, ConfirmKind::Fix, newest))
        );
        let stats = endpoint.stats();
        assert_eq!(stats.confirms_recorded.load(Ordering::SeqCst), 2);
        assert_eq!(stats.confirms_rejected.load(Ordering::SeqCst), 1);
        device.close().await;
        endpoint.shutdown(Duration::from_secs(2)).await;
    }

    /// A raw protocol connection for CONFIRM frames the client library never sends.
    pub(super) struct Raw {
        pub(super) conn: quinn::Connection,
        pub(super) send: quinn::SendStream,
        pub(super) recv: quinn::RecvStream,
    }

    impl Raw {
        pub(super) async fn open(addr: SocketAddr, token: &str) -> Self {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(CERT_PEM.as_bytes()).expect("cert"))
                .expect("root");
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
            tls.alpn_protocols = vec![wire::ALPN.to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("suite");
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("ep");
            let mut client = quinn::ClientConfig::new(Arc::new(crypto));
            // QUIC PINGs every 100 ms keep the transport alive: only the session's own
            // deadlines (frames, not PINGs) may end an idle raw connection.
            let mut transport = quinn::TransportConfig::default();
            transport.keep_alive_interval(Some(Duration::from_millis(100)));
            client.transport_config(Arc::new(transport));
            ep.set_default_client_config(client);
            let conn = ep
                .connect(addr, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            let (mut send, mut recv) = conn.open_bi().await.expect("stream");
            let mut out = vec![];
            wire::encode_hello(
                &wire::Hello {
                    protocol_version: wire::PROTOCOL_VERSION,
                    token: token.to_string(),
                    client_agent: "raw".into(),
                },
                &mut out,
            );
            send.write_all(&out).await.expect("hello");
            let (t, _) = read_frame(&mut recv).await.expect("welcome");
            assert_eq!(t, FrameType::Welcome);
            Raw { conn, send, recv }
        }

        async fn confirm(&mut self, c: &wire::Confirm) -> Option<ConfirmAck> {
            let mut out = vec![];
            wire::encode_confirm(c, &mut out);
            self.send.write_all(&out).await.ok()?;
            let (t, body) = read_frame(&mut self.recv).await?;
            if t == FrameType::Close {
                let close = wire::decode_close(&body).expect("close");
                assert_eq!(
                    close.status,
                    Status::ProtocolViolation.code(),
                    "{}",
                    close.reason
                );
                return None;
            }
            assert_eq!(t, FrameType::ConfirmAck);
            Some(wire::decode_confirm_ack(&body).expect("confirm ack"))
        }
    }

    /// Polls `done` every 10 ms for at most 5 s.
    pub(super) async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "not within 5 s: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_connection_of_a_device_takes_its_session_over_and_nothing_leaks() {
        let (endpoint, _recorder, key) = start(EndpointConfig::default());
        let addr = endpoint.local_addr().expect("addr");
        let stats = endpoint.stats();
        let token = key.mint(fix::DeviceId::try_from(11).unwrap());
        let mut first = Raw::open(addr, &token).await;
        let other = Raw::open(addr, &key.mint(fix::DeviceId::try_from(12).unwrap())).await;
        let second = Raw::open(addr, &token).await;

        // The older connection of device 11 is told why, as a CLOSE frame and as the QUIC
        // application error code; device 12 is untouched.
        let (t, body) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut first.recv))
            .await
            .expect("in time")
            .expect("a frame");
        assert_eq!(t, FrameType::Close);
        let close = wire::decode_close(&body).expect("close");
        assert_eq!(
            Status::from_code(close.status),
            Some(Status::SessionReplaced),
            "{}",
            close.reason
        );
        match tokio::time::timeout(Duration::from_secs(5), first.conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(203))
            }
            other => panic!("expected an application close, got {other:?}"),
        }
        assert_eq!(stats.sessions_replaced.load(Ordering::Relaxed), 1);
        eventually("two sessions left", || {
            stats.connections_open.load(Ordering::Acquire) == 2
                && stats.sessions_open.load(Ordering::Acquire) == 2
        })
        .await;

        // The peers vanish: every gauge returns to zero.
        for raw in [other, second] {
            raw.conn.close(quinn::VarInt::from_u32(0), b"bye");
        }
        eventually("every gauge back to 0", || {
            [
                &stats.connections_open,
                &stats.handshakes_pending,
                &stats.sessions_open,
                &stats.inflight_batches,
                &stats.buffered_bytes,
            ]
            .iter()
            .all(|g| g.load(Ordering::Acquire) == 0)
        })
        .await;
        endpoint.shutdown(Duration::from_secs(2)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_unsolicited_and_unknown_batches_are_refused_and_floods_closed() {
        let mut cfg = EndpointConfig::default();
        cfg.session.confirm_rejects_max = 3;
        let (endpoint, recorder, key) = start(cfg);
        let addr = endpoint.local_addr().expect("addr");
        let id = endpoint
            .request_confirm(fix::DeviceId::try_from(8).unwrap(), "quiet")
            .expect("raised")
            .request_id();
        let token = key.mint(fix::DeviceId::try_from(8).unwrap());
        let mut raw = Raw::open(addr, &token).await;
        // The queued request is the frame right after WELCOME.
        let (t, body) = read_frame(&mut raw.recv).await.expect("request");
        assert_eq!(t, FrameType::ConfirmRequest);
        assert_eq!(
            wire::decode_confirm_request(&body).expect("req").request_id,
            id
        );

        let good_key = ConfirmKey::from_token(&token);
        let forged_key = ConfirmKey::from_token(&key.mint(fix::DeviceId::try_from(9).unwrap()));
        // 1: signed with another device's key.
        let ack = raw
            .confirm(&forged_key.confirm(id, ConfirmKind::Here, 0, 1))
            .await
            .expect("answered");
        assert_eq!(ack.known_status(), Some(Status::InvalidSignature));
        // A FIX naming a batch never acked here: refused, not counted as abuse.
        let ack = raw
            .confirm(&good_key.confirm(id, ConfirmKind::Fix, 999, 1))
            .await
            .expect("answered");
        assert_eq!(ack.known_status(), Some(Status::FixNotFound));
        // 2: unsolicited (wrong id).
        let ack = raw
            .confirm(&good_key.confirm(id + 1, ConfirmKind::Here, 0, 1))
            .await
            .expect("answered");
        assert_eq!(ack.known_status(), Some(Status::UnsolicitedConfirm));
        // 3: unknown kind.
        let mut bad = good_key.confirm(id, ConfirmKind::Here, 0, 1);
        bad.kind = 3;
        let ack = raw.confirm(&bad).await.expect("answered");
        assert_eq!(ack.known_status(), Some(Status::InvalidField));
        assert!(recorder.0.lock().expect("lock").is_empty());
        assert_eq!(
            endpoint
                .outstanding_confirm(fix::DeviceId::try_from(8).unwrap())
                .map(|o| o.request_id),
            Some(id),
            "refusals leave the request outstanding"
        );
        // 4 > confirm_rejects_max: the connection is closed.
        assert!(
            raw.confirm(&forged_key.confirm(id, ConfirmKind::Here, 0, 2))
                .await
                .is_none()
        );
        let closed = tokio::time::timeout(Duration::from_secs(5), raw.conn.closed())
            .await
            .expect("closed");
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code == quinn::VarInt::from_u32(Status::ProtocolViolation.code())),
            "{closed:?}"
        );
        // A genuine answer on a new connection is recorded.
        let mut raw = Raw::open(addr, &token).await;
        let (t, _) = read_frame(&mut raw.recv).await.expect("redelivered");
        assert_eq!(t, FrameType::ConfirmRequest);
        let ack = raw
            .confirm(&good_key.confirm(id, ConfirmKind::Here, 0, 3))
            .await
            .expect("answered");
        assert_eq!(ack.known_status(), Some(Status::Ok));
        assert_eq!(recorder.0.lock().expect("lock").len(), 1);
        endpoint.shutdown(Duration::from_secs(2)).await;
    }
}

/// One test per way a connection can end (issue 11, point 1): whichever side or task ends
/// first, every gauge the connection held returns to 0 within a bounded time, and the
/// endpoint keeps admitting devices.
mod exits {
    use super::confirm::{Raw, eventually, start};
    use super::*;
    use ingest::auth::TokenKey;
    use ingest::endpoint::{Endpoint, EndpointConfig, EndpointStats};

    /// The per-connection gauges: all 0 once nothing is connected.
    fn held(stats: &EndpointStats) -> [usize; 5] {
        [
            &stats.connections_open,
            &stats.handshakes_pending,
            &stats.sessions_open,
            &stats.inflight_batches,
            &stats.buffered_bytes,
        ]
        .map(|g| g.load(Ordering::Acquire))
    }

    async fn all_returned(stats: &EndpointStats) {
        eventually("every gauge back to 0", || held(stats) == [0; 5]).await;
    }

    /// An endpoint with `idle_timeout_ms` (None: the default), its counters and token key.
    fn endpoint(idle_timeout_ms: Option<u64>) -> (Endpoint, Arc<EndpointStats>, TokenKey) {
        let mut cfg = EndpointConfig::default();
        if let Some(ms) = idle_timeout_ms {
            cfg.session.idle_timeout_ms = ms;
        }
        let (endpoint, _, key) = start(cfg);
        let stats = endpoint.stats();
        (endpoint, stats, key)
    }

    /// The gauges return to 0, a new device is still admitted, the endpoint shuts down.
    async fn ends_clean(endpoint: Endpoint, stats: &EndpointStats, key: &TokenKey) {
        all_returned(stats).await;
        still_admits(&endpoint, key).await;
        all_returned(stats).await;
        endpoint.shutdown(Duration::from_secs(2)).await;
    }

    fn token(key: &ingest::auth::TokenKey, device_id: u64) -> String {
        key.mint(fix::DeviceId::try_from(device_id).expect("valid id"))
    }

    fn batch(seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode_batch_frame(seq, &fixes(3), 3, &mut out).expect("batch");
        out
    }

    /// A later device still connects and gets its batch acked OK.
    async fn still_admits(endpoint: &Endpoint, key: &ingest::auth::TokenKey) {
        let addr = endpoint.local_addr().expect("addr");
        let mut raw = Raw::open(addr, &token(key, 99)).await;
        write(&mut raw.send, &batch(1)).await;
        let (t, body) = read_frame(&mut raw.recv).await.expect("ack");
        assert_eq!(t, FrameType::Ack);
        let ack = wire::decode_ack(&body).expect("ack");
        assert_eq!(ack.known_status(), Some(Status::Ok), "{}", ack.reason);
        raw.conn.close(quinn::VarInt::from_u32(0), b"bye");
    }

    /// The device stops reading (STOP_SENDING on the server's stream) and goes on sending
    /// batches: the server's writer fails first while answers are still owed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_dies_first() {
        let (endpoint, stats, key) = endpoint(None);
        let mut raw = Raw::open(endpoint.local_addr().expect("addr"), &token(&key, 1)).await;
        raw.recv.stop(quinn::VarInt::from_u32(0)).expect("stop");
        for seq in 1..=200 {
            if raw.send.write_all(&batch(seq)).await.is_err() {
                break;
            }
        }
        ends_clean(endpoint, &stats, &key).await;
    }

    /// The device resets its stream in the middle of a frame: the server's reader fails
    /// first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_dies_first() {
        let (endpoint, stats, key) = endpoint(None);
        let mut raw = Raw::open(endpoint.local_addr().expect("addr"), &token(&key, 2)).await;
        let frame = batch(1);
        raw.send
            .write_all(&frame[..frame.len() / 2])
            .await
            .expect("half a frame");
        raw.send.reset(quinn::VarInt::from_u32(0)).expect("reset");
        ends_clean(endpoint, &stats, &key).await;
    }

    /// The device's process disappears: its runtime (and with it the QUIC driver) is gone
    /// without a CLOSE or a QUIC close; only the idle timeout ends the connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_peer_vanishes() {
        let (endpoint, stats, key) = endpoint(Some(300));
        let addr = endpoint.local_addr().expect("addr");
        let t = token(&key, 3);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let raw = rt.block_on(Raw::open(addr, &t));
            // Forget the handles so no drop can say goodbye, then drop the runtime.
            std::mem::forget(raw);
            drop(rt);
        })
        .join()
        .expect("device thread");
        ends_clean(endpoint, &stats, &key).await;
    }

    /// A device that says nothing after WELCOME is closed at `session.idle_timeout_ms`,
    /// although its QUIC PINGs keep the transport alive (PROTOCOL.md: PINGs are no frames).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_session_idles_out() {
        let (endpoint, stats, key) = endpoint(Some(300));
        let mut raw = Raw::open(endpoint.local_addr().expect("addr"), &token(&key, 4)).await;
        let (t, body) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw.recv))
            .await
            .expect("in time")
            .expect("a frame");
        assert_eq!(t, FrameType::Close);
        let close = wire::decode_close(&body).expect("close");
        assert!(close.reason.starts_with("idle"), "{}", close.reason);
        all_returned(&stats).await;
        assert_eq!(stats.sessions_idle_closed.load(Ordering::Relaxed), 1);
        endpoint.shutdown(Duration::from_secs(2)).await;
    }

    /// Shutdown with sessions open (one mid-frame): every connection is closed and every
    /// gauge returns to 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_every_connection() {
        let (endpoint, stats, key) = endpoint(None);
        let addr = endpoint.local_addr().expect("addr");
        let idle = Raw::open(addr, &token(&key, 5)).await;
        let mut busy = Raw::open(addr, &token(&key, 6)).await;
        busy.send
            .write_all(&batch(1)[..10])
            .await
            .expect("part of a frame");
        assert_eq!(held(&stats)[2], 2);
        endpoint.shutdown(Duration::from_secs(2)).await;
        all_returned(&stats).await;
        for raw in [idle, busy] {
            let closed = tokio::time::timeout(Duration::from_secs(5), raw.conn.closed()).await;
            assert!(closed.is_ok(), "the connection is closed by the shutdown");
        }
    }
}
