//! The age key arguments every archive command shares: [`EncryptArgs`] (`-r`, `-R`,
//! `--passphrase`, `--passphrase-file`) for commands that write archives and [`DecryptArgs`]
//! (`-i`, `--passphrase`, `--passphrase-file`) for commands that read them, with the
//! [`LimitArgs`] that raise the reader's bounds. Clap structures and value parsers only:
//! `crate::commands::keys_args` reads the files and the passphrase they name.

use std::path::PathBuf;

/// How a command encrypts the archive it writes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EncryptArgs {
    /// Encrypt to RECIPIENT: age1…, "ssh-ed25519 …", "ssh-rsa …" or a plugin recipient
    /// (repeatable; each one alone opens the archive).
    // Hyphen values are taken as values so that a pasted PEM key (`-----BEGIN …`) reaches
    // the private-key check instead of clap's "unexpected argument" error, which echoes it.
    #[arg(
        short = 'r',
        long = "recipient",
        value_name = "RECIPIENT",
        allow_hyphen_values = true
    )]
    pub recipients: Vec<String>,

    /// Encrypt to every recipient listed in FILE, one per line (repeatable).
    #[arg(
        short = 'R',
        long = "recipients-file",
        value_name = "FILE",
        allow_hyphen_values = true
    )]
    pub recipients_files: Vec<PathBuf>,

    /// Encrypt with a passphrase instead: from --passphrase-file, COLDVAULT_PASSPHRASE, or a
    /// prompt on a terminal (never from the command line).
    #[arg(short = 'p', long)]
    pub passphrase: bool,

    /// Read the passphrase from the first line of FILE (implies --passphrase).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// How a command opens the archive it reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DecryptArgs {
    /// Decrypt with the identities in FILE: an age identity file or an SSH private key
    /// (repeatable).
    // Hyphen values: see `EncryptArgs::recipients`.
    #[arg(
        short = 'i',
        long = "identity",
        value_name = "FILE",
        allow_hyphen_values = true
    )]
    pub identities: Vec<PathBuf>,

    /// The archive is passphrase-encrypted: read the passphrase from --passphrase-file,
    /// COLDVAULT_PASSPHRASE, or a prompt on a terminal.
    #[arg(short = 'p', long)]
    pub passphrase: bool,

    /// Read the passphrase from the first line of FILE (implies --passphrase).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// Bounds on what the archive may hold.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The flag that raises [`crate::archive::ReadLimits::max_manifest_size`].
pub const MAX_MANIFEST_SIZE_FLAG: &str = "--max-manifest-size";
/// The flag that raises [`crate::archive::ReadLimits::max_entries`].
pub const MAX_ENTRIES_FLAG: &str = "--max-entries";
/// The flag that raises [`crate::archive::ReadLimits::max_entry_size`].
pub const MAX_ENTRY_SIZE_FLAG: &str = "--max-entry-size";
/// The flag that raises [`crate::archive::ReadLimits::max_total_size`].
pub const MAX_TOTAL_SIZE_FLAG: &str = "--max-total-size";

/// Where `--help` lists the limit flags.
const LIMITS_HEADING: &str = "Archive limits (raise only for archives you trust)";

/// The reader's bounds, each left at its default unless given. Anyone holding an archive's
/// public recipient can write one, so an archive is read within limits sized for a vault of
/// 100,000 items with all their versions (`docs/FORMAT.md`, "Threat model"); a larger
/// archive from a trusted source opens with a raised limit.
// Each flag names its heading: a `next_help_heading` would also file the flags declared
// after the flattened struct under it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Refuse a manifest.json larger than SIZE [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = LIMITS_HEADING)]
    pub max_manifest_size: Option<u64>,

    /// Refuse an archive of more than N entries [default: 1000000].
    #[arg(long, value_name = "N", help_heading = LIMITS_HEADING)]
    pub max_entries: Option<u64>,

    /// Refuse an entry (a backup blob, a secret version…) larger than SIZE [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = LIMITS_HEADING)]
    pub max_entry_size: Option<u64>,

    /// Refuse an archive larger than SIZE once decompressed [default: 16GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = LIMITS_HEADING)]
    pub max_total_size: Option<u64>,
}

/// Parses a size: a number of bytes, optionally followed by a unit, `KiB`, `MiB`, `GiB`,
/// `TiB` (`K`, `M`, `G`, `T` for short) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size: expected a number such as 512MiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use KiB, MiB, GiB or TiB (or KB, MB, GB, TB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}
