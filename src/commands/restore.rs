//! `coldvault restore`: an archive's items back into a vault, planned then applied.
//!
//! The command joins the engine (`crate::engine::restore`) to the command line and the
//! output: the target is listed once (live and soft-deleted items), the archive is read in one
//! verifying pass that keeps names and digests ([`open_archive`]), each item present on both
//! sides is read and compared by digest, and every item gets one plan line
//! ([`super::restore_plan::decide`]). `--dry-run` prints the plan and stops. Applying it reads
//! the archive again item by item and writes natively (the backup blob: every version, same ids) or plainly (secret
//! versions by value, certificates by import), recovers soft-deleted items when asked, and
//! waits out Azure's settling answers (409 `ObjectIsBeingDeleted` after a purge, 404 after a
//! recover). A rerun plans again from what the target holds, so it finishes an interrupted run
//! and leaves alone what is already right. Nothing is ever deleted or purged.

mod kv_mount;
mod kv_plan;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::connect_args::{connect, parse_vault, vault_error};
use super::interrupt::Interrupts;
use super::restore_plan::{
    Action, Method, Mode, NativeTarget, OnConflict, PlannedItem, Policy, decide, inspect_all,
    list_target, target_state,
};
use super::scope::{ItemKind as ScopeKind, Scope};
use crate::archive::{Decryption, Kind};
pub use crate::cli::restore::RestoreArgs;
use crate::engine::restore::apply::{Applier, Outcome, line_reason};
use crate::engine::restore::{Applied, NativeBlobs, apply_plan, probe_native, wanted};
use crate::engine::source::{ArchiveHeads, archive_items, read_heads};
use crate::error::{CliError, ExitCode};
use crate::output::progress::{Progress, ProgressStyle, emit_json};
use crate::output::table::Table;
use crate::vault::VaultUrl;
use crate::vault::azure::{AzureVault, ConnectOptions};

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
    mapping: crate::cli::copy::MappingArgs,
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
            mapping: args.mapping.clone(),
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
    if crate::kv::KvAddress::is_kv_address(&args.vault) {
        return kv_mount::run(args).await;
    }
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

/// Opens the archive off the async threads in one decrypting pass and gathers the heads of
/// the items in scope, whatever the archive holds.
async fn read_archive_heads(
    path: &std::path::Path,
    decryption: &Decryption,
    scope: &Scope,
) -> Result<ArchiveHeads, CliError> {
    let input = super::destination::archive_input(path)?;
    let (decryption, owned_scope) = (decryption.clone(), scope.clone());
    tokio::task::spawn_blocking(move || read_heads(input, &decryption, &owned_scope))
        .await
        .map_err(|e| CliError::failed(format!("the archive reader stopped: {e}")))?
        .map_err(CliError::from)
}

/// Opens the archive off the async threads in one decrypting pass and gathers the heads of
/// the items in scope (names and digests; no value is kept); a `--name` glob that matches no
/// item of the archive is an error (exit 1) naming the glob and the closest names.
pub async fn open_archive(
    path: &std::path::Path,
    decryption: &Decryption,
    scope: &Scope,
) -> Result<ArchiveHeads, CliError> {
    let heads = read_archive_heads(path, decryption, scope).await?;
    if crate::kv::KvAddress::is_kv_address(&heads.source_url) {
        return Err(CliError::failed(format!(
            "{}: a KV archive (format version 2, from {}): it cannot be compared with a Key \
             Vault item by item",
            path.display(),
            heads.source_url
        ))
        .with_hint(
            "see what restoring it would change with `coldvault restore ARCHIVE --vault VAULT \
             --dry-run`",
        ));
    }
    check_archive_heads(heads, scope)
}

/// A `--name` glob that matches no item of the archive is an error (exit 1) naming the glob
/// and the closest names.
fn check_archive_heads(heads: ArchiveHeads, scope: &Scope) -> Result<ArchiveHeads, CliError> {
    scope.check_names_match(
        heads
            .names
            .iter()
            .map(|(kind, name)| (ScopeKind::of(*kind), name.as_str())),
    )?;
    Ok(heads)
}

