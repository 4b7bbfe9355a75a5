//! `coldvault verify`'s arguments.

use std::path::PathBuf;

use crate::cli::keys::DecryptArgs;

/// Arguments of `coldvault verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault verify prod-kv-20261123T021700Z.tar.zst.age -i identity.txt
  COLDVAULT_PASSPHRASE=... coldvault verify archive.tar.zst.age --passphrase

Exit codes: 0 every rule of the format holds (an archive of 0 items is warned about on stderr), 1 \
cannot open (archive not found, wrong key, unreadable file), 2 usage, 4 the archive failed \
verification (the first problem is named) or holds fewer items than --expect-items.")]
pub struct VerifyArgs {
    /// The archive (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age): a file, or an az://, Blob Storage https://
    /// or s3:// URL of one (read straight from there).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    #[command(flatten)]
    pub keys: DecryptArgs,

    #[command(flatten)]
    pub signers: crate::cli::destination::SignerArgs,

    /// Print one JSON document on success (failures stay on stderr with exit code 4).
    #[arg(long)]
    pub json: bool,

    /// Fail (exit 4) when the archive holds fewer than N items (secrets, keys and
    /// certificates captured), e.g. the count the vault is known to hold.
    #[arg(long, value_name = "N")]
    pub expect_items: Option<u64>,
}
