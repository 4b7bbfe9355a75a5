//! The seed file: a JSON document declaring vaults and the objects they start with, so a test
//! or a demo begins from a known vault (many versions, disabled and expired secrets, keys,
//! self-signed certificates, soft-deleted items).
//!
//! ```json
//! {
//!   "vaults": [{"name": "prod", "subscription": "s1", "geo": "westeurope", "retention_days": 7}],
//!   "deleted_vaults": [{"name": "old-kv", "subscription": "s1", "purge_protection": true}],
//!   "managed_hsms": [{"name": "hsm1", "subscription": "s1"}],
//!   "secrets": [
//!     {"vault": "prod", "name": "db-password", "versions": [{"value": "old"}, {"value": "new", "tags": {"env": "prod"}}]},
//!     {"name": "many", "value": "v", "version_count": 40},
//!     {"name": "off", "value": "x", "enabled": false},
//!     {"name": "stale", "value": "x", "exp": 1600000000},
//!     {"name": "gone", "value": "x", "deleted": true}
//!   ],
//!   "keys": [
//!     {"vault": "prod", "name": "signing", "kty": "RSA", "size": 2048, "version_count": 3},
//!     {"name": "ec", "kty": "EC", "crv": "P-384", "deleted": true}
//!   ],
//!   "certificates": [
//!     {"name": "web-tls", "subject": "CN=www.example.test", "exportable": true},
//!     {"name": "locked", "exportable": false, "content_type": "application/x-pem-file"}
//!   ]
//! }
//! ```
//!
//! `vault` defaults to the first vault. Versions get `created` one second apart ending now
//! unless given.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::state::AppState;
use super::store::{Kind, Payload, Redacted, Timing, Version};
use super::{EmulatorError, VaultSpec};

/// A parsed seed file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub vaults: Vec<VaultSpec>,
    /// Soft-deleted vaults, listed by Azure Resource Manager only (same fields as a vault).
    #[serde(default)]
    pub deleted_vaults: Vec<VaultSpec>,
    /// Managed HSMs, listed by Azure Resource Manager only (same fields as a vault).
    #[serde(default)]
    pub managed_hsms: Vec<VaultSpec>,
    #[serde(default)]
    pub secrets: Vec<SeedSecret>,
    #[serde(default)]
    pub keys: Vec<SeedKey>,
    #[serde(default)]
    pub certificates: Vec<SeedCertificate>,
}

/// One seeded certificate, issued by the vault's own `Self` issuer with its managed key and
/// secret of the same version, as `create` would leave it once completed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCertificate {
    pub vault: Option<String>,
    pub name: String,
    /// The subject (`CN=NAME` by default).
    pub subject: Option<String>,
    /// Whether the policy marks the private key exportable (default true).
    pub exportable: Option<bool>,
    /// `application/x-pkcs12` (default) or `application/x-pem-file`.
    pub content_type: Option<String>,
    /// `RSA` (default), `EC`, or `-HSM` types in a premium vault.
    pub kty: Option<String>,
    /// RSA modulus bits.
    pub size: Option<u32>,
    /// EC curve.
    pub crv: Option<String>,
    pub validity_months: Option<u32>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// One seeded key: real key material, generated at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    pub vault: Option<String>,
    pub name: String,
    /// `RSA`, `EC`, `RSA-HSM`, `EC-HSM` (HSM types in premium vaults only).
    pub kty: String,
    /// RSA modulus bits (2048 by default).
    pub size: Option<u32>,
    /// EC curve (`P-256` by default).
    pub crv: Option<String>,
    /// How many versions (1 by default), each with its own material.
    pub version_count: Option<usize>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Soft-delete it after creating it.
    #[serde(default)]
    pub deleted: bool,
}

