//! `coldvault emulator`: runs the local Key Vault until SIGINT or SIGTERM. When it is ready it
//! prints one JSON line on stdout (the [`crate::emulator::Ready`] line), or with `--print-env`
//! the same as shell `export` lines ([`shell_env`]); logs go to stderr.

use std::io::Write;
use std::time::Duration;

pub use crate::cli::emulator::{AuthArg, EmulatorArgs};
use crate::emulator::{self, AuthMode, EmulatorConfig, VaultSpec};
use crate::error::{CliError, ExitCode};

fn seconds(flag: &str, value: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| CliError::usage(format!("{flag} must be a non-negative number of seconds")))
}

/// Resolves the arguments into an [`EmulatorConfig`].
pub fn config(args: &EmulatorArgs) -> Result<EmulatorConfig, CliError> {
    let vaults = args
        .vaults
        .iter()
        .map(|text| VaultSpec::parse(text).map_err(|e| CliError::usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let specs = |texts: &[String]| {
        texts
            .iter()
            .map(|text| VaultSpec::parse(text).map_err(|e| CliError::usage(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    let deleted_vaults = specs(&args.deleted_vaults)?;
    let managed_hsms = specs(&args.managed_hsms)?;
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(CliError::usage("--fault-rate must be between 0 and 1"));
    }
    Ok(EmulatorConfig {
        vaults,
        deleted_vaults,
        managed_hsms,
        bind: args.bind,
        port: args.port,
        state_dir: args.state_dir.clone(),
        seed: args.seed.clone(),
        auth: match args.auth {
            AuthArg::Off => AuthMode::Off,
            AuthArg::Jwt => AuthMode::Jwt,
        },
        page_size: args.page_size,
        ragged_pages: args.ragged_pages,
        latency: Duration::from_millis(args.latency),
        budget: args.budget,
        fault_rate: args.fault_rate,
        faults: args
            .faults
            .iter()
            .map(|text| {
                emulator::faults::FaultSpec::parse(text)
                    .map_err(|e| CliError::usage(format!("--fault {text}: {e}")))
            })
            .collect::<Result<_, _>>()?,
        purge_window: seconds("--purge-window", args.purge_window)?,
        delete_delay: seconds("--delete-delay", args.delete_delay)?,
        backup_timeout: seconds("--backup-timeout", args.backup_timeout)?,
        extra_names: args.tls_names.clone(),
        tenant_id: args.tenant_id.clone(),
        client_id: args.client_id.clone(),
        client_secret: std::env::var("COLDVAULT_EMULATOR_CLIENT_SECRET")
            .ok()
            .map(emulator::store::Redacted),
    })
}

/// Runs `coldvault emulator`.
pub async fn run(args: EmulatorArgs) -> Result<ExitCode, CliError> {
    let config = config(&args)?;
    // Listen for signals before the ready line: a supervisor may stop us right after reading it.
    let stop = shutdown_signal()?;
    let running = emulator::start(config).await.map_err(|e| match e {
        emulator::EmulatorError::Config(_) => CliError::usage(e.to_string()),
        emulator::EmulatorError::Bind(..) => {
            CliError::failed(e.to_string()).with_hint("pick another --port, or 0 for any free port")
        }
        other => CliError::failed(other.to_string()),
    })?;
    let line = if args.print_env {
        shell_env(running.ready())
    } else {
        serde_json::to_string(running.ready())
            .map_err(|e| CliError::failed(format!("cannot render the ready line: {e}")))?
    };
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::failed(format!("cannot write the ready line: {e}")))?;
    }
    tracing::info!(
        "local Key Vault listening on port {}; admin at {}",
        running.port(),
        running.admin_url()
    );
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(ExitCode::Ok)
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The ready line as POSIX shell lines: `export` lines a script sources (the first tenant's
/// credentials under Azure's variable names, the CA under `COLDVAULT_CA_CERT` and
/// `REQUESTS_CA_BUNDLE`, the endpoints, one `COLDVAULT_EMULATOR_VAULT_NAME` per vault), the
/// other tenants' clients and the `/etc/hosts` lines as comments (`#hosts 127.0.0.1 NAME…`),
/// and `#ready` last, so a reader of a file being written knows it is complete.
pub fn shell_env(ready: &emulator::Ready) -> String {
    let mut out = String::from(
        "# coldvault emulator: source these lines (. ./FILE) to point Azure clients at it.\n",
    );
    let mut export = |name: &str, value: &str| {
        out.push_str(&format!("export {name}={}\n", shell_quote(value)));
    };
    export("AZURE_TENANT_ID", &ready.tenant_id);
    export("AZURE_CLIENT_ID", &ready.client_id);
    export("AZURE_CLIENT_SECRET", &ready.client_secret);
    export("AZURE_AUTHORITY_HOST", &ready.authority_host);
    export("COLDVAULT_CA_CERT", &ready.ca_cert);
    // Python's requests (the Azure CLI, azure-identity) reads its CA bundle from here.
    export("REQUESTS_CA_BUNDLE", &ready.ca_cert);
    export("COLDVAULT_EMULATOR_ARM_ENDPOINT", &ready.arm_endpoint);
    export("COLDVAULT_EMULATOR_ADMIN", &ready.admin);
    for (name, url) in &ready.vaults {
        let var = name.to_ascii_uppercase().replace('-', "_");
        export(&format!("COLDVAULT_EMULATOR_VAULT_{var}"), url);
    }
    out.push_str(&format!(
        "# Programs that take no CA option: SSL_CERT_FILE={} replaces OpenSSL's trust store; NODE_EXTRA_CA_CERTS={} adds to Node's.\n",
        shell_quote(&ready.ca_cert),
        shell_quote(&ready.ca_cert)
    ));
    for (tenant, client) in &ready.tenants {
        if *tenant != ready.tenant_id {
            out.push_str(&format!(
                "# tenant {tenant}: AZURE_TENANT_ID={} AZURE_CLIENT_ID={} AZURE_CLIENT_SECRET={}\n",
                shell_quote(tenant),
                shell_quote(&client.client_id),
                shell_quote(&client.client_secret)
            ));
        }
    }
    out.push_str(
        "# /etc/hosts lines: glibc programs (Python, curl) do not resolve *.localhost without them.\n# Add them with: sed -n 's/^#hosts //p' FILE | sudo tee -a /etc/hosts\n",
    );
    for name in ready.vaults.keys() {
        out.push_str(&format!("#hosts 127.0.0.1 {name}.vault.localhost\n"));
    }
    out.push_str("#ready");
    out
}

/// A future that completes on SIGINT or SIGTERM; the handlers are installed when it is made.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| CliError::failed(format!("cannot listen for SIGTERM: {e}")))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| CliError::failed(format!("cannot listen for SIGINT: {e}")))?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
