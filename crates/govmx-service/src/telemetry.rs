//! Tracing setup shared by all services: an `EnvFilter` read from a service-specific environment
//! variable (falling back to a default directive) and a plain or JSON line format on stderr.

use std::io::IsTerminal as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

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
            // Colour codes only for a terminal, never into log files.
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
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

/// A per-second budget for log lines about events that an attacker can produce at line rate
/// (denials): the first `per_second` in each second are logged, the rest only counted, and the
/// next logged line reports how many were left out. Lock-free; the audit log and the metrics
/// still see every event.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u64,
    /// `second << 32 | count` of the current window.
    window: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines (at least 1).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: u64::from(per_second.max(1)),
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged at `now_secs` (any monotonic second counter). `Some(n)`:
    /// log it, noting `n` earlier lines that were left out; `None`: only count it.
    pub fn admit(&self, now_secs: u64) -> Option<u64> {
        let second = now_secs & 0xffff_ffff;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window_second, count) = (current >> 32, current & 0xffff_ffff);
            let next = if window_second == second {
                if count >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
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

    #[test]
    fn budget_admits_per_second_and_reports_what_it_left_out() {
        let budget = LogBudget::new(2);
        assert_eq!(budget.admit(10), Some(0));
        assert_eq!(budget.admit(10), Some(0));
        assert_eq!(budget.admit(10), None);
        assert_eq!(budget.admit(10), None);
        assert_eq!(
            budget.admit(11),
            Some(2),
            "the next second reports the two left out"
        );
        assert_eq!(budget.admit(11), Some(0));
        assert_eq!(budget.admit(11), None);
    }
}
