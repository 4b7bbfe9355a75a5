//! An in-memory store of secrets for the engine's tests: implements the store traits
//! ([`VaultReader`], [`VaultWriter`]) without a server, so plan, apply and streaming are
//! tested on their own. Keys and certificates are always absent; a "native blob" is this
//! store's own JSON (every version of one secret), refused with Key Vault's "Cannot decrypt
//! backup blob" when it names another store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use age::secrecy::{ExposeSecret, SecretString};
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::model::ItemKind;
use crate::vault::{
    Attributes, BackupBlob, BadRequestReason, CertificateBundle, CertificateImport,
    CertificateProperties, DeletedItem, KeyBundle, KeyProperties, NewSecretVersion,
    SecretProperties, SecretVersionValue, VaultError, VaultReader, VaultUrl, VaultWriter,
    WrittenItem,
};

/// One stored secret version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredVersion {
    version: String,
    /// `updated`, in seconds since the epoch: each write a second after the previous one.
    updated: i64,
    value: String,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
}

/// A blob of this store: every version of one secret, and the store it came from.
#[derive(Debug, Serialize, Deserialize)]
struct Blob {
    store: String,
    name: String,
    versions: Vec<StoredVersion>,
}

/// An in-memory secret store. Clones share the same secrets.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    url: VaultUrl,
    id: String,
    secrets: Arc<Mutex<BTreeMap<String, Vec<StoredVersion>>>>,
    writes: Arc<Mutex<Vec<String>>>,
    /// A secret and a value written as a new version when the next backup is asked for:
    /// a rotation between the listing and the capture.
    rotate_on_backup: Arc<Mutex<Option<(String, String)>>>,
    clock: Arc<Mutex<i64>>,
}

impl MemoryStore {
    /// An empty store; `id` tells its blobs from other stores'.
    pub fn new(id: &str) -> Self {
        Self {
            url: VaultUrl::parse(&format!("https://{id}.vault.azure.net/")).expect("url"),
            id: id.to_owned(),
            secrets: Arc::default(),
            writes: Arc::default(),
            rotate_on_backup: Arc::default(),
            clock: Arc::new(Mutex::new(1_700_000_000)),
        }
    }

    /// Adds a version of `name` holding `value`.
    pub fn put(&self, name: &str, value: &str) -> String {
        let updated = {
            let mut clock = self.clock.lock().expect("lock");
            *clock += 1;
            *clock
        };
        let mut secrets = self.secrets.lock().expect("lock");
        let versions = secrets.entry(name.to_owned()).or_default();
        let version = format!("{:032x}", versions.len() + 1);
        versions.push(StoredVersion {
            version: version.clone(),
            updated,
            value: value.to_owned(),
            content_type: None,
            tags: BTreeMap::new(),
        });
        version
    }

    /// Writes `value` as a new version of `name` when the next native backup is asked for.
    pub fn rotate_on_next_backup(&self, name: &str, value: &str) {
        *self.rotate_on_backup.lock().expect("lock") = Some((name.to_owned(), value.to_owned()));
    }

    /// The current value of `name`.
    pub fn value(&self, name: &str) -> Option<String> {
        let secrets = self.secrets.lock().expect("lock");
        secrets.get(name)?.last().map(|v| v.value.clone())
    }

    /// Every write so far (`set NAME`, `restore NAME`), in order.
    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().expect("lock").clone()
    }

    /// A native blob of `name` as this store makes them.
    pub fn blob(&self, name: &str) -> Vec<u8> {
        let secrets = self.secrets.lock().expect("lock");
        serde_json::to_vec(&Blob {
            store: self.id.clone(),
            name: name.to_owned(),
            versions: secrets.get(name).cloned().unwrap_or_default(),
        })
        .expect("json")
    }

    fn properties(&self, name: &str, version: &StoredVersion) -> SecretProperties {
        SecretProperties {
            name: name.to_owned(),
            version: Some(version.version.clone()),
            id: format!("{}secrets/{name}/{}", self.url, version.version),
            content_type: version.content_type.clone(),
            tags: version.tags.clone(),
            attributes: Attributes {
                updated: time::OffsetDateTime::from_unix_timestamp(version.updated).ok(),
                ..Attributes::default()
            },
            managed: false,
            key_id: None,
        }
    }
}

fn not_found(what: &str) -> VaultError {
    VaultError::NotFound {
        code: "NotFound".to_owned(),
        message: format!("{what} not found"),
    }
}

impl VaultReader for MemoryStore {
    fn vault_url(&self) -> &VaultUrl {
        &self.url
    }

