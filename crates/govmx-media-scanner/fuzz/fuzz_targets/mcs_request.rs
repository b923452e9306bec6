//! Fuzzes the MCS POST body parsing (`scan_encrypted` / `download_encrypted`): the schema check,
//! the key material decoding and the media path check must never panic; an accepted media path
//! has exactly one `/` and no `..`, and accepted key material has the exact lengths.
#![no_main]

use govmx_media_scanner::mcs::{RequestBody, crypto_params, parse_body, parse_media_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(RequestBody::File(meta)) = parse_body(data) else {
        return;
    };
    if let Ok((server, id)) = parse_media_path(&meta.media_path) {
        assert!(!server.is_empty() && !id.is_empty());
        assert_eq!(meta.media_path.matches('/').count(), 1);
        assert!(!meta.media_path.contains(".."));
    }
    let _ = crypto_params(&meta);
});
