//! What `copy --prune` and `sync` write besides the engine's restore applier
//! ([`crate::engine::restore::apply::Applier`], which creates, overwrites and recovers items for
//! `copy` exactly as for `restore`): the soft-delete of an item, and the waits and messages
//! around single writes that `sync` makes itself.
//!
//! A delete is never a purge. Azure's settling answers (409 `ObjectIsBeingDeleted` /
//! `ObjectIsBeingRecovered`) are waited out; a repeated delete whose first answer was lost finds
//! nothing live, which counts as done.

use crate::archive::Kind;
use crate::engine::restore::apply::Outcome;
pub use crate::engine::restore::apply::settle;
use crate::vault::{ConflictReason, VaultError, VaultWriter};

/// Soft-deletes an item of `target` (`--prune`, or a deletion `sync` propagates).
pub async fn soft_delete<V: VaultWriter>(target: &V, kind: Kind, name: &str) -> Outcome {
    match settle(|| target.soft_delete(kind, name)).await {
        Ok(()) => Outcome::Done {
            status: "deleted",
            method: None,
            note: None,
        },
        Err(err) if err.is_not_found() => Outcome::Done {
            status: "deleted",
            method: None,
            note: Some("already gone".to_owned()),
        },
        Err(err) => Outcome::Failed(err.to_string()),
    }
}

/// A per-item write failure for people, with what to do where there is something.
pub fn describe(err: &VaultError) -> String {
    match err.conflict_reason() {
        Some(ConflictReason::DeletedButRecoverable) => {
            format!("{err}; the name is soft-deleted in the target: pass --recover-deleted")
        }
        _ => err.to_string(),
    }
}
