//! Status codes carried by ACK, CONFIRM_ACK and CLOSE frames.
//!
//! Contract: every code is stable once published (it is part of the wire protocol, see
//! `docs/PROTOCOL.md`); a code's class is decided by its numeric range alone, so a client
//! can act on codes it does not know yet. This module never allocates or does IO.

use std::fmt;

/// A status code sent by the server in an ACK or by either side in a CLOSE.
///
/// Classes by range: 0–99 success, 100–199 permanent rejection of that batch (never resend
/// it), 200–299 connection-level, 300–399 and 500–599 transient (resend the same batch with
/// the same seq after `retry_after_ms` plus jitter).
#[repr(u32)]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The batch is durable.
    Ok = 0,
    /// The batch was already stored earlier (same device, same seq): success, do not resend.
    Duplicate = 1,
    /// The frame could not be parsed (bad protobuf, short body, unknown frame type, ...).
    MalformedFrame = 100,
    /// The BATCH encoding byte is neither 0 (raw) nor 1 (zstd).
    UnsupportedEncoding = 101,
    /// The zstd payload could not be decompressed.
    DecompressFailed = 102,
    /// The BATCH frame body is longer than `batch_bytes_max`.
    BatchTooLarge = 103,
    /// The payload decompresses to more than `decompressed_bytes_max` bytes.
    DecompressedTooLarge = 104,
    /// The batch holds more than `batch_fixes_max` fixes.
    TooManyFixes = 105,
    /// The batch holds no fix.
    EmptyBatch = 106,
    /// A column's length differs from the number of fixes.
    ColumnLengthMismatch = 107,
    /// A latitude or longitude is out of range; the reason names the fix index and value.
    InvalidCoordinates = 108,
    /// A fix's time is later than the server's clock plus the allowed skew.
    TimeInFuture = 109,
    /// A fix's time is older than the server accepts.
    TimeTooOld = 110,
    /// An optional field holds an invalid value (heading out of range, ...), or a CONFIRM
    /// field is invalid (unknown kind, FIX without a batch, HERE with one, request id 0).
    InvalidField = 111,
    /// The seq is below the server's dedup window for this device.
    StaleSequence = 112,
    /// The seq is 0, which is reserved, or above the server clock in microseconds plus
    /// `future_skew_ms` (one such seq would make every later batch of the device stale).
    InvalidSequence = 113,
    /// A CONFIRM names no request outstanding for this device (never sent, already
    /// answered, or cancelled). Do not resend it.
    UnsolicitedConfirm = 114,
    /// A CONFIRM's signature does not verify under the device's key (or is not 32 bytes).
    InvalidSignature = 115,
    /// A CONFIRM of kind FIX names a batch that was not acked OK/DUPLICATE among the last
    /// 64 batches on this connection: send (or resend) the batch first, then CONFIRM.
    FixNotFound = 116,
    /// The token in HELLO was rejected.
    Unauthenticated = 200,
    /// The protocol version in HELLO is not supported.
    UnsupportedVersion = 201,
    /// A frame arrived out of order (BATCH before HELLO, HELLO twice, ...).
    ProtocolViolation = 202,
    /// Another connection authenticated as the same device and took over its session (one
    /// session per device): do not reconnect automatically, a second holder of the
    /// credential is active.
    SessionReplaced = 203,
    /// The server is overloaded: resend after `retry_after_ms`.
    Overloaded = 300,
    /// The server is shutting down: reconnect and resend after `retry_after_ms`.
    ShuttingDown = 301,
    /// Storage cannot accept the batch right now: resend after `retry_after_ms`.
    StorageUnavailable = 302,
    /// An unexpected server-side failure: resend after a backoff.
    Internal = 500,
}

