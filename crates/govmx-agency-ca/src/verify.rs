//! The verifier a citizen's client (or `govmx ca verify-chain`) runs on an agency account's
//! published chain: path to the pinned root with rustls-webpki (signatures, validity, the
//! agency-identity EKU, revocation against a fresh CRL), then the Matrix ID URI SAN and the
//! certified cross-signing master key. Output: the verified agency, or the exact reason.

use base64::Engine as _;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, UnixTime, pem::PemObject as _,
};
use time::OffsetDateTime;
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::{extensions::GeneralName, prelude::FromDer as _};

use crate::{names::user_id_from_matrix_uri, oid};

/// What a successful verification certifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The agency's name (subject `O`).
    pub agency_name: String,
    /// The agency's id (subject `organizationIdentifier`).
    pub agency_id: String,
    /// The certified Matrix ID.
    pub user_id: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Why a chain does not verify an agency identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The chain PEM holds no certificate or does not parse.
    #[error("malformed chain: {0}")]
    MalformedChain(String),
    /// The pinned root does not parse.
    #[error("malformed root certificate: {0}")]
    MalformedRoot(String),
    /// The CRL does not parse.
    #[error("malformed CRL: {0}")]
    MalformedCrl(String),
    /// The certificate has expired.
    #[error("certificate expired")]
    Expired,
    /// Not valid yet.
    #[error("certificate not valid yet")]
    NotYetValid,
    /// Revoked by the CA.
    #[error("revoked")]
    Revoked,
    /// The CRL is past its nextUpdate.
    #[error("CRL is stale (past nextUpdate); fetch a fresh one")]
    CrlStale,
    /// The CRL does not cover this certificate or is not signed by its issuer.
    #[error("revocation status unknown: {0}")]
    RevocationUnknown(String),
    /// Not issued under the pinned root.
    #[error("not issued by the pinned government root: {0}")]
    Untrusted(String),
    /// Not an agency-identity certificate.
    #[error("not an agency-identity certificate (extended key usage missing)")]
    WrongPurpose,
    /// No `matrix:u/` URI SAN.
    #[error("certificate names no Matrix ID")]
    NoMatrixId,
    /// Certifies another account.
    #[error("certificate is for {certified}, not {expected}")]
    MatrixIdMismatch {
        /// What the certificate names.
        certified: String,
        /// What the caller expected.
        expected: String,
    },
    /// No master key extension.
    #[error("certificate carries no cross-signing master key")]
    NoMasterKey,
    /// The master key extension does not parse.
    #[error("malformed master key extension")]
    MalformedMasterKey,
    /// The user's current master key differs (rotated or reset since issuance).
    #[error("master key mismatch: certified {certified}, current {current}")]
    MasterKeyMismatch {
        /// Certified key.
        certified: String,
        /// Current key from /keys/query.
        current: String,
    },
    /// No agency name/id in the subject.
    #[error("certificate names no agency")]
    NoAgency,
}

/// Everything the verifier needs; nothing is fetched.
#[derive(Clone, Copy, Debug)]
pub struct VerifyInput<'a> {
    /// Leaf then intermediates, PEM.
    pub chain_pem: &'a [u8],
    /// The pinned root certificate, PEM.
    pub root_pem: &'a [u8],
    /// The Matrix ID the client is looking at.
    pub expected_user_id: &'a str,
    /// The user's current cross-signing master key (unpadded base64) from `/keys/query`.
    pub current_master_key: &'a str,
    /// The CA's CRL, PEM or DER.
    pub crl: &'a [u8],
    /// The verification time.
    pub now: OffsetDateTime,
}

/// Verifies an agency-identity chain. See the module documentation for the order of checks.
pub fn verify_identity(input: &VerifyInput<'_>) -> Result<Verified, VerifyError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(input.chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| VerifyError::MalformedChain(e.to_string()))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| VerifyError::MalformedChain("no certificate".into()))?;
    let root = CertificateDer::from_pem_slice(input.root_pem)
        .map_err(|e| VerifyError::MalformedRoot(e.to_string()))?;
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| VerifyError::MalformedRoot(format!("{e:?}")))?
        .to_owned();
    let crl_der = if input.crl.first() == Some(&0x30) {
        input.crl.to_vec()
    } else {
        CertificateRevocationListDer::from_pem_slice(input.crl)
            .map_err(|e| VerifyError::MalformedCrl(e.to_string()))?
            .to_vec()
    };
    let crl = CertRevocationList::Borrowed(
        BorrowedCertRevocationList::from_der(&crl_der)
            .map_err(|e| VerifyError::MalformedCrl(format!("{e:?}")))?,
    );
    let crls = [&crl];
    let revocation = RevocationOptionsBuilder::new(&crls)
        .map_err(|_| VerifyError::MalformedCrl("no CRL".into()))?
        .with_depth(RevocationCheckDepth::Chain)
        .with_status_policy(UnknownStatusPolicy::Allow)
        .with_expiration_policy(ExpirationPolicy::Enforce)
        .build();
    let end_entity = EndEntityCert::try_from(leaf)
        .map_err(|e| VerifyError::MalformedChain(format!("leaf: {e:?}")))?;
    let seconds = u64::try_from(input.now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    // The leaf's own CRL must be authoritative: an unknown status for the leaf is a failure.
    leaf_crl_is_authoritative(leaf, &crl_der)?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            intermediates,
            time,
            // `required` would also demand the EKU of the intermediate (webpki checks EKU on every
            // certificate of the path); the leaf's EKU is required explicitly below.
            KeyUsage::required_if_present(oid::EKU_AGENCY_IDENTITY_DER),
            Some(revocation),
            None,
        )
        .map_err(map_webpki)?;
    identity_of(leaf, input)
}

