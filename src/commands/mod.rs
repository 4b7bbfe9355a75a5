//! One file per subcommand: the only place where the archive, the vault and the output meet.

pub mod backup;
pub mod completions;
pub mod connect_args;
pub mod copy;
pub mod demo;
pub mod destination;
pub mod diff;
pub mod emulator;
pub mod extract;
pub mod fleet;
pub mod forget;
pub mod inspect;
pub mod interrupt;
pub mod keygen;
pub mod keys_args;
pub mod kv_connect;
pub mod list;
pub mod restore;
pub mod restore_plan;
pub mod scope;
pub mod sync;
pub mod vaults;
pub mod verify;

use crate::cli::{Cli, Command};
use crate::error::{CliError, ExitCode};

/// Runs the parsed command line and returns the exit code it earned.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Backup(args) => runtime()?.block_on(backup::run(args)),
        Command::Restore(args) => runtime()?.block_on(restore::run(args)),
        Command::Diff(args) => runtime()?.block_on(diff::run(args)),
        Command::Vaults(args) => runtime()?.block_on(vaults::run(args)),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Extract(args) => extract::run(args),
        Command::Copy(args) => runtime()?.block_on(copy::run(args)),
        Command::Sync(args) => runtime()?.block_on(sync::run(args)),
        Command::Keygen(args) => keygen::run(args),
        Command::List(args) => runtime()?.block_on(list::run(args)),
        Command::Forget(args) => runtime()?.block_on(forget::run(args)),
        Command::Emulator(args) => runtime()?.block_on(emulator::run(args)),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => completions::run_man(args),
    }
}

/// The async runtime for the commands that talk to a network.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
}
