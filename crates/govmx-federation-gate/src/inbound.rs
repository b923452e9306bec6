//! The inbound edge: one function, [`handle`], from a federation request to its response.
//!
//! Order of checks (each failure answers at once and never reaches Synapse, except in shadow
//! mode where denials are only logged and counted):
//! 1. the path must be a federation surface ([`classify`]), else 404 `M_UNRECOGNIZED`;
//! 2. the federation list must be fresh, else 503 `GOVMX_FEDERATION_LIST_UNAVAILABLE`;
//! 3. a declared `Content-Length` above `max_body_bytes` is answered 413 `M_TOO_LARGE` at once
//!    (after draining at most 1 MiB, so the client reads the answer);
//! 4. authenticated surfaces: exactly one well-formed X-Matrix header (401/400
//!    `M_UNAUTHORIZED`), `destination` absent or ours (401), `origin` allowed by the list (403
//!    `M_FORBIDDEN` naming the rule);
//! 5. the body: at most `max_body_bytes` (413 `M_TOO_LARGE`, also mid-stream); buffered only
//!    when it must be read (strict mode, transactions), streamed otherwise;
//! 6. strict mode: the request signature verifies with a key pinned for the origin (401);
//! 7. `PUT /send/{txnId}`: JSON (400 `M_NOT_JSON`), relayed PDUs/EDUs from unlisted servers
//!    removed ([`crate::txn`]) and reported in the merged answer (or, with `relayed_events:
//!    report`, forwarded and reported as per-PDU errors under the event ids Synapse returns).
//!
//! Forwarded requests keep method, path and query byte for byte, and all headers except
//! hop-by-hop ones; `Host` is preserved, `X-Forwarded-For` is *replaced* by the TCP peer (Synapse
//! reads the left-most entry, so appending would let a peer choose its own address) and
//! `X-Forwarded-Proto` is `https`. Response bodies stream back unless an answer must be merged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use govmx_service::MatrixError;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::audit::{AuditEntry, rfc3339};
use crate::config::RelayedEvents;
use crate::gate::Shared;
use crate::list::CurrentList;
use crate::upstream::Upstream;
use crate::xmatrix::{self, XMatrixError};
use crate::{signature, txn};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Errcode of the fail-closed answer.
pub const LIST_UNAVAILABLE: &str = "GOVMX_FEDERATION_LIST_UNAVAILABLE";

/// What kind of endpoint a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Federation endpoints the spec allows without X-Matrix.
    Unauthenticated,
    /// Everything else under `/_matrix/federation/` and `/_matrix/key/`.
    Authenticated {
        /// `PUT /_matrix/federation/v1/send/{txnId}`.
        send: bool,
    },
    /// Not a federation surface: 404, not forwarded.
    Unknown,
}

/// Classifies a request path (raw, as received).
pub fn classify(method: &Method, path: &str) -> Surface {
    // Dot segments (also percent-encoded) could make Synapse and the gate see different paths.
    let dot_segment = path.split('/').any(is_dot_segment);
    if dot_segment || path.contains("//") {
        return Surface::Unknown;
    }
    match path {
        "/.well-known/matrix/server"
        | "/_matrix/key/v2/server"
        | "/_matrix/federation/v1/version"
        | "/_matrix/federation/v1/openid/userinfo" => {
            return Surface::Unauthenticated;
        }
        _ => {}
    }
    // The deprecated per-key form `/_matrix/key/v2/server/{keyId}`.
    if path.starts_with("/_matrix/key/v2/server/") {
        return Surface::Unauthenticated;
    }
    if path.starts_with("/_matrix/federation/") || path.starts_with("/_matrix/key/") {
        let send = method == Method::PUT && path.starts_with("/_matrix/federation/v1/send/");
        return Surface::Authenticated { send };
    }
    Surface::Unknown
}

/// `.` or `..`, each dot also as `%2e`/`%2E` (RFC 3986 §6.2.2.2 normalises those to dots).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// A denial on its way out: metrics, audit, and (unless shadow) the error response.
struct Denial<'a> {
    status: StatusCode,
    errcode: &'static str,
    rule: &'a str,
    reason: String,
    origin: Option<&'a str>,
    destination: Option<&'a str>,
}

