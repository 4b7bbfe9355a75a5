//! The request pipeline around the routes: the frame (Azure's response headers on every answer,
//! the journal) and the vault gate (host → vault, the 401 challenge and token check, injected
//! faults, the throttle budget, latency, permissions, `api-version`; a `lost` fault drops the
//! answer after the handler ran), plus the JSON body
//! extractor whose failures speak Azure's error envelope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::AuthMode;
use super::auth::{self, decode_claims, new_guid};
use super::error::{ApiError, DropConnection};
use super::faults::{FaultKind, JournalEntry, required_permission};
use super::persist::request_changes_state;
use super::state::{AppState, Vault, VaultCtx};

/// The `api-version`s the vault routes accept: every data-plane version Azure publishes for
/// secrets, keys and certificates, stable and preview, and the legacy ones older clients and the
/// recorded traffic still send (source: Azure/azure-rest-api-specs,
/// `specification/keyvault/data-plane/{Secrets,Keys,Certificates}/` and `Legacy/readme.md`).
pub const API_VERSIONS: &[&str] = &[
    // legacy (data-plane/Legacy): stable, then previews
    "2015-06-01",
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.0-preview",
    "7.1-preview",
    "7.2-preview",
    "7.3-preview",
    "7.4-preview.1",
    "7.5-preview.1",
    "7.6-preview.1",
    // current stable
    "7.5",
    "7.6",
    "2025-07-01",
    "2026-04-01",
    // current preview
    "7.6-preview.2",
    "2025-06-01-preview",
    "2026-01-01-preview",
    "2026-03-01-preview",
    "2026-05-01-preview",
    "2026-07-01-preview",
];

/// The newest stable `api-version`, named in the refusal of an unknown one.
pub const LATEST_API_VERSION: &str = "2026-04-01";

/// The `x-ms-keyvault-service-version` the emulator reports.
pub const SERVICE_VERSION: &str = "1.9.2800.1";

/// What the gate tells the journal about a request.
#[derive(Debug, Clone, Default)]
struct JournalNote {
    vault: Option<String>,
    fault: Option<String>,
    principal: Option<String>,
}

/// The host the client addressed: the URI authority (HTTP/2) or the `Host` header.
pub fn request_host(uri: &axum::http::Uri, headers: &HeaderMap) -> String {
    uri.authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".to_string())
}

/// Longest `Host` accepted: a DNS name (253 characters) and `:65535`.
const MAX_HOST_LEN: usize = 253 + 6;

/// The host the client addressed, checked: one `Host` header (or the URI authority) that is a
/// DNS name, an IPv4 address or a bracketed IPv6 address, with an optional numeric port, at most
/// [`MAX_HOST_LEN`] characters of visible ASCII. A request without any host (HTTP/1.0) is
/// `localhost`. Anything else is 400 `BadParameter`, the message never echoing the value.
pub fn checked_host(uri: &axum::http::Uri, headers: &HeaderMap) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::bad_parameter(
            "Bad Request - Invalid Hostname: the Host header must be a host name or an IP address with an optional port.",
        )
    };
    let host = match uri.authority() {
        Some(authority) => authority.as_str().to_string(),
        None => {
            let mut values = headers.get_all(header::HOST).iter();
            match (values.next(), values.next()) {
                (None, _) => return Ok("localhost".to_string()),
                (Some(value), None) => value.to_str().map_err(|_| invalid())?.to_string(),
                // RFC 9112 section 3.2: more than one Host header is a 400.
                (Some(_), Some(_)) => return Err(invalid()),
            }
        }
    };
    if is_valid_host(&host) {
        Ok(host)
    } else {
        Err(invalid())
    }
}

/// `NAME[:PORT]` or `[IPV6][:PORT]`, as [`checked_host`] describes.
fn is_valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return false;
    }
    let port = if let Some(rest) = host.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        if after.is_empty() {
            None
        } else {
            match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            }
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let labels_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if name.is_empty() || !labels_ok {
            return false;
        }
        port
    };
    port.is_none_or(|port| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
    })
}

fn host_has_port(host: &str) -> bool {
    match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    }
}

