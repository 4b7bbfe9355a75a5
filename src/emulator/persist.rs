//! The state directory: `ca.pem` and `ca-key.pem` (the local CA), `issuer-key.pem` (the token
//! signing key), `world.key` (the security world), and `vaults.json` (every vault's contents),
//! each written atomically (temporary file in the same directory, then rename).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::state::Vault;
use super::store::VaultStore;

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The saved contents of every vault.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedVaults {
    pub format: u32,
    /// Stores by lower-cased vault name.
    pub vaults: BTreeMap<String, VaultStore>,
}

/// Saves and loads the state directory.
#[derive(Debug)]
pub struct Persister {
    dir: PathBuf,
    /// Serialises writers so a slow save never overwrites a newer one.
    write_lock: Mutex<()>,
}

impl Persister {
    /// A persister for `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            write_lock: Mutex::new(()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn vaults_path(&self) -> PathBuf {
        self.dir.join("vaults.json")
    }

    /// Writes every vault's contents.
    pub fn save_vaults(&self, vaults: &BTreeMap<String, Arc<Vault>>) -> std::io::Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let saved = SavedVaults {
            format: 1,
            vaults: vaults
                .iter()
                .map(|(name, vault)| (name.clone(), vault.lock().clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        write_atomic(&self.vaults_path(), &bytes)
    }

    /// The saved contents, if a previous run left any.
    pub fn load_vaults(&self) -> std::io::Result<Option<SavedVaults>> {
        match std::fs::read(self.vaults_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The security world saved by a previous run, or `make()`'s, saved now.
    pub fn world_bytes(&self, make: impl FnOnce() -> [u8; 64]) -> std::io::Result<[u8; 64]> {
        let path = self.dir.join("world.key");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 64 => {
                let mut out = [0u8; 64];
                out.copy_from_slice(&bytes);
                Ok(out)
            }
            Ok(_) => Err(std::io::Error::other(format!(
                "{} is not a security world key (64 bytes)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = make();
                write_atomic(&path, &bytes)?;
                Ok(bytes)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
