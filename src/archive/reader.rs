//! [`ArchiveReader`]: opens an archive, checks it against every rule of `docs/FORMAT.md`,
//! then hands out its entries, each checked again against the manifest.
//!
//! [`ArchiveReader::open`] makes one streaming pass: age decryption (every 64 KiB chunk
//! authenticated), zstd, then tar, entry by entry: the format marker first (an unknown
//! version is refused before anything else is read), every path and entry type checked,
//! every size bounded, every entry hashed; at the end `manifest.json` is compared with what
//! was seen, both ways. Memory holds the manifest and one small record per entry, never the
//! entries' data. [`ArchiveReader::entries`] makes a second pass on a background thread and
//! yields each entry only after its size and SHA-256 match the manifest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use age::secrecy::SecretBox;
use age::secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

use super::error::{ArchiveError, VerifyError};
use super::keys::Decryption;
use super::kv::{self, KvSeen};
use super::layout::{self, FORMAT_MARKER_PATH, MANIFEST_PATH};
use super::manifest::{
    EntryType, FormatMarker, Kind, KvEntry, KvEntryType, Manifest, ManifestEntry, SecretRecord,
    Sha256Digest,
};
use super::streams::{
    DecompressedReader, DecryptedReader, FailureSlot, HeaderGuard, RawReader, StreamBounds,
};
use super::{FORMAT_NAME, READ_VERSIONS};
use crate::kv::KvSecret;

/// Bounds that keep a hostile archive from exhausting memory, disk or time.
///
/// Anyone holding an archive's public recipient can write an archive that opens, so every
/// bound is enforced while reading, before the memory it protects is taken: the
/// manifest's size and each entry's size are checked against the tar header before a byte
/// of data is read, the entry count as each header arrives, the total as the decompressed
/// stream grows. [`ReadLimits::default`] derives the defaults from what Key Vault can hold
/// (see there); a larger archive opens with raised limits (the reading commands'
/// `--max-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest item entry, in bytes: what the reader holds in memory at once while it
    /// hands out entries.
    pub max_entry_size: u64,
    /// Largest `manifest.json`, in bytes: the manifest is parsed and held whole.
    pub max_manifest_size: u64,
    /// Largest decompressed tar stream, in bytes: bounds the time a pass takes.
    pub max_total_size: u64,
    /// Largest decompressed:compressed ratio, checked once `ratio_after` bytes are out
    /// (default 1000:1 after 16 MiB; coldvault's own archives stay far below 100:1).
    pub max_ratio: u64,
    /// See `max_ratio`.
    pub ratio_after: u64,
    /// Most tar entries: the verification pass keeps a small record per entry.
    pub max_entries: u64,
}

/// The vault the defaults are sized for: 100,000 items, a large vault (Key Vault sets no
/// item limit; at its throttle budget of about 400 requests a second, backing up this many
/// items takes about ten minutes).
const DESIGN_ITEMS: u64 = 100_000;

/// Entries per item at the design point, with `--all-versions`: the native blob plus four
/// plain versions for a secret; blob, public parts and policy for keys and certificates.
const DESIGN_ENTRIES_PER_ITEM: u64 = 5;

/// Bytes of `manifest.json` per entry: a secret version's record (`docs/FORMAT.md`) with its
/// attributes, a short tag and its SHA-256 is about 450 bytes compact; the shortest
/// possible record is about 150.
const MANIFEST_BYTES_PER_ENTRY: u64 = 450;

