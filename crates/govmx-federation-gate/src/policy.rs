//! The one module that touches `govmx-policy`: verifying a signed bundle and asking it.
//!
//! Everything else in the gate sees only [`PolicyList`], [`ServerEntry`], [`Decision`],
//! [`Verdict`] and [`PolicyError`], so a change in `govmx-policy`'s API is a change in this file.
//!
//! A bundle is what `govmx policy sign` signs: the top-level `*.yaml`/`*.yml` files of a
//! directory ([`is_bundle_file`]) and `SIGNATURES.json`. [`verify_bundle`] checks the signatures
//! against the pinned TrustAnchors document (threshold of distinct signers,
//! `govmx_policy::bundle::verify`), parses every document and builds a `PolicySet` for our own
//! server. Decisions come from `PolicySet::may_federate`; the gate adds two rules of its own:
//! `gate.origin.invalid` (not a server name) and `gate.origin.self` (a peer claiming to be us).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::VerifyingKey;
pub use govmx_policy::MemberBuffer;
use govmx_policy::bundle;
pub use govmx_policy::bundle::SIGNATURES_FILE;
use govmx_policy::{Document, LazyCells, ParsedDocument, PolicySet, parse_document};
use ruma_common::ServerName;
use serde::Serialize;
use time::OffsetDateTime;

/// Whether verdict allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// A policy decision: verdict, the rule that decided it and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Stable rule id (for metrics, audit log and error messages).
    pub rule: String,
    /// Why, in one sentence.
    pub reason: String,
}

impl Decision {
    /// Whether the verdict is [`Verdict::Allow`].
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    fn from_policy(decision: govmx_policy::Decision<'_>) -> Decision {
        Decision {
            verdict: match decision.verdict {
                govmx_policy::Verdict::Allow => Verdict::Allow,
                govmx_policy::Verdict::Deny => Verdict::Deny,
            },
            rule: decision.rule.into_owned(),
            reason: decision.reason.into_owned(),
        }
    }
}

fn deny(rule: &str, reason: String) -> Decision {
    Decision {
        verdict: Verdict::Deny,
        rule: rule.to_owned(),
        reason,
    }
}

/// Why a bundle was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The trust file is not a valid TrustAnchors document.
    #[error("trust anchors: {0}")]
    Trust(String),
    /// Signature, threshold or manifest check failed.
    #[error("bundle verification failed: {0}")]
    Verify(String),
    /// Documents did not parse or are inconsistent (each problem with file:line:column).
    #[error("policy documents rejected: {0}")]
    Documents(String),
}

/// A signing key pinned for a listed server: key id and public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// The public key.
    pub key: VerifyingKey,
}

/// One listed server, as the gate sees it: a view into the verified list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerEntry<'a> {
    /// The Matrix server name.
    pub server_name: &'a str,
    /// The peer class (`agency`, `citizen`, `infrastructure`), used as a metrics label.
    pub class: &'static str,
    /// Federation signing keys pinned in the list (decoded on first use).
    pub signing_keys: &'a [PinnedKey],
    /// Hosts (`host` or `host:port`) that federation traffic for this server goes to.
    pub delegated_hosts: &'a [String],
}

/// A verified policy set, seen from our own server.
///
/// Built for fast reloads of large lists: server lookups go through the policy set's own
/// name index; the gate adds only what it needs beyond it, and nothing per server up front.
#[derive(Debug)]
pub struct PolicyList {
    set: PolicySet,
    version: u64,
    /// Pinned keys of member `i`, decoded (base64, Ed25519 point) on the first request that
    /// needs them.
    pinned: LazyCells<PinnedCell>,
    /// `(lower-case host, port)` of every delegated host → member index.
    delegated: HashMap<(String, u16), usize>,
    /// Lower-case name → member index, only for names written with upper-case letters
    /// (host names compare case-insensitively on the CONNECT path).
    mixed_case: HashMap<String, usize>,
}

/// The files of a bundle directory: file name to content (shared buffers: the parsed documents
/// and the list in use keep references, not copies).
pub type BundleFiles = BTreeMap<String, bytes::Bytes>;

/// Whether a top-level file of the bundle directory belongs to the bundle (what
/// `govmx policy sign` covers, plus the signature file).
pub fn is_bundle_file(name: &str) -> bool {
    name == SIGNATURES_FILE || name.ends_with(".yaml") || name.ends_with(".yml")
}

