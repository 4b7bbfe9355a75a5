//! Fleets from the command line: the discovery flags shared by `coldvault vaults` and
//! `coldvault backup --subscription …|--all-subscriptions`, their resolution (shard, filters,
//! ARM endpoint), discovery itself, and the multi-vault backup.
//!
//! A fleet backup runs the single-vault backup ([`super::backup::backup_one`]) for each
//! selected vault, at most `--vault-concurrency` vaults at a time. Each vault connects on its
//! own, so each has its own throttle gate and budget, exactly as a single-vault run; one
//! archive per vault goes to the `-o` folder under the vault's name. A vault that fails (one
//! the identity may list but not read, one that does not answer) is named in the summary and
//! the others go on; the run exits 3 when any vault is partial or failed.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use super::backup::{BackupArgs, BackupPlan};
use super::connect_args::ConnectArgs;
use super::interrupt::Interrupts;
use crate::archive::{AbandonOutcome, CommitGate};
use crate::error::{CliError, ExitCode};
use crate::fleet::arm::{
    ArmClient, ArmError, PUBLIC_ARM_ENDPOINT, SubscriptionInfo, parse_endpoint,
};
use crate::fleet::select::Selection;
use crate::fleet::shard::Shard;
use crate::fleet::{DiscoveredVault, ResourceKind};
use crate::output::progress::{Progress, ProgressStyle, emit_json};
use crate::output::table::{Table, human_bytes};
use crate::vault::VaultUrl;

pub use crate::cli::fleet::{
    DEFAULT_VAULT_CONCURRENCY, DiscoveryArgs, FleetBackupArgs, JOB_INDEX_VARIABLE,
};

impl DiscoveryArgs {
    /// Whether a fleet was asked for (`--subscription` or `--all-subscriptions`).
    pub fn is_fleet(&self) -> bool {
        self.all_subscriptions || !self.subscriptions.is_empty()
    }
}

/// Which subscriptions to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscriptions {
    All,
    These(Vec<String>),
}

/// Discovery, resolved: everything checked before any request.
#[derive(Debug)]
pub struct DiscoveryPlan {
    pub subscriptions: Subscriptions,
    pub selection: Selection,
    pub endpoint: url::Url,
    /// A filter or a shard narrowed the fleet (an empty result is then no failure).
    pub narrowed: bool,
}

impl DiscoveryPlan {
    /// Resolves the flags; `names`/`excludes` are the vault-name globs (`vaults` takes them
    /// as `--name`/`--exclude` too). `job_index` is `JOB_COMPLETION_INDEX`'s value.
    pub fn resolve(
        args: &DiscoveryArgs,
        names: &[String],
        excludes: &[String],
        job_index: Option<&str>,
    ) -> Result<Self, CliError> {
        let subscriptions = if args.all_subscriptions {
            Subscriptions::All
        } else if args.subscriptions.is_empty() {
            return Err(CliError::usage(
                "say which vaults: --subscription ID (repeatable) or --all-subscriptions",
            ));
        } else {
            Subscriptions::These(args.subscriptions.clone())
        };
        let shard = resolve_shard(args.shard.as_deref(), args.shards, job_index)?;
        let names: Vec<String> = args.vault_names.iter().chain(names).cloned().collect();
        let excludes: Vec<String> = args
            .vault_excludes
            .iter()
            .chain(excludes)
            .cloned()
            .collect();
        let selection = Selection::new(
            &args.vault_tags,
            &args.resource_groups,
            &names,
            &excludes,
            shard,
        )
        .map_err(|e| {
            CliError::usage(e.to_string())
                .with_hint("globs take * ? [..]; tags are KEY=VALUE, e.g. --vault-tag env=prod")
        })?;
        let endpoint_text = args.arm_endpoint.as_deref().unwrap_or(PUBLIC_ARM_ENDPOINT);
        let endpoint = parse_endpoint(endpoint_text).map_err(|e| {
            CliError::usage(format!("--arm-endpoint: {e}")).with_hint(
                "give Azure Resource Manager's URL, e.g. https://management.azure.com/ \
                 (sovereign clouds: https://management.chinacloudapi.cn/, \
                 https://management.usgovcloudapi.net/)",
            )
        })?;
        let narrowed = shard.is_some()
            || !args.vault_tags.is_empty()
            || !args.resource_groups.is_empty()
            || !names.is_empty()
            || !excludes.is_empty();
        Ok(Self {
            subscriptions,
            selection,
            endpoint,
            narrowed,
        })
    }
}

