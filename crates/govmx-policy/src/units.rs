//! Validated scalar types used in policy documents: timestamps, durations, sizes, Matrix
//! names and the pattern languages (server wildcards, official account patterns, MIME
//! patterns).
//!
//! Each type deserialises from a YAML string and rejects malformed input with an error whose
//! message carries the stable rule id (see [`tagged`]), so the document parser can report it at
//! the right position with the right rule.

use std::borrow::Cow;
use std::fmt;

use ruma_common::{OwnedServerName, OwnedUserId, ServerName, UserId};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::diag::rules;

/// Prefix that carries a rule id through a serde error message.
pub(crate) const RULE_TAG: &str = "govmx-rule:";

/// A serde error message carrying `rule` and the offending raw `value` (so the parser can find
/// the node); the document parser strips the tag again. Format:
/// `govmx-rule:<rule>:<value length>:<value><message>`.
pub(crate) fn tagged(rule: &str, value: &str, message: impl fmt::Display) -> String {
    format!("{RULE_TAG}{rule}:{}:{value}{message}", value.len())
}

macro_rules! string_schema {
    ($ty:ty, $name:literal, $description:literal $(, $key:literal : $value:expr)*) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": $description,
                    $($key: $value,)*
                })
            }
        }
    };
}

macro_rules! from_str_serde {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$ty>::parse(&text).map_err(D::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_string())
            }
        }
    };
}

// === impl Timestamp ===

/// An RFC 3339 timestamp such as `2026-11-20T00:00:00Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// Parses an RFC 3339 timestamp.
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        OffsetDateTime::parse(text, &Rfc3339)
            .map(Timestamp)
            .map_err(|_| {
                tagged(
                    rules::BAD_TIMESTAMP,
                    text,
                    format_args!("invalid RFC 3339 timestamp {text:?}"),
                )
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

from_str_serde!(Timestamp);
string_schema!(Timestamp, "Timestamp", "RFC 3339 timestamp", "format": "date-time");

// === impl DurationSpec ===

/// A duration written as `<number><unit>`, unit one of `s`, `m`, `h`, `d`, `w` (`30d`, `12h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationSpec {
    text: String,
    duration: Duration,
}

impl DurationSpec {
    /// Parses `30d`, `12h`, `90m`, `45s`, `2w`. Zero and durations above 100 years are refused.
    pub fn parse(text: &str) -> Result<DurationSpec, String> {
        let bad = |why: &str| {
            tagged(
                rules::BAD_DURATION,
                text,
                format_args!("invalid duration {text:?}: {why}"),
            )
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(bad(
                "expected a number followed by s, m, h, d or w (e.g. \"30d\")",
            ));
        }
        let seconds_per_unit: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            "" => return Err(bad("missing unit (s, m, h, d or w)")),
            _ => return Err(bad("unknown unit, expected s, m, h, d or w")),
        };
        let number: i64 = digits.parse().map_err(|_| bad("number too large"))?;
        let seconds = number
            .checked_mul(seconds_per_unit)
            .ok_or_else(|| bad("number too large"))?;
        if seconds == 0 {
            return Err(bad("must be greater than zero"));
        }
        if seconds > 100 * 366 * 86_400 {
            return Err(bad("longer than 100 years"));
        }
        Ok(DurationSpec {
            text: text.to_owned(),
            duration: Duration::seconds(seconds),
        })
    }

    /// The duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

from_str_serde!(DurationSpec);
string_schema!(DurationSpec, "Duration", "duration: a number and a unit s, m, h, d or w, e.g. \"30d\"", "pattern": "^[0-9]+[smhdw]$");

// === impl ByteSize ===

/// A size such as `50MiB`, `10MB`, `512KiB` or `1024` (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteSize {
    text: String,
    bytes: u64,
}

