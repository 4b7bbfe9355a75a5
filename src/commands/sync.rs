//! `coldvault sync A B`: two vaults kept in step both ways, each signed in with its own
//! identity.
//!
//! Both vaults are listed (live and soft-deleted), each item's current state is read on both
//! sides, and [`crate::copy::decide::decide`] picks one action per item from both states and
//! the last run's `--state`: copy a new item or a new version across, propagate a deletion as a
//! soft-delete, or report a conflict (`--prefer` settles it). Secrets are written by value with
//! their content type, tags and attributes; certificates with an exportable key are imported.
//! A key travels only as its native blob, so only within one subscription and geography, and
//! only when the other side lacks it (a restore never replaces a live key); anything else is
//! reported, not synced. The state file is replaced atomically at the end of a run
//! that was not a dry run; an item whose write failed keeps its previous state, so the next run
//! retries it.
//!
//! With a KV v2 mount on one side only secrets are synced; each side's written items carry
//! the other side's `coldvault-source` marker, the sides are compared without it, and an item
//! a person made is never overwritten or deleted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use age::secrecy::ExposeSecret;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::connect_args::vault_error;
use super::copy::{MappingArgs, SidePlan, refuse_same_store};
use super::interrupt::Interrupts;
use super::scope::{ItemKind as ScopeKind, Scope};
pub use crate::cli::sync::SyncArgs;
use crate::copy::apply::{describe, settle};
use crate::copy::decide::{Decision, Observed, Prefer, SideState, Which, decide};
use crate::copy::identity::Side;
use crate::copy::plan::Ownership;
use crate::copy::state::{ItemStamps, SyncState, item_key, stamp};
use crate::copy::store::Store;
use crate::error::{CliError, ExitCode};
use crate::kv::mapping::{MARKER_TAG, marker_value, metadata_from_tags, tags_from_metadata};
use crate::output::progress::{ItemEvent, Progress, ProgressStyle, emit_json};
use crate::output::table::Table;
use crate::vault::azure::settle_backoff;
use crate::vault::{
    Attributes, CertificateImport, ItemKind, NewSecretVersion, Tags, VaultError, VaultReader,
    VaultWriter,
};

/// Runs `coldvault sync`.
pub async fn run(args: SyncArgs) -> Result<ExitCode, CliError> {
    let a = SidePlan::resolve(Side::A, &args.a, args.a_auth, &args.connect)?;
    let b = SidePlan::resolve(Side::B, &args.b, args.b_auth, &args.connect)?;
    refuse_same_store(&a.place, &b.place, "A and B")?;
    let scope = Scope::resolve(&args.scope)?;
    let state = match &args.state {
        Some(path) => Some((
            path.clone(),
            SyncState::load(path, &a.place.id(), &b.place.id())
                .map_err(|e| {
                    CliError::failed(e.to_string()).with_hint(
                        "give each pair of vaults its own --state file, in the same A B order",
                    )
                })?
                .unwrap_or_else(|| SyncState::new(&a.place.id(), &b.place.id())),
        )),
        None => None,
    };
    let progress = Progress::new(ProgressStyle::detect(args.json)).without_problem_lines();
    let mut interrupts = Interrupts::listen()?;
    let run = Run {
        a: &a,
        b: &b,
        scope,
        mapping: args.mapping.clone(),
        prefer: args.prefer,
        dry_run: args.dry_run,
        json: args.json,
        concurrency: usize::from(args.concurrency),
    };
    let outcome = tokio::select! {
        outcome = run.sync(state, &progress) => outcome,
        stop = interrupts.recv() => {
            progress.finish_vault();
            return Err(stop.error("sync", "run the same command again: what was written stays, the state file is unchanged"));
        }
    };
    progress.finish_vault();
    outcome
}

struct Run<'a> {
    a: &'a SidePlan,
    b: &'a SidePlan,
    scope: Scope,
    mapping: MappingArgs,
    prefer: Option<Prefer>,
    dry_run: bool,
    json: bool,
    concurrency: usize,
}

/// The kinds sync moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
enum SyncKind {
    Secret,
    Key,
    Certificate,
}

