//! The API the local stack will call instead of its own run CA: open-or-create a CA directory,
//! issue homeserver TLS certificates in-process, and a rustls client that pins the root accepts
//! a rustls server presenting that chain for an IP-literal name (as federation does).

use std::sync::Arc;

use govmx_agency_ca::{CaDir, CaSettings, HierarchyOptions, SanHost, keys::MIN_KDF_ITERATIONS};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn open_or_init_issue_and_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let mut options = HierarchyOptions::new("govmx run");
    options.kdf_iterations = MIN_KDF_ITERATIONS;
    let dir = tmp.path().join("ca");
    let ca = CaDir::open_or_init(
        &dir,
        &options,
        b"run passphrase 123",
        CaSettings::default(),
        now,
    )
    .unwrap();
    let root_before = std::fs::read(ca.root_path()).unwrap();
    // A second call reuses the same CA.
    let ca = CaDir::open_or_init(
        &dir,
        &options,
        b"run passphrase 123",
        CaSettings::default(),
        now,
    )
    .unwrap();
    assert_eq!(std::fs::read(ca.root_path()).unwrap(), root_before);

    let (chain_pem, key_pem) = ca
        .issue_homeserver_tls(&[SanHost::parse("127.0.0.1").unwrap()], now)
        .unwrap();
    assert_eq!(chain_pem.matches("BEGIN CERTIFICATE").count(), 2);

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&root_before).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    serve.await.unwrap();

    // Logged like every other issuance.
    let log = std::fs::read(ca.log_path()).unwrap();
    let report = govmx_agency_ca::log::audit(&log).unwrap();
    assert_eq!(report.entries, 2); // init + issued
}
