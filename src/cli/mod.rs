//! The command line's syntax: clap structures only. Each subcommand's arguments live in a
//! file of this folder, with their help texts and value parsers; resolving them (reading
//! files, building credentials) happens in [`crate::commands`], in a second stage.

pub mod backup;
pub mod completions;
pub mod connect;
pub mod copy;
pub mod demo;
pub mod destination;
pub mod diff;
pub mod emulator;
pub mod extract;
pub mod fleet;
pub mod forget;
pub mod inspect;
pub mod keygen;
pub mod keys;
pub mod list;
pub mod restore;
pub mod scope;
pub mod sync;
pub mod vaults;
pub mod verify;

use clap::{Parser, Subcommand};

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

/// The subcommands: each one's arguments live in a file of this folder, the code that runs
/// it in `src/commands/` (dispatched by `crate::commands::run`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export whole vaults into encrypted archives.
    Backup(backup::BackupArgs),
    /// Put an archive's items back into a vault.
    Restore(restore::RestoreArgs),
    /// Show what differs between an archive and a live vault.
    Diff(diff::DiffArgs),
    /// List what an archive holds (never values).
    Inspect(inspect::InspectArgs),
    /// Decrypt an archive and check every rule of the format, offline.
    Verify(verify::VerifyArgs),
    /// List the vaults a fleet backup would take (Azure Resource Manager).
    Vaults(vaults::VaultsArgs),
    /// Write an archive's plain secrets out for use without Azure.
    Extract(extract::ExtractArgs),
    /// Copy one vault's items into another, planned like restore (one-way).
    Copy(copy::CopyArgs),
    /// Keep two vaults in step both ways.
    Sync(sync::SyncArgs),
    /// List the archives at a destination, per vault, newest first.
    List(list::ListArgs),
    /// Remove the archives a retention policy does not keep (restic's semantics).
    Forget(forget::ForgetArgs),
    /// Generate a new age identity.
    Keygen(keygen::KeygenArgs),
    /// Run the local Key Vault.
    Emulator(emulator::EmulatorArgs),
    /// Show the whole story on the local Key Vault.
    Demo(demo::DemoArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff).
    Man(completions::ManArgs),
}
