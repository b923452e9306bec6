//! The append-only audit log: one JSON object per line for every denial (also in shadow mode,
//! where `enforced` is `false`).
//!
//! The file is opened with `O_APPEND` and written only by the log's own thread, whole lines at a
//! time, so lines from concurrent requests never interleave. Rotation: the operator's tool
//! uses copy-truncate, or moves the file and sends SIGHUP (which reopens it). Entries are
//! written within [`GATHER`] (a few milliseconds) of the denial; a process killed with SIGKILL
//! can lose the entries of those last milliseconds (a clean shutdown writes them all).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use crate::metrics::Metrics;

/// One denial.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    /// RFC 3339 UTC time.
    pub time: String,
    /// `inbound` or `connect`.
    pub surface: &'a str,
    /// The TCP peer.
    pub peer: &'a str,
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

/// Bytes of encoded entries waiting for the writer beyond which [`AuditLog::record`] waits
/// (the disk is slower than the denials): entries are never dropped.
const MAX_PENDING_BYTES: usize = 8 << 20;

/// How long the writer collects entries after the first one of a quiet spell arrives, before
/// it writes them. Under a flood of denials the thread then wakes and writes once per interval,
/// not once every few denials (measured: 11,000 wake-ups/s at 24,000 denials/s, each one a
/// futex call on a request worker and a context switch that preempts it).
const GATHER: Duration = Duration::from_millis(5);

/// Queued bytes at which the writer stops collecting and writes at once.
const BATCH_BYTES: usize = 256 << 10;

/// The audit log file, written by its own thread: a request only encodes its entry and
/// appends it to a buffer, so a slow disk never stalls the async workers (unless more than
/// [`MAX_PENDING_BYTES`] are waiting, when recording waits rather than drop an entry).
///
/// The writer takes everything queued in one swap and writes it with one `write` call, so
/// lines never interleave. Entries reach the file within [`GATHER`] (or sooner, once
/// [`BATCH_BYTES`] are queued);
/// [`AuditLog::flush`] waits for all entries recorded so far, and dropping the log writes the
/// rest before the thread ends.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    shared: Arc<Queue>,
    writer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    /// `govmx_gate_audit_write_errors_total`.
    write_errors: Counter,
    /// `govmx_gate_audit_queued_bytes`.
    queued_bytes: Gauge,
    /// Signalled when there is something for the writer (entries, a new file, closing).
    work: Condvar,
    /// Signalled after each write (for `flush` and for recorders waiting for room).
    written: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: Vec<u8>,
    /// Entries appended to `pending` since the start.
    queued: u64,
    /// Entries handed to the file since the start.
    done: u64,
    /// A reopened file for the writer to switch to before its next write.
    new_file: Option<File>,
    writer: WriterState,
    /// Threads waiting on `written` ([`AuditLog::flush`], recorders waiting for room): the
    /// writer signals `written` only when there is one (each signal is a system call).
    waiting: usize,
    closing: bool,
}

/// What the writer thread is doing, so that recorders wake it only when it needs waking.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    /// Writing, or about to check the queue: takes new entries without a signal.
    #[default]
    Busy,
    /// Nothing queued: the next entry wakes it.
    Idle,
    /// Collecting entries until [`GATHER`] ends: woken early only by [`BATCH_BYTES`], a flush,
    /// a reopen or closing.
    Gathering,
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
    /// Opens (creates) `path` for appending, creates the parent directory, and starts the
    /// writer thread.
    pub fn open(path: &Path, metrics: &Metrics) -> Result<AuditLog, AuditError> {
        let file = open_append(path)?;
        let shared = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            write_errors: metrics.audit_write_errors.clone(),
            queued_bytes: metrics.audit_queued_bytes.clone(),
            work: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = {
            let queue = shared.clone();
            let file_path = path.to_owned();
            std::thread::Builder::new()
                .name("govmx-audit".into())
                .spawn(move || write_loop(&queue, file, &file_path))
                .map_err(|source| AuditError {
                    path: path.display().to_string(),
                    source,
                })?
        };
        Ok(AuditLog {
            path: path.to_owned(),
            shared,
            writer: Some(writer),
        })
    }

    /// Reopens the file (after the operator moved it away); entries recorded before the call
    /// may still go to the old file.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let file = open_append(&self.path)?;
        let mut state = self.shared.lock();
        state.new_file = Some(file);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Queues one entry. Failures are logged, never passed to the request.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        // One allocation: an entry is ~300-600 bytes (a growing Vec would reallocate thrice).
        let mut line = Vec::with_capacity(512);
        if let Err(error) = serde_json::to_writer(&mut line, entry) {
            tracing::error!(%error, "cannot encode audit entry");
            return;
        }
        line.push(b'\n');
        let mut state = self.shared.lock();
        while state.pending.len() > MAX_PENDING_BYTES && !state.closing {
            state = self.shared.wait_written(state);
        }
        state.pending.extend_from_slice(&line);
        state.queued += 1;
        self.shared
            .queued_bytes
            .set(i64::try_from(state.pending.len()).unwrap_or(i64::MAX));
        // Wake the writer only to start collecting, or to cut collecting short for a full
        // batch; a busy writer takes this entry with its next swap.
        let wake = match state.writer {
            WriterState::Idle => true,
            WriterState::Gathering => state.pending.len() >= BATCH_BYTES,
            WriterState::Busy => false,
        };
        if wake {
            state.writer = WriterState::Busy;
            self.shared.work.notify_one();
        }
    }

    /// Waits until every entry recorded before the call is in the file (written, not synced).
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        let target = state.queued;
        while state.done < target && !self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            // A collecting writer writes now (it sees `waiting` and does not wait out GATHER).
            if state.writer == WriterState::Gathering {
                state.writer = WriterState::Busy;
                self.shared.work.notify_one();
            }
            state = self.shared.wait_written(state);
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the writer's next signal on `written`, counted in `waiting`.
    fn wait_written<'a>(
        &self,
        mut state: std::sync::MutexGuard<'a, QueueState>,
    ) -> std::sync::MutexGuard<'a, QueueState> {
        state.waiting += 1;
        let mut state = self.written.wait(state).unwrap_or_else(|p| p.into_inner());
        state.waiting -= 1;
        state
    }

    /// Signals `written` when anyone waits for it.
    fn signal_written(&self, state: &QueueState) {
        if state.waiting > 0 {
            self.written.notify_all();
        }
    }
}

