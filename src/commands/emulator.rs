//! `coldvault emulator`: runs the local Key Vault until SIGINT or SIGTERM. When it is ready it
//! prints one JSON line on stdout (the [`crate::emulator::Ready`] line), or with `--print-env`
//! the same as shell `export` lines ([`shell_env`]); logs go to stderr.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::emulator::{self, AuthMode, EmulatorConfig, VaultSpec};
use crate::error::{CliError, ExitCode};

/// Arguments of `coldvault emulator`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault emulator --vault prod --vault dr --vault other,subscription=sub-b --port 8443
  coldvault emulator --vault prod --latency 20 --budget 4000 --state-dir ./kv-state
  coldvault emulator --vault prod --vault other,tenant=contoso.example --print-env > kv.env &

Exit codes: 0 stopped cleanly (SIGINT or SIGTERM), 1 could not start, 2 usage.")]
pub struct EmulatorArgs {
    /// A vault to serve (repeatable; the first is the default for `localhost`):
    /// NAME[,subscription=ID][,resource-group=RG][,location=REGION][,tenant=T][,tag=KEY=VALUE]…[,sku=standard|premium][,purge-protection][,retention-days=N]
    #[arg(long = "vault", value_name = "SPEC")]
    pub vaults: Vec<String>,

    /// A soft-deleted vault Azure Resource Manager lists under deletedVaults (repeatable; same
    /// SPEC as --vault); it is not served.
    #[arg(long = "deleted-vault", value_name = "SPEC")]
    pub deleted_vaults: Vec<String>,

    /// A Managed HSM Azure Resource Manager lists (repeatable; same SPEC as --vault); it has no
    /// data plane here.
    #[arg(long = "managed-hsm", value_name = "SPEC")]
    pub managed_hsms: Vec<String>,

    /// Port to listen on; 0 picks a free one (the ready line tells which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Persist vaults, the CA and keys here (atomic writes); in memory when absent.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// JSON file declaring vaults and objects to start with.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,

    /// Token checking: `jwt` (tokens from the built-in issuer) or `off` (any bearer).
    #[arg(long, value_enum, default_value_t = AuthArg::Jwt)]
    pub auth: AuthArg,

    /// Page size of lists when the client sends no maxresults (1-25).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=25))]
    pub page_size: u32,

    /// Make pages ragged like Azure's: some empty (still with a nextLink), some short.
    #[arg(long)]
    pub ragged_pages: bool,

    /// Milliseconds added to every vault request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency: u64,

    /// Requests per 10 seconds per vault before 429 with Retry-After.
    #[arg(long, value_name = "N")]
    pub budget: Option<u32>,

    /// Fraction (0-1) of vault requests answered with a random 429, 500 or 503.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub fault_rate: f64,

    /// A fault to arm at start (repeatable), as the admin endpoint takes it:
    /// KIND[,count=N][,rate=P][,method=M][,path=PREFIX-OR-GLOB][,vault=NAME][,retry-after=S][,delay-ms=MS];
    /// KIND is throttle, internal, unavailable, delay, drop, or lost (the write commits, then
    /// the connection closes without an answer).
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,

    /// Seconds a purged name stays unusable (409 ObjectIsBeingDeleted).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub purge_window: f64,

    /// Seconds before a delete shows in the deleted list (and a recover in the live one).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub delete_delay: f64,

    /// Seconds a backup of an object with more than 500 versions is held before it is
    /// answered 504 (Azure's backup of such an object times out).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub backup_timeout: f64,

    /// Extra DNS name or IP for the server certificate (repeatable).
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,

    /// Fixed tenant id for the built-in issuer (random when absent).
    #[arg(long)]
    pub tenant_id: Option<String>,

    /// Fixed client id for the built-in issuer (random when absent); its secret comes from
    /// COLDVAULT_EMULATOR_CLIENT_SECRET, never from the command line.
    #[arg(long)]
    pub client_id: Option<String>,

    /// When ready, print shell `export` lines (AZURE_*, COLDVAULT_CA_CERT, the endpoints) and
    /// the /etc/hosts lines of the vaults instead of the JSON ready line; the last line is `#ready`.
    #[arg(long)]
    pub print_env: bool,
}

/// `--auth` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    Off,
    Jwt,
}

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
