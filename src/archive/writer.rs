//! [`ArchiveWriter`]: streams items into a new archive (`docs/FORMAT.md`, "Writing").
//!
//! The chain is synchronous: `tar::Builder` → zstd encoder → age `StreamWriter` → a
//! temporary file in the target folder (or stdout). Entry data goes straight through; only
//! the manifest's compact per-entry metadata stays in memory until the end, where it becomes
//! the last entry. [`ArchiveWriter::finish`] closes the layers in the documented order (tar,
//! zstd, age), syncs the file and renames it into place without replacing anything. Dropping
//! a writer without finishing it deletes the temporary file: no partial archive ever carries
//! the final name. A [`CommitGate`] lets another thread (a signal handler) stop a writer
//! that is finishing, and learn for certain whether the archive took its final name.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use age::secrecy::zeroize::Zeroize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::error::ArchiveError;
use super::keys::Encryption;
use super::layout::{self, FORMAT_MARKER_PATH, MANIFEST_PATH};
use super::manifest::{
    Attributes, Counts, DeletedItem, EntryType, FormatMarker, Kind, KvEntry, KvEntryType, Manifest,
    ManifestEntry, RecapturedItem, RunWindow, SecretRecord, Sha256Digest, SkippedItem, Source,
    Tags, Tool,
};
use super::streams::CountingWriter;
use super::{FILE_SUFFIX, FORMAT_NAME, FORMAT_VERSION, KV_FORMAT_VERSION, kv};
use crate::atomic_file::{AtomicFile, Replace, parent_dir, sync_folder};

/// Where a new archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Into this folder, as `VAULT-YYYYMMDDTHHMMSSZ.tar.zst.age`.
    Dir(PathBuf),
    /// To this exact file name.
    File(PathBuf),
    /// To standard output (refused when it is a terminal).
    Stdout,
}

/// Metadata of an item entry other than a secret version: kind, name, versions, attributes,
/// tags, content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    /// The item's kind.
    pub kind: Kind,
    /// The item's name.
    pub name: String,
    /// Its current version when captured.
    pub version: Option<String>,
    /// Every version a backup blob holds, when known.
    pub versions: Vec<String>,
    /// Attributes of the current version.
    pub attributes: Attributes,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Content type, if any.
    pub content_type: Option<String>,
}

impl ItemInfo {
    /// An item with only its kind and name known.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            version: None,
            versions: Vec::new(),
            attributes: Attributes::default(),
            tags: BTreeMap::new(),
            content_type: None,
        }
    }
}

/// What [`ArchiveWriter::finish`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// The final file, or `None` for stdout.
    pub path: Option<PathBuf>,
    /// Bytes written (the encrypted file's size).
    pub bytes: u64,
    /// What the archive holds.
    pub counts: Counts,
    /// The creation time recorded in the manifest.
    pub created: OffsetDateTime,
}

/// A byte sink whose content appears at its destination only when committed (an upload to
/// an object store, committed last). Dropped uncommitted, it must leave nothing behind.
pub trait CommitSink: Write + Send {
    /// Makes everything written appear, whole, under its final name.
    fn commit(self: Box<Self>) -> io::Result<()>;

    /// What [`CommitGate::abandon`] calls to stop the sink at once (a write stuck on a dead
    /// connection included): the writer's thread then fails and drops the sink uncommitted.
    fn abandon_hook(&self) -> Option<AbandonHook> {
        None
    }
}

/// See [`CommitSink::abandon_hook`].
pub type AbandonHook = Arc<dyn Fn() + Send + Sync>;

/// The bottom of the chain: a temporary file beside the final name, stdout, or a sink that
/// commits last.
enum Sink {
    File(AtomicFile),
    Stdout(io::BufWriter<io::Stdout>),
    Remote(Box<dyn CommitSink>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout(s) => s.write(buf),
            Sink::Remote(r) => r.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s) => s.flush(),
            Sink::Remote(r) => r.flush(),
        }
    }
}

/// Where a finishing archive stands, decided once: it takes its final name (committed) or
/// never does (abandoned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum GateState {
    #[default]
    Open,
    Abandoned,
    /// The archive is complete at this path (`None`: on stdout).
    Committed(Option<PathBuf>),
}

/// What [`CommitGate::abandon`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbandonOutcome {
    /// The archive will never take its final name; the temporary file is deleted.
    Abandoned,
    /// Too late: the archive was already complete under this name (`None`: on stdout).
    AlreadyCommitted(Option<PathBuf>),
}

