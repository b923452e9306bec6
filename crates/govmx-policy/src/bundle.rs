//! Signed policy bundles: a SHA-256 manifest of the bundle's files, signed with Ed25519 over
//! its canonical JSON, and verification against pinned [`TrustAnchors`].
//!
//! `SIGNATURES.json` looks like
//! `{"manifest": {"bundleVersion": 8, "files": {"agencies.yaml": "sha256:<hex>"}},
//!   "signatures": {"ed25519:alice": "<unpadded base64>"}}`.
//! The signed bytes are the canonical JSON of `manifest` (sorted keys, no insignificant
//! whitespace, UTF-8), as in Matrix. Everything here works on bytes; the caller reads files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::check_key;
use crate::model::TrustAnchors;

/// The name of the detached signature file inside a bundle directory.
pub const SIGNATURES_FILE: &str = "SIGNATURES.json";

/// What is signed: the bundle version and the SHA-256 of every file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// Version of the bundle (by default the federation list's `metadata.version`).
    pub bundle_version: u64,
    /// File name → `sha256:<lower-case hex>` of its raw bytes.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Computes the manifest of `files` (name, raw bytes).
    pub fn new(bundle_version: u64, files: &[(&str, &[u8])]) -> Manifest {
        let files = files
            .iter()
            .map(|(name, bytes)| {
                (
                    (*name).to_owned(),
                    format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
                )
            })
            .collect();
        Manifest {
            bundle_version,
            files,
        }
    }

    /// The bytes that are signed: the canonical JSON of the manifest.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        canonical_json(&value).into_bytes()
    }
}

/// The contents of `SIGNATURES.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignatureFile {
    /// The signed manifest.
    pub manifest: Manifest,
    /// Key id (`ed25519:<name>`) → unpadded base64 signature over the manifest.
    pub signatures: BTreeMap<String, String>,
}

impl SignatureFile {
    /// Parses `SIGNATURES.json`.
    pub fn parse(bytes: &[u8]) -> Result<SignatureFile, BundleError> {
        serde_json::from_slice(bytes).map_err(|error| BundleError::Malformed(error.to_string()))
    }

    /// Pretty JSON with a trailing newline, for writing to disk.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Matrix-style canonical JSON: object keys sorted by code point, no insignificant whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Why signing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// `SIGNATURES.json` is not valid.
    #[error("{SIGNATURES_FILE} is malformed: {0}")]
    Malformed(String),
    /// A file's bytes differ from the signed manifest.
    #[error(
        "{file}: content does not match the signed manifest (SHA-256 differs); the file was changed after signing"
    )]
    HashMismatch {
        /// The file.
        file: String,
    },
    /// A file in the bundle that the manifest does not list.
    #[error("{file}: file is in the bundle but not in the signed manifest")]
    UnlistedFile {
        /// The file.
        file: String,
    },
    /// A file the manifest lists that is not in the bundle.
    #[error("{file}: file is in the signed manifest but missing from the bundle")]
    MissingFile {
        /// The file.
        file: String,
    },
    /// A signature by a key that is not pinned in the trust anchors.
    #[error("signature by {key_id}, which is not a pinned trust anchor key")]
    UnknownSigner {
        /// The signer's key id.
        key_id: String,
    },
    /// A signature that does not verify with the pinned key.
    #[error(
        "signature by {key_id} does not verify: the manifest was changed or the signature is corrupt"
    )]
    BadSignature {
        /// The signer's key id.
        key_id: String,
    },
    /// Not enough distinct valid signatures.
    #[error("too few signatures: {}, {required} required", plural(*.valid, "valid signature"))]
    TooFewSignatures {
        /// Distinct valid signatures by pinned keys.
        valid: usize,
        /// The trust threshold.
        required: usize,
    },
    /// A malformed signer key or trust anchor key.
    #[error("bad key: {0}")]
    BadKey(String),
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A signer's Ed25519 secret key with its key id.
pub struct SignerKey {
    id: String,
    key: SigningKey,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SignerKey {
    /// A signer from a 32-byte secret seed (generate it with a CSPRNG).
    pub fn from_seed(id: &str, seed: [u8; 32]) -> Result<SignerKey, BundleError> {
        let key = SigningKey::from_bytes(&seed);
        check_key(id, &STANDARD_NO_PAD.encode(key.verifying_key().as_bytes()))
            .map_err(BundleError::BadKey)?;
        Ok(SignerKey {
            id: id.to_owned(),
            key,
        })
    }

    /// Parses a key file: one line `ed25519 <name> <unpadded base64 seed>` (Synapse's format).
    pub fn parse(text: &str) -> Result<SignerKey, BundleError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [algorithm, name, seed] = parts.as_slice() else {
            return Err(BundleError::BadKey(
                "expected one line \"ed25519 <name> <base64 seed>\"".to_owned(),
            ));
        };
        if *algorithm != "ed25519" {
            return Err(BundleError::BadKey(format!(
                "unsupported algorithm {algorithm:?}"
            )));
        }
        let seed = STANDARD_NO_PAD
            .decode(seed)
            .map_err(|_| BundleError::BadKey("secret key is not unpadded base64".to_owned()))?;
        let seed = <[u8; 32]>::try_from(seed.as_slice())
            .map_err(|_| BundleError::BadKey("secret key must be 32 bytes".to_owned()))?;
        SignerKey::from_seed(&format!("ed25519:{name}"), seed)
    }

