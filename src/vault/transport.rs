//! The HTTP client every vault and credential request goes through.
//!
//! One `reqwest::Client` (rustls; the platform's roots, plus the extra root from `--ca-cert` or
//! `COLDVAULT_CA_CERT` when given) is built per connection and handed to azure_core as its
//! transport, so the vault clients and the credentials (token endpoint, managed identity) share
//! connection pools and trust the same roots. Names under `.localhost` resolve to loopback
//! without asking DNS (RFC 6761 §6.3, as curl does), which is how `NAME.vault.localhost` reaches
//! the local emulator while the certificate and the authentication challenge are still checked
//! against the real host name. Certificate verification cannot be turned off: there is no
//! option for it. An untrusted certificate or a host name that does not exist fails at once
//! instead of being retried by azure_core for minutes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::VaultError;

/// How long to wait for a TCP and TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait between bytes of a response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a host name is `localhost` or ends in `.localhost` (case-insensitive, a trailing dot
/// allowed): such names always mean the loopback interface.
pub fn is_localhost_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
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
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
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

/// Builds the HTTP client: platform roots plus `ca_cert`'s certificates, `*.localhost` on
/// loopback, no redirects (Key Vault never redirects; following one would leak the token).
pub fn build_http_client(ca_cert: Option<&Path>) -> Result<reqwest::Client, VaultError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(LoopbackAwareResolver);
    if let Some(path) = ca_cert {
        builder = builder.tls_certs_merge(load_ca_certificates(path)?);
    }
    builder
        .build()
        .map_err(|e| VaultError::Setup(format!("cannot set up the HTTP client: {e}")))
}

/// Wraps a client as the azure_core transport for `ClientOptions::transport`.
pub fn azure_transport(client: reqwest::Client) -> Transport {
    Transport::new(Arc::new(VerifyingClient(client)))
}

/// The reqwest client as azure_core's `HttpClient`, with one change: a server certificate that
/// fails verification is reported as a final error instead of a connection error, which
/// azure_core would retry for minutes although retrying cannot help.
#[derive(Debug, Clone)]
struct VerifyingClient(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for VerifyingClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        match self.0.execute_request(request).await {
            Ok(response) => Ok(response),
            Err(err) => {
                let text = error_chain(&err);
                if is_certificate_failure(&text) {
                    Err(azure_core::Error::with_message(
                        ErrorKind::Other,
                        format!(
                            "the server's TLS certificate is not trusted ({text}); \
                             trust its root with --ca-cert if it is the local Key Vault"
                        ),
                    ))
                } else if is_unknown_host(&text) {
                    Err(azure_core::Error::with_message(
                        ErrorKind::Other,
                        format!(
                            "cannot resolve {}: {text}",
                            request.url().host_str().unwrap_or("the host")
                        ),
                    ))
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// An error and its causes on one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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

/// Whether name resolution said the host does not exist (a mistyped vault name); a temporary
/// resolver failure ("Temporary failure in name resolution") stays retryable.
fn is_unknown_host(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("name or service not known")
        || lower.contains("no such host")
        || lower.contains("nodename nor servname")
}

/// Whether a transport error's text is a certificate verification failure (rustls and the
/// platform verifier word them "invalid peer certificate" / "certificate …").
fn is_certificate_failure(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("invalid peer certificate")
        || lower.contains("unknownissuer")
        || lower.contains("certificate verify failed")
        || lower.contains("notvalidforname")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_transport_failures_are_recognised() {
        assert!(is_certificate_failure(
            "error sending request: invalid peer certificate: UnknownIssuer"
        ));
        assert!(is_unknown_host(
            "dns error: failed to lookup address information: Name or service not known"
        ));
        assert!(!is_unknown_host(
            "dns error: Temporary failure in name resolution"
        ));
        assert!(!is_certificate_failure("connection reset by peer"));
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
