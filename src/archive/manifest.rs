//! The manifest and the JSON documents inside an archive (`docs/FORMAT.md`, "Manifest").
//!
//! [`Manifest`] is `manifest.json`, the archive's table of contents: where the items came
//! from, when, what was captured (every entry with its size and SHA-256) and what was not.
//! [`SecretRecord`] is one plain secret version, the only document that holds a value; its
//! value stays in a [`SecretString`] and its `Debug` output is redacted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use age::secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::VerifyError;
use super::layout;

/// The three kinds of Key Vault items: the crate's one item kind, named `Kind` here.
pub use crate::model::ItemKind as Kind;

/// What an entry holds; decides its path and its content rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryType {
    /// One plain secret version as JSON ([`SecretRecord`]); kind `secret`.
    SecretVersion,
    /// A native Key Vault backup blob (all versions of one item), opaque bytes.
    Backup,
    /// A certificate with its private key as exported by the vault (PFX or PEM).
    CertificateExport,
    /// A key's public part as a JSON Web Key.
    KeyPublicJwk,
    /// A certificate's public X.509 certificate (DER).
    CertificatePublic,
    /// Policy metadata as JSON: a key's rotation policy or a certificate's policy.
    Policy,
}

impl EntryType {
    /// The name used in `manifest.json` and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::SecretVersion => "secret-version",
            EntryType::Backup => "backup",
            EntryType::CertificateExport => "certificate-export",
            EntryType::KeyPublicJwk => "key-public-jwk",
            EntryType::CertificatePublic => "certificate-public",
            EntryType::Policy => "policy",
        }
    }
}

/// An item's attributes as Key Vault reports them. Every field is optional: a missing field
/// means the vault did not report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// Whether the item can be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Not valid before this time (`nbf`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_before: Option<OffsetDateTime>,
    /// Not valid after this time (`exp`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires: Option<OffsetDateTime>,
    /// When this version was created.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub created: Option<OffsetDateTime>,
    /// When this version was last updated.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub updated: Option<OffsetDateTime>,
}

impl Attributes {
    /// True when no attribute is set (the field is then left out of the JSON).
    pub fn is_empty(&self) -> bool {
        *self == Attributes::default()
    }
}

/// One plain secret version: the content of a `secret-version` entry. The value is a
/// [`SecretString`]; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretRecord {
    /// The secret's name.
    pub name: String,
    /// The version id.
    pub version: String,
    /// The value.
    pub value: SecretString,
    /// The content type, if set.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Attributes of this version.
    pub attributes: Attributes,
    /// True for the version the vault served as current when it was captured.
    pub current: bool,
}

impl fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"[redacted]")
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("attributes", &self.attributes)
            .field("current", &self.current)
            .finish()
    }
}

/// The JSON shape of a `secret-version` entry, borrowed for writing.
#[derive(Serialize)]
struct SecretDocOut<'a> {
    name: &'a str,
    version: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    attributes: &'a Attributes,
    current: bool,
}

/// The JSON shape of a `secret-version` entry, owned for reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretDocIn {
    name: String,
    version: String,
    value: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    current: bool,
}

impl SecretRecord {
    /// The entry's bytes. The caller zeroizes the buffer once written: it holds the value.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&SecretDocOut {
            name: &self.name,
            version: &self.version,
            value: self.value.expose_secret(),
            content_type: self.content_type.as_deref(),
            tags: &self.tags,
            attributes: &self.attributes,
            current: self.current,
        })
    }

    /// Parses an entry; the error never quotes the input (it holds a value).
    pub(crate) fn from_json(path: &str, bytes: &[u8]) -> Result<Self, VerifyError> {
        let doc: SecretDocIn =
            serde_json::from_slice(bytes).map_err(|e| VerifyError::InvalidEntry {
                path: path.to_owned(),
                // serde_json's messages name positions and expected types, not the input.
                reason: format!("not a secret version document ({})", e.classify_name()),
            })?;
        Ok(SecretRecord {
            name: doc.name,
            version: doc.version,
            value: SecretString::from(doc.value),
            content_type: doc.content_type,
            tags: doc.tags,
            attributes: doc.attributes,
            current: doc.current,
        })
    }
}

