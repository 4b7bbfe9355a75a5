//! `coldvault demo`.

use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs `coldvault demo`.
pub async fn run(_args: DemoArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failed(
        "`coldvault demo` is not available in this build",
    ))
}
