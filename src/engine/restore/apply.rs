//! Applying a restore plan to a target: native writes (the backup blob: every version,
//! same ids), plain writes (secret versions by value, certificates by import), recovers of
//! soft-deleted items, each idempotent under a lost answer and waiting out Azure's settling
//! answers (409 `ObjectIsBeingDeleted` after a purge, 404 after a recover). Generic over
//! [`VaultWriter`]: one item's data at a time ([`ItemData`]), never the whole source.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;

use super::plan::{Action, Method, Mode, PlannedItem, compare};
use super::target::{LiveProps, inspect_live};
use crate::engine::item::{ItemData, vault_attributes};
use crate::model::ItemKind as Kind;
use crate::vault::azure::settle_backoff;
use crate::vault::{Attributes, CertificateImport, NewSecretVersion, VaultError, VaultWriter};

/// How long one item may wait for Azure to settle (a purge window, a recover) before it is
/// reported as not restored.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

/// How one item ended.
#[derive(Debug)]
pub enum Outcome {
    /// Written, recovered or left alone.
    Done {
        status: &'static str,
        method: Option<Method>,
        note: Option<String>,
    },
    /// Not restored, with why.
    Failed(String),
    /// The whole run must stop: a native restore refused in `--mode native`.
    RefusedNatively,
}

/// Applies plan lines to the target. Shared by the concurrent writes of one run.
#[derive(Debug)]
pub struct Applier<V> {
    vault: V,
    mode: Mode,
    /// Set when the target answered "Cannot decrypt backup blob": it is in another
    /// subscription or geography, so `auto` writes plainly from then on.
    native_refused: AtomicBool,
}

/// How a plan line that writes nothing ends (skip, conflict, impossible); `None` for a line
/// that needs the item's data.
pub fn settled_without_data(line: &PlannedItem) -> Option<Outcome> {
    match line.action {
        Action::Skip => Some(Outcome::Done {
            status: "skipped",
            method: None,
            note: line.reason.clone(),
        }),
        Action::Conflict | Action::Impossible => Some(Outcome::Failed(line_reason(line))),
        Action::Create | Action::Overwrite | Action::Recover => None,
    }
}

/// The reason a failing plan line gives.
pub fn line_reason(line: &PlannedItem) -> String {
    line.reason
        .clone()
        .unwrap_or_else(|| line.action.as_str().to_owned())
}

impl<V: VaultWriter> Applier<V> {
    /// An applier writing into `vault` with `mode`; `native_refused` when the plan already
    /// knows the target refuses the source's blobs.
    pub fn new(vault: V, mode: Mode, native_refused: bool) -> Self {
        Self {
            vault,
            mode,
            native_refused: AtomicBool::new(native_refused),
        }
    }

    /// Whether the target answered "Cannot decrypt backup blob" to a native write of this run
    /// (or the plan knew it would): a source need not read more blobs.
    pub fn native_refused(&self) -> bool {
        self.native_refused.load(Ordering::Relaxed)
    }

    /// Applies one plan line with the item's data (`item.head` is the head it was planned
    /// from).
    pub async fn apply(&self, item: &ItemData, line: &PlannedItem) -> Outcome {
        if let Some(outcome) = settled_without_data(line) {
            return outcome;
        }
        match line.action {
            Action::Skip | Action::Conflict | Action::Impossible => {
                Outcome::Failed(line_reason(line))
            }
            Action::Create => self.create(item, line.method, line.versions_present).await,
            Action::Overwrite => match self
                .write_plain(item, item.head.versions.len().saturating_sub(1))
                .await
            {
                Ok(()) => Outcome::Done {
                    status: "overwritten",
                    method: Some(Method::Plain),
                    note: None,
                },
                Err(reason) => Outcome::Failed(reason),
            },
            Action::Recover => self.recover(item).await,
        }
    }

