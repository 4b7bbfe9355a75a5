//! The age key arguments every archive command shares: [`EncryptArgs`] (`-r`, `-R`,
//! `--passphrase`, `--passphrase-file`) for commands that write archives and [`DecryptArgs`]
//! (`-i`, `--passphrase`, `--passphrase-file`) for commands that read them. Commands flatten
//! them with `#[command(flatten)]` and call `resolve()`. [`DecryptArgs`] also carries the
//! [`LimitArgs`] (`--max-manifest-size`, `--max-entries`, `--max-entry-size`,
//! `--max-total-size`) that raise the reader's bounds, so every reading command has them.
//!
//! A passphrase never comes from argv: `--passphrase-file`, else `COLDVAULT_PASSPHRASE`,
//! else a prompt when stdin is a terminal. A passphrase-protected SSH key is unlocked with
//! `COLDVAULT_IDENTITY_PASSPHRASE`, else a prompt on a terminal.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::Arc;

use age::secrecy::zeroize::Zeroizing;
use age::secrecy::{ExposeSecret, SecretString};

use crate::archive::keys::{IdentitySet, Prompt, RecipientSet, looks_like_private_key};
use crate::archive::{ArchiveError, Decryption, Encryption, ReadLimits};
use crate::error::CliError;

pub use crate::cli::keys::{
    DecryptArgs, EncryptArgs, LimitArgs, MAX_ENTRIES_FLAG, MAX_ENTRY_SIZE_FLAG,
    MAX_MANIFEST_SIZE_FLAG, MAX_TOTAL_SIZE_FLAG, parse_size,
};

/// The environment variable holding an archive's passphrase.
pub const PASSPHRASE_ENV: &str = "COLDVAULT_PASSPHRASE";

/// The environment variable holding the passphrase of a protected SSH identity.
pub const IDENTITY_PASSPHRASE_ENV: &str = "COLDVAULT_IDENTITY_PASSPHRASE";

impl EncryptArgs {
    /// Reads recipient files and the passphrase and returns the archive's encryption.
    pub fn resolve(&self) -> Result<Encryption, CliError> {
        let wants_passphrase = self.passphrase || self.passphrase_file.is_some();
        let has_recipients = !self.recipients.is_empty() || !self.recipients_files.is_empty();
        if wants_passphrase && has_recipients {
            return Err(ArchiveError::MixedRecipientAndPassphrase.into());
        }
        let mut set = RecipientSet::new();
        let several = self.recipients.len() > 1;
        for (index, recipient) in self.recipients.iter().enumerate() {
            set.add(recipient).map_err(|e| match e {
                // Which -r it was, since the key itself is never shown.
                ArchiveError::PrivateKeyAsRecipient { .. } if several => {
                    ArchiveError::PrivateKeyAsRecipient {
                        place: format!("recipient {} (-r)", index + 1),
                    }
                }
                other => other,
            })?;
        }
        for file in &self.recipients_files {
            set.add_file(file)?;
        }
        let passphrase = if wants_passphrase {
            Some(read_passphrase(self.passphrase_file.as_deref(), true)?)
        } else {
            None
        };
        Ok(Encryption::new(set, passphrase, Arc::new(TerminalPrompt))?)
    }
}

impl DecryptArgs {
    /// Loads the identities (unlocking SSH keys) or reads the passphrase.
    pub fn resolve(&self) -> Result<Decryption, CliError> {
        let wants_passphrase = self.passphrase || self.passphrase_file.is_some();
        if wants_passphrase && !self.identities.is_empty() {
            return Err(CliError::usage("identities and a passphrase cannot be combined")
                .with_hint("use -i IDENTITY for an archive encrypted to recipients, or --passphrase for a passphrase-encrypted one"));
        }
        let mut set = IdentitySet::new();
        for file in &self.identities {
            set.add_file(file, &TerminalPrompt)?;
        }
        let passphrase = if wants_passphrase {
            Some(read_passphrase(self.passphrase_file.as_deref(), false)?)
        } else {
            None
        };
        Ok(Decryption::new(set, passphrase, Arc::new(TerminalPrompt))?
            .with_limits(self.limits.resolve()))
    }
}

