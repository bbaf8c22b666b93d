//! The bare-quinn baseline: hexflow's transport pattern with none of hexflow's logic, so
//! every transport figure of hexflow can be stated as a ratio to it measured in the same
//! script run (`bench/compare.sh`).
//!
//! # What is the same as hexflow
//! * quinn 0.11 on tokio, rustls 0.23 with the *ring* provider, TLS 1.3 only, an ECDSA P-256
//!   certificate from rcgen (hexflow's development CA signs one of the same kind), ALPN.
//! * One bidirectional stream per connection opened by the client; frames with hexflow's
//!   5-byte header (`type:u8 | len:u32 BE`); requests are real BATCH frames of the wire
//!   codec (a zstd-compressed batch of simulated fixes: same sizes as hexflow-bench sends);
//!   every request is answered by a real ACK frame (`wire::encode_ack`) carrying its seq.
//! * The server's QUIC transport settings default to hexflow's server defaults
//!   ([`TransportSettings::default`], tested against `ingest::endpoint::EndpointConfig`), the
//!   client's to hexflow's client (64 KiB windows, 10 s keep-alive, no server streams).
//! * mimalloc and a default multi-threaded tokio runtime in both binaries.
//!
//! # What is not there
//! No HELLO/WELCOME, no token, no decode, no validation, no H3, no WAL, no fsync, no
//! Parquet, no ack channel, no per-connection writer task: the server reads a frame and
//! writes the ack right away, on the connection's one task. TLS session resumption is off
//! on the client unless asked for, so every connection is a full handshake (as hexflow's
//! client does today).
//!
//! # Contract
//! * A request is at most [`request_body_bytes_max`]; anything else (another frame type, a
//!   longer body, a body shorter than a seq) closes the connection with
//!   [`CLOSE_BAD_FRAME`]: the baseline never allocates on a peer's say-so beyond that bound.
//! * The server refuses connections beyond its `connections_max` at the QUIC level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ingest::wire::{self, Ack, FRAME_HEADER_LEN, FrameType, Status};
use quinn::VarInt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::trajectory::{SimDevice, TrajectoryParams};

/// ALPN of the baseline (distinct from hexflow's, so neither client talks to the other).
pub const ALPN: &[u8] = b"hexflow-bare/1";
/// QUIC application close code for a frame the baseline does not accept.
pub const CLOSE_BAD_FRAME: u32 = 1;
/// QUIC application close code of a client that is done.
pub const CLOSE_DONE: u32 = 0;
/// The client's receive windows (hexflow's `ClientConfig::receive_window_bytes` default).
pub const CLIENT_RECEIVE_WINDOW_BYTES: u32 = 64 * 1024;
/// The client's keep-alive (hexflow's `ClientConfig::keep_alive_interval_ms` default).
pub const CLIENT_KEEP_ALIVE_MS: u64 = 10_000;
/// Offset of the batch seq in a BATCH frame (after the header).
const SEQ_AT: usize = FRAME_HEADER_LEN;

/// Why the baseline could not set up or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    /// rcgen could not make the certificate.
    #[error("cannot generate the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The PEM given as CA holds no usable certificate.
    #[error("no certificate in the CA PEM: {detail}")]
    Ca {
        /// What was wrong.
        detail: String,
    },
    /// The TLS configuration has no QUIC-capable cipher suite.
    #[error("no TLS 1.3 cipher suite usable by QUIC")]
    NoQuicSuite,
    /// A transport setting is out of range.
    #[error("quic setting {key}: {value} is out of range")]
    Setting {
        /// The setting.
        key: &'static str,
        /// The value.
        value: u64,
    },
    /// The wire codec refused the generated batch (a bug in the generator).
    #[error("encoding a request: {0}")]
    Encode(#[from] wire::EncodeError),
}

