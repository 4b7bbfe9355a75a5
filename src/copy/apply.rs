//! What `copy --prune` and `sync` write besides the engine's restore applier
//! ([`crate::engine::restore::apply::Applier`], which creates, overwrites and recovers items for
//! `copy` exactly as for `restore`): the soft-delete of an item, and the waits and messages
//! around single writes that `sync` makes itself.
//!
//! A delete is never a purge. Azure's settling answers (409 `ObjectIsBeingDeleted` /
//! `ObjectIsBeingRecovered`) are waited out; a repeated delete whose first answer was lost finds
//! nothing live, which counts as done.

use std::time::{Duration, Instant};

use crate::archive::Kind;
use crate::engine::restore::apply::Outcome;
use crate::vault::azure::settle_backoff;
use crate::vault::{ConflictReason, VaultError, VaultWriter};

/// How long one item may wait for Azure to settle before it is reported as not done.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

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

/// Retries while Azure is settling (a delete, purge or recover in progress).
pub async fn settle<T, F, Fut>(mut op: F) -> Result<T, VaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VaultError>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Err(err)
                if err.conflict_reason().is_some_and(|r| r.is_transient())
                    && started.elapsed() < SETTLE_DEADLINE =>
            {
                tokio::time::sleep(settle_backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
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