    fn list_secrets(&self) -> BoxStream<'static, Result<SecretProperties, VaultError>> {
        let secrets = self.secrets.lock().expect("lock");
        let listed: Vec<_> = secrets
            .iter()
            .filter_map(|(name, versions)| {
                let mut props = self.properties(name, versions.last()?);
                props.version = None;
                Some(Ok(props))
            })
            .collect();
        stream::iter(listed).boxed()
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SecretProperties>, VaultError> {
        let secrets = self.secrets.lock().expect("lock");
        let versions = secrets.get(name).ok_or_else(|| not_found(name))?;
        Ok(versions.iter().map(|v| self.properties(name, v)).collect())
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretVersionValue, VaultError> {
        let secrets = self.secrets.lock().expect("lock");
        let versions = secrets.get(name).ok_or_else(|| not_found(name))?;
        let found = match version {
            Some(wanted) => versions.iter().find(|v| v.version == wanted),
            None => versions.last(),
        }
        .ok_or_else(|| not_found(name))?;
        Ok(SecretVersionValue {
            properties: self.properties(name, found),
            value: SecretString::from(found.value.clone()),
        })
    }

    fn list_keys(&self) -> BoxStream<'static, Result<KeyProperties, VaultError>> {
        stream::empty().boxed()
    }

    async fn list_key_versions(&self, name: &str) -> Result<Vec<KeyProperties>, VaultError> {
        Err(not_found(name))
    }

    async fn get_key(&self, name: &str, _version: Option<&str>) -> Result<KeyBundle, VaultError> {
        Err(not_found(name))
    }

    async fn get_key_rotation_policy(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        Err(not_found(name))
    }

    fn list_certificates(&self) -> BoxStream<'static, Result<CertificateProperties, VaultError>> {
        stream::empty().boxed()
    }

    async fn list_certificate_versions(
        &self,
        name: &str,
    ) -> Result<Vec<CertificateProperties>, VaultError> {
        Err(not_found(name))
    }

    async fn get_certificate(
        &self,
        name: &str,
        _version: Option<&str>,
    ) -> Result<CertificateBundle, VaultError> {
        Err(not_found(name))
    }

    async fn get_certificate_policy(&self, name: &str) -> Result<serde_json::Value, VaultError> {
        Err(not_found(name))
    }

    async fn backup(&self, kind: ItemKind, name: &str) -> Result<BackupBlob, VaultError> {
        let rotation = self.rotate_on_backup.lock().expect("lock").take();
        if let Some((rotated, value)) = rotation {
            self.put(&rotated, &value);
        }
        if kind != ItemKind::Secret || self.value(name).is_none() {
            return Err(not_found(name));
        }
        Ok(BackupBlob(self.blob(name)))
    }

    fn list_deleted(&self, _kind: ItemKind) -> BoxStream<'static, Result<DeletedItem, VaultError>> {
        stream::empty().boxed()
    }

    async fn get_deleted(&self, _kind: ItemKind, name: &str) -> Result<DeletedItem, VaultError> {
        Err(not_found(name))
    }
}

impl VaultWriter for MemoryStore {
    async fn set_secret(
        &self,
        name: &str,
        secret: &NewSecretVersion,
    ) -> Result<WrittenItem, VaultError> {
        let version = self.put(name, secret.value.expose_secret());
        self.writes
            .lock()
            .expect("lock")
            .push(format!("set {name}"));
        Ok(WrittenItem {
            kind: ItemKind::Secret,
            name: name.to_owned(),
            version: Some(version),
            id: String::new(),
        })
    }

    async fn restore(&self, kind: ItemKind, blob: &BackupBlob) -> Result<WrittenItem, VaultError> {
        let refused = || VaultError::BadRequest {
            reason: BadRequestReason::CannotDecryptBackup,
            code: "BadParameter".to_owned(),
            message: "Cannot decrypt backup blob".to_owned(),
        };
        let blob: Blob = serde_json::from_slice(&blob.0).map_err(|_| refused())?;
        if kind != ItemKind::Secret || blob.store != self.id {
            return Err(refused());
        }
        let mut secrets = self.secrets.lock().expect("lock");
        if secrets.contains_key(&blob.name) {
            return Err(VaultError::Conflict {
                reason: crate::vault::ConflictReason::Exists,
                message: "exists".to_owned(),
            });
        }
        let version = blob.versions.last().map(|v| v.version.clone());
        secrets.insert(blob.name.clone(), blob.versions);
        self.writes
            .lock()
            .expect("lock")
            .push(format!("restore {}", blob.name));
        Ok(WrittenItem {
            kind,
            name: blob.name,
            version,
            id: String::new(),
        })
    }

    async fn recover_deleted(
        &self,
        _kind: ItemKind,
        name: &str,
    ) -> Result<WrittenItem, VaultError> {
        Err(not_found(name))
    }

    async fn import_certificate(
        &self,
        name: &str,
        _certificate: &CertificateImport,
    ) -> Result<WrittenItem, VaultError> {
        Err(not_found(name))
    }

    /// This store keeps no deleted items: a deleted secret is gone.
    async fn soft_delete(&self, kind: ItemKind, name: &str) -> Result<(), VaultError> {
        let removed =
            kind == ItemKind::Secret && self.secrets.lock().expect("lock").remove(name).is_some();
        if !removed {
            return Err(not_found(name));
        }
        self.writes
            .lock()
            .expect("lock")
            .push(format!("delete {name}"));
        Ok(())
    }
}
