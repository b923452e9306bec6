//! The matrix-content-scanner (MCS) compatible API under `/_matrix/media_proxy/unstable/`, as
//! spoken by Element X Pro (`matrix-sdk-contentscanner`), element-android and Tchap.
//!
//! Routes (trailing slashes ignored; any `OPTIONS` → 200 with an empty body; CORS headers on
//! every response):
//! - `GET scan/{server}/{id}` → `{"clean":true,"info":"File is clean"}` or
//!   `{"clean":false,"info":"***VIRUS DETECTED***"}`;
//! - `GET download/{server}/{id}`, `GET thumbnail/{server}/{id}?width&height&method&animated` →
//!   the media bytes when clean, else 403 `MCS_MEDIA_NOT_CLEAN`;
//! - `POST scan_encrypted`, `POST download_encrypted` with `{"file": EncryptedFile}` or
//!   `{"encrypted_body": {ciphertext, mac, ephemeral}}` (PkEncryption to [`McsState`]'s key);
//!   `download_encrypted` returns the **ciphertext**;
//! - `GET public_key` → `{"public_key": "<unpadded base64 Curve25519>"}`.
//!
//! Errors are `{"reason": CODE, "info": text}` ([`McsError`]); unknown routes are
//! `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}` (404, or 405 for a known route
//! with the wrong method). Our addition: 503 `MCS_SCANNER_UNAVAILABLE` when clamd gives no
//! verdict, all scan slots stay busy, or the signatures are too old — never reported as
//! infected and never cached.
//!
//! Data path: media is fetched from `mcs.homeserver_url` as a stream. Plain media goes through
//! the upload gate's ingest (hash, sniff, spool, INSTREAM). Encrypted media is decrypted
//! (AES-256-CTR) chunk by chunk straight into clamd's INSTREAM while the **ciphertext** is
//! hashed (and, for `download_encrypted`, spooled); plaintext never touches the disk. A hash
//! mismatch discards the verdict (400 `MCS_MEDIA_FAILED_TO_DECRYPT`).
//!
//! Caching: verdicts go to the shared [`crate::cache::VerdictCache`] (clean/infected only, keyed
//! by content SHA-256 + clamd DB version; for encrypted media the "content" hash is derived from
//! the ciphertext hash, key and IV, which together fix the plaintext). Identical concurrent
//! requests (same media + thumbnail parameters + credentials, or same encrypted content) share
//! one fetch and one scan.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::{Arc, Mutex},
};

use aes::Aes256;
use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ctr::cipher::{KeyIvInit, StreamCipher};
use futures_util::{
    FutureExt, StreamExt,
    future::{BoxFuture, Shared},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;
use vodozemac::{
    Curve25519SecretKey,
    pk_encryption::{Message, PkDecryption},
};

use crate::{
    clamd::{ScanVerdict, Scanned},
    config::McsConfig,
    gate::{self, AppState, Audit, Decision, IngestError, IngestOpts, Inner},
    limits::Refusal,
    metrics::ResultLabel,
    mime::{SNIFF_LEN, sniff},
    spool::{Spool, Stored},
};

/// Path prefix of the API.
pub const PREFIX: &str = "/_matrix/media_proxy/unstable";

/// `info` of a clean verdict.
pub const INFO_CLEAN: &str = "File is clean";
/// `info` of an infected verdict.
pub const INFO_VIRUS: &str = "***VIRUS DETECTED***";

/// Largest accepted POST body (an `EncryptedFile` is well under 2 KiB).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

const B64_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An MCS error response: `{"reason": ..., "info": ...}`. 5xx causes are logged, not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McsError {
    status: StatusCode,
    reason: &'static str,
    info: String,
    internal: Option<String>,
}

// === impl McsError ===

impl McsError {
    fn new(status: StatusCode, reason: &'static str, info: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            info: info.into(),
            internal: None,
        }
    }

    fn with_internal(mut self, cause: impl std::fmt::Display) -> Self {
        self.internal = Some(cause.to_string());
        self
    }

    /// 403 `MCS_MEDIA_NOT_CLEAN`.
    pub fn not_clean(info: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN", info)
    }

    /// 400 `MCS_MALFORMED_JSON`.
    pub fn malformed(info: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MCS_MALFORMED_JSON", info)
    }

    /// 400 `MCS_MEDIA_FAILED_TO_DECRYPT` (what MCS-py 1.3 sends for every decryption failure;
    /// its docs still name the legacy 403 `MCS_BAD_DECRYPTION`).
    pub fn decrypt(info: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MCS_MEDIA_FAILED_TO_DECRYPT", info)
    }

    /// 502 `MCS_MEDIA_REQUEST_FAILED`.
    pub fn request_failed(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "MCS_MEDIA_REQUEST_FAILED",
            "Failed to download the media",
        )
        .with_internal(cause)
    }

    /// 503 `MCS_SCANNER_UNAVAILABLE`: no verdict (never cached, never "infected").
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "MCS_SCANNER_UNAVAILABLE",
            "The virus scanner is unavailable, try again later",
        )
        .with_internal(cause)
    }

    /// 403 `MCS_MIME_TYPE_FORBIDDEN`.
    pub fn mime_forbidden(mime: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "MCS_MIME_TYPE_FORBIDDEN",
            format!("File type: {mime} not allowed"),
        )
    }

    fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
        .with_internal(cause)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `reason` code.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl IntoResponse for McsError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(
                status = self.status.as_u16(),
                reason = self.reason,
                cause = self.internal.as_deref().unwrap_or("-"),
                "{}",
                self.info
            );
        }
        (
            self.status,
            Json(json!({"reason": self.reason, "info": self.info})),
        )
            .into_response()
    }
}

