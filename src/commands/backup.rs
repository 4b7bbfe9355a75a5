//! `coldvault backup`: whole vaults into encrypted archives.
//!
//! Per vault: list every kind in scope, capture the items concurrently (values, native backup
//! blobs, public parts, policies; `crate::engine::capture`, generic over the store), and
//! stream each item's pieces to one writer thread that owns the [`ArchiveWriter`]. The archive is finished only when every item has been dealt
//! with; an interrupted or failed run drops the writer, which deletes the temporary file, so
//! no partial archive ever carries the final name. Items that cannot be captured are recorded
//! in the manifest with their reason and the run exits 3.

mod kv_mount;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::connect_args::{connect, parse_vault};
use super::interrupt::{Interrupts, StopSignal};
use super::scope::{ItemKind as ScopeKind, Scope};
use crate::archive::manifest::{DeletedItem as ArchivedDeleted, RecapturedItem};
use crate::archive::{
    AbandonOutcome, ArchiveSummary, ArchiveWriter, CommitGate, Destination, Encryption,
    FILE_SUFFIX, Kind, Source,
};
pub use crate::cli::backup::BackupArgs;
use crate::engine::capture::{Captured, ListingProgress, Piece, capture, work_stream};
use crate::error::{CliError, ExitCode};
use crate::output::progress::{ItemEvent, PeriodicReport, Progress, ProgressStyle, emit_json};
use crate::output::table::human_bytes;
use crate::vault::azure::ConnectOptions;
use crate::vault::pacing::RequestStats;
use crate::vault::{VaultError, VaultReader, VaultUrl};

/// A `.coldvault-*.partial` file untouched for this long, whose writer is gone, was left by
/// a killed run: a live run writes its file as items arrive, and none waits a day between
/// two writes.
const STALE_PARTIAL_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where archives go, resolved.
#[derive(Debug, Clone)]
enum Output {
    Dir(PathBuf),
    File(PathBuf),
    Stdout,
    /// Blob Storage or S3: streamed up, committed last.
    Remote(Arc<super::destination::RemoteOutput>),
}

/// What `-o` names, decided from the path alone (and whether it exists), before anything is
/// created: the rules of `docs/SCRIPTING.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OutputChoice {
    Stdout,
    /// An existing folder.
    Dir(PathBuf),
    /// A folder to create (`--mkdir`).
    NewDir(PathBuf),
    /// A file in an existing folder.
    File(PathBuf),
    /// A file whose folder is to be created (`--mkdir`).
    FileInNewDir(PathBuf),
    /// A URL: Blob Storage or S3.
    Remote(String),
}

/// Decides what `-o` means. A trailing `/` always means a folder; an existing folder is a
/// folder; an existing file is a file (refused later as existing, before any work); a new
/// name ending in `.age` is a file; any other new name is a folder, which must exist unless
/// `--mkdir` — so that `-o /backups` never quietly becomes a file named `/backups`.
fn choose_output(output: Option<&Path>, mkdir: bool) -> Result<OutputChoice, CliError> {
    let Some(path) = output else {
        return Ok(OutputChoice::Dir(PathBuf::from(".")));
    };
    if path == Path::new("-") {
        return Ok(OutputChoice::Stdout);
    }
    if let Some(url) = path.to_str().filter(|text| crate::dest::is_remote(text)) {
        return Ok(OutputChoice::Remote(url.to_owned()));
    }
    let shown = path.display();
    let says_folder = path.as_os_str().to_string_lossy().ends_with('/');
    let mkdir_hint = "create the folder first, or pass --mkdir to create it (mode 0700)";
    if path.is_dir() {
        return Ok(OutputChoice::Dir(path.to_owned()));
    }
    // `stat("file/")` fails with ENOTDIR: look at the name without its trailing slashes.
    let text = path.as_os_str().to_string_lossy();
    let bare = Path::new(text.trim_end_matches('/'));
    let exists = bare.symlink_metadata().is_ok();
    if says_folder {
        if exists {
            return Err(
                CliError::failed(format!("-o {shown}: not a folder")).with_hint(
                    "a trailing / names a folder: remove the file or choose another folder",
                ),
            );
        }
        return if mkdir {
            Ok(OutputChoice::NewDir(path.to_owned()))
        } else {
            Err(CliError::failed(format!("-o {shown}: no such folder")).with_hint(mkdir_hint))
        };
    }
    if exists {
        return Ok(OutputChoice::File(path.to_owned()));
    }
    let names_a_file = path
        .file_name()
        .is_some_and(|name| name.to_string_lossy().ends_with(".age"));
    if !names_a_file {
        return if mkdir {
            Ok(OutputChoice::NewDir(path.to_owned()))
        } else {
            Err(
                CliError::failed(format!("-o {shown}: no such folder")).with_hint(format!(
                    "{mkdir_hint}; to write one file instead, give a name ending in {FILE_SUFFIX}"
                )),
            )
        };
    }
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        Ok(OutputChoice::File(path.to_owned()))
    } else if mkdir && parent.symlink_metadata().is_err() {
        Ok(OutputChoice::FileInNewDir(path.to_owned()))
    } else {
        Err(CliError::failed(format!(
            "-o {shown}: folder {} does not exist",
            parent.display()
        ))
        .with_hint(mkdir_hint))
    }
}

