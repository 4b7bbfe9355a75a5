//! `coldvault inspect`'s arguments.

use std::path::PathBuf;

use crate::cli::keys::DecryptArgs;

/// Arguments of `coldvault inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault inspect prod-kv-20261123T021700Z.tar.zst.age -i identity.txt
  coldvault inspect prod-kv-20261123T021700Z.tar.zst.age -i ~/.ssh/id_ed25519 --json

Exit codes: 0 listed, 1 cannot open (archive not found, wrong key, unreadable file), 2 usage, 4 the archive failed verification.")]
pub struct InspectArgs {
    /// The archive (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age): a file, or an az://, Blob Storage https://
    /// or s3:// URL of one (read straight from there).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    #[command(flatten)]
    pub keys: DecryptArgs,

    /// Print one JSON document instead of tables (docs/SCRIPTING.md).
    #[arg(long)]
    pub json: bool,
}