/// Adds Azure's headers and writes the journal entry. Wraps every route.
pub async fn frame(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let at_ms = state.clock.now_ms();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let client_request_id = request.headers().get("x-ms-client-request-id").cloned();
    // A malformed Host is refused here, before any route parses it.
    let host = checked_host(request.uri(), request.headers());
    let region = host
        .as_ref()
        .ok()
        .and_then(|host| state.vault_for_host(host))
        .map_or_else(|| "local".to_string(), |v| v.spec.geo.clone());

    let mut response = match host {
        Ok(_) => next.run(request).await,
        Err(err) => err.into_response(),
    };

    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&new_guid()) {
        headers.insert("x-ms-request-id", id);
    }
    if let Some(id) = client_request_id {
        headers.insert("x-ms-client-request-id", id);
    }
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static(SERVICE_VERSION),
    );
    if let Ok(region) = HeaderValue::from_str(&region) {
        headers.insert("x-ms-keyvault-region", region);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("-1"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000;includeSubDomains"),
    );

    if !path.starts_with("/_emulator") {
        let note = response
            .extensions()
            .get::<JournalNote>()
            .cloned()
            .unwrap_or_default();
        let dropped = response.extensions().get::<DropConnection>().is_some();
        state.journal.record(JournalEntry {
            seq: 0,
            at_ms,
            method,
            path,
            query,
            vault: note.vault,
            // A dropped connection has no status; the journal shows 0.
            status: if dropped {
                0
            } else {
                response.status().as_u16()
            },
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            fault: note.fault,
            principal: note.principal,
        });
    }
    response
}

fn with_note(mut response: Response, note: JournalNote) -> Response {
    response.extensions_mut().insert(note);
    response
}

/// `Bearer authorization="https://localhost:PORT/TENANT", resource="https://vault.localhost:PORT"`,
/// naming the tenant the vault belongs to.
pub fn challenge(state: &AppState, vault: &Vault) -> String {
    format!(
        "Bearer authorization=\"{}/{}\", resource=\"https://vault.localhost:{}\"",
        auth::authority(state),
        state.vault_tenant(vault),
        state.port()
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The vault gate: every vault route runs behind it. It never reads the body, so the 401
/// challenge is answered before the body is read.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let host = request_host(request.uri(), request.headers());
    let Some(vault) = state.vault_for_host(&host) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            format!("No vault is served at {host}."),
        )
        .into_response();
    };
    let vault_name = vault.spec.name.clone();
    let mut note = JournalNote {
        vault: Some(vault_name.clone()),
        ..JournalNote::default()
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let settings = state.settings();

    // The challenge and the token check come first: Azure answers 401 before anything else.
    let Some(token) = bearer(request.headers()).map(str::to_string) else {
        let err = ApiError::unauthorized(
            "AKV10000: Request is missing a Bearer or PoP token.",
            challenge(&state, &vault),
        );
        return with_note(err.into_response(), note);
    };
    note.principal = match settings.auth {
        AuthMode::Off => decode_claims(&token).ok().and_then(|c| c.principal()),
        AuthMode::Jwt => {
            let authority = auth::authority(&state);
            let checked = state
                .issuer
                .check(
                    &token,
                    &authority,
                    &auth::audiences(&state),
                    state.clock.now_s(),
                )
                .await
                .and_then(|claims| {
                    // A vault accepts its own tenant's tokens only, as Azure does.
                    state
                        .issuer
                        .check_tenant(&claims, &authority, state.vault_tenant(&vault))
                        .map(|()| claims)
                });
            match checked {
                Ok(claims) => claims.principal(),
                Err(err) => {
                    let err = ApiError::unauthorized(err.message(), challenge(&state, &vault));
                    return with_note(err.into_response(), note);
                }
            }
        }
    };

    // A `lost` fault lets the request run to the end (a write commits) and drops the answer.
    let mut lose_response = false;
    if let Some(fault) = state.faults.take(method.as_str(), &path, &vault_name) {
        note.fault = Some(format!("{:?}", fault.kind).to_ascii_lowercase());
        match fault.kind {
            FaultKind::Lost => lose_response = true,
            FaultKind::Delay => tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await,
            FaultKind::Hold => {
                state
                    .faults
                    .hold(Duration::from_millis(fault.delay_ms))
                    .await
            }
            FaultKind::Throttle => return with_note(throttled(fault.retry_after), note),
            FaultKind::Unavailable => {
                let err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Please retry.",
                )
                .with_retry_after(fault.retry_after);
                return with_note(err.into_response(), note);
            }
            FaultKind::Internal => {
                let err = ApiError::internal("An internal error occurred (injected).");
                return with_note(err.into_response(), note);
            }
            FaultKind::Drop => {
                let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
                response.extensions_mut().insert(DropConnection);
                return with_note(response, note);
            }
        }
    }
    if settings.fault_rate > 0.0 && rand::random::<f64>() < settings.fault_rate {
        note.fault = Some("rate".to_string());
        let response = match rand::random::<u8>() % 3 {
            0 => throttled(1),
            1 => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry.",
            )
            .with_retry_after(1)
            .into_response(),
            _ => ApiError::internal("An internal error occurred (injected).").into_response(),
        };
        return with_note(response, note);
    }
    if let Some(budget) = settings.budget
        && let Some(wait) = state
            .faults
            .spend_budget(&vault_name, budget, state.clock.now_ms())
    {
        note.fault = Some("budget".to_string());
        return with_note(throttled(wait), note);
    }
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }

    if let Some(principal) = &note.principal
        && let Some(policy) = state.permissions.policy(&vault_name, principal)
        && let Some((kind, permission)) = required_permission(method.as_str(), &path)
        && !policy.allows(kind, permission)
    {
        let err = ApiError::forbidden_by_policy(principal, &vault_name, kind, permission);
        return with_note(err.into_response(), note);
    }

    let query: HashMap<String, String> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let api_version = match query.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v.as_str()) => v.clone(),
        Some(v) => {
            let err = ApiError::bad_parameter(format!(
                "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
            ));
            return with_note(err.into_response(), note);
        }
        None => {
            let err = ApiError::bad_parameter("The api-version query parameter is required.");
            return with_note(err.into_response(), note);
        }
    };
    let link_host = if host_has_port(&host) {
        host.clone()
    } else {
        format!("{host}:443")
    };
    request.extensions_mut().insert(VaultCtx {
        state: state.clone(),
        vault,
        base: format!("https://{host}"),
        link_base: format!("https://{link_host}"),
        api_version,
        query,
    });

    let response = next.run(request).await;
    // Persistence is write-behind: a change is only marked here, and saved off this path.
    if response.status().is_success() && request_changes_state(&method, &path) {
        state.changed();
    }
    if lose_response {
        let mut dropped = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        dropped.extensions_mut().insert(DropConnection);
        return with_note(dropped, note);
    }
    with_note(response, note)
}

