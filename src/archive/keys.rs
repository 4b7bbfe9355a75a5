//! age's recipients, identities and passphrases, resolved into what the writer and reader
//! need: [`Encryption`] (recipients or one passphrase) and [`Decryption`] (identities or one
//! passphrase).
//!
//! Supported, as age itself does: X25519 (`age1…`), `ssh-ed25519` and `ssh-rsa` public keys,
//! plugin recipients (`age1NAME1…`) through the plugin binaries on `PATH`; identity files
//! holding `AGE-SECRET-KEY-1…` lines or plugin identities, and OpenSSH private keys (also
//! passphrase-protected ones). Anything interactive (an SSH key's passphrase, a plugin's
//! question) goes through a [`Prompt`] that the caller supplies, so this module prints
//! nothing itself.

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use age::secrecy::zeroize::Zeroizing;
use age::secrecy::{ExposeSecret, SecretString};
use age::{DecryptError, Decryptor, EncryptError, Encryptor, plugin, ssh, x25519};

use super::error::{ArchiveError, VerifyError};
use super::reader::ReadLimits;

/// Recipient and identity files larger than this are refused (age's own bound).
const KEY_FILE_LIMIT: u64 = 16 << 20;

/// The user interface age may need: a passphrase for a protected SSH key, or a plugin's
/// messages and questions. Implemented by the command line; [`NoPrompt`] answers nothing.
pub trait Prompt: Send + Sync {
    /// Asks for a secret (an SSH key's passphrase, a plugin PIN). `None` when it cannot ask.
    fn passphrase(&self, description: &str) -> Option<SecretString>;
    /// Shows a message from a plugin ("touch your key").
    fn message(&self, _message: &str) {}
    /// Asks a yes/no question for a plugin. `None` when it cannot ask.
    fn confirm(&self, _message: &str, _yes: &str, _no: Option<&str>) -> Option<bool> {
        None
    }
    /// Asks a plugin's non-secret question. `None` when it cannot ask.
    fn public_string(&self, _description: &str) -> Option<String> {
        None
    }
}

/// A [`Prompt`] that can ask nothing: for tests and for non-interactive callers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPrompt;

impl Prompt for NoPrompt {
    fn passphrase(&self, _description: &str) -> Option<SecretString> {
        None
    }
}

/// age's callback interface over a [`Prompt`].
#[derive(Clone)]
struct PromptCallbacks(Arc<dyn Prompt>);

impl age::Callbacks for PromptCallbacks {
    fn display_message(&self, message: &str) {
        self.0.message(message);
    }
    fn confirm(&self, message: &str, yes: &str, no: Option<&str>) -> Option<bool> {
        self.0.confirm(message, yes, no)
    }
    fn request_public_string(&self, description: &str) -> Option<String> {
        self.0.public_string(description)
    }
    fn request_passphrase(&self, description: &str) -> Option<SecretString> {
        self.0.passphrase(description)
    }
}

/// A set of recipients, gathered from `-r` strings and `-R` files.
#[derive(Default)]
pub struct RecipientSet {
    native: Vec<Box<dyn age::Recipient + Send>>,
    plugins: Vec<plugin::Recipient>,
}

