//! Arbitrary bytes as a BATCH body: decoding must never panic, never allocate past the
//! limits, and every rejection must carry the seq whenever 8 bytes are present.
#![no_main]

use ingest::wire::{self, Limits};
use libfuzzer_sys::fuzz_target;

const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches every limit quickly.
    let limits = Limits {
        batch_bytes_max: 64 * 1024,
        batch_fixes_max: 1_000,
        decompressed_bytes_max: 256 * 1024,
        ..Limits::default()
    };
    match wire::decode_batch(data, &limits, NOW_MS) {
        Ok((seq, fixes)) => {
            assert_ne!(seq, 0);
            assert!(!fixes.is_empty() && fixes.len() <= 1_000);
            assert!(wire::validate(&fixes, &limits, NOW_MS).is_ok());
            // Whatever decodes re-encodes and decodes to the same fixes.
            let mut out = Vec::new();
            wire::encode_batch_frame_raw(seq, &fixes, &mut out).expect("valid fixes encode");
            let (seq2, again) = wire::decode_batch(
                &out[wire::FRAME_HEADER_LEN..],
                &Limits {
                    batch_bytes_max: u32::MAX,
                    decompressed_bytes_max: u32::MAX,
                    ..limits
                },
                NOW_MS,
            )
            .expect("re-encoded fixes decode");
            assert_eq!((seq2, &again), (seq, &fixes));
        }
        Err(e) => {
            assert_eq!(e.batch_seq.is_some(), data.len() >= 8);
            assert!(!e.status.is_success());
        }
    }
});
