//! [`CaDir`]: the CA's state directory, shared by the `govmx-agency-ca` server and the
//! `govmx ca` commands. Every mutating operation takes an exclusive lock on `<dir>/.lock`,
//! re-reads the state, changes it, writes files atomically (temp file + rename) and appends
//! to the issuance log, so the CLI can create tokens and revoke while the server runs.
//!
//! Layout:
//! ```text
//! root.pem               root certificate (pin it)
//! root-key.pem           root key, ENCRYPTED PRIVATE KEY (move offline after init)
//! intermediate.pem       online intermediate certificate
//! intermediate-key.pem   intermediate key, PKCS#8, mode 0600
//! tokens.json            enrollment tokens (hashes only)
//! revoked.json           revoked serials + CRL number
//! crl.pem                the current signed CRL
//! issuance.log           hash-chained JSON lines
//! ```

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use crate::{
    ca::{
        AgencyCa, CaError, CaSettings, HierarchyOptions, IssueError, IssueRequest, Issued, Profile,
        RevocationReason, RevokedEntry, generate_hierarchy, pem_encode,
    },
    log::{Event, IssuanceLog, LogError, audit},
    names::AgencyDirectory,
    token::{TokenError, TokenRecord, TokenStore},
};

/// Longest enrollment token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::days(30);

/// Why a CA directory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// I/O on a state file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A state file does not parse.
    #[error("{}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The problem.
        why: String,
    },
    /// `init` on a directory that already holds a CA.
    #[error("{}: already holds a CA", .0.display())]
    AlreadyInitialised(PathBuf),
    /// CA material problem.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Issuance log problem.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The request was refused.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// Revoking a serial this CA never issued.
    #[error("serial {0} was not issued by this CA")]
    UnknownSerial(String),
    /// Revoking twice.
    #[error("serial {0} is already revoked")]
    AlreadyRevoked(String),
    /// Invalid argument (agency, ttl, …).
    #[error("{0}")]
    Invalid(String),
}

/// `revoked.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationState {
    /// Number of the last CRL signed.
    pub crl_number: u64,
    /// Revoked certificates.
    pub revoked: Vec<RevokedEntry>,
}

/// A summary for the status endpoint and `govmx ca status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Root certificate SHA-256 (hex).
    pub root_sha256: String,
    /// Intermediate expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub intermediate_not_after: OffsetDateTime,
    /// Entries in the issuance log.
    pub log_entries: u64,
    /// Revoked certificates.
    pub revoked: usize,
    /// Current CRL number.
    pub crl_number: u64,
    /// Current CRL nextUpdate.
    #[serde(with = "time::serde::rfc3339::option")]
    pub crl_next_update: Option<OffsetDateTime>,
}

/// An enrollment request as it arrives over HTTP or from `govmx ca issue`.
#[derive(Clone, Copy, Debug)]
pub struct EnrollRequest<'a> {
    /// The token secret.
    pub token: &'a str,
    /// The profile.
    pub profile: Profile,
    /// CSR, PEM or DER.
    pub csr: &'a [u8],
    /// agency-identity: the master key.
    pub master_key: Option<&'a str>,
}

/// Result of an enrollment: the certificate and the chain to present.
#[derive(Clone, Debug)]
pub struct Enrolled {
    /// The certificate.
    pub issued: Issued,
    /// Leaf + intermediate, PEM.
    pub chain_pem: String,
}

/// An opened CA directory.
#[derive(Debug)]
pub struct CaDir {
    dir: PathBuf,
    ca: AgencyCa,
}

const ROOT: &str = "root.pem";
const ROOT_KEY: &str = "root-key.pem";
const INTERMEDIATE: &str = "intermediate.pem";
const INTERMEDIATE_KEY: &str = "intermediate-key.pem";
const TOKENS: &str = "tokens.json";
const REVOKED: &str = "revoked.json";
const CRL: &str = "crl.pem";
const LOG: &str = "issuance.log";
const LOCK: &str = ".lock";

impl CaDir {
    /// Creates a new hierarchy in `dir` (created with mode 0700 if missing; must not hold a CA)
    /// and signs the first, empty CRL.
    pub fn init(
        dir: &Path,
        options: &HierarchyOptions,
        passphrase: &[u8],
        settings: CaSettings,
        now: OffsetDateTime,
    ) -> Result<CaDir, StoreError> {
        create_private_dir(dir)?;
        if dir.join(ROOT).exists() || dir.join(INTERMEDIATE_KEY).exists() {
            return Err(StoreError::AlreadyInitialised(dir.to_owned()));
        }
        let material = generate_hierarchy(options, passphrase, now)?;
        let ca = AgencyCa::from_material(&material, settings)?;
        write_atomic(
            &dir.join(ROOT_KEY),
            material.root_key_encrypted_pem.as_bytes(),
            true,
        )?;
        write_atomic(
            &dir.join(INTERMEDIATE_KEY),
            material.intermediate_key_pem.as_bytes(),
            true,
        )?;
        write_atomic(
            &dir.join(INTERMEDIATE),
            material.intermediate_cert_pem.as_bytes(),
            false,
        )?;
        write_atomic(&dir.join(TOKENS), b"{\"tokens\":[]}\n", true)?;
        let mut log = IssuanceLog::open(&dir.join(LOG))?;
        log.append(
            Event::Init {
                root_sha256: hex::encode(Sha256::digest(ca.root_der())),
                intermediate_sha256: hex::encode(Sha256::digest(ca.intermediate_der())),
            },
            now,
        )?;
        let this = CaDir {
            dir: dir.to_owned(),
            ca,
        };
        this.write_crl(&RevocationState::default(), now)?;
        // The root certificate last: its presence marks a complete CA directory.
        write_atomic(&dir.join(ROOT), material.root_cert_pem.as_bytes(), false)?;
        Ok(this)
    }

