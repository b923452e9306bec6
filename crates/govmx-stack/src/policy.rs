//! The run's policy bundle: two run signer keys, a TrustAnchors file (threshold 2) and a signed
//! bundle naming the network's listed homeservers, all kept in `<state>/policy/`.
//!
//! ```text
//! <state>/policy/signers/{run-signer-1.key,run-signer-2.key}   secret keys (0600)
//! <state>/policy/trust.yaml                                    TrustAnchors, threshold 2
//! <state>/policy/bundles/v<N>/                                 one directory per publication
//! <state>/policy/bundle -> bundles/v<N>                        what the gates read
//! ```
//!
//! Every publication is written into a fresh directory and then swapped in by renaming a
//! symlink, so a gate polling the bundle never sees a half-written bundle. Signing uses
//! `govmx_policy::bundle::sign`, the same code as `govmx policy sign`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use govmx_policy::bundle::{self, SIGNATURES_FILE, SignatureFile, SignerKey};
use govmx_policy::generate::{GeneratedMember, GeneratedMetadata, federation_bundle};

use crate::util::{create_dir, write_file, yaml_str};
use crate::{Result, StackError};

/// Number of run signers, and the threshold pinned in the trust file.
pub const RUN_SIGNERS: usize = 2;

/// One entry of the federation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedServer {
    /// The Matrix server name (`IP:port`).
    pub server_name: String,
    /// `agency`, `citizen` or `infrastructure`.
    pub class: String,
    /// Pinned federation signing keys: key id (`ed25519:a_XXXX`) → unpadded base64 public key.
    pub signing_keys: Vec<(String, String)>,
    /// Hosts (`host:port`) that serve federation for this server.
    pub delegated_hosts: Vec<String>,
}

/// Who signs a publication (see [`RunPolicy::publish_signed_by`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signers {
    /// Both run signers: meets the threshold.
    Run,
    /// One run signer and a key that is not pinned in the trust file: must be rejected.
    OneRunSignerAndAnUnpinnedKey,
}

/// The run's signers, trust file and bundle directory.
#[derive(Debug)]
pub struct RunPolicy {
    dir: PathBuf,
    signers: Vec<SignerKey>,
}

impl RunPolicy {
    /// Loads the signers in `dir` (`<state>/policy`) or generates them, and (re)writes the trust file.
    pub fn load_or_create(dir: &Path) -> Result<RunPolicy> {
        let signer_dir = dir.join("signers");
        create_dir(&signer_dir)?;
        create_dir(&dir.join("bundles"))?;
        let mut signers = Vec::new();
        for i in 1..=RUN_SIGNERS {
            let path = signer_dir.join(format!("run-signer-{i}.key"));
            let key = match std::fs::read_to_string(&path) {
                Ok(text) => SignerKey::parse(&text).map_err(|e| StackError::CorruptState {
                    path: path.clone(),
                    detail: e.to_string(),
                })?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let key = new_signer(&format!("ed25519:govmx_run_{i}"))?;
                    write_file(&path, key.to_file_string().as_bytes(), 0o600)?;
                    key
                }
                Err(source) => {
                    return Err(StackError::Io {
                        action: "reading",
                        path,
                        source,
                    });
                }
            };
            signers.push(key);
        }
        let policy = RunPolicy {
            dir: dir.to_owned(),
            signers,
        };
        write_file(
            &policy.trust_path(),
            render_trust(&policy.signers).as_bytes(),
            0o644,
        )?;
        Ok(policy)
    }

    /// The TrustAnchors file the gates pin.
    pub fn trust_path(&self) -> PathBuf {
        self.dir.join("trust.yaml")
    }

    /// The bundle directory the gates read (a symlink to the current publication).
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The version of the bundle currently published, if any.
    pub fn current_version(&self) -> Option<u64> {
        let bytes = std::fs::read(self.bundle_dir().join(SIGNATURES_FILE)).ok()?;
        Some(SignatureFile::parse(&bytes).ok()?.manifest.bundle_version)
    }

    /// Publishes a bundle listing `servers`, signed by both run signers; returns its version.
    pub fn publish(&self, servers: &[ListedServer]) -> Result<u64> {
        self.publish_signed_by(servers, Signers::Run)
    }

    /// Publishes a bundle listing `servers` signed by `signers`; returns its version (the
    /// current version + 1).
    pub fn publish_signed_by(&self, servers: &[ListedServer], signers: Signers) -> Result<u64> {
        let version = self.current_version().unwrap_or(0) + 1;
        let files = render_bundle(version, servers, time::OffsetDateTime::now_utc());
        let slices: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(name, text)| (*name, text.as_bytes()))
            .collect();
        let throwaway;
        let keys: Vec<&SignerKey> = match signers {
            Signers::Run => self.signers.iter().collect(),
            Signers::OneRunSignerAndAnUnpinnedKey => {
                throwaway = new_signer("ed25519:not_a_trust_anchor")?;
                vec![&self.signers[0], &throwaway]
            }
        };
        let mut signatures: Option<String> = None;
        for key in keys {
            let outcome = bundle::sign(
                signatures.as_deref().map(str::as_bytes),
                version,
                &slices,
                key,
            )
            .map_err(|e| StackError::InvalidSpec(format!("signing the run's bundle: {e}")))?;
            signatures = Some(outcome.signatures.to_json());
        }

        let target = self.dir.join("bundles").join(format!("v{version}"));
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(StackError::io("removing", &target))?;
        }
        create_dir(&target)?;
        for (name, text) in &files {
            write_file(&target.join(name), text.as_bytes(), 0o644)?;
        }
        if let Some(json) = signatures {
            write_file(&target.join(SIGNATURES_FILE), json.as_bytes(), 0o644)?;
        }
        // Swap the symlink in one rename: readers see the old or the new bundle, never a mix.
        let link = self.bundle_dir();
        let tmp = self.dir.join(".bundle.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("bundles").join(format!("v{version}")), &tmp)
            .map_err(StackError::io("linking", &tmp))?;
        if link.is_dir() && !link.is_symlink() {
            std::fs::remove_dir_all(&link).map_err(StackError::io("removing", &link))?;
        }
        std::fs::rename(&tmp, &link).map_err(StackError::io("renaming", &link))?;
        // Keep the last few publications only.
        if version > 3 {
            let old = self.dir.join("bundles").join(format!("v{}", version - 3));
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(version)
    }
}

