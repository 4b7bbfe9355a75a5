//! The certificate routes: create (self-signed; `202` with a pending operation that reads
//! `completed` when polled, and can be cancelled or deleted), import (PFX with its password, or
//! PEM with a CA-signed leaf and its chain), get, list and list versions, update, policy
//! get/update (with the 2026-04-01 `platformManaged`), delete, deleted get/list, recover, purge,
//! backup and restore; and the vault's certificate issuers and contacts.
//!
//! Every certificate version owns a key and a secret of the same name and version, marked
//! `managed: true`: the key holds the private key, the secret the PFX (standard base64,
//! `application/x-pkcs12`) or PEM text (`application/x-pem-file`). They are listed by `/keys`
//! and `/secrets`, refuse direct changes (403), and travel with the certificate: deleting,
//! recovering or purging it does the same to them, its backup blob carries them and its restore
//! recreates all three with their version ids.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::backup::{BackedUpObject, BackupContents};
use super::crypto::{
    CertificateBundle, CertificateContentType, KeyMaterial, KeySpec, KeyType, SelfSignedSpec,
    certificate_facts, issue_self_signed, x5t,
};
use super::error::ApiError;
use super::http::{JsonBody, json_response, ok_json};
use super::keys::{StoredKey, apply_attributes, crypto_error, key_spec};
use super::secrets::{AttributesIn, validate_name};
use super::state::{AppState, VaultCtx};
use super::store::{
    DeletedObject, Kind, Payload, Redacted, StoreError, StoredObject, Timing, VaultStore, Version,
};

const KIND: Kind = Kind::Certificate;
/// The kinds a certificate spans, the certificate first.
const FAMILY: [Kind; 3] = [Kind::Certificate, Kind::Key, Kind::Secret];

/// The certificate routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/certificates", get(certificates_list))
        .route("/certificates/restore", post(certificates_restore))
        .route("/certificates/issuers", get(issuers_list))
        .route(
            "/certificates/issuers/{issuer}",
            get(issuers_get)
                .put(issuers_set)
                .patch(issuers_update)
                .delete(issuers_delete),
        )
        .route(
            "/certificates/contacts",
            get(contacts_get).put(contacts_set).delete(contacts_delete),
        )
        .route(
            "/certificates/{name}",
            get(certificates_get_latest)
                .patch(certificates_update_latest)
                .delete(certificates_delete),
        )
        .route(
            "/certificates/{name}/",
            get(certificates_get_latest).patch(certificates_update_latest),
        )
        .route("/certificates/{name}/create", post(certificates_create))
        .route("/certificates/{name}/import", post(certificates_import))
        .route("/certificates/{name}/backup", post(certificates_backup))
        .route("/certificates/{name}/versions", get(certificates_versions))
        .route(
            "/certificates/{name}/policy",
            get(certificates_policy_get).patch(certificates_policy_update),
        )
        .route(
            "/certificates/{name}/pending",
            get(certificates_pending_get)
                .patch(certificates_pending_update)
                .delete(certificates_pending_delete),
        )
        .route(
            "/certificates/{name}/{version}",
            get(certificates_get).patch(certificates_update),
        )
        .route("/deletedcertificates", get(deleted_certificates_list))
        .route(
            "/deletedcertificates/{name}",
            get(deleted_certificates_get).delete(deleted_certificates_purge),
        )
        .route(
            "/deletedcertificates/{name}/recover",
            post(deleted_certificates_recover),
        )
}

// ----- policy ---------------------------------------------------------------------------------

fn section<'a>(policy: &'a Value, name: &str) -> Option<&'a Map<String, Value>> {
    policy.get(name).and_then(Value::as_object)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A policy in Key Vault's shape with every default filled in, from what a client sent.
/// `issuer` is the issuer name to use when the request names none.
fn normalize_policy(input: &Value, issuer: &str, now_s: i64) -> Result<Value, ApiError> {
    let empty = Map::new();
    let key_in = section(input, "key_props").unwrap_or(&empty);
    let kty_text = key_in.get("kty").and_then(Value::as_str).unwrap_or("RSA");
    let kty = KeyType::parse(kty_text).map_err(crypto_error)?;
    let mut key_props = Map::new();
    key_props.insert(
        "exportable".into(),
        json!(
            key_in
                .get("exportable")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        ),
    );
    key_props.insert("kty".into(), json!(kty.as_str()));
    let spec = key_spec(
        kty,
        key_in
            .get("key_size")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        key_in.get("crv").and_then(Value::as_str),
    )?;
    match spec {
        KeySpec::Rsa(bits) => {
            key_props.insert("key_size".into(), json!(bits));
        }
        KeySpec::Ec(curve) => {
            key_props.insert("key_size".into(), json!(curve.bits()));
            key_props.insert("crv".into(), json!(curve.as_str()));
        }
    }
    key_props.insert(
        "reuse_key".into(),
        json!(
            key_in
                .get("reuse_key")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
    );

    let content_type = section(input, "secret_props")
        .and_then(|s| s.get("contentType"))
        .and_then(Value::as_str)
        .unwrap_or("application/x-pkcs12");
    if CertificateContentType::parse(content_type).is_none() {
        return Err(ApiError::bad_parameter(format!(
            "The content type {content_type} is not supported; use application/x-pkcs12 or application/x-pem-file."
        )));
    }

    let x509_in = section(input, "x509_props").unwrap_or(&empty);
    let mut x509 = Map::new();
    let subject = x509_in.get("subject").and_then(Value::as_str).unwrap_or("");
    let sans = x509_in.get("sans").and_then(Value::as_object);
    if subject.is_empty() && sans.is_none() {
        return Err(ApiError::bad_parameter(
            "The certificate policy needs a subject or subject alternative names.",
        ));
    }
    x509.insert("subject".into(), json!(subject));
    if let Some(sans) = sans {
        x509.insert("sans".into(), Value::Object(sans.clone()));
    }
    x509.insert("ekus".into(), json!(strings(x509_in.get("ekus"))));
    let key_usage = match x509_in.get("key_usage") {
        Some(v) => strings(Some(v)),
        None if kty.is_rsa() => vec!["digitalSignature".into(), "keyEncipherment".into()],
        None => vec!["digitalSignature".into()],
    };
    x509.insert("key_usage".into(), json!(key_usage));
    x509.insert(
        "validity_months".into(),
        json!(
            x509_in
                .get("validity_months")
                .and_then(Value::as_u64)
                .unwrap_or(12)
        ),
    );
    x509.insert("basic_constraints".into(), json!({"ca": false}));

    let lifetime_actions = input.get("lifetime_actions").cloned().unwrap_or_else(|| {
        json!([{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "AutoRenew"}}])
    });
    let issuer_name = section(input, "issuer")
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(issuer);
    let enabled = section(input, "attributes")
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut policy = json!({
        "key_props": key_props,
        "secret_props": {"contentType": content_type},
        "x509_props": x509,
        "lifetime_actions": lifetime_actions,
        "issuer": {"name": issuer_name},
        "attributes": {"enabled": enabled, "created": now_s, "updated": now_s},
    });
    if let Some(platform) = platform_managed(input)? {
        policy["platformManaged"] = platform;
    }
    Ok(policy)
}