/// A handle on one writer's commit: the step that makes the archive complete (the age final
/// chunk, the sync and the rename to its final name). The writer takes that step only while
/// the gate is open, holding it; [`CommitGate::abandon`] waits for a step in progress, so
/// whoever abandons learns for certain whether an archive was written.
#[derive(Clone, Default)]
pub struct CommitGate(Arc<Mutex<GateState>>, Arc<Mutex<Option<AbandonHook>>>);

impl std::fmt::Debug for CommitGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CommitGate")
            .field(&self.0)
            .finish_non_exhaustive()
    }
}

impl CommitGate {
    /// Closes the gate for good, unless the archive was already committed. Blocks while the
    /// writer is committing (a sync and a rename): call it off the async runtime.
    pub fn abandon(&self) -> AbandonOutcome {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            GateState::Committed(path) => AbandonOutcome::AlreadyCommitted(path.clone()),
            GateState::Open | GateState::Abandoned => {
                *state = GateState::Abandoned;
                let hook = self.1.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(hook) = hook {
                    hook();
                }
                AbandonOutcome::Abandoned
            }
        }
    }
}

type Chain = tar::Builder<zstd::Encoder<'static, age::stream::StreamWriter<CountingWriter<Sink>>>>;

/// Streams items into a new archive. Not `Sync`; use it from one thread (async callers:
/// `tokio::task::spawn_blocking` or a channel to a writer thread).
pub struct ArchiveWriter {
    chain: Chain,
    final_path: Option<PathBuf>,
    created: OffsetDateTime,
    source: Source,
    run: Option<RunWindow>,
    entries: Vec<ManifestEntry>,
    /// Hashes of the paths written, to refuse duplicates without a second copy of every
    /// path (a hit is confirmed against the entries).
    path_hashes: HashSet<u64>,
    hasher: std::collections::hash_map::RandomState,
    skipped: Vec<SkippedItem>,
    deleted: Vec<DeletedItem>,
    recaptured: Vec<RecapturedItem>,
    gate: CommitGate,
    /// 1 for a Key Vault, 2 for a KV mount: decided by the source, fixed at creation.
    format_version: u32,
    /// KV entries (format version 2), and the version states their metadata records.
    kv_entries: Vec<KvEntry>,
    kv_counts: Counts,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("final_path", &self.final_path)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    /// Starts a new archive: checks the destination (an existing file is refused now, not
    /// after the work), creates the temporary file (mode 0600) in the target folder, writes
    /// the age header and the format marker entry.
    pub fn create(
        destination: Destination,
        encryption: &Encryption,
        source: Source,
    ) -> Result<Self, ArchiveError> {
        let created = now();
        let final_path = match &destination {
            // A folder gets the first free name: a second backup of the vault in the same
            // second takes `-1`, `-2`… instead of failing (now or, worse, after the work).
            Destination::Dir(dir) => {
                let first = dir.join(file_name(&source.vault, created)?);
                Some(free_name(&first).ok_or(ArchiveError::OutputExists(first))?)
            }
            Destination::File(path) => Some(path.clone()),
            Destination::Stdout => None,
        };
        let sink = match &final_path {
            None => {
                let stdout = io::stdout();
                if stdout.is_terminal() {
                    return Err(ArchiveError::OutputIsTerminal);
                }
                Sink::Stdout(io::BufWriter::with_capacity(128 * 1024, stdout))
            }
            Some(path) => {
                if path.symlink_metadata().is_ok() {
                    return Err(ArchiveError::OutputExists(path.clone()));
                }
                let dir = parent_dir(path);
                // tempfile creates with mode 0600 and O_EXCL; the rename keeps the mode. The
                // writing process's id is part of the name, so a later run can tell a file
                // left by a killed run from a live one (`remove_stale_partials`).
                let prefix = format!("{PARTIAL_PREFIX}{}-", std::process::id());
                let tmp = AtomicFile::create_in(dir, &prefix, PARTIAL_SUFFIX).map_err(|e| {
                    ArchiveError::io(format!("cannot create a file in {}", dir.display()), e)
                })?;
                Sink::File(tmp)
            }
        };
        Self::start(sink, final_path, created, encryption, source)
    }

