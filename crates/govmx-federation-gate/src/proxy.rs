//! The outbound CONNECT proxy (Synapse's `https_proxy`).
//!
//! Synapse 1.163's `HTTPConnectProxyEndpoint` (`synapse/http/connectproxyclient.py`) opens a TCP
//! connection and sends `CONNECT <host>:<port> HTTP/1.0`, no `Host` header, optionally
//! `Proxy-Authorization`, then waits for a `200` status line before starting TLS. The target is
//! what server discovery produced (the delegated host or SRV target and port, or the server
//! name's host on 443 for the `.well-known` lookup), not necessarily the server name; see
//! [`crate::policy::PolicyList::connect_target`]. Synapse does not apply its IP blocklist to
//! proxied connections, so this proxy is where outbound federation is restricted.
//!
//! The proxy reads the request head itself (at most 8 KiB, within the header timeout), allows the
//! target only when it belongs to a listed server that our server may federate with, and then
//! copies bytes both ways (no TLS interception). Everything else gets a status line and a closed
//! connection: 400 (malformed), 405 (not CONNECT), 403 (not allowed, audited), 503 (list
//! unavailable), 502/504 (target unreachable).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::audit::{AuditEntry, rfc3339};
use crate::gate::Shared;
use crate::policy::split_host_port;

const MAX_HEAD: usize = 8 * 1024;

/// A parsed CONNECT request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Target host (lower case; IPv6 literals in brackets).
    pub host: String,
    /// Target port.
    pub port: u16,
    /// The authority exactly as sent.
    pub authority: String,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectParseError {
    /// Not a CONNECT request.
    #[error("method {0} is not allowed; this proxy only tunnels CONNECT")]
    Method(String),
    /// Malformed request line or target.
    #[error("malformed CONNECT request: {0}")]
    Malformed(&'static str),
}

/// Parses the request head (everything up to and including the blank line).
pub fn parse_connect(head: &[u8]) -> Result<ConnectRequest, ConnectParseError> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ConnectParseError::Malformed("no request line"))?;
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| ConnectParseError::Malformed("request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ConnectParseError::Malformed(
            "request line must be `CONNECT host:port HTTP/1.x`",
        ));
    };
    if method != "CONNECT" {
        return Err(ConnectParseError::Method(method.chars().take(16).collect()));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ConnectParseError::Malformed("unsupported HTTP version"));
    }
    // Synapse writes IPv6 literals without brackets (`%s:%d`): accept both forms.
    let (host, port) = match target.rsplit_once(':') {
        Some((host, port)) if host.contains(':') && !host.starts_with('[') => {
            (format!("[{host}]"), port.parse::<u16>().ok())
        }
        _ => split_host_port(target),
    };
    let Some(port) = port.filter(|p| *p != 0) else {
        return Err(ConnectParseError::Malformed("target needs a port"));
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !host_ok {
        return Err(ConnectParseError::Malformed("invalid target host"));
    }
    Ok(ConnectRequest {
        host: host.to_ascii_lowercase(),
        port,
        authority: target.to_owned(),
    })
}

