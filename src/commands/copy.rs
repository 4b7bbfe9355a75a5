//! `coldvault copy --from SRC --to DST`: one vault's items into another, planned then applied,
//! each side signed in with its own identity.
//!
//! Both vaults are listed; whether the target takes the source's native blobs (same
//! subscription and geography) is learnt without creating anything when a name exists on both
//! sides; each source item is read (blob and/or values) and each item present in the target is
//! compared, then the restore planner decides every line and `--prune` adds the target's
//! extraneous items. `--dry-run` prints the plan. Applying writes natively (same version ids)
//! or plainly (values, certificate import), recovers soft-deleted names when asked and
//! soft-deletes pruned items. A rerun plans nothing that is already right. One connection per
//! vault: its pacing gate is shared by every request to that vault.
//!
//! Either side may be a KV v2 mount (`bao+https://…`): it is read whole when the run starts,
//! its paths named by `--granularity` and `--name-template` (a collision refuses the run
//! before any write), and everything moves by value. Every item written from or into a mount
//! carries the `coldvault-source` marker of its source ([`Ownership`]), and only items that
//! carry it are overwritten or pruned. `restore` of a KV archive into a Key Vault runs the same
//! copy from the archive ([`restore_kv_archive`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use super::connect_args::{ConnectArgs, connect, parse_vault, vault_error};
use super::interrupt::Interrupts;
use super::kv_connect::kv_error;
use super::restore_plan::{
    Action, LiveView, Method, Mode, NativeTarget, OnConflict, PlannedItem, Policy, TargetListing,
    inspect_live, list_target, target_state,
};
use super::scope::Scope;
use crate::archive::Kind;
pub use crate::cli::copy::{CopyArgs, MappingArgs, parse_auth};
use crate::copy::apply::soft_delete;
use crate::copy::identity::{IdentitySource, Side, resolve_side_from_process};
use crate::copy::plan::{
    Ownership, PruneLine, decide_item, live_tags, prune_lines, soft_delete_on, target_tags,
};
use crate::copy::source::{SourceHead, Want, capture, certificate_as_pem_secret, list_source};
use crate::copy::store::{KvSignIn, Store};
use crate::engine::item::ItemData;
use crate::engine::restore::apply::{Applier, Outcome};
use crate::error::{CliError, ExitCode};
use crate::kv::KvAddress;
use crate::kv::client::{KvAuth, KvClient, KvError, KvOptions};
use crate::kv::mapping::{Granularity, NameTemplate, marker_value};
use crate::kv::store::{KvStore, KvStoreError};
use crate::output::progress::{ItemEvent, Progress, ProgressStyle, emit_json};
use crate::output::table::Table;
use crate::vault::azure::ConnectOptions;
use crate::vault::credentials::AuthMethod;
use crate::vault::{VaultReader, VaultUrl, VaultWriter};

/// Where one side of a two-store command is: a Key Vault or a KV v2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A Key Vault.
    Vault(VaultUrl),
    /// A HashiCorp Vault / OpenBao KV v2 mount (or a path under one).
    Kv(KvAddress),
}

impl Place {
    /// Parses a side's argument: a KV address (`bao+https://…`, `vault+https://…`) or a Key
    /// Vault name or URL. A bad one is a usage error naming the side's argument.
    pub fn parse(side: Side, input: &str) -> Result<Self, CliError> {
        if KvAddress::is_kv_address(input) {
            return KvAddress::parse(input).map(Place::Kv).map_err(|e| {
                CliError::usage(format!("{} {input:?}: {e}", side.argument())).with_hint(
                    "a KV v2 mount is bao+https://HOST:PORT/MOUNT[/PATH] (or vault+https://…)",
                )
            });
        }
        parse_vault(input).map(Place::Vault).map_err(|e| CliError {
            message: e.message.replacen("--vault", side.argument(), 1),
            ..e
        })
    }

    /// The short name in messages and `--json`: the vault's name, or the KV address.
    pub fn name(&self) -> String {
        match self {
            Place::Vault(url) => url.name().to_owned(),
            Place::Kv(address) => address.to_string(),
        }
    }

    /// The full identity of the store: the vault's URL or the KV address (what a sync state
    /// file records and what the ownership marker names).
    pub fn id(&self) -> String {
        match self {
            Place::Vault(url) => url.as_str().to_owned(),
            Place::Kv(address) => address.to_string(),
        }
    }

    /// Whether this side is a KV mount.
    pub fn is_kv(&self) -> bool {
        matches!(self, Place::Kv(_))
    }
}

/// One side of a two-store command, resolved: where, and how it signs in.
#[derive(Debug)]
pub struct SidePlan {
    /// Which side.
    pub side: Side,
    /// The store.
    pub place: Place,
    /// Key Vault connection options with the side's own environment and method.
    pub options: ConnectOptions,
    /// Where its Key Vault identity comes from.
    pub source: IdentitySource,
}