impl SyncKind {
    fn as_str(self) -> &'static str {
        match self {
            SyncKind::Secret => "secret",
            SyncKind::Key => "key",
            SyncKind::Certificate => "certificate",
        }
    }

    fn vault_kind(self) -> ItemKind {
        match self {
            SyncKind::Secret => ItemKind::Secret,
            SyncKind::Key => ItemKind::Key,
            SyncKind::Certificate => ItemKind::Certificate,
        }
    }

    fn scope_kind(self) -> ScopeKind {
        match self {
            SyncKind::Secret => ScopeKind::Secrets,
            SyncKind::Key => ScopeKind::Keys,
            SyncKind::Certificate => ScopeKind::Certificates,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "secret" => Some(SyncKind::Secret),
            "key" => Some(SyncKind::Key),
            "certificate" => Some(SyncKind::Certificate),
            _ => None,
        }
    }
}

/// One side's listing: live names and soft-deleted names with their deletion time.
#[derive(Default)]
struct Listing {
    live: HashMap<(SyncKind, String), String>,
    deleted: HashMap<(SyncKind, String), Option<i64>>,
}

async fn list_side(vault: &Store, scope: &Scope) -> Result<Listing, VaultError> {
    let mut listing = Listing::default();
    let lower = |s: &str| s.to_ascii_lowercase();
    if scope.includes_kind(ScopeKind::Secrets) {
        let mut list = vault.list_secrets();
        while let Some(props) = list.next().await {
            let props = props?;
            if !props.managed && scope.includes(ScopeKind::Secrets, &props.name) {
                listing
                    .live
                    .insert((SyncKind::Secret, lower(&props.name)), props.name);
            }
        }
    }
    if scope.includes_kind(ScopeKind::Certificates) {
        let mut list = vault.list_certificates();
        while let Some(props) = list.next().await {
            let props = props?;
            if scope.includes(ScopeKind::Certificates, &props.name) {
                listing
                    .live
                    .insert((SyncKind::Certificate, lower(&props.name)), props.name);
            }
        }
    }
    if scope.includes_kind(ScopeKind::Keys) {
        let mut list = vault.list_keys();
        while let Some(props) = list.next().await {
            let props = props?;
            if !props.managed && scope.includes(ScopeKind::Keys, &props.name) {
                listing
                    .live
                    .insert((SyncKind::Key, lower(&props.name)), props.name);
            }
        }
    }
    for kind in [SyncKind::Secret, SyncKind::Key, SyncKind::Certificate] {
        let scope_kind = kind.scope_kind();
        if !scope.includes_kind(scope_kind) {
            continue;
        }
        let mut list = vault.list_deleted(kind.vault_kind());
        while let Some(item) = list.next().await {
            // Without the deleted list a soft-deleted name reads as absent: a copy onto it
            // then meets a 409 and is reported for that item.
            let Ok(item) = item else { break };
            if !item.managed && scope.includes(scope_kind, &item.name) {
                listing.deleted.insert(
                    (kind, lower(&item.name)),
                    item.deleted_date.map(|t| t.unix_timestamp()),
                );
            }
        }
    }
    Ok(listing)
}

/// What a side holds of one item, read for the decision and for a copy from it.
enum Payload {
    Secret(NewSecretVersion),
    /// A key is copied from its native blob, read when the copy happens.
    Key,
    Certificate(Option<CertificateImport>),
}

/// One side's reading of one item.
struct Reading {
    state: SideState,
    payload: Option<Payload>,
    /// Why it could not be read, when it could not.
    unreadable: Option<String>,
    /// The present item's tags (who wrote it, with a KV side).
    tags: Tags,
}

impl Reading {
    fn absent(state: SideState) -> Self {
        Self {
            state,
            payload: None,
            unreadable: None,
            tags: Tags::new(),
        }
    }
}

/// With a KV side, which marker each side's items carry when sync wrote them there: the
/// other side's ([`Ownership`]). Sync overwrites or deletes only items carrying it, and
/// compares the two sides without it (and without `nbf`/`exp`, which KV cannot hold).
struct Owners {
    on_a: Ownership,
    on_b: Ownership,
}

impl Owners {
    fn of(a: &SidePlan, b: &SidePlan) -> Option<Self> {
        let owner = |from: &SidePlan| Ownership {
            marker: marker_value(&from.place.id()),
            source: from.name(),
        };
        (a.place.is_kv() || b.place.is_kv()).then(|| Owners {
            on_a: owner(b),
            on_b: owner(a),
        })
    }

    fn on(&self, which: Which) -> &Ownership {
        match which {
            Which::A => &self.on_a,
            Which::B => &self.on_b,
        }
    }

