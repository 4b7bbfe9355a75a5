//! The command line's syntax: clap structures only. Each subcommand's arguments live beside
//! the command in [`crate::commands`]; resolving them (reading files, building credentials)
//! happens there, in a second stage.

use clap::{Parser, Subcommand};

use crate::commands;

/// Cold, encrypted, offline copies of Azure Key Vaults, and the way back.
#[derive(Debug, Parser)]
#[command(
    name = "coldvault",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More detail on stderr (-v, -vv); never shows secret values.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The subcommands, one per file under `src/commands/`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export whole vaults into encrypted archives.
    Backup(commands::backup::BackupArgs),
    /// Put an archive's items back into a vault.
    Restore(commands::restore::RestoreArgs),
    /// Show what differs between an archive and a live vault.
    Diff(commands::diff::DiffArgs),
    /// List what an archive holds (never values).
    Inspect(commands::inspect::InspectArgs),
    /// Decrypt an archive and check every rule of the format, offline.
    Verify(commands::verify::VerifyArgs),
    /// List the vaults a fleet backup would take (Azure Resource Manager).
    Vaults(commands::vaults::VaultsArgs),
    /// Write an archive's plain secrets out for use without Azure.
    Extract(commands::extract::ExtractArgs),
    /// Copy one vault's items into another, planned like restore (one-way).
    Copy(commands::copy::CopyArgs),
    /// Keep two vaults in step both ways.
    Sync(commands::sync::SyncArgs),
    /// List the archives at a destination, per vault, newest first.
    List(commands::list::ListArgs),
    /// Remove the archives a retention policy does not keep (restic's semantics).
    Forget(commands::forget::ForgetArgs),
    /// Generate a new age identity.
    Keygen(commands::keygen::KeygenArgs),
    /// Run the local Key Vault.
    Emulator(commands::emulator::EmulatorArgs),
    /// Show the whole story on the local Key Vault.
    Demo(commands::demo::DemoArgs),
    /// Print a shell completion script.
    Completions(commands::completions::CompletionsArgs),
    /// Print the man page (roff).
    Man(commands::completions::ManArgs),
}