    /// Starts a new archive into a [`CommitSink`]: `open` gets the archive's file name
    /// (`VAULT-YYYYMMDDTHHMMSSZ.tar.zst.age`) and returns the sink and how to show where it
    /// goes (no credential). The archive appears only when [`ArchiveWriter::finish`] commits
    /// the sink; dropped before, the sink is dropped uncommitted.
    pub fn create_in_sink(
        open: impl FnOnce(&str) -> Result<(Box<dyn CommitSink>, String), ArchiveError>,
        encryption: &Encryption,
        source: Source,
    ) -> Result<Self, ArchiveError> {
        let created = now();
        let name = file_name(&source.vault, created)?;
        let (sink, shown) = open(&name)?;
        let hook = sink.abandon_hook();
        let writer = Self::start(
            Sink::Remote(sink),
            Some(PathBuf::from(shown)),
            created,
            encryption,
            source,
        )?;
        *writer.gate.1.lock().unwrap_or_else(|e| e.into_inner()) = hook;
        Ok(writer)
    }

    fn start(
        sink: Sink,
        final_path: Option<PathBuf>,
        created: OffsetDateTime,
        encryption: &Encryption,
        source: Source,
    ) -> Result<Self, ArchiveError> {
        let shown = shown_path(final_path.as_deref());
        let io_err = |e| ArchiveError::io(format!("cannot write {shown}"), e);
        let stream = encryption
            .encryptor()?
            .wrap_output(CountingWriter {
                inner: sink,
                written: 0,
            })
            .map_err(io_err)?;
        let mut encoder = zstd::Encoder::new(stream, 3).map_err(io_err)?;
        encoder.include_checksum(true).map_err(io_err)?;
        // What is archived decides the format: a KV mount's archive is version 2, which
        // version 1 readers refuse up front; a Key Vault's stays version 1, unchanged.
        let format_version = if kv::is_kv_source(&source) {
            KV_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        };
        let mut writer = Self {
            chain: tar::Builder::new(encoder),
            final_path,
            created,
            source,
            run: None,
            entries: Vec::new(),
            path_hashes: HashSet::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            skipped: Vec::new(),
            deleted: Vec::new(),
            recaptured: Vec::new(),
            gate: CommitGate::default(),
            format_version,
            kv_entries: Vec::new(),
            kv_counts: Counts::default(),
        };
        let marker = serde_json::to_vec(&FormatMarker {
            format: FORMAT_NAME.to_owned(),
            format_version: u64::from(format_version),
        })
        .map_err(|e| ArchiveError::io("cannot encode the format marker", e.into()))?;
        writer.append(FORMAT_MARKER_PATH, &marker)?;
        Ok(writer)
    }

    /// The gate of this writer's commit, for the thread that may have to stop it.
    pub fn commit_gate(&self) -> CommitGate {
        self.gate.clone()
    }

    /// The final file name (`None` for stdout). The file exists only after `finish`.
    pub fn path(&self) -> Option<&Path> {
        self.final_path.as_deref()
    }

    /// Adds one plain secret version as a `secret-version` JSON entry. The serialized value
    /// is wiped from memory once written.
    pub fn add_secret_version(&mut self, record: &SecretRecord) -> Result<(), ArchiveError> {
        let mut json = record
            .to_json()
            .map_err(|e| ArchiveError::io("cannot encode a secret version", e.into()))?;
        let entry = ManifestEntry {
            path: String::new(),
            entry_type: EntryType::SecretVersion,
            kind: Kind::Secret,
            name: record.name.clone(),
            version: Some(record.version.clone()),
            versions: Vec::new(),
            current: record.current,
            attributes: record.attributes.clone(),
            tags: Tags::from(&record.tags),
            content_type: record.content_type.clone(),
            size: 0,
            sha256: Sha256Digest([0; 32]),
        };
        let result = self.add_entry(entry, &json);
        json.zeroize();
        result
    }

    /// Adds a native backup blob (all versions of one item) as a `backup` entry.
    pub fn add_blob(&mut self, item: &ItemInfo, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.add_item(EntryType::Backup, item, bytes)
    }

    /// Adds a certificate with its private key as the vault exports it (`content_type`
    /// `application/x-pkcs12` or `application/x-pem-file`).
    pub fn add_certificate_export(
        &mut self,
        name: &str,
        version: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut item = ItemInfo::new(Kind::Certificate, name);
        item.version = Some(version.to_owned());
        item.content_type = Some(content_type.to_owned());
        self.add_item(EntryType::CertificateExport, &item, bytes)
    }

    /// Adds a key's public part as a JSON Web Key (`jwk` must be a JSON object).
    pub fn add_key_public_jwk(
        &mut self,
        name: &str,
        version: &str,
        jwk: &[u8],
    ) -> Result<(), ArchiveError> {
        check_json_object(name, jwk)?;
        let mut item = ItemInfo::new(Kind::Key, name);
        item.version = Some(version.to_owned());
        item.content_type = Some("application/jwk+json".to_owned());
        self.add_item(EntryType::KeyPublicJwk, &item, jwk)
    }

