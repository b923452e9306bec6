//! The upload gate against a real clamd and a fake Synapse: infected, clean, size limits (before
//! the body and mid-stream), scanner outage and recovery, disk spooling, sniffed MIME blocking,
//! pass-through, the scan API and the admin listener.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

const UPLOAD: &str = "/_matrix/media/v3/upload?filename=x.png";

async fn setup(extra: &str) -> (Clamd, FakeUpstream, Gate) {
    let clamd = Clamd::start().await;
    let dir = gate_dir();
    let upstream = FakeUpstream::start(&dir.path().join("spool")).await;
    let gate = start_gate(dir, upstream.addr, &[clamd.addr()], extra).await;
    (clamd, upstream, gate)
}

async fn json(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn eicar_upload_is_refused_and_never_reaches_synapse() {
    let (_clamd, upstream, gate) = setup("").await;
    let res = client()
        .post(gate.url(UPLOAD))
        .header("authorization", "Bearer syt_alice")
        .header("content-type", "image/png")
        .body(eicar())
        .send()
        .await
        .unwrap();
    let (status, body) = json(res).await;
    assert_eq!(status, 403);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_eq!(
        body["error"],
        format!("Upload rejected: virus found: {EICAR_SIG}")
    );
    assert!(upstream.received().is_empty());

    let audit = gate.audit_lines();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["verdict"], "infected");
    assert_eq!(audit[0]["signature"], EICAR_SIG);
    assert_eq!(audit[0]["size"], 68);
    assert_eq!(audit[0]["path"], "/_matrix/media/v3/upload");
    assert_eq!(audit[0]["client_ip"], "127.0.0.1");
    assert_eq!(audit[0]["sha256"], hex::encode(Sha256::digest(eicar())));
}

#[tokio::test]
async fn clean_png_is_forwarded_byte_exact_with_authorization() {
    let (_clamd, upstream, gate) = setup("").await;
    let png = tiny_png();
    let res = client()
        .post(gate.url(UPLOAD))
        .header("authorization", "Bearer syt_alice")
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-upstream"], "synapse");
    let (status, body) = json(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["content_uri"], "mxc://example.org/AbCdEf");

    let got = upstream.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri.to_string(), UPLOAD);
    assert_eq!(r.headers["authorization"], "Bearer syt_alice");
    assert_eq!(r.headers["content-type"], "image/png");
    assert_eq!(r.headers["content-length"], png.len().to_string().as_str());
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(&r.body[..], &png[..]);
    let audit = gate.audit_lines();
    assert_eq!(
        (audit[0]["verdict"].as_str(), audit[0]["mime"].as_str()),
        (Some("clean"), Some("image/png"))
    );

    // PUT to a created media id goes the same way.
    let res = client()
        .put(gate.url("/_matrix/media/v3/upload/example.org/AbCdEf"))
        .header("authorization", "Bearer syt_alice")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.received()[1].method, "PUT");
}

