//! [`VerdictCache`]: clean/infected verdicts keyed by SHA-256 of the content **and** the clamd
//! signature DB version, so a signature update means a rescan. Errors are never cached; without a
//! known DB version (clamd running without official databases) nothing is cached.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use crate::clamd::ScanVerdict;

/// Cache key: content hash and DB version.
pub type CacheKey = ([u8; 32], u32);

/// A bounded FIFO map of verdicts.
#[derive(Debug)]
pub struct VerdictCache {
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<CacheKey, ScanVerdict>,
    order: VecDeque<CacheKey>,
}

impl VerdictCache {
    /// A cache holding at most `max_entries` (0 disables it).
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached verdict for `sha256` under `db_version`.
    pub fn get(&self, sha256: &[u8; 32], db_version: Option<u32>) -> Option<ScanVerdict> {
        let key = (*sha256, db_version?);
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(&key)
            .cloned()
    }

    /// Stores a verdict (no-op without a DB version or when disabled).
    pub fn put(&self, sha256: [u8; 32], db_version: Option<u32>, verdict: ScanVerdict) {
        let Some(db_version) = db_version else { return };
        if self.max_entries == 0 {
            return;
        }
        let key = (sha256, db_version);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.insert(key, verdict).is_none() {
            inner.order.push_back(key);
        }
        while inner.map.len() > self.max_entries {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_hash_and_db_version_bounded() {
        let cache = VerdictCache::new(2);
        let infected = ScanVerdict::Infected {
            signature: "Sig".into(),
        };
        cache.put([1; 32], Some(7), infected.clone());
        assert_eq!(cache.get(&[1; 32], Some(7)), Some(infected));
        assert_eq!(
            cache.get(&[1; 32], Some(8)),
            None,
            "new signatures mean a rescan"
        );
        assert_eq!(cache.get(&[1; 32], None), None);
        cache.put([2; 32], None, ScanVerdict::Clean);
        assert_eq!(cache.get(&[2; 32], None), None);
        cache.put([2; 32], Some(7), ScanVerdict::Clean);
        cache.put([3; 32], Some(7), ScanVerdict::Clean);
        assert_eq!(cache.get(&[1; 32], Some(7)), None, "oldest evicted");
        assert_eq!(cache.get(&[3; 32], Some(7)), Some(ScanVerdict::Clean));
        let off = VerdictCache::new(0);
        off.put([1; 32], Some(1), ScanVerdict::Clean);
        assert_eq!(off.get(&[1; 32], Some(1)), None);
    }
}
