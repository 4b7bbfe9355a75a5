//! Which discovered vaults a fleet run takes: `--vault-tag KEY=VALUE` (every one must match),
//! `--resource-group RG` (any one), `--name GLOB` (any one) and `--exclude GLOB` (none), then
//! the shard. Names and resource groups compare case-insensitively, as Azure's do; tag names
//! too (ARM treats them so), tag values exactly.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::DiscoveredVault;
use super::shard::Shard;

/// A `--vault-tag` filter: `KEY=VALUE`, or `KEY` alone for "has the tag".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: Option<String>,
}

impl TagFilter {
    /// Parses `KEY=VALUE` or `KEY`.
    pub fn parse(text: &str) -> Result<Self, SelectError> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.to_owned())),
            None => (text.trim(), None),
        };
        if key.is_empty() {
            return Err(SelectError::Tag(text.to_owned()));
        }
        Ok(Self {
            key: key.to_owned(),
            value,
        })
    }

    fn matches(&self, vault: &DiscoveredVault) -> bool {
        vault.tags.iter().any(|(key, value)| {
            key.eq_ignore_ascii_case(&self.key) && self.value.as_ref().is_none_or(|v| v == value)
        })
    }
}

/// Why a filter could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("--vault-tag '{0}': write KEY=VALUE (or KEY for any value)")]
    Tag(String),
    #[error("{flag} '{glob}': {reason}")]
    Glob {
        flag: &'static str,
        glob: String,
        reason: String,
    },
}

/// The filters of one run, parsed.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    tags: Vec<TagFilter>,
    resource_groups: Vec<String>,
    names: Option<GlobSet>,
    excludes: Option<GlobSet>,
    shard: Option<Shard>,
}

impl Selection {
    /// Builds a selection; empty lists select everything.
    pub fn new(
        tags: &[String],
        resource_groups: &[String],
        names: &[String],
        excludes: &[String],
        shard: Option<Shard>,
    ) -> Result<Self, SelectError> {
        Ok(Self {
            tags: tags
                .iter()
                .map(|t| TagFilter::parse(t))
                .collect::<Result<_, _>>()?,
            resource_groups: resource_groups.to_vec(),
            names: globs("--name", names)?,
            excludes: globs("--exclude", excludes)?,
            shard,
        })
    }

    /// The shard this run takes, if any.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// Whether `vault` passes the tag, resource-group and name filters (not the shard).
    pub fn matches(&self, vault: &DiscoveredVault) -> bool {
        let name = vault.name.to_ascii_lowercase();
        self.tags.iter().all(|t| t.matches(vault))
            && (self.resource_groups.is_empty()
                || self
                    .resource_groups
                    .iter()
                    .any(|rg| rg.eq_ignore_ascii_case(&vault.resource_group)))
            && self.names.as_ref().is_none_or(|set| set.is_match(&name))
            && self
                .excludes
                .as_ref()
                .is_none_or(|set| !set.is_match(&name))
    }

    /// Whether `vault` is in this run's shard (every vault is, without `--shard`).
    pub fn in_shard(&self, vault: &DiscoveredVault) -> bool {
        self.shard.is_none_or(|s| s.contains(&vault.identity()))
    }

    /// The vaults of `found` this run takes: filters, then the shard. Order is kept.
    pub fn apply(&self, found: &[DiscoveredVault]) -> Vec<DiscoveredVault> {
        found
            .iter()
            .filter(|v| self.matches(v) && self.in_shard(v))
            .cloned()
            .collect()
    }
}

/// Case-insensitive globs over vault names (`*`, `?`, `[…]`); `None` for none given.
fn globs(flag: &'static str, patterns: &[String]) -> Result<Option<GlobSet>, SelectError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob: Glob = GlobBuilder::new(&pattern.to_ascii_lowercase())
            .literal_separator(false)
            .build()
            .map_err(|e| SelectError::Glob {
                flag,
                glob: pattern.clone(),
                reason: e.kind().to_string(),
            })?;
        builder.add(glob);
    }
    builder.build().map(Some).map_err(|e| SelectError::Glob {
        flag,
        glob: patterns.join(","),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::ResourceKind;
    use super::*;

    fn vault(name: &str, rg: &str, tags: &[(&str, &str)]) -> DiscoveredVault {
        DiscoveredVault {
            kind: ResourceKind::Vault,
            name: name.into(),
            id: format!(
                "/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"
            ),
            subscription: "s".into(),
            resource_group: rg.into(),
            location: "westeurope".into(),
            tenant: None,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            url: None,
            soft_delete: Some(true),
            soft_delete_retention_days: Some(90),
            purge_protection: false,
            deletion_date: None,
            scheduled_purge_date: None,
        }
    }

    fn names(selection: &Selection, vaults: &[DiscoveredVault]) -> Vec<String> {
        selection
            .apply(vaults)
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    #[test]
    fn filters_select_exactly() {
        let vaults = vec![
            vault("prod-a", "rg-prod", &[("env", "prod"), ("team", "pay")]),
            vault("prod-b", "RG-PROD", &[("Env", "prod")]),
            vault("dev-a", "rg-dev", &[("env", "dev")]),
            vault("scratch", "rg-dev", &[]),
        ];
        let all = Selection::new(&[], &[], &[], &[], None).unwrap();
        assert_eq!(names(&all, &vaults).len(), 4);
        let tag = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let s = Selection::new(&tag(&["env=prod"]), &[], &[], &[], None).unwrap();
        assert_eq!(names(&s, &vaults), ["prod-a", "prod-b"]);
        let s = Selection::new(&tag(&["env=prod", "team=pay"]), &[], &[], &[], None).unwrap();
        assert_eq!(names(&s, &vaults), ["prod-a"]);
        let s = Selection::new(&tag(&["env=PROD"]), &[], &[], &[], None).unwrap();
        assert!(names(&s, &vaults).is_empty(), "tag values compare exactly");
        let s = Selection::new(&tag(&["env"]), &[], &[], &[], None).unwrap();
        assert_eq!(names(&s, &vaults), ["prod-a", "prod-b", "dev-a"]);
        let s = Selection::new(&[], &tag(&["rg-prod"]), &[], &[], None).unwrap();
        assert_eq!(names(&s, &vaults), ["prod-a", "prod-b"]);
        let s = Selection::new(&[], &[], &tag(&["PROD-*", "scr?tch"]), &[], None).unwrap();
        assert_eq!(names(&s, &vaults), ["prod-a", "prod-b", "scratch"]);
        let s = Selection::new(&[], &[], &[], &tag(&["*-a"]), None).unwrap();
        assert_eq!(names(&s, &vaults), ["prod-b", "scratch"]);
        let s = Selection::new(&[], &tag(&["rg-dev"]), &[], &tag(&["dev-*"]), None).unwrap();
        assert_eq!(names(&s, &vaults), ["scratch"]);
    }

    #[test]
    fn bad_filters_are_named() {
        assert_eq!(
            TagFilter::parse("=x"),
            Err(SelectError::Tag("=x".to_owned()))
        );
        let err = Selection::new(&[], &[], &["[".to_owned()], &[], None).unwrap_err();
        assert!(err.to_string().starts_with("--name '['"), "{err}");
    }
}
