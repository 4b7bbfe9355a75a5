//! `coldvault inspect`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {}

/// Runs `coldvault inspect`.
pub fn run(_args: InspectArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault inspect` is not available in this build",
    ))
}
