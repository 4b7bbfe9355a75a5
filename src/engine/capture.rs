//! Capturing a live store's items: the listing that feeds the work ([`work_stream`]) and
//! one capture per item ([`capture`]), each through the one loop [`capture_consistent`]
//! (read every piece, capture again once if the item moved between listing and capture,
//! report it). Generic over [`VaultReader`]: no server is needed to run it, and any live
//! store that answers these reads is a source. What is captured ([`Captured`]: the pieces of
//! one item, in archive order) goes to whatever writes it; nothing here prints.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use age::secrecy::zeroize::Zeroizing;
use age::secrecy::{ExposeSecret, SecretBox, SecretString};
use base64::Engine;
use futures::StreamExt;
use futures::stream::BoxStream;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::Filter;
use super::item::{BlobHead, ExportHead, ItemData, ItemHead, VersionHead, sha1_of};
use crate::archive::manifest::RecapturedItem;
use crate::archive::{Attributes as ArchivedAttributes, ItemInfo, Kind, SecretRecord};
use crate::vault::{
    Attributes, BackupBlob, CertificateProperties, KeyProperties, SecretProperties,
    SecretVersionValue, VaultError, VaultReader,
};

/// One piece of an item, in the order it goes into the archive.
pub enum Piece {
    /// A plain secret version with its value.
    Secret(SecretRecord),
    /// The native backup blob, with the item's metadata.
    Blob(ItemInfo, Vec<u8>),
    /// A key version's public JWK (JSON).
    KeyJwk {
        /// The key version.
        version: String,
        /// The JWK as JSON.
        json: Vec<u8>,
    },
    /// A certificate version's public X.509 certificate.
    CertificatePublic {
        /// The certificate version.
        version: String,
        /// DER bytes.
        der: Vec<u8>,
    },
    /// The certificate with its private key (PFX or PEM), wiped on drop.
    CertificateExport {
        /// The certificate version.
        version: String,
        /// `application/x-pkcs12` or `application/x-pem-file`.
        content_type: String,
        /// The bytes.
        bytes: Zeroizing<Vec<u8>>,
    },
    /// A key's rotation policy or a certificate's policy (JSON).
    Policy(Vec<u8>),
}

/// Everything captured of one item, with what went wrong.
pub struct Captured {
    pub kind: Kind,
    pub name: String,
    pub pieces: Vec<Piece>,
    /// Failures: the item is recorded as skipped with these reasons (exit 3).
    pub problems: Vec<String>,
    /// Known limits that lose nothing Azure lets anyone have (a disabled secret's value).
    pub notes: Vec<String>,
    pub recaptured: Option<RecapturedItem>,
    /// Set on the stand-in item (`*`) of a list that failed: why it failed.
    pub list_failure: Option<VaultError>,
}

impl Captured {
    /// The captured item in the engine's model: its head for planning and its data for
    /// writing into another store (a copy from one live store to another goes through the
    /// same plan and apply as a restore). Problems become the head's `skipped` reason.
    pub fn into_item(self) -> ItemData {
        let mut head = ItemHead::new(self.kind, &self.name);
        let mut blob = None;
        let mut versions = Vec::new();
        let mut export = None;
        let mut policy = None;
        for piece in self.pieces {
            match piece {
                Piece::Secret(record) => {
                    head.versions.push(VersionHead::of(&record));
                    versions.push(record);
                }
                Piece::Blob(info, bytes) => {
                    head.blob = Some(BlobHead {
                        version: info.version,
                        tags: info.tags,
                        attributes: info.attributes,
                        content_type: info.content_type,
                    });
                    blob = Some(BackupBlob(bytes));
                }
                Piece::CertificatePublic { der, .. } => head.thumbprint = Some(sha1_of(&der)),
                Piece::CertificateExport {
                    version,
                    content_type,
                    bytes,
                } => {
                    head.export = Some(ExportHead {
                        content_type,
                        version,
                    });
                    export = Some(SecretBox::from(bytes.to_vec().into_boxed_slice()));
                }
                Piece::Policy(json) if self.kind == Kind::Certificate => {
                    policy = serde_json::from_slice(&json).ok();
                }
                Piece::Policy(_) | Piece::KeyJwk { .. } => {}
            }
        }
        if !self.problems.is_empty() {
            head.skipped = Some(self.problems.join("; "));
        }
        head.sort_versions();
        let mut item = ItemData::new(head);
        item.blob = blob;
        item.versions = versions;
        item.export = export;
        item.policy = policy;
        item.sort_versions();
        item
    }
}

