//! [`AzureVault`]: the [`VaultReader`] / [`VaultWriter`] implementation over the official
//! `azure_security_keyvault_{secrets,keys,certificates}` crates.
//!
//! One `AzureVault` holds the three clients of one vault, built on one azure_core pipeline
//! configuration: coldvault's transport ([`super::transport`]), azure_core's exponential retry
//! policy (429 after `Retry-After`, 5xx and dropped connections with backoff and jitter), the
//! crates' challenge-based authentication with challenge verification left on, and the shared
//! [`Pacer`] as a per-try policy. Cloning is cheap (an `Arc`), so the commands hand clones to as
//! many concurrent tasks as they like. The crates' pagers follow `nextLink` until it is null or
//! absent, across empty pages. Azure failures become [`VaultError`]s here, in one place.
//!
//! Writes (set, restore, recover, import) go through a second set of the three clients whose
//! azure_core retries are off: azure_core would resend a write whose answer was lost and add a
//! duplicate version. They are retried by [`super::writes::retry_write`] instead, which reads
//! the target back after an attempt of unknown outcome before sending it again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, RequestContent, Response, RetryOptions,
    policies::Policy,
};
use azure_security_keyvault_certificates::models as cm;
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models as km;
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models as sm;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;

use super::credentials::{
    AuthAttempt, AuthError, AuthMethod, CredentialChain, EnvSnapshot, SelectedCredential,
};
use super::pacing::{Pacer, PacingConfig, PacingPolicy, RequestStats, retry_after};
use super::transport::error_chain;
use super::transport::{
    DEFAULT_TIMEOUT, DeadlinePolicy, NetworkWarning, azure_transport_with, build_http_client_with,
    find_network_failure,
};
use super::writes::{is_same_certificate_import, is_same_secret_write, retry_write};
use super::{
    Attributes, BackupBlob, CertificateBundle, CertificateImport, CertificateProperties,
    DeletedItem, ItemKind, KeyBundle, KeyProperties, NewSecretVersion, SecretProperties,
    SecretVersionValue, Tags, VaultError, VaultReader, VaultUrl, VaultWriter, WrittenItem,
    is_valid_item_name, is_valid_version, split_object_id,
};

/// The largest page Key Vault serves: fewer requests per list.
const MAX_PAGE_SIZE: i32 = 25;
/// A name no vault is expected to hold, read once at connect time to sign in.
const SIGN_IN_PROBE_NAME: &str = "coldvault-sign-in-check";

/// How to reach and sign in to a vault.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// An extra trusted root (`--ca-cert`); when `None`, `COLDVAULT_CA_CERT` from
    /// [`ConnectOptions::env`] is used if set.
    pub ca_cert: Option<PathBuf>,
    /// `--auth`: try only this method instead of the chain.
    pub auth: Option<AuthMethod>,
    /// `--timeout`: how long one request may take, retries and waits included (a connection
    /// attempt gets half of it at most, and never more than 10 s).
    pub timeout: Duration,
    /// Told once per host when a request first gets no answer and will be retried.
    pub network_warning: Option<NetworkWarning>,
    /// The environment the credentials read (`AZURE_*`, `COLDVAULT_CA_CERT`).
    pub env: EnvSnapshot,
    /// Learn a request rate from sustained throttling (see [`super::pacing`]); the shared
    /// pause on sustained throttling is always on.
    pub adaptive_rate: bool,
    /// `--max-rate`: at most this many requests per second to the vault (positive).
    pub max_rate: Option<f64>,
    /// Retries per request for 429, 5xx and dropped connections.
    pub max_retries: u32,
    /// Items per list page, 1-25.
    pub page_size: i32,
    /// Sign in at connect time (one GET of an absent secret), so a credential problem is
    /// reported before any work starts and [`AzureVault::signed_in_with`] is known.
    pub sign_in: bool,
}

impl Default for ConnectOptions {
    /// No extra root, the whole chain, a 2-minute request deadline, no warning hook, an empty
    /// environment, adaptive pacing without a cap, 10 retries, pages of 25, sign-in at connect.
    fn default() -> Self {
        Self {
            ca_cert: None,
            auth: None,
            timeout: DEFAULT_TIMEOUT,
            network_warning: None,
            env: EnvSnapshot::default(),
            adaptive_rate: true,
            max_rate: None,
            max_retries: 10,
            page_size: MAX_PAGE_SIZE,
            sign_in: true,
        }
    }
}

impl ConnectOptions {
    /// Defaults with the credential variables of this process.
    pub fn from_process_env() -> Self {
        Self {
            env: EnvSnapshot::from_process(),
            ..Self::default()
        }
    }
}

/// One vault reached through the official crates. Cheap to clone; `Send + Sync`. Connect once
/// per vault and hand out clones: the throttle gate and the counters belong to one connection.
#[derive(Clone)]
pub struct AzureVault {
    inner: Arc<Inner>,
}

struct Inner {
    url: VaultUrl,
    secrets: SecretClient,
    keys: KeyClient,
    certificates: CertificateClient,
    /// The same clients without azure_core's retries, for writes (see the module doc).
    writers: Writers,
    /// Retries per write, as for reads.
    max_retries: u32,
    pacer: Arc<Pacer>,
    chain: Arc<CredentialChain>,
    page_size: i32,
}

/// The write clients: azure_core retries nothing, [`super::writes::retry_write`] does.
struct Writers {
    secrets: SecretClient,
    keys: KeyClient,
    certificates: CertificateClient,
}