struct Ctx<'a> {
    shared: &'a Shared,
    peer: &'a Peer,
    method: &'a Method,
    path: &'a str,
    list: Option<&'a CurrentList>,
}

impl Ctx<'_> {
    /// Records a denial; returns the response to send, or `None` in shadow mode.
    fn deny(&self, denial: Denial<'_>) -> Option<Response> {
        self.record(denial, !self.shared.config.shadow)
    }

    /// Records a denial that is `enforced` or only reported; returns the error response for
    /// enforced ones.
    fn record(&self, denial: Denial<'_>, enforced: bool) -> Option<Response> {
        let class = match (self.list, denial.origin) {
            (Some(current), Some(origin)) => current.list.class_of(origin),
            _ => "unknown",
        };
        self.shared
            .metrics
            .decision("inbound", false, denial.rule, class, enforced);
        self.shared.audit.record(&AuditEntry {
            time: rfc3339(SystemTime::now()),
            surface: "inbound",
            peer: &self.peer.addr_text,
            origin: denial.origin,
            destination: denial.destination,
            method: self.method.as_str(),
            path: self.path,
            rule: denial.rule,
            reason: &denial.reason,
            list_version: self.list.map(|c| c.list.version()),
            enforced,
        });
        // Under attack denials arrive at line rate: the audit log and the metric see each one,
        // the log a bounded number per second (and how many it left out).
        if let Some(not_logged) = self.shared.denial_log.admit(self.shared.uptime_secs()) {
            tracing::info!(
                peer = %self.peer.addr, origin = denial.origin.unwrap_or("-"), path = self.path,
                rule = denial.rule, reason = %denial.reason, enforced, not_logged,
                "federation request denied"
            );
        }
        enforced.then(|| {
            MatrixError::new(
                denial.status,
                denial.errcode,
                format!("{} (rule {})", denial.reason, denial.rule),
            )
            .into_response()
        })
    }
}

/// The inbound connection a request came on.
#[derive(Debug)]
pub struct Peer {
    addr: SocketAddr,
    /// `addr` as text, for audit entries (formatted once per connection, not per denial).
    addr_text: String,
    /// `X-Forwarded-For` for its requests (the TCP peer's IP), built once per connection.
    forwarded_for: Option<HeaderValue>,
    upstream: Upstream,
}

impl Peer {
    /// The connection from `addr`, forwarding through `upstream`.
    pub fn new(addr: SocketAddr, upstream: Upstream) -> Peer {
        Peer {
            addr,
            addr_text: addr.to_string(),
            forwarded_for: HeaderValue::from_str(&addr.ip().to_string()).ok(),
            upstream,
        }
    }
}

