//! `--ca-cert`, `--auth`, `--timeout` and `--max-rate`, shared by the commands that reach a
//! vault, and the translation of vault failures into the command line's errors and hints.

pub use crate::cli::connect::{ConnectArgs, parse_timeout};
use crate::error::CliError;
use crate::vault::azure::{AzureVault, ConnectOptions};
use crate::vault::transport::{DEFAULT_TIMEOUT, format_duration};
use crate::vault::{NetworkCause, NetworkFailure, NetworkWarning, VaultError, VaultUrl};

impl ConnectArgs {
    /// Connection options with this process's `AZURE_*` environment.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            ca_cert: self.ca_cert.clone(),
            auth: self.auth,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            // One line as soon as a host does not answer, instead of silence until the
            // deadline; stderr, like every message.
            network_warning: Some(NetworkWarning::new(|line| {
                eprintln!("coldvault: warning: {line}");
            })),
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
        VaultError::Network(failure) => network_error(vault, failure),
        VaultError::Authentication(auth) => error.with_hint(auth.hint()),
        VaultError::Unauthorized { .. } => error.with_hint(
            "the vault refused the identity's token: the identity must belong to the vault's \
             tenant (see AZURE_TENANT_ID), or pin another method with --auth",
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

/// A request that got no answer: one line naming the host and the cause, and what to do.
fn network_error(vault: &str, failure: &NetworkFailure) -> CliError {
    // The host is named in the failure; the vault's name is only added when the host is not
    // the vault's (the token endpoint).
    let is_vault_host = failure
        .host
        .split(':')
        .next()
        .is_some_and(|host| host.split('.').next() == Some(vault));
    let mut message = NetworkFailure {
        gave_up_after: None,
        ..failure.clone()
    }
    .to_string();
    if !is_vault_host {
        message = format!("{vault}: {message}");
    } else if failure.cause == NetworkCause::DoesNotResolve {
        message.push_str(": is the vault name right?");
    }
    if let Some(waited) = failure.gave_up_after {
        message.push_str(&format!(" (gave up after {})", format_duration(waited)));
    }
    let after = if failure.gave_up_after.is_some() {
        "; a longer --timeout waits more"
    } else {
        ""
    };
    let hint = match &failure.cause {
        NetworkCause::DoesNotResolve => format!(
            "give the vault's name as in the portal (3-24 letters, digits and dashes) or its \
             URL, e.g. https://NAME.vault.azure.net/ (sovereign clouds: vault.azure.cn, \
             vault.usgovcloudapi.net); check DNS for private endpoints{after}"
        ),
        NetworkCause::Refused => format!(
            "nothing accepts connections there: check the URL and its port, a proxy \
             (HTTPS_PROXY) or firewall in between, and that the local Key Vault is running if \
             it is one{after}"
        ),
        NetworkCause::TimedOut => format!(
            "no answer in time: check the network path to the vault (firewall, proxy, private \
             endpoint, the vault's network rules){after}"
        ),
        NetworkCause::UntrustedCertificate(_) => "trust its root with --ca-cert PATH (or \
             COLDVAULT_CA_CERT) if it is the local Key Vault (its ca.pem) or a TLS-inspecting \
             proxy; verification cannot be turned off"
            .to_owned(),
        NetworkCause::Other(_) => {
            format!("check the network path to the vault (proxy, firewall){after}")
        }
    };
    CliError::failed(message).with_hint(hint)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_unresolvable_vault_asks_about_its_name() {
        let failure = NetworkFailure {
            host: "kv1.vault.invalid".into(),
            cause: NetworkCause::DoesNotResolve,
            gave_up_after: Some(Duration::from_secs(2)),
        };
        let err = vault_error("kv1", &VaultError::Network(failure));
        assert_eq!(
            err.message,
            "kv1.vault.invalid does not resolve: is the vault name right? (gave up after 2 s)"
        );
        assert!(err.hint.unwrap().contains("https://NAME.vault.azure.net/"));
    }
}
