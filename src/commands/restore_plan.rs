//! What `restore` and `diff` know before they change anything: the archive's items in scope
//! ([`ArchivedItem`], read once from the verified entries), the target vault's items (one
//! listing of live and soft-deleted items, [`TargetListing`]), a look at each item present on
//! both sides ([`LiveView`], compared by digest in [`compare`]), and the decision for each item
//! ([`decide`] → [`PlannedItem`]). Nothing here writes to a vault; `restore` applies the plan,
//! `diff` prints the comparison.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use age::secrecy::{ExposeSecret, SecretBox};
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::scope::{ItemKind as ScopeKind, Scope};
use crate::archive::{
    ArchiveError, Attributes as ArchivedAttributes, Decryption, EntryData, EntryType, Kind,
    SecretRecord,
};
use crate::vault::azure::AzureVault;
use crate::vault::{
    Attributes, BackupBlob, CertificateProperties, DeletedItem, ItemKind, KeyProperties,
    SecretProperties, VaultError, VaultReader,
};

/// How items are written into the target (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Native where the target accepts the blob, plain otherwise.
    Auto,
    /// Native backup blobs only (same subscription and geography).
    Native,
    /// Values only: secrets by value, certificates with an exportable key.
    Plain,
}

/// What to do with an item that exists in the target and differs (`--on-conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Leave it as it is.
    Skip,
    /// Write the archive's state as a new version (plain); native never deletes anything.
    Overwrite,
    /// Refuse to restore anything while a conflict exists.
    Fail,
}

/// An item's native backup blob with the metadata the backup recorded next to it.
#[derive(Debug)]
pub struct ArchivedBlob {
    /// The blob.
    pub blob: BackupBlob,
    /// The item's current version when captured.
    pub version: Option<String>,
    /// Tags of the current version.
    pub tags: BTreeMap<String, String>,
    /// Attributes of the current version.
    pub attributes: ArchivedAttributes,
    /// Content type (secrets).
    pub content_type: Option<String>,
}

/// A certificate with its private key, as the archive holds it (PFX bytes or PEM text).
#[derive(Debug)]
pub struct ArchivedExport {
    /// `application/x-pkcs12` or `application/x-pem-file`.
    pub content_type: String,
    /// The certificate version exported.
    pub version: String,
    /// The bytes (a PFX is binary, PEM is text).
    pub bytes: SecretBox<[u8]>,
}

/// One item of the archive, with everything it holds that a restore or a diff can use.
#[derive(Debug)]
pub struct ArchivedItem {
    /// The item's kind.
    pub kind: Kind,
    /// The item's name as captured.
    pub name: String,
    /// The native blob, when captured.
    pub blob: Option<ArchivedBlob>,
    /// Plain secret versions, oldest first, the current one last.
    pub versions: Vec<SecretRecord>,
    /// The certificate with its private key, when the policy allowed export.
    pub export: Option<ArchivedExport>,
    /// The certificate's policy as captured.
    pub policy: Option<serde_json::Value>,
    /// The certificate's public X.509 certificate (DER) of the captured version.
    pub public_cer: Option<Vec<u8>>,
    /// Why the backup could not capture it, when the manifest says so.
    pub skipped: Option<String>,
}

impl ArchivedItem {
    fn new(kind: Kind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            blob: None,
            versions: Vec::new(),
            export: None,
            policy: None,
            public_cer: None,
            skipped: None,
        }
    }

    /// The version the item had when captured.
    pub fn captured_version(&self) -> Option<&str> {
        self.versions
            .last()
            .map(|r| r.version.as_str())
            .or_else(|| self.blob.as_ref().and_then(|b| b.version.as_deref()))
    }

    /// Whether a plain write can bring it back (secret values, exportable certificates).
    pub fn has_plain_form(&self) -> bool {
        match self.kind {
            Kind::Secret => !self.versions.is_empty(),
            Kind::Certificate => self.export.is_some(),
            Kind::Key => false,
        }
    }

    /// Why there is no plain form, for the plan.
    pub fn no_plain_reason(&self) -> String {
        match self.kind {
            Kind::Key => "keys have no plain form: a key comes back only by a native restore \
                          into a vault of the source's subscription and geography"
                .to_owned(),
            Kind::Secret => "no plain value in the archive (the secret was disabled when \
                             captured): only its native blob holds it"
                .to_owned(),
            Kind::Certificate => "the private key was not exportable when captured: only the \
                                  native blob holds it"
                .to_owned(),
        }
    }
}

/// The archive's items in scope, and where they came from.
#[derive(Debug)]
pub struct ArchiveContents {
    /// The source vault's name.
    pub source_vault: String,
    /// The source vault's URL.
    pub source_url: String,
    /// Items by kind, then case-insensitive name.
    pub items: Vec<ArchivedItem>,
    /// Every item name the manifest lists, in scope or not (to check `--name` globs).
    pub names: Vec<(Kind, String)>,
}

