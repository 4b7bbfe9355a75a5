//! `coldvault vaults`: what a fleet backup would take. Lists the Key Vaults of the
//! subscriptions through Azure Resource Manager, with the same filters and shard as `backup
//! --subscription …`, and says of each whether it is backed up, with its soft-delete and
//! purge-protection state. Managed HSMs are listed as not supported, soft-deleted vaults as
//! not taken. Never reads a vault's contents.

use serde::Serialize;

use super::connect_args::ConnectArgs;
use super::fleet::{DiscoveryArgs, DiscoveryPlan, Found, JOB_INDEX_VARIABLE, discover};
use crate::error::{CliError, ExitCode};
use crate::fleet::{DiscoveredVault, ResourceKind};
use crate::output::print_json;
use crate::output::table::Table;

/// Arguments of `coldvault vaults`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault vaults --all-subscriptions
  coldvault vaults --subscription 0b1f… --vault-tag env=prod --json
  coldvault vaults --all-subscriptions --shard 2/5

Exit codes: 0 listed, 1 failed (Azure Resource Manager not reached, or no subscription read), \
2 usage, 3 partial (some subscriptions could not be read, each named).")]
pub struct VaultsArgs {
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// Only vaults whose name matches this glob (same as --vault-name; repeatable).
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,

    /// Leave out vaults whose name matches this glob (same as --vault-exclude; repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,

    /// One JSON document on stdout (docs/SCRIPTING.md).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// One row of the listing: the resource and what a backup does with it.
#[derive(Debug, Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    vault: &'a DiscoveredVault,
    /// `backup`, `not-supported` (Managed HSM) or `not-taken` (soft-deleted vault).
    action: &'static str,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Listing<'a> {
    arm_endpoint: &'a str,
    shard: Option<String>,
    subscriptions: &'a [crate::fleet::arm::SubscriptionInfo],
    found: usize,
    vaults: Vec<Row<'a>>,
    failures: &'a [super::fleet::SubscriptionFailure],
}

/// Runs `coldvault vaults`.
pub async fn run(args: VaultsArgs) -> Result<ExitCode, CliError> {
    let plan = DiscoveryPlan::resolve(
        &args.discovery,
        &args.names,
        &args.excludes,
        std::env::var(JOB_INDEX_VARIABLE).ok().as_deref(),
    )?;
    let found = discover(&plan, &args.connect).await?;
    let rows: Vec<Row<'_>> = found
        .selected
        .iter()
        .map(|vault| Row {
            vault,
            action: match vault.kind {
                ResourceKind::Vault => "backup",
                ResourceKind::ManagedHsm => "not-supported",
                ResourceKind::DeletedVault => "not-taken",
            },
        })
        .collect();
    if args.json {
        print_json(
            "vaults",
            &Listing {
                arm_endpoint: plan.endpoint.as_str(),
                shard: plan.selection.shard().map(|s| s.to_string()),
                subscriptions: &found.subscriptions,
                found: found.total,
                vaults: rows,
                failures: &found.failures,
            },
        )
        .map_err(CliError::stdout)?;
    } else {
        print_table(&rows)?;
        print_totals(&plan, &found);
    }
    outcome(&found)
}

fn print_table(rows: &[Row<'_>]) -> Result<(), CliError> {
    let mut table = Table::new([
        "NAME",
        "SUBSCRIPTION",
        "RESOURCE GROUP",
        "LOCATION",
        "SOFT-DELETE",
        "PURGE-PROTECTION",
        "TAGS",
        "BACKUP",
    ]);
    for row in rows {
        let v = row.vault;
        let soft_delete = match (v.soft_delete, v.soft_delete_retention_days) {
            (Some(true), Some(days)) => format!("on ({days} d)"),
            (Some(true), None) => "on".to_owned(),
            (Some(false), _) => "off".to_owned(),
            (None, _) => "-".to_owned(),
        };
        let tags = if v.tags.is_empty() {
            "-".to_owned()
        } else {
            v.tags
                .iter()
                .map(|(k, val)| format!("{k}={val}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        table.row([
            v.name.clone(),
            v.subscription.clone(),
            v.resource_group.clone(),
            v.location.clone(),
            soft_delete,
            if v.purge_protection { "on" } else { "off" }.to_owned(),
            tags,
            v.kind.action().to_owned(),
        ]);
    }
    crate::output::stdout::print(&table.render()).map_err(CliError::stdout)?;
    Ok(())
}

fn print_totals(plan: &DiscoveryPlan, found: &Found) {
    let taken = found.vaults().count();
    let shard = plan
        .selection
        .shard()
        .map(|s| format!(" (shard {s})"))
        .unwrap_or_default();
    eprintln!(
        "{taken} vaults to back up{shard}; {} Key Vault resources found in {} subscriptions",
        found.total,
        found.subscriptions.len()
    );
    if taken == 0 && found.failures.is_empty() && !plan.narrowed {
        eprintln!(
            "hint: no vault found: does the identity have Reader (Microsoft.KeyVault/vaults/read) \
             on the subscriptions?"
        );
    }
    for failure in &found.failures {
        eprintln!(
            "coldvault: error: subscription {}: {}",
            failure.subscription, failure.error
        );
        eprintln!("hint: {}", failure.hint);
    }
}

/// 0 when every subscription was read; 3 naming those that were not; 1 when none was.
fn outcome(found: &Found) -> Result<ExitCode, CliError> {
    if found.failures.is_empty() {
        return Ok(ExitCode::Ok);
    }
    let names = found
        .failures
        .iter()
        .map(|f| f.subscription.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let code = if found.failures.len() == found.subscriptions.len() {
        ExitCode::Failed
    } else {
        ExitCode::Partial
    };
    Err(CliError {
        code,
        message: format!("subscriptions not read: {names}"),
        hint: found.failures.first().map(|f| f.hint.clone()),
    })
}