    /// The decision, unless it would overwrite or delete an item of a side that this sync
    /// did not write there: then a conflict that leaves it as it is.
    fn guard(&self, decision: Decision, ra: &Reading, rb: &Reading) -> Decision {
        let touched = match &decision {
            Decision::Copy { from, .. } => Some(from.other()),
            Decision::Delete { on, .. } => Some(*on),
            _ => None,
        };
        let Some(side) = touched else {
            return decision;
        };
        let reading = match side {
            Which::A => ra,
            Which::B => rb,
        };
        let owner = self.on(side);
        if !matches!(reading.state, SideState::Present(_)) || owner.owns(&reading.tags) {
            return decision;
        }
        Decision::Conflict {
            reason: format!(
                "exists on {} and was not created by coldvault from {}: left as it is",
                side.as_str(),
                owner.source
            ),
        }
    }
}

/// The tags and attributes two sides are compared on: with a KV side, without the ownership
/// marker (each side carries the other's), only the tags both sides can hold (KV refuses
/// empty values and long names, Key Vault keeps 15: what a write leaves out must not make
/// the next run see a difference) and without `nbf`/`exp` (KV has neither).
fn comparable(tags: &Tags, attributes: &Attributes, kv: bool) -> (Tags, Attributes) {
    if !kv {
        return (tags.clone(), attributes.clone());
    }
    let mut tags = tags.clone();
    tags.remove(MARKER_TAG);
    // A place stays kept for the marker, as when the marked item is written.
    let tags = tags_from_metadata(&metadata_from_tags(&tags, None).kept, None).kept;
    let attributes = Attributes {
        not_before: None,
        expires: None,
        ..attributes.clone()
    };
    (tags, attributes)
}

fn writable(attributes: &Attributes) -> Attributes {
    Attributes {
        enabled: attributes.enabled,
        not_before: attributes.not_before,
        expires: attributes.expires,
        ..Attributes::default()
    }
}

/// What a copy carries of a secret: value, content type, tags, writable attributes (see
/// [`comparable`] for `kv`).
fn secret_content(secret: &NewSecretVersion, kv: bool) -> [u8; 32] {
    let (tags, attributes) = comparable(&secret.tags, &secret.attributes, kv);
    let mut hash = Sha256::new();
    hash.update(Sha256::digest(secret.value.expose_secret().as_bytes()));
    hash.update(stamp(
        "",
        secret.content_type.as_deref(),
        &tags,
        &attributes,
    ));
    hash.finalize().into()
}

fn certificate_content(cer: &[u8], tags: &Tags, enabled: Option<bool>, kv: bool) -> [u8; 32] {
    let attributes = Attributes {
        enabled,
        ..Attributes::default()
    };
    let (tags, attributes) = comparable(tags, &attributes, kv);
    let mut hash = Sha256::new();
    hash.update(Sha256::digest(cer));
    hash.update(stamp("", None, &tags, &attributes));
    hash.finalize().into()
}

fn certificate_stamp(version: &str, tags: &Tags, enabled: Option<bool>) -> String {
    // A certificate's nbf and exp come from its X.509 certificate, not from the write.
    stamp(
        version,
        None,
        tags,
        &Attributes {
            enabled,
            ..Attributes::default()
        },
    )
}

