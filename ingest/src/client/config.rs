//! [`ClientConfig`] and the quinn client configuration built from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sys::{Clock, SystemClock};

use super::ClientError;
use crate::proto::client::RetryPolicy;
use crate::wire;

/// Everything a [`super::Device`] needs; build with [`ClientConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's UDP address.
    pub server_addr: SocketAddr,
    /// The TLS server name to verify. Default `localhost`.
    pub server_name: String,
    /// PEM with the CA certificate(s) to trust (the dev certificate itself works).
    pub ca_pem: Vec<u8>,
    /// The device token sent in HELLO.
    pub token: String,
    /// Most unacked batches on this device; the server's WELCOME may lower it. Default 16.
    pub inflight_batches_max: usize,
    /// Retry behaviour of [`super::Device::send`].
    pub retry: RetryPolicy,
    /// Limit for QUIC handshake plus HELLO/WELCOME. Default 10 s.
    pub connect_timeout_ms: u64,
    /// zstd level for batch payloads. Default 3.
    pub zstd_level: i32,
    /// Sent in HELLO for the server's logs. Default `hexflow-client/<version>`.
    pub client_agent: String,
    /// How long [`super::Device::send_once`] waits for an ack after queueing the batch.
    /// Default 30 s.
    pub ack_timeout_ms: u64,
    /// QUIC keep-alive interval, 0 = off. Keeps NAT bindings and the idle timer alive
    /// between batches. Default 10 s.
    pub keep_alive_interval_ms: u64,
    /// QUIC receive window (per stream and per connection). The client only receives small
    /// control frames, so this stays small to save memory across thousands of connections.
    /// Default 64 KiB.
    pub receive_window_bytes: u32,
    /// How long [`super::Device::close`] waits for the server to acknowledge the CLOSE
    /// frame. Default 1 s.
    pub close_linger_ms: u64,
    /// Confirm requests buffered for the app ([`super::Device::confirm_requests`]); when
    /// full, a new request is dropped (the server delivers it again after the next
    /// reconnect). Default 8.
    pub confirm_requests_max: usize,
    /// The device clock, read for the `device_time_ms` signed into CONFIRM frames.
    /// Default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server_addr", &self.server_addr)
            .field("server_name", &self.server_name)
            .field("token", &"<redacted>")
            .field("inflight_batches_max", &self.inflight_batches_max)
            .field("retry", &self.retry)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("zstd_level", &self.zstd_level)
            .field("client_agent", &self.client_agent)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("keep_alive_interval_ms", &self.keep_alive_interval_ms)
            .field("receive_window_bytes", &self.receive_window_bytes)
            .field("close_linger_ms", &self.close_linger_ms)
            .field("confirm_requests_max", &self.confirm_requests_max)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(server_addr: SocketAddr, ca_pem: Vec<u8>, token: String) -> Self {
        ClientConfig {
            server_addr,
            server_name: "localhost".to_string(),
            ca_pem,
            token,
            inflight_batches_max: 16,
            retry: RetryPolicy::default(),
            connect_timeout_ms: 10_000,
            zstd_level: 3,
            client_agent: concat!("hexflow-client/", env!("CARGO_PKG_VERSION")).to_string(),
            ack_timeout_ms: 30_000,
            keep_alive_interval_ms: 10_000,
            receive_window_bytes: 64 * 1024,
            close_linger_ms: 1_000,
            confirm_requests_max: 8,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Builds the quinn client configuration: ring provider, TLS 1.3, ALPN, CA from PEM.
pub(super) fn quic_client_config(cfg: &ClientConfig) -> Result<quinn::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cfg.ca_pem) {
        let cert = cert.map_err(|e| ClientError::InvalidCa {
            detail: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(ClientError::InvalidCa {
            detail: "no CERTIFICATE block found".to_string(),
        });
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|_| ClientError::NoInitialCipherSuite)?;
    let mut transport = quinn::TransportConfig::default();
    let window = VarInt::from_u32(cfg.receive_window_bytes);
    transport
        .stream_receive_window(window)
        .receive_window(window)
        // The server never opens streams towards a device.
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(
            (cfg.keep_alive_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.keep_alive_interval_ms)),
        );
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let c = ClientConfig::new(addr, vec![], "t".into());
        assert_eq!(c.server_name, "localhost");
        assert_eq!(
            c.retry,
            RetryPolicy {
                attempts_max: 8,
                backoff_initial_ms: 50,
                backoff_max_ms: 5_000
            }
        );
        assert_eq!(c.inflight_batches_max, 16);
        assert!(c.client_agent.starts_with("hexflow-client/"));
        assert!(
            !format!("{c:?}").contains("\"t\""),
            "the token is not logged"
        );
    }

    #[test]
    fn bad_ca_pem_is_reported() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let c = ClientConfig::new(addr, b"not a pem".to_vec(), "t".into());
        assert!(matches!(
            quic_client_config(&c),
            Err(ClientError::InvalidCa { .. })
        ));
    }
}
