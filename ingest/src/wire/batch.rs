//! BATCH frames: columnar fixes, delta + zigzag protobuf, optional zstd, validation.
//!
//! Contract:
//! * [`decode_batch`] never panics on any input, never decompresses more than
//!   `decompressed_bytes_max + 1` bytes (streaming decoder with a bounded window and an
//!   output buffer that grows only up to that cap), and returns the batch seq whenever the
//!   first 8 body bytes are present, so even a rejected batch can be acked.
//! * Work follows the limits, not the input: every column's element count comes from the
//!   payload's packed lengths (`columns.rs`, counted while zstd output is produced) and a
//!   column over `batch_fixes_max` is refused before any column is allocated or decoded;
//!   a `batch_seq` above [`seq_max`] is refused before the payload is looked at.
//! * [`validate`] is the one validator ([`fix::validate`]) with the server's time window:
//!   pure, `now_ms` is an argument; it reports the first offending fix with its index, the
//!   value and the limit.
//! * Encoding then decoding any [`Fixes`] that [`validate`] accepts returns equal columns.
//! * Nothing here does IO or reads a clock.

use super::columns::{self, PayloadError};
use super::{FRAME_HEADER_LEN, FrameType, Status};
use fix::{Checks, FixError, Fixes, TimeBounds};
use prost::Message;
use std::cell::RefCell;
use zstd::zstd_safe::{
    self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer, ResetDirective,
};

/// Length of the fixed BATCH body prefix: `batch_seq:u64 | encoding:u8`.
pub const BATCH_PREFIX_LEN: usize = 9;
/// The payload encoding byte of a BATCH frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// 0: the payload is the protobuf `Batch` itself.
    Raw,
    /// 1: the payload is one zstd frame containing the protobuf `Batch`.
    Zstd,
}

impl Encoding {
    /// The byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Encoding::Raw => 0,
            Encoding::Zstd => 1,
        }
    }
}

/// How [`BatchEncoder::encode`] compresses the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Encoding 0: no compression.
    None,
    /// Encoding 1: zstd at this level (0 means zstd's default, 3).
    Zstd {
        /// zstd compression level; negative levels are faster.
        level: i32,
    },
}

/// What a server accepts in a BATCH. The `[limits]` section of `config/hexflow.toml`
/// (with feature `server`, the struct is that section's serde form); bounds in
/// [`Limits::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "server",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct Limits {
    /// Largest BATCH frame body (the header's `len`: seq, encoding and payload). Default 256 KiB.
    pub batch_bytes_max: u32,
    /// Most fixes per batch. Default 10 000.
    pub batch_fixes_max: u32,
    /// Largest payload after decompression (and largest raw payload). Default 4 MiB. Also
    /// bounds the zstd window: `window_log_max = ceil(log2(decompressed_bytes_max))`.
    pub decompressed_bytes_max: u32,
    /// A fix may be at most this far ahead of the server clock. Default 5 minutes.
    pub future_skew_ms: i64,
    /// A fix may be at most this old. Default 30 days.
    pub past_age_max_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_bytes_max: 256 * 1024,
            batch_fixes_max: 10_000,
            decompressed_bytes_max: 4 * 1024 * 1024,
            future_skew_ms: 5 * 60 * 1000,
            past_age_max_ms: 30 * 24 * 60 * 60 * 1000,
        }
    }
}

/// Largest `batch_bytes_max`: 64 MiB.
pub const BATCH_BYTES_LIMIT: u32 = 64 << 20;
/// Largest `decompressed_bytes_max`: 256 MiB.
pub const DECOMPRESSED_BYTES_LIMIT: u32 = 256 << 20;
/// Largest `future_skew_ms`: one day.
pub const FUTURE_SKEW_MS_LIMIT: i64 = 86_400_000;
/// Largest `past_age_max_ms`: about ten years (3,653 days).
pub const PAST_AGE_MS_LIMIT: i64 = 3_653 * 86_400_000;

