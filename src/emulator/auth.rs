//! The built-in token issuer and the token check of the vault routes.
//!
//! The issuer serves several tenants: each has its own built-in client, its own issuer URL
//! (`{authority}/{tenant}/v2.0`, the token's `iss`) and `tid`; a vault accepts only tokens of
//! its own tenant (401 `AKV10032`), and Azure Resource Manager lists only the token's tenant.
//!
//! Issuer routes (on `https://localhost:PORT`): the client-credentials token endpoint
//! `POST /{tenant}/oauth2/v2.0/token`, the OpenID configuration
//! `GET /{tenant}/v2.0/.well-known/openid-configuration`, the JWKS `GET /{tenant}/discovery/v2.0/keys`,
//! and two managed-identity endpoints: IMDS-style `GET /metadata/identity/oauth2/token` and
//! App Service-style `GET /msi/token` (for `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`).
//!
//! Tokens are RS256 JWTs signed by an RSA key made at start (in the background, so startup does
//! not wait for it) or loaded from the state directory. The vault routes check signature,
//! audience (401 `AKV10022`), issuer and expiry; with auth off any bearer passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::state::AppState;
use super::store::Redacted;

/// Token lifetime, as Entra ID's default.
pub const TOKEN_LIFETIME_S: i64 = 3_600;

/// The signing key and what the JWKS publishes of it.
pub struct SigningMaterial {
    signing: SigningKey<Sha256>,
    verifying: VerifyingKey<Sha256>,
    public: RsaPublicKey,
    kid: String,
}

impl std::fmt::Debug for SigningMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningMaterial(kid={})", self.kid)
    }
}

impl SigningMaterial {
    fn from_key(key: RsaPrivateKey) -> Self {
        let public = key.to_public_key();
        let digest = sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(
            public.n().to_bytes_be(),
        ));
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        Self {
            verifying: VerifyingKey::<Sha256>::new(public.clone()),
            signing: SigningKey::<Sha256>::new(key),
            public,
            kid,
        }
    }
}

/// The claims of an emulator token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
}

impl Claims {
    /// The principal permissions are keyed on: `oid`, else `appid`, else `sub`.
    pub fn principal(&self) -> Option<String> {
        self.oid
            .clone()
            .or_else(|| self.appid.clone())
            .or_else(|| self.sub.clone())
    }
}

/// Why a bearer token was refused (each maps to Azure's `AKV100xx` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Audience { expected: String, found: String },
    Issuer { expected: String, found: String },
    Expired,
}

impl TokenError {
    /// The 401 message.
    pub fn message(&self) -> String {
        match self {
            TokenError::Malformed => "AKV10000: Request is missing a Bearer or PoP token.".into(),
            TokenError::BadSignature => "AKV10012: Signature validation failed.".into(),
            TokenError::Audience { expected, found } => {
                format!("AKV10022: Invalid audience. Expected {expected}, found: {found}.")
            }
            TokenError::Issuer { expected, found } => {
                format!("AKV10032: Invalid issuer. Expected one of {expected}, found {found}.")
            }
            TokenError::Expired => "AKV10013: Token is expired.".into(),
        }
    }
}

/// A registered client: the tenant it belongs to and its secret.
#[derive(Debug, Clone)]
struct Client {
    tenant: String,
    secret: Redacted<String>,
}

/// One tenant's built-in client, as the ready line lists it.
#[derive(Clone)]
pub struct TenantClient {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Redacted<String>,
}

impl std::fmt::Debug for TenantClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantClient")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The issuer: its tenants (the first is the default one), their registered clients, the
/// managed identity, the signing key. Its `Debug` shows identities only (no secrets, no tokens).
pub struct Issuer {
    /// The first tenant: vaults that name none belong to it.
    pub tenant_id: String,
    /// The first tenant's built-in client.
    pub client_id: String,
    client_secret: Redacted<String>,
    /// The client id the managed-identity endpoints issue tokens for (first tenant).
    pub managed_identity_client_id: String,
    /// Every tenant's built-in client, the first tenant's first.
    tenants: Vec<TenantClient>,
    clients: Mutex<BTreeMap<String, Client>>,
    /// Tokens whose signature was already verified: a client sends the same token on every
    /// request, and RSA verification would otherwise dominate a GET.
    verified: VerifiedTokens,
    key: tokio::sync::OnceCell<Arc<SigningMaterial>>,
    key_path: Option<PathBuf>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "managed_identity_client_id",
                &self.managed_identity_client_id,
            )
            .finish_non_exhaustive()
    }
}