/// 429 `Throttled` with `Retry-After`.
pub fn throttled(retry_after: u64) -> Response {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Throttled",
        "Request was not processed because too many requests were received. Reason: A1",
    )
    .with_retry_after(retry_after)
    .into_response()
}

/// A JSON request body; a body that is not the expected JSON is 400 `BadParameter`.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                ApiError::bad_parameter(format!("The request body cannot be read: {e}"))
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_parameter(format!("The request body is not valid: {e}")))
    }
}

/// A JSON response with Azure's content type.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// 200 with a JSON body.
pub fn ok_json(body: &serde_json::Value) -> Response {
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &[u8]) -> Result<String, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_bytes(value).unwrap());
        checked_host(&axum::http::Uri::from_static("/secrets"), &headers)
    }

    #[test]
    fn well_formed_hosts_pass() {
        for ok in [
            "localhost",
            "localhost:8443",
            "alpha.vault.localhost:1",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:443",
            "localhost.",
            "under_score.vault.localhost",
        ] {
            assert_eq!(host(ok.as_bytes()).unwrap(), ok);
        }
        let none = checked_host(&axum::http::Uri::from_static("/"), &HeaderMap::new());
        assert_eq!(none.unwrap(), "localhost");
    }

    #[test]
    fn malformed_hosts_are_400_bad_parameter() {
        let long = "a".repeat(10 * 1024);
        let cases: Vec<&[u8]> = vec![
            b"[x",
            b"[",
            b"[::1",
            b"[::1]x",
            b"[::1]:",
            b"",
            b"a..b",
            b".",
            b"host:",
            b"host:port",
            b"host:65536",
            b"host:1:2",
            b"user@host",
            b"h st",
            b"\xff\xfe.vault.localhost",
            long.as_bytes(),
        ];
        for bad in cases {
            let err = host(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(err.code, "BadParameter");
            assert!(!err.message.contains("[x"), "the value is not echoed");
        }
    }

    #[test]
    fn two_host_headers_are_400() {
        let mut headers = HeaderMap::new();
        headers.append(header::HOST, HeaderValue::from_static("localhost"));
        headers.append(
            header::HOST,
            HeaderValue::from_static("alpha.vault.localhost"),
        );
        let err = checked_host(&axum::http::Uri::from_static("/"), &headers).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }
}
