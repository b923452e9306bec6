//! Parsing one policy document: header check, strict deserialisation and the per-document
//! semantic checks, each error positioned at the offending node.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::OnceLock;

use bytes::Bytes;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::de::DeserializeOwned;
use time::{Duration, OffsetDateTime};

use crate::diag::{PolicyError, rules};
use crate::model::{
    API_VERSION, Agencies, ContactRules, FederationList, FederationMember, Kind, MediaRules,
    ServerClass, TrustAnchors,
};
use crate::parallel::{in_parts, partition, slice_range};
use crate::position::{Header, PositionIndex};
use crate::units::{RULE_TAG, ServerNameSpec, ServerPattern, Timestamp};

/// How far in the future `issued` may lie before the document is refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

/// Largest document accepted (policy documents are small; this bounds parser work).
const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// A parsed, individually valid policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// A federation list.
    FederationList(FederationList),
    /// Contact rules.
    ContactRules(ContactRules),
    /// Media rules.
    MediaRules(MediaRules),
    /// The agencies.
    Agencies(Agencies),
    /// Pinned bundle signer keys.
    TrustAnchors(TrustAnchors),
}

impl Document {
    /// The document's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Document::FederationList(_) => Kind::FederationList,
            Document::ContactRules(_) => Kind::ContactRules,
            Document::MediaRules(_) => Kind::MediaRules,
            Document::Agencies(_) => Kind::Agencies,
            Document::TrustAnchors(_) => Kind::TrustAnchors,
        }
    }

    /// `metadata.version`.
    pub fn version(&self) -> u64 {
        match self {
            Document::FederationList(doc) => doc.metadata.version,
            Document::ContactRules(doc) => doc.metadata.version,
            Document::MediaRules(doc) => doc.metadata.version,
            Document::Agencies(doc) => doc.metadata.version,
            Document::TrustAnchors(doc) => doc.metadata.version,
        }
    }
}

/// A [`Document`] together with its file name and node positions (for cross-document errors).
#[derive(Debug, Clone)]
pub struct ParsedDocument {
    /// The file name given to [`parse_document`].
    pub file: String,
    /// The document.
    pub document: Document,
    /// The source (valid UTF-8), kept so that positions can be computed when an error needs
    /// one. Shared, not copied, when the caller hands over a [`Bytes`] buffer.
    text: Bytes,
    /// Built on first use: valid documents never need it.
    positions: OnceLock<PositionIndex>,
}

impl ParsedDocument {
    /// The path → position index of the document, built on first use.
    pub(crate) fn positions(&self) -> &PositionIndex {
        self.positions.get_or_init(|| {
            // The text already parsed once (see `parse_document`), so this cannot fail.
            std::str::from_utf8(&self.text)
                .ok()
                .and_then(|text| PositionIndex::build(text).ok())
                .unwrap_or_default()
        })
    }

    pub(crate) fn error(
        &self,
        path: &str,
        rule: &'static str,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError::new(&self.file, self.positions().pos(path), rule, message)
    }

    pub(crate) fn line_of(&self, path: &str) -> usize {
        self.positions().pos(path).0
    }
}

/// Parses and checks one policy document. `file` is only used in error messages; `now` is
/// used for the federation list's expiry and issue-time checks, which are skipped when it is
/// `None` (for tools that look at old versions, such as `diff`).
///
/// Never panics on any input; every problem found is returned, each with its position.
pub fn parse_document(
    file: &str,
    bytes: &[u8],
    now: Option<OffsetDateTime>,
) -> Result<ParsedDocument, Vec<PolicyError>> {
    parse_document_shared(file, Bytes::copy_from_slice(bytes), now)
}

/// [`parse_document`] for a caller that already holds the bytes in a shared buffer: the
/// document keeps a reference instead of a copy (a 100,000-server list is ~13 MB).
pub fn parse_document_shared(
    file: &str,
    source: Bytes,
    now: Option<OffsetDateTime>,
) -> Result<ParsedDocument, Vec<PolicyError>> {
    parse_document_buffered(file, source, now, &mut MemberBuffer::default())
}

