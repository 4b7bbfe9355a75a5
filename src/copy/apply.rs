//! Writing into a live vault: one copy plan line at a time, idempotent, so a rerun after an
//! interruption finishes the job with no duplicate version.
//!
//! A native write restores the source's blob (every version, the source's version ids); a 409
//! "exists" on a name the plan saw free is this write's own earlier attempt when the target
//! now holds the source's current version id, and counts as done. The first answer "Cannot
//! decrypt backup blob" (another subscription or geography) switches every later `auto` write
//! to plain. A plain write sets secret versions oldest first (continuing where an interrupted
//! run stopped) or imports the certificate with its private key; [`VaultWriter::set_secret`]
//! and [`VaultWriter::import_certificate`] read back before a retry, so a lost answer never
//! writes twice. Soft-deleted names are recovered when the plan says so; a prune soft-deletes
//! and never purges. Azure's settling answers (409 `ObjectIsBeingDeleted` /
//! `ObjectIsBeingRecovered`, 404 right after a recover) are waited out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::source::import_value;
use crate::archive::Kind;
use crate::commands::restore_plan::{Action, Method, Mode, PlannedItem, vault_attributes};
use crate::engine::item::ItemData;
use crate::vault::azure::{AzureVault, settle_backoff};
use crate::vault::{
    CertificateImport, ConflictReason, NewSecretVersion, VaultError, VaultReader, VaultWriter,
};

/// How long one item may wait for Azure to settle before it is reported as not done.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

/// How one line ended.
#[derive(Debug)]
pub enum Outcome {
    /// Written, recovered, deleted or left alone: the status word and how it was written.
    Done {
        /// `created`, `overwritten`, `recovered`, `deleted`, `skipped`.
        status: &'static str,
        /// Native or plain, for writes.
        method: Option<Method>,
        /// A detail worth reporting.
        note: Option<String>,
    },
    /// Not done, with why.
    Failed(String),
    /// `--mode native` met a target that refuses the source's blobs: the run stops.
    RefusedNatively,
}

/// Applies plan lines to one target vault.
pub struct Applier {
    target: AzureVault,
    mode: Mode,
    /// Set on the first "Cannot decrypt backup blob": `auto` writes plainly from then on.
    native_refused: AtomicBool,
}

impl Applier {
    /// An applier for `target`; `native_refused` when the plan already knows the target
    /// refuses the source's blobs.
    pub fn new(target: AzureVault, mode: Mode, native_refused: bool) -> Self {
        Self {
            target,
            mode,
            native_refused: AtomicBool::new(native_refused),
        }
    }

    /// Whether a native write was refused during this run.
    pub fn native_refused(&self) -> bool {
        self.native_refused.load(Ordering::Relaxed)
    }

    /// Applies one restore-shaped line for `item`.
    pub async fn apply(&self, item: &ItemData, line: &PlannedItem) -> Outcome {
        match line.action {
            Action::Skip => Outcome::Done {
                status: "skipped",
                method: None,
                note: line.reason.clone(),
            },
            Action::Conflict | Action::Impossible => Outcome::Failed(
                line.reason
                    .clone()
                    .unwrap_or_else(|| line.action.as_str().to_owned()),
            ),
            Action::Create => self.create(item, line.method, line.versions_present).await,
            Action::Overwrite => {
                match self
                    .write_plain(item, item.versions.len().saturating_sub(1))
                    .await
                {
                    Ok(()) => Outcome::Done {
                        status: "overwritten",
                        method: Some(Method::Plain),
                        note: None,
                    },
                    Err(reason) => Outcome::Failed(reason),
                }
            }
            Action::Recover => self.recover(item, line.method).await,
        }
    }

