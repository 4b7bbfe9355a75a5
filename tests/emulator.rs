//! The local Key Vault, end to end: raw HTTP pins what the SDKs hide (the challenge bytes, the
//! error envelope, the `x-ms-*` headers, the `nextLink` shape, the blob format), and the
//! official `azure_security_keyvault_secrets` crate does the secret round trips.

// The SDK's models are `#[non_exhaustive]`: they cannot be built with struct literals outside
// their crate, so fields are set after `Default::default()`.
#![allow(clippy::field_reassign_with_default)]

use azure_core::error::ErrorKind;
use azure_security_keyvault_secrets::models::{
    RestoreSecretParameters, SecretAttributes, SetSecretParameters,
    UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, models::SecretClientGetSecretOptions};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coldvault::emulator::EmulatorConfig;
use futures::TryStreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestEmulator, default_vaults};

const API: &str = "api-version=7.6";

/// A raw answer: status, headers, body text.
struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn inner(&self) -> String {
        self.json()["error"]["innererror"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

async fn raw(
    emu: &TestEmulator,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Raw {
    let mut request = emu.http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request is answered");
    Raw {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

fn http_error(err: &azure_core::Error) -> (u16, String) {
    match err.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (u16::from(*status), error_code.clone().unwrap_or_default()),
        other => panic!("expected an HTTP error, got {other:?}: {err}"),
    }
}

#[tokio::test]
async fn challenge_envelope_and_headers_are_azures() {
    let emu = TestEmulator::start().await;
    let port = emu.ready().port;
    let url = emu.url("alpha", &format!("/secrets/missing?{API}"));

    let response = emu
        .http
        .get(&url)
        .header(
            "x-ms-client-request-id",
            "c0ffee00-1111-2222-3333-444455556666",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let headers = response.headers().clone();
    let expected_challenge = format!(
        "Bearer authorization=\"https://localhost:{port}/{}\", resource=\"https://vault.localhost:{port}\"",
        emu.ready().tenant_id
    );
    assert_eq!(
        headers["www-authenticate"].as_bytes(),
        expected_challenge.as_bytes()
    );
    assert_eq!(
        headers["x-ms-client-request-id"],
        "c0ffee00-1111-2222-3333-444455556666"
    );
    assert_eq!(headers["x-ms-request-id"].len(), 36);
    assert_eq!(headers["x-ms-keyvault-region"], "westeurope");
    assert!(!headers["x-ms-keyvault-service-version"].is_empty());
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#
    );

    let token = emu.token().await;
    let missing = raw(&emu, Method::GET, &url, Some(&token), None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "SecretNotFound");
    let envelope = missing.json();
    assert_eq!(envelope.as_object().unwrap().len(), 1);
    assert!(
        envelope["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing")
    );

    let wrong_aud = emu
        .token_with(json!({"audience": "https://management.azure.com"}))
        .await;
    let refused = raw(&emu, Method::GET, &url, Some(&wrong_aud), None).await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10022:")
    );
    assert!(
        refused
            .header("www-authenticate")
            .starts_with("Bearer authorization=")
    );

    let expired = emu.token_with(json!({"lifetime_seconds": -3600})).await;
    assert_eq!(
        raw(&emu, Method::GET, &url, Some(&expired), None)
            .await
            .status,
        401
    );

    let no_version = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", "/secrets"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (no_version.status, no_version.code().as_str()),
        (400, "BadParameter")
    );
    let unknown_version = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", "/secrets?api-version=2099-01-01"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (unknown_version.status, unknown_version.code().as_str()),
        (400, "BadParameter")
    );
    let newest = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", "/secrets?api-version=2025-07-01"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(newest.status, 200);
}

#[tokio::test]
async fn next_link_shape_and_ragged_pages() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    let port = emu.ready().port;
    for i in 0..7 {
        let r = raw(
            &emu,
            Method::PUT,
            &emu.url("alpha", &format!("/secrets/page-{i}?{API}")),
            Some(&token),
            Some(json!({"value": format!("v{i}")})),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let mut url = emu.url("alpha", &format!("/secrets?{API}&maxresults=3"));
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = raw(&emu, Method::GET, &url, Some(&token), None).await;
        assert_eq!(page.status, 200);
        let body = page.json();
        assert!(
            body.as_object().unwrap().contains_key("nextLink"),
            "nextLink always present"
        );
        seen += body["value"].as_array().unwrap().len();
        pages += 1;
        match body["nextLink"].as_str() {
            Some(next) => {
                let prefix = format!(
                    "https://alpha.vault.localhost:{port}/secrets?api-version=7.6&$skiptoken="
                );
                assert!(next.starts_with(&prefix), "{next}");
                assert!(next.ends_with("&maxresults=3"), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!((seen, pages), (7, 3));

    let too_many = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", &format!("/secrets?{API}&maxresults=26")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (too_many.status, too_many.code().as_str()),
        (400, "BadParameter")
    );

    emu.settings(json!({"ragged_pages": true, "page_size": 2}))
        .await;
    let mut url = emu.url("alpha", &format!("/secrets?{API}"));
    let (mut seen, mut empty_with_link) = (0, 0);
    loop {
        let body = raw(&emu, Method::GET, &url, Some(&token), None)
            .await
            .json();
        let n = body["value"].as_array().unwrap().len();
        seen += n;
        match body["nextLink"].as_str() {
            Some(next) => {
                if n == 0 {
                    empty_with_link += 1;
                }
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen, 7);
    assert!(
        empty_with_link >= 1,
        "ragged mode serves empty pages that still link on"
    );
}

#[tokio::test]
async fn backup_blob_format_binding_and_conflicts() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    let alpha = |p: &str| emu.url("alpha", &format!("{p}?{API}"));
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = raw(
            &emu,
            Method::PUT,
            &alpha("/secrets/blob"),
            Some(&token),
            Some(json!({"value": format!("v{i}")})),
        )
        .await;
        ids.push(
            r.json()["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert!(ids.iter().all(|id| {
        id.len() == 32
            && id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }));
    let backup = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/blob/backup"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(backup.status, 200);
    let blob = backup.json()["value"].as_str().unwrap().to_string();
    assert!(
        !blob.contains('=') && !blob.contains('+') && !blob.contains('/'),
        "unpadded base64url"
    );
    let bytes = URL_SAFE_NO_PAD.decode(&blob).unwrap();
    assert_eq!(&bytes[..9], b"CVKVBK01S");
    assert!(
        !String::from_utf8_lossy(&bytes).contains("v1"),
        "values are sealed"
    );

    // Over a live name: 409 Conflict without innererror.
    let live = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/restore"),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(
        (live.status, live.code().as_str(), live.inner().as_str()),
        (409, "Conflict", "")
    );

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let bad = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/restore"),
        Some(&token),
        Some(json!({"value": URL_SAFE_NO_PAD.encode(&flipped)})),
    )
    .await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (400, "Malformed backup blob")
    );

    // Same subscription, another vault: every version comes back with its id.
    let beta = |p: &str| emu.url("beta", &format!("{p}?{API}"));
    let restored = raw(
        &emu,
        Method::POST,
        &beta("/secrets/restore"),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(restored.status, 200);
    assert!(
        restored.json().get("value").is_none(),
        "restore answers without value"
    );
    assert!(
        restored.json()["id"]
            .as_str()
            .unwrap()
            .starts_with(&emu.url("beta", "/secrets/blob/"))
    );
    let versions = raw(
        &emu,
        Method::GET,
        &beta("/secrets/blob/versions"),
        Some(&token),
        None,
    )
    .await
    .json();
    let restored_ids: Vec<String> = versions["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(restored_ids, ids);
    let first = raw(
        &emu,
        Method::GET,
        &beta(&format!("/secrets/blob/{}", ids[0])),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(first.json()["value"], "v0");

    // Another subscription cannot open it.
    let gamma = raw(
        &emu,
        Method::POST,
        &emu.url("gamma", &format!("/secrets/restore?{API}")),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(gamma.status, 400);
    assert!(
        gamma.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Cannot decrypt backup blob")
    );
}

#[tokio::test]
async fn soft_delete_latency_purge_window_on_the_emulator_clock() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    emu.admin(Method::POST, "/clock", Some(json!({"freeze": true})))
        .await;
    emu.settings(json!({"delete_delay_ms": 5000, "purge_window_ms": 30000}))
        .await;
    let alpha = |p: &str| emu.url("alpha", &format!("{p}?{API}"));
    raw(
        &emu,
        Method::PUT,
        &alpha("/secrets/gone"),
        Some(&token),
        Some(json!({"value": "x"})),
    )
    .await;
    let blob = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/gone/backup"),
        Some(&token),
        None,
    )
    .await
    .json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let deleted = raw(
        &emu,
        Method::DELETE,
        &alpha("/secrets/gone"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.json()["recoveryId"],
        emu.url("alpha", "/deletedsecrets/gone")
    );
    let scheduled = deleted.json()["scheduledPurgeDate"].as_i64().unwrap()
        - deleted.json()["deletedDate"].as_i64().unwrap();
    assert_eq!(scheduled, 90 * 86_400);

    let early = raw(
        &emu,
        Method::GET,
        &alpha("/deletedsecrets/gone"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (early.status, early.code().as_str()),
        (404, "SecretNotFound")
    );
    let settling = raw(
        &emu,
        Method::PUT,
        &alpha("/secrets/gone"),
        Some(&token),
        Some(json!({"value": "y"})),
    )
    .await;
    assert_eq!(
        (settling.status, settling.inner().as_str()),
        (409, "ObjectIsBeingDeleted")
    );

    emu.admin(Method::POST, "/clock", Some(json!({"advance_seconds": 6})))
        .await;
    assert_eq!(
        raw(
            &emu,
            Method::GET,
            &alpha("/deletedsecrets/gone"),
            Some(&token),
            None
        )
        .await
        .status,
        200
    );
    let reuse = raw(
        &emu,
        Method::PUT,
        &alpha("/secrets/gone"),
        Some(&token),
        Some(json!({"value": "y"})),
    )
    .await;
    assert_eq!(
        (reuse.status, reuse.code().as_str(), reuse.inner().as_str()),
        (409, "Conflict", "ObjectIsDeletedButRecoverable")
    );
    let over_deleted = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/restore"),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(over_deleted.status, 409);

    let purge = raw(
        &emu,
        Method::DELETE,
        &alpha("/deletedsecrets/gone"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(purge.status, 204);
    assert!(purge.body.is_empty());
    assert!(purge.headers.get("content-type").is_none());
    let window = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/restore"),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(
        (window.status, window.inner().as_str()),
        (409, "ObjectIsBeingDeleted")
    );
    emu.admin(Method::POST, "/clock", Some(json!({"advance_seconds": 31})))
        .await;
    let back = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/restore"),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(back.status, 200);

    // Retention runs on the same clock: 90 days later a deleted secret is gone for good.
    raw(
        &emu,
        Method::DELETE,
        &alpha("/secrets/gone"),
        Some(&token),
        None,
    )
    .await;
    emu.admin(
        Method::POST,
        "/clock",
        Some(json!({"advance_seconds": 90 * 86_400 + 10})),
    )
    .await;
    let stale = raw(
        &emu,
        Method::GET,
        &alpha("/deletedsecrets/gone"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(stale.status, 401, "tokens expire on the emulator clock too");
    let fresh = emu.token().await;
    assert_eq!(
        raw(
            &emu,
            Method::GET,
            &alpha("/deletedsecrets/gone"),
            Some(&fresh),
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        raw(
            &emu,
            Method::PUT,
            &alpha("/secrets/gone"),
            Some(&fresh),
            Some(json!({"value": "z"}))
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn secrets_round_trip_through_the_official_crate() {
    let emu = TestEmulator::start().await;
    emu.settings(json!({"page_size": 3})).await;
    let client = emu.secret_client("alpha");

    let mut version_ids = Vec::new();
    for i in 0..5 {
        let mut params = SetSecretParameters::default();
        params.value = Some(format!("value-{i}"));
        params.content_type = Some("text/plain".into());
        params.tags = Some([("round".to_string(), i.to_string())].into());
        let secret = client
            .set_secret("rust-secret", params.try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        version_ids.push(secret.resource_id().unwrap().version.unwrap());
    }
    for i in 0..7 {
        let mut params = SetSecretParameters::default();
        params.value = Some(format!("other-{i}"));
        client
            .set_secret(&format!("other-{i}"), params.try_into().unwrap(), None)
            .await
            .unwrap();
    }

    let latest = client
        .get_secret("rust-secret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("value-4"));
    assert_eq!(latest.content_type.as_deref(), Some("text/plain"));
    let first = client
        .get_secret(
            "rust-secret",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(version_ids[0].clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(first.value.as_deref(), Some("value-0"));

    // The pager follows nextLink across pages of 3.
    let mut names = Vec::new();
    let mut pager = client.list_secret_properties(None).unwrap();
    while let Some(item) = pager.try_next().await.unwrap() {
        names.push(item.resource_id().unwrap().name);
    }
    assert_eq!(names.len(), 8);
    let pages = emu
        .journal()
        .await
        .iter()
        .filter(|e| e["method"] == "GET" && e["path"] == "/secrets" && e["status"] == 200)
        .count();
    assert_eq!(pages, 3);

    // Disabled → 403 SecretDisabled; expired → 200.
    let mut update = UpdateSecretPropertiesParameters::default();
    let mut attrs = SecretAttributes::default();
    attrs.enabled = Some(false);
    update.secret_attributes = Some(attrs);
    client
        .update_secret_properties("other-0", update.try_into().unwrap(), None)
        .await
        .unwrap();
    let err = client.get_secret("other-0", None).await.unwrap_err();
    assert_eq!(http_error(&err), (403, "Forbidden".to_string()));
    let mut params = SetSecretParameters::default();
    params.value = Some("old".into());
    let mut attrs = SecretAttributes::default();
    attrs.expires = Some(time::OffsetDateTime::from_unix_timestamp(1_000_000_000).unwrap());
    params.secret_attributes = Some(attrs);
    client
        .set_secret("expired", params.try_into().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        client
            .get_secret("expired", None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .as_deref(),
        Some("old")
    );

    // Backup, delete, purge, restore: same version ids and values.
    let blob = client
        .backup_secret("rust-secret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    let deleted = client
        .delete_secret("rust-secret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(
        deleted
            .recovery_id
            .unwrap()
            .ends_with("/deletedsecrets/rust-secret")
    );
    let err = client.get_secret("rust-secret", None).await.unwrap_err();
    assert_eq!(http_error(&err), (404, "SecretNotFound".to_string()));
    client
        .get_deleted_secret("rust-secret", None)
        .await
        .unwrap();
    client
        .recover_deleted_secret("rust-secret", None)
        .await
        .unwrap();
    client.get_secret("rust-secret", None).await.unwrap();
    client.delete_secret("rust-secret", None).await.unwrap();
    client
        .purge_deleted_secret("rust-secret", None)
        .await
        .unwrap();
    let mut restore = RestoreSecretParameters::default();
    restore.secret_backup = Some(blob);
    let restored = client
        .restore_secret(restore.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        restored.resource_id().unwrap().version.as_deref(),
        Some(version_ids[4].as_str())
    );
    let mut versions = Vec::new();
    let mut pager = client
        .list_secret_properties_versions("rust-secret", None)
        .unwrap();
    while let Some(item) = pager.try_next().await.unwrap() {
        versions.push(item.resource_id().unwrap().version.unwrap());
    }
    assert_eq!(versions, version_ids);
}

#[tokio::test]
async fn faults_budget_permissions_and_journal() {
    let emu = TestEmulator::start().await;
    let client = emu.secret_client("alpha");
    let mut params = SetSecretParameters::default();
    params.value = Some("v".into());
    client
        .set_secret("watched", params.try_into().unwrap(), None)
        .await
        .unwrap();

    emu.admin(Method::POST, "/faults", Some(json!({"kind": "throttle", "count": 1, "method": "GET", "path": "/secrets/watched", "retry_after": 1}))).await;
    client.get_secret("watched", None).await.unwrap();
    let statuses: Vec<u64> = emu
        .journal()
        .await
        .iter()
        .filter(|e| e["method"] == "GET" && e["path"] == "/secrets/watched/")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec![429, 200],
        "the SDK retried after Retry-After"
    );

    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"kind": "drop", "count": 1, "path": "/secrets/watched"})),
    )
    .await;
    let token = emu.token().await;
    let dropped = emu
        .http
        .get(emu.url("alpha", &format!("/secrets/watched?{API}")))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(dropped.is_err(), "the connection is dropped unanswered");

    emu.admin(
        Method::PUT,
        "/permissions",
        Some(json!({"vault": "alpha", "secrets": ["list"]})),
    )
    .await;
    let err = client.get_secret("watched", None).await.unwrap_err();
    assert_eq!(http_error(&err).0, 403);
    let forbidden = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", &format!("/secrets/watched?{API}")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (forbidden.code().as_str(), forbidden.inner().as_str()),
        ("Forbidden", "ForbiddenByPolicy")
    );
    emu.admin(Method::DELETE, "/permissions", None).await;

    emu.settings(json!({"budget": 2})).await;
    let url = emu.url("beta", &format!("/secrets?{API}"));
    assert_eq!(
        raw(&emu, Method::GET, &url, Some(&token), None)
            .await
            .status,
        200
    );
    assert_eq!(
        raw(&emu, Method::GET, &url, Some(&token), None)
            .await
            .status,
        200
    );
    let throttled = raw(&emu, Method::GET, &url, Some(&token), None).await;
    assert_eq!(
        (throttled.status, throttled.code().as_str()),
        (429, "Throttled")
    );
    let retry_after: u64 = throttled.header("retry-after").parse().unwrap();
    assert!((1..=10).contains(&retry_after));
}

#[tokio::test]
async fn state_dir_and_seed_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({
            "secrets": [
                {"name": "many", "value": "v", "version_count": 30},
                {"name": "off", "value": "x", "enabled": false},
                {"name": "stale", "value": "x", "exp": 1_000_000_000},
                {"name": "gone", "value": "x", "deleted": true}
            ],
            "keys": [
                {"name": "signing", "kty": "RSA", "size": 2048, "version_count": 3},
                {"name": "curve", "kty": "EC", "crv": "P-384", "deleted": true}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let state_dir = dir.path().join("state");
    let config = || EmulatorConfig {
        vaults: default_vaults(),
        state_dir: Some(state_dir.clone()),
        seed: Some(seed.clone()),
        ..EmulatorConfig::default()
    };
    let emu = TestEmulator::start_with(config()).await;
    let token = emu.token().await;
    let alpha = |p: &str| emu.url("alpha", &format!("{p}?{API}"));
    let off = raw(
        &emu,
        Method::GET,
        &alpha("/secrets/off"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!((off.status, off.inner().as_str()), (403, "SecretDisabled"));
    assert_eq!(
        raw(
            &emu,
            Method::GET,
            &alpha("/secrets/stale"),
            Some(&token),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        raw(
            &emu,
            Method::GET,
            &alpha("/deletedsecrets/gone"),
            Some(&token),
            None
        )
        .await
        .status,
        200
    );
    let keys = raw(
        &emu,
        Method::GET,
        &alpha("/keys/signing/versions"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(keys.json()["value"].as_array().map(Vec::len), Some(3));
    let key = raw(
        &emu,
        Method::GET,
        &alpha("/keys/signing"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(key.json()["key"]["kty"], "RSA");
    let curve = raw(
        &emu,
        Method::GET,
        &alpha("/deletedkeys/curve"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(curve.status, 200);
    raw(
        &emu,
        Method::PUT,
        &alpha("/secrets/added"),
        Some(&token),
        Some(json!({"value": "kept"})),
    )
    .await;
    let blob = raw(
        &emu,
        Method::POST,
        &alpha("/secrets/many/backup"),
        Some(&token),
        None,
    )
    .await
    .json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(state_dir.join("ca.pem").exists());
    emu.running.shutdown().await;

    let emu = TestEmulator::start_with(config()).await;
    let token = emu.token().await;
    let kept = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", &format!("/secrets/added?{API}")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(kept.json()["value"], "kept");
    let restored = raw(
        &emu,
        Method::POST,
        &emu.url("beta", &format!("/secrets/restore?{API}")),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(
        restored.status, 200,
        "the security world survives a restart"
    );
    let versions = raw(
        &emu,
        Method::GET,
        &emu.url(
            "beta",
            &format!("/secrets/many/versions?{API}&maxresults=25"),
        ),
        Some(&token),
        None,
    )
    .await
    .json();
    assert_eq!(versions["value"].as_array().unwrap().len(), 25);
    assert!(versions["nextLink"].is_string());
}

#[tokio::test]
async fn seed_file_declares_certificates_with_their_managed_key_and_secret() {
    use crate::backup::rest;
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        serde_json::to_vec(&serde_json::json!({
            "certificates": [
                {"name": "web-tls", "subject": "CN=www.example.test", "tags": {"env": "prod"}},
                {"name": "locked", "exportable": false, "content_type": "application/x-pem-file"}
            ]
        }))
        .expect("seed json"),
    )
    .expect("seed written");
    let emu = TestEmulator::start_with(coldvault::emulator::EmulatorConfig {
        vaults: vec![coldvault::emulator::VaultSpec::new("main")],
        seed: Some(seed),
        ..coldvault::emulator::EmulatorConfig::default()
    })
    .await;
    let (status, cert) = rest(
        &emu,
        reqwest::Method::GET,
        "main",
        "/certificates/web-tls/",
        None,
    )
    .await;
    assert_eq!(status, 200, "{cert}");
    assert_eq!(cert["tags"]["env"], "prod");
    assert_eq!(
        cert["policy"]["x509_props"]["subject"],
        "CN=www.example.test"
    );
    let version = cert["id"]
        .as_str()
        .and_then(|id| id.rsplit('/').next())
        .expect("version");
    let (status, secret) = rest(
        &emu,
        reqwest::Method::GET,
        "main",
        "/secrets/web-tls/",
        None,
    )
    .await;
    assert_eq!(status, 200, "{secret}");
    assert_eq!(secret["managed"], true);
    assert_eq!(secret["contentType"], "application/x-pkcs12");
    assert!(
        secret["id"]
            .as_str()
            .is_some_and(|id| id.ends_with(version))
    );
    let (status, key) = rest(&emu, reqwest::Method::GET, "main", "/keys/web-tls/", None).await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["managed"], true);
    let (status, policy) = rest(
        &emu,
        reqwest::Method::GET,
        "main",
        "/certificates/locked/policy",
        None,
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["key_props"]["exportable"], false);
    assert_eq!(
        policy["secret_props"]["contentType"],
        "application/x-pem-file"
    );
}

#[tokio::test]
async fn method_not_allowed_answers_azures_envelope_not_an_empty_body() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    // PUT on a served path that takes GET and DELETE only; POST on a list.
    for (method, path) in [
        (Method::PUT, "/deletedsecrets/x"),
        (Method::POST, "/secrets"),
        (Method::PUT, "/certificates/x/pending"),
    ] {
        let answer = raw(
            &emu,
            method.clone(),
            &emu.url("alpha", &format!("{path}?{API}")),
            Some(&token),
            Some(json!({})),
        )
        .await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.code(), "MethodNotAllowed", "{method} {path}");
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(method.as_str()),
            "{}",
            answer.body
        );
        assert!(
            answer
                .header("content-type")
                .starts_with("application/json"),
            "{method} {path}"
        );
        assert!(!answer.header("x-ms-request-id").is_empty());
    }
    // The gate still comes first: no token, the 401 challenge.
    let answer = raw(
        &emu,
        Method::PUT,
        &emu.url("alpha", &format!("/secrets?{API}")),
        None,
        None,
    )
    .await;
    assert_eq!(answer.status, 401);
    // An unknown route: 404 in the envelope.
    let answer = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", &format!("/nothing/here?{API}")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!((answer.status, answer.code().as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn secure_wrap_and_unwrap_answer_bad_parameter_not_supported() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    let created = raw(
        &emu,
        Method::POST,
        &emu.url("alpha", "/keys/tee/create?api-version=2026-04-01"),
        Some(&token),
        Some(json!({"kty": "RSA"})),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let kid = created.json()["key"]["kid"].as_str().unwrap().to_string();
    let version = kid.rsplit('/').next().unwrap().to_string();
    for (op, body) in [
        ("securewrapkey", json!({"alg": "RSA-OAEP-256"})),
        (
            "secureunwrapkey",
            json!({"alg": "RSA-OAEP-256", "value": "AAAA", "target": "attestation-token"}),
        ),
    ] {
        let answer = raw(
            &emu,
            Method::POST,
            &emu.url(
                "alpha",
                &format!("/keys/tee/{version}/{op}?api-version=2026-04-01"),
            ),
            Some(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(answer.status, 400, "{op}: {}", answer.body);
        assert_eq!(answer.code(), "BadParameter", "{op}");
        assert_eq!(answer.inner(), "NotSupported", "{op}");
        // A key that does not exist is 404 first, as for every key operation.
        let missing = raw(
            &emu,
            Method::POST,
            &emu.url(
                "alpha",
                &format!("/keys/absent/{version}/{op}?api-version=2026-04-01"),
            ),
            Some(&token),
            Some(body),
        )
        .await;
        assert_eq!(
            (missing.status, missing.code().as_str()),
            (404, "KeyNotFound")
        );
    }
}

#[tokio::test]
async fn key_attributes_carry_no_key_size_for_rsa_or_ec_and_oct_is_refused_as_azure_does() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    for (name, body) in [
        (
            "sized-rsa",
            json!({"kty": "RSA", "key_size": 3072, "attributes": {"key_size": 128}}),
        ),
        (
            "sized-ec",
            json!({"kty": "EC", "crv": "P-384", "attributes": {"key_size": 256}}),
        ),
    ] {
        let answer = raw(
            &emu,
            Method::POST,
            &emu.url(
                "alpha",
                &format!("/keys/{name}/create?api-version=2026-04-01"),
            ),
            Some(&token),
            Some(body),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let attributes = answer.json()["attributes"].clone();
        assert!(attributes.get("key_size").is_none(), "{name}: {attributes}");
        assert!(attributes.get("keySize").is_none(), "{name}: {attributes}");
    }
    let answer = raw(
        &emu,
        Method::POST,
        &emu.url("alpha", "/keys/aes/create?api-version=2026-04-01"),
        Some(&token),
        Some(json!({"kty": "oct", "key_size": 256})),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "BadParameter");
    assert_eq!(answer.inner(), "KeyTypeNotSupported");
    assert_eq!(
        answer.json()["error"]["message"].as_str(),
        Some("Invalid kty value: oct")
    );
}

#[tokio::test]
async fn platform_managed_policy_round_trips_through_update_and_backup_restore() {
    let emu = TestEmulator::start().await;
    let token = emu.token().await;
    let v = "api-version=2026-04-01";
    let platform = json!({"certificateUsage": "tls-server", "metadata": {"owner": "platform"}});
    let created = raw(
        &emu,
        Method::POST,
        &emu.url("alpha", &format!("/certificates/pm/create?{v}")),
        Some(&token),
        Some(json!({"policy": {
            "x509_props": {"subject": "CN=pm"},
            "issuer": {"name": "Self"},
            "platformManaged": platform,
        }})),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.body);
    let policy = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", &format!("/certificates/pm/policy?{v}")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(policy.json()["platformManaged"], platform);

    // A policy update that does not name it keeps it; one that names it merges into it, as
    // every policy section does.
    let updated = raw(
        &emu,
        Method::PATCH,
        &emu.url("alpha", &format!("/certificates/pm/policy?{v}")),
        Some(&token),
        Some(json!({"x509_props": {"validity_months": 24}})),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["platformManaged"], platform);
    let updated = raw(
        &emu,
        Method::PATCH,
        &emu.url("alpha", &format!("/certificates/pm/policy?{v}")),
        Some(&token),
        Some(json!({"platformManaged": {"certificateUsage": "code-signing"}})),
    )
    .await;
    let changed = json!({"certificateUsage": "code-signing", "metadata": {"owner": "platform"}});
    assert_eq!(updated.json()["platformManaged"], changed);
    // `certificateUsage` is required; `metadata` must be an object.
    for (method, path, body) in [
        (
            Method::POST,
            "/certificates/pm2/create",
            json!({"policy": {
                "x509_props": {"subject": "CN=pm2"},
                "platformManaged": {"metadata": {}},
            }}),
        ),
        (
            Method::PATCH,
            "/certificates/pm/policy",
            json!({"platformManaged": {"metadata": "not an object"}}),
        ),
    ] {
        let refused = raw(
            &emu,
            method,
            &emu.url("alpha", &format!("{path}?{v}")),
            Some(&token),
            Some(body),
        )
        .await;
        assert_eq!(
            (refused.status, refused.code().as_str()),
            (400, "BadParameter"),
            "{path}"
        );
    }

    // An import keeps the one its policy carries.
    let pfx = raw(
        &emu,
        Method::GET,
        &emu.url("alpha", &format!("/secrets/pm?{v}")),
        Some(&token),
        None,
    )
    .await
    .json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let imported = raw(
        &emu,
        Method::POST,
        &emu.url("alpha", &format!("/certificates/pm-import/import?{v}")),
        Some(&token),
        Some(json!({"value": pfx, "policy": {"platformManaged": platform}})),
    )
    .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(imported.json()["policy"]["platformManaged"], platform);

    // Through a backup blob, a purge and a restore.
    let blob = raw(
        &emu,
        Method::POST,
        &emu.url("alpha", &format!("/certificates/pm/backup?{v}")),
        Some(&token),
        None,
    )
    .await
    .json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, path) in [
        (Method::DELETE, "/certificates/pm"),
        (Method::DELETE, "/deletedcertificates/pm"),
    ] {
        let answer = raw(
            &emu,
            method,
            &emu.url("alpha", &format!("{path}?{v}")),
            Some(&token),
            None,
        )
        .await;
        assert!(answer.status < 300, "{path}: {}", answer.body);
    }
    let restored = raw(
        &emu,
        Method::POST,
        &emu.url("alpha", &format!("/certificates/restore?{v}")),
        Some(&token),
        Some(json!({"value": blob})),
    )
    .await;
    assert_eq!(restored.status, 200, "{}", restored.body);
    assert_eq!(restored.json()["policy"]["platformManaged"], changed);
}

#[tokio::test]
async fn lost_fault_commits_the_write_and_drops_the_answer() {
    let emu = TestEmulator::start().await;
    emu.admin(
        Method::POST,
        "/faults",
        Some(json!({"kind": "lost", "count": 1, "method": "PUT", "path": "/secrets/committed"})),
    )
    .await;
    let token = emu.token().await;
    let lost = emu
        .http
        .put(emu.url("alpha", &format!("/secrets/committed?{API}")))
        .bearer_auth(&token)
        .json(&json!({"value": "written-once"}))
        .send()
        .await;
    assert!(lost.is_err(), "the answer is dropped");
    // The write happened all the same: one version holding the value.
    let client = emu.secret_client("alpha");
    let secret = client
        .get_secret("committed", None)
        .await
        .expect("committed")
        .into_model()
        .expect("model");
    assert_eq!(secret.value.as_deref(), Some("written-once"));
    let versions: Vec<_> = client
        .list_secret_properties_versions("committed", None)
        .expect("pager")
        .try_collect()
        .await
        .expect("versions");
    assert_eq!(versions.len(), 1);
    let entry = emu
        .journal()
        .await
        .into_iter()
        .find(|e| e["method"] == "PUT" && e["path"] == "/secrets/committed")
        .expect("journaled");
    assert_eq!(
        (entry["status"].clone(), entry["fault"].clone()),
        (json!(0), json!("lost"))
    );
}
