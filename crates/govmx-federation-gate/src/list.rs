//! The federation list at runtime: load, hot reload, last-known-good copy and freshness.
//!
//! [`ListStore`] holds the current list behind an [`ArcSwapOption`]: requests take a snapshot
//! (`Arc`) and never see a half-updated list; a reload swaps the pointer in one step, so a
//! reload never fails a request.
//!
//! - **Primary source**: the bundle directory or HTTPS URL ([`BundleSource`]). [`ListStore::poll`]
//!   reads the bundle's files into memory and compares them and the trust file with the ones
//!   behind the list in use. Unchanged, they only refresh the confirmation time; changed, they
//!   are verified (signatures, threshold) and swapped in; a failure keeps the old list and
//!   counts `failed`. Reading a directory, verifying, swapping, freeing the replaced list and
//!   the last-known-good write are one job on the store's reload thread, so a large list never
//!   stalls request handling and a reload under load never waits for a busy runtime thread.
//! - **Spare buffers**: the list file is read into a buffer whose pages were touched after
//!   the previous reload (`source::prefault`), so a reload does not fault in ~14 MB of fresh
//!   pages before it can even start verifying (read 8–12 → 2–3 ms on an idle gate); a large
//!   list's members are parsed into a members array prepared the same way
//!   ([`MemberBuffer`], ~12 MB for 100,000 servers; reload under load 80–125 → 68–107 ms).
//!   They cost one bundle's size and one members array (+1/8 each) of memory for as long as
//!   the gate runs.
//! - **No rollback**: a bundle whose version is lower than the list in use, or the same version
//!   with other content, is refused (a replayed old list cannot re-admit a removed server).
//! - **Last-known-good**: after each successful verification the exact bytes verified are written
//!   to `<lkg>/bundle` (via `bundle.new` and renames) and the confirmation time to
//!   `<lkg>/verified-at`. At start, when the primary fails, that copy is verified again with
//!   the same trust anchors and used with its recorded confirmation time.
//! - **Freshness**: the age of the list is the time since it was last confirmed from the
//!   primary source. Past `max_age` the status is [`ListStatus::Stale`] and the gate fails
//!   closed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use crate::config::PolicyConfig;
use crate::metrics::Metrics;
use crate::policy::{BundleFiles, MemberBuffer, PolicyList, verify_bundle, verify_bundle_buffered};
use crate::source::{BundleSource, UrlSource, prefault, read_dir_bundle, read_dir_bundle_into};

const LKG_BUNDLE: &str = "bundle";
const LKG_BUNDLE_NEW: &str = "bundle.new";
const LKG_BUNDLE_OLD: &str = "bundle.old";
const LKG_VERIFIED_AT: &str = "verified-at";

/// Where the list in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSource {
    /// The configured bundle directory.
    Primary,
    /// The last-known-good copy (the primary failed at start).
    LastKnownGood,
}

/// The list in use and its provenance.
#[derive(Debug)]
pub struct CurrentList {
    /// The verified list.
    pub list: Arc<PolicyList>,
    /// When it was last confirmed from the primary source.
    pub verified_at: SystemTime,
    /// Where it came from.
    pub source: ListSource,
    /// The verified bundle files and trust anchors: a poll compares the source with them
    /// (a memory compare of shared buffers, no re-hash of a 13 MB list on every poll).
    files: BundleFiles,
    trust: Bytes,
}

/// The list as requests see it.
#[derive(Debug, Clone)]
pub enum ListStatus {
    /// Usable.
    Fresh(Arc<CurrentList>),
    /// Too old: fail closed. The list is kept for `/explain`.
    Stale {
        /// The outdated list.
        current: Arc<CurrentList>,
        /// Why it is not used.
        reason: String,
    },
    /// No list could be loaded at all: fail closed.
    Missing {
        /// The last load error.
        reason: String,
    },
}

