//! The matrix-content-scanner compatible API against a real clamd (or the scripted one, to
//! count scans) and a fake homeserver: encrypted EICAR and PNG (built and AES-256-CTR
//! encrypted here), PkEncryption'd bodies, wrong key / hash, `download_encrypted` returning the
//! exact ciphertext, plain media, homeserver errors, clamd outage and recovery, the concurrency
//! cap and joined identical requests.

mod support;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use aes::Aes256;
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD},
};
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;
use tokio::{net::TcpListener, sync::watch};
use vodozemac::{Curve25519PublicKey, pk_encryption::PkEncryption};

const MCS: &str = "/_matrix/media_proxy/unstable";

/// A request the fake homeserver saw.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: Option<String>,
    auth: Option<String>,
}

/// A fake homeserver on 127.0.0.1:0 serving media by ID under both media APIs. IDs starting
/// with `slow` send half the body, then wait for [`FakeHomeserver::release`].
struct FakeHomeserver {
    addr: std::net::SocketAddr,
    media: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct HsState {
    media: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: watch::Receiver<bool>,
}

async fn serve_media(State(s): State<HsState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    s.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        query: req.uri().query().map(str::to_owned),
        auth: req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    });
    let id = path.rsplit('/').next().unwrap_or_default().to_owned();
    let Some(bytes) = s.media.lock().unwrap().get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errcode": "M_NOT_FOUND", "error": "Not found"})),
        )
            .into_response();
    };
    let len = bytes.len();
    let body = if id.starts_with("slow") {
        let (first, second) = bytes.split_at(len / 2);
        let (first, second) = (first.to_vec(), second.to_vec());
        let mut release = s.release.clone();
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
            futures_util::stream::once(async move {
                let _ = release.wait_for(|r| *r).await;
                Ok(second)
            }),
        );
        Body::from_stream(stream)
    } else {
        Body::from(bytes)
    };
    (
        [
            ("content-type", "application/octet-stream"),
            ("content-disposition", "inline; filename=\"f.bin\""),
        ],
        [("content-length", len.to_string())],
        body,
    )
        .into_response()
}

use futures_util::StreamExt as _;

