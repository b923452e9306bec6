//! The issuance log: append-only, hash-chained JSON lines, one per CA event.
//!
//! Each line is `{"seq":N,"time":"<RFC 3339>","prev":"<hash of line N-1>","event":{…},"hash":"…"}`
//! where `hash` is the SHA-256 (hex) of the line's JSON *without* the `hash` member, serialised
//! exactly as `{"seq":…,"time":…,"prev":…,"event":…}`. The first line has `seq` 1 and
//! `prev` = 64 zeros. [`audit`] re-derives every hash and reports the first broken line.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::{
    ca::{Profile, RevocationReason},
    token::rfc3339,
};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One logged CA event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The hierarchy was created.
    Init {
        /// SHA-256 of the root certificate DER.
        root_sha256: String,
        /// SHA-256 of the intermediate certificate DER.
        intermediate_sha256: String,
    },
    /// An enrollment token was created (the hash id only).
    Token {
        /// Token id.
        id: String,
        /// Agency.
        agency: String,
        /// Profile.
        profile: Profile,
    },
    /// A certificate was issued.
    Issued {
        /// Serial (hex).
        serial: String,
        /// Profile.
        profile: Profile,
        /// Agency id, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agency: Option<String>,
        /// Matrix ID or hosts.
        subject: String,
        /// End of validity (RFC 3339).
        not_after: String,
        /// SHA-256 of the certificate DER.
        cert_sha256: String,
        /// Id of the token redeemed, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A certificate was revoked.
    Revoked {
        /// Serial (hex).
        serial: String,
        /// Reason.
        reason: RevocationReason,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: &'a str,
    prev: &'a str,
    event: &'a Event,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    time: String,
    prev: String,
    event: Event,
    hash: String,
}

fn body_hash(seq: u64, time: &str, prev: &str, event: &Event) -> String {
    let body = serde_json::to_vec(&Body {
        seq,
        time,
        prev,
        event,
    })
    .unwrap_or_default();
    hex::encode(Sha256::digest(&body))
}

/// The result of a successful audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] for an empty log).
    pub head: String,
    /// Every event, in order.
    pub events: Vec<Event>,
}

/// The first broken line of a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct AuditError {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// Verifies the whole chain; reports the first broken line.
pub fn audit(log: &[u8]) -> Result<AuditReport, AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut events = Vec::new();
    let mut line_no = 0u64;
    let mut rest = log;
    while !rest.is_empty() {
        line_no += 1;
        let fail = |reason: String| AuditError {
            line: line_no,
            reason,
        };
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(fail(
                "last line is not terminated (truncated write?)".into(),
            ));
        };
        let raw = &rest[..end];
        rest = &rest[end + 1..];
        let line: Line =
            serde_json::from_slice(raw).map_err(|e| fail(format!("not a log entry: {e}")))?;
        if line.seq != line_no {
            return Err(fail(format!("seq is {}, expected {line_no}", line.seq)));
        }
        if line.prev != prev {
            return Err(fail(format!(
                "prev is {}, but line {} hashes to {prev}",
                line.prev,
                line_no - 1
            )));
        }
        let expect = body_hash(line.seq, &line.time, &line.prev, &line.event);
        if line.hash != expect {
            return Err(fail(format!(
                "entry was altered: its content hashes to {expect}, recorded {}",
                line.hash
            )));
        }
        prev = line.hash;
        events.push(line.event);
    }
    Ok(AuditReport {
        entries: line_no,
        head: prev,
        events,
    })
}

/// Why the log could not be opened or appended to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// I/O.
    #[error("{}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The existing log fails its audit: nothing is appended to a broken chain.
    #[error("{}: refusing to append to a broken log: {source}", path.display())]
    Broken {
        /// The log file.
        path: PathBuf,
        /// The first broken line.
        #[source]
        source: AuditError,
    },
}

/// An open issuance log (append only).
#[derive(Debug)]
pub struct IssuanceLog {
    path: PathBuf,
    file: File,
    seq: u64,
    head: String,
}

