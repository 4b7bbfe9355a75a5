//! `coldvault backup`: whole vaults into encrypted archives.
//!
//! Per vault: list every kind in scope, capture the items concurrently (values, native backup
//! blobs, public parts, policies), and stream each item's pieces to one writer thread that
//! owns the [`ArchiveWriter`]. The archive is finished only when every item has been dealt
//! with; an interrupted or failed run drops the writer, which deletes the temporary file, so
//! no partial archive ever carries the final name. Items that cannot be captured are recorded
//! in the manifest with their reason and the run exits 3.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use age::secrecy::zeroize::Zeroizing;
use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::connect_args::{ConnectArgs, connect, parse_vault};
use super::interrupt::{Interrupts, StopSignal};
use super::keys_args::EncryptArgs;
use super::scope::{ItemKind as ScopeKind, Scope, ScopeArgs};
use crate::archive::manifest::{DeletedItem as ArchivedDeleted, RecapturedItem};
use crate::archive::{
    AbandonOutcome, ArchiveSummary, ArchiveWriter, Attributes as ArchivedAttributes, CommitGate,
    Destination, Encryption, FILE_SUFFIX, ItemInfo, Kind, SecretRecord, Source,
};
use crate::error::{CliError, ExitCode};
use crate::output::progress::{ItemEvent, PeriodicReport, Progress, ProgressStyle, emit_json};
use crate::output::table::human_bytes;
use crate::vault::azure::{AzureVault, ConnectOptions};
use crate::vault::pacing::RequestStats;
use crate::vault::{
    Attributes, CertificateProperties, ItemKind, KeyProperties, SecretProperties,
    SecretVersionValue, VaultError, VaultReader, VaultUrl,
};

/// Requests in flight per vault unless `--concurrency` says otherwise. Key Vault allows about
/// 4,000 requests per 10 s; the shared pacing gate keeps this many workers within it.
const DEFAULT_CONCURRENCY: u16 = 64;

/// Arguments of `coldvault backup`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault backup --vault prod-kv -r age1... -o /backups
  coldvault backup --vault https://kv.vault.azure.cn/ -R team.keys --all-versions --json

Exit codes: 0 complete (an empty vault too), 1 failed (no archive; also a vault that could not be \
listed at all, or an archive whose folder could not be synced), 2 usage, 3 partial (some items \
not captured, each named in the manifest and the summary), 130/143/129 stopped by \
SIGINT/SIGTERM/SIGHUP (no archive, unless the message names one already complete).")]
pub struct BackupArgs {
    /// The vault to back up: a name (NAME.vault.azure.net) or a full URL. Repeat for several
    /// vaults: one archive each, independent failures.
    #[arg(long = "vault", value_name = "NAME|URL",
          required_unless_present_any = ["subscriptions", "all_subscriptions"],
          conflicts_with_all = ["subscriptions", "all_subscriptions"])]
    pub vaults: Vec<String>,

    /// A fleet instead of --vault: every vault found through Azure Resource Manager.
    #[command(flatten)]
    pub fleet: super::fleet::FleetBackupArgs,

    #[command(flatten)]
    pub encryption: EncryptArgs,

    /// Where the archive goes: a folder (default: the current one) for
    /// NAME-YYYYMMDDTHHMMSSZ.tar.zst.age, a file name ending in .age (one vault), or - for
    /// stdout. A trailing / always means a folder. The folder must exist (see --mkdir).
    #[arg(short = 'o', long = "output", value_name = "DIR|FILE|-")]
    pub output: Option<PathBuf>,

    /// Create the -o folder (or the folder of -o FILE) when it does not exist, mode 0700.
    #[arg(long)]
    pub mkdir: bool,

    #[command(flatten)]
    pub off_tenant: super::destination::OutputArgs,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// Capture every version of every secret as a plain value (oldest first), not only the
    /// current one.
    #[arg(long)]
    pub all_versions: bool,

    /// Requests in flight per vault.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,

    /// JSON Lines on stdout: one event per item, then a summary per vault.
    #[arg(long)]
    pub json: bool,

    /// Stop at the first item that cannot be captured (no archive is written).
    #[arg(long)]
    pub fail_fast: bool,

    /// Seconds between the one-line progress reports on stderr when stderr is not a terminal
    /// (a log file, a pipe); 0 turns them off. Never under --json.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PROGRESS_INTERVAL,
          value_parser = parse_interval)]
    pub progress_interval: f64,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How often a long run reports progress in a log (`--progress-interval`).
