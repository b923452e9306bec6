//! The append-only audit log: one JSON object per line for every denial (also in shadow mode,
//! where `enforced` is `false`).
//!
//! The file is opened with `O_APPEND` and each entry is written with a single `write` call, so
//! lines from concurrent requests never interleave and rotation by rename + reopen-on-SIGHUP is
//! not needed: the operator's rotation tool must use copy-truncate or move the file and send
//! SIGHUP (which reopens it).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// One denial.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    /// RFC 3339 UTC time.
    pub time: String,
    /// `inbound` or `connect`.
    pub surface: &'a str,
    /// The TCP peer.
    pub peer: String,
    /// The claimed origin (inbound), or our server name (connect).
    pub origin: Option<&'a str>,
    /// The destination (inbound header) or the CONNECT target.
    pub destination: Option<&'a str>,
    /// HTTP method.
    pub method: &'a str,
    /// Request path (inbound) or CONNECT authority.
    pub path: &'a str,
    /// The rule that denied.
    pub rule: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Version of the federation list used, when one was loaded.
    pub list_version: Option<u64>,
    /// `false` in shadow mode (the request was forwarded anyway).
    pub enforced: bool,
}

/// The audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open audit log {path}: {source}")]
pub struct AuditError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl AuditLog {
    /// Opens (creates) `path` for appending; creates the parent directory.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })
    }

    /// Reopens the file (after the operator moved it away).
    pub fn reopen(&self) -> Result<(), AuditError> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        Ok(())
    }

    /// Appends one entry. Failures are logged, never passed to the request.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(error) => {
                tracing::error!(%error, "cannot encode audit entry");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = file.write_all(&line) {
            tracing::error!(%error, path = %self.path.display(), "cannot write audit log");
        }
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    let err = |source| AuditError {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)
}

/// Formats a time as RFC 3339 UTC.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
