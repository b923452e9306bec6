//! `govmx-federation-gate`: parse the config, set up logging, bind, serve.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM, Ctrl-C), 64 for a bad configuration (nothing
//! was bound), 2 for any other failure. SIGHUP re-checks the policy bundle and reopens the audit
//! log. Logging: `GOVMX_LOG` (an `EnvFilter`), `--log-format plain|json`; traces over OTLP/HTTP
//! when the config has a `tracing:` section. The process runs without transparent huge pages
//! (see `run`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use govmx_federation_gate::Config;
use govmx_service::{LogFormat, ServiceConfig, Shutdown, Telemetry};

/// A reload of a 100,000-server list makes and frees ~10^6 small allocations; mimalloc does
/// that in about half the time of glibc's malloc (`cargo bench --bench reload`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The govmx federation gate: TLS edge and CONNECT proxy enforcing the signed federation list.
#[derive(Debug, Parser)]
#[command(name = "govmx-federation-gate", version, about)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, short, env = "GOVMX_GATE_CONFIG")]
    config: PathBuf,
    /// Only check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Log line format: plain or json.
    #[arg(long, default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config: Config = match govmx_service::load_validated(&args.config) {
        Ok(config) => config,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error}");
            }
            return ExitCode::from(64);
        }
    };
    if args.check {
        return ExitCode::SUCCESS;
    }
    let telemetry = Telemetry::from_config(
        config.tracing.as_ref(),
        <Config as ServiceConfig>::SERVICE_NAME,
    )
    .and_then(|telemetry| {
        govmx_service::init_telemetry("GOVMX_LOG", "info", args.log_format, &telemetry)?;
        Ok(telemetry)
    });
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error}");
            }
            return ExitCode::from(2);
        }
    };
    let result = run(config);
    // After the runtime is gone: flush the traces still queued (bounded).
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // No transparent huge pages for this process. mimalloc asks for them (MADV_HUGEPAGE), and
    // with the usual `defrag: madvise` every 2 MiB fault may compact memory synchronously: a
    // 100,000-server list reload then cost 180–320 ms of CPU instead of 100–150 ms, with a
    // larger RSS (docs/benchmarks.md). Best effort: the gate works either way.
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "cannot disable transparent huge pages");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let gate = govmx_federation_gate::start(config)
            .await
            .context("cannot start the gate")?;
        let shutdown = Shutdown::on_signals();
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: re-checking the federation list");
                    gate.reload_now();
                }
                () = shutdown.wait() => break,
            }
        }
        gate.shutdown().await;
        Ok(())
    })
}
