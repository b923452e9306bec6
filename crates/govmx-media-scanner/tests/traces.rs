//! Traces end to end with the real binary: a scanner with `tracing:` pointing at an in-test
//! OTLP/HTTP receiver continues the trace of an incoming `traceparent`, forwards its own
//! `traceparent` (same trace id) to Synapse, writes the trace id into its JSON log lines, and
//! flushes its spans on SIGTERM.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use govmx_service::testing::OtlpReceiver;
use support::{FakeUpstream, client, free_port, gate_dir, poll};

const BIN: &str = env!("CARGO_BIN_EXE_govmx-media-scanner");
const DEADLINE: Duration = Duration::from_secs(20);

/// The trace the federation gate (or a client) started: the same id as in the gate's test.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_keeps_its_trace_id_through_the_scanner_into_spans_logs_and_upstream() {
    let receiver = OtlpReceiver::start();
    let dir = gate_dir();
    let upstream = FakeUpstream::start(&dir.path().join("spool")).await;
    let (port, admin_port) = (free_port(), free_port());
    let d = dir.path().display();
    // No clamd listens on port 9: uploads are refused with 503 (and an error log line).
    let config = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\nupstream: http://{upstream}\n\
         clamd:\n  addresses: [\"127.0.0.1:9\"]\n  connect_timeout: 1s\n  health_interval: 1s\n\
         max_upload_size: 1MiB\nspool:\n  dir: {d}/spool\naudit_log: {d}/audit.jsonl\n\
         drain_timeout: 1s\n\
         tracing:\n  otlp_endpoint: \"{endpoint}\"\n  service_name: scanner-under-test\n  sample_ratio: 0.0\n",
        upstream = upstream.addr,
        endpoint = receiver.endpoint(),
    );
    let config_path = dir.path().join("scanner.yaml");
    std::fs::write(&config_path, config).unwrap();
    let log_path = dir.path().join("scanner.log");
    let mut child = Running(
        Command::new(BIN)
            .arg("-c")
            .arg(&config_path)
            .arg("--log-format")
            .arg("json")
            .env("GOVMX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = client();
    let healthz = format!("http://127.0.0.1:{admin_port}/healthz");
    poll("the scanner to listen", DEADLINE, async || {
        let res = http.get(&healthz).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;

    // `sample_ratio: 0.0` only applies to new traces: a sampled parent is always followed.
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let res = http
        .get(format!("http://127.0.0.1:{port}/_matrix/client/versions"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    let forwarded = received[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"));
    let scanner_span = parts[2].to_owned();
    assert_ne!(
        scanner_span, CLIENT_SPAN,
        "the scanner's own span is the parent"
    );

    // An upload of the same trace that clamd cannot scan: 503, logged with the trace id.
    let res = http
        .post(format!("http://127.0.0.1:{port}/_matrix/media/v3/upload"))
        .header("traceparent", &traceparent)
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(
        upstream.received().len(),
        1,
        "nothing unscanned reaches Synapse"
    );
    let line = poll("the error log line", DEADLINE, async || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["level"] == "ERROR" && l["span"]["name"] == "request")
    })
    .await;
    assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");

    // A request without traceparent starts a new trace, which `sample_ratio: 0.0` drops; it
    // is still forwarded with a (not sampled) traceparent.
    let res = http
        .get(format!("http://127.0.0.1:{port}/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let unsampled = upstream.received()[1].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(unsampled.ends_with("-00"), "{unsampled}");

    // SIGTERM: a clean exit that flushes the spans.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = poll("the scanner to exit", DEADLINE, async || {
        child.0.try_wait().unwrap()
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
        .find(|s| s.span_id == scanner_span)
        .unwrap_or_else(|| panic!("the span the upstream saw as parent: {spans:#?}"));
    assert_eq!(forwarded_span.trace_id, TRACE_ID);
    assert_eq!(forwarded_span.parent_span_id, CLIENT_SPAN);
    assert_eq!(forwarded_span.kind, 2, "server span");
    assert_eq!(
        forwarded_span.service_name.as_deref(),
        Some("scanner-under-test")
    );
    assert_eq!(
        forwarded_span.attribute("http.response.status_code"),
        Some("200")
    );
    let upload_span = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID && s.span_id != scanner_span)
        .unwrap();
    assert_eq!(upload_span.name, "POST");
    assert_eq!(
        upload_span.attribute("http.response.status_code"),
        Some("503")
    );
    let unsampled_trace = unsampled.split('-').nth(1).unwrap();
    assert!(
        spans.iter().all(|s| s.trace_id != unsampled_trace),
        "an unsampled trace is not exported"
    );
}
