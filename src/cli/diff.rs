//! `coldvault diff`'s arguments.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::cli::keys::DecryptArgs;
use crate::cli::scope::ScopeArgs;

/// Arguments of `coldvault diff`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault diff prod-kv-20260601T000000Z.tar.zst.age --vault prod-kv -i key.txt
  coldvault diff ARCHIVE --vault prod-kv -i key.txt --include secrets --json

Exit codes: 0 no difference, 1 different (or failed: then an error is printed on stderr), \
2 usage, 4 archive failed verification.")]
pub struct DiffArgs {
    /// The archive to compare (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age): a file, or an az://,
    /// Blob Storage https:// or s3:// URL of one (read straight from there).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    /// The vault to compare with: a name (NAME.vault.azure.net) or a full URL.
    #[arg(long = "vault", value_name = "NAME|URL")]
    pub vault: String,

    #[command(flatten)]
    pub decryption: DecryptArgs,

    #[command(flatten)]
    pub signers: crate::cli::destination::SignerArgs,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}
