//! `coldvault vaults`'s arguments.

use crate::cli::connect::ConnectArgs;
use crate::cli::fleet::DiscoveryArgs;

/// Arguments of `coldvault vaults`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault vaults --all-subscriptions
  coldvault vaults --subscription 0b1f… --vault-tag env=prod --json
  coldvault vaults --all-subscriptions --shard 2/5
  coldvault vaults --all-subscriptions --check

Exit codes: 0 listed, 1 failed (Azure Resource Manager not reached, or no subscription read), \
2 usage, 3 partial (some subscriptions could not be read, or with --check some vaults, each \
named).")]
pub struct VaultsArgs {
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// Only vaults whose name matches this glob (same as --vault-name; repeatable).
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,

    /// Leave out vaults whose name matches this glob (same as --vault-exclude; repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,

    /// Also sign in to each vault and read its first page of secret names: a vault the
    /// identity may list but not read is named (exit 3). Values are never read.
    #[arg(long)]
    pub check: bool,

    /// One JSON document on stdout (docs/SCRIPTING.md).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}
