//! `coldvault restore`: an archive's items back into a vault, planned then applied.
//!
//! The archive is opened and verified, the target is listed once (live and soft-deleted
//! items), each item present on both sides is read and compared by digest, and every item gets
//! one plan line ([`super::restore_plan::decide`]). `--dry-run` prints the plan and stops.
//! Applying it writes natively (the backup blob: every version, same ids) or plainly (secret
//! versions by value, certificates by import), recovers soft-deleted items when asked, and
//! waits out Azure's settling answers (409 `ObjectIsBeingDeleted` after a purge, 404 after a
//! recover). A rerun plans again from what the target holds, so it finishes an interrupted run
//! and leaves alone what is already right. Nothing is ever deleted or purged.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;
use futures::StreamExt;
use serde::Serialize;

use super::connect_args::{ConnectArgs, connect, parse_vault, vault_error};
use super::interrupt::Interrupts;
use super::keys_args::DecryptArgs;
use super::restore_plan::{
    Action, ArchiveContents, ArchivedItem, LiveView, Method, Mode, NativeTarget, OnConflict,
    PlannedItem, Policy, TargetListing, TargetState, compare, decide, inspect_live, list_target,
    read_archive, vault_attributes, vault_kind,
};
use super::scope::{Scope, ScopeArgs};
use crate::archive::{Decryption, Kind};
use crate::error::{CliError, ExitCode};
use crate::output::progress::{ItemEvent, Progress, ProgressStyle, emit_json};
use crate::output::table::Table;
use crate::vault::azure::{AzureVault, ConnectOptions, settle_backoff};
use crate::vault::{
    Attributes, CertificateImport, NewSecretVersion, VaultError, VaultReader, VaultUrl, VaultWriter,
};

/// Requests in flight unless `--concurrency` says otherwise; the pacing gate keeps them
/// within the vault's throttle budget.
const DEFAULT_CONCURRENCY: u16 = 32;

/// How long one item may wait for Azure to settle (a purge window, a recover) before it is
/// reported as not restored.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

/// Arguments of `coldvault restore`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault restore prod-kv-20260601T000000Z.tar.zst.age --vault prod-kv -i key.txt --dry-run
  coldvault restore ARCHIVE --vault prod-kv -i key.txt --name db-password --recover-deleted
  coldvault restore ARCHIVE --vault https://dr-kv.vault.azure.cn/ -i key.txt --mode plain --json

Exit codes: 0 everything restored or already right, 1 failed (nothing or not everything was \
attempted), 2 usage, 3 partial (some items not restored, each named), 4 archive failed \
verification, 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP. A rerun finishes a \
restore that was stopped.")]
pub struct RestoreArgs {
    /// The archive to restore from (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    /// The vault to restore into: a name (NAME.vault.azure.net) or a full URL.
    #[arg(long = "vault", value_name = "NAME|URL")]
    pub vault: String,

    #[command(flatten)]
    pub decryption: DecryptArgs,

    #[command(flatten)]
    pub signers: super::destination::SignerArgs,

    /// native: the blobs (every version, same ids; same subscription and geography only).
    /// plain: secrets by value and exportable certificates, into any vault. auto: native where
    /// the target accepts the blob, plain otherwise.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// An item that exists in the target and differs: leave it (skip), add the archive's state
    /// as a new version (overwrite; plain only, nothing is deleted), or restore nothing (fail).
    #[arg(long, value_enum, default_value_t = OnConflict::Skip)]
    pub on_conflict: OnConflict,

    /// Recover items that are soft-deleted in the target, then bring them up to the archive.
    #[arg(long)]
    pub recover_deleted: bool,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// JSON Lines on stdout: the plan, one event per item, a summary.
    #[arg(long)]
    pub json: bool,

