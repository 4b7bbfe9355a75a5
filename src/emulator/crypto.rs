//! Key material and certificates for the local Key Vault, with no HTTP in sight.
//!
//! This module owns everything cryptographic that the `keys` and `certificates` routes need:
//! generating RSA (2048/3072/4096) and EC (P-256/P-384/P-521) keys, rendering their public half
//! as the JSON Web Key Key Vault answers with, importing a JWK that carries private parts,
//! the `sign`/`verify` operations over a caller-supplied digest, RSA `encrypt`/`decrypt`
//! (`RSA1_5`, `RSA-OAEP`, `RSA-OAEP-256`, which `wrapKey`/`unwrapKey` use too), the storage
//! form of key material (PKCS#8), and X.509 work for certificates: self-signed issuance from a
//! policy, PKCS#12 (PFX) and PEM parsing and building, the `x5t` thumbprint and the facts a
//! policy is derived from on import. Private key material never reaches `Debug` output or error
//! text.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// What went wrong in a cryptographic operation. Messages name the problem and never carry
/// key material, so they are safe to put in an HTTP error body.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key type is not one Key Vault knows (`RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`…).
    #[error("unsupported key type {0}")]
    UnsupportedKeyType(String),
    /// An RSA modulus size other than 2048, 3072 or 4096 bits.
    #[error("unsupported RSA key size {0}; use 2048, 3072 or 4096")]
    UnsupportedKeySize(u32),
    /// A curve other than P-256, P-384 or P-521.
    #[error("unsupported curve {0}; use P-256, P-384 or P-521")]
    UnsupportedCurve(String),
    /// A signature algorithm outside RS/PS/ES 256/384/512.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The algorithm does not fit the key (an ES algorithm on an RSA key, ES384 on P-256…).
    #[error("algorithm {algorithm} cannot be used with this key")]
    AlgorithmMismatch {
        /// The algorithm that was asked for.
        algorithm: String,
    },
    /// The digest length does not match the algorithm's hash.
    #[error("the digest is {got} bytes but {algorithm} needs {expected}")]
    DigestLength {
        /// The algorithm that was asked for.
        algorithm: String,
        /// The hash length it needs.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// Key material that cannot be parsed or is inconsistent; the text says which part.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Key generation or signing failed inside the crypto library.
    #[error("key operation failed: {0}")]
    Operation(String),
    /// A certificate that cannot be parsed or built.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A ciphertext this key cannot decrypt (wrong key, wrong algorithm, corrupted bytes), or a
    /// plaintext too long for the key and padding.
    #[error("{0}")]
    Cipher(String),
    /// A PKCS#12 file that cannot be opened (wrong password, unsupported algorithm, no key).
    #[error("cannot read the PKCS#12 content: {0}")]
    Pkcs12(String),
    /// PEM text without the private key and certificate Key Vault needs.
    #[error("cannot read the PEM content: {0}")]
    Pem(String),
}

type Result<T> = std::result::Result<T, CryptoError>;

/// Key Vault's `kty`: the family of a key and whether it is HSM-protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// `RSA`: software-protected RSA.
    #[serde(rename = "RSA")]
    Rsa,
    /// `RSA-HSM`: HSM-protected RSA (premium vaults only).
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    /// `EC`: software-protected elliptic curve.
    #[serde(rename = "EC")]
    Ec,
    /// `EC-HSM`: HSM-protected elliptic curve (premium vaults only).
    #[serde(rename = "EC-HSM")]
    EcHsm,
}

impl KeyType {
    /// Parses Key Vault's spelling (`RSA`, `RSA-HSM`, `EC`, `EC-HSM`); anything else
    /// (including `oct`, which the local Key Vault does not model) is
    /// [`CryptoError::UnsupportedKeyType`].
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "RSA" => Ok(Self::Rsa),
            "RSA-HSM" => Ok(Self::RsaHsm),
            "EC" => Ok(Self::Ec),
            "EC-HSM" => Ok(Self::EcHsm),
            other => Err(CryptoError::UnsupportedKeyType(other.to_owned())),
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::RsaHsm => "RSA-HSM",
            Self::Ec => "EC",
            Self::EcHsm => "EC-HSM",
        }
    }

    /// Whether the type is HSM-protected (and so needs a premium vault).
    pub fn is_hsm(self) -> bool {
        matches!(self, Self::RsaHsm | Self::EcHsm)
    }

    /// Whether the type is in the RSA family.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa | Self::RsaHsm)
    }

    /// The same family with the given protection.
    pub fn with_hsm(self, hsm: bool) -> Self {
        match (self.is_rsa(), hsm) {
            (true, false) => Self::Rsa,
            (true, true) => Self::RsaHsm,
            (false, false) => Self::Ec,
            (false, true) => Self::EcHsm,
        }
    }

    /// The operations Key Vault grants a new key of this family when the request names none:
    /// all six for RSA, `sign` and `verify` for EC (as recorded from the real service).
    pub fn default_key_ops(self) -> Vec<String> {
        let ops: &[&str] = if self.is_rsa() {
            &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ]
        } else {
            &["sign", "verify"]
        };
        ops.iter().map(|op| (*op).to_owned()).collect()
    }
}

/// An elliptic curve Key Vault's standard tier supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384.
    #[serde(rename = "P-384")]
    P384,
    /// NIST P-521.
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    /// Parses `P-256`, `P-384` or `P-521`; `P-256K` and others are
    /// [`CryptoError::UnsupportedCurve`].
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "P-256" => Ok(Self::P256),
            "P-384" => Ok(Self::P384),
            "P-521" => Ok(Self::P521),
            other => Err(CryptoError::UnsupportedCurve(other.to_owned())),
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// The curve's size in bits, as certificate policies report it in `key_size`.
    pub fn bits(self) -> u32 {
        match self {
            Self::P256 => 256,
            Self::P384 => 384,
            Self::P521 => 521,
        }
    }
}

/// An `encrypt`/`decrypt`/`wrapKey`/`unwrapKey` algorithm (`alg`) of a Key Vault RSA key.
/// The AES ones (`A128KW`, `A256GCM`…) belong to Managed HSM `oct` keys, which a vault does not
/// hold, so they parse as [`CryptoError::UnsupportedAlgorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// RSAES-PKCS1-v1_5.
    Rsa15,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (RFC 8017's defaults).
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
}

impl EncryptionAlgorithm {
    /// Parses the JWA name (`RSA1_5`, `RSA-OAEP`, `RSA-OAEP-256`).
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "RSA1_5" => Self::Rsa15,
            "RSA-OAEP" => Self::RsaOaep,
            "RSA-OAEP-256" => Self::RsaOaep256,
            other => return Err(CryptoError::UnsupportedAlgorithm(other.to_owned())),
        })
    }

    /// The JWA name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa15 => "RSA1_5",
            Self::RsaOaep => "RSA-OAEP",
            Self::RsaOaep256 => "RSA-OAEP-256",
        }
    }
}

/// A `sign`/`verify` algorithm (`alg`) of Key Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256, salt as long as the hash.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// ECDSA on P-521 with SHA-512.
    Es512,
}

impl SignatureAlgorithm {
    /// Parses the JWA name (`RS256`…`ES512`); `ES256K` and `HS*` are
    /// [`CryptoError::UnsupportedAlgorithm`].
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "ES512" => Self::Es512,
            other => return Err(CryptoError::UnsupportedAlgorithm(other.to_owned())),
        })
    }

    /// The JWA name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }

    /// The length in bytes of the digest the caller must supply.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Rs256 | Self::Ps256 | Self::Es256 => 32,
            Self::Rs384 | Self::Ps384 | Self::Es384 => 48,
            Self::Rs512 | Self::Ps512 | Self::Es512 => 64,
        }
    }

    /// Hashes `message` with the algorithm's hash: what a caller does before `sign`.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        match self.digest_len() {
            32 => sha2::Sha256::digest(message).to_vec(),
            48 => sha2::Sha384::digest(message).to_vec(),
            _ => sha2::Sha512::digest(message).to_vec(),
        }
    }

    fn check_digest(self, digest: &[u8]) -> Result<()> {
        if digest.len() == self.digest_len() {
            Ok(())
        } else {
            Err(CryptoError::DigestLength {
                algorithm: self.as_str().to_owned(),
                expected: self.digest_len(),
                got: digest.len(),
            })
        }
    }

    fn mismatch(self) -> CryptoError {
        CryptoError::AlgorithmMismatch {
            algorithm: self.as_str().to_owned(),
        }
    }
}

/// A JSON Web Key as Key Vault sends and receives it. Field order follows the service's
/// responses (`kid`, `kty`, `key_ops`, then `n`/`e` or `crv`/`x`/`y`); private members are only
/// read on import and never rendered.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct JsonWebKey {
    /// The key identifier (an absolute URL rendered from the request's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `RSA`, `RSA-HSM`, `EC` or `EC-HSM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// The permitted operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Curve name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Private exponent (RSA) or scalar (EC); import only.
    #[serde(default, skip_serializing)]
    pub d: Option<String>,
    /// RSA first prime; import only.
    #[serde(default, skip_serializing)]
    pub p: Option<String>,
    /// RSA second prime; import only.
    #[serde(default, skip_serializing)]
    pub q: Option<String>,
}

