//! Unit tests across the CA: every refusal of `AgencyCa::issue` and every verifier reason.

use std::sync::OnceLock;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SanType,
};
use time::{Duration, OffsetDateTime, macros::datetime};
use x509_parser::prelude::FromDer as _;

use crate::{
    ca::{
        AgencyCa, CaMaterial, CaSettings, HierarchyOptions, IssueError, IssueRequest, Issued,
        Profile, RevocationReason, RevokedEntry, generate_hierarchy, pem_encode,
    },
    csr::CsrError,
    keys::MIN_KDF_ITERATIONS,
    names::{AgencyDirectory, SanHost},
    verify::{Verified, VerifyError, VerifyInput, verify_identity},
};

pub(crate) const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

pub(crate) const AGENCIES: &str = r#"apiVersion: govmx.de/v1
kind: Agencies
metadata:
  name: test
  version: 1
  issued: 2026-11-20T00:00:00Z
agencies:
  - id: buergeramt
    name: Bürgeramt Musterstadt
    serverNames: ["127.0.0.2:8448", "*.musterstadt.example"]
    officialAccounts: ["@amt-*:127.0.0.2:8448"]
  - id: wasserbehoerde
    name: Wasserbehörde
    serverNames: ["127.0.0.4:8448"]
    officialAccounts: ["@wasser-*:127.0.0.4:8448"]
"#;

fn material() -> &'static CaMaterial {
    static MATERIAL: OnceLock<CaMaterial> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        let mut options = HierarchyOptions::new("Testland");
        options.kdf_iterations = MIN_KDF_ITERATIONS;
        generate_hierarchy(&options, b"test passphrase 123", NOW - Duration::days(1)).unwrap()
    })
}

fn settings() -> CaSettings {
    CaSettings {
        crl_validity: Duration::days(1),
        ..CaSettings::default()
    }
}

pub(crate) fn test_ca() -> AgencyCa {
    AgencyCa::from_material(material(), settings())
        .unwrap()
        .with_agencies(AgencyDirectory::parse("agencies.yaml", AGENCIES.as_bytes(), NOW).unwrap())
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn csr_with(key: &KeyPair, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    edit(&mut params);
    params.serialize_request(key).unwrap().der().to_vec()
}

fn ip_csr(ip: &str) -> Vec<u8> {
    csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::IpAddress(ip.parse().unwrap())]
    })
}

fn uri_csr(uris: &[&str]) -> Vec<u8> {
    csr_with(&p256(), |p| {
        p.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect()
    })
}

pub(crate) fn master_key() -> String {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.verifying_key().as_bytes())
}

fn request<'a>(profile: Profile, agency: &'a str, csr: &'a [u8]) -> IssueRequest<'a> {
    IssueRequest {
        profile,
        agency,
        csr,
        master_key: None,
        bound_subject: None,
    }
}

/// Runs `issue` and renders the outcome as `ok <subject>` or the refusal text.
#[track_caller]
fn check(ca: &AgencyCa, req: IssueRequest<'_>, expect: &str) {
    let got = match ca.issue(&req, NOW) {
        Ok(issued) => format!("ok {}", issued.subject),
        Err(err) => err.to_string(),
    };
    assert_eq!(got, expect);
}

