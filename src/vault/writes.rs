//! Writes that stay idempotent when a response is lost.
//!
//! A write whose answer never arrives (a dropped connection, a 5xx or 408 from a gateway) may
//! or may not have committed. azure_core's retry policy retries such a request blindly, POST and
//! PUT alike (`typespec_client_core`'s `RetryPolicy` retries every `Io`/`Connection` error and
//! 408/429/5xx), so a lost `set_secret` answer became a second, duplicate version and a lost
//! import a second certificate version. coldvault therefore sends its writes through clients
//! whose azure_core retries are off and retries them here, with [`retry_write`]: a throttled
//! attempt (429: Key Vault refuses it before running it) is simply sent again once the shared
//! pacing gate opens; after an attempt whose outcome is unknown the target is **read back
//! first**, and when it already holds what was written the write counts as done without a
//! second request. A retried native restore or recover cannot add a duplicate (Azure answers
//! 409, or 404 for a recover of a live item); the restore command compares the target with the
//! archive when that happens and counts a match as restored.
//!
//! The read-back decisions are pure functions ([`is_same_secret_write`],
//! [`is_same_certificate_import`]) so they are tested without a vault.

use std::future::Future;
use std::time::Duration;

use age::secrecy::{ExposeSecret, SecretString};
use sha1::Digest as _;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{
    Attributes, CertificateImport, CertificateProperties, NewSecretVersion, SecretProperties,
    VaultError,
};

/// How far the vault's clock may be behind this machine's and a version it created during an
/// attempt still count as created "after the attempt started" (Azure's `created` also drops
/// the fraction of the second). A version older than the attempt by more than this is not
/// ours. Kept short: the price of a too short margin is a duplicate version (what happened
/// before), the price of a too long one is an identical earlier version taken for ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Longest time a write is retried before its last error is reported.
const MAX_WRITE_TIME: Duration = Duration::from_secs(300);
/// First pause between write attempts; it doubles per retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between write attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a failed write attempt says about the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Refused before it ran (429): send it again.
    NotRun,
    /// May or may not have committed (dropped connection, 5xx, 408): read back, then retry.
    Unknown,
    /// A final answer (4xx but 408 and 429, or a local failure): report it.
    Final,
}

/// Classifies a failed attempt.
pub fn attempt_outcome(err: &VaultError) -> AttemptOutcome {
    match err {
        VaultError::Throttled { .. } => AttemptOutcome::NotRun,
        VaultError::Transient { .. } => AttemptOutcome::Unknown,
        _ => AttemptOutcome::Final,
    }
}

/// The pause before retry number `retry` (1-based): exponential from 200 ms, capped at 30 s,
/// at least the server's `Retry-After`.
fn backoff(retry: u32, retry_after: Option<Duration>) -> Duration {
    let exponential = FIRST_BACKOFF
        .saturating_mul(1u32 << retry.saturating_sub(1).min(8))
        .min(MAX_BACKOFF);
    retry_after.map_or(exponential, |wait| wait.max(exponential))
}

/// Runs `attempt` until it succeeds, fails for good, or `max_retries` retries or five minutes
/// are spent. After an attempt whose outcome is unknown, `read_back` is asked first whether
/// the write already happened; `Ok(Some(result))` ends the loop with that result, `Ok(None)`
/// sends the write again. A read-back that fails is not fatal: the write is retried.
pub async fn retry_write<T, A, AF, R, RF>(
    max_retries: u32,
    mut attempt: A,
    mut read_back: R,
) -> Result<T, VaultError>
where
    A: FnMut() -> AF,
    AF: Future<Output = Result<T, VaultError>>,
    R: FnMut() -> RF,
    RF: Future<Output = Result<Option<T>, VaultError>>,
{
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let err = match attempt().await {
            Ok(done) => return Ok(done),
            Err(err) => err,
        };
        let outcome = attempt_outcome(&err);
        if outcome == AttemptOutcome::Final
            || retries >= max_retries
            || started.elapsed() >= MAX_WRITE_TIME
        {
            return Err(err);
        }
        retries += 1;
        let retry_after = match &err {
            VaultError::Throttled { retry_after } => *retry_after,
            _ => None,
        };
        tokio::time::sleep(backoff(retries, retry_after)).await;
        if outcome == AttemptOutcome::Unknown {
            match read_back().await {
                Ok(Some(done)) => {
                    tracing::debug!("a write whose answer was lost had committed; not repeated");
                    return Ok(done);
                }
                Ok(None) => {}
                Err(read_err) => {
                    tracing::debug!("read-back after a lost answer failed: {read_err}");
                }
            }
        }
    }
}

