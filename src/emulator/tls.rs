//! HTTPS: the local CA and the server leaf (rcgen), the rustls server configuration (TLS 1.2
//! and 1.3, HTTP/2 and HTTP/1.1 by ALPN), and the accept loop that serves the router over
//! tokio-rustls and hyper with graceful shutdown.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::EmulatorError;
use super::error::DropConnection;

/// The CA (PEM, to hand to clients) and the server's certificate chain and key.
pub struct TlsMaterial {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial")
    }
}

fn tls_err(e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Tls(e.to_string())
}

/// Loads the CA from `dir` (`ca.pem`, `ca-key.pem`) or makes one (saving it there), then makes
/// a fresh leaf for `localhost`, `127.0.0.1`, `::1`, `*.vault.localhost`, `vault.localhost`
/// and `extra_names`.
pub fn material(dir: &Path, extra_names: &[String]) -> Result<TlsMaterial, EmulatorError> {
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let (ca_key, ca_cert, ca_pem) = match (
        std::fs::read_to_string(&ca_path),
        std::fs::read_to_string(&ca_key_path),
    ) {
        (Ok(cert_pem), Ok(key_pem)) => {
            let key = KeyPair::from_pem(&key_pem).map_err(tls_err)?;
            let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(tls_err)?;
            // Re-signing the same subject and key yields a cert that signs leaves the saved
            // `ca.pem` verifies.
            let cert = params.self_signed(&key).map_err(tls_err)?;
            (key, cert, cert_pem)
        }
        _ => {
            let key = KeyPair::generate().map_err(tls_err)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "coldvault emulator local CA");
            dn.push(DnType::OrganizationName, "coldvault");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).map_err(tls_err)?;
            let pem = cert.pem();
            super::persist::write_atomic(&ca_path, pem.as_bytes())
                .map_err(|e| EmulatorError::Io(ca_path.display().to_string(), e))?;
            super::persist::write_atomic(&ca_key_path, key.serialize_pem().as_bytes())
                .map_err(|e| EmulatorError::Io(ca_key_path.display().to_string(), e))?;
            (key, cert, pem)
        }
    };

    let mut names = vec![
        "localhost".to_string(),
        "vault.localhost".to_string(),
        "*.vault.localhost".to_string(),
    ];
    names.extend(extra_names.iter().cloned());
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    for name in &names {
        match name.parse::<IpAddr>() {
            Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into().map_err(tls_err)?)),
        }
    }
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(tls_err)?;
    let leaf = params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(tls_err)?;
    Ok(TlsMaterial {
        ca_pem,
        chain: vec![leaf.der().clone(), ca_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

/// The rustls server configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1.
pub fn server_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, EmulatorError> {
    // ring, the one TLS provider of the build (the client side uses it too).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listeners` until `shutdown` turns true, then drains connections.
pub async fn serve(
    listeners: Vec<TcpListener>,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut accepts = JoinSet::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel::<tokio::net::TcpStream>();
    for listener in listeners {
        let tx = conn_tx.clone();
        let mut stop = shutdown.clone();
        accepts.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => {
                            let _ = tcp.set_nodelay(true);
                            if tx.send(tcp).is_err() { break; }
                        }
                        Err(err) => {
                            tracing::warn!("accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        });
    }
    drop(conn_tx);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            tcp = conn_rx.recv() => {
                let Some(tcp) = tcp else { break };
                let acceptor = acceptor.clone();
                let app = app.clone();
                let stop = shutdown.clone();
                connections.spawn(serve_connection(acceptor, tcp, app, stop));
                while connections.try_join_next().is_some() {}
            }
        }
    }
    accepts.abort_all();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(err) => {
            tracing::debug!("TLS handshake failed: {err}");
            return;
        }
    };
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        async move {
            let Ok(response) = app.oneshot(request.map(axum::body::Body::new)).await;
            if response.extensions().get::<DropConnection>().is_some() {
                // An error from the service makes hyper close the connection unanswered.
                return Err(std::io::Error::other(
                    "connection dropped by fault injection",
                ));
            }
            Ok(response)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!("connection ended: {err}");
            }
        }
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
