//! `coldvault restore KV-ARCHIVE --vault bao+https://HOST:PORT/MOUNT`: a KV archive (format
//! version 2) back into a KV v2 mount of any server, planned then applied.
//!
//! The archive is verified and read whole ([`crate::archive::kv::read_snapshot`]); the
//! target is read for the archive's paths only; every secret gets one plan line
//! ([`super::kv_plan::decide`]); `--dry-run` prints the plan and stops. Applying replays each
//! secret's versions in order with check-and-set on every write, so the version numbers
//! match the archive's and a concurrent change is a conflict (reported, exit 3), never a
//! lost update; deleted and destroyed versions come back deleted and destroyed. A rerun plans
//! again from what the target holds: it finishes an interrupted restore and leaves a
//! finished one alone.

use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use super::RestoreArgs;
use super::kv_plan::{KvPlanLine, Step, decide, step};
use crate::archive::kv::KvArchive;
use crate::archive::manifest::KV_KIND;
use crate::commands::interrupt::Interrupts;
use crate::commands::kv_connect::{connect_kv, kv_error, parse_kv_address};
use crate::engine::restore::plan::{Action, Mode, OnConflict};
use crate::error::{CliError, ExitCode};
use crate::kv::client::{KvClient, KvError, MetadataUpdate};
use crate::kv::{KvAddress, KvData, KvSecret};
use crate::output::progress::{ItemEvent, Progress, ProgressStyle, emit_json};
use crate::output::table::Table;

/// Runs a restore whose `--vault` is a KV address.
pub(super) async fn run(args: RestoreArgs) -> Result<ExitCode, CliError> {
    let address = parse_kv_address("--vault", &args.vault)?;
    let key_vault_only = if args.mode == Mode::Native {
        Some("--mode native")
    } else if args.recover_deleted {
        Some("--recover-deleted")
    } else if !args.scope.names.is_empty()
        || !args.scope.excludes.is_empty()
        || !args.scope.include.is_empty()
    {
        Some("--name, --exclude and --include")
    } else {
        None
    };
    if let Some(flag) = key_vault_only {
        return Err(CliError::usage(format!(
            "{flag}: for Key Vault items; a KV restore replays every secret of the archive \
             with its versions' states"
        ))
        .with_hint("narrow a KV restore by its address: bao+https://HOST:PORT/MOUNT/PATH"));
    }
    let archive = crate::commands::destination::check_archive(&args.archive)?;
    args.signers.check(&archive)?;
    let decryption = args.decryption.resolve()?;
    let progress = Progress::new(ProgressStyle::detect(args.json));
    let mut interrupts = Interrupts::listen()?;
    let input = archive.input();
    let outcome = tokio::select! {
        outcome = restore_mount(&args, &address, input, decryption, &progress) => outcome,
        stop = interrupts.recv() => {
            progress.finish_vault();
            return Err(stop.error(
                &address.to_string(),
                "run the same command again to finish the restore",
            ));
        }
    };
    progress.finish_vault();
    outcome
}

/// Opens the archive (off the async threads) as a KV snapshot; a Key Vault archive is
/// refused with what to do instead.
async fn open(
    input: crate::archive::ArchiveInput,
    decryption: crate::archive::Decryption,
    shown: &std::path::Path,
) -> Result<KvArchive, CliError> {
    let reader = tokio::task::spawn_blocking(move || {
        crate::archive::ArchiveReader::open_input(input, &decryption, decryption.limits())
    })
    .await
    .map_err(|e| CliError::failed(format!("the archive reader stopped: {e}")))??;
    if !reader.manifest().is_kv() {
        return Err(CliError::failed(format!(
            "{}: holds Key Vault items (format version {}), not a KV mount",
            shown.display(),
            reader.manifest().format_version
        ))
        .with_hint("restore it into a Key Vault: --vault NAME|URL"));
    }
    tokio::task::spawn_blocking(move || crate::archive::kv::snapshot_of(reader))
        .await
        .map_err(|e| CliError::failed(format!("the archive reader stopped: {e}")))?
        .map_err(CliError::from)
}

