#![allow(clippy::unwrap_used)]

use super::*;

fn d(id: u64) -> DeviceId {
    DeviceId::try_from(id).unwrap()
}

fn key(b: u8) -> TokenKey {
    TokenKey::from_bytes(&[b; TOKEN_KEY_LEN]).unwrap()
}

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn none() -> Revocations {
    Revocations::default()
}

#[test]
fn mint_verify_and_expiry_at_the_edge() {
    let ring = Keyring::new([(1, key(1))], false).unwrap();
    let t = ring.mint(d(42), NOW, NOW + DAY).unwrap();
    assert!(t.starts_with("hf2.1.42.1800000000.1800086400."), "{t}");
    assert!(t.len() <= TOKEN_V2_LEN_MAX);
    let c = ring.verify(&t, NOW, &none()).unwrap();
    assert_eq!(
        c,
        Claims {
            device_id: d(42),
            key_id: 1,
            issued_s: NOW,
            expires_s: Some(NOW + DAY)
        }
    );
    assert!(ring.verify(&t, NOW + DAY - 1, &none()).is_ok());
    assert_eq!(
        ring.verify(&t, NOW + DAY, &none()),
        Err(TokenError::Expired {
            expires_s: NOW + DAY
        })
    );
}

#[test]
fn rotation_overlaps_then_retires() {
    let old = Keyring::new([(1, key(1))], false).unwrap();
    let issued_with_old = old.mint(d(7), NOW, NOW + 30 * DAY).unwrap();
    // Rotate: key 2 signs from now on, key 1 still verifies what it signed.
    let both = Keyring::new([(1, key(1)), (2, key(2))], false).unwrap();
    assert_eq!(both.signing_key_id(), Some(2));
    let issued_with_new = both.mint(d(7), NOW, NOW + 30 * DAY).unwrap();
    assert!(issued_with_new.starts_with("hf2.2."));
    assert!(both.verify(&issued_with_old, NOW, &none()).is_ok());
    assert!(both.verify(&issued_with_new, NOW, &none()).is_ok());
    // Retire key 1: its tokens are refused, key 2's still verify.
    let new = Keyring::new([(2, key(2))], false).unwrap();
    assert_eq!(
        new.verify(&issued_with_old, NOW, &none()),
        Err(TokenError::UnknownKey { key_id: 1 })
    );
    assert!(new.verify(&issued_with_new, NOW, &none()).is_ok());
}

#[test]
fn tampering_with_any_field_breaks_the_signature() {
    let ring = Keyring::new([(1, key(1)), (2, key(2))], false).unwrap();
    let t = ring.mint(d(5), NOW, NOW + DAY).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let forged = [
        format!("hf2.1.{}.{}.{}.{}", parts[2], parts[3], parts[4], parts[5]),
        format!("hf2.2.6.{}.{}.{}", parts[3], parts[4], parts[5]),
        format!("hf2.2.5.{}.{}.{}", NOW - 1, parts[4], parts[5]),
        format!("hf2.2.5.{}.{}.{}", parts[3], NOW + 10 * DAY, parts[5]),
    ];
    for f in forged {
        assert_eq!(
            ring.verify(&f, NOW, &none()),
            Err(TokenError::BadSignature),
            "{f}"
        );
    }
    for bad in [
        "hf2.2.5.1.2",
        "hf2.02.5.1.2.00",
        "hf2.70000.5.1.2.00",
        "hf3.2.5.1.2.00",
        "",
    ] {
        assert!(ring.verify(bad, NOW, &none()).is_err(), "{bad}");
    }
    assert_eq!(
        ring.verify(&format!("hf2.0.5.1.{}.{}", NOW + 1, parts[5]), NOW, &none()),
        Err(TokenError::UnknownKey { key_id: 0 }),
        "the legacy key never signs v2"
    );
    let long = "9".repeat(TOKEN_V2_LEN_MAX + 1);
    assert!(matches!(
        ring.verify(&format!("hf2.{long}"), NOW, &none()),
        Err(TokenError::TooLong { .. })
    ));
}

#[test]
fn revocation_covers_tokens_issued_before_its_time() {
    let ring = Keyring::new([(0, key(9)), (1, key(1))], true).unwrap();
    let before = ring.mint(d(3), NOW - DAY, NOW + DAY).unwrap();
    let after = ring.mint(d(3), NOW + 10, NOW + DAY).unwrap();
    let other = ring.mint(d(4), NOW - DAY, NOW + DAY).unwrap();
    let v1 = key(9).mint(d(3));
    let mut revoked = Revocations::default();
    revoked.devices.insert(d(3), NOW);
    assert_eq!(
        ring.verify(&before, NOW, &revoked),
        Err(TokenError::Revoked)
    );
    assert!(ring.verify(&after, NOW + 20, &revoked).is_ok());
    assert!(ring.verify(&other, NOW, &revoked).is_ok());
    assert_eq!(ring.verify(&v1, NOW, &revoked), Err(TokenError::Revoked));
}

#[test]
fn v1_tokens_only_with_the_legacy_key_and_when_accepted() {
    let legacy = key(9);
    let v1 = legacy.mint(d(8));
    let accepting = Keyring::new([(0, legacy.clone()), (1, key(1))], true).unwrap();
    let c = accepting.verify(&v1, NOW, &none()).unwrap();
    assert_eq!((c.device_id, c.key_id, c.expires_s), (d(8), 0, None));
    let strict = Keyring::new([(0, legacy.clone()), (1, key(1))], false).unwrap();
    assert_eq!(
        strict.verify(&v1, NOW, &none()),
        Err(TokenError::VersionNotAccepted)
    );
    assert_eq!(
        Keyring::new([(0, legacy)], false).unwrap_err(),
        KeyringError::OnlyLegacy
    );
    assert_eq!(
        Keyring::new(Vec::<(u16, TokenKey)>::new(), true).unwrap_err(),
        KeyringError::Empty
    );
    let only_legacy = Keyring::new([(0, key(9))], true).unwrap();
    assert_eq!(only_legacy.mint(d(1), NOW, NOW + 1), None);
}

#[test]
fn confirm_secrets_are_per_device_and_independent_of_tokens() {
    let master = ConfirmMasterKey::from_bytes(&[3; TOKEN_KEY_LEN]).unwrap();
    assert_eq!(master.secret(d(1)), master.secret(d(1)));
    assert_ne!(master.secret(d(1)), master.secret(d(2)));
    let other = ConfirmMasterKey::from_bytes(&[4; TOKEN_KEY_LEN]).unwrap();
    assert_ne!(master.secret(d(1)), other.secret(d(1)));
    assert!(ConfirmMasterKey::from_bytes(&[0; 3]).is_err());
}
