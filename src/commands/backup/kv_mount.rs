//! `coldvault backup --vault bao+https://HOST:PORT/MOUNT[/PATH]`: a HashiCorp Vault or
//! OpenBao KV v2 mount into a format version 2 archive (`docs/FORMAT.md`, "KV archives").
//!
//! The same output machinery as a Key Vault backup (`-o` folder, file, stdout or object
//! store; the temporary file and its atomic rename; `--sign`; signals; `--json` events and
//! summary), with a KV source: the client signs in from the environment (`VAULT_TOKEN`,
//! `BAO_TOKEN` or AppRole), reads every secret with every version's state and every live
//! version's data, and the writer thread archives them. A KV mount is read whole or not at
//! all: any failure (bad token, sealed server, missing mount, a read that fails) ends the run
//! with exit 1 and no archive.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;

use super::{BackupArgs, BackupPlan, remove_stale_partials, stopped};
use crate::archive::{ArchiveSummary, CommitGate, Counts};
use crate::commands::interrupt::Interrupts;
use crate::commands::kv_connect::{connect_kv, kv_error, parse_kv_address};
use crate::error::{CliError, ExitCode};
use crate::kv::{KvAddress, KvSnapshot};
use crate::output::progress::{ItemEvent, Progress, ProgressStyle, emit_json};
use crate::output::table::human_bytes;

/// Runs a backup whose `--vault` is a KV address: alone (no other `--vault`).
pub(super) async fn run(args: BackupArgs) -> Result<ExitCode, CliError> {
    if args.vaults.len() > 1 {
        return Err(CliError::usage(
            "a KV address (bao+… or vault+…) is backed up alone: give one --vault",
        )
        .with_hint("run one backup per KV mount, and another for the Key Vaults"));
    }
    let address = parse_kv_address("--vault", &args.vaults[0])?;
    if !args.scope.names.is_empty()
        || !args.scope.excludes.is_empty()
        || !args.scope.include.is_empty()
    {
        return Err(CliError::usage(
            "--name, --exclude and --include select Key Vault items: a KV backup takes every \
             secret under its address",
        )
        .with_hint("narrow a KV backup by its address: bao+https://HOST:PORT/MOUNT/PATH"));
    }
    let plan = BackupPlan::resolve_for(&args, Vec::new(), 1)?;
    let mut interrupts = Interrupts::listen()?;
    let progress = Progress::new(ProgressStyle::detect(plan.json)).without_problem_lines();
    remove_stale_partials(&plan, &progress);
    let name = crate::archive::kv::source(&address).vault;
    let gate = OnceLock::new();
    let outcome = tokio::select! {
        outcome = backup_mount(&plan, &address, &args, &progress, &gate) => outcome,
        stop = interrupts.recv() => {
            progress.finish_vault();
            return Err(stopped(stop, &address.to_string(), gate.get().cloned()).await);
        }
    };
    progress.finish_vault();
    let report = outcome?;
    report.print(&progress, &name);
    Ok(ExitCode::Ok)
}

/// What a KV backup produced: the `summary` event under `--json`.
#[derive(Debug, Serialize)]
struct KvReport {
    /// The archive's name stem (the mount).
    vault: String,
    /// The KV address (never a credential).
    url: String,
    path: Option<std::path::PathBuf>,
    bytes: u64,
    seconds: f64,
    counts: Counts,
    /// Nothing under the address: the archive records an empty mount.
    empty: bool,
}

impl KvReport {
    fn print(&self, progress: &Progress, name: &str) {
        if progress.style() == ProgressStyle::JsonLines {
            emit_json("summary", self);
            return;
        }
        let shown = self
            .path
            .as_deref()
            .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
        let c = &self.counts;
        eprintln!(
            "{name}: {} KV secrets, {} versions ({} soft-deleted, {} destroyed: recorded, no \
             data) -> {shown} ({}, {:.1} s)",
            c.kv_secrets,
            c.kv_versions,
            c.kv_deleted_versions,
            c.kv_destroyed_versions,
            human_bytes(self.bytes),
            self.seconds,
        );
        if self.empty {
            eprintln!(
                "{}: no KV secret under this address: nothing to back up (the archive is kept \
                 as its record)",
                self.url
            );
        }
    }
}

/// Signs in, reads the mount whole, writes the archive. `gate` receives the writer's commit
/// gate as soon as the archive is started, so a signal can abandon it.
async fn backup_mount(
    plan: &BackupPlan,
    address: &KvAddress,
    args: &BackupArgs,
    progress: &Progress,
    gate: &OnceLock<CommitGate>,
) -> Result<KvReport, CliError> {
    let started_clock = Instant::now();
    let started = OffsetDateTime::now_utc();
    let shown = address.to_string();
    // The client signs in before any file is created: a bad token, a sealed server or a
    // missing mount leaves nothing behind, not even a temporary file.
    let client = connect_kv(address, &args.connect).await?;
    let address = client.address().clone();
    let source = crate::archive::kv::source(&address);
    let name = source.vault.clone();
    progress.start_vault(&name);
    let (writer, upload) = super::open_writer(plan, source).await?;
    let _ = gate.set(writer.commit_gate());
    let snapshot: KvSnapshot = client
        .read_all(plan.concurrency)
        .await
        .map_err(|e| kv_error(&shown, &e, "no archive written"))?;
    progress.set_total(snapshot.secrets.len() as u64);
    for secret in &snapshot.secrets {
        progress.item(&ItemEvent {
            vault: &name,
            kind: crate::archive::manifest::KV_KIND,
            name: &secret.path,
            status: "captured",
            reason: None,
            bytes: None,
        });
    }
    let empty = snapshot.secrets.is_empty();
    let summary: ArchiveSummary = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        for secret in &snapshot.secrets {
            writer.add_kv_secret(secret)?;
        }
        writer.set_run_window(started, OffsetDateTime::now_utc());
        writer.finish()
    })
    .await
    .map_err(|e| CliError::failed(format!("the archive writer stopped: {e}")))??;
    let signature = crate::commands::destination::seal(
        upload.as_ref().map(|(remote, handle)| (*remote, handle)),
        &summary,
        &plan.sealing,
        (&name, &shown),
        |text| progress.note(&format!("{name}: {text}")),
    )
    .await?;
    if let Some(signature) = &signature {
        progress.note(&format!("{name}: signed: {signature}"));
    }
    Ok(KvReport {
        vault: name,
        url: shown,
        path: summary.path.clone(),
        bytes: summary.bytes,
        seconds: started_clock.elapsed().as_secs_f64(),
        counts: summary.counts,
        empty,
    })
}
