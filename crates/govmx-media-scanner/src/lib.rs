//! govmx media scanner: an upload gate in front of Synapse that streams every media upload to
//! clamd while spooling it, and forwards it only when clean.
//!
//! Main items:
//! - [`config::Config`]: the YAML config (strict, validated before binding);
//! - [`clamd::ClamdClient`]: our own clamd client (INSTREAM, PING, VERSION, failover, timeouts);
//! - [`gate::router`] with [`gate::AppState`]: the main listener (upload gate, scan API, proxy);
//! - [`mcs`]: the matrix-content-scanner compatible download-and-scan API (plain and
//!   end-to-end encrypted media, decrypted in a stream straight into clamd);
//! - [`limits`]: concurrent-scan cap, spool byte budget, signature-age gate;
//! - [`Server`]: binds both listeners, runs the clamd health loop, serves until shutdown.
//!
//! **Architecture invariants**: a scanner failure is never reported as an infection; Synapse
//! never receives an upload body that did not get a clean verdict (unless the operator set
//! `scanner_unavailable: allow`); no spooled plaintext outlives its request; decrypted E2EE
//! plaintext never touches the disk (only ciphertext is spooled).
#![forbid(unsafe_code)]

pub mod audit;
pub mod cache;
pub mod clamd;
pub mod config;
pub mod gate;
pub mod limits;
pub mod mcs;
pub mod metrics;
pub mod mime;
pub mod spool;

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc};

use govmx_service::{Readiness, Shutdown, admin_router};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{
    audit::AuditLog,
    clamd::ClamdClient,
    config::{Config, UnavailablePolicy},
    gate::AppState,
    mcs::McsState,
    metrics::{AddressLabel, Metrics},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The MCS API could not be set up (secret key, token, HTTP client).
    #[error("mcs: {0}")]
    Mcs(String),
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
}

/// A bound, not yet serving media scanner.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    main: TcpListener,
    admin: TcpListener,
    readiness: Readiness,
    registry: Arc<Registry>,
    mcs: Option<Arc<McsState>>,
}

// === impl Server ===

impl Server {
    /// Opens the audit log, sweeps stale spool files, reads the scan API token and binds both
    /// listeners. `config` must already be validated.
    pub async fn bind(config: Config) -> Result<Self, StartupError> {
        let io_err = |what, path: &std::path::Path| {
            let path = path.to_owned();
            move |source| StartupError::Io { what, path, source }
        };
        let swept = spool::sweep_stale(&config.spool.dir)
            .map_err(io_err("cannot sweep spool dir", &config.spool.dir))?;
        if swept > 0 {
            tracing::warn!(swept, dir = %config.spool.dir.display(), "removed stale spool files");
        }
        let audit = AuditLog::open(&config.audit_log)
            .map_err(io_err("cannot open audit log", &config.audit_log))?;
        let scan_token = match (&config.scan_api.enabled, &config.scan_api.token_file) {
            (true, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(io_err("cannot read scan API token", path))?,
            ),
            _ => None,
        };
        let mcs = if config.mcs.enabled {
            Some(Arc::new(
                McsState::from_config(&config.mcs).map_err(StartupError::Mcs)?,
            ))
        } else {
            None
        };
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let clamd = ClamdClient::new(config.clamd_settings());
        let main = TcpListener::bind(config.listen).await.map_err(io_err(
            "cannot bind listen",
            std::path::Path::new(&config.listen.to_string()),
        ))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(io_err(
                "cannot bind admin_listen",
                std::path::Path::new(&config.admin_listen.to_string()),
            ))?;
        let state = AppState::new(config, clamd, audit, metrics, scan_token);
        Ok(Self {
            state,
            main,
            admin,
            readiness: Readiness::not_ready("clamd not probed yet"),
            registry: Arc::new(registry),
            mcs,
        })
    }

    /// The main listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.main.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves both listeners and runs the clamd health loop until `shutdown`.
    pub async fn serve(self, shutdown: Shutdown) -> io::Result<()> {
        let drain = self.state.config().drain_timeout.0;
        let health = tokio::spawn(health_loop(
            self.state.clone(),
            self.readiness.clone(),
            shutdown.clone(),
        ));
        let admin = admin_router(self.readiness.clone(), self.registry.clone());
        let main = gate::router(self.state.clone(), self.mcs.clone());
        tracing::info!(listen = %self.main.local_addr()?, admin = %self.admin.local_addr()?, "media scanner serving");
        let res = tokio::try_join!(
            govmx_service::serve(self.main, main, shutdown.clone(), drain),
            govmx_service::serve(self.admin, admin, shutdown.clone(), drain),
        );
        health.abort();
        res.map(|_| ())
    }
}