impl Limits {
    /// Checks every bound: `batch_bytes_max` `1..=`[`BATCH_BYTES_LIMIT`], `batch_fixes_max`
    /// `1..=`[`fix::BATCH_FIXES_LIMIT`], `decompressed_bytes_max`
    /// `batch_bytes_max..=`[`DECOMPRESSED_BYTES_LIMIT`], `future_skew_ms`
    /// `0..=`[`FUTURE_SKEW_MS_LIMIT`], `past_age_max_ms` `1..=`[`PAST_AGE_MS_LIMIT`].
    ///
    /// # Errors
    /// The first value out of bounds, named `limits.<key>`.
    pub fn validate(&self) -> Result<(), crate::bounds::OutOfRange> {
        use crate::bounds::check;
        check(
            "limits.batch_bytes_max",
            self.batch_bytes_max,
            1,
            BATCH_BYTES_LIMIT,
        )?;
        check(
            "limits.batch_fixes_max",
            self.batch_fixes_max,
            1,
            fix::BATCH_FIXES_LIMIT as u32,
        )?;
        check(
            "limits.decompressed_bytes_max",
            self.decompressed_bytes_max,
            self.batch_bytes_max,
            DECOMPRESSED_BYTES_LIMIT,
        )?;
        check(
            "limits.future_skew_ms",
            self.future_skew_ms,
            0,
            FUTURE_SKEW_MS_LIMIT,
        )?;
        check(
            "limits.past_age_max_ms",
            self.past_age_max_ms,
            1,
            PAST_AGE_MS_LIMIT,
        )
    }

    /// What [`fix::validate`] checks a batch read at server time `now_ms` against.
    pub fn checks(&self, now_ms: i64) -> Checks {
        Checks {
            fixes_max: self.batch_fixes_max as usize,
            time: TimeBounds::Window {
                now_ms,
                future_skew_ms: self.future_skew_ms,
                past_age_max_ms: self.past_age_max_ms,
            },
        }
    }

    /// The zstd `window_log_max` derived from `decompressed_bytes_max`: a window larger than
    /// the largest allowed output is never needed, so a frame asking for one is refused.
    pub fn zstd_window_log_max(&self) -> u32 {
        // zstd's absolute bounds for windowLog are 10 and 31 (64-bit).
        let cap = u64::from(self.decompressed_bytes_max.max(1));
        let log = u64::BITS - (cap - 1).leading_zeros();
        log.clamp(10, 31)
    }
}

/// The protobuf payload of a BATCH (see `docs/PROTOCOL.md`). Mandatory columns are
/// delta-encoded: element 0 absolute, element i the difference from element i-1 (`time_ms`
/// with checked i64 arithmetic, coordinates with wrapping i32 arithmetic).
#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    /// Times, Unix ms, delta-encoded.
    #[prost(sint64, repeated, tag = "1")]
    pub time_ms: Vec<i64>,
    /// Latitudes e7, delta-encoded with wrapping arithmetic.
    #[prost(sint32, repeated, tag = "2")]
    pub lat_e7: Vec<i32>,
    /// Longitudes e7, delta-encoded with wrapping arithmetic.
    #[prost(sint32, repeated, tag = "3")]
    pub lon_e7: Vec<i32>,
    /// Accuracy cm, absolute; empty or one per fix.
    #[prost(uint32, repeated, tag = "4")]
    pub accuracy_cm: Vec<u32>,
    /// Altitude cm, absolute; empty or one per fix.
    #[prost(sint32, repeated, tag = "5")]
    pub altitude_cm: Vec<i32>,
    /// Speed cm/s, absolute; empty or one per fix.
    #[prost(uint32, repeated, tag = "6")]
    pub speed_cmps: Vec<u32>,
    /// Heading centidegrees, absolute; empty or one per fix.
    #[prost(uint32, repeated, tag = "7")]
    pub heading_cdeg: Vec<u32>,
}

/// Why a batch could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A column's length breaks the [`Fixes`] invariant.
    #[error("column {column} has {len} entries for {fixes} fixes (must be {fixes}{})", if *optional { " or 0" } else { "" })]
    ColumnLengthMismatch {
        /// The column's name.
        column: &'static str,
        /// Its length.
        len: usize,
        /// The number of fixes.
        fixes: usize,
        /// Whether the column may also be empty.
        optional: bool,
    },
    /// The time difference between two consecutive fixes does not fit in an i64.
    #[error("time_ms delta between fix {} ({prev}) and fix {index} ({time_ms}) overflows i64", index - 1)]
    TimeDeltaOverflow {
        /// Index of the later fix.
        index: usize,
        /// Its time.
        time_ms: i64,
        /// The previous fix's time.
        prev: i64,
    },
    /// zstd failed to compress.
    #[error("zstd compression failed: {name}")]
    Compress {
        /// zstd's error name.
        name: &'static str,
    },
    /// The encoded body does not fit a frame's u32 length.
    #[error("encoded BATCH body of {len} bytes does not fit in a frame")]
    BodyTooLong {
        /// The body length.
        len: usize,
    },
}

