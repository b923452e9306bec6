//! PyO3 bindings: `govmx_synapse._native.Engine`, used by the Python class Synapse loads.
//!
//! Every method takes plain strings and numbers and returns plain tuples, so no Rust error or
//! panic crosses into Python except the `ValueError` of a bad configuration at start. `now`
//! is optional: tests and the shared vectors pass a fixed time, Synapse passes nothing and the
//! binding reads the clock (this is the module's binary edge).
#![allow(unsafe_code)] // PyO3's macros expand to the FFI glue.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use time::OffsetDateTime;

use crate::config::ModuleConfig;
use crate::engine::{Engine, Refusal, Reload};

type RefusalTuple = (&'static str, String, String);

fn tuple(refusal: Option<Refusal>) -> Option<RefusalTuple> {
    refusal.map(|r| (r.errcode, r.reason, r.rule))
}

fn to_time(now: Option<f64>) -> OffsetDateTime {
    match now {
        Some(seconds) if seconds.is_finite() => {
            let nanos = (seconds * 1e9) as i128;
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        }
        _ => OffsetDateTime::now_utc(),
    }
}

fn describe(what: &str, reload: &Reload) -> Option<String> {
    match reload {
        Reload::Unchanged => None,
        Reload::Loaded {
            version,
            from_last_known_good,
        } => Some(if *from_last_known_good {
            format!("{what}: loaded version {version} from the last-known-good copy")
        } else {
            format!("{what}: loaded version {version}")
        }),
        Reload::Rejected { error, current } => Some(match current {
            Some(version) => {
                format!("{what}: refused new content, keeping version {version}: {error}")
            }
            None => format!("{what}: refused, nothing in force: {error}"),
        }),
    }
}

/// The policy engine of one homeserver.
#[pyclass(frozen, name = "Engine", module = "govmx_synapse._native")]
#[derive(Debug)]
struct PyEngine {
    engine: Engine,
}

#[pymethods]
impl PyEngine {
    /// `Engine(config_json)`: the module's `config:` block as JSON.
    #[new]
    fn new(config_json: &str) -> PyResult<PyEngine> {
        let config = ModuleConfig::from_json(config_json)
            .map_err(|error| PyValueError::new_err(error.to_string()))?;
        let engine =
            Engine::new(config).map_err(|error| PyValueError::new_err(error.to_string()))?;
        Ok(PyEngine { engine })
    }

    /// Checks the policy directory and grants file; returns `(errors, messages)`: whether
    /// something was refused, and one line per change for the log.
    #[pyo3(signature = (now=None))]
    fn poll(&self, py: Python<'_>, now: Option<f64>) -> (bool, Vec<String>) {
        let now = to_time(now);
        let outcome = py.detach(|| self.engine.poll(now));
        let refused = matches!(outcome.policy, Reload::Rejected { .. })
            || matches!(outcome.grants, Reload::Rejected { .. });
        let messages = [
            describe("policy", &outcome.policy),
            describe("grants", &outcome.grants),
        ]
        .into_iter()
        .flatten()
        .collect();
        (refused, messages)
    }

    /// One line on the engine's state.
    #[pyo3(signature = (now=None))]
    fn status(&self, now: Option<f64>) -> String {
        self.engine.status(to_time(now))
    }

    /// The version in force, or `None`.
    fn policy_version(&self) -> Option<u64> {
        self.engine.policy_version()
    }

    /// Poll interval in milliseconds.
    fn reload_interval_ms(&self) -> u64 {
        self.engine.config().reload_interval_ms
    }

    /// `None` (allowed) or `(errcode, reason, rule)`.
    #[pyo3(signature = (inviter, invitee, inviter_is_local=true, now=None))]
    fn user_may_invite(
        &self,
        inviter: &str,
        invitee: &str,
        inviter_is_local: bool,
        now: Option<f64>,
    ) -> Option<RefusalTuple> {
        tuple(
            self.engine
                .may_invite(inviter, invitee, inviter_is_local, to_time(now)),
        )
    }

    /// `None` (allowed) or `(errcode, reason, rule)`.
    #[pyo3(signature = (creator, invitees, now=None))]
    fn user_may_create_room(
        &self,
        creator: &str,
        invitees: Vec<String>,
        now: Option<f64>,
    ) -> Option<RefusalTuple> {
        let invitees: Vec<&str> = invitees.iter().map(String::as_str).collect();
        tuple(
            self.engine
                .may_create_room(creator, &invitees, to_time(now)),
        )
    }

    /// `None` (allowed) or `(errcode, reason, rule)`.
    #[pyo3(signature = (user, is_invited, now=None))]
    fn user_may_join_room(
        &self,
        user: &str,
        is_invited: bool,
        now: Option<f64>,
    ) -> Option<RefusalTuple> {
        tuple(self.engine.may_join_room(user, is_invited, to_time(now)))
    }

    /// `None` (allowed) or `(errcode, reason, rule)`: the author of a federated event.
    #[pyo3(signature = (sender, now=None))]
    fn federated_event_allowed(&self, sender: &str, now: Option<f64>) -> Option<RefusalTuple> {
        tuple(
            self.engine
                .may_receive_federated_event(sender, to_time(now)),
        )
    }

    /// The grants API: `(status, json_body)`.
    #[pyo3(signature = (method, issuer, grant_id, body, now=None))]
    fn grants_api(
        &self,
        py: Python<'_>,
        method: &str,
        issuer: &str,
        grant_id: Option<&str>,
        body: &[u8],
        now: Option<f64>,
    ) -> (u16, String) {
        let now = to_time(now);
        let reply = py.detach(|| self.engine.grants_api(method, issuer, grant_id, body, now));
        (reply.status, reply.body)
    }

    /// `(scan_url, bearer_token)` when media scans are configured.
    fn scanner(&self) -> PyResult<Option<(String, Option<String>)>> {
        match self.engine.scanner() {
            None => Ok(None),
            Some(scanner) => {
                let token = scanner
                    .token()
                    .map_err(|error| PyValueError::new_err(error.to_string()))?;
                Ok(Some((scanner.scan_url(), token)))
            }
        }
    }

    /// Whether a (remote or local) media file must be scanned.
    fn media_scan_needed(&self, is_remote: bool) -> bool {
        self.engine.media_scan_needed(is_remote)
    }

    /// Verdict on a scan answer: `None` (clean) or `(errcode, reason, rule)`.
    fn media_verdict(&self, status: u16, body: &[u8]) -> Option<RefusalTuple> {
        tuple(self.engine.media_verdict(status, body))
    }

    /// Verdict while the scanner is unreachable.
    fn scanner_unavailable(&self, detail: &str) -> Option<RefusalTuple> {
        tuple(self.engine.scanner_unavailable(detail))
    }
}

/// The extension module `govmx_synapse._native`.
#[pymodule(name = "_native")]
mod native {
    #[pymodule_export]
    use super::PyEngine;
}