async fn restore(plan: &RestorePlan, progress: &Progress) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let target = plan.target.name().to_owned();
    let heads = read_archive_heads(&plan.archive, &plan.decryption, &plan.scope).await?;
    // A KV archive goes into a Key Vault the way a copy from its mount would.
    if crate::kv::KvAddress::is_kv_address(&heads.source_url) {
        drop(heads);
        let request = super::copy::KvArchiveRestore {
            archive: &plan.archive,
            decryption: &plan.decryption,
            vault: &plan.target,
            connect: &plan.connect,
            scope: &plan.scope,
            policy: plan.policy,
            mapping: &plan.mapping,
            dry_run: plan.dry_run,
            json: plan.json,
            concurrency: plan.concurrency,
        };
        return super::copy::restore_kv_archive(request, progress).await;
    }
    let mut heads = check_archive_heads(heads, &plan.scope)?;
    let vault = connect(&plan.target, &plan.connect).await?;
    progress.start_vault(&target);
    let listing = list_target(&vault, &plan.scope)
        .await
        .map_err(|e| vault_error(&target, &e))?;
    for note in &listing.notes {
        progress.note(&format!("{target}: {note}"));
    }
    // The dry run and the real run learn the same way whether native blobs are accepted, so
    // they plan alike. The blob posted is read from the archive only when a probe is needed.
    let feed = &heads.feed;
    let native_blobs = probe_native(
        &vault,
        &heads.items,
        |key| {
            let source = feed.blob_source(&key);
            async move {
                tokio::task::spawn_blocking(move || source.read())
                    .await
                    .ok()?
                    .ok()?
            }
        },
        &listing,
        plan.target.as_str(),
        &heads.source_url,
        plan.policy,
    )
    .await;
    if plan.dry_run {
        // Nothing will be written: the manifest and the reader go now.
        heads.release_feed();
    }
    if let Some(note) = &native_blobs.note {
        progress.note(&format!("{target}: {note}"));
    }
    let views = inspect_all(&vault, &heads.items, &listing, plan.concurrency).await;
    let lines: Vec<PlannedItem> = heads
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
    drop(views);

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

    let mut summary = Summary::new(plan, &heads, &target);
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
    let applier = Applier::new(
        vault.clone(),
        plan.policy.mode,
        native_blobs.state == NativeTarget::Refuses,
    );
    let arrivals = archive_items(heads.feed, wanted(&heads.items, &lines), plan.concurrency);
    let applied = apply_plan(
        &applier,
        &target,
        &heads.items,
        &lines,
        plan.policy.mode,
        arrivals,
        plan.concurrency,
        progress,
    )
    .await;
    let (outcomes, broken) = match applied {
        Applied::RefusedNatively => return Err(refused_natively(&target)),
        Applied::Finished(outcomes) => (outcomes, None),
        Applied::SourceFailed { outcomes, error } => (outcomes, Some(error)),
    };
    for (index, outcome) in &outcomes {
        summary.count(&lines[*index], outcome);
    }
    progress.finish_vault();
    summary.finish(started, &vault);
    if let Some(error) = broken {
        // The archive was verified whole before the first write; it failed on the second
        // read, so it changed in between. Every item written was read whole and checked
        // against the manifest first: nothing half-written, and a rerun (with a good
        // archive) plans from what the target now holds.
        return Err(source_failed(
            &target,
            &plan.archive,
            &error,
            &summary,
            lines.len(),
        ));
    }
    summary.print(progress);
    Ok(summary.exit_code())
}

/// The archive failed while a restore was applying it: exit 4, naming the problem and what
/// was already written.
fn source_failed(
    target: &str,
    archive: &std::path::Path,
    error: &crate::archive::ArchiveError,
    summary: &Summary,
    planned: usize,
) -> CliError {
    let written = summary.created + summary.overwritten + summary.recovered;
    let settled = written + summary.skipped + summary.not_restored.len() as u64;
    CliError::verification(format!(
        "{target}: {} failed verification while it was being restored ({}): {written} items \
         were written before it stopped, {} of {planned} not attempted",
        archive.display(),
        error,
        (planned as u64).saturating_sub(settled),
    ))
    .with_hint(
        "the archive changed after it was verified: check it with `coldvault verify`, then run \
         the restore again (it skips what is already restored)",
    )
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
    fn new(plan: &RestorePlan, contents: &ArchiveHeads, target: &str) -> Self {
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

    fn count(&mut self, line: &PlannedItem, outcome: &Outcome) {
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
                    Some(Method::Native) => self.native.add(line.kind),
                    Some(Method::Plain) => self.plain.add(line.kind),
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
            Outcome::RefusedNatively => {}
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
