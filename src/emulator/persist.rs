//! The state directory: `ca.pem` and `ca-key.pem` (the local CA), `issuer-key.pem` (the token
//! signing key), `world.key` (the security world), and `vaults.json` (every vault's contents),
//! each written atomically: a temporary file in the same directory, fsync, rename, fsync of the
//! directory, so a crash leaves the old file or the new one, never a part.
//!
//! `vaults.json` is written **write-behind**, never on a request's path: a request that changes
//! a vault only marks the state changed ([`Persister::mark_changed`]); the task
//! [`write_behind`] wakes, waits [`WRITE_BEHIND_DELAY`] so a burst of writes coalesces into one
//! save, copies each vault under its lock (a memory copy, no I/O), and serializes and writes the
//! copy outside every lock. Reads — and backups, which change nothing — never mark anything
//! ([`request_changes_state`]). Graceful shutdown and `POST /_emulator/reset` flush at once
//! ([`flush`]), so a crash loses at most the delay plus one save's duration.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::state::{AppState, Vault};
use super::store::VaultStore;
use crate::atomic_file::{self, AtomicFile, Replace};

/// How long a change waits before it is saved. A burst of writes (a restore of thousands of
/// items) then costs about four saves a second instead of one per request, so a `--state-dir`
/// server keeps an in-memory server's speed; and a killed emulator loses at most a quarter of a
/// second of writes, less than any client's retry takes to notice.
pub const WRITE_BEHIND_DELAY: Duration = Duration::from_millis(250);

/// The longest pause between attempts after failed saves (a full disk is retried, not spammed).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The current `vaults.json` format; format 1 is the only one written so far.
const VAULTS_FORMAT: u32 = 1;

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part
/// (through [`crate::atomic_file`], replacing the previous file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] with the content written by `fill`.
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut AtomicFile) -> std::io::Result<()>,
) -> std::io::Result<()> {
    atomic_file::write_with(path, Replace::Existing, fill).map_err(std::io::Error::from)
}

/// True when a successful request of `method` on the vault route `path` may have changed the
/// vault, so its contents must be saved. GET and HEAD never change anything; of the POSTs,
/// backups and the key operations that only compute (`sign`, `verify`, `encrypt`, `decrypt`,
/// `wrapkey`, `unwrapkey`, `release`, `rng`) do not either. Everything else counts as a change:
/// a route added later is saved unless it is listed here, never silently lost.
pub fn request_changes_state(method: &Method, path: &str) -> bool {
    if *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS {
        return false;
    }
    if *method != Method::POST {
        return true;
    }
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    !matches!(
        last.as_str(),
        "backup"
            | "sign"
            | "verify"
            | "encrypt"
            | "decrypt"
            | "wrapkey"
            | "unwrapkey"
            | "release"
            | "rng"
    )
}

/// The saved contents of every vault.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedVaults {
    pub format: u32,
    /// Stores by lower-cased vault name.
    pub vaults: BTreeMap<String, VaultStore>,
}

/// What the last save reached.
#[derive(Debug, Default)]
struct Saved {
    /// The change generation the file on disk holds.
    generation: u64,
}

/// Saves and loads the state directory, and tracks what is not saved yet.
#[derive(Debug)]
pub struct Persister {
    dir: PathBuf,
    /// Serialises saves so an older copy never lands after a newer one.
    saved: Mutex<Saved>,
    /// Bumped by every change that must reach disk; a save covers every change marked before
    /// it copied the vaults.
    generation: AtomicU64,
    /// The generation on disk, readable without waiting for a save in progress.
    saved_generation: AtomicU64,
    /// Completed saves of `vaults.json`.
    saves: AtomicU64,
    /// Saves still to fail on purpose (see [`Persister::fail_next_saves`]).
    failures_to_inject: AtomicU32,
    /// Wakes the write-behind task.
    wake: Notify,
}

impl Persister {
    /// A persister for `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            saved: Mutex::new(Saved::default()),
            generation: AtomicU64::new(0),
            saved_generation: AtomicU64::new(0),
            saves: AtomicU64::new(0),
            failures_to_inject: AtomicU32::new(0),
            wake: Notify::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn vaults_path(&self) -> PathBuf {
        self.dir.join("vaults.json")
    }

