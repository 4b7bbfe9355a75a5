//! `coldvault extract`'s arguments and output formats.

use std::path::PathBuf;

use crate::cli::keys::DecryptArgs;

/// Output formats of `coldvault extract`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExtractFormat {
    /// `NAME='value'` lines; names upper-cased with `-` turned into `_` and `_` put before
    /// a leading digit (`1password` becomes `_1PASSWORD`), so every name is one a shell
    /// accepts. Two secrets that would get one name, or a value holding a NUL byte, cannot
    /// be written this way (exit 1, the secrets named).
    Dotenv,
    /// One JSON object: `{"name": "value", …}`.
    Json,
    /// A folder with one file per secret, named after it, holding the raw value.
    Dir,
}

/// Arguments of `coldvault extract`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault extract prod-kv-20261123T021700Z.tar.zst.age -i identity.txt --format dotenv -o prod.env
  coldvault extract prod-kv-20261123T021700Z.tar.zst.age -i identity.txt --format dir -o ./secrets

dotenv lines are sourced exactly by POSIX sh; a value holding a NUL byte has no dotenv form \
(environment variables end at NUL): extract refuses it, naming the secret; use --format json or dir.

Exit codes: 0 written, 1 failed (also: archive not found, a NUL in a dotenv value), 2 usage, \
3 some secrets have no plain value (named), 4 the archive failed verification.")]
pub struct ExtractArgs {
    /// The archive (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age): a file, or an az://, Blob Storage https://
    /// or s3:// URL of one (read straight from there).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    #[command(flatten)]
    pub keys: DecryptArgs,

    /// How to write the secrets.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: ExtractFormat,

    /// Where to write them (created with mode 0600; `-` for stdout with dotenv and json).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,

    /// Replace an existing output file (or write into an existing folder, replacing its
    /// regular files only: a symbolic link in a secret's place is refused, never followed).
    #[arg(long)]
    pub force: bool,
}
