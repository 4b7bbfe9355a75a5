//! Azure Key Vault access behind the [`VaultReader`] / [`VaultWriter`] traits.
//!
//! This module owns everything between coldvault and a Key Vault's data plane: what a vault
//! address means ([`VaultUrl`]), the models the commands work with (properties, attributes,
//! values held in [`SecretString`], deleted items), the classification of Azure's failures
//! ([`VaultError`]), and the traits the backup, restore and diff commands call. It knows nothing
//! of the archive or of the command line. The implementation over the official
//! `azure_security_keyvault_*` crates is [`AzureVault`]; [`transport`] builds its HTTP client,
//! [`credentials`] the credential chain, [`pacing`] the throttle gate shared by every request to
//! one vault, [`writes`] the retries that keep writes idempotent when an answer is lost.

pub mod azure;
pub mod credentials;
pub mod pacing;
pub mod transport;
pub mod writes;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use age::secrecy::SecretString;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use azure::{AzureVault, ConnectOptions};
pub use credentials::{
    AuthAttempt, AuthError, AuthMethod, EnvSnapshot, SelectedCredential, UnknownAuthMethod,
};
pub use pacing::RequestStats;
pub use transport::{NetworkCause, NetworkFailure, NetworkWarning};

/// The DNS suffix of Managed HSM pools in every cloud; their keys-only API is not supported.
const MANAGED_HSM_SUFFIXES: &[&str] = &[
    ".managedhsm.azure.net",
    ".managedhsm.azure.cn",
    ".managedhsm.usgovcloudapi.net",
];

/// A Key Vault's data-plane address, validated and normalised to `https://HOST[:PORT]/`.
///
/// Built from what the user typed after `--vault`: a bare vault name means
/// `https://NAME.vault.azure.net/`; a host name (`NAME.vault.azure.cn`) gets `https://`; a full
/// URL is taken as is (sovereign clouds, the local emulator), but only over HTTPS, without path,
/// query or credentials. Managed HSM pools are refused with [`VaultUrlError::ManagedHsm`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VaultUrl {
    url: url::Url,
    /// The name of a store that is not a Key Vault ([`VaultUrl::for_store`]).
    store_name: Option<String>,
}

/// Why a `--vault` value is not a usable vault address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultUrlError {
    /// A bare name that breaks Azure's vault naming rules.
    #[error(
        "'{0}' is not a valid vault name: 3-24 characters of letters, digits and hyphens, starting with a letter, not ending with a hyphen, no consecutive hyphens"
    )]
    InvalidName(String),
    /// Something that looked like a URL but does not parse as one.
    #[error("'{input}' is not a valid vault URL: {reason}")]
    InvalidUrl { input: String, reason: String },
    /// A URL with a scheme other than `https`.
    #[error("'{0}' does not use https: Key Vault is only reachable over HTTPS")]
    NotHttps(String),
    /// A URL with a path, query, fragment or user information.
    #[error("'{0}' has more than a scheme, host and port: give the vault's base URL")]
    NotBaseUrl(String),
    /// A Managed HSM pool (`NAME.managedhsm.azure.net`).
    #[error(
        "'{0}' is a Managed HSM pool: coldvault supports Key Vault vaults only (Managed HSM has its own full-backup API)"
    )]
    ManagedHsm(String),
}

impl VaultUrl {
    /// Parses a `--vault` value (a name, a host name or a base URL); see the type's contract.
    pub fn parse(input: &str) -> Result<Self, VaultUrlError> {
        let input = input.trim();
        let url = if input.contains("://") {
            url::Url::parse(input).map_err(|e| VaultUrlError::InvalidUrl {
                input: input.to_owned(),
                reason: e.to_string(),
            })?
        } else if input.contains('.') || input.contains(':') {
            url::Url::parse(&format!("https://{input}")).map_err(|e| VaultUrlError::InvalidUrl {
                input: input.to_owned(),
                reason: e.to_string(),
            })?
        } else {
            if !is_valid_vault_name(input) {
                return Err(VaultUrlError::InvalidName(input.to_owned()));
            }
            url::Url::parse(&format!(
                "https://{}.vault.azure.net/",
                input.to_ascii_lowercase()
            ))
            .map_err(|e| VaultUrlError::InvalidUrl {
                input: input.to_owned(),
                reason: e.to_string(),
            })?
        };
        if url.scheme() != "https" {
            return Err(VaultUrlError::NotHttps(input.to_owned()));
        }
        let Some(host) = url.host_str() else {
            return Err(VaultUrlError::InvalidUrl {
                input: input.to_owned(),
                reason: "no host".to_owned(),
            });
        };
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || !(url.path().is_empty() || url.path() == "/")
        {
            return Err(VaultUrlError::NotBaseUrl(input.to_owned()));
        }
        let lower = host.to_ascii_lowercase();
        if MANAGED_HSM_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
            return Err(VaultUrlError::ManagedHsm(input.to_owned()));
        }
        let mut url = url;
        url.set_path("/");
        Ok(Self {
            url,
            store_name: None,
        })
    }

    /// The address of a store that is not a Key Vault (a KV v2 mount: `bao+https://…`),
    /// taken as is, with the name messages give it ([`VaultUrl::name`]: the mount).
    pub fn for_store(url: url::Url, name: &str) -> Self {
        Self {
            url,
            store_name: Some(name.to_owned()),
        }
    }

    /// The normalised base URL, ending in `/`.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The normalised base URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The host name, lower-case, without port.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The vault's name: the first label of its host (`myvault` for `myvault.vault.azure.net`);
    /// for another store, the name it was given ([`VaultUrl::for_store`]).
    pub fn name(&self) -> &str {
        if let Some(name) = &self.store_name {
            return name;
        }
        let host = self.host();
        host.split('.').next().unwrap_or(host)
    }

    /// Whether the host is `localhost` or under `.localhost`, which always means loopback
    /// (RFC 6761 §6.3) and is resolved without asking DNS.
    pub fn is_localhost(&self) -> bool {
        transport::is_localhost_name(self.host())
    }
}

