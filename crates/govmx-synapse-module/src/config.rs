//! The module's `config:` block in `homeserver.yaml` (handed over as JSON by the Python class).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Why the module configuration was refused. Synapse refuses to start with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not valid JSON for [`ModuleConfig`] (unknown key, wrong type, missing key).
    #[error("govmx module config: {0}")]
    Invalid(String),
    /// `server_name` is not a Matrix server name.
    #[error("govmx module config: server_name {name:?} is not a server name: {detail}")]
    ServerName {
        /// The configured value.
        name: String,
        /// Why it is not a server name.
        detail: String,
    },
    /// A file named in the configuration cannot be read.
    #[error("govmx module config: reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The module configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Our own server name (the Python class fills it from Synapse when absent).
    pub server_name: String,
    /// The policy directory: plain YAML documents or a signed bundle (with `SIGNATURES.json`).
    pub policy_dir: PathBuf,
    /// TrustAnchors file. When set, the directory must be a bundle signed by the threshold of
    /// pinned keys; when absent, plain policy files are loaded unsigned (development only).
    #[serde(default)]
    pub trust_file: Option<PathBuf>,
    /// Where the last verified bundle is copied, and loaded from at start when the policy
    /// directory is broken.
    #[serde(default)]
    pub last_known_good_dir: Option<PathBuf>,
    /// The runtime case grants (JSON), written by the `/_govmx/grants` API.
    #[serde(default)]
    pub grants_file: Option<PathBuf>,
    /// How often the policy directory and grants file are checked for changes.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// When a local user invites a remote user and only a grant is missing, let the invite go:
    /// the remote agency's homeserver holds its grants and decides (`federated_user_may_invite`).
    #[serde(default = "default_true")]
    pub defer_grants_to_remote: bool,
    /// Longest validity of a grant issued through the API, in days.
    #[serde(default = "default_max_grant_days")]
    pub max_grant_days: u32,
    /// The media scanner's scan API for `check_media_file_for_spam`; absent: no media scans.
    #[serde(default)]
    pub scanner: Option<ScannerConfig>,
}

/// The media scanner's scan API (`POST /_govmx/scanner/v1/scan`, bearer token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// Base URL of the scanner, e.g. `http://127.0.0.1:8090`.
    pub url: String,
    /// File holding the bearer token of the scan API.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Refuse media while the scanner is unavailable. Absent: the media rules'
    /// `scannerUnavailable` decides (and `reject` when no policy is loaded).
    #[serde(default)]
    pub fail_closed: Option<bool>,
    /// Also scan local uploads (normally the upload gate scans them before Synapse sees them).
    #[serde(default)]
    pub scan_local_media: bool,
}

fn default_reload_interval_ms() -> u64 {
    1000
}

fn default_true() -> bool {
    true
}

fn default_max_grant_days() -> u32 {
    90
}

impl ModuleConfig {
    /// Parses the JSON form of the `config:` block.
    pub fn from_json(json: &str) -> Result<ModuleConfig, ConfigError> {
        let config: ModuleConfig =
            serde_json::from_str(json).map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if config.reload_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "reload_interval_ms must be at least 1".to_owned(),
            ));
        }
        if config.max_grant_days == 0 {
            return Err(ConfigError::Invalid(
                "max_grant_days must be at least 1".to_owned(),
            ));
        }
        Ok(config)
    }

    /// The reload interval.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }
}

impl ScannerConfig {
    /// The scan endpoint URL.
    pub fn scan_url(&self) -> String {
        format!("{}/_govmx/scanner/v1/scan", self.url.trim_end_matches('/'))
    }

    /// The bearer token, read from `token_file` (trimmed).
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        match &self.token_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim().to_owned()))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let config =
            ModuleConfig::from_json(r#"{"server_name": "127.0.0.2:8448", "policy_dir": "/p"}"#)
                .unwrap();
        assert_eq!(config.reload_interval_ms, 1000);
        assert!(config.defer_grants_to_remote);
        assert!(config.scanner.is_none());
        let error =
            ModuleConfig::from_json(r#"{"server_name": "a", "policy_dir": "/p", "polcy": 1}"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("unknown field `polcy`"), "{error}");
        let error = ModuleConfig::from_json(r#"{"policy_dir": "/p"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("server_name"), "{error}");
    }

    #[test]
    fn scan_url_joins_cleanly() {
        let scanner = ScannerConfig {
            url: "http://127.0.0.1:9/".to_owned(),
            token_file: None,
            fail_closed: None,
            scan_local_media: false,
        };
        assert_eq!(
            scanner.scan_url(),
            "http://127.0.0.1:9/_govmx/scanner/v1/scan"
        );
    }
}
