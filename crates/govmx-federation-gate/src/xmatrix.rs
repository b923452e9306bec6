//! Parser for the `Authorization: X-Matrix …` request header of the server-server API.
//!
//! Follows the auth-param grammar of RFC 9110 §11: the scheme and parameter names are
//! case-insensitive, parameters come in any order, values are tokens or quoted strings with
//! backslash escapes, and (as Synapse and older servers send them) unquoted values may contain
//! colons. Unknown parameters are ignored; a parameter given twice is an error, because two
//! parsers (ours and Synapse's) could otherwise disagree on which one counts.
//!
//! [`from_headers`] also refuses more than one `Authorization` header: Synapse reads every
//! X-Matrix header and keeps the *last* origin, so a second header would let a peer show the gate
//! one origin and Synapse another.

use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// The parameters of one `X-Matrix` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The server name the request claims to come from.
    pub origin: String,
    /// The server the request is meant for (Matrix v1.3+, MSC3383); absent from older servers.
    pub destination: Option<String>,
    /// The signing key id, `ed25519:<version>`.
    pub key: String,
    /// The unpadded base64 signature.
    pub sig: String,
}

/// Why an `Authorization` header was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XMatrixError {
    /// The request carries no `Authorization` header.
    #[error("missing Authorization header")]
    Missing,
    /// The request carries more than one `Authorization` header.
    #[error("{0} Authorization headers; exactly one X-Matrix header is allowed")]
    Duplicated(usize),
    /// The header uses another scheme (`Bearer`, …) or none.
    #[error("Authorization scheme is not X-Matrix")]
    WrongScheme,
    /// The header is not valid auth-param syntax.
    #[error("malformed X-Matrix header at byte {at}: {what}")]
    Syntax {
        /// Byte offset into the header value.
        at: usize,
        /// What was expected or found.
        what: &'static str,
    },
    /// A parameter appears twice.
    #[error("X-Matrix parameter {0:?} given more than once")]
    DuplicateParam(String),
    /// A required parameter is absent.
    #[error("X-Matrix parameter {0:?} is missing")]
    MissingParam(&'static str),
    /// A parameter value is not acceptable.
    #[error("X-Matrix parameter {name:?} is invalid: {reason}")]
    InvalidValue {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl XMatrixError {
    /// A stable rule id for metrics and the audit log.
    pub fn rule(&self) -> &'static str {
        match self {
            XMatrixError::Missing => "gate.auth.missing",
            XMatrixError::Duplicated(_) => "gate.auth.duplicated",
            _ => "gate.auth.malformed",
        }
    }
}

/// Reads the single `Authorization` header of a request and parses it as X-Matrix.
pub fn from_headers(headers: &HeaderMap) -> Result<XMatrix, XMatrixError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Err(XMatrixError::Missing);
    };
    let extra = values.count();
    if extra > 0 {
        return Err(XMatrixError::Duplicated(extra + 1));
    }
    parse(first.as_bytes())
}

/// Parses one header value such as `X-Matrix origin="a.example",key="ed25519:1",sig="…"`.
pub fn parse(value: &[u8]) -> Result<XMatrix, XMatrixError> {
    let mut cur = Cursor { s: value, i: 0 };
    cur.skip_ws();
    let scheme = cur.token();
    if !scheme.eq_ignore_ascii_case(b"X-Matrix") {
        return Err(XMatrixError::WrongScheme);
    }
    if cur.i < cur.s.len() && !is_ws(cur.s[cur.i]) {
        return Err(XMatrixError::WrongScheme);
    }
    let mut origin = None;
    let mut destination = None;
    let mut key = None;
    let mut sig = None;
    loop {
        // `#auth-param`: empty list elements and optional whitespace are allowed.
        cur.skip_ws();
        while cur.eat(b',') {
            cur.skip_ws();
        }
        if cur.at_end() {
            break;
        }
        let name_at = cur.i;
        let name = cur.token();
        if name.is_empty() {
            return Err(cur.err("expected a parameter name"));
        }
        cur.skip_ws();
        if !cur.eat(b'=') {
            return Err(XMatrixError::Syntax {
                at: cur.i,
                what: "expected '=' after the parameter name",
            });
        }
        cur.skip_ws();
        let value = if cur.peek() == Some(b'"') {
            cur.quoted()?
        } else {
            cur.unquoted()?
        };
        cur.skip_ws();
        if !cur.at_end() && !cur.eat(b',') {
            return Err(cur.err("expected ',' between parameters"));
        }
        let slot = if name.eq_ignore_ascii_case(b"origin") {
            &mut origin
        } else if name.eq_ignore_ascii_case(b"destination") {
            &mut destination
        } else if name.eq_ignore_ascii_case(b"key") {
            &mut key
        } else if name.eq_ignore_ascii_case(b"sig") {
            &mut sig
        } else {
            continue;
        };
        if slot.is_some() {
            let name = String::from_utf8_lossy(&cur.s[name_at..name_at + name.len()]);
            return Err(XMatrixError::DuplicateParam(name.to_ascii_lowercase()));
        }
        *slot = Some(value);
    }
    let origin = origin.ok_or(XMatrixError::MissingParam("origin"))?;
    let key = key.ok_or(XMatrixError::MissingParam("key"))?;
    let sig = sig.ok_or(XMatrixError::MissingParam("sig"))?;
    check_server_name("origin", &origin)?;
    if let Some(destination) = &destination {
        check_server_name("destination", destination)?;
    }
    check_key_id(&key)?;
    check_sig(&sig)?;
    Ok(XMatrix {
        origin,
        destination,
        key,
        sig,
    })
}

