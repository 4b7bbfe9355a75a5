//! The engine: every verb as a composition of stores, with no command line and no printing.
//!
//! A verb reads items from a source store, plans against a target's listing, and writes to
//! the target (`docs/ARCHITECTURE.md`). [`capture`] reads a live store's items for a backup
//! (one `capture_consistent` loop for every kind). [`item`] is the model plans are made of (heads with
//! digests, never values; whole items one at a time for writes); [`source`] reads an archive
//! as a source (one decrypting pass for planning, a streamed pass for applying); [`restore`]
//! plans (`plan.rs`, pure), lists and inspects the target (`target.rs`) and applies
//! (`apply.rs`); [`diff`] compares. A live store is reached through the store traits of
//! `crate::vault` ([`crate::vault::VaultReader`], [`crate::vault::VaultWriter`]); progress
//! goes out through [`progress::Progress`], which `crate::output` implements.

pub mod capture;
pub mod diff;
pub mod item;
#[cfg(test)]
pub(crate) mod memory;
pub mod progress;
pub mod restore;
pub mod source;
#[cfg(test)]
pub(crate) mod tests;

use crate::model::ItemKind;

/// Which items a run covers: kinds and names. The command line's `--include`, `--name` and
/// `--exclude` resolve to one (`crate::commands::scope::Scope`).
pub trait Filter: Sync {
    /// Whether any item of `kind` can be in.
    fn includes_kind(&self, kind: ItemKind) -> bool;
    /// Whether the item of `kind` named `name` is in.
    fn includes(&self, kind: ItemKind, name: &str) -> bool;
}

/// Every item.
#[derive(Debug, Clone, Copy, Default)]
pub struct Everything;

impl Filter for Everything {
    fn includes_kind(&self, _kind: ItemKind) -> bool {
        true
    }
    fn includes(&self, _kind: ItemKind, _name: &str) -> bool {
        true
    }
}
