//! Restore as the engine runs it: a source's items ([`crate::engine::item::ItemHead`]s) are
//! planned against a target ([`target`]: one listing, a look at each item present on both
//! sides), each item gets one plan line ([`plan::decide`], pure), and [`apply_plan`] writes the
//! plan ([`apply`]), taking each item's data from a feed one item at a time
//! ([`crate::engine::source::ItemFeed`]). [`probe_native`] learns, without creating anything,
//! whether the target takes the source's native blobs, so a dry run and a real run plan alike.

pub mod apply;
pub mod plan;
pub mod target;

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;

use self::apply::{Applier, Outcome, settled_without_data};
use self::plan::{Action, Method, Mode, NativeTarget, PlannedItem, Policy};
use self::target::TargetListing;
use crate::archive::ArchiveError;
use crate::engine::item::{ItemData, ItemHead};
use crate::engine::progress::{ItemEvent, Progress};
use crate::engine::source::{ItemFeed, ItemKey, Keep, feed_items};
use crate::model::ItemKind;
use crate::vault::VaultWriter;

/// What a run knows about the target taking the archive's native blobs, and how it knows.
#[derive(Debug, Clone, Serialize)]
pub struct NativeBlobs {
    /// Accepts, refuses or unverified.
    pub state: NativeTarget,
    /// The evidence, or why there is none.
    pub reason: String,
    /// Something to tell people beyond the summary (a probe that wrote after all).
    #[serde(skip)]
    pub note: Option<String>,
}

impl NativeBlobs {
    /// Knowledge in `state` with its evidence.
    pub fn new(state: NativeTarget, reason: impl Into<String>) -> Self {
        Self {
            state,
            reason: reason.into(),
            note: None,
        }
    }
}

/// Learns, without creating anything, whether the target takes the archive's native blobs.
///
/// Key Vault opens a posted blob before it looks at the name: a blob of another subscription
/// or geography is 400 "Cannot decrypt backup blob" whatever the name, and an accepted blob
/// whose name is taken is 409 (`Conflict` when live, `ObjectIsDeletedButRecoverable` when
/// soft-deleted). Azure's own recordings show it: the 409 to a restore right after a purge
/// names the version id that only the blob holds (`azure-sdk-for-js` `restore_conflict_409`).
/// So the blob of an archived item whose name is live (or else soft-deleted) in the target is
/// posted once: either answer settles the question and neither creates anything. Without such
/// a name the answer is known only when the target is the archive's source vault; otherwise it
/// stays unverified. The one way the probe writes is a race: the name is deleted and purged
/// between the listing and the probe; that is reported.
///
/// `items` are the source's heads; `candidates` the items [`probe_keep`]'s rules kept whole
/// (the first item with a blob whose name is live in the target, and the first whose name is
/// soft-deleted there), `source_url` the source vault's URL.
pub async fn probe_native<V: VaultWriter>(
    vault: &V,
    items: &[ItemHead],
    candidates: [Option<&ItemData>; 2],
    listing: &TargetListing,
    target: &str,
    source_url: &str,
    policy: Policy,
) -> NativeBlobs {
    if policy.mode == Mode::Plain {
        return NativeBlobs::new(NativeTarget::Unverified, "not needed: --mode plain");
    }
    let creates_natively = items.iter().filter(|i| i.blob.is_some()).any(|item| {
        let key = item.key();
        !listing.live.contains_key(&key) && !listing.deleted.contains_key(&key)
    });
    if !creates_natively {
        return NativeBlobs::new(
            NativeTarget::Unverified,
            "not needed: no item would be created from its native blob",
        );
    }
    let [live, deleted] = candidates;
    let candidate = live
        .map(|item| (item, "live"))
        .or_else(|| deleted.map(|item| (item, "soft-deleted")));
    if let Some((item, state)) = candidate
        && let Some(blob) = &item.blob
    {
        let what = format!("{} {}", item.head.kind, item.head.name);
        return match vault.restore(item.head.kind, blob).await {
            Err(err) if err.is_cannot_decrypt_backup() => NativeBlobs::new(
                NativeTarget::Refuses,
                format!(
                    "the restore of {what}'s blob over its {state} name was answered \
                     \"Cannot decrypt backup blob\": the target is in another subscription or \
                     geography than the source"
                ),
            ),
            Err(err) if err.conflict_reason().is_some() => NativeBlobs::new(
                NativeTarget::Accepts,
                format!(
                    "the restore of {what}'s blob over its {state} name was answered 409 ({}): \
                     the blob was opened, so the target is in the source's subscription and \
                     geography",
                    err.conflict_reason().map_or("Conflict", |r| r.code())
                ),
            ),
            Err(err) => NativeBlobs::new(
                NativeTarget::Unverified,
                format!("the restore of {what}'s blob over its {state} name failed: {err}"),
            ),
            Ok(_) => NativeBlobs {
                note: Some(format!(
                    "{what} was deleted from the target after it was listed, so the probe \
                     restored it from the archive's blob"
                )),
                ..NativeBlobs::new(
                    NativeTarget::Accepts,
                    format!("the target took {what}'s blob"),
                )
            },
        };
    }
    if same_vault(target, source_url) {
        return NativeBlobs::new(
            NativeTarget::Accepts,
            "the target is the archive's source vault",
        );
    }
    NativeBlobs::new(
        NativeTarget::Unverified,
        "no archived item with a native blob is live or soft-deleted in the target, and the \
         target is not the source vault: only a write could tell whether it takes the blobs",
    )
}