const DEFAULT_PROGRESS_INTERVAL: f64 = 10.0;

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err("expected a number of seconds from 0 to 86400".to_owned()),
    }
}

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
        let choice = choose_output(args.output.as_deref(), args.mkdir)?;
        if vaults.len() > 1
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
                super::destination::RemoteOutput::resolve(&url, &args.off_tenant, vaults.len())?,
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

/// One piece of an item, in the order it goes into the archive.
enum Piece {
    Secret(SecretRecord),
    Blob(ItemInfo, Vec<u8>),
    KeyJwk {
        version: String,
        json: Vec<u8>,
    },
    CertificatePublic {
        version: String,
        der: Vec<u8>,
    },
    CertificateExport {
        version: String,
        content_type: String,
        bytes: Zeroizing<Vec<u8>>,
    },
    Policy(Vec<u8>),
}

/// Everything captured of one item, with what went wrong.
struct Captured {
    kind: Kind,
    name: String,
    pieces: Vec<Piece>,
    /// Failures: the item is recorded as skipped with these reasons (exit 3).
    problems: Vec<String>,
    /// Known limits that lose nothing Azure lets anyone have (a disabled secret's value).
    notes: Vec<String>,
    recaptured: Option<RecapturedItem>,
    /// Set on the stand-in item (`*`) of a list that failed: why it failed.
    list_failure: Option<VaultError>,
}

