//! The `coldvault` binary: parse the command line, run it, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match coldvault::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // clap quotes a stray argument in full: its error is printed without private keys.
        Err(err) => return std::process::ExitCode::from(coldvault::usage::report(err, &args)),
    };
    coldvault::output::init_logging(cli.verbose);
    let outcome = coldvault::commands::run(cli);
    std::process::ExitCode::from(coldvault::error::report(outcome))
}
