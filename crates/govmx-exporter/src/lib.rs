//! govmx exporter: collects, on a schedule and in parallel, the security facts no other
//! component exports — from the Synapse admin API, clamd `VERSION`, the agency CA's files and the
//! signed policy bundle — and serves them from a cache on the admin listener's `/metrics`.
//!
//! Main items:
//! - [`config::Config`]: the YAML config (strict, validated before binding);
//! - [`Exporter`]: binds the admin listener, runs one collection loop per target (each with its
//!   own interval and timeout), serves `/healthz`, `/readyz`, `/metrics` until shutdown;
//! - [`cache::Cache`]: the latest [`cache::Snapshot`] per target, encoded on every scrape;
//! - the targets: [`synapse`], [`clamd`], [`ca`], [`policy`];
//! - [`exposition`]: OpenMetrics → classic text for `promtool check metrics`, sample names.
//!
//! **Architecture invariants**: a scrape never waits on a target (it only encodes the cache); a
//! failing target never blanks the others and keeps its own last values (only
//! `govmx_up{target}` drops to 0); labels have bounded cardinality (no user, room or media ids;
//! destination names only for failing destinations, capped).
#![forbid(unsafe_code)]

pub mod ca;
pub mod cache;
pub mod clamd;
pub mod config;
pub mod exposition;
pub mod policy;
pub mod synapse;

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use govmx_service::{Readiness, Shutdown, admin_router};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    cache::{Cache, Snapshot},
    config::Config,
    synapse::SynapseTarget,
};

/// Why one collection of a target failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we tried.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An HTTP request failed before a status arrived.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The target answered with an error status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer was not what the protocol says.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The policy bundle or trust anchors did not verify.
    #[error("policy bundle: {0}")]
    Policy(String),
    /// The collection took longer than the target's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A blocking collection task died.
    #[error("collection task failed: {0}")]
    Task(String),
}

/// Why the exporter could not start.
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
    /// A target could not be set up.
    #[error("{0}")]
    Target(#[from] CollectError),
}

/// `target` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: &'static str,
}

/// The exporter's own metrics.
#[derive(Clone, Debug)]
struct SelfMetrics {
    duration: Family<TargetLabel, Histogram>,
    failures: Family<TargetLabel, Counter>,
}

impl SelfMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            failures: Family::default(),
        };
        registry.register(
            "govmx_exporter_collect_duration_seconds",
            "Time one collection of a target took (failures included)",
            m.duration.clone(),
        );
        registry.register(
            "govmx_exporter_collect_failures",
            "Failed collections by target",
            m.failures.clone(),
        );
        m
    }
}

/// What a target is.
#[derive(Debug)]
enum Kind {
    Synapse(SynapseTarget),
    Clamd {
        address: String,
    },
    Ca {
        certs_dir: PathBuf,
        crl: Option<PathBuf>,
    },
    Policy {
        dir: PathBuf,
        trust: PathBuf,
    },
}

/// One configured target with its schedule.
#[derive(Debug)]
pub struct Target {
    name: &'static str,
    kind: Kind,
    timeout: Duration,
    interval: Duration,
    /// Whether the last collection failed (one warning per outage, not one per cycle).
    failing: AtomicBool,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CollectError> + Send + 'static,
) -> Result<T, CollectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CollectError::Task(e.to_string()))?
}

impl Target {
    /// The target label (`synapse`, `clamd`, `ca`, `policy`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One collection at `now`, without timeout.
    async fn collect(&self, now: SystemTime) -> Result<Snapshot, CollectError> {
        match &self.kind {
            Kind::Synapse(target) => {
                let facts = target.collect().await?;
                Ok(target.snapshot(&facts, now))
            }
            Kind::Clamd { address } => Ok(clamd::snapshot(&clamd::version(address).await?)),
            Kind::Ca { certs_dir, crl } => {
                let (dir, crl) = (certs_dir.clone(), crl.clone());
                let facts = blocking(move || ca::collect(&dir, crl.as_deref(), now)).await?;
                Ok(ca::snapshot(&facts))
            }
            Kind::Policy { dir, trust } => {
                let (dir, trust) = (dir.clone(), trust.clone());
                let facts = blocking(move || policy::collect(&dir, &trust)).await?;
                Ok(policy::snapshot(&facts))
            }
        }
    }
}

/// The collection side, shared by the loops and [`Exporter::collect_once`].
#[derive(Debug)]
struct Collector {
    targets: Vec<Target>,
    cache: Cache,
    metrics: SelfMetrics,
}

impl Collector {
    /// Collects `target` once (bounded by its timeout) and updates the cache; returns whether it
    /// succeeded.
    async fn run(&self, target: &Target) -> bool {
        let label = TargetLabel {
            target: target.name,
        };
        let started = Instant::now();
        let now = SystemTime::now();
        let result = match tokio::time::timeout(target.timeout, target.collect(now)).await {
            Ok(result) => result,
            Err(_) => Err(CollectError::Timeout(target.timeout)),
        };
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(snapshot) => {
                if target.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(target = target.name, "target collected again");
                }
                self.cache.store(target.name, snapshot, now);
                true
            }
            Err(error) => {
                if target.failing.swap(true, Ordering::AcqRel) {
                    tracing::debug!(target = target.name, %error, "collection failed again");
                } else {
                    tracing::warn!(target = target.name, %error, "collection failed; keeping the last values");
                }
                self.metrics.failures.get_or_create(&label).inc();
                self.cache.mark_down(target.name);
                false
            }
        }
    }
}

