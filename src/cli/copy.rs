//! `coldvault copy`'s arguments, and the per-side `--…-auth` parser `sync` shares.

use crate::cli::connect::ConnectArgs;
use crate::cli::scope::ScopeArgs;
use crate::engine::restore::plan::{Mode, OnConflict};
use crate::kv::mapping::Granularity;
use crate::vault::credentials::AuthMethod;

/// Requests in flight per vault unless `--concurrency` says otherwise.
const DEFAULT_CONCURRENCY: u16 = 32;

/// Arguments of `coldvault copy`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault copy --from prod-kv --to dr-kv --dry-run
  coldvault copy --from prod-kv --to dr-kv --prune --json
  COLDVAULT_TO_TENANT_ID=… COLDVAULT_TO_CLIENT_ID=… COLDVAULT_TO_CLIENT_SECRET=… \\
    coldvault copy --from https://old.vault.azure.net --to https://new.vault.azure.net --mode plain
  VAULT_TOKEN=… coldvault copy --from bao+https://bao.example:8200/secret/app --to prod-kv --dry-run
  VAULT_TOKEN=… coldvault copy --from prod-kv --to bao+https://bao.example:8200/secret --prune

Each side signs in on its own: COLDVAULT_FROM_* and COLDVAULT_TO_* (TENANT_ID, CLIENT_ID, \
CLIENT_SECRET, CLIENT_CERTIFICATE_PATH, FEDERATED_TOKEN_FILE, AUTHORITY_HOST) replace AZURE_* for \
that side when any is set; --from-auth / --to-auth pin a method per side.

A KV v2 mount (bao+https://HOST:PORT/MOUNT[/PATH], vault+https://…) signs in with VAULT_TOKEN, \
BAO_TOKEN or AppRole (VAULT_ROLE_ID, VAULT_SECRET_ID). What a copy writes to or from a mount carries \
the tag coldvault-source; an item without it is never overwritten or pruned.

Exit codes: 0 everything copied or already right, 1 failed, 2 usage (also: KV paths whose names \
collide), 3 partial (some items not copied, each named), 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP. A rerun finishes a \
copy that was stopped.")]
pub struct CopyArgs {
    /// The store to copy from: a Key Vault's name (NAME.vault.azure.net) or full URL, or a KV v2
    /// mount (bao+https://HOST:PORT/MOUNT[/PATH]).
    #[arg(long, value_name = "NAME|URL")]
    pub from: String,

    /// The store to copy into (a Key Vault or a KV v2 mount).
    #[arg(long, value_name = "NAME|URL")]
    pub to: String,

    /// native: backup blobs (every version, same ids; same subscription and geography only).
    /// plain: secrets by value and exportable certificates, into any vault. auto: native where
    /// the target accepts the blobs, plain otherwise.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// Copy every enabled version of each secret by value, oldest first (a native copy always
    /// carries every version).
    #[arg(long)]
    pub all_versions: bool,

    /// An item that exists in the target and differs: leave it (skip), add the source's state
    /// as a new version (overwrite; plain only, nothing is deleted), or copy nothing (fail).
    #[arg(long, value_enum, default_value_t = OnConflict::Skip)]
    pub on_conflict: OnConflict,

    /// Recover items that are soft-deleted in the target, then bring them up to the source.
    #[arg(long)]
    pub recover_deleted: bool,

    #[command(flatten)]
    pub mapping: MappingArgs,

    /// Soft-delete the target's items (of the selection) that the source does not have.
    /// Never purges; refused on a vault without soft-delete.
    #[arg(long)]
    pub prune: bool,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// JSON Lines on stdout: the plan, one event per item, a summary.
    #[arg(long)]
    pub json: bool,

    /// Requests in flight per vault.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// Sign in to the source only this way (default: --auth, else the chain).
    #[arg(long, value_name = "METHOD", value_parser = parse_auth)]
    pub from_auth: Option<AuthMethod>,

    /// Sign in to the target only this way (default: --auth, else the chain).
    #[arg(long, value_name = "METHOD", value_parser = parse_auth)]
    pub to_auth: Option<AuthMethod>,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How KV paths become Key Vault names, for `copy`, `sync` and `restore` with a KV side.
#[derive(Debug, Clone, clap::Args)]
pub struct MappingArgs {
    /// With a KV side: one Key Vault secret per KV secret (the whole key/value map as JSON,
    /// content type application/json) or one per key of a KV secret.
    #[arg(long, value_enum, default_value_t = Granularity::Secret)]
    pub granularity: Granularity,

    /// With a KV side: how a KV path (and key) becomes a Key Vault name: {path}, {key} and
    /// the characters Key Vault names allow. Default: {path} ({path}--{key} with
    /// --granularity key); every character is encoded reversibly (`/` as `--`).
    #[arg(long, value_name = "TEMPLATE")]
    pub name_template: Option<String>,
}

impl Default for MappingArgs {
    /// Granularity secret with its default template: what no flag means.
    fn default() -> Self {
        Self {
            granularity: Granularity::Secret,
            name_template: None,
        }
    }
}

/// Parses `--from-auth` / `--to-auth` (and `sync`'s `--a-auth` / `--b-auth`).
pub fn parse_auth(text: &str) -> Result<AuthMethod, String> {
    text.parse()
        .map_err(|e: crate::vault::credentials::UnknownAuthMethod| e.to_string())
}