impl ByteSize {
    /// Parses a size; units B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (of 1024).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let bad = |why: &str| {
            tagged(
                rules::BAD_SIZE,
                text,
                format_args!("invalid size {text:?}: {why}"),
            )
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(bad(
                "expected a number followed by an optional unit (e.g. \"50MiB\")",
            ));
        }
        let multiplier: u64 = match unit {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => {
                return Err(bad(
                    "unknown unit, expected B, KB, MB, GB, TB, KiB, MiB, GiB or TiB",
                ));
            }
        };
        let number: u64 = digits.parse().map_err(|_| bad("number too large"))?;
        let bytes = number
            .checked_mul(multiplier)
            .ok_or_else(|| bad("number too large"))?;
        Ok(ByteSize {
            text: text.to_owned(),
            bytes,
        })
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

from_str_serde!(ByteSize);
string_schema!(ByteSize, "ByteSize", "size: a number and an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, e.g. \"50MiB\"", "pattern": "^[0-9]+(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$");

// === impl ServerNameSpec ===

/// A Matrix server name (`example.de`, `127.0.0.2:8448`, `[::1]:8448`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerNameSpec(pub OwnedServerName);

impl ServerNameSpec {
    /// Parses and validates a server name.
    pub fn parse(text: &str) -> Result<ServerNameSpec, String> {
        <&ServerName>::try_from(text)
            .map(|name| ServerNameSpec(name.to_owned()))
            .map_err(|error| {
                tagged(
                    rules::MALFORMED_SERVER_NAME,
                    text,
                    format_args!("malformed server name {text:?}: {error}"),
                )
            })
    }

    /// The server name.
    pub fn as_server_name(&self) -> &ServerName {
        &self.0
    }
}

impl fmt::Display for ServerNameSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

from_str_serde!(ServerNameSpec);
string_schema!(
    ServerNameSpec,
    "ServerName",
    "Matrix server name: host name or IP literal with optional port"
);

// === impl UserIdSpec ===

/// A Matrix user ID (`@anna:127.0.0.3:8448`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserIdSpec(pub OwnedUserId);

impl UserIdSpec {
    /// Parses and validates a user ID.
    pub fn parse(text: &str) -> Result<UserIdSpec, String> {
        UserId::parse(text).map(UserIdSpec).map_err(|error| {
            tagged(
                rules::MALFORMED_USER_ID,
                text,
                format_args!("malformed user id {text:?}: {error}"),
            )
        })
    }
}

impl fmt::Display for UserIdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

from_str_serde!(UserIdSpec);
string_schema!(
    UserIdSpec,
    "UserId",
    "Matrix user ID, e.g. @anna:127.0.0.3:8448"
);

// === impl ServerPattern ===

/// An agency server name: an exact server name, or `*.example.de` (one or more leading labels,
/// any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPattern {
    /// Exactly this server name.
    Exact(OwnedServerName),
    /// Any host ending in `.` + this suffix (stored without the leading `*.`).
    Wildcard(String),
}

impl ServerPattern {
    /// Parses a server name pattern; a `*` is only allowed as the whole first label.
    pub fn parse(text: &str) -> Result<ServerPattern, String> {
        if let Some(suffix) = text.strip_prefix("*.") {
            let valid_host = !suffix.contains('*')
                && !suffix.contains(':')
                && suffix.contains('.')
                && suffix.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
                && !suffix
                    .split('.')
                    .all(|label| label.bytes().all(|b| b.is_ascii_digit()));
            if !valid_host {
                if suffix.contains('*') {
                    return Err(tagged(
                        rules::UNANCHORED_WILDCARD,
                        text,
                        format_args!(
                            "wildcard {text:?}: `*` is only allowed as the whole first label, as in \"*.example.de\""
                        ),
                    ));
                }
                return Err(tagged(
                    rules::MALFORMED_SERVER_NAME,
                    text,
                    format_args!(
                        "wildcard {text:?}: expected \"*.\" followed by a DNS name with at least two labels and no port"
                    ),
                ));
            }
            return Ok(ServerPattern::Wildcard(suffix.to_ascii_lowercase()));
        }
        if text.contains('*') {
            return Err(tagged(
                rules::UNANCHORED_WILDCARD,
                text,
                format_args!(
                    "wildcard {text:?}: `*` is only allowed as the whole first label, as in \"*.example.de\""
                ),
            ));
        }
        ServerNameSpec::parse(text).map(|name| ServerPattern::Exact(name.0))
    }