/// Whether two vault URLs name the same vault (scheme, host and port; case and a trailing
/// slash do not matter).
fn same_vault(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_ascii_lowercase();
    !b.trim().is_empty() && norm(a) == norm(b)
}

/// The rules of the items a restore keeps whole during its plan pass, in this order: the
/// first item with a native blob whose name is live in the target and the first whose name
/// is soft-deleted there (the blobs [`probe_native`] posts), and the first with a blob whose
/// name is free (where [`apply_plan`]'s first native write goes). At most three items.
pub fn probe_keep(listing: &TargetListing) -> Vec<Keep> {
    let live: HashSet<ItemKey> = listing.live.keys().cloned().collect();
    let deleted: HashSet<ItemKey> = listing.deleted.keys().cloned().collect();
    let managed = listing.managed_secrets.clone();
    let (live2, deleted2) = (live.clone(), deleted.clone());
    vec![
        Box::new(move |key: &ItemKey, blob: bool| blob && live.contains(key)),
        Box::new(move |key: &ItemKey, blob: bool| blob && deleted.contains(key)),
        Box::new(move |key: &ItemKey, blob: bool| {
            let taken = live2.contains(key)
                || deleted2.contains(key)
                || (key.0 == ItemKind::Secret && managed.contains(&key.1));
            blob && !taken
        }),
    ]
}

/// How applying a plan ended.
#[derive(Debug)]
pub enum Applied {
    /// Every line was applied; the outcomes by plan line index, in plan order.
    Finished(Vec<(usize, Outcome)>),
    /// `--mode native` into a target that refuses the source's blobs: stopped at the first
    /// refusal (nothing after it was attempted).
    RefusedNatively,
    /// The source failed part-way (the archive changed since it was planned): the lines
    /// applied before, and the error. Lines not listed were not attempted.
    SourceFailed {
        /// What was applied, by plan line index.
        outcomes: Vec<(usize, Outcome)>,
        /// Why the source stopped.
        error: ArchiveError,
    },
}

/// What one concurrent step of the apply loop ended with.
enum Step {
    Done(usize, Outcome),
    Broken(ArchiveError),
}

