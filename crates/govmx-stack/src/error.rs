//! The typed error of the stack: one enum, lower-case one-line messages where a human must act.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while bringing up or driving the local network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// A required tool is not installed and could not be installed.
    #[error("{tool} is missing: {fix}")]
    MissingTool {
        /// The tool, e.g. `clamd`.
        tool: &'static str,
        /// What the operator has to do.
        fix: String,
    },
    /// Installing a tool ran but failed.
    #[error("installing {tool} failed ({detail}); see {log}")]
    InstallFailed {
        /// The tool being installed.
        tool: &'static str,
        /// Exit status or spawn error.
        detail: String,
        /// The installer's log.
        log: PathBuf,
    },
    /// An address the stack needs is already taken.
    #[error("{addr} is already in use (needed by {component})")]
    AddressInUse {
        /// The busy address.
        addr: SocketAddr,
        /// Which component wanted it.
        component: String,
    },
    /// Two components of one spec want the same address.
    #[error("{addr} is wanted by both {first} and {second}")]
    AddressConflict {
        /// The address.
        addr: SocketAddr,
        /// The first component.
        first: String,
        /// The second component.
        second: String,
    },
    /// A child process did not become ready; carries the tail of its log.
    #[error("{component} failed to start: {reason} (log: {log})\n{tail}")]
    StartFailed {
        /// The component, e.g. `synapse agency`.
        component: String,
        /// Why: exited with a status, or the deadline passed.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// File-system or socket IO failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A stored state file could not be parsed.
    #[error("state file {} is corrupt: {detail}", path.display())]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// The parse error.
        detail: String,
    },
    /// An HTTP request to a homeserver failed.
    #[error("{what}: {source}")]
    Http {
        /// The call, e.g. `register @amt`.
        what: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A homeserver answered with an error.
    #[error("{what}: HTTP {status}: {body}")]
    Matrix {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The response body (Matrix `{errcode, error}` JSON as text).
        body: String,
    },
    /// clamd spoke an unexpected protocol or failed.
    #[error("clamd at {addr}: {detail}")]
    Clamd {
        /// Its address.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// A poll did not succeed before its deadline.
    #[error("timed out after {:.1} s waiting for {what}", after.as_secs_f64())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The spec is not usable.
    #[error("invalid stack spec: {0}")]
    InvalidSpec(String),
}

impl StackError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StackError::Io {
            action,
            path,
            source,
        }
    }
}
