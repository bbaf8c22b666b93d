//! Confirm-location messages (CONFIRM_REQUEST, CONFIRM, CONFIRM_ACK) and the CONFIRM
//! signature.
//!
//! Contract (see `docs/PROTOCOL.md` §9):
//! * The server asks a quiet device to confirm its location with CONFIRM_REQUEST; the device
//!   answers with exactly one CONFIRM of kind FIX (it sent a fresh BATCH and names it by
//!   `batch_seq`) or HERE ("I am here", no position); the server answers every CONFIRM with
//!   one CONFIRM_ACK carrying a [`Status`].
//! * A CONFIRM is signed: HMAC-SHA256 under a key derived from the device token, over a
//!   domain-separated encoding of `(request_id, kind, batch_seq, device_time_ms)`. The server
//!   re-mints the token from its token key, so no extra secret is distributed. Verification
//!   is constant time (`ring::hmac::verify`).
//! * Pure: no IO, no clock; decoding never panics on arbitrary bytes.

use super::Status;
use super::frame::{FrameError, FrameType};
use prost::Message;
use ring::hmac;

/// Longest `reason` a CONFIRM_REQUEST carries, in bytes (UTF-8).
pub const CONFIRM_REASON_BYTES_MAX: usize = 256;
/// Length of a CONFIRM signature (HMAC-SHA256).
pub const CONFIRM_SIGNATURE_LEN: usize = 32;
/// Label of the key derivation: `confirm_key = HMAC-SHA256(key = token, msg = this)`.
const KEY_LABEL: &[u8] = b"hexflow/confirm-key/v1";
/// Prefix of the signed message.
const SIGNED_CONTEXT: &[u8] = b"hexflow/confirm/v1";
/// Length of the signed message: context, request_id, kind, batch_seq, device_time_ms.
const SIGNED_LEN: usize = SIGNED_CONTEXT.len() + 8 + 4 + 8 + 8;

/// CONFIRM_REQUEST body (server to device): please confirm your location.
#[derive(Clone, PartialEq, Message)]
pub struct ConfirmRequest {
    /// Identifies the request; never 0. The device quotes it in its CONFIRM.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    /// Server time (Unix ms) when the request was raised (not when it was delivered).
    #[prost(int64, tag = "2")]
    pub requested_at_ms: i64,
    /// Why the server asks, for the app's UI and logs (at most
    /// [`CONFIRM_REASON_BYTES_MAX`] bytes), e.g. `"no fix for 36h"`.
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// CONFIRM body (device to server): the answer to one CONFIRM_REQUEST.
#[derive(Clone, PartialEq, Message)]
pub struct Confirm {
    /// The `request_id` of the CONFIRM_REQUEST being answered.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    /// [`ConfirmKind`] code: 1 = FIX, 2 = HERE.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// FIX: the seq of a batch already acked OK/DUPLICATE on this connection; HERE: 0.
    #[prost(uint64, tag = "3")]
    pub batch_seq: u64,
    /// The device's clock (Unix ms) when it answered; signed, recorded, never trusted
    /// for silence decisions.
    #[prost(int64, tag = "4")]
    pub device_time_ms: i64,
    /// [`CONFIRM_SIGNATURE_LEN`] bytes: see [`ConfirmKey::sign`].
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// CONFIRM_ACK body (server to device): the outcome of one CONFIRM.
#[derive(Clone, PartialEq, Message)]
pub struct ConfirmAck {
    /// The `request_id` of the CONFIRM this answers (0 if the CONFIRM was undecodable).
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    /// A [`Status`] code: OK (recorded) or a rejection.
    #[prost(uint32, tag = "2")]
    pub status: u32,
    /// Human-readable precision for rejections.
    #[prost(string, tag = "3")]
    pub reason: String,
}

impl ConfirmAck {
    /// An answer with the given status and reason.
    pub fn new(request_id: u64, status: Status, reason: impl Into<String>) -> Self {
        ConfirmAck {
            request_id,
            status: status.code(),
            reason: reason.into(),
        }
    }