    /// The key file contents (see [`SignerKey::parse`]).
    pub fn to_file_string(&self) -> String {
        let name = self.id.strip_prefix("ed25519:").unwrap_or(&self.id);
        format!(
            "ed25519 {name} {}\n",
            STANDARD_NO_PAD.encode(self.key.to_bytes())
        )
    }

    /// The key id, `ed25519:<name>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key, unpadded base64.
    pub fn public_key(&self) -> String {
        STANDARD_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }
}

/// The result of [`sign`].
#[derive(Debug, Clone)]
pub struct SignOutcome {
    /// The new `SIGNATURES.json` contents.
    pub signatures: SignatureFile,
    /// Signatures dropped because they covered a different manifest.
    pub dropped: Vec<String>,
}

/// Adds `signer`'s signature over the manifest of `files` to `existing` (the current
/// `SIGNATURES.json`, if any). A second signature by the same key replaces the first;
/// signatures over a different manifest (files or version changed) are dropped.
pub fn sign(
    existing: Option<&[u8]>,
    bundle_version: u64,
    files: &[(&str, &[u8])],
    signer: &SignerKey,
) -> Result<SignOutcome, BundleError> {
    let manifest = Manifest::new(bundle_version, files);
    let mut dropped = Vec::new();
    let mut signatures = BTreeMap::new();
    if let Some(existing) = existing {
        let existing = SignatureFile::parse(existing)?;
        if existing.manifest == manifest {
            signatures = existing.signatures;
        } else {
            dropped = existing
                .signatures
                .into_keys()
                .filter(|id| id != signer.id())
                .collect();
        }
    }
    let signature = signer.key.sign(&manifest.signed_bytes());
    signatures.insert(
        signer.id.clone(),
        STANDARD_NO_PAD.encode(signature.to_bytes()),
    );
    Ok(SignOutcome {
        signatures: SignatureFile {
            manifest,
            signatures,
        },
        dropped,
    })
}

/// A successfully verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed bundle version.
    pub bundle_version: u64,
    /// Key ids of the valid signers, sorted.
    pub signers: Vec<String>,
    /// The trust threshold that was met.
    pub threshold: usize,
}