/// Opens and verifies the archive (blocking: run it off the async threads) and gathers the
/// items in scope with their data. Memory holds the in-scope entries' data.
pub fn read_archive(
    path: &Path,
    decryption: &Decryption,
    scope: &Scope,
) -> Result<ArchiveContents, ArchiveError> {
    let reader = super::destination::open_archive(path, decryption)?;
    let manifest = reader.manifest();
    let mut items: BTreeMap<(Kind, String), ArchivedItem> = BTreeMap::new();
    for skipped in &manifest.skipped {
        if !scope.includes(scope_kind(skipped.kind), &skipped.name) || skipped.name == "*" {
            continue;
        }
        items
            .entry((skipped.kind, skipped.name.to_ascii_lowercase()))
            .or_insert_with(|| ArchivedItem::new(skipped.kind, &skipped.name))
            .skipped = Some(skipped.reason.clone());
    }
    let source_vault = manifest.source.vault.clone();
    let source_url = manifest.source.url.clone();
    let mut names: Vec<(Kind, String)> = manifest
        .entries
        .iter()
        .map(|e| (e.kind, e.name.clone()))
        .chain(manifest.skipped.iter().map(|s| (s.kind, s.name.clone())))
        .filter(|(_, name)| name != "*")
        .collect();
    names.sort();
    names.dedup();
    for entry in reader.entries() {
        let entry = entry?;
        let meta = entry.entry;
        if !scope.includes(scope_kind(meta.kind), &meta.name) {
            continue;
        }
        let item = items
            .entry((meta.kind, meta.name.to_ascii_lowercase()))
            .or_insert_with(|| ArchivedItem::new(meta.kind, &meta.name));
        match (meta.entry_type, entry.data) {
            (EntryType::SecretVersion, EntryData::Secret(record)) => item.versions.push(record),
            (EntryType::Backup, EntryData::Bytes(bytes)) => {
                item.blob = Some(ArchivedBlob {
                    blob: BackupBlob(bytes),
                    version: meta.version.clone(),
                    tags: meta.tags.to_map(),
                    attributes: meta.attributes.clone(),
                    content_type: meta.content_type.clone(),
                });
            }
            (EntryType::CertificateExport, EntryData::Private(bytes)) => {
                item.export = Some(ArchivedExport {
                    content_type: meta.content_type.clone().unwrap_or_default(),
                    version: meta.version.clone().unwrap_or_default(),
                    bytes,
                });
            }
            (EntryType::CertificatePublic, EntryData::Bytes(bytes)) => {
                item.public_cer = Some(bytes);
            }
            (EntryType::Policy, EntryData::Bytes(bytes)) if meta.kind == Kind::Certificate => {
                item.policy = serde_json::from_slice(&bytes).ok();
            }
            _ => {}
        }
    }
    let mut items: Vec<ArchivedItem> = items.into_values().collect();
    for item in &mut items {
        // Oldest first, the current version last: replaying in this order leaves the
        // archive's current version current.
        item.versions
            .sort_by_key(|r| (r.current, r.attributes.created.map(|t| t.unix_timestamp())));
    }
    Ok(ArchiveContents {
        source_vault,
        source_url,
        items,
        names,
    })
}

/// An item as the target vault's lists show it.
#[derive(Debug, Clone)]
pub enum LiveProps {
    /// A secret (not a managed one).
    Secret(SecretProperties),
    /// A key (not a managed one).
    Key(KeyProperties),
    /// A certificate.
    Certificate(CertificateProperties),
}

impl LiveProps {
    /// The item's name in the target.
    pub fn name(&self) -> &str {
        match self {
            LiveProps::Secret(p) => &p.name,
            LiveProps::Key(p) => &p.name,
            LiveProps::Certificate(p) => &p.name,
        }
    }
}

/// One listing of the target: live and soft-deleted items of the kinds in scope.
#[derive(Debug, Default)]
pub struct TargetListing {
    /// Live items by kind and lower-case name.
    pub live: HashMap<(Kind, String), LiveProps>,
    /// Soft-deleted items by kind and lower-case name.
    pub deleted: HashMap<(Kind, String), DeletedItem>,
    /// Lower-case names of secrets a certificate manages (a secret of that name cannot be
    /// written).
    pub managed_secrets: HashSet<String>,
    /// What could not be listed (soft-deleted lists are informational).
    pub notes: Vec<String>,
}