impl RecipientSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many recipients the set holds.
    pub fn len(&self) -> usize {
        self.native.len() + self.plugins.len()
    }

    /// True when the set holds no recipient.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one recipient string: `age1…`, `ssh-ed25519 …`, `ssh-rsa …` or a plugin
    /// recipient.
    ///
    /// A private key given by mistake (an age or plugin identity, an SSH or PEM private key)
    /// is refused with [`ArchiveError::PrivateKeyAsRecipient`]; no error carries more of
    /// the string than a short prefix of something that starts like a public key.
    pub fn add(&mut self, recipient: &str) -> Result<(), ArchiveError> {
        self.add_at(recipient, || "this recipient".to_owned())
    }

    /// [`RecipientSet::add`], naming `place()` when the string is a private key.
    fn add_at(
        &mut self,
        recipient: &str,
        place: impl FnOnce() -> String,
    ) -> Result<(), ArchiveError> {
        let recipient = recipient.trim();
        // Checked first: age's parsers would call an identity merely "invalid", and the
        // caller's message would then be tempted to show it.
        if looks_like_private_key(recipient) {
            return Err(ArchiveError::PrivateKeyAsRecipient { place: place() });
        }
        if let Ok(pk) = recipient.parse::<x25519::Recipient>() {
            self.native.push(Box::new(pk));
            return Ok(());
        }
        match recipient.parse::<ssh::Recipient>() {
            Ok(pk) => {
                self.native.push(Box::new(pk));
                return Ok(());
            }
            Err(ssh::ParseRecipientKeyError::Unsupported(kind)) => {
                // The key type is read from the string: keep it short and printable.
                let kind: String = kind
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .take(40)
                    .collect();
                return Err(ArchiveError::UnsupportedSshKey(format!(
                    "recipient of type {kind}"
                )));
            }
            Err(ssh::ParseRecipientKeyError::RsaModulusTooSmall) => {
                return Err(ArchiveError::UnsupportedSshKey(
                    "an ssh-rsa recipient under 2048 bits".to_owned(),
                ));
            }
            Err(ssh::ParseRecipientKeyError::RsaModulusTooLarge) => {
                return Err(ArchiveError::UnsupportedSshKey(
                    "an ssh-rsa recipient over 4096 bits".to_owned(),
                ));
            }
            Err(_) => {}
        }
        if let Ok(pk) = recipient.parse::<plugin::Recipient>() {
            self.plugins.push(pk);
            return Ok(());
        }
        Err(ArchiveError::InvalidRecipient(describe_invalid_recipient(
            recipient,
        )))
    }

    /// Adds every recipient of a recipients file (one per line; `#` comments and blank lines
    /// ignored), as `age -R` reads it. A private key in the file is refused naming its
    /// line, never showing it.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ArchiveError> {
        refuse_key_as_path(path, "recipients file")?;
        let text = read_key_file(path)?;
        let shown = path.display().to_string();
        let mut added = 0;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match self.add_at(line, || {
                format!("recipients file {shown}: line {}", index + 1)
            }) {
                Ok(()) => added += 1,
                Err(e @ ArchiveError::PrivateKeyAsRecipient { .. }) => return Err(e),
                Err(ArchiveError::UnsupportedSshKey(what)) => {
                    return Err(ArchiveError::UnsupportedSshKey(format!(
                        "{what} in {shown}"
                    )));
                }
                Err(_) => {
                    return Err(ArchiveError::InvalidRecipientsFile {
                        path: shown,
                        line: index + 1,
                    });
                }
            }
        }
        if added == 0 {
            return Err(ArchiveError::InvalidIdentityFile {
                path: shown,
                reason: "holds no recipient".to_owned(),
            });
        }
        Ok(())
    }
}

/// How a new archive is encrypted: to recipients, or with one passphrase (age's scrypt).
pub struct Encryption {
    mode: EncryptionMode,
    prompt: Arc<dyn Prompt>,
}

enum EncryptionMode {
    Recipients(RecipientSet),
    Passphrase(SecretString),
}

impl Encryption {
    /// Chooses the encryption from what the user gave: recipients, or a passphrase, never
    /// both and never neither.
    pub fn new(
        recipients: RecipientSet,
        passphrase: Option<SecretString>,
        prompt: Arc<dyn Prompt>,
    ) -> Result<Self, ArchiveError> {
        let mode = match (recipients.is_empty(), passphrase) {
            (false, Some(_)) => return Err(ArchiveError::MixedRecipientAndPassphrase),
            (true, None) => return Err(ArchiveError::NoRecipients),
            (false, None) => EncryptionMode::Recipients(recipients),
            (true, Some(passphrase)) => {
                if passphrase.expose_secret().is_empty() {
                    return Err(ArchiveError::EmptyPassphrase);
                }
                EncryptionMode::Passphrase(passphrase)
            }
        };
        Ok(Self { mode, prompt })
    }

    /// Encryption to recipients only, with no user interface (plugins cannot ask).
    pub fn to_recipients(recipients: RecipientSet) -> Result<Self, ArchiveError> {
        Self::new(recipients, None, Arc::new(NoPrompt))
    }

