//! `coldvault emulator`'s arguments.

use std::net::IpAddr;
use std::path::PathBuf;

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
