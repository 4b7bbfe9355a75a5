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
use crate::engine::source::ItemKey;
use crate::vault::{BackupBlob, VaultWriter};

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
/// `items` are the source's heads (in plan order); the candidate is the first with a blob
/// whose name is live in the target, else the first whose name is soft-deleted there, and
/// `fetch` reads its blob from the source (only when a probe is needed); `source_url` is the
/// source vault's URL.
#[allow(clippy::too_many_arguments)]
pub async fn probe_native<V, F, Fut>(
    vault: &V,
    items: &[ItemHead],
    fetch: F,
    listing: &TargetListing,
    target: &str,
    source_url: &str,
    policy: Policy,
) -> NativeBlobs
where
    V: VaultWriter,
    F: FnOnce(ItemKey) -> Fut,
    Fut: std::future::Future<Output = Option<BackupBlob>>,
{
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
    let with_blob = || items.iter().filter(|i| i.blob.is_some());
    let candidate = with_blob()
        .find(|item| listing.live.contains_key(&item.key()))
        .map(|item| (item, "live"))
        .or_else(|| {
            with_blob()
                .find(|item| listing.deleted.contains_key(&item.key()))
                .map(|item| (item, "soft-deleted"))
        });
    if let Some((item, state)) = candidate {
        let what = format!("{} {}", item.kind, item.name);
        let Some(blob) = fetch(item.key()).await else {
            return NativeBlobs::new(
                NativeTarget::Unverified,
                format!("the blob of {what} could not be read from the archive"),
            );
        };
        return match vault.restore(item.kind, &blob).await {
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

/// The keys of the items whose lines need their data (create, overwrite, recover): what
/// [`apply_plan`] must be handed by the source.
pub fn wanted(items: &[ItemHead], lines: &[PlannedItem]) -> HashSet<ItemKey> {
    items
        .iter()
        .zip(lines)
        .filter(|(_, line)| settled_without_data(line).is_none())
        .map(|(item, _)| item.key())
        .collect()
}

/// How applying a plan ended.
#[derive(Debug)]
pub enum Applied<E = ArchiveError> {
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
        error: E,
    },
}

/// What one concurrent step of the apply loop ended with.
enum Step<E> {
    Done(usize, Outcome),
    Broken(E),
}

/// Applies `lines` (planned from `items`, in the same order) to the target through
/// `applier`, `concurrency` writes at a time, reporting each item to `progress` as it ends.
///
/// Lines that write nothing end at once; every other item's data comes from `arrivals`, the
/// source's whole items for the keys [`wanted`] names, in any order (an archive:
/// [`crate::engine::source::archive_items`]; a live store: its captures), one item at a time,
/// so memory holds at most about twice `concurrency` items besides what the source buffers.
/// An `Err` from the source stops the run after the writes in flight
/// ([`Applied::SourceFailed`]). Until the first
/// native create has been written (when `mode` is not plain) items are written one at a
/// time, and that create alone: its answer (accepted, or "Cannot decrypt backup blob" from
/// another subscription or geography) decides how every other item is written.
#[allow(clippy::too_many_arguments)]
pub async fn apply_plan<V, S, E>(
    applier: &Applier<V>,
    vault_name: &str,
    items: &[ItemHead],
    lines: &[PlannedItem],
    mode: Mode,
    arrivals: S,
    concurrency: usize,
    progress: &dyn Progress,
) -> Applied<E>
where
    V: VaultWriter,
    S: futures::Stream<Item = Result<ItemData, E>> + Unpin,
    E: From<UnplannedItem>,
{
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(lines.len());
    let report = |index: usize, outcome: &Outcome| {
        report_item(progress, vault_name, &items[index], outcome);
    };
    let native_create = |line: &PlannedItem| {
        mode != Mode::Plain
            && line.action == Action::Create
            && matches!(line.method, Some(Method::Native | Method::Auto))
    };
    let mut probe_pending = lines.iter().any(native_create);
    let mut index_of: HashMap<ItemKey, usize> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        match settled_without_data(line) {
            Some(outcome) => {
                report(index, &outcome);
                outcomes.push((index, outcome));
            }
            None => {
                index_of.insert(items[index].key(), index);
            }
        }
    }
    let mut broken = None;
    if !index_of.is_empty() {
        let index_of = &index_of;
        let planned = |arrived: Result<ItemData, E>| -> Result<(usize, ItemData), E> {
            let mut item = arrived?;
            let Some(&index) = index_of.get(&item.head.key()) else {
                return Err(E::from(UnplannedItem(format!(
                    "{} {}",
                    item.head.kind, item.head.name
                ))));
            };
            item.head = items[index].clone();
            // Oldest first, the current version last, as the head that was planned: a plain
            // replay in this order leaves the source's current version current.
            item.sort_versions();
            Ok((index, item))
        };
        let mut arrivals = arrivals;
        // One at a time until the first native create is written.
        while probe_pending && broken.is_none() {
            let Some(arrived) = arrivals.next().await else {
                break;
            };
            match planned(arrived) {
                Ok((index, item)) => {
                    let outcome = applier.apply(&item, &lines[index]).await;
                    if let Outcome::RefusedNatively = outcome {
                        return Applied::RefusedNatively;
                    }
                    probe_pending = !native_create(&lines[index]);
                    report(index, &outcome);
                    outcomes.push((index, outcome));
                }
                Err(err) => broken = Some(err),
            }
        }
        let planned = &planned;
        let steps = arrivals
            .map(|arrived| async move {
                match planned(arrived) {
                    Ok((index, item)) => {
                        Step::Done(index, applier.apply(&item, &lines[index]).await)
                    }
                    Err(err) => Step::Broken(err),
                }
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
                // Items already being written finish; a failed source sends nothing after.
                Step::Broken(err) => broken = Some(err),
            }
        }
    }
    outcomes.sort_by_key(|(index, _)| *index);
    match broken {
        Some(error) => Applied::SourceFailed { outcomes, error },
        None => Applied::Finished(outcomes),
    }
}

/// A source handed out an item the plan has no line for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnplannedItem(pub String);

impl From<UnplannedItem> for ArchiveError {
    fn from(item: UnplannedItem) -> Self {
        ArchiveError::io(
            format!("{} was not planned", item.0),
            std::io::ErrorKind::InvalidData.into(),
        )
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