/// Handles one inbound request from `peer`.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, peer: &Peer) -> Response {
    let started = Instant::now();
    // With traces on: one server span per request, continuing an incoming `traceparent`.
    let span = govmx_service::telemetry::request_span(
        shared.config.tracing.is_some(),
        req.method(),
        req.uri().path(),
        req.headers(),
    );
    let response = handle_inner(&shared, req, peer)
        .instrument(span.clone())
        .await;
    govmx_service::telemetry::record_status(&span, response.status());
    shared
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn handle_inner(shared: &Shared, req: Request<Incoming>, peer: &Peer) -> Response {
    let now = SystemTime::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let surface = classify(&method, &path);
    let status = shared.list_status(now);
    // Borrowed from `status` (one reference count for the request, not three).
    let list = status.any();
    let ctx = Ctx {
        shared,
        peer,
        method: &method,
        path: &path,
        list: list.map(Arc::as_ref),
    };

    if surface == Surface::Unknown {
        // Unknown paths are never forwarded, not even in shadow mode.
        let _ = ctx.deny(Denial {
            status: StatusCode::NOT_FOUND,
            errcode: "M_UNRECOGNIZED",
            rule: "gate.path.unrecognized",
            reason: "not a federation endpoint".into(),
            origin: None,
            destination: None,
        });
        return MatrixError::unrecognized().into_response();
    }
    if let Some(reason) = status.unavailable_reason()
        && !shared.config.shadow
    {
        shared
            .metrics
            .decision("inbound", false, "gate.list.unavailable", "unknown", true);
        return unavailable(reason);
    }
    let fresh = status.fresh();

    let max = shared.config.inbound.max_body_bytes;
    if content_length(req.headers()).is_some_and(|len| len > max) {
        // Read (a bounded part of) the body first, so the client sees the answer instead of a
        // reset connection while it is still writing.
        drain(req.into_body()).await;
        return too_large(max);
    }

    let Surface::Authenticated { send } = surface else {
        return forward(shared, req, peer, None).await;
    };

    // 3. X-Matrix.
    let header = match xmatrix::from_headers(req.headers()) {
        Ok(header) => Some(header),
        Err(error) => {
            let status = match error {
                XMatrixError::Missing | XMatrixError::WrongScheme => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            let denial = Denial {
                status,
                errcode: "M_UNAUTHORIZED",
                rule: error.rule(),
                reason: error.to_string(),
                origin: None,
                destination: None,
            };
            if let Some(response) = ctx.deny(denial) {
                return response;
            }
            None
        }
    };
    let our_name = shared.config.server_name.as_str();
    if let Some(header) = &header {
        let origin = header.origin.as_str();
        if let Some(destination) = header.destination.as_deref().filter(|d| *d != our_name) {
            let denial = Denial {
                status: StatusCode::UNAUTHORIZED,
                errcode: "M_UNAUTHORIZED",
                rule: "gate.auth.destination",
                reason: format!("request is addressed to {destination}, this server is {our_name}"),
                origin: Some(origin),
                destination: Some(destination),
            };
            if let Some(response) = ctx.deny(denial) {
                return response;
            }
        }
        match &fresh {
            Some(current) => {
                let decision = current.list.inbound_decision(origin, now);
                if decision.allowed() {
                    let class = current.list.class_of(origin);
                    shared
                        .metrics
                        .decision("inbound", true, &decision.rule, class, true);
                } else if let Some(response) = {
                    if current.list.server(origin).is_none() {
                        shared.refetch_on_miss();
                    }
                    ctx.deny(Denial {
                        status: StatusCode::FORBIDDEN,
                        errcode: "M_FORBIDDEN",
                        rule: &decision.rule,
                        reason: decision.reason.clone(),
                        origin: Some(origin),
                        destination: header.destination.as_deref(),
                    })
                } {
                    return response;
                }
            }
            // Only reachable in shadow mode: no usable list, nothing to decide with.
            None => {
                let _ = ctx.deny(Denial {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    errcode: LIST_UNAVAILABLE,
                    rule: "gate.list.unavailable",
                    reason: status.unavailable_reason().unwrap_or_default().to_owned(),
                    origin: Some(origin),
                    destination: header.destination.as_deref(),
                });
            }
        }
    }

    let strict = shared.config.inbound.strict;
    if !strict && !send {
        return forward(shared, req, peer, None).await;
    }

    // 4. Buffer the body (bounded).
    let (parts, body) = req.into_parts();
    let bytes = match read_body(shared, &parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };

    // 5. Strict mode: signature with a pinned key.
    if strict
        && let (Some(header), Some(current)) = (&header, &fresh)
        && let Some(denial) = check_signature(shared, header, &parts, &bytes, current, now).await
    {
        let denial = Denial {
            origin: Some(&header.origin),
            destination: header.destination.as_deref(),
            ..denial
        };
        if let Some(response) = ctx.deny(denial) {
            return response;
        }
    }

    // 6. Transactions: remove relayed events from unlisted servers.
    let mut flagged = None;
    let mut body_bytes = bytes;
    if send && let Some(current) = &fresh {
        let allowed = |server: &str| {
            let decision = current.list.inbound_decision(server, now);
            if decision.allowed() {
                Ok(())
            } else {
                Err(format!("{} (rule {})", decision.reason, decision.rule))
            }
        };
        let outcome = match txn::filter_transaction(&body_bytes, &allowed) {
            Ok(outcome) => outcome,
            Err(error) => {
                let errcode = match error {
                    txn::TxnError::NotJson(_) => "M_NOT_JSON",
                    txn::TxnError::NotTransaction => "M_BAD_JSON",
                };
                return MatrixError::new(StatusCode::BAD_REQUEST, errcode, error.to_string())
                    .into_response();
            }
        };
        if outcome.changed() {
            let rewrite = !shared.config.shadow
                && shared.config.inbound.relayed_events == RelayedEvents::Remove;
            let origin = header.as_ref().map(|h| h.origin.as_str());
            for pdu in &outcome.removed_pdus {
                let _ = ctx.record(
                    Denial {
                        status: StatusCode::FORBIDDEN,
                        errcode: "M_FORBIDDEN",
                        rule: "gate.txn.unlisted_author",
                        reason: format!(
                            "PDU {} in room {} has an unlisted author: {}",
                            pdu.key,
                            pdu.room_id.as_deref().unwrap_or("?"),
                            pdu.reason
                        ),
                        origin,
                        destination: None,
                    },
                    rewrite,
                );
            }
            for (kind, reason) in &outcome.removed_edus {
                let _ = ctx.record(
                    Denial {
                        status: StatusCode::FORBIDDEN,
                        errcode: "M_FORBIDDEN",
                        rule: "gate.txn.unlisted_edu",
                        reason: format!("{kind} EDU names an unlisted server: {reason}"),
                        origin,
                        destination: None,
                    },
                    rewrite,
                );
            }
            if rewrite {
                let metrics = &shared.metrics;
                metrics
                    .removed_pdus
                    .inc_by(outcome.removed_pdus.len() as u64);
                metrics
                    .removed_edus
                    .inc_by(outcome.removed_edus.len() as u64);
                body_bytes = Bytes::from(outcome.body);
                flagged = Some(txn::Flagged::Removed(outcome.removed_pdus));
            } else if !shared.config.shadow && !outcome.removed_pdus.is_empty() {
                // Forwarded whole; Synapse's answer gets the per-PDU errors.
                flagged = Some(txn::Flagged::Reported(outcome.removed_pdus));
            }
        }
    }

    let req = Request::from_parts(parts, Body::from(body_bytes));
    forward(shared, req, peer, Some(flagged.unwrap_or_default())).await
}

/// Reads the request body, at most `max_body_bytes`.
async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, Response> {
    let max = shared.config.inbound.max_body_bytes;
    if content_length(headers).is_some_and(|len| len > max) {
        return Err(too_large(max));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large(max)),
        Err(error) => Err(MatrixError::bad_request("request body could not be read")
            .with_internal(error)
            .into_response()),
    }
}

