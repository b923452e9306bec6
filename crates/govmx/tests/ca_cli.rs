//! End-to-end tests of `govmx ca …`: the real binary in temporary directories, CSRs from
//! OpenSSL, and `openssl verify` as the independent check of the issued chain.

use std::fs;
use std::path::Path;
use std::process::Command;

/// RFC 8032 test vector public keys (valid Ed25519 points), unpadded base64.
const MASTER_KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ROTATED_KEY: &str = "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw";
const USER: &str = "@amt-1:127.0.0.2:8448";

fn policies() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .display()
        .to_string()
}

/// Runs `govmx ca <args>` in `cwd`; returns (exit code, stdout, stderr).
fn govmx(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_govmx"))
        .arg("ca")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run govmx");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn openssl(cwd: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("openssl is installed");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn init_token_issue_verify_revoke_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    fs::write(cwd.join("pass"), "a long enough passphrase\n").unwrap();
    let (code, out, err) = govmx(
        cwd,
        &[
            "init",
            "--dir",
            "ca",
            "--name",
            "Testland",
            "--passphrase-file",
            "pass",
            "--kdf-iterations",
            "10000",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("root SHA-256: "), "{out}");
    // A second init refuses to overwrite.
    let (code, _, err) = govmx(
        cwd,
        &[
            "init",
            "--dir",
            "ca",
            "--name",
            "Testland",
            "--passphrase-file",
            "pass",
            "--kdf-iterations",
            "10000",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already holds a CA"), "{err}");

    // An identity token bound to the account; a CSR from OpenSSL.
    let (code, token, err) = govmx(
        cwd,
        &[
            "token",
            "--dir",
            "ca",
            "--policies",
            &policies(),
            "--agency",
            "buergeramt-musterstadt",
            "--profile",
            "agency-identity",
            "--subject",
            USER,
            "--ttl",
            "10m",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("govmxca_"), "{token}");
    let (ok, text) = openssl(
        cwd,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "amt.key",
            "-out",
            "amt.csr",
            "-subj",
            &format!("/CN={USER}"),
            "-addext",
            "subjectAltName=URI:matrix:u/amt-1:127.0.0.2:8448",
        ],
    );
    assert!(ok, "{text}");

    // Missing master key: refused, the token stays unused.
    let policies = policies();
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "issue",
            "--dir",
            "ca",
            "--policies",
            &policies,
            "--token",
            &token,
            "--profile",
            "agency-identity",
            "--csr",
            "amt.csr",
            "--out",
            "chain.pem",
        ];
        args.extend_from_slice(extra);
        govmx(cwd, &args)
    };
    let (code, _, err) = issue(&[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("refused: profile agency-identity needs the cross-signing master key"),
        "{err}"
    );
    let (code, _, err) = issue(&["--master-key", MASTER_KEY]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = issue(&["--master-key", MASTER_KEY]);
    assert_eq!(code, 2);
    assert!(err.contains("was already used"), "{err}");

    // Independent check: OpenSSL accepts the chain with our root.
    let chain = fs::read_to_string(cwd.join("chain.pem")).unwrap();
    let leaf_end = chain.find("-----END CERTIFICATE-----\n").unwrap() + 26;
    fs::write(cwd.join("leaf.pem"), &chain[..leaf_end]).unwrap();
    fs::write(cwd.join("intermediate.pem"), &chain[leaf_end..]).unwrap();
    let (ok, text) = openssl(
        cwd,
        &[
            "verify",
            "-CAfile",
            "ca/root.pem",
            "-untrusted",
            "intermediate.pem",
            "leaf.pem",
        ],
    );
    assert!(ok, "{text}");

    // Our verifier: verified, then each reason.
    let verify = |user: &str, key: &str| {
        govmx(
            cwd,
            &[
                "verify-chain",
                "--chain",
                "chain.pem",
                "--root",
                "ca/root.pem",
                "--user",
                user,
                "--master-key",
                key,
                "--crl",
                "ca/crl.pem",
            ],
        )
    };
    let (code, out, err) = verify(USER, MASTER_KEY);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("verified: {USER} is an official account of Bürgeramt Musterstadt (buergeramt-musterstadt)")), "{out}");
    let (code, out, _) = verify("@amt-2:127.0.0.2:8448", MASTER_KEY);
    assert_eq!(
        (code, out.trim()),
        (
            1,
            "NOT verified: certificate is for @amt-1:127.0.0.2:8448, not @amt-2:127.0.0.2:8448"
        )
    );
    let (code, out, _) = verify(USER, ROTATED_KEY);
    assert_eq!(code, 1);
    assert_eq!(
        out.trim(),
        format!("NOT verified: master key mismatch: certified {MASTER_KEY}, current {ROTATED_KEY}")
    );

    // Revoke: the stored CRL is re-signed and the same check fails with "revoked".
    let (_, text) = openssl(cwd, &["x509", "-in", "leaf.pem", "-noout", "-serial"]);
    let serial = text.trim().trim_start_matches("serial=").to_owned();
    let (code, out, err) = govmx(
        cwd,
        &[
            "revoke",
            "--dir",
            "ca",
            "--reason",
            "key-compromise",
            &serial,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = verify(USER, MASTER_KEY);
    assert_eq!((code, out.trim()), (1, "NOT verified: revoked"));
    let (code, _, err) = govmx(cwd, &["revoke", "--dir", "ca", &serial]);
    assert_eq!(code, 2);
    assert!(err.contains("already revoked"), "{err}");
    let (code, crl, _) = govmx(cwd, &["crl", "--dir", "ca", "--out", "crl-copy.pem"]);
    assert_eq!(code, 0);
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    let (ok, text) = openssl(
        cwd,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca/root.pem",
            "-untrusted",
            "intermediate.pem",
            "-CRLfile",
            "crl-copy.pem",
            "leaf.pem",
        ],
    );
    assert!(!ok && text.contains("certificate revoked"), "{text}");

    // Audit: OK on the real log; an altered entry fails at its line.
    let (code, out, err) = govmx(cwd, &["audit", "--dir", "ca"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK, 4 entries"), "{out}"); // init, token, issued, revoked
    let log = fs::read_to_string(cwd.join("ca/issuance.log")).unwrap();
    fs::write(
        cwd.join("altered.log"),
        log.replacen(
            "\"reason\":\"key-compromise\"",
            "\"reason\":\"superseded\"",
            1,
        ),
    )
    .unwrap();
    let (code, _, err) = govmx(cwd, &["audit", "--log", "altered.log"]);
    assert_eq!(code, 2);
    assert!(err.contains("line 4: entry was altered"), "{err}");
}

#[test]
fn refusals_are_precise() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    fs::write(cwd.join("pass"), "a long enough passphrase\n").unwrap();
    fs::write(cwd.join("short"), "short\n").unwrap();
    let (code, _, err) = govmx(
        cwd,
        &[
            "init",
            "--dir",
            "weak",
            "--name",
            "X",
            "--passphrase-file",
            "short",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("passphrase is too short: 5 bytes"), "{err}");
    let (code, _, err) = govmx(
        cwd,
        &[
            "init",
            "--dir",
            "ca",
            "--name",
            "Testland",
            "--passphrase-file",
            "pass",
            "--kdf-iterations",
            "10000",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = govmx(
        cwd,
        &[
            "token",
            "--dir",
            "ca",
            "--policies",
            &policies(),
            "--agency",
            "nobody",
            "--profile",
            "homeserver-tls",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown agency \"nobody\""), "{err}");
    let (code, token, _) = govmx(
        cwd,
        &[
            "token",
            "--dir",
            "ca",
            "--policies",
            &policies(),
            "--agency",
            "buergeramt-musterstadt",
            "--profile",
            "homeserver-tls",
        ],
    );
    assert_eq!(code, 0);
    // A CA:TRUE request and another agency's server: each refused with its reason.
    let (ok, text) = openssl(
        cwd,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "ca-true.csr",
            "-subj",
            "/CN=127.0.0.2",
            "-addext",
            "subjectAltName=IP:127.0.0.2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        cwd,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "foreign.csr",
            "-subj",
            "/CN=127.0.0.4",
            "-addext",
            "subjectAltName=IP:127.0.0.4",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        cwd,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "rsa.csr",
            "-subj",
            "/CN=127.0.0.2",
        ],
    );
    assert!(ok, "{text}");
    for (csr, expect) in [
        (
            "ca-true.csr",
            "csr requests a CA certificate (basicConstraints CA:TRUE); never granted",
        ),
        (
            "foreign.csr",
            "name \"127.0.0.4\" does not belong to agency \"buergeramt-musterstadt\"",
        ),
        (
            "rsa.csr",
            "wrong key type: RSA (1.2.840.113549.1.1.1); only ECDSA P-256 keys are certified",
        ),
    ] {
        let (code, out, err) = govmx(
            cwd,
            &[
                "issue",
                "--dir",
                "ca",
                "--policies",
                &policies(),
                "--token",
                token.trim(),
                "--profile",
                "homeserver-tls",
                "--csr",
                csr,
            ],
        );
        assert_eq!(code, 2, "{csr}: {out}");
        assert!(out.is_empty(), "{csr}: no certificate on a refusal: {out}");
        assert!(err.contains(expect), "{csr}: {err}");
    }
}
