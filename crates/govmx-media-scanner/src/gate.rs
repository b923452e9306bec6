//! The upload gate: an axum reverse proxy in front of Synapse's client-server listener.
//!
//! - Media uploads (`POST /_matrix/media/{v3,r0,v1}/upload`, `PUT …/upload/{server}/{id}`) are
//!   size-checked, streamed to clamd while being spooled, type-checked by sniffing, and forwarded
//!   only when clean (with `Content-Length` set to the real size).
//! - `POST /_govmx/scanner/v1/scan` (when enabled) scans a raw body and answers with JSON.
//! - `/_matrix/media_proxy/unstable/*` (when `mcs.enabled`): the MCS-compatible API, see
//!   [`crate::mcs`].
//! - Everything else is proxied unchanged and streamed both ways.
//!
//! Every scan first passes admission control ([`crate::limits`]): the signature-age gate and a
//! slot of the concurrent-scan cap (queued up to `limits.queue_timeout`, then 503).
//!
//! Status codes: infected → 403 `M_FORBIDDEN`; sniffed type not allowed → 415
//! `GOVMX_MEDIA_TYPE_FORBIDDEN` (a policy decision, deliberately not a "virus" code); too large →
//! 413 `M_TOO_LARGE`; no verdict from clamd → 503 `GOVMX_SCANNER_UNAVAILABLE` (unless
//! `scanner_unavailable: allow`); upstream unreachable → 502 `GOVMX_UPSTREAM_UNAVAILABLE`.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header, request::Parts},
    response::{IntoResponse, Response},
    routing::post,
};
use futures_util::StreamExt;
use govmx_service::MatrixError;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    audit::{AuditLog, AuditRecord, now_rfc3339},
    cache::VerdictCache,
    clamd::{ClamdClient, ClamdError, InstreamSession, ScanVerdict, Scanned},
    config::{Config, UnavailablePolicy},
    limits::{Refusal, ScanLimiter, SignatureGate, SpoolBudget},
    mcs::McsState,
    metrics::Metrics,
    mime::{MimeRules, SNIFF_LEN, sniff},
    spool::Spool,
};

/// Path of the scan API.
pub const SCAN_API_PATH: &str = "/_govmx/scanner/v1/scan";

/// errcode when clamd gives no verdict.
pub const ERRCODE_SCANNER_UNAVAILABLE: &str = "GOVMX_SCANNER_UNAVAILABLE";
/// errcode when the sniffed media type is not allowed.
pub const ERRCODE_MEDIA_TYPE_FORBIDDEN: &str = "GOVMX_MEDIA_TYPE_FORBIDDEN";
/// errcode when Synapse cannot be reached.
pub const ERRCODE_UPSTREAM_UNAVAILABLE: &str = "GOVMX_UPSTREAM_UNAVAILABLE";

/// Shared state of the main listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(pub(crate) Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) clamd: ClamdClient,
    pub(crate) cache: VerdictCache,
    pub(crate) audit: AuditLog,
    pub(crate) metrics: Metrics,
    pub(crate) mime: MimeRules,
    http: Client<HttpConnector, Body>,
    upstream_authority: String,
    upstream_base: String,
    scan_token_sha256: Option<[u8; 32]>,
    pub(crate) limiter: ScanLimiter,
    pub(crate) spool_budget: SpoolBudget,
    pub(crate) signatures: SignatureGate,
}

// === impl AppState ===

impl AppState {
    /// Builds the state from a validated config. `scan_token` is the scan API bearer token.
    pub fn new(
        config: Config,
        clamd: ClamdClient,
        audit: AuditLog,
        metrics: Metrics,
        scan_token: Option<String>,
    ) -> Self {
        let (upstream_authority, upstream_base) = config.upstream_parts().unwrap_or_default();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let mime = MimeRules::new(config.mime.allow.clone(), config.mime.block.clone());
        let cache = VerdictCache::new(config.verdict_cache.max_entries);
        let scan_token_sha256 = scan_token.map(|t| Sha256::digest(t.trim().as_bytes()).into());
        let limiter = ScanLimiter::new(
            config.limits.max_concurrent_scans,
            config.limits.queue_timeout.0,
        );
        let spool_budget = SpoolBudget::new(config.limits.max_spool_bytes.0);
        Self(Arc::new(Inner {
            config,
            clamd,
            cache,
            audit,
            metrics,
            mime,
            http,
            upstream_authority,
            upstream_base,
            scan_token_sha256,
            limiter,
            spool_budget,
            signatures: SignatureGate::default(),
        }))
    }

