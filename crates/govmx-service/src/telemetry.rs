//! Tracing setup shared by all services: an `EnvFilter` read from a service-specific environment
//! variable (falling back to a default directive) and a plain or JSON line format on stderr.

use std::str::FromStr;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line (for log shippers).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `plain` or `json`"
            )),
        }
    }
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The filter in the environment variable did not parse.
    #[error("invalid log filter in {var}: {source}")]
    Filter {
        /// The environment variable.
        var: String,
        /// The parse error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("tracing already initialised")]
    AlreadyInitialised,
}

/// Installs the global subscriber. The filter comes from `env_var` (e.g. `GOVMX_LOG`) when set,
/// else `default_filter` (e.g. `"warn,govmx=info"`).
pub fn init_tracing(
    env_var: &str,
    default_filter: &str,
    format: LogFormat,
) -> Result<(), TelemetryError> {
    let filter = match std::env::var(env_var) {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(spec).map_err(|source| TelemetryError::Filter {
                var: env_var.to_owned(),
                source,
            })?
        }
        _ => EnvFilter::try_new(default_filter).map_err(|source| TelemetryError::Filter {
            var: "default filter".to_owned(),
            source,
        })?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let res = match format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    res.map_err(|_| TelemetryError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!("plain".parse(), Ok(LogFormat::Plain));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
