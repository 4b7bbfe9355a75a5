//! Backup blobs: opaque, sealed, bound to the object kind and to the vault's subscription and
//! geography, as Azure's are.
//!
//! Layout (then unpadded base64url on the wire):
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `CVKVBK01` |
//! | 1 | kind: `S` secret, `K` key, `C` certificate |
//! | 24 | XChaCha20-Poly1305 nonce |
//! | n | ciphertext of the JSON [`BackupContents`] under the security world's sealing key, associated data `coldvault-backup/v1|{kind}|{subscription}|{geography}` |
//! | 16 | integrity tag: XChaCha20-Poly1305 of nothing under the world's integrity key, associated data = every byte before it |
//!
//! The integrity tag does not depend on the vault, so a changed byte is told apart from a blob
//! of another subscription or geography: the first is 400 `Malformed backup blob`, the second
//! 400 "Cannot decrypt backup blob".

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::store::{Kind, StoredObject};

/// The blob's first bytes.
pub const MAGIC: &[u8; 8] = b"CVKVBK01";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;

/// What a blob holds: the object of the blob's kind first, then any companions (a
/// certificate's managed key and secret), every version of each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupContents {
    pub format: u32,
    pub objects: Vec<BackedUpObject>,
}

/// One object inside a blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackedUpObject {
    pub kind: Kind,
    pub object: StoredObject,
}

impl BackupContents {
    /// Contents holding `object` of `kind` alone.
    pub fn single(kind: Kind, object: StoredObject) -> Self {
        Self {
            format: 1,
            objects: vec![BackedUpObject { kind, object }],
        }
    }

    /// The first object of `kind`.
    pub fn take(&self, kind: Kind) -> Option<&StoredObject> {
        self.objects
            .iter()
            .find(|o| o.kind == kind)
            .map(|o| &o.object)
    }
}

/// Where a blob may be opened: the vault's subscription and geography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<'a> {
    pub subscription: &'a str,
    pub geography: &'a str,
}

/// The emulator's security world: the keys that seal and check backup blobs. Every vault of
/// the emulator shares it; the binding in the associated data keeps subscriptions apart.
#[derive(Clone)]
pub struct SecurityWorld {
    seal_key: [u8; 32],
    integrity_key: [u8; 32],
}

impl std::fmt::Debug for SecurityWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecurityWorld([redacted])")
    }
}

fn associated_data(kind: Kind, binding: &Binding<'_>) -> Vec<u8> {
    format!(
        "coldvault-backup/v1|{}|{}|{}",
        kind.noun(),
        binding.subscription.to_ascii_lowercase(),
        binding.geography.to_ascii_lowercase()
    )
    .into_bytes()
}

