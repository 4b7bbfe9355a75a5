//! One live store of either kind behind one type: `copy` and `sync` hold a [`Store`] per side
//! and never ask which kind it is, except for the few things only a command needs (a name
//! for messages, request counts, the credential a side signed in with).
//!
//! Why an enum and not generic commands: the kind of each side is known only once its
//! argument is parsed, so generic commands would be compiled once per pair of kinds (four
//! copies of `copy` and of `sync`) and chosen by a `match` anyway; one enum that delegates the
//! store traits is one copy of each command and a few lines per trait method.

use futures::stream::BoxStream;

use crate::kv::client::{KvAuth, KvClient};
use crate::kv::store::KvStore;
use crate::vault::azure::AzureVault;
use crate::vault::pacing::RequestStats;
use crate::vault::{
    BackupBlob, CertificateBundle, CertificateImport, CertificateProperties, DeletedItem, ItemKind,
    KeyBundle, KeyProperties, NewSecretVersion, SecretProperties, SecretVersionValue, VaultError,
    VaultReader, VaultUrl, VaultWriter, WrittenItem,
};

/// A live store: a Key Vault or a KV v2 mount.
#[derive(Clone)]
pub enum Store {
    /// An Azure Key Vault (or the local emulator).
    Azure(AzureVault),
    /// A HashiCorp Vault / OpenBao KV v2 mount (read once when opened, written with
    /// check-and-set), and how it was signed in to.
    Kv(KvStore, KvSignIn),
}

/// How a KV side signed in, for the line that says so (never the credential).
#[derive(Debug, Clone)]
pub struct KvSignIn(String, Option<KvClient>);

impl KvSignIn {
    /// A mount read from an archive: nothing was signed in to.
    pub fn archive() -> Self {
        Self("nothing (read from an archive)".to_owned(), None)
    }

    /// Describes `auth`: the kind of credential and, for AppRole, the role id (not secret).
    pub fn of(auth: &KvAuth) -> Self {
        Self(Self::describe(auth), None)
    }

    /// The same, with the client signed in that way, whose requests the summaries count.
    pub fn with_client(self, client: KvClient) -> Self {
        Self(self.0, Some(client))
    }

    fn describe(auth: &KvAuth) -> String {
        match auth {
            KvAuth::Token(_) => "a token (VAULT_TOKEN or BAO_TOKEN)".to_owned(),
            KvAuth::AppRole { role_id, mount, .. } => {
                format!("AppRole (role id {role_id}, auth/{mount})")
            }
        }
    }
}

impl Store {
    /// The store's short name for messages and `--json` (the vault's name).
    pub fn display_name(&self) -> String {
        match self {
            Store::Azure(vault) => vault.vault_url().name().to_owned(),
            Store::Kv(store, _) => store.address().to_string(),
        }
    }

    /// Requests sent and 429s received so far.
    pub fn stats(&self) -> RequestStats {
        match self {
            Store::Azure(vault) => vault.stats(),
            // An archive read as a mount sent nothing.
            Store::Kv(_, how) => how.1.as_ref().map(KvClient::stats).unwrap_or_default(),
        }
    }

    /// How the side signed in, for the line that tells which identity touched which store;
    /// `None` when that is not known yet.
    pub fn signed_in_with(&self) -> Option<String> {
        match self {
            Store::Azure(vault) => vault.signed_in_with().map(|how| how.to_string()),
            Store::Kv(_, how) => Some(how.0.clone()),
        }
    }
}

/// Calls the same method on whichever store this is.
macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Azure($store) => $call,
            Store::Kv($store, _) => $call,
        }
    };
}

impl VaultReader for Store {
    fn vault_url(&self) -> &VaultUrl {
        delegate!(self, s => s.vault_url())
    }

    fn list_secrets(&self) -> BoxStream<'static, Result<SecretProperties, VaultError>> {
        delegate!(self, s => s.list_secrets())
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SecretProperties>, VaultError> {
        delegate!(self, s => s.list_secret_versions(name).await)
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretVersionValue, VaultError> {
        delegate!(self, s => s.get_secret(name, version).await)
    }

    fn list_keys(&self) -> BoxStream<'static, Result<KeyProperties, VaultError>> {
        delegate!(self, s => s.list_keys())
    }

    async fn list_key_versions(&self, name: &str) -> Result<Vec<KeyProperties>, VaultError> {
        delegate!(self, s => s.list_key_versions(name).await)
    }

    async fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, VaultError> {
        delegate!(self, s => s.get_key(name, version).await)
    }

    async fn get_key_rotation_policy(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        delegate!(self, s => s.get_key_rotation_policy(name).await)
    }

    fn list_certificates(&self) -> BoxStream<'static, Result<CertificateProperties, VaultError>> {
        delegate!(self, s => s.list_certificates())
    }

    async fn list_certificate_versions(
        &self,
        name: &str,
    ) -> Result<Vec<CertificateProperties>, VaultError> {
        delegate!(self, s => s.list_certificate_versions(name).await)
    }

    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<CertificateBundle, VaultError> {
        delegate!(self, s => s.get_certificate(name, version).await)
    }

    async fn get_certificate_policy(&self, name: &str) -> Result<serde_json::Value, VaultError> {
        delegate!(self, s => s.get_certificate_policy(name).await)
    }

    async fn backup(&self, kind: ItemKind, name: &str) -> Result<BackupBlob, VaultError> {
        delegate!(self, s => s.backup(kind, name).await)
    }

    fn list_deleted(&self, kind: ItemKind) -> BoxStream<'static, Result<DeletedItem, VaultError>> {
        delegate!(self, s => s.list_deleted(kind))
    }

    async fn get_deleted(&self, kind: ItemKind, name: &str) -> Result<DeletedItem, VaultError> {
        delegate!(self, s => s.get_deleted(kind, name).await)
    }
}

impl VaultWriter for Store {
    async fn set_secret(
        &self,
        name: &str,
        secret: &NewSecretVersion,
    ) -> Result<WrittenItem, VaultError> {
        delegate!(self, s => s.set_secret(name, secret).await)
    }

    async fn restore(&self, kind: ItemKind, blob: &BackupBlob) -> Result<WrittenItem, VaultError> {
        delegate!(self, s => s.restore(kind, blob).await)
    }

    async fn recover_deleted(&self, kind: ItemKind, name: &str) -> Result<WrittenItem, VaultError> {
        delegate!(self, s => s.recover_deleted(kind, name).await)
    }

    async fn import_certificate(
        &self,
        name: &str,
        certificate: &CertificateImport,
    ) -> Result<WrittenItem, VaultError> {
        delegate!(self, s => s.import_certificate(name, certificate).await)
    }

    async fn soft_delete(&self, kind: ItemKind, name: &str) -> Result<(), VaultError> {
        delegate!(self, s => s.soft_delete(kind, name).await)
    }
}
