//! The pure wire codec of protocol v1 (see `docs/PROTOCOL.md`): frames, control messages,
//! BATCH payloads, the confirm-location messages and status codes.
//!
//! Contract:
//! * No IO, no clock, no tokio, no quinn: the server, the client library, the load
//!   generator and the fuzz targets all use these functions on byte slices. Time enters as
//!   `now_ms` arguments.
//! * Decoding never panics on arbitrary bytes and never allocates beyond the configured
//!   [`Limits`] (frame bodies are length-checked from the header before they are read; zstd
//!   output is capped at `decompressed_bytes_max`).
//! * Every rejection carries a stable [`Status`] code and a reason naming the offending fix,
//!   value and limit.
//!
//! ```text
//! frame = type:u8 | len:u32 (big-endian) | body[len]
//! BATCH body = batch_seq:u64 (big-endian) | encoding:u8 (0 raw, 1 zstd) | payload
//! ```

mod batch;
mod columns;
mod confirm;
mod frame;
mod status;

pub use batch::{
    BATCH_BYTES_LIMIT, BATCH_PREFIX_LEN, Batch, BatchDecoder, BatchEncoder, BatchError,
    Compression, DECOMPRESSED_BYTES_LIMIT, EncodeError, Encoding, FUTURE_SKEW_MS_LIMIT, Limits,
    PAST_AGE_MS_LIMIT, decode_batch, encode_batch_frame, encode_batch_frame_raw, seq_max, validate,
};
pub use confirm::{
    CONFIRM_REASON_BYTES_MAX, CONFIRM_SIGNATURE_LEN, Confirm, ConfirmAck, ConfirmError, ConfirmKey,
    ConfirmKind, ConfirmRequest, check_confirm, decode_confirm, decode_confirm_ack,
    decode_confirm_request, encode_confirm, encode_confirm_ack, encode_confirm_request,
};
/// The fix schema the codec decodes into (defined once, in the `fix` crate).
pub use fix::{
    ABSENT_I32, ABSENT_U32, Fix, FixError, Fixes, HEADING_CDEG_END, LAT_E7_MAX, LON_E7_MAX,
};
pub use frame::{
    Ack, CONTROL_FRAME_BODY_BYTES_MAX, Close, FRAME_HEADER_LEN, FrameError, FrameHeader, FrameType,
    Hello, Welcome, decode_ack, decode_close, decode_hello, decode_welcome, encode_ack,
    encode_close, encode_frame, encode_heartbeat, encode_hello, encode_welcome, frame_body_len_max,
    parse_frame_header,
};
pub use status::{Status, StatusClass};

/// The QUIC ALPN protocol id of v1.
pub const ALPN: &[u8] = b"hexflow/1";
/// The protocol version a v1 client sends in HELLO.
pub const PROTOCOL_VERSION: u32 = 1;

#[cfg(test)]
mod tests;
