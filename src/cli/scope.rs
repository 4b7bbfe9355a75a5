//! Which items a command touches: `--include`, `--name GLOB`, `--exclude GLOB`, shared by
//! `backup`, `restore` and `diff`; `crate::commands::scope` compiles them into a filter.

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