impl SidePlan {
    /// Resolves a side: its store, its environment (see [`crate::copy::identity`]) and its
    /// method (`pinned`, else `--auth`). A KV side signs in from `VAULT_TOKEN` / `BAO_TOKEN`
    /// or AppRole (`VAULT_ROLE_ID`, `VAULT_SECRET_ID`), read when it connects.
    pub fn resolve(
        side: Side,
        store: &str,
        pinned: Option<AuthMethod>,
        connect: &ConnectArgs,
    ) -> Result<Self, CliError> {
        let place = Place::parse(side, store)?;
        let identity = resolve_side_from_process(side);
        let mut options = connect.options();
        options.env = identity.env;
        options.auth = pinned.or(connect.auth);
        Ok(Self {
            side,
            place,
            options,
            source: identity.source,
        })
    }

    /// The store's short name for messages.
    pub fn name(&self) -> String {
        self.place.name()
    }

    /// Connects and signs in; says on stderr which credential the side used. A KV side is
    /// read whole here (with up to `concurrency` requests at once) and its secrets named with
    /// `template`; it takes writes only when `writes` (a copy's source is only read, which
    /// is also what lets it be read with `--granularity key`).
    pub async fn connect(
        &self,
        template: &NameTemplate,
        concurrency: usize,
        writes: bool,
    ) -> Result<Store, CliError> {
        let label = self.side.label();
        let in_side = |e: CliError| CliError {
            message: format!("{label} side: {}", e.message),
            ..e
        };
        let url = match &self.place {
            Place::Vault(url) => url,
            Place::Kv(address) => {
                let store = connect_kv(address, template, &self.options, concurrency, writes)
                    .await
                    .map_err(in_side)?;
                eprintln!(
                    "{label} {address}: signed in with {}",
                    store.signed_in_with().unwrap_or_default()
                );
                return Ok(store);
            }
        };
        let vault = connect(url, &self.options)
            .await
            .map(Store::Azure)
            .map_err(in_side)?;
        // Always on stderr, `--json` too: which identity touched which vault is what an
        // audit of a cross-tenant copy asks first.
        if let Some(how) = vault.signed_in_with() {
            eprintln!(
                "{label} {}: signed in with {how} from {}",
                url.name(),
                self.source
            );
        }
        Ok(vault)
    }
}

impl MappingArgs {
    /// The name template: `--name-template` for `--granularity`, else that granularity's
    /// default. A bad template is a usage error.
    pub fn template(&self) -> Result<NameTemplate, CliError> {
        match &self.name_template {
            Some(text) => NameTemplate::parse(text, self.granularity).map_err(|e| {
                CliError::usage(e.to_string()).with_hint(
                    "a template holds {path} once (and {key} once with --granularity key) and \
                     otherwise letters, digits and dashes",
                )
            }),
            None => Ok(NameTemplate::default_for(self.granularity)),
        }
    }
}

/// `--granularity key` writes one Key Vault secret per KV key; the other way there is nothing
/// to split, so a KV target takes granularity secret only.
pub fn refuse_key_granularity_into_kv(
    target: &Place,
    mapping: &MappingArgs,
) -> Result<(), CliError> {
    if target.is_kv() && mapping.granularity == Granularity::Key {
        return Err(CliError::usage(
            "--granularity key: a KV target takes one Key Vault secret per KV secret",
        )
        .with_hint("drop --granularity (secret is the default) when copying into a KV mount"));
    }
    Ok(())
}

/// Two sides naming the same store would copy a store onto itself.
pub fn refuse_same_store(a: &Place, b: &Place, flags: &str) -> Result<(), CliError> {
    if a == b {
        return Err(CliError::usage(format!(
            "{flags} name the same {} ({})",
            if a.is_kv() { "mount" } else { "vault" },
            a.id()
        ))
        .with_hint("give two different vaults or mounts"));
    }
    Ok(())
}

/// The resolved command.
#[derive(Debug)]
pub struct CopyPlan {
    from: SidePlan,
    to: SidePlan,
    scope: Scope,
    policy: Policy,
    all_versions: bool,
    prune: bool,
    dry_run: bool,
    json: bool,
    concurrency: usize,
    /// With a KV side: the marker every written item carries, and what the copy may touch.
    ownership: Option<Ownership>,
    /// How KV paths become Key Vault names.
    template: NameTemplate,
}

impl CopyPlan {
    /// Checks the arguments; reads nothing from the network.
    pub fn resolve(args: &CopyArgs) -> Result<Self, CliError> {
        let from = SidePlan::resolve(Side::From, &args.from, args.from_auth, &args.connect)?;
        let to = SidePlan::resolve(Side::To, &args.to, args.to_auth, &args.connect)?;
        refuse_same_store(&from.place, &to.place, "--from and --to")?;
        refuse_key_granularity_into_kv(&to.place, &args.mapping)?;
        let template = args.mapping.template()?;
        let kv = from.place.is_kv() || to.place.is_kv();
        // A KV mount has no native blobs: what moves to or from it moves by value.
        let mode = match args.mode {
            Mode::Native if kv => {
                return Err(CliError::usage(
                    "--mode native: a KV mount neither makes nor takes Key Vault backup blobs",
                )
                .with_hint("drop --mode: a copy with a KV side writes by value"));
            }
            _ if kv => Mode::Plain,
            mode => mode,
        };
        let ownership = kv.then(|| Ownership {
            marker: marker_value(&from.place.id()),
            source: from.name(),
        });
        Ok(Self {
            scope: Scope::resolve(&args.scope)?,
            policy: Policy {
                mode,
                on_conflict: args.on_conflict,
                recover_deleted: args.recover_deleted,
            },
            // A KV source is copied with its history: every live version, oldest first.
            all_versions: args.all_versions || from.place.is_kv(),
            ownership,
            template,
            from,
            to,
            prune: args.prune,
            dry_run: args.dry_run,
            json: args.json,
            concurrency: usize::from(args.concurrency),
        })
    }
}

