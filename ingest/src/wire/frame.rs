//! Frames and the control messages (HELLO, WELCOME, ACK, CLOSE).
//!
//! Contract: `frame = type:u8 | len:u32 (big-endian) | body[len]`. Parsing a header never
//! looks at the body, so a receiver can refuse an oversized frame before reading it
//! ([`FrameHeader::check_len`]). Decoding never panics on arbitrary bytes. No IO, no clock.

use super::{Limits, Status};
use prost::Message;

/// Length of a frame header: one type byte and a big-endian u32 body length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Largest body accepted for every frame type except BATCH (HELLO carries a token and an
/// agent string; the others are a few varints). A peer sending more is not speaking v1.
pub const CONTROL_FRAME_BODY_BYTES_MAX: u32 = 16 * 1024;

/// The frame types of protocol v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0x01, client to server, first frame: protobuf [`Hello`].
    Hello,
    /// 0x02, server to client, answer to HELLO: protobuf [`Welcome`].
    Welcome,
    /// 0x03, client to server: `batch_seq:u64 | encoding:u8 | payload`.
    Batch,
    /// 0x04, server to client: protobuf [`Ack`].
    Ack,
    /// 0x05, client to server, empty body: the device is alive.
    Heartbeat,
    /// 0x06, either way: protobuf [`Close`], then the sender closes the connection.
    Close,
    /// 0x07, server to client: protobuf [`super::ConfirmRequest`], please confirm your
    /// location.
    ConfirmRequest,
    /// 0x08, client to server: protobuf [`super::Confirm`], the answer to a request.
    Confirm,
    /// 0x09, server to client: protobuf [`super::ConfirmAck`], the outcome of a CONFIRM.
    ConfirmAck,
}

impl FrameType {
    /// The type byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            FrameType::Hello => 0x01,
            FrameType::Welcome => 0x02,
            FrameType::Batch => 0x03,
            FrameType::Ack => 0x04,
            FrameType::Heartbeat => 0x05,
            FrameType::Close => 0x06,
            FrameType::ConfirmRequest => 0x07,
            FrameType::Confirm => 0x08,
            FrameType::ConfirmAck => 0x09,
        }
    }

    /// The frame type for a type byte, `None` when v1 does not define it.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => FrameType::Hello,
            0x02 => FrameType::Welcome,
            0x03 => FrameType::Batch,
            0x04 => FrameType::Ack,
            0x05 => FrameType::Heartbeat,
            0x06 => FrameType::Close,
            0x07 => FrameType::ConfirmRequest,
            0x08 => FrameType::Confirm,
            0x09 => FrameType::ConfirmAck,
            _ => return None,
        })
    }

    /// The SCREAMING_NAME used in the protocol document.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameType::Hello => "HELLO",
            FrameType::Welcome => "WELCOME",
            FrameType::Batch => "BATCH",
            FrameType::Ack => "ACK",
            FrameType::Heartbeat => "HEARTBEAT",
            FrameType::Close => "CLOSE",
            FrameType::ConfirmRequest => "CONFIRM_REQUEST",
            FrameType::Confirm => "CONFIRM",
            FrameType::ConfirmAck => "CONFIRM_ACK",
        }
    }
}

impl std::fmt::Display for FrameType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame's type.
    pub frame_type: FrameType,
    /// The body length in bytes (the header is not included).
    pub len: u32,
}

impl FrameHeader {
    /// Checks the body length against the limit for this frame type
    /// ([`frame_body_len_max`]). Call it before reading the body.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] when the body is over the limit; a BATCH over the limit maps
    /// to [`Status::BatchTooLarge`], any other type to [`Status::MalformedFrame`].
    pub fn check_len(&self, limits: &Limits) -> Result<(), FrameError> {
        let len_max = frame_body_len_max(self.frame_type, limits);
        if self.len > len_max {
            return Err(FrameError::TooLong {
                frame_type: self.frame_type,
                len: self.len,
                len_max,
            });
        }
        Ok(())
    }
}

/// The largest body a receiver accepts for a frame type: `limits.batch_bytes_max` for
/// BATCH, 0 for HEARTBEAT, [`CONTROL_FRAME_BODY_BYTES_MAX`] for the others.
pub fn frame_body_len_max(frame_type: FrameType, limits: &Limits) -> u32 {
    match frame_type {
        FrameType::Batch => limits.batch_bytes_max,
        FrameType::Heartbeat => 0,
        _ => CONTROL_FRAME_BODY_BYTES_MAX,
    }
}

