//! [`EndpointConfig`]: every setting of the QUIC endpoint, with the protocol rules each
//! connection's session enforces ([`SessionConfig`]) as one part.
//!
//! Contract: the struct is the serde form of the `[endpoint]` section of
//! `config/hexflow.toml` (field names are the keys, defaults below, unknown keys refused);
//! [`EndpointConfig::validate`] states and checks every bound once. `session` is not a key of
//! `[endpoint]`: the binary builds it from `[session]` and `[limits]`.

use crate::bounds::{OutOfRange, TIMEOUT_MS_LIMIT, check};
use crate::proto::server::{HELLO_BYTES_MAX, SessionConfig};

/// Largest `connections_max`: far above what one process can hold, a guard against typos.
pub const CONNECTIONS_LIMIT: usize = 10_000_000;

/// Endpoint limits and settings. Every field is a documented key in `config/hexflow.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// What each connection's protocol session enforces and advertises in WELCOME: batch
    /// limits, `inflight_batches_max`, `dedup_window_batches`, `oversize_discard_bytes_max`,
    /// `hello_timeout_ms`, `frame_timeout_ms`, `idle_timeout_ms` (also the QUIC idle
    /// timeout), `confirm_rejects_max`. Sections `[session]` and `[limits]` of the TOML.
    #[serde(skip)]
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
    /// Deadline for the QUIC + TLS handshake of one connection (a budget of its own, much
    /// shorter than the idle timeout). Default 10 s.
    pub handshake_timeout_ms: u64,
    /// QUIC per-stream receive window. Default 512 KiB.
    pub stream_receive_window_bytes: u32,
    /// QUIC per-connection receive window once the device is authenticated. Default 1 MiB.
    pub connection_receive_window_bytes: u32,
    /// QUIC per-connection receive window before WELCOME: all a device can send (in order
    /// or not) before it is authenticated; room for a HELLO. Default 4 KiB.
    pub pre_auth_receive_window_bytes: u32,
    /// QUIC per-connection send window. Default 64 KiB.
    pub send_window_bytes: u32,
}

