//! The media scanner's configuration: one YAML document, parsed strictly
//! (`deny_unknown_fields`) and validated once, before any port is bound.
//!
//! Sizes are integers (bytes) or strings with a binary suffix (`"50MiB"`, `"512KiB"`, `"1GiB"`);
//! durations are strings (`"500ms"`, `"30s"`, `"5m"`). See `examples/config.yaml`.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};

use crate::{clamd::ClamdSettings, mime::MimePattern};

/// Largest upload we accept at all: INSTREAM frames and clamd's StreamMaxLength stay far below
/// 4 GiB; Synapse's own default is 50M.
pub const MAX_UPLOAD_CEILING: u64 = 4 * 1024 * 1024 * 1024 - 1;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Main listener: the media upload gate (and everything proxied to Synapse).
    pub listen: SocketAddr,
    /// Admin listener: `/healthz`, `/readyz`, `/metrics`. Keep it off the public network.
    pub admin_listen: SocketAddr,
    /// Synapse's client-server listener, `http://host:port` (plain HTTP on loopback or the pod
    /// network; TLS is terminated in front of the gate).
    pub upstream: String,
    /// clamd connection settings.
    pub clamd: ClamdConfig,
    /// Largest accepted upload body; keep it ≤ clamd `StreamMaxLength` and ≥ Synapse's
    /// `max_upload_size`. Larger `Content-Length` → 413 before the body is read.
    pub max_upload_size: ByteSize,
    /// Where upload bodies wait while being scanned.
    pub spool: SpoolConfig,
    /// Allow/block rules on the *sniffed* media type (magic bytes, not the declared type).
    #[serde(default)]
    pub mime: MimeConfig,
    /// What to do when no clamd can give a verdict: `reject` (503, default) or `allow`
    /// (forward unscanned, audited as `unscanned`). `allow` is unsafe; use only in emergencies.
    #[serde(default)]
    pub scanner_unavailable: UnavailablePolicy,
    /// Append-only JSON-lines audit log of every scan decision.
    pub audit_log: PathBuf,
    /// Verdict cache (key: SHA-256 of the content + clamd signature DB version).
    #[serde(default)]
    pub verdict_cache: CacheConfig,
    /// `POST /_govmx/scanner/v1/scan` for homeserver plugins.
    #[serde(default)]
    pub scan_api: ScanApiConfig,
    /// How long in-flight requests may run after SIGTERM.
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
    /// Caps on concurrent scans and on spooled bytes.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Signature database freshness (from clamd `VERSION`).
    #[serde(default)]
    pub signatures: SignaturesConfig,
    /// matrix-content-scanner compatible API under `/_matrix/media_proxy/unstable/`.
    #[serde(default)]
    pub mcs: McsConfig,
    /// OpenTelemetry traces over OTLP/HTTP; absent means no traces (see
    /// [`govmx_service::TracingConfig`]).
    #[serde(default)]
    pub tracing: Option<govmx_service::TracingConfig>,
}

/// Caps that keep a burst of uploads or downloads from exhausting clamd, memory or disk.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Scans running at the same time (upload gate, scan API and MCS API together). Keep it at or
    /// below clamd `MaxThreads`.
    #[serde(default = "default_max_scans")]
    pub max_concurrent_scans: usize,
    /// How long a scan waits for a free slot before the request gets a 503.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: HumanDuration,
    /// Total bytes all spool files in `spool.dir` may hold; a request that would exceed it gets
    /// a 503 (the spool file is removed).
    #[serde(default = "default_max_spool")]
    pub max_spool_bytes: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_scans: default_max_scans(),
            queue_timeout: default_queue_timeout(),
            max_spool_bytes: default_max_spool(),
        }
    }
}

/// Signature DB age checks, evaluated on every health probe.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Past this age: a warning per probe and `govmx_media_clamd_db_stale{address} 1`.
    #[serde(default = "default_warn_age")]
    pub warn_age: HumanDuration,
    /// Past this age every scan is refused with 503 and `/readyz` says why. Off by default.
    #[serde(default)]
    pub refuse_age: Option<HumanDuration>,
    /// What `refuse_age` does when clamd reports no DB date (clamd without official
    /// databases, e.g. only local `.hdb` signatures): `false` (default) = scan anyway and
    /// warn once per probe ("signature DB age unknown"); `true` = refuse like a too old DB.
    #[serde(default)]
    pub refuse_unknown_age: bool,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        Self {
            warn_age: default_warn_age(),
            refuse_age: None,
            refuse_unknown_age: false,
        }
    }
}