    /// Adds a certificate's public X.509 certificate (DER, as the vault's `cer` field).
    pub fn add_certificate_public(
        &mut self,
        name: &str,
        version: &str,
        der: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut item = ItemInfo::new(Kind::Certificate, name);
        item.version = Some(version.to_owned());
        item.content_type = Some("application/pkix-cert".to_owned());
        self.add_item(EntryType::CertificatePublic, &item, der)
    }

    /// Adds policy metadata as JSON: a key's rotation policy or a certificate's policy.
    pub fn add_policy(&mut self, kind: Kind, name: &str, json: &[u8]) -> Result<(), ArchiveError> {
        check_json_object(name, json)?;
        let mut item = ItemInfo::new(kind, name);
        item.content_type = Some("application/json".to_owned());
        self.add_item(EntryType::Policy, &item, json)
    }

    /// Adds one KV secret (format version 2, a writer whose source is a KV address):
    /// `kv/ENC/metadata.json` with its metadata and every version's state, then
    /// `kv/ENC/versions/N.json` for each live version, whose data must have been read.
    /// Deleted and destroyed versions are recorded in the metadata only. The serialized
    /// values are wiped from memory once written.
    pub fn add_kv_secret(&mut self, secret: &crate::kv::KvSecret) -> Result<(), ArchiveError> {
        if self.format_version != KV_FORMAT_VERSION {
            return Err(ArchiveError::InvalidInput(
                "a KV secret cannot go into a Key Vault archive (format version 1)".to_owned(),
            ));
        }
        let docs = kv::secret_docs(secret)?;
        self.add_kv_entry(KvEntryType::KvMetadata, &secret.path, None, &docs.metadata)?;
        for (version, bytes) in &docs.versions {
            self.add_kv_entry(KvEntryType::KvVersion, &secret.path, Some(*version), bytes)?;
        }
        let c = &mut self.kv_counts;
        c.kv_versions += docs.counts.kv_versions;
        c.kv_deleted_versions += docs.counts.kv_deleted_versions;
        c.kv_destroyed_versions += docs.counts.kv_destroyed_versions;
        Ok(())
    }