/// Lists the target once: every live item and every soft-deleted item of the kinds in scope.
pub async fn list_target(vault: &AzureVault, scope: &Scope) -> Result<TargetListing, VaultError> {
    let mut listing = TargetListing::default();
    if scope.includes_kind(ScopeKind::Secrets) || scope.includes_kind(ScopeKind::Certificates) {
        let mut secrets = vault.list_secrets();
        while let Some(props) = secrets.next().await {
            let props = props?;
            if props.managed {
                listing
                    .managed_secrets
                    .insert(props.name.to_ascii_lowercase());
            } else if scope.includes_kind(ScopeKind::Secrets) {
                let key = (Kind::Secret, props.name.to_ascii_lowercase());
                listing.live.insert(key, LiveProps::Secret(props));
            }
        }
    }
    if scope.includes_kind(ScopeKind::Keys) {
        let mut keys = vault.list_keys();
        while let Some(props) = keys.next().await {
            let props = props?;
            if !props.managed {
                let key = (Kind::Key, props.name.to_ascii_lowercase());
                listing.live.insert(key, LiveProps::Key(props));
            }
        }
    }
    if scope.includes_kind(ScopeKind::Certificates) {
        let mut certificates = vault.list_certificates();
        while let Some(props) = certificates.next().await {
            let props = props?;
            let key = (Kind::Certificate, props.name.to_ascii_lowercase());
            listing.live.insert(key, LiveProps::Certificate(props));
        }
    }
    for kind in Kind::ALL {
        if !scope.includes_kind(scope_kind(kind)) {
            continue;
        }
        let mut deleted = vault.list_deleted(vault_kind(kind));
        while let Some(item) = deleted.next().await {
            match item {
                Ok(item) if !item.managed => {
                    let key = (kind, item.name.to_ascii_lowercase());
                    listing.deleted.insert(key, item);
                }
                Ok(_) => {}
                Err(err) => {
                    // Without the deleted list a soft-deleted name shows up as a 409 when
                    // written, which is reported for that item: not a reason to stop.
                    listing.notes.push(format!(
                        "soft-deleted {}s could not be listed: {err}",
                        kind.as_str()
                    ));
                    break;
                }
            }
        }
    }
    Ok(listing)
}

/// A SHA-256 digest of something compared, never printed.
pub type Fingerprint = [u8; 32];

/// The target's current state of one item, read to compare it with the archive.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    /// The current version id, when it could be read.
    pub version: Option<String>,
    /// Digest of the current value (secrets), or SHA-1 thumbprint of the certificate.
    pub value: Option<Vec<u8>>,
    /// Content type (secrets).
    pub content_type: Option<String>,
    /// Tags of the current version.
    pub tags: BTreeMap<String, String>,
    /// Attributes of the current version.
    pub attributes: Attributes,
    /// Content digests of every live version, oldest first (secrets with several archived
    /// versions, read only when the current one differs). `None` for an unreadable version.
    pub history: Option<Vec<Option<Fingerprint>>>,
}

/// Reads the target's current state of `item` (one or two requests; every version of a
/// secret when `item` replays several and the current one differs).
pub async fn inspect_live(
    vault: &AzureVault,
    item: &ArchivedItem,
    props: &LiveProps,
) -> Result<LiveView, VaultError> {
    match props {
        LiveProps::Secret(p) => {
            let mut view = LiveView {
                content_type: p.content_type.clone(),
                tags: p.tags.clone(),
                attributes: p.attributes.clone(),
                ..LiveView::default()
            };
            match vault.get_secret(&p.name, None).await {
                Ok(value) => {
                    view.version = value.properties.version.clone();
                    view.value = Some(value_digest(value.value.expose_secret()).to_vec());
                    view.content_type = value.properties.content_type.clone();
                    view.tags = value.properties.tags.clone();
                    view.attributes = value.properties.attributes.clone();
                }
                // A disabled secret's value cannot be read: compared by version only, the
                // newest of its versions.
                Err(err) if err.is_secret_disabled() => {
                    let versions = vault.list_secret_versions(&p.name).await?;
                    view.version = versions.last().and_then(|v| v.version.clone());
                }
                Err(err) => return Err(err),
            }
            let differs = compare(item, &view).is_some_and(|c| !c.is_empty());
            if item.versions.len() > 1 && differs {
                view.history = Some(secret_history(vault, &p.name).await?);
            }
            Ok(view)
        }
        LiveProps::Key(p) => {
            let bundle = vault.get_key(&p.name, None).await?;
            Ok(LiveView {
                version: bundle.properties.version.clone(),
                tags: p.tags.clone(),
                attributes: p.attributes.clone(),
                ..LiveView::default()
            })
        }
        LiveProps::Certificate(p) => {
            let bundle = vault.get_certificate(&p.name, None).await?;
            Ok(LiveView {
                version: bundle.properties.version.clone(),
                value: Some(sha1_of(&bundle.cer)),
                tags: bundle.properties.tags.clone(),
                attributes: bundle.properties.attributes.clone(),
                ..LiveView::default()
            })
        }
    }
}

