//! `--ca-cert`, `--auth`, `--timeout` and `--max-rate`, shared by the commands that reach a
//! vault: the clap structure and its value parsers. `crate::commands::connect_args` turns
//! them into connection options.

use std::path::PathBuf;
use std::time::Duration;

use crate::vault::credentials::AuthMethod;

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

/// Parses `--auth`: one of the sign-in methods.
pub fn parse_auth(text: &str) -> Result<AuthMethod, String> {
    text.parse()
        .map_err(|e: crate::vault::credentials::UnknownAuthMethod| e.to_string())
}

/// `--max-rate`: a positive, finite number of requests per second.
pub fn parse_max_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: give requests per second, a number above 0 (e.g. 50 or 0.5)"
        )),
    }
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
}