#[test]
fn issues_each_profile_with_ca_chosen_fields() {
    let ca = test_ca();
    // homeserver-tls: IP SAN of the agency's server, serverAuth only, CA:FALSE, 30 days.
    let csr = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.2".parse().unwrap())];
        // Requested KU/EKU are ignored; the profile decides.
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        p.is_ca = IsCa::ExplicitNoCa;
    });
    let issued = ca
        .issue(&request(Profile::HomeserverTls, "buergeramt", &csr), NOW)
        .unwrap();
    assert_eq!(issued.subject, "127.0.0.2");
    assert_eq!(issued.not_after - NOW, Duration::days(30));
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&issued.cert_der).unwrap();
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth && !eku.code_signing);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert_eq!(
        cert.subject()
            .iter_organization()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "Bürgeramt Musterstadt"
    );

    // service-mtls: DNS under the agency's wildcard; client + server auth.
    let csr = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::DnsName(
            "ca.musterstadt.example".try_into().unwrap(),
        )]
    });
    let issued = ca
        .issue(&request(Profile::ServiceMtls, "buergeramt", &csr), NOW)
        .unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&issued.cert_der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(issued.not_after - NOW, Duration::days(7));

    // agency-identity: URI SAN, agency in the subject, master key extension, custom EKU.
    let key = master_key();
    let csr = uri_csr(&["matrix:u/amt-1:127.0.0.2:8448"]);
    let issued = ca
        .issue(
            &IssueRequest {
                master_key: Some(&key),
                ..request(Profile::AgencyIdentity, "buergeramt", &csr)
            },
            NOW,
        )
        .unwrap();
    assert_eq!(issued.subject, "@amt-1:127.0.0.2:8448");
    let verified = verify(&ca, &issued, "@amt-1:127.0.0.2:8448", &key, NOW).unwrap();
    assert_eq!(
        verified,
        Verified {
            agency_name: "Bürgeramt Musterstadt".into(),
            agency_id: "buergeramt".into(),
            user_id: "@amt-1:127.0.0.2:8448".into(),
            not_after: issued.not_after,
        }
    );
}