    async fn create(&self, item: &ItemData, method: Option<Method>, from: usize) -> Outcome {
        let try_native = match method {
            Some(Method::Native) => true,
            Some(Method::Auto) => !self.native_refused.load(Ordering::Relaxed),
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
                        return Outcome::Failed(format!(
                            "the target refused the native blob (\"Cannot decrypt backup \
                             blob\": another subscription or geography) and {}",
                            item.head.no_plain_reason()
                        ));
                    }
                }
                Err(err) => return Outcome::Failed(describe(&err)),
            }
        } else if method != Some(Method::Plain) && method != Some(Method::Auto) {
            return Outcome::Failed(item.head.no_plain_reason());
        }
        if !item.head.has_plain_form() {
            return Outcome::Failed(format!(
                "the target refuses native blobs (another subscription or geography) and {}",
                item.head.no_plain_reason()
            ));
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
                message: "no native blob in the archive".to_owned(),
            });
        };
        let kind = item.head.kind;
        match settle(|| self.vault.restore(kind, blob)).await {
            Ok(_) => Ok(()),
            // The plan saw the name free, so a 409 "exists" is most likely this restore's own
            // earlier attempt, committed with its answer lost: done when the target now holds
            // the archived object (version ids are the source's, no other write makes them).
            Err(err)
                if err.conflict_reason() == Some(&crate::vault::ConflictReason::Exists)
                    && self.holds_restored(item).await =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Whether the target holds what a native restore of `item` brings back: the archived
    /// current version is current there and, for a secret, every archived version is there.
    async fn holds_restored(&self, item: &ItemData) -> bool {
        let Some(expected) = item.head.blob.as_ref().and_then(|b| b.version.as_deref()) else {
            return false;
        };
        let current = match item.head.kind {
            Kind::Secret => {
                let Ok(versions) = self.vault.list_secret_versions(&item.head.name).await else {
                    return false;
                };
                let every_version = {
                    let listed: std::collections::HashSet<&str> = versions
                        .iter()
                        .filter_map(|v| v.version.as_deref())
                        .collect();
                    item.head
                        .versions
                        .iter()
                        .all(|r| listed.contains(r.version.as_str()))
                };
                if !every_version {
                    return false;
                }
                self.current_secret_props(&item.head.name, versions)
                    .await
                    .ok()
                    .and_then(|p| p.version)
            }
            Kind::Key => self
                .vault
                .get_key(&item.head.name, None)
                .await
                .ok()
                .and_then(|b| b.properties.version),
            Kind::Certificate => self
                .vault
                .get_certificate(&item.head.name, None)
                .await
                .ok()
                .and_then(|b| b.properties.version),
        };
        current.as_deref() == Some(expected)
    }

    /// Writes archived secret versions from `from` on (oldest first), or imports the
    /// certificate.
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
                    settle(|| self.vault.set_secret(&item.head.name, &version))
                        .await
                        .map_err(|e| describe(&e))?;
                }
                Ok(())
            }
            Kind::Certificate => {
                let import = certificate_import(item)?;
                settle(|| self.vault.import_certificate(&item.head.name, &import))
                    .await
                    .map(|_| ())
                    .map_err(|e| describe(&e))
            }
            Kind::Key => Err(item.head.no_plain_reason()),
        }
    }

    /// Recovers a soft-deleted item, waits until it answers, then brings it up to the
    /// archive's state when it differs and a plain write can do it.
    async fn recover(&self, item: &ItemData) -> Outcome {
        let kind = item.head.kind;
        let recovered = settle(|| self.vault.recover_deleted(kind, &item.head.name)).await;
        let props = match recovered {
            Ok(_) => match self.wait_live(item).await {
                Ok(props) => props,
                Err(reason) => return Outcome::Failed(reason),
            },
            // A repeated recover, after an attempt whose answer was lost, finds no deleted
            // item (404) or one still being recovered (409): done once the item is live.
            Err(err)
                if err.is_not_found()
                    || matches!(
                        err.conflict_reason(),
                        Some(
                            crate::vault::ConflictReason::BeingRecovered
                                | crate::vault::ConflictReason::Exists
                        )
                    ) =>
            {
                match self.wait_live(item).await {
                    Ok(props) => props,
                    Err(_) => return Outcome::Failed(format!("recover: {}", describe(&err))),
                }
            }
            Err(err) => return Outcome::Failed(format!("recover: {}", describe(&err))),
        };
        let view = match inspect_live(&self.vault, &item.head, &props).await {
            Ok(view) => view,
            Err(err) => {
                return Outcome::Done {
                    status: "recovered",
                    method: None,
                    note: Some(format!("recovered; not compared with the archive: {err}")),
                };
            }
        };
        let changed = compare(&item.head, &view).unwrap_or_default();
        if changed.is_empty() {
            return Outcome::Done {
                status: "recovered",
                method: None,
                note: None,
            };
        }
        if item.head.has_plain_form() && self.mode != Mode::Native {
            let from = item.head.versions.len().saturating_sub(1);
            return match self.write_plain(item, from).await {
                Ok(()) => Outcome::Done {
                    status: "recovered",
                    method: Some(Method::Plain),
                    note: Some(format!(
                        "recovered, then updated to the archive's state ({})",
                        changed.join(", ")
                    )),
                },
                Err(reason) => Outcome::Failed(format!(
                    "recovered, but not updated to the archive's state: {reason}"
                )),
            };
        }
        Outcome::Done {
            status: "recovered",
            method: None,
            note: Some(format!(
                "recovered; differs from the archive ({}) and only a plain write could change it",
                changed.join(", ")
            )),
        }
    }

    /// After a recover the item answers 404 for a few seconds: poll until it is listed by
    /// a get, or the deadline passes.
    async fn wait_live(&self, item: &ItemData) -> Result<LiveProps, String> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let found = match item.head.kind {
                Kind::Secret => match self.vault.list_secret_versions(&item.head.name).await {
                    Ok(versions) if !versions.is_empty() => {
                        let props = self.current_secret_props(&item.head.name, versions).await;
                        props.map(|p| Some(LiveProps::Secret(p)))
                    }
                    Ok(_) => Ok(None),
                    Err(err) => Err(err),
                },
                Kind::Key => self
                    .vault
                    .get_key(&item.head.name, None)
                    .await
                    .map(|b| Some(LiveProps::Key(b.properties))),
                Kind::Certificate => self
                    .vault
                    .get_certificate(&item.head.name, None)
                    .await
                    .map(|b| Some(LiveProps::Certificate(b.properties))),
            };
            match found {
                Ok(Some(props)) => return Ok(props),
                Ok(None) => {}
                Err(err) if err.is_not_found() || err.is_retryable() => {}
                Err(err) => return Err(format!("recovered, but cannot be read: {err}")),
            }
            if started.elapsed() > SETTLE_DEADLINE {
                return Err(format!(
                    "recovered, but still not visible after {} s",
                    SETTLE_DEADLINE.as_secs()
                ));
            }
            tokio::time::sleep(settle_backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The properties of a secret's current version (the newest enabled one reads as
    /// current; a disabled current one keeps its listed properties).
    async fn current_secret_props(
        &self,
        name: &str,
        versions: Vec<crate::vault::SecretProperties>,
    ) -> Result<crate::vault::SecretProperties, VaultError> {
        match self.vault.get_secret(name, None).await {
            Ok(value) => Ok(value.properties),
            Err(err) if err.is_secret_disabled() => versions.into_iter().last().ok_or(err),
            Err(err) => Err(err),
        }
    }
}