    /// Encryption with a passphrase.
    pub fn with_passphrase(passphrase: SecretString) -> Result<Self, ArchiveError> {
        Self::new(RecipientSet::new(), Some(passphrase), Arc::new(NoPrompt))
    }

    /// A short description for messages: "3 recipients" or "a passphrase".
    pub fn describe(&self) -> String {
        match &self.mode {
            EncryptionMode::Recipients(set) if set.len() == 1 => "1 recipient".to_owned(),
            EncryptionMode::Recipients(set) => format!("{} recipients", set.len()),
            EncryptionMode::Passphrase(_) => "a passphrase".to_owned(),
        }
    }

    /// The age encryptor; wraps a fresh file key for every recipient.
    pub(crate) fn encryptor(&self) -> Result<Encryptor, ArchiveError> {
        match &self.mode {
            EncryptionMode::Passphrase(passphrase) => {
                Ok(Encryptor::with_user_passphrase(passphrase.clone()))
            }
            EncryptionMode::Recipients(set) => {
                let mut plugin_recipients: Vec<Box<dyn age::Recipient + Send>> = Vec::new();
                let mut names: Vec<&str> = set.plugins.iter().map(|r| r.plugin()).collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    let plugin = plugin::RecipientPluginV1::new(
                        name,
                        &set.plugins,
                        &[],
                        PromptCallbacks(self.prompt.clone()),
                    )
                    .map_err(encrypt_error)?;
                    plugin_recipients.push(Box::new(plugin));
                }
                let all = set
                    .native
                    .iter()
                    .chain(plugin_recipients.iter())
                    .map(|r| r.as_ref() as &dyn age::Recipient);
                Encryptor::with_recipients(all).map_err(encrypt_error)
            }
        }
    }
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encryption({})", self.describe())
    }
}

fn encrypt_error(e: EncryptError) -> ArchiveError {
    match e {
        EncryptError::MissingPlugin { binary_name } => ArchiveError::MissingPlugin(binary_name),
        EncryptError::MixedRecipientAndPassphrase => ArchiveError::MixedRecipientAndPassphrase,
        EncryptError::MissingRecipients => ArchiveError::NoRecipients,
        other => ArchiveError::Encrypt(other.to_string()),
    }
}

/// One loaded identity. Plain data (`Clone + Send`), so a [`Decryption`] can be handed to
/// another thread and used more than once.
#[derive(Clone)]
enum IdentityItem {
    X25519(x25519::Identity),
    Ssh(ssh::Identity),
    Plugin(plugin::Identity),
}

/// A set of identities, gathered from `-i` files.
#[derive(Clone, Default)]
pub struct IdentitySet {
    items: Vec<IdentityItem>,
}

