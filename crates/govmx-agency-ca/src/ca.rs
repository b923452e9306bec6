//! The CA itself: hierarchy generation ([`generate_hierarchy`]), the online intermediate
//! ([`AgencyCa`]) that issues from CSRs under the profile policy, in-process issuance for the
//! stack ([`AgencyCa::issue_homeserver_tls`]) and CRL signing ([`AgencyCa::crl_der`]).
//!
//! The CA decides every field: serial (random 127 bits), validity (profile lifetime, capped at the
//! intermediate's expiry), `CA:FALSE`, key usage, extended key usage, subject, subjectAltNames
//! (only names the policy allows) and extensions. From a CSR it takes the public key and the
//! list of requested names, nothing else.

use std::{fmt, str::FromStr};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, RevokedCertParams, SanType,
    SerialNumber, SignatureAlgorithm,
};
use ruma_common::UserId;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use crate::{
    csr::{CsrError, CsrInfo, parse_csr},
    keys::{self, KeyError},
    names::{
        AgencyDirectory, SanHost, agency_owns_account, agency_owns_host, matrix_uri,
        user_id_from_matrix_uri,
    },
    oid,
};

/// How far `notBefore` lies before `now`, for clients with slightly slow clocks.
pub const BACKDATE: Duration = Duration::minutes(5);

/// A certificate profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Homeserver federation TLS: serverAuth, DNS/IP SANs of the agency's servers.
    HomeserverTls,
    /// mTLS between govmx services: serverAuth + clientAuth, DNS/IP SANs.
    ServiceMtls,
    /// An official Matrix account bound to its agency: `matrix:u/` URI SAN, agency in the
    /// subject, cross-signing master key extension, agency-identity EKU, short lifetime.
    AgencyIdentity,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [
        Profile::HomeserverTls,
        Profile::ServiceMtls,
        Profile::AgencyIdentity,
    ];

    /// The profile's name (`homeserver-tls`, `service-mtls`, `agency-identity`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::HomeserverTls => "homeserver-tls",
            Profile::ServiceMtls => "service-mtls",
            Profile::AgencyIdentity => "agency-identity",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown profile {s:?}; expected homeserver-tls, service-mtls or agency-identity")
            })
    }
}

/// Certificate lifetimes per profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// `homeserver-tls` (default 30 days).
    pub homeserver_tls: Duration,
    /// `service-mtls` (default 7 days).
    pub service_mtls: Duration,
    /// `agency-identity` (default 7 days).
    pub agency_identity: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            homeserver_tls: Duration::days(30),
            service_mtls: Duration::days(7),
            agency_identity: Duration::days(7),
        }
    }
}

impl Lifetimes {
    /// The lifetime of `profile`.
    pub fn of(&self, profile: Profile) -> Duration {
        match profile {
            Profile::HomeserverTls => self.homeserver_tls,
            Profile::ServiceMtls => self.service_mtls,
            Profile::AgencyIdentity => self.agency_identity,
        }
    }
}

/// Issuance settings of the online CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSettings {
    /// Lifetimes per profile.
    pub lifetimes: Lifetimes,
    /// URL put into every certificate's cRLDistributionPoints (none when `None`).
    pub crl_distribution_point: Option<String>,
    /// `nextUpdate - thisUpdate` of generated CRLs (default 7 days).
    pub crl_validity: Duration,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            lifetimes: Lifetimes::default(),
            crl_distribution_point: None,
            crl_validity: Duration::days(7),
        }
    }
}

/// Options for [`generate_hierarchy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HierarchyOptions {
    /// The CA's name, e.g. "Land Hessen"; subjects become `CN=<name> Root CA` and
    /// `CN=<name> Issuing CA 1`, both with `O=<name>`.
    pub name: String,
    /// Root validity (default 20 years).
    pub root_lifetime: Duration,
    /// Intermediate validity (default 3 years).
    pub intermediate_lifetime: Duration,
    /// PBKDF2 iterations protecting the root key.
    pub kdf_iterations: u32,
}

impl HierarchyOptions {
    /// Defaults for the CA called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            root_lifetime: Duration::days(20 * 365),
            intermediate_lifetime: Duration::days(3 * 365),
            kdf_iterations: keys::DEFAULT_KDF_ITERATIONS,
        }
    }
}

