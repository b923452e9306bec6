//! Fuzz target: the X-Matrix `Authorization` header parser never panics, and whatever it
//! accepts formats back to a header that parses to the same value.
#![no_main]

use govmx_federation_gate::xmatrix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = xmatrix::parse(data) {
        let again = xmatrix::parse(header.to_string().as_bytes()).expect("formatted header parses");
        assert_eq!(again, header);
    }
});