/// The 2026-04-01 `CertificatePolicy.platformManaged` of a policy a client sent, checked
/// against the spec's `PlatformManaged` (`certificateUsage` required, `metadata` a free-form
/// object) and kept as sent; absent or `null` is `None`. The vault does nothing with it but
/// keep it: Azure describes it as "currently intended for internal use only".
fn platform_managed(input: &Value) -> Result<Option<Value>, ApiError> {
    let Some(platform) = input.get("platformManaged").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let usage = platform
        .get("certificateUsage")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_parameter(
                "The certificate policy's platformManaged.certificateUsage is required.",
            )
        })?;
    let mut kept = json!({ "certificateUsage": usage });
    match platform.get("metadata") {
        None | Some(Value::Null) => {}
        Some(metadata @ Value::Object(_)) => kept["metadata"] = metadata.clone(),
        Some(_) => {
            return Err(ApiError::bad_parameter(
                "The certificate policy's platformManaged.metadata must be a JSON object.",
            ));
        }
    }
    Ok(Some(kept))
}

/// The policy an imported certificate gets: read from its key and leaf, issuer `Unknown`, the
/// content type of what was imported (or of the policy sent along).
fn imported_policy(
    bundle: &CertificateBundle,
    requested: Option<&Value>,
    content_type: CertificateContentType,
    hsm: bool,
    now_s: i64,
) -> Result<Value, ApiError> {
    let facts = certificate_facts(bundle.leaf()).map_err(crypto_error)?;
    let (kty, key_size, crv) = match bundle.key.spec() {
        KeySpec::Rsa(bits) => (KeyType::Rsa.with_hsm(hsm), bits, None),
        KeySpec::Ec(curve) => (KeyType::Ec.with_hsm(hsm), curve.bits(), Some(curve)),
    };
    let mut key_props = json!({
        "exportable": requested
            .and_then(|p| p.pointer("/key_props/exportable"))
            .and_then(Value::as_bool)
            .unwrap_or(true),
        "kty": kty.as_str(),
        "key_size": key_size,
        "reuse_key": false,
    });
    if let Some(curve) = crv {
        key_props["crv"] = json!(curve.as_str());
    }
    let mut x509 = json!({
        "subject": facts.subject,
        "ekus": facts.ekus,
        "key_usage": facts.key_usage,
        "validity_months": facts.validity_months,
        "basic_constraints": {"ca": facts.is_ca},
    });
    if !facts.dns_names.is_empty() || !facts.emails.is_empty() {
        let mut sans = Map::new();
        if !facts.dns_names.is_empty() {
            sans.insert("dns_names".into(), json!(facts.dns_names));
        }
        if !facts.emails.is_empty() {
            sans.insert("emails".into(), json!(facts.emails));
        }
        x509["sans"] = Value::Object(sans);
    }
    let mut policy = json!({
        "key_props": key_props,
        "secret_props": {"contentType": content_type.as_str()},
        "x509_props": x509,
        "lifetime_actions": requested
            .and_then(|p| p.get("lifetime_actions"))
            .cloned()
            .unwrap_or_else(|| json!([])),
        "issuer": {"name": "Unknown"},
        "attributes": {"enabled": true, "created": now_s, "updated": now_s},
    });
    if let Some(platform) = requested.map(platform_managed).transpose()?.flatten() {
        policy["platformManaged"] = platform;
    }
    Ok(policy)
}

fn content_type_of(policy: &Value) -> CertificateContentType {
    policy
        .pointer("/secret_props/contentType")
        .and_then(Value::as_str)
        .and_then(CertificateContentType::parse)
        .unwrap_or(CertificateContentType::Pkcs12)
}

fn policy_body(ctx: &VaultCtx, name: &str, policy: &Value) -> Value {
    let mut map = Map::new();
    map.insert(
        "id".into(),
        json!(format!("{}/policy", ctx.object_id(KIND, name, None))),
    );
    if let Value::Object(rest) = policy {
        map.extend(rest.clone());
    }
    Value::Object(map)
}

// ----- rendering ------------------------------------------------------------------------------

/// The certificate version's payload: the leaf and its issuers, DER in standard base64.
fn certificate_payload(bundle: &CertificateBundle) -> Payload {
    let chain: Vec<String> = bundle.chain.iter().map(|c| STANDARD.encode(c)).collect();
    Payload::Certificate(Redacted(json!({ "chain": chain })))
}

fn leaf_of(version: &Version) -> Result<Vec<u8>, ApiError> {
    match &version.payload {
        Payload::Certificate(Redacted(value)) => value
            .pointer("/chain/0")
            .and_then(Value::as_str)
            .and_then(|text| STANDARD.decode(text).ok())
            .ok_or_else(|| ApiError::internal("a stored certificate version cannot be read")),
        _ => Err(ApiError::internal(
            "a certificate version holds no certificate",
        )),
    }
}

fn certificate_bundle(
    ctx: &VaultCtx,
    object: &StoredObject,
    version: &Version,
) -> Result<Map<String, Value>, ApiError> {
    let name = &object.name;
    let leaf = leaf_of(version)?;
    let mut map = Map::new();
    map.insert(
        "id".into(),
        json!(ctx.object_id(KIND, name, Some(&version.id))),
    );
    map.insert(
        "kid".into(),
        json!(ctx.object_id(Kind::Key, name, Some(&version.id))),
    );
    map.insert(
        "sid".into(),
        json!(ctx.object_id(Kind::Secret, name, Some(&version.id))),
    );
    map.insert("x5t".into(), json!(x5t(&leaf)));
    map.insert("cer".into(), json!(STANDARD.encode(&leaf)));
    map.insert(
        "attributes".into(),
        Value::Object(ctx.attributes(&version.attributes)),
    );
    map.insert(
        "tags".into(),
        json!(version.tags.clone().unwrap_or_default()),
    );
    if let Some(policy) = object.meta.get("policy") {
        map.insert("policy".into(), policy_body(ctx, name, policy));
    }
    if object.meta.get("pending").is_some() {
        map.insert(
            "pending".into(),
            json!({"id": format!("{}/pending", ctx.object_id(KIND, name, None))}),
        );
    }
    Ok(map)
}

