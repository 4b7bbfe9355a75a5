//! The KV v2 client: signs in (token or AppRole), checks the server and the mount, and reads
//! and writes secrets over the HTTP API, on the crate's one HTTP stack
//! (`vault::transport::build_http_client_with`: rustls with ring, platform roots plus
//! `VAULT_CACERT`, no redirects, connect and request time limits).
//!
//! INTERFACE: the signatures below are the contract the store, the archive and the commands
//! build on; the bodies are being written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use age::secrecy::SecretString;

use super::{KvAddress, KvData, KvSecret, KvSnapshot};

/// How to sign in.
#[derive(Clone)]
pub enum KvAuth {
    /// A token (`VAULT_TOKEN`, else `BAO_TOKEN`).
    Token(SecretString),
    /// AppRole (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`), logged in at `auth/approle/login`
    /// (`VAULT_APPROLE_MOUNT` names another auth mount).
    AppRole {
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: SecretString,
        /// The auth mount (`approle`).
        mount: String,
    },
}

impl std::fmt::Debug for KvAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvAuth::Token(_) => f.write_str("KvAuth::Token([redacted])"),
            KvAuth::AppRole { role_id, mount, .. } => write!(
                f,
                "KvAuth::AppRole {{ role_id: {role_id}, mount: {mount}, secret_id: [redacted] }}"
            ),
        }
    }
}

/// Connection settings besides the credential.
#[derive(Debug, Clone)]
pub struct KvOptions {
    /// `VAULT_NAMESPACE` (Vault Enterprise / OpenBao namespaces): sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `VAULT_CACERT`: extra PEM roots for the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Per-request time limit, retries included (`--timeout`).
    pub timeout: Duration,
}

/// What went wrong talking to a KV server. `Display` is one line without secrets; `hint`
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct KvError {
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// Which failure this is.
    pub kind: KvErrorKind,
}

/// Failure classes callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvErrorKind {
    /// No credential in the environment.
    NoCredential,
    /// 403 permission denied (bad or expired token, or a policy without this path).
    PermissionDenied,
    /// The server is sealed (503).
    Sealed,
    /// The mount does not exist or is not KV version 2.
    NoMount,
    /// 404 on a secret or version.
    NotFound,
    /// A check-and-set write found another version: a concurrent change.
    CasMismatch,
    /// The server could not be reached or timed out.
    Network,
    /// Anything else the server refused.
    Other,
}

impl KvError {
    /// A concurrent change made a check-and-set write fail.
    pub fn is_cas_mismatch(&self) -> bool {
        self.kind == KvErrorKind::CasMismatch
    }

    /// The secret or version does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == KvErrorKind::NotFound
    }
}

/// A metadata write: `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    /// `custom_metadata` (replaces the whole map when set).
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// `max_versions`.
    pub max_versions: Option<u64>,
    /// `cas_required`.
    pub cas_required: Option<bool>,
    /// `delete_version_after`.
    pub delete_version_after: Option<String>,
}

impl KvAuth {
    /// The credential from the environment (`lookup` reads a variable): `VAULT_TOKEN`, else
    /// `BAO_TOKEN`, else AppRole from `VAULT_ROLE_ID` and `VAULT_SECRET_ID`. A missing one is
    /// a [`KvErrorKind::NoCredential`] naming the variables.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, KvError> {
        let _ = lookup;
        todo!()
    }
}

impl KvOptions {
    /// `VAULT_NAMESPACE` and `VAULT_CACERT` (also `BAO_NAMESPACE`, `BAO_CACERT`) from the
    /// environment, with `timeout`.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>, timeout: Duration) -> Self {
        let _ = (lookup, timeout);
        todo!()
    }
}

/// A signed-in connection to one KV v2 mount. Cheap to clone; every method may run
/// concurrently with any other. Transient failures (connection resets, 429, 500, 502, 504)
/// are retried with backoff within the request time limit.
#[derive(Clone)]
pub struct KvClient {
    address: KvAddress,
}

impl KvClient {
    /// Signs in (AppRole logs in), checks the server is unsealed and that the address's
    /// mount is a KV version 2 mount (resolving a nested mount), and returns the client.
    /// Each failure is one [`KvError`]: bad token, sealed, missing or wrong-kind mount.
    pub async fn connect(
        address: &KvAddress,
        auth: KvAuth,
        options: KvOptions,
    ) -> Result<Self, KvError> {
        let _ = (address, auth, options);
        todo!()
    }

    /// The address, with its mount as the server resolved it.
    pub fn address(&self) -> &KvAddress {
        &self.address
    }

    /// Every secret path under the address's prefix, relative to the mount (`app/db`),
    /// sorted: `LIST metadata/…` followed recursively into every `…/` folder.
    pub async fn list(&self) -> Result<Vec<String>, KvError> {
        todo!()
    }

    /// One secret: its metadata and, for every live version, its data; `None` when the path
    /// holds no secret.
    pub async fn read_secret(&self, path: &str) -> Result<Option<KvSecret>, KvError> {
        let _ = path;
        todo!()
    }

    /// Every secret under the address, read with up to `concurrency` requests at once.
    pub async fn read_all(&self, concurrency: usize) -> Result<KvSnapshot, KvError> {
        let _ = concurrency;
        todo!()
    }

    /// Writes a new version with check-and-set: `cas` is the version the caller saw as
    /// current (0: the secret must not exist yet). Returns the new version number; a
    /// concurrent change is [`KvErrorKind::CasMismatch`].
    pub async fn write(&self, path: &str, data: &KvData, cas: u64) -> Result<u64, KvError> {
        let _ = (path, data, cas);
        todo!()
    }

    /// Writes the secret's metadata (creating the metadata entry if needed).
    pub async fn write_metadata(&self, path: &str, update: &MetadataUpdate) -> Result<(), KvError> {
        let _ = (path, update);
        todo!()
    }

    /// Soft-deletes the given versions (`POST delete/PATH`); recoverable with
    /// [`KvClient::undelete_versions`].
    pub async fn delete_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
        let _ = (path, versions);
        todo!()
    }

    /// Brings soft-deleted versions back (`POST undelete/PATH`).
    pub async fn undelete_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
        let _ = (path, versions);
        todo!()
    }

    /// Destroys the given versions for good (`POST destroy/PATH`).
    pub async fn destroy_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
        let _ = (path, versions);
        todo!()
    }
}
