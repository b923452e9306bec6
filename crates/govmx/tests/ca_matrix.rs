//! `govmx ca publish` and `govmx ca verify-user` against real Synapse homeservers (the stack's
//! two-homeserver federation, behind govmx gates): the real binary publishes an official's chain
//! and a citizen on the other homeserver verifies it, then sees "revoked".
//!
//! The official's cross-signing keys are set up with matrix-sdk, as the official's client would.

use std::fs;
use std::path::Path;
use std::process::Command;

use govmx_stack::ports::free_loopback_ip;
use govmx_stack::{HomeserverSpec, Stack, StackSpec};
use matrix_sdk::ruma::UserId;
use matrix_sdk::ruma::api::client::uiaa::{
    AuthData, MatrixUserIdentifier, Password, UserIdentifier,
};

const PASSWORD: &str = "cli-e2e-password";
const AGENCY_NAME: &str = "Wasserbehörde Frankfurt";

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

async fn bootstrap_cross_signing(client: &matrix_sdk::Client, localpart: &str) {
    if let Err(error) = client.encryption().bootstrap_cross_signing(None).await {
        let session = error
            .as_uiaa_response()
            .unwrap_or_else(|| panic!("bootstrap_cross_signing: {error}"))
            .session
            .clone();
        let mut password = Password::new(
            UserIdentifier::Matrix(MatrixUserIdentifier::new(localpart.to_owned())),
            PASSWORD.to_owned(),
        );
        password.session = session;
        client
            .encryption()
            .bootstrap_cross_signing(Some(AuthData::Password(password)))
            .await
            .unwrap();
    }
}