impl Default for ReadLimits {
    /// The defaults, derived from Key Vault's own limits (names of at most 127 characters,
    /// secret values of at most 25 KB, at most 500 versions in a native backup blob):
    ///
    /// - `max_entries`, 1,000,000: the design point is 100,000 items × 5 entries =
    ///   500,000 entries; twice that leaves room for secrets with more versions. The
    ///   verification pass keeps 56 bytes per entry in a hash table, up to three times that
    ///   while the table grows: an archive refused at the limit peaks at 188 MiB
    ///   (`examples/reader_limits_bench.rs`).
    /// - `max_manifest_size`, 256 MiB: 500,000 records × 450 bytes = 225 MB, rounded up.
    ///   It also caps the entry count a manifest can list: 256 MiB of the shortest records
    ///   (150 bytes) is 1.8 M, the same order as `max_entries`. Parsed, a manifest of the
    ///   writer's records takes about 1.75 times its size in memory (1,798 MiB for 1 GiB);
    ///   a crafted one up to 14 times (one-letter version ids, each 4 bytes of JSON and a
    ///   `String`: 913 MiB for 64 MiB), about 3.6 GB at this bound. Only a manifest that is
    ///   not held whole would remove that; until then a lower bound is the remedy.
    /// - `max_entry_size`, 64 MiB: the largest entry is a secret's native blob holding 500
    ///   versions of 25 KB, 12.5 MB of values; if every version carried the 7.7 KB a
    ///   one-version secret's blob takes in Azure's recordings, 4 MB more, and base64 a
    ///   third: about 22 MB. A one-version certificate's blob is 45 KB, a few hundred KB
    ///   for one with many versions; a plain secret version is at most about 160 KB (25 KB
    ///   of value escaped as JSON, 15 tags). 64 MiB keeps a threefold margin.
    /// - `max_total_size`, 16 GiB: 100,000 items × 160 KB (a certificate with a few
    ///   versions, or a secret with a dozen large ones) on average. Entries stream through,
    ///   so this bounds time, not memory.
    fn default() -> Self {
        let design_entries = DESIGN_ITEMS * DESIGN_ENTRIES_PER_ITEM;
        Self {
            max_entry_size: 64 << 20,
            max_manifest_size: (design_entries * MANIFEST_BYTES_PER_ENTRY).next_power_of_two(),
            max_total_size: 16 << 30,
            max_ratio: 1000,
            ratio_after: 16 << 20,
            max_entries: 2 * design_entries,
        }
    }
}

/// The format marker is tiny; anything bigger is not one.
const MARKER_LIMIT: u64 = 64 * 1024;

/// Trailing zero padding after the tar end marker is bounded too (GNU tar pads to 10 KiB).
const TRAILING_LIMIT: u64 = 1 << 20;

type TarStream = HeaderGuard<
    DecompressedReader<
        zstd::Decoder<
            'static,
            BufReader<DecryptedReader<age::stream::StreamReader<BufReader<RawReader<InputRead>>>>>,
        >,
    >,
>;

/// The bytes of one pass over an archive.
type InputRead = Box<dyn Read + Send>;

/// Opens an archive's bytes from the start, with their size: called once per pass.
pub type OpenInput = Arc<dyn Fn() -> io::Result<(InputRead, u64)> + Send + Sync>;

/// Where an archive is read from: a file, or any byte source that can be opened again from
/// the start for each pass (an object in Blob Storage or S3, streamed).
#[derive(Clone)]
pub struct ArchiveInput {
    name: PathBuf,
    open: Option<OpenInput>,
}

impl std::fmt::Debug for ArchiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveInput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl From<&Path> for ArchiveInput {
    fn from(path: &Path) -> Self {
        Self::file(path)
    }
}

impl From<&PathBuf> for ArchiveInput {
    fn from(path: &PathBuf) -> Self {
        Self::file(path)
    }
}

impl ArchiveInput {
    /// The archive file at `path`.
    pub fn file(path: &Path) -> Self {
        Self {
            name: path.to_owned(),
            open: None,
        }
    }

    /// An archive read through `open`, shown in messages as `name` (which must carry no
    /// credential).
    pub fn stream(name: impl Into<PathBuf>, open: OpenInput) -> Self {
        Self {
            name: name.into(),
            open: Some(open),
        }
    }

    /// The name shown in messages.
    pub fn name(&self) -> &Path {
        &self.name
    }
}

/// An archive that passed verification. Cloning it is cheap (the manifest is shared).
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    path: PathBuf,
    input: ArchiveInput,
    decryption: Decryption,
    limits: ReadLimits,
    manifest: Arc<Manifest>,
    stats: ReadStats,
    /// A KV archive's secrets as its metadata documents record them (no data), by path.
    kv_secrets: Arc<[KvSecret]>,
}

/// What the verification pass read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Size of the encrypted file.
    pub file_bytes: u64,
    /// Bytes of entry data hashed.
    pub entry_bytes: u64,
    /// Tar entries seen (files and folders).
    pub tar_entries: u64,
}