impl FakeHomeserver {
    async fn start() -> Self {
        let media = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (release, rx) = watch::channel(false);
        let app = Router::new().fallback(serve_media).with_state(HsState {
            media: media.clone(),
            seen: seen.clone(),
            release: rx,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            media,
            seen,
            release,
            task,
        }
    }

    fn put(&self, id: &str, bytes: &[u8]) {
        self.media
            .lock()
            .unwrap()
            .insert(id.to_owned(), bytes.to_vec());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the gate with the MCS API pointed at `hs`, plus `extra` YAML.
async fn start_mcs(hs: &FakeHomeserver, clamd: &[String], extra: &str) -> (Gate, PathBuf) {
    let dir = gate_dir();
    let secret = dir.path().join("mcs-secret");
    let yaml = format!(
        "mcs:\n  enabled: true\n  homeserver_url: http://{}\n  request_secret_file: {}\n  fetch_timeout: 5s\n{extra}",
        hs.addr,
        secret.display()
    );
    // The MCS API never talks to the proxied upstream; any address will do.
    let gate = start_gate(dir, hs.addr, clamd, &yaml).await;
    (gate, secret)
}

/// An encrypted attachment: ciphertext plus the `file` object a client would send.
struct Encrypted {
    ciphertext: Vec<u8>,
    file: Value,
}

fn encrypt(plain: &[u8], media_id: &str) -> Encrypted {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let mut iv = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut iv[..8]);
    let mut ciphertext = plain.to_vec();
    ctr::Ctr128BE::<Aes256>::new(&key.into(), &iv.into()).apply_keystream(&mut ciphertext);
    let file = json!({
        "v": "v2",
        "url": format!("mxc://example.org/{media_id}"),
        "iv": STANDARD_NO_PAD.encode(iv),
        "hashes": {"sha256": STANDARD_NO_PAD.encode(Sha256::digest(&ciphertext))},
        "key": {
            "alg": "A256CTR", "kty": "oct", "ext": true,
            "key_ops": ["encrypt", "decrypt"],
            "k": URL_SAFE_NO_PAD.encode(key),
        },
        "mimetype": "image/png",
    });
    Encrypted { ciphertext, file }
}

async fn post(gate: &Gate, route: &str, body: &Value) -> (u16, Value) {
    let res = client()
        .post(gate.url(&format!("{MCS}/{route}")))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn get_json(gate: &Gate, route: &str) -> (u16, Value) {
    let res = client()
        .get(gate.url(&format!("{MCS}/{route}")))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn metric(gate: &Gate, name: &str) -> Option<f64> {
    let text = client()
        .get(format!("http://{}/metrics", gate.admin))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn clean() -> Value {
    json!({"clean": true, "info": "File is clean"})
}

fn dirty() -> Value {
    json!({"clean": false, "info": "***VIRUS DETECTED***"})
}

#[tokio::test]
async fn encrypted_attachments_against_real_clamd() {
    let clamd = Clamd::start().await;
    let hs = FakeHomeserver::start().await;
    let (gate, secret) = start_mcs(&hs, &[clamd.addr()], "").await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let virus = encrypt(&eicar(), "virus");
    hs.put("virus", &virus.ciphertext);
    let png = encrypt(&tiny_png(), "png");
    hs.put("png", &png.ciphertext);

    let (status, body) = post(&gate, "scan_encrypted", &json!({"file": virus.file})).await;
    assert_eq!((status, body), (200, dirty()));
    let (status, body) = post(&gate, "download_encrypted", &json!({"file": virus.file})).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"reason": "MCS_MEDIA_NOT_CLEAN", "info": "***VIRUS DETECTED***"})
        )
    );

    let (status, body) = post(&gate, "scan_encrypted", &json!({"file": png.file})).await;
    assert_eq!((status, body), (200, clean()));
    let res = client()
        .post(gate.url(&format!("{MCS}/download_encrypted")))
        .json(&json!({"file": png.file}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        res.headers()["content-length"],
        png.ciphertext.len().to_string().as_str()
    );
    assert_eq!(&res.bytes().await.unwrap()[..], &png.ciphertext[..]);

    // A key of the wrong length, a hash that does not match, a body nobody can decrypt.
    let mut short_key = png.file.clone();
    short_key["key"]["k"] = json!(URL_SAFE_NO_PAD.encode([7u8; 16]));
    let mut wrong_hash = png.file.clone();
    wrong_hash["hashes"]["sha256"] = json!(STANDARD_NO_PAD.encode(Sha256::digest(b"other")));
    for (route, file) in [
        ("scan_encrypted", &short_key),
        ("scan_encrypted", &wrong_hash),
        ("download_encrypted", &wrong_hash),
    ] {
        let (status, body) = post(&gate, route, &json!({"file": file})).await;
        assert_eq!(status, 400, "{route} {body}");
        assert_eq!(body["reason"], "MCS_MEDIA_FAILED_TO_DECRYPT", "{body}");
    }
    // The mismatching hash's EICAR twin: never reported as a verdict at all.
    let mut virus_bad_hash = virus.file.clone();
    virus_bad_hash["hashes"]["sha256"] = json!(STANDARD_NO_PAD.encode([0u8; 32]));
    let (status, body) = post(&gate, "scan_encrypted", &json!({"file": virus_bad_hash})).await;
    assert_eq!(
        (status, &body["reason"]),
        (400, &json!("MCS_MEDIA_FAILED_TO_DECRYPT"))
    );

    // Schema violations.
    let mut v1 = png.file.clone();
    v1["v"] = json!("v1");
    let (status, body) = post(&gate, "scan_encrypted", &json!({"file": v1})).await;
    assert_eq!(
        (status, &body["reason"]),
        (400, &json!("MCS_MALFORMED_JSON"))
    );

    // PkEncryption'd bodies, to the key from public_key.
    let (status, body) = get_json(&gate, "public_key").await;
    assert_eq!(status, 200);
    let public = Curve25519PublicKey::from_base64(body["public_key"].as_str().unwrap()).unwrap();
    let seal = |file: &Value| {
        let msg = PkEncryption::from_key(public)
            .encrypt(&serde_json::to_vec(&json!({"file": file})).unwrap())
            .unwrap();
        json!({"encrypted_body": {
            "ciphertext": STANDARD_NO_PAD.encode(&msg.ciphertext),
            "mac": STANDARD_NO_PAD.encode(&msg.mac),
            "ephemeral": msg.ephemeral_key.to_base64(),
        }})
    };
    assert_eq!(
        post(&gate, "scan_encrypted", &seal(&png.file)).await,
        (200, clean())
    );
    assert_eq!(
        post(&gate, "scan_encrypted", &seal(&virus.file)).await,
        (200, dirty())
    );
    let mut tampered = seal(&png.file);
    // Not a whole number of AES blocks, so decryption fails on every run. (Two random blocks
    // under a fresh key end in valid PKCS#7 padding about once in 256 runs: the legacy
    // PkEncryption MAC does not cover the ciphertext, so such a body "decrypts" to garbage and
    // is refused as malformed JSON instead; the attachment's own SHA-256 still guards the file.)
    tampered["encrypted_body"]["ciphertext"] = json!(STANDARD_NO_PAD.encode([1u8; 31]));
    let (status, body) = post(&gate, "scan_encrypted", &tampered).await;
    assert_eq!(
        (status, &body["reason"]),
        (400, &json!("MCS_MEDIA_FAILED_TO_DECRYPT"))
    );

    // No plaintext (nor anything else) left in the spool dir.
    assert_eq!(gate.spool_files(), 0);
    let audit = gate.audit_lines();
    assert!(audit.iter().any(|l| l["verdict"] == "infected"
        && l["signature"] == EICAR_SIG
        && l["path"] == "/_matrix/media_proxy/unstable/scan_encrypted"));
}

#[tokio::test]
async fn plain_media_routes_and_homeserver_errors() {
    let clamd = Clamd::start().await;
    let hs = FakeHomeserver::start().await;
    let (gate, _) = start_mcs(&hs, &[clamd.addr()], "").await;
    hs.put("png", &tiny_png());
    hs.put("virus", &eicar());

    assert_eq!(
        get_json(&gate, "scan/example.org/png").await,
        (200, clean())
    );
    assert_eq!(
        get_json(&gate, "scan/example.org/virus/").await,
        (200, dirty())
    );
    let (status, body) = get_json(&gate, "download/example.org/virus").await;
    assert_eq!(
        (status, &body["reason"]),
        (403, &json!("MCS_MEDIA_NOT_CLEAN"))
    );

    let res = client()
        .get(gate.url(&format!("{MCS}/download/example.org/png")))
        .header("authorization", "Bearer syt_alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        "inline; filename=\"f.bin\""
    );
    assert_eq!(&res.bytes().await.unwrap()[..], &tiny_png()[..]);
    let seen = hs.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.path,
        "/_matrix/client/v1/media/download/example.org/png"
    );
    assert_eq!(last.auth.as_deref(), Some("Bearer syt_alice"));
    // Without credentials (and no service token): the legacy unauthenticated API.
    assert_eq!(seen[0].path, "/_matrix/media/v3/download/example.org/png");
    assert_eq!(seen[0].auth, None);

    let res = client()
        .get(gate.url(&format!(
            "{MCS}/thumbnail/example.org/png?width=32&height=32&method=scale&evil=1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let last = hs.seen().pop().unwrap();
    assert_eq!(last.path, "/_matrix/media/v3/thumbnail/example.org/png");
    assert_eq!(
        last.query.as_deref(),
        Some("height=32&method=scale&width=32")
    );

    let (status, body) = get_json(&gate, "scan/example.org/missing").await;
    assert_eq!((status, &body["reason"]), (404, &json!("M_NOT_FOUND")));
    let (status, body) = get_json(&gate, "download/ex%20ample/abc").await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"reason": "MCS_MEDIA_NOT_CLEAN", "info": "Malformed media ID"})
        )
    );
    let unrecognized = json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"});
    assert_eq!(get_json(&gate, "nope").await, (404, unrecognized.clone()));
    assert_eq!(get_json(&gate, "scan_encrypted").await, (405, unrecognized));
    let res = client()
        .request(
            reqwest::Method::OPTIONS,
            gate.url(&format!("{MCS}/anything/at/all")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-methods"],
        "GET, POST, OPTIONS"
    );
    assert!(res.bytes().await.unwrap().is_empty());

    // Homeserver unreachable → 502.
    drop(hs);
    let (status, body) = get_json(&gate, "scan/example.org/png").await;
    assert_eq!(
        (status, &body["reason"]),
        (502, &json!("MCS_MEDIA_REQUEST_FAILED"))
    );
}

#[tokio::test]
async fn clamd_outage_is_503_never_cached_and_recovers() {
    let mut clamd = Clamd::start().await;
    let hs = FakeHomeserver::start().await;
    let (gate, _) = start_mcs(&hs, &[clamd.addr()], "").await;
    let virus = encrypt(&eicar(), "virus");
    hs.put("virus", &virus.ciphertext);
    hs.put("png", &tiny_png());

    clamd.stop().await;
    for (status, body) in [
        post(&gate, "scan_encrypted", &json!({"file": virus.file})).await,
        get_json(&gate, "scan/example.org/png").await,
    ] {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["reason"], "MCS_SCANNER_UNAVAILABLE");
        assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    }
    clamd.restart().await;
    assert_eq!(
        post(&gate, "scan_encrypted", &json!({"file": virus.file})).await,
        (200, dirty())
    );
    assert_eq!(
        get_json(&gate, "scan/example.org/png").await,
        (200, clean())
    );
}

