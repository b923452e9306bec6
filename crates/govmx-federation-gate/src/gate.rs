//! Wiring: [`start`] binds the listeners of a validated [`Config`] and runs the gate until
//! [`RunningGate::shutdown`] (or drop, which stops every task it started).
//!
//! Tasks: the inbound TLS accept loop (one task per connection, on the [`crate::workers`] threads),
//! the CONNECT proxy accept loop,
//! the admin listener (`/healthz`, `/readyz`, `/metrics` from `govmx-service`, plus
//! `/explain`), and the reload loop (poll interval, SIGHUP via [`RunningGate::reload_now`], and
//! a wake-up when the list turns stale so `/readyz` and the gauges follow without traffic).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use govmx_service::{LogBudget, Readiness, Shutdown, ShutdownTrigger};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditError, AuditLog};
use crate::config::{Config, upstream_authority};
use crate::keys::{KeyFetchSettings, KeyFetcher};
use crate::list::{ListStatus, ListStore};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::workers::{self, Workers};
use crate::{inbound, proxy, tls};

/// Denials logged per second at most; the audit log and metrics count every one.
const DENIAL_LOG_LINES_PER_SECOND: u32 = 20;

/// How long open connections get to finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(10);

/// State shared by every request.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The federation list.
    pub store: ListStore,
    /// Metric handles.
    pub metrics: Metrics,
    /// The audit log.
    pub audit: AuditLog,
    /// `/readyz` state.
    pub readiness: Readiness,
    /// Signing keys of listed servers without pinned keys (strict mode with `key_fetch`).
    pub keys: Option<KeyFetcher>,
    /// Wakes the reload loop (SIGHUP, refetch on a miss).
    pub(crate) reload: Arc<Notify>,
    /// When the last refetch on a miss was asked for (ms since `started`).
    last_miss_refetch: AtomicU64,
    /// Mirrors `readiness` being ready because of a usable list (see [`Shared::list_status`]).
    serving: AtomicBool,
    started: Instant,
    /// Denial log lines per second (see [`LogBudget`]).
    pub(crate) denial_log: LogBudget,
    pub(crate) upstream_authority: http::uri::Authority,
}

impl Shared {
    /// The list status at `now`; keeps `/readyz` in step.
    pub fn list_status(&self, now: SystemTime) -> ListStatus {
        let status = self.store.status(now);
        let usable = status.unavailable_reason().is_none();
        // Every request passes here: while the list stays usable, one load of a flag no one
        // writes (no lock word shared by the workers).
        if usable && self.serving.load(Ordering::Acquire) {
            return status;
        }
        // Compare under the read lock first: the write lock is only taken on a change.
        let wanted = status.unavailable_reason().map(str::to_owned);
        if self.readiness.status().err() != wanted {
            match wanted {
                None => {
                    tracing::info!("federation list usable, serving federation");
                    self.readiness.set_ready();
                }
                Some(reason) => {
                    tracing::error!(%reason, "federation list unusable, failing closed");
                    self.readiness.set_not_ready(reason);
                }
            }
        }
        self.serving.store(usable, Ordering::Release);
        status
    }

    /// Whole seconds since the gate started (for per-second budgets).
    pub(crate) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// An origin was refused as unlisted: check the source again, at most once per
    /// `policy.refetch_on_miss`, so a server just added federates before the next poll.
    pub(crate) fn refetch_on_miss(&self) {
        let interval = self.config.policy.refetch_on_miss;
        if interval.is_zero() {
            return;
        }
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_miss_refetch.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < interval.as_millis() as u64 {
            return;
        }
        if self
            .last_miss_refetch
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!("unlisted origin refused; checking the federation list source again");
            self.reload.notify_one();
        }
    }
}

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream URL is invalid (should have been caught by validation).
    #[error("inbound.upstream: {0}")]
    Upstream(String),
    /// TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The bundle source (URL and CA file).
    #[error("policy: {0}")]
    Source(String),
    /// The key fetcher's CA bundle.
    #[error("inbound.key_fetch: {0}")]
    KeyFetch(String),
    /// The inbound worker threads could not be started.
    #[error("cannot start the inbound worker threads: {0}")]
    Workers(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A running gate. Dropping it stops all its tasks.
#[derive(Debug)]
pub struct RunningGate {
    inbound_addr: SocketAddr,
    outbound_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    reload: Arc<Notify>,
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGate {
    /// The bound inbound (TLS) address.
    pub fn inbound_addr(&self) -> SocketAddr {
        self.inbound_addr
    }

    /// The bound CONNECT proxy address, if configured.
    pub fn outbound_addr(&self) -> Option<SocketAddr> {
        self.outbound_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared state (metrics, list store).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Checks the policy bundle now (SIGHUP) and reopens the audit log.
    pub fn reload_now(&self) {
        if let Err(error) = self.shared.audit.reopen() {
            tracing::error!(%error, "cannot reopen the audit log");
        }
        self.reload.notify_one();
    }

    /// Stops accepting, lets open connections finish (bounded), and returns.
    pub async fn shutdown(mut self) {
        self.trigger.trigger();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), task).await;
        }
    }
}