/// What a client should do with a status code, decided by its numeric range only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 0–99: the batch is stored.
    Success,
    /// 100–199: the batch is rejected for good; resending it cannot succeed.
    Rejected,
    /// 200–299: the connection (not the batch) is at fault.
    Connection,
    /// 300–399 and 500–599: resend the same batch with the same seq later.
    Transient,
    /// Any other range: not defined by protocol v1; treat like [`StatusClass::Connection`].
    Unknown,
}

impl StatusClass {
    /// The class of any status code, known or not.
    pub fn of_code(code: u32) -> Self {
        match code {
            0..=99 => Self::Success,
            100..=199 => Self::Rejected,
            200..=299 => Self::Connection,
            300..=399 | 500..=599 => Self::Transient,
            _ => Self::Unknown,
        }
    }
}

impl Status {
    /// Every status defined by protocol v1, in code order.
    pub const ALL: [Status; 27] = [
        Status::Ok,
        Status::Duplicate,
        Status::MalformedFrame,
        Status::UnsupportedEncoding,
        Status::DecompressFailed,
        Status::BatchTooLarge,
        Status::DecompressedTooLarge,
        Status::TooManyFixes,
        Status::EmptyBatch,
        Status::ColumnLengthMismatch,
        Status::InvalidCoordinates,
        Status::TimeInFuture,
        Status::TimeTooOld,
        Status::InvalidField,
        Status::StaleSequence,
        Status::InvalidSequence,
        Status::UnsolicitedConfirm,
        Status::InvalidSignature,
        Status::FixNotFound,
        Status::Unauthenticated,
        Status::UnsupportedVersion,
        Status::ProtocolViolation,
        Status::SessionReplaced,
        Status::Overloaded,
        Status::ShuttingDown,
        Status::StorageUnavailable,
        Status::Internal,
    ];

    /// The status a device gets for a batch whose fixes break `e`.
    pub fn of_fix_error(e: &fix::FixError) -> Self {
        use fix::FixError as E;
        match e {
            E::Empty => Status::EmptyBatch,
            E::TooManyFixes { .. } => Status::TooManyFixes,
            E::ColumnLength { .. } => Status::ColumnLengthMismatch,
            E::Latitude { .. } | E::Longitude { .. } => Status::InvalidCoordinates,
            E::TimeInFuture { .. } => Status::TimeInFuture,
            E::TimeTooOld { .. } => Status::TimeTooOld,
            // Heading, and anything a later schema adds: a field the device got wrong.
            _ => Status::InvalidField,
        }
    }

    /// The numeric code sent on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The status for a wire code, or `None` for a code protocol v1 does not define.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// The class of this status.
    pub fn class(self) -> StatusClass {
        StatusClass::of_code(self.code())
    }

    /// True for OK and DUPLICATE: the batch is stored.
    pub fn is_success(self) -> bool {
        self.class() == StatusClass::Success
    }

    /// True when the same batch (same seq) should be resent later.
    pub fn is_retryable(self) -> bool {
        self.class() == StatusClass::Transient
    }

