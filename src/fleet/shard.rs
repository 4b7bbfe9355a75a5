//! Shards: spreading a fleet over N workers that never talk to each other (a Kubernetes
//! Indexed Job, a CI matrix, N scheduled Container Apps jobs).
//!
//! Each worker lists the whole fleet and keeps the vaults of its own shard. A vault's shard
//! is decided by rendezvous (highest-random-weight) hashing of its identity — the ARM resource
//! id, lower-cased — against each shard number: the shard whose SHA-256 of `identity/shard`
//! is highest wins. So:
//! - every vault lands in exactly one shard of N, whichever worker computes it;
//! - a vault's shard depends on its own identity and N only: a vault that appears or
//!   disappears moves no other vault;
//! - going from N to N+1 shards moves only the vaults the new shard wins (about 1/(N+1) of
//!   them), where `hash mod N` would move almost all.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The most shards a fleet can be cut into (a Kubernetes Indexed Job allows 100,000
/// completions; a shard's cost is one hash per vault).
pub const MAX_SHARDS: u32 = 100_000;

/// One shard of N: `index` from 0 to `count - 1`, as `JOB_COMPLETION_INDEX` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Why a shard could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("'{0}' is not a shard: write I/N, e.g. 0/4 (I from 0 to N-1)")]
    Syntax(String),
    #[error("shard index {index} is out of range for {count} shards (0 to {})", count - 1)]
    IndexOutOfRange { index: u32, count: u32 },
    #[error("the number of shards must be 1 to {MAX_SHARDS}, not {0}")]
    CountOutOfRange(u64),
}

impl Shard {
    /// Shard `index` of `count`, checked.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::CountOutOfRange(u64::from(count)));
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// Whether the vault of `identity` belongs to this shard.
    pub fn contains(&self, identity: &str) -> bool {
        shard_of(identity, self.count) == self.index
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// `I/N`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(text.to_owned());
        let (index, count) = text.trim().split_once('/').ok_or_else(syntax)?;
        let index: u32 = index.trim().parse().map_err(|_| syntax())?;
        let count: u64 = count.trim().parse().map_err(|_| syntax())?;
        let count = u32::try_from(count).map_err(|_| ShardError::CountOutOfRange(count))?;
        Shard::new(index, count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (0 to `count - 1`) of the vault whose identity is `identity` (callers pass the
/// lower-cased resource id). `count` must be at least 1.
pub fn shard_of(identity: &str, count: u32) -> u32 {
    let mut best = (0u64, 0u32);
    for shard in 0..count.max(1) {
        let score = weight(identity, shard);
        // Ties (a 2^-64 chance) go to the lower shard, the same on every worker.
        if shard == 0 || score > best.0 {
            best = (score, shard);
        }
    }
    best.1
}

/// The rendezvous weight of `identity` for `shard`: the first 8 bytes of
/// SHA-256(`identity` + `/` + shard in decimal), big-endian. Stable across versions and
/// platforms: changing it would reshuffle every fleet.
fn weight(identity: &str, shard: u32) -> u64 {
    let digest = Sha256::digest(format!("{identity}/{shard}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "/subscriptions/sub-{}/resourcegroups/rg-{}/providers/microsoft.keyvault/vaults/kv-{i:03}",
                    i % 3,
                    i % 5
                )
            })
            .collect()
    }

    #[test]
    fn every_vault_lands_in_exactly_one_shard_for_n_1_to_7() {
        let vaults = fleet(200);
        for count in 1..=7 {
            let mut per_shard = vec![0usize; count as usize];
            for vault in &vaults {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().contains(vault))
                    .collect();
                assert_eq!(owners.len(), 1, "{vault} in {owners:?} of {count}");
                per_shard[owners[0] as usize] += 1;
            }
            assert_eq!(per_shard.iter().sum::<usize>(), vaults.len());
            // Spread, not piled up: with 200 vaults no shard of N <= 7 is empty.
            assert!(per_shard.iter().all(|&n| n > 0), "{count}: {per_shard:?}");
        }
    }

    #[test]
    fn a_vault_appearing_or_disappearing_moves_no_other_vault() {
        let vaults = fleet(60);
        for count in 1..=7 {
            let before: Vec<u32> = vaults.iter().map(|v| shard_of(v, count)).collect();
            // A shard is a function of the vault and N alone: computing it with a vault
            // more or less in the fleet gives every other vault the same shard.
            let mut grown = vaults.clone();
            grown.push(
                "/subscriptions/sub-9/resourcegroups/rg/providers/microsoft.keyvault/vaults/new-kv"
                    .into(),
            );
            let after: Vec<u32> = grown[..vaults.len()]
                .iter()
                .map(|v| shard_of(v, count))
                .collect();
            assert_eq!(before, after);
            let shrunk: Vec<u32> = vaults[1..].iter().map(|v| shard_of(v, count)).collect();
            assert_eq!(&before[1..], &shrunk[..]);
        }
    }

    #[test]
    fn adding_a_shard_moves_only_vaults_into_the_new_shard() {
        let vaults = fleet(300);
        for count in 1..=6 {
            let mut moved = 0;
            for vault in &vaults {
                let (old, new) = (shard_of(vault, count), shard_of(vault, count + 1));
                if old != new {
                    assert_eq!(
                        new, count,
                        "{vault} moved {old} -> {new}, not to the new shard"
                    );
                    moved += 1;
                }
            }
            // About 1/(N+1) move; `hash mod N` would move about N/(N+1).
            let expected = vaults.len() / (count as usize + 1);
            assert!(moved < expected * 2, "{count}: {moved} moved");
        }
    }

    #[test]
    fn shards_are_stable_across_versions() {
        // Pinned: a change here reshuffles every fleet's shards between two releases.
        let id = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/microsoft.keyvault/vaults/prod-kv";
        let shards: Vec<u32> = (1..=7).map(|n| shard_of(id, n)).collect();
        assert_eq!(shards, PINNED.to_vec());
    }

    const PINNED: [u32; 7] = [0, 1, 1, 1, 1, 1, 1];

    #[test]
    fn shards_parse_as_index_over_count() {
        assert_eq!("0/4".parse(), Ok(Shard { index: 0, count: 4 }));
        assert_eq!(" 3 / 4 ".parse(), Ok(Shard { index: 3, count: 4 }));
        assert_eq!(
            "4/4".parse::<Shard>(),
            Err(ShardError::IndexOutOfRange { index: 4, count: 4 })
        );
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::CountOutOfRange(0)));
        for bad in ["", "1", "a/b", "-1/4", "1/4/5", "1.5/4"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard::new(2, 7).unwrap().to_string(), "2/7");
    }
}
