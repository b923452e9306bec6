//! Append-only JSON-lines audit log: one [`AuditRecord`] per scan decision (client IP, path, size,
//! SHA-256, sniffed type, verdict, signature, clamd DB version). The file is opened with
//! `O_APPEND` and mode 0640; a record that cannot be written fails the request (fail closed).

use std::{io, os::unix::fs::OpenOptionsExt, path::Path};

use serde::Serialize;
use tokio::{io::AsyncWriteExt, sync::Mutex};

/// One line of the audit log.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    /// Peer address of the client (the TLS terminator's address behind a proxy).
    pub client_ip: Option<String>,
    /// HTTP method.
    pub method: &'a str,
    /// Request path (no query: it may carry a file name).
    pub path: &'a str,
    /// Body bytes seen.
    pub size: u64,
    /// Hex SHA-256 of the full body (absent when the body was cut off).
    pub sha256: Option<String>,
    /// Sniffed media type.
    pub mime: Option<&'a str>,
    /// `clean`, `infected`, `blocked_mime`, `too_large`, `scanner_unavailable`, `unscanned`.
    pub verdict: &'a str,
    /// Signature name for `infected`.
    pub signature: Option<&'a str>,
    /// clamd signature DB version of the verdict.
    pub db_version: Option<u32>,
    /// Whether the verdict came from the cache.
    pub cached: bool,
    /// For infected media found through the MCS API with quarantine configured: whether
    /// Synapse's admin API quarantined it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<bool>,
}

/// The audit log file.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<tokio::fs::File>,
}

impl AuditLog {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)?;
        Ok(Self {
            file: Mutex::new(tokio::fs::File::from_std(file)),
        })
    }

    /// Appends one record as a JSON line and flushes it.
    pub async fn append(&self, record: &AuditRecord<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().await;
        file.write_all(&line).await?;
        file.flush().await
    }
}

/// The current time as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
