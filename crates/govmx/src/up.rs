//! `govmx up` (placeholder, being written).

use std::process::ExitCode;

/// Arguments of `govmx up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {}

pub(crate) fn run(_args: UpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("govmx up: not built yet")
}
