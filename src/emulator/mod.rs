//! The local Key Vault (`coldvault emulator`): an HTTPS server speaking the Key Vault data-plane
//! REST API well enough for the unmodified official SDKs, with the behaviours that break real
//! backup and restore runs (soft-delete latency, purge windows, sealed and bound backup blobs,
//! throttling, faults). See `docs/EMULATOR.md` for routes and deviations.
//!
//! [`start`] runs it in-process on any port (tests use port 0); [`app`] is the router alone.
//! Module map: [`store`] holds objects, [`state`] the shared state and the per-request
//! [`state::VaultCtx`], [`http`] the middleware, [`error`] Azure's error envelope, [`paging`]
//! lists, [`backup`] blobs, [`auth`] the token issuer, [`tls`] HTTPS, [`admin`] the
//! `/_emulator` endpoint, [`secrets`], [`keys`] and [`certificates`] the object routes.

pub mod admin;
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

/// One vault to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultSpec {
    pub name: String,
    #[serde(default = "default_subscription")]
    pub subscription: String,
    #[serde(default = "default_geo")]
    pub geo: String,
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

impl VaultSpec {
    /// A standard vault called `name` in the default subscription and geography, 90 days'
    /// retention, no purge protection.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            subscription: default_subscription(),
            geo: default_geo(),
            sku: Sku::Standard,
            purge_protection: false,
            retention_days: 90,
        }
    }

    /// Parses the `--vault` syntax:
    /// `NAME[,subscription=ID][,geo=REGION][,sku=standard|premium][,purge-protection][,retention-days=N]`.
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
                ("geo", Some(v)) => spec.geo = v.to_string(),
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
                        "unknown vault option '{part}' in '{text}' (expected subscription=, geo=, sku=standard|premium, purge-protection, retention-days=)"
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
        if !(7..=90).contains(&self.retention_days) {
            return Err(EmulatorError::Config(format!(
                "vault '{}': retention-days must be 7 to 90, not {}",
                self.name, self.retention_days
            )));
        }
        Ok(())
    }
}

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Vaults to serve; the first is the default for `localhost`. Empty: one vault `local`.
    pub vaults: Vec<VaultSpec>,
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
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            vaults: Vec::new(),
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
            purge_window: Duration::ZERO,
            delete_delay: Duration::ZERO,
            extra_names: Vec::new(),
            tenant_id: None,
            client_id: None,
            client_secret: None,
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
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
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
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
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
        .layer(middleware::from_fn_with_state(state.clone(), http::gate));
    Router::new()
        .merge(auth::routes())
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
    }
    if config.vaults.is_empty() {
        config.vaults.push(VaultSpec::new(DEFAULT_VAULT));
    }
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
    let issuer = auth::Issuer::new(
        config.tenant_id.clone(),
        config.client_id.clone(),
        config.client_secret.clone().map(|s| s.0),
        config.state_dir.as_ref().map(|d| d.join("issuer-key.pem")),
    );
    let state: AppState = Arc::new(EmulatorState {
        config: config.clone(),
        port: AtomicU16::new(port),
        vaults,
        default_vault,
        clock: clock::Clock::default(),
        settings: RwLock::new(settings),
        journal: faults::Journal::default(),
        faults: faults::Faults::default(),
        permissions: faults::Permissions::default(),
        issuer,
        world,
        persister,
    });
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

    let ca_path = dir.join("ca.pem");
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
        assert!(VaultSpec::parse("prod,colour=blue").is_err());
        assert!(VaultSpec::parse("prod,retention-days=3").is_err());
        assert!(VaultSpec::parse("bad_name").is_err());
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_client_secret() {
        let canary = "canary-3f9d2b7e";
        let config = EmulatorConfig {
            client_secret: Some(store::Redacted(canary.to_string())),
            ..EmulatorConfig::default()
        };
        assert!(!format!("{config:?}").contains(canary));
        let running = start(config).await.unwrap();
        assert_eq!(running.ready().client_secret, canary);
        assert!(!format!("{:?}", running.ready()).contains(canary));
        assert!(!format!("{:?}", running.state()).contains(canary));
        running.shutdown().await;
    }
}