async fn read_item(vault: &Store, kind: SyncKind, name: &str, kv: bool) -> Result<Reading, String> {
    match kind {
        SyncKind::Secret => match vault.get_secret(name, None).await {
            Ok(value) => {
                let p = &value.properties;
                let secret = NewSecretVersion {
                    value: value.value.clone(),
                    content_type: p.content_type.clone(),
                    tags: p.tags.clone(),
                    attributes: writable(&p.attributes),
                };
                Ok(Reading {
                    state: SideState::Present(Observed {
                        stamp: stamp(
                            p.version.as_deref().unwrap_or_default(),
                            p.content_type.as_deref(),
                            &p.tags,
                            &p.attributes,
                        ),
                        content: secret_content(&secret, kv),
                        updated: p.attributes.updated.map(|t| t.unix_timestamp()),
                    }),
                    tags: secret.tags.clone(),
                    payload: Some(Payload::Secret(secret)),
                    unreadable: None,
                })
            }
            Err(err) if err.is_secret_disabled() => Err(
                "its current version is disabled: Azure does not let its value be read (403 \
                 SecretDisabled)"
                    .to_owned(),
            ),
            Err(err) => Err(err.to_string()),
        },
        SyncKind::Key => {
            let bundle = vault.get_key(name, None).await.map_err(|e| e.to_string())?;
            let p = &bundle.properties;
            // A key is only ever copied natively, with its version ids: equal content is the
            // same current version (and the same tags and state).
            let stamp = certificate_stamp(
                p.version.as_deref().unwrap_or_default(),
                &p.tags,
                p.attributes.enabled,
            );
            Ok(Reading {
                state: SideState::Present(Observed {
                    content: Sha256::digest(stamp.as_bytes()).into(),
                    stamp,
                    updated: p.attributes.updated.map(|t| t.unix_timestamp()),
                }),
                payload: Some(Payload::Key),
                unreadable: None,
                tags: p.tags.clone(),
            })
        }
        SyncKind::Certificate => {
            let bundle = vault
                .get_certificate(name, None)
                .await
                .map_err(|e| e.to_string())?;
            let p = &bundle.properties;
            let version = p.version.clone().unwrap_or_default();
            let mut import = None;
            let mut unreadable = None;
            if bundle.key_exportable()
                && let Some(secret_version) = bundle.secret_version()
            {
                match vault.get_secret(name, Some(&secret_version)).await {
                    Ok(secret) => {
                        let policy = match &bundle.policy {
                            Some(policy) => Some(policy.clone()),
                            None => vault.get_certificate_policy(name).await.ok(),
                        };
                        import = Some(CertificateImport {
                            value: secret.value,
                            content_type: secret
                                .properties
                                .content_type
                                .or(bundle.content_type.clone())
                                .unwrap_or_else(|| "application/x-pkcs12".to_owned()),
                            password: None,
                            policy,
                            tags: p.tags.clone(),
                            attributes: Attributes {
                                enabled: p.attributes.enabled,
                                ..Attributes::default()
                            },
                        });
                    }
                    Err(err) => unreadable = Some(format!("private key (managed secret): {err}")),
                }
            } else {
                unreadable = Some(
                    "its private key is not exportable: only a native copy carries it, and \
                     sync writes by value"
                        .to_owned(),
                );
            }
            Ok(Reading {
                state: SideState::Present(Observed {
                    stamp: certificate_stamp(&version, &p.tags, p.attributes.enabled),
                    content: certificate_content(&bundle.cer, &p.tags, p.attributes.enabled, kv),
                    updated: p.attributes.updated.map(|t| t.unix_timestamp()),
                }),
                payload: Some(Payload::Certificate(import)),
                unreadable,
                tags: p.tags.clone(),
            })
        }
    }
}

/// One side's reading of an item: read when live, else soft-deleted or absent.
async fn read_side(
    vault: &Store,
    listing: &Listing,
    key: &(SyncKind, String),
    name: &str,
    kv: bool,
) -> Result<Reading, String> {
    if listing.live.contains_key(key) {
        return read_item(vault, key.0, name, kv).await;
    }
    Ok(Reading::absent(match listing.deleted.get(key) {
        Some(at) => SideState::Deleted { at: *at },
        None => SideState::Absent,
    }))
}

/// One item's line of the plan.
#[derive(Debug, Serialize)]
struct PlanLine {
    kind: SyncKind,
    name: String,
    #[serde(flatten)]
    decision: Decision,
}

#[derive(Serialize)]
struct PlanEvent<'a> {
    a: &'a str,
    b: &'a str,
    #[serde(flatten)]
    line: &'a PlanLine,
}

#[derive(Serialize)]
struct ItemOut<'a> {
    a: &'a str,
    b: &'a str,
    kind: SyncKind,
    name: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<Which>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct NotSynced {
    kind: String,
    name: String,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    a: String,
    b: String,
    dry_run: bool,
    state: Option<PathBuf>,
    in_sync: u64,
    copied_to_a: u64,
    copied_to_b: u64,
    deleted_on_a: u64,
    deleted_on_b: u64,
    conflicts: Vec<NotSynced>,
    not_synced: Vec<NotSynced>,
    keys_not_synced: Vec<NotSynced>,
    seconds: f64,
    requests_a: u64,
    requests_b: u64,
    throttled: u64,
}

