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
trait ClassifyName {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Every entry other than `coldvault-archive.json` and `manifest.json`.
    pub entries: Vec<ManifestEntry>,
    /// Items that could not be captured.
    #[serde(default)]
    pub skipped: Vec<SkippedItem>,
    /// Soft-deleted items, listed and not captured.
    #[serde(default)]
    pub deleted: Vec<DeletedItem>,
    /// Items captured again because they changed during the run.
    #[serde(default)]
    pub recaptured: Vec<RecapturedItem>,
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
        counts
    }

    /// Checks the manifest's own rules (format, counts, well-formed entries, canonical
    /// paths, no duplicates, no two names of one kind or two paths that differ only in
    /// case). Does not look at the tar stream.
    pub fn check(&self) -> Result<(), VerifyError> {
        let bad = |reason: String| VerifyError::InvalidManifest(reason);
        if self.format != super::FORMAT_NAME {
            return Err(VerifyError::UnknownFormat(self.format.clone()));
        }
        if self.format_version != u64::from(super::FORMAT_VERSION) {
            return Err(VerifyError::UnknownFormatVersion {
                found: self.format_version,
                supported: super::FORMAT_VERSION,
            });
        }
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
