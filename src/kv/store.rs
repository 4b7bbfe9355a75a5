//! A KV v2 mount (or a KV archive, read into a [`KvSnapshot`]) as one more store of the
//! engine: [`KvStore`] implements [`VaultReader`] and [`VaultWriter`] for secrets, under a
//! [`Granularity`] and a [`NameTemplate`] ([`super::mapping`]), so `copy`, `sync` and
//! `restore` plan and write KV items as they do Key Vault items.
//!
//! Reads are answered from the snapshot (a mount is read once, up front, with
//! [`KvClient::read_all`]); writes go through a [`KvBackend`] (the [`KvClient`]; an in-memory
//! fake in the tests) with check-and-set, and update the snapshot so a read-back sees them.
//! A store without a backend (an archive) refuses writes. Keys and certificates are absent;
//! a KV mount has no native backup blobs, and a write of one is refused the way a Key Vault
//! of another geography refuses it, so the engine writes by value.
//!
//! Soft-deleted and destroyed versions are never resurrected silently: a secret lists only
//! live versions, and a secret whose current version is soft-deleted is listed as deleted,
//! not live; only [`VaultWriter::recover_deleted`] undeletes it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;
use futures::stream::{self, BoxStream, StreamExt};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::client::{KvClient, KvError, KvErrorKind, MetadataUpdate};
use super::mapping::{
    CONTENT_TYPE_KEY, Collisions, Granularity, NameTemplate, Projected, attributes_at,
    current_keys, data_from_value, full_path, key_versions, metadata_from_tags, plan_names,
    relative_path, secret_value, tags_from_metadata, version_id, version_number,
};
use super::{KvAddress, KvData, KvSecret, KvSnapshot, KvVersion};
use crate::model::ItemKind;
use crate::vault::{
    BackupBlob, BadRequestReason, CertificateBundle, CertificateImport, CertificateProperties,
    ConflictReason, DeletedItem, KeyBundle, KeyProperties, NewSecretVersion, SecretProperties,
    SecretVersionValue, Tags, VaultError, VaultReader, VaultUrl, VaultWriter, WrittenItem,
};

/// The content type of a certificate stored as PEM text (certificate chain and private key).
pub const PEM_CONTENT_TYPE: &str = "application/x-pem-file";

/// The content type of a certificate given as PKCS#12 (standard base64).
pub const PKCS12_CONTENT_TYPE: &str = "application/x-pkcs12";

/// The writes a [`KvStore`] makes: implemented by [`KvClient`] and, in tests, by an in-memory
/// fake. Paths are relative to the mount.
pub trait KvBackend: Send + Sync + 'static {
    /// Writes a new version with check-and-set (`cas`: the version the caller saw as current,
    /// 0 for none); the new version number, or [`KvErrorKind::CasMismatch`].
    fn write(
        &self,
        path: &str,
        data: &KvData,
        cas: u64,
    ) -> impl Future<Output = Result<u64, KvError>> + Send;

    /// Writes the secret's metadata.
    fn write_metadata(
        &self,
        path: &str,
        update: &MetadataUpdate,
    ) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Soft-deletes versions.
    fn delete_versions(
        &self,
        path: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Brings soft-deleted versions back.
    fn undelete_versions(
        &self,
        path: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Reads one secret again (after an undelete, whose data the snapshot does not hold).
    fn read(&self, path: &str) -> impl Future<Output = Result<Option<KvSecret>, KvError>> + Send;
}

impl KvBackend for KvClient {
    fn write(
        &self,
        path: &str,
        data: &KvData,
        cas: u64,
    ) -> impl Future<Output = Result<u64, KvError>> + Send {
        KvClient::write(self, path, data, cas)
    }

    fn write_metadata(
        &self,
        path: &str,
        update: &MetadataUpdate,
    ) -> impl Future<Output = Result<(), KvError>> + Send {
        KvClient::write_metadata(self, path, update)
    }

    fn delete_versions(
        &self,
        path: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<(), KvError>> + Send {
        KvClient::delete_versions(self, path, versions)
    }

    fn undelete_versions(
        &self,
        path: &str,
        versions: &[u64],
    ) -> impl Future<Output = Result<(), KvError>> + Send {
        KvClient::undelete_versions(self, path, versions)
    }

    fn read(&self, path: &str) -> impl Future<Output = Result<Option<KvSecret>, KvError>> + Send {
        KvClient::read_secret(self, path)
    }
}

/// Why a [`KvStore`] cannot be made. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum KvStoreError {
    /// Names that collide, do not fit, or would not read back: nothing may be written.
    #[error("{0}")]
    Names(#[from] Collisions),
    /// Granularity key for a store that would be written.
    #[error(
        "--granularity key makes one Key Vault secret per KV key: it copies out of a KV mount, not into one (a key's secret cannot be written back without the rest of its KV secret)"
    )]
    KeyTarget,
    /// A template parsed for the other granularity.
    #[error(
        "the name template '{template}' is for granularity {template_granularity}, not {granularity}"
    )]
    TemplateMismatch {
        /// The template.
        template: String,
        /// Its granularity.
        template_granularity: Granularity,
        /// The store's.
        granularity: Granularity,
    },
    /// Reading the mount failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl KvStoreError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            KvStoreError::Names(collisions) => Some(collisions.hint().to_owned()),
            KvStoreError::KeyTarget => {
                Some("write into a KV mount with --granularity secret (the default)".to_owned())
            }
            KvStoreError::TemplateMismatch { .. } => None,
            KvStoreError::Kv(err) => err.hint.clone(),
        }
    }
}

/// One projected item: a Key Vault name and the KV secret (and key) it stands for.
#[derive(Debug, Clone)]
struct Item {
    /// The Key Vault name.
    name: String,
    /// The secret's path under the mount.
    path: String,
    /// The key, for granularity key.
    key: Option<String>,
}

/// What the store knows of the mount: the secrets as read (and as written since), and the
/// items they project to.
#[derive(Debug, Default)]
struct State {
    /// Secrets by path under the mount.
    secrets: BTreeMap<String, KvSecret>,
    /// Items by lower-case name (Key Vault names ignore case).
    items: BTreeMap<String, Item>,
    /// What the projection left out, per item, for the command to report.
    notes: Vec<String>,
}

struct Inner<B> {
    url: VaultUrl,
    address: KvAddress,
    granularity: Granularity,
    template: NameTemplate,
    backend: Option<B>,
    state: Mutex<State>,
}

/// A KV v2 mount (or an archive of one) as a store of secrets; see the module documentation.
/// Clones share the same view and backend.
pub struct KvStore<B = KvClient> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for KvStore<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B> std::fmt::Debug for KvStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("address", &self.inner.address)
            .field("granularity", &self.inner.granularity)
            .field("template", &self.inner.template.as_str())
            .field("writable", &self.inner.backend.is_some())
            .finish()
    }
}

impl KvStore<KvClient> {
    /// Reads the whole mount (under the client's address) with up to `concurrency` requests
    /// at once and makes a writable store of it.
    pub async fn open(
        client: KvClient,
        granularity: Granularity,
        template: NameTemplate,
        concurrency: usize,
    ) -> Result<Self, KvStoreError> {
        let snapshot = client.read_all(concurrency).await?;
        Self::new(snapshot, granularity, template, Some(client))
    }

    /// A store that is only read (a KV archive's snapshot): every write is refused.
    pub fn read_only(
        snapshot: KvSnapshot,
        granularity: Granularity,
        template: NameTemplate,
    ) -> Result<Self, KvStoreError> {
        Self::new(snapshot, granularity, template, None)
    }
}