const V1: &str = "ClamAV 1.4.6/27500/Mon Nov 23 09:12:00 2026";

#[tokio::test]
async fn concurrency_cap_queues_then_refuses() {
    let clamd = ScriptedClamd::start(V1).await;
    let hs = FakeHomeserver::start().await;
    let extra = "limits:\n  max_concurrent_scans: 1\n  queue_timeout: 300ms\n";
    let (gate, _) = start_mcs(&hs, &[clamd.addr.to_string()], extra).await;
    hs.put("slow1", &noise(4096));
    hs.put("fast", &tiny_png());

    let url = gate.url(&format!("{MCS}/scan/example.org/slow1"));
    let first = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    poll(
        "first scan holds the slot",
        Duration::from_secs(10),
        async || (metric(&gate, "govmx_media_scans_in_progress").await? == 1.0).then_some(()),
    )
    .await;

    let (status, body) = get_json(&gate, "scan/example.org/fast").await;
    assert_eq!(
        (status, &body["reason"]),
        (503, &json!("MCS_SCANNER_UNAVAILABLE"))
    );
    assert_eq!(
        metric(&gate, "govmx_media_scan_refusals_total").await,
        Some(1.0)
    );

    hs.release();
    let res = first.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), clean());
    assert_eq!(
        get_json(&gate, "scan/example.org/fast").await,
        (200, clean())
    );
}

