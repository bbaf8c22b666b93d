//! Version-2 device tokens: a key id, an issue time and an expiry, verified against a ring
//! of keys so a key can be rotated without a flag day, and refused once revoked.
//!
//! ```text
//! hf2.<key_id>.<device_id>.<issued_s>.<expires_s>.<64 lowercase hex digits>
//! tag = HMAC-SHA256(key[key_id], "hexflow/token/v2" || key_id u16 BE || device_id u64 BE
//!                                 || issued_s u64 BE || expires_s u64 BE)
//! ```
//!
//! # Contract
//! * Pure: no IO, no clock (`now_s` is an argument), constant-time tag comparison.
//! * A token verifies only while its key is in the ring, `now_s < expires_s`, and no
//!   revocation covers it ([`Revocations`]); version-1 tokens (`hf1.…`, no expiry) verify
//!   only with the ring's legacy key (key id 0) and only when the ring accepts them.
//! * Rotation: [`Keyring::mint`] always signs with the newest key; older keys keep
//!   verifying the tokens they signed until an operator removes them from the ring, so the
//!   overlap is as long as the longest token lifetime the operator issues.

use std::collections::{BTreeMap, HashMap};

use fix::DeviceId;
use ring::hmac;

use super::{TOKEN_KEY_LEN, TokenError, TokenKey, parse_decimal, parse_tag, push_tag};

/// Prefix of version-2 tokens.
pub const TOKEN_V2_PREFIX: &str = "hf2";
/// Domain separation of the v2 tag.
const TAG_CONTEXT_V2: &[u8] = b"hexflow/token/v2";
/// Longest v2 token: prefix, 5-digit key id, 19-digit id, two 20-digit times, tag, dots.
pub const TOKEN_V2_LEN_MAX: usize = 3 + 1 + 5 + 1 + 19 + 1 + 20 + 1 + 20 + 1 + 64;

/// What a verified token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The device the token was minted for.
    pub device_id: DeviceId,
    /// The key that signed it (0: the legacy v1 key).
    pub key_id: u16,
    /// When it was minted (Unix s; 0 for v1 tokens, which carry no time).
    pub issued_s: u64,
    /// When it stops being valid (Unix s; `None` for v1 tokens).
    pub expires_s: Option<u64>,
}

/// Device tokens that must no longer be accepted. Pure data; the binary loads it from a
/// file and replaces it while running.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Tokens of a device issued before this Unix second are refused (v1 tokens, which
    /// carry no issue time, are refused for every listed device).
    pub devices: HashMap<DeviceId, u64>,
}

impl Revocations {
    /// Whether a token with these claims is revoked.
    pub fn covers(&self, claims: &Claims) -> bool {
        self.devices
            .get(&claims.device_id)
            .is_some_and(|&before_s| claims.issued_s < before_s || claims.expires_s.is_none())
    }
}

/// Why a key ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// No key at all.
    #[error("the key ring holds no key")]
    Empty,
    /// Only the legacy key, but v1 tokens are not accepted: nothing could verify.
    #[error("the key ring holds only the legacy v1 key, which is not accepted")]
    OnlyLegacy,
}

/// The server's token keys by key id (0 = the legacy v1 key), newest = the signing key.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u16, TokenKey>,
    accept_v1: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("accept_v1", &self.accept_v1)
            .finish()
    }
}

fn tag_input(key_id: u16, device_id: DeviceId, issued_s: u64, expires_s: u64) -> [u8; 42] {
    let mut m = [0u8; TAG_CONTEXT_V2.len() + 2 + 8 + 8 + 8];
    let c = TAG_CONTEXT_V2.len();
    m[..c].copy_from_slice(TAG_CONTEXT_V2);
    m[c..c + 2].copy_from_slice(&key_id.to_be_bytes());
    m[c + 2..c + 10].copy_from_slice(&device_id.get().to_be_bytes());
    m[c + 10..c + 18].copy_from_slice(&issued_s.to_be_bytes());
    m[c + 18..c + 26].copy_from_slice(&expires_s.to_be_bytes());
    m
}

impl Keyring {
    /// A ring of `keys` (key id → key). Key id 0 is the legacy key that verifies `hf1`
    /// tokens when `accept_v1`; it never signs v2 tokens.
    ///
    /// # Errors
    /// [`KeyringError`] when no key could ever sign a v2 token and none verifies v1.
    pub fn new(
        keys: impl IntoIterator<Item = (u16, TokenKey)>,
        accept_v1: bool,
    ) -> Result<Self, KeyringError> {
        let keys: BTreeMap<u16, TokenKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        if keys.keys().all(|&k| k == 0) && !accept_v1 {
            return Err(KeyringError::OnlyLegacy);
        }
        Ok(Self { keys, accept_v1 })
    }

    /// A ring holding only the legacy key `key` (id 0), accepting version-1 tokens.
    pub fn v1_only(key: TokenKey) -> Self {
        Self {
            keys: BTreeMap::from([(0, key)]),
            accept_v1: true,
        }
    }

    /// Whether version-1 tokens are accepted (with the legacy key 0).
    pub fn accepts_v1(&self) -> bool {
        self.accept_v1 && self.keys.contains_key(&0)
    }

