//! The vault's contents: per-vault, per-kind maps of versioned objects, soft-deleted objects and
//! names inside their purge window, with the generic operations every kind shares (create a
//! version, get, list, update, delete, recover, purge, backup contents and restore).
//!
//! Storage holds names and versions only, never URLs: every `id` is rendered from the request's
//! host by the routes. Names are matched case-insensitively, as Azure does, and kept as written.
//! All times are milliseconds on the emulator's clock ([`super::clock::Clock`]); the wire shows
//! Unix seconds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most versions a backup blob may hold; Azure refuses to back up more.
pub const MAX_BACKUP_VERSIONS: usize = 500;

/// The three object kinds of a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Secret,
    Key,
    Certificate,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 3] = [Kind::Secret, Kind::Key, Kind::Certificate];

    /// `secret`, `key`, `certificate`.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Key => "key",
            Kind::Certificate => "certificate",
        }
    }

    /// `Secret`, `Key`, `Certificate`.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::Key => "Key",
            Kind::Certificate => "Certificate",
        }
    }

    /// The collection segment of the URL: `secrets`, `keys`, `certificates`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Key => "keys",
            Kind::Certificate => "certificates",
        }
    }

    /// The deleted collection segment: `deletedsecrets`, `deletedkeys`, `deletedcertificates`.
    pub fn deleted_plural(self) -> &'static str {
        match self {
            Kind::Secret => "deletedsecrets",
            Kind::Key => "deletedkeys",
            Kind::Certificate => "deletedcertificates",
        }
    }

    /// The 404 code Azure uses for this kind.
    pub fn not_found_code(self) -> &'static str {
        match self {
            Kind::Secret => "SecretNotFound",
            Kind::Key => "KeyNotFound",
            Kind::Certificate => "CertificateNotFound",
        }
    }

    /// One byte naming the kind in a backup blob's header.
    pub fn tag(self) -> u8 {
        match self {
            Kind::Secret => b'S',
            Kind::Key => b'K',
            Kind::Certificate => b'C',
        }
    }

    /// The kind named by a blob header byte.
    pub fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            b'S' => Some(Kind::Secret),
            b'K' => Some(Kind::Key),
            b'C' => Some(Kind::Certificate),
            _ => None,
        }
    }
}

/// A value that must never reach logs or Debug output (secret values, private key material).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The attributes every version carries; times in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl Attributes {
    /// Enabled, no window, created and updated at `now_s`.
    pub fn new(now_s: i64) -> Self {
        Self {
            enabled: true,
            nbf: None,
            exp: None,
            created: now_s,
            updated: now_s,
        }
    }
}

/// What a version holds besides its attributes. Keys and certificates keep their material as
/// JSON their routes define (a JWK with private parts, a certificate's DER and policy ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum Payload {
    /// A secret's value.
    Secret { value: Redacted<String> },
    /// A key's material.
    Key(Redacted<serde_json::Value>),
    /// A certificate's material.
    Certificate(Redacted<serde_json::Value>),
}

/// One version of an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// 32 lower-case hex digits.
    pub id: String,
    pub attributes: Attributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// True for the key and secret a certificate owns.
    #[serde(default)]
    pub managed: bool,
    pub payload: Payload,
}

impl Version {
    /// A fresh version with a new id, enabled, created now, no tags, unmanaged.
    pub fn new(now_s: i64, payload: Payload) -> Self {
        Self {
            id: new_version_id(),
            attributes: Attributes::new(now_s),
            tags: None,
            content_type: None,
            managed: false,
            payload,
        }
    }

    /// True when `exp` has passed or `nbf` has not come yet.
    pub fn is_outside_window(&self, now_s: i64) -> bool {
        self.attributes.exp.is_some_and(|exp| exp <= now_s)
            || self.attributes.nbf.is_some_and(|nbf| nbf > now_s)
    }
}