/// The file names a `SIGNATURES.json` manifest lists (what a bundle served over HTTPS
/// consists of). Refuses names that are not plain bundle file names (no paths, no dot files).
pub fn manifest_file_names(signatures: &[u8]) -> Result<Vec<String>, String> {
    let file = govmx_policy::bundle::SignatureFile::parse(signatures)
        .map_err(|e| format!("{SIGNATURES_FILE}: {e}"))?;
    let names: Vec<String> = file.manifest.files.keys().cloned().collect();
    for name in &names {
        if name.starts_with('.')
            || name.contains(['/', '\\', '?', '#', '%'])
            || !is_bundle_file(name)
            || name == SIGNATURES_FILE
        {
            return Err(format!(
                "{SIGNATURES_FILE}: manifest lists {name:?}, which is not a bundle file name"
            ));
        }
    }
    Ok(names)
}

/// Verifies a bundle (given as its files) against the trust anchors and builds the policy set
/// for `own_server`. Pure: no I/O.
pub fn verify_bundle(
    files: &BundleFiles,
    trust: &[u8],
    own_server: &str,
    now: SystemTime,
) -> Result<PolicyList, PolicyError> {
    verify_bundle_buffered(files, trust, own_server, now, &mut MemberBuffer::default())
}

/// [`verify_bundle`] that parses a large list's members into `members` (see
/// [`govmx_policy::parse_document_buffered`]).
pub fn verify_bundle_buffered(
    files: &BundleFiles,
    trust: &[u8],
    own_server: &str,
    now: SystemTime,
    members: &mut MemberBuffer,
) -> Result<PolicyList, PolicyError> {
    let now = OffsetDateTime::from(now);
    let trust = match parse_document("trust anchors", trust, None) {
        Ok(ParsedDocument {
            document: Document::TrustAnchors(trust),
            ..
        }) => trust,
        Ok(other) => {
            return Err(PolicyError::Trust(format!(
                "expected a TrustAnchors document, found {}",
                other.document.kind()
            )));
        }
        Err(errors) => return Err(PolicyError::Trust(join(&errors))),
    };
    let signatures = files
        .get(SIGNATURES_FILE)
        .ok_or_else(|| PolicyError::Verify(format!("{SIGNATURES_FILE} is missing")))?;
    let contents: Vec<(&str, &[u8])> = files
        .iter()
        .filter(|(name, _)| name.as_str() != SIGNATURES_FILE)
        .map(|(name, bytes)| (name.as_str(), &bytes[..]))
        .collect();
    let own = <&ServerName>::try_from(own_server)
        .map_err(|e| PolicyError::Documents(format!("own server name {own_server:?}: {e}")))?;
    // The hashes (SHA-256 of ~14 MB for a 100,000-server list) are computed while the
    // documents are parsed. Nothing parsed is used unless the signatures verify, and the
    // verification error wins over any parse error. Parsing before verifying exposes no new
    // parser: the same serde_json reads unauthenticated transactions from the network, and the
    // documents are size-bounded.
    // Without a thread (the OS refused one), the hashes are computed after the parse.
    let verify = || {
        bundle::verify(signatures, &contents, &trust)
            .map_err(|e| PolicyError::Verify(e.to_string()))
    };
    let (verified, parsed) = std::thread::scope(|scope| {
        let hashing = std::thread::Builder::new().spawn_scoped(scope, verify);
        let parsed = parse_documents(files, now, members);
        let verified = match hashing {
            Ok(hashing) => hashing.join().unwrap_or_else(|_| {
                Err(PolicyError::Verify(
                    "signature verification panicked".to_owned(),
                ))
            }),
            Err(_) => verify(),
        };
        (verified, parsed)
    });
    let verified = verified?;
    let docs = parsed?;
    let set = PolicySet::new(docs, own).map_err(|errors| PolicyError::Documents(join(&errors)))?;
    let (delegated, mixed_case) = gate_indexes(&set.federation().servers);
    Ok(PolicyList {
        pinned: LazyCells::new(set.federation().servers.len()),
        set,
        version: verified.bundle_version,
        delegated,
        mixed_case,
    })
}

/// Below this many servers the gate's own indexes are built on the calling thread.
const MIN_PARALLEL_INDEX: usize = 20_000;

