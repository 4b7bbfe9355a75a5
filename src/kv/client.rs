//! The KV v2 client: signs in (token or AppRole), checks the server and the mount, and reads
//! and writes secrets over the HTTP API, on the crate's one HTTP stack
//! (`vault::transport::build_http_client_with`: rustls with ring, platform roots plus
//! `VAULT_CACERT`, no redirects, connect and request time limits).
//!
//! Why no Vault client crate: the maintained Rust clients (`vaultrs` and the crates it builds
//! on) set up their own HTTP client and TLS (reqwest with native-tls or a rustls of its own
//! configuration, not this build's ring provider and `VAULT_CACERT` roots), follow redirects
//! by default (reqwest keeps a custom `X-Vault-Token` header across hosts, so a redirect would
//! carry the token away), and cover hundreds of endpoints where coldvault needs a dozen. The
//! KV v2 API is plain JSON over HTTP; speaking it on the engine's own client keeps one crypto
//! stack, one trust store and one retry discipline, and adds no crate.
//!
//! Requests: every one carries `X-Vault-Token` (marked sensitive, so never logged) and, with
//! a namespace, `X-Vault-Namespace`. A request is retried after a connection failure, 412,
//! 429, 500, 502 and 504, with growing, jittered pauses, until the request's time limit; 503
//! means sealed or standby and is reported, not retried blindly. Path segments are
//! percent-encoded, since KV paths may hold spaces and any other character. Error messages
//! are one line, name the host (and the mount or path), and never carry a token or a value;
//! the server's own error text is included (it names paths and reasons, never data).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use age::secrecy::{ExposeSecret, SecretString};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use zeroize::Zeroize;

use super::{KvAddress, KvData, KvSecret, KvSnapshot, KvVersion};
use crate::vault::pacing::RequestStats;
use crate::vault::transport::{self, NetworkCause};

/// How to sign in.
#[derive(Clone)]
pub enum KvAuth {
    /// A token (`VAULT_TOKEN`, else `BAO_TOKEN`).
    Token(SecretString),
    /// AppRole (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`), logged in at `auth/approle/login`
    /// (`VAULT_APPROLE_MOUNT` names another auth mount).
    AppRole {
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: SecretString,
        /// The auth mount (`approle`).
        mount: String,
    },
}

impl std::fmt::Debug for KvAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvAuth::Token(_) => f.write_str("KvAuth::Token([redacted])"),
            KvAuth::AppRole { role_id, mount, .. } => write!(
                f,
                "KvAuth::AppRole {{ role_id: {role_id}, mount: {mount}, secret_id: [redacted] }}"
            ),
        }
    }
}

/// Connection settings besides the credential.
#[derive(Debug, Clone)]
pub struct KvOptions {
    /// `VAULT_NAMESPACE` (Vault Enterprise / OpenBao namespaces): sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `VAULT_CACERT`: extra PEM roots for the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Per-request time limit, retries included (`--timeout`).
    pub timeout: Duration,
}

/// What went wrong talking to a KV server. `Display` is one line without secrets; `hint`
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct KvError {
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// Which failure this is.
    pub kind: KvErrorKind,
}

/// Failure classes callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvErrorKind {
    /// No credential in the environment.
    NoCredential,
    /// 403 permission denied (bad or expired token, or a policy without this path).
    PermissionDenied,
    /// The server is sealed (503).
    Sealed,
    /// The mount does not exist or is not KV version 2.
    NoMount,
    /// 404 on a secret or version.
    NotFound,
    /// A check-and-set write found another version: a concurrent change.
    CasMismatch,
    /// The server could not be reached or timed out.
    Network,
    /// Anything else the server refused.
    Other,
}

impl KvError {
    /// A concurrent change made a check-and-set write fail.
    pub fn is_cas_mismatch(&self) -> bool {
        self.kind == KvErrorKind::CasMismatch
    }

    /// The secret or version does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == KvErrorKind::NotFound
    }
}

/// A metadata write: `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    /// `custom_metadata` (replaces the whole map when set).
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// `max_versions`.
    pub max_versions: Option<u64>,
    /// `cas_required`.
    pub cas_required: Option<bool>,
    /// `delete_version_after`.
    pub delete_version_after: Option<String>,
}

impl KvError {
    fn new(kind: KvErrorKind, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            status: None,
            kind,
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// The first non-empty value of the variables, in order, with the name it came from.
fn first_set(
    lookup: &impl Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| (*name, v))
    })
}

impl KvAuth {
    /// The credential from the environment (`lookup` reads a variable): `VAULT_TOKEN`, else
    /// `BAO_TOKEN`, else AppRole from `VAULT_ROLE_ID` and `VAULT_SECRET_ID` (or `BAO_ROLE_ID`
    /// and `BAO_SECRET_ID`), logged in at the auth mount `VAULT_APPROLE_MOUNT` (default
    /// `approle`). Nothing set, or only one half of AppRole, is a
    /// [`KvErrorKind::NoCredential`] naming the variables.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, KvError> {
        if let Some((_, token)) = first_set(&lookup, &["VAULT_TOKEN", "BAO_TOKEN"]) {
            return Ok(KvAuth::Token(SecretString::from(token)));
        }
        let role = first_set(&lookup, &["VAULT_ROLE_ID", "BAO_ROLE_ID"]);
        let secret = first_set(&lookup, &["VAULT_SECRET_ID", "BAO_SECRET_ID"]);
        match (role, secret) {
            (Some((_, role_id)), Some((_, secret_id))) => {
                let mount = first_set(&lookup, &["VAULT_APPROLE_MOUNT", "BAO_APPROLE_MOUNT"])
                    .map_or_else(|| "approle".to_owned(), |(_, m)| {
                        m.trim_matches('/').to_owned()
                    });
                Ok(KvAuth::AppRole {
                    role_id,
                    secret_id: SecretString::from(secret_id),
                    mount,
                })
            }
            (Some((name, _)), None) => {
                let missing = name.replace("ROLE_ID", "SECRET_ID");
                Err(KvError::new(
                    KvErrorKind::NoCredential,
                    format!("{name} is set but {missing} is not: AppRole needs both"),
                )
                .with_hint(format!(
                    "set {missing} to the AppRole's secret id, or give a token in VAULT_TOKEN"
                )))
            }
            (None, Some((name, _))) => {
                let missing = name.replace("SECRET_ID", "ROLE_ID");
                Err(KvError::new(
                    KvErrorKind::NoCredential,
                    format!("{name} is set but {missing} is not: AppRole needs both"),
                )
                .with_hint(format!(
                    "set {missing} to the AppRole's role id, or give a token in VAULT_TOKEN"
                )))
            }
            (None, None) => Err(KvError::new(
                KvErrorKind::NoCredential,
                "no credential for the KV server: VAULT_TOKEN, BAO_TOKEN and VAULT_ROLE_ID/VAULT_SECRET_ID are all unset",
            )
            .with_hint(
                "set VAULT_TOKEN (or BAO_TOKEN) to a token, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole",
            )),
        }
    }
}

