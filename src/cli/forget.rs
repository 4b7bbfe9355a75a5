//! `coldvault forget`'s arguments and the parser of its `--keep-*` counts.

use std::path::PathBuf;

/// Arguments of `coldvault forget`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault forget /backups --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  coldvault forget az://coldcopies/vaults --keep-last 30 --json

Each --keep-* takes a count, or -1 for unlimited. Per vault, archives are walked newest first; \
an archive is kept when it is the newest of an hour/day/ISO week/month/year (or one of the last \
N archives) while that option has count left — restic's forget policy. Exit codes: 0 done, 1 the \
destination cannot be read, 2 usage (no --keep-* given), 3 some archives could not be removed \
(each named).")]
pub struct ForgetArgs {
    /// Where the archives are: a folder, az://…, https://….blob…/… or s3://….
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,

    /// Keep the last N archives.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_last: Option<i64>,
    /// Keep the newest archive of each of the last N hours that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest archive of each of the last N days that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_daily: Option<i64>,
    /// Keep the newest archive of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest archive of each of the last N months that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest archive of each of the last N years that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_count)]
    pub keep_yearly: Option<i64>,

    /// Only these vaults' archives (repeatable); default: every vault found.
    #[arg(long = "vault", value_name = "NAME")]
    pub vaults: Vec<String>,

    /// Print what would go and why each kept archive stays; remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parses a `--keep-*` count: 0 or more, or -1 for unlimited.
pub fn keep_count(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err("expected a count (0 or more), or -1 for unlimited".to_owned()),
    }
}
