//! Test harness: a real gate (in-process, real TLS with a CA made per test), a fake Synapse
//! upstream that records what reaches it, signed bundles, and polling helpers.
//!
//! Every [`Harness`] owns its temp dir and ephemeral ports; dropping it stops the gate and the
//! fake upstream.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use ed25519_dalek::SigningKey;
use govmx_federation_gate::config::{
    AdminConfig, Config, InboundConfig, KeyFetchConfig, OutboundConfig, PolicyConfig, RelayedEvents,
};
use govmx_federation_gate::policy::testing::{TestServer, TestSigner, write_bundle, write_trust};
use govmx_federation_gate::{RunningGate, signature};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// Our server name in every test.
pub const OURS: &str = "land.example";
/// A listed peer with a pinned key.
pub const GOOD: &str = "good.example";
/// Its key id.
pub const GOOD_KEY_ID: &str = "ed25519:good1";
/// A listed peer without pinned keys.
pub const PLAIN: &str = "plain.example";
/// A server that is never listed.
pub const EVIL: &str = "evil.example";

/// One request as the fake upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A fake Synapse federation listener on 127.0.0.1:0.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let record = record.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                record.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers.clone(),
                    body: body.clone(),
                });
                if parts.uri.path().starts_with("/_matrix/federation/v1/send/") {
                    // Like Synapse: one (empty) entry per PDU received, keyed by event id.
                    let txn: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut pdus = serde_json::Map::new();
                    for (i, pdu) in txn["pdus"].as_array().into_iter().flatten().enumerate() {
                        let id = pdu["event_id"]
                            .as_str()
                            .map_or_else(|| format!("$accepted{i}"), str::to_owned);
                        pdus.insert(id, serde_json::json!({}));
                    }
                    return axum::Json(serde_json::json!({ "pdus": pdus })).into_response();
                }
                axum::Json(serde_json::json!({"upstream": "fake", "path": parts.uri.path()}))
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeUpstream { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 upstream that answers every request `200 {}` after `delay`, *with* keep-alive
/// semantics, and then closes the connection anyway, as a server ending an idle connection
/// does. Counts the connections it accepted.
pub async fn start_closing_upstream(
    delay: Duration,
) -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, accepted, task)
}

/// Knobs for a test gate.
#[derive(Debug, Clone)]
pub struct Options {
    pub strict: bool,
    pub shadow: bool,
    pub outbound: bool,
    pub reload_interval: Duration,
    pub max_age: Duration,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub relayed_events: RelayedEvents,
    /// Strict-mode key fetching for unpinned servers, trusting this CA file.
    pub key_fetch_ca: Option<PathBuf>,
    /// Serve the bundle over HTTPS and configure the gate with its URL instead of the directory.
    pub bundle_over_https: bool,
    /// `policy.refetch_on_miss`.
    pub refetch_on_miss: Duration,
    /// `tracing:` (OpenTelemetry traces).
    pub tracing: Option<govmx_service::TracingConfig>,
    /// Forward to this address instead of the [`FakeUpstream`] (which still runs).
    pub upstream_addr: Option<SocketAddr>,
    /// `inbound.workers` (absent: one per CPU, as deployed).
    pub workers: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strict: false,
            shadow: false,
            outbound: false,
            reload_interval: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(5),
            relayed_events: RelayedEvents::Remove,
            key_fetch_ca: None,
            bundle_over_https: false,
            refetch_on_miss: Duration::ZERO,
            tracing: None,
            upstream_addr: None,
            workers: None,
        }
    }
}

pub struct Harness {
    pub tmp: TempDir,
    pub upstream: FakeUpstream,
    pub gate: RunningGate,
    pub client: reqwest::Client,
    pub ca_pem: String,
    pub signers: [TestSigner; 3],
    pub good_key: SigningKey,
    pub bundle_dir: PathBuf,
    pub audit_path: PathBuf,
    pub version: u64,
    /// With `bundle_over_https`: the bundle server's request count.
    pub bundle_hits: Option<Arc<std::sync::atomic::AtomicUsize>>,
    _bundle_server: Option<JoinHandle<()>>,
}

