//! The `govmx-agency-ca` server configuration: one YAML document, parsed strictly
//! (`deny_unknown_fields`) and validated before any port is bound. Durations are `<n><unit>`
//! with unit `s`, `m`, `h`, `d`, `w` (`7d`, `12h`). See `examples/config.yaml`.

use std::{net::SocketAddr, path::PathBuf};

use govmx_policy::DurationSpec;
use serde::Deserialize;

use crate::{
    ca::{CaSettings, Lifetimes},
    names::SanHost,
};

/// Longest certificate lifetime any profile may be configured with.
pub const MAX_LEAF_LIFETIME_DAYS: i64 = 398;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS listener of the issuance API.
    pub listen: SocketAddr,
    /// Admin listener: `/healthz`, `/readyz`, `/metrics`. Keep it off the public network.
    pub admin_listen: SocketAddr,
    /// The CA state directory made by `govmx ca init` (the root key may be moved offline).
    pub ca_dir: PathBuf,
    /// The Agencies policy document (`policies/agencies.yaml`): names and accounts per agency.
    pub agencies: PathBuf,
    /// TLS of the API listener.
    pub tls: TlsConfig,
    /// Certificate lifetimes per profile.
    #[serde(default)]
    pub lifetimes: LifetimesConfig,
    /// CRL settings.
    #[serde(default)]
    pub crl: CrlConfig,
    /// Largest accepted request body (bytes).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// How long in-flight requests may run after SIGTERM.
    #[serde(default = "default_drain")]
    pub drain_timeout: DurationSpec,
    /// OpenTelemetry traces over OTLP/HTTP; absent means no traces (see
    /// [`govmx_service::TracingConfig`]).
    #[serde(default)]
    pub tracing: Option<govmx_service::TracingConfig>,
}

/// TLS of the API: either files, or a certificate the CA issues itself at start-up.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// Private key (PEM).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// Instead of files: hosts (DNS names / IPs) of a `service-mtls` certificate the CA issues to
    /// itself at every start (kept in memory only, logged in the issuance log).
    #[serde(default)]
    pub self_issued_hosts: Vec<String>,
}

/// Lifetimes per profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimesConfig {
    /// `homeserver-tls` (default 30d).
    #[serde(default = "default_homeserver_tls")]
    pub homeserver_tls: DurationSpec,
    /// `service-mtls` (default 7d).
    #[serde(default = "default_service_mtls")]
    pub service_mtls: DurationSpec,
    /// `agency-identity` (default 7d).
    #[serde(default = "default_agency_identity")]
    pub agency_identity: DurationSpec,
}

impl Default for LifetimesConfig {
    fn default() -> Self {
        Self {
            homeserver_tls: default_homeserver_tls(),
            service_mtls: default_service_mtls(),
            agency_identity: default_agency_identity(),
        }
    }
}

/// CRL settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    /// `nextUpdate - thisUpdate` (default 7d).
    #[serde(default = "default_crl_validity")]
    pub validity: DurationSpec,
    /// Re-sign the CRL when less than this is left before `nextUpdate` (default 2d).
    #[serde(default = "default_crl_refresh")]
    pub refresh_before: DurationSpec,
    /// How often the server checks (and picks up revocations made with `govmx ca revoke`).
    #[serde(default = "default_crl_check")]
    pub check_interval: DurationSpec,
    /// URL put into every certificate's cRLDistributionPoints (e.g.
    /// `https://ca.example.de/_govmx/ca/v1/crl`); none when unset.
    #[serde(default)]
    pub distribution_point: Option<String>,
}

impl Default for CrlConfig {
    fn default() -> Self {
        Self {
            validity: default_crl_validity(),
            refresh_before: default_crl_refresh(),
            check_interval: default_crl_check(),
            distribution_point: None,
        }
    }
}

impl Config {
    /// The CA settings this config describes.
    pub fn ca_settings(&self) -> CaSettings {
        CaSettings {
            lifetimes: Lifetimes {
                homeserver_tls: self.lifetimes.homeserver_tls.duration(),
                service_mtls: self.lifetimes.service_mtls.duration(),
                agency_identity: self.lifetimes.agency_identity.duration(),
            },
            crl_distribution_point: self.crl.distribution_point.clone(),
            crl_validity: self.crl.validity.duration(),
        }
    }

    /// The self-issued TLS hosts, parsed.
    pub fn self_issued_hosts(&self) -> Vec<SanHost> {
        self.tls
            .self_issued_hosts
            .iter()
            .filter_map(|h| SanHost::parse(h).ok())
            .collect()
    }
}

fn dur(text: &str) -> DurationSpec {
    // Only called with the literal defaults below, which always parse.
    DurationSpec::parse(text).unwrap_or_else(|_| unreachable!("default duration {text:?}"))
}
fn default_homeserver_tls() -> DurationSpec {
    dur("30d")
}
fn default_service_mtls() -> DurationSpec {
    dur("7d")
}
fn default_agency_identity() -> DurationSpec {
    dur("7d")
}
fn default_crl_validity() -> DurationSpec {
    dur("7d")
}
fn default_crl_refresh() -> DurationSpec {
    dur("2d")
}
fn default_crl_check() -> DurationSpec {
    dur("1h")
}
fn default_drain() -> DurationSpec {
    dur("10s")
}
fn default_max_request_bytes() -> usize {
    64 * 1024
}