/// Slices of a large list indexed at the same time (more runnable threads: a larger share of
/// busy CPUs for a reload under load, as in `govmx_policy`).
const INDEX_THREADS: usize = 8;

type DelegatedIndex = HashMap<(String, u16), usize>;
type MixedCaseIndex = HashMap<String, usize>;

/// What the gate indexes beyond the policy set: the delegated hosts and the names with
/// upper-case letters. A large list is gone over in slices on scoped threads; the slices'
/// findings are merged in list order, so the first member naming a delegated host keeps it.
fn gate_indexes(servers: &[govmx_policy::FederationMember]) -> (DelegatedIndex, MixedCaseIndex) {
    type Found = (Vec<((String, u16), usize)>, Vec<(String, usize)>);
    let slice = |first: usize, members: &[govmx_policy::FederationMember]| -> Found {
        let mut found: Found = (Vec::new(), Vec::new());
        for (index, member) in (first..).zip(members) {
            for host in &member.delegated_hosts {
                let (host, port) = split_host_port(host);
                found.0.push(((host, port.unwrap_or(8448)), index));
            }
            let name = member.server_name.as_server_name().as_str();
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                found.1.push((name.to_ascii_lowercase(), index));
            }
        }
        found
    };
    let slices: Vec<Found> = if servers.len() < MIN_PARALLEL_INDEX {
        vec![slice(0, servers)]
    } else {
        let per_slice = servers.len().div_ceil(INDEX_THREADS);
        std::thread::scope(|scope| {
            let spawned: Vec<_> = servers
                .chunks(per_slice)
                .enumerate()
                .map(|(k, members)| {
                    let first = k * per_slice;
                    let thread = std::thread::Builder::new()
                        .spawn_scoped(scope, move || slice(first, members));
                    (first, members, thread)
                })
                .collect();
            spawned
                .into_iter()
                .map(|(first, members, thread)| match thread {
                    Ok(thread) => thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    // A thread the OS refuses is no error: that slice is gone over here.
                    Err(_) => slice(first, members),
                })
                .collect()
        })
    };
    let mut delegated = HashMap::new();
    let mut mixed_case = HashMap::new();
    for (hosts, names) in slices {
        for (key, index) in hosts {
            delegated.entry(key).or_insert(index);
        }
        mixed_case.extend(names);
    }
    (delegated, mixed_case)
}

/// The decoded pinned keys of one member, once a request needed them.
type PinnedCell = Vec<PinnedKey>;

/// Parses and checks every document of the bundle (all but the signature file).
fn parse_documents(
    files: &BundleFiles,
    now: OffsetDateTime,
    members: &mut MemberBuffer,
) -> Result<Vec<ParsedDocument>, PolicyError> {
    type Parsed = Result<ParsedDocument, Vec<govmx_policy::PolicyError>>;
    let documents: Vec<(&String, &bytes::Bytes)> = files
        .iter()
        .filter(|(name, _)| name.as_str() != SIGNATURES_FILE)
        .collect();
    let parse = |(name, bytes): (&String, &bytes::Bytes), members: &mut MemberBuffer| -> Parsed {
        govmx_policy::parse_document_buffered(name, bytes.clone(), Some(now), members)
    };
    // The largest document (the federation list) is parsed here, the others meanwhile on a
    // scoped thread; the results keep the file order.
    let largest = (0..documents.len()).max_by_key(|&i| documents[i].1.len());
    let others = || -> Vec<Parsed> {
        (0..documents.len())
            .filter(|&i| Some(i) != largest)
            .map(|i| parse(documents[i], &mut MemberBuffer::default()))
            .collect()
    };
    let parsed = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().spawn_scoped(scope, others);
        let largest = largest.map(|i| (i, parse(documents[i], members)));
        let mut parsed = match thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // A thread the OS refuses is no error: the others are parsed here.
            Err(_) => others(),
        };
        if let Some((i, result)) = largest {
            parsed.insert(i, result);
        }
        parsed
    });
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for result in parsed {
        match result {
            Ok(doc) => docs.push(doc),
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(PolicyError::Documents(join(&errors)))
    }
}