impl Captured {
    fn new(kind: Kind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            pieces: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
            recaptured: None,
            list_failure: None,
        }
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
    let mut upload = None;
    let writer = match &plan.output {
        Output::Remote(remote) => {
            let (writer, handle) = remote.writer(&plan.encryption, source).await?;
            upload = Some((remote.as_ref(), handle));
            writer
        }
        Output::Dir(dir) => {
            ArchiveWriter::create(Destination::Dir(dir.clone()), &plan.encryption, source)?
        }
        Output::File(file) => {
            ArchiveWriter::create(Destination::File(file.clone()), &plan.encryption, source)?
        }
        Output::Stdout => ArchiveWriter::create(Destination::Stdout, &plan.encryption, source)?,
    };
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
            if !plan.scope.includes_kind(scope_kind(kind)) {
                continue;
            }
            let mut deleted = vault.list_deleted(vault_kind(kind));
            while let Some(item) = deleted.next().await {
                match item {
                    Ok(item)
                        if !item.managed && plan.scope.includes(scope_kind(kind), &item.name) =>
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

/// One item to capture, or a list that failed.
enum Work {
    Secret(SecretProperties),
    Key(KeyProperties),
    Certificate(CertificateProperties),
    ListFailed(Kind, VaultError),
}

/// How many listed items may wait for a capture slot. Listing runs ahead of capturing so the
/// `nextLink` chain — the one part of a backup that cannot run concurrently — never waits for
/// captures; this bounds the memory it may use meanwhile (properties only, no values).
const LISTED_AHEAD: usize = 10_000;

/// How far listing has come: items in scope listed so far, and lists still running. Read by
/// the periodic progress line.
#[derive(Debug, Default)]
struct ListingProgress {
    items: AtomicU64,
    running: AtomicUsize,
}

impl ListingProgress {
    fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    fn done(&self) -> bool {
        self.running.load(Ordering::Relaxed) == 0
    }
}

/// Every item in scope, streamed as list pages arrive. The three kinds are listed at the same
/// time, each by a task of its own that follows its `nextLink` chain at full speed. Managed
/// keys and secrets are left out: the certificate's blob carries them.
fn work_stream(
    vault: &AzureVault,
    scope: &Scope,
    listing: &Arc<ListingProgress>,
) -> BoxStream<'static, Work> {
    let (tx, rx) = mpsc::channel::<Work>(LISTED_AHEAD);
    // Each list counts as running from before its task starts, so "done" is never early.
    let track = || {
        listing.running.fetch_add(1, Ordering::Relaxed);
        Arc::clone(listing)
    };
    if scope.includes_kind(ScopeKind::Secrets) {
        let s = scope.clone();
        spawn_listing(
            vault.list_secrets(),
            tx.clone(),
            track(),
            move |item| match item {
                Ok(p) if p.managed || !s.includes(ScopeKind::Secrets, &p.name) => None,
                Ok(p) => Some(Work::Secret(p)),
                Err(e) => Some(Work::ListFailed(Kind::Secret, e)),
            },
        );
    }
    if scope.includes_kind(ScopeKind::Keys) {
        let s = scope.clone();
        spawn_listing(
            vault.list_keys(),
            tx.clone(),
            track(),
            move |item| match item {
                Ok(p) if p.managed || !s.includes(ScopeKind::Keys, &p.name) => None,
                Ok(p) => Some(Work::Key(p)),
                Err(e) => Some(Work::ListFailed(Kind::Key, e)),
            },
        );
    }
    if scope.includes_kind(ScopeKind::Certificates) {
        let s = scope.clone();
        spawn_listing(
            vault.list_certificates(),
            tx,
            track(),
            move |item| match item {
                Ok(p) if !s.includes(ScopeKind::Certificates, &p.name) => None,
                Ok(p) => Some(Work::Certificate(p)),
                Err(e) => Some(Work::ListFailed(Kind::Certificate, e)),
            },
        );
    }
    futures::stream::unfold(rx, |mut rx| async move {
        let work = rx.recv().await?;
        Some((work, rx))
    })
    .boxed()
}

/// Drives one list to its end in a task of its own, forwarding the items in scope. A list
/// that fails ends after its failure; a receiver gone (the run stopped) ends it early.
fn spawn_listing<T: Send + 'static>(
    mut list: BoxStream<'static, Result<T, VaultError>>,
    tx: mpsc::Sender<Work>,
    listing: Arc<ListingProgress>,
    select: impl Fn(Result<T, VaultError>) -> Option<Work> + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(item) = list.next().await {
            let failed = item.is_err();
            if let Some(work) = select(item) {
                if !failed {
                    listing.items.fetch_add(1, Ordering::Relaxed);
                }
                if tx.send(work).await.is_err() {
                    break;
                }
            }
            if failed {
                break;
            }
        }
        listing.running.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn capture(vault: &AzureVault, work: Work, all_versions: bool) -> Captured {
    match work {
        Work::Secret(props) => {
            let item = SecretCapture {
                props: &props,
                all_versions,
            };
            capture_consistent(vault, &item).await
        }
        Work::Key(props) => capture_consistent(vault, &KeyCapture { props: &props }).await,
        Work::Certificate(props) => {
            capture_consistent(vault, &CertificateCapture { props: &props }).await
        }
        Work::ListFailed(kind, err) => {
            let mut captured = Captured::new(kind, "*");
            captured.problems.push(list_failure(kind, &err));
            captured.list_failure = Some(err);
            captured
        }
    }
}

fn list_failure(kind: Kind, err: &VaultError) -> String {
    if err.is_forbidden() {
        format!(
            "{}s could not be listed: {err}; does the identity have list permission?",
            kind.as_str()
        )
    } else {
        format!("{}s could not be listed completely: {err}", kind.as_str())
    }
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

/// Why a piece could not be taken, for the manifest and the summary.
fn describe_failure(what: &str, err: &VaultError) -> String {
    if err.is_not_found() {
        format!("{what}: deleted while the backup ran ({err})")
    } else {
        format!("{what}: {err}")
    }
}

/// How many times an item whose current version changes under the run is captured.
const CAPTURE_ATTEMPTS: usize = 2;

/// The most versions Azure's native backup holds; past it the call times out ("after 500
/// versions the backup operation will time out", Azure/azure-sdk-for-net#20934; Key Vault's
/// backup documentation: "attempting to do so may result in an error").
const MAX_NATIVE_BACKUP_VERSIONS: usize = 500;

/// One capture of an item: its pieces and problems, and its current version as this capture
/// read it.
struct Attempt {
    captured: Captured,
    version: Option<String>,
    updated: Option<OffsetDateTime>,
}

/// A version id and its `updated` time, as a version list reports them.
type VersionStamp = (Option<String>, Option<OffsetDateTime>);

/// What [`capture_consistent`] needs of one kind: one capture of the item, and its versions.
trait Capture: Sync {
    /// The item's kind.
    fn kind(&self) -> Kind;
    /// The item's name.
    fn name(&self) -> &str;
    /// `updated` of the current version as the vault-wide list reported it.
    fn listed_updated(&self) -> Option<OffsetDateTime>;
    /// Captures every piece of the item once.
    fn attempt(&self, vault: &AzureVault) -> impl Future<Output = Attempt> + Send;
    /// Every version (id, `updated`), oldest first.
    fn versions(
        &self,
        vault: &AzureVault,
    ) -> impl Future<Output = Result<Vec<VersionStamp>, VaultError>> + Send;
}

/// Captures an item so that its pieces agree: when the version read differs from what the
/// list saw (a rotation between listing and capture, or during it), the item is captured
/// again, once, and reported as recaptured with the version the list saw and the one kept.
async fn capture_consistent<C: Capture>(vault: &AzureVault, item: &C) -> Captured {
    let mut baseline = item.listed_updated();
    let mut first_seen: Option<String> = None;
    let mut attempts = 0;
    loop {
        let Attempt {
            mut captured,
            version,
            updated,
        } = item.attempt(vault).await;
        attempts += 1;
        let changed = updated.is_some() && updated != baseline;
        if !changed || attempts == CAPTURE_ATTEMPTS {
            if attempts > 1 {
                captured.recaptured = recaptured(item.kind(), item.name(), &first_seen, &version);
            }
            return captured;
        }
        if first_seen.is_none() {
            // The vault-wide list names no version: the one it saw is the version whose
            // `updated` it reported. Failing that, the first capture's is the first seen.
            first_seen = listed_version(vault, item, baseline).await.or(version);
        }
        baseline = updated;
    }
}

/// The version current when the item was listed: the newest whose `updated` is the listed one.
async fn listed_version<C: Capture>(
    vault: &AzureVault,
    item: &C,
    listed: Option<OffsetDateTime>,
) -> Option<String> {
    let listed = listed?;
    let versions = item.versions(vault).await.ok()?;
    versions
        .into_iter()
        .rev()
        .find(|(_, updated)| *updated == Some(listed))
        .and_then(|(version, _)| version)
}

/// Whether a failed native backup may be Azure's answer to an item past the version limit: a
/// time-out, a 5xx or a dropped connection after every retry (or any refusal that is neither
/// a permission, a missing item nor throttling). Only the version count decides.
fn may_be_version_limit(err: &VaultError) -> bool {
    !err.is_forbidden() && !err.is_not_found() && !matches!(err, VaultError::Throttled { .. })
}

/// Why a native backup of an item with `count` versions could not work.
fn version_limit_reason(kind: Kind, count: usize) -> String {
    format!(
        "the {kind} has {count} versions, more than the {MAX_NATIVE_BACKUP_VERSIONS} Azure's \
         native backup can hold (such a backup times out)"
    )
}

/// A secret, captured as its native backup blob and its current value (or every value).
struct SecretCapture<'a> {
    props: &'a SecretProperties,
    all_versions: bool,
}

impl Capture for SecretCapture<'_> {
    fn kind(&self) -> Kind {
        Kind::Secret
    }

    fn name(&self) -> &str {
        &self.props.name
    }

    fn listed_updated(&self) -> Option<OffsetDateTime> {
        self.props.attributes.updated
    }

    async fn versions(&self, vault: &AzureVault) -> Result<Vec<VersionStamp>, VaultError> {
        let versions = vault.list_secret_versions(self.name()).await?;
        Ok(versions
            .into_iter()
            .map(|v| (v.version, v.attributes.updated))
            .collect())
    }

    async fn attempt(&self, vault: &AzureVault) -> Attempt {
        let props = self.props;
        let name = props.name.as_str();
        let mut captured = Captured::new(Kind::Secret, name);
        // The blob first, the value second: if the value is still the version the list saw,
        // no new version can have slipped in between, and blob and value agree.
        let blob = vault.backup(ItemKind::Secret, name).await;
        let disabled = props.attributes.enabled == Some(false);
        // The version list, read when the blob failed in a way the version limit explains
        // (Azure's backup of a secret past it times out): past the limit, the values are the
        // only copy to take. Permission, throttling and races are failures, not a reason.
        let mut versions: Option<Vec<SecretProperties>> = None;
        let mut past_limit = None;
        if let Err(err) = &blob
            && may_be_version_limit(err)
        {
            match vault.list_secret_versions(name).await {
                Ok(list) => {
                    if list.len() > MAX_NATIVE_BACKUP_VERSIONS {
                        past_limit = Some(list.len());
                    }
                    versions = Some(list);
                }
                Err(err) => captured
                    .problems
                    .push(describe_failure("version list", &err)),
            }
        }
        let plain_every_version = self.all_versions || past_limit.is_some();
        let mut current_version = None;
        let mut current_updated = None;
        let mut current_value = None;
        if disabled {
            // Its value cannot be read, but its version id can: the newest of its versions.
            if versions.is_none() {
                match vault.list_secret_versions(name).await {
                    Ok(list) => versions = Some(list),
                    Err(err) => captured
                        .problems
                        .push(describe_failure("version list", &err)),
                }
            }
            if let Some(newest) = versions.as_ref().and_then(|v| v.last()) {
                current_version = newest.version.clone();
                current_updated = newest.attributes.updated;
            }
        }
        if disabled && !plain_every_version {
            captured.notes.push(
                "disabled: its value cannot be read (Azure answers 403 SecretDisabled); \
                 its native backup blob is kept"
                    .to_owned(),
            );
        } else if !disabled {
            match vault.get_secret(name, None).await {
                Ok(value) => {
                    current_version = value.properties.version.clone();
                    current_updated = value.properties.attributes.updated;
                    current_value = Some(value);
                }
                Err(err) if err.is_secret_disabled() => captured.notes.push(
                    "disabled: its value cannot be read (403 SecretDisabled); \
                     its native backup blob is kept"
                        .to_owned(),
                ),
                Err(err) => captured.problems.push(describe_failure("value", &err)),
            }
        }
        let mut plain = None;
        if plain_every_version && captured.problems.is_empty() {
            plain = capture_secret_versions(
                vault,
                name,
                versions,
                current_value,
                blob.is_ok(),
                &mut captured,
            )
            .await;
        } else if let Some(value) = current_value {
            captured
                .pieces
                .push(Piece::Secret(secret_record(value, true)));
        }
        match blob {
            Ok(blob) => {
                let mut info = ItemInfo::new(Kind::Secret, name);
                info.version = current_version.clone();
                info.attributes = archived_attributes(&props.attributes);
                info.tags = props.tags.clone();
                info.content_type = props.content_type.clone();
                captured.pieces.push(Piece::Blob(info, blob.0));
            }
            Err(err) => match (past_limit, plain) {
                (Some(count), Some(plain)) if plain.captured > 0 => {
                    // Say what was taken, never more: disabled versions are missing (and
                    // named as not captured) when no blob holds them.
                    let taken = if plain.captured == plain.listed {
                        format!("every version ({}) captured", plain.listed)
                    } else {
                        format!("{} of {} versions captured", plain.captured, plain.listed)
                    };
                    captured.notes.push(format!(
                        "native backup failed ({err}): {}; {taken} as plain values instead",
                        version_limit_reason(Kind::Secret, count)
                    ));
                }
                (Some(count), _) => captured.problems.push(format!(
                    "backup blob: {err}: {}",
                    version_limit_reason(Kind::Secret, count)
                )),
                (None, _) => captured
                    .problems
                    .push(describe_failure("backup blob", &err)),
            },
        }
        Attempt {
            captured,
            version: current_version,
            updated: current_updated,
        }
    }
}

/// How many versions [`capture_secret_versions`] took of how many listed.
#[derive(Debug, Clone, Copy)]
struct PlainVersions {
    captured: usize,
    listed: usize,
}

/// Every version of a secret as plain values, oldest first (`versions`: the list, when
/// already read). The current version, already read, is not read again. Disabled versions
/// cannot be read (403 `SecretDisabled`): a note when the native blob (`blob_held`) holds
/// them, otherwise a problem naming them, as they are then in no copy.
async fn capture_secret_versions(
    vault: &AzureVault,
    name: &str,
    versions: Option<Vec<SecretProperties>>,
    mut current: Option<SecretVersionValue>,
    blob_held: bool,
    captured: &mut Captured,
) -> Option<PlainVersions> {
    let versions = match versions {
        Some(versions) => versions,
        None => match vault.list_secret_versions(name).await {
            Ok(versions) => versions,
            Err(err) => {
                captured
                    .problems
                    .push(describe_failure("version list", &err));
                return None;
            }
        },
    };
    let mut disabled: Vec<String> = Vec::new();
    let mut taken = 0usize;
    let mut listed = 0usize;
    for props in versions {
        let Some(version) = props.version.clone() else {
            continue;
        };
        listed += 1;
        if props.attributes.enabled == Some(false) {
            disabled.push(version);
            continue;
        }
        let is_current = current
            .as_ref()
            .is_some_and(|c| c.properties.version.as_deref() == Some(version.as_str()));
        if is_current {
            if let Some(value) = current.take() {
                captured
                    .pieces
                    .push(Piece::Secret(secret_record(value, true)));
                taken += 1;
            }
            continue;
        }
        match vault.get_secret(name, Some(&version)).await {
            Ok(value) => {
                captured
                    .pieces
                    .push(Piece::Secret(secret_record(value, false)));
                taken += 1;
            }
            Err(err) if err.is_secret_disabled() => disabled.push(version),
            Err(err) => captured
                .problems
                .push(describe_failure(&format!("version {version}"), &err)),
        }
    }
    // A version made after the list was read is still the value read as current: keep it.
    if let Some(value) = current.take() {
        captured
            .pieces
            .push(Piece::Secret(secret_record(value, true)));
        taken += 1;
        listed += 1;
    }
    if !disabled.is_empty() {
        let count = disabled.len();
        let versions = if count == 1 { "version" } else { "versions" };
        if blob_held {
            captured.notes.push(format!(
                "{count} disabled {versions}: values cannot be read; the native backup blob holds them"
            ));
        } else {
            captured.problems.push(format!(
                "{count} disabled {versions} not captured: Azure does not let a disabled \
                 version be read (403 SecretDisabled) and no native backup holds it: {}",
                disabled.join(", ")
            ));
        }
    }
    Some(PlainVersions {
        captured: taken,
        listed,
    })
}

fn secret_record(value: SecretVersionValue, current: bool) -> SecretRecord {
    let SecretVersionValue { properties, value } = value;
    SecretRecord {
        name: properties.name,
        version: properties.version.unwrap_or_default(),
        value,
        content_type: properties.content_type,
        tags: properties.tags,
        attributes: archived_attributes(&properties.attributes),
        current,
    }
}

/// When a native backup failed in a way the version limit explains, why, from the version
/// count (`None` when the count is within the limit or cannot be read).
async fn past_version_limit<C: Capture>(vault: &AzureVault, item: &C) -> Option<String> {
    let count = item.versions(vault).await.ok()?.len();
    (count > MAX_NATIVE_BACKUP_VERSIONS).then(|| version_limit_reason(item.kind(), count))
}

/// A key, captured as its native backup blob (the only way keys can be exported), its public
/// JWK and its rotation policy.
struct KeyCapture<'a> {
    props: &'a KeyProperties,
}