impl ListStatus {
    /// The list when fresh.
    pub fn fresh(&self) -> Option<&Arc<CurrentList>> {
        match self {
            ListStatus::Fresh(current) => Some(current),
            _ => None,
        }
    }

    /// The list, fresh or not.
    pub fn any(&self) -> Option<&Arc<CurrentList>> {
        match self {
            ListStatus::Fresh(current) | ListStatus::Stale { current, .. } => Some(current),
            ListStatus::Missing { .. } => None,
        }
    }

    /// The reason the gate fails closed, if it does.
    pub fn unavailable_reason(&self) -> Option<&str> {
        match self {
            ListStatus::Fresh(_) => None,
            ListStatus::Stale { reason, .. } | ListStatus::Missing { reason } => Some(reason),
        }
    }
}

/// Result of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new list was verified and is in use.
    Loaded {
        /// Its version.
        version: u64,
    },
    /// The primary source did not change; its confirmation time was refreshed.
    Unchanged,
    /// The primary source failed; the previous list (if any) stays.
    Failed(String),
}

/// The runtime list holder.
#[derive(Debug)]
pub struct ListStore {
    current: Arc<ArcSwapOption<CurrentList>>,
    source: BundleSource,
    trust: PathBuf,
    lkg_dir: PathBuf,
    own_server: String,
    max_age: Duration,
    last_error: Mutex<String>,
    metrics: Metrics,
    reload_thread: ReloadThread,
    /// Pre-faulted memory for the next reload (see [`Spares`]).
    spare: Arc<Mutex<Spares>>,
}

/// Memory a reload fills, allocated and touched after the previous reload (off the next one's
/// critical path: on this kind of VM a fresh page costs ~1.3 µs to fault in, ~25 MB of them per
/// 100,000-server list). Costs about one list's file and members array (+1/8) of resident memory.
#[derive(Debug, Default)]
struct Spares {
    /// For the next read of the list file (see [`read_dir_bundle_into`]).
    read: Vec<u8>,
    /// For the members of the next large list (see [`MemberBuffer`]).
    members: MemberBuffer,
}

/// Lists with fewer members are parsed on one thread and never use the member buffer.
const MIN_BUFFERED_MEMBERS: usize = 8_192;

impl ListStore {
    /// A store with no list yet; call [`ListStore::load_initial`]. Fails only when the URL
    /// source cannot be set up (CA file).
    pub fn new(
        config: &PolicyConfig,
        own_server: &str,
        metrics: Metrics,
    ) -> Result<ListStore, String> {
        let source = match (&config.url, &config.dir, &config.ca_file) {
            (Some(url), _, Some(ca)) => {
                BundleSource::Url(UrlSource::new(url, ca, config.fetch_timeout)?)
            }
            (Some(_), _, None) => return Err("policy.url needs policy.ca_file".to_owned()),
            (None, Some(dir), _) => BundleSource::Dir(dir.clone()),
            (None, None, _) => return Err("policy: neither dir nor url is set".to_owned()),
        };
        Ok(ListStore {
            current: Arc::new(ArcSwapOption::empty()),
            source,
            trust: config.trust.clone(),
            lkg_dir: config.last_known_good_dir.clone(),
            own_server: own_server.to_owned(),
            max_age: config.max_age,
            last_error: Mutex::new("no federation list loaded yet".to_owned()),
            metrics,
            reload_thread: ReloadThread::start(config.reload_nice)?,
            spare: Arc::default(),
        })
    }

    /// Loads from the primary source, falling back to the last-known-good copy.
    pub async fn load_initial(&self, now: SystemTime) -> ReloadOutcome {
        let outcome = self.poll(now).await;
        if let ReloadOutcome::Failed(primary_error) = &outcome {
            match self.load_last_known_good() {
                Ok(current) => {
                    tracing::warn!(
                        error = %primary_error,
                        version = current.list.version(),
                        verified_at = %crate::audit::rfc3339(current.verified_at),
                        "primary federation list failed, using the last-known-good copy"
                    );
                    self.metrics.list_version.set(current.list.version() as i64);
                    self.current.store(Some(Arc::new(current)));
                }
                Err(lkg_error) => {
                    tracing::error!(
                        error = %primary_error,
                        last_known_good = %lkg_error,
                        "no federation list available; failing closed"
                    );
                }
            }
        }
        outcome
    }

