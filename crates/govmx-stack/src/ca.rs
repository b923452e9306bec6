//! The run CA: the govmx agency CA (crate `govmx-agency-ca`), created once per state directory,
//! issues each homeserver's federation TLS certificate — the network trusts its own root.
//!
//! Synapse dials IP-literal server names without SNI and checks the certificate's **IP SAN**
//! (`verify_ip_address`), so server certificates carry `subjectAltName=IP:<ip>` (profile
//! `homeserver-tls`). The hierarchy is a root (its key encrypted at rest with a passphrase kept
//! in a 0600 file beside it: this is a per-run CA) and an online intermediate; servers present
//! the chain (leaf + intermediate) and peers pin the root. Every issuance goes to the CA's
//! hash-chained issuance log, so `govmx ca audit <state>/ca` works on a run's CA too.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use govmx_agency_ca::{CaDir, CaSettings, HierarchyOptions, SanHost};
use rand::RngCore as _;
use time::OffsetDateTime;

use crate::util::{create_dir, write_file};
use crate::{Result, StackError};

/// The file holding the passphrase of the run CA's root key.
const PASSPHRASE_FILE: &str = "root-passphrase";

/// The run's CA directory.
#[derive(Debug)]
pub struct RunCa {
    ca: CaDir,
    root_path: PathBuf,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate chain (PEM, leaf first, then the intermediate).
    pub cert_path: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key_path: PathBuf,
}

impl RunCa {
    /// Opens the CA in `dir` or creates one named `name` (root and intermediate).
    pub fn load_or_create(dir: &Path, name: &str) -> Result<RunCa> {
        create_dir(dir)?;
        let passphrase_path = dir.join(PASSPHRASE_FILE);
        let passphrase = match std::fs::read(&passphrase_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 24];
                rand::rngs::OsRng.try_fill_bytes(&mut secret).map_err(|e| {
                    StackError::CorruptState {
                        path: passphrase_path.clone(),
                        detail: format!("no randomness for the passphrase: {e}"),
                    }
                })?;
                let text = hex::encode(secret).into_bytes();
                write_file(&passphrase_path, &text, 0o600)?;
                text
            }
            Err(error) => return Err(StackError::io("reading", &passphrase_path)(error)),
        };
        let mut options = HierarchyOptions::new(name);
        // The passphrase sits beside the key: the KDF cost buys nothing here but start time.
        options.kdf_iterations = 10_000;
        let ca = CaDir::open_or_init(
            dir,
            &options,
            &passphrase,
            CaSettings::default(),
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| ca_error(dir, &e))?;
        let root_path = ca.root_path();
        Ok(RunCa { ca, root_path })
    }

    /// The root certificate (PEM): what peers put into `federation_custom_ca_list`.
    pub fn cert_path(&self) -> &Path {
        &self.root_path
    }

    /// The CA directory (for `govmx ca audit`, CRL, issuance log).
    pub fn dir(&self) -> &Path {
        self.root_path.parent().unwrap_or(Path::new("."))
    }

    /// Where copies of the issued certificates live, by profile (what the exporter reads).
    pub fn issued_dir(&self) -> PathBuf {
        self.dir().join("issued")
    }

    /// The current CRL (PEM).
    pub fn crl_path(&self) -> PathBuf {
        self.dir().join("crl.pem")
    }

    /// Issues a `homeserver-tls` certificate for `ip` into `out_dir` (`cert.pem` = chain,
    /// `key.pem`).
    ///
    /// Issued afresh on every start (milliseconds), so a changed address or CA never leaves
    /// a stale certificate behind.
    pub fn issue_server_cert(&self, ip: IpAddr, out_dir: &Path) -> Result<ServerCert> {
        self.issue_server_cert_with_serial(ip, out_dir)
            .map(|(server, _)| server)
    }

    /// [`RunCa::issue_server_cert`], also returning the certificate's serial (lower-case hex),
    /// e.g. for [`RunCa::revoke`].
    pub fn issue_server_cert_with_serial(
        &self,
        ip: IpAddr,
        out_dir: &Path,
    ) -> Result<(ServerCert, String)> {
        create_dir(out_dir)?;
        let now = OffsetDateTime::now_utc();
        let issued = self
            .ca
            .ca()
            .issue_homeserver_tls(&[SanHost::Ip(ip)], now)
            .map_err(|e| ca_error(self.dir(), &e))?;
        self.ca
            .record_issued(&issued.issued, now)
            .map_err(|e| ca_error(self.dir(), &e))?;
        let chain_pem = self.ca.ca().chain_pem(&issued.issued);
        let key_pem = issued.key_pem;
        let server = ServerCert {
            cert_path: out_dir.join("cert.pem"),
            key_path: out_dir.join("key.pem"),
        };
        write_file(&server.key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&server.cert_path, chain_pem.as_bytes(), 0o644)?;
        // The exporter's view of what this CA issued: `issued/<profile>/<name>.pem`.
        let copies = self.issued_dir().join("homeserver-tls");
        create_dir(&copies)?;
        write_file(
            &copies.join(format!("{ip}.pem")),
            chain_pem.as_bytes(),
            0o644,
        )?;
        Ok((server, issued.issued.serial))
    }

    /// Revokes the certificate with `serial` (cessation of operation) and re-signs the CRL at
    /// [`RunCa::crl_path`]; the issuance log records it.
    pub fn revoke(&self, serial: &str) -> Result<()> {
        self.ca
            .revoke(
                serial,
                govmx_agency_ca::ca::RevocationReason::CessationOfOperation,
                OffsetDateTime::now_utc(),
            )
            .map(drop)
            .map_err(|e| ca_error(self.dir(), &e))
    }
}

fn ca_error(dir: &Path, error: &dyn std::fmt::Display) -> StackError {
    StackError::CorruptState {
        path: dir.to_owned(),
        detail: format!("agency CA: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_chain_has_ip_san_verifies_with_openssl_and_ca_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = RunCa::load_or_create(&dir.path().join("ca"), "test CA").unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let server = ca.issue_server_cert(ip, &dir.path().join("hs")).unwrap();
        let chain = std::fs::read_to_string(&server.cert_path).unwrap();
        assert_eq!(
            chain.matches("BEGIN CERTIFICATE").count(),
            2,
            "leaf + intermediate"
        );
        let key = std::fs::read_to_string(&server.key_path).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

        // An independent verifier: openssl, pinning only the root, for the IP the peer dials.
        let leaf_end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
        let (leaf, intermediate) = chain.split_at(leaf_end);
        std::fs::write(dir.path().join("leaf.pem"), leaf).unwrap();
        std::fs::write(
            dir.path().join("intermediate.pem"),
            intermediate.trim_start(),
        )
        .unwrap();
        let verify = |ip: &str| {
            std::process::Command::new("openssl")
                .args([
                    "verify",
                    "-purpose",
                    "sslserver",
                    "-verify_ip",
                    ip,
                    "-CAfile",
                ])
                .arg(ca.cert_path())
                .arg("-untrusted")
                .arg(dir.path().join("intermediate.pem"))
                .arg(dir.path().join("leaf.pem"))
                .output()
                .unwrap()
        };
        let ok = verify("127.0.0.2");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stdout)
        );
        assert!(
            !verify("127.0.0.3").status.success(),
            "the SAN names one IP only"
        );

        // A second load reuses the same CA files.
        let before = std::fs::read(ca.cert_path()).unwrap();
        let again = RunCa::load_or_create(&dir.path().join("ca"), "test CA").unwrap();
        assert_eq!(std::fs::read(again.cert_path()).unwrap(), before);
    }
}