impl fmt::Debug for JsonWebKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonWebKey")
            .field("kid", &self.kid)
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field(
                "private",
                &if self.d.is_some() {
                    "[redacted]"
                } else {
                    "none"
                },
            )
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, tolerating padding and the standard alphabet (some clients send either).
pub fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .ok()
    })
}

fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>> {
    let text = value
        .as_deref()
        .ok_or_else(|| CryptoError::InvalidKey(format!("the JWK has no `{name}`")))?;
    decode_b64url(text).ok_or_else(|| CryptoError::InvalidKey(format!("`{name}` is not base64url")))
}

/// Left-pads a big-endian integer to a curve's field size (JWK coordinates are fixed-length).
fn left_pad(bytes: &[u8], len: usize) -> Result<Vec<u8>> {
    if bytes.len() > len {
        let (extra, rest) = bytes.split_at(bytes.len() - len);
        if extra.iter().any(|b| *b != 0) {
            return Err(CryptoError::InvalidKey(
                "a coordinate is too long".to_owned(),
            ));
        }
        return Ok(rest.to_vec());
    }
    let mut out = vec![0u8; len - bytes.len()];
    out.extend_from_slice(bytes);
    Ok(out)
}

enum Private {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

/// A private key held by the local Key Vault. `Debug` prints `[redacted]`; the storage form is
/// PKCS#8 DER ([`KeyMaterial::to_pkcs8_der`]), and serde renders it as a base64url string of
/// that DER so stored and sealed objects can embed it.
pub struct KeyMaterial {
    inner: Private,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({}, [redacted])", self.describe())
    }
}

impl Clone for KeyMaterial {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            Private::Rsa(key) => Private::Rsa(key.clone()),
            Private::P256(key) => Private::P256(key.clone()),
            Private::P384(key) => Private::P384(key.clone()),
            Private::P521(key) => Private::P521(key.clone()),
        };
        Self { inner }
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.public_key() == other.public_key()
    }
}

impl Serialize for KeyMaterial {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let der = self.to_pkcs8_der().map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&b64url(&der))
    }
}

impl<'de> Deserialize<'de> for KeyMaterial {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let der = decode_b64url(&text)
            .ok_or_else(|| serde::de::Error::custom("key material is not base64url"))?;
        Self::from_pkcs8_der(&der).map_err(serde::de::Error::custom)
    }
}

/// The public half of a key: what `verify` needs and what a JWK without `d` describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent.
    Rsa(RsaPublicKey),
    /// P-256 point.
    P256(p256::PublicKey),
    /// P-384 point.
    P384(p384::PublicKey),
    /// P-521 point.
    P521(p521::PublicKey),
}

/// How to make a key: RSA with a modulus size or EC on a curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with 2048, 3072 or 4096 bits.
    Rsa(u32),
    /// EC on the given curve.
    Ec(Curve),
}

impl KeyMaterial {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(spec: KeySpec) -> Result<Self> {
        let mut rng = rand::rngs::OsRng;
        let inner = match spec {
            KeySpec::Rsa(bits @ (2048 | 3072 | 4096)) => {
                let key = RsaPrivateKey::new(&mut rng, bits as usize)
                    .map_err(|e| CryptoError::Operation(e.to_string()))?;
                Private::Rsa(Box::new(key))
            }
            KeySpec::Rsa(other) => return Err(CryptoError::UnsupportedKeySize(other)),
            KeySpec::Ec(Curve::P256) => Private::P256(p256::SecretKey::random(&mut rng)),
            KeySpec::Ec(Curve::P384) => Private::P384(p384::SecretKey::random(&mut rng)),
            KeySpec::Ec(Curve::P521) => Private::P521(p521::SecretKey::random(&mut rng)),
        };
        Ok(Self { inner })
    }

