//! `coldvault completions SHELL` and `coldvault man`: shell completions and the man page,
//! generated from the same clap definitions that parse the command line, so they never drift.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
pub use crate::cli::completions::{CompletionsArgs, ManArgs};
use crate::error::{CliError, ExitCode};

/// Prints the completion script for one shell on stdout.
pub fn run(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    // Rendered in memory first: clap_complete panics when its writer fails, and a reader
    // that closes the pipe early (`| head`) is no failure (`output::stdout`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "coldvault", &mut script);
    let mut out = crate::output::stdout::report();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(CliError::stdout)?;
    Ok(ExitCode::Ok)
}

/// Renders the man page (roff) of `coldvault` and all its subcommands.
pub fn man_page() -> Result<Vec<u8>, CliError> {
    let command = Cli::command();
    let mut out = Vec::new();
    let fail = |e: std::io::Error| CliError::failed(format!("cannot render the man page: {e}"));
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .map_err(fail)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("coldvault-{}", sub.get_name());
        let sub = sub.clone().name(name.clone()).display_name(name);
        writeln!(out).map_err(fail)?;
        clap_mangen::Man::new(sub).render(&mut out).map_err(fail)?;
    }
    Ok(out)
}

/// Prints the man page on stdout.
pub fn run_man(_args: ManArgs) -> Result<ExitCode, CliError> {
    let page = man_page()?;
    let mut out = crate::output::stdout::report();
    out.write_all(&page)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::failed(format!("cannot write the man page: {e}")))?;
    Ok(ExitCode::Ok)
}
