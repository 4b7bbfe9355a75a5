//! KV v2 mounts in the archive: format version 2 (`docs/FORMAT.md`, "KV archives").
//!
//! A KV archive holds one HashiCorp Vault / OpenBao KV v2 mount (or the part under a path):
//! per secret, `kv/ENC/metadata.json` (its metadata and every version's state) and, per live
//! version, `kv/ENC/versions/N.json` (the version's data). `ENC` is the secret's path
//! percent-encoded into one tar path segment ([`encode_segment`]), so the layout is flat,
//! reversible and free of file/folder clashes (`app` and `app/x`). Soft-deleted and
//! destroyed versions are recorded in the metadata and have no data entry: nothing reading
//! the archive can bring them back by mistake.
//!
//! This module knows the documents and the paths; the writer ([`ArchiveWriter::add_kv_secret`])
//! and the reader ([`read_snapshot`], [`ArchiveReader::kv_secrets`]) use it. It imports the
//! plain model of `crate::kv` only, never its client.

use std::collections::{BTreeMap, BTreeSet};

use age::secrecy::zeroize::Zeroize;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::error::{ArchiveError, VerifyError};
use super::keys::Decryption;
use super::manifest::{ClassifyName, Counts, KvEntryType, Manifest, Source};
use super::reader::{ArchiveInput, ArchiveReader};
#[cfg(doc)]
use super::writer::ArchiveWriter;
use crate::kv::{KvAddress, KvData, KvSecret, KvSnapshot, KvVersion};

/// The folder of every KV entry.
pub const KV_FOLDER: &str = "kv";

/// Why a KV path or version cannot name an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvPathError {
    /// Empty, or with a leading, trailing or doubled `/`.
    #[error("invalid KV path {0:?}: expected segments separated by single slashes")]
    Invalid(String),
    /// A `kv-version` entry without a version, or with version 0.
    #[error("a kv-version entry needs a version of 1 or more")]
    MissingVersion,
    /// A `kv-metadata` entry with a version.
    #[error("a kv-metadata entry has no version")]
    UnexpectedVersion,
}

/// Whether a byte stands for itself in an encoded segment.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A KV path as one tar path segment: every byte outside `[0-9A-Za-z._-]` becomes `%XX`
/// (upper-case hex), and a path made only of dots has its dots encoded too (a `.` or `..`
/// segment would be unsafe). Reversible ([`decode_segment`]) and unique: one path, one
/// spelling.
pub fn encode_segment(path: &str) -> String {
    let all_dots = path.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if unreserved(b) && !(all_dots && b == b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The KV path an encoded segment stands for, when the segment is the canonical encoding
/// of a valid UTF-8 path (so no two segments decode to one path).
pub fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = String::from_utf8(out).ok()?;
    (encode_segment(&path) == segment).then_some(path)
}

/// Checks a KV secret's path: non-empty segments separated by single `/`.
pub fn check_path(path: &str) -> Result<(), KvPathError> {
    if path.is_empty() || path.split('/').any(str::is_empty) {
        return Err(KvPathError::Invalid(path.chars().take(300).collect()));
    }
    Ok(())
}

/// The canonical tar path of a KV entry.
pub fn entry_path(
    entry_type: KvEntryType,
    name: &str,
    version: Option<u64>,
) -> Result<String, KvPathError> {
    check_path(name)?;
    let folder = format!("{KV_FOLDER}/{}", encode_segment(name));
    match (entry_type, version) {
        (KvEntryType::KvMetadata, None) => Ok(format!("{folder}/metadata.json")),
        (KvEntryType::KvMetadata, Some(_)) => Err(KvPathError::UnexpectedVersion),
        (KvEntryType::KvVersion, Some(n)) if n > 0 => Ok(format!("{folder}/versions/{n}.json")),
        (KvEntryType::KvVersion, _) => Err(KvPathError::MissingVersion),
    }
}

/// What a canonical KV entry path says: its type, the secret's path and the version. `None`
/// for any other path. The inverse of [`entry_path`].
pub fn parse_entry_path(path: &str) -> Option<(KvEntryType, String, Option<u64>)> {
    let rest = path.strip_prefix(KV_FOLDER)?.strip_prefix('/')?;
    let (segment, file) = rest.split_once('/')?;
    let name = decode_segment(segment)?;
    let (entry_type, version) = if file == "metadata.json" {
        (KvEntryType::KvMetadata, None)
    } else {
        let number = file.strip_prefix("versions/")?.strip_suffix(".json")?;
        let version: u64 = number.parse().ok()?;
        (KvEntryType::KvVersion, Some(version))
    };
    // Only the canonical spelling (no `+1`, no leading zeros, a valid path).
    (entry_path(entry_type, &name, version).ok()? == path).then_some((entry_type, name, version))
}

/// The manifest's source for an archive of `address`: the mount as the archive's name
/// (`MOUNT-YYYYMMDDTHHMMSSZ.tar.zst.age`; characters a Key Vault name cannot hold become
/// `-`) and the address, which never holds a credential, as its URL. A source whose URL is
/// a KV address makes the writer write format version 2.
pub fn source(address: &KvAddress) -> Source {
    let mut vault: String = address
        .mount()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(127)
        .collect();
    if vault.is_empty() {
        vault.push_str("kv");
    }
    Source {
        vault,
        url: address.to_string(),
    }
}

/// Whether `source` describes a KV mount (its URL is a `bao+…` or `vault+…` address).
pub fn is_kv_source(source: &Source) -> bool {
    KvAddress::is_kv_address(&source.url)
}

/// One version's state in a metadata document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionState {
    version: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    deleted: Option<OffsetDateTime>,
    destroyed: bool,
}