impl fmt::Display for XMatrix {
    /// Formats the header value the way Synapse sends it (all values quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X-Matrix origin=\"{}\"", self.origin)?;
        if let Some(destination) = &self.destination {
            write!(f, ",destination=\"{destination}\"")?;
        }
        write!(f, ",key=\"{}\",sig=\"{}\"", self.key, self.sig)
    }
}

fn check_server_name(name: &'static str, value: &str) -> Result<(), XMatrixError> {
    if <&ruma_common::ServerName>::try_from(value).is_err() {
        return Err(XMatrixError::InvalidValue {
            name,
            reason: "not a valid Matrix server name",
        });
    }
    Ok(())
}

fn check_key_id(key: &str) -> Result<(), XMatrixError> {
    let invalid = |reason| XMatrixError::InvalidValue {
        name: "key",
        reason,
    };
    let Some(version) = key.strip_prefix("ed25519:") else {
        return Err(invalid("algorithm must be ed25519"));
    };
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(invalid("key version must be [a-zA-Z0-9_]+"));
    }
    Ok(())
}

fn check_sig(sig: &str) -> Result<(), XMatrixError> {
    // Unpadded or padded base64 (standard or URL-safe alphabet): trailing `=` are ignored.
    let bytes = sig.as_bytes();
    let end = bytes
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(0, |last| last + 1);
    if bytes.is_empty() || !bytes[..end].iter().all(|&b| has(b, BASE64)) {
        return Err(XMatrixError::InvalidValue {
            name: "sig",
            reason: "not base64",
        });
    }
    Ok(())
}

/// Byte classes of the header grammar, one bit each in [`CLASSES`].
const WS: u8 = 1;
/// RFC 9110 `tchar`: parameter names and the scheme.
const TCHAR: u8 = 2;
/// Bytes of an unquoted parameter value: `tchar` and `:/[]@=` (server names with ports,
/// IPv6 literals, key ids, padded base64).
const UNQUOTED: u8 = 4;
/// `qdtext` without `"` and `\`: what a quoted value holds between escapes.
const QDTEXT: u8 = 8;
/// The base64 alphabets (standard and URL-safe), without padding.
const BASE64: u8 = 16;

/// The class bits of every byte value; one table lookup per byte while scanning.
static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b == b' ' || b == b'\t' {
            class |= WS;
        }
        let tchar = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        if tchar {
            class |= TCHAR | UNQUOTED;
        }
        if matches!(b, b':' | b'/' | b'[' | b']' | b'@' | b'=') {
            class |= UNQUOTED;
        }
        if (b == b'\t' || (b >= 0x20 && b < 0x7f)) && b != b'"' && b != b'\\' {
            class |= QDTEXT;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_') {
            class |= BASE64;
        }
        table[i] = class;
        i += 1;
    }
    table
}