    /// Reads a PKCS#8 DER private key (RSA or EC on a supported curve).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        if let Ok(key) = RsaPrivateKey::from_pkcs8_der(der) {
            return Self::from_rsa(key);
        }
        if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(Self {
                inner: Private::P256(key),
            });
        }
        if let Ok(key) = p384::SecretKey::from_pkcs8_der(der) {
            return Ok(Self {
                inner: Private::P384(key),
            });
        }
        if let Ok(key) = p521::SecretKey::from_pkcs8_der(der) {
            return Ok(Self {
                inner: Private::P521(key),
            });
        }
        Err(CryptoError::InvalidKey(
            "not a PKCS#8 RSA or P-256/P-384/P-521 private key".to_owned(),
        ))
    }

    /// Reads a private key in any of the DER forms PEM files carry: PKCS#8, PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_private_key_der(der: &[u8]) -> Result<Self> {
        if let Ok(key) = Self::from_pkcs8_der(der) {
            return Ok(key);
        }
        if let Ok(key) = RsaPrivateKey::from_pkcs1_der(der) {
            return Self::from_rsa(key);
        }
        if let Ok(key) = p256::SecretKey::from_sec1_der(der) {
            return Ok(Self {
                inner: Private::P256(key),
            });
        }
        if let Ok(key) = p384::SecretKey::from_sec1_der(der) {
            return Ok(Self {
                inner: Private::P384(key),
            });
        }
        if let Ok(key) = p521::SecretKey::from_sec1_der(der) {
            return Ok(Self {
                inner: Private::P521(key),
            });
        }
        Err(CryptoError::InvalidKey(
            "not an RSA or P-256/P-384/P-521 private key".to_owned(),
        ))
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<Self> {
        let bits = key.size() * 8;
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(CryptoError::UnsupportedKeySize(
                u32::try_from(bits).unwrap_or(u32::MAX),
            ));
        }
        Ok(Self {
            inner: Private::Rsa(Box::new(key)),
        })
    }

    /// Imports a JWK with private parts (`d`, and for RSA `p`/`q` when present), as the
    /// `PUT /keys/{name}` import carries it. The public members must match the private ones.
    pub fn from_jwk(jwk: &JsonWebKey) -> Result<Self> {
        let kty = KeyType::parse(jwk.kty.as_deref().unwrap_or(""))?;
        if jwk.d.is_none() {
            return Err(CryptoError::InvalidKey(
                "the JWK has no private key (`d`)".to_owned(),
            ));
        }
        if kty.is_rsa() {
            let n = BigUint::from_bytes_be(&member(&jwk.n, "n")?);
            let e = BigUint::from_bytes_be(&member(&jwk.e, "e")?);
            let d = BigUint::from_bytes_be(&member(&jwk.d, "d")?);
            let primes = match (&jwk.p, &jwk.q) {
                (Some(_), Some(_)) => vec![
                    BigUint::from_bytes_be(&member(&jwk.p, "p")?),
                    BigUint::from_bytes_be(&member(&jwk.q, "q")?),
                ],
                _ => Vec::new(),
            };
            let key = RsaPrivateKey::from_components(n, e, d, primes)
                .map_err(|_| CryptoError::InvalidKey("inconsistent RSA parameters".to_owned()))?;
            return Self::from_rsa(key);
        }
        let curve = Curve::parse(jwk.crv.as_deref().unwrap_or(""))?;
        let d = member(&jwk.d, "d")?;
        let material = match curve {
            Curve::P256 => Private::P256(
                p256::SecretKey::from_slice(&left_pad(&d, 32)?)
                    .map_err(|_| CryptoError::InvalidKey("invalid P-256 scalar".to_owned()))?,
            ),
            Curve::P384 => Private::P384(
                p384::SecretKey::from_slice(&left_pad(&d, 48)?)
                    .map_err(|_| CryptoError::InvalidKey("invalid P-384 scalar".to_owned()))?,
            ),
            Curve::P521 => Private::P521(
                p521::SecretKey::from_slice(&left_pad(&d, 66)?)
                    .map_err(|_| CryptoError::InvalidKey("invalid P-521 scalar".to_owned()))?,
            ),
        };
        let key = Self { inner: material };
        // A JWK whose x/y disagree with d would make the vault render a public key that does
        // not verify its own signatures; refuse it as the service does.
        if jwk.x.is_some() || jwk.y.is_some() {
            let stated = PublicKey::from_jwk(jwk)?;
            if stated != key.public_key() {
                return Err(CryptoError::InvalidKey(
                    "x and y do not match the private key".to_owned(),
                ));
            }
        }
        Ok(key)
    }

    /// The PKCS#8 DER encoding: the storage and sealing form.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>> {
        let doc = match &self.inner {
            Private::Rsa(key) => key.to_pkcs8_der(),
            Private::P256(key) => key.to_pkcs8_der(),
            Private::P384(key) => key.to_pkcs8_der(),
            Private::P521(key) => key.to_pkcs8_der(),
        }
        .map_err(|e| CryptoError::Operation(e.to_string()))?;
        Ok(doc.as_bytes().to_vec())
    }

    /// The key's family and size, for policies and messages (`RSA 2048`, `EC P-256`).
    pub fn describe(&self) -> String {
        match self.spec() {
            KeySpec::Rsa(bits) => format!("RSA {bits}"),
            KeySpec::Ec(curve) => format!("EC {}", curve.as_str()),
        }
    }

    /// The spec this key satisfies.
    pub fn spec(&self) -> KeySpec {
        match &self.inner {
            Private::Rsa(key) => KeySpec::Rsa(u32::try_from(key.size() * 8).unwrap_or(u32::MAX)),
            Private::P256(_) => KeySpec::Ec(Curve::P256),
            Private::P384(_) => KeySpec::Ec(Curve::P384),
            Private::P521(_) => KeySpec::Ec(Curve::P521),
        }
    }

    /// Whether the key is RSA (as opposed to EC).
    pub fn is_rsa(&self) -> bool {
        matches!(self.inner, Private::Rsa(_))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            Private::Rsa(key) => PublicKey::Rsa(key.to_public_key()),
            Private::P256(key) => PublicKey::P256(key.public_key()),
            Private::P384(key) => PublicKey::P384(key.public_key()),
            Private::P521(key) => PublicKey::P521(key.public_key()),
        }
    }

    /// The public JWK exactly as Key Vault renders it in a key bundle.
    pub fn public_jwk(&self, kid: &str, kty: KeyType, key_ops: &[String]) -> JsonWebKey {
        self.public_key().to_jwk(kid, kty, key_ops)
    }

    /// Signs a digest the caller already computed (Key Vault's `sign`: the request's `value` is
    /// the digest). RSA signatures are the modulus length; ECDSA ones are raw `r || s`.
    pub fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        alg.check_digest(digest)?;
        let op = |e: &dyn fmt::Display| CryptoError::Operation(e.to_string());
        match (&self.inner, alg) {
            (Private::Rsa(key), SignatureAlgorithm::Rs256) => key
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
                .map_err(|e| op(&e)),
            (Private::Rsa(key), SignatureAlgorithm::Rs384) => key
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), digest)
                .map_err(|e| op(&e)),
            (Private::Rsa(key), SignatureAlgorithm::Rs512) => key
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), digest)
                .map_err(|e| op(&e)),
            (Private::Rsa(key), SignatureAlgorithm::Ps256) => key
                .sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new::<sha2::Sha256>(),
                    digest,
                )
                .map_err(|e| op(&e)),
            (Private::Rsa(key), SignatureAlgorithm::Ps384) => key
                .sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new::<sha2::Sha384>(),
                    digest,
                )
                .map_err(|e| op(&e)),
            (Private::Rsa(key), SignatureAlgorithm::Ps512) => key
                .sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new::<sha2::Sha512>(),
                    digest,
                )
                .map_err(|e| op(&e)),
            (Private::P256(key), SignatureAlgorithm::Es256) => {
                let signer = p256::ecdsa::SigningKey::from(key);
                let sig: p256::ecdsa::Signature =
                    signer.sign_prehash(digest).map_err(|e| op(&e))?;
                Ok(sig.to_bytes().to_vec())
            }
            (Private::P384(key), SignatureAlgorithm::Es384) => {
                let signer = p384::ecdsa::SigningKey::from(key);
                let sig: p384::ecdsa::Signature =
                    signer.sign_prehash(digest).map_err(|e| op(&e))?;
                Ok(sig.to_bytes().to_vec())
            }
            (Private::P521(key), SignatureAlgorithm::Es512) => {
                let signer =
                    p521::ecdsa::SigningKey::from_slice(&key.to_bytes()).map_err(|e| op(&e))?;
                let sig: p521::ecdsa::Signature =
                    signer.sign_prehash(digest).map_err(|e| op(&e))?;
                Ok(sig.to_bytes().to_vec())
            }
            _ => Err(alg.mismatch()),
        }
    }

    /// Encrypts `plaintext` with the public half (Key Vault's `encrypt` and `wrapKey`, which
    /// differ only in the permission they need). RSA only: an EC key cannot encrypt, and
    /// answers [`CryptoError::AlgorithmMismatch`].
    pub fn encrypt(&self, alg: EncryptionAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        let Private::Rsa(key) = &self.inner else {
            return Err(CryptoError::AlgorithmMismatch {
                algorithm: alg.as_str().to_owned(),
            });
        };
        let public = key.to_public_key();
        let mut rng = rand::rngs::OsRng;
        let too_long = |e: rsa::Error| {
            CryptoError::Cipher(format!(
                "the plaintext cannot be encrypted with {} under this key: {e}",
                alg.as_str()
            ))
        };
        match alg {
            EncryptionAlgorithm::Rsa15 => public.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, plaintext),
            EncryptionAlgorithm::RsaOaep => {
                public.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), plaintext)
            }
            EncryptionAlgorithm::RsaOaep256 => {
                public.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), plaintext)
            }
        }
        .map_err(too_long)
    }

    /// Decrypts `ciphertext` with the private key (Key Vault's `decrypt` and `unwrapKey`).
    /// A ciphertext that does not open is [`CryptoError::Cipher`], with no detail that could
    /// serve as a padding oracle.
    pub fn decrypt(&self, alg: EncryptionAlgorithm, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let Private::Rsa(key) = &self.inner else {
            return Err(CryptoError::AlgorithmMismatch {
                algorithm: alg.as_str().to_owned(),
            });
        };
        // Blinded: the time a decryption takes says nothing about the private key.
        let mut rng = rand::rngs::OsRng;
        match alg {
            EncryptionAlgorithm::Rsa15 => {
                key.decrypt_blinded(&mut rng, rsa::Pkcs1v15Encrypt, ciphertext)
            }
            EncryptionAlgorithm::RsaOaep => {
                key.decrypt_blinded(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), ciphertext)
            }
            EncryptionAlgorithm::RsaOaep256 => {
                key.decrypt_blinded(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), ciphertext)
            }
        }
        .map_err(|_| {
            CryptoError::Cipher(format!(
                "the ciphertext cannot be decrypted with {} under this key",
                alg.as_str()
            ))
        })
    }

    /// Verifies a signature over a digest with this key's public half.
    pub fn verify(&self, alg: SignatureAlgorithm, digest: &[u8], signature: &[u8]) -> Result<bool> {
        self.public_key().verify(alg, digest, signature)
    }
}

impl PublicKey {
    /// Reads the public members of a JWK (`n`/`e` or `crv`/`x`/`y`).
    pub fn from_jwk(jwk: &JsonWebKey) -> Result<Self> {
        let kty = KeyType::parse(jwk.kty.as_deref().unwrap_or(""))?;
        if kty.is_rsa() {
            let n = BigUint::from_bytes_be(&member(&jwk.n, "n")?);
            let e = BigUint::from_bytes_be(&member(&jwk.e, "e")?);
            let key = RsaPublicKey::new(n, e)
                .map_err(|_| CryptoError::InvalidKey("invalid RSA public key".to_owned()))?;
            return Ok(Self::Rsa(key));
        }
        let curve = Curve::parse(jwk.crv.as_deref().unwrap_or(""))?;
        let x = member(&jwk.x, "x")?;
        let y = member(&jwk.y, "y")?;
        let bad = || CryptoError::InvalidKey(format!("x and y are not a {} point", curve.as_str()));
        let sec1 = |len: usize| -> Result<Vec<u8>> {
            let mut point = vec![4u8];
            point.extend(left_pad(&x, len)?);
            point.extend(left_pad(&y, len)?);
            Ok(point)
        };
        Ok(match curve {
            Curve::P256 => {
                Self::P256(p256::PublicKey::from_sec1_bytes(&sec1(32)?).map_err(|_| bad())?)
            }
            Curve::P384 => {
                Self::P384(p384::PublicKey::from_sec1_bytes(&sec1(48)?).map_err(|_| bad())?)
            }
            Curve::P521 => {
                Self::P521(p521::PublicKey::from_sec1_bytes(&sec1(66)?).map_err(|_| bad())?)
            }
        })
    }