/// Memory for the members of a large federation list, allocated and touched ahead of the parse
/// that fills it (a gate prepares it after one reload for the next), so that parse does not
/// fault ~12 MB of fresh pages in on its critical path. Purely an optimisation: a buffer that
/// is too small, or none, gives the same result.
#[derive(Debug, Default)]
pub struct MemberBuffer(pub(crate) Vec<FederationMember>);

impl MemberBuffer {
    /// An empty buffer with room for `members` members, every page of it touched once.
    pub fn prefaulted(members: usize) -> MemberBuffer {
        let mut buffer = Vec::with_capacity(members);
        // One write per page; the slots stay uninitialised as far as the vector is concerned.
        let per_page = (4096 / std::mem::size_of::<FederationMember>()).max(1);
        for slot in buffer.spare_capacity_mut().iter_mut().step_by(per_page) {
            *slot = std::mem::MaybeUninit::zeroed();
        }
        MemberBuffer(buffer)
    }

    /// How many members fit (0 once a parse has used the buffer).
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// [`parse_document_shared`] that deserialises the members of a large federation list in JSON
/// syntax into `buffer`'s memory, taking it (it is left empty) when it is used.
pub fn parse_document_buffered(
    file: &str,
    source: Bytes,
    now: Option<OffsetDateTime>,
    buffer: &mut MemberBuffer,
) -> Result<ParsedDocument, Vec<PolicyError>> {
    let bytes = &source[..];
    let fail = |position, rule, message: String| {
        Err(vec![PolicyError::new(file, position, rule, message)])
    };
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return fail(
            (1, 1),
            rules::NOT_A_DOCUMENT,
            format!("document is larger than {MAX_DOCUMENT_BYTES} bytes"),
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = valid.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            return fail(
                (line, column),
                rules::NOT_UTF8,
                "file is not valid UTF-8".to_owned(),
            );
        }
    };
    // JSON is YAML: a machine-generated document in JSON syntax (a 100,000-server list) is read
    // by serde_json, ~25× faster than the two YAML passes below. Anything it does not accept
    // falls through to the YAML path, so errors and their positions are the same either way.
    let fast = json_fast_path(text, buffer);
    if let Some((document, prechecked)) = fast {
        return check(file, &source, document, OnceLock::new(), now, prechecked);
    }
    // A light scan for the header; the full position index is only built (from the same text)
    // when an error needs a position, so valid documents never pay for it.
    let header = Header::scan(text);
    let header = match header {
        Ok(header) => header,
        Err(error) => return fail(error.position, rules::YAML_SYNTAX, error.message),
    };
    let lazy_positions = OnceLock::new();
    let positions =
        || lazy_positions.get_or_init(|| PositionIndex::build(text).unwrap_or_default());
    if header.documents > 1 {
        return fail(
            (1, 1),
            rules::NOT_A_DOCUMENT,
            "file holds more than one YAML document; use one file per document".to_owned(),
        );
    }
    if !header.root_is_mapping {
        return fail(
            (1, 1),
            rules::NOT_A_DOCUMENT,
            "expected a mapping with apiVersion, kind and metadata".to_owned(),
        );
    }
    let (Some(api_version), Some(kind)) = (header.api_version.as_deref(), header.kind.as_deref())
    else {
        let missing = if header.api_version.is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        return fail(
            positions().pos(missing),
            rules::MISSING_HEADER,
            format!(
                "missing `{missing}` (every document starts with apiVersion: {API_VERSION} and kind)"
            ),
        );
    };
    if api_version != API_VERSION {
        return fail(
            positions().pos("apiVersion"),
            rules::UNSUPPORTED_API_VERSION,
            format!("unsupported apiVersion {api_version:?}, expected {API_VERSION:?}"),
        );
    }
    let Some(kind) = Kind::from_name(kind) else {
        let known: Vec<_> = Kind::ALL.iter().map(|kind| kind.as_str()).collect();
        return fail(
            positions().pos("kind"),
            rules::UNKNOWN_KIND,
            format!(
                "unknown kind {kind:?}, expected one of {}",
                known.join(", ")
            ),
        );
    };
    let document = match kind {
        Kind::FederationList => deserialize(file, text, positions).map(Document::FederationList),
        Kind::ContactRules => deserialize(file, text, positions).map(Document::ContactRules),
        Kind::MediaRules => deserialize(file, text, positions).map(Document::MediaRules),
        Kind::Agencies => deserialize(file, text, positions).map(Document::Agencies),
        Kind::TrustAnchors => deserialize(file, text, positions).map(Document::TrustAnchors),
    }
    .map_err(|error| vec![error])?;
    check(file, &source, document, lazy_positions, now, None)
}