impl Capture for KeyCapture<'_> {
    fn kind(&self) -> Kind {
        Kind::Key
    }

    fn name(&self) -> &str {
        &self.props.name
    }

    fn listed_updated(&self) -> Option<OffsetDateTime> {
        self.props.attributes.updated
    }

    async fn versions(&self, vault: &AzureVault) -> Result<Vec<VersionStamp>, VaultError> {
        let versions = vault.list_key_versions(self.name()).await?;
        Ok(versions
            .into_iter()
            .map(|v| (v.version, v.attributes.updated))
            .collect())
    }

    async fn attempt(&self, vault: &AzureVault) -> Attempt {
        let props = self.props;
        let name = props.name.as_str();
        let mut captured = Captured::new(Kind::Key, name);
        let blob = vault.backup(ItemKind::Key, name).await;
        let (bundle, policy) = tokio::join!(
            vault.get_key(name, None),
            vault.get_key_rotation_policy(name)
        );
        let mut version = None;
        let mut updated = None;
        match bundle {
            Ok(bundle) => {
                version = bundle.properties.version.clone();
                updated = bundle.properties.attributes.updated;
                match (&version, serde_json::to_vec(&bundle.jwk)) {
                    (Some(v), Ok(json)) => captured.pieces.push(Piece::KeyJwk {
                        version: v.clone(),
                        json,
                    }),
                    _ => captured
                        .problems
                        .push("public key: the vault returned no usable JWK".to_owned()),
                }
            }
            Err(err) => captured.problems.push(describe_failure("public key", &err)),
        }
        match policy {
            Ok(Some(policy)) => {
                if let Ok(json) = serde_json::to_vec(&policy) {
                    captured.pieces.push(Piece::Policy(json));
                }
            }
            Ok(None) => {}
            // A rotation policy is metadata: its absence loses no key.
            Err(err) => captured
                .notes
                .push(format!("rotation policy not read: {err}")),
        }
        match blob {
            Ok(blob) => {
                let mut info = ItemInfo::new(Kind::Key, name);
                info.version = version.clone();
                info.attributes = archived_attributes(&props.attributes);
                info.tags = props.tags.clone();
                captured.pieces.push(Piece::Blob(info, blob.0));
            }
            Err(err) => {
                let mut reason =
                    describe_failure("backup blob (keys can be exported no other way)", &err);
                if may_be_version_limit(&err)
                    && let Some(why) = past_version_limit(vault, self).await
                {
                    reason = format!("{reason}: {why}");
                }
                captured.problems.push(reason);
            }
        }
        Attempt {
            captured,
            version,
            updated,
        }
    }
}

