//! The policy document types, as written in YAML (camelCase keys, unknown keys rejected).
//!
//! Values that need validation use the types of [`crate::units`], so a document that
//! deserialised is well-formed field by field; cross-field rules live in `document.rs`.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{
    AccountPattern, ByteSize, DurationSpec, MimePattern, ServerNameSpec, ServerPattern, Timestamp,
    UserIdSpec,
};

/// The only supported `apiVersion`.
pub const API_VERSION: &str = "govmx.de/v1";

/// The document kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`FederationList`].
    FederationList,
    /// [`ContactRules`].
    ContactRules,
    /// [`MediaRules`].
    MediaRules,
    /// [`Agencies`].
    Agencies,
    /// [`TrustAnchors`].
    TrustAnchors,
}

impl Kind {
    /// All kinds, in the order the schema files are written.
    pub const ALL: [Kind; 5] = [
        Kind::FederationList,
        Kind::ContactRules,
        Kind::MediaRules,
        Kind::Agencies,
        Kind::TrustAnchors,
    ];

    /// The `kind:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FederationList => "FederationList",
            Kind::ContactRules => "ContactRules",
            Kind::MediaRules => "MediaRules",
            Kind::Agencies => "Agencies",
            Kind::TrustAnchors => "TrustAnchors",
        }
    }

    /// Parses a `kind:` string.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata` of every document but the federation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Human-readable name of the document.
    pub name: String,
    /// Monotonically increasing version; reviewers compare it in `govmx policy diff`.
    pub version: u64,
    /// When the document was issued (RFC 3339).
    pub issued: Timestamp,
}

/// `metadata` of a federation list: also carries `maxAge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FederationListMetadata {
    /// Human-readable name of the list.
    pub name: String,
    /// Monotonically increasing version.
    pub version: u64,
    /// When the list was issued (RFC 3339).
    pub issued: Timestamp,
    /// How long after `issued` the list stays valid (`30d`, `12h`); an expired list denies all
    /// federation (fail closed).
    pub max_age: DurationSpec,
}

/// The closed federation: which homeservers may talk to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FederationList {
    /// Always `govmx.de/v1`.
    pub api_version: String,
    /// Always `FederationList`.
    pub kind: String,
    /// Name, version, issue time and maximum age.
    pub metadata: FederationListMetadata,
    /// The member servers.
    pub servers: Vec<FederationMember>,
}

/// One homeserver on the federation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FederationMember {
    /// The Matrix server name.
    pub server_name: ServerNameSpec,
    /// The organisation operating the server.
    pub organisation: Organisation,
    /// What kind of server this is.
    pub class: ServerClass,
    /// Pinned federation signing keys: key id (`ed25519:abc`) → unpadded base64 public key.
    #[serde(
        default,
        deserialize_with = "crate::units::unique_string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub signing_keys: BTreeMap<String, String>,
    /// The `host:port` endpoints that actually serve federation for this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegated_hosts: Vec<String>,
}

/// The organisation operating a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Organisation {
    /// Stable identifier (slug).
    pub id: String,
    /// Name shown to reviewers.
    pub display_name: String,
}

/// The class of a server or user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ServerClass {
    /// A public agency (Behörde).
    Agency,
    /// A homeserver for citizens.
    Citizen,
    /// Infrastructure operated by the Land IT (bridges, bots, monitoring).
    Infrastructure,
}

impl ServerClass {
    /// Number of classes (size of the compiled contact table).
    pub(crate) const COUNT: usize = 3;

    pub(crate) fn index(self) -> usize {
        match self {
            ServerClass::Agency => 0,
            ServerClass::Citizen => 1,
            ServerClass::Infrastructure => 2,
        }
    }

    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerClass::Agency => "agency",
            ServerClass::Citizen => "citizen",
            ServerClass::Infrastructure => "infrastructure",
        }
    }
}

impl fmt::Display for ServerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may initiate contact with whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContactRules {
    /// Always `govmx.de/v1`.
    pub api_version: String,
    /// Always `ContactRules`.
    pub kind: String,
    /// Name, version and issue time.
    pub metadata: Metadata,
    /// Verdict when no rule matches.
    pub default: DefaultAction,
    /// Rules, first match wins.
    pub rules: Vec<ContactRule>,
    /// Limits applied when a room is created.
    pub room_creation: RoomCreation,
    /// Static, time-boxed grants (more arrive at run time).
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// `default:` of the contact rules: the verdict when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Allow when no rule matches.
    Allow,
    /// Deny when no rule matches (recommended).
    Deny,
}

