//! The local Key Vault (`coldvault emulator`): an HTTPS server speaking the Key Vault data-plane
//! REST API well enough for the unmodified official SDKs, with the behaviours that break real
//! backup and restore runs (soft-delete latency, purge windows, sealed and bound backup blobs,
//! throttling, faults). See `docs/EMULATOR.md` for routes and deviations.
//!
//! [`start`] runs it in-process on any port (tests use port 0); [`app`] is the router alone.
//! Module map: [`store`] holds objects, [`state`] the shared state and the per-request
//! [`state::VaultCtx`], [`http`] the middleware, [`error`] Azure's error envelope, [`paging`]
//! lists, [`backup`] blobs, [`auth`] the token issuer, [`arm`] Azure Resource Manager,
//! [`tls`] HTTPS, [`admin`] the
//! `/_emulator` endpoint, [`secrets`], [`keys`] and [`certificates`] the object routes.

pub mod admin;
pub mod arm;
pub mod auth;
pub mod backup;
pub mod certificates;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod faults;
pub mod http;
pub mod keys;
pub mod paging;
pub mod persist;
pub mod secrets;
pub mod seed;
pub mod state;
pub mod store;
pub mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU16;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::middleware;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::state::{AppState, EmulatorState, Settings, Vault};

/// A vault's pricing tier: HSM key types need premium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sku {
    #[default]
    Standard,
    Premium,
}

/// Token checking on the vault routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Any bearer token passes (the challenge is still sent to requests without one).
    Off,
    /// Tokens must come from the built-in issuer, for the vault audience, unexpired.
    #[default]
    Jwt,
}

/// The subscription a vault gets when none is named.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// The geography a vault gets when none is named.
pub const DEFAULT_GEO: &str = "westeurope";
/// The vault served when no `--vault` is given.
pub const DEFAULT_VAULT: &str = "local";
/// The resource group a vault gets when none is named (Azure Resource Manager ids name one).
pub const DEFAULT_RESOURCE_GROUP: &str = "coldvault-local";

/// One vault to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultSpec {
    pub name: String,
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// The region (Azure Resource Manager's `location`); backup blobs are bound to it.
    #[serde(default = "default_geo", alias = "location")]
    pub geo: String,
    /// The tenant the vault belongs to; `None` is the emulator's first tenant. A token of
    /// another tenant is refused (401 `AKV10032`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The resource group named by the vault's Azure Resource Manager id.
    #[serde(default = "default_resource_group")]
    pub resource_group: String,
    /// The vault resource's tags (Azure Resource Manager).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub sku: Sku,
    #[serde(default)]
    pub purge_protection: bool,
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

fn default_subscription() -> String {
    DEFAULT_SUBSCRIPTION.to_string()
}
fn default_geo() -> String {
    DEFAULT_GEO.to_string()
}
fn default_retention() -> u32 {
    90
}
fn default_resource_group() -> String {
    DEFAULT_RESOURCE_GROUP.to_string()
}