fn new_signer(id: &str) -> Result<SignerKey> {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SignerKey::from_seed(id, seed)
        .map_err(|e| StackError::InvalidSpec(format!("generating signer {id}: {e}")))
}

fn render_trust(signers: &[SignerKey]) -> String {
    let mut doc = format!(
        "# Generated by govmx-stack: the run's bundle signers, pinned for the federation gates.\n\
apiVersion: govmx.de/v1\n\
kind: TrustAnchors\n\
metadata: {{name: govmx-run-signers, version: 1, issued: {issued}}}\n\
threshold: {RUN_SIGNERS}\n\
keys:\n",
        issued = yaml_str("2026-01-01T00:00:00Z"),
    );
    for signer in signers {
        let _ = writeln!(
            doc,
            "  - {{id: {}, publicKey: {}, owner: govmx-stack}}",
            yaml_str(signer.id()),
            yaml_str(&signer.public_key())
        );
    }
    doc
}

/// The documents of a bundle (name, text): the federation list and permissive companions.
fn render_bundle(
    version: u64,
    servers: &[ListedServer],
    now: time::OffsetDateTime,
) -> Vec<(&'static str, String)> {
    let members: Vec<GeneratedMember<'_>> = servers
        .iter()
        .map(|server| GeneratedMember {
            server_name: &server.server_name,
            class: &server.class,
            signing_keys: &server.signing_keys,
            delegated_hosts: &server.delegated_hosts,
        })
        .collect();
    let meta = GeneratedMetadata {
        name: "govmx-local-network",
        version,
        // A minute in the past: a list issued in the future is refused.
        issued: now - time::Duration::minutes(1),
        max_age: "30d",
    };
    federation_bundle(
        "Generated by govmx-stack: the homeservers of this local network.",
        meta,
        &members,
    )
}

/// The public half of a Synapse signing key file (`ed25519 <version> <base64 seed>`) as
/// `(key id, unpadded base64 public key)`.
pub fn synapse_public_key(signing_key_file: &str) -> Option<(String, String)> {
    let mut parts = signing_key_file.split_whitespace();
    let (Some("ed25519"), Some(version), Some(seed)) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let seed: [u8; 32] = STANDARD_NO_PAD.decode(seed).ok()?.try_into().ok()?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Some((
        format!("ed25519:{version}"),
        STANDARD_NO_PAD.encode(key.verifying_key().as_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> ListedServer {
        ListedServer {
            server_name: name.to_owned(),
            class: "agency".to_owned(),
            signing_keys: vec![(
                "ed25519:a_test".to_owned(),
                synapse_public_key("ed25519 a_test AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
                    .unwrap()
                    .1,
            )],
            delegated_hosts: vec![name.to_owned()],
        }
    }

    fn verify(policy: &RunPolicy) -> std::result::Result<u64, String> {
        let dir = policy.bundle_dir();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            files.push((name, std::fs::read(entry.path()).unwrap()));
        }
        let signatures = files
            .iter()
            .find(|(n, _)| n == SIGNATURES_FILE)
            .map(|(_, b)| b.clone())
            .unwrap();
        let contents: Vec<(&str, &[u8])> = files
            .iter()
            .filter(|(n, _)| n != SIGNATURES_FILE)
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        for (name, bytes) in &contents {
            govmx_policy::parse_document(name, bytes, Some(time::OffsetDateTime::now_utc()))
                .map_err(|e| format!("{e:?}"))?;
        }
        let trust = match govmx_policy::parse_document(
            "trust",
            &std::fs::read(policy.trust_path()).unwrap(),
            None,
        )
        .map_err(|e| format!("{e:?}"))?
        .document
        {
            govmx_policy::Document::TrustAnchors(trust) => trust,
            _ => panic!("not a trust file"),
        };
        bundle::verify(&signatures, &contents, &trust)
            .map(|v| v.bundle_version)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn publications_verify_and_a_bad_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RunPolicy::load_or_create(dir.path()).unwrap();
        let servers = [server("127.0.0.2:8448"), server("127.0.0.3:8448")];
        assert_eq!(policy.publish(&servers).unwrap(), 1);
        assert_eq!(verify(&policy), Ok(1));
        assert_eq!(policy.publish(&servers[..1]).unwrap(), 2);
        assert_eq!(verify(&policy), Ok(2));
        assert_eq!(policy.current_version(), Some(2));
        policy
            .publish_signed_by(&servers, Signers::OneRunSignerAndAnUnpinnedKey)
            .unwrap();
        let error = verify(&policy).unwrap_err();
        assert!(error.contains("not_a_trust_anchor"), "{error}");

        // The signers are kept: a second load verifies the same bundles.
        let again = RunPolicy::load_or_create(dir.path()).unwrap();
        assert_eq!(again.publish(&servers).unwrap(), 4);
        assert_eq!(verify(&again), Ok(4));
    }
}