/// The writer thread: wait for an entry, collect for up to [`GATHER`], swap the queued bytes
/// out, write them, repeat; on closing, write what is left and end.
fn write_loop(queue: &Queue, mut file: File, path: &Path) {
    let mut batch = Vec::new();
    loop {
        let (entries, closing) = {
            let mut state = queue.lock();
            while state.pending.is_empty() && state.new_file.is_none() && !state.closing {
                state.writer = WriterState::Idle;
                state = queue.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            let deadline = Instant::now() + GATHER;
            while state.pending.len() < BATCH_BYTES
                && state.new_file.is_none()
                && state.waiting == 0
                && !state.closing
            {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                state.writer = WriterState::Gathering;
                state = queue
                    .work
                    .wait_timeout(state, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            state.writer = WriterState::Busy;
            if let Some(new_file) = state.new_file.take() {
                file = new_file;
            }
            std::mem::swap(&mut batch, &mut state.pending);
            queue.queued_bytes.set(0);
            // Room again for recorders that waited.
            queue.signal_written(&state);
            (state.queued, state.closing)
        };
        if !batch.is_empty() {
            if let Err(error) = file.write_all(&batch) {
                queue.write_errors.inc();
                tracing::error!(%error, path = %path.display(), bytes = batch.len(), "cannot write audit log");
            }
            batch.clear();
            // A large burst's buffer is not kept for ever.
            batch.shrink_to(1 << 20);
        }
        {
            let mut state = queue.lock();
            state.done = entries;
            queue.signal_written(&state);
        }
        if closing && queue.lock().pending.is_empty() {
            return;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: &str) -> AuditEntry<'_> {
        AuditEntry {
            time: rfc3339(std::time::SystemTime::now()),
            surface: "inbound",
            peer: "127.0.0.1:1",
            origin: Some("c.example"),
            destination: None,
            method: "GET",
            path: "/_matrix/federation/v1/version",
            rule: "origin-not-listed",
            reason,
            list_version: Some(1),
            enforced: true,
        }
    }

    fn metrics() -> Metrics {
        Metrics::register(&mut prometheus_client::registry::Registry::default())
    }

    fn reasons(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let value: serde_json::Value =
                    serde_json::from_str(line).expect("one JSON per line");
                value["reason"].as_str().expect("reason").to_owned()
            })
            .collect()
    }

    #[test]
    fn concurrent_entries_are_whole_lines_and_none_is_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audit/denials.jsonl");
        let log = AuditLog::open(&path, &metrics()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let log = &log;
                scope.spawn(move || {
                    for i in 0..2_000 {
                        log.record(&entry(&format!("t{t}-{i}")));
                    }
                });
            }
        });
        log.flush();
        let mut got = reasons(&path);
        assert_eq!(got.len(), 8_000);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 8_000, "every entry exactly once");
    }

    #[test]
    fn drop_writes_what_is_queued_and_reopen_switches_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("denials.jsonl");
        let moved = tmp.path().join("denials.jsonl.1");
        let log = AuditLog::open(&path, &metrics()).unwrap();
        log.record(&entry("before rotation"));
        log.flush();
        std::fs::rename(&path, &moved).unwrap();
        log.reopen().unwrap();
        for i in 0..500 {
            log.record(&entry(&format!("after {i}")));
        }
        drop(log);
        assert_eq!(reasons(&moved), ["before rotation"]);
        let after = reasons(&path);
        assert_eq!(
            after.len(),
            500,
            "dropping the log writes every queued entry"
        );
        assert_eq!(after[499], "after 499");
    }

    #[test]
    fn a_lone_entry_reaches_the_file_without_a_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("denials.jsonl");
        let log = AuditLog::open(&path, &metrics()).unwrap();
        for round in 0..3 {
            let reason = format!("lone {round}");
            log.record(&entry(&reason));
            // The writer collects for GATHER, then writes on its own: poll with a deadline.
            let deadline = Instant::now() + Duration::from_secs(5);
            while reasons(&path).last() != Some(&reason) {
                assert!(
                    Instant::now() < deadline,
                    "{reason:?} not written within 5 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(reasons(&path), ["lone 0", "lone 1", "lone 2"]);
    }

    #[test]
    fn a_failed_write_is_counted_and_logging_goes_on() {
        // /dev/full accepts the open and fails every write with ENOSPC: a full disk.
        let metrics = metrics();
        let log = AuditLog::open(Path::new("/dev/full"), &metrics).unwrap();
        log.record(&entry("lost"));
        log.flush();
        assert_eq!(metrics.audit_write_errors.get(), 1);
        log.record(&entry("also lost"));
        log.flush();
        assert_eq!(metrics.audit_write_errors.get(), 2);
        assert_eq!(metrics.audit_queued_bytes.get(), 0);
    }
}
