//! Prometheus metrics of the media scanner, registered in the admin listener's registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label of outcome counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// `verdict` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// `clean`, `infected`, `blocked_mime`, `too_large`, `scanner_unavailable`, `unscanned`.
    pub verdict: &'static str,
}

/// `address` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabel {
    /// clamd `host:port`.
    pub address: String,
}

/// All scanner metrics (cheap clones sharing the same series).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `govmx_media_scans_total{verdict}`.
    pub scans: Family<VerdictLabel, Counter>,
    /// `govmx_media_scanned_bytes_total`.
    pub bytes: Counter,
    /// `govmx_media_scan_duration_seconds`: body start to verdict.
    pub duration: Histogram,
    /// `govmx_media_clamd_up{address}`.
    pub clamd_up: Family<AddressLabel, Gauge>,
    /// `govmx_media_clamd_db_age_seconds{address}`.
    pub db_age: Family<AddressLabel, Gauge>,
    /// `govmx_media_verdict_cache_hits_total`.
    pub cache_hits: Counter,
    /// `govmx_media_clamd_db_stale{address}`: 1 when older than `signatures.warn_age`.
    pub db_stale: Family<AddressLabel, Gauge>,
    /// `govmx_media_scans_in_progress`: scan slots in use.
    pub in_progress: Gauge,
    /// `govmx_media_scan_refusals_total`: scans refused for want of a slot.
    pub refusals: Counter,
    /// `govmx_media_mcs_inflight_joins_total`: MCS requests that joined an identical running one.
    pub inflight_joins: Counter,
    /// `govmx_media_quarantines_total{result}`: quarantine requests to Synapse's admin API for
    /// infected media found through the MCS API (`result` is `ok` or `failed`).
    pub quarantines: Family<ResultLabel, Counter>,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            scans: Family::default(),
            bytes: Counter::default(),
            duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            clamd_up: Family::default(),
            db_age: Family::default(),
            cache_hits: Counter::default(),
            db_stale: Family::default(),
            refusals: Counter::default(),
            in_progress: Gauge::default(),
            inflight_joins: Counter::default(),
            quarantines: Family::default(),
        };
        registry.register(
            "govmx_media_scans",
            "Scan decisions by verdict",
            m.scans.clone(),
        );
        registry.register(
            "govmx_media_scanned_bytes",
            "Upload bytes scanned",
            m.bytes.clone(),
        );
        registry.register(
            "govmx_media_scan_duration_seconds",
            "Time from first body byte to verdict",
            m.duration.clone(),
        );
        registry.register(
            "govmx_media_clamd_up",
            "Whether clamd answered the last PING/VERSION probe",
            m.clamd_up.clone(),
        );
        registry.register(
            "govmx_media_clamd_db_age_seconds",
            "Age of the clamd signature database",
            m.db_age.clone(),
        );
        registry.register(
            "govmx_media_verdict_cache_hits",
            "Verdicts served from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "govmx_media_clamd_db_stale",
            "Whether the clamd signature database is older than signatures.warn_age",
            m.db_stale.clone(),
        );
        registry.register(
            "govmx_media_scans_in_progress",
            "Scan slots in use (limits.max_concurrent_scans)",
            m.in_progress.clone(),
        );
        registry.register(
            "govmx_media_scan_refusals",
            "Scans refused because every scan slot stayed busy for the queue timeout",
            m.refusals.clone(),
        );
        registry.register(
            "govmx_media_mcs_inflight_joins",
            "MCS requests served by joining an identical request already running",
            m.inflight_joins.clone(),
        );
        registry.register(
            "govmx_media_quarantines",
            "Infected media quarantined through Synapse's admin API, by result",
            m.quarantines.clone(),
        );
        m
    }

    /// Counts one decision.
    pub fn verdict(&self, verdict: &'static str) {
        self.scans.get_or_create(&VerdictLabel { verdict }).inc();
    }
}