#[tokio::test]
async fn content_length_over_limit_is_refused_before_the_body() {
    let (_clamd, upstream, gate) = setup("max_upload_size: 1000\n").await;
    let head = "POST /_matrix/media/v3/upload HTTP/1.1\r\nhost: gate\r\nauthorization: Bearer t\r\n\
                content-type: image/png\r\ncontent-length: 1001\r\n\r\n";
    // Headers only: the 413 must arrive although not one body byte was sent.
    let res = raw_exchange(gate.addr, head, &[]).await;
    assert!(res.starts_with("HTTP/1.1 413"), "{res}");
    assert!(upstream.received().is_empty());
    assert_eq!(gate.audit_lines()[0]["verdict"], "too_large");

    // Exactly at the limit is fine.
    let res = client()
        .post(gate.url(UPLOAD))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_is_cut_off() {
    let (_clamd, upstream, gate) = setup("max_upload_size: 100KiB\n").await;
    let head = "POST /_matrix/media/v3/upload HTTP/1.1\r\nhost: gate\r\ntransfer-encoding: chunked\r\n\r\n";
    let data = noise(32 * 1024);
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    // 4 × 32 KiB = 128 KiB > 100 KiB; no terminating chunk is ever sent.
    let res = raw_exchange(gate.addr, head, &[&chunk, &chunk, &chunk, &chunk]).await;
    assert!(res.starts_with("HTTP/1.1 413"), "{res}");
    assert!(upstream.received().is_empty());
    poll("spool empty", Duration::from_secs(5), async || {
        (gate.spool_files() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn scanner_outage_is_503_and_recovery_is_not_cached() {
    let (mut clamd, upstream, gate) = setup("").await;
    clamd.stop().await;
    let res = client()
        .post(gate.url(UPLOAD))
        .body(tiny_png())
        .send()
        .await
        .unwrap();
    let (status, body) = json(res).await;
    assert_eq!(status, 503);
    assert_eq!(body["errcode"], "GOVMX_SCANNER_UNAVAILABLE");
    assert!(
        !body["error"].as_str().unwrap().contains("127.0.0.1"),
        "no internals in 5xx bodies: {body}"
    );
    assert!(upstream.received().is_empty());

    // Readiness follows the health probe.
    let admin = format!("http://{}/readyz", gate.admin);
    let reason = poll("not ready", Duration::from_secs(10), async || {
        let res = client().get(&admin).send().await.ok()?;
        (res.status() == 503).then_some(())?;
        Some(
            res.json::<serde_json::Value>().await.ok()?["reason"]
                .as_str()?
                .to_owned(),
        )
    })
    .await;
    assert!(reason.starts_with("no clamd answers"), "{reason}");

    clamd.restart().await;
    let res = client()
        .post(gate.url(UPLOAD))
        .body(tiny_png())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the outage was not cached");
    assert_eq!(upstream.received().len(), 1);
    let res = client()
        .post(gate.url(UPLOAD))
        .body(eicar())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let verdicts: Vec<_> = gate
        .audit_lines()
        .iter()
        .map(|l| l["verdict"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(verdicts, ["scanner_unavailable", "clean", "infected"]);
}

#[tokio::test]
async fn scanner_outage_with_allow_policy_forwards_unscanned() {
    let (mut clamd, upstream, gate) = setup("scanner_unavailable: allow\n").await;
    clamd.stop().await;
    let res = client()
        .post(gate.url(UPLOAD))
        .body(tiny_png())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(gate.audit_lines()[0]["verdict"], "unscanned");
}

#[tokio::test]
async fn large_upload_spools_to_a_private_file_that_is_removed() {
    let (_clamd, upstream, gate) = setup("").await;
    let data = noise(5 * 1024 * 1024);
    let res = client()
        .post(gate.url("/_matrix/media/r0/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            data.chunks(256 * 1024)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(Sha256::digest(&got[0].body), Sha256::digest(&data));
    assert_eq!(
        got[0].headers["content-length"],
        (5 * 1024 * 1024).to_string().as_str(),
        "chunked upload gets a Content-Length"
    );
    assert_eq!(
        got[0].spool_files,
        [0o600],
        "one private spool file while Synapse reads it"
    );
    poll("spool empty", Duration::from_secs(5), async || {
        (gate.spool_files() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn client_disconnect_mid_upload_removes_the_spool_file() {
    let (_clamd, upstream, gate) = setup("").await;
    let head =
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nhost: gate\r\ncontent-length: 4000000\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &noise(2 * 1024 * 1024))
        .await
        .unwrap();
    poll("spool file", Duration::from_secs(10), async || {
        (gate.spool_files() == 1).then_some(())
    })
    .await;
    drop(s);
    poll("spool empty", Duration::from_secs(10), async || {
        (gate.spool_files() == 0).then_some(())
    })
    .await;
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn executable_declared_as_png_is_refused_by_sniffing() {
    let (_clamd, upstream, gate) = setup("").await;
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.resize(4096, 0);
    let res = client()
        .post(gate.url(UPLOAD))
        .header("content-type", "image/png")
        .body(elf)
        .send()
        .await
        .unwrap();
    let (status, body) = json(res).await;
    assert_eq!(status, 415);
    assert_eq!(body["errcode"], "GOVMX_MEDIA_TYPE_FORBIDDEN");
    assert_eq!(
        body["error"],
        "File type application/x-executable is not allowed"
    );
    assert!(upstream.received().is_empty());
    assert_eq!(gate.audit_lines()[0]["verdict"], "blocked_mime");
}

#[tokio::test]
async fn other_requests_pass_through_unchanged() {
    let (_clamd, upstream, gate) = setup("").await;
    let res = client()
        .post(gate.url("/_matrix/media/v1/create?x=1"))
        .header("authorization", "Bearer syt_bob")
        .body(eicar()) // not an upload path: not scanned here
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client()
        .get(gate.url("/_matrix/client/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), r#"{"passed":"through"}"#);
    let got = upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].uri.to_string(), "/_matrix/media/v1/create?x=1");
    assert_eq!(got[0].headers["authorization"], "Bearer syt_bob");
    assert_eq!(&got[0].body[..], &eicar()[..]);
    // Our own namespace never reaches Synapse.
    let res = client()
        .post(gate.url("/_govmx/scanner/v1/scan"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "scan API disabled by default");
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test]
async fn scan_api_answers_with_json() {
    let dir = gate_dir();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let clamd = Clamd::start().await;
    let upstream = FakeUpstream::start(&dir.path().join("spool")).await;
    let extra = format!(
        "scan_api:\n  enabled: true\n  token_file: {}\n",
        token.display()
    );
    let gate = start_gate(dir, upstream.addr, &[clamd.addr()], &extra).await;
    let url = gate.url("/_govmx/scanner/v1/scan");

    let res = client().post(&url).body(eicar()).send().await.unwrap();
    assert_eq!(
        json(res).await,
        (
            401,
            serde_json::json!({"errcode":"M_MISSING_TOKEN","error":"Missing access token"})
        )
    );
    let res = client()
        .post(&url)
        .bearer_auth("wrong")
        .body(eicar())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = client()
        .post(&url)
        .bearer_auth("s3cret")
        .body(eicar())
        .send()
        .await
        .unwrap();
    let (status, body) = json(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["clean"], false);
    assert_eq!(body["signature"], EICAR_SIG);
    assert!(
        body["dbVersion"].is_null(),
        "test DB has no version: {body}"
    );

    let res = client()
        .post(&url)
        .bearer_auth("s3cret")
        .body(tiny_png())
        .send()
        .await
        .unwrap();
    let (status, body) = json(res).await;
    assert_eq!(
        (status, &body["clean"], &body["mimeType"]),
        (
            200,
            &serde_json::json!(true),
            &serde_json::json!("image/png")
        )
    );
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn admin_listener_reports_health_readiness_and_metrics() {
    let (_clamd, _upstream, gate) = setup("").await;
    let base = format!("http://{}", gate.admin);
    assert_eq!(
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    poll("ready", Duration::from_secs(10), async || {
        (client()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
    client()
        .post(gate.url(UPLOAD))
        .body(eicar())
        .send()
        .await
        .unwrap();
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "govmx_media_scans_total{verdict=\"infected\"} 1",
        "govmx_media_scanned_bytes_total 68",
        "govmx_media_scan_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "govmx_media_clamd_up{{address=\"{}\"}} 1",
            _clamd.addr()
        )),
        "{metrics}"
    );
}