    /// Whether `server` matches this pattern.
    pub fn matches(&self, server: &ServerName) -> bool {
        match self {
            ServerPattern::Exact(name) => name.as_str() == server.as_str(),
            ServerPattern::Wildcard(suffix) => host_under(server.host(), suffix),
        }
    }

    /// Whether some server name could match both patterns.
    pub fn overlaps(&self, other: &ServerPattern) -> bool {
        match (self, other) {
            (ServerPattern::Exact(a), ServerPattern::Exact(b)) => a == b,
            (ServerPattern::Exact(name), wildcard @ ServerPattern::Wildcard(_))
            | (wildcard @ ServerPattern::Wildcard(_), ServerPattern::Exact(name)) => {
                wildcard.matches(name)
            }
            (ServerPattern::Wildcard(a), ServerPattern::Wildcard(b)) => {
                a == b || host_under(a, b) || host_under(b, a)
            }
        }
    }
}

/// `host` is strictly below `suffix` at a label boundary (`a.b.de` under `b.de`).
fn host_under(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len() + 1
        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

impl fmt::Display for ServerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerPattern::Exact(name) => f.write_str(name.as_str()),
            ServerPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

from_str_serde!(ServerPattern);
string_schema!(
    ServerPattern,
    "ServerPattern",
    "exact Matrix server name or a DNS wildcard \"*.example.de\""
);

// === impl AccountPattern ===

/// An official account pattern: `@localpart:server`, where the localpart may contain one `*`
/// (`@amt-*:127.0.0.2:8448`) and the server part is an exact server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPattern {
    prefix: String,
    /// `None` when the pattern has no `*` (an exact user ID).
    suffix: Option<String>,
    server: OwnedServerName,
}

impl AccountPattern {
    /// Parses an account pattern.
    pub fn parse(text: &str) -> Result<AccountPattern, String> {
        let bad = |why: &str| {
            tagged(
                rules::BAD_ACCOUNT_PATTERN,
                text,
                format_args!("account pattern {text:?}: {why}"),
            )
        };
        let rest = text
            .strip_prefix('@')
            .ok_or_else(|| bad("must start with '@'"))?;
        let (localpart, server) = rest
            .split_once(':')
            .ok_or_else(|| bad("expected \"@localpart:server\""))?;
        if server.contains('*') {
            return Err(bad(
                "`*` is only allowed in the localpart; the server part must be exact",
            ));
        }
        let server = ServerNameSpec::parse(server)
            .map_err(|_| bad("the server part is not a valid server name"))?
            .0;
        if localpart.matches('*').count() > 1 {
            return Err(bad("at most one `*` is allowed in the localpart"));
        }
        if localpart.is_empty() || localpart == "*" {
            return Err(bad("the localpart must not be empty or only `*`"));
        }
        let valid = |part: &str| {
            part.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
        };
        let (prefix, suffix) = match localpart.split_once('*') {
            Some((prefix, suffix)) => (prefix, Some(suffix)),
            None => (localpart, None),
        };
        if !valid(prefix) || !suffix.is_none_or(valid) {
            return Err(bad(
                "the localpart may only contain a-z, 0-9, . _ = - / + and one `*`",
            ));
        }
        Ok(AccountPattern {
            prefix: prefix.to_owned(),
            suffix: suffix.map(str::to_owned),
            server,
        })
    }

    /// The exact server part.
    pub fn server(&self) -> &ServerName {
        &self.server
    }

