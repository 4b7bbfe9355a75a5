//! Two identities in one command: which credential variables each side of `copy` and `sync`
//! signs in with.
//!
//! A copy from a vault in tenant A to one in tenant B needs two service principals (or a
//! workload identity on one side and a managed identity on the other). Each side has a prefix
//! (`COLDVAULT_FROM_`, `COLDVAULT_TO_` for `copy`; `COLDVAULT_A_`, `COLDVAULT_B_` for `sync`)
//! and reads `PREFIX` + `TENANT_ID`, `CLIENT_ID`, `CLIENT_SECRET`, `CLIENT_CERTIFICATE_PATH`,
//! `FEDERATED_TOKEN_FILE` and `AUTHORITY_HOST`. The rule is all or nothing, so a side never
//! signs in with half of one identity and half of another: when any identity variable of the
//! side is set, the side's `AZURE_*` identity is exactly its own variables (one it leaves unset
//! stays unset); otherwise the side uses `AZURE_*` as every other command does. The authority
//! host is a property of the cloud, not of the identity: the side's own wins, `AZURE_AUTHORITY_HOST`
//! is the fallback. `COLDVAULT_CA_CERT` is shared. The result is an [`EnvSnapshot`] handed to
//! the existing credential chain, so every method, its order and its messages stay the same.

use std::fmt;

use crate::vault::EnvSnapshot;

/// The identity variables, without their `AZURE_` prefix.
const IDENTITY_SUFFIXES: &[&str] = &[
    "TENANT_ID",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "CLIENT_CERTIFICATE_PATH",
    "FEDERATED_TOKEN_FILE",
];

/// Variables the credential chain reads that are not part of one identity.
const SHARED_VARIABLES: &[&str] = &["COLDVAULT_CA_CERT"];

/// One side of a two-vault command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `copy --from`.
    From,
    /// `copy --to`.
    To,
    /// `sync`'s first vault.
    A,
    /// `sync`'s second vault.
    B,
}

impl Side {
    /// The side's variable prefix (`COLDVAULT_FROM_`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            Side::From => "COLDVAULT_FROM_",
            Side::To => "COLDVAULT_TO_",
            Side::A => "COLDVAULT_A_",
            Side::B => "COLDVAULT_B_",
        }
    }

    /// How the command line names the side's vault (`--from`, `--to`, `A`, `B`).
    pub fn argument(self) -> &'static str {
        match self {
            Side::From => "--from",
            Side::To => "--to",
            Side::A => "A",
            Side::B => "B",
        }
    }

    /// The side's name in messages (`from`, `to`, `A`, `B`).
    pub fn label(self) -> &'static str {
        match self {
            Side::From => "from",
            Side::To => "to",
            Side::A => "A",
            Side::B => "B",
        }
    }
}

/// Where a side's identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// Its own `COLDVAULT_<SIDE>_*` variables.
    Own(Side),
    /// The shared `AZURE_*` variables (or managed identity, or the Azure CLI).
    Shared,
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentitySource::Own(side) => write!(f, "{}*", side.prefix()),
            IdentitySource::Shared => f.write_str("AZURE_*"),
        }
    }
}

/// A side's resolved environment: what its credential chain reads, and where it came from.
/// `Debug` hides the client secret (see [`EnvSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideIdentity {
    /// The variables as the credential chain expects them (`AZURE_*`, `COLDVAULT_CA_CERT`).
    pub env: EnvSnapshot,
    /// Own or shared.
    pub source: IdentitySource,
}

/// Resolves one side's environment from `lookup` (the process environment, or a map in tests);
/// see the module documentation for the rule.
pub fn resolve_side(side: Side, lookup: impl Fn(&str) -> Option<String>) -> SideIdentity {
    let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let own = |suffix: &str| get(&format!("{}{suffix}", side.prefix()));
    let has_own = IDENTITY_SUFFIXES.iter().any(|s| own(s).is_some());
    let mut pairs: Vec<(String, String)> = Vec::new();
    for suffix in IDENTITY_SUFFIXES {
        let value = if has_own {
            own(suffix)
        } else {
            get(&format!("AZURE_{suffix}"))
        };
        if let Some(value) = value {
            pairs.push((format!("AZURE_{suffix}"), value));
        }
    }
    if let Some(host) = own("AUTHORITY_HOST").or_else(|| get("AZURE_AUTHORITY_HOST")) {
        pairs.push(("AZURE_AUTHORITY_HOST".to_owned(), host));
    }
    for name in SHARED_VARIABLES {
        if let Some(value) = get(name) {
            pairs.push(((*name).to_owned(), value));
        }
    }
    SideIdentity {
        env: EnvSnapshot::from_pairs(pairs),
        source: if has_own {
            IdentitySource::Own(side)
        } else {
            IdentitySource::Shared
        },
    }
}

