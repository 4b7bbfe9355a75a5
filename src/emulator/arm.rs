//! Azure Resource Manager, the part clients and discovery need: the subscriptions and tenants a
//! principal sees (what `az login` lists) and the Key Vault resources of a subscription (what
//! `az keyvault list` and fleet discovery read), with Azure's shapes, paging and error envelope.
//!
//! ARM lives on `https://localhost:PORT/` (the ready line's `arm_endpoint`) under `/subscriptions`
//! and `/tenants`: `localhost` resolves everywhere without `/etc/hosts` lines, it is in the
//! server certificate already, and no vault route starts with those segments. Requests to a
//! `NAME.vault.localhost` host are not ARM's.
//!
//! Tokens come from the same issuer, for the ARM audiences (`https://management.azure.com/`,
//! `https://management.core.windows.net/`); a vault token is refused here and an ARM token by a
//! vault. Lists show only what belongs to the token's tenant. Subscriptions are the ones the
//! vaults name; each belongs to its vaults' tenant. Only reads are served.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::auth::{self, TokenError, decode_claims};
use super::error::ApiError;
use super::http::{ok_json, request_host};
use super::state::{AppState, Vault, strip_port};
use super::{AuthMode, Sku, VaultSpec};

/// `api-version`s of `Microsoft.Resources` subscriptions and tenants (azure-rest-api-specs
/// `specification/resources/resource-manager/Microsoft.Resources/stable/`; the Azure CLI sends
/// 2022-12-01).
pub const SUBSCRIPTION_API_VERSIONS: &[&str] = &[
    "2014-04-01-preview",
    "2015-11-01",
    "2016-06-01",
    "2018-06-01",
    "2019-06-01",
    "2019-11-01",
    "2020-01-01",
    "2021-01-01",
    "2022-12-01",
];

/// `api-version`s of `Microsoft.Resources` resources (the `$filter` list of a subscription;
/// `azure-mgmt-keyvault` sends 2015-11-01).
pub const RESOURCE_API_VERSIONS: &[&str] = &[
    "2015-11-01",
    "2016-02-01",
    "2016-07-01",
    "2016-09-01",
    "2017-05-10",
    "2018-02-01",
    "2018-05-01",
    "2019-03-01",
    "2019-05-01",
    "2019-05-10",
    "2019-07-01",
    "2019-08-01",
    "2019-10-01",
    "2020-06-01",
    "2020-08-01",
    "2020-10-01",
    "2021-01-01",
    "2021-04-01",
    "2022-09-01",
    "2023-07-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-03-01",
    "2025-04-01",
];

/// `api-version`s of `Microsoft.KeyVault` (azure-rest-api-specs
/// `specification/keyvault/resource-manager/Microsoft.KeyVault/`; `azure-mgmt-keyvault` 14
/// and the Azure CLI send 2026-02-01).
pub const KEYVAULT_API_VERSIONS: &[&str] = &[
    "2015-06-01",
    "2016-10-01",
    "2018-02-14",
    "2018-02-14-preview",
    "2019-09-01",
    "2020-04-01-preview",
    "2021-04-01-preview",
    "2021-06-01-preview",
    "2021-10-01",
    "2021-11-01-preview",
    "2022-02-01-preview",
    "2022-07-01",
    "2022-11-01",
    "2023-02-01",
    "2023-07-01",
    "2023-08-01-preview",
    "2024-04-01-preview",
    "2024-11-01",
    "2024-12-01-preview",
    "2025-05-01",
    "2026-02-01",
];

/// The audiences ARM accepts, as Azure lists them in its refusal.
pub const ARM_AUDIENCES: &[&str] = &[
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
];

/// The largest `$top` ARM lists take.
const MAX_TOP: usize = 1000;

/// `api-version`s of the cloud metadata endpoint (`GET /metadata/endpoints`).
pub const METADATA_API_VERSIONS: &[&str] = &[
    "2015-01-01",
    "2018-01-01",
    "2019-05-01",
    "2020-06-01",
    "2022-09-01",
];

/// ARM's routes: everything under `/subscriptions` and `/tenants`, and the cloud metadata
/// endpoint (`//metadata/endpoints` too: `az cloud register` appends the path to an endpoint
/// that ends in `/`, and Azure answers it).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metadata/endpoints", get(metadata_endpoints))
        .route("//metadata/endpoints", get(metadata_endpoints))
        .route("/subscriptions", any(arm_request))
        .route("/subscriptions/", any(arm_request))
        .route("/subscriptions/{*rest}", any(arm_request))
        .route("/tenants", any(arm_request))
}