/// A certificate, captured as its native backup blob (with its managed key and secret), its
/// public certificate, its policy and, when the policy allows, its exportable private key.
struct CertificateCapture<'a> {
    props: &'a CertificateProperties,
}

impl Capture for CertificateCapture<'_> {
    fn kind(&self) -> Kind {
        Kind::Certificate
    }

    fn name(&self) -> &str {
        &self.props.name
    }

    fn listed_updated(&self) -> Option<OffsetDateTime> {
        self.props.attributes.updated
    }

    async fn versions(&self, vault: &AzureVault) -> Result<Vec<VersionStamp>, VaultError> {
        let versions = vault.list_certificate_versions(self.name()).await?;
        Ok(versions
            .into_iter()
            .map(|v| (v.version, v.attributes.updated))
            .collect())
    }

    async fn attempt(&self, vault: &AzureVault) -> Attempt {
        let props = self.props;
        let name = props.name.as_str();
        let mut captured = Captured::new(Kind::Certificate, name);
        let blob = vault.backup(ItemKind::Certificate, name).await;
        let mut version = None;
        let mut updated = None;
        match vault.get_certificate(name, None).await {
            Ok(bundle) => {
                version = bundle.properties.version.clone();
                updated = bundle.properties.attributes.updated;
                if let Some(v) = &version {
                    captured.pieces.push(Piece::CertificatePublic {
                        version: v.clone(),
                        der: bundle.cer.clone(),
                    });
                }
                let policy = match &bundle.policy {
                    Some(policy) => Some(policy.clone()),
                    None => match vault.get_certificate_policy(name).await {
                        Ok(policy) => Some(policy),
                        Err(err) => {
                            captured.notes.push(format!("policy not read: {err}"));
                            None
                        }
                    },
                };
                if let Some(json) = policy.as_ref().and_then(|p| serde_json::to_vec(p).ok()) {
                    captured.pieces.push(Piece::Policy(json));
                }
                let exportable = policy
                    .as_ref()
                    .and_then(|p| p.get("key_props"))
                    .and_then(|k| k.get("exportable"))
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                if exportable {
                    capture_certificate_export(vault, name, &bundle, &mut captured).await;
                } else {
                    captured.notes.push(
                        "private key not exportable by policy: only the native backup can bring \
                         it back (same subscription and geography)"
                            .to_owned(),
                    );
                }
            }
            Err(err) => captured
                .problems
                .push(describe_failure("certificate", &err)),
        }
        match blob {
            Ok(blob) => {
                let mut info = ItemInfo::new(Kind::Certificate, name);
                info.version = version.clone();
                info.attributes = archived_attributes(&props.attributes);
                info.tags = props.tags.clone();
                captured.pieces.push(Piece::Blob(info, blob.0));
            }
            Err(err) => {
                let mut reason = describe_failure("backup blob", &err);
                if may_be_version_limit(&err)
                    && let Some(why) = past_version_limit(vault, self).await
                {
                    reason = format!("{reason}: {why}");
                }
                captured.problems.push(reason);
            }
        }
        Attempt {
            captured,
            version,
            updated,
        }
    }
}

