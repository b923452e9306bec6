//! Table-driven tests of parsing errors, cross-document checks and every decision path,
//! against the example network in `policies/`.

use ruma_common::{ServerName, UserId};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::diag::rules;
use crate::{Grant, ParsedDocument, PolicySet, Timestamp, UserIdSpec, check_set, parse_document};

const FEDERATION: &str = include_str!("../../../policies/federation.yaml");
const CONTACT: &str = include_str!("../../../policies/contact-rules.yaml");
const MEDIA: &str = include_str!("../../../policies/media-rules.yaml");
const AGENCIES: &str = include_str!("../../../policies/agencies.yaml");
const TRUST: &str = include_str!("../../../policies/trust.yaml");

const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);
const OWN: &str = "127.0.0.2:8448";

fn parse(file: &str, text: &str) -> ParsedDocument {
    parse_document(file, text.as_bytes(), Some(NOW))
        .unwrap_or_else(|errors| panic!("{file}: {errors:?}"))
}

fn example_docs() -> Vec<ParsedDocument> {
    vec![
        parse("federation.yaml", FEDERATION),
        parse("contact-rules.yaml", CONTACT),
        parse("media-rules.yaml", MEDIA),
        parse("agencies.yaml", AGENCIES),
    ]
}

fn example_set() -> PolicySet {
    PolicySet::new(example_docs(), server(OWN)).unwrap()
}

fn server(name: &str) -> &ServerName {
    <&ServerName>::try_from(name).unwrap()
}

fn user(id: &str) -> &UserId {
    <&UserId>::try_from(id).unwrap()
}

/// Parses `text` and expects exactly one error, rendered as `line:column rule`.
#[track_caller]
fn check_error(text: &str, expect: &str) {
    let errors = parse_document("t.yaml", text.as_bytes(), Some(NOW))
        .expect_err("document should be invalid");
    let got: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{} {}", e.line, e.column, e.rule))
        .collect();
    assert_eq!(got.join("; "), expect, "{errors:#?}");
}

const FED_HEAD: &str = "apiVersion: govmx.de/v1\nkind: FederationList\nmetadata:\n  name: f\n  version: 1\n  issued: 2026-11-20T00:00:00Z\n  maxAge: 30d\n";
const AGENCY_HEAD: &str = "apiVersion: govmx.de/v1\nkind: Agencies\nmetadata: {name: a, version: 1, issued: 2026-11-20T00:00:00Z}\n";
const MEDIA_HEAD: &str = "apiVersion: govmx.de/v1\nkind: MediaRules\nmetadata: {name: m, version: 1, issued: 2026-11-20T00:00:00Z}\n";
const CONTACT_HEAD: &str = "apiVersion: govmx.de/v1\nkind: ContactRules\nmetadata: {name: c, version: 1, issued: 2026-11-20T00:00:00Z}\ndefault: deny\nroomCreation: {maxCitizenInvitees: 1}\n";

fn fed(servers: &str) -> String {
    format!("{FED_HEAD}servers:\n{servers}")
}

#[test]
fn header_errors() {
    check_error("", "1:1 not-a-document");
    check_error("- a\n- b\n", "1:1 not-a-document");
    check_error("kind: Agencies\n", "1:1 missing-header");
    check_error("apiVersion: govmx.de/v1\n", "1:1 missing-header");
    check_error(
        "apiVersion: govmx.de/v2\nkind: Agencies\n",
        "1:13 unsupported-api-version",
    );
    check_error(
        "apiVersion: govmx.de/v1\nkind: Firewall\n",
        "2:7 unknown-kind",
    );
    check_error("a: [1\n", "2:1 yaml-syntax");
    check_error("a: 1\n---\nb: 2\n", "1:1 not-a-document");
}

#[test]
fn structural_errors() {
    check_error(
        &format!("{AGENCY_HEAD}agencies: []\nextra: 1\n"),
        "5:1 unknown-key",
    );
    check_error(&format!("{AGENCY_HEAD}agencies: 5\n"), "4:11 wrong-type");
    check_error(AGENCY_HEAD, "1:1 missing-field");
    check_error(
        &format!("{AGENCY_HEAD}agencies: []\nagencies: []\n"),
        "5:1 duplicate-key",
    );
    check_error(
        &fed("  - {serverName: \"a.de\", organisation: {id: a, displayName: A}, class: mayor}\n"),
        "9:72 unknown-value",
    );
    check_error(
        &fed("  - serverName: [a]\n    organisation: {id: a, displayName: A}\n    class: agency\n"),
        "9:17 wrong-type",
    );
}