impl IdentitySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many identities the set holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the set holds no identity.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds one age X25519 identity.
    pub fn add_x25519(&mut self, identity: x25519::Identity) {
        self.items.push(IdentityItem::X25519(identity));
    }

    /// Loads an identity file: an OpenSSH private key (asking `prompt` for its passphrase
    /// when it has one), or age identity lines (`AGE-SECRET-KEY-1…`, plugin identities).
    pub fn add_file(&mut self, path: &Path, prompt: &dyn Prompt) -> Result<(), ArchiveError> {
        refuse_key_as_path(path, "identity file")?;
        let text = read_key_file(path)?;
        let shown = path.display().to_string();
        let invalid = |reason: &str| ArchiveError::InvalidIdentityFile {
            path: shown.clone(),
            reason: reason.to_owned(),
        };

        if text.trim_start().starts_with("-----BEGIN") && !text.contains("AGE-SECRET-KEY-") {
            return self.add_ssh(&text, &shown, prompt);
        }
        if text.starts_with("age-encryption.org/") || text.contains("BEGIN AGE ENCRYPTED FILE") {
            return Err(invalid(
                "is a passphrase-encrypted age identity; decrypt it with `age -d` first",
            ));
        }

        let mut added = 0;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Ok(identity) = line.parse::<x25519::Identity>() {
                self.items.push(IdentityItem::X25519(identity));
            } else if let Ok(identity) = line.parse::<plugin::Identity>() {
                self.items.push(IdentityItem::Plugin(identity));
            } else if line.starts_with("age1") || line.starts_with("ssh-") {
                return Err(invalid(&format!(
                    "line {} is a public key (a recipient), not an identity",
                    index + 1
                )));
            } else {
                // The line number only: the line itself may be a private key.
                return Err(invalid(&format!(
                    "line {} is not an age identity",
                    index + 1
                )));
            }
            added += 1;
        }
        if added == 0 {
            return Err(invalid("holds no identity"));
        }
        Ok(())
    }

    fn add_ssh(
        &mut self,
        text: &str,
        shown: &str,
        prompt: &dyn Prompt,
    ) -> Result<(), ArchiveError> {
        let identity = ssh::Identity::from_buffer(text.as_bytes(), Some(shown.to_owned()))
            .map_err(|_| ArchiveError::InvalidIdentityFile {
                path: shown.to_owned(),
                reason: "is not a readable OpenSSH private key".to_owned(),
            })?;
        let identity = match identity {
            ssh::Identity::Unsupported(_) => {
                return Err(ArchiveError::UnsupportedSshKey(shown.to_owned()));
            }
            ssh::Identity::Encrypted(key) => {
                let passphrase = prompt
                    .passphrase(&format!("Passphrase for the SSH key {shown}"))
                    .ok_or_else(|| ArchiveError::SshKeyLocked(shown.to_owned()))?;
                let unlocked = key
                    .decrypt(passphrase)
                    .map_err(|_| ArchiveError::SshKeyLocked(shown.to_owned()))?;
                ssh::Identity::from(unlocked)
            }
            unencrypted => unencrypted,
        };
        self.items.push(IdentityItem::Ssh(identity));
        Ok(())
    }
}

/// How an archive is opened: with identities, or with its passphrase, and within which
/// [`ReadLimits`] (the defaults unless raised with [`Decryption::with_limits`]). Cheap to
/// clone and `Send`, so a reader can open the archive again on another thread.
#[derive(Clone)]
pub struct Decryption {
    mode: DecryptionMode,
    prompt: Arc<dyn Prompt>,
    // Carried here so that every command that opens an archive honours the limits its user
    // set, through the one value it already hands to the reader.
    limits: ReadLimits,
}

#[derive(Clone)]
enum DecryptionMode {
    Identities(IdentitySet),
    Passphrase(SecretString),
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            DecryptionMode::Identities(set) => write!(f, "Decryption({} identities)", set.len()),
            DecryptionMode::Passphrase(_) => f.write_str("Decryption(passphrase)"),
        }
    }
}

impl Decryption {
    /// Chooses the decryption from what the user gave: identities, or a passphrase, never
    /// both and never neither.
    pub fn new(
        identities: IdentitySet,
        passphrase: Option<SecretString>,
        prompt: Arc<dyn Prompt>,
    ) -> Result<Self, ArchiveError> {
        let mode = match (identities.is_empty(), passphrase) {
            (false, Some(_)) => return Err(ArchiveError::MixedRecipientAndPassphrase),
            (true, None) => return Err(ArchiveError::NoIdentities),
            (false, None) => DecryptionMode::Identities(identities),
            (true, Some(passphrase)) => DecryptionMode::Passphrase(passphrase),
        };
        Ok(Self {
            mode,
            prompt,
            limits: ReadLimits::default(),
        })
    }