/// How many verified tokens the issuer remembers: far more than the clients of one emulator
/// hold at a time, 32 bytes each.
pub const VERIFIED_TOKENS_CAPACITY: usize = 4096;

/// A bounded set of tokens whose signature verified, kept as SHA-256 digests (a remembered
/// token costs 32 bytes however long it is, and no token is held in memory). When full, the
/// oldest entry is forgotten first; forgetting one only costs its next request a verification.
#[derive(Debug)]
pub struct VerifiedTokens {
    capacity: usize,
    inner: Mutex<VerifiedInner>,
}

#[derive(Debug, Default)]
struct VerifiedInner {
    set: HashSet<[u8; 32]>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl VerifiedTokens {
    /// An empty set remembering at most `capacity` tokens (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(VerifiedInner::default()),
        }
    }

    fn digest(token: &str) -> [u8; 32] {
        sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(token.as_bytes())).into()
    }

    /// True if `token` was inserted and not evicted since.
    pub fn contains(&self, token: &str) -> bool {
        let digest = Self::digest(token);
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains(&digest)
    }

    /// Remembers `token`, forgetting the oldest entries beyond the capacity.
    pub fn insert(&self, token: &str) {
        let digest = Self::digest(token);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.set.insert(digest) {
            return;
        }
        inner.order.push_back(digest);
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.set.remove(&oldest);
            }
        }
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A random GUID-shaped id.
pub fn new_guid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Issuer {
    /// An issuer with the given (or fresh) tenant and client; `key_path` keeps the signing key
    /// across restarts.
    pub fn new(
        tenant_id: Option<String>,
        client_id: Option<String>,
        client_secret: Option<String>,
        key_path: Option<PathBuf>,
    ) -> Self {
        let client_id = client_id.unwrap_or_else(new_guid);
        let client_secret =
            client_secret.unwrap_or_else(|| format!("cv~{:032x}", rand::random::<u128>()));
        let tenant_id = tenant_id.unwrap_or_else(new_guid);
        let mut clients = BTreeMap::new();
        clients.insert(
            client_id.clone(),
            Client {
                tenant: tenant_id.clone(),
                secret: Redacted(client_secret.clone()),
            },
        );
        let first = TenantClient {
            tenant_id: tenant_id.clone(),
            client_id: client_id.clone(),
            client_secret: Redacted(client_secret.clone()),
        };
        Self {
            tenant_id,
            client_id,
            client_secret: Redacted(client_secret),
            managed_identity_client_id: new_guid(),
            tenants: vec![first],
            clients: Mutex::new(clients),
            verified: VerifiedTokens::new(VERIFIED_TOKENS_CAPACITY),
            key: tokio::sync::OnceCell::new(),
            key_path,
        }
    }

    /// The built-in client's secret.
    pub fn client_secret(&self) -> &str {
        &self.client_secret.0
    }

    /// Adds a tenant with a fresh built-in client (no-op for a tenant already served, compared
    /// case-insensitively as Entra ID compares tenant ids).
    pub fn add_tenant(&mut self, tenant_id: &str) {
        if self.serves(tenant_id) {
            return;
        }
        let client = TenantClient {
            tenant_id: tenant_id.to_string(),
            client_id: new_guid(),
            client_secret: Redacted(format!("cv~{:032x}", rand::random::<u128>())),
        };
        self.clients
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                client.client_id.clone(),
                Client {
                    tenant: client.tenant_id.clone(),
                    secret: client.client_secret.clone(),
                },
            );
        self.tenants.push(client);
    }

    /// Every tenant's built-in client, the first tenant's first.
    pub fn tenants(&self) -> &[TenantClient] {
        &self.tenants
    }

    /// The served tenant spelled `tenant` (any case), in its declared spelling.
    pub fn tenant(&self, tenant: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|t| t.tenant_id.eq_ignore_ascii_case(tenant))
            .map(|t| t.tenant_id.as_str())
    }

    /// True when `tenant` is one of the issuer's tenants.
    pub fn serves(&self, tenant: &str) -> bool {
        self.tenant(tenant).is_some()
    }

    /// Registers another client in the first tenant (for tests of partial permissions).
    pub fn add_client(&self, client_id: &str, secret: &str) {
        self.add_client_in(&self.tenant_id, client_id, secret);
    }

    /// Registers another client in `tenant`.
    pub fn add_client_in(&self, tenant: &str, client_id: &str, secret: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                client_id.to_string(),
                Client {
                    tenant: tenant.to_string(),
                    secret: Redacted(secret.to_string()),
                },
            );
    }

    /// The tenant a registered client belongs to.
    pub fn tenant_of(&self, client_id: &str) -> Option<String> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
            .map(|c| c.tenant.clone())
    }

    fn client_ok(&self, client_id: &str, secret: &str) -> bool {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
            .is_some_and(|c| c.secret.0 == secret)
    }

    /// The signing key, made (or loaded) once; callers wait for it on first use.
    pub async fn material(&self) -> Result<Arc<SigningMaterial>, String> {
        self.key
            .get_or_try_init(|| async {
                let path = self.key_path.clone();
                tokio::task::spawn_blocking(move || load_or_make_key(path.as_deref()))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|key| Arc::new(SigningMaterial::from_key(key)))
            })
            .await
            .cloned()
    }

    /// The `iss` of the first tenant's tokens: `{authority}/{tenant}/v2.0`.
    pub fn issuer_url(&self, authority: &str) -> String {
        issuer_url_of(authority, &self.tenant_id)
    }

    /// Signs a token for `client_id` (in its registered tenant, else the first) with audience
    /// `aud`, valid from `now_s` for `lifetime_s`.
    pub async fn issue(
        &self,
        authority: &str,
        client_id: &str,
        aud: &str,
        now_s: i64,
        lifetime_s: i64,
    ) -> Result<String, String> {
        let tenant = self
            .tenant_of(client_id)
            .unwrap_or_else(|| self.tenant_id.clone());
        self.issue_in(&tenant, authority, client_id, aud, now_s, lifetime_s)
            .await
    }

    /// Signs a token of `tenant` (its `iss` and `tid`) for `client_id` with audience `aud`.
    pub async fn issue_in(
        &self,
        tenant: &str,
        authority: &str,
        client_id: &str,
        aud: &str,
        now_s: i64,
        lifetime_s: i64,
    ) -> Result<String, String> {
        let material = self.material().await?;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": material.kid});
        let claims = json!({
            "aud": aud,
            "iss": issuer_url_of(authority, tenant),
            "iat": now_s,
            "nbf": now_s - 60,
            "exp": now_s + lifetime_s,
            "tid": tenant,
            "oid": client_id,
            "appid": client_id,
            "azp": client_id,
            "sub": client_id,
            "ver": "2.0",
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = material.signing.sign(signing_input.as_bytes()).to_bytes();
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// Checks a token: signature, issuer (one of the tenants' issuer URLs), audience (one of
    /// `audiences`), expiry. Whether the tenant is the one a resource belongs to is the
    /// caller's check ([`Issuer::check_tenant`]).
    pub async fn check(
        &self,
        token: &str,
        authority: &str,
        audiences: &[String],
        now_s: i64,
    ) -> Result<Claims, TokenError> {
        let claims = decode_claims(token)?;
        if !self.verified.contains(token) {
            let material = self
                .material()
                .await
                .map_err(|_| TokenError::BadSignature)?;
            let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
            let signature = URL_SAFE_NO_PAD
                .decode(signature)
                .ok()
                .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
                .ok_or(TokenError::BadSignature)?;
            material
                .verifying
                .verify(signing_input.as_bytes(), &signature)
                .map_err(|_| TokenError::BadSignature)?;
            self.verified.insert(token);
        }
        if !self
            .tenants
            .iter()
            .any(|t| issuer_url_of(authority, &t.tenant_id) == claims.iss)
        {
            let expected = self
                .tenants
                .iter()
                .map(|t| issuer_url_of(authority, &t.tenant_id))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(TokenError::Issuer {
                expected,
                found: claims.iss,
            });
        }
        let aud = claims.aud.trim_end_matches('/');
        if !audiences.iter().any(|a| a.trim_end_matches('/') == aud) {
            return Err(TokenError::Audience {
                expected: audiences.join(" or "),
                found: claims.aud,
            });
        }
        // Azure allows five minutes of clock skew.
        if claims.exp + 300 <= now_s {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Refuses claims whose issuer is not `tenant`'s (a vault of one tenant and a token of
    /// another: Azure's 401 `AKV10032`).
    pub fn check_tenant(
        &self,
        claims: &Claims,
        authority: &str,
        tenant: &str,
    ) -> Result<(), TokenError> {
        let expected = issuer_url_of(authority, tenant);
        if claims.iss.eq_ignore_ascii_case(&expected) {
            Ok(())
        } else {
            Err(TokenError::Issuer {
                expected,
                found: claims.iss.clone(),
            })
        }
    }

    /// The JWKS document.
    pub async fn jwks(&self) -> Result<serde_json::Value, String> {
        let material = self.material().await?;
        Ok(json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": material.kid,
            "n": URL_SAFE_NO_PAD.encode(material.public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(material.public.e().to_bytes_be()),
        }]}))
    }
}

/// `{authority}/{tenant}/v2.0`: the `iss` of `tenant`'s tokens.
pub fn issuer_url_of(authority: &str, tenant: &str) -> String {
    format!("{authority}/{tenant}/v2.0")
}

/// The claims of a JWT without checking it (auth off: who is it, if anyone says).
pub fn decode_claims(token: &str) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (_, Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn load_or_make_key(path: Option<&std::path::Path>) -> Result<RsaPrivateKey, String> {
    if let Some(path) = path
        && let Ok(pem) = std::fs::read_to_string(path)
    {
        return RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string());
    }
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
    if let Some(path) = path {
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        super::persist::write_atomic(path, pem.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

/// The authority host of this emulator: `https://localhost:PORT`.
pub fn authority(state: &AppState) -> String {
    format!("https://localhost:{}", state.port())
}

/// The audiences the vault routes accept: the challenge resource (`https://vault.localhost:PORT`)
/// and Azure's public audiences.
pub fn audiences(state: &AppState) -> Vec<String> {
    vec![
        format!("https://vault.localhost:{}", state.port()),
        "https://vault.azure.net".to_string(),
        "cfa8b339-82a2-471a-a3c9-0fc0be7a4093".to_string(),
    ]
}

/// The issuer's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/token", post(token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route(
            "/metadata/identity/oauth2/token",
            get(managed_identity_token),
        )
        .route("/msi/token", get(managed_identity_token))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": description,
            "error_codes": [],
        })),
    )
        .into_response()
}

