//! The key routes: create (RSA/EC, `-HSM` types in premium vaults only), import, get (a version
//! or the current one), list and list versions, update, delete, deleted get/list, recover,
//! purge, backup and restore (every version with its material, ids and timestamps), `sign` and
//! `verify` over a digest, `encrypt`/`decrypt`/`wrapKey`/`unwrapKey` with real RSA, `POST /rng`,
//! rotate, and the rotation policy. Cryptographic operations honour the key's `key_ops` and, for
//! those that make new protected data, its `nbf`/`exp` window, as Azure does; the 2026-04-01 TEE
//! operations (`securewrapkey`, `secureunwrapkey`) are answered with Azure's refusal.
//!
//! A key a certificate manages (same name and version as the certificate, `managed: true`) is
//! listed like any other, but create, import, update, rotate, delete, backup, recover and purge
//! on it answer 403: those go through the certificate. The material lives in the version's
//! payload as [`StoredKey`] (PKCS#8 inside), never in logs.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::backup::BackupContents;
use super::crypto::{
    CryptoError, Curve, EncryptionAlgorithm, JsonWebKey, KeyMaterial, KeySpec, KeyType,
    SignatureAlgorithm, decode_b64url,
};
use super::error::ApiError;
use super::http::{JsonBody, ok_json};
use super::secrets::{AttributesIn, validate_name};
use super::state::{AppState, VaultCtx};
use super::store::{Attributes, DeletedObject, Kind, Payload, Redacted, StoredObject, Version};

const KIND: Kind = Kind::Key;

/// The key routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/keys", get(keys_list))
        .route("/keys/restore", post(keys_restore))
        .route(
            "/keys/{name}",
            get(keys_get_latest)
                .put(keys_import)
                .patch(keys_update_latest)
                .delete(keys_delete),
        )
        .route(
            "/keys/{name}/",
            get(keys_get_latest).patch(keys_update_latest),
        )
        .route("/keys/{name}/create", post(keys_create))
        .route("/keys/{name}/backup", post(keys_backup))
        .route("/keys/{name}/rotate", post(keys_rotate))
        .route("/keys/{name}/versions", get(keys_versions))
        .route(
            "/keys/{name}/rotationpolicy",
            get(keys_rotation_policy_get).put(keys_rotation_policy_put),
        )
        .route("/keys/{name}/{version}", get(keys_get).patch(keys_update))
        .route("/keys/{name}/{version}/sign", post(keys_sign))
        .route("/keys/{name}/{version}/verify", post(keys_verify))
        .route("/keys/{name}/{version}/encrypt", post(keys_encrypt))
        .route("/keys/{name}/{version}/decrypt", post(keys_decrypt))
        .route("/keys/{name}/{version}/wrapkey", post(keys_wrap))
        .route("/keys/{name}/{version}/unwrapkey", post(keys_unwrap))
        .route(
            "/keys/{name}/{version}/securewrapkey",
            post(keys_secure_wrap),
        )
        .route(
            "/keys/{name}/{version}/secureunwrapkey",
            post(keys_secure_unwrap),
        )
        .route("/keys/{name}//{operation}", post(keys_operation_current))
        .route("/rng", post(keys_rng))
        .route("/deletedkeys", get(deleted_keys_list))
        .route(
            "/deletedkeys/{name}",
            get(deleted_keys_get).delete(deleted_keys_purge),
        )
        .route("/deletedkeys/{name}/recover", post(deleted_keys_recover))
}

/// What a key version's payload holds: the key type as Key Vault shows it, the permitted
/// operations, and the private key (serialized as PKCS#8, base64url).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub kty: KeyType,
    pub key_ops: Vec<String>,
    pub material: KeyMaterial,
}

impl StoredKey {
    /// The payload to store in a [`Version`].
    pub fn to_payload(&self) -> Result<Payload, ApiError> {
        let value = serde_json::to_value(self)
            .map_err(|e| ApiError::internal(format!("cannot store the key: {e}")))?;
        Ok(Payload::Key(Redacted(value)))
    }