/// The matrix-content-scanner (MCS) compatible download-and-scan API for Element X Pro,
/// element-android and Tchap.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McsConfig {
    /// Serve `/_matrix/media_proxy/unstable/*` on the main listener.
    #[serde(default)]
    pub enabled: bool,
    /// Base URL media is fetched from (`http://` or `https://`, e.g. Synapse's client listener).
    #[serde(default)]
    pub homeserver_url: Option<String>,
    /// File holding an access token (of a service account) used for the authenticated media
    /// endpoints `/_matrix/client/v1/media/*` when the client sent no `Authorization` header.
    /// Without it, such requests use the legacy unauthenticated `/_matrix/media/v3/*`.
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
    /// File holding the 32-byte Curve25519 secret (base64) that decrypts PkEncryption'd request
    /// bodies; `GET public_key` returns its public half. Created with mode 0600 on first start;
    /// same format as MCS's `crypto.request_secret_path` (`head -c32 /dev/urandom | base64`).
    #[serde(default)]
    pub request_secret_file: Option<PathBuf>,
    /// Timeout for connecting to the homeserver and for each read from it.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: HumanDuration,
    /// File holding a Synapse **admin** access token. When set, media the MCS API finds
    /// infected is quarantined through `POST /_synapse/admin/v1/media/quarantine/{server}/{id}`
    /// (local uploads that predate the scanner, remote media Synapse cached), so nobody can
    /// download it around the scanner. The outcome is audited and counted.
    #[serde(default)]
    pub quarantine_token_file: Option<PathBuf>,
}

/// clamd settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClamdConfig {
    /// `host:port` of each clamd (TCP), tried in order with failover.
    pub addresses: Vec<String>,
    /// TCP connect timeout per address.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Timeout of each write and of `PING`/`VERSION` replies.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: HumanDuration,
    /// Timeout for the verdict after the last byte (clamd scans then); keep ≥ clamd MaxScanTime.
    #[serde(default = "default_scan_timeout")]
    pub scan_timeout: HumanDuration,
    /// INSTREAM frame size.
    #[serde(default = "default_chunk")]
    pub chunk_size: ByteSize,
    /// Interval of the `PING` + `VERSION` health probe.
    #[serde(default = "default_health_interval")]
    pub health_interval: HumanDuration,
}

/// Spool settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Bodies up to this size stay in memory; larger ones go to a 0600 temp file in `dir`.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// Private directory for spool files (should be 0700, on an encrypted volume or tmpfs).
    pub dir: PathBuf,
}

/// MIME rules. A sniffed type matching `block` is refused; if `allow` is non-empty the type
/// must match it. Undetectable content counts as `text/plain` (valid UTF-8 without NUL) or
/// `application/octet-stream`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimeConfig {
    /// Patterns like `image/*`, `application/pdf`, `*/*`.
    #[serde(default)]
    pub allow: Vec<MimePattern>,
    /// Patterns like `application/x-executable`.
    #[serde(default)]
    pub block: Vec<MimePattern>,
}

/// Behaviour when the scanner cannot give a verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailablePolicy {
    /// 503 `GOVMX_SCANNER_UNAVAILABLE` (fail closed).
    #[default]
    Reject,
    /// Forward unscanned and audit it.
    Allow,
}

/// Verdict cache settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Entries kept (oldest evicted first); 0 disables the cache.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
        }
    }
}

/// Scan API settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanApiConfig {
    /// Serve `POST /_govmx/scanner/v1/scan` on the main listener.
    #[serde(default)]
    pub enabled: bool,
    /// File holding the bearer token callers must send (`Authorization: Bearer …`).
    /// Required when enabled.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for McsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            homeserver_url: None,
            access_token_file: None,
            request_secret_file: None,
            fetch_timeout: default_fetch_timeout(),
            quarantine_token_file: None,
        }
    }
}

fn default_drain() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_io_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_scan_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(130))
}
fn default_chunk() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_health_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_memory_limit() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_max_scans() -> usize {
    10
}
fn default_queue_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_spool() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_warn_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(2 * 86_400))
}
fn default_fetch_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

// === impl Config ===