    /// The same decryption, opening archives within `limits` instead.
    pub fn with_limits(mut self, limits: ReadLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits [`ArchiveReader::open`](super::ArchiveReader::open) applies.
    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// Decryption with identities and no user interface.
    pub fn with_identities(identities: IdentitySet) -> Result<Self, ArchiveError> {
        Self::new(identities, None, Arc::new(NoPrompt))
    }

    /// Decryption with a passphrase.
    pub fn with_passphrase(passphrase: SecretString) -> Result<Self, ArchiveError> {
        Self::new(IdentitySet::new(), Some(passphrase), Arc::new(NoPrompt))
    }

    /// Reads the age header from `input` and returns the decrypting reader.
    pub(crate) fn decrypt<R: BufRead>(
        &self,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, ArchiveError> {
        let decryptor = Decryptor::new_buffered(input).map_err(header_error)?;
        match &self.mode {
            DecryptionMode::Passphrase(passphrase) => {
                if !decryptor.is_scrypt() {
                    return Err(ArchiveError::NotPassphraseArchive);
                }
                let identity = age::scrypt::Identity::new(passphrase.clone());
                decryptor
                    .decrypt(std::iter::once(&identity as &dyn age::Identity))
                    .map_err(|e| match e {
                        DecryptError::NoMatchingKeys | DecryptError::DecryptionFailed => {
                            ArchiveError::WrongPassphrase
                        }
                        other => decrypt_error(other),
                    })
            }
            DecryptionMode::Identities(set) => {
                if decryptor.is_scrypt() {
                    return Err(ArchiveError::PassphraseArchive);
                }
                let mut boxed: Vec<Box<dyn age::Identity>> = Vec::new();
                let mut plugins: Vec<plugin::Identity> = Vec::new();
                for item in &set.items {
                    match item {
                        IdentityItem::X25519(i) => boxed.push(Box::new(i.clone())),
                        IdentityItem::Ssh(i) => boxed.push(Box::new(i.clone())),
                        IdentityItem::Plugin(i) => plugins.push(i.clone()),
                    }
                }
                let mut names: Vec<String> =
                    plugins.iter().map(|i| i.plugin().to_owned()).collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    let plugin = plugin::IdentityPluginV1::new(
                        &name,
                        &plugins,
                        PromptCallbacks(self.prompt.clone()),
                    )
                    .map_err(decrypt_error)?;
                    boxed.push(Box::new(plugin));
                }
                decryptor
                    .decrypt(boxed.iter().map(|i| i.as_ref()))
                    .map_err(decrypt_error)
            }
        }
    }
}

fn header_error(e: DecryptError) -> ArchiveError {
    match e {
        DecryptError::InvalidHeader | DecryptError::UnknownFormat => VerifyError::NotAge.into(),
        DecryptError::InvalidMac => VerifyError::HeaderDamaged.into(),
        DecryptError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VerifyError::NotAge.into()
        }
        DecryptError::Io(e) => ArchiveError::io("cannot read the archive", e),
        other => decrypt_error(other),
    }
}

fn decrypt_error(e: DecryptError) -> ArchiveError {
    match e {
        DecryptError::NoMatchingKeys => ArchiveError::NoMatchingIdentity,
        DecryptError::InvalidMac => VerifyError::HeaderDamaged.into(),
        DecryptError::InvalidHeader | DecryptError::UnknownFormat => VerifyError::NotAge.into(),
        DecryptError::MissingPlugin { binary_name } => ArchiveError::MissingPlugin(binary_name),
        DecryptError::Io(e) => ArchiveError::io("cannot read the archive", e),
        other => ArchiveError::Decrypt(other.to_string()),
    }
}

/// True when `text` holds a private key rather than a public recipient: an age identity
/// (`AGE-SECRET-KEY-1…`), a plugin identity (`AGE-PLUGIN-NAME-1…`), an OpenSSH, PEM or
/// PuTTY private key. Looks anywhere in the string, in any case: a key pasted after a
/// recipient must not be echoed either.
pub fn looks_like_private_key(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    // AGE-PLUGIN-NAME-1DATA: a plugin's name alone (say, in a comment) is no key.
    let identity_word = |word: &str| {
        word.starts_with("AGE-SECRET-KEY-")
            || word
                .strip_prefix("AGE-PLUGIN-")
                .is_some_and(|rest| rest.contains("-1"))
    };
    upper.split_whitespace().any(identity_word)
        || upper.contains("PRIVATE KEY-----")
        || upper.trim_start().starts_with("PUTTY-USER-KEY-FILE-")
}