    /// The clamd client (for the health loop).
    pub fn clamd(&self) -> &ClamdClient {
        &self.0.clamd
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The signature-age gate (set by the health loop).
    pub fn signatures(&self) -> &SignatureGate {
        &self.0.signatures
    }

    /// The concurrent-scan limiter.
    pub fn limiter(&self) -> &ScanLimiter {
        &self.0.limiter
    }
}

/// The main listener's router; `mcs` adds the MCS-compatible API.
pub fn router(state: AppState, mcs: Option<Arc<McsState>>) -> Router {
    let mut router = Router::new();
    if state.0.config.scan_api.enabled {
        router = router.route(SCAN_API_PATH, post(scan_api));
    }
    let router = router.fallback(entry).with_state(state.clone());
    let traced = state.0.config.tracing.is_some();
    let router = match mcs {
        Some(mcs) => router.merge(crate::mcs::router(state, mcs)),
        None => router,
    };
    if traced {
        // One server span per request, continuing an incoming `traceparent`.
        router.layer(axum::middleware::from_fn(
            govmx_service::telemetry::trace_requests,
        ))
    } else {
        router
    }
}

/// Whether a request is a media upload that must be scanned.
///
/// The path is normalised first (percent-decoding, `//` collapsed, trailing `/` and case
/// ignored) so that spellings Synapse might route differently from us err towards scanning.
pub fn is_upload(method: &Method, path: &str) -> bool {
    if method != Method::POST && method != Method::PUT {
        return false;
    }
    let decoded = percent_decode(path).to_ascii_lowercase();
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["_matrix", "media", _version, "upload"] => true,
        ["_matrix", "media", _version, "upload", _server, _id] => true,
        // Not in the spec today, but should a server ever route it, it is scanned.
        ["_matrix", "client", _version, "media", "upload", ..] => true,
        _ => false,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let (hi, lo) = (bytes[i + 1], bytes[i + 2]);
            if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() {
                let v = (hex_val(hi) << 4) | hex_val(lo);
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

pub(crate) fn peer_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

async fn entry(State(state): State<AppState>, req: Request) -> Response {
    let peer = peer_of(&req);
    if is_upload(req.method(), req.uri().path()) {
        upload(state, peer, req).await
    } else if percent_decode(req.uri().path())
        .to_ascii_lowercase()
        .trim_start_matches('/')
        .starts_with("_govmx/")
    {
        // Our own namespace never reaches Synapse.
        MatrixError::unrecognized().into_response()
    } else {
        let (parts, body) = req.into_parts();
        forward(&state, parts, body, peer, None).await
    }
}

/// What ingesting a body produced.
pub(crate) struct Ingested {
    pub(crate) spool: Spool,
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) mime: &'static str,
    pub(crate) scan: Result<Verdict, ClamdError>,
}

pub(crate) struct Verdict {
    pub(crate) verdict: ScanVerdict,
    pub(crate) db_version: Option<u32>,
    pub(crate) cached: bool,
}

pub(crate) enum IngestError {
    /// Admission control said no (busy, stale signatures).
    Refused(Refusal),
    TooLarge {
        seen: u64,
    },
    MimeForbidden {
        mime: &'static str,
        seen: u64,
    },
    /// No clamd reachable at all (only with `fail_fast`).
    Unavailable(ClamdError),
    Body(axum::Error),
    Spool(std::io::Error),
}

pub(crate) struct IngestOpts {
    pub(crate) enforce_mime: bool,
    pub(crate) fail_fast: bool,
}

/// Reads the body once: hash, sniff, spool, and stream to clamd once it outgrows the memory bound
/// (small bodies are scanned after a cache lookup).
pub(crate) async fn ingest(
    state: &Inner,
    body: Body,
    opts: IngestOpts,
) -> Result<Ingested, IngestError> {
    let _slot = admit(state).await.map_err(IngestError::Refused)?;
    let max = state.config.max_upload_size.0;
    let memory_limit = usize::try_from(state.config.spool.memory_limit.0).unwrap_or(usize::MAX);
    let mut spool =
        Spool::new(memory_limit, &state.config.spool.dir).with_budget(&state.spool_budget);
    let mut hasher = Sha256::new();
    let mut sniff_buf: Vec<u8> = Vec::new();
    let mut mime: Option<&'static str> = None;
    let mut session: Option<InstreamSession> = None;
    let mut stream_err: Option<ClamdError> = None;
    let mut size = 0u64;
    let check_mime = |m: &'static str, seen: u64| {
        if opts.enforce_mime && !state.mime.permits(m) {
            Err(IngestError::MimeForbidden { mime: m, seen })
        } else {
            Ok(m)
        }
    };

    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(IngestError::Body)?;
        size += chunk.len() as u64;
        if size > max {
            return Err(IngestError::TooLarge { seen: size });
        }
        hasher.update(&chunk);
        if mime.is_none() {
            let take = (SNIFF_LEN - sniff_buf.len()).min(chunk.len());
            sniff_buf.extend_from_slice(&chunk[..take]);
            if sniff_buf.len() >= SNIFF_LEN {
                mime = Some(check_mime(sniff(&sniff_buf), size)?);
            }
        }
        if session.is_none() && stream_err.is_none() && spool.would_spill(chunk.len()) {
            match state.clamd.start_instream().await {
                Ok(mut s) => match s.send(spool.memory()).await {
                    Ok(()) => session = Some(s),
                    Err(err) => stream_err = Some(err),
                },
                Err(err) if opts.fail_fast => return Err(IngestError::Unavailable(err)),
                Err(err) => stream_err = Some(err),
            }
        }
        if let Some(s) = session.as_mut()
            && let Err(err) = s.send(&chunk).await
        {
            tracing::warn!(%err, "clamd stream broke off, will replay from the spool");
            session = None;
            stream_err = Some(err);
        }
        spool.write(&chunk).await.map_err(IngestError::Spool)?;
    }
    let mime = match mime {
        Some(m) => m,
        None => check_mime(sniff(&sniff_buf), size)?,
    };
    let sha256: [u8; 32] = hasher.finalize().into();

