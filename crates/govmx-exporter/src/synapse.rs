//! Synapse admin API facts: users, rooms, federation destinations (failure and backoff state),
//! local media counts and bytes, event reports, server version.
//!
//! The calls of one collection run concurrently; paginated lists stop after `max_pages` pages.
//! Destination names appear as a label only for failing destinations and only up to
//! `max_destination_series` of them (oldest failures first), so cardinality stays bounded.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::{
    CollectError,
    cache::{Snapshot, Value, unix_seconds},
    config::SynapseConfig,
};

/// A Synapse admin API client.
#[derive(Clone, Debug)]
pub struct SynapseTarget {
    http: reqwest::Client,
    base: String,
    token: String,
    page_size: u32,
    max_pages: u32,
    max_destination_series: usize,
}

/// One row of `/_synapse/admin/v1/federation/destinations`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Destination {
    /// The remote server name.
    pub destination: String,
    /// Last retry attempt, ms since the epoch (0 or null when none).
    #[serde(default)]
    pub retry_last_ts: Option<i64>,
    /// Current backoff interval in ms (0 or null when healthy).
    #[serde(default)]
    pub retry_interval: Option<i64>,
    /// When the destination started failing, ms since the epoch; null when healthy.
    #[serde(default)]
    pub failure_ts: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct DestinationPage {
    #[serde(default)]
    destinations: Vec<Destination>,
    #[serde(default)]
    next_token: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct MediaUser {
    #[serde(default)]
    media_count: u64,
    #[serde(default)]
    media_length: u64,
}

#[derive(Debug, Deserialize)]
struct MediaPage {
    #[serde(default)]
    users: Vec<MediaUser>,
    #[serde(default)]
    next_token: Option<serde_json::Value>,
    #[serde(default)]
    total: Option<u64>,
}

/// The summed media statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaTotals {
    /// Local users who uploaded media.
    pub users: u64,
    /// Local media files.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Everything one collection found.
#[derive(Clone, Debug, PartialEq)]
pub struct SynapseFacts {
    /// Server version string.
    pub version: Option<String>,
    /// Local, non-deactivated, non-guest users.
    pub users: u64,
    /// Rooms known to the server.
    pub rooms: u64,
    /// Event reports filed by users.
    pub event_reports: u64,
    /// Local media.
    pub media: MediaTotals,
    /// Federation destinations.
    pub destinations: Vec<Destination>,
    /// Whether a list was cut at `max_pages`.
    pub truncated: bool,
}

fn token_to_from(token: Option<serde_json::Value>) -> Option<String> {
    match token? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl SynapseTarget {
    /// A client for `config` with the admin `token` (already read from its file).
    pub fn new(config: &SynapseConfig, token: String) -> Result<Self, CollectError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| CollectError::Http {
                what: "building the HTTP client".to_owned(),
                source: e,
            })?;
        Ok(Self {
            http,
            base: config.url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            page_size: config.page_size,
            max_pages: config.max_pages,
            max_destination_series: config.max_destination_series,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CollectError> {
        let what = format!("GET {path}");
        let response = self
            .http
            .get(format!("{}{path}{}", self.base, query_string(query)))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| CollectError::Http {
                what: what.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(CollectError::Status {
                what,
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| CollectError::Http {
                what: what.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| CollectError::Malformed(format!("{what}: {e}")))
    }

    async fn total(
        &self,
        path: &str,
        field: &str,
        extra: &[(&str, &str)],
    ) -> Result<u64, CollectError> {
        let mut query = vec![("limit", "1".to_owned())];
        query.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let value: serde_json::Value = self.get(path, &query).await?;
        value[field]
            .as_u64()
            .ok_or_else(|| CollectError::Malformed(format!("GET {path}: no integer `{field}`")))
    }

    async fn destinations(&self) -> Result<(Vec<Destination>, bool), CollectError> {
        let mut all = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..self.max_pages {
            let mut query = vec![("limit", self.page_size.to_string())];
            if let Some(from) = &from {
                query.push(("from", from.clone()));
            }
            let page: DestinationPage = self
                .get("/_synapse/admin/v1/federation/destinations", &query)
                .await?;
            all.extend(page.destinations);
            from = token_to_from(page.next_token);
            if from.is_none() {
                return Ok((all, false));
            }
        }
        Ok((all, true))
    }

    async fn media(&self) -> Result<(MediaTotals, bool), CollectError> {
        let mut totals = MediaTotals::default();
        let mut from: Option<String> = None;
        for _ in 0..self.max_pages {
            let mut query = vec![("limit", self.page_size.to_string())];
            if let Some(from) = &from {
                query.push(("from", from.clone()));
            }
            let page: MediaPage = self
                .get("/_synapse/admin/v1/statistics/users/media", &query)
                .await?;
            if let Some(total) = page.total {
                totals.users = total;
            }
            for user in page.users {
                totals.count = totals.count.saturating_add(user.media_count);
                totals.bytes = totals.bytes.saturating_add(user.media_length);
            }
            from = token_to_from(page.next_token);
            if from.is_none() {
                return Ok((totals, false));
            }
        }
        Ok((totals, true))
    }

    /// One collection: all calls concurrently. The caller bounds the time.
    pub async fn collect(&self) -> Result<SynapseFacts, CollectError> {
        let version = async {
            let v: serde_json::Value = self.get("/_synapse/admin/v1/server_version", &[]).await?;
            Ok::<_, CollectError>(v["server_version"].as_str().map(str::to_owned))
        };
        let (version, users, rooms, reports, (media, media_cut), (destinations, dest_cut)) = tokio::try_join!(
            version,
            self.total("/_synapse/admin/v2/users", "total", &[("guests", "false")]),
            self.total("/_synapse/admin/v1/rooms", "total_rooms", &[]),
            self.total("/_synapse/admin/v1/event_reports", "total", &[]),
            self.media(),
            self.destinations(),
        )?;
        Ok(SynapseFacts {
            version,
            users,
            rooms,
            event_reports: reports,
            media,
            destinations,
            truncated: media_cut || dest_cut,
        })
    }

    /// The facts as a snapshot; `now` decides which destinations are in backoff.
    pub fn snapshot(&self, facts: &SynapseFacts, now: SystemTime) -> Snapshot {
        snapshot(facts, now, self.max_destination_series)
    }
}

/// `?k=v&…` with values percent-encoded (anything but unreserved characters).
fn query_string(query: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Whether a destination is failing (Synapse recorded a failure and has not cleared it).
fn failing(d: &Destination) -> bool {
    d.failure_ts.is_some_and(|t| t > 0)
}

/// Whether Synapse will not retry `d` before `now_ms`.
fn in_backoff(d: &Destination, now_ms: i64) -> bool {
    match (d.retry_last_ts, d.retry_interval) {
        (Some(last), Some(interval)) if interval > 0 => last.saturating_add(interval) > now_ms,
        _ => false,
    }
}

/// Builds the snapshot of `facts`.
pub fn snapshot(facts: &SynapseFacts, now: SystemTime, max_destination_series: usize) -> Snapshot {
    let mut snap = Snapshot::default();
    if let Some(version) = &facts.version {
        // Bounded: one value per Synapse release; the label keeps only the version token.
        let version: String = version
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .chars()
            .take(40)
            .collect();
        snap.gauge(
            "govmx_synapse_build_info",
            "Synapse server version (always 1)",
            vec![("version", version)],
            Value::Set(1.0),
        );
    }
    snap.set(
        "govmx_synapse_users",
        "Local users (not deactivated, no guests), from the admin API",
        facts.users as f64,
    );
    snap.set(
        "govmx_synapse_rooms",
        "Rooms known to the homeserver, from the admin API",
        facts.rooms as f64,
    );
    snap.set(
        "govmx_synapse_event_reports",
        "Event reports filed by users (all time)",
        facts.event_reports as f64,
    );
    snap.set(
        "govmx_synapse_local_media",
        "Local media files (admin media statistics)",
        facts.media.count as f64,
    );
    snap.set(
        "govmx_synapse_local_media_bytes",
        "Bytes of local media (admin media statistics)",
        facts.media.bytes as f64,
    );
    snap.set(
        "govmx_synapse_media_uploaders",
        "Local users who uploaded media",
        facts.media.users as f64,
    );
    snap.set(
        "govmx_synapse_admin_lists_truncated",
        "1 when a paginated admin list was cut at max_pages in the last collection",
        f64::from(u8::from(facts.truncated)),
    );
    let now_ms = (unix_seconds(now) * 1000.0) as i64;
    let failing_list: Vec<&Destination> = {
        let mut list: Vec<&Destination> =
            facts.destinations.iter().filter(|d| failing(d)).collect();
        list.sort_by_key(|d| (d.failure_ts, d.destination.clone()));
        list
    };
    let total = facts.destinations.len();
    let backoff = facts
        .destinations
        .iter()
        .filter(|d| in_backoff(d, now_ms))
        .count();
    for (state, count) in [
        ("healthy", total - failing_list.len()),
        ("failing", failing_list.len()),
    ] {
        snap.gauge(
            "govmx_synapse_federation_destinations",
            "Federation destinations known to Synapse by state",
            vec![("state", state.to_owned())],
            Value::Set(count as f64),
        );
    }
    snap.set(
        "govmx_synapse_federation_destinations_backoff",
        "Federation destinations Synapse will not retry yet (in backoff)",
        backoff as f64,
    );
    if let Some(oldest) = failing_list.first().and_then(|d| d.failure_ts) {
        snap.set(
            "govmx_synapse_federation_oldest_failure_timestamp_seconds",
            "Start of the oldest ongoing federation failure (absent when none fails)",
            oldest as f64 / 1000.0,
        );
    }
    for d in failing_list.iter().take(max_destination_series) {
        if let Some(ts) = d.failure_ts {
            snap.gauge(
                "govmx_synapse_federation_destination_failing_since_timestamp_seconds",
                "Since when a failing federation destination fails (oldest max_destination_series)",
                vec![("destination", d.destination.chars().take(255).collect())],
                Value::Set(ts as f64 / 1000.0),
            );
        }
    }
    snap
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn destinations_states_backoff_and_bounded_series() {
        let d = |name: &str, last: Option<i64>, interval: Option<i64>, failure: Option<i64>| {
            Destination {
                destination: name.to_owned(),
                retry_last_ts: last,
                retry_interval: interval,
                failure_ts: failure,
            }
        };
        let facts = SynapseFacts {
            version: Some("1.140.0 (b=abc)".to_owned()),
            users: 3,
            rooms: 2,
            event_reports: 1,
            media: MediaTotals {
                users: 1,
                count: 4,
                bytes: 1000,
            },
            destinations: vec![
                d("ok.example", Some(0), Some(0), None),
                d("late.example", Some(900_000), Some(600_000), Some(800_000)),
                d("early.example", Some(100_000), Some(60_000), Some(50_000)),
            ],
            truncated: false,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let snap = snapshot(&facts, now, 1);
        let v = |name, labels: &[(&str, &str)]| snap.value(name, labels);
        assert_eq!(v("govmx_synapse_users", &[]), Some(3.0));
        assert_eq!(
            v("govmx_synapse_build_info", &[("version", "1.140.0")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "govmx_synapse_federation_destinations",
                &[("state", "failing")]
            ),
            Some(2.0)
        );
        assert_eq!(
            v(
                "govmx_synapse_federation_destinations",
                &[("state", "healthy")]
            ),
            Some(1.0)
        );
        // late: 900 s + 600 s > 1000 s → backoff; early: 160 s < 1000 s → retry due.
        assert_eq!(
            v("govmx_synapse_federation_destinations_backoff", &[]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "govmx_synapse_federation_oldest_failure_timestamp_seconds",
                &[]
            ),
            Some(50.0)
        );
        let series = &snap
            .families()
            .iter()
            .find(|f| {
                f.name == "govmx_synapse_federation_destination_failing_since_timestamp_seconds"
            })
            .unwrap()
            .samples;
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].labels,
            vec![("destination", "early.example".to_owned())]
        );
    }

    #[test]
    fn pagination_tokens() {
        assert_eq!(
            token_to_from(Some(serde_json::json!(100))),
            Some("100".into())
        );
        assert_eq!(
            token_to_from(Some(serde_json::json!("s5"))),
            Some("s5".into())
        );
        assert_eq!(token_to_from(Some(serde_json::json!(""))), None);
        assert_eq!(token_to_from(Some(serde_json::Value::Null)), None);
        assert_eq!(token_to_from(None), None);
        assert_eq!(
            query_string(&[("limit", "5".into()), ("from", "a b&c".into())]),
            "?limit=5&from=a%20b%26c"
        );
        assert_eq!(query_string(&[]), "");
    }
}