impl fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl fmt::Debug for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultUrl({})", self.url)
    }
}

/// Azure's vault naming rule: 3-24 of `[0-9a-zA-Z-]`, a letter first, no trailing or doubled
/// hyphen (<https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#vault-name-and-object-name>).
fn is_valid_vault_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=24).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Whether `name` is a valid secret, key or certificate name: 1-127 of `[0-9a-zA-Z-]`.
///
/// Checked before a name is put in a request path, so a hostile name from an archive can never
/// address another route.
pub fn is_valid_item_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `version` looks like an object version id (Azure uses 32 hex digits; anything
/// alphanumeric up to 64 characters is accepted so emulators and future formats still work).
pub fn is_valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The three kinds of vault objects coldvault captures: the crate's one item kind.
pub use crate::model::ItemKind;

/// An object's attributes as Key Vault reports them. `enabled`, `not_before` and `expires` are
/// the writable ones; the rest are informational and ignored on write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// Whether the object is enabled; a disabled secret's value cannot be read.
    pub enabled: Option<bool>,
    /// Not valid before this time (`nbf`).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_before: Option<OffsetDateTime>,
    /// Not valid after this time (`exp`); an expired secret is still readable.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires: Option<OffsetDateTime>,
    /// When this version was created.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub created: Option<OffsetDateTime>,
    /// When this version was last updated.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub updated: Option<OffsetDateTime>,
    /// The vault's deletion recovery level (`Recoverable+Purgeable`, …).
    pub recovery_level: Option<String>,
    /// Soft-delete retention in days.
    pub recoverable_days: Option<i32>,
}

/// Tags of an object, ordered by name so output is stable.
pub type Tags = BTreeMap<String, String>;

/// A secret (or one version of it) without its value, as lists and gets report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretProperties {
    /// The secret's name.
    pub name: String,
    /// The version id when the source named one (version lists and gets); `None` in the
    /// vault-wide list, which names objects only.
    pub version: Option<String>,
    /// The full object identifier Azure returned.
    pub id: String,
    /// The content type, if set.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: Tags,
    /// Attributes.
    pub attributes: Attributes,
    /// `true` for the secret a certificate manages: not a separate item (captured with the
    /// certificate, cannot be backed up or written directly).
    pub managed: bool,
    /// For a certificate's managed secret, the id of the matching key.
    pub key_id: Option<String>,
}

/// One secret version with its value. `Debug` never shows the value.
#[derive(Clone)]
pub struct SecretVersionValue {
    /// Everything but the value; `version` is always set.
    pub properties: SecretProperties,
    /// The value, exactly as stored (text; a certificate's PFX is standard base64).
    pub value: SecretString,
}

impl fmt::Debug for SecretVersionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretVersionValue")
            .field("properties", &self.properties)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// A key without its material, as lists report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProperties {
    /// The key's name.
    pub name: String,
    /// The version id when known.
    pub version: Option<String>,
    /// The full key identifier (`kid`).
    pub id: String,
    /// Tags.
    pub tags: Tags,
    /// Attributes.
    pub attributes: Attributes,
    /// `true` for the key a certificate manages (not a separate item).
    pub managed: bool,
}

/// A key's current version: its properties and public JSON Web Key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBundle {
    /// Properties of the version returned; `version` is set.
    pub properties: KeyProperties,
    /// The public JWK as Azure returned it (`kty`, `n`/`e` or `crv`/`x`/`y`, `key_ops`, `kid`).
    /// Key Vault never returns private material here.
    pub jwk: serde_json::Value,
    /// The key's release policy, if any, as Azure returned it.
    pub release_policy: Option<serde_json::Value>,
}

/// A certificate without its material, as lists report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateProperties {
    /// The certificate's name.
    pub name: String,
    /// The version id when known.
    pub version: Option<String>,
    /// The full certificate identifier.
    pub id: String,
    /// Tags.
    pub tags: Tags,
    /// Attributes.
    pub attributes: Attributes,
    /// SHA-1 thumbprint of the X.509 certificate, when reported.
    pub x509_thumbprint: Option<Vec<u8>>,
}

