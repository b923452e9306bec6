//! The gate's configuration: one strict YAML document, checked completely before any port is bound.
//!
//! See `config.example.yaml` beside `Cargo.toml` for a commented example; a test parses it.
//! Durations are written as `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d` (`30s`, `72h`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our Matrix server name (`127.0.0.2:8448`, `land.example`): the only acceptable
    /// `destination` of inbound requests, and the origin of outbound ones.
    pub server_name: String,
    /// The inbound federation edge.
    pub inbound: InboundConfig,
    /// The outbound CONNECT proxy Synapse uses as `https_proxy`; absent means no proxy.
    #[serde(default)]
    pub outbound: Option<OutboundConfig>,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`, `/explain`).
    pub admin: AdminConfig,
    /// Where the federation list comes from and how fresh it must be.
    pub policy: PolicyConfig,
    /// Shadow mode: decide, log and count, but forward everything (for trying a list out).
    #[serde(default)]
    pub shadow: bool,
    /// Append-only JSON-lines audit log of every denial.
    pub audit_log: PathBuf,
    /// OpenTelemetry traces over OTLP/HTTP; absent means no traces (see
    /// [`govmx_service::TracingConfig`]).
    #[serde(default)]
    pub tracing: Option<govmx_service::TracingConfig>,
}

/// The TLS edge in front of Synapse's federation listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Address to accept federation TLS on (port 0 picks a free port; tests use that).
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: PathBuf,
    /// Synapse's plain HTTP federation listener, `http://host:port`.
    pub upstream: String,
    /// Largest request body accepted (bytes); larger ones get 413 `M_TOO_LARGE`.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Time a client gets to send the request head; slower connections are closed.
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Time a whole upstream exchange may take before 504.
    #[serde(default = "default_upstream_timeout", deserialize_with = "duration")]
    pub upstream_timeout: Duration,
    /// What to do with relayed PDUs/EDUs in `/send` transactions whose author is not on the
    /// list: `remove` them before Synapse sees the transaction (reported back to the sender),
    /// or only `report` them (audit log, forwarded unchanged, and Synapse's answer carries the
    /// gate's per-PDU error under the event id Synapse computed for each).
    ///
    /// Default `report`. Synapse verifies the X-Matrix signature over the *body it receives*;
    /// a transaction the gate changed no longer matches the sender's signature, so stock
    /// Synapse refuses it (401) and the sender retries. `remove` therefore needs an upstream that
    /// trusts the gate's verification (strict mode); with stock Synapse keep `report`: the
    /// govmx Synapse module drops such events on arrival (`should_drop_federated_event`).
    #[serde(default)]
    pub relayed_events: RelayedEvents,
    /// Strict mode: verify every X-Matrix signature at the edge with the signing keys pinned in
    /// the list (requests from origins without pinned keys are refused in strict mode).
    #[serde(default)]
    pub strict: bool,
    /// Threads serving inbound connections (each connection stays on one; like nginx's
    /// `worker_processes`). Absent: one per CPU the process may use. Fewer workers than CPUs
    /// can pay where the gate shares its CPUs with the homeserver: each wake-up then finds
    /// more ready connections (`docs/benchmarks.md`).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Strict mode for listed servers without pinned keys: fetch their keys from the server
    /// itself over TLS that chains to `ca_file`, verify and cache them. Absent: such servers are
    /// refused in strict mode.
    #[serde(default)]
    pub key_fetch: Option<KeyFetchConfig>,
}

/// Fetching signing keys of listed servers that have none pinned (strict mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFetchConfig {
    /// PEM bundle of the CA(s) federation TLS certificates must chain to (the network's root).
    pub ca_file: PathBuf,
    /// Time for one fetch.
    #[serde(default = "default_key_fetch_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Minimum time between two fetches for the same server (unknown key ids, failures).
    #[serde(default = "default_min_refetch", deserialize_with = "duration")]
    pub min_refetch: Duration,
    /// Longest time fetched keys are trusted, whatever the server's `valid_until_ts` says.
    #[serde(default = "default_max_key_cache", deserialize_with = "duration")]
    pub max_cache: Duration,
}