/// One seeded secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecret {
    pub vault: Option<String>,
    pub name: String,
    /// Explicit versions, oldest first.
    #[serde(default)]
    pub versions: Vec<SeedSecretVersion>,
    /// Shorthand for versions: this value (`{value}-{n}` for each of `version_count`).
    pub value: Option<Redacted<String>>,
    pub version_count: Option<usize>,
    pub content_type: Option<String>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Soft-delete it after creating it.
    #[serde(default)]
    pub deleted: bool,
}

/// One version of a seeded secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecretVersion {
    pub value: Redacted<String>,
    pub id: Option<String>,
    pub content_type: Option<String>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: Option<i64>,
    pub tags: Option<BTreeMap<String, String>>,
}

impl SeedFile {
    /// Reads and parses a seed file.
    pub fn load(path: &Path) -> Result<Self, EmulatorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EmulatorError::Io(path.display().to_string(), e))?;
        let seed: SeedFile = serde_json::from_str(&text)
            .map_err(|e| EmulatorError::Seed(format!("{}: {e}", path.display())))?;
        for spec in seed
            .vaults
            .iter()
            .chain(&seed.deleted_vaults)
            .chain(&seed.managed_hsms)
        {
            spec.validate()?;
        }
        Ok(seed)
    }

    /// Creates the declared objects in `state`'s vaults.
    pub fn apply(&self, state: &AppState) -> Result<(), EmulatorError> {
        let now_ms = state.clock.now_ms();
        let t = Timing {
            now_ms,
            delete_delay_ms: 0,
            purge_window_ms: 0,
        };
        let now_s = t.now_s();
        for secret in &self.secrets {
            let vault_name = secret
                .vault
                .clone()
                .unwrap_or_else(|| state.default_vault.clone());
            let vault = state.vault(&vault_name).ok_or_else(|| {
                EmulatorError::Seed(format!(
                    "secret '{}' names vault '{vault_name}', which is not declared",
                    secret.name
                ))
            })?;
            let mut versions = secret.versions.clone();
            if versions.is_empty() {
                let value = secret.value.clone().ok_or_else(|| {
                    EmulatorError::Seed(format!(
                        "secret '{}' has no value or versions",
                        secret.name
                    ))
                })?;
                versions = match secret.version_count {
                    Some(n) if n > 1 => (1..=n)
                        .map(|i| SeedSecretVersion {
                            value: Redacted(format!("{}-{i}", value.0)),
                            ..SeedSecretVersion::default()
                        })
                        .collect(),
                    _ => vec![SeedSecretVersion {
                        value,
                        ..SeedSecretVersion::default()
                    }],
                };
            }
            let total = i64::try_from(versions.len()).unwrap_or(i64::MAX);
            let mut store = vault.lock();
            for (i, seeded) in versions.iter().enumerate() {
                let i = i64::try_from(i).unwrap_or(0);
                let created = seeded.created.unwrap_or(now_s - (total - 1 - i));
                let mut version = Version::new(
                    created,
                    Payload::Secret {
                        value: seeded.value.clone(),
                    },
                );
                if let Some(id) = &seeded.id {
                    version.id = id.to_ascii_lowercase();
                }
                version.content_type = seeded
                    .content_type
                    .clone()
                    .or_else(|| secret.content_type.clone());
                version.tags = seeded.tags.clone().or_else(|| secret.tags.clone());
                version.attributes.enabled = seeded.enabled.or(secret.enabled).unwrap_or(true);
                version.attributes.nbf = seeded.nbf.or(secret.nbf);
                version.attributes.exp = seeded.exp.or(secret.exp);
                store
                    .create_version(Kind::Secret, &secret.name, version, t)
                    .map_err(|e| EmulatorError::Seed(format!("secret '{}': {e:?}", secret.name)))?;
            }
            if secret.deleted {
                store
                    .delete(Kind::Secret, &secret.name, t)
                    .map_err(|e| EmulatorError::Seed(format!("secret '{}': {e:?}", secret.name)))?;
            }
        }
        for key in &self.keys {
            seed_key(state, key, t)?;
        }
        for certificate in &self.certificates {
            seed_certificate(state, certificate, t)?;
        }
        Ok(())
    }
}

