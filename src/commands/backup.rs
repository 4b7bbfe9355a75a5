//! `coldvault backup`: whole vaults into encrypted archives.
//!
//! Per vault: list every kind in scope, capture the items concurrently (values, native backup
//! blobs, public parts, policies), and stream each item's pieces to one writer thread that
//! owns the [`ArchiveWriter`]. The archive is finished only when every item has been dealt
//! with; an interrupted or failed run drops the writer, which deletes the temporary file, so
//! no partial archive ever carries the final name. Items that cannot be captured are recorded
//! in the manifest with their reason and the run exits 3.

use std::path::{Path, PathBuf};
use std::time::Instant;

use age::secrecy::zeroize::Zeroizing;
use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::connect_args::{ConnectArgs, connect, parse_vault};
use super::keys_args::EncryptArgs;
use super::scope::{ItemKind as ScopeKind, Scope, ScopeArgs};
use crate::archive::manifest::{DeletedItem as ArchivedDeleted, RecapturedItem};
use crate::archive::{
    ArchiveSummary, ArchiveWriter, Attributes as ArchivedAttributes, Destination, Encryption,
    ItemInfo, Kind, SecretRecord, Source,
};
use crate::error::{CliError, ExitCode};
use crate::output::progress::{ItemEvent, Progress, ProgressStyle, emit_json, human_bytes};
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

Exit codes: 0 complete, 1 failed (no archive), 2 usage, 3 partial (some items not captured, \
each named in the manifest and the summary), 130 interrupted.")]
pub struct BackupArgs {
    /// The vault to back up: a name (NAME.vault.azure.net) or a full URL. Repeat for several
    /// vaults: one archive each, independent failures.
    #[arg(long = "vault", value_name = "NAME|URL", required = true)]
    pub vaults: Vec<String>,

    #[command(flatten)]
    pub encryption: EncryptArgs,

