//! HashiCorp Vault and OpenBao KV version 2 mounts as a store.
//!
//! A KV v2 mount holds *secrets* at slash-separated paths; each secret is a sequence of
//! numbered versions, each version a JSON object of keys to values, plus per-secret metadata
//! (`custom_metadata`, `max_versions`, `cas_required`, `delete_version_after`) and per-version
//! state (created, soft-deleted, destroyed). This module reads and writes such mounts
//! ([`client`]), addresses them ([`address`]: `bao+https://HOST:PORT/MOUNT[/PATH]`), maps KV
//! paths to Key Vault names and back ([`mapping`]), and presents a mount as one more store of
//! the engine ([`store`]: `vault::VaultReader` + `vault::VaultWriter`), so `copy`, `sync`,
//! `backup` and `restore` plan and write KV items the way they do Key Vault items.
//!
//! Values never reach `Debug`, logs or errors: [`KvData`] shows only its key count.

pub mod address;
pub mod client;
pub mod mapping;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroize;

pub use address::{Flavor, KvAddress};

/// One version's data: the JSON object a KV v2 secret version holds. Values are usually
/// strings but KV accepts any JSON value. `Debug` shows the key count only; the values are
/// zeroed (best effort: the JSON strings' own buffers) when dropped.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KvData(pub BTreeMap<String, serde_json::Value>);

impl KvData {
    /// The data as compact JSON with keys in sorted order: the one text form coldvault
    /// compares, digests and writes into Key Vault (`application/json`).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of JSON values serializes")
    }
}

impl fmt::Debug for KvData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvData({} keys, values redacted)", self.0.len())
    }
}

impl Drop for KvData {
    fn drop(&mut self) {
        fn wipe(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::String(s) => s.zeroize(),
                serde_json::Value::Array(items) => items.iter_mut().for_each(wipe),
                serde_json::Value::Object(map) => map.values_mut().for_each(wipe),
                _ => {}
            }
        }
        self.0.values_mut().for_each(wipe);
    }
}

/// One version of a KV secret as the metadata endpoint reports it, with its data when the
/// version is live and was read.
#[derive(Debug, Clone, PartialEq)]
pub struct KvVersion {
    /// The version number (1, 2, …).
    pub version: u64,
    /// When it was written.
    pub created: Option<OffsetDateTime>,
    /// When it was soft-deleted (`deletion_time`), if it was; its data cannot be read then.
    pub deleted: Option<OffsetDateTime>,
    /// Whether it was destroyed (its data is gone for good).
    pub destroyed: bool,
    /// The data, for a live version that was read; `None` for deleted and destroyed ones.
    pub data: Option<KvData>,
}

impl KvVersion {
    /// Live: neither soft-deleted nor destroyed, so its data can be read.
    pub fn is_live(&self) -> bool {
        self.deleted.is_none() && !self.destroyed
    }
}

/// One KV v2 secret: its metadata and every version the server still lists, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct KvSecret {
    /// The path under the mount (`app/db`), without leading or trailing `/`.
    pub path: String,
    /// `custom_metadata`: string keys to string values (Vault allows 64, keys ≤ 128 bytes,
    /// values ≤ 512 bytes).
    pub custom_metadata: BTreeMap<String, String>,
    /// The current (newest) version number.
    pub current_version: u64,
    /// The oldest version the server still keeps (versions below it were pruned by
    /// `max_versions`).
    pub oldest_version: u64,
    /// `max_versions` (0: the mount's default).
    pub max_versions: u64,
    /// `cas_required`.
    pub cas_required: bool,
    /// `delete_version_after` as Vault writes it (`"0s"`, `"768h0m0s"`).
    pub delete_version_after: String,
    /// When the secret was created.
    pub created: Option<OffsetDateTime>,
    /// When its metadata or newest version last changed.
    pub updated: Option<OffsetDateTime>,
    /// Every version the metadata lists, oldest first.
    pub versions: Vec<KvVersion>,
}

impl KvSecret {
    /// The current version, when it is live: the secret's value today. `None` when the newest
    /// version was soft-deleted or destroyed (the secret reads as deleted).
    pub fn current(&self) -> Option<&KvVersion> {
        self.versions
            .iter()
            .rfind(|v| v.version == self.current_version)
            .filter(|v| v.is_live())
    }
}

/// A whole mount (or the part under an address's path) as read at one time.
#[derive(Debug, Clone)]
pub struct KvSnapshot {
    /// Where it was read from.
    pub address: KvAddress,
    /// Every secret under the address, sorted by path.
    pub secrets: Vec<KvSecret>,
}
