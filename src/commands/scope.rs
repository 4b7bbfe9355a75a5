//! Which items a command touches: `--include`, `--name GLOB`, `--exclude GLOB`, shared by
//! `backup`, `restore` and `diff`.

use globset::{GlobMatcher, GlobSet, GlobSetBuilder};

pub use crate::cli::scope::{ItemKind, ScopeArgs};
use crate::error::CliError;

/// A resolved scope: answers "is this item in?" for any kind and name.
#[derive(Debug, Clone)]
pub struct Scope {
    kinds: Vec<ItemKind>,
    names: Option<GlobSet>,
    /// Each `--name` glob alone, to tell which of them matched nothing.
    name_globs: Vec<(String, GlobMatcher)>,
    excludes: GlobSet,
}

impl Scope {
    /// Everything: every kind, every name.
    pub fn everything() -> Self {
        Self {
            kinds: vec![ItemKind::Secrets, ItemKind::Keys, ItemKind::Certificates],
            names: None,
            name_globs: Vec::new(),
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
            scope.name_globs = args
                .names
                .iter()
                .map(|pattern| Ok((pattern.clone(), glob(pattern, "--name")?.compile_matcher())))
                .collect::<Result<_, CliError>>()?;
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

impl ItemKind {
    /// The `--include` value of the model's kind.
    pub fn of(kind: crate::model::ItemKind) -> Self {
        match kind {
            crate::model::ItemKind::Secret => ItemKind::Secrets,
            crate::model::ItemKind::Key => ItemKind::Keys,
            crate::model::ItemKind::Certificate => ItemKind::Certificates,
        }
    }
}

/// The engine sees a scope as a filter over the model's kinds.
impl crate::engine::Filter for Scope {
    fn includes_kind(&self, kind: crate::model::ItemKind) -> bool {
        Scope::includes_kind(self, ItemKind::of(kind))
    }

    fn includes(&self, kind: crate::model::ItemKind, name: &str) -> bool {
        Scope::includes(self, ItemKind::of(kind), name)
    }
}

impl Scope {
    /// Checks every `--name` glob against the names an archive holds (of the kinds in scope):
    /// a glob that matches none of them is a mistake, most often a typo, and fails with the
    /// glob and the archive's closest names (names only, never values) rather than restoring
    /// or comparing nothing.
    pub fn check_names_match<'a>(
        &self,
        names: impl IntoIterator<Item = (ItemKind, &'a str)>,
    ) -> Result<(), CliError> {
        if self.name_globs.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = names
            .into_iter()
            .filter(|(kind, _)| self.includes_kind(*kind))
            .map(|(_, name)| name)
            .collect();
        let Some((pattern, _)) = self
            .name_globs
            .iter()
            .find(|(_, matcher)| !names.iter().any(|name| matcher.is_match(name)))
        else {
            return Ok(());
        };
        let error = CliError::failed(format!("--name {pattern:?} matches nothing in the archive"));
        let closest = closest_names(pattern, &names);
        Err(if closest.is_empty() {
            error.with_hint(format!(
                "the archive holds {} items of the kinds in scope and none is close; \
                 `coldvault inspect ARCHIVE` lists them",
                names.len()
            ))
        } else {
            error.with_hint(format!(
                "closest names in the archive: {}",
                closest.join(", ")
            ))
        })
    }
}

/// Up to three names nearest to `pattern` by edit distance (case-insensitive, the glob's
/// wildcards taken as letters), nearest first; only names within half the pattern's length,
/// at least two edits, are offered.
fn closest_names(pattern: &str, names: &[&str]) -> Vec<String> {
    let pattern = pattern.to_ascii_lowercase();
    let limit = (pattern.chars().count() / 2).max(2);
    let mut scored: Vec<(usize, String)> = names
        .iter()
        .map(|name| {
            (
                edit_distance(&pattern, &name.to_ascii_lowercase()),
                (*name).to_owned(),
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1.eq_ignore_ascii_case(&b.1));
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}

/// Levenshtein distance over characters (two rows).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

fn glob(pattern: &str, flag: &str) -> Result<globset::Glob, CliError> {
    // Key Vault names are case-insensitive; so is matching them.
    globset::GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map_err(|e| {
            CliError::usage(format!("{flag} {pattern:?} is not a valid glob: {e}"))
                .with_hint("use `*` for any run of characters and `?` for one, e.g. `db-*`")
        })
}

fn glob_set(patterns: &[String], flag: &str) -> Result<GlobSet, CliError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(glob(pattern, flag)?);
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
    fn a_name_matching_nothing_fails_with_the_closest_names() {
        let names = [
            (ItemKind::Secrets, "db-password"),
            (ItemKind::Secrets, "api-key"),
            (ItemKind::Keys, "signing-key"),
            (ItemKind::Secrets, "db-passwords"),
        ];
        let s = scope(&[], &["db-pasword"], &[]);
        let err = s.check_names_match(names).unwrap_err();
        assert_eq!(err.code, crate::error::ExitCode::Failed);
        assert!(err.message.contains("\"db-pasword\""), "{}", err.message);
        let hint = err.hint.unwrap();
        assert!(
            hint == "closest names in the archive: db-password, db-passwords",
            "{hint}"
        );
        assert!(!hint.contains("signing-key"), "{hint}");

        // One glob of several matching nothing is still a mistake.
        let s = scope(&[], &["db-*", "zzzzzzzzzzzz"], &[]);
        let err = s.check_names_match(names).unwrap_err();
        assert!(err.hint.unwrap().contains("none is close"));

        // Matches, in any case; a name of a kind left out does not count.
        assert!(scope(&[], &["DB-*"], &[]).check_names_match(names).is_ok());
        assert!(scope(&[], &[], &[]).check_names_match(names).is_ok());
        let keys_only = scope(&[ItemKind::Keys], &["api-key"], &[]);
        assert!(keys_only.check_names_match(names).is_err());
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("db-password", "db-password"), 0);
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
