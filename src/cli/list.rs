//! `coldvault list`'s arguments.

use std::path::PathBuf;

/// Arguments of `coldvault list`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault list /backups
  coldvault list az://coldcopies/vaults/prod --json
  coldvault list s3://org-vault-backups/nightly

Exit codes: 0 listed (also when nothing is there), 1 the destination cannot be read, 2 usage.")]
pub struct ListArgs {
    /// Where the archives are: a folder, az://ACCOUNT/CONTAINER[/PREFIX],
    /// https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or s3://BUCKET[/PREFIX].
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,

    /// Only these vaults (repeatable).
    #[arg(long = "vault", value_name = "NAME")]
    pub vaults: Vec<String>,

    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}