/// Verifies `signatures_json` against the actual `files` (name, raw bytes; every file of the
/// bundle except `SIGNATURES.json`) and the pinned `trust` anchors.
///
/// Fails on any file difference, any signature by an unpinned key, any signature that does
/// not verify, and fewer distinct valid signatures than the threshold.
pub fn verify(
    signatures_json: &[u8],
    files: &[(&str, &[u8])],
    trust: &TrustAnchors,
) -> Result<Verified, BundleError> {
    let signature_file = SignatureFile::parse(signatures_json)?;
    let actual = Manifest::new(signature_file.manifest.bundle_version, files);
    let names: BTreeSet<&String> = actual
        .files
        .keys()
        .chain(signature_file.manifest.files.keys())
        .collect();
    for name in names {
        match (
            actual.files.get(name),
            signature_file.manifest.files.get(name),
        ) {
            (Some(_), None) => return Err(BundleError::UnlistedFile { file: name.clone() }),
            (None, Some(_)) => return Err(BundleError::MissingFile { file: name.clone() }),
            (Some(actual), Some(signed)) if actual != signed => {
                return Err(BundleError::HashMismatch { file: name.clone() });
            }
            _ => {}
        }
    }
    let signed_bytes = signature_file.manifest.signed_bytes();
    let mut signers = BTreeSet::new();
    for (key_id, signature) in &signature_file.signatures {
        let Some(anchor) = trust.keys.iter().find(|key| &key.id == key_id) else {
            return Err(BundleError::UnknownSigner {
                key_id: key_id.clone(),
            });
        };
        let public = check_key(&anchor.id, &anchor.public_key).map_err(BundleError::BadKey)?;
        let public = VerifyingKey::from_bytes(&public)
            .map_err(|error| BundleError::BadKey(format!("{}: {error}", anchor.id)))?;
        let bad = || BundleError::BadSignature {
            key_id: key_id.clone(),
        };
        let signature = STANDARD_NO_PAD.decode(signature).map_err(|_| bad())?;
        let signature = Signature::from_slice(&signature).map_err(|_| bad())?;
        public
            .verify_strict(&signed_bytes, &signature)
            .map_err(|_| bad())?;
        signers.insert(public.to_bytes());
    }
    let required = trust.threshold as usize;
    if signers.len() < required.max(1) {
        return Err(BundleError::TooFewSignatures {
            valid: signers.len(),
            required: required.max(1),
        });
    }
    Ok(Verified {
        bundle_version: signature_file.manifest.bundle_version,
        signers: signature_file.signatures.into_keys().collect(),
        threshold: required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Metadata, TrustKey};
    use crate::units::Timestamp;

    fn signer(name: &str, byte: u8) -> SignerKey {
        SignerKey::from_seed(&format!("ed25519:{name}"), [byte; 32]).unwrap()
    }

    fn trust(threshold: u32, signers: &[&SignerKey]) -> TrustAnchors {
        TrustAnchors {
            api_version: crate::API_VERSION.to_owned(),
            kind: "TrustAnchors".to_owned(),
            metadata: Metadata {
                name: "t".to_owned(),
                version: 1,
                issued: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            },
            threshold,
            keys: signers
                .iter()
                .map(|s| TrustKey {
                    id: s.id().to_owned(),
                    public_key: s.public_key(),
                    owner: "o".to_owned(),
                })
                .collect(),
        }
    }

    const FILES: &[(&str, &[u8])] = &[("a.yaml", b"a: 1\n"), ("b.yaml", b"b: 2\n")];

    #[track_caller]
    fn check(signatures: &[u8], files: &[(&str, &[u8])], trust: &TrustAnchors, expect: &str) {
        let got = match verify(signatures, files, trust) {
            Ok(verified) => format!(
                "ok v{} {}",
                verified.bundle_version,
                verified.signers.join(",")
            ),
            Err(error) => error.to_string(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn sign_and_verify() {
        let (alice, bob, eve) = (signer("alice", 1), signer("bob", 2), signer("eve", 3));
        let pinned = trust(2, &[&alice, &bob]);
        let one = sign(None, 7, FILES, &alice).unwrap().signatures.to_json();
        check(
            one.as_bytes(),
            FILES,
            &pinned,
            "too few signatures: 1 valid signature, 2 required",
        );
        let two = sign(Some(one.as_bytes()), 7, FILES, &bob)
            .unwrap()
            .signatures
            .to_json();
        check(
            two.as_bytes(),
            FILES,
            &pinned,
            "ok v7 ed25519:alice,ed25519:bob",
        );
        // Signing twice by the same key replaces the signature.
        let again = sign(Some(two.as_bytes()), 7, FILES, &bob).unwrap();
        assert_eq!(again.signatures.signatures.len(), 2);
        assert!(again.dropped.is_empty());
        check(
            two.as_bytes(),
            &[("a.yaml", b"a: 1\n"), ("b.yaml", b"b: 3\n")],
            &pinned,
            "b.yaml: content does not match the signed manifest (SHA-256 differs); the file was changed after signing",
        );
        check(
            two.as_bytes(),
            &FILES[..1],
            &pinned,
            "b.yaml: file is in the signed manifest but missing from the bundle",
        );
        check(
            two.as_bytes(),
            &[FILES[0], FILES[1], ("c.yaml", b"")],
            &pinned,
            "c.yaml: file is in the bundle but not in the signed manifest",
        );
        let with_eve = sign(Some(two.as_bytes()), 7, FILES, &eve)
            .unwrap()
            .signatures
            .to_json();
        check(
            with_eve.as_bytes(),
            FILES,
            &pinned,
            "signature by ed25519:eve, which is not a pinned trust anchor key",
        );
        let tampered = two.replace("\"bundleVersion\": 7", "\"bundleVersion\": 8");
        check(
            tampered.as_bytes(),
            FILES,
            &pinned,
            "signature by ed25519:alice does not verify: the manifest was changed or the signature is corrupt",
        );
        // A new manifest drops the other signer's stale signature.
        let resigned = sign(Some(two.as_bytes()), 8, FILES, &alice).unwrap();
        assert_eq!(resigned.dropped, vec!["ed25519:bob".to_owned()]);
        check(
            b"{",
            FILES,
            &pinned,
            "SIGNATURES.json is malformed: EOF while parsing an object at line 1 column 1",
        );
    }

    #[test]
    fn canonical_json_sorts_and_compacts() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, "ü"], "c": null}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":null,"d":[1,"ü"]},"b":1}"#
        );
    }

    #[test]
    fn key_file_round_trip() {
        let key = signer("alice", 9);
        let parsed = SignerKey::parse(&key.to_file_string()).unwrap();
        assert_eq!(parsed.id(), "ed25519:alice");
        assert_eq!(parsed.public_key(), key.public_key());
        assert!(SignerKey::parse("ed25519 alice short").is_err());
    }
}
