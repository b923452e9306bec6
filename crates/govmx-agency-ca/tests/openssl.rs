//! Independent checks with the `openssl` command line: CSRs made by OpenSSL go through the whole
//! enrollment path (`CaDir::enroll`), and `openssl verify` accepts every profile's chain with our
//! root (and with the CRL, until the certificate is revoked). OpenSSL also decrypts the root key.

use std::{path::Path, process::Command};

use base64::Engine as _;
use govmx_agency_ca::{
    AgencyDirectory, CaDir, CaSettings, HierarchyOptions, Profile,
    ca::RevocationReason,
    keys::MIN_KDF_ITERATIONS,
    log::audit,
    store::EnrollRequest,
    verify::{VerifyInput, verify_identity},
};
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
    serverNames: ["127.0.0.2:8448", "*.musterstadt.example"]
    officialAccounts: ["@amt-*:127.0.0.2:8448"]
"#;

const PASSPHRASE: &str = "openssl test passphrase";

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn open_ca(dir: &Path, now: OffsetDateTime) -> CaDir {
    let mut options = HierarchyOptions::new("Testland");
    options.kdf_iterations = MIN_KDF_ITERATIONS;
    CaDir::init(
        dir,
        &options,
        PASSPHRASE.as_bytes(),
        CaSettings::default(),
        now,
    )
    .unwrap();
    let agencies = AgencyDirectory::parse("agencies.yaml", AGENCIES.as_bytes(), now).unwrap();
    CaDir::open(dir, CaSettings::default(), Some(agencies)).unwrap()
}

/// Makes a P-256 key and CSR with OpenSSL; returns the CSR PEM.
fn openssl_csr(dir: &Path, name: &str, subject: &str, san: &str) -> Vec<u8> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let (ok, text) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
            "-addext",
            &format!("subjectAltName={san}"),
        ],
    );
    assert!(ok, "{text}");
    std::fs::read(dir.join(csr)).unwrap()
}