    /// Reads the key back from a version's payload.
    pub fn from_version(version: &Version) -> Result<Self, ApiError> {
        match &version.payload {
            Payload::Key(Redacted(value)) => serde_json::from_value(value.clone())
                .map_err(|_| ApiError::internal("a stored key version cannot be read")),
            _ => Err(ApiError::internal("a key version holds no key")),
        }
    }

    /// A new enabled version created at `now_s` holding this key.
    pub fn new_version(&self, now_s: i64) -> Result<Version, ApiError> {
        Ok(Version::new(now_s, self.to_payload()?))
    }
}

/// Maps a crypto failure to Azure's answer: the caller's mistakes are 400 `BadParameter`.
pub fn crypto_error(err: CryptoError) -> ApiError {
    match err {
        CryptoError::Operation(message) => {
            ApiError::internal(format!("key operation failed: {message}"))
        }
        // Azure's words for a key type a vault does not hold (`oct`, `oct-HSM`, ...).
        CryptoError::UnsupportedKeyType(kty) => {
            ApiError::bad_parameter(format!("Invalid kty value: {kty}"))
                .with_inner("KeyTypeNotSupported")
        }
        other => ApiError::bad_parameter(other.to_string()),
    }
}

/// Applies client attributes to a version's attributes (absent fields keep their value).
pub fn apply_attributes(attributes: &mut Attributes, input: &AttributesIn) {
    if let Some(enabled) = input.enabled {
        attributes.enabled = enabled;
    }
    if input.nbf.is_some() {
        attributes.nbf = input.nbf;
    }
    if input.exp.is_some() {
        attributes.exp = input.exp;
    }
}

/// 403 for an operation on a key a certificate manages.
pub fn managed_refusal(operation: &str, name: &str) -> ApiError {
    ApiError::forbidden(
        "KeyManagedByKeyVault",
        format!(
            "Operation {operation} is not allowed on key {name}: it is managed by Key Vault as part of a certificate. Use the certificate's operations instead."
        ),
    )
}

/// The key bundle: `key` (public JWK), `attributes`, `tags`, `managed`.
pub fn key_bundle(
    ctx: &VaultCtx,
    name: &str,
    version: &Version,
) -> Result<Map<String, Value>, ApiError> {
    let stored = StoredKey::from_version(version)?;
    let kid = ctx.object_id(KIND, name, Some(&version.id));
    let jwk = stored
        .material
        .public_jwk(&kid, stored.kty, &stored.key_ops);
    let mut map = Map::new();
    map.insert(
        "key".into(),
        serde_json::to_value(jwk).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    map.insert(
        "attributes".into(),
        Value::Object(ctx.attributes(&version.attributes)),
    );
    if let Some(tags) = &version.tags {
        map.insert("tags".into(), json!(tags));
    }
    if version.managed {
        map.insert("managed".into(), json!(true));
    }
    Ok(map)
}

/// A list item: `kid` (versioned only when `versioned`), attributes, tags, managed.
fn item(ctx: &VaultCtx, name: &str, version: &Version, versioned: bool) -> Value {
    let mut map = Map::new();
    let kid = if versioned {
        ctx.object_id(KIND, name, Some(&version.id))
    } else {
        ctx.object_id(KIND, name, None)
    };
    map.insert("kid".into(), json!(kid));
    map.insert(
        "attributes".into(),
        Value::Object(ctx.attributes(&version.attributes)),
    );
    if let Some(tags) = &version.tags {
        map.insert("tags".into(), json!(tags));
    }
    if version.managed {
        map.insert("managed".into(), json!(true));
    }
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
            map.extend(key_bundle(ctx, name, latest)?);
        } else if let Value::Object(rest) = item(ctx, name, latest, false) {
            map.extend(rest);
        }
    }
    Ok(Value::Object(map))
}

/// Refuses `operation` when `name` is a live key a certificate manages.
fn refuse_if_managed(ctx: &VaultCtx, name: &str, operation: &str) -> Result<(), ApiError> {
    let t = ctx.timing();
    let mut store = ctx.lock();
    if let Ok(object) = store.object(KIND, name, t)
        && object.latest().is_some_and(|v| v.managed)
    {
        return Err(managed_refusal(operation, name));
    }
    Ok(())
}