impl Summary {
    fn print(&self, progress: &Progress) {
        if progress.style() == ProgressStyle::JsonLines {
            emit_json("summary", self);
            return;
        }
        let verb = if self.dry_run {
            "dry run, nothing changed: "
        } else {
            ""
        };
        eprintln!(
            "{} <-> {}: {verb}{} in step, {} copied to {}, {} copied to {}, {} deleted on {}, {} \
             deleted on {}, {} conflicts, {} not synced ({:.1} s, {} + {} requests, {} throttled)",
            self.a,
            self.b,
            self.in_sync,
            self.copied_to_b,
            self.b,
            self.copied_to_a,
            self.a,
            self.deleted_on_a,
            self.a,
            self.deleted_on_b,
            self.b,
            self.conflicts.len(),
            self.not_synced.len(),
            self.seconds,
            self.requests_a,
            self.requests_b,
            self.throttled
        );
        for item in &self.conflicts {
            eprintln!("  CONFLICT: {} {}: {}", item.kind, item.name, item.reason);
        }
        for item in &self.not_synced {
            eprintln!("  NOT SYNCED: {} {}: {}", item.kind, item.name, item.reason);
        }
        for item in &self.keys_not_synced {
            eprintln!("  key not synced: {}: {}", item.name, item.reason);
        }
    }

    /// Keys a native blob cannot carry are reported, not failures: no tool can move them.
    fn exit_code(&self) -> ExitCode {
        if self.conflicts.is_empty() && self.not_synced.is_empty() {
            ExitCode::Ok
        } else {
            ExitCode::Partial
        }
    }
}

