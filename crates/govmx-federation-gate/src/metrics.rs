//! Prometheus metrics of the gate (served by the admin listener's `/metrics`).
//!
//! - `govmx_gate_decisions_total{surface,verdict,rule,class,enforced}`: every decision; `surface`
//!   is `inbound` or `connect`, `class` the peer class from the list (`unlisted`, `unknown`),
//!   `enforced="false"` in shadow mode;
//! - `govmx_gate_request_duration_seconds`: inbound request latency including Synapse;
//! - `govmx_gate_list_version`, `govmx_gate_list_age_seconds`, `govmx_gate_list_fresh` (0 means
//!   the gate fails closed);
//! - `govmx_gate_reloads_total{result}` with `result` in `loaded`, `unchanged`, `failed`;
//! - `govmx_gate_removed_pdus_total`, `govmx_gate_removed_edus_total`: relayed events filtered
//!   out of transactions;
//! - `govmx_gate_tunnels_active`: open CONNECT tunnels;
//! - `govmx_gate_audit_write_errors_total`: audit log writes that failed (each one also logs an
//!   error; the entries of a failed write are lost, so alert on any increase);
//! - `govmx_gate_audit_queued_bytes`: encoded audit entries waiting for the audit thread;
//! - `govmx_gate_key_fetches_total{result}`: strict-mode key lookups for servers without pinned
//!   keys (`fetched`, `cached`, `failed`, `backoff`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `govmx_gate_decisions_total`. Every value but the rule is a static string, so
/// counting a decision on the request path allocates at most the rule id.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `inbound` or `connect`.
    pub surface: Cow<'static, str>,
    /// `allow` or `deny`.
    pub verdict: Cow<'static, str>,
    /// The rule id.
    pub rule: Cow<'static, str>,
    /// The peer class.
    pub class: Cow<'static, str>,
    /// `false` in shadow mode.
    pub enforced: Cow<'static, str>,
}

/// Labels of `govmx_gate_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `loaded`, `unchanged` or `failed`.
    pub result: String,
}

/// Labels of `govmx_gate_key_fetches_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyFetchLabels {
    /// `fetched`, `cached`, `failed` or `backoff`.
    pub result: String,
}

/// All metric handles; clones share the underlying values.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Tells this set of families apart in the per-thread decision cache.
    id: u64,
    /// Decisions.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Inbound request latency.
    pub request_duration: Histogram,
    /// Version of the list in use (-1 when none).
    pub list_version: Gauge,
    /// Whole seconds since the list in use was confirmed from the primary source (written
    /// only when it changes: every request updates it).
    pub list_age_seconds: Gauge<f64, AtomicU64>,
    /// 1 when the list is usable, 0 when the gate fails closed.
    pub list_fresh: Gauge,
    /// Reload attempts by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// PDUs removed from transactions.
    pub removed_pdus: Counter,
    /// EDUs removed (or trimmed) in transactions.
    pub removed_edus: Counter,
    /// Open CONNECT tunnels.
    pub tunnels_active: Gauge,
    /// Failed audit log writes.
    pub audit_write_errors: Counter,
    /// Bytes of audit entries waiting for the audit thread.
    pub audit_queued_bytes: Gauge,
    /// Signing-key lookups for unpinned servers in strict mode, by result.
    pub key_fetches: Family<KeyFetchLabels, Counter>,
}

/// Most decision counters one thread keeps in its cache; see [`Metrics::decision`].
const DECISION_CACHE_ENTRIES: usize = 64;

/// A decision counter (shared with its family) and the labels it was created for.
struct CachedDecision {
    metrics: u64,
    surface: &'static str,
    allowed: bool,
    rule: Box<str>,
    class: &'static str,
    enforced: bool,
    counter: Counter,
}

