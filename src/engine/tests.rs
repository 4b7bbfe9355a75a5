//! The engine without a server: archives written to a temporary folder, restored into an
//! in-memory store ([`super::memory::MemoryStore`]) through the same steps `restore` takes.

use std::path::{Path, PathBuf};

use age::secrecy::SecretString;

use super::Everything;
use super::capture::{Piece as CapturedPiece, Work, capture};
use super::item::{ItemData, ItemHead};
use super::memory::MemoryStore;
use super::progress::Silent;
use super::restore::apply::{Applier, Outcome};
use super::restore::plan::{Mode, NativeTarget, OnConflict, PlannedItem, Policy, decide};
use super::restore::target::{inspect_all, list_target, target_state};
use super::restore::{Applied, apply_plan, probe_native, wanted};
use super::source::{ItemFeed, archive_items, read_heads};
use crate::archive::keys::{IdentitySet, RecipientSet};
use crate::archive::{
    ArchiveWriter, Attributes, Decryption, Destination, Encryption, ItemInfo, Kind, SecretRecord,
    Source,
};
use crate::vault::{VaultReader, VaultWriter};

struct Keys {
    encryption: Encryption,
    decryption: Decryption,
}

fn keys() -> Keys {
    let identity = age::x25519::Identity::generate();
    let mut recipients = RecipientSet::new();
    recipients
        .add(&identity.to_public().to_string())
        .expect("recipient");
    let mut identities = IdentitySet::new();
    identities.add_x25519(identity);
    Keys {
        encryption: Encryption::to_recipients(recipients).expect("encryption"),
        decryption: Decryption::with_identities(identities).expect("decryption"),
    }
}

fn record(name: &str, version: &str, value: &str) -> SecretRecord {
    SecretRecord {
        name: name.to_owned(),
        version: version.to_owned(),
        value: SecretString::from(value.to_owned()),
        content_type: None,
        tags: Default::default(),
        attributes: Attributes::default(),
        current: true,
    }
}

/// One piece of an archive: a secret's blob (from `source`) or one plain version.
enum Piece<'a> {
    Blob(&'a str),
    Version(&'a str, &'a str),
}