impl govmx_service::ServiceConfig for Config {
    const SERVICE_NAME: &'static str = "govmx-agency-ca";

    fn tracing(&self) -> Option<&govmx_service::TracingConfig> {
        self.tracing.as_ref()
    }
}

impl govmx_service::Validate for Config {
    fn validate(&self) -> Vec<String> {
        let mut problems = govmx_service::telemetry::tracing_problems(self.tracing.as_ref());
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            problems.push("listen and admin_listen must differ".to_owned());
        }
        let files = (&self.tls.certificate, &self.tls.private_key);
        match (files, self.tls.self_issued_hosts.is_empty()) {
            ((Some(_), Some(_)), true) | ((None, None), false) => {}
            ((Some(_), Some(_)), false) => problems.push(
                "tls: set either certificate + private_key or self_issued_hosts, not both".into(),
            ),
            ((None, None), true) => {
                problems.push("tls: set certificate + private_key, or self_issued_hosts".into())
            }
            _ => problems.push("tls: certificate and private_key go together".into()),
        }
        for host in &self.tls.self_issued_hosts {
            if let Err(why) = SanHost::parse(host) {
                problems.push(format!("tls.self_issued_hosts: {why}"));
            }
        }
        let max = time::Duration::days(MAX_LEAF_LIFETIME_DAYS);
        for (key, value) in [
            ("lifetimes.homeserver_tls", &self.lifetimes.homeserver_tls),
            ("lifetimes.service_mtls", &self.lifetimes.service_mtls),
            ("lifetimes.agency_identity", &self.lifetimes.agency_identity),
        ] {
            if value.duration() > max {
                problems.push(format!(
                    "{key}: {value} is longer than {MAX_LEAF_LIFETIME_DAYS} days"
                ));
            }
        }
        if self.crl.refresh_before.duration() >= self.crl.validity.duration() {
            problems.push("crl.refresh_before must be shorter than crl.validity".into());
        }
        if self.crl.check_interval.duration() >= self.crl.refresh_before.duration() {
            problems.push("crl.check_interval must be shorter than crl.refresh_before".into());
        }
        if let Some(url) = &self.crl.distribution_point
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push("crl.distribution_point must be an http:// or https:// URL".into());
        }
        if !(1024..=1024 * 1024).contains(&self.max_request_bytes) {
            problems.push("max_request_bytes must be between 1024 and 1048576".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use govmx_service::config::from_yaml_str_validated;

    use super::*;

    #[track_caller]
    fn check(text: &str, expect: &str) {
        let got = match from_yaml_str_validated::<Config>(text, "ca.yaml") {
            Ok(c) => format!("ok {}", c.listen),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expect);
    }

    const BASE: &str =
        "listen: 127.0.0.1:8450\nadmin_listen: 127.0.0.1:9450\nca_dir: /x\nagencies: /a.yaml\n";

    #[test]
    fn example_config_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"))
                .unwrap();
        let config: Config = from_yaml_str_validated(&text, "examples/config.yaml").unwrap();
        assert_eq!(
            config.ca_settings().lifetimes.agency_identity,
            time::Duration::days(7)
        );
    }

    #[test]
    fn strict_and_validated() {
        check(
            &format!("{BASE}tls: {{self_issued_hosts: [127.0.0.1]}}\n"),
            "ok 127.0.0.1:8450",
        );
        check(
            &format!("{BASE}tls: {{self_issued_hosts: [127.0.0.1]}}\nlifetime: 3d\n"),
            "ca.yaml:6:1: unknown field `lifetime`, expected one of `listen`, `admin_listen`, `ca_dir`, `agencies`, `tls`, `lifetimes`, `crl`, `max_request_bytes`, `drain_timeout`, `tracing`",
        );
        check(
            &format!("{BASE}tls: {{}}\n"),
            "ca.yaml: invalid config: tls: set certificate + private_key, or self_issued_hosts",
        );
        check(
            &format!("{BASE}tls: {{certificate: /c}}\nlifetimes: {{agency_identity: 400d}}\n"),
            "ca.yaml: invalid config: tls: certificate and private_key go together; lifetimes.agency_identity: 400d is longer than 398 days",
        );
        check(
            &format!(
                "{BASE}tls: {{self_issued_hosts: ['*.x.de']}}\ncrl: {{validity: 1d, refresh_before: 2d}}\n"
            ),
            "ca.yaml: invalid config: tls.self_issued_hosts: \"*.x.de\" is neither an IP address nor a DNS name; crl.refresh_before must be shorter than crl.validity",
        );
        check(
            &format!(
                "{BASE}tls: {{self_issued_hosts: [127.0.0.1]}}\ntracing: {{otlp_endpoint: \"http://otel:4318\"}}\n"
            ),
            "ok 127.0.0.1:8450",
        );
        check(
            &format!(
                "{BASE}tls: {{self_issued_hosts: [127.0.0.1]}}\ntracing: {{otlp_endpoint: \"ftp://otel\"}}\n"
            ),
            "ca.yaml: invalid config: tracing.otlp_endpoint: \"ftp://otel\" must be an http:// or https:// URL such as http://otel-collector:4318",
        );
    }
}
