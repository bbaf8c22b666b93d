//! The quinn server configuration: TLS 1.3 only, ALPN `hexflow/1`, the ring provider, one
//! bidirectional stream per connection, bounded windows (a small connection window until
//! the device is authenticated).

use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;

use super::{EndpointConfig, EndpointError};
use crate::wire;

/// Builds the quinn server configuration: TLS 1.3 only, ALPN `hexflow/1`, ring provider,
/// one bidirectional stream per connection, bounded windows.
///
/// # Errors
/// [`EndpointError`] when the certificate/key are refused or a setting is out of range.
pub fn server_config(
    cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    cfg: &EndpointConfig,
) -> Result<quinn::ServerConfig, EndpointError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|_| EndpointError::NoQuicCipherSuite)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(cfg)?));
    server.validation_token_config(validation_tokens(cfg));
    Ok(server)
}

/// NEW_TOKEN address validation (`endpoint.validation_token*`): tokens sent once a
/// connection is established, accepted once each (a Bloom-filter log refuses reuse; a false
/// refusal only costs a Retry). With 0 tokens sent, none is accepted either.
fn validation_tokens(cfg: &EndpointConfig) -> quinn::ValidationTokenConfig {
    let mut v = quinn::ValidationTokenConfig::default();
    v.sent(cfg.validation_tokens_sent)
        .lifetime(Duration::from_secs(cfg.validation_token_lifetime_s));
    if cfg.validation_tokens_sent == 0 {
        v.log(Arc::new(quinn::NoneTokenLog));
    } else {
        // Expected uses: one per 10 bytes, the density the quinn default assumes.
        let bytes = cfg.validation_token_log_bytes_max;
        v.log(Arc::new(quinn::BloomTokenLog::new_expected_items(
            bytes,
            (bytes / 10) as u64,
        )));
    }
    v
}

fn transport_config(cfg: &EndpointConfig) -> Result<quinn::TransportConfig, EndpointError> {
    let idle_ms = cfg.session.idle_timeout_ms;
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(idle_ms)).map_err(|_| {
        EndpointError::InvalidSetting {
            key: "session.idle_timeout_ms",
            reason: format!("{idle_ms} is out of range"),
        }
    })?;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(cfg.stream_receive_window_bytes))
        // Raised to connection_receive_window_bytes after WELCOME (conn.rs): before it, a
        // device can make the server buffer at most this much, in order or not.
        .receive_window(VarInt::from_u32(cfg.pre_auth_receive_window_bytes))
        .send_window(u64::from(cfg.send_window_bytes))
        .max_idle_timeout(Some(idle))
        .datagram_receive_buffer_size(None);
    Ok(t)
}