impl KvOptions {
    /// `VAULT_NAMESPACE` and `VAULT_CACERT` (also `BAO_NAMESPACE`, `BAO_CACERT`) from the
    /// environment, with `timeout`. Empty variables count as unset.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>, timeout: Duration) -> Self {
        Self {
            namespace: first_set(&lookup, &["VAULT_NAMESPACE", "BAO_NAMESPACE"])
                .map(|(_, ns)| ns.trim_matches('/').to_owned())
                .filter(|ns| !ns.is_empty()),
            ca_cert: first_set(&lookup, &["VAULT_CACERT", "BAO_CACERT"])
                .map(|(_, path)| PathBuf::from(path)),
            timeout,
        }
    }
}

/// How many folders `list` reads at once.
const LIST_CONCURRENCY: usize = 8;
/// How many versions of one secret `read_secret` reads at once.
const VERSION_CONCURRENCY: usize = 4;
/// The first pause before a retry; it doubles with each retry up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries (a `Retry-After` may ask for more, within the limit).
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// The longest server error text kept in a message.
const MAX_SERVER_TEXT: usize = 300;

/// The HTTP side of a client: one pooled reqwest client, the server, the headers every
/// request carries.
struct Connection {
    http: reqwest::Client,
    /// `https://HOST:PORT/`.
    server: url::Url,
    /// `HOST:PORT`, for messages.
    host: String,
    /// `OpenBao` or `Vault`, for messages.
    product: &'static str,
    /// The product's command (`bao`, `vault`), for hints.
    cli: &'static str,
    namespace: Option<HeaderValue>,
    /// Set once signed in; marked sensitive so no log or `Debug` shows it.
    token: Option<HeaderValue>,
    timeout: Duration,
    /// Every attempt and how it ended, for the summaries (`requests_from`, `throttled`).
    counters: Counters,
}

/// What this connection sent and got back, counted per attempt (retries included).
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A server's answer: its status and JSON body (`Null` when empty or not JSON).
struct Answer {
    status: u16,
    body: Value,
    /// An earlier try of this request may have reached the server without its answer coming
    /// back (a dropped connection, a 5xx from a proxy): a write may have been applied.
    uncertain: bool,
}

impl Answer {
    /// The server's `errors` joined on one line, shortened.
    fn errors(&self) -> String {
        server_errors(&self.body)
    }
}

fn server_errors(body: &Value) -> String {
    let joined = body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let mut line: String = joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > MAX_SERVER_TEXT {
        line = line.chars().take(MAX_SERVER_TEXT).collect::<String>() + "…";
    }
    line
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved characters.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A slash-separated path with each segment encoded. `.` and `..` segments are refused: URL
/// parsing would resolve them (even encoded) and the request would name another path.
fn encode_path(path: &str) -> Result<String, KvError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(KvError::new(
            KvErrorKind::Other,
            format!("'{path}' has a '.' or '..' segment, which a KV path cannot address"),
        ));
    }
    Ok(segments
        .iter()
        .map(|s| encode_segment(s))
        .collect::<Vec<_>>()
        .join("/"))
}

/// Answers worth the same request again: 429 (rate limited), 500, 502, 504 (a server or proxy
/// failure that may pass), and 412, which Vault's performance standbys send when they have
/// not caught up with a write yet (Vault's own client retries it). 503 is not among them: it
/// means sealed or standby, which waiting within one request does not fix.
fn is_transient(status: u16) -> bool {
    matches!(status, 412 | 429 | 500 | 502 | 504)
}

/// `Retry-After` in seconds, when present.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The pause before retry number `retry` (1, 2, …): doubling from [`FIRST_PAUSE`], capped at
/// [`MAX_PAUSE`], with up to half of it again as jitter so clients retrying together spread
/// out; never less than the server's `Retry-After`.
fn pause_before(retry: u32, retry_after: Option<Duration>) -> Duration {
    use rand::Rng as _;
    let doubled = FIRST_PAUSE.saturating_mul(1 << retry.saturating_sub(1).min(5));
    let base = doubled.min(MAX_PAUSE);
    let jitter = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 2);
    let pause = base + Duration::from_millis(jitter);
    retry_after.map_or(pause, |wait| wait.max(pause))
}

impl Connection {
    /// `v1/` + `api_path` on the server; `api_path` is already encoded.
    fn url(&self, api_path: &str) -> Result<url::Url, KvError> {
        self.server.join(&format!("v1/{api_path}")).map_err(|e| {
            KvError::new(
                KvErrorKind::Other,
                format!("cannot build a request URL on {}: {e}", self.host),
            )
        })
    }