#[test]
fn refusals() {
    let ca = test_ca();
    let mk = master_key();
    let hs = Profile::HomeserverTls;
    let id = Profile::AgencyIdentity;

    check(
        &ca,
        request(hs, "buergeramt", &ip_csr("127.0.0.2")),
        "ok 127.0.0.2",
    );
    // Foreign names: another agency's server, an unlisted DNS name, the bare wildcard suffix.
    check(
        &ca,
        request(hs, "buergeramt", &ip_csr("127.0.0.4")),
        r#"name "127.0.0.4" does not belong to agency "buergeramt""#,
    );
    let dns = |name: &str| {
        let name = name.to_owned();
        csr_with(&p256(), move |p| {
            p.subject_alt_names = vec![SanType::DnsName(name.as_str().try_into().unwrap())]
        })
    };
    check(
        &ca,
        request(hs, "buergeramt", &dns("musterstadt.example")),
        r#"name "musterstadt.example" does not belong to agency "buergeramt""#,
    );
    check(
        &ca,
        request(hs, "buergeramt", &dns("evil.example")),
        r#"name "evil.example" does not belong to agency "buergeramt""#,
    );
    check(
        &ca,
        request(hs, "buergeramt", &dns("*.musterstadt.example")),
        r#"invalid name: "*.musterstadt.example" is neither an IP address nor a DNS name"#,
    );
    check(
        &ca,
        request(hs, "nobody", &ip_csr("127.0.0.2")),
        r#"unknown agency "nobody""#,
    );
    // CA:TRUE.
    let ca_true = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.2".parse().unwrap())];
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    check(
        &ca,
        request(hs, "buergeramt", &ca_true),
        "csr requests a CA certificate (basicConstraints CA:TRUE); never granted",
    );
    // Wrong key types.
    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    check(
        &ca,
        request(hs, "buergeramt", &csr_with(&p384, |_| {})),
        "wrong key type: EC key on curve P-384 (1.3.132.0.34); only ECDSA P-256 keys are certified",
    );
    let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    check(
        &ca,
        request(hs, "buergeramt", &csr_with(&ed, |_| {})),
        "wrong key type: Ed25519 (1.3.101.112); only ECDSA P-256 keys are certified",
    );
    // Bad self-signature: flip the last signature byte.
    let mut bad_sig = ip_csr("127.0.0.2");
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    check(
        &ca,
        request(hs, "buergeramt", &bad_sig),
        "csr signature does not verify (proof of possession failed)",
    );
    // The signed info of another key: signature made with key A over key B's info.
    let mut trailing = ip_csr("127.0.0.2");
    trailing.push(0);
    check(
        &ca,
        request(hs, "buergeramt", &trailing),
        "malformed csr: trailing bytes after the request",
    );
    check(
        &ca,
        request(
            hs,
            "buergeramt",
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ),
        "malformed csr: Parsing Error: Der(UnexpectedTag { expected: Some(Tag(16)), actual: Tag(0) })",
    );
    check(
        &ca,
        request(hs, "buergeramt", &vec![b'x'; 20_000]),
        "csr is 20000 bytes, the limit is 16384",
    );
    // Unsupported extension and names.
    let custom = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.2".parse().unwrap())];
        p.custom_extensions = vec![CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0])];
    });
    check(
        &ca,
        request(hs, "buergeramt", &custom),
        "csr requests unsupported extension 1.2.3.4",
    );
    let email = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::Rfc822Name("a@b.de".try_into().unwrap())]
    });
    check(
        &ca,
        request(hs, "buergeramt", &email),
        "csr requests a email (rfc822Name) subjectAltName; only DNS, IP and matrix: URIs are certified",
    );
    check(
        &ca,
        request(hs, "buergeramt", &csr_with(&p256(), |_| {})),
        "the request names no DNS name or IP address",
    );
    let cn_foreign = csr_with(&p256(), |p| {
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.2".parse().unwrap())];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "bank.example");
    });
    check(
        &ca,
        request(hs, "buergeramt", &cn_foreign),
        r#"subject commonName "bank.example" is not one of the requested names"#,
    );
    check(
        &ca,
        request(
            hs,
            "buergeramt",
            &uri_csr(&["matrix:u/amt-1:127.0.0.2:8448"]),
        ),
        r#"URI name "matrix:u/amt-1:127.0.0.2:8448" is not allowed in profile homeserver-tls"#,
    );
    check(
        &ca,
        IssueRequest {
            master_key: Some(&mk),
            ..request(hs, "buergeramt", &ip_csr("127.0.0.2"))
        },
        "a master key is only certified in profile agency-identity, not homeserver-tls",
    );
    check(
        &ca,
        IssueRequest {
            bound_subject: Some("127.0.0.9"),
            ..request(hs, "buergeramt", &ip_csr("127.0.0.2"))
        },
        r#"the enrollment token is bound to "127.0.0.9", the request is for "127.0.0.2""#,
    );

    // agency-identity.
    let amt = uri_csr(&["matrix:u/amt-1:127.0.0.2:8448"]);
    let with_key = |csr: &'static [u8], key: Option<&'static str>| IssueRequest {
        master_key: key,
        ..request(id, "buergeramt", csr)
    };
    let amt: &'static [u8] = Box::leak(amt.into_boxed_slice());
    let mk: &'static str = Box::leak(mk.into_boxed_str());
    check(&ca, with_key(amt, Some(mk)), "ok @amt-1:127.0.0.2:8448");
    check(
        &ca,
        with_key(amt, None),
        "profile agency-identity needs the cross-signing master key",
    );
    check(
        &ca,
        with_key(amt, Some("AAAA")),
        "invalid master key: 3 bytes, an Ed25519 key has 32",
    );
    check(
        &ca,
        with_key(amt, Some("not base64!")),
        "invalid master key: not unpadded base64: Invalid symbol 32, offset 3.",
    );
    let other_agency: &'static [u8] =
        Box::leak(uri_csr(&["matrix:u/wasser-1:127.0.0.4:8448"]).into_boxed_slice());
    check(
        &ca,
        with_key(other_agency, Some(mk)),
        r#"@wasser-1:127.0.0.4:8448 is not an official account of agency "buergeramt""#,
    );
    let citizen: &'static [u8] =
        Box::leak(uri_csr(&["matrix:u/anna:127.0.0.2:8448"]).into_boxed_slice());
    check(
        &ca,
        with_key(citizen, Some(mk)),
        r#"@anna:127.0.0.2:8448 is not an official account of agency "buergeramt""#,
    );
    let two: &'static [u8] = Box::leak(
        uri_csr(&[
            "matrix:u/amt-1:127.0.0.2:8448",
            "matrix:u/amt-2:127.0.0.2:8448",
        ])
        .into_boxed_slice(),
    );
    check(
        &ca,
        with_key(two, Some(mk)),
        "profile agency-identity needs exactly one matrix:u/ URI subjectAltName, found 2",
    );
    let web: &'static [u8] = Box::leak(uri_csr(&["https://127.0.0.2/"]).into_boxed_slice());
    check(
        &ca,
        with_key(web, Some(mk)),
        r#"invalid name: "https://127.0.0.2/" is not a matrix:u/ user URI"#,
    );
    let ip: &'static [u8] = Box::leak(ip_csr("127.0.0.2").into_boxed_slice());
    check(
        &ca,
        with_key(ip, Some(mk)),
        r#"IP name "127.0.0.2" is not allowed in profile agency-identity"#,
    );
    check(
        &ca,
        IssueRequest {
            bound_subject: Some("@amt-2:127.0.0.2:8448"),
            ..with_key(amt, Some(mk))
        },
        r#"the enrollment token is bound to "@amt-2:127.0.0.2:8448", the request is for "@amt-1:127.0.0.2:8448""#,
    );

    // Deny by default without a policy.
    let bare = AgencyCa::from_material(material(), settings()).unwrap();
    check(
        &bare,
        request(hs, "buergeramt", &ip_csr("127.0.0.2")),
        "no agencies policy loaded; issuance is denied by default",
    );
}