impl Captured {
    /// An item with nothing captured yet.
    pub fn new(kind: Kind, name: &str) -> Self {
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

/// One item to capture, or a list that failed.
pub enum Work {
    /// A listed secret.
    Secret(SecretProperties),
    /// A listed key.
    Key(KeyProperties),
    /// A listed certificate.
    Certificate(CertificateProperties),
    /// A list of this kind that failed, and why.
    ListFailed(Kind, VaultError),
}

/// How many listed items may wait for a capture slot. Listing runs ahead of capturing so the
/// `nextLink` chain — the one part of a backup that cannot run concurrently — never waits for
/// captures; this bounds the memory it may use meanwhile (properties only, no values).
const LISTED_AHEAD: usize = 10_000;

/// How far listing has come: items in scope listed so far, and lists still running. Read by
/// the periodic progress line.
#[derive(Debug, Default)]
pub struct ListingProgress {
    items: AtomicU64,
    running: AtomicUsize,
}

impl ListingProgress {
    /// Items in scope listed so far.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// Whether every list has ended.
    pub fn done(&self) -> bool {
        self.running.load(Ordering::Relaxed) == 0
    }
}

/// Every item in scope, streamed as list pages arrive. The three kinds are listed at the same
/// time, each by a task of its own that follows its `nextLink` chain at full speed. Managed
/// keys and secrets are left out: the certificate's blob carries them.
pub fn work_stream<V: VaultReader, F: Filter + Clone + Send + 'static>(
    vault: &V,
    scope: &F,
    listing: &Arc<ListingProgress>,
) -> BoxStream<'static, Work> {
    let (tx, rx) = mpsc::channel::<Work>(LISTED_AHEAD);
    // Each list counts as running from before its task starts, so "done" is never early.
    let track = || {
        listing.running.fetch_add(1, Ordering::Relaxed);
        Arc::clone(listing)
    };
    if scope.includes_kind(Kind::Secret) {
        let s = scope.clone();
        spawn_listing(
            vault.list_secrets(),
            tx.clone(),
            track(),
            move |item| match item {
                Ok(p) if p.managed || !s.includes(Kind::Secret, &p.name) => None,
                Ok(p) => Some(Work::Secret(p)),
                Err(e) => Some(Work::ListFailed(Kind::Secret, e)),
            },
        );
    }
    if scope.includes_kind(Kind::Key) {
        let s = scope.clone();
        spawn_listing(
            vault.list_keys(),
            tx.clone(),
            track(),
            move |item| match item {
                Ok(p) if p.managed || !s.includes(Kind::Key, &p.name) => None,
                Ok(p) => Some(Work::Key(p)),
                Err(e) => Some(Work::ListFailed(Kind::Key, e)),
            },
        );
    }
    if scope.includes_kind(Kind::Certificate) {
        let s = scope.clone();
        spawn_listing(
            vault.list_certificates(),
            tx,
            track(),
            move |item| match item {
                Ok(p) if !s.includes(Kind::Certificate, &p.name) => None,
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

/// Captures one listed item (every piece, consistently), or records a list that failed.
pub async fn capture<V: VaultReader>(vault: &V, work: Work, all_versions: bool) -> Captured {
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

/// Why a list failed, for the manifest and the summary.
pub fn list_failure(kind: Kind, err: &VaultError) -> String {
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

/// The most versions Azure's native backup holds; past it the call times out ("after 500
/// versions the backup operation will time out", Azure/azure-sdk-for-net#20934; Key Vault's
/// backup documentation: "attempting to do so may result in an error").
const MAX_NATIVE_BACKUP_VERSIONS: usize = 500;

/// One capture of an item: its pieces and problems, and its current version as this capture
/// read it.
pub struct Attempt {
    /// What this attempt captured.
    pub captured: Captured,
    /// The current version it read.
    pub version: Option<String>,
    /// That version's `updated` time.
    pub updated: Option<OffsetDateTime>,
}

/// A version id and its `updated` time, as a version list reports them.
pub type VersionStamp = (Option<String>, Option<OffsetDateTime>);

/// What [`capture_consistent`] needs of one kind: one capture of the item, and its versions.
pub trait Capture: Sync {
    /// The item's kind.
    fn kind(&self) -> Kind;
    /// The item's name.
    fn name(&self) -> &str;
    /// `updated` of the current version as the vault-wide list reported it.
    fn listed_updated(&self) -> Option<OffsetDateTime>;
    /// Captures every piece of the item once.
    fn attempt<V: VaultReader>(&self, vault: &V) -> impl Future<Output = Attempt> + Send;
    /// Every version (id, `updated`), oldest first.
    fn versions<V: VaultReader>(
        &self,
        vault: &V,
    ) -> impl Future<Output = Result<Vec<VersionStamp>, VaultError>> + Send;
}

/// Captures an item so that its pieces agree: when the version read differs from what the
/// list saw (a rotation between listing and capture, or during it), the item is captured
/// again, once, and reported as recaptured with the version the list saw and the one kept.
pub async fn capture_consistent<V: VaultReader, C: Capture>(vault: &V, item: &C) -> Captured {
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
async fn listed_version<V: VaultReader, C: Capture>(
    vault: &V,
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

    async fn versions<V: VaultReader>(&self, vault: &V) -> Result<Vec<VersionStamp>, VaultError> {
        let versions = vault.list_secret_versions(self.name()).await?;
        Ok(versions
            .into_iter()
            .map(|v| (v.version, v.attributes.updated))
            .collect())
    }

    async fn attempt<V: VaultReader>(&self, vault: &V) -> Attempt {
        let props = self.props;
        let name = props.name.as_str();
        let mut captured = Captured::new(Kind::Secret, name);
        // The blob first, the value second: if the value is still the version the list saw,
        // no new version can have slipped in between, and blob and value agree.
        let blob = vault.backup(Kind::Secret, name).await;
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
async fn capture_secret_versions<V: VaultReader>(
    vault: &V,
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
async fn past_version_limit<V: VaultReader, C: Capture>(vault: &V, item: &C) -> Option<String> {
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

    async fn versions<V: VaultReader>(&self, vault: &V) -> Result<Vec<VersionStamp>, VaultError> {
        let versions = vault.list_key_versions(self.name()).await?;
        Ok(versions
            .into_iter()
            .map(|v| (v.version, v.attributes.updated))
            .collect())
    }

    async fn attempt<V: VaultReader>(&self, vault: &V) -> Attempt {
        let props = self.props;
        let name = props.name.as_str();
        let mut captured = Captured::new(Kind::Key, name);
        let blob = vault.backup(Kind::Key, name).await;
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

    async fn versions<V: VaultReader>(&self, vault: &V) -> Result<Vec<VersionStamp>, VaultError> {
        let versions = vault.list_certificate_versions(self.name()).await?;
        Ok(versions
            .into_iter()
            .map(|v| (v.version, v.attributes.updated))
            .collect())
    }

    async fn attempt<V: VaultReader>(&self, vault: &V) -> Attempt {
        let props = self.props;
        let name = props.name.as_str();
        let mut captured = Captured::new(Kind::Certificate, name);
        let blob = vault.backup(Kind::Certificate, name).await;
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
async fn capture_certificate_export<V: VaultReader>(
    vault: &V,
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

/// The content type Key Vault gives a PFX certificate's managed secret (and the default).
pub(crate) const PKCS12: &str = "application/x-pkcs12";
const PEM: &str = "application/x-pem-file";

/// The exported certificate as a file would hold it: a PFX is stored by Key Vault as standard
/// base64 and goes into the archive as binary (`.pfx`); PEM is text already. Any other
/// content type, or a PFX that is not base64, gives `None`. Copy decodes with it too.
pub(crate) fn export_bytes(content_type: &str, value: &SecretString) -> Option<Zeroizing<Vec<u8>>> {
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
