//! [`PolicySet`]: several documents checked against each other ([`check_set`]) and compiled
//! into hash maps once, so the decisions are cheap and allocation free on the allow path.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher as _;

use hashbrown::HashTable;

use ruma_common::{OwnedServerName, ServerName, UserId};
use time::OffsetDateTime;

use crate::cells::LazyCells;
use crate::decision::Decision;
use crate::diag::{PolicyError, rules};
use crate::document::{Document, MAX_CLOCK_SKEW, ParsedDocument, sorted};
use crate::model::{
    Agencies, ContactAction, ContactRules, DefaultAction, FederationList, FederationMember, Grant,
    Kind, MediaRules, ServerClass,
};
use crate::parallel::{in_parts, partition, slice_range};
use crate::units::{AccountPattern, ServerPattern, Timestamp};

/// File name used for errors that concern the set as a whole.
const SET_FILE: &str = "policy set";

/// Checks a set of documents against each other: at most one document per kind, our own
/// server (when given) on the federation list, every agency server on the list with class
/// `agency`, every grant's agency defined.
pub fn check_set(docs: &[ParsedDocument], own_server: Option<&ServerName>) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut by_kind: HashMap<Kind, &ParsedDocument> = HashMap::new();
    for doc in docs {
        let kind = doc.document.kind();
        if let Some(first) = by_kind.get(&kind) {
            errors.push(doc.error(
                "kind",
                rules::DUPLICATE_KIND,
                format!(
                    "second {kind} document in the set (first in {})",
                    first.file
                ),
            ));
        } else {
            by_kind.insert(kind, doc);
        }
    }
    let federation = by_kind
        .get(&Kind::FederationList)
        .map(|doc| match &doc.document {
            Document::FederationList(list) => (*doc, list),
            _ => unreachable!("indexed by kind"),
        });
    let agencies = by_kind.get(&Kind::Agencies).map(|doc| match &doc.document {
        Document::Agencies(agencies) => (*doc, agencies),
        _ => unreachable!("indexed by kind"),
    });
    let contact = by_kind
        .get(&Kind::ContactRules)
        .map(|doc| match &doc.document {
            Document::ContactRules(contact) => (*doc, contact),
            _ => unreachable!("indexed by kind"),
        });

    if let (Some(own), Some((doc, list))) = (own_server, federation)
        && !list
            .servers
            .iter()
            .any(|server| server.server_name.0 == own)
    {
        errors.push(doc.error(
            "servers",
            rules::OWN_SERVER_NOT_LISTED,
            format!("our own server {own} is not on the federation list"),
        ));
    }
    if let Some((agencies_doc, agencies)) = agencies {
        match federation {
            None => errors.push(agencies_doc.error(
                "kind",
                rules::MISSING_DOCUMENT,
                "the Agencies document needs a FederationList in the same set",
            )),
            Some((_, list)) => {
                // Only the names agencies give exactly are looked up: index those few, not the
                // whole list (100,000 servers: a reload's worth of hashing and fresh memory).
                let wanted: HashSet<&str, foldhash::fast::RandomState> = agencies
                    .agencies
                    .iter()
                    .flat_map(|agency| &agency.server_names)
                    .filter_map(|pattern| match pattern {
                        ServerPattern::Exact(name) => Some(name.as_str()),
                        ServerPattern::Wildcard(_) => None,
                    })
                    .collect();
                let mut by_name: HashMap<&str, &FederationMember, foldhash::fast::RandomState> =
                    HashMap::with_capacity_and_hasher(wanted.len(), Default::default());
                if !wanted.is_empty() {
                    for server in &list.servers {
                        let name = server.server_name.0.as_str();
                        if wanted.contains(name) {
                            by_name.insert(name, server);
                        }
                    }
                }
                for (i, agency) in agencies.agencies.iter().enumerate() {
                    for (j, pattern) in agency.server_names.iter().enumerate() {
                        let path = format!("agencies[{i}].serverNames[{j}]");
                        let mut matched = false;
                        // Exact names are a hash lookup; only wildcards scan the list.
                        let matching: Vec<&FederationMember> = match pattern {
                            ServerPattern::Exact(name) => {
                                by_name.get(name.as_str()).copied().into_iter().collect()
                            }
                            ServerPattern::Wildcard(_) => list
                                .servers
                                .iter()
                                .filter(|server| pattern.matches(&server.server_name.0))
                                .collect(),
                        };
                        for server in matching {
                            matched = true;
                            if server.class != ServerClass::Agency {
                                errors.push(agencies_doc.error(&path, rules::AGENCY_SERVER_WRONG_CLASS, format!("server {} of agency {:?} is on the federation list with class {}, expected agency", server.server_name, agency.id, server.class)));
                            }
                        }
                        if !matched {
                            errors.push(agencies_doc.error(&path, rules::AGENCY_SERVER_NOT_LISTED, format!("server name \"{pattern}\" of agency {:?} matches no server on the federation list", agency.id)));
                        }
                    }
                }
            }
        }
    }
    if let Some((contact_doc, contact)) = contact
        && !contact.grants.is_empty()
    {
        {
            match agencies {
                None => errors.push(contact_doc.error(
                    "grants",
                    rules::MISSING_DOCUMENT,
                    "grants name agencies, but the set has no Agencies document",
                )),
                Some((_, agencies)) => {
                    for (i, grant) in contact.grants.iter().enumerate() {
                        if !agencies
                            .agencies
                            .iter()
                            .any(|agency| agency.id == grant.agency)
                        {
                            errors.push(contact_doc.error(
                                &format!("grants[{i}].agency"),
                                rules::UNKNOWN_GRANT_AGENCY,
                                format!(
                                    "grant {:?} names agency {:?}, which is not defined",
                                    grant.id, grant.agency
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    sorted(errors)
}

/// A complete, consistent policy: federation list, contact rules, media rules and agencies,
/// compiled for fast decisions.
#[derive(Debug, Clone)]
pub struct PolicySet {
    own_server: OwnedServerName,
    federation: FederationList,
    contact: ContactRules,
    media: MediaRules,
    agencies: Agencies,
    not_before: OffsetDateTime,
    expires: OffsetDateTime,
    /// Exact server name → index into `federation.servers`. The names are copied once into
    /// `member_names`, one buffer, and the tables hold spans of it: a reload of 100,000 servers
    /// makes a few allocations here (~3.5 MiB) instead of a map of 100,000 boxed keys (~11 MiB),
    /// and a lookup touches one slot and one name, as a map would. A large list's index is
    /// partitioned by hash bits (`member_parts`, a power of two, one table each) so that the
    /// tables are built at the same time on scoped threads; a lookup picks its table by the
    /// same bits.
    members: Vec<HashTable<MemberSlot>>,
    member_parts: usize,
    member_names: String,
    member_hasher: foldhash::fast::RandomState,
    /// Per member: `member:<name>` and the allow reason, formatted on the first decision for this
    /// server: a reload of a 100,000-server list must not format 200,000 strings up front.
    member_texts: LazyCells<MemberTexts>,
    /// Official account patterns by server name: (agency index, pattern).
    accounts: HashMap<Box<str>, Vec<(usize, AccountPattern)>>,
    /// Exact agency server names → agency index.
    agency_servers: HashMap<Box<str>, usize>,
    /// Wildcard agency server patterns.
    agency_wildcards: Vec<(ServerPattern, usize)>,
    /// `[from][to]` → index of the first matching contact rule.
    contact_table: [[Option<usize>; ServerClass::COUNT]; ServerClass::COUNT],
    contact_reasons: Vec<String>,
    default_reason: String,
    /// Static grants by citizen: (grant index, precomputed reason).
    grants: HashMap<Box<str>, Vec<(usize, String)>>,
    media_allowed_reason: String,
}

/// `member:<name>` and the allow reason of one member.
type MemberTexts = (Box<str>, Box<str>);

/// A member's name (`member_names[start..start + len]`) and its index in `federation.servers`.
#[derive(Debug, Clone, Copy)]
struct MemberSlot {
    start: u32,
    len: u32,
    index: u32,
}

impl MemberSlot {
    fn name(self, names: &str) -> &str {
        names
            .get(self.start as usize..(self.start + self.len) as usize)
            .unwrap_or_default()
    }
}

/// Below this many members the member index is one table, built on the calling thread.
const MIN_PARTITIONED_MEMBERS: usize = 20_000;

/// Tables of a partitioned member index (a power of two).
const MEMBER_PARTS: usize = 8;

/// The member index of `servers`: its tables, how many (1 or [`MEMBER_PARTS`]) and the names
/// buffer the slots point into. A large list is gone over in slices on scoped threads (each
/// copies its slice's names, makes their slots and hashes them), and then the tables are
/// filled, one per partition, on scoped threads: each name is hashed once, each table sized for
/// its partition up front. Between the two rounds only the slices' names are put together.
fn member_index(
    servers: &[FederationMember],
    hasher: &foldhash::fast::RandomState,
) -> (Vec<HashTable<MemberSlot>>, usize, String) {
    let parts = if servers.len() >= MIN_PARTITIONED_MEMBERS {
        MEMBER_PARTS
    } else {
        1
    };
    let per_part = servers.len().div_ceil(parts).max(1);
    // Offsets and indexes fit in u32: a document is at most MAX_DOCUMENT_BYTES (16 MiB).
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    // Per slice: its names, and its slots (offsets into those names) with their hashes.
    let slices = in_parts(parts, |k| {
        let range = slice_range(k, per_part, servers.len());
        let first = range.start;
        let slice = &servers[range];
        let mut names = String::with_capacity(
            slice
                .iter()
                .map(|server| server.server_name.0.as_str().len())
                .sum(),
        );
        let slots: Vec<(MemberSlot, u64)> = (first..)
            .zip(slice)
            .map(|(index, server)| {
                let name = server.server_name.0.as_str();
                let slot = MemberSlot {
                    start: as_u32(names.len()),
                    len: as_u32(name.len()),
                    index: as_u32(index),
                };
                names.push_str(name);
                (slot, hasher.hash_one(name))
            })
            .collect();
        (names, slots)
    });
    let mut names = String::with_capacity(slices.iter().map(|(names, _)| names.len()).sum());
    let mut bases = Vec::with_capacity(slices.len());
    for (slice_names, _) in &slices {
        bases.push(as_u32(names.len()));
        names.push_str(slice_names);
    }
    let names_ref = &names;
    let hash = |slot: &MemberSlot| hasher.hash_one(slot.name(names_ref));
    let tables = in_parts(parts, |k| {
        let mine = || {
            slices
                .iter()
                .zip(&bases)
                .flat_map(|((_, slots), &base)| {
                    slots
                        .iter()
                        .map(move |&(slot, digest)| (slot, base, digest))
                })
                .filter(|&(_, _, digest)| partition(digest, parts) == k)
        };
        let mut table = HashTable::with_capacity(mine().count());
        for (slot, base, digest) in mine() {
            let slot = MemberSlot {
                start: slot.start + base,
                ..slot
            };
            // Names are unique (the document check refuses duplicates); the table never
            // grows, so `hash` is not called.
            table.insert_unique(digest, slot, hash);
        }
        table
    });
    (tables, parts, names)
}

impl PolicySet {
    /// Builds a policy set from parsed documents. All of FederationList, ContactRules,
    /// MediaRules and Agencies must be present (TrustAnchors are ignored), consistent with
    /// each other and with `own_server`.
    pub fn new(
        docs: Vec<ParsedDocument>,
        own_server: &ServerName,
    ) -> Result<PolicySet, Vec<PolicyError>> {
        let mut errors = check_set(&docs, Some(own_server));
        let (mut federation, mut contact, mut media, mut agencies) = (None, None, None, None);
        for doc in docs {
            match doc.document {
                Document::FederationList(list) => federation = federation.or(Some(list)),
                Document::ContactRules(rules) => contact = contact.or(Some(rules)),
                Document::MediaRules(rules) => media = media.or(Some(rules)),
                Document::Agencies(list) => agencies = agencies.or(Some(list)),
                Document::TrustAnchors(_) => {}
            }
        }
        let missing = |kind: Kind| {
            PolicyError::new(
                SET_FILE,
                (1, 1),
                rules::MISSING_DOCUMENT,
                format!("the policy set has no {kind} document"),
            )
        };
        if federation.is_none() {
            errors.push(missing(Kind::FederationList));
        }
        if contact.is_none() {
            errors.push(missing(Kind::ContactRules));
        }
        if media.is_none() {
            errors.push(missing(Kind::MediaRules));
        }
        if agencies.is_none() {
            errors.push(missing(Kind::Agencies));
        }
        match (federation, contact, media, agencies) {
            (Some(federation), Some(contact), Some(media), Some(agencies)) if errors.is_empty() => {
                Ok(PolicySet::compile(
                    own_server.to_owned(),
                    federation,
                    contact,
                    media,
                    agencies,
                ))
            }
            _ => Err(errors),
        }
    }

    fn compile(
        own_server: OwnedServerName,
        federation: FederationList,
        contact: ContactRules,
        media: MediaRules,
        agencies: Agencies,
    ) -> PolicySet {
        let issued = federation.metadata.issued.0;
        let expires = issued
            .checked_add(federation.metadata.max_age.duration())
            .unwrap_or(issued);
        let member_hasher = foldhash::fast::RandomState::default();
        let (members, member_parts, member_names) =
            member_index(&federation.servers, &member_hasher);
        let member_texts = LazyCells::new(federation.servers.len());
        let mut accounts: HashMap<Box<str>, Vec<(usize, AccountPattern)>> = HashMap::new();
        let mut agency_servers = HashMap::new();
        let mut agency_wildcards = Vec::new();
        for (index, agency) in agencies.agencies.iter().enumerate() {
            for pattern in &agency.official_accounts {
                accounts
                    .entry(pattern.server().as_str().into())
                    .or_default()
                    .push((index, pattern.clone()));
            }
            for pattern in &agency.server_names {
                match pattern {
                    ServerPattern::Exact(name) => {
                        agency_servers.insert(name.as_str().into(), index);
                    }
                    ServerPattern::Wildcard(_) => agency_wildcards.push((pattern.clone(), index)),
                }
            }
        }
        let mut contact_table = [[None; ServerClass::COUNT]; ServerClass::COUNT];
        for (index, rule) in contact.rules.iter().enumerate() {
            let cell = &mut contact_table[rule.from.index()][rule.to.index()];
            if cell.is_none() {
                *cell = Some(index);
            }
        }
        let contact_reasons = contact
            .rules
            .iter()
            .map(|rule| match &rule.reason {
                Some(reason) => reason.clone(),
                None => format!(
                    "contact rule {:?}: {} → {} is {}",
                    rule.id, rule.from, rule.to, rule.action
                ),
            })
            .collect();
        let default_reason = format!(
            "no contact rule matches; the default is {}",
            if contact.default == DefaultAction::Allow {
                "allow"
            } else {
                "deny"
            }
        );
        let mut grants: HashMap<Box<str>, Vec<(usize, String)>> = HashMap::new();
        for (index, grant) in contact.grants.iter().enumerate() {
            let reason = grant_reason(grant);
            grants
                .entry(grant.citizen.0.as_str().into())
                .or_default()
                .push((index, reason));
        }
        let media_allowed_reason = format!(
            "size and type are within media rules {:?} version {}",
            media.metadata.name, media.metadata.version
        );
        PolicySet {
            own_server,
            not_before: issued - MAX_CLOCK_SKEW,
            expires,
            federation,
            contact,
            media,
            agencies,
            members,
            member_parts,
            member_names,
            member_hasher,
            member_texts,
            accounts,
            agency_servers,
            agency_wildcards,
            contact_table,
            contact_reasons,
            default_reason,
            grants,
            media_allowed_reason,
        }
    }

    /// The member of the federation list named exactly `server_name`, with its index in
    /// `federation().servers`. A hash lookup.
    pub fn member(&self, server_name: &str) -> Option<(usize, &FederationMember)> {
        let servers = &self.federation.servers;
        let digest = self.member_hasher.hash_one(server_name);
        let slot = self.members[partition(digest, self.member_parts)]
            .find(digest, |slot| slot.name(&self.member_names) == server_name)?;
        let index = slot.index as usize;
        Some((index, &servers[index]))
    }

    /// Our own server name.
    pub fn own_server(&self) -> &ServerName {
        &self.own_server
    }

    /// The federation list.
    pub fn federation(&self) -> &FederationList {
        &self.federation
    }

    /// The contact rules.
    pub fn contact(&self) -> &ContactRules {
        &self.contact
    }

    /// The media rules.
    pub fn media(&self) -> &MediaRules {
        &self.media
    }

    /// The agencies.
    pub fn agencies(&self) -> &Agencies {
        &self.agencies
    }

    /// When the federation list expires (`issued + maxAge`).
    pub fn expires(&self) -> OffsetDateTime {
        self.expires
    }

    fn list_not_current(&self, now: OffsetDateTime) -> Option<Decision<'_>> {
        if now > self.expires {
            return Some(Decision::deny(
                "federation-list-expired",
                format!(
                    "federation list version {} expired at {}; all federation is refused until a new list is loaded",
                    self.federation.metadata.version,
                    Timestamp(self.expires)
                ),
            ));
        }
        if now < self.not_before {
            return Some(Decision::deny(
                "federation-list-not-yet-valid",
                format!(
                    "federation list version {} is issued in the future ({})",
                    self.federation.metadata.version, self.federation.metadata.issued
                ),
            ));
        }
        None
    }

    /// May `origin` send federation traffic to `destination`?
    pub fn may_federate(
        &self,
        origin: &ServerName,
        destination: &ServerName,
        now: OffsetDateTime,
    ) -> Decision<'_> {
        if let Some(deny) = self.list_not_current(now) {
            return deny;
        }
        if destination != self.own_server {
            return Decision::deny(
                "destination-not-local",
                format!(
                    "destination {destination} is not this server ({})",
                    self.own_server
                ),
            );
        }
        match self.member(origin.as_str()) {
            Some((index, server)) => {
                let (rule, reason) = self.member_texts.cell(index).get_or_init(|| {
                    let list = &self.federation.metadata;
                    (
                        format!("member:{}", server.server_name).into(),
                        format!(
                            "{} ({}, class {}) is on federation list {:?} version {}",
                            server.server_name,
                            server.organisation.display_name,
                            server.class,
                            list.name,
                            list.version
                        )
                        .into(),
                    )
                });
                Decision::allow(&**rule, &**reason)
            }
            None => Decision::deny(
                "origin-not-listed",
                format!("origin {origin} is not on the federation list"),
            ),
        }
    }

    /// The class of `user` and its agency (index into `agencies`), if its server is listed.
    fn classify(&self, user: &UserId) -> Option<(ServerClass, Option<usize>)> {
        let server = user.server_name();
        if let Some(patterns) = self.accounts.get(server.as_str())
            && let Some((agency, _)) = patterns.iter().find(|(_, pattern)| pattern.matches(user))
        {
            return Some((ServerClass::Agency, Some(*agency)));
        }
        let (_, member) = self.member(server.as_str())?;
        let agency = self
            .agency_servers
            .get(server.as_str())
            .copied()
            .or_else(|| {
                self.agency_wildcards
                    .iter()
                    .find(|(pattern, _)| pattern.matches(server))
                    .map(|(_, agency)| *agency)
            });
        Some((member.class, agency))
    }

    /// The agency id of `user` (official account or agency server), if any.
    pub fn agency_of(&self, user: &UserId) -> Option<&str> {
        let (_, agency) = self.classify(user)?;
        agency.map(|index| self.agencies.agencies[index].id.as_str())
    }

    /// The class of `user`: `agency` for official accounts, otherwise its server's class.
    pub fn class_of(&self, user: &UserId) -> Option<ServerClass> {
        self.classify(user).map(|(class, _)| class)
    }

    /// May `inviter` initiate contact with (invite) `invitee`? `runtime_grants` are grants
    /// issued at run time in addition to the static ones.
    pub fn may_invite(
        &self,
        inviter: &UserId,
        invitee: &UserId,
        now: OffsetDateTime,
        runtime_grants: &[Grant],
    ) -> Decision<'_> {
        if let Some(deny) = self.list_not_current(now) {
            return deny;
        }
        let Some((from, from_agency)) = self.classify(inviter) else {
            return Decision::deny(
                "inviter-not-listed",
                format!("the server of inviter {inviter} is not on the federation list"),
            );
        };
        let Some((to, to_agency)) = self.classify(invitee) else {
            return Decision::deny(
                "invitee-not-listed",
                format!("the server of invitee {invitee} is not on the federation list"),
            );
        };
        let Some(index) = self.contact_table[from.index()][to.index()] else {
            return match self.contact.default {
                DefaultAction::Allow => {
                    Decision::allow("contact-default", self.default_reason.as_str())
                }
                DefaultAction::Deny => {
                    Decision::deny("contact-default", self.default_reason.as_str())
                }
            };
        };
        let rule = &self.contact.rules[index];
        let reason = self.contact_reasons[index].as_str();
        match rule.action {
            ContactAction::Allow => Decision::allow(rule.id.as_str(), reason),
            ContactAction::Deny => Decision::deny(rule.id.as_str(), reason),
            ContactAction::RequireGrant => {
                let (citizen, agency) = if from == ServerClass::Citizen {
                    (inviter, to_agency)
                } else {
                    (invitee, from_agency)
                };
                let Some(agency) = agency else {
                    return Decision::deny(
                        rule.id.as_str(),
                        format!(
                            "{reason}; neither party belongs to a known agency, so no grant can apply"
                        ),
                    );
                };
                let agency_id = self.agencies.agencies[agency].id.as_str();
                let valid = |grant: &Grant| {
                    grant.agency == agency_id
                        && grant.citizen.0 == citizen
                        && grant.not_before.0 <= now
                        && now < grant.not_after.0
                };
                if let Some(grants) = self.grants.get(citizen.as_str())
                    && let Some((_, reason)) = grants
                        .iter()
                        .find(|(index, _)| valid(&self.contact.grants[*index]))
                {
                    return Decision::allow(rule.id.as_str(), reason.as_str());
                }
                if let Some(grant) = runtime_grants.iter().find(|grant| valid(grant)) {
                    return Decision::allow(rule.id.as_str(), Cow::Owned(grant_reason(grant)));
                }
                Decision::deny(
                    rule.id.as_str(),
                    format!("{reason}; no valid grant binds {citizen} to agency {agency_id:?}"),
                )
            }
        }
    }

    /// May `creator` create a room inviting `invitees`? Applies `roomCreation` limits, then
    /// [`PolicySet::may_invite`] for each invitee.
    pub fn may_create_room(
        &self,
        creator: &UserId,
        invitees: &[&UserId],
        now: OffsetDateTime,
        runtime_grants: &[Grant],
    ) -> Decision<'_> {
        let max = self.contact.room_creation.max_citizen_invitees;
        let citizens = invitees
            .iter()
            .filter(|user| self.class_of(user) == Some(ServerClass::Citizen))
            .count();
        if citizens > max as usize {
            return Decision::deny(
                "room-too-many-citizens",
                format!(
                    "the room would invite {citizens} citizens; at most {max} are allowed per room"
                ),
            );
        }
        for invitee in invitees {
            let decision = self.may_invite(creator, invitee, now, runtime_grants);
            if !decision.is_allowed() {
                return decision;
            }
        }
        Decision::allow(
            "room-creation",
            "every invitee may be contacted and the citizen limit is respected",
        )
    }

    /// May an upload of `declared_size` bytes with the sniffed MIME type `sniffed_mime` be
    /// stored?
    pub fn check_upload(&self, declared_size: u64, sniffed_mime: &str) -> Decision<'_> {
        let max = &self.media.max_upload_size;
        if declared_size > max.bytes() {
            return Decision::deny(
                "media-too-large",
                format!(
                    "upload of {declared_size} bytes exceeds the limit of {max} ({} bytes)",
                    max.bytes()
                ),
            );
        }
        if let Some(pattern) = self
            .media
            .mime
            .block
            .iter()
            .find(|pattern| pattern.matches(sniffed_mime))
        {
            return Decision::deny(
                "media-type-blocked",
                format!("content type {sniffed_mime:?} is blocked by pattern \"{pattern}\""),
            );
        }
        if !self.media.mime.allow.is_empty()
            && !self
                .media
                .mime
                .allow
                .iter()
                .any(|pattern| pattern.matches(sniffed_mime))
        {
            return Decision::deny(
                "media-type-not-allowed",
                format!("content type {sniffed_mime:?} is not on the allow list"),
            );
        }
        Decision::allow("media-allowed", self.media_allowed_reason.as_str())
    }

    /// What to do with an upload while the malware scanner is unavailable.
    pub fn scanner_unavailable(&self) -> Decision<'_> {
        match self.media.scanner_unavailable {
            crate::model::ScannerUnavailable::Reject => Decision::deny(
                "scanner-unavailable",
                "the malware scanner is unavailable and media rules fail closed",
            ),
            crate::model::ScannerUnavailable::Allow => Decision::allow(
                "scanner-unavailable",
                "the malware scanner is unavailable and media rules accept unscanned uploads",
            ),
        }
    }
}

fn grant_reason(grant: &Grant) -> String {
    format!(
        "grant {:?} lets {} contact agency {:?} for service request {:?} until {}",
        grant.id, grant.citizen, grant.agency, grant.service_request, grant.not_after
    )
}