    let db_version = state.clamd.preferred_db_version();
    if let Some(verdict) = state.cache.get(&sha256, db_version) {
        // An open session is dropped without its end frame: clamd discards the stream.
        state.metrics.cache_hits.inc();
        let scan = Ok(Verdict {
            verdict,
            db_version,
            cached: true,
        });
        return Ok(Ingested {
            spool,
            size,
            sha256,
            mime,
            scan,
        });
    }

    let result: Result<Scanned, ClamdError> = match (session, stream_err) {
        (Some(s), _) => match s.finish().await {
            Err(err) if err.is_transport() => replay(state, &mut spool).await,
            other => other,
        },
        (None, Some(err)) if !err.is_transport() => Err(err),
        (None, Some(_)) => replay(state, &mut spool).await,
        (None, None) if spool.on_disk() => replay(state, &mut spool).await,
        (None, None) => state.clamd.scan_bytes(spool.memory()).await,
    };
    let scan = result.map(|scanned| {
        state
            .cache
            .put(sha256, scanned.db_version, scanned.verdict.clone());
        Verdict {
            verdict: scanned.verdict,
            db_version: scanned.db_version,
            cached: false,
        }
    });
    Ok(Ingested {
        spool,
        size,
        sha256,
        mime,
        scan,
    })
}

/// A held scan slot, counted in `govmx_media_scans_in_progress`.
pub(crate) struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Admission control: the signature-age gate, then a scan slot (held until dropped).
pub(crate) async fn admit(state: &Inner) -> Result<Slot, Refusal> {
    state.signatures.check()?;
    match state.limiter.acquire().await {
        Ok(permit) => {
            state.metrics.in_progress.inc();
            Ok(Slot {
                _permit: permit,
                gauge: state.metrics.in_progress.clone(),
            })
        }
        Err(refusal) => {
            state.metrics.refusals.inc();
            Err(refusal)
        }
    }
}

/// Scans the spooled body again from the start (after a broken stream; uses failover).
async fn replay(state: &Inner, spool: &mut Spool) -> Result<Scanned, ClamdError> {
    let reader = spool.reader().await.map_err(|source| ClamdError::Io {
        addr: "-".into(),
        op: "reopening the spool",
        source,
    })?;
    state.clamd.scan_reader(reader).await
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, MatrixError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| MatrixError::bad_request("Invalid Content-Length")),
    }
}

