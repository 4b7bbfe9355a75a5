//! Diff as the engine runs it: how a source's items and a live target differ. Pure: the
//! inputs are the source's heads, the target's listing and what was read of each item
//! present on both sides; values are compared by digest and never shown.
//!
//! Items in scope fall into `missing` (in the source, neither live nor soft-deleted in the
//! target), `soft-deleted` (recoverable in the target), `changed` (value, content type, tags
//! or attributes differ) and `extra` (live in the target, not in the source).

use std::collections::HashSet;

use serde::Serialize;

use super::Filter;
use super::item::ItemHead;
use super::restore::plan::compare;
use super::restore::target::{LiveView, TargetListing};
use crate::model::ItemKind;

/// How an item differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// In the source, neither live nor soft-deleted in the target.
    Missing,
    /// In the source, soft-deleted in the target.
    SoftDeleted,
    /// On both sides, different (or unreadable in the target).
    Changed,
    /// Live in the target, not in the source.
    Extra,
}

impl State {
    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Missing => "missing",
            State::SoftDeleted => "soft-deleted",
            State::Changed => "changed",
            State::Extra => "extra",
        }
    }
}

/// One item that differs.
#[derive(Debug, Serialize)]
pub struct Difference {
    /// How.
    pub state: State,
    /// The item's kind.
    pub kind: ItemKind,
    /// The item's name.
    pub name: String,
    /// The fields that differ, for `changed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<&'static str>,
    /// Why it could not be compared, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Items per state.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// See [`State::Missing`].
    pub missing: u64,
    /// See [`State::SoftDeleted`].
    pub soft_deleted: u64,
    /// See [`State::Changed`].
    pub changed: u64,
    /// See [`State::Extra`].
    pub extra: u64,
    /// On both sides and identical.
    pub identical: u64,
}

/// Compares the source's `items` with the target: `views[i]` is what was read of
/// `items[i]` in the target (`None` when it is not live there). Returns the differences
/// sorted by state, kind and lower-case name, and the counts.
pub fn differences<F: Filter + ?Sized>(
    items: &[ItemHead],
    views: &[Option<Result<LiveView, String>>],
    listing: &TargetListing,
    scope: &F,
) -> (Vec<Difference>, Counts) {
    let mut counts = Counts::default();
    let mut found = Vec::new();
    let mut archived = HashSet::new();
    for (item, view) in items.iter().zip(views) {
        let key = item.key();
        archived.insert(key.clone());
        let difference = |state, changed, reason| Difference {
            state,
            kind: item.kind,
            name: item.name.clone(),
            changed,
            reason,
        };
        match view {
            Some(Ok(view)) => match compare(item, view) {
                Some(changed) if changed.is_empty() => counts.identical += 1,
                Some(changed) => found.push(difference(State::Changed, changed, None)),
                None => found.push(difference(
                    State::Changed,
                    Vec::new(),
                    Some("the archive holds nothing to compare with".to_owned()),
                )),
            },
            Some(Err(reason)) => found.push(difference(
                State::Changed,
                Vec::new(),
                Some(format!("could not be read: {reason}")),
            )),
            None if listing.deleted.contains_key(&key) => {
                found.push(difference(State::SoftDeleted, Vec::new(), None))
            }
            None => found.push(difference(State::Missing, Vec::new(), None)),
        }
    }
    found.extend(
        listing
            .live
            .iter()
            .filter(|(key, props)| !archived.contains(*key) && scope.includes(key.0, props.name()))
            .map(|((kind, _), props)| Difference {
                state: State::Extra,
                kind: *kind,
                name: props.name().to_owned(),
                changed: Vec::new(),
                reason: None,
            }),
    );
    found.sort_by(|a, b| {
        (a.state, a.kind, a.name.to_ascii_lowercase()).cmp(&(
            b.state,
            b.kind,
            b.name.to_ascii_lowercase(),
        ))
    });
    for item in &found {
        match item.state {
            State::Missing => counts.missing += 1,
            State::SoftDeleted => counts.soft_deleted += 1,
            State::Changed => counts.changed += 1,
            State::Extra => counts.extra += 1,
        }
    }
    (found, counts)
}