    /// Opens an initialised directory.
    pub fn open(
        dir: &Path,
        settings: CaSettings,
        agencies: Option<AgencyDirectory>,
    ) -> Result<CaDir, StoreError> {
        let root = read_string(&dir.join(ROOT))?;
        let intermediate = read_string(&dir.join(INTERMEDIATE))?;
        let key = read_string(&dir.join(INTERMEDIATE_KEY))?;
        let mut ca = AgencyCa::from_pem(&root, &intermediate, &key, settings)?;
        if let Some(agencies) = agencies {
            ca = ca.with_agencies(agencies);
        }
        Ok(CaDir {
            dir: dir.to_owned(),
            ca,
        })
    }

    /// Opens the CA in `dir`, or creates it there first (what a per-run CA such as `govmx up`'s
    /// wants; the passphrase then only protects the root key file).
    pub fn open_or_init(
        dir: &Path,
        options: &HierarchyOptions,
        passphrase: &[u8],
        settings: CaSettings,
        now: OffsetDateTime,
    ) -> Result<CaDir, StoreError> {
        if dir.join(ROOT).is_file() {
            CaDir::open(dir, settings, None)
        } else {
            CaDir::init(dir, options, passphrase, settings, now)
        }
    }

    /// Issues a `homeserver-tls` certificate with a new key for `hosts` (in-process, for the
    /// local stack), logs it, and returns `(chain PEM = leaf + intermediate, key PEM)`: what a
    /// TLS server presents. Peers pin [`CaDir::root_path`].
    pub fn issue_homeserver_tls(
        &self,
        hosts: &[crate::names::SanHost],
        now: OffsetDateTime,
    ) -> Result<(String, String), StoreError> {
        let issued = self.ca.issue_homeserver_tls(hosts, now)?;
        self.record_issued(&issued.issued, now)?;
        Ok((self.ca.chain_pem(&issued.issued), issued.key_pem))
    }

    /// Path of the root certificate (PEM): pin it (`federation_custom_ca_list`, verifiers).
    pub fn root_path(&self) -> PathBuf {
        self.dir.join(ROOT)
    }

