//! The HTTPS issuance API end to end: a real `Server` on loopback (TLS certificate issued by the
//! CA itself), a reqwest client pinning the CA's root, CSRs from rcgen.

use govmx_agency_ca::{
    CaDir, CaSettings, HierarchyOptions, Profile, config::Config, keys::MIN_KDF_ITERATIONS,
    server::Server,
};
use govmx_service::{Shutdown, config::from_yaml_str_validated};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const AGENCIES: &str = r#"apiVersion: govmx.de/v1
kind: Agencies
metadata:
  name: test
  version: 1
  issued: 2026-01-01T00:00:00Z
agencies:
  - id: buergeramt
    name: Bürgeramt Musterstadt
    serverNames: ["127.0.0.2:8448"]
    officialAccounts: ["@amt-*:127.0.0.2:8448"]
"#;

fn csr(ip: &str) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::IpAddress(ip.parse().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn enroll_crl_status_and_matrix_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let ca_dir = tmp.path().join("ca");
    let mut options = HierarchyOptions::new("Testland");
    options.kdf_iterations = MIN_KDF_ITERATIONS;
    let dir = CaDir::init(
        &ca_dir,
        &options,
        b"server test passphrase",
        CaSettings::default(),
        now,
    )
    .unwrap();
    std::fs::write(tmp.path().join("agencies.yaml"), AGENCIES).unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nca_dir: {}\nagencies: {}\ntls: {{self_issued_hosts: [127.0.0.1]}}\nmax_request_bytes: 4096\n",
        ca_dir.display(),
        tmp.path().join("agencies.yaml").display()
    );
    let config: Config = from_yaml_str_validated(&yaml, "test.yaml").unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let admin = server.admin_addr().unwrap();
    let root = reqwest::Certificate::from_pem(server.root_pem().as_bytes()).unwrap();
    let (trigger, shutdown) = Shutdown::manual();
    let task = tokio::spawn(server.serve(shutdown));

    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let base = format!("https://{addr}/_govmx/ca/v1");
    let post = |body: Value| {
        let client = client.clone();
        let url = format!("{base}/enroll");
        async move {
            let res = client.post(url).json(&body).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };

    let (token, _) = dir
        .create_token(
            "buergeramt",
            Profile::HomeserverTls,
            None,
            Duration::hours(1),
            now,
        )
        .unwrap();
    let (status, body) =
        post(json!({"token": token, "profile": "homeserver-tls", "csr": csr("127.0.0.4")})).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"errcode": "GOVMX_NOT_ALLOWED", "error": "name \"127.0.0.4\" does not belong to agency \"buergeramt\""})
        )
    );
    let (status, body) =
        post(json!({"token": token, "profile": "homeserver-tls", "csr": "junk"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["errcode"], "GOVMX_CSR_REFUSED");
    let (status, body) =
        post(json!({"token": token, "profile": "homeserver-tls", "csr": csr("127.0.0.2")})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["chain"]
            .as_str()
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );
    let serial = body["serial"].as_str().unwrap().to_owned();
    let (status, body) =
        post(json!({"token": token, "profile": "homeserver-tls", "csr": csr("127.0.0.2")})).await;
    assert_eq!(status, 403);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(
        body["error"].as_str().unwrap().contains("was already used"),
        "{body}"
    );
    let (status, body) =
        post(json!({"token": "govmxca_x", "profile": "homeserver-tls", "csr": ""})).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"errcode": "M_FORBIDDEN", "error": "unknown enrollment token"})
        )
    );
    let (status, body) = post(json!({"token": "x", "profile": "root-ca", "csr": ""})).await;
    assert_eq!(status, 400);
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
    let (status, body) =
        post(json!({"token": "x", "profile": "root-ca", "csr": "a".repeat(5000)})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (413, Some("M_TOO_LARGE"))
    );
    let res = client
        .post(format!("{base}/enroll"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["errcode"], "M_BAD_JSON");
    let res = client.get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errcode"],
        "M_UNRECOGNIZED"
    );

    // Revoke through the directory (as `govmx ca revoke` does); the server serves the new CRL.
    dir.revoke(
        &serial,
        govmx_agency_ca::ca::RevocationReason::Superseded,
        now,
    )
    .unwrap();
    let crl = client.get(format!("{base}/crl")).send().await.unwrap();
    assert_eq!(crl.headers()["content-type"], "application/pkix-crl");
    let der = crl.bytes().await.unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&der).unwrap();
    let revoked: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(revoked, vec![serial]);
    assert!(parsed.next_update().is_some());

    let status: Value = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["revoked"], 1);
    // init, self-issued TLS, token, issued, revoked
    assert_eq!(status["log_entries"], 5);

    // Admin listener: health, readiness after the first CRL check, metrics.
    let admin_client = reqwest::Client::new();
    let metrics = admin_client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("govmx_ca_issued_total{profile=\"homeserver-tls\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("govmx_ca_refused_total{reason=\"token\"} 2"),
        "{metrics}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready = admin_client
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap();
        if ready.status().is_success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {}",
            ready.text().await.unwrap()
        );
        tokio::task::yield_now().await;
    }

    trigger.trigger();
    task.await.unwrap().unwrap();
}