impl VaultSpec {
    /// A standard vault called `name` in the default subscription and geography, 90 days'
    /// retention, no purge protection.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            subscription: default_subscription(),
            geo: default_geo(),
            tenant: None,
            resource_group: default_resource_group(),
            tags: BTreeMap::new(),
            sku: Sku::Standard,
            purge_protection: false,
            retention_days: 90,
        }
    }

    /// Parses the `--vault` syntax:
    /// `NAME[,subscription=ID][,resource-group=RG][,location=REGION|geo=REGION][,tenant=T]`
    /// `[,tag=KEY=VALUE]…[,sku=standard|premium][,purge-protection][,retention-days=N]`.
    pub fn parse(text: &str) -> Result<Self, EmulatorError> {
        let mut parts = text.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let mut spec = VaultSpec::new(name);
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (part.trim(), None),
            };
            match (key, value) {
                ("subscription", Some(v)) => spec.subscription = v.to_string(),
                ("geo" | "location", Some(v)) => spec.geo = v.to_string(),
                ("resource-group", Some(v)) => spec.resource_group = v.to_string(),
                ("tenant", Some(v)) => spec.tenant = Some(v.to_string()),
                ("tag", Some(v)) => {
                    let (k, v) = v.split_once('=').unwrap_or((v, ""));
                    spec.tags.insert(k.trim().to_string(), v.trim().to_string());
                }
                ("sku", Some("standard")) => spec.sku = Sku::Standard,
                ("sku", Some("premium")) => spec.sku = Sku::Premium,
                ("purge-protection", None | Some("true")) => spec.purge_protection = true,
                ("purge-protection", Some("false")) => spec.purge_protection = false,
                ("retention-days", Some(v)) => {
                    spec.retention_days = v.parse().map_err(|_| {
                        EmulatorError::Config(format!("retention-days must be a number: {v}"))
                    })?;
                }
                _ => {
                    return Err(EmulatorError::Config(format!(
                        "unknown vault option '{part}' in '{text}' (expected subscription=, resource-group=, location=, tenant=, tag=KEY=VALUE, sku=standard|premium, purge-protection, retention-days=)"
                    )));
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the name (1–24 of `[a-z0-9-]`, as a DNS label) and retention (7–90 days).
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 24
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.name.starts_with('-')
            && !self.name.ends_with('-');
        if !ok {
            return Err(EmulatorError::Config(format!(
                "vault name '{}' must be 1-24 letters, digits or inner hyphens",
                self.name
            )));
        }
        if let Some(tenant) = &self.tenant
            && !valid_tenant(tenant)
        {
            return Err(EmulatorError::Config(format!(
                "vault '{}': tenant '{tenant}' must be 1-64 letters, digits, dots or hyphens (a GUID or a domain)",
                self.name
            )));
        }
        let rg = &self.resource_group;
        let rg_ok = !rg.is_empty()
            && rg.len() <= 90
            && !rg.ends_with('.')
            && rg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c));
        if !rg_ok {
            return Err(EmulatorError::Config(format!(
                "vault '{}': resource group '{rg}' must be 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
                self.name
            )));
        }
        let sub = &self.subscription;
        if sub.is_empty()
            || sub.len() > 64
            || !sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(EmulatorError::Config(format!(
                "vault '{}': subscription '{sub}' must be 1-64 letters, digits or hyphens (a GUID)",
                self.name
            )));
        }
        if !(7..=90).contains(&self.retention_days) {
            return Err(EmulatorError::Config(format!(
                "vault '{}': retention-days must be 7 to 90, not {}",
                self.name, self.retention_days
            )));
        }
        Ok(())
    }
}

