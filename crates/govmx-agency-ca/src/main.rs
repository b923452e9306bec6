//! `govmx-agency-ca`: parse arguments, initialise tracing, load and validate the config *before*
//! binding any port (exit 64 on a bad config), then serve the issuance API until SIGTERM/Ctrl-C.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use govmx_agency_ca::{config::Config, server::Server};
use govmx_service::{LogFormat, Shutdown, init_tracing, load_validated};

/// Exit code for a bad command line or config (`EX_USAGE`).
const EX_USAGE: u8 = 64;

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
    if let Err(err) = init_tracing("GOVMX_LOG", "info", args.log_format) {
        tracing::error!(%err, "cannot initialise logging");
        return ExitCode::from(EX_USAGE);
    }
    let config: Config = match load_validated(&args.config) {
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
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await.context("cannot start")?;
        server
            .serve(Shutdown::on_signals())
            .await
            .context("server failed")
    })
}
