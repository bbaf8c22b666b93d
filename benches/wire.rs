//! Wire codec throughput: encoding and decoding a 50-fix BATCH (zstd level 3 and raw), and
//! the cost of refusing a zstd/protobuf bomb (issue 11: one packed column of 4 000 000 zero
//! varints in ~150 bytes, refused TOO_MANY_FIXES from the element count after one 64 KiB
//! output chunk) beside a valid batch at `batch_fixes_max`.

use criterion::{Criterion, Throughput, criterion_main};
use ingest::wire::{self, Fix, Fixes, Limits};
use std::hint::black_box;
use std::io::Write;

const NOW_MS: i64 = 1_767_225_600_000;
const FIXES: usize = 50;

/// A realistic track: one fix per second, small moves, all optional fields present.
fn track() -> Fixes {
    let mut f = Fixes::default();
    for i in 0..FIXES as i64 {
        f.push(&Fix {
            accuracy_cm: Some(300 + (i as u32 % 7) * 10),
            altitude_cm: Some(3_500 + i as i32),
            speed_cmps: Some(1_200 + (i as u32 % 5)),
            heading_cdeg: Some(9_000 + (i as u32 % 11)),
            ..Fix::from_degrees(
                NOW_MS - 60_000 + i * 1_000,
                48.8566 + i as f64 * 1e-5,
                2.3522 + i as f64 * 2e-5,
            )
        });
    }
    f
}

fn bench_wire(c: &mut Criterion) {
    let fixes = track();
    let limits = Limits::default();
    let mut group = c.benchmark_group("wire_batch_50");
    group.throughput(Throughput::Elements(FIXES as u64));

    let mut out = Vec::with_capacity(4096);
    group.bench_function("encode_zstd3", |b| {
        b.iter(|| {
            out.clear();
            wire::encode_batch_frame(black_box(7), black_box(&fixes), 3, &mut out)
                .expect("valid fixes");
            black_box(out.len())
        })
    });
    group.bench_function("encode_raw", |b| {
        b.iter(|| {
            out.clear();
            wire::encode_batch_frame_raw(black_box(7), black_box(&fixes), &mut out)
                .expect("valid fixes");
            black_box(out.len())
        })
    });

    let mut zstd_frame = Vec::new();
    wire::encode_batch_frame(7, &fixes, 3, &mut zstd_frame).expect("valid fixes");
    let mut raw_frame = Vec::new();
    wire::encode_batch_frame_raw(7, &fixes, &mut raw_frame).expect("valid fixes");
    for (name, frame) in [("decode_zstd3", &zstd_frame), ("decode_raw", &raw_frame)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                wire::decode_batch(black_box(&frame[wire::FRAME_HEADER_LEN..]), &limits, NOW_MS)
                    .expect("valid")
            })
        });
    }
    group.finish();
}

/// A BATCH body (seq 9, zstd) whose payload is one packed `time_ms` column of `zeros` zero
/// varints.
fn packed_zero_bomb(zeros: usize) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    let mut header = vec![0x0a]; // field 1, length-delimited
    let mut len = zeros as u64;
    while len >= 0x80 {
        header.push(len as u8 | 0x80);
        len >>= 7;
    }
    header.push(len as u8);
    enc.write_all(&header).expect("write");
    enc.write_all(&vec![0u8; zeros]).expect("write");
    let mut body = 9u64.to_be_bytes().to_vec();
    body.push(1);
    body.extend(enc.finish().expect("finish"));
    body
}

fn bench_bomb(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("wire_bomb");
    let bomb = packed_zero_bomb(4_000_000);
    group.throughput(Throughput::Bytes(bomb.len() as u64));
    group.bench_function("refuse_packed_zero_bomb_4m", |b| {
        b.iter(|| {
            let e = wire::decode_batch(black_box(&bomb), &limits, NOW_MS).expect_err("a bomb");
            assert_eq!(e.status, wire::Status::TooManyFixes);
        })
    });
    // For scale: a valid batch of batch_fixes_max fixes, decoded in full.
    let mut fixes = Fixes::default();
    for i in 0..limits.batch_fixes_max as i64 {
        fixes.push(&Fix::from_degrees(NOW_MS - 60_000 + i, 48.8566, 2.3522));
    }
    let mut full = Vec::new();
    wire::encode_batch_frame(9, &fixes, 3, &mut full).expect("valid fixes");
    group.throughput(Throughput::Bytes(full.len() as u64));
    group.bench_function("decode_valid_10k_fixes", |b| {
        b.iter(|| {
            wire::decode_batch(black_box(&full[wire::FRAME_HEADER_LEN..]), &limits, NOW_MS)
                .expect("valid")
        })
    });
    group.finish();
}

// A private module: `criterion_group!` generates an undocumented `pub fn`.
mod entry {
    criterion::criterion_group!(benches, super::bench_wire, super::bench_bomb);
}
criterion_main!(entry::benches);
