//! Fuzz target: the transaction filter never panics; what it forwards is JSON without PDUs from
//! refused servers, and merging its report into an answer (either mode) never panics either.
#![no_main]

use govmx_federation_gate::txn;
use libfuzzer_sys::fuzz_target;

fn listed(server: &str) -> Result<(), String> {
    if server.ends_with(".good") { Ok(()) } else { Err("not listed".to_owned()) }
}

fuzz_target!(|data: &[u8]| {
    let Ok(outcome) = txn::filter_transaction(data, &listed) else {
        return;
    };
    let forwarded: serde_json::Value = serde_json::from_slice(&outcome.body).expect("forwarded body is JSON");
    for pdu in forwarded["pdus"].as_array().expect("pdus stays an array") {
        let sender = pdu["sender"].as_str().expect("kept PDUs have a sender");
        let server = txn::server_of_user(sender).expect("kept PDUs have a user id sender");
        assert!(listed(server).is_ok());
    }
    let _ = txn::merge_response(data, &outcome.removed_pdus);
    if let Some((answer, ids)) = txn::report_in_response(data, &outcome.removed_pdus) {
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("answer is JSON");
        for id in ids {
            assert!(answer["pdus"][&id]["error"].is_string());
        }
    }
});
