//! Codec tests: round trips, every validation rule at its edge, hostile input.

use super::*;
use proptest::prelude::*;
use prost::Message;
use std::io::Write;

const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn fix(i: i64) -> Fix {
    Fix::from_degrees(
        NOW_MS - 60_000 + i * 1000,
        48.8566 + i as f64 * 1e-5,
        2.3522 - i as f64 * 1e-5,
    )
}

fn fixes(n: usize) -> Fixes {
    let mut f = Fixes::default();
    for i in 0..n {
        f.push(&fix(i as i64));
    }
    f
}

fn body_of(frame: &[u8]) -> &[u8] {
    let header: [u8; 5] = frame[..5].try_into().expect("frame has a header");
    let h = parse_frame_header(&header).expect("valid header");
    assert_eq!(h.frame_type, FrameType::Batch);
    assert_eq!(
        h.len as usize,
        frame.len() - 5,
        "header length matches the body"
    );
    &frame[5..]
}

/// A BATCH body: `seq`, the encoding byte (0: raw protobuf, 1: zstd), then `payload` as is.
fn batch_body(seq: u64, encoding: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = seq.to_be_bytes().to_vec();
    body.push(encoding);
    body.extend_from_slice(payload);
    body
}

/// A BATCH body holding an arbitrary protobuf `Batch` (deltas exactly as given).
fn raw_body(seq: u64, batch: &Batch) -> Vec<u8> {
    batch_body(seq, 0, &batch.encode_to_vec())
}

/// A BATCH body holding `payload` compressed with zstd.
fn zstd_body(seq: u64, payload: &[u8]) -> Vec<u8> {
    batch_body(seq, 1, &zstd::bulk::compress(payload, 3).expect("compress"))
}

fn reject(body: &[u8], limits: &Limits) -> BatchError {
    decode_batch(body, limits, NOW_MS).expect_err("must be rejected")
}

fn rejected_fixes(f: &Fixes, limits: &Limits) -> (Status, String) {
    let e = validate(f, limits, NOW_MS).expect_err("must be rejected");
    (Status::of_fix_error(&e), e.to_string())
}

#[test]
fn fixes_push_backfills_and_get_restores_options() {
    let mut f = Fixes::default();
    f.push(&fix(0));
    assert!(f.accuracy_cm.is_empty() && f.heading_cdeg.is_empty());
    let with = Fix {
        accuracy_cm: Some(500),
        heading_cdeg: Some(0),
        ..fix(1)
    };
    f.push(&with);
    f.push(&fix(2));
    assert_eq!(f.accuracy_cm, [ABSENT_U32, 500, ABSENT_U32]);
    assert_eq!(f.heading_cdeg, [ABSENT_U32, 0, ABSENT_U32]);
    assert!(f.altitude_cm.is_empty() && f.speed_cmps.is_empty());
    assert_eq!(f.get(0), fix(0));
    assert_eq!(f.get(1), with);
    assert_eq!(f.len(), 3);
    f.clear();
    assert!(f.is_empty() && f.accuracy_cm.is_empty());
}

#[test]
fn from_degrees_rounds_to_e7() {
    let f = Fix::from_degrees(5, -33.868_820_04, 151.209_295_56);
    assert_eq!(
        (f.time_ms, f.lat_e7, f.lon_e7),
        (5, -338_688_200, 1_512_092_956)
    );
    assert_eq!(Fix::from_degrees(0, 90.0, -180.0).lat_e7, LAT_E7_MAX);
    assert_eq!(Fix::from_degrees(0, 90.0, -180.0).lon_e7, -LON_E7_MAX);
}

#[test]
fn zstd_and_raw_frames_round_trip_50_fixes() {
    let f = fixes(50);
    for raw in [false, true] {
        let mut out = vec![0xAA]; // pre-existing bytes stay untouched
        if raw {
            encode_batch_frame_raw(7, &f, &mut out).expect("encode");
        } else {
            encode_batch_frame(7, &f, 3, &mut out).expect("encode");
        }
        assert_eq!(out[0], 0xAA);
        let body = body_of(&out[1..]);
        assert_eq!(body[8], u8::from(!raw), "encoding byte");
        let (seq, back) = decode_batch(body, &Limits::default(), NOW_MS).expect("decode");
        assert_eq!(seq, 7);
        assert_eq!(back, f);
    }
}

