//! Device tokens: minting and constant-time verification. Pure: no IO, no clock.
//!
//! A token binds a connection to one device id without any database lookup:
//!
//! ```text
//! hf1.<device_id decimal>.<64 lowercase hex digits = HMAC-SHA256(key, "hexflow/token/v1" || device_id as u64 big-endian)>
//! ```
//!
//! The server holds the 32-byte key (`<data-dir>/secret/token.key`); anyone holding the key
//! can mint tokens (`hexflow token DEVICE_ID`). Verification recomputes the tag and compares
//! it in constant time (`ring::hmac::verify`), so timing reveals nothing about a forged tag.
//!
//! # Contract
//! * [`TokenKey::verify`] returns the device id only for a token minted with the same key.
//! * The parser rejects anything but the exact format above (no whitespace, no uppercase hex,
//!   no leading `+`, no leading zeros in the id), so one device has exactly one token per key.
//! * Version-1 tokens never expire and can only be revoked all at once by rotating the key;
//!   version-2 tokens ([`Keyring`], `hf2.…`) carry a key id, an issue time and an expiry,
//!   can be revoked per device ([`Revocations`]), and let keys rotate with an overlap.

mod authenticator;
mod keyring;

pub use authenticator::Authenticator;
pub use keyring::{
    Claims, ConfirmMasterKey, Keyring, KeyringError, Revocations, TOKEN_V2_LEN_MAX, TOKEN_V2_PREFIX,
};

use fix::DeviceId;
use ring::hmac;

/// Length of the secret key in bytes.
pub const TOKEN_KEY_LEN: usize = 32;
/// Token format prefix (also the format version).
pub const TOKEN_PREFIX: &str = "hf1";
/// Domain separation for the HMAC input.
const TAG_CONTEXT: &[u8] = b"hexflow/token/v1";
/// Upper bound on token length accepted by the parser (prefix + 19-digit id + tag + dots).
pub const TOKEN_LEN_MAX: usize = 3 + 1 + 19 + 1 + 64;

/// The server's token key. Cloning is cheap.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// The key material was unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key must be exactly [`TOKEN_KEY_LEN`] bytes.
    #[error("token key must be {expected} bytes, got {actual}")]
    WrongLength {
        /// Required length.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
}

/// Why a token was refused. Deliberately coarse towards the device (`UNAUTHENTICATED`);
/// the variants are for server logs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the form `hf1.<id>.<tag>`.
    #[error("token is not of the form hf1.<device_id>.<tag>")]
    Malformed,
    /// Longer than [`TOKEN_LEN_MAX`].
    #[error("token is {len} bytes, at most {max} allowed")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The device id is not in `1..=i64::MAX`.
    #[error("device id out of range")]
    BadDeviceId,
    /// The tag does not match: forged, or minted with another key.
    #[error("token signature does not verify")]
    BadSignature,
    /// The token names a key id the ring does not hold (retired, or never issued).
    #[error("token key {key_id} is not in the key ring")]
    UnknownKey {
        /// The key id in the token.
        key_id: u16,
    },
    /// The token's lifetime is over.
    #[error("token expired at {expires_s} (Unix s)")]
    Expired {
        /// Its expiry.
        expires_s: u64,
    },
    /// The token was revoked.
    #[error("token revoked")]
    Revoked,
    /// A version-1 token, and the server accepts only version 2.
    #[error("version-1 tokens are not accepted")]
    VersionNotAccepted,
}

/// A decimal number without sign, leading zeros or whitespace (`0` itself is allowed).
fn parse_decimal(s: &str) -> Result<u64, TokenError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(TokenError::Malformed);
    }
    s.parse().map_err(|_| TokenError::Malformed)
}

/// A 32-byte tag written as 64 lowercase hex digits.
fn parse_tag(hex: &str) -> Result<[u8; 32], TokenError> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(TokenError::Malformed);
    }
    let mut tag = [0u8; 32];
    for (i, out) in tag.iter_mut().enumerate() {
        let hi = unhex(hex[2 * i]).ok_or(TokenError::Malformed)?;
        let lo = unhex(hex[2 * i + 1]).ok_or(TokenError::Malformed)?;
        *out = (hi << 4) | lo;
    }
    Ok(tag)
}

impl TokenKey {
    /// Wraps existing key bytes (exactly [`TOKEN_KEY_LEN`]).
    ///
    /// # Errors
    /// [`KeyError::WrongLength`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != TOKEN_KEY_LEN {
            return Err(KeyError::WrongLength {
                expected: TOKEN_KEY_LEN,
                actual: bytes.len(),
            });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// Generates fresh key bytes from the system's secure random generator.
    ///
    /// # Errors
    /// [`KeyError::Random`] if the generator fails.
    pub fn generate_bytes() -> Result<[u8; TOKEN_KEY_LEN], KeyError> {
        use ring::rand::SecureRandom;
        let mut out = [0u8; TOKEN_KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut out)
            .map_err(|_| KeyError::Random)?;
        Ok(out)
    }