    /// The CA.
    pub fn ca(&self) -> &AgencyCa {
        &self.ca
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of the issuance log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    /// Path of the current CRL (PEM).
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL)
    }

    /// Creates a one-time enrollment token; returns the secret (show it once) and its record.
    pub fn create_token(
        &self,
        agency: &str,
        profile: Profile,
        subject: Option<&str>,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<(String, TokenRecord), StoreError> {
        if ttl <= Duration::ZERO || ttl > MAX_TOKEN_TTL {
            return Err(StoreError::Invalid(format!(
                "token lifetime must be between 1s and {} days",
                MAX_TOKEN_TTL.whole_days()
            )));
        }
        if let Some(agencies) = self.ca.agencies()
            && agencies.get(agency).is_none()
        {
            return Err(StoreError::Invalid(format!(
                "unknown agency {agency:?} (not in the Agencies document)"
            )));
        }
        let _lock = self.lock()?;
        let mut tokens = self.read_tokens()?;
        let (secret, record) = tokens.create(agency, profile, subject, ttl, now);
        self.write_tokens(&tokens)?;
        IssuanceLog::open_tail(&self.log_path())?.append(
            Event::Token {
                id: record.id.clone(),
                agency: record.agency.clone(),
                profile,
            },
            now,
        )?;
        Ok((secret, record))
    }

    /// Redeems a token for a certificate: token check, CSR and policy checks, signing, token
    /// marked used, issuance logged. On any refusal nothing is issued and the token stays unused.
    pub fn enroll(
        &self,
        request: &EnrollRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Enrolled, StoreError> {
        let _lock = self.lock()?;
        let mut tokens = self.read_tokens()?;
        let record = tokens.check(request.token, request.profile, now)?.clone();
        let issued = self.ca.issue(
            &IssueRequest {
                profile: request.profile,
                agency: &record.agency,
                csr: request.csr,
                master_key: request.master_key,
                bound_subject: record.subject.as_deref(),
            },
            now,
        )?;
        // Open the log first: a broken log stops issuance before the token is spent.
        let mut log = IssuanceLog::open_tail(&self.log_path())?;
        tokens.redeem(request.token, &issued.serial, now)?;
        self.write_tokens(&tokens)?;
        log.append(issued_event(&issued, Some(record.id)), now)?;
        Ok(Enrolled {
            chain_pem: self.ca.chain_pem(&issued),
            issued,
        })
    }

    /// Records an in-process issuance (e.g. [`AgencyCa::issue_homeserver_tls`]) in the log.
    pub fn record_issued(&self, issued: &Issued, now: OffsetDateTime) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        IssuanceLog::open_tail(&self.log_path())?.append(issued_event(issued, None), now)?;
        Ok(())
    }

    /// Revokes `serial` (must be in the issuance log), re-signs the CRL and returns it (PEM).
    pub fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
        now: OffsetDateTime,
    ) -> Result<String, StoreError> {
        let serial = serial.trim().to_ascii_lowercase().replace(':', "");
        let _lock = self.lock()?;
        let log_bytes = read_bytes(&self.log_path())?;
        let report = audit(&log_bytes).map_err(|source| LogError::Broken {
            path: self.log_path(),
            source,
        })?;
        let issued = report
            .events
            .iter()
            .any(|e| matches!(e, Event::Issued { serial: s, .. } if *s == serial));
        if !issued {
            return Err(StoreError::UnknownSerial(serial));
        }
        let mut state = self.read_revocations()?;
        if state.revoked.iter().any(|r| r.serial == serial) {
            return Err(StoreError::AlreadyRevoked(serial));
        }
        state.revoked.push(RevokedEntry {
            serial: serial.clone(),
            revoked_at: now,
            reason,
        });
        let pem = self.write_crl(&state, now)?;
        IssuanceLog::open_tail(&self.log_path())?.append(Event::Revoked { serial, reason }, now)?;
        Ok(pem)
    }

    /// Re-signs the CRL with a new number and `nextUpdate`; returns it (PEM).
    pub fn regenerate_crl(&self, now: OffsetDateTime) -> Result<String, StoreError> {
        let _lock = self.lock()?;
        let state = self.read_revocations()?;
        self.write_crl(&state, now)
    }

    /// The current CRL (PEM) as stored.
    pub fn crl_pem(&self) -> Result<String, StoreError> {
        read_string(&self.crl_path())
    }

    /// A summary of the CA state.
    pub fn status(&self) -> Result<Status, StoreError> {
        let state = self.read_revocations()?;
        let log_entries = IssuanceLog::open_tail(&self.log_path())?.len();
        let crl_next_update = self.crl_pem().ok().and_then(|pem| crl_next_update(&pem));
        Ok(Status {
            root_sha256: hex::encode(Sha256::digest(self.ca.root_der())),
            intermediate_not_after: self.ca.intermediate_not_after(),
            log_entries,
            revoked: state.revoked.len(),
            crl_number: state.crl_number,
            crl_next_update,
        })
    }

    fn write_crl(
        &self,
        state: &RevocationState,
        now: OffsetDateTime,
    ) -> Result<String, StoreError> {
        let mut state = state.clone();
        state.crl_number += 1;
        let der = self.ca.crl_der(&state.revoked, state.crl_number, now)?;
        let pem = pem_encode("X509 CRL", &der);
        let json = serde_json::to_vec_pretty(&state).unwrap_or_default();
        write_atomic(&self.dir.join(REVOKED), &json, false)?;
        write_atomic(&self.crl_path(), pem.as_bytes(), false)?;
        Ok(pem)
    }

    fn read_tokens(&self) -> Result<TokenStore, StoreError> {
        let path = self.dir.join(TOKENS);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TokenStore::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn write_tokens(&self, tokens: &TokenStore) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(tokens).unwrap_or_default();
        write_atomic(&self.dir.join(TOKENS), &json, true)
    }

    fn read_revocations(&self) -> Result<RevocationState, StoreError> {
        let path = self.dir.join(REVOKED);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RevocationState::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock()
            .map_err(|source| StoreError::Io { path, source })?;
        Ok(file)
    }
}

fn issued_event(issued: &Issued, token: Option<String>) -> Event {
    Event::Issued {
        serial: issued.serial.clone(),
        profile: issued.profile,
        agency: issued.agency.clone(),
        subject: issued.subject.clone(),
        not_after: crate::token::rfc3339(issued.not_after),
        cert_sha256: issued.sha256.clone(),
        token,
    }
}

/// `nextUpdate` of a PEM CRL.
pub fn crl_next_update(pem: &str) -> Option<OffsetDateTime> {
    use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject as _};
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).ok()?;
    crl.next_update().map(|t| t.to_datetime())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err)
}

fn read_string(path: &Path) -> Result<String, StoreError> {
    fs::read_to_string(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, StoreError> {
    fs::read(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to a temp file next to `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}