#[test]
fn wrapping_coordinate_deltas_round_trip() {
    let mut f = Fixes::default();
    for (lat, lon) in [
        (LAT_E7_MAX, LON_E7_MAX),
        (-LAT_E7_MAX, -LON_E7_MAX),
        (LAT_E7_MAX, LON_E7_MAX),
        (0, -LON_E7_MAX),
    ] {
        f.push(&Fix {
            time_ms: NOW_MS,
            lat_e7: lat,
            lon_e7: lon,
            ..Fix::default()
        });
    }
    let mut out = vec![];
    encode_batch_frame(1, &f, 1, &mut out).expect("encode");
    let (_, back) = decode_batch(body_of(&out), &Limits::default(), NOW_MS).expect("decode");
    assert_eq!(back, f);
}

#[test]
fn encoder_output_is_the_documented_protobuf() {
    let f = Fixes {
        time_ms: vec![1000, 1500, 900],
        lat_e7: vec![10, i32::MAX, i32::MIN],
        lon_e7: vec![-5, -5, 7],
        heading_cdeg: vec![1, ABSENT_U32, 35_999],
        ..Fixes::default()
    };
    let mut out = vec![];
    encode_batch_frame_raw(3, &f, &mut out).expect("encode");
    let body = body_of(&out);
    assert_eq!(&body[..9], &[0, 0, 0, 0, 0, 0, 0, 3, 0]);
    let b = Batch::decode(&body[9..]).expect("protobuf");
    assert_eq!(b.time_ms, [1000, 500, -600]);
    assert_eq!(b.lat_e7, [10, i32::MAX - 10, 1]); // i32::MIN - i32::MAX wraps to 1
    assert_eq!(b.lon_e7, [-5, 0, 12]);
    assert_eq!(b.heading_cdeg, [1, ABSENT_U32, 35_999]);
    assert!(b.accuracy_cm.is_empty());
    // Packed: field 1, wire type 2 (length-delimited) leads the message.
    assert_eq!(body[9], 0x0a);
}

#[test]
fn encode_errors_name_the_problem() {
    let mut f = fixes(3);
    f.speed_cmps = vec![1, 2];
    let mut out = vec![1, 2, 3];
    let err = encode_batch_frame(1, &f, 3, &mut out).expect_err("mismatch");
    assert!(matches!(
        err,
        EncodeError::ColumnLengthMismatch {
            column: "speed_cmps",
            len: 2,
            fixes: 3,
            optional: true
        }
    ));
    assert_eq!(out, [1, 2, 3], "out untouched on error");

    let mut f = fixes(2);
    f.lon_e7.pop();
    assert!(matches!(
        encode_batch_frame(1, &f, 3, &mut out).expect_err("mismatch"),
        EncodeError::ColumnLengthMismatch {
            column: "lon_e7",
            len: 1,
            fixes: 2,
            optional: false
        }
    ));

    let mut f = fixes(2);
    f.time_ms = vec![i64::MIN, i64::MAX];
    let err = encode_batch_frame(1, &f, 3, &mut out).expect_err("overflow");
    assert!(matches!(
        err,
        EncodeError::TimeDeltaOverflow { index: 1, .. }
    ));
    assert!(err.to_string().contains("fix 0"), "{err}");
}

#[test]
fn short_bodies_are_malformed_with_seq_when_present() {
    let limits = Limits::default();
    let e = reject(&[0, 0, 0], &limits);
    assert_eq!((e.batch_seq, e.status), (None, Status::MalformedFrame));
    assert!(e.to_ack().is_none());
    let e = reject(&9u64.to_be_bytes(), &limits);
    assert_eq!((e.batch_seq, e.status), (Some(9), Status::MalformedFrame));
    let ack = e.to_ack().expect("seq known");
    assert_eq!(
        (ack.batch_seq, ack.status),
        (9, Status::MalformedFrame.code())
    );
}