/// Applies `lines` (planned from `items`, in the same order) to the target through
/// `applier`, `concurrency` writes at a time, reporting each item to `progress` as it ends.
///
/// Lines that write nothing end at once; the first native create (when `mode` is not plain)
/// goes alone first with `first` (the item [`probe_keep`]'s third rule kept), because its
/// answer decides how every other item is written; every other item's data comes from
/// `feed`, one item at a time, so memory holds at most about twice `concurrency` items.
#[allow(clippy::too_many_arguments)]
pub async fn apply_plan<V: VaultWriter>(
    applier: &Applier<V>,
    vault_name: &str,
    items: &[ItemHead],
    lines: &[PlannedItem],
    mode: Mode,
    first: Option<ItemData>,
    feed: ItemFeed,
    concurrency: usize,
    progress: &dyn Progress,
) -> Applied {
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(lines.len());
    let report = |index: usize, outcome: &Outcome| {
        report_item(progress, vault_name, &items[index], outcome);
    };
    let probe = lines
        .iter()
        .position(|l| {
            l.action == Action::Create && matches!(l.method, Some(Method::Native | Method::Auto))
        })
        .filter(|_| mode != Mode::Plain);
    let mut probe_done = None;
    if let Some(index) = probe
        && let Some(mut item) = first.filter(|f| f.head.key() == items[index].key())
    {
        item.head = items[index].clone();
        let outcome = applier.apply(&item, &lines[index]).await;
        if let Outcome::RefusedNatively = outcome {
            return Applied::RefusedNatively;
        }
        report(index, &outcome);
        outcomes.push((index, outcome));
        probe_done = Some(index);
    }
    let mut wanted: HashSet<ItemKey> = HashSet::new();
    let mut index_of: HashMap<ItemKey, usize> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        if Some(index) == probe_done {
            continue;
        }
        match settled_without_data(line) {
            Some(outcome) => {
                report(index, &outcome);
                outcomes.push((index, outcome));
            }
            None => {
                let key = items[index].key();
                wanted.insert(key.clone());
                index_of.insert(key, index);
            }
        }
    }
    let mut broken = None;
    if !wanted.is_empty() {
        let (tx, rx) = tokio::sync::mpsc::channel(concurrency.max(1));
        let reader = tokio::task::spawn_blocking(move || {
            feed_items(feed, &wanted, |item| tx.blocking_send(item).is_ok());
        });
        let arrivals = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let index_of = &index_of;
        let steps = arrivals
            .map(|arrived| async move {
                let mut item = match arrived {
                    Ok(item) => item,
                    Err(err) => return Step::Broken(err),
                };
                let Some(&index) = index_of.get(&item.head.key()) else {
                    return Step::Broken(ArchiveError::io(
                        format!("{} {} was not planned", item.head.kind, item.head.name),
                        std::io::ErrorKind::InvalidData.into(),
                    ));
                };
                item.head = items[index].clone();
                Step::Done(index, applier.apply(&item, &lines[index]).await)
            })
            .buffer_unordered(concurrency.max(1));
        let mut steps = std::pin::pin!(steps);
        while let Some(step) = steps.next().await {
            match step {
                Step::Done(_, Outcome::RefusedNatively) => return Applied::RefusedNatively,
                Step::Done(index, outcome) => {
                    report(index, &outcome);
                    outcomes.push((index, outcome));
                }
                // Items already being written finish; the feed sends nothing after this.
                Step::Broken(err) => broken = Some(err),
            }
        }
        // The feed ended (the stream did), so its thread has or is about to.
        let _ = reader.await;
    }
    outcomes.sort_by_key(|(index, _)| *index);
    match broken {
        Some(error) => Applied::SourceFailed { outcomes, error },
        None => Applied::Finished(outcomes),
    }
}

/// One item's end, for [`Progress`]: failures are problems, a skip's reason is in the plan.
fn report_item(progress: &dyn Progress, vault: &str, item: &ItemHead, outcome: &Outcome) {
    let (status, method, reason) = match outcome {
        Outcome::Done {
            status,
            method,
            note,
        } => (*status, *method, note.as_deref()),
        Outcome::Failed(reason) => ("not-restored", None, Some(reason.as_str())),
        Outcome::RefusedNatively => return,
    };
    progress.item(&ItemEvent {
        vault,
        kind: item.kind,
        name: &item.name,
        status,
        method: method.map(Method::as_str),
        reason,
        problem: matches!(outcome, Outcome::Failed(_)),
        bytes: None,
    });
}