/// Why a BATCH body was rejected: the status to ack with and a precise reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("batch {}: {status}: {reason}", batch_seq.map_or_else(|| "?".to_string(), |s| s.to_string()))]
pub struct BatchError {
    /// The seq, when the body was long enough to hold it.
    pub batch_seq: Option<u64>,
    /// The status to ack with.
    pub status: Status,
    /// Which fix, which value, which limit.
    pub reason: String,
}

impl BatchError {
    /// The ACK to send for this error, when the seq is known.
    pub fn to_ack(&self) -> Option<super::Ack> {
        self.batch_seq
            .map(|seq| super::Ack::new(seq, self.status, self.reason.clone()))
    }
}

/// Checks decoded fixes against `limits` at server time `now_ms` with the one validator,
/// [`fix::validate`]. Pure.
///
/// Rules, in order: no fix → EMPTY_BATCH; more than `batch_fixes_max` → TOO_MANY_FIXES;
/// a column length other than n (or 0 for optional columns) → COLUMN_LENGTH_MISMATCH; then
/// for each fix in order: latitude/longitude out of range → INVALID_COORDINATES; time after
/// `now_ms + future_skew_ms` → TIME_IN_FUTURE; time before `now_ms - past_age_max_ms` →
/// TIME_TOO_OLD; heading present and ≥ 36000 → INVALID_FIELD ([`Status::of_fix_error`]).
///
/// # Errors
/// The [`FixError`] naming the fix index, the value and the limit.
pub fn validate(fixes: &Fixes, limits: &Limits, now_ms: i64) -> Result<(), FixError> {
    fix::validate(fixes, &limits.checks(now_ms))
}

/// Encodes BATCH frames, reusing its protobuf scratch and zstd context between calls so
/// that steady-state encoding does not allocate (except to grow `out`).
pub struct BatchEncoder {
    batch: Batch,
    payload: Vec<u8>,
    cctx: CCtx<'static>,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("payload_capacity", &self.payload.capacity())
            .finish()
    }
}

impl Default for BatchEncoder {
    fn default() -> Self {
        Self::new()
    }
}

fn zstd_error_name(code: usize) -> &'static str {
    zstd_safe::get_error_name(code)
}

impl BatchEncoder {
    /// A new encoder with empty scratch buffers.
    pub fn new() -> Self {
        BatchEncoder {
            batch: Batch::default(),
            payload: Vec::new(),
            cctx: CCtx::create(),
        }
    }

