//! Destinations: where archives live once written — a local folder, an Azure Blob Storage
//! container or an S3 bucket — as byte streams with list, delete and lock. Not a store of
//! items (that is the vault's and the archive's business): a destination only moves
//! archive files and their small sidecars, and never sees a value.
//!
//! The two object stores are spoken to over plain REST with the `reqwest` client already in
//! the build (Shared Key / SAS / bearer for Blob Storage, Signature V4 for S3): see the
//! README, "Keeping copies off-tenant", for why no storage SDK is used. [`upload`] turns the
//! archive writer's synchronous byte stream into a block-list / multipart upload committed
//! last; [`download`] reads an object back as a synchronous `Read` with resume on a dropped
//! connection; [`retention`] is restic's `forget` policy, pure.

pub mod azure;
pub mod download;
pub mod http;
pub mod listing;
pub mod local;
pub mod retention;
pub mod s3;
pub mod upload;
pub mod xml;

use std::sync::Arc;

use time::OffsetDateTime;

/// What went wrong talking to a destination. Messages never carry a credential: URLs are
/// shown without their query string (a SAS token lives there).
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// The text is not a destination this build understands.
    #[error("{0}")]
    InvalidUrl(String),
    /// No usable credential was found.
    #[error("{0}")]
    Credentials(String),
    /// The object exists and is never overwritten.
    #[error("{0} already exists")]
    Exists(String),
    /// The object does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The object is under a retention lock or legal hold.
    #[error("{what} is locked{}", until.as_ref().map(|u| format!(" until {u}")).unwrap_or_default())]
    Locked { what: String, until: Option<String> },
    /// The destination cannot do what was asked (`--lock-days` on a container without
    /// version-level immutability, a bucket without Object Lock).
    #[error("{0}")]
    Unsupported(String),
    /// The service answered with an error.
    #[error("{what}: HTTP {status}{}", code.as_ref().map(|c| format!(" {c}")).unwrap_or_default())]
    Http {
        what: String,
        status: u16,
        code: Option<String>,
    },
    /// The connection failed (after retries).
    #[error("{what}: {message}")]
    Network { what: String, message: String },
    /// A local file system error.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl DestError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// One object under a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name relative to the destination's prefix (`VAULT-…tar.zst.age`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the store last modified it, if it says.
    pub modified: Option<OffsetDateTime>,
}

/// A started upload: the store's handle on the parts sent so far.
#[derive(Debug, Clone, Default)]
pub struct UploadState {
    /// S3's upload id (Blob Storage needs none: blocks are staged against the blob name).
    pub upload_id: Option<String>,
    /// Per part, in order: its block id (Blob Storage) or ETag (S3).
    pub parts: Vec<String>,
    /// Every part carries a checksum (S3 Object Lock uploads need one).
    pub checksums: bool,
}

/// A byte-stream destination: objects under one prefix of a container or bucket (or files
/// in a folder). Names passed in are relative to that prefix. Every method that creates an
/// object refuses an existing one; nothing overwrites.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The destination as a user wrote it (no credential), for messages.
    fn display(&self) -> String;
    /// Where `name` is, for messages (no credential).
    fn display_name(&self, name: &str) -> String {
        format!("{}/{name}", self.display().trim_end_matches('/'))
    }
    /// A copy with its own HTTP connection pool, for use on another thread's runtime.
    fn fork(&self) -> Arc<dyn ObjectStore>;
    /// The object's size, or `None` when it does not exist.
    async fn head(&self, name: &str) -> Result<Option<u64>, DestError>;
    /// Every object under the prefix (not below a further `/`).
    async fn list(&self) -> Result<Vec<ObjectInfo>, DestError>;
    /// The object's bytes from `offset` on, as an HTTP response to read chunk by chunk.
    async fn get_from(&self, name: &str, offset: u64) -> Result<reqwest::Response, DestError>;
    /// Creates a small object whole (a sidecar, a signature), refusing an existing name.
    async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<(), DestError>;
    /// Starts an upload of `name`. With `lock_until`, the object is to carry a retention
    /// lock until then (refused by [`ObjectStore::check_lock_support`] where impossible).
    async fn start_upload(
        &self,
        name: &str,
        lock_until: Option<OffsetDateTime>,
    ) -> Result<UploadState, DestError>;
    /// Sends part `index` (0-based, in order) of an upload; returns its id or ETag.
    async fn put_part(
        &self,
        name: &str,
        state: &UploadState,
        index: usize,
        bytes: bytes::Bytes,
    ) -> Result<String, DestError>;
    /// Makes the object appear, whole, under `name` — refused when the name was taken
    /// meanwhile ([`DestError::Exists`]); `size` is the total sent, used to recognise our
    /// own commit when its answer was lost.
    async fn commit_upload(
        &self,
        name: &str,
        state: &UploadState,
        size: u64,
        lock_until: Option<OffsetDateTime>,
    ) -> Result<(), DestError>;
    /// Gives up an upload: nothing appears under the name.
    async fn abort_upload(&self, name: &str, state: &UploadState) -> Result<(), DestError>;
    /// The time the object is locked until, if it is locked now.
    async fn locked_until(&self, name: &str) -> Result<Option<String>, DestError>;
    /// Deletes the object; [`DestError::Locked`] when a lock refuses it (never forced).
    async fn delete(&self, name: &str) -> Result<(), DestError>;
    /// Checks that objects written here can carry a retention lock, before any work.
    async fn check_lock_support(&self) -> Result<(), DestError>;
    /// The names of uploads started and neither completed nor aborted (S3 lists them; Blob
    /// Storage cannot, its uncommitted blocks expire by themselves: empty there).
    async fn unfinished_uploads(&self) -> Result<Vec<String>, DestError> {
        Ok(Vec::new())
    }
    /// Creates the container, bucket or folder (first setup, tests), with retention locks
    /// enabled when `lockable` (S3 Object Lock); an existing one is left as it is.
    async fn create(&self, lockable: bool) -> Result<(), DestError>;
}