#[test]
fn seq_zero_and_unknown_encoding() {
    let limits = Limits::default();
    let mut out = vec![];
    encode_batch_frame(0, &fixes(1), 3, &mut out).expect("encode");
    let e = reject(body_of(&out), &limits);
    assert_eq!((e.batch_seq, e.status), (Some(0), Status::InvalidSequence));

    let mut body = raw_body(4, &Batch::default());
    body[8] = 2;
    let e = reject(&body, &limits);
    assert_eq!(
        (e.batch_seq, e.status),
        (Some(4), Status::UnsupportedEncoding)
    );
    assert!(e.reason.contains("encoding 2"), "{}", e.reason);
}

#[test]
fn batch_bytes_max_edge() {
    let mut out = vec![];
    encode_batch_frame_raw(5, &fixes(20), &mut out).expect("encode");
    let body = body_of(&out);
    let at = Limits {
        batch_bytes_max: body.len() as u32,
        ..Limits::default()
    };
    assert!(decode_batch(body, &at, NOW_MS).is_ok());
    let below = Limits {
        batch_bytes_max: body.len() as u32 - 1,
        ..Limits::default()
    };
    let e = reject(body, &below);
    assert_eq!((e.batch_seq, e.status), (Some(5), Status::BatchTooLarge));
    assert!(
        e.reason
            .contains(&format!("exceeds batch_bytes_max {}", body.len() - 1)),
        "{}",
        e.reason
    );
}

#[test]
fn decompressed_bytes_max_edge_raw_and_zstd() {
    let f = fixes(30);
    let mut out = vec![];
    encode_batch_frame_raw(5, &f, &mut out).expect("encode");
    let raw = body_of(&out).to_vec();
    let payload_len = (raw.len() - 9) as u32;
    let zstd = zstd_body(5, &raw[9..]);
    for body in [&raw, &zstd] {
        let at = Limits {
            decompressed_bytes_max: payload_len,
            ..Limits::default()
        };
        assert_eq!(decode_batch(body, &at, NOW_MS).expect("at the cap").1, f);
        let below = Limits {
            decompressed_bytes_max: payload_len - 1,
            ..Limits::default()
        };
        let e = reject(body, &below);
        assert_eq!(e.status, Status::DecompressedTooLarge, "{}", e.reason);
        assert!(
            e.reason
                .contains(&format!("decompressed_bytes_max {}", payload_len - 1)),
            "{}",
            e.reason
        );
    }
}

#[test]
fn zstd_bomb_with_declared_size_is_refused_without_decompressing() {
    let payload = vec![0u8; 64 << 20];
    let body = zstd_body(11, &payload);
    assert!(body.len() < 64 * 1024, "a bomb is small: {}", body.len());
    let mut dec = BatchDecoder::new();
    let e = dec
        .decode(&body, &Limits::default(), NOW_MS)
        .expect_err("bomb");
    assert_eq!(
        (e.batch_seq, e.status),
        (Some(11), Status::DecompressedTooLarge)
    );
    assert!(
        e.reason.contains("declared content size 67108864"),
        "{}",
        e.reason
    );
    assert_eq!(dec.scratch_capacity(), 0, "nothing was decompressed");
}

#[test]
fn zstd_bomb_without_declared_size_stops_at_the_cap() {
    // A streaming encoder does not write the content size: only the output cap can stop
    // it. The zeros sit inside one unknown length-delimited field (9) announcing 64 MiB,
    // which is valid protobuf so far, so the structural check cannot refuse it earlier.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.write_all(&[0x4a, 0x80, 0x80, 0x80, 0x20])
        .expect("write");
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&chunk).expect("write");
    }
    let compressed = enc.finish().expect("finish");
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&compressed).expect("header"),
        None
    );
    let body = batch_body(12, 1, &compressed);
    let limits = Limits::default();
    let mut dec = BatchDecoder::new();
    let e = dec.decode(&body, &limits, NOW_MS).expect_err("bomb");
    assert_eq!(e.status, Status::DecompressedTooLarge, "{}", e.reason);
    assert!(
        dec.scratch_capacity() <= limits.decompressed_bytes_max as usize + 1,
        "allocated {} past the cap",
        dec.scratch_capacity()
    );
    // The decoder is reusable after a refusal.
    let mut out = vec![];
    encode_batch_frame(13, &fixes(3), 3, &mut out).expect("encode");
    assert_eq!(
        dec.decode(body_of(&out), &limits, NOW_MS).expect("ok").1,
        fixes(3)
    );
}

