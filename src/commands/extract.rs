//! `coldvault extract`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {}

/// Runs `coldvault extract`.
pub fn run(_args: ExtractArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault extract` is not available in this build",
    ))
}
