//! Integration tests: the real gate over real TLS in front of a fake upstream.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use govmx_federation_gate::policy::testing::{TestServer, write_bundle};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origin_is_forwarded_with_headers_intact() {
    let h = Harness::start(Options::default()).await;
    let path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Aland.example&field=displayname";
    let header = h.good_header("GET", path, None);
    let res = h
        .client
        .get(h.url(path))
        .header("authorization", &header)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["upstream"].as_str()),
        (200, Some("fake")),
        "{body}"
    );

    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.uri, path, "path and query byte for byte");
    assert_eq!(req.headers["authorization"], header.as_str());
    assert_eq!(
        req.headers["host"],
        h.gate.inbound_addr().to_string().as_str()
    );
    assert_eq!(
        req.headers["x-forwarded-for"], "127.0.0.1",
        "the client's own value is replaced"
    );
    assert_eq!(req.headers["x-forwarded-proto"], "https");
    assert_eq!(req.headers["x-custom"], "kept");

    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &[
                "govmx_gate_decisions_total",
                "surface=\"inbound\"",
                "verdict=\"allow\"",
                "class=\"agency\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("govmx_gate_request_duration_seconds_count 1"),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_list_version "]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_origin_is_refused_and_audited() {
    let h = Harness::start(Options::default()).await;
    let (status, body) = h
        .get_as(
            EVIL,
            "/_matrix/federation/v1/state/!r:land.example?event_id=$e",
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("evil.example is not on the federation list"),
        "{error}"
    );
    assert!(error.contains("(rule origin-not-listed)"), "{error}");
    assert!(h.upstream.seen().is_empty(), "nothing reaches the upstream");

    let audit = h.audit_lines();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let entry = &audit[0];
    assert_eq!(entry["origin"], EVIL);
    assert_eq!(entry["rule"], "origin-not-listed");
    assert_eq!(
        entry["path"],
        "/_matrix/federation/v1/state/!r:land.example"
    );
    assert_eq!(entry["list_version"], 1);
    assert_eq!(entry["enforced"], true);
    assert!(entry["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));

    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &[
                "govmx_gate_decisions_total",
                "verdict=\"deny\"",
                "rule=\"origin-not-listed\"",
                "class=\"unlisted\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_header_problems() {
    let h = Harness::start(Options::default()).await;
    let path = "/_matrix/federation/v1/event/$e";
    let send = |headers: Vec<(&'static str, String)>| {
        let mut req = h.client.get(h.url(path));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        async move { json_of(req.send().await.unwrap()).await }
    };

    let (status, body) = send(vec![]).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing Authorization header"),
        "{body}"
    );

    let (status, body) = send(vec![("authorization", "Bearer abc".into())]).await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = send(vec![(
        "authorization",
        r#"X-Matrix origin="good.example",key="ed25519:x""#.into(),
    )])
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_UNAUTHORIZED"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(r#"parameter "sig" is missing"#),
        "{body}"
    );

    let good = h.good_header("GET", path, None);
    let (status, body) = send(vec![
        ("authorization", good.clone()),
        ("authorization", good.clone()),
    ])
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("2 Authorization headers"),
        "{body}"
    );

    let smuggled = good.replacen(
        "origin=\"good.example\"",
        "origin=\"good.example\",origin=\"evil.example\"",
        1,
    );
    let (status, body) = send(vec![("authorization", smuggled)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("given more than once"),
        "{body}"
    );

    let elsewhere = h.good_header("GET", path, None).replace(
        "destination=\"land.example\"",
        "destination=\"other.example\"",
    );
    let (status, body) = send(vec![("authorization", elsewhere)]).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("addressed to other.example"),
        "{body}"
    );

    assert!(h.upstream.seen().is_empty());
    let rules: Vec<String> = h
        .audit_lines()
        .iter()
        .map(|e| e["rule"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        rules,
        [
            "gate.auth.missing",
            "gate.auth.malformed",
            "gate.auth.malformed",
            "gate.auth.duplicated",
            "gate.auth.malformed",
            "gate.auth.destination"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surfaces_unknown_paths_and_unauthenticated_endpoints() {
    let h = Harness::start(Options::default()).await;
    for path in [
        "/_matrix/client/v3/login",
        "/_synapse/admin/v1/users",
        "/_matrix/federation/../client/versions",
        "/",
    ] {
        let header = h.good_header("GET", path, None);
        let res = h
            .client
            .get(h.url(path))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (404, Some("M_UNRECOGNIZED")),
            "{path}"
        );
    }
    assert!(h.upstream.seen().is_empty());

    for path in [
        "/_matrix/federation/v1/version",
        "/_matrix/key/v2/server",
        "/.well-known/matrix/server",
    ] {
        let (status, _) = json_of(h.client.get(h.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path} needs no X-Matrix");
    }
    assert_eq!(h.upstream.seen().len(), 3);

    // The key notary query is authenticated in a closed federation.
    let (status, _) = json_of(
        h.client
            .post(h.url("/_matrix/key/v2/query"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);

    // Federation media is forwarded for listed origins.
    let (status, _) = h
        .get_as(GOOD, "/_matrix/federation/v1/media/download/abc")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_lose_relayed_events_from_unlisted_servers() {
    let h = Harness::start(Options::default()).await;
    let path = "/_matrix/federation/v1/send/txn1";
    let txn = json!({
        "origin": GOOD,
        "origin_server_ts": 1,
        "pdus": [
            {"type": "m.room.message", "room_id": "!r:good.example", "sender": "@a:good.example", "content": {"body": "hi"}},
            {"type": "m.room.message", "room_id": "!r:good.example", "sender": "@m:evil.example", "content": {"body": "spam"}},
            {"type": "m.room.message", "room_id": "!r:good.example", "sender": "@m:evil.example", "event_id": "$old:evil.example", "content": {}},
        ],
        "edus": [
            {"edu_type": "m.typing", "content": {"room_id": "!r:good.example", "user_id": "@m:evil.example", "typing": true}},
            {"edu_type": "m.typing", "content": {"room_id": "!r:good.example", "user_id": "@a:good.example", "typing": true}},
        ]
    });
    let res = h
        .client
        .put(h.url(path))
        .header("authorization", h.good_header("PUT", path, Some(&txn)))
        .json(&txn)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    let pdus = body["pdus"].as_object().unwrap();
    assert_eq!(pdus["$accepted0"], json!({}), "{body}");
    assert!(
        pdus["govmx:removed:1"]["error"]
            .as_str()
            .unwrap()
            .contains("PDU authored by evil.example"),
        "{body}"
    );
    assert!(
        pdus["$old:evil.example"]["error"]
            .as_str()
            .unwrap()
            .contains("origin-not-listed"),
        "{body}"
    );

    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 1);
    let forwarded: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(forwarded["pdus"].as_array().unwrap().len(), 1);
    assert_eq!(forwarded["pdus"][0]["sender"], "@a:good.example");
    assert_eq!(forwarded["edus"], json!([txn["edus"][1]]));
    assert_eq!(forwarded["origin"], GOOD);
    assert_eq!(
        seen[0].headers["content-length"],
        seen[0].body.len().to_string().as_str()
    );

    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_removed_pdus_total"]),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_removed_edus_total"]),
        Some(1.0),
        "{metrics}"
    );
    let rules: Vec<String> = h
        .audit_lines()
        .iter()
        .map(|e| e["rule"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        rules,
        [
            "gate.txn.unlisted_author",
            "gate.txn.unlisted_author",
            "gate.txn.unlisted_edu"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_events_report_mode_forwards_unchanged() {
    let h = Harness::start(Options {
        relayed_events: govmx_federation_gate::config::RelayedEvents::Report,
        ..Options::default()
    })
    .await;
    let path = "/_matrix/federation/v1/send/txn9";
    let body = r#"{"origin":"good.example","pdus":[{"sender":"@m:evil.example","room_id":"!r"}]}"#;
    let res = h
        .client
        .put(h.url(path))
        .header("authorization", h.header_for(GOOD, "PUT", path, None))
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"pdus": {"$accepted0": {}}}),
        "Synapse's answer, untouched"
    );
    assert_eq!(
        h.upstream.seen()[0].body,
        body.as_bytes(),
        "forwarded byte for byte"
    );
    let audit = h.audit_lines();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0]["rule"].as_str(), audit[0]["enforced"].as_bool()),
        (Some("gate.txn.unlisted_author"), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transaction_bodies() {
    let h = Harness::start(Options::default()).await;
    let path = "/_matrix/federation/v1/send/txn2";
    let auth = h.header_for(GOOD, "PUT", path, None);
    let res = h
        .client
        .put(h.url(path))
        .header("authorization", &auth)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_NOT_JSON")),
        "{body}"
    );

    let big = format!(r#"{{"pdus": [], "pad": "{}"}}"#, "x".repeat(100 * 1024));
    let res = h
        .client
        .put(h.url(path))
        .header("authorization", &auth)
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{body}"
    );

    // Oversize bodies are refused on streamed (non-transaction) endpoints too.
    let invite = "/_matrix/federation/v2/invite/!r:good.example/$e";
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(100 * 1024));
    let res = h
        .client
        .put(h.url(invite))
        .header("authorization", h.header_for(GOOD, "PUT", invite, None))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    assert!(h.upstream.seen().is_empty());

    // Without Content-Length (chunked) the limit applies while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = h
        .client
        .put(h.url(invite))
        .header("authorization", h.header_for(GOOD, "PUT", invite, None))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The gate answers 413 (or closes the connection while the client still writes).
    if let Ok(res) = res {
        assert_eq!(res.status().as_u16(), 413);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_verifies_signatures_with_pinned_keys() {
    let h = Harness::start(Options {
        strict: true,
        ..Options::default()
    })
    .await;
    let path = "/_matrix/federation/v2/invite/!r:good.example/$e";
    let content = json!({"event": {"type": "m.room.member"}, "room_version": "10"});

    let res = h
        .client
        .put(h.url(path))
        .header("authorization", h.good_header("PUT", path, Some(&content)))
        .json(&content)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "signed by the pinned key");
    assert_eq!(h.upstream.seen().len(), 1);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&h.upstream.seen()[0].body).unwrap(),
        content
    );

    // A forged origin: right name and key id, wrong key.
    let forged = govmx_federation_gate::signature::sign(
        &ed25519_dalek::SigningKey::from_bytes(&[99; 32]),
        GOOD_KEY_ID,
        "PUT",
        path,
        GOOD,
        OURS,
        Some(&content),
    )
    .unwrap()
    .to_string();
    let res = h
        .client
        .put(h.url(path))
        .header("authorization", forged)
        .json(&content)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("gate.strict.bad_signature"),
        "{body}"
    );

    // The right signature over another body (tampered in transit).
    let res = h
        .client
        .put(h.url(path))
        .header("authorization", h.good_header("PUT", path, Some(&content)))
        .json(&json!({"event": {"type": "m.room.power_levels"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // An unknown key id, and a listed origin without pinned keys.
    let (status, body) = h.get_as(PLAIN, "/_matrix/federation/v1/event/$e").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no signing keys are pinned for plain.example"),
        "{body}"
    );

    assert_eq!(
        h.upstream.seen().len(),
        1,
        "no forged request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_fetches_verifies_and_caches_keys_of_unpinned_servers() {
    let keys_tmp = tempfile::tempdir().unwrap();
    let plain_key = ed25519_dalek::SigningKey::from_bytes(&[51; 32]);
    let (key_addr, ca_path, hits, _server) =
        start_key_server(&keys_tmp, PLAIN, "ed25519:p1", &plain_key).await;
    let h = Harness::start_with(
        Options {
            strict: true,
            key_fetch_ca: Some(ca_path),
            ..Options::default()
        },
        |servers| {
            let plain = servers.iter_mut().find(|s| s.server_name == PLAIN).unwrap();
            plain.delegated_hosts = vec![key_addr.to_string()];
        },
    )
    .await;
    let path = "/_matrix/federation/v1/event/$e";
    let signed_by = |key: &ed25519_dalek::SigningKey, key_id: &str| {
        govmx_federation_gate::signature::sign(key, key_id, "GET", path, PLAIN, OURS, None)
            .unwrap()
            .to_string()
    };
    let get = |header: String| {
        let req = h.client.get(h.url(path)).header("authorization", header);
        async move { json_of(req.send().await.unwrap()).await }
    };

    // The first request fetches PLAIN's keys from its delegated host; the second uses the cache.
    for round in 0..2 {
        let (status, body) = get(signed_by(&plain_key, "ed25519:p1")).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then cached");
    assert_eq!(h.upstream.seen().len(), 2);

    // A forger using PLAIN's name and key id with another key is refused at the edge.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[52; 32]);
    let (status, body) = get(signed_by(&forger, "ed25519:p1")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("gate.strict.bad_signature"),
        "{body}"
    );

    // A key id PLAIN does not publish: refused; the recent fetch is not repeated (rate limit).
    let (status, body) = get(signed_by(&forger, "ed25519:made_up")).await;
    assert_eq!(status, 401, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("gate.strict.key_unavailable"), "{body}");
    assert!(
        error.contains("does not publish key ed25519:made_up"),
        "{body}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no refetch within min_refetch"
    );

    // Pinned keys win: GOOD's pinned key is not replaced by any fetch.
    let (status, body) = h.get_as(GOOD, path).await;
    assert_eq!(status, 200, "{body}");
    let forged_good = govmx_federation_gate::signature::sign(
        &forger,
        "ed25519:other",
        "GET",
        path,
        GOOD,
        OURS,
        None,
    )
    .unwrap()
    .to_string();
    let res = h
        .client
        .get(h.url(path))
        .header("authorization", forged_good)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not pinned for good.example"),
        "{body}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.upstream.seen().len(),
        3,
        "no refused request reached the upstream"
    );

    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_key_fetches_total", "fetched"]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_key_fetches_total", "cached"]),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_proxy_tunnels_only_to_listed_targets() {
    // A TCP echo server standing in for a peer's federation port.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = echo.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let h = Harness::start_with(
        Options {
            outbound: true,
            ..Options::default()
        },
        |servers| {
            servers[1].delegated_hosts.push(echo_addr.to_string());
        },
    )
    .await;
    let proxy = h.gate.outbound_addr().unwrap();

    // Exactly what Synapse sends: HTTP/1.0, no Host header.
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(format!("CONNECT {echo_addr} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 39];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&head),
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"ping through the tunnel");
    drop(stream);

    for target in ["127.0.0.1:1", "evil.example:8448", "good.example:8449"] {
        let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{target}: {answer}"
        );
        assert!(
            answer.contains("is not a listed server name or delegated host"),
            "{answer}"
        );
    }
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(b"GET http://good.example/ HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    let audit = h.audit_lines();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0]["surface"], "connect");
    assert_eq!(audit[0]["destination"], "127.0.0.1:1");
    assert_eq!(audit[0]["rule"], "gate.connect.unlisted_target");
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &[
                "govmx_gate_decisions_total",
                "surface=\"connect\"",
                "verdict=\"allow\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    echo_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_lists_without_failing_requests() {
    // One inbound worker (`inbound.workers: 1`) serves all the concurrent connections here.
    let mut h = Harness::start(Options {
        reload_interval: Duration::from_millis(100),
        workers: Some(1),
        ..Options::default()
    })
    .await;
    let newcomer = "new.example";
    assert_eq!(
        h.get_as(newcomer, "/_matrix/federation/v1/event/$e")
            .await
            .0,
        403
    );

    // Background traffic from a listed origin during every swap: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (client, url, header) = (
            h.client.clone(),
            h.url("/_matrix/federation/v1/event/$e"),
            h.good_header("GET", "/_matrix/federation/v1/event/$e", None),
        );
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = client
                    .get(&url)
                    .header("authorization", &header)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    res.status().as_u16(),
                    200,
                    "a request failed during a reload"
                );
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut servers = default_servers(&h.good_key);
    servers.push(TestServer::new(newcomer));
    h.publish(&servers, &[0, 1]);
    eventually(DEADLINE, "the new origin to be allowed", || async {
        (h.get_as(newcomer, "/_matrix/federation/v1/event/$e")
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_list_version "]),
        Some(2.0),
        "{metrics}"
    );

    // Too few signers (one pinned + one unpinned): rejected, the old list stays.
    let mut shrunk = default_servers(&h.good_key);
    shrunk.truncate(2);
    h.publish(&shrunk, &[0, 2]);
    eventually(DEADLINE, "a failed reload", || async {
        let metrics = h.metrics().await;
        metric_value(&metrics, &["govmx_gate_reloads_total", "result=\"failed\""])
            .filter(|v| *v >= 1.0)
    })
    .await;
    assert_eq!(
        h.get_as(newcomer, "/_matrix/federation/v1/event/$e")
            .await
            .0,
        200,
        "old list kept"
    );
    assert_eq!(
        h.get_as(PLAIN, "/_matrix/federation/v1/event/$e").await.0,
        200,
        "old list kept"
    );

    // A tampered list under a valid manifest: rejected as well.
    h.publish(&servers, &[0, 1]);
    eventually(DEADLINE, "version 4", || async {
        metric_value(&h.metrics().await, &["govmx_gate_list_version "]).filter(|v| *v == 4.0)
    })
    .await;
    let failed_before = metric_value(
        &h.metrics().await,
        &["govmx_gate_reloads_total", "result=\"failed\""],
    )
    .unwrap();
    std::fs::write(
        h.bundle_dir.join("federation.yaml"),
        "version: 99\nservers: []\n",
    )
    .unwrap();
    eventually(DEADLINE, "another failed reload", || async {
        metric_value(
            &h.metrics().await,
            &["govmx_gate_reloads_total", "result=\"failed\""],
        )
        .filter(|v| *v > failed_before)
    })
    .await;
    assert_eq!(
        h.get_as(newcomer, "/_matrix/federation/v1/event/$e")
            .await
            .0,
        200
    );

    stop.store(true, Ordering::Relaxed);
    hammer.await.unwrap();
    assert!(served.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_from_https_url_refetches_on_a_miss_and_refuses_rollback() {
    let mut h = Harness::start(Options {
        bundle_over_https: true,
        refetch_on_miss: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    let hits = h.bundle_hits.clone().unwrap();
    let path = "/_matrix/federation/v1/event/$e";
    assert_eq!(
        h.get_as(GOOD, path).await.0,
        200,
        "list v1 loaded from the URL"
    );
    let after_start = hits.load(Ordering::SeqCst);
    assert!(
        after_start >= 4,
        "SIGNATURES.json and every manifest file: {after_start}"
    );

    // An unchanged bundle costs one request per poll: SIGNATURES.json pins the rest.
    h.gate.reload_now();
    let loaded = |m: &str, result: &str| {
        metric_value(
            m,
            &["govmx_gate_reloads_total", &format!("result=\"{result}\"")],
        )
    };
    eventually(DEADLINE, "an unchanged poll", || async {
        (loaded(&h.metrics().await, "unchanged") == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), after_start + 1);

    // A new list adding EVIL is published but not polled (reload interval 1 h): EVIL's first
    // request is refused, which makes the gate look again; EVIL then federates.
    let mut servers = default_servers(&h.good_key);
    servers.push(TestServer::new(EVIL));
    h.publish(&servers, &[0, 1]);
    let (status, body) = h.get_as(EVIL, path).await;
    assert_eq!(status, 403, "still the old list: {body}");
    eventually(
        DEADLINE,
        "EVIL admitted after the refetch on a miss",
        || async { (h.get_as(EVIL, path).await.0 == 200).then_some(()) },
    )
    .await;

    // Replaying the older, validly signed v1 is refused: no rollback, EVIL stays admitted.
    write_bundle(
        &h.bundle_dir,
        1,
        &default_servers(&h.good_key),
        &[&h.signers[0], &h.signers[1]],
    )
    .unwrap();
    h.gate.reload_now();
    eventually(DEADLINE, "the rollback refused", || async {
        (loaded(&h.metrics().await, "failed") == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(h.get_as(EVIL, path).await.0, 200);
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_list_version "]),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_age_everything_fails_closed() {
    let h = Harness::start(Options {
        reload_interval: Duration::from_millis(100),
        max_age: Duration::from_millis(800),
        ..Options::default()
    })
    .await;
    assert_eq!(
        h.get_as(GOOD, "/_matrix/federation/v1/event/$e").await.0,
        200
    );
    assert_eq!(
        reqwest::get(h.admin_url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // The primary source breaks: the list is no longer confirmed and ages out.
    let signatures = std::fs::read(h.bundle_dir.join("SIGNATURES.json")).unwrap();
    std::fs::remove_file(h.bundle_dir.join("SIGNATURES.json")).unwrap();
    let (status, body) = eventually(DEADLINE, "/readyz to fail", || async {
        let res = reqwest::get(h.admin_url("/readyz")).await.unwrap();
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap();
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("more than the maximum age"),
        "{body}"
    );

    let (status, body) = h.get_as(GOOD, "/_matrix/federation/v1/event/$e").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (503, Some("GOVMX_FEDERATION_LIST_UNAVAILABLE")),
        "{body}"
    );
    let (status, _) = json_of(
        h.client
            .get(h.url("/_matrix/key/v2/server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_list_fresh "]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(h.upstream.seen().len(), 1);

    // The source is repaired: the next reload confirms the list, and the gate serves again.
    std::fs::write(h.bundle_dir.join("SIGNATURES.json"), signatures).unwrap();
    eventually(DEADLINE, "/readyz to recover", || async {
        let res = reqwest::get(h.admin_url("/readyz")).await.unwrap();
        (res.status().as_u16() == 200).then_some(())
    })
    .await;
    assert_eq!(
        h.get_as(GOOD, "/_matrix/federation/v1/event/$e").await.0,
        200
    );
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, &["govmx_gate_list_fresh "]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(h.upstream.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_forwards_and_counts() {
    let h = Harness::start(Options {
        shadow: true,
        ..Options::default()
    })
    .await;
    let (status, _) = h.get_as(EVIL, "/_matrix/federation/v1/event/$e").await;
    assert_eq!(status, 200, "shadow mode forwards");
    assert_eq!(h.upstream.seen().len(), 1);
    let audit = h.audit_lines();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["enforced"], false);
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &[
                "govmx_gate_decisions_total",
                "verdict=\"deny\"",
                "enforced=\"false\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Unknown paths stay closed even in shadow mode.
    assert_eq!(
        h.client
            .get(h.url("/_matrix/client/versions"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explain_and_health() {
    let h = Harness::start(Options::default()).await;
    let res = reqwest::get(h.admin_url("/explain?origin=evil.example"))
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["decision"]["verdict"], "deny");
    assert_eq!(body["decision"]["rule"], "origin-not-listed");
    assert_eq!(body["destination"], OURS);
    assert_eq!(body["list_version"], 1);
    let res = reqwest::get(h.admin_url("/explain?origin=land.example&destination=good.example"))
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["decision"]["verdict"], "allow", "{body}");
    assert_eq!(
        reqwest::get(h.admin_url("/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::get(h.admin_url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_disconnected() {
    let h = Harness::start(Options {
        header_read_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut h.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.gate.inbound_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The head never ends: the gate must close the connection (no answer reaches the upstream).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "connection still open after the header timeout"
    );
    assert!(h.upstream.seen().is_empty());
}

/// A gate in front of [`start_closing_upstream`]`(delay)`, with a profile query and a good
/// X-Matrix header for it.
struct ClosingUpstream {
    h: Harness,
    accepted: Arc<AtomicUsize>,
    _upstream: tokio::task::JoinHandle<()>,
    path: &'static str,
    header: String,
}

impl ClosingUpstream {
    async fn start(delay: Duration) -> ClosingUpstream {
        let (addr, accepted, upstream) = start_closing_upstream(delay).await;
        let h = Harness::start(Options {
            upstream_addr: Some(addr),
            ..Options::default()
        })
        .await;
        let path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Aland.example";
        let header = h.good_header("GET", path, None);
        ClosingUpstream {
            h,
            accepted,
            _upstream: upstream,
            path,
            header,
        }
    }

    fn request(
        &self,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
        self.h
            .client
            .get(self.h.url(self.path))
            .header("authorization", &self.header)
            .send()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_inbound_connection_reconnects_its_upstream_after_a_close() {
    // The gate keeps one upstream connection per inbound connection; when the homeserver closes
    // it between requests, the next request goes out on a new one and does not fail.
    let t = ClosingUpstream::start(Duration::ZERO).await;
    for i in 0..5 {
        let (status, body) = json_of(t.request().await.unwrap()).await;
        assert_eq!(
            (status, body.clone()),
            (200, json!({})),
            "request {i}: {body}"
        );
    }
    assert_eq!(
        t.accepted.load(Ordering::SeqCst),
        5,
        "one upstream connection per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    // The homeserver takes 700 ms to answer; the gate is told to stop meanwhile. The request
    // still gets its answer (the inbound connection's task keeps driving its upstream
    // connection while it drains), and the gate stops well before its 10 s drain limit.
    let t = ClosingUpstream::start(Duration::from_millis(700)).await;
    let in_flight = tokio::spawn(t.request());
    eventually(DEADLINE, "the request reaches the upstream", || {
        let accepted = t.accepted.clone();
        async move { (accepted.load(Ordering::SeqCst) == 1).then_some(()) }
    })
    .await;
    let started = std::time::Instant::now();
    let inbound = t.h.gate.inbound_addr();
    t.h.gate.shutdown().await;
    let (status, body) = json_of(in_flight.await.unwrap().unwrap()).await;
    assert_eq!((status, body), (200, json!({})));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(inbound).await.is_err(),
        "the inbound listener is closed after shutdown"
    );
}