    /// Renders the public JWK as Key Vault does.
    pub fn to_jwk(&self, kid: &str, kty: KeyType, key_ops: &[String]) -> JsonWebKey {
        let mut jwk = JsonWebKey {
            kid: Some(kid.to_owned()),
            kty: Some(kty.as_str().to_owned()),
            key_ops: Some(key_ops.to_vec()),
            ..JsonWebKey::default()
        };
        let point = |encoded: &[u8], len: usize| -> (String, String) {
            // Uncompressed SEC1: 0x04 || x || y, each `len` bytes.
            let body = encoded.get(1..).unwrap_or_default();
            let (x, y) = body.split_at(len.min(body.len()));
            (b64url(x), b64url(y))
        };
        let (crv, coords) = match self {
            Self::Rsa(key) => {
                jwk.n = Some(b64url(&key.n().to_bytes_be()));
                jwk.e = Some(b64url(&key.e().to_bytes_be()));
                return jwk;
            }
            Self::P256(key) => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                (
                    Curve::P256,
                    point(key.to_encoded_point(false).as_bytes(), 32),
                )
            }
            Self::P384(key) => {
                use p384::elliptic_curve::sec1::ToEncodedPoint;
                (
                    Curve::P384,
                    point(key.to_encoded_point(false).as_bytes(), 48),
                )
            }
            Self::P521(key) => {
                use p521::elliptic_curve::sec1::ToEncodedPoint;
                (
                    Curve::P521,
                    point(key.to_encoded_point(false).as_bytes(), 66),
                )
            }
        };
        jwk.crv = Some(crv.as_str().to_owned());
        jwk.x = Some(coords.0);
        jwk.y = Some(coords.1);
        jwk
    }

    /// Verifies `signature` over `digest`. A wrong signature is `Ok(false)`; an algorithm that
    /// does not fit the key or a digest of the wrong length is an error (Key Vault answers 400).
    pub fn verify(&self, alg: SignatureAlgorithm, digest: &[u8], signature: &[u8]) -> Result<bool> {
        alg.check_digest(digest)?;
        let ok = match (self, alg) {
            (Self::Rsa(key), SignatureAlgorithm::Rs256) => key
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, signature)
                .is_ok(),
            (Self::Rsa(key), SignatureAlgorithm::Rs384) => key
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), digest, signature)
                .is_ok(),
            (Self::Rsa(key), SignatureAlgorithm::Rs512) => key
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), digest, signature)
                .is_ok(),
            (Self::Rsa(key), SignatureAlgorithm::Ps256) => key
                .verify(rsa::Pss::new::<sha2::Sha256>(), digest, signature)
                .is_ok(),
            (Self::Rsa(key), SignatureAlgorithm::Ps384) => key
                .verify(rsa::Pss::new::<sha2::Sha384>(), digest, signature)
                .is_ok(),
            (Self::Rsa(key), SignatureAlgorithm::Ps512) => key
                .verify(rsa::Pss::new::<sha2::Sha512>(), digest, signature)
                .is_ok(),
            (Self::P256(key), SignatureAlgorithm::Es256) => {
                match p256::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => p256::ecdsa::VerifyingKey::from(key)
                        .verify_prehash(digest, &sig)
                        .is_ok(),
                    Err(_) => false,
                }
            }
            (Self::P384(key), SignatureAlgorithm::Es384) => {
                match p384::ecdsa::Signature::from_slice(signature) {
                    Ok(sig) => p384::ecdsa::VerifyingKey::from(key)
                        .verify_prehash(digest, &sig)
                        .is_ok(),
                    Err(_) => false,
                }
            }
            (Self::P521(key), SignatureAlgorithm::Es512) => {
                use p521::elliptic_curve::sec1::ToEncodedPoint;
                let verifier =
                    p521::ecdsa::VerifyingKey::from_encoded_point(&key.to_encoded_point(false));
                match (verifier, p521::ecdsa::Signature::from_slice(signature)) {
                    (Ok(verifier), Ok(sig)) => verifier.verify_prehash(digest, &sig).is_ok(),
                    _ => false,
                }
            }
            _ => return Err(alg.mismatch()),
        };
        Ok(ok)
    }

    /// The DER SubjectPublicKeyInfo, to match a certificate to its private key.
    fn spki_der(&self) -> Option<Vec<u8>> {
        use rsa::pkcs8::EncodePublicKey;
        let doc = match self {
            Self::Rsa(key) => key.to_public_key_der(),
            Self::P256(key) => key.to_public_key_der(),
            Self::P384(key) => key.to_public_key_der(),
            Self::P521(key) => key.to_public_key_der(),
        };
        doc.ok().map(|d| d.as_bytes().to_vec())
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// The content type of a certificate's managed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateContentType {
    /// `application/x-pkcs12`: the secret value is a PFX in standard base64.
    Pkcs12,
    /// `application/x-pem-file`: the secret value is PEM text (key, then leaf, then chain).
    Pem,
}

impl CertificateContentType {
    /// Parses the MIME type; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "application/x-pkcs12" => Some(Self::Pkcs12),
            "application/x-pem-file" => Some(Self::Pem),
            _ => None,
        }
    }

    /// The MIME type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pkcs12 => "application/x-pkcs12",
            Self::Pem => "application/x-pem-file",
        }
    }
}

/// What a self-signed certificate is made from: the X.509 part of a certificate policy.
#[derive(Debug, Clone)]
pub struct SelfSignedSpec {
    /// The subject as Key Vault writes it (`CN=xyz, O=Contoso`); RDNs CN, O, OU, L, ST, C, E.
    pub subject: String,
    /// DNS names for the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// E-mail addresses for the subjectAltName extension.
    pub emails: Vec<String>,
    /// Validity in months from issuance.
    pub validity_months: u32,
    /// Key usages by Key Vault's names (`digitalSignature`, `keyEncipherment`…).
    pub key_usage: Vec<String>,
    /// Extended key usage OIDs (`1.3.6.1.5.5.7.3.1`…).
    pub ekus: Vec<String>,
}

/// A private key with its certificate chain (leaf first): what a certificate version holds,
/// and what PFX and PEM carry.
#[derive(Clone)]
pub struct CertificateBundle {
    /// The leaf's private key.
    pub key: KeyMaterial,
    /// DER certificates, the leaf first, then its issuers.
    pub chain: Vec<Vec<u8>>,
}

impl fmt::Debug for CertificateBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateBundle")
            .field("key", &self.key)
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

/// The facts Key Vault reads from a leaf certificate: attributes (`nbf`, `exp`), the `x5t`
/// thumbprint and the policy an imported certificate is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The subject as `CN=…, O=…`.
    pub subject: String,
    /// subjectAltName DNS names.
    pub dns_names: Vec<String>,
    /// subjectAltName e-mail addresses.
    pub emails: Vec<String>,
    /// Not-before, Unix seconds.
    pub not_before: i64,
    /// Not-after, Unix seconds.
    pub not_after: i64,
    /// Validity in whole months, rounded up as the service does for imports.
    pub validity_months: u32,
    /// Key usages by Key Vault's names.
    pub key_usage: Vec<String>,
    /// Extended key usage OIDs.
    pub ekus: Vec<String>,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// Whether subject equals issuer.
    pub self_issued: bool,
}

/// Key Vault's names for the keyUsage bits, in bit order.
const KEY_USAGE_NAMES: [&str; 9] = [
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

/// `x5t`: the base64url SHA-1 thumbprint of a DER certificate.
pub fn x5t(cert_der: &[u8]) -> String {
    b64url(&sha1_bytes(cert_der))
}

fn sha1_bytes(data: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(data).to_vec()
}

fn cert_err(e: impl fmt::Display) -> CryptoError {
    CryptoError::Certificate(e.to_string())
}

/// Adds calendar months, clamping the day (Jan 31 + 1 month = Feb 28/29).
fn add_months(at: time::OffsetDateTime, months: u32) -> Result<time::OffsetDateTime> {
    let total = i64::from(at.month() as u8) - 1 + i64::from(months);
    let year = i32::try_from(i64::from(at.year()) + total.div_euclid(12))
        .map_err(|_| cert_err("validity is too long"))?;
    let month = time::Month::try_from(u8::try_from(total.rem_euclid(12) + 1).unwrap_or(1))
        .map_err(cert_err)?;
    let last_day = month.length(year);
    let date =
        time::Date::from_calendar_date(year, month, at.day().min(last_day)).map_err(cert_err)?;
    Ok(at.replace_date(date))
}

fn parse_subject(subject: &str) -> Result<rcgen::DistinguishedName> {
    let mut dn = rcgen::DistinguishedName::new();
    for part in subject.split([',', ';']) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (attr, value) = part
            .split_once('=')
            .ok_or_else(|| cert_err(format!("subject part `{part}` has no `=`")))?;
        let value = value.trim().trim_matches('"');
        let kind = match attr.trim().to_ascii_uppercase().as_str() {
            "CN" => rcgen::DnType::CommonName,
            "O" => rcgen::DnType::OrganizationName,
            "OU" => rcgen::DnType::OrganizationalUnitName,
            "L" => rcgen::DnType::LocalityName,
            "ST" | "S" => rcgen::DnType::StateOrProvinceName,
            "C" => rcgen::DnType::CountryName,
            "E" | "EMAIL" => rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            other => return Err(cert_err(format!("unsupported subject attribute `{other}`"))),
        };
        dn.push(kind, value);
    }
    Ok(dn)
}

fn parse_oid(text: &str) -> Result<Vec<u64>> {
    text.split('.')
        .map(|arc| {
            arc.parse::<u64>()
                .map_err(|_| cert_err(format!("`{text}` is not an OID")))
        })
        .collect()
}

/// A freshly issued self-signed certificate with the CSR the pending operation shows.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Key and chain (one certificate: self-signed).
    pub bundle: CertificateBundle,
    /// The PKCS#10 request for the same key and subject, DER.
    pub csr_der: Vec<u8>,
}