/// Carries out an [`OutputChoice`]: creates the folder it needs (`--mkdir`, mode 0700) and
/// checks that a file can be created there, so a wrong folder fails before any work.
fn prepare_output(choice: OutputChoice) -> Result<Output, CliError> {
    let (output, folder, create) = match choice {
        OutputChoice::Stdout => return Ok(Output::Stdout),
        OutputChoice::Remote(url) => {
            return Err(CliError::usage(format!(
                "-o {url}: a URL is resolved elsewhere"
            )));
        }
        OutputChoice::Dir(dir) => (Output::Dir(dir.clone()), dir, false),
        OutputChoice::NewDir(dir) => (Output::Dir(dir.clone()), dir, true),
        OutputChoice::File(file) => {
            let dir = archive_folder(&file);
            (Output::File(file), dir, false)
        }
        OutputChoice::FileInNewDir(file) => {
            let dir = archive_folder(&file);
            (Output::File(file), dir, true)
        }
    };
    if create {
        create_private_dir(&folder).map_err(|e| {
            CliError::failed(format!("cannot create folder {}: {e}", folder.display()))
        })?;
    }
    crate::archive::check_folder_writable(&folder).map_err(|e| {
        CliError::failed(e.to_string()).with_hint("choose a folder this user can write to (-o DIR)")
    })?;
    Ok(output)
}