/// `--shard I/N`, or `--shards N` with I from `JOB_COMPLETION_INDEX`.
pub fn resolve_shard(
    shard: Option<&str>,
    shards: Option<u32>,
    job_index: Option<&str>,
) -> Result<Option<Shard>, CliError> {
    let hint = "write --shard I/N with I from 0 to N-1, or --shards N in a Kubernetes Indexed \
                Job (JOB_COMPLETION_INDEX gives I)";
    match (shard, shards) {
        (Some(text), _) => text
            .parse::<Shard>()
            .map(Some)
            .map_err(|e| CliError::usage(format!("--shard: {e}")).with_hint(hint)),
        (None, Some(count)) => {
            let index = job_index.ok_or_else(|| {
                CliError::usage(format!("--shards {count} needs {JOB_INDEX_VARIABLE} set"))
                    .with_hint(hint)
            })?;
            let index: u32 = index.trim().parse().map_err(|_| {
                CliError::usage(format!(
                    "{JOB_INDEX_VARIABLE}={index:?} is not a shard index"
                ))
                .with_hint(hint)
            })?;
            Shard::new(index, count)
                .map(Some)
                .map_err(|e| CliError::usage(format!("--shards: {e}")).with_hint(hint))
        }
        (None, None) => Ok(None),
    }
}

/// A subscription that could not be read, named.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionFailure {
    pub subscription: String,
    pub error: String,
    pub hint: String,
}

/// What discovery found.
#[derive(Debug, Default)]
pub struct Found {
    /// The subscriptions read (or asked for).
    pub subscriptions: Vec<SubscriptionInfo>,
    /// Every resource found that passes the filters and the shard, by subscription then name.
    pub selected: Vec<DiscoveredVault>,
    /// Resources found in all, before filters and shard.
    pub total: usize,
    pub failures: Vec<SubscriptionFailure>,
    /// How discovery signed in, once it did.
    pub signed_in_with: Option<String>,
}

impl Found {
    /// The vaults a backup takes (live vaults only).
    pub fn vaults(&self) -> impl Iterator<Item = &DiscoveredVault> {
        self.selected
            .iter()
            .filter(|v| v.kind == ResourceKind::Vault)
    }
}

/// Subscriptions read at once.
const SUBSCRIPTION_CONCURRENCY: usize = 4;

/// Lists the subscriptions (with `--all-subscriptions`) and the Key Vault resources of each,
/// then applies the filters and the shard. A subscription that cannot be read is a named
/// failure; discovery fails as a whole only when ARM cannot be reached or signed in to.
pub async fn discover(plan: &DiscoveryPlan, connect: &ConnectArgs) -> Result<Found, CliError> {
    let client = ArmClient::new(plan.endpoint.clone(), &connect.options())
        .map_err(|e| arm_error("Azure Resource Manager", &e))?;
    let subscriptions = match &plan.subscriptions {
        Subscriptions::All => client
            .subscriptions()
            .await
            .map_err(|e| arm_error("listing subscriptions", &e))?,
        Subscriptions::These(ids) => ids
            .iter()
            .map(|id| SubscriptionInfo {
                id: id.clone(),
                tenant: None,
                name: None,
                state: None,
            })
            .collect(),
    };
    let results: Vec<(String, Result<Vec<DiscoveredVault>, ArmError>)> =
        futures::stream::iter(subscriptions.iter().map(|s| s.id.clone()))
            .map(|id| {
                let client = &client;
                async move {
                    let result = client.key_vaults(&id).await;
                    (id, result)
                }
            })
            .buffered(SUBSCRIPTION_CONCURRENCY)
            .collect()
            .await;
    let mut all = Vec::new();
    let mut failures = Vec::new();
    for (subscription, result) in results {
        match result {
            Ok(found) => all.extend(found),
            Err(ArmError::Authentication(auth)) => {
                return Err(CliError::failed(format!("Azure Resource Manager: {auth}"))
                    .with_hint(auth.hint()));
            }
            Err(err) => failures.push(SubscriptionFailure {
                subscription,
                hint: err.hint(),
                error: err.to_string(),
            }),
        }
    }
    all.sort_by(|a, b| {
        (
            a.subscription.to_ascii_lowercase(),
            a.name.to_ascii_lowercase(),
            a.kind,
        )
            .cmp(&(
                b.subscription.to_ascii_lowercase(),
                b.name.to_ascii_lowercase(),
                b.kind,
            ))
    });
    let total = all.len();
    Ok(Found {
        subscriptions,
        selected: plan.selection.apply(&all),
        total,
        failures,
        signed_in_with: client.signed_in_with().map(|c| c.to_string()),
    })
}