/// `kv/ENC/metadata.json`. Holds no value.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataDoc {
    path: String,
    custom_metadata: BTreeMap<String, String>,
    max_versions: u64,
    cas_required: bool,
    delete_version_after: String,
    current_version: u64,
    oldest_version: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    updated: Option<OffsetDateTime>,
    versions: Vec<VersionState>,
}

/// `kv/ENC/versions/N.json`, borrowed for writing.
#[derive(Serialize)]
struct VersionDocOut<'a> {
    path: &'a str,
    version: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    created: Option<OffsetDateTime>,
    data: &'a KvData,
}

/// `kv/ENC/versions/N.json`, for reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionDocIn {
    path: String,
    version: u64,
    /// Part of the closed schema; the metadata document's copy is the one read.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[allow(dead_code)]
    created: Option<OffsetDateTime>,
    data: KvData,
}

/// A version's state counts toward the manifest's: destroyed wins over deleted.
fn tally(version: &KvVersion, counts: &mut Counts) {
    counts.kv_versions += 1;
    if version.destroyed {
        counts.kv_destroyed_versions += 1;
    } else if version.deleted.is_some() {
        counts.kv_deleted_versions += 1;
    }
}

/// The entries of one secret, ready for the writer: the metadata document, then one
/// document per live version (each buffer holds values: the writer wipes it once written).
pub(super) struct SecretDocs {
    pub metadata: Vec<u8>,
    pub versions: Vec<(u64, Vec<u8>)>,
    pub counts: Counts,
}

impl Drop for SecretDocs {
    fn drop(&mut self) {
        for (_, bytes) in &mut self.versions {
            bytes.zeroize();
        }
    }
}

/// Encodes one secret. A live version without data cannot be archived (it would come back
/// as something else): refused.
pub(super) fn secret_docs(secret: &KvSecret) -> Result<SecretDocs, ArchiveError> {
    check_path(&secret.path).map_err(|e| ArchiveError::InvalidInput(e.to_string()))?;
    let mut counts = Counts::default();
    let mut states = Vec::with_capacity(secret.versions.len());
    let mut last = 0;
    for version in &secret.versions {
        if version.version <= last || version.version == 0 {
            return Err(ArchiveError::InvalidInput(format!(
                "KV secret {:?}: versions are not listed oldest first",
                secret.path
            )));
        }
        last = version.version;
        tally(version, &mut counts);
        states.push(VersionState {
            version: version.version,
            created: version.created,
            deleted: version.deleted,
            destroyed: version.destroyed,
        });
    }
    let doc = MetadataDoc {
        path: secret.path.clone(),
        custom_metadata: secret.custom_metadata.clone(),
        max_versions: secret.max_versions,
        cas_required: secret.cas_required,
        delete_version_after: secret.delete_version_after.clone(),
        current_version: secret.current_version,
        oldest_version: secret.oldest_version,
        created: secret.created,
        updated: secret.updated,
        versions: states,
    };
    let encode_err = |e: serde_json::Error| ArchiveError::io("cannot encode a KV secret", e.into());
    let metadata = serde_json::to_vec(&doc).map_err(encode_err)?;
    let mut docs = SecretDocs {
        metadata,
        versions: Vec::new(),
        counts,
    };
    for version in secret.versions.iter().filter(|v| v.is_live()) {
        let Some(data) = &version.data else {
            return Err(ArchiveError::InvalidInput(format!(
                "KV secret {:?}: live version {} was not read",
                secret.path, version.version
            )));
        };
        let json = serde_json::to_vec(&VersionDocOut {
            path: &secret.path,
            version: version.version,
            created: version.created,
            data,
        })
        .map_err(encode_err)?;
        docs.versions.push((version.version, json));
    }
    Ok(docs)
}

