//! The arguments of `coldvault completions` and `coldvault man`.

/// Arguments of `coldvault completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault completions bash > /etc/bash_completion.d/coldvault
  coldvault completions zsh > \"${fpath[1]}/_coldvault\"

Exit codes: 0 printed, 2 usage.")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `coldvault man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  coldvault man > coldvault.1 && man ./coldvault.1

Exit codes: 0 printed.")]
pub struct ManArgs {}
