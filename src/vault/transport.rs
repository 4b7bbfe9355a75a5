//! The HTTP client every vault and credential request goes through, its time limits, and what
//! a request that got no answer tells the user.
//!
//! One `reqwest::Client` (rustls; the platform's roots, plus the extra root from `--ca-cert` or
//! `COLDVAULT_CA_CERT` when given) is built per connection and handed to azure_core as its
//! transport, so the vault clients and the credentials (token endpoint, managed identity) share
//! connection pools and trust the same roots. Names under `.localhost` resolve to loopback
//! without asking DNS (RFC 6761 §6.3, as curl does), which is how `NAME.vault.localhost` reaches
//! the local emulator while the certificate and the authentication challenge are still checked
//! against the real host name. Certificate verification cannot be turned off: there is no
//! option for it.
//!
//! Time limits: each connection attempt has [`DEFAULT_CONNECT_TIMEOUT`] (never more than the
//! request's deadline), and each request, its retries and their waits included, has one overall
//! deadline (`--timeout`, [`DEFAULT_TIMEOUT`]) enforced by [`DeadlinePolicy`]. A request that gets
//! no answer fails with a [`NetworkFailure`] naming the host and the cause, classified from the
//! error's type along its source chain (resolver, `std::io::ErrorKind`, rustls), never from its
//! wording. An untrusted certificate fails at once (retrying cannot help); a name that does not
//! resolve, a refused connection or a timeout is retried quietly until the deadline, after one
//! warning line through the connection's [`NetworkWarning`] hook. Every attempt, its wait and its
//! outcome are logged at debug level (`-v`): method, host and path only, never headers, bodies
//! or query strings, so no token or secret reaches a log.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, Context, HttpClient, Request, Transport};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::VaultError;

/// How long one request may take, retries and their waits included, unless `--timeout` says
/// otherwise. Two minutes rides out what Key Vault legitimately does to a request: a few
/// rounds of 429 with `Retry-After` (seconds each), a 5xx blip with backoff, a native backup of
/// an item with hundreds of versions (tens of seconds). It is short enough that a scheduled job
/// pointed at an unreachable vault fails within minutes instead of hanging, and the first
/// failure is told at once anyway.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for a TCP and TLS connection. Azure's endpoints connect in milliseconds;
/// ten seconds leaves room for a slow resolver, a proxy or a congested link, and a dropped
/// SYN (a firewall) is retried instead of waited out for minutes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait between bytes of a response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a host name is `localhost` or ends in `.localhost` (case-insensitive, a trailing dot
/// allowed): such names always mean the loopback interface.
pub fn is_localhost_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// The resolver found no address for a host: the type the classification looks for.
#[derive(Debug, thiserror::Error)]
#[error("{host} does not resolve")]
struct UnresolvedHost {
    host: String,
    #[source]
    source: Option<std::io::Error>,
}

/// Resolves `*.localhost` to 127.0.0.1 and ::1, everything else with the system resolver.
#[derive(Debug, Clone, Copy, Default)]
struct LoopbackAwareResolver;