/// serde_json error categories as words, so no message can echo a value.
pub(super) trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "wrong fields or types",
            serde_json::error::Category::Eof => "JSON ends early",
        }
    }
}

/// Where the items came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The vault's name.
    pub vault: String,
    /// The vault's URL.
    pub url: String,
}

/// The time window of the run that captured the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunWindow {
    /// When capture started.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When capture ended.
    #[serde(with = "time::serde::rfc3339")]
    pub finished: OffsetDateTime,
}

/// Counts of what the archive holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Distinct secrets with at least one entry.
    pub secrets: u64,
    /// Distinct keys with at least one entry.
    pub keys: u64,
    /// Distinct certificates with at least one entry.
    pub certificates: u64,
    /// Entries listed in `entries`.
    pub entries: u64,
    /// Items listed in `skipped`.
    pub skipped: u64,
    /// Items listed in `deleted`.
    pub deleted: u64,
    /// KV secrets (format version 2): `kv-metadata` entries. Omitted when zero, so a Key
    /// Vault archive's counts read as they always did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kv_secrets: u64,
    /// KV versions the metadata documents record, in every state.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kv_versions: u64,
    /// Of those, soft-deleted (and not destroyed): recorded, no data entry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kv_deleted_versions: u64,
    /// Of those, destroyed: recorded, no data entry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kv_destroyed_versions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Counts {
    /// The item count for one kind.
    pub fn items(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Secret => self.secrets,
            Kind::Key => self.keys,
            Kind::Certificate => self.certificates,
        }
    }
}

/// One entry of the archive as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The tar path (`secrets/db/versions/0a1b….json`).
    pub path: String,
    /// What the entry holds.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// The item's kind.
    pub kind: Kind,
    /// The item's name.
    pub name: String,
    /// The version this entry is (secret versions, exports, public parts) or the current
    /// version when captured (backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Every version a backup blob holds, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// True for the secret version that was current when captured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub current: bool,
    /// The item's attributes.
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
    /// The item's tags.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// The content type (of the secret, or of the exported certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content (lowercase hex in JSON).
    pub sha256: Sha256Digest,
}

/// A SHA-256 digest; 32 bytes in memory, 64 lowercase hex digits in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the digest's length.
        let text = hex::encode_to_slice(self.0, &mut buf)
            .ok()
            .and_then(|()| std::str::from_utf8(&buf).ok())
            .unwrap_or_default();
        serializer.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut out = [0u8; 32];
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(serde::de::Error::custom(
                "sha256 must be 64 lowercase hex digits",
            ));
        }
        hex::decode_to_slice(text.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(Sha256Digest(out))
    }
}

/// Tags in a compact form (a sorted boxed slice; a `BTreeMap` node costs half a kilobyte
/// per entry), serialized as a JSON object.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tags(Box<[(Box<str>, Box<str>)]>);

impl Tags {
    /// True when there is no tag.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The value of tag `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// The tags in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The tags as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl From<&BTreeMap<String, String>> for Tags {
    fn from(map: &BTreeMap<String, String>) -> Self {
        Tags(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Tags::from(&map))
    }
}

/// An item that could not be captured, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedItem {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Why (`SecretDisabled: the secret is disabled`…).
    pub reason: String,
}

/// A soft-deleted item: listed, not captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedItem {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// When it was deleted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub deleted_on: Option<OffsetDateTime>,
    /// When the vault will purge it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub scheduled_purge: Option<OffsetDateTime>,
}

/// An item whose current version changed while the run captured it, and was captured again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecapturedItem {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// The version first seen: the one current when the item was listed, when the vault's
    /// version list tells it, else the one the first capture read.
    pub first_version: String,
    /// The version finally captured.
    pub captured_version: String,
}

/// Which program wrote the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// "coldvault".
    pub name: String,
    /// Its version.
    pub version: String,
}

