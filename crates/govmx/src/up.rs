//! `govmx up`: bring up the local sovereign network on loopback and stay in the foreground.
//!
//! Two homeservers (agency `127.0.0.2:8448`, citizen `127.0.0.3:8448`), each behind a govmx
//! federation gate (TLS from the run CA, the run's signed federation list enforced inbound and
//! on outbound CONNECT) and with a govmx media scanner on its client address (uploads scanned by
//! clamd with the test signatures, Synapse's own client listener behind it), then the federation
//! demo through the gates. Ctrl-C or SIGTERM stops everything.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use govmx_stack::module::ModuleSpec;
use govmx_stack::{ClamdSpec, DemoOutcome, HomeserverSpec, Stack, StackSpec};

/// The agency homeserver's federation address (its server name).
const AGENCY_FEDERATION: &str = "127.0.0.2:8448";
/// The agency homeserver's client listener.
const AGENCY_CLIENT: &str = "127.0.0.2:8008";
/// The citizen homeserver's federation address (its server name).
const CITIZEN_FEDERATION: &str = "127.0.0.3:8448";
/// The citizen homeserver's client listener.
const CITIZEN_CLIENT: &str = "127.0.0.3:8008";
/// clamd's TCP address.
const CLAMD: &str = "127.0.0.1:3310";

/// Arguments of `govmx up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// State directory: CA, keys, databases, configs and logs; reused by the next `govmx up`.
    #[arg(long, default_value = ".govmx")]
    state_dir: PathBuf,
    /// Wipe the state directory first (cold start).
    #[arg(long)]
    fresh: bool,
    /// Where the pinned Synapse venv is kept (default: `$XDG_CACHE_HOME/govmx` or `~/.cache/govmx`).
    #[arg(long, env = "GOVMX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// Arguments of `govmx setup`.
#[derive(Debug, clap::Args)]
pub(crate) struct SetupArgs {
    /// Where the pinned Synapse venv is kept (default: `$XDG_CACHE_HOME/govmx` or `~/.cache/govmx`).
    #[arg(long, env = "GOVMX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

/// Installs (or finds) the pinned Synapse venv and clamd, with the same code `govmx up` uses.
pub(crate) fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(govmx_stack::default_cache_dir);
    let python = govmx_stack::ensure_synapse(&cache_dir)?;
    let clamd = govmx_stack::ensure_clamd()?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "synapse {}: {}",
        govmx_stack::SYNAPSE_VERSION,
        python.display()
    )?;
    writeln!(out, "clamd: {}", clamd.display())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let result = runtime.block_on(up(args));
    // A signal during a first-time install leaves pip running on a blocking thread: don't wait for it.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // Signals are handled from the very start: Ctrl-C while starting also stops what already runs.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = sigterm.recv() => "SIGTERM",
        }
    };
    tokio::pin!(shutdown);

    if args.fresh {
        wipe(&args.state_dir)?;
    }
    // The govmx Synapse module in both homeservers, reading the run's signed bundle (the same
    // one the gates enforce) with its trust anchors.
    let state = std::path::absolute(&args.state_dir).context("resolving the state directory")?;
    let module = ModuleSpec {
        trust_file: Some(state.join("policy").join("trust.yaml")),
        ..ModuleSpec::new(state.join("policy").join("bundle"))
    };
    let mut spec = StackSpec::new(&args.state_dir)
        .homeserver(
            HomeserverSpec::new("agency", addr(AGENCY_FEDERATION), addr(AGENCY_CLIENT))
                .with_module(module.clone()),
        )
        .homeserver(
            HomeserverSpec::new("citizen", addr(CITIZEN_FEDERATION), addr(CITIZEN_CLIENT))
                .with_class("citizen")
                .with_module(module),
        )
        .clamd(ClamdSpec { addr: addr(CLAMD) })
        .media_scanners()
        .exporter();
    if let Some(cache_dir) = args.cache_dir {
        spec.cache_dir = cache_dir;
    }
    let bring_up = async {
        let stack = Stack::start(spec).await?;
        let demo = govmx_stack::run_demo(&stack, "agency", "citizen")
            .await
            .context("demo scenario")?;
        anyhow::Ok((stack, demo))
    };
    let (mut stack, demo) = tokio::select! {
        reason = &mut shutdown => {
            // Dropping `bring_up` dropped the partly started stack, which stopped its children.
            tracing::info!("{reason} during start-up: stopped");
            return Ok(ExitCode::SUCCESS);
        }
        result = bring_up => result?,
    };
    print_summary(&stack, &demo, started.elapsed())?;

    let mut liveness = tokio::time::interval(Duration::from_secs(1));
    let reason = loop {
        tokio::select! {
            reason = &mut shutdown => break reason,
            _ = liveness.tick() => {
                if let Some((name, status, tail)) = stack.exited_child() {
                    stack.shutdown();
                    anyhow::bail!("{name} exited unexpectedly with {status}; last log lines:\n{tail}");
                }
            }
        }
    };
    tracing::info!("{reason}: stopping");
    let stopping = Instant::now();
    stack.shutdown();
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("built-in addresses parse")
}