    /// Where the archive goes: a folder (default: the current one) for
    /// NAME-YYYYMMDDTHHMMSSZ.tar.zst.age, a file name (one vault), or - for stdout.
    #[arg(short = 'o', long = "output", value_name = "DIR|FILE|-")]
    pub output: Option<PathBuf>,

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

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where archives go, resolved.
#[derive(Debug, Clone)]
enum Output {
    Dir(PathBuf),
    File(PathBuf),
    Stdout,
}

/// The resolved command: everything read, parsed and checked before any request is sent.
#[derive(Debug)]
pub struct BackupPlan {
    vaults: Vec<VaultUrl>,
    encryption: Encryption,
    output: Output,
    scope: Scope,
    all_versions: bool,
    concurrency: usize,
    json: bool,
    fail_fast: bool,
    connect: ConnectOptions,
}

impl BackupPlan {
    /// Checks the arguments and reads what they point at (recipient files, passphrase).
    pub fn resolve(args: &BackupArgs) -> Result<Self, CliError> {
        let vaults = args
            .vaults
            .iter()
            .map(|v| parse_vault(v))
            .collect::<Result<Vec<_>, _>>()?;
        let output = match args.output.as_deref() {
            None => Output::Dir(PathBuf::from(".")),
            Some(p) if p == Path::new("-") => Output::Stdout,
            Some(p) if p.is_dir() => Output::Dir(p.to_owned()),
            Some(p) => Output::File(p.to_owned()),
        };
        if vaults.len() > 1 && !matches!(output, Output::Dir(_)) {
            return Err(CliError::usage(
                "several --vault values need a folder for -o (one archive per vault)",
            )
            .with_hint("give -o an existing folder, or run one backup per vault"));
        }
        if matches!(output, Output::Stdout) && args.json {
            return Err(CliError::usage("-o - and --json both want stdout")
                .with_hint("write the archive to a file or folder when using --json"));
        }
        let encryption = args.encryption.resolve()?;
        Ok(Self {
            vaults,
            encryption,
            output,
            scope: Scope::resolve(&args.scope)?,
            all_versions: args.all_versions,
            concurrency: usize::from(args.concurrency),
            json: args.json,
            fail_fast: args.fail_fast,
            connect: args.connect.options(),
        })
    }
}

/// Runs `coldvault backup`.
pub async fn run(args: BackupArgs) -> Result<ExitCode, CliError> {
    let plan = BackupPlan::resolve(&args)?;
    let progress = Progress::new(ProgressStyle::detect(plan.json));
    let mut worst = ExitCode::Ok;
    let mut last_error = None;
    for url in &plan.vaults {
        let outcome = tokio::select! {
            outcome = backup_vault(&plan, url, &progress) => outcome,
            _ = tokio::signal::ctrl_c() => {
                progress.finish_vault();
                return Err(CliError {
                    code: ExitCode::Interrupted,
                    message: format!("{}: interrupted; no archive was written", url.name()),
                    hint: None,
                });
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
        if c.secrets + c.keys + c.certificates == 0 && self.skipped.is_empty() {
            eprintln!(
                "{}: nothing to back up: the vault holds no items in scope \
                 (or the identity may list none: does it have list permission?)",
                self.vault
            );
        }
    }
}

async fn backup_vault(
    plan: &BackupPlan,
    url: &VaultUrl,
    progress: &Progress,
) -> Result<VaultReport, CliError> {
    let started_clock = Instant::now();
    let started = OffsetDateTime::now_utc();
    progress.start_vault(url.name());
    // The destination is checked before any request: an existing file fails now.
    let destination = match &plan.output {
        Output::Dir(dir) => Destination::Dir(dir.clone()),
        Output::File(file) => Destination::File(file.clone()),
        Output::Stdout => Destination::Stdout,
    };
    let source = Source {
        vault: url.name().to_owned(),
        url: url.as_str().to_owned(),
    };
    let writer = ArchiveWriter::create(destination, &plan.encryption, source)?;
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

    // Each item is its own task, so capture work (TLS, JSON, the request pipeline) spreads
    // over every core; the stream keeps at most `concurrency` of them in flight.
    let all_versions = plan.all_versions;
    let mut captures = work_stream(&vault, &plan.scope)
        .map(|work| {
            let vault = vault.clone();
            tokio::spawn(async move { capture(&vault, work, all_versions).await })
        })
        .buffer_unordered(plan.concurrency);
    while let Some(joined) = captures.next().await {
        let captured = match joined {
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
    let stats: RequestStats = vault.stats();
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

/// Every item in scope, streamed as list pages arrive. The three kinds are listed at the same
/// time, each by a task of its own that follows its `nextLink` chain at full speed. Managed
/// keys and secrets are left out: the certificate's blob carries them.
fn work_stream(vault: &AzureVault, scope: &Scope) -> BoxStream<'static, Work> {
    let (tx, rx) = mpsc::channel::<Work>(LISTED_AHEAD);
    if scope.includes_kind(ScopeKind::Secrets) {
        let s = scope.clone();
        spawn_listing(vault.list_secrets(), tx.clone(), move |item| match item {
            Ok(p) if p.managed || !s.includes(ScopeKind::Secrets, &p.name) => None,
            Ok(p) => Some(Work::Secret(p)),
            Err(e) => Some(Work::ListFailed(Kind::Secret, e)),
        });
    }
    if scope.includes_kind(ScopeKind::Keys) {
        let s = scope.clone();
        spawn_listing(vault.list_keys(), tx.clone(), move |item| match item {
            Ok(p) if p.managed || !s.includes(ScopeKind::Keys, &p.name) => None,
            Ok(p) => Some(Work::Key(p)),
            Err(e) => Some(Work::ListFailed(Kind::Key, e)),
        });
    }
    if scope.includes_kind(ScopeKind::Certificates) {
        let s = scope.clone();
        spawn_listing(vault.list_certificates(), tx, move |item| match item {
            Ok(p) if !s.includes(ScopeKind::Certificates, &p.name) => None,
            Ok(p) => Some(Work::Certificate(p)),
            Err(e) => Some(Work::ListFailed(Kind::Certificate, e)),
        });
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
    select: impl Fn(Result<T, VaultError>) -> Option<Work> + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(item) = list.next().await {
            let failed = item.is_err();
            if let Some(work) = select(item)
                && tx.send(work).await.is_err()
            {
                return;
            }
            if failed {
                return;
            }
        }
    });
}

async fn capture(vault: &AzureVault, work: Work, all_versions: bool) -> Captured {
    match work {
        Work::Secret(props) => capture_secret(vault, &props, all_versions).await,
        Work::Key(props) => capture_key(vault, &props).await,
        Work::Certificate(props) => capture_certificate(vault, &props).await,
        Work::ListFailed(kind, err) => {
            let mut captured = Captured::new(kind, "*");
            captured.problems.push(list_failure(kind, &err));
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

async fn capture_secret(
    vault: &AzureVault,
    props: &SecretProperties,
    all_versions: bool,
) -> Captured {
    let name = props.name.as_str();
    let mut baseline = props.attributes.updated;
    let mut first_version: Option<String> = None;
    let mut captured = Captured::new(Kind::Secret, name);
    for attempt in 0..CAPTURE_ATTEMPTS {
        captured = Captured::new(Kind::Secret, name);
        // The blob first, the value second: if the value is still the version the list saw,
        // no new version can have slipped in between, and blob and value agree.
        let blob = vault.backup(ItemKind::Secret, name).await;
        let disabled = props.attributes.enabled == Some(false);
        let mut current_version = None;
        let mut current_updated = None;
        let mut current_value = None;
        // Azure refuses to back up a secret with too many versions: its values are the only
        // copy to take. Permission, throttling and races are failures, not a reason to switch.
        let blob_unsupported = matches!(&blob,
            Err(e) if !e.is_forbidden() && !e.is_not_found() && !e.is_retryable());
        let plain_every_version = all_versions || blob_unsupported;
        if disabled {
            // Its value cannot be read, but its version id can: the newest of its versions.
            match vault.list_secret_versions(name).await {
                Ok(versions) => {
                    if let Some(newest) = versions.last() {
                        current_version = newest.version.clone();
                        current_updated = newest.attributes.updated;
                    }
                }
                Err(err) => captured
                    .problems
                    .push(describe_failure("version list", &err)),
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
        if plain_every_version && captured.problems.is_empty() {
            capture_secret_versions(vault, name, current_value, &mut captured).await;
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
            Err(err) if blob_unsupported && !captured.pieces.is_empty() => {
                captured.notes.push(format!(
                    "native backup refused ({err}): every version captured as a plain value instead"
                ))
            }
            Err(err) => captured
                .problems
                .push(describe_failure("backup blob", &err)),
        }
        let changed = current_updated.is_some() && current_updated != baseline;
        if !changed || attempt + 1 == CAPTURE_ATTEMPTS {
            captured.recaptured = recaptured(Kind::Secret, name, &first_version, &current_version);
            break;
        }
        baseline = current_updated;
        first_version = current_version;
    }
    captured
}

/// Every version of a secret as plain values, oldest first; disabled versions are noted. The
/// current version, already read, is not read again.
async fn capture_secret_versions(
    vault: &AzureVault,
    name: &str,
    mut current: Option<SecretVersionValue>,
    captured: &mut Captured,
) {
    let versions = match vault.list_secret_versions(name).await {
        Ok(versions) => versions,
        Err(err) => {
            captured
                .problems
                .push(describe_failure("version list", &err));
            return;
        }
    };
    let mut disabled = 0usize;
    for props in versions {
        let Some(version) = props.version.clone() else {
            continue;
        };
        if props.attributes.enabled == Some(false) {
            disabled += 1;
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
            }
            continue;
        }
        match vault.get_secret(name, Some(&version)).await {
            Ok(value) => captured
                .pieces
                .push(Piece::Secret(secret_record(value, false))),
            Err(err) if err.is_secret_disabled() => disabled += 1,
            Err(err) => captured
                .problems
                .push(describe_failure(&format!("version {version}"), &err)),
        }
    }
    if disabled > 0 {
        let versions = if disabled == 1 { "version" } else { "versions" };
        captured.notes.push(format!(
            "{disabled} disabled {versions}: values cannot be read; the native backup blob holds them"
        ));
    }
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

async fn capture_key(vault: &AzureVault, props: &KeyProperties) -> Captured {
    let name = props.name.as_str();
    let mut baseline = props.attributes.updated;
    let mut first_version: Option<String> = None;
    let mut captured = Captured::new(Kind::Key, name);
    for attempt in 0..CAPTURE_ATTEMPTS {
        captured = Captured::new(Kind::Key, name);
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
            Err(err) => captured.problems.push(describe_failure(
                "backup blob (keys can be exported no other way)",
                &err,
            )),
        }
        let changed = updated.is_some() && updated != baseline;
        if !changed || attempt + 1 == CAPTURE_ATTEMPTS {
            captured.recaptured = recaptured(Kind::Key, name, &first_version, &version);
            break;
        }
        baseline = updated;
        first_version = version;
    }
    captured
}

async fn capture_certificate(vault: &AzureVault, props: &CertificateProperties) -> Captured {
    let name = props.name.as_str();
    let mut baseline = props.attributes.updated;
    let mut first_version: Option<String> = None;
    let mut captured = Captured::new(Kind::Certificate, name);
    for attempt in 0..CAPTURE_ATTEMPTS {
        captured = Captured::new(Kind::Certificate, name);
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
            Err(err) => captured
                .problems
                .push(describe_failure("backup blob", &err)),
        }
        let changed = updated.is_some() && updated != baseline;
        if !changed || attempt + 1 == CAPTURE_ATTEMPTS {
            captured.recaptured = recaptured(Kind::Certificate, name, &first_version, &version);
            break;
        }
        baseline = updated;
        first_version = version;
    }
    captured
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