fn seed_certificate(
    state: &AppState,
    seed: &SeedCertificate,
    t: Timing,
) -> Result<(), EmulatorError> {
    let fail = |what: String| EmulatorError::Seed(format!("certificate '{}': {what}", seed.name));
    let vault_name = seed
        .vault
        .clone()
        .unwrap_or_else(|| state.default_vault.clone());
    let vault = state
        .vault(&vault_name)
        .ok_or_else(|| fail(format!("vault '{vault_name}' is not declared")))?;
    let mut key_props = serde_json::json!({
        "exportable": seed.exportable.unwrap_or(true),
        "kty": seed.kty.clone().unwrap_or_else(|| "RSA".to_owned()),
        "reuse_key": false,
    });
    if let Some(size) = seed.size {
        key_props["key_size"] = serde_json::json!(size);
    }
    if let Some(crv) = &seed.crv {
        key_props["crv"] = serde_json::json!(crv);
    }
    let policy = serde_json::json!({
        "key_props": key_props,
        "secret_props": {
            "contentType": seed.content_type.clone().unwrap_or_else(|| "application/x-pkcs12".to_owned()),
        },
        "x509_props": {
            "subject": seed.subject.clone().unwrap_or_else(|| format!("CN={}", seed.name)),
            "validity_months": seed.validity_months.unwrap_or(12),
        },
        "issuer": {"name": "Self"},
    });
    let premium = vault.spec.sku == super::Sku::Premium;
    let mut store = vault.lock();
    super::certificates::issue_into_store(
        &mut store,
        &seed.name,
        &policy,
        seed.tags.clone(),
        premium,
        t,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

fn seed_key(state: &AppState, key: &SeedKey, t: Timing) -> Result<(), EmulatorError> {
    use super::crypto::{KeyMaterial, KeyType};
    use super::keys::{StoredKey, key_spec};

    let fail = |what: String| EmulatorError::Seed(format!("key '{}': {what}", key.name));
    let vault_name = key
        .vault
        .clone()
        .unwrap_or_else(|| state.default_vault.clone());
    let vault = state
        .vault(&vault_name)
        .ok_or_else(|| fail(format!("vault '{vault_name}' is not declared")))?;
    let kty = KeyType::parse(&key.kty).map_err(|e| fail(e.to_string()))?;
    if kty.is_hsm() && vault.spec.sku != super::Sku::Premium {
        return Err(fail(format!(
            "{} keys need a premium vault; '{vault_name}' is standard",
            key.kty
        )));
    }
    let spec = key_spec(kty, key.size, key.crv.as_deref()).map_err(|e| fail(e.message))?;
    let count = key.version_count.unwrap_or(1).max(1);
    let total = i64::try_from(count).unwrap_or(i64::MAX);
    let mut versions = Vec::with_capacity(count);
    for i in 0..count {
        let material = KeyMaterial::generate(spec).map_err(|e| fail(e.to_string()))?;
        let stored = StoredKey {
            kty,
            key_ops: kty.default_key_ops(),
            material,
        };
        let created = t.now_s() - (total - 1 - i64::try_from(i).unwrap_or(0));
        let mut version = stored.new_version(created).map_err(|e| fail(e.message))?;
        version.attributes.enabled = key.enabled.unwrap_or(true);
        version.attributes.nbf = key.nbf;
        version.attributes.exp = key.exp;
        version.tags = key.tags.clone();
        versions.push(version);
    }
    let mut store = vault.lock();
    for version in versions {
        store
            .create_version(Kind::Key, &key.name, version, t)
            .map_err(|e| fail(format!("{e:?}")))?;
    }
    if key.deleted {
        store
            .delete(Kind::Key, &key.name, t)
            .map_err(|e| fail(format!("{e:?}")))?;
    }
    Ok(())
}