/// Issues a self-signed certificate for `key` at `now` (Unix seconds, from the emulator's
/// clock). Like Key Vault, `nbf` is ten minutes before issuance and `exp` is `validity_months`
/// calendar months after it.
pub fn issue_self_signed(
    spec: &SelfSignedSpec,
    key: KeyMaterial,
    now: i64,
) -> Result<IssuedCertificate> {
    let signer =
        rcgen::KeyPair::from_remote(Box::new(CertificateSigner::new(&key)?)).map_err(cert_err)?;
    let issued_at = time::OffsetDateTime::from_unix_timestamp(now).map_err(cert_err)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = parse_subject(&spec.subject)?;
    params.not_before = issued_at - time::Duration::minutes(10);
    params.not_after = add_months(issued_at, spec.validity_months.max(1))?;
    for name in &spec.dns_names {
        let ia5 = rcgen::Ia5String::try_from(name.as_str()).map_err(cert_err)?;
        params.subject_alt_names.push(rcgen::SanType::DnsName(ia5));
    }
    for email in &spec.emails {
        let ia5 = rcgen::Ia5String::try_from(email.as_str()).map_err(cert_err)?;
        params
            .subject_alt_names
            .push(rcgen::SanType::Rfc822Name(ia5));
    }
    for usage in &spec.key_usage {
        params.key_usages.push(match usage.as_str() {
            "digitalSignature" => rcgen::KeyUsagePurpose::DigitalSignature,
            "nonRepudiation" => rcgen::KeyUsagePurpose::ContentCommitment,
            "keyEncipherment" => rcgen::KeyUsagePurpose::KeyEncipherment,
            "dataEncipherment" => rcgen::KeyUsagePurpose::DataEncipherment,
            "keyAgreement" => rcgen::KeyUsagePurpose::KeyAgreement,
            "keyCertSign" => rcgen::KeyUsagePurpose::KeyCertSign,
            "cRLSign" => rcgen::KeyUsagePurpose::CrlSign,
            "encipherOnly" => rcgen::KeyUsagePurpose::EncipherOnly,
            "decipherOnly" => rcgen::KeyUsagePurpose::DecipherOnly,
            other => return Err(cert_err(format!("unknown key usage `{other}`"))),
        });
    }
    for eku in &spec.ekus {
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::Other(parse_oid(eku)?));
    }
    // The CSR carries the subject, names and usages; serial and key identifiers belong to the
    // certificate only (a PKCS#10 request cannot hold them).
    let csr_params = params.clone();
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    let csr = csr_params.serialize_request(&signer).map_err(cert_err)?;
    let cert = params.self_signed(&signer).map_err(cert_err)?;
    let (cert_der, csr_der) = if key.spec() == KeySpec::Ec(Curve::P521) {
        (p521_identifiers(cert.der())?, p521_identifiers(csr.der())?)
    } else {
        (cert.der().to_vec(), csr.der().to_vec())
    };
    Ok(IssuedCertificate {
        bundle: CertificateBundle {
            key,
            chain: vec![cert_der],
        },
        csr_der,
    })
}

/// The identifiers a P-521 certificate is laid out with by rcgen, and P-521's own, DER-encoded.
/// rcgen names P-521 only with its aws-lc backend (a second crypto stack this build does
/// without), so a P-521 certificate or CSR is laid out under P-384's identifiers and these are
/// swapped: each pair has the same length, so every length in the structure stays right, and
/// the signer swaps them in what it signs too, so the signature covers the final bytes.
const P521_IDENTIFIERS: [(&[u8], &[u8]); 2] = [
    // The SubjectPublicKeyInfo's curve: secp384r1 (1.3.132.0.34) → secp521r1 (1.3.132.0.35).
    (
        &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    ),
    // The signature: ecdsa-with-SHA384 (1.2.840.10045.4.3.3) → ecdsa-with-SHA512 (…4.3.4).
    (
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ),
];

/// `der` with P-384's identifiers replaced by P-521's (see [`P521_IDENTIFIERS`]). The curve
/// must be named exactly once (one public key): anything else is refused rather than guessed.
fn p521_identifiers(der: &[u8]) -> Result<Vec<u8>> {
    let mut out = der.to_vec();
    for (index, (from, to)) in P521_IDENTIFIERS.iter().enumerate() {
        let mut found = 0;
        let mut at = 0;
        while at + from.len() <= out.len() {
            if &out[at..at + from.len()] == *from {
                out[at..at + from.len()].copy_from_slice(to);
                found += 1;
                at += from.len();
            } else {
                at += 1;
            }
        }
        if index == 0 && found != 1 {
            return Err(cert_err(format!(
                "the P-521 layout names the curve {found} times"
            )));
        }
    }
    Ok(out)
}

/// A vault key as rcgen's signer: certificates and CSRs are signed by the key itself through
/// RustCrypto, which covers every key Key Vault issues (rcgen's own ring backend can neither
/// generate RSA keys nor sign with P-521 ones).
struct CertificateSigner {
    key: KeyMaterial,
    /// The public key as rcgen puts it in the SubjectPublicKeyInfo: PKCS#1 `RSAPublicKey` DER
    /// for RSA, the uncompressed SEC1 point for EC.
    public: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    signature: SignatureAlgorithm,
}

impl CertificateSigner {
    fn new(key: &KeyMaterial) -> Result<Self> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let (public, algorithm, signature) = match key.public_key() {
            PublicKey::Rsa(public) => (
                public.to_pkcs1_der().map_err(cert_err)?.into_vec(),
                &rcgen::PKCS_RSA_SHA256,
                SignatureAlgorithm::Rs256,
            ),
            PublicKey::P256(public) => (
                public.to_encoded_point(false).as_bytes().to_vec(),
                &rcgen::PKCS_ECDSA_P256_SHA256,
                SignatureAlgorithm::Es256,
            ),
            PublicKey::P384(public) => (
                public.to_encoded_point(false).as_bytes().to_vec(),
                &rcgen::PKCS_ECDSA_P384_SHA384,
                SignatureAlgorithm::Es384,
            ),
            // Laid out as P-384, then renamed: see `P521_IDENTIFIERS`.
            PublicKey::P521(public) => (
                public.to_encoded_point(false).as_bytes().to_vec(),
                &rcgen::PKCS_ECDSA_P384_SHA384,
                SignatureAlgorithm::Es512,
            ),
        };
        Ok(Self {
            key: key.clone(),
            public,
            algorithm,
            signature,
        })
    }
}