/// [`resolve_side`] over this process's environment.
pub fn resolve_side_from_process(side: Side) -> SideIdentity {
    resolve_side(side, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const CANARY: &str = "CANARY-side-secret-91d2";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn without_side_variables_both_sides_share_azure() {
        let env = lookup(&[
            ("AZURE_TENANT_ID", "t0"),
            ("AZURE_CLIENT_ID", "c0"),
            ("AZURE_CLIENT_SECRET", "s0"),
            ("COLDVAULT_CA_CERT", "/ca.pem"),
        ]);
        for side in [Side::From, Side::To, Side::A, Side::B] {
            let id = resolve_side(side, &env);
            assert_eq!(id.source, IdentitySource::Shared);
            assert_eq!(id.env.get("AZURE_TENANT_ID"), Some("t0"));
            assert_eq!(id.env.get("AZURE_CLIENT_SECRET"), Some("s0"));
            assert_eq!(id.env.get("COLDVAULT_CA_CERT"), Some("/ca.pem"));
        }
    }

    #[test]
    fn each_side_signs_in_with_its_own_identity() {
        let env = lookup(&[
            ("AZURE_TENANT_ID", "t0"),
            ("AZURE_CLIENT_ID", "c0"),
            ("AZURE_CLIENT_SECRET", "s0"),
            ("COLDVAULT_FROM_TENANT_ID", "tA"),
            ("COLDVAULT_FROM_CLIENT_ID", "cA"),
            ("COLDVAULT_FROM_CLIENT_SECRET", "sA"),
            ("COLDVAULT_TO_TENANT_ID", "tB"),
            ("COLDVAULT_TO_CLIENT_ID", "cB"),
            ("COLDVAULT_TO_FEDERATED_TOKEN_FILE", "/token"),
        ]);
        let from = resolve_side(Side::From, &env);
        assert_eq!(from.source, IdentitySource::Own(Side::From));
        assert_eq!(from.env.get("AZURE_TENANT_ID"), Some("tA"));
        assert_eq!(from.env.get("AZURE_CLIENT_ID"), Some("cA"));
        assert_eq!(from.env.get("AZURE_CLIENT_SECRET"), Some("sA"));
        let to = resolve_side(Side::To, &env);
        assert_eq!(to.source, IdentitySource::Own(Side::To));
        assert_eq!(to.env.get("AZURE_TENANT_ID"), Some("tB"));
        assert_eq!(to.env.get("AZURE_FEDERATED_TOKEN_FILE"), Some("/token"));
        // All or nothing: the shared secret never completes a side's own identity.
        assert_eq!(to.env.get("AZURE_CLIENT_SECRET"), None);
        assert_eq!(to.source.to_string(), "COLDVAULT_TO_*");
    }

    #[test]
    fn the_authority_host_falls_back_to_the_shared_one() {
        let env = lookup(&[
            ("AZURE_AUTHORITY_HOST", "https://login.example"),
            ("COLDVAULT_A_TENANT_ID", "tA"),
            ("COLDVAULT_B_AUTHORITY_HOST", "https://login.other"),
            ("COLDVAULT_B_CLIENT_ID", "cB"),
        ]);
        assert_eq!(
            resolve_side(Side::A, &env).env.get("AZURE_AUTHORITY_HOST"),
            Some("https://login.example")
        );
        assert_eq!(
            resolve_side(Side::B, &env).env.get("AZURE_AUTHORITY_HOST"),
            Some("https://login.other")
        );
    }

    #[test]
    fn an_authority_host_alone_does_not_make_an_own_identity() {
        let env = lookup(&[
            ("AZURE_CLIENT_ID", "c0"),
            ("COLDVAULT_FROM_AUTHORITY_HOST", "https://login.other"),
        ]);
        let from = resolve_side(Side::From, &env);
        assert_eq!(from.source, IdentitySource::Shared);
        assert_eq!(from.env.get("AZURE_CLIENT_ID"), Some("c0"));
        assert_eq!(
            from.env.get("AZURE_AUTHORITY_HOST"),
            Some("https://login.other")
        );
    }

    #[test]
    fn empty_side_variables_count_as_unset() {
        let env = lookup(&[("AZURE_CLIENT_ID", "c0"), ("COLDVAULT_TO_CLIENT_ID", "")]);
        assert_eq!(resolve_side(Side::To, &env).source, IdentitySource::Shared);
    }

    #[test]
    fn debug_never_shows_a_side_secret() {
        let env = lookup(&[
            ("COLDVAULT_FROM_TENANT_ID", "tA"),
            ("COLDVAULT_FROM_CLIENT_ID", "cA"),
            ("COLDVAULT_FROM_CLIENT_SECRET", CANARY),
        ]);
        let text = format!("{:?}", resolve_side(Side::From, &env));
        assert!(!text.contains(CANARY), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