/// A new CA hierarchy: the root (key encrypted) and the online intermediate it signed.
#[derive(Clone)]
pub struct CaMaterial {
    /// Root certificate (PEM). Pin this in verifiers and `federation_custom_ca_list`.
    pub root_cert_pem: String,
    /// Root key, `ENCRYPTED PRIVATE KEY` PEM. Keep offline.
    pub root_key_encrypted_pem: String,
    /// Intermediate certificate (PEM).
    pub intermediate_cert_pem: String,
    /// Intermediate key, plain PKCS#8 PEM (online; store with mode 0600).
    pub intermediate_key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial").finish_non_exhaustive()
    }
}

/// Why the CA could not be created or loaded, or a CRL not signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A certificate PEM did not parse.
    #[error("{what}: {why}")]
    BadCertificate {
        /// Which certificate.
        what: &'static str,
        /// The problem.
        why: String,
    },
    /// Invalid options.
    #[error("invalid option: {0}")]
    Options(String),
    /// rcgen refused to build or sign.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Why a certificate was not issued. Every variant is a refusal; no certificate was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The CSR itself was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// No Agencies document is loaded: CSR issuance is denied by default.
    #[error("no agencies policy loaded; issuance is denied by default")]
    NoPolicy,
    /// The agency id is not in the Agencies document.
    #[error("unknown agency {0:?}")]
    UnknownAgency(String),
    /// The request names nothing to certify.
    #[error("the request names no {0}")]
    NoNames(&'static str),
    /// A requested name belongs to nobody or to another agency.
    #[error("name {name:?} does not belong to agency {agency:?}")]
    ForeignName {
        /// The name.
        name: String,
        /// The agency the token is bound to.
        agency: String,
    },
    /// The subject commonName names something other than the requested names.
    #[error("subject commonName {0:?} is not one of the requested names")]
    CommonNameMismatch(String),
    /// A name kind the profile never certifies (e.g. a DNS name in agency-identity).
    #[error("{kind} name {name:?} is not allowed in profile {profile}")]
    NameNotForProfile {
        /// The name.
        name: String,
        /// Its kind.
        kind: &'static str,
        /// The profile.
        profile: Profile,
    },
    /// A name that is not a valid host name / IP / Matrix URI.
    #[error("invalid name: {0}")]
    BadName(String),
    /// agency-identity needs exactly one `matrix:u/` URI.
    #[error("profile agency-identity needs exactly one matrix:u/ URI subjectAltName, found {0}")]
    MatrixIdCount(usize),
    /// The Matrix ID is not an official account of the agency.
    #[error("{user_id} is not an official account of agency {agency:?}")]
    NotOfficialAccount {
        /// The user ID.
        user_id: String,
        /// The agency.
        agency: String,
    },
    /// agency-identity without a master key.
    #[error("profile agency-identity needs the cross-signing master key")]
    MissingMasterKey,
    /// A master key that is not an unpadded base64 Ed25519 public key.
    #[error("invalid master key: {0}")]
    BadMasterKey(String),
    /// A master key was sent for a TLS profile.
    #[error("a master key is only certified in profile agency-identity, not {0}")]
    MasterKeyNotForProfile(Profile),
    /// The token is bound to another subject.
    #[error("the enrollment token is bound to {bound:?}, the request is for {requested:?}")]
    SubjectMismatch {
        /// Bound subject.
        bound: String,
        /// Requested subject.
        requested: String,
    },
    /// Building or signing failed (an internal error, not the requester's fault).
    #[error("signing failed: {0}")]
    Signing(String),
}

impl IssueError {
    /// A short, stable label for metrics (`csr`, `policy`, `internal`).
    pub fn kind(&self) -> &'static str {
        match self {
            IssueError::Csr(_) => "csr",
            IssueError::Signing(_) => "internal",
            _ => "policy",
        }
    }
}

/// A CSR issuance request, already authorised (see [`crate::store::CaDir::enroll`] for tokens).
#[derive(Clone, Copy, Debug)]
pub struct IssueRequest<'a> {
    /// The profile.
    pub profile: Profile,
    /// The agency id (from the token).
    pub agency: &'a str,
    /// The CSR, PEM or DER.
    pub csr: &'a [u8],
    /// agency-identity: the cross-signing master key (unpadded base64 Ed25519).
    pub master_key: Option<&'a str>,
    /// The subject the token is bound to (a Matrix ID, or one host), if any.
    pub bound_subject: Option<&'a str>,
}