/// Refuses HSM key types outside a premium vault.
fn check_tier(ctx: &VaultCtx, kty: KeyType) -> Result<(), ApiError> {
    if kty.is_hsm() && !ctx.is_premium() {
        return Err(ApiError::bad_parameter(
            "Hardware key operation not allowed on standard vault.",
        ));
    }
    Ok(())
}

/// Adds `version` to `name` and answers its bundle.
fn store_new_version(ctx: &VaultCtx, name: &str, version: Version) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, version) = {
        let mut store = ctx.lock();
        let version = store
            .create_version(KIND, name, version, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        let stored_name = store
            .object(KIND, name, t)
            .map(|o| o.name.clone())
            .unwrap_or_else(|_| name.to_string());
        (stored_name, version)
    };
    Ok(ok_json(&Value::Object(key_bundle(
        ctx,
        &stored_name,
        &version,
    )?)))
}

/// Generates key material off the async runtime (RSA 4096 takes a moment).
async fn generate(spec: KeySpec) -> Result<KeyMaterial, ApiError> {
    tokio::task::spawn_blocking(move || KeyMaterial::generate(spec))
        .await
        .map_err(|_| ApiError::internal("key generation was interrupted"))?
        .map_err(crypto_error)
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    kty: Option<String>,
    key_size: Option<u32>,
    crv: Option<String>,
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

/// The spec a create request (or a certificate policy) asks for: RSA defaults to 2048 bits,
/// EC to P-256.
pub fn key_spec(
    kty: KeyType,
    key_size: Option<u32>,
    crv: Option<&str>,
) -> Result<KeySpec, ApiError> {
    if kty.is_rsa() {
        Ok(KeySpec::Rsa(key_size.unwrap_or(2048)))
    } else {
        let curve = match crv {
            Some(crv) => Curve::parse(crv).map_err(crypto_error)?,
            None => Curve::P256,
        };
        Ok(KeySpec::Ec(curve))
    }
}

async fn keys_create(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    validate_name(KIND, &name)?;
    let kty = body
        .kty
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("The key type (kty) is required."))
        .and_then(|k| KeyType::parse(k).map_err(crypto_error))?;
    check_tier(&ctx, kty)?;
    let spec = key_spec(kty, body.key_size, body.crv.as_deref())?;
    refuse_if_managed(&ctx, &name, "create")?;
    ctx.lock()
        .check_name_free(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let material = generate(spec).await?;
    let stored = StoredKey {
        kty,
        key_ops: body.key_ops.unwrap_or_else(|| kty.default_key_ops()),
        material,
    };
    let mut version = stored.new_version(ctx.now_s())?;
    version.tags = body.tags;
    if let Some(attrs) = &body.attributes {
        apply_attributes(&mut version.attributes, attrs);
    }
    store_new_version(&ctx, &name, version)
}

#[derive(Debug, Deserialize)]
struct ImportBody {
    key: Option<JsonWebKey>,
    #[serde(rename = "Hsm", alias = "hsm")]
    hsm: Option<bool>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

async fn keys_import(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<Response, ApiError> {
    validate_name(KIND, &name)?;
    let jwk = body
        .key
        .ok_or_else(|| ApiError::bad_parameter("The key (key) is required."))?;
    let kty = KeyType::parse(jwk.kty.as_deref().unwrap_or(""))
        .map_err(crypto_error)?
        .with_hsm(
            body.hsm.unwrap_or(false) || jwk.kty.as_deref().is_some_and(|k| k.ends_with("-HSM")),
        );
    check_tier(&ctx, kty)?;
    let material = KeyMaterial::from_jwk(&jwk).map_err(crypto_error)?;
    refuse_if_managed(&ctx, &name, "import")?;
    let stored = StoredKey {
        kty,
        key_ops: jwk.key_ops.clone().unwrap_or_else(|| kty.default_key_ops()),
        material,
    };
    let mut version = stored.new_version(ctx.now_s())?;
    version.tags = body.tags;
    if let Some(attrs) = &body.attributes {
        apply_attributes(&mut version.attributes, attrs);
    }
    store_new_version(&ctx, &name, version)
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
    Ok(ok_json(&Value::Object(key_bundle(
        ctx,
        &stored_name,
        &found,
    )?)))
}

async fn keys_get_latest(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    get_version(&ctx, &name, None)
}

async fn keys_get(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get_version(&ctx, &name, Some(&version))
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

fn update(
    ctx: &VaultCtx,
    name: &str,
    version: Option<&str>,
    body: UpdateBody,
) -> Result<Response, ApiError> {
    refuse_if_managed(ctx, name, "update")?;
    let t = ctx.timing();
    let new_payload = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, name, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        let current = object
            .version(version)
            .ok_or_else(|| ApiError::not_found(KIND, name, version))?;
        match body.key_ops {
            Some(ops) => {
                let mut stored = StoredKey::from_version(current)?;
                stored.key_ops = ops;
                Some(stored.to_payload()?)
            }
            None => None,
        }
    };
    let (stored_name, updated) = {
        let mut store = ctx.lock();
        let stored_name = store
            .object(KIND, name, t)
            .map(|o| o.name.clone())
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        let updated = store
            .update_version(KIND, name, version, t, |v| {
                if let Some(payload) = new_payload {
                    v.payload = payload;
                }
                if let Some(tags) = body.tags {
                    v.tags = Some(tags);
                }
                if let Some(attrs) = &body.attributes {
                    apply_attributes(&mut v.attributes, attrs);
                }
            })
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        (stored_name, updated)
    };
    Ok(ok_json(&Value::Object(key_bundle(
        ctx,
        &stored_name,
        &updated,
    )?)))
}

async fn keys_update_latest(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&ctx, &name, None, body)
}

async fn keys_update(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&ctx, &name, Some(&version), body)
}

async fn keys_delete(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    refuse_if_managed(&ctx, &name, "delete")?;
    let deleted = ctx
        .lock()
        .delete(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    Ok(ok_json(&deleted_bundle(&ctx, &deleted, true)?))
}

async fn keys_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let page = ctx.live_page(KIND, "/keys")?;
    Ok(ok_json(&ctx.page_body(
        page,
        |o: &StoredObject| match o.latest() {
            Some(v) => item(&ctx, &o.name, v, false),
            None => Value::Null,
        },
    )))
}

async fn keys_versions(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
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
        &format!("/keys/{stored_name}/versions"),
    )?;
    Ok(ok_json(&ctx.page_body(page, |(_, v)| {
        item(&ctx, &stored_name, v, true)
    })))
}

