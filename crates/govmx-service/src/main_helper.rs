//! The `main` every service binary shares: load and validate the config *before* any port is
//! bound, initialise logging (and traces when the config has a `tracing:` section), exit 64 on a
//! bad config, `--check` stops there, else build a tokio runtime and run the service until it
//! returns, then flush the traces still queued.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::config::ServiceConfig;
use crate::telemetry::Telemetry;
use crate::{LogFormat, init_telemetry, load_validated};

/// Exit code for a bad command line or config (`EX_USAGE`).
pub const EX_USAGE: u8 = 64;

/// What the service binaries' command lines share.
#[derive(Debug, Clone, Copy)]
pub struct ServiceArgs<'a> {
    /// The YAML config file.
    pub config: &'a Path,
    /// Log line format (the filter comes from `GOVMX_LOG`, default `info`).
    pub log_format: LogFormat,
    /// Only load and validate the config, then exit.
    pub check: bool,
}

/// Runs a service binary: config (exit 64 when bad), logging and traces, `--check`, then
/// `serve(config)` on a multi-threaded tokio runtime, then a bounded flush of the traces. An
/// error from `serve` is logged with its whole chain (`{:#}`) and exits 1.
pub fn service_main<C, F, Fut, E>(args: ServiceArgs<'_>, serve: F) -> ExitCode
where
    C: DeserializeOwned + ServiceConfig,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let loaded = load_validated::<C>(args.config);
    // Traces only for a valid config of a service that will run.
    let telemetry = match &loaded {
        Ok(config) if !args.check => Telemetry::from_config(config.tracing(), C::SERVICE_NAME),
        _ => Ok(Telemetry::disabled()),
    };
    let (telemetry, telemetry_error) = match telemetry {
        Ok(telemetry) => (telemetry, None),
        Err(error) => (Telemetry::disabled(), Some(error)),
    };
    if let Err(err) = init_telemetry("GOVMX_LOG", "info", args.log_format, &telemetry) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: cannot initialise logging: {err}");
        }
        return ExitCode::from(EX_USAGE);
    }
    let config = match loaded {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(error) = telemetry_error {
        tracing::error!("{error}");
        return ExitCode::FAILURE;
    }
    if args.check {
        tracing::info!(config = %args.config.display(), "config is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(config));
    drop(runtime);
    // Outside the runtime: the flush blocks (bounded by the export timeout).
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
