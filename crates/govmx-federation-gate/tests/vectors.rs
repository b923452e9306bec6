//! The shared decision vectors (`crates/govmx-policy/tests/vectors/`), `federate` cases, through
//! the gate's own path: the vectors' policy directory signed into a bundle, verified with
//! `verify_bundle` as a reload does, and decided by `PolicyList::may_federate`. The same
//! vectors run against `PolicySet` and through the built Synapse module, so the edge and the
//! homeserver cannot disagree.

use std::path::Path;
use std::time::SystemTime;

use govmx_federation_gate::policy::testing::{TestSigner, signed_files, write_trust};
use govmx_federation_gate::policy::verify_bundle;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vectors {
    own_server: String,
    now: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    op: String,
    origin: Option<String>,
    destination: Option<String>,
    now: Option<String>,
    expect: String,
    rule: String,
}

fn at(rfc3339: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 time in the vectors");
    SystemTime::from(t)
}

#[test]
fn federate_vectors_decide_at_the_gate_as_everywhere_else() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../govmx-policy/tests/vectors/contact");
    let vectors: Vectors =
        serde_norway::from_slice(&std::fs::read(root.join("vectors.yaml")).unwrap()).unwrap();
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(root.join("policy")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        documents.push((name, std::fs::read(&path).unwrap()));
    }
    let slices: Vec<(&str, &[u8])> = documents
        .iter()
        .map(|(n, b)| (n.as_str(), &b[..]))
        .collect();
    let signer = TestSigner::from_seed("vectors", 7);
    let files = signed_files(&slices, 1, &[&signer]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let trust_path = tmp.path().join("trust.yaml");
    write_trust(&trust_path, 1, &[&signer]).unwrap();
    let trust = std::fs::read(&trust_path).unwrap();

    let mut checked = 0;
    for case in vectors.cases.iter().filter(|c| c.op == "federate") {
        let now = at(case.now.as_deref().unwrap_or(&vectors.now));
        let list = verify_bundle(&files, &trust, &vectors.own_server, now)
            .unwrap_or_else(|e| panic!("{}: the vectors' bundle does not verify: {e}", case.name));
        let decision = list.may_federate(
            case.origin.as_deref().unwrap(),
            case.destination.as_deref().unwrap(),
            now,
        );
        let verdict = if decision.allowed() { "allow" } else { "deny" };
        assert_eq!(
            (verdict, decision.rule.as_str()),
            (case.expect.as_str(), case.rule.as_str()),
            "{}: {}",
            case.name,
            decision.reason
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} federate vectors");
}