/// The certificate with its private key, from the managed secret of the same version.
async fn capture_certificate_export(
    vault: &AzureVault,
    name: &str,
    bundle: &crate::vault::CertificateBundle,
    captured: &mut Captured,
) {
    let Some(version) = bundle.secret_version() else {
        captured
            .problems
            .push("private key: the certificate names no managed secret".to_owned());
        return;
    };
    let secret = match vault.get_secret(name, Some(&version)).await {
        Ok(secret) => secret,
        Err(err) if err.is_secret_disabled() => {
            captured.notes.push(
                "private key: the certificate is disabled, its managed secret cannot be read"
                    .to_owned(),
            );
            return;
        }
        Err(err) => {
            captured
                .problems
                .push(describe_failure("private key (managed secret)", &err));
            return;
        }
    };
    let content_type = secret
        .properties
        .content_type
        .clone()
        .or_else(|| bundle.content_type.clone())
        .unwrap_or_else(|| PKCS12.to_owned());
    match export_bytes(&content_type, &secret.value) {
        Some(bytes) => captured.pieces.push(Piece::CertificateExport {
            version,
            content_type,
            bytes,
        }),
        None => captured.problems.push(format!(
            "private key: the managed secret is not valid {content_type}"
        )),
    }
}

const PKCS12: &str = "application/x-pkcs12";
const PEM: &str = "application/x-pem-file";