/// Writes the pieces, in this order, into a new archive in `dir`.
fn write_archive(dir: &Path, keys: &Keys, source: &MemoryStore, pieces: &[Piece<'_>]) -> PathBuf {
    let mut writer = ArchiveWriter::create(
        Destination::Dir(dir.to_owned()),
        &keys.encryption,
        Source {
            vault: "source".to_owned(),
            url: "https://source.vault.azure.net/".to_owned(),
        },
    )
    .expect("create");
    for piece in pieces {
        match piece {
            Piece::Blob(name) => {
                let mut info = ItemInfo::new(Kind::Secret, *name);
                info.version = Some("v1".to_owned());
                writer.add_blob(&info, &source.blob(name)).expect("blob");
            }
            Piece::Version(name, value) => writer
                .add_secret_version(&record(name, "v1", value))
                .expect("version"),
        }
    }
    writer.finish().expect("finish").path.expect("path")
}

/// A source store of `n` secrets `s0`… holding `value-i`, and its archive, grouped by item.
fn grouped_archive(dir: &Path, keys: &Keys, n: usize, value: &dyn Fn(usize) -> String) -> PathBuf {
    let source = MemoryStore::new("source");
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let values: Vec<String> = (0..n).map(value).collect();
    for (name, value) in names.iter().zip(&values) {
        source.put(name, value);
    }
    let mut pieces = Vec::new();
    for (name, value) in names.iter().zip(&values) {
        pieces.push(Piece::Blob(name));
        pieces.push(Piece::Version(name, value));
    }
    write_archive(dir, keys, &source, &pieces)
}

/// Plans and applies a restore of `archive` into `target` as `restore` does, `concurrency`
/// writes at a time; `between` runs after planning, before applying.
async fn restore(
    archive: &Path,
    keys: &Keys,
    target: &MemoryStore,
    concurrency: usize,
    between: impl FnOnce(),
) -> (Vec<PlannedItem>, Applied) {
    let policy = Policy {
        mode: Mode::Auto,
        on_conflict: OnConflict::Skip,
        recover_deleted: false,
    };
    let heads = read_heads(archive, &keys.decryption, &Everything).expect("heads");
    let listing = list_target(target, &Everything).await.expect("listing");
    let feed = &heads.feed;
    let native = probe_native(
        target,
        &heads.items,
        |key| {
            let source = feed.blob_source(&key);
            async move { source.read().ok().flatten() }
        },
        &listing,
        "https://target.vault.azure.net/",
        &heads.source_url,
        policy,
    )
    .await;
    let views = inspect_all(target, &heads.items, &listing, 4).await;
    let lines: Vec<PlannedItem> = heads
        .items
        .iter()
        .zip(&views)
        .map(|(item, view)| {
            decide(
                item,
                target_state(item, &listing, view),
                policy,
                native.state,
            )
        })
        .collect();
    between();
    let applier = Applier::new(
        target.clone(),
        policy.mode,
        native.state == NativeTarget::Refuses,
    );
    let applied = apply_plan(
        &applier,
        "target",
        &heads.items,
        &lines,
        policy.mode,
        archive_items(heads.feed, wanted(&heads.items, &lines), concurrency),
        concurrency,
        &Silent,
    )
    .await;
    (lines, applied)
}

fn statuses(outcomes: &[(usize, Outcome)]) -> Vec<(usize, &'static str)> {
    outcomes
        .iter()
        .map(|(i, o)| match o {
            Outcome::Done { status, .. } => (*i, *status),
            Outcome::Failed(_) => (*i, "failed"),
            Outcome::RefusedNatively => (*i, "refused"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_restore_brings_every_item_back_natively() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let archive = grouped_archive(dir.path(), &keys, 6, &|i| format!("value-{i}"));
    // The target shares the source's origin: it opens the blobs.
    let target = MemoryStore::new("source");
    let (lines, applied) = restore(&archive, &keys, &target, 2, || {}).await;
    assert_eq!(lines.len(), 6);
    let Applied::Finished(outcomes) = applied else {
        panic!("not finished: {applied:?}");
    };
    assert_eq!(
        statuses(&outcomes),
        (0..6).map(|i| (i, "created")).collect::<Vec<_>>()
    );
    for i in 0..6 {
        assert_eq!(target.value(&format!("s{i}")), Some(format!("value-{i}")));
    }
    let writes = target.writes();
    assert_eq!(writes.len(), 6);
    assert!(
        writes.iter().all(|w| w.starts_with("restore ")),
        "{writes:?}"
    );
    // The first native write goes alone, before any other.
    assert_eq!(writes[0], "restore s0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_refuses_the_blobs_gets_values_after_the_first_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let archive = grouped_archive(dir.path(), &keys, 4, &|i| format!("value-{i}"));
    let target = MemoryStore::new("elsewhere");
    let (_, applied) = restore(&archive, &keys, &target, 1, || {}).await;
    let Applied::Finished(outcomes) = applied else {
        panic!("not finished: {applied:?}");
    };
    assert_eq!(
        statuses(&outcomes),
        (0..4).map(|i| (i, "created")).collect::<Vec<_>>()
    );
    // Only the probe tried the blob; it and every other item were written by value.
    assert_eq!(
        target.writes(),
        ["set s0", "set s1", "set s2", "set s3"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(target.value("s3").as_deref(), Some("value-3"));
}

/// The archive is verified whole before the first write; if it changes before the second
/// read, the restore stops at the first entry that no longer matches, having written only
/// items read whole and checked before it.
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_changed_after_planning_stops_the_restore_where_it_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let keys = keys();
    let archive = grouped_archive(dir.path(), &keys, 6, &|i| format!("value-{i}"));
    // Same items; s3 differs from the one planned (its blob, the first of its entries).
    let changed = grouped_archive(other.path(), &keys, 6, &|i| {
        if i == 3 {
            "tampered".to_owned()
        } else {
            format!("value-{i}")
        }
    });
    let target = MemoryStore::new("source");
    let (_, applied) = restore(&archive, &keys, &target, 1, || {
        std::fs::copy(&changed, &archive).unwrap();
    })
    .await;
    let Applied::SourceFailed { outcomes, error } = applied else {
        panic!("the change went unnoticed: {applied:?}");
    };
    assert!(error.to_string().contains("s3"), "{error}");
    // s0 (the first native write, alone), then s1 and s2: every item before s3.
    assert_eq!(
        statuses(&outcomes),
        [(0, "created"), (1, "created"), (2, "created")]
    );
    assert_eq!(target.value("s3"), None);
    assert_eq!(target.writes().len(), 3);
}

/// The plan pass holds names and digests: no value of the archive is in the heads.
#[test]
fn heads_hold_digests_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let archive = grouped_archive(dir.path(), &keys, 3, &|i| format!("canary-7d1f-{i}"));
    let heads = read_heads(&archive, &keys.decryption, &Everything).expect("heads");
    assert_eq!(heads.items.len(), 3);
    assert!(
        heads
            .items
            .iter()
            .all(|i| i.blob.is_some() && i.versions.len() == 1)
    );
    assert!(!format!("{:?}", heads.items).contains("canary-7d1f"));
    assert!(matches!(heads.feed, ItemFeed::Stream(_)));
}

/// The format lets a writer interleave items' entries; such an archive is read whole (the
/// memory profile before streaming) and restored all the same.
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_whose_items_are_interleaved_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let source = MemoryStore::new("source");
    source.put("s0", "value-0");
    source.put("s1", "value-1");
    let archive = write_archive(
        dir.path(),
        &keys,
        &source,
        &[
            Piece::Version("s1", "value-1"),
            Piece::Blob("s0"),
            Piece::Blob("s1"),
            Piece::Version("s0", "value-0"),
        ],
    );
    let heads = read_heads(&archive, &keys.decryption, &Everything).expect("heads");
    let ItemFeed::Memory(all) = &heads.feed else {
        panic!("an interleaved archive cannot stream");
    };
    assert_eq!(all.len(), 2);
    assert!(
        heads
            .items
            .iter()
            .all(|i| i.blob.is_some() && i.versions.len() == 1)
    );

    let target = MemoryStore::new("elsewhere");
    let (_, applied) = restore(&archive, &keys, &target, 2, || {}).await;
    assert!(
        matches!(applied, Applied::Finished(ref o) if o.len() == 2),
        "{applied:?}"
    );
    assert_eq!(target.value("s0").as_deref(), Some("value-0"));
    assert_eq!(target.value("s1").as_deref(), Some("value-1"));
}

/// A secret rotated between its listing and its capture is captured again, once, and
/// reported with the version the list saw and the one kept; blob and value agree.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_rotated_after_listing_is_captured_again_and_reported() {
    use age::secrecy::ExposeSecret;
    use futures::StreamExt;

    let store = MemoryStore::new("source");
    let first = store.put("db", "one");
    let listed = store
        .list_secrets()
        .next()
        .await
        .expect("listed")
        .expect("ok");
    store.rotate_on_next_backup("db", "two");
    let captured = capture(&store, Work::Secret(listed), false).await;
    assert!(captured.problems.is_empty(), "{:?}", captured.problems);
    let recaptured = captured.recaptured.expect("reported as recaptured");
    assert_eq!(recaptured.first_version, first);
    assert_ne!(recaptured.captured_version, first);
    let mut blob_versions = None;
    let mut value = None;
    for piece in &captured.pieces {
        match piece {
            CapturedPiece::Blob(_, bytes) => {
                let blob: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                blob_versions = blob["versions"].as_array().map(|v| v.len());
            }
            CapturedPiece::Secret(record) => {
                assert_eq!(record.version, recaptured.captured_version);
                value = Some(record.value.expose_secret().to_owned());
            }
            _ => {}
        }
    }
    assert_eq!(blob_versions, Some(2));
    assert_eq!(value.as_deref(), Some("two"));
}

/// A target that holds one of the archive's names live: the dry run's probe posts that
/// item's blob, read from the archive on demand, and learns without creating anything.
#[tokio::test(flavor = "multi_thread")]
async fn the_probe_reads_one_blob_from_the_archive_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let archive = grouped_archive(dir.path(), &keys, 5, &|i| format!("value-{i}"));
    let target = MemoryStore::new("source");
    target.put("s3", "live already");
    let heads = read_heads(&archive, &keys.decryption, &Everything).expect("heads");
    let listing = list_target(&target, &Everything).await.expect("listing");
    let asked = std::sync::Mutex::new(Vec::new());
    let feed = &heads.feed;
    let native = probe_native(
        &target,
        &heads.items,
        |key| {
            asked.lock().unwrap().push(key.1.clone());
            let source = feed.blob_source(&key);
            async move { source.read().ok().flatten() }
        },
        &listing,
        "https://target.vault.azure.net/",
        &heads.source_url,
        Policy {
            mode: Mode::Auto,
            on_conflict: OnConflict::Skip,
            recover_deleted: false,
        },
    )
    .await;
    assert_eq!(*asked.lock().unwrap(), ["s3"]);
    assert_eq!(native.state, NativeTarget::Accepts, "{}", native.reason);
    assert!(target.writes().is_empty());
    assert_eq!(target.value("s3").as_deref(), Some("live already"));
}

/// Every item of a live store, captured into the model (`all_versions`: every secret version,
/// else the current one), sorted by key: a live store as a source.
pub(crate) async fn capture_all<V: VaultReader>(source: &V, all_versions: bool) -> Vec<ItemData> {
    use futures::StreamExt;

    let listed = std::sync::Arc::new(super::capture::ListingProgress::default());
    let works: Vec<Work> = super::capture::work_stream(source, &Everything, &listed)
        .collect()
        .await;
    let mut items = Vec::new();
    for work in works {
        items.push(capture(source, work, all_versions).await.into_item());
    }
    items.sort_by_key(|item| item.head.key());
    items
}

/// The plan of `heads` against `target`, as restore and copy make it (native blobs
/// unverified).
pub(crate) async fn plan_against<V: VaultReader>(
    target: &V,
    heads: &[ItemHead],
    policy: Policy,
) -> Vec<PlannedItem> {
    let listing = list_target(target, &Everything).await.expect("listing");
    let views = inspect_all(target, heads, &listing, 4).await;
    heads
        .iter()
        .zip(&views)
        .map(|(item, view)| {
            decide(
                item,
                target_state(item, &listing, view),
                policy,
                NativeTarget::Unverified,
            )
        })
        .collect()
}

/// Writes the `items` the plan `lines` names into `target` through the engine's applier,
/// two at a time; panics unless the run finished.
pub(crate) async fn apply_items<V: VaultWriter + Clone + 'static>(
    target: &V,
    items: Vec<ItemData>,
    lines: &[PlannedItem],
    mode: Mode,
) -> Vec<(usize, Outcome)> {
    let heads: Vec<ItemHead> = items.iter().map(|item| item.head.clone()).collect();
    let wanted = wanted(&heads, lines);
    let arrivals = futures::stream::iter(
        items
            .into_iter()
            .filter(|item| wanted.contains(&item.head.key()))
            .map(Ok::<_, crate::archive::ArchiveError>),
    );
    let applier = Applier::new(target.clone(), mode, false);
    let applied = apply_plan(
        &applier, "target", &heads, lines, mode, arrivals, 2, &Silent,
    )
    .await;
    let Applied::Finished(outcomes) = applied else {
        panic!("not finished: {applied:?}");
    };
    outcomes
}

/// A live store is a source too: its items, captured into the model, are planned against
/// another store and written there by the same plan and apply as a restore, with no archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_store_copies_into_another_through_the_same_plan_and_apply() {
    let source = MemoryStore::new("source");
    for i in 0..3 {
        source.put(&format!("s{i}"), &format!("value-{i}"));
    }
    let target = MemoryStore::new("elsewhere");
    target.put("s1", "value-1");

    let items = capture_all(&source, false).await;
    let heads: Vec<_> = items.iter().map(|item| item.head.clone()).collect();
    assert!(
        heads
            .iter()
            .all(|h| h.blob.is_some() && h.versions.len() == 1)
    );

    let policy = Policy {
        mode: Mode::Auto,
        on_conflict: OnConflict::Skip,
        recover_deleted: false,
    };
    let lines = plan_against(&target, &heads, policy).await;
    let actions: Vec<&str> = lines.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(actions, ["create", "skip", "create"]);

    let outcomes = apply_items(&target, items, &lines, policy.mode).await;
    assert_eq!(
        statuses(&outcomes),
        [(0, "created"), (1, "skipped"), (2, "created")]
    );
    // Another origin refuses the source's blobs: the first create tried its blob alone, and
    // both were written by value.
    assert_eq!(target.writes(), ["set s0", "set s2"]);
    assert_eq!(target.value("s2").as_deref(), Some("value-2"));
}

