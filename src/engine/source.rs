//! The archive as a source of items: [`read_heads`] makes the plan pass, [`feed_items`] the
//! apply pass.
//!
//! The plan pass is one decrypting pass ([`ArchiveReader::stream`]): each in-scope entry is
//! reduced to what a plan needs (a secret version to its [`VersionHead`], a public
//! certificate to its thumbprint) and its data dropped; the manifest, which comes last,
//! supplies the rest of each head and the cross-check. Memory holds the manifest, the heads
//! and one entry's data. One item's blob can be read again on demand
//! ([`ItemFeed::blob_source`]: the blob a restore probes the target with).
//!
//! The apply pass reads the verified archive again and hands out whole items, one at a
//! time, for the items a plan writes: an item's entries are contiguous in every archive
//! coldvault writes (`docs/FORMAT.md`: "writers group them by item"), so an item is complete
//! when the next one begins. An archive whose entries are not grouped (allowed by the
//! format, written by no coldvault) is read whole into memory instead, as before streaming.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::Filter;
use super::item::{BlobHead, ExportHead, ItemData, ItemHead, VersionHead, sha1_of};
use crate::archive::{
    ArchiveError, ArchiveInput, ArchiveReader, Decryption, EntryData, EntryType, ManifestEntry,
    StreamedEntry,
};
use crate::model::ItemKind;
use crate::vault::BackupBlob;

/// An item's identity across sources and targets: kind and lower-case name.
pub type ItemKey = (ItemKind, String);

/// What the plan pass learned of an archive.
#[derive(Debug)]
pub struct ArchiveHeads {
    /// The source vault's name.
    pub source_vault: String,
    /// The source vault's URL.
    pub source_url: String,
    /// The items in scope, by kind then lower-case name.
    pub items: Vec<ItemHead>,
    /// Every item name the manifest lists, in scope or not (to check `--name` globs).
    pub names: Vec<(ItemKind, String)>,
    /// Where the apply pass reads whole items from.
    pub feed: ItemFeed,
}

impl ItemFeed {
    /// Where the native blob of the item `key` can be read from.
    pub fn blob_source(&self, key: &ItemKey) -> BlobSource {
        match self {
            ItemFeed::Stream(reader) => BlobSource::Archive(reader.clone(), key.clone()),
            ItemFeed::Memory(all) => {
                BlobSource::Ready(all.get(key).and_then(|item| item.blob.clone()))
            }
        }
    }
}

impl ArchiveHeads {
    /// Frees what only an apply pass needs (the verified reader and its parsed manifest),
    /// for runs that stop at the plan: a dry run, a diff. The feed is then empty.
    pub fn release_feed(&mut self) {
        self.feed = ItemFeed::Memory(BTreeMap::new());
    }
}

/// Where one item's native blob is read from, movable to a blocking thread
/// ([`ItemFeed::blob_source`]).
#[derive(Debug)]
pub enum BlobSource {
    /// Read from the archive, up to the item's blob.
    Archive(Box<ArchiveReader>, ItemKey),
    /// Already known.
    Ready(Option<BackupBlob>),
}

