//! `coldvault emulator`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault emulator`.
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {}

/// Runs `coldvault emulator`.
pub async fn run(_args: EmulatorArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault emulator` is not available in this build",
    ))
}
