//! Fuzzes the clamd reply and VERSION parsers: they must never panic, and a reply is only
//! `Clean` when it literally says `OK` (never for errors or garbage).
#![no_main]

use govmx_media_scanner::clamd::{Reply, parse_reply, parse_version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reply = parse_reply(data);
    if reply == Reply::Clean {
        let text = String::from_utf8_lossy(data);
        assert!(
            text.trim_end_matches(['\0', '\n', '\r', ' '])
                .ends_with(": OK")
        );
    }
    if let Reply::Infected { signature } = &reply {
        assert!(!signature.is_empty());
    }
    let _ = parse_version(data);
});