    /// Checks the primary source once and swaps in a new list if it changed and verifies.
    pub async fn poll(&self, now: SystemTime) -> ReloadOutcome {
        let outcome = self.poll_inner(now).await;
        match &outcome {
            // Counted and logged in `ReloadJob::run` at the moment of the swap.
            ReloadOutcome::Loaded { .. } => {}
            ReloadOutcome::Unchanged => self.metrics.reload("unchanged"),
            ReloadOutcome::Failed(error) => {
                self.metrics.reload("failed");
                tracing::error!(%error, source = %self.source.describe(), "federation list reload failed; keeping the previous list");
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.clone();
            }
        }
        outcome
    }

    async fn poll_inner(&self, now: SystemTime) -> ReloadOutcome {
        let started = Instant::now();
        // A URL is fetched here; a directory is read on the reload thread (~14 MB blocks).
        let files = match &self.source {
            BundleSource::Dir(dir) => JobFiles::Read(dir.clone()),
            BundleSource::Url(_) => JobFiles::Fetched(self.source.read().await),
        };
        let job = ReloadJob {
            current: self.current.clone(),
            files,
            trust: self.trust.clone(),
            lkg_dir: self.lkg_dir.clone(),
            own_server: self.own_server.clone(),
            metrics: self.metrics.clone(),
            spare: self.spare.clone(),
        };
        // One job from reading to the swap: no hand-off back to a busy runtime thread between
        // the steps (each one waits for a CPU under load).
        self.reload_thread
            .run(move || job.run(now, started))
            .await
            .unwrap_or_else(ReloadOutcome::Failed)
    }

    /// The list as requests see it at `now` (also updates the age and freshness gauges).
    pub fn status(&self, now: SystemTime) -> ListStatus {
        let Some(current) = self.current.load_full() else {
            self.set_fresh(false);
            let reason = self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return ListStatus::Missing {
                reason: format!("no federation list: {reason}"),
            };
        };
        let age = now.duration_since(current.verified_at).unwrap_or_default();
        // Every request asks for the status: write the shared gauges only when their value
        // changes (the age in whole seconds), so the workers do not bounce their cache line.
        let age_secs = age.as_secs() as f64;
        if self.metrics.list_age_seconds.get() != age_secs {
            self.metrics.list_age_seconds.set(age_secs);
        }
        if now > current.list.expires_at() {
            self.set_fresh(false);
            let reason = format!(
                "federation list version {} expired at {} (issued + maxAge in the signed list)",
                current.list.version(),
                crate::audit::rfc3339(current.list.expires_at())
            );
            return ListStatus::Stale { current, reason };
        }
        if age > self.max_age {
            self.set_fresh(false);
            let reason = format!(
                "federation list version {} was last confirmed {}s ago, more than the maximum age of {}s",
                current.list.version(),
                age.as_secs(),
                self.max_age.as_secs()
            );
            return ListStatus::Stale { current, reason };
        }
        self.set_fresh(true);
        ListStatus::Fresh(current)
    }

    fn set_fresh(&self, fresh: bool) {
        let value = i64::from(fresh);
        if self.metrics.list_fresh.get() != value {
            self.metrics.list_fresh.set(value);
        }
    }

    /// When the current list turns stale (for scheduling readiness updates).
    pub fn stale_at(&self) -> Option<SystemTime> {
        self.current
            .load()
            .as_ref()
            .map(|c| (c.verified_at + self.max_age).min(c.list.expires_at()))
    }