fn same_instant(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> bool {
    a.map(OffsetDateTime::unix_timestamp) == b.map(OffsetDateTime::unix_timestamp)
}

fn same_content_type(a: Option<&str>, b: Option<&str>) -> bool {
    a.filter(|s| !s.is_empty()) == b.filter(|s| !s.is_empty())
}

/// Whether `current` was created after an attempt started at `attempt_started` (within
/// [`CLOCK_SKEW`]).
fn created_since(current: &Attributes, attempt_started: OffsetDateTime) -> bool {
    current
        .created
        .is_some_and(|created| created >= attempt_started - CLOCK_SKEW)
}

/// The read-back decision of a secret set: whether the secret's current version is the one
/// `written` would have made, by an attempt started at `attempt_started`. It must carry the
/// value (`current_value`; `None` when it cannot be read because the version is disabled,
/// which only a disabled write can explain), the content type, tags, `enabled`, `nbf` and
/// `exp` just written, and have been created after the attempt started.
pub fn is_same_secret_write(
    written: &NewSecretVersion,
    current: &SecretProperties,
    current_value: Option<&SecretString>,
    attempt_started: OffsetDateTime,
) -> bool {
    let written_enabled = written.attributes.enabled.unwrap_or(true);
    let same_value = match current_value {
        Some(value) => value.expose_secret() == written.value.expose_secret(),
        None => !written_enabled,
    };
    same_value
        && same_content_type(
            current.content_type.as_deref(),
            written.content_type.as_deref(),
        )
        && current.tags == written.tags
        && current.attributes.enabled.unwrap_or(true) == written_enabled
        && same_instant(current.attributes.not_before, written.attributes.not_before)
        && same_instant(current.attributes.expires, written.attributes.expires)
        && created_since(&current.attributes, attempt_started)
}

/// The read-back decision of a certificate import: whether the certificate's current version
/// is the one `import` would have made by an attempt started at `attempt_started`: its X.509
/// thumbprint is one of the certificates in the imported material (when they can be read from
/// it), its tags and `enabled` are the ones imported, and it was created after the attempt
/// started.
pub fn is_same_certificate_import(
    import: &CertificateImport,
    current: &CertificateProperties,
    attempt_started: OffsetDateTime,
) -> bool {
    let thumbprints = imported_thumbprints(import);
    let same_certificate = thumbprints.is_empty()
        || current
            .x509_thumbprint
            .as_ref()
            .is_some_and(|t| thumbprints.contains(t));
    same_certificate
        && current.tags == import.tags
        && current.attributes.enabled.unwrap_or(true) == import.attributes.enabled.unwrap_or(true)
        && created_since(&current.attributes, attempt_started)
}

/// SHA-1 thumbprints of the certificates in an import's material (PEM text or a PFX as
/// standard base64); empty when none can be read.
fn imported_thumbprints(import: &CertificateImport) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let material = import.value.expose_secret();
    let ders: Vec<Vec<u8>> = if material.contains("-----BEGIN CERTIFICATE-----") {
        pem_certificates(material)
    } else {
        let Ok(pfx) = base64::engine::general_purpose::STANDARD.decode(material.trim()) else {
            return Vec::new();
        };
        let password = import
            .password
            .as_ref()
            .map_or(String::new(), |p| p.expose_secret().to_owned());
        let Ok(store) = p12_keystore::KeyStore::from_pkcs12(&pfx, &password) else {
            return Vec::new();
        };
        let mut ders = Vec::new();
        for (_, entry) in store.entries() {
            match entry {
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                    ders.extend(chain.chain().iter().map(|c| c.as_der().to_vec()));
                }
                p12_keystore::KeyStoreEntry::Certificate(cert) => ders.push(cert.as_der().to_vec()),
            }
        }
        ders
    };
    ders.iter()
        .map(|der| sha1::Sha1::digest(der).to_vec())
        .collect()
}

/// The DER bytes of every `CERTIFICATE` block of PEM text.
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut ders = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body_start = start + BEGIN.len();
        let Some(len) = rest[body_start..].find(END) else {
            break;
        };
        let body: String = rest[body_start..body_start + len]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            ders.push(der);
        }
        rest = &rest[body_start + len + END.len()..];
    }
    ders
}

#[cfg(test)]
mod tests {
    use super::super::Tags;
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn written() -> NewSecretVersion {
        NewSecretVersion {
            value: SecretString::from("v-2".to_owned()),
            content_type: Some("text/plain".into()),
            tags: Tags::from([("env".to_owned(), "prod".to_owned())]),
            attributes: Attributes {
                enabled: Some(true),
                expires: Some(at(2_000_000_000)),
                ..Attributes::default()
            },
        }
    }