/// Runs `coldvault copy`.
pub async fn run(args: CopyArgs) -> Result<ExitCode, CliError> {
    let plan = CopyPlan::resolve(&args)?;
    let progress = Progress::new(ProgressStyle::detect(plan.json)).without_problem_lines();
    let mut interrupts = Interrupts::listen()?;
    let outcome = tokio::select! {
        outcome = copy(&plan, &progress) => outcome,
        stop = interrupts.recv() => {
            progress.finish_vault();
            return Err(stop.error(&plan.to.name(), "run the same command again to finish the copy"));
        }
    };
    progress.finish_vault();
    outcome
}

/// Whether the target takes the source's native blobs, and how that is known.
#[derive(Debug, Clone, Serialize)]
struct NativeBlobs {
    state: NativeTarget,
    reason: String,
}

/// Learns without creating anything whether the target opens the source's blobs: a source
/// item whose name is live (else soft-deleted) in the target is backed up and posted there;
/// "Cannot decrypt backup blob" means another subscription or geography, a 409 means the blob
/// was opened (see `restore::probe_native` for Azure's order of checks).
async fn probe_native(
    source: &Store,
    target: &Store,
    heads: &[SourceHead],
    listing: &TargetListing,
    mode: Mode,
) -> NativeBlobs {
    let known = |state, reason: &str| NativeBlobs {
        state,
        reason: reason.to_owned(),
    };
    if mode == Mode::Plain {
        return known(NativeTarget::Unverified, "not needed: --mode plain");
    }
    let key = |h: &SourceHead| (h.kind, h.name.to_ascii_lowercase());
    let candidate = heads
        .iter()
        .find(|h| listing.live.contains_key(&key(h)))
        .or_else(|| heads.iter().find(|h| listing.deleted.contains_key(&key(h))));
    let Some(head) = candidate else {
        return known(
            NativeTarget::Unverified,
            "no name exists on both sides: the first native write tells",
        );
    };
    let what = format!("{} {}", head.kind, head.name);
    let blob = match source.backup(head.kind, &head.name).await {
        Ok(blob) => blob,
        Err(err) => {
            return known(
                NativeTarget::Unverified,
                &format!("the backup of {what} in the source failed: {err}"),
            );
        }
    };
    match target.restore(head.kind, &blob).await {
        Err(err) if err.is_cannot_decrypt_backup() => known(
            NativeTarget::Refuses,
            &format!(
                "the target answered \"Cannot decrypt backup blob\" to {what}'s blob: it is in \
                 another subscription or geography than the source"
            ),
        ),
        Err(err) if err.conflict_reason().is_some() => known(
            NativeTarget::Accepts,
            &format!(
                "the target opened {what}'s blob (409 on its existing name): same subscription \
                 and geography"
            ),
        ),
        Err(err) => known(
            NativeTarget::Unverified,
            &format!("the probe with {what}'s blob failed: {err}"),
        ),
        Ok(_) => known(
            NativeTarget::Accepts,
            &format!("the target took {what}'s blob (the name was freed after the listing)"),
        ),
    }
}

/// One line of the plan as printed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Copy(&'a PlannedItem),
    Prune(&'a PruneLine),
}

#[derive(Serialize)]
struct PlanEvent<'a> {
    from: &'a str,
    to: &'a str,
    #[serde(flatten)]
    line: Line<'a>,
}

#[derive(Serialize)]
struct ItemOut<'a> {
    from: &'a str,
    to: &'a str,
    kind: Kind,
    name: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// An item not copied (or not deleted), with why.
#[derive(Debug, Serialize)]
struct NotCopied {
    kind: Kind,
    name: String,
    reason: String,
}

/// The run's summary (`summary` event under `--json`).
#[derive(Debug, Default, Serialize)]
struct Summary {
    from: String,
    to: String,
    mode: Option<Mode>,
    dry_run: bool,
    planned: Planned,
    created: u64,
    overwritten: u64,
    recovered: u64,
    skipped: u64,
    deleted: u64,
    native: u64,
    plain: u64,
    not_copied: Vec<NotCopied>,
    /// Items some of whose tags (KV `custom_metadata`) Key Vault's 15-tag limit left out;
    /// each item's event names them.
    tags_cut: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    native_blobs: Option<NativeBlobs>,
    seconds: f64,
    requests_from: u64,
    requests_to: u64,
    throttled: u64,
}

#[derive(Debug, Default, Serialize)]
struct Planned {
    create: u64,
    skip: u64,
    overwrite: u64,
    recover: u64,
    conflict: u64,
    impossible: u64,
    delete: u64,
}