/// `manifest.json`: the archive's table of contents.
///
/// In JSON, `entries` lists Key Vault entries ([`Manifest::entries`]) and KV entries
/// ([`Manifest::kv_entries`], kind `kv-secret`) in one array, told apart by their `kind`;
/// in memory they are two lists, so code that handles Key Vault items never meets a KV
/// secret (a format version 2 archive holds KV entries only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ManifestIn")]
pub struct Manifest {
    /// Always `coldvault-archive`.
    pub format: String,
    /// The format version (`1`).
    pub format_version: u64,
    /// The writer.
    pub tool: Tool,
    /// When the archive was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The capture window, when the writer knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunWindow>,
    /// Where the items came from.
    pub source: Source,
    /// Counts; they must agree with the lists.
    pub counts: Counts,
    /// Every Key Vault entry other than `coldvault-archive.json` and `manifest.json`.
    pub entries: Vec<ManifestEntry>,
    /// Every KV entry (format version 2).
    pub kv_entries: Vec<KvEntry>,
    /// Items that could not be captured.
    pub skipped: Vec<SkippedItem>,
    /// Soft-deleted items, listed and not captured.
    pub deleted: Vec<DeletedItem>,
    /// Items captured again because they changed during the run.
    pub recaptured: Vec<RecapturedItem>,
}

/// What a KV entry holds (format version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvEntryType {
    /// `kv/ENC/metadata.json`: the secret's metadata and every version's state.
    KvMetadata,
    /// `kv/ENC/versions/N.json`: one live version's data.
    KvVersion,
}

impl KvEntryType {
    /// The name used in `manifest.json` and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            KvEntryType::KvMetadata => "kv-metadata",
            KvEntryType::KvVersion => "kv-version",
        }
    }
}

/// The `kind` of every KV entry in `manifest.json`.
pub const KV_KIND: &str = "kv-secret";

/// One KV entry as the manifest lists it (kind `kv-secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The tar path (`kv/app%2Fdb/versions/3.json`).
    pub path: String,
    /// What the entry holds.
    pub entry_type: KvEntryType,
    /// The KV secret's path under the mount, exact and case-sensitive (`app/db`).
    pub name: String,
    /// The version a `kv-version` entry holds; `None` for `kv-metadata`.
    pub version: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256Digest,
}

/// A KV entry's JSON form, borrowed for writing.
#[derive(Serialize)]
struct KvEntryOut<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    entry_type: KvEntryType,
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    size: u64,
    sha256: Sha256Digest,
}

/// One element of the manifest's `entries` array, either kind, for writing.
#[derive(Serialize)]
#[serde(untagged)]
enum EntryOut<'a> {
    Item(&'a ManifestEntry),
    Kv(KvEntryOut<'a>),
}

/// The manifest's `entries` array: the Key Vault entries, then the KV entries.
struct EntriesOut<'a>(&'a [ManifestEntry], &'a [KvEntry]);

impl Serialize for EntriesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kv = self.1.iter().map(|e| {
            EntryOut::Kv(KvEntryOut {
                path: &e.path,
                entry_type: e.entry_type,
                kind: KV_KIND,
                name: &e.name,
                version: e.version,
                size: e.size,
                sha256: e.sha256,
            })
        });
        serializer.collect_seq(self.0.iter().map(EntryOut::Item).chain(kv))
    }
}

/// The manifest's JSON form, borrowed for writing: field for field what version 1 wrote,
/// so Key Vault archives stay byte-identical.
#[derive(Serialize)]
struct ManifestOut<'a> {
    format: &'a str,
    format_version: u64,
    tool: &'a Tool,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: &'a Option<RunWindow>,
    source: &'a Source,
    counts: &'a Counts,
    entries: EntriesOut<'a>,
    skipped: &'a [SkippedItem],
    deleted: &'a [DeletedItem],
    recaptured: &'a [RecapturedItem],
}

impl Serialize for Manifest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ManifestOut {
            format: &self.format,
            format_version: self.format_version,
            tool: &self.tool,
            created: self.created,
            run: &self.run,
            source: &self.source,
            counts: &self.counts,
            entries: EntriesOut(&self.entries, &self.kv_entries),
            skipped: &self.skipped,
            deleted: &self.deleted,
            recaptured: &self.recaptured,
        }
        .serialize(serializer)
    }
}

/// The manifest's JSON form, for reading.
#[derive(Deserialize)]
struct ManifestIn {
    format: String,
    format_version: u64,
    tool: Tool,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(default)]
    run: Option<RunWindow>,
    source: Source,
    counts: Counts,
    entries: EntriesIn,
    #[serde(default)]
    skipped: Vec<SkippedItem>,
    #[serde(default)]
    deleted: Vec<DeletedItem>,
    #[serde(default)]
    recaptured: Vec<RecapturedItem>,
}