/// Content digests of every live version of a secret, oldest first.
async fn secret_history(
    vault: &AzureVault,
    name: &str,
) -> Result<Vec<Option<Fingerprint>>, VaultError> {
    let versions = vault.list_secret_versions(name).await?;
    let mut history = Vec::with_capacity(versions.len());
    for props in versions {
        let Some(version) = props.version.as_deref() else {
            history.push(None);
            continue;
        };
        if props.attributes.enabled == Some(false) {
            history.push(None);
            continue;
        }
        match vault.get_secret(name, Some(version)).await {
            Ok(value) => history.push(Some(content_digest(
                value.value.expose_secret(),
                value.properties.content_type.as_deref(),
                &value.properties.tags,
                &value.properties.attributes,
            ))),
            Err(err) if err.is_secret_disabled() => history.push(None),
            Err(err) => return Err(err),
        }
    }
    Ok(history)
}

/// How an item present on both sides differs: the names of the fields that changed
/// (`value`, `version`, `content_type`, `tags`, `attributes`). Empty when identical; `None`
/// when the archive holds nothing to compare with.
pub fn compare(item: &ArchivedItem, live: &LiveView) -> Option<Vec<&'static str>> {
    let mut changed = Vec::new();
    match item.kind {
        Kind::Secret => {
            if let Some(current) = item.versions.last() {
                let same_value = match &live.value {
                    Some(digest) => {
                        digest.as_slice() == value_digest(current.value.expose_secret())
                    }
                    None => live.version.as_deref() == Some(current.version.as_str()),
                };
                if !same_value {
                    changed.push("value");
                }
                if current.content_type != live.content_type {
                    changed.push("content_type");
                }
                if current.tags != live.tags {
                    changed.push("tags");
                }
                if !same_attributes(&current.attributes, &live.attributes, true) {
                    changed.push("attributes");
                }
            } else {
                let blob = item.blob.as_ref()?;
                if blob.version.is_none() || blob.version != live.version {
                    changed.push("version");
                }
                if blob.content_type != live.content_type {
                    changed.push("content_type");
                }
                if blob.tags != live.tags {
                    changed.push("tags");
                }
                if !same_attributes(&blob.attributes, &live.attributes, true) {
                    changed.push("attributes");
                }
            }
        }
        Kind::Key => {
            let blob = item.blob.as_ref()?;
            if blob.version.is_none() || blob.version != live.version {
                changed.push("version");
            }
            if blob.tags != live.tags {
                changed.push("tags");
            }
            if !same_attributes(&blob.attributes, &live.attributes, true) {
                changed.push("attributes");
            }
        }
        Kind::Certificate => {
            let same_value = match (&item.public_cer, &live.value) {
                (Some(cer), Some(thumbprint)) => sha1_of(cer) == *thumbprint,
                _ => {
                    item.captured_version().is_some()
                        && item.captured_version() == live.version.as_deref()
                }
            };
            if !same_value {
                changed.push("value");
            }
            if let Some(blob) = &item.blob {
                if blob.tags != live.tags {
                    changed.push("tags");
                }
                // A certificate's nbf and exp come from the X.509 certificate itself.
                if !same_attributes(&blob.attributes, &live.attributes, false) {
                    changed.push("attributes");
                }
            }
        }
    }
    Some(changed)
}

/// Where a plain replay that stopped part-way can continue: the number of archived versions
/// already present, when the live versions are exactly the archive's first ones (in any
/// order).
pub fn resume_point(item: &ArchivedItem, live: &LiveView) -> Option<usize> {
    let history = live.history.as_ref()?;
    if history.is_empty() || history.len() >= item.versions.len() {
        return None;
    }
    // Compared as multisets: versions written within one second have the same `created`,
    // and the vault's order among them is not the order they were written in.
    let mut live: Vec<Option<Fingerprint>> = history.clone();
    let mut archived: Vec<Option<Fingerprint>> = item.versions[..history.len()]
        .iter()
        .map(|record| Some(record_digest(record)))
        .collect();
    live.sort();
    archived.sort();
    (live == archived).then_some(history.len())
}

fn same_attributes(archived: &ArchivedAttributes, live: &Attributes, with_times: bool) -> bool {
    let enabled = |e: Option<bool>| e.unwrap_or(true);
    let seconds = |t: Option<time::OffsetDateTime>| t.map(|t| t.unix_timestamp());
    enabled(archived.enabled) == enabled(live.enabled)
        && (!with_times
            || (seconds(archived.not_before) == seconds(live.not_before)
                && seconds(archived.expires) == seconds(live.expires)))
}

fn value_digest(value: &str) -> Fingerprint {
    Sha256::digest(value.as_bytes()).into()
}

fn sha1_of(bytes: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes).to_vec()
}

/// Digest of one secret version's whole content: value, content type, tags, `enabled`,
/// `nbf`, `exp` (what a plain write sets).
fn content_digest(
    value: &str,
    content_type: Option<&str>,
    tags: &BTreeMap<String, String>,
    attributes: &Attributes,
) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(value_digest(value));
    hash.update(content_type.unwrap_or("\u{0}none").as_bytes());
    for (k, v) in tags {
        hash.update((k.len() as u64).to_le_bytes());
        hash.update(k.as_bytes());
        hash.update((v.len() as u64).to_le_bytes());
        hash.update(v.as_bytes());
    }
    hash.update([u8::from(attributes.enabled.unwrap_or(true))]);
    for t in [attributes.not_before, attributes.expires] {
        hash.update(t.map_or(i64::MIN, |t| t.unix_timestamp()).to_le_bytes());
    }
    hash.finalize().into()
}