/// One contact rule: the class of the inviter (`from`) and of the invitee (`to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContactRule {
    /// Stable rule id, reported in decisions.
    pub id: String,
    /// Class of the user initiating contact.
    pub from: ServerClass,
    /// Class of the user being contacted.
    pub to: ServerClass,
    /// What happens.
    pub action: ContactAction,
    /// Human-readable reason, reported in decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The action of a contact rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ContactAction {
    /// Contact is allowed.
    Allow,
    /// Contact is denied.
    Deny,
    /// Allowed only with a valid grant binding the citizen to the agency.
    RequireGrant,
}

impl fmt::Display for ContactAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContactAction::Allow => "allow",
            ContactAction::Deny => "deny",
            ContactAction::RequireGrant => "requireGrant",
        })
    }
}

/// Limits for new rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoomCreation {
    /// A room created with more citizen invitees than this is refused.
    pub max_citizen_invitees: u32,
}

/// A time-boxed permission for one citizen to contact one agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Grant {
    /// Stable grant id.
    pub id: String,
    /// The agency id (see the Agencies document).
    pub agency: String,
    /// The citizen's Matrix user ID.
    pub citizen: UserIdSpec,
    /// The service request (Vorgang) the grant belongs to.
    pub service_request: String,
    /// Start of validity (inclusive).
    pub not_before: Timestamp,
    /// End of validity (exclusive).
    pub not_after: Timestamp,
}

/// Upload and remote media limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MediaRules {
    /// Always `govmx.de/v1`.
    pub api_version: String,
    /// Always `MediaRules`.
    pub kind: String,
    /// Name, version and issue time.
    pub metadata: Metadata,
    /// Largest accepted upload (`50MiB`).
    pub max_upload_size: ByteSize,
    /// Allowed and blocked MIME types (of the sniffed content, not the declared type).
    pub mime: MimeRules,
    /// What to do when the malware scanner is unavailable.
    #[serde(default)]
    pub scanner_unavailable: ScannerUnavailable,
    /// Remote media handling.
    #[serde(default)]
    pub remote_media: RemoteMedia,
}

/// MIME allow and block lists; block wins, and a non-empty allow list denies everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MimeRules {
    /// Allowed patterns.
    #[serde(default)]
    pub allow: Vec<MimePattern>,
    /// Blocked patterns.
    #[serde(default)]
    pub block: Vec<MimePattern>,
}

/// `scannerUnavailable:` of the media rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScannerUnavailable {
    /// Refuse uploads while the scanner is down (fail closed, the default).
    #[default]
    Reject,
    /// Accept uploads unscanned.
    Allow,
}

/// Remote media settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteMedia {
    /// Scan media fetched from other servers as well.
    pub scan: bool,
}

impl Default for RemoteMedia {
    fn default() -> RemoteMedia {
        RemoteMedia { scan: true }
    }
}

/// The agencies of the network and their servers and official accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Agencies {
    /// Always `govmx.de/v1`.
    pub api_version: String,
    /// Always `Agencies`.
    pub kind: String,
    /// Name, version and issue time.
    pub metadata: Metadata,
    /// The agencies.
    pub agencies: Vec<Agency>,
}

/// One agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Agency {
    /// Stable id (slug), referenced by grants.
    pub id: String,
    /// Name shown to reviewers and users.
    pub name: String,
    /// The agency's homeservers: exact names or `*.example.de`.
    pub server_names: Vec<ServerPattern>,
    /// Official accounts: user ID patterns, `*` only in the localpart.
    #[serde(default)]
    pub official_accounts: Vec<AccountPattern>,
}

/// The pinned keys that must sign a policy bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustAnchors {
    /// Always `govmx.de/v1`.
    pub api_version: String,
    /// Always `TrustAnchors`.
    pub kind: String,
    /// Name, version and issue time.
    pub metadata: Metadata,
    /// How many distinct pinned keys must sign.
    pub threshold: u32,
    /// The pinned keys.
    pub keys: Vec<TrustKey>,
}

/// One pinned signer key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustKey {
    /// Key id, `ed25519:<name>`.
    pub id: String,
    /// Unpadded base64 Ed25519 public key (32 bytes).
    pub public_key: String,
    /// Who holds the secret key.
    pub owner: String,
}