/// The cloud's endpoints as ARM publishes them (unauthenticated, as Azure's): what
/// `az cloud register --endpoint-resource-manager` reads to fill in the rest of a cloud — the
/// login endpoint and ARM audiences, and the Key Vault DNS suffix `vault.localhost:PORT`.
async fn metadata_endpoints(State(state): State<AppState>, request: Request) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    match query.get("api-version") {
        Some(v) if METADATA_API_VERSIONS.contains(&v.as_str()) => {}
        Some(v) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    METADATA_API_VERSIONS.join(",")
                ),
            )
            .into_response();
        }
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
            .into_response();
        }
    }
    let authority = auth::authority(&state);
    let port = state.port();
    ok_json(&json!({
        "name": "coldvault-local",
        "portal": authority,
        "authentication": {
            "loginEndpoint": authority,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "resourceManager": format!("{authority}/"),
        "suffixes": {
            "keyVaultDns": format!("vault.localhost:{port}"),
        },
    }))
}

/// What an ARM handler knows of its request.
struct ArmCtx {
    state: AppState,
    /// The token's tenant (declared spelling).
    tenant: String,
    /// `https://` + the Host the client sent: the base of every `nextLink`.
    base: String,
    path: String,
    query: HashMap<String, String>,
}

/// One subscription, as the vaults declare it.
struct Subscription {
    id: String,
    tenant: String,
}

fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// 401 with ARM's `WWW-Authenticate` (`authorization_uri` names where to get a token).
fn unauthorized(state: &AppState, tenant: &str, code: &str, message: String) -> ApiError {
    let description = message
        .split(". ")
        .next()
        .unwrap_or_default()
        .replace('"', "'");
    let mut err = arm_error(StatusCode::UNAUTHORIZED, code, message);
    err.challenge = Some(format!(
        "Bearer authorization_uri=\"{}/{tenant}\", error=\"invalid_token\", error_description=\"{description}.\"",
        auth::authority(state)
    ));
    err
}

async fn arm_request(State(state): State<AppState>, request: Request) -> Response {
    // Only the head matters: the body is never read (and a `Request` is not `Sync`).
    let (parts, _body) = request.into_parts();
    let host = request_host(&parts.uri, &parts.headers);
    let hostname = strip_port(&host).to_ascii_lowercase();
    let path = parts.uri.path().trim_end_matches('/').to_string();
    if hostname.ends_with(".vault.localhost") {
        // A vault host: these paths are no vault route.
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "The route {} {path} is not served by this vault.",
                parts.method
            ),
        )
        .into_response();
    }
    let first = state.issuer.tenant_id.clone();
    let tenant = match authenticate(&state, &parts.headers).await {
        Ok(tenant) => tenant,
        Err(err) => return err.into_response(),
    };
    if parts.method != Method::GET {
        return arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The local Azure Resource Manager serves reads only; {} {path} is not served.",
                parts.method
            ),
        )
        .into_response();
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let ctx = ArmCtx {
        tenant: state.issuer.tenant(&tenant).map_or(first, str::to_string),
        state: state.clone(),
        base: format!("https://{host}"),
        path,
        query,
    };
    route(&ctx).unwrap_or_else(IntoResponse::into_response)
}

/// The bearer token's tenant, or ARM's 401.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let first = state.issuer.tenant_id.clone();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        return Err(unauthorized(
            state,
            &first,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
        ));
    };
    if state.settings().auth == AuthMode::Off {
        return Ok(decode_claims(&token)
            .ok()
            .and_then(|c| c.tid)
            .unwrap_or(first));
    }
    // The endpoint itself is an audience too, as `https://management.azure.com/` is Azure's:
    // a client asking for `{arm_endpoint}/.default` gets a token ARM takes.
    let mut audiences: Vec<String> = ARM_AUDIENCES.iter().map(|a| (*a).to_string()).collect();
    audiences.push(format!("{}/", auth::authority(state)));
    let now = state.clock.now_s();
    match state
        .issuer
        .check(&token, &auth::authority(state), &audiences, now)
        .await
    {
        Ok(claims) => Ok(claims.tid.unwrap_or(first)),
        Err(TokenError::Audience { found, .. }) => Err(unauthorized(
            state,
            &first,
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{found}'. It should exactly match with one of the allowed audiences {}.",
                ARM_AUDIENCES
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )),
        Err(TokenError::Issuer { found, .. }) => Err(unauthorized(
            state,
            &first,
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer '{found}'. It must match one of the tenants served here."
            ),
        )),
        Err(TokenError::Expired) => {
            let exp = decode_claims(&token).map(|c| c.exp).unwrap_or_default();
            Err(unauthorized(
                state,
                &first,
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    utc(exp),
                    utc(now)
                ),
            ))
        }
        Err(TokenError::Malformed | TokenError::BadSignature) => Err(unauthorized(
            state,
            &first,
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
        )),
    }
}