/// Whether `text` names a remote destination (`az://`, `s3://`, `http(s)://`) rather than a
/// path.
pub fn is_remote(text: &str) -> bool {
    ["az://", "s3://", "https://", "http://"]
        .iter()
        .any(|scheme| {
            text.len() > scheme.len() && text[..scheme.len()].eq_ignore_ascii_case(scheme)
        })
}

/// A remote destination resolved: the store (container or bucket plus prefix) and, when the
/// URL named one object (its last segment ends in `.age`), that object's name.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The folder-like place.
    pub store: Arc<dyn ObjectStore>,
    /// The object the URL named, if any.
    pub object: Option<String>,
}

/// How remote destinations sign in, beyond the environment each ecosystem reads.
#[derive(Clone, Default)]
pub struct RemoteOptions {
    /// `--output-auth`: sign in to Blob Storage with this method of the vault credential
    /// chain, reading `COLDVAULT_OUTPUT_*` in place of `AZURE_*`.
    pub azure_auth: Option<String>,
    /// The variables to read (`AZURE_STORAGE_*`, `AWS_*`, `HOME`) instead of the process
    /// environment: for tests and embedding, where changing the environment is not wanted.
    pub vars: Option<std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The variables hold keys: only their names are shown.
        f.debug_struct("RemoteOptions")
            .field("azure_auth", &self.azure_auth)
            .field(
                "vars",
                &self.vars.as_ref().map(|v| v.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl RemoteOptions {
    /// A variable, from [`RemoteOptions::vars`] or the process; empty counts as unset.
    pub fn var(&self, name: &str) -> Option<String> {
        match &self.vars {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|v| !v.is_empty())
    }
}

/// Resolves a remote destination URL (see [`is_remote`]) with credentials from the
/// environment. Nothing is sent yet.
pub fn open_remote(text: &str, options: &RemoteOptions) -> Result<Remote, DestError> {
    let lower = text.to_ascii_lowercase();
    let (store, path): (Arc<dyn ObjectStore>, String) = if lower.starts_with("s3://") {
        let (store, path) = s3::S3Bucket::from_url(text, options)?;
        (Arc::new(store), path)
    } else {
        let (store, path) = azure::BlobContainer::from_url(text, options)?;
        (Arc::new(store), path)
    };
    let _ = path;
    Ok(split_object(store, text))
}

fn split_object(store: Arc<dyn ObjectStore>, text: &str) -> Remote {
    let trimmed = text.split(['?', '#']).next().unwrap_or(text);
    let last = trimmed.rsplit('/').next().unwrap_or("");
    let object = (last.ends_with(".age") && !trimmed.ends_with('/')).then(|| last.to_owned());
    Remote { store, object }
}

/// A URL without its query string and fragment: what messages may show.
pub fn redact_url(text: &str) -> String {
    text.split(['?', '#']).next().unwrap_or(text).to_owned()
}

/// Splits `CONTAINER/PREFIX…/[OBJECT.age]` paths: the prefix (ending in `/`, or empty) of the
/// folder-like place, leaving out a last segment that names an object.
pub(crate) fn folder_prefix(path: &str) -> String {
    let path = path.trim_start_matches('/');
    let folder = match path.rsplit_once('/') {
        Some((dir, last)) if last.ends_with(".age") => dir,
        Some(_) => path.trim_end_matches('/'),
        None if path.ends_with(".age") => "",
        None => path,
    };
    if folder.is_empty() {
        String::new()
    } else {
        format!("{}/", folder.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_schemes_are_told_from_paths() {
        assert!(is_remote("az://acct/c"));
        assert!(is_remote("S3://bucket"));
        assert!(is_remote("https://a.blob.core.windows.net/c"));
        assert!(!is_remote("backups/az"));
        assert!(!is_remote("s3://"));
        assert!(!is_remote("-"));
    }

    #[test]
    fn folder_prefix_drops_an_object_name() {
        assert_eq!(folder_prefix(""), "");
        assert_eq!(folder_prefix("daily"), "daily/");
        assert_eq!(folder_prefix("daily/"), "daily/");
        assert_eq!(folder_prefix("a/b/x.tar.zst.age"), "a/b/");
        assert_eq!(folder_prefix("x.tar.zst.age"), "");
    }

    #[test]
    fn redacted_urls_lose_their_sas_token() {
        assert_eq!(
            redact_url("https://a.blob.core.windows.net/c/x?sv=1&sig=SECRET"),
            "https://a.blob.core.windows.net/c/x"
        );
    }
}