fn item(ctx: &VaultCtx, name: &str, version: &Version, versioned: bool) -> Value {
    let mut map = Map::new();
    let id = if versioned {
        ctx.object_id(KIND, name, Some(&version.id))
    } else {
        ctx.object_id(KIND, name, None)
    };
    map.insert("id".into(), json!(id));
    if let Ok(leaf) = leaf_of(version) {
        map.insert("x5t".into(), json!(x5t(&leaf)));
    }
    map.insert(
        "attributes".into(),
        Value::Object(ctx.attributes(&version.attributes)),
    );
    map.insert(
        "tags".into(),
        json!(version.tags.clone().unwrap_or_default()),
    );
    Value::Object(map)
}

fn deleted_bundle(ctx: &VaultCtx, deleted: &DeletedObject, full: bool) -> Result<Value, ApiError> {
    let name = &deleted.object.name;
    let mut map = Map::new();
    map.insert("recoveryId".into(), json!(ctx.recovery_id(KIND, name)));
    map.insert("deletedDate".into(), json!(deleted.deleted_date));
    map.insert(
        "scheduledPurgeDate".into(),
        json!(deleted.scheduled_purge_date),
    );
    if let Some(latest) = deleted.object.latest() {
        if full {
            map.extend(certificate_bundle(ctx, &deleted.object, latest)?);
        } else if let Value::Object(rest) = item(ctx, name, latest, false) {
            map.extend(rest);
        }
    }
    Ok(Value::Object(map))
}

// ----- creating versions ----------------------------------------------------------------------

/// Refuses a new certificate version when a key or secret of the same name exists that the
/// certificate does not own, or when the name is soft-deleted or settling in any of the three.
fn check_family_free(ctx: &VaultCtx, name: &str) -> Result<(), ApiError> {
    let t = ctx.timing();
    let mut store = ctx.lock();
    for kind in FAMILY {
        store
            .check_name_free(kind, name, t)
            .map_err(|e| ctx.store_error(kind, name, e))?;
        if kind != KIND
            && let Ok(object) = store.object(kind, name, t)
            && object.latest().is_some_and(|v| !v.managed)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "A {} named {name} already exists and is not managed by a certificate; a certificate cannot take its name.",
                    kind.noun()
                ),
            ));
        }
    }
    Ok(())
}

/// The three versions a certificate version is made of, sharing one version id.
struct Family {
    certificate: Version,
    key: Version,
    secret: Version,
}

fn family(
    bundle: &CertificateBundle,
    policy: &Value,
    enabled: bool,
    tags: Option<BTreeMap<String, String>>,
    now_s: i64,
) -> Result<Family, ApiError> {
    let facts = certificate_facts(bundle.leaf()).map_err(crypto_error)?;
    let content_type = content_type_of(policy);
    let exportable = policy
        .pointer("/key_props/exportable")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let kty = policy
        .pointer("/key_props/kty")
        .and_then(Value::as_str)
        .and_then(|k| KeyType::parse(k).ok())
        .unwrap_or(if bundle.key.is_rsa() {
            KeyType::Rsa
        } else {
            KeyType::Ec
        });
    // A non-exportable key stays in the vault: the secret then carries the certificates only.
    let value = if exportable {
        bundle.secret_value(content_type)
    } else {
        bundle.public_secret_value(content_type)
    }
    .map_err(crypto_error)?;

    let mut certificate = Version::new(now_s, certificate_payload(bundle));
    certificate.attributes.enabled = enabled;
    certificate.attributes.nbf = Some(facts.not_before);
    certificate.attributes.exp = Some(facts.not_after);
    certificate.tags = tags.or_else(|| Some(BTreeMap::new()));

    let stored_key = StoredKey {
        kty,
        key_ops: kty.default_key_ops(),
        material: bundle.key.clone(),
    };
    let mut key = stored_key.new_version(now_s)?;
    key.id = certificate.id.clone();
    key.attributes = certificate.attributes.clone();
    key.managed = true;

    let mut secret = Version::new(
        now_s,
        Payload::Secret {
            value: Redacted(value),
        },
    );
    secret.id = certificate.id.clone();
    secret.attributes = certificate.attributes.clone();
    secret.content_type = Some(content_type.as_str().to_string());
    secret.managed = true;
    secret.tags = certificate.tags.clone();
    Ok(Family {
        certificate,
        key,
        secret,
    })
}

/// Stores a certificate version with its managed key and secret, sets the policy (and the
/// pending operation, if any) and returns the certificate object.
fn store_family(
    ctx: &VaultCtx,
    name: &str,
    versions: Family,
    policy: Value,
    pending: Option<Value>,
) -> Result<StoredObject, ApiError> {
    let t = ctx.timing();
    store_family_in(&mut ctx.lock(), name, versions, policy, pending, t)
        .map_err(|(kind, e)| ctx.store_error(kind, name, e))
}

/// [`store_family`] on a locked store; failures name the kind that refused.
fn store_family_in(
    store: &mut VaultStore,
    name: &str,
    versions: Family,
    policy: Value,
    pending: Option<Value>,
    t: Timing,
) -> Result<StoredObject, (Kind, StoreError)> {
    for (kind, version) in [
        (Kind::Key, versions.key),
        (Kind::Secret, versions.secret),
        (KIND, versions.certificate),
    ] {
        store
            .create_version(kind, name, version, t)
            .map_err(|e| (kind, e))?;
    }
    let object = store.object_mut(KIND, name, t).map_err(|e| (KIND, e))?;
    let mut meta = Map::new();
    meta.insert("policy".into(), policy);
    if let Some(pending) = pending {
        meta.insert("pending".into(), pending);
    }
    object.meta = Value::Object(meta);
    Ok(object.clone())
}