/// The exported certificate as a file would hold it: a PFX is stored by Key Vault as standard
/// base64 and goes into the archive as binary (`.pfx`); PEM is text already.
fn export_bytes(content_type: &str, value: &SecretString) -> Option<Zeroizing<Vec<u8>>> {
    match content_type {
        PKCS12 => base64::engine::general_purpose::STANDARD
            .decode(value.expose_secret().trim())
            .ok()
            .map(Zeroizing::new),
        PEM => Some(Zeroizing::new(value.expose_secret().as_bytes().to_vec())),
        _ => None,
    }
}

fn recaptured(
    kind: Kind,
    name: &str,
    first: &Option<String>,
    now: &Option<String>,
) -> Option<RecapturedItem> {
    match (first, now) {
        (Some(first), Some(now)) if first != now => Some(RecapturedItem {
            kind,
            name: name.to_owned(),
            first_version: first.clone(),
            captured_version: now.clone(),
        }),
        _ => None,
    }
}

fn archived_attributes(attributes: &Attributes) -> ArchivedAttributes {
    ArchivedAttributes {
        enabled: attributes.enabled,
        not_before: attributes.not_before,
        expires: attributes.expires,
        created: attributes.created,
        updated: attributes.updated,
    }
}

fn vault_kind(kind: Kind) -> ItemKind {
    match kind {
        Kind::Secret => ItemKind::Secret,
        Kind::Key => ItemKind::Key,
        Kind::Certificate => ItemKind::Certificate,
    }
}

