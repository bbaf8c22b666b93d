//! Arbitrary bytes as confirm-location bodies: decoding, the shape check and signature
//! verification must never panic; a CONFIRM that passes verification must re-encode to a
//! body that decodes to the same message.
#![no_main]

use ingest::wire::{self, ConfirmKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ConfirmKey::from_token("hf1.1.fuzz");
    if let Ok(c) = wire::decode_confirm(data) {
        let shape = wire::check_confirm(&c);
        if key.verify(&c).is_ok() {
            let mut out = Vec::new();
            wire::encode_confirm(&c, &mut out);
            let back = wire::decode_confirm(&out[wire::FRAME_HEADER_LEN..]).expect("re-decodes");
            assert_eq!(back, c);
        }
        if let Ok(kind) = shape {
            let signed = key.confirm(c.request_id, kind, c.batch_seq, c.device_time_ms);
            assert!(key.verify(&signed).is_ok());
            assert_eq!(wire::check_confirm(&signed), Ok(kind));
        }
    }
    let _ = wire::decode_confirm_request(data);
    let _ = wire::decode_confirm_ack(data);
});