/// A certificate's current version: properties, public certificate and policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateBundle {
    /// Properties of the version returned; `version` is set.
    pub properties: CertificateProperties,
    /// The public certificate, DER (`cer`).
    pub cer: Vec<u8>,
    /// The certificate's policy as Azure returned it, when included.
    pub policy: Option<serde_json::Value>,
    /// The content type of the managed secret (`application/x-pkcs12` or `application/x-pem-file`).
    pub content_type: Option<String>,
    /// The managed secret's id (`sid`); read it with [`VaultReader::get_secret`] using
    /// [`CertificateBundle::secret_version`] when the key is exportable.
    pub secret_id: Option<String>,
    /// The managed key's id (`kid`).
    pub key_id: Option<String>,
}

impl CertificateBundle {
    /// Whether the policy marks the private key exportable, so the managed secret holds the
    /// certificate with its key (PFX or PEM) and can be read and imported elsewhere.
    pub fn key_exportable(&self) -> bool {
        self.policy
            .as_ref()
            .and_then(|p| p.get("key_props"))
            .and_then(|k| k.get("exportable"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    /// The managed secret's version, taken from `sid` (`…/secrets/NAME/VERSION`).
    pub fn secret_version(&self) -> Option<String> {
        let sid = self.secret_id.as_deref()?;
        let (name, version) = split_object_id(sid, "secrets")?;
        (name == self.properties.name).then_some(version?)
    }
}

/// A native backup blob: opaque, encrypted by Key Vault for its own subscription and geography,
/// holding every version of one object. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupBlob(pub Vec<u8>);

impl fmt::Debug for BackupBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupBlob({} bytes)", self.0.len())
    }
}

/// A soft-deleted object, as the deleted lists and gets report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedItem {
    /// Which kind of object.
    pub kind: ItemKind,
    /// Its name.
    pub name: String,
    /// The identifier it had before deletion.
    pub id: String,
    /// The id to recover it with.
    pub recovery_id: Option<String>,
    /// When it was deleted.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub deleted_date: Option<OffsetDateTime>,
    /// When the vault will purge it.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub scheduled_purge_date: Option<OffsetDateTime>,
    /// Tags.
    pub tags: Tags,
    /// Attributes.
    pub attributes: Attributes,
    /// `true` for a certificate's managed key or secret.
    pub managed: bool,
}

/// What to write with [`VaultWriter::set_secret`]: a new version of a secret.
#[derive(Clone)]
pub struct NewSecretVersion {
    /// The value.
    pub value: SecretString,
    /// Content type, if any.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: Tags,
    /// Only `enabled`, `not_before` and `expires` are written.
    pub attributes: Attributes,
}

impl fmt::Debug for NewSecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecretVersion")
            .field("value", &"[redacted]")
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// What to write with [`VaultWriter::import_certificate`]: a certificate with its private key.
#[derive(Clone)]
pub struct CertificateImport {
    /// PFX as standard base64, or PEM text (certificate chain and private key), exactly as a
    /// certificate's managed secret stores it; PEM text is base64-encoded on the wire, as the
    /// official SDKs do.
    pub value: SecretString,
    /// `application/x-pkcs12` or `application/x-pem-file`.
    pub content_type: String,
    /// The PFX password, if the PFX has one (a managed secret's PFX has none).
    pub password: Option<SecretString>,
    /// The policy to give the imported certificate, as captured (its `secret_props.contentType`
    /// is set to `content_type` on import).
    pub policy: Option<serde_json::Value>,
    /// Tags.
    pub tags: Tags,
    /// Only `enabled`, `not_before` and `expires` are written.
    pub attributes: Attributes,
}

impl fmt::Debug for CertificateImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateImport")
            .field("value", &"[redacted]")
            .field("content_type", &self.content_type)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("policy", &self.policy)
            .field("tags", &self.tags)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// The name and version of what a write created or brought back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenItem {
    /// Which kind of object.
    pub kind: ItemKind,
    /// Its name.
    pub name: String,
    /// Its current version id, when the response named one.
    pub version: Option<String>,
    /// The identifier Azure returned.
    pub id: String,
}

/// Why a request ended in 409.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictReason {
    /// The name exists (restore over a live object).
    Exists,
    /// The name is soft-deleted: recover or purge it first.
    DeletedButRecoverable,
    /// A purge or delete of the name is still in progress; retry in a few seconds.
    BeingDeleted,
    /// A recover of the name is in progress; retry in a few seconds.
    BeingRecovered,
    /// Another 409 code.
    Other(String),
}

