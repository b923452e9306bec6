//! `govmx-media-scanner`: parse arguments, then [`govmx_service::service_main`]: tracing, the
//! config loaded and validated *before* any port is bound (exit 64 when bad), then serve until
//! SIGTERM/Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use govmx_media_scanner::{Server, config::Config};
use govmx_service::{LogFormat, ServiceArgs, Shutdown, service_main};

/// Media upload gate for Synapse: scans uploads with clamd before they reach the homeserver.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Path of the YAML config.
    #[arg(short, long, env = "GOVMX_MEDIA_SCANNER_CONFIG")]
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
        Server::bind(config)
            .await
            .context("cannot start")?
            .serve(Shutdown::on_signals())
            .await
            .context("server failed")
    })
}