impl ArchiveReader {
    /// Checks that `path` names an existing file, before any key is loaded or passphrase
    /// asked: [`ArchiveError::ArchiveNotFound`] when nothing is there (also when a folder on
    /// the way is missing), [`ArchiveError::ArchiveIsFolder`] for a folder. Every command
    /// that reads an archive calls this first, so a missing archive fails the same way
    /// everywhere.
    pub fn check_path(path: &Path) -> Result<(), ArchiveError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Err(ArchiveError::ArchiveIsFolder(path.to_owned())),
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(ArchiveError::ArchiveNotFound(path.to_owned())),
            Err(e) => Err(ArchiveError::io(
                format!("cannot open {}", path.display()),
                e,
            )),
        }
    }

    /// Opens and fully verifies the archive at `path` within the decryption's limits
    /// ([`Decryption::limits`]: the defaults unless raised).
    pub fn open(path: &Path, decryption: &Decryption) -> Result<Self, ArchiveError> {
        Self::open_with_limits(path, decryption, decryption.limits())
    }

    /// Opens and fully verifies the archive at `path`. Fails with the first broken rule:
    /// [`ArchiveError::Verify`] for a damaged or hostile archive, other variants when it
    /// cannot be checked at all (no matching identity, unreadable file).
    pub fn open_with_limits(
        path: &Path,
        decryption: &Decryption,
        limits: ReadLimits,
    ) -> Result<Self, ArchiveError> {
        Self::open_input(ArchiveInput::file(path), decryption, limits)
    }

    /// Opens and fully verifies the archive `input` gives, as
    /// [`ArchiveReader::open_with_limits`] does for a file. Each pass opens it again.
    pub fn open_input(
        input: ArchiveInput,
        decryption: &Decryption,
        limits: ReadLimits,
    ) -> Result<Self, ArchiveError> {
        let (manifest, stats, kv_secrets) = verify_pass(&input, decryption, &limits, None)?
            .ok_or_else(|| {
                ArchiveError::io(
                    "the archive pass stopped",
                    io::ErrorKind::Interrupted.into(),
                )
            })?;
        Ok(Self {
            path: input.name.clone(),
            input,
            decryption: decryption.clone(),
            limits,
            manifest: Arc::new(manifest),
            stats,
            kv_secrets: kv_secrets.into(),
        })
    }

    /// Opens the archive at `path` in one streaming pass that hands each item entry to
    /// `deliver` as soon as it is read (in archive order, its size and SHA-256 computed),
    /// before the manifest, which comes last, has been seen. Entries of items for which
    /// `wants(kind, name)` is false are only hashed, never held. Every rule of
    /// [`ArchiveReader::open`] is checked, the manifest cross-check at the end: so the
    /// consumer learns that an archive is bad only after it has seen the entries before the
    /// damage, and must treat what it was handed as unverified until this returns `Ok`.
    /// Memory holds one entry's data at a time (at most the entry size limit) besides the
    /// manifest and a small record per entry.
    ///
    /// Returns `Ok(None)` when `deliver` answered [`ControlFlow::Break`]: the pass stopped
    /// there and nothing after that entry was checked.
    pub fn stream<W, D>(
        path: &Path,
        decryption: &Decryption,
        wants: W,
        deliver: D,
    ) -> Result<Option<Self>, ArchiveError>
    where
        W: FnMut(Kind, &str) -> bool,
        D: FnMut(StreamedEntry) -> ControlFlow<()>,
    {
        Self::stream_input(ArchiveInput::file(path), decryption, wants, deliver)
    }

    /// [`ArchiveReader::stream`] over the archive `input` gives (a file, or an object in
    /// Blob Storage or S3 read as it arrives).
    pub fn stream_input<W, D>(
        input: ArchiveInput,
        decryption: &Decryption,
        mut wants: W,
        mut deliver: D,
    ) -> Result<Option<Self>, ArchiveError>
    where
        W: FnMut(Kind, &str) -> bool,
        D: FnMut(StreamedEntry) -> ControlFlow<()>,
    {
        let limits = decryption.limits();
        let sink = Sink {
            wants: &mut wants,
            deliver: &mut deliver,
        };
        let Some((manifest, stats, kv_secrets)) =
            verify_pass(&input, decryption, &limits, Some(sink))?
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            path: input.name.clone(),
            input,
            decryption: decryption.clone(),
            limits,
            manifest: Arc::new(manifest),
            stats,
            kv_secrets: kv_secrets.into(),
        }))
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the verification pass read.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// A KV archive's secrets (format version 2) as their verified metadata documents
    /// record them, sorted by path: metadata and every version's state, no data (see
    /// [`kv::read_snapshot`] for the data). Empty for a Key Vault archive.
    pub fn kv_secrets(&self) -> &[KvSecret] {
        &self.kv_secrets
    }

    /// Reads the archive again and hands every `kv-version` entry to `deliver` with its
    /// content, each after its size and SHA-256 matched the manifest; fails when one is
    /// missing or differs. The content holds values: it is wiped once `deliver` returns.
    pub(super) fn kv_version_pass(
        &self,
        mut deliver: impl FnMut(&KvEntry, &[u8]) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let manifest = &self.manifest;
        let index: HashMap<&str, usize> = manifest
            .kv_entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        let mut delivered = vec![false; manifest.kv_entries.len()];
        let (mut archive, failure, _) = open_stream(&self.input, &self.decryption, &self.limits)?;
        let mut entries_end = 0;
        {
            let entries = archive.entries().map_err(|e| tar_error(&failure, e))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| tar_error(&failure, e))?;
                entries_end = entries_end.max(entry_end(&entry));
                let path = match check_entry(&entry)? {
                    Checked::Folder => continue,
                    Checked::File(path) => path,
                };
                if path == FORMAT_MARKER_PATH || path == MANIFEST_PATH {
                    continue;
                }
                // The file was verified a moment ago; anything else now means it changed.
                let Some(&i) = index.get(path.as_str()) else {
                    return Err(VerifyError::NotInManifest(path).into());
                };
                let expected = &manifest.kv_entries[i];
                if expected.entry_type != KvEntryType::KvVersion {
                    continue;
                }
                if delivered[i] {
                    return Err(VerifyError::DuplicateEntry(path).into());
                }
                if entry.size() != expected.size || expected.size > self.limits.max_entry_size {
                    return Err(VerifyError::SizeMismatch {
                        path,
                        expected: expected.size,
                        actual: entry.size(),
                    }
                    .into());
                }
                let data = read_all(&mut entry, expected.size, &failure)?;
                if Sha256Digest(Sha256::digest(&*data).into()) != expected.sha256 {
                    return Err(VerifyError::ChecksumMismatch(path).into());
                }
                delivered[i] = true;
                deliver(expected, &data)?;
            }
        }
        finish_tar(archive, &failure, entries_end)?;
        let missing = manifest
            .kv_entries
            .iter()
            .zip(&delivered)
            .find(|(e, done)| e.entry_type == KvEntryType::KvVersion && !**done);
        if let Some((entry, _)) = missing {
            return Err(VerifyError::MissingEntry(entry.path.clone()).into());
        }
        Ok(())
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the archive again, on a background thread, and yields every item entry in
    /// archive order, each after its size and SHA-256 matched the manifest. The iterator
    /// ends after the first error. Dropping it stops the thread.
    pub fn entries(&self) -> EntryIter {
        let (tx, rx) = sync_channel(8);
        let input = self.input.clone();
        let decryption = self.decryption.clone();
        let limits = self.limits;
        let manifest = self.manifest.clone();
        let spawned = std::thread::Builder::new()
            .name("coldvault-archive-read".to_owned())
            .spawn(move || {
                if let Err(e) = entries_pass(&input, &decryption, &limits, &manifest, &tx) {
                    let _ = tx.send(Err(e));
                }
            });
        let rx = match spawned {
            Ok(_) => rx,
            Err(e) => {
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(ArchiveError::io("cannot start a reader thread", e)));
                rx
            }
        };
        EntryIter { rx, done: false }
    }
}

