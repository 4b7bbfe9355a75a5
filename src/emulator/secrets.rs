//! The secret routes: set, get (a version or the current one, also with a trailing slash),
//! update, delete, list, list versions, deleted get/list, recover, purge, backup and restore.
//!
//! Azure's rules: names of `[0-9a-zA-Z-]`, 1–127 characters; values up to 25 KB; a disabled
//! secret answers 403 `SecretDisabled` while an expired one still answers 200; a secret a
//! certificate manages refuses set, update, delete and backup with 403; recover and restore
//! answer without `value`; purge answers 204 with no body.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::backup::BackupContents;
use super::error::ApiError;
use super::http::{JsonBody, ok_json};
use super::state::{AppState, VaultCtx};
use super::store::{DeletedObject, Kind, Payload, Redacted, StoredObject, Version};

/// Azure's largest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;

const KIND: Kind = Kind::Secret;

/// The secret routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(secrets_list))
        .route(
            "/secrets/{name}",
            get(secrets_get_latest)
                .put(secrets_set)
                .delete(secrets_delete)
                .patch(secrets_update_latest)
                .post(secrets_restore),
        )
        .route(
            "/secrets/{name}/",
            get(secrets_get_latest).patch(secrets_update_latest),
        )
        .route(
            "/secrets/{name}/{version}",
            get(secrets_get).patch(secrets_update).post(secrets_backup),
        )
        .route("/deletedsecrets", get(deleted_secrets_list))
        .route(
            "/deletedsecrets/{name}",
            get(deleted_secrets_get).delete(deleted_secrets_purge),
        )
        .route(
            "/deletedsecrets/{name}/recover",
            axum::routing::post(deleted_secrets_recover),
        )
}

/// Checks a secret (or key, or certificate) name: 1–127 of `[0-9a-zA-Z-]`.
pub fn validate_name(kind: Kind, name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 127
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::bad_parameter(format!(
            "The request URI contains an invalid name: {name}. {} names must be 1-127 characters of 0-9, a-z, A-Z and -.",
            kind.title()
        )));
    }
    Ok(())
}