    /// Sends one request, retrying connection failures, 429, 500, 502 and 504 until the time
    /// limit. `what` names the request in messages (`list 'secret/app/'`). `namespaced`:
    /// whether `X-Vault-Namespace` goes with it (the seal status lives outside namespaces).
    async fn send(
        &self,
        method: Method,
        api_path: &str,
        query: Option<(&str, &str)>,
        body: Option<Bytes>,
        namespaced: bool,
        what: &str,
    ) -> Result<Answer, KvError> {
        let mut url = self.url(api_path)?;
        if let Some((key, value)) = query {
            url.query_pairs_mut().append_pair(key, value);
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut uncertain = false;
        let mut retry = 0u32;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(token) = &self.token {
                request = request.header("X-Vault-Token", token.clone());
            }
            if namespaced && let Some(namespace) = &self.namespace {
                request = request.header("X-Vault-Namespace", namespace.clone());
            }
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            tracing::debug!("{method} {}/v1/{api_path}: try {}", self.host, retry + 1);
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The body is read inside the time limit too: a server that stalls mid-answer
            // is a failed try like one that never answers.
            let attempt = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let wait = retry_after(&response);
                let text = response.text().await?;
                Ok::<_, reqwest::Error>((status, wait, text))
            };
            Counters::bump(&self.counters.requests);
            let (failure, wait_at_least) = match tokio::time::timeout(remaining, attempt).await {
                Err(_) => {
                    Counters::bump(&self.counters.transport_errors);
                    uncertain = true;
                    (NetworkCause::TimedOut, None)
                }
                Ok(Err(err)) => {
                    Counters::bump(&self.counters.transport_errors);
                    let cause = transport::classify(&err)
                        .unwrap_or_else(|| NetworkCause::Other(transport::error_chain(&err)));
                    if cause.is_final() {
                        return Err(self.network_error(what, &cause, None));
                    }
                    // The request may have reached the server before the connection failed.
                    uncertain = true;
                    (cause, None)
                }
                Ok(Ok((status, wait, mut text))) => {
                    tracing::debug!("{method} {}/v1/{api_path}: HTTP {status}", self.host);
                    match status {
                        429 => Counters::bump(&self.counters.throttled),
                        500.. => Counters::bump(&self.counters.server_errors),
                        _ => {}
                    }
                    if is_transient(status) {
                        let next = pause_before(retry + 1, wait);
                        if Instant::now() + next < deadline {
                            text.zeroize();
                            // A 429 or 412 was refused before any work; a 5xx may be a
                            // proxy's answer to a request the server did apply.
                            uncertain |= status >= 500;
                            retry += 1;
                            tokio::time::sleep(next).await;
                            continue;
                        }
                    }
                    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                    // The text may hold secret values or a token: wiped, as the parsed
                    // values are when their `KvData` drops.
                    text.zeroize();
                    return Ok(Answer {
                        status,
                        body,
                        uncertain,
                    });
                }
            };
            retry += 1;
            let next = pause_before(retry, wait_at_least);
            if Instant::now() + next >= deadline {
                return Err(self.network_error(what, &failure, Some(started.elapsed())));
            }
            tracing::debug!(
                "{method} {}/v1/{api_path}: {failure}; retrying in {} ms",
                self.host,
                next.as_millis()
            );
            tokio::time::sleep(next).await;
        }
    }

    fn network_error(
        &self,
        what: &str,
        cause: &NetworkCause,
        gave_up_after: Option<Duration>,
    ) -> KvError {
        let after = gave_up_after
            .map(|d| format!(" (gave up after {})", transport::format_duration(d)))
            .unwrap_or_default();
        let hint = match cause {
            NetworkCause::UntrustedCertificate(_) => {
                "give the CA that issued the server's certificate in VAULT_CACERT (or BAO_CACERT)"
                    .to_owned()
            }
            _ => format!(
                "check the address and that the {} server is running and reachable from here",
                self.product
            ),
        };
        KvError::new(
            KvErrorKind::Network,
            format!(
                "cannot reach the {} server at {} ({what}): {cause}{after}",
                self.product, self.host
            ),
        )
        .with_hint(hint)
    }

    /// The error for an answer the caller did not expect; `what` names the request in the
    /// message (`read the metadata of 'secret/app/db'`).
    fn error(&self, answer: &Answer, what: &str) -> KvError {
        let status = answer.status;
        let server = answer.errors();
        let said = if server.is_empty() {
            String::new()
        } else {
            format!(": {server}")
        };
        let (kind, hint) = match status {
            403 => (
                KvErrorKind::PermissionDenied,
                format!(
                    "check that the token's policy grants this path ({} token capabilities PATH)",
                    self.cli
                ),
            ),
            404 => (KvErrorKind::NotFound, String::new()),
            503 if server.to_ascii_lowercase().contains("sealed") => {
                return self.sealed();
            }
            503 => (
                KvErrorKind::Other,
                format!(
                    "the {} server is unavailable (a standby node or maintenance): try the active node",
                    self.product
                ),
            ),
            _ => (KvErrorKind::Other, String::new()),
        };
        let mut err = KvError::new(
            kind,
            format!(
                "the {} server at {} refused to {what} (HTTP {status}){said}",
                self.product, self.host
            ),
        )
        .with_status(status);
        if !hint.is_empty() {
            err = err.with_hint(hint);
        }
        err
    }

    fn sealed(&self) -> KvError {
        KvError::new(
            KvErrorKind::Sealed,
            format!("the {} server at {} is sealed", self.product, self.host),
        )
        .with_status(503)
        .with_hint(format!(
            "unseal it ({} operator unseal) and run again",
            self.cli
        ))
    }
}

/// A signed-in connection to one KV v2 mount. Cheap to clone; every method may run
/// concurrently with any other. Transient failures (connection resets, 412, 429, 500, 502,
/// 504) are retried with backoff within the request time limit.
#[derive(Clone)]
pub struct KvClient {
    address: KvAddress,
    connection: Arc<Connection>,
}

impl fmt::Debug for KvClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvClient({})", self.address)
    }
}

/// `GET metadata/PATH`'s `data`, as OpenBao 2.x and Vault 1.x write it; unknown fields
/// (`current_metadata_version`, `metadata_cas_required`) are ignored.
#[derive(Deserialize)]
struct MetadataBody {
    #[serde(default)]
    cas_required: bool,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    delete_version_after: Option<String>,
    #[serde(default)]
    max_versions: u64,
    #[serde(default)]
    oldest_version: u64,
    #[serde(default)]
    updated_time: Option<String>,
    #[serde(default)]
    versions: BTreeMap<String, VersionBody>,
}

/// One entry of the metadata's `versions` map, or a data read's `metadata`.
#[derive(Deserialize)]
struct VersionBody {
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    deletion_time: Option<String>,
    #[serde(default)]
    destroyed: bool,
}

