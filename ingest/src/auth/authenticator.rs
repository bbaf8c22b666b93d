//! [`Authenticator`]: everything a server needs to admit a device and check what it signs:
//! the key ring, the confirm master key and the current revocation list.
//!
//! # Contract
//! * Pure apart from one lock: no IO, no clock (`now_s` is an argument). The revocation
//!   list is swapped whole ([`Authenticator::set_revocations`]) by whoever reloads it; a
//!   verification sees either the old or the new list, never a mix.
//! * The confirm-location key of a connection depends on how the device authenticated:
//!   a version-1 token derives it from the token itself (anyone who saw the token can sign
//!   CONFIRMs: documented as such in `docs/SECURITY.md`), a version-2 token uses the
//!   device's confirm secret ([`ConfirmMasterKey::secret`]), which never travels on the wire.

use std::sync::{Arc, PoisonError, RwLock};

use fix::DeviceId;

use super::{Claims, ConfirmMasterKey, Keyring, Revocations, TokenError, TokenKey};
use crate::wire::ConfirmKey;

/// Verifies HELLO tokens and hands out confirm keys. Share it behind an `Arc`.
pub struct Authenticator {
    ring: Keyring,
    confirm: ConfirmMasterKey,
    revoked: RwLock<Arc<Revocations>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("ring", &self.ring)
            .field("revoked_devices", &self.revocations().devices.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `ring` and `confirm`, with nothing revoked.
    pub fn new(ring: Keyring, confirm: ConfirmMasterKey) -> Self {
        Self {
            ring,
            confirm,
            revoked: RwLock::new(Arc::new(Revocations::default())),
        }
    }

    /// An authenticator that accepts only version-1 tokens of `key` (tests, tools).
    pub fn v1_only(key: TokenKey, confirm: ConfirmMasterKey) -> Self {
        Self::new(Keyring::v1_only(key), confirm)
    }

    /// The key ring.
    pub fn keyring(&self) -> &Keyring {
        &self.ring
    }

    /// Verifies `token` at Unix second `now_s` against the ring and the current
    /// revocations.
    ///
    /// # Errors
    /// The [`TokenError`] saying why the token is refused.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        self.ring.verify(token, now_s, &self.revocations())
    }

    /// Whether a connection admitted with `claims` must be closed at `now_s`: its token
    /// expired or is revoked now.
    pub fn still_valid(&self, claims: &Claims, now_s: u64) -> Result<(), TokenError> {
        if let Some(expires_s) = claims.expires_s {
            if now_s >= expires_s {
                return Err(TokenError::Expired { expires_s });
            }
        }
        if self.revocations().covers(claims) {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }

    /// The key the device's CONFIRM frames are signed with: derived from the token for a
    /// version-1 token (`token` is the verified token), the device's confirm secret for a
    /// version-2 token.
    pub fn confirm_key(&self, claims: &Claims, token: &str) -> ConfirmKey {
        if claims.expires_s.is_none() {
            ConfirmKey::from_token(token)
        } else {
            ConfirmKey::from_secret(&self.confirm.secret(claims.device_id))
        }
    }

    /// The confirm secret of `device_id` (what `hexflow token` prints for provisioning).
    pub fn confirm_secret(&self, device_id: DeviceId) -> [u8; 32] {
        self.confirm.secret(device_id)
    }

    /// Replaces the revocation list; later verifications use the new one.
    pub fn set_revocations(&self, revoked: Revocations) {
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(revoked);
    }

    /// The current revocation list.
    pub fn revocations(&self) -> Arc<Revocations> {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::wire::ConfirmKind;

    fn d(id: u64) -> DeviceId {
        DeviceId::try_from(id).unwrap()
    }

    fn auth() -> Authenticator {
        let ring = Keyring::new(
            [
                (0, TokenKey::from_bytes(&[1; 32]).unwrap()),
                (3, TokenKey::from_bytes(&[3; 32]).unwrap()),
            ],
            true,
        )
        .unwrap();
        Authenticator::new(ring, ConfirmMasterKey::from_bytes(&[9; 32]).unwrap())
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn revocations_swap_whole_and_apply_to_open_claims() {
        let a = auth();
        let token = a.keyring().mint(d(4), NOW - 10, NOW + 100).unwrap();
        let claims = a.verify(&token, NOW).unwrap();
        assert_eq!(a.still_valid(&claims, NOW), Ok(()));
        assert_eq!(
            a.still_valid(&claims, NOW + 100),
            Err(TokenError::Expired {
                expires_s: NOW + 100
            })
        );
        let mut r = Revocations::default();
        r.devices.insert(d(4), NOW);
        a.set_revocations(r);
        assert_eq!(a.verify(&token, NOW), Err(TokenError::Revoked));
        assert_eq!(a.still_valid(&claims, NOW), Err(TokenError::Revoked));
        a.set_revocations(Revocations::default());
        assert_eq!(a.verify(&token, NOW), Ok(claims));
    }

    #[test]
    fn a_v2_token_alone_does_not_give_the_confirm_key() {
        let a = auth();
        let token = a.keyring().mint(d(4), NOW, NOW + 100).unwrap();
        let claims = a.verify(&token, NOW).unwrap();
        let server = a.confirm_key(&claims, &token);
        let c = ConfirmKey::from_token(&token).confirm(7, ConfirmKind::Here, 0, 0);
        assert!(
            server.verify(&c).is_err(),
            "a key derived from the token must not verify"
        );
        let c =
            ConfirmKey::from_secret(&a.confirm_secret(d(4))).confirm(7, ConfirmKind::Here, 0, 0);
        assert!(server.verify(&c).is_ok());
        // Version 1: the token is the only secret the device has.
        let v1 = TokenKey::from_bytes(&[1; 32]).unwrap().mint(d(4));
        let claims = a.verify(&v1, NOW).unwrap();
        let c = ConfirmKey::from_token(&v1).confirm(7, ConfirmKind::Here, 0, 0);
        assert!(a.confirm_key(&claims, &v1).verify(&c).is_ok());
    }
}