    /// The status if protocol v1 defines its code.
    pub fn known_status(&self) -> Option<Status> {
        Status::from_code(self.status)
    }
}

/// How a device confirms its location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfirmKind {
    /// 1: the device sent a fresh BATCH (named by `batch_seq`); its newest fix counts.
    Fix,
    /// 2: "I am here" without a position; the contact counts, the fix clock does not move.
    Here,
}

impl ConfirmKind {
    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ConfirmKind::Fix => 1,
            ConfirmKind::Here => 2,
        }
    }

    /// The kind for a wire code, `None` for codes v1 does not define.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(ConfirmKind::Fix),
            2 => Some(ConfirmKind::Here),
            _ => None,
        }
    }

    /// `FIX` or `HERE`, as in the protocol document.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmKind::Fix => "FIX",
            ConfirmKind::Here => "HERE",
        }
    }
}

impl std::fmt::Display for ConfirmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a CONFIRM is refused by the pure checks ([`check_confirm`], [`ConfirmKey::verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// `request_id` 0 is never issued.
    #[error("request_id 0 is never issued")]
    ZeroRequestId,
    /// The kind code is not FIX (1) or HERE (2).
    #[error("kind {kind} is not 1 (FIX) or 2 (HERE)")]
    UnknownKind {
        /// The code received.
        kind: u32,
    },
    /// A FIX confirmation must name its batch (`batch_seq` ≥ 1).
    #[error("kind FIX needs the batch_seq of the fresh batch, got 0")]
    FixWithoutBatch,
    /// A HERE confirmation carries no batch.
    #[error("kind HERE must have batch_seq 0, got {batch_seq}")]
    HereWithBatch {
        /// The seq received.
        batch_seq: u64,
    },
    /// The signature is not [`CONFIRM_SIGNATURE_LEN`] bytes.
    #[error("signature is {len} bytes, expected {CONFIRM_SIGNATURE_LEN}")]
    SignatureLength {
        /// Bytes received.
        len: usize,
    },
    /// The signature does not verify under the device's key.
    #[error("signature does not verify")]
    BadSignature,
}

impl ConfirmError {
    /// The status the server answers with: INVALID_SIGNATURE for signature problems,
    /// INVALID_FIELD otherwise.
    pub fn status(&self) -> Status {
        match self {
            ConfirmError::SignatureLength { .. } | ConfirmError::BadSignature => {
                Status::InvalidSignature
            }
            _ => Status::InvalidField,
        }
    }
}

/// Checks the shape of a CONFIRM (everything but the signature and the server state) and
/// returns its kind.
///
/// # Errors
/// The first [`ConfirmError`] found, in the order: request id, kind, batch_seq, signature
/// length.
pub fn check_confirm(c: &Confirm) -> Result<ConfirmKind, ConfirmError> {
    if c.request_id == 0 {
        return Err(ConfirmError::ZeroRequestId);
    }
    let kind = ConfirmKind::from_code(c.kind).ok_or(ConfirmError::UnknownKind { kind: c.kind })?;
    match (kind, c.batch_seq) {
        (ConfirmKind::Fix, 0) => return Err(ConfirmError::FixWithoutBatch),
        (ConfirmKind::Here, s) if s != 0 => {
            return Err(ConfirmError::HereWithBatch { batch_seq: s });
        }
        _ => {}
    }
    if c.signature.len() != CONFIRM_SIGNATURE_LEN {
        return Err(ConfirmError::SignatureLength {
            len: c.signature.len(),
        });
    }
    Ok(kind)
}

/// The per-device key that signs CONFIRM frames, derived from the device token:
/// `HMAC-SHA256(key = token as UTF-8 bytes, msg = "hexflow/confirm-key/v1")`.
#[derive(Clone)]
pub struct ConfirmKey {
    key: hmac::Key,
}

impl std::fmt::Debug for ConfirmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmKey(<redacted>)")
    }
}

impl ConfirmKey {
    /// The key of a device provisioned with a confirm secret (version-2 tokens: the secret
    /// comes from `ingest::auth::ConfirmMasterKey::secret` and never travels on the wire).
    pub fn from_secret(secret: &[u8]) -> Self {
        ConfirmKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Derives the key of the device holding version-1 `token` (the token travels in every
    /// HELLO, so whoever sees it can sign confirms: prefer [`ConfirmKey::from_secret`]).
    pub fn from_token(token: &str) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes()),
            KEY_LABEL,
        );
        ConfirmKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    fn message(
        request_id: u64,
        kind: u32,
        batch_seq: u64,
        device_time_ms: i64,
    ) -> [u8; SIGNED_LEN] {
        let mut m = [0u8; SIGNED_LEN];
        let (ctx, rest) = m.split_at_mut(SIGNED_CONTEXT.len());
        ctx.copy_from_slice(SIGNED_CONTEXT);
        rest[..8].copy_from_slice(&request_id.to_be_bytes());
        rest[8..12].copy_from_slice(&kind.to_be_bytes());
        rest[12..20].copy_from_slice(&batch_seq.to_be_bytes());
        rest[20..28].copy_from_slice(&device_time_ms.to_be_bytes());
        m
    }

    /// The signature of a CONFIRM: `HMAC-SHA256(confirm_key, "hexflow/confirm/v1" ||
    /// request_id:u64 || kind:u32 || batch_seq:u64 || device_time_ms:i64)`, integers
    /// big-endian.
    pub fn sign(
        &self,
        request_id: u64,
        kind: ConfirmKind,
        batch_seq: u64,
        device_time_ms: i64,
    ) -> [u8; CONFIRM_SIGNATURE_LEN] {
        let tag = hmac::sign(
            &self.key,
            &Self::message(request_id, kind.code(), batch_seq, device_time_ms),
        );
        let mut out = [0u8; CONFIRM_SIGNATURE_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// A complete, signed CONFIRM.
    pub fn confirm(
        &self,
        request_id: u64,
        kind: ConfirmKind,
        batch_seq: u64,
        device_time_ms: i64,
    ) -> Confirm {
        Confirm {
            request_id,
            kind: kind.code(),
            batch_seq,
            device_time_ms,
            signature: self
                .sign(request_id, kind, batch_seq, device_time_ms)
                .to_vec(),
        }
    }

    /// Verifies the signature of `c` in constant time.
    ///
    /// # Errors
    /// [`ConfirmError::SignatureLength`] or [`ConfirmError::BadSignature`].
    pub fn verify(&self, c: &Confirm) -> Result<(), ConfirmError> {
        if c.signature.len() != CONFIRM_SIGNATURE_LEN {
            return Err(ConfirmError::SignatureLength {
                len: c.signature.len(),
            });
        }
        let msg = Self::message(c.request_id, c.kind, c.batch_seq, c.device_time_ms);
        hmac::verify(&self.key, &msg, &c.signature).map_err(|_| ConfirmError::BadSignature)
    }
}

/// Appends a CONFIRM_REQUEST frame to `out`.
pub fn encode_confirm_request(r: &ConfirmRequest, out: &mut Vec<u8>) {
    super::frame::encode_message_frame(FrameType::ConfirmRequest, r, out);
}

/// Appends a CONFIRM frame to `out`.
pub fn encode_confirm(c: &Confirm, out: &mut Vec<u8>) {
    super::frame::encode_message_frame(FrameType::Confirm, c, out);
}

/// Appends a CONFIRM_ACK frame to `out`.
pub fn encode_confirm_ack(a: &ConfirmAck, out: &mut Vec<u8>) {
    super::frame::encode_message_frame(FrameType::ConfirmAck, a, out);
}

/// Decodes a CONFIRM_REQUEST body.
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `ConfirmRequest`.
pub fn decode_confirm_request(body: &[u8]) -> Result<ConfirmRequest, FrameError> {
    super::frame::decode_message(FrameType::ConfirmRequest, body)
}

/// Decodes a CONFIRM body (shape not checked: see [`check_confirm`]).
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `Confirm`.
pub fn decode_confirm(body: &[u8]) -> Result<Confirm, FrameError> {
    super::frame::decode_message(FrameType::Confirm, body)
}

/// Decodes a CONFIRM_ACK body.
///
/// # Errors
/// [`FrameError::Protobuf`] when the body is not a valid `ConfirmAck`.
pub fn decode_confirm_ack(body: &[u8]) -> Result<ConfirmAck, FrameError> {
    super::frame::decode_message(FrameType::ConfirmAck, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(frame: &[u8]) -> &[u8] {
        &frame[super::super::FRAME_HEADER_LEN..]
    }

    #[test]
    fn messages_round_trip_with_their_frame_types() {
        let req = ConfirmRequest {
            request_id: 7,
            requested_at_ms: 1_760_000_000_000,
            reason: "no fix for 36h".into(),
        };
        let mut out = vec![];
        encode_confirm_request(&req, &mut out);
        assert_eq!(out[0], 0x07);
        assert_eq!(decode_confirm_request(body(&out)).expect("req"), req);

        let c = ConfirmKey::from_token("hf1.5.x").confirm(7, ConfirmKind::Here, 0, 123);
        out.clear();
        encode_confirm(&c, &mut out);
        assert_eq!(out[0], 0x08);
        assert_eq!(decode_confirm(body(&out)).expect("confirm"), c);

        let a = ConfirmAck::new(7, Status::UnsolicitedConfirm, "no such request");
        out.clear();
        encode_confirm_ack(&a, &mut out);
        assert_eq!(out[0], 0x09);
        let back = decode_confirm_ack(body(&out)).expect("ack");
        assert_eq!(back, a);
        assert_eq!(back.known_status(), Some(Status::UnsolicitedConfirm));
    }

    #[test]
    fn signature_known_answer() {
        // Pins the signature scheme (docs/PROTOCOL.md §9 shows the same vector); computed
        // independently with Python's hmac module.
        let key = ConfirmKey::from_token("hf1.1.token");
        let sig = key.sign(42, ConfirmKind::Here, 0, 1_700_000_000_000);
        let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, KNOWN_HERE_SIGNATURE_HEX);
    }

    /// HMAC vector for token "hf1.1.token", request 42, HERE, batch 0, time 1700000000000.
    const KNOWN_HERE_SIGNATURE_HEX: &str =
        "17d9ad1d3d26aedd3ca0c0fb0e4ef4fa13df0bc4b0f60c8cedbfd82674f105b6";

    #[test]
    fn signature_binds_every_field_and_the_token() {
        let key = ConfirmKey::from_token("hf1.9.aaaa");
        let good = key.confirm(5, ConfirmKind::Fix, 77, 1000);
        assert_eq!(check_confirm(&good), Ok(ConfirmKind::Fix));
        assert_eq!(key.verify(&good), Ok(()));
        let variants = [
            Confirm {
                request_id: 6,
                ..good.clone()
            },
            Confirm {
                kind: 2,
                ..good.clone()
            },
            Confirm {
                batch_seq: 78,
                ..good.clone()
            },
            Confirm {
                device_time_ms: 1001,
                ..good.clone()
            },
        ];
        for v in variants {
            assert_eq!(key.verify(&v), Err(ConfirmError::BadSignature), "{v:?}");
        }
        let other = ConfirmKey::from_token("hf1.9.aaab");
        assert_eq!(other.verify(&good), Err(ConfirmError::BadSignature));
        let mut flipped = good.clone();
        flipped.signature[31] ^= 1;
        assert_eq!(key.verify(&flipped), Err(ConfirmError::BadSignature));
        let short = Confirm {
            signature: vec![0; 31],
            ..good
        };
        assert_eq!(
            key.verify(&short),
            Err(ConfirmError::SignatureLength { len: 31 })
        );
        assert_eq!(
            key.verify(&short).expect_err("short").status(),
            Status::InvalidSignature
        );
    }

    #[test]
    fn shape_checks_in_order() {
        let key = ConfirmKey::from_token("t");
        let here = key.confirm(1, ConfirmKind::Here, 0, 0);
        assert_eq!(check_confirm(&here), Ok(ConfirmKind::Here));
        let cases = [
            (
                Confirm {
                    request_id: 0,
                    kind: 9,
                    ..here.clone()
                },
                ConfirmError::ZeroRequestId,
            ),
            (
                Confirm {
                    kind: 0,
                    ..here.clone()
                },
                ConfirmError::UnknownKind { kind: 0 },
            ),
            (
                Confirm {
                    kind: 3,
                    ..here.clone()
                },
                ConfirmError::UnknownKind { kind: 3 },
            ),
            (
                Confirm {
                    kind: 1,
                    batch_seq: 0,
                    ..here.clone()
                },
                ConfirmError::FixWithoutBatch,
            ),
            (
                Confirm {
                    batch_seq: 4,
                    ..here.clone()
                },
                ConfirmError::HereWithBatch { batch_seq: 4 },
            ),
            (
                Confirm {
                    signature: vec![],
                    ..here.clone()
                },
                ConfirmError::SignatureLength { len: 0 },
            ),
        ];
        for (c, want) in cases {
            let got = check_confirm(&c).expect_err("refused");
            assert_eq!(got, want);
            let status = got.status();
            assert!(
                status == Status::InvalidField || status == Status::InvalidSignature,
                "{status}"
            );
        }
        assert_eq!(ConfirmKind::from_code(1), Some(ConfirmKind::Fix));
        assert_eq!(ConfirmKind::Here.to_string(), "HERE");
    }

    fn arb_kind() -> impl Strategy<Value = ConfirmKind> {
        prop_oneof![Just(ConfirmKind::Fix), Just(ConfirmKind::Here)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn confirm_frames_round_trip_and_verify(
            token in "[a-z0-9.]{1,90}",
            request_id in 1..u64::MAX,
            kind in arb_kind(),
            seq in 1..u64::MAX,
            time in any::<i64>(),
            reason in "\\PC{0,64}",
            status in any::<u32>(),
        ) {
            let batch_seq = if kind == ConfirmKind::Fix { seq } else { 0 };
            let key = ConfirmKey::from_token(&token);
            let c = key.confirm(request_id, kind, batch_seq, time);
            let mut out = vec![];
            encode_confirm(&c, &mut out);
            let back = decode_confirm(body(&out)).expect("decodes");
            prop_assert_eq!(&back, &c);
            prop_assert_eq!(check_confirm(&back), Ok(kind));
            prop_assert_eq!(key.verify(&back), Ok(()));

            let req = ConfirmRequest { request_id, requested_at_ms: time, reason: reason.clone() };
            out.clear();
            encode_confirm_request(&req, &mut out);
            prop_assert_eq!(decode_confirm_request(body(&out)).expect("decodes"), req);

            let ack = ConfirmAck { request_id, status, reason };
            out.clear();
            encode_confirm_ack(&ack, &mut out);
            prop_assert_eq!(decode_confirm_ack(body(&out)).expect("decodes"), ack);
        }

        #[test]
        fn arbitrary_confirm_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let key = ConfirmKey::from_token("hf1.3.x");
            if let Ok(c) = decode_confirm(&bytes) {
                let _ = check_confirm(&c);
                let _ = key.verify(&c);
            }
            let _ = decode_confirm_request(&bytes);
            let _ = decode_confirm_ack(&bytes);
        }
    }
}
