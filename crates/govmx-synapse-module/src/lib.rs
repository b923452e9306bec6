//! The govmx Synapse module: Synapse's spam-checker callbacks answered in-process by the same
//! `govmx-policy` engine the federation gate uses.
//!
//! - [`config`]: the module's `config:` block from `homeserver.yaml`, parsed strictly.
//! - [`engine`]: [`Engine`] holds the current [`govmx_policy::PolicySet`] (plain policy files
//!   or a signed bundle with a last-known-good copy), the runtime case grants, and answers
//!   the decisions (`user_may_invite`, `user_may_create_room`, ...) as [`Refusal`]s.
//! - [`grants`]: the case-grant API (issue, list, revoke) behind `/_govmx/grants`.
//! - [`media`]: the verdict on a media scanner answer for `check_media_file_for_spam`.
//! - `python` (feature `python`): the PyO3 bindings maturin builds into `govmx_synapse._native`;
//!   the Python class Synapse loads lives in `python/govmx_synapse/__init__.py`.
//!
//! Everything outside `python` is plain Rust without Python, so `cargo test` needs no
//! interpreter. The engine reads the policy directory and writes the grants file (it is the
//! homeserver-side loader); the decisions themselves take `now` and do no I/O.

pub mod config;
pub mod engine;
pub mod grants;
pub mod media;
#[cfg(feature = "python")]
mod python;

pub use config::{ConfigError, ModuleConfig, ScannerConfig};
pub use engine::{Engine, Refusal, Reload, errcode};
pub use grants::{GrantReply, GrantRequest};
