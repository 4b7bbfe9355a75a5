//! The archive's typed errors: what went wrong while writing, decrypting or checking an
//! archive. Messages name paths, item names and sizes, never secret values.

use std::path::PathBuf;

/// A failure of the archive layer.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Recipients (`-r`/`-R`) and a passphrase were both given; age allows one or the other.
    #[error("recipients and a passphrase cannot be combined")]
    MixedRecipientAndPassphrase,
    /// Nothing to encrypt to.
    #[error("no recipient given")]
    NoRecipients,
    /// Nothing to decrypt with.
    #[error("no identity given")]
    NoIdentities,
    /// A recipient string is none of the supported kinds. Holds a description that is safe
    /// to print (at most a short prefix of a string that starts like a public key, never the
    /// whole argument: it may be something private pasted by mistake).
    #[error("invalid recipient {0}")]
    InvalidRecipient(String),
    /// A recipient (`-r`, or a line of an `-R` file) that is in fact a private key: an age
    /// identity, a plugin identity, an SSH or PEM private key. It is never echoed.
    #[error("{place} is a private key; give its public recipient (age1…)")]
    PrivateKeyAsRecipient {
        /// Where it was found ("this recipient", "recipients file F: line 3").
        place: String,
    },
    /// A key was given where the name of a file holding keys was expected (`-i KEY` instead
    /// of `-i FILE`). It is never echoed.
    #[error("the {what} argument is a key itself, not the name of a file")]
    KeyInsteadOfFile {
        /// "identity file", "recipients file" or "passphrase file".
        what: &'static str,
    },
    /// An SSH key type age does not support (ECDSA, security keys…).
    #[error("unsupported SSH key in {0}")]
    UnsupportedSshKey(String),
    /// A line of a recipients file is not a recipient (the line is not echoed: it may be
    /// something private).
    #[error("recipients file {path}: line {line} is not a recipient")]
    InvalidRecipientsFile {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: usize,
    },
    /// An identity file holds no identity, or something that is not one.
    #[error("identity file {path}: {reason}")]
    InvalidIdentityFile {
        /// The file.
        path: String,
        /// What is wrong, without the file's content.
        reason: String,
    },
    /// An SSH private key is protected by a passphrase and none was available, or it was
    /// wrong.
    #[error("cannot unlock the SSH key {0}: no passphrase, or a wrong one")]
    SshKeyLocked(String),
    /// An age plugin's binary is not on `PATH`.
    #[error("age plugin {0} is not installed (not found on PATH)")]
    MissingPlugin(String),
    /// The passphrase is empty.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// A name or version id that is not safe to place in an entry path.
    #[error("invalid {what} {value:?}: expected 1-127 characters of 0-9, a-z, A-Z and -")]
    InvalidName {
        /// "name" or "version".
        what: &'static str,
        /// The offending value (names and versions are not secret).
        value: String,
    },
    /// The caller handed the writer something the format cannot hold.
    #[error("{0}")]
    InvalidInput(String),
    /// The same entry was added twice.
    #[error("entry {0} was already written")]
    DuplicateEntry(String),
    /// The archive to read does not exist.
    #[error("{0}: archive not found")]
    ArchiveNotFound(PathBuf),
    /// The archive to read is a folder.
    #[error("{0} is a folder, not an archive file")]
    ArchiveIsFolder(PathBuf),
    /// The output file exists; archives are never overwritten.
    #[error("{0} already exists")]
    OutputExists(PathBuf),
    /// The run was stopped before the archive was complete: it never took its final name.
    #[error("the run was stopped before the archive was complete; no archive was written")]
    Abandoned,
    /// The archive took its final name, but its folder could not be synced: a crash or power
    /// loss may still take the file (or its name) away.
    #[error(
        "the archive {} was written but may not be durable: syncing its folder failed: {source}",
        path.display()
    )]
    NotDurable {
        /// The archive.
        path: PathBuf,
        /// Why the folder could not be synced.
        source: std::io::Error,
    },
    /// Binary output to a terminal.
    #[error("refusing to write an archive to a terminal")]
    OutputIsTerminal,
    /// The archive was encrypted with a passphrase and identities were given.
    #[error("the archive is encrypted with a passphrase, not to a recipient")]
    PassphraseArchive,
    /// A passphrase was given but the archive is encrypted to recipients.
    #[error("the archive is encrypted to recipients, not with a passphrase")]
    NotPassphraseArchive,
    /// None of the identities opens the archive.
    #[error("no identity matches any recipient of the archive")]
    NoMatchingIdentity,
    /// The passphrase does not open the archive.
    #[error("the passphrase does not open the archive")]
    WrongPassphrase,
    /// age refused for another reason (excessive scrypt work, a plugin failure…).
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// The encryption layer refused the recipients.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// The archive breaks a rule of `docs/FORMAT.md`.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// An operating-system failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done ("cannot create /backups/x.tar.zst.age").
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl ArchiveError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// The first rule of `docs/FORMAT.md` an archive breaks. Every variant is a damaged,
/// truncated, foreign or hostile archive (exit code 4).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not an age file at all.
    #[error("not an age-encrypted file")]
    NotAge,
    /// The age header does not authenticate.
    #[error("the age header is damaged (its MAC does not match)")]
    HeaderDamaged,
    /// The encrypted stream ends early, or its last block does not authenticate.
    #[error(
        "the archive is truncated or damaged at its end (the last encrypted block does not authenticate)"
    )]
    Truncated,
    /// A block before the end does not authenticate.
    #[error("the archive is damaged: an encrypted block near byte {offset} does not authenticate")]
    Damaged {
        /// Approximate offset in the file.
        offset: u64,
    },
    /// The decrypted payload is not zstd data.
    #[error("the decrypted payload is not valid zstd data: {0}")]
    NotZstd(String),
    /// The decompressed payload is not a tar stream.
    #[error("the decompressed payload is not a valid tar stream: {0}")]
    NotTar(String),
    /// The first entry is not `coldvault-archive.json`.
    #[error("the first entry is {found:?}, not coldvault-archive.json: not a coldvault archive")]
    MissingFormatMarker {
        /// What came first ("" for an empty archive).
        found: String,
    },
    /// `coldvault-archive.json` is not valid.
    #[error("coldvault-archive.json is invalid: {0}")]
    InvalidFormatMarker(String),
    /// Another format's archive.
    #[error("unknown archive format {0:?}")]
    UnknownFormat(String),
    /// A format version this build does not know.
    #[error("unsupported format version {found} (this coldvault reads {supported})")]
    UnknownFormatVersion {
        /// The version in the archive.
        found: u64,
        /// The versions this build reads, as words (`version 1`, `versions 1 and 2`).
        supported: String,
    },
    /// A path that could escape the extraction folder or is not well formed.
    #[error("unsafe entry path {path:?}: {why}")]
    UnsafePath {
        /// The path as stored (lossy UTF-8).
        path: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A link, device, FIFO or other non-file entry.
    #[error("entry {path:?} is a {kind}; only regular files and directories are allowed")]
    ForbiddenEntryType {
        /// The entry's path.
        path: String,
        /// "symbolic link", "hard link", "device"…
        kind: &'static str,
    },
    /// An entry larger than the per-entry bound.
    #[error("entry {path:?} is {size} bytes, over the limit of {limit} bytes")]
    EntryTooLarge {
        /// The entry's path.
        path: String,
        /// Its declared size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A GNU long-name or pax extended header larger than its bound (a tar reader holds its
    /// data in memory).
    #[error("the archive holds a {kind} of {size} bytes, over the limit of {limit} bytes")]
    ExtensionHeaderTooLarge {
        /// "GNU long name", "GNU long link name" or "pax extended header".
        kind: &'static str,
        /// Its declared size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// `manifest.json` larger than its bound.
    #[error("manifest.json is {size} bytes, over the limit of {limit} bytes")]
    ManifestTooLarge {
        /// Its declared size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The decompressed stream exceeds the total bound.
    #[error("the decompressed archive exceeds {limit} bytes")]
    TotalTooLarge {
        /// The bound.
        limit: u64,
    },
    /// The decompressed stream grows far faster than the compressed one.
    #[error(
        "decompression bomb: {decompressed} bytes from {compressed} compressed bytes (ratio over {limit}:1)"
    )]
    CompressionRatio {
        /// Decompressed bytes so far.
        decompressed: u64,
        /// Compressed bytes consumed so far.
        compressed: u64,
        /// The bound on the ratio.
        limit: u64,
    },
    /// More entries than the bound.
    #[error("the archive holds more than {limit} entries")]
    TooManyEntries {
        /// The bound.
        limit: u64,
    },
    /// The same path twice.
    #[error("entry {0:?} appears twice")]
    DuplicateEntry(String),
    /// A file entry after `manifest.json`.
    #[error("entry {0:?} follows manifest.json, which must be the last entry")]
    EntryAfterManifest(String),
    /// No `manifest.json`.
    #[error("manifest.json is missing")]
    MissingManifest,
    /// `manifest.json` does not parse or breaks a schema rule.
    #[error("manifest.json is invalid: {0}")]
    InvalidManifest(String),
    /// An entry in the tar stream the manifest does not list.
    #[error("entry {0:?} is not listed in manifest.json")]
    NotInManifest(String),
    /// The manifest lists an entry the tar stream lacks.
    #[error("manifest.json lists {0:?}, which is missing from the archive")]
    MissingEntry(String),
    /// Size differs from the manifest.
    #[error("entry {path:?} is {actual} bytes, manifest.json says {expected}")]
    SizeMismatch {
        /// The entry.
        path: String,
        /// Per the manifest.
        expected: u64,
        /// In the archive.
        actual: u64,
    },
    /// SHA-256 differs from the manifest.
    #[error("entry {0:?} does not match its SHA-256 in manifest.json")]
    ChecksumMismatch(String),
    /// An entry's content breaks its schema.
    #[error("entry {path:?} is invalid: {reason}")]
    InvalidEntry {
        /// The entry.
        path: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// Two items of one kind whose names differ only in case (`api-key`, `API-KEY`). Key
    /// Vault names are case-insensitive, so no vault holds both: a reader would have to keep
    /// one and silently drop the other.
    #[error(
        "{kind} names {first:?} and {second:?} differ only in case (Key Vault names are case-insensitive: no vault holds both)"
    )]
    NameCaseClash {
        /// "secret", "key" or "certificate".
        kind: &'static str,
        /// The first spelling met.
        first: String,
        /// The other one.
        second: String,
    },
    /// Two entry paths that differ only in case: extracted on a case-insensitive file
    /// system, one would overwrite the other.
    #[error("entries {first:?} and {second:?} differ only in case")]
    PathCaseClash {
        /// The first path met.
        first: String,
        /// The other one.
        second: String,
    },
    /// The tar stream stops without the two zero blocks that end a tar archive: whatever
    /// wrote it did not finish (`docs/FORMAT.md`, writer rule 4).
    #[error("the tar stream ends without its end-of-archive blocks: the archive was not finished")]
    MissingTarEnd,
    /// Non-zero bytes after the end of the tar stream.
    #[error("unexpected data after the end of the tar stream")]
    TrailingData,
}