/// One verified entry: its manifest record and its content.
pub struct ArchiveEntry {
    /// The entry as the manifest lists it.
    pub entry: ManifestEntry,
    /// Its content.
    pub data: EntryData,
}

impl std::fmt::Debug for ArchiveEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveEntry")
            .field("path", &self.entry.path)
            .field("size", &self.entry.size)
            .finish_non_exhaustive()
    }
}

/// The content of an entry.
pub enum EntryData {
    /// A plain secret version (its value in a `SecretString`).
    Secret(SecretRecord),
    /// A certificate export holding a private key.
    Private(SecretBox<[u8]>),
    /// Anything else: a backup blob (already encrypted by Key Vault), a public part, a
    /// policy.
    Bytes(Vec<u8>),
}

/// An item entry handed out by [`ArchiveReader::stream`] while the pass runs: read and
/// hashed, not yet checked against the manifest.
pub struct StreamedEntry {
    /// The entry's tar path.
    pub path: String,
    /// What it holds, from its path.
    pub entry_type: EntryType,
    /// The item's kind, from its path.
    pub kind: Kind,
    /// The item's name, from its path.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content.
    pub sha256: Sha256Digest,
    /// Its content.
    pub data: EntryData,
}

impl std::fmt::Debug for StreamedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedEntry")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The consumer of a streaming pass: which items it wants, and where their entries go.
struct Sink<'a> {
    wants: &'a mut dyn FnMut(Kind, &str) -> bool,
    deliver: &'a mut dyn FnMut(StreamedEntry) -> ControlFlow<()>,
}