impl Run<'_> {
    async fn sync(
        &self,
        mut state: Option<(PathBuf, SyncState)>,
        progress: &Progress,
    ) -> Result<ExitCode, CliError> {
        let started = Instant::now();
        let (a_name, b_name) = (self.a.name(), self.b.name());
        let template = self.mapping.template()?;
        let va = self.a.connect(&template, self.concurrency, true).await?;
        let vb = self.b.connect(&template, self.concurrency, true).await?;
        progress.start_vault(&format!("{a_name} <-> {b_name}"));
        let owners = Owners::of(self.a, self.b);
        let (la, lb) = tokio::join!(list_side(&va, &self.scope), list_side(&vb, &self.scope));
        let mut la = la.map_err(|e| vault_error(&a_name, &e))?;
        let mut lb = lb.map_err(|e| vault_error(&b_name, &e))?;
        if owners.is_some() {
            // A KV mount holds secrets only: a certificate synced into it would come back as
            // a secret of the certificate's name, which Key Vault reserves for the
            // certificate itself.
            let mut left_out = 0;
            for listing in [&mut la, &mut lb] {
                let before = listing.live.len();
                listing
                    .live
                    .retain(|(kind, _), _| *kind == SyncKind::Secret);
                listing
                    .deleted
                    .retain(|(kind, _), _| *kind == SyncKind::Secret);
                left_out += before - listing.live.len();
            }
            if left_out > 0 {
                progress.note(&format!(
                    "{left_out} certificates and keys not synced: a KV mount holds secrets only \
                     (coldvault copy carries exportable certificates into it as PEM)"
                ));
            }
        }

        let mut keys: BTreeMap<(SyncKind, String), String> = BTreeMap::new();
        for ((kind, lower), name) in la.live.iter().chain(lb.live.iter()) {
            keys.entry((*kind, lower.clone()))
                .or_insert_with(|| name.clone());
        }
        if let Some((_, s)) = &state {
            for key in s.items.keys() {
                if let Some((kind, name)) = key.split_once('/') {
                    let Some(kind) = SyncKind::parse(kind) else {
                        continue;
                    };
                    if self.scope.includes(kind.scope_kind(), name) {
                        keys.entry((kind, name.to_owned()))
                            .or_insert_with(|| name.to_owned());
                    }
                }
            }
        }
        let readings: Vec<(Result<Reading, String>, Result<Reading, String>)> =
            futures::stream::iter(keys.iter())
                .map(|(key, name)| {
                    let (va, vb, la, lb) = (&va, &vb, &la, &lb);
                    let kv = owners.is_some();
                    async move {
                        tokio::join!(
                            read_side(va, la, key, name, kv),
                            read_side(vb, lb, key, name, kv)
                        )
                    }
                })
                .buffered(self.concurrency)
                .collect()
                .await;

        let mut summary = Summary {
            a: a_name.clone(),
            b: b_name.clone(),
            dry_run: self.dry_run,
            state: state.as_ref().map(|(p, _)| p.clone()),
            ..Summary::default()
        };
        let mut lines: Vec<(PlanLine, Option<(Reading, Reading)>)> = Vec::new();
        for (((kind, lower), name), (ra, rb)) in keys.iter().zip(readings) {
            let key = item_key(kind.as_str(), lower);
            let (ra, rb) = match (ra, rb) {
                (Ok(ra), Ok(rb)) => (ra, rb),
                (Err(reason), _) | (_, Err(reason)) => {
                    summary.not_synced.push(NotSynced {
                        kind: kind.as_str().to_owned(),
                        name: name.clone(),
                        reason: format!("cannot be read: {reason}"),
                    });
                    continue;
                }
            };
            let last = state.as_ref().and_then(|(_, s)| s.last(&key));
            let mut decision = decide(&ra.state, &rb.state, last.as_ref(), self.prefer);
            if let Some(owners) = &owners {
                decision = owners.guard(decision, &ra, &rb);
            }
            lines.push((
                PlanLine {
                    kind: *kind,
                    name: name.clone(),
                    decision,
                },
                Some((ra, rb)),
            ));
        }
        if self.json {
            for (line, _) in &lines {
                emit_json(
                    "plan",
                    &PlanEvent {
                        a: &a_name,
                        b: &b_name,
                        line,
                    },
                );
            }
        } else if self.dry_run {
            crate::output::stdout::print(&plan_table(&lines)).map_err(CliError::stdout)?;
        }

        progress.add_total(lines.len() as u64);
        let sides = Sides {
            a: &va,
            b: &vb,
            dry_run: self.dry_run,
            owners: owners.as_ref(),
        };
        let outcomes: Vec<Done> = futures::stream::iter(lines.iter())
            .map(|(line, readings)| sides.apply(line, readings.as_ref()))
            .buffered(self.concurrency)
            .collect()
            .await;
        for ((line, _), done) in lines.iter().zip(outcomes) {
            let key = item_key(line.kind.as_str(), &line.name);
            let status = match (&line.decision, &done.result) {
                (_, Err(failure)) => {
                    let list = if failure.key_limit {
                        &mut summary.keys_not_synced
                    } else {
                        &mut summary.not_synced
                    };
                    list.push(NotSynced {
                        kind: line.kind.as_str().to_owned(),
                        name: line.name.clone(),
                        reason: failure.reason.clone(),
                    });
                    "not-synced"
                }
                (Decision::InSync, _) => {
                    summary.in_sync += 1;
                    "in-sync"
                }
                (Decision::Gone, _) => "gone",
                (Decision::Copy { from, .. }, _) => {
                    match from {
                        Which::A => summary.copied_to_b += 1,
                        Which::B => summary.copied_to_a += 1,
                    }
                    "copied"
                }
                (Decision::Delete { on, .. }, _) => {
                    match on {
                        Which::A => summary.deleted_on_a += 1,
                        Which::B => summary.deleted_on_b += 1,
                    }
                    "deleted"
                }
                (Decision::Conflict { reason }, _) => {
                    summary.conflicts.push(NotSynced {
                        kind: line.kind.as_str().to_owned(),
                        name: line.name.clone(),
                        reason: reason.clone(),
                    });
                    "conflict"
                }
            };
            if let (Some((_, s)), Ok(stamps)) = (state.as_mut(), &done.result) {
                match stamps {
                    Some(Some(stamps)) => {
                        s.items.insert(key, stamps.clone());
                    }
                    Some(None) => {
                        s.items.remove(&key);
                    }
                    None => {}
                }
            }
            let side = match &line.decision {
                Decision::Copy { from, .. } => Some(from.other()),
                Decision::Delete { on, .. } => Some(*on),
                _ => None,
            };
            let reason = match (&done.result, &line.decision) {
                (Err(failure), _) => Some(failure.reason.as_str()),
                (_, Decision::Conflict { reason }) => Some(reason.as_str()),
                _ => None,
            };
            if self.json {
                emit_json(
                    "item",
                    &ItemOut {
                        a: &a_name,
                        b: &b_name,
                        kind: line.kind,
                        name: &line.name,
                        status,
                        side,
                        reason,
                    },
                );
            } else {
                progress.item(&ItemEvent {
                    vault: side.map_or("both", |s| match s {
                        Which::A => a_name.as_str(),
                        Which::B => b_name.as_str(),
                    }),
                    kind: line.kind.as_str(),
                    name: &line.name,
                    status,
                    reason: (status == "not-synced" || status == "conflict")
                        .then_some(reason)
                        .flatten(),
                    bytes: None,
                });
            }
        }
        progress.finish_vault();
        if !self.dry_run
            && let Some((path, s)) = state.as_mut()
        {
            s.save(path).map_err(|e| {
                CliError::failed(e.to_string()).with_hint(
                    "the vaults were synced; the next run without this state deletes nothing \
                     and redoes nothing that is already equal",
                )
            })?;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        let (sa, sb) = (va.stats(), vb.stats());
        summary.requests_a = sa.requests;
        summary.requests_b = sb.requests;
        summary.throttled = sa.throttled + sb.throttled;
        summary.print(progress);
        Ok(summary.exit_code())
    }
}

