//! Reads one secret from the local Key Vault with the official Rust crates, configured from the
//! variables `coldvault emulator --print-env` exports. `docs/EMULATOR.md` shows this file; the
//! test suite runs it (`tests/emulator_arm.rs`).

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

/// The current value of secret `name` in the vault at `vault_url`
/// (`$COLDVAULT_EMULATOR_VAULT_PROD`); `env` reads a variable (`|n| std::env::var(n).ok()`).
pub async fn read_secret(
    env: impl Fn(&str) -> Option<String>,
    vault_url: &str,
    name: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let var = |n: &str| env(n).ok_or_else(|| format!("{n} is not set"));
    // Trust the emulator's CA only, and reach NAME.vault.localhost on loopback without
    // /etc/hosts lines.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(var("COLDVAULT_CA_CERT")?)?)?;
    let url = url::Url::parse(vault_url)?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], url.port().unwrap_or(443)));
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(url.host_str().unwrap_or("localhost"), loopback)
        .resolve("localhost", loopback)
        .build()?;
    let options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        ..ClientOptions::default()
    };
    // The built-in issuer stands in for Entra ID.
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = var("AZURE_AUTHORITY_HOST")?;
    let mut credential_options = options.clone();
    credential_options.cloud = Some(Arc::new(CloudConfiguration::from(cloud)));
    let credential = ClientSecretCredential::new(
        &var("AZURE_TENANT_ID")?,
        var("AZURE_CLIENT_ID")?,
        Secret::new(var("AZURE_CLIENT_SECRET")?),
        Some(ClientSecretCredentialOptions {
            client_options: credential_options,
        }),
    )?;
    let client = SecretClient::new(
        vault_url,
        credential,
        Some(SecretClientOptions {
            client_options: options,
            ..SecretClientOptions::default()
        }),
    )?;
    let secret = client.get_secret(name, None).await?.into_model()?;
    Ok(secret.value.unwrap_or_default())
}