/// The per-document semantic checks of a deserialised document.
fn check(
    file: &str,
    source: &Bytes,
    document: Document,
    positions: OnceLock<PositionIndex>,
    now: Option<OffsetDateTime>,
    prechecked: Option<Prechecked>,
) -> Result<ParsedDocument, Vec<PolicyError>> {
    let parsed = ParsedDocument {
        file: file.to_owned(),
        document,
        text: source.clone(),
        positions,
    };
    let mut checker = Checker {
        doc: &parsed,
        errors: Vec::new(),
    };
    match &parsed.document {
        Document::FederationList(list) => checker.federation_list(list, now, prechecked),
        Document::ContactRules(rules) => checker.contact_rules(rules),
        Document::MediaRules(media) => checker.media_rules(media),
        Document::Agencies(agencies) => checker.agencies(agencies),
        Document::TrustAnchors(trust) => checker.trust_anchors(trust),
    }
    let errors = checker.errors;
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(sorted(errors))
    }
}

/// A document in JSON syntax, deserialised by serde_json, or `None` when the text is not JSON
/// or serde_json refuses it for any reason (the YAML path then reports the precise error).
///
/// One pass: the kind is *guessed* from the first `"kind"` key in the text, the text is
/// deserialised as that kind, and the result is only used when its own `apiVersion` and
/// `kind` fields confirm the guess.
fn json_fast_path(text: &str, buffer: &mut MemberBuffer) -> Option<(Document, Option<Prechecked>)> {
    fn typed<T: DeserializeOwned>(
        text: &str,
        header: impl FnOnce(&T) -> (&str, &str),
        kind: Kind,
    ) -> Option<T> {
        let document: T = serde_json::from_str(text).ok()?;
        let (api_version, found) = header(&document);
        (api_version == API_VERSION && found == kind.as_str()).then_some(document)
    }
    if !text
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('{')
    {
        return None;
    }
    let after_key = &text[text.find("\"kind\"")? + 6..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let name = value.strip_prefix('"')?.split('"').next()?;
    let document = match Kind::from_name(name)? {
        kind @ Kind::FederationList => {
            let hasher = foldhash::fast::RandomState::default();
            let parallel =
                crate::parallel::federation_list(text, PARSE_THREADS, &mut buffer.0, |members| {
                    Prechecked::chunk(members, &hasher)
                })
                .filter(|(d, _)| d.api_version == API_VERSION && d.kind == kind.as_str());
            return Some(match parallel {
                Some((list, chunks)) => (
                    Document::FederationList(list),
                    Some(Prechecked::new(hasher, chunks)),
                ),
                None => (
                    Document::FederationList(typed(
                        text,
                        |d: &FederationList| (&d.api_version, &d.kind),
                        kind,
                    )?),
                    None,
                ),
            });
        }
        kind @ Kind::ContactRules => Document::ContactRules(typed(
            text,
            |d: &ContactRules| (&d.api_version, &d.kind),
            kind,
        )?),
        kind @ Kind::MediaRules => Document::MediaRules(typed(
            text,
            |d: &MediaRules| (&d.api_version, &d.kind),
            kind,
        )?),
        kind @ Kind::Agencies => {
            Document::Agencies(typed(text, |d: &Agencies| (&d.api_version, &d.kind), kind)?)
        }
        kind @ Kind::TrustAnchors => Document::TrustAnchors(typed(
            text,
            |d: &TrustAnchors| (&d.api_version, &d.kind),
            kind,
        )?),
    };
    Some((document, None))
}

/// What the threads that deserialised a large federation list already found out about its
/// members, so that the document check does not go over them again: each name's hash (ASCII
/// lower case, by `hasher`, in list order, one vector per chunk) and whether every member
/// passed [`member_is_valid`] (when one did not, the check goes over them all for the errors).
pub(crate) struct Prechecked {
    hasher: foldhash::fast::RandomState,
    hashes: Vec<Vec<u64>>,
    members_valid: bool,
}

impl Prechecked {
    /// The hashes and validity of one chunk's members.
    fn chunk(
        members: &[FederationMember],
        hasher: &foldhash::fast::RandomState,
    ) -> (Vec<u64>, bool) {
        let mut valid = true;
        let hashes = members
            .iter()
            .map(|member| {
                valid &= member_is_valid(member);
                hasher.hash_one(lower_case(member.server_name.0.as_str()))
            })
            .collect();
        (hashes, valid)
    }

    fn new(hasher: foldhash::fast::RandomState, chunks: Vec<(Vec<u64>, bool)>) -> Prechecked {
        let members_valid = chunks.iter().all(|(_, valid)| *valid);
        Prechecked {
            hasher,
            hashes: chunks.into_iter().map(|(hashes, _)| hashes).collect(),
            members_valid,
        }
    }
}

/// Threads for deserialising one large document (each takes at least 1 MiB of it).
///
/// Deliberately not the number of CPUs: a list is reloaded while the process serves requests,
/// and the scheduler shares busy CPUs among runnable threads, so a reload cut into more pieces
/// than there are CPUs gets a larger share of them for the few tens of milliseconds it runs,
/// without any privilege. On an idle machine the extra threads cost their start-up (tens of
/// microseconds each); see `docs/benchmarks.md` for the figures.
const PARSE_THREADS: usize = 8;
// The duplicate check partitions names by hash bits: a power of two.
const _: () = assert!(PARSE_THREADS.is_power_of_two());

/// Below this many members per thread, a federation list's members are checked on one thread.
const MIN_MEMBERS_PER_THREAD: usize = 10_000;

pub(crate) fn sorted(mut errors: Vec<PolicyError>) -> Vec<PolicyError> {
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors
}

fn deserialize<'a, T: DeserializeOwned>(
    file: &str,
    text: &str,
    index: impl FnOnce() -> &'a PositionIndex,
) -> Result<T, PolicyError> {
    serde_norway::from_str(text).map_err(|error| serde_error(file, &error, index()))
}