impl Planned {
    fn add(&mut self, line: &PlannedItem) {
        *match line.action {
            Action::Create => &mut self.create,
            Action::Skip => &mut self.skip,
            Action::Overwrite => &mut self.overwrite,
            Action::Recover => &mut self.recover,
            Action::Conflict => &mut self.conflict,
            Action::Impossible => &mut self.impossible,
        } += 1;
    }
}

impl Summary {
    fn count(&mut self, kind: Kind, name: &str, outcome: &Outcome) {
        match outcome {
            Outcome::Done { status, method, .. } => {
                match *status {
                    "created" => self.created += 1,
                    "overwritten" => self.overwritten += 1,
                    "recovered" => self.recovered += 1,
                    "deleted" => self.deleted += 1,
                    _ => self.skipped += 1,
                }
                match method {
                    Some(Method::Native) => self.native += 1,
                    Some(Method::Plain) => self.plain += 1,
                    _ => {}
                }
            }
            Outcome::Failed(reason) => self.not_copied.push(NotCopied {
                kind,
                name: name.to_owned(),
                reason: reason.clone(),
            }),
            Outcome::RefusedNatively => {}
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
                "{} -> {}: dry run, nothing changed: {} to create, {} to overwrite, {} to \
                 recover, {} to delete, {} to skip, {} conflicts, {} impossible",
                self.from,
                self.to,
                p.create,
                p.overwrite,
                p.recover,
                p.delete,
                p.skip,
                p.conflict,
                p.impossible
            );
        } else {
            eprintln!(
                "{} -> {}: {} created ({} native, {} plain), {} overwritten, {} recovered, {} \
                 deleted, {} skipped (identical or existing), {} not copied ({:.1} s, {} + {} \
                 requests, {} throttled)",
                self.from,
                self.to,
                self.created,
                self.native,
                self.plain,
                self.overwritten,
                self.recovered,
                self.deleted,
                self.skipped,
                self.not_copied.len(),
                self.seconds,
                self.requests_from,
                self.requests_to,
                self.throttled
            );
        }
        if let Some(native) = &self.native_blobs
            && !native.reason.starts_with("not needed")
        {
            eprintln!("  native blobs: {}", native.reason);
        }
        for item in &self.not_copied {
            eprintln!("  NOT COPIED: {} {}: {}", item.kind, item.name, item.reason);
        }
    }

    fn exit_code(&self) -> ExitCode {
        if self.not_copied.is_empty() {
            ExitCode::Ok
        } else {
            ExitCode::Partial
        }
    }
}

async fn copy(plan: &CopyPlan, progress: &Progress) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let source = plan
        .from
        .connect(&plan.template, plan.concurrency, false)
        .await?;
    let target = plan
        .to
        .connect(&plan.template, plan.concurrency, true)
        .await?;
    copy_stores(plan, source, target, started, progress).await
}

/// What `restore ARCHIVE --vault VAULT` hands over when the archive holds a KV mount: the
/// archive is read as the mount was and copied into the vault through the copy's plan and
/// writes, names mapped by `--granularity` / `--name-template`, every item marked as written
/// from the archived mount.
pub struct KvArchiveRestore<'a> {
    /// The archive.
    pub archive: &'a std::path::Path,
    /// How to open it.
    pub decryption: &'a crate::archive::Decryption,
    /// The target vault.
    pub vault: &'a VaultUrl,
    /// How to reach it.
    pub connect: &'a ConnectOptions,
    /// `--name`, `--exclude`, `--include` (on the mapped names).
    pub scope: &'a Scope,
    /// `--on-conflict`, `--recover-deleted` (the mode is plain: a KV archive holds values).
    pub policy: Policy,
    /// `--granularity`, `--name-template`.
    pub mapping: &'a MappingArgs,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--json`.
    pub json: bool,
    /// Requests in flight.
    pub concurrency: usize,
}

/// Restores a KV archive into a Key Vault (see [`KvArchiveRestore`]); prints what `copy`
/// prints, `from` naming the archived mount.
pub async fn restore_kv_archive(
    request: KvArchiveRestore<'_>,
    progress: &Progress,
) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    if request.policy.mode == Mode::Native {
        return Err(CliError::usage(
            "--mode native: a KV archive holds values, no Key Vault backup blobs",
        )
        .with_hint("drop --mode: a KV archive is restored by value"));
    }
    let template = request.mapping.template()?;
    let input = super::destination::archive_input(request.archive)?;
    let decryption = request.decryption.clone();
    let archive =
        tokio::task::spawn_blocking(move || crate::archive::kv::read_snapshot(input, &decryption))
            .await
            .map_err(|e| CliError::failed(format!("the archive reader stopped: {e}")))?
            .map_err(CliError::from)?;
    let address = archive.snapshot.address.clone();
    let source = KvStore::read_only(archive.snapshot, template.granularity(), template.clone())
        .map_err(|e| kv_store_error(&address, e))?;
    let to = SidePlan {
        side: Side::To,
        place: Place::Vault(request.vault.clone()),
        options: request.connect.clone(),
        source: IdentitySource::Shared,
    };
    let target = to.connect(&template, request.concurrency, true).await?;
    let from = SidePlan {
        side: Side::From,
        place: Place::Kv(address.clone()),
        options: request.connect.clone(),
        source: IdentitySource::Shared,
    };
    let plan = CopyPlan {
        ownership: Some(Ownership {
            marker: marker_value(&address.to_string()),
            source: address.to_string(),
        }),
        from,
        to,
        scope: request.scope.clone(),
        policy: Policy {
            mode: Mode::Plain,
            ..request.policy
        },
        all_versions: true,
        prune: false,
        dry_run: request.dry_run,
        json: request.json,
        concurrency: request.concurrency,
        template,
    };
    copy_stores(
        &plan,
        Store::Kv(source, KvSignIn::archive()),
        target,
        started,
        progress,
    )
    .await
}

