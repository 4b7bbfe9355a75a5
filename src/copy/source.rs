//! A live vault as the source of a copy: its items in scope ([`list_source`]) and each item
//! read into the engine's item model ([`capture`] → [`ItemData`], its head with digests and
//! its values and blob), so the engine's restore planner decides a copy exactly as it decides
//! a restore.
//!
//! Managed keys and secrets (a certificate's) are never items of their own: they travel with
//! their certificate (its native blob, or its exportable PFX/PEM read from the managed secret).
//! Only what the copy can use is read: the blob when a native write may happen, values always
//! for secrets (to compare and to write plainly), every version only with `--all-versions`.

use std::sync::Arc;

use age::secrecy::{ExposeSecret, SecretBox, SecretString};
use base64::Engine;
use futures::StreamExt;
use zeroize::Zeroizing;

use crate::archive::layout::PEM_CONTENT_TYPE;
use crate::archive::{Attributes as ArchivedAttributes, Kind, SecretRecord};
use crate::commands::scope::Scope;
use crate::engine::capture::{ListingProgress, PKCS12, Work, export_bytes, work_stream};
use crate::engine::item::{BlobHead, ExportHead, ItemData, ItemHead, VersionHead, sha1_of};
use crate::kv::store::pkcs12_to_pem;
use crate::vault::{Attributes, SecretVersionValue, VaultError, VaultReader};

/// One item of the source, as its list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHead {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

/// Lists the source's items in scope: secrets (managed ones left out), keys (managed ones
/// left out), certificates; sorted by kind then name. A list that fails fails the copy.
///
/// The listing is the engine's ([`work_stream`]), the one backup uses, so a copy and a backup
/// of the same vault and scope see the same items.
pub async fn list_source<V: VaultReader>(
    vault: &V,
    scope: &Scope,
) -> Result<Vec<SourceHead>, VaultError> {
    let listing = Arc::new(ListingProgress::default());
    let mut work = work_stream(vault, scope, &listing);
    let mut heads = Vec::new();
    while let Some(listed) = work.next().await {
        let (kind, name) = match listed {
            Work::Secret(props) => (Kind::Secret, props.name),
            Work::Key(props) => (Kind::Key, props.name),
            Work::Certificate(props) => (Kind::Certificate, props.name),
            Work::ListFailed(_, err) => return Err(err),
        };
        heads.push(SourceHead { kind, name });
    }
    heads.sort_by(|a, b| {
        (a.kind, a.name.to_ascii_lowercase()).cmp(&(b.kind, b.name.to_ascii_lowercase()))
    });
    Ok(heads)
}

/// What [`capture`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The native backup blob (a native write may happen).
    pub blob: bool,
    /// Secret values and certificates' exportable keys (a plain write may happen).
    pub plain: bool,
    /// Every secret version by value instead of the current one only.
    pub all_versions: bool,
    /// A certificate's tags and attributes even when its blob is not read: a KV target, which
    /// takes no blob, takes the certificate's tags from them.
    pub metadata: bool,
}

/// Reads one source item. What cannot be read is recorded in `skipped` (the item is then
/// planned from what was read, or reported as impossible); the item vanishing between the
/// list and the read is such a case too.
pub async fn capture<V: VaultReader>(vault: &V, head: &SourceHead, want: Want) -> ItemData {
    let mut item = ItemData::new(ItemHead::new(head.kind, &head.name));
    let mut problems: Vec<String> = Vec::new();
    match head.kind {
        Kind::Secret => capture_secret(vault, &mut item, want, &mut problems).await,
        Kind::Key => capture_key(vault, &mut item, want, &mut problems).await,
        Kind::Certificate => capture_certificate(vault, &mut item, want, &mut problems).await,
    }
    if !problems.is_empty() {
        item.head.skipped = Some(problems.join("; "));
    }
    item.head.versions = item.versions.iter().map(VersionHead::of).collect();
    item
}