/// A bound, not yet serving exporter.
#[derive(Debug)]
pub struct Exporter {
    collector: Arc<Collector>,
    admin: TcpListener,
    readiness: Readiness,
    registry: Arc<Registry>,
    drain: Duration,
}

impl Exporter {
    /// Reads the Synapse admin token, sets up the targets and binds the admin listener.
    /// `config` must already be validated.
    pub async fn bind(config: Config) -> Result<Self, StartupError> {
        let mut targets = Vec::new();
        if let Some(s) = &config.synapse {
            let token = match (&s.access_token, &s.access_token_file) {
                (Some(token), _) => token.clone(),
                (None, Some(path)) => {
                    std::fs::read_to_string(path).map_err(|source| StartupError::Io {
                        what: "cannot read synapse.access_token_file",
                        path: path.clone(),
                        source,
                    })?
                }
                (None, None) => String::new(),
            };
            targets.push(Target {
                name: "synapse",
                kind: Kind::Synapse(SynapseTarget::new(s, token)?),
                timeout: s.timeout.0,
                interval: config.interval_of(s.interval),
                failing: AtomicBool::new(false),
            });
        }
        if let Some(c) = &config.clamd {
            targets.push(Target {
                name: "clamd",
                kind: Kind::Clamd {
                    address: c.address.clone(),
                },
                timeout: c.timeout.0,
                interval: config.interval_of(c.interval),
                failing: AtomicBool::new(false),
            });
        }
        if let Some(c) = &config.ca {
            targets.push(Target {
                name: "ca",
                kind: Kind::Ca {
                    certs_dir: c.certs_dir.clone(),
                    crl: c.crl.clone(),
                },
                timeout: c.timeout.0,
                interval: config.interval_of(c.interval),
                failing: AtomicBool::new(false),
            });
        }
        if let Some(p) = &config.policy {
            targets.push(Target {
                name: "policy",
                kind: Kind::Policy {
                    dir: p.bundle_dir.clone(),
                    trust: p.trust.clone(),
                },
                timeout: p.timeout.0,
                interval: config.interval_of(p.interval),
                failing: AtomicBool::new(false),
            });
        }
        let names: Vec<&'static str> = targets.iter().map(|t| t.name).collect();
        let cache = Cache::new(&names);
        let mut registry = Registry::default();
        let metrics = SelfMetrics::register(&mut registry);
        registry.register_collector(Box::new(cache.clone()));
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| StartupError::Io {
                what: "cannot bind admin_listen",
                path: PathBuf::from(config.admin_listen.to_string()),
                source,
            })?;
        Ok(Self {
            collector: Arc::new(Collector {
                targets,
                cache,
                metrics,
            }),
            admin,
            readiness: Readiness::not_ready("first collection not finished yet"),
            registry: Arc::new(registry),
            drain: config.drain_timeout.0,
        })
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The cache (latest snapshots per target).
    pub fn cache(&self) -> &Cache {
        &self.collector.cache
    }

    /// The configured targets.
    pub fn targets(&self) -> &[Target] {
        &self.collector.targets
    }

    /// Collects every target once, all in parallel; returns `(target, succeeded)`.
    pub async fn collect_once(&self) -> Vec<(&'static str, bool)> {
        let collector = &self.collector;
        let runs = collector
            .targets
            .iter()
            .map(|t| async move { (t.name, collector.run(t).await) });
        futures_util::future::join_all(runs).await
    }

    /// The OpenMetrics text a scrape would get now (encodes the cache).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Runs one collection loop per target and serves the admin listener until `shutdown`.
    /// Ready once every target was collected once (successfully or not).
    pub async fn serve(self, shutdown: Shutdown) -> io::Result<()> {
        let pending = Arc::new(AtomicUsize::new(self.collector.targets.len()));
        let mut loops = Vec::new();
        for index in 0..self.collector.targets.len() {
            let collector = self.collector.clone();
            let readiness = self.readiness.clone();
            let pending = pending.clone();
            let stop = shutdown.wait();
            loops.push(tokio::spawn(async move {
                let target = &collector.targets[index];
                let mut ticker = tokio::time::interval(target.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tokio::pin!(stop);
                let mut first = true;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        () = &mut stop => return,
                    }
                    collector.run(target).await;
                    if first {
                        first = false;
                        if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                            readiness.set_ready();
                        }
                    }
                }
            }));
        }
        let admin = admin_router(self.readiness.clone(), self.registry.clone());
        tracing::info!(admin = %self.admin.local_addr()?, targets = ?self.collector.targets.iter().map(|t| t.name).collect::<Vec<_>>(), "exporter serving");
        let result = govmx_service::serve(self.admin, admin, shutdown, self.drain).await;
        for handle in loops {
            handle.abort();
        }
        result
    }
}
