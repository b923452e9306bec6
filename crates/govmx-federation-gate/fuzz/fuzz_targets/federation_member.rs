//! Differential fuzz target: the hand-written reader of one federation member (the parallel
//! parse of a large signed list, which the gate may fetch over HTTPS) never panics and, whenever
//! it reads a member, serde_json reads the same member ending at the same offset.
#![no_main]

use govmx_policy::FederationMember;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(read) = govmx_policy::read_json_member(text) {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<FederationMember>();
        let member = stream.next().and_then(Result::ok);
        assert_eq!(Some(read), member.map(|member| (member, stream.byte_offset())));
    }
});