async fn capture_secret<V: VaultReader>(
    vault: &V,
    item: &mut ItemData,
    want: Want,
    problems: &mut Vec<String>,
) {
    let name = item.head.name.clone();
    // The current version is always read: it gives the version id, tags and attributes the
    // plan compares, and the value a plain write needs.
    let current = match vault.get_secret(&name, None).await {
        Ok(value) => Some(value),
        Err(err) if err.is_secret_disabled() => {
            problems.push(
                "the current version is disabled: Azure does not let its value be read (403 \
                 SecretDisabled), only a native copy carries it"
                    .to_owned(),
            );
            None
        }
        Err(err) => {
            problems.push(format!("cannot read it from the source: {err}"));
            return;
        }
    };
    let current_props = current.as_ref().map(|c| c.properties.clone());
    if want.plain
        && let Some(current) = current
    {
        if want.all_versions {
            match vault.list_secret_versions(&name).await {
                Ok(versions) => {
                    let current_version = current.properties.version.clone();
                    for props in versions {
                        let Some(version) = props.version.clone() else {
                            continue;
                        };
                        if Some(&version) == current_version.as_ref() {
                            continue;
                        }
                        if props.attributes.enabled == Some(false) {
                            problems_note_disabled(problems, &version);
                            continue;
                        }
                        match vault.get_secret(&name, Some(&version)).await {
                            Ok(value) => item.versions.push(record(value, false)),
                            Err(err) if err.is_secret_disabled() => {
                                problems_note_disabled(problems, &version)
                            }
                            Err(err) => problems.push(format!("version {version}: {err}")),
                        }
                    }
                }
                Err(err) => problems.push(format!("version list: {err}")),
            }
        }
        item.versions.push(record(current, true));
        // Oldest first, the current version last, as an archive orders them.
        item.sort_versions();
    }
    if want.blob {
        match vault.backup(Kind::Secret, &name).await {
            Ok(blob) => {
                let props = match current_props {
                    Some(props) => Some(props),
                    None => vault
                        .list_secret_versions(&name)
                        .await
                        .ok()
                        .and_then(|v| v.into_iter().last()),
                };
                item.blob = Some(blob);
                item.head.blob = Some(BlobHead {
                    version: props.as_ref().and_then(|p| p.version.clone()),
                    tags: props.as_ref().map(|p| p.tags.clone()).unwrap_or_default(),
                    attributes: archived(props.as_ref().map(|p| &p.attributes)),
                    content_type: props.and_then(|p| p.content_type),
                });
            }
            Err(err) => problems.push(format!("native backup: {err}")),
        }
    }
}

fn problems_note_disabled(problems: &mut Vec<String>, version: &str) {
    problems.push(format!(
        "version {version} is disabled: its value cannot be read (403 SecretDisabled)"
    ));
}

async fn capture_key<V: VaultReader>(
    vault: &V,
    item: &mut ItemData,
    want: Want,
    problems: &mut Vec<String>,
) {
    if !want.blob {
        return;
    }
    let bundle = match vault.get_key(&item.head.name, None).await {
        Ok(bundle) => bundle,
        Err(err) => {
            problems.push(format!("cannot read it from the source: {err}"));
            return;
        }
    };
    match vault.backup(Kind::Key, &item.head.name).await {
        Ok(blob) => {
            item.blob = Some(blob);
            item.head.blob = Some(BlobHead {
                version: bundle.properties.version.clone(),
                tags: bundle.properties.tags.clone(),
                attributes: archived(Some(&bundle.properties.attributes)),
                content_type: None,
            })
        }
        Err(err) => problems.push(format!("native backup: {err}")),
    }
}

async fn capture_certificate<V: VaultReader>(
    vault: &V,
    item: &mut ItemData,
    want: Want,
    problems: &mut Vec<String>,
) {
    let name = item.head.name.clone();
    let mut bundle = match vault.get_certificate(&name, None).await {
        Ok(bundle) => bundle,
        Err(err) => {
            problems.push(format!("cannot read it from the source: {err}"));
            return;
        }
    };
    if bundle.policy.is_none() {
        bundle.policy = vault.get_certificate_policy(&name).await.ok();
    }
    item.head.thumbprint = Some(sha1_of(&bundle.cer));
    item.policy = bundle.policy.clone();
    if want.plain {
        if bundle.key_exportable() {
            export(vault, item, &bundle, problems).await;
        } else {
            problems.push(
                "its private key is not exportable (policy key_props.exportable is false): only \
                 a native copy carries it"
                    .to_owned(),
            );
        }
    }
    if want.metadata && !want.blob {
        item.head.blob = Some(BlobHead {
            version: bundle.properties.version.clone(),
            tags: bundle.properties.tags.clone(),
            attributes: archived(Some(&bundle.properties.attributes)),
            content_type: None,
        });
    }
    if want.blob {
        match vault.backup(Kind::Certificate, &name).await {
            Ok(blob) => {
                item.blob = Some(blob);
                item.head.blob = Some(BlobHead {
                    version: bundle.properties.version.clone(),
                    tags: bundle.properties.tags.clone(),
                    attributes: archived(Some(&bundle.properties.attributes)),
                    content_type: None,
                })
            }
            Err(err) => problems.push(format!("native backup: {err}")),
        }
    }
}

