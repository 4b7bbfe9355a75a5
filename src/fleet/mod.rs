//! Fleets of vaults: finding every Key Vault an identity can see through Azure Resource Manager
//! ([`arm`]), choosing among them ([`select`]: tags, resource groups, name globs) and spreading
//! them over workers with no coordinator ([`shard`]: a stable hash of each vault's resource id).
//!
//! Nothing here reads a vault's contents or knows the archive: `coldvault vaults` prints what
//! discovery found, and `coldvault backup --subscription …` hands the selected vaults' URLs to
//! the single-vault backup, one at a time per vault.

pub mod arm;
pub mod select;
pub mod shard;

use std::collections::BTreeMap;

use serde::Serialize;

/// What kind of Key Vault resource discovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// A vault (`Microsoft.KeyVault/vaults`): backed up.
    Vault,
    /// A Managed HSM (`Microsoft.KeyVault/managedHSMs`): listed, not supported.
    ManagedHsm,
    /// A soft-deleted vault (`Microsoft.KeyVault/deletedVaults`): listed, nothing to read until
    /// it is recovered.
    DeletedVault,
}

impl ResourceKind {
    /// What a fleet backup does with a resource of this kind, in words.
    pub fn action(self) -> &'static str {
        match self {
            ResourceKind::Vault => "backup",
            ResourceKind::ManagedHsm => "not supported (Managed HSM)",
            ResourceKind::DeletedVault => "not taken (soft-deleted vault)",
        }
    }
}

/// One Key Vault resource found through Azure Resource Manager. Holds names, ids and
/// settings only: ARM never returns a vault's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredVault {
    pub kind: ResourceKind,
    pub name: String,
    /// The ARM resource id as ARM spells it (for a deleted vault, the former vault's id).
    pub id: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    /// The tenant ARM names for the vault, when it does.
    pub tenant: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The data-plane URL (`properties.vaultUri`, `hsmUri`); `None` for a deleted vault.
    pub url: Option<String>,
    /// `properties.enableSoftDelete` (Azure turns it on for every vault since 2020).
    pub soft_delete: Option<bool>,
    pub soft_delete_retention_days: Option<u32>,
    /// `enablePurgeProtection` (`purgeProtectionEnabled` for a deleted vault); Azure omits
    /// the flag until it is on.
    pub purge_protection: bool,
    /// For a deleted vault: when it was deleted and when Azure purges it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_purge_date: Option<String>,
}

impl DiscoveredVault {
    /// The identity shards hash: the resource id, lower-cased (ARM ids are case-insensitive,
    /// and the same vault must land in the same shard whichever spelling a listing used).
    pub fn identity(&self) -> String {
        self.id.to_ascii_lowercase()
    }
}

/// The resource group named by an ARM id (`/subscriptions/S/resourceGroups/RG/…`).
pub fn resource_group_of(id: &str) -> Option<String> {
    let mut segments = id.split('/').filter(|s| !s.is_empty());
    while let Some(segment) = segments.next() {
        if segment.eq_ignore_ascii_case("resourceGroups") {
            return segments.next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_groups_are_read_from_ids_in_any_case() {
        let id = "/subscriptions/s1/resourceGroups/rg-1/providers/Microsoft.KeyVault/vaults/kv";
        assert_eq!(resource_group_of(id).as_deref(), Some("rg-1"));
        let id = "/subscriptions/s1/resourcegroups/RG/providers/Microsoft.KeyVault/vaults/kv";
        assert_eq!(resource_group_of(id).as_deref(), Some("RG"));
        assert_eq!(resource_group_of("/subscriptions/s1"), None);
    }
}