/// The folder an archive file goes into.
fn archive_folder(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Creates a folder (and its missing parents) readable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The resolved command: everything read, parsed and checked before any request is sent.
#[derive(Debug)]
pub struct BackupPlan {
    vaults: Vec<VaultUrl>,
    encryption: Encryption,
    output: Output,
    sealing: super::destination::Sealing,
    scope: Scope,
    all_versions: bool,
    concurrency: usize,
    json: bool,
    fail_fast: bool,
    connect: ConnectOptions,
    /// `--include`, `--name` or `--exclude` narrowed the scope (an empty result then means
    /// "nothing matched", not "the vault is empty").
    narrowed: bool,
    progress_interval: Option<Duration>,
}

impl BackupPlan {
    /// Checks the arguments and reads what they point at (recipient files, passphrase).
    pub fn resolve(args: &BackupArgs) -> Result<Self, CliError> {
        let vaults = args
            .vaults
            .iter()
            .map(|v| parse_vault(v))
            .collect::<Result<Vec<_>, _>>()?;
        let stores = vaults.len();
        Self::resolve_for(args, vaults, stores)
    }

    /// [`BackupPlan::resolve`] with the vaults parsed (none for a KV mount, which
    /// [`kv_mount`] parses itself), `stores` counting what will be backed up.
    fn resolve_for(
        args: &BackupArgs,
        vaults: Vec<VaultUrl>,
        stores: usize,
    ) -> Result<Self, CliError> {
        let choice = choose_output(args.output.as_deref(), args.mkdir)?;
        if stores > 1
            && !matches!(
                choice,
                OutputChoice::Dir(_) | OutputChoice::NewDir(_) | OutputChoice::Remote(_)
            )
        {
            return Err(CliError::usage(
                "several --vault values need a folder for -o (one archive per vault)",
            )
            .with_hint("give -o an existing folder, or run one backup per vault"));
        }
        if matches!(choice, OutputChoice::Stdout) && args.json {
            return Err(CliError::usage("-o - and --json both want stdout")
                .with_hint("write the archive to a file or folder when using --json"));
        }
        let sealing = args.off_tenant.resolve(
            matches!(choice, OutputChoice::Remote(_)),
            matches!(choice, OutputChoice::Stdout),
        )?;
        let encryption = args.encryption.resolve()?;
        let scope = Scope::resolve(&args.scope)?;
        // Last, once every argument is known good: the folder is created only for a run
        // that will use it.
        let output = match choice {
            OutputChoice::Remote(url) => Output::Remote(Arc::new(
                super::destination::RemoteOutput::resolve(&url, &args.off_tenant, stores)?,
            )),
            choice => prepare_output(choice)?,
        };
        let narrowed = !args.scope.names.is_empty()
            || !args.scope.excludes.is_empty()
            || ![ScopeKind::Secrets, ScopeKind::Keys, ScopeKind::Certificates]
                .iter()
                .all(|kind| scope.includes_kind(*kind));
        Ok(Self {
            vaults,
            encryption,
            output,
            sealing,
            scope,
            all_versions: args.all_versions,
            concurrency: usize::from(args.concurrency),
            json: args.json,
            fail_fast: args.fail_fast,
            connect: args.connect.options(),
            narrowed,
            progress_interval: (args.progress_interval > 0.0)
                .then(|| Duration::from_secs_f64(args.progress_interval)),
        })
    }
}

/// Runs `coldvault backup`.
pub async fn run(args: BackupArgs) -> Result<ExitCode, CliError> {
    if args.fleet.discovery.is_fleet() {
        return super::fleet::run_backup(args).await;
    }
    if args
        .vaults
        .iter()
        .any(|v| crate::kv::KvAddress::is_kv_address(v))
    {
        return kv_mount::run(args).await;
    }
    let plan = BackupPlan::resolve(&args)?;
    // Listening starts once the arguments are resolved (a passphrase prompt stays
    // interruptible) and before any archive file is created, so no signal can leave one.
    let mut interrupts = Interrupts::listen()?;
    // Items not captured are printed once, in the summary with their reason; during the run
    // the bar and the periodic line count them.
    let progress = Progress::new(ProgressStyle::detect(plan.json)).without_problem_lines();
    remove_stale_partials(&plan, &progress);
    let mut worst = ExitCode::Ok;
    let mut last_error = None;
    for url in &plan.vaults {
        let gate = OnceLock::new();
        let outcome = tokio::select! {
            outcome = backup_vault(&plan, url, &progress, &gate) => outcome,
            stop = interrupts.recv() => {
                progress.finish_vault();
                return Err(stopped(stop, url.name(), gate.get().cloned()).await);
            }
        };
        progress.finish_vault();
        match outcome {
            Ok(report) => {
                report.print(&progress);
                if report.is_partial() && worst == ExitCode::Ok {
                    worst = ExitCode::Partial;
                }
            }
            Err(err) => {
                if plan.vaults.len() == 1 {
                    return Err(err);
                }
                // Several vaults fail independently: say this one failed, go on with the next.
                if plan.json {
                    emit_json(
                        "vault_failed",
                        &serde_json::json!({ "vault": url.name(), "error": err.message }),
                    );
                }
                progress.note(&format!("coldvault: error: {}", err.message));
                if let Some(hint) = &err.hint {
                    progress.note(&format!("hint: {hint}"));
                }
                worst = ExitCode::Failed;
                last_error = Some(err);
            }
        }
    }
    match (worst, last_error) {
        (ExitCode::Failed, Some(err)) => Err(CliError {
            code: ExitCode::Failed,
            message: format!(
                "some vaults were not backed up; last failure: {}",
                err.message
            ),
            hint: err.hint,
        }),
        (code, _) => Ok(code),
    }
}

/// Backs up one vault for a fleet run ([`super::fleet`]): the same run as `--vault URL`
/// (its own connection, so its own throttle gate), its report printed as a single run's, and
/// what the fleet summary needs returned. `gate` receives the writer's commit gate, so a
/// signal can abandon the archive in progress.
pub async fn backup_one(
    plan: &BackupPlan,
    url: &VaultUrl,
    progress: &Progress,
    gate: &OnceLock<CommitGate>,
) -> Result<super::fleet::SingleOutcome, CliError> {
    let report = backup_vault(plan, url, progress, gate).await?;
    report.print(progress);
    let c = &report.counts;
    Ok(super::fleet::SingleOutcome {
        items: c.secrets + c.keys + c.certificates,
        not_captured: report.skipped.len() as u64,
        bytes: report.bytes,
        seconds: report.seconds,
        path: report.path,
    })
}

/// The error of a run stopped by `stop` while it backed up `vault`. The writer may be
/// finishing on its own thread: its `gate` is abandoned (waiting for a commit in progress), so
/// the message says for certain whether the archive was written.
async fn stopped(stop: StopSignal, vault: &str, gate: Option<CommitGate>) -> CliError {
    let outcome = match gate {
        None => AbandonOutcome::Abandoned,
        Some(gate) => tokio::task::spawn_blocking(move || gate.abandon())
            .await
            .unwrap_or(AbandonOutcome::Abandoned),
    };
    match outcome {
        AbandonOutcome::Abandoned => stop.error(vault, "no archive was written"),
        AbandonOutcome::AlreadyCommitted(Some(path)) => stop.error(
            vault,
            &format!(
                "the archive was already complete and is kept: {}",
                path.display()
            ),
        ),
        AbandonOutcome::AlreadyCommitted(None) => {
            stop.error(vault, "the archive was already complete on standard output")
        }
    }
}

/// Removes the temporary files killed runs left in the output folder, and says so.
fn remove_stale_partials(plan: &BackupPlan, progress: &Progress) {
    let folder = match &plan.output {
        Output::Dir(dir) => dir.clone(),
        Output::File(file) => archive_folder(file),
        Output::Stdout | Output::Remote(_) => return,
    };
    let removed = crate::archive::remove_stale_partials(&folder, STALE_PARTIAL_AGE);
    if removed.is_empty() {
        return;
    }
    let files = if removed.len() == 1 { "file" } else { "files" };
    let text = format!(
        "removed {} stale partial {files} from an interrupted run in {} \
         (untouched for over 24 h, their process gone)",
        removed.len(),
        folder.display()
    );
    if plan.json {
        emit_json("note", &serde_json::json!({ "message": text }));
    } else {
        progress.note(&text);
    }
}

/// What the writer thread receives.
enum Record {
    Item(Captured),
    Deleted(ArchivedDeleted),
    /// Every item was dealt with: write the manifest and rename. A channel closed without it
    /// means the run was abandoned, and the temporary file is deleted.
    Finish {
        started: OffsetDateTime,
    },
}

/// What one vault's run produced.
#[derive(Debug, Serialize)]
struct VaultReport {
    vault: String,
    url: String,
    path: Option<PathBuf>,
    bytes: u64,
    seconds: f64,
    counts: crate::archive::Counts,
    skipped: Vec<SkippedOut>,
    notes: Vec<SkippedOut>,
    recaptured: Vec<RecapturedItem>,
    requests: u64,
    throttled: u64,
    /// Times sustained throttling paused every request and set the learned rate, and the
    /// lowest rate it learned (requests per second).
    rate_cuts: u64,
    lowest_learned_rate: Option<f64>,
    signed_in_with: Option<String>,
    /// The vault was listed and holds no item in scope: the archive is a true copy of
    /// nothing, and the run succeeds with a note.
    empty: bool,
    /// Set when `-o FILE` was taken while the run worked: the archive went to `path`.
    #[serde(skip)]
    renamed_from: Option<PathBuf>,
    #[serde(skip)]
    narrowed: bool,
}

#[derive(Debug, Serialize)]
struct SkippedOut {
    kind: Kind,
    name: String,
    reason: String,
}

impl VaultReport {
    fn is_partial(&self) -> bool {
        !self.skipped.is_empty()
    }

    fn print(&self, progress: &Progress) {
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
            "{}: {} secrets, {} keys, {} certificates -> {shown} ({}, {:.1} s, {} requests, {} throttled)",
            self.vault,
            c.secrets,
            c.keys,
            c.certificates,
            human_bytes(self.bytes),
            self.seconds,
            self.requests,
            self.throttled,
        );
        if c.deleted > 0 {
            eprintln!(
                "  {} soft-deleted items listed in the manifest, not captured",
                c.deleted
            );
        }
        for item in &self.recaptured {
            eprintln!(
                "  {} {} changed during the run (version {}): captured again at version {}",
                item.kind, item.name, item.first_version, item.captured_version
            );
        }
        for note in &self.notes {
            eprintln!("  note: {} {}: {}", note.kind, note.name, note.reason);
        }
        for item in &self.skipped {
            eprintln!(
                "  NOT CAPTURED: {} {}: {}",
                item.kind, item.name, item.reason
            );
        }
        if self.is_partial() {
            eprintln!(
                "{}: {} items not captured (each named above and in the manifest)",
                self.vault,
                self.skipped.len()
            );
        }
        if let Some(asked) = &self.renamed_from {
            eprintln!(
                "  note: {} appeared while the backup ran: the archive was written as {shown}",
                asked.display()
            );
        }
        if self.empty {
            if self.narrowed {
                eprintln!(
                    "{}: no item matches --include/--name/--exclude: nothing to back up \
                     (the archive records an empty selection)",
                    self.vault
                );
            } else {
                eprintln!(
                    "vault {} is empty: nothing to back up (the archive is kept as its record)",
                    self.vault
                );
            }
        }
    }
}