fn scope_kind(kind: Kind) -> ScopeKind {
    match kind {
        Kind::Secret => ScopeKind::Secrets,
        Kind::Key => ScopeKind::Keys,
        Kind::Certificate => ScopeKind::Certificates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfx_exports_are_decoded_pem_kept() {
        let pfx = SecretString::from("AAEC".to_owned());
        assert_eq!(*export_bytes(PKCS12, &pfx).unwrap(), vec![0, 1, 2]);
        let pem = SecretString::from("-----BEGIN CERTIFICATE-----".to_owned());
        assert_eq!(
            *export_bytes(PEM, &pem).unwrap(),
            b"-----BEGIN CERTIFICATE-----".to_vec()
        );
        assert!(export_bytes("text/plain", &pem).is_none());
        assert!(export_bytes(PKCS12, &SecretString::from("!!".to_owned())).is_none());
    }

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

    #[test]
    fn recapture_is_reported_only_for_a_new_version() {
        let a = Some("a".to_owned());
        let b = Some("b".to_owned());
        assert!(recaptured(Kind::Key, "k", &None, &a).is_none());
        assert!(recaptured(Kind::Key, "k", &a, &a).is_none());
        let item = recaptured(Kind::Key, "k", &a, &b).unwrap();
        assert_eq!(item.first_version, "a");
        assert_eq!(item.captured_version, "b");
    }
}