/// Probes every clamd each `health_interval`: updates `govmx_media_clamd_up`, the DB age gauges,
/// the signature-age gate and readiness (ready when one clamd answers, or always with
/// `scanner_unavailable: allow`; never while the signature-age gate refuses scans).
///
/// Signature age: a DB older than `signatures.warn_age` is logged and flagged in
/// `govmx_media_clamd_db_stale`; when *every* answering clamd is older than
/// `signatures.refuse_age`, scans are refused (503) until a probe sees a fresh one. A clamd that
/// reports no DB date (no official databases) has an unknown age: warned, and refused only with
/// `signatures.refuse_unknown_age: true`.
async fn health_loop(state: AppState, readiness: Readiness, shutdown: Shutdown) {
    let interval = state.config().clamd.health_interval.0;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => return,
        }
        let probes = state.clamd().probe_all().await;
        let now = time::OffsetDateTime::now_utc();
        let mut failures = Vec::new();
        let mut too_old = Vec::new();
        let mut fresh = 0usize;
        for probe in &probes {
            let label = AddressLabel {
                address: probe.addr.clone(),
            };
            match &probe.result {
                Ok(version) => {
                    state.metrics().clamd_up.get_or_create(&label).set(1);
                    match signature_age(state.config(), version.db_age(now)) {
                        AgeVerdict::Fresh => {
                            fresh += 1;
                            state.metrics().db_stale.get_or_create(&label).set(0);
                        }
                        AgeVerdict::Warn(msg) => {
                            fresh += 1;
                            tracing::warn!(address = %probe.addr, "{msg}");
                            state.metrics().db_stale.get_or_create(&label).set(1);
                        }
                        AgeVerdict::Refuse(msg) => {
                            tracing::error!(address = %probe.addr, "{msg}");
                            state.metrics().db_stale.get_or_create(&label).set(1);
                            too_old.push(format!("clamd {}: {msg}", probe.addr));
                        }
                    }
                    if let Some(age) = version.db_age(now) {
                        state
                            .metrics()
                            .db_age
                            .get_or_create(&label)
                            .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
                    }
                }
                Err(err) => {
                    state.metrics().clamd_up.get_or_create(&label).set(0);
                    failures.push(err.to_string());
                }
            }
        }
        let refusal = (fresh == 0 && !too_old.is_empty()).then(|| too_old.join("; "));
        state.signatures().set(refusal.clone());
        if let Some(reason) = refusal {
            readiness.set_not_ready(format!("scans refused: {reason}"));
        } else if failures.len() < probes.len()
            || state.config().scanner_unavailable == UnavailablePolicy::Allow
        {
            readiness.set_ready();
        } else {
            let reason = format!("no clamd answers: {}", failures.join("; "));
            tracing::warn!(%reason, "not ready");
            readiness.set_not_ready(reason);
        }
    }
}

/// What the signature DB age means for scanning.
#[derive(Debug, PartialEq, Eq)]
enum AgeVerdict {
    Fresh,
    Warn(String),
    Refuse(String),
}

fn signature_age(config: &Config, age: Option<std::time::Duration>) -> AgeVerdict {
    let sig = &config.signatures;
    match age {
        None if sig.refuse_unknown_age && sig.refuse_age.is_some() => AgeVerdict::Refuse(
            "signature DB age unknown (no DB date in VERSION) and refuse_unknown_age is set".into(),
        ),
        None => AgeVerdict::Warn(
            "signature DB age unknown (no DB date in VERSION); age limits not applied".into(),
        ),
        Some(age) if sig.refuse_age.is_some_and(|r| age > r.0) => AgeVerdict::Refuse(format!(
            "signature DB is {}h old, older than signatures.refuse_age",
            age.as_secs() / 3600
        )),
        Some(age) if age > sig.warn_age.0 => AgeVerdict::Warn(format!(
            "signature DB is {}h old, older than signatures.warn_age",
            age.as_secs() / 3600
        )),
        Some(_) => AgeVerdict::Fresh,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{HumanDuration, SignaturesConfig};

    #[test]
    fn signature_age_rules() {
        let base = "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream: http://127.0.0.1:8008\nclamd:\n  addresses: [\"127.0.0.1:3310\"]\nmax_upload_size: 1MiB\nspool:\n  dir: /tmp\naudit_log: /tmp/a.jsonl\n";
        let mut config: Config = govmx_service::config::from_yaml_str(base, "c.yaml").unwrap();
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        assert_eq!(signature_age(&config, h(1)), AgeVerdict::Fresh);
        assert!(matches!(signature_age(&config, h(49)), AgeVerdict::Warn(_)));
        assert!(matches!(signature_age(&config, None), AgeVerdict::Warn(_)));
        config.signatures = SignaturesConfig {
            warn_age: HumanDuration(Duration::from_secs(3600)),
            refuse_age: Some(HumanDuration(Duration::from_secs(7200))),
            refuse_unknown_age: false,
        };
        assert!(matches!(signature_age(&config, h(2)), AgeVerdict::Warn(_)));
        assert!(matches!(
            signature_age(&config, h(3)),
            AgeVerdict::Refuse(_)
        ));
        assert!(matches!(signature_age(&config, None), AgeVerdict::Warn(_)));
        config.signatures.refuse_unknown_age = true;
        assert!(matches!(
            signature_age(&config, None),
            AgeVerdict::Refuse(_)
        ));
    }
}
