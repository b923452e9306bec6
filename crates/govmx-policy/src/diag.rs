//! Diagnostics: [`PolicyError`] (file, line, column, stable rule id, message) and the rule ids.

use std::fmt;

/// One problem found in a policy document, pointing at the offending node.
///
/// Displayed as `file:line:column: error[rule]: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The file name the caller gave for the document.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Stable rule id, one of the constants in [`rules`].
    pub rule: &'static str,
    /// Human-readable message, lower case, no trailing period.
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(
        file: &str,
        (line, column): (usize, usize),
        rule: &'static str,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError {
            file: file.to_owned(),
            line,
            column,
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error[{}]: {}",
            self.file, self.line, self.column, self.rule, self.message
        )
    }
}

/// Stable rule ids of [`PolicyError`]s. Tooling and tests match on these strings.
pub mod rules {
    /// The file is not valid UTF-8.
    pub const NOT_UTF8: &str = "not-utf8";
    /// The file is not well-formed YAML.
    pub const YAML_SYNTAX: &str = "yaml-syntax";
    /// The document is not a mapping, or holds more than one YAML document.
    pub const NOT_A_DOCUMENT: &str = "not-a-document";
    /// `apiVersion` or `kind` is missing.
    pub const MISSING_HEADER: &str = "missing-header";
    /// `apiVersion` is not `govmx.de/v1`.
    pub const UNSUPPORTED_API_VERSION: &str = "unsupported-api-version";
    /// `kind` names no known document kind.
    pub const UNKNOWN_KIND: &str = "unknown-kind";
    /// A key that the document kind does not define.
    pub const UNKNOWN_KEY: &str = "unknown-key";
    /// A value of the wrong type (string where a number is expected, ...).
    pub const WRONG_TYPE: &str = "wrong-type";
    /// A required field is missing.
    pub const MISSING_FIELD: &str = "missing-field";
    /// An enum value outside its allowed set (`class: mayor`).
    pub const UNKNOWN_VALUE: &str = "unknown-value";
    /// The same key twice in one mapping.
    pub const DUPLICATE_KEY: &str = "duplicate-key";
    /// Any other structural problem reported by the YAML deserialiser.
    pub const INVALID_DOCUMENT: &str = "invalid-document";
    /// A timestamp that is not RFC 3339.
    pub const BAD_TIMESTAMP: &str = "bad-timestamp";
    /// A duration that is not `<number><s|m|h|d|w>`.
    pub const BAD_DURATION: &str = "bad-duration";
    /// A size that is not `<number>[B|KB|MB|GB|KiB|MiB|GiB]`.
    pub const BAD_SIZE: &str = "bad-size";
    /// A malformed Matrix server name.
    pub const MALFORMED_SERVER_NAME: &str = "malformed-server-name";
    /// A malformed Matrix user ID.
    pub const MALFORMED_USER_ID: &str = "malformed-user-id";
    /// A malformed `host:port` in `delegatedHosts`.
    pub const MALFORMED_HOST: &str = "malformed-host";
    /// A signing key id or public key of the wrong form or length.
    pub const BAD_SIGNING_KEY: &str = "bad-signing-key";
    /// An id that is not a slug (`[a-z0-9-]`, starting with a letter).
    pub const BAD_ID: &str = "bad-id";
    /// A server listed twice on the federation list.
    pub const DUPLICATE_SERVER: &str = "duplicate-server";
    /// Two agencies with the same id.
    pub const DUPLICATE_AGENCY: &str = "duplicate-agency";
    /// Two contact rules with the same id.
    pub const DUPLICATE_RULE: &str = "duplicate-rule";
    /// A contact rule that can never match: an earlier rule has the same `from` and `to`.
    pub const SHADOWED_RULE: &str = "shadowed-rule";
    /// Two grants with the same id.
    pub const DUPLICATE_GRANT: &str = "duplicate-grant";
    /// Two trust anchor keys with the same id or the same public key.
    pub const DUPLICATE_TRUST_KEY: &str = "duplicate-trust-key";
    /// `issued + maxAge` lies before `now`.
    pub const EXPIRED_LIST: &str = "expired-list";
    /// `issued` lies in the future beyond the allowed clock skew.
    pub const ISSUED_IN_FUTURE: &str = "issued-in-future";
    /// A `*` that is not a whole leading DNS label (`*wasser*`, `wasser*.de`).
    pub const UNANCHORED_WILDCARD: &str = "unanchored-wildcard";
    /// A server name or wildcard that overlaps another agency's (or repeats one).
    pub const OVERLAPPING_PATTERN: &str = "overlapping-pattern";
    /// A malformed official account pattern.
    pub const BAD_ACCOUNT_PATTERN: &str = "bad-account-pattern";
    /// An official account pattern whose server is not one of the agency's servers.
    pub const ACCOUNT_OUTSIDE_AGENCY: &str = "account-outside-agency";
    /// A malformed MIME pattern.
    pub const BAD_MIME_PATTERN: &str = "bad-mime-pattern";
    /// A MIME pattern that is both allowed and blocked, or listed twice.
    pub const MIME_CONFLICT: &str = "mime-conflict";
    /// A grant whose `notAfter` is not after `notBefore`.
    pub const BAD_GRANT_WINDOW: &str = "bad-grant-window";
    /// A trust threshold of 0 or above the number of keys.
    pub const BAD_THRESHOLD: &str = "bad-threshold";
    /// Two documents of the same kind in one policy set.
    pub const DUPLICATE_KIND: &str = "duplicate-kind";
    /// A document kind the policy set needs is missing.
    pub const MISSING_DOCUMENT: &str = "missing-document";
    /// Our own server is not on the federation list.
    pub const OWN_SERVER_NOT_LISTED: &str = "own-server-not-listed";
    /// An agency server name that is not on the federation list.
    pub const AGENCY_SERVER_NOT_LISTED: &str = "agency-server-not-listed";
    /// An agency server name listed with a class other than `agency`.
    pub const AGENCY_SERVER_WRONG_CLASS: &str = "agency-server-wrong-class";
    /// A grant naming an agency that does not exist.
    pub const UNKNOWN_GRANT_AGENCY: &str = "unknown-grant-agency";
}
