//! `coldvault backup`'s arguments, their defaults and value parsers.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::cli::keys::EncryptArgs;
use crate::cli::scope::ScopeArgs;

/// Requests in flight per vault unless `--concurrency` says otherwise. Key Vault allows about
/// 4,000 requests per 10 s; the shared pacing gate keeps this many workers within it.
pub const DEFAULT_CONCURRENCY: u16 = 64;

/// Arguments of `coldvault backup`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault backup --vault prod-kv -r age1... -o /backups
  coldvault backup --vault https://kv.vault.azure.cn/ -R team.keys --all-versions --json

Exit codes: 0 complete (an empty vault too), 1 failed (no archive; also a vault that could not be \
listed at all, or an archive whose folder could not be synced), 2 usage, 3 partial (some items \
not captured, each named in the manifest and the summary), 130/143/129 stopped by \
SIGINT/SIGTERM/SIGHUP (no archive, unless the message names one already complete).")]
pub struct BackupArgs {
    /// The vault to back up: a name (NAME.vault.azure.net) or a full URL. Repeat for several
    /// vaults: one archive each, independent failures. Or one HashiCorp Vault / OpenBao KV v2
    /// mount, alone: bao+https://HOST:PORT/MOUNT[/PATH] (token from VAULT_TOKEN or BAO_TOKEN).
    #[arg(long = "vault", value_name = "NAME|URL",
          required_unless_present_any = ["subscriptions", "all_subscriptions"],
          conflicts_with_all = ["subscriptions", "all_subscriptions"])]
    pub vaults: Vec<String>,

    /// A fleet instead of --vault: every vault found through Azure Resource Manager.
    #[command(flatten)]
    pub fleet: crate::cli::fleet::FleetBackupArgs,

    #[command(flatten)]
    pub encryption: EncryptArgs,

    /// Where the archive goes: a folder (default: the current one) for
    /// NAME-YYYYMMDDTHHMMSSZ.tar.zst.age, a file name ending in .age (one vault), or - for
    /// stdout. A trailing / always means a folder. The folder must exist (see --mkdir). Or
    /// off the machine: az://ACCOUNT/CONTAINER[/PREFIX],
    /// https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or s3://BUCKET[/PREFIX],
    /// streamed up and committed only when complete.
    #[arg(short = 'o', long = "output", value_name = "DIR|FILE|-|URL")]
    pub output: Option<PathBuf>,

    /// Create the -o folder (or the folder of -o FILE) when it does not exist, mode 0700.
    #[arg(long)]
    pub mkdir: bool,

    #[command(flatten)]
    pub off_tenant: crate::cli::destination::OutputArgs,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// Capture every version of every secret as a plain value (oldest first), not only the
    /// current one.
    #[arg(long)]
    pub all_versions: bool,

    /// Requests in flight per vault.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// JSON Lines on stdout: one event per item, then a summary per vault.
    #[arg(long)]
    pub json: bool,

    /// Stop at the first item that cannot be captured (no archive is written).
    #[arg(long)]
    pub fail_fast: bool,

    /// Seconds between the one-line progress reports on stderr when stderr is not a terminal
    /// (a log file, a pipe); 0 turns them off. Never under --json.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PROGRESS_INTERVAL,
          value_parser = parse_interval)]
    pub progress_interval: f64,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How often a long run reports progress in a log (`--progress-interval`).
pub const DEFAULT_PROGRESS_INTERVAL: f64 = 10.0;

/// Parses `--progress-interval`: seconds from 0 to a day.
pub fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err("expected a number of seconds from 0 to 86400".to_owned()),
    }
}