/// Attributes as sent by clients.
#[derive(Debug, Default, Deserialize)]
pub struct AttributesIn {
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetBody {
    value: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    content_type: Option<String>,
    #[serde(default)]
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct BlobBody {
    value: Option<String>,
}

fn value_of(version: &Version) -> Option<&str> {
    match &version.payload {
        Payload::Secret { value } => Some(value.0.as_str()),
        _ => None,
    }
}

/// The secret bundle (`value` only when asked).
fn bundle(ctx: &VaultCtx, name: &str, version: &Version, with_value: bool) -> Map<String, Value> {
    let mut map = Map::new();
    if with_value && let Some(value) = value_of(version) {
        map.insert("value".into(), json!(value));
    }
    map.insert(
        "id".into(),
        json!(ctx.object_id(KIND, name, Some(&version.id))),
    );
    if let Some(ct) = &version.content_type {
        map.insert("contentType".into(), json!(ct));
    }
    map.insert(
        "attributes".into(),
        Value::Object(ctx.attributes(&version.attributes)),
    );
    if let Some(tags) = &version.tags {
        map.insert("tags".into(), json!(tags));
    }
    if version.managed {
        map.insert(
            "kid".into(),
            json!(ctx.object_id(Kind::Key, name, Some(&version.id))),
        );
        map.insert("managed".into(), json!(true));
    }
    map
}

/// A list item: no value; `id` with the version only when `versioned`.
fn item(ctx: &VaultCtx, name: &str, version: &Version, versioned: bool) -> Value {
    let mut map = Map::new();
    let id = if versioned {
        ctx.object_id(KIND, name, Some(&version.id))
    } else {
        ctx.object_id(KIND, name, None)
    };
    map.insert("id".into(), json!(id));
    map.insert(
        "attributes".into(),
        Value::Object(ctx.attributes(&version.attributes)),
    );
    if let Some(tags) = &version.tags {
        map.insert("tags".into(), json!(tags));
    }
    if let Some(ct) = &version.content_type {
        map.insert("contentType".into(), json!(ct));
    }
    if version.managed {
        map.insert("managed".into(), json!(true));
    }
    Value::Object(map)
}

fn deleted_bundle(ctx: &VaultCtx, deleted: &DeletedObject, full: bool) -> Value {
    let name = &deleted.object.name;
    let mut map = Map::new();
    map.insert("recoveryId".into(), json!(ctx.recovery_id(KIND, name)));
    map.insert("deletedDate".into(), json!(deleted.deleted_date));
    map.insert(
        "scheduledPurgeDate".into(),
        json!(deleted.scheduled_purge_date),
    );
    if let Some(latest) = deleted.object.latest() {
        let rest = if full {
            bundle(ctx, name, latest, false)
        } else {
            match item(ctx, name, latest, false) {
                Value::Object(m) => m,
                _ => Map::new(),
            }
        };
        map.extend(rest);
    }
    Value::Object(map)
}

fn managed_refusal(operation: &str, name: &str) -> ApiError {
    ApiError::forbidden(
        "SecretManagedByKeyVault",
        format!(
            "Operation {operation} is not allowed on secret {name}: it is managed by Key Vault as part of a certificate. Use the certificate's operations instead."
        ),
    )
}

async fn secrets_set(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SetBody>,
) -> Result<Response, ApiError> {
    validate_name(KIND, &name)?;
    let value = body
        .value
        .ok_or_else(|| ApiError::bad_parameter("The secret value is required."))?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::bad_parameter(format!(
            "The secret value is {} bytes; the limit is {MAX_VALUE_BYTES} bytes.",
            value.len()
        )));
    }
    let t = ctx.timing();
    let mut version = Version::new(
        t.now_s(),
        Payload::Secret {
            value: Redacted(value),
        },
    );
    version.content_type = body.content_type;
    version.tags = body.tags;
    if let Some(attrs) = body.attributes {
        version.attributes.enabled = attrs.enabled.unwrap_or(true);
        version.attributes.nbf = attrs.nbf;
        version.attributes.exp = attrs.exp;
    }
    let (stored_name, version) = {
        let mut store = ctx.lock();
        if let Ok(existing) = store.object(KIND, &name, t)
            && existing.latest().is_some_and(|v| v.managed)
        {
            return Err(managed_refusal("set", &name));
        }
        let version = store
            .create_version(KIND, &name, version, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let stored_name = store
            .object(KIND, &name, t)
            .map(|o| o.name.clone())
            .unwrap_or(name.clone());
        (stored_name, version)
    };
    Ok(ok_json(&Value::Object(bundle(
        &ctx,
        &stored_name,
        &version,
        true,
    ))))
}

fn get_version(ctx: &VaultCtx, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, found) = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, name, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        let found = object
            .version(version)
            .cloned()
            .ok_or_else(|| ApiError::not_found(KIND, name, version))?;
        (object.name.clone(), found)
    };
    if !found.attributes.enabled {
        return Err(ApiError::forbidden(
            "SecretDisabled",
            "Operation get is not allowed on a disabled secret.",
        ));
    }
    Ok(ok_json(&Value::Object(bundle(
        ctx,
        &stored_name,
        &found,
        true,
    ))))
}

async fn secrets_get_latest(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    get_version(&ctx, &name, None)
}

async fn secrets_get(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if version == "versions" {
        return secrets_versions(&ctx, &name);
    }
    get_version(&ctx, &name, Some(&version))
}

fn update(
    ctx: &VaultCtx,
    name: &str,
    version: Option<&str>,
    body: UpdateBody,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, updated) = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, name, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        if object.latest().is_some_and(|v| v.managed) {
            return Err(managed_refusal("update", name));
        }
        let stored_name = object.name.clone();
        let updated = store
            .update_version(KIND, name, version, t, |v| {
                if let Some(ct) = body.content_type {
                    v.content_type = Some(ct);
                }
                if let Some(tags) = body.tags {
                    v.tags = Some(tags);
                }
                if let Some(attrs) = body.attributes {
                    if let Some(enabled) = attrs.enabled {
                        v.attributes.enabled = enabled;
                    }
                    if attrs.nbf.is_some() {
                        v.attributes.nbf = attrs.nbf;
                    }
                    if attrs.exp.is_some() {
                        v.attributes.exp = attrs.exp;
                    }
                }
            })
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        (stored_name, updated)
    };
    Ok(ok_json(&Value::Object(bundle(
        ctx,
        &stored_name,
        &updated,
        false,
    ))))
}