impl Resolve for LoopbackAwareResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if is_localhost_name(&host) {
                let addrs: Addrs = Box::new(
                    [
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
                    ]
                    .into_iter(),
                );
                return Ok(addrs);
            }
            // The system resolver's errors carry no type (only getaddrinfo's text), so every
            // failure to resolve is wrapped in one that does.
            let lookup = tokio::net::lookup_host((host.as_str(), 0)).await;
            let found: Vec<SocketAddr> = match lookup {
                Ok(found) => found.collect(),
                Err(source) => {
                    return Err(Box::new(UnresolvedHost {
                        host: host.clone(),
                        source: Some(source),
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            };
            if found.is_empty() {
                return Err(Box::new(UnresolvedHost {
                    host: host.clone(),
                    source: None,
                }));
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Reads the PEM certificates of an extra trusted root (`--ca-cert`).
pub fn load_ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, VaultError> {
    let pem = std::fs::read(path).map_err(|e| {
        VaultError::Setup(format!(
            "cannot read CA certificate '{}': {e}",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        VaultError::Setup(format!(
            "'{}' is not a PEM certificate: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(VaultError::Setup(format!(
            "'{}' holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Makes ring the process's rustls crypto provider, once; later calls do nothing. reqwest is
/// built without a provider of its own (its default is aws-lc-rs, a second crypto stack) and
/// takes the process default when a client is built, so this runs before any client is.
pub fn install_crypto_provider() {
    // An error only says a provider is already installed: the same ring one, by an earlier call.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the HTTP client with the default time limits: see [`build_http_client_with`].
pub fn build_http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, VaultError> {
    build_http_client_with(ca_cert, DEFAULT_TIMEOUT)
}

/// Builds the HTTP client: platform roots plus `ca_cert`'s certificates, `*.localhost` on
/// loopback, no redirects (Key Vault never redirects; following one would leak the token), a
/// connect timeout of [`DEFAULT_CONNECT_TIMEOUT`] or half of `timeout` if shorter.
pub fn build_http_client_with(
    ca_cert: Option<&Path>,
    timeout: Duration,
) -> Result<reqwest::Client, VaultError> {
    // Half the deadline at most, so even a short `--timeout` leaves room for a second attempt
    // (a host that swallowed one SYN) and the warning comes before the final error.
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT.min(timeout / 2))
        .read_timeout(READ_TIMEOUT.min(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(LoopbackAwareResolver);
    if let Some(path) = ca_cert {
        builder = builder.tls_certs_merge(load_ca_certificates(path)?);
    }
    builder
        .build()
        .map_err(|e| VaultError::Setup(format!("cannot set up the HTTP client: {e}")))
}

/// Wraps a client as the azure_core transport for `ClientOptions::transport`, without a
/// warning hook.
pub fn azure_transport(client: reqwest::Client) -> Transport {
    azure_transport_with(client, None)
}

/// Wraps a client as the azure_core transport; `warning` is told once per host when a request
/// to it first gets no answer and will be retried.
pub fn azure_transport_with(client: reqwest::Client, warning: Option<NetworkWarning>) -> Transport {
    Transport::new(Arc::new(ClassifyingClient {
        client,
        warning,
        warned: Arc::new(Mutex::new(HashSet::new())),
    }))
}

/// Where the one-line "no answer yet, retrying" warning goes (the command line prints it on
/// stderr). It receives the line without a prefix, e.g. `kv1.vault.azure.net: connection
/// refused; retrying until 14:02:10 UTC`.
#[derive(Clone)]
pub struct NetworkWarning(Arc<dyn Fn(&str) + Send + Sync>);

impl NetworkWarning {
    /// A hook calling `f` with each warning line.
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for NetworkWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkWarning")
    }
}

/// Why a request got no answer, told apart by the error's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkCause {
    /// The host name does not resolve (a mistyped vault name, or no DNS here).
    DoesNotResolve,
    /// Nothing accepts connections at the address (TCP connection refused).
    Refused,
    /// No connection or no answer within the time allowed.
    TimedOut,
    /// The server's TLS certificate failed verification; the reason, e.g. "issued by an
    /// unknown authority".
    UntrustedCertificate(String),
    /// Any other failure to connect or to get an answer (reset, network unreachable), as text.
    Other(String),
}

impl NetworkCause {
    /// Whether retrying cannot help: an untrusted certificate stays untrusted.
    pub fn is_final(&self) -> bool {
        matches!(self, NetworkCause::UntrustedCertificate(_))
    }
}

impl fmt::Display for NetworkCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkCause::DoesNotResolve => f.write_str("does not resolve"),
            NetworkCause::Refused => f.write_str("connection refused"),
            NetworkCause::TimedOut => f.write_str("timed out"),
            NetworkCause::UntrustedCertificate(why) => {
                write!(f, "its TLS certificate is not trusted ({why})")
            }
            NetworkCause::Other(text) => write!(f, "no answer: {text}"),
        }
    }
}

/// A request to `host` that got no answer, and why. `gave_up_after` is set when the request's
/// deadline ended it. Holds no URL path, header or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NetworkFailure {
    /// The host (and port, when not 443) the request went to.
    pub host: String,
    /// Why it got no answer.
    pub cause: NetworkCause,
    /// How long the request kept trying before its deadline ended it.
    pub gave_up_after: Option<Duration>,
}

impl fmt::Display for NetworkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            NetworkCause::DoesNotResolve => write!(f, "{} does not resolve", self.host)?,
            cause => write!(f, "{}: {cause}", self.host)?,
        }
        if let Some(after) = self.gave_up_after {
            write!(f, " (gave up after {})", format_duration(after))?;
        }
        Ok(())
    }
}

/// `30 s`, `2 min`, `1 min 30 s`, `500 ms`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{} ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// The host (with a non-default port) a URL points at.
fn host_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("the host");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Finds why a request got no answer by walking the error's source chain and looking at types:
/// a [`NetworkFailure`] already classified, the resolver's failure, a rustls certificate
/// error, the `std::io::ErrorKind` of the socket, reqwest's timeout. `None` when nothing in the
/// chain is a network failure (an HTTP status, a credential error).
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Option<NetworkCause> {
    let mut connect_text = None;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<NetworkFailure>() {
            return Some(found.cause.clone());
        }
        if let Some(cause) = classify_one(e) {
            return Some(cause);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(cause) = classify_io(io)
        {
            return Some(cause);
        }
        if let Some(re) = e.downcast_ref::<reqwest::Error>() {
            if re.is_timeout() {
                return Some(NetworkCause::TimedOut);
            }
            if connect_text.is_none() && (re.is_connect() || re.is_request()) {
                connect_text = Some(error_chain(re));
            }
        }
        current = e.source();
    }
    connect_text.map(NetworkCause::Other)
}

/// An `io::Error` and what it wraps. `io::Error::source` skips the error it wraps (it returns
/// that error's source), and TLS errors arrive as an io::Error wrapping an io::Error wrapping
/// rustls' error, so the wrapped ones are looked at here, depth first.
fn classify_io(io: &std::io::Error) -> Option<NetworkCause> {
    if let Some(inner) = io.get_ref() {
        if let Some(cause) = classify_one(inner) {
            return Some(cause);
        }
        if let Some(nested) = inner.downcast_ref::<std::io::Error>()
            && let Some(cause) = classify_io(nested)
        {
            return Some(cause);
        }
    }
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => Some(NetworkCause::Refused),
        std::io::ErrorKind::TimedOut => Some(NetworkCause::TimedOut),
        _ => None,
    }
}

/// The causes recognisable from one error's own type.
fn classify_one(e: &(dyn std::error::Error + 'static)) -> Option<NetworkCause> {
    if e.downcast_ref::<UnresolvedHost>().is_some() {
        return Some(NetworkCause::DoesNotResolve);
    }
    if let Some(rustls::Error::InvalidCertificate(why)) = e.downcast_ref::<rustls::Error>() {
        use rustls::CertificateError as C;
        let why = match why {
            C::UnknownIssuer => "issued by an unknown authority".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "not issued for this host name".to_owned()
            }
            C::Expired | C::ExpiredContext { .. } => "expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".to_owned(),
            C::Revoked => "revoked".to_owned(),
            other => format!("{other:?}"),
        };
        return Some(NetworkCause::UntrustedCertificate(why));
    }
    None
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose text
/// an outer one already contains (reqwest hides the useful part in `source()`, and many
/// errors repeat their cause in their own text). The vault module's one chain flattener.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The first [`NetworkFailure`] in an error's source chain.
pub fn find_network_failure<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a NetworkFailure> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<NetworkFailure>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// What one request (all its attempts) has seen so far, shared by [`DeadlinePolicy`] and the
/// transport through a task-local: azure_core's retry policy and the credentials' own
/// pipelines run inside the deadline policy's future, on the same task.
#[derive(Debug)]
struct RequestScope {
    /// When the deadline ends the request, for the warning line.
    deadline: OffsetDateTime,
    attempts: AtomicU32,
    /// When the last attempt ended, to log the wait before the next.
    last_end: Mutex<Option<Instant>>,
    /// The last attempt's network failure, for the final error.
    last_failure: Mutex<Option<NetworkFailure>>,
}

tokio::task_local! {
    static REQUEST: Arc<RequestScope>;
}

/// The azure_core per-call policy that gives each request one overall deadline, retries and
/// their waits included. When it ends the request, the error is the [`NetworkFailure`] of its
/// last attempt (or a timeout), with `gave_up_after` set.
#[derive(Debug, Clone)]
pub struct DeadlinePolicy {
    timeout: Duration,
}

impl DeadlinePolicy {
    /// A policy ending each request after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

#[async_trait::async_trait]
impl Policy for DeadlinePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "deadline policy placed last in the pipeline",
            ));
        };
        let host = host_of(request.url());
        let now = OffsetDateTime::now_utc();
        let deadline = time::Duration::try_from(self.timeout)
            .ok()
            .and_then(|d| now.checked_add(d))
            .unwrap_or(now);
        let scope = Arc::new(RequestScope {
            deadline,
            attempts: AtomicU32::new(0),
            last_end: Mutex::new(None),
            last_failure: Mutex::new(None),
        });
        let attempt = first.send(ctx, request, rest);
        match REQUEST
            .scope(scope.clone(), tokio::time::timeout(self.timeout, attempt))
            .await
        {
            Ok(result) => result,
            Err(_) => {
                let last = lock(&scope.last_failure).clone();
                let failure = NetworkFailure {
                    host: last.as_ref().map_or(host, |f| f.host.clone()),
                    cause: last.map_or(NetworkCause::TimedOut, |f| f.cause),
                    gave_up_after: Some(self.timeout),
                };
                tracing::debug!(
                    "gave up after {} and {} attempt(s): {failure}",
                    format_duration(self.timeout),
                    scope.attempts.load(Ordering::Relaxed)
                );
                Err(azure_core::Error::new(ErrorKind::Connection, failure))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The reqwest client as azure_core's `HttpClient`, turning a request that got no answer into
/// a [`NetworkFailure`]: final (`ErrorKind::Other`) for an untrusted certificate, which
/// azure_core would otherwise retry for minutes although retrying cannot help; retryable
/// (`ErrorKind::Connection`) for the rest. Logs each attempt at debug level.
#[derive(Debug, Clone)]
struct ClassifyingClient {
    client: reqwest::Client,
    warning: Option<NetworkWarning>,
    /// Hosts already warned about: one line per host and connection, not one per request.
    warned: Arc<Mutex<HashSet<String>>>,
}

impl ClassifyingClient {
    /// Warns about a host that does not resolve, refuses or does not answer, once. A dropped
    /// connection or a reset (`Other`) is the ordinary noise retries absorb, and an untrusted
    /// certificate fails at once: neither is announced.
    fn warn_once(&self, failure: &NetworkFailure, scope: Option<&RequestScope>) {
        let Some(warning) = &self.warning else {
            return;
        };
        let announced = matches!(
            failure.cause,
            NetworkCause::DoesNotResolve | NetworkCause::Refused | NetworkCause::TimedOut
        );
        if !announced || !lock(&self.warned).insert(failure.host.clone()) {
            return;
        }
        let until = scope.map_or_else(String::new, |s| {
            let t = s.deadline;
            format!(
                " until {:02}:{:02}:{:02} UTC",
                t.hour(),
                t.minute(),
                t.second()
            )
        });
        (warning.0)(&format!("{failure}; retrying{until}"));
    }
}

#[async_trait::async_trait]
impl HttpClient for ClassifyingClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let scope = REQUEST.try_with(Arc::clone).ok();
        let host = host_of(request.url());
        // Method, host and path only: query strings and headers stay out of logs.
        let what = format!("{} {host}{}", request.method(), request.url().path());
        if let Some(scope) = &scope {
            let n = scope.attempts.fetch_add(1, Ordering::Relaxed) + 1;
            match *lock(&scope.last_end) {
                Some(end) => tracing::debug!(
                    "{what}: attempt {n} after waiting {} ms",
                    end.elapsed().as_millis()
                ),
                None => tracing::debug!("{what}: attempt {n}"),
            }
        } else {
            tracing::debug!("{what}");
        }
        let started = Instant::now();
        let outcome = self.client.execute_request(request).await;
        let took = started.elapsed().as_millis();
        let result = match outcome {
            Ok(response) => {
                tracing::debug!("{what}: HTTP {} in {took} ms", u16::from(response.status()));
                Ok(response)
            }
            Err(err) => match classify(&err) {
                Some(cause) => {
                    let failure = NetworkFailure {
                        host,
                        cause,
                        gave_up_after: None,
                    };
                    tracing::debug!("{what}: {failure} after {took} ms");
                    if let Some(scope) = &scope {
                        *lock(&scope.last_failure) = Some(failure.clone());
                    }
                    self.warn_once(&failure, scope.as_deref());
                    if let NetworkCause::Other(_) = failure.cause {
                        // Unclassified: azure_core's own error and retry decision stand.
                        Err(err)
                    } else {
                        let kind = if failure.cause.is_final() {
                            ErrorKind::Other
                        } else {
                            ErrorKind::Connection
                        };
                        Err(azure_core::Error::new(kind, failure))
                    }
                }
                None => {
                    tracing::debug!("{what}: {} after {took} ms", error_chain(&err));
                    Err(err)
                }
            },
        };
        if let Some(scope) = &scope {
            *lock(&scope.last_end) = Some(Instant::now());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    #[test]
    fn error_chain_joins_causes_and_skips_repeated_ones() {
        let root = Layer {
            text: "connection reset",
            source: None,
        };
        let repeating = Layer {
            text: "request failed: connection reset",
            source: Some(Box::new(root)),
        };
        let outer = Layer {
            text: "cannot list secrets",
            source: Some(Box::new(Layer {
                text: "send error",
                source: Some(Box::new(repeating)),
            })),
        };
        assert_eq!(
            error_chain(&outer),
            "cannot list secrets: send error: request failed: connection reset"
        );
    }

    #[test]
    fn network_causes_are_told_apart_by_type() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&refused), Some(NetworkCause::Refused));
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(classify(&timed_out), Some(NetworkCause::TimedOut));
        let unresolved = UnresolvedHost {
            host: "kv1.vault.invalid".into(),
            source: None,
        };
        assert_eq!(classify(&unresolved), Some(NetworkCause::DoesNotResolve));
        // rustls' error travels inside an io::Error inside an io::Error (as hyper and
        // tokio-rustls hand it over), and `io::Error::source()` skips what it wraps.
        let untrusted = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(
            classify(&untrusted),
            Some(NetworkCause::UntrustedCertificate(
                "issued by an unknown authority".into()
            ))
        );
        // The wording of an error is not a type: text alone classifies nothing.
        let words = std::io::Error::other("connection refused: Name or service not known");
        assert_eq!(classify(&words), None);
        // Wrapped in azure_core errors, as the pipeline returns them.
        let wrapped = azure_core::Error::with_error(
            ErrorKind::Connection,
            azure_core::Error::new(ErrorKind::Io, refused),
            "retry policy expired",
        );
        assert_eq!(classify(&wrapped), Some(NetworkCause::Refused));
        assert!(NetworkCause::UntrustedCertificate(String::new()).is_final());
        assert!(!NetworkCause::Refused.is_final());
    }

    #[test]
    fn failures_read_as_one_line_naming_the_host() {
        let failure = NetworkFailure {
            host: "kv1.vault.azure.net".into(),
            cause: NetworkCause::Refused,
            gave_up_after: Some(Duration::from_secs(90)),
        };
        assert_eq!(
            failure.to_string(),
            "kv1.vault.azure.net: connection refused (gave up after 1 min 30 s)"
        );
        let failure = NetworkFailure {
            host: "kv1.vault.invalid".into(),
            cause: NetworkCause::DoesNotResolve,
            gave_up_after: None,
        };
        assert_eq!(failure.to_string(), "kv1.vault.invalid does not resolve");
        assert_eq!(format_duration(Duration::from_millis(500)), "500 ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2 min");
    }

    /// A next policy that never answers, or fails each try as refused.
    #[derive(Debug)]
    struct Never;

    #[async_trait::async_trait]
    impl Policy for Never {
        async fn send(&self, _: &Context, _: &mut Request, _: &[Arc<dyn Policy>]) -> PolicyResult {
            if let Ok(scope) = REQUEST.try_with(Arc::clone) {
                *lock(&scope.last_failure) = Some(NetworkFailure {
                    host: "kv1.vault.azure.net".into(),
                    cause: NetworkCause::Refused,
                    gave_up_after: None,
                });
            }
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn the_deadline_ends_a_request_with_its_last_failure() {
        let policy = DeadlinePolicy::new(Duration::from_millis(50));
        let mut request = Request::new(
            "https://kv1.vault.azure.net/secrets/x".parse().unwrap(),
            azure_core::http::Method::Get,
        );
        let next: Vec<Arc<dyn Policy>> = vec![Arc::new(Never)];
        let err = policy
            .send(&Context::new(), &mut request, &next)
            .await
            .unwrap_err();
        let failure = find_network_failure(&err).expect("a network failure");
        assert_eq!(failure.cause, NetworkCause::Refused);
        assert_eq!(failure.gave_up_after, Some(Duration::from_millis(50)));
        assert!(matches!(err.kind(), ErrorKind::Connection));
    }

    #[test]
    fn localhost_names() {
        assert!(is_localhost_name("localhost"));
        assert!(is_localhost_name("main.vault.localhost"));
        assert!(is_localhost_name("Main.Vault.LOCALHOST."));
        assert!(!is_localhost_name("localhost.example.com"));
        assert!(!is_localhost_name("kv.vault.azure.net"));
        assert!(!is_localhost_name("notlocalhost"));
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_without_dns() {
        let name: Name = "backup.vault.localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = LoopbackAwareResolver.resolve(name).await.unwrap().collect();
        assert_eq!(
            addrs.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }

    #[test]
    fn missing_or_empty_ca_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = build_http_client(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("cannot read CA certificate"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(build_http_client(Some(&empty)).is_err());
    }

    #[test]
    fn a_pem_root_is_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["test-root".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        assert!(build_http_client(Some(&path)).is_ok());
        assert!(build_http_client(None).is_ok());
    }
}