/// One scan decision, as audited.
pub(crate) struct Decision<'a> {
    pub(crate) verdict: &'static str,
    pub(crate) size: u64,
    pub(crate) sha256: Option<&'a [u8; 32]>,
    pub(crate) mime: Option<&'a str>,
    pub(crate) signature: Option<&'a str>,
    pub(crate) db_version: Option<u32>,
    pub(crate) cached: bool,
    pub(crate) quarantined: Option<bool>,
}

impl<'a> Decision<'a> {
    /// A decision about a hashed body that clamd gave no verdict on (unavailable, or skipped).
    pub(crate) fn hashed(
        verdict: &'static str,
        size: u64,
        sha256: &'a [u8; 32],
        mime: &'a str,
    ) -> Self {
        Decision {
            verdict,
            size,
            sha256: Some(sha256),
            mime: Some(mime),
            signature: None,
            db_version: None,
            cached: false,
            quarantined: None,
        }
    }

    /// A decision made without a full body (no hash, no scan).
    pub(crate) fn bare(verdict: &'static str, size: u64, mime: Option<&'a str>) -> Self {
        Self {
            verdict,
            size,
            sha256: None,
            mime,
            signature: None,
            db_version: None,
            cached: false,
            quarantined: None,
        }
    }
}

/// Per-request audit context.
pub(crate) struct Audit<'a> {
    pub(crate) state: &'a Inner,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

impl Audit<'_> {
    /// Writes the record, counts the verdict and logs non-clean ones. An unwritable audit log
    /// fails the request.
    pub(crate) async fn record(&self, d: Decision<'_>) -> Result<(), MatrixError> {
        let Decision {
            verdict,
            size,
            sha256,
            mime,
            signature,
            db_version,
            cached,
            quarantined,
        } = d;
        let state = self.state;
        state.metrics.verdict(verdict);
        let sha_hex = sha256.map(hex::encode);
        let client_ip = self.peer.map(|p| p.ip().to_string());
        if verdict != "clean" {
            tracing::warn!(
                verdict,
                client_ip = client_ip.as_deref().unwrap_or("-"),
                path = self.path,
                size,
                sha256 = sha_hex.as_deref().unwrap_or("-"),
                mime = mime.unwrap_or("-"),
                signature = signature.unwrap_or("-"),
                db_version,
                "upload not clean"
            );
        }
        let rec = AuditRecord {
            ts: now_rfc3339(),
            client_ip,
            method: self.method,
            path: self.path,
            size,
            sha256: sha_hex,
            mime,
            verdict,
            signature,
            db_version,
            cached,
            quarantined,
        };
        state.audit.append(&rec).await.map_err(|err| {
            MatrixError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ERRCODE_SCANNER_UNAVAILABLE,
                "The upload scanner is unavailable, try again later",
            )
            .with_internal(format!("cannot write the audit log: {err}"))
        })
    }
}

fn unavailable(err: &dyn std::fmt::Display) -> MatrixError {
    MatrixError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ERRCODE_SCANNER_UNAVAILABLE,
        "The virus scanner is unavailable, try again later",
    )
    .with_internal(err)
}

fn too_large(max: u64) -> MatrixError {
    MatrixError::too_large(format!("Upload exceeds the maximum size of {max} bytes"))
}

async fn upload(state: AppState, peer: Option<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let inner = &*state.0;
    let audit = Audit {
        state: inner,
        peer,
        method: &method,
        path: &path,
    };
    match upload_inner(&state, &audit, parts, body).await {
        Ok(res) => res,
        Err(err) => err.into_response(),
    }
}

/// 413 from the announced `Content-Length` alone, before reading a single body byte.
async fn refuse_oversize(
    audit: &Audit<'_>,
    headers: &HeaderMap,
    max: u64,
) -> Result<(), MatrixError> {
    match content_length(headers)? {
        Some(len) if len > max => {
            let d = Decision::bare("too_large", len, None);
            audit.record(d).await?;
            Err(too_large(max))
        }
        _ => Ok(()),
    }
}