fn join(errors: &[govmx_policy::PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyList {
    /// The signed bundle version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many servers the federation list has.
    pub fn member_count(&self) -> usize {
        self.set.federation().servers.len()
    }

    /// Room of the members array (tests: which memory the parse used).
    #[cfg(test)]
    pub(crate) fn member_capacity(&self) -> usize {
        self.set.federation().servers.capacity()
    }

    /// When the list itself expires (`issued + maxAge` in the signed list).
    pub fn expires_at(&self) -> SystemTime {
        let expires = self.set.expires();
        let secs = expires.unix_timestamp().max(0) as u64;
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs)
            + Duration::from_nanos(u64::from(expires.nanosecond()))
    }

    /// The entry for a server name (exact).
    pub fn server(&self, server_name: &str) -> Option<ServerEntry<'_>> {
        let (index, _) = self.set.member(server_name)?;
        Some(self.entry(index))
    }

    fn entry(&self, index: usize) -> ServerEntry<'_> {
        let member = &self.set.federation().servers[index];
        let signing_keys = self.pinned.cell(index).get_or_init(|| {
            member
                .signing_keys
                .iter()
                .filter_map(|(key_id, key)| {
                    let bytes: [u8; 32] = STANDARD_NO_PAD.decode(key).ok()?.try_into().ok()?;
                    Some(PinnedKey {
                        key_id: key_id.clone(),
                        key: VerifyingKey::from_bytes(&bytes).ok()?,
                    })
                })
                .collect()
        });
        ServerEntry {
            server_name: member.server_name.as_server_name().as_str(),
            class: member.class.as_str(),
            signing_keys,
            delegated_hosts: &member.delegated_hosts,
        }
    }

    /// The peer class label for metrics: the listed class or `unlisted`.
    pub fn class_of(&self, server_name: &str) -> &'static str {
        self.set
            .member(server_name)
            .map_or("unlisted", |(_, member)| member.class.as_str())
    }

    /// The listed server a CONNECT target `host:port` belongs to, if any.
    ///
    /// A target matches a server name (`host[:port]`, default port 8448), the host of a server
    /// name without port on 443 (where Synapse fetches `/.well-known/matrix/server`), or a
    /// delegated host (`host[:port]`, default port 8448). Hosts compare case-insensitively.
    /// Hash lookups only, whatever the size of the list.
    pub fn connect_target(&self, host: &str, port: u16) -> Option<ServerEntry<'_>> {
        let host = host.to_ascii_lowercase();
        let lookup = |name: &str| {
            self.set
                .member(name)
                .map(|(index, _)| index)
                .or_else(|| self.mixed_case.get(name).copied())
        };
        let index = lookup(&format!("{host}:{port}"))
            .or_else(|| {
                (port == 8448 || port == 443)
                    .then(|| lookup(&host))
                    .flatten()
            })
            .or_else(|| self.delegated.get(&(host, port)).copied())?;
        Some(self.entry(index))
    }

    /// May `origin` send federation traffic to us (inbound requests, and authors of relayed
    /// events)?
    pub fn inbound_decision(&self, origin: &str, now: SystemTime) -> Decision {
        let own = self.set.own_server();
        let Ok(origin_name) = <&ServerName>::try_from(origin) else {
            return deny(
                "gate.origin.invalid",
                format!("{origin:?} is not a Matrix server name"),
            );
        };
        if origin_name == own {
            return deny(
                "gate.origin.self",
                format!("a peer claims to be this server ({own})"),
            );
        }
        Decision::from_policy(
            self.set
                .may_federate(origin_name, own, OffsetDateTime::from(now)),
        )
    }

    /// May we send federation traffic to `destination` (outbound CONNECT)?
    ///
    /// `PolicySet::may_federate` only decides traffic *to* us; list membership is symmetric, so
    /// the outbound question is asked as "may `destination` federate with us".
    pub fn outbound_decision(&self, destination: &str, now: SystemTime) -> Decision {
        let own = self.set.own_server();
        let Ok(destination_name) = <&ServerName>::try_from(destination) else {
            return deny(
                "gate.destination.invalid",
                format!("{destination:?} is not a Matrix server name"),
            );
        };
        Decision::from_policy(self.set.may_federate(
            destination_name,
            own,
            OffsetDateTime::from(now),
        ))
    }

    /// May `origin` send federation traffic to `destination`? One of them must be us.
    pub fn may_federate(&self, origin: &str, destination: &str, now: SystemTime) -> Decision {
        let own = self.set.own_server().as_str();
        if destination == own {
            self.inbound_decision(origin, now)
        } else if origin == own {
            self.outbound_decision(destination, now)
        } else {
            // Not about us: the engine's own answer (and rule), as the Synapse module gives it.
            match (
                <&ServerName>::try_from(origin),
                <&ServerName>::try_from(destination),
            ) {
                (Ok(o), Ok(d)) => {
                    Decision::from_policy(self.set.may_federate(o, d, OffsetDateTime::from(now)))
                }
                _ => deny(
                    "gate.not-local",
                    format!("neither {origin} nor {destination} is this server ({own})"),
                ),
            }
        }
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) into a lower-case host and the port.
pub fn split_host_port(authority: &str) -> (String, Option<u16>) {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => (
                format!("[{v6}]"),
                tail.strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (authority.to_owned(), None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().ok()),
            _ => (authority.to_owned(), None),
        }
    };
    (host.to_ascii_lowercase(), port)
}

