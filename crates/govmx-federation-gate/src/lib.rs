//! govmx federation gate: the only way in and out of a homeserver's federation.
//!
//! - **Inbound** ([`inbound`]): a TLS edge in front of Synapse's plain federation listener. It
//!   forwards only federation surfaces, checks the X-Matrix header ([`xmatrix`]) against the
//!   signed federation list, optionally verifies request signatures with keys pinned in the list
//!   ([`signature`], strict mode), and removes relayed events authored on unlisted servers from
//!   transactions ([`txn`]). Each inbound connection forwards over its own upstream connection
//!   ([`upstream`]); connections are served by one single-threaded runtime per core
//!   ([`workers`]).
//! - **Outbound** ([`proxy`]): a CONNECT proxy for Synapse's `https_proxy` that tunnels only to
//!   listed servers and their delegated hosts.
//! - **The list** ([`list`]): loaded from a signed policy bundle ([`policy`], the one module that
//!   talks to `govmx-policy`), hot-reloaded with an atomic swap, backed by a last-known-good
//!   copy, failing closed past a maximum age.
//! - **Operations**: [`metrics`], the JSON-lines [`audit`] log, shadow mode, and the admin
//!   listener with `/explain` ([`gate`]).
//!
//! Entry points: [`config::Config`] (strict YAML, validated by `govmx_service::load_validated`)
//! and [`gate::start`], which returns a [`gate::RunningGate`].
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod gate;
pub mod inbound;
pub mod keys;
pub mod list;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod signature;
pub mod source;
pub mod tls;
pub mod txn;
pub mod upstream;
pub mod workers;
pub mod xmatrix;

pub use config::Config;
pub use gate::{RunningGate, StartError, start};