/// ARM's time format in messages: `11/30/2026 14:00:00`.
fn utc(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s).map_or_else(
        |_| unix_s.to_string(),
        |t| {
            format!(
                "{}/{}/{} {:02}:{:02}:{:02}",
                u8::from(t.month()),
                t.day(),
                t.year(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

fn route(ctx: &ArmCtx) -> Result<Response, ApiError> {
    let segments: Vec<&str> = ctx.path.split('/').filter(|s| !s.is_empty()).collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["tenants"] => {
            ctx.api_version(SUBSCRIPTION_API_VERSIONS, "InvalidApiVersionParameter")?;
            Ok(tenants_list(ctx))
        }
        ["subscriptions"] => {
            ctx.api_version(SUBSCRIPTION_API_VERSIONS, "InvalidApiVersionParameter")?;
            subscriptions_list(ctx)
        }
        ["subscriptions", _, rest @ ..] => {
            let subscription = ctx.subscription(segments[1])?;
            match rest {
                [] => {
                    ctx.api_version(SUBSCRIPTION_API_VERSIONS, "InvalidApiVersionParameter")?;
                    Ok(ok_json(&subscription_json(&subscription)))
                }
                ["resources"] => {
                    ctx.api_version(RESOURCE_API_VERSIONS, "InvalidApiVersionParameter")?;
                    resources_list(ctx, &subscription)
                }
                ["providers", "microsoft.keyvault", kind] => {
                    ctx.api_version(KEYVAULT_API_VERSIONS, "NoRegisteredProviderFound")?;
                    match *kind {
                        "vaults" => vaults_list(ctx, &subscription, None),
                        "deletedvaults" => deleted_vaults_list(ctx, &subscription),
                        "managedhsms" => managed_hsms_list(ctx, &subscription, None),
                        // No Managed HSM is ever deleted here.
                        "deletedmanagedhsms" => ctx.list(Vec::new()),
                        _ => Err(unknown_type(ctx, kind)),
                    }
                }
                [
                    "resourcegroups",
                    _,
                    "providers",
                    "microsoft.keyvault",
                    kind,
                    tail @ ..,
                ] => {
                    ctx.api_version(KEYVAULT_API_VERSIONS, "NoRegisteredProviderFound")?;
                    let group = segments[3];
                    ctx.resource_group(&subscription, group)?;
                    match (*kind, tail) {
                        ("vaults", []) => vaults_list(ctx, &subscription, Some(group)),
                        ("vaults", [_]) => vaults_get(ctx, &subscription, group, segments[7]),
                        ("managedhsms", []) => managed_hsms_list(ctx, &subscription, Some(group)),
                        _ => Err(unknown_type(ctx, kind)),
                    }
                }
                _ => Err(not_served(ctx)),
            }
        }
        _ => Err(not_served(ctx)),
    }
}

fn not_served(ctx: &ArmCtx) -> ApiError {
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "The route GET {} is not served by the local Azure Resource Manager.",
            ctx.path
        ),
    )
}

fn unknown_type(ctx: &ArmCtx, kind: &str) -> ApiError {
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!(
            "The resource type '{kind}' could not be found in the namespace 'Microsoft.KeyVault' for api version '{}'.",
            ctx.query.get("api-version").map_or("", String::as_str)
        ),
    )
}