/// A tenant id the emulator can serve: it appears in URL paths and in the challenge header.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Vaults to serve; the first is the default for `localhost`. Empty: one vault `local`.
    pub vaults: Vec<VaultSpec>,
    /// Soft-deleted vaults: listed by Azure Resource Manager under `deletedVaults` (deleted
    /// when the emulator starts), never served on the data plane (their names do not resolve
    /// in Azure either).
    pub deleted_vaults: Vec<VaultSpec>,
    /// Managed HSMs: listed by Azure Resource Manager (`managedHSMs`, `/resources`), with no
    /// data plane (the emulator serves no Managed HSM).
    pub managed_hsms: Vec<VaultSpec>,
    /// Address to listen on (loopback by default); `::1` is also tried on the same port.
    pub bind: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Where to persist; `None` keeps everything in memory (the CA goes to a temp dir).
    pub state_dir: Option<PathBuf>,
    /// A JSON seed file declaring vaults and objects (see [`seed`]).
    pub seed: Option<PathBuf>,
    pub auth: AuthMode,
    /// Page size when a list request has no `maxresults`.
    pub page_size: u32,
    /// Azure-like ragged pages (some empty, some short).
    pub ragged_pages: bool,
    /// Added to every vault request.
    pub latency: Duration,
    /// Requests per 10 s per vault before 429.
    pub budget: Option<u32>,
    /// Fraction of vault requests answered with a random 429, 500 or 503.
    pub fault_rate: f64,
    /// Faults armed at start (`--fault`), as if posted to `/_emulator/faults`.
    pub faults: Vec<faults::FaultSpec>,
    /// How long a purged name stays unusable (409 `ObjectIsBeingDeleted`).
    pub purge_window: Duration,
    /// How long a delete (or recover) takes to become visible.
    pub delete_delay: Duration,
    /// Extra DNS names or IPs for the server certificate.
    pub extra_names: Vec<String>,
    /// Fixed issuer identities (random when `None`).
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<store::Redacted<String>>,
    /// How long a backup of an object with more than 500 versions is held before its 504
    /// (Azure's backup of such an object times out).
    pub backup_timeout: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            vaults: Vec::new(),
            deleted_vaults: Vec::new(),
            managed_hsms: Vec::new(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            state_dir: None,
            seed: None,
            auth: AuthMode::Jwt,
            page_size: 25,
            ragged_pages: false,
            latency: Duration::ZERO,
            budget: None,
            fault_rate: 0.0,
            faults: Vec::new(),
            purge_window: Duration::ZERO,
            delete_delay: Duration::ZERO,
            extra_names: Vec::new(),
            tenant_id: None,
            client_id: None,
            client_secret: None,
            backup_timeout: Duration::from_millis(state::DEFAULT_BACKUP_TIMEOUT_MS),
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("seed file: {0}")]
    Seed(String),
}

/// The ready line: what a client needs to talk to the emulator. Printed as one JSON line by
/// `coldvault emulator`. Its `Debug` hides the client secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub port: u16,
    /// Path of the CA certificate (PEM) to trust.
    pub ca_cert: String,
    /// Vault name → `https://NAME.vault.localhost:PORT/`.
    pub vaults: BTreeMap<String, String>,
    /// `https://localhost:PORT`: the issuer's authority host.
    pub authority_host: String,
    /// The first tenant and its built-in client.
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Every tenant (the first included) → its built-in client.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantCredentials>,
    /// `https://localhost:PORT/`: Azure Resource Manager (subscriptions, tenants, vault
    /// resources), on the same server and issuer.
    #[serde(default)]
    pub arm_endpoint: String,
    /// `https://localhost:PORT/_emulator`.
    pub admin: String,
    /// App Service-style managed identity endpoint (`IDENTITY_ENDPOINT`).
    pub identity_endpoint: String,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("port", &self.port)
            .field("ca_cert", &self.ca_cert)
            .field("vaults", &self.vaults)
            .field("authority_host", &self.authority_host)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("tenants", &self.tenants)
            .field("arm_endpoint", &self.arm_endpoint)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// One tenant's built-in client in the ready line. Its `Debug` hides the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct TenantCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

/// Settles every vault's tenant and subscription; answers the first tenant.
///
/// The first tenant is `--tenant-id`, else the first vault's `tenant=`, else a fresh GUID. A
/// vault naming no tenant belongs to the first. A vault of another tenant naming no
/// subscription gets one of its own tenant (derived from the tenant id, so it is stable). A
/// subscription belongs to one tenant only, as in Azure.
fn resolve_tenants(config: &mut EmulatorConfig) -> Result<String, EmulatorError> {
    if let Some(tenant) = &config.tenant_id
        && !valid_tenant(tenant)
    {
        return Err(EmulatorError::Config(format!(
            "tenant id '{tenant}' must be 1-64 letters, digits, dots or hyphens"
        )));
    }
    let first = config
        .tenant_id
        .clone()
        .or_else(|| config.vaults.first().and_then(|v| v.tenant.clone()))
        .unwrap_or_else(auth::new_guid);
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    // Deleted vaults and Managed HSMs belong to subscriptions and tenants as vaults do.
    let specs = config
        .vaults
        .iter_mut()
        .chain(config.deleted_vaults.iter_mut())
        .chain(config.managed_hsms.iter_mut());
    for spec in specs {
        let tenant = spec.tenant.clone().unwrap_or_else(|| first.clone());
        if !tenant.eq_ignore_ascii_case(&first) && spec.subscription == DEFAULT_SUBSCRIPTION {
            spec.subscription = tenant_subscription(&tenant);
        }
        spec.tenant = Some(tenant.clone());
        let owner = owners
            .entry(spec.subscription.to_ascii_lowercase())
            .or_insert_with(|| tenant.clone());
        if !owner.eq_ignore_ascii_case(&tenant) {
            return Err(EmulatorError::Config(format!(
                "vault '{}': subscription '{}' belongs to tenant '{owner}', not '{tenant}' (name another subscription=)",
                spec.name, spec.subscription
            )));
        }
    }
    Ok(first)
}

