//! What tests steer and read besides the vaults: injected faults (the next N requests or a
//! fraction of them, matching method, path and vault), the per-vault throttle budget, the
//! request journal, and per-principal permissions. A `hold` fault parks a request until the
//! test releases it, so a test can change the vault at a chosen point of a client's run
//! without racing it against a timer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::store::Kind;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// 429 with `Retry-After`.
    Throttle,
    /// 500.
    Internal,
    /// 503 with `Retry-After`.
    Unavailable,
    /// Waits `delay_ms`, then answers normally.
    Delay,
    /// Closes the connection without an answer.
    Drop,
    /// Runs the request (a write commits), then closes the connection without an answer: the
    /// response is lost on its way back, so a client that retries blindly writes twice.
    Lost,
    /// Parks the request before its handler runs until `POST /_emulator/faults/release`
    /// (or `delay_ms` passes, a safety net), then answers normally.
    Hold,
}

/// One injected fault, as posted to `/_emulator/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Applies to the next `count` matching requests (default 1 unless `rate` is given).
    #[serde(default)]
    pub count: Option<u64>,
    /// Applies to this fraction of matching requests, until removed.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Only this HTTP method.
    #[serde(default)]
    pub method: Option<String>,
    /// Only paths starting with this, or matching it as a glob when it holds `*`.
    #[serde(default)]
    pub path: Option<String>,
    /// Only this vault.
    #[serde(default)]
    pub vault: Option<String>,
    /// `Retry-After` seconds for 429 and 503 (default 1).
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Wait for `delay` (default 1000 ms); for `hold`, the longest wait before the request
    /// goes on unreleased.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