/// Splits `<rule>:<len>:<value><message>` (see `units::tagged`).
fn split_tag(rest: &str) -> Option<(&str, &str, &str)> {
    let (rule, rest) = rest.split_once(':')?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let value = rest.get(..len)?;
    Some((rule, value, &rest[len..]))
}

/// Turns a `serde_norway` error into a positioned [`PolicyError`] with a rule id.
fn serde_error(file: &str, error: &serde_norway::Error, index: &PositionIndex) -> PolicyError {
    let position = error.location().map_or_else(
        || index.pos(""),
        |location| (location.line().max(1), location.column().max(1)),
    );
    let mut text = error.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }
    if let Some(at) = text.find(RULE_TAG) {
        let prefix = text[..at].trim_end_matches(": ");
        let rest = &text[at + RULE_TAG.len()..];
        if let Some((rule, value, message)) = split_tag(rest) {
            let rule = TAGGED_RULES
                .iter()
                .copied()
                .find(|known| *known == rule)
                .unwrap_or(rules::INVALID_DOCUMENT);
            let position = index.find_scalar(prefix, value).unwrap_or(position);
            let message = if prefix.is_empty() {
                message.to_owned()
            } else {
                format!("{prefix}: {message}")
            };
            return PolicyError::new(file, position, rule, message);
        }
    }
    let rule = if text.contains("unknown field") {
        rules::UNKNOWN_KEY
    } else if text.contains("missing field") {
        rules::MISSING_FIELD
    } else if text.contains("invalid type")
        || text.contains("invalid value")
        || text.contains("invalid length")
    {
        rules::WRONG_TYPE
    } else if text.contains("unknown variant") {
        rules::UNKNOWN_VALUE
    } else if text.contains("duplicate field") || text.contains("duplicate entry") {
        rules::DUPLICATE_KEY
    } else {
        rules::INVALID_DOCUMENT
    };
    let position = if rule == rules::DUPLICATE_KEY {
        duplicate_key_position(&text, index).unwrap_or(position)
    } else {
        position
    };
    PolicyError::new(file, position, rule, text)
}