/// The default subscription of a tenant other than the first: a GUID derived from its id.
pub fn tenant_subscription(tenant: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(tenant.to_ascii_lowercase().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A running emulator; dropping it without [`RunningEmulator::shutdown`] stops the server too.
#[derive(Debug)]
pub struct RunningEmulator {
    state: AppState,
    ready: Ready,
    ca_pem: String,
    ca_path: PathBuf,
    shutdown_tx: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<()>>,
    // Holds the CA's directory when there is no state directory.
    _temp: Option<tempfile::TempDir>,
}

impl RunningEmulator {
    /// The ready line.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.ready.port
    }

    /// `https://NAME.vault.localhost:PORT/` for a served vault.
    pub fn vault_url(&self, name: &str) -> Option<String> {
        self.ready.vaults.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where the CA certificate is written.
    pub fn ca_cert_path(&self) -> &std::path::Path {
        &self.ca_path
    }

    /// `https://localhost:PORT/_emulator`.
    pub fn admin_url(&self) -> &str {
        &self.ready.admin
    }

    /// The shared state (for in-process tests that steer the clock or read the journal).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s), saves what the write-behind
    /// task has not saved yet, returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let _ = persist::flush(&self.state).await;
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// The whole router: issuer routes, `/_emulator`, and the vault routes behind the gate, all
/// inside the frame that adds Azure's headers and writes the journal.
pub fn app(state: AppState) -> Router {
    let vault_routes = Router::new()
        .merge(secrets::routes())
        // Key and certificate routes (`src/emulator/keys.rs`, `src/emulator/certificates.rs`).
        .merge(keys::routes())
        .merge(certificates::routes())
        .fallback(vault_fallback)
        // After the merges: it applies to the routes registered so far.
        .method_not_allowed_fallback(vault_method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), http::gate));
    Router::new()
        .merge(auth::routes())
        // Azure Resource Manager (`src/emulator/arm.rs`): `/subscriptions…` and `/tenants`.
        .merge(arm::routes())
        .nest("/_emulator", admin::routes())
        .merge(vault_routes)
        .layer(middleware::from_fn_with_state(state.clone(), http::frame))
        .with_state(state)
}

async fn vault_fallback(method: axum::http::Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "The route {method} {} is not served by this vault.",
            uri.path()
        ),
    )
}

/// A served path asked with a method it does not take: 405 in Azure's JSON envelope, never
/// an empty body (Key Vault answers its 405s with a JSON body too).
async fn vault_method_not_allowed(method: axum::http::Method) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{method}'."),
    )
}