impl<B: KvBackend> KvStore<B> {
    /// A store over `snapshot`, written through `backend` (`None`: read-only). Every secret
    /// under the address is named with `template` first: collisions, names too long and
    /// names that would not read back are [`KvStoreError::Names`], before anything is
    /// written. Granularity key with a backend is refused ([`KvStoreError::KeyTarget`]).
    pub fn new(
        snapshot: KvSnapshot,
        granularity: Granularity,
        template: NameTemplate,
        backend: Option<B>,
    ) -> Result<Self, KvStoreError> {
        if template.granularity() != granularity {
            return Err(KvStoreError::TemplateMismatch {
                template: template.as_str().to_owned(),
                template_granularity: template.granularity(),
                granularity,
            });
        }
        if granularity == Granularity::Key && backend.is_some() {
            return Err(KvStoreError::KeyTarget);
        }
        let address = snapshot.address.clone();
        let url = store_url(&address);
        let mut state = State::default();
        for secret in snapshot.secrets {
            if relative_path(address.prefix(), &secret.path).is_some() {
                state.secrets.insert(secret.path.clone(), secret);
            }
        }
        // (path under the mount, path relative to the address, key)
        let mut wanted: Vec<(String, String, Option<String>)> = Vec::new();
        for secret in state.secrets.values() {
            let relative = relative_path(address.prefix(), &secret.path)
                .expect("kept above")
                .to_owned();
            match granularity {
                Granularity::Secret => wanted.push((secret.path.clone(), relative, None)),
                Granularity::Key => {
                    for key in projected_keys(secret) {
                        wanted.push((secret.path.clone(), relative.clone(), Some(key)));
                    }
                }
            }
        }
        let planned = plan_names(
            &template,
            wanted.iter().map(|(_, r, k)| (r.as_str(), k.as_deref())),
        )?;
        // Names planned without a problem come back one per item, in order.
        for (name, (path, _, _)) in planned.into_iter().zip(wanted) {
            let projected = tags_from_metadata(&state.secrets[&path].custom_metadata, None);
            if let Some(note) = projected.dropped_note(true) {
                state.notes.push(format!("{}: {note}", name.name));
            }
            state.items.insert(
                name.name.to_ascii_lowercase(),
                Item {
                    name: name.name,
                    path,
                    key: name.key,
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                address,
                granularity,
                template,
                backend,
                state: Mutex::new(state),
            }),
        })
    }

    /// The address read.
    pub fn address(&self) -> &KvAddress {
        &self.inner.address
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.inner.granularity
    }

    /// The name template.
    pub fn template(&self) -> &NameTemplate {
        &self.inner.template
    }

    /// What the projection left out so far (tags over Key Vault's limits when read,
    /// `custom_metadata` entries over KV's when written), one line per item, for the report.
    pub fn notes(&self) -> Vec<String> {
        self.lock().notes.clone()
    }

    /// The KV path (under the mount) and key a Key Vault name stands for, for names of items
    /// this store holds.
    pub fn path_of(&self, name: &str) -> Option<(String, Option<String>)> {
        let state = self.lock();
        let item = state.items.get(&name.to_ascii_lowercase())?;
        Some((item.path.clone(), item.key.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data (every update is
        // made in one step): keep going with it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backend(&self) -> Result<&B, VaultError> {
        self.inner
            .backend
            .as_ref()
            .ok_or_else(|| VaultError::Other {
                status: None,
                message: format!(
                    "{} is read from an archive here: it cannot be written",
                    self.inner.address
                ),
            })
    }

    /// The object id of a version: the KV path it is read from.
    fn object_id(&self, item: &Item, version: Option<u64>) -> String {
        let relative = relative_path(self.inner.address.prefix(), &item.path).unwrap_or_default();
        let mut id = format!(
            "{}/{relative}",
            self.inner.url.as_str().trim_end_matches('/')
        );
        if let Some(version) = version {
            id.push_str(&format!("?version={version}"));
        }
        if let Some(key) = &item.key {
            id.push('#');
            id.push_str(key);
        }
        id
    }

    /// The Key Vault versions of an item, oldest first: live ones only; with `only`, just
    /// that one (a secret's other versions are then not projected at all).
    fn versions_of(&self, state: &State, item: &Item, only: Option<u64>) -> Vec<ProjectedVersion> {
        let Some(secret) = state.secrets.get(&item.path) else {
            return Vec::new();
        };
        let tags = tags_from_metadata(&secret.custom_metadata, None).kept;
        match &item.key {
            None => secret
                .versions
                .iter()
                .filter(|v| v.is_live() && only.is_none_or(|n| n == v.version))
                .filter_map(|v| {
                    let value = secret_value(v.data.as_ref()?, &secret.custom_metadata);
                    Some(ProjectedVersion {
                        version: v.version,
                        created: v.created,
                        value: value.value,
                        content_type: value.content_type,
                        tags: tags.clone(),
                    })
                })
                .collect(),
            Some(key) => key_versions(secret, key)
                .into_iter()
                .filter(|v| only.is_none_or(|n| n == v.version))
                .map(|v| ProjectedVersion {
                    version: v.version,
                    created: v.created,
                    value: v.value,
                    content_type: None,
                    tags: tags.clone(),
                })
                .collect(),
        }
    }

    /// The current version of a live item: `None` when its secret's current version is not
    /// live (soft-deleted, destroyed) or, for a key, no longer holds the key.
    fn current_of(&self, state: &State, item: &Item) -> Option<ProjectedVersion> {
        let secret = state.secrets.get(&item.path)?;
        let current = secret.current()?;
        match &item.key {
            None => self.versions_of(state, item, Some(current.version)).pop(),
            Some(key) => {
                current.data.as_ref()?.0.get(key)?;
                // A key's current version is the first of its run of equal values.
                self.versions_of(state, item, None).pop()
            }
        }
    }

    fn properties(&self, item: &Item, version: &ProjectedVersion) -> SecretProperties {
        SecretProperties {
            name: item.name.clone(),
            version: Some(version_id(version.version)),
            id: self.object_id(item, Some(version.version)),
            content_type: version.content_type.clone(),
            tags: version.tags.clone(),
            attributes: attributes_at(version.created),
            managed: false,
            key_id: None,
        }
    }

    /// The item and its secret's soft-deleted current version, when it has one.
    fn deleted_item(&self, state: &State, item: &Item) -> Option<DeletedItem> {
        let secret = state.secrets.get(&item.path)?;
        let current = secret
            .versions
            .iter()
            .rfind(|v| v.version == secret.current_version)?;
        if current.deleted.is_none() || current.destroyed {
            return None;
        }
        let id = self.object_id(item, Some(current.version));
        Some(DeletedItem {
            kind: ItemKind::Secret,
            name: item.name.clone(),
            id: id.clone(),
            recovery_id: Some(id),
            deleted_date: current.deleted,
            scheduled_purge_date: None,
            tags: tags_from_metadata(&secret.custom_metadata, None).kept,
            attributes: attributes_at(current.created),
            managed: false,
        })
    }

    fn item(&self, state: &State, name: &str) -> Result<Item, VaultError> {
        state
            .items
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// The item a written name stands for: an item already held (Key Vault names ignore
    /// case: the held name's path is written), or the path the template reads in the name.
    fn item_for_write(&self, name: &str) -> Result<Item, VaultError> {
        if let Some(item) = self.lock().items.get(&name.to_ascii_lowercase()) {
            return Ok(item.clone());
        }
        let template = &self.inner.template;
        let Some((relative, None)) = template.parse_name(name) else {
            return Err(VaultError::BadRequest {
                reason: BadRequestReason::Other,
                code: "NameOutsideTemplate".to_owned(),
                message: format!(
                    "'{name}' does not fit the name template '{template}': it names no KV path"
                ),
            });
        };
        let rendered = template
            .render(&relative, None)
            .map_err(|err| VaultError::BadRequest {
                reason: BadRequestReason::Other,
                code: "NameOutsideTemplate".to_owned(),
                message: err.to_string(),
            })?;
        Ok(Item {
            name: rendered,
            path: full_path(self.inner.address.prefix(), &relative),
            key: None,
        })
    }

    /// Writes a Key Vault value as a new version of `name`'s KV secret, with check-and-set
    /// against the version this store last saw, then its `custom_metadata` when it changed.
    async fn write_value(
        &self,
        name: &str,
        value: &str,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<WrittenItem, VaultError> {
        let backend = self.backend()?;
        let item = self.item_for_write(name)?;
        let converted = data_from_value(value, content_type);
        let (cas, old_metadata) = {
            let state = self.lock();
            match state.secrets.get(&item.path) {
                Some(secret) => (secret.current_version, Some(secret.custom_metadata.clone())),
                None => (0, None),
            }
        };
        // A JSON object keeps the content type entry an older wrapped version needs.
        let entry = converted.content_type_entry.clone().or_else(|| {
            old_metadata
                .as_ref()
                .and_then(|m| m.get(CONTENT_TYPE_KEY).cloned())
        });
        let metadata: Projected = metadata_from_tags(tags, entry.as_deref());
        let version = backend
            .write(&item.path, &converted.data, cas)
            .await
            .map_err(|err| write_error(&item, cas, err))?;
        // The version is recorded at once: should the metadata write fail, the view still
        // holds what the mount holds, and the next write's check-and-set expects it.
        let now = OffsetDateTime::now_utc();
        {
            let mut state = self.lock();
            let secret = state
                .secrets
                .entry(item.path.clone())
                .or_insert_with(|| new_secret(&item.path, now));
            secret.versions.push(KvVersion {
                version,
                created: Some(now),
                deleted: None,
                destroyed: false,
                data: Some(converted.data),
            });
            secret.current_version = version;
            if secret.oldest_version == 0 {
                secret.oldest_version = version;
            }
            secret.updated = Some(now);
            state
                .items
                .entry(item.name.to_ascii_lowercase())
                .or_insert_with(|| item.clone());
        }
        if old_metadata.unwrap_or_default() != metadata.kept {
            let update = MetadataUpdate {
                custom_metadata: Some(metadata.kept.clone()),
                ..MetadataUpdate::default()
            };
            backend
                .write_metadata(&item.path, &update)
                .await
                .map_err(|err| vault_error(&item, err))?;
        }
        let mut state = self.lock();
        if let Some(note) = metadata.dropped_note(false) {
            state.notes.push(format!("{}: {note}", item.name));
        }
        if let Some(secret) = state.secrets.get_mut(&item.path) {
            secret.custom_metadata = metadata.kept;
        }
        Ok(WrittenItem {
            kind: ItemKind::Secret,
            name: item.name.clone(),
            version: Some(version_id(version)),
            id: self.object_id(&item, Some(version)),
        })
    }
}

/// One Key Vault version of an item.
struct ProjectedVersion {
    version: u64,
    created: Option<OffsetDateTime>,
    value: SecretString,
    content_type: Option<String>,
    tags: Tags,
}

/// The keys of a secret that are items of granularity key: its current keys, or, when its
/// current version is soft-deleted, the keys of its newest readable version (listed as
/// deleted).
fn projected_keys(secret: &KvSecret) -> Vec<String> {
    let current = current_keys(secret);
    if !current.is_empty() || secret.current().is_some() {
        return current.into_iter().collect();
    }
    secret
        .versions
        .iter()
        .rev()
        .find_map(|v| v.data.as_ref())
        .map(|d| d.0.keys().cloned().collect())
        .unwrap_or_default()
}

fn new_secret(path: &str, now: OffsetDateTime) -> KvSecret {
    KvSecret {
        path: path.to_owned(),
        custom_metadata: BTreeMap::new(),
        current_version: 0,
        oldest_version: 0,
        max_versions: 0,
        cas_required: false,
        delete_version_after: "0s".to_owned(),
        created: Some(now),
        updated: Some(now),
        versions: Vec::new(),
    }
}

/// The store's address as a [`VaultUrl`]: the KV address, named by its mount.
fn store_url(address: &KvAddress) -> VaultUrl {
    let url = url::Url::parse(&address.to_string())
        .or_else(|_| address.server().join(&address.full_path()))
        .unwrap_or_else(|_| address.server().clone());
    VaultUrl::for_store(url, address.mount())
}

fn not_found(name: &str) -> VaultError {
    VaultError::NotFound {
        code: "SecretNotFound".to_owned(),
        message: format!("'{name}' is not a live secret of this KV store"),
    }
}

/// A failed KV request as the engine's error, keeping its class: not found, permission,
/// a check-and-set conflict, a network failure (retryable) or anything else.
fn vault_error(item: &Item, err: KvError) -> VaultError {
    let message = match &err.hint {
        Some(hint) => format!("{} ({}): {err}; {hint}", item.name, item.path),
        None => format!("{} ({}): {err}", item.name, item.path),
    };
    match err.kind {
        KvErrorKind::NotFound => VaultError::NotFound {
            code: "NotFound".to_owned(),
            message,
        },
        KvErrorKind::PermissionDenied => VaultError::Forbidden {
            code: "PermissionDenied".to_owned(),
            message,
        },
        KvErrorKind::CasMismatch => VaultError::Conflict {
            reason: ConflictReason::Other("CheckAndSetMismatch".to_owned()),
            message,
        },
        KvErrorKind::Network => VaultError::Transient {
            status: err.status,
            message,
        },
        KvErrorKind::NoCredential
        | KvErrorKind::Sealed
        | KvErrorKind::NoMount
        | KvErrorKind::Other => VaultError::Other {
            status: err.status,
            message,
        },
    }
}

/// A failed check-and-set write: a concurrent change is a conflict, never retried blindly.
fn write_error(item: &Item, cas: u64, err: KvError) -> VaultError {
    if err.is_cas_mismatch() {
        let expected = if cas == 0 {
            "no secret there".to_owned()
        } else {
            format!("version {cas} current")
        };
        return VaultError::Conflict {
            reason: ConflictReason::Other("CheckAndSetMismatch".to_owned()),
            message: format!(
                "{} ({}) changed in the mount since it was read (expected {expected}): a \
                 concurrent change, not overwritten; run again to plan against it",
                item.name, item.path
            ),
        };
    }
    vault_error(item, err)
}

/// What `backup` answers: a KV mount has no native blobs.
fn no_native_backup() -> VaultError {
    VaultError::BadRequest {
        reason: BadRequestReason::Other,
        code: "NoNativeBackup".to_owned(),
        message: "a KV v2 mount has no native backup blobs: its secrets are copied by value"
            .to_owned(),
    }
}

/// What a native restore answers: the blob is refused as by a vault that cannot open it, so
/// the engine writes by value.
fn native_refused() -> VaultError {
    VaultError::BadRequest {
        reason: BadRequestReason::CannotDecryptBackup,
        code: "NoNativeBackup".to_owned(),
        message: "a KV v2 mount takes no native backup blobs (only a Key Vault opens them): \
                  written by value"
            .to_owned(),
    }
}

fn not_a_secret(kind: ItemKind, name: &str) -> VaultError {
    VaultError::NotFound {
        code: "NotFound".to_owned(),
        message: format!(
            "'{name}': a KV store holds secrets only, no {}s",
            kind.as_str()
        ),
    }
}

impl<B: KvBackend> VaultReader for KvStore<B> {
    fn vault_url(&self) -> &VaultUrl {
        &self.inner.url
    }

    fn list_secrets(&self) -> BoxStream<'static, Result<SecretProperties, VaultError>> {
        let state = self.lock();
        let listed: Vec<_> = state
            .items
            .values()
            .filter_map(|item| {
                let current = self.current_of(&state, item)?;
                let mut props = self.properties(item, &current);
                props.version = None;
                Some(Ok(props))
            })
            .collect();
        stream::iter(listed).boxed()
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SecretProperties>, VaultError> {
        let state = self.lock();
        let item = self.item(&state, name)?;
        if self.current_of(&state, &item).is_none() {
            return Err(not_found(name));
        }
        Ok(self
            .versions_of(&state, &item, None)
            .iter()
            .map(|v| self.properties(&item, v))
            .collect())
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretVersionValue, VaultError> {
        let state = self.lock();
        let item = self.item(&state, name)?;
        let found = match version {
            None => self.current_of(&state, &item),
            Some(id) => {
                let wanted = version_number(id).ok_or_else(|| not_found(name))?;
                self.versions_of(&state, &item, Some(wanted)).pop()
            }
        }
        .ok_or_else(|| not_found(name))?;
        Ok(SecretVersionValue {
            properties: self.properties(&item, &found),
            value: found.value,
        })
    }

    fn list_keys(&self) -> BoxStream<'static, Result<KeyProperties, VaultError>> {
        stream::empty().boxed()
    }

    async fn list_key_versions(&self, name: &str) -> Result<Vec<KeyProperties>, VaultError> {
        Err(not_a_secret(ItemKind::Key, name))
    }

    async fn get_key(&self, name: &str, _version: Option<&str>) -> Result<KeyBundle, VaultError> {
        Err(not_a_secret(ItemKind::Key, name))
    }

    async fn get_key_rotation_policy(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        Err(not_a_secret(ItemKind::Key, name))
    }

    fn list_certificates(&self) -> BoxStream<'static, Result<CertificateProperties, VaultError>> {
        stream::empty().boxed()
    }

    async fn list_certificate_versions(
        &self,
        name: &str,
    ) -> Result<Vec<CertificateProperties>, VaultError> {
        Err(not_a_secret(ItemKind::Certificate, name))
    }

    async fn get_certificate(
        &self,
        name: &str,
        _version: Option<&str>,
    ) -> Result<CertificateBundle, VaultError> {
        Err(not_a_secret(ItemKind::Certificate, name))
    }

    async fn get_certificate_policy(&self, name: &str) -> Result<serde_json::Value, VaultError> {
        Err(not_a_secret(ItemKind::Certificate, name))
    }

    async fn backup(&self, _kind: ItemKind, _name: &str) -> Result<BackupBlob, VaultError> {
        Err(no_native_backup())
    }

    fn list_deleted(&self, kind: ItemKind) -> BoxStream<'static, Result<DeletedItem, VaultError>> {
        if kind != ItemKind::Secret {
            return stream::empty().boxed();
        }
        let state = self.lock();
        let deleted: Vec<_> = state
            .items
            .values()
            .filter_map(|item| self.deleted_item(&state, item).map(Ok))
            .collect();
        stream::iter(deleted).boxed()
    }

    async fn get_deleted(&self, kind: ItemKind, name: &str) -> Result<DeletedItem, VaultError> {
        if kind != ItemKind::Secret {
            return Err(not_a_secret(kind, name));
        }
        let state = self.lock();
        let item = self.item(&state, name)?;
        self.deleted_item(&state, &item)
            .ok_or_else(|| not_found(name))
    }
}

impl<B: KvBackend> VaultWriter for KvStore<B> {
    /// A new version of the KV secret the name stands for: the value as KV data
    /// ([`super::mapping::data_from_value`]) and the tags (with the content type entry) as
    /// `custom_metadata`. KV has no `enabled`, `nbf` or `exp`: they are not written.
    async fn set_secret(
        &self,
        name: &str,
        secret: &NewSecretVersion,
    ) -> Result<WrittenItem, VaultError> {
        self.write_value(
            name,
            secret.value.expose_secret(),
            secret.content_type.as_deref(),
            &secret.tags,
        )
        .await
    }

    async fn restore(
        &self,
        _kind: ItemKind,
        _blob: &BackupBlob,
    ) -> Result<WrittenItem, VaultError> {
        Err(native_refused())
    }

    /// Undeletes the soft-deleted current version of the secret and reads it again.
    async fn recover_deleted(&self, kind: ItemKind, name: &str) -> Result<WrittenItem, VaultError> {
        if kind != ItemKind::Secret {
            return Err(not_a_secret(kind, name));
        }
        let backend = self.backend()?;
        let (item, deleted, version) = {
            let state = self.lock();
            let item = self.item(&state, name)?;
            let deleted = self.deleted_item(&state, &item);
            let version = state.secrets.get(&item.path).map(|s| s.current_version);
            (item, deleted, version)
        };
        let (Some(deleted), Some(version)) = (deleted, version) else {
            return Err(not_found(name));
        };
        backend
            .undelete_versions(&item.path, &[version])
            .await
            .map_err(|err| vault_error(&item, err))?;
        let fresh = backend
            .read(&item.path)
            .await
            .map_err(|err| vault_error(&item, err))?;
        let mut state = self.lock();
        match fresh {
            Some(secret) => {
                state.secrets.insert(item.path.clone(), secret);
            }
            None => return Err(not_found(name)),
        }
        Ok(WrittenItem {
            kind: ItemKind::Secret,
            name: item.name.clone(),
            version: Some(version_id(version)),
            id: deleted.id,
        })
    }

    /// Stores the certificate with its private key as PEM text (`{"value": PEM}`, content
    /// type `application/x-pem-file`); a PKCS#12 is converted to PEM first.
    async fn import_certificate(
        &self,
        name: &str,
        certificate: &CertificateImport,
    ) -> Result<WrittenItem, VaultError> {
        let pem = match certificate.content_type.as_str() {
            PEM_CONTENT_TYPE => Zeroizing::new(certificate.value.expose_secret().to_owned()),
            PKCS12_CONTENT_TYPE => pkcs12_to_pem(
                certificate.value.expose_secret(),
                certificate
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret())
                    .unwrap_or_default(),
            )?,
            other => {
                return Err(VaultError::BadRequest {
                    reason: BadRequestReason::Other,
                    code: "BadCertificate".to_owned(),
                    message: format!(
                        "'{name}': a certificate of content type '{other}' cannot be stored \
                         (PEM or PKCS#12 only)"
                    ),
                });
            }
        };
        self.write_value(name, &pem, Some(PEM_CONTENT_TYPE), &certificate.tags)
            .await
    }

    /// Soft-deletes the secret's current version: recoverable in KV (`undelete`).
    async fn soft_delete(&self, kind: ItemKind, name: &str) -> Result<(), VaultError> {
        if kind != ItemKind::Secret {
            return Err(not_a_secret(kind, name));
        }
        let backend = self.backend()?;
        let (item, version) = {
            let state = self.lock();
            let item = self.item(&state, name)?;
            if self.current_of(&state, &item).is_none() {
                return Err(not_found(name));
            }
            let version = state.secrets[&item.path].current_version;
            (item, version)
        };
        backend
            .delete_versions(&item.path, &[version])
            .await
            .map_err(|err| vault_error(&item, err))?;
        let mut state = self.lock();
        if let Some(secret) = state.secrets.get_mut(&item.path)
            && let Some(current) = secret.versions.iter_mut().rfind(|v| v.version == version)
        {
            current.deleted = Some(OffsetDateTime::now_utc());
            current.data = None;
        }
        Ok(())
    }
}

/// A PKCS#12 (standard base64) as PEM text: the private key (PKCS#8), then the certificate
/// chain, leaf first, as Key Vault writes a PEM certificate's secret. The text is wiped when
/// dropped.
pub fn pkcs12_to_pem(pfx_base64: &str, password: &str) -> Result<Zeroizing<String>, VaultError> {
    let refused = |why: &str| VaultError::BadRequest {
        reason: BadRequestReason::Other,
        code: "BadCertificate".to_owned(),
        message: format!("the PKCS#12 certificate cannot be read: {why}"),
    };
    let pfx = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(pfx_base64.trim())
            .map_err(|_| refused("not standard base64"))?,
    );
    let store = p12_keystore::KeyStore::from_pkcs12(&pfx, password)
        .map_err(|_| refused("not PKCS#12, or another password"))?;
    let Some((_, chain)) = store.private_key_chain() else {
        return Err(refused("it holds no private key"));
    };
    let mut pem = Zeroizing::new(String::new());
    pem_block(&mut pem, "PRIVATE KEY", chain.key());
    // The keystore may list a certificate twice (in the key's chain and as an entry of its
    // own): each goes in once, in the chain's order.
    let mut written: Vec<&[u8]> = Vec::new();
    for certificate in chain.chain() {
        let der = certificate.as_der();
        if !written.contains(&der) {
            pem_block(&mut pem, "CERTIFICATE", der);
            written.push(der);
        }
    }
    Ok(pem)
}