async fn upload_inner(
    state: &AppState,
    audit: &Audit<'_>,
    parts: Parts,
    body: Body,
) -> Result<Response, MatrixError> {
    let inner = &*state.0;
    let max = inner.config.max_upload_size.0;
    // Refuse an announced oversize body before reading a single byte of it.
    refuse_oversize(audit, &parts.headers, max).await?;
    let started = Instant::now();
    let opts = IngestOpts {
        enforce_mime: true,
        fail_fast: inner.config.scanner_unavailable == UnavailablePolicy::Reject,
    };
    let ingested = match ingest(inner, body, opts).await {
        Ok(ingested) => ingested,
        Err(err) => return Err(ingest_error(audit, err, max).await),
    };
    inner
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    inner.metrics.bytes.inc_by(ingested.size);
    let Ingested {
        spool,
        size,
        sha256,
        mime,
        scan,
    } = ingested;
    match scan {
        Ok(Verdict {
            verdict: ScanVerdict::Clean,
            db_version,
            cached,
        }) => {
            audit
                .record(Decision {
                    verdict: "clean",
                    size,
                    sha256: Some(&sha256),
                    mime: Some(mime),
                    signature: None,
                    db_version,
                    cached,
                    quarantined: None,
                })
                .await?;
        }
        Ok(Verdict {
            verdict: ScanVerdict::Infected { signature },
            db_version,
            cached,
        }) => {
            audit
                .record(Decision {
                    verdict: "infected",
                    size,
                    sha256: Some(&sha256),
                    mime: Some(mime),
                    signature: Some(&signature),
                    db_version,
                    cached,
                    quarantined: None,
                })
                .await?;
            return Err(MatrixError::forbidden(format!(
                "Upload rejected: virus found: {signature}"
            )));
        }
        Err(err) if inner.config.scanner_unavailable == UnavailablePolicy::Allow => {
            tracing::error!(%err, "no scan verdict; forwarding unscanned because scanner_unavailable is allow");
            audit
                .record(Decision::hashed("unscanned", size, &sha256, mime))
                .await?;
        }
        Err(err) => {
            audit
                .record(Decision::hashed("scanner_unavailable", size, &sha256, mime))
                .await?;
            return Err(unavailable(&err));
        }
    }
    let body = spool.into_body().await.map_err(MatrixError::internal)?;
    Ok(forward(state, parts, body, audit.peer, Some(size)).await)
}

async fn ingest_error(audit: &Audit<'_>, err: IngestError, max: u64) -> MatrixError {
    let (res, record) = match err {
        IngestError::TooLarge { seen } => (too_large(max), Some(("too_large", seen, None))),
        IngestError::MimeForbidden { mime, seen } => (
            MatrixError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ERRCODE_MEDIA_TYPE_FORBIDDEN,
                format!("File type {mime} is not allowed"),
            ),
            Some(("blocked_mime", seen, Some(mime))),
        ),
        IngestError::Unavailable(err) => {
            (unavailable(&err), Some(("scanner_unavailable", 0, None)))
        }
        IngestError::Refused(refusal) => (
            unavailable(&refusal),
            Some(("scanner_unavailable", 0, None)),
        ),
        IngestError::Spool(err) if err.kind() == std::io::ErrorKind::StorageFull => {
            (unavailable(&err), Some(("scanner_unavailable", 0, None)))
        }
        IngestError::Body(err) => {
            audit.state.metrics.verdict("aborted");
            (
                MatrixError::bad_request("Upload body broke off").with_internal(err),
                None,
            )
        }
        IngestError::Spool(err) => (
            MatrixError::internal(format!("spool write failed: {err}")),
            None,
        ),
    };
    if let Some((verdict, seen, mime)) = record
        && let Err(audit_err) = audit.record(Decision::bare(verdict, seen, mime)).await
    {
        return audit_err;
    }
    res
}