/// The attack of issue 11: a small zstd payload expanding to one packed column of zeros,
/// each zero byte a fix. Refused as TOO_MANY_FIXES from the element count after the first
/// output chunk: the decompression buffer stays at one chunk and no column is allocated.
#[test]
fn packed_zero_bomb_is_counted_and_refused_after_one_chunk() {
    let zeros = 4_000_000usize; // under decompressed_bytes_max, 400x batch_fixes_max
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.write_all(&[0x0a, 0x80, 0x92, 0xf4, 0x01])
        .expect("write"); // field 1, LEN 4 000 000
    enc.write_all(&vec![0u8; zeros]).expect("write");
    let compressed = enc.finish().expect("finish");
    assert!(
        compressed.len() < 1024,
        "a bomb is small: {}",
        compressed.len()
    );
    let body = batch_body(21, 1, &compressed);
    let limits = Limits::default();
    let mut dec = BatchDecoder::new();
    let e = dec.decode(&body, &limits, NOW_MS).expect_err("bomb");
    assert_eq!((e.batch_seq, e.status), (Some(21), Status::TooManyFixes));
    assert_eq!(
        e.reason,
        "column time_ms holds more than batch_fixes_max 10000 elements"
    );
    assert!(
        dec.scratch_capacity() <= 64 * 1024,
        "decompressed past the first chunk: {} bytes",
        dec.scratch_capacity()
    );
    // The same column uncompressed is refused from the count too.
    let mut column = vec![0x0a, 0x91, 0x4e]; // field 1, LEN 10 001
    column.extend(vec![0u8; 10_001]);
    let raw = batch_body(22, 0, &column);
    assert_eq!(reject(&raw, &limits).status, Status::TooManyFixes);
    // At the edge: 10 000 elements are counted and decoded (then judged as fixes).
    let mut f = fixes(1);
    for _ in 1..limits.batch_fixes_max {
        f.push(&fix(0));
    }
    let mut out = vec![];
    encode_batch_frame(23, &f, 3, &mut out).expect("encode");
    assert_eq!(
        decode_batch(body_of(&out), &limits, NOW_MS)
            .expect("at the edge")
            .1,
        f
    );
}

#[test]
fn a_skippable_zstd_frame_is_decompress_failed() {
    // Alone (RFC 8878 §3.1.2: magic 0x184D2A5?, 4-byte length, user data) or in front.
    let skippable = [0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 0xaa, 0xbb];
    let body = batch_body(3, 1, &skippable);
    let e = reject(&body, &Limits::default());
    assert_eq!(e.status, Status::DecompressFailed);
    assert!(
        e.reason.contains("skippable frames are not accepted"),
        "{}",
        e.reason
    );
    let mut out = vec![];
    encode_batch_frame(3, &fixes(2), 3, &mut out).expect("encode");
    let mut body = body_of(&out)[..9].to_vec();
    body.extend(skippable);
    body.extend(&body_of(&out)[9..]);
    assert_eq!(
        reject(&body, &Limits::default()).status,
        Status::DecompressFailed
    );
}

#[test]
fn a_32_bit_column_over_32_bits_is_malformed() {
    // lat_e7 (sint32) as the 5-byte varint of 2^32 + 2: protobuf would truncate it to 1.
    let raw = batch_body(4, 0, &[0x08, 0x00, 0x10, 0x82, 0x80, 0x80, 0x80, 0x10]);
    let e = reject(&raw, &Limits::default());
    assert_eq!(e.status, Status::MalformedFrame);
    assert!(
        e.reason
            .contains("lat_e7 varint 4294967298 does not fit in 32 bits"),
        "{}",
        e.reason
    );
}