/// Copies between two connected stores as `plan` says.
async fn copy_stores(
    plan: &CopyPlan,
    source: Store,
    target: Store,
    started: Instant,
    progress: &Progress,
) -> Result<ExitCode, CliError> {
    let (from_name, to_name) = (plan.from.name(), plan.to.name());
    // What a KV source's projection left out of each item ("NAME: note"; Key Vault names
    // hold no colon), reported with the item.
    let source_notes: HashMap<String, String> = match &source {
        Store::Kv(store, _) => store
            .notes()
            .into_iter()
            .filter_map(|line| {
                let (name, note) = line.split_once(": ")?;
                Some((name.to_ascii_lowercase(), note.to_owned()))
            })
            .collect(),
        Store::Azure(_) => HashMap::new(),
    };
    progress.start_vault(&to_name);
    let (heads, listing) = tokio::join!(
        list_source(&source, &plan.scope),
        list_target(&target, &plan.scope)
    );
    let heads = heads.map_err(|e| vault_error(&from_name, &e))?;
    let listing = listing.map_err(|e| vault_error(&to_name, &e))?;
    for note in &listing.notes {
        progress.note(&format!("{to_name}: {note}"));
    }
    check_names_match(&plan.scope, &heads, &from_name)?;
    if heads.is_empty() {
        progress.note(&format!(
            "{from_name}: nothing in scope listed: does the source identity have List \
             permission (and is --include / --name / --exclude what you meant)?"
        ));
    }

    let native = probe_native(&source, &target, &heads, &listing, plan.policy.mode).await;
    if plan.policy.mode == Mode::Native && native.state == NativeTarget::Refuses {
        return Err(refused_natively(&to_name));
    }
    let mut prune = if plan.prune {
        if plan.to.place.is_kv() {
            // Certificates become secrets there (see `certificate_as_pem_secret`).
            let as_stored: Vec<SourceHead> = heads
                .iter()
                .map(|h| SourceHead {
                    kind: if h.kind == Kind::Certificate {
                        Kind::Secret
                    } else {
                        h.kind
                    },
                    name: h.name.clone(),
                })
                .collect();
            prune_lines(&as_stored, &listing, &plan.scope)
        } else {
            prune_lines(&heads, &listing, &plan.scope)
        }
    } else {
        Vec::new()
    };
    // With a KV side, only what this source wrote is ever deleted.
    if let Some(ownership) = &plan.ownership {
        prune.retain(|line| {
            listing
                .live
                .get(&(line.kind, line.name.to_ascii_lowercase()))
                .is_some_and(|props| ownership.owns(live_tags(props)))
        });
    }
    // A KV deletion is always soft (`delete` of the current version, undone by `undelete`).
    if !prune.is_empty() && !plan.to.place.is_kv() {
        check_soft_delete(&listing, &prune, &to_name)?;
    }
    let applier = Arc::new(Applier::new(
        target.clone(),
        plan.policy.mode,
        native.state == NativeTarget::Refuses,
    ));
    let planner = Planner {
        source: &source,
        target: &target,
        listing: &listing,
        plan,
        native: native.state,
        applier: &applier,
        source_notes: &source_notes,
    };
    let mut summary = Summary {
        from: from_name.clone(),
        to: to_name.clone(),
        mode: Some(plan.policy.mode),
        dry_run: plan.dry_run,
        native_blobs: Some(native.clone()),
        ..Summary::default()
    };
    summary.planned.delete = prune.len() as u64;
    let emit_plan = |line: Line<'_>| {
        emit_json(
            "plan",
            &PlanEvent {
                from: &from_name,
                to: &to_name,
                line,
            },
        )
    };
    let report = |summary: &mut Summary,
                  kind: Kind,
                  name: &str,
                  outcome: &Outcome|
     -> Result<(), CliError> {
        if matches!(outcome, Outcome::RefusedNatively) {
            return Err(refused_natively(&to_name));
        }
        report_item(
            progress, &from_name, &to_name, kind, name, outcome, plan.json,
        );
        summary.count(kind, name, outcome);
        Ok(())
    };
    // Tags left out of an item: counted, and named on stderr unless `--json` names them in
    // the item's event.
    let tags_cut = |summary: &mut Summary, kind: Kind, name: &str, outcome: &Outcome| {
        summary.tags_cut += 1;
        if let Outcome::Done {
            note: Some(note), ..
        } = outcome
            && !plan.json
        {
            progress.note(&format!("{to_name}: {kind} {name}: {note}"));
        }
    };

    // A dry run and `--on-conflict fail` need the whole plan before any write; otherwise each
    // item is read, decided and written as one step, so both vaults work at once and memory
    // holds only the items in flight.
    if plan.dry_run || plan.policy.on_conflict == OnConflict::Fail {
        let planned: Vec<(ItemData, PlannedItem, Option<String>)> =
            futures::stream::iter(heads.iter())
                .map(|head| planner.plan_one(head))
                .buffered(plan.concurrency)
                .collect()
                .await;
        for (_, line, _) in &planned {
            summary.planned.add(line);
        }
        let lines: Vec<&PlannedItem> = planned.iter().map(|(_, l, _)| l).collect();
        if plan.json {
            for line in &lines {
                emit_plan(Line::Copy(line));
            }
            for line in &prune {
                emit_plan(Line::Prune(line));
            }
        } else if plan.dry_run {
            crate::output::stdout::print(&plan_table(&lines, &prune)).map_err(CliError::stdout)?;
        }
        let conflicts: Vec<String> = lines
            .iter()
            .filter(|l| l.action == Action::Conflict)
            .map(|l| format!("{} {}", l.kind, l.name))
            .collect();
        if plan.policy.on_conflict == OnConflict::Fail && !conflicts.is_empty() {
            return Err(CliError::failed(format!(
                "{to_name}: {} conflicts, nothing copied (--on-conflict fail): {}",
                conflicts.len(),
                conflicts.join(", ")
            ))
            .with_hint("see them with --dry-run; use --on-conflict skip or overwrite"));
        }
        if plan.dry_run {
            for line in lines.iter().filter(|l| l.action.is_failure()) {
                summary.not_copied.push(NotCopied {
                    kind: line.kind,
                    name: line.name.clone(),
                    reason: line.reason.clone().unwrap_or_default(),
                });
            }
            finish(&mut summary, started, &source, &target);
            summary.print(progress);
            return Ok(summary.exit_code());
        }
        progress.add_total((lines.len() + prune.len()) as u64);
        let mut stream = futures::stream::iter(planned.into_iter().map(|(item, line, note)| {
            let applier = applier.clone();
            async move {
                let outcome = applier.apply(&item, &line).await;
                (item.head.kind, item.head.name, with_note(outcome, note))
            }
        }))
        .buffer_unordered(plan.concurrency);
        while let Some((kind, name, (outcome, cut))) = stream.next().await {
            if cut {
                tags_cut(&mut summary, kind, &name, &outcome);
            }
            report(&mut summary, kind, &name, &outcome)?;
        }
    } else {
        if plan.json {
            for line in &prune {
                emit_plan(Line::Prune(line));
            }
        }
        progress.add_total((heads.len() + prune.len()) as u64);
        let mut stream = futures::stream::iter(heads.iter().map(|head| {
            let applier = applier.clone();
            let planner = &planner;
            async move {
                let (item, line, note) = planner.plan_one(head).await;
                let outcome = applier.apply(&item, &line).await;
                (
                    item.head.kind,
                    item.head.name,
                    line,
                    with_note(outcome, note),
                )
            }
        }))
        .buffer_unordered(plan.concurrency);
        while let Some((kind, name, line, (outcome, cut))) = stream.next().await {
            if cut {
                tags_cut(&mut summary, kind, &name, &outcome);
            }
            summary.planned.add(&line);
            if plan.json {
                emit_plan(Line::Copy(&line));
            }
            report(&mut summary, kind, &name, &outcome)?;
        }
    }
    let deletes = futures::stream::iter(prune.iter().map(|line| {
        let target = &target;
        async move { (line, soft_delete(target, line.kind, &line.name).await) }
    }))
    .buffer_unordered(plan.concurrency)
    .collect::<Vec<_>>()
    .await;
    for (line, outcome) in deletes {
        report(&mut summary, line.kind, &line.name, &outcome)?;
    }
    if applier.native_refused() && native.state != NativeTarget::Refuses {
        summary.native_blobs = Some(NativeBlobs {
            state: NativeTarget::Refuses,
            reason: "the target answered \"Cannot decrypt backup blob\": it is in another \
                     subscription or geography, items were written by value"
                .to_owned(),
        });
    }
    progress.finish_vault();
    finish(&mut summary, started, &source, &target);
    summary.print(progress);
    Ok(summary.exit_code())
}