impl BlobSource {
    /// The blob (blocking): for an archive, its entries are read (and checked) up to the
    /// item's blob and no further.
    pub fn read(self) -> Result<Option<BackupBlob>, ArchiveError> {
        match self {
            BlobSource::Ready(blob) => Ok(blob),
            BlobSource::Archive(reader, key) => {
                for entry in reader.entries() {
                    let entry = entry?;
                    let meta = &entry.entry;
                    if meta.entry_type == EntryType::Backup
                        && meta.kind == key.0
                        && meta.name.eq_ignore_ascii_case(&key.1)
                        && let EntryData::Bytes(bytes) = entry.data
                    {
                        return Ok(Some(BackupBlob(bytes)));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Where whole items come from after planning.
#[derive(Debug)]
pub enum ItemFeed {
    /// Read again from the verified archive, item by item (its entries are grouped).
    Stream(Box<ArchiveReader>),
    /// Already in memory (an archive whose entries are not grouped by item).
    Memory(BTreeMap<ItemKey, ItemData>),
}

/// Makes the plan pass over the archive `input` gives (blocking: run it off the async threads).
/// Fails with the archive's first broken rule; nothing it returns was unverified.
pub fn read_heads<F: Filter + ?Sized>(
    input: impl Into<ArchiveInput>,
    decryption: &Decryption,
    scope: &F,
) -> Result<ArchiveHeads, ArchiveError> {
    let mut grouping = Grouping::default();
    // Heads grow as entries arrive (what only the data tells: version heads, thumbprints);
    // the manifest adds the rest at the end.
    let mut heads: BTreeMap<ItemKey, ItemHead> = BTreeMap::new();
    let reader = ArchiveReader::stream_input(
        input.into(),
        decryption,
        |kind, name| scope.includes(kind, name),
        |entry: StreamedEntry| {
            let key = (entry.kind, entry.name.to_ascii_lowercase());
            grouping.next(&key);
            let head = heads
                .entry(key)
                .or_insert_with(|| ItemHead::new(entry.kind, &entry.name));
            match entry.data {
                EntryData::Secret(record) => head.versions.push(VersionHead::of(&record)),
                EntryData::Bytes(bytes) if entry.entry_type == EntryType::CertificatePublic => {
                    head.thumbprint = Some(sha1_of(&bytes));
                }
                _ => {}
            }
            ControlFlow::Continue(())
        },
    )?
    .ok_or_else(|| {
        ArchiveError::io(
            "the archive pass stopped",
            std::io::ErrorKind::Interrupted.into(),
        )
    })?;

    let manifest = reader.manifest();
    for skipped in &manifest.skipped {
        if !scope.includes(skipped.kind, &skipped.name) || skipped.name == "*" {
            continue;
        }
        heads
            .entry((skipped.kind, skipped.name.to_ascii_lowercase()))
            .or_insert_with(|| ItemHead::new(skipped.kind, &skipped.name))
            .skipped = Some(skipped.reason.clone());
    }
    for entry in &manifest.entries {
        if !scope.includes(entry.kind, &entry.name) {
            continue;
        }
        let head = heads
            .entry((entry.kind, entry.name.to_ascii_lowercase()))
            .or_insert_with(|| ItemHead::new(entry.kind, &entry.name));
        add_head(head, entry);
    }
    for head in heads.values_mut() {
        head.sort_versions();
    }
    let mut names: Vec<(ItemKind, String)> = manifest
        .entries
        .iter()
        .map(|e| (e.kind, e.name.clone()))
        .chain(manifest.skipped.iter().map(|s| (s.kind, s.name.clone())))
        .filter(|(_, name)| name != "*")
        .collect();
    names.sort();
    names.dedup();
    let source_vault = manifest.source.vault.clone();
    let source_url = manifest.source.url.clone();

    let feed = if grouping.grouped {
        ItemFeed::Stream(Box::new(reader))
    } else {
        // Items seen in pieces cannot be handed out one at a time: read every item in scope
        // whole (the memory profile before streaming).
        let mut all = BTreeMap::new();
        for entry in reader.entries() {
            let entry = entry?;
            if !scope.includes(entry.entry.kind, &entry.entry.name) {
                continue;
            }
            let meta = entry.entry;
            let item = all
                .entry((meta.kind, meta.name.to_ascii_lowercase()))
                .or_insert_with(|| ItemData::new(ItemHead::new(meta.kind, &meta.name)));
            add_data(item, meta.entry_type, meta.kind, entry.data);
        }
        ItemFeed::Memory(all)
    };
    Ok(ArchiveHeads {
        source_vault,
        source_url,
        items: heads.into_values().collect(),
        names,
        feed,
    })
}

/// Watches whether item entries come grouped by item.
struct Grouping {
    current: Option<ItemKey>,
    done: HashSet<ItemKey>,
    grouped: bool,
}

impl Default for Grouping {
    fn default() -> Self {
        Self {
            current: None,
            done: HashSet::new(),
            grouped: true,
        }
    }
}

impl Grouping {
    /// Records the next entry's item: an item whose entries were already followed by
    /// another item's means the archive is not grouped.
    fn next(&mut self, key: &ItemKey) {
        if self.current.as_ref() == Some(key) {
            return;
        }
        if let Some(previous) = self.current.take() {
            self.done.insert(previous);
        }
        if self.done.contains(key) {
            self.grouped = false;
        }
        self.current = Some(key.clone());
    }
}

/// Adds what a manifest entry says of its item to the item's head (what its data said was
/// added as it was read).
fn add_head(head: &mut ItemHead, entry: &ManifestEntry) {
    match entry.entry_type {
        EntryType::Backup => {
            head.blob = Some(BlobHead {
                version: entry.version.clone(),
                tags: entry.tags.to_map(),
                attributes: entry.attributes.clone(),
                content_type: entry.content_type.clone(),
            });
        }
        EntryType::CertificateExport => {
            head.export = Some(ExportHead {
                content_type: entry.content_type.clone().unwrap_or_default(),
                version: entry.version.clone().unwrap_or_default(),
            });
        }
        _ => {}
    }
}

/// Adds an entry's content to a whole item.
fn add_data(item: &mut ItemData, entry_type: EntryType, kind: ItemKind, data: EntryData) {
    match (entry_type, data) {
        (EntryType::SecretVersion, EntryData::Secret(record)) => item.versions.push(record),
        (EntryType::Backup, EntryData::Bytes(bytes)) => item.blob = Some(BackupBlob(bytes)),
        (EntryType::CertificateExport, EntryData::Private(bytes)) => item.export = Some(bytes),
        (EntryType::Policy, EntryData::Bytes(bytes)) if kind == ItemKind::Certificate => {
            item.policy = serde_json::from_slice(&bytes).ok();
        }
        _ => {}
    }
}

/// The items in `wanted`, whole, in archive order, as a stream for
/// [`crate::engine::restore::apply_plan`]: a blocking thread reads them ([`feed_items`]) and
/// hands them over through a channel of `buffer` items, so at most that many wait.
pub fn archive_items(
    feed: ItemFeed,
    wanted: HashSet<ItemKey>,
    buffer: usize,
) -> BoxStream<'static, Result<ItemData, ArchiveError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
    // The thread ends when the archive does or when the stream is dropped (a send fails).
    tokio::task::spawn_blocking(move || {
        feed_items(feed, &wanted, |item| tx.blocking_send(item).is_ok());
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// Hands the items in `wanted` out whole, one at a time, in archive order, through `send`
/// (blocking: run it off the async threads). Stops when `send` answers `false` (nobody
/// listens any more) or at the archive's first broken rule, which is sent last: the archive
/// was verified by the plan pass, so a failure here means it changed since.
pub fn feed_items(
    feed: ItemFeed,
    wanted: &HashSet<ItemKey>,
    mut send: impl FnMut(Result<ItemData, ArchiveError>) -> bool,
) {
    match feed {
        ItemFeed::Memory(all) => {
            for (key, item) in all {
                if wanted.contains(&key) && !send(Ok(item)) {
                    return;
                }
            }
        }
        ItemFeed::Stream(reader) => {
            // An item goes out as soon as the last of its entries the manifest lists has
            // been read and checked, so a failure later in the archive holds back no item
            // that was read whole.
            let mut expected: HashMap<ItemKey, usize> = HashMap::new();
            for entry in &reader.manifest().entries {
                let key = (entry.kind, entry.name.to_ascii_lowercase());
                if wanted.contains(&key) {
                    *expected.entry(key).or_default() += 1;
                }
            }
            let mut current: Option<(ItemKey, ItemData, usize)> = None;
            for entry in reader.entries() {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) => {
                        send(Err(err));
                        return;
                    }
                };
                let meta = entry.entry;
                let key = (meta.kind, meta.name.to_ascii_lowercase());
                let Some(&count) = expected.get(&key) else {
                    continue;
                };
                if current.as_ref().is_some_and(|(k, _, _)| *k != key)
                    && let Some((_, done, _)) = current.take()
                    && !send(Ok(done))
                {
                    return;
                }
                let (_, item, seen) = current.get_or_insert_with(|| {
                    (key, ItemData::new(ItemHead::new(meta.kind, &meta.name)), 0)
                });
                add_data(item, meta.entry_type, meta.kind, entry.data);
                *seen += 1;
                if *seen == count
                    && let Some((_, done, _)) = current.take()
                    && !send(Ok(done))
                {
                    return;
                }
            }
            if let Some((_, done, _)) = current {
                send(Ok(done));
            }
        }
    }
}
