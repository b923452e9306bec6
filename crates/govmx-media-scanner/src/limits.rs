//! Admission control shared by every scan path (upload gate, scan API, MCS API):
//!
//! - [`ScanLimiter`]: at most `limits.max_concurrent_scans` scans at once; a scan waits at most
//!   `limits.queue_timeout` for a slot, then is refused (503, never "infected");
//! - [`SpoolBudget`]: the total bytes of all spool files; a write that would exceed
//!   `limits.max_spool_bytes` fails with [`std::io::ErrorKind::StorageFull`];
//! - [`SignatureGate`]: set by the health loop when the signature DB is older than
//!   `signatures.refuse_age`; while set, every scan is refused.

use std::{
    io,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a scan was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No scan slot became free within the queue timeout.
    #[error("all {0} scan slots busy for the whole queue timeout")]
    Busy(usize),
    /// The signature DB is too old (or its age unknown and that is configured to refuse).
    #[error("{0}")]
    StaleSignatures(String),
}

/// Caps concurrent scans. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ScanLimiter {
    slots: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
}

// === impl ScanLimiter ===

impl ScanLimiter {
    /// A limiter with `max` slots; waiting for one ends after `queue_timeout`.
    pub fn new(max: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            queue_timeout,
        }
    }

    /// Waits for a slot; the scan holds it until the permit is dropped.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a full queue anyway.
            Ok(Err(_)) | Err(_) => Err(Refusal::Busy(self.max)),
        }
    }

    /// Slots currently free.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// The byte budget of all spool files together. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpoolBudget {
    used: Arc<AtomicU64>,
    max: u64,
}

/// Bytes reserved from a [`SpoolBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    used: Arc<AtomicU64>,
    bytes: u64,
}

// === impl SpoolBudget ===

impl SpoolBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(0)),
            max,
        }
    }

    /// An empty reservation to grow with [`SpoolBudget::grow`].
    pub fn reservation(&self) -> Reservation {
        Reservation {
            used: self.used.clone(),
            bytes: 0,
        }
    }

    /// Adds `more` bytes to `reservation`, or fails with `StorageFull` when the budget would be
    /// exceeded.
    pub fn grow(&self, reservation: &mut Reservation, more: u64) -> io::Result<()> {
        let res = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&n| n <= self.max)
            });
        match res {
            Ok(_) => {
                reservation.bytes += more;
                Ok(())
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("spool budget of {} bytes exhausted", self.max),
            )),
        }
    }

    /// Bytes currently reserved.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Whether scans are refused because of the signature DB, and why. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SignatureGate {
    refusal: Arc<RwLock<Option<String>>>,
}

// === impl SignatureGate ===

impl SignatureGate {
    /// Sets (or clears, with `None`) the refusal reason.
    pub fn set(&self, reason: Option<String>) {
        *self.refusal.write().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// `Err` with the reason while scans are refused.
    pub fn check(&self) -> Result<(), Refusal> {
        match &*self.refusal.read().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(Refusal::StaleSignatures(reason.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_reserves_and_releases() {
        let budget = SpoolBudget::new(10);
        let mut a = budget.reservation();
        budget.grow(&mut a, 6).unwrap();
        let mut b = budget.reservation();
        let err = budget.grow(&mut b, 5).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        budget.grow(&mut b, 4).unwrap();
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 4);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn limiter_times_out_then_frees() {
        let limiter = ScanLimiter::new(1, Duration::from_millis(50));
        let held = limiter.acquire().await.unwrap();
        assert_eq!(limiter.acquire().await.unwrap_err(), Refusal::Busy(1));
        drop(held);
        assert!(limiter.acquire().await.is_ok());
    }

    #[test]
    fn signature_gate() {
        let gate = SignatureGate::default();
        assert_eq!(gate.check(), Ok(()));
        gate.set(Some("too old".into()));
        assert_eq!(
            gate.check(),
            Err(Refusal::StaleSignatures("too old".into()))
        );
        gate.set(None);
        assert_eq!(gate.check(), Ok(()));
    }
}