/// An issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Its profile.
    pub profile: Profile,
    /// The agency id, if issued for one.
    pub agency: Option<String>,
    /// What it certifies: the Matrix ID or the hosts, for logs.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// SHA-256 of the DER, lower-case hex.
    pub sha256: String,
}

impl Issued {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }
}

/// A certificate with the private key the CA generated for it (in-process issuance).
#[derive(Clone)]
pub struct IssuedWithKey {
    /// The certificate.
    pub issued: Issued,
    /// Its ECDSA P-256 key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedWithKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedWithKey")
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// Why a certificate was revoked (RFC 5280 reason codes we use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key leaked.
    KeyCompromise,
    /// The holder left the agency or the account changed hands.
    AffiliationChanged,
    /// Replaced by a new certificate (e.g. master key rotated).
    Superseded,
    /// The server or account was retired.
    CessationOfOperation,
    /// The holder lost the right to the name.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use RevocationReason::*;
        [
            Unspecified,
            KeyCompromise,
            AffiliationChanged,
            Superseded,
            CessationOfOperation,
            PrivilegeWithdrawn,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown revocation reason {s:?}"))
    }
}

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedEntry {
    /// Serial, lower-case hex.
    pub serial: String,
    /// When the CA revoked it.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// Generates a root (key encrypted under `passphrase`) and an online intermediate it signs.
pub fn generate_hierarchy(
    options: &HierarchyOptions,
    passphrase: &[u8],
    now: OffsetDateTime,
) -> Result<CaMaterial, CaError> {
    let name = options.name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(CaError::Options(
            "the CA name must have 1 to 64 characters".into(),
        ));
    }
    if options.intermediate_lifetime >= options.root_lifetime {
        return Err(CaError::Options(
            "the intermediate must expire before the root".into(),
        ));
    }
    let root_key = keys::generate_key()?;
    let root_key_encrypted_pem = keys::encrypt_key(&root_key, passphrase, options.kdf_iterations)?;
    let mut root = CertificateParams::default();
    root.distinguished_name = dn(&format!("{name} Root CA"), name);
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = now - BACKDATE;
    root.not_after = now + options.root_lifetime;
    root.serial_number = Some(random_serial().1);
    let root_cert = root
        .self_signed(&root_key)
        .map_err(|e| CaError::Signing(e.to_string()))?;

    let intermediate_key = keys::generate_key()?;
    let mut intermediate = CertificateParams::default();
    intermediate.distinguished_name = dn(&format!("{name} Issuing CA 1"), name);
    intermediate.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    intermediate.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    intermediate.use_authority_key_identifier_extension = true;
    intermediate.not_before = now - BACKDATE;
    intermediate.not_after = now + options.intermediate_lifetime;
    intermediate.serial_number = Some(random_serial().1);
    let root_issuer = Issuer::new(root, &root_key);
    let intermediate_cert = intermediate
        .signed_by(&intermediate_key, &root_issuer)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    Ok(CaMaterial {
        root_cert_pem: pem_encode("CERTIFICATE", root_cert.der()),
        root_key_encrypted_pem,
        intermediate_cert_pem: pem_encode("CERTIFICATE", intermediate_cert.der()),
        intermediate_key_pem: intermediate_key.serialize_pem(),
    })
}

fn dn(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

/// 16 random bytes, positive and without a leading zero byte, so the hex form is canonical.
fn random_serial() -> (String, SerialNumber) {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    (hex::encode(bytes), SerialNumber::from_slice(&bytes))
}

/// A P-256 public key taken from a CSR.
struct P256Public<'a>(&'a [u8]);

impl PublicKeyData for P256Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// What a certificate will certify, after the policy checks.
enum Subject {
    Hosts {
        hosts: Vec<SanHost>,
    },
    Identity {
        user_id: String,
        uri: String,
        master_key: String,
    },
}

/// The online CA: the intermediate key and certificate, the pinned root, settings and policy.
pub struct AgencyCa {
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    intermediate_pem: String,
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
    intermediate_not_after: OffsetDateTime,
    settings: CaSettings,
    agencies: Option<AgencyDirectory>,
}