/// Helpers that write signed bundles and trust files in `govmx-policy`'s format, for tests.
pub mod testing {
    use std::fmt::Write as _;
    use std::path::Path;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use ed25519_dalek::VerifyingKey;
    use govmx_policy::bundle::{self, SIGNATURES_FILE, SignerKey};
    use govmx_policy::generate::{GeneratedMember, GeneratedMetadata, federation_bundle};

    /// A server to put on a test list.
    #[derive(Debug, Clone)]
    pub struct TestServer {
        /// Server name.
        pub server_name: String,
        /// Class: `agency`, `citizen` or `infrastructure`.
        pub class: String,
        /// Pinned federation keys `(key id, public key)`.
        pub signing_keys: Vec<(String, VerifyingKey)>,
        /// Delegated hosts.
        pub delegated_hosts: Vec<String>,
    }

    impl TestServer {
        /// A server of class `agency` with no pinned keys and no delegated hosts.
        pub fn new(server_name: &str) -> Self {
            TestServer {
                server_name: server_name.to_owned(),
                class: "agency".to_owned(),
                signing_keys: Vec::new(),
                delegated_hosts: Vec::new(),
            }
        }
    }

    /// A bundle signer.
    #[derive(Debug)]
    pub struct TestSigner {
        /// The signer key (id `ed25519:<name>`).
        pub key: SignerKey,
    }

    impl TestSigner {
        /// A signer `ed25519:<name>` with a key derived from `seed`.
        pub fn from_seed(name: &str, seed: u8) -> Self {
            let id = if name.starts_with("ed25519:") {
                name.to_owned()
            } else {
                format!("ed25519:{name}")
            };
            TestSigner {
                key: SignerKey::from_seed(&id, [seed; 32]).expect("valid test signer"),
            }
        }
    }

    /// Writes a TrustAnchors document pinning `signers` with `threshold`.
    pub fn write_trust(
        path: &Path,
        threshold: usize,
        signers: &[&TestSigner],
    ) -> std::io::Result<()> {
        let mut doc = format!(
            "apiVersion: govmx.de/v1\nkind: TrustAnchors\n\
             metadata: {{name: test-signers, version: 1, issued: 2026-01-01T00:00:00Z}}\n\
             threshold: {threshold}\nkeys:\n"
        );
        for signer in signers {
            let _ = writeln!(
                doc,
                "  - {{id: \"{}\", publicKey: \"{}\", owner: test}}",
                signer.key.id(),
                signer.key.public_key()
            );
        }
        std::fs::write(path, doc)
    }

    /// The files of a bundle made of `documents` (name, bytes) plus `SIGNATURES.json` signed by
    /// `signers` for `version`: what a bundle directory or URL would hold.
    pub fn signed_files(
        documents: &[(&str, &[u8])],
        version: u64,
        signers: &[&TestSigner],
    ) -> Result<super::BundleFiles, bundle::BundleError> {
        let mut signatures: Option<String> = None;
        for signer in signers {
            let outcome = bundle::sign(
                signatures.as_deref().map(str::as_bytes),
                version,
                documents,
                &signer.key,
            )?;
            signatures = Some(outcome.signatures.to_json());
        }
        let mut files: super::BundleFiles = documents
            .iter()
            .map(|(name, bytes)| ((*name).to_owned(), bytes::Bytes::copy_from_slice(bytes)))
            .collect();
        if let Some(json) = signatures {
            files.insert(SIGNATURES_FILE.to_owned(), json.into_bytes().into());
        }
        Ok(files)
    }