impl ArmCtx {
    /// The request's `api-version` if it is one of `accepted`; else ARM's 400.
    fn api_version(&self, accepted: &[&str], code: &str) -> Result<(), ApiError> {
        match self.query.get("api-version") {
            None => Err(arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )),
            Some(v) if accepted.contains(&v.as_str()) => Ok(()),
            Some(v) => Err(arm_error(
                StatusCode::BAD_REQUEST,
                code,
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    accepted.join(",")
                ),
            )),
        }
    }

    /// Every subscription the vaults (live and deleted) and Managed HSMs name, with its tenant.
    fn subscriptions(&self) -> Vec<Subscription> {
        let mut seen: BTreeMap<String, Subscription> = BTreeMap::new();
        let config = &self.state.config;
        let specs = self
            .state
            .vaults
            .values()
            .map(|v| &v.spec)
            .chain(&config.deleted_vaults)
            .chain(&config.managed_hsms);
        for spec in specs {
            seen.entry(spec.subscription.to_ascii_lowercase())
                .or_insert_with(|| Subscription {
                    id: spec.subscription.clone(),
                    tenant: self.spec_tenant(spec).to_string(),
                });
        }
        seen.into_values().collect()
    }

    /// The tenant a declared vault or Managed HSM belongs to.
    fn spec_tenant<'a>(&'a self, spec: &'a VaultSpec) -> &'a str {
        spec.tenant
            .as_deref()
            .unwrap_or(&self.state.issuer.tenant_id)
    }

    /// The declared specs of `list` in `subscription`.
    fn specs_of<'a>(
        &self,
        list: &'a [VaultSpec],
        subscription: &Subscription,
    ) -> Vec<&'a VaultSpec> {
        list.iter()
            .filter(|s| s.subscription.eq_ignore_ascii_case(&subscription.id))
            .collect()
    }

    /// The subscription `id` if it exists and belongs to the token's tenant: 404
    /// `SubscriptionNotFound`, or 401 `InvalidAuthenticationTokenTenant` as Azure answers a
    /// token of another tenant.
    fn subscription(&self, id: &str) -> Result<Subscription, ApiError> {
        let Some(found) = self
            .subscriptions()
            .into_iter()
            .find(|s| s.id.eq_ignore_ascii_case(id))
        else {
            return Err(arm_error(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{id}' could not be found."),
            ));
        };
        if !found.tenant.eq_ignore_ascii_case(&self.tenant) {
            let authority = auth::authority(&self.state);
            return Err(unauthorized(
                &self.state,
                &found.tenant,
                "InvalidAuthenticationTokenTenant",
                format!(
                    "The access token is from the wrong issuer '{}'. It must match the tenant '{}' associated with this subscription. Please use the authority (URL) '{authority}/{}' to get the token.",
                    auth::issuer_url_of(&authority, &self.tenant),
                    auth::issuer_url_of(&authority, &found.tenant),
                    found.tenant
                ),
            ));
        }
        Ok(found)
    }

    /// 404 `ResourceGroupNotFound` unless a vault of `subscription` is in `group`.
    fn resource_group(&self, subscription: &Subscription, group: &str) -> Result<(), ApiError> {
        let known = self
            .vaults_of(subscription)
            .iter()
            .map(|v| &v.spec)
            .chain(self.specs_of(&self.state.config.managed_hsms, subscription))
            .any(|spec| spec.resource_group.eq_ignore_ascii_case(group));
        if known {
            Ok(())
        } else {
            Err(arm_error(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{group}' could not be found."),
            ))
        }
    }

    /// The vaults of `subscription`, by name.
    fn vaults_of(&self, subscription: &Subscription) -> Vec<&Vault> {
        self.state
            .vaults
            .values()
            .filter(|v| v.spec.subscription.eq_ignore_ascii_case(&subscription.id))
            .map(AsRef::as_ref)
            .collect()
    }

    /// One page of `items`: `$top` items (the emulator's page size when absent) after the
    /// `$skiptoken`, and a `nextLink` that keeps `api-version`, `$filter` and `$top` while
    /// more follow.
    fn list(&self, items: Vec<Value>) -> Result<Response, ApiError> {
        let top = match self.query.get("$top") {
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_TOP).contains(&n) => Some(n),
                _ => {
                    return Err(arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        format!(
                            "The value '{text}' of $top is invalid: it must be 1 to {MAX_TOP}."
                        ),
                    ));
                }
            },
            None => None,
        };
        let page_size = top.unwrap_or_else(|| self.state.settings().page_size as usize);
        let start = match self.query.get("$skiptoken") {
            None => 0,
            Some(token) => URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("arm:").and_then(|n| n.parse::<usize>().ok()))
                .ok_or_else(|| {
                    arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidSkipToken",
                        "The $skiptoken is not one this server made.",
                    )
                })?,
        };
        let total = items.len();
        let end = start.saturating_add(page_size).min(total);
        let page: Vec<Value> = items.into_iter().skip(start).take(page_size).collect();
        let mut body = json!({ "value": page });
        if end < total {
            let mut link = url::form_urlencoded::Serializer::new(String::new());
            if let Some(v) = self.query.get("api-version") {
                link.append_pair("api-version", v);
            }
            if let Some(filter) = self.query.get("$filter") {
                link.append_pair("$filter", filter);
            }
            if let Some(top) = top {
                link.append_pair("$top", &top.to_string());
            }
            link.append_pair("$skiptoken", &URL_SAFE_NO_PAD.encode(format!("arm:{end}")));
            body["nextLink"] = json!(format!("{}{}?{}", self.base, self.path, link.finish()));
        }
        Ok(ok_json(&body))
    }
}

