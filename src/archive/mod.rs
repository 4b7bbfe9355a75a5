//! The archive format: tar, zstd and age, with a JSON manifest (`docs/FORMAT.md`).
//!
//! This module owns the on-disk format and nothing else: it knows no Azure, no command line
//! and prints nothing. [`ArchiveWriter`] streams items into a new archive and finishes it in
//! one documented order; [`ArchiveReader`] checks an archive against every rule of the format
//! and then hands out its verified entries. [`keys`] turns age recipients, identities and
//! passphrases into the [`Encryption`] and [`Decryption`] both sides use.

mod error;
pub mod keys;
pub mod layout;
pub mod manifest;
mod reader;
mod streams;
mod writer;

pub use error::{ArchiveError, VerifyError};
pub use keys::{Decryption, Encryption};
pub use manifest::{
    Attributes, Counts, DeletedItem, EntryType, Kind, Manifest, ManifestEntry, RecapturedItem,
    RunWindow, SecretRecord, Sha256Digest, SkippedItem, Source, Tags, Tool,
};
pub use reader::{ArchiveEntry, ArchiveReader, EntryData, EntryIter, ReadLimits, ReadStats};
pub use writer::{ArchiveSummary, ArchiveWriter, Destination, ItemInfo};

/// The format name written in `coldvault-archive.json` and `manifest.json`.
pub const FORMAT_NAME: &str = "coldvault-archive";

/// The format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The suffix of every archive file name: a tar stream, zstd-compressed, age-encrypted.
pub const FILE_SUFFIX: &str = ".tar.zst.age";
