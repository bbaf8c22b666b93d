//! [`ClientError`]: everything that can go wrong in the client, typed end to end and
//! `Clone`, so one session's end reaches every caller waiting on it unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proto::client::{BatchTooLarge, SessionError};
use crate::wire::EncodeError;

/// Everything that can go wrong in the client.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the client endpoint to {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// `ca_pem` holds no parsable certificate.
    #[error("ca_pem: {detail}")]
    InvalidCa {
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the configuration or a certificate.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The rustls configuration offers no TLS 1.3 cipher suite usable by QUIC.
    #[error("the TLS configuration has no QUIC-compatible initial cipher suite")]
    NoInitialCipherSuite,
    /// quinn refused to start the connection (bad server name, endpoint stopping, ...).
    #[error("cannot start connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC handshake plus HELLO/WELCOME took longer than `connect_timeout_ms`.
    #[error("connecting took longer than {timeout_ms} ms")]
    ConnectTimeout {
        /// The configured limit.
        timeout_ms: u64,
    },
    /// The connection failed or was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] quinn::ConnectionError),
    /// Reading from the stream failed.
    #[error("reading from the stream failed: {0}")]
    Read(#[source] quinn::ReadError),
    /// Writing to the stream failed.
    #[error("writing to the stream failed: {0}")]
    Write(#[source] quinn::WriteError),
    /// The server finished the stream.
    #[error("the server finished the stream")]
    StreamFinished,
    /// What the server answered or sent ended the session: a CLOSE or connection-level
    /// status ([`SessionError::ServerClosed`] for OK, [`SessionError::Rejected`] with the
    /// status and retry hint, [`SessionError::UnknownStatus`]), or a frame a v1 client must
    /// not receive ([`SessionError::UnexpectedFrame`], [`SessionError::BadFrame`]). The
    /// protocol core's own error, unchanged.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No ack arrived within `ack_timeout_ms`.
    #[error("no ack for batch {batch_seq} within {timeout_ms} ms")]
    AckTimeout {
        /// The batch.
        batch_seq: u64,
        /// The configured limit.
        timeout_ms: u64,
    },
    /// The batch could not be encoded.
    #[error("cannot encode the batch: {0}")]
    Encode(#[from] EncodeError),
    /// The encoded batch is larger than the server reads (its WELCOME limit); split it.
    #[error(transparent)]
    BatchTooLarge(#[from] BatchTooLarge),
    /// Another call is already waiting for an ack of this seq on this device.
    #[error("batch {batch_seq} is already in flight on this device")]
    SeqInFlight {
        /// The batch.
        batch_seq: u64,
    },
    /// [`super::Device::close`] was called.
    #[error("the device was closed")]
    Closed,
    /// Another call is already waiting for the answer to this confirm request.
    #[error("a CONFIRM for request {request_id} is already in flight on this device")]
    ConfirmInFlight {
        /// The request.
        request_id: u64,
    },
    /// No CONFIRM_ACK arrived within `ack_timeout_ms`.
    #[error("no CONFIRM_ACK for request {request_id} within {timeout_ms} ms")]
    ConfirmTimeout {
        /// The request.
        request_id: u64,
        /// The configured limit.
        timeout_ms: u64,
    },
    /// [`super::Device::confirm_here`] / [`super::Device::confirm_with_fix`] used every
    /// attempt.
    #[error("confirm of request {request_id} failed after {attempts} attempts; last error: {last}")]
    ConfirmRetriesExhausted {
        /// The request.
        request_id: u64,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<ClientError>,
    },
    /// [`super::Device::send`] used every attempt.
    #[error("batch {batch_seq} failed after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// The batch.
        batch_seq: u64,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// True when resending the same batch (after a delay, on a new connection if needed)
    /// may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::ConnectTimeout { .. }
            | ClientError::ConnectionLost(_)
            | ClientError::Read(_)
            | ClientError::Write(_)
            | ClientError::StreamFinished
            | ClientError::Session(SessionError::ServerClosed { .. })
            | ClientError::AckTimeout { .. }
            | ClientError::ConfirmTimeout { .. } => true,
            ClientError::Session(SessionError::Rejected { status, .. }) => status.is_retryable(),
            _ => false,
        }
    }

    /// The server's retry hint carried by this error (0 = none).
    pub fn retry_after_ms(&self) -> u32 {
        match self {
            ClientError::Session(SessionError::Rejected { retry_after_ms, .. }) => *retry_after_ms,
            _ => 0,
        }
    }

    pub(super) fn from_status(code: u32, reason: String, retry_after_ms: u32) -> Self {
        SessionError::from_status(code, reason, retry_after_ms).into()
    }

    pub(super) fn from_connection(e: quinn::ConnectionError) -> Self {
        // The QUIC application error code of a server close is the status (PROTOCOL.md).
        if let quinn::ConnectionError::ApplicationClosed(close) = &e {
            if let Ok(code) = u32::try_from(close.error_code.into_inner()) {
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                return ClientError::from_status(code, reason, 0);
            }
        }
        ClientError::ConnectionLost(e)
    }

    pub(super) fn from_read(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(c) => ClientError::from_connection(c),
            r => ClientError::Read(r),
        }
    }

    pub(super) fn from_write(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => ClientError::from_connection(c),
            w => ClientError::Write(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameError, Status};

    #[test]
    fn error_classification() {
        let transient = ClientError::from_status(Status::Overloaded.code(), "busy".into(), 200);
        assert!(transient.is_retryable());
        assert_eq!(transient.retry_after_ms(), 200);
        let unauth =
            ClientError::from_status(Status::Unauthenticated.code(), "bad token".into(), 0);
        assert!(matches!(
            &unauth,
            ClientError::Session(SessionError::Rejected {
                status: Status::Unauthenticated,
                ..
            })
        ));
        assert!(!unauth.is_retryable());
        assert!(matches!(
            ClientError::from_status(0, "idle".into(), 0),
            ClientError::Session(SessionError::ServerClosed { .. })
        ));
        assert!(matches!(
            ClientError::from_status(777, "?".into(), 0),
            ClientError::Session(SessionError::UnknownStatus { code: 777, .. })
        ));
        assert!(!ClientError::SeqInFlight { batch_seq: 1 }.is_retryable());
        assert!(
            ClientError::AckTimeout {
                batch_seq: 1,
                timeout_ms: 5
            }
            .is_retryable()
        );
    }

    #[test]
    fn clones_keep_the_type_of_every_error() {
        let frame = ClientError::from(SessionError::BadFrame(FrameError::UnknownType {
            type_byte: 0x0a,
        }));
        assert!(matches!(
            frame.clone(),
            ClientError::Session(SessionError::BadFrame(FrameError::UnknownType {
                type_byte: 0x0a
            }))
        ));
        assert_eq!(
            frame.to_string(),
            "server sent a bad frame: unknown frame type 0x0a",
            "the session's message, unchanged"
        );
        let timeout = ClientError::AckTimeout {
            batch_seq: 3,
            timeout_ms: 9,
        };
        assert!(matches!(
            timeout.clone(),
            ClientError::AckTimeout {
                batch_seq: 3,
                timeout_ms: 9
            }
        ));
        let bind = ClientError::Bind {
            addr: "127.0.0.1:1".parse().expect("addr"),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::AddrInUse)),
        };
        assert!(matches!(bind.clone(), ClientError::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse));
        let encode = ClientError::Encode(EncodeError::BodyTooLong { len: 5 });
        assert!(matches!(
            encode.clone(),
            ClientError::Encode(EncodeError::BodyTooLong { len: 5 })
        ));
    }
}