#[test]
fn openssl_verifies_every_profile_and_sees_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now = OffsetDateTime::now_utc();
    let ca = open_ca(&dir.join("ca"), now);
    std::fs::write(dir.join("root.pem"), ca.ca().root_pem()).unwrap();
    std::fs::write(dir.join("intermediate.pem"), ca.ca().intermediate_pem()).unwrap();

    // The root key is a standard encrypted PKCS#8 file.
    let (ok, text) = openssl(
        dir,
        &[
            "pkey",
            "-in",
            "ca/root-key.pem",
            "-passin",
            &format!("pass:{PASSPHRASE}"),
            "-noout",
        ],
    );
    assert!(ok, "{text}");
    let (ok, _) = openssl(
        dir,
        &[
            "pkey",
            "-in",
            "ca/root-key.pem",
            "-passin",
            "pass:wrong passphrase!",
            "-noout",
        ],
    );
    assert!(!ok, "a wrong passphrase must not decrypt the root key");

    let master = base64::engine::general_purpose::STANDARD_NO_PAD.encode(
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
            .verifying_key()
            .as_bytes(),
    );
    let cases = [
        (
            Profile::HomeserverTls,
            "/CN=127.0.0.2",
            "IP:127.0.0.2",
            Some("sslserver"),
        ),
        (
            Profile::ServiceMtls,
            "/CN=ca.musterstadt.example",
            "DNS:ca.musterstadt.example",
            Some("sslclient"),
        ),
        (
            Profile::AgencyIdentity,
            "/CN=@amt-1:127.0.0.2:8448",
            "URI:matrix:u/amt-1:127.0.0.2:8448",
            None,
        ),
    ];
    let mut identity = None;
    for (profile, subject, san, purpose) in cases {
        let name = profile.as_str();
        let csr = openssl_csr(dir, name, subject, san);
        let (token, _) = ca
            .create_token("buergeramt", profile, None, Duration::hours(1), now)
            .unwrap();
        let enrolled = ca
            .enroll(
                &EnrollRequest {
                    token: &token,
                    profile,
                    csr: &csr,
                    master_key: (profile == Profile::AgencyIdentity).then_some(master.as_str()),
                },
                now,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::write(dir.join(format!("{name}.pem")), enrolled.issued.cert_pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-chain.pem")), &enrolled.chain_pem).unwrap();
        let leaf = format!("{name}.pem");
        let (ok, text) = openssl(
            dir,
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "intermediate.pem",
                &leaf,
            ],
        );
        assert!(
            ok && text.contains(&format!("{leaf}: OK")),
            "{name}: {text}"
        );
        if profile == Profile::HomeserverTls {
            // What Synapse checks for an IP-literal server name (see the loopback recipe).
            let (ok, text) = openssl(
                dir,
                &[
                    "verify",
                    "-verify_ip",
                    "127.0.0.2",
                    "-CAfile",
                    "root.pem",
                    "-untrusted",
                    "intermediate.pem",
                    &leaf,
                ],
            );
            assert!(ok, "{text}");
            let (ok, _) = openssl(
                dir,
                &[
                    "verify",
                    "-verify_ip",
                    "127.0.0.3",
                    "-CAfile",
                    "root.pem",
                    "-untrusted",
                    "intermediate.pem",
                    &leaf,
                ],
            );
            assert!(!ok, "the certificate must not be valid for another IP");
        }
        if let Some(purpose) = purpose {
            let (ok, text) = openssl(
                dir,
                &[
                    "verify",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    "root.pem",
                    "-untrusted",
                    "intermediate.pem",
                    &leaf,
                ],
            );
            assert!(ok, "{name} {purpose}: {text}");
        }
        // The same token cannot be used twice.
        let again = ca.enroll(
            &EnrollRequest {
                token: &token,
                profile,
                csr: &csr,
                master_key: (profile == Profile::AgencyIdentity).then_some(master.as_str()),
            },
            now,
        );
        assert!(
            again
                .as_ref()
                .is_err_and(|e| e.to_string().contains("was already used")),
            "{again:?}"
        );
        if profile == Profile::AgencyIdentity {
            identity = Some(enrolled);
        }
    }

    // With the CRL: OK, then revoked.
    let identity = identity.unwrap();
    std::fs::write(dir.join("crl.pem"), ca.crl_pem().unwrap()).unwrap();
    let crl_verify = |dir: &Path| {
        openssl(
            dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "intermediate.pem",
                "-CRLfile",
                "crl.pem",
                "agency-identity.pem",
            ],
        )
    };
    let (ok, text) = crl_verify(dir);
    assert!(ok, "{text}");
    let verify_ours = |crl: &[u8]| {
        verify_identity(&VerifyInput {
            chain_pem: identity.chain_pem.as_bytes(),
            root_pem: ca.ca().root_pem().as_bytes(),
            expected_user_id: "@amt-1:127.0.0.2:8448",
            current_master_key: &master,
            crl,
            now,
        })
    };
    assert_eq!(
        verify_ours(ca.crl_pem().unwrap().as_bytes())
            .unwrap()
            .agency_name,
        "Bürgeramt Musterstadt"
    );

    let crl = ca
        .revoke(
            &identity.issued.serial,
            RevocationReason::KeyCompromise,
            now,
        )
        .unwrap();
    std::fs::write(dir.join("crl.pem"), &crl).unwrap();
    let (ok, text) = crl_verify(dir);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = openssl(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(
        ok && text.contains("Next Update") && text.contains("Key Compromise"),
        "{text}"
    );
    assert_eq!(
        verify_ours(crl.as_bytes()).unwrap_err().to_string(),
        "revoked"
    );
    assert!(
        ca.revoke(
            &identity.issued.serial,
            RevocationReason::KeyCompromise,
            now
        )
        .is_err_and(|e| e.to_string().contains("already revoked"))
    );
    assert!(
        ca.revoke("4242", RevocationReason::KeyCompromise, now)
            .is_err_and(|e| e.to_string() == "serial 4242 was not issued by this CA")
    );

    // The real log audits; an altered entry is reported at its own line.
    let log = std::fs::read_to_string(ca.log_path()).unwrap();
    let report = audit(log.as_bytes()).unwrap();
    // init + 3 × (token + issued) + revoked
    assert_eq!(report.entries, 8);
    let target = identity.issued.serial.as_str();
    let line = log
        .lines()
        .position(|l| l.contains(&format!("\"issued\":{{\"serial\":\"{target}\"")))
        .unwrap()
        + 1;
    let altered = log.replacen(
        "\"profile\":\"agency-identity\",\"agency\":\"buergeramt\"",
        "\"profile\":\"agency-identity\",\"agency\":\"wasserbehoerde\"",
        1,
    );
    let err = audit(altered.as_bytes()).unwrap_err();
    assert_eq!(err.line, line as u64, "{err}");
}
