//! What people and machines see: logging to stderr, JSON documents on stdout, progress.
//!
//! stdout carries data (tables, `--json` documents, JSON Lines); everything else goes to
//! stderr. Nothing here ever receives a secret value.

pub mod progress;
pub mod stdout;
pub mod table;

use std::io::IsTerminal;

use serde::Serialize;

/// The version of every `--json` document and JSON Lines event (`docs/SCRIPTING.md`).
/// New fields may appear without a change; a removed or retyped field bumps it.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Sets up stderr logging: warnings by default, more with each `-v`, or `RUST_LOG`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,coldvault=debug",
        _ => "debug,coldvault=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false)
        .try_init();
}

/// Whether stderr gets colour codes: only on a terminal (in a log file they are noise), and
/// never when `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Prints one JSON document on stdout, with `schema_version` as its first field. A reader
/// that closed the pipe is not an error ([`stdout`]).
pub fn print_json<T: Serialize>(kind: &str, body: &T) -> std::io::Result<()> {
    let line = json_document(kind, body)?;
    stdout::print(&format!("{line}\n"))
}

/// Renders one JSON document (`{"schema_version":1,"type":KIND,…body}`) as a single line.
pub fn json_document<T: Serialize>(kind: &str, body: &T) -> std::io::Result<String> {
    let mut value = serde_json::json!({ "schema_version": JSON_SCHEMA_VERSION, "type": kind });
    let body = serde_json::to_value(body)?;
    if let (Some(map), serde_json::Value::Object(fields)) = (value.as_object_mut(), body) {
        map.extend(fields);
    }
    Ok(serde_json::to_string(&value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a log file gets no colour codes");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
    }
}