/// Why the server stopped serving one connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The handshake failed or the connection was lost.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading the stream failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing the stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer sent a frame the baseline does not accept.
    #[error("bad frame: type 0x{frame_type:02x}, {len} bytes")]
    BadFrame {
        /// The type byte.
        frame_type: u8,
        /// The announced body length.
        len: u32,
    },
}

/// The server's QUIC transport settings (hexflow's `[endpoint]` and `[session]` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    /// Per-stream receive window.
    pub stream_receive_window_bytes: u32,
    /// Per-connection receive window.
    pub receive_window_bytes: u32,
    /// Per-connection send window.
    pub send_window_bytes: u32,
    /// Idle timeout.
    pub idle_timeout_ms: u64,
}

impl Default for TransportSettings {
    /// hexflow's server defaults (checked by a test against `EndpointConfig::default`).
    fn default() -> Self {
        TransportSettings {
            stream_receive_window_bytes: 512 * 1024,
            receive_window_bytes: 1024 * 1024,
            send_window_bytes: 64 * 1024,
            idle_timeout_ms: 60_000,
        }
    }
}

/// A self-signed ECDSA P-256 certificate for `localhost`: (chain, key, certificate PEM).
///
/// # Errors
/// [`BaselineError::Certificate`].
pub fn self_signed()
-> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), BaselineError> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let pem = ck.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key, pem))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration: TLS 1.3, ring, ALPN [`ALPN`], one bidi stream, `t`'s windows.
///
/// # Errors
/// [`BaselineError`] for a refused certificate or an out-of-range setting.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    t: &TransportSettings,
) -> Result<quinn::ServerConfig, BaselineError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|_| BaselineError::NoQuicSuite)?;
    let idle =
        quinn::IdleTimeout::try_from(Duration::from_millis(t.idle_timeout_ms)).map_err(|_| {
            BaselineError::Setting {
                key: "idle_timeout_ms",
                value: t.idle_timeout_ms,
            }
        })?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(t.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(t.receive_window_bytes))
        .send_window(u64::from(t.send_window_bytes))
        .max_idle_timeout(Some(idle))
        .datagram_receive_buffer_size(None);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// The client configuration: trusts only `ca_pem`, TLS 1.3, ring, ALPN [`ALPN`], hexflow's
/// client windows and keep-alive; session resumption only when `resumption`.
///
/// # Errors
/// [`BaselineError`] for an unusable CA.
pub fn client_config(
    ca_pem: &[u8],
    resumption: bool,
) -> Result<quinn::ClientConfig, BaselineError> {
    client_config_for(ca_pem, resumption, ALPN)
}

/// [`client_config`] with another ALPN: `ingest::wire::ALPN` makes a raw QUIC client of
/// hexflow itself (the hostile suite's attackers), with the same TLS and transport.
///
/// # Errors
/// [`BaselineError`] for an unusable CA.
pub fn client_config_for(
    ca_pem: &[u8],
    resumption: bool,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, BaselineError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| BaselineError::Ca {
            detail: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(BaselineError::Ca {
            detail: "no CERTIFICATE block".to_owned(),
        });
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    if !resumption {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|_| BaselineError::NoQuicSuite)?;
    let window = VarInt::from_u32(CLIENT_RECEIVE_WINDOW_BYTES);
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(window)
        .receive_window(window)
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(Duration::from_millis(CLIENT_KEEP_ALIVE_MS)));
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

/// `count` distinct BATCH frames of `params.batch_fixes` simulated fixes each (devices
/// `1..=count`, zstd level 3 like hexflow's client), as of `now_ms`.
///
/// # Errors
/// [`BaselineError::Encode`] if the codec refuses a generated batch (a generator bug).
pub fn request_frames(
    count: usize,
    params: &TrajectoryParams,
    seed: u64,
    now_ms: i64,
) -> Result<Vec<Vec<u8>>, BaselineError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut fixes = wire::Fixes::default();
    (1..=count as u64)
        .map(|id| {
            let mut dev = SimDevice::new(id, seed, 1, params);
            let seq = dev
                .fill_batch(now_ms, params, &mut rng, &mut fixes)
                // A fresh device starts one batch in the past: it never waits.
                .unwrap_or(1);
            let mut frame = Vec::new();
            wire::encode_batch_frame(seq, &fixes, 3, &mut frame)?;
            Ok(frame)
        })
        .collect()
}

