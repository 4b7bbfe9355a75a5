//! Reaching a HashiCorp Vault / OpenBao KV v2 mount from the command line: the address
//! (`bao+https://HOST:PORT/MOUNT[/PATH]`), the credential and options from the environment
//! (`VAULT_TOKEN`, `BAO_TOKEN`, AppRole, `VAULT_NAMESPACE`, `VAULT_CACERT`), `--timeout` and
//! `--ca-cert`, and the one-line errors a failed sign-in or request becomes.

use crate::cli::connect::ConnectArgs;
use crate::error::CliError;
use crate::kv::KvAddress;
use crate::kv::client::{KvAuth, KvClient, KvError, KvErrorKind, KvOptions};

/// Parses a KV address given to `flag`; a bad one is a usage error (exit 2).
pub fn parse_kv_address(flag: &str, input: &str) -> Result<KvAddress, CliError> {
    KvAddress::parse(input).map_err(|e| {
        CliError::usage(format!("{flag}: {e}"))
            .with_hint("a KV address is bao+https://HOST:PORT/MOUNT[/PATH] (or vault+https://…)")
    })
}

/// Signs in to the mount at `address` with the credential of this process's environment.
/// Every failure is one line with a hint (exit 1), naming the address and never a token.
pub async fn connect_kv(address: &KvAddress, connect: &ConnectArgs) -> Result<KvClient, CliError> {
    let shown = address.to_string();
    let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let auth = KvAuth::from_env(lookup).map_err(|e| kv_error(&shown, &e, "nothing done"))?;
    let timeout = connect
        .timeout
        .unwrap_or(crate::vault::transport::DEFAULT_TIMEOUT);
    let mut options = KvOptions::from_env(lookup, timeout);
    // `VAULT_CACERT` is the Vault CLI's own setting and wins; `--ca-cert` (or
    // `COLDVAULT_CA_CERT`) adds a root the same way for the local servers of tests and demos.
    if options.ca_cert.is_none() {
        options.ca_cert = connect.ca_cert.clone();
    }
    KvClient::connect(address, auth, options)
        .await
        .map_err(|e| kv_error(&shown, &e, "nothing done"))
}

/// A KV failure as the command's error: `ADDRESS: what failed; outcome`, with the client's
/// hint or one for its kind.
pub fn kv_error(address: &str, err: &KvError, outcome: &str) -> CliError {
    let hint = err.hint.clone().unwrap_or_else(|| {
        match err.kind {
            KvErrorKind::NoCredential => {
                "set VAULT_TOKEN (or BAO_TOKEN), or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole"
            }
            KvErrorKind::PermissionDenied => {
                "the token is wrong, expired, or its policy does not cover this mount: \
                 README.md (\"Restore runbooks\", KV mounts) gives the policy each command needs"
            }
            KvErrorKind::Sealed => "unseal the server (bao operator unseal), then run again",
            KvErrorKind::NoMount => {
                "check the mount in the address (bao secrets list shows the mounts; it must be \
                 a KV version 2 mount)"
            }
            KvErrorKind::Network => "check the address and that the server is reachable",
            KvErrorKind::NotFound | KvErrorKind::CasMismatch | KvErrorKind::Other => {
                "run again; if it persists, check the server's log"
            }
        }
        .to_owned()
    });
    CliError::failed(format!("{address}: {err}; {outcome}")).with_hint(hint)
}
