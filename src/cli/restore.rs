//! `coldvault restore`'s arguments, and the command-line values of `--mode` and
//! `--on-conflict` (the engine's types, which know nothing of clap).

use std::path::PathBuf;

use clap::builder::PossibleValue;

use crate::cli::connect::ConnectArgs;
use crate::cli::keys::DecryptArgs;
use crate::cli::scope::ScopeArgs;
use crate::engine::restore::plan::{Mode, OnConflict};

/// Requests in flight unless `--concurrency` says otherwise; the pacing gate keeps them
/// within the vault's throttle budget.
pub const DEFAULT_CONCURRENCY: u16 = 32;

/// Arguments of `coldvault restore`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault restore prod-kv-20260601T000000Z.tar.zst.age --vault prod-kv -i key.txt --dry-run
  coldvault restore ARCHIVE --vault prod-kv -i key.txt --name db-password --recover-deleted
  coldvault restore ARCHIVE --vault https://dr-kv.vault.azure.cn/ -i key.txt --mode plain --json

Exit codes: 0 everything restored or already right, 1 failed (nothing or not everything was \
attempted), 2 usage, 3 partial (some items not restored, each named), 4 archive failed \
verification, 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP. A rerun finishes a \
restore that was stopped.")]
pub struct RestoreArgs {
    /// The archive to restore from (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age): a file, or an az://,
    /// Blob Storage https:// or s3:// URL of one (read straight from there).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    /// The vault to restore into: a name (NAME.vault.azure.net) or a full URL; for a KV
    /// archive, a KV v2 mount: bao+https://HOST:PORT/MOUNT (or vault+https://…).
    #[arg(long = "vault", value_name = "NAME|URL")]
    pub vault: String,

    #[command(flatten)]
    pub decryption: DecryptArgs,

    #[command(flatten)]
    pub signers: crate::cli::destination::SignerArgs,

    /// native: the blobs (every version, same ids; same subscription and geography only).
    /// plain: secrets by value and exportable certificates, into any vault. auto: native where
    /// the target accepts the blob, plain otherwise.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// An item that exists in the target and differs: leave it (skip), add the archive's state
    /// as a new version (overwrite; plain only, nothing is deleted), or restore nothing (fail).
    #[arg(long, value_enum, default_value_t = OnConflict::Skip)]
    pub on_conflict: OnConflict,

    /// Recover items that are soft-deleted in the target, then bring them up to the archive.
    #[arg(long)]
    pub recover_deleted: bool,

    /// A KV archive restored into a Key Vault: how its paths become Key Vault names.
    #[command(flatten)]
    pub mapping: crate::cli::copy::MappingArgs,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// JSON Lines on stdout: the plan, one event per item, a summary.
    #[arg(long)]
    pub json: bool,

    /// Requests in flight.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl clap::ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Mode::Auto, Mode::Native, Mode::Plain]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Mode::Auto => PossibleValue::new("auto")
                .help("Native where the target accepts the blob, plain otherwise"),
            Mode::Native => PossibleValue::new("native")
                .help("Native backup blobs only (same subscription and geography)"),
            Mode::Plain => PossibleValue::new("plain")
                .help("Values only: secrets by value, certificates with an exportable key"),
        })
    }
}

impl clap::ValueEnum for OnConflict {
    fn value_variants<'a>() -> &'a [Self] {
        &[OnConflict::Skip, OnConflict::Overwrite, OnConflict::Fail]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            OnConflict::Skip => PossibleValue::new("skip").help("Leave it as it is"),
            OnConflict::Overwrite => PossibleValue::new("overwrite").help(
                "Write the archive's state as a new version (plain); native never deletes \
                 anything",
            ),
            OnConflict::Fail => PossibleValue::new("fail")
                .help("Refuse to restore anything while a conflict exists"),
        })
    }
}