impl Config {
    /// The clamd client settings.
    pub fn clamd_settings(&self) -> ClamdSettings {
        ClamdSettings {
            addresses: self.clamd.addresses.clone(),
            connect_timeout: self.clamd.connect_timeout.0,
            io_timeout: self.clamd.io_timeout.0,
            scan_timeout: self.clamd.scan_timeout.0,
            chunk_size: usize::try_from(self.clamd.chunk_size.0).unwrap_or(64 * 1024),
        }
    }

    /// The upstream `(authority, base path)` for `http://` URLs.
    pub fn upstream_parts(&self) -> Option<(String, String)> {
        let rest = self.upstream.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#']) || path.contains(['?', '#'])
        {
            return None;
        }
        Some((authority.to_owned(), path.to_owned()))
    }
}

impl govmx_service::ServiceConfig for Config {
    const SERVICE_NAME: &'static str = "govmx-media-scanner";

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
            self.listen != self.admin_listen || self.listen.port() == 0,
            "listen and admin_listen must differ",
        );
        check(
            self.upstream_parts().is_some(),
            "upstream must be an http:// URL without credentials, query or fragment (e.g. http://127.0.0.1:8008)",
        );
        check(
            !self.clamd.addresses.is_empty(),
            "clamd.addresses must list at least one host:port",
        );
        check(
            self.clamd.addresses.iter().all(|a| {
                a.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
            }),
            "clamd.addresses entries must be host:port",
        );
        for (name, d) in [
            ("clamd.connect_timeout", self.clamd.connect_timeout),
            ("clamd.io_timeout", self.clamd.io_timeout),
            ("clamd.scan_timeout", self.clamd.scan_timeout),
            ("clamd.health_interval", self.clamd.health_interval),
        ] {
            check(!d.0.is_zero(), &format!("{name} must be greater than zero"));
        }
        check(
            (1024..=16 * 1024 * 1024).contains(&self.clamd.chunk_size.0),
            "clamd.chunk_size must be between 1KiB and 16MiB",
        );
        check(
            (1..=MAX_UPLOAD_CEILING).contains(&self.max_upload_size.0),
            "max_upload_size must be between 1 byte and 4GiB",
        );
        check(
            self.spool.memory_limit.0 <= 64 * 1024 * 1024,
            "spool.memory_limit must be at most 64MiB",
        );
        check(
            self.spool.dir.is_absolute(),
            "spool.dir must be an absolute path",
        );
        check(
            self.spool.dir.is_dir(),
            "spool.dir must be an existing directory",
        );
        check(
            self.audit_log.is_absolute(),
            "audit_log must be an absolute path",
        );
        check(
            self.audit_log.parent().is_some_and(|p| p.is_dir()),
            "audit_log's directory must exist",
        );
        if self.scan_api.enabled {
            check(
                self.scan_api
                    .token_file
                    .as_ref()
                    .is_some_and(|p| p.is_file()),
                "scan_api.token_file must name an existing file when scan_api.enabled is true",
            );
        }
        check(
            (1..=10_000).contains(&self.limits.max_concurrent_scans),
            "limits.max_concurrent_scans must be between 1 and 10000",
        );
        check(
            self.limits.max_spool_bytes.0 >= self.max_upload_size.0,
            "limits.max_spool_bytes must be at least max_upload_size",
        );
        if let Some(refuse) = self.signatures.refuse_age {
            check(
                refuse.0 >= self.signatures.warn_age.0,
                "signatures.refuse_age must be at least signatures.warn_age",
            );
        }
        if self.mcs.enabled {
            check(
                self.mcs.homeserver_url.as_deref().is_some_and(|u| {
                    (u.starts_with("http://") || u.starts_with("https://"))
                        && !u.contains(['?', '#', '@'])
                }),
                "mcs.homeserver_url must be an http:// or https:// URL without credentials, query or fragment",
            );
            check(
                self.mcs
                    .access_token_file
                    .as_ref()
                    .is_none_or(|p| p.is_file()),
                "mcs.access_token_file must name an existing file",
            );
            check(
                self.mcs
                    .quarantine_token_file
                    .as_ref()
                    .is_none_or(|p| p.is_file()),
                "mcs.quarantine_token_file must name an existing file",
            );
            check(
                self.mcs
                    .request_secret_file
                    .as_ref()
                    .is_some_and(|p| p.is_absolute() && p.parent().is_some_and(|d| d.is_dir())),
                "mcs.request_secret_file must be an absolute path in an existing directory",
            );
            check(
                !self.mcs.fetch_timeout.0.is_zero(),
                "mcs.fetch_timeout must be greater than zero",
            );
        }
        problems
    }
}