#[test]
fn value_errors() {
    check_error(
        &(FED_HEAD.replace("30d", "30x") + "servers: []\n"),
        "7:11 bad-duration",
    );
    check_error(
        &(FED_HEAD.replace("2026-11-20T00:00:00Z", "yesterday") + "servers: []\n"),
        "6:11 bad-timestamp",
    );
    check_error(
        &format!("{MEDIA_HEAD}maxUploadSize: 5 MiB\nmime: {{}}\n"),
        "4:16 bad-size",
    );
    check_error(
        &format!("{MEDIA_HEAD}maxUploadSize: 5MiB\nmime: {{allow: [image]}}\n"),
        "5:16 bad-mime-pattern",
    );
    check_error(
        &format!("{MEDIA_HEAD}maxUploadSize: 5MiB\nmime: {{allow: [image/*], block: [image/*]}}\n"),
        "5:34 mime-conflict",
    );
    check_error(
        &format!("{MEDIA_HEAD}maxUploadSize: 5MiB\nmime: {{allow: [image/*, image/*]}}\n"),
        "5:25 mime-conflict",
    );
    check_error(
        &fed(
            "  - serverName: \"bad name\"\n    organisation: {id: a, displayName: A}\n    class: agency\n",
        ),
        "9:17 malformed-server-name",
    );
    check_error(
        &fed(
            "  - serverName: \"a.de\"\n    organisation: {id: A, displayName: A}\n    class: agency\n",
        ),
        "10:24 bad-id",
    );
    check_error(
        &fed(
            "  - serverName: \"a.de\"\n    organisation: {id: a, displayName: A}\n    class: agency\n    delegatedHosts: [a.de]\n",
        ),
        "12:22 malformed-host",
    );
    check_error(
        &fed(
            "  - serverName: \"a.de\"\n    organisation: {id: a, displayName: A}\n    class: agency\n    signingKeys: {\"rsa:x\": \"AAAA\"}\n",
        ),
        "12:19 bad-signing-key",
    );
    check_error(
        &fed(
            "  - serverName: \"a.de\"\n    organisation: {id: a, displayName: A}\n    class: agency\n    signingKeys: {\"ed25519:x\": \"AAAA\"}\n",
        ),
        "12:32 bad-signing-key",
    );
}

#[test]
fn duplicate_errors() {
    let server = |name: &str| {
        format!(
            "  - serverName: \"{name}\"\n    organisation: {{id: a, displayName: A}}\n    class: agency\n"
        )
    };
    check_error(
        &fed(&(server("a.de") + &server("b.de") + &server("a.de"))),
        "15:17 duplicate-server",
    );
    check_error(
        &fed(&(server("A.de") + &server("a.de"))),
        "12:17 duplicate-server",
    );
    let rule = |id: &str| format!("  - {{id: {id}, from: agency, to: citizen, action: allow}}\n");
    let other = |id: &str| rule(id).replace("to: citizen", "to: agency");
    check_error(
        &format!("{CONTACT_HEAD}rules:\n{}{}", rule("r"), other("r")),
        "8:10 duplicate-rule",
    );
    check_error(
        &format!("{CONTACT_HEAD}rules:\n{}{}", rule("a"), rule("b")),
        "8:6 shadowed-rule",
    );
    let grant = "  - {id: g, agency: a, citizen: \"@c:x.de\", serviceRequest: s, notBefore: 2026-01-01T00:00:00Z, notAfter: 2026-02-01T00:00:00Z}\n";
    check_error(
        &format!("{CONTACT_HEAD}rules: []\ngrants:\n{grant}{grant}"),
        "9:10 duplicate-grant",
    );
    let late = grant.replace("2026-02-01", "2025-02-01");
    check_error(
        &format!("{CONTACT_HEAD}rules: []\ngrants:\n{late}"),
        "8:106 bad-grant-window",
    );
    let bad_user = grant.replace("@c:x.de", "c:x.de");
    check_error(
        &format!("{CONTACT_HEAD}rules: []\ngrants:\n{bad_user}"),
        "8:33 malformed-user-id",
    );
}

