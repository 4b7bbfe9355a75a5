//! A local folder as a destination, for `list` and `forget` (and the sidecars and signatures
//! written beside an archive): the files in one folder, not below it. Backups to a folder go
//! through the archive writer's own temporary-file-and-rename path, not through here.

use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{DestError, ObjectInfo, ObjectStore, UploadState};
use crate::atomic_file::{self, AtomicWriteError, Replace};

/// A folder of archives.
#[derive(Debug, Clone)]
pub struct LocalFolder {
    dir: PathBuf,
}

impl LocalFolder {
    /// The folder at `dir` (checked when first used).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalFolder {
    fn display(&self) -> String {
        self.dir.display().to_string()
    }

    fn display_name(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn fork(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.clone())
    }

    async fn head(&self, name: &str) -> Result<Option<u64>, DestError> {
        match std::fs::symlink_metadata(self.dir.join(name)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DestError::io(
                format!("cannot look up {}", self.display_name(name)),
                e,
            )),
        }
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, DestError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| DestError::io(format!("cannot list {}", self.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(ObjectInfo {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
                modified: meta.modified().ok().map(OffsetDateTime::from),
            });
        }
        Ok(out)
    }

    async fn get_from(&self, name: &str, offset: u64) -> Result<reqwest::Response, DestError> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DestError::NotFound(self.display_name(name))
            } else {
                DestError::io(format!("cannot read {}", path.display()), e)
            }
        })?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        Ok(reqwest::Response::from(http::Response::new(
            bytes[start..].to_vec(),
        )))
    }

    async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<(), DestError> {
        let path = self.dir.join(name);
        atomic_file::write(&path, &bytes, Replace::Never).map_err(|e| match e {
            AtomicWriteError::Exists { .. } => DestError::Exists(self.display_name(name)),
            other => DestError::io(format!("cannot write {}", path.display()), other.into()),
        })
    }

    async fn start_upload(
        &self,
        _name: &str,
        _lock_until: Option<OffsetDateTime>,
    ) -> Result<UploadState, DestError> {
        Err(DestError::Unsupported(
            "archives are written to folders by the archive writer".to_owned(),
        ))
    }

    async fn put_part(
        &self,
        _name: &str,
        _state: &UploadState,
        _index: usize,
        _bytes: bytes::Bytes,
    ) -> Result<String, DestError> {
        Err(DestError::Unsupported("no uploads to a folder".to_owned()))
    }

    async fn commit_upload(
        &self,
        _name: &str,
        _state: &UploadState,
        _size: u64,
        _lock_until: Option<OffsetDateTime>,
    ) -> Result<(), DestError> {
        Err(DestError::Unsupported("no uploads to a folder".to_owned()))
    }

    async fn abort_upload(&self, _name: &str, _state: &UploadState) -> Result<(), DestError> {
        Ok(())
    }

    async fn locked_until(&self, _name: &str) -> Result<Option<String>, DestError> {
        Ok(None)
    }

    async fn delete(&self, name: &str) -> Result<(), DestError> {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DestError::io(
                format!("cannot delete {}", self.display_name(name)),
                e,
            )),
        }
    }

    async fn create(&self, lockable: bool) -> Result<(), DestError> {
        if lockable {
            return Err(DestError::Unsupported(
                "a local folder cannot lock files".to_owned(),
            ));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| DestError::io(format!("cannot create {}", self.display()), e))
    }

    async fn check_lock_support(&self) -> Result<(), DestError> {
        Err(DestError::Unsupported(
            "--lock-days needs Blob Storage or S3: a local folder cannot lock a file".to_owned(),
        ))
    }
}