    /// Whether `user` matches the pattern.
    pub fn matches(&self, user: &UserId) -> bool {
        if user.server_name() != self.server {
            return false;
        }
        let localpart = user.localpart();
        match &self.suffix {
            None => localpart == self.prefix,
            Some(suffix) => {
                localpart.len() >= self.prefix.len() + suffix.len()
                    && localpart.starts_with(self.prefix.as_str())
                    && localpart.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for AccountPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.suffix {
            None => write!(f, "@{}:{}", self.prefix, self.server),
            Some(suffix) => write!(f, "@{}*{}:{}", self.prefix, suffix, self.server),
        }
    }
}

from_str_serde!(AccountPattern);
string_schema!(
    AccountPattern,
    "AccountPattern",
    "Matrix user ID pattern; one `*` allowed in the localpart, e.g. @amt-*:127.0.0.2:8448"
);

// === impl MimePattern ===

/// A MIME pattern: `type/subtype`, `type/*` or `*/*` (lower case, no parameters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MimePattern {
    text: String,
    slash: usize,
}

impl MimePattern {
    /// Parses a MIME pattern.
    pub fn parse(text: &str) -> Result<MimePattern, String> {
        let bad = |why: &str| {
            tagged(
                rules::BAD_MIME_PATTERN,
                text,
                format_args!("MIME pattern {text:?}: {why}"),
            )
        };
        let (kind, subtype) = text
            .split_once('/')
            .ok_or_else(|| bad("expected \"type/subtype\" or \"type/*\""))?;
        let token = |part: &str| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&^_.+-".contains(&b)
                })
        };
        let kind_ok = token(kind) || (kind == "*" && subtype == "*");
        if !kind_ok || !(token(subtype) || subtype == "*") {
            return Err(bad(
                "expected lower-case \"type/subtype\", \"type/*\" or \"*/*\" without parameters",
            ));
        }
        Ok(MimePattern {
            text: text.to_owned(),
            slash: kind.len(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `mime` (e.g. `image/png; charset=x`, any case) matches.
    pub fn matches(&self, mime: &str) -> bool {
        let essence = mime.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        let (pattern_kind, pattern_subtype) =
            (&self.text[..self.slash], &self.text[self.slash + 1..]);
        (pattern_kind == "*" || pattern_kind.eq_ignore_ascii_case(kind))
            && (pattern_subtype == "*" || pattern_subtype.eq_ignore_ascii_case(subtype))
    }

    /// Whether some MIME type matches both patterns.
    pub fn overlaps(&self, other: &MimePattern) -> bool {
        let part = |p: &MimePattern| {
            (
                p.text[..p.slash].to_owned(),
                p.text[p.slash + 1..].to_owned(),
            )
        };
        let ((a_kind, a_sub), (b_kind, b_sub)) = (part(self), part(other));
        (a_kind == "*" || b_kind == "*" || a_kind == b_kind)
            && (a_sub == "*" || b_sub == "*" || a_sub == b_sub)
    }
}

impl fmt::Display for MimePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

from_str_serde!(MimePattern);
string_schema!(MimePattern, "MimePattern", "MIME pattern: type/subtype, type/* or */*", "pattern": "^([a-z0-9!#$&^_.+-]+/([a-z0-9!#$&^_.+-]+|\\*)|\\*/\\*)$");

/// Deserialises a string → string map and refuses a key that occurs twice, whichever syntax the
/// document is written in (a JSON parser would otherwise keep the last value silently).
pub(crate) fn unique_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = std::collections::BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of strings to strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format_args!(
                        "duplicate entry with key {key:?}"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_duration(text: &str, expect: Result<i64, &str>) {
        let got = DurationSpec::parse(text).map(|d| d.duration().whole_seconds());
        match (got, expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn durations() {
        check_duration("30d", Ok(30 * 86_400));
        check_duration("12h", Ok(12 * 3_600));
        check_duration("2w", Ok(14 * 86_400));
        check_duration("45s", Ok(45));
        check_duration("0d", Err("greater than zero"));
        check_duration("30", Err("missing unit"));
        check_duration("30 d", Err("unknown unit"));
        check_duration("d", Err("expected a number"));
        check_duration("-3d", Err("expected a number"));
        check_duration("99999999999999999999d", Err("too large"));
        check_duration("999999w", Err("100 years"));
    }

    #[track_caller]
    fn check_size(text: &str, expect: Option<u64>) {
        assert_eq!(
            ByteSize::parse(text).ok().map(|s| s.bytes()),
            expect,
            "{text}"
        );
    }

    #[test]
    fn sizes() {
        check_size("50MiB", Some(50 << 20));
        check_size("10MB", Some(10_000_000));
        check_size("1024", Some(1024));
        check_size("7B", Some(7));
        check_size("50mib", None);
        check_size("MiB", None);
        check_size("1.5MiB", None);
        check_size("99999999999TiB", None);
    }

    #[track_caller]
    fn check_server_pattern(pattern: &str, server: &str, expect: bool) {
        let pattern = ServerPattern::parse(pattern).unwrap();
        let server = <&ServerName>::try_from(server).unwrap();
        assert_eq!(pattern.matches(server), expect, "{pattern} vs {server}");
    }

    #[test]
    fn server_patterns() {
        check_server_pattern("*.wasser.de", "a.wasser.de", true);
        check_server_pattern("*.wasser.de", "a.b.wasser.de:8448", true);
        check_server_pattern("*.wasser.de", "wasser.de", false);
        check_server_pattern("*.wasser.de", "abwasser.de", false);
        check_server_pattern("127.0.0.2:8448", "127.0.0.2:8448", true);
        check_server_pattern("127.0.0.2:8448", "127.0.0.2", false);
        for bad in [
            "*wasser*",
            "wasser*.de",
            "*.",
            "*.de",
            "a.*.de",
            "*.127.0.0.1",
            "*.x.de:8448",
            "bad name",
        ] {
            assert!(ServerPattern::parse(bad).is_err(), "{bad}");
        }
        let p = |s| ServerPattern::parse(s).unwrap();
        assert!(p("*.wasser.de").overlaps(&p("*.amt.wasser.de")));
        assert!(p("*.wasser.de").overlaps(&p("x.wasser.de")));
        assert!(!p("*.wasser.de").overlaps(&p("*.abwasser.de")));
    }

    #[track_caller]
    fn check_account(pattern: &str, user: &str, expect: bool) {
        let pattern = AccountPattern::parse(pattern).unwrap();
        let user = UserId::parse(user).unwrap();
        assert_eq!(pattern.matches(&user), expect, "{pattern} vs {user}");
    }

    #[test]
    fn account_patterns() {
        check_account(
            "@amt-*:127.0.0.2:8448",
            "@amt-meldewesen:127.0.0.2:8448",
            true,
        );
        check_account("@amt-*:127.0.0.2:8448", "@amt-:127.0.0.2:8448", true);
        check_account("@amt-*:127.0.0.2:8448", "@buerger:127.0.0.2:8448", false);
        check_account("@amt-*:127.0.0.2:8448", "@amt-x:127.0.0.3:8448", false);
        check_account("@*-amt:127.0.0.2:8448", "@wasser-amt:127.0.0.2:8448", true);
        check_account(
            "@poststelle:127.0.0.2:8448",
            "@poststelle:127.0.0.2:8448",
            true,
        );
        check_account(
            "@poststelle:127.0.0.2:8448",
            "@poststelle2:127.0.0.2:8448",
            false,
        );
        for bad in [
            "amt-*:x.de",
            "@amt-*",
            "@amt:*.x.de",
            "@*:x.de",
            "@a**:x.de",
            "@A*:x.de",
            "@a*:bad name",
        ] {
            assert!(AccountPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mime_patterns() {
        let p = |s| MimePattern::parse(s).unwrap();
        assert!(p("image/*").matches("image/png"));
        assert!(p("image/*").matches("IMAGE/PNG; x=y"));
        assert!(!p("image/*").matches("application/pdf"));
        assert!(p("application/pdf").matches("application/pdf"));
        assert!(p("*/*").matches("text/plain"));
        assert!(!p("image/png").matches("garbage"));
        assert!(p("image/*").overlaps(&p("image/png")));
        assert!(!p("image/*").overlaps(&p("text/*")));
        for bad in [
            "image",
            "image/",
            "*/png",
            "Image/png",
            "image/png; q=1",
            "/x",
        ] {
            assert!(MimePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_names() {
        assert!(ServerNameSpec::parse("127.0.0.2:8448").is_ok());
        assert!(ServerNameSpec::parse("matrix.example.de").is_ok());
        assert!(ServerNameSpec::parse("bad name").is_err());
        assert!(ServerNameSpec::parse("").is_err());
    }
}
