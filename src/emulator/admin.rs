//! The admin endpoint `/_emulator` (on any host; `https://localhost:PORT/_emulator` is the one
//! the ready line names): readiness, the journal, faults, the clock, settings, permissions,
//! extra clients and test tokens. It has no authentication: it listens on loopback only.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, new_guid};
use super::error::ApiError;
use super::faults::{AccessPolicy, FaultSpec};
use super::http::{JsonBody, ok_json};
use super::state::{AppState, Settings};

/// The admin routes (nested under `/_emulator`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(admin_info))
        .route("/ready", get(admin_ready))
        .route("/journal", get(journal_get).delete(journal_clear))
        .route(
            "/faults",
            get(faults_get).post(faults_add).delete(faults_clear),
        )
        .route("/faults/release", post(faults_release))
        .route("/clock", get(clock_get).post(clock_set))
        .route("/settings", get(settings_get).patch(settings_patch))
        .route(
            "/permissions",
            put(permissions_put).delete(permissions_clear),
        )
        .route("/clients", post(clients_add))
        .route("/tokens", post(tokens_mint))
        .route("/reset", post(reset))
        .route("/persist", get(persist_get).post(persist_flush))
}

async fn admin_info(State(state): State<AppState>) -> Response {
    let vaults: Vec<Value> = state.vaults.values().map(|v| json!(v.spec)).collect();
    ok_json(&json!({
        "ready": true,
        "port": state.port(),
        "tenant_id": state.issuer.tenant_id,
        "client_id": state.issuer.client_id,
        "managed_identity_client_id": state.issuer.managed_identity_client_id,
        "tenants": state.issuer.tenants().iter().map(|t| json!({"tenant_id": t.tenant_id, "client_id": t.client_id})).collect::<Vec<_>>(),
        "default_vault": state.default_vault,
        "vaults": vaults,
    }))
}

async fn admin_ready(State(state): State<AppState>) -> Response {
    ok_json(&json!({ "ready": true, "port": state.port() }))
}

async fn journal_get(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let since: u64 = query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let vault = query.get("vault").map(|v| v.to_ascii_lowercase());
    let entries: Vec<_> = state
        .journal
        .entries()
        .into_iter()
        .filter(|e| e.seq > since)
        .filter(|e| {
            vault
                .as_ref()
                .is_none_or(|v| e.vault.as_deref().map(str::to_ascii_lowercase).as_ref() == Some(v))
        })
        .collect();
    ok_json(&json!({ "entries": entries }))
}

async fn journal_clear(State(state): State<AppState>) -> Response {
    state.journal.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn faults_get(State(state): State<AppState>) -> Response {
    ok_json(&json!({ "faults": state.faults.list(), "held": state.faults.held() }))
}

/// Lets every request parked by a `hold` fault go on.
async fn faults_release(State(state): State<AppState>) -> Response {
    ok_json(&json!({ "released": state.faults.release() }))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FaultsIn {
    Many(Vec<FaultSpec>),
    One(FaultSpec),
}

async fn faults_add(State(state): State<AppState>, JsonBody(body): JsonBody<FaultsIn>) -> Response {
    let specs = match body {
        FaultsIn::Many(specs) => specs,
        FaultsIn::One(spec) => vec![spec],
    };
    for spec in specs {
        state.faults.inject(spec);
    }
    ok_json(&json!({ "faults": state.faults.list() }))
}

async fn faults_clear(State(state): State<AppState>) -> Response {
    state.faults.clear();
    state.faults.release();
    state.faults.reset_budgets();
    StatusCode::NO_CONTENT.into_response()
}

fn clock_body(state: &AppState) -> Value {
    json!({
        "now": state.clock.now_s(),
        "now_ms": state.clock.now_ms(),
        "frozen": state.clock.is_frozen(),
    })
}

async fn clock_get(State(state): State<AppState>) -> Response {
    ok_json(&clock_body(&state))
}

/// `{"freeze":true}`, `{"freeze":false}`, `{"advance_seconds":N}`, `{"advance_ms":N}`,
/// `{"set":UNIX_SECONDS}`; several may be combined and apply in that order.
#[derive(Debug, Default, Deserialize)]
struct ClockIn {
    freeze: Option<bool>,
    advance_seconds: Option<i64>,
    advance_ms: Option<i64>,
    set: Option<i64>,
}

async fn clock_set(State(state): State<AppState>, JsonBody(body): JsonBody<ClockIn>) -> Response {
    match body.freeze {
        Some(true) => state.clock.freeze(),
        Some(false) => state.clock.unfreeze(),
        None => {}
    }
    if let Some(s) = body.advance_seconds {
        state.clock.advance_ms(s.saturating_mul(1000));
    }
    if let Some(ms) = body.advance_ms {
        state.clock.advance_ms(ms);
    }
    if let Some(at) = body.set {
        state.clock.set_ms(at.saturating_mul(1000));
    }
    ok_json(&clock_body(&state))
}

async fn settings_get(State(state): State<AppState>) -> Response {
    ok_json(&json!(state.settings()))
}

/// Merges the given fields into the settings (`null` clears `budget`).
async fn settings_patch(
    State(state): State<AppState>,
    JsonBody(patch): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_parameter("settings must be a JSON object"));
    };
    let mut current = json!(state.settings());
    if let Value::Object(map) = &mut current {
        for (k, v) in patch {
            if !map.contains_key(&k) {
                return Err(ApiError::bad_parameter(format!("unknown setting '{k}'")));
            }
            map.insert(k, v);
        }
    }
    let mut settings: Settings = serde_json::from_value(current)
        .map_err(|e| ApiError::bad_parameter(format!("invalid settings: {e}")))?;
    settings.page_size = settings.page_size.clamp(1, super::paging::MAX_RESULTS);
    settings.fault_rate = settings.fault_rate.clamp(0.0, 1.0);
    *state.settings.write().unwrap_or_else(|e| e.into_inner()) = settings.clone();
    if settings.budget.is_none() {
        state.faults.reset_budgets();
    }
    Ok(ok_json(&json!(settings)))
}