/// The default list: GOOD (pinned key) and PLAIN.
pub fn default_servers(good_key: &SigningKey) -> Vec<TestServer> {
    let mut good = TestServer::new(GOOD);
    good.signing_keys
        .push((GOOD_KEY_ID.to_owned(), good_key.verifying_key()));
    let mut plain = TestServer::new(PLAIN);
    plain.class = "citizen".to_owned();
    vec![TestServer::new(OURS), good, plain]
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        Self::start_with(options, |_| {}).await
    }

    /// Starts with `adjust` applied to the default server list.
    pub async fn start_with(
        options: Options,
        adjust: impl FnOnce(&mut Vec<TestServer>),
    ) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let (ca_pem, cert_path, key_path) = make_tls(&tmp);
        let signers = [
            TestSigner::from_seed("ed25519:alice", 11),
            TestSigner::from_seed("ed25519:bob", 12),
            TestSigner::from_seed("ed25519:mallory", 13),
        ];
        let good_key = SigningKey::from_bytes(&[42; 32]);
        let trust = tmp.path().join("trust.yaml");
        write_trust(&trust, 2, &[&signers[0], &signers[1]]).unwrap();
        let bundle_dir = tmp.path().join("policy");
        let mut servers = default_servers(&good_key);
        adjust(&mut servers);
        write_bundle(&bundle_dir, 1, &servers, &[&signers[0], &signers[1]]).unwrap();
        let upstream = FakeUpstream::start().await;
        let (url, ca_file, bundle_hits, bundle_server) = if options.bundle_over_https {
            let (addr, ca, hits, task) = start_bundle_server(&tmp, bundle_dir.clone()).await;
            (
                Some(format!("https://{addr}/bundle/")),
                Some(ca),
                Some(hits),
                Some(task),
            )
        } else {
            (None, None, None, None)
        };
        let audit_path = tmp.path().join("audit/denials.jsonl");
        let config = Config {
            server_name: OURS.to_owned(),
            inbound: InboundConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                tls_cert: cert_path,
                tls_key: key_path,
                upstream: format!("http://{}", options.upstream_addr.unwrap_or(upstream.addr)),
                max_body_bytes: options.max_body_bytes,
                header_read_timeout: options.header_read_timeout,
                upstream_timeout: Duration::from_secs(10),
                strict: options.strict,
                relayed_events: options.relayed_events,
                workers: options.workers,
                key_fetch: options.key_fetch_ca.map(|ca_file| KeyFetchConfig {
                    ca_file,
                    timeout: Duration::from_secs(5),
                    min_refetch: Duration::from_secs(30),
                    max_cache: Duration::from_secs(3600),
                }),
            },
            outbound: options.outbound.then(|| OutboundConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                connect_timeout: Duration::from_secs(5),
            }),
            admin: AdminConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
            },
            policy: PolicyConfig {
                dir: url.is_none().then(|| bundle_dir.clone()),
                url,
                ca_file,
                fetch_timeout: Duration::from_secs(5),
                refetch_on_miss: options.refetch_on_miss,
                trust,
                last_known_good_dir: tmp.path().join("lkg"),
                reload_interval: options.reload_interval,
                max_age: options.max_age,
                reload_nice: 0,
            },
            shadow: options.shadow,
            audit_log: audit_path.clone(),
            tracing: options.tracing.clone(),
        };
        let problems = govmx_service::Validate::validate(&config);
        assert!(problems.is_empty(), "{problems:?}");
        let gate = govmx_federation_gate::start(config).await.unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .http1_only()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Harness {
            tmp,
            upstream,
            gate,
            client,
            ca_pem,
            signers,
            good_key,
            bundle_dir,
            audit_path,
            version: 1,
            bundle_hits,
            _bundle_server: bundle_server,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{}", self.gate.inbound_addr(), path_and_query)
    }

    pub fn admin_url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.gate.admin_addr(), path_and_query)
    }

    /// A header signed by GOOD's pinned key.
    pub fn good_header(
        &self,
        method: &str,
        uri: &str,
        content: Option<&serde_json::Value>,
    ) -> String {
        signature::sign(
            &self.good_key,
            GOOD_KEY_ID,
            method,
            uri,
            GOOD,
            OURS,
            content,
        )
        .unwrap()
        .to_string()
    }

    /// A header for `origin` signed with a throwaway key.
    pub fn header_for(
        &self,
        origin: &str,
        method: &str,
        uri: &str,
        content: Option<&serde_json::Value>,
    ) -> String {
        let key = SigningKey::from_bytes(&[7; 32]);
        signature::sign(&key, "ed25519:other", method, uri, origin, OURS, content)
            .unwrap()
            .to_string()
    }

    /// Sends a signed GET from `origin` (GOOD uses its pinned key).
    pub async fn get_as(&self, origin: &str, path: &str) -> (u16, serde_json::Value) {
        let header = if origin == GOOD {
            self.good_header("GET", path, None)
        } else {
            self.header_for(origin, "GET", path, None)
        };
        let res = self
            .client
            .get(self.url(path))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        json_of(res).await
    }

    /// Rewrites the bundle with `servers`, signed by `signers` (indices into `self.signers`).
    pub fn publish(&mut self, servers: &[TestServer], signers: &[usize]) {
        self.version += 1;
        let signers: Vec<&TestSigner> = signers.iter().map(|i| &self.signers[*i]).collect();
        write_bundle(&self.bundle_dir, self.version, servers, &signers).unwrap();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        // The audit log has its own writer thread: wait for what was recorded so far.
        self.gate.shared().audit.flush();
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub async fn json_of(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

/// The value of a metric line (`name{labels} value`) whose name and labels contain all of `parts`.
pub fn metric_value(metrics: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A CA and a server certificate for 127.0.0.1; returns (CA PEM, cert path, key path).
pub fn make_tls(tmp: &TempDir) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "govmx gate test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca).unwrap();
    let cert_path = tmp.path().join("gate.pem");
    let key_path = tmp.path().join("gate.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca.pem(), cert_path, key_path)
}

/// What a test TLS server answers for a path (`None`: 404).
pub type Handler = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// A TLS server on 127.0.0.1 with its own CA, answering GETs with `handler`; counts the
/// answered requests. Returns (address, CA path, hits, task).
pub async fn start_tls_server(
    tmp: &TempDir,
    name: &str,
    handler: Handler,
) -> (
    SocketAddr,
    PathBuf,
    Arc<std::sync::atomic::AtomicUsize>,
    JoinHandle<()>,
) {
    use hyper_util::rt::TokioIo;
    let dir = tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let sub = tempfile::tempdir_in(&dir).unwrap();
    let (ca_pem, cert, key_path) = make_tls(&sub);
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        govmx_federation_gate::tls::server_config(&cert, &key_path).unwrap(),
    );
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        // The temp dir with the certificates lives as long as the server.
        let _sub = sub;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let answer = handler(req.uri().path());
                        let counter = counter.clone();
                        async move {
                            let response = match answer {
                                Some(body) => {
                                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    hyper::Response::new(http_body_util::Full::new(Bytes::from(
                                        body,
                                    )))
                                }
                                None => {
                                    let mut r = hyper::Response::new(http_body_util::Full::new(
                                        Bytes::new(),
                                    ));
                                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                    r
                                }
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_path, hits, task)
}

/// A TLS server answering `/_matrix/key/v2/server` for `server` with `key` (id `key_id`), as
/// a homeserver does.
pub async fn start_key_server(
    tmp: &TempDir,
    server: &str,
    key_id: &str,
    key: &SigningKey,
) -> (
    SocketAddr,
    PathBuf,
    Arc<std::sync::atomic::AtomicUsize>,
    JoinHandle<()>,
) {
    let body = govmx_federation_gate::keys::testing::key_response(
        server,
        key_id,
        key,
        std::time::SystemTime::now() + Duration::from_secs(3600),
    )
    .to_string()
    .into_bytes();
    let handler: Handler =
        Arc::new(move |path| (path == "/_matrix/key/v2/server").then(|| body.clone()));
    start_tls_server(tmp, "key-server", handler).await
}

/// A TLS server publishing the files of `dir` under `/bundle/<name>` (a bundle URL source).
pub async fn start_bundle_server(
    tmp: &TempDir,
    dir: PathBuf,
) -> (
    SocketAddr,
    PathBuf,
    Arc<std::sync::atomic::AtomicUsize>,
    JoinHandle<()>,
) {
    let handler: Handler = Arc::new(move |path| {
        let name = path.strip_prefix("/bundle/")?;
        if name.contains('/') || name.starts_with('.') {
            return None;
        }
        std::fs::read(dir.join(name)).ok()
    });
    start_tls_server(tmp, "bundle-server", handler).await
}