    /// Requests in flight.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The resolved command: everything read, parsed and checked before any request is sent.
#[derive(Debug)]
pub struct RestorePlan {
    archive: PathBuf,
    target: VaultUrl,
    decryption: Decryption,
    scope: Scope,
    policy: Policy,
    dry_run: bool,
    json: bool,
    concurrency: usize,
    connect: ConnectOptions,
}

impl RestorePlan {
    /// Checks the arguments and reads what they point at (identities, passphrase).
    pub fn resolve(args: &RestoreArgs) -> Result<Self, CliError> {
        let target = parse_vault(&args.vault)?;
        let archive = super::destination::check_archive(&args.archive)?;
        args.signers.check(&archive)?;
        Ok(Self {
            archive: args.archive.clone(),
            target,
            decryption: args.decryption.resolve()?,
            scope: Scope::resolve(&args.scope)?,
            policy: Policy {
                mode: args.mode,
                on_conflict: args.on_conflict,
                recover_deleted: args.recover_deleted,
            },
            dry_run: args.dry_run,
            json: args.json,
            concurrency: usize::from(args.concurrency),
            connect: args.connect.options(),
        })
    }
}

impl RestorePlan {
    /// Reaches the target with these options instead of the ones resolved from the command
    /// line and this process's environment (for callers embedding a restore).
    pub fn with_connect_options(mut self, options: ConnectOptions) -> Self {
        self.connect = options;
        self
    }
}

/// Runs `coldvault restore`.
pub async fn run(args: RestoreArgs) -> Result<ExitCode, CliError> {
    execute(&RestorePlan::resolve(&args)?).await
}

/// Plans and, unless it is a dry run, applies a resolved restore; prints what `restore`
/// prints and answers its exit code.
pub async fn execute(plan: &RestorePlan) -> Result<ExitCode, CliError> {
    let progress = Progress::new(ProgressStyle::detect(plan.json));
    // SIGINT, SIGTERM and SIGHUP end a restore alike (exit 130 / 143 / 129): what was written
    // stays written, and a rerun plans from what the target now holds.
    let mut interrupts = Interrupts::listen()?;
    let outcome = tokio::select! {
        outcome = restore(plan, &progress) => outcome,
        stop = interrupts.recv() => {
            progress.finish_vault();
            return Err(stop.error(
                plan.target.name(),
                "run the same command again to finish the restore",
            ));
        }
    };
    progress.finish_vault();
    outcome
}

/// Opens the archive off the async threads; a `--name` glob that matches no item of the
/// archive is an error (exit 1) naming the glob and the closest names.
pub async fn open_archive(
    path: &std::path::Path,
    decryption: &Decryption,
    scope: &Scope,
) -> Result<ArchiveContents, CliError> {
    let (path, decryption, owned_scope) = (path.to_owned(), decryption.clone(), scope.clone());
    let contents =
        tokio::task::spawn_blocking(move || read_archive(&path, &decryption, &owned_scope))
            .await
            .map_err(|e| CliError::failed(format!("the archive reader stopped: {e}")))?
            .map_err(CliError::from)?;
    scope.check_names_match(
        contents
            .names
            .iter()
            .map(|(kind, name)| (super::restore_plan::scope_kind(*kind), name.as_str())),
    )?;
    Ok(contents)
}

/// Reads the target's state of every archived item present there, concurrently.
pub async fn inspect_all(
    vault: &AzureVault,
    contents: &ArchiveContents,
    listing: &TargetListing,
    concurrency: usize,
) -> Vec<Option<Result<LiveView, String>>> {
    futures::stream::iter(contents.items.iter())
        .map(|item| async move {
            let key = (item.kind, item.name.to_ascii_lowercase());
            let props = listing.live.get(&key)?;
            Some(
                inspect_live(vault, item, props)
                    .await
                    .map_err(|e| e.to_string()),
            )
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// Where one item stands in the target, from the listing and its inspection.
pub fn target_state<'a>(
    item: &ArchivedItem,
    listing: &TargetListing,
    view: &'a Option<Result<LiveView, String>>,
) -> TargetState<'a> {
    let key = (item.kind, item.name.to_ascii_lowercase());
    match view {
        Some(Ok(view)) => TargetState::Live(Ok(view)),
        Some(Err(reason)) => TargetState::Live(Err(reason.as_str())),
        None if listing.deleted.contains_key(&key) => TargetState::Deleted,
        None if item.kind == Kind::Secret && listing.managed_secrets.contains(&key.1) => {
            TargetState::ManagedName
        }
        None => TargetState::Absent,
    }
}

async fn restore(plan: &RestorePlan, progress: &Progress) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let target = plan.target.name().to_owned();
    let contents = open_archive(&plan.archive, &plan.decryption, &plan.scope).await?;
    let vault = connect(&plan.target, &plan.connect).await?;
    progress.start_vault(&target);
    let listing = list_target(&vault, &plan.scope)
        .await
        .map_err(|e| vault_error(&target, &e))?;
    for note in &listing.notes {
        progress.note(&format!("{target}: {note}"));
    }
    // The dry run and the real run learn the same way whether native blobs are accepted, so
    // they plan alike.
    let native_blobs = probe_native(&vault, &contents, &listing, &plan.target, plan.policy).await;
    if let Some(note) = &native_blobs.note {
        progress.note(&format!("{target}: {note}"));
    }
    let views = inspect_all(&vault, &contents, &listing, plan.concurrency).await;
    let lines: Vec<PlannedItem> = contents
        .items
        .iter()
        .zip(&views)
        .map(|(item, view)| {
            decide(
                item,
                target_state(item, &listing, view),
                plan.policy,
                native_blobs.state,
            )
        })
        .collect();

    if plan.json {
        for line in &lines {
            emit_json(
                "plan",
                &PlanEvent {
                    vault: &target,
                    line,
                },
            );
        }
    } else if plan.dry_run {
        crate::output::stdout::print(&plan_table(&lines)).map_err(CliError::stdout)?;
    }

    let mut summary = Summary::new(plan, &contents, &target);
    summary.planned = ActionCounts::of(&lines);
    summary.native_blobs = Some(native_blobs.clone());
    // `--mode native` into a vault that refuses the blobs stops before any write, as the
    // first refused write would stop it.
    if plan.policy.mode == Mode::Native
        && native_blobs.state == NativeTarget::Refuses
        && lines.iter().any(|l| l.needs_native)
    {
        return Err(refused_natively(&target));
    }
    if plan.policy.on_conflict == OnConflict::Fail
        && lines.iter().any(|l| l.action == Action::Conflict)
    {
        let names: Vec<String> = lines
            .iter()
            .filter(|l| l.action == Action::Conflict)
            .map(|l| format!("{} {}", l.kind, l.name))
            .collect();
        return Err(CliError::failed(format!(
            "{target}: {} conflicts, nothing restored (--on-conflict fail): {}",
            names.len(),
            names.join(", ")
        ))
        .with_hint("see them with --dry-run; use --on-conflict skip or overwrite"));
    }
    if plan.dry_run {
        summary.dry_run = true;
        for line in &lines {
            if line.action.is_failure() {
                summary
                    .not_restored
                    .push(NotRestored::of(line, line_reason(line)));
            } else if line.unverified {
                summary
                    .unverified
                    .push(NotRestored::of(line, line_reason(line)));
            }
        }
        summary.finish(started, &vault);
        summary.print(progress);
        return Ok(summary.exit_code());
    }

    progress.add_total(lines.len() as u64);
    let shared = Arc::new(Applier {
        vault: vault.clone(),
        mode: plan.policy.mode,
        target: target.clone(),
        native_refused: AtomicBool::new(native_blobs.state == NativeTarget::Refuses),
    });
    let work: Vec<(&ArchivedItem, &PlannedItem)> = contents.items.iter().zip(&lines).collect();
    // The first native attempt goes alone: its answer (accepted, or "Cannot decrypt backup
    // blob" from another subscription or geography) decides how every other item is written.
    let probe = work
        .iter()
        .position(|(_, l)| {
            l.action == Action::Create && matches!(l.method, Some(Method::Native | Method::Auto))
        })
        .filter(|_| plan.policy.mode != Mode::Plain);
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(work.len());
    if let Some(index) = probe {
        let (item, line) = work[index];
        let outcome = shared.apply(item, line).await;
        if let Outcome::Fatal(err) = outcome {
            return Err(err);
        }
        outcomes.push((index, outcome));
    }
    let rest = work
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != probe)
        .map(|(i, (item, line))| {
            let shared = shared.clone();
            async move { (i, shared.apply(item, line).await) }
        });
    let mut stream = futures::stream::iter(rest).buffer_unordered(plan.concurrency);
    for (index, outcome) in outcomes.iter() {
        report_item(progress, &target, work[*index], outcome, plan.json);
    }
    while let Some((index, outcome)) = stream.next().await {
        if let Outcome::Fatal(err) = outcome {
            return Err(err);
        }
        report_item(progress, &target, work[index], &outcome, plan.json);
        outcomes.push((index, outcome));
    }
    drop(stream);
    outcomes.sort_by_key(|(i, _)| *i);
    for (index, outcome) in &outcomes {
        summary.count(work[*index].0, work[*index].1, outcome);
    }
    progress.finish_vault();
    summary.finish(started, &vault);
    summary.print(progress);
    Ok(summary.exit_code())
}

