//! Helpers for services that forward HTTP requests (the federation gate, the media scanner).

use axum::http::{HeaderMap, HeaderName, header};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy `keep-alive` and `proxy-connection`:
/// they describe one connection and are never forwarded. (`HeaderName::as_str` is lowercase.)
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The header names a `Connection` header lists, as sent (compare case-insensitively).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// Removes the hop-by-hop headers and every header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names present, comparing text: most requests carry none of
    // them, most answers only `Connection: keep-alive`. No header name is built or hashed
    // unless one is removed.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let tokens: Vec<&str> = connection_tokens(headers).collect();
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name)
                || tokens
                    .iter()
                    .any(|token| token.eq_ignore_ascii_case(name.as_str()))
        })
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_match_names_in_any_case() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive , X-Secret,,"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-secret-not", "2"),
            ("te", "trailers"),
        ] {
            headers.append(name, value.parse().expect("valid header value"));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-secret-not"]);
        // Nothing hop-by-hop: the map is left as it is.
        let mut plain = HeaderMap::new();
        plain.insert("x-secret", "1".parse().expect("valid header value"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("authorization", "Bearer t"),
            ("content-type", "image/png"),
        ] {
            headers.insert(name, value.parse().expect("valid header value"));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }
}