/// A validated `EncryptedFile` (schema checked; key material not decoded yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// `server/id` (the `url` without `mxc://`).
    pub media_path: String,
    /// JWK `k` (base64url).
    pub k: String,
    /// `iv` (base64).
    pub iv: String,
    /// `hashes.sha256` (base64) of the ciphertext.
    pub sha256: String,
}

/// The POST body: the file in clear or PkEncryption'd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// `{"file": EncryptedFile}`.
    File(FileMeta),
    /// `{"encrypted_body": {ciphertext, mac, ephemeral}}`.
    Encrypted {
        /// Base64 ciphertext.
        ciphertext: String,
        /// Base64 MAC.
        mac: String,
        /// Base64 ephemeral Curve25519 key.
        ephemeral: String,
    },
}

/// Parses a POST body. Total: never panics; bad input → `MCS_MALFORMED_JSON`.
pub fn parse_body(raw: &[u8]) -> Result<RequestBody, McsError> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|_| McsError::malformed("Malformed JSON"))?;
    if let Some(enc) = value.get("encrypted_body") {
        let field = |name: &str| {
            enc.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| McsError::malformed(format!("encrypted_body.{name} missing")))
        };
        return Ok(RequestBody::Encrypted {
            ciphertext: field("ciphertext")?,
            mac: field("mac")?,
            ephemeral: field("ephemeral")?,
        });
    }
    parse_file(&value).map(RequestBody::File)
}

/// Validates `{"file": EncryptedFile}` against the MCS schema.
pub fn parse_file(body: &Value) -> Result<FileMeta, McsError> {
    let file = body
        .get("file")
        .filter(|f| f.is_object())
        .ok_or_else(|| McsError::malformed("file missing"))?;
    let str_at = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    if str_at(file, "v").as_deref() != Some("v2") {
        return Err(McsError::malformed("file.v must be \"v2\""));
    }
    let url = str_at(file, "url").ok_or_else(|| McsError::malformed("file.url missing"))?;
    let iv = str_at(file, "iv").ok_or_else(|| McsError::malformed("file.iv missing"))?;
    let sha256 = file
        .get("hashes")
        .and_then(|h| str_at(h, "sha256"))
        .ok_or_else(|| McsError::malformed("file.hashes.sha256 missing"))?;
    let key = file
        .get("key")
        .filter(|k| k.is_object())
        .ok_or_else(|| McsError::malformed("file.key missing"))?;
    let ops: Vec<&str> = key
        .get("key_ops")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let key_ok = str_at(key, "alg").as_deref() == Some("A256CTR")
        && str_at(key, "kty").as_deref() == Some("oct")
        && key.get("ext") == Some(&Value::Bool(true))
        && ops.contains(&"encrypt")
        && ops.contains(&"decrypt");
    let k = str_at(key, "k").filter(|_| key_ok).ok_or_else(|| {
        McsError::malformed("file.key must be an A256CTR oct JWK with ext and key_ops")
    })?;
    let media_path = url
        .strip_prefix("mxc://")
        .ok_or_else(|| McsError::malformed("file.url must be an mxc:// URI"))?
        .to_owned();
    Ok(FileMeta {
        media_path,
        k,
        iv,
        sha256,
    })
}

/// Splits `server/id`, checking both parts (exactly one `/`; server name and media ID
/// characters only). Anything else → 403 `MCS_MEDIA_NOT_CLEAN` "Malformed media ID".
pub fn parse_media_path(path: &str) -> Result<(&str, &str), McsError> {
    let bad = || McsError::not_clean("Malformed media ID");
    let (server, id) = path.split_once('/').ok_or_else(bad)?;
    let server_ok = !server.is_empty()
        && server.len() <= 255
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let id_ok = !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if server_ok && id_ok && !server.starts_with('.') && !server.contains("..") {
        Ok((server, id))
    } else {
        Err(bad())
    }
}

/// Decoded key material of an encrypted attachment.
#[derive(Clone, Debug)]
pub struct CryptoParams {
    key: [u8; 32],
    iv: [u8; 16],
    sha256: [u8; 32],
}

