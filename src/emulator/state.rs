//! The emulator's shared state ([`EmulatorState`]) and what a vault route sees of it
//! ([`VaultCtx`]): the vault the request's host names, the clock, the settings in force, and
//! helpers that render ids, attributes and pages from the request's host.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::Issuer;
use super::backup::{BackupContents, Binding, SecurityWorld};
use super::clock::Clock;
use super::error::ApiError;
use super::faults::{Faults, Journal, Permissions};
use super::paging::{MAX_RESULTS, Page, PageRequest, PagingMode, paginate, skip_after};
use super::persist::Persister;
use super::store::{
    Attributes, Kind, SoftDeletePolicy, StoreError, StoredObject, Timing, VaultStore,
};
use super::{AuthMode, EmulatorConfig, VaultSpec};

/// The handle every route and middleware shares.
pub type AppState = Arc<EmulatorState>;

/// Settings that may change while the emulator runs (flags set them, `/_emulator/settings`
/// changes them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Page size when the client sends no `maxresults`.
    pub page_size: u32,
    /// Azure-like ragged pages: some empty, some short.
    pub ragged_pages: bool,
    /// Added to every vault request.
    pub latency_ms: u64,
    /// Requests per 10 s per vault before 429; `None` for no budget.
    pub budget: Option<u32>,
    /// Fraction of vault requests answered with a random 429, 500 or 503.
    pub fault_rate: f64,
    /// How long a name stays unusable after a purge.
    pub purge_window_ms: u64,
    /// How long a delete (or recover) takes to become visible.
    pub delete_delay_ms: u64,
    /// Token checking.
    pub auth: AuthMode,
    /// How long a backup of an object with more than 500 versions is held before it is
    /// answered 504: Azure's backup of such an object times out (see `docs/EMULATOR.md`).
    pub backup_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            page_size: 25,
            ragged_pages: false,
            latency_ms: 0,
            budget: None,
            fault_rate: 0.0,
            purge_window_ms: 0,
            delete_delay_ms: 0,
            auth: AuthMode::Jwt,
            backup_timeout_ms: DEFAULT_BACKUP_TIMEOUT_MS,
        }
    }
}