/// Builds the state, binds the port, and serves until [`RunningEmulator::shutdown`].
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    let mut config = config;
    let seed = match &config.seed {
        Some(path) => Some(seed::SeedFile::load(path)?),
        None => None,
    };
    if let Some(seed) = &seed {
        for spec in &seed.vaults {
            if !config
                .vaults
                .iter()
                .any(|v| v.name.eq_ignore_ascii_case(&spec.name))
            {
                config.vaults.push(spec.clone());
            }
        }
        config
            .deleted_vaults
            .extend(seed.deleted_vaults.iter().cloned());
        config
            .managed_hsms
            .extend(seed.managed_hsms.iter().cloned());
    }
    for spec in config.deleted_vaults.iter().chain(&config.managed_hsms) {
        spec.validate()?;
    }
    if config.vaults.is_empty() {
        config.vaults.push(VaultSpec::new(DEFAULT_VAULT));
    }
    let first_tenant = resolve_tenants(&mut config)?;
    let mut vaults = BTreeMap::new();
    for spec in &config.vaults {
        spec.validate()?;
        let key = spec.name.to_ascii_lowercase();
        if vaults
            .insert(key, Arc::new(Vault::new(spec.clone())))
            .is_some()
        {
            return Err(EmulatorError::Config(format!(
                "vault '{}' is declared twice",
                spec.name
            )));
        }
    }
    let default_vault = config.vaults[0].name.to_ascii_lowercase();

    let (dir, temp) = match &config.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| EmulatorError::Io(dir.display().to_string(), e))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("coldvault-emulator-")
                .tempdir()
                .map_err(|e| EmulatorError::Io("temporary directory".into(), e))?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let persister = match &config.state_dir {
        Some(dir) => Some(
            persist::Persister::new(dir)
                .map_err(|e| EmulatorError::Io(dir.display().to_string(), e))?,
        ),
        None => None,
    };
    let world = match &persister {
        Some(p) => backup::SecurityWorld::from_bytes(
            &p.world_bytes(|| backup::SecurityWorld::generate().to_bytes())
                .map_err(|e| EmulatorError::Io("world.key".into(), e))?,
        ),
        None => backup::SecurityWorld::generate(),
    };
    let mut restored = false;
    if let Some(p) = &persister
        && let Some(saved) = p
            .load_vaults()
            .map_err(|e| EmulatorError::Io("vaults.json".into(), e))?
    {
        for (name, store) in saved.vaults {
            if let Some(vault) = vaults.get(&name) {
                let mut store = store;
                store.policy = vault.spec.policy();
                *vault.lock() = store;
                restored = true;
            }
        }
    }

    let material = tls::material(&dir, &config.extra_names)?;
    let server_config = tls::server_config(&material)?;

    let addr = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| EmulatorError::Bind(addr, e))?;
    let port = listener
        .local_addr()
        .map_err(|e| EmulatorError::Bind(addr, e))?
        .port();
    let mut listeners = vec![listener];
    if config.bind == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        // `localhost` may resolve to ::1 first; serve it too when the port is free there.
        if let Ok(v6) =
            TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)).await
        {
            listeners.push(v6);
        }
    }

    let settings = Settings::from_config(&config);
    let mut issuer = auth::Issuer::new(
        Some(first_tenant),
        config.client_id.clone(),
        config.client_secret.clone().map(|s| s.0),
        config.state_dir.as_ref().map(|d| d.join("issuer-key.pem")),
    );
    for spec in config
        .vaults
        .iter()
        .chain(&config.deleted_vaults)
        .chain(&config.managed_hsms)
    {
        if let Some(tenant) = &spec.tenant {
            issuer.add_tenant(tenant);
        }
    }
    let clock = clock::Clock::default();
    let started_s = clock.now_s();
    let state: AppState = Arc::new(EmulatorState {
        config: config.clone(),
        port: AtomicU16::new(port),
        vaults,
        default_vault,
        clock,
        started_s,
        settings: RwLock::new(settings),
        journal: faults::Journal::default(),
        faults: faults::Faults::default(),
        permissions: faults::Permissions::default(),
        issuer,
        world,
        persister,
    });
    for spec in &config.faults {
        state.faults.inject(spec.clone());
    }
    if let Some(seed) = &seed
        && !restored
    {
        seed.apply(&state)?;
        state.changed();
        state.persist();
    }

    // Make the token signing key in the background: startup does not wait for RSA keygen.
    let warm = state.clone();
    tokio::spawn(async move {
        if let Err(err) = warm.issuer.material().await {
            tracing::error!("cannot make the token signing key: {err}");
        }
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(persist::write_behind(state.clone(), shutdown_rx.clone()));
    let server = tokio::spawn(tls::serve(
        listeners,
        server_config,
        app(state.clone()),
        shutdown_rx,
    ));

    // Absolute even for a relative `--state-dir`: clients run from other directories.
    let ca_path = std::fs::canonicalize(&dir)
        .map_err(|e| EmulatorError::Io(dir.display().to_string(), e))?
        .join("ca.pem");
    let authority_host = format!("https://localhost:{port}");
    let ready = Ready {
        ready: true,
        port,
        ca_cert: ca_path.display().to_string(),
        vaults: state
            .vaults
            .keys()
            .map(|k| (k.clone(), format!("https://{k}.vault.localhost:{port}/")))
            .collect(),
        authority_host: authority_host.clone(),
        tenant_id: state.issuer.tenant_id.clone(),
        client_id: state.issuer.client_id.clone(),
        client_secret: state.issuer.client_secret().to_string(),
        tenants: state
            .issuer
            .tenants()
            .iter()
            .map(|t| {
                (
                    t.tenant_id.clone(),
                    TenantCredentials {
                        client_id: t.client_id.clone(),
                        client_secret: t.client_secret.0.clone(),
                    },
                )
            })
            .collect(),
        arm_endpoint: format!("{authority_host}/"),
        admin: format!("{authority_host}/_emulator"),
        identity_endpoint: format!("{authority_host}/msi/token"),
    };
    Ok(RunningEmulator {
        state,
        ready,
        ca_pem: material.ca_pem,
        ca_path,
        shutdown_tx,
        server: Some(server),
        _temp: temp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_syntax_parses_and_refuses_unknown_options() {
        let spec = VaultSpec::parse(
            "prod,subscription=s1,geo=northeurope,sku=premium,purge-protection,retention-days=7",
        )
        .unwrap();
        assert_eq!(spec.subscription, "s1");
        assert_eq!(spec.geo, "northeurope");
        assert_eq!(spec.sku, Sku::Premium);
        assert!(spec.purge_protection);
        assert_eq!(spec.retention_days, 7);
        let arm = VaultSpec::parse(
            "eu,resource-group=rg-eu,location=northeurope,tenant=contoso.example,subscription=s2",
        )
        .unwrap();
        assert_eq!(arm.resource_group, "rg-eu");
        assert_eq!(arm.geo, "northeurope");
        assert_eq!(arm.tenant.as_deref(), Some("contoso.example"));
        assert_eq!(VaultSpec::new("x").resource_group, DEFAULT_RESOURCE_GROUP);
        assert!(VaultSpec::parse("prod,tenant=a/b").is_err());
        assert!(VaultSpec::parse("prod,resource-group=rg.").is_err());
        assert!(VaultSpec::parse("prod,subscription=a b").is_err());
        assert!(VaultSpec::parse("prod,colour=blue").is_err());
        assert!(VaultSpec::parse("prod,retention-days=3").is_err());
        assert!(VaultSpec::parse("bad_name").is_err());
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_client_secret() {
        let canary = "canary-3f9d2b7e";
        let config = EmulatorConfig {
            client_secret: Some(store::Redacted(canary.to_string())),
            vaults: vec![
                VaultSpec::new("a"),
                VaultSpec::parse("b,tenant=other.example").unwrap(),
            ],
            ..EmulatorConfig::default()
        };
        assert!(!format!("{config:?}").contains(canary));
        let running = start(config).await.unwrap();
        assert_eq!(running.ready().client_secret, canary);
        assert!(!format!("{:?}", running.ready()).contains(canary));
        assert!(!format!("{:?}", running.state()).contains(canary));
        // The other tenant's client secret is hidden the same way.
        let other = running.ready().tenants["other.example"]
            .client_secret
            .clone();
        assert!(!format!("{:?}", running.ready()).contains(&other));
        assert!(!format!("{:?}", running.state()).contains(&other));
        running.shutdown().await;
    }
}