/// Why a frame or a control message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The type byte is not defined by protocol v1.
    #[error("unknown frame type 0x{type_byte:02x}")]
    UnknownType {
        /// The offending byte.
        type_byte: u8,
    },
    /// The body is longer than the receiver accepts for this type; the body was not read.
    #[error("{frame_type} body of {len} bytes exceeds the limit of {len_max} bytes")]
    TooLong {
        /// The frame's type.
        frame_type: FrameType,
        /// The announced body length.
        len: u32,
        /// The limit for that type.
        len_max: u32,
    },
    /// The body is not a valid protobuf message of the expected type.
    #[error("{frame_type} body is not a valid protobuf message: {source}")]
    Protobuf {
        /// The frame's type.
        frame_type: FrameType,
        /// prost's description of the problem.
        #[source]
        source: prost::DecodeError,
    },
}

impl FrameError {
    /// The status to report to the peer for this error.
    pub fn status(&self) -> Status {
        match self {
            FrameError::TooLong {
                frame_type: FrameType::Batch,
                ..
            } => Status::BatchTooLarge,
            _ => Status::MalformedFrame,
        }
    }
}

/// Parses a frame header. Only the type byte can be invalid; check the length with
/// [`FrameHeader::check_len`].
///
/// # Errors
/// [`FrameError::UnknownType`] for a type byte v1 does not define.
pub fn parse_frame_header(b: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, FrameError> {
    let frame_type =
        FrameType::from_byte(b[0]).ok_or(FrameError::UnknownType { type_byte: b[0] })?;
    let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
    Ok(FrameHeader { frame_type, len })
}

/// Appends a frame (header and body) to `out`.
///
/// # Panics
/// If `body` is 4 GiB or longer, which no caller can produce within the limits.
pub fn encode_frame(frame_type: FrameType, body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).expect("frame bodies are bounded far below 4 GiB");
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.push(frame_type.to_byte());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends a frame whose body is a protobuf message, encoded in place (no temporary).
pub(super) fn encode_message_frame<M: Message>(frame_type: FrameType, msg: &M, out: &mut Vec<u8>) {
    let len = msg.encoded_len();
    let len32 = u32::try_from(len).expect("control messages are bounded far below 4 GiB");
    out.reserve(FRAME_HEADER_LEN + len);
    out.push(frame_type.to_byte());
    out.extend_from_slice(&len32.to_be_bytes());
    msg.encode_raw(out);
}

pub(super) fn decode_message<M: Message + Default>(
    frame_type: FrameType,
    body: &[u8],
) -> Result<M, FrameError> {
    M::decode(body).map_err(|source| FrameError::Protobuf { frame_type, source })
}

/// HELLO body: the first frame a client sends.
#[derive(Clone, PartialEq, Message)]
pub struct Hello {
    /// Must equal [`super::PROTOCOL_VERSION`].
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    /// The device token (opaque to the codec).
    #[prost(string, tag = "2")]
    pub token: String,
    /// Free-form client description, for logs (`"myapp/2.3 android/14"`).
    #[prost(string, tag = "3")]
    pub client_agent: String,
}

/// WELCOME body: the server accepted HELLO; these are the limits it enforces.
#[derive(Clone, PartialEq, Message)]
pub struct Welcome {
    /// The authenticated device's id.
    #[prost(uint64, tag = "1")]
    pub device_id: u64,
    /// Largest BATCH frame body (`len` field) the server reads.
    #[prost(uint32, tag = "2")]
    pub batch_bytes_max: u32,
    /// Most fixes per batch.
    #[prost(uint32, tag = "3")]
    pub batch_fixes_max: u32,
    /// Most batches a client may have sent and not yet seen acked.
    #[prost(uint32, tag = "4")]
    pub inflight_batches_max: u32,
    /// Largest decompressed batch payload.
    #[prost(uint32, tag = "5")]
    pub decompressed_bytes_max: u32,
    /// The server's clock, Unix ms, when it sent WELCOME.
    #[prost(int64, tag = "6")]
    pub server_time_ms: i64,
    /// How many recent seqs per device the server remembers for deduplication.
    #[prost(uint32, tag = "7")]
    pub dedup_window_batches: u32,
}

/// ACK body: the outcome of one batch.
#[derive(Clone, PartialEq, Message)]
pub struct Ack {
    /// The seq of the batch this acks.
    #[prost(uint64, tag = "1")]
    pub batch_seq: u64,
    /// A [`Status`] code.
    #[prost(uint32, tag = "2")]
    pub status: u32,
    /// Human-readable precision for rejections (which fix, which value, which limit).
    #[prost(string, tag = "3")]
    pub reason: String,
    /// For transient statuses: wait at least this long before resending.
    #[prost(uint32, tag = "4")]
    pub retry_after_ms: u32,
}

impl Ack {
    /// An ack with the given status and reason and no retry delay.
    pub fn new(batch_seq: u64, status: Status, reason: impl Into<String>) -> Self {
        Ack {
            batch_seq,
            status: status.code(),
            reason: reason.into(),
            retry_after_ms: 0,
        }
    }

    /// The status if protocol v1 defines its code.
    pub fn known_status(&self) -> Option<Status> {
        Status::from_code(self.status)
    }
}

/// CLOSE body: why the sender is about to close the connection.
#[derive(Clone, PartialEq, Message)]
pub struct Close {
    /// A [`Status`] code (also used as the QUIC application error code).
    #[prost(uint32, tag = "1")]
    pub status: u32,
    /// Human-readable reason.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// For transient statuses: wait at least this long before reconnecting.
    #[prost(uint32, tag = "3")]
    pub retry_after_ms: u32,
}

/// Appends a HELLO frame to `out`.
pub fn encode_hello(hello: &Hello, out: &mut Vec<u8>) {
    encode_message_frame(FrameType::Hello, hello, out);
}

/// Appends a WELCOME frame to `out`.
pub fn encode_welcome(welcome: &Welcome, out: &mut Vec<u8>) {
    encode_message_frame(FrameType::Welcome, welcome, out);
}

/// Appends an ACK frame to `out`.
pub fn encode_ack(ack: &Ack, out: &mut Vec<u8>) {
    encode_message_frame(FrameType::Ack, ack, out);
}

/// Appends a CLOSE frame to `out`.
pub fn encode_close(close: &Close, out: &mut Vec<u8>) {
    encode_message_frame(FrameType::Close, close, out);
}

/// Appends a HEARTBEAT frame (empty body) to `out`.
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    encode_frame(FrameType::Heartbeat, &[], out);
}

