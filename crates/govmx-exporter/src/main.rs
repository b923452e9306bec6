//! `govmx-exporter`: parse arguments, then [`govmx_service::service_main`]: tracing, the config
//! loaded and validated *before* any port is bound (exit 64 when bad), then collect and serve
//! until SIGTERM/Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use govmx_exporter::{Exporter, config::Config};
use govmx_service::{LogFormat, ServiceArgs, Shutdown, service_main};

/// Security metrics exporter for a govmx network (Synapse admin API, clamd, agency CA, policy).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Path of the YAML config.
    #[arg(short, long, env = "GOVMX_EXPORTER_CONFIG")]
    config: PathBuf,
    /// Log format: plain or json. The filter comes from GOVMX_LOG (default "info").
    #[arg(long, env = "GOVMX_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,
    /// Only load and validate the config, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let service = ServiceArgs {
        config: &args.config,
        log_format: args.log_format,
        check: args.check,
    };
    service_main(service, |config: Config| async move {
        Exporter::bind(config)
            .await
            .context("cannot start")?
            .serve(Shutdown::on_signals())
            .await
            .context("server failed")
    })
}