/// How one line ended: the item's new stamps (`Some(None)`: forget it; `None`: keep the last
/// state), or why it failed.
struct Done {
    result: Result<Option<Option<ItemStamps>>, Failure>,
}

/// Why a line was not applied.
struct Failure {
    reason: String,
    /// A key Azure cannot move there (another subscription, or a live key to replace):
    /// reported, not a failure.
    key_limit: bool,
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            key_limit: false,
        }
    }
}

impl Failure {
    fn key_limit(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            key_limit: true,
        }
    }
}

struct Sides<'a> {
    a: &'a Store,
    b: &'a Store,
    dry_run: bool,
    /// With a KV side: the marker each side's writes carry.
    owners: Option<&'a Owners>,
}

fn observed_stamp(state: &SideState) -> Option<String> {
    match state {
        SideState::Present(o) => Some(o.stamp.clone()),
        _ => None,
    }
}

impl Sides<'_> {
    fn vault(&self, which: Which) -> &Store {
        match which {
            Which::A => self.a,
            Which::B => self.b,
        }
    }

    async fn apply(&self, line: &PlanLine, readings: Option<&(Reading, Reading)>) -> Done {
        let Some((ra, rb)) = readings else {
            return Done { result: Ok(None) };
        };
        let now = || {
            Some(ItemStamps {
                a: observed_stamp(&ra.state),
                b: observed_stamp(&rb.state),
            })
        };
        let result = match &line.decision {
            Decision::InSync => Ok(Some(now())),
            Decision::Gone => Ok(Some(None)),
            Decision::Conflict { .. } => Ok(None),
            Decision::Copy { .. } | Decision::Delete { .. } if self.dry_run => Ok(None),
            Decision::Copy { from, .. } => {
                let (src, dst) = match from {
                    Which::A => (ra, rb),
                    Which::B => (rb, ra),
                };
                match self.copy(line, src, dst, from.other()).await {
                    Ok(written) => {
                        let (a, b) = match from {
                            Which::A => (observed_stamp(&ra.state), Some(written)),
                            Which::B => (Some(written), observed_stamp(&rb.state)),
                        };
                        Ok(Some(Some(ItemStamps { a, b })))
                    }
                    Err(failure) => Err(failure),
                }
            }
            Decision::Delete { on, .. } => {
                match settle(|| {
                    self.vault(*on)
                        .soft_delete(line.kind.vault_kind(), &line.name)
                })
                .await
                {
                    Ok(()) => Ok(Some(None)),
                    Err(err) if err.is_not_found() => Ok(Some(None)),
                    Err(err) => Err(describe(&err).into()),
                }
            }
        };
        Done { result }
    }

    /// Writes `src`'s state onto side `to` (recovering a soft-deleted name first); answers
    /// the written item's new stamp.
    async fn copy(
        &self,
        line: &PlanLine,
        src: &Reading,
        dst: &Reading,
        to: Which,
    ) -> Result<String, Failure> {
        if let Some(reason) = &src.unreadable {
            return Err(format!("cannot be copied: {reason}").into());
        }
        let vault = self.vault(to);
        let kind = line.kind.vault_kind();
        if line.kind == SyncKind::Key && matches!(dst.state, SideState::Present(_)) {
            return Err(Failure::key_limit(
                "a new key version cannot be copied: a native restore never replaces a live \
                 key (rotate it on both sides, or settle with --prefer)",
            ));
        }
        if matches!(dst.state, SideState::Deleted { .. }) {
            match settle(|| vault.recover_deleted(kind, &line.name)).await {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) => {
                    return Err(format!("recovering it first: {}", describe(&err)).into());
                }
            }
            wait_live(vault, line.kind, &line.name).await?;
            if line.kind == SyncKind::Key {
                // The recovered key is the one this side had; its stamp is read back.
                let bundle = vault
                    .get_key(&line.name, None)
                    .await
                    .map_err(|e| Failure::from(e.to_string()))?;
                let p = &bundle.properties;
                return Ok(certificate_stamp(
                    p.version.as_deref().unwrap_or_default(),
                    &p.tags,
                    p.attributes.enabled,
                ));
            }
        }
        match &src.payload {
            Some(Payload::Key) => {
                let blob = self
                    .vault(to.other())
                    .backup(kind, &line.name)
                    .await
                    .map_err(|e| Failure::from(format!("native backup: {e}")))?;
                match settle(|| vault.restore(kind, &blob)).await {
                    // Restored with its version ids, tags and state: the source's stamp.
                    Ok(_) => Ok(match &src.state {
                        SideState::Present(o) => o.stamp.clone(),
                        _ => String::new(),
                    }),
                    Err(err) if err.is_cannot_decrypt_backup() => Err(Failure::key_limit(
                        "Cannot decrypt backup blob: the vaults are in different subscriptions \
                         or geographies, and a key moves only as its native blob",
                    )),
                    Err(err) => Err(describe(&err).into()),
                }
            }
            Some(Payload::Secret(secret)) => {
                let mut secret = secret.clone();
                if let Some(owners) = self.owners {
                    owners.on(to).mark(&mut secret.tags);
                }
                let secret = &secret;
                let written = settle(|| vault.set_secret(&line.name, secret))
                    .await
                    .map_err(|e| Failure::from(describe(&e)))?;
                Ok(stamp(
                    written.version.as_deref().unwrap_or_default(),
                    secret.content_type.as_deref(),
                    &secret.tags,
                    &secret.attributes,
                ))
            }
            Some(Payload::Certificate(Some(import))) => {
                let mut import = import.clone();
                if let Some(owners) = self.owners {
                    owners.on(to).mark(&mut import.tags);
                }
                let import = &import;
                let written = settle(|| vault.import_certificate(&line.name, import))
                    .await
                    .map_err(|e| Failure::from(describe(&e)))?;
                Ok(certificate_stamp(
                    written.version.as_deref().unwrap_or_default(),
                    &import.tags,
                    import.attributes.enabled,
                ))
            }
            _ => Err("nothing readable to copy".to_owned().into()),
        }
    }
}