    fn load_last_known_good(&self) -> Result<CurrentList, String> {
        let mut dir = self.lkg_dir.join(LKG_BUNDLE);
        if !dir.is_dir() {
            dir = self.lkg_dir.join(LKG_BUNDLE_OLD);
        }
        let files = read_dir_bundle(&dir)?;
        let trust = Bytes::from(
            std::fs::read(&self.trust).map_err(|e| format!("{}: {e}", self.trust.display()))?,
        );
        let list = verify_bundle(&files, &trust, &self.own_server, SystemTime::now())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let verified_at = std::fs::read_to_string(self.lkg_dir.join(LKG_VERIFIED_AT))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
        Ok(CurrentList {
            list: Arc::new(list),
            verified_at,
            source: ListSource::LastKnownGood,
            files,
            trust,
        })
    }
}

/// The bundle files of a reload job.
enum JobFiles {
    /// To be read from this directory (on the reload thread).
    Read(PathBuf),
    /// Already fetched from the URL.
    Fetched(Result<BundleFiles, String>),
}

/// Everything one reload needs, moved to the reload thread.
struct ReloadJob {
    current: Arc<ArcSwapOption<CurrentList>>,
    files: JobFiles,
    trust: PathBuf,
    lkg_dir: PathBuf,
    own_server: String,
    metrics: Metrics,
    spare: Arc<Mutex<Spares>>,
}

/// Refills the spare buffers when the job ends (after the swap and the last-known-good
/// write, off the reload's critical path), those the job used up.
struct Refill<'a> {
    spare: &'a Mutex<Spares>,
    current: &'a ArcSwapOption<CurrentList>,
    /// Size of the largest file read; 0: nothing to refill.
    len: usize,
}

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.read.capacity() == 0 && self.len > 0 {
            spare.read = prefault(self.len);
        }
        let members = self
            .current
            .load()
            .as_ref()
            .map_or(0, |current| current.list.member_count());
        if spare.members.capacity() == 0 && members >= MIN_BUFFERED_MEMBERS {
            spare.members = MemberBuffer::prefaulted(members + members / 8);
        }
    }
}

