//! Agency CA benchmark.
//!
//! Measures on one thread: (1) `agency-identity` issuance from a CSR — CSR parse + proof of
//! possession + policy checks + sign + DER and PEM encoding — in certificates per second, with the
//! raw parts (CSR intake alone, one P-256 signature alone) for comparison; (2) generating and
//! signing a CRL that lists 100,000 revoked serials. Run with
//! `cargo bench -p govmx-agency-ca --bench issuance`; `benches/ca-vs-openssl.sh` adds the OpenSSL
//! figures; results go to `docs/benchmarks.md` ("Agency CA").

use std::hint::black_box;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use govmx_agency_ca::{
    AgencyCa, AgencyDirectory, CaSettings, HierarchyOptions, Profile,
    ca::{IssueRequest, RevocationReason, RevokedEntry, generate_hierarchy, pem_encode},
    csr::parse_csr,
    keys::MIN_KDF_ITERATIONS,
};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType, SigningKey as _};
use time::OffsetDateTime;

const CSRS: usize = 1_000;
const MEASURE: Duration = Duration::from_secs(3);
const REVOKED: usize = 100_000;

fn main() -> io::Result<()> {
    let now = OffsetDateTime::now_utc();
    let mut options = HierarchyOptions::new("Bench");
    options.kdf_iterations = MIN_KDF_ITERATIONS;
    let material = generate_hierarchy(&options, b"bench passphrase", now).expect("hierarchy");
    let agencies = AgencyDirectory::parse(
        "agencies.yaml",
        include_bytes!("../../../policies/agencies.yaml"),
        now,
    )
    .expect("agencies");
    let ca = AgencyCa::from_material(&material, CaSettings::default())
        .expect("ca")
        .with_agencies(agencies);
    let master_key = base64::engine::general_purpose::STANDARD_NO_PAD.encode(
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
            .verifying_key()
            .as_bytes(),
    );

    // Clients make their keys and CSRs; that is not the CA's work.
    let csrs: Vec<Vec<u8>> = (0..CSRS)
        .map(|i| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.subject_alt_names = vec![SanType::URI(
                format!("matrix:u/amt-{i}:127.0.0.2:8448")
                    .try_into()
                    .expect("uri"),
            )];
            params.serialize_request(&key).expect("csr").der().to_vec()
        })
        .collect();

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "agency CA benchmark (one thread, {CSRS} distinct CSRs, {} s per figure)",
        MEASURE.as_secs()
    )?;

    let rate = |f: &mut dyn FnMut(usize)| {
        // Warm-up, then the best of three windows.
        for i in 0..200 {
            f(i);
        }
        let mut best = 0.0f64;
        for _ in 0..3 {
            let started = Instant::now();
            let mut n = 0usize;
            while started.elapsed() < MEASURE / 3 {
                for _ in 0..100 {
                    f(n);
                    n += 1;
                }
            }
            best = best.max(n as f64 / started.elapsed().as_secs_f64());
        }
        best
    };

    let issue_rate = rate(&mut |i| {
        let issued = ca
            .issue(
                &IssueRequest {
                    profile: Profile::AgencyIdentity,
                    agency: "buergeramt-musterstadt",
                    csr: &csrs[i % CSRS],
                    master_key: Some(&master_key),
                    bound_subject: None,
                },
                now,
            )
            .expect("issued");
        black_box(issued.cert_pem());
    });
    writeln!(
        out,
        "agency-identity issuance (parse + checks + sign + DER/PEM): {issue_rate:>9.0} certs/s ({:.1} µs each)",
        1e6 / issue_rate
    )?;

    let parse_rate = rate(&mut |i| {
        black_box(parse_csr(&csrs[i % CSRS]).expect("csr"));
    });
    writeln!(
        out,
        "  CSR intake alone (parse + ECDSA verify):                  {parse_rate:>9.0} CSRs/s ({:.1} µs each)",
        1e6 / parse_rate
    )?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let message = [7u8; 300];
    let sign_rate = rate(&mut |_| {
        black_box(key.sign(&message).expect("sign"));
    });
    writeln!(
        out,
        "  one P-256 signature alone (rcgen's backend):              {sign_rate:>9.0} sigs/s ({:.1} µs each)",
        1e6 / sign_rate
    )?;

    let signature = key.sign(&message).expect("sign");
    let public = key.public_key_raw().to_vec();
    let verify_rate = rate(&mut |_| {
        webpki::aws_lc_rs::ECDSA_P256_SHA256
            .verify_signature(&public, &message, &signature)
            .expect("valid");
    });
    writeln!(
        out,
        "  one P-256 verification alone (the CSR's proof of possession): {verify_rate:>5.0} verifs/s ({:.1} µs each)",
        1e6 / verify_rate
    )?;
    let bound = 1.0 / (1.0 / sign_rate + 1.0 / verify_rate);
    writeln!(
        out,
        "  ceiling for verify + sign per certificate:                 {bound:>9.0} certs/s; issuance reaches {:.0} %",
        100.0 * issue_rate / bound
    )?;

    // CRL with 100,000 revoked serials.
    let revoked: Vec<RevokedEntry> = (0..REVOKED)
        .map(|i| RevokedEntry {
            serial: format!("4{:031x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
            revoked_at: now,
            reason: RevocationReason::KeyCompromise,
        })
        .collect();
    let mut best = Duration::MAX;
    let mut size = 0;
    for number in 0..3 {
        let started = Instant::now();
        let der = ca.crl_der(&revoked, number + 1, now).expect("crl");
        let pem = pem_encode("X509 CRL", &der);
        best = best.min(started.elapsed());
        size = der.len();
        black_box(pem);
    }
    writeln!(
        out,
        "CRL with {REVOKED} revoked serials (build + sign + DER + PEM): {:.0} ms, {:.1} MiB DER",
        best.as_secs_f64() * 1e3,
        size as f64 / (1024.0 * 1024.0)
    )?;
    Ok(())
}
