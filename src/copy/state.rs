//! `sync --state FILE`: what the last sync left on both sides, so the next one can tell a
//! deletion from an item that is new, and which side changed an item.
//!
//! A small JSON document: the pair of vaults it belongs to, and per item (`secret/NAME`,
//! `key/NAME`, `certificate/NAME`, lower-case) one *stamp* per side — a SHA-256 of the item's
//! current version id, content type, tags and writable attributes on that side. No value, and
//! no digest of a value, is ever written: a state file gives nothing away about the secrets, so
//! it needs no more care than a log. It is replaced atomically ([`crate::atomic_file`]) at the end of a
//! run, so a crash leaves the previous state, which makes the next run redo (idempotently) what
//! the crashed one did. A file of another vault pair is refused: its stamps would turn every
//! item into a deletion.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decide::Last;
use crate::atomic_file::{self, Replace};
use crate::vault::{Attributes, Tags};

/// The `format` field of every state file.
pub const STATE_FORMAT: &str = "coldvault-sync-state";
/// The version this code writes and reads.
pub const STATE_VERSION: u32 = 1;

/// One item's stamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStamps {
    /// Side A's stamp, `None` when absent there.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub a: Option<String>,
    /// Side B's stamp.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub b: Option<String>,
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Side A's vault URL.
    pub a: String,
    /// Side B's vault URL.
    pub b: String,
    /// When the run that wrote it ended (RFC 3339).
    pub written: String,
    /// Item key (`secret/name`) → stamps.
    pub items: BTreeMap<String, ItemStamps>,
}

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Unreadable (permissions, a folder, …).
    #[error("cannot read the sync state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not a sync state of a version this code reads.
    #[error("{path} is not a coldvault sync state (version {STATE_VERSION}): {reason}")]
    Invalid { path: String, reason: String },
    /// The state of another pair of vaults.
    #[error("{path} is the sync state of {a} and {b}, not of these vaults")]
    OtherVaults { path: String, a: String, b: String },
    /// Could not be written.
    #[error("cannot write the sync state {path}: {reason}")]
    Write { path: String, reason: String },
}

impl SyncState {
    /// An empty state for a pair of vaults.
    pub fn new(a: &str, b: &str) -> Self {
        Self {
            format: STATE_FORMAT.to_owned(),
            version: STATE_VERSION,
            a: a.to_owned(),
            b: b.to_owned(),
            written: String::new(),
            items: BTreeMap::new(),
        }
    }

    /// Reads `path`: `Ok(None)` when it does not exist yet (the first run). Fails for a file
    /// that is not a state, of another version, or of another pair of vaults (in either
    /// order: a state is tied to which vault is A).
    pub fn load(path: &Path, a: &str, b: &str) -> Result<Option<Self>, StateError> {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: shown,
                    source,
                });
            }
        };
        let state: SyncState = serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if state.format != STATE_FORMAT || state.version != STATE_VERSION {
            return Err(StateError::Invalid {
                path: shown,
                reason: format!("format {:?} version {}", state.format, state.version),
            });
        }
        if !same_url(&state.a, a) || !same_url(&state.b, b) {
            return Err(StateError::OtherVaults {
                path: shown,
                a: state.a,
                b: state.b,
            });
        }
        Ok(Some(state))
    }

    /// The last stamps of an item, if the last run recorded it.
    pub fn last(&self, key: &str) -> Option<Last> {
        self.items.get(key).map(|s| Last {
            a: s.a.clone(),
            b: s.b.clone(),
        })
    }

    /// Writes the state to `path` atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&mut self, path: &Path) -> Result<(), StateError> {
        self.written = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        atomic_file::write(path, &bytes, Replace::Existing).map_err(|e| StateError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// The key of an item in the state (`secret/name`, lower-case: Key Vault names are
/// case-insensitive).
pub fn item_key(kind: &str, name: &str) -> String {
    format!("{kind}/{}", name.to_ascii_lowercase())
}

/// An item's stamp on one side: SHA-256 (hex) of its current version id, content type, tags
/// and `enabled`/`nbf`/`exp`. Any change on that side (a new version, a tag or attribute
/// update) changes it; nothing of the value goes in.
pub fn stamp(
    version: &str,
    content_type: Option<&str>,
    tags: &Tags,
    attributes: &Attributes,
) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(version.as_bytes());
    field(content_type.unwrap_or("\u{0}none").as_bytes());
    for (k, v) in tags {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(&[u8::from(attributes.enabled.unwrap_or(true))]);
    for t in [attributes.not_before, attributes.expires] {
        field(&t.map_or(i64::MIN, |t| t.unix_timestamp()).to_le_bytes());
    }
    hex::encode(hash.finalize())
}

fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_ascii_lowercase();
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "https://alpha.vault.azure.net/";
    const B: &str = "https://beta.vault.azure.net/";

    #[test]
    fn a_missing_file_is_the_first_run() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            SyncState::load(&dir.path().join("s.json"), A, B)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_state_round_trips_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut state = SyncState::new(A, B);
        state.items.insert(
            item_key("secret", "DB"),
            ItemStamps {
                a: Some("x".into()),
                b: None,
            },
        );
        state.save(&path).unwrap();
        state.save(&path).unwrap();
        let loaded = SyncState::load(&path, A, "https://BETA.vault.azure.net")
            .unwrap()
            .unwrap();
        assert_eq!(loaded.items, state.items);
        assert_eq!(loaded.last("secret/db").unwrap().a.as_deref(), Some("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_state_of_other_vaults_or_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        SyncState::new(A, B).save(&path).unwrap();
        assert!(matches!(
            SyncState::load(&path, B, A),
            Err(StateError::OtherVaults { .. })
        ));
        std::fs::write(&path, b"{\"format\":\"x\"}").unwrap();
        assert!(matches!(
            SyncState::load(&path, A, B),
            Err(StateError::Invalid { .. })
        ));
    }

    #[test]
    fn stamps_change_with_version_and_metadata_and_hold_no_value() {
        let tags = Tags::from([("env".to_owned(), "prod".to_owned())]);
        let base = stamp("v1", Some("text/plain"), &tags, &Attributes::default());
        assert_eq!(base.len(), 64);
        assert_ne!(
            base,
            stamp("v2", Some("text/plain"), &tags, &Attributes::default())
        );
        assert_ne!(base, stamp("v1", None, &tags, &Attributes::default()));
        assert_ne!(
            base,
            stamp(
                "v1",
                Some("text/plain"),
                &Tags::new(),
                &Attributes::default()
            )
        );
        let disabled = Attributes {
            enabled: Some(false),
            ..Attributes::default()
        };
        assert_ne!(base, stamp("v1", Some("text/plain"), &tags, &disabled));
    }
}
