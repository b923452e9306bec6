//! The exporter's configuration: one YAML document, parsed strictly (`deny_unknown_fields`) and
//! validated once, before any port is bound. Every target is optional; a target that is not
//! configured is not collected and has no `govmx_up` series.
//!
//! Durations are strings (`"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"`). See `examples/config.yaml`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Admin listener: `/healthz`, `/readyz`, `/metrics`. Keep it off the public network; the
    /// scraper reads `/metrics` here, served from the cache (a scrape never waits on a target).
    pub admin_listen: SocketAddr,
    /// Default collection interval of every target (each target may override it).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long in-flight scrapes may run after SIGTERM.
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
    /// Synapse admin API (users, rooms, federation destinations, media, event reports).
    #[serde(default)]
    pub synapse: Option<SynapseConfig>,
    /// clamd `VERSION` (engine, signature database version and age).
    #[serde(default)]
    pub clamd: Option<ClamdConfig>,
    /// The agency CA's issued certificates and CRL, read from files.
    #[serde(default)]
    pub ca: Option<CaConfig>,
    /// The signed policy bundle (version, age, signers), verified against pinned trust anchors.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// OpenTelemetry traces over OTLP/HTTP; absent means no traces (see
    /// [`govmx_service::TracingConfig`]).
    #[serde(default)]
    pub tracing: Option<govmx_service::TracingConfig>,
}

/// Synapse admin API settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynapseConfig {
    /// Base URL of Synapse's client listener that serves `/_synapse/admin`, e.g.
    /// `http://127.0.0.1:8008` (no path, query, fragment or credentials).
    pub url: String,
    /// Access token of a server admin, inline. Prefer `access_token_file`; set exactly one.
    #[serde(default)]
    pub access_token: Option<String>,
    /// File holding the admin access token (surrounding whitespace is ignored); read at start.
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
    /// Timeout of one collection (all admin API calls together).
    #[serde(default = "default_synapse_timeout")]
    pub timeout: HumanDuration,
    /// Collection interval; defaults to the top-level `interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Page size of paginated admin API lists (destinations, media statistics).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// At most this many pages per list and cycle (bounds the cost of one collection).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// At most this many failing destinations get their own
    /// `govmx_synapse_federation_destination_failing_since_timestamp_seconds{destination}` series
    /// (oldest failures first); the aggregates count all of them.
    #[serde(default = "default_destination_series")]
    pub max_destination_series: usize,
}

/// clamd settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdConfig {
    /// `host:port` of clamd (TCP).
    pub address: String,
    /// Timeout of connect, `zVERSION` and the reply together.
    #[serde(default = "default_clamd_timeout")]
    pub timeout: HumanDuration,
    /// Collection interval; defaults to the top-level `interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

/// Agency CA files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Directory of issued certificates (`*.pem`/`*.crt`, one or more PEM certificates per
    /// file). A certificate in a subdirectory named after a profile (`homeserver-tls`,
    /// `service-mtls`, `agency-identity`) counts for that profile; elsewhere the profile is
    /// derived from the certificate (extended key usage, `matrix:` URI SAN).
    pub certs_dir: PathBuf,
    /// The CA's current CRL (PEM). Optional: without it no CRL metrics and no revoked state.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Timeout of reading and parsing everything.
    #[serde(default = "default_file_timeout")]
    pub timeout: HumanDuration,
    /// Collection interval; defaults to the top-level `interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

/// Policy bundle files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The bundle directory (`*.yaml` documents and `SIGNATURES.json`), as the gate reads it.
    pub bundle_dir: PathBuf,
    /// The pinned TrustAnchors document the bundle is verified against.
    pub trust: PathBuf,
    /// Timeout of reading and verifying the bundle.
    #[serde(default = "default_file_timeout")]
    pub timeout: HumanDuration,
    /// Collection interval; defaults to the top-level `interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_drain() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_synapse_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
fn default_clamd_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_file_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_page_size() -> u32 {
    500
}
fn default_max_pages() -> u32 {
    100
}
fn default_destination_series() -> usize {
    50
}

// === impl Config ===

impl Config {
    /// The collection interval of a target with the given override.
    pub fn interval_of(&self, own: Option<HumanDuration>) -> Duration {
        own.unwrap_or(self.interval).0
    }
}

/// Whether `url` is an `http(s)://authority` base URL without path, query, fragment or
/// credentials (a trailing `/` is allowed).
fn is_base_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' '])
}

fn is_host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
}

impl govmx_service::ServiceConfig for Config {
    const SERVICE_NAME: &'static str = "govmx-exporter";

    fn tracing(&self) -> Option<&govmx_service::TracingConfig> {
        self.tracing.as_ref()
    }
}