async fn keys_backup(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
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

#[derive(Debug, Deserialize)]
struct BlobBody {
    value: Option<String>,
}

async fn keys_restore(
    ctx: VaultCtx,
    JsonBody(body): JsonBody<BlobBody>,
) -> Result<Response, ApiError> {
    let blob = body
        .value
        .ok_or_else(|| ApiError::bad_parameter("The backup blob (value) is required."))?;
    let contents = ctx.open(KIND, &blob)?;
    let object = contents
        .take(KIND)
        .cloned()
        .ok_or_else(ApiError::malformed_backup)?;
    // Every version must still hold readable material: a blob is only as good as its keys.
    for version in &object.versions {
        StoredKey::from_version(version).map_err(|_| ApiError::malformed_backup())?;
    }
    let name = object.name.clone();
    let restored = ctx
        .lock()
        .restore(KIND, object, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let latest = restored.latest().ok_or_else(ApiError::malformed_backup)?;
    Ok(ok_json(&Value::Object(key_bundle(&ctx, &name, latest)?)))
}

async fn keys_rotate(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    refuse_if_managed(&ctx, &name, "rotate")?;
    let t = ctx.timing();
    let current = ctx
        .lock()
        .get(KIND, &name, None, t)
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let previous = StoredKey::from_version(&current)?;
    let material = generate(previous.material.spec()).await?;
    let stored = StoredKey {
        kty: previous.kty,
        key_ops: previous.key_ops,
        material,
    };
    let mut version = stored.new_version(ctx.now_s())?;
    version.tags = current.tags.clone();
    store_new_version(&ctx, &name, version)
}

/// The policy a key without one reports, as Key Vault does: notify 30 days before expiry.
fn default_rotation_policy() -> Value {
    json!({
        "lifetimeActions": [
            {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}
        ],
        "attributes": {}
    })
}

async fn keys_rotation_policy_get(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let (stored_name, policy) = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let policy = object
            .meta
            .get("rotationPolicy")
            .cloned()
            .unwrap_or_else(default_rotation_policy);
        (object.name.clone(), policy)
    };
    Ok(ok_json(&rotation_policy_body(&ctx, &stored_name, policy)))
}

fn rotation_policy_body(ctx: &VaultCtx, name: &str, policy: Value) -> Value {
    let mut map = Map::new();
    map.insert(
        "id".into(),
        json!(format!(
            "{}/rotationpolicy",
            ctx.object_id(KIND, name, None)
        )),
    );
    if let Value::Object(rest) = policy {
        map.extend(rest);
    }
    Value::Object(map)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RotationPolicyBody {
    lifetime_actions: Option<Vec<Value>>,
    attributes: Option<Map<String, Value>>,
}

async fn keys_rotation_policy_put(
    ctx: VaultCtx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RotationPolicyBody>,
) -> Result<Response, ApiError> {
    let t = ctx.timing();
    let now = t.now_s();
    let (stored_name, policy) = {
        let mut store = ctx.lock();
        let object = store
            .object_mut(KIND, &name, t)
            .map_err(|e| ctx.store_error(KIND, &name, e))?;
        let created = object
            .meta
            .get("rotationPolicy")
            .and_then(|p| p.pointer("/attributes/created"))
            .and_then(Value::as_i64)
            .unwrap_or(now);
        let mut attributes = Map::new();
        if let Some(expiry) = body
            .attributes
            .as_ref()
            .and_then(|a| a.get("expiryTime"))
            .filter(|v| !v.is_null())
        {
            attributes.insert("expiryTime".into(), expiry.clone());
        }
        attributes.insert("created".into(), json!(created));
        attributes.insert("updated".into(), json!(now));
        let policy = json!({
            "lifetimeActions": body.lifetime_actions.unwrap_or_default(),
            "attributes": attributes,
        });
        if !object.meta.is_object() {
            object.meta = json!({});
        }
        object.meta["rotationPolicy"] = policy.clone();
        (object.name.clone(), policy)
    };
    Ok(ok_json(&rotation_policy_body(&ctx, &stored_name, policy)))
}

#[derive(Debug, Deserialize)]
struct SignBody {
    alg: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    alg: Option<String>,
    digest: Option<String>,
    value: Option<String>,
}

/// Whether an operation is refused outside the key's `nbf`/`exp` window. Azure documents that
/// `exp` and `nbf` bar only what makes new protected data (encrypt, wrapKey, sign); decrypt,
/// unwrapKey and verify keep working so that data protected earlier stays readable
/// (<https://learn.microsoft.com/azure/key-vault/keys/about-keys-details#date-time-controlled-operations>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Enforced,
    Ignored,
}

/// The usable key for a cryptographic operation: enabled, granted `operation` by its
/// `key_ops` (else 403 `KeyOperationForbidden`, as Azure answers), and, for operations that
/// make new protected data, inside its `nbf`/`exp` window (else 403 `KeyExpired` or
/// `KeyNotYetValid`).
fn key_for_operation(
    ctx: &VaultCtx,
    name: &str,
    version: &str,
    operation: &str,
    window: Window,
) -> Result<(String, Version, StoredKey), ApiError> {
    let t = ctx.timing();
    let (stored_name, found) = {
        let mut store = ctx.lock();
        let object = store
            .object(KIND, name, t)
            .map_err(|e| ctx.store_error(KIND, name, e))?;
        let found = object
            .version(Some(version))
            .cloned()
            .ok_or_else(|| ApiError::not_found(KIND, name, Some(version)))?;
        (object.name.clone(), found)
    };
    if !found.attributes.enabled {
        return Err(ApiError::forbidden(
            "KeyDisabled",
            format!("Operation {operation} is not allowed on a disabled key."),
        ));
    }
    let stored = StoredKey::from_version(&found)?;
    if !stored
        .key_ops
        .iter()
        .any(|op| op.eq_ignore_ascii_case(operation))
    {
        return Err(ApiError::forbidden(
            "KeyOperationForbidden",
            format!("Operation {operation} is not permitted on this key."),
        ));
    }
    if window == Window::Enforced {
        let now = t.now_s();
        if found.attributes.exp.is_some_and(|exp| exp <= now) {
            return Err(ApiError::forbidden(
                "KeyExpired",
                format!("Operation {operation} is not allowed on an expired key."),
            ));
        }
        if found.attributes.nbf.is_some_and(|nbf| nbf > now) {
            return Err(ApiError::forbidden(
                "KeyNotYetValid",
                format!("Operation {operation} is not allowed on a key that is not yet valid."),
            ));
        }
    }
    Ok((stored_name, found, stored))
}

fn parse_alg(alg: Option<&str>) -> Result<SignatureAlgorithm, ApiError> {
    let alg = alg.ok_or_else(|| ApiError::bad_parameter("The algorithm (alg) is required."))?;
    SignatureAlgorithm::parse(alg).map_err(crypto_error)
}

fn b64_field(value: Option<&str>, field: &str) -> Result<Vec<u8>, ApiError> {
    let text = value.ok_or_else(|| ApiError::bad_parameter(format!("The {field} is required.")))?;
    decode_b64url(text)
        .ok_or_else(|| ApiError::bad_parameter(format!("The {field} is not base64url.")))
}

async fn keys_sign(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<SignBody>,
) -> Result<Response, ApiError> {
    sign(&ctx, &name, &version, body)
}

fn sign(ctx: &VaultCtx, name: &str, version: &str, body: SignBody) -> Result<Response, ApiError> {
    let alg = parse_alg(body.alg.as_deref())?;
    let digest = b64_field(body.value.as_deref(), "digest (value)")?;
    let (stored_name, found, stored) =
        key_for_operation(ctx, name, version, "sign", Window::Enforced)?;
    let signature = stored.material.sign(alg, &digest).map_err(crypto_error)?;
    Ok(ok_json(&json!({
        "kid": ctx.object_id(KIND, &stored_name, Some(&found.id)),
        "value": URL_SAFE_NO_PAD.encode(signature),
    })))
}

async fn keys_verify(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Response, ApiError> {
    verify(&ctx, &name, &version, body)
}

fn verify(
    ctx: &VaultCtx,
    name: &str,
    version: &str,
    body: VerifyBody,
) -> Result<Response, ApiError> {
    let alg = parse_alg(body.alg.as_deref())?;
    let digest = b64_field(body.digest.as_deref(), "digest")?;
    let signature = b64_field(body.value.as_deref(), "signature (value)")?;
    let (_, _, stored) = key_for_operation(ctx, name, version, "verify", Window::Ignored)?;
    let valid = stored
        .material
        .verify(alg, &digest, &signature)
        .map_err(crypto_error)?;
    Ok(ok_json(&json!({ "value": valid })))
}

#[derive(Debug, Deserialize)]
struct CipherBody {
    alg: Option<String>,
    // The plaintext of `encrypt`/`wrapKey` (a content key) must never reach Debug output.
    value: Option<Redacted<String>>,
}

/// One RSA cipher operation: `operation` is the `key_ops` entry it needs, `seal` whether it
/// encrypts (and so is barred outside the key's window) or decrypts.
fn cipher(
    ctx: &VaultCtx,
    name: &str,
    version: &str,
    operation: &str,
    seal: bool,
    body: CipherBody,
) -> Result<Response, ApiError> {
    let alg = body
        .alg
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("The algorithm (alg) is required."))?;
    let alg = EncryptionAlgorithm::parse(alg).map_err(crypto_error)?;
    let input = b64_field(body.value.as_ref().map(|v| v.0.as_str()), "value")?;
    let window = if seal {
        Window::Enforced
    } else {
        Window::Ignored
    };
    let (stored_name, found, stored) = key_for_operation(ctx, name, version, operation, window)?;
    if !stored.kty.is_rsa() {
        // Key Vault's EC keys sign and verify only; no algorithm encrypts with them.
        return Err(ApiError::bad_parameter(format!(
            "Operation {operation} is not supported for key type {}: only RSA keys encrypt, decrypt, wrap and unwrap.",
            stored.kty.as_str()
        )));
    }
    let output = if seal {
        stored.material.encrypt(alg, &input)
    } else {
        stored.material.decrypt(alg, &input)
    }
    .map_err(crypto_error)?;
    // The spec's `KeyOperationResult`: `kid` and `value` (no `iv`/`tag`/`aad`: RSA only).
    Ok(ok_json(&json!({
        "kid": ctx.object_id(KIND, &stored_name, Some(&found.id)),
        "value": URL_SAFE_NO_PAD.encode(output),
    })))
}

async fn keys_encrypt(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<CipherBody>,
) -> Result<Response, ApiError> {
    cipher(&ctx, &name, &version, "encrypt", true, body)
}

async fn keys_decrypt(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<CipherBody>,
) -> Result<Response, ApiError> {
    cipher(&ctx, &name, &version, "decrypt", false, body)
}

async fn keys_wrap(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<CipherBody>,
) -> Result<Response, ApiError> {
    cipher(&ctx, &name, &version, "wrapKey", true, body)
}

async fn keys_unwrap(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody<CipherBody>,
) -> Result<Response, ApiError> {
    cipher(&ctx, &name, &version, "unwrapKey", false, body)
}

/// `POST /keys/{name}//{operation}`: the official clients send an empty version when the
/// caller names none (the Rust crates' `key_version: None`), and Azure then uses the current
/// version; `StoredObject::version` reads `""` as the current one.
async fn keys_operation_current(
    ctx: VaultCtx,
    Path((name, operation)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, ApiError> {
        serde_json::from_value(body)
            .map_err(|e| ApiError::bad_parameter(format!("The request body is not valid: {e}")))
    }
    match operation.as_str() {
        "sign" => sign(&ctx, &name, "", parse(body)?),
        "verify" => verify(&ctx, &name, "", parse(body)?),
        "encrypt" => cipher(&ctx, &name, "", "encrypt", true, parse(body)?),
        "decrypt" => cipher(&ctx, &name, "", "decrypt", false, parse(body)?),
        "wrapkey" => cipher(&ctx, &name, "", "wrapKey", true, parse(body)?),
        "unwrapkey" => cipher(&ctx, &name, "", "unwrapKey", false, parse(body)?),
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The route POST /keys/{name}//{other} is not served by this vault."),
        )),
    }
}