/// Decodes `k`, `iv` and `hashes.sha256`; a wrong length or bad base64 is a decryption error.
pub fn crypto_params(meta: &FileMeta) -> Result<CryptoParams, McsError> {
    fn decode<const N: usize>(s: &str, what: &str) -> Result<[u8; N], McsError> {
        let bytes = B64_URL
            .decode(s)
            .or_else(|_| B64_STD.decode(s))
            .map_err(|_| McsError::decrypt(format!("{what} is not valid base64")))?;
        bytes
            .try_into()
            .map_err(|_| McsError::decrypt(format!("{what} must be {N} bytes")))
    }
    Ok(CryptoParams {
        key: decode(&meta.k, "key")?,
        iv: decode(&meta.iv, "iv")?,
        sha256: decode(&meta.sha256, "hashes.sha256")?,
    })
}

impl CryptoParams {
    /// The verdict-cache "content" hash: ciphertext hash, key and IV fix the plaintext.
    fn content_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"govmx-mcs-encrypted\0");
        h.update(self.sha256);
        h.update(self.key);
        h.update(self.iv);
        h.finalize().into()
    }
}

type Outcome = Result<Arc<Fetched>, McsError>;

/// State of the MCS API: the request-decryption key, the homeserver client and the in-flight
/// map of shared jobs.
pub struct McsState {
    decryption: PkDecryption,
    public_key: String,
    http: reqwest::Client,
    homeserver: String,
    access_token: Option<String>,
    quarantine_token: Option<String>,
    inflight: Mutex<HashMap<[u8; 32], Shared<BoxFuture<'static, Outcome>>>>,
}

impl std::fmt::Debug for McsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McsState")
            .field("public_key", &self.public_key)
            .field("homeserver", &self.homeserver)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "quarantine_token",
                &self.quarantine_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

// === impl McsState ===

impl McsState {
    /// Loads (or creates, mode 0600) the request secret, reads the access token and builds the
    /// homeserver client. `config` must be validated and enabled.
    pub fn from_config(config: &McsConfig) -> Result<Self, String> {
        let secret_path = config
            .request_secret_file
            .as_deref()
            .ok_or("mcs.request_secret_file is not set")?;
        let secret = load_or_create_secret(secret_path)
            .map_err(|e| format!("request secret {}: {e}", secret_path.display()))?;
        let decryption = PkDecryption::from_key(Curve25519SecretKey::from_slice(&secret));
        let public_key = decryption.public_key().to_base64();
        let access_token = match &config.access_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("access token {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let quarantine_token = match &config.quarantine_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("quarantine token {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let timeout = config.fetch_timeout.0;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // The homeserver is on the internal network; no proxy from the environment.
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let homeserver = config
            .homeserver_url
            .as_deref()
            .ok_or("mcs.homeserver_url is not set")?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            decryption,
            public_key,
            http,
            homeserver,
            access_token,
            quarantine_token,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// The public Curve25519 key clients encrypt request bodies to (unpadded base64).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }
}

/// Reads the 32-byte secret (base64) from `path`, or creates it (0600, `O_EXCL`). An existing
/// file readable by group or others is refused.
fn load_or_create_secret(path: &Path) -> io::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("mode {:o} is too open, chmod 600 it", mode & 0o777),
                ));
            }
            let bytes = B64_STD
                .decode(text.trim())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            bytes
                .try_into()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "secret must be 32 bytes"))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let secret = Curve25519SecretKey::new().to_bytes();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            use std::io::Write as _;
            writeln!(
                file,
                "{}",
                base64::engine::general_purpose::STANDARD.encode(*secret)
            )?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created the MCS request secret");
            Ok(*secret)
        }
        Err(err) => Err(err),
    }
}

/// A fetched and scanned piece of media, shared by joined requests.
#[derive(Debug)]
struct Fetched {
    verdict: ScanVerdict,
    size: u64,
    sha256: [u8; 32],
    mime: Option<&'static str>,
    db_version: Option<u32>,
    cached: bool,
    content: Option<Stored>,
    content_type: Option<HeaderValue>,
    content_disposition: Option<HeaderValue>,
    /// Infected and quarantine configured: whether Synapse quarantined the media.
    quarantined: Option<bool>,
}

impl Fetched {
    /// A streaming body over the stored content (the temp file lives until the body ends).
    fn body(self: &Arc<Self>) -> io::Result<Body> {
        match &self.content {
            None => Ok(Body::empty()),
            Some(Stored::Memory(bytes)) => Ok(Body::from(bytes.clone())),
            Some(Stored::File(named, _)) => {
                let reader = tokio::fs::File::from_std(named.reopen()?);
                let guard = self.clone();
                let stream = ReaderStream::with_capacity(reader, 64 * 1024).map(move |chunk| {
                    let _guard = &guard;
                    chunk
                });
                Ok(Body::from_stream(stream))
            }
        }
    }
}