#[test]
fn seq_is_bounded_by_the_server_clock_in_microseconds() {
    let limits = Limits::default();
    let max = (NOW_MS as u64 + limits.future_skew_ms as u64) * 1000;
    assert_eq!(seq_max(&limits, NOW_MS), max);
    let mut out = vec![];
    encode_batch_frame_raw(max, &fixes(1), &mut out).expect("encode");
    assert_eq!(
        decode_batch(body_of(&out), &limits, NOW_MS)
            .expect("at the edge")
            .0,
        max
    );
    for seq in [max + 1, 1 << 62, u64::MAX] {
        out.clear();
        encode_batch_frame_raw(seq, &fixes(1), &mut out).expect("encode");
        let e = reject(body_of(&out), &limits);
        assert_eq!(
            (e.batch_seq, e.status),
            (Some(seq), Status::InvalidSequence),
            "{seq}"
        );
        assert!(e.reason.contains(&format!("({max})")), "{}", e.reason);
    }
    // A clock before 1970 accepts nothing rather than wrapping.
    assert_eq!(seq_max(&limits, -limits.future_skew_ms - 1), 0);
}

#[test]
fn zstd_window_larger_than_the_cap_is_refused() {
    let limits = Limits {
        decompressed_bytes_max: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(limits.zstd_window_log_max(), 20);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(24))
        .expect("window log");
    enc.write_all(&vec![7u8; 3 << 20]).expect("write");
    let compressed = enc.finish().expect("finish");
    let body = batch_body(1, 1, &compressed);
    let e = reject(&body, &limits);
    assert!(
        matches!(
            e.status,
            Status::DecompressFailed | Status::DecompressedTooLarge
        ),
        "{e}"
    );
}

#[test]
fn window_log_follows_decompressed_bytes_max() {
    let log = |cap| {
        Limits {
            decompressed_bytes_max: cap,
            ..Limits::default()
        }
        .zstd_window_log_max()
    };
    assert_eq!(log(0), 10);
    assert_eq!(log(1024), 10);
    assert_eq!(log(1025), 11);
    assert_eq!(log(4 << 20), 22);
    assert_eq!(log((4 << 20) + 1), 23);
    assert_eq!(log(u32::MAX), 31);
}

#[test]
fn bad_zstd_is_decompress_failed() {
    let limits = Limits::default();
    let body = batch_body(3, 1, b"not zstd at all");
    assert_eq!(reject(&body, &limits).status, Status::DecompressFailed);

    let good = zstd_body(
        3,
        &raw_body(
            3,
            &Batch {
                time_ms: vec![NOW_MS],
                lat_e7: vec![0],
                lon_e7: vec![0],
                ..Batch::default()
            },
        )[9..],
    );
    let truncated = &good[..good.len() - 3];
    let e = reject(truncated, &limits);
    assert_eq!(e.status, Status::DecompressFailed, "{}", e.reason);

    let mut trailing = good.clone();
    trailing.extend([1, 2, 3]);
    let e = reject(&trailing, &limits);
    assert_eq!(e.status, Status::DecompressFailed);
    assert!(e.reason.contains("trailing"), "{}", e.reason);
}

#[test]
fn bad_protobuf_is_malformed() {
    let mut body = 3u64.to_be_bytes().to_vec();
    body.extend([0, 0x0a, 0x7f, 1]);
    let e = reject(&body, &Limits::default());
    assert_eq!((e.batch_seq, e.status), (Some(3), Status::MalformedFrame));
    assert!(e.reason.contains("protobuf"), "{}", e.reason);
}

#[test]
fn time_delta_overflow_is_malformed() {
    let b = Batch {
        time_ms: vec![i64::MAX - 1, 5],
        lat_e7: vec![0, 0],
        lon_e7: vec![0, 0],
        ..Batch::default()
    };
    let e = reject(&raw_body(8, &b), &Limits::default());
    assert_eq!(e.status, Status::MalformedFrame);
    assert!(
        e.reason.starts_with("fix 1: time_ms delta 5"),
        "{}",
        e.reason
    );
}