    /// Writes (replaces) a complete bundle in `dir`: a federation list (version `version`,
    /// issued an hour ago, valid 30 days) with `servers`, permissive contact rules, media
    /// rules, no agencies, and `SIGNATURES.json` signed by `signers`.
    pub fn write_bundle(
        dir: &Path,
        version: u64,
        servers: &[TestServer],
        signers: &[&TestSigner],
    ) -> std::io::Result<()> {
        write_bundle_in(dir, version, servers, signers, false)
    }

    /// [`write_bundle`] with every document in JSON syntax (as large lists are published).
    pub fn write_json_bundle(
        dir: &Path,
        version: u64,
        servers: &[TestServer],
        signers: &[&TestSigner],
    ) -> std::io::Result<()> {
        write_bundle_in(dir, version, servers, signers, true)
    }

    fn write_bundle_in(
        dir: &Path,
        version: u64,
        servers: &[TestServer],
        signers: &[&TestSigner],
        json: bool,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let keys: Vec<Vec<(String, String)>> = servers
            .iter()
            .map(|server| {
                server
                    .signing_keys
                    .iter()
                    .map(|(id, key)| (id.clone(), STANDARD_NO_PAD.encode(key.as_bytes())))
                    .collect()
            })
            .collect();
        let members: Vec<GeneratedMember<'_>> = servers
            .iter()
            .zip(&keys)
            .map(|(server, keys)| GeneratedMember {
                server_name: &server.server_name,
                class: &server.class,
                signing_keys: keys,
                delegated_hosts: &server.delegated_hosts,
            })
            .collect();
        let meta = GeneratedMetadata {
            name: "test-list",
            version,
            issued: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
            max_age: "30d",
        };
        let mut files = federation_bundle("test bundle", meta, &members);
        if json {
            for (_, text) in &mut files {
                let value: serde_json::Value =
                    serde_norway::from_str(text).map_err(std::io::Error::other)?;
                *text = serde_json::to_string(&value).map_err(std::io::Error::other)?;
            }
        }
        let slices: Vec<(&str, &[u8])> = files.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
        let mut signatures: Option<String> = None;
        for signer in signers {
            let outcome = bundle::sign(
                signatures.as_deref().map(str::as_bytes),
                version,
                &slices,
                &signer.key,
            )
            .map_err(std::io::Error::other)?;
            signatures = Some(outcome.signatures.to_json());
        }
        // Documents first, the signature file last, each renamed into place.
        for (name, text) in &files {
            write_atomic(&dir.join(name), text.as_bytes())?;
        }
        match signatures {
            Some(json) => write_atomic(&dir.join(SIGNATURES_FILE), json.as_bytes()),
            None => match std::fs::remove_file(dir.join(SIGNATURES_FILE)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
        }
    }

    fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        // A hidden temporary name: readers of bundle directories skip dot files.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// A large list's gate indexes are built in slices on several threads: the same maps as one
    /// pass, the first member naming a delegated host keeping it.
    #[test]
    fn gate_indexes_of_a_large_list_are_those_of_one_pass() {
        use govmx_policy::{FederationMember, Organisation, ServerClass, ServerNameSpec};
        let member = |name: &str, hosts: &[&str]| FederationMember {
            server_name: ServerNameSpec::parse(name).unwrap(),
            organisation: Organisation {
                id: "org".to_owned(),
                display_name: "Org".to_owned(),
            },
            class: ServerClass::Agency,
            signing_keys: Default::default(),
            delegated_hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
        };
        let servers: Vec<FederationMember> = (0..30_000)
            .map(|i| match i {
                7 => member("Mixed.Example.de", &["relay.example.de:8448"]),
                25_000 => member(
                    "s25000.example.de",
                    &["RELAY.example.de:8448", "other.example.de:443"],
                ),
                29_999 => member("LAST.example.de", &[]),
                _ => member(&format!("s{i}.example.de"), &[]),
            })
            .collect();
        let (delegated, mixed_case) = gate_indexes(&servers);
        let host = |name: &str, port| (name.to_owned(), port);
        assert_eq!(
            delegated,
            HashMap::from([
                (host("relay.example.de", 8448), 7),
                (host("other.example.de", 443), 25_000)
            ])
        );
        assert_eq!(
            mixed_case,
            HashMap::from([
                ("mixed.example.de".to_owned(), 7),
                ("last.example.de".to_owned(), 29_999)
            ])
        );
    }

    fn load(dir: &std::path::Path, trust: &std::path::Path) -> Result<PolicyList, PolicyError> {
        let mut files = BundleFiles::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if is_bundle_file(&name) {
                files.insert(name, std::fs::read(entry.path()).unwrap().into());
            }
        }
        verify_bundle(
            &files,
            &std::fs::read(trust).unwrap(),
            "a.example",
            SystemTime::now(),
        )
    }

