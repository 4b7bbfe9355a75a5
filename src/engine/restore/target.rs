//! The target side of a plan: one listing of the target's live and soft-deleted items
//! ([`TargetListing`]), a look at each item present on both sides ([`LiveView`], read by
//! [`inspect_live`] with digests, never values kept), and where each source item stands
//! ([`target_state`]). Generic over [`VaultReader`]: any store that answers these reads is a
//! target.

use std::collections::{BTreeMap, HashMap, HashSet};

use age::secrecy::ExposeSecret;
use futures::StreamExt;

use super::plan::{TargetState, compare};
use crate::engine::Filter;
use crate::engine::item::{Fingerprint, ItemHead, content_digest, sha1_of, value_digest};
use crate::model::ItemKind as Kind;
use crate::vault::{
    Attributes, CertificateProperties, DeletedItem, KeyProperties, SecretProperties, VaultError,
    VaultReader,
};

/// An item as the target vault's lists show it.
#[derive(Debug, Clone)]
pub enum LiveProps {
    /// A secret (not a managed one).
    Secret(SecretProperties),
    /// A key (not a managed one).
    Key(KeyProperties),
    /// A certificate.
    Certificate(CertificateProperties),
}

impl LiveProps {
    /// The item's name in the target.
    pub fn name(&self) -> &str {
        match self {
            LiveProps::Secret(p) => &p.name,
            LiveProps::Key(p) => &p.name,
            LiveProps::Certificate(p) => &p.name,
        }
    }
}

/// One listing of the target: live and soft-deleted items of the kinds in scope.
#[derive(Debug, Default)]
pub struct TargetListing {
    /// Live items by kind and lower-case name.
    pub live: HashMap<(Kind, String), LiveProps>,
    /// Soft-deleted items by kind and lower-case name.
    pub deleted: HashMap<(Kind, String), DeletedItem>,
    /// Lower-case names of secrets a certificate manages (a secret of that name cannot be
    /// written).
    pub managed_secrets: HashSet<String>,
    /// What could not be listed (soft-deleted lists are informational).
    pub notes: Vec<String>,
}

/// Lists the target once: every live item and every soft-deleted item of the kinds in scope.
pub async fn list_target<V: VaultReader, F: Filter + ?Sized>(
    vault: &V,
    scope: &F,
) -> Result<TargetListing, VaultError> {
    let mut listing = TargetListing::default();
    if scope.includes_kind(Kind::Secret) || scope.includes_kind(Kind::Certificate) {
        let mut secrets = vault.list_secrets();
        while let Some(props) = secrets.next().await {
            let props = props?;
            if props.managed {
                listing
                    .managed_secrets
                    .insert(props.name.to_ascii_lowercase());
            } else if scope.includes_kind(Kind::Secret) {
                let key = (Kind::Secret, props.name.to_ascii_lowercase());
                listing.live.insert(key, LiveProps::Secret(props));
            }
        }
    }
    if scope.includes_kind(Kind::Key) {
        let mut keys = vault.list_keys();
        while let Some(props) = keys.next().await {
            let props = props?;
            if !props.managed {
                let key = (Kind::Key, props.name.to_ascii_lowercase());
                listing.live.insert(key, LiveProps::Key(props));
            }
        }
    }
    if scope.includes_kind(Kind::Certificate) {
        let mut certificates = vault.list_certificates();
        while let Some(props) = certificates.next().await {
            let props = props?;
            let key = (Kind::Certificate, props.name.to_ascii_lowercase());
            listing.live.insert(key, LiveProps::Certificate(props));
        }
    }
    for kind in Kind::ALL {
        if !scope.includes_kind(kind) {
            continue;
        }
        let mut deleted = vault.list_deleted(kind);
        while let Some(item) = deleted.next().await {
            match item {
                Ok(item) if !item.managed => {
                    let key = (kind, item.name.to_ascii_lowercase());
                    listing.deleted.insert(key, item);
                }
                Ok(_) => {}
                Err(err) => {
                    // Without the deleted list a soft-deleted name shows up as a 409 when
                    // written, which is reported for that item: not a reason to stop.
                    listing.notes.push(format!(
                        "soft-deleted {}s could not be listed: {err}",
                        kind.as_str()
                    ));
                    break;
                }
            }
        }
    }
    Ok(listing)
}