#[tokio::test]
async fn identical_concurrent_requests_share_one_scan() {
    let clamd = ScriptedClamd::start(V1).await;
    let hs = FakeHomeserver::start().await;
    let (gate, _) = start_mcs(&hs, &[clamd.addr.to_string()], "").await;
    // Verdicts are cached per clamd DB version, which the scanner learns from its first probe;
    // under load that probe can come after the first scans (then nothing is cached).
    let up = format!("govmx_media_clamd_up{{address=\"{}\"}}", clamd.addr);
    poll(
        "the first clamd probe",
        Duration::from_secs(10),
        async || (metric(&gate, &up).await? == 1.0).then_some(()),
    )
    .await;
    hs.put("slow2", &noise(4096));
    let enc = encrypt(&noise(4096), "slow3");
    hs.put("slow3", &enc.ciphertext);

    let url = gate.url(&format!("{MCS}/scan/example.org/slow2"));
    let a = tokio::spawn({
        let url = url.clone();
        async move { client().get(url).send().await.unwrap() }
    });
    let b = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    let url = gate.url(&format!("{MCS}/scan_encrypted"));
    let body = json!({"file": enc.file});
    let c = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { client().post(url).json(&body).send().await.unwrap() }
    });
    let d = tokio::spawn(async move { client().post(url).json(&body).send().await.unwrap() });
    poll("both pairs joined", Duration::from_secs(10), async || {
        (metric(&gate, "govmx_media_mcs_inflight_joins_total").await? == 2.0).then_some(())
    })
    .await;
    hs.release();
    for task in [a, b, c, d] {
        let res = task.await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap(), clean());
    }
    assert_eq!(hs.seen().len(), 2, "one fetch per distinct media");
    assert_eq!(clamd.scans(), 2, "one clamd scan per distinct media");

    // Afterwards the encrypted verdict comes from the cache: no fetch, no scan.
    let (status, body) = post(&gate, "scan_encrypted", &json!({"file": enc.file})).await;
    assert_eq!((status, body), (200, clean()));
    assert_eq!((hs.seen().len(), clamd.scans()), (2, 2));
}