fn tenants_list(ctx: &ArmCtx) -> Response {
    // A service principal sees its home tenant only.
    let tenant = &ctx.tenant;
    let short: String = tenant.chars().take(8).collect();
    let domain = format!("coldvault-{short}.onmicrosoft.localhost");
    ok_json(&json!({
        "value": [{
            "id": format!("/tenants/{tenant}"),
            "tenantId": tenant,
            "tenantCategory": "Home",
            "countryCode": "NL",
            "displayName": format!("coldvault local tenant {short}"),
            "domains": [domain],
            "defaultDomain": domain,
            "tenantType": "AAD",
        }],
    }))
}

fn subscription_json(subscription: &Subscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", subscription.id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": subscription.id,
        "tenantId": subscription.tenant,
        "displayName": format!("coldvault local {}", subscription.id),
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

fn subscriptions_list(ctx: &ArmCtx) -> Result<Response, ApiError> {
    let items: Vec<Value> = ctx
        .subscriptions()
        .iter()
        .filter(|s| s.tenant.eq_ignore_ascii_case(&ctx.tenant))
        .map(subscription_json)
        .collect();
    ctx.list(items)
}

/// The resource type of a vault.
const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
/// The resource type of a Managed HSM.
const HSM_TYPE: &str = "Microsoft.KeyVault/managedHSMs";

/// `/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/NAME`.
fn vault_id(vault: &Vault) -> String {
    resource_id(&vault.spec, VAULT_TYPE)
}

/// `/subscriptions/S/resourceGroups/RG/providers/{kind}/NAME`.
fn resource_id(spec: &VaultSpec, kind: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{kind}/{}",
        spec.subscription, spec.resource_group, spec.name
    )
}

/// The generic resource shape of the `/resources` list.
fn resource_json(spec: &VaultSpec, kind: &str) -> Value {
    let mut body = json!({
        "id": resource_id(spec, kind),
        "name": spec.name,
        "type": kind,
        "location": spec.geo,
        "tags": spec.tags,
    });
    if kind == HSM_TYPE {
        body["sku"] = json!({"family": "B", "name": "Standard_B1"});
    }
    body
}

/// A soft-deleted vault as `deletedVaults` lists it (Microsoft.KeyVault `DeletedVault`): its
/// id is under the location, `properties.vaultId` is the vault's former id.
fn deleted_vault_json(ctx: &ArmCtx, spec: &VaultSpec) -> Value {
    let deleted = ctx.state.started_s;
    let purge = deleted + i64::from(spec.retention_days) * 86_400;
    let mut properties = json!({
        "vaultId": resource_id(spec, VAULT_TYPE),
        "location": spec.geo,
        "deletionDate": rfc3339(deleted),
        "scheduledPurgeDate": rfc3339(purge),
        "tags": spec.tags,
    });
    if spec.purge_protection {
        properties["purgeProtectionEnabled"] = json!(true);
    }
    json!({
        "id": format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}",
            spec.subscription, spec.geo, spec.name
        ),
        "name": spec.name,
        "type": "Microsoft.KeyVault/deletedVaults",
        "properties": properties,
    })
}

