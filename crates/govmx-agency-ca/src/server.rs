//! The HTTPS issuance API (axum over rustls) and its admin listener.
//!
//! Main listener:
//! - `POST /_govmx/ca/v1/enroll` `{"token","profile","csr","master_key"?}` →
//!   `{"serial","profile","not_after","certificate","chain"}`;
//! - `GET /_govmx/ca/v1/crl` (DER, `application/pkix-crl`), `GET /_govmx/ca/v1/crl.pem`;
//! - `GET /_govmx/ca/v1/chain` (intermediate + root, PEM);
//! - `GET /_govmx/ca/v1/status` (JSON summary).
//!
//! Errors are Matrix-style `{"errcode","error"}`: a refused token is 403 `M_FORBIDDEN`, a refused
//! CSR 400 `GOVMX_CSR_REFUSED`, a policy refusal 403 `GOVMX_NOT_ALLOWED`; 5xx bodies are generic.

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use govmx_service::{MatrixError, Readiness, Shutdown, admin_router};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject as _,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::{
    ca::{IssueError, Profile},
    config::Config,
    log::IssuanceLog,
    names::AgencyDirectory,
    store::{CaDir, EnrollRequest, StoreError, crl_next_update},
    token::rfc3339,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// A file or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we tried.
        what: &'static str,
        /// The file or address.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The agencies document was refused.
    #[error("agencies: {0}")]
    Agencies(String),
    /// The CA directory could not be opened.
    #[error("ca_dir: {0}")]
    Ca(#[from] StoreError),
    /// TLS set-up failed.
    #[error("tls: {0}")]
    Tls(String),
}

/// `profile` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabel {
    /// The profile.
    pub profile: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `token`, `csr`, `policy`, `internal`.
    pub reason: &'static str,
}

/// The CA's metrics.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// `govmx_ca_issued_total{profile}`.
    pub issued: Family<ProfileLabel, Counter>,
    /// `govmx_ca_refused_total{reason}`.
    pub refused: Family<ReasonLabel, Counter>,
    /// `govmx_ca_crl_next_update_seconds`: Unix time of the served CRL's nextUpdate.
    pub crl_next_update: Gauge,
    /// `govmx_ca_intermediate_not_after_seconds`.
    pub intermediate_not_after: Gauge,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("govmx_ca_issued", "Certificates issued", m.issued.clone());
        registry.register(
            "govmx_ca_refused",
            "Issuance requests refused",
            m.refused.clone(),
        );
        registry.register(
            "govmx_ca_crl_next_update_seconds",
            "nextUpdate of the served CRL (Unix time)",
            m.crl_next_update.clone(),
        );
        registry.register(
            "govmx_ca_intermediate_not_after_seconds",
            "Expiry of the issuing intermediate (Unix time)",
            m.intermediate_not_after.clone(),
        );
        m
    }
}

#[derive(Clone, Debug)]
struct AppState {
    dir: Arc<CaDir>,
    metrics: Metrics,
}

/// A bound, not yet serving CA.
#[derive(Debug)]
pub struct Server {
    config: Config,
    state: AppState,
    main: TcpListener,
    admin: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    registry: Arc<Registry>,
}

