use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;

use super::*;
use crate::timeline::SlotReport;

fn args(extra: &[&str]) -> HostileArgs {
    let mut argv = vec![
        "hexflow-hostile",
        "--server",
        "127.0.0.1:4433",
        "--ca",
        "ca.pem",
        "--data-dir",
        "data",
        "--attack",
        "no-hello",
    ];
    argv.extend_from_slice(extra);
    HostileArgs::try_parse_from(argv).unwrap()
}

fn phase(attempts: u64, connected: u64, p99_ms: f64, rss_max_mib: f64) -> LegitPhase {
    LegitPhase {
        connect_attempts: attempts,
        connected,
        connected_ratio: connected as f64 / attempts as f64,
        ack: LatencySummary {
            count: 100,
            p99: (p99_ms * 1000.0) as u64,
            ..LatencySummary::empty()
        },
        server: Some(ServerPhase {
            rss_max_mib,
            ..ServerPhase::default()
        }),
        ..LegitPhase::default()
    }
}

fn run_of(base: LegitPhase, during: LegitPhase, after: LegitPhase) -> BTreeMap<Phase, LegitPhase> {
    [
        (Phase::Baseline, base),
        (Phase::Attack, during),
        (Phase::After, after),
    ]
    .into_iter()
    .collect()
}

#[test]
fn phases_follow_the_schedule_and_the_last_one_lasts() {
    let t0 = Instant::now();
    let s = Schedule::new(t0, [1, 2, 3, 4]);
    let at = |ms| s.phase_at(t0 + Duration::from_millis(ms));
    assert_eq!(at(0), Phase::Warmup);
    assert_eq!(at(999), Phase::Warmup);
    assert_eq!(at(1_000), Phase::Baseline);
    assert_eq!(at(2_999), Phase::Baseline);
    assert_eq!(at(3_000), Phase::Attack);
    assert_eq!(at(6_000), Phase::After);
    assert_eq!(at(60_000), Phase::After);
    assert_eq!(s.end(), t0 + Duration::from_secs(10));
}

#[test]
fn the_verdict_is_the_issues_done_when_at_each_edge() {
    let a = args(&[]);
    let pass = verdict(
        &run_of(
            phase(100, 100, 10.0, 50.0),
            phase(100, 95, 20.0, 306.0),
            phase(100, 95, 9.0, 60.0),
        ),
        &a,
    );
    assert!(pass.pass, "{pass:?}");
    assert_eq!(pass.p99_ratio, 2.0);
    assert_eq!(pass.rss_growth_mib, 256.0);

    let v = verdict(
        &run_of(
            phase(100, 100, 10.0, 50.0),
            phase(100, 94, 10.0, 50.0),
            phase(100, 100, 9.0, 50.0),
        ),
        &a,
    );
    assert!(!v.connected_during && v.connected_after && !v.pass);
    let v = verdict(
        &run_of(
            phase(100, 100, 10.0, 50.0),
            phase(100, 100, 10.0, 50.0),
            phase(100, 90, 9.0, 50.0),
        ),
        &a,
    );
    assert!(
        v.connected_during && !v.connected_after && !v.pass,
        "a lockout after the attack fails"
    );
    let v = verdict(
        &run_of(
            phase(100, 100, 10.0, 50.0),
            phase(100, 100, 20.1, 50.0),
            phase(100, 100, 9.0, 50.0),
        ),
        &a,
    );
    assert!(!v.p99_within && !v.pass);
    let v = verdict(
        &run_of(
            phase(100, 100, 10.0, 50.0),
            phase(100, 100, 10.0, 50.0),
            phase(100, 100, 9.0, 306.1),
        ),
        &a,
    );
    assert!(
        !v.memory_bounded && !v.pass,
        "growth after the attack counts too"
    );
}

#[test]
fn a_phase_without_acks_fails_the_latency_criterion() {
    let mut during = phase(100, 100, 0.0, 50.0);
    during.ack.count = 0;
    let v = verdict(
        &run_of(
            phase(100, 100, 10.0, 50.0),
            during,
            phase(100, 100, 9.0, 50.0),
        ),
        &args(&[]),
    );
    assert!(!v.p99_within && !v.pass);
}

#[test]
fn flags_are_checked_at_their_edges() {
    assert!(args(&["--attack-s", "600"]).validate().is_ok());
    assert!(matches!(
        args(&["--attack-s", "601"]).validate(),
        Err(HostileError::Flag {
            flag: "attack-s",
            value: 601,
            ..
        })
    ));
    assert!(args(&["--attack-workers", "50000"]).validate().is_ok());
    assert!(args(&["--attack-workers", "50001"]).validate().is_err());
    assert!(args(&["--attack-workers", "0"]).validate().is_err());
    assert!(args(&["--legit-devices", "0"]).validate().is_err());
    assert!(args(&["--legit-rate", "49"]).validate().is_err());
}

#[test]
fn counts_add_by_name() {
    let c = Counts::default();
    c.add("a", 1);
    c.add("b", 2);
    c.add("a", 3);
    assert_eq!(
        c.snapshot(),
        BTreeMap::from([("a".to_owned(), 4), ("b".to_owned(), 2)])
    );
}

#[test]
fn the_bomb_is_small_on_the_wire_and_huge_inside() {
    let p = attack::bomb_payload();
    assert!(p.len() < 1024, "{} bytes", p.len());
    let inflated = zstd::decode_all(&p[..]).unwrap();
    assert_eq!(inflated.len(), 4_000_005);
}

fn slot(t_s: f64, cpu_s: Option<f64>, rss_kb: u64) -> SlotReport {
    SlotReport {
        t_s,
        batches: 0,
        fixes: 0,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        max_us: 0,
        server_cpu_s: cpu_s,
        server_rss_kb: cpu_s.map(|_| rss_kb),
    }
}

#[test]
fn server_phases_add_cpu_and_keep_the_rss_peak_of_their_own_seconds() {
    let t0 = Instant::now();
    let schedule = Schedule::new(t0, [1, 2, 1, 1]);
    let t = TimelineReport {
        slot_s: 1.0,
        load_end_s: 5.0,
        all_connected_at_s: None,
        all_devices_connected_at_s: None,
        slots: vec![
            slot(0.0, Some(0.5), 1024),
            slot(1.0, Some(0.25), 4096),
            slot(2.0, Some(0.5), 2048),
            slot(3.0, None, 0),
            slot(4.0, Some(1.0), 3072),
            // The drain after the schedule's end belongs to no phase.
            slot(5.0, Some(9.0), 99_999),
        ],
    };
    let [warmup, baseline, attack, after] = server_phases(&t, &schedule);
    assert_eq!(
        warmup,
        Some(ServerPhase {
            cpu_s: 0.5,
            rss_max_mib: 1.0,
            rss_end_mib: 1.0
        })
    );
    assert_eq!(
        baseline,
        Some(ServerPhase {
            cpu_s: 0.75,
            rss_max_mib: 4.0,
            rss_end_mib: 2.0
        })
    );
    assert_eq!(attack, None, "an unsampled phase has no figures");
    assert_eq!(
        after,
        Some(ServerPhase {
            cpu_s: 1.0,
            rss_max_mib: 3.0,
            rss_end_mib: 3.0
        })
    );
}
