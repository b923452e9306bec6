//! Media type decisions by **sniffing the bytes** (magic numbers via `infer`), never by the
//! declared `Content-Type`, plus `image/*`-style patterns for allow/block lists.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// How many leading bytes are sniffed.
pub const SNIFF_LEN: usize = 8192;

/// A `type/subtype` pattern; `*` is allowed as the whole subtype (`image/*`) or as `*/*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MimePattern {
    kind: String,
    subtype: String,
}

impl MimePattern {
    /// Parses `image/png`, `image/*` or `*/*` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, subtype) = s.split_once('/')?;
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let ok = (kind == "*" && subtype == "*")
            || (token_ok(kind) && (subtype == "*" || token_ok(subtype)));
        ok.then(|| Self {
            kind: kind.to_owned(),
            subtype: subtype.to_owned(),
        })
    }

    /// Whether `mime` (a bare `type/subtype`) matches.
    pub fn matches(&self, mime: &str) -> bool {
        let Some((kind, subtype)) = mime.split_once('/') else {
            return false;
        };
        (self.kind == "*" || self.kind.eq_ignore_ascii_case(kind))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

impl fmt::Display for MimePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.subtype)
    }
}

impl<'de> Deserialize<'de> for MimePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MimePattern::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid media type pattern `{s}`, expected e.g. \"image/*\" or \"application/pdf\""
            ))
        })
    }
}

/// Sniffs the media type from the first bytes of the content.
pub fn sniff(prefix: &[u8]) -> &'static str {
    if let Some(kind) = infer::get(prefix) {
        return kind.mime_type();
    }
    if prefix.is_empty() {
        return "application/octet-stream";
    }
    // Text: no NUL and valid UTF-8 (a multi-byte character may be cut at the sniff boundary).
    let valid = match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && prefix.len() >= SNIFF_LEN,
    };
    if valid && !prefix.contains(&0) {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// Allow/block rules.
#[derive(Clone, Debug, Default)]
pub struct MimeRules {
    allow: Vec<MimePattern>,
    block: Vec<MimePattern>,
}

impl MimeRules {
    /// Rules from the config lists.
    pub fn new(allow: Vec<MimePattern>, block: Vec<MimePattern>) -> Self {
        Self { allow, block }
    }

    /// Whether the sniffed type may pass: not blocked, and allowed if an allow list exists.
    pub fn permits(&self, mime: &str) -> bool {
        !self.block.iter().any(|p| p.matches(mime))
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.matches(mime)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], block: &[&str]) -> MimeRules {
        let p = |v: &[&str]| v.iter().map(|s| MimePattern::parse(s).unwrap()).collect();
        MimeRules::new(p(allow), p(block))
    }

    #[test]
    fn patterns() {
        for bad in ["image", "/png", "image/", "*/png", "ima ge/png", "image/p*"] {
            assert_eq!(MimePattern::parse(bad), None, "{bad}");
        }
        let cases = [
            ("image/*", "image/png", true),
            ("image/*", "IMAGE/PNG", true),
            ("image/*", "video/mp4", false),
            ("*/*", "application/x-executable", true),
            ("application/pdf", "application/pdf", true),
            ("application/pdf", "application/pdfx", false),
        ];
        for (pattern, mime, want) in cases {
            assert_eq!(
                MimePattern::parse(pattern).unwrap().matches(mime),
                want,
                "{pattern} {mime}"
            );
        }
    }

    #[test]
    fn sniffing_ignores_names_and_declarations() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
        elf.resize(64, 0);
        assert_eq!(sniff(&elf), "application/x-executable");
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0"),
            "application/vnd.microsoft.portable-executable"
        );
        assert_eq!(sniff(b"hello world\n"), "text/plain");
        assert_eq!(sniff(b"\x01\x02\0\x03"), "application/octet-stream");
        assert_eq!(sniff(b""), "application/octet-stream");
    }

    #[test]
    fn rules_block_first_then_allow() {
        let r = rules(&["image/*", "text/plain"], &["image/svg+xml"]);
        assert!(r.permits("image/png"));
        assert!(!r.permits("image/svg+xml"));
        assert!(!r.permits("application/x-executable"));
        let r = rules(&[], &["application/x-executable"]);
        assert!(r.permits("application/zip"));
        assert!(!r.permits("application/x-executable"));
    }
}