/// Reads, inspects and decides one source item.
struct Planner<'a> {
    source: &'a Store,
    target: &'a Store,
    listing: &'a TargetListing,
    plan: &'a CopyPlan,
    native: NativeTarget,
    applier: &'a Applier<Store>,
    /// What the source's projection left out, by lower-case name.
    source_notes: &'a HashMap<String, String>,
}

impl Planner<'_> {
    /// The item as read from the source and its plan line. Once a write was refused natively,
    /// no more blobs are read and keys are planned as impossible.
    ///
    /// With a KV side the item is marked as this copy's (see [`Ownership::mark_item`]; the
    /// third part names the tags Key Vault's limit left out), and a target item that is not
    /// this copy's is a conflict, whatever `--on-conflict` says.
    async fn plan_one(&self, head: &SourceHead) -> (ItemData, PlannedItem, Option<String>) {
        let native = if self.applier.native_refused() {
            NativeTarget::Refuses
        } else {
            self.native
        };
        let mode = self.plan.policy.mode;
        let want = Want {
            blob: mode != Mode::Plain && native != NativeTarget::Refuses,
            plain: mode != Mode::Native,
            all_versions: self.plan.all_versions,
            metadata: self.plan.ownership.is_some(),
        };
        let mut item = capture(self.source, head, want).await;
        if self.plan.to.place.is_kv() && item.head.kind == Kind::Certificate {
            item = certificate_as_pem_secret(item);
        }
        let marked = match &self.plan.ownership {
            Some(ownership) => ownership.mark_item(&mut item, self.plan.to.place.is_kv()),
            None => None,
        };
        let note = match (
            self.source_notes.get(&item.head.name.to_ascii_lowercase()),
            marked,
        ) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.cloned().or(b),
        };
        let view: Option<Result<LiveView, String>> = match self.listing.live.get(&item.head.key()) {
            Some(props) => Some(
                inspect_live(self.target, &item.head, props)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            None => None,
        };
        let mut line = decide_item(
            &item.head,
            target_state(&item.head, self.listing, &view),
            self.plan.policy,
            native,
        );
        if let Some(ownership) = &self.plan.ownership
            && line.action != Action::Impossible
            && let Some(refused) =
                ownership.refuse(&item.head, target_tags(self.listing, &item.head))
        {
            line = refused;
        }
        (item, line, note)
    }
}

