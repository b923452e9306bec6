//! `govmx`: the operator's command line.
//!
//! Thin glue: argument parsing (clap), logging set-up and dispatch. The work is done by
//! library crates (`govmx-policy`, `govmx-stack`); each subcommand lives in its own module.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod ca_cmd;
mod policy_cmd;
mod up;

/// govmx: a sovereign government Matrix network around Synapse.
#[derive(Debug, Parser)]
#[command(name = "govmx", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint, sign, verify, explain and diff policy documents.
    Policy(policy_cmd::PolicyArgs),
    /// Agency CA: init, enrollment tokens, issuance, revocation, CRL, log audit, chain checks.
    Ca(ca_cmd::CaArgs),
    /// Bring up a local sovereign network on loopback and stay in the foreground.
    Up(up::UpArgs),
    /// Install what `govmx up` and the tests run: the pinned Synapse venv and clamd.
    Setup(up::SetupArgs),
    /// Print shell completions to stdout.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Policy(args) => policy_cmd::run(args),
        Command::Ca(args) => ca_cmd::run(args),
        Command::Up(args) => up::run(args),
        Command::Setup(args) => up::setup(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "govmx", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(io::stderr(), "error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `GOVMX_LOG` takes an `EnvFilter` directive, `GOVMX_LOG_FORMAT=json` switches format.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GOVMX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    if std::env::var("GOVMX_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io_error| io_error.kind() == io::ErrorKind::BrokenPipe)
}
