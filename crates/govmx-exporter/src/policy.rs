//! Policy bundle facts: the signed bundle version, its signers and the federation list's issue
//! time and maximum age, read from the bundle directory and verified against the pinned trust
//! anchors with `govmx_policy::bundle::verify` (what the gate does on every load).
//!
//! A bundle that fails verification is a failed collection: `govmx_up{target="policy"}` goes to
//! 0 and the last verified values stay.

use std::path::Path;

use govmx_policy::{
    Document, ParsedDocument,
    bundle::{self, SIGNATURES_FILE},
    parse_document,
};

use crate::{
    CollectError,
    cache::{Snapshot, Value},
};

/// Largest file of a bundle we read.
const MAX_FILE: u64 = 16 << 20;

/// What a verified bundle says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFacts {
    /// The signed bundle version.
    pub bundle_version: u64,
    /// Key ids of the signers (bounded by the trust anchors).
    pub signers: Vec<String>,
    /// Signatures required.
    pub threshold: usize,
    /// The federation list's `metadata.issued`, Unix seconds.
    pub issued: Option<i64>,
    /// The federation list's `metadata.maxAge` in seconds.
    pub max_age: Option<i64>,
    /// Servers on the federation list.
    pub servers: Option<usize>,
}

fn read(path: &Path) -> Result<Vec<u8>, CollectError> {
    let io = |source| CollectError::Io {
        what: format!("reading {}", path.display()),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE {
        return Err(CollectError::Malformed(format!(
            "{}: larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    std::fs::read(path).map_err(io)
}

/// Reads and verifies the bundle in `dir` against `trust`. Blocking: run it off the async
/// threads.
pub fn collect(dir: &Path, trust: &Path) -> Result<PolicyFacts, CollectError> {
    let trust_bytes = read(trust)?;
    let anchors = match parse_document(&trust.display().to_string(), &trust_bytes, None) {
        Ok(ParsedDocument {
            document: Document::TrustAnchors(anchors),
            ..
        }) => anchors,
        Ok(other) => {
            return Err(CollectError::Policy(format!(
                "{}: expected a TrustAnchors document, found {}",
                trust.display(),
                other.document.kind()
            )));
        }
        Err(errors) => {
            return Err(CollectError::Policy(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
    };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut signatures = None;
    let entries = std::fs::read_dir(dir).map_err(|source| CollectError::Io {
        what: format!("reading {}", dir.display()),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if name == SIGNATURES_FILE {
            signatures = Some(read(&entry.path())?);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push((name, read(&entry.path())?));
        }
    }
    files.sort();
    let signatures = signatures.ok_or_else(|| {
        CollectError::Policy(format!("{}: {SIGNATURES_FILE} is missing", dir.display()))
    })?;
    let contents: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let verified = bundle::verify(&signatures, &contents, &anchors)
        .map_err(|e| CollectError::Policy(format!("{}: {e}", dir.display())))?;
    let mut facts = PolicyFacts {
        bundle_version: verified.bundle_version,
        signers: verified.signers,
        threshold: verified.threshold,
        issued: None,
        max_age: None,
        servers: None,
    };
    for (name, bytes) in &files {
        // No `now`: an expired list still parses, so its age can be reported.
        if let Ok(ParsedDocument {
            document: Document::FederationList(list),
            ..
        }) = parse_document(name, bytes, None)
        {
            facts.issued = Some(list.metadata.issued.0.unix_timestamp());
            facts.max_age = Some(list.metadata.max_age.duration().whole_seconds());
            facts.servers = Some(list.servers.len());
        }
    }
    Ok(facts)
}

/// The facts as a snapshot.
pub fn snapshot(facts: &PolicyFacts) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.set(
        "govmx_policy_bundle_version",
        "Version of the verified policy bundle",
        facts.bundle_version as f64,
    );
    snap.set(
        "govmx_policy_bundle_signers",
        "Distinct valid signatures on the policy bundle",
        facts.signers.len() as f64,
    );
    snap.set(
        "govmx_policy_bundle_signature_threshold",
        "Signatures the trust anchors require",
        facts.threshold as f64,
    );
    for signer in &facts.signers {
        snap.gauge(
            "govmx_policy_bundle_signer_info",
            "Key ids that signed the policy bundle (always 1)",
            vec![("key_id", signer.clone())],
            Value::Set(1.0),
        );
    }
    if let Some(issued) = facts.issued {
        snap.set(
            "govmx_policy_federation_list_issued_timestamp_seconds",
            "metadata.issued of the federation list in the bundle",
            issued as f64,
        );
        snap.gauge(
            "govmx_policy_federation_list_age_seconds",
            "Age of the federation list in the bundle at scrape time",
            Vec::new(),
            Value::SecondsSince(issued as f64),
        );
        if let Some(max_age) = facts.max_age {
            snap.set(
                "govmx_policy_federation_list_max_age_seconds",
                "metadata.maxAge of the federation list (gates fail closed past it)",
                max_age as f64,
            );
            snap.set(
                "govmx_policy_federation_list_expiry_timestamp_seconds",
                "When the federation list in the bundle expires (issued + maxAge)",
                issued.saturating_add(max_age) as f64,
            );
        }
    }
    if let Some(n) = facts.servers {
        snap.set(
            "govmx_policy_federation_list_servers",
            "Servers on the federation list in the bundle",
            n as f64,
        );
    }
    snap
}