impl ConflictReason {
    fn from_code(code: &str) -> Self {
        match code {
            "ObjectIsDeletedButRecoverable" => ConflictReason::DeletedButRecoverable,
            "ObjectIsBeingDeleted" => ConflictReason::BeingDeleted,
            "ObjectIsBeingRecovered" => ConflictReason::BeingRecovered,
            "Conflict" | "" => ConflictReason::Exists,
            other => ConflictReason::Other(other.to_owned()),
        }
    }

    /// Azure's code for this reason.
    pub fn code(&self) -> &str {
        match self {
            ConflictReason::Exists => "Conflict",
            ConflictReason::DeletedButRecoverable => "ObjectIsDeletedButRecoverable",
            ConflictReason::BeingDeleted => "ObjectIsBeingDeleted",
            ConflictReason::BeingRecovered => "ObjectIsBeingRecovered",
            ConflictReason::Other(code) => code,
        }
    }

    /// Whether the conflict settles by itself (a delete or recover in progress): poll again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConflictReason::BeingDeleted | ConflictReason::BeingRecovered
        )
    }
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a request ended in 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequestReason {
    /// Restore of a blob made in another subscription or geography ("Cannot decrypt backup
    /// blob"): use a plain restore instead.
    CannotDecryptBackup,
    /// A damaged or foreign blob ("Malformed backup blob").
    MalformedBackup,
    /// Any other 400.
    Other,
}

/// Azure's `error.code` for a damaged blob on a restore call, as recorded
/// (`azure-sdk-for-js`, `recording_can_restore_a_secret_malformed_backup_bytes`): a phrase,
/// not an identifier, but distinctive, so it is matched exactly.
const MALFORMED_BACKUP_CODE: &str = "Malformed backup blob";

/// The code phrase of a blob from another subscription or geography, matched like
/// [`MALFORMED_BACKUP_CODE`] should Azure send it as a code.
const CANNOT_DECRYPT_CODE: &str = "Cannot decrypt backup blob";

impl BadRequestReason {
    /// Why a 400 answered a restore, from what Azure sends: first the envelope's `error.code`
    /// and innermost `innererror.code` (structure), then, for the cross-subscription refusal
    /// only, the message text.
    ///
    /// The message is a fallback because Azure's code for that refusal is not distinctive:
    /// every public report of it shows only the message "Cannot decrypt backup blob.", and
    /// the generic `BadParameter` that accompanies it also answers any other bad argument
    /// (the local Key Vault answers a blob of the wrong kind with it too). A damaged blob has
    /// a code of its own, so no message is read for it.
    fn classify(code: &str, inner_code: Option<&str>, message: &str) -> Self {
        let codes = [Some(code), inner_code];
        let has_code = |wanted: &str| {
            codes
                .iter()
                .flatten()
                .any(|c| c.trim().trim_end_matches('.').eq_ignore_ascii_case(wanted))
        };
        if has_code(MALFORMED_BACKUP_CODE) {
            BadRequestReason::MalformedBackup
        } else if has_code(CANNOT_DECRYPT_CODE)
            || message
                .to_ascii_lowercase()
                .contains(&CANNOT_DECRYPT_CODE.to_ascii_lowercase())
        {
            BadRequestReason::CannotDecryptBackup
        } else {
            BadRequestReason::Other
        }
    }
}

