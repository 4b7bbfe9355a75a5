//! `coldvault vaults`: what a fleet backup would take. Lists the Key Vaults of the
//! subscriptions through Azure Resource Manager, with the same filters and shard as `backup
//! --subscription …`, and says of each whether it is backed up, with its soft-delete and
//! purge-protection state. Managed HSMs are listed as not supported, soft-deleted vaults as
//! not taken. `--check` also signs in to each vault and reads its first page of secret names,
//! so a vault the identity may list but not read is named before a backup finds it; values
//! are never read.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use super::connect_args::{ConnectArgs, connect};
use super::fleet::{DiscoveryPlan, Found, JOB_INDEX_VARIABLE, discover};
pub use crate::cli::vaults::VaultsArgs;
use crate::error::{CliError, ExitCode};
use crate::fleet::{DiscoveredVault, ResourceKind};
use crate::output::print_json;
use crate::output::table::Table;
use crate::vault::{VaultReader, VaultUrl};

/// Vaults checked at once by `--check`.
const CHECK_CONCURRENCY: usize = 8;

/// One row of the listing: the resource and what a backup does with it.
#[derive(Debug, Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    vault: &'a DiscoveredVault,
    /// `backup`, `not-supported` (Managed HSM) or `not-taken` (soft-deleted vault).
    action: &'static str,
    /// With `--check`, for vaults: whether the identity could read the vault's secret list.
    #[serde(skip_serializing_if = "Option::is_none")]
    readable: Option<bool>,
    /// With `--check`: why the vault could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_error: Option<String>,
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
    let mut checked = if args.check {
        check_readable(&found, &args.connect).await
    } else {
        BTreeMap::new()
    };
    let rows: Vec<Row<'_>> = found
        .selected
        .iter()
        .map(|vault| {
            let check = checked.remove(&vault.identity());
            Row {
                vault,
                action: match vault.kind {
                    ResourceKind::Vault => "backup",
                    ResourceKind::ManagedHsm => "not-supported",
                    ResourceKind::DeletedVault => "not-taken",
                },
                readable: check.as_ref().map(Result::is_ok),
                read_error: check.and_then(Result::err),
            }
        })
        .collect();
    let unreadable: Vec<String> = rows
        .iter()
        .filter(|r| r.readable == Some(false))
        .map(|r| r.vault.name.clone())
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
        print_table(&rows, args.check)?;
        print_totals(&plan, &found);
        for row in rows.iter().filter(|r| r.readable == Some(false)) {
            eprintln!(
                "coldvault: error: {}",
                row.read_error.as_deref().unwrap_or("not readable")
            );
        }
    }
    outcome(&found, &unreadable)
}

/// Signs in to each vault to back up and reads its first page of secret names, by identity:
/// `Ok` when that worked, else the failure as the command line words it.
async fn check_readable(
    found: &Found,
    connect_args: &ConnectArgs,
) -> BTreeMap<String, Result<(), String>> {
    let options = connect_args.options();
    futures::stream::iter(found.vaults())
        .map(|vault| {
            let options = &options;
            async move {
                let result = match vault.url.as_deref().map(VaultUrl::parse) {
                    Some(Ok(url)) => match connect(&url, options).await {
                        Ok(client) => match client.list_secrets().next().await {
                            None | Some(Ok(_)) => Ok(()),
                            Some(Err(err)) => {
                                Err(super::connect_args::vault_error(&vault.name, &err).message)
                            }
                        },
                        Err(err) => Err(err.message),
                    },
                    _ => Err(format!(
                        "{}: Azure Resource Manager gave no usable vaultUri",
                        vault.name
                    )),
                };
                (vault.identity(), result)
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await
}

fn print_table(rows: &[Row<'_>], check: bool) -> Result<(), CliError> {
    let mut header = vec![
        "NAME",
        "SUBSCRIPTION",
        "RESOURCE GROUP",
        "LOCATION",
        "SOFT-DELETE",
        "PURGE-PROTECTION",
        "TAGS",
        "BACKUP",
    ];
    if check {
        header.push("READABLE");
    }
    let mut table = Table::new(header);
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
        let mut cells = vec![
            v.name.clone(),
            v.subscription.clone(),
            v.resource_group.clone(),
            v.location.clone(),
            soft_delete,
            if v.purge_protection { "on" } else { "off" }.to_owned(),
            tags,
            v.kind.action().to_owned(),
        ];
        if check {
            cells.push(
                match row.readable {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                }
                .to_owned(),
            );
        }
        table.row(cells);
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

/// 0 when every subscription (and with `--check` every vault) was read; 3 naming those that
/// were not; 1 when no subscription was.
fn outcome(found: &Found, unreadable: &[String]) -> Result<ExitCode, CliError> {
    if found.failures.is_empty() && unreadable.is_empty() {
        return Ok(ExitCode::Ok);
    }
    let mut named = Vec::new();
    if !found.failures.is_empty() {
        let names = found
            .failures
            .iter()
            .map(|f| f.subscription.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        named.push(format!("subscriptions not read: {names}"));
    }
    if !unreadable.is_empty() {
        named.push(format!("vaults not readable: {}", unreadable.join(", ")));
    }
    let code = if !found.failures.is_empty() && found.failures.len() == found.subscriptions.len() {
        ExitCode::Failed
    } else {
        ExitCode::Partial
    };
    let hint = match found.failures.first() {
        Some(failure) => failure.hint.clone(),
        None => "the identity may list these vaults but not read them: grant it the backup \
                 permissions on each (README.md, \"Permissions\")"
            .to_owned(),
    };
    Err(CliError {
        code,
        message: named.join("; "),
        hint: Some(hint),
    })
}