/// [`content_digest`] of an archived version.
fn record_digest(record: &SecretRecord) -> Fingerprint {
    content_digest(
        record.value.expose_secret(),
        record.content_type.as_deref(),
        &record.tags,
        &vault_attributes(&record.attributes),
    )
}

/// The writable attributes of an archived version, as the vault models them.
pub fn vault_attributes(archived: &ArchivedAttributes) -> Attributes {
    Attributes {
        enabled: archived.enabled,
        not_before: archived.not_before,
        expires: archived.expires,
        ..Attributes::default()
    }
}

/// What the plan does with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The target lacks it: write it.
    Create,
    /// Nothing to do: identical, or existing and left alone.
    Skip,
    /// Exists and differs: write the archive's state as a new version.
    Overwrite,
    /// Soft-deleted in the target: recover it, then bring it up to the archive's state.
    Recover,
    /// Exists or is soft-deleted, and the options say not to touch it.
    Conflict,
    /// Cannot be restored into this target with these options.
    Impossible,
}

impl Action {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Skip => "skip",
            Action::Overwrite => "overwrite",
            Action::Recover => "recover",
            Action::Conflict => "conflict",
            Action::Impossible => "impossible",
        }
    }

    /// Whether the item ends up not restored (exit 3).
    pub fn is_failure(self) -> bool {
        matches!(self, Action::Conflict | Action::Impossible)
    }
}

/// How a write is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The native backup blob.
    Native,
    /// Values (secret versions, certificate import).
    Plain,
    /// Native, or plain when the target refuses the blob.
    Auto,
}

impl Method {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Native => "native",
            Method::Plain => "plain",
            Method::Auto => "auto",
        }
    }
}

/// Whether the target takes the archive's native backup blobs. Azure opens a blob only in a
/// vault of the source's subscription and geography ("Cannot decrypt backup blob" elsewhere),
/// and nothing tells which subscription a vault is in short of a restore, so a plan knows it
/// only from a restore that cannot create anything (see `restore::probe_native`) or from the
/// target being the source vault itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NativeTarget {
    /// The target opens the archive's blobs: native writes will work.
    Accepts,
    /// The target refuses them (another subscription or geography).
    Refuses,
    /// Not known: an item that only a native restore brings back may or may not come back.
    Unverified,
}

/// The reason a plan line gives when the target refuses native blobs.
pub const REFUSED_NATIVELY: &str = "the target refuses the archive's native blobs (Cannot \
                                    decrypt backup blob: another subscription or geography)";

/// One line of the plan. Holds names and reasons, never values.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedItem {
    /// The item's kind.
    pub kind: Kind,
    /// The item's name.
    pub name: String,
    /// What will be done.
    pub action: Action,
    /// How it will be written, for writing actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Why, or a detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a plain replay that continues an interrupted one: archived versions already
    /// present in the target.
    #[serde(skip_serializing_if = "is_zero")]
    pub versions_present: usize,
    /// A create that only a native restore can make (no plain form, or `--mode native`):
    /// it happens only if the target accepts the archive's blobs.
    #[serde(skip)]
    pub needs_native: bool,
    /// Set when `needs_native` and the plan could not learn whether the target accepts the
    /// blobs: the item may not be restored.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl PlannedItem {
    /// Whether a dry run counts this line as an item that would not (or might not) be
    /// restored: a conflict, an impossibility, or a native-only create the target was not
    /// seen to accept.
    pub fn may_fail(&self) -> bool {
        self.action.is_failure() || self.unverified
    }
}

/// Where an item stands in the target.
#[derive(Debug)]
pub enum TargetState<'a> {
    /// Neither live nor soft-deleted.
    Absent,
    /// The name is a certificate's managed secret in the target.
    ManagedName,
    /// Soft-deleted.
    Deleted,
    /// Live, with what was read of it, or why it could not be read.
    Live(Result<&'a LiveView, &'a str>),
}

/// The options that shape decisions.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `--mode`.
    pub mode: Mode,
    /// `--on-conflict`.
    pub on_conflict: OnConflict,
    /// `--recover-deleted`.
    pub recover_deleted: bool,
}

