//! Tests of the real `govmx-federation-gate` binary: exit 64 on a bad config before binding,
//! and a clean start, health check and SIGTERM shutdown with a good one.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use govmx_federation_gate::policy::testing::{TestServer, TestSigner, write_bundle, write_trust};
use support::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_govmx-federation-gate");

/// Kills the child process when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_config_exits_64_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("gate.yaml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap();

    std::fs::write(
        &config,
        example.replace("shadow: false", "shadow: false\nshaddow: true"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gate.yaml:") && stderr.contains("unknown field `shaddow`"),
        "{stderr}"
    );

    std::fs::write(&config, &example).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("inbound.tls_cert: /etc/govmx/gate/tls/fullchain.pem is not a readable file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_serves_health_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = support::make_tls(&tmp);
    let signer = TestSigner::from_seed("ed25519:alice", 1);
    write_trust(&tmp.path().join("trust.yaml"), 1, &[&signer]).unwrap();
    write_bundle(
        &tmp.path().join("policy"),
        3,
        &[
            TestServer::new("land.example"),
            TestServer::new("good.example"),
        ],
        &[&signer],
    )
    .unwrap();
    let admin_port = free_port();
    let config = format!(
        "server_name: land.example\n\
         inbound: {{listen: \"127.0.0.1:0\", tls_cert: {cert}, tls_key: {key}, upstream: \"http://127.0.0.1:9\"}}\n\
         outbound: {{listen: \"127.0.0.1:0\"}}\n\
         admin: {{listen: \"127.0.0.1:{admin_port}\"}}\n\
         policy: {{dir: {dir}/policy, trust: {dir}/trust.yaml, last_known_good_dir: {dir}/lkg, reload_interval: 1s, max_age: 1h}}\n\
         audit_log: {dir}/audit.jsonl\n",
        cert = cert.display(),
        key = key.display(),
        dir = tmp.path().display(),
    );
    let config_path = tmp.path().join("gate.yaml");
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config_path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    eventually(
        Duration::from_secs(20),
        "the binary to become ready",
        || async {
            let res = reqwest::get(&ready).await.ok()?;
            (res.status().as_u16() == 200).then_some(())
        },
    )
    .await;
    let explain = reqwest::get(format!(
        "http://127.0.0.1:{admin_port}/explain?origin=good.example"
    ))
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap();
    assert_eq!(explain["decision"]["verdict"], "allow", "{explain}");
    assert_eq!(explain["list_version"], 3);
    // The last-known-good copy was written after the first successful verification.
    assert!(tmp.path().join("lkg/bundle/SIGNATURES.json").is_file());

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(Duration::from_secs(20), "the binary to exit", || {
        let status = child.0.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert_eq!(exit.code(), Some(0));
}