/// Handling of relayed events from unlisted servers (see [`InboundConfig::relayed_events`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayedEvents {
    /// Remove them from the transaction and report them in the answer.
    Remove,
    /// Audit them, forward the transaction unchanged, put per-PDU errors in Synapse's answer.
    #[default]
    Report,
}

/// The CONNECT proxy for outbound federation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Address of the proxy (loopback; Synapse's `https_proxy: http://<this>`).
    pub listen: SocketAddr,
    /// Time to connect to the target.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address (keep it off the public network).
    pub listen: SocketAddr,
}

/// The signed federation list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The signed policy bundle directory (primary source); exactly one of `dir` and `url`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The signed policy bundle served over HTTPS (primary source): `<url>/SIGNATURES.json`
    /// and the files its manifest lists. Exactly one of `dir` and `url`.
    #[serde(default)]
    pub url: Option<String>,
    /// PEM CA bundle the `url` server's certificate must chain to (required with `url`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Time for one HTTPS request to `url`.
    #[serde(default = "default_fetch_timeout", deserialize_with = "duration")]
    pub fetch_timeout: Duration,
    /// When an origin is refused because it is not listed, check the source again (at most
    /// once per this interval), so a server just added federates before the next poll.
    /// `0s` turns this off.
    #[serde(default = "default_refetch_on_miss", deserialize_with = "duration")]
    pub refetch_on_miss: Duration,
    /// The trust anchors (pinned bundle signers and threshold).
    pub trust: PathBuf,
    /// Where the gate keeps a copy of the last bundle that verified; used at start when the
    /// primary source fails. Created if missing.
    pub last_known_good_dir: PathBuf,
    /// How often the bundle directory is checked for changes (also on SIGHUP).
    #[serde(default = "default_reload_interval", deserialize_with = "duration")]
    pub reload_interval: Duration,
    /// How long a list stays usable after it was last confirmed from the primary source; past
    /// that the gate fails closed (every request 503, `/readyz` 503).
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    /// Nice value (-20..=19) of the thread that verifies and compiles new lists; the request
    /// workers stay at the process's. Below 0 a reload gets the CPU ahead of request handling
    /// when the cores are saturated (a 100,000-server list under full load: ~0.5 s at 0, about
    /// its own CPU time at -10; docs/benchmarks.md). Lowering the value needs `LimitNICE=` (e.g.
    /// `LimitNICE=-10` in the systemd unit, plus `SystemCallFilter=setpriority` where
    /// `@resources` is denied) or `CAP_SYS_NICE`; without it the gate logs a warning once and
    /// reloads at the process's priority. Default 0: unchanged (the Helm chart and the Ansible
    /// role do not set it).
    #[serde(default)]
    pub reload_nice: i32,
}

fn default_max_body() -> u64 {
    50 * 1024 * 1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_key_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_max_key_cache() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_refetch_on_miss() -> Duration {
    Duration::from_secs(10)
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(30)
}

pub use govmx_service::config::parse_duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 30s, 5m or 72h")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V)
}

impl govmx_service::ServiceConfig for Config {
    const SERVICE_NAME: &'static str = "govmx-federation-gate";

    fn tracing(&self) -> Option<&govmx_service::TracingConfig> {
        self.tracing.as_ref()
    }
}