    /// Notes that a vault changed; the write-behind task saves it within [`WRITE_BEHIND_DELAY`].
    /// Cheap (an atomic increment and a wake-up): call it after the change, before answering.
    pub fn mark_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// True while a change is not on disk yet.
    pub fn is_pending(&self) -> bool {
        self.generation.load(Ordering::Acquire) > self.saved_generation.load(Ordering::Acquire)
    }

    /// How many times `vaults.json` was written since start.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Acquire)
    }

    /// Makes the next `count` saves fail halfway through writing the temporary file, as a crash
    /// or a full disk would: for tests that the previous file survives. The changes stay pending
    /// and the write-behind task retries them.
    pub fn fail_next_saves(&self, count: u32) {
        self.failures_to_inject.store(count, Ordering::Release);
    }

    fn take_injected_failure(&self) -> bool {
        self.failures_to_inject
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Saves every vault's contents if anything changed since the last save; answers whether it
    /// wrote. Blocking (file I/O): call it off the async workers. Each vault is copied under its
    /// own lock, briefly; serializing and writing happen outside every vault lock.
    pub fn save_if_changed(&self, vaults: &BTreeMap<String, Arc<Vault>>) -> std::io::Result<bool> {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        // Read the generation before copying: every change marked up to here is in the copy.
        let target = self.generation.load(Ordering::Acquire);
        if target <= saved.generation {
            return Ok(false);
        }
        let snapshot = SavedVaults {
            format: VAULTS_FORMAT,
            vaults: vaults
                .iter()
                .map(|(name, vault)| (name.clone(), vault.lock().clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        drop(snapshot);
        let fail = self.take_injected_failure();
        write_atomic_with(&self.vaults_path(), |file| {
            if fail {
                file.write_all(&bytes[..bytes.len() / 2])?;
                return Err(std::io::Error::other(
                    "injected failure while writing vaults.json",
                ));
            }
            file.write_all(&bytes)
        })?;
        saved.generation = target;
        self.saved_generation.store(target, Ordering::Release);
        self.saves.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// The saved contents, if a previous run left any.
    pub fn load_vaults(&self) -> std::io::Result<Option<SavedVaults>> {
        match std::fs::read(self.vaults_path()) {
            Ok(bytes) => {
                let saved: SavedVaults =
                    serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                if saved.format > VAULTS_FORMAT {
                    return Err(std::io::Error::other(format!(
                        "vaults.json has format {}, newer than this emulator's {VAULTS_FORMAT}",
                        saved.format
                    )));
                }
                Ok(Some(saved))
            }
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

/// Saves now whatever changed (a no-op without a state directory or without changes), off the
/// async workers; answers once it is on disk. A failure is logged, answered, and left pending
/// for the write-behind task to retry.
pub async fn flush(state: &AppState) -> std::io::Result<()> {
    if state.persister.is_none() {
        return Ok(());
    }
    let state = state.clone();
    let result = tokio::task::spawn_blocking(move || state.save_vaults_if_changed())
        .await
        .map_err(std::io::Error::other)?;
    if let Err(err) = &result {
        tracing::warn!("cannot persist the emulator state: {err}");
    }
    result.map(|_| ())
}

/// The write-behind task of a `--state-dir` emulator: after a change, waits
/// [`WRITE_BEHIND_DELAY`], then saves; on `stop` it saves what is left and returns. A failed
/// save is retried with a doubling pause (up to 30 s) while changes are pending.
pub async fn write_behind(state: AppState, mut stop: watch::Receiver<bool>) {
    let Some(persister) = state.persister.as_ref() else {
        return;
    };
    let mut retry = WRITE_BEHIND_DELAY;
    loop {
        if !persister.is_pending() {
            tokio::select! {
                () = persister.wake.notified() => {}
                _ = stop.changed() => break,
            }
        }
        // The delay runs from the first unsaved change, not the last: a steady stream of
        // writes is still saved every delay, never postponed without end.
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => break,
        }
        let vaults_state = state.clone();
        let outcome =
            tokio::task::spawn_blocking(move || vaults_state.save_vaults_if_changed()).await;
        match outcome {
            Ok(Ok(_)) => retry = WRITE_BEHIND_DELAY,
            Ok(Err(err)) => {
                tracing::warn!("cannot persist the emulator state (will retry): {err}");
                retry = (retry * 2).min(MAX_RETRY_DELAY);
            }
            Err(_) => break,
        }
    }
    let _ = flush(&state).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::VaultSpec;
    use crate::emulator::store::{Kind, Payload, Redacted, Timing, Version};

    fn vaults_with(value: &str) -> BTreeMap<String, Arc<Vault>> {
        let vault = Arc::new(Vault::new(VaultSpec::new("alpha")));
        let t = Timing {
            now_ms: 1_000,
            delete_delay_ms: 0,
            purge_window_ms: 0,
        };
        vault
            .lock()
            .create_version(
                Kind::Secret,
                "s",
                Version::new(
                    1,
                    Payload::Secret {
                        value: Redacted(value.to_string()),
                    },
                ),
                t,
            )
            .unwrap();
        BTreeMap::from([("alpha".to_string(), vault)])
    }

    fn saved_value(persister: &Persister) -> String {
        let saved = persister.load_vaults().unwrap().unwrap();
        let version = &saved.vaults["alpha"].secrets.live["s"].versions[0];
        match &version.payload {
            Payload::Secret { value } => value.0.clone(),
            other => panic!("not a secret: {other:?}"),
        }
    }

    #[test]
    fn saves_only_when_changed_and_a_failed_save_stays_pending() {
        let dir = tempfile::tempdir().unwrap();
        let persister = Persister::new(dir.path()).unwrap();
        let vaults = vaults_with("first");
        assert!(
            !persister.save_if_changed(&vaults).unwrap(),
            "nothing marked"
        );
        persister.mark_changed();
        assert!(persister.is_pending());
        assert!(persister.save_if_changed(&vaults).unwrap());
        assert!(!persister.is_pending());
        assert!(
            !persister.save_if_changed(&vaults).unwrap(),
            "already saved"
        );
        assert_eq!(persister.saves(), 1);
        assert_eq!(saved_value(&persister), "first");

        let changed = vaults_with("second");
        persister.mark_changed();
        persister.fail_next_saves(1);
        assert!(persister.save_if_changed(&changed).is_err());
        assert!(persister.is_pending(), "a failed save is retried later");
        assert_eq!(saved_value(&persister), "first", "the old file is intact");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(persister.save_if_changed(&changed).unwrap());
        assert_eq!(saved_value(&persister), "second");
        assert_eq!(persister.saves(), 2);
    }

    #[test]
    fn reads_and_backups_change_nothing_and_other_requests_do() {
        let read_only = [
            (Method::GET, "/secrets/a"),
            (Method::HEAD, "/secrets/a"),
            (Method::POST, "/secrets/a/backup"),
            (Method::POST, "/keys/k/backup"),
            (Method::POST, "/certificates/c/backup/"),
            (Method::POST, "/keys/k/0123/sign"),
            (Method::POST, "/keys/k/0123/verify"),
            (Method::POST, "/keys/k/0123/wrapKey"),
            (Method::POST, "/rng"),
        ];
        for (method, path) in read_only {
            assert!(!request_changes_state(&method, path), "{method} {path}");
        }
        let changing = [
            (Method::PUT, "/secrets/a"),
            (Method::PATCH, "/secrets/a/"),
            (Method::DELETE, "/secrets/a"),
            (Method::DELETE, "/deletedsecrets/a"),
            (Method::POST, "/secrets/restore"),
            (Method::POST, "/deletedsecrets/backup/recover"),
            (Method::POST, "/keys/k/create"),
            (Method::POST, "/keys/k/rotate"),
            (Method::POST, "/certificates/c/import"),
        ];
        for (method, path) in changing {
            assert!(request_changes_state(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vaults.json"),
            br#"{"format":2,"vaults":{}}"#,
        )
        .unwrap();
        let err = Persister::new(dir.path())
            .unwrap()
            .load_vaults()
            .unwrap_err();
        assert!(err.to_string().contains("format 2"), "{err}");
    }
}