impl EndpointConfig {
    /// Checks every bound, the session's included: `connections_max`
    /// `1..=`[`CONNECTIONS_LIMIT`], `confirm_pending_max` `0..=100_000_000`, each deadline
    /// `1..=`[`TIMEOUT_MS_LIMIT`] ms (`close_linger_ms` may be 0), windows at least 1 KiB
    /// and at most 1 GiB, and `pre_auth_receive_window_bytes` large enough for one HELLO
    /// frame and no larger than `connection_receive_window_bytes`.
    ///
    /// # Errors
    /// The first value out of bounds, named `endpoint.<key>` (or `session.…`/`limits.…`).
    pub fn validate(&self) -> Result<(), OutOfRange> {
        self.session.validate()?;
        check(
            "endpoint.connections_max",
            self.connections_max as i128,
            1,
            CONNECTIONS_LIMIT as i128,
        )?;
        check(
            "endpoint.confirm_pending_max",
            self.confirm_pending_max as i128,
            0,
            100_000_000,
        )?;
        check(
            "endpoint.handshake_timeout_ms",
            self.handshake_timeout_ms,
            1,
            TIMEOUT_MS_LIMIT,
        )?;
        check(
            "endpoint.close_linger_ms",
            self.close_linger_ms,
            0,
            TIMEOUT_MS_LIMIT,
        )?;
        for (key, bytes) in [
            (
                "endpoint.stream_receive_window_bytes",
                self.stream_receive_window_bytes,
            ),
            (
                "endpoint.connection_receive_window_bytes",
                self.connection_receive_window_bytes,
            ),
            ("endpoint.send_window_bytes", self.send_window_bytes),
        ] {
            check(key, bytes, 1024, 1u32 << 30)?;
        }
        // One HELLO frame: the 5-byte header and the largest HELLO body.
        check(
            "endpoint.pre_auth_receive_window_bytes",
            self.pre_auth_receive_window_bytes,
            HELLO_BYTES_MAX + 5,
            self.connection_receive_window_bytes,
        )
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            connections_max: 10_000,
            confirm_pending_max: 1_000_000,
            close_linger_ms: 1_000,
            handshake_timeout_ms: 10_000,
            stream_receive_window_bytes: 512 * 1024,
            connection_receive_window_bytes: 1024 * 1024,
            pre_auth_receive_window_bytes: 4 * 1024,
            send_window_bytes: 64 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits;

    fn refused(c: &EndpointConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn every_bound_is_checked_at_its_edge() {
        assert_eq!(EndpointConfig::default().validate(), Ok(()));
        let mut c = EndpointConfig::default();
        c.session.frame_timeout_ms = 0;
        assert!(refused(&c).contains("session.frame_timeout_ms"));
        c.session.frame_timeout_ms = 1;
        c.handshake_timeout_ms = 0;
        assert!(refused(&c).contains("endpoint.handshake_timeout_ms"));
        c.handshake_timeout_ms = 1;
        c.pre_auth_receive_window_bytes = HELLO_BYTES_MAX + 4;
        assert!(refused(&c).contains("endpoint.pre_auth_receive_window_bytes"));
        c.pre_auth_receive_window_bytes = HELLO_BYTES_MAX + 5;
        assert_eq!(c.validate(), Ok(()), "one HELLO frame fits");
        c.pre_auth_receive_window_bytes = c.connection_receive_window_bytes + 1;
        assert!(refused(&c).contains("endpoint.pre_auth_receive_window_bytes"));
        let mut c = EndpointConfig::default();
        c.session.inflight_batches_max = c.session.dedup_window_batches;
        assert!(refused(&c).contains("session.inflight_batches_max"));
        c.session.inflight_batches_max = c.session.dedup_window_batches - 1;
        assert_eq!(c.validate(), Ok(()));
        c.connections_max = 0;
        assert!(refused(&c).contains("endpoint.connections_max"));
        let mut c = EndpointConfig::default();
        c.session.limits.batch_fixes_max = fix::BATCH_FIXES_LIMIT as u32 + 1;
        assert!(refused(&c).contains("limits.batch_fixes_max"));
        c.session.limits.batch_fixes_max = fix::BATCH_FIXES_LIMIT as u32;
        assert_eq!(
            c.validate(),
            Ok(()),
            "the one fix-count bound, shared with storage"
        );
        c.session.limits.decompressed_bytes_max = c.session.limits.batch_bytes_max - 1;
        assert!(refused(&c).contains("limits.decompressed_bytes_max"));
        let mut c = EndpointConfig::default();
        c.session.limits.future_skew_ms = -1;
        assert!(refused(&c).contains("limits.future_skew_ms"));
    }

    #[test]
    fn toml_keys_are_the_fields() {
        let e: EndpointConfig = toml::from_str("connections_max = 7").unwrap();
        assert_eq!(e.connections_max, 7);
        assert_eq!(e.session, SessionConfig::default());
        for not_a_key in ["session = {}", "idle_timeout_ms = 5", "nope = 1"] {
            assert!(
                toml::from_str::<EndpointConfig>(not_a_key).is_err(),
                "{not_a_key}"
            );
        }
        let s: SessionConfig = toml::from_str("idle_timeout_ms = 5").unwrap();
        assert_eq!(s.idle_timeout_ms, 5);
        for not_a_key in [
            "dedup_window_batches = 5",
            "batch_bytes_max = 5",
            "limits = {}",
        ] {
            assert!(
                toml::from_str::<SessionConfig>(not_a_key).is_err(),
                "{not_a_key}"
            );
        }
        let l: Limits = toml::from_str("batch_fixes_max = 9").unwrap();
        assert_eq!(l.batch_fixes_max, 9);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = EndpointConfig::default();
        // The session's defaults are its own (`SessionConfig::default`); that every default
        // is the documented one is checked against config/hexflow.toml by the binary.
        assert_eq!(c.session, SessionConfig::default());
        assert_eq!(c.session.limits, Limits::default());
        assert_eq!(
            (c.connections_max, c.confirm_pending_max, c.close_linger_ms),
            (10_000, 1_000_000, 1_000)
        );
        assert_eq!(
            (
                c.handshake_timeout_ms,
                c.stream_receive_window_bytes,
                c.connection_receive_window_bytes,
                c.pre_auth_receive_window_bytes,
                c.send_window_bytes
            ),
            (10_000, 512 * 1024, 1024 * 1024, 4 * 1024, 64 * 1024)
        );
    }
}