impl FaultSpec {
    /// Parses the `--fault` flag's syntax:
    /// `KIND[,count=N][,rate=P][,method=M][,path=PREFIX-OR-GLOB][,vault=NAME][,retry-after=S][,delay-ms=MS]`,
    /// `KIND` one of `throttle`, `internal`, `unavailable`, `delay`, `drop`, `lost`. The error
    /// says which part is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',');
        let kind_text = parts.next().unwrap_or_default().trim();
        let kind: FaultKind = serde_json::from_value(serde_json::Value::from(
            kind_text.to_ascii_lowercase(),
        ))
        .map_err(|_| {
            format!(
                "unknown fault kind '{kind_text}' (throttle, internal, unavailable, delay, drop, lost, hold)"
            )
        })?;
        let mut spec = FaultSpec {
            kind,
            count: None,
            rate: None,
            method: None,
            path: None,
            vault: None,
            retry_after: None,
            delay_ms: None,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("'{part}' in fault '{text}' is not KEY=VALUE"))?;
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{what} must be a whole number, not '{value}'"))
            };
            match key.to_ascii_lowercase().as_str() {
                "count" => spec.count = Some(number("count")?),
                "rate" => {
                    let rate: f64 = value
                        .parse()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| format!("rate must be between 0 and 1, not '{value}'"))?;
                    spec.rate = Some(rate);
                }
                "method" => spec.method = Some(value.to_ascii_uppercase()),
                "path" => spec.path = Some(value.to_owned()),
                "vault" => spec.vault = Some(value.to_owned()),
                "retry-after" | "retry_after" => spec.retry_after = Some(number("retry-after")?),
                "delay-ms" | "delay_ms" => spec.delay_ms = Some(number("delay-ms")?),
                other => {
                    return Err(format!(
                        "unknown fault setting '{other}' (count, rate, method, path, vault, \
                         retry-after, delay-ms)"
                    ));
                }
            }
        }
        Ok(spec)
    }

    fn matches(&self, method: &str, path: &str, vault: &str) -> bool {
        if let Some(m) = &self.method
            && !m.eq_ignore_ascii_case(method)
        {
            return false;
        }
        if let Some(v) = &self.vault
            && !v.eq_ignore_ascii_case(vault)
        {
            return false;
        }
        match &self.path {
            None => true,
            Some(pattern) if pattern.contains('*') => globset::Glob::new(pattern)
                .map(|g| g.compile_matcher().is_match(path))
                .unwrap_or(false),
            Some(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// A fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub retry_after: u64,
    pub delay_ms: u64,
}

#[derive(Debug, Clone)]
struct ActiveFault {
    spec: FaultSpec,
    remaining: Option<u64>,
}

/// A fixed 10-second window of a vault's budget.
#[derive(Debug, Clone, Copy, Default)]
struct BudgetWindow {
    start_ms: i64,
    count: u32,
}

/// Budget windows are this long.
pub const BUDGET_WINDOW_MS: i64 = 10_000;

/// Injected faults and throttle budgets.
#[derive(Debug)]
pub struct Faults {
    active: Mutex<Vec<ActiveFault>>,
    budgets: Mutex<BTreeMap<String, BudgetWindow>>,
    /// Requests parked by `hold` faults right now.
    held: Mutex<u64>,
    /// Bumped by [`Faults::release`]; a parked request waits for the next bump.
    release: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            active: Mutex::default(),
            budgets: Mutex::default(),
            held: Mutex::new(0),
            release: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Faults {
    /// Adds a fault.
    pub fn inject(&self, spec: FaultSpec) {
        let remaining = match (spec.count, spec.rate) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        };
        lock(&self.active).push(ActiveFault { spec, remaining });
    }

    /// Removes every injected fault.
    pub fn clear(&self) {
        lock(&self.active).clear();
    }

    /// The faults still armed.
    pub fn list(&self) -> Vec<FaultSpec> {
        lock(&self.active)
            .iter()
            .map(|f| {
                let mut spec = f.spec.clone();
                spec.count = f.remaining;
                spec
            })
            .collect()
    }

    /// The fault, if any, for this request; counts it down.
    pub fn take(&self, method: &str, path: &str, vault: &str) -> Option<Fault> {
        let mut active = lock(&self.active);
        let mut chosen = None;
        for fault in active.iter_mut() {
            if !fault.spec.matches(method, path, vault) {
                continue;
            }
            if let Some(rate) = fault.spec.rate
                && fault.remaining.is_none()
                && rand::random::<f64>() >= rate
            {
                continue;
            }
            if let Some(n) = fault.remaining.as_mut() {
                if *n == 0 {
                    continue;
                }
                *n -= 1;
            }
            chosen = Some(Fault {
                kind: fault.spec.kind,
                retry_after: fault.spec.retry_after.unwrap_or(1),
                delay_ms: fault.spec.delay_ms.unwrap_or(1_000),
            });
            break;
        }
        active.retain(|f| f.remaining != Some(0));
        chosen
    }

    /// Counts a request against `vault`'s budget of `budget` per 10 s; `Some(seconds)` to wait
    /// when it is spent.
    pub fn spend_budget(&self, vault: &str, budget: u32, now_ms: i64) -> Option<u64> {
        let mut budgets = lock(&self.budgets);
        let window = budgets.entry(vault.to_string()).or_default();
        if now_ms >= window.start_ms + BUDGET_WINDOW_MS || now_ms < window.start_ms {
            *window = BudgetWindow {
                start_ms: now_ms,
                count: 0,
            };
        }
        if window.count >= budget {
            let wait_ms = window.start_ms + BUDGET_WINDOW_MS - now_ms;
            return Some(u64::try_from(wait_ms.max(1)).unwrap_or(1).div_ceil(1000));
        }
        window.count += 1;
        None
    }

    /// Forgets every budget window.
    pub fn reset_budgets(&self) {
        lock(&self.budgets).clear();
    }

    /// Parks the calling request until the next [`Faults::release`], or `at_most` passes.
    /// It counts as held from the moment this is called, so a test that sees it held and
    /// then releases it never misses it.
    pub async fn hold(&self, at_most: std::time::Duration) {
        let mut released = self.release.subscribe();
        *lock(&self.held) += 1;
        let _ = tokio::time::timeout(at_most, released.changed()).await;
        let mut held = lock(&self.held);
        *held = held.saturating_sub(1);
    }

    /// How many requests are parked by `hold` faults.
    pub fn held(&self) -> u64 {
        *lock(&self.held)
    }

    /// Lets every parked request go on; answers how many were parked.
    pub fn release(&self) -> u64 {
        let held = self.held();
        self.release.send_modify(|generation| *generation += 1);
        held
    }
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    /// Emulator clock, Unix ms.
    pub at_ms: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// The vault the host named, if any.
    pub vault: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    /// The injected fault that answered, if any (`throttle`, `budget`, `drop`, ...).
    pub fault: Option<String>,
    /// The principal of the token, if any.
    pub principal: Option<String>,
}

/// The request journal: the last entries, oldest first.
#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<VecDeque<JournalEntry>>,
    next: Mutex<u64>,
}

/// Most entries kept.
pub const JOURNAL_CAPACITY: usize = 100_000;

impl Journal {
    /// Appends an entry (its `seq` is assigned here).
    pub fn record(&self, mut entry: JournalEntry) {
        let mut next = lock(&self.next);
        *next += 1;
        entry.seq = *next;
        let mut entries = lock(&self.entries);
        if entries.len() >= JOURNAL_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Every entry kept, oldest first.
    pub fn entries(&self) -> Vec<JournalEntry> {
        lock(&self.entries).iter().cloned().collect()
    }

    /// Empties the journal.
    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// A principal's permissions per kind, Azure access-policy style (`get`, `list`, `set`,
/// `delete`, `recover`, `backup`, `restore`, `purge`, `create`, `import`, `update`, `sign` ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessPolicy {
    #[serde(default)]
    pub secrets: BTreeSet<String>,
    #[serde(default)]
    pub keys: BTreeSet<String>,
    #[serde(default)]
    pub certificates: BTreeSet<String>,
}

impl AccessPolicy {
    /// True when `permission` on `kind` is granted (`all` grants everything).
    pub fn allows(&self, kind: Kind, permission: &str) -> bool {
        let set = match kind {
            Kind::Secret => &self.secrets,
            Kind::Key => &self.keys,
            Kind::Certificate => &self.certificates,
        };
        set.iter()
            .any(|p| p.eq_ignore_ascii_case(permission) || p.eq_ignore_ascii_case("all"))
    }
}

/// Access policies by (vault, principal); a principal without one may do everything.
#[derive(Debug, Default)]
pub struct Permissions {
    policies: Mutex<BTreeMap<(String, String), AccessPolicy>>,
}

impl Permissions {
    /// Sets the policy of `principal` on `vault` (lower-cased name).
    pub fn set(&self, vault: &str, principal: &str, policy: AccessPolicy) {
        lock(&self.policies).insert(
            (vault.to_ascii_lowercase(), principal.to_ascii_lowercase()),
            policy,
        );
    }

    /// Removes every policy.
    pub fn clear(&self) {
        lock(&self.policies).clear();
    }

    /// The policy of `principal` on `vault`, if one was set.
    pub fn policy(&self, vault: &str, principal: &str) -> Option<AccessPolicy> {
        lock(&self.policies)
            .get(&(vault.to_ascii_lowercase(), principal.to_ascii_lowercase()))
            .cloned()
    }
}

/// The permission a vault request needs: the kind and Azure's access-policy name, from the
/// method and path. `None` for paths outside the three collections.
pub fn required_permission(method: &str, path: &str) -> Option<(Kind, &'static str)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let collection = segments.first().copied()?.to_ascii_lowercase();
    let (kind, deleted) = match collection.as_str() {
        "secrets" => (Kind::Secret, false),
        "keys" => (Kind::Key, false),
        "certificates" => (Kind::Certificate, false),
        "deletedsecrets" => (Kind::Secret, true),
        "deletedkeys" => (Kind::Key, true),
        "deletedcertificates" => (Kind::Certificate, true),
        _ => return None,
    };
    let rest: Vec<String> = segments[1..]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let method = method.to_ascii_uppercase();
    let permission = if deleted {
        match (method.as_str(), rest.len(), rest.last().map(String::as_str)) {
            ("GET", 0, _) => "list",
            ("GET", _, _) => "get",
            ("DELETE", _, _) => "purge",
            (_, _, Some("recover")) => "recover",
            _ => "get",
        }
    } else {
        let last = rest.last().map(String::as_str);
        match (method.as_str(), rest.len(), last) {
            ("GET", 0, _) => "list",
            ("POST", 1, Some("restore")) => "restore",
            (_, 1, Some("contacts")) => "managecontacts",
            ("GET", _, _) if rest.first().map(String::as_str) == Some("issuers") => "getissuers",
            (_, _, _) if rest.first().map(String::as_str) == Some("issuers") => "setissuers",
            ("GET", 2, Some("versions")) => "list",
            ("POST", 2, Some("backup")) => "backup",
            ("POST", 2, Some("create")) => "create",
            ("POST", 2, Some("import")) => "import",
            ("POST", 2, Some("rotate")) => "rotate",
            ("GET", 2, Some("rotationpolicy")) => "getrotationpolicy",
            ("PUT", 2, Some("rotationpolicy")) => "setrotationpolicy",
            ("GET", 2, Some("policy")) => "get",
            ("PATCH", 2, Some("policy")) => "update",
            ("GET", 2, Some("pending")) => "get",
            (_, 2, Some("pending")) => "update",
            ("POST", 3, Some(op)) | ("POST", 2, Some(op)) => match op {
                "sign" => "sign",
                "verify" => "verify",
                "encrypt" => "encrypt",
                "decrypt" => "decrypt",
                "wrapkey" => "wrapKey",
                "unwrapkey" => "unwrapKey",
                "release" => "release",
                _ => "update",
            },
            ("GET", _, _) => "get",
            ("PUT", _, _) if kind == Kind::Key => "import",
            ("PUT", _, _) => "set",
            ("PATCH", _, _) if kind == Kind::Secret => "set",
            ("PATCH", _, _) => "update",
            ("DELETE", _, _) => "delete",
            _ => "get",
        }
    };
    Some((kind, permission))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_azure_access_policy_names() {
        assert_eq!(
            required_permission("GET", "/secrets"),
            Some((Kind::Secret, "list"))
        );
        assert_eq!(
            required_permission("GET", "/secrets/a/"),
            Some((Kind::Secret, "get"))
        );
        assert_eq!(
            required_permission("PUT", "/secrets/a"),
            Some((Kind::Secret, "set"))
        );
        assert_eq!(
            required_permission("POST", "/secrets/a/backup"),
            Some((Kind::Secret, "backup"))
        );
        assert_eq!(
            required_permission("POST", "/secrets/restore"),
            Some((Kind::Secret, "restore"))
        );
        assert_eq!(
            required_permission("DELETE", "/deletedsecrets/a"),
            Some((Kind::Secret, "purge"))
        );
        assert_eq!(
            required_permission("POST", "/keys/k/v1/sign"),
            Some((Kind::Key, "sign"))
        );
        assert_eq!(required_permission("GET", "/_emulator/journal"), None);
    }

    #[tokio::test]
    async fn a_held_request_goes_on_when_released_not_before() {
        let faults = std::sync::Arc::new(Faults::default());
        // A release with nothing parked lets nothing through later.
        assert_eq!(faults.release(), 0);
        let parked = {
            let faults = faults.clone();
            tokio::spawn(async move { faults.hold(std::time::Duration::from_secs(600)).await })
        };
        while faults.held() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!parked.is_finished(), "still parked");
        assert_eq!(faults.release(), 1);
        parked.await.expect("released");
        assert_eq!(faults.held(), 0);
    }

    #[test]
    fn counted_faults_run_out_and_budget_refills() {
        let faults = Faults::default();
        faults.inject(FaultSpec {
            kind: FaultKind::Throttle,
            count: Some(2),
            rate: None,
            method: Some("GET".into()),
            path: Some("/secrets/*".into()),
            vault: None,
            retry_after: Some(3),
            delay_ms: None,
        });
        assert_eq!(faults.take("PUT", "/secrets/a", "v"), None);
        assert_eq!(
            faults.take("GET", "/secrets/a", "v").map(|f| f.retry_after),
            Some(3)
        );
        assert!(faults.take("GET", "/secrets/a", "v").is_some());
        assert_eq!(faults.take("GET", "/secrets/a", "v"), None);

        assert_eq!(faults.spend_budget("v", 2, 0), None);
        assert_eq!(faults.spend_budget("v", 2, 1), None);
        assert_eq!(faults.spend_budget("v", 2, 2_500), Some(8));
        assert_eq!(faults.spend_budget("v", 2, 10_000), None);
    }

    #[test]
    fn fault_flags_parse_every_setting_and_refuse_nonsense() {
        let spec = FaultSpec::parse("lost,count=1,method=put,path=/secrets/*,vault=main").unwrap();
        assert_eq!(spec.kind, FaultKind::Lost);
        assert_eq!(spec.count, Some(1));
        assert_eq!(spec.method.as_deref(), Some("PUT"));
        assert_eq!(spec.path.as_deref(), Some("/secrets/*"));
        assert_eq!(spec.vault.as_deref(), Some("main"));
        let spec = FaultSpec::parse("throttle,rate=0.1,retry-after=3").unwrap();
        assert_eq!((spec.rate, spec.retry_after), (Some(0.1), Some(3)));
        assert_eq!(
            FaultSpec::parse("delay,delay-ms=250").unwrap().delay_ms,
            Some(250)
        );
        for bad in [
            "explode",
            "lost,count=x",
            "lost,rate=2",
            "lost,colour=red",
            "lost,count",
        ] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