/// What one shared job does.
#[derive(Debug)]
enum Job {
    Plain {
        server: String,
        id: String,
        thumbnail: Option<Vec<(String, String)>>,
        auth: Option<HeaderValue>,
    },
    Encrypted {
        server: String,
        id: String,
        params: CryptoParams,
        keep: bool,
        auth: Option<HeaderValue>,
    },
}

/// The API router (merged into the main listener's router).
pub fn router(state: AppState, mcs: Arc<McsState>) -> Router {
    Router::new()
        .route(PREFIX, any(dispatch))
        .route(&format!("{PREFIX}/"), any(dispatch))
        .route(&format!("{PREFIX}/{{*rest}}"), any(dispatch))
        .with_state((state, mcs))
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Origin, X-Requested-With, Content-Type, Accept, Authorization"),
    );
}

async fn dispatch(State((state, mcs)): State<(AppState, Arc<McsState>)>, req: Request) -> Response {
    let mut res = route(&state, &mcs, req).await;
    cors(res.headers_mut());
    res
}

fn unrecognized(status: StatusCode) -> Response {
    (
        status,
        Json(json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})),
    )
        .into_response()
}

async fn route(state: &AppState, mcs: &Arc<McsState>, req: Request) -> Response {
    if req.method() == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default().to_owned();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let expected = match segments.first().copied() {
        Some("public_key") if segments.len() == 1 => Method::GET,
        Some("scan" | "download" | "thumbnail") if segments.len() == 3 => Method::GET,
        Some("scan_encrypted" | "download_encrypted") if segments.len() == 1 => Method::POST,
        _ => return unrecognized(StatusCode::NOT_FOUND),
    };
    if method != expected {
        return unrecognized(StatusCode::METHOD_NOT_ALLOWED);
    }
    let peer = gate::peer_of(&req);
    let audit = Audit {
        state: &state.0,
        peer,
        method: method.as_str(),
        path: &path,
    };
    let auth = req.headers().get(header::AUTHORIZATION).cloned();
    let kind = segments[0];
    let res: Result<Response, McsError> = match kind {
        "public_key" => Ok(Json(json!({"public_key": mcs.public_key()})).into_response()),
        "scan" | "download" | "thumbnail" => {
            let media = format!("{}/{}", segments[1], segments[2]);
            let thumbnail = (kind == "thumbnail").then(|| thumbnail_query(req.uri().query()));
            match parse_media_path(&media) {
                Err(err) => Err(err),
                Ok((server, id)) => {
                    let job = Job::Plain {
                        server: server.to_owned(),
                        id: id.to_owned(),
                        thumbnail,
                        auth,
                    };
                    let outcome = run(state, mcs, job).await;
                    respond(&audit, outcome, kind != "scan").await
                }
            }
        }
        _ => match encrypted_job(mcs, req, kind == "download_encrypted", auth).await {
            Err(err) => Err(err),
            Ok(job) => {
                let outcome = run(state, mcs, job).await;
                respond(&audit, outcome, kind == "download_encrypted").await
            }
        },
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

/// Only the spec's thumbnail parameters are passed upstream, in a fixed order.
fn thumbnail_query(query: Option<&str>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| matches!(*k, "width" | "height" | "method" | "animated"))
        .filter(|(_, v)| v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    pairs.sort();
    pairs.dedup_by(|a, b| a.0 == b.0);
    pairs
}

async fn encrypted_job(
    mcs: &McsState,
    req: Request,
    keep: bool,
    auth: Option<HeaderValue>,
) -> Result<Job, McsError> {
    let raw = axum::body::to_bytes(req.into_body(), MAX_REQUEST_BODY)
        .await
        .map_err(|_| McsError::malformed("Request body too large or broken"))?;
    let meta = match parse_body(&raw)? {
        RequestBody::File(meta) => meta,
        RequestBody::Encrypted {
            ciphertext,
            mac,
            ephemeral,
        } => {
            let message = Message::from_base64(&ciphertext, &mac, &ephemeral).map_err(|e| {
                McsError::decrypt("Failed to decrypt the request body").with_internal(e)
            })?;
            let plain = mcs.decryption.decrypt(&message).map_err(|e| {
                McsError::decrypt("Failed to decrypt the request body").with_internal(e)
            })?;
            let value: Value = serde_json::from_slice(&plain)
                .map_err(|_| McsError::malformed("Malformed JSON in encrypted_body"))?;
            parse_file(&value)?
        }
    };
    let (server, id) = parse_media_path(&meta.media_path)?;
    let params = crypto_params(&meta)?;
    Ok(Job::Encrypted {
        server: server.to_owned(),
        id: id.to_owned(),
        params,
        keep,
        auth,
    })
}

/// The in-flight key: identical jobs (including the credentials they fetch with) share one run.
fn job_key(job: &Job) -> [u8; 32] {
    let mut h = Sha256::new();
    let auth_of = |a: &Option<HeaderValue>| a.as_ref().map(|v| Sha256::digest(v.as_bytes()));
    match job {
        Job::Plain {
            server,
            id,
            thumbnail,
            auth,
        } => {
            h.update(b"plain\0");
            h.update(server.as_bytes());
            h.update(b"/");
            h.update(id.as_bytes());
            h.update(b"\0");
            h.update(serde_json::to_vec(thumbnail).unwrap_or_default());
            h.update(b"\0");
            if let Some(a) = auth_of(auth) {
                h.update(a);
            }
        }
        Job::Encrypted {
            server,
            id,
            params,
            keep,
            auth,
        } => {
            h.update(if *keep { b"enc-keep\0" } else { b"enc-scan\0" });
            h.update(params.content_key());
            // A download also needs the media to exist where the client says it is.
            if *keep {
                h.update(server.as_bytes());
                h.update(b"/");
                h.update(id.as_bytes());
                if let Some(a) = auth_of(auth) {
                    h.update(a);
                }
            }
        }
    }
    h.finalize().into()
}

/// Runs `job`, or joins an identical one already running. The job runs in its own task, so a
/// client that disconnects does not cancel it for the others.
async fn run(state: &AppState, mcs: &Arc<McsState>, job: Job) -> Outcome {
    let key = job_key(&job);
    let shared = {
        let mut map = mcs.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = map.get(&key) {
            state.metrics().inflight_joins.inc();
            running.clone()
        } else {
            let (state2, mcs2) = (state.clone(), mcs.clone());
            // Removal takes the lock we hold, so it happens after the insert below.
            let task = tokio::spawn(async move {
                let outcome = run_job(&state2, &mcs2, job).await.map(Arc::new);
                mcs2.inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                outcome
            });
            let shared = async move { task.await.unwrap_or_else(|e| Err(McsError::internal(e))) }
                .boxed()
                .shared();
            map.insert(key, shared.clone());
            shared
        }
    };
    shared.await
}

/// Runs a job; infected media is then quarantined in Synapse when configured.
async fn run_job(state: &AppState, mcs: &McsState, job: Job) -> Result<Fetched, McsError> {
    let media = match &job {
        Job::Plain { server, id, .. } | Job::Encrypted { server, id, .. } => {
            (server.clone(), id.clone())
        }
    };
    let mut fetched = scan_job(state, mcs, job).await?;
    if let (ScanVerdict::Infected { signature }, Some(token)) =
        (&fetched.verdict, &mcs.quarantine_token)
    {
        let ok = quarantine(mcs, token, &media.0, &media.1).await;
        let result = if ok { "ok" } else { "failed" };
        state
            .metrics()
            .quarantines
            .get_or_create(&ResultLabel { result })
            .inc();
        if ok {
            tracing::warn!(server = %media.0, media_id = %media.1, signature, "infected media quarantined in Synapse");
        }
        fetched.quarantined = Some(ok);
    }
    Ok(fetched)
}

/// `POST /_synapse/admin/v1/media/quarantine/{server}/{id}`; failures are logged, not fatal
/// (the verdict stands either way).
async fn quarantine(mcs: &McsState, token: &str, server: &str, id: &str) -> bool {
    let url = format!(
        "{}/_synapse/admin/v1/media/quarantine/{server}/{id}",
        mcs.homeserver
    );
    match mcs
        .http
        .post(&url)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
    {
        Ok(res) if res.status().is_success() => true,
        Ok(res) => {
            tracing::error!(server, media_id = id, status = %res.status(), "Synapse refused to quarantine infected media");
            false
        }
        Err(err) => {
            tracing::error!(server, media_id = id, error = %err, "cannot reach Synapse to quarantine infected media");
            false
        }
    }
}

async fn scan_job(state: &AppState, mcs: &McsState, job: Job) -> Result<Fetched, McsError> {
    let inner = &*state.0;
    match job {
        Job::Plain {
            server,
            id,
            thumbnail,
            auth,
        } => {
            let res = fetch(inner, mcs, &server, &id, thumbnail.as_deref(), auth).await?;
            plain(inner, res).await
        }
        Job::Encrypted {
            server,
            id,
            params,
            keep,
            auth,
        } => {
            let cache_key = params.content_key();
            let cached = inner
                .cache
                .get(&cache_key, inner.clamd.preferred_db_version());
            if let Some(verdict) = &cached {
                inner.metrics.cache_hits.inc();
                if !keep {
                    return Ok(Fetched {
                        verdict: verdict.clone(),
                        size: 0,
                        sha256: params.sha256,
                        mime: None,
                        db_version: inner.clamd.preferred_db_version(),
                        cached: true,
                        content: None,
                        content_type: None,
                        content_disposition: None,
                        quarantined: None,
                    });
                }
            }
            let res = fetch(inner, mcs, &server, &id, None, auth).await?;
            encrypted(inner, res, &params, keep, cached).await
        }
    }
}

/// Fetches media from the homeserver: `/_matrix/client/v1/media/*` with the client's
/// `Authorization` (or the configured service token), else legacy `/_matrix/media/v3/*`.
async fn fetch(
    inner: &Inner,
    mcs: &McsState,
    server: &str,
    id: &str,
    thumbnail: Option<&[(String, String)]>,
    auth: Option<HeaderValue>,
) -> Result<reqwest::Response, McsError> {
    let what = if thumbnail.is_some() {
        "thumbnail"
    } else {
        "download"
    };
    let auth = auth.or_else(|| {
        mcs.access_token
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
    });
    let base = if auth.is_some() {
        "_matrix/client/v1/media"
    } else {
        "_matrix/media/v3"
    };
    let mut url = format!("{}/{base}/{what}/{server}/{id}", mcs.homeserver);
    if let Some(query) = thumbnail {
        // Keys are fixed and values alphanumeric (see `thumbnail_query`): nothing to escape.
        let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        url = format!("{url}?{}", pairs.join("&"));
    }
    // With traces on, Synapse continues the request's trace.
    let mut headers = HeaderMap::new();
    govmx_service::telemetry::inject_trace_context(&mut headers);
    let mut req = mcs.http.get(&url).headers(headers);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let res = req.send().await.map_err(McsError::request_failed)?;
    let status = res.status();
    if status == StatusCode::NOT_FOUND {
        return Err(McsError::new(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "File not found",
        ));
    }
    if status == StatusCode::UNAUTHORIZED {
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let reason = match body.get("errcode").and_then(Value::as_str) {
            Some("M_MISSING_TOKEN") => "M_MISSING_TOKEN",
            Some("M_UNKNOWN_TOKEN") => "M_UNKNOWN_TOKEN",
            _ => return Err(McsError::request_failed("homeserver answered 401")),
        };
        return Err(McsError::new(
            StatusCode::UNAUTHORIZED,
            reason,
            "Access token missing or invalid",
        ));
    }
    if status != StatusCode::OK {
        return Err(McsError::request_failed(format!(
            "homeserver answered {status} for {url}"
        )));
    }
    if res.headers().get_all(header::CONTENT_TYPE).iter().count() != 1 {
        return Err(McsError::request_failed(
            "homeserver response has no or several Content-Type headers",
        ));
    }
    let max = inner.config.max_upload_size.0;
    if res.content_length().is_some_and(|len| len > max) {
        return Err(too_large(max));
    }
    Ok(res)
}

fn too_large(max: u64) -> McsError {
    McsError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
        format!("Media exceeds the maximum size of {max} bytes"),
    )
}

fn header_of(res: &reqwest::Response, name: HeaderName) -> Option<HeaderValue> {
    res.headers().get(name).cloned()
}

fn refused(refusal: Refusal) -> McsError {
    McsError::unavailable(refusal)
}

/// Plain media: the upload gate's ingest (size cap, hash, sniffed MIME rules, spool, INSTREAM,
/// verdict cache) over the homeserver's response stream.
async fn plain(inner: &Inner, res: reqwest::Response) -> Result<Fetched, McsError> {
    let content_type = header_of(&res, header::CONTENT_TYPE);
    let content_disposition = header_of(&res, header::CONTENT_DISPOSITION);
    let body = Body::from_stream(res.bytes_stream());
    let opts = IngestOpts {
        enforce_mime: true,
        fail_fast: true,
    };
    let ingested = match gate::ingest(inner, body, opts).await {
        Ok(ingested) => ingested,
        Err(err) => {
            return Err(match err {
                IngestError::TooLarge { .. } => too_large(inner.config.max_upload_size.0),
                IngestError::MimeForbidden { mime, .. } => McsError::mime_forbidden(mime),
                IngestError::Unavailable(err) => McsError::unavailable(err),
                IngestError::Refused(refusal) => refused(refusal),
                IngestError::Body(err) => McsError::request_failed(err),
                IngestError::Spool(err) if err.kind() == io::ErrorKind::StorageFull => {
                    McsError::unavailable(err)
                }
                IngestError::Spool(err) => McsError::internal(err),
            });
        }
    };
    inner.metrics.bytes.inc_by(ingested.size);
    let verdict = ingested.scan.map_err(McsError::unavailable)?;
    let content = ingested
        .spool
        .into_stored()
        .await
        .map_err(McsError::internal)?;
    Ok(Fetched {
        verdict: verdict.verdict,
        size: ingested.size,
        sha256: ingested.sha256,
        mime: Some(ingested.mime),
        db_version: verdict.db_version,
        cached: verdict.cached,
        content: Some(content),
        content_type,
        content_disposition,
        quarantined: None,
    })
}

/// Encrypted media: hash (and with `keep`, spool) the ciphertext, decrypt each chunk with
/// AES-256-CTR and stream the plaintext straight into clamd (skipped when `cached` holds a
/// verdict). The hash is compared at the end; a mismatch discards everything.
async fn encrypted(
    inner: &Inner,
    res: reqwest::Response,
    params: &CryptoParams,
    keep: bool,
    cached: Option<ScanVerdict>,
) -> Result<Fetched, McsError> {
    let content_type = header_of(&res, header::CONTENT_TYPE);
    let content_disposition = header_of(&res, header::CONTENT_DISPOSITION);
    let max = inner.config.max_upload_size.0;
    let _slot = match cached {
        None => Some(gate::admit(inner).await.map_err(refused)?),
        Some(_) => None,
    };
    let mut session = match cached {
        None => Some(
            inner
                .clamd
                .start_instream()
                .await
                .map_err(McsError::unavailable)?,
        ),
        Some(_) => None,
    };
    let memory_limit = usize::try_from(inner.config.spool.memory_limit.0).unwrap_or(usize::MAX);
    let mut spool = keep.then(|| {
        Spool::new(memory_limit, &inner.config.spool.dir).with_budget(&inner.spool_budget)
    });
    let mut cipher = Aes256Ctr::new(&params.key.into(), &params.iv.into());
    let mut hasher = Sha256::new();
    let mut sniff_buf = Vec::new();
    let mut mime = None;
    let mut size = 0u64;
    let mut plain = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(McsError::request_failed)?;
        size += chunk.len() as u64;
        if size > max {
            return Err(too_large(max));
        }
        hasher.update(&chunk);
        if let Some(spool) = spool.as_mut() {
            spool.write(&chunk).await.map_err(|err| {
                if err.kind() == io::ErrorKind::StorageFull {
                    McsError::unavailable(err)
                } else {
                    McsError::internal(err)
                }
            })?;
        }
        let Some(session) = session.as_mut() else {
            continue;
        };
        plain.clear();
        plain.extend_from_slice(&chunk);
        cipher.apply_keystream(&mut plain);
        if mime.is_none() {
            let take = (SNIFF_LEN - sniff_buf.len()).min(plain.len());
            sniff_buf.extend_from_slice(&plain[..take]);
            if sniff_buf.len() >= SNIFF_LEN {
                mime = Some(check_mime(inner, sniff(&sniff_buf))?);
            }
        }
        session.send(&plain).await.map_err(McsError::unavailable)?;
    }
    let sha256: [u8; 32] = hasher.finalize().into();
    if sha256 != params.sha256 {
        // The open INSTREAM is dropped unfinished: clamd discards it, the verdict never exists.
        return Err(McsError::decrypt(
            "Hash mismatch: the file is not what the key describes",
        ));
    }
    inner.metrics.bytes.inc_by(size);
    let content = match spool {
        Some(spool) => Some(spool.into_stored().await.map_err(McsError::internal)?),
        None => None,
    };
    let cache_key = params.content_key();
    let (verdict, db_version, was_cached) = match (session, cached) {
        (_, Some(verdict)) => (verdict, inner.clamd.preferred_db_version(), true),
        (Some(session), None) => {
            if mime.is_none() {
                mime = Some(check_mime(inner, sniff(&sniff_buf))?);
            }
            let Scanned {
                verdict,
                db_version,
                ..
            } = session.finish().await.map_err(McsError::unavailable)?;
            inner.cache.put(cache_key, db_version, verdict.clone());
            (verdict, db_version, false)
        }
        (None, None) => return Err(McsError::internal("no scan session")),
    };
    Ok(Fetched {
        verdict,
        size,
        sha256,
        mime,
        db_version,
        cached: was_cached,
        content,
        content_type,
        content_disposition,
        quarantined: None,
    })
}