    fn add_kv_entry(
        &mut self,
        entry_type: KvEntryType,
        name: &str,
        version: Option<u64>,
        data: &[u8],
    ) -> Result<(), ArchiveError> {
        let path = kv::entry_path(entry_type, name, version)
            .map_err(|e| ArchiveError::InvalidInput(e.to_string()))?;
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, path.as_str());
        if !self.path_hashes.insert(hash) && self.kv_entries.iter().any(|e| e.path == path) {
            return Err(ArchiveError::DuplicateEntry(path));
        }
        self.append(&path, data)?;
        self.kv_entries.push(KvEntry {
            path,
            entry_type,
            name: name.to_owned(),
            version,
            size: data.len() as u64,
            sha256: Sha256Digest(Sha256::digest(data).into()),
        });
        Ok(())
    }

    /// Records an item that could not be captured, with the reason.
    pub fn record_skipped(&mut self, kind: Kind, name: &str, reason: &str) {
        self.skipped.push(SkippedItem {
            kind,
            name: name.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Records a soft-deleted item (listed, not captured).
    pub fn record_deleted(&mut self, item: DeletedItem) {
        self.deleted.push(item);
    }

    /// Records an item captured again because its current version changed during the run.
    pub fn record_recaptured(&mut self, item: RecapturedItem) {
        self.recaptured.push(item);
    }

    /// Sets the time window of the run that captured the items.
    pub fn set_run_window(&mut self, started: OffsetDateTime, finished: OffsetDateTime) {
        self.run = Some(RunWindow { started, finished });
    }

    /// How many entries were added so far.
    pub fn entry_count(&self) -> usize {
        self.entries.len() + self.kv_entries.len()
    }

    /// Writes `manifest.json` and closes the layers in the documented order: tar end
    /// blocks, zstd end of frame, age final chunk; then fsync, and rename to the final name
    /// without replacing an existing file, and fsync of the folder.
    ///
    /// Errors: [`ArchiveError::Abandoned`] when the [`CommitGate`] was abandoned first (the
    /// temporary file is deleted; on stdout the age stream stays without its final chunk, so
    /// it reads as truncated); [`ArchiveError::NotDurable`] when the archive took its final
    /// name but its folder could not be synced.
    pub fn finish(self) -> Result<ArchiveSummary, ArchiveError> {
        self.finish_syncing_with(sync_folder)
    }

    /// [`ArchiveWriter::finish`] with the folder sync given, so tests can make it fail.
    fn finish_syncing_with(
        mut self,
        sync_folder: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<ArchiveSummary, ArchiveError> {
        let shown = shown_path(self.final_path.as_deref());
        let io_err = |e| ArchiveError::io(format!("cannot write {shown}"), e);
        let mut manifest = Manifest {
            format: FORMAT_NAME.to_owned(),
            format_version: u64::from(self.format_version),
            tool: Tool {
                name: env!("CARGO_PKG_NAME").to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            created: self.created,
            run: self.run,
            source: self.source.clone(),
            counts: self.kv_counts,
            entries: std::mem::take(&mut self.entries),
            kv_entries: std::mem::take(&mut self.kv_entries),
            skipped: std::mem::take(&mut self.skipped),
            deleted: std::mem::take(&mut self.deleted),
            recaptured: std::mem::take(&mut self.recaptured),
        };
        manifest.counts = manifest.computed_counts();
        self.path_hashes = HashSet::new();
        write_streamed_json(&mut self.chain, MANIFEST_PATH, &manifest, self.created)
            .map_err(io_err)?;
        let counts = manifest.counts;
        drop(manifest);

        let encoder = self.chain.into_inner().map_err(io_err)?;
        let stream = encoder.finish().map_err(io_err)?;
        // The commit, under the gate: once it is taken, an interrupt is told where the
        // archive is; once the gate is abandoned, it is never taken.
        let mut gate = self.gate.0.lock().unwrap_or_else(|e| e.into_inner());
        if *gate == GateState::Abandoned {
            return Err(ArchiveError::Abandoned);
        }
        let mut counting = stream.finish().map_err(io_err)?;
        counting.flush().map_err(io_err)?;
        let bytes = counting.written;
        let mut final_path = self.final_path.take();
        let mut local = true;
        match (counting.inner, &mut final_path) {
            (Sink::File(tmp), Some(path)) => {
                *path = persist_free(tmp, path).map_err(|e| match e {
                    Persist::Taken(first) => ArchiveError::OutputExists(first),
                    Persist::Io(e) => io_err(e),
                })?;
            }
            (Sink::Remote(sink), _) => {
                sink.commit().map_err(io_err)?;
                local = false;
            }
            (Sink::Stdout(_), _) | (Sink::File(_), None) => {}
        }
        *gate = GateState::Committed(final_path.clone());
        drop(gate);
        if let Some(path) = final_path.as_ref().filter(|_| local) {
            // The rename is durable only once the folder itself is synced: a folder that
            // cannot be synced leaves an archive that a crash may still take away.
            sync_folder(parent_dir(path)).map_err(|source| ArchiveError::NotDurable {
                path: path.clone(),
                source,
            })?;
        }
        Ok(ArchiveSummary {
            path: final_path,
            bytes,
            counts,
            created: self.created,
        })
    }

    fn add_item(
        &mut self,
        entry_type: EntryType,
        item: &ItemInfo,
        bytes: &[u8],
    ) -> Result<(), ArchiveError> {
        let entry = ManifestEntry {
            path: String::new(),
            entry_type,
            kind: item.kind,
            name: item.name.clone(),
            version: item.version.clone(),
            versions: item.versions.clone(),
            current: false,
            attributes: item.attributes.clone(),
            tags: Tags::from(&item.tags),
            content_type: item.content_type.clone(),
            size: 0,
            sha256: Sha256Digest([0; 32]),
        };
        for version in &item.versions {
            layout::check_name("version", version).map_err(name_error)?;
        }
        self.add_entry(entry, bytes)
    }

    fn add_entry(&mut self, mut entry: ManifestEntry, data: &[u8]) -> Result<(), ArchiveError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ArchiveError::InvalidInput(
                "a Key Vault item cannot go into a KV archive (format version 2)".to_owned(),
            ));
        }
        entry.path = layout::entry_path(
            entry.entry_type,
            entry.kind,
            &entry.name,
            entry.version.as_deref(),
            entry.content_type.as_deref(),
        )
        .map_err(name_error)?;
        let hash = std::hash::BuildHasher::hash_one(&self.hasher, entry.path.as_str());
        if !self.path_hashes.insert(hash) && self.entries.iter().any(|e| e.path == entry.path) {
            return Err(ArchiveError::DuplicateEntry(entry.path));
        }
        entry.size = data.len() as u64;
        entry.sha256 = Sha256Digest(Sha256::digest(data).into());
        self.append(&entry.path, data)?;
        entry.path.shrink_to_fit();
        self.entries.push(entry);
        Ok(())
    }

    fn append(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        let mut header = file_header(data.len() as u64, self.created);
        self.chain
            .append_data(&mut header, path, data)
            .map_err(|e| {
                ArchiveError::io(
                    format!("cannot write {}", shown_path(self.final_path.as_deref())),
                    e,
                )
            })
    }
}

/// A regular-file tar header: mode 0600, owner 0:0, the archive's creation time.
fn file_header(size: u64, created: OffsetDateTime) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(created.unix_timestamp()).unwrap_or(0));
    header
}

