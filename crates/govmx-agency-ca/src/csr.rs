//! CSR intake: strict parsing of a PKCS#10 request into the only things the CA takes from it —
//! the P-256 public key and the *requested* names. Everything else (validity, CA flag, key usage,
//! extensions) is decided by the CA; a request that asks for something the CA never grants is
//! refused with a precise [`CsrError`], never silently downgraded.

use std::net::IpAddr;

use rustls::pki_types::{CertificateSigningRequestDer, pem::PemObject as _};
use webpki::aws_lc_rs::{ECDSA_P256_SHA256, ECDSA_P256_SHA384};
use x509_parser::{
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    prelude::FromDer as _,
    x509::X509Version,
};

/// Largest accepted CSR (PEM or DER), in bytes.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";

/// Why a CSR was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Larger than [`MAX_CSR_BYTES`].
    #[error("csr is {len} bytes, the limit is {MAX_CSR_BYTES}")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Not a PEM `CERTIFICATE REQUEST` nor DER PKCS#10.
    #[error("malformed csr: {0}")]
    Malformed(String),
    /// Bytes after the PKCS#10 structure.
    #[error("malformed csr: trailing bytes after the request")]
    TrailingData,
    /// PKCS#10 version other than 1 (encoded 0).
    #[error("unsupported csr version")]
    UnsupportedVersion,
    /// The key is not ECDSA P-256.
    #[error("wrong key type: {found}; only ECDSA P-256 keys are certified")]
    WrongKeyType {
        /// What the CSR carries.
        found: String,
    },
    /// An ECDSA P-256 key that is not a valid uncompressed point.
    #[error("invalid P-256 public key")]
    BadPublicKey,
    /// Signature algorithm other than ECDSA with SHA-256/384.
    #[error("unsupported csr signature algorithm {oid}")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm's OID.
        oid: String,
    },
    /// The self-signature does not verify: the requester does not hold the key.
    #[error("csr signature does not verify (proof of possession failed)")]
    BadSignature,
    /// The CSR asks for a CA certificate.
    #[error("csr requests a CA certificate (basicConstraints CA:TRUE); never granted")]
    CaRequested,
    /// The CSR requests an extension the CA never copies.
    #[error("csr requests unsupported extension {oid}")]
    UnsupportedExtension {
        /// Its OID.
        oid: String,
    },
    /// A requested extension does not parse.
    #[error("csr carries a malformed extension: {0}")]
    MalformedExtension(String),
    /// A PKCS#10 attribute other than extensionRequest / challengePassword.
    #[error("csr carries unsupported attribute {oid}")]
    UnsupportedAttribute {
        /// Its OID.
        oid: String,
    },
    /// A subjectAltName of a kind the CA never certifies (email, otherName, directoryName, …).
    #[error("csr requests a {kind} subjectAltName; only DNS, IP and matrix: URIs are certified")]
    UnsupportedName {
        /// The general name kind.
        kind: &'static str,
    },
}

/// What the CA takes from a CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrInfo {
    /// The uncompressed P-256 point (65 bytes, `04 || x || y`).
    pub public_key: Vec<u8>,
    /// The subject's first commonName, if any (checked against the allowed names, never copied).
    pub common_name: Option<String>,
    /// Requested DNS subjectAltNames, as written.
    pub dns_names: Vec<String>,
    /// Requested IP subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    /// Requested URI subjectAltNames.
    pub uris: Vec<String>,
}

/// Parses and checks a CSR given as PEM (`-----BEGIN CERTIFICATE REQUEST-----`) or DER.
///
/// Never panics on any input.
pub fn parse_csr(input: &[u8]) -> Result<CsrInfo, CsrError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { len: input.len() });
    }
    let der_owned;
    let der: &[u8] = if input.first() == Some(&0x30) {
        input
    } else {
        der_owned = CertificateSigningRequestDer::from_pem_slice(input)
            .map_err(|e| CsrError::Malformed(format!("not a PEM CERTIFICATE REQUEST ({e})")))?;
        der_owned.as_ref()
    };
    parse_csr_der(der)
}