#[test]
fn agency_errors() {
    let agency = |id: &str, servers: &str, accounts: &str| {
        format!(
            "  - id: {id}\n    name: N\n    serverNames: [{servers}]\n    officialAccounts: [{accounts}]\n"
        )
    };
    let doc = |agencies: String| format!("{AGENCY_HEAD}agencies:\n{agencies}");
    check_error(
        &doc(agency("a", "\"*wasser*\"", "")),
        "7:19 unanchored-wildcard",
    );
    check_error(
        &doc(agency("a", "\"wasser*.de\"", "")),
        "7:19 unanchored-wildcard",
    );
    check_error(
        &doc(agency("a", "\"*.x.de\"", "") + &agency("b", "\"y.x.de\"", "")),
        "11:19 overlapping-pattern",
    );
    check_error(
        &doc(agency("a", "\"a.de\"", "") + &agency("b", "\"a.de\"", "")),
        "11:19 overlapping-pattern",
    );
    check_error(
        &doc(agency("a", "\"a.de\"", "") + &agency("a", "\"b.de\"", "")),
        "9:9 duplicate-agency",
    );
    check_error(&doc(agency("Amt", "\"a.de\"", "")), "5:9 bad-id");
    check_error(
        &doc(agency("a", "\"a.de\"", "\"@amt-*:b.de\"")),
        "8:24 account-outside-agency",
    );
    check_error(
        &doc(agency("a", "\"a.de\"", "\"@amt-*:*.a.de\"")),
        "8:24 bad-account-pattern",
    );
}

#[test]
fn time_errors() {
    let list = |issued: &str, max_age: &str| {
        format!(
            "{}servers: []\n",
            FED_HEAD
                .replace("2026-11-20T00:00:00Z", issued)
                .replace("30d", max_age)
        )
    };
    check_error(&list("2026-10-01T00:00:00Z", "30d"), "6:11 expired-list");
    check_error(
        &list("2026-12-01T12:06:00Z", "30d"),
        "6:11 issued-in-future",
    );
    // Within the clock skew and exactly at expiry are fine.
    assert!(
        parse_document(
            "t",
            list("2026-12-01T12:04:00Z", "30d").as_bytes(),
            Some(NOW)
        )
        .is_ok()
    );
    assert!(
        parse_document(
            "t",
            list("2026-12-01T00:00:00Z", "12h").as_bytes(),
            Some(NOW)
        )
        .is_ok()
    );
    // Without `now` the time checks are skipped.
    assert!(parse_document("t", list("2020-01-01T00:00:00Z", "1d").as_bytes(), None).is_ok());
}

#[test]
fn trust_anchor_errors() {
    let head = "apiVersion: govmx.de/v1\nkind: TrustAnchors\nmetadata: {name: t, version: 1, issued: 2026-11-20T00:00:00Z}\n";
    let key = "  - {id: \"ed25519:a\", publicKey: \"fhF0ARkTi7vpIQ9+fU56S4Muui50IVy2gtCttjIjOTk\", owner: o}\n";
    check_error(
        &format!("{head}threshold: 2\nkeys:\n{key}"),
        "4:12 bad-threshold",
    );
    check_error(
        &format!("{head}threshold: 0\nkeys:\n{key}"),
        "4:12 bad-threshold",
    );
    check_error(
        &format!("{head}threshold: 1\nkeys:\n{key}{key}"),
        "7:10 duplicate-trust-key; 7:34 duplicate-trust-key",
    );
    assert!(parse_document("trust.yaml", TRUST.as_bytes(), None).is_ok());
}

#[test]
fn examples_are_valid() {
    let docs = example_docs();
    assert_eq!(check_set(&docs, Some(server(OWN))), vec![]);
}

#[test]
fn invalid_examples_fail_where_they_say() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../policies/examples/invalid"
    );
    let mut n_files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .expect("first line is `# expect: L:C rule`");
        let errors =
            parse_document("x", text.as_bytes(), Some(NOW)).expect_err("invalid example must fail");
        let got = format!("{}:{} {}", errors[0].line, errors[0].column, errors[0].rule);
        assert_eq!(got, expect, "{}", path.display());
        n_files += 1;
    }
    assert!(n_files >= 12);
}

/// Checks the cross-document rules on the examples with one document replaced.
#[track_caller]
fn check_set_error(file: &str, text: &str, own: &str, expect: &str) {
    let mut docs = example_docs();
    let doc = parse(file, text);
    docs.retain(|d| d.document.kind() != doc.document.kind());
    docs.push(doc);
    let got: Vec<String> = check_set(&docs, Some(server(own)))
        .iter()
        .map(|e| format!("{}:{}:{} {}", e.file, e.line, e.column, e.rule))
        .collect();
    assert_eq!(got.join("; "), expect);
}