/// The key spec and self-signed request a normalized policy describes.
fn issuance_of(policy: &Value) -> Result<(KeyType, KeySpec, SelfSignedSpec), ApiError> {
    let kty = policy
        .pointer("/key_props/kty")
        .and_then(Value::as_str)
        .and_then(|k| KeyType::parse(k).ok())
        .unwrap_or(KeyType::Rsa);
    let spec = key_spec(
        kty,
        policy
            .pointer("/key_props/key_size")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        policy.pointer("/key_props/crv").and_then(Value::as_str),
    )?;
    let x509 = policy.get("x509_props").cloned().unwrap_or(Value::Null);
    let self_signed = SelfSignedSpec {
        subject: x509["subject"].as_str().unwrap_or("").to_string(),
        dns_names: strings(x509.pointer("/sans/dns_names")),
        emails: strings(x509.pointer("/sans/emails")),
        validity_months: x509["validity_months"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(12),
        key_usage: strings(x509.get("key_usage")),
        ekus: strings(x509.get("ekus")),
    };
    Ok((kty, spec, self_signed))
}

/// Issues a self-signed certificate version straight into `store` (for seed files and tests):
/// `policy` is a policy as a client would send it (defaults filled in as for `create`), and the
/// certificate gets its managed key and secret of the same version. No pending operation is
/// left behind. Answers the new version id. Refuses HSM key types unless `premium`.
pub fn issue_into_store(
    store: &mut VaultStore,
    name: &str,
    policy: &Value,
    tags: Option<BTreeMap<String, String>>,
    premium: bool,
    t: Timing,
) -> Result<String, ApiError> {
    validate_name(KIND, name)?;
    let now = t.now_s();
    let policy = normalize_policy(policy, "Self", now)?;
    let (kty, spec, self_signed) = issuance_of(&policy)?;
    if kty.is_hsm() && !premium {
        return Err(ApiError::bad_parameter(
            "Hardware key operation not allowed on standard vault.",
        ));
    }
    let key = KeyMaterial::generate(spec).map_err(crypto_error)?;
    let issued = issue_self_signed(&self_signed, key, now).map_err(crypto_error)?;
    let versions = family(&issued.bundle, &policy, true, tags, now)?;
    let id = versions.certificate.id.clone();
    store_family_in(store, name, versions, policy, None, t)
        .map_err(|(kind, e)| ApiError::from_store(kind, name, e))?;
    Ok(id)
}

#[derive(Debug, serde::Deserialize)]
struct CreateBody {
    policy: Option<Value>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

fn pending_body(ctx: &VaultCtx, name: &str, pending: &Value) -> Value {
    let mut map = Map::new();
    map.insert(
        "id".into(),
        json!(format!("{}/pending", ctx.object_id(KIND, name, None))),
    );
    if let Value::Object(rest) = pending {
        map.extend(rest.clone());
    }
    if pending.get("status").and_then(Value::as_str) == Some("completed") {
        map.insert("target".into(), json!(ctx.object_id(KIND, name, None)));
    }
    Value::Object(map)
}

async fn certificates_create(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    validate_name(KIND, &name)?;
    let now = ctx.now_s();
    let policy = normalize_policy(
        body.policy
            .as_ref()
            .ok_or_else(|| ApiError::bad_parameter("The certificate policy is required."))?,
        "Self",
        now,
    )?;
    let issuer = policy
        .pointer("/issuer/name")
        .and_then(Value::as_str)
        .unwrap_or("Self");
    if !issuer.eq_ignore_ascii_case("Self") {
        return Err(ApiError::not_supported(format!(
            "Issuer {issuer} is not supported by this vault: only self-signed (Self) certificates are issued."
        )));
    }
    let (kty, spec, self_signed) = issuance_of(&policy)?;
    if kty.is_hsm() && !ctx.is_premium() {
        return Err(ApiError::bad_parameter(
            "Hardware key operation not allowed on standard vault.",
        ));
    }
    check_family_free(&ctx, &name)?;
    let issued = tokio::task::spawn_blocking(move || {
        let key = KeyMaterial::generate(spec)?;
        issue_self_signed(&self_signed, key, now)
    })
    .await
    .map_err(|_| ApiError::internal("certificate issuance was interrupted"))?
    .map_err(crypto_error)?;

    let enabled = body
        .attributes
        .as_ref()
        .and_then(|a| a.enabled)
        .unwrap_or(true);
    let versions = family(&issued.bundle, &policy, enabled, body.tags, now)?;
    let pending = json!({
        "issuer": {"name": "Self"},
        "csr": STANDARD.encode(&issued.csr_der),
        "cancellation_requested": false,
        "status": "inProgress",
        "status_details": "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later.",
        "request_id": super::store::new_version_id(),
    });
    let object = store_family(&ctx, &name, versions, policy, Some(pending.clone()))?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &pending_body(&ctx, &object.name, &pending),
    ))
}

#[derive(Debug, serde::Deserialize)]
struct ImportBody {
    // The PFX or PEM carries the private key, and `pwd` opens it: neither may reach Debug.
    value: Option<Redacted<String>>,
    pwd: Option<Redacted<String>>,
    policy: Option<Value>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

async fn certificates_import(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<Response, ApiError> {
    validate_name(KIND, &name)?;
    let value = body
        .value
        .map(|v| v.0)
        .ok_or_else(|| ApiError::bad_parameter("The certificate (value) is required."))?;
    let stated = body
        .policy
        .as_ref()
        .and_then(|p| p.pointer("/secret_props/contentType"))
        .and_then(Value::as_str)
        .map(|ct| {
            CertificateContentType::parse(ct).ok_or_else(|| {
                ApiError::bad_parameter(format!("The content type {ct} is not supported."))
            })
        })
        .transpose()?;
    // The value is PEM text, base64 of PEM text (what the SDKs send), or base64 of a PFX.
    let trimmed = value.trim();
    let pem_text = if trimmed.starts_with("-----BEGIN") {
        Some(trimmed.to_string())
    } else {
        None
    };
    let decoded = match &pem_text {
        Some(_) => None,
        None => Some(
            STANDARD
                .decode(trimmed)
                .map_err(|_| ApiError::bad_parameter("The certificate (value) is not base64."))?,
        ),
    };
    let pem_text = pem_text.or_else(|| {
        decoded
            .as_deref()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .filter(|text| text.trim_start().starts_with("-----BEGIN"))
            .map(str::to_string)
    });
    let password = body.pwd.map(|p| p.0).unwrap_or_default();
    let (bundle, detected) = match (pem_text, decoded) {
        (Some(text), _) => (
            CertificateBundle::from_pem(&text),
            CertificateContentType::Pem,
        ),
        (None, Some(pfx)) => (
            tokio::task::spawn_blocking(move || CertificateBundle::from_pfx(&pfx, &password))
                .await
                .map_err(|_| ApiError::internal("certificate import was interrupted"))?,
            CertificateContentType::Pkcs12,
        ),
        (None, None) => return Err(ApiError::bad_parameter("The certificate (value) is empty.")),
    };
    let bundle = bundle.map_err(crypto_error)?;
    let content_type = stated.unwrap_or(detected);
    let hsm = body
        .policy
        .as_ref()
        .and_then(|p| p.pointer("/key_props/kty"))
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("-HSM"));
    if hsm && !ctx.is_premium() {
        return Err(ApiError::bad_parameter(
            "Hardware key operation not allowed on standard vault.",
        ));
    }
    check_family_free(&ctx, &name)?;
    let now = ctx.now_s();
    let policy = imported_policy(&bundle, body.policy.as_ref(), content_type, hsm, now)?;
    let enabled = body
        .attributes
        .as_ref()
        .and_then(|a| a.enabled)
        .unwrap_or(true);
    let versions = tokio::task::spawn_blocking({
        let policy = policy.clone();
        move || family(&bundle, &policy, enabled, body.tags, now)
    })
    .await
    .map_err(|_| ApiError::internal("certificate import was interrupted"))??;
    let object = store_family(&ctx, &name, versions, policy, None)?;
    let latest = object
        .latest()
        .ok_or_else(|| ApiError::internal("the imported certificate has no version"))?;
    Ok(ok_json(&Value::Object(certificate_bundle(
        &ctx, &object, latest,
    )?)))
}

// ----- reading --------------------------------------------------------------------------------

fn get_version(ctx: &VaultCtx, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let object = ctx
        .lock()
        .object(KIND, name, t)
        .cloned()
        .map_err(|e| ctx.store_error(KIND, name, e))?;
    let found = object
        .version(version)
        .ok_or_else(|| ApiError::not_found(KIND, name, version))?;
    Ok(ok_json(&Value::Object(certificate_bundle(
        ctx, &object, found,
    )?)))
}

async fn certificates_get_latest(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    get_version(&ctx, &name, None)
}

async fn certificates_get(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get_version(&ctx, &name, Some(&version))
}

async fn certificates_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let page = ctx.live_page(KIND, "/certificates")?;
    Ok(ok_json(&ctx.page_body(
        page,
        |o: &StoredObject| match o.latest() {
            Some(v) => item(&ctx, &o.name, v, false),
            None => Value::Null,
        },
    )))
}