/// A certificate import from the archived export: a PFX goes back to standard base64 (as a
/// certificate's managed secret holds it), PEM as text.
fn certificate_import(item: &ItemData) -> Result<CertificateImport, String> {
    let (Some(export), Some(bytes)) = (&item.head.export, &item.export) else {
        return Err(item.head.no_plain_reason());
    };
    let bytes = bytes.expose_secret();
    let value = if export.content_type == crate::archive::layout::PEM_CONTENT_TYPE {
        match std::str::from_utf8(bytes) {
            Ok(text) => SecretString::from(text.to_owned()),
            Err(_) => return Err("the archived PEM export is not text".to_owned()),
        }
    } else {
        SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let (tags, attributes) = match &item.head.blob {
        Some(blob) => (blob.tags.clone(), blob.attributes.clone()),
        None => Default::default(),
    };
    Ok(CertificateImport {
        value,
        content_type: export.content_type.clone(),
        password: None,
        policy: item.policy.clone(),
        tags,
        // A certificate's nbf and exp come from the certificate itself.
        attributes: Attributes {
            enabled: attributes.enabled,
            ..Attributes::default()
        },
    })
}

/// Runs a write, retrying while Azure says the name is still settling (409
/// `ObjectIsBeingDeleted` in a purge window, `ObjectIsBeingRecovered`) until the deadline.
/// Every verb that writes (restore, copy, sync) waits through this one loop.
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
fn describe(err: &VaultError) -> String {
    match err.conflict_reason() {
        Some(crate::vault::ConflictReason::DeletedButRecoverable) => {
            format!("{err}; the name is soft-deleted in the target: pass --recover-deleted")
        }
        Some(crate::vault::ConflictReason::BeingDeleted) => format!(
            "{err}; still being purged after {} s: run the restore again later",
            SETTLE_DEADLINE.as_secs()
        ),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::item::{ExportHead, ItemHead};
    use age::secrecy::SecretBox;

    fn certificate(content_type: &str, bytes: &[u8]) -> ItemData {
        let mut head = ItemHead::new(Kind::Certificate, "web");
        head.export = Some(ExportHead {
            content_type: content_type.into(),
            version: "v1".into(),
        });
        let mut item = ItemData::new(head);
        item.export = Some(SecretBox::from(bytes.to_vec().into_boxed_slice()));
        item.policy = Some(serde_json::json!({"key_props": {"exportable": true}}));
        item
    }

    #[test]
    fn pfx_goes_back_to_standard_base64_and_pem_stays_text() {
        let pfx = certificate_import(&certificate(
            crate::archive::layout::PKCS12_CONTENT_TYPE,
            &[0xfb, 0xff, 0x00],
        ))
        .unwrap();
        assert_eq!(pfx.value.expose_secret(), "+/8A");
        assert_eq!(pfx.content_type, "application/x-pkcs12");
        assert!(pfx.password.is_none());
        let pem_text = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
        let pem = certificate_import(&certificate(
            crate::archive::layout::PEM_CONTENT_TYPE,
            pem_text.as_bytes(),
        ))
        .unwrap();
        assert_eq!(pem.value.expose_secret(), pem_text);
        assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
        let bad = certificate_import(&certificate(
            crate::archive::layout::PEM_CONTENT_TYPE,
            &[0xff, 0xfe],
        ));
        assert!(bad.is_err());
    }
}
