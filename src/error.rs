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
    /// Interrupted (Ctrl-C, SIGINT).
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15).
    Terminated = 143,
    /// Stopped by SIGHUP (128 + 1).
    HungUp = 129,
}

/// The hint for data on stdout whose reader went away before the end.
const STOPPED_EARLY: &str =
    "the program reading coldvault's output stopped early: what it got is incomplete";

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

    /// Standard output could not be written. Reports never get here for a reader that
    /// closed the pipe early (`output::stdout`); data (secrets, an identity) does, and is
    /// then incomplete, which the message says.
    pub fn stdout(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            return Self::failed("standard output was closed before everything was written")
                .with_hint(STOPPED_EARLY);
        }
        Self::failed(format!("cannot write to standard output: {err}"))
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

impl From<crate::archive::ArchiveError> for CliError {
    fn from(err: crate::archive::ArchiveError) -> Self {
        use crate::archive::{ArchiveError as E, VerifyError as V};
        let message = err.to_string();
        match err {
            E::MixedRecipientAndPassphrase => CliError::usage(message).with_hint(
                "use either -r/-R (recipients) or --passphrase, not both: age encrypts to recipients or to one passphrase",
            ),
            E::NoRecipients => CliError::usage(message).with_hint(
                "pass -r RECIPIENT, -R FILE or --passphrase; `coldvault keygen -o key.txt` creates an identity and prints its recipient",
            ),
            E::NoIdentities => CliError::usage(message).with_hint(
                "pass -i FILE (an age identity file or an SSH private key), or --passphrase for a passphrase-encrypted archive",
            ),
            E::InvalidRecipient(_) | E::InvalidRecipientsFile { .. } => CliError::usage(message)
                .with_hint("a recipient is age1…, \"ssh-ed25519 …\", \"ssh-rsa …\" or a plugin recipient (age1NAME1…)"),
            E::PrivateKeyAsRecipient { .. } => CliError::usage(message).with_hint(
                "`age-keygen -y IDENTITY-FILE` prints an age identity's recipient (`coldvault keygen -o FILE` prints it when it creates one); an SSH key's recipient is its .pub line",
            ),
            E::KeyInsteadOfFile { .. } => CliError::usage(message).with_hint(
                "write the key to a file only you can read (chmod 600) and pass the file's path",
            ),
            E::ArchiveNotFound(_) => CliError::failed(message).with_hint(
                "check the path: archives are files named VAULT-YYYYMMDDTHHMMSSZ.tar.zst.age",
            ),
            E::ArchiveIsFolder(_) => CliError::failed(message)
                .with_hint("name one archive file in the folder (VAULT-YYYYMMDDTHHMMSSZ.tar.zst.age)"),
            E::UnsupportedSshKey(_) => CliError::usage(message)
                .with_hint("age supports ssh-ed25519 and ssh-rsa keys (2048-4096 bits)"),
            E::EmptyPassphrase => CliError::usage(message),
            E::OutputIsTerminal => CliError::usage(message)
                .with_hint("redirect standard output to a file or a pipe, or pass -o FILE"),
            E::InvalidIdentityFile { .. } => CliError::failed(message)
                .with_hint("-i takes an age identity file (AGE-SECRET-KEY-1…, from `coldvault keygen`) or an SSH private key"),
            E::SshKeyLocked(_) => CliError::failed(message).with_hint(
                "on a terminal you are asked for the key's passphrase; in scripts set COLDVAULT_IDENTITY_PASSPHRASE",
            ),
            E::MissingPlugin(ref binary) => {
                let hint = format!("install {binary} and put it on PATH");
                CliError::failed(message).with_hint(hint)
            }
            E::OutputExists(_) => CliError::failed(message)
                .with_hint("existing files are never overwritten: choose another output or remove the file"),
            E::Abandoned => CliError::failed(message),
            E::NotDurable { .. } => CliError::failed(message).with_hint(
                "the file system of that folder reported an error (see the system log): check it, \
                 then run `coldvault verify` on the archive or run the backup again",
            ),
            E::PassphraseArchive => {
                CliError::failed(message).with_hint("open it with --passphrase instead of -i")
            }
            E::NotPassphraseArchive => {
                CliError::failed(message).with_hint("open it with -i IDENTITY instead of --passphrase")
            }
            E::NoMatchingIdentity => CliError::failed(message).with_hint(
                "the archive was encrypted to other recipients: pass an identity matching one of them with -i",
            ),
            E::WrongPassphrase => CliError::failed(message)
                .with_hint("check COLDVAULT_PASSPHRASE or the --passphrase-file"),
            E::Verify(verify) => {
                if let Some(err) = limit_refusal(&verify) {
                    return err;
                }
                let hint = match &verify {
                    V::UnknownFormatVersion { .. } => {
                        Some("the archive was written by a newer coldvault: read it with that version")
                    }
                    V::Truncated => Some("the file is incomplete: copy it again from where it is stored"),
                    V::MissingTarEnd => Some("whatever wrote this archive stopped before finishing it: use another copy"),
                    V::Damaged { .. } | V::HeaderDamaged => {
                        Some("the file was modified or damaged: use another copy")
                    }
                    V::NotAge | V::MissingFormatMarker { .. } | V::UnknownFormat(_) => {
                        Some("is this a coldvault archive (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age)?")
                    }
                    _ => None,
                };
                let err = CliError::verification(format!("archive failed verification: {verify}"));
                match hint {
                    Some(hint) => err.with_hint(hint),
                    None => err,
                }
            }
            // An archive on stdout whose reader stopped early (`backup -o - | …`).
            E::Io { ref source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
                CliError::failed(message).with_hint(STOPPED_EARLY)
            }
            E::InvalidName { .. }
            | E::InvalidInput(_)
            | E::DuplicateEntry(_)
            | E::Decrypt(_)
            | E::Encrypt(_)
            | E::Io { .. } => CliError::failed(message),
        }
    }
}

/// An archive refused by one of the reader's bounds: the message names the flag that sets
/// the bound, the hint a value that would let this archive through. Raising is the user's
/// call (the archive may be hostile), so the hint says when it is safe.
fn limit_refusal(verify: &crate::archive::VerifyError) -> Option<CliError> {
    use crate::archive::VerifyError as V;
    use crate::commands::keys_args::{
        MAX_ENTRIES_FLAG, MAX_ENTRY_SIZE_FLAG, MAX_MANIFEST_SIZE_FLAG, MAX_TOTAL_SIZE_FLAG,
        show_size,
    };
    // A size limit is raised to the next power of two above what the archive declared;
    // counts and totals, known only up to the limit, to twice the limit.
    let (flag, raised) = match *verify {
        V::ManifestTooLarge { size, .. } => (
            MAX_MANIFEST_SIZE_FLAG,
            show_size(size.checked_next_power_of_two().unwrap_or(size)),
        ),
        V::EntryTooLarge { size, .. } => (
            MAX_ENTRY_SIZE_FLAG,
            show_size(size.checked_next_power_of_two().unwrap_or(size)),
        ),
        V::TooManyEntries { limit } => (MAX_ENTRIES_FLAG, limit.saturating_mul(2).to_string()),
        V::TotalTooLarge { limit } => (MAX_TOTAL_SIZE_FLAG, show_size(limit.saturating_mul(2))),
        _ => return None,
    };
    Some(
        CliError::verification(format!(
            "archive failed verification: {verify} (the limit set by {flag})"
        ))
        .with_hint(format!(
            "if the archive comes from a source you trust, raise the limit: {flag} {raised}"
        )),
    )
}
