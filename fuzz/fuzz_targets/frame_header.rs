//! Arbitrary bytes as a frame header plus body: header parsing and every control message
//! decoder must never panic, and a parsed header must describe exactly its bytes.
#![no_main]

use ingest::wire::{self, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<{ wire::FRAME_HEADER_LEN }>() else {
        return;
    };
    if let Ok(h) = wire::parse_frame_header(header) {
        assert_eq!(h.frame_type.to_byte(), header[0]);
        assert_eq!(h.len.to_be_bytes(), header[1..]);
        let within = h.check_len(&Limits::default()).is_ok();
        assert_eq!(
            within,
            h.len <= wire::frame_body_len_max(h.frame_type, &Limits::default())
        );
        let mut re = Vec::new();
        wire::encode_frame(h.frame_type, &[], &mut re);
        assert_eq!(re[0], header[0]);
    }
    let _ = wire::decode_hello(body);
    let _ = wire::decode_welcome(body);
    let _ = wire::decode_ack(body);
    let _ = wire::decode_close(body);
    let _ = wire::decode_confirm_request(body);
    let _ = wire::decode_confirm(body);
    let _ = wire::decode_confirm_ack(body);
});