    fn current(created: i64) -> SecretProperties {
        SecretProperties {
            name: "db".into(),
            version: Some("0123456789abcdef0123456789abcdef".into()),
            id: "https://kv.vault.azure.net/secrets/db/0123456789abcdef0123456789abcdef".into(),
            content_type: Some("text/plain".into()),
            tags: Tags::from([("env".to_owned(), "prod".to_owned())]),
            attributes: Attributes {
                enabled: Some(true),
                expires: Some(at(2_000_000_000)),
                created: Some(at(created)),
                updated: Some(at(created)),
                recovery_level: Some("Recoverable+Purgeable".into()),
                recoverable_days: Some(90),
                ..Attributes::default()
            },
            managed: false,
            key_id: None,
        }
    }

    #[test]
    fn lost_secret_set_is_recognised_only_when_the_current_version_is_the_write() {
        let value = SecretString::from("v-2".to_owned());
        let started = at(1_700_000_100);
        // The write committed during the attempt (Azure's `created` has whole seconds).
        assert!(is_same_secret_write(
            &written(),
            &current(1_700_000_100),
            Some(&value),
            started
        ));
        // A vault clock a little behind this machine's still counts.
        assert!(is_same_secret_write(
            &written(),
            &current(1_700_000_090),
            Some(&value),
            started
        ));
        // An identical version from before the attempt is not ours: write again.
        assert!(!is_same_secret_write(
            &written(),
            &current(1_699_000_000),
            Some(&value),
            started
        ));
        // Another value, content type, tags or expiry: the write did not happen.
        let other = SecretString::from("v-1".to_owned());
        assert!(!is_same_secret_write(
            &written(),
            &current(1_700_000_100),
            Some(&other),
            started
        ));
        let mut props = current(1_700_000_100);
        props.content_type = None;
        assert!(!is_same_secret_write(
            &written(),
            &props,
            Some(&value),
            started
        ));
        let mut props = current(1_700_000_100);
        props.tags.clear();
        assert!(!is_same_secret_write(
            &written(),
            &props,
            Some(&value),
            started
        ));
        let mut props = current(1_700_000_100);
        props.attributes.expires = None;
        assert!(!is_same_secret_write(
            &written(),
            &props,
            Some(&value),
            started
        ));
        // No creation time reported: cannot be shown to be ours.
        let mut props = current(1_700_000_100);
        props.attributes.created = None;
        assert!(!is_same_secret_write(
            &written(),
            &props,
            Some(&value),
            started
        ));
    }

    #[test]
    fn an_unreadable_current_version_matches_only_a_disabled_write() {
        let started = at(1_700_000_100);
        let mut disabled = written();
        disabled.attributes.enabled = Some(false);
        let mut props = current(1_700_000_101);
        props.attributes.enabled = Some(false);
        assert!(is_same_secret_write(&disabled, &props, None, started));
        assert!(!is_same_secret_write(&written(), &props, None, started));
    }

    #[test]
    fn only_unknown_outcomes_are_read_back() {
        let throttled = VaultError::Throttled { retry_after: None };
        let lost = VaultError::Transient {
            status: None,
            message: "connection closed before message completed".into(),
        };
        let conflict = VaultError::Conflict {
            reason: super::super::ConflictReason::Exists,
            message: "x".into(),
        };
        assert_eq!(attempt_outcome(&throttled), AttemptOutcome::NotRun);
        assert_eq!(attempt_outcome(&lost), AttemptOutcome::Unknown);
        assert_eq!(attempt_outcome(&conflict), AttemptOutcome::Final);
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_millis(200));
        assert_eq!(backoff(3, None), Duration::from_millis(800));
        assert_eq!(backoff(30, None), MAX_BACKOFF);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[tokio::test]
    async fn a_lost_answer_is_read_back_before_the_write_is_sent_again() {
        use std::cell::Cell;
        let sent = Cell::new(0);
        let read = Cell::new(0);
        let result = retry_write(
            5,
            || {
                sent.set(sent.get() + 1);
                async {
                    Err::<&str, _>(VaultError::Transient {
                        status: None,
                        message: "connection reset".into(),
                    })
                }
            },
            || {
                read.set(read.get() + 1);
                async { Ok(Some("read back")) }
            },
        )
        .await;
        assert_eq!(result.unwrap(), "read back");
        assert_eq!((sent.get(), read.get()), (1, 1));
    }

    #[test]
    fn pem_certificates_are_found_in_a_chain() {
        use base64::Engine as _;
        let a = base64::engine::general_purpose::STANDARD.encode(b"first-der");
        let b = base64::engine::general_purpose::STANDARD.encode(b"second-der");
        let text = format!(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
             -----BEGIN CERTIFICATE-----\n{a}\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\n{b}\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            pem_certificates(&text),
            vec![b"first-der".to_vec(), b"second-der".to_vec()]
        );
    }
}