#[test]
fn empty_batch() {
    let e = reject(&raw_body(2, &Batch::default()), &Limits::default());
    assert_eq!(e.status, Status::EmptyBatch);
    assert_eq!(
        rejected_fixes(&Fixes::default(), &Limits::default()).0,
        Status::EmptyBatch
    );
}

#[test]
fn too_many_fixes_edge() {
    let limits = Limits {
        batch_fixes_max: 10,
        ..Limits::default()
    };
    assert!(validate(&fixes(10), &limits, NOW_MS).is_ok());
    let (status, reason) = rejected_fixes(&fixes(11), &limits);
    assert_eq!(status, Status::TooManyFixes);
    assert_eq!(reason, "11 fixes exceed batch_fixes_max 10");
    let mut out = vec![];
    encode_batch_frame(6, &fixes(11), 3, &mut out).expect("encode");
    assert_eq!(reject(body_of(&out), &limits).status, Status::TooManyFixes);
}

#[test]
fn column_length_mismatch() {
    let limits = Limits::default();
    let mut f = fixes(3);
    f.lat_e7.pop();
    let (status, reason) = rejected_fixes(&f, &limits);
    assert_eq!(status, Status::ColumnLengthMismatch);
    assert!(
        reason.starts_with("column lat_e7 has 2 entries for 3 fixes"),
        "{reason}"
    );

    let mut f = fixes(3);
    f.altitude_cm = vec![1];
    assert!(
        rejected_fixes(&f, &limits)
            .1
            .starts_with("column altitude_cm has 1 entries")
    );
    f.altitude_cm = vec![1, 2, 3];
    assert!(validate(&f, &limits, NOW_MS).is_ok());

    // Over the wire: a Batch whose lon column is short.
    let b = Batch {
        time_ms: vec![NOW_MS, 1],
        lat_e7: vec![0, 0],
        lon_e7: vec![0],
        ..Batch::default()
    };
    assert_eq!(
        reject(&raw_body(1, &b), &limits).status,
        Status::ColumnLengthMismatch
    );
    // Coordinates without times is a mismatch, not an empty batch.
    let b = Batch {
        lat_e7: vec![0],
        lon_e7: vec![0],
        ..Batch::default()
    };
    assert_eq!(
        reject(&raw_body(1, &b), &limits).status,
        Status::ColumnLengthMismatch
    );
}

#[test]
fn coordinates_at_and_past_the_edge() {
    let limits = Limits::default();
    let mut f = fixes(3);
    f.lat_e7[1] = LAT_E7_MAX;
    f.lon_e7[1] = -LON_E7_MAX;
    assert!(validate(&f, &limits, NOW_MS).is_ok());
    f.lat_e7[2] = -LAT_E7_MAX - 1;
    assert_eq!(
        rejected_fixes(&f, &limits),
        (
            Status::InvalidCoordinates,
            "fix 2: lat_e7 -900000001 outside [-900000000, 900000000]".to_string()
        )
    );
    let mut f = fixes(3);
    f.lon_e7[0] = LON_E7_MAX + 1;
    assert_eq!(
        rejected_fixes(&f, &limits),
        (
            Status::InvalidCoordinates,
            "fix 0: lon_e7 1800000001 outside [-1800000000, 1800000000]".to_string()
        )
    );
    let mut out = vec![];
    encode_batch_frame(9, &f, 3, &mut out).expect("encode");
    let e = reject(body_of(&out), &limits);
    assert_eq!(
        (e.batch_seq, e.status),
        (Some(9), Status::InvalidCoordinates)
    );
}