/// Opens the archive writer for the plan's output (folder, file, stdout, or an upload to
/// Blob Storage or S3, with its handle): an existing file fails here, before any request.
async fn open_writer(
    plan: &BackupPlan,
    source: Source,
) -> Result<(ArchiveWriter, Option<Upload<'_>>), CliError> {
    let destination = match &plan.output {
        Output::Remote(remote) => {
            let (writer, handle) = remote.writer(&plan.encryption, source).await?;
            return Ok((writer, Some((remote.as_ref(), handle))));
        }
        Output::Dir(dir) => Destination::Dir(dir.clone()),
        Output::File(file) => Destination::File(file.clone()),
        Output::Stdout => Destination::Stdout,
    };
    Ok((
        ArchiveWriter::create(destination, &plan.encryption, source)?,
        None,
    ))
}

/// An upload in progress: where to, and its handle (committed or aborted at the end).
type Upload<'p> = (
    &'p super::destination::RemoteOutput,
    super::destination::UploadHandle,
);

/// Backs up one vault. `gate` receives the writer's [`CommitGate`] as soon as the archive
/// is started, for the signal handler of [`run`].
async fn backup_vault(
    plan: &BackupPlan,
    url: &VaultUrl,
    progress: &Progress,
    gate: &OnceLock<CommitGate>,
) -> Result<VaultReport, CliError> {
    let started_clock = Instant::now();
    let started = OffsetDateTime::now_utc();
    progress.start_vault(url.name());
    // The destination is checked before any request: an existing file fails now.
    let source = Source {
        vault: url.name().to_owned(),
        url: url.as_str().to_owned(),
    };
    let (writer, upload) = open_writer(plan, source).await?;
    let _ = gate.set(writer.commit_gate());
    let vault = connect(url, &plan.connect).await?;
    let signed_in_with = vault.signed_in_with().map(|c| c.to_string());
    if let Some(how) = &signed_in_with {
        progress.note(&format!("{}: signed in with {how}", url.name()));
    }

    let (tx, rx) = mpsc::channel::<Record>(plan.concurrency.max(8) * 2);
    let writer_task = tokio::task::spawn_blocking(move || write_records(writer, rx));

    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    let mut recaptured = Vec::new();
    let mut failure = None;
    // Lists that failed, and whether any item got into the archive: a vault that could not
    // be listed and yielded nothing is a failure, not an empty archive.
    let mut list_failures: Vec<(Kind, VaultError)> = Vec::new();
    let mut captured_any = false;

    // Each item is its own task, so capture work (TLS, JSON, the request pipeline) spreads
    // over every core; the stream keeps at most `concurrency` of them in flight.
    let all_versions = plan.all_versions;
    let listing = Arc::new(ListingProgress::default());
    let mut captures = work_stream(&vault, &plan.scope, &listing)
        .map(|work| {
            let vault = vault.clone();
            tokio::spawn(async move { capture(&vault, work, all_versions).await })
        })
        .buffer_unordered(plan.concurrency);
    // The periodic progress line, for logs: a terminal has the bar, --json has events.
    let periodic = plan
        .progress_interval
        .filter(|_| progress.style() == ProgressStyle::Lines);
    let every = periodic.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = (Instant::now(), 0u64);
    loop {
        let next = loop {
            tokio::select! {
                next = captures.next() => break next,
                _ = ticker.tick(), if periodic.is_some() => {
                    let stats = vault.stats();
                    let (at, requests) = last_tick;
                    let seconds = at.elapsed().as_secs_f64();
                    let rate = if seconds > 0.0 {
                        stats.requests.saturating_sub(requests) as f64 / seconds
                    } else {
                        0.0
                    };
                    last_tick = (Instant::now(), stats.requests);
                    progress.periodic(&PeriodicReport {
                        vault: url.name(),
                        listed: listing.items(),
                        listing_done: listing.done(),
                        requests_per_second: rate,
                        throttled: stats.throttled,
                    });
                }
            }
        };
        let Some(joined) = next else { break };
        let mut captured = match joined {
            Ok(captured) => captured,
            Err(err) => {
                failure = Some(CliError::failed(format!(
                    "{}: a capture task stopped: {err}; no archive written",
                    url.name()
                )));
                break;
            }
        };
        let name = captured.name.clone();
        let kind = captured.kind;
        let reason = (!captured.problems.is_empty()).then(|| captured.problems.join("; "));
        let bytes = captured.pieces.iter().map(piece_size).sum::<u64>();
        captured_any |= !captured.pieces.is_empty();
        if let Some(err) = captured.list_failure.take() {
            list_failures.push((kind, err));
        }
        progress.set_total(listing.items());
        progress.item(&ItemEvent {
            vault: url.name(),
            kind: kind.as_str(),
            name: &name,
            status: if reason.is_some() {
                "not-captured"
            } else {
                "captured"
            },
            reason: reason.as_deref(),
            bytes: Some(bytes),
        });
        for note in &captured.notes {
            notes.push(SkippedOut {
                kind,
                name: name.clone(),
                reason: note.clone(),
            });
        }
        if let Some(item) = &captured.recaptured {
            recaptured.push(item.clone());
        }
        if let Some(reason) = reason {
            skipped.push(SkippedOut {
                kind,
                name: name.clone(),
                reason: reason.clone(),
            });
            if plan.fail_fast {
                failure = Some(CliError::failed(format!(
                    "{}: {kind} {name} could not be captured: {reason}; stopped (--fail-fast), no archive written",
                    url.name()
                )));
                break;
            }
        }
        if tx.send(Record::Item(captured)).await.is_err() {
            break;
        }
    }
    drop(captures);

    if failure.is_none() && !captured_any && !list_failures.is_empty() {
        failure = Some(unlistable(url.name(), &list_failures));
    }

    if failure.is_none() {
        for kind in [Kind::Secret, Kind::Key, Kind::Certificate] {
            if !plan.scope.includes_kind(ScopeKind::of(kind)) {
                continue;
            }
            let mut deleted = vault.list_deleted(kind);
            while let Some(item) = deleted.next().await {
                match item {
                    Ok(item)
                        if !item.managed
                            && plan.scope.includes(ScopeKind::of(kind), &item.name) =>
                    {
                        let record = Record::Deleted(ArchivedDeleted {
                            kind,
                            name: item.name,
                            deleted_on: item.deleted_date,
                            scheduled_purge: item.scheduled_purge_date,
                        });
                        if tx.send(record).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        // Listing soft-deleted items is informational; a vault without soft
                        // delete or an identity without list-deleted rights is no failure.
                        progress.note(&format!(
                            "{}: soft-deleted {}s not listed: {err}",
                            url.name(),
                            kind.as_str()
                        ));
                        break;
                    }
                }
            }
        }
    }

    let result = match failure {
        Some(err) => {
            drop(tx);
            let _ = writer_task.await;
            return Err(err);
        }
        None => {
            let _ = tx.send(Record::Finish { started }).await;
            drop(tx);
            writer_task
                .await
                .map_err(|e| CliError::failed(format!("the archive writer stopped: {e}")))?
        }
    };
    let summary: ArchiveSummary = match result {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            return Err(CliError::failed(format!(
                "{}: the run ended before every item was written; no archive was written",
                url.name()
            )));
        }
        Err(err) => return Err(err.into()),
    };
    let signature = super::destination::seal(
        upload.as_ref().map(|(remote, handle)| (*remote, handle)),
        &summary,
        &plan.sealing,
        (url.name(), url.as_str()),
        |text| progress.note(&format!("{}: {text}", url.name())),
    )
    .await?;
    if let Some(signature) = &signature {
        progress.note(&format!("{}: signed: {signature}", url.name()));
    }
    let stats: RequestStats = vault.stats();
    let renamed_from = match &plan.output {
        Output::File(asked) if summary.path.as_deref() != Some(asked.as_path()) => {
            Some(asked.clone())
        }
        _ => None,
    };
    let empty = summary.counts.secrets + summary.counts.keys + summary.counts.certificates == 0
        && skipped.is_empty();
    Ok(VaultReport {
        vault: url.name().to_owned(),
        url: url.as_str().to_owned(),
        path: summary.path.clone(),
        bytes: summary.bytes,
        seconds: started_clock.elapsed().as_secs_f64(),
        counts: summary.counts,
        skipped,
        notes,
        recaptured,
        requests: stats.requests,
        throttled: stats.throttled,
        rate_cuts: stats.rate_cuts,
        lowest_learned_rate: stats.lowest_learned_rate,
        signed_in_with,
        empty,
        renamed_from,
        narrowed: plan.narrowed,
    })
}

