//! Device identity in the session (issue 11): version-2 tokens judged at the HELLO's wall
//! time (expiry at its edge, key rotation with an overlap), revocations, and the confirm
//! key that a v2 bearer token alone does not give.

use super::*;
use crate::auth::{Keyring, Revocations, TokenError};

/// The wall time of every test in Unix seconds.
const NOW_S: u64 = (T0_MS / 1000) as u64;

fn token_key(b: u8) -> TokenKey {
    TokenKey::from_bytes(&[b; 32]).expect("32-byte key")
}

/// A ring with the legacy key (v1 accepted) and keys 1 and 2 (2 signs).
fn ring_auth() -> Arc<Authenticator> {
    let ring =
        Keyring::new([(0, key()), (1, token_key(1)), (2, token_key(2))], true).expect("a ring");
    let confirm = ConfirmMasterKey::from_bytes(&[8; 32]).expect("32-byte key");
    Arc::new(Authenticator::new(ring, confirm))
}

fn hello_with(auth: &Arc<Authenticator>, token: &str) -> Pair {
    let mut p = Pair::with_auth(SessionConfig::default(), auth.clone());
    p.send(&hello_frame(token));
    p.drive();
    p
}

/// A session of device 5 opened with a v2 token that expires at `expires_s`, its log
/// cleared.
fn open_until(auth: &Arc<Authenticator>, expires_s: u64) -> Pair {
    let token = auth
        .keyring()
        .mint(dev(5), NOW_S - 100, expires_s)
        .expect("v2");
    let mut p = hello_with(auth, &token);
    assert_eq!(p.server.state(), SessionState::Open);
    p.log.clear();
    p
}

fn auth_failure(p: &Pair) -> Option<&TokenError> {
    p.log.iter().find_map(|o| match o {
        ServerOutput::AuthFailed { error } => Some(error),
        _ => None,
    })
}

#[test]
fn a_v2_token_is_welcomed_until_its_expiry_second() {
    let auth = ring_auth();
    let token = auth
        .keyring()
        .mint(dev(5), NOW_S - 100, NOW_S + 1)
        .expect("v2");
    let p = hello_with(&auth, &token);
    assert_eq!(p.server.state(), SessionState::Open);
    assert!(
        matches!(&p.log[0], ServerOutput::Authenticated { claims }
            if claims.key_id == 2 && claims.expires_s == Some(NOW_S + 1) && claims.device_id == dev(5)),
        "{:?}",
        p.log
    );
    // At its expiry second it is refused, with the reason kept for the server's log only.
    let token = auth.keyring().mint(dev(5), NOW_S - 100, NOW_S).expect("v2");
    let p = hello_with(&auth, &token);
    assert_closed(&p, Status::Unauthenticated, "");
    assert_eq!(
        auth_failure(&p),
        Some(&TokenError::Expired { expires_s: NOW_S })
    );
}

#[test]
fn tokens_of_an_older_key_verify_while_it_is_in_the_ring() {
    let auth = ring_auth();
    let only_key_1 = Keyring::new([(1, token_key(1))], false).expect("a ring");
    let older = only_key_1.mint(dev(5), NOW_S, NOW_S + 100).expect("v2");
    assert_eq!(hello_with(&auth, &older).server.state(), SessionState::Open);
    // Key 1 retired: its tokens are refused, key 2's still verify.
    let ring = Keyring::new([(2, token_key(2))], false).expect("a ring");
    let retired = Arc::new(Authenticator::new(
        ring,
        ConfirmMasterKey::from_bytes(&[8; 32]).expect("32-byte key"),
    ));
    let p = hello_with(&retired, &older);
    assert_eq!(
        auth_failure(&p),
        Some(&TokenError::UnknownKey { key_id: 1 })
    );
    let newer = retired
        .keyring()
        .mint(dev(5), NOW_S, NOW_S + 100)
        .expect("v2");
    assert_eq!(
        hello_with(&retired, &newer).server.state(),
        SessionState::Open
    );
    // That ring does not accept v1 tokens at all.
    let p = hello_with(&retired, &token(5));
    assert_eq!(auth_failure(&p), Some(&TokenError::VersionNotAccepted));
}