/// Serves `path` (read per request) over plain HTTP on a loopback port from a thread; returns
/// the URL. The thread ends with the test process.
fn serve_file(path: std::path::PathBuf) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/_govmx/ca/v1/crl.pem",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = fs::read(&path).unwrap_or_default();
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-pem-file\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_verify_user_over_federation() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let mut spec = StackSpec::new(cwd.join("state"));
    for label in ["agency", "citizen"] {
        let ip = free_loopback_ip(&[8448, 8008]).unwrap();
        spec = spec.homeserver(HomeserverSpec::new(
            label,
            (ip, 8448).into(),
            (ip, 8008).into(),
        ));
    }
    let stack = Stack::start(spec).await.unwrap();
    let agency = stack.homeserver("agency").unwrap();
    let citizen = stack.homeserver("citizen").unwrap();
    let server = agency.server_name();
    let official = agency.user_id("amt-1");

    // The official: account, cross-signing keys (matrix-sdk), master key.
    agency.register_user("amt-1", PASSWORD).await.unwrap();
    let client = matrix_sdk::Client::builder()
        .homeserver_url(agency.client_url())
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username("amt-1", PASSWORD)
        .await
        .unwrap();
    bootstrap_cross_signing(&client, "amt-1").await;
    let official_id = UserId::parse(official.as_str()).unwrap();
    let master_key = govmx_identity::current_master_key(&client, &official_id)
        .await
        .unwrap();

    // The CA (CLI), the agency's policy, a token, a CSR from OpenSSL, the certificate.
    fs::write(cwd.join("pass"), "a long enough passphrase\n").unwrap();
    fs::create_dir(cwd.join("policies")).unwrap();
    fs::write(
        cwd.join("policies/agencies.yaml"),
        format!(
            "apiVersion: govmx.de/v1\nkind: Agencies\nmetadata:\n  name: cli\n  version: 1\n  \
             issued: 2026-01-01T00:00:00Z\nagencies:\n  - id: wasserbehoerde\n    name: {AGENCY_NAME}\n    \
             serverNames: [\"{server}\"]\n    officialAccounts: [\"@amt-*:{server}\"]\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = govmx(cwd, args);
        assert_eq!(code, 0, "govmx ca {args:?}: {out}{err}");
        out
    };
    run(&[
        "init",
        "--dir",
        "ca",
        "--name",
        "Land Hessen",
        "--passphrase-file",
        "pass",
        "--kdf-iterations",
        "10000",
    ]);
    let token = run(&[
        "token",
        "--dir",
        "ca",
        "--policies",
        "policies",
        "--agency",
        "wasserbehoerde",
        "--profile",
        "agency-identity",
        "--subject",
        &official,
    ]);
    let openssl = Command::new("openssl")
        .args([
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
            &format!("/CN={official}"),
            "-addext",
            &format!("subjectAltName=URI:matrix:u/amt-1:{server}"),
        ])
        .current_dir(cwd)
        .output()
        .expect("openssl is installed");
    assert!(openssl.status.success(), "{openssl:?}");
    run(&[
        "issue",
        "--dir",
        "ca",
        "--policies",
        "policies",
        "--token",
        token.trim(),
        "--profile",
        "agency-identity",
        "--csr",
        "amt.csr",
        "--master-key",
        &master_key,
        "--out",
        "chain.pem",
    ]);

    // Publish with the official's password (a temporary device).
    fs::write(cwd.join("official.pw"), format!("{PASSWORD}\n")).unwrap();
    let out = run(&[
        "publish",
        "--homeserver",
        &agency.client_url(),
        "--as",
        &official,
        "--password-file",
        "official.pw",
        "--chain",
        "chain.pem",
    ]);
    assert!(out.contains("de.govmx.identity_chain"), "{out}");

    // The citizen verifies with an access token on the citizen's own homeserver.
    let erika = citizen.register_user("erika", PASSWORD).await.unwrap();
    fs::write(cwd.join("erika.token"), &erika.access_token).unwrap();
    let citizen_url = citizen.client_url();
    let verify = || {
        govmx(
            cwd,
            &[
                "verify-user",
                &official,
                "--homeserver",
                &citizen_url,
                "--as",
                &erika.user_id,
                "--access-token-file",
                "erika.token",
                "--root",
                "ca/root.pem",
                "--crl",
                "ca/crl.pem",
            ],
        )
    };
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "verified: {official} is an official account of {AGENCY_NAME} (wasserbehoerde)"
        )),
        "{out}"
    );

    // Revoke (the serial from the issuance log) and verify again: "revoked", exit 1.
    let log = fs::read_to_string(cwd.join("ca/issuance.log")).unwrap();
    let serial = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|entry| {
            entry["event"]["issued"]["serial"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("an issued entry");
    run(&[
        "revoke",
        "--dir",
        "ca",
        &serial,
        "--reason",
        "key-compromise",
    ]);
    let (code, out, err) = verify();
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.trim(), format!("NOT verified: {official}: revoked"));

    // The same with the CRL fetched over HTTP (as from the CA's /_govmx/ca/v1/crl).
    let crl_url = serve_file(cwd.join("ca/crl.pem"));
    let (code, out, err) = govmx(
        cwd,
        &[
            "verify-user",
            &official,
            "--homeserver",
            &citizen_url,
            "--as",
            &erika.user_id,
            "--access-token-file",
            "erika.token",
            "--root",
            "ca/root.pem",
            "--crl",
            &crl_url,
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.trim(), format!("NOT verified: {official}: revoked"));

    // Not published, wrong login: precise messages.
    citizen.register_user("nobody", PASSWORD).await.unwrap();
    let (code, out, _) = govmx(
        cwd,
        &[
            "verify-user",
            &citizen.user_id("nobody"),
            "--homeserver",
            &citizen_url,
            "--as",
            &erika.user_id,
            "--access-token-file",
            "erika.token",
            "--root",
            "ca/root.pem",
            "--crl",
            "ca/crl.pem",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not published"), "{out}");
    fs::write(cwd.join("bad.token"), "syt_not_a_token").unwrap();
    let (code, _, err) = govmx(
        cwd,
        &[
            "verify-user",
            &official,
            "--homeserver",
            &citizen_url,
            "--as",
            &erika.user_id,
            "--access-token-file",
            "bad.token",
            "--root",
            "ca/root.pem",
            "--crl",
            "ca/crl.pem",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the access token was refused"), "{err}");
    drop(stack);
}
