//! Tracing setup shared by all services: an `EnvFilter` read from a service-specific environment
//! variable (falling back to a default directive), a plain or JSON line format on stderr, and —
//! only when a service config has a [`TracingConfig`] — OpenTelemetry traces exported over
//! OTLP/HTTP (protobuf) with W3C `traceparent` propagation.
//!
//! Traces, end to end:
//! - [`Telemetry::from_config`] builds the tracer provider (batch exporter on its own thread,
//!   parent-based ratio sampler, `service.name`); absent config = [`Telemetry::disabled`], no
//!   exporter, no request spans, log lines exactly as before.
//! - [`init_telemetry`] installs the subscriber with the OpenTelemetry layer next to the log layer
//!   ([`subscriber`] builds the same stack for tests with any writer).
//! - Forwarding services open one [`request_span`] per request (or wrap an axum router with
//!   [`trace_requests`]): it continues the trace of an incoming `traceparent` and records its
//!   `trace_id` as a span field, so every log line inside the request carries it. Before sending
//!   a request upstream they call [`inject_trace_context`].
//! - [`Telemetry::shutdown`] (also on drop) flushes the spans still queued.

use std::io::IsTerminal as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter, fmt, prelude::*};

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line (for log shippers).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `plain` or `json`"
            )),
        }
    }
}

/// The optional `tracing:` key of every service config. Absent: no traces are exported and no
/// request spans are made.
///
/// ```yaml
/// tracing:
///   otlp_endpoint: http://otel-collector:4318   # OTLP/HTTP (protobuf); /v1/traces is appended
///   service_name: govmx-media-scanner-hs1       # optional; default: the binary's name
///   sample_ratio: 0.25                          # optional, 0.0–1.0, default 1.0
/// ```
///
/// Sampling is parent-based: a request whose `traceparent` says "sampled" is always traced, one
/// that says "not sampled" never is, and a request without one starts a new trace that is kept
/// with probability `sample_ratio`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// An OTLP/HTTP receiver, `http://` or `https://`. A URL without a path (or with `/`) gets
    /// the standard `/v1/traces`; a URL with a path is used as is.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute; default: the service's own name.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces (without an incoming `traceparent`) that are recorded, 0.0–1.0.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl TracingConfig {
    /// A config exporting every trace to `otlp_endpoint`.
    pub fn new(otlp_endpoint: impl Into<String>) -> Self {
        Self {
            otlp_endpoint: otlp_endpoint.into(),
            service_name: None,
            sample_ratio: 1.0,
        }
    }

    /// The URL spans are posted to: `otlp_endpoint`, plus `/v1/traces` when it has no path.
    pub fn traces_url(&self) -> Result<String, String> {
        let text = self.otlp_endpoint.trim();
        let expected = "must be an http:// or https:// URL such as http://otel-collector:4318";
        let uri: Uri = text
            .parse()
            .map_err(|err| format!("{text:?} {expected} ({err})"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("{text:?} {expected}"));
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("{text:?} {expected}"));
        };
        if authority.host().is_empty() {
            return Err(format!("{text:?} has no host; it {expected}"));
        }
        if authority.as_str().contains('@') {
            return Err(format!("{text:?} must not carry credentials"));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?} must not have a query"));
        }
        Ok(match uri.path() {
            "" | "/" => format!(
                "{}://{authority}/v1/traces",
                uri.scheme_str().unwrap_or("http")
            ),
            _ => text.to_owned(),
        })
    }

    /// Every problem, each naming its key under `key` (e.g. `tracing`).
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = self.traces_url() {
            problems.push(format!("{key}.otlp_endpoint: {why}"));
        }
        if self
            .service_name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            problems.push(format!(
                "{key}.service_name must not be empty (leave it out for the default)"
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(format!(
                "{key}.sample_ratio must be between 0.0 and 1.0, got {}",
                self.sample_ratio
            ));
        }
        problems
    }
}

