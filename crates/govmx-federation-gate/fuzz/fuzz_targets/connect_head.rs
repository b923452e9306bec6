//! Fuzz target: the CONNECT request-head parser never panics and only returns targets with a
//! non-zero port and a plain host.
#![no_main]

use govmx_federation_gate::proxy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = proxy::parse_connect(data) {
        assert!(request.port != 0);
        assert!(!request.host.is_empty());
        assert!(!request.host.contains('/'));
    }
});