/// Polls until a recovered item answers (Azure answers 404 for a few seconds).
async fn wait_live(vault: &Store, kind: SyncKind, name: &str) -> Result<(), String> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let found = match kind {
            SyncKind::Secret => vault.list_secret_versions(name).await.map(drop),
            SyncKind::Key => vault.get_key(name, None).await.map(drop),
            SyncKind::Certificate => vault.get_certificate(name, None).await.map(drop),
        };
        match found {
            Ok(()) => return Ok(()),
            Err(err) if err.is_not_found() && started.elapsed().as_secs() < 120 => {
                tokio::time::sleep(settle_backoff(attempt)).await;
                attempt += 1;
            }
            Err(err) => return Err(format!("recovered, but it does not answer: {err}")),
        }
    }
}

fn plan_table(lines: &[(PlanLine, Option<(Reading, Reading)>)]) -> String {
    let mut table = Table::new(["ACTION", "KIND", "NAME", "DETAIL"]);
    for (line, _) in lines {
        let (action, detail) = match &line.decision {
            Decision::InSync => ("in-sync".to_owned(), String::new()),
            Decision::Gone => ("forget".to_owned(), "gone from both sides".to_owned()),
            Decision::Copy { from, new, reason } => (
                format!(
                    "{} {}->{}",
                    if *new { "create" } else { "update" },
                    from.as_str(),
                    from.other().as_str()
                ),
                reason.clone(),
            ),
            Decision::Delete { on, reason } => {
                (format!("delete on {}", on.as_str()), reason.clone())
            }
            Decision::Conflict { reason } => ("conflict".to_owned(), reason.clone()),
        };
        table.row([
            action,
            line.kind.as_str().to_owned(),
            line.name.clone(),
            detail,
        ]);
    }
    table.render()
}