/// The fail-closed answer. Built directly rather than through `MatrixError`, which logs every
/// 5xx: the state change is logged once by [`Shared::list_status`], not once per request.
pub fn unavailable(reason: &str) -> Response {
    let body = serde_json::json!({
        "errcode": LIST_UNAVAILABLE,
        "error": format!("federation is suspended: {reason}"),
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

fn too_large(max: u64) -> Response {
    MatrixError::too_large(format!("request body is larger than {max} bytes")).into_response()
}

/// Reads and drops at most 1 MiB of a refused body, for at most one second.
async fn drain(body: Incoming) {
    let drained = Limited::new(body, 1024 * 1024).collect();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
}

/// Whether an error (or one of its sources) is a body size limit.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn check_signature<'a>(
    shared: &Shared,
    header: &xmatrix::XMatrix,
    parts: &http::request::Parts,
    bytes: &Bytes,
    current: &CurrentList,
    now: SystemTime,
) -> Option<Denial<'a>> {
    let unauthorized = |rule: &'a str, reason: String| Denial {
        status: StatusCode::UNAUTHORIZED,
        errcode: "M_UNAUTHORIZED",
        rule,
        reason,
        origin: None,
        destination: None,
    };
    let content = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => Some(value),
            Err(error) => {
                return Some(Denial {
                    status: StatusCode::BAD_REQUEST,
                    errcode: "M_NOT_JSON",
                    ..unauthorized(
                        "gate.strict.not_json",
                        format!("request body is not JSON: {error}"),
                    )
                });
            }
        }
    };
    let Some(entry) = current.list.server(&header.origin) else {
        return Some(unauthorized(
            "gate.strict.unlisted",
            format!("{} is not listed", header.origin),
        ));
    };
    let key = match entry.signing_keys.iter().find(|k| k.key_id == header.key) {
        Some(pinned) => pinned.key,
        // Pinned keys always win: a key id they do not name is refused.
        None if !entry.signing_keys.is_empty() => {
            return Some(unauthorized(
                "gate.strict.unknown_key",
                format!(
                    "key {} is not pinned for {} in list version {}",
                    header.key,
                    header.origin,
                    current.list.version()
                ),
            ));
        }
        None => {
            let Some(fetcher) = &shared.keys else {
                return Some(unauthorized(
                    "gate.strict.unknown_key",
                    format!(
                        "no signing keys are pinned for {} in list version {}; strict mode needs them",
                        header.origin,
                        current.list.version()
                    ),
                ));
            };
            let endpoint = key_endpoint(&header.origin, entry.delegated_hosts);
            match fetcher
                .key(&header.origin, &endpoint, &header.key, now)
                .await
            {
                Ok(key) => key,
                Err(error) => {
                    return Some(unauthorized(
                        "gate.strict.key_unavailable",
                        error.to_string(),
                    ));
                }
            }
        }
    };
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    match signature::verify(
        header,
        parts.method.as_str(),
        uri,
        &shared.config.server_name,
        content.as_ref(),
        &key,
    ) {
        Ok(()) => None,
        Err(error) => Some(unauthorized("gate.strict.bad_signature", error.to_string())),
    }
}