/// Decodes a HELLO body.
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `Hello`.
pub fn decode_hello(body: &[u8]) -> Result<Hello, FrameError> {
    decode_message(FrameType::Hello, body)
}

/// Decodes a WELCOME body.
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `Welcome`.
pub fn decode_welcome(body: &[u8]) -> Result<Welcome, FrameError> {
    decode_message(FrameType::Welcome, body)
}

/// Decodes an ACK body.
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `Ack`.
pub fn decode_ack(body: &[u8]) -> Result<Ack, FrameError> {
    decode_message(FrameType::Ack, body)
}

/// Decodes a CLOSE body.
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `Close`.
pub fn decode_close(body: &[u8]) -> Result<Close, FrameError> {
    decode_message(FrameType::Close, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(out: &[u8]) -> FrameHeader {
        let h: [u8; 5] = out[..5].try_into().expect("5 bytes");
        parse_frame_header(&h).expect("valid header")
    }

    #[test]
    fn every_type_byte_round_trips_and_others_are_unknown() {
        for b in 0..=u8::MAX {
            match FrameType::from_byte(b) {
                Some(t) => assert_eq!(t.to_byte(), b),
                None => {
                    assert!(b == 0 || b > 9, "byte {b}");
                    let err = parse_frame_header(&[b, 0, 0, 0, 0]).expect_err("unknown type");
                    assert!(matches!(err, FrameError::UnknownType { type_byte } if type_byte == b));
                    assert_eq!(err.status(), Status::MalformedFrame);
                }
            }
        }
    }

    #[test]
    fn header_is_big_endian() {
        let h = parse_frame_header(&[0x03, 0x01, 0x02, 0x03, 0x04]).expect("valid");
        assert_eq!(
            h,
            FrameHeader {
                frame_type: FrameType::Batch,
                len: 0x0102_0304
            }
        );
        let mut out = vec![];
        encode_frame(FrameType::Ack, &[9, 8, 7], &mut out);
        assert_eq!(out, [0x04, 0, 0, 0, 3, 9, 8, 7]);
    }

    #[test]
    fn length_limits_at_the_edge() {
        let limits = Limits {
            batch_bytes_max: 1000,
            ..Limits::default()
        };
        let at = FrameHeader {
            frame_type: FrameType::Batch,
            len: 1000,
        };
        assert!(at.check_len(&limits).is_ok());
        let over = FrameHeader {
            frame_type: FrameType::Batch,
            len: 1001,
        };
        let err = over.check_len(&limits).expect_err("over");
        assert_eq!(err.status(), Status::BatchTooLarge);
        assert_eq!(
            err.to_string(),
            "BATCH body of 1001 bytes exceeds the limit of 1000 bytes"
        );

        let hello_at = FrameHeader {
            frame_type: FrameType::Hello,
            len: CONTROL_FRAME_BODY_BYTES_MAX,
        };
        assert!(hello_at.check_len(&limits).is_ok());
        let hello_over = FrameHeader {
            frame_type: FrameType::Hello,
            len: CONTROL_FRAME_BODY_BYTES_MAX + 1,
        };
        assert_eq!(
            hello_over.check_len(&limits).expect_err("over").status(),
            Status::MalformedFrame
        );

        assert!(
            FrameHeader {
                frame_type: FrameType::Heartbeat,
                len: 0
            }
            .check_len(&limits)
            .is_ok()
        );
        assert!(
            FrameHeader {
                frame_type: FrameType::Heartbeat,
                len: 1
            }
            .check_len(&limits)
            .is_err()
        );
    }

    #[test]
    fn control_messages_round_trip() {
        let hello = Hello {
            protocol_version: 1,
            token: "tok".into(),
            client_agent: "t/1".into(),
        };
        let welcome = Welcome {
            device_id: u64::MAX,
            batch_bytes_max: 262_144,
            batch_fixes_max: 10_000,
            inflight_batches_max: 16,
            decompressed_bytes_max: 4 << 20,
            server_time_ms: -5,
            dedup_window_batches: 64,
        };
        let ack = Ack {
            batch_seq: 42,
            status: Status::Overloaded.code(),
            reason: "busy".into(),
            retry_after_ms: 250,
        };
        let close = Close {
            status: Status::Unauthenticated.code(),
            reason: "bad token".into(),
            retry_after_ms: 0,
        };

        let mut out = vec![];
        encode_hello(&hello, &mut out);
        assert_eq!(
            header(&out),
            FrameHeader {
                frame_type: FrameType::Hello,
                len: (out.len() - 5) as u32
            }
        );
        assert_eq!(decode_hello(&out[5..]).expect("hello"), hello);

        out.clear();
        encode_welcome(&welcome, &mut out);
        assert_eq!(header(&out).frame_type, FrameType::Welcome);
        assert_eq!(decode_welcome(&out[5..]).expect("welcome"), welcome);

        out.clear();
        encode_ack(&ack, &mut out);
        assert_eq!(header(&out).frame_type, FrameType::Ack);
        let back = decode_ack(&out[5..]).expect("ack");
        assert_eq!(back, ack);
        assert_eq!(back.known_status(), Some(Status::Overloaded));

        out.clear();
        encode_close(&close, &mut out);
        assert_eq!(header(&out).frame_type, FrameType::Close);
        assert_eq!(decode_close(&out[5..]).expect("close"), close);

        out.clear();
        encode_heartbeat(&mut out);
        assert_eq!(out, [0x05, 0, 0, 0, 0]);
    }

    #[test]
    fn garbage_message_body_is_a_protobuf_error() {
        // Field 1 as a length-delimited field claiming 100 bytes with 1 present.
        let err = decode_ack(&[0x0a, 100, 1]).expect_err("truncated");
        assert!(matches!(
            err,
            FrameError::Protobuf {
                frame_type: FrameType::Ack,
                ..
            }
        ));
        assert_eq!(err.status(), Status::MalformedFrame);
    }
}
