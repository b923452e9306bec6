//! The shared decision vectors (`tests/vectors/`) against `PolicySet` directly.

use std::path::Path;

use govmx_policy::{Grant, PolicySet, Timestamp, parse_document};
use ruma_common::{ServerName, UserId};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Vectors {
    own_server: String,
    now: String,
    #[serde(default)]
    runtime_grants: Vec<Grant>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    op: String,
    #[serde(default)]
    inviter: Option<String>,
    #[serde(default)]
    invitee: Option<String>,
    #[serde(default)]
    creator: Option<String>,
    #[serde(default)]
    invitees: Vec<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    now: Option<String>,
    expect: String,
    rule: String,
}

fn user(id: &Option<String>) -> &UserId {
    <&UserId>::try_from(id.as_deref().expect("user id given")).expect("valid user id")
}

fn server(name: &Option<String>) -> &ServerName {
    <&ServerName>::try_from(name.as_deref().expect("server name given")).expect("valid server name")
}

#[test]
fn contact_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/contact");
    let vectors: Vectors =
        serde_norway::from_slice(&std::fs::read(dir.join("vectors.yaml")).unwrap()).unwrap();
    let default_now = Timestamp::parse(&vectors.now).unwrap().0;
    let mut docs = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir.join("policy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        docs.push(
            parse_document(&name, &std::fs::read(&path).unwrap(), Some(default_now))
                .unwrap_or_else(|errors| panic!("{name}: {errors:?}")),
        );
    }
    let own = <&ServerName>::try_from(vectors.own_server.as_str()).unwrap();
    let set = PolicySet::new(docs, own).unwrap();
    let mut failures = Vec::new();
    for case in &vectors.cases {
        let now = case
            .now
            .as_deref()
            .map_or(default_now, |t| Timestamp::parse(t).unwrap().0);
        let decision = match case.op.as_str() {
            "invite" => set.may_invite(
                user(&case.inviter),
                user(&case.invitee),
                now,
                &vectors.runtime_grants,
            ),
            "createRoom" => {
                let invitees: Vec<&UserId> = case
                    .invitees
                    .iter()
                    .map(|id| <&UserId>::try_from(id.as_str()).unwrap())
                    .collect();
                set.may_create_room(user(&case.creator), &invitees, now, &vectors.runtime_grants)
            }
            "federate" => set.may_federate(server(&case.origin), server(&case.destination), now),
            other => panic!("{}: unknown op {other:?}", case.name),
        };
        let got = format!("{} {}", decision.verdict, decision.rule);
        let want = format!("{} {}", case.expect, case.rule);
        if got != want {
            failures.push(format!(
                "{}: want {want}, got {got} ({})",
                case.name, decision.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(vectors.cases.len() >= 20);
}
