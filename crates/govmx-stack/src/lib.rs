//! Brings up a local sovereign Matrix network on loopback.
//!
//! One implementation serves both `govmx up` and the end-to-end tests:
//!
//! - [`prereq`]: locates or installs the pinned Synapse venv ([`SYNAPSE_VERSION`]) and `clamd`.
//! - [`ca`]: the run CA ([`RunCa`]) and per-homeserver server certificates with an IP SAN.
//! - [`synapse`]: [`HomeserverSpec`] → rendered `homeserver.yaml` ([`render_homeserver_yaml`]) →
//!   a running [`Homeserver`] with shared-secret user registration.
//! - [`policy`]: the run's bundle signers, trust file and signed federation list ([`RunPolicy`]).
//! - [`gate`]: the govmx federation gate in front of a homeserver, in-process ([`Gate`]).
//! - [`clamd`]: a loopback `clamd` with the EICAR test signature, `zPING` and `zINSTREAM`.
//! - [`process`]: [`Supervised`] children in their own process group, logs to a file, stopped on
//!   drop (SIGTERM, then SIGKILL), and via `setpriv --pdeathsig` also when the parent is killed.
//! - [`ports`]: free-address checks and random loopback addresses for parallel tests.
//! - [`stack`]: [`Stack`] owns all of the above; [`demo`] runs the federation demo scenario.
//!
//! Architecture invariant: this crate never prints to stdout; the only stderr output is the
//! log dump of a [`Stack`] dropped while the thread panics (a failing test).

pub mod ca;
pub mod clamd;
pub mod demo;
mod error;
pub mod exporter;
pub mod gate;
pub mod module;
pub mod policy;
pub mod ports;
pub mod prereq;
pub mod process;
pub mod scanner;
pub mod stack;
pub mod synapse;
mod util;

pub use ca::{RunCa, ServerCert};
pub use clamd::{Clamd, ClamdSpec, ScanVerdict, eicar_test_file};
pub use demo::{DemoOutcome, run_demo};
pub use error::StackError;
pub use gate::{Gate, metric_sum};
pub use policy::{ListedServer, RunPolicy, Signers};
pub use ports::{check_addr_free, free_loopback_ip, random_loopback_ip};
pub use prereq::{SYNAPSE_VERSION, default_cache_dir, ensure_clamd, ensure_synapse, helm_binary};
pub use process::Supervised;
pub use stack::{Stack, StackSpec};
pub use synapse::{
    Credentials, FederationFront, Homeserver, HomeserverConfig, HomeserverSpec,
    isolate_environment, render_homeserver_yaml,
};

/// Result alias of this crate.
pub type Result<T, E = StackError> = std::result::Result<T, E>;