/// The answer to the 2026-04-01 TEE operations (`securewrapkey`, `secureunwrapkey`): they run
/// inside a Managed HSM's trusted execution environment, attested through Microsoft Azure
/// Attestation, which a vault (and so this one) does not have. The key must exist (404
/// first, as for every key operation); then 400 `BadParameter` with inner `NotSupported`, the
/// shape Azure gives a feature the vault type lacks (`Invalid kty value: oct` +
/// `KeyTypeNotSupported`).
fn secure_refusal(ctx: &VaultCtx, name: &str, version: &str, operation: &str) -> ApiError {
    let t = ctx.timing();
    let mut store = ctx.lock();
    match store.object(KIND, name, t) {
        Err(e) => ctx.store_error(KIND, name, e),
        Ok(object) if object.version(Some(version)).is_none() => {
            ApiError::not_found(KIND, name, Some(version))
        }
        Ok(_) => ApiError::bad_parameter(format!(
            "Operation {operation} is not supported by this vault: it needs a Managed HSM with an attested trusted execution environment."
        ))
        .with_inner("NotSupported"),
    }
}

async fn keys_secure_wrap(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
) -> ApiError {
    secure_refusal(&ctx, &name, &version, "securewrapkey")
}

async fn keys_secure_unwrap(
    ctx: VaultCtx,
    Path((name, version)): Path<(String, String)>,
) -> ApiError {
    secure_refusal(&ctx, &name, &version, "secureunwrapkey")
}