/// `--mode native` into a vault that refuses the archive's blobs: exit 1, nothing written.
fn refused_natively(target: &str) -> CliError {
    CliError::failed(format!(
        "{target}: the vault refused the archive's native backup blobs (Cannot decrypt backup \
         blob): it is in another subscription or geography than the source"
    ))
    .with_hint(
        "use --mode plain (secrets by value, certificates with an exportable key; keys cannot \
         move between subscriptions), or restore into a vault of the source's subscription and \
         geography",
    )
}

/// What a run knows about the target taking the archive's native blobs, and how it knows.
#[derive(Debug, Clone, Serialize)]
pub struct NativeBlobs {
    /// Accepts, refuses or unverified.
    pub state: NativeTarget,
    /// The evidence, or why there is none.
    pub reason: String,
    /// Something to tell people beyond the summary (a probe that wrote after all).
    #[serde(skip)]
    pub note: Option<String>,
}

impl NativeBlobs {
    fn new(state: NativeTarget, reason: impl Into<String>) -> Self {
        Self {
            state,
            reason: reason.into(),
            note: None,
        }
    }
}

/// Learns, without creating anything, whether the target takes the archive's native blobs.
///
/// Key Vault opens a posted blob before it looks at the name: a blob of another subscription
/// or geography is 400 "Cannot decrypt backup blob" whatever the name, and an accepted blob
/// whose name is taken is 409 (`Conflict` when live, `ObjectIsDeletedButRecoverable` when
/// soft-deleted). Azure's own recordings show it: the 409 to a restore right after a purge
/// names the version id that only the blob holds (`azure-sdk-for-js` `restore_conflict_409`).
/// So the blob of an archived item whose name is live (or else soft-deleted) in the target is
/// posted once: either answer settles the question and neither creates anything. Without such
/// a name the answer is known only when the target is the archive's source vault; otherwise it
/// stays unverified. The one way the probe writes is a race: the name is deleted and purged
/// between the listing and the probe; that is reported.
pub async fn probe_native(
    vault: &AzureVault,
    contents: &ArchiveContents,
    listing: &TargetListing,
    target: &VaultUrl,
    policy: Policy,
) -> NativeBlobs {
    if policy.mode == Mode::Plain {
        return NativeBlobs::new(NativeTarget::Unverified, "not needed: --mode plain");
    }
    let key = |item: &ArchivedItem| (item.kind, item.name.to_ascii_lowercase());
    let with_blob = || contents.items.iter().filter(|i| i.blob.is_some());
    let creates_natively = with_blob().any(|item| {
        let key = key(item);
        !listing.live.contains_key(&key) && !listing.deleted.contains_key(&key)
    });
    if !creates_natively {
        return NativeBlobs::new(
            NativeTarget::Unverified,
            "not needed: no item would be created from its native blob",
        );
    }
    let candidate = with_blob()
        .find(|item| listing.live.contains_key(&key(item)))
        .map(|item| (item, "live"))
        .or_else(|| {
            with_blob()
                .find(|item| listing.deleted.contains_key(&key(item)))
                .map(|item| (item, "soft-deleted"))
        });
    if let Some((item, state)) = candidate
        && let Some(blob) = &item.blob
    {
        let what = format!("{} {}", item.kind, item.name);
        return match vault.restore(vault_kind(item.kind), &blob.blob).await {
            Err(err) if err.is_cannot_decrypt_backup() => NativeBlobs::new(
                NativeTarget::Refuses,
                format!(
                    "the restore of {what}'s blob over its {state} name was answered \
                     \"Cannot decrypt backup blob\": the target is in another subscription or \
                     geography than the source"
                ),
            ),
            Err(err) if err.conflict_reason().is_some() => NativeBlobs::new(
                NativeTarget::Accepts,
                format!(
                    "the restore of {what}'s blob over its {state} name was answered 409 ({}): \
                     the blob was opened, so the target is in the source's subscription and \
                     geography",
                    err.conflict_reason().map_or("Conflict", |r| r.code())
                ),
            ),
            Err(err) => NativeBlobs::new(
                NativeTarget::Unverified,
                format!("the restore of {what}'s blob over its {state} name failed: {err}"),
            ),
            Ok(_) => NativeBlobs {
                note: Some(format!(
                    "{what} was deleted from the target after it was listed, so the probe \
                     restored it from the archive's blob"
                )),
                ..NativeBlobs::new(
                    NativeTarget::Accepts,
                    format!("the target took {what}'s blob"),
                )
            },
        };
    }
    if same_vault(target.as_str(), &contents.source_url) {
        return NativeBlobs::new(
            NativeTarget::Accepts,
            "the target is the archive's source vault",
        );
    }
    NativeBlobs::new(
        NativeTarget::Unverified,
        "no archived item with a native blob is live or soft-deleted in the target, and the \
         target is not the source vault: only a write could tell whether it takes the blobs",
    )
}