fn invalid(path: &str, reason: String) -> VerifyError {
    VerifyError::InvalidEntry {
        path: path.to_owned(),
        reason,
    }
}

/// Parses and checks a metadata document found at `path` (for the secret `name`): its
/// schema, its path, and versions listed oldest first, none above the current one.
pub(super) fn parse_metadata(
    path: &str,
    name: &str,
    bytes: &[u8],
) -> Result<KvSecret, VerifyError> {
    let doc: MetadataDoc = serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            path,
            format!("not a KV metadata document ({})", e.classify_name()),
        )
    })?;
    if doc.path != name {
        return Err(invalid(
            path,
            "its path differs from the entry's".to_owned(),
        ));
    }
    let mut last = 0;
    for state in &doc.versions {
        if state.version <= last || state.version > doc.current_version {
            return Err(invalid(
                path,
                "versions must be listed oldest first, from 1 to the current version".to_owned(),
            ));
        }
        last = state.version;
    }
    Ok(KvSecret {
        path: doc.path,
        custom_metadata: doc.custom_metadata,
        current_version: doc.current_version,
        oldest_version: doc.oldest_version,
        max_versions: doc.max_versions,
        cas_required: doc.cas_required,
        delete_version_after: doc.delete_version_after,
        created: doc.created,
        updated: doc.updated,
        versions: doc
            .versions
            .into_iter()
            .map(|s| KvVersion {
                version: s.version,
                created: s.created,
                deleted: s.deleted,
                destroyed: s.destroyed,
                data: None,
            })
            .collect(),
    })
}

/// Parses and checks a version document found at `path` (secret `name`, version
/// `version`); returns its data. Errors never quote the document: it holds values.
pub(super) fn parse_version(
    path: &str,
    name: &str,
    version: u64,
    bytes: &[u8],
) -> Result<KvData, VerifyError> {
    let doc: VersionDocIn = serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            path,
            format!("not a KV version document ({})", e.classify_name()),
        )
    })?;
    if doc.path != name || doc.version != version {
        return Err(invalid(
            path,
            "its path or version differs from the entry's".to_owned(),
        ));
    }
    Ok(doc.data)
}

/// What the verification pass learns from a KV archive's metadata documents, checked
/// against the manifest once it is read.
#[derive(Debug, Default)]
pub(super) struct KvSeen {
    secrets: Vec<KvSecret>,
}

impl KvSeen {
    /// Checks a KV entry's content as the verification pass reads it (`name` and `version`
    /// from its path); keeps metadata (no value), drops version data at once.
    pub(super) fn check(
        &mut self,
        path: &str,
        entry_type: KvEntryType,
        name: &str,
        version: Option<u64>,
        bytes: &[u8],
    ) -> Result<(), VerifyError> {
        match (entry_type, version) {
            (KvEntryType::KvMetadata, _) => self.secrets.push(parse_metadata(path, name, bytes)?),
            (KvEntryType::KvVersion, Some(n)) => drop(parse_version(path, name, n, bytes)?),
            (KvEntryType::KvVersion, None) => {
                return Err(invalid(path, "no version in its path".to_owned()));
            }
        }
        Ok(())
    }