/// Checks an optional `tracing:` section: what a service's [`crate::Validate`] adds.
pub fn tracing_problems(config: Option<&TracingConfig>) -> Vec<String> {
    config.map_or_else(Vec::new, |c| c.problems("tracing"))
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The filter in the environment variable did not parse.
    #[error("invalid log filter in {var}: {source}")]
    Filter {
        /// The environment variable.
        var: String,
        /// The parse error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("tracing already initialised")]
    AlreadyInitialised,
    /// The OTLP exporter could not be built.
    #[error("tracing.otlp_endpoint: cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// How long one OTLP export may take (also bounds the flush at shutdown).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracer provider of a service, or nothing when traces are off. Shut it down (or drop it)
/// after the service stopped, outside async code: that flushes the queued spans.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// No traces: no exporter, no OpenTelemetry layer.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Builds the OTLP/HTTP exporter for `config` (disabled when `None`). `default_service_name`
    /// is the `service.name` unless the config names one. Needs no async runtime.
    pub fn from_config(
        config: Option<&TracingConfig>,
        default_service_name: &str,
    ) -> Result<Self, TelemetryError> {
        let Some(config) = config else {
            return Ok(Self::disabled());
        };
        let url = config.traces_url().map_err(TelemetryError::Exporter)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
        let service_name = config
            .service_name
            .clone()
            .unwrap_or_else(|| default_service_name.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service_name)
                    .build(),
            )
            .build();
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// A telemetry around an existing provider (tests with their own exporter).
    pub fn from_provider(provider: SdkTracerProvider) -> Self {
        Self {
            provider: Some(provider),
        }
    }

    /// Whether traces are exported.
    pub fn is_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans queued so far (blocking; call it outside async code or from
    /// `spawn_blocking`).
    pub fn force_flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "cannot flush traces");
        }
    }

    /// Flushes and stops the exporter (blocking, bounded by the export timeout).
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "cannot flush traces at shutdown");
        }
    }

    /// The OpenTelemetry layer for this provider (only spans and events of govmx crates).
    fn layer(&self) -> Option<Box<dyn Layer<Registry> + Send + Sync>> {
        let provider = self.provider.as_ref()?;
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("govmx"))
            .with_threads(false)
            .with_filter(filter::filter_fn(|meta| {
                meta.target().starts_with("govmx") && *meta.level() <= tracing::Level::INFO
            }));
        Some(layer.boxed())
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}

fn env_filter(env_var: &str, default_filter: &str) -> Result<EnvFilter, TelemetryError> {
    match std::env::var(env_var) {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(spec).map_err(|source| TelemetryError::Filter {
                var: env_var.to_owned(),
                source,
            })
        }
        _ => EnvFilter::try_new(default_filter).map_err(|source| TelemetryError::Filter {
            var: "default filter".to_owned(),
            source,
        }),
    }
}

/// The subscriber every service uses: log lines in `format` through `writer` (filtered by
/// `filter`), plus `telemetry`'s OpenTelemetry layer when traces are on. Log lines inside a
/// request span carry its `trace_id` field (plain: in the span prefix; JSON: under `span`).
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    telemetry: &Telemetry,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Plain => fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![log];
    layers.extend(telemetry.layer());
    tracing_subscriber::registry().with(layers)
}

/// Installs the global subscriber without traces. The filter comes from `env_var` (e.g.
/// `GOVMX_LOG`) when set, else `default_filter` (e.g. `"warn,govmx=info"`).
pub fn init_tracing(
    env_var: &str,
    default_filter: &str,
    format: LogFormat,
) -> Result<(), TelemetryError> {
    init_telemetry(env_var, default_filter, format, &Telemetry::disabled())
}