/// Adds what the copy left out of an item's tags to its outcome's note; the flag says whether
/// anything was.
fn with_note(outcome: Outcome, note: Option<String>) -> (Outcome, bool) {
    let Some(note) = note else {
        return (outcome, false);
    };
    let outcome = match outcome {
        Outcome::Done {
            status,
            method,
            note: before,
        } => Outcome::Done {
            status,
            method,
            note: Some(match before {
                Some(before) => format!("{before}; {note}"),
                None => note,
            }),
        },
        other => other,
    };
    (outcome, true)
}

fn finish(summary: &mut Summary, started: Instant, source: &Store, target: &Store) {
    summary.seconds = started.elapsed().as_secs_f64();
    let (a, b) = (source.stats(), target.stats());
    summary.requests_from = a.requests;
    summary.requests_to = b.requests;
    summary.throttled = a.throttled + b.throttled;
}

/// A `--name` glob that matches nothing in the source is a mistake (most often a typo).
fn check_names_match(scope: &Scope, heads: &[SourceHead], vault: &str) -> Result<(), CliError> {
    scope
        .check_names_match(
            heads
                .iter()
                .map(|h| (super::scope::ItemKind::of(h.kind), h.name.as_str())),
        )
        .map_err(|e| CliError {
            message: e.message.replace("in the archive", &format!("in {vault}")),
            hint: e.hint.map(|h| {
                h.replace("in the archive", &format!("in {vault}"))
                    .replace("the archive holds", &format!("{vault} holds"))
                    .replace(
                        "`coldvault inspect ARCHIVE` lists them",
                        "`--dry-run` lists them",
                    )
            }),
            ..e
        })
}

/// `--prune` on a vault without soft-delete would destroy items for good: refused.
fn check_soft_delete(
    listing: &TargetListing,
    prune: &[PruneLine],
    vault: &str,
) -> Result<(), CliError> {
    let levels: Vec<Option<bool>> = prune
        .iter()
        .filter_map(|line| {
            listing
                .live
                .get(&(line.kind, line.name.to_ascii_lowercase()))
        })
        .map(|props| soft_delete_on(live_recovery_level(props)))
        .collect();
    if levels.iter().all(|on| *on == Some(true)) {
        return Ok(());
    }
    let why = if levels.contains(&Some(false)) {
        "has soft-delete off (recovery level Purgeable): a deletion there cannot be undone"
    } else {
        "does not say whether soft-delete is on (no recovery level in its lists)"
    };
    Err(
        CliError::failed(format!("{vault}: --prune refused: the vault {why}"))
            .with_hint("coldvault deletes only where a deletion can be recovered; drop --prune"),
    )
}

fn live_recovery_level(props: &super::restore_plan::LiveProps) -> Option<&str> {
    use super::restore_plan::LiveProps;
    match props {
        LiveProps::Secret(p) => p.attributes.recovery_level.as_deref(),
        LiveProps::Key(p) => p.attributes.recovery_level.as_deref(),
        LiveProps::Certificate(p) => p.attributes.recovery_level.as_deref(),
    }
}

fn refused_natively(target: &str) -> CliError {
    CliError::failed(format!(
        "{target}: the vault refused the source's native backup blobs (Cannot decrypt backup \
         blob): it is in another subscription or geography than the source"
    ))
    .with_hint(
        "use --mode plain (secrets by value, certificates with an exportable key; keys cannot \
         move between subscriptions) or --mode auto",
    )
}

