//! Strict YAML config loading: parse with `serde_norway` into the service's own type (which must
//! use `#[serde(deny_unknown_fields)]`), report errors as `file:line:column: message`, then run
//! the service's [`Validate`] check. Call [`load_validated`] before binding any port, and exit 64
//! (`EX_USAGE`) when it fails.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Semantic checks that serde cannot express (ranges, combinations, paths that must exist).
pub trait Validate {
    /// Every problem found, each as one lower-case sentence naming the key; empty when valid.
    fn validate(&self) -> Vec<String>;
}

/// What [`crate::service_main`] needs from a service's config beyond [`Validate`]: its optional
/// `tracing:` section (validate it in [`Validate`] with
/// [`crate::telemetry::tracing_problems`]).
pub trait ServiceConfig: Validate {
    /// The default `service.name` of its traces (the binary's name).
    const SERVICE_NAME: &'static str;

    /// The `tracing:` section; `None` means no traces.
    fn tracing(&self) -> Option<&crate::telemetry::TracingConfig>;
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not parse into the config type (syntax, unknown key, wrong type).
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file name (or another origin label).
        origin: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// 1-based column, 0 when unknown.
        column: usize,
        /// The parser message without its location suffix.
        message: String,
    },
    /// The config parsed but failed validation.
    #[error("{origin}: invalid config: {}", problems.join("; "))]
    Invalid {
        /// The file name (or another origin label).
        origin: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// Parses YAML text into `T`; `origin` names the source in errors (usually the file path).
pub fn from_yaml_str<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    serde_norway::from_str(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut message = err.to_string();
        // serde_norway appends " at line L column C"; we already print the location up front.
        if let Some(idx) = message.rfind(" at line ") {
            message.truncate(idx);
        }
        ConfigError::Parse {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    })
}

/// Parses YAML text into `T` and validates it.
pub fn from_yaml_str_validated<T: DeserializeOwned + Validate>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    let config: T = from_yaml_str(text, origin)?;
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        })
    }
}

/// Reads, parses and validates a YAML config file.
pub fn load_validated<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_yaml_str_validated(&text, &path.display().to_string())
}

/// Parses `30s`, `500ms`, `5m`, `72h`, `7d` (whole numbers; units `ms`, `s`, `m`, `h`, `d`): the
/// duration syntax of every govmx service config.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a whole number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "duration {text:?} has unknown unit {unit:?} (ms, s, m, h, d)"
            ));
        }
    };
    ms.map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// A config duration written as `"500ms"`, `"30s"`, `"5m"`, `"1h"` or `"2d"` (see
/// [`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).map_err(|why| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}`: {why}; expected e.g. \"500ms\", \"30s\", \"5m\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        port: u16,
        #[serde(default)]
        name: String,
    }

    impl Validate for Demo {
        fn validate(&self) -> Vec<String> {
            if self.port == 0 {
                vec!["port must not be 0".into()]
            } else {
                vec![]
            }
        }
    }

    #[track_caller]
    fn check(text: &str, expect: &str) {
        let got = match from_yaml_str_validated::<Demo>(text, "demo.yaml") {
            Ok(demo) => format!("ok {} {}", demo.port, demo.name),
            Err(err) => err.to_string(),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn strict_parse_and_validate() {
        check("port: 8\nname: x\n", "ok 8 x");
        check(
            "port: 8\nnmae: x\n",
            "demo.yaml:2:1: unknown field `nmae`, expected `port` or `name`",
        );
        check(
            "port: eight\n",
            "demo.yaml:1:7: port: invalid type: string \"eight\", expected u16",
        );
        check("port: 0\n", "demo.yaml: invalid config: port must not be 0");
    }

    #[test]
    fn missing_file() {
        let err = load_validated::<Demo>(Path::new("/nonexistent/govmx.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/govmx.yaml: cannot read config:"),
            "{err}"
        );
    }
}