impl Drop for RunningGate {
    fn drop(&mut self) {
        self.trigger.trigger();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads the list, binds every listener and starts serving. Call with a validated config.
pub async fn start(config: Config) -> Result<RunningGate, StartError> {
    let upstream_authority = upstream_authority(&config.inbound.upstream)
        .map_err(StartError::Upstream)?
        .parse::<http::uri::Authority>()
        .map_err(|error| StartError::Upstream(error.to_string()))?;
    let tls_config = tls::server_config(&config.inbound.tls_cert, &config.inbound.tls_key)?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let audit = AuditLog::open(&config.audit_log, &metrics)?;
    let store = ListStore::new(&config.policy, &config.server_name, metrics.clone())
        .map_err(StartError::Source)?;
    store.load_initial(SystemTime::now()).await;
    let keys = match &config.inbound.key_fetch {
        Some(k) => Some(
            KeyFetcher::from_ca_file(
                &k.ca_file,
                KeyFetchSettings {
                    timeout: k.timeout,
                    min_refetch: k.min_refetch,
                    max_cache: k.max_cache,
                },
                metrics.clone(),
            )
            .map_err(StartError::KeyFetch)?,
        ),
        None => None,
    };

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let inbound_listener = bind("inbound", config.inbound.listen).await?;
    let admin_listener = bind("admin", config.admin.listen).await?;
    let outbound_listener = match &config.outbound {
        Some(outbound) => Some(bind("outbound", outbound.listen).await?),
        None => None,
    };
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let inbound_addr = local(&inbound_listener, "inbound", config.inbound.listen)?;
    let admin_addr = local(&admin_listener, "admin", config.admin.listen)?;
    let outbound_addr = match (&outbound_listener, &config.outbound) {
        (Some(l), Some(o)) => Some(local(l, "outbound", o.listen)?),
        _ => None,
    };

    let readiness = Readiness::not_ready("federation list not checked yet");
    let reload = Arc::new(Notify::new());
    let shared = Arc::new(Shared {
        config,
        store,
        metrics,
        audit,
        readiness: readiness.clone(),
        keys,
        reload: reload.clone(),
        last_miss_refetch: AtomicU64::new(0),
        serving: AtomicBool::new(false),
        started: Instant::now(),
        denial_log: LogBudget::new(DENIAL_LOG_LINES_PER_SECOND),
        upstream_authority,
    });
    shared.list_status(SystemTime::now());
    let (trigger, shutdown) = Shutdown::manual();

    let count = shared
        .config
        .inbound
        .workers
        .unwrap_or_else(workers::default_count);
    let workers = Workers::start(count).map_err(StartError::Workers)?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(inbound_loop(
        inbound_listener,
        workers,
        TlsAcceptor::from(tls_config),
        shared.clone(),
        shutdown.clone(),
    )));
    if let Some(listener) = outbound_listener {
        tasks.push(tokio::spawn(proxy_loop(
            listener,
            shared.clone(),
            shutdown.clone(),
        )));
    }
    let admin = govmx_service::admin_router(readiness, Arc::new(registry))
        .merge(explain_router(shared.clone()));
    let admin_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(error) = govmx_service::serve(admin_listener, admin, admin_shutdown, DRAIN).await
        {
            tracing::error!(%error, "admin listener failed");
        }
    }));
    tasks.push(tokio::spawn(reload_loop(
        shared.clone(),
        reload.clone(),
        shutdown,
    )));
    tracing::info!(%inbound_addr, ?outbound_addr, %admin_addr, server_name = %shared.config.server_name, "federation gate listening");
    Ok(RunningGate {
        inbound_addr,
        outbound_addr,
        admin_addr,
        shared,
        reload,
        trigger,
        tasks,
    })
}