/// The writer thread: appends each record, finishes on [`Record::Finish`], abandons (deleting
/// the temporary file) when the channel closes first.
fn write_records(
    mut writer: ArchiveWriter,
    mut rx: mpsc::Receiver<Record>,
) -> Result<Option<ArchiveSummary>, crate::archive::ArchiveError> {
    while let Some(record) = rx.blocking_recv() {
        match record {
            Record::Item(captured) => write_item(&mut writer, captured)?,
            Record::Deleted(item) => writer.record_deleted(item),
            Record::Finish { started } => {
                writer.set_run_window(started, OffsetDateTime::now_utc());
                return writer.finish().map(Some);
            }
        }
    }
    Ok(None)
}

fn write_item(
    writer: &mut ArchiveWriter,
    captured: Captured,
) -> Result<(), crate::archive::ArchiveError> {
    let Captured {
        kind,
        name,
        pieces,
        problems,
        recaptured,
        ..
    } = captured;
    for piece in pieces {
        match piece {
            Piece::Secret(record) => writer.add_secret_version(&record)?,
            Piece::Blob(info, bytes) => writer.add_blob(&info, &bytes)?,
            Piece::KeyJwk { version, json } => writer.add_key_public_jwk(&name, &version, &json)?,
            Piece::CertificatePublic { version, der } => {
                writer.add_certificate_public(&name, &version, &der)?
            }
            Piece::CertificateExport {
                version,
                content_type,
                bytes,
            } => writer.add_certificate_export(&name, &version, &content_type, &bytes)?,
            Piece::Policy(json) => writer.add_policy(kind, &name, &json)?,
        }
    }
    if !problems.is_empty() {
        writer.record_skipped(kind, &name, &problems.join("; "));
    }
    if let Some(item) = recaptured {
        writer.record_recaptured(item);
    }
    Ok(())
}

