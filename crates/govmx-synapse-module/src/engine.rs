//! [`Engine`]: the current policy set, the runtime grants and the decisions behind Synapse's
//! spam-checker callbacks.
//!
//! Loading follows the gate's semantics: with a trust file the directory must be a bundle
//! signed by the threshold of pinned keys (`govmx_policy::bundle::verify`); a verified bundle is
//! copied to the last-known-good directory, which is loaded at start when the directory is
//! broken; a rejected change keeps the previous set; the federation list's `maxAge` bounds how
//! long a set decides (past it, `PolicySet` denies everything: fail closed). Without any
//! loaded set every decision is a refusal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use govmx_policy::bundle::{self, SIGNATURES_FILE};
use govmx_policy::{
    ContactAction, Decision, Document, Grant, ParsedDocument, PolicySet, parse_document,
};
use ruma_common::{OwnedServerName, ServerName, UserId};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::{ConfigError, ModuleConfig};

/// The Matrix error codes the module answers with.
pub mod errcode {
    /// Everything but contact-rule refusals of an invite.
    pub const FORBIDDEN: &str = "M_FORBIDDEN";
    /// A contact rule blocks this invite (MSC4155's code for blocked invites).
    pub const INVITE_BLOCKED: &str = "M_INVITE_BLOCKED";
}

/// A refused action: the Matrix errcode, the deciding rule id and one sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `M_FORBIDDEN` or `M_INVITE_BLOCKED`.
    pub errcode: &'static str,
    /// Stable rule id (a contact rule id, `room-too-many-citizens`, `policy-unavailable`, ...).
    pub rule: String,
    /// A sentence a user understands.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn forbidden(rule: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal {
            errcode: errcode::FORBIDDEN,
            rule: rule.into(),
            reason: reason.into(),
        }
    }

    fn from_decision(decision: Decision<'_>, errcode: &'static str) -> Refusal {
        Refusal {
            errcode,
            rule: decision.rule.into_owned(),
            reason: decision.reason.into_owned(),
        }
    }
}

/// The outcome of one check of a source (policy directory or grants file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Nothing changed since the last check (or the same broken content was refused before).
    Unchanged,
    /// New content is in force.
    Loaded {
        /// Bundle version (signed), federation list version (plain files) or number of grants.
        version: u64,
        /// Loaded from the last-known-good copy because the directory was unusable.
        from_last_known_good: bool,
    },
    /// New content was refused; the previous content (if any) stays in force.
    Rejected {
        /// Why.
        error: String,
        /// The version still in force.
        current: Option<u64>,
    },
}

/// What one [`Engine::poll`] did to the policy and to the grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// The policy directory.
    pub policy: Reload,
    /// The runtime grants file.
    pub grants: Reload,
}

#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) set: PolicySet,
    pub(crate) version: u64,
    fingerprint: [u8; 32],
}

#[derive(Debug, Default)]
pub(crate) struct RuntimeGrants {
    pub(crate) grants: Vec<Grant>,
    pub(crate) fingerprint: Option<[u8; 32]>,
}

/// The module's state: configuration, current policy set and runtime grants.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: ModuleConfig,
    own: OwnedServerName,
    policy: RwLock<Option<Arc<Loaded>>>,
    /// Fingerprint of content refused last, so a broken directory is reported once.
    rejected: RwLock<Option<[u8; 32]>>,
    pub(crate) grants: RwLock<Arc<RuntimeGrants>>,
}

type Files = BTreeMap<String, Vec<u8>>;

/// Whether a top-level file of a policy directory belongs to the policy (the gate's rule).
fn is_policy_file(name: &str) -> bool {
    name == SIGNATURES_FILE || name.ends_with(".yaml") || name.ends_with(".yml")
}