impl std::fmt::Debug for AzureVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureVault")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl AzureVault {
    /// Builds the clients for `url` and, unless `options.sign_in` is off, signs in. Fails with
    /// [`VaultError::Authentication`] listing every credential tried, [`VaultError::Setup`] for
    /// an unusable `--ca-cert`, or the classified error of the sign-in request.
    pub async fn connect(url: &VaultUrl, options: &ConnectOptions) -> Result<Self, VaultError> {
        let ca_cert = options
            .ca_cert
            .clone()
            .or_else(|| options.env.get("COLDVAULT_CA_CERT").map(PathBuf::from));
        let http = build_http_client_with(ca_cert.as_deref(), options.timeout)?;
        let transport = azure_transport_with(http, options.network_warning.clone());
        let chain = Arc::new(CredentialChain::new(
            &options.env,
            options.auth,
            &transport,
            url.host(),
        )?);
        let pacer = Arc::new(Pacer::new(PacingConfig {
            adaptive: options.adaptive_rate,
            max_rate: options.max_rate,
        }));
        let client_options = ClientOptions {
            transport: Some(transport),
            per_call_policies: vec![
                Arc::new(DeadlinePolicy::new(options.timeout)) as Arc<dyn Policy>
            ],
            per_try_policies: vec![Arc::new(PacingPolicy::new(pacer.clone())) as Arc<dyn Policy>],
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: options.max_retries,
                max_total_elapsed: azure_core::time::Duration::try_from(options.timeout)
                    .unwrap_or(azure_core::time::Duration::minutes(5)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let write_options = ClientOptions {
            retry: RetryOptions::none(),
            ..client_options.clone()
        };
        let endpoint = url.as_str();
        let credential: Arc<dyn azure_core::credentials::TokenCredential> = chain.clone();
        let setup =
            |e: azure_core::Error| VaultError::Setup(format!("cannot create the client: {e}"));
        let writers = Writers {
            secrets: SecretClient::new(
                endpoint,
                credential.clone(),
                Some(SecretClientOptions {
                    client_options: write_options.clone(),
                    ..Default::default()
                }),
            )
            .map_err(setup)?,
            keys: KeyClient::new(
                endpoint,
                credential.clone(),
                Some(KeyClientOptions {
                    client_options: write_options.clone(),
                    ..Default::default()
                }),
            )
            .map_err(setup)?,
            certificates: CertificateClient::new(
                endpoint,
                credential.clone(),
                Some(CertificateClientOptions {
                    client_options: write_options,
                    ..Default::default()
                }),
            )
            .map_err(setup)?,
        };
        let secrets = SecretClient::new(
            endpoint,
            credential.clone(),
            Some(SecretClientOptions {
                client_options: client_options.clone(),
                ..Default::default()
            }),
        )
        .map_err(setup)?;
        let keys = KeyClient::new(
            endpoint,
            credential.clone(),
            Some(KeyClientOptions {
                client_options: client_options.clone(),
                ..Default::default()
            }),
        )
        .map_err(setup)?;
        let certificates = CertificateClient::new(
            endpoint,
            credential,
            Some(CertificateClientOptions {
                client_options,
                ..Default::default()
            }),
        )
        .map_err(setup)?;
        let vault = Self {
            inner: Arc::new(Inner {
                url: url.clone(),
                secrets,
                keys,
                certificates,
                writers,
                max_retries: options.max_retries,
                pacer,
                chain,
                page_size: options.page_size.clamp(1, MAX_PAGE_SIZE),
            }),
        };
        if options.sign_in {
            vault.sign_in().await?;
        }
        Ok(vault)
    }

    /// Sends one request that needs a token: any answer but 401 means the sign-in worked.
    async fn sign_in(&self) -> Result<(), VaultError> {
        match self
            .inner
            .secrets
            .get_secret(SIGN_IN_PROBE_NAME, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error(e) {
                VaultError::NotFound { .. } | VaultError::Forbidden { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Which credential signed in, once one has (after `connect` with sign-in, always).
    /// The commands print it on stderr.
    pub fn signed_in_with(&self) -> Option<SelectedCredential> {
        self.inner.chain.selected()
    }

    /// The requests sent to this vault so far, 429s and errors.
    pub fn stats(&self) -> RequestStats {
        self.inner.pacer.stats()
    }

    /// Classifies an azure_core error.
    fn error(&self, err: azure_core::Error) -> VaultError {
        map_error(err, &self.inner.chain)
    }

    fn check_name(name: &str) -> Result<(), VaultError> {
        if is_valid_item_name(name) {
            Ok(())
        } else {
            Err(VaultError::InvalidName {
                what: "object name",
                name: name.to_owned(),
            })
        }
    }

    fn check_version(version: Option<&str>) -> Result<(), VaultError> {
        match version {
            Some(v) if !is_valid_version(v) => Err(VaultError::InvalidName {
                what: "version",
                name: v.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Turns an azure_core error into a classified [`VaultError`].
fn map_error(err: azure_core::Error, chain: &CredentialChain) -> VaultError {
    // A request that got no answer, wherever in the pipeline it was wrapped; a credential's
    // own network failure stays with the credential that met it.
    if !matches!(err.kind(), ErrorKind::Credential)
        && let Some(failure) = find_network_failure(&err)
    {
        return VaultError::Network(failure.clone());
    }
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let envelope = raw_response
                .as_ref()
                .and_then(|raw| serde_json::from_slice::<serde_json::Value>(raw.body()).ok());
            let error = envelope.as_ref().and_then(|v| v.get("error"));
            let code = error
                .and_then(|e| e.get("code"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .or_else(|| error_code.clone());
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            let inner = error.and_then(innermost_code);
            let wait = raw_response
                .as_ref()
                .and_then(|raw| retry_after(raw.headers()));
            VaultError::from_response(
                status,
                code.as_deref(),
                inner.as_deref(),
                message.as_deref(),
                wait,
            )
        }
        ErrorKind::Credential => {
            VaultError::Authentication(chain.last_failure().unwrap_or_else(|| AuthError {
                attempts: vec![AuthAttempt::new(
                    chain
                        .selected()
                        .map_or(AuthMethod::Env, |selected| selected.method),
                    error_chain(&err),
                )],
                fallback_hint:
                    "pin the method you mean with --auth to see only its failure".to_owned(),
            }))
        }
        ErrorKind::Io | ErrorKind::Connection => VaultError::Transient {
            status: None,
            message: error_chain(&err),
        },
        ErrorKind::DataConversion => VaultError::UnexpectedResponse(error_chain(&err)),
        _ => VaultError::Other {
            status: None,
            message: error_chain(&err),
        },
    }
}

/// The innermost `innererror.code` of Azure's error envelope, where Key Vault puts the specific
/// reason (`SecretDisabled`, `ObjectIsDeletedButRecoverable`, …).
fn innermost_code(error: &serde_json::Value) -> Option<String> {
    let mut code = None;
    let mut current = error.get("innererror");
    while let Some(inner) = current {
        if let Some(c) = inner.get("code").and_then(serde_json::Value::as_str) {
            code = Some(c.to_owned());
        }
        current = inner.get("innererror");
    }
    code
}

fn tags(tags: Option<std::collections::HashMap<String, String>>) -> Tags {
    tags.map(|t| t.into_iter().collect()).unwrap_or_default()
}

/// The serialized name of a generated enum (`Recoverable+Purgeable`).
fn enum_name<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn secret_attributes(a: Option<sm::SecretAttributes>) -> Attributes {
    let Some(a) = a else {
        return Attributes::default();
    };
    Attributes {
        enabled: a.enabled,
        not_before: a.not_before,
        expires: a.expires,
        created: a.created,
        updated: a.updated,
        recovery_level: a.recovery_level.as_ref().and_then(enum_name),
        recoverable_days: a.recoverable_days,
    }
}

fn key_attributes(a: Option<km::KeyAttributes>) -> Attributes {
    let Some(a) = a else {
        return Attributes::default();
    };
    Attributes {
        enabled: a.enabled,
        not_before: a.not_before,
        expires: a.expires,
        created: a.created,
        updated: a.updated,
        recovery_level: a.recovery_level.as_ref().and_then(enum_name),
        recoverable_days: a.recoverable_days,
    }
}

fn certificate_attributes(a: Option<cm::CertificateAttributes>) -> Attributes {
    let Some(a) = a else {
        return Attributes::default();
    };
    Attributes {
        enabled: a.enabled,
        not_before: a.not_before,
        expires: a.expires,
        created: a.created,
        updated: a.updated,
        recovery_level: a.recovery_level.as_ref().and_then(enum_name),
        recoverable_days: a.recoverable_days,
    }
}

/// Name and version from an object id, or an error naming what Azure sent.
fn parse_id(
    id: Option<&str>,
    collection: &str,
) -> Result<(String, String, Option<String>), VaultError> {
    let id = id
        .ok_or_else(|| VaultError::UnexpectedResponse(format!("a {collection} item without id")))?;
    let (name, version) = split_object_id(id, collection).ok_or_else(|| {
        VaultError::UnexpectedResponse(format!("'{id}' is not a {collection} identifier"))
    })?;
    Ok((id.to_owned(), name, version))
}

fn secret_properties(p: sm::SecretProperties) -> Result<SecretProperties, VaultError> {
    let (id, name, version) = parse_id(p.id.as_deref(), "secrets")?;
    Ok(SecretProperties {
        name,
        version,
        id,
        content_type: p.content_type,
        tags: tags(p.tags),
        attributes: secret_attributes(p.attributes),
        managed: p.managed.unwrap_or(false),
        key_id: None,
    })
}

fn secret_from_bundle(s: sm::Secret) -> Result<SecretVersionValue, VaultError> {
    let (id, name, version) = parse_id(s.id.as_deref(), "secrets")?;
    let value = s.value.ok_or_else(|| {
        VaultError::UnexpectedResponse(format!("secret '{name}' came without a value"))
    })?;
    Ok(SecretVersionValue {
        properties: SecretProperties {
            name,
            version,
            id,
            content_type: s.content_type,
            tags: tags(s.tags),
            attributes: secret_attributes(s.attributes),
            managed: s.managed.unwrap_or(false),
            key_id: s.kid,
        },
        value: value.into(),
    })
}

fn key_properties(p: km::KeyProperties) -> Result<KeyProperties, VaultError> {
    let (id, name, version) = parse_id(p.kid.as_deref(), "keys")?;
    Ok(KeyProperties {
        name,
        version,
        id,
        tags: tags(p.tags),
        attributes: key_attributes(p.attributes),
        managed: p.managed.unwrap_or(false),
    })
}

fn certificate_properties(
    p: cm::CertificateProperties,
) -> Result<CertificateProperties, VaultError> {
    let (id, name, version) = parse_id(p.id.as_deref(), "certificates")?;
    Ok(CertificateProperties {
        name,
        version,
        id,
        tags: tags(p.tags),
        attributes: certificate_attributes(p.attributes),
        x509_thumbprint: p.x509_thumbprint,
    })
}

/// Name from a deleted item's `id`, falling back to its `recoveryId`.
fn deleted_name(
    id: Option<&str>,
    recovery_id: Option<&str>,
    collection: &str,
    deleted_collection: &str,
) -> Result<(String, String), VaultError> {
    if let Some(id) = id
        && let Some((name, _)) = split_object_id(id, collection)
    {
        return Ok((id.to_owned(), name));
    }
    if let Some(rid) = recovery_id
        && let Some((name, _)) = split_object_id(rid, deleted_collection)
    {
        return Ok((id.unwrap_or(rid).to_owned(), name));
    }
    Err(VaultError::UnexpectedResponse(format!(
        "a deleted {collection} item without a usable id"
    )))
}

#[allow(clippy::too_many_arguments)]
fn deleted_item(
    kind: ItemKind,
    id: Option<&str>,
    recovery_id: Option<String>,
    deleted_date: Option<OffsetDateTime>,
    scheduled_purge_date: Option<OffsetDateTime>,
    item_tags: Option<std::collections::HashMap<String, String>>,
    attributes: Attributes,
    managed: Option<bool>,
) -> Result<DeletedItem, VaultError> {
    let (collection, deleted_collection) = match kind {
        ItemKind::Secret => ("secrets", "deletedsecrets"),
        ItemKind::Key => ("keys", "deletedkeys"),
        ItemKind::Certificate => ("certificates", "deletedcertificates"),
    };
    let (id, name) = deleted_name(id, recovery_id.as_deref(), collection, deleted_collection)?;
    Ok(DeletedItem {
        kind,
        name,
        id,
        recovery_id,
        deleted_date,
        scheduled_purge_date,
        tags: tags(item_tags),
        attributes,
        managed: managed.unwrap_or(false),
    })
}

/// The raw JSON body and the typed model of one response.
fn raw_and_model<T>(response: Response<T>) -> Result<(serde_json::Value, T), azure_core::Error>
where
    T: serde::de::DeserializeOwned,
{
    let raw: serde_json::Value = response.body().json()?;
    let model = response.into_model()?;
    Ok((raw, model))
}

fn non_null(value: Option<&serde_json::Value>) -> Option<serde_json::Value> {
    value.filter(|v| !v.is_null()).cloned()
}

fn written(kind: ItemKind, id: Option<&str>) -> Result<WrittenItem, VaultError> {
    let collection = match kind {
        ItemKind::Secret => "secrets",
        ItemKind::Key => "keys",
        ItemKind::Certificate => "certificates",
    };
    let (id, name, version) = parse_id(id, collection)?;
    Ok(WrittenItem {
        kind,
        name,
        version,
        id,
    })
}

fn error_stream<T: Send + 'static>(err: VaultError) -> BoxStream<'static, Result<T, VaultError>> {
    stream::once(async move { Err(err) }).boxed()
}

impl VaultReader for AzureVault {
    fn vault_url(&self) -> &VaultUrl {
        &self.inner.url
    }

    fn list_secrets(&self) -> BoxStream<'static, Result<SecretProperties, VaultError>> {
        let options = sm::SecretClientListSecretPropertiesOptions {
            maxresults: Some(self.inner.page_size),
            ..Default::default()
        };
        match self.inner.secrets.list_secret_properties(Some(options)) {
            Ok(pager) => {
                let chain = self.inner.chain.clone();
                pager
                    .map_err(move |e| map_error(e, &chain))
                    .and_then(|p| async move { secret_properties(p) })
                    .boxed()
            }
            Err(e) => error_stream(self.error(e)),
        }
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<SecretProperties>, VaultError> {
        Self::check_name(name)?;
        let options = sm::SecretClientListSecretPropertiesVersionsOptions {
            maxresults: Some(self.inner.page_size),
            ..Default::default()
        };
        let pager = self
            .inner
            .secrets
            .list_secret_properties_versions(name, Some(options))
            .map_err(|e| self.error(e))?;
        let chain = self.inner.chain.clone();
        let mut versions: Vec<SecretProperties> = pager
            .map_err(move |e| map_error(e, &chain))
            .and_then(|p| async move { secret_properties(p) })
            .try_collect()
            .await?;
        versions.sort_by(|a, b| (a.attributes.created, &a.id).cmp(&(b.attributes.created, &b.id)));
        Ok(versions)
    }

    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretVersionValue, VaultError> {
        Self::check_name(name)?;
        Self::check_version(version)?;
        let options = sm::SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        let secret = self
            .inner
            .secrets
            .get_secret(name, Some(options))
            .await
            .and_then(Response::into_model)
            .map_err(|e| self.error(e))?;
        secret_from_bundle(secret)
    }

    fn list_keys(&self) -> BoxStream<'static, Result<KeyProperties, VaultError>> {
        let options = km::KeyClientListKeyPropertiesOptions {
            maxresults: Some(self.inner.page_size),
            ..Default::default()
        };
        match self.inner.keys.list_key_properties(Some(options)) {
            Ok(pager) => {
                let chain = self.inner.chain.clone();
                pager
                    .map_err(move |e| map_error(e, &chain))
                    .and_then(|p| async move { key_properties(p) })
                    .boxed()
            }
            Err(e) => error_stream(self.error(e)),
        }
    }

    async fn list_key_versions(&self, name: &str) -> Result<Vec<KeyProperties>, VaultError> {
        Self::check_name(name)?;
        let options = km::KeyClientListKeyPropertiesVersionsOptions {
            maxresults: Some(self.inner.page_size),
            ..Default::default()
        };
        let pager = self
            .inner
            .keys
            .list_key_properties_versions(name, Some(options))
            .map_err(|e| self.error(e))?;
        let chain = self.inner.chain.clone();
        let mut versions: Vec<KeyProperties> = pager
            .map_err(move |e| map_error(e, &chain))
            .and_then(|p| async move { key_properties(p) })
            .try_collect()
            .await?;
        versions.sort_by(|a, b| (a.attributes.created, &a.id).cmp(&(b.attributes.created, &b.id)));
        Ok(versions)
    }

    async fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, VaultError> {
        Self::check_name(name)?;
        Self::check_version(version)?;
        let options = km::KeyClientGetKeyOptions {
            key_version: version.map(str::to_owned),
            ..Default::default()
        };
        let (raw, key) = self
            .inner
            .keys
            .get_key(name, Some(options))
            .await
            .and_then(raw_and_model)
            .map_err(|e| self.error(e))?;
        let jwk = non_null(raw.get("key")).ok_or_else(|| {
            VaultError::UnexpectedResponse(format!("key '{name}' came without its JWK"))
        })?;
        let kid = key.key.as_ref().and_then(|k| k.kid.clone());
        let (id, name, version) = parse_id(kid.as_deref(), "keys")?;
        Ok(KeyBundle {
            properties: KeyProperties {
                name,
                version,
                id,
                tags: tags(key.tags),
                attributes: key_attributes(key.attributes),
                managed: key.managed.unwrap_or(false),
            },
            jwk,
            release_policy: non_null(raw.get("release_policy")),
        })
    }

    async fn get_key_rotation_policy(
        &self,
        name: &str,
    ) -> Result<Option<serde_json::Value>, VaultError> {
        Self::check_name(name)?;
        match self.inner.keys.get_key_rotation_policy(name, None).await {
            Ok(response) => {
                let raw: serde_json::Value = response
                    .body()
                    .json()
                    .map_err(|e| VaultError::UnexpectedResponse(error_chain(&e)))?;
                Ok(Some(raw))
            }
            Err(e) => match self.error(e) {
                // A key without a policy; a missing key itself still fails.
                VaultError::NotFound { code, .. } if code != "KeyNotFound" => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list_certificate_versions(
        &self,
        name: &str,
    ) -> Result<Vec<CertificateProperties>, VaultError> {
        Self::check_name(name)?;
        let options = cm::CertificateClientListCertificatePropertiesVersionsOptions {
            maxresults: Some(self.inner.page_size),
            ..Default::default()
        };
        let pager = self
            .inner
            .certificates
            .list_certificate_properties_versions(name, Some(options))
            .map_err(|e| self.error(e))?;
        let chain = self.inner.chain.clone();
        let mut versions: Vec<CertificateProperties> = pager
            .map_err(move |e| map_error(e, &chain))
            .and_then(|p| async move { certificate_properties(p) })
            .try_collect()
            .await?;
        versions.sort_by(|a, b| (a.attributes.created, &a.id).cmp(&(b.attributes.created, &b.id)));
        Ok(versions)
    }

    fn list_certificates(&self) -> BoxStream<'static, Result<CertificateProperties, VaultError>> {
        let options = cm::CertificateClientListCertificatePropertiesOptions {
            maxresults: Some(self.inner.page_size),
            ..Default::default()
        };
        match self
            .inner
            .certificates
            .list_certificate_properties(Some(options))
        {
            Ok(pager) => {
                let chain = self.inner.chain.clone();
                pager
                    .map_err(move |e| map_error(e, &chain))
                    .and_then(|p| async move { certificate_properties(p) })
                    .boxed()
            }
            Err(e) => error_stream(self.error(e)),
        }
    }

    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<CertificateBundle, VaultError> {
        Self::check_name(name)?;
        Self::check_version(version)?;
        let options = cm::CertificateClientGetCertificateOptions {
            certificate_version: version.map(str::to_owned),
            ..Default::default()
        };
        let (raw, cert) = self
            .inner
            .certificates
            .get_certificate(name, Some(options))
            .await
            .and_then(raw_and_model)
            .map_err(|e| self.error(e))?;
        let (id, name, version) = parse_id(cert.id.as_deref(), "certificates")?;
        Ok(CertificateBundle {
            properties: CertificateProperties {
                name,
                version,
                id,
                tags: tags(cert.tags),
                attributes: certificate_attributes(cert.attributes),
                x509_thumbprint: cert.x509_thumbprint,
            },
            cer: cert.cer.unwrap_or_default(),
            policy: non_null(raw.get("policy")),
            content_type: cert.content_type,
            secret_id: cert.sid,
            key_id: cert.kid,
        })
    }

    async fn get_certificate_policy(&self, name: &str) -> Result<serde_json::Value, VaultError> {
        Self::check_name(name)?;
        let response = self
            .inner
            .certificates
            .get_certificate_policy(name, None)
            .await
            .map_err(|e| self.error(e))?;
        response
            .body()
            .json()
            .map_err(|e| VaultError::UnexpectedResponse(error_chain(&e)))
    }

    async fn backup(&self, kind: ItemKind, name: &str) -> Result<BackupBlob, VaultError> {
        Self::check_name(name)?;
        let value = match kind {
            ItemKind::Secret => self
                .inner
                .secrets
                .backup_secret(name, None)
                .await
                .and_then(Response::into_model)
                .map(|r| r.value),
            ItemKind::Key => self
                .inner
                .keys
                .backup_key(name, None)
                .await
                .and_then(Response::into_model)
                .map(|r| r.value),
            ItemKind::Certificate => self
                .inner
                .certificates
                .backup_certificate(name, None)
                .await
                .and_then(Response::into_model)
                .map(|r| r.value),
        }
        .map_err(|e| self.error(e))?;
        match value {
            Some(blob) if !blob.is_empty() => Ok(BackupBlob(blob)),
            _ => Err(VaultError::UnexpectedResponse(format!(
                "backup of {kind} '{name}' came without a blob"
            ))),
        }
    }

    fn list_deleted(&self, kind: ItemKind) -> BoxStream<'static, Result<DeletedItem, VaultError>> {
        let chain = self.inner.chain.clone();
        let page = Some(self.inner.page_size);
        match kind {
            ItemKind::Secret => {
                let options = sm::SecretClientListDeletedSecretPropertiesOptions {
                    maxresults: page,
                    ..Default::default()
                };
                match self
                    .inner
                    .secrets
                    .list_deleted_secret_properties(Some(options))
                {
                    Ok(pager) => pager
                        .map_err(move |e| map_error(e, &chain))
                        .and_then(|d| async move {
                            deleted_item(
                                ItemKind::Secret,
                                d.id.as_deref(),
                                d.recovery_id,
                                d.deleted_date,
                                d.scheduled_purge_date,
                                d.tags,
                                secret_attributes(d.attributes),
                                d.managed,
                            )
                        })
                        .boxed(),
                    Err(e) => error_stream(self.error(e)),
                }
            }
            ItemKind::Key => {
                let options = km::KeyClientListDeletedKeyPropertiesOptions {
                    maxresults: page,
                    ..Default::default()
                };
                match self.inner.keys.list_deleted_key_properties(Some(options)) {
                    Ok(pager) => pager
                        .map_err(move |e| map_error(e, &chain))
                        .and_then(|d| async move {
                            deleted_item(
                                ItemKind::Key,
                                d.kid.as_deref(),
                                d.recovery_id,
                                d.deleted_date,
                                d.scheduled_purge_date,
                                d.tags,
                                key_attributes(d.attributes),
                                d.managed,
                            )
                        })
                        .boxed(),
                    Err(e) => error_stream(self.error(e)),
                }
            }
            ItemKind::Certificate => {
                let options = cm::CertificateClientListDeletedCertificatePropertiesOptions {
                    maxresults: page,
                    ..Default::default()
                };
                match self
                    .inner
                    .certificates
                    .list_deleted_certificate_properties(Some(options))
                {
                    Ok(pager) => pager
                        .map_err(move |e| map_error(e, &chain))
                        .and_then(|d| async move {
                            deleted_item(
                                ItemKind::Certificate,
                                d.id.as_deref(),
                                d.recovery_id,
                                d.deleted_date,
                                d.scheduled_purge_date,
                                d.tags,
                                certificate_attributes(d.attributes),
                                None,
                            )
                        })
                        .boxed(),
                    Err(e) => error_stream(self.error(e)),
                }
            }
        }
    }

    async fn get_deleted(&self, kind: ItemKind, name: &str) -> Result<DeletedItem, VaultError> {
        Self::check_name(name)?;
        match kind {
            ItemKind::Secret => {
                let d = self
                    .inner
                    .secrets
                    .get_deleted_secret(name, None)
                    .await
                    .and_then(Response::into_model)
                    .map_err(|e| self.error(e))?;
                deleted_item(
                    kind,
                    d.id.as_deref(),
                    d.recovery_id,
                    d.deleted_date,
                    d.scheduled_purge_date,
                    d.tags,
                    secret_attributes(d.attributes),
                    d.managed,
                )
            }
            ItemKind::Key => {
                let d = self
                    .inner
                    .keys
                    .get_deleted_key(name, None)
                    .await
                    .and_then(Response::into_model)
                    .map_err(|e| self.error(e))?;
                let kid = d.key.as_ref().and_then(|k| k.kid.clone());
                deleted_item(
                    kind,
                    kid.as_deref(),
                    d.recovery_id,
                    d.deleted_date,
                    d.scheduled_purge_date,
                    d.tags,
                    key_attributes(d.attributes),
                    d.managed,
                )
            }
            ItemKind::Certificate => {
                let d = self
                    .inner
                    .certificates
                    .get_deleted_certificate(name, None)
                    .await
                    .and_then(Response::into_model)
                    .map_err(|e| self.error(e))?;
                deleted_item(
                    kind,
                    d.id.as_deref(),
                    d.recovery_id,
                    d.deleted_date,
                    d.scheduled_purge_date,
                    d.tags,
                    certificate_attributes(d.attributes),
                    None,
                )
            }
        }
    }
}

impl AzureVault {
    /// Reads `name` back after a set whose answer was lost: the written version when the
    /// secret's current version is it ([`is_same_secret_write`]), `None` otherwise.
    async fn secret_read_back(
        &self,
        name: &str,
        secret: &NewSecretVersion,
        attempt_started: OffsetDateTime,
    ) -> Result<Option<WrittenItem>, VaultError> {
        let (props, value) = match self.get_secret(name, None).await {
            Ok(current) => (current.properties, Some(current.value)),
            Err(err) if err.is_not_found() => return Ok(None),
            // A disabled current version hides its value: its listed properties must do.
            Err(err) if err.is_secret_disabled() => {
                match self.list_secret_versions(name).await?.pop() {
                    Some(newest) => (newest, None),
                    None => return Ok(None),
                }
            }
            Err(err) => return Err(err),
        };
        if is_same_secret_write(secret, &props, value.as_ref(), attempt_started) {
            written(ItemKind::Secret, Some(&props.id)).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads certificate `name` back after an import whose answer was lost: the imported
    /// version when it is the certificate's current one ([`is_same_certificate_import`]).
    async fn import_read_back(
        &self,
        name: &str,
        certificate: &CertificateImport,
        attempt_started: OffsetDateTime,
    ) -> Result<Option<WrittenItem>, VaultError> {
        let current = match self.get_certificate(name, None).await {
            Ok(current) => current.properties,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(err),
        };
        if is_same_certificate_import(certificate, &current, attempt_started) {
            written(ItemKind::Certificate, Some(&current.id)).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A write with nothing to read back: its retry cannot duplicate anything (Azure answers 409
/// or 404 to a repeated restore or recover, and the caller judges that answer).
async fn nothing_to_read_back() -> Result<Option<WrittenItem>, VaultError> {
    Ok(None)
}

impl VaultWriter for AzureVault {
    /// Idempotent under a lost answer: before a retry, the current version is read back and
    /// counts as the write when it carries what was written and is newer than the attempt.
    async fn set_secret(
        &self,
        name: &str,
        secret: &NewSecretVersion,
    ) -> Result<WrittenItem, VaultError> {
        Self::check_name(name)?;
        let parameters = sm::SetSecretParameters {
            value: Some(secret.value.expose_secret().to_owned()),
            content_type: secret.content_type.clone(),
            tags: Some(secret.tags.clone().into_iter().collect()),
            secret_attributes: Some(sm::SecretAttributes {
                enabled: secret.attributes.enabled,
                not_before: secret.attributes.not_before,
                expires: secret.attributes.expires,
                ..Default::default()
            }),
        };
        let content: RequestContent<sm::SetSecretParameters> = parameters
            .try_into()
            .map_err(|_| VaultError::Setup(format!("cannot encode secret '{name}'")))?;
        let started = OffsetDateTime::now_utc();
        retry_write(
            self.inner.max_retries,
            || async {
                let result = self
                    .inner
                    .writers
                    .secrets
                    .set_secret(name, content.clone(), None)
                    .await
                    .and_then(Response::into_model)
                    .map_err(|e| self.error(e))?;
                written(ItemKind::Secret, result.id.as_deref())
            },
            || self.secret_read_back(name, secret, started),
        )
        .await
    }

    async fn restore(&self, kind: ItemKind, blob: &BackupBlob) -> Result<WrittenItem, VaultError> {
        let encode = |_| VaultError::Setup(format!("cannot encode the {kind} backup blob"));
        let writers = &self.inner.writers;
        match kind {
            ItemKind::Secret => {
                let content: RequestContent<sm::RestoreSecretParameters> =
                    sm::RestoreSecretParameters {
                        secret_backup: Some(blob.0.clone()),
                    }
                    .try_into()
                    .map_err(encode)?;
                retry_write(
                    self.inner.max_retries,
                    || async {
                        let id = writers
                            .secrets
                            .restore_secret(content.clone(), None)
                            .await
                            .and_then(Response::into_model)
                            .map(|s| s.id)
                            .map_err(|e| self.error(e))?;
                        written(kind, id.as_deref())
                    },
                    nothing_to_read_back,
                )
                .await
            }
            ItemKind::Key => {
                let content: RequestContent<km::RestoreKeyParameters> = km::RestoreKeyParameters {
                    key_backup: Some(blob.0.clone()),
                }
                .try_into()
                .map_err(encode)?;
                retry_write(
                    self.inner.max_retries,
                    || async {
                        let id = writers
                            .keys
                            .restore_key(content.clone(), None)
                            .await
                            .and_then(Response::into_model)
                            .map(|k| k.key.and_then(|j| j.kid))
                            .map_err(|e| self.error(e))?;
                        written(kind, id.as_deref())
                    },
                    nothing_to_read_back,
                )
                .await
            }
            ItemKind::Certificate => {
                let content: RequestContent<cm::RestoreCertificateParameters> =
                    cm::RestoreCertificateParameters {
                        certificate_backup: Some(blob.0.clone()),
                    }
                    .try_into()
                    .map_err(encode)?;
                retry_write(
                    self.inner.max_retries,
                    || async {
                        let id = writers
                            .certificates
                            .restore_certificate(content.clone(), None)
                            .await
                            .and_then(Response::into_model)
                            .map(|c| c.id)
                            .map_err(|e| self.error(e))?;
                        written(kind, id.as_deref())
                    },
                    nothing_to_read_back,
                )
                .await
            }
        }
    }

    async fn recover_deleted(&self, kind: ItemKind, name: &str) -> Result<WrittenItem, VaultError> {
        Self::check_name(name)?;
        let writers = &self.inner.writers;
        retry_write(
            self.inner.max_retries,
            || async {
                let id = match kind {
                    ItemKind::Secret => writers
                        .secrets
                        .recover_deleted_secret(name, None)
                        .await
                        .and_then(Response::into_model)
                        .map(|s| s.id),
                    ItemKind::Key => writers
                        .keys
                        .recover_deleted_key(name, None)
                        .await
                        .and_then(Response::into_model)
                        .map(|k| k.key.and_then(|j| j.kid)),
                    ItemKind::Certificate => writers
                        .certificates
                        .recover_deleted_certificate(name, None)
                        .await
                        .and_then(Response::into_model)
                        .map(|c| c.id),
                }
                .map_err(|e| self.error(e))?;
                written(kind, id.as_deref())
            },
            nothing_to_read_back,
        )
        .await
    }

    /// Idempotent under a lost answer, like [`VaultWriter::set_secret`]: the certificate is
    /// read back before a retry.
    async fn import_certificate(
        &self,
        name: &str,
        certificate: &CertificateImport,
    ) -> Result<WrittenItem, VaultError> {
        Self::check_name(name)?;
        let mut policy: cm::CertificatePolicy = match &certificate.policy {
            Some(raw) => serde_json::from_value(raw.clone()).map_err(|e| {
                VaultError::Setup(format!(
                    "the policy of certificate '{name}' is not usable: {e}"
                ))
            })?,
            None => cm::CertificatePolicy::default(),
        };
        // The import must say how the material is encoded, whatever the captured policy said.
        policy.secret_properties = Some(cm::SecretProperties {
            content_type: Some(certificate.content_type.clone()),
        });
        // The service takes the file's bytes in base64, as the official SDKs send them: a PFX
        // managed secret already is that; PEM text is encoded here.
        let material = certificate.value.expose_secret();
        let encoded = if material.trim_start().starts_with("-----BEGIN") {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(material.as_bytes())
        } else {
            material.to_owned()
        };
        let parameters = cm::ImportCertificateParameters {
            base64_encoded_certificate: Some(encoded),
            password: certificate
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
            certificate_policy: Some(policy),
            certificate_attributes: Some(cm::CertificateAttributes {
                enabled: certificate.attributes.enabled,
                not_before: certificate.attributes.not_before,
                expires: certificate.attributes.expires,
                ..Default::default()
            }),
            tags: Some(certificate.tags.clone().into_iter().collect()),
            ..Default::default()
        };
        let content: RequestContent<cm::ImportCertificateParameters> = parameters
            .try_into()
            .map_err(|_| VaultError::Setup(format!("cannot encode certificate '{name}'")))?;
        let started = OffsetDateTime::now_utc();
        retry_write(
            self.inner.max_retries,
            || async {
                let result = self
                    .inner
                    .writers
                    .certificates
                    .import_certificate(name, content.clone(), None)
                    .await
                    .and_then(Response::into_model)
                    .map_err(|e| self.error(e))?;
                written(ItemKind::Certificate, result.id.as_deref())
            },
            || self.import_read_back(name, certificate, started),
        )
        .await
    }

    async fn soft_delete(&self, kind: ItemKind, name: &str) -> Result<(), VaultError> {
        Self::check_name(name)?;
        let writers = &self.inner.writers;
        retry_write(
            self.inner.max_retries,
            || async {
                match kind {
                    ItemKind::Secret => writers.secrets.delete_secret(name, None).await.map(drop),
                    ItemKind::Key => writers.keys.delete_key(name, None).await.map(drop),
                    ItemKind::Certificate => writers
                        .certificates
                        .delete_certificate(name, None)
                        .await
                        .map(drop),
                }
                .map_err(|e| self.error(e))
            },
            || async { Ok(None) },
        )
        .await
    }
}

/// How long the commands should wait between polls of an object that is settling after a
/// delete, recover or purge (Key Vault answers 404 or 409 for a few seconds).
pub fn settle_backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << attempt.min(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innermost_code_walks_the_chain() {
        let error = serde_json::json!({
            "code": "Forbidden",
            "message": "x",
            "innererror": {"code": "AccessDenied", "innererror": {"code": "ForbiddenByPolicy"}}
        });
        assert_eq!(innermost_code(&error).as_deref(), Some("ForbiddenByPolicy"));
        assert_eq!(
            innermost_code(&serde_json::json!({"code": "Conflict"})),
            None
        );
    }

    #[test]
    fn deleted_items_are_named_from_id_or_recovery_id() {
        let item = deleted_item(
            ItemKind::Secret,
            Some("https://kv.vault.azure.net/secrets/db"),
            Some("https://kv.vault.azure.net/deletedsecrets/db".into()),
            None,
            None,
            None,
            Attributes::default(),
            Some(true),
        )
        .unwrap();
        assert_eq!(item.name, "db");
        assert!(item.managed);
        let item = deleted_item(
            ItemKind::Key,
            None,
            Some("https://kv.vault.azure.net/deletedkeys/k1".into()),
            None,
            None,
            None,
            Attributes::default(),
            None,
        )
        .unwrap();
        assert_eq!(item.name, "k1");
        assert!(
            deleted_item(
                ItemKind::Key,
                None,
                None,
                None,
                None,
                None,
                Attributes::default(),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn settle_backoff_grows_and_caps() {
        assert_eq!(settle_backoff(0), Duration::from_millis(500));
        assert_eq!(settle_backoff(2), Duration::from_secs(2));
        assert_eq!(settle_backoff(30), Duration::from_secs(16));
    }
}