impl From<ManifestIn> for Manifest {
    fn from(m: ManifestIn) -> Self {
        Manifest {
            format: m.format,
            format_version: m.format_version,
            tool: m.tool,
            created: m.created,
            run: m.run,
            source: m.source,
            counts: m.counts,
            entries: m.entries.items,
            kv_entries: m.entries.kv,
            skipped: m.skipped,
            deleted: m.deleted,
            recaptured: m.recaptured,
        }
    }
}

/// The `entries` array read and split by kind as it is parsed (no second copy).
#[derive(Default)]
struct EntriesIn {
    items: Vec<ManifestEntry>,
    kv: Vec<KvEntry>,
}

impl<'de> Deserialize<'de> for EntriesIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = EntriesIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of entries")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EntriesIn, A::Error> {
                let mut out = EntriesIn::default();
                while let Some(entry) = seq.next_element::<EntryIn>()? {
                    match entry.split().map_err(serde::de::Error::custom)? {
                        Either::Item(item) => out.items.push(item),
                        Either::Kv(kv) => out.kv.push(kv),
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Visit)
    }
}

enum Either {
    Item(ManifestEntry),
    Kv(KvEntry),
}

/// Every entry type of either kind, as `type` spells it.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum AnyEntryType {
    SecretVersion,
    Backup,
    CertificateExport,
    KeyPublicJwk,
    CertificatePublic,
    Policy,
    KvMetadata,
    KvVersion,
}

/// Every kind, as `kind` spells it.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum AnyKind {
    Secret,
    Key,
    Certificate,
    KvSecret,
}

/// A version: a Key Vault version id (a string) or a KV version number.
enum AnyVersion {
    Text(String),
    Number(u64),
}