#[test]
fn cross_document_errors() {
    check_set_error(
        "federation.yaml",
        FEDERATION,
        "127.0.0.9:8448",
        "federation.yaml:16:3 own-server-not-listed",
    );
    let moved = AGENCIES.replace(
        "serverNames: [\"127.0.0.4:8448\"]",
        "serverNames: [\"127.0.0.5:8448\"]",
    );
    let moved = moved.replace("@wasser-*:127.0.0.4:8448", "@wasser-*:127.0.0.5:8448");
    check_set_error(
        "agencies.yaml",
        &moved,
        OWN,
        "agencies.yaml:22:19 agency-server-not-listed",
    );
    let citizen_server = AGENCIES
        .replace(
            "serverNames: [\"127.0.0.4:8448\"]",
            "serverNames: [\"127.0.0.3:8448\"]",
        )
        .replace("@wasser-*:127.0.0.4:8448", "@wasser-*:127.0.0.3:8448");
    check_set_error(
        "agencies.yaml",
        &citizen_server,
        OWN,
        "agencies.yaml:22:19 agency-server-wrong-class",
    );
    let unknown_agency = CONTACT.replace("agency: buergeramt-musterstadt ", "agency: finanzamt ");
    check_set_error(
        "contact-rules.yaml",
        &unknown_agency,
        OWN,
        "contact-rules.yaml:46:13 unknown-grant-agency",
    );
    let mut docs = example_docs();
    docs.push(parse("again.yaml", MEDIA));
    let got: Vec<String> = check_set(&docs, None)
        .iter()
        .map(|e| format!("{}:{}:{} {}", e.file, e.line, e.column, e.rule))
        .collect();
    assert_eq!(got, ["again.yaml:4:7 duplicate-kind"]);
    let missing =
        PolicySet::new(example_docs().into_iter().take(3).collect(), server(OWN)).unwrap_err();
    assert_eq!(missing[0].rule, "missing-document");
}

#[track_caller]
fn check_federate(origin: &str, destination: &str, now: OffsetDateTime, expect: &str) {
    let set = example_set();
    let decision = set.may_federate(server(origin), server(destination), now);
    assert_eq!(
        format!("{} {}", decision.verdict, decision.rule),
        expect,
        "{}",
        decision.reason
    );
}

#[test]
fn federation_decisions() {
    check_federate("127.0.0.3:8448", OWN, NOW, "allow member:127.0.0.3:8448");
    check_federate("127.0.0.4:8448", OWN, NOW, "allow member:127.0.0.4:8448");
    check_federate("127.0.0.2:8448", OWN, NOW, "allow member:127.0.0.2:8448");
    check_federate("127.0.0.9:8448", OWN, NOW, "deny origin-not-listed");
    check_federate("evil.example", OWN, NOW, "deny origin-not-listed");
    check_federate(
        "127.0.0.3:8448",
        "127.0.0.4:8448",
        NOW,
        "deny destination-not-local",
    );
    // The example list is issued 2026-11-20 with maxAge 400d: it expires 2027-12-25.
    check_federate(
        "127.0.0.3:8448",
        OWN,
        datetime!(2027-12-25 00:00 UTC),
        "allow member:127.0.0.3:8448",
    );
    check_federate(
        "127.0.0.3:8448",
        OWN,
        datetime!(2027-12-25 00:00:01 UTC),
        "deny federation-list-expired",
    );
    check_federate(
        "127.0.0.3:8448",
        OWN,
        datetime!(2026-11-19 00:00 UTC),
        "deny federation-list-not-yet-valid",
    );
}

fn runtime_grant(id: &str, agency: &str, citizen: &str, from: &str, until: &str) -> Grant {
    Grant {
        id: id.to_owned(),
        agency: agency.to_owned(),
        citizen: UserIdSpec::parse(citizen).unwrap(),
        service_request: "WASSER-1".to_owned(),
        not_before: Timestamp::parse(from).unwrap(),
        not_after: Timestamp::parse(until).unwrap(),
    }
}

