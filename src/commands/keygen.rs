//! `coldvault keygen`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {}

/// Runs `coldvault keygen`.
pub fn run(_args: KeygenArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault keygen` is not available in this build",
    ))
}
