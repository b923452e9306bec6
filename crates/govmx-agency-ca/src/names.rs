//! Names that end up in certificates: TLS hosts ([`SanHost`]), Matrix user IDs as `matrix:u/…`
//! URIs (MSC2312 / RFC-style `matrix:` scheme) and the check of both against the agencies of
//! `policies/agencies.yaml` ([`AgencyDirectory`]).

use std::{fmt, net::IpAddr, str::FromStr};

use govmx_policy::{Agencies, Agency, ServerPattern};
use ruma_common::UserId;

/// A TLS host name: a DNS name (lower case) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SanHost {
    /// A DNS name, lower case, no trailing dot, no wildcard.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl SanHost {
    /// Parses an IP literal (IPv6 with or without brackets) or a DNS name (checked: LDH labels,
    /// at most 253 bytes, no wildcards).
    pub fn parse(text: &str) -> Result<SanHost, String> {
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(SanHost::Ip(ip));
        }
        let name = text.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
            && !name
                .split('.')
                .all(|label| label.bytes().all(|b| b.is_ascii_digit()));
        if valid {
            Ok(SanHost::Dns(name))
        } else {
            Err(format!("{text:?} is neither an IP address nor a DNS name"))
        }
    }
}

impl fmt::Display for SanHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanHost::Dns(name) => f.write_str(name),
            SanHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl FromStr for SanHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SanHost::parse(s)
    }
}

/// The `matrix:u/<localpart>:<server>` URI of a Matrix user ID (`@localpart:server`); characters
/// outside RFC 3986 `pchar` are percent-encoded.
pub fn matrix_uri(user_id: &UserId) -> String {
    let mut out = String::from("matrix:u/");
    encode_pchar(user_id.localpart(), &mut out);
    out.push(':');
    encode_pchar(user_id.server_name().as_str(), &mut out);
    out
}

/// The user ID (`@localpart:server`) of a `matrix:u/…` URI, or `None` when `uri` is not one.
pub fn user_id_from_matrix_uri(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("matrix:u/")?;
    if rest.contains(['/', '?', '#']) {
        return None;
    }
    let decoded = percent_decode(rest)?;
    let user_id = format!("@{decoded}");
    UserId::parse(user_id.as_str()).ok()?;
    Some(user_id)
}

fn encode_pchar(text: &str, out: &mut String) {
    for b in text.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The agencies document, queried by the issuance policy.
#[derive(Clone, Debug)]
pub struct AgencyDirectory {
    agencies: Agencies,
}

impl AgencyDirectory {
    /// Wraps a parsed (and validated) Agencies document.
    pub fn new(agencies: Agencies) -> Self {
        Self { agencies }
    }

    /// Parses `agencies.yaml` with govmx-policy's strict parser (`file` names it in errors).
    pub fn parse(
        file: &str,
        bytes: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<AgencyDirectory, String> {
        match govmx_policy::parse_document(file, bytes, Some(now)) {
            Ok(parsed) => match parsed.document {
                govmx_policy::Document::Agencies(agencies) => Ok(AgencyDirectory::new(agencies)),
                other => Err(format!(
                    "{file}: expected an Agencies document, found {:?}",
                    other.kind()
                )),
            },
            Err(errors) => Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// The agency with this id.
    pub fn get(&self, id: &str) -> Option<&Agency> {
        self.agencies.agencies.iter().find(|a| a.id == id)
    }

    /// All agencies.
    pub fn agencies(&self) -> &[Agency] {
        &self.agencies.agencies
    }
}

/// Whether `host` is a host of one of the agency's server names: the host part of an exact server
/// name, or a DNS name strictly below a `*.suffix` pattern.
pub fn agency_owns_host(agency: &Agency, host: &SanHost) -> bool {
    agency.server_names.iter().any(|pattern| match pattern {
        ServerPattern::Exact(name) => {
            SanHost::parse(name.host()).is_ok_and(|allowed| &allowed == host)
        }
        ServerPattern::Wildcard(suffix) => match host {
            SanHost::Dns(name) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            SanHost::Ip(_) => false,
        },
    })
}

/// Whether `user_id` matches one of the agency's official account patterns.
pub fn agency_owns_account(agency: &Agency, user_id: &UserId) -> bool {
    agency
        .official_accounts
        .iter()
        .any(|pattern| pattern.matches(user_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            SanHost::parse("127.0.0.2"),
            Ok(SanHost::Ip("127.0.0.2".parse().unwrap()))
        );
        assert_eq!(
            SanHost::parse("[::1]"),
            Ok(SanHost::Ip("::1".parse().unwrap()))
        );
        assert_eq!(
            SanHost::parse("Matrix.Example.DE"),
            Ok(SanHost::Dns("matrix.example.de".into()))
        );
        for bad in [
            "",
            "*.example.de",
            "a..b",
            "-a.de",
            "1.2.3",
            "a_b.de",
            "x:8448",
        ] {
            assert!(SanHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matrix_uris() {
        let user = UserId::parse("@amt-1:127.0.0.2:8448").unwrap();
        assert_eq!(matrix_uri(&user), "matrix:u/amt-1:127.0.0.2:8448");
        assert_eq!(
            user_id_from_matrix_uri("matrix:u/amt-1:127.0.0.2:8448").as_deref(),
            Some("@amt-1:127.0.0.2:8448")
        );
        let odd = UserId::parse("@a/b:[::1]:8448").unwrap();
        let uri = matrix_uri(&odd);
        assert_eq!(uri, "matrix:u/a%2Fb:%5B::1%5D:8448");
        assert_eq!(
            user_id_from_matrix_uri(&uri).as_deref(),
            Some("@a/b:[::1]:8448")
        );
        for bad in [
            "matrix:r/room:x.de",
            "https://x.de",
            "matrix:u/a/b:x.de",
            "matrix:u/%zz:x.de",
            "matrix:u/nocolon",
        ] {
            assert_eq!(user_id_from_matrix_uri(bad), None, "{bad}");
        }
    }
}
