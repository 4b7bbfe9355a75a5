//! `coldvault verify`: decrypts the whole archive offline and checks every rule of
//! `docs/FORMAT.md`. Exit 0 when all hold; exit 4 naming the first broken one; exit 1 when
//! the archive cannot be checked at all (no matching identity, unreadable file).

use std::path::PathBuf;

use serde::Serialize;

use crate::archive::{ArchiveReader, Counts};
use crate::commands::keys_args::DecryptArgs;
use crate::error::{CliError, ExitCode};
use crate::output::table::human_bytes;

/// Arguments of `coldvault verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault verify prod-kv-20261123T021700Z.tar.zst.age -i identity.txt
  COLDVAULT_PASSPHRASE=... coldvault verify archive.tar.zst.age --passphrase

Exit codes: 0 every rule of the format holds, 1 cannot open (archive not found, wrong key, unreadable file), 2 usage, 4 the archive failed verification (the first problem is named).")]
pub struct VerifyArgs {
    /// The archive (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    #[command(flatten)]
    pub keys: DecryptArgs,

    /// Print one JSON document on success (failures stay on stderr with exit code 4).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` document's body.
#[derive(Serialize)]
struct VerifyDocument {
    archive: String,
    ok: bool,
    format_version: u64,
    bytes: u64,
    entry_bytes: u64,
    counts: Counts,
}

/// Runs `coldvault verify`.
pub fn run(args: VerifyArgs) -> Result<ExitCode, CliError> {
    ArchiveReader::check_path(&args.archive)?;
    let decryption = args.keys.resolve()?;
    let reader = ArchiveReader::open(&args.archive, &decryption)?;
    let manifest = reader.manifest();
    let stats = reader.stats();
    if args.json {
        let body = VerifyDocument {
            archive: args.archive.display().to_string(),
            ok: true,
            format_version: manifest.format_version,
            bytes: stats.file_bytes,
            entry_bytes: stats.entry_bytes,
            counts: manifest.counts,
        };
        crate::output::print_json("verify", &body).map_err(CliError::stdout)?;
    } else {
        let c = manifest.counts;
        let line = format!(
            "ok: {}: {} entries ({}, {}, {}), {} of entry data checked against format v{}\n",
            args.archive.display(),
            c.entries,
            plural(c.secrets, "secret"),
            plural(c.keys, "key"),
            plural(c.certificates, "certificate"),
            human_bytes(stats.entry_bytes),
            manifest.format_version
        );
        crate::output::stdout::print(&line).map_err(CliError::stdout)?;
    }
    Ok(ExitCode::Ok)
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