#[track_caller]
fn check_invite(inviter: &str, invitee: &str, now: OffsetDateTime, grants: &[Grant], expect: &str) {
    let set = example_set();
    let decision = set.may_invite(user(inviter), user(invitee), now, grants);
    assert_eq!(
        format!("{} {}", decision.verdict, decision.rule),
        expect,
        "{}",
        decision.reason
    );
}

#[test]
fn invite_decisions() {
    const ERIKA: &str = "@erika.mustermann:127.0.0.3:8448";
    const MAX: &str = "@max:127.0.0.3:8448";
    const AMT: &str = "@amt-meldewesen:127.0.0.2:8448";
    const WASSER: &str = "@wasser-aufsicht:127.0.0.4:8448";
    check_invite(AMT, ERIKA, NOW, &[], "allow agency-to-citizen");
    check_invite(AMT, WASSER, NOW, &[], "allow agency-to-agency");
    check_invite(
        "@kollege:127.0.0.2:8448",
        ERIKA,
        NOW,
        &[],
        "allow agency-to-citizen",
    );
    check_invite(MAX, ERIKA, NOW, &[], "deny citizen-to-citizen");
    // citizen → agency needs a grant: static grant-2026-0001 binds Erika to the Bürgeramt.
    check_invite(ERIKA, AMT, NOW, &[], "allow citizen-to-agency");
    check_invite(
        ERIKA,
        AMT,
        datetime!(2027-02-20 00:00 UTC),
        &[],
        "deny citizen-to-agency",
    );
    check_invite(
        ERIKA,
        AMT,
        datetime!(2026-11-19 23:00 UTC),
        &[],
        "deny federation-list-not-yet-valid",
    );
    check_invite(ERIKA, WASSER, NOW, &[], "deny citizen-to-agency");
    check_invite(MAX, AMT, NOW, &[], "deny citizen-to-agency");
    let grant = runtime_grant(
        "rt-1",
        "wasserbehoerde",
        ERIKA,
        "2026-11-30T00:00:00Z",
        "2026-12-02T00:00:00Z",
    );
    check_invite(
        ERIKA,
        WASSER,
        NOW,
        std::slice::from_ref(&grant),
        "allow citizen-to-agency",
    );
    check_invite(
        MAX,
        WASSER,
        NOW,
        std::slice::from_ref(&grant),
        "deny citizen-to-agency",
    );
    check_invite(
        ERIKA,
        AMT,
        datetime!(2027-03-01 00:00 UTC),
        std::slice::from_ref(&grant),
        "deny citizen-to-agency",
    );
    let other_agency = runtime_grant(
        "rt-2",
        "buergeramt-musterstadt",
        ERIKA,
        "2026-11-30T00:00:00Z",
        "2026-12-02T00:00:00Z",
    );
    check_invite(
        ERIKA,
        WASSER,
        NOW,
        &[other_agency],
        "deny citizen-to-agency",
    );
    check_invite(
        "@x:127.0.0.9:8448",
        ERIKA,
        NOW,
        &[],
        "deny inviter-not-listed",
    );
    check_invite(
        AMT,
        "@x:127.0.0.9:8448",
        NOW,
        &[],
        "deny invitee-not-listed",
    );
    check_invite(
        AMT,
        ERIKA,
        datetime!(2028-01-01 00:00 UTC),
        &[],
        "deny federation-list-expired",
    );
}

#[track_caller]
fn check_room(creator: &str, invitees: &[&str], expect: &str) {
    let set = example_set();
    let invitees: Vec<&UserId> = invitees.iter().map(|id| user(id)).collect();
    let decision = set.may_create_room(user(creator), &invitees, NOW, &[]);
    assert_eq!(
        format!("{} {}", decision.verdict, decision.rule),
        expect,
        "{}",
        decision.reason
    );
}

#[test]
fn room_creation_decisions() {
    check_room(
        "@amt-a:127.0.0.2:8448",
        &["@erika:127.0.0.3:8448"],
        "allow room-creation",
    );
    check_room(
        "@amt-a:127.0.0.2:8448",
        &["@erika:127.0.0.3:8448", "@wasser-x:127.0.0.4:8448"],
        "allow room-creation",
    );
    check_room(
        "@amt-a:127.0.0.2:8448",
        &["@erika:127.0.0.3:8448", "@max:127.0.0.3:8448"],
        "deny room-too-many-citizens",
    );
    check_room(
        "@max:127.0.0.3:8448",
        &["@erika:127.0.0.3:8448"],
        "deny citizen-to-citizen",
    );
    check_room("@amt-a:127.0.0.2:8448", &[], "allow room-creation");
}

