//! The file targets against real artefacts (rcgen certificates and CRL, a bundle signed with
//! govmx-policy), and the whole exporter with a fake clamd: cache semantics, timeouts, and
//! `promtool check metrics` on the live `/metrics` text.

mod support;

use std::time::{Duration, Instant, SystemTime};

use govmx_exporter::{Exporter, ca, config::Config, policy};

#[test]
fn ca_directory_by_profile_state_and_crl() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, crl) = support::write_ca(tmp.path());
    let facts = ca::collect(&certs, Some(&crl), SystemTime::now()).unwrap();
    let p = |name: &str| facts.profiles[name].clone();
    let summary = |name: &str| {
        let f = p(name);
        (f.valid, f.expired, f.revoked)
    };
    assert_eq!(summary("homeserver-tls"), (1, 1, 1));
    assert_eq!(summary("service-mtls"), (1, 0, 0));
    assert_eq!(summary("agency-identity"), (1, 0, 0));
    assert_eq!(summary("other"), (0, 0, 0));
    assert_eq!(facts.unreadable, 1);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days_left = |name: &str| (p(name).next_expiry.unwrap() - now + 3600) / 86_400;
    assert_eq!(days_left("homeserver-tls"), 40);
    assert_eq!(days_left("service-mtls"), 20);
    assert_eq!(days_left("agency-identity"), 10);
    let crl_facts = facts.crl.clone().unwrap();
    assert_eq!(crl_facts.revoked, 2);
    assert_eq!(crl_facts.number, Some(7));
    assert_eq!((crl_facts.next_update.unwrap() - now + 3600) / 86_400, 3);

    let snap = ca::snapshot(&facts);
    assert_eq!(
        snap.value(
            "govmx_ca_certificates",
            &[("profile", "homeserver-tls"), ("state", "revoked")]
        ),
        Some(1.0)
    );
    assert_eq!(
        snap.value("govmx_ca_crl_revoked_certificates", &[]),
        Some(2.0)
    );

    // A broken CRL is a failed collection, not zeros.
    std::fs::write(
        &crl,
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let err = ca::collect(&certs, Some(&crl), SystemTime::now()).unwrap_err();
    assert!(err.to_string().contains("crl"), "{err}");
}

#[test]
fn policy_bundle_verified_with_version_signers_and_age() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, trust) = support::write_policy(tmp.path());
    let facts = policy::collect(&bundle, &trust).unwrap();
    assert_eq!(facts.bundle_version, 5);
    assert_eq!(facts.signers, vec!["ed25519:alice", "ed25519:bob"]);
    assert_eq!(facts.threshold, 2);
    assert_eq!(facts.max_age, Some(7 * 86_400));
    assert_eq!(facts.servers, Some(2));
    let snap = policy::snapshot(&facts);
    let age = snap
        .value("govmx_policy_federation_list_issued_timestamp_seconds", &[])
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - age - 3600.0).abs() < 120.0,
        "issued {age}, now {now}"
    );

    // A file changed after signing: verification fails, the collection fails.
    let federation = bundle.join("federation.yaml");
    let mut text = std::fs::read_to_string(&federation).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&federation, text).unwrap();
    let err = policy::collect(&bundle, &trust).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not match the signed manifest"),
        "{err}"
    );
}

fn config(yaml: &str) -> Config {
    govmx_service::config::from_yaml_str_validated(yaml, "exporter.yaml").unwrap()
}