fn parse_csr_der(der: &[u8]) -> Result<CsrInfo, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData);
    }
    let info = &csr.certification_request_info;
    if info.version != X509Version(0) {
        return Err(CsrError::UnsupportedVersion);
    }

    // Key type first: nothing else can be checked without a key we support.
    let spki = &info.subject_pki;
    let key_alg = spki.algorithm.algorithm.to_id_string();
    if key_alg != OID_EC_PUBLIC_KEY {
        return Err(CsrError::WrongKeyType {
            found: describe_key_algorithm(&key_alg).to_owned(),
        });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    if curve.as_deref() != Some(OID_P256) {
        return Err(CsrError::WrongKeyType {
            found: format!(
                "EC key on curve {}",
                describe_curve(curve.as_deref().unwrap_or("(none)"))
            ),
        });
    }
    let public_key = spki.subject_public_key.data.to_vec();
    if public_key.len() != 65 || public_key[0] != 0x04 {
        return Err(CsrError::BadPublicKey);
    }

    // Proof of possession.
    let sig_alg = csr.signature_algorithm.algorithm.to_id_string();
    let verifier: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match sig_alg.as_str() {
        OID_ECDSA_SHA256 => ECDSA_P256_SHA256,
        OID_ECDSA_SHA384 => ECDSA_P256_SHA384,
        _ => return Err(CsrError::UnsupportedSignatureAlgorithm { oid: sig_alg }),
    };
    verifier
        .verify_signature(&public_key, info.raw, &csr.signature_value.data)
        .map_err(|_| CsrError::BadSignature)?;

    for attribute in info.iter_attributes() {
        let oid = attribute.oid.to_id_string();
        if oid != OID_EXTENSION_REQUEST && oid != OID_CHALLENGE_PASSWORD {
            return Err(CsrError::UnsupportedAttribute { oid });
        }
    }

    let mut out = CsrInfo {
        public_key,
        common_name: None,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
    };
    if let Some(cn) = info.subject.iter_common_name().next() {
        let cn = cn
            .as_str()
            .map_err(|e| CsrError::Malformed(format!("subject commonName: {e}")))?;
        out.common_name = Some(cn.to_owned());
    }
    if let Some(extensions) = csr.requested_extensions() {
        for extension in extensions {
            match extension {
                ParsedExtension::BasicConstraints(bc) => {
                    if bc.ca {
                        return Err(CsrError::CaRequested);
                    }
                }
                // Decided by the profile; a request for them is harmless and ignored.
                ParsedExtension::KeyUsage(_)
                | ParsedExtension::ExtendedKeyUsage(_)
                | ParsedExtension::SubjectKeyIdentifier(_) => {}
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(dns) => out.dns_names.push((*dns).to_owned()),
                            GeneralName::URI(uri) => out.uris.push((*uri).to_owned()),
                            GeneralName::IPAddress(bytes) => {
                                let ip =
                                    match bytes.len() {
                                        4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(
                                            |_| CsrError::MalformedExtension("ip address".into()),
                                        )?),
                                        16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).map_err(
                                            |_| CsrError::MalformedExtension("ip address".into()),
                                        )?),
                                        n => {
                                            return Err(CsrError::MalformedExtension(format!(
                                                "ip address subjectAltName of {n} bytes"
                                            )));
                                        }
                                    };
                                out.ip_addresses.push(ip);
                            }
                            other => {
                                return Err(CsrError::UnsupportedName {
                                    kind: general_name_kind(other),
                                });
                            }
                        }
                    }
                }
                ParsedExtension::UnsupportedExtension { oid } => {
                    return Err(CsrError::UnsupportedExtension {
                        oid: oid.to_id_string(),
                    });
                }
                ParsedExtension::ParseError { error } => {
                    return Err(CsrError::MalformedExtension(error.to_string()));
                }
                other => {
                    return Err(CsrError::UnsupportedExtension {
                        oid: parsed_extension_name(other).to_owned(),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn describe_key_algorithm(oid: &str) -> &str {
    match oid {
        "1.2.840.113549.1.1.1" => "RSA (1.2.840.113549.1.1.1)",
        "1.3.101.112" => "Ed25519 (1.3.101.112)",
        "1.3.101.113" => "Ed448 (1.3.101.113)",
        "1.2.840.10040.4.1" => "DSA (1.2.840.10040.4.1)",
        other => other,
    }
}

fn describe_curve(oid: &str) -> String {
    match oid {
        "1.3.132.0.34" => "P-384 (1.3.132.0.34)".into(),
        "1.3.132.0.35" => "P-521 (1.3.132.0.35)".into(),
        "1.3.132.0.10" => "secp256k1 (1.3.132.0.10)".into(),
        other => other.into(),
    }
}

fn general_name_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::OtherName(..) => "otherName",
        GeneralName::RFC822Name(_) => "email (rfc822Name)",
        GeneralName::DNSName(_) => "DNS",
        GeneralName::X400Address(_) => "x400Address",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::EDIPartyName(_) => "ediPartyName",
        GeneralName::URI(_) => "URI",
        GeneralName::IPAddress(_) => "IP",
        GeneralName::RegisteredID(_) => "registeredID",
        GeneralName::Invalid(..) => "invalid",
    }
}

fn parsed_extension_name(ext: &ParsedExtension<'_>) -> &'static str {
    match ext {
        ParsedExtension::NameConstraints(_) => "2.5.29.30 (nameConstraints)",
        ParsedExtension::CertificatePolicies(_) => "2.5.29.32 (certificatePolicies)",
        ParsedExtension::PolicyConstraints(_) => "2.5.29.36 (policyConstraints)",
        ParsedExtension::AuthorityKeyIdentifier(_) => "2.5.29.35 (authorityKeyIdentifier)",
        ParsedExtension::CRLDistributionPoints(_) => "2.5.29.31 (cRLDistributionPoints)",
        ParsedExtension::AuthorityInfoAccess(_) => "1.3.6.1.5.5.7.1.1 (authorityInfoAccess)",
        ParsedExtension::IssuerAlternativeName(_) => "2.5.29.18 (issuerAltName)",
        ParsedExtension::InhibitAnyPolicy(_) => "2.5.29.54 (inhibitAnyPolicy)",
        ParsedExtension::PolicyMappings(_) => "2.5.29.33 (policyMappings)",
        _ => "(recognised but not allowed)",
    }
}