/// Decides what to do with one archived item given where it stands in the target and whether
/// the target takes the archive's native blobs.
pub fn decide(
    item: &ArchivedItem,
    target: TargetState<'_>,
    policy: Policy,
    native_target: NativeTarget,
) -> PlannedItem {
    let plan = |action, method, reason: Option<String>| PlannedItem {
        kind: item.kind,
        name: item.name.clone(),
        action,
        method,
        reason,
        versions_present: 0,
        needs_native: false,
        unverified: false,
    };
    let native = item.blob.is_some();
    let plain = item.has_plain_form();
    if !native && !plain {
        let reason = match &item.skipped {
            Some(reason) => format!("not captured by the backup: {reason}"),
            None => "the archive holds neither a native blob nor a plain form".to_owned(),
        };
        return plan(Action::Impossible, None, Some(reason));
    }
    let write_method = match policy.mode {
        Mode::Native if native => Ok(Method::Native),
        Mode::Native => Err("no native blob in the archive: try --mode plain".to_owned()),
        Mode::Plain if plain => Ok(Method::Plain),
        Mode::Plain => Err(item.no_plain_reason()),
        Mode::Auto => Ok(match (native, plain) {
            (true, true) => Method::Auto,
            (true, false) => Method::Native,
            _ => Method::Plain,
        }),
    };
    let write_method = match write_method {
        Ok(method) => method,
        Err(reason) => return plan(Action::Impossible, None, Some(reason)),
    };
    match target {
        TargetState::Absent => match (write_method, native_target) {
            (Method::Auto, NativeTarget::Refuses) => plan(
                Action::Create,
                Some(Method::Plain),
                Some(format!("{REFUSED_NATIVELY}: written by value")),
            ),
            (Method::Native, NativeTarget::Refuses) => {
                let why = if plain {
                    "--mode plain writes it by value".to_owned()
                } else {
                    item.no_plain_reason()
                };
                let mut line = plan(
                    Action::Impossible,
                    None,
                    Some(format!("{REFUSED_NATIVELY}; {why}")),
                );
                line.needs_native = true;
                line
            }
            (Method::Native, accepts_or_unknown) => {
                let unverified = accepts_or_unknown == NativeTarget::Unverified;
                let mut line = plan(
                    Action::Create,
                    Some(Method::Native),
                    unverified.then(|| {
                        "unverified: comes back only if the target is in the source's \
                         subscription and geography"
                            .to_owned()
                    }),
                );
                line.needs_native = true;
                line.unverified = unverified;
                line
            }
            (method, _) => plan(Action::Create, Some(method), None),
        },
        TargetState::ManagedName => plan(
            Action::Impossible,
            None,
            Some("the name belongs to a certificate's managed secret in the target".to_owned()),
        ),
        TargetState::Deleted if policy.recover_deleted => plan(
            Action::Recover,
            Some(write_method),
            Some("soft-deleted in the target: recovered, then brought up to the archive".into()),
        ),
        TargetState::Deleted => plan(
            Action::Conflict,
            None,
            Some(
                "soft-deleted in the target: pass --recover-deleted to recover it \
                 (coldvault never purges)"
                    .to_owned(),
            ),
        ),
        TargetState::Live(Err(reason)) => plan(
            Action::Conflict,
            None,
            Some(format!(
                "exists in the target and could not be read: {reason}"
            )),
        ),
        TargetState::Live(Ok(view)) => {
            let changed = compare(item, view).unwrap_or_else(|| vec!["version"]);
            if changed.is_empty() {
                return plan(Action::Skip, None, Some("identical".to_owned()));
            }
            if write_method != Method::Native
                && let Some(present) = resume_point(item, view)
            {
                let mut line = plan(
                    Action::Create,
                    Some(Method::Plain),
                    Some(format!(
                        "finishing an interrupted restore: {present} of {} versions present",
                        item.versions.len()
                    )),
                );
                line.versions_present = present;
                return line;
            }
            let differs = format!("exists and differs ({})", changed.join(", "));
            match policy.on_conflict {
                OnConflict::Skip => plan(Action::Skip, None, Some(differs)),
                OnConflict::Fail => plan(Action::Conflict, None, Some(differs)),
                OnConflict::Overwrite if plain && policy.mode != Mode::Native => plan(
                    Action::Overwrite,
                    Some(Method::Plain),
                    Some(format!(
                        "{differs}: the archive's state is added as a new version"
                    )),
                ),
                OnConflict::Overwrite => {
                    let why = if item.kind == Kind::Key || policy.mode == Mode::Native {
                        "a native restore never replaces a live item"
                    } else {
                        "no plain form to write as a new version"
                    };
                    plan(Action::Conflict, None, Some(format!("{differs}; {why}")))
                }
            }
        }
    }
}

/// The vault's kind for an archive kind.
pub fn vault_kind(kind: Kind) -> ItemKind {
    match kind {
        Kind::Secret => ItemKind::Secret,
        Kind::Key => ItemKind::Key,
        Kind::Certificate => ItemKind::Certificate,
    }
}

/// The scope's kind for an archive kind.
pub fn scope_kind(kind: Kind) -> ScopeKind {
    match kind {
        Kind::Secret => ScopeKind::Secrets,
        Kind::Key => ScopeKind::Keys,
        Kind::Certificate => ScopeKind::Certificates,
    }
}

