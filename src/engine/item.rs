//! Items as the engine plans with them: [`ItemHead`] holds what a plan needs of an item
//! (names, versions, attributes, tags and digests of the values, never a value), and
//! [`ItemData`] adds the values and blobs a write needs, for one item at a time.
//!
//! Any store that is a source (an archive today; a live vault for copies) describes its items
//! as heads for planning and hands out [`ItemData`] item by item for applying, so memory for
//! planning grows with the number of items, not with their size, and a write holds one item.

use std::collections::BTreeMap;

use age::secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

use crate::archive::{Attributes as ArchivedAttributes, SecretRecord};
use crate::model::ItemKind;
use crate::vault::{Attributes, BackupBlob};

/// A SHA-256 digest of something compared, never printed.
pub type Fingerprint = [u8; 32];

/// One plain secret version without its value: its metadata and two digests.
#[derive(Debug, Clone)]
pub struct VersionHead {
    /// The version id.
    pub version: String,
    /// Whether it was the current version when captured.
    pub current: bool,
    /// Content type.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Attributes as captured.
    pub attributes: ArchivedAttributes,
    /// SHA-256 of the value.
    pub value_digest: Fingerprint,
    /// [`content_digest`] of the version: value, content type, tags, `enabled`, `nbf`, `exp`.
    pub content_digest: Fingerprint,
}

impl VersionHead {
    /// The head of a version read with its value; the value itself is not kept.
    pub fn of(record: &SecretRecord) -> Self {
        let value = record.value.expose_secret();
        Self {
            version: record.version.clone(),
            current: record.current,
            content_type: record.content_type.clone(),
            tags: record.tags.clone(),
            attributes: record.attributes.clone(),
            value_digest: value_digest(value),
            content_digest: content_digest(
                value,
                record.content_type.as_deref(),
                &record.tags,
                &vault_attributes(&record.attributes),
            ),
        }
    }
}

/// An item's native backup blob, without the blob: the metadata recorded next to it.
#[derive(Debug, Clone, Default)]
pub struct BlobHead {
    /// The item's current version when captured.
    pub version: Option<String>,
    /// Tags of the current version.
    pub tags: BTreeMap<String, String>,
    /// Attributes of the current version.
    pub attributes: ArchivedAttributes,
    /// Content type (secrets).
    pub content_type: Option<String>,
}

/// A certificate export (certificate with its private key), without the bytes.
#[derive(Debug, Clone)]
pub struct ExportHead {
    /// `application/x-pkcs12` or `application/x-pem-file`.
    pub content_type: String,
    /// The certificate version exported.
    pub version: String,
}

/// What a plan knows of one source item. Holds names, metadata and digests, never values.
#[derive(Debug, Clone)]
pub struct ItemHead {
    /// The item's kind.
    pub kind: ItemKind,
    /// The item's name as captured.
    pub name: String,
    /// The native blob's metadata, when the source holds one.
    pub blob: Option<BlobHead>,
    /// Plain secret versions, oldest first, the current one last.
    pub versions: Vec<VersionHead>,
    /// The certificate export, when the policy allowed one.
    pub export: Option<ExportHead>,
    /// SHA-1 thumbprint of the certificate's public X.509 certificate (DER), when captured.
    pub thumbprint: Option<Vec<u8>>,
    /// Why the source could not capture it, when it says so.
    pub skipped: Option<String>,
}

