//! `--ca-cert`, `--auth`, `--timeout` and `--max-rate`, shared by the commands that reach a
//! vault, and the translation of vault failures into the command line's errors and hints.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::CliError;
use crate::vault::azure::{AzureVault, ConnectOptions};
use crate::vault::credentials::AuthMethod;
use crate::vault::transport::{DEFAULT_TIMEOUT, format_duration};
use crate::vault::{NetworkCause, NetworkFailure, NetworkWarning, VaultError, VaultUrl};

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

    /// Give up on a request, its retries included, after this long (e.g. 30s, 2m, 1m30s)
    /// [default: 2m]. A connection attempt waits at most 10s (or half of this).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

/// Parses `--timeout`: whole numbers with `ms`, `s`, `m` or `h` (`90s`, `2m`, `1m30s`); a bare
/// number is seconds. Zero is refused: it would give up before trying.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration: use e.g. 30s, 2m or 1m30s");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return (seconds > 0)
            .then(|| Duration::from_secs(seconds))
            .ok_or_else(|| "the timeout must be longer than 0".to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" | "min" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err("the timeout must be longer than 0".to_owned());
    }
    Ok(total)
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
    use super::*;

    #[test]
    fn timeouts_parse_in_the_usual_units() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_timeout("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "0", "0s", "s", "3 days", "-5s", "1.5s", "m5"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

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