/// Verified entries, in archive order. See [`ArchiveReader::entries`].
pub struct EntryIter {
    rx: Receiver<Result<ArchiveEntry, ArchiveError>>,
    done: bool,
}

impl std::fmt::Debug for EntryIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryIter")
            .field("done", &self.done)
            .finish()
    }
}

impl Iterator for EntryIter {
    type Item = Result<ArchiveEntry, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.rx.recv() {
            Ok(Ok(entry)) => Some(Ok(entry)),
            Ok(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

/// Opens the layers: file → age → zstd → bounds → tar.
fn open_stream(
    input: &ArchiveInput,
    decryption: &Decryption,
    limits: &ReadLimits,
) -> Result<(tar::Archive<TarStream>, FailureSlot, u64), ArchiveError> {
    let path = input.name.as_path();
    let shown = path.display().to_string();
    let not_found = |e: io::Error| {
        if is_not_found(&e) {
            ArchiveError::ArchiveNotFound(path.to_owned())
        } else {
            ArchiveError::io(format!("cannot open {shown}"), e)
        }
    };
    let (file, file_bytes): (InputRead, u64) = match &input.open {
        None => {
            let file = File::open(path).map_err(not_found)?;
            let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(file), file_bytes)
        }
        Some(open) => open().map_err(not_found)?,
    };
    let (raw, raw_state) = RawReader::new(file);
    let stream = decryption.decrypt(BufReader::new(raw))?;
    let failure = FailureSlot::default();
    let consumed = Arc::new(Mutex::new(0));
    let decrypted = DecryptedReader {
        inner: stream,
        raw: raw_state,
        failure: failure.clone(),
        consumed: consumed.clone(),
    };
    let decoder = zstd::Decoder::new(decrypted).map_err(|e| VerifyError::NotZstd(e.to_string()))?;
    let bounded = DecompressedReader {
        inner: decoder,
        failure: failure.clone(),
        consumed,
        produced: 0,
        bounds: StreamBounds {
            max_total: limits.max_total_size,
            max_ratio: limits.max_ratio,
            ratio_after: limits.ratio_after,
        },
    };
    let guarded = HeaderGuard::new(bounded, failure.clone());
    Ok((tar::Archive::new(guarded), failure, file_bytes))
}

/// Nothing at the path: the file, or a folder on the way to it, does not exist.
fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Where the data of `entry` ends in the tar stream, padding to the 512-byte block included.
fn entry_end<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    entry
        .raw_file_position()
        .saturating_add(entry.size().div_ceil(BLOCK) * BLOCK)
}

/// The tar block size.
const BLOCK: u64 = 512;

/// Ends a pass over the tar stream whose last entry's data ended at `entries_end`: drains
/// the rest (only zeros may follow, and reading to the end authenticates age's last chunk),
/// then checks that the zeros include the end-of-archive marker. The tar crate stops as
/// quietly at the end of the data as at the marker, so the check is made here: at least
/// two zero blocks must follow the last entry (POSIX; `tar -c` writes more).
fn finish_tar(
    archive: tar::Archive<TarStream>,
    failure: &FailureSlot,
    entries_end: u64,
) -> Result<(), ArchiveError> {
    let mut stream = archive.into_inner();
    drain(&mut stream, failure)?;
    if stream.inner.produced.saturating_sub(entries_end) < 2 * BLOCK {
        return Err(VerifyError::MissingTarEnd.into());
    }
    Ok(())
}

/// A tar entry that passed the structural checks.
enum Checked {
    /// A directory (or the root): carries no meaning, skipped.
    Folder,
    /// A regular file at this (normalised) path.
    File(String),
}

/// The checks every tar entry passes: a safe path and a permitted type.
fn check_entry<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Checked, ArchiveError> {
    let path = layout::check_tar_path(&entry.path_bytes())?;
    let forbidden = |kind| {
        Err(VerifyError::ForbiddenEntryType {
            path: path.clone(),
            kind,
        }
        .into())
    };
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Ok(Checked::File(path)),
        tar::EntryType::Directory => Ok(Checked::Folder),
        // A pax global header carries defaults (times, owners), not content.
        tar::EntryType::XGlobalHeader => Ok(Checked::Folder),
        tar::EntryType::Symlink => forbidden("symbolic link"),
        tar::EntryType::Link => forbidden("hard link"),
        tar::EntryType::Char | tar::EntryType::Block => forbidden("device"),
        tar::EntryType::Fifo => forbidden("FIFO"),
        _ => forbidden("special entry"),
    }
}

