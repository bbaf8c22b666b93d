//! [`EndpointConfig`]: every setting of the QUIC endpoint, with the protocol rules each
//! connection's session enforces ([`SessionConfig`]) as one part.

use crate::proto::server::SessionConfig;

/// Endpoint limits and settings. Every field is a documented key in `config/hexflow.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// What each connection's protocol session enforces and advertises in WELCOME: batch
    /// limits, `inflight_batches_max`, `dedup_window_batches`, `oversize_discard_bytes_max`,
    /// `hello_timeout_ms`, `confirm_rejects_max`.
    pub session: SessionConfig,
    /// Open connections allowed at once; more are refused at the QUIC level. Default 10 000.
    pub connections_max: usize,
    /// Most confirm-location requests outstanding (queued or delivered, not yet answered or
    /// cancelled) across all devices; more are refused. At most one per device in any case.
    /// Default 1 000 000 (about 100 bytes each).
    pub confirm_pending_max: usize,
    /// How long closing a connection waits for the device to receive the end of the
    /// stream (and, after the device's CLOSE, for it to close the connection). Default
    /// 1 000 ms.
    pub close_linger_ms: u64,
    /// QUIC idle timeout. Default 60 s.
    pub idle_timeout_ms: u64,
    /// QUIC per-stream receive window. Default 512 KiB.
    pub stream_receive_window_bytes: u32,
    /// QUIC per-connection receive window. Default 1 MiB.
    pub connection_receive_window_bytes: u32,
    /// QUIC per-connection send window. Default 64 KiB.
    pub send_window_bytes: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            connections_max: 10_000,
            confirm_pending_max: 1_000_000,
            close_linger_ms: 1_000,
            idle_timeout_ms: 60_000,
            stream_receive_window_bytes: 512 * 1024,
            connection_receive_window_bytes: 1024 * 1024,
            send_window_bytes: 64 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = EndpointConfig::default();
        assert_eq!(
            c.session,
            SessionConfig {
                limits: Limits::default(),
                inflight_batches_max: 32,
                dedup_window_batches: 64,
                oversize_discard_bytes_max: 4 * 1024 * 1024,
                hello_timeout_ms: 10_000,
                confirm_rejects_max: 8,
            }
        );
        assert_eq!(
            (c.connections_max, c.confirm_pending_max, c.close_linger_ms),
            (10_000, 1_000_000, 1_000)
        );
        assert_eq!(
            (
                c.idle_timeout_ms,
                c.stream_receive_window_bytes,
                c.connection_receive_window_bytes,
                c.send_window_bytes
            ),
            (60_000, 512 * 1024, 1024 * 1024, 64 * 1024)
        );
    }
}
