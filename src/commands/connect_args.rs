//! `--ca-cert`, `--auth` and `--max-rate`, shared by the commands that reach a vault, and the
//! translation of vault failures into the command line's errors and hints.

use std::path::PathBuf;

use crate::error::CliError;
use crate::vault::azure::{AzureVault, ConnectOptions};
use crate::vault::credentials::AuthMethod;
use crate::vault::{VaultError, VaultUrl};

/// How to reach and sign in to vaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// Trust this extra root certificate (PEM), e.g. the local Key Vault's `ca.pem`.
    /// Verification stays on.
    #[arg(long, value_name = "PATH", env = "COLDVAULT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Sign in only this way instead of trying, in order: env, workload-identity,
    /// managed-identity, azure-cli.
    #[arg(long, value_name = "METHOD", value_parser = parse_auth)]
    pub auth: Option<AuthMethod>,

    /// Send at most N requests per second to each vault (decimals allowed). Without it the
    /// rate follows the vault's throttling: the most it admits.
    #[arg(long, value_name = "N", value_parser = parse_max_rate)]
    pub max_rate: Option<f64>,
}

fn parse_auth(text: &str) -> Result<AuthMethod, String> {
    text.parse()
        .map_err(|e: crate::vault::credentials::UnknownAuthMethod| e.to_string())
}

/// `--max-rate`: a positive, finite number of requests per second.
fn parse_max_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: give requests per second, a number above 0 (e.g. 50 or 0.5)"
        )),
    }
}

impl ConnectArgs {
    /// Connection options with this process's `AZURE_*` environment.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            ca_cert: self.ca_cert.clone(),
            auth: self.auth,
            max_rate: self.max_rate,
            ..ConnectOptions::from_process_env()
        }
    }
}

/// Parses `--vault NAME|URL`; a bad one is a usage error with a hint.
pub fn parse_vault(input: &str) -> Result<VaultUrl, CliError> {
    VaultUrl::parse(input).map_err(|e| {
        CliError::usage(format!("--vault {input:?}: {e}")).with_hint(
            "give a vault name (3-24 letters, digits and dashes) or its URL, \
             e.g. https://NAME.vault.azure.net/",
        )
    })
}

/// Connects and signs in, turning failures into errors people can act on.
pub async fn connect(url: &VaultUrl, options: &ConnectOptions) -> Result<AzureVault, CliError> {
    AzureVault::connect(url, options)
        .await
        .map_err(|e| vault_error(url.name(), &e))
}

/// A vault-wide failure as a command-line error, with the hint that fits it.
pub fn vault_error(vault: &str, err: &VaultError) -> CliError {
    let error = CliError::failed(format!("{vault}: {err}"));
    match err {
        VaultError::Authentication(_) | VaultError::Unauthorized { .. } => error.with_hint(
            "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or run `az login`), \
             or pin one method with --auth",
        ),
        VaultError::Forbidden { .. } => error.with_hint(
            "the identity lacks a permission on this vault: see README.md, \"Permissions\"",
        ),
        VaultError::Setup(_) => {
            error.with_hint("check --ca-cert (or COLDVAULT_CA_CERT): it must be a PEM file")
        }
        _ => error,
    }
}