/// A Managed HSM as `managedHSMs` lists it (Microsoft.KeyVault `ManagedHsm`).
fn managed_hsm_json(ctx: &ArmCtx, spec: &VaultSpec) -> Value {
    let mut properties = json!({
        "tenantId": ctx.spec_tenant(spec),
        "initialAdminObjectIds": [],
        "hsmUri": format!("https://{}.managedhsm.azure.net/", spec.name.to_ascii_lowercase()),
        "enableSoftDelete": true,
        "softDeleteRetentionInDays": spec.retention_days,
        "provisioningState": "Succeeded",
        "publicNetworkAccess": "Enabled",
    });
    properties["enablePurgeProtection"] = json!(spec.purge_protection);
    json!({
        "id": resource_id(spec, HSM_TYPE),
        "name": spec.name,
        "type": HSM_TYPE,
        "location": spec.geo,
        "sku": {"family": "B", "name": "Standard_B1"},
        "tags": spec.tags,
        "properties": properties,
    })
}

/// ARM's timestamps: RFC 3339 in UTC.
fn rfc3339(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn deleted_vaults_list(ctx: &ArmCtx, subscription: &Subscription) -> Result<Response, ApiError> {
    let items = ctx
        .specs_of(&ctx.state.config.deleted_vaults, subscription)
        .into_iter()
        .map(|spec| deleted_vault_json(ctx, spec))
        .collect();
    ctx.list(items)
}

fn managed_hsms_list(
    ctx: &ArmCtx,
    subscription: &Subscription,
    group: Option<&str>,
) -> Result<Response, ApiError> {
    let items = ctx
        .specs_of(&ctx.state.config.managed_hsms, subscription)
        .into_iter()
        .filter(|spec| group.is_none_or(|g| spec.resource_group.eq_ignore_ascii_case(g)))
        .map(|spec| managed_hsm_json(ctx, spec))
        .collect();
    ctx.list(items)
}

/// The full `Microsoft.KeyVault/vaults` shape.
fn vault_json(ctx: &ArmCtx, vault: &Vault) -> Value {
    let port = ctx.state.port();
    let mut properties = json!({
        "sku": {
            "family": "A",
            "name": match vault.spec.sku { Sku::Standard => "standard", Sku::Premium => "premium" },
        },
        "tenantId": ctx.state.vault_tenant(vault),
        "accessPolicies": [],
        "enabledForDeployment": false,
        "enabledForDiskEncryption": false,
        "enabledForTemplateDeployment": false,
        "enableSoftDelete": true,
        "softDeleteRetentionInDays": vault.spec.retention_days,
        "enableRbacAuthorization": true,
        "vaultUri": format!("https://{}.vault.localhost:{port}/", vault.spec.name.to_ascii_lowercase()),
        "provisioningState": "Succeeded",
        "publicNetworkAccess": "Enabled",
    });
    // Azure omits the flag until purge protection is on (it cannot be turned off again).
    if vault.spec.purge_protection {
        properties["enablePurgeProtection"] = json!(true);
    }
    json!({
        "id": vault_id(vault),
        "name": vault.spec.name,
        "type": VAULT_TYPE,
        "location": vault.spec.geo,
        "tags": vault.spec.tags,
        "properties": properties,
    })
}

fn resources_list(ctx: &ArmCtx, subscription: &Subscription) -> Result<Response, ApiError> {
    let clauses = match ctx.query.get("$filter") {
        None => Vec::new(),
        Some(filter) => parse_filter(filter).ok_or_else(|| {
            arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidFilterInQueryString",
                format!(
                    "Invalid $filter '{filter}': the local Azure Resource Manager takes clauses FIELD eq 'VALUE' (resourceType, name, location, resourceGroup, tagName, tagValue) joined by 'and'."
                ),
            )
        })?,
    };
    let vaults = ctx
        .vaults_of(subscription)
        .into_iter()
        .map(|v| (&v.spec, VAULT_TYPE));
    let hsms = ctx
        .specs_of(&ctx.state.config.managed_hsms, subscription)
        .into_iter()
        .map(|spec| (spec, HSM_TYPE));
    let items = vaults
        .chain(hsms)
        .filter(|(spec, kind)| {
            clauses
                .iter()
                .all(|(field, value)| filter_matches(spec, kind, field, value))
        })
        .map(|(spec, kind)| resource_json(spec, kind))
        .collect();
    ctx.list(items)
}