async fn readyz(gate: &Gate) -> (u16, Value) {
    let res = client()
        .get(format!("http://{}/readyz", gate.admin))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// `VERSION` reply of a clamd whose DB was built `age` ago (ctime format, UTC).
fn version_aged(age: Duration) -> String {
    let t = time::OffsetDateTime::now_utc() - age;
    let fmt = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    format!("ClamAV 1.4.6/27500/{}", t.format(&fmt).unwrap())
}

#[tokio::test]
async fn too_old_signatures_refuse_scans_until_updated() {
    let clamd = ScriptedClamd::start(&version_aged(Duration::from_secs(3 * 86_400))).await;
    let hs = FakeHomeserver::start().await;
    let extra = "signatures:\n  warn_age: 1d\n  refuse_age: 2d\n";
    let (gate, _) = start_mcs(&hs, &[clamd.addr.to_string()], extra).await;
    hs.put("png", &tiny_png());

    let reason = poll("refusing", Duration::from_secs(10), async || {
        let (_, body) = readyz(&gate).await;
        let reason = body["reason"].as_str()?.to_owned();
        reason.starts_with("scans refused").then_some(reason)
    })
    .await;
    assert!(
        reason.starts_with("scans refused:") && reason.contains("older than signatures.refuse_age"),
        "{reason}"
    );
    let (status, body) = get_json(&gate, "scan/example.org/png").await;
    assert_eq!(
        (status, &body["reason"]),
        (503, &json!("MCS_SCANNER_UNAVAILABLE"))
    );
    assert_eq!(clamd.scans(), 0);
    assert_eq!(
        metric(
            &gate,
            &format!("govmx_media_clamd_db_stale{{address=\"{}\"}}", clamd.addr)
        )
        .await,
        Some(1.0)
    );

    // freshclam caught up: the next probe lifts the refusal.
    *clamd.version.lock().unwrap() = version_aged(Duration::from_secs(3600));
    poll("ready", Duration::from_secs(10), async || {
        (readyz(&gate).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        get_json(&gate, "scan/example.org/png").await,
        (200, clean())
    );
}

#[tokio::test]
async fn unknown_signature_age_is_refused_only_when_configured() {
    // clamd without official databases: VERSION carries no DB version or date.
    let clamd = ScriptedClamd::start("ClamAV 1.4.6").await;
    let hs = FakeHomeserver::start().await;
    hs.put("png", &tiny_png());
    let (gate, _) = start_mcs(
        &hs,
        &[clamd.addr.to_string()],
        "signatures:\n  refuse_age: 7d\n",
    )
    .await;
    poll("ready", Duration::from_secs(10), async || {
        (readyz(&gate).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        get_json(&gate, "scan/example.org/png").await,
        (200, clean())
    );
    drop(gate);

    let extra = "signatures:\n  refuse_age: 7d\n  refuse_unknown_age: true\n";
    let (gate, _) = start_mcs(&hs, &[clamd.addr.to_string()], extra).await;
    let reason = poll("refusing", Duration::from_secs(10), async || {
        let (_, body) = readyz(&gate).await;
        let reason = body["reason"].as_str()?.to_owned();
        reason.starts_with("scans refused").then_some(reason)
    })
    .await;
    assert!(reason.contains("signature DB age unknown"), "{reason}");
    let (status, body) = get_json(&gate, "scan/example.org/png").await;
    assert_eq!(
        (status, &body["reason"]),
        (503, &json!("MCS_SCANNER_UNAVAILABLE"))
    );
}