/// Writes `seq` into a BATCH frame made by [`request_frames`].
pub fn set_seq(frame: &mut [u8], seq: u64) {
    frame[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_be_bytes());
}

/// The seq of a BATCH body (its first 8 bytes), or `None` when shorter.
pub fn body_seq(body: &[u8]) -> Option<u64> {
    let b: [u8; 8] = body.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Largest request body the server reads: hexflow's default `batch_bytes_max`.
pub fn request_body_bytes_max() -> u32 {
    wire::Limits::default().batch_bytes_max
}

/// Checks a request header: a BATCH of 8 ..= [`request_body_bytes_max`] bytes.
///
/// # Errors
/// [`ServeError::BadFrame`] for anything else.
pub fn check_request_header(h: &[u8; FRAME_HEADER_LEN]) -> Result<u32, ServeError> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if h[0] != FrameType::Batch.to_byte() || !(8..=request_body_bytes_max()).contains(&len) {
        return Err(ServeError::BadFrame {
            frame_type: h[0],
            len,
        });
    }
    Ok(len)
}

/// Appends the ACK frame (status OK) for `seq`.
pub fn encode_ok_ack(seq: u64, out: &mut Vec<u8>) {
    wire::encode_ack(&Ack::new(seq, Status::Ok, ""), out);
}

/// Counts the server's open connections; a [`ConnSlot`] holds one.
#[derive(Debug, Default)]
pub struct ConnCounter {
    open: AtomicUsize,
}

/// One open connection of a [`ConnCounter`]; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnCounter>);

impl ConnCounter {
    /// A slot if fewer than `max` are held.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<ConnSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnSlot(Arc::clone(self)))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection: accepts its stream, answers every request with an ACK at once,
/// finishes the stream when the client finishes its own, and returns the requests served
/// once the connection is closed.
///
/// # Errors
/// [`ServeError`] when the connection breaks or the client sends a bad frame (the
/// connection is then closed with [`CLOSE_BAD_FRAME`]).
pub async fn serve_connection(conn: quinn::Connection) -> Result<u64, ServeError> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut body = Vec::new();
    let mut ack = Vec::with_capacity(32);
    let mut served = 0;
    loop {
        match recv.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => break,
            Err(e) => return Err(e.into()),
        }
        let len = match check_request_header(&header) {
            Ok(len) => len,
            Err(e) => {
                conn.close(VarInt::from_u32(CLOSE_BAD_FRAME), b"bad frame");
                return Err(e);
            }
        };
        // len <= request_body_bytes_max() (hexflow's batch limit, 256 KiB by default).
        body.resize(len as usize, 0);
        recv.read_exact(&mut body).await?;
        ack.clear();
        encode_ok_ack(body_seq(&body).unwrap_or(0), &mut ack);
        send.write_all(&ack).await?;
        served += 1;
    }
    // The client is done sending; it closes the connection once it has its acks.
    let _ = send.finish();
    conn.closed().await;
    Ok(served)
}

