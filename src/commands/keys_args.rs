//! The age key arguments every archive command shares: [`EncryptArgs`] (`-r`, `-R`,
//! `--passphrase`, `--passphrase-file`) for commands that write archives and [`DecryptArgs`]
//! (`-i`, `--passphrase`, `--passphrase-file`) for commands that read them. Commands flatten
//! them with `#[command(flatten)]` and call `resolve()`.
//!
//! A passphrase never comes from argv: `--passphrase-file`, else `COLDVAULT_PASSPHRASE`,
//! else a prompt when stdin is a terminal. A passphrase-protected SSH key is unlocked with
//! `COLDVAULT_IDENTITY_PASSPHRASE`, else a prompt on a terminal.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::zeroize::Zeroizing;
use age::secrecy::{ExposeSecret, SecretString};

use crate::archive::keys::{IdentitySet, Prompt, RecipientSet, looks_like_private_key};
use crate::archive::{ArchiveError, Decryption, Encryption};
use crate::error::CliError;

/// The environment variable holding an archive's passphrase.
pub const PASSPHRASE_ENV: &str = "COLDVAULT_PASSPHRASE";

/// The environment variable holding the passphrase of a protected SSH identity.
pub const IDENTITY_PASSPHRASE_ENV: &str = "COLDVAULT_IDENTITY_PASSPHRASE";

/// How a command encrypts the archive it writes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EncryptArgs {
    /// Encrypt to RECIPIENT: age1…, "ssh-ed25519 …", "ssh-rsa …" or a plugin recipient
    /// (repeatable; each one alone opens the archive).
    // Hyphen values are taken as values so that a pasted PEM key (`-----BEGIN …`) reaches
    // the private-key check instead of clap's "unexpected argument" error, which echoes it.
    #[arg(
        short = 'r',
        long = "recipient",
        value_name = "RECIPIENT",
        allow_hyphen_values = true
    )]
    pub recipients: Vec<String>,

    /// Encrypt to every recipient listed in FILE, one per line (repeatable).
    #[arg(
        short = 'R',
        long = "recipients-file",
        value_name = "FILE",
        allow_hyphen_values = true
    )]
    pub recipients_files: Vec<PathBuf>,

    /// Encrypt with a passphrase instead: from --passphrase-file, COLDVAULT_PASSPHRASE, or a
    /// prompt on a terminal (never from the command line).
    #[arg(short = 'p', long)]
    pub passphrase: bool,

    /// Read the passphrase from the first line of FILE (implies --passphrase).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

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

/// How a command opens the archive it reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DecryptArgs {
    /// Decrypt with the identities in FILE: an age identity file or an SSH private key
    /// (repeatable).
    // Hyphen values: see `EncryptArgs::recipients`.
    #[arg(
        short = 'i',
        long = "identity",
        value_name = "FILE",
        allow_hyphen_values = true
    )]
    pub identities: Vec<PathBuf>,

    /// The archive is passphrase-encrypted: read the passphrase from --passphrase-file,
    /// COLDVAULT_PASSPHRASE, or a prompt on a terminal.
    #[arg(short = 'p', long)]
    pub passphrase: bool,

    /// Read the passphrase from the first line of FILE (implies --passphrase).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
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
        Ok(Decryption::new(set, passphrase, Arc::new(TerminalPrompt))?)
    }
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