impl fmt::Debug for AgencyCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgencyCa")
            .field("intermediate_not_after", &self.intermediate_not_after)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AgencyCa {
    /// Loads the online CA from the root certificate, the intermediate certificate and the
    /// intermediate key (all PEM). Checks that the key belongs to the intermediate.
    pub fn from_pem(
        root_cert_pem: &str,
        intermediate_cert_pem: &str,
        intermediate_key_pem: &str,
        settings: CaSettings,
    ) -> Result<AgencyCa, CaError> {
        let root_der = cert_der_from_pem("root certificate", root_cert_pem)?;
        let intermediate_der =
            cert_der_from_pem("intermediate certificate", intermediate_cert_pem)?;
        let key = keys::key_from_pem(intermediate_key_pem)?;
        let (intermediate_spki, not_after) = {
            let (_, cert) =
                x509_parser::parse_x509_certificate(&intermediate_der).map_err(|e| {
                    CaError::BadCertificate {
                        what: "intermediate certificate",
                        why: e.to_string(),
                    }
                })?;
            (
                cert.public_key().subject_public_key.data.to_vec(),
                cert.validity().not_after.to_datetime(),
            )
        };
        if intermediate_spki != key.public_key_raw() {
            return Err(CaError::BadCertificate {
                what: "intermediate certificate",
                why: "does not match the intermediate key".into(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&CertificateDer::from(intermediate_der.as_slice()), key)
                .map_err(|e| CaError::BadCertificate {
                    what: "intermediate certificate",
                    why: e.to_string(),
                })?;
        Ok(AgencyCa {
            root_pem: pem_encode("CERTIFICATE", &root_der),
            intermediate_pem: pem_encode("CERTIFICATE", &intermediate_der),
            root_der,
            intermediate_der,
            issuer,
            intermediate_not_after: not_after,
            settings,
            agencies: None,
        })
    }

    /// Loads the CA from freshly generated material.
    pub fn from_material(material: &CaMaterial, settings: CaSettings) -> Result<AgencyCa, CaError> {
        Self::from_pem(
            &material.root_cert_pem,
            &material.intermediate_cert_pem,
            &material.intermediate_key_pem,
            settings,
        )
    }

    /// Sets the agencies policy that CSR issuance is checked against.
    pub fn with_agencies(mut self, agencies: AgencyDirectory) -> Self {
        self.agencies = Some(agencies);
        self
    }

    /// The agencies policy, if loaded.
    pub fn agencies(&self) -> Option<&AgencyDirectory> {
        self.agencies.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// The pinned root certificate (PEM).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The intermediate certificate (PEM).
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// The intermediate certificate (DER).
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// When the intermediate expires (no certificate outlives it).
    pub fn intermediate_not_after(&self) -> OffsetDateTime {
        self.intermediate_not_after
    }

    /// The chain a server or client presents: leaf, then intermediate (PEM).
    pub fn chain_pem(&self, issued: &Issued) -> String {
        let mut chain = issued.cert_pem();
        chain.push_str(&self.intermediate_pem);
        chain
    }

    /// Issues a certificate from a CSR under the profile policy and the Agencies document.
    /// Deny by default: every check that fails is an [`IssueError`] and nothing is signed.
    pub fn issue(
        &self,
        request: &IssueRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        let agencies = self.agencies.as_ref().ok_or(IssueError::NoPolicy)?;
        let agency = agencies
            .get(request.agency)
            .ok_or_else(|| IssueError::UnknownAgency(request.agency.to_owned()))?;
        let csr = parse_csr(request.csr)?;
        let subject = match request.profile {
            Profile::HomeserverTls | Profile::ServiceMtls => {
                if request.master_key.is_some() {
                    return Err(IssueError::MasterKeyNotForProfile(request.profile));
                }
                let hosts = requested_hosts(&csr, request.profile)?;
                for host in &hosts {
                    if !agency_owns_host(agency, host) {
                        return Err(IssueError::ForeignName {
                            name: host.to_string(),
                            agency: agency.id.clone(),
                        });
                    }
                }
                if let Some(bound) = request.bound_subject
                    && !hosts.iter().any(|h| h.to_string() == bound)
                {
                    return Err(IssueError::SubjectMismatch {
                        bound: bound.to_owned(),
                        requested: join_hosts(&hosts),
                    });
                }
                Subject::Hosts { hosts }
            }
            Profile::AgencyIdentity => {
                let (user_id, uri) = requested_matrix_id(&csr)?;
                let parsed = UserId::parse(user_id.as_str())
                    .map_err(|e| IssueError::BadName(format!("{user_id}: {e}")))?;
                if !agency_owns_account(agency, &parsed) {
                    return Err(IssueError::NotOfficialAccount {
                        user_id,
                        agency: agency.id.clone(),
                    });
                }
                if let Some(bound) = request.bound_subject
                    && bound != user_id
                {
                    return Err(IssueError::SubjectMismatch {
                        bound: bound.to_owned(),
                        requested: user_id,
                    });
                }
                let master_key = check_master_key(request.master_key)?;
                Subject::Identity {
                    user_id,
                    uri,
                    master_key,
                }
            }
        };
        self.sign(
            request.profile,
            Some((&agency.id, &agency.name)),
            subject,
            &P256Public(&csr.public_key),
            now,
        )
    }

    /// In-process issuance for the local stack: generates a P-256 key and a `homeserver-tls`
    /// certificate for `hosts` (IP SANs for IP-literal server names). Not checked against the
    /// Agencies document: the caller is the CA operator's own code.
    pub fn issue_homeserver_tls(
        &self,
        hosts: &[SanHost],
        now: OffsetDateTime,
    ) -> Result<IssuedWithKey, IssueError> {
        self.issue_with_new_key(Profile::HomeserverTls, hosts, now)
    }

    /// In-process issuance of a `service-mtls` certificate (serverAuth + clientAuth) with a new key.
    pub fn issue_service_mtls(
        &self,
        hosts: &[SanHost],
        now: OffsetDateTime,
    ) -> Result<IssuedWithKey, IssueError> {
        self.issue_with_new_key(Profile::ServiceMtls, hosts, now)
    }

    fn issue_with_new_key(
        &self,
        profile: Profile,
        hosts: &[SanHost],
        now: OffsetDateTime,
    ) -> Result<IssuedWithKey, IssueError> {
        if hosts.is_empty() {
            return Err(IssueError::NoNames("host"));
        }
        let mut hosts = hosts.to_vec();
        dedup_keep_order(&mut hosts);
        let key = keys::generate_key().map_err(|e| IssueError::Signing(e.to_string()))?;
        let issued = self.sign(profile, None, Subject::Hosts { hosts }, &key, now)?;
        Ok(IssuedWithKey {
            issued,
            key_pem: key.serialize_pem(),
        })
    }

    fn sign(
        &self,
        profile: Profile,
        agency: Option<(&str, &str)>,
        subject: Subject,
        public_key: &impl PublicKeyData,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        let mut params = CertificateParams::default();
        let (serial, serial_number) = random_serial();
        params.serial_number = Some(serial_number);
        params.not_before = now - BACKDATE;
        params.not_after =
            (now + self.settings.lifetimes.of(profile)).min(self.intermediate_not_after);
        if params.not_after <= now {
            return Err(IssueError::Signing("the intermediate has expired".into()));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        if let Some(url) = &self.settings.crl_distribution_point {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        let mut dn = DistinguishedName::new();
        let summary;
        match subject {
            Subject::Hosts { hosts } => {
                summary = join_hosts(&hosts);
                dn.push(DnType::CommonName, hosts[0].to_string());
                if let Some((_, name)) = agency {
                    dn.push(DnType::OrganizationName, name);
                }
                for host in hosts {
                    params.subject_alt_names.push(match host {
                        SanHost::Dns(name) => SanType::DnsName(
                            name.try_into()
                                .map_err(|e: rcgen::Error| IssueError::BadName(e.to_string()))?,
                        ),
                        SanHost::Ip(ip) => SanType::IpAddress(ip),
                    });
                }
                params.extended_key_usages = match profile {
                    Profile::ServiceMtls => vec![
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ],
                    _ => vec![ExtendedKeyUsagePurpose::ServerAuth],
                };
            }
            Subject::Identity {
                user_id,
                uri,
                master_key,
            } => {
                dn.push(DnType::CommonName, user_id.as_str());
                if let Some((id, name)) = agency {
                    dn.push(DnType::OrganizationName, name);
                    dn.push(
                        DnType::CustomDnType(oid::DN_ORGANIZATION_IDENTIFIER.to_vec()),
                        id,
                    );
                }
                params.subject_alt_names.push(SanType::URI(
                    uri.as_str()
                        .try_into()
                        .map_err(|e: rcgen::Error| IssueError::BadName(e.to_string()))?,
                ));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
                    oid::EKU_AGENCY_IDENTITY.to_vec(),
                )];
                params.custom_extensions = vec![CustomExtension::from_oid_content(
                    oid::EXT_MATRIX_MASTER_KEY,
                    oid::encode_master_key(&master_key),
                )];
                summary = user_id;
            }
        }
        params.distinguished_name = dn;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        let cert_der = cert.der().to_vec();
        Ok(Issued {
            serial,
            profile,
            agency: agency.map(|(id, _)| id.to_owned()),
            subject: summary,
            not_before: params.not_before,
            not_after: params.not_after,
            sha256: hex::encode(Sha256::digest(&cert_der)),
            cert_der,
        })
    }

    /// Signs a CRL (DER) listing `revoked`, valid from `now` for `settings.crl_validity`.
    pub fn crl_der(
        &self,
        revoked: &[RevokedEntry],
        crl_number: u64,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for entry in revoked {
            let serial = hex::decode(&entry.serial)
                .map_err(|e| CaError::Options(format!("serial {:?}: {e}", entry.serial)))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: entry.revoked_at,
                reason_code: Some(entry.reason.to_rcgen()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + self.settings.crl_validity,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(crl.der().to_vec())
    }
}

fn requested_hosts(csr: &CsrInfo, profile: Profile) -> Result<Vec<SanHost>, IssueError> {
    if let Some(uri) = csr.uris.first() {
        return Err(IssueError::NameNotForProfile {
            name: uri.clone(),
            kind: "URI",
            profile,
        });
    }
    let mut hosts = Vec::new();
    for dns in &csr.dns_names {
        let host = SanHost::parse(dns).map_err(IssueError::BadName)?;
        if matches!(host, SanHost::Ip(_)) {
            return Err(IssueError::BadName(format!(
                "DNS subjectAltName {dns:?} is an IP address"
            )));
        }
        hosts.push(host);
    }
    hosts.extend(csr.ip_addresses.iter().copied().map(SanHost::Ip));
    match &csr.common_name {
        Some(cn) if hosts.is_empty() => {
            hosts.push(SanHost::parse(cn).map_err(IssueError::BadName)?);
        }
        Some(cn) => {
            let matches = SanHost::parse(cn).is_ok_and(|h| hosts.contains(&h));
            if !matches {
                return Err(IssueError::CommonNameMismatch(cn.clone()));
            }
        }
        None => {}
    }
    if hosts.is_empty() {
        return Err(IssueError::NoNames("DNS name or IP address"));
    }
    dedup_keep_order(&mut hosts);
    Ok(hosts)
}

fn requested_matrix_id(csr: &CsrInfo) -> Result<(String, String), IssueError> {
    if let Some(dns) = csr.dns_names.first() {
        return Err(IssueError::NameNotForProfile {
            name: dns.clone(),
            kind: "DNS",
            profile: Profile::AgencyIdentity,
        });
    }
    if let Some(ip) = csr.ip_addresses.first() {
        return Err(IssueError::NameNotForProfile {
            name: ip.to_string(),
            kind: "IP",
            profile: Profile::AgencyIdentity,
        });
    }
    let [uri] = csr.uris.as_slice() else {
        return Err(IssueError::MatrixIdCount(csr.uris.len()));
    };
    let user_id = user_id_from_matrix_uri(uri)
        .ok_or_else(|| IssueError::BadName(format!("{uri:?} is not a matrix:u/ user URI")))?;
    let parsed = UserId::parse(user_id.as_str())
        .map_err(|e| IssueError::BadName(format!("{user_id}: {e}")))?;
    let canonical = matrix_uri(&parsed);
    if let Some(cn) = &csr.common_name
        && cn != &user_id
        && cn != uri
    {
        return Err(IssueError::CommonNameMismatch(cn.clone()));
    }
    Ok((user_id, canonical))
}

/// Checks an unpadded base64 Ed25519 public key; returns its canonical form.
pub fn check_master_key(master_key: Option<&str>) -> Result<String, IssueError> {
    let text = master_key.ok_or(IssueError::MissingMasterKey)?;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|e| IssueError::BadMasterKey(format!("not unpadded base64: {e}")))?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        IssueError::BadMasterKey(format!("{} bytes, an Ed25519 key has 32", bytes.len()))
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| IssueError::BadMasterKey("not a valid Ed25519 point".into()))?;
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
}

fn join_hosts(hosts: &[SanHost]) -> String {
    hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn dedup_keep_order(hosts: &mut Vec<SanHost>) {
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
}

fn cert_der_from_pem(what: &'static str, pem: &str) -> Result<Vec<u8>, CaError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| CaError::BadCertificate {
            what,
            why: e.to_string(),
        })
}

/// PEM-encodes `der` under `label` (64-column base64, LF line ends).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}