/// Whether two vault URLs name the same vault (scheme, host and port; case and a trailing
/// slash do not matter).
fn same_vault(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_ascii_lowercase();
    !b.trim().is_empty() && norm(a) == norm(b)
}

/// The reason a failing plan line gives.
fn line_reason(line: &PlannedItem) -> String {
    line.reason
        .clone()
        .unwrap_or_else(|| line.action.as_str().to_owned())
}

/// The plan as a table for people.
fn plan_table(lines: &[PlannedItem]) -> String {
    let mut table = Table::new(["ACTION", "KIND", "NAME", "METHOD", "DETAIL"]);
    for line in lines {
        table.row([
            line.action.as_str().to_owned(),
            line.kind.as_str().to_owned(),
            line.name.clone(),
            line.method.map_or("-", Method::as_str).to_owned(),
            line.reason.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

#[derive(Serialize)]
struct PlanEvent<'a> {
    vault: &'a str,
    #[serde(flatten)]
    line: &'a PlannedItem,
}

/// How one item ended.
#[derive(Debug)]
enum Outcome {
    /// Written, recovered or left alone.
    Done {
        status: &'static str,
        method: Option<Method>,
        note: Option<String>,
    },
    /// Not restored, with why.
    Failed(String),
    /// The whole run must stop (a native restore refused in `--mode native`).
    Fatal(CliError),
}

/// Applies plan lines to the target.
struct Applier {
    vault: AzureVault,
    mode: Mode,
    target: String,
    /// Set when the target answered "Cannot decrypt backup blob": it is in another
    /// subscription or geography, so `auto` writes plainly from then on.
    native_refused: AtomicBool,
}

impl Applier {
    async fn apply(&self, item: &ArchivedItem, line: &PlannedItem) -> Outcome {
        match line.action {
            Action::Skip => Outcome::Done {
                status: "skipped",
                method: None,
                note: line.reason.clone(),
            },
            Action::Conflict | Action::Impossible => Outcome::Failed(line_reason(line)),
            Action::Create => self.create(item, line.method, line.versions_present).await,
            Action::Overwrite => match self
                .write_plain(item, item.versions.len().saturating_sub(1))
                .await
            {
                Ok(()) => Outcome::Done {
                    status: "overwritten",
                    method: Some(Method::Plain),
                    note: None,
                },
                Err(reason) => Outcome::Failed(reason),
            },
            Action::Recover => self.recover(item).await,
        }
    }

    async fn create(&self, item: &ArchivedItem, method: Option<Method>, from: usize) -> Outcome {
        let try_native = match method {
            Some(Method::Native) => true,
            Some(Method::Auto) => !self.native_refused.load(Ordering::Relaxed),
            _ => false,
        };
        if try_native {
            match self.write_native(item).await {
                Ok(()) => {
                    return Outcome::Done {
                        status: "created",
                        method: Some(Method::Native),
                        note: None,
                    };
                }
                Err(err) if err.is_cannot_decrypt_backup() => {
                    self.native_refused.store(true, Ordering::Relaxed);
                    if self.mode == Mode::Native {
                        return Outcome::Fatal(refused_natively(&self.target));
                    }
                    if !item.has_plain_form() {
                        return Outcome::Failed(format!(
                            "the target refused the native blob (another subscription or \
                             geography) and {}",
                            item.no_plain_reason()
                        ));
                    }
                }
                Err(err) => return Outcome::Failed(describe(&err)),
            }
        } else if method != Some(Method::Plain) && method != Some(Method::Auto) {
            return Outcome::Failed(item.no_plain_reason());
        }
        if !item.has_plain_form() {
            return Outcome::Failed(format!(
                "the target refuses native blobs (another subscription or geography) and {}",
                item.no_plain_reason()
            ));
        }
        match self.write_plain(item, from).await {
            Ok(()) => Outcome::Done {
                status: "created",
                method: Some(Method::Plain),
                note: (from > 0).then(|| format!("{from} versions were already present")),
            },
            Err(reason) => Outcome::Failed(reason),
        }
    }

    async fn write_native(&self, item: &ArchivedItem) -> Result<(), VaultError> {
        let Some(blob) = &item.blob else {
            return Err(VaultError::Other {
                status: None,
                message: "no native blob in the archive".to_owned(),
            });
        };
        let kind = vault_kind(item.kind);
        match settle(|| self.vault.restore(kind, &blob.blob)).await {
            Ok(_) => Ok(()),
            // The plan saw the name free, so a 409 "exists" is most likely this restore's own
            // earlier attempt, committed with its answer lost: done when the target now holds
            // the archived object (version ids are the source's, no other write makes them).
            Err(err)
                if err.conflict_reason() == Some(&crate::vault::ConflictReason::Exists)
                    && self.holds_restored(item).await =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the target holds what a native restore of `item` brings back: the archived
    /// current version is current there and, for a secret, every archived version is there.
    async fn holds_restored(&self, item: &ArchivedItem) -> bool {
        let Some(expected) = item.blob.as_ref().and_then(|b| b.version.as_deref()) else {
            return false;
        };
        let current = match item.kind {
            Kind::Secret => {
                let Ok(versions) = self.vault.list_secret_versions(&item.name).await else {
                    return false;
                };
                let every_version = {
                    let listed: std::collections::HashSet<&str> = versions
                        .iter()
                        .filter_map(|v| v.version.as_deref())
                        .collect();
                    item.versions
                        .iter()
                        .all(|r| listed.contains(r.version.as_str()))
                };
                if !every_version {
                    return false;
                }
                self.current_secret_props(&item.name, versions)
                    .await
                    .ok()
                    .and_then(|p| p.version)
            }
            Kind::Key => self
                .vault
                .get_key(&item.name, None)
                .await
                .ok()
                .and_then(|b| b.properties.version),
            Kind::Certificate => self
                .vault
                .get_certificate(&item.name, None)
                .await
                .ok()
                .and_then(|b| b.properties.version),
        };
        current.as_deref() == Some(expected)
    }

    /// Writes archived secret versions from `from` on (oldest first), or imports the
    /// certificate.
    async fn write_plain(&self, item: &ArchivedItem, from: usize) -> Result<(), String> {
        match item.kind {
            Kind::Secret => {
                for record in item.versions.iter().skip(from) {
                    let version = NewSecretVersion {
                        value: record.value.clone(),
                        content_type: record.content_type.clone(),
                        tags: record.tags.clone(),
                        attributes: vault_attributes(&record.attributes),
                    };
                    settle(|| self.vault.set_secret(&item.name, &version))
                        .await
                        .map_err(|e| describe(&e))?;
                }
                Ok(())
            }
            Kind::Certificate => {
                let import = certificate_import(item)?;
                settle(|| self.vault.import_certificate(&item.name, &import))
                    .await
                    .map(|_| ())
                    .map_err(|e| describe(&e))
            }
            Kind::Key => Err(item.no_plain_reason()),
        }
    }

    /// Recovers a soft-deleted item, waits until it answers, then brings it up to the
    /// archive's state when it differs and a plain write can do it.
    async fn recover(&self, item: &ArchivedItem) -> Outcome {
        let kind = vault_kind(item.kind);
        let recovered = settle(|| self.vault.recover_deleted(kind, &item.name)).await;
        let props = match recovered {
            Ok(_) => match self.wait_live(item).await {
                Ok(props) => props,
                Err(reason) => return Outcome::Failed(reason),
            },
            // A repeated recover, after an attempt whose answer was lost, finds no deleted
            // item (404) or one still being recovered (409): done once the item is live.
            Err(err)
                if err.is_not_found()
                    || matches!(
                        err.conflict_reason(),
                        Some(
                            crate::vault::ConflictReason::BeingRecovered
                                | crate::vault::ConflictReason::Exists
                        )
                    ) =>
            {
                match self.wait_live(item).await {
                    Ok(props) => props,
                    Err(_) => return Outcome::Failed(format!("recover: {}", describe(&err))),
                }
            }
            Err(err) => return Outcome::Failed(format!("recover: {}", describe(&err))),
        };
        let view = match inspect_live(&self.vault, item, &props).await {
            Ok(view) => view,
            Err(err) => {
                return Outcome::Done {
                    status: "recovered",
                    method: None,
                    note: Some(format!("recovered; not compared with the archive: {err}")),
                };
            }
        };
        let changed = compare(item, &view).unwrap_or_default();
        if changed.is_empty() {
            return Outcome::Done {
                status: "recovered",
                method: None,
                note: None,
            };
        }
        if item.has_plain_form() && self.mode != Mode::Native {
            let from = item.versions.len().saturating_sub(1);
            return match self.write_plain(item, from).await {
                Ok(()) => Outcome::Done {
                    status: "recovered",
                    method: Some(Method::Plain),
                    note: Some(format!(
                        "recovered, then updated to the archive's state ({})",
                        changed.join(", ")
                    )),
                },
                Err(reason) => Outcome::Failed(format!(
                    "recovered, but not updated to the archive's state: {reason}"
                )),
            };
        }
        Outcome::Done {
            status: "recovered",
            method: None,
            note: Some(format!(
                "recovered; differs from the archive ({}) and only a plain write could change it",
                changed.join(", ")
            )),
        }
    }

    /// After a recover the item answers 404 for a few seconds: poll until it is listed by
    /// a get, or the deadline passes.
    async fn wait_live(
        &self,
        item: &ArchivedItem,
    ) -> Result<super::restore_plan::LiveProps, String> {
        use super::restore_plan::LiveProps;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let found = match item.kind {
                Kind::Secret => match self.vault.list_secret_versions(&item.name).await {
                    Ok(versions) if !versions.is_empty() => {
                        let props = self.current_secret_props(&item.name, versions).await;
                        props.map(|p| Some(LiveProps::Secret(p)))
                    }
                    Ok(_) => Ok(None),
                    Err(err) => Err(err),
                },
                Kind::Key => self
                    .vault
                    .get_key(&item.name, None)
                    .await
                    .map(|b| Some(LiveProps::Key(b.properties))),
                Kind::Certificate => self
                    .vault
                    .get_certificate(&item.name, None)
                    .await
                    .map(|b| Some(LiveProps::Certificate(b.properties))),
            };
            match found {
                Ok(Some(props)) => return Ok(props),
                Ok(None) => {}
                Err(err) if err.is_not_found() || err.is_retryable() => {}
                Err(err) => return Err(format!("recovered, but cannot be read: {err}")),
            }
            if started.elapsed() > SETTLE_DEADLINE {
                return Err(format!(
                    "recovered, but still not visible after {} s",
                    SETTLE_DEADLINE.as_secs()
                ));
            }
            tokio::time::sleep(settle_backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The properties of a secret's current version (the newest enabled one reads as
    /// current; a disabled current one keeps its listed properties).
    async fn current_secret_props(
        &self,
        name: &str,
        versions: Vec<crate::vault::SecretProperties>,
    ) -> Result<crate::vault::SecretProperties, VaultError> {
        match self.vault.get_secret(name, None).await {
            Ok(value) => Ok(value.properties),
            Err(err) if err.is_secret_disabled() => versions.into_iter().last().ok_or(err),
            Err(err) => Err(err),
        }
    }
}

/// A certificate import from the archived export: a PFX goes back to standard base64 (as a
/// certificate's managed secret holds it), PEM as text.
fn certificate_import(item: &ArchivedItem) -> Result<CertificateImport, String> {
    let Some(export) = &item.export else {
        return Err(item.no_plain_reason());
    };
    let bytes = export.bytes.expose_secret();
    let value = if export.content_type == crate::archive::layout::PEM_CONTENT_TYPE {
        match std::str::from_utf8(bytes) {
            Ok(text) => SecretString::from(text.to_owned()),
            Err(_) => return Err("the archived PEM export is not text".to_owned()),
        }
    } else {
        SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let (tags, attributes) = match &item.blob {
        Some(blob) => (blob.tags.clone(), blob.attributes.clone()),
        None => Default::default(),
    };
    Ok(CertificateImport {
        value,
        content_type: export.content_type.clone(),
        password: None,
        policy: item.policy.clone(),
        tags,
        // A certificate's nbf and exp come from the certificate itself.
        attributes: Attributes {
            enabled: attributes.enabled,
            ..Attributes::default()
        },
    })
}

/// Runs a write, retrying while Azure says the name is still settling (409
/// `ObjectIsBeingDeleted` in a purge window, `ObjectIsBeingRecovered`) until the deadline.
async fn settle<T, F, Fut>(mut op: F) -> Result<T, VaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VaultError>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Err(err)
                if err.conflict_reason().is_some_and(|r| r.is_transient())
                    && started.elapsed() < SETTLE_DEADLINE =>
            {
                tokio::time::sleep(settle_backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A per-item write failure for people, with what to do where there is something.
fn describe(err: &VaultError) -> String {
    match err.conflict_reason() {
        Some(crate::vault::ConflictReason::DeletedButRecoverable) => {
            format!("{err}; the name is soft-deleted in the target: pass --recover-deleted")
        }
        Some(crate::vault::ConflictReason::BeingDeleted) => format!(
            "{err}; still being purged after {} s: run the restore again later",
            SETTLE_DEADLINE.as_secs()
        ),
        _ => err.to_string(),
    }
}

fn report_item(
    progress: &Progress,
    vault: &str,
    (item, _line): (&ArchivedItem, &PlannedItem),
    outcome: &Outcome,
    json: bool,
) {
    let (status, method, reason) = match outcome {
        Outcome::Done {
            status,
            method,
            note,
        } => (*status, *method, note.as_deref()),
        Outcome::Failed(reason) => ("not-restored", None, Some(reason.as_str())),
        Outcome::Fatal(_) => return,
    };
    if json {
        emit_json(
            "item",
            &ItemOut {
                vault,
                kind: item.kind,
                name: &item.name,
                status,
                method,
                reason,
            },
        );
    } else {
        // Only failures are notable for people; a skip's reason is in the plan.
        let notable = matches!(outcome, Outcome::Failed(_));
        progress.item(&ItemEvent {
            vault,
            kind: item.kind.as_str(),
            name: &item.name,
            status,
            reason: if notable { reason } else { None },
            bytes: None,
        });
    }
}

#[derive(Serialize)]
struct ItemOut<'a> {
    vault: &'a str,
    kind: Kind,
    name: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Counts of plan lines by action.
#[derive(Debug, Default, Serialize)]
struct ActionCounts {
    create: u64,
    skip: u64,
    overwrite: u64,
    recover: u64,
    conflict: u64,
    impossible: u64,
    /// Creates that hinge on the target taking native blobs, which the plan could not learn.
    unverified: u64,
}

impl ActionCounts {
    fn of(lines: &[PlannedItem]) -> Self {
        let mut counts = Self::default();
        for line in lines {
            *match line.action {
                Action::Create => &mut counts.create,
                Action::Skip => &mut counts.skip,
                Action::Overwrite => &mut counts.overwrite,
                Action::Recover => &mut counts.recover,
                Action::Conflict => &mut counts.conflict,
                Action::Impossible => &mut counts.impossible,
            } += 1;
            counts.unverified += u64::from(line.unverified);
        }
        counts
    }
}

/// Items written by one method, per kind.
#[derive(Debug, Default, Serialize)]
struct KindCounts {
    secrets: u64,
    keys: u64,
    certificates: u64,
}

impl KindCounts {
    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Secret => self.secrets += 1,
            Kind::Key => self.keys += 1,
            Kind::Certificate => self.certificates += 1,
        }
    }

    fn total(&self) -> u64 {
        self.secrets + self.keys + self.certificates
    }

    fn describe(&self) -> String {
        format!(
            "{} secrets, {} keys, {} certificates",
            self.secrets, self.keys, self.certificates
        )
    }
}

#[derive(Debug, Serialize)]
struct NotRestored {
    kind: Kind,
    name: String,
    reason: String,
}

impl NotRestored {
    fn of(line: &PlannedItem, reason: String) -> Self {
        Self {
            kind: line.kind,
            name: line.name.clone(),
            reason,
        }
    }
}

/// The run's summary (`summary` event under `--json`).
#[derive(Debug, Serialize)]
struct Summary {
    vault: String,
    url: String,
    archive: PathBuf,
    source_vault: String,
    source_url: String,
    mode: Mode,
    dry_run: bool,
    planned: ActionCounts,
    created: u64,
    overwritten: u64,
    recovered: u64,
    skipped: u64,
    native: KindCounts,
    plain: KindCounts,
    not_restored: Vec<NotRestored>,
    /// Dry runs: native-only creates the target was not seen to accept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unverified: Vec<NotRestored>,
    /// Whether the target takes the archive's native blobs, and how that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    native_blobs: Option<NativeBlobs>,
    notes: Vec<NotRestored>,
    seconds: f64,
    requests: u64,
    throttled: u64,
}

impl Summary {
    fn new(plan: &RestorePlan, contents: &ArchiveContents, target: &str) -> Self {
        Self {
            vault: target.to_owned(),
            url: plan.target.as_str().to_owned(),
            archive: plan.archive.clone(),
            source_vault: contents.source_vault.clone(),
            source_url: contents.source_url.clone(),
            mode: plan.policy.mode,
            dry_run: false,
            planned: ActionCounts::default(),
            created: 0,
            overwritten: 0,
            recovered: 0,
            skipped: 0,
            native: KindCounts::default(),
            plain: KindCounts::default(),
            not_restored: Vec::new(),
            unverified: Vec::new(),
            native_blobs: None,
            notes: Vec::new(),
            seconds: 0.0,
            requests: 0,
            throttled: 0,
        }
    }

    fn count(&mut self, item: &ArchivedItem, line: &PlannedItem, outcome: &Outcome) {
        match outcome {
            Outcome::Done {
                status,
                method,
                note,
            } => {
                match *status {
                    "created" => self.created += 1,
                    "overwritten" => self.overwritten += 1,
                    "recovered" => self.recovered += 1,
                    _ => self.skipped += 1,
                }
                match method {
                    Some(Method::Native) => self.native.add(item.kind),
                    Some(Method::Plain) => self.plain.add(item.kind),
                    _ => {}
                }
                if let Some(note) = note
                    && *status != "skipped"
                {
                    self.notes.push(NotRestored::of(line, note.clone()));
                }
            }
            Outcome::Failed(reason) => self
                .not_restored
                .push(NotRestored::of(line, reason.clone())),
            Outcome::Fatal(_) => {}
        }
    }

    fn finish(&mut self, started: Instant, vault: &AzureVault) {
        self.seconds = started.elapsed().as_secs_f64();
        let stats = vault.stats();
        self.requests = stats.requests;
        self.throttled = stats.throttled;
    }

    fn exit_code(&self) -> ExitCode {
        if self.not_restored.is_empty() && self.unverified.is_empty() {
            ExitCode::Ok
        } else {
            ExitCode::Partial
        }
    }

    fn print(&self, progress: &Progress) {
        if progress.style() == ProgressStyle::JsonLines {
            emit_json("summary", self);
            return;
        }
        let p = &self.planned;
        if self.dry_run {
            eprintln!(
                "{}: dry run, nothing changed: {} to create, {} to overwrite, {} to recover, \
                 {} to skip, {} conflicts, {} impossible, {} unverified",
                self.vault,
                p.create,
                p.overwrite,
                p.recover,
                p.skip,
                p.conflict,
                p.impossible,
                p.unverified
            );
        } else {
            eprintln!(
                "{}: {} created, {} overwritten, {} recovered, {} skipped (identical or \
                 existing), {} not restored ({:.1} s, {} requests, {} throttled)",
                self.vault,
                self.created,
                self.overwritten,
                self.recovered,
                self.skipped,
                self.not_restored.len(),
                self.seconds,
                self.requests,
                self.throttled
            );
            if self.native.total() > 0 {
                eprintln!("  native (backup blobs): {}", self.native.describe());
            }
            if self.plain.total() > 0 {
                eprintln!("  plain (by value): {}", self.plain.describe());
            }
        }
        if let Some(native) = &self.native_blobs
            && (self.dry_run || native.state == NativeTarget::Refuses)
            && !native.reason.starts_with("not needed")
        {
            let word = match native.state {
                NativeTarget::Accepts => "accepted by the target",
                NativeTarget::Refuses => "refused by the target",
                NativeTarget::Unverified => "unverified",
            };
            eprintln!("  native blobs: {word}: {}", native.reason);
        }
        for note in &self.notes {
            eprintln!("  note: {} {}: {}", note.kind, note.name, note.reason);
        }
        for item in &self.not_restored {
            eprintln!(
                "  NOT RESTORED: {} {}: {}",
                item.kind, item.name, item.reason
            );
        }
        for item in &self.unverified {
            eprintln!(
                "  UNVERIFIED: {} {}: {}",
                item.kind,
                item.name,
                item.reason.trim_start_matches("unverified: ")
            );
        }
        if !self.not_restored.is_empty() {
            eprintln!(
                "{}: {} items {}not restored (each named above)",
                self.vault,
                self.not_restored.len(),
                if self.dry_run { "would be " } else { "" }
            );
        }
        if !self.unverified.is_empty() {
            eprintln!(
                "{}: {} items may not be restored: whether the target takes native blobs is \
                 unknown until a write (exit 3; see docs/SCRIPTING.md, \"Dry runs\")",
                self.vault,
                self.unverified.len()
            );
        }
        if p.create + p.skip + p.overwrite + p.recover + p.conflict + p.impossible == 0 {
            eprintln!(
                "{}: nothing to restore: the archive holds no items in scope",
                self.vault
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::restore_plan::ArchivedExport;
    use age::secrecy::SecretBox;

    fn certificate(content_type: &str, bytes: &[u8]) -> ArchivedItem {
        ArchivedItem {
            kind: Kind::Certificate,
            name: "web".into(),
            blob: None,
            versions: Vec::new(),
            export: Some(ArchivedExport {
                content_type: content_type.into(),
                version: "v1".into(),
                bytes: SecretBox::from(bytes.to_vec().into_boxed_slice()),
            }),
            policy: Some(serde_json::json!({"key_props": {"exportable": true}})),
            public_cer: None,
            skipped: None,
        }
    }

    #[test]
    fn pfx_goes_back_to_standard_base64_and_pem_stays_text() {
        let pfx = certificate_import(&certificate(
            crate::archive::layout::PKCS12_CONTENT_TYPE,
            &[0xfb, 0xff, 0x00],
        ))
        .unwrap();
        assert_eq!(pfx.value.expose_secret(), "+/8A");
        assert_eq!(pfx.content_type, "application/x-pkcs12");
        assert!(pfx.password.is_none());
        let pem_text = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
        let pem = certificate_import(&certificate(
            crate::archive::layout::PEM_CONTENT_TYPE,
            pem_text.as_bytes(),
        ))
        .unwrap();
        assert_eq!(pem.value.expose_secret(), pem_text);
        assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
        let bad = certificate_import(&certificate(
            crate::archive::layout::PEM_CONTENT_TYPE,
            &[0xff, 0xfe],
        ));
        assert!(bad.is_err());
    }

    #[test]
    fn plan_table_names_items_never_values() {
        let line = PlannedItem {
            kind: Kind::Secret,
            name: "db".into(),
            action: Action::Conflict,
            method: None,
            reason: Some("soft-deleted in the target".into()),
            versions_present: 0,
            needs_native: false,
            unverified: false,
        };
        let table = plan_table(&[line]);
        assert!(table.starts_with("ACTION"));
        assert!(table.contains("conflict  secret  db    -       soft-deleted in the target"));
    }
}