#[test]
fn csr_errors_are_typed() {
    let ca = test_ca();
    let err = ca
        .issue(
            &request(Profile::HomeserverTls, "buergeramt", b"garbage"),
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(err, IssueError::Csr(CsrError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(err.kind(), "csr");
}

fn verify(
    ca: &AgencyCa,
    issued: &Issued,
    user: &str,
    key: &str,
    now: OffsetDateTime,
) -> Result<Verified, VerifyError> {
    let crl = pem_encode("X509 CRL", &ca.crl_der(&[], 1, NOW).unwrap());
    verify_with(
        ca,
        issued,
        user,
        key,
        crl.as_bytes(),
        ca.root_pem().as_bytes(),
        now,
    )
}

fn verify_with(
    ca: &AgencyCa,
    issued: &Issued,
    user: &str,
    key: &str,
    crl: &[u8],
    root: &[u8],
    now: OffsetDateTime,
) -> Result<Verified, VerifyError> {
    let chain = ca.chain_pem(issued);
    verify_identity(&VerifyInput {
        chain_pem: chain.as_bytes(),
        root_pem: root,
        expected_user_id: user,
        current_master_key: key,
        crl,
        now,
    })
}

#[test]
fn verifier_reasons() {
    let ca = test_ca();
    let key = master_key();
    let csr = uri_csr(&["matrix:u/amt-1:127.0.0.2:8448"]);
    let issued = ca
        .issue(
            &IssueRequest {
                master_key: Some(&key),
                ..request(Profile::AgencyIdentity, "buergeramt", &csr)
            },
            NOW,
        )
        .unwrap();
    let user = "@amt-1:127.0.0.2:8448";
    let outcome = |r: Result<Verified, VerifyError>| match r {
        Ok(v) => format!("verified {}", v.agency_name),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        outcome(verify(&ca, &issued, user, &key, NOW)),
        "verified Bürgeramt Musterstadt"
    );

    // Another Matrix ID.
    assert_eq!(
        outcome(verify(&ca, &issued, "@amt-2:127.0.0.2:8448", &key, NOW)),
        "certificate is for @amt-1:127.0.0.2:8448, not @amt-2:127.0.0.2:8448"
    );
    // The user rotated the master key.
    let rotated = master_key();
    assert_eq!(
        outcome(verify(&ca, &issued, user, &rotated, NOW)),
        format!("master key mismatch: certified {key}, current {rotated}")
    );
    // Revoked.
    let revoked = [RevokedEntry {
        serial: issued.serial.clone(),
        revoked_at: NOW,
        reason: RevocationReason::KeyCompromise,
    }];
    let crl = pem_encode("X509 CRL", &ca.crl_der(&revoked, 2, NOW).unwrap());
    assert_eq!(
        outcome(verify_with(
            &ca,
            &issued,
            user,
            &key,
            crl.as_bytes(),
            ca.root_pem().as_bytes(),
            NOW
        )),
        "revoked"
    );
    // Expired, not yet valid, stale CRL (CRL validity is one day in these tests).
    assert_eq!(
        outcome(verify(&ca, &issued, user, &key, NOW + Duration::days(8))),
        "certificate expired"
    );
    assert_eq!(
        outcome(verify(&ca, &issued, user, &key, NOW - Duration::hours(1))),
        "certificate not valid yet"
    );
    assert_eq!(
        outcome(verify(&ca, &issued, user, &key, NOW + Duration::days(2))),
        "CRL is stale (past nextUpdate); fetch a fresh one"
    );
    // Another root.
    let mut options = HierarchyOptions::new("Rogue");
    options.kdf_iterations = MIN_KDF_ITERATIONS;
    let rogue = generate_hierarchy(&options, b"rogue passphrase", NOW).unwrap();
    let rogue_ca = AgencyCa::from_material(&rogue, settings()).unwrap();
    let crl = pem_encode("X509 CRL", &ca.crl_der(&[], 1, NOW).unwrap());
    assert_eq!(
        outcome(verify_with(
            &ca,
            &issued,
            user,
            &key,
            crl.as_bytes(),
            rogue.root_cert_pem.as_bytes(),
            NOW
        )),
        "not issued by the pinned government root: UnknownIssuer"
    );
    // A CRL from another CA says nothing about this certificate.
    let rogue_crl = pem_encode("X509 CRL", &rogue_ca.crl_der(&[], 1, NOW).unwrap());
    assert_eq!(
        outcome(verify_with(
            &ca,
            &issued,
            user,
            &key,
            rogue_crl.as_bytes(),
            ca.root_pem().as_bytes(),
            NOW
        )),
        "revocation status unknown: the CRL is not from the certificate's issuer"
    );
    // A TLS certificate is not an identity certificate.
    let tls = ca
        .issue(
            &request(Profile::HomeserverTls, "buergeramt", &ip_csr("127.0.0.2")),
            NOW,
        )
        .unwrap();
    assert_eq!(
        outcome(verify(&ca, &tls, user, &key, NOW)),
        "not an agency-identity certificate (extended key usage missing)"
    );
    // Garbage in.
    assert_eq!(
        outcome(verify_identity(&VerifyInput {
            chain_pem: b"nothing here",
            root_pem: ca.root_pem().as_bytes(),
            expected_user_id: user,
            current_master_key: &key,
            crl: crl.as_bytes(),
            now: NOW,
        })),
        "malformed chain: no certificate"
    );
    assert_eq!(
        outcome(verify_with(
            &ca,
            &issued,
            user,
            &key,
            b"junk",
            ca.root_pem().as_bytes(),
            NOW
        )),
        "malformed CRL: no items found"
    );
}

#[test]
fn in_process_homeserver_tls_for_the_stack() {
    let ca = AgencyCa::from_material(material(), settings()).unwrap();
    let out = ca
        .issue_homeserver_tls(&[SanHost::parse("127.0.0.2").unwrap()], NOW)
        .unwrap();
    assert!(out.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(&out.issued.cert_der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names.len(), 1);
    assert!(matches!(
        san.general_names[0],
        x509_parser::extensions::GeneralName::IPAddress([127, 0, 0, 2])
    ));
    assert!(matches!(
        ca.issue_homeserver_tls(&[], NOW),
        Err(IssueError::NoNames(_))
    ));
}