impl govmx_service::Validate for Config {
    fn validate(&self) -> Vec<String> {
        let mut problems = govmx_service::telemetry::tracing_problems(self.tracing.as_ref());
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                problems.push(msg.to_owned());
            }
        };
        check(
            !self.interval.0.is_zero(),
            "interval must be greater than zero",
        );
        check(
            self.synapse.is_some()
                || self.clamd.is_some()
                || self.ca.is_some()
                || self.policy.is_some(),
            "configure at least one target (synapse, clamd, ca, policy)",
        );
        let timing = |name: &str, timeout: HumanDuration, interval: Option<HumanDuration>| {
            let interval = self.interval_of(interval);
            if timeout.0.is_zero() || interval.is_zero() {
                return Some(format!(
                    "{name}.timeout and {name}.interval must be greater than zero"
                ));
            }
            (timeout.0 > interval).then(|| {
                format!("{name}.timeout must not exceed its collection interval ({interval:?})")
            })
        };
        let mut more = Vec::new();
        if let Some(s) = &self.synapse {
            more.extend(timing("synapse", s.timeout, s.interval));
        }
        if let Some(c) = &self.clamd {
            more.extend(timing("clamd", c.timeout, c.interval));
        }
        if let Some(c) = &self.ca {
            more.extend(timing("ca", c.timeout, c.interval));
        }
        if let Some(p) = &self.policy {
            more.extend(timing("policy", p.timeout, p.interval));
        }
        if let Some(s) = &self.synapse {
            check(
                is_base_url(&s.url),
                "synapse.url must be an http:// or https:// base URL without path, query, fragment or credentials",
            );
            check(
                s.access_token.is_some() != s.access_token_file.is_some(),
                "set exactly one of synapse.access_token and synapse.access_token_file",
            );
            if let Some(file) = &s.access_token_file {
                check(
                    file.is_file(),
                    "synapse.access_token_file must name an existing file",
                );
            }
            check(
                (1..=10_000).contains(&s.page_size),
                "synapse.page_size must be between 1 and 10000",
            );
            check(
                (1..=100_000).contains(&s.max_pages),
                "synapse.max_pages must be between 1 and 100000",
            );
            check(
                s.max_destination_series <= 10_000,
                "synapse.max_destination_series must be at most 10000",
            );
        }
        if let Some(c) = &self.clamd {
            check(is_host_port(&c.address), "clamd.address must be host:port");
        }
        if let Some(c) = &self.ca {
            check(
                c.certs_dir.is_absolute(),
                "ca.certs_dir must be an absolute path",
            );
            check(
                c.crl.as_ref().is_none_or(|p| p.is_absolute()),
                "ca.crl must be an absolute path",
            );
        }
        if let Some(p) = &self.policy {
            check(
                p.bundle_dir.is_absolute() && p.trust.is_absolute(),
                "policy.bundle_dir and policy.trust must be absolute paths",
            );
        }
        problems.extend(more);
        problems
    }
}

pub use govmx_service::config::{HumanDuration, parse_duration};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        govmx_service::config::from_yaml_str_validated::<Config>(text, "c.yaml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn example_config_parses_and_validates() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"))
                .unwrap();
        let token = tempfile::NamedTempFile::new().unwrap();
        let text = text.replace(
            "/etc/govmx/exporter/synapse-admin-token",
            token.path().to_str().unwrap(),
        );
        let config = parse(&text).unwrap();
        let synapse = config.synapse.as_ref().unwrap();
        assert_eq!(synapse.url, "http://127.0.0.1:8008");
        assert_eq!(synapse.timeout, HumanDuration(Duration::from_secs(20)));
        assert_eq!(
            config.interval_of(synapse.interval),
            Duration::from_secs(60)
        );
        let clamd = config.clamd.as_ref().unwrap();
        assert_eq!(config.interval_of(clamd.interval), Duration::from_secs(30));
        assert_eq!(clamd.address, "127.0.0.1:3310");
        assert!(config.ca.as_ref().unwrap().crl.is_some());
        assert!(config.policy.is_some());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let base = "admin_listen: 127.0.0.1:9120\nclamd:\n  address: 127.0.0.1:3310\n";
        assert!(parse(base).is_ok());
        let err = parse(&format!("{base}intervall: 5s\n")).unwrap_err();
        assert!(
            err.starts_with("c.yaml:4:1: unknown field `intervall`"),
            "{err}"
        );
        let err = parse(&format!("{base}  timeout: 5 s\n")).unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
        let traced = parse(&format!(
            "{base}tracing:\n  otlp_endpoint: http://otel:4318\n  service_name: exp\n"
        ))
        .unwrap();
        assert_eq!(traced.tracing.unwrap().service_name.as_deref(), Some("exp"));
        let err = parse(&format!("{base}tracing:\n  otlp_endpoint: otel\n")).unwrap_err();
        assert!(
            err.contains("tracing.otlp_endpoint: \"otel\" must be an http:// or https:// URL"),
            "{err}"
        );
        let err = parse("admin_listen: 127.0.0.1:9120\n").unwrap_err();
        assert!(err.contains("configure at least one target"), "{err}");
        let err = parse(
            "admin_listen: 127.0.0.1:9120\ninterval: 10s\nsynapse:\n  url: http://h:8008/x\n  timeout: 1m\nca:\n  certs_dir: rel\nclamd:\n  address: nohost\n",
        )
        .unwrap_err();
        for want in [
            "synapse.url must be",
            "set exactly one of synapse.access_token",
            "ca.certs_dir must be an absolute path",
            "clamd.address must be host:port",
            "synapse.timeout must not exceed",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn base_urls() {
        for (url, ok) in [
            ("http://127.0.0.1:8008", true),
            ("https://matrix.example:8448/", true),
            ("http://a@b", false),
            ("http://h/_synapse", false),
            ("ftp://h", false),
            ("http://", false),
        ] {
            assert_eq!(is_base_url(url), ok, "{url}");
        }
    }
}
