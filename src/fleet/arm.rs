//! The Azure Resource Manager client of discovery: the subscriptions an identity sees and the
//! Key Vault resources of each (`vaults`, `managedHSMs`, `deletedVaults`), read with the same
//! credential chain as the vaults (`AZURE_*`, workload identity, managed identity, the Azure
//! CLI) for the scope `{arm}/.default`.
//!
//! The public cloud's ARM (`https://management.azure.com/`) is the default; `--arm-endpoint`
//! / `COLDVAULT_ARM_ENDPOINT` names another (a sovereign cloud, the local Key Vault's
//! `arm_endpoint`). Lists follow `nextLink` verbatim until it is missing or null, never to
//! another host (the bearer token would go with it). 429 and 5xx answers are retried after
//! `Retry-After`, a few times.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use serde_json::Value;
use url::Url;

use super::{DiscoveredVault, ResourceKind, resource_group_of};
use crate::vault::azure::ConnectOptions;
use crate::vault::credentials::{AuthError, CredentialChain, SelectedCredential};
use crate::vault::transport::{azure_transport_with, build_http_client_with};

/// The public cloud's Azure Resource Manager.
pub const PUBLIC_ARM_ENDPOINT: &str = "https://management.azure.com/";

/// `Microsoft.Resources` subscriptions `api-version` (what the Azure CLI sends).
const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
/// `Microsoft.KeyVault` `api-version` for vaults, Managed HSMs and deleted vaults.
const KEYVAULT_API_VERSION: &str = "2023-07-01";
/// Attempts per request (the first included) on 429, 5xx or no answer.
const ATTEMPTS: u32 = 5;
/// The longest `Retry-After` honoured; longer ones are cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A list longer than this many pages is taken as a loop of `nextLink`s.
const MAX_PAGES: usize = 100_000;

/// Why a Resource Manager read failed. Messages never hold a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    #[error("{0}")]
    Authentication(AuthError),
    /// ARM answered with an error (its `code` and `message`).
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Setup(String),
    #[error("unexpected answer from Azure Resource Manager: {0}")]
    Malformed(String),
}

impl ArmError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ArmError::Authentication(auth) => auth.hint().to_owned(),
            ArmError::Refused {
                status: 401, code, ..
            } if code == "InvalidAuthenticationTokenTenant" => {
                "the subscription belongs to another tenant: run with that tenant's identity \
                 (AZURE_TENANT_ID and its client), one run per tenant"
                    .to_owned()
            }
            ArmError::Refused { status: 401, .. } => "the identity's token was refused: check \
                 --arm-endpoint (or COLDVAULT_ARM_ENDPOINT) names the cloud the identity \
                 signs in to"
                .to_owned(),
            ArmError::Refused { status: 403, .. } => "the identity needs Reader (or \
                 Microsoft.KeyVault/vaults/read) on the subscription to list its vaults"
                .to_owned(),
            ArmError::Refused { status: 404, .. } => {
                "check the subscription id (coldvault vaults --all-subscriptions lists what \
                 the identity sees)"
                    .to_owned()
            }
            ArmError::Refused { .. } | ArmError::Network(_) | ArmError::Malformed(_) => {
                "check --arm-endpoint (or COLDVAULT_ARM_ENDPOINT) and the network path to it"
                    .to_owned()
            }
            ArmError::Setup(_) => {
                "check --ca-cert (or COLDVAULT_CA_CERT): it must be a PEM file".to_owned()
            }
        }
    }
}

/// One subscription as `GET /subscriptions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriptionInfo {
    pub id: String,
    pub tenant: Option<String>,
    pub name: Option<String>,
    pub state: Option<String>,
}