/// Reads an entry's data into memory wiped on drop (it may hold a secret value).
fn read_all<R: Read>(
    entry: &mut R,
    size: u64,
    failure: &FailureSlot,
) -> Result<Zeroizing<Vec<u8>>, ArchiveError> {
    let mut data = Zeroizing::new(Vec::with_capacity(usize::try_from(size).unwrap_or(0)));
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| failure.explain(|| VerifyError::NotTar(e.to_string()).into()))?;
    if data.len() as u64 != size {
        return Err(failure.explain(|| VerifyError::NotTar("entry data ends early".into()).into()));
    }
    Ok(data)
}

fn check_marker(data: &[u8]) -> Result<(), VerifyError> {
    let marker: FormatMarker = serde_json::from_slice(data)
        .map_err(|e| VerifyError::InvalidFormatMarker(e.to_string()))?;
    if marker.format != FORMAT_NAME {
        return Err(VerifyError::UnknownFormat(marker.format));
    }
    super::check_format_version(marker.format_version, READ_VERSIONS)
}

/// Checks that an item entry's content follows its type's rules.
fn check_content(path: &str, data: &[u8]) -> Result<Option<SecretRecord>, VerifyError> {
    if let Some((name, version)) = layout::parse_secret_version_path(path) {
        let record = SecretRecord::from_json(path, data)?;
        if record.name != name || record.version != version {
            return Err(VerifyError::InvalidEntry {
                path: path.to_owned(),
                reason: "its name or version differs from its path".to_owned(),
            });
        }
        return Ok(Some(record));
    }
    Ok(None)
}

/// After the tar end marker: only zero padding, then the end of the zstd and age streams
/// (reading to the end is what authenticates age's last chunk).
fn drain(stream: &mut TarStream, failure: &FailureSlot) -> Result<(), ArchiveError> {
    let mut buf = [0u8; 8192];
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failure.explain(|| VerifyError::NotTar(e.to_string()).into())),
        };
        total += n as u64;
        if total > TRAILING_LIMIT || buf[..n].iter().any(|&b| b != 0) {
            return Err(VerifyError::TrailingData.into());
        }
    }
}

fn tar_error(failure: &FailureSlot, e: io::Error) -> ArchiveError {
    failure.explain(|| VerifyError::NotTar(e.to_string()).into())
}