fn read_dir_files(dir: &Path) -> Result<Files, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|error| format!("reading {}: {error}", dir.display()))?;
    let mut files = Files::new();
    for entry in entries {
        let entry = entry.map_err(|error| format!("reading {}: {error}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_policy_file(&name) {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes =
            std::fs::read(&path).map_err(|error| format!("reading {}: {error}", path.display()))?;
        files.insert(name, bytes);
    }
    Ok(files)
}

fn fingerprint(files: &Files, trust: Option<&[u8]>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (name, bytes) in files {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    if let Some(trust) = trust {
        hash.update(b"trust");
        hash.update(trust);
    }
    hash.finalize().into()
}

fn join(errors: &[govmx_policy::PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Verifies (with `trust`) and compiles the files of a policy directory. Pure.
pub fn build_policy(
    files: &BTreeMap<String, Vec<u8>>,
    trust: Option<&[u8]>,
    own: &ServerName,
    now: OffsetDateTime,
) -> Result<(PolicySet, u64), String> {
    let contents: Vec<(&str, &[u8])> = files
        .iter()
        .filter(|(name, _)| name.as_str() != SIGNATURES_FILE)
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    let signed_version = match trust {
        None => None,
        Some(trust) => {
            let trust = match parse_document("trust anchors", trust, None) {
                Ok(ParsedDocument {
                    document: Document::TrustAnchors(trust),
                    ..
                }) => trust,
                Ok(other) => {
                    return Err(format!(
                        "the trust file holds a {} document, not TrustAnchors",
                        other.document.kind()
                    ));
                }
                Err(errors) => return Err(format!("trust file: {}", join(&errors))),
            };
            let signatures = files
                .get(SIGNATURES_FILE)
                .ok_or_else(|| format!("{SIGNATURES_FILE} is missing from the signed bundle"))?;
            let verified =
                bundle::verify(signatures, &contents, &trust).map_err(|error| error.to_string())?;
            Some(verified.bundle_version)
        }
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (name, bytes) in &contents {
        match parse_document(name, bytes, Some(now)) {
            Ok(doc) => docs.push(doc),
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    if !errors.is_empty() {
        return Err(join(&errors));
    }
    let set = PolicySet::new(docs, own).map_err(|errors| join(&errors))?;
    let version = signed_version.unwrap_or(set.federation().metadata.version);
    Ok((set, version))
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Engine {
    /// Creates the engine; nothing is loaded until the first [`Engine::poll`].
    pub fn new(config: ModuleConfig) -> Result<Engine, ConfigError> {
        let own = <&ServerName>::try_from(config.server_name.as_str())
            .map_err(|error| ConfigError::ServerName {
                name: config.server_name.clone(),
                detail: error.to_string(),
            })?
            .to_owned();
        if let Some(scanner) = &config.scanner {
            scanner.token()?;
        }
        Ok(Engine {
            config,
            own,
            policy: RwLock::new(None),
            rejected: RwLock::new(None),
            grants: RwLock::new(Arc::new(RuntimeGrants::default())),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModuleConfig {
        &self.config
    }

    /// Our server name.
    pub fn own_server(&self) -> &ServerName {
        &self.own
    }

    pub(crate) fn current(&self) -> Option<Arc<Loaded>> {
        read_lock(&self.policy).clone()
    }

    /// The version of the policy in force, if any.
    pub fn policy_version(&self) -> Option<u64> {
        self.current().map(|loaded| loaded.version)
    }

    /// The policy set in force, if any (for tools and tests).
    pub fn with_policy<R>(&self, f: impl FnOnce(&PolicySet) -> R) -> Option<R> {
        self.current().map(|loaded| f(&loaded.set))
    }

    pub(crate) fn runtime_grants(&self) -> Arc<RuntimeGrants> {
        read_lock(&self.grants).clone()
    }

    /// Checks the policy directory and the grants file and swaps in what changed.
    pub fn poll(&self, now: OffsetDateTime) -> PollOutcome {
        PollOutcome {
            policy: self.poll_policy(now),
            grants: self.poll_grants(),
        }
    }

    fn poll_policy(&self, now: OffsetDateTime) -> Reload {
        let current = self.current();
        let current_version = current.as_ref().map(|loaded| loaded.version);
        let trust = match &self.config.trust_file {
            None => None,
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    return self.reject(
                        [0; 32],
                        format!("reading trust file {}: {error}", path.display()),
                        current_version,
                        now,
                    );
                }
            },
        };
        let files = match read_dir_files(&self.config.policy_dir) {
            Ok(files) => files,
            Err(error) => {
                let print = fingerprint(&Files::new(), Some(error.as_bytes()));
                return self.reject_or_fall_back(
                    print,
                    error,
                    current_version,
                    trust.as_deref(),
                    now,
                );
            }
        };
        let print = fingerprint(&files, trust.as_deref());
        if current
            .as_ref()
            .is_some_and(|loaded| loaded.fingerprint == print)
        {
            return Reload::Unchanged;
        }
        match build_policy(&files, trust.as_deref(), &self.own, now) {
            Ok((set, version)) => {
                *write_lock(&self.policy) = Some(Arc::new(Loaded {
                    set,
                    version,
                    fingerprint: print,
                }));
                *write_lock(&self.rejected) = None;
                if let Some(dir) = &self.config.last_known_good_dir
                    && let Err(error) = write_last_known_good(dir, &files)
                {
                    return Reload::Rejected {
                        error: format!(
                            "version {version} is in force, but copying it to {} failed: {error}",
                            dir.display()
                        ),
                        current: Some(version),
                    };
                }
                Reload::Loaded {
                    version,
                    from_last_known_good: false,
                }
            }
            Err(error) => {
                self.reject_or_fall_back(print, error, current_version, trust.as_deref(), now)
            }
        }
    }

    fn reject_or_fall_back(
        &self,
        print: [u8; 32],
        error: String,
        current_version: Option<u64>,
        trust: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Reload {
        if current_version.is_none()
            && let Some(dir) = &self.config.last_known_good_dir
            && let Ok(files) = read_dir_files(dir)
            && !files.is_empty()
            && let Ok((set, version)) = build_policy(&files, trust, &self.own, now)
        {
            *write_lock(&self.policy) = Some(Arc::new(Loaded {
                set,
                version,
                fingerprint: print,
            }));
            *write_lock(&self.rejected) = Some(print);
            return Reload::Loaded {
                version,
                from_last_known_good: true,
            };
        }
        self.reject(print, error, current_version, now)
    }

    fn reject(
        &self,
        print: [u8; 32],
        error: String,
        current: Option<u64>,
        _now: OffsetDateTime,
    ) -> Reload {
        let mut rejected = write_lock(&self.rejected);
        if *rejected == Some(print) {
            return Reload::Unchanged;
        }
        *rejected = Some(print);
        Reload::Rejected { error, current }
    }

    fn poll_grants(&self) -> Reload {
        let Some(path) = &self.config.grants_file else {
            return Reload::Unchanged;
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Reload::Rejected {
                    error: format!("reading {}: {error}", path.display()),
                    current: Some(self.runtime_grants().grants.len() as u64),
                };
            }
        };
        let print: [u8; 32] = Sha256::digest(&bytes).into();
        let current = self.runtime_grants();
        if current.fingerprint == Some(print) {
            return Reload::Unchanged;
        }
        let grants = if bytes.is_empty() {
            Vec::new()
        } else {
            match crate::grants::parse_grants_file(&bytes) {
                Ok(grants) => grants,
                Err(error) => {
                    return Reload::Rejected {
                        error: format!("{}: {error}", path.display()),
                        current: Some(current.grants.len() as u64),
                    };
                }
            }
        };
        let count = grants.len() as u64;
        *write_lock(&self.grants) = Arc::new(RuntimeGrants {
            grants,
            fingerprint: Some(print),
        });
        Reload::Loaded {
            version: count,
            from_last_known_good: false,
        }
    }

    /// One line on the state of the engine, for logs.
    pub fn status(&self, now: OffsetDateTime) -> String {
        match self.current() {
            None => "no policy loaded: every callback refuses".to_owned(),
            Some(loaded) => {
                let expires = loaded.set.expires();
                format!(
                    "policy version {} for {} (federation list {:?} v{}, expires {}{}), {} runtime grants",
                    loaded.version,
                    self.own,
                    loaded.set.federation().metadata.name,
                    loaded.set.federation().metadata.version,
                    govmx_policy::Timestamp(expires),
                    if now > expires {
                        ": EXPIRED, refusing everything"
                    } else {
                        ""
                    },
                    self.runtime_grants().grants.len()
                )
            }
        }
    }

    fn unavailable() -> Refusal {
        Refusal::forbidden(
            "policy-unavailable",
            "the homeserver has no valid contact policy loaded, so this is refused for now",
        )
    }

    /// `user_may_invite` / `federated_user_may_invite`: may `inviter` invite `invitee`?
    /// `inviter_is_local`: the invite starts on this server (not one arriving over federation).
    pub fn may_invite(
        &self,
        inviter: &str,
        invitee: &str,
        inviter_is_local: bool,
        now: OffsetDateTime,
    ) -> Option<Refusal> {
        let Some(loaded) = self.current() else {
            return Some(Engine::unavailable());
        };
        let (inviter_id, invitee_id) = match parse_users(inviter, invitee) {
            Ok(ids) => ids,
            Err(refusal) => return Some(refusal),
        };
        let grants = self.runtime_grants();
        let decision = loaded
            .set
            .may_invite(inviter_id, invitee_id, now, &grants.grants);
        if decision.is_allowed() {
            return None;
        }
        if inviter_is_local
            && self.config.defer_grants_to_remote
            && invitee_id.server_name() != self.own
            && is_grant_rule(&loaded.set, &decision.rule)
        {
            // The agency's homeserver holds its grants and decides on arrival.
            return None;
        }
        let code = invite_errcode(&loaded.set, &decision.rule);
        Some(Refusal::from_decision(decision, code))
    }

    /// `user_may_create_room`: may `creator` create a room inviting `invitees`?
    pub fn may_create_room(
        &self,
        creator: &str,
        invitees: &[&str],
        now: OffsetDateTime,
    ) -> Option<Refusal> {
        let Some(loaded) = self.current() else {
            return Some(Engine::unavailable());
        };
        let creator_id = match <&UserId>::try_from(creator) {
            Ok(id) => id,
            Err(_) => return Some(invalid_user(creator)),
        };
        let mut ids = Vec::with_capacity(invitees.len());
        for invitee in invitees {
            match <&UserId>::try_from(*invitee) {
                Ok(id) => ids.push(id),
                Err(_) => return Some(invalid_user(invitee)),
            }
        }
        let grants = self.runtime_grants();
        let decision = loaded
            .set
            .may_create_room(creator_id, &ids, now, &grants.grants);
        if decision.is_allowed() {
            return None;
        }
        if is_grant_rule(&loaded.set, &decision.rule) {
            // Only a grant is missing: decide each invite as `may_invite` does (deferring to a
            // remote agency's homeserver where configured).
            return invitees
                .iter()
                .find_map(|invitee| self.may_invite(creator, invitee, true, now));
        }
        let code = invite_errcode(&loaded.set, &decision.rule);
        Some(Refusal::from_decision(decision, code))
    }

    /// `user_may_join_room`: invited joins were decided at invite time; other joins only need a
    /// loaded policy (joins are governed by the room's join rules, not by contact rules).
    pub fn may_join_room(
        &self,
        user: &str,
        is_invited: bool,
        _now: OffsetDateTime,
    ) -> Option<Refusal> {
        if is_invited {
            return None;
        }
        if self.current().is_none() {
            return Some(Engine::unavailable());
        }
        match <&UserId>::try_from(user) {
            Ok(_) => None,
            Err(_) => Some(invalid_user(user)),
        }
    }

    /// `should_drop_federated_event`: may an event authored by `sender` arrive over federation?
    /// Its author's server (the server part of `sender`, whichever server relayed it) must be on
    /// the federation list, exactly as an `origin` at the gate. No policy, an expired list or an
    /// invalid sender: refused (fail closed).
    pub fn may_receive_federated_event(
        &self,
        sender: &str,
        now: OffsetDateTime,
    ) -> Option<Refusal> {
        let Some(loaded) = self.current() else {
            return Some(Engine::unavailable());
        };
        let sender = match <&UserId>::try_from(sender) {
            Ok(id) => id,
            Err(_) => return Some(invalid_user(sender)),
        };
        let decision = loaded
            .set
            .may_federate(sender.server_name(), &self.own, now);
        if decision.is_allowed() {
            None
        } else {
            Some(Refusal::from_decision(decision, "M_FORBIDDEN"))
        }
    }
}

fn parse_users<'a>(
    inviter: &'a str,
    invitee: &'a str,
) -> Result<(&'a UserId, &'a UserId), Refusal> {
    let inviter = <&UserId>::try_from(inviter).map_err(|_| invalid_user(inviter))?;
    let invitee = <&UserId>::try_from(invitee).map_err(|_| invalid_user(invitee))?;
    Ok((inviter, invitee))
}

fn invalid_user(user: &str) -> Refusal {
    let shown: String = user.chars().take(300).collect();
    Refusal::forbidden(
        "invalid-user-id",
        format!("{shown:?} is not a valid Matrix user ID"),
    )
}

/// Whether `rule` names a contact rule whose action is `requireGrant`.
fn is_grant_rule(set: &PolicySet, rule: &str) -> bool {
    set.contact()
        .rules
        .iter()
        .any(|r| r.id == rule && r.action == ContactAction::RequireGrant)
}

/// `M_INVITE_BLOCKED` when the contact rules (a rule or their default) refused the invite,
/// `M_FORBIDDEN` for everything else (unlisted servers, an expired list, room limits).
fn invite_errcode(set: &PolicySet, rule: &str) -> &'static str {
    if rule == "contact-default" || set.contact().rules.iter().any(|r| r.id == rule) {
        errcode::INVITE_BLOCKED
    } else {
        errcode::FORBIDDEN
    }
}

fn write_last_known_good(dir: &Path, files: &Files) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Remove what the new bundle no longer has, then write each file atomically.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string()
            && is_policy_file(&name)
            && !files.contains_key(&name)
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    for (name, bytes) in files {
        write_atomic(&dir.join(name), bytes)?;
    }
    Ok(())
}