/// The archive's kind for a vault kind.
pub fn archive_kind(kind: ItemKind) -> Kind {
    match kind {
        ItemKind::Secret => Kind::Secret,
        ItemKind::Key => Kind::Key,
        ItemKind::Certificate => Kind::Certificate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::SecretString;

    fn record(version: &str, value: &str, current: bool, created: i64) -> SecretRecord {
        SecretRecord {
            name: "db".into(),
            version: version.into(),
            value: SecretString::from(value.to_owned()),
            content_type: Some("text/plain".into()),
            tags: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            attributes: ArchivedAttributes {
                created: time::OffsetDateTime::from_unix_timestamp(created).ok(),
                ..ArchivedAttributes::default()
            },
            current,
        }
    }

    fn secret(values: &[&str]) -> ArchivedItem {
        let mut item = ArchivedItem::new(Kind::Secret, "db");
        let n = values.len();
        for (i, v) in values.iter().enumerate() {
            item.versions
                .push(record(&format!("v{i}"), v, i + 1 == n, 1000 + i as i64));
        }
        item.blob = Some(ArchivedBlob {
            blob: BackupBlob(vec![1, 2, 3]),
            version: Some(format!("v{}", n - 1)),
            tags: BTreeMap::new(),
            attributes: ArchivedAttributes::default(),
            content_type: None,
        });
        item
    }

    fn live_like(item: &ArchivedItem, value: &str) -> LiveView {
        let current = item.versions.last().unwrap();
        LiveView {
            version: Some("other".into()),
            value: Some(value_digest(value).to_vec()),
            content_type: current.content_type.clone(),
            tags: current.tags.clone(),
            attributes: Attributes::default(),
            history: None,
        }
    }

    const DEFAULT: Policy = Policy {
        mode: Mode::Auto,
        on_conflict: OnConflict::Skip,
        recover_deleted: false,
    };

    #[test]
    fn absent_items_are_created_natively_or_plainly() {
        let item = secret(&["a", "b"]);
        let line = decide(&item, TargetState::Absent, DEFAULT, NativeTarget::Accepts);
        assert_eq!(line.action, Action::Create);
        assert_eq!(line.method, Some(Method::Auto));
        let mut key = ArchivedItem::new(Kind::Key, "k");
        key.blob = item.blob.as_ref().map(|b| ArchivedBlob {
            blob: b.blob.clone(),
            version: b.version.clone(),
            tags: BTreeMap::new(),
            attributes: ArchivedAttributes::default(),
            content_type: None,
        });
        let plain = Policy {
            mode: Mode::Plain,
            ..DEFAULT
        };
        let line = decide(&key, TargetState::Absent, plain, NativeTarget::Accepts);
        assert_eq!(line.action, Action::Impossible);
        assert!(line.reason.unwrap().contains("no plain form"));
    }

    #[test]
    fn identical_is_skipped_and_differences_follow_the_policy() {
        let item = secret(&["a", "b"]);
        let same = live_like(&item, "b");
        assert_eq!(compare(&item, &same), Some(vec![]));
        assert_eq!(
            decide(
                &item,
                TargetState::Live(Ok(&same)),
                DEFAULT,
                NativeTarget::Accepts
            )
            .action,
            Action::Skip
        );
        let mut other = live_like(&item, "zzz");
        other.tags.clear();
        assert_eq!(compare(&item, &other), Some(vec!["value", "tags"]));
        let skip = decide(
            &item,
            TargetState::Live(Ok(&other)),
            DEFAULT,
            NativeTarget::Accepts,
        );
        assert_eq!(skip.action, Action::Skip);
        assert!(skip.reason.unwrap().contains("value, tags"));
        let overwrite = Policy {
            on_conflict: OnConflict::Overwrite,
            ..DEFAULT
        };
        let line = decide(
            &item,
            TargetState::Live(Ok(&other)),
            overwrite,
            NativeTarget::Accepts,
        );
        assert_eq!(
            (line.action, line.method),
            (Action::Overwrite, Some(Method::Plain))
        );
        let native = Policy {
            mode: Mode::Native,
            ..overwrite
        };
        assert_eq!(
            decide(
                &item,
                TargetState::Live(Ok(&other)),
                native,
                NativeTarget::Accepts
            )
            .action,
            Action::Conflict
        );
        let fail = Policy {
            on_conflict: OnConflict::Fail,
            ..DEFAULT
        };
        assert_eq!(
            decide(
                &item,
                TargetState::Live(Ok(&other)),
                fail,
                NativeTarget::Accepts
            )
            .action,
            Action::Conflict
        );
    }

    #[test]
    fn soft_deleted_needs_recover_deleted() {
        let item = secret(&["a"]);
        let line = decide(&item, TargetState::Deleted, DEFAULT, NativeTarget::Accepts);
        assert_eq!(line.action, Action::Conflict);
        assert!(line.reason.unwrap().contains("--recover-deleted"));
        let recover = Policy {
            recover_deleted: true,
            ..DEFAULT
        };
        assert_eq!(
            decide(&item, TargetState::Deleted, recover, NativeTarget::Accepts).action,
            Action::Recover
        );
    }

    #[test]
    fn an_interrupted_replay_resumes_where_it_stopped() {
        let item = secret(&["a", "b", "c"]);
        let mut view = live_like(&item, "b");
        view.history = Some(vec![
            Some(record_digest(&item.versions[0])),
            Some(record_digest(&item.versions[1])),
        ]);
        assert_eq!(resume_point(&item, &view), Some(2));
        let line = decide(
            &item,
            TargetState::Live(Ok(&view)),
            DEFAULT,
            NativeTarget::Accepts,
        );
        assert_eq!(line.action, Action::Create);
        assert_eq!(line.versions_present, 2);
        view.history = Some(vec![Some([0; 32])]);
        assert_eq!(resume_point(&item, &view), None);
    }

    /// Versions written within one second share `created`, and the vault lists them in id
    /// order: a half-done replay must still be recognised.
    #[test]
    fn versions_listed_out_of_order_still_resume() {
        let item = secret(&["a", "b", "c"]);
        let mut view = live_like(&item, "a");
        view.history = Some(vec![
            Some(record_digest(&item.versions[1])),
            Some(record_digest(&item.versions[0])),
        ]);
        assert_eq!(resume_point(&item, &view), Some(2));
        view.history = Some(vec![
            Some(record_digest(&item.versions[2])),
            Some(record_digest(&item.versions[0])),
        ]);
        assert_eq!(
            resume_point(&item, &view),
            None,
            "not the first two versions"
        );
    }

    fn key_item() -> ArchivedItem {
        let mut key = ArchivedItem::new(Kind::Key, "signing-key");
        key.blob = Some(ArchivedBlob {
            blob: BackupBlob(vec![7]),
            version: Some("k1".into()),
            tags: BTreeMap::new(),
            attributes: ArchivedAttributes::default(),
            content_type: None,
        });
        key
    }

    /// `restore --dry-run` into another subscription said "0 impossible": a vault that
    /// refuses the blobs makes native-only items impossible with Azure's reason, and the rest
    /// plain.
    #[test]
    fn dry_run_predicts_cross_subscription_refusals() {
        let key = key_item();
        let line = decide(&key, TargetState::Absent, DEFAULT, NativeTarget::Refuses);
        assert_eq!(line.action, Action::Impossible);
        let reason = line.reason.unwrap();
        assert!(reason.contains("Cannot decrypt backup blob"), "{reason}");
        assert!(reason.contains("keys have no plain form"), "{reason}");
        assert!(line.needs_native && line.action.is_failure());

        let secret = secret(&["a", "b"]);
        let line = decide(&secret, TargetState::Absent, DEFAULT, NativeTarget::Refuses);
        assert_eq!(
            (line.action, line.method),
            (Action::Create, Some(Method::Plain))
        );
        assert!(!line.may_fail());

        let native = Policy {
            mode: Mode::Native,
            ..DEFAULT
        };
        let line = decide(&secret, TargetState::Absent, native, NativeTarget::Refuses);
        assert_eq!(line.action, Action::Impossible);
        assert!(line.reason.unwrap().contains("--mode plain"));

        // Refusal changes nothing for items the target already holds.
        let same = live_like(&secret, "b");
        let line = decide(
            &secret,
            TargetState::Live(Ok(&same)),
            DEFAULT,
            NativeTarget::Refuses,
        );
        assert_eq!(line.action, Action::Skip);
    }

    #[test]
    fn an_unknown_target_leaves_native_only_creates_unverified() {
        let key = key_item();
        let line = decide(&key, TargetState::Absent, DEFAULT, NativeTarget::Unverified);
        assert_eq!(
            (line.action, line.method),
            (Action::Create, Some(Method::Native))
        );
        assert!(line.unverified && line.may_fail());
        assert!(
            serde_json::to_string(&line)
                .unwrap()
                .contains("\"unverified\":true")
        );
        let line = decide(&key, TargetState::Absent, DEFAULT, NativeTarget::Accepts);
        assert!(!line.unverified && !line.may_fail());
        assert!(!serde_json::to_string(&line).unwrap().contains("unverified"));
        // Items with a plain form come back either way.
        let secret = secret(&["a"]);
        let line = decide(
            &secret,
            TargetState::Absent,
            DEFAULT,
            NativeTarget::Unverified,
        );
        assert_eq!(line.method, Some(Method::Auto));
        assert!(!line.may_fail());
    }

    #[test]
    fn plan_lines_never_hold_values() {
        let item = secret(&["canary-5e1f"]);
        let line = decide(&item, TargetState::Absent, DEFAULT, NativeTarget::Accepts);
        let text = format!("{line:?} {}", serde_json::to_string(&line).unwrap());
        assert!(!text.contains("canary-5e1f"));
        assert!(!format!("{item:?}").contains("canary-5e1f"));
    }
}