impl<'de> Deserialize<'de> for AnyVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = AnyVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version id or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AnyVersion, E> {
                Ok(AnyVersion::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<AnyVersion, E> {
                Ok(AnyVersion::Text(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AnyVersion, E> {
                Ok(AnyVersion::Number(v))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// One element of `entries`, either kind, for reading: the union of both shapes.
#[derive(Deserialize)]
struct EntryIn {
    path: String,
    #[serde(rename = "type")]
    entry_type: AnyEntryType,
    kind: AnyKind,
    name: String,
    #[serde(default)]
    version: Option<AnyVersion>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    current: bool,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    content_type: Option<String>,
    size: u64,
    sha256: Sha256Digest,
}

impl EntryIn {
    fn split(self) -> Result<Either, String> {
        let kv_type = match self.entry_type {
            AnyEntryType::KvMetadata => Some(KvEntryType::KvMetadata),
            AnyEntryType::KvVersion => Some(KvEntryType::KvVersion),
            _ => None,
        };
        let kind = match self.kind {
            AnyKind::Secret => Some(Kind::Secret),
            AnyKind::Key => Some(Kind::Key),
            AnyKind::Certificate => Some(Kind::Certificate),
            AnyKind::KvSecret => None,
        };
        let wrong = || {
            format!(
                "entry {:?}: its type does not belong to its kind",
                self.path
            )
        };
        match (kind, kv_type) {
            (None, Some(entry_type)) => {
                let version = match self.version {
                    None => None,
                    Some(AnyVersion::Number(n)) => Some(n),
                    Some(AnyVersion::Text(_)) => {
                        return Err(format!("entry {:?}: a KV version is a number", self.path));
                    }
                };
                Ok(Either::Kv(KvEntry {
                    path: self.path,
                    entry_type,
                    name: self.name,
                    version,
                    size: self.size,
                    sha256: self.sha256,
                }))
            }
            (Some(kind), None) => {
                let entry_type = match self.entry_type {
                    AnyEntryType::SecretVersion => EntryType::SecretVersion,
                    AnyEntryType::Backup => EntryType::Backup,
                    AnyEntryType::CertificateExport => EntryType::CertificateExport,
                    AnyEntryType::KeyPublicJwk => EntryType::KeyPublicJwk,
                    AnyEntryType::CertificatePublic => EntryType::CertificatePublic,
                    AnyEntryType::Policy => EntryType::Policy,
                    AnyEntryType::KvMetadata | AnyEntryType::KvVersion => {
                        return Err(wrong());
                    }
                };
                let version = match self.version {
                    None => None,
                    Some(AnyVersion::Text(v)) => Some(v),
                    Some(AnyVersion::Number(_)) => {
                        return Err(format!(
                            "entry {:?}: a Key Vault version is a string",
                            self.path
                        ));
                    }
                };
                Ok(Either::Item(ManifestEntry {
                    path: self.path,
                    entry_type,
                    kind,
                    name: self.name,
                    version,
                    versions: self.versions,
                    current: self.current,
                    attributes: self.attributes,
                    tags: self.tags,
                    content_type: self.content_type,
                    size: self.size,
                    sha256: self.sha256,
                }))
            }
            _ => Err(wrong()),
        }
    }
}

/// `coldvault-archive.json`, the first entry: enough to refuse an unknown version before
/// reading anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatMarker {
    /// Always `coldvault-archive`.
    pub format: String,
    /// The format version.
    pub format_version: u64,
}

/// A case-folded string's identity in [`Manifest::check`]: 128 bits of its SHA-256.
type FoldedKey = [u8; 16];

fn folded_key(scope: &str, text: &str) -> FoldedKey {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(scope.as_bytes());
    hasher.update([0]);
    hasher.update(text.to_ascii_lowercase().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hasher.finalize()[..16]);
    key
}

impl Manifest {
    /// Counts computed from the lists, for writing and for checking.
    pub fn computed_counts(&self) -> Counts {
        let mut seen = std::collections::HashSet::new();
        let mut counts = Counts {
            entries: self.entries.len() as u64,
            skipped: self.skipped.len() as u64,
            deleted: self.deleted.len() as u64,
            ..Counts::default()
        };
        for entry in &self.entries {
            if seen.insert((entry.kind, entry.name.to_ascii_lowercase())) {
                match entry.kind {
                    Kind::Secret => counts.secrets += 1,
                    Kind::Key => counts.keys += 1,
                    Kind::Certificate => counts.certificates += 1,
                }
            }
        }
        counts.entries += self.kv_entries.len() as u64;
        counts.kv_secrets = self
            .kv_entries
            .iter()
            .filter(|e| e.entry_type == KvEntryType::KvMetadata)
            .count() as u64;
        // The version states are in the metadata documents, not in the lists: the reader
        // checks these against the documents it reads ([`Manifest::check`] checks that
        // they agree with the number of version entries).
        counts.kv_versions = self.counts.kv_versions;
        counts.kv_deleted_versions = self.counts.kv_deleted_versions;
        counts.kv_destroyed_versions = self.counts.kv_destroyed_versions;
        counts
    }

    /// Whether this is a KV archive (format version 2).
    pub fn is_kv(&self) -> bool {
        self.format_version == u64::from(super::KV_FORMAT_VERSION)
    }

    /// The rules of KV entries that the manifest alone can check: canonical paths, no
    /// duplicates, a metadata entry for every secret with version entries, and counts that
    /// agree. Paths are compared exactly: KV paths are case-sensitive (`App` and `app` are
    /// two secrets), so the case rules of Key Vault names do not apply to them.
    fn check_kv(&self) -> Result<(), VerifyError> {
        let bad = |reason: String| VerifyError::InvalidManifest(reason);
        let mut paths = std::collections::HashSet::with_capacity(self.kv_entries.len());
        let mut secrets = std::collections::HashSet::new();
        for entry in &self.kv_entries {
            let expected = super::kv::entry_path(entry.entry_type, &entry.name, entry.version)
                .map_err(|e| bad(format!("entry {:?}: {e}", entry.path)))?;
            if expected != entry.path {
                return Err(bad(format!(
                    "entry {:?} should be at {expected:?} for its type, name and version",
                    entry.path
                )));
            }
            if !paths.insert(entry.path.as_str()) {
                return Err(bad(format!("entry {:?} is listed twice", entry.path)));
            }
            if entry.entry_type == KvEntryType::KvMetadata {
                secrets.insert(entry.name.as_str());
            }
        }
        let mut live = 0u64;
        for entry in &self.kv_entries {
            if entry.entry_type == KvEntryType::KvVersion {
                live += 1;
                if !secrets.contains(entry.name.as_str()) {
                    return Err(bad(format!(
                        "entry {:?} has no metadata entry for its secret",
                        entry.path
                    )));
                }
            }
        }
        let c = &self.counts;
        let recorded_live = c
            .kv_versions
            .checked_sub(c.kv_deleted_versions)
            .and_then(|n| n.checked_sub(c.kv_destroyed_versions));
        if recorded_live != Some(live) {
            return Err(bad(format!(
                "counts say {} KV versions, {} deleted and {} destroyed, but {live} version \
                 entries are listed",
                c.kv_versions, c.kv_deleted_versions, c.kv_destroyed_versions
            )));
        }
        Ok(())
    }

    /// Checks the manifest's own rules (format, counts, well-formed entries, canonical
    /// paths, no duplicates, no two names of one kind or two paths that differ only in
    /// case). Does not look at the tar stream.
    pub fn check(&self) -> Result<(), VerifyError> {
        let bad = |reason: String| VerifyError::InvalidManifest(reason);
        if self.format != super::FORMAT_NAME {
            return Err(VerifyError::UnknownFormat(self.format.clone()));
        }
        super::check_format_version(self.format_version, super::READ_VERSIONS)?;
        // Each version holds one store's items: Key Vault entries in version 1, KV entries
        // in version 2 (`docs/FORMAT.md`). A reader keyed to one never meets the other.
        if self.is_kv() {
            if let Some(entry) = self.entries.first() {
                return Err(bad(format!(
                    "entry {:?} is a Key Vault {}: a format version 2 archive holds KV \
                     secrets only",
                    entry.path, entry.kind
                )));
            }
            if !(self.skipped.is_empty() && self.deleted.is_empty() && self.recaptured.is_empty()) {
                return Err(bad(
                    "skipped, deleted and recaptured list Key Vault items: a format version \
                     2 archive leaves them empty"
                        .to_owned(),
                ));
            }
        } else if let Some(entry) = self.kv_entries.first() {
            return Err(bad(format!(
                "entry {:?} is a KV secret's, which format version {} does not have",
                entry.path, self.format_version
            )));
        }
        self.check_kv()?;
        // Key Vault names are case-insensitive: one spelling per item, one path per
        // case-folded path (else extracting on a case-insensitive file system, or keying
        // items by name, silently keeps one of two). Keyed by digests of the folded
        // strings, each mapped to the entry that brought it: a fraction of the memory of
        // the strings themselves on a 100,000-entry manifest.
        let mut spellings: HashMap<FoldedKey, usize> = HashMap::new();
        let mut folded_paths: HashMap<FoldedKey, usize> =
            HashMap::with_capacity(self.entries.len());
        for (index, entry) in self.entries.iter().enumerate() {
            let expected = layout::entry_path(
                entry.entry_type,
                entry.kind,
                &entry.name,
                entry.version.as_deref(),
                entry.content_type.as_deref(),
            )
            .map_err(|e| bad(format!("entry {:?}: {e}", entry.path)))?;
            if expected != entry.path {
                return Err(bad(format!(
                    "entry {:?} should be at {expected:?} for its type, kind, name and version",
                    entry.path
                )));
            }
            let first = &self.entries[*spellings
                .entry(folded_key(entry.kind.folder(), &entry.name))
                .or_insert(index)];
            if first.name != entry.name {
                return Err(VerifyError::NameCaseClash {
                    kind: entry.kind.as_str(),
                    first: first.name.clone(),
                    second: entry.name.clone(),
                });
            }
            let first = &self.entries[*folded_paths
                .entry(folded_key("", &entry.path))
                .or_insert(index)];
            if std::ptr::eq(first, entry) {
                continue;
            }
            if first.path == entry.path {
                return Err(bad(format!("entry {:?} is listed twice", entry.path)));
            }
            return Err(VerifyError::PathCaseClash {
                first: first.path.clone(),
                second: entry.path.clone(),
            });
        }
        let computed = self.computed_counts();
        if computed != self.counts {
            return Err(bad(format!(
                "counts {:?} do not match the lists ({:?})",
                self.counts, computed
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest listing secret version entries `(name, version)`, consistent otherwise.
    fn manifest_of(entries: &[(&str, &str)]) -> Manifest {
        let names: std::collections::HashSet<String> = entries
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        let listed: Vec<serde_json::Value> = entries
            .iter()
            .map(|(name, version)| {
                serde_json::json!({
                    "path": format!("secrets/{name}/versions/{version}.json"),
                    "type": "secret-version", "kind": "secret", "name": name,
                    "version": version, "size": 1, "sha256": "00".repeat(32),
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "format": "coldvault-archive", "format_version": 1,
            "tool": {"name": "coldvault", "version": "0"},
            "created": "2026-06-01T00:00:00Z",
            "source": {"vault": "v", "url": "https://v.vault.azure.net/"},
            "counts": {"secrets": names.len(), "keys": 0, "certificates": 0,
                       "entries": listed.len(), "skipped": 0, "deleted": 0},
            "entries": listed, "skipped": [], "deleted": []
        }))
        .expect("manifest")
    }

    #[test]
    fn names_and_paths_differing_only_in_case_are_refused() {
        assert!(
            manifest_of(&[("api-key", "v1"), ("api-key", "v2"), ("db", "v1")])
                .check()
                .is_ok()
        );
        let err = manifest_of(&[("api-key", "v1"), ("db", "v1"), ("API-KEY", "v2")])
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with(r#"secret names "api-key" and "API-KEY" differ only in case"#),
            "{err}"
        );
        let err = manifest_of(&[("db", "abc"), ("db", "ABC")]).check().err();
        assert!(
            matches!(err, Some(VerifyError::PathCaseClash { ref first, ref second })
                if first == "secrets/db/versions/abc.json" && second == "secrets/db/versions/ABC.json"),
            "{err:?}"
        );
        let err = manifest_of(&[("db", "v1"), ("db", "v1")]).check().err();
        assert!(
            matches!(err, Some(VerifyError::InvalidManifest(ref m)) if m.contains("listed twice")),
            "{err:?}"
        );
    }

    /// The golden version 1 archive's manifest, parsed and written again, is the same bytes:
    /// what a Key Vault backup writes did not change with format version 2.
    #[test]
    fn a_version_1_manifest_writes_back_byte_identical() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let text = std::fs::read_to_string(root.join("test-identity.txt")).expect("identity");
        let line = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("a key");
        let mut identities = crate::archive::keys::IdentitySet::new();
        identities.add_x25519(line.parse().expect("an X25519 identity"));
        let decryption = crate::archive::Decryption::with_identities(identities).expect("keys");
        let file = std::fs::File::open(root.join("v1/golden.tar.zst.age")).expect("golden");
        let plain = decryption
            .decrypt(std::io::BufReader::new(file))
            .expect("decrypt");
        let mut tar = tar::Archive::new(zstd::Decoder::new(plain).expect("zstd"));
        let mut original = Vec::new();
        for entry in tar.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            if entry.path_bytes().as_ref() == b"manifest.json" {
                std::io::Read::read_to_end(&mut entry, &mut original).expect("read");
            }
        }
        let manifest: Manifest = serde_json::from_slice(&original).expect("parse");
        assert!(manifest.kv_entries.is_empty() && !manifest.entries.is_empty());
        manifest.check().expect("valid");
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&manifest).expect("write")).expect("utf-8"),
            String::from_utf8(original).expect("utf-8")
        );
    }

    #[test]
    fn secret_record_debug_is_redacted() {
        let record = SecretRecord {
            name: "db".into(),
            version: "v1".into(),
            value: SecretString::from("canary-7f3a".to_owned()),
            content_type: None,
            tags: BTreeMap::new(),
            attributes: Attributes::default(),
            current: true,
        };
        let debug = format!("{record:?}");
        assert!(!debug.contains("canary-7f3a"));
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn bad_secret_json_error_does_not_echo_input() {
        let err = SecretRecord::from_json(
            "secrets/a/versions/b.json",
            br#"{"value":"canary-7f3a","x":1}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("secrets/a/versions/b.json"));
        assert!(!err.contains("canary"));
    }
}