impl SecurityWorld {
    /// A new world with random keys.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        Self::from_bytes(&bytes)
    }

    /// The world stored as 64 bytes (sealing key, then integrity key).
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut seal_key = [0u8; 32];
        let mut integrity_key = [0u8; 32];
        seal_key.copy_from_slice(&bytes[..32]);
        integrity_key.copy_from_slice(&bytes[32..]);
        Self {
            seal_key,
            integrity_key,
        }
    }

    /// The 64 bytes to persist.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.seal_key);
        out[32..].copy_from_slice(&self.integrity_key);
        out
    }

    /// Seals `contents` as a blob of `kind` for vaults with `binding`; unpadded base64url.
    pub fn seal(
        &self,
        kind: Kind,
        binding: &Binding<'_>,
        contents: &BackupContents,
    ) -> Result<String, ApiError> {
        let plaintext =
            serde_json::to_vec(contents).map_err(|e| ApiError::internal(e.to_string()))?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let ciphertext = XChaCha20Poly1305::new((&self.seal_key).into())
            .encrypt(
                nonce,
                AeadPayload {
                    msg: &plaintext,
                    aad: &associated_data(kind, binding),
                },
            )
            .map_err(|_| ApiError::internal("sealing the backup blob failed"))?;
        let mut blob = Vec::with_capacity(HEADER_LEN + ciphertext.len() + TAG_LEN);
        blob.extend_from_slice(MAGIC);
        blob.push(kind.tag());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&ciphertext);
        let tag = self.integrity_tag(&nonce_bytes, &blob)?;
        blob.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(blob))
    }

    fn integrity_tag(&self, nonce: &[u8; NONCE_LEN], covered: &[u8]) -> Result<Vec<u8>, ApiError> {
        XChaCha20Poly1305::new((&self.integrity_key).into())
            .encrypt(
                XNonce::from_slice(nonce),
                AeadPayload {
                    msg: &[],
                    aad: covered,
                },
            )
            .map_err(|_| ApiError::internal("tagging the backup blob failed"))
    }

    /// Opens a blob posted to the `expected` kind's restore route of a vault with `binding`.
    ///
    /// Errors: 400 `Malformed backup blob` for anything not made by this world or changed since;
    /// 400 `BadParameter` for a blob of another kind; 400 "Cannot decrypt backup blob" for a
    /// blob of another subscription or geography.
    pub fn open(
        &self,
        expected: Kind,
        binding: &Binding<'_>,
        blob: &str,
    ) -> Result<BackupContents, ApiError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(blob.trim().trim_end_matches('='))
            .map_err(|_| ApiError::malformed_backup())?;
        if bytes.len() < HEADER_LEN + TAG_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ApiError::malformed_backup());
        }
        let (covered, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[MAGIC.len() + 1..HEADER_LEN]);
        // Constant-time comparison is not needed here: the tag guards integrity of test data,
        // and an attacker on loopback gains nothing from timing it.
        if self.integrity_tag(&nonce, covered)? != tag {
            return Err(ApiError::malformed_backup());
        }
        let kind = Kind::from_tag(bytes[MAGIC.len()]).ok_or_else(ApiError::malformed_backup)?;
        if kind != expected {
            return Err(ApiError::bad_parameter(format!(
                "The backup blob holds a {}; it cannot be restored as a {}.",
                kind.noun(),
                expected.noun()
            )));
        }
        let plaintext = XChaCha20Poly1305::new((&self.seal_key).into())
            .decrypt(
                XNonce::from_slice(&nonce),
                AeadPayload {
                    msg: &covered[HEADER_LEN..],
                    aad: &associated_data(kind, binding),
                },
            )
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "Cannot decrypt backup blob: it was made in a vault of another subscription or geography.",
                )
            })?;
        let contents: BackupContents =
            serde_json::from_slice(&plaintext).map_err(|_| ApiError::malformed_backup())?;
        if contents.objects.first().map(|o| o.kind) != Some(kind) {
            return Err(ApiError::malformed_backup());
        }
        Ok(contents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::store::{Payload, Redacted, Version};

    fn contents() -> BackupContents {
        let versions = (0..3)
            .map(|i| {
                Version::new(
                    100 + i,
                    Payload::Secret {
                        value: Redacted(format!("v{i}")),
                    },
                )
            })
            .collect();
        BackupContents::single(
            Kind::Secret,
            StoredObject {
                name: "s".into(),
                versions,
                meta: serde_json::Value::Null,
                visible_at_ms: 0,
            },
        )
    }

    const HOME: Binding<'static> = Binding {
        subscription: "sub-a",
        geography: "westeurope",
    };

    #[test]
    fn round_trip_and_refusals() {
        let world = SecurityWorld::generate();
        let sealed = contents();
        let blob = world.seal(Kind::Secret, &HOME, &sealed).unwrap();
        assert!(!blob.contains('=') && !blob.contains('+') && !blob.contains('/'));
        let back = world.open(Kind::Secret, &HOME, &blob).unwrap();
        assert_eq!(back.objects[0].object, sealed.objects[0].object);

        let wrong_kind = world.open(Kind::Key, &HOME, &blob).unwrap_err();
        assert_eq!(wrong_kind.code, "BadParameter");

        let elsewhere = Binding {
            subscription: "sub-b",
            geography: "westeurope",
        };
        let err = world.open(Kind::Secret, &elsewhere, &blob).unwrap_err();
        assert!(err.message.starts_with("Cannot decrypt backup blob"));

        let mut raw = URL_SAFE_NO_PAD.decode(&blob).unwrap();
        raw[40] ^= 1;
        let err = world
            .open(Kind::Secret, &HOME, &URL_SAFE_NO_PAD.encode(raw))
            .unwrap_err();
        assert_eq!(err.code, "Malformed backup blob");

        let other_world = SecurityWorld::generate();
        let err = other_world.open(Kind::Secret, &HOME, &blob).unwrap_err();
        assert_eq!(err.code, "Malformed backup blob");
    }
}