/// For "servers[0]: duplicate field `class`", the position of the second `class` key.
fn duplicate_key_position(text: &str, index: &PositionIndex) -> Option<(usize, usize)> {
    let (prefix, rest) = match text.split_once(": duplicate") {
        Some((prefix, rest)) => (prefix, rest),
        None => ("", text),
    };
    let name = rest.split('`').nth(1)?;
    let path = if prefix.is_empty() || prefix == "." {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    };
    index.duplicate_key_pos(&path)
}

const TAGGED_RULES: [&str; 8] = [
    rules::BAD_TIMESTAMP,
    rules::BAD_DURATION,
    rules::BAD_SIZE,
    rules::MALFORMED_SERVER_NAME,
    rules::MALFORMED_USER_ID,
    rules::UNANCHORED_WILDCARD,
    rules::BAD_ACCOUNT_PATTERN,
    rules::BAD_MIME_PATTERN,
];

/// Whether `id` is a slug: `[a-z][a-z0-9-]*`, at most 64 characters.
pub(crate) fn is_slug(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks `ed25519:<name>` ids and unpadded base64 32-byte keys.
pub(crate) fn check_key(id: &str, key: &str) -> Result<[u8; 32], String> {
    let name = id
        .strip_prefix("ed25519:")
        .ok_or_else(|| format!("key id {id:?} must have the form \"ed25519:<name>\""))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "key id {id:?}: the name after \"ed25519:\" may only contain A-Z, a-z, 0-9 and _"
        ));
    }
    let bytes = STANDARD_NO_PAD
        .decode(key)
        .map_err(|_| format!("key {id:?} is not unpadded base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("key {id:?} is {} bytes long, expected 32", bytes.len()))
}

struct Checker<'a> {
    doc: &'a ParsedDocument,
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, rule: &'static str, message: impl Into<String>) {
        self.errors.push(self.doc.error(path, rule, message));
    }

    fn key_error(&mut self, path: &str, rule: &'static str, message: impl Into<String>) {
        self.errors.push(PolicyError::new(
            &self.doc.file,
            self.doc.positions().key_pos(path),
            rule,
            message,
        ));
    }

    /// Reports entries whose key was already seen; `what` names the entry in messages.
    /// Entries are `(key, index)`; `path` gives the node path of the entry at `index` (only
    /// computed, with its position, when there is something to report).
    fn unique<K: std::hash::Hash + Eq + std::fmt::Debug>(
        &mut self,
        entries: impl Iterator<Item = (K, usize)>,
        path: impl Fn(usize) -> String,
        rule: &'static str,
        what: &str,
    ) {
        let (lower, _) = entries.size_hint();
        let mut seen: HashMap<K, usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(lower, foldhash::fast::RandomState::default());
        for (key, index) in entries {
            if let Some(&first) = seen.get(&key) {
                let first = self.doc.line_of(&path(first));
                self.error(
                    &path(index),
                    rule,
                    format!("{what} {key:?} is listed twice (first at line {first})"),
                );
            } else {
                seen.insert(key, index);
            }
        }
    }

    fn federation_list(
        &mut self,
        list: &FederationList,
        now: Option<OffsetDateTime>,
        prechecked: Option<Prechecked>,
    ) {
        if let Some(now) = now {
            self.freshness(list, now);
        }
        let doc = self.doc;
        let servers = &list.servers[..];
        // A large list is checked in parts on scoped threads, in two rounds: part k first checks
        // the members of slice k and hashes their names (ASCII lower case: equal names hash
        // alike), then looks for duplicates among the names whose hash falls into partition k.
        // Each name is hashed once. The errors are reported in the order of a single pass.
        // When the parse threads already hashed the names and found every member valid
        // (`Prechecked`), the first round is theirs.
        let parts = if servers.len() >= 2 * MIN_MEMBERS_PER_THREAD {
            PARSE_THREADS
        } else {
            1
        };
        let per_part = servers.len().div_ceil(parts).max(1);
        let prechecked = prechecked.filter(|pre| {
            pre.members_valid && pre.hashes.iter().map(Vec::len).sum::<usize>() == servers.len()
        });
        let (hasher, checked) = match prechecked {
            Some(pre) => (
                pre.hasher,
                pre.hashes
                    .into_iter()
                    .map(|hashes| (Vec::new(), hashes))
                    .collect(),
            ),
            None => {
                let hasher = foldhash::fast::RandomState::default();
                let checked = in_parts(parts, |k| {
                    let range = slice_range(k, per_part, servers.len());
                    let mut checker = Checker {
                        doc,
                        errors: Vec::new(),
                    };
                    checker.members(range.start, &servers[range.clone()]);
                    let hashes: Vec<u64> = servers[range]
                        .iter()
                        .map(|server| hasher.hash_one(lower_case(server.server_name.0.as_str())))
                        .collect();
                    (checker.errors, hashes)
                });
                (hasher, checked)
            }
        };
        let hasher = &hasher;
        let hashes: Vec<&[u64]> = checked.iter().map(|(_, hashes)| &hashes[..]).collect();
        let found = in_parts(parts, |k| {
            duplicate_server_names(servers, &hashes, hasher, k, parts)
        });
        let mut duplicates: Vec<(u32, u32)> = found.into_iter().flatten().collect();
        duplicates.sort_unstable();
        for (index, first) in duplicates {
            let this = servers[index as usize].server_name.0.as_str();
            let first = self.doc.line_of(&format!("servers[{first}].serverName"));
            self.error(
                &format!("servers[{index}].serverName"),
                rules::DUPLICATE_SERVER,
                format!(
                    "server {:?} is listed twice (first at line {first})",
                    lower_case(this)
                ),
            );
        }
        for (mut errors, _) in checked {
            self.errors.append(&mut errors);
        }
    }

    fn freshness(&mut self, list: &FederationList, now: OffsetDateTime) {
        let issued = list.metadata.issued.0;
        let expires = issued.checked_add(list.metadata.max_age.duration());
        if issued > now + MAX_CLOCK_SKEW {
            self.error(
                "metadata.issued",
                rules::ISSUED_IN_FUTURE,
                format!(
                    "federation list is issued in the future ({}, now is {})",
                    list.metadata.issued,
                    Timestamp(now)
                ),
            );
        } else if expires.is_none_or(|expires| expires < now) {
            let expiry =
                expires.map_or_else(|| "overflow".to_owned(), |e| Timestamp(e).to_string());
            self.error(
                "metadata.issued",
                rules::EXPIRED_LIST,
                format!(
                    "federation list expired at {expiry} (issued {} + maxAge {}); now is {}",
                    list.metadata.issued,
                    list.metadata.max_age,
                    Timestamp(now)
                ),
            );
        }
    }

    /// Checks `servers`, the members from index `first` on.
    fn members(&mut self, first: usize, servers: &[FederationMember]) {
        for (i, server) in (first..).zip(servers) {
            if !is_slug(&server.organisation.id) {
                self.error(&format!("servers[{i}].organisation.id"), rules::BAD_ID, format!("organisation id {:?} must be a slug: lower-case letters, digits and '-', starting with a letter", server.organisation.id));
            }
            for (id, key) in &server.signing_keys {
                if let Err(message) = check_key(id, key) {
                    let path = format!("servers[{i}].signingKeys.{id}");
                    if message.starts_with("key id") {
                        self.key_error(&path, rules::BAD_SIGNING_KEY, message);
                    } else {
                        self.error(&path, rules::BAD_SIGNING_KEY, message);
                    }
                }
            }
            for (j, host) in server.delegated_hosts.iter().enumerate() {
                if !is_host_and_port(host) {
                    self.error(
                        &format!("servers[{i}].delegatedHosts[{j}]"),
                        rules::MALFORMED_HOST,
                        format!("delegated host {host:?} must be \"host:port\""),
                    );
                }
            }
        }
    }

    fn contact_rules(&mut self, doc: &ContactRules) {
        self.unique(
            doc.rules
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.as_str(), i)),
            |i| format!("rules[{i}].id"),
            rules::DUPLICATE_RULE,
            "rule id",
        );
        self.unique(
            doc.grants
                .iter()
                .enumerate()
                .map(|(i, g)| (g.id.as_str(), i)),
            |i| format!("grants[{i}].id"),
            rules::DUPLICATE_GRANT,
            "grant id",
        );
        let mut first_for_pair: HashMap<(ServerClass, ServerClass), &str> = HashMap::new();
        for (i, rule) in doc.rules.iter().enumerate() {
            if let Some(earlier) = first_for_pair.get(&(rule.from, rule.to)) {
                let message = format!(
                    "contact rule {:?} ({} → {}) never applies: rule {earlier:?} matches the same classes first",
                    rule.id, rule.from, rule.to
                );
                self.error(&format!("rules[{i}]"), rules::SHADOWED_RULE, message);
            } else {
                first_for_pair.insert((rule.from, rule.to), &rule.id);
            }
            if !is_slug(&rule.id) {
                self.error(&format!("rules[{i}].id"), rules::BAD_ID, format!("rule id {:?} must be a slug: lower-case letters, digits and '-', starting with a letter", rule.id));
            }
        }
        for (i, grant) in doc.grants.iter().enumerate() {
            if !is_slug(&grant.id) {
                self.error(
                    &format!("grants[{i}].id"),
                    rules::BAD_ID,
                    format!("grant id {:?} must be a slug", grant.id),
                );
            }
            if grant.not_after <= grant.not_before {
                self.error(
                    &format!("grants[{i}].notAfter"),
                    rules::BAD_GRANT_WINDOW,
                    format!(
                        "grant {:?}: notAfter ({}) must be after notBefore ({})",
                        grant.id, grant.not_after, grant.not_before
                    ),
                );
            }
        }
    }

    fn media_rules(&mut self, doc: &MediaRules) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        let lists = [("allow", &doc.mime.allow), ("block", &doc.mime.block)];
        for (list_name, list) in lists {
            for (i, pattern) in list.iter().enumerate() {
                let path = format!("mime.{list_name}[{i}]");
                let text = pattern.as_str();
                if let Some(first) = seen.get(text) {
                    let first_line = self.doc.line_of(first);
                    let message = if first.starts_with(&format!("mime.{list_name}[")) {
                        format!(
                            "MIME pattern {text:?} is listed twice in {list_name} (first at line {first_line})"
                        )
                    } else {
                        format!(
                            "MIME pattern {text:?} is both allowed (line {first_line}) and blocked"
                        )
                    };
                    self.error(&path, rules::MIME_CONFLICT, message);
                } else {
                    seen.insert(pattern.as_str(), path);
                }
            }
        }
    }

    fn agencies(&mut self, doc: &Agencies) {
        self.unique(
            doc.agencies
                .iter()
                .enumerate()
                .map(|(i, a)| (a.id.as_str(), i)),
            |i| format!("agencies[{i}].id"),
            rules::DUPLICATE_AGENCY,
            "agency id",
        );
        let mut patterns = Vec::new();
        for (i, agency) in doc.agencies.iter().enumerate() {
            if !is_slug(&agency.id) {
                self.error(&format!("agencies[{i}].id"), rules::BAD_ID, format!("agency id {:?} must be a slug: lower-case letters, digits and '-', starting with a letter", agency.id));
            }
            for (j, pattern) in agency.server_names.iter().enumerate() {
                let path = format!("agencies[{i}].serverNames[{j}]");
                if let Some((other_agency, other_path, other)) = patterns
                    .iter()
                    .find(|(_, _, other): &&(&str, String, &ServerPattern)| pattern.overlaps(other))
                {
                    let line = self.doc.line_of(other_path);
                    self.error(&path, rules::OVERLAPPING_PATTERN, format!("server pattern \"{pattern}\" of agency {:?} overlaps \"{other}\" of agency {other_agency:?} (line {line})", agency.id));
                }
                patterns.push((agency.id.as_str(), path, pattern));
            }
            for (j, account) in agency.official_accounts.iter().enumerate() {
                if !agency
                    .server_names
                    .iter()
                    .any(|pattern| pattern.matches(account.server()))
                {
                    self.error(&format!("agencies[{i}].officialAccounts[{j}]"), rules::ACCOUNT_OUTSIDE_AGENCY, format!("official account pattern \"{account}\" is on server {}, which is not one of agency {:?}'s serverNames", account.server(), agency.id));
                }
            }
        }
    }

    fn trust_anchors(&mut self, doc: &TrustAnchors) {
        if doc.threshold == 0 || doc.threshold as usize > doc.keys.len() {
            self.error(
                "threshold",
                rules::BAD_THRESHOLD,
                format!(
                    "threshold {} must be between 1 and the number of keys ({})",
                    doc.threshold,
                    doc.keys.len()
                ),
            );
        }
        self.unique(
            doc.keys.iter().enumerate().map(|(i, k)| (k.id.as_str(), i)),
            |i| format!("keys[{i}].id"),
            rules::DUPLICATE_TRUST_KEY,
            "key id",
        );
        self.unique(
            doc.keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.public_key.as_str(), i)),
            |i| format!("keys[{i}].publicKey"),
            rules::DUPLICATE_TRUST_KEY,
            "public key",
        );
        for (i, key) in doc.keys.iter().enumerate() {
            if let Err(message) = check_key(&key.id, &key.public_key) {
                let field = if message.starts_with("key id") {
                    "id"
                } else {
                    "publicKey"
                };
                self.error(
                    &format!("keys[{i}].{field}"),
                    rules::BAD_SIGNING_KEY,
                    message,
                );
            }
        }
    }
}