async fn certificates_versions(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, versions) = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let numbered: Vec<(usize, Version)> = object.versions.iter().cloned().enumerate().collect();
        (object.name.clone(), numbered)
    };
    let page = ctx.page(
        versions,
        |(i, _)| format!("{i:08}"),
        &format!("/certificates/{stored_name}/versions"),
    )?;
    Ok(ok_json(&ctx.page_body(page, |(_, v)| {
        item(&ctx, &stored_name, v, true)
    })))
}

async fn certificates_pending_get(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, pending) = {
        let mut store = ctx.lock();
        let object = store
            .object_mut(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let pending = object
            .meta
            .get_mut("pending")
            .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
        // Self-signed issuance is done by the time anyone asks: the first poll sees it
        // complete, as a fast Azure issuance would (a cancelled one stays cancelled).
        if let Some(fields) = pending.as_object_mut()
            && fields.get("status").and_then(Value::as_str) == Some("inProgress")
        {
            fields.insert("status".into(), json!("completed"));
            fields.remove("status_details");
        }
        (object.name.clone(), pending.clone())
    };
    Ok(ok_json(&pending_body(&ctx, &stored_name, &pending)))
}

async fn certificates_pending_delete(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, pending) = {
        let mut store = ctx.lock();
        let object = store
            .object_mut(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let pending = object
            .meta
            .as_object_mut()
            .and_then(|m| m.remove("pending"))
            .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
        (object.name.clone(), pending)
    };
    Ok(ok_json(&pending_body(&ctx, &stored_name, &pending)))
}

#[derive(Debug, serde::Deserialize)]
struct PendingUpdateBody {
    cancellation_requested: Option<bool>,
}

/// `PATCH …/pending`: records a cancellation request. Self-signed issuance is finished by the
/// first poll, so a request that arrives while the operation is still `inProgress` cancels it
/// (status `cancelled`, the issued version stays, as a certificate Azure had already issued
/// does) and one that arrives later is only recorded on the completed operation.
async fn certificates_pending_update(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PendingUpdateBody>,
) -> Result<Response, ApiError> {
    let requested = body.cancellation_requested.ok_or_else(|| {
        ApiError::bad_parameter("The cancellation request (cancellation_requested) is required.")
    })?;
    let t = ctx.timing();
    let (stored_name, pending) = {
        let mut store = ctx.lock();
        let object = store
            .object_mut(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let pending = object
            .meta
            .get_mut("pending")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
        if requested {
            pending.insert("cancellation_requested".into(), json!(true));
            if pending.get("status").and_then(Value::as_str) == Some("inProgress") {
                pending.insert("status".into(), json!("cancelled"));
                pending.insert(
                    "status_details".into(),
                    json!("The certificate operation was cancelled."),
                );
            }
        }
        (object.name.clone(), Value::Object(pending.clone()))
    };
    Ok(ok_json(&pending_body(&ctx, &stored_name, &pending)))
}

// ----- issuers and contacts -------------------------------------------------------------------

/// 404 for an issuer the vault does not have.
fn issuer_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "CertificateIssuerNotFound",
        format!("Issuer not found: {name}"),
    )
}

fn issuer_id(ctx: &VaultCtx, name: &str) -> String {
    format!("{}/certificates/issuers/{name}", ctx.base)
}

/// The issuer bundle: `id`, `provider`, `credentials` (the account id only: the password is
/// never kept, so never answered), `org_details`, `attributes`.
fn issuer_bundle(ctx: &VaultCtx, stored: &Value) -> Value {
    let name = stored["name"].as_str().unwrap_or_default();
    let mut map = Map::new();
    map.insert("id".into(), json!(issuer_id(ctx, name)));
    for field in ["provider", "credentials", "org_details", "attributes"] {
        if let Some(value) = stored.get(field).filter(|v| !v.is_null()) {
            map.insert(field.into(), value.clone());
        }
    }
    Value::Object(map)
}

/// Issuer names follow object names: 1–127 of `[0-9a-zA-Z-]`.
fn validate_issuer_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_parameter(format!(
            "The issuer name {name} is invalid: use 1-127 letters, digits or hyphens."
        )))
    }
}

