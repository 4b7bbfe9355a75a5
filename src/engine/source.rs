//! The archive as a source of items: [`read_heads`] makes the plan pass, [`feed_items`] the
//! apply pass.
//!
//! The plan pass is one decrypting pass ([`ArchiveReader::stream`]): each in-scope entry is
//! reduced to what a plan needs (a secret version to its [`VersionHead`], a public
//! certificate to its thumbprint) and its data dropped; the manifest, which comes last,
//! supplies the rest of each head and the cross-check. Memory holds the manifest, the heads
//! and one item's data, plus the few items a caller asks to keep whole ([`Keep`]: the blobs
//! a restore probes the target with, the item its first native write goes to).
//!
//! The apply pass reads the verified archive again and hands out whole items, one at a
//! time, for the items a plan writes: an item's entries are contiguous in every archive
//! coldvault writes (`docs/FORMAT.md`: "writers group them by item"), so an item is complete
//! when the next one begins. An archive whose entries are not grouped (allowed by the
//! format, written by no coldvault) is read whole into memory instead, as before streaming.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;

use age::secrecy::{ExposeSecret, SecretBox};

use super::Filter;
use super::item::{BlobHead, ExportHead, ItemData, ItemHead, VersionHead, sha1_of};
use crate::archive::{
    ArchiveError, ArchiveReader, Decryption, EntryData, EntryType, ManifestEntry, StreamedEntry,
};
use crate::model::ItemKind;
use crate::vault::BackupBlob;

/// An item's identity across sources and targets: kind and lower-case name.
pub type ItemKey = (ItemKind, String);

/// A rule for an item the plan pass keeps whole: given an item's key and whether it has a
/// native blob, whether it qualifies. Of the qualifying items, the first in plan order
/// (kind, then lower-case name) is kept.
pub type Keep = Box<dyn Fn(&ItemKey, bool) -> bool + Send>;

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
    /// For each [`Keep`] rule, the item it kept (with every value), if any qualified.
    pub kept: Vec<Option<ItemData>>,
    /// Where the apply pass reads whole items from.
    pub feed: ItemFeed,
}

/// Where whole items come from after planning.
#[derive(Debug)]
pub enum ItemFeed {
    /// Read again from the verified archive, item by item (its entries are grouped).
    Stream(ArchiveReader),
    /// Already in memory (an archive whose entries are not grouped by item).
    Memory(BTreeMap<ItemKey, ItemData>),
}

/// Facts the plan pass keeps of an entry until the manifest names it.
enum Fact {
    Version(VersionHead),
    Thumbprint(Vec<u8>),
}

/// Makes the plan pass over the archive at `path` (blocking: run it off the async threads).
/// Fails with the archive's first broken rule; nothing it returns was unverified.
pub fn read_heads<F: Filter + ?Sized>(
    path: &Path,
    decryption: &Decryption,
    scope: &F,
    keep: &[Keep],
) -> Result<ArchiveHeads, ArchiveError> {
    let mut facts: HashMap<String, Fact> = HashMap::new();
    let mut grouping = Grouping::default();
    let mut kept: Vec<Option<ItemData>> = keep.iter().map(|_| None).collect();
    let whole = !keep.is_empty();
    let mut current: Option<ItemData> = None;
    let finish = |item: Option<ItemData>, kept: &mut Vec<Option<ItemData>>| {
        if let Some(item) = item {
            consider(item, keep, kept);
        }
    };
    let reader = ArchiveReader::stream(
        path,
        decryption,
        |kind, name| scope.includes(kind, name),
        |entry: StreamedEntry| {
            let key = (entry.kind, entry.name.to_ascii_lowercase());
            if grouping.next(&key) {
                finish(current.take(), &mut kept);
            }
            let item = current
                .get_or_insert_with(|| ItemData::new(ItemHead::new(entry.kind, &entry.name)));
            match entry.data {
                EntryData::Secret(record) => {
                    facts.insert(entry.path, Fact::Version(VersionHead::of(&record)));
                    if whole {
                        item.versions.push(record);
                    }
                }
                EntryData::Bytes(bytes) if entry.entry_type == EntryType::CertificatePublic => {
                    facts.insert(entry.path, Fact::Thumbprint(sha1_of(&bytes)));
                }
                data if whole => add_data(item, entry.entry_type, entry.kind, data),
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
    finish(current.take(), &mut kept);

    let manifest = reader.manifest();
    let mut heads: BTreeMap<ItemKey, ItemHead> = BTreeMap::new();
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
        add_head(head, entry, facts.remove(&entry.path));
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
        ItemFeed::Stream(reader)
    } else {
        // Items seen in pieces: the kept ones may be partial. Read every item in scope whole
        // (the memory profile before streaming) and keep from those.
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
        kept = keep.iter().map(|_| None).collect();
        for item in all.values() {
            consider(item.duplicate(), keep, &mut kept);
        }
        ItemFeed::Memory(all)
    };
    for item in kept.iter_mut().flatten() {
        if let Some(head) = heads.get(&item.head.key()) {
            item.head = head.clone();
        }
        item.sort_versions();
    }
    Ok(ArchiveHeads {
        source_vault,
        source_url,
        items: heads.into_values().collect(),
        names,
        kept,
        feed,
    })
}

/// Keeps `item` for the first rule it qualifies for, when it comes before that rule's
/// current pick in plan order.
fn consider(item: ItemData, keep: &[Keep], kept: &mut [Option<ItemData>]) {
    let key = item.head.key();
    let has_blob = item.blob.is_some();
    let Some(rule) = keep.iter().position(|rule| rule(&key, has_blob)) else {
        return;
    };
    let earlier = kept[rule]
        .as_ref()
        .is_none_or(|other| key < other.head.key());
    if earlier {
        kept[rule] = Some(item);
    }
}

/// Watches whether item entries come grouped by item.
#[derive(Default)]
struct Grouping {
    current: Option<ItemKey>,
    done: HashSet<ItemKey>,
    grouped: bool,
    started: bool,
}

impl Grouping {
    /// Records the next entry's item; true when it begins a new item.
    fn next(&mut self, key: &ItemKey) -> bool {
        if !self.started {
            self.started = true;
            self.grouped = true;
        }
        if self.current.as_ref() == Some(key) {
            return false;
        }
        if let Some(previous) = self.current.take() {
            self.done.insert(previous);
        }
        if self.done.contains(key) {
            self.grouped = false;
        }
        self.current = Some(key.clone());
        true
    }
}

/// Adds what a manifest entry says of its item to the item's head.
fn add_head(head: &mut ItemHead, entry: &ManifestEntry, fact: Option<Fact>) {
    match (entry.entry_type, fact) {
        (EntryType::SecretVersion, Some(Fact::Version(version))) => head.versions.push(version),
        (EntryType::CertificatePublic, Some(Fact::Thumbprint(thumbprint))) => {
            head.thumbprint = Some(thumbprint);
        }
        (EntryType::Backup, _) => {
            head.blob = Some(BlobHead {
                version: entry.version.clone(),
                tags: entry.tags.to_map(),
                attributes: entry.attributes.clone(),
                content_type: entry.content_type.clone(),
            });
        }
        (EntryType::CertificateExport, _) => {
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

impl ItemData {
    /// A second copy, values included (only for archives whose entries are not grouped).
    fn duplicate(&self) -> ItemData {
        ItemData {
            head: self.head.clone(),
            blob: self.blob.clone(),
            versions: self.versions.clone(),
            export: self
                .export
                .as_ref()
                .map(|e| SecretBox::from(e.expose_secret().to_vec().into_boxed_slice())),
            policy: self.policy.clone(),
        }
    }
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