impl Server {
    /// Reads the agencies document, opens the CA directory, sets up TLS (files or a certificate
    /// the CA issues itself) and binds both listeners. `config` must already be validated.
    pub async fn bind(config: Config) -> Result<Server, StartupError> {
        let now = OffsetDateTime::now_utc();
        let agencies_bytes =
            std::fs::read(&config.agencies).map_err(|source| StartupError::Io {
                what: "cannot read agencies",
                path: config.agencies.clone(),
                source,
            })?;
        let agencies =
            AgencyDirectory::parse(&config.agencies.display().to_string(), &agencies_bytes, now)
                .map_err(StartupError::Agencies)?;
        let dir = CaDir::open(&config.ca_dir, config.ca_settings(), Some(agencies))?;
        // A full audit once at start: the server never appends to a broken chain.
        IssuanceLog::open(&dir.log_path()).map_err(StoreError::from)?;
        let tls = tls_config(&config, &dir, now)?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics
            .intermediate_not_after
            .set(dir.ca().intermediate_not_after().unix_timestamp());
        let bind = |addr: SocketAddr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Io {
                    what,
                    path: PathBuf::from(addr.to_string()),
                    source,
                })
        };
        let main = bind(config.listen, "cannot bind listen").await?;
        let admin = bind(config.admin_listen, "cannot bind admin_listen").await?;
        Ok(Server {
            config,
            state: AppState {
                dir: Arc::new(dir),
                metrics,
            },
            main,
            admin,
            tls,
            registry: Arc::new(registry),
        })
    }

    /// The API listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.main.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The root certificate clients should pin (PEM).
    pub fn root_pem(&self) -> String {
        self.state.dir.ca().root_pem().to_owned()
    }

    /// Serves both listeners and keeps the CRL fresh until `shutdown`.
    pub async fn serve(self, shutdown: Shutdown) -> io::Result<()> {
        let drain = self.config.drain_timeout.duration().unsigned_abs();
        let readiness = Readiness::not_ready("CRL not checked yet");
        let crl_task = tokio::spawn(crl_loop(
            self.state.clone(),
            self.config.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        let admin = admin_router(readiness, self.registry.clone());
        let app = router(self.state.clone(), self.config.max_request_bytes);
        tracing::info!(listen = %self.main.local_addr()?, admin = %self.admin.local_addr()?, "agency CA serving");
        let res = tokio::try_join!(
            serve_tls(
                self.main,
                TlsAcceptor::from(self.tls),
                app,
                shutdown.clone(),
                drain
            ),
            govmx_service::serve(self.admin, admin, shutdown.clone(), drain),
        );
        crl_task.abort();
        res.map(|_| ())
    }
}

fn tls_config(
    config: &Config,
    dir: &CaDir,
    now: OffsetDateTime,
) -> Result<Arc<rustls::ServerConfig>, StartupError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| StartupError::Io {
            what: "cannot read",
            path: path.clone(),
            source,
        })
    };
    let (chain_pem, key_pem) = match (&config.tls.certificate, &config.tls.private_key) {
        (Some(cert), Some(key)) => (read(cert)?, read(key)?),
        _ => {
            let issued = dir
                .ca()
                .issue_service_mtls(&config.self_issued_hosts(), now)
                .map_err(|e| StartupError::Tls(e.to_string()))?;
            dir.record_issued(&issued.issued, now)?;
            (
                dir.ca().chain_pem(&issued.issued).into_bytes(),
                issued.key_pem.into_bytes(),
            )
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| StartupError::Tls(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(StartupError::Tls("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| StartupError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartupError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartupError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    shutdown: Shutdown,
    drain: Duration,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        // Back off (e.g. out of file descriptors) instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
                    tokio::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        }
                        () = shutdown.wait() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.wait() => break,
        }
    }
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Re-signs the CRL when `refresh_before` is reached (also picking up `govmx ca revoke` runs),
/// and sets readiness: not ready while the CRL is missing or stale.
async fn crl_loop(state: AppState, config: Config, readiness: Readiness, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(config.crl.check_interval.duration().unsigned_abs());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => return,
        }
        let dir = state.dir.clone();
        let refresh = config.crl.refresh_before.duration();
        let result = tokio::task::spawn_blocking(move || {
            let now = OffsetDateTime::now_utc();
            let next = dir.crl_pem().ok().and_then(|pem| crl_next_update(&pem));
            match next {
                Some(next) if next - now > refresh => Ok(next),
                _ => {
                    let pem = dir.regenerate_crl(now)?;
                    tracing::info!("CRL re-signed");
                    crl_next_update(&pem)
                        .ok_or_else(|| StoreError::Invalid("new CRL has no nextUpdate".into()))
                }
            }
        })
        .await;
        match result {
            Ok(Ok(next)) => {
                state.metrics.crl_next_update.set(next.unix_timestamp());
                readiness.set_ready();
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot refresh the CRL");
                readiness.set_not_ready(format!("CRL refresh failed: {error}"));
            }
            Err(error) => tracing::error!(%error, "CRL task failed"),
        }
    }
}