/// Writes the client's issuer fields into `stored`: `provider`, `credentials.account_id`,
/// `org_details`, `attributes.enabled`. The password is read past and dropped.
fn apply_issuer(stored: &mut Map<String, Value>, input: &Value, now_s: i64) {
    if let Some(provider) = input.get("provider").and_then(Value::as_str) {
        stored.insert("provider".into(), json!(provider));
    }
    if let Some(credentials) = input.get("credentials").and_then(Value::as_object) {
        let mut kept = Map::new();
        if let Some(account) = credentials.get("account_id").filter(|v| !v.is_null()) {
            kept.insert("account_id".into(), account.clone());
        }
        stored.insert("credentials".into(), Value::Object(kept));
    }
    if let Some(org) = input.get("org_details").filter(|v| v.is_object()) {
        stored.insert("org_details".into(), org.clone());
    }
    let created = stored
        .get("attributes")
        .and_then(|a| a.get("created"))
        .and_then(Value::as_i64)
        .unwrap_or(now_s);
    let enabled = input
        .pointer("/attributes/enabled")
        .and_then(Value::as_bool)
        .or_else(|| {
            stored
                .get("attributes")
                .and_then(|a| a.get("enabled"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    stored.insert(
        "attributes".into(),
        json!({"enabled": enabled, "created": created, "updated": now_s}),
    );
}

/// `credentials.pwd` is a secret: the body is read as [`Value`] only inside this wrapper,
/// whose `Debug` hides it.
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct IssuerBody(Value);

impl std::fmt::Debug for IssuerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerBody([redacted])")
    }
}

async fn issuers_set(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(IssuerBody(body)): JsonBody<IssuerBody>,
) -> Result<Response, ApiError> {
    validate_issuer_name(&name)?;
    if body
        .get("provider")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_parameter(
            "The issuer provider (provider) is required.",
        ));
    }
    let now = ctx.now_s();
    let stored = {
        let mut store = ctx.lock();
        // A set replaces the issuer; only its creation time survives.
        let created = store
            .issuers
            .get(&name.to_ascii_lowercase())
            .and_then(|i| i.pointer("/attributes/created"))
            .cloned();
        let mut fresh = Map::new();
        fresh.insert("name".into(), json!(name));
        if let Some(created) = created {
            fresh.insert("attributes".into(), json!({"created": created}));
        }
        apply_issuer(&mut fresh, &body, now);
        let fresh = Value::Object(fresh);
        store
            .issuers
            .insert(name.to_ascii_lowercase(), fresh.clone());
        fresh
    };
    Ok(ok_json(&issuer_bundle(&ctx, &stored)))
}

async fn issuers_update(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(IssuerBody(body)): JsonBody<IssuerBody>,
) -> Result<Response, ApiError> {
    let now = ctx.now_s();
    let stored = {
        let mut store = ctx.lock();
        let stored = store
            .issuers
            .get_mut(&name.to_ascii_lowercase())
            .and_then(Value::as_object_mut)
            .ok_or_else(|| issuer_not_found(&name))?;
        apply_issuer(stored, &body, now);
        Value::Object(stored.clone())
    };
    Ok(ok_json(&issuer_bundle(&ctx, &stored)))
}

async fn issuers_get(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    let stored = ctx
        .lock()
        .issuers
        .get(&name.to_ascii_lowercase())
        .cloned()
        .ok_or_else(|| issuer_not_found(&name))?;
    Ok(ok_json(&issuer_bundle(&ctx, &stored)))
}

async fn issuers_delete(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    let stored = ctx
        .lock()
        .issuers
        .remove(&name.to_ascii_lowercase())
        .ok_or_else(|| issuer_not_found(&name))?;
    Ok(ok_json(&issuer_bundle(&ctx, &stored)))
}

async fn issuers_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let issuers: Vec<(String, Value)> = ctx
        .lock()
        .issuers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let page = ctx.page(issuers, |(k, _)| k.clone(), "/certificates/issuers")?;
    Ok(ok_json(&ctx.page_body(page, |(_, stored)| {
        let name = stored["name"].as_str().unwrap_or_default();
        json!({"id": issuer_id(&ctx, name), "provider": stored["provider"]})
    })))
}

fn contacts_body(ctx: &VaultCtx, contacts: &Value) -> Value {
    json!({
        "id": format!("{}/certificates/contacts", ctx.base),
        "contacts": contacts.get("contacts").cloned().unwrap_or_else(|| json!([])),
    })
}

fn contacts_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ContactsNotFound",
        "Contacts not found",
    )
}

#[derive(Debug, serde::Deserialize)]
struct ContactsBody {
    contacts: Option<Vec<Value>>,
}

async fn contacts_set(
    ctx: VaultCtx,
    JsonBody(body): JsonBody<ContactsBody>,
) -> Result<Response, ApiError> {
    let contacts = body
        .contacts
        .ok_or_else(|| ApiError::bad_parameter("The contact list (contacts) is required."))?;
    let mut kept = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let Some(fields) = contact.as_object() else {
            return Err(ApiError::bad_parameter(
                "Each contact must be a JSON object.",
            ));
        };
        // The spec's `Contact`: email, name, phone; nothing else is kept.
        let mut one = Map::new();
        for field in ["email", "name", "phone"] {
            if let Some(value) = fields.get(field).filter(|v| v.is_string()) {
                one.insert(field.into(), value.clone());
            }
        }
        kept.push(Value::Object(one));
    }
    let stored = json!({ "contacts": kept });
    ctx.lock().contacts = Some(stored.clone());
    Ok(ok_json(&contacts_body(&ctx, &stored)))
}

async fn contacts_get(ctx: VaultCtx) -> Result<Response, ApiError> {
    let stored = ctx.lock().contacts.clone().ok_or_else(contacts_not_found)?;
    Ok(ok_json(&contacts_body(&ctx, &stored)))
}

async fn contacts_delete(ctx: VaultCtx) -> Result<Response, ApiError> {
    let stored = ctx.lock().contacts.take().ok_or_else(contacts_not_found)?;
    Ok(ok_json(&contacts_body(&ctx, &stored)))
}

// ----- updating -------------------------------------------------------------------------------

#[derive(Debug, serde::Deserialize)]
struct UpdateBody {
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
    policy: Option<Value>,
}

