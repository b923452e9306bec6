//! The metric cache: every collection produces a [`Snapshot`] per target, swapped in whole; a
//! scrape encodes the latest snapshots ([`Cache`] is a `prometheus-client` collector) and never
//! waits on a target.
//!
//! A failed collection keeps the target's last snapshot (its values stay visible) and only flips
//! `govmx_up{target}` to 0; `govmx_exporter_last_success_timestamp_seconds{target}` tells how old
//! the kept values are.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder},
    metrics::MetricType,
};

/// One value of a gauge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A plain value.
    Set(f64),
    /// Seconds between this Unix time and the scrape (ages keep growing while a target is down).
    SecondsSince(f64),
}

/// One sample: label pairs and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Label name and value pairs (bounded cardinality by construction).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

/// A gauge family of one target.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The metric name, `govmx_<component>_<what>_<unit>`.
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The samples.
    pub samples: Vec<Sample>,
}

/// Everything one collection of one target found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    families: Vec<Family>,
}

impl Snapshot {
    /// Adds a sample to the family `name` (created on first use).
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
        value: Value,
    ) -> &mut Self {
        let sample = Sample { labels, value };
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(family) => family.samples.push(sample),
            None => self.families.push(Family {
                name,
                help,
                samples: vec![sample],
            }),
        }
        self
    }

    /// Adds an unlabelled sample with a plain value.
    pub fn set(&mut self, name: &'static str, help: &'static str, value: f64) -> &mut Self {
        self.gauge(name, help, Vec::new(), Value::Set(value))
    }

    /// The families.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The plain value of the sample of `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.families.iter().find(|f| f.name == name)?;
        family.samples.iter().find_map(|s| {
            let matches = labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v));
            match (matches, s.value) {
                (true, Value::Set(v) | Value::SecondsSince(v)) => Some(v),
                _ => None,
            }
        })
    }
}

/// What the cache knows about one target.
#[derive(Clone, Debug, Default)]
struct TargetState {
    snapshot: Option<Arc<Snapshot>>,
    up: bool,
    last_success: Option<f64>,
}

/// Latest snapshots of all configured targets; encoded on every scrape. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    targets: Arc<RwLock<BTreeMap<&'static str, TargetState>>>,
}

/// Unix time in seconds.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Cache {
    /// A cache for `targets` (all down until their first successful collection).
    pub fn new(targets: &[&'static str]) -> Self {
        let map = targets
            .iter()
            .map(|t| (*t, TargetState::default()))
            .collect();
        Self {
            targets: Arc::new(RwLock::new(map)),
        }
    }

    /// Stores a successful collection of `target` at `now`.
    pub fn store(&self, target: &'static str, snapshot: Snapshot, now: SystemTime) {
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        let state = targets.entry(target).or_default();
        state.snapshot = Some(Arc::new(snapshot));
        state.up = true;
        state.last_success = Some(unix_seconds(now));
    }

    /// Marks `target` down; its last snapshot stays.
    pub fn mark_down(&self, target: &'static str) {
        let mut targets = self.targets.write().unwrap_or_else(|p| p.into_inner());
        targets.entry(target).or_default().up = false;
    }

    /// Whether `target` answered its last collection.
    pub fn is_up(&self, target: &str) -> bool {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        targets.get(target).is_some_and(|s| s.up)
    }

    /// The last snapshot of `target`, if it ever succeeded.
    pub fn snapshot(&self, target: &str) -> Option<Arc<Snapshot>> {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        targets.get(target).and_then(|s| s.snapshot.clone())
    }

    fn encode_at(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        now: f64,
    ) -> Result<(), std::fmt::Error> {
        // Copy the Arcs out so the lock is never held while encoding.
        let targets: Vec<(&'static str, TargetState)> = {
            let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
            targets.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        {
            let mut metric = encoder.encode_descriptor(
                "govmx_up",
                "Whether the exporter's last collection of the target succeeded",
                None,
                MetricType::Gauge,
            )?;
            for (target, state) in &targets {
                let labels = [("target", *target)];
                metric
                    .encode_family(&labels.as_slice())?
                    .encode_gauge(&i64::from(state.up))?;
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "govmx_exporter_last_success_timestamp_seconds",
                "Unix time of the target's last successful collection",
                None,
                MetricType::Gauge,
            )?;
            for (target, state) in &targets {
                if let Some(ts) = state.last_success {
                    let labels = [("target", *target)];
                    metric
                        .encode_family(&labels.as_slice())?
                        .encode_gauge(&ts)?;
                }
            }
        }
        for (_, state) in &targets {
            let Some(snapshot) = &state.snapshot else {
                continue;
            };
            for family in &snapshot.families {
                let mut metric =
                    encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
                for sample in &family.samples {
                    encode_sample(&mut metric, sample, now)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_sample(
    metric: &mut MetricEncoder<'_>,
    sample: &Sample,
    now: f64,
) -> Result<(), std::fmt::Error> {
    let value = match sample.value {
        Value::Set(v) => v,
        Value::SecondsSince(t) => now - t,
    };
    if sample.labels.is_empty() {
        return metric.encode_gauge(&value);
    }
    let labels: Vec<(&str, &str)> = sample
        .labels
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    metric
        .encode_family(&labels.as_slice())?
        .encode_gauge(&value)
}

impl Collector for Cache {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_at(&mut encoder, unix_seconds(SystemTime::now()))
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn failing_target_keeps_values_and_is_marked_down() {
        let cache = Cache::new(&["clamd", "synapse"]);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(cache.clone()));
        let render = |registry: &Registry| {
            let mut text = String::new();
            encode(&mut text, registry).unwrap();
            text
        };
        let text = render(&registry);
        assert!(text.contains("govmx_up{target=\"clamd\"} 0"), "{text}");
        assert!(!text.contains("last_success_timestamp_seconds{"), "{text}");

        let mut clamd = Snapshot::default();
        clamd.set("govmx_clamd_signature_db_version", "v", 27_000.0);
        let mut synapse = Snapshot::default();
        synapse.gauge(
            "govmx_synapse_users",
            "u",
            vec![("kind", "local".to_owned())],
            Value::Set(3.0),
        );
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        cache.store("clamd", clamd, t);
        cache.store("synapse", synapse, t);
        cache.mark_down("synapse");
        let text = render(&registry);
        for want in [
            "govmx_up{target=\"clamd\"} 1",
            "govmx_up{target=\"synapse\"} 0",
            "govmx_exporter_last_success_timestamp_seconds{target=\"synapse\"} 1000.0",
            "govmx_clamd_signature_db_version 27000.0",
            "govmx_synapse_users{kind=\"local\"} 3.0",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        assert_eq!(
            cache
                .snapshot("synapse")
                .unwrap()
                .value("govmx_synapse_users", &[("kind", "local")]),
            Some(3.0)
        );
    }
}