/// Installs the global subscriber: logs on stderr as [`init_tracing`], plus traces when
/// `telemetry` is enabled.
pub fn init_telemetry(
    env_var: &str,
    default_filter: &str,
    format: LogFormat,
    telemetry: &Telemetry,
) -> Result<(), TelemetryError> {
    let filter = env_filter(env_var, default_filter)?;
    // Colour codes only for a terminal, never into log files.
    let ansi = format == LogFormat::Plain && std::io::stderr().is_terminal();
    subscriber(filter, format, telemetry, std::io::stderr, ansi)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The server span of one request, or a disabled span when `enabled` is false (traces off: no
/// cost beyond a branch). It continues the trace of a valid incoming `traceparent` and records
/// the trace id in its `trace_id` field. Enter it (or `.instrument` the handler) for the whole
/// request; record the answer with [`record_status`].
pub fn request_span(enabled: bool, method: &Method, path: &str, headers: &HeaderMap) -> Span {
    if !enabled {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "govmx::request",
        "request",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only without the OpenTelemetry layer (then there is no trace to continue).
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
    span
}

/// Records the response status on a [`request_span`]; 5xx marks the span as an error.
pub fn record_status(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into the headers of a
/// request about to be forwarded, replacing what the client sent, so the upstream continues our
/// trace. Without a traced current span the headers stay as they are.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// axum middleware: runs every request inside its [`request_span`]. Add it with
/// `router.layer(axum::middleware::from_fn(trace_requests))` only when traces are on.
pub async fn trace_requests(req: Request, next: Next) -> Response {
    let span = request_span(true, req.method(), req.uri().path(), req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    record_status(&span, response.status());
    response
}

/// A per-second budget for log lines about events that an attacker can produce at line rate
/// (denials): the first `per_second` in each second are logged, the rest only counted, and the
/// next logged line reports how many were left out. Lock-free; the audit log and the metrics
/// still see every event.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u64,
    /// `second << 32 | count` of the current window.
    window: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines (at least 1).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: u64::from(per_second.max(1)),
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged at `now_secs` (any monotonic second counter). `Some(n)`:
    /// log it, noting `n` earlier lines that were left out; `None`: only count it.
    pub fn admit(&self, now_secs: u64) -> Option<u64> {
        let second = now_secs & 0xffff_ffff;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window_second, count) = (current >> 32, current & 0xffff_ffff);
            let next = if window_second == second {
                if count >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!("plain".parse(), Ok(LogFormat::Plain));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn budget_admits_per_second_and_reports_what_it_left_out() {
        let budget = LogBudget::new(2);
        assert_eq!(budget.admit(10), Some(0));
        assert_eq!(budget.admit(10), Some(0));
        assert_eq!(budget.admit(10), None);
        assert_eq!(budget.admit(10), None);
        assert_eq!(
            budget.admit(11),
            Some(2),
            "the next second reports the two left out"
        );
        assert_eq!(budget.admit(11), Some(0));
        assert_eq!(budget.admit(11), None);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default)]
        tracing: Option<TracingConfig>,
    }

    impl crate::Validate for Demo {
        fn validate(&self) -> Vec<String> {
            tracing_problems(self.tracing.as_ref())
        }
    }

    #[track_caller]
    fn check_config(yaml: &str, expect: &str) {
        let got = match crate::config::from_yaml_str_validated::<Demo>(yaml, "demo.yaml") {
            Ok(Demo { tracing: None }) => "off".to_owned(),
            Ok(Demo { tracing: Some(t) }) => format!(
                "{} {:?} {}",
                t.traces_url().unwrap(),
                t.service_name,
                t.sample_ratio
            ),
            Err(err) => err.to_string(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn tracing_config_is_optional_strict_and_validated() {
        check_config("{}", "off");
        check_config(
            "tracing: {otlp_endpoint: \"http://otel:4318\"}",
            "http://otel:4318/v1/traces None 1",
        );
        check_config(
            "tracing: {otlp_endpoint: \"https://otel.example/\", service_name: gate-a, sample_ratio: 0.5}",
            "https://otel.example/v1/traces Some(\"gate-a\") 0.5",
        );
        check_config(
            "tracing: {otlp_endpoint: \"http://otel:4318/custom/traces\"}",
            "http://otel:4318/custom/traces None 1",
        );
        check_config(
            "tracing:\n  otlp_endpoint: http://otel:4318\n  sample: 1\n",
            "demo.yaml:3:3: tracing: unknown field `sample`, expected one of `otlp_endpoint`, `service_name`, `sample_ratio`",
        );
        check_config(
            "tracing: {service_name: x}",
            "demo.yaml:1:10: tracing: missing field `otlp_endpoint`",
        );
        check_config(
            "tracing: {otlp_endpoint: \"otel:4318\"}",
            "demo.yaml: invalid config: tracing.otlp_endpoint: \"otel:4318\" must be an http:// or https:// URL such as http://otel-collector:4318",
        );
        check_config(
            "tracing: {otlp_endpoint: \"grpc://otel:4317\"}",
            "demo.yaml: invalid config: tracing.otlp_endpoint: \"grpc://otel:4317\" must be an http:// or https:// URL such as http://otel-collector:4318",
        );
        check_config(
            "tracing: {otlp_endpoint: \"http://u:p@otel:4318\"}",
            "demo.yaml: invalid config: tracing.otlp_endpoint: \"http://u:p@otel:4318\" must not carry credentials",
        );
        check_config(
            "tracing: {otlp_endpoint: \"http://otel:4318\", service_name: \" \", sample_ratio: 1.5}",
            "demo.yaml: invalid config: tracing.service_name must not be empty (leave it out for the default); tracing.sample_ratio must be between 0.0 and 1.0, got 1.5",
        );
        let bad = crate::config::from_yaml_str_validated::<Demo>(
            "tracing: {otlp_endpoint: \"not a url\"}",
            "demo.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("tracing.otlp_endpoint: \"not a url\""),
            "{bad}"
        );
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let telemetry = Telemetry::from_config(None, "govmx-test").unwrap();
        assert!(!telemetry.is_enabled());
        assert!(telemetry.layer().is_none());
        // Traces off: no request span, and a client's traceparent passes through untouched.
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
        let span = request_span(false, &Method::GET, "/x", &headers);
        assert!(span.is_none());
        let _entered = span.enter();
        inject_trace_context(&mut headers);
        assert_eq!(headers["traceparent"], TRACEPARENT);

        let on =
            Telemetry::from_config(Some(&TracingConfig::new("http://127.0.0.1:9")), "t").unwrap();
        assert!(on.is_enabled());
    }

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Runs one traced request with `format` logs; returns the log text and the headers a
    /// forwarded request would carry.
    fn traced_request(format: LogFormat, incoming: Option<&'static str>) -> (String, HeaderMap) {
        let telemetry = Telemetry::from_provider(SdkTracerProvider::builder().build());
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(
            EnvFilter::new("info"),
            format,
            &telemetry,
            move || writer.clone(),
            false,
        );
        let mut headers = HeaderMap::new();
        if let Some(traceparent) = incoming {
            headers.insert("traceparent", HeaderValue::from_static(traceparent));
        }
        tracing::subscriber::with_default(subscriber, || {
            let span = request_span(true, &Method::PUT, "/_matrix/x", &headers);
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside the request");
            inject_trace_context(&mut headers);
            record_status(&span, StatusCode::OK);
        });
        (buffer.text(), headers)
    }

    #[test]
    fn log_lines_in_a_request_carry_the_incoming_trace_id_and_it_is_forwarded() {
        let (plain, headers) = traced_request(LogFormat::Plain, Some(TRACEPARENT));
        let line = plain
            .lines()
            .find(|l| l.contains("inside the request"))
            .unwrap_or_else(|| panic!("{plain}"));
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
        let forwarded = headers["traceparent"].to_str().unwrap();
        let parts: Vec<&str> = forwarded.split('-').collect();
        assert_eq!(parts.len(), 4, "{forwarded}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"));
        assert_ne!(parts[2], "00f067aa0ba902b7", "our span becomes the parent");

        let (json, _) = traced_request(LogFormat::Json, Some(TRACEPARENT));
        let line = json
            .lines()
            .find(|l| l.contains("inside the request"))
            .unwrap_or_else(|| panic!("{json}"));
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["span"]["trace_id"], TRACE_ID, "{line}");
        assert_eq!(value["answer"], 42, "{line}");
    }

    #[test]
    fn a_request_without_traceparent_starts_a_new_trace() {
        let (plain, headers) = traced_request(LogFormat::Plain, None);
        let forwarded = headers["traceparent"].to_str().unwrap().to_owned();
        let trace_id = forwarded.split('-').nth(1).unwrap();
        assert_eq!(trace_id.len(), 32);
        assert_ne!(trace_id, "0".repeat(32));
        assert!(plain.contains(&format!("trace_id={trace_id}")), "{plain}");
        // A malformed traceparent is ignored the same way.
        let (_, headers) = traced_request(LogFormat::Plain, Some("00-zz-yy-01"));
        assert_ne!(headers["traceparent"], "00-zz-yy-01");
    }
}