/// A named object and all its versions, oldest first (the last is the current version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    pub name: String,
    pub versions: Vec<Version>,
    /// Object-level data of keys and certificates (rotation policy, certificate policy,
    /// pending operation ...), `null` for secrets.
    #[serde(default)]
    pub meta: serde_json::Value,
    /// Until this instant (ms) the object answers 404 (eventual consistency after a recover).
    #[serde(default)]
    pub visible_at_ms: i64,
}

impl StoredObject {
    /// The current (newest) version.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// The version `id` (case-insensitive), or the current one for `None` or `""`.
    pub fn version(&self, id: Option<&str>) -> Option<&Version> {
        match id {
            None | Some("") => self.latest(),
            Some(id) => self.versions.iter().find(|v| v.id.eq_ignore_ascii_case(id)),
        }
    }

    /// Mutable access to the version `id`, or the current one for `None` or `""`.
    pub fn version_mut(&mut self, id: Option<&str>) -> Option<&mut Version> {
        match id {
            None | Some("") => self.versions.last_mut(),
            Some(id) => self
                .versions
                .iter_mut()
                .find(|v| v.id.eq_ignore_ascii_case(id)),
        }
    }
}

/// A soft-deleted object; times of the deletion in Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedObject {
    pub object: StoredObject,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
    /// Until this instant (ms) `GET /deleted…/{name}` answers 404 (Azure's delete latency).
    pub visible_at_ms: i64,
}

/// Why a store operation failed; routes turn it into Azure's answer with
/// [`super::error::ApiError::from_store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No such live object (or version).
    NotFound { version: Option<String> },
    /// No such deleted object (or not visible yet).
    DeletedNotFound,
    /// The name is soft-deleted.
    DeletedButRecoverable,
    /// The name was just deleted or purged and is still settling.
    BeingDeleted,
    /// Purge refused: the vault has purge protection.
    PurgeProtected,
    /// Restore over a live object; `version` is its current version.
    RestoreConflict { version: String },
    /// Backup refused: too many versions.
    TooManyVersions(usize),
}

/// The times an operation needs: now, and the settling delays in force.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub now_ms: i64,
    /// How long a delete (or a recover) takes to become visible.
    pub delete_delay_ms: i64,
    /// How long after a purge the name stays unusable.
    pub purge_window_ms: i64,
}

impl Timing {
    /// Now in Unix seconds.
    pub fn now_s(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }
}

/// A vault's soft-delete settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftDeletePolicy {
    pub retention_days: u32,
    pub purge_protection: bool,
}

impl SoftDeletePolicy {
    /// Azure's `recoveryLevel` for this policy.
    pub fn recovery_level(&self) -> &'static str {
        match (self.retention_days >= 90, self.purge_protection) {
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable+ProtectedSubscription",
            (false, false) => "CustomizedRecoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
        }
    }
}

/// The objects of one kind in one vault.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindStore {
    /// Live objects by lower-cased name.
    pub live: BTreeMap<String, StoredObject>,
    /// Soft-deleted objects by lower-cased name.
    pub deleted: BTreeMap<String, DeletedObject>,
    /// Purged names (lower-cased) and the instant (ms) their purge window ends.
    pub purging: BTreeMap<String, i64>,
}

/// Everything one vault holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultStore {
    pub policy: SoftDeletePolicy,
    pub secrets: KindStore,
    pub keys: KindStore,
    pub certificates: KindStore,
    /// Certificate issuers by lower-cased name: the issuer as a client set it, without `id`
    /// and without the password (which is never kept), plus `name` and `attributes`.
    #[serde(default)]
    pub issuers: BTreeMap<String, serde_json::Value>,
    /// The vault's certificate contacts (`{"contacts": [...]}`), if set.
    #[serde(default)]
    pub contacts: Option<serde_json::Value>,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A new version id: 32 lower-case hex digits.
