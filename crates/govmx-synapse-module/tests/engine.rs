//! The engine against the shared vector policy: decisions, deferral, hot reload, signed
//! bundles with last-known-good, the grants API and media verdicts. Pure Rust, no Python.

use std::path::{Path, PathBuf};

use govmx_policy::Timestamp;
use govmx_policy::bundle::{self, SIGNATURES_FILE, SignerKey};
use govmx_synapse_module::engine::PollOutcome;
use govmx_synapse_module::{Engine, ModuleConfig, Reload, errcode};
use time::OffsetDateTime;

const OFFICIAL: &str = "@amt:amt.example.de";
const WASSER: &str = "@wasser-1:wasser.example.de";
const ERIKA: &str = "@erika:buerger.example.de";
const MAX: &str = "@max:mixed.example.de";

fn now() -> OffsetDateTime {
    Timestamp::parse("2026-12-01T00:00:00Z").unwrap().0
}

fn vector_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../govmx-policy/tests/vectors/contact/policy")
}

/// A copy of the vector policy in `dir/policy`.
fn policy_copy(dir: &Path) -> PathBuf {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    for entry in std::fs::read_dir(vector_policy()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), policy.join(entry.file_name())).unwrap();
    }
    policy
}

fn engine(dir: &Path, own: &str, extra: serde_json::Value) -> Engine {
    let mut config = serde_json::json!({
        "server_name": own,
        "policy_dir": dir.join("policy"),
        "grants_file": dir.join("grants.json"),
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    Engine::new(ModuleConfig::from_json(&config.to_string()).unwrap()).unwrap()
}

fn loaded(outcome: &PollOutcome) -> Option<u64> {
    match outcome.policy {
        Reload::Loaded { version, .. } => Some(version),
        _ => None,
    }
}

#[test]
fn contact_decisions_and_errcodes() {
    let dir = tempfile::tempdir().unwrap();
    policy_copy(dir.path());
    let engine = engine(dir.path(), "amt.example.de", serde_json::json!({}));
    let refusal = engine.may_invite(ERIKA, OFFICIAL, true, now()).unwrap();
    assert_eq!(refusal.errcode, "M_FORBIDDEN");
    assert_eq!(
        refusal.rule, "policy-unavailable",
        "nothing loaded yet: fail closed"
    );

    assert_eq!(loaded(&engine.poll(now())), Some(1));
    assert_eq!(engine.may_invite(OFFICIAL, ERIKA, true, now()), None);
    let refusal = engine.may_invite(ERIKA, OFFICIAL, false, now()).unwrap();
    assert_eq!(refusal.errcode, errcode::INVITE_BLOCKED);
    assert_eq!(refusal.rule, "citizen-to-agency");
    assert!(
        refusal
            .reason
            .starts_with("citizens need an open service request; no valid grant"),
        "{}",
        refusal.reason
    );
    let refusal = engine
        .may_invite("@x:evil.example", OFFICIAL, false, now())
        .unwrap();
    assert_eq!(
        (refusal.errcode, refusal.rule.as_str()),
        ("M_FORBIDDEN", "inviter-not-listed")
    );
    let refusal = engine
        .may_create_room(OFFICIAL, &[ERIKA, MAX], now())
        .unwrap();
    assert_eq!(refusal.rule, "room-too-many-citizens");
    assert_eq!(refusal.errcode, "M_FORBIDDEN");
    assert_eq!(
        engine.may_create_room(OFFICIAL, &[ERIKA, WASSER], now()),
        None
    );
    // Bad input is a refusal, never a panic.
    for bad in ["", "erika", "@", "@:", "\u{0}", &"@a:".repeat(10_000)] {
        let refusal = engine.may_invite(bad, OFFICIAL, true, now()).unwrap();
        assert_eq!(refusal.rule, "invalid-user-id");
        assert!(engine.may_create_room(OFFICIAL, &[bad], now()).is_some());
    }
    assert_eq!(engine.may_join_room(ERIKA, false, now()), None);
}

/// `should_drop_federated_event`: the author's server decides, whoever relayed the event.
#[test]
fn federated_events_from_authors_off_the_list_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    policy_copy(dir.path());
    let engine = engine(dir.path(), "amt.example.de", serde_json::json!({}));
    let refusal = engine.may_receive_federated_event(ERIKA, now()).unwrap();
    assert_eq!(
        refusal.rule, "policy-unavailable",
        "nothing loaded: fail closed"
    );

    assert_eq!(loaded(&engine.poll(now())), Some(1));
    for listed in [ERIKA, WASSER, OFFICIAL, MAX] {
        assert_eq!(
            engine.may_receive_federated_event(listed, now()),
            None,
            "{listed}"
        );
    }
    let refusal = engine
        .may_receive_federated_event("@mallory:evil.example", now())
        .unwrap();
    assert_eq!(
        (refusal.errcode, refusal.rule.as_str()),
        ("M_FORBIDDEN", "origin-not-listed")
    );
    assert!(
        refusal.reason.contains("evil.example"),
        "{}",
        refusal.reason
    );
    // Past the list's maximum age nothing federates any more.
    let later = now() + time::Duration::days(3650);
    assert!(engine.may_receive_federated_event(ERIKA, later).is_some());
    for bad in ["", "erika", "@", "@:", "\u{0}", &"@a:".repeat(10_000)] {
        let refusal = engine.may_receive_federated_event(bad, now()).unwrap();
        assert_eq!(refusal.rule, "invalid-user-id");
    }
}

#[test]
fn missing_grant_is_deferred_to_the_remote_agency_server() {
    let dir = tempfile::tempdir().unwrap();
    policy_copy(dir.path());
    let citizen_hs = engine(dir.path(), "buerger.example.de", serde_json::json!({}));
    citizen_hs.poll(now());
    // Local citizen → remote official: only a grant is missing, the agency's server decides.
    assert_eq!(citizen_hs.may_invite(ERIKA, OFFICIAL, true, now()), None);
    assert_eq!(citizen_hs.may_create_room(ERIKA, &[OFFICIAL], now()), None);
    // Rules that deny outright are never deferred.
    assert_eq!(
        citizen_hs.may_invite(ERIKA, MAX, true, now()).unwrap().rule,
        "citizen-to-citizen"
    );
    // Arriving over federation it is decided here.
    assert!(
        citizen_hs
            .may_invite(ERIKA, OFFICIAL, false, now())
            .is_some()
    );
    let strict = engine(
        dir.path(),
        "buerger.example.de",
        serde_json::json!({"defer_grants_to_remote": false}),
    );
    strict.poll(now());
    assert!(strict.may_invite(ERIKA, OFFICIAL, true, now()).is_some());
}

#[test]
fn hot_reload_keeps_the_last_good_set_on_a_broken_change() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_copy(dir.path());
    let engine = engine(dir.path(), "amt.example.de", serde_json::json!({}));
    assert_eq!(loaded(&engine.poll(now())), Some(1));
    assert_eq!(engine.poll(now()).policy, Reload::Unchanged);
    assert!(engine.may_invite(ERIKA, MAX, false, now()).is_some());

    let rules = policy.join("contact-rules.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let open = text.replace(
        "{id: citizen-to-citizen, from: citizen, to: citizen, action: deny",
        "{id: citizen-to-citizen, from: citizen, to: citizen, action: allow",
    );
    assert_ne!(open, text);
    std::fs::write(&rules, &open).unwrap();
    assert!(loaded(&engine.poll(now())).is_some());
    assert_eq!(engine.may_invite(ERIKA, MAX, false, now()), None);

    std::fs::write(&rules, "kind: ContactRules\nrules: [").unwrap();
    match engine.poll(now()).policy {
        Reload::Rejected { error, current } => {
            assert!(error.contains("contact-rules.yaml"), "{error}");
            assert_eq!(current, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        engine.poll(now()).policy,
        Reload::Unchanged,
        "reported once"
    );
    assert_eq!(
        engine.may_invite(ERIKA, MAX, false, now()),
        None,
        "previous set in force"
    );
}

fn write_trust(path: &Path, signers: &[&SignerKey]) {
    let mut text = String::from(
        "apiVersion: govmx.de/v1\nkind: TrustAnchors\nmetadata: {name: t, version: 1, issued: \"2026-01-01T00:00:00Z\"}\nthreshold: 2\nkeys:\n",
    );
    for signer in signers {
        text.push_str(&format!(
            "  - {{id: \"{}\", publicKey: \"{}\", owner: test}}\n",
            signer.id(),
            signer.public_key()
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn sign_dir(dir: &Path, version: u64, signers: &[&SignerKey]) {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name != SIGNATURES_FILE {
            files.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    let slices: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut json: Option<String> = None;
    for signer in signers {
        let outcome =
            bundle::sign(json.as_deref().map(str::as_bytes), version, &slices, signer).unwrap();
        json = Some(outcome.signatures.to_json());
    }
    std::fs::write(dir.join(SIGNATURES_FILE), json.unwrap()).unwrap();
}

#[test]
fn signed_bundle_threshold_tampering_and_last_known_good() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_copy(dir.path());
    let alice = SignerKey::from_seed("ed25519:alice", [1; 32]).unwrap();
    let bob = SignerKey::from_seed("ed25519:bob", [2; 32]).unwrap();
    let trust = dir.path().join("trust.yaml");
    write_trust(&trust, &[&alice, &bob]);
    let extra =
        serde_json::json!({"trust_file": trust, "last_known_good_dir": dir.path().join("lkg")});

    sign_dir(&policy, 5, &[&alice]);
    let engine1 = engine(dir.path(), "amt.example.de", extra.clone());
    match engine1.poll(now()).policy {
        Reload::Rejected {
            error,
            current: None,
        } => assert!(error.contains("1 valid"), "{error}"),
        other => panic!("one signature of two must not load: {other:?}"),
    }
    sign_dir(&policy, 5, &[&alice, &bob]);
    assert_eq!(loaded(&engine1.poll(now())), Some(5));
    assert!(dir.path().join("lkg").join(SIGNATURES_FILE).is_file());

    // Tampering after signing: refused, the signed set stays.
    let rules = policy.join("contact-rules.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, text.replace("default: deny", "default: allow")).unwrap();
    match engine1.poll(now()).policy {
        Reload::Rejected { error, current } => {
            assert!(error.contains("contact-rules.yaml"), "{error}");
            assert_eq!(current, Some(5));
        }
        other => panic!("{other:?}"),
    }
    // A fresh start with the tampered directory falls back to the last-known-good copy.
    let engine2 = engine(dir.path(), "amt.example.de", extra);
    match engine2.poll(now()).policy {
        Reload::Loaded {
            version: 5,
            from_last_known_good: true,
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(engine2.may_invite(ERIKA, OFFICIAL, false, now()).is_some());
}

#[test]
fn grants_api_issue_use_revoke_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    policy_copy(dir.path());
    let engine = engine(
        dir.path(),
        "amt.example.de",
        serde_json::json!({"max_grant_days": 30}),
    );
    engine.poll(now());
    let request =
        serde_json::json!({"citizen": ERIKA, "serviceRequest": "MELD-2026-1", "validFor": "7d"});
    let body = request.to_string();

    let reply = engine.grants_api("POST", ERIKA, None, body.as_bytes(), now());
    assert_eq!(reply.status, 403, "{}", reply.body);
    let reply = engine.grants_api("POST", OFFICIAL, None, b"{", now());
    assert_eq!(reply.status, 400);
    let too_long = serde_json::json!({"citizen": ERIKA, "serviceRequest": "X", "validFor": "60d"});
    let reply = engine.grants_api(
        "POST",
        OFFICIAL,
        None,
        too_long.to_string().as_bytes(),
        now(),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let not_citizen = serde_json::json!({"citizen": WASSER, "serviceRequest": "X"});
    let reply = engine.grants_api(
        "POST",
        OFFICIAL,
        None,
        not_citizen.to_string().as_bytes(),
        now(),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);

    assert!(engine.may_invite(ERIKA, OFFICIAL, false, now()).is_some());
    let reply = engine.grants_api("POST", OFFICIAL, None, body.as_bytes(), now());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let grant: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let id = grant["grant"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id, format!("amt:MELD-2026-1:{ERIKA}"));
    assert_eq!(engine.may_invite(ERIKA, OFFICIAL, false, now()), None);
    // Only for this agency, and only while valid.
    assert!(engine.may_invite(ERIKA, WASSER, false, now()).is_some());
    let later = now() + time::Duration::days(7);
    assert!(engine.may_invite(ERIKA, OFFICIAL, false, later).is_some());

    // Persisted: a second engine on the same files sees it.
    let other = self::engine(dir.path(), "amt.example.de", serde_json::json!({}));
    other.poll(now());
    assert_eq!(other.may_invite(ERIKA, OFFICIAL, false, now()), None);

    let list = engine.grants_api("GET", OFFICIAL, None, b"", now());
    assert!(list.body.contains("MELD-2026-1"), "{}", list.body);
    let listed_for_other_agency = engine.grants_api("GET", WASSER, None, b"", now());
    assert!(!listed_for_other_agency.body.contains("MELD-2026-1"));
    let reply = engine.grants_api("DELETE", WASSER, Some(&id), b"", now());
    assert_eq!(reply.status, 403);
    let reply = engine.grants_api("DELETE", OFFICIAL, Some(&id), b"", now());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(engine.may_invite(ERIKA, OFFICIAL, false, now()).is_some());
    other.poll(now());
    assert!(
        other.may_invite(ERIKA, OFFICIAL, false, now()).is_some(),
        "revocation reloads"
    );
    assert_eq!(
        engine
            .grants_api("DELETE", OFFICIAL, Some(&id), b"", now())
            .status,
        404
    );
}

#[test]
fn media_verdicts_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    policy_copy(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "secret\n").unwrap();
    let scanner =
        serde_json::json!({"scanner": {"url": "http://127.0.0.1:9", "token_file": token}});
    let engine = engine(dir.path(), "amt.example.de", scanner);
    assert!(
        engine.media_scan_needed(true),
        "no policy yet: scan (fail closed)"
    );
    assert!(!engine.media_scan_needed(false));
    engine.poll(now());
    assert!(engine.media_scan_needed(true));
    assert_eq!(
        engine.scanner().unwrap().token().unwrap().as_deref(),
        Some("secret")
    );
    assert_eq!(
        engine.media_verdict(200, br#"{"clean": true, "signature": null}"#),
        None
    );
    let refusal = engine
        .media_verdict(
            200,
            br#"{"clean": false, "signature": "Eicar-Test-Signature"}"#,
        )
        .unwrap();
    assert_eq!(refusal.rule, "media-infected");
    assert!(refusal.reason.contains("Eicar-Test-Signature"));
    assert_eq!(
        engine.media_verdict(503, b"{}").unwrap().rule,
        "scanner-unavailable"
    );
    assert_eq!(
        engine.media_verdict(200, b"not json").unwrap().rule,
        "scanner-unavailable"
    );
    assert!(engine.scanner_unavailable("connection refused").is_some());
    let open = self::engine(
        dir.path(),
        "amt.example.de",
        serde_json::json!({"scanner": {"url": "http://x", "fail_closed": false}}),
    );
    open.poll(now());
    assert_eq!(open.scanner_unavailable("down"), None);
    let none = self::engine(dir.path(), "amt.example.de", serde_json::json!({}));
    assert!(!none.media_scan_needed(true));
}

#[test]
fn bad_configuration_is_a_typed_error() {
    for (json, needle) in [
        (
            r#"{"server_name": "bad name!", "policy_dir": "/p"}"#,
            "server_name",
        ),
        (
            r#"{"server_name": "a.example", "policy_dir": "/p", "scanner": {"url": "x", "token_file": "/nonexistent/t"}}"#,
            "/nonexistent/t",
        ),
        (
            r#"{"server_name": "a.example", "policy_dir": "/p", "reload_interval_ms": 0}"#,
            "reload_interval_ms",
        ),
    ] {
        let error = ModuleConfig::from_json(json)
            .map_err(|e| e.to_string())
            .and_then(|config| Engine::new(config).map(|_| ()).map_err(|e| e.to_string()))
            .unwrap_err();
        assert!(error.contains(needle), "{error}");
    }
}