impl ReloadJob {
    /// Reads (a directory), compares, verifies and swaps in the bundle; after the swap
    /// frees the replaced list and writes the last-known-good copy.
    fn run(self, now: SystemTime, started: Instant) -> ReloadOutcome {
        let mut refill = Refill {
            spare: &self.spare,
            current: &self.current,
            len: 0,
        };
        let files = match self.files {
            JobFiles::Read(dir) => {
                let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
                let files = read_dir_bundle_into(&dir, &mut spare.read);
                if let Ok(files) = &files {
                    refill.len = files.values().map(Bytes::len).max().unwrap_or(0);
                }
                files
            }
            JobFiles::Fetched(fetched) => fetched,
        };
        let files = match files {
            Ok(files) => files,
            Err(error) => return ReloadOutcome::Failed(error),
        };
        let trust = match std::fs::read(&self.trust) {
            Ok(trust) => Bytes::from(trust),
            Err(e) => return ReloadOutcome::Failed(format!("{}: {e}", self.trust.display())),
        };
        let previous = self.current.load_full();
        if let Some(current) = &previous
            && current.files == files
            && current.trust == trust
            && current.source == ListSource::Primary
        {
            self.current.store(Some(Arc::new(CurrentList {
                list: current.list.clone(),
                verified_at: now,
                source: ListSource::Primary,
                files: current.files.clone(),
                trust: current.trust.clone(),
            })));
            write_verified_at(&self.lkg_dir, now);
            return ReloadOutcome::Unchanged;
        }
        let read = started.elapsed();
        let mut members =
            std::mem::take(&mut self.spare.lock().unwrap_or_else(|p| p.into_inner()).members);
        let verified = verify_bundle_buffered(&files, &trust, &self.own_server, now, &mut members);
        // An unused member buffer goes back for the next reload.
        if members.capacity() > 0 {
            self.spare.lock().unwrap_or_else(|p| p.into_inner()).members = members;
        }
        let list = match verified {
            Ok(list) => list,
            // A refused list is freed here, on the reload thread.
            Err(error) => return ReloadOutcome::Failed(error.to_string()),
        };
        let version = list.version();
        if let Some(current) = &previous {
            let in_use = current.list.version();
            if version < in_use {
                return ReloadOutcome::Failed(format!(
                    "bundle version {version} is older than the list in use (version {in_use}); rollback refused"
                ));
            }
            if version == in_use && current.files != files {
                return ReloadOutcome::Failed(format!(
                    "bundle version {version} is already in use with other content; a changed bundle needs a new version"
                ));
            }
        }
        self.current.store(Some(Arc::new(CurrentList {
            list: Arc::new(list),
            verified_at: now,
            source: ListSource::Primary,
            files: files.clone(),
            trust,
        })));
        // The new list serves requests from here on: say so now, not after the disk write.
        self.metrics.reload("loaded");
        self.metrics.list_version.set(version as i64);
        tracing::info!(
            version,
            read_ms = millis(read),
            verify_ms = millis(started.elapsed() - read),
            "federation list loaded"
        );
        // Freeing the old list (~10^6 allocations for a large one) and persisting ~14 MB
        // happen here too, never on a request-serving thread.
        drop(previous);
        match write_last_known_good(&self.lkg_dir, &files, now) {
            Ok(()) => {
                tracing::debug!(version, dir = %self.lkg_dir.display(), "last-known-good copy written");
            }
            Err(error) => {
                tracing::error!(%error, dir = %self.lkg_dir.display(), "cannot write the last-known-good copy");
            }
        }
        ReloadOutcome::Loaded { version }
    }
}

/// Whole milliseconds, for log fields.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A job for the reload thread.
type Job = Box<dyn FnOnce() + Send>;

/// The one thread that reads, verifies, compiles, swaps in, persists and frees federation lists.
///
/// A long-lived thread rather than tokio's blocking pool (whose idle threads end after 10 s):
/// the allocator's per-thread heap survives from one reload to the next, so with
/// `MIMALLOC_PURGE_DELAY=-1` a reload builds the new list in the pages the previous reload
/// freed, instead of faulting in ~60 MB of fresh zeroed pages (docs/benchmarks.md). Lists are
/// also freed here, never on a request-serving thread.
#[derive(Debug)]
struct ReloadThread {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl ReloadThread {
    /// Starts the thread at nice value `nice` (0: the process's own priority).
    fn start(nice: i32) -> Result<ReloadThread, String> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("govmx-reload".into())
            .spawn(move || {
                if nice != 0 {
                    // Linux: the nice value of a thread id is that thread's alone.
                    let tid = rustix::thread::gettid();
                    match rustix::process::setpriority_process(Some(tid), nice) {
                        Ok(()) => tracing::info!(nice, "list reload thread priority set"),
                        Err(error) => tracing::warn!(
                            nice,
                            %error,
                            "cannot set the list reload thread's nice value (needs LimitNICE= or CAP_SYS_NICE); reloads run at the process's priority"
                        ),
                    }
                }
                // Ends when the store (the only sender) is dropped.
                for job in queue {
                    // A panicking job drops its answer channel (the caller reports a failed
                    // reload); the thread carries on with the next one.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|error| format!("cannot start the reload thread: {error}"))?;
        Ok(ReloadThread { jobs })
    }

    /// Runs `job` on the reload thread and waits (asynchronously) for its result.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(job());
        });
        self.jobs
            .send(job)
            .map_err(|_| "the reload thread has ended".to_owned())?;
        answered
            .await
            .map_err(|_| "the reload job panicked".to_owned())
    }
}

