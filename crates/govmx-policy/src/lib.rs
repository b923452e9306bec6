//! govmx policy model, signed policy bundles and the pure decision engine.
//!
//! A policy bundle is a directory of YAML documents, one kind per file
//! ([`FederationList`], [`ContactRules`], [`MediaRules`], [`Agencies`], plus the pinned
//! [`TrustAnchors`]). Documents are parsed strictly by [`parse_document`]; every problem is a
//! [`PolicyError`] carrying file, line, column and a stable rule id (see [`rules`]).
//! Several documents form a [`PolicySet`], which checks cross-document consistency and
//! compiles hash maps once so the decisions ([`PolicySet::may_federate`],
//! [`PolicySet::may_invite`], [`PolicySet::may_create_room`], [`PolicySet::check_upload`])
//! are cheap and allocation free on the allow path. [`bundle`] signs and verifies bundles
//! (Ed25519 over the canonical JSON of a SHA-256 manifest), [`diff`] reports changes between
//! two versions for a reviewer and [`schema`] generates JSON Schemas from the types.
//!
//! **Architecture invariant**: this crate does no I/O, reads no environment and no clock;
//! callers hand in bytes and `now`.

mod cells;
mod decision;
mod diag;
mod document;
mod member_json;
mod model;
mod parallel;
mod position;
mod set;
mod units;

pub mod bundle;
pub mod diff;
pub mod generate;
pub mod schema;

/// The hand-written reader of one federation member in JSON syntax that a large list's
/// parallel parse uses, for the differential fuzz target: whenever it answers, serde must
/// answer the same (member and end offset). Not an API.
#[doc(hidden)]
pub fn read_json_member(text: &str) -> Option<(FederationMember, usize)> {
    member_json::member(text, 0)
}

pub use cells::{CELLS_PER_PAGE, LazyCells};
pub use decision::{Decision, Verdict};
pub use diag::{PolicyError, rules};
pub use document::{
    Document, MAX_CLOCK_SKEW, MemberBuffer, ParsedDocument, parse_document,
    parse_document_buffered, parse_document_shared,
};
pub use model::{
    API_VERSION, Agencies, Agency, ContactAction, ContactRule, ContactRules, DefaultAction,
    FederationList, FederationListMetadata, FederationMember, Grant, Kind, MediaRules, Metadata,
    MimeRules, Organisation, RemoteMedia, RoomCreation, ScannerUnavailable, ServerClass,
    TrustAnchors, TrustKey,
};
pub use set::{PolicySet, check_set};
pub use units::{
    AccountPattern, ByteSize, DurationSpec, MimePattern, ServerNameSpec, ServerPattern, Timestamp,
    UserIdSpec,
};

#[cfg(test)]
mod tests;
