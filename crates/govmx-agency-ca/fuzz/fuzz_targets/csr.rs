//! Fuzz target: CSR intake (PEM or DER) never panics, and whatever it accepts is an
//! uncompressed P-256 point with names that stay within the input.
#![no_main]

use govmx_agency_ca::csr::parse_csr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = parse_csr(data) {
        assert_eq!(info.public_key.len(), 65);
        assert_eq!(info.public_key[0], 0x04);
        assert!(info.dns_names.len() + info.uris.len() + info.ip_addresses.len() <= data.len());
    }
});