/// Replaces the last-known-good copy in `lkg_dir` with `files` (write a new directory, then
/// renames), then records `now` as its confirmation time.
fn write_last_known_good(
    lkg_dir: &Path,
    files: &BundleFiles,
    now: SystemTime,
) -> std::io::Result<()> {
    std::fs::create_dir_all(lkg_dir)?;
    let new = lkg_dir.join(LKG_BUNDLE_NEW);
    let live = lkg_dir.join(LKG_BUNDLE);
    let old = lkg_dir.join(LKG_BUNDLE_OLD);
    if new.exists() {
        std::fs::remove_dir_all(&new)?;
    }
    std::fs::create_dir_all(&new)?;
    for (name, bytes) in files {
        std::fs::write(new.join(name), bytes)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if live.exists() {
        std::fs::rename(&live, &old)?;
    }
    std::fs::rename(&new, &live)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    write_verified_at(lkg_dir, now);
    Ok(())
}

fn write_verified_at(lkg_dir: &Path, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let tmp = lkg_dir.join(".verified-at.tmp");
    let res = std::fs::create_dir_all(lkg_dir)
        .and_then(|()| std::fs::write(&tmp, format!("{secs}\n")))
        .and_then(|()| std::fs::rename(&tmp, lkg_dir.join(LKG_VERIFIED_AT)));
    if let Err(error) = res {
        tracing::warn!(%error, "cannot record the confirmation time of the last-known-good copy");
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::policy::testing::{
        TestServer, TestSigner, write_bundle, write_json_bundle, write_trust,
    };

    /// The nice values of this process's `govmx-reload` threads (field 19 of `/proc/…/stat`).
    fn reload_thread_nice_values() -> Vec<i32> {
        let mut values = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != "govmx-reload" {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // After the `(comm)` field: state is field 3, nice field 19.
            let rest = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            if let Some(nice) = rest.split_whitespace().nth(16) {
                values.push(nice.parse().unwrap());
            }
        }
        values
    }

    #[test]
    fn reload_thread_runs_at_its_configured_nice_value() {
        // Raising the nice value needs no privilege; 7 is used by no other test.
        let thread = ReloadThread::start(7).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !reload_thread_nice_values().contains(&7) {
            assert!(
                std::time::Instant::now() < deadline,
                "no govmx-reload thread at nice 7: {:?}",
                reload_thread_nice_values()
            );
            std::thread::yield_now();
        }
        drop(thread);
    }

    /// A directory source in `tmp` (bundle directory returned), trusting `signer` alone.
    fn test_config(tmp: &Path, signer: &TestSigner) -> (PathBuf, PolicyConfig) {
        let dir = tmp.join("bundle");
        let config = PolicyConfig {
            dir: Some(dir.clone()),
            url: None,
            ca_file: None,
            fetch_timeout: Duration::from_secs(1),
            refetch_on_miss: Duration::ZERO,
            trust: tmp.join("trust.yaml"),
            last_known_good_dir: tmp.join("lkg"),
            reload_interval: Duration::from_secs(1),
            max_age: Duration::from_secs(60),
            reload_nice: 0,
        };
        write_trust(&config.trust, 1, &[signer]).unwrap();
        (dir, config)
    }

    #[tokio::test]
    async fn a_large_list_is_parsed_into_memory_prepared_by_the_previous_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = TestSigner::from_seed("alice", 1);
        let (dir, config) = test_config(tmp.path(), &signer);
        let store = ListStore::new(
            &config,
            "a.example",
            Metrics::register(&mut Registry::default()),
        )
        .unwrap();
        // 20,000 servers in JSON syntax (~2.5 MB): parsed in parallel chunks.
        let servers: Vec<TestServer> = std::iter::once(TestServer::new("a.example"))
            .chain((1..20_000).map(|i| TestServer::new(&format!("s{i}.example.de"))))
            .collect();
        let prepared = || store.spare.lock().unwrap().members.capacity();
        write_json_bundle(&dir, 1, &servers, &[&signer]).unwrap();
        assert_eq!(
            store.poll(SystemTime::now()).await,
            ReloadOutcome::Loaded { version: 1 }
        );
        // The first large list had no prepared memory; the job prepared it for the next one.
        assert_eq!(prepared(), 20_000 + 2_500);
        write_json_bundle(&dir, 2, &servers, &[&signer]).unwrap();
        assert_eq!(
            store.poll(SystemTime::now()).await,
            ReloadOutcome::Loaded { version: 2 }
        );
        let status = store.status(SystemTime::now());
        let list = &status.fresh().unwrap().list;
        assert_eq!(list.member_count(), 20_000);
        assert_eq!(
            list.member_capacity(),
            20_000 + 2_500,
            "not parsed into the prepared memory"
        );
        assert_eq!(prepared(), 20_000 + 2_500, "not prepared again");
        // After an unchanged poll and a refused bundle, memory is prepared for the next reload.
        assert_eq!(
            store.poll(SystemTime::now()).await,
            ReloadOutcome::Unchanged
        );
        write_json_bundle(&dir, 3, &servers, &[&TestSigner::from_seed("mallory", 9)]).unwrap();
        assert!(matches!(
            store.poll(SystemTime::now()).await,
            ReloadOutcome::Failed(_)
        ));
        assert_eq!(prepared(), 20_000 + 2_500);
    }

    #[tokio::test]
    async fn reload_lkg_and_age() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = TestSigner::from_seed("alice", 1);
        let (dir, config) = test_config(tmp.path(), &signer);
        let metrics = Metrics::register(&mut Registry::default());
        let t0 = SystemTime::now();

        let store = ListStore::new(&config, "a.example", metrics.clone()).unwrap();
        assert!(matches!(
            store.load_initial(t0).await,
            ReloadOutcome::Failed(_)
        ));
        assert!(
            store
                .status(t0)
                .unavailable_reason()
                .unwrap()
                .starts_with("no federation list:")
        );

        write_bundle(&dir, 1, &[TestServer::new("a.example")], &[&signer]).unwrap();
        assert_eq!(store.poll(t0).await, ReloadOutcome::Loaded { version: 1 });
        assert_eq!(
            store.poll(t0 + Duration::from_secs(30)).await,
            ReloadOutcome::Unchanged
        );
        assert!(store.status(t0 + Duration::from_secs(80)).fresh().is_some());
        let stale = store.status(t0 + Duration::from_secs(91));
        assert!(
            stale
                .unavailable_reason()
                .unwrap()
                .contains("more than the maximum age of 60s")
        );

        // A bad bundle keeps the old list.
        std::fs::write(dir.join("federation.yaml"), "version: 2\nservers: []\n").unwrap();
        assert!(matches!(
            store.poll(t0 + Duration::from_secs(40)).await,
            ReloadOutcome::Failed(_)
        ));
        assert_eq!(
            store
                .status(t0 + Duration::from_secs(40))
                .fresh()
                .unwrap()
                .list
                .version(),
            1
        );

        // A new store whose primary is broken starts from the last-known-good copy with the
        // recorded confirmation time.
        let restarted = ListStore::new(&config, "a.example", metrics).unwrap();
        assert!(matches!(
            restarted.load_initial(t0 + Duration::from_secs(50)).await,
            ReloadOutcome::Failed(_)
        ));
        let status = restarted.status(t0 + Duration::from_secs(50));
        let current = status.fresh().unwrap();
        assert_eq!(
            (current.list.version(), current.source),
            (1, ListSource::LastKnownGood)
        );
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(
            secs(current.verified_at),
            secs(t0 + Duration::from_secs(30))
        );
        assert!(
            restarted
                .status(t0 + Duration::from_secs(91))
                .fresh()
                .is_none()
        );
    }
}
