//! Shared plumbing for every govmx service (federation gate, media scanner, agency CA, exporter).
//!
//! Main items:
//! - [`admin::admin_router`] with [`admin::Readiness`]: the admin listener (`/healthz`, `/readyz`,
//!   `/metrics` in OpenMetrics text from a `prometheus-client` registry);
//! - [`error::MatrixError`]: `{"errcode","error"}` responses; 5xx bodies stay generic and the
//!   internal cause is logged exactly once, when the response is built;
//! - [`telemetry::init_tracing`] with [`telemetry::LogFormat`] (`plain` | `json`, `EnvFilter`);
//!   traces: the optional `tracing:` config section [`telemetry::TracingConfig`] (OTLP/HTTP
//!   exporter, off when absent), [`telemetry::Telemetry`], [`telemetry::request_span`] /
//!   [`telemetry::trace_requests`] and [`telemetry::inject_trace_context`] for W3C `traceparent`;
//! - [`shutdown::Shutdown`] (SIGTERM + Ctrl-C) and [`shutdown::serve`] with a drain timeout;
//! - [`proxy::strip_hop_by_hop`]: what forwarding services drop before passing a request on;
//! - [`config::load_validated`]: strict YAML (`deny_unknown_fields` on the caller's types),
//!   errors as `file:line:column: message`, then a [`config::Validate`] step — all before any
//!   port is bound.
//!
//! **Architecture invariant**: nothing here knows about a particular service; services own their
//! `Config` type and router and only borrow these helpers.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod error;
pub mod main_helper;
pub mod proxy;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use admin::{Readiness, admin_router};
pub use config::{ConfigError, ServiceConfig, Validate, load_validated};
pub use error::MatrixError;
pub use main_helper::{EX_USAGE, ServiceArgs, service_main};
pub use shutdown::{Shutdown, ShutdownTrigger, serve};
pub use telemetry::{LogBudget, LogFormat, Telemetry, TracingConfig, init_telemetry, init_tracing};