    /// After the manifest matched the entries: every live version the metadata records has
    /// a data entry and no other version has one (deleted and destroyed versions stay
    /// without data), and the version counts agree with the documents. Returns the secrets
    /// (metadata only), sorted by path.
    pub(super) fn finish(mut self, manifest: &Manifest) -> Result<Vec<KvSecret>, VerifyError> {
        let mut listed: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for entry in &manifest.kv_entries {
            if let (KvEntryType::KvVersion, Some(n)) = (entry.entry_type, entry.version) {
                listed.entry(entry.name.as_str()).or_default().insert(n);
            }
        }
        let mut counts = Counts::default();
        for secret in &self.secrets {
            let live: BTreeSet<u64> = secret
                .versions
                .iter()
                .inspect(|v| tally(v, &mut counts))
                .filter(|v| v.is_live())
                .map(|v| v.version)
                .collect();
            let stored = listed.remove(secret.path.as_str()).unwrap_or_default();
            if live != stored {
                let entry =
                    entry_path(KvEntryType::KvMetadata, &secret.path, None).unwrap_or_default();
                return Err(invalid(
                    &entry,
                    format!(
                        "its live versions {live:?} differ from the version entries {stored:?} \
                         (deleted and destroyed versions have none)"
                    ),
                ));
            }
        }
        let c = &manifest.counts;
        if (
            c.kv_versions,
            c.kv_deleted_versions,
            c.kv_destroyed_versions,
        ) != (
            counts.kv_versions,
            counts.kv_deleted_versions,
            counts.kv_destroyed_versions,
        ) {
            return Err(VerifyError::InvalidManifest(format!(
                "counts say {} KV versions ({} deleted, {} destroyed); the metadata documents \
                 record {} ({} deleted, {} destroyed)",
                c.kv_versions,
                c.kv_deleted_versions,
                c.kv_destroyed_versions,
                counts.kv_versions,
                counts.kv_deleted_versions,
                counts.kv_destroyed_versions
            )));
        }
        self.secrets.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(self.secrets)
    }
}

/// A KV archive read whole: its verified manifest and the mount as it was captured.
#[derive(Debug)]
pub struct KvArchive {
    /// The verified reader (its manifest, its path, what the pass read).
    pub reader: ArchiveReader,
    /// Every secret with every version's state and every live version's data.
    pub snapshot: KvSnapshot,
}

/// Reads a KV archive into a [`KvSnapshot`]: verifies the whole archive first (every rule of
/// `docs/FORMAT.md`), then reads it again, checking each version entry against the
/// manifest before its data is used. Values are held in memory only (`KvData` wipes them
/// when dropped). An archive of a Key Vault (format version 1) is refused as
/// [`ArchiveError::InvalidInput`].
pub fn read_snapshot(
    input: ArchiveInput,
    decryption: &Decryption,
) -> Result<KvArchive, ArchiveError> {
    let limits = decryption.limits();
    let reader = ArchiveReader::open_input(input, decryption, limits)?;
    snapshot_of(reader)
}