/// The whole exporter: every target collected in parallel; a down target (Synapse on a closed
/// port) is `govmx_up 0` while the others carry values; a target that breaks later keeps its
/// values; the text passes `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_serves_cache_and_keeps_values_of_failing_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let (certs, crl) = support::write_ca(tmp.path());
    let (bundle, trust) = support::write_policy(tmp.path());
    let clamd = support::fake_clamd(
        b"ClamAV 1.4.3/27471/Mon Nov 23 09:12:00 2026\0",
        Duration::ZERO,
    )
    .await;
    let synapse = support::closed_port();
    let yaml = format!(
        "admin_listen: 127.0.0.1:0\ninterval: 10s\n\
         synapse:\n  url: http://{synapse}\n  access_token: secret\n  timeout: 2s\n\
         clamd:\n  address: {clamd}\n  timeout: 2s\n\
         ca:\n  certs_dir: {}\n  crl: {}\n\
         policy:\n  bundle_dir: {}\n  trust: {}\n",
        certs.display(),
        crl.display(),
        bundle.display(),
        trust.display()
    );
    let exporter = Exporter::bind(config(&yaml)).await.unwrap();
    let mut results = exporter.collect_once().await;
    results.sort();
    assert_eq!(
        results,
        vec![
            ("ca", true),
            ("clamd", true),
            ("policy", true),
            ("synapse", false)
        ]
    );
    let text = exporter.render().unwrap();
    for want in [
        "govmx_up{target=\"synapse\"} 0",
        "govmx_up{target=\"clamd\"} 1",
        "govmx_up{target=\"ca\"} 1",
        "govmx_up{target=\"policy\"} 1",
        "govmx_clamd_signature_db_version 27471.0",
        "govmx_clamd_signature_db_timestamp_seconds 1795425120.0",
        "govmx_clamd_build_info{engine=\"1.4.3\"} 1.0",
        "govmx_ca_certificates{profile=\"homeserver-tls\",state=\"revoked\"} 1.0",
        "govmx_ca_crl_number 7.0",
        "govmx_policy_bundle_version 5.0",
        "govmx_policy_bundle_signer_info{key_id=\"ed25519:bob\"} 1.0",
        "govmx_exporter_collect_failures_total{target=\"synapse\"} 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("last_success_timestamp_seconds{target=\"synapse\"}"));

    // The bundle breaks: policy goes down, its values stay, the others are untouched.
    std::fs::remove_file(bundle.join("SIGNATURES.json")).unwrap();
    exporter.collect_once().await;
    let text = exporter.render().unwrap();
    assert!(text.contains("govmx_up{target=\"policy\"} 0"), "{text}");
    assert!(text.contains("govmx_policy_bundle_version 5.0"), "{text}");
    assert!(text.contains("govmx_up{target=\"ca\"} 1"), "{text}");
    assert!(text.contains("govmx_exporter_last_success_timestamp_seconds{target=\"policy\"}"));

    let classic = govmx_exporter::exposition::to_classic_text(&text);
    let (ok, out) = support::promtool(&["check", "metrics"], Some(&classic)).unwrap();
    assert!(ok, "promtool check metrics:\n{out}\n{text}");
}

/// A scrape never waits on a target: while the first clamd collection hangs until its timeout,
/// `/metrics` on the admin listener answers at once and `/readyz` says why it is not ready; after
/// the timeout the exporter is ready and counts the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_does_not_wait_for_a_hanging_target() {
    let clamd = support::fake_clamd(b"ClamAV 1.4.3\0", Duration::from_secs(30)).await;
    let yaml = format!(
        "admin_listen: 127.0.0.1:0\ninterval: 10s\nclamd:\n  address: {clamd}\n  timeout: 1s\n"
    );
    let exporter = Exporter::bind(config(&yaml)).await.unwrap();
    let addr = exporter.admin_addr().unwrap();
    let (trigger, shutdown) = govmx_service::Shutdown::manual();
    let started = Instant::now();
    let task = tokio::spawn(exporter.serve(shutdown));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

    let readyz = get("/readyz").await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(readyz.text().await.unwrap().contains("first collection"));
    let scrape = Instant::now();
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        scrape.elapsed() < Duration::from_millis(200),
        "scrape took {:?}",
        scrape.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the collection is still hanging"
    );
    assert!(text.contains("govmx_up{target=\"clamd\"} 0"), "{text}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while get("/readyz").await.unwrap().status() != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready after the clamd timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "ready after {took:?}, before the timeout"
    );
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        text.contains("govmx_exporter_collect_failures_total{target=\"clamd\"} 1"),
        "{text}"
    );
    trigger.trigger();
    task.await.unwrap().unwrap();
}

/// Garbage where the CRL should be is a failed collection, never a panic; truncated and bit-flipped
/// versions of a real CRL too.
#[test]
fn corrupt_crls_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, crl) = support::write_ca(tmp.path());
    let good = std::fs::read(&crl).unwrap();
    assert!(ca::read_crl(&good).is_ok());
    let text = String::from_utf8(good.clone()).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    for cut in (0..body.len()).step_by(7) {
        let pem = format!(
            "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            &body[..cut]
        );
        let _ = ca::read_crl(pem.as_bytes());
    }
    for i in (0..good.len()).step_by(3) {
        let mut bytes = good.clone();
        bytes[i] ^= 0x55;
        let _ = ca::read_crl(&bytes);
    }
    for garbage in [
        &b""[..],
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        b"\xff\xfe",
    ] {
        assert!(ca::read_crl(garbage).is_err());
    }
}