/// The CRL must be issued by the leaf's issuer (we do not support indirect CRLs).
fn leaf_crl_is_authoritative(leaf: &[u8], crl_der: &[u8]) -> Result<(), VerifyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| VerifyError::MalformedChain(e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(crl_der)
        .map_err(|e| VerifyError::MalformedCrl(e.to_string()))?;
    if cert.issuer().as_raw() != crl.issuer().as_raw() {
        return Err(VerifyError::RevocationUnknown(
            "the CRL is not from the certificate's issuer".into(),
        ));
    }
    Ok(())
}

#[allow(deprecated)] // `RequiredEkuNotFound` is still returned by some paths
fn map_webpki(error: webpki::Error) -> VerifyError {
    use webpki::Error as E;
    match error {
        E::CertExpired { .. } => VerifyError::Expired,
        E::CertNotValidYet { .. } => VerifyError::NotYetValid,
        E::CertRevoked => VerifyError::Revoked,
        E::CrlExpired { .. } => VerifyError::CrlStale,
        E::UnknownRevocationStatus => VerifyError::RevocationUnknown("no authoritative CRL".into()),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => VerifyError::WrongPurpose,
        E::InvalidCrlSignatureForPublicKey | E::IssuerNotCrlSigner => {
            VerifyError::RevocationUnknown(format!("{error:?}"))
        }
        other => VerifyError::Untrusted(format!("{other:?}")),
    }
}

fn identity_of(leaf: &[u8], input: &VerifyInput<'_>) -> Result<Verified, VerifyError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|e| VerifyError::MalformedChain(e.to_string()))?;
    let mut certified = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Some(user_id) = user_id_from_matrix_uri(uri)
            {
                if certified.is_some() {
                    return Err(VerifyError::MatrixIdMismatch {
                        certified: "(several Matrix IDs)".into(),
                        expected: input.expected_user_id.to_owned(),
                    });
                }
                certified = Some(user_id);
            }
        }
    }
    let has_eku = cert.extended_key_usage().ok().flatten().is_some_and(|eku| {
        eku.value
            .other
            .iter()
            .any(|o| o.as_bytes() == oid::EKU_AGENCY_IDENTITY_DER)
    });
    if !has_eku {
        return Err(VerifyError::WrongPurpose);
    }
    let certified = certified.ok_or(VerifyError::NoMatrixId)?;
    if certified != input.expected_user_id {
        return Err(VerifyError::MatrixIdMismatch {
            certified,
            expected: input.expected_user_id.to_owned(),
        });
    }
    let master_oid = x509_parser::der_parser::oid::Oid::from(oid::EXT_MATRIX_MASTER_KEY)
        .map_err(|_| VerifyError::MalformedMasterKey)?;
    let extension = cert
        .extensions()
        .iter()
        .find(|ext| ext.oid == master_oid)
        .ok_or(VerifyError::NoMasterKey)?;
    let certified_key =
        oid::decode_master_key(extension.value).ok_or(VerifyError::MalformedMasterKey)?;
    if !same_key(certified_key, input.current_master_key) {
        return Err(VerifyError::MasterKeyMismatch {
            certified: certified_key.to_owned(),
            current: input.current_master_key.to_owned(),
        });
    }
    let subject = cert.subject();
    let agency_name = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or(VerifyError::NoAgency)?
        .to_owned();
    let org_id = x509_parser::der_parser::oid::Oid::from(oid::DN_ORGANIZATION_IDENTIFIER)
        .map_err(|_| VerifyError::NoAgency)?;
    let agency_id = subject
        .iter_by_oid(&org_id)
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or(VerifyError::NoAgency)?
        .to_owned();
    Ok(Verified {
        agency_name,
        agency_id,
        user_id: certified,
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// Compares two unpadded base64 keys by their decoded bytes (padding variants compare equal).
fn same_key(a: &str, b: &str) -> bool {
    let decode = |s: &str| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s.trim().trim_end_matches('='))
            .ok()
    };
    match (decode(a), decode(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