/// Binds the server endpoint on `listen`.
///
/// # Errors
/// The bind error.
pub fn server_endpoint(
    config: quinn::ServerConfig,
    listen: SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(config, listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_defaults_are_hexflows_server_defaults() {
        let h = ingest::endpoint::EndpointConfig::default();
        let t = TransportSettings::default();
        assert_eq!(t.stream_receive_window_bytes, h.stream_receive_window_bytes);
        assert_eq!(t.receive_window_bytes, h.connection_receive_window_bytes);
        assert_eq!(t.send_window_bytes, h.send_window_bytes);
        assert_eq!(t.idle_timeout_ms, h.session.idle_timeout_ms);
    }

    #[test]
    fn client_settings_are_hexflows_client_defaults() {
        let c = ingest::client::ClientConfig::new(
            "127.0.0.1:1".parse().unwrap(),
            Vec::new(),
            String::new(),
        );
        assert_eq!(CLIENT_RECEIVE_WINDOW_BYTES, c.receive_window_bytes);
        assert_eq!(CLIENT_KEEP_ALIVE_MS, c.keep_alive_interval_ms);
    }

    #[test]
    fn requests_are_real_batch_frames_with_a_settable_seq() {
        let params = TrajectoryParams::default();
        let now_ms = 1_790_000_000_000;
        let mut frames = request_frames(4, &params, 9, now_ms).unwrap();
        assert_eq!(frames.len(), 4);
        let limits = wire::Limits::default();
        for f in &mut frames {
            let h: [u8; FRAME_HEADER_LEN] = f[..FRAME_HEADER_LEN].try_into().unwrap();
            let len = check_request_header(&h).unwrap();
            assert_eq!(len as usize, f.len() - FRAME_HEADER_LEN);
            // A 50-fix zstd batch is a few hundred bytes, like hexflow-bench's.
            assert!((200..2_000).contains(&f.len()), "{} bytes", f.len());
            set_seq(f, 4242);
            let body = &f[FRAME_HEADER_LEN..];
            assert_eq!(body_seq(body), Some(4242));
            let (seq, fixes) = wire::decode_batch(body, &limits, now_ms).unwrap();
            assert_eq!((seq, fixes.len()), (4242, 50));
        }
        assert_ne!(frames[0], frames[1], "distinct devices");
    }

    #[test]
    fn only_bounded_batch_frames_are_accepted() {
        let h = |t: u8, len: u32| {
            let mut b = [t, 0, 0, 0, 0];
            b[1..].copy_from_slice(&len.to_be_bytes());
            b
        };
        assert_eq!(check_request_header(&h(0x03, 8)).unwrap(), 8);
        let max = request_body_bytes_max();
        assert!(check_request_header(&h(0x03, max)).is_ok());
        for (t, len) in [(0x03, max + 1), (0x03, 7), (0x01, 100)] {
            assert!(matches!(
                check_request_header(&h(t, len)),
                Err(ServeError::BadFrame { frame_type, len: l }) if frame_type == t && l == len
            ));
        }
        assert_eq!(body_seq(&[0; 7]), None);
    }

    #[test]
    fn acks_carry_the_seq_with_status_ok() {
        let mut out = Vec::new();
        encode_ok_ack(77, &mut out);
        let h: [u8; FRAME_HEADER_LEN] = out[..FRAME_HEADER_LEN].try_into().unwrap();
        let header = wire::parse_frame_header(&h).unwrap();
        assert_eq!(header.frame_type, FrameType::Ack);
        let ack = wire::decode_ack(&out[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!((ack.batch_seq, ack.known_status()), (77, Some(Status::Ok)));
    }

    #[test]
    fn connection_slots_are_bounded_and_returned_on_drop() {
        let c = Arc::new(ConnCounter::default());
        let a = c.try_acquire(2).unwrap();
        let b = c.try_acquire(2).unwrap();
        assert!(c.try_acquire(2).is_none());
        assert_eq!(c.open(), 2);
        drop(a);
        assert!(c.try_acquire(2).is_some());
        drop(b);
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn configurations_build() {
        let (chain, key, pem) = self_signed().unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
        server_config(chain, key, &TransportSettings::default()).unwrap();
        client_config(pem.as_bytes(), false).unwrap();
        assert!(matches!(
            client_config(b"not a pem", false),
            Err(BaselineError::Ca { .. })
        ));
    }
}
