//! The one error type of the command line: what failed, why, what to do, and the exit code.
//!
//! Library modules keep their own typed errors (thiserror); `From` impls here decide how each
//! maps to an exit code and a hint. Messages never carry secret values.

use std::fmt;

/// The documented exit codes (`docs/SCRIPTING.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything asked for was done.
    Ok = 0,
    /// The command failed; nothing usable was produced.
    Failed = 1,
    /// The command line was wrong.
    Usage = 2,
    /// Some items were not captured or not restored; each is named.
    Partial = 3,
    /// An archive failed verification.
    Verification = 4,
    /// Interrupted (Ctrl-C).
    Interrupted = 130,
}

/// A failure the user sees: one line of what failed, and a hint when there is one to give.
#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    /// A failure with exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: ExitCode::Failed,
            message: message.into(),
            hint: None,
        }
    }

    /// A usage mistake with exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: ExitCode::Usage,
            message: message.into(),
            hint: None,
        }
    }

    /// An archive that failed verification, exit code 4.
    pub fn verification(message: impl Into<String>) -> Self {
        Self {
            code: ExitCode::Verification,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds the `hint:` line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Prints a failure the way every command does and returns the process exit code.
pub fn report(outcome: Result<ExitCode, CliError>) -> u8 {
    match outcome {
        Ok(code) => code as u8,
        Err(err) => {
            // One line per fact: the error, then the hint. Newlines inside a message would
            // break scripts that read the first line.
            eprintln!("coldvault: error: {}", one_line(&err.message));
            if let Some(hint) = &err.hint {
                eprintln!("hint: {}", one_line(hint));
            }
            err.code as u8
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
