//! Agency CA facts read from files: issued certificates by profile and state, the earliest
//! expiry per profile, the CRL's `thisUpdate`/`nextUpdate` and revoked count.
//!
//! Deliberately independent of the CA crate: it reads what any CA writes (PEM certificates in a
//! directory, a PEM CRL). The profile of a certificate is the name of its subdirectory when that
//! is a known profile, else derived from the certificate: a `matrix:` URI SAN → `agency-identity`;
//! serverAuth + clientAuth → `service-mtls`; serverAuth → `homeserver-tls`; else `other`.
//! Labels stay bounded: `profile` has these five values, `state` three.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::SystemTime,
};

use x509_parser::{
    certificate::X509Certificate,
    extensions::{GeneralName, ParsedExtension},
    pem::Pem,
    prelude::FromDer as _,
    revocation_list::CertificateRevocationList,
};

use crate::{
    CollectError,
    cache::{Snapshot, Value, unix_seconds},
};

/// The profiles we label with.
pub const PROFILES: [&str; 4] = ["homeserver-tls", "service-mtls", "agency-identity", "other"];

/// Files larger than this are skipped as not a certificate.
const MAX_FILE: u64 = 1 << 20;

/// Directory depth below `certs_dir` we descend.
const MAX_DEPTH: usize = 3;

/// Facts about the certificates of one profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileFacts {
    /// Not expired, not revoked.
    pub valid: u64,
    /// Past `notAfter`.
    pub expired: u64,
    /// Serial on the CRL.
    pub revoked: u64,
    /// Earliest `notAfter` of the valid ones (Unix seconds).
    pub next_expiry: Option<i64>,
}

/// The CRL's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct CrlFacts {
    /// `thisUpdate`, Unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, Unix seconds, when present.
    pub next_update: Option<i64>,
    /// Revoked entries.
    pub revoked: u64,
    /// The CRL number, when present and small enough.
    pub number: Option<u64>,
}

/// Everything one collection found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaFacts {
    /// Per profile (all of [`PROFILES`] present).
    pub profiles: BTreeMap<&'static str, ProfileFacts>,
    /// Files that looked like certificates but did not parse.
    pub unreadable: u64,
    /// The CRL, when configured.
    pub crl: Option<CrlFacts>,
}

fn profile_from_dir(dir: &str) -> Option<&'static str> {
    PROFILES[..3].iter().copied().find(|p| *p == dir)
}

/// Derives the profile from the certificate's extensions.
pub fn profile_of(cert: &X509Certificate<'_>) -> &'static str {
    let mut server = false;
    let mut client = false;
    let mut matrix_uri = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => {
                server |= eku.server_auth;
                client |= eku.client_auth;
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                matrix_uri |= san
                    .general_names
                    .iter()
                    .any(|n| matches!(n, GeneralName::URI(u) if u.starts_with("matrix:")));
            }
            _ => {}
        }
    }
    match (matrix_uri, server, client) {
        (true, _, _) => "agency-identity",
        (false, true, true) => "service-mtls",
        (false, true, false) => "homeserver-tls",
        _ => "other",
    }
}

fn serial_key(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// Parses a PEM CRL; returns its facts and the revoked serials.
pub fn read_crl(pem_bytes: &[u8]) -> Result<(CrlFacts, BTreeSet<Vec<u8>>), CollectError> {
    let bad = |msg: String| CollectError::Malformed(format!("crl: {msg}"));
    let der = Pem::iter_from_buffer(pem_bytes)
        .next()
        .ok_or_else(|| bad("no PEM block".to_owned()))?
        .map_err(|e| bad(e.to_string()))?;
    if der.label != "X509 CRL" {
        return Err(bad(format!(
            "PEM label is {:?}, not \"X509 CRL\"",
            der.label
        )));
    }
    let (_, crl) =
        CertificateRevocationList::from_der(&der.contents).map_err(|e| bad(e.to_string()))?;
    let serials: BTreeSet<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| serial_key(r.raw_serial()))
        .collect();
    let number = crl.crl_number().and_then(|n| {
        let digits = n.to_u64_digits();
        match digits.as_slice() {
            [] => Some(0),
            [one] => Some(*one),
            _ => None,
        }
    });
    let facts = CrlFacts {
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked: crl.iter_revoked_certificates().count() as u64,
        number,
    };
    Ok((facts, serials))
}

