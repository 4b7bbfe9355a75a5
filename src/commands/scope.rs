//! Which items a command touches: `--include`, `--name GLOB`, `--exclude GLOB`, shared by
//! `backup`, `restore` and `diff`.

use globset::{GlobSet, GlobSetBuilder};

use crate::error::CliError;

/// The three kinds of Key Vault items coldvault knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ItemKind {
    Secrets,
    Keys,
    Certificates,
}

/// Arguments that narrow a command to some kinds and names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Kinds of items to include (default: all).
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    pub include: Vec<ItemKind>,

    /// Only items whose name matches this glob (repeatable; `*` and `?` as in a shell).
    #[arg(long = "name", value_name = "GLOB")]
    pub names: Vec<String>,

    /// Leave out items whose name matches this glob (repeatable; wins over --name).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
}

/// A resolved scope: answers "is this item in?" for any kind and name.
#[derive(Debug, Clone)]
pub struct Scope {
    kinds: Vec<ItemKind>,
    names: Option<GlobSet>,
    excludes: GlobSet,
}

impl Scope {
    /// Everything: every kind, every name.
    pub fn everything() -> Self {
        Self {
            kinds: vec![ItemKind::Secrets, ItemKind::Keys, ItemKind::Certificates],
            names: None,
            excludes: GlobSet::empty(),
        }
    }

    /// Resolves the arguments; a malformed glob is a usage error naming it.
    pub fn resolve(args: &ScopeArgs) -> Result<Self, CliError> {
        let mut scope = Self::everything();
        if !args.include.is_empty() {
            scope.kinds = args.include.clone();
            scope.kinds.sort();
            scope.kinds.dedup();
        }
        if !args.names.is_empty() {
            scope.names = Some(glob_set(&args.names, "--name")?);
        }
        scope.excludes = glob_set(&args.excludes, "--exclude")?;
        Ok(scope)
    }

    /// Whether items of this kind are in scope at all (so their list need not be fetched).
    pub fn includes_kind(&self, kind: ItemKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Whether one item is in scope.
    pub fn includes(&self, kind: ItemKind, name: &str) -> bool {
        self.includes_kind(kind)
            && self.names.as_ref().is_none_or(|set| set.is_match(name))
            && !self.excludes.is_match(name)
    }
}

fn glob_set(patterns: &[String], flag: &str) -> Result<GlobSet, CliError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        // Key Vault names are case-insensitive; so is matching them.
        let glob = globset::GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|e| {
                CliError::usage(format!("{flag} {pattern:?} is not a valid glob: {e}"))
                    .with_hint("use `*` for any run of characters and `?` for one, e.g. `db-*`")
            })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(include: &[ItemKind], names: &[&str], excludes: &[&str]) -> Scope {
        Scope::resolve(&ScopeArgs {
            include: include.to_vec(),
            names: names.iter().map(|s| s.to_string()).collect(),
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn everything_by_default() {
        let s = scope(&[], &[], &[]);
        assert!(s.includes(ItemKind::Secrets, "a"));
        assert!(s.includes(ItemKind::Certificates, "b"));
    }

    #[test]
    fn include_names_and_excludes_combine() {
        let s = scope(&[ItemKind::Secrets], &["db-*"], &["*-old"]);
        assert!(s.includes(ItemKind::Secrets, "db-password"));
        assert!(s.includes(ItemKind::Secrets, "DB-Password"));
        assert!(!s.includes(ItemKind::Secrets, "db-password-old"));
        assert!(!s.includes(ItemKind::Secrets, "api-key"));
        assert!(!s.includes(ItemKind::Keys, "db-key"));
        assert!(!s.includes_kind(ItemKind::Keys));
    }

    #[test]
    fn bad_glob_is_a_usage_error() {
        let err = Scope::resolve(&ScopeArgs {
            names: vec!["[".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.code, crate::error::ExitCode::Usage);
        assert!(err.message.contains("--name"));
    }
}