/// Removes the state directory, refusing anything that does not look like one.
fn wipe(state_dir: &Path) -> anyhow::Result<()> {
    if !state_dir.exists() {
        return Ok(());
    }
    let looks_like_state = ["ca", "policy", "homeservers", "clamd", "demo.json"]
        .iter()
        .any(|name| state_dir.join(name).exists())
        || std::fs::read_dir(state_dir)
            .map(|mut dir| dir.next().is_none())
            .unwrap_or(false);
    anyhow::ensure!(
        looks_like_state,
        "--fresh: {} does not look like a govmx state directory; not deleting it",
        state_dir.display()
    );
    std::fs::remove_dir_all(state_dir)
        .with_context(|| format!("--fresh: removing {}", state_dir.display()))
}

fn print_summary(stack: &Stack, demo: &DemoOutcome, total: Duration) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "govmx: local sovereign network is up (state: {})",
        stack.state_dir().display()
    )?;
    for hs in stack.homeservers() {
        writeln!(
            out,
            "  homeserver {:<8} server name {}",
            hs.label(),
            hs.server_name()
        )?;
        match stack.media_scanner(hs.label()) {
            Some(scanner) => {
                writeln!(
                    out,
                    "    client     {} (govmx media scanner: uploads scanned by clamd, the rest proxied)",
                    scanner.url()
                )?;
                writeln!(
                    out,
                    "      scanner admin http://{0}/metrics  http://{0}/readyz",
                    scanner.admin_addr()
                )?;
                writeln!(
                    out,
                    "      scanner audit {}",
                    scanner.audit_log_path().display()
                )?;
                writeln!(
                    out,
                    "      synapse client listener {} (behind the scanner)",
                    hs.client_url()
                )?;
            }
            None => writeln!(out, "    client     {}", hs.client_url())?,
        }
        match hs.gate() {
            Some(gate) => {
                writeln!(
                    out,
                    "    federation {} (govmx federation gate, TLS from the run CA)",
                    hs.federation_url()
                )?;
                writeln!(
                    out,
                    "      gate CONNECT proxy http://{} (Synapse's https_proxy)",
                    gate.connect_addr()
                )?;
                let admin = gate.admin_url();
                writeln!(
                    out,
                    "      gate admin  {admin}/metrics  {admin}/readyz  {admin}/explain?origin=<server name>"
                )?;
                writeln!(out, "      gate audit  {}", gate.audit_log_path().display())?;
                writeln!(
                    out,
                    "      synapse federation listener http://{} (plain, behind the gate)",
                    gate.upstream_addr()
                )?;
            }
            None => writeln!(out, "    federation {} (TLS, run CA)", hs.federation_url())?,
        }
        writeln!(out, "    log        {}", hs.process().log_path().display())?;
    }
    writeln!(out, "  run CA        {}", stack.ca().cert_path().display())?;
    writeln!(
        out,
        "  federation list {} (version {}, trust {})",
        stack.policy().bundle_dir().display(),
        stack
            .policy()
            .current_version()
            .map_or_else(|| "?".to_owned(), |v| v.to_string()),
        stack.policy().trust_path().display()
    )?;
    if let Some(clamd) = stack.clamd() {
        writeln!(
            out,
            "  clamd         {} (EICAR test signature loaded)",
            clamd.addr()
        )?;
    }
    if let Some(exporter) = stack.exporter() {
        writeln!(
            out,
            "  exporter      http://{}/metrics (Synapse, clamd, CA, policy; served from cache)",
            exporter.admin_addr()
        )?;
    }
    writeln!(out, "  demo logins")?;
    writeln!(
        out,
        "    agency official {}  password {}",
        demo.agency_login.0, demo.agency_login.1
    )?;
    writeln!(
        out,
        "    citizen         {}  password {}",
        demo.citizen_login.0, demo.citizen_login.1
    )?;
    let room_note = if demo.room_created {
        "created"
    } else {
        "reused"
    };
    writeln!(out, "  demo room     {} ({room_note})", demo.room_id)?;
    writeln!(
        out,
        "  demo message  {} sent on the agency server, seen on the citizen server after {} ms (scenario {} ms)",
        demo.event_id,
        demo.delivery.as_millis(),
        demo.total.as_millis()
    )?;
    writeln!(out, "  bring-up      {:.2} s total", total.as_secs_f64())?;
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()
}