/// An Azure Resource Manager reader, signed in with the vaults' credential chain.
pub struct ArmClient {
    http: reqwest::Client,
    chain: Arc<CredentialChain>,
    endpoint: Url,
    scope: String,
    token: tokio::sync::Mutex<Option<(String, time::OffsetDateTime)>>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Parses an ARM endpoint (`https://HOST[:PORT]/`); plain `http` is refused, as Azure's
/// clients refuse it (a bearer token would travel in clear).
pub fn parse_endpoint(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("'{text}' must be an https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("'{text}' names no host"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The vault DNS suffix of an ARM endpoint's cloud, so the credential chain signs in at that
/// cloud's authority (`AZURE_AUTHORITY_HOST` still wins).
fn cloud_vault_host(endpoint: &Url) -> String {
    let host = endpoint.host_str().unwrap_or_default().to_ascii_lowercase();
    if host.ends_with("chinacloudapi.cn") {
        "arm.vault.azure.cn".to_owned()
    } else if host.ends_with("usgovcloudapi.net") {
        "arm.vault.usgovcloudapi.net".to_owned()
    } else {
        host
    }
}

impl ArmClient {
    /// A client for `endpoint` with the connection settings of the vaults (`--ca-cert`,
    /// `--auth`, `--timeout`, the environment). Signs in on the first request.
    pub fn new(endpoint: Url, options: &ConnectOptions) -> Result<Self, ArmError> {
        let ca_cert = options.ca_cert.clone().or_else(|| {
            options
                .env
                .get("COLDVAULT_CA_CERT")
                .map(std::path::PathBuf::from)
        });
        let http = build_http_client_with(ca_cert.as_deref(), options.timeout)
            .map_err(|e| ArmError::Setup(e.to_string()))?;
        let transport = azure_transport_with(http.clone(), options.network_warning.clone());
        let chain = CredentialChain::new(
            &options.env,
            options.auth,
            &transport,
            &cloud_vault_host(&endpoint),
        )
        .map_err(ArmError::Authentication)?;
        let scope = format!("{}/.default", endpoint.as_str().trim_end_matches('/'));
        Ok(Self {
            http,
            chain: Arc::new(chain),
            endpoint,
            scope,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The endpoint read.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The sign-in method that produced the token, once one did.
    pub fn signed_in_with(&self) -> Option<SelectedCredential> {
        self.chain.selected()
    }

    /// Every subscription the identity sees (`GET /subscriptions`, every page).
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>, ArmError> {
        let url = self.url("subscriptions", SUBSCRIPTIONS_API_VERSION)?;
        let items = self.list(url).await?;
        items
            .iter()
            .map(|item| {
                let id = item["subscriptionId"].as_str().ok_or_else(|| {
                    ArmError::Malformed("a subscription without subscriptionId".into())
                })?;
                Ok(SubscriptionInfo {
                    id: id.to_owned(),
                    tenant: item["tenantId"].as_str().map(str::to_owned),
                    name: item["displayName"].as_str().map(str::to_owned),
                    state: item["state"].as_str().map(str::to_owned),
                })
            })
            .collect()
    }

    /// The vaults, Managed HSMs and soft-deleted vaults of one subscription.
    pub async fn key_vaults(&self, subscription: &str) -> Result<Vec<DiscoveredVault>, ArmError> {
        let base = format!("subscriptions/{subscription}/providers/Microsoft.KeyVault/");
        let mut found = Vec::new();
        let vaults = self
            .list(self.url(&format!("{base}vaults"), KEYVAULT_API_VERSION)?)
            .await?;
        for item in &vaults {
            found.push(live(item, subscription, ResourceKind::Vault)?);
        }
        let hsms = self
            .list(self.url(&format!("{base}managedHSMs"), KEYVAULT_API_VERSION)?)
            .await?;
        for item in &hsms {
            found.push(live(item, subscription, ResourceKind::ManagedHsm)?);
        }
        let deleted = self
            .list(self.url(&format!("{base}deletedVaults"), KEYVAULT_API_VERSION)?)
            .await?;
        for item in &deleted {
            found.push(deleted_vault(item, subscription)?);
        }
        Ok(found)
    }

    fn url(&self, path: &str, api_version: &str) -> Result<Url, ArmError> {
        let mut url = self
            .endpoint
            .join(path)
            .map_err(|e| ArmError::Setup(format!("cannot form an ARM URL for {path}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// Every item of a list, following `nextLink` until it is missing or null.
    async fn list(&self, first: Url) -> Result<Vec<Value>, ArmError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0usize;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ArmError::Malformed(format!(
                    "more than {MAX_PAGES} pages: the nextLinks loop"
                )));
            }
            let page = self.get(&url).await?;
            match page.get("value") {
                Some(Value::Array(values)) => items.extend(values.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => return Err(ArmError::Malformed("'value' is not a list".into())),
            }
            next = match page.get("nextLink") {
                Some(Value::String(link)) if !link.is_empty() => {
                    Some(same_origin(&self.endpoint, link)?)
                }
                _ => None,
            };
        }
        Ok(items)
    }

    async fn bearer(&self) -> Result<String, ArmError> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && *expires - time::Duration::minutes(5) > time::OffsetDateTime::now_utc()
        {
            return Ok(token.clone());
        }
        match self.chain.get_token(&[self.scope.as_str()], None).await {
            Ok(token) => {
                let value = token.token.secret().to_owned();
                *cached = Some((value.clone(), token.expires_on));
                Ok(value)
            }
            Err(err) => Err(match self.chain.last_failure() {
                Some(auth) => ArmError::Authentication(auth),
                None => ArmError::Network(format!("cannot get a token for {}: {err}", self.scope)),
            }),
        }
    }

    /// One GET with retries on 429, 5xx and no answer.
    async fn get(&self, url: &Url) -> Result<Value, ArmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.bearer().await?;
            let sent = self
                .http
                .get(url.clone())
                .bearer_auth(&token)
                .header("accept", "application/json")
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(err) if attempt < ATTEMPTS => {
                    tracing::debug!("ARM GET {}: {err}; retrying", url.path());
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(err) => {
                    return Err(ArmError::Network(format!(
                        "{}: no answer: {}",
                        url.host_str().unwrap_or_default(),
                        crate::vault::transport::error_chain(&err)
                    )));
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            let body = response.text().await.unwrap_or_default();
            if (status == 429 || status >= 500) && attempt < ATTEMPTS {
                tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
                continue;
            }
            let parsed: Option<Value> = serde_json::from_str(&body).ok();
            if (200..300).contains(&status) {
                return parsed.ok_or_else(|| {
                    ArmError::Malformed(format!("GET {} answered no JSON", url.path()))
                });
            }
            let error = parsed.as_ref().map(|v| &v["error"]);
            let code = error
                .and_then(|e| e["code"].as_str())
                .unwrap_or("Error")
                .to_owned();
            let message = error
                .and_then(|e| e["message"].as_str())
                .map_or_else(|| format!("GET {} failed", url.path()), one_line);
            return Err(ArmError::Refused {
                status,
                code,
                message,
            });
        }
    }
}

/// A `nextLink`, refused when it leaves the endpoint's scheme, host or port: the bearer token
/// would follow it.
fn same_origin(endpoint: &Url, link: &str) -> Result<Url, ArmError> {
    let url =
        Url::parse(link).map_err(|e| ArmError::Malformed(format!("nextLink is not a URL: {e}")))?;
    let origin = |u: &Url| {
        (
            u.scheme().to_owned(),
            u.host_str().map(str::to_ascii_lowercase),
            u.port_or_known_default(),
        )
    };
    if origin(&url) != origin(endpoint) {
        return Err(ArmError::Malformed(format!(
            "a nextLink leads to another host ({}): not followed",
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(url)
}

/// The wait before retry `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64 << attempt.saturating_sub(1).min(6))
}

/// ARM messages can run over lines; the command line prints one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn string(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(str::to_owned)
}

fn tags(value: &Value) -> std::collections::BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A vault or Managed HSM of a `vaults` / `managedHSMs` list.
fn live(item: &Value, subscription: &str, kind: ResourceKind) -> Result<DiscoveredVault, ArmError> {
    let name = string(item, "name")
        .ok_or_else(|| ArmError::Malformed("a Key Vault resource without a name".into()))?;
    let id = string(item, "id").unwrap_or_default();
    let properties = &item["properties"];
    let url_key = if kind == ResourceKind::ManagedHsm {
        "hsmUri"
    } else {
        "vaultUri"
    };
    Ok(DiscoveredVault {
        kind,
        resource_group: resource_group_of(&id).unwrap_or_default(),
        subscription: subscription.to_owned(),
        location: string(item, "location").unwrap_or_default(),
        tenant: string(properties, "tenantId"),
        tags: tags(&item["tags"]),
        url: string(properties, url_key),
        soft_delete: properties["enableSoftDelete"].as_bool(),
        soft_delete_retention_days: properties["softDeleteRetentionInDays"]
            .as_u64()
            .and_then(|d| u32::try_from(d).ok()),
        purge_protection: properties["enablePurgeProtection"]
            .as_bool()
            .unwrap_or(false),
        deletion_date: None,
        scheduled_purge_date: None,
        name,
        id,
    })
}

/// A soft-deleted vault of a `deletedVaults` list: its former id is `properties.vaultId`.
fn deleted_vault(item: &Value, subscription: &str) -> Result<DiscoveredVault, ArmError> {
    let name = string(item, "name")
        .ok_or_else(|| ArmError::Malformed("a deleted vault without a name".into()))?;
    let properties = &item["properties"];
    let id = string(properties, "vaultId")
        .or_else(|| string(item, "id"))
        .unwrap_or_default();
    Ok(DiscoveredVault {
        kind: ResourceKind::DeletedVault,
        resource_group: resource_group_of(&id).unwrap_or_default(),
        subscription: subscription.to_owned(),
        location: string(properties, "location").unwrap_or_default(),
        tenant: None,
        tags: tags(&properties["tags"]),
        url: None,
        // A deleted vault exists only because soft delete was on.
        soft_delete: Some(true),
        soft_delete_retention_days: None,
        purge_protection: properties["purgeProtectionEnabled"]
            .as_bool()
            .unwrap_or(false),
        deletion_date: string(properties, "deletionDate"),
        scheduled_purge_date: string(properties, "scheduledPurgeDate"),
        name,
        id,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_must_be_https_and_end_in_a_slash() {
        assert_eq!(
            parse_endpoint("https://management.azure.com")
                .unwrap()
                .as_str(),
            "https://management.azure.com/"
        );
        assert_eq!(
            parse_endpoint("https://localhost:8443/").unwrap().as_str(),
            "https://localhost:8443/"
        );
        assert!(parse_endpoint("http://management.azure.com/").is_err());
        assert!(parse_endpoint("management.azure.com").is_err());
    }

    #[test]
    fn next_links_are_followed_only_on_the_endpoints_host() {
        let endpoint = Url::parse("https://management.azure.com/").unwrap();
        let next =
            "https://MANAGEMENT.azure.com:443/subscriptions?api-version=2022-12-01&%24skiptoken=x";
        assert_eq!(
            same_origin(&endpoint, next).unwrap().as_str(),
            "https://management.azure.com/subscriptions?api-version=2022-12-01&%24skiptoken=x"
        );
        for elsewhere in [
            "https://attacker.example/subscriptions?x",
            "http://management.azure.com/subscriptions",
            "https://management.azure.com:8443/subscriptions",
            "not a url",
        ] {
            assert!(same_origin(&endpoint, elsewhere).is_err(), "{elsewhere}");
        }
    }

    #[test]
    fn sovereign_endpoints_sign_in_at_their_cloud() {
        let host = |u: &str| cloud_vault_host(&Url::parse(u).unwrap());
        assert!(host("https://management.chinacloudapi.cn/").ends_with(".vault.azure.cn"));
        assert!(
            host("https://management.usgovcloudapi.net/").ends_with(".vault.usgovcloudapi.net")
        );
        assert_eq!(
            host("https://management.azure.com/"),
            "management.azure.com"
        );
    }

    #[test]
    fn resources_read_as_azure_writes_them() {
        let vault = json!({
            "id": "/subscriptions/s1/resourceGroups/rg-a/providers/Microsoft.KeyVault/vaults/kv1",
            "name": "kv1", "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
            "tags": {"env": "prod"},
            "properties": {"tenantId": "t1", "vaultUri": "https://kv1.vault.azure.net/",
                           "enableSoftDelete": true, "softDeleteRetentionInDays": 7,
                           "enablePurgeProtection": true}
        });
        let found = live(&vault, "s1", ResourceKind::Vault).unwrap();
        assert_eq!(found.resource_group, "rg-a");
        assert_eq!(found.url.as_deref(), Some("https://kv1.vault.azure.net/"));
        assert_eq!(found.soft_delete_retention_days, Some(7));
        assert!(found.purge_protection);
        assert_eq!(found.tags["env"], "prod");
        let deleted = json!({
            "id": "/subscriptions/s1/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/old",
            "name": "old", "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {"vaultId": "/subscriptions/s1/resourceGroups/rg-b/providers/Microsoft.KeyVault/vaults/old",
                           "location": "westeurope", "deletionDate": "2026-01-01T00:00:00Z",
                           "scheduledPurgeDate": "2026-04-01T00:00:00Z", "tags": {}}
        });
        let found = deleted_vault(&deleted, "s1").unwrap();
        assert_eq!(found.kind, ResourceKind::DeletedVault);
        assert_eq!(found.resource_group, "rg-b");
        assert!(found.id.ends_with("/vaults/old"));
        assert!(!found.purge_protection);
        assert_eq!(found.url, None);
    }
}