impl IssuanceLog {
    /// Opens (or creates) the log, auditing what is already there.
    pub fn open(path: &Path) -> Result<IssuanceLog, LogError> {
        let io_err = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io_err)?;
        let existing = std::fs::read(path).map_err(io_err)?;
        let report = audit(&existing).map_err(|source| LogError::Broken {
            path: path.to_owned(),
            source,
        })?;
        Ok(IssuanceLog {
            path: path.to_owned(),
            file,
            seq: report.entries,
            head: report.head,
        })
    }

    /// Opens (or creates) the log for appending, checking only its last line (its own hash and
    /// that it ends with a newline). Cheap at any log size; use [`IssuanceLog::open`] (full
    /// audit) at start-up and [`audit`] for the complete check.
    pub fn open_tail(path: &Path) -> Result<IssuanceLog, LogError> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        const TAIL: u64 = 64 * 1024;
        let io_err = |source| LogError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Ok(IssuanceLog {
                path: path.to_owned(),
                file,
                seq: 0,
                head: GENESIS.to_owned(),
            });
        }
        let start = len.saturating_sub(TAIL);
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut tail).map_err(io_err)?;
        let broken = |reason: String| LogError::Broken {
            path: path.to_owned(),
            source: AuditError { line: 0, reason },
        };
        let Some(body) = tail.strip_suffix(b"\n") else {
            return Err(broken(
                "last line is not terminated (truncated write?)".into(),
            ));
        };
        let last = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => &body[i + 1..],
            None if start == 0 => body,
            None => return Err(broken("last line is longer than 64 KiB".into())),
        };
        let line: Line = serde_json::from_slice(last)
            .map_err(|e| broken(format!("last line is not a log entry: {e}")))?;
        if line.hash != body_hash(line.seq, &line.time, &line.prev, &line.event) {
            return Err(broken("last entry was altered".into()));
        }
        Ok(IssuanceLog {
            path: path.to_owned(),
            file,
            seq: line.seq,
            head: line.hash,
        })
    }

    /// Appends one event and syncs it to disk.
    pub fn append(&mut self, event: Event, now: OffsetDateTime) -> Result<(), LogError> {
        let seq = self.seq + 1;
        let time = rfc3339(now);
        let hash = body_hash(seq, &time, &self.head, &event);
        let line = Line {
            seq,
            time,
            prev: std::mem::take(&mut self.head),
            event,
            hash: hash.clone(),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let result = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = result {
            self.head = line.prev;
            return Err(LogError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.seq = seq;
        self.head = hash;
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn event(n: u8) -> Event {
        Event::Revoked {
            serial: format!("{n:02x}"),
            reason: RevocationReason::KeyCompromise,
        }
    }

    #[test]
    fn append_audit_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuance.log");
        let now = datetime!(2026-11-23 12:00 UTC);
        let mut log = IssuanceLog::open(&path).unwrap();
        for n in 1..=4 {
            log.append(event(n), now).unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let report = audit(text.as_bytes()).unwrap();
        assert_eq!(report.entries, 4);
        assert_eq!(report.events[3], event(4));
        // Reopening continues the chain.
        IssuanceLog::open(&path)
            .unwrap()
            .append(event(5), now)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(audit(text.as_bytes()).unwrap().entries, 5);

        let lines: Vec<&str> = text.lines().collect();
        let check = |tampered: String, line: u64, starts: &str| {
            let err = audit(tampered.as_bytes()).unwrap_err();
            assert_eq!(err.line, line, "{err}");
            assert!(err.reason.starts_with(starts), "{err}");
        };
        // Altered content of line 3.
        let altered = text.replacen("\"serial\":\"03\"", "\"serial\":\"0f\"", 1);
        check(altered, 3, "entry was altered");
        // Line 2 removed: line 2 (old 3) has the wrong seq.
        let removed = [lines[0], lines[2], lines[3], lines[4]].join("\n") + "\n";
        check(removed, 2, "seq is 3, expected 2");
        // Line 4 rewritten with a consistent own hash: line 5's prev no longer matches.
        let mut forged: Line = serde_json::from_str(lines[3]).unwrap();
        forged.event = event(9);
        forged.hash = body_hash(forged.seq, &forged.time, &forged.prev, &forged.event);
        let mut with_forged: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        with_forged[3] = serde_json::to_string(&forged).unwrap();
        check(with_forged.join("\n") + "\n", 5, "prev is");
        check(text.trim_end().to_owned(), 5, "last line is not terminated");
        check(text.replacen('{', "[", 1), 1, "not a log entry");
        // The tail check continues the same chain.
        let mut tail = IssuanceLog::open_tail(&path).unwrap();
        assert_eq!(tail.len(), 5);
        tail.append(event(6), now).unwrap();
        drop(tail);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(audit(text.as_bytes()).unwrap().entries, 6);
        // A broken log is not appended to.
        std::fs::write(
            &path,
            text.replacen("\"serial\":\"03\"", "\"serial\":\"0f\"", 1),
        )
        .unwrap();
        assert!(matches!(
            IssuanceLog::open(&path),
            Err(LogError::Broken { .. })
        ));
    }
}
