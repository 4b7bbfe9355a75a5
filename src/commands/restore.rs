//! `coldvault restore`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {}

/// Runs `coldvault restore`.
pub async fn run(_args: RestoreArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault restore` is not available in this build",
    ))
}