impl LimitArgs {
    /// The default limits, with each one given replaced.
    pub fn resolve(&self) -> ReadLimits {
        let mut limits = ReadLimits::default();
        if let Some(size) = self.max_manifest_size {
            limits.max_manifest_size = size;
        }
        if let Some(count) = self.max_entries {
            limits.max_entries = count;
        }
        if let Some(size) = self.max_entry_size {
            limits.max_entry_size = size;
        }
        if let Some(size) = self.max_total_size {
            limits.max_total_size = size;
        }
        limits
    }
}

/// Shows a byte count the way the limit flags take it: `256MiB`, or bytes when it is not a
/// whole number of a unit.
pub fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Asks on the terminal (via /dev/tty), or answers from the environment in scripts.
#[derive(Debug, Clone, Copy)]
pub struct TerminalPrompt;

impl Prompt for TerminalPrompt {
    fn passphrase(&self, description: &str) -> Option<SecretString> {
        if let Ok(value) = std::env::var(IDENTITY_PASSPHRASE_ENV)
            && !value.is_empty()
        {
            return Some(SecretString::from(value));
        }
        if !std::io::stdin().is_terminal() {
            return None;
        }
        rpassword::prompt_password(format!("{description}: "))
            .ok()
            .map(SecretString::from)
    }

    fn message(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// The archive passphrase: `--passphrase-file`, else the environment, else a prompt on a
/// terminal (asked twice when `confirm`).
fn read_passphrase(file: Option<&Path>, confirm: bool) -> Result<SecretString, CliError> {
    if let Some(path) = file {
        if looks_like_private_key(&path.to_string_lossy()) && !path.exists() {
            // Its name would be echoed in "cannot read the passphrase file …".
            return Err(ArchiveError::KeyInsteadOfFile {
                what: "passphrase file",
            }
            .into());
        }
        let shown = path.display();
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|f| f.take(1 << 16).read_to_string(&mut text))
            .map_err(|e| {
                CliError::failed(format!("cannot read the passphrase file {shown}: {e}"))
            })?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(CliError::usage(format!(
                "the passphrase file {shown} is empty"
            )));
        }
        return Ok(SecretString::from(line.to_owned()));
    }
    if let Ok(value) = std::env::var(PASSPHRASE_ENV)
        && !value.is_empty()
    {
        return Ok(SecretString::from(value));
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            CliError::usage("no passphrase available: stdin is not a terminal").with_hint(format!(
                "set {PASSPHRASE_ENV} or pass --passphrase-file FILE"
            )),
        );
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(SecretString::from)
            .map_err(|e| CliError::failed(format!("cannot read the passphrase: {e}")))
    };
    let first = ask("Passphrase: ")?;
    if first.expose_secret().is_empty() {
        return Err(CliError::usage("the passphrase is empty"));
    }
    if confirm {
        let second = ask("Confirm passphrase: ")?;
        if first.expose_secret() != second.expose_secret() {
            return Err(CliError::usage("the passphrases do not match"));
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_takes_bytes_and_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("3KB"), Ok(3000));
        assert_eq!(parse_size(" 1TiB "), Ok(1 << 40));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn show_size_round_trips_through_parse_size() {
        for bytes in [0, 1, 1000, 1 << 10, 256 << 20, 16 << 30, (1 << 20) + 1] {
            assert_eq!(parse_size(&show_size(bytes)), Ok(bytes));
        }
        assert_eq!(show_size(256 << 20), "256MiB");
    }

    #[test]
    fn limit_flags_replace_only_the_limits_given() {
        let defaults = ReadLimits::default();
        assert_eq!(LimitArgs::default().resolve(), defaults);
        let args = LimitArgs {
            max_entries: Some(7),
            ..LimitArgs::default()
        };
        let limits = args.resolve();
        assert_eq!(limits.max_entries, 7);
        assert_eq!(limits.max_manifest_size, defaults.max_manifest_size);
    }

    #[test]
    fn help_defaults_match_the_reader_defaults() {
        // The `[default: …]` texts are written out in the doc comments; this keeps them true.
        let defaults = ReadLimits::default();
        assert_eq!(show_size(defaults.max_manifest_size), "256MiB");
        assert_eq!(defaults.max_entries, 1_000_000);
        assert_eq!(show_size(defaults.max_entry_size), "64MiB");
        assert_eq!(show_size(defaults.max_total_size), "16GiB");
    }
}