#[derive(Debug, Deserialize)]
struct PermissionsIn {
    vault: Option<String>,
    principal: Option<String>,
    #[serde(flatten)]
    policy: AccessPolicy,
}

/// Sets one principal's access policy on one vault (default: the built-in client on the
/// default vault).
async fn permissions_put(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PermissionsIn>,
) -> Result<Response, ApiError> {
    let vault = body.vault.unwrap_or_else(|| state.default_vault.clone());
    if state.vault(&vault).is_none() {
        return Err(ApiError::bad_parameter(format!("no vault '{vault}'")));
    }
    let principal = body
        .principal
        .unwrap_or_else(|| state.issuer.client_id.clone());
    state.permissions.set(&vault, &principal, body.policy);
    Ok(ok_json(&json!({ "vault": vault, "principal": principal })))
}

async fn permissions_clear(State(state): State<AppState>) -> Response {
    state.permissions.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ClientIn {
    client_id: Option<String>,
    client_secret: Option<String>,
    /// The tenant the client is registered in (default: the first).
    tenant: Option<String>,
}

/// Registers another client of the issuer; answers its id and secret.
async fn clients_add(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ClientIn>,
) -> Result<Response, ApiError> {
    let client_id = body.client_id.unwrap_or_else(new_guid);
    let secret = body
        .client_secret
        .unwrap_or_else(|| format!("cv~{:032x}", rand::random::<u128>()));
    let tenant = match body.tenant {
        Some(t) => state
            .issuer
            .tenant(&t)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_parameter(format!("tenant '{t}' is not served")))?,
        None => state.issuer.tenant_id.clone(),
    };
    state.issuer.add_client_in(&tenant, &client_id, &secret);
    Ok(ok_json(
        &json!({ "client_id": client_id, "client_secret": secret, "tenant_id": tenant }),
    ))
}

#[derive(Debug, Default, Deserialize)]
struct TokenIn {
    client_id: Option<String>,
    audience: Option<String>,
    lifetime_seconds: Option<i64>,
    /// The token's tenant (default: the client's, else the first).
    tenant: Option<String>,
}

/// Mints a token directly (for raw HTTP tests): any client id, audience and lifetime
/// (negative for an already expired token).
async fn tokens_mint(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<TokenIn>,
) -> Result<Response, ApiError> {
    let client_id = body
        .client_id
        .unwrap_or_else(|| state.issuer.client_id.clone());
    let audience = body
        .audience
        .unwrap_or_else(|| format!("https://vault.localhost:{}", state.port()));
    let tenant = body
        .tenant
        .or_else(|| state.issuer.tenant_of(&client_id))
        .unwrap_or_else(|| state.issuer.tenant_id.clone());
    let token = state
        .issuer
        .issue_in(
            &tenant,
            &auth::authority(&state),
            &client_id,
            &audience,
            state.clock.now_s(),
            body.lifetime_seconds.unwrap_or(auth::TOKEN_LIFETIME_S),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(ok_json(
        &json!({ "access_token": token, "token_type": "Bearer" }),
    ))
}

/// Clears the journal, faults, budgets and permissions, puts the settings back to the
/// command line's, and the clock back to the system time. Vault contents stay, and are saved
/// before the answer (with a state directory), so a test may kill the emulator right after.
async fn reset(State(state): State<AppState>) -> Response {
    // Saved first: a failure is logged and retried by the write-behind task.
    let _ = super::persist::flush(&state).await;
    state.journal.clear();
    state.faults.clear();
    state.faults.release();
    state.faults.reset_budgets();
    state.permissions.clear();
    state.clock.reset();
    *state.settings.write().unwrap_or_else(|e| e.into_inner()) =
        Settings::from_config(&state.config);
    StatusCode::NO_CONTENT.into_response()
}

fn persist_body(state: &AppState) -> Value {
    match &state.persister {
        Some(p) => json!({
            "state_dir": p.dir().display().to_string(),
            "saves": p.saves(),
            "pending": p.is_pending(),
            "delay_ms": super::persist::WRITE_BEHIND_DELAY.as_millis(),
        }),
        None => json!({ "state_dir": null, "saves": 0, "pending": false }),
    }
}

/// The write-behind state: how many saves so far, whether a change waits to be saved.
async fn persist_get(State(state): State<AppState>) -> Response {
    ok_json(&persist_body(&state))
}

/// Saves what changed now and answers once it is on disk (500 if the save failed).
async fn persist_flush(State(state): State<AppState>) -> Result<Response, ApiError> {
    super::persist::flush(&state).await.map_err(|err| {
        ApiError::internal(format!("the emulator state could not be saved: {err}"))
    })?;
    Ok(ok_json(&persist_body(&state)))
}