async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let issuer = &state.issuer;
    let requested = if tenant.eq_ignore_ascii_case("organizations") {
        None
    } else {
        match issuer.tenant(&tenant) {
            Some(t) => Some(t.to_string()),
            None => return tenant_not_found(&tenant),
        }
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type; only client_credentials is served.",
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let secret = form.get("client_secret").cloned().unwrap_or_default();
    let Some(home) = issuer.tenant_of(&client_id) else {
        return client_not_in(&client_id, requested.as_deref().unwrap_or(&tenant));
    };
    // A client exists in its home tenant only (single-tenant app registrations).
    if requested
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case(&home))
    {
        return client_not_in(&client_id, &tenant);
    }
    if !issuer.client_ok(&client_id, &secret) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    // MSAL may add reserved scopes; the resource is the one ending in `/.default`.
    let aud = scope
        .split_whitespace()
        .find(|s| s.ends_with("/.default"))
        .or_else(|| scope.split_whitespace().next())
        .unwrap_or_default()
        .trim_end_matches("/.default")
        .to_string();
    if aud.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    let now = state.clock.now_s();
    match issuer
        .issue_in(
            &home,
            &authority(&state),
            &client_id,
            &aud,
            now,
            TOKEN_LIFETIME_S,
        )
        .await
    {
        Ok(access_token) => axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": access_token,
        }))
        .into_response(),
        Err(err) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &err),
    }
}