/// A failure of ARM as a whole as a command-line error.
fn arm_error(what: &str, err: &ArmError) -> CliError {
    CliError::failed(format!("{what}: {err}")).with_hint(err.hint())
}

/// What became of one vault in a fleet backup.
#[derive(Debug, Clone, Serialize)]
pub struct VaultOutcome {
    pub vault: String,
    pub subscription: String,
    pub resource_group: String,
    pub url: String,
    /// `ok`, `partial` (some items not captured) or `failed` (no archive).
    pub status: &'static str,
    /// Items captured (secrets + keys + certificates).
    pub items: u64,
    /// Items not captured (`partial`).
    pub not_captured: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub path: Option<std::path::PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs `coldvault backup --subscription …|--all-subscriptions`.
pub async fn run_backup(args: BackupArgs) -> Result<ExitCode, CliError> {
    let discovery = DiscoveryPlan::resolve(
        &args.fleet.discovery,
        &[],
        &[],
        std::env::var(JOB_INDEX_VARIABLE).ok().as_deref(),
    )?;
    check_fleet_output(args.output.as_deref())?;
    let plan = BackupPlan::resolve(&args)?;
    let json = args.json;
    let mut interrupts = Interrupts::listen()?;
    let started = Instant::now();
    let found = tokio::select! {
        found = discover(&discovery, &args.connect) => found?,
        stop = interrupts.recv() => return Err(stop.error("fleet backup", "no archive was written")),
    };
    report_discovery(&found, json);
    let targets: Vec<&DiscoveredVault> = found.vaults().collect();
    if targets.is_empty() && found.failures.is_empty() {
        return empty_fleet(&discovery, &found, json);
    }
    let gates: Vec<OnceLock<CommitGate>> = targets.iter().map(|_| OnceLock::new()).collect();
    let style = if json {
        ProgressStyle::JsonLines
    } else {
        ProgressStyle::Lines
    };
    let limit = usize::from(args.fleet.vault_concurrency);
    let plan_ref = &plan;
    let mut runs = futures::stream::iter(targets.iter().zip(&gates))
        .map(|(vault, gate)| async move {
            let progress = Progress::new(style).without_problem_lines();
            run_one(plan_ref, vault, &progress, gate).await
        })
        .buffer_unordered(limit);
    let mut outcomes = Vec::with_capacity(targets.len());
    loop {
        tokio::select! {
            next = runs.next() => match next {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            },
            stop = interrupts.recv() => {
                drop(runs);
                let kept = abandon_all(gates).await;
                let what = if kept.is_empty() {
                    "no archive of a vault in progress was written".to_owned()
                } else {
                    format!(
                        "archives already complete are kept: {}",
                        kept.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    )
                };
                return Err(stop.error("fleet backup", &what));
            }
        }
    }
    drop(runs);
    outcomes.sort_by(|a, b| {
        (
            a.subscription.to_ascii_lowercase(),
            a.vault.to_ascii_lowercase(),
        )
            .cmp(&(
                b.subscription.to_ascii_lowercase(),
                b.vault.to_ascii_lowercase(),
            ))
    });
    summarise(&outcomes, &found, started.elapsed().as_secs_f64(), json)
}

/// A fleet writes one archive per vault: `-o` must be a folder (the current one by default).
fn check_fleet_output(output: Option<&Path>) -> Result<(), CliError> {
    let Some(path) = output else { return Ok(()) };
    let text = path.as_os_str().to_string_lossy();
    let a_file = !path.is_dir() && (text.ends_with(".age") || path.symlink_metadata().is_ok());
    if text == "-" || a_file {
        return Err(CliError::usage(format!(
            "-o {text}: a fleet backup writes one archive per vault into a folder"
        ))
        .with_hint("give -o a folder (see --mkdir); each archive is named after its vault"));
    }
    Ok(())
}

/// Backs up one vault of the fleet; never fails the whole run.
async fn run_one(
    plan: &BackupPlan,
    vault: &DiscoveredVault,
    progress: &Progress,
    gate: &OnceLock<CommitGate>,
) -> VaultOutcome {
    let started = Instant::now();
    let mut outcome = VaultOutcome {
        vault: vault.name.clone(),
        subscription: vault.subscription.clone(),
        resource_group: vault.resource_group.clone(),
        url: vault.url.clone().unwrap_or_default(),
        status: "failed",
        items: 0,
        not_captured: 0,
        bytes: 0,
        seconds: 0.0,
        path: None,
        error: None,
    };
    let result = match vault.url.as_deref().map(VaultUrl::parse) {
        Some(Ok(url)) => super::backup::backup_one(plan, &url, progress, gate).await,
        Some(Err(err)) => Err(CliError::failed(format!(
            "{}: Azure Resource Manager gave an unusable vaultUri: {err}",
            vault.name
        ))),
        None => Err(CliError::failed(format!(
            "{}: Azure Resource Manager gave no vaultUri",
            vault.name
        ))),
    };
    progress.finish_vault();
    match result {
        Ok(done) => {
            outcome.status = if done.not_captured > 0 {
                "partial"
            } else {
                "ok"
            };
            outcome.items = done.items;
            outcome.not_captured = done.not_captured;
            outcome.bytes = done.bytes;
            outcome.seconds = done.seconds;
            outcome.path = done.path;
        }
        Err(err) => {
            outcome.seconds = started.elapsed().as_secs_f64();
            if progress.style() == ProgressStyle::JsonLines {
                emit_json(
                    "vault_failed",
                    &serde_json::json!({ "vault": vault.name, "error": err.message }),
                );
            } else {
                eprintln!("coldvault: error: {}", err.message);
                if let Some(hint) = &err.hint {
                    eprintln!("hint: {hint}");
                }
            }
            outcome.error = Some(err.message);
        }
    }
    outcome
}

/// What the single-vault backup reports back to a fleet run.
#[derive(Debug, Clone)]
pub struct SingleOutcome {
    pub items: u64,
    pub not_captured: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub path: Option<std::path::PathBuf>,
}

/// Abandons every vault's archive in progress (waiting for a commit under way) and answers
/// the archives that were already complete.
async fn abandon_all(gates: Vec<OnceLock<CommitGate>>) -> Vec<std::path::PathBuf> {
    let mut kept = Vec::new();
    for gate in gates.into_iter().filter_map(OnceLock::into_inner) {
        let outcome = tokio::task::spawn_blocking(move || gate.abandon())
            .await
            .unwrap_or(AbandonOutcome::Abandoned);
        if let AbandonOutcome::AlreadyCommitted(Some(path)) = outcome {
            kept.push(path);
        }
    }
    kept
}

/// Says on stderr (or as a `discovery` event) what discovery found and left out.
fn report_discovery(found: &Found, json: bool) {
    let vaults = found.vaults().count();
    let hsms: Vec<&str> = kind_names(found, ResourceKind::ManagedHsm);
    let deleted: Vec<&str> = kind_names(found, ResourceKind::DeletedVault);
    if json {
        emit_json(
            "discovery",
            &serde_json::json!({
                "subscriptions": found.subscriptions.iter().map(|s| &s.id).collect::<Vec<_>>(),
                "found": found.total,
                "vaults": found.vaults().map(|v| &v.name).collect::<Vec<_>>(),
                "managed_hsms_not_supported": hsms,
                "deleted_vaults_not_taken": deleted,
                "failures": found.failures,
            }),
        );
        return;
    }
    if let Some(how) = &found.signed_in_with {
        eprintln!("Azure Resource Manager: signed in with {how}");
    }
    eprintln!(
        "fleet: {vaults} vaults to back up in {} subscriptions ({} Key Vault resources found)",
        found.subscriptions.len(),
        found.total
    );
    if !hsms.is_empty() {
        eprintln!("  not supported (Managed HSM): {}", hsms.join(", "));
    }
    if !deleted.is_empty() {
        eprintln!(
            "  not taken (soft-deleted vault; recover it to back it up): {}",
            deleted.join(", ")
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

fn kind_names(found: &Found, kind: ResourceKind) -> Vec<&str> {
    found
        .selected
        .iter()
        .filter(|v| v.kind == kind)
        .map(|v| v.name.as_str())
        .collect()
}

/// No vault to back up and nothing failed: fine when filters or a shard narrowed the fleet
/// (a shard may be empty), a failure otherwise (an identity that sees no vault is a
/// misconfigured job, not a clean run).
fn empty_fleet(plan: &DiscoveryPlan, found: &Found, json: bool) -> Result<ExitCode, CliError> {
    if plan.narrowed {
        let message = format!(
            "no vault to back up: none of the {} Key Vault resources found matches the filters \
             or this shard",
            found.total
        );
        if json {
            emit_json(
                "fleet_summary",
                &serde_json::json!({ "vaults": [], "message": message }),
            );
        } else {
            eprintln!("{message}");
        }
        return Ok(ExitCode::Ok);
    }
    Err(CliError::failed(format!(
        "no vault found in {} subscriptions",
        found.subscriptions.len()
    ))
    .with_hint(
        "does the identity have Reader (Microsoft.KeyVault/vaults/read) on the subscriptions? \
         coldvault vaults --all-subscriptions shows what it sees",
    ))
}

/// The summary across vaults, and the exit code: 0 when every vault is complete, 3 naming
/// each partial or failed vault (and unreadable subscription), 1 when no vault was backed up.
fn summarise(
    outcomes: &[VaultOutcome],
    found: &Found,
    seconds: f64,
    json: bool,
) -> Result<ExitCode, CliError> {
    let ok = outcomes.iter().filter(|o| o.status == "ok").count();
    let partial: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.status == "partial")
        .map(|o| o.vault.as_str())
        .collect();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.status == "failed")
        .map(|o| o.vault.as_str())
        .collect();
    let items: u64 = outcomes.iter().map(|o| o.items).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    if json {
        emit_json(
            "fleet_summary",
            &serde_json::json!({
                "vaults": outcomes,
                "ok": ok,
                "partial": partial,
                "failed": failed,
                "subscription_failures": found.failures,
                "items": items,
                "bytes": bytes,
                "seconds": seconds,
            }),
        );
    } else {
        let mut table = Table::new([
            "VAULT",
            "SUBSCRIPTION",
            "ITEMS",
            "SIZE",
            "SECONDS",
            "STATUS",
        ])
        .align_right(2)
        .align_right(3)
        .align_right(4);
        for o in outcomes {
            let status = match (o.status, &o.error) {
                ("partial", _) => format!("partial ({} not captured)", o.not_captured),
                ("failed", Some(err)) => format!("FAILED: {err}"),
                (status, _) => status.to_owned(),
            };
            table.row([
                o.vault.clone(),
                o.subscription.clone(),
                o.items.to_string(),
                human_bytes(o.bytes),
                format!("{:.1}", o.seconds),
                status,
            ]);
        }
        eprint!("{}", table.render());
        eprintln!(
            "fleet: {} vaults: {ok} complete, {} partial, {} failed; {items} items, {} in {seconds:.1} s",
            outcomes.len(),
            partial.len(),
            failed.len(),
            human_bytes(bytes),
        );
    }
    let mut named: Vec<String> = Vec::new();
    if !failed.is_empty() {
        named.push(format!("failed: {}", failed.join(", ")));
    }
    if !partial.is_empty() {
        named.push(format!("partial: {}", partial.join(", ")));
    }
    if !found.failures.is_empty() {
        named.push(format!(
            "subscriptions not read: {}",
            found
                .failures
                .iter()
                .map(|f| f.subscription.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if named.is_empty() {
        return Ok(ExitCode::Ok);
    }
    let code = if ok + partial.len() == 0 {
        ExitCode::Failed
    } else {
        ExitCode::Partial
    };
    Err(CliError {
        code,
        message: format!("fleet backup incomplete: {}", named.join("; ")),
        hint: Some(
            "each vault's reason is above; a rerun backs up every vault again (archives are \
             never overwritten)"
                .to_owned(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_come_from_the_flag_or_the_job_index() {
        assert_eq!(
            resolve_shard(Some("1/3"), None, None).unwrap(),
            Some(Shard { index: 1, count: 3 })
        );
        assert_eq!(
            resolve_shard(None, Some(4), Some("3")).unwrap(),
            Some(Shard { index: 3, count: 4 })
        );
        assert_eq!(resolve_shard(None, None, Some("3")).unwrap(), None);
        let err = resolve_shard(None, Some(4), None).unwrap_err();
        assert_eq!(err.code, ExitCode::Usage);
        assert!(
            err.message.contains("JOB_COMPLETION_INDEX"),
            "{}",
            err.message
        );
        assert!(resolve_shard(None, Some(4), Some("4")).is_err());
        assert!(resolve_shard(None, Some(4), Some("x")).is_err());
        assert!(resolve_shard(Some("4/4"), None, None).is_err());
    }

    #[test]
    fn a_fleet_needs_a_folder() {
        assert!(check_fleet_output(None).is_ok());
        assert!(check_fleet_output(Some(Path::new("."))).is_ok());
        assert_eq!(
            check_fleet_output(Some(Path::new("-"))).unwrap_err().code,
            ExitCode::Usage
        );
        assert!(check_fleet_output(Some(Path::new("/nonexistent/x.tar.zst.age"))).is_err());
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(
            check_fleet_output(Some(file.path())).is_err(),
            "an existing file"
        );
        assert!(check_fleet_output(Some(Path::new("/nonexistent/new-folder"))).is_ok());
    }
}