/// What an invalid recipient error may show of `recipient`. A recipient is public, but a
/// string that is not one may be anything pasted by mistake (a password, a token): only a
/// short prefix of a string that starts like a public key is shown, otherwise its length.
fn describe_invalid_recipient(recipient: &str) -> String {
    const SHOWN: usize = 12;
    let chars = recipient.chars().count();
    let public_start = ["age1", "ssh-"]
        .iter()
        .any(|prefix| recipient.starts_with(prefix));
    if public_start && recipient.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        if chars <= SHOWN {
            return format!("{recipient:?}");
        }
        let prefix: String = recipient.chars().take(SHOWN).collect();
        return format!("\"{prefix}…\" ({chars} characters)");
    }
    if !recipient.contains('\n') && Path::new(recipient).is_file() {
        // A file name is not secret, and this mistake has an obvious fix.
        return format!("{recipient:?}: that is a file; pass a recipients file with -R");
    }
    format!("({chars} characters, starting with neither age1 nor ssh-)")
}

/// Refuses a "file name" that is a key itself (`-i AGE-SECRET-KEY-1…`): opening it would
/// fail with an error that shows the name, and so the key.
fn refuse_key_as_path(path: &Path, what: &'static str) -> Result<(), ArchiveError> {
    let name = path.as_os_str().to_string_lossy();
    if looks_like_private_key(&name) && !path.exists() {
        return Err(ArchiveError::KeyInsteadOfFile { what });
    }
    Ok(())
}

/// Reads a recipients or identity file into memory that is wiped when dropped (an identity
/// file is a private key).
fn read_key_file(path: &Path) -> Result<Zeroizing<String>, ArchiveError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| ArchiveError::io(format!("cannot open {shown}"), e))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(KEY_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ArchiveError::io(format!("cannot read {shown}"), e))?;
    if bytes.len() as u64 > KEY_FILE_LIMIT {
        return Err(ArchiveError::InvalidIdentityFile {
            path: shown,
            reason: "is larger than 16 MiB".to_owned(),
        });
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            // Wipe the bytes the failed conversion hands back.
            drop(Zeroizing::new(e.into_bytes()));
            Err(ArchiveError::InvalidIdentityFile {
                path: shown,
                reason: "is not UTF-8 text".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_kinds() {
        let mut set = RecipientSet::new();
        let identity = x25519::Identity::generate();
        assert!(set.add(&identity.to_public().to_string()).is_ok());
        assert!(set.add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust").is_ok());
        assert!(matches!(
            set.add("not-a-key"),
            Err(ArchiveError::InvalidRecipient(_))
        ));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn private_keys_given_as_recipients_are_refused_without_echo() {
        let identity = x25519::Identity::generate();
        let secret = identity.to_string().expose_secret().to_owned();
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        for key in [
            secret.as_str(),
            &secret.to_ascii_lowercase(),
            &format!("  {secret}  "),
            &format!("{} {secret}", identity.to_public()),
            "AGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQQQQQ",
            pem,
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----",
            "PuTTY-User-Key-File-3: ssh-ed25519",
        ] {
            let mut set = RecipientSet::new();
            let err = set.add(key).err();
            let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(
                matches!(err, Some(ArchiveError::PrivateKeyAsRecipient { .. })),
                "{text}"
            );
            assert_eq!(
                text,
                "this recipient is a private key; give its public recipient (age1…)"
            );
            assert!(set.is_empty());
        }
        // A public recipient whose comment happens to mention a plugin is still one.
        let mut set = RecipientSet::new();
        assert!(set.add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN age-plugin-tester").is_ok());
    }

    #[test]
    fn invalid_recipient_errors_show_at_most_a_short_prefix() {
        let mut set = RecipientSet::new();
        let typo = format!("{}X", x25519::Identity::generate().to_public());
        let text = set
            .add(&typo)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.starts_with(&format!("invalid recipient \"{}…\"", &typo[..12])),
            "{text}"
        );
        assert!(!text.contains(&typo[12..]), "{text}");
        let text = set
            .add("correct-horse-battery-staple")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!text.contains("horse"), "{text}");
        assert!(text.contains("28 characters"), "{text}");
    }

    #[test]
    fn mixed_recipients_and_passphrase_refused() {
        let mut set = RecipientSet::new();
        assert!(
            set.add(&x25519::Identity::generate().to_public().to_string())
                .is_ok()
        );
        let result = Encryption::new(
            set,
            Some(SecretString::from("pw".to_owned())),
            Arc::new(NoPrompt),
        );
        assert!(matches!(
            result,
            Err(ArchiveError::MixedRecipientAndPassphrase)
        ));
    }
}
