//! Shared test support: [`TestEmulator`] starts the local Key Vault in-process on port 0 and
//! hands out what tests need: vault URLs, the CA, the built-in issuer's credentials, an HTTP
//! client that trusts the CA and resolves `*.vault.localhost` to 127.0.0.1, admin calls, and
//! official-crate clients (`SecretClient`, `KeyClient`, `CertificateClient`) wired the same way.
//!
//! It is written independently of `coldvault::vault` on purpose: the tests of the vault client
//! must not share a transport with it.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use coldvault::emulator::{self, EmulatorConfig, RunningEmulator, VaultSpec};
use serde_json::Value;

mod bao;
pub use bao::TestBao;

/// Resolves every name to 127.0.0.1: the tests talk to `*.vault.localhost` and `localhost` only.
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs =
            Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
        Box::pin(async move { Ok(addrs) })
    }
}

/// An HTTP client that trusts only `ca_pem` and resolves every name to loopback.
pub fn http_client(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM parses");
    // reqwest has no crypto provider of its own in this build: ring, as the product installs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .dns_resolver(Arc::new(Loopback))
        .build()
        .expect("HTTP client builds")
}

/// A fresh RSA-2048 key for rcgen, made by RustCrypto: rcgen's ring backend cannot generate RSA
/// keys, only sign with them.
pub fn rsa_key_pair() -> rcgen::KeyPair {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
    let der = key.to_pkcs8_der().expect("PKCS#8");
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &rcgen::PKCS_RSA_SHA256)
        .expect("rcgen key pair")
}

/// How long a test waits for a condition before it calls the run stuck: generous, so a loaded
/// machine never fails a test that is merely slow. Tests wait for what they need (a request
/// parked, a journal entry, a file) instead of sleeping a fixed time.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Polls `condition` every 20 ms until it holds; panics naming `what` after [`PATIENCE`].
pub async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The vaults every test emulator serves unless told otherwise: `alpha` and `beta` in one
/// subscription, `gamma` in another.
pub fn default_vaults() -> Vec<VaultSpec> {
    let mut gamma = VaultSpec::new("gamma");
    gamma.subscription = "11111111-1111-1111-1111-111111111111".into();
    vec![VaultSpec::new("alpha"), VaultSpec::new("beta"), gamma]
}

/// An emulator running in this test process.
pub struct TestEmulator {
    pub running: RunningEmulator,
    pub http: reqwest::Client,
}

impl TestEmulator {
    /// Starts with [`default_vaults`] and default settings.
    pub async fn start() -> Self {
        Self::start_with(EmulatorConfig {
            vaults: default_vaults(),
            ..EmulatorConfig::default()
        })
        .await
    }

    /// Starts with `config` (port forced to 0).
    pub async fn start_with(mut config: EmulatorConfig) -> Self {
        config.port = 0;
        let running = emulator::start(config).await.expect("emulator starts");
        let http = http_client(running.ca_pem());
        Self { running, http }
    }

    /// `https://NAME.vault.localhost:PORT/`.
    pub fn vault_url(&self, name: &str) -> String {
        self.running
            .vault_url(name)
            .unwrap_or_else(|| panic!("no vault {name}"))
    }

    /// `https://NAME.vault.localhost:PORT` + `path_and_query`.
    pub fn url(&self, vault: &str, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.vault_url(vault).trim_end_matches('/'),
            path_and_query
        )
    }

    /// The ready line.
    pub fn ready(&self) -> &emulator::Ready {
        self.running.ready()
    }

    /// Calls the admin endpoint; answers the status and the JSON body (`Null` when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.running.admin_url());
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A token from the built-in issuer for the vault audience (admin `/tokens`).
    pub async fn token(&self) -> String {
        self.token_with(serde_json::json!({})).await
    }

    /// A token with chosen `client_id`, `audience`, `lifetime_seconds`.
    pub async fn token_with(&self, options: Value) -> String {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/tokens", Some(options))
            .await;
        assert_eq!(status, 200, "token minted: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// The journal entries.
    pub async fn journal(&self) -> Vec<Value> {
        let (_, body) = self.admin(reqwest::Method::GET, "/journal", None).await;
        body["entries"].as_array().cloned().unwrap_or_default()
    }

    /// How many requests `hold` faults park right now.
    pub async fn held(&self) -> u64 {
        let (_, body) = self.admin(reqwest::Method::GET, "/faults", None).await;
        body["held"].as_u64().unwrap_or(0)
    }

    /// Moves the local Key Vault's clock forward by `ms`: what a test would otherwise sleep for
    /// (a delete becoming visible, a timestamp one second later) happens at once.
    pub async fn advance_clock_ms(&self, ms: i64) {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                "/clock",
                Some(serde_json::json!({ "advance_ms": ms })),
            )
            .await;
        assert_eq!(status, 200, "clock advanced: {body}");
    }

    /// Changes settings (`delete_delay_ms`, `purge_window_ms`, `page_size`, `ragged_pages`, ...).
    pub async fn settings(&self, patch: Value) {
        let (status, body) = self
            .admin(reqwest::Method::PATCH, "/settings", Some(patch))
            .await;
        assert_eq!(status, 200, "settings accepted: {body}");
    }

    /// Azure SDK client options whose transport trusts the CA and resolves to loopback.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            ..ClientOptions::default()
        }
    }

    /// A `ClientSecretCredential` for the built-in client against the built-in issuer.
    pub fn credential(&self) -> Arc<ClientSecretCredential> {
        let ready = self.ready();
        self.credential_for(&ready.client_id, &ready.client_secret)
    }

    /// A `ClientSecretCredential` for another client of the built-in issuer.
    pub fn credential_for(&self, client_id: &str, secret: &str) -> Arc<ClientSecretCredential> {
        let ready = self.ready();
        let mut custom = CustomConfiguration::default();
        custom.authority_host = ready.authority_host.clone();
        let mut client_options = self.client_options();
        client_options.cloud = Some(Arc::new(CloudConfiguration::from(custom)));
        ClientSecretCredential::new(
            &ready.tenant_id,
            client_id.to_string(),
            Secret::new(secret.to_string()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .expect("credential builds")
    }

    /// The official `SecretClient` for `vault`, challenge verification on.
    pub fn secret_client(&self, vault: &str) -> SecretClient {
        SecretClient::new(
            &self.vault_url(vault),
            self.credential(),
            Some(SecretClientOptions {
                client_options: self.client_options(),
                ..SecretClientOptions::default()
            }),
        )
        .expect("secret client builds")
    }

    /// The official `KeyClient` for `vault`, challenge verification on.
    pub fn key_client(&self, vault: &str) -> KeyClient {
        KeyClient::new(
            &self.vault_url(vault),
            self.credential(),
            Some(KeyClientOptions {
                client_options: self.client_options(),
                ..KeyClientOptions::default()
            }),
        )
        .expect("key client builds")
    }

    /// The official `CertificateClient` for `vault`, challenge verification on.
    pub fn certificate_client(&self, vault: &str) -> CertificateClient {
        CertificateClient::new(
            &self.vault_url(vault),
            self.credential(),
            Some(CertificateClientOptions {
                client_options: self.client_options(),
                ..CertificateClientOptions::default()
            }),
        )
        .expect("certificate client builds")
    }
}