fn cert_files(dir: &Path) -> Result<Vec<(PathBuf, Option<&'static str>)>, CollectError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0usize, None)];
    while let Some((dir, depth, profile)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| CollectError::Io {
            what: format!("reading {}", dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth < MAX_DEPTH {
                stack.push((path, depth + 1, profile.or_else(|| profile_from_dir(&name))));
            } else if kind.is_file() && (name.ends_with(".pem") || name.ends_with(".crt")) {
                out.push((path, profile));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads `certs_dir` (and `crl`) at `now`. Blocking file I/O: run it off the async threads.
pub fn collect(
    certs_dir: &Path,
    crl: Option<&Path>,
    now: SystemTime,
) -> Result<CaFacts, CollectError> {
    let now = unix_seconds(now) as i64;
    let (crl, revoked) = match crl {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| CollectError::Io {
                what: format!("reading {}", path.display()),
                source,
            })?;
            let (facts, serials) = read_crl(&bytes)?;
            (Some(facts), serials)
        }
        None => (None, BTreeSet::new()),
    };
    let mut facts = CaFacts {
        profiles: PROFILES
            .iter()
            .map(|p| (*p, ProfileFacts::default()))
            .collect(),
        unreadable: 0,
        crl,
    };
    for (path, dir_profile) in cert_files(certs_dir)? {
        let Ok(meta) = std::fs::metadata(&path) else {
            facts.unreadable += 1;
            continue;
        };
        if meta.len() > MAX_FILE {
            facts.unreadable += 1;
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            facts.unreadable += 1;
            continue;
        };
        let mut certs = 0;
        for pem in Pem::iter_from_buffer(&bytes) {
            let Ok(pem) = pem else {
                facts.unreadable += 1;
                break;
            };
            if pem.label != "CERTIFICATE" {
                continue;
            }
            let Ok(cert) = pem.parse_x509() else {
                facts.unreadable += 1;
                continue;
            };
            certs += 1;
            // A chain file (leaf, then the intermediate that issued it) counts its leaf only:
            // CA certificates are not issued certificates of a profile.
            if cert.is_ca() {
                continue;
            }
            let profile = dir_profile.unwrap_or_else(|| profile_of(&cert));
            let entry = facts.profiles.entry(profile).or_default();
            let not_after = cert.validity().not_after.timestamp();
            if revoked.contains(&serial_key(cert.raw_serial())) {
                entry.revoked += 1;
            } else if not_after <= now {
                entry.expired += 1;
            } else {
                entry.valid += 1;
                entry.next_expiry = Some(entry.next_expiry.map_or(not_after, |t| t.min(not_after)));
            }
        }
        if certs == 0
            && !bytes.is_empty()
            && !String::from_utf8_lossy(&bytes).contains("-----BEGIN")
        {
            facts.unreadable += 1;
        }
    }
    Ok(facts)
}

/// The facts as a snapshot.
pub fn snapshot(facts: &CaFacts) -> Snapshot {
    let mut snap = Snapshot::default();
    for (profile, p) in &facts.profiles {
        for (state, n) in [
            ("valid", p.valid),
            ("expired", p.expired),
            ("revoked", p.revoked),
        ] {
            snap.gauge(
                "govmx_ca_certificates",
                "Issued certificates found in the CA's directory, by profile and state",
                vec![
                    ("profile", (*profile).to_owned()),
                    ("state", state.to_owned()),
                ],
                Value::Set(n as f64),
            );
        }
        if let Some(t) = p.next_expiry {
            snap.gauge(
                "govmx_ca_certificate_next_expiry_timestamp_seconds",
                "Earliest notAfter among the valid certificates of a profile",
                vec![("profile", (*profile).to_owned())],
                Value::Set(t as f64),
            );
        }
    }
    snap.set(
        "govmx_ca_certificate_files_unreadable",
        "Files in the CA's certificate directory that did not parse as certificates",
        facts.unreadable as f64,
    );
    if let Some(crl) = &facts.crl {
        snap.set(
            "govmx_ca_crl_this_update_timestamp_seconds",
            "thisUpdate of the CA's current CRL",
            crl.this_update as f64,
        );
        if let Some(t) = crl.next_update {
            snap.set(
                "govmx_ca_crl_next_update_timestamp_seconds",
                "nextUpdate of the CA's current CRL (relying parties reject it afterwards)",
                t as f64,
            );
        }
        snap.set(
            "govmx_ca_crl_revoked_certificates",
            "Revoked certificates listed on the CA's current CRL",
            crl.revoked as f64,
        );
        if let Some(n) = crl.number {
            snap.set(
                "govmx_ca_crl_number",
                "CRL number of the current CRL",
                n as f64,
            );
        }
    }
    snap
}
