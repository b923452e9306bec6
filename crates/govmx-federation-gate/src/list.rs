//! The federation list at runtime: load, hot reload, last-known-good copy and freshness.
//!
//! [`ListStore`] holds the current list behind an [`ArcSwapOption`]: requests take a snapshot
//! (`Arc`) and never see a half-updated list; a reload swaps the pointer in one step, so a
//! reload never fails a request.
//!
//! - **Primary source**: the bundle directory. [`ListStore::poll`] reads all its regular files
//!   (dot files are skipped) into memory and hashes them together with the trust file. An
//!   unchanged hash only refreshes the confirmation time; a new hash is verified (signatures,
//!   threshold) and swapped in; a failure keeps the old list and counts `failed`.
//! - **Last-known-good**: after each successful verification the exact bytes verified are written
//!   to `<lkg>/bundle` (via `bundle.new` and renames) and the confirmation time to
//!   `<lkg>/verified-at`. At start, when the primary fails, that copy is verified again with
//!   the same trust anchors and used with its recorded confirmation time.
//! - **Freshness**: the age of the list is the time since it was last confirmed from the
//!   primary source. Past `max_age` the status is [`ListStatus::Stale`] and the gate fails
//!   closed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};

use crate::config::PolicyConfig;
use crate::metrics::Metrics;
use crate::policy::{BundleFiles, PolicyList, is_bundle_file, verify_bundle};

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
    fingerprint: [u8; 32],
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
    current: ArcSwapOption<CurrentList>,
    dir: PathBuf,
    trust: PathBuf,
    lkg_dir: PathBuf,
    own_server: String,
    max_age: Duration,
    last_error: Mutex<String>,
    metrics: Metrics,
}

impl ListStore {
    /// A store with no list yet; call [`ListStore::load_initial`].
    pub fn new(config: &PolicyConfig, own_server: &str, metrics: Metrics) -> ListStore {
        ListStore {
            current: ArcSwapOption::empty(),
            dir: config.dir.clone(),
            trust: config.trust.clone(),
            lkg_dir: config.last_known_good_dir.clone(),
            own_server: own_server.to_owned(),
            max_age: config.max_age,
            last_error: Mutex::new("no federation list loaded yet".to_owned()),
            metrics,
        }
    }

    /// Loads from the primary source, falling back to the last-known-good copy.
    pub fn load_initial(&self, now: SystemTime) -> ReloadOutcome {
        let outcome = self.poll(now);
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
    pub fn poll(&self, now: SystemTime) -> ReloadOutcome {
        let outcome = self.poll_inner(now);
        match &outcome {
            ReloadOutcome::Loaded { version } => {
                self.metrics.reload("loaded");
                self.metrics.list_version.set(*version as i64);
                tracing::info!(version, "federation list loaded");
            }
            ReloadOutcome::Unchanged => self.metrics.reload("unchanged"),
            ReloadOutcome::Failed(error) => {
                self.metrics.reload("failed");
                tracing::error!(%error, dir = %self.dir.display(), "federation list reload failed; keeping the previous list");
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.clone();
            }
        }
        outcome
    }

    fn poll_inner(&self, now: SystemTime) -> ReloadOutcome {
        let (files, trust) = match read_bundle(&self.dir).and_then(|files| {
            let trust =
                std::fs::read(&self.trust).map_err(|e| format!("{}: {e}", self.trust.display()))?;
            Ok((files, trust))
        }) {
            Ok(read) => read,
            Err(error) => return ReloadOutcome::Failed(error),
        };
        let fingerprint = fingerprint(&files, &trust);
        if let Some(current) = self.current.load_full()
            && current.fingerprint == fingerprint
            && current.source == ListSource::Primary
        {
            self.current.store(Some(Arc::new(CurrentList {
                list: current.list.clone(),
                verified_at: now,
                source: ListSource::Primary,
                fingerprint,
            })));
            self.write_verified_at(now);
            return ReloadOutcome::Unchanged;
        }
        let list = match verify_bundle(&files, &trust, &self.own_server, now) {
            Ok(list) => list,
            Err(error) => return ReloadOutcome::Failed(error.to_string()),
        };
        let version = list.version();
        self.current.store(Some(Arc::new(CurrentList {
            list: Arc::new(list),
            verified_at: now,
            source: ListSource::Primary,
            fingerprint,
        })));
        if let Err(error) = self.write_last_known_good(&files, now) {
            tracing::error!(%error, dir = %self.lkg_dir.display(), "cannot write the last-known-good copy");
        }
        ReloadOutcome::Loaded { version }
    }

    /// The list as requests see it at `now` (also updates the age and freshness gauges).
    pub fn status(&self, now: SystemTime) -> ListStatus {
        let Some(current) = self.current.load_full() else {
            self.metrics.list_fresh.set(0);
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
        self.metrics.list_age_seconds.set(age.as_secs_f64());
        if now > current.list.expires_at() {
            self.metrics.list_fresh.set(0);
            let reason = format!(
                "federation list version {} expired at {} (issued + maxAge in the signed list)",
                current.list.version(),
                crate::audit::rfc3339(current.list.expires_at())
            );
            return ListStatus::Stale { current, reason };
        }
        if age > self.max_age {
            self.metrics.list_fresh.set(0);
            let reason = format!(
                "federation list version {} was last confirmed {}s ago, more than the maximum age of {}s",
                current.list.version(),
                age.as_secs(),
                self.max_age.as_secs()
            );
            return ListStatus::Stale { current, reason };
        }
        self.metrics.list_fresh.set(1);
        ListStatus::Fresh(current)
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
        let files = read_bundle(&dir)?;
        let trust =
            std::fs::read(&self.trust).map_err(|e| format!("{}: {e}", self.trust.display()))?;
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
            fingerprint: fingerprint(&files, &trust),
        })
    }