/// Serves one proxy connection.
pub async fn serve_connection(shared: Arc<Shared>, mut client: TcpStream, peer: SocketAddr) {
    let head_timeout = shared.config.inbound.header_read_timeout;
    let (head, leftover) = match tokio::time::timeout(head_timeout, read_head(&mut client)).await {
        Ok(Ok(read)) => read,
        Ok(Err(reason)) => {
            respond(&mut client, "400 Bad Request", reason).await;
            return;
        }
        Err(_) => {
            respond(
                &mut client,
                "408 Request Timeout",
                "request head not received in time",
            )
            .await;
            return;
        }
    };
    let request = match parse_connect(&head) {
        Ok(request) => request,
        Err(error @ ConnectParseError::Method(_)) => {
            respond(&mut client, "405 Method Not Allowed", &error.to_string()).await;
            return;
        }
        Err(error) => {
            respond(&mut client, "400 Bad Request", &error.to_string()).await;
            return;
        }
    };

    let now = SystemTime::now();
    let status = shared.list_status(now);
    let enforced = !shared.config.shadow;
    let list = status.any().cloned();
    let deny = |rule: &str, reason: &str, class: &'static str| {
        shared
            .metrics
            .decision("connect", false, rule, class, enforced);
        shared.audit.record(&AuditEntry {
            time: rfc3339(now),
            surface: "connect",
            peer: &peer.to_string(),
            origin: Some(&shared.config.server_name),
            destination: Some(&request.authority),
            method: "CONNECT",
            path: &request.authority,
            rule,
            reason,
            list_version: list.as_ref().map(|c| c.list.version()),
            enforced,
        });
        tracing::info!(%peer, target = %request.authority, rule, reason, enforced, "outbound CONNECT denied");
    };
    match status.fresh() {
        None => {
            let reason = status.unavailable_reason().unwrap_or_default().to_owned();
            deny("gate.list.unavailable", &reason, "unknown");
            if enforced {
                respond(
                    &mut client,
                    "503 Service Unavailable",
                    &format!("federation is suspended: {reason}"),
                )
                .await;
                return;
            }
        }
        Some(current) => match current.list.connect_target(&request.host, request.port) {
            None => {
                let reason = format!(
                    "{} is not a listed server name or delegated host (list version {})",
                    request.authority,
                    current.list.version()
                );
                deny("gate.connect.unlisted_target", &reason, "unlisted");
                if enforced {
                    respond(&mut client, "403 Forbidden", &reason).await;
                    return;
                }
            }
            Some(server) => {
                let decision = current.list.outbound_decision(server.server_name, now);
                if decision.allowed() {
                    shared
                        .metrics
                        .decision("connect", true, &decision.rule, server.class, true);
                } else {
                    deny(&decision.rule, &decision.reason, server.class);
                    if enforced {
                        respond(&mut client, "403 Forbidden", &decision.reason).await;
                        return;
                    }
                }
            }
        },
    }

    let connect_timeout = shared
        .config
        .outbound
        .as_ref()
        .map_or(Duration::from_secs(10), |o| o.connect_timeout);
    let host = request.host.trim_start_matches('[').trim_end_matches(']');
    let mut upstream =
        match tokio::time::timeout(connect_timeout, TcpStream::connect((host, request.port))).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::warn!(target = %request.authority, %error, "CONNECT target unreachable");
                respond(&mut client, "502 Bad Gateway", "target unreachable").await;
                return;
            }
            Err(_) => {
                respond(
                    &mut client,
                    "504 Gateway Timeout",
                    "target did not accept in time",
                )
                .await;
                return;
            }
        };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !leftover.is_empty() && upstream.write_all(&leftover).await.is_err() {
        return;
    }
    shared.metrics.tunnels_active.inc();
    let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    shared.metrics.tunnels_active.dec();
    if let Err(error) = result {
        tracing::debug!(target = %request.authority, %error, "tunnel closed with an error");
    }
}

/// Reads until the blank line; returns the head and any bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| "read error")?;
        if n == 0 {
            return Err("connection closed before the request head ended");
        }
        let search_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[search_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = search_from + pos + 4;
            let leftover = buf.split_off(end);
            return Ok((buf, leftover));
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large");
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, reason: &str) {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(head: &str, expected: Result<(&str, u16), &str>) {
        let actual = parse_connect(head.as_bytes())
            .map(|r| (r.host, r.port))
            .map_err(|e| e.to_string());
        let expected = expected
            .map(|(h, p)| (h.to_owned(), p))
            .map_err(str::to_owned);
        assert_eq!(actual, expected, "{head:?}");
    }

    #[test]
    fn connect_heads() {
        check(
            "CONNECT 127.0.0.3:8448 HTTP/1.0\r\n\r\n",
            Ok(("127.0.0.3", 8448)),
        );
        check(
            "CONNECT Matrix.Example:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            Ok(("matrix.example", 443)),
        );
        check("CONNECT [::1]:8448 HTTP/1.1\r\n\r\n", Ok(("[::1]", 8448)));
        check("CONNECT ::1:8448 HTTP/1.0\r\n\r\n", Ok(("[::1]", 8448)));
        check(
            "GET http://x/ HTTP/1.1\r\n\r\n",
            Err("method GET is not allowed; this proxy only tunnels CONNECT"),
        );
        check(
            "CONNECT x.example HTTP/1.1\r\n\r\n",
            Err("malformed CONNECT request: target needs a port"),
        );
        check(
            "CONNECT x.example:0 HTTP/1.1\r\n\r\n",
            Err("malformed CONNECT request: target needs a port"),
        );
        check(
            "CONNECT x.example:99999 HTTP/1.1\r\n\r\n",
            Err("malformed CONNECT request: target needs a port"),
        );
        check(
            "CONNECT a/b:1 HTTP/1.1\r\n\r\n",
            Err("malformed CONNECT request: invalid target host"),
        );
        check(
            "CONNECT x:1 HTTP/2\r\n\r\n",
            Err("malformed CONNECT request: unsupported HTTP version"),
        );
        check(
            "CONNECT  x:1 HTTP/1.1\r\n\r\n",
            Err("malformed CONNECT request: request line must be `CONNECT host:port HTTP/1.x`"),
        );
        check(
            "CONNECT x:1 HTTP/1.1",
            Err("malformed CONNECT request: no request line"),
        );
    }
}