/// Appends one PEM block, base64 in lines of 64 characters.
fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kv::mapping;
    use crate::kv::mapping::{JSON_CONTENT_TYPE, MARKER_TAG};

    /// One version in the fake mount.
    #[derive(Clone)]
    struct FakeVersion {
        data: KvData,
        created: i64,
        deleted: bool,
        destroyed: bool,
    }

    #[derive(Clone, Default)]
    struct FakeSecret {
        versions: Vec<FakeVersion>,
        metadata: BTreeMap<String, String>,
    }

    /// A KV mount in memory with KV's check-and-set rule, recording every call.
    #[derive(Default)]
    struct FakeKv {
        secrets: Mutex<BTreeMap<String, FakeSecret>>,
        calls: Mutex<Vec<String>>,
        clock: Mutex<i64>,
        /// Refuse the next metadata write.
        refuse_metadata: Mutex<bool>,
    }

    impl FakeKv {
        fn new() -> Arc<Self> {
            let fake = Self::default();
            *fake.clock.lock().unwrap() = 1_700_000_000;
            Arc::new(fake)
        }

        fn tick(&self) -> i64 {
            let mut clock = self.clock.lock().unwrap();
            *clock += 1;
            *clock
        }

        /// Adds a version, bypassing check-and-set: someone else writing.
        fn put(&self, path: &str, data: serde_json::Value) -> u64 {
            let created = self.tick();
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets.entry(path.to_owned()).or_default();
            secret.versions.push(FakeVersion {
                data: KvData(serde_json::from_value(data).unwrap()),
                created,
                deleted: false,
                destroyed: false,
            });
            secret.versions.len() as u64
        }

        fn set_metadata(&self, path: &str, pairs: &[(&str, &str)]) {
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets.entry(path.to_owned()).or_default();
            secret.metadata = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        }

        fn mark(&self, path: &str, version: u64, deleted: bool, destroyed: bool) {
            let mut secrets = self.secrets.lock().unwrap();
            let v = &mut secrets.get_mut(path).unwrap().versions[version as usize - 1];
            v.deleted |= deleted;
            v.destroyed |= destroyed;
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn data(&self, path: &str) -> Option<KvData> {
            let secrets = self.secrets.lock().unwrap();
            secrets.get(path)?.versions.last().map(|v| v.data.clone())
        }

        fn metadata(&self, path: &str) -> BTreeMap<String, String> {
            let secrets = self.secrets.lock().unwrap();
            secrets
                .get(path)
                .map(|s| s.metadata.clone())
                .unwrap_or_default()
        }

        fn secret(path: &str, fake: &FakeSecret) -> KvSecret {
            let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).ok();
            let versions: Vec<KvVersion> = fake
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| KvVersion {
                    version: i as u64 + 1,
                    created: at(v.created),
                    deleted: v.deleted.then(|| at(v.created + 1)).flatten(),
                    destroyed: v.destroyed,
                    data: (!v.deleted && !v.destroyed).then(|| v.data.clone()),
                })
                .collect();
            KvSecret {
                path: path.to_owned(),
                custom_metadata: fake.metadata.clone(),
                current_version: versions.len() as u64,
                oldest_version: 1,
                max_versions: 0,
                cas_required: false,
                delete_version_after: "0s".to_owned(),
                created: versions.first().and_then(|v| v.created),
                updated: versions.last().and_then(|v| v.created),
                versions,
            }
        }

        /// The mount as `KvClient::read_all` reads it under `address`.
        fn snapshot(&self, address: &str) -> KvSnapshot {
            let address = KvAddress::parse(address).unwrap();
            let secrets = self.secrets.lock().unwrap();
            KvSnapshot {
                secrets: secrets
                    .iter()
                    .filter(|(path, _)| relative_path(address.prefix(), path).is_some())
                    .map(|(path, s)| Self::secret(path, s))
                    .collect(),
                address,
            }
        }
    }

    fn kv_error(kind: KvErrorKind, message: &str) -> KvError {
        KvError {
            message: message.to_owned(),
            hint: None,
            status: None,
            kind,
        }
    }

    impl KvBackend for Arc<FakeKv> {
        async fn write(&self, path: &str, data: &KvData, cas: u64) -> Result<u64, KvError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("write {path} cas={cas}"));
            let created = self.tick();
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets.entry(path.to_owned()).or_default();
            if secret.versions.len() as u64 != cas {
                return Err(kv_error(
                    KvErrorKind::CasMismatch,
                    "check-and-set parameter did not match the current version",
                ));
            }
            secret.versions.push(FakeVersion {
                data: data.clone(),
                created,
                deleted: false,
                destroyed: false,
            });
            Ok(secret.versions.len() as u64)
        }

        async fn write_metadata(&self, path: &str, update: &MetadataUpdate) -> Result<(), KvError> {
            self.calls.lock().unwrap().push(format!("metadata {path}"));
            if std::mem::take(&mut *self.refuse_metadata.lock().unwrap()) {
                return Err(kv_error(KvErrorKind::PermissionDenied, "permission denied"));
            }
            // KV's rule: every custom_metadata value is 1 to 512 bytes.
            if let Some(metadata) = &update.custom_metadata
                && metadata.values().any(|v| v.is_empty() || v.len() > 512)
            {
                return Err(kv_error(
                    KvErrorKind::Other,
                    "custom_metadata validation failed",
                ));
            }
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets.entry(path.to_owned()).or_default();
            if let Some(metadata) = &update.custom_metadata {
                secret.metadata = metadata.clone();
            }
            Ok(())
        }

        async fn delete_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("delete {path} {versions:?}"));
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets
                .get_mut(path)
                .ok_or_else(|| kv_error(KvErrorKind::NotFound, "no such secret"))?;
            for v in versions {
                secret.versions[*v as usize - 1].deleted = true;
            }
            Ok(())
        }

        async fn undelete_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("undelete {path} {versions:?}"));
            let mut secrets = self.secrets.lock().unwrap();
            let secret = secrets
                .get_mut(path)
                .ok_or_else(|| kv_error(KvErrorKind::NotFound, "no such secret"))?;
            for v in versions {
                secret.versions[*v as usize - 1].deleted = false;
            }
            Ok(())
        }

        async fn read(&self, path: &str) -> Result<Option<KvSecret>, KvError> {
            self.calls.lock().unwrap().push(format!("read {path}"));
            let secrets = self.secrets.lock().unwrap();
            Ok(secrets.get(path).map(|s| FakeKv::secret(path, s)))
        }
    }

    const ADDRESS: &str = "bao+http://127.0.0.1:8200/secret/team";

    /// A mount with secrets inside and outside the address's prefix, live, soft-deleted,
    /// destroyed, and one coldvault wrote from a Key Vault.
    fn seeded() -> Arc<FakeKv> {
        let fake = FakeKv::new();
        fake.put("team/db", json!({"user": "app", "pw": "one"}));
        fake.put("team/db", json!({"user": "app", "pw": "two"}));
        fake.put("team/db", json!({"user": "app", "pw": "three"}));
        fake.mark("team/db", 2, true, false);
        fake.put("team/app/api", json!({"value": "tok-1"}));
        fake.set_metadata(
            "team/app/api",
            &[(CONTENT_TYPE_KEY, "text/plain"), ("owner", "ops")],
        );
        fake.put("team/gone", json!({"k": "v"}));
        fake.put("team/gone", json!({"k": "w"}));
        fake.mark("team/gone", 2, true, false);
        fake.put("team/burnt", json!({"k": "v"}));
        fake.mark("team/burnt", 1, false, true);
        fake.put("other/x", json!({"k": "v"}));
        fake
    }

    fn secret_store(fake: &Arc<FakeKv>) -> KvStore<Arc<FakeKv>> {
        KvStore::new(
            fake.snapshot(ADDRESS),
            Granularity::Secret,
            NameTemplate::default_for(Granularity::Secret),
            Some(Arc::clone(fake)),
        )
        .unwrap()
    }

    async fn names<B: KvBackend>(store: &KvStore<B>) -> Vec<String> {
        store
            .list_secrets()
            .map(|p| p.unwrap().name)
            .collect()
            .await
    }

    async fn value<B: KvBackend>(store: &KvStore<B>, name: &str) -> (String, Option<String>) {
        let got = store.get_secret(name, None).await.unwrap();
        (
            got.value.expose_secret().to_owned(),
            got.properties.content_type,
        )
    }

    #[tokio::test]
    async fn a_mount_reads_as_one_secret_per_kv_secret() {
        let fake = seeded();
        let store = secret_store(&fake);
        assert_eq!(store.vault_url().name(), "secret");
        assert_eq!(store.vault_url().as_str(), ADDRESS);
        // Outside the prefix, soft-deleted and destroyed current versions: not listed live.
        assert_eq!(names(&store).await, ["app--api", "db"]);

        let (db, content_type) = value(&store, "db").await;
        assert_eq!(db, r#"{"pw":"three","user":"app"}"#);
        assert_eq!(content_type.as_deref(), Some(JSON_CONTENT_TYPE));
        // Names ignore case, as in Key Vault.
        assert_eq!(value(&store, "DB").await.0, db);
        let versions = store.list_secret_versions("db").await.unwrap();
        let ids: Vec<_> = versions
            .iter()
            .map(|v| v.version.clone().unwrap())
            .collect();
        assert_eq!(ids, [version_id(1), version_id(3)]);
        assert!(versions.iter().all(|v| v.attributes.enabled == Some(true)));
        let first = store.get_secret("db", Some(&version_id(1))).await.unwrap();
        assert_eq!(first.value.expose_secret(), r#"{"pw":"one","user":"app"}"#);
        assert_eq!(
            first.properties.attributes.created,
            first.properties.attributes.updated
        );
        // The soft-deleted version is not there to read.
        assert!(
            store
                .get_secret("db", Some(&version_id(2)))
                .await
                .unwrap_err()
                .is_not_found()
        );

        // Written from a Key Vault: its string and content type; the entry is not a tag.
        let api = store.get_secret("app--api", None).await.unwrap();
        assert_eq!(api.value.expose_secret(), "tok-1");
        assert_eq!(api.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            api.properties.tags.get("owner").map(String::as_str),
            Some("ops")
        );
        assert!(!api.properties.tags.contains_key(CONTENT_TYPE_KEY));
        assert_eq!(api.properties.id, format!("{ADDRESS}/app/api?version=1"));

        // The soft-deleted current version lists as deleted; a destroyed one as nothing.
        let deleted: Vec<DeletedItem> = store
            .list_deleted(ItemKind::Secret)
            .map(|d| d.unwrap())
            .collect()
            .await;
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].name, "gone");
        assert!(deleted[0].deleted_date.is_some());
        assert!(store.get_deleted(ItemKind::Secret, "gone").await.is_ok());
        assert!(
            store
                .get_secret("gone", None)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            store
                .get_secret("burnt", None)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            store
                .get_deleted(ItemKind::Secret, "burnt")
                .await
                .unwrap_err()
                .is_not_found()
        );

        // Secrets only, and no native blobs.
        assert_eq!(store.list_keys().count().await, 0);
        assert_eq!(store.list_certificates().count().await, 0);
        assert_eq!(store.list_deleted(ItemKind::Key).count().await, 0);
        let err = store.backup(ItemKind::Secret, "db").await.unwrap_err();
        assert!(err.to_string().contains("no native backup blobs"), "{err}");
        let err = store
            .restore(ItemKind::Secret, &BackupBlob(vec![1]))
            .await
            .unwrap_err();
        assert!(err.is_cannot_decrypt_backup(), "{err:?}");
        assert_eq!(
            store.path_of("App--Api"),
            Some(("team/app/api".to_owned(), None))
        );
    }

    #[tokio::test]
    async fn a_mount_reads_as_one_secret_per_key() {
        let fake = seeded();
        let store = KvStore::new(
            fake.snapshot(ADDRESS),
            Granularity::Key,
            NameTemplate::default_for(Granularity::Key),
            None::<Arc<FakeKv>>,
        )
        .unwrap();
        assert_eq!(
            names(&store).await,
            ["app--api--value", "db--pw", "db--user"]
        );
        let pw = store.list_secret_versions("db--pw").await.unwrap();
        let ids: Vec<_> = pw.iter().map(|v| v.version.clone().unwrap()).collect();
        assert_eq!(ids, [version_id(1), version_id(3)]);
        assert_eq!(value(&store, "db--pw").await, ("three".to_owned(), None));
        let old = store
            .get_secret("db--pw", Some(&version_id(1)))
            .await
            .unwrap();
        assert_eq!(old.value.expose_secret(), "one");
        // "user" never changed: one version, the first.
        let user = store.list_secret_versions("db--user").await.unwrap();
        assert_eq!(user.len(), 1);
        assert_eq!(user[0].version.as_deref(), Some(version_id(1).as_str()));
        // A key of a soft-deleted secret lists as deleted.
        let deleted: Vec<String> = store
            .list_deleted(ItemKind::Secret)
            .map(|d| d.unwrap().name)
            .collect()
            .await;
        assert_eq!(deleted, ["gone--k"]);
        // No backend: nothing can be written.
        let write = NewSecretVersion {
            value: SecretString::from("x"),
            content_type: None,
            tags: Tags::new(),
            attributes: Default::default(),
        };
        let err = store.set_secret("db--pw", &write).await.unwrap_err();
        assert!(err.to_string().contains("cannot be written"), "{err}");
    }

    #[test]
    fn stores_that_cannot_be_made_say_why_before_any_write() {
        let fake = FakeKv::new();
        fake.put("team/DB", json!({"a": "1"}));
        fake.put("team/db", json!({"a": "2"}));
        let err = KvStore::new(
            fake.snapshot(ADDRESS),
            Granularity::Secret,
            NameTemplate::default_for(Granularity::Secret),
            Some(Arc::clone(&fake)),
        )
        .unwrap_err();
        assert!(matches!(err, KvStoreError::Names(_)));
        assert!(err.to_string().contains("'DB' ← 'DB', 'db'"), "{err}");
        assert!(err.hint().unwrap().contains("nothing was written"));
        assert!(fake.calls().is_empty());

        let fine = FakeKv::new();
        fine.put("team/db", json!({"a": "1"}));
        let err = KvStore::new(
            fine.snapshot(ADDRESS),
            Granularity::Key,
            NameTemplate::default_for(Granularity::Key),
            Some(Arc::clone(&fine)),
        )
        .unwrap_err();
        assert!(matches!(err, KvStoreError::KeyTarget), "{err}");
        let err = KvStore::new(
            fine.snapshot(ADDRESS),
            Granularity::Key,
            NameTemplate::default_for(Granularity::Secret),
            None::<Arc<FakeKv>>,
        )
        .unwrap_err();
        assert!(
            matches!(err, KvStoreError::TemplateMismatch { .. }),
            "{err}"
        );
    }

    fn version_of(
        value: &str,
        content_type: Option<&str>,
        tags: &[(&str, &str)],
    ) -> NewSecretVersion {
        NewSecretVersion {
            value: SecretString::from(value.to_owned()),
            content_type: content_type.map(str::to_owned),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            attributes: Default::default(),
        }
    }

    #[tokio::test]
    async fn writes_use_check_and_set_and_read_back() {
        let fake = seeded();
        let store = secret_store(&fake);

        // A new name: its path is read from the name; cas 0; the content type is kept.
        let written = store
            .set_secret(
                "new-secret",
                &version_of(
                    "v1",
                    Some("text/plain"),
                    &[(MARKER_TAG, "https://kv.vault.azure.net/")],
                ),
            )
            .await
            .unwrap();
        assert_eq!(written.version.as_deref(), Some(version_id(1).as_str()));
        assert_eq!(
            fake.data("team/new-secret").unwrap(),
            KvData(serde_json::from_value(json!({"value": "v1"})).unwrap())
        );
        assert_eq!(
            fake.metadata("team/new-secret"),
            BTreeMap::from([
                (CONTENT_TYPE_KEY.to_owned(), "text/plain".to_owned()),
                (
                    MARKER_TAG.to_owned(),
                    "https://kv.vault.azure.net/".to_owned()
                ),
            ])
        );
        assert_eq!(
            value(&store, "new-secret").await,
            ("v1".to_owned(), Some("text/plain".to_owned()))
        );
        let listed = store.get_secret("new-secret", None).await.unwrap();
        assert_eq!(
            listed.properties.tags.get(MARKER_TAG).map(String::as_str),
            Some("https://kv.vault.azure.net/")
        );

        // The next version: cas 1; the metadata did not change, so it is not written again.
        store
            .set_secret(
                "NEW-secret",
                &version_of(
                    "v2",
                    Some("text/plain"),
                    &[(MARKER_TAG, "https://kv.vault.azure.net/")],
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            fake.calls(),
            [
                "write team/new-secret cas=0",
                "metadata team/new-secret",
                "write team/new-secret cas=1",
            ]
        );
        assert_eq!(value(&store, "new-secret").await.0, "v2");
        assert_eq!(
            store
                .list_secret_versions("new-secret")
                .await
                .unwrap()
                .len(),
            2
        );

        // A JSON object becomes the KV data itself, over the version the store read (3).
        store
            .set_secret(
                "db",
                &version_of(
                    r#"{"pw":"four","user":"app"}"#,
                    Some(JSON_CONTENT_TYPE),
                    &[],
                ),
            )
            .await
            .unwrap();
        assert_eq!(fake.calls().last().unwrap(), "write team/db cas=3");
        assert_eq!(
            fake.data("team/db").unwrap(),
            KvData(serde_json::from_value(json!({"pw": "four", "user": "app"})).unwrap())
        );
        // A fresh read of the mount sees what the store's own view shows.
        let again = secret_store(&fake);
        for name in ["db", "new-secret", "app--api"] {
            assert_eq!(
                value(&again, name).await,
                value(&store, name).await,
                "{name}"
            );
        }

        // A name the template cannot read is refused without a request.
        let custom = KvStore::new(
            fake.snapshot(ADDRESS),
            Granularity::Secret,
            NameTemplate::parse("kv-{path}", Granularity::Secret).unwrap(),
            Some(Arc::clone(&fake)),
        )
        .unwrap();
        let calls = fake.calls().len();
        let err = custom
            .set_secret("db", &version_of("x", None, &[]))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not fit the name template 'kv-{path}'"),
            "{err}"
        );
        assert_eq!(fake.calls().len(), calls);
    }

    #[tokio::test]
    async fn a_version_written_before_its_metadata_failed_is_still_seen() {
        let fake = seeded();
        let store = secret_store(&fake);
        *fake.refuse_metadata.lock().unwrap() = true;
        let err = store
            .set_secret("fresh", &version_of("v1", Some("text/plain"), &[]))
            .await
            .unwrap_err();
        assert!(err.is_forbidden(), "{err:?}");
        // The mount holds version 1 (its content type entry missing): so does the view, and
        // the next write expects it rather than failing as a concurrent change.
        assert_eq!(
            value(&store, "fresh").await,
            (
                r#"{"value":"v1"}"#.to_owned(),
                Some(JSON_CONTENT_TYPE.to_owned())
            )
        );
        store
            .set_secret("fresh", &version_of("v1", Some("text/plain"), &[]))
            .await
            .unwrap();
        assert_eq!(
            fake.calls(),
            [
                "write team/fresh cas=0",
                "metadata team/fresh",
                "write team/fresh cas=1",
                "metadata team/fresh",
            ]
        );
        assert_eq!(
            value(&store, "fresh").await,
            ("v1".to_owned(), Some("text/plain".to_owned()))
        );
        // A JSON object with no tags over a new path writes no metadata at all.
        store
            .set_secret(
                "obj",
                &version_of(r#"{"a":"b"}"#, Some(JSON_CONTENT_TYPE), &[]),
            )
            .await
            .unwrap();
        assert_eq!(fake.calls().last().unwrap(), "write team/obj cas=0");
    }

    #[tokio::test]
    async fn a_concurrent_change_is_a_conflict_not_a_lost_update() {
        let fake = seeded();
        let store = secret_store(&fake);
        // Someone writes version 4 after the store read version 3.
        fake.put("team/db", json!({"pw": "theirs"}));
        let err = store
            .set_secret("db", &version_of("mine", None, &[]))
            .await
            .unwrap_err();
        assert_eq!(
            err.conflict_reason(),
            Some(&ConflictReason::Other("CheckAndSetMismatch".to_owned()))
        );
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("concurrent change") && text.contains("version 3"),
            "{text}"
        );
        assert!(!text.contains("mine"));
        // Their version stands; nothing else was written.
        assert_eq!(
            fake.data("team/db").unwrap(),
            KvData(serde_json::from_value(json!({"pw": "theirs"})).unwrap())
        );
        assert_eq!(fake.calls(), ["write team/db cas=3"]);
        // A secret created by someone else since the read: cas 0 fails the same way.
        fake.put("team/fresh", json!({"a": "b"}));
        let err = store
            .set_secret("fresh", &version_of("mine", None, &[]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("expected no secret there"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn deletes_are_soft_and_recovered_by_undelete() {
        let fake = seeded();
        let store = secret_store(&fake);
        store.soft_delete(ItemKind::Secret, "db").await.unwrap();
        assert_eq!(fake.calls(), ["delete team/db [3]"]);
        assert_eq!(names(&store).await, ["app--api"]);
        assert!(
            store
                .get_secret("db", None)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(store.get_deleted(ItemKind::Secret, "db").await.is_ok());
        // Deleting it again finds nothing live.
        assert!(
            store
                .soft_delete(ItemKind::Secret, "db")
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            store
                .soft_delete(ItemKind::Key, "db")
                .await
                .unwrap_err()
                .is_not_found()
        );

        let recovered = store.recover_deleted(ItemKind::Secret, "db").await.unwrap();
        assert_eq!(recovered.version.as_deref(), Some(version_id(3).as_str()));
        assert_eq!(
            fake.calls()[1..],
            ["undelete team/db [3]".to_owned(), "read team/db".to_owned()]
        );
        assert_eq!(
            value(&store, "db").await.0,
            r#"{"pw":"three","user":"app"}"#
        );
        assert_eq!(store.list_deleted(ItemKind::Secret).count().await, 1);
        // The earlier soft-deleted version 2 stays deleted: nothing is undeleted silently.
        assert_eq!(store.list_secret_versions("db").await.unwrap().len(), 2);
        assert!(
            store
                .recover_deleted(ItemKind::Secret, "db")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn certificates_are_stored_as_pem() {
        let fake = FakeKv::new();
        let store = KvStore::new(
            fake.snapshot(ADDRESS),
            Granularity::Secret,
            NameTemplate::default_for(Granularity::Secret),
            Some(Arc::clone(&fake)),
        )
        .unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["web.example".to_owned()]).unwrap();
        let key_der = certified.key_pair.serialize_der();
        let cert_der = certified.cert.der().to_vec();
        let chain = p12_keystore::PrivateKeyChain::new(
            key_der.clone(),
            [1u8; 20],
            vec![p12_keystore::Certificate::from_der(&cert_der).unwrap()],
        );
        let mut p12 = p12_keystore::KeyStore::new();
        p12.add_entry("1", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let pfx = p12.writer("pw").write().unwrap();
        let import = CertificateImport {
            value: SecretString::from(base64::engine::general_purpose::STANDARD.encode(&pfx)),
            content_type: PKCS12_CONTENT_TYPE.to_owned(),
            password: Some(SecretString::from("pw")),
            policy: None,
            tags: Tags::from([("env".to_owned(), "prod".to_owned())]),
            attributes: Default::default(),
        };
        store.import_certificate("web", &import).await.unwrap();
        let (pem, content_type) = value(&store, "web").await;
        assert_eq!(content_type.as_deref(), Some(PEM_CONTENT_TYPE));
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{}",
            &pem[..40]
        );
        let blocks: Vec<(String, Vec<u8>)> = pem
            .split("-----BEGIN ")
            .skip(1)
            .map(|block| {
                let (label, rest) = block.split_once("-----\n").unwrap();
                let body: String = rest
                    .lines()
                    .take_while(|l| !l.starts_with("-----END"))
                    .collect();
                (
                    label.to_owned(),
                    base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            blocks,
            [
                ("PRIVATE KEY".to_owned(), key_der),
                ("CERTIFICATE".to_owned(), cert_der)
            ]
        );
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(
            fake.metadata("team/web")
                .get(CONTENT_TYPE_KEY)
                .map(String::as_str),
            Some(PEM_CONTENT_TYPE)
        );
        // PEM is stored as given; anything else is refused clearly.
        let pem_import = CertificateImport {
            value: SecretString::from(pem.clone()),
            content_type: PEM_CONTENT_TYPE.to_owned(),
            password: None,
            ..import.clone()
        };
        store.import_certificate("web2", &pem_import).await.unwrap();
        assert_eq!(value(&store, "web2").await.0, pem);
        let wrong_password = CertificateImport {
            password: Some(SecretString::from("nope")),
            ..import.clone()
        };
        let err = store
            .import_certificate("web3", &wrong_password)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("another password"), "{err}");
        let odd = CertificateImport {
            content_type: "application/octet-stream".to_owned(),
            ..import
        };
        assert!(store.import_certificate("web4", &odd).await.is_err());
    }

    #[test]
    fn tags_past_key_vaults_limit_are_reported() {
        let fake = FakeKv::new();
        fake.put("team/wide", json!({"a": "1"}));
        let pairs: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i:02}"), "v".to_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fake.set_metadata("team/wide", &refs);
        let store = secret_store(&fake);
        let notes = store.notes();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with(
                "wide: 6 custom_metadata entries not copied: Key Vault allows 15 tags"
            ),
            "{}",
            notes[0]
        );
    }

    #[tokio::test]
    async fn debug_and_errors_never_show_values() {
        let fake = seeded();
        fake.put("team/canary", json!({"pw": "canary-51a7"}));
        let store = secret_store(&fake);
        let got = store.get_secret("canary", None).await.unwrap();
        assert!(!format!("{store:?} {got:?}").contains("canary-51a7"));
        fake.put("team/canary", json!({"pw": "other"}));
        let err = store
            .set_secret("canary", &version_of("canary-51a7", None, &[]))
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("canary-51a7"));
    }

    /// The engine copies a live store into a KV mount through the same plan and apply as a
    /// restore; run again against a fresh read of the mount, it plans nothing.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_engine_copies_into_a_mount_and_a_rerun_plans_nothing() {
        use crate::engine::memory::MemoryStore;
        use crate::engine::restore::apply::Outcome;
        use crate::engine::restore::plan::{Mode, OnConflict, Policy};
        use crate::engine::tests::{apply_items, capture_all, plan_against};

        let source = MemoryStore::new("source");
        source.put("db-password", "hunter2");
        source.put("api", r#"{"token":"t"}"#);
        source.put("api", "second");
        source.put("cfg", "plain text");

        let policy = Policy {
            mode: Mode::Auto,
            on_conflict: OnConflict::Overwrite,
            recover_deleted: false,
        };
        let fake = FakeKv::new();
        fake.put("team/cfg", json!({"value": "old"}));
        fake.set_metadata("team/cfg", &[(CONTENT_TYPE_KEY, mapping::NO_CONTENT_TYPE)]);
        let target = secret_store(&fake);
        let items = capture_all(&source, true).await;
        let heads: Vec<_> = items.iter().map(|i| i.head.clone()).collect();
        let lines = plan_against(&target, &heads, policy).await;
        let actions: Vec<&str> = lines.iter().map(|l| l.action.as_str()).collect();
        assert_eq!(actions, ["create", "overwrite", "create"]);

        let outcomes = apply_items(&target, items, &lines, policy.mode).await;
        for (_, outcome) in &outcomes {
            assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
        }
        // Every version, oldest first; the blob refused, so written by value.
        assert_eq!(
            fake.calls(),
            [
                "write team/api cas=0",
                "metadata team/api",
                "write team/api cas=1",
                "write team/cfg cas=1",
                "write team/db-password cas=0",
                "metadata team/db-password",
            ]
        );
        assert_eq!(
            fake.data("team/api").unwrap(),
            KvData(serde_json::from_value(json!({"value": "second"})).unwrap())
        );

        // A new run reads the mount again: nothing to do.
        let rerun = secret_store(&fake);
        let items = capture_all(&source, true).await;
        let heads: Vec<_> = items.iter().map(|i| i.head.clone()).collect();
        let lines = plan_against(&rerun, &heads, policy).await;
        let actions: Vec<&str> = lines.iter().map(|l| l.action.as_str()).collect();
        assert_eq!(actions, ["skip", "skip", "skip"], "{lines:?}");
        assert_eq!(value(&rerun, "db-password").await.0, "hunter2");
    }
}
