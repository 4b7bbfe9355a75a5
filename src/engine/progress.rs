//! What the engine reports while it runs, and to whom: the [`Progress`] trait, which the
//! engine calls and `crate::output` implements (a bar on a terminal, lines in a pipe, JSON
//! Lines under `--json`). Events carry kinds, names, statuses and reasons, never values.

use crate::model::ItemKind;

/// One item reached its end state.
#[derive(Debug, Clone)]
pub struct ItemEvent<'a> {
    /// The vault (or other store) the item belongs to.
    pub vault: &'a str,
    /// The item's kind.
    pub kind: ItemKind,
    /// The item's name.
    pub name: &'a str,
    /// What happened: `created`, `recovered`, `skipped`, `not-restored`, `captured`, …
    pub status: &'a str,
    /// How it was written, where that means something (`native`, `plain`).
    pub method: Option<&'a str>,
    /// Why, or a detail.
    pub reason: Option<&'a str>,
    /// Whether it is a problem people should see as it happens (the detail of a success is
    /// only in the machine-readable events).
    pub problem: bool,
    /// Bytes written for this item, where that means something.
    pub bytes: Option<u64>,
}

/// The receiver of the engine's progress. Shared by concurrent workers.
pub trait Progress: Sync {
    /// A free-form message for people (a list that could not be read, a probe that wrote).
    fn note(&self, text: &str);
    /// `items` more items will be reported.
    fn add_total(&self, items: u64);
    /// One item is done.
    fn item(&self, event: &ItemEvent<'_>);
}

/// A [`Progress`] that reports nothing, for callers that only want the result.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn note(&self, _text: &str) {}
    fn add_total(&self, _items: u64) {}
    fn item(&self, _event: &ItemEvent<'_>) {}
}
