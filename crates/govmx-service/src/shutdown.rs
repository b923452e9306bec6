//! Graceful shutdown: [`Shutdown`] resolves on SIGTERM or Ctrl-C (or a test's
//! [`ShutdownTrigger`]); [`serve`] runs an axum router until then and gives in-flight requests a
//! bounded drain time.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::{net::TcpListener, sync::watch};

/// A clonable shutdown signal; every clone resolves [`Shutdown::wait`] once shutdown began.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Starts a shutdown by hand (tests, or a service that decides to stop itself).
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

// === impl Shutdown ===

impl Shutdown {
    /// A signal driven by a [`ShutdownTrigger`].
    pub fn manual() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A signal that fires on SIGTERM or Ctrl-C (SIGINT). Must be called inside a tokio runtime.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = Self::manual();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.trigger();
        });
        shutdown
    }

    /// Resolves once shutdown began.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // An error means every trigger is gone: treat it as shutdown.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Whether shutdown already began.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

// === impl ShutdownTrigger ===

impl ShutdownTrigger {
    /// Begins shutdown.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Serves `router` on `listener` (with the peer address available as
/// `ConnectInfo<SocketAddr>`) until `shutdown`, then waits at most `drain` for in-flight
/// requests before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    drain: Duration,
) -> io::Result<()> {
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.wait());
    let drain_deadline = async {
        shutdown.wait().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        res = server => res,
        () = drain_deadline => {
            tracing::warn!(drain_secs = drain.as_secs_f64(), "drain timeout elapsed, dropping open connections");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn drain_timeout_ends_a_hanging_request() {
        let router = Router::new().route(
            "/hang",
            get(|| async {
                std::future::pending::<()>().await;
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = Shutdown::manual();
        let server = tokio::spawn(serve(
            listener,
            router,
            shutdown.clone(),
            Duration::from_millis(200),
        ));

        // A request that never completes keeps the graceful shutdown from finishing.
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();

        assert!(!shutdown.is_triggered());
        trigger.trigger();
        let res = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(matches!(res, Ok(Ok(Ok(())))), "{res:?}");
    }
}