#[test]
fn a_revocation_refuses_the_devices_older_tokens_and_its_v1_token() {
    let auth = ring_auth();
    let old = auth
        .keyring()
        .mint(dev(5), NOW_S - 100, NOW_S + 100)
        .expect("v2");
    let mut revoked = Revocations::default();
    revoked.devices.insert(dev(5), NOW_S - 50);
    auth.set_revocations(revoked);
    let p = hello_with(&auth, &old);
    assert_closed(&p, Status::Unauthenticated, "");
    assert_eq!(auth_failure(&p), Some(&TokenError::Revoked));
    let fresh = auth
        .keyring()
        .mint(dev(5), NOW_S - 50, NOW_S + 100)
        .expect("v2");
    assert_eq!(hello_with(&auth, &fresh).server.state(), SessionState::Open);
    assert_eq!(
        auth_failure(&hello_with(&auth, &token(5))),
        Some(&TokenError::Revoked)
    );
    assert_eq!(
        hello_with(&auth, &token(6)).server.state(),
        SessionState::Open,
        "other devices are not affected"
    );
}

#[test]
fn with_a_v2_token_only_the_confirm_secret_signs_confirms() {
    let auth = ring_auth();
    let token = auth.keyring().mint(dev(5), NOW_S, NOW_S + 100).expect("v2");
    let mut p = Pair::with_auth(SessionConfig::default(), auth.clone());
    let id = raise(&p, 5);
    p.send(&hello_frame(&token));
    p.drive();
    assert_eq!(p.server.state(), SessionState::Open);
    // Whoever saw the token derives this key: it must not verify.
    let stolen = ConfirmKey::from_token(&token).confirm(id, ConfirmKind::Here, 0, 1);
    p.send(&confirm_frame(&stolen));
    p.drive();
    let secret = ConfirmKey::from_secret(&auth.confirm_secret(dev(5)));
    p.send(&confirm_frame(&secret.confirm(id, ConfirmKind::Here, 0, 2)));
    p.drive();
    assert_eq!(
        p.confirm_statuses(),
        [(id, Some(Status::InvalidSignature)), (id, Some(Status::Ok))]
    );
}

#[test]
fn an_open_session_ends_unauthenticated_when_its_token_expires() {
    let auth = ring_auth();
    let mut p = open_until(&auth, NOW_S + 2);
    p.send_batch(1, 1);
    p.drive();
    assert_eq!(
        p.server.poll_timeout(),
        Some(1_000 + 2_000),
        "the expiry is the next deadline"
    );
    p.advance(1_999);
    assert_eq!(p.server.state(), SessionState::Open);
    p.advance(1);
    assert_eq!(
        p.server.state(),
        SessionState::Draining,
        "the batch in flight is acked first"
    );
    assert_eq!(
        auth_failure(&p),
        Some(&TokenError::Expired {
            expires_s: NOW_S + 2
        })
    );
    p.answer(1, &SinkOutcome::ok());
    assert_eq!(p.acks().len(), 1);
    assert_closed(&p, Status::Unauthenticated, "token no longer valid");
}

#[test]
fn a_revocation_closes_an_open_session_at_its_next_frame() {
    let auth = ring_auth();
    let mut p = open_until(&auth, NOW_S + 3_600);
    let mut revoked = Revocations::default();
    revoked.devices.insert(dev(5), NOW_S);
    auth.set_revocations(revoked);
    let mut hb = vec![];
    wire::encode_heartbeat(&mut hb);
    p.send(&hb);
    p.drive();
    assert_eq!(auth_failure(&p), Some(&TokenError::Revoked));
    assert!(
        p.contacts().is_empty(),
        "a revoked device's frame is no contact"
    );
    assert_closed(&p, Status::Unauthenticated, "token no longer valid");
}