/// Writes a JSON document as a tar entry without holding its text in memory: once to count
/// its bytes (the tar header needs the size first), once into the stream.
fn write_streamed_json<W: Write, T: serde::Serialize>(
    chain: &mut tar::Builder<W>,
    path: &str,
    value: &T,
    created: OffsetDateTime,
) -> io::Result<()> {
    let mut counter = CountingWriter {
        inner: io::sink(),
        written: 0,
    };
    serde_json::to_writer(&mut counter, value)?;
    let size = counter.written;
    let mut header = file_header(size, created);
    header.set_path(path)?;
    header.set_cksum();
    let out = chain.get_mut();
    out.write_all(header.as_bytes())?;
    let mut counted = CountingWriter {
        inner: io::BufWriter::with_capacity(64 * 1024, &mut *out),
        written: 0,
    };
    serde_json::to_writer(&mut counted, value)?;
    counted.flush()?;
    if counted.written != size {
        return Err(io::Error::other(
            "the manifest changed while it was written",
        ));
    }
    drop(counted);
    // tar pads every entry to a 512-byte block.
    let padding = (512 - (size % 512)) % 512;
    out.write_all(&[0u8; 512][..padding as usize])?;
    Ok(())
}

fn check_json_object(name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(ArchiveError::InvalidInput(format!(
            "the JSON document for {name} is not a JSON object"
        ))),
    }
}

fn name_error(e: layout::NameError) -> ArchiveError {
    match e {
        layout::NameError::Invalid { what, value } => ArchiveError::InvalidName { what, value },
        other => ArchiveError::InvalidInput(other.to_string()),
    }
}

/// How many numbered alternatives (`-1` … `-99`) a taken archive name is tried with.
const MAX_NAME_SUFFIX: u32 = 99;

/// `name` itself for 0, else the name with `-N` before the archive suffix: the alternatives
/// tried when an archive name is taken.
pub fn numbered_name(name: &str, n: u32) -> String {
    numbered(Path::new(name), n).to_string_lossy().into_owned()
}

/// The first of `path`, `NAME-1.tar.zst.age`, `NAME-2.tar.zst.age`… that does not exist.
fn free_name(path: &Path) -> Option<PathBuf> {
    (0..=MAX_NAME_SUFFIX)
        .map(|n| numbered(path, n))
        .find(|p| p.symlink_metadata().is_err())
}

/// `path` itself for 0, else the name with `-N` before the archive suffix (or at the end
/// when the name has no archive suffix).
fn numbered(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_owned();
    }
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let renamed = match name.strip_suffix(FILE_SUFFIX) {
        Some(stem) => format!("{stem}-{n}{FILE_SUFFIX}"),
        None => format!("{name}-{n}"),
    };
    path.with_file_name(renamed)
}

enum Persist {
    /// Every numbered alternative of this name was taken.
    Taken(PathBuf),
    Io(io::Error),
}

/// Renames the finished temporary file to `path`, never replacing a file: when another run
/// took the name meanwhile (two backups of one vault in the same second), the next numbered
/// name is used, so the finished work is never thrown away. Returns the name used.
fn persist_free(mut tmp: AtomicFile, path: &Path) -> Result<PathBuf, Persist> {
    for n in 0..=MAX_NAME_SUFFIX {
        let candidate = numbered(path, n);
        match tmp.commit(&candidate, Replace::Never) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(Persist::Io(e.error)),
        }
    }
    Err(Persist::Taken(path.to_owned()))
}

/// Checks that a new archive can be created in `dir` by creating (and deleting) a temporary
/// file there, as the writer will: a missing, read-only or full folder fails now, before a
/// backup does any work, rather than when its archive is first written. The probe is named
/// `.coldvault-PID-RANDOM.probe`: a `.partial` file always means an archive being written.
pub fn check_folder_writable(dir: &Path) -> Result<(), ArchiveError> {
    let prefix = format!("{PARTIAL_PREFIX}{}-", std::process::id());
    AtomicFile::create_in(dir, &prefix, PROBE_SUFFIX)
        .map(drop)
        .map_err(|e| ArchiveError::io(format!("cannot create a file in {}", dir.display()), e))
}

