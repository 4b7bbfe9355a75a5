//! The fleet flags shared by `coldvault vaults` and `coldvault backup`: how a fleet is found
//! through Azure Resource Manager, narrowed and sharded, and how many vaults go at once.

/// Vaults backed up at once unless `--vault-concurrency` says otherwise: each vault has its
/// own throttle budget, so vaults in parallel add up; memory grows with this number, not
/// with the size of the fleet.
pub const DEFAULT_VAULT_CONCURRENCY: u16 = 8;

/// The environment variable an Indexed Job sets to each worker's index (with `--shards N`).
pub const JOB_INDEX_VARIABLE: &str = "JOB_COMPLETION_INDEX";

/// How a fleet is found and narrowed: shared by `coldvault vaults` and `coldvault backup`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DiscoveryArgs {
    /// Find the vaults of this subscription through Azure Resource Manager (repeatable).
    #[arg(
        long = "subscription",
        value_name = "ID",
        conflicts_with = "all_subscriptions"
    )]
    pub subscriptions: Vec<String>,

    /// Find the vaults of every subscription the identity sees.
    #[arg(long)]
    pub all_subscriptions: bool,

    /// Only vaults with this tag (KEY=VALUE, or KEY for any value); repeat: all must match.
    #[arg(long = "vault-tag", value_name = "KEY=VALUE")]
    pub vault_tags: Vec<String>,

    /// Only vaults of this resource group (repeatable: any of them).
    #[arg(long = "resource-group", value_name = "RG")]
    pub resource_groups: Vec<String>,

    /// Only vaults whose name matches this glob (repeatable: any of them).
    #[arg(long = "vault-name", value_name = "GLOB")]
    pub vault_names: Vec<String>,

    /// Leave out vaults whose name matches this glob (repeatable).
    #[arg(long = "vault-exclude", value_name = "GLOB")]
    pub vault_excludes: Vec<String>,

    /// Take only shard I of N (I from 0 to N-1): every vault is in exactly one shard, by a
    /// stable hash of its resource id.
    #[arg(long, value_name = "I/N", conflicts_with = "shards")]
    pub shard: Option<String>,

    /// Take the shard of this worker among N, its index read from JOB_COMPLETION_INDEX (a
    /// Kubernetes Indexed Job sets it).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,

    /// Azure Resource Manager to ask [default: https://management.azure.com/]; the local Key
    /// Vault's ready line gives its arm_endpoint.
    #[arg(long, value_name = "URL", env = "COLDVAULT_ARM_ENDPOINT")]
    pub arm_endpoint: Option<String>,
}

/// The fleet flags of `coldvault backup`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FleetBackupArgs {
    #[command(flatten)]
    pub discovery: DiscoveryArgs,

    /// Vaults backed up at once in a fleet run (each within its own throttle budget).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub vault_concurrency: u16,
}