fn piece_size(piece: &Piece) -> u64 {
    let len = match piece {
        Piece::Secret(record) => record.value.expose_secret().len(),
        Piece::Blob(_, bytes) => bytes.len(),
        Piece::KeyJwk { json, .. } => json.len(),
        Piece::CertificatePublic { der, .. } => der.len(),
        Piece::CertificateExport { bytes, .. } => bytes.len(),
        Piece::Policy(json) => json.len(),
    };
    len as u64
}

/// The failure of a vault none of whose lists could be read and that yielded no item: why
/// (the vault does not exist, the identity may not list), and what to do. No archive is
/// written for it: an empty archive would pass for a backup.
fn unlistable(vault: &str, failures: &[(Kind, VaultError)]) -> CliError {
    // The lists run concurrently and fail in any order; the message names them in one.
    let kinds = |pick: &dyn Fn(&VaultError) -> bool| {
        let mut kinds: Vec<Kind> = failures
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(kind, _)| *kind)
            .collect();
        kinds.sort();
        kinds
            .iter()
            .map(|kind| format!("{}s", kind.as_str()))
            .collect::<Vec<_>>()
    };
    let (_, first) = &failures[0];
    if let Some((_, VaultError::NotFound { code, message })) =
        failures.iter().find(|(_, e)| e.is_not_found())
    {
        // A list never answers 404 in a vault that exists.
        return CliError::failed(format!(
            "{vault}: vault not found (404 {code}): {message}; no archive written"
        ))
        .with_hint(
            "check the vault's name or URL (and the cloud: vault.azure.net, vault.azure.cn, \
             vault.usgovcloudapi.net); `az keyvault list` shows the vaults you can see",
        );
    }
    let denied = kinds(&|e: &VaultError| e.is_forbidden());
    if !denied.is_empty() {
        let (_, err) = failures
            .iter()
            .find(|(_, e)| e.is_forbidden())
            .unwrap_or(&failures[0]);
        let what = denied.join(", ");
        return CliError::failed(format!(
            "{vault}: nothing could be listed ({what}): {err}; no archive written"
        ))
        .with_hint(format!(
            "grant the identity the List permission on {what} (access policy: List, with Get and \
             Backup to capture them; Azure RBAC: a role such as Key Vault Administrator), \
             or narrow the run with --include"
        ));
    }
    CliError::failed(format!(
        "{vault}: the vault could not be listed: {first}; no archive written"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_mean_what_they_say() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let file = base.join("taken.tar.zst.age");
        std::fs::write(&file, b"x").expect("file");
        let choose = |p: PathBuf, mkdir: bool| choose_output(Some(&p), mkdir);
        assert_eq!(
            choose_output(None, false).ok(),
            Some(OutputChoice::Dir(".".into()))
        );
        assert_eq!(
            choose_output(Some(Path::new("-")), false).ok(),
            Some(OutputChoice::Stdout)
        );
        assert_eq!(
            choose(base.to_owned(), false).ok(),
            Some(OutputChoice::Dir(base.to_owned()))
        );
        // An existing file is a file (the writer refuses it before any work).
        assert_eq!(
            choose(file.clone(), false).ok(),
            Some(OutputChoice::File(file.clone()))
        );
        // A new name: a file when it ends in .age, otherwise a folder that must exist.
        let new_file = base.join("kv.tar.zst.age");
        assert_eq!(
            choose(new_file.clone(), false).ok(),
            Some(OutputChoice::File(new_file))
        );
        let missing = base.join("backups");
        assert!(choose(missing.clone(), false).is_err());
        assert_eq!(
            choose(missing.clone(), true).ok(),
            Some(OutputChoice::NewDir(missing.clone()))
        );
        // A trailing slash is a folder, also over a file's name.
        let slash = |p: &Path| PathBuf::from(format!("{}/", p.display()));
        assert!(choose(slash(&missing), false).is_err());
        assert!(matches!(
            choose(slash(&missing), true),
            Ok(OutputChoice::NewDir(_))
        ));
        let err = choose(slash(&file), true).expect_err("not a folder");
        assert!(err.message.contains("not a folder"), "{}", err.message);
        // A file in a missing folder: an error, or the folder is created with --mkdir.
        let nested = base.join("nowhere").join("kv.tar.zst.age");
        assert!(choose(nested.clone(), false).is_err());
        assert_eq!(
            choose(nested.clone(), true).ok(),
            Some(OutputChoice::FileInNewDir(nested))
        );
    }

    fn writer_in(dir: &Path) -> ArchiveWriter {
        let identity = age::x25519::Identity::generate();
        let mut recipients = crate::archive::keys::RecipientSet::new();
        recipients
            .add(&identity.to_public().to_string())
            .expect("recipient");
        let encryption = Encryption::to_recipients(recipients).expect("encryption");
        let source = Source {
            vault: "kv".to_owned(),
            url: "https://kv.vault.azure.net/".to_owned(),
        };
        ArchiveWriter::create(Destination::Dir(dir.to_owned()), &encryption, source)
            .expect("writer")
    }

    /// The writer thread told to finish, as `backup_vault` tells it.
    async fn finish_on_writer_thread(
        writer: ArchiveWriter,
    ) -> Result<Option<ArchiveSummary>, crate::archive::ArchiveError> {
        let (tx, rx) = mpsc::channel::<Record>(4);
        let started = OffsetDateTime::now_utc();
        let thread = tokio::task::spawn_blocking(move || write_records(writer, rx));
        tx.send(Record::Finish { started }).await.expect("sent");
        drop(tx);
        thread.await.expect("writer thread")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupt_during_finish_never_says_no_archive_when_one_was_written() {
        // The interrupt first: the writer, told to finish afterwards, never renames.
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = writer_in(dir.path());
        let gate = writer.commit_gate();
        let err = stopped(StopSignal::Interrupt, "kv", Some(gate)).await;
        assert_eq!(
            err.message,
            "kv: interrupted (SIGINT); no archive was written"
        );
        assert!(matches!(
            finish_on_writer_thread(writer).await,
            Err(crate::archive::ArchiveError::Abandoned)
        ));
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(left.is_empty(), "no archive, no temporary file: {left:?}");

        // The writer first: the interrupt that follows names the archive it finds complete.
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = writer_in(dir.path());
        let gate = writer.commit_gate();
        let summary = finish_on_writer_thread(writer)
            .await
            .expect("finished")
            .expect("summary");
        let path = summary.path.expect("path");
        let err = stopped(StopSignal::Terminate, "kv", Some(gate)).await;
        assert_eq!(err.code, ExitCode::Terminated);
        assert!(
            err.message.contains("already complete")
                && err.message.contains(&path.display().to_string()),
            "{}",
            err.message
        );
        assert!(!err.message.contains("no archive"), "{}", err.message);
        assert!(path.is_file());

        // Before any archive was started there is nothing to abandon.
        let err = stopped(StopSignal::HangUp, "kv", None).await;
        assert!(err.message.ends_with("no archive was written"));
    }
}