#[track_caller]
fn check_upload(size: u64, mime: &str, expect: &str) {
    let set = example_set();
    let decision = set.check_upload(size, mime);
    assert_eq!(
        format!("{} {}", decision.verdict, decision.rule),
        expect,
        "{}",
        decision.reason
    );
}

#[test]
fn upload_decisions() {
    check_upload(1_000, "image/png", "allow media-allowed");
    check_upload(50 << 20, "application/pdf", "allow media-allowed");
    check_upload((50 << 20) + 1, "application/pdf", "deny media-too-large");
    check_upload(1_000, "image/svg+xml", "deny media-type-blocked");
    check_upload(1_000, "text/html", "deny media-type-not-allowed");
    check_upload(1_000, "Text/Plain; charset=utf-8", "allow media-allowed");
    check_upload(1_000, "garbage", "deny media-type-not-allowed");
    assert_eq!(
        example_set().scanner_unavailable().rule,
        "scanner-unavailable"
    );
    assert!(!example_set().scanner_unavailable().is_allowed());
}

#[test]
fn error_display_format() {
    let errors = parse_document("policies/federation.yaml", fed("  - {serverName: \"a.de\", organisation: {id: a, displayName: A}, class: agency}\n  - {serverName: \"a.de\", organisation: {id: a, displayName: A}, class: agency}\n").as_bytes(), Some(NOW)).unwrap_err();
    expect_test::expect![[r#"policies/federation.yaml:10:18: error[duplicate-server]: server "a.de" is listed twice (first at line 9)"#]].assert_eq(&errors[0].to_string());
}

/// Arbitrary bytes and mutated documents never panic.
#[test]
fn fuzz_style_robustness() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = [FEDERATION, CONTACT, MEDIA, AGENCIES, TRUST];
    for round in 0..3_000 {
        let seed = seeds[round % seeds.len()].as_bytes();
        let mut bytes = seed.to_vec();
        match next() % 4 {
            0 => {
                let cut = (next() as usize) % bytes.len();
                bytes.truncate(cut);
            }
            1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = (next() & 0xff) as u8;
                }
            }
            2 => {
                let at = (next() as usize) % bytes.len();
                let chars = b"-:{}[]*&!|>'\"#\n \t@%";
                bytes.insert(at, chars[(next() as usize) % chars.len()]);
            }
            _ => bytes = (0..next() % 200).map(|_| (next() & 0xff) as u8).collect(),
        }
        let _ = parse_document("fuzz.yaml", &bytes, Some(NOW));
    }
}

/// A federation list of 20,000 servers parses, checks and decides without quadratic work.
#[test]
fn large_federation_list() {
    // The example list's `servers:` is its last key, so more entries can be appended.
    let mut text = FEDERATION.to_owned();
    for i in 0..20_000 {
        let class = if i % 2 == 0 { "agency" } else { "citizen" };
        text.push_str(&format!(
            "  - serverName: \"s{i}.example.de\"\n    organisation: {{id: org-{i}, displayName: Org {i}}}\n    class: {class}\n"
        ));
    }
    let mut docs = example_docs();
    docs[0] = parse("federation.yaml", &text);
    let set = PolicySet::new(docs, server(OWN)).unwrap();
    for i in (0..20_000).step_by(997) {
        let origin = format!("s{i}.example.de");
        assert!(
            set.may_federate(server(&origin), server(OWN), NOW)
                .is_allowed()
        );
    }
    assert!(
        !set.may_federate(server("s20000.example.de"), server(OWN), NOW)
            .is_allowed()
    );
    // The member index of a list this large is partitioned and built on several threads:
    // every member is found at its own index, and only by its exact name.
    for (i, member) in set.federation().servers.iter().enumerate() {
        let name = member.server_name.0.as_str();
        assert_eq!(set.member(name).map(|(index, _)| index), Some(i), "{name}");
    }
    for unlisted in ["S1.example.de", "s1.example.d", "s20000.example.de", ""] {
        assert!(set.member(unlisted).is_none(), "{unlisted}");
    }
}