/// Temporary archives are named `.coldvault-PID-RANDOM.partial` in the target folder.
const PARTIAL_PREFIX: &str = ".coldvault-";
const PARTIAL_SUFFIX: &str = ".partial";
/// The folder check's file (`check_folder_writable`), removed as stale like a partial file.
const PROBE_SUFFIX: &str = ".probe";

/// Removes the temporary files (`.coldvault-*.partial`, and the folder check's
/// `.coldvault-*.probe`) that killed runs (SIGKILL, power loss) left in `dir`, and returns
/// their names. A file is stale only when both hold: it was
/// last written more than `older_than` ago (a live run writes its file as items arrive; no
/// run goes that long without a write), and the process that wrote it — its id is in the
/// name — no longer runs on this machine. A file whose writer may still run is never
/// removed; where process ids cannot be checked (no `/proc`), the age alone decides. Files
/// that cannot be read or removed are left alone: cleanup never fails a backup.
pub fn remove_stale_partials(dir: &Path, older_than: std::time::Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(middle) = name.strip_prefix(PARTIAL_PREFIX).and_then(|rest| {
            rest.strip_suffix(PARTIAL_SUFFIX)
                .or_else(|| rest.strip_suffix(PROBE_SUFFIX))
        }) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let old_enough = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > older_than);
        if !old_enough || writer_may_run(middle) {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed.sort();
    removed
}

/// Whether the process named in a temporary file's name (`PID-RANDOM`) may still be
/// running here. Names without a process id (older versions) have only their age to go by.
fn writer_may_run(middle: &str) -> bool {
    let Some(pid) = middle
        .split_once('-')
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    proc_root.join("self").exists() && proc_root.join(pid.to_string()).exists()
}

/// `VAULT-YYYYMMDDTHHMMSSZ.tar.zst.age`.
fn file_name(vault: &str, created: OffsetDateTime) -> Result<String, ArchiveError> {
    layout::check_name("name", vault).map_err(name_error)?;
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        created.year(),
        u8::from(created.month()),
        created.day(),
        created.hour(),
        created.minute(),
        created.second()
    );
    Ok(format!("{vault}-{stamp}{FILE_SUFFIX}"))
}

fn shown_path(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "standard output".to_owned())
}

