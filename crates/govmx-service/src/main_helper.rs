//! The `main` every service binary shares: initialise tracing, load and validate the config
//! *before* any port is bound (exit 64 on a bad config), `--check` stops there, else build a
//! tokio runtime and run the service until it returns.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::{LogFormat, Validate, init_tracing, load_validated};

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

/// Runs a service binary: tracing, config (exit 64 when bad), `--check`, then `serve(config)`
/// on a multi-threaded tokio runtime. An error from `serve` is logged with its whole chain
/// (`{:#}`) and exits 1.
pub fn service_main<C, F, Fut, E>(args: ServiceArgs<'_>, serve: F) -> ExitCode
where
    C: DeserializeOwned + Validate,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(err) = init_tracing("GOVMX_LOG", "info", args.log_format) {
        tracing::error!(%err, "cannot initialise logging");
        return ExitCode::from(EX_USAGE);
    }
    let config: C = match load_validated(args.config) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(EX_USAGE);
        }
    };
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
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
