//! The way to Synapse's plain federation listener, per inbound connection.
//!
//! Each inbound (TLS) connection gets its own HTTP/1.1 connection to the upstream, opened on
//! its first forwarded request and driven by a [`Driver`] task on the inbound connection's own
//! worker thread. HTTP/1 answers one request at a time, so a connection pair needs no pool: no
//! checkout, no wake-up of another worker thread. A shared pool (hyper-util's legacy client)
//! cost about a fifth of the gate's user-space CPU per forwarded request (`docs/benchmarks.md`).
//! The driver is a task of its own rather than a branch of the server connection's `select!`:
//! a wake-up of the upstream socket then polls only the upstream side, and one of the inbound
//! socket only the server side (15 % fewer instructions per forwarded request).
//!
//! An idle upstream connection that Synapse closed is replaced: a request that was not sent on
//! it is sent once more on a new connection (as the pooled client did); a request that was sent
//! is never repeated.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Time allowed for the TCP connect to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type UpstreamConnection = Connection<TokioIo<TcpStream>, Body>;

/// Why a request could not be sent or answered.
pub type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

/// One inbound connection's way to the upstream; see the module docs.
#[derive(Debug)]
pub struct Upstream {
    authority: http::uri::Authority,
    host: HeaderValue,
    idle: Mutex<Option<SendRequest<Body>>>,
    connections: mpsc::UnboundedSender<UpstreamConnection>,
}

/// Drives the connections an [`Upstream`] opens; poll it in the inbound connection's task.
#[derive(Debug)]
pub struct Driver {
    connections: mpsc::UnboundedReceiver<UpstreamConnection>,
}

impl Upstream {
    /// An upstream at `authority` (`host:port`) and the driver for its connections.
    pub fn new(authority: http::uri::Authority) -> (Upstream, Driver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        (
            Upstream {
                authority,
                host,
                idle: Mutex::new(None),
                connections: tx,
            },
            Driver { connections: rx },
        )
    }

    /// Sends `req` (origin-form URI) and returns the response head; the body streams through
    /// the connection the driver polls. Adds `Host` when the request has none.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .filter(|sender| !sender.is_closed());
        if let Some(mut sender) = idle {
            // An idle connection the upstream closed takes nothing: then once more on a new one.
            req = match sender.ready().await {
                Err(_) => req,
                Ok(()) => match sender.try_send_request(req).await {
                    Ok(response) => {
                        self.keep(sender);
                        return Ok(response);
                    }
                    Err(mut error) => error.take_message().ok_or_else(|| error.into_error())?,
                },
            };
        }
        let mut sender = self.connect().await?;
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        self.keep(sender);
        Ok(response)
    }

    fn keep(&self, sender: SendRequest<Body>) {
        *self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let tcp =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.authority.as_str()))
                .await
                .map_err(|_| format!("connecting to {} timed out", self.authority))??;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        // The driver lives as long as the inbound connection that owns `self`.
        self.connections
            .send(connection)
            .map_err(|_| "the inbound connection is closing")?;
        Ok(sender)
    }
}

impl Driver {
    /// Polls every connection handed over by [`Upstream`] until it ends. Never completes:
    /// spawn it on the inbound connection's runtime and abort it when that connection ends.
    pub async fn run(mut self) {
        let mut active: Vec<Pin<Box<UpstreamConnection>>> = Vec::new();
        std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(connection)) = self.connections.poll_recv(cx) {
                active.push(Box::pin(connection));
            }
            active.retain_mut(|connection| match connection.as_mut().poll(cx) {
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "upstream connection ended with an error");
                    false
                }
                Poll::Ready(Ok(())) => false,
                Poll::Pending => true,
            });
            Poll::<()>::Pending
        })
        .await;
    }
}