/// The API router (without TLS; tests may drive it directly).
fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/_govmx/ca/v1/enroll", post(enroll))
        .route("/_govmx/ca/v1/crl", get(crl_der))
        .route("/_govmx/ca/v1/crl.pem", get(crl_pem))
        .route("/_govmx/ca/v1/chain", get(chain))
        .route("/_govmx/ca/v1/status", get(status))
        .fallback(|| async { MatrixError::unrecognized() })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    token: String,
    profile: String,
    csr: String,
    #[serde(default)]
    master_key: Option<String>,
}

#[derive(Debug, Serialize)]
struct EnrollResponse {
    serial: String,
    profile: Profile,
    not_after: String,
    certificate: String,
    chain: String,
}

async fn enroll(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollResponse>, MatrixError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            MatrixError::too_large("request body too large")
        } else {
            MatrixError::bad_request(rejection.body_text())
        }
    })?;
    let request: EnrollBody = serde_json::from_slice(&body).map_err(|e| {
        MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            format!("invalid request: {e}"),
        )
    })?;
    let profile: Profile = request
        .profile
        .parse()
        .map_err(|e: String| MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e))?;
    let dir = state.dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        dir.enroll(
            &EnrollRequest {
                token: &request.token,
                profile,
                csr: request.csr.as_bytes(),
                master_key: request.master_key.as_deref(),
            },
            OffsetDateTime::now_utc(),
        )
    })
    .await
    .map_err(MatrixError::internal)?;
    let refused = |reason: &'static str| {
        state
            .metrics
            .refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };
    match result {
        Ok(enrolled) => {
            state
                .metrics
                .issued
                .get_or_create(&ProfileLabel {
                    profile: profile.as_str(),
                })
                .inc();
            tracing::info!(serial = %enrolled.issued.serial, %profile, subject = %enrolled.issued.subject, "issued");
            Ok(Json(EnrollResponse {
                serial: enrolled.issued.serial.clone(),
                profile,
                not_after: rfc3339(enrolled.issued.not_after),
                certificate: enrolled.issued.cert_pem(),
                chain: enrolled.chain_pem,
            }))
        }
        Err(error) => {
            tracing::info!(%profile, %error, "refused");
            Err(match error {
                StoreError::Token(e) => {
                    refused("token");
                    MatrixError::forbidden(e.to_string())
                }
                StoreError::Issue(IssueError::Signing(e)) => {
                    refused("internal");
                    MatrixError::internal(e)
                }
                StoreError::Issue(e @ IssueError::Csr(_)) => {
                    refused("csr");
                    MatrixError::new(StatusCode::BAD_REQUEST, "GOVMX_CSR_REFUSED", e.to_string())
                }
                StoreError::Issue(e) => {
                    refused("policy");
                    MatrixError::new(StatusCode::FORBIDDEN, "GOVMX_NOT_ALLOWED", e.to_string())
                }
                other => {
                    refused("internal");
                    MatrixError::internal(other)
                }
            })
        }
    }
}

async fn crl_pem(State(state): State<AppState>) -> Result<Response, MatrixError> {
    let pem = state.dir.crl_pem().map_err(MatrixError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

async fn crl_der(State(state): State<AppState>) -> Result<Response, MatrixError> {
    let pem = state.dir.crl_pem().map_err(MatrixError::internal)?;
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
        .map_err(MatrixError::internal)?;
    Ok((
        [(header::CONTENT_TYPE, "application/pkix-crl")],
        der.to_vec(),
    )
        .into_response())
}

async fn chain(State(state): State<AppState>) -> Response {
    let ca = state.dir.ca();
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        format!("{}{}", ca.intermediate_pem(), ca.root_pem()),
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Result<Json<crate::store::Status>, MatrixError> {
    let dir = state.dir.clone();
    let status = tokio::task::spawn_blocking(move || dir.status())
        .await
        .map_err(MatrixError::internal)?
        .map_err(MatrixError::internal)?;
    Ok(Json(status))
}
