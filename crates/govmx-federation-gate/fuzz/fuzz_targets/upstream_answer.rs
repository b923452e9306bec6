//! Fuzz target: decoding an upstream answer (head, framing, chunked body) never panics, and no
//! hop-by-hop header survives into the response the gate relays.
#![no_main]

use govmx_federation_gate::upstream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, headers, body))) = upstream::decode_answer(data) {
        for name in ["connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"] {
            assert!(!headers.contains_key(name), "{name} relayed");
        }
        assert!(body.len() <= data.len());
    }
});