async fn inbound_loop(
    listener: TcpListener,
    workers: Workers,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                // The connection moves to a worker's own reactor (see `workers`).
                Ok((tcp, peer)) => match tcp.into_std() {
                    Ok(tcp) => {
                        connections.spawn_on(
                            serve_tls_connection(tcp, peer, acceptor.clone(), shared.clone(), shutdown.clone()),
                            workers.next(),
                        );
                    }
                    Err(error) => tracing::warn!(%peer, %error, "inbound connection could not be handed to a worker"),
                },
                Err(error) => {
                    tracing::warn!(%error, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.wait() => break,
        }
    }
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Runs a request's handler; when it answered without waiting for anything (a denial, an
/// error: no upstream I/O), yields to the worker's other connections before the answer is
/// written, so that one connection cannot hold its worker while the others wait.
///
/// Without this, a client that sends its next request at once (woken by the answer on the
/// same CPU) can have it read and answered in the same turn of the connection's task, up to
/// tokio's budget. On the deny path under `wrk`, runs fell at random into a mode with p50
/// ~50 µs but p90 ~3 ms and p99 5-7 ms; with the yield, 0 of 11 runs went over 5 ms against
/// 8 of 15 before (docs/benchmarks.md). A flood of refused requests on one connection is also
/// what the border sees under attack. Forwarded requests wait for the upstream, so the
/// worker's other connections run meanwhile anyway and get no extra turn.
async fn answered_in_turn<F: std::future::Future>(handler: F) -> F::Output {
    let mut handler = std::pin::pin!(handler);
    let mut polls = 0_u32;
    let output = std::future::poll_fn(|cx| {
        polls += 1;
        handler.as_mut().poll(cx)
    })
    .await;
    if polls == 1 {
        tokio::task::yield_now().await;
    }
    output
}

async fn serve_tls_connection(
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    // Registers the (non-blocking) socket with this worker's reactor.
    let tcp = match tokio::net::TcpStream::from_std(tcp) {
        Ok(tcp) => tcp,
        Err(error) => {
            tracing::warn!(%peer, %error, "inbound connection could not be registered");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let header_timeout = shared.config.inbound.header_read_timeout;
    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
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
    // This connection's own upstream connection, used by its requests' tasks in turn.
    let upstream = Upstream::new(shared.upstream_authority.clone());
    let connection_peer = Arc::new(inbound::Peer::new(peer, upstream));
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let from = connection_peer.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                answered_in_turn(inbound::handle(shared, req, &from)).await,
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "inbound connection ended with an error");
            }
        }
        () = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "inbound connection ended with an error");
            }
        }
    }
}

async fn proxy_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(proxy::serve_connection(shared.clone(), tcp, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.wait() => break,
        }
    }
    // Dropping the set closes the open tunnels: they carry no request state worth draining.
}

async fn reload_loop(shared: Arc<Shared>, reload: Arc<Notify>, shutdown: Shutdown) {
    let interval = shared.config.policy.reload_interval;
    let mut next_poll = SystemTime::now() + interval;
    loop {
        let now = SystemTime::now();
        let mut wait = next_poll.duration_since(now).unwrap_or_default();
        if let Some(stale_at) = shared.store.stale_at()
            && let Ok(until_stale) = stale_at.duration_since(now)
        {
            wait = wait.min(until_stale + Duration::from_millis(5));
        }
        let forced = tokio::select! {
            () = tokio::time::sleep(wait) => false,
            () = reload.notified() => true,
            () = shutdown.wait() => return,
        };
        let now = SystemTime::now();
        if forced || now >= next_poll {
            shared.store.poll(now).await;
            next_poll = now + interval;
        }
        shared.list_status(now);
    }
}

#[derive(Debug, Deserialize)]
struct ExplainQuery {
    origin: String,
    destination: Option<String>,
}

fn explain_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/explain", get(explain))
        .with_state(shared)
}

/// `GET /explain?origin=…&destination=…` (destination defaults to our server name): the
/// decision of the list in use, with its version and freshness.
async fn explain(State(shared): State<Arc<Shared>>, Query(query): Query<ExplainQuery>) -> Response {
    let now = SystemTime::now();
    let status = shared.list_status(now);
    let Some(current) = status.any() else {
        return inbound::unavailable(status.unavailable_reason().unwrap_or_default());
    };
    let destination = query
        .destination
        .as_deref()
        .unwrap_or(&shared.config.server_name);
    let decision = current.list.may_federate(&query.origin, destination, now);
    axum::Json(serde_json::json!({
        "origin": query.origin,
        "destination": destination,
        "decision": decision,
        "list_version": current.list.version(),
        "list_fresh": status.fresh().is_some(),
        "enforced": !shared.config.shadow,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::answered_in_turn;

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_ready_at_once_lets_the_other_connections_run_first() {
        // Two "connections" on one worker: `flood` is answered at once every time, `other`
        // has one request ready each turn.
        let order = Arc::new(Mutex::new(Vec::new()));
        let flood = tokio::spawn({
            let order = order.clone();
            async move {
                for _ in 0..3 {
                    let answer = answered_in_turn(async { "answer" }).await;
                    assert_eq!(answer, "answer");
                    order.lock().expect("lock").push("flood");
                }
            }
        });
        let other = tokio::spawn({
            let order = order.clone();
            async move {
                for _ in 0..3 {
                    order.lock().expect("lock").push("other");
                    tokio::task::yield_now().await;
                }
            }
        });
        flood.await.expect("flood task");
        other.await.expect("other task");
        let order = order.lock().expect("lock").clone();
        assert_eq!(order.len(), 6);
        // Without the yield the flood's three answers come in one turn, before `other` runs.
        let first = order.iter().position(|&task| task == "flood");
        let last = order.iter().rposition(|&task| task == "flood");
        assert!(
            first
                .zip(last)
                .is_some_and(|(first, last)| order[first..last].contains(&"other")),
            "the other connection waited for all of the flood's answers: {order:?}"
        );
    }
}
