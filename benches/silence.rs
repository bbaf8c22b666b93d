//! Silence table benches (elements = devices): `scan` over 1M and 10M tracked devices, all
//! reporting and with 1% silent (the devices each scan must judge again), plus the
//! first scan after 1% cross the warning threshold (one shot, printed), the same 1% silent
//! together with scans every 10 s through their crossing (slowest approach scan and the
//! crossing scan, printed), and `record_fix` on
//! the same tables (ns per update). Also prints `memory_bytes` and the RSS the table added.
//!
//! Run: `cargo bench --bench silence` (the 10M tables take ~320 MB each and a few seconds to
//! fill; they are built one after the other). With `SILENCE_PROFILE_CROSSINGS=<rounds>` it
//! runs only repeated crossing scans on one 10M table, for a profiler:
//! `bench/profile_silence.sh`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use silence::{Policy, PolicySet, SilenceConfig, SilenceEvent, SilencePolicy, SilenceTable};

/// Scan time ("now") of the scan benches, Unix seconds.
const NOW_S: u32 = 1_800_000_000;
/// Warning threshold of the bench policy.
const WARN_S: u32 = 2 * 86_400;
/// Table sizes.
const SIZES: [u64; 2] = [1_000_000, 10_000_000];

fn policy() -> Policy {
    Policy::new(u64::from(WARN_S), 3 * 86_400).expect("valid thresholds")
}

/// Resident set size of this process (Linux `/proc/self/status`), bytes; 0 elsewhere.
fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A table with `devices` devices (ids `1..=devices`), all with the fix `fresh_s` except one
/// in `silent_one_in` (if any) with `silent_s`, already scanned once at `NOW_S` so every level
/// change is behind it.
fn filled(devices: u64, silent_one_in: Option<u64>, fresh_s: u32, silent_s: u32) -> SilenceTable {
    let table = SilenceTable::with_capacity(devices as usize).expect("valid size");
    for id in 1..=devices {
        let silent = silent_one_in.is_some_and(|n| id % n == 0);
        let fix_s = if silent { silent_s } else { fresh_s };
        table
            .record_fix(id, fix_s)
            .expect("sized for these devices");
    }
    let mut events = Vec::new();
    table
        .scan(NOW_S, &policy(), &mut events)
        .expect("single scanner");
    table
}