/// A Key Vault failure, classified so callers can act on it. Messages carry Azure's code and
/// message and never a secret value, token or request body.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// 404: the object (or version) does not exist, e.g. deleted while the backup ran.
    #[error("not found ({code}): {message}")]
    NotFound { code: String, message: String },
    /// 403 with Azure's most specific code (`SecretDisabled`, `ForbiddenByPolicy`,
    /// `SecretManagedByKeyVault`, …).
    #[error("forbidden ({code}): {message}")]
    Forbidden { code: String, message: String },
    /// 409 with the reason from Azure's innererror code.
    #[error("conflict ({reason}): {message}")]
    Conflict {
        reason: ConflictReason,
        message: String,
    },
    /// 400, with the two restore failures told apart.
    #[error("bad request ({code}): {message}")]
    BadRequest {
        reason: BadRequestReason,
        code: String,
        message: String,
    },
    /// 429 still answered after every retry.
    #[error("throttled by the vault (429) after retries{}", retry_after_suffix(*.retry_after))]
    Throttled { retry_after: Option<Duration> },
    /// 5xx, 408 or a dropped connection still failing after every retry.
    #[error("transient failure{}: {message}", status_suffix(*.status))]
    Transient {
        status: Option<u16>,
        message: String,
    },
    /// 401 although a token was sent: the token is for another tenant or audience.
    #[error("unauthorized (401): {message}")]
    Unauthorized { message: String },
    /// No credential produced a token.
    #[error(transparent)]
    Authentication(#[from] AuthError),
    /// The request got no answer: the host does not resolve, refuses connections, does not
    /// answer in time, or presents an untrusted certificate.
    #[error(transparent)]
    Network(#[from] transport::NetworkFailure),
    /// A name or version that cannot be put in a request.
    #[error("'{name}' is not a valid {what}")]
    InvalidName { what: &'static str, name: String },
    /// The vault address was refused.
    #[error(transparent)]
    Url(#[from] VaultUrlError),
    /// The HTTP client could not be set up (unreadable or invalid `--ca-cert`, …).
    #[error("{0}")]
    Setup(String),
    /// A response Key Vault should not have sent (unparseable body, missing field).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    /// Any other failure.
    #[error("{message}{}", status_suffix(*.status))]
    Other {
        status: Option<u16>,
        message: String,
    },
}

fn retry_after_suffix(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {} s", d.as_secs()))
        .unwrap_or_default()
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl VaultError {
    /// Classifies an HTTP error response from Key Vault. `code` is the envelope's
    /// `error.code`, `inner_code` its innermost `innererror.code`; the more specific one wins
    /// for 403 and 409, as Azure puts the reason there.
    pub fn from_response(
        status: u16,
        code: Option<&str>,
        inner_code: Option<&str>,
        message: Option<&str>,
        retry_after: Option<Duration>,
    ) -> Self {
        let outer = code.unwrap_or_default();
        let specific = inner_code.filter(|c| !c.is_empty()).unwrap_or(outer);
        let message = message
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("HTTP {status}"));
        match status {
            400 => {
                let reason = BadRequestReason::classify(outer, inner_code, &message);
                VaultError::BadRequest {
                    reason,
                    code: non_empty_or(outer, "BadRequest"),
                    message,
                }
            }
            401 => VaultError::Unauthorized { message },
            403 => VaultError::Forbidden {
                code: non_empty_or(specific, "Forbidden"),
                message,
            },
            404 => VaultError::NotFound {
                code: non_empty_or(outer, "NotFound"),
                message,
            },
            409 => VaultError::Conflict {
                reason: ConflictReason::from_code(specific),
                message,
            },
            429 => VaultError::Throttled { retry_after },
            408 | 500 | 502 | 503 | 504 => VaultError::Transient {
                status: Some(status),
                message,
            },
            _ => VaultError::Other {
                status: Some(status),
                message: if outer.is_empty() {
                    message
                } else {
                    format!("{outer}: {message}")
                },
            },
        }
    }

    /// 404: the object is gone (or never was).
    pub fn is_not_found(&self) -> bool {
        matches!(self, VaultError::NotFound { .. })
    }

    /// 403 `SecretDisabled`: the secret version is disabled, its value cannot be read.
    pub fn is_secret_disabled(&self) -> bool {
        matches!(self, VaultError::Forbidden { code, .. } if code == "SecretDisabled")
    }

    /// 403 of any kind.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, VaultError::Forbidden { .. })
    }

    /// The reason of a 409, if this is one.
    pub fn conflict_reason(&self) -> Option<&ConflictReason> {
        match self {
            VaultError::Conflict { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// 400 "Cannot decrypt backup blob": the blob was made in another subscription or
    /// geography; only a plain restore can bring the item there.
    pub fn is_cannot_decrypt_backup(&self) -> bool {
        matches!(
            self,
            VaultError::BadRequest {
                reason: BadRequestReason::CannotDecryptBackup,
                ..
            }
        )
    }

    /// Whether trying again later may succeed (throttling, 5xx, dropped connections, a delete
    /// or recover still settling).
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Throttled { .. } | VaultError::Transient { .. } => true,
            VaultError::Network(failure) => !failure.cause.is_final(),
            VaultError::Conflict { reason, .. } => reason.is_transient(),
            _ => false,
        }
    }
}

fn non_empty_or(code: &str, default: &str) -> String {
    if code.is_empty() {
        default.to_owned()
    } else {
        code.to_owned()
    }
}

/// Splits an object identifier `https://HOST/COLLECTION/NAME[/VERSION]` into name and version,
/// checking the collection (`secrets`, `keys`, `certificates`, `deletedsecrets`, …).
pub fn split_object_id(id: &str, collection: &str) -> Option<(String, Option<String>)> {
    let url = url::Url::parse(id).ok()?;
    let mut segments = url.path_segments()?.filter(|s| !s.is_empty());
    if segments.next()? != collection {
        return None;
    }
    let name = segments.next()?.to_owned();
    let version = segments.next().map(str::to_owned);
    Some((name, version))
}

/// Read access to one vault. Cheap to clone and share across tasks; every method may run
/// concurrently with any other. Lists follow `nextLink` until it is null, whatever the page
/// sizes (short and empty pages included), and stream items as pages arrive; a page that still
/// fails after the retries yields one `Err` item and ends the stream, so a list is either
/// complete or visibly failed, never silently short.
pub trait VaultReader: Send + Sync {
    /// The vault this reader talks to.
    fn vault_url(&self) -> &VaultUrl;

    /// Every secret in the vault (current properties, no values), managed ones included with
    /// `managed: true`.
    fn list_secrets(&self) -> BoxStream<'static, Result<SecretProperties, VaultError>>;

    /// Every version of a secret, oldest first (by `created`, then by id), without values.
    fn list_secret_versions(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<SecretProperties>, VaultError>> + Send;

    /// One secret version with its value; `version: None` reads the current version.
    /// A disabled version fails with [`VaultError::is_secret_disabled`].
    fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> impl Future<Output = Result<SecretVersionValue, VaultError>> + Send;

    /// Every key in the vault (properties only), managed ones included with `managed: true`.
    fn list_keys(&self) -> BoxStream<'static, Result<KeyProperties, VaultError>>;

    /// Every version of a key, oldest first (by `created`, then by id).
    fn list_key_versions(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<KeyProperties>, VaultError>> + Send;

    /// A key version's properties and public JWK; `version: None` reads the current one.
    fn get_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> impl Future<Output = Result<KeyBundle, VaultError>> + Send;

    /// A key's rotation policy as Azure returned it; `None` when the key has none.
    fn get_key_rotation_policy(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, VaultError>> + Send;

    /// Every certificate in the vault (properties only).
    fn list_certificates(&self) -> BoxStream<'static, Result<CertificateProperties, VaultError>>;

    /// Every version of a certificate, oldest first (by `created`, then by id).
    fn list_certificate_versions(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<CertificateProperties>, VaultError>> + Send;

    /// A certificate version with its public certificate and policy; `version: None` reads the
    /// current one.
    fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> impl Future<Output = Result<CertificateBundle, VaultError>> + Send;

    /// A certificate's policy as Azure returned it.
    fn get_certificate_policy(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<serde_json::Value, VaultError>> + Send;

    /// The native backup blob of a secret, key or certificate (all its versions).
    fn backup(
        &self,
        kind: ItemKind,
        name: &str,
    ) -> impl Future<Output = Result<BackupBlob, VaultError>> + Send;

    /// Every soft-deleted object of a kind.
    fn list_deleted(&self, kind: ItemKind) -> BoxStream<'static, Result<DeletedItem, VaultError>>;

    /// One soft-deleted object; [`VaultError::is_not_found`] when there is none (or the delete
    /// has not settled yet).
    fn get_deleted(
        &self,
        kind: ItemKind,
        name: &str,
    ) -> impl Future<Output = Result<DeletedItem, VaultError>> + Send;
}

/// Write access to one vault, for restore.
pub trait VaultWriter: VaultReader {
    /// Writes a new version of a secret with its value, content type, tags and
    /// `enabled`/`nbf`/`exp`.
    fn set_secret(
        &self,
        name: &str,
        secret: &NewSecretVersion,
    ) -> impl Future<Output = Result<WrittenItem, VaultError>> + Send;

    /// Restores a native backup blob into this vault. Fails with a conflict if the name exists,
    /// is soft-deleted or is being purged, and with
    /// [`VaultError::is_cannot_decrypt_backup`] for a vault of another subscription or geography.
    fn restore(
        &self,
        kind: ItemKind,
        blob: &BackupBlob,
    ) -> impl Future<Output = Result<WrittenItem, VaultError>> + Send;

    /// Starts recovering a soft-deleted object. The object may answer 404 for a few seconds
    /// afterwards: poll before relying on it.
    fn recover_deleted(
        &self,
        kind: ItemKind,
        name: &str,
    ) -> impl Future<Output = Result<WrittenItem, VaultError>> + Send;

    /// Imports a certificate with its private key (PFX or PEM).
    fn import_certificate(
        &self,
        name: &str,
        certificate: &CertificateImport,
    ) -> impl Future<Output = Result<WrittenItem, VaultError>> + Send;

    /// Soft-deletes an object (never purges): it stays recoverable for the vault's retention.
    /// A certificate takes its managed key and secret along. A repeated delete whose first
    /// answer was lost finds nothing live: [`VaultError::is_not_found`], which callers that
    /// saw the object live count as done.
    fn soft_delete(
        &self,
        kind: ItemKind,
        name: &str,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_means_public_cloud() {
        let url = VaultUrl::parse("MyVault-01").unwrap();
        assert_eq!(url.as_str(), "https://myvault-01.vault.azure.net/");
        assert_eq!(url.name(), "myvault-01");
        assert!(!url.is_localhost());
    }

    #[test]
    fn bad_vault_names_are_refused() {
        for name in [
            "ab",
            "1vault",
            "vault-",
            "va--ult",
            "a_b_c",
            "abcdefghijklmnopqrstuvwxy",
        ] {
            assert!(
                matches!(VaultUrl::parse(name), Err(VaultUrlError::InvalidName(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn full_urls_are_taken_as_is() {
        let url = VaultUrl::parse("https://kv1.vault.azure.cn").unwrap();
        assert_eq!(url.as_str(), "https://kv1.vault.azure.cn/");
        let url = VaultUrl::parse("https://prod.vault.usgovcloudapi.net/").unwrap();
        assert_eq!(url.host(), "prod.vault.usgovcloudapi.net");
        let url = VaultUrl::parse("https://main.vault.localhost:8443/").unwrap();
        assert_eq!(url.as_str(), "https://main.vault.localhost:8443/");
        assert!(url.is_localhost());
        assert_eq!(url.name(), "main");
    }

    #[test]
    fn another_store_keeps_its_address_and_is_named_by_it() {
        let url = url::Url::parse("bao+https://127.0.0.1:8200/secret/team").unwrap();
        let store = VaultUrl::for_store(url, "secret");
        assert_eq!(store.as_str(), "bao+https://127.0.0.1:8200/secret/team");
        assert_eq!(store.name(), "secret");
        assert_eq!(store.host(), "127.0.0.1");
        assert_ne!(
            store,
            VaultUrl::parse("https://secret.vault.azure.net/").unwrap()
        );
    }

    #[test]
    fn host_names_get_https() {
        let url = VaultUrl::parse("kv1.vault.azure.net").unwrap();
        assert_eq!(url.as_str(), "https://kv1.vault.azure.net/");
    }

    #[test]
    fn managed_hsm_is_refused_clearly() {
        let err = VaultUrl::parse("https://pool.managedhsm.azure.net/").unwrap_err();
        assert!(matches!(err, VaultUrlError::ManagedHsm(_)));
        assert!(err.to_string().contains("Managed HSM"));
        assert!(matches!(
            VaultUrl::parse("pool.managedhsm.azure.net"),
            Err(VaultUrlError::ManagedHsm(_))
        ));
    }

    #[test]
    fn non_https_and_non_base_urls_are_refused() {
        assert!(matches!(
            VaultUrl::parse("http://kv1.vault.azure.net/"),
            Err(VaultUrlError::NotHttps(_))
        ));
        for url in [
            "https://kv1.vault.azure.net/secrets",
            "https://kv1.vault.azure.net/?api-version=7.5",
            "https://user:pw@kv1.vault.azure.net/",
        ] {
            assert!(
                matches!(VaultUrl::parse(url), Err(VaultUrlError::NotBaseUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn item_names_are_checked() {
        assert!(is_valid_item_name("db-password-1"));
        assert!(!is_valid_item_name(""));
        assert!(!is_valid_item_name("../keys"));
        assert!(!is_valid_item_name("a b"));
        assert!(!is_valid_item_name(&"a".repeat(128)));
        assert!(is_valid_version("0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_version("a/b"));
    }

    #[test]
    fn disabled_secret_is_classified() {
        let err = VaultError::from_response(
            403,
            Some("Forbidden"),
            Some("SecretDisabled"),
            Some("Operation get is not allowed on a disabled secret."),
            None,
        );
        assert!(err.is_secret_disabled());
        assert!(err.is_forbidden());
        let err = VaultError::from_response(
            403,
            Some("Forbidden"),
            Some("ForbiddenByPolicy"),
            Some("no"),
            None,
        );
        assert!(!err.is_secret_disabled());
        assert!(
            matches!(err, VaultError::Forbidden { ref code, .. } if code == "ForbiddenByPolicy")
        );
    }

    #[test]
    fn conflicts_carry_the_inner_code() {
        let cases = [
            (None, ConflictReason::Exists),
            (
                Some("ObjectIsDeletedButRecoverable"),
                ConflictReason::DeletedButRecoverable,
            ),
            (Some("ObjectIsBeingDeleted"), ConflictReason::BeingDeleted),
            (
                Some("ObjectIsBeingRecovered"),
                ConflictReason::BeingRecovered,
            ),
        ];
        for (inner, expected) in cases {
            let err = VaultError::from_response(409, Some("Conflict"), inner, Some("x"), None);
            assert_eq!(err.conflict_reason(), Some(&expected));
        }
        let err = VaultError::from_response(
            409,
            Some("Conflict"),
            Some("ObjectIsBeingDeleted"),
            None,
            None,
        );
        assert!(err.is_retryable());
    }

    #[test]
    fn cross_subscription_refusal_is_recognised_by_its_code() {
        let err = VaultError::from_response(
            400,
            Some("BadParameter"),
            Some("Cannot decrypt backup blob"),
            Some("The request is invalid."),
            None,
        );
        assert!(err.is_cannot_decrypt_backup(), "{err:?}");
        let outer =
            VaultError::from_response(400, Some("Cannot decrypt backup blob."), None, None, None);
        assert!(outer.is_cannot_decrypt_backup(), "{outer:?}");
    }

    #[test]
    fn cross_subscription_refusal_falls_back_to_azure_message() {
        // What every public report shows: the generic code and Azure's message.
        let err = VaultError::from_response(
            400,
            Some("BadParameter"),
            None,
            Some("Cannot decrypt backup blob."),
            None,
        );
        assert!(err.is_cannot_decrypt_backup(), "{err:?}");
        let unrelated = VaultError::from_response(
            400,
            Some("BadParameter"),
            None,
            Some("The value cannot decrypt here: bad maxresults"),
            None,
        );
        assert!(!unrelated.is_cannot_decrypt_backup(), "{unrelated:?}");
    }

    #[test]
    fn wrong_kind_blob_is_not_taken_for_a_malformed_one() {
        // The local Key Vault's answer to a key's blob posted to the secrets' restore route:
        // `BadParameter`, whose message mentions the backup blob; only Azure's own code
        // `Malformed backup blob` means a damaged blob.
        let wrong_kind = VaultError::from_response(
            400,
            Some("BadParameter"),
            None,
            Some("The backup blob holds a key; it cannot be restored as a secret."),
            None,
        );
        assert!(
            matches!(
                wrong_kind,
                VaultError::BadRequest {
                    reason: BadRequestReason::Other,
                    ..
                }
            ),
            "{wrong_kind:?}"
        );
        let malformed = VaultError::from_response(
            400,
            Some("Malformed backup blob"),
            None,
            Some("anything"),
            None,
        );
        assert!(
            matches!(
                malformed,
                VaultError::BadRequest {
                    reason: BadRequestReason::MalformedBackup,
                    ..
                }
            ),
            "{malformed:?}"
        );
    }

    #[test]
    fn restore_failures_are_told_apart() {
        let foreign = VaultError::from_response(
            400,
            Some("BadParameter"),
            None,
            Some("Cannot decrypt backup blob."),
            None,
        );
        assert!(foreign.is_cannot_decrypt_backup());
        let malformed = VaultError::from_response(
            400,
            Some("Malformed backup blob"),
            None,
            Some("Backup blob contains invalid or corrupt version."),
            None,
        );
        assert!(matches!(
            malformed,
            VaultError::BadRequest {
                reason: BadRequestReason::MalformedBackup,
                ..
            }
        ));
        assert!(!malformed.is_cannot_decrypt_backup());
        let other = VaultError::from_response(
            400,
            Some("BadParameter"),
            None,
            Some("bad maxresults"),
            None,
        );
        assert!(matches!(
            other,
            VaultError::BadRequest {
                reason: BadRequestReason::Other,
                ..
            }
        ));
    }

    #[test]
    fn status_classes() {
        assert!(
            VaultError::from_response(404, Some("SecretNotFound"), None, None, None).is_not_found()
        );
        let throttled =
            VaultError::from_response(429, None, None, None, Some(Duration::from_secs(3)));
        assert!(
            matches!(throttled, VaultError::Throttled { retry_after: Some(d) } if d.as_secs() == 3)
        );
        assert!(throttled.is_retryable());
        for status in [500, 502, 503, 504, 408] {
            assert!(matches!(
                VaultError::from_response(status, None, None, None, None),
                VaultError::Transient { .. }
            ));
        }
        assert!(matches!(
            VaultError::from_response(401, None, None, Some("AKV10022"), None),
            VaultError::Unauthorized { .. }
        ));
        assert!(matches!(
            VaultError::from_response(418, Some("Teapot"), None, None, None),
            VaultError::Other {
                status: Some(418),
                ..
            }
        ));
    }

    #[test]
    fn debug_never_shows_values() {
        let value = SecretVersionValue {
            properties: SecretProperties {
                name: "n".into(),
                version: Some("v".into()),
                id: "https://x.vault.azure.net/secrets/n/v".into(),
                content_type: None,
                tags: Tags::new(),
                attributes: Attributes::default(),
                managed: false,
                key_id: None,
            },
            value: SecretString::from("canary-8c1f"),
        };
        let text = format!("{value:?}");
        assert!(!text.contains("canary-8c1f"));
        assert!(text.contains("[redacted]"));
        let new = NewSecretVersion {
            value: SecretString::from("canary-8c1f"),
            content_type: None,
            tags: Tags::new(),
            attributes: Attributes::default(),
        };
        assert!(!format!("{new:?}").contains("canary-8c1f"));
    }

    #[test]
    fn object_ids_split() {
        assert_eq!(
            split_object_id(
                "https://kv.vault.azure.net:443/secrets/db/abc123",
                "secrets"
            ),
            Some(("db".to_owned(), Some("abc123".to_owned())))
        );
        assert_eq!(
            split_object_id("https://kv.vault.azure.net/keys/k1", "keys"),
            Some(("k1".to_owned(), None))
        );
        assert_eq!(
            split_object_id("https://kv.vault.azure.net/keys/k1", "secrets"),
            None
        );
    }

    #[test]
    fn certificate_exportability_comes_from_the_policy() {
        let bundle = CertificateBundle {
            properties: CertificateProperties {
                name: "web".into(),
                version: Some("v1".into()),
                id: "https://kv.vault.azure.net/certificates/web/v1".into(),
                tags: Tags::new(),
                attributes: Attributes::default(),
                x509_thumbprint: None,
            },
            cer: vec![],
            policy: Some(serde_json::json!({"key_props": {"exportable": true}})),
            content_type: Some("application/x-pkcs12".into()),
            secret_id: Some("https://kv.vault.azure.net/secrets/web/v1".into()),
            key_id: None,
        };
        assert!(bundle.key_exportable());
        assert_eq!(bundle.secret_version().as_deref(), Some("v1"));
    }
}