/// `(index, first index)` of each server whose name (ASCII case-insensitive) is listed at an
/// earlier index, among the names whose hash falls into partition `part` of `parts` (a power of
/// two). `hashes` are the names' hashes (of their lower case, by `hasher`), slice after slice in
/// list order. A table of `u32` indexes, sized for the partition, that borrows the names: a
/// 100,000-server list is checked without a map of 100,000 keys.
fn duplicate_server_names(
    servers: &[FederationMember],
    hashes: &[&[u64]],
    hasher: &foldhash::fast::RandomState,
    part: usize,
    parts: usize,
) -> Vec<(u32, u32)> {
    let name = |index: u32| servers[index as usize].server_name.0.as_str();
    let mine = || {
        hashes
            .iter()
            .flat_map(|slice| slice.iter().copied())
            .zip(0u32..)
            .filter(|&(digest, _)| partition(digest, parts) == part)
    };
    let mut seen = hashbrown::HashTable::with_capacity(mine().count());
    let mut found = Vec::new();
    for (digest, index) in mine() {
        // The name is only read for a candidate with the same hash bits: most members are
        // inserted without a look at their (cold) member record.
        if let Some(&first) = seen.find(digest, |&other| {
            name(other).eq_ignore_ascii_case(name(index))
        }) {
            found.push((index, first));
        } else {
            // Sized for the partition: the table never grows, so this rehash is not called.
            seen.insert_unique(digest, index, |&other| {
                hasher.hash_one(lower_case(name(other)))
            });
        }
    }
    found
}

/// `name` in ASCII lower case, borrowed when it already is (nearly every server name).
/// Whether [`Checker::members`] finds nothing wrong with `server` (the same predicates, no
/// error texts).
fn member_is_valid(server: &FederationMember) -> bool {
    is_slug(&server.organisation.id)
        && server
            .signing_keys
            .iter()
            .all(|(id, key)| check_key(id, key).is_ok())
        && server
            .delegated_hosts
            .iter()
            .all(|host| is_host_and_port(host))
}

/// A delegated host must be a server name with an explicit port.
fn is_host_and_port(host: &str) -> bool {
    ServerNameSpec::parse(host).is_ok_and(|name| name.0.port().is_some())
}

fn lower_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}
