//! Vault to vault: `coldvault copy` (one-way) and `coldvault sync` (two-way).
//!
//! A copy reads a live vault the way a backup does and writes the target the way a restore
//! does: [`source`] captures each source item into the shape an archive gives `restore`, the
//! restore planner decides each line ([`plan`] adds what a live source changes: unreadable
//! items, keys for a refusing target, `--prune`), and [`apply`] writes idempotently. `sync`
//! decides each item with [`decide`] from both sides and the last run's [`state`], and writes
//! through the same applier. [`identity`] gives each side its own sign-in.
//!
//! This is the seam a store-generic engine replaces: the source is an [`crate::vault::AzureVault`]
//! read into [`crate::commands::restore_plan::ArchivedItem`]s; a second kind of store needs only
//! another `source`/`apply` pair.

pub mod apply;
pub mod decide;
pub mod identity;
pub mod plan;
pub mod source;
pub mod state;
