//! The run CA: generated once per state directory, it issues each homeserver's TLS certificate.
//!
//! Synapse dials IP-literal server names without SNI and checks the certificate's **IP SAN**
//! (`verify_ip_address`), so server certificates carry `subjectAltName=IP:<ip>`. Keys are
//! ECDSA P-256. A later issue swaps this module for the agency CA crate; callers only see
//! [`RunCa::load_or_create`], [`RunCa::issue_server_cert`] and the PEM paths.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::util::{create_dir, write_file};
use crate::{Result, StackError};

/// A CA whose certificate and key are PEM files in a directory.
#[derive(Debug)]
pub struct RunCa {
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert_path: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key_path: PathBuf,
}

impl RunCa {
    /// Loads the CA in `dir` (`ca.pem`, `ca.key`) or generates one named `common_name`.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<RunCa> {
        let ca = RunCa {
            cert_path: dir.join("ca.pem"),
            key_path: dir.join("ca.key"),
        };
        if ca.cert_path.is_file() && ca.key_path.is_file() {
            ca.issuer()?;
            return Ok(ca);
        }
        create_dir(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 365);
        let cert = params.self_signed(&key)?;
        write_file(&ca.key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca.cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(ca)
    }

    /// The CA certificate (PEM): what peers put into `federation_custom_ca_list`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Issues a server certificate for `ip` into `out_dir` (`cert.pem`, `key.pem`).
    ///
    /// Issued afresh on every start (milliseconds), so a changed address or CA never leaves
    /// a stale certificate behind.
    pub fn issue_server_cert(&self, ip: IpAddr, out_dir: &Path) -> Result<ServerCert> {
        create_dir(out_dir)?;
        let issuer = self.issuer()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![ip.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, ip.to_string());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 90);
        let cert = params.signed_by(&key, &issuer)?;
        let server = ServerCert {
            cert_path: out_dir.join("cert.pem"),
            key_path: out_dir.join("key.pem"),
        };
        write_file(&server.key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&server.cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(server)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let cert_pem = fs::read_to_string(&self.cert_path)
            .map_err(StackError::io("reading", &self.cert_path))?;
        let key_pem = fs::read_to_string(&self.key_path)
            .map_err(StackError::io("reading", &self.key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&cert_pem, key)?)
    }
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_cert_has_ip_san_and_ca_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = RunCa::load_or_create(&dir.path().join("ca"), "test CA").unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let server = ca.issue_server_cert(ip, &dir.path().join("hs")).unwrap();
        let pem = fs::read_to_string(&server.cert_path).unwrap();
        let der = pem_body(&pem);
        // GeneralName iPAddress is `[7] IMPLICIT OCTET STRING`: tag 0x87, length 4, the address.
        assert!(
            der.windows(6).any(|w| w == [0x87, 4, 127, 0, 0, 2]),
            "no IP SAN 127.0.0.2"
        );
        let key = fs::read_to_string(&server.key_path).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

        // A second load reuses the same CA files.
        let before = fs::read(ca.cert_path()).unwrap();
        let again = RunCa::load_or_create(&dir.path().join("ca"), "test CA").unwrap();
        assert_eq!(fs::read(again.cert_path()).unwrap(), before);
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }
}