thread_local! {
    static DECISION_COUNTERS: RefCell<Vec<CachedDecision>> = const { RefCell::new(Vec::new()) };
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let metrics = Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            decisions: Family::default(),
            request_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            list_version: Gauge::default(),
            list_age_seconds: Gauge::default(),
            list_fresh: Gauge::default(),
            reloads: Family::default(),
            removed_pdus: Counter::default(),
            removed_edus: Counter::default(),
            tunnels_active: Gauge::default(),
            audit_write_errors: Counter::default(),
            audit_queued_bytes: Gauge::default(),
            key_fetches: Family::default(),
        };
        metrics.list_version.set(-1);
        let r = registry;
        r.register(
            "govmx_gate_decisions",
            "Federation decisions",
            metrics.decisions.clone(),
        );
        r.register(
            "govmx_gate_request_duration_seconds",
            "Inbound request latency including the upstream",
            metrics.request_duration.clone(),
        );
        r.register(
            "govmx_gate_list_version",
            "Version of the federation list in use",
            metrics.list_version.clone(),
        );
        r.register(
            "govmx_gate_list_age_seconds",
            "Seconds since the list in use was last confirmed from the primary source",
            metrics.list_age_seconds.clone(),
        );
        r.register(
            "govmx_gate_list_fresh",
            "1 when the federation list is usable, 0 when the gate fails closed",
            metrics.list_fresh.clone(),
        );
        r.register(
            "govmx_gate_reloads",
            "Federation list reloads by result",
            metrics.reloads.clone(),
        );
        r.register(
            "govmx_gate_removed_pdus",
            "Relayed PDUs removed from transactions",
            metrics.removed_pdus.clone(),
        );
        r.register(
            "govmx_gate_removed_edus",
            "EDUs removed from transactions",
            metrics.removed_edus.clone(),
        );
        r.register(
            "govmx_gate_tunnels_active",
            "Open CONNECT tunnels",
            metrics.tunnels_active.clone(),
        );
        r.register(
            "govmx_gate_audit_write_errors",
            "Audit log writes that failed (their entries are lost)",
            metrics.audit_write_errors.clone(),
        );
        r.register(
            "govmx_gate_audit_queued_bytes",
            "Bytes of audit entries waiting for the audit thread",
            metrics.audit_queued_bytes.clone(),
        );
        r.register(
            "govmx_gate_key_fetches",
            "Signing-key lookups for servers without pinned keys (strict mode), by result",
            metrics.key_fetches.clone(),
        );
        metrics
    }

    /// Counts a signing-key lookup.
    pub fn key_fetch(&self, result: &str) {
        self.key_fetches
            .get_or_create(&KeyFetchLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a decision.
    ///
    /// Every forwarded request counts one, so the counters a thread has used are kept in a
    /// small per-thread cache: a short scan comparing a few words and the rule, instead of
    /// allocating the rule label, hashing five labels and taking the family's lock (shared by
    /// all workers) on every request.
    pub fn decision(
        &self,
        surface: &'static str,
        allowed: bool,
        rule: &str,
        class: &'static str,
        enforced: bool,
    ) {
        let cached = DECISION_COUNTERS.with_borrow(|cache| {
            cache
                .iter()
                .find(|c| {
                    c.metrics == self.id
                        && c.allowed == allowed
                        && c.enforced == enforced
                        && c.surface == surface
                        && c.class == class
                        && *c.rule == *rule
                })
                .map(|c| c.counter.inc())
                .is_some()
        });
        if cached {
            return;
        }
        let counter = self
            .decisions
            .get_or_create(&DecisionLabels {
                surface: Cow::Borrowed(surface),
                verdict: Cow::Borrowed(if allowed { "allow" } else { "deny" }),
                rule: Cow::Owned(rule.to_owned()),
                class: Cow::Borrowed(class),
                enforced: Cow::Borrowed(if enforced { "true" } else { "false" }),
            })
            .clone();
        counter.inc();
        DECISION_COUNTERS.with_borrow_mut(|cache| {
            // Rules come from the policy documents, so the set is small; the bound only keeps
            // a pathological policy from making the scan long.
            if cache.len() < DECISION_CACHE_ENTRIES {
                cache.push(CachedDecision {
                    metrics: self.id,
                    surface,
                    allowed,
                    rule: rule.into(),
                    class,
                    enforced,
                    counter,
                });
            }
        });
    }

    /// Counts a reload attempt.
    pub fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(verdict: &'static str, rule: &str) -> DecisionLabels {
        DecisionLabels {
            surface: Cow::Borrowed("inbound"),
            verdict: Cow::Borrowed(verdict),
            rule: Cow::Owned(rule.to_owned()),
            class: Cow::Borrowed("agency"),
            enforced: Cow::Borrowed("true"),
        }
    }

    #[test]
    fn cached_decisions_count_in_their_own_family() {
        let (mut first, mut second) = (Registry::default(), Registry::default());
        let a = Metrics::register(&mut first);
        let b = Metrics::register(&mut second);
        for _ in 0..3 {
            a.decision("inbound", true, "federation.listed", "agency", true);
        }
        b.decision("inbound", true, "federation.listed", "agency", true);
        a.decision("inbound", false, "federation.listed", "agency", true);
        a.decision("inbound", true, "federation.other", "agency", true);
        let count =
            |m: &Metrics, verdict, rule| m.decisions.get_or_create(&labels(verdict, rule)).get();
        assert_eq!(count(&a, "allow", "federation.listed"), 3);
        assert_eq!(count(&b, "allow", "federation.listed"), 1);
        assert_eq!(count(&a, "deny", "federation.listed"), 1);
        assert_eq!(count(&a, "allow", "federation.other"), 1);
        assert_eq!(count(&b, "allow", "federation.other"), 0);
        // A clone shares the families, and so the cached counters.
        a.clone()
            .decision("inbound", true, "federation.listed", "agency", true);
        assert_eq!(count(&a, "allow", "federation.listed"), 4);
    }
}