impl Settings {
    /// The settings a configuration starts with.
    pub fn from_config(config: &EmulatorConfig) -> Self {
        Self {
            page_size: config.page_size.clamp(1, super::paging::MAX_RESULTS),
            ragged_pages: config.ragged_pages,
            latency_ms: u64::try_from(config.latency.as_millis()).unwrap_or(u64::MAX),
            budget: config.budget,
            fault_rate: config.fault_rate.clamp(0.0, 1.0),
            purge_window_ms: u64::try_from(config.purge_window.as_millis()).unwrap_or(u64::MAX),
            delete_delay_ms: u64::try_from(config.delete_delay.as_millis()).unwrap_or(u64::MAX),
            auth: config.auth,
            backup_timeout_ms: u64::try_from(config.backup_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// How long a backup past the version limit is held unless configured: a minute, the order of
/// the limits of gateways in front of web services (Azure publishes no figure for Key Vault).
pub const DEFAULT_BACKUP_TIMEOUT_MS: u64 = 60_000;

/// One vault: its declaration and its contents.
#[derive(Debug)]
pub struct Vault {
    pub spec: VaultSpec,
    pub store: Mutex<VaultStore>,
}

impl Vault {
    /// An empty vault for `spec`.
    pub fn new(spec: VaultSpec) -> Self {
        let store = VaultStore::new(spec.policy());
        Self {
            spec,
            store: Mutex::new(store),
        }
    }

    /// Locks the vault's contents (short critical sections only: never across an await).
    pub fn lock(&self) -> MutexGuard<'_, VaultStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vault's backup binding.
    pub fn binding(&self) -> Binding<'_> {
        Binding {
            subscription: &self.spec.subscription,
            geography: &self.spec.geo,
        }
    }
}

/// Everything the emulator holds.
#[derive(Debug)]
pub struct EmulatorState {
    pub config: EmulatorConfig,
    /// The port actually bound (known after bind).
    pub port: AtomicU16,
    /// Vaults by lower-cased name.
    pub vaults: BTreeMap<String, Arc<Vault>>,
    /// The vault `localhost` and `127.0.0.1` reach.
    pub default_vault: String,
    pub clock: Clock,
    /// The clock's reading at start, in Unix seconds: when the declared deleted vaults were
    /// deleted.
    pub started_s: i64,
    pub settings: RwLock<Settings>,
    pub journal: Journal,
    pub faults: Faults,
    pub permissions: Permissions,
    pub issuer: Issuer,
    pub world: SecurityWorld,
    pub persister: Option<Persister>,
}

impl EmulatorState {
    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// The timing for store operations now.
    pub fn timing(&self) -> Timing {
        let settings = self.settings();
        Timing {
            now_ms: self.clock.now_ms(),
            delete_delay_ms: i64::try_from(settings.delete_delay_ms).unwrap_or(i64::MAX / 2),
            purge_window_ms: i64::try_from(settings.purge_window_ms).unwrap_or(i64::MAX / 2),
        }
    }

    /// The vault a request host names: `NAME.vault.localhost[:port]` → `NAME` (unknown names
    /// → `None`); any other host (`localhost`, `127.0.0.1`, a `--tls-name`) → the vault its
    /// first label names, else the default vault.
    pub fn vault_for_host(&self, host: &str) -> Option<Arc<Vault>> {
        let hostname = strip_port(host).to_ascii_lowercase();
        if let Some(name) = hostname.strip_suffix(".vault.localhost") {
            return self.vaults.get(name).cloned();
        }
        let first = hostname.split('.').next().unwrap_or_default();
        self.vaults
            .get(first)
            .or_else(|| self.vaults.get(&self.default_vault))
            .cloned()
    }

    /// The tenant `vault` belongs to (the first tenant when its declaration names none).
    pub fn vault_tenant<'a>(&'a self, vault: &'a Vault) -> &'a str {
        vault
            .spec
            .tenant
            .as_deref()
            .unwrap_or(&self.issuer.tenant_id)
    }

    /// The vault called `name`.
    pub fn vault(&self, name: &str) -> Option<Arc<Vault>> {
        self.vaults.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Notes that a vault's contents changed: with a state directory, the write-behind task
    /// saves them within [`super::persist::WRITE_BEHIND_DELAY`]; nothing is written here.
    pub fn changed(&self) {
        if let Some(persister) = &self.persister {
            persister.mark_changed();
        }
    }

    /// Saves the vaults now if anything changed since the last save (blocking file I/O: call
    /// it from `spawn_blocking`, or use [`super::persist::flush`]). Failures are logged and stay
    /// pending.
    pub fn persist(&self) {
        if let Err(err) = self.save_vaults_if_changed() {
            tracing::warn!("cannot persist the emulator state: {err}");
        }
    }

    /// Saves the vaults if anything changed; answers whether it wrote (`false` without a state
    /// directory).
    pub fn save_vaults_if_changed(&self) -> std::io::Result<bool> {
        match &self.persister {
            Some(persister) => persister.save_if_changed(&self.vaults),
            None => Ok(false),
        }
    }
}

/// Drops a `:port` suffix from a host (IPv6 literals keep their brackets). Never panics, even on
/// a host the frame would refuse (`[x`, `[`): an unclosed bracket is kept as it is.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Who made the request, from the token (`oid`, else `appid`); `None` with auth off and an
/// opaque bearer.
#[derive(Debug, Clone)]
pub struct Principal(pub Option<String>);

/// What a vault route knows about its request. Inserted by the gate middleware; extract it in
/// a handler with `ctx: VaultCtx`.
#[derive(Debug, Clone)]
pub struct VaultCtx {
    pub state: AppState,
    pub vault: Arc<Vault>,
    /// `https://` + the Host the client sent: the base of every `id`.
    pub base: String,
    /// The same with an explicit port, for `nextLink`.
    pub link_base: String,
    /// The request's `api-version`.
    pub api_version: String,
    /// The request's query, decoded.
    pub query: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for VaultCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VaultCtx>()
            .cloned()
            .ok_or_else(|| ApiError::internal("vault route reached without the vault gate"))
    }
}

impl VaultCtx {
    /// Timing for store operations now.
    pub fn timing(&self) -> Timing {
        self.state.timing()
    }

    /// Now in Unix seconds.
    pub fn now_s(&self) -> i64 {
        self.state.clock.now_s()
    }

    /// Locks the vault's contents.
    pub fn lock(&self) -> MutexGuard<'_, VaultStore> {
        self.vault.lock()
    }

    /// The vault's soft-delete policy.
    pub fn policy(&self) -> SoftDeletePolicy {
        self.vault.spec.policy()
    }

    /// True for a premium vault (HSM key types allowed).
    pub fn is_premium(&self) -> bool {
        self.vault.spec.sku == super::Sku::Premium
    }

    /// `{base}/{kind}s/{name}/{version}` (no version segment for `None`).
    pub fn object_id(&self, kind: Kind, name: &str, version: Option<&str>) -> String {
        match version {
            Some(v) => format!("{}/{}/{name}/{v}", self.base, kind.plural()),
            None => format!("{}/{}/{name}", self.base, kind.plural()),
        }
    }

    /// `{base}/deleted{kind}s/{name}`.
    pub fn recovery_id(&self, kind: Kind, name: &str) -> String {
        format!("{}/{}/{name}", self.base, kind.deleted_plural())
    }

    /// The attributes object: the version's plus the vault's `recoveryLevel` and
    /// `recoverableDays`.
    pub fn attributes(&self, attributes: &Attributes) -> Map<String, Value> {
        let policy = self.policy();
        let mut map = Map::new();
        map.insert("enabled".into(), json!(attributes.enabled));
        if let Some(nbf) = attributes.nbf {
            map.insert("nbf".into(), json!(nbf));
        }
        if let Some(exp) = attributes.exp {
            map.insert("exp".into(), json!(exp));
        }
        map.insert("created".into(), json!(attributes.created));
        map.insert("updated".into(), json!(attributes.updated));
        map.insert("recoveryLevel".into(), json!(policy.recovery_level()));
        map.insert("recoverableDays".into(), json!(policy.retention_days));
        map
    }

    /// One page of `items` (sorted by `sort_key`) for the list at `path` (`/secrets`, ...),
    /// honouring `maxresults`, `$skiptoken` and the paging settings.
    pub fn page<T>(
        &self,
        items: Vec<T>,
        sort_key: impl Fn(&T) -> String,
        path: &str,
    ) -> Result<Page<T>, ApiError> {
        let settings = self.state.settings();
        let request = PageRequest {
            maxresults: self.query.get("maxresults").cloned(),
            skiptoken: self.query.get("$skiptoken").cloned(),
        };
        let mode = PagingMode {
            default_page_size: settings.page_size,
            ragged: settings.ragged_pages,
        };
        paginate(
            items,
            sort_key,
            &request,
            mode,
            &format!("{}{path}", self.link_base),
            &self.api_version,
        )
    }

    /// One page of the live objects of `kind` for the list at `path`. Only the objects after
    /// the `$skiptoken` marker are copied, and one more than a page can hold so [`paginate`]
    /// knows whether another page follows: copying the whole vault for every page made long
    /// lists quadratic and held the vault's lock meanwhile.
    pub fn live_page(&self, kind: Kind, path: &str) -> Result<Page<StoredObject>, ApiError> {
        let after = skip_after(self.query.get("$skiptoken").map(String::as_str))?;
        let objects = self.lock().list_after(
            kind,
            self.timing(),
            after.as_deref(),
            MAX_RESULTS as usize + 1,
        );
        self.page(objects, |o| o.name.to_ascii_lowercase(), path)
    }

    /// Renders a page as Azure's list body: `{"value":[...],"nextLink":...}`.
    pub fn page_body<T>(&self, page: Page<T>, render: impl Fn(&T) -> Value) -> Value {
        let value: Vec<Value> = page.items.iter().map(render).collect();
        json!({ "value": value, "nextLink": page.next_link })
    }

    /// Maps a failed backup of `kind`/`name` to Azure's answer. An object past the version
    /// limit is not refused at once: Azure's backup of it times out ("after 500 versions the
    /// backup operation will time out", a Key Vault engineer on Azure/azure-sdk-for-net#20934),
    /// so the request is held for `backup_timeout_ms` and answered 504. Other failures are
    /// [`VaultCtx::store_error`]'s.
    pub async fn backup_error(&self, kind: Kind, name: &str, err: StoreError) -> ApiError {
        match err {
            StoreError::TooManyVersions(count) => {
                let hold = self.state.settings().backup_timeout_ms;
                tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
                ApiError::backup_timed_out(kind, count)
            }
            other => self.store_error(kind, name, other),
        }
    }

    /// Maps a store failure on `kind`/`name` to Azure's answer (ids rendered from this host).
    pub fn store_error(&self, kind: Kind, name: &str, err: StoreError) -> ApiError {
        match err {
            StoreError::RestoreConflict { version } => ApiError::from_store(
                kind,
                name,
                StoreError::RestoreConflict {
                    version: self.object_id(kind, name, Some(&version)),
                },
            ),
            other => ApiError::from_store(kind, name, other),
        }
    }

    /// Seals a backup blob of `kind` for this vault's subscription and geography.
    pub fn seal(&self, kind: Kind, contents: &BackupContents) -> Result<String, ApiError> {
        self.state.world.seal(kind, &self.vault.binding(), contents)
    }

    /// Opens a blob posted to this vault's `kind` restore route.
    pub fn open(&self, kind: Kind, blob: &str) -> Result<BackupContents, ApiError> {
        self.state.world.open(kind, &self.vault.binding(), blob)
    }
}

impl VaultSpec {
    /// The store's soft-delete policy for this vault.
    pub fn policy(&self) -> SoftDeletePolicy {
        SoftDeletePolicy {
            retention_days: self.retention_days,
            purge_protection: self.purge_protection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(strip_port("a.vault.localhost:8443"), "a.vault.localhost");
        assert_eq!(strip_port("localhost"), "localhost");
        assert_eq!(strip_port("[::1]:99"), "[::1]");
    }

    #[test]
    fn strip_port_of_an_unclosed_bracket_does_not_panic() {
        assert_eq!(strip_port("[x"), "[x");
        assert_eq!(strip_port("["), "[");
        assert_eq!(strip_port(""), "");
    }
}