    fn tag_input(device_id: DeviceId) -> [u8; TAG_CONTEXT.len() + 8] {
        let mut msg = [0u8; TAG_CONTEXT.len() + 8];
        msg[..TAG_CONTEXT.len()].copy_from_slice(TAG_CONTEXT);
        msg[TAG_CONTEXT.len()..].copy_from_slice(&device_id.get().to_be_bytes());
        msg
    }

    /// Mints the token of `device_id`.
    pub fn mint(&self, device_id: DeviceId) -> String {
        let tag = hmac::sign(&self.key, &Self::tag_input(device_id));
        let mut out = String::with_capacity(TOKEN_LEN_MAX);
        out.push_str(TOKEN_PREFIX);
        out.push('.');
        out.push_str(&device_id.to_string());
        out.push('.');
        push_tag(&mut out, tag.as_ref());
        out
    }

    /// Verifies a token and returns the device id it was minted for.
    ///
    /// # Errors
    /// A [`TokenError`] saying why the token is refused.
    pub fn verify(&self, token: &str) -> Result<DeviceId, TokenError> {
        if token.len() > TOKEN_LEN_MAX {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: TOKEN_LEN_MAX,
            });
        }
        let mut parts = token.split('.');
        let (Some(prefix), Some(id), Some(tag_hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenError::Malformed);
        }
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
            return Err(TokenError::Malformed);
        }
        let device_id: DeviceId = id.parse().map_err(|_| TokenError::BadDeviceId)?;
        let tag = parse_tag(tag_hex)?;
        hmac::verify(&self.key, &Self::tag_input(device_id), &tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(device_id)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a token's tag in lower-case hex (what [`parse_tag`] reads back).
fn push_tag(out: &mut String, tag: &[u8]) {
    for b in tag {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64) -> DeviceId {
        DeviceId::try_from(id).unwrap()
    }

    fn key(b: u8) -> TokenKey {
        TokenKey::from_bytes(&[b; TOKEN_KEY_LEN]).unwrap()
    }

    #[test]
    fn mint_then_verify_round_trips() {
        let k = key(7);
        for id in [1, 42, 1_000_000, i64::MAX as u64] {
            let t = k.mint(d(id));
            assert!(t.len() <= TOKEN_LEN_MAX);
            assert_eq!(k.verify(&t), Ok(d(id)));
        }
    }

    #[test]
    fn known_answer_is_stable() {
        // Pins the format: a change here breaks every token already issued.
        let t = key(0).mint(d(1));
        assert!(t.starts_with("hf1.1."));
        assert_eq!(t.len(), "hf1.1.".len() + 64);
        assert_eq!(key(0).mint(d(1)), t);
    }

    #[test]
    fn other_key_or_other_device_is_refused() {
        let t = key(1).mint(d(5));
        assert_eq!(key(2).verify(&t), Err(TokenError::BadSignature));
        let forged = t.replacen("hf1.5.", "hf1.6.", 1);
        assert_eq!(key(1).verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let k = key(3);
        let good = k.mint(d(9));
        let tag = good.rsplit('.').next().unwrap().to_string();
        for bad in [
            String::new(),
            "hf1".into(),
            "hf1..".into(),
            format!("hf2.9.{tag}"),
            format!("hf1.09.{tag}"),
            format!("hf1.+9.{tag}"),
            format!("hf1.9.{}", tag.to_uppercase()),
            format!("hf1.9.{}", &tag[..62]),
            format!("hf1.9.{tag}.x"),
            format!(" hf1.9.{tag}"),
        ] {
            assert!(k.verify(&bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            k.verify(&format!("hf1.0.{tag}")),
            Err(TokenError::Malformed),
            "leading zero / zero id"
        );
        assert_eq!(
            k.verify(&format!("hf1.9223372036854775808.{tag}")),
            Err(TokenError::BadDeviceId)
        );
        let long = "x".repeat(TOKEN_LEN_MAX + 1);
        assert_eq!(
            k.verify(&long),
            Err(TokenError::TooLong {
                len: TOKEN_LEN_MAX + 1,
                max: TOKEN_LEN_MAX
            })
        );
    }

    #[test]
    fn key_length_is_checked() {
        assert_eq!(
            TokenKey::from_bytes(&[0; 16]).unwrap_err(),
            KeyError::WrongLength {
                expected: 32,
                actual: 16
            }
        );
        let a = TokenKey::generate_bytes().unwrap();
        let b = TokenKey::generate_bytes().unwrap();
        assert_ne!(a, b);
    }
}