/// The members of a large list are checked in parts on several threads (slices of members,
/// partitions of names for duplicates); the errors are the ones a single pass finds, in the same
/// order, with the same positions.
#[test]
fn large_list_member_errors_come_from_every_slice_in_order() {
    let mut text = FEDERATION.to_owned();
    let bad_ids = [3, 14_999, 15_000, 29_999];
    for i in 0..30_000 {
        let id = if bad_ids.contains(&i) {
            format!("Bad-{i}")
        } else {
            format!("org-{i}")
        };
        let name = match i {
            12_000 => "s11999.example.DE".to_owned(),
            20_000 => "S7.example.de".to_owned(),
            29_000 => "s3.example.de".to_owned(),
            _ => format!("s{i}.example.de"),
        };
        text.push_str(&format!(
            "  - serverName: \"{name}\"\n    organisation: {{id: {id}, displayName: Org {i}}}\n    class: agency\n"
        ));
        if i == 22_222 {
            text.push_str("    delegatedHosts: [no-port.example.de]\n");
        }
    }
    let errors = parse_document("federation.yaml", text.as_bytes(), Some(NOW)).unwrap_err();
    let line_of = |needle: &str| {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in the text"));
        text[..at].matches('\n').count() + 1
    };
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.rule)).collect();
    assert_eq!(
        found,
        [
            (line_of("Bad-3,"), rules::BAD_ID),
            (line_of("\"s11999.example.DE\""), rules::DUPLICATE_SERVER),
            (line_of("Bad-14999,"), rules::BAD_ID),
            (line_of("Bad-15000,"), rules::BAD_ID),
            (line_of("\"S7.example.de\""), rules::DUPLICATE_SERVER),
            (line_of("[no-port.example.de]"), rules::MALFORMED_HOST),
            (line_of("Org 29000}") - 1, rules::DUPLICATE_SERVER),
            (line_of("Bad-29999,"), rules::BAD_ID),
        ],
        "{errors:#?}"
    );
    let first_at = |name: &str| format!("(first at line {})", line_of(name));
    assert!(
        errors[1]
            .message
            .ends_with(&first_at("\"s11999.example.de\"")),
        "{}",
        errors[1].message
    );
    assert!(
        errors[6].message.ends_with(&first_at("\"s3.example.de\"")),
        "{}",
        errors[6].message
    );
}

/// The same list in JSON syntax (over 2 MiB: deserialised in chunks, the members prechecked on
/// the chunks' threads): the same errors, in the same order, each at the line of its culprit.
#[test]
fn large_json_list_member_errors_match_the_single_pass() {
    let mut text = FEDERATION.to_owned();
    for i in 0..30_000 {
        let id = if i == 14_999 {
            format!("Bad-{i}")
        } else {
            format!("org-{i}")
        };
        let name = if i == 29_000 {
            "S3.example.de".to_owned()
        } else {
            format!("s{i}.example.de")
        };
        text.push_str(&format!(
            "  - serverName: \"{name}\"\n    organisation: {{id: {id}, displayName: Org {i}}}\n    class: agency\n"
        ));
        if i == 22_222 {
            text.push_str("    delegatedHosts: [no-port.example.de]\n");
        }
        if i == 27_000 {
            text.push_str("    signingKeys: {\"ed25519:a\": \"not base64\"}\n");
        }
    }
    let json = to_json(&text);
    assert!(
        json.len() > 2 << 20,
        "{} bytes: too small for the parallel path",
        json.len()
    );
    let yaml_errors = parse_document("federation.yaml", text.as_bytes(), Some(NOW)).unwrap_err();
    let json_errors = parse_document("federation.json", json.as_bytes(), Some(NOW)).unwrap_err();
    let rules_of =
        |errors: &[crate::PolicyError]| errors.iter().map(|e| e.rule).collect::<Vec<_>>();
    assert_eq!(
        rules_of(&json_errors),
        [
            rules::BAD_ID,
            rules::MALFORMED_HOST,
            rules::BAD_SIGNING_KEY,
            rules::DUPLICATE_SERVER
        ],
        "{json_errors:#?}"
    );
    assert_eq!(rules_of(&json_errors), rules_of(&yaml_errors));
    let line = |e: &crate::PolicyError| json.lines().nth(e.line - 1).unwrap_or_default().to_owned();
    for (error, needle) in json_errors.iter().zip([
        "Bad-14999",
        "no-port.example.de",
        "not base64",
        "S3.example.de",
    ]) {
        assert!(
            line(error).contains(needle),
            "{error:?} at {:?}",
            line(error)
        );
    }
    // A valid list of that size takes the prechecked path and reads as the YAML path reads it.
    let valid_yaml = text
        .replace("Bad-14999", "org-14999")
        .replace("    delegatedHosts: [no-port.example.de]\n", "")
        .replace("    signingKeys: {\"ed25519:a\": \"not base64\"}\n", "")
        .replace("S3.example.de", "s3b.example.de");
    let list = |file: &str, text: &str| match parse_document(file, text.as_bytes(), Some(NOW))
        .unwrap()
        .document
    {
        crate::Document::FederationList(list) => list,
        other => panic!("{:?}", other.kind()),
    };
    let from_json = list("federation.json", &to_json(&valid_yaml));
    assert!(from_json.servers.len() > 30_000);
    assert_eq!(from_json, list("federation.yaml", &valid_yaml));
}

