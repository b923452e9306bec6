//! Strict mode for listed servers whose signing keys are not pinned: fetch the server's keys
//! once from the server itself, verify them, and cache them.
//!
//! `GET https://<endpoint>/_matrix/key/v2/server` where `<endpoint>` is the server's first
//! `delegatedHosts` entry from the list (or its server name, port 8448 by default). The TLS
//! certificate must chain to the configured federation CA (the network's own root), so the
//! answer cannot come from anyone but the listed server's operator. The response must:
//! - name the server (`server_name`),
//! - be signed by at least one of the `verify_keys` it lists (canonical JSON without
//!   `signatures` and `unsigned`),
//! - be valid now (`valid_until_ts` in the future).
//!
//! Keys are cached until `valid_until_ts`, at most `max_cache`. A key id not in the cache
//! triggers one refetch per server per `min_refetch` (a peer rotating its key is picked up; a
//! forger spraying random key ids cannot make the gate hammer the peer). Concurrent requests
//! for the same server share one fetch. Pinned keys, when present, always win: this path is
//! only used for servers the list pins no key for.
//!
//! Well-known and SRV delegation are not followed: in a closed network the list names the
//! endpoints (`delegatedHosts`), and public DNS is exactly what the gate does not trust.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::source::get_capped;

/// Why no key could be had for a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFetchError {
    /// The fetch failed (connection, TLS, status, size, timeout).
    #[error("fetching the signing keys of {server} from {url} failed: {reason}")]
    Fetch {
        /// The server.
        server: String,
        /// What was fetched.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer is not a valid, self-signed, current key response for the server.
    #[error("the key response of {server} is not acceptable: {reason}")]
    Invalid {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The keys were fetched but do not contain the key id.
    #[error("{server} does not publish key {key_id}")]
    UnknownKey {
        /// The server.
        server: String,
        /// The key id the request used.
        key_id: String,
    },
    /// A fetch for the server failed recently; no new attempt before the interval passed.
    #[error("signing keys of {server} unavailable: the fetch {}s ago failed ({last_error}); no retry yet", ago.as_secs())]
    Backoff {
        /// The server.
        server: String,
        /// Time since the failed attempt.
        ago: Duration,
        /// What went wrong then.
        last_error: String,
    },
}

/// Settings of the fetcher.
#[derive(Debug, Clone)]
pub struct KeyFetchSettings {
    /// Time for one fetch (connect + TLS + answer).
    pub timeout: Duration,
    /// Minimum time between two fetches for the same server.
    pub min_refetch: Duration,
    /// Longest time fetched keys are trusted, whatever `valid_until_ts` says.
    pub max_cache: Duration,
}

#[derive(Debug)]
struct ServerKeys {
    keys: HashMap<String, VerifyingKey>,
    expires: SystemTime,
}

#[derive(Debug, Default)]
struct Entry {
    keys: Option<ServerKeys>,
    last_attempt: Option<Instant>,
    last_error: Option<KeyFetchError>,
}

/// The key fetcher and its cache.
#[derive(Debug)]
pub struct KeyFetcher {
    client: reqwest::Client,
    settings: KeyFetchSettings,
    // One async mutex per server: concurrent requests share one fetch.
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    metrics: Metrics,
}

/// Largest key response accepted.
const MAX_RESPONSE: usize = 64 * 1024;

impl KeyFetcher {
    /// A fetcher trusting only the CA certificates in `ca_pem` (PEM bundle).
    pub fn new(
        ca_pem: &[u8],
        settings: KeyFetchSettings,
        metrics: Metrics,
    ) -> Result<KeyFetcher, String> {
        let certs =
            reqwest::Certificate::from_pem_bundle(ca_pem).map_err(|e| format!("CA bundle: {e}"))?;
        if certs.is_empty() {
            return Err("CA bundle holds no certificate".to_owned());
        }
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .user_agent(concat!("govmx-federation-gate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTPS client: {e}"))?;
        Ok(KeyFetcher {
            client,
            settings,
            entries: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Reads the CA bundle from `path` and builds the fetcher.
    pub fn from_ca_file(
        path: &Path,
        settings: KeyFetchSettings,
        metrics: Metrics,
    ) -> Result<KeyFetcher, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        KeyFetcher::new(&pem, settings, metrics).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The verifying key `key_id` of `server`, served from `endpoint` (`host[:port]`).
    pub async fn key(
        &self,
        server: &str,
        endpoint: &str,
        key_id: &str,
        now: SystemTime,
    ) -> Result<VerifyingKey, KeyFetchError> {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.entry(server.to_owned()).or_default().clone()
        };
        let mut entry = slot.lock().await;
        if let Some(keys) = &entry.keys
            && keys.expires > now
            && let Some(key) = keys.keys.get(key_id)
        {
            self.metrics.key_fetch("cached");
            return Ok(*key);
        }
        if let Some(last) = entry.last_attempt
            && last.elapsed() < self.settings.min_refetch
        {
            self.metrics.key_fetch("backoff");
            return Err(match &entry.last_error {
                Some(error) => KeyFetchError::Backoff {
                    server: server.to_owned(),
                    ago: last.elapsed(),
                    last_error: error.to_string(),
                },
                None => KeyFetchError::UnknownKey {
                    server: server.to_owned(),
                    key_id: key_id.to_owned(),
                },
            });
        }
        entry.last_attempt = Some(Instant::now());
        match self.fetch(server, endpoint, now).await {
            Ok(keys) => {
                self.metrics.key_fetch("fetched");
                tracing::info!(
                    server,
                    endpoint,
                    keys = ?keys.keys.keys().collect::<Vec<_>>(),
                    "fetched and verified signing keys of a listed server"
                );
                let found = keys.keys.get(key_id).copied();
                entry.keys = Some(keys);
                entry.last_error = None;
                found.ok_or_else(|| KeyFetchError::UnknownKey {
                    server: server.to_owned(),
                    key_id: key_id.to_owned(),
                })
            }
            Err(error) => {
                self.metrics.key_fetch("failed");
                tracing::warn!(server, endpoint, %error, "signing key fetch failed");
                entry.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch(
        &self,
        server: &str,
        endpoint: &str,
        now: SystemTime,
    ) -> Result<ServerKeys, KeyFetchError> {
        let url = format!("https://{endpoint}/_matrix/key/v2/server");
        let body = get_capped(&self.client, &url, MAX_RESPONSE)
            .await
            .map_err(|reason| KeyFetchError::Fetch {
                server: server.to_owned(),
                url: url.clone(),
                reason,
            })?;
        let max_expiry = now + self.settings.max_cache;
        parse_key_response(server, &body, now, max_expiry)
    }
}

#[derive(Deserialize)]
struct KeyResponse {
    server_name: String,
    verify_keys: HashMap<String, VerifyKey>,
    valid_until_ts: u64,
    #[serde(default)]
    signatures: HashMap<String, HashMap<String, String>>,
}

#[derive(Deserialize)]
struct VerifyKey {
    key: String,
}

/// Checks a `/_matrix/key/v2/server` answer: it names `server`, is valid at `now`, and is
/// signed by one of the keys it lists. Pure.
fn parse_key_response(
    server: &str,
    body: &[u8],
    now: SystemTime,
    max_expiry: SystemTime,
) -> Result<ServerKeys, KeyFetchError> {
    let invalid = |reason: String| KeyFetchError::Invalid {
        server: server.to_owned(),
        reason,
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let response: KeyResponse = serde_json::from_value(value.clone())
        .map_err(|e| invalid(format!("not a key response: {e}")))?;
    if response.server_name != server {
        return Err(invalid(format!(
            "it names server {:?}",
            response.server_name
        )));
    }
    let valid_until = UNIX_EPOCH + Duration::from_millis(response.valid_until_ts);
    if valid_until <= now {
        return Err(invalid("its valid_until_ts has passed".to_owned()));
    }
    let mut keys = HashMap::new();
    for (key_id, key) in &response.verify_keys {
        if !key_id.starts_with("ed25519:") {
            continue;
        }
        let bytes = STANDARD_NO_PAD
            .decode(&key.key)
            .or_else(|_| STANDARD.decode(&key.key))
            .map_err(|_| invalid(format!("key {key_id} is not base64")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid(format!("key {key_id} is not 32 bytes")))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| invalid(format!("key {key_id} is not an Ed25519 point")))?;
        keys.insert(key_id.clone(), key);
    }
    if keys.is_empty() {
        return Err(invalid("it lists no ed25519 verify key".to_owned()));
    }
    let mut unsigned = value;
    if let Some(object) = unsigned.as_object_mut() {
        object.remove("signatures");
        object.remove("unsigned");
    }
    let canonical = ruma_common::canonical_json::to_canonical_value(unsigned)
        .map_err(|e| invalid(format!("not canonical JSON: {e}")))?
        .to_string();
    let self_signed = response.signatures.get(server).is_some_and(|sigs| {
        sigs.iter().any(|(key_id, sig)| {
            let Some(key) = keys.get(key_id) else {
                return false;
            };
            let Some(sig) = STANDARD_NO_PAD
                .decode(sig)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
            else {
                return false;
            };
            key.verify_strict(canonical.as_bytes(), &Signature::from_bytes(&sig))
                .is_ok()
        })
    });
    if !self_signed {
        return Err(invalid(
            "it is not signed by any of the keys it lists".to_owned(),
        ));
    }
    Ok(ServerKeys {
        keys,
        expires: valid_until.min(max_expiry),
    })
}

/// Test support: a correctly self-signed key response.
pub mod testing {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    /// The `/_matrix/key/v2/server` answer `server` gives for `key` (id `key_id`), valid until
    /// `valid_until`.
    pub fn key_response(
        server: &str,
        key_id: &str,
        key: &SigningKey,
        valid_until: SystemTime,
    ) -> Value {
        let ts = valid_until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut value = serde_json::json!({
            "server_name": server,
            "verify_keys": {key_id: {"key": STANDARD_NO_PAD.encode(key.verifying_key().as_bytes())}},
            "old_verify_keys": {},
            "valid_until_ts": ts,
        });
        let canonical = ruma_common::canonical_json::to_canonical_value(value.clone())
            .map(|v| v.to_string())
            .unwrap_or_default();
        let sig = STANDARD_NO_PAD.encode(key.sign(canonical.as_bytes()).to_bytes());
        value["signatures"] = serde_json::json!({server: {key_id: sig}});
        value
    }
}

#[cfg(test)]
mod tests {
    use super::testing::key_response;
    use super::*;
    use ed25519_dalek::SigningKey;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn accepts_self_signed_current_keys_and_caps_the_cache() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let body = key_response("peer.example", "ed25519:a", &key, at(10_000)).to_string();
        let keys =
            parse_key_response("peer.example", body.as_bytes(), at(1_000), at(5_000)).unwrap();
        assert_eq!(keys.keys["ed25519:a"], key.verifying_key());
        assert_eq!(keys.expires, at(5_000), "capped by max_cache");
        let keys =
            parse_key_response("peer.example", body.as_bytes(), at(1_000), at(50_000)).unwrap();
        assert_eq!(keys.expires, at(10_000), "valid_until_ts");
    }

    #[test]
    fn refuses_wrong_server_expired_unsigned_and_tampered_answers() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let good = key_response("peer.example", "ed25519:a", &key, at(10_000));
        let reason = |value: &Value, now: u64| match parse_key_response(
            "peer.example",
            value.to_string().as_bytes(),
            at(now),
            at(u64::MAX / 4_000),
        ) {
            Err(KeyFetchError::Invalid { reason, .. }) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let other = key_response("other.example", "ed25519:a", &key, at(10_000));
        assert!(reason(&other, 1).contains("names server"));
        assert!(reason(&good, 10_000).contains("valid_until_ts has passed"));
        let mut unsigned = good.clone();
        unsigned["signatures"] = serde_json::json!({});
        assert!(reason(&unsigned, 1).contains("not signed"));
        let mut tampered = good.clone();
        tampered["valid_until_ts"] = Value::from(99_999_000u64);
        assert!(reason(&tampered, 1).contains("not signed"));
        // Signed by a key it does not list (a forger's key).
        let forger = SigningKey::from_bytes(&[8; 32]);
        let mut swapped = key_response("peer.example", "ed25519:a", &forger, at(10_000));
        swapped["verify_keys"] = good["verify_keys"].clone();
        assert!(reason(&swapped, 1).contains("not signed"));
        let err = parse_key_response("peer.example", b"{", at(1), at(2)).unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
}
