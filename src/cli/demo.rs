//! `coldvault demo`'s arguments.

use std::path::PathBuf;

/// Arguments of `coldvault demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault demo
  coldvault demo --dir ./demo

Exit codes: 0 every step did what it shows, 1 a step failed (named).")]
pub struct DemoArgs {
    /// The folder for everything the demo keeps (identity, archive, the local vault's state).
    /// It must not exist yet; default: a new folder under the system's temporary folder.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