#[derive(Debug, Deserialize)]
struct RngBody {
    count: Option<i64>,
}

/// The most bytes one `POST /rng` returns (the spec's `GetRandomBytesRequest.count` maximum).
pub const RNG_MAX_BYTES: i64 = 128;

// The vault context is taken (and unused) so that `/rng` answers only behind the vault gate:
// the challenge, the token check, faults and the budget apply to it as to every vault route.
async fn keys_rng(_ctx: VaultCtx, JsonBody(body): JsonBody<RngBody>) -> Result<Response, ApiError> {
    let count = body
        .count
        .ok_or_else(|| ApiError::bad_parameter("The number of bytes (count) is required."))?;
    if !(1..=RNG_MAX_BYTES).contains(&count) {
        return Err(ApiError::bad_parameter(format!(
            "The number of bytes (count) must be 1 to {RNG_MAX_BYTES}, not {count}."
        )));
    }
    let mut bytes = vec![0u8; usize::try_from(count).unwrap_or(0)];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    Ok(ok_json(&json!({ "value": URL_SAFE_NO_PAD.encode(bytes) })))
}

/// Refuses `operation` on a deleted key a certificate manages.
fn refuse_if_deleted_managed(ctx: &VaultCtx, name: &str, operation: &str) -> Result<(), ApiError> {
    let deleted = ctx
        .lock()
        .deleted(KIND, name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, name, e))?;
    if deleted.object.latest().is_some_and(|v| v.managed) {
        return Err(managed_refusal(operation, name));
    }
    Ok(())
}

