//! Silence table benches (elements = devices): `scan` over 1M and 10M tracked devices, all
//! reporting and with 1% silent (the devices each scan must judge again), plus the
//! first scan after 1% cross the warning threshold (one shot, printed), the same 1% silent
//! together with scans every 10 s through their crossing (slowest approach scan and the
//! crossing scan, printed), and `record_fix` on
//! the same tables (ns per update). Also prints `memory_bytes` and the RSS the table added.
//!
//! Run: `cargo bench --bench silence` (the 10M tables take ~320 MB each and a few seconds to
//! fill; they are built one after the other).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use silence::{Policy, SilenceEvent, SilenceTable};

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
    }
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

/// Criterion's entry points (private, so the generated `pub fn` needs no doc).
mod entry {
    criterion::criterion_group!(benches, super::silence);
}

criterion_main!(entry::benches);