/// The target's current state of one item, read to compare it with the archive.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    /// The current version id, when it could be read.
    pub version: Option<String>,
    /// Digest of the current value (secrets), or SHA-1 thumbprint of the certificate.
    pub value: Option<Vec<u8>>,
    /// Content type (secrets).
    pub content_type: Option<String>,
    /// Tags of the current version.
    pub tags: BTreeMap<String, String>,
    /// Attributes of the current version.
    pub attributes: Attributes,
    /// Content digests of every live version, oldest first (secrets with several archived
    /// versions, read only when the current one differs). `None` for an unreadable version.
    pub history: Option<Vec<Option<Fingerprint>>>,
}

/// Reads the target's current state of `item` (one or two requests; every version of a
/// secret when `item` replays several and the current one differs).
pub async fn inspect_live<V: VaultReader>(
    vault: &V,
    item: &ItemHead,
    props: &LiveProps,
) -> Result<LiveView, VaultError> {
    match props {
        LiveProps::Secret(p) => {
            let mut view = LiveView {
                content_type: p.content_type.clone(),
                tags: p.tags.clone(),
                attributes: p.attributes.clone(),
                ..LiveView::default()
            };
            match vault.get_secret(&p.name, None).await {
                Ok(value) => {
                    view.version = value.properties.version.clone();
                    view.value = Some(value_digest(value.value.expose_secret()).to_vec());
                    view.content_type = value.properties.content_type.clone();
                    view.tags = value.properties.tags.clone();
                    view.attributes = value.properties.attributes.clone();
                }
                // A disabled secret's value cannot be read: compared by version only, the
                // newest of its versions.
                Err(err) if err.is_secret_disabled() => {
                    let versions = vault.list_secret_versions(&p.name).await?;
                    view.version = versions.last().and_then(|v| v.version.clone());
                }
                Err(err) => return Err(err),
            }
            let differs = compare(item, &view).is_some_and(|c| !c.is_empty());
            if item.versions.len() > 1 && differs {
                view.history = Some(secret_history(vault, &p.name).await?);
            }
            Ok(view)
        }
        LiveProps::Key(p) => {
            let bundle = vault.get_key(&p.name, None).await?;
            Ok(LiveView {
                version: bundle.properties.version.clone(),
                tags: p.tags.clone(),
                attributes: p.attributes.clone(),
                ..LiveView::default()
            })
        }
        LiveProps::Certificate(p) => {
            let bundle = vault.get_certificate(&p.name, None).await?;
            Ok(LiveView {
                version: bundle.properties.version.clone(),
                value: Some(sha1_of(&bundle.cer)),
                tags: bundle.properties.tags.clone(),
                attributes: bundle.properties.attributes.clone(),
                ..LiveView::default()
            })
        }
    }
}

/// Content digests of every live version of a secret, oldest first.
async fn secret_history<V: VaultReader>(
    vault: &V,
    name: &str,
) -> Result<Vec<Option<Fingerprint>>, VaultError> {
    let versions = vault.list_secret_versions(name).await?;
    let mut history = Vec::with_capacity(versions.len());
    for props in versions {
        let Some(version) = props.version.as_deref() else {
            history.push(None);
            continue;
        };
        if props.attributes.enabled == Some(false) {
            history.push(None);
            continue;
        }
        match vault.get_secret(name, Some(version)).await {
            Ok(value) => history.push(Some(content_digest(
                value.value.expose_secret(),
                value.properties.content_type.as_deref(),
                &value.properties.tags,
                &value.properties.attributes,
            ))),
            Err(err) if err.is_secret_disabled() => history.push(None),
            Err(err) => return Err(err),
        }
    }
    Ok(history)
}

/// Reads the target's state of every source item present there, concurrently; `None` for
/// an item the target does not hold live.
pub async fn inspect_all<V: VaultReader>(
    vault: &V,
    items: &[ItemHead],
    listing: &TargetListing,
    concurrency: usize,
) -> Vec<Option<Result<LiveView, String>>> {
    futures::stream::iter(items.iter())
        .map(|item| async move {
            let props = listing.live.get(&item.key())?;
            Some(
                inspect_live(vault, item, props)
                    .await
                    .map_err(|e| e.to_string()),
            )
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// Where one item stands in the target, from the listing and its inspection.
pub fn target_state<'a>(
    item: &ItemHead,
    listing: &TargetListing,
    view: &'a Option<Result<LiveView, String>>,
) -> TargetState<'a> {
    let key = item.key();
    match view {
        Some(Ok(view)) => TargetState::Live(Ok(view)),
        Some(Err(reason)) => TargetState::Live(Err(reason.as_str())),
        None if listing.deleted.contains_key(&key) => TargetState::Deleted,
        None if item.kind == Kind::Secret && listing.managed_secrets.contains(&key.1) => {
            TargetState::ManagedName
        }
        None => TargetState::Absent,
    }
}