/// 400 `AADSTS90002`: the path names a tenant the issuer does not serve.
fn tenant_not_found(tenant: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        &format!(
            "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

/// 400 `AADSTS700016`: the client is not registered in the tenant asked.
fn client_not_in(client_id: &str, tenant: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        &format!(
            "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
        ),
    )
}

/// The tenant a discovery path names: a served tenant in its declared spelling, or the first
/// tenant for `organizations` and `common` (multi-tenant authorities).
fn discovery_tenant(state: &AppState, tenant: &str) -> Option<String> {
    if tenant.eq_ignore_ascii_case("organizations") || tenant.eq_ignore_ascii_case("common") {
        return Some(state.issuer.tenant_id.clone());
    }
    state.issuer.tenant(tenant).map(str::to_string)
}

async fn openid_configuration(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Response {
    let Some(served) = discovery_tenant(&state, &tenant) else {
        return tenant_not_found(&tenant);
    };
    let base = authority(&state);
    axum::Json(json!({
        "issuer": issuer_url_of(&base, &served),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["pairwise"],
        "scopes_supported": ["openid"],
        "tenant_region_scope": "EU",
    }))
    .into_response()
}

async fn jwks(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    // One signing key serves every tenant, as Entra ID's keys are common to all tenants.
    if discovery_tenant(&state, &tenant).is_none() {
        return tenant_not_found(&tenant);
    }
    match state.issuer.jwks().await {
        Ok(body) => axum::Json(body).into_response(),
        Err(err) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &err),
    }
}

async fn managed_identity_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // IMDS demands `Metadata: true`; App Service demands `X-IDENTITY-HEADER`.
    let imds = headers
        .get("metadata")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let app_service = headers.contains_key("x-identity-header");
    if !imds && !app_service {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let resource = query
        .get("resource")
        .cloned()
        .or_else(|| query.get("scope").cloned())
        .unwrap_or_default();
    let aud = resource.trim_end_matches("/.default").to_string();
    if aud.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            "No resource given",
        );
    }
    let client_id = state.issuer.managed_identity_client_id.clone();
    let now = state.clock.now_s();
    match state
        .issuer
        .issue(&authority(&state), &client_id, &aud, now, TOKEN_LIFETIME_S)
        .await
    {
        Ok(access_token) => axum::Json(json!({
            "access_token": access_token,
            "client_id": client_id,
            "expires_in": TOKEN_LIFETIME_S.to_string(),
            "expires_on": (now + TOKEN_LIFETIME_S).to_string(),
            "ext_expires_in": TOKEN_LIFETIME_S.to_string(),
            "not_before": (now - 60).to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(err) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issued_tokens_check_and_refusals_name_the_cause() {
        let issuer = Issuer::new(None, None, None, None);
        let auth = "https://localhost:1";
        let aud = vec!["https://vault.localhost:1".to_string()];
        let token = issuer
            .issue(auth, "c", &aud[0], 1_000, 3_600)
            .await
            .unwrap();
        let claims = issuer.check(&token, auth, &aud, 1_100).await.unwrap();
        assert_eq!(claims.principal().as_deref(), Some("c"));

        let other = vec!["https://other".to_string()];
        assert!(matches!(
            issuer.check(&token, auth, &other, 1_100).await,
            Err(TokenError::Audience { .. })
        ));
        assert_eq!(
            issuer
                .check(&token, auth, &aud, 1_000 + 3_600 + 301)
                .await
                .unwrap_err(),
            TokenError::Expired
        );
        let mut forged = token.clone();
        forged.push('A');
        assert!(issuer.check(&forged, auth, &aud, 1_100).await.is_err());
        assert_eq!(
            issuer.verified.len(),
            1,
            "only the good token is remembered"
        );
    }

    #[test]
    fn verified_token_cache_stays_bounded_under_many_distinct_tokens() {
        let cache = VerifiedTokens::new(100);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}-{}", "x".repeat(i % 50)));
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        let inner = cache.inner.lock().unwrap();
        assert_eq!(inner.order.len(), 100, "order and set agree");
        drop(inner);
        // The newest are kept, the oldest forgotten.
        assert!(cache.contains(&format!("token-9999-{}", "x".repeat(9999 % 50))));
        assert!(!cache.contains("token-0-"));
        // Re-inserting a remembered token does not grow or reorder anything.
        cache.insert(&format!("token-9999-{}", "x".repeat(9999 % 50)));
        assert_eq!(cache.len(), 100);
    }
}