fn check_mime(inner: &Inner, mime: &'static str) -> Result<&'static str, McsError> {
    if inner.mime.permits(mime) {
        Ok(mime)
    } else {
        Err(McsError::mime_forbidden(mime))
    }
}

/// Audits the outcome and builds the response: a scan verdict, or the content when clean.
async fn respond(
    audit: &Audit<'_>,
    outcome: Outcome,
    download: bool,
) -> Result<Response, McsError> {
    let fetched = match outcome {
        Ok(fetched) => fetched,
        Err(err) => {
            let verdict = match err.reason {
                "MCS_SCANNER_UNAVAILABLE" => Some("scanner_unavailable"),
                "MCS_MIME_TYPE_FORBIDDEN" => Some("blocked_mime"),
                "M_TOO_LARGE" => Some("too_large"),
                _ => None,
            };
            if let Some(verdict) = verdict {
                audit
                    .record(Decision::bare(verdict, 0, None))
                    .await
                    .map_err(McsError::unavailable)?;
            }
            return Err(err);
        }
    };
    let (label, signature) = match &fetched.verdict {
        ScanVerdict::Clean => ("clean", None),
        ScanVerdict::Infected { signature } => ("infected", Some(signature.as_str())),
    };
    audit
        .record(Decision {
            verdict: label,
            size: fetched.size,
            sha256: Some(&fetched.sha256),
            mime: fetched.mime,
            signature,
            db_version: fetched.db_version,
            cached: fetched.cached,
            quarantined: fetched.quarantined,
        })
        .await
        .map_err(McsError::unavailable)?;
    let clean = signature.is_none();
    if !download {
        let info = if clean { INFO_CLEAN } else { INFO_VIRUS };
        return Ok(Json(json!({"clean": clean, "info": info})).into_response());
    }
    if !clean {
        return Err(McsError::not_clean(INFO_VIRUS));
    }
    let body = fetched.body().map_err(McsError::internal)?;
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        fetched
            .content_type
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(cd) = &fetched.content_disposition {
        headers.insert(header::CONTENT_DISPOSITION, cd.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(fetched.size));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extra: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = json!({"file": {
            "v": "v2", "url": "mxc://example.org/abc",
            "iv": "AAAAAAAAAAAAAAAAAAAAAA",
            "hashes": {"sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"},
            "key": {"alg": "A256CTR", "kty": "oct", "ext": true,
                    "key_ops": ["encrypt", "decrypt"],
                    "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA"},
            "mimetype": "image/png"
        }});
        extra(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[track_caller]
    fn check_err(raw: &[u8], reason: &str) {
        assert_eq!(parse_body(raw).map(|_| ()).unwrap_err().reason(), reason);
    }

    #[test]
    fn schema() {
        let RequestBody::File(meta) = parse_body(&file(|_| {})).unwrap() else {
            panic!()
        };
        assert_eq!(meta.media_path, "example.org/abc");
        let params = crypto_params(&meta).unwrap();
        assert_eq!(params.iv, [0; 16]);
        assert_eq!(params.sha256, <[u8; 32]>::from(Sha256::digest(b"")));

        check_err(b"{", "MCS_MALFORMED_JSON");
        check_err(b"[]", "MCS_MALFORMED_JSON");
        check_err(
            &file(|v| v["file"]["v"] = json!("v1")),
            "MCS_MALFORMED_JSON",
        );
        check_err(
            &file(|v| v["file"]["key"]["alg"] = json!("A128CTR")),
            "MCS_MALFORMED_JSON",
        );
        check_err(
            &file(|v| v["file"]["key"]["ext"] = json!(false)),
            "MCS_MALFORMED_JSON",
        );
        check_err(
            &file(|v| v["file"]["key"]["key_ops"] = json!(["decrypt"])),
            "MCS_MALFORMED_JSON",
        );
        check_err(
            &file(|v| v["file"]["hashes"] = json!({})),
            "MCS_MALFORMED_JSON",
        );
        check_err(
            &file(|v| v["file"]["url"] = json!("https://x/y")),
            "MCS_MALFORMED_JSON",
        );
        check_err(
            br#"{"encrypted_body": {"ciphertext": "a", "mac": "b"}}"#,
            "MCS_MALFORMED_JSON",
        );
        assert!(matches!(
            parse_body(br#"{"encrypted_body": {"ciphertext": "a", "mac": "b", "ephemeral": "c"}}"#),
            Ok(RequestBody::Encrypted { .. })
        ));

        let mut short = meta.clone();
        short.k = "AAAA".into();
        assert_eq!(
            crypto_params(&short).unwrap_err().reason(),
            "MCS_MEDIA_FAILED_TO_DECRYPT"
        );
    }

    #[test]
    fn media_paths() {
        assert_eq!(
            parse_media_path("example.org:8448/AbC_d-1").unwrap(),
            ("example.org:8448", "AbC_d-1")
        );
        for bad in [
            "example.org",
            "example.org/a/b",
            "/abc",
            "example.org/",
            "../etc/passwd",
            "example.org/..",
            "a..b/abc",
            "ex ample/abc",
            "example.org/a%2Fb",
        ] {
            assert_eq!(
                parse_media_path(bad).unwrap_err().reason(),
                "MCS_MEDIA_NOT_CLEAN",
                "{bad}"
            );
        }
    }

    #[test]
    fn thumbnail_params_are_filtered_and_ordered() {
        assert_eq!(
            thumbnail_query(Some(
                "method=scale&width=32&x=1&height=32&width=64&animated=true"
            )),
            vec![
                ("animated".into(), "true".into()),
                ("height".into(), "32".into()),
                ("method".into(), "scale".into()),
                ("width".into(), "32".into()),
            ]
        );
        assert!(thumbnail_query(Some("width=1%26x")).is_empty());
    }

    #[test]
    fn secret_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let a = load_or_create_secret(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(&path).unwrap(), a);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_secret(&path).is_err());
    }
}