/// Now, in UTC, to the second (the manifest and tar headers carry seconds).
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::keys::RecipientSet;
    use std::time::{Duration, SystemTime};

    fn encryption() -> Encryption {
        let identity = age::x25519::Identity::generate();
        let mut recipients = RecipientSet::new();
        recipients
            .add(&identity.to_public().to_string())
            .expect("recipient");
        Encryption::to_recipients(recipients).expect("encryption")
    }

    fn source() -> Source {
        Source {
            vault: "unit".to_owned(),
            url: "https://unit.vault.azure.net/".to_owned(),
        }
    }

    #[test]
    fn numbered_names_keep_the_archive_suffix() {
        let path = Path::new("/b/kv-20261130T021700Z.tar.zst.age");
        assert_eq!(numbered(path, 0), path);
        assert_eq!(
            numbered(path, 2),
            Path::new("/b/kv-20261130T021700Z-2.tar.zst.age")
        );
        assert_eq!(
            numbered(Path::new("/b/out.bin"), 1),
            Path::new("/b/out.bin-1")
        );
    }

    #[test]
    fn same_second_clash_at_finish_keeps_the_work_under_the_next_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = ArchiveWriter::create(
            Destination::Dir(dir.path().to_owned()),
            &encryption(),
            source(),
        )
        .expect("create");
        writer
            .add_blob(&ItemInfo::new(Kind::Key, "k"), b"blob")
            .expect("blob");
        // Another run of the same vault, started in the same second, finished first.
        let taken = writer.path().expect("a path").to_owned();
        std::fs::write(&taken, b"the other run's archive").expect("write");
        let summary = writer.finish().expect("finished despite the clash");
        let path = summary.path.expect("path");
        assert_eq!(path, numbered(&taken, 1));
        assert!(path.is_file());
        assert_eq!(
            std::fs::read(&taken).expect("read"),
            b"the other run's archive"
        );
    }

    fn writer_in(dir: &Path) -> ArchiveWriter {
        let mut writer =
            ArchiveWriter::create(Destination::Dir(dir.to_owned()), &encryption(), source())
                .expect("create");
        writer
            .add_blob(&ItemInfo::new(Kind::Key, "k"), b"blob")
            .expect("blob");
        writer
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .expect("folder")
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn an_abandoned_writer_never_takes_its_final_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = writer_in(dir.path());
        let gate = writer.commit_gate();
        // The interrupt comes while the writer is finishing: it is abandoned first.
        assert_eq!(gate.abandon(), AbandonOutcome::Abandoned);
        assert!(matches!(writer.finish(), Err(ArchiveError::Abandoned)));
        assert!(
            files_in(dir.path()).is_empty(),
            "neither the archive nor its temporary file: {:?}",
            files_in(dir.path())
        );
    }

    #[test]
    fn abandoning_a_committed_writer_names_the_archive_it_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = writer_in(dir.path());
        let gate = writer.commit_gate();
        let path = writer.finish().expect("finish").path.expect("path");
        assert_eq!(
            gate.abandon(),
            AbandonOutcome::AlreadyCommitted(Some(path.clone()))
        );
        assert!(path.is_file(), "the archive stays");
    }

    #[test]
    fn a_failed_folder_sync_is_reported_not_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = writer_in(dir.path());
        let err = writer
            .finish_syncing_with(|_| Err(io::Error::other("injected EIO")))
            .expect_err("a folder that cannot be synced is an error");
        let ArchiveError::NotDurable { path, source } = &err else {
            panic!("not NotDurable: {err}");
        };
        assert!(path.is_file(), "the archive exists under its final name");
        assert!(source.to_string().contains("injected EIO"));
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains("not be durable"),
            "{message}"
        );
    }

    #[test]
    fn folders_that_cannot_be_synced_by_design_are_no_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        sync_folder(dir.path()).expect("a plain folder syncs");
        assert!(sync_folder(&dir.path().join("gone")).is_err());
    }

    #[test]
    fn a_taken_name_in_a_folder_is_numbered_at_create() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ArchiveWriter::create(
            Destination::Dir(dir.path().to_owned()),
            &encryption(),
            source(),
        )
        .expect("create")
        .finish()
        .expect("finish")
        .path
        .expect("path");
        // The same second again (the writer rounds to seconds): take every name it may pick.
        let created = now();
        for second in 0..3 {
            let at = created + time::Duration::seconds(second);
            let name = dir.path().join(file_name("unit", at).expect("name"));
            if name != first {
                std::fs::write(&name, b"x").expect("placeholder");
            }
        }
        let second = ArchiveWriter::create(
            Destination::Dir(dir.path().to_owned()),
            &encryption(),
            source(),
        )
        .expect("a free name is chosen before any work")
        .finish()
        .expect("finish")
        .path
        .expect("path");
        assert!(
            second
                .to_string_lossy()
                .ends_with(&format!("-1{FILE_SUFFIX}")),
            "{second:?}"
        );
    }

    /// A process id that ran and is gone.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = child.id();
        child.wait().expect("true ends");
        pid
    }

    fn partial(dir: &Path, pid: u32, tag: &str, age: Duration) -> PathBuf {
        let path = dir.join(format!("{PARTIAL_PREFIX}{pid}-{tag}{PARTIAL_SUFFIX}"));
        let file = std::fs::File::create(&path).expect("partial");
        file.set_modified(SystemTime::now() - age).expect("mtime");
        path
    }

    #[test]
    fn stale_partials_of_dead_runs_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let day = Duration::from_secs(24 * 3600);
        let dead = dead_pid();
        let stale = partial(dir.path(), dead, "stale1", 2 * day);
        let fresh = partial(dir.path(), dead, "fresh1", Duration::ZERO);
        let live = partial(dir.path(), std::process::id(), "live01", 2 * day);
        let other = dir.path().join("notes.partial");
        std::fs::write(&other, b"not ours").expect("write");
        let probe = dir
            .path()
            .join(format!("{PARTIAL_PREFIX}{dead}-probe1{PROBE_SUFFIX}"));
        std::fs::File::create(&probe)
            .and_then(|f| f.set_modified(SystemTime::now() - 2 * day))
            .expect("probe");
        let removed = remove_stale_partials(dir.path(), day);
        let mut expected = vec![stale.clone(), probe.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!stale.exists() && !probe.exists());
        assert!(
            fresh.exists(),
            "a recent file may belong to a run elsewhere"
        );
        assert!(live.exists(), "a running writer's file is never removed");
        assert!(other.exists());
    }
}
