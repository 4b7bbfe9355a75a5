//! `coldvault sync`'s arguments.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::cli::copy::{MappingArgs, parse_auth};
use crate::cli::scope::ScopeArgs;
use crate::copy::decide::Prefer;
use crate::vault::credentials::AuthMethod;

/// Requests in flight per vault unless `--concurrency` says otherwise.
const DEFAULT_CONCURRENCY: u16 = 32;

/// Arguments of `coldvault sync`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault sync kv-weu kv-neu --state kv-pair.json --dry-run
  coldvault sync kv-weu kv-neu --state kv-pair.json --prefer newest --json

Each side signs in on its own: COLDVAULT_A_* and COLDVAULT_B_* (TENANT_ID, CLIENT_ID, \
CLIENT_SECRET, CLIENT_CERTIFICATE_PATH, FEDERATED_TOKEN_FILE, AUTHORITY_HOST) replace AZURE_* for \
that side when any is set; --a-auth / --b-auth pin a method per side.

Without --state nothing is ever deleted (the first run is a union). With it, an item deleted on \
one side and unchanged on the other since the last run is soft-deleted there too.

Exit codes: 0 both sides in step, 1 failed, 2 usage, 3 partial (conflicts or items not synced, \
each named), 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP.")]
pub struct SyncArgs {
    /// The first store (side a): a Key Vault's name or full URL, or a KV v2 mount
    /// (bao+https://HOST:PORT/MOUNT[/PATH]).
    #[arg(value_name = "A")]
    pub a: String,

    /// The second store (side b).
    #[arg(value_name = "B")]
    pub b: String,

    /// The last run's state (a small JSON of version digests, no values); created when
    /// missing, replaced atomically at the end of each run.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// Settle conflicts (both sides changed an item): side a wins, side b wins, or the later
    /// change wins. Default: report and skip them.
    #[arg(long, value_enum)]
    pub prefer: Option<Prefer>,

    #[command(flatten)]
    pub scope: ScopeArgs,

    #[command(flatten)]
    pub mapping: MappingArgs,

    /// Print what would be done and change nothing (the state file is not written).
    #[arg(long)]
    pub dry_run: bool,

    /// JSON Lines on stdout: the plan, one event per item, a summary.
    #[arg(long)]
    pub json: bool,

    /// Requests in flight per vault.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// Sign in to side a only this way (default: --auth, else the chain).
    #[arg(long, value_name = "METHOD", value_parser = parse_auth)]
    pub a_auth: Option<AuthMethod>,

    /// Sign in to side b only this way (default: --auth, else the chain).
    #[arg(long, value_name = "METHOD", value_parser = parse_auth)]
    pub b_auth: Option<AuthMethod>,

    #[command(flatten)]
    pub connect: ConnectArgs,
}