async fn secrets_update_latest(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&ctx, &name, None, body)
}

async fn secrets_update(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&ctx, &name, Some(&version), body)
}

async fn secrets_delete(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let deleted = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        if object.latest().is_some_and(|v| v.managed) {
            return Err(managed_refusal("delete", &name));
        }
        store
            .delete(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?
    };
    Ok(ok_json(&deleted_bundle(&ctx, &deleted, true)))
}

async fn secrets_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let page = ctx.live_page(KIND, "/secrets")?;
    Ok(ok_json(&ctx.page_body(
        page,
        |o: &StoredObject| match o.latest() {
            Some(v) => item(&ctx, &o.name, v, false),
            None => Value::Null,
        },
    )))
}

fn secrets_versions(ctx: &VaultCtx, name: &str) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, versions) = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, name, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        let numbered: Vec<(usize, Version)> = object.versions.iter().cloned().enumerate().collect();
        (object.name.clone(), numbered)
    };
    let page = ctx.page(
        versions,
        |(i, _)| format!("{i:08}"),
        &format!("/secrets/{stored_name}/versions"),
    )?;
    Ok(ok_json(&ctx.page_body(page, |(_, v)| {
        item(ctx, &stored_name, v, true)
    })))
}

async fn secrets_backup(
    ctx: VaultCtx,
    Path((name, op)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if op != "backup" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("POST is not allowed on /secrets/{name}/{op}."),
        ));
    }
    let t = ctx.timing();
    let object = {
        let mut store = ctx.lock();
        let object = store.backup(KIND, &name, t);
        if let Ok(object) = &object
            && object.latest().is_some_and(|v| v.managed)
        {
            return Err(managed_refusal("backup", &name));
        }
        object
    };
    let object = match object {
        Ok(object) => object,
        Err(err) => return Err(ctx.backup_error(KIND, &name, err).await),
    };
    let blob = ctx.seal(KIND, &BackupContents::single(KIND, object))?;
    Ok(ok_json(&json!({ "value": blob })))
}

async fn secrets_restore(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<BlobBody>,
) -> Result<Response, ApiError> {
    if name != "restore" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("POST is not allowed on /secrets/{name}."),
        ));
    }
    let blob = body
        .value
        .ok_or_else(|| ApiError::bad_parameter("The backup blob (value) is required."))?;
    let contents = ctx.open(KIND, &blob)?;
    let object = contents
        .take(KIND)
        .cloned()
        .ok_or_else(ApiError::malformed_backup)?;
    let name = object.name.clone();
    let restored = ctx
        .lock()
        .restore(KIND, object, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let latest = restored.latest().ok_or_else(ApiError::malformed_backup)?;
    Ok(ok_json(&Value::Object(bundle(&ctx, &name, latest, false))))
}

async fn deleted_secrets_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let deleted = ctx.lock().deleted_list(KIND, ctx.timing());
    let page = ctx.page(
        deleted,
        |d| d.object.name.to_ascii_lowercase(),
        "/deletedsecrets",
    )?;
    Ok(ok_json(
        &ctx.page_body(page, |d| deleted_bundle(&ctx, d, false)),
    ))
}

async fn deleted_secrets_get(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = ctx
        .lock()
        .deleted(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    Ok(ok_json(&deleted_bundle(&ctx, &deleted, true)))
}

async fn deleted_secrets_purge(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ctx.lock()
        .purge(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deleted_secrets_recover(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let recovered = ctx
        .lock()
        .recover(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let latest = recovered
        .latest()
        .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
    Ok(ok_json(&Value::Object(bundle(
        &ctx,
        &recovered.name,
        latest,
        false,
    ))))
}
