//! Vault to vault: `coldvault copy` (one-way) and `coldvault sync` (two-way).
//!
//! A copy reads a live vault the way a backup does and writes the target the way a restore
//! does: [`source`] captures each source item into the engine's item model
//! ([`crate::engine::item::ItemData`]: a head with digests, plus values and blob), the engine's
//! restore planner decides each line ([`plan`] adds what a live source changes: unreadable
//! items, keys for a refusing target, `--prune`), and [`apply`] writes idempotently. `sync`
//! decides each item with [`decide`] from both sides and the last run's [`state`], and writes
//! through the same kinds of calls. [`identity`] gives each side its own sign-in.
//!
//! Each side is a [`store::Store`] (a Key Vault or a KV v2 mount) read item by item through
//! the store traits; the engine's applier (`crate::engine::restore::apply`) writes the copy.

pub mod apply;
pub mod decide;
pub mod identity;
pub mod plan;
pub mod source;
pub mod state;
pub mod store;
