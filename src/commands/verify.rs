//! `coldvault verify`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}

/// Runs `coldvault verify`.
pub fn run(_args: VerifyArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault verify` is not available in this build",
    ))
}