/// The verification pass. Returns the manifest once every rule holds; with a `sink`, hands
/// it the wanted item entries as they are read (`None`: the sink stopped the pass).
fn verify_pass(
    input: &ArchiveInput,
    decryption: &Decryption,
    limits: &ReadLimits,
    mut sink: Option<Sink<'_>>,
) -> Result<Option<(Manifest, ReadStats, Vec<KvSecret>)>, ArchiveError> {
    let (mut archive, failure, file_bytes) = open_stream(input, decryption, limits)?;
    let mut stats = ReadStats {
        file_bytes,
        ..ReadStats::default()
    };
    // Keyed by a digest of the path, not the path: a fifth of the memory per entry.
    let mut seen: HashMap<PathKey, (u64, Sha256Digest)> = HashMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut kv_seen = KvSeen::default();
    let mut marker_seen = false;
    let mut entries_end = 0;
    {
        let entries = archive.entries().map_err(|e| tar_error(&failure, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| tar_error(&failure, e))?;
            entries_end = entries_end.max(entry_end(&entry));
            stats.tar_entries += 1;
            if stats.tar_entries > limits.max_entries {
                return Err(VerifyError::TooManyEntries {
                    limit: limits.max_entries,
                }
                .into());
            }
            // Checked before the marker rule, so a hostile first entry is reported as what
            // it is (a link, an unsafe path) rather than as a missing marker.
            let path = match check_entry(&entry)? {
                Checked::Folder => continue,
                Checked::File(path) => path,
            };
            let size = entry.size();
            if !marker_seen {
                if path != FORMAT_MARKER_PATH {
                    return Err(VerifyError::MissingFormatMarker { found: path }.into());
                }
                if size > MARKER_LIMIT {
                    return Err(VerifyError::InvalidFormatMarker("too large".into()).into());
                }
                let data = read_all(&mut entry, size, &failure)?;
                check_marker(&data)?;
                marker_seen = true;
                continue;
            }
            if manifest.is_some() {
                return Err(VerifyError::EntryAfterManifest(path).into());
            }
            if path == MANIFEST_PATH {
                // Checked on the tar header's size, before any of it is read or parsed.
                if size > limits.max_manifest_size {
                    return Err(VerifyError::ManifestTooLarge {
                        size,
                        limit: limits.max_manifest_size,
                    }
                    .into());
                }
                let reader = io::BufReader::with_capacity(64 * 1024, (&mut entry).take(size));
                let parsed: Manifest = serde_json::from_reader(reader).map_err(|e| {
                    failure.explain(|| VerifyError::InvalidManifest(e.to_string()).into())
                })?;
                manifest = Some(parsed);
                continue;
            }
            if path == FORMAT_MARKER_PATH || seen.contains_key(&path_key(&path)) {
                return Err(VerifyError::DuplicateEntry(path).into());
            }
            if size > limits.max_entry_size {
                return Err(VerifyError::EntryTooLarge {
                    path,
                    size,
                    limit: limits.max_entry_size,
                }
                .into());
            }
            let parsed = layout::parse_entry_path(&path);
            let wanted = match (&mut sink, parsed) {
                (Some(sink), Some((_, kind, name, _))) => (sink.wants)(kind, name),
                _ => false,
            };
            let digest = if let (true, Some(sink), Some((entry_type, kind, name, _))) =
                (wanted, &mut sink, parsed)
            {
                let data = read_all(&mut entry, size, &failure)?;
                let digest = Sha256Digest(Sha256::digest(&*data).into());
                let data = match (entry_type, check_content(&path, &data)?) {
                    (_, Some(record)) => EntryData::Secret(record),
                    (EntryType::CertificateExport, None) => {
                        EntryData::Private(SecretBox::from(data.to_vec().into_boxed_slice()))
                    }
                    (_, None) => EntryData::Bytes(data.to_vec()),
                };
                let streamed = StreamedEntry {
                    entry_type,
                    kind,
                    name: name.to_owned(),
                    path: path.clone(),
                    size,
                    sha256: digest,
                    data,
                };
                if (sink.deliver)(streamed).is_break() {
                    return Ok(None);
                }
                digest
            } else if layout::parse_secret_version_path(&path).is_some() {
                let data = read_all(&mut entry, size, &failure)?;
                check_content(&path, &data)?;
                Sha256Digest(Sha256::digest(&*data).into())
            } else if let Some((kv_type, name, version)) = kv::parse_entry_path(&path) {
                let data = read_all(&mut entry, size, &failure)?;
                kv_seen.check(&path, kv_type, &name, version, &data)?;
                Sha256Digest(Sha256::digest(&*data).into())
            } else {
                hash_stream(&mut entry, size, &failure)?
            };
            stats.entry_bytes += size;
            seen.insert(path_key(&path), (size, digest));
        }
    }
    finish_tar(archive, &failure, entries_end)?;
    if !marker_seen {
        return Err(VerifyError::MissingFormatMarker {
            found: String::new(),
        }
        .into());
    }
    let manifest = manifest.ok_or(VerifyError::MissingManifest)?;
    manifest.check()?;
    // Every listed entry (Key Vault's and KV's alike) was read, with its size and digest.
    let listed = manifest
        .entries
        .iter()
        .map(|e| (&e.path, e.size, &e.sha256))
        .chain(
            manifest
                .kv_entries
                .iter()
                .map(|e| (&e.path, e.size, &e.sha256)),
        );
    for (path, expected, sha256) in listed {
        let Some((size, digest)) = seen.remove(&path_key(path)) else {
            return Err(VerifyError::MissingEntry(path.clone()).into());
        };
        if size != expected {
            return Err(VerifyError::SizeMismatch {
                path: path.clone(),
                expected,
                actual: size,
            }
            .into());
        }
        if digest != *sha256 {
            return Err(VerifyError::ChecksumMismatch(path.clone()).into());
        }
    }
    if !seen.is_empty() {
        let extra = name_unlisted(input, decryption, limits, &seen)
            .unwrap_or_else(|| "(unnamed)".to_owned());
        return Err(VerifyError::NotInManifest(extra).into());
    }
    // Every KV entry is now known to be the one the manifest lists: the documents can be
    // held against it (live versions have data, deleted and destroyed ones none).
    let kv_secrets = kv_seen.finish(&manifest)?;
    Ok(Some((manifest, stats, kv_secrets)))
}