async fn deleted_keys_list(ctx: VaultCtx) -> Result<Response, ApiError> {
    let deleted = ctx.lock().deleted_list(KIND, ctx.timing());
    let page = ctx.page(
        deleted,
        |d| d.object.name.to_ascii_lowercase(),
        "/deletedkeys",
    )?;
    Ok(ok_json(&ctx.page_body(page, |d| {
        deleted_bundle(&ctx, d, false).unwrap_or(Value::Null)
    })))
}

async fn deleted_keys_get(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    let deleted = ctx
        .lock()
        .deleted(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    Ok(ok_json(&deleted_bundle(&ctx, &deleted, true)?))
}

async fn deleted_keys_purge(ctx: VaultCtx, Path(name): Path<String>) -> Result<Response, ApiError> {
    refuse_if_deleted_managed(&ctx, &name, "purge")?;
    ctx.lock()
        .purge(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deleted_keys_recover(
    ctx: VaultCtx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    refuse_if_deleted_managed(&ctx, &name, "recover")?;
    let recovered = ctx
        .lock()
        .recover(KIND, &name, ctx.timing())
        .map_err(|e| ctx.store_error(KIND, &name, e))?;
    let latest = recovered
        .latest()
        .ok_or_else(|| ApiError::not_found(KIND, &name, None))?;
    Ok(ok_json(&Value::Object(key_bundle(
        &ctx,
        &recovered.name,
        latest,
    )?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_key_survives_its_payload() {
        let material = KeyMaterial::generate(KeySpec::Ec(Curve::P384)).expect("key");
        let stored = StoredKey {
            kty: KeyType::EcHsm,
            key_ops: vec!["sign".into()],
            material,
        };
        let version = stored.new_version(100).expect("version");
        let shown = format!("{version:?}");
        assert!(shown.contains("[redacted]"));
        let back = StoredKey::from_version(&version).expect("readable");
        assert_eq!(back.kty, KeyType::EcHsm);
        assert_eq!(back.key_ops, ["sign"]);
        assert_eq!(back.material, stored.material);
    }

    #[test]
    fn key_spec_defaults_and_refusals() {
        assert_eq!(
            key_spec(KeyType::Rsa, None, None).ok(),
            Some(KeySpec::Rsa(2048))
        );
        assert_eq!(
            key_spec(KeyType::Ec, None, None).ok(),
            Some(KeySpec::Ec(Curve::P256))
        );
        let err = key_spec(KeyType::Ec, None, Some("P-256K")).expect_err("secp256k1");
        assert_eq!(
            (err.status.as_u16(), err.code.as_str()),
            (400, "BadParameter")
        );
    }

    #[test]
    fn caller_mistakes_are_400_and_library_failures_500() {
        let bad = crypto_error(CryptoError::UnsupportedKeySize(1024));
        assert_eq!(bad.status.as_u16(), 400);
        let internal = crypto_error(CryptoError::Operation("rng".into()));
        assert_eq!(internal.status.as_u16(), 500);
    }
}