async fn restore_mount(
    args: &RestoreArgs,
    address: &KvAddress,
    input: crate::archive::ArchiveInput,
    decryption: crate::archive::Decryption,
    progress: &Progress,
) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let archive = open(input, decryption, &args.archive).await?;
    let client = connect_kv(address, &args.connect).await?;
    let target = client.address().clone();
    let shown = target.to_string();
    progress.start_vault(&shown);
    // A target address with a path restores the secrets under that path only.
    let prefix = target.prefix().to_owned();
    let secrets: Vec<&KvSecret> = archive
        .snapshot
        .secrets
        .iter()
        .filter(|s| {
            prefix.is_empty() || s.path == prefix || s.path.starts_with(&format!("{prefix}/"))
        })
        .collect();
    let concurrency = usize::from(args.concurrency);
    let targets: Vec<Result<Option<KvSecret>, KvError>> = futures::stream::iter(&secrets)
        .map(|s| {
            let client = client.clone();
            let path = s.path.clone();
            async move { client.read_secret(&path).await }
        })
        .buffered(concurrency)
        .collect()
        .await;
    let mut lines = Vec::with_capacity(secrets.len());
    for (secret, target) in secrets.iter().zip(&targets) {
        let target = target
            .as_ref()
            .map_err(|e| kv_error(&shown, e, "nothing restored"))?;
        lines.push(decide(secret, target.as_ref(), args.on_conflict));
    }
    drop(targets);

    if args.json {
        for line in &lines {
            emit_json(
                "plan",
                &PlanEvent {
                    vault: &shown,
                    kind: KV_KIND,
                    line,
                },
            );
        }
    } else if args.dry_run {
        crate::output::stdout::print(&plan_table(&lines)).map_err(CliError::stdout)?;
    }
    let mut summary = Summary::new(args, &archive, &shown, &lines);
    if args.on_conflict == OnConflict::Fail && lines.iter().any(|l| l.action == Action::Conflict) {
        let names: Vec<&str> = lines
            .iter()
            .filter(|l| l.action == Action::Conflict)
            .map(|l| l.name.as_str())
            .collect();
        return Err(CliError::failed(format!(
            "{shown}: {} conflicts, nothing restored (--on-conflict fail): {}",
            names.len(),
            names.join(", ")
        ))
        .with_hint("see them with --dry-run; use --on-conflict skip or overwrite"));
    }
    for line in lines.iter().filter(|l| l.action.is_failure()) {
        summary.not_restored.push(NotRestored::of(
            line,
            line.reason.clone().unwrap_or_default(),
        ));
    }
    if args.dry_run {
        summary.dry_run = true;
        summary.seconds = started.elapsed().as_secs_f64();
        summary.print(progress);
        return Ok(summary.exit_code());
    }

    progress.add_total(lines.len() as u64);
    let work: Vec<(&KvSecret, &KvPlanLine)> = secrets
        .iter()
        .copied()
        .zip(&lines)
        .filter(|(_, l)| matches!(l.action, Action::Create | Action::Overwrite))
        .collect();
    // Lines that write nothing end now: one `item` event each, as every line gets one.
    for line in lines
        .iter()
        .filter(|l| !matches!(l.action, Action::Create | Action::Overwrite))
    {
        let status = if line.action == Action::Skip {
            summary.skipped += 1;
            "skipped"
        } else {
            "not-restored"
        };
        progress.item(&ItemEvent {
            vault: &shown,
            kind: KV_KIND,
            name: &line.name,
            status,
            reason: line.reason.as_deref(),
            bytes: None,
        });
    }
    let mut applied = futures::stream::iter(work)
        .map(|(secret, line)| {
            let client = client.clone();
            async move { (line, apply(&client, secret, line).await) }
        })
        .buffer_unordered(concurrency);
    while let Some((line, outcome)) = applied.next().await {
        let (status, reason) = match &outcome {
            Ok(()) if line.action == Action::Overwrite => {
                summary.overwritten += 1;
                ("overwritten", None)
            }
            Ok(()) => {
                summary.created += 1;
                ("created", None)
            }
            Err(reason) => {
                summary
                    .not_restored
                    .push(NotRestored::of(line, reason.clone()));
                ("not-restored", Some(reason.as_str()))
            }
        };
        progress.item(&ItemEvent {
            vault: &shown,
            kind: KV_KIND,
            name: &line.name,
            status,
            reason,
            bytes: None,
        });
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.print(progress);
    Ok(summary.exit_code())
}

/// Applies one line. Every data write is check-and-set against the version the plan saw
/// (then the one just written); a refused one is read back once: a write that committed
/// while its answer was lost is recognised and kept, anything else is a concurrent change,
/// reported and left as it is.
async fn apply(client: &KvClient, archived: &KvSecret, line: &KvPlanLine) -> Result<(), String> {
    let path = archived.path.as_str();
    let failed = |e: KvError| format!("{e}");
    let placeholder = KvData::default();
    let mut cas = line.target_version;
    match line.action {
        Action::Overwrite => {
            let data = archived
                .current()
                .and_then(|v| v.data.as_ref())
                .ok_or_else(|| "the archive holds no current data".to_owned())?;
            write_once(client, path, data, cas).await?;
        }
        _ => {
            if let Some(from) = line.from_version {
                let mut next = from;
                if line.placeholder_written {
                    finish_placeholder(client, path, step(archived, from), from)
                        .await
                        .map_err(failed)?;
                    next = from + 1;
                    cas = from;
                }
                for n in next..=archived.current_version {
                    let how = step(archived, n);
                    let data = match how {
                        Step::Data => archived
                            .versions
                            .iter()
                            .find(|v| v.version == n)
                            .and_then(|v| v.data.as_ref())
                            .ok_or_else(|| format!("version {n} has no data in the archive"))?,
                        Step::Delete | Step::Destroy => &placeholder,
                    };
                    let written = write_once(client, path, data, cas).await?;
                    if written != n {
                        return Err(format!(
                            "the target numbered the new version {written}, not {n}: it changed \
                             while it was restored; run again to plan from what it holds"
                        ));
                    }
                    cas = n;
                    finish_placeholder(client, path, how, n)
                        .await
                        .map_err(failed)?;
                }
            }
        }
    }
    client
        .write_metadata(
            path,
            &MetadataUpdate {
                custom_metadata: Some(archived.custom_metadata.clone()),
                max_versions: Some(archived.max_versions),
                cas_required: Some(archived.cas_required),
                delete_version_after: Some(archived.delete_version_after.clone()),
            },
        )
        .await
        .map_err(failed)
}

