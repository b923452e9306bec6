//! `govmx-agency-ca`: parse arguments, then [`govmx_service::service_main`]: tracing, the config
//! loaded and validated *before* any port is bound (exit 64 when bad), then serve the issuance
//! API until SIGTERM/Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use govmx_agency_ca::{config::Config, server::Server};
use govmx_service::{LogFormat, ServiceArgs, Shutdown, service_main};

/// Agency CA: issues federation TLS and agency identity certificates over HTTPS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Path of the YAML config.
    #[arg(short, long, env = "GOVMX_AGENCY_CA_CONFIG")]
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