/// Where the keys of `server` are fetched: its first delegated host, else the server name with
/// the federation port 8448 when it names none.
fn key_endpoint(server: &str, delegated_hosts: &[String]) -> String {
    let authority = delegated_hosts.first().map_or(server, String::as_str);
    match crate::policy::split_host_port(authority) {
        (_, Some(_)) => authority.to_owned(),
        (host, None) if host.contains(':') => format!("[{host}]:8448"),
        (host, None) => format!("{host}:8448"),
    }
}

/// Sends the request to Synapse and relays the answer. `flagged` is `Some` for transactions
/// (whose answer gets per-PDU errors for the PDUs the gate removed or reported).
async fn forward<B>(
    shared: &Shared,
    req: Request<B>,
    peer: &Peer,
    flagged: Option<txn::Flagged>,
) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, body) = req.into_parts();
    let limit = usize::try_from(shared.config.inbound.max_body_bytes).unwrap_or(usize::MAX);
    // Method, path and query pass byte for byte, in origin form (the parsed path is reused, not
    // re-parsed; an absolute-form request target loses its scheme and authority).
    let uri = http::Uri::from(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    govmx_service::proxy::strip_hop_by_hop(&mut parts.headers);
    let headers = &mut parts.headers;
    // `insert` replaces every value the client sent under these names.
    match &peer.forwarded_for {
        Some(value) => headers.insert(X_FORWARDED_FOR, value.clone()),
        None => headers.remove(X_FORWARDED_FOR),
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.remove(X_FORWARDED_HOST);
    headers.remove(header::FORWARDED);
    // Synapse continues our span's trace (traces off: the client's headers pass unchanged).
    govmx_service::telemetry::inject_trace_context(&mut parts.headers);
    if flagged.is_some() {
        // The body was buffered (and maybe rewritten): the upstream exchange sets its length.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let body = Body::new(Limited::new(body, limit).map_err(axum::Error::new));
    let upstream_req = Request::from_parts(parts, body);

    let timeout = shared.config.inbound.upstream_timeout;
    let response = match tokio::time::timeout(timeout, peer.upstream.send(upstream_req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) if is_length_limit(&*error) => {
            return too_large(shared.config.inbound.max_body_bytes);
        }
        Ok(Err(error)) => {
            return MatrixError::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "homeserver unavailable",
            )
            .with_internal(error)
            .into_response();
        }
        Err(_) => {
            return MatrixError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "M_UNKNOWN",
                "homeserver did not answer in time",
            )
            .into_response();
        }
    };
    // No hop-by-hop header in `parts`: the upstream exchange drops them while it parses.
    let (mut parts, body) = response.into_parts();
    match flagged {
        Some(flagged) if !flagged.is_empty() => {
            // Bounded: transaction answers are small.
            let bytes = match Limited::new(body, 16 * 1024 * 1024).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return MatrixError::new(
                        StatusCode::BAD_GATEWAY,
                        "M_UNKNOWN",
                        "homeserver answer broke off",
                    )
                    .with_internal(error)
                    .into_response();
                }
            };
            let merged = if !parts.status.is_success() {
                None
            } else {
                match &flagged {
                    txn::Flagged::Removed(removed) => txn::merge_response(&bytes, removed),
                    txn::Flagged::Reported(reported) => {
                        txn::report_in_response(&bytes, reported).map(|(body, ids)| {
                            tracing::info!(
                                event_ids = ?ids,
                                "per-PDU errors added to the homeserver's answer for relayed events with unlisted authors"
                            );
                            body
                        })
                    }
                }
                .map(Bytes::from)
            };
            let body = merged.unwrap_or(bytes);
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(body))
        }
        _ => Response::from_parts(parts, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces() {
        let cases = [
            (
                Method::GET,
                "/_matrix/federation/v1/version",
                Surface::Unauthenticated,
            ),
            (
                Method::GET,
                "/_matrix/key/v2/server",
                Surface::Unauthenticated,
            ),
            (
                Method::GET,
                "/_matrix/key/v2/server/ed25519:a",
                Surface::Unauthenticated,
            ),
            (
                Method::GET,
                "/.well-known/matrix/server",
                Surface::Unauthenticated,
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/openid/userinfo",
                Surface::Unauthenticated,
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/openid/userinfoX",
                Surface::Authenticated { send: false },
            ),
            (
                Method::POST,
                "/_matrix/key/v2/query",
                Surface::Authenticated { send: false },
            ),
            (
                Method::PUT,
                "/_matrix/federation/v1/send/123",
                Surface::Authenticated { send: true },
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/send/123",
                Surface::Authenticated { send: false },
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/media/download/abc",
                Surface::Authenticated { send: false },
            ),
            (
                Method::PUT,
                "/_matrix/federation/v2/invite/!r/$e",
                Surface::Authenticated { send: false },
            ),
            (Method::GET, "/_matrix/client/versions", Surface::Unknown),
            (
                Method::GET,
                "/_matrix/media/v3/download/a/b",
                Surface::Unknown,
            ),
            (Method::GET, "/_synapse/admin/v1/users", Surface::Unknown),
            (Method::GET, "/", Surface::Unknown),
            (
                Method::GET,
                "/_matrix/federation/../client/versions",
                Surface::Unknown,
            ),
            (
                Method::GET,
                "/_matrix/federation/%2E%2e/client/versions",
                Surface::Unknown,
            ),
            (
                Method::GET,
                "/_matrix/federation//v1/version",
                Surface::Unknown,
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/%2e/version",
                Surface::Unknown,
            ),
            (
                Method::GET,
                "/_matrix/federation/.%2E/v1/version",
                Surface::Unknown,
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/state/!r%2e/...",
                Surface::Authenticated { send: false },
            ),
            (
                Method::GET,
                "/_matrix/federation/v1/event/%2e%2e%2e",
                Surface::Authenticated { send: false },
            ),
            (Method::GET, "/.well-known/matrix/client", Surface::Unknown),
        ];
        for (method, path, expected) in cases {
            assert_eq!(classify(&method, path), expected, "{method} {path}");
        }
    }
}