/// Soft-deletes or destroys a placeholder just written; nothing for data.
async fn finish_placeholder(
    client: &KvClient,
    path: &str,
    how: Step,
    version: u64,
) -> Result<(), KvError> {
    match how {
        Step::Data => Ok(()),
        Step::Delete => client.delete_versions(path, &[version]).await,
        Step::Destroy => client.destroy_versions(path, &[version]).await,
    }
}

/// One check-and-set write (`cas`: the version current before it). A refusal is read back:
/// when the target's current version is the one this write would have made, with this
/// data, the write committed and its answer was lost.
async fn write_once(client: &KvClient, path: &str, data: &KvData, cas: u64) -> Result<u64, String> {
    match client.write(path, data, cas).await {
        Ok(version) => Ok(version),
        Err(e) if e.is_cas_mismatch() => {
            let now = client.read_secret(path).await.map_err(|e| e.to_string())?;
            let committed = now.as_ref().is_some_and(|s| {
                s.current_version == cas + 1
                    && s.current().and_then(|v| v.data.as_ref()) == Some(data)
            });
            if committed {
                return Ok(cas + 1);
            }
            let at = now.map_or(0, |s| s.current_version);
            Err(format!(
                "changed in the target while it was restored (check-and-set expected version \
                 {cas}, found {at}): left as it is; run again to plan from what it holds"
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn plan_table(lines: &[KvPlanLine]) -> String {
    let mut table = Table::new(["ACTION", "KIND", "NAME", "FROM", "DETAIL"]);
    for line in lines {
        table.row([
            line.action.as_str().to_owned(),
            KV_KIND.to_owned(),
            line.name.clone(),
            line.from_version.map_or("-".to_owned(), |n| n.to_string()),
            line.reason.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

#[derive(Serialize)]
struct PlanEvent<'a> {
    vault: &'a str,
    kind: &'static str,
    #[serde(flatten)]
    line: &'a KvPlanLine,
}

/// Plan lines by action.
#[derive(Debug, Default, Serialize)]
struct ActionCounts {
    create: u64,
    skip: u64,
    overwrite: u64,
    conflict: u64,
}

#[derive(Debug, Serialize)]
struct NotRestored {
    kind: &'static str,
    name: String,
    reason: String,
}

impl NotRestored {
    fn of(line: &KvPlanLine, reason: String) -> Self {
        Self {
            kind: KV_KIND,
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
    dry_run: bool,
    planned: ActionCounts,
    created: u64,
    overwritten: u64,
    skipped: u64,
    not_restored: Vec<NotRestored>,
    seconds: f64,
}

impl Summary {
    fn new(args: &RestoreArgs, archive: &KvArchive, shown: &str, lines: &[KvPlanLine]) -> Self {
        let mut planned = ActionCounts::default();
        for line in lines {
            match line.action {
                Action::Create => planned.create += 1,
                Action::Overwrite => planned.overwrite += 1,
                Action::Conflict | Action::Impossible | Action::Recover => planned.conflict += 1,
                Action::Skip => planned.skip += 1,
            }
        }
        let source = &archive.reader.manifest().source;
        Self {
            vault: shown.to_owned(),
            url: shown.to_owned(),
            archive: args.archive.clone(),
            source_vault: source.vault.clone(),
            source_url: source.url.clone(),
            dry_run: false,
            planned,
            created: 0,
            overwritten: 0,
            skipped: 0,
            not_restored: Vec::new(),
            seconds: 0.0,
        }
    }

    fn exit_code(&self) -> ExitCode {
        if self.not_restored.is_empty() {
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
                "{}: dry run, nothing changed: {} to create, {} to overwrite, {} to skip, {} \
                 conflicts",
                self.vault, p.create, p.overwrite, p.skip, p.conflict
            );
        } else {
            eprintln!(
                "{}: {} created, {} overwritten, {} skipped (identical or existing), {} not \
                 restored ({:.1} s)",
                self.vault,
                self.created,
                self.overwritten,
                self.skipped,
                self.not_restored.len(),
                self.seconds
            );
        }
        for item in &self.not_restored {
            eprintln!(
                "  NOT RESTORED: {} {}: {}",
                item.kind, item.name, item.reason
            );
        }
        if p.create + p.skip + p.overwrite + p.conflict == 0 {
            eprintln!(
                "{}: nothing to restore: the archive holds no KV secret here",
                self.vault
            );
        }
    }
}