async fn scan_api(State(state): State<AppState>, req: Request) -> Response {
    let peer = peer_of(&req);
    let (parts, body) = req.into_parts();
    let inner = &*state.0;
    let path = parts.uri.path().to_owned();
    let audit = Audit {
        state: inner,
        peer,
        method: "POST",
        path: &path,
    };
    let res: Result<Response, MatrixError> = async {
        check_token(inner, &parts.headers)?;
        let max = inner.config.max_upload_size.0;
        refuse_oversize(&audit, &parts.headers, max).await?;
        let started = Instant::now();
        let ingested = match ingest(
            inner,
            body,
            IngestOpts {
                enforce_mime: false,
                fail_fast: true,
            },
        )
        .await
        {
            Ok(i) => i,
            Err(err) => return Err(ingest_error(&audit, err, max).await),
        };
        inner
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        inner.metrics.bytes.inc_by(ingested.size);
        let Ingested {
            size,
            sha256,
            mime,
            scan,
            ..
        } = ingested;
        let Verdict {
            verdict,
            db_version,
            cached,
        } = match scan {
            Ok(v) => v,
            Err(err) => {
                audit
                    .record(Decision::hashed("scanner_unavailable", size, &sha256, mime))
                    .await?;
                return Err(unavailable(&err));
            }
        };
        let signature = match &verdict {
            ScanVerdict::Clean => None,
            ScanVerdict::Infected { signature } => Some(signature.as_str()),
        };
        let label = if signature.is_some() {
            "infected"
        } else {
            "clean"
        };
        audit
            .record(Decision {
                verdict: label,
                size,
                sha256: Some(&sha256),
                mime: Some(mime),
                signature,
                db_version,
                cached,
                quarantined: None,
            })
            .await?;
        Ok(Json(json!({
            "clean": signature.is_none(),
            "signature": signature,
            "dbVersion": db_version,
            "sha256": hex::encode(sha256),
            "mimeType": mime,
            "size": size,
            "cached": cached,
        }))
        .into_response())
    }
    .await;
    res.unwrap_or_else(IntoResponse::into_response)
}

fn check_token(state: &Inner, headers: &HeaderMap) -> Result<(), MatrixError> {
    let Some(expected) = &state.scan_token_sha256 else {
        return Err(MatrixError::forbidden("Scan API has no token configured"));
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        ));
    };
    // Comparing digests keeps the comparison time independent of the token's content.
    let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    if got
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        != 0
    {
        return Err(MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown access token",
        ));
    }
    Ok(())
}

/// Sends the request to Synapse and streams the response back. `known_len` replaces the
/// client's framing with a `Content-Length` (Synapse requires one for uploads).
async fn forward(
    state: &AppState,
    parts: Parts,
    body: Body,
    peer: Option<SocketAddr>,
    known_len: Option<u64>,
) -> Response {
    let inner = &*state.0;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!(
        "http://{}{}{}",
        inner.upstream_authority, inner.upstream_base, path_and_query
    )
    .parse()
    {
        Ok(uri) => uri,
        Err(err) => {
            return MatrixError::bad_request("Invalid request URI")
                .with_internal(err)
                .into_response();
        }
    };
    let mut headers = parts.headers;
    govmx_service::proxy::strip_hop_by_hop(&mut headers);
    if let Some(len) = known_len {
        // The body is complete and checked: plain Content-Length framing, no 100-continue.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        headers.remove(header::EXPECT);
    }
    // Synapse continues our span's trace (traces off: the client's headers pass unchanged).
    govmx_service::telemetry::inject_trace_context(&mut headers);
    if let Some(peer) = peer {
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
    }
    let mut req = axum::http::Request::new(body);
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    match inner.http.request(req).await {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            govmx_service::proxy::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) => MatrixError::new(
            StatusCode::BAD_GATEWAY,
            ERRCODE_UPSTREAM_UNAVAILABLE,
            "The homeserver is unavailable, try again later",
        )
        .with_internal(err)
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths() {
        let cases = [
            ("POST", "/_matrix/media/v3/upload", true),
            ("POST", "/_matrix/media/r0/upload", true),
            ("POST", "/_matrix/media/v1/upload", true),
            ("PUT", "/_matrix/media/v3/upload/example.org/abcDEF", true),
            ("POST", "/_matrix/media/v3/upload/", true),
            ("POST", "//_matrix//media/v3/upload", true),
            ("POST", "/_matrix/media/v3/%75pload", true),
            ("POST", "/_MATRIX/media/V3/Upload", true),
            ("POST", "/_matrix/client/v1/media/upload", true),
            ("GET", "/_matrix/media/v3/upload", false),
            ("POST", "/_matrix/media/v1/create", false),
            (
                "GET",
                "/_matrix/client/v1/media/download/example.org/abc",
                false,
            ),
            (
                "POST",
                "/_matrix/client/v3/rooms/!r/send/m.room.message",
                false,
            ),
            ("POST", "/_matrix/media/v3/upload/a/b/c", false),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                is_upload(&method.parse().unwrap(), path),
                want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("%41%4a%zz%%+f"), "AJ%zz%%+f");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
