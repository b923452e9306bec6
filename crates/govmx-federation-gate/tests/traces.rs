//! Traces end to end with the real binary: a gate with `tracing:` pointing at an in-test OTLP/HTTP
//! receiver continues the trace of an incoming `traceparent`, forwards its own `traceparent`
//! (same trace id) to the upstream, writes the trace id into its log lines, and flushes its
//! spans on SIGTERM.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use govmx_federation_gate::policy::testing::{TestServer, TestSigner, write_bundle, write_trust};
use govmx_federation_gate::signature;
use govmx_service::testing::OtlpReceiver;
use support::{EVIL, FakeUpstream, GOOD, GOOD_KEY_ID, OURS, eventually, make_tls};

const BIN: &str = env!("CARGO_BIN_EXE_govmx-federation-gate");
const DEADLINE: Duration = Duration::from_secs(20);

/// The trace a client (or an edge in front of the gate) started.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_keeps_its_trace_id_through_the_gate_into_spans_logs_and_upstream() {
    let receiver = OtlpReceiver::start();
    let upstream = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = make_tls(&tmp);
    let signer = TestSigner::from_seed("ed25519:alice", 1);
    write_trust(&tmp.path().join("trust.yaml"), 1, &[&signer]).unwrap();
    let good_key = SigningKey::from_bytes(&[42; 32]);
    let mut good = TestServer::new(GOOD);
    good.signing_keys
        .push((GOOD_KEY_ID.to_owned(), good_key.verifying_key()));
    write_bundle(
        &tmp.path().join("policy"),
        1,
        &[TestServer::new(OURS), good],
        &[&signer],
    )
    .unwrap();
    let (inbound_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "server_name: {OURS}\n\
         inbound: {{listen: \"127.0.0.1:{inbound_port}\", tls_cert: {cert}, tls_key: {key}, upstream: \"http://{upstream}\"}}\n\
         admin: {{listen: \"127.0.0.1:{admin_port}\"}}\n\
         policy: {{dir: {dir}/policy, trust: {dir}/trust.yaml, last_known_good_dir: {dir}/lkg, reload_interval: 1h, max_age: 2h}}\n\
         audit_log: {dir}/audit.jsonl\n\
         tracing:\n  otlp_endpoint: \"{endpoint}\"\n  service_name: gate-under-test\n",
        cert = cert.display(),
        key = key.display(),
        dir = tmp.path().display(),
        upstream = upstream.addr,
        endpoint = receiver.endpoint(),
    );
    let config_path = tmp.path().join("gate.yaml");
    std::fs::write(&config_path, config).unwrap();
    let log_path = tmp.path().join("gate.log");
    let mut child = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .arg("--log-format")
            .arg("plain")
            .env("GOVMX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    eventually(DEADLINE, "the gate to become ready", || async {
        let res = reqwest::get(&ready).await.ok()?;
        (res.status().as_u16() == 200).then_some(())
    })
    .await;

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .http1_only()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Aland.example";
    let authorization =
        signature::sign(&good_key, GOOD_KEY_ID, "GET", path, GOOD, OURS, None).unwrap();
    let res = client
        .get(format!("https://127.0.0.1:{inbound_port}{path}"))
        .header("authorization", authorization.to_string())
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());

    // The upstream continues the same trace, with the gate's span as parent.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let forwarded = seen[0].headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"));
    let gate_span = parts[2].to_owned();
    assert_ne!(gate_span, CLIENT_SPAN, "the gate's own span is the parent");

    // A refused request of the same trace: its log line carries the trace id.
    let denied_path = "/_matrix/federation/v1/state/!r:land.example?event_id=$e";
    let other_key = SigningKey::from_bytes(&[7; 32]);
    let authorization = signature::sign(
        &other_key,
        "ed25519:other",
        "GET",
        denied_path,
        EVIL,
        OURS,
        None,
    )
    .unwrap();
    let res = client
        .get(format!("https://127.0.0.1:{inbound_port}{denied_path}"))
        .header("authorization", authorization.to_string())
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let log = eventually(DEADLINE, "the denial log line", || async {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.contains("federation request denied").then_some(log)
    })
    .await;
    let line = log
        .lines()
        .find(|l| l.contains("federation request denied"))
        .unwrap();
    assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");

    // SIGTERM: a clean exit that flushes the spans.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(DEADLINE, "the gate to exit", || {
        let status = child.0.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert_eq!(
        exit.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );

    let spans = receiver
        .wait_for(DEADLINE, |spans| {
            spans.iter().filter(|s| s.trace_id == TRACE_ID).count() >= 2
        })
        .await
        .unwrap();
    assert!(receiver.bad_requests().is_empty());
    let forwarded_span = spans
        .iter()
        .find(|s| s.span_id == gate_span)
        .unwrap_or_else(|| panic!("the span the upstream saw as parent: {spans:#?}"));
    assert_eq!(forwarded_span.trace_id, TRACE_ID);
    assert_eq!(forwarded_span.parent_span_id, CLIENT_SPAN);
    assert_eq!(forwarded_span.name, "GET");
    assert_eq!(forwarded_span.kind, 2, "server span");
    assert_eq!(
        forwarded_span.service_name.as_deref(),
        Some("gate-under-test")
    );
    assert_eq!(
        forwarded_span.attribute("http.response.status_code"),
        Some("200")
    );
    assert_eq!(
        forwarded_span.attribute("url.path"),
        Some("/_matrix/federation/v1/query/profile")
    );
    let denied_span = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID && s.span_id != gate_span)
        .unwrap();
    assert_eq!(denied_span.parent_span_id, CLIENT_SPAN);
    assert_eq!(
        denied_span.attribute("http.response.status_code"),
        Some("403")
    );
}
