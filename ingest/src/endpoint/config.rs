//! [`EndpointConfig`]: every setting of the QUIC endpoint, with the protocol rules each
//! connection's session enforces ([`SessionConfig`]) as one part.
//!
//! Contract: the struct is the serde form of the `[endpoint]` section of
//! `config/hexflow.toml` (field names are the keys, defaults below, unknown keys refused);
//! [`EndpointConfig::validate`] states and checks every bound once. `session` is not a key of
//! `[endpoint]`: the binary builds it from `[session]` and `[limits]`.

use crate::bounds::{OutOfRange, TIMEOUT_MS_LIMIT, check};
use crate::proto::server::{HELLO_BYTES_MAX, SessionConfig};
use sys::bounds::check_all;

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
    /// Handshakes in progress allowed at once (each also holds a `connections_max` slot);
    /// more are refused. Default 1 000.
    pub handshakes_max: usize,
    /// Once this many handshakes are in progress, a connection whose address is not
    /// validated yet gets a QUIC Retry (one round trip more for the device, nothing kept for
    /// a spoofed source). 0: always. Default 100.
    pub retry_above_handshakes: usize,
    /// Address-validation tokens (QUIC NEW_TOKEN) sent to a device once its connection is
    /// established, `0..=16`; on its next connection the device presents one and counts as
    /// validated, so it gets no Retry (the round trip a returning device would otherwise pay
    /// while the server is busy). 0: none sent, none accepted. Default 2.
    pub validation_tokens_sent: u32,
    /// Memory of the log that refuses a token's second use (two Bloom filters, allocated as
    /// tokens are used), bytes, `64 KiB..=256 MiB`. Default 8 MiB: about 800,000 token uses
    /// per lifetime before false refusals (a refused token only costs a Retry).
    pub validation_token_log_bytes_max: usize,
    /// How long a NEW_TOKEN token stays valid, s, `60..=2_592_000` (30 days). Default 604,800
    /// (7 days).
    pub validation_token_lifetime_s: u64,
    /// Open connections (handshaking or not) allowed per source (an IPv4 address or an
    /// IPv6 /64; many devices may share one behind a carrier NAT). Default 1 000.
    pub connections_per_source_max: usize,
    /// Handshakes a source may start per second, on average (token bucket). Default 100.
    pub handshakes_per_source_per_s: u32,
    /// Handshakes a source may start at once (the bucket's size). Default 500.
    pub handshakes_per_source_burst: u32,
    /// Failed logins (HELLO refused UNAUTHENTICATED) after which a source is refused for a
    /// back-off. Default 8.
    pub login_failures_before_backoff: u32,
    /// The first back-off; each further round of failures doubles it. Default 1 000 ms.
    pub login_backoff_initial_ms: u64,
    /// The longest back-off. Default 300 000 ms (5 min).
    pub login_backoff_max_ms: u64,
    /// A source without a failed login for this long starts over (no failures, back-off
    /// back to the first). Default 3 600 000 ms (1 h).
    pub login_failures_forget_ms: u64,
    /// Sources whose admission state is kept (about 150 bytes each); when full, the source
    /// idle for longest is forgotten. At least `connections_max`. Default 100 000.
    pub sources_tracked_max: usize,
    /// At most one log line about failed logins per this interval; the line says how many
    /// were suppressed since the last one. Default 1 000 ms.
    pub login_failure_log_interval_ms: u64,
}