    #[test]
    fn threshold_tampering_and_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            TestSigner::from_seed("alice", 1),
            TestSigner::from_seed("bob", 2),
            TestSigner::from_seed("mallory", 3),
        );
        let trust = dir.path().join("trust.yaml");
        write_trust(&trust, 2, &[&a, &b]).unwrap();
        let bundle = dir.path().join("bundle");
        let mut b_server = TestServer::new("b.example");
        b_server
            .delegated_hosts
            .push("fed.b.example:443".to_owned());
        let servers = [
            TestServer::new("a.example"),
            b_server,
            TestServer::new("127.0.0.3:8448"),
            TestServer::new("Mixed.Example"),
        ];

        write_bundle(&bundle, 7, &servers, &[&a, &b]).unwrap();
        let list = load(&bundle, &trust).unwrap();
        assert_eq!(list.version(), 7);
        let now = SystemTime::now();
        assert!(list.expires_at() > now);
        let allowed = list.inbound_decision("b.example", now);
        assert!(allowed.allowed(), "{allowed:?}");
        assert_eq!(allowed.rule, "member:b.example");
        assert!(list.outbound_decision("b.example", now).allowed());
        assert_eq!(
            list.inbound_decision("x.example", now).rule,
            "origin-not-listed"
        );
        assert_eq!(
            list.outbound_decision("x.example", now).rule,
            "origin-not-listed"
        );
        assert_eq!(
            list.inbound_decision("a.example", now).rule,
            "gate.origin.self"
        );
        assert_eq!(
            list.inbound_decision("bad name", now).rule,
            "gate.origin.invalid"
        );
        assert_eq!(
            list.may_federate("b.example", "x.example", now).rule,
            "destination-not-local",
            "the engine's rule, as in the Synapse module"
        );
        assert!(list.may_federate("a.example", "b.example", now).allowed());

        let target = |host: &str, port| {
            list.connect_target(host, port)
                .map(|s| s.server_name.to_owned())
        };
        assert_eq!(target("b.example", 8448).as_deref(), Some("b.example"));
        assert_eq!(
            target("B.Example", 443).as_deref(),
            Some("b.example"),
            "well-known lookup"
        );
        assert_eq!(
            target("fed.b.example", 443).as_deref(),
            Some("b.example"),
            "delegated host"
        );
        assert_eq!(target("fed.b.example", 8448), None);
        assert_eq!(
            target("mixed.EXAMPLE", 8448).as_deref(),
            Some("Mixed.Example"),
            "host names compare case-insensitively"
        );
        assert_eq!(target("mixed.example", 8449), None);
        assert_eq!(target("127.0.0.3", 8448).as_deref(), Some("127.0.0.3:8448"));
        assert_eq!(
            target("127.0.0.3", 443),
            None,
            "no well-known lookup for names with a port"
        );
        assert_eq!(target("x.example", 8448), None);

        write_bundle(&bundle, 8, &servers, &[&a]).unwrap();
        let err = load(&bundle, &trust).unwrap_err().to_string();
        assert_eq!(
            err,
            "bundle verification failed: too few signatures: 1 valid signature, 2 required"
        );
        write_bundle(&bundle, 8, &servers, &[&a, &c]).unwrap();
        let err = load(&bundle, &trust).unwrap_err().to_string();
        assert!(
            err.contains("ed25519:mallory, which is not a pinned trust anchor key"),
            "{err}"
        );

        write_bundle(&bundle, 9, &servers, &[&a, &b]).unwrap();
        std::fs::write(bundle.join("federation.yaml"), "version: 10\nservers: []\n").unwrap();
        let err = load(&bundle, &trust).unwrap_err().to_string();
        assert!(
            err.contains("federation.yaml: content does not match the signed manifest"),
            "{err}"
        );
    }
}