/// A byte count: integer bytes or `"<n>KiB|MiB|GiB"` (also `K`, `M`, `G`, binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Parses `"50MiB"`-style sizes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid size `{s}`, expected e.g. 1048576, \"512KiB\", \"50MiB\""
                ))
            }),
        }
    }
}

pub use govmx_service::config::{HumanDuration, parse_duration};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        let sizes = [
            ("1", Some(1)),
            ("64KiB", Some(65536)),
            ("50M", Some(50 << 20)),
            ("1GiB", Some(1 << 30)),
            ("5 MiB", Some(5 << 20)),
            ("1.5M", None),
            ("MiB", None),
            ("-1", None),
            ("9999999999999G", None),
        ];
        for (s, want) in sizes {
            assert_eq!(parse_size(s), want, "{s}");
        }
        let durs = [
            ("500ms", Some(Duration::from_millis(500))),
            ("30s", Some(Duration::from_secs(30))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("30", None),
            ("s", None),
            ("2d", Some(Duration::from_secs(172_800))),
            ("1w", None),
        ];
        for (s, want) in durs {
            assert_eq!(parse_duration(s).ok(), want, "{s}");
        }
    }

    #[test]
    fn example_config_parses_and_validates() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"))
                .unwrap();
        // The example's paths point at production locations; swap them for ones that exist here.
        let dir = std::env::temp_dir();
        let text = text
            .replace("/var/lib/govmx-media-scanner/spool", dir.to_str().unwrap())
            .replace(
                "/var/log/govmx/media-audit.jsonl",
                dir.join("audit.jsonl").to_str().unwrap(),
            )
            .replace(
                "/var/lib/govmx-media-scanner/mcs-request-secret",
                dir.join("mcs-request-secret").to_str().unwrap(),
            );
        let config: Config =
            govmx_service::config::from_yaml_str_validated(&text, "config.yaml").unwrap();
        assert_eq!(config.max_upload_size, ByteSize(50 << 20));
        assert_eq!(config.scanner_unavailable, UnavailablePolicy::Reject);
        assert_eq!(
            config.upstream_parts(),
            Some(("127.0.0.1:8008".into(), String::new()))
        );
        assert!(!config.mime.block.is_empty());
        assert!(config.mcs.enabled);
        assert_eq!(config.limits.max_concurrent_scans, 10);
        assert_eq!(
            config.signatures.warn_age,
            HumanDuration(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(config.signatures.refuse_age, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let base = "listen: 127.0.0.1:8009\nadmin_listen: 127.0.0.1:9109\nupstream: http://127.0.0.1:8008\nclamd:\n  addresses: [\"127.0.0.1:3310\"]\nmax_upload_size: 50MiB\nspool:\n  dir: /tmp\naudit_log: /tmp/a.jsonl\n";
        let parse = |extra: &str| {
            govmx_service::config::from_yaml_str_validated::<Config>(
                &format!("{base}{extra}"),
                "c.yaml",
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert_eq!(parse(""), Ok(()));
        assert_eq!(
            parse("tracing: {otlp_endpoint: \"http://otel:4318\", sample_ratio: 0.1}\n"),
            Ok(())
        );
        assert_eq!(
            parse("tracing: {otlp_endpoint: \"http://otel:4318\", sample_ratio: 2}\n"),
            Err(
                "c.yaml: invalid config: tracing.sample_ratio must be between 0.0 and 1.0, got 2"
                    .into()
            )
        );
        assert!(
            parse("tracing: {endpoint: \"http://otel:4318\"}\n")
                .unwrap_err()
                .contains("unknown field `endpoint`, expected one of `otlp_endpoint`")
        );
        assert_eq!(
            parse("scaner_unavailable: allow\n")
                .unwrap_err()
                .split(": ")
                .next(),
            Some("c.yaml:10:1")
        );
        assert!(
            parse("scanner_unavailable: maybe\n")
                .unwrap_err()
                .contains("unknown variant `maybe`")
        );
        assert!(
            parse("mime:\n  block: [\"image\"]\n")
                .unwrap_err()
                .contains("invalid media type pattern")
        );
        let bad = base
            .replace("http://127.0.0.1:8008", "https://synapse")
            .replace("/tmp\n", "relative\n");
        let err = govmx_service::config::from_yaml_str_validated::<Config>(&bad, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream must be an http:// URL")
                && err.contains("spool.dir must be an absolute path"),
            "{err}"
        );
    }
}
