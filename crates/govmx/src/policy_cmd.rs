//! `govmx policy …` (placeholder, being written).

use std::process::ExitCode;

/// Arguments of `govmx policy`.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {}

pub(crate) fn run(_args: PolicyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("govmx policy: not built yet")
}
