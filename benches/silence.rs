//! Silence table benches: `record_fix` on a hot table (ns per update) and a full `scan` over
//! 1M and 10M tracked devices of which ~all are reporting (elements = devices).
//!
//! Run: `cargo bench --bench silence` (the 10M table takes ~320 MB and a few seconds to fill).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use ingest::silence::{Policy, SilenceEvent, SilenceTable};

/// Scan time ("now") of the scan benches, Unix seconds.
const NOW_S: u32 = 1_800_000_000;
/// One device in this many is silent (expired) in the scan benches; the rest report.
const SILENT_ONE_IN: u64 = 1_000;

fn policy() -> Policy {
    Policy::new(2 * 86_400, 3 * 86_400).expect("valid thresholds")
}

/// A table with `devices` devices (ids `1..=devices`), all with a fresh fix except one in
/// `SILENT_ONE_IN`, already scanned once so every level change is behind it.
fn filled(devices: u64) -> SilenceTable {
    let table = SilenceTable::with_capacity(devices as usize).expect("valid size");
    for id in 1..=devices {
        let fix_s = if id % SILENT_ONE_IN == 0 {
            NOW_S - 4 * 86_400
        } else {
            NOW_S - 60
        };
        table
            .record_fix(id, fix_s)
            .expect("sized for these devices");
    }
    let mut events = Vec::new();
    table
        .scan(NOW_S, &policy(), &mut events)
        .expect("single scanner");
    assert_eq!(events.len() as u64, devices / SILENT_ONE_IN);
    table
}

fn record(c: &mut Criterion) {
    const DEVICES: u64 = 1_000_000;
    let table = filled(DEVICES);
    let mut group = c.benchmark_group("silence_record");
    group.throughput(Throughput::Elements(1));
    // Every update raises the device's time: the full fetch_max path.
    let mut i = 0u64;
    group.bench_function("record_fix_newer", |b| {
        b.iter(|| {
            i += 1;
            let id = i % DEVICES + 1;
            let fix_s = NOW_S + (i / DEVICES) as u32;
            table.record_fix(black_box(id), black_box(fix_s))
        })
    });
    // The same second again (several frames per second from one device): a load, no RMW.
    let mut j = 0u64;
    group.bench_function("record_contact_same_second", |b| {
        b.iter(|| {
            j += 1;
            table.record_contact(black_box(j % DEVICES + 1), black_box(NOW_S))
        })
    });
    group.finish();
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("silence_scan");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let policy = policy();
    for devices in [1_000_000u64, 10_000_000] {
        // Set up once per size, not per iteration.
        let table = filled(devices);
        let mut events: Vec<SilenceEvent> = Vec::new();
        group.throughput(Throughput::Elements(devices));
        group.bench_with_input(BenchmarkId::from_parameter(devices), &table, |b, table| {
            b.iter(|| {
                events.clear();
                let stats = table
                    .scan(black_box(NOW_S), &policy, &mut events)
                    .expect("single scanner");
                assert_eq!(stats.events, 0);
                stats
            })
        });
        println!(
            "silence table for {devices} devices: {} bytes ({:.2} B/device)",
            table.memory_bytes(),
            table.memory_bytes() as f64 / devices as f64
        );
    }
    group.finish();
}

/// Criterion's entry points (private, so the generated `pub fn` needs no doc).
mod entry {
    criterion::criterion_group!(benches, super::record, super::scan);
}

criterion_main!(entry::benches);