#[test]
fn time_window_edges() {
    let limits = Limits {
        future_skew_ms: 1000,
        past_age_max_ms: 5000,
        ..Limits::default()
    };
    let mut f = fixes(2);
    f.time_ms = vec![NOW_MS - 5000, NOW_MS + 1000];
    assert!(validate(&f, &limits, NOW_MS).is_ok());
    f.time_ms[1] = NOW_MS + 1001;
    let (status, reason) = rejected_fixes(&f, &limits);
    assert_eq!(status, Status::TimeInFuture);
    assert_eq!(
        reason,
        format!(
            "fix 1: time_ms {} is after server time {NOW_MS} + future_skew_ms 1000",
            NOW_MS + 1001
        )
    );
    f.time_ms = vec![NOW_MS - 5001, NOW_MS];
    let (status, reason) = rejected_fixes(&f, &limits);
    assert_eq!(status, Status::TimeTooOld);
    assert!(reason.starts_with("fix 0: time_ms"), "{reason}");
    // Extreme clocks do not overflow.
    f.time_ms = vec![i64::MIN, i64::MAX];
    assert_eq!(
        Status::of_fix_error(&validate(&f, &limits, i64::MAX).expect_err("old")),
        Status::TimeTooOld
    );
    assert_eq!(
        Status::of_fix_error(&validate(&f, &limits, i64::MIN).expect_err("future")),
        Status::TimeInFuture
    );
}

#[test]
fn heading_edge() {
    let limits = Limits::default();
    let mut f = fixes(2);
    f.heading_cdeg = vec![ABSENT_U32, 35_999];
    assert!(validate(&f, &limits, NOW_MS).is_ok());
    f.heading_cdeg[0] = 36_000;
    assert_eq!(
        rejected_fixes(&f, &limits),
        (
            Status::InvalidField,
            "fix 0: heading_cdeg 36000 outside [0, 36000)".to_string()
        )
    );
}

#[test]
fn limits_defaults() {
    let l = Limits::default();
    assert_eq!(l.batch_bytes_max, 262_144);
    assert_eq!(l.batch_fixes_max, 10_000);
    assert_eq!(l.decompressed_bytes_max, 4_194_304);
    assert_eq!(l.future_skew_ms, 300_000);
    assert_eq!(l.past_age_max_ms, 2_592_000_000);
}

fn opt_u32(max: u32) -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (0..max).prop_map(Some)]
}