/// Versions are replayed oldest first and the current one last, whatever order the archive
/// holds them in: the restored secret's current value is the archive's current one.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_replay_leaves_the_archived_current_version_current() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let mut writer = ArchiveWriter::create(
        Destination::Dir(dir.path().to_owned()),
        &keys.encryption,
        Source {
            vault: "source".to_owned(),
            url: "https://source.vault.azure.net/".to_owned(),
        },
    )
    .expect("create");
    let at = |seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok();
    let mut current = record("s0", "v3", "third");
    current.attributes.created = at(1_700_000_300);
    let mut first = record("s0", "v1", "first");
    first.current = false;
    first.attributes.created = at(1_700_000_100);
    let mut second = record("s0", "v2", "second");
    second.current = false;
    second.attributes.created = at(1_700_000_200);
    for version in [&current, &second, &first] {
        writer.add_secret_version(version).expect("version");
    }
    let archive = writer.finish().expect("finish").path.expect("path");
    let target = MemoryStore::new("elsewhere");
    let (_, applied) = restore(&archive, &keys, &target, 1, || {}).await;
    assert!(matches!(applied, Applied::Finished(_)), "{applied:?}");
    assert_eq!(target.writes(), ["set s0", "set s0", "set s0"]);
    assert_eq!(target.value("s0").as_deref(), Some("third"));
}
