//! The archive format: tar, zstd and age, with a JSON manifest (`docs/FORMAT.md`).
//!
//! This module owns the on-disk format and nothing else: it knows no Azure, no command line
//! and prints nothing. [`ArchiveWriter`] streams items into a new archive and finishes it in
//! one documented order; [`ArchiveReader`] checks an archive against every rule of the format
//! and then hands out its verified entries. [`keys`] turns age recipients, identities and
//! passphrases into the [`Encryption`] and [`Decryption`] both sides use.

mod error;
pub mod keys;
pub mod kv;
pub mod layout;
pub mod manifest;
mod reader;
mod streams;
mod writer;

pub use error::{ArchiveError, VerifyError};
pub use keys::{Decryption, Encryption};
pub use manifest::{
    Attributes, Counts, DeletedItem, EntryType, Kind, KvEntry, KvEntryType, Manifest,
    ManifestEntry, RecapturedItem, RunWindow, SecretRecord, Sha256Digest, SkippedItem, Source,
    Tags, Tool,
};
pub use reader::{
    ArchiveEntry, ArchiveInput, ArchiveReader, EntryData, EntryIter, OpenInput, ReadLimits,
    ReadStats, StreamedEntry,
};
pub use writer::{
    AbandonHook, AbandonOutcome, ArchiveSummary, ArchiveWriter, CommitGate, CommitSink,
    Destination, ItemInfo, check_folder_writable, numbered_name, remove_stale_partials,
};

/// The format name written in `coldvault-archive.json` and `manifest.json`.
pub const FORMAT_NAME: &str = "coldvault-archive";

/// The format version of Key Vault archives: what this build writes for a Key Vault.
pub const FORMAT_VERSION: u32 = 1;

/// The format version of KV archives (HashiCorp Vault / OpenBao KV v2 mounts): what this
/// build writes for a KV mount. Version 1 readers refuse it up front (`docs/FORMAT.md`).
pub const KV_FORMAT_VERSION: u32 = 2;

/// Every format version this build reads.
pub const READ_VERSIONS: &[u32] = &[FORMAT_VERSION, KV_FORMAT_VERSION];

/// The version rule of `docs/FORMAT.md`: an archive whose `format_version` is not in
/// `readable` is refused, before anything else is read. A build that reads only version 1
/// calls it with `&[1]`, and so refuses a version 2 archive with the message it always gave.
pub fn check_format_version(found: u64, readable: &[u32]) -> Result<(), VerifyError> {
    if readable.iter().any(|v| u64::from(*v) == found) {
        return Ok(());
    }
    let supported = match readable {
        [one] => format!("version {one}"),
        [first @ .., last] => {
            let first: Vec<String> = first.iter().map(u32::to_string).collect();
            format!("versions {} and {last}", first.join(", "))
        }
        [] => "no version".to_owned(),
    };
    Err(VerifyError::UnknownFormatVersion { found, supported })
}

/// The suffix of every archive file name: a tar stream, zstd-compressed, age-encrypted.
pub const FILE_SUFFIX: &str = ".tar.zst.age";

#[cfg(test)]
mod tests {
    use super::*;

    /// The backup and restore commands move these into `spawn_blocking` or a writer thread.
    #[test]
    fn archive_types_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<ArchiveWriter>();
        assert_send::<ArchiveReader>();
        assert_send::<EntryIter>();
        assert_send::<Encryption>();
        assert_send::<Decryption>();
    }

    #[test]
    fn written_archive_reads_back() {
        use age::secrecy::{ExposeSecret, SecretString};
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = age::x25519::Identity::generate();
        let mut recipients = keys::RecipientSet::new();
        recipients
            .add(&identity.to_public().to_string())
            .expect("recipient");
        let encryption = Encryption::to_recipients(recipients).expect("encryption");
        let source = Source {
            vault: "unit".to_owned(),
            url: "https://unit.vault.azure.net/".to_owned(),
        };
        let mut writer =
            ArchiveWriter::create(Destination::Dir(dir.path().to_owned()), &encryption, source)
                .expect("create");
        writer
            .add_secret_version(&SecretRecord {
                name: "a".to_owned(),
                version: "v1".to_owned(),
                value: SecretString::from("unit-value".to_owned()),
                content_type: None,
                tags: Default::default(),
                attributes: Attributes::default(),
                current: true,
            })
            .expect("secret");
        let err = writer
            .add_blob(&ItemInfo::new(Kind::Key, "../x"), b"x")
            .err();
        assert!(matches!(err, Some(ArchiveError::InvalidName { .. })));
        writer
            .add_certificate_export("c", "v1", layout::PKCS12_CONTENT_TYPE, b"pfx")
            .expect("export");
        let summary = writer.finish().expect("finish");
        assert_eq!(summary.counts.entries, 2);

        let mut identities = keys::IdentitySet::new();
        identities.add_x25519(identity);
        let decryption = Decryption::with_identities(identities).expect("decryption");
        let path = summary.path.expect("path");
        let reader = ArchiveReader::open(&path, &decryption).expect("open");
        assert_eq!(reader.manifest().counts.secrets, 1);
        assert_eq!(reader.manifest().counts.certificates, 1);
        let mut values = Vec::new();
        for entry in reader.entries() {
            match entry.expect("entry").data {
                EntryData::Secret(record) => values.push(record.value.expose_secret().to_owned()),
                EntryData::Private(bytes) => assert_eq!(bytes.expose_secret(), b"pfx"),
                EntryData::Bytes(_) => panic!("no plain bytes entry was written"),
            }
        }
        assert_eq!(values, ["unit-value"]);
    }
}