/// An RFC 3339 time (Vault writes nanoseconds); `""` or unparseable is none.
fn parse_time(text: Option<&str>) -> Option<OffsetDateTime> {
    text.filter(|t| !t.is_empty())
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// A version's `deletion_time` as a deletion that happened: with `delete_version_after`, the
/// server writes the time a live version *will* be deleted, which is no deletion yet.
fn parse_deletion(text: Option<&str>, now: OffsetDateTime) -> Option<OffsetDateTime> {
    parse_time(text).filter(|t| *t <= now)
}

/// The secret described by a metadata answer, versions ascending and without data yet.
fn secret_from_metadata(path: &str, body: MetadataBody, now: OffsetDateTime) -> KvSecret {
    let mut versions: Vec<KvVersion> = body
        .versions
        .into_iter()
        .filter_map(|(number, v)| {
            Some(KvVersion {
                version: number.parse().ok()?,
                created: parse_time(v.created_time.as_deref()),
                deleted: parse_deletion(v.deletion_time.as_deref(), now),
                destroyed: v.destroyed,
                data: None,
            })
        })
        .collect();
    versions.sort_by_key(|v| v.version);
    // The server says 0 until `max_versions` first pruned a version; the model means "the
    // oldest version still kept".
    let oldest_version = if body.oldest_version > 0 {
        body.oldest_version
    } else {
        versions.first().map_or(0, |v| v.version)
    };
    KvSecret {
        path: path.to_owned(),
        custom_metadata: body.custom_metadata.unwrap_or_default(),
        current_version: body.current_version,
        oldest_version,
        max_versions: body.max_versions,
        cas_required: body.cas_required,
        delete_version_after: body.delete_version_after.unwrap_or_default(),
        created: parse_time(body.created_time.as_deref()),
        updated: parse_time(body.updated_time.as_deref()),
        versions,
    }
}

/// The data of a version read: `data.data` moved out of the body (no copy of the values).
fn take_data(body: &mut Value) -> Option<KvData> {
    match body["data"]["data"].take() {
        Value::Object(map) => Some(KvData(map.into_iter().collect())),
        _ => None,
    }
}

/// What a data read found.
enum VersionRead {
    Live(KvData),
    /// Deleted or destroyed since the metadata was read (the answer says which).
    Gone {
        deleted: Option<OffsetDateTime>,
        destroyed: bool,
    },
    /// No such version any more (pruned, or the secret's metadata deleted).
    Missing,
}

/// A version answered without data: its metadata says whether it was deleted or destroyed
/// (`Missing` when the answer has none).
fn gone_version(body: &mut Value) -> VersionRead {
    let meta: Option<VersionBody> = serde_json::from_value(body["data"]["metadata"].take()).ok();
    match meta {
        Some(meta) => VersionRead::Gone {
            deleted: parse_deletion(meta.deletion_time.as_deref(), OffsetDateTime::now_utc()),
            destroyed: meta.destroyed,
        },
        None => VersionRead::Missing,
    }
}

impl KvClient {
    /// Signs in (AppRole logs in), checks the server is unsealed and that the address's
    /// mount is a KV version 2 mount (resolving a nested mount), and returns the client.
    /// Each failure is one [`KvError`]: bad token, sealed, missing or wrong-kind mount.
    pub async fn connect(
        address: &KvAddress,
        auth: KvAuth,
        options: KvOptions,
    ) -> Result<Self, KvError> {
        let server = address.server().clone();
        let host = match (server.host_str(), server.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => server.to_string(),
        };
        let product = address.flavor().product();
        let cli = match address.flavor() {
            super::Flavor::Bao => "bao",
            super::Flavor::Vault => "vault",
        };
        let http = transport::build_http_client_with(options.ca_cert.as_deref(), options.timeout)
            .map_err(|e| {
            KvError::new(KvErrorKind::Other, e.to_string()).with_hint(
                "VAULT_CACERT (or BAO_CACERT) must name a readable PEM file of CA certificates",
            )
        })?;
        let namespace = match &options.namespace {
            Some(ns) => Some(HeaderValue::from_str(ns).map_err(|_| {
                KvError::new(
                    KvErrorKind::Other,
                    "VAULT_NAMESPACE holds characters an HTTP header cannot carry",
                )
            })?),
            None => None,
        };
        let mut connection = Connection {
            http,
            server,
            host,
            product,
            cli,
            namespace,
            token: None,
            timeout: options.timeout,
            counters: Counters::default(),
        };

        // Sealed first: a sealed server answers 503 to everything else, and "sealed" is what
        // the operator must hear.
        let seal = connection
            .send(
                Method::GET,
                "sys/seal-status",
                None,
                None,
                false,
                "report its seal status",
            )
            .await?;
        if seal.body["sealed"].as_bool() == Some(true) {
            return Err(connection.sealed());
        }
        if seal.status == 503 {
            return Err(connection.error(&seal, "report its seal status"));
        }
        if seal.status != 200 {
            return Err(KvError::new(
                KvErrorKind::Other,
                format!(
                    "{} does not answer as a {product} server (sys/seal-status: HTTP {})",
                    connection.host, seal.status
                ),
            )
            .with_status(seal.status)
            .with_hint("check the address: it names the server's API port (8200 by default)"));
        }

        let (token, from_approle) = match auth {
            KvAuth::Token(token) => (token, false),
            KvAuth::AppRole {
                role_id,
                secret_id,
                mount,
            } => (
                login_approle(&connection, &role_id, &secret_id, &mount).await?,
                true,
            ),
        };
        let mut header = HeaderValue::from_str(token.expose_secret()).map_err(|_| {
            KvError::new(
                KvErrorKind::NoCredential,
                "the token holds characters an HTTP header cannot carry",
            )
            .with_hint("check VAULT_TOKEN (or BAO_TOKEN): a token is one line of printable text")
        })?;
        header.set_sensitive(true);
        connection.token = Some(header);

        let denied = || {
            let hint = if from_approle {
                "the token AppRole issued was refused: check the role's token policies and TTL"
                    .to_owned()
            } else {
                "check VAULT_TOKEN (or BAO_TOKEN): it may be mistyped, expired, revoked, or for another server or namespace".to_owned()
            };
            KvError::new(
                KvErrorKind::PermissionDenied,
                format!(
                    "the {product} server at {} refused the token (permission denied)",
                    connection.host
                ),
            )
            .with_status(403)
            .with_hint(hint)
        };

        // A bad token is told apart from a missing mount here: the dev server answers a
        // mount lookup for a missing mount with a 403 too. A token made without the default
        // policy cannot look itself up, so a 403 here is confirmed by the mount lookup below.
        let lookup = connection
            .send(
                Method::GET,
                "auth/token/lookup-self",
                None,
                None,
                true,
                "look up the token",
            )
            .await?;
        let token_verified = match lookup.status {
            200 => true,
            403 => false,
            503 => return Err(connection.error(&lookup, "look up the token")),
            _ => false,
        };

        let full = address.full_path();
        let what = format!("look up the mount '{}'", address.mount());
        let mounts = connection
            .send(
                Method::GET,
                &format!("sys/internal/ui/mounts/{}", encode_path(&full)?),
                None,
                None,
                true,
                &what,
            )
            .await?;
        let first = address.mount();
        let no_mount = || {
            KvError::new(
                KvErrorKind::NoMount,
                format!(
                    "no KV mount at '{first}' on the {product} server at {}",
                    connection.host
                ),
            )
            .with_hint(format!(
                "check the mount in the address ({cli} secrets list shows the mounts) and that the token's policy grants access under it"
            ))
        };
        let mount_data = match mounts.status {
            200 => &mounts.body["data"],
            403 if mounts.errors().contains("preflight capability check") => {
                // Only a valid token gets this far (a bad one is plainly "permission
                // denied"): the path lies in no mount the token may see.
                return Err(no_mount().with_status(403));
            }
            403 if token_verified => {
                return Err(KvError::new(
                    KvErrorKind::PermissionDenied,
                    format!(
                        "the {product} server at {} refused to {what} (permission denied)",
                        connection.host
                    ),
                )
                .with_status(403)
                .with_hint(format!(
                    "grant the token's policy access under '{full}' ({cli} token capabilities {full})"
                )));
            }
            403 => return Err(denied()),
            400 | 404 => {
                if !token_verified {
                    return Err(denied());
                }
                return Err(no_mount().with_status(mounts.status));
            }
            _ => return Err(connection.error(&mounts, &what)),
        };
        let mount = mount_data["path"]
            .as_str()
            .unwrap_or_default()
            .trim_matches('/')
            .to_owned();
        let kind = mount_data["type"].as_str().unwrap_or_default();
        let version = match &mount_data["options"]["version"] {
            Value::String(v) => v.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let shown = if mount.is_empty() {
            first
        } else {
            mount.as_str()
        };
        match (kind, version.as_str()) {
            ("kv", "2") => {}
            ("kv" | "generic", _) => {
                return Err(KvError::new(
                    KvErrorKind::NoMount,
                    format!(
                        "'{shown}' is a KV version 1 mount: coldvault reads KV version 2"
                    ),
                )
                .with_hint(format!(
                    "upgrade the mount ({cli} kv enable-versioning {shown}) or name a KV version 2 mount"
                )));
            }
            _ => {
                let kind = if kind.is_empty() { "unknown" } else { kind };
                return Err(KvError::new(
                    KvErrorKind::NoMount,
                    format!("'{shown}' is a {kind} mount, not a KV mount"),
                )
                .with_hint(format!(
                    "name a KV version 2 mount ({cli} secrets list shows each mount's type)"
                )));
            }
        }
        let valid_mount =
            !mount.is_empty() && (full == mount || full.starts_with(&format!("{mount}/")));
        if !valid_mount {
            return Err(KvError::new(
                KvErrorKind::Other,
                format!(
                    "the {product} server at {} resolved '{full}' to the mount '{mount}', which does not contain it",
                    connection.host
                ),
            ));
        }
        Ok(Self {
            address: address.with_mount(&mount),
            connection: Arc::new(connection),
        })
    }

    /// Requests sent so far (every attempt, sign-in and checks included) and how many were
    /// answered 429, 5xx or not at all; the KV client has no rate limit of its own.
    pub fn stats(&self) -> RequestStats {
        let counters = &self.connection.counters;
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestStats {
            requests: read(&counters.requests),
            throttled: read(&counters.throttled),
            server_errors: read(&counters.server_errors),
            transport_errors: read(&counters.transport_errors),
            ..RequestStats::default()
        }
    }

    /// The address, with its mount as the server resolved it.
    pub fn address(&self) -> &KvAddress {
        &self.address
    }

    /// `MOUNT/ENDPOINT/PATH`, encoded.
    fn api_path(&self, endpoint: &str, path: &str) -> Result<String, KvError> {
        let mount = encode_path(self.address.mount())?;
        let path = encode_path(path)?;
        Ok(if path.is_empty() {
            format!("{mount}/{endpoint}/")
        } else {
            format!("{mount}/{endpoint}/{path}")
        })
    }

    /// `secret/app/db`: the mount and a path, for messages.
    fn shown(&self, path: &str) -> String {
        let path = path.trim_matches('/');
        if path.is_empty() {
            self.address.mount().to_owned()
        } else {
            format!("{}/{path}", self.address.mount())
        }
    }

    /// Keys of one folder (`""` for the mount's top): names, folders ending in `/`.
    async fn list_folder(&self, folder: String) -> Result<(String, Vec<String>), KvError> {
        let api = format!(
            "{}/",
            self.api_path("metadata", &folder)?.trim_end_matches('/')
        );
        let what = format!("list '{}/'", self.shown(&folder));
        let mut answer = self
            .connection
            .send(Method::GET, &api, Some(("list", "true")), None, true, &what)
            .await?;
        match answer.status {
            200 => {}
            404 => return Ok((folder, Vec::new())),
            _ => return Err(self.connection.error(&answer, &what)),
        }
        let keys = match answer.body["data"]["keys"].take() {
            Value::Array(keys) => keys
                .into_iter()
                .filter_map(|k| match k {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((folder, keys))
    }

    /// Every secret path under the address's prefix, relative to the mount (`app/db`),
    /// sorted: `LIST metadata/…` followed recursively into every `…/` folder, up to eight
    /// folders at once. A prefix that is itself a secret is included.
    pub async fn list(&self) -> Result<Vec<String>, KvError> {
        let prefix = self.address.prefix().to_owned();
        let mut found = Vec::new();
        if !prefix.is_empty() && self.read_metadata(&prefix).await?.is_some() {
            found.push(prefix.clone());
        }
        let mut pending = vec![prefix];
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < LIST_CONCURRENCY
                && let Some(folder) = pending.pop()
            {
                in_flight.push(self.list_folder(folder));
            }
            let Some(listed) = in_flight.next().await else {
                break;
            };
            let (folder, keys) = listed?;
            for key in keys {
                let full = if folder.is_empty() {
                    key.clone()
                } else {
                    format!("{folder}/{key}")
                };
                match full.strip_suffix('/') {
                    Some(sub) => pending.push(sub.to_owned()),
                    None => found.push(full),
                }
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The metadata of one secret, `None` when there is none.
    async fn read_metadata(&self, path: &str) -> Result<Option<KvSecret>, KvError> {
        let what = format!("read the metadata of '{}'", self.shown(path));
        let mut answer = self
            .connection
            .send(
                Method::GET,
                &self.api_path("metadata", path)?,
                None,
                None,
                true,
                &what,
            )
            .await?;
        match answer.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.connection.error(&answer, &what)),
        }
        let body: MetadataBody =
            serde_json::from_value(answer.body["data"].take()).map_err(|e| {
                KvError::new(
                    KvErrorKind::Other,
                    format!(
                        "the {} server at {} sent metadata for '{}' that cannot be read: {e}",
                        self.connection.product,
                        self.connection.host,
                        self.shown(path)
                    ),
                )
            })?;
        Ok(Some(secret_from_metadata(
            path.trim_matches('/'),
            body,
            OffsetDateTime::now_utc(),
        )))
    }

    /// One version's data.
    async fn read_version(&self, path: &str, version: u64) -> Result<VersionRead, KvError> {
        let what = format!("read version {version} of '{}'", self.shown(path));
        let number = version.to_string();
        let mut answer = self
            .connection
            .send(
                Method::GET,
                &self.api_path("data", path)?,
                Some(("version", &number)),
                None,
                true,
                &what,
            )
            .await?;
        match answer.status {
            200 => match take_data(&mut answer.body) {
                Some(data) => Ok(VersionRead::Live(data)),
                None => Ok(gone_version(&mut answer.body)),
            },
            // A deleted or destroyed version answers 404 with its metadata.
            404 => Ok(gone_version(&mut answer.body)),
            _ => Err(self.connection.error(&answer, &what)),
        }
    }

    /// One secret: its metadata and, for every live version, its data (up to four versions
    /// read at once), versions ascending; `None` when the path holds no secret. A version
    /// deleted or destroyed between the metadata read and its data read is recorded as such;
    /// one that vanished (pruned) is left out; a secret whose metadata vanished is `None`.
    pub async fn read_secret(&self, path: &str) -> Result<Option<KvSecret>, KvError> {
        let path = path.trim_matches('/');
        let Some(mut secret) = self.read_metadata(path).await? else {
            return Ok(None);
        };
        let live: Vec<u64> = secret
            .versions
            .iter()
            .filter(|v| v.is_live())
            .map(|v| v.version)
            .collect();
        let reads: Vec<(u64, VersionRead)> = futures::stream::iter(live)
            .map(|n| async move { self.read_version(path, n).await.map(|r| (n, r)) })
            .buffered(VERSION_CONCURRENCY)
            .try_collect()
            .await?;
        let mut missing = Vec::new();
        for (number, read) in reads {
            let Some(version) = secret.versions.iter_mut().find(|v| v.version == number) else {
                continue;
            };
            match read {
                VersionRead::Live(data) => version.data = Some(data),
                VersionRead::Gone { deleted, destroyed } => {
                    // A deletion time the answer lacks still means deleted: the version
                    // was live in the metadata and its data is gone.
                    version.deleted = deleted.or(if destroyed {
                        None
                    } else {
                        Some(OffsetDateTime::now_utc())
                    });
                    version.destroyed = destroyed;
                }
                VersionRead::Missing => missing.push(number),
            }
        }
        if !missing.is_empty() {
            if self.read_metadata(path).await?.is_none() {
                return Ok(None);
            }
            secret.versions.retain(|v| !missing.contains(&v.version));
        }
        Ok(Some(secret))
    }

    /// Every secret under the address, read with up to `concurrency` requests at once (at
    /// least one), sorted by path. A secret deleted between the list and its read is left out.
    pub async fn read_all(&self, concurrency: usize) -> Result<KvSnapshot, KvError> {
        let paths = self.list().await?;
        let mut secrets: Vec<KvSecret> = futures::stream::iter(paths)
            .map(|path| async move { self.read_secret(&path).await })
            .buffer_unordered(concurrency.max(1))
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        secrets.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(KvSnapshot {
            address: self.address.clone(),
            secrets,
        })
    }

    /// Writes a new version with check-and-set: `cas` is the version the caller saw as
    /// current (0: the secret must not exist yet). Returns the new version number; a
    /// concurrent change is [`KvErrorKind::CasMismatch`]. When an earlier try may have been
    /// applied without its answer arriving, a mismatch is checked by reading version
    /// `cas + 1` back: if it holds exactly `data`, that try did the write and its number is
    /// returned (no duplicate version, no false failure).
    pub async fn write(&self, path: &str, data: &KvData, cas: u64) -> Result<u64, KvError> {
        let path = path.trim_matches('/');
        let what = format!("write '{}'", self.shown(path));
        let body = serde_json::to_vec(&json!({ "data": data, "options": { "cas": cas } }))
            .map_err(|e| KvError::new(KvErrorKind::Other, format!("cannot encode {what}: {e}")))?;
        let mut answer = self
            .connection
            .send(
                Method::POST,
                &self.api_path("data", path)?,
                None,
                Some(Bytes::from(body)),
                true,
                &what,
            )
            .await?;
        match answer.status {
            200 | 204 => answer.body["data"]["version"].as_u64().ok_or_else(|| {
                KvError::new(
                    KvErrorKind::Other,
                    format!(
                        "the {} server at {} accepted the {what} but sent no version number",
                        self.connection.product, self.connection.host
                    ),
                )
            }),
            400 if answer.errors().contains("check-and-set") => {
                answer.body = Value::Null;
                if answer.uncertain
                    && let VersionRead::Live(current) = self.read_version(path, cas + 1).await?
                    && current == *data
                {
                    return Ok(cas + 1);
                }
                Err(KvError::new(
                    KvErrorKind::CasMismatch,
                    format!(
                        "'{}' changed on the {} server at {} while coldvault wrote it (check-and-set expected version {cas})",
                        self.shown(path),
                        self.connection.product,
                        self.connection.host
                    ),
                )
                .with_status(400)
                .with_hint("run again: the new plan starts from what the mount holds now"))
            }
            _ => Err(self.connection.error(&answer, &what)),
        }
    }

    /// Writes the secret's metadata (creating the metadata entry if needed); fields left
    /// `None` keep their value.
    pub async fn write_metadata(&self, path: &str, update: &MetadataUpdate) -> Result<(), KvError> {
        let path = path.trim_matches('/');
        let what = format!("write the metadata of '{}'", self.shown(path));
        let mut body = serde_json::Map::new();
        if let Some(custom) = &update.custom_metadata {
            body.insert("custom_metadata".into(), json!(custom));
        }
        if let Some(max) = update.max_versions {
            body.insert("max_versions".into(), json!(max));
        }
        if let Some(cas) = update.cas_required {
            body.insert("cas_required".into(), json!(cas));
        }
        if let Some(after) = &update.delete_version_after {
            body.insert("delete_version_after".into(), json!(after));
        }
        self.post(path, "metadata", Value::Object(body), &what)
            .await
    }

    /// `POST MOUNT/ENDPOINT/PATH` with `body`, expecting no content back.
    async fn post(
        &self,
        path: &str,
        endpoint: &str,
        body: Value,
        what: &str,
    ) -> Result<(), KvError> {
        let bytes = Bytes::from(body.to_string());
        let answer = self
            .connection
            .send(
                Method::POST,
                &self.api_path(endpoint, path)?,
                None,
                Some(bytes),
                true,
                what,
            )
            .await?;
        match answer.status {
            200 | 204 => Ok(()),
            _ => Err(self.connection.error(&answer, what)),
        }
    }

    /// `POST delete|undelete|destroy/PATH {"versions": […]}`.
    async fn versions_call(
        &self,
        endpoint: &str,
        path: &str,
        versions: &[u64],
    ) -> Result<(), KvError> {
        let path = path.trim_matches('/');
        let list = versions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let what = format!("{endpoint} version(s) {list} of '{}'", self.shown(path));
        self.post(path, endpoint, json!({ "versions": versions }), &what)
            .await
    }

    /// Soft-deletes the given versions (`POST delete/PATH`); recoverable with
    /// [`KvClient::undelete_versions`].
    pub async fn delete_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
        self.versions_call("delete", path, versions).await
    }

    /// Brings soft-deleted versions back (`POST undelete/PATH`).
    pub async fn undelete_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
        self.versions_call("undelete", path, versions).await
    }

    /// Destroys the given versions for good (`POST destroy/PATH`).
    pub async fn destroy_versions(&self, path: &str, versions: &[u64]) -> Result<(), KvError> {
        self.versions_call("destroy", path, versions).await
    }
}

/// Logs in with AppRole: `POST auth/MOUNT/login {role_id, secret_id}` → `auth.client_token`.
async fn login_approle(
    connection: &Connection,
    role_id: &str,
    secret_id: &SecretString,
    mount: &str,
) -> Result<SecretString, KvError> {
    let what = format!("log in with AppRole at 'auth/{mount}'");
    let mut body = serde_json::to_vec(&json!({
        "role_id": role_id,
        "secret_id": secret_id.expose_secret(),
    }))
    .map_err(|e| KvError::new(KvErrorKind::Other, format!("cannot encode the login: {e}")))?;
    let bytes = Bytes::copy_from_slice(&body);
    body.zeroize();
    let mut answer = connection
        .send(
            Method::POST,
            &format!("auth/{}/login", encode_path(mount)?),
            None,
            Some(bytes),
            true,
            &what,
        )
        .await?;
    if answer.status == 200
        && let Value::String(mut token) = answer.body["auth"]["client_token"].take()
    {
        let secret = SecretString::from(token.clone());
        token.zeroize();
        return Ok(secret);
    }
    let server = answer.errors();
    answer.body = Value::Null;
    match answer.status {
        400 => {
            let reason = if server.is_empty() {
                "invalid role or secret ID".to_owned()
            } else {
                server
            };
            Err(KvError::new(
                KvErrorKind::PermissionDenied,
                format!(
                    "the {} server at {} refused the AppRole login ({reason})",
                    connection.product, connection.host
                ),
            )
            .with_status(400)
            .with_hint(
                "check VAULT_ROLE_ID and VAULT_SECRET_ID (or BAO_ROLE_ID and BAO_SECRET_ID): \
                 the secret id may be expired or used up",
            ))
        }
        // A login path is open to anyone, so a refusal there means no such path: OpenBao
        // answers an unknown auth mount with 403 "permission denied", Vault with 404 or 403.
        403 | 404 => Err(KvError::new(
            KvErrorKind::NoCredential,
            format!(
                "no AppRole auth method at 'auth/{mount}' on the {} server at {}",
                connection.product, connection.host
            ),
        )
        .with_status(answer.status)
        .with_hint(format!(
            "set VAULT_APPROLE_MOUNT to the AppRole mount's path ({} auth list shows it)",
            connection.cli
        ))),
        200 => Err(KvError::new(
            KvErrorKind::Other,
            format!(
                "the {} server at {} answered the AppRole login without a token",
                connection.product, connection.host
            ),
        )),
        _ => Err(connection.error(&answer, &what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_credential_comes_from_the_environment_in_order() {
        let token = KvAuth::from_env(env(&[
            ("VAULT_TOKEN", "s.one"),
            ("BAO_TOKEN", "s.two"),
            ("VAULT_ROLE_ID", "r"),
        ]))
        .unwrap();
        assert!(matches!(&token, KvAuth::Token(t) if t.expose_secret() == "s.one"));
        let bao = KvAuth::from_env(env(&[("VAULT_TOKEN", " "), ("BAO_TOKEN", "s.two\n")])).unwrap();
        assert!(matches!(&bao, KvAuth::Token(t) if t.expose_secret() == "s.two"));
        let approle = KvAuth::from_env(env(&[
            ("BAO_ROLE_ID", "role"),
            ("VAULT_SECRET_ID", "sid"),
            ("VAULT_APPROLE_MOUNT", "/ci-approle/"),
        ]))
        .unwrap();
        match approle {
            KvAuth::AppRole {
                role_id,
                secret_id,
                mount,
            } => {
                assert_eq!((role_id.as_str(), mount.as_str()), ("role", "ci-approle"));
                assert_eq!(secret_id.expose_secret(), "sid");
            }
            other => panic!("{other:?}"),
        }
        let default_mount = KvAuth::from_env(env(&[
            ("VAULT_ROLE_ID", "role"),
            ("VAULT_SECRET_ID", "sid"),
        ]))
        .unwrap();
        assert!(matches!(default_mount, KvAuth::AppRole { mount, .. } if mount == "approle"));
    }

    #[test]
    fn a_missing_credential_names_the_variables() {
        let none = KvAuth::from_env(env(&[])).unwrap_err();
        assert_eq!(none.kind, KvErrorKind::NoCredential);
        assert!(none.to_string().contains("VAULT_TOKEN"), "{none}");
        let half = KvAuth::from_env(env(&[("VAULT_ROLE_ID", "role")])).unwrap_err();
        assert_eq!(half.kind, KvErrorKind::NoCredential);
        assert!(
            half.to_string()
                .contains("VAULT_ROLE_ID is set but VAULT_SECRET_ID is not"),
            "{half}"
        );
        let other = KvAuth::from_env(env(&[("BAO_SECRET_ID", "CANARY-sid")])).unwrap_err();
        assert!(
            other
                .to_string()
                .contains("BAO_SECRET_ID is set but BAO_ROLE_ID is not"),
            "{other}"
        );
        assert!(!format!("{other} {:?}", other.hint).contains("CANARY"));
    }

    #[test]
    fn options_read_namespace_and_ca_from_either_name() {
        let vault = KvOptions::from_env(
            env(&[
                ("VAULT_NAMESPACE", "team/"),
                ("BAO_NAMESPACE", "other"),
                ("BAO_CACERT", "/etc/ca.pem"),
            ]),
            Duration::from_secs(5),
        );
        assert_eq!(vault.namespace.as_deref(), Some("team"));
        assert_eq!(vault.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(vault.timeout, Duration::from_secs(5));
        let empty = KvOptions::from_env(env(&[("VAULT_NAMESPACE", "")]), Duration::from_secs(1));
        assert_eq!((empty.namespace, empty.ca_cert), (None, None));
    }

    #[test]
    fn path_segments_are_encoded_and_dot_segments_refused() {
        assert_eq!(encode_path("app/my db").unwrap(), "app/my%20db");
        assert_eq!(
            encode_path("/a%b/c?d#e/ü+&=/").unwrap(),
            "a%25b/c%3Fd%23e/%C3%BC%2B%26%3D"
        );
        assert_eq!(encode_path("").unwrap(), "");
        assert!(encode_path("app/../sys").is_err());
        assert!(encode_path("./x").is_err());
        assert_eq!(encode_path("a..b/.c").unwrap(), "a..b/.c");
    }

    #[test]
    fn server_errors_are_one_short_line() {
        let body = json!({"errors": ["first\nline", "second"]});
        assert_eq!(server_errors(&body), "first line; second");
        let long = json!({"errors": ["x".repeat(1000)]});
        assert_eq!(server_errors(&long).chars().count(), MAX_SERVER_TEXT + 1);
        assert_eq!(server_errors(&Value::Null), "");
    }

    #[test]
    fn only_passing_failures_are_retried() {
        for status in [412, 429, 500, 502, 504] {
            assert!(is_transient(status), "{status}");
        }
        for status in [200, 204, 400, 403, 404, 405, 503] {
            assert!(!is_transient(status), "{status}");
        }
    }

    #[test]
    fn pauses_grow_to_a_cap_and_honour_retry_after() {
        for retry in 1..20 {
            let pause = pause_before(retry, None);
            assert!(pause >= FIRST_PAUSE.min(MAX_PAUSE), "{retry}: {pause:?}");
            assert!(pause <= MAX_PAUSE + MAX_PAUSE / 2, "{retry}: {pause:?}");
        }
        assert!(pause_before(1, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
    }

    /// OpenBao 2.7's answer to `GET metadata/app/db`, fields it adds included.
    const METADATA: &str = r#"{"cas_required":false,"created_time":"2026-11-30T19:54:38.739947283Z",
        "current_metadata_version":0,"current_version":4,"custom_metadata":null,
        "delete_version_after":"1h0m0s","max_versions":0,"metadata_cas_required":false,
        "oldest_version":0,"updated_time":"2026-11-30T19:54:38.775200302Z","versions":{
        "10":{"created_time":"2026-11-30T19:54:39Z","deletion_time":"2026-11-30T20:54:39Z","destroyed":false},
        "2":{"created_time":"2026-11-30T19:54:38.763688428Z","deletion_time":"","destroyed":true},
        "1":{"created_time":"2026-11-30T19:54:38.739947283Z","deletion_time":"2026-11-30T19:54:38.787527976Z","destroyed":false}}}"#;

    #[test]
    fn metadata_reads_into_versions_ascending_with_their_states() {
        let body: MetadataBody = serde_json::from_str(METADATA).unwrap();
        let now = OffsetDateTime::parse("2026-11-30T20:00:00Z", &Rfc3339).unwrap();
        let secret = secret_from_metadata("app/db", body, now);
        assert_eq!(secret.path, "app/db");
        assert!(secret.custom_metadata.is_empty(), "null is empty");
        assert_eq!((secret.current_version, secret.oldest_version), (4, 1));
        assert_eq!(secret.delete_version_after, "1h0m0s");
        let numbers: Vec<u64> = secret.versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, [1, 2, 10], "numeric order, not text order");
        assert!(secret.versions[0].deleted.is_some());
        assert_eq!(
            secret.versions[0].created.unwrap().nanosecond(),
            739_947_283,
            "nanoseconds kept"
        );
        assert!(secret.versions[1].destroyed && secret.versions[1].deleted.is_none());
        assert!(
            secret.versions[2].is_live(),
            "a deletion time still ahead is scheduled, not done"
        );
        assert!(secret.versions.iter().all(|v| v.data.is_none()));
    }

    #[test]
    fn data_is_moved_out_of_an_answer() {
        let mut body = json!({"data": {"data": {"k": "v", "n": 1}, "metadata": {"version": 3}}});
        let data = take_data(&mut body).unwrap();
        assert_eq!(data.canonical_json(), r#"{"k":"v","n":1}"#);
        assert!(body["data"]["data"].is_null());
        let mut deleted = json!({"data": {"data": null, "metadata": {"destroyed": true}}});
        assert!(take_data(&mut deleted).is_none());
    }
}
