//! The `coldvault` binary: parse the command line, run it, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = coldvault::cli::Cli::parse();
    coldvault::output::init_logging(cli.verbose);
    let outcome = coldvault::commands::run(cli);
    std::process::ExitCode::from(coldvault::error::report(outcome))
}