    /// The key id new tokens are signed with (the highest one), `None` with only the
    /// legacy key.
    pub fn signing_key_id(&self) -> Option<u16> {
        self.keys.keys().next_back().copied().filter(|&k| k != 0)
    }

    /// The key ids in the ring, ascending.
    pub fn key_ids(&self) -> Vec<u16> {
        self.keys.keys().copied().collect()
    }

    /// Mints a v2 token for `device_id` valid from `issued_s` until `expires_s` with the
    /// newest key; `None` when the ring holds only the legacy key.
    pub fn mint(&self, device_id: DeviceId, issued_s: u64, expires_s: u64) -> Option<String> {
        let key_id = self.signing_key_id()?;
        let key = self.keys.get(&key_id)?;
        let tag = hmac::sign(&key.key, &tag_input(key_id, device_id, issued_s, expires_s));
        let mut out = String::with_capacity(TOKEN_V2_LEN_MAX);
        out.push_str(TOKEN_V2_PREFIX);
        for part in [u64::from(key_id), device_id.get(), issued_s, expires_s] {
            out.push('.');
            out.push_str(&part.to_string());
        }
        out.push('.');
        push_tag(&mut out, tag.as_ref());
        Some(out)
    }

    /// Verifies `token` at `now_s` against the ring and `revoked`.
    ///
    /// # Errors
    /// [`TokenError`]: malformed, unknown key, bad signature, expired, revoked, or a v1
    /// token the ring does not accept.
    pub fn verify(
        &self,
        token: &str,
        now_s: u64,
        revoked: &Revocations,
    ) -> Result<Claims, TokenError> {
        let claims = if token.starts_with("hf1.") {
            self.verify_v1(token)?
        } else {
            self.verify_v2(token, now_s)?
        };
        if revoked.covers(&claims) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    fn verify_v1(&self, token: &str) -> Result<Claims, TokenError> {
        let legacy = self
            .keys
            .get(&0)
            .filter(|_| self.accept_v1)
            .ok_or(TokenError::VersionNotAccepted)?;
        let device_id = legacy.verify(token)?;
        Ok(Claims {
            device_id,
            key_id: 0,
            issued_s: 0,
            expires_s: None,
        })
    }

    fn verify_v2(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        if token.len() > TOKEN_V2_LEN_MAX {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: TOKEN_V2_LEN_MAX,
            });
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [prefix, kid, id, issued, expires, tag_hex] = parts.as_slice() else {
            return Err(TokenError::Malformed);
        };
        if *prefix != TOKEN_V2_PREFIX {
            return Err(TokenError::Malformed);
        }
        let key_id = u16::try_from(parse_decimal(kid)?).map_err(|_| TokenError::Malformed)?;
        let device_id =
            DeviceId::try_from(parse_decimal(id)?).map_err(|_| TokenError::BadDeviceId)?;
        let (issued_s, expires_s) = (parse_decimal(issued)?, parse_decimal(expires)?);
        let tag = parse_tag(tag_hex)?;
        let key = self
            .keys
            .get(&key_id)
            .filter(|_| key_id != 0)
            .ok_or(TokenError::UnknownKey { key_id })?;
        hmac::verify(
            &key.key,
            &tag_input(key_id, device_id, issued_s, expires_s),
            &tag,
        )
        .map_err(|_| TokenError::BadSignature)?;
        if now_s >= expires_s {
            return Err(TokenError::Expired { expires_s });
        }
        Ok(Claims {
            device_id,
            key_id,
            issued_s,
            expires_s: Some(expires_s),
        })
    }
}

/// The server's confirm-location master key: derives each device's confirm secret, which
/// the device receives once at provisioning and never sends. A stolen bearer token
/// therefore cannot sign CONFIRM frames for that device.
#[derive(Clone)]
pub struct ConfirmMasterKey {
    key: hmac::Key,
}

impl std::fmt::Debug for ConfirmMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmMasterKey(<redacted>)")
    }
}

/// Domain separation of confirm secrets.
const CONFIRM_SECRET_CONTEXT: &[u8] = b"hexflow/confirm-secret/v1";

impl ConfirmMasterKey {
    /// Wraps key bytes (exactly [`TOKEN_KEY_LEN`]).
    ///
    /// # Errors
    /// [`super::KeyError::WrongLength`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, super::KeyError> {
        if bytes.len() != TOKEN_KEY_LEN {
            return Err(super::KeyError::WrongLength {
                expected: TOKEN_KEY_LEN,
                actual: bytes.len(),
            });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// The confirm secret of `device_id`: 32 bytes, stable across token-key rotations.
    pub fn secret(&self, device_id: DeviceId) -> [u8; 32] {
        let mut msg = [0u8; CONFIRM_SECRET_CONTEXT.len() + 8];
        msg[..CONFIRM_SECRET_CONTEXT.len()].copy_from_slice(CONFIRM_SECRET_CONTEXT);
        msg[CONFIRM_SECRET_CONTEXT.len()..].copy_from_slice(&device_id.get().to_be_bytes());
        let tag = hmac::sign(&self.key, &msg);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(test)]
mod tests;