/// The YAML text of a document rewritten in JSON syntax (which is also YAML).
fn to_json(yaml: &str) -> String {
    let value: serde_json::Value = serde_norway::from_str(yaml).unwrap();
    serde_json::to_string_pretty(&value).unwrap()
}

#[test]
fn json_syntax_parses_to_the_same_documents() {
    for (file, text) in [
        ("federation.yaml", FEDERATION),
        ("contact-rules.yaml", CONTACT),
        ("media-rules.yaml", MEDIA),
        ("agencies.yaml", AGENCIES),
        ("trust.yaml", TRUST),
    ] {
        let json = to_json(text);
        assert!(json.starts_with('{'));
        assert_eq!(
            parse(file, &json).document,
            parse(file, text).document,
            "{file}"
        );
        // The same JSON behind a comment line takes the YAML path: the same document again.
        let commented = format!("# {file}\n{json}");
        assert_eq!(parse(file, &commented).document, parse(file, text).document);
    }
}

#[test]
fn json_syntax_errors_are_the_yaml_paths_errors() {
    let json = to_json(FEDERATION);
    // Each mutation makes serde_json refuse the text; the error must be what the YAML path
    // reports for the same text behind a comment line (one line further down).
    let cases = [
        json.replacen("\"serverName\"", "\"servername\"", 1),
        json.replacen("\"class\": \"agency\"", "\"class\": \"ministry\"", 1),
        json.replacen("\"version\": ", "\"version\": -", 1),
        json.replacen(
            "\"kind\": \"FederationList\"",
            "\"kind\": \"Federation\"",
            1,
        ),
        json.replacen('{', "{\"kind\": \"FederationList\", ", 1),
        json.replacen("\"maxAge\": \"", "\"maxAge\": \"x", 1),
        format!("{json} trailing"),
        json[..json.len() / 2].to_owned(),
    ];
    for (i, case) in cases.iter().enumerate() {
        let direct = parse_document("t.yaml", case.as_bytes(), Some(NOW))
            .expect_err(&format!("case {i} must fail"));
        let via_yaml = parse_document("t.yaml", format!("#\n{case}").as_bytes(), Some(NOW))
            .expect_err(&format!("case {i} must fail behind a comment"));
        let shift = |errors: &[crate::PolicyError]| {
            errors
                .iter()
                .map(|e| (e.line, e.column, e.rule))
                .collect::<Vec<_>>()
        };
        let shifted: Vec<_> = shift(&via_yaml)
            .into_iter()
            .map(|(line, column, rule)| (line - 1, column, rule))
            .collect();
        assert_eq!(shift(&direct), shifted, "case {i}: {direct:?}");
    }
}

#[test]
fn duplicate_signing_keys_are_refused_in_both_syntaxes() {
    let yaml = fed(
        "  - serverName: a.de\n    organisation: {id: a, displayName: A}\n    class: agency\n    signingKeys:\n      ed25519:k: AAAA\n      ed25519:k: BBBB\n",
    );
    let errors = parse_document("t.yaml", yaml.as_bytes(), Some(NOW)).unwrap_err();
    assert_eq!(errors[0].rule, "duplicate-key", "{errors:?}");
    // serde_json alone would keep the last value: the map's own deserialiser refuses it.
    let json = to_json(&yaml.replace("ed25519:k: BBBB", "ed25519:j: BBBB"))
        .replace("ed25519:j", "ed25519:k");
    let errors = parse_document("t.yaml", json.as_bytes(), Some(NOW)).unwrap_err();
    assert_eq!(errors[0].rule, "duplicate-key", "{errors:?}");
}