fn scan_bench(c: &mut Criterion, name: &str, table: &SilenceTable, devices: u64) {
    let mut group = c.benchmark_group(format!("silence_scan_{name}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(devices));
    let policy = policy();
    let mut events: Vec<SilenceEvent> = Vec::new();
    group.bench_with_input(BenchmarkId::from_parameter(devices), table, |b, table| {
        b.iter(|| {
            events.clear();
            let stats = table
                .scan(black_box(NOW_S), &policy, &mut events)
                .expect("single scanner");
            assert_eq!(stats.events, 0);
            stats
        })
    });
    group.finish();
}

fn record_bench(c: &mut Criterion, table: &SilenceTable, devices: u64) {
    let mut group = c.benchmark_group("silence_record");
    group.throughput(Throughput::Elements(1));
    // Every update raises the device's time: the full fetch_max path. Ids are visited in a
    // scattered order (an odd multiplier modulo the size) so a large table misses the cache
    // as a real fleet's arrivals would.
    let mut i = 0u64;
    group.bench_function(BenchmarkId::new("record_fix_newer", devices), |b| {
        b.iter(|| {
            i += 1;
            let id = i.wrapping_mul(0x9E37_79B9) % devices + 1;
            let fix_s = NOW_S + 1 + (i / devices) as u32;
            table.record_fix(black_box(id), black_box(fix_s))
        })
    });
    // The same second again (several frames per second from one device): a load, no RMW.
    let mut j = 0u64;
    group.bench_function(
        BenchmarkId::new("record_contact_same_second", devices),
        |b| {
            b.iter(|| {
                j += 1;
                let id = j.wrapping_mul(0x9E37_79B9) % devices + 1;
                table.record_contact(black_box(id), black_box(NOW_S))
            })
        },
    );
    group.finish();
}

fn silence(c: &mut Criterion) {
    let policy = policy();
    if let Ok(rounds) = std::env::var("SILENCE_PROFILE_CROSSINGS") {
        crossings_for_a_profile(rounds.parse().expect("SILENCE_PROFILE_CROSSINGS: a count"));
        return;
    }
    for devices in SIZES {
        // All reporting.
        let rss_before = rss_bytes();
        let table = filled(devices, None, NOW_S - 60, 0);
        let rss_added = rss_bytes().saturating_sub(rss_before);
        println!(
            "silence table for {devices} devices: memory_bytes {} ({:.2} B/device), RSS added \
             {rss_added} ({:.2} B/device)",
            table.memory_bytes(),
            table.memory_bytes() as f64 / devices as f64,
            rss_added as f64 / devices as f64,
        );
        scan_bench(c, "all_reporting", &table, devices);
        drop(table);

        // 1% due: silent past the expiry, so every scan must judge them again.
        let table = filled(devices, Some(100), NOW_S - 60, NOW_S - 4 * 86_400);
        scan_bench(c, "1pct_silent", &table, devices);
        record_bench(c, &table, devices);
        drop(table);

        // One shot: 1% of the devices cross the warning threshold at this scan (their fixes
        // were reporting at the previous one), 99% are fresh.
        let crossing_s = NOW_S - WARN_S + 10;
        let table = filled(devices, Some(100), NOW_S - 60, crossing_s);
        let mut events = Vec::new();
        let start = Instant::now();
        let stats = table
            .scan(NOW_S + 10, &policy, &mut events)
            .expect("single scanner");
        let elapsed = start.elapsed();
        assert_eq!(stats.events as u64, devices / 100);
        println!(
            "silence scan, {devices} devices, 1% crossing the warning now: {:.2} ms, {} events, \
             {} slots visited, {} blocks skipped",
            elapsed.as_secs_f64() * 1e3,
            stats.events,
            stats.slots_visited,
            stats.blocks_skipped
        );
        let start = Instant::now();
        let stats = table
            .scan(NOW_S + 11, &policy, &mut events)
            .expect("single scanner");
        println!(
            "silence scan, {devices} devices, the scan after that: {:.2} ms, {} slots visited",
            start.elapsed().as_secs_f64() * 1e3,
            stats.slots_visited
        );
        drop(table);
        cohort(devices, &policy);
        working_day_crossing(devices);
    }
}

/// The production policy engine with the strictest rule (`config/calendars/ru`, date
/// counting: warning "2 working days", expiry "more than 3 working days"): every device
/// silent since the same date crosses at the same local midnight, so this is how "1% cross at
/// once" happens in practice. Prepared per scan, as the scanner does (inside the timing).
fn working_day_policy() -> PolicySet {
    let toml = format!(
        r#"
default_policy = "ru"
calendars_dir = "{}/config/calendars"
[[policies]]
name = "ru"
warning = "2 working days"
expiry = "more than 3 working days"
calendar = "ru"
counting = "date"
"#,
        env!("CARGO_MANIFEST_DIR")
    );
    let config: SilenceConfig = toml::from_str(&toml).expect("bench silence config");
    config
        .policy_set()
        .expect("the ru calendar covers the bench's dates")
}

/// One shot with [`working_day_policy`]: 1% went silent on the same day (a fix at 12:00 UTC,
/// 15:00 MSK), scanned 10 s before their warning (reporting, held until it), then the scan at
/// the warning's midnight, timed.
fn working_day_crossing(devices: u64) {
    let set = working_day_policy();
    let silent_s = NOW_S - 86_400 - NOW_S % 86_400 + 12 * 3_600;
    let warning_s = set
        .prepare(silent_s + 60)
        .judgement_until_s(100, silent_s, 0, silent_s + 60);
    assert!(
        warning_s > silent_s + 86_400,
        "a working-day warning, not before a day"
    );
    let table = SilenceTable::with_capacity(devices as usize).expect("valid size");
    for id in 1..=devices {
        let fix_s = if id % 100 == 0 {
            silent_s
        } else {
            warning_s - 60
        };
        table
            .record_fix(id, fix_s)
            .expect("sized for these devices");
    }
    let mut events = Vec::new();
    let before_s = warning_s - 10;
    let stats = table
        .scan(before_s, &set.prepare(before_s), &mut events)
        .expect("single scanner");
    assert_eq!(stats.events, 0);
    let start = Instant::now();
    let stats = table
        .scan(warning_s, &set.prepare(warning_s), &mut events)
        .expect("single scanner");
    let elapsed = start.elapsed();
    assert_eq!(stats.events as u64, devices / 100);
    println!(
        "silence scan, {devices} devices, working-day policy (ru, date counting), 1% crossing \
         the warning at local midnight: {:.2} ms, {} events, {} slots visited",
        elapsed.as_secs_f64() * 1e3,
        stats.events,
        stats.slots_visited
    );
}

/// The realistic form of "1% cross at once": the 1% went silent together, beyond the scan's
/// look-ahead at the first scan, and the scanner runs every 10 s (the default
/// `scan_interval_ms`) until and through their warning. Prints the slowest scan of the
/// approach and the crossing scan.
fn cohort(devices: u64, policy: &Policy) {
    const STEP_S: u32 = 10;
    let lead_s = 700;
    let silent_s = NOW_S - WARN_S + lead_s;
    let table = filled(devices, Some(100), NOW_S - 60, silent_s);
    let mut events = Vec::new();
    let (mut slowest_ms, mut scans) = (0f64, 0u32);
    let mut now_s = NOW_S + STEP_S;
    while now_s < NOW_S + lead_s {
        let start = Instant::now();
        let stats = table
            .scan(now_s, policy, &mut events)
            .expect("single scanner");
        slowest_ms = slowest_ms.max(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(stats.events, 0);
        scans += 1;
        now_s += STEP_S;
    }
    let start = Instant::now();
    let stats = table
        .scan(now_s, policy, &mut events)
        .expect("single scanner");
    let elapsed = start.elapsed();
    assert_eq!(stats.events as u64, devices / 100);
    println!(
        "silence scan, {devices} devices, 1% silent together, scans every {STEP_S} s: slowest of \
         the {scans} scans before the crossing {slowest_ms:.2} ms; the crossing scan {:.2} ms, \
         {} events, {} slots visited",
        elapsed.as_secs_f64() * 1e3,
        stats.events,
        stats.slots_visited
    );
}

/// Profiling mode (`SILENCE_PROFILE_CROSSINGS=<rounds>`, see `bench/profile_silence.sh`):
/// one 10M table in which the same 1% cross, `rounds` times: the warning, then the expiry,
/// then they send a fix again (a newer fix wakes their held blocks) and the next scan, 10 s
/// before their next warning, reports them resumed and holds them until it. Three scans with
/// 100,000 events each per round, each timed and printed; a profile of this process is then
/// mostly crossing scans (the fill and the fixes between rounds are separate symbols).
fn crossings_for_a_profile(rounds: u32) {
    let devices = SIZES[1];
    let policy = policy();
    let expiry_s = 3 * 86_400;
    let mut silent_s = NOW_S - WARN_S + 10;
    // The 99% report "in the future" (as a fleet that keeps reporting would, without the
    // fixes between rounds): their blocks' floors stay ahead of every round's window.
    let fresh_s = NOW_S + 100 * 86_400;
    let table = filled(devices, Some(100), fresh_s, silent_s);
    let mut events = Vec::new();
    let mut scan = |now_s: u32| {
        events.clear();
        let start = Instant::now();
        let stats = table
            .scan(now_s, &policy, &mut events)
            .expect("single scanner");
        assert_eq!(stats.events as u64, devices / 100);
        start.elapsed().as_secs_f64() * 1e3
    };
    assert!(u64::from(silent_s) + u64::from(rounds) * 4 * 86_400 < u64::from(fresh_s));
    for round in 0..rounds {
        let warned_ms = scan(silent_s + WARN_S);
        let expired_ms = scan(silent_s + expiry_s);
        // The 1% report again.
        silent_s += expiry_s + 60;
        for id in (100..=devices).step_by(100) {
            table.record_fix(id, silent_s).expect("known device");
        }
        let resumed_ms = scan(silent_s + WARN_S - 10);
        println!(
            "round {round}: warning crossing {warned_ms:.2} ms, expiry crossing \
             {expired_ms:.2} ms, resumed (held until the warning) {resumed_ms:.2} ms"
        );
    }
}

/// Criterion's entry points (private, so the generated `pub fn` needs no doc).
mod entry {
    criterion::criterion_group!(benches, super::silence);
}

criterion_main!(entry::benches);
