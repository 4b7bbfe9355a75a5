//! `coldvault keygen`'s arguments.

use std::path::PathBuf;

/// Arguments of `coldvault keygen`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault keygen -o ~/.config/coldvault/identity.txt
  coldvault keygen -o identity.txt > recipient.txt

Exit codes: 0 written, 1 failed (an existing file is never replaced), 2 usage.")]
pub struct KeygenArgs {
    /// Write the identity to FILE (created with mode 0600; an existing file is refused;
    /// missing folders are created with mode 0700) and print its recipient on stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}