pub fn new_version_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl VaultStore {
    /// An empty vault with the given soft-delete policy.
    pub fn new(policy: SoftDeletePolicy) -> Self {
        Self {
            policy,
            secrets: KindStore::default(),
            keys: KindStore::default(),
            certificates: KindStore::default(),
            issuers: BTreeMap::new(),
            contacts: None,
        }
    }

    /// The objects of `kind`.
    pub fn kind(&self, kind: Kind) -> &KindStore {
        match kind {
            Kind::Secret => &self.secrets,
            Kind::Key => &self.keys,
            Kind::Certificate => &self.certificates,
        }
    }

    /// Mutable access to the objects of `kind`.
    pub fn kind_mut(&mut self, kind: Kind) -> &mut KindStore {
        match kind {
            Kind::Secret => &mut self.secrets,
            Kind::Key => &mut self.keys,
            Kind::Certificate => &mut self.certificates,
        }
    }

    /// Purges what the clock says is due: deleted objects past their scheduled purge date and
    /// purge windows that have ended. Every operation calls it first.
    pub fn sweep(&mut self, now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        for kind in Kind::ALL {
            let store = self.kind_mut(kind);
            let due: Vec<String> = store
                .deleted
                .iter()
                .filter(|(_, d)| d.scheduled_purge_date <= now_s)
                .map(|(k, _)| k.clone())
                .collect();
            for name in due {
                store.deleted.remove(&name);
            }
            store.purging.retain(|_, until| *until > now_ms);
        }
    }

    /// Refuses a name that is soft-deleted (409 `ObjectIsDeletedButRecoverable`) or still
    /// settling after a delete or purge (409 `ObjectIsBeingDeleted`).
    pub fn check_name_free(&mut self, kind: Kind, name: &str, t: Timing) -> Result<(), StoreError> {
        self.sweep(t.now_ms);
        let store = self.kind(kind);
        let k = key(name);
        if let Some(deleted) = store.deleted.get(&k) {
            return Err(if deleted.visible_at_ms > t.now_ms {
                StoreError::BeingDeleted
            } else {
                StoreError::DeletedButRecoverable
            });
        }
        if store.purging.get(&k).is_some_and(|until| *until > t.now_ms) {
            return Err(StoreError::BeingDeleted);
        }
        Ok(())
    }

    /// Adds `version` as the new current version of `name`, creating the object if needed.
    /// Refused on a soft-deleted or settling name.
    pub fn create_version(
        &mut self,
        kind: Kind,
        name: &str,
        version: Version,
        t: Timing,
    ) -> Result<Version, StoreError> {
        self.check_name_free(kind, name, t)?;
        let store = self.kind_mut(kind);
        let object = store.live.entry(key(name)).or_insert_with(|| StoredObject {
            name: name.to_string(),
            versions: Vec::new(),
            meta: serde_json::Value::Null,
            visible_at_ms: 0,
        });
        object.versions.push(version.clone());
        Ok(version)
    }

    /// The live object `name` (404 while a recover is settling).
    pub fn object(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<&StoredObject, StoreError> {
        self.sweep(t.now_ms);
        match self.kind(kind).live.get(&key(name)) {
            Some(object) if object.visible_at_ms <= t.now_ms => Ok(object),
            _ => Err(StoreError::NotFound { version: None }),
        }
    }

    /// Mutable access to the live object `name`.
    pub fn object_mut(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<&mut StoredObject, StoreError> {
        self.sweep(t.now_ms);
        match self.kind_mut(kind).live.get_mut(&key(name)) {
            Some(object) if object.visible_at_ms <= t.now_ms => Ok(object),
            _ => Err(StoreError::NotFound { version: None }),
        }
    }

    /// A copy of version `version` of `name` (the current one for `None` or `""`).
    pub fn get(
        &mut self,
        kind: Kind,
        name: &str,
        version: Option<&str>,
        t: Timing,
    ) -> Result<Version, StoreError> {
        let object = self.object(kind, name, t)?;
        object
            .version(version)
            .cloned()
            .ok_or(StoreError::NotFound {
                version: version.map(str::to_string),
            })
    }

    /// Applies `change` to version `version` of `name` and returns the result; `updated` is set.
    pub fn update_version(
        &mut self,
        kind: Kind,
        name: &str,
        version: Option<&str>,
        t: Timing,
        change: impl FnOnce(&mut Version),
    ) -> Result<Version, StoreError> {
        let object = self.object_mut(kind, name, t)?;
        let v = object.version_mut(version).ok_or(StoreError::NotFound {
            version: version.map(str::to_string),
        })?;
        change(v);
        v.attributes.updated = t.now_s();
        Ok(v.clone())
    }

    /// Copies of the visible live objects of `kind` whose lower-cased name sorts after
    /// `after`, in that order, at most `limit` of them: what one list page needs, without
    /// copying the rest of the vault while the vault's lock is held.
    pub fn list_after(
        &mut self,
        kind: Kind,
        t: Timing,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<StoredObject> {
        use std::ops::Bound;
        self.sweep(t.now_ms);
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.kind(kind)
            .live
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|(_, o)| o)
            .filter(|o| o.visible_at_ms <= t.now_ms && !o.versions.is_empty())
            .take(limit)
            .cloned()
            .collect()
    }

    /// Copies of every version of `name`, oldest first.
    pub fn versions(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<Vec<Version>, StoreError> {
        Ok(self.object(kind, name, t)?.versions.clone())
    }

    /// Soft-deletes `name`: it leaves the live list at once and shows in the deleted list after
    /// the delete delay; it is purged automatically after the retention period.
    pub fn delete(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<DeletedObject, StoreError> {
        self.object(kind, name, t)?;
        let retention = i64::from(self.policy.retention_days) * 86_400;
        let store = self.kind_mut(kind);
        let object = store
            .live
            .remove(&key(name))
            .ok_or(StoreError::NotFound { version: None })?;
        let deleted = DeletedObject {
            object,
            deleted_date: t.now_s(),
            scheduled_purge_date: t.now_s() + retention,
            visible_at_ms: t.now_ms + t.delete_delay_ms,
        };
        store.deleted.insert(key(name), deleted.clone());
        Ok(deleted)
    }

    /// A copy of the deleted object `name` once its deletion is visible.
    pub fn deleted(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<DeletedObject, StoreError> {
        self.sweep(t.now_ms);
        match self.kind(kind).deleted.get(&key(name)) {
            Some(d) if d.visible_at_ms <= t.now_ms => Ok(d.clone()),
            _ => Err(StoreError::DeletedNotFound),
        }
    }

    /// Copies of the visible deleted objects of `kind`, ordered by lower-cased name.
    pub fn deleted_list(&mut self, kind: Kind, t: Timing) -> Vec<DeletedObject> {
        self.sweep(t.now_ms);
        self.kind(kind)
            .deleted
            .values()
            .filter(|d| d.visible_at_ms <= t.now_ms)
            .cloned()
            .collect()
    }

    /// Brings `name` back from the deleted list with every version; it answers 404 for the
    /// delete delay before it shows again.
    pub fn recover(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<StoredObject, StoreError> {
        self.deleted(kind, name, t)?;
        let store = self.kind_mut(kind);
        let deleted = store
            .deleted
            .remove(&key(name))
            .ok_or(StoreError::DeletedNotFound)?;
        let mut object = deleted.object;
        object.visible_at_ms = t.now_ms + t.delete_delay_ms;
        store.live.insert(key(name), object.clone());
        Ok(object)
    }

    /// Removes the deleted object `name` for good; the name stays unusable for the purge window.
    /// Refused under purge protection.
    pub fn purge(&mut self, kind: Kind, name: &str, t: Timing) -> Result<(), StoreError> {
        self.deleted(kind, name, t)?;
        if self.policy.purge_protection {
            return Err(StoreError::PurgeProtected);
        }
        let store = self.kind_mut(kind);
        store.deleted.remove(&key(name));
        if t.purge_window_ms > 0 {
            store
                .purging
                .insert(key(name), t.now_ms + t.purge_window_ms);
        }
        Ok(())
    }

    /// A copy of the live object `name` for a backup, every version; refused past
    /// [`MAX_BACKUP_VERSIONS`].
    pub fn backup(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<StoredObject, StoreError> {
        let object = self.object(kind, name, t)?.clone();
        if object.versions.len() > MAX_BACKUP_VERSIONS {
            return Err(StoreError::TooManyVersions(object.versions.len()));
        }
        Ok(object)
    }

    /// Checks that `object` could be restored as `kind` now: not live (409 `Conflict`), not
    /// soft-deleted, not settling.
    pub fn check_restorable(
        &mut self,
        kind: Kind,
        name: &str,
        t: Timing,
    ) -> Result<(), StoreError> {
        self.sweep(t.now_ms);
        if let Some(live) = self.kind(kind).live.get(&key(name)) {
            return Err(StoreError::RestoreConflict {
                version: live.latest().map(|v| v.id.clone()).unwrap_or_default(),
            });
        }
        self.check_name_free(kind, name, t)
    }

    /// Puts a backed-up object back with its version ids and timestamps unchanged.
    pub fn restore(
        &mut self,
        kind: Kind,
        object: StoredObject,
        t: Timing,
    ) -> Result<StoredObject, StoreError> {
        self.check_restorable(kind, &object.name, t)?;
        let mut object = object;
        object.visible_at_ms = 0;
        self.kind_mut(kind)
            .live
            .insert(key(&object.name), object.clone());
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(now_ms: i64) -> Timing {
        Timing {
            now_ms,
            delete_delay_ms: 1_000,
            purge_window_ms: 5_000,
        }
    }

    fn secret(now_s: i64, value: &str) -> Version {
        Version::new(
            now_s,
            Payload::Secret {
                value: Redacted(value.to_string()),
            },
        )
    }

    #[test]
    fn delete_settles_then_recover_and_purge_window_block_the_name() {
        let policy = SoftDeletePolicy {
            retention_days: 7,
            purge_protection: false,
        };
        let mut store = VaultStore::new(policy);
        let t0 = timing(1_000_000);
        store
            .create_version(Kind::Secret, "Alpha", secret(t0.now_s(), "a"), t0)
            .unwrap();
        store.delete(Kind::Secret, "alpha", t0).unwrap();
        assert_eq!(
            store.deleted(Kind::Secret, "alpha", t0),
            Err(StoreError::DeletedNotFound)
        );
        assert_eq!(
            store.check_name_free(Kind::Secret, "ALPHA", t0),
            Err(StoreError::BeingDeleted)
        );
        let t1 = timing(1_001_000);
        assert_eq!(
            store.check_name_free(Kind::Secret, "alpha", t1),
            Err(StoreError::DeletedButRecoverable)
        );
        store.purge(Kind::Secret, "alpha", t1).unwrap();
        assert_eq!(
            store.check_restorable(Kind::Secret, "alpha", t1),
            Err(StoreError::BeingDeleted)
        );
        assert_eq!(
            store.check_restorable(Kind::Secret, "alpha", timing(1_006_000)),
            Ok(())
        );
    }

    #[test]
    fn backup_refuses_more_than_500_versions() {
        let mut store = VaultStore::new(SoftDeletePolicy {
            retention_days: 90,
            purge_protection: false,
        });
        let t = timing(0);
        for i in 0..=MAX_BACKUP_VERSIONS {
            store
                .create_version(Kind::Secret, "big", secret(0, &i.to_string()), t)
                .unwrap();
        }
        assert_eq!(
            store.backup(Kind::Secret, "big", t),
            Err(StoreError::TooManyVersions(MAX_BACKUP_VERSIONS + 1))
        );
    }

    #[test]
    fn retention_purges_automatically() {
        let policy = SoftDeletePolicy {
            retention_days: 7,
            purge_protection: true,
        };
        let mut store = VaultStore::new(policy);
        let t0 = timing(0);
        store
            .create_version(Kind::Secret, "a", secret(0, "x"), t0)
            .unwrap();
        store.delete(Kind::Secret, "a", t0).unwrap();
        assert_eq!(
            store.purge(Kind::Secret, "a", timing(2_000)),
            Err(StoreError::PurgeProtected)
        );
        let later = timing(7 * 86_400 * 1000);
        assert_eq!(store.check_name_free(Kind::Secret, "a", later), Ok(()));
    }
}