/// The clauses of an ARM `$filter`: `FIELD eq 'VALUE' [and FIELD eq 'VALUE']…` → `(field, value)`
/// with the field lower-cased; `None` for anything else.
fn parse_filter(filter: &str) -> Option<Vec<(String, String)>> {
    let mut clauses = Vec::new();
    let mut rest = filter.trim();
    loop {
        let (field, after) = rest.split_once(' ')?;
        let after = after.trim_start();
        let after = after
            .get(..3)
            .filter(|op| op.eq_ignore_ascii_case("eq "))
            .map(|_| after[3..].trim_start())?;
        let value_and_more = after.strip_prefix('\'')?;
        let end = value_and_more.find('\'')?;
        let field = field.to_ascii_lowercase();
        if ![
            "resourcetype",
            "name",
            "location",
            "resourcegroup",
            "tagname",
            "tagvalue",
        ]
        .contains(&field.as_str())
        {
            return None;
        }
        clauses.push((field, value_and_more[..end].to_string()));
        rest = value_and_more[end + 1..].trim_start();
        if rest.is_empty() {
            return Some(clauses);
        }
        rest = rest
            .get(..4)
            .filter(|and| and.eq_ignore_ascii_case("and "))
            .map(|_| rest[4..].trim_start())?;
    }
}

/// Whether a resource of type `kind` passes one `$filter` clause (ARM compares
/// case-insensitively).
fn filter_matches(spec: &VaultSpec, kind: &str, field: &str, value: &str) -> bool {
    match field {
        "resourcetype" => value.eq_ignore_ascii_case(kind),
        "name" => spec.name.eq_ignore_ascii_case(value),
        "location" => spec.geo.eq_ignore_ascii_case(value),
        "resourcegroup" => spec.resource_group.eq_ignore_ascii_case(value),
        "tagname" => spec.tags.keys().any(|k| k.eq_ignore_ascii_case(value)),
        "tagvalue" => spec.tags.values().any(|v| v == value),
        _ => false,
    }
}

fn vaults_list(
    ctx: &ArmCtx,
    subscription: &Subscription,
    group: Option<&str>,
) -> Result<Response, ApiError> {
    let items = ctx
        .vaults_of(subscription)
        .into_iter()
        .filter(|v| group.is_none_or(|g| v.spec.resource_group.eq_ignore_ascii_case(g)))
        .map(|v| vault_json(ctx, v))
        .collect();
    ctx.list(items)
}

fn vaults_get(
    ctx: &ArmCtx,
    subscription: &Subscription,
    group: &str,
    name: &str,
) -> Result<Response, ApiError> {
    ctx.vaults_of(subscription)
        .into_iter()
        .find(|v| {
            v.spec.name.eq_ignore_ascii_case(name)
                && v.spec.resource_group.eq_ignore_ascii_case(group)
        })
        .map(|v| ok_json(&vault_json(ctx, v)))
        .ok_or_else(|| {
            arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!(
                    "The Resource 'Microsoft.KeyVault/vaults/{name}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_filters_parse_as_arm_writes_them() {
        let pair = |f: &str, v: &str| (f.to_string(), v.to_string());
        assert_eq!(
            parse_filter("resourceType eq 'Microsoft.KeyVault/vaults'"),
            Some(vec![pair("resourcetype", "Microsoft.KeyVault/vaults")])
        );
        // What `az keyvault show --name` sends to find a vault's resource group.
        assert_eq!(
            parse_filter("resourceType eq 'Microsoft.KeyVault/vaults' and name eq 'alpha'"),
            Some(vec![
                pair("resourcetype", "Microsoft.KeyVault/vaults"),
                pair("name", "alpha")
            ])
        );
        assert_eq!(
            parse_filter("RESOURCETYPE EQ 'x/y'"),
            Some(vec![pair("resourcetype", "x/y")])
        );
        assert_eq!(parse_filter("resourceType eq x"), None);
        assert_eq!(parse_filter("colour eq 'x'"), None);
        assert_eq!(parse_filter("name eq 'a' or name eq 'b'"), None);
        assert_eq!(parse_filter("name eq 'a' and"), None);
    }

    #[test]
    fn arm_times_read_as_azure_writes_them() {
        assert_eq!(utc(0), "1/1/1970 00:00:00");
    }
}