    /// Soft-deletes an item of the target (`--prune`, or a deletion `sync` propagates).
    pub async fn delete(&self, kind: Kind, name: &str) -> Outcome {
        match settle(|| self.target.soft_delete(kind, name)).await {
            // A repeated delete whose first answer was lost finds nothing live: done.
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

    async fn create(&self, item: &ItemData, method: Option<Method>, from: usize) -> Outcome {
        let try_native = match method {
            Some(Method::Native) => true,
            Some(Method::Auto) => !self.native_refused(),
            _ => false,
        };
        if try_native {
            match self.write_native(item).await {
                Ok(()) => {
                    return Outcome::Done {
                        status: "created",
                        method: Some(Method::Native),
                        note: None,
                    };
                }
                Err(err) if err.is_cannot_decrypt_backup() => {
                    self.native_refused.store(true, Ordering::Relaxed);
                    if self.mode == Mode::Native {
                        return Outcome::RefusedNatively;
                    }
                    if !item.head.has_plain_form() {
                        return Outcome::Failed(refused_reason(item));
                    }
                }
                Err(err) => return Outcome::Failed(describe(&err)),
            }
        } else if !item.head.has_plain_form() {
            return Outcome::Failed(refused_reason(item));
        }
        match self.write_plain(item, from).await {
            Ok(()) => Outcome::Done {
                status: "created",
                method: Some(Method::Plain),
                note: (from > 0).then(|| format!("{from} versions were already present")),
            },
            Err(reason) => Outcome::Failed(reason),
        }
    }

    async fn write_native(&self, item: &ItemData) -> Result<(), VaultError> {
        let Some(blob) = &item.blob else {
            return Err(VaultError::Other {
                status: None,
                message: "no native blob was read from the source".to_owned(),
            });
        };
        let version = item.head.blob.as_ref().and_then(|b| b.version.as_deref());
        match settle(|| self.target.restore(item.head.kind, blob)).await {
            Ok(_) => Ok(()),
            // The plan saw the name free, so a 409 "exists" is most likely this write's own
            // earlier attempt, committed with its answer lost: done when the target holds the
            // source's current version id (only a native restore makes that id there).
            Err(err)
                if err.conflict_reason() == Some(&ConflictReason::Exists)
                    && self.holds_version(item, version).await =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the target holds `version` of `item` (as its current version for keys and
    /// certificates, among its versions for secrets).
    async fn holds_version(&self, item: &ItemData, version: Option<&str>) -> bool {
        let Some(version) = version else {
            return false;
        };
        match item.head.kind {
            Kind::Secret => self
                .target
                .list_secret_versions(&item.head.name)
                .await
                .is_ok_and(|versions| {
                    versions
                        .iter()
                        .any(|v| v.version.as_deref() == Some(version))
                }),
            Kind::Key => self
                .target
                .get_key(&item.head.name, None)
                .await
                .is_ok_and(|b| b.properties.version.as_deref() == Some(version)),
            Kind::Certificate => self
                .target
                .get_certificate(&item.head.name, None)
                .await
                .is_ok_and(|b| b.properties.version.as_deref() == Some(version)),
        }
    }

    /// Writes secret versions from `from` on (oldest first), or imports the certificate.
    async fn write_plain(&self, item: &ItemData, from: usize) -> Result<(), String> {
        match item.head.kind {
            Kind::Secret => {
                for record in item.versions.iter().skip(from) {
                    let version = NewSecretVersion {
                        value: record.value.clone(),
                        content_type: record.content_type.clone(),
                        tags: record.tags.clone(),
                        attributes: vault_attributes(&record.attributes),
                    };
                    settle(|| self.target.set_secret(&item.head.name, &version))
                        .await
                        .map_err(|e| describe(&e))?;
                }
                Ok(())
            }
            Kind::Certificate => {
                let (Some(export), Some(head)) = (&item.export, &item.head.export) else {
                    return Err(refused_reason(item));
                };
                let import = CertificateImport {
                    value: import_value(&head.content_type, export),
                    content_type: head.content_type.clone(),
                    password: None,
                    policy: item.policy.clone(),
                    tags: item
                        .head
                        .blob
                        .as_ref()
                        .map(|b| b.tags.clone())
                        .unwrap_or_default(),
                    attributes: item
                        .head
                        .blob
                        .as_ref()
                        .map(|b| vault_attributes(&b.attributes))
                        .unwrap_or_default(),
                };
                settle(|| self.target.import_certificate(&item.head.name, &import))
                    .await
                    .map(|_| ())
                    .map_err(|e| describe(&e))
            }
            Kind::Key => Err(refused_reason(item)),
        }
    }

    /// Recovers a soft-deleted item, waits until it answers, then brings a secret up to the
    /// source's current value when it differs.
    async fn recover(&self, item: &ItemData, method: Option<Method>) -> Outcome {
        let kind = item.head.kind;
        match settle(|| self.target.recover_deleted(kind, &item.head.name)).await {
            Ok(_) => {}
            // A repeated recover whose first answer was lost finds no deleted item.
            Err(err) if err.is_not_found() => {}
            Err(err) => return Outcome::Failed(describe(&err)),
        }
        if let Err(reason) = self.wait_live(item).await {
            return Outcome::Failed(reason);
        }
        let mut note = None;
        if item.head.kind == Kind::Secret
            && method != Some(Method::Native)
            && let Some(current) = item.versions.last()
        {
            let live = self.target.get_secret(&item.head.name, None).await;
            let same = live.as_ref().is_ok_and(|v| {
                digest(v.value.expose_secret()) == digest(current.value.expose_secret())
                    && v.properties.content_type == current.content_type
                    && v.properties.tags == current.tags
            });
            if !same {
                if let Err(reason) = self.write_plain(item, item.versions.len() - 1).await {
                    return Outcome::Failed(format!("recovered, then: {reason}"));
                }
                note = Some("recovered, then the source's current version was added".to_owned());
            }
        }
        Outcome::Done {
            status: "recovered",
            method,
            note,
        }
    }

    /// Polls until a recovered item answers (Azure answers 404 for a few seconds).
    async fn wait_live(&self, item: &ItemData) -> Result<(), String> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let found = match item.head.kind {
                Kind::Secret => self
                    .target
                    .list_secret_versions(&item.head.name)
                    .await
                    .map(drop),
                Kind::Key => self.target.get_key(&item.head.name, None).await.map(drop),
                Kind::Certificate => self
                    .target
                    .get_certificate(&item.head.name, None)
                    .await
                    .map(drop),
            };
            match found {
                Ok(()) => return Ok(()),
                Err(err) if err.is_not_found() && started.elapsed() < SETTLE_DEADLINE => {
                    tokio::time::sleep(settle_backoff(attempt)).await;
                    attempt += 1;
                }
                Err(err) => return Err(format!("recovered, but it does not answer: {err}")),
            }
        }
    }
}

/// Why an item with no plain form cannot reach a target that refuses native blobs.
fn refused_reason(item: &ItemData) -> String {
    match item.head.kind {
        Kind::Key => "Cannot decrypt backup blob: Azure restores a key's backup only into a vault \
                      of the source's subscription and geography, and a key has no other way out \
                      (software keys are not exportable)"
            .to_owned(),
        _ => format!(
            "the target refuses native blobs (another subscription or geography) and {}",
            item.head
                .no_plain_reason()
                .replace("in the archive", "readable in the source")
                .replace("when captured", "")
        ),
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

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}
