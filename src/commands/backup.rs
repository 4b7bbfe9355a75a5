//! `coldvault backup`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {}

/// Runs `coldvault backup`.
pub async fn run(_args: BackupArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault backup` is not available in this build",
    ))
}