/// [`read_snapshot`] for an archive already opened and verified.
pub fn snapshot_of(reader: ArchiveReader) -> Result<KvArchive, ArchiveError> {
    let manifest = reader.manifest();
    if !manifest.is_kv() {
        return Err(ArchiveError::InvalidInput(format!(
            "{} holds Key Vault items (format version {}), not a KV mount",
            reader.path().display(),
            manifest.format_version
        )));
    }
    let address = KvAddress::parse(&manifest.source.url).map_err(|e| {
        VerifyError::InvalidManifest(format!("its source is not a KV address: {e}"))
    })?;
    let mut secrets: Vec<KvSecret> = reader.kv_secrets().to_vec();
    let index: BTreeMap<String, usize> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path.clone(), i))
        .collect();
    reader.kv_version_pass(|entry, bytes| {
        let (Some(n), Some(&i)) = (entry.version, index.get(&entry.name)) else {
            return Err(VerifyError::NotInManifest(entry.path.clone()).into());
        };
        let data = parse_version(&entry.path, &entry.name, n, bytes)?;
        let slot = secrets[i]
            .versions
            .iter_mut()
            .find(|v| v.version == n && v.is_live())
            .ok_or_else(|| VerifyError::NotInManifest(entry.path.clone()))?;
        slot.data = Some(data);
        Ok(())
    })?;
    Ok(KvArchive {
        reader,
        snapshot: KvSnapshot { address, secrets },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_paths_encode_into_one_reversible_segment() {
        for (path, encoded) in [
            ("app", "app"),
            ("app/db", "app%2Fdb"),
            ("with space/x", "with%20space%2Fx"),
            ("App/Db_1.v-2", "App%2FDb_1.v-2"),
            ("caf\u{e9}", "caf%C3%A9"),
            ("%41", "%2541"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("a/..", "a%2F.."),
        ] {
            assert_eq!(encode_segment(path), encoded, "{path}");
            assert_eq!(decode_segment(encoded).as_deref(), Some(path), "{encoded}");
        }
        // Only the canonical spelling decodes: one path, one segment.
        for other in ["app%2fdb", "%61pp", "a%2", "%zz", "with space", "%FF", "."] {
            assert_eq!(decode_segment(other), None, "{other}");
        }
    }

    #[test]
    fn kv_entry_paths_parse_back_and_twins_stay_apart() {
        let meta = entry_path(KvEntryType::KvMetadata, "app/db", None).unwrap();
        assert_eq!(meta, "kv/app%2Fdb/metadata.json");
        let v3 = entry_path(KvEntryType::KvVersion, "app/db", Some(3)).unwrap();
        assert_eq!(v3, "kv/app%2Fdb/versions/3.json");
        assert_eq!(
            parse_entry_path(&v3),
            Some((KvEntryType::KvVersion, "app/db".to_owned(), Some(3)))
        );
        assert_eq!(
            parse_entry_path(&meta),
            Some((KvEntryType::KvMetadata, "app/db".to_owned(), None))
        );
        // `app` and `app/x` are two folders side by side, never a file and a folder.
        let app = entry_path(KvEntryType::KvMetadata, "app", None).unwrap();
        let app_x = entry_path(KvEntryType::KvMetadata, "app/x", None).unwrap();
        assert_eq!(
            (app.as_str(), app_x.as_str()),
            ("kv/app/metadata.json", "kv/app%2Fx/metadata.json")
        );
        for other in [
            "kv/app/versions/03.json",
            "kv/app/versions/0.json",
            "kv/app/versions/+3.json",
            "kv/app/other.json",
            "kv/app%2f/metadata.json",
            "kv/%2Fapp/metadata.json",
            "secrets/app/metadata.json",
        ] {
            assert_eq!(parse_entry_path(other), None, "{other}");
        }
        assert!(entry_path(KvEntryType::KvVersion, "a", None).is_err());
        assert!(entry_path(KvEntryType::KvMetadata, "a//b", None).is_err());
        assert!(entry_path(KvEntryType::KvMetadata, "/a", None).is_err());
    }

    #[test]
    fn sources_name_the_mount_and_never_a_credential() {
        let address = KvAddress::parse("bao+http://127.0.0.1:8200/team/kv/app").unwrap();
        let source = source(&address);
        assert_eq!(source.vault, "team");
        assert_eq!(source.url, "bao+http://127.0.0.1:8200/team/kv/app");
        assert!(is_kv_source(&source));
        let nested = source_for_mount("team/kv");
        assert_eq!(nested.vault, "team-kv");
    }

    fn source_for_mount(mount: &str) -> Source {
        let address = KvAddress::parse("bao+http://127.0.0.1:8200/team/kv").unwrap();
        source(&address.with_mount(mount))
    }

    use crate::archive::keys::{IdentitySet, RecipientSet};
    use crate::archive::{ArchiveWriter, FILE_SUFFIX};
    use crate::archive::{Destination, Encryption, ReadLimits};
    use time::macros::datetime;

    fn data(pairs: &[(&str, &str)]) -> KvData {
        KvData(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect(),
        )
    }

    fn version(n: u64, state: &str, value: Option<KvData>) -> KvVersion {
        KvVersion {
            version: n,
            created: Some(datetime!(2026-06-01 00:00:00.123456789 UTC)),
            deleted: (state == "deleted").then_some(datetime!(2026-06-02 00:00:00 UTC)),
            destroyed: state == "destroyed",
            data: value,
        }
    }

    fn secret(path: &str, versions: Vec<KvVersion>) -> KvSecret {
        KvSecret {
            path: path.to_owned(),
            custom_metadata: [("owner".to_owned(), "team-a".to_owned())].into(),
            current_version: versions.last().map_or(0, |v| v.version),
            oldest_version: versions.first().map_or(0, |v| v.version),
            max_versions: 10,
            cas_required: false,
            delete_version_after: "0s".to_owned(),
            created: Some(datetime!(2026-06-01 00:00:00 UTC)),
            updated: None,
            versions,
        }
    }

    /// A mount with twins differing only in case, a nested path with a space, and a
    /// secret whose history has every state.
    fn snapshot() -> Vec<KvSecret> {
        vec![
            secret(
                "App",
                vec![version(1, "live", Some(data(&[("k", "upper")])))],
            ),
            secret(
                "app",
                vec![version(1, "live", Some(data(&[("k", "lower")])))],
            ),
            secret(
                "team/with space/db",
                vec![
                    version(2, "live", Some(data(&[("password", "v2")]))),
                    version(3, "deleted", None),
                    version(4, "destroyed", None),
                    version(5, "live", Some(data(&[("password", "v5"), ("user", "u")]))),
                ],
            ),
        ]
    }

    fn keys() -> (Encryption, Decryption) {
        let identity = age::x25519::Identity::generate();
        let mut recipients = RecipientSet::new();
        recipients.add(&identity.to_public().to_string()).unwrap();
        let mut identities = IdentitySet::new();
        identities.add_x25519(identity);
        (
            Encryption::to_recipients(recipients).unwrap(),
            Decryption::with_identities(identities).unwrap(),
        )
    }

    fn write_kv(
        dir: &std::path::Path,
        encryption: &Encryption,
        secrets: &[KvSecret],
    ) -> std::path::PathBuf {
        let address = KvAddress::parse("bao+http://127.0.0.1:8200/secret").unwrap();
        let mut writer = ArchiveWriter::create(
            Destination::Dir(dir.to_owned()),
            encryption,
            source(&address),
        )
        .unwrap();
        for secret in secrets {
            writer.add_kv_secret(secret).unwrap();
        }
        writer.finish().unwrap().path.unwrap()
    }

    #[test]
    fn a_kv_snapshot_round_trips_through_a_version_2_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (encryption, decryption) = keys();
        let path = write_kv(dir.path(), &encryption, &snapshot());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("secret-") && name.ends_with(FILE_SUFFIX),
            "{name}"
        );
        let archive = read_snapshot(ArchiveInput::file(&path), &decryption).unwrap();
        let manifest = archive.reader.manifest();
        assert_eq!(manifest.format_version, 2);
        assert!(manifest.entries.is_empty());
        let c = manifest.counts;
        assert_eq!(
            (
                c.kv_secrets,
                c.kv_versions,
                c.kv_deleted_versions,
                c.kv_destroyed_versions
            ),
            (3, 6, 1, 1)
        );
        assert_eq!((c.secrets, c.entries), (0, 3 + 4));
        assert_eq!(manifest.source.url, "bao+http://127.0.0.1:8200/secret");
        // The twins are two secrets; every state and every value comes back as written,
        // and the deleted and destroyed versions come back without data.
        assert_eq!(archive.snapshot.secrets, snapshot());
        assert_eq!(archive.reader.kv_secrets().len(), 3);
        assert!(
            archive
                .reader
                .kv_secrets()
                .iter()
                .all(|s| s.versions.iter().all(|v| v.data.is_none()))
        );
    }

    #[test]
    fn kv_and_key_vault_entries_never_share_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (encryption, _) = keys();
        let address = KvAddress::parse("bao+http://127.0.0.1:8200/secret").unwrap();
        let mut kv_writer = ArchiveWriter::create(
            Destination::Dir(dir.path().to_owned()),
            &encryption,
            source(&address),
        )
        .unwrap();
        let err = kv_writer
            .add_policy(crate::archive::Kind::Key, "k", b"{}")
            .unwrap_err();
        assert!(err.to_string().contains("KV archive"), "{err}");
        let key_vault = Source {
            vault: "kv1".to_owned(),
            url: "https://kv1.vault.azure.net/".to_owned(),
        };
        let mut writer = ArchiveWriter::create(
            Destination::Dir(dir.path().to_owned()),
            &encryption,
            key_vault,
        )
        .unwrap();
        let err = writer.add_kv_secret(&snapshot()[0]).unwrap_err();
        assert!(err.to_string().contains("Key Vault archive"), "{err}");
        // A live version that was not read cannot be archived as if it were empty.
        let unread = secret("x", vec![version(1, "live", None)]);
        assert!(kv_writer.add_kv_secret(&unread).is_err());
    }

    /// Entries of a KV archive, as a version 2 manifest lists them, with one changed.
    fn manifest_with(change: impl FnOnce(&mut serde_json::Value)) -> Result<(), VerifyError> {
        let mut value = serde_json::json!({
            "format": "coldvault-archive", "format_version": 2,
            "tool": {"name": "coldvault", "version": "0"},
            "created": "2026-06-01T00:00:00Z",
            "source": {"vault": "secret", "url": "bao+http://127.0.0.1:8200/secret"},
            "counts": {"secrets": 0, "keys": 0, "certificates": 0, "entries": 4,
                       "skipped": 0, "deleted": 0, "kv_secrets": 2, "kv_versions": 2},
            "entries": [
                {"path": "kv/App/metadata.json", "type": "kv-metadata", "kind": "kv-secret",
                 "name": "App", "size": 1, "sha256": "00".repeat(32)},
                {"path": "kv/App/versions/1.json", "type": "kv-version", "kind": "kv-secret",
                 "name": "App", "version": 1, "size": 1, "sha256": "00".repeat(32)},
                {"path": "kv/app/metadata.json", "type": "kv-metadata", "kind": "kv-secret",
                 "name": "app", "size": 1, "sha256": "00".repeat(32)},
                {"path": "kv/app/versions/1.json", "type": "kv-version", "kind": "kv-secret",
                 "name": "app", "version": 1, "size": 1, "sha256": "00".repeat(32)}
            ]
        });
        change(&mut value);
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| VerifyError::InvalidManifest(e.to_string()))?;
        manifest.check()
    }

    #[test]
    fn kv_paths_differing_only_in_case_are_two_secrets_key_vault_names_are_not() {
        // `App` and `app` are two KV secrets: the case rule is Key Vault's alone.
        manifest_with(|_| {}).unwrap();
        // The Key Vault rule still holds in version 1 (tested in full in manifest.rs).
        let err = manifest_with(|m| {
            m["format_version"] = 1.into();
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("format version 1 does not have"),
            "{err}"
        );
        let err = manifest_with(|m| {
            m["entries"][1]["path"] = "kv/app/versions/1.json".into();
        })
        .unwrap_err();
        assert!(err.to_string().contains("should be at"), "{err}");
        let err = manifest_with(|m| {
            m["counts"]["kv_destroyed_versions"] = 1.into();
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("version entries are listed"),
            "{err}"
        );
        let err = manifest_with(|m| {
            m["entries"][0]["kind"] = "secret".into();
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("does not belong to its kind"),
            "{err}"
        );
    }

    #[test]
    fn an_older_reader_refuses_a_version_2_archive_up_front() {
        // What a build that reads only version 1 says (its check, with its one version).
        let err = crate::archive::check_format_version(2, &[1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported format version 2 (this coldvault reads version 1)"
        );
        // This build reads both, and names both when it meets a later one.
        crate::archive::check_format_version(2, crate::archive::READ_VERSIONS).unwrap();
        let err =
            crate::archive::check_format_version(3, crate::archive::READ_VERSIONS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported format version 3 (this coldvault reads versions 1 and 2)"
        );
        // And a real version 2 archive is refused by that check before any entry is read.
        let dir = tempfile::tempdir().unwrap();
        let (encryption, decryption) = keys();
        let path = write_kv(dir.path(), &encryption, &snapshot());
        let reader = ArchiveReader::open(&path, &decryption).unwrap();
        let err = crate::archive::check_format_version(reader.manifest().format_version, &[1]);
        assert!(err.is_err());
    }

    #[test]
    fn a_deleted_version_with_data_is_refused_never_resurrected() {
        // The metadata says version 1 of `App` is soft-deleted, yet the archive holds data
        // for it (a hand-made or tampered archive): the reader refuses it.
        let mut deleted = secret("App", vec![version(1, "deleted", None)]);
        deleted.custom_metadata.clear();
        let docs = secret_docs(&deleted).unwrap();
        let mut seen = KvSeen::default();
        seen.check(
            "kv/App/metadata.json",
            KvEntryType::KvMetadata,
            "App",
            None,
            &docs.metadata,
        )
        .unwrap();
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format": "coldvault-archive", "format_version": 2,
            "tool": {"name": "coldvault", "version": "0"},
            "created": "2026-06-01T00:00:00Z",
            "source": {"vault": "secret", "url": "bao+http://127.0.0.1:8200/secret"},
            "counts": {"secrets": 0, "keys": 0, "certificates": 0, "entries": 2,
                       "skipped": 0, "deleted": 0, "kv_secrets": 1, "kv_versions": 1},
            "entries": [
                {"path": "kv/App/metadata.json", "type": "kv-metadata", "kind": "kv-secret",
                 "name": "App", "size": 1, "sha256": "00".repeat(32)},
                {"path": "kv/App/versions/1.json", "type": "kv-version", "kind": "kv-secret",
                 "name": "App", "version": 1, "size": 1, "sha256": "00".repeat(32)}
            ]
        }))
        .unwrap();
        let err = seen.finish(&manifest).unwrap_err().to_string();
        assert!(
            err.contains("deleted and destroyed versions have none"),
            "{err}"
        );
    }

    /// Re-packs an archive's tar stream with `change` applied to one entry's bytes, and
    /// encrypts it again to `recipient`: what a hand-made or tampered archive looks like.
    fn repack(
        path: &std::path::Path,
        decryption: &Decryption,
        recipient: &age::x25519::Recipient,
        entry: &str,
        change: impl Fn(&mut Vec<u8>),
    ) -> std::path::PathBuf {
        use std::io::{Read, Write};
        let file = std::fs::File::open(path).unwrap();
        let plain = decryption.decrypt(std::io::BufReader::new(file)).unwrap();
        let mut tar = tar::Archive::new(zstd::Decoder::new(plain).unwrap());
        let mut builder = tar::Builder::new(Vec::new());
        for item in tar.entries().unwrap() {
            let mut item = item.unwrap();
            let name = String::from_utf8(item.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            item.read_to_end(&mut data).unwrap();
            if name == entry {
                change(&mut data);
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            builder.append_data(&mut header, &name, &data[..]).unwrap();
        }
        let tar_bytes = builder.into_inner().unwrap();
        let compressed = zstd::encode_all(&tar_bytes[..], 3).unwrap();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .unwrap();
        let out = path.with_file_name("tampered.tar.zst.age");
        let mut writer = encryptor
            .wrap_output(std::fs::File::create(&out).unwrap())
            .unwrap();
        writer.write_all(&compressed).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_changed_kv_entry_fails_its_sha256_and_a_changed_document_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let mut recipients = RecipientSet::new();
        recipients.add(&recipient.to_string()).unwrap();
        let mut identities = IdentitySet::new();
        identities.add_x25519(identity);
        let encryption = Encryption::to_recipients(recipients).unwrap();
        let decryption = Decryption::with_identities(identities).unwrap();
        let path = write_kv(dir.path(), &encryption, &snapshot());
        // The same length, still valid JSON: only the digest can tell.
        let swapped = repack(
            &path,
            &decryption,
            &recipient,
            "kv/app/versions/1.json",
            |d| {
                let text = String::from_utf8(d.clone())
                    .unwrap()
                    .replace("lower", "LOWER");
                *d = text.into_bytes();
            },
        );
        let err = ArchiveReader::open(&swapped, &decryption).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Verify(VerifyError::ChecksumMismatch(p)) if p == "kv/app/versions/1.json"),
            "{err}"
        );
        std::fs::remove_file(&swapped).unwrap();
        // A field the closed schema does not have is refused before any digest is compared.
        let extended = repack(
            &path,
            &decryption,
            &recipient,
            "kv/App/metadata.json",
            |d| {
                let text = String::from_utf8(d.clone()).unwrap();
                *d = text.replacen('{', r#"{"extra":1,"#, 1).into_bytes();
            },
        );
        let err = ArchiveReader::open(&extended, &decryption)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a KV metadata document"), "{err}");
    }

    #[test]
    fn kv_entries_are_bounded_like_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (encryption, decryption) = keys();
        let path = write_kv(dir.path(), &encryption, &snapshot());
        let tight = ReadLimits {
            max_entry_size: 16,
            ..ReadLimits::default()
        };
        let err = ArchiveReader::open_with_limits(&path, &decryption, tight).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn version_documents_never_echo_values_in_errors() {
        let err = parse_version(
            "kv/a/versions/1.json",
            "a",
            1,
            br#"{"path":"a","version":"canary-51d2","data":{}}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("kv/a/versions/1.json"), "{err}");
        assert!(!err.contains("canary"), "{err}");
        let err = parse_version(
            "kv/a/versions/1.json",
            "a",
            2,
            br#"{"path":"a","version":1,"data":{"k":"canary-51d2"}}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("differs"), "{err}");
        assert!(!err.contains("canary"), "{err}");
    }
}