impl EndpointConfig {
    /// Checks every bound, the session's included: `connections_max`
    /// `1..=`[`CONNECTIONS_LIMIT`], `confirm_pending_max` `0..=100_000_000`, each deadline
    /// `1..=`[`TIMEOUT_MS_LIMIT`] ms (`close_linger_ms` may be 0), windows at least 1 KiB
    /// and at most 1 GiB, and `pre_auth_receive_window_bytes` large enough for one HELLO
    /// frame and no larger than `connection_receive_window_bytes`. Admission:
    /// `handshakes_max` and `connections_per_source_max` `1..=`[`CONNECTIONS_LIMIT`] (above
    /// `connections_max` they do not bind),
    /// `retry_above_handshakes` `0..=handshakes_max`, the per-source rate, burst and
    /// `login_failures_before_backoff` `1..=1_000_000`, `login_backoff_initial_ms` ≥ 1 ms,
    /// `login_backoff_max_ms` ≥ the initial one, `login_failures_forget_ms` ≥ the longest
    /// back-off (each at most [`TIMEOUT_MS_LIMIT`]; the log interval may be 0: every
    /// failure logged), `sources_tracked_max` from `connections_max` (so a new source always
    /// finds a source without connections to evict) to 10 × [`CONNECTIONS_LIMIT`].
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
        )?;
        self.validate_admission()
    }

    /// The admission keys (see [`EndpointConfig::validate`]).
    fn validate_admission(&self) -> Result<(), OutOfRange> {
        let limit = CONNECTIONS_LIMIT as i128;
        let ms = TIMEOUT_MS_LIMIT as i128;
        check_all(&[
            (
                "endpoint.handshakes_max",
                self.handshakes_max as i128,
                1,
                limit,
            ),
            (
                "endpoint.retry_above_handshakes",
                self.retry_above_handshakes as i128,
                0,
                self.handshakes_max as i128,
            ),
            (
                "endpoint.validation_tokens_sent",
                self.validation_tokens_sent.into(),
                0,
                16,
            ),
            (
                "endpoint.validation_token_log_bytes_max",
                self.validation_token_log_bytes_max as i128,
                64 << 10,
                256 << 20,
            ),
            (
                "endpoint.validation_token_lifetime_s",
                self.validation_token_lifetime_s.into(),
                60,
                30 * 86_400,
            ),
            (
                "endpoint.connections_per_source_max",
                self.connections_per_source_max as i128,
                1,
                limit,
            ),
            (
                "endpoint.handshakes_per_source_per_s",
                self.handshakes_per_source_per_s.into(),
                1,
                1_000_000,
            ),
            (
                "endpoint.handshakes_per_source_burst",
                self.handshakes_per_source_burst.into(),
                1,
                1_000_000,
            ),
            (
                "endpoint.login_failures_before_backoff",
                self.login_failures_before_backoff.into(),
                1,
                1_000_000,
            ),
            (
                "endpoint.login_backoff_initial_ms",
                self.login_backoff_initial_ms.into(),
                1,
                ms,
            ),
            (
                "endpoint.login_backoff_max_ms",
                self.login_backoff_max_ms.into(),
                self.login_backoff_initial_ms.into(),
                ms,
            ),
            (
                "endpoint.login_failures_forget_ms",
                self.login_failures_forget_ms.into(),
                self.login_backoff_max_ms.into(),
                ms,
            ),
            (
                "endpoint.sources_tracked_max",
                self.sources_tracked_max as i128,
                self.connections_max as i128,
                limit * 10,
            ),
            (
                "endpoint.login_failure_log_interval_ms",
                self.login_failure_log_interval_ms.into(),
                0,
                ms,
            ),
        ])
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
            handshakes_max: 1_000,
            retry_above_handshakes: 100,
            validation_tokens_sent: 2,
            validation_token_log_bytes_max: 8 << 20,
            validation_token_lifetime_s: 7 * 86_400,
            connections_per_source_max: 1_000,
            handshakes_per_source_per_s: 100,
            handshakes_per_source_burst: 500,
            login_failures_before_backoff: 8,
            login_backoff_initial_ms: 1_000,
            login_backoff_max_ms: 300_000,
            login_failures_forget_ms: 3_600_000,
            sources_tracked_max: 100_000,
            login_failure_log_interval_ms: 1_000,
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
    fn admission_bounds_are_checked_at_their_edges() {
        let edge = |f: fn(&mut EndpointConfig), key: &str| {
            let mut c = EndpointConfig::default();
            f(&mut c);
            assert!(refused(&c).contains(key), "{key}: {}", refused(&c));
        };
        let fine = |f: fn(&mut EndpointConfig)| {
            let mut c = EndpointConfig::default();
            f(&mut c);
            assert_eq!(c.validate(), Ok(()));
        };
        edge(|c| c.handshakes_max = 0, "endpoint.handshakes_max");
        fine(|c| c.handshakes_max = CONNECTIONS_LIMIT);
        edge(
            |c| c.handshakes_max = CONNECTIONS_LIMIT + 1,
            "endpoint.handshakes_max",
        );
        // Lowering connections_max alone stays valid (the admission caps then do not bind).
        fine(|c| c.connections_max = 1);
        fine(|c| c.retry_above_handshakes = 0);
        fine(|c| c.retry_above_handshakes = c.handshakes_max);
        edge(
            |c| c.retry_above_handshakes = c.handshakes_max + 1,
            "endpoint.retry_above_handshakes",
        );
        fine(|c| c.validation_tokens_sent = 0);
        fine(|c| c.validation_tokens_sent = 16);
        edge(
            |c| c.validation_tokens_sent = 17,
            "endpoint.validation_tokens_sent",
        );
        fine(|c| c.validation_token_log_bytes_max = 64 << 10);
        edge(
            |c| c.validation_token_log_bytes_max = (64 << 10) - 1,
            "endpoint.validation_token_log_bytes_max",
        );
        edge(
            |c| c.validation_token_log_bytes_max = (256 << 20) + 1,
            "endpoint.validation_token_log_bytes_max",
        );
        fine(|c| c.validation_token_lifetime_s = 30 * 86_400);
        edge(
            |c| c.validation_token_lifetime_s = 59,
            "endpoint.validation_token_lifetime_s",
        );
        edge(
            |c| c.connections_per_source_max = 0,
            "endpoint.connections_per_source_max",
        );
        fine(|c| c.connections_per_source_max = 1);
        edge(
            |c| c.connections_per_source_max = CONNECTIONS_LIMIT + 1,
            "endpoint.connections_per_source_max",
        );
        edge(
            |c| c.handshakes_per_source_per_s = 0,
            "endpoint.handshakes_per_source_per_s",
        );
        edge(
            |c| c.handshakes_per_source_burst = 0,
            "endpoint.handshakes_per_source_burst",
        );
        fine(|c| c.handshakes_per_source_burst = 1);
        edge(
            |c| c.login_failures_before_backoff = 0,
            "endpoint.login_failures_before_backoff",
        );
        fine(|c| c.login_failures_before_backoff = 1);
        edge(
            |c| c.login_backoff_initial_ms = 0,
            "endpoint.login_backoff_initial_ms",
        );
        edge(
            |c| c.login_backoff_max_ms = c.login_backoff_initial_ms - 1,
            "endpoint.login_backoff_max_ms",
        );
        fine(|c| c.login_backoff_max_ms = c.login_backoff_initial_ms);
        edge(
            |c| c.login_failures_forget_ms = c.login_backoff_max_ms - 1,
            "endpoint.login_failures_forget_ms",
        );
        fine(|c| c.login_failures_forget_ms = c.login_backoff_max_ms);
        edge(
            |c| c.sources_tracked_max = c.connections_max - 1,
            "endpoint.sources_tracked_max",
        );
        fine(|c| c.sources_tracked_max = c.connections_max);
        fine(|c| c.login_failure_log_interval_ms = 0);
        edge(
            |c| c.login_failure_log_interval_ms = TIMEOUT_MS_LIMIT + 1,
            "endpoint.login_failure_log_interval_ms",
        );
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
        assert_eq!(
            (
                c.handshakes_max,
                c.retry_above_handshakes,
                c.connections_per_source_max,
                c.handshakes_per_source_per_s,
                c.handshakes_per_source_burst,
                c.sources_tracked_max
            ),
            (1_000, 100, 1_000, 100, 500, 100_000)
        );
        assert_eq!(
            (
                c.login_failures_before_backoff,
                c.login_backoff_initial_ms,
                c.login_backoff_max_ms,
                c.login_failures_forget_ms,
                c.login_failure_log_interval_ms
            ),
            (8, 1_000, 300_000, 3_600_000, 1_000)
        );
    }
}