/// Merges `patch` into `policy` one section deep, as a policy update does.
fn merge_policy(policy: &mut Value, patch: &Value, now_s: i64) {
    if let (Some(target), Some(changes)) = (policy.as_object_mut(), patch.as_object()) {
        for (section_name, change) in changes {
            if section_name == "id" {
                continue;
            }
            match (target.get_mut(section_name), change) {
                (Some(Value::Object(existing)), Value::Object(fields)) => {
                    for (k, v) in fields {
                        existing.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    target.insert(section_name.clone(), change.clone());
                }
            }
        }
        if let Some(Value::Object(attributes)) = target.get_mut("attributes") {
            attributes.insert("updated".into(), json!(now_s));
        }
    }
}

fn update(
    ctx: &VaultCtx,
    name: &str,
    version: Option<&str>,
    body: UpdateBody,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let object = {
        let mut store = ctx.lock();
        let updated = store
            .update_version(KIND, name, version, t, |v| {
                if let Some(tags) = &body.tags {
                    v.tags = Some(tags.clone());
                }
                if let Some(attrs) = &body.attributes {
                    apply_attributes(&mut v.attributes, attrs);
                }
            })
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        // The managed key and secret of the version follow its attributes.
        for kind in [Kind::Key, Kind::Secret] {
            let _ = store.update_version(kind, name, Some(&updated.id), t, |v| {
                v.attributes.enabled = updated.attributes.enabled;
                v.attributes.nbf = updated.attributes.nbf;
                v.attributes.exp = updated.attributes.exp;
                if kind == Kind::Secret {
                    v.tags = updated.tags.clone();
                }
            });
        }
        let object = store
            .object_mut(KIND, name, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        if let Some(patch) = &body.policy
            && let Some(policy) = object.meta.get_mut("policy")
        {
            merge_policy(policy, patch, t.now_s());
        }
        object.clone()
    };
    let shown = object
        .version(version)
        .ok_or_else(|| ApiError::not_found(KIND, name, version))?;
    Ok(ok_json(&Value::Object(certificate_bundle(
        ctx, &object, shown,
    )?)))
}

async fn certificates_update_latest(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&ctx, &name, None, body)
}

async fn certificates_update(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&ctx, &name, Some(&version), body)
}

async fn certificates_policy_get(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let object = ctx
        .lock()
        .object(KIND, &name, ctx.timing())
        .cloned()
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let policy = object.meta.get("policy").cloned().unwrap_or(Value::Null);
    Ok(ok_json(&policy_body(&ctx, &object.name, &policy)))
}

async fn certificates_policy_update(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, policy) = {
        let mut store = ctx.lock();
        let object = store
            .object_mut(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let mut policy = object.meta.get("policy").cloned().unwrap_or(json!({}));
        merge_policy(&mut policy, &patch, t.now_s());
        // The result must still be a policy the vault can issue from.
        let checked = normalize_policy(
            &policy,
            policy
                .pointer("/issuer/name")
                .and_then(Value::as_str)
                .unwrap_or("Self"),
            t.now_s(),
        )?;
        let mut policy = checked;
        if let Some(created) = object.meta.pointer("/policy/attributes/created") {
            policy["attributes"]["created"] = created.clone();
        }
        if !object.meta.is_object() {
            object.meta = json!({});
        }
        object.meta["policy"] = policy.clone();
        (object.name.clone(), policy)
    };
    Ok(ok_json(&policy_body(&ctx, &stored_name, &policy)))
}

// ----- soft-delete ----------------------------------------------------------------------------

async fn certificates_delete(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let deleted = {
        let mut store = ctx.lock();
        let deleted = store
            .delete(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        // The managed key and secret go with it (absent ones were never created or are gone).
        for kind in [Kind::Key, Kind::Secret] {
            if store
                .object(kind, &name, t)
                .is_ok_and(|o| o.latest().is_some_and(|v| v.managed))
            {
                let _ = store.delete(kind, &name, t);
            }
        }
        deleted
    };
    Ok(ok_json(&deleted_bundle(&ctx, &deleted, true)?))
}

async fn deleted_certificates_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let deleted = ctx.lock().deleted_list(KIND, ctx.timing());
    let page = ctx.page(
        deleted,
        |d| d.object.name.to_ascii_lowercase(),
        "/deletedcertificates",
    )?;
    Ok(ok_json(&ctx.page_body(page, |d| {
        deleted_bundle(&ctx, d, false).unwrap_or(Value::Null)
    })))
}