impl ItemHead {
    /// An item with only its kind and name known.
    pub fn new(kind: ItemKind, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            blob: None,
            versions: Vec::new(),
            export: None,
            thumbprint: None,
            skipped: None,
        }
    }

    /// The key items are matched on: kind and lower-case name (Key Vault names are
    /// case-insensitive).
    pub fn key(&self) -> (ItemKind, String) {
        (self.kind, self.name.to_ascii_lowercase())
    }

    /// The version the item had when captured.
    pub fn captured_version(&self) -> Option<&str> {
        self.versions
            .last()
            .map(|r| r.version.as_str())
            .or_else(|| self.blob.as_ref().and_then(|b| b.version.as_deref()))
    }

    /// Whether a plain write can bring it back (secret values, exportable certificates).
    pub fn has_plain_form(&self) -> bool {
        match self.kind {
            ItemKind::Secret => !self.versions.is_empty(),
            ItemKind::Certificate => self.export.is_some(),
            ItemKind::Key => false,
        }
    }

    /// Why there is no plain form, for the plan.
    pub fn no_plain_reason(&self) -> String {
        match self.kind {
            ItemKind::Key => "keys have no plain form: a key comes back only by a native \
                              restore into a vault of the source's subscription and geography"
                .to_owned(),
            ItemKind::Secret => "no plain value in the archive (the secret was disabled when \
                                 captured): only its native blob holds it"
                .to_owned(),
            ItemKind::Certificate => "the private key was not exportable when captured: only \
                                      the native blob holds it"
                .to_owned(),
        }
    }

    /// Sorts the versions oldest first, the current one last: replaying in this order leaves
    /// the source's current version current.
    pub fn sort_versions(&mut self) {
        self.versions
            .sort_by_key(|r| (r.current, r.attributes.created.map(|t| t.unix_timestamp())));
    }
}

/// One item with the values and blobs a write needs. Held one item (or a few, under
/// concurrency) at a time; `Debug` shows no value.
#[derive(Debug)]
pub struct ItemData {
    /// The item's head (the plan was made from an equal one).
    pub head: ItemHead,
    /// The native blob.
    pub blob: Option<BackupBlob>,
    /// Plain secret versions with their values, in the head's order.
    pub versions: Vec<SecretRecord>,
    /// The certificate with its private key (PFX bytes or PEM text).
    pub export: Option<SecretBox<[u8]>>,
    /// The certificate's policy as captured.
    pub policy: Option<serde_json::Value>,
}

impl ItemData {
    /// An item with no data yet.
    pub fn new(head: ItemHead) -> Self {
        Self {
            head,
            blob: None,
            versions: Vec::new(),
            export: None,
            policy: None,
        }
    }

    /// Sorts the plain versions as [`ItemHead::sort_versions`] sorts their heads.
    pub fn sort_versions(&mut self) {
        self.versions
            .sort_by_key(|r| (r.current, r.attributes.created.map(|t| t.unix_timestamp())));
    }
}

/// SHA-256 of a value.
pub fn value_digest(value: &str) -> Fingerprint {
    Sha256::digest(value.as_bytes()).into()
}

/// SHA-1 of bytes: Key Vault's certificate thumbprint.
pub fn sha1_of(bytes: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes).to_vec()
}

/// Digest of one secret version's whole content: value, content type, tags, `enabled`,
/// `nbf`, `exp` (what a plain write sets).
pub fn content_digest(
    value: &str,
    content_type: Option<&str>,
    tags: &BTreeMap<String, String>,
    attributes: &Attributes,
) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(value_digest(value));
    hash.update(content_type.unwrap_or("\u{0}none").as_bytes());
    for (k, v) in tags {
        hash.update((k.len() as u64).to_le_bytes());
        hash.update(k.as_bytes());
        hash.update((v.len() as u64).to_le_bytes());
        hash.update(v.as_bytes());
    }
    hash.update([u8::from(attributes.enabled.unwrap_or(true))]);
    for t in [attributes.not_before, attributes.expires] {
        hash.update(t.map_or(i64::MIN, |t| t.unix_timestamp()).to_le_bytes());
    }
    hash.finalize().into()
}

/// The writable attributes of an archived version, as the vault models them.
pub fn vault_attributes(archived: &ArchivedAttributes) -> Attributes {
    Attributes {
        enabled: archived.enabled,
        not_before: archived.not_before,
        expires: archived.expires,
        ..Attributes::default()
    }
}