fn plan_table(lines: &[&PlannedItem], prune: &[PruneLine]) -> String {
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
    for line in prune {
        table.row([
            line.action.to_owned(),
            line.kind.as_str().to_owned(),
            line.name.clone(),
            "-".to_owned(),
            line.reason.to_owned(),
        ]);
    }
    table.render()
}

fn report_item(
    progress: &Progress,
    from: &str,
    to: &str,
    kind: Kind,
    name: &str,
    outcome: &Outcome,
    json: bool,
) {
    let (status, method, reason) = match outcome {
        Outcome::Done {
            status,
            method,
            note,
        } => (*status, *method, note.as_deref()),
        Outcome::Failed(reason) => ("not-copied", None, Some(reason.as_str())),
        Outcome::RefusedNatively => return,
    };
    if json {
        emit_json(
            "item",
            &ItemOut {
                from,
                to,
                kind,
                name,
                status,
                method,
                reason,
            },
        );
    } else {
        progress.item(&ItemEvent {
            vault: to,
            kind: kind.as_str(),
            name,
            status,
            reason: matches!(outcome, Outcome::Failed(_))
                .then_some(reason)
                .flatten(),
            bytes: None,
        });
    }
}

/// Signs in to a KV mount (`VAULT_TOKEN` / `BAO_TOKEN`, else AppRole; `VAULT_NAMESPACE`,
/// `VAULT_CACERT`), reads it whole and names its secrets with `template`: a collision is
/// refused here, before anything is written.
async fn connect_kv(
    address: &KvAddress,
    template: &NameTemplate,
    options: &ConnectOptions,
    concurrency: usize,
    writes: bool,
) -> Result<Store, CliError> {
    let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let shown = address.to_string();
    let failed = |e: KvError| kv_error(&shown, &e, "nothing done");
    let auth = KvAuth::from_env(lookup).map_err(failed)?;
    let how = KvSignIn::of(&auth);
    let mut kv_options = KvOptions::from_env(lookup, options.timeout);
    // `VAULT_CACERT` wins; `--ca-cert` (or `COLDVAULT_CA_CERT`) adds a root the same way, as
    // `backup` and `restore` of a mount do.
    if kv_options.ca_cert.is_none() {
        kv_options.ca_cert = options.ca_cert.clone();
    }
    let client = KvClient::connect(address, auth, kv_options)
        .await
        .map_err(failed)?;
    let how = how.with_client(client.clone());
    let store = if writes {
        KvStore::open(
            client,
            template.granularity(),
            template.clone(),
            concurrency,
        )
        .await
    } else {
        match client.read_all(concurrency).await {
            Ok(snapshot) => KvStore::read_only(snapshot, template.granularity(), template.clone()),
            Err(err) => Err(err.into()),
        }
    };
    let store = store.map_err(|e| kv_store_error(address, e))?;
    Ok(Store::Kv(store, how))
}

/// A store that cannot be made: names that collide or do not fit, and granularity key into
/// a mount, are usage errors (exit 2: another template or granularity fixes them); a failed
/// read fails the run.
fn kv_store_error(address: &KvAddress, e: KvStoreError) -> CliError {
    let usage = matches!(e, KvStoreError::Names(_) | KvStoreError::KeyTarget);
    let message = format!("{address}: {e}");
    let error = if usage {
        CliError::usage(message)
    } else {
        CliError::failed(message)
    };
    match e.hint() {
        Some(hint) => error.with_hint(hint),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::restore_plan::LiveProps;
    use crate::vault::{Attributes, SecretProperties, Tags};

    fn listing_with(level: Option<&str>) -> (TargetListing, Vec<PruneLine>) {
        let mut listing = TargetListing::default();
        listing.live.insert(
            (Kind::Secret, "old".to_owned()),
            LiveProps::Secret(SecretProperties {
                name: "old".into(),
                version: None,
                id: "https://t.vault.azure.net/secrets/old".into(),
                content_type: None,
                tags: Tags::new(),
                attributes: Attributes {
                    recovery_level: level.map(str::to_owned),
                    ..Attributes::default()
                },
                managed: false,
                key_id: None,
            }),
        );
        let prune = prune_lines(&[], &listing, &Scope::everything());
        (listing, prune)
    }

    #[test]
    fn prune_is_refused_where_a_deletion_cannot_be_recovered() {
        let (listing, prune) = listing_with(Some("Recoverable+Purgeable"));
        assert!(check_soft_delete(&listing, &prune, "t").is_ok());
        let (listing, prune) = listing_with(Some("Purgeable"));
        let err = check_soft_delete(&listing, &prune, "t").unwrap_err();
        assert_eq!(err.code, ExitCode::Failed);
        assert!(err.message.contains("soft-delete off"), "{}", err.message);
        assert!(err.hint.is_some());
        let (listing, prune) = listing_with(None);
        assert!(check_soft_delete(&listing, &prune, "t").is_err());
    }

    #[test]
    fn a_bad_side_names_its_argument() {
        let err = SidePlan::resolve(Side::To, "x_y", None, &ConnectArgs::default()).unwrap_err();
        assert_eq!(err.code, ExitCode::Usage);
        assert!(err.message.starts_with("--to \"x_y\""), "{}", err.message);
    }
}