/// Reads the certificate with its private key from its managed secret.
async fn export<V: VaultReader>(
    vault: &V,
    item: &mut ItemData,
    bundle: &crate::vault::CertificateBundle,
    problems: &mut Vec<String>,
) {
    let Some(version) = bundle.secret_version() else {
        problems.push("the certificate names no managed secret".to_owned());
        return;
    };
    let secret = match vault.get_secret(&item.head.name, Some(&version)).await {
        Ok(secret) => secret,
        Err(err) => {
            problems.push(format!("private key (managed secret): {err}"));
            return;
        }
    };
    let content_type = secret
        .properties
        .content_type
        .clone()
        .or_else(|| bundle.content_type.clone())
        .unwrap_or_else(|| PKCS12.to_owned());
    // Decoded as backup decodes it, so a copy writes what a restore of a backup would.
    match export_bytes(&content_type, &secret.value) {
        Some(mut bytes) => {
            let bytes = std::mem::take(&mut *bytes);
            item.export = Some(SecretBox::new(bytes.into_boxed_slice()));
            item.head.export = Some(ExportHead {
                content_type,
                version,
            });
        }
        None => problems.push(format!(
            "private key: the managed secret is not valid {content_type}"
        )),
    }
}

/// A captured certificate as the one secret a KV mount holds for it: its certificate chain
/// and private key as PEM text (a PKCS#12 export converted), content type
/// `application/x-pem-file`, the certificate's tags and `enabled`. A KV mount lists no
/// certificates, so only as a secret does a rerun find it there and compare it; the written
/// secret is what `KvStore::import_certificate` writes. A certificate without an exportable
/// key is given back as it is, and one whose export is not readable as PEM without its
/// export, with why (the plan reports either as impossible).
pub fn certificate_as_pem_secret(mut item: ItemData) -> ItemData {
    let (Some(export), Some(bytes)) = (&item.head.export, &item.export) else {
        return item;
    };
    let bytes = bytes.expose_secret();
    let pem = if export.content_type == PEM_CONTENT_TYPE {
        std::str::from_utf8(bytes)
            .map(|text| Zeroizing::new(text.to_owned()))
            .map_err(|_| "the PEM export is not text".to_owned())
    } else {
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes));
        pkcs12_to_pem(&encoded, "").map_err(|err| err.to_string())
    };
    let pem = match pem {
        Ok(pem) => pem,
        Err(why) => {
            item.head.export = None;
            item.export = None;
            item.head.skipped = Some(format!("its export cannot be stored as PEM: {why}"));
            return item;
        }
    };
    let blob = item.head.blob.clone().unwrap_or_default();
    let mut secret = ItemData::new(ItemHead::new(Kind::Secret, &item.head.name));
    secret.versions.push(SecretRecord {
        name: item.head.name.clone(),
        version: blob.version.unwrap_or_default(),
        value: SecretString::from(pem.as_str().to_owned()),
        content_type: Some(PEM_CONTENT_TYPE.to_owned()),
        tags: blob.tags,
        attributes: ArchivedAttributes {
            enabled: blob.attributes.enabled,
            ..ArchivedAttributes::default()
        },
        current: true,
    });
    secret.head.versions = secret.versions.iter().map(VersionHead::of).collect();
    secret
}

fn record(value: SecretVersionValue, current: bool) -> SecretRecord {
    let SecretVersionValue { properties, value } = value;
    SecretRecord {
        name: properties.name,
        version: properties.version.unwrap_or_default(),
        value,
        content_type: properties.content_type,
        tags: properties.tags,
        attributes: archived(Some(&properties.attributes)),
        current,
    }
}

fn archived(attributes: Option<&Attributes>) -> ArchivedAttributes {
    let Some(a) = attributes else {
        return ArchivedAttributes::default();
    };
    ArchivedAttributes {
        enabled: a.enabled,
        not_before: a.not_before,
        expires: a.expires,
        created: a.created,
        updated: a.updated,
    }
}
