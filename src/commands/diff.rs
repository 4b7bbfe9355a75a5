//! `coldvault diff`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {}

/// Runs `coldvault diff`.
pub async fn run(_args: DiffArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault diff` is not available in this build",
    ))
}