    /// The SCREAMING_NAME used in docs, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Duplicate => "DUPLICATE",
            Status::MalformedFrame => "MALFORMED_FRAME",
            Status::UnsupportedEncoding => "UNSUPPORTED_ENCODING",
            Status::DecompressFailed => "DECOMPRESS_FAILED",
            Status::BatchTooLarge => "BATCH_TOO_LARGE",
            Status::DecompressedTooLarge => "DECOMPRESSED_TOO_LARGE",
            Status::TooManyFixes => "TOO_MANY_FIXES",
            Status::EmptyBatch => "EMPTY_BATCH",
            Status::ColumnLengthMismatch => "COLUMN_LENGTH_MISMATCH",
            Status::InvalidCoordinates => "INVALID_COORDINATES",
            Status::TimeInFuture => "TIME_IN_FUTURE",
            Status::TimeTooOld => "TIME_TOO_OLD",
            Status::InvalidField => "INVALID_FIELD",
            Status::StaleSequence => "STALE_SEQUENCE",
            Status::InvalidSequence => "INVALID_SEQUENCE",
            Status::UnsolicitedConfirm => "UNSOLICITED_CONFIRM",
            Status::InvalidSignature => "INVALID_SIGNATURE",
            Status::FixNotFound => "FIX_NOT_FOUND",
            Status::Unauthenticated => "UNAUTHENTICATED",
            Status::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Status::ProtocolViolation => "PROTOCOL_VIOLATION",
            Status::SessionReplaced => "SESSION_REPLACED",
            Status::Overloaded => "OVERLOADED",
            Status::ShuttingDown => "SHUTTING_DOWN",
            Status::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Status::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        let mut codes: Vec<u32> = Status::ALL.iter().map(|s| s.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Status::ALL.len());
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]),
            "ALL is in code order"
        );
        assert_eq!(Status::from_code(2), None);
        assert_eq!(Status::from_code(u32::MAX), None);
    }

    #[test]
    fn published_codes_are_stable() {
        let expected = [
            (0, "OK"),
            (1, "DUPLICATE"),
            (100, "MALFORMED_FRAME"),
            (101, "UNSUPPORTED_ENCODING"),
            (102, "DECOMPRESS_FAILED"),
            (103, "BATCH_TOO_LARGE"),
            (104, "DECOMPRESSED_TOO_LARGE"),
            (105, "TOO_MANY_FIXES"),
            (106, "EMPTY_BATCH"),
            (107, "COLUMN_LENGTH_MISMATCH"),
            (108, "INVALID_COORDINATES"),
            (109, "TIME_IN_FUTURE"),
            (110, "TIME_TOO_OLD"),
            (111, "INVALID_FIELD"),
            (112, "STALE_SEQUENCE"),
            (113, "INVALID_SEQUENCE"),
            (114, "UNSOLICITED_CONFIRM"),
            (115, "INVALID_SIGNATURE"),
            (116, "FIX_NOT_FOUND"),
            (200, "UNAUTHENTICATED"),
            (201, "UNSUPPORTED_VERSION"),
            (202, "PROTOCOL_VIOLATION"),
            (203, "SESSION_REPLACED"),
            (300, "OVERLOADED"),
            (301, "SHUTTING_DOWN"),
            (302, "STORAGE_UNAVAILABLE"),
            (500, "INTERNAL"),
        ];
        assert_eq!(expected.len(), Status::ALL.len());
        for (code, name) in expected {
            let s = Status::from_code(code).expect("listed code is defined");
            assert_eq!(s.as_str(), name);
        }
    }

    #[test]
    fn classes_follow_ranges() {
        assert!(Status::Ok.is_success() && Status::Duplicate.is_success());
        assert!(!Status::MalformedFrame.is_success());
        for s in [
            Status::Overloaded,
            Status::ShuttingDown,
            Status::StorageUnavailable,
            Status::Internal,
        ] {
            assert!(s.is_retryable(), "{s}");
        }
        for s in [
            Status::Ok,
            Status::InvalidSequence,
            Status::Unauthenticated,
            Status::ProtocolViolation,
        ] {
            assert!(!s.is_retryable(), "{s}");
        }
        assert_eq!(StatusClass::of_code(99), StatusClass::Success);
        assert_eq!(StatusClass::of_code(100), StatusClass::Rejected);
        assert_eq!(StatusClass::of_code(199), StatusClass::Rejected);
        assert_eq!(StatusClass::of_code(200), StatusClass::Connection);
        assert_eq!(StatusClass::of_code(299), StatusClass::Connection);
        assert_eq!(StatusClass::of_code(300), StatusClass::Transient);
        assert_eq!(StatusClass::of_code(399), StatusClass::Transient);
        assert_eq!(StatusClass::of_code(400), StatusClass::Unknown);
        assert_eq!(StatusClass::of_code(599), StatusClass::Transient);
        assert_eq!(StatusClass::of_code(600), StatusClass::Unknown);
        assert_eq!(Status::Internal.to_string(), "INTERNAL (500)");
    }
}