impl rcgen::RemoteKeyPair for CertificateSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let digest = match self.signature {
            SignatureAlgorithm::Es384 => sha2::Sha384::digest(msg).to_vec(),
            SignatureAlgorithm::Es512 => {
                let signed = p521_identifiers(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
                sha2::Sha512::digest(signed).to_vec()
            }
            _ => sha2::Sha256::digest(msg).to_vec(),
        };
        let raw = self
            .key
            .sign(self.signature, &digest)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        // X.509 carries ECDSA signatures as DER `Ecdsa-Sig-Value`, not Key Vault's raw r || s.
        let der = |_: p256::ecdsa::Error| rcgen::Error::RemoteKeyError;
        Ok(match self.signature {
            SignatureAlgorithm::Es256 => p256::ecdsa::Signature::from_slice(&raw)
                .map_err(der)?
                .to_der()
                .as_bytes()
                .to_vec(),
            SignatureAlgorithm::Es384 => p384::ecdsa::Signature::from_slice(&raw)
                .map_err(der)?
                .to_der()
                .as_bytes()
                .to_vec(),
            SignatureAlgorithm::Es512 => p521::ecdsa::Signature::from_slice(&raw)
                .map_err(der)?
                .to_der()
                .as_bytes()
                .to_vec(),
            _ => raw,
        })
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

/// Reads the facts Key Vault shows about a DER certificate.
pub fn certificate_facts(cert_der: &[u8]) -> Result<CertificateFacts> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(cert_err)?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let mut facts = CertificateFacts {
        subject: cert.subject().to_string(),
        dns_names: Vec::new(),
        emails: Vec::new(),
        not_before,
        not_after,
        validity_months: validity_months(not_before, not_after),
        key_usage: Vec::new(),
        ekus: Vec::new(),
        is_ca: false,
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(dns) => facts.dns_names.push((*dns).to_owned()),
                        GeneralName::RFC822Name(mail) => facts.emails.push((*mail).to_owned()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::KeyUsage(usage) => {
                for (bit, name) in KEY_USAGE_NAMES.iter().enumerate() {
                    if usage.flags & (1 << bit) != 0 {
                        facts.key_usage.push((*name).to_owned());
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let named = [
                    (eku.server_auth, "1.3.6.1.5.5.7.3.1"),
                    (eku.client_auth, "1.3.6.1.5.5.7.3.2"),
                    (eku.code_signing, "1.3.6.1.5.5.7.3.3"),
                    (eku.email_protection, "1.3.6.1.5.5.7.3.4"),
                    (eku.time_stamping, "1.3.6.1.5.5.7.3.8"),
                    (eku.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
                ];
                facts.ekus.extend(
                    named
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, oid)| (*oid).to_owned()),
                );
                facts
                    .ekus
                    .extend(eku.other.iter().map(|oid| oid.to_id_string()));
            }
            ParsedExtension::BasicConstraints(bc) => facts.is_ca = bc.ca,
            _ => {}
        }
    }
    Ok(facts)
}

/// Months between two instants, rounded up: a 365-day-and-ten-minute certificate is 13
/// months, as Key Vault reports for imports.
fn validity_months(not_before: i64, not_after: i64) -> u32 {
    const MONTH_SECS: f64 = 365.0 / 12.0 * 86_400.0;
    let span = (not_after - not_before).max(0) as f64;
    (span / MONTH_SECS).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

fn spki_of_certificate(cert_der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(cert_err)?;
    Ok(cert.public_key().raw.to_vec())
}

impl CertificateBundle {
    /// Builds a bundle, putting the certificate whose public key matches `key` first and its
    /// issuers after it (duplicates dropped). No matching certificate is an error.
    pub fn new(key: KeyMaterial, certs: Vec<Vec<u8>>) -> Result<Self> {
        let wanted = key
            .public_key()
            .spki_der()
            .ok_or_else(|| CryptoError::InvalidKey("cannot encode the public key".to_owned()))?;
        let mut unique: Vec<Vec<u8>> = Vec::new();
        for cert in certs {
            if !unique.contains(&cert) {
                unique.push(cert);
            }
        }
        let mut leaf_at = None;
        for (i, cert) in unique.iter().enumerate() {
            if spki_of_certificate(cert)? == wanted {
                leaf_at = Some(i);
                break;
            }
        }
        let leaf_at = leaf_at.ok_or_else(|| cert_err("no certificate matches the private key"))?;
        let leaf = unique.remove(leaf_at);
        let mut chain = vec![leaf];
        chain.extend(unique);
        Ok(Self { key, chain })
    }

    /// The leaf certificate, DER (`cer` in a certificate bundle).
    pub fn leaf(&self) -> &[u8] {
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// Opens a PFX. `password` is the import's `pwd` (empty when none). The PFX must hold one
    /// private key and the certificate that matches it; other certificates become the chain.
    pub fn from_pfx(pfx: &[u8], password: &str) -> Result<Self> {
        let store = p12_keystore::KeyStore::from_pkcs12(pfx, password)
            .map_err(|e| CryptoError::Pkcs12(e.to_string()))?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| {
            CryptoError::Pkcs12("no private key with a matching certificate".to_owned())
        })?;
        let key = KeyMaterial::from_private_key_der(chain.key())?;
        let mut certs: Vec<Vec<u8>> = chain.chain().iter().map(|c| c.as_der().to_vec()).collect();
        for (_, entry) in store.entries() {
            if let p12_keystore::KeyStoreEntry::Certificate(cert) = entry {
                certs.push(cert.as_der().to_vec());
            }
        }
        Self::new(key, certs)
    }

    /// Writes a PFX (PBES2 with AES-256-CBC, HMAC-SHA-256 MAC) protected by `password`
    /// (empty for the managed secret, as Key Vault serves it).
    pub fn to_pfx(&self, password: &str) -> Result<Vec<u8>> {
        let mut certs = Vec::with_capacity(self.chain.len());
        for der in &self.chain {
            certs.push(
                p12_keystore::Certificate::from_der(der)
                    .map_err(|e| CryptoError::Pkcs12(e.to_string()))?,
            );
        }
        let local_key_id = sha1_bytes(self.leaf());
        let entry =
            p12_keystore::PrivateKeyChain::new(self.key.to_pkcs8_der()?, local_key_id, certs);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("1", p12_keystore::KeyStoreEntry::PrivateKeyChain(entry));
        store
            .writer(password)
            .encryption_iterations(2048)
            .mac_iterations(2048)
            .write()
            .map_err(|e| CryptoError::Pkcs12(e.to_string()))
    }

    /// Reads PEM text: one private key (PKCS#8, PKCS#1 or SEC1) and certificates, in any order.
    pub fn from_pem(text: &str) -> Result<Self> {
        let mut key = None;
        let mut certs = Vec::new();
        let mut reader = std::io::Cursor::new(text.as_bytes());
        for item in rustls_pemfile::read_all(&mut reader) {
            let item = item.map_err(|_| CryptoError::Pem("malformed PEM block".to_owned()))?;
            match item {
                rustls_pemfile::Item::X509Certificate(der) => certs.push(der.to_vec()),
                rustls_pemfile::Item::Pkcs8Key(der) => {
                    key = Some(KeyMaterial::from_private_key_der(der.secret_pkcs8_der())?)
                }
                rustls_pemfile::Item::Pkcs1Key(der) => {
                    key = Some(KeyMaterial::from_private_key_der(der.secret_pkcs1_der())?)
                }
                rustls_pemfile::Item::Sec1Key(der) => {
                    key = Some(KeyMaterial::from_private_key_der(der.secret_sec1_der())?)
                }
                _ => {}
            }
        }
        let key = key.ok_or_else(|| CryptoError::Pem("no private key".to_owned()))?;
        if certs.is_empty() {
            return Err(CryptoError::Pem("no certificate".to_owned()));
        }
        Self::new(key, certs)
    }

    /// Writes PEM as Key Vault serves a PEM certificate's secret: `PRIVATE KEY` (PKCS#8) first,
    /// then the leaf, then the chain, 64-character lines, `\n` endings.
    pub fn to_pem(&self) -> Result<String> {
        let mut out = pem_block("PRIVATE KEY", &self.key.to_pkcs8_der()?);
        for cert in &self.chain {
            out.push_str(&pem_block("CERTIFICATE", cert));
        }
        Ok(out)
    }

    /// The managed secret's value for `content_type`: PFX in standard base64 (no password) or
    /// PEM text.
    pub fn secret_value(&self, content_type: CertificateContentType) -> Result<String> {
        match content_type {
            CertificateContentType::Pkcs12 => Ok(STANDARD.encode(self.to_pfx("")?)),
            CertificateContentType::Pem => self.to_pem(),
        }
    }
}

impl CertificateBundle {
    /// The managed secret's value when the private key is not exportable: the certificates
    /// alone, as a key-less PFX (standard base64, no password) or PEM text.
    pub fn public_secret_value(&self, content_type: CertificateContentType) -> Result<String> {
        match content_type {
            CertificateContentType::Pem => Ok(self
                .chain
                .iter()
                .map(|cert| pem_block("CERTIFICATE", cert))
                .collect()),
            CertificateContentType::Pkcs12 => {
                let mut store = p12_keystore::KeyStore::new();
                for (i, der) in self.chain.iter().enumerate() {
                    let cert = p12_keystore::Certificate::from_der(der)
                        .map_err(|e| CryptoError::Pkcs12(e.to_string()))?;
                    store.add_entry(
                        &i.to_string(),
                        p12_keystore::KeyStoreEntry::Certificate(cert),
                    );
                }
                let pfx = store
                    .writer("")
                    .encryption_iterations(2048)
                    .mac_iterations(2048)
                    .write()
                    .map_err(|e| CryptoError::Pkcs12(e.to_string()))?;
                Ok(STANDARD.encode(pfx))
            }
        }
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PrivateKeyParts;

    const ALL_ALGS: [SignatureAlgorithm; 9] = [
        SignatureAlgorithm::Rs256,
        SignatureAlgorithm::Rs384,
        SignatureAlgorithm::Rs512,
        SignatureAlgorithm::Ps256,
        SignatureAlgorithm::Ps384,
        SignatureAlgorithm::Ps512,
        SignatureAlgorithm::Es256,
        SignatureAlgorithm::Es384,
        SignatureAlgorithm::Es512,
    ];

    fn ops(kty: KeyType) -> Vec<String> {
        kty.default_key_ops()
    }

    #[test]
    fn generates_every_supported_size_and_curve() -> Result<()> {
        for spec in [
            KeySpec::Rsa(2048),
            KeySpec::Rsa(3072),
            KeySpec::Rsa(4096),
            KeySpec::Ec(Curve::P256),
            KeySpec::Ec(Curve::P384),
            KeySpec::Ec(Curve::P521),
        ] {
            let key = KeyMaterial::generate(spec)?;
            assert_eq!(key.spec(), spec);
        }
        assert!(matches!(
            KeyMaterial::generate(KeySpec::Rsa(1024)),
            Err(CryptoError::UnsupportedKeySize(1024))
        ));
        Ok(())
    }

    #[test]
    fn rsa_jwk_renders_as_key_vault_does() -> Result<()> {
        let key = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        let jwk = key.public_jwk(
            "https://v.vault.localhost/keys/k/abc",
            KeyType::Rsa,
            &ops(KeyType::Rsa),
        );
        let text =
            serde_json::to_string(&jwk).map_err(|e| CryptoError::Operation(e.to_string()))?;
        assert!(text.starts_with(
            r#"{"kid":"https://v.vault.localhost/keys/k/abc","kty":"RSA","key_ops":["encrypt","decrypt","sign","verify","wrapKey","unwrapKey"],"n":""#
        ));
        assert!(text.ends_with(r#","e":"AQAB"}"#));
        assert!(!text.contains('='), "base64url must be unpadded");
        assert_eq!(member(&jwk.n, "n")?.len(), 256);
        Ok(())
    }

    #[test]
    fn ec_jwk_has_fixed_length_coordinates() -> Result<()> {
        for (curve, len) in [(Curve::P256, 32), (Curve::P384, 48), (Curve::P521, 66)] {
            let key = KeyMaterial::generate(KeySpec::Ec(curve))?;
            let jwk = key.public_jwk("kid", KeyType::EcHsm, &ops(KeyType::Ec));
            assert_eq!(jwk.kty.as_deref(), Some("EC-HSM"));
            assert_eq!(jwk.crv.as_deref(), Some(curve.as_str()));
            assert_eq!(member(&jwk.x, "x")?.len(), len);
            assert_eq!(member(&jwk.y, "y")?.len(), len);
            assert_eq!(PublicKey::from_jwk(&jwk)?, key.public_key());
        }
        Ok(())
    }

    #[test]
    fn every_algorithm_signs_and_verifies_on_its_key() -> Result<()> {
        let rsa = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        let p256 = KeyMaterial::generate(KeySpec::Ec(Curve::P256))?;
        let p384 = KeyMaterial::generate(KeySpec::Ec(Curve::P384))?;
        let p521 = KeyMaterial::generate(KeySpec::Ec(Curve::P521))?;
        for alg in ALL_ALGS {
            let key = match alg {
                SignatureAlgorithm::Es256 => &p256,
                SignatureAlgorithm::Es384 => &p384,
                SignatureAlgorithm::Es512 => &p521,
                _ => &rsa,
            };
            let digest = alg.digest(b"coldvault");
            let sig = key.sign(alg, &digest)?;
            assert!(key.verify(alg, &digest, &sig)?, "{}", alg.as_str());
            let other = alg.digest(b"something else");
            assert!(!key.verify(alg, &other, &sig)?, "{}", alg.as_str());
        }
        assert_eq!(p256.sign(SignatureAlgorithm::Es256, &[0; 32])?.len(), 64);
        assert_eq!(p521.sign(SignatureAlgorithm::Es512, &[0; 64])?.len(), 132);
        Ok(())
    }

    #[test]
    fn every_encryption_algorithm_round_trips_on_rsa_and_ec_refuses() -> Result<()> {
        let rsa = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        for alg in [
            EncryptionAlgorithm::Rsa15,
            EncryptionAlgorithm::RsaOaep,
            EncryptionAlgorithm::RsaOaep256,
        ] {
            let sealed = rsa.encrypt(alg, b"a content key")?;
            assert_eq!(sealed.len(), 256, "{}", alg.as_str());
            assert_eq!(rsa.decrypt(alg, &sealed)?, b"a content key");
            // A changed OAEP ciphertext never opens (PKCS#1 v1.5 may, rarely, by chance).
            if alg != EncryptionAlgorithm::Rsa15 {
                let mut flipped = sealed.clone();
                flipped[10] ^= 1;
                assert!(matches!(
                    rsa.decrypt(alg, &flipped),
                    Err(CryptoError::Cipher(_))
                ));
            }
        }
        // OAEP-256 output is not RSA-OAEP (SHA-1) input.
        let sealed = rsa.encrypt(EncryptionAlgorithm::RsaOaep256, b"k")?;
        assert!(rsa.decrypt(EncryptionAlgorithm::RsaOaep, &sealed).is_err());
        assert!(matches!(
            rsa.encrypt(EncryptionAlgorithm::RsaOaep256, &[0; 300]),
            Err(CryptoError::Cipher(_))
        ));
        let ec = KeyMaterial::generate(KeySpec::Ec(Curve::P256))?;
        assert!(matches!(
            ec.encrypt(EncryptionAlgorithm::RsaOaep, b"k"),
            Err(CryptoError::AlgorithmMismatch { .. })
        ));
        assert!(EncryptionAlgorithm::parse("A256KW").is_err());
        Ok(())
    }

    #[test]
    fn wrong_algorithm_or_digest_length_is_refused() -> Result<()> {
        let p256 = KeyMaterial::generate(KeySpec::Ec(Curve::P256))?;
        assert!(matches!(
            p256.sign(SignatureAlgorithm::Rs256, &[0; 32]),
            Err(CryptoError::AlgorithmMismatch { .. })
        ));
        assert!(matches!(
            p256.sign(SignatureAlgorithm::Es384, &[0; 48]),
            Err(CryptoError::AlgorithmMismatch { .. })
        ));
        assert!(matches!(
            p256.sign(SignatureAlgorithm::Es256, &[0; 20]),
            Err(CryptoError::DigestLength {
                expected: 32,
                got: 20,
                ..
            })
        ));
        assert!(SignatureAlgorithm::parse("ES256K").is_err());
        Ok(())
    }

    #[test]
    fn pkcs8_and_serde_round_trip_keep_the_same_key() -> Result<()> {
        for spec in [KeySpec::Rsa(2048), KeySpec::Ec(Curve::P384)] {
            let key = KeyMaterial::generate(spec)?;
            let back = KeyMaterial::from_pkcs8_der(&key.to_pkcs8_der()?)?;
            assert_eq!(back, key);
            let json =
                serde_json::to_string(&key).map_err(|e| CryptoError::Operation(e.to_string()))?;
            let again: KeyMaterial =
                serde_json::from_str(&json).map_err(|e| CryptoError::Operation(e.to_string()))?;
            assert_eq!(again, key);
            let alg = if key.is_rsa() {
                SignatureAlgorithm::Ps256
            } else {
                SignatureAlgorithm::Es384
            };
            let digest = alg.digest(b"restored");
            assert!(key.verify(alg, &digest, &again.sign(alg, &digest)?)?);
        }
        Ok(())
    }

    #[test]
    fn debug_output_never_shows_material() -> Result<()> {
        let key = KeyMaterial::generate(KeySpec::Ec(Curve::P256))?;
        let der = key.to_pkcs8_der()?;
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains(&b64url(&der)));
        let jwk = JsonWebKey {
            d: Some("c2VjcmV0".to_owned()),
            ..JsonWebKey::default()
        };
        assert!(!format!("{jwk:?}").contains("c2VjcmV0"));
        Ok(())
    }

    fn private_jwk(key: &KeyMaterial, kty: &str) -> JsonWebKey {
        let mut jwk = key.public_jwk("kid", KeyType::parse(kty).unwrap_or(KeyType::Rsa), &[]);
        jwk.d = Some(match &key.inner {
            Private::Rsa(k) => b64url(&k.d().to_bytes_be()),
            Private::P256(k) => b64url(&k.to_bytes()),
            Private::P384(k) => b64url(&k.to_bytes()),
            Private::P521(k) => b64url(&k.to_bytes()),
        });
        if let Private::Rsa(k) = &key.inner {
            jwk.p = Some(b64url(&k.primes()[0].to_bytes_be()));
            jwk.q = Some(b64url(&k.primes()[1].to_bytes_be()));
        }
        jwk
    }

    #[test]
    fn jwk_import_with_private_parts() -> Result<()> {
        let rsa = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        assert_eq!(KeyMaterial::from_jwk(&private_jwk(&rsa, "RSA"))?, rsa);
        let mut without_primes = private_jwk(&rsa, "RSA");
        without_primes.p = None;
        without_primes.q = None;
        assert_eq!(KeyMaterial::from_jwk(&without_primes)?, rsa);

        let ec = KeyMaterial::generate(KeySpec::Ec(Curve::P521))?;
        assert_eq!(KeyMaterial::from_jwk(&private_jwk(&ec, "EC"))?, ec);

        let other = KeyMaterial::generate(KeySpec::Ec(Curve::P521))?;
        let mut mixed = private_jwk(&ec, "EC");
        mixed.x = other.public_jwk("kid", KeyType::Ec, &[]).x;
        assert!(KeyMaterial::from_jwk(&mixed).is_err());

        let public_only = ec.public_jwk("kid", KeyType::Ec, &[]);
        assert!(matches!(
            KeyMaterial::from_jwk(&public_only),
            Err(CryptoError::InvalidKey(_))
        ));
        Ok(())
    }

    fn spec(subject: &str) -> SelfSignedSpec {
        SelfSignedSpec {
            subject: subject.to_owned(),
            dns_names: vec!["app.example.test".to_owned()],
            emails: vec!["ops@example.test".to_owned()],
            validity_months: 12,
            key_usage: vec!["digitalSignature".to_owned(), "keyEncipherment".to_owned()],
            ekus: vec!["1.3.6.1.5.5.7.3.1".to_owned()],
        }
    }

    #[test]
    fn self_signed_certificate_follows_the_policy() -> Result<()> {
        // 2022-09-20T17:55:30Z, the creation time of a recorded Key Vault certificate.
        let now = 1_663_696_530;
        let key = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        let issued = issue_self_signed(&spec("CN=xyz, O=Contoso"), key, now)?;
        let facts = certificate_facts(issued.bundle.leaf())?;
        assert_eq!(facts.subject, "CN=xyz, O=Contoso");
        assert_eq!(facts.dns_names, ["app.example.test"]);
        assert_eq!(facts.emails, ["ops@example.test"]);
        // The recorded certificate: nbf 1663695930, exp 1695232530.
        assert_eq!(facts.not_before, 1_663_695_930);
        assert_eq!(facts.not_after, 1_695_232_530);
        assert_eq!(facts.validity_months, 13);
        assert_eq!(facts.key_usage, ["digitalSignature", "keyEncipherment"]);
        assert_eq!(facts.ekus, ["1.3.6.1.5.5.7.3.1"]);
        assert!(facts.self_issued);
        assert!(!issued.csr_der.is_empty());
        assert_eq!(x5t(issued.bundle.leaf()).len(), 27);
        Ok(())
    }

    /// Every key type Key Vault issues certificates for signs its own certificate and CSR,
    /// which name its curve and hash (P-521 is laid out as P-384 and renamed).
    #[test]
    fn self_signed_certificates_of_every_key_type_verify_under_their_key() -> Result<()> {
        use x509_parser::prelude::FromDer as _;
        let cases = [
            (
                KeySpec::Rsa(2048),
                SignatureAlgorithm::Rs256,
                "1.2.840.113549.1.1.11",
                None,
            ),
            (
                KeySpec::Ec(Curve::P256),
                SignatureAlgorithm::Es256,
                "1.2.840.10045.4.3.2",
                Some("1.2.840.10045.3.1.7"),
            ),
            (
                KeySpec::Ec(Curve::P384),
                SignatureAlgorithm::Es384,
                "1.2.840.10045.4.3.3",
                Some("1.3.132.0.34"),
            ),
            (
                KeySpec::Ec(Curve::P521),
                SignatureAlgorithm::Es512,
                "1.2.840.10045.4.3.4",
                Some("1.3.132.0.35"),
            ),
        ];
        for (spec_of_key, alg, signature_oid, curve_oid) in cases {
            let key = KeyMaterial::generate(spec_of_key)?;
            let issued = issue_self_signed(&spec("CN=every-key"), key.clone(), 1_700_000_000)?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(issued.bundle.leaf()).map_err(cert_err)?;
            assert_eq!(
                cert.signature_algorithm.algorithm.to_id_string(),
                signature_oid,
                "{spec_of_key:?}"
            );
            let spki = cert.public_key();
            let named_curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                // RSA's parameters are NULL, which reads as an empty identifier.
                .filter(|oid| !oid.is_empty());
            assert_eq!(named_curve.as_deref(), curve_oid, "{spec_of_key:?}");
            let facts = certificate_facts(issued.bundle.leaf())?;
            assert_eq!(facts.subject, "CN=every-key");

            let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(
                &issued.csr_der,
            )
            .map_err(cert_err)?;
            assert_eq!(
                csr.signature_algorithm.algorithm.to_id_string(),
                signature_oid,
                "{spec_of_key:?}"
            );
            let signed = [
                (
                    cert.tbs_certificate.as_ref(),
                    cert.signature_value.data.as_ref(),
                ),
                (
                    csr.certification_request_info.raw,
                    csr.signature_value.data.as_ref(),
                ),
            ];
            for (tbs, signature) in signed {
                let digest = match alg {
                    SignatureAlgorithm::Es384 => sha2::Sha384::digest(tbs).to_vec(),
                    SignatureAlgorithm::Es512 => sha2::Sha512::digest(tbs).to_vec(),
                    _ => sha2::Sha256::digest(tbs).to_vec(),
                };
                // Key Vault's verify takes ECDSA signatures as raw r || s.
                let raw = match spec_of_key {
                    KeySpec::Ec(Curve::P256) => p256::ecdsa::Signature::from_der(signature)
                        .map_err(cert_err)?
                        .to_bytes()
                        .to_vec(),
                    KeySpec::Ec(Curve::P384) => p384::ecdsa::Signature::from_der(signature)
                        .map_err(cert_err)?
                        .to_bytes()
                        .to_vec(),
                    KeySpec::Ec(Curve::P521) => p521::ecdsa::Signature::from_der(signature)
                        .map_err(cert_err)?
                        .to_bytes()
                        .to_vec(),
                    KeySpec::Rsa(_) => signature.to_vec(),
                };
                assert!(key.verify(alg, &digest, &raw)?, "{spec_of_key:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn pfx_round_trip_with_password_and_ec_key() -> Result<()> {
        let key = KeyMaterial::generate(KeySpec::Ec(Curve::P384))?;
        let issued = issue_self_signed(&spec("CN=pfx"), key, 1_700_000_000)?;
        let pfx = issued.bundle.to_pfx("s3cret")?;
        let back = CertificateBundle::from_pfx(&pfx, "s3cret")?;
        assert_eq!(back.key, issued.bundle.key);
        assert_eq!(back.chain, issued.bundle.chain);
        assert!(matches!(
            CertificateBundle::from_pfx(&pfx, "wrong"),
            Err(CryptoError::Pkcs12(_))
        ));
        Ok(())
    }

    /// A CA, an intermediate-free CA-signed leaf, and the bundle as PEM with the chain.
    fn ca_signed() -> Result<(CertificateBundle, Vec<u8>)> {
        let ca_key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        ca_params.distinguished_name = parse_subject("CN=coldvault test CA")?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).map_err(cert_err)?;

        let leaf_key = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        let leaf_pair =
            rcgen::KeyPair::try_from(leaf_key.to_pkcs8_der()?.as_slice()).map_err(cert_err)?;
        let mut leaf_params = rcgen::CertificateParams::new(vec!["leaf.example.test".to_owned()])
            .map_err(cert_err)?;
        leaf_params.distinguished_name = parse_subject("CN=leaf")?;
        let leaf = leaf_params
            .signed_by(&leaf_pair, &ca, &ca_key)
            .map_err(cert_err)?;
        let bundle = CertificateBundle {
            key: leaf_key,
            chain: vec![leaf.der().to_vec(), ca.der().to_vec()],
        };
        Ok((bundle, ca.der().to_vec()))
    }

    #[test]
    fn pem_with_ca_signed_leaf_keeps_the_chain_in_order() -> Result<()> {
        let (bundle, ca) = ca_signed()?;
        // Chain first and key last: the order in the file must not matter.
        let text = format!(
            "{}{}{}",
            pem_block("CERTIFICATE", &ca),
            pem_block("CERTIFICATE", bundle.leaf()),
            pem_block("PRIVATE KEY", &bundle.key.to_pkcs8_der()?)
        );
        let back = CertificateBundle::from_pem(&text)?;
        assert_eq!(back.chain, bundle.chain);
        assert_eq!(back.key, bundle.key);
        let facts = certificate_facts(back.leaf())?;
        assert!(!facts.self_issued);
        assert_eq!(facts.dns_names, ["leaf.example.test"]);

        let served = bundle.to_pem()?;
        assert!(served.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(served.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(CertificateBundle::from_pem(&served)?.chain, bundle.chain);

        let pfx = CertificateBundle::from_pfx(&bundle.to_pfx("")?, "")?;
        assert_eq!(pfx.chain, bundle.chain);
        Ok(())
    }

    #[test]
    fn pem_without_key_or_certificate_is_refused() -> Result<()> {
        let (bundle, _) = ca_signed()?;
        let only_cert = pem_block("CERTIFICATE", bundle.leaf());
        assert!(matches!(
            CertificateBundle::from_pem(&only_cert),
            Err(CryptoError::Pem(_))
        ));
        let only_key = pem_block("PRIVATE KEY", &bundle.key.to_pkcs8_der()?);
        assert!(matches!(
            CertificateBundle::from_pem(&only_key),
            Err(CryptoError::Pem(_))
        ));
        let other_key = KeyMaterial::generate(KeySpec::Rsa(2048))?;
        let mismatched = format!(
            "{only_cert}{}",
            pem_block("PRIVATE KEY", &other_key.to_pkcs8_der()?)
        );
        assert!(matches!(
            CertificateBundle::from_pem(&mismatched),
            Err(CryptoError::Certificate(_))
        ));
        Ok(())
    }

    #[test]
    fn managed_secret_value_is_standard_base64_pfx_or_pem() -> Result<()> {
        let key = KeyMaterial::generate(KeySpec::Ec(Curve::P256))?;
        let issued = issue_self_signed(&spec("CN=managed"), key, 1_700_000_000)?;
        let value = issued.bundle.secret_value(CertificateContentType::Pkcs12)?;
        let pfx = STANDARD
            .decode(&value)
            .map_err(|e| CryptoError::Operation(e.to_string()))?;
        assert_eq!(
            CertificateBundle::from_pfx(&pfx, "")?.chain,
            issued.bundle.chain
        );
        let pem = issued.bundle.secret_value(CertificateContentType::Pem)?;
        assert!(pem.contains("-----BEGIN CERTIFICATE-----"));
        Ok(())
    }

    #[test]
    fn public_secret_value_carries_no_private_key() -> Result<()> {
        let (bundle, _) = ca_signed()?;
        let value = bundle.public_secret_value(CertificateContentType::Pkcs12)?;
        let pfx = STANDARD
            .decode(&value)
            .map_err(|e| CryptoError::Operation(e.to_string()))?;
        let store = p12_keystore::KeyStore::from_pkcs12(&pfx, "")
            .map_err(|e| CryptoError::Pkcs12(e.to_string()))?;
        assert!(store.private_key_chain().is_none());
        assert_eq!(store.entries_count(), bundle.chain.len());
        let pem = bundle.public_secret_value(CertificateContentType::Pem)?;
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!pem.contains("PRIVATE KEY"));
        Ok(())
    }

    #[test]
    fn x5t_is_base64url_sha1() {
        // SHA-1 of the empty input, base64url without padding.
        assert_eq!(x5t(b""), "2jmj7l5rSw0yVb_vlWAYkK_YBwk");
    }

    #[test]
    fn add_months_clamps_to_the_month_end() -> Result<()> {
        let jan31 = time::macros::datetime!(2024-01-31 12:00 UTC);
        assert_eq!(
            add_months(jan31, 1)?,
            time::macros::datetime!(2024-02-29 12:00 UTC)
        );
        assert_eq!(
            add_months(jan31, 13)?,
            time::macros::datetime!(2025-02-28 12:00 UTC)
        );
        Ok(())
    }
}