async fn deleted_certificates_get(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = ctx
        .lock()
        .deleted(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    Ok(ok_json(&deleted_bundle(&ctx, &deleted, true)?))
}

/// Whether the deleted `kind` object `name` is a managed one (it belongs to the certificate).
fn deleted_is_managed(store: &super::store::VaultStore, kind: Kind, name: &str) -> bool {
    store
        .kind(kind)
        .deleted
        .get(&name.to_ascii_lowercase())
        .is_some_and(|d| d.object.latest().is_some_and(|v| v.managed))
}

async fn deleted_certificates_purge(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    {
        let mut store = ctx.lock();
        store
            .purge(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        for kind in [Kind::Key, Kind::Secret] {
            if deleted_is_managed(&store, kind, &name) {
                let _ = store.purge(kind, &name, t);
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deleted_certificates_recover(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let recovered = {
        let mut store = ctx.lock();
        let recovered = store
            .recover(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        for kind in [Kind::Key, Kind::Secret] {
            if deleted_is_managed(&store, kind, &name) {
                let _ = store.recover(kind, &name, t);
            }
        }
        recovered
    };
    let latest = recovered
        .latest()
        .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
    Ok(ok_json(&Value::Object(certificate_bundle(
        &ctx, &recovered, latest,
    )?)))
}

// ----- backup and restore ---------------------------------------------------------------------

async fn certificates_backup(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let contents = 'backup: {
        let mut store = ctx.lock();
        let mut objects = Vec::with_capacity(FAMILY.len());
        for kind in FAMILY {
            match store.backup(kind, &name, t) {
                Ok(object) => objects.push(BackedUpObject { kind, object }),
                // The certificate itself must exist; its companions may have been lost only
                // through a bug, and a backup without them would restore a broken certificate.
                Err(StoreError::NotFound { .. }) if kind != KIND => {
                    return Err(ApiError::internal(format!(
                        "the {} of certificate {name} is missing",
                        kind.noun()
                    )));
                }
                Err(e) => break 'backup Err((kind, e)),
            }
        }
        Ok(BackupContents { format: 1, objects })
    };
    let contents = match contents {
        Ok(contents) => contents,
        Err((kind, err)) => return Err(ctx.backup_error(kind, &name, err).await),
    };
    let blob = ctx.seal(KIND, &contents)?;
    Ok(ok_json(&json!({ "value": blob })))
}

#[derive(Debug, serde::Deserialize)]
struct BlobBody {
    value: Option<String>,
}

async fn certificates_restore(
    ctx: VaultCtx,
    JsonBody(body): JsonBody<BlobBody>,
) -> Result<Response, ApiError> {
    let blob = body
        .value
        .ok_or_else(|| ApiError::bad_parameter("The backup blob (value) is required."))?;
    let contents = ctx.open(KIND, &blob)?;
    let mut parts = Vec::with_capacity(FAMILY.len());
    for kind in FAMILY {
        let object = contents
            .take(kind)
            .cloned()
            .ok_or_else(ApiError::malformed_backup)?;
        parts.push((kind, object));
    }
    let name = parts[0].1.name.clone();
    let t = ctx.timing();
    let restored = {
        let mut store = ctx.lock();
        // All three names must be free before any is written: a half-restored certificate
        // would be worse than none.
        for (kind, object) in &parts {
            store
                .check_restorable(*kind, &object.name, t)
                .map_err(|e| ctx.store_error(*kind, &object.name, e))?;
        }
        let mut restored = None;
        for (kind, object) in parts {
            let object_name = object.name.clone();
            let back = store
                .restore(kind, object, t)
                .map_err(|e| ctx.store_error(kind, &object_name, e))?;
            if kind == KIND {
                restored = Some(back);
            }
        }
        restored.ok_or_else(ApiError::malformed_backup)?
    };
    let latest = restored
        .latest()
        .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
    Ok(ok_json(&Value::Object(certificate_bundle(
        &ctx, &restored, latest,
    )?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::store::SoftDeletePolicy;

    fn timing() -> Timing {
        Timing {
            now_ms: 1_700_000_000_000,
            delete_delay_ms: 0,
            purge_window_ms: 0,
        }
    }

    #[test]
    fn policy_defaults_follow_key_vault() {
        let policy = normalize_policy(&json!({"x509_props": {"subject": "CN=a"}}), "Self", 5)
            .expect("a subject is enough");
        assert_eq!(
            policy["key_props"],
            json!({"exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false})
        );
        assert_eq!(
            policy["secret_props"]["contentType"],
            "application/x-pkcs12"
        );
        assert_eq!(
            policy["x509_props"]["key_usage"],
            json!(["digitalSignature", "keyEncipherment"])
        );
        assert_eq!(policy["x509_props"]["validity_months"], 12);
        assert_eq!(policy["issuer"]["name"], "Self");
        assert_eq!(
            policy["lifetime_actions"][0]["action"]["action_type"],
            "AutoRenew"
        );
        let ec = normalize_policy(
            &json!({"key_props": {"kty": "EC", "crv": "P-521"}, "x509_props": {"subject": "CN=e"}}),
            "Self",
            5,
        )
        .expect("EC policy");
        assert_eq!(ec["key_props"]["crv"], "P-521");
        assert_eq!(ec["key_props"]["key_size"], 521);
    }

    #[test]
    fn policy_without_subject_or_with_unknown_content_type_is_400() {
        let err = normalize_policy(&json!({}), "Self", 0).expect_err("no subject");
        assert_eq!(
            (err.status.as_u16(), err.code.as_str()),
            (400, "BadParameter")
        );
        let err = normalize_policy(
            &json!({"x509_props": {"subject": "CN=a"}, "secret_props": {"contentType": "text/plain"}}),
            "Self",
            0,
        )
        .expect_err("unknown content type");
        assert_eq!(err.code, "BadParameter");
    }

    #[test]
    fn policy_update_merges_one_section_deep() {
        let mut policy = normalize_policy(&json!({"x509_props": {"subject": "CN=a"}}), "Self", 1)
            .expect("policy");
        merge_policy(
            &mut policy,
            &json!({"x509_props": {"validity_months": 24}, "id": "ignored"}),
            9,
        );
        assert_eq!(policy["x509_props"]["validity_months"], 24);
        assert_eq!(policy["x509_props"]["subject"], "CN=a");
        assert_eq!(policy["attributes"]["updated"], 9);
        assert!(policy.get("id").is_none());
    }

    #[test]
    fn issued_certificate_owns_a_managed_key_and_secret_of_its_version() {
        let mut store = VaultStore::new(SoftDeletePolicy {
            retention_days: 90,
            purge_protection: false,
        });
        let t = timing();
        let policy = json!({
            "key_props": {"kty": "EC", "crv": "P-256"},
            "x509_props": {"subject": "CN=seeded"},
        });
        let id = issue_into_store(&mut store, "seeded", &policy, None, false, t).expect("issued");
        let key = store
            .get(Kind::Key, "seeded", None, t)
            .expect("managed key");
        let secret = store
            .get(Kind::Secret, "seeded", None, t)
            .expect("managed secret");
        let certificate = store.get(KIND, "seeded", None, t).expect("certificate");
        assert_eq!(
            (key.id.as_str(), secret.id.as_str()),
            (id.as_str(), id.as_str())
        );
        assert!(key.managed && secret.managed && !certificate.managed);
        assert_eq!(secret.content_type.as_deref(), Some("application/x-pkcs12"));

        let Payload::Secret { value } = &secret.payload else {
            panic!("the secret holds a value");
        };
        let pfx = STANDARD.decode(&value.0).expect("standard base64");
        let opened = CertificateBundle::from_pfx(&pfx, "").expect("PFX opens without a password");
        let stored_key = StoredKey::from_version(&key).expect("key payload");
        assert_eq!(opened.key, stored_key.material);
        assert_eq!(opened.leaf(), leaf_of(&certificate).expect("leaf"));
        assert_eq!(certificate.attributes.exp, secret.attributes.exp);

        let hsm = json!({"key_props": {"kty": "RSA-HSM"}, "x509_props": {"subject": "CN=h"}});
        let err = issue_into_store(&mut store, "hsm", &hsm, None, false, t).expect_err("standard");
        assert_eq!(err.code, "BadParameter");
    }

    #[test]
    fn non_exportable_key_leaves_the_secret_without_a_private_key() {
        let mut store = VaultStore::new(SoftDeletePolicy {
            retention_days: 90,
            purge_protection: false,
        });
        let t = timing();
        let policy = json!({
            "key_props": {"kty": "EC", "exportable": false},
            "secret_props": {"contentType": "application/x-pem-file"},
            "x509_props": {"subject": "CN=kept"},
        });
        issue_into_store(&mut store, "kept", &policy, None, false, t).expect("issued");
        let secret = store.get(Kind::Secret, "kept", None, t).expect("secret");
        let Payload::Secret { value } = &secret.payload else {
            panic!("the secret holds a value");
        };
        assert!(value.0.contains("BEGIN CERTIFICATE"));
        assert!(!value.0.contains("PRIVATE KEY"));
    }
}