/// A path's identity in the verification pass: 128 bits of its SHA-256.
type PathKey = [u8; 16];

fn path_key(path: &str) -> PathKey {
    let digest = Sha256::digest(path.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Reads the archive once more to name the first entry the manifest does not list (the
/// verification pass kept only digests of the paths). Only runs on a failing archive.
fn name_unlisted(
    input: &ArchiveInput,
    decryption: &Decryption,
    limits: &ReadLimits,
    unlisted: &HashMap<PathKey, (u64, Sha256Digest)>,
) -> Option<String> {
    let (mut archive, _, _) = open_stream(input, decryption, limits).ok()?;
    let entries = archive.entries().ok()?;
    for entry in entries {
        let entry = entry.ok()?;
        if let Ok(Checked::File(name)) = check_entry(&entry)
            && unlisted.contains_key(&path_key(&name))
        {
            return Some(name);
        }
    }
    None
}

fn hash_stream<R: Read>(
    entry: &mut R,
    size: u64,
    failure: &FailureSlot,
) -> Result<Sha256Digest, ArchiveError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match entry.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(
                    failure.explain(|| VerifyError::NotTar("entry data ends early".into()).into())
                );
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tar_error(failure, e)),
        };
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}

/// The second pass: yields entries checked against the already verified manifest.
fn entries_pass(
    input: &ArchiveInput,
    decryption: &Decryption,
    limits: &ReadLimits,
    manifest: &Manifest,
    tx: &SyncSender<Result<ArchiveEntry, ArchiveError>>,
) -> Result<(), ArchiveError> {
    let index: HashMap<&str, usize> = manifest
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_str(), i))
        .collect();
    let mut delivered = vec![false; manifest.entries.len()];
    let (mut archive, failure, _) = open_stream(input, decryption, limits)?;
    let mut entries_end = 0;
    {
        let entries = archive.entries().map_err(|e| tar_error(&failure, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| tar_error(&failure, e))?;
            entries_end = entries_end.max(entry_end(&entry));
            let path = match check_entry(&entry)? {
                Checked::Folder => continue,
                Checked::File(path) => path,
            };
            if path == FORMAT_MARKER_PATH || path == MANIFEST_PATH {
                continue;
            }
            // The file was verified a moment ago; anything else now means it changed.
            let changed = || VerifyError::NotInManifest(path.clone());
            let Some(&i) = index.get(path.as_str()) else {
                // KV entries are not Key Vault items: `kv_version_pass` hands them out.
                if manifest.kv_entries.iter().any(|e| e.path == path) {
                    continue;
                }
                return Err(changed().into());
            };
            let expected = &manifest.entries[i];
            if delivered[i] {
                return Err(VerifyError::DuplicateEntry(path).into());
            }
            if entry.size() != expected.size || expected.size > limits.max_entry_size {
                return Err(VerifyError::SizeMismatch {
                    path,
                    expected: expected.size,
                    actual: entry.size(),
                }
                .into());
            }
            let data = read_all(&mut entry, expected.size, &failure)?;
            if Sha256Digest(Sha256::digest(&*data).into()) != expected.sha256 {
                return Err(VerifyError::ChecksumMismatch(path).into());
            }
            delivered[i] = true;
            let data = match expected.entry_type {
                EntryType::SecretVersion => match check_content(&path, &data)? {
                    Some(record) => EntryData::Secret(record),
                    None => {
                        return Err(VerifyError::InvalidEntry {
                            path,
                            reason: "not at a secret version path".to_owned(),
                        }
                        .into());
                    }
                },
                EntryType::CertificateExport => {
                    EntryData::Private(SecretBox::from(data.to_vec().into_boxed_slice()))
                }
                _ => EntryData::Bytes(data.to_vec()),
            };
            let item = ArchiveEntry {
                entry: expected.clone(),
                data,
            };
            if tx.send(Ok(item)).is_err() {
                // The consumer stopped listening.
                return Ok(());
            }
        }
    }
    finish_tar(archive, &failure, entries_end)?;
    if let Some(i) = delivered.iter().position(|d| !d) {
        return Err(VerifyError::MissingEntry(manifest.entries[i].path.clone()).into());
    }
    Ok(())
}
