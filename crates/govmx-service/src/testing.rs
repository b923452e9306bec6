//! Test support (feature `testing`): [`OtlpReceiver`], an OTLP/HTTP trace receiver on
//! `127.0.0.1:0` that decodes `ExportTraceServiceRequest` bodies (protobuf) and keeps every span.
//!
//! It runs on its own thread and tokio runtime, so a test may block on a flush (or a service
//! may export from its batch thread) without starving it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::sync::{oneshot, watch};

/// One exported span, ids in lower-case hex.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    /// The span name.
    pub name: String,
    /// `service.name` of the resource.
    pub service_name: Option<String>,
    /// Span attributes with string, integer or boolean values, as text.
    pub attributes: Vec<(String, String)>,
    /// 1 internal, 2 server, 3 client, …
    pub kind: i32,
}

impl ReceivedSpan {
    /// The attribute `key` as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    bad_requests: Vec<String>,
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf). Dropping it stops it.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    updates: watch::Receiver<usize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct AppState {
    received: Arc<Mutex<Received>>,
    updates: Arc<watch::Sender<usize>>,
}

impl OtlpReceiver {
    /// Binds `127.0.0.1:0` and serves on a thread of its own.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let received = Arc::new(Mutex::new(Received::default()));
        let (updates_tx, updates) = watch::channel(0usize);
        let state = AppState {
            received: received.clone(),
            updates: Arc::new(updates_tx),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new()
                        .route("/v1/traces", post(export))
                        .with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("spawn the OTLP receiver thread");
        Self {
            addr,
            received,
            updates,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL for `tracing.otlp_endpoint` (`/v1/traces` is appended by the service).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().expect("receiver lock").spans.clone()
    }

    /// Export requests that did not decode (should stay empty).
    pub fn bad_requests(&self) -> Vec<String> {
        self.received
            .lock()
            .expect("receiver lock")
            .bad_requests
            .clone()
    }

    /// Waits (at most `deadline`) until `pred` holds for the spans received; returns them, or
    /// an error describing what arrived.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, String> {
        let mut updates = self.updates.clone();
        let wait = async {
            loop {
                let spans = self.spans();
                if pred(&spans) {
                    return Ok(spans);
                }
                if updates.changed().await.is_err() {
                    return Err("the receiver stopped".to_owned());
                }
            }
        };
        match tokio::time::timeout(deadline, wait).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "condition not met within {deadline:?}; spans received: {:#?}",
                self.spans()
            )),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn export(State(state): State<AppState>, body: Bytes) -> Response {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => {
            state
                .received
                .lock()
                .expect("receiver lock")
                .bad_requests
                .push(error.to_string());
            return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
        }
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans.resource.as_ref().and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()))
        });
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    service_name: service_name.clone(),
                    attributes: attributes(&span.attributes),
                    kind: span.kind,
                });
            }
        }
    }
    state
        .received
        .lock()
        .expect("receiver lock")
        .spans
        .extend(spans);
    state.updates.send_modify(|n| *n += 1);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref())?)))
        .collect()
}

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