impl govmx_service::Validate for Config {
    fn validate(&self) -> Vec<String> {
        let mut problems = govmx_service::telemetry::tracing_problems(self.tracing.as_ref());
        if <&ruma_common::ServerName>::try_from(self.server_name.as_str()).is_err() {
            problems.push(format!(
                "server_name {:?} is not a valid Matrix server name",
                self.server_name
            ));
        }
        if let Err(reason) = upstream_authority(&self.inbound.upstream) {
            problems.push(format!("inbound.upstream: {reason}"));
        }
        let mut files = vec![
            ("inbound.tls_cert", &self.inbound.tls_cert),
            ("inbound.tls_key", &self.inbound.tls_key),
            ("policy.trust", &self.policy.trust),
        ];
        if let Some(key_fetch) = &self.inbound.key_fetch {
            files.push(("inbound.key_fetch.ca_file", &key_fetch.ca_file));
            if key_fetch.timeout.is_zero() {
                problems.push("inbound.key_fetch.timeout must be greater than 0".to_owned());
            }
            if !self.inbound.strict {
                problems.push(
                    "inbound.key_fetch is only used in strict mode; set inbound.strict: true or remove it"
                        .to_owned(),
                );
            }
        }
        for (key, path) in files {
            if !path.is_file() {
                problems.push(format!("{key}: {} is not a readable file", path.display()));
            }
        }
        match (&self.policy.dir, &self.policy.url) {
            (Some(dir), None) => {
                if dir.exists() && !dir.is_dir() {
                    problems.push(format!("policy.dir: {} is not a directory", dir.display()));
                }
                if same_dir(dir, &self.policy.last_known_good_dir) {
                    problems
                        .push("policy.last_known_good_dir must differ from policy.dir".to_owned());
                }
            }
            (None, Some(url)) => {
                if !url.starts_with("https://") || url.parse::<http::Uri>().is_err() {
                    problems.push(format!("policy.url: {url:?} must be an https:// URL"));
                }
                match &self.policy.ca_file {
                    Some(ca) if !ca.is_file() => problems.push(format!(
                        "policy.ca_file: {} is not a readable file",
                        ca.display()
                    )),
                    Some(_) => {}
                    None => problems.push(
                        "policy.ca_file is required with policy.url (the CA the bundle server's certificate chains to)"
                            .to_owned(),
                    ),
                }
            }
            _ => problems.push("policy: set exactly one of dir and url".to_owned()),
        }
        if self.policy.ca_file.is_some() && self.policy.url.is_none() {
            problems.push("policy.ca_file is only used with policy.url".to_owned());
        }
        if self.policy.last_known_good_dir.exists() && !self.policy.last_known_good_dir.is_dir() {
            problems.push(format!(
                "policy.last_known_good_dir: {} is not a directory",
                self.policy.last_known_good_dir.display()
            ));
        }
        if self.inbound.max_body_bytes == 0 {
            problems.push("inbound.max_body_bytes must be greater than 0".to_owned());
        }
        if self.inbound.workers == Some(0) {
            problems.push("inbound.workers must be at least 1 (or absent: one per CPU)".to_owned());
        }
        for (key, value) in [
            (
                "inbound.header_read_timeout",
                self.inbound.header_read_timeout,
            ),
            ("inbound.upstream_timeout", self.inbound.upstream_timeout),
            ("policy.reload_interval", self.policy.reload_interval),
            ("policy.fetch_timeout", self.policy.fetch_timeout),
            ("policy.max_age", self.policy.max_age),
        ] {
            if value.is_zero() {
                problems.push(format!("{key} must be greater than 0"));
            }
        }
        if !(-20..=19).contains(&self.policy.reload_nice) {
            problems.push(format!(
                "policy.reload_nice must be between -20 and 19, not {}",
                self.policy.reload_nice
            ));
        }
        if self.policy.max_age <= self.policy.reload_interval {
            problems.push("policy.max_age must be longer than policy.reload_interval".to_owned());
        }
        if self.audit_log.is_dir() {
            problems.push(format!(
                "audit_log: {} is a directory",
                self.audit_log.display()
            ));
        }
        let mut addrs = vec![
            ("inbound.listen", self.inbound.listen),
            ("admin.listen", self.admin.listen),
        ];
        if let Some(outbound) = &self.outbound {
            addrs.push(("outbound.listen", outbound.listen));
        }
        for (i, (a, x)) in addrs.iter().enumerate() {
            for (b, y) in &addrs[i + 1..] {
                if x == y && x.port() != 0 {
                    problems.push(format!("{a} and {b} are the same address {x}"));
                }
            }
        }
        problems
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Checks that `upstream` is `http://host:port` (optionally with a trailing `/`) and returns
/// the authority.
pub fn upstream_authority(upstream: &str) -> Result<String, String> {
    let uri: http::Uri = upstream
        .parse()
        .map_err(|e| format!("{upstream:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{upstream:?} must use http:// (Synapse's plain federation listener)"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{upstream:?} has no host"));
    };
    if authority.port_u16().is_none() {
        return Err(format!("{upstream:?} needs an explicit port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{upstream:?} must not have a path or query"));
    }
    Ok(authority.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("s").unwrap_err().contains("whole number"));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(
            upstream_authority("http://127.0.0.1:8008"),
            Ok("127.0.0.1:8008".into())
        );
        assert_eq!(
            upstream_authority("http://127.0.0.1:8008/"),
            Ok("127.0.0.1:8008".into())
        );
        assert!(upstream_authority("https://127.0.0.1:8008").is_err());
        assert!(upstream_authority("http://127.0.0.1").is_err());
        assert!(upstream_authority("http://127.0.0.1:8008/x").is_err());
        assert!(upstream_authority("127.0.0.1:8008").is_err());
    }

    #[test]
    fn example_config_parses_and_problems_are_named() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let config: Config = govmx_service::config::from_yaml_str(&text, path).unwrap();
        assert_eq!(config.server_name, "land.example");
        assert!(!config.shadow && !config.inbound.strict);
        assert_eq!(config.policy.max_age, Duration::from_secs(72 * 3600));
        // The example's files do not exist here, so validation names each of them.
        let problems = govmx_service::Validate::validate(&config);
        assert_eq!(
            problems,
            [
                "inbound.tls_cert: /etc/govmx/gate/tls/fullchain.pem is not a readable file",
                "inbound.tls_key: /etc/govmx/gate/tls/privkey.pem is not a readable file",
                "policy.trust: /etc/govmx/policy-trust.yaml is not a readable file",
            ]
        );

        let bad = text.replace(
            "server_name: land.example",
            "server_name: land.example\nsevrer: x",
        );
        let err = govmx_service::config::from_yaml_str::<Config>(&bad, "gate.yaml").unwrap_err();
        assert!(err.to_string().starts_with("gate.yaml:"), "{err}");
        assert!(err.to_string().contains("unknown field `sevrer`"), "{err}");
        let bad = text.replace("max_age: 72h", "max_age: 72");
        let err = govmx_service::config::from_yaml_str::<Config>(&bad, "gate.yaml").unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
        let bad = text.replace("reload_nice: 0", "reload_nice: -21");
        let config: Config = govmx_service::config::from_yaml_str(&bad, "gate.yaml").unwrap();
        assert!(
            govmx_service::Validate::validate(&config)
                .contains(&"policy.reload_nice must be between -20 and 19, not -21".to_owned())
        );
        assert_eq!(config.inbound.workers, None, "default: one worker per CPU");
        for (workers, valid) in [("1", true), ("4", true), ("0", false)] {
            let text = text.replace("  # workers: 1", &format!("  workers: {workers}"));
            let config: Config = govmx_service::config::from_yaml_str(&text, "gate.yaml").unwrap();
            assert_eq!(config.inbound.workers, workers.parse().ok());
            let problem = "inbound.workers must be at least 1 (or absent: one per CPU)".to_owned();
            assert_eq!(
                govmx_service::Validate::validate(&config).contains(&problem),
                !valid,
                "workers: {workers}"
            );
        }
    }
}