    /// Appends one BATCH frame (header included) to `out`.
    ///
    /// # Errors
    /// [`EncodeError`] when the columns break the [`Fixes`] invariant, a time delta
    /// overflows i64, or zstd fails. `out` is left as it was on error.
    pub fn encode(
        &mut self,
        batch_seq: u64,
        fixes: &Fixes,
        compression: Compression,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.fill_batch(fixes)?;
        let start = out.len();
        let result = self.encode_filled(batch_seq, compression, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn fill_batch(&mut self, fixes: &Fixes) -> Result<(), EncodeError> {
        let n = fixes.len();
        if let Some((column, len)) = fixes.column_mismatch() {
            return Err(EncodeError::ColumnLengthMismatch {
                column: column.name(),
                len,
                fixes: n,
                optional: column.is_optional(),
            });
        }
        let b = &mut self.batch;
        b.time_ms.clear();
        b.lat_e7.clear();
        b.lon_e7.clear();
        let mut prev_t = 0i64;
        let mut prev_lat = 0i32;
        let mut prev_lon = 0i32;
        for i in 0..n {
            let t = fixes.time_ms[i];
            let dt = if i == 0 {
                t
            } else {
                t.checked_sub(prev_t)
                    .ok_or(EncodeError::TimeDeltaOverflow {
                        index: i,
                        time_ms: t,
                        prev: prev_t,
                    })?
            };
            b.time_ms.push(dt);
            b.lat_e7.push(fixes.lat_e7[i].wrapping_sub(prev_lat));
            b.lon_e7.push(fixes.lon_e7[i].wrapping_sub(prev_lon));
            prev_t = t;
            prev_lat = fixes.lat_e7[i];
            prev_lon = fixes.lon_e7[i];
        }
        b.accuracy_cm.clone_from(&fixes.accuracy_cm);
        b.altitude_cm.clone_from(&fixes.altitude_cm);
        b.speed_cmps.clone_from(&fixes.speed_cmps);
        b.heading_cdeg.clone_from(&fixes.heading_cdeg);
        Ok(())
    }

    fn encode_filled(
        &mut self,
        batch_seq: u64,
        compression: Compression,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.payload.clear();
        self.batch.encode_raw(&mut self.payload);
        let start = out.len();
        let header_end = start + FRAME_HEADER_LEN + BATCH_PREFIX_LEN;
        let encoding = match compression {
            Compression::None => Encoding::Raw,
            Compression::Zstd { .. } => Encoding::Zstd,
        };
        out.extend_from_slice(&[FrameType::Batch.to_byte(), 0, 0, 0, 0]);
        out.extend_from_slice(&batch_seq.to_be_bytes());
        out.push(encoding.to_byte());
        match compression {
            Compression::None => out.extend_from_slice(&self.payload),
            Compression::Zstd { level } => {
                let bound = zstd_safe::compress_bound(self.payload.len());
                out.resize(header_end + bound, 0);
                let map = |code| EncodeError::Compress {
                    name: zstd_error_name(code),
                };
                self.cctx.reset(ResetDirective::SessionOnly).map_err(map)?;
                self.cctx
                    .set_parameter(CParameter::CompressionLevel(level))
                    .map_err(map)?;
                let written = self
                    .cctx
                    .compress2(&mut out[header_end..], &self.payload)
                    .map_err(map)?;
                out.truncate(header_end + written);
            }
        }
        let body_len = out.len() - start - FRAME_HEADER_LEN;
        let len =
            u32::try_from(body_len).map_err(|_| EncodeError::BodyTooLong { len: body_len })?;
        out[start + 1..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// Decodes BATCH bodies, reusing its zstd context and decompression buffer between calls.
/// The buffer never grows past `decompressed_bytes_max + 1` bytes of the largest limit used.
pub struct BatchDecoder {
    dctx: DCtx<'static>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for BatchDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDecoder")
            .field("scratch_capacity", &self.scratch.capacity())
            .finish()
    }
}

impl Default for BatchDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// First size of the decompression buffer when the frame does not declare its content size.
const DECOMPRESS_INITIAL_BYTES: usize = 64 * 1024;

impl BatchDecoder {
    /// A new decoder with an empty buffer.
    pub fn new() -> Self {
        BatchDecoder {
            dctx: DCtx::create(),
            scratch: Vec::new(),
        }
    }

    /// Current capacity of the decompression buffer in bytes (for memory accounting; never
    /// more than `decompressed_bytes_max + 1` of the largest limit used).
    pub fn scratch_capacity(&self) -> usize {
        self.scratch.capacity()
    }

    /// Decodes and validates a BATCH body (the bytes after the 5-byte header); see
    /// [`decode_batch`].
    ///
    /// # Errors
    /// [`BatchError`] with the status to ack with.
    pub fn decode(
        &mut self,
        body: &[u8],
        limits: &Limits,
        now_ms: i64,
    ) -> Result<(u64, Fixes), BatchError> {
        let (seq, encoding) = check_prefix(body, limits, now_ms)?;
        let err = |status, reason| BatchError {
            batch_seq: Some(seq),
            status,
            reason,
        };
        let payload = &body[BATCH_PREFIX_LEN..];
        let cap = limits.decompressed_bytes_max as usize;
        let payload_err = |e: PayloadError| match e {
            PayloadError::TooManyElements { column, max } => err(
                Status::TooManyFixes,
                format!("column {column} holds more than batch_fixes_max {max} elements"),
            ),
            PayloadError::Malformed(reason) => err(
                Status::MalformedFrame,
                format!("payload is not a valid protobuf Batch: {reason}"),
            ),
        };
        let batch = match encoding {
            0 => {
                if payload.len() > cap {
                    return Err(err(
                        Status::DecompressedTooLarge,
                        format!(
                            "raw payload of {} bytes exceeds decompressed_bytes_max {cap}",
                            payload.len()
                        ),
                    ));
                }
                columns::count_and_decode(payload, limits.batch_fixes_max).map_err(payload_err)?
            }
            1 => {
                let counts = self.decompress(payload, limits).map_err(|e| match e {
                    Decompress::Zstd(status, reason) => err(status, reason),
                    Decompress::Payload(e) => payload_err(e),
                })?;
                columns::decode(&self.scratch, &counts).map_err(payload_err)?
            }
            other => {
                return Err(err(
                    Status::UnsupportedEncoding,
                    format!("encoding {other} is not 0 (raw) or 1 (zstd)"),
                ));
            }
        };
        let fixes =
            resolve_deltas(batch, limits).map_err(|(status, reason)| err(status, reason))?;
        validate(&fixes, limits, now_ms)
            .map_err(|e| err(Status::of_fix_error(&e), e.to_string()))?;
        Ok((seq, fixes))
    }

    /// Empties the scratch buffer (dropping it if an earlier batch grew it past `limit`),
    /// reserves the first chunk (never more than one chunk from the declared size: memory
    /// follows the output actually produced and checked) and resets the zstd context.
    fn prepare(
        &mut self,
        declared: Option<u64>,
        limit: usize,
        window_log_max: u32,
    ) -> Result<(), Decompress> {
        if self.scratch.capacity() > limit {
            self.scratch = Vec::new();
        }
        self.scratch.clear();
        let initial = declared
            .map_or(DECOMPRESS_INITIAL_BYTES, |s| s as usize + 1)
            .min(DECOMPRESS_INITIAL_BYTES)
            .min(limit);
        self.scratch.reserve_exact(initial);
        self.dctx
            .reset(ResetDirective::SessionOnly)
            .map_err(zstd_failed)?;
        self.dctx
            .set_parameter(DParameter::WindowLogMax(window_log_max))
            .map_err(zstd_failed)?;
        Ok(())
    }

    /// Decompresses one zstd frame into `self.scratch`, refusing output over the cap,
    /// and counts the payload's column elements as the output is produced: a column over
    /// `batch_fixes_max` stops the decompression at once. Returns the counts.
    fn decompress(&mut self, payload: &[u8], limits: &Limits) -> Result<[u64; 7], Decompress> {
        let cap = limits.decompressed_bytes_max as usize;
        let too_large = |what: String| {
            Decompress::Zstd(
                Status::DecompressedTooLarge,
                format!("{what} exceeds decompressed_bytes_max {cap}"),
            )
        };
        let declared = check_frame_header(payload, cap)?;
        // One extra byte of room lets us tell "exactly at the cap" from "over it".
        let limit = cap + 1;
        self.prepare(declared, limit, limits.zstd_window_log_max())?;
        let mut counter = columns::Counter::default();
        let mut input = InBuffer::around(payload);
        loop {
            if self.scratch.len() == self.scratch.capacity() {
                if self.scratch.len() >= limit {
                    return Err(too_large("decompressed payload".to_string()));
                }
                let grown = (self.scratch.capacity() * 2).clamp(DECOMPRESS_INITIAL_BYTES, limit);
                self.scratch.reserve_exact(grown - self.scratch.len());
            }
            let out_before = self.scratch.len();
            let in_before = input.pos();
            let pos = self.scratch.len();
            let hint = {
                let mut output = OutBuffer::around_pos(&mut self.scratch, pos);
                self.dctx
                    .decompress_stream(&mut output, &mut input)
                    .map_err(zstd_failed)?
            };
            if self.scratch.len() > cap {
                return Err(too_large("decompressed payload".to_string()));
            }
            counter
                .scan(&self.scratch, false, limits.batch_fixes_max)
                .map_err(Decompress::Payload)?;
            if hint == 0 {
                break;
            }
            let progressed = self.scratch.len() > out_before || input.pos() > in_before;
            let out_full = self.scratch.len() == self.scratch.capacity();
            if !progressed && !out_full {
                return Err(Decompress::Zstd(
                    Status::DecompressFailed,
                    "zstd: payload ends inside the frame (truncated)".to_string(),
                ));
            }
        }
        if input.pos() != payload.len() {
            return Err(Decompress::Zstd(
                Status::DecompressFailed,
                format!(
                    "zstd: {} trailing bytes after the frame",
                    payload.len() - input.pos()
                ),
            ));
        }
        counter
            .scan(&self.scratch, true, limits.batch_fixes_max)
            .map_err(Decompress::Payload)?;
        Ok(counter.counts())
    }
}

/// The checks on a BATCH body's 9-byte prefix (seq, encoding) and its size, before any
/// payload byte is looked at: returns the seq and the encoding byte.
fn check_prefix(body: &[u8], limits: &Limits, now_ms: i64) -> Result<(u64, u8), BatchError> {
    let seq_bytes: Option<[u8; 8]> = body.get(..8).and_then(|b| b.try_into().ok());
    let Some(seq_bytes) = seq_bytes else {
        return Err(BatchError {
            batch_seq: None,
            status: Status::MalformedFrame,
            reason: format!(
                "BATCH body of {} bytes is shorter than the 9-byte prefix",
                body.len()
            ),
        });
    };
    let seq = u64::from_be_bytes(seq_bytes);
    let err = |status, reason| BatchError {
        batch_seq: Some(seq),
        status,
        reason,
    };
    if body.len() as u64 > u64::from(limits.batch_bytes_max) {
        return Err(err(
            Status::BatchTooLarge,
            format!(
                "BATCH body of {} bytes exceeds batch_bytes_max {}",
                body.len(),
                limits.batch_bytes_max
            ),
        ));
    }
    let Some(&encoding) = body.get(8) else {
        return Err(err(
            Status::MalformedFrame,
            "BATCH body of 8 bytes lacks the encoding byte".to_string(),
        ));
    };
    if seq == 0 {
        return Err(err(
            Status::InvalidSequence,
            "batch_seq 0 is reserved; seqs start at 1".to_string(),
        ));
    }
    let seq_max = seq_max(limits, now_ms);
    if seq > seq_max {
        return Err(err(
            Status::InvalidSequence,
            format!(
                "batch_seq {seq} is above the server clock in microseconds plus future_skew_ms ({seq_max})"
            ),
        ));
    }
    Ok((seq, encoding))
}

/// A zstd payload's frame header, before anything is decompressed: one standard frame
/// (a skippable frame, alone or first, carries no Batch) whose declared content size, if
/// any, is within `cap`. Returns the declared size.
fn check_frame_header(payload: &[u8], cap: usize) -> Result<Option<u64>, Decompress> {
    if !payload.starts_with(&ZSTD_MAGIC) {
        return Err(Decompress::Zstd(
            Status::DecompressFailed,
            "zstd: payload does not start with a zstd frame (magic 28 b5 2f fd; skippable frames are not accepted)".to_string(),
        ));
    }
    // A declared content size lets us refuse a bomb before decompressing anything.
    let Ok(declared) = zstd_safe::get_frame_content_size(payload) else {
        return Err(Decompress::Zstd(
            Status::DecompressFailed,
            "zstd: payload does not start with a valid zstd frame header".to_string(),
        ));
    };
    if let Some(size) = declared {
        if size > cap as u64 {
            return Err(Decompress::Zstd(
                Status::DecompressedTooLarge,
                format!("declared content size {size} exceeds decompressed_bytes_max {cap}"),
            ));
        }
    }
    Ok(declared)
}

/// A zstd library error as DECOMPRESS_FAILED with zstd's name for it.
fn zstd_failed(code: usize) -> Decompress {
    Decompress::Zstd(
        Status::DecompressFailed,
        format!("zstd: {}", zstd_error_name(code)),
    )
}

/// Why [`BatchDecoder::decompress`] stopped.
enum Decompress {
    /// A zstd failure or the output cap: the status and reason.
    Zstd(Status, String),
    /// The output seen so far is not an acceptable `Batch`.
    Payload(PayloadError),
}

/// The magic number opening a standard zstd frame (RFC 8878), little-endian on the wire.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest `batch_seq` accepted at server time `now_ms`: the server clock in
/// microseconds plus `future_skew_ms` (a seq is a counter or a creation time in µs, so one
/// far above it can only poison the device's dedup window).
pub fn seq_max(limits: &Limits, now_ms: i64) -> u64 {
    let ms = now_ms.saturating_add(limits.future_skew_ms.max(0));
    u64::try_from(ms).unwrap_or(0).saturating_mul(1000)
}

/// Turns delta-encoded columns into absolute [`Fixes`]; refuses more fixes than the limit
/// before doing any work and a time delta that overflows i64.
fn resolve_deltas(mut b: Batch, limits: &Limits) -> Result<Fixes, (Status, String)> {
    let n = b.time_ms.len();
    if n as u64 > u64::from(limits.batch_fixes_max) {
        let e = FixError::TooManyFixes {
            fixes: n,
            fixes_max: limits.batch_fixes_max as usize,
        };
        return Err((Status::of_fix_error(&e), e.to_string()));
    }
    for i in 1..n {
        let (prev, delta) = (b.time_ms[i - 1], b.time_ms[i]);
        b.time_ms[i] = prev.checked_add(delta).ok_or_else(|| {
            (
                Status::MalformedFrame,
                format!("fix {i}: time_ms delta {delta} added to {prev} overflows i64"),
            )
        })?;
    }
    for column in [&mut b.lat_e7, &mut b.lon_e7] {
        for i in 1..column.len() {
            column[i] = column[i - 1].wrapping_add(column[i]);
        }
    }
    Ok(Fixes {
        time_ms: b.time_ms,
        lat_e7: b.lat_e7,
        lon_e7: b.lon_e7,
        accuracy_cm: b.accuracy_cm,
        altitude_cm: b.altitude_cm,
        speed_cmps: b.speed_cmps,
        heading_cdeg: b.heading_cdeg,
    })
}

thread_local! {
    static ENCODER: RefCell<BatchEncoder> = RefCell::new(BatchEncoder::new());
    static DECODER: RefCell<BatchDecoder> = RefCell::new(BatchDecoder::new());
}

/// Encodes a BATCH frame (header included) into `out`: seq, encoding 1, zstd(`zstd_level`)
/// of the delta-encoded protobuf. Uses a per-thread [`BatchEncoder`], so steady-state calls
/// do not allocate scratch; keep your own `BatchEncoder` to control that memory.
///
/// # Errors
/// See [`BatchEncoder::encode`].
pub fn encode_batch_frame(
    batch_seq: u64,
    fixes: &Fixes,
    zstd_level: i32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_with_thread_encoder(
        batch_seq,
        fixes,
        Compression::Zstd { level: zstd_level },
        out,
    )
}

/// Like [`encode_batch_frame`] with encoding 0 (uncompressed payload).
///
/// # Errors
/// See [`BatchEncoder::encode`].
pub fn encode_batch_frame_raw(
    batch_seq: u64,
    fixes: &Fixes,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_with_thread_encoder(batch_seq, fixes, Compression::None, out)
}

fn encode_with_thread_encoder(
    batch_seq: u64,
    fixes: &Fixes,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    ENCODER.with(|e| match e.try_borrow_mut() {
        Ok(mut enc) => enc.encode(batch_seq, fixes, compression, out),
        // Only reachable by re-entrancy, which this module never does; stay correct anyway.
        Err(_) => BatchEncoder::new().encode(batch_seq, fixes, compression, out),
    })
}

/// Decodes a BATCH frame BODY (after the 5-byte header) and validates it against `limits`
/// and `now_ms`. zstd is decoded with a hard output cap (`decompressed_bytes_max`) and a
/// bounded window ([`Limits::zstd_window_log_max`]). Uses a per-thread [`BatchDecoder`].
///
/// Checks, in order: body shorter than 9 bytes → MALFORMED_FRAME (seq known from 8 bytes);
/// body over `batch_bytes_max` → BATCH_TOO_LARGE; seq 0 → INVALID_SEQUENCE; unknown encoding
/// → UNSUPPORTED_ENCODING; payload over `decompressed_bytes_max` → DECOMPRESSED_TOO_LARGE;
/// bad zstd → DECOMPRESS_FAILED; bad protobuf → MALFORMED_FRAME; more fixes than
/// `batch_fixes_max` → TOO_MANY_FIXES; time delta overflow → MALFORMED_FRAME; then
/// [`validate`].
///
/// # Errors
/// [`BatchError`] with the seq (when present), the status and a precise reason.
pub fn decode_batch(body: &[u8], limits: &Limits, now_ms: i64) -> Result<(u64, Fixes), BatchError> {
    DECODER.with(|d| match d.try_borrow_mut() {
        Ok(mut dec) => dec.decode(body, limits, now_ms),
        Err(_) => BatchDecoder::new().decode(body, limits, now_ms),
    })
}
