//! Storage stage benches: H3 indexing, Arrow + Parquet encoding, WAL record encoding.
//!
//! Run with `cargo bench --bench storage`. Throughput is reported in fixes
//! (rows) per second.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_main};
use h3o::Resolution;
use storage::batch::RowBuffer;
use storage::writer::{ParquetOptions, encode_parquet};
use storage::{ABSENT_U32, FixBatch, index, wal};

const BATCH_FIXES: usize = 50;

/// A 50-fix batch of a device moving about 10 m between fixes, or standing still.
fn batch(device_id: u64, seq: u64, moving: bool) -> FixBatch {
    let step = if moving { 1_000 } else { 0 };
    let t0 = 1_795_561_200_000 + seq as i64 * 50_000;
    FixBatch {
        device_id: fix::DeviceId::try_from(device_id).expect("valid device id"),
        batch_seq: seq,
        received_at_ms: t0 + 50_000,
        fixes: fix::Fixes {
            time_ms: (0..BATCH_FIXES as i64).map(|i| t0 + i * 1_000).collect(),
            lat_e7: (0..BATCH_FIXES as i32)
                .map(|i| 488_566_000 + (device_id as i32 % 1_000) * 10_000 + i * step)
                .collect(),
            lon_e7: (0..BATCH_FIXES as i32)
                .map(|i| 23_522_000 - (device_id as i32 % 1_000) * 7_000 + i * step)
                .collect(),
            accuracy_cm: (0..BATCH_FIXES as u32)
                .map(|i| if i % 10 == 0 { ABSENT_U32 } else { 400 })
                .collect(),
            speed_cmps: vec![if moving { 1_000 } else { 0 }; BATCH_FIXES],
            ..fix::Fixes::default()
        },
        h3: Vec::new(),
    }
}

/// A 50-fix batch moving `step_e7` (1e-7 degrees) north-east per fix.
fn track(step_e7: i32) -> FixBatch {
    let mut b = batch(7, 1, false);
    for i in 0..BATCH_FIXES {
        b.fixes.lat_e7[i] = 488_566_000 + i as i32 * step_e7;
        b.fixes.lon_e7[i] = 23_522_000 + i as i32 * step_e7;
    }
    b
}

fn bench_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage/h3_index_50_fixes");
    group.throughput(Throughput::Elements(BATCH_FIXES as u64));
    // index_batch (exact shortcuts: same position, inscribed cap) against h3o for every
    // fix, in the same run: walking ~1.4 m, cycling ~5 m, driving ~15 m, fast ~40 m a fix.
    let tracks = [
        ("stationary", batch(7, 1, false)),
        ("moving", batch(7, 1, true)),
        ("walk_1m", track(90)),
        ("cycle_5m", track(320)),
        ("drive_15m", track(960)),
        ("fast_40m", track(2_600)),
    ];
    for (name, input) in tracks {
        group.bench_function(format!("indexer/{name}"), |b| {
            b.iter_batched_ref(
                || input.clone(),
                |batch| index::index_batch(black_box(batch), Resolution::Ten),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("h3o_every_fix/{name}"), |b| {
            b.iter(|| {
                let f = &input.fixes;
                let mut acc = 0u64;
                for (&lat, &lon) in f.lat_e7.iter().zip(&f.lon_e7) {
                    acc ^= u64::from(index::cell_of(lat, lon, Resolution::Ten));
                }
                black_box(acc)
            })
        });
    }
    group.finish();
}

fn rows_100k() -> RowBuffer {
    let mut rows = RowBuffer::default();
    for n in 0..100_000 / BATCH_FIXES {
        let mut b = batch(n as u64 % 5_000 + 1, n as u64 / 5_000 + 1, true);
        index::index_batch(&mut b, Resolution::Ten);
        rows.push_batch(&b);
    }
    rows
}

fn bench_parquet(c: &mut Criterion) {
    let rows = rows_100k();
    let opts = ParquetOptions {
        zstd_level: 3,
        row_group_rows_max: 131_072,
    };
    let mut group = c.benchmark_group("storage/encode_100k_rows");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.sample_size(10);
    group.bench_function("sort_and_arrow", |b| {
        b.iter(|| {
            let order = rows.sort_order();
            black_box(rows.to_record_batch(&order).expect("valid rows"))
        })
    });
    let record_batch = rows
        .to_record_batch(&rows.sort_order())
        .expect("valid rows");
    group.bench_function("parquet_zstd3", |b| {
        b.iter(|| black_box(encode_parquet(&record_batch, opts).expect("encodes")))
    });
    group.finish();
}

fn bench_wal(c: &mut Criterion) {
    let mut input = batch(7, 1, true);
    index::index_batch(&mut input, Resolution::Ten);
    let mut group = c.benchmark_group("storage/wal_encode_record_50_fixes");
    group.throughput(Throughput::Elements(BATCH_FIXES as u64));
    let mut out = Vec::with_capacity(wal::record_len(&input));
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            wal::encode_record(black_box(&input), 42, &mut out);
            black_box(out.len())
        })
    });
    let mut segment = Vec::new();
    wal::encode_header(1, &mut segment);
    for lsn in 1..=100 {
        wal::encode_record(&input, lsn, &mut segment);
    }
    group.throughput(Throughput::Elements(100 * BATCH_FIXES as u64));
    group.bench_function("decode_segment_100_records", |b| {
        b.iter(|| black_box(wal::decode_segment(black_box(&segment)).0.len()))
    });
    group.finish();
}

// A private module: `criterion_group!` generates an undocumented `pub fn`.
mod entry {
    use super::{bench_index, bench_parquet, bench_wal};
    criterion::criterion_group!(benches, bench_index, bench_parquet, bench_wal);
}
criterion_main!(entry::benches);