    fn write_last_known_good(&self, files: &BundleFiles, now: SystemTime) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.lkg_dir)?;
        let new = self.lkg_dir.join(LKG_BUNDLE_NEW);
        let live = self.lkg_dir.join(LKG_BUNDLE);
        let old = self.lkg_dir.join(LKG_BUNDLE_OLD);
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
        self.write_verified_at(now);
        Ok(())
    }

    fn write_verified_at(&self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let tmp = self.lkg_dir.join(".verified-at.tmp");
        let res = std::fs::create_dir_all(&self.lkg_dir)
            .and_then(|()| std::fs::write(&tmp, format!("{secs}\n")))
            .and_then(|()| std::fs::rename(&tmp, self.lkg_dir.join(LKG_VERIFIED_AT)));
        if let Err(error) = res {
            tracing::warn!(%error, "cannot record the confirmation time of the last-known-good copy");
        }
    }
}

/// Reads the regular, non-hidden files of a bundle directory.
fn read_bundle(dir: &Path) -> Result<BundleFiles, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = BundleFiles::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            return Err(format!(
                "{}: file name is not UTF-8",
                entry.path().display()
            ));
        };
        if name.starts_with('.') || !is_bundle_file(&name) {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.insert(name, bytes);
    }
    if files.is_empty() {
        return Err(format!("{}: no bundle files", dir.display()));
    }
    Ok(files)
}

fn fingerprint(files: &BundleFiles, trust: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (name, bytes) in files {
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    hash.update((trust.len() as u64).to_be_bytes());
    hash.update(trust);
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::policy::testing::{TestServer, TestSigner, write_bundle, write_trust};

    #[test]
    fn reload_lkg_and_age() {
        let tmp = tempfile::tempdir().unwrap();
        let signer = TestSigner::from_seed("alice", 1);
        let config = PolicyConfig {
            dir: tmp.path().join("bundle"),
            trust: tmp.path().join("trust.yaml"),
            last_known_good_dir: tmp.path().join("lkg"),
            reload_interval: Duration::from_secs(1),
            max_age: Duration::from_secs(60),
        };
        write_trust(&config.trust, 1, &[&signer]).unwrap();
        let metrics = Metrics::register(&mut Registry::default());
        let t0 = SystemTime::now();

        let store = ListStore::new(&config, "a.example", metrics.clone());
        assert!(matches!(store.load_initial(t0), ReloadOutcome::Failed(_)));
        assert!(
            store
                .status(t0)
                .unavailable_reason()
                .unwrap()
                .starts_with("no federation list:")
        );

        write_bundle(&config.dir, 1, &[TestServer::new("a.example")], &[&signer]).unwrap();
        assert_eq!(store.poll(t0), ReloadOutcome::Loaded { version: 1 });
        assert_eq!(
            store.poll(t0 + Duration::from_secs(30)),
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
        std::fs::write(
            config.dir.join("federation.yaml"),
            "version: 2\nservers: []\n",
        )
        .unwrap();
        assert!(matches!(
            store.poll(t0 + Duration::from_secs(40)),
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
        let restarted = ListStore::new(&config, "a.example", metrics);
        assert!(matches!(
            restarted.load_initial(t0 + Duration::from_secs(50)),
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