fn has(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

fn is_ws(b: u8) -> bool {
    has(b, WS)
}

/// The bytes `value` holds, validated as ASCII by the scanner: a `String` without a lossy
/// conversion (which never applies) or a panic.
fn ascii_string(cur: &Cursor<'_>, value: &[u8]) -> Result<String, XMatrixError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| cur.err("value is not UTF-8"))
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// The length of the run of `class` bytes at the cursor.
    fn span(&self, class: u8) -> usize {
        self.s[self.i..]
            .iter()
            .take_while(|&&b| has(b, class))
            .count()
    }

    fn skip_ws(&mut self) {
        self.i += self.span(WS);
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        self.i += self.span(TCHAR);
        &self.s[start..self.i]
    }

    fn err(&self, what: &'static str) -> XMatrixError {
        XMatrixError::Syntax { at: self.i, what }
    }

    /// A quoted-string; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, XMatrixError> {
        self.i += 1;
        // Fast path: no escapes (every value a homeserver sends) is one copy of the slice.
        let start = self.i;
        let len = self.span(QDTEXT);
        if self.s.get(start + len) == Some(&b'"') {
            self.i = start + len + 1;
            return ascii_string(self, &self.s[start..start + len]);
        }
        let mut out = Vec::with_capacity(self.s.len() - start);
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || (0x20..0x7f).contains(&b) => {
                            out.push(b);
                            self.i += 1;
                        }
                        _ => return Err(self.err("invalid escape in quoted string")),
                    }
                }
                Some(b) if b == b'\t' || (0x20..0x7f).contains(&b) => {
                    out.push(b);
                    self.i += 1;
                }
                Some(_) => return Err(self.err("invalid character in quoted string")),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("quoted string is not UTF-8"))
    }

    /// An unquoted value: a token, also allowing `:`, `/`, `[`, `]`, `@` and `=` (server
    /// names with ports, IPv6 literals, key ids, base64).
    fn unquoted(&mut self) -> Result<String, XMatrixError> {
        let start = self.i;
        self.i += self.span(UNQUOTED);
        if self.i == start {
            return Err(self.err("expected a parameter value"));
        }
        ascii_string(self, &self.s[start..self.i])
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use http::HeaderValue;

    use super::*;

    #[track_caller]
    fn check(input: &str, expect: Expect) {
        let actual = match parse(input.as_bytes()) {
            Ok(x) => format!(
                "ok origin={} destination={:?} key={} sig={}",
                x.origin, x.destination, x.key, x.sig
            ),
            Err(e) => format!("err {e}"),
        };
        expect.assert_eq(&actual);
    }

    #[test]
    fn byte_classes_match_the_grammar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(has(b, TCHAR), tchar, "tchar {b:#04x}");
            assert_eq!(
                has(b, UNQUOTED),
                tchar || b":/[]@=".contains(&b),
                "unquoted {b:#04x}"
            );
            let qdtext = (b == b'\t' || (0x20..0x7f).contains(&b)) && b != b'"' && b != b'\\';
            assert_eq!(has(b, QDTEXT), qdtext, "qdtext {b:#04x}");
            assert_eq!(has(b, WS), b == b' ' || b == b'\t', "ws {b:#04x}");
            let base64 = b.is_ascii_alphanumeric() || b"+/-_".contains(&b);
            assert_eq!(has(b, BASE64), base64, "base64 {b:#04x}");
        }
    }

    #[test]
    fn synapse_style() {
        check(
            r#"X-Matrix origin="a.example:8448",destination="b.example",key="ed25519:a_1",sig="c2ln""#,
            expect![[
                r#"ok origin=a.example:8448 destination=Some("b.example") key=ed25519:a_1 sig=c2ln"#
            ]],
        );
    }

    #[test]
    fn case_insensitive_scheme_and_names_any_order() {
        check(
            r#"x-matrix SIG="c2ln", Key="ed25519:1" ,  Origin="a.example""#,
            expect![[r#"ok origin=a.example destination=None key=ed25519:1 sig=c2ln"#]],
        );
    }

    #[test]
    fn unquoted_values_with_colons() {
        check(
            "X-Matrix origin=127.0.0.2:8448,key=ed25519:abc,sig=c2ln+/x",
            expect![[r#"ok origin=127.0.0.2:8448 destination=None key=ed25519:abc sig=c2ln+/x"#]],
        );
        check(
            "X-Matrix origin=[::1]:8448,key=ed25519:abc,sig=c2ln",
            expect![[r#"ok origin=[::1]:8448 destination=None key=ed25519:abc sig=c2ln"#]],
        );
    }

    #[test]
    fn escapes_and_unknown_params() {
        check(
            r#"X-Matrix origin="a\.example",future="x\"y",key="ed25519:1",sig="c2ln",,"#,
            expect![[r#"ok origin=a.example destination=None key=ed25519:1 sig=c2ln"#]],
        );
    }

    #[test]
    fn rejections() {
        check(
            "Bearer abc",
            expect!["err Authorization scheme is not X-Matrix"],
        );
        check(
            "X-Matrixorigin=a",
            expect!["err Authorization scheme is not X-Matrix"],
        );
        check("", expect!["err Authorization scheme is not X-Matrix"]);
        check(
            "X-Matrix",
            expect![[r#"err X-Matrix parameter "origin" is missing"#]],
        );
        check(
            r#"X-Matrix origin="a.example",key="ed25519:1""#,
            expect![[r#"err X-Matrix parameter "sig" is missing"#]],
        );
        check(
            r#"X-Matrix origin="a.example",ORIGIN="evil.example",key="ed25519:1",sig="c2ln""#,
            expect![[r#"err X-Matrix parameter "origin" given more than once"#]],
        );
        check(
            r#"X-Matrix origin="a.example,key="ed25519:1",sig="c2ln"#,
            expect!["err malformed X-Matrix header at byte 32: expected ',' between parameters"],
        );
        check(
            r#"X-Matrix origin="a.example"#,
            expect!["err malformed X-Matrix header at byte 26: unterminated quoted string"],
        );
        check(
            r#"X-Matrix origin "a.example""#,
            expect![
                "err malformed X-Matrix header at byte 16: expected '=' after the parameter name"
            ],
        );
        check(
            r#"X-Matrix origin="a" key="ed25519:1""#,
            expect!["err malformed X-Matrix header at byte 20: expected ',' between parameters"],
        );
        check(
            r#"X-Matrix origin="bad name!",key="ed25519:1",sig="c2ln""#,
            expect![[
                r#"err X-Matrix parameter "origin" is invalid: not a valid Matrix server name"#
            ]],
        );
        check(
            r#"X-Matrix origin="a.example",destination="",key="ed25519:1",sig="c2ln""#,
            expect![[
                r#"err X-Matrix parameter "destination" is invalid: not a valid Matrix server name"#
            ]],
        );
        check(
            r#"X-Matrix origin="a.example",key="rsa:1",sig="c2ln""#,
            expect![[r#"err X-Matrix parameter "key" is invalid: algorithm must be ed25519"#]],
        );
        check(
            r#"X-Matrix origin="a.example",key="ed25519:",sig="c2ln""#,
            expect![[
                r#"err X-Matrix parameter "key" is invalid: key version must be [a-zA-Z0-9_]+"#
            ]],
        );
        check(
            r#"X-Matrix origin="a.example",key="ed25519:1",sig="not base64!""#,
            expect![[r#"err X-Matrix parameter "sig" is invalid: not base64"#]],
        );
        check(
            "X-Matrix origin=\"a\u{e9}\",key=\"ed25519:1\",sig=\"c2ln\"",
            expect!["err malformed X-Matrix header at byte 18: invalid character in quoted string"],
        );
        check(
            "X-Matrix origin=\"a\\\u{1}\"",
            expect!["err malformed X-Matrix header at byte 19: invalid escape in quoted string"],
        );
        check(
            "X-Matrix =a",
            expect!["err malformed X-Matrix header at byte 9: expected a parameter name"],
        );
        check(
            "X-Matrix origin=",
            expect!["err malformed X-Matrix header at byte 16: expected a parameter value"],
        );
    }

    #[test]
    fn header_map_cardinality() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers), Err(XMatrixError::Missing));
        let value = r#"X-Matrix origin="a.example",key="ed25519:1",sig="c2ln""#;
        headers.append(AUTHORIZATION, HeaderValue::from_static(value));
        assert!(from_headers(&headers).is_ok());
        headers.append(AUTHORIZATION, HeaderValue::from_static(value));
        assert_eq!(from_headers(&headers), Err(XMatrixError::Duplicated(2)));
    }

    #[test]
    fn display_round_trips() {
        let x = parse(br#"X-Matrix origin="a.example",destination="b",key="ed25519:1",sig="c2ln""#)
            .unwrap();
        assert_eq!(parse(x.to_string().as_bytes()).unwrap(), x);
    }
}
