//! TLS server configuration for the inbound edge: certificate chain and key from PEM files,
//! rustls with the aws-lc-rs provider (the workspace's one provider), HTTP/1.1 via ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate found")]
    NoCertificate(String),
    /// The key file holds no private key.
    #[error("{0}: no private key found")]
    NoKey(String),
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider's random generator failed: no handshake could be made.
    #[error("TLS random generator: no randomness available")]
    Random,
}

/// Builds the server configuration from PEM files.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Read { path, source }
    };
    let cert_pem = std::fs::read(cert_path).map_err(read_err(cert_path))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(read_err(cert_path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.display().to_string()));
    }
    let key_pem = std::fs::read(key_path).map_err(read_err(key_path))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(read_err(key_path))?
        .ok_or_else(|| TlsError::NoKey(key_path.display().to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // aws-lc seeds its random generator on first use (~20 ms of CPU-jitter sampling, once per
    // process): do it now, before anything is served, not in the first peer's handshake.
    config
        .crypto_provider()
        .secure_random
        .fill(&mut [0u8; 32])
        .map_err(|_| TlsError::Random)?;
    Ok(Arc::new(config))
}
