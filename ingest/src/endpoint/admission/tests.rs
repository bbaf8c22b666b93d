//! Every admission rule at its edge, in simulated time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

/// A config where only the rule under test binds.
fn loose() -> EndpointConfig {
    EndpointConfig {
        handshakes_max: 1_000,
        retry_above_handshakes: 1_000,
        connections_per_source_max: 1_000,
        handshakes_per_source_per_s: 1_000,
        handshakes_per_source_burst: 1_000,
        login_failures_before_backoff: 1_000,
        sources_tracked_max: 100_000,
        login_failure_log_interval_ms: 0,
        ..EndpointConfig::default()
    }
}

const VALID: bool = true;
const UNPROVEN: bool = false;

#[test]
fn handshakes_in_progress_have_their_own_cap() {
    let cfg = EndpointConfig {
        handshakes_max: 2,
        retry_above_handshakes: 2,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(a.decide(0, ip(1), VALID), Decision::Accept);
    assert_eq!(a.decide(0, ip(2), VALID), Decision::Accept);
    assert_eq!(a.handshakes_in_progress(), 2);
    assert_eq!(
        a.decide(0, ip(3), VALID),
        Decision::Refuse(Refusal::HandshakesMax)
    );
    // A handshake that completes frees its unit; the connection stays counted per source.
    a.handshake_done(1, ip(1));
    assert_eq!(a.decide(1, ip(3), VALID), Decision::Accept);
    // One that ends during the handshake frees it too.
    a.closed(2, ip(2), true);
    assert_eq!(a.handshakes_in_progress(), 1);
    a.closed(2, ip(1), false);
    a.closed(2, ip(3), true);
    assert_eq!(a.handshakes_in_progress(), 0);
}

#[test]
fn retry_once_handshakes_reach_the_threshold_and_zero_means_always() {
    let cfg = EndpointConfig {
        retry_above_handshakes: 1,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(a.decide(0, ip(1), UNPROVEN), Decision::Accept, "0 < 1");
    assert_eq!(a.decide(0, ip(2), UNPROVEN), Decision::Retry, "1 >= 1");
    assert_eq!(a.decide(0, ip(2), VALID), Decision::Accept, "validated");
    assert_eq!(a.sources_tracked(), 2, "a Retry records nothing");
    let mut always = Admission::new(&EndpointConfig {
        retry_above_handshakes: 0,
        ..loose()
    });
    assert_eq!(always.decide(0, ip(1), UNPROVEN), Decision::Retry);
    assert_eq!(always.sources_tracked(), 0);
    assert_eq!(always.decide(0, ip(1), VALID), Decision::Accept);
}

#[test]
fn an_unproven_address_is_never_refused_only_retried() {
    let cfg = EndpointConfig {
        handshakes_max: 1,
        retry_above_handshakes: 1,
        connections_per_source_max: 1,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(a.decide(0, ip(1), VALID), Decision::Accept);
    // Over handshakes_max and over the per-source cap: a spoofed source gets a Retry.
    assert_eq!(a.decide(0, ip(2), UNPROVEN), Decision::Retry);
    assert_eq!(a.decide(0, ip(1), UNPROVEN), Decision::Retry);
    assert_eq!(a.sources_tracked(), 1);
}

#[test]
fn connections_per_source_are_capped_and_freed_on_close() {
    let cfg = EndpointConfig {
        connections_per_source_max: 2,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(a.decide(0, ip(1), VALID), Decision::Accept);
    assert_eq!(a.decide(0, ip(1), VALID), Decision::Accept);
    a.handshake_done(0, ip(1));
    assert_eq!(
        a.decide(0, ip(1), VALID),
        Decision::Refuse(Refusal::SourceConnections),
        "open connections count, not only handshakes"
    );
    assert_eq!(a.decide(0, ip(2), VALID), Decision::Accept, "other source");
    a.closed(5, ip(1), false);
    assert_eq!(
        a.decide(5, ip(1), VALID),
        Decision::Accept,
        "freed on close"
    );
}

#[test]
fn handshake_rate_per_source_is_a_token_bucket() {
    let cfg = EndpointConfig {
        handshakes_per_source_per_s: 2,
        handshakes_per_source_burst: 3,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    for _ in 0..3 {
        assert_eq!(a.decide(0, ip(1), VALID), Decision::Accept, "the burst");
        a.closed(0, ip(1), true);
    }
    assert_eq!(
        a.decide(0, ip(1), VALID),
        Decision::Refuse(Refusal::SourceRate)
    );
    assert_eq!(a.decide(0, ip(2), VALID), Decision::Accept, "own bucket");
    // 2/s: one token per 500 ms.
    assert_eq!(
        a.decide(499, ip(1), VALID),
        Decision::Refuse(Refusal::SourceRate)
    );
    assert_eq!(a.decide(500, ip(1), VALID), Decision::Accept);
    assert_eq!(
        a.decide(500, ip(1), VALID),
        Decision::Refuse(Refusal::SourceRate)
    );
    // A long pause refills up to the burst, not beyond.
    for _ in 0..3 {
        assert_eq!(a.decide(100_000, ip(1), VALID), Decision::Accept);
    }
    assert_eq!(
        a.decide(100_000, ip(1), VALID),
        Decision::Refuse(Refusal::SourceRate)
    );
}

/// Opens a connection from `from` at `t` that fails to log in.
fn fail_login(a: &mut Admission, t: u64, from: IpAddr) -> LoginFailed {
    assert_eq!(a.decide(t, from, VALID), Decision::Accept, "at {t}");
    a.handshake_done(t, from);
    let f = a.login_failed(t, from);
    a.closed(t, from, false);
    f
}

#[test]
fn failed_logins_back_the_source_off_doubling_up_to_the_max() {
    let cfg = EndpointConfig {
        login_failures_before_backoff: 3,
        login_backoff_initial_ms: 1_000,
        login_backoff_max_ms: 4_000,
        login_failures_forget_ms: 60_000,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    let mut t = 0;
    for expected in [1_000, 2_000, 4_000, 4_000] {
        assert_eq!(fail_login(&mut a, t, ip(1)).backoff_ms, None);
        assert_eq!(fail_login(&mut a, t, ip(1)).backoff_ms, None);
        assert_eq!(fail_login(&mut a, t, ip(1)).backoff_ms, Some(expected));
        assert_eq!(
            a.decide(t + expected - 1, ip(1), VALID),
            Decision::Refuse(Refusal::LoginBackoff)
        );
        assert_eq!(
            a.decide(t + expected - 1, ip(1), UNPROVEN),
            Decision::Retry,
            "a refusal goes only to a proven address"
        );
        assert_eq!(a.decide(t, ip(2), VALID), Decision::Accept, "others not");
        a.closed(t, ip(2), true);
        t += expected;
    }
    // Quiet for login_failures_forget_ms: the source starts over.
    t += 60_000;
    for _ in 0..2 {
        assert_eq!(fail_login(&mut a, t, ip(1)).backoff_ms, None);
    }
    assert_eq!(fail_login(&mut a, t, ip(1)).backoff_ms, Some(1_000));
}

#[test]
fn a_success_clears_the_failure_count() {
    let cfg = EndpointConfig {
        login_failures_before_backoff: 2,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(fail_login(&mut a, 0, ip(1)).backoff_ms, None);
    assert_eq!(a.decide(0, ip(1), VALID), Decision::Accept);
    a.login_succeeded(0, ip(1));
    a.closed(0, ip(1), true);
    assert_eq!(fail_login(&mut a, 0, ip(1)).backoff_ms, None, "count reset");
    assert_eq!(fail_login(&mut a, 0, ip(1)).backoff_ms, Some(1_000));
}

#[test]
fn a_success_decays_the_back_off_one_level() {
    let cfg = EndpointConfig {
        login_failures_before_backoff: 1,
        login_backoff_initial_ms: 1_000,
        login_backoff_max_ms: 1_000_000,
        login_failures_forget_ms: 1_000_000,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(fail_login(&mut a, 0, ip(1)).backoff_ms, Some(1_000));
    assert_eq!(fail_login(&mut a, 1_000, ip(1)).backoff_ms, Some(2_000));
    assert_eq!(fail_login(&mut a, 3_000, ip(1)).backoff_ms, Some(4_000));
    assert_eq!(a.decide(7_000, ip(1), VALID), Decision::Accept);
    a.login_succeeded(7_000, ip(1));
    a.closed(7_000, ip(1), true);
    assert_eq!(
        fail_login(&mut a, 7_000, ip(1)).backoff_ms,
        Some(4_000),
        "8 s without the success"
    );
}

#[test]
fn failed_login_lines_are_rate_limited_with_the_suppressed_count() {
    let cfg = EndpointConfig {
        login_failure_log_interval_ms: 1_000,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    assert_eq!(fail_login(&mut a, 0, ip(1)).log, Some(0));
    for t in [1, 500, 999] {
        assert_eq!(fail_login(&mut a, t, ip(2)).log, None);
    }
    assert_eq!(fail_login(&mut a, 1_000, ip(3)).log, Some(3));
    assert_eq!(fail_login(&mut a, 1_500, ip(3)).log, None);
    let mut every = Admission::new(&EndpointConfig {
        login_failure_log_interval_ms: 0,
        ..loose()
    });
    assert_eq!(fail_login(&mut every, 0, ip(1)).log, Some(0));
    assert_eq!(fail_login(&mut every, 0, ip(1)).log, Some(0));
}

#[test]
fn the_source_table_is_bounded_and_evicts_the_longest_idle() {
    let cfg = EndpointConfig {
        sources_tracked_max: 2,
        login_failures_before_backoff: 1,
        login_backoff_initial_ms: 10_000,
        login_backoff_max_ms: 10_000,
        ..loose()
    };
    let mut a = Admission::new(&cfg);
    // Source 1 is backed off, source 2 idle since later.
    assert_eq!(fail_login(&mut a, 0, ip(1)).backoff_ms, Some(10_000));
    assert_eq!(a.decide(1, ip(2), VALID), Decision::Accept);
    a.closed(1, ip(2), true);
    // Source 1 keeps trying: every decision touches it, so source 2 is the oldest.
    assert_eq!(
        a.decide(2, ip(1), VALID),
        Decision::Refuse(Refusal::LoginBackoff)
    );
    assert_eq!(a.decide(3, ip(3), VALID), Decision::Accept);
    assert_eq!(a.sources_tracked(), 2);
    assert_eq!(
        a.decide(4, ip(1), VALID),
        Decision::Refuse(Refusal::LoginBackoff),
        "the active attacker was not the one evicted"
    );
    // Source 3 holds a connection: it cannot be evicted; source 1 is (and forgotten).
    assert_eq!(a.decide(5, ip(4), VALID), Decision::Accept);
    assert_eq!(a.sources_tracked(), 2);
    assert_eq!(
        a.decide(6, ip(1), VALID),
        Decision::Refuse(Refusal::SourcesFull)
    );
    // Every tracked source has a connection open: a new one cannot be tracked.
    assert_eq!(
        a.decide(6, ip(5), VALID),
        Decision::Refuse(Refusal::SourcesFull)
    );
    a.closed(7, ip(3), true);
    assert_eq!(
        a.decide(8, ip(1), VALID),
        Decision::Accept,
        "back-off forgotten"
    );
    assert_eq!(a.sources_tracked(), 2);
}

#[test]
fn ipv6_sources_are_slash_64_prefixes_and_mapped_v4_is_v4() {
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().expect("an IPv6 address"));
    let (a, b, c) = (
        v6("2001:db8:1:2::1"),
        v6("2001:db8:1:2:ffff::9"),
        v6("2001:db8:1:3::1"),
    );
    assert_eq!(Source::from(a), Source::from(b));
    assert_ne!(Source::from(a), Source::from(c));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(Source::from(mapped), Source::from(ip(1)));
    let cfg = EndpointConfig {
        connections_per_source_max: 1,
        ..loose()
    };
    let mut adm = Admission::new(&cfg);
    assert_eq!(adm.decide(0, a, VALID), Decision::Accept);
    assert_eq!(
        adm.decide(0, b, VALID),
        Decision::Refuse(Refusal::SourceConnections),
        "same /64"
    );
    assert_eq!(adm.decide(0, c, VALID), Decision::Accept);
}