fn arb_fix() -> impl Strategy<Value = Fix> {
    (
        (NOW_MS - Limits::default().past_age_max_ms)..=(NOW_MS + Limits::default().future_skew_ms),
        prop_oneof![
            Just(LAT_E7_MAX),
            Just(-LAT_E7_MAX),
            -LAT_E7_MAX..=LAT_E7_MAX
        ],
        prop_oneof![
            Just(LON_E7_MAX),
            Just(-LON_E7_MAX),
            -LON_E7_MAX..=LON_E7_MAX
        ],
        opt_u32(u32::MAX),
        prop_oneof![Just(None), (i32::MIN + 1..=i32::MAX).prop_map(Some)],
        opt_u32(u32::MAX),
        opt_u32(HEADING_CDEG_END),
    )
        .prop_map(
            |(time_ms, lat_e7, lon_e7, accuracy_cm, altitude_cm, speed_cmps, heading_cdeg)| Fix {
                time_ms,
                lat_e7,
                lon_e7,
                accuracy_cm,
                altitude_cm,
                speed_cmps,
                heading_cdeg,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_arbitrary_fixes(list in prop::collection::vec(arb_fix(), 1..300), seq in 1..=seq_max(&Limits::default(), NOW_MS), level in -5..10i32, raw in any::<bool>()) {
        let mut f = Fixes::default();
        for x in &list {
            f.push(x);
        }
        let mut out = vec![];
        if raw {
            encode_batch_frame_raw(seq, &f, &mut out).expect("encode");
        } else {
            encode_batch_frame(seq, &f, level, &mut out).expect("encode");
        }
        let (back_seq, back) = decode_batch(body_of(&out), &Limits::default(), NOW_MS).expect("decode");
        prop_assert_eq!(back_seq, seq);
        for (i, x) in list.iter().enumerate() {
            prop_assert_eq!(back.get(i), *x);
        }
        prop_assert_eq!(back, f);
    }

    #[test]
    fn codec_round_trips_any_times_whose_deltas_fit(times in prop::collection::vec(-(1i64 << 61)..(1i64 << 61), 1..50)) {
        // The codec itself (no validation): any i64 times with representable deltas.
        let mut f = Fixes::default();
        for t in &times {
            f.push(&Fix { time_ms: *t, ..Fix::default() });
        }
        let mut enc = BatchEncoder::new();
        let mut out = vec![];
        enc.encode(1, &f, Compression::Zstd { level: 1 }, &mut out).expect("encode");
        let limits = Limits { past_age_max_ms: i64::MAX, future_skew_ms: i64::MAX, ..Limits::default() };
        let (_, back) = decode_batch(body_of(&out), &limits, 0).expect("decode");
        prop_assert_eq!(back.time_ms, times);
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let limits = Limits { batch_bytes_max: 512, ..Limits::default() };
        if let Err(e) = decode_batch(&body, &limits, NOW_MS) {
            prop_assert_eq!(e.batch_seq.is_some(), body.len() >= 8);
            prop_assert!(!e.status.is_success());
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(seq in 1..u64::MAX, encoding in 0..3u8, payload in prop::collection::vec(any::<u8>(), 0..400), zstd_magic in any::<bool>()) {
        let mut body = seq.to_be_bytes().to_vec();
        body.push(encoding);
        if zstd_magic {
            body.extend([0x28, 0xb5, 0x2f, 0xfd]);
        }
        body.extend(payload);
        if let Err(e) = decode_batch(&body, &Limits::default(), NOW_MS) {
            prop_assert_eq!(e.batch_seq, Some(seq));
        }
    }

    #[test]
    fn compressed_arbitrary_protobuf_never_panics(payload in prop::collection::vec(any::<u8>(), 0..400)) {
        let body = zstd_body(1, &payload);
        let _ = decode_batch(&body, &Limits::default(), NOW_MS);
    }

    #[test]
    fn arbitrary_headers_and_control_bodies_never_panic(header in any::<[u8; 5]>(), body in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(h) = parse_frame_header(&header) {
            prop_assert_eq!(h.frame_type.to_byte(), header[0]);
            prop_assert_eq!(h.len, u32::from_be_bytes([header[1], header[2], header[3], header[4]]));
            let _ = h.check_len(&Limits::default());
        }
        let _ = decode_hello(&body);
        let _ = decode_welcome(&body);
        let _ = decode_ack(&body);
        let _ = decode_close(&body);
        let _ = decode_confirm_request(&body);
        let _ = decode_confirm(&body);
        let _ = decode_confirm_ack(&body);
    }
}

#[test]
fn protocol_doc_example_bytes() {
    // These exact bytes appear in docs/PROTOCOL.md §8.
    let mut out = vec![];
    encode_heartbeat(&mut out);
    assert_eq!(out, [0x05, 0, 0, 0, 0]);

    out.clear();
    encode_ack(
        &Ack {
            batch_seq: 42,
            status: 300,
            reason: String::new(),
            retry_after_ms: 250,
        },
        &mut out,
    );
    assert_eq!(
        out,
        [
            0x04, 0, 0, 0, 0x08, 0x08, 0x2a, 0x10, 0xac, 0x02, 0x20, 0xfa, 0x01
        ]
    );

    out.clear();
    let f = Fixes {
        time_ms: vec![1000, 1500],
        lat_e7: vec![10, 20],
        lon_e7: vec![-5, -5],
        ..Fixes::default()
    };
    encode_batch_frame_raw(3, &f, &mut out).expect("encode");
    #[rustfmt::skip]
    let expected = [
        0x03, 0, 0, 0, 0x17,
        0, 0, 0, 0, 0, 0, 0, 3, 0,
        0x0a, 0x04, 0xd0, 0x0f, 0xe8, 0x07,
        0x12, 0x02, 0x14, 0x14,
        0x1a, 0x02, 0x09, 0x00,
    ];
    assert_eq!(out, expected);
}
