//! Detached archive signatures in OpenSSH's `SSHSIG` format (`PROTOCOL.sshsig`), namespace
//! `coldvault`, hash SHA-512: exactly what `ssh-keygen -Y sign -n coldvault -f KEY` writes,
//! so `ssh-keygen -Y verify` checks a coldvault signature with no coldvault at hand, and the
//! other way round. age says nothing of who wrote an archive (anyone with the public
//! recipient can make one); a signature by a key the restoring side trusts does.
//!
//! Keys: Ed25519 only (`ssh-keygen -t ed25519`), the private key in OpenSSH's format without
//! a passphrase (a scheduled job reads it unattended; keep it in a secret store). Trusted
//! signers: public keys as `ssh-ed25519 AAAA… [comment]` lines, or `ssh-keygen`'s
//! allowed-signers lines (`PRINCIPALS ssh-ed25519 AAAA…`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha512};

/// The namespace every coldvault signature is made in.
pub const NAMESPACE: &str = "coldvault";
const MAGIC: &[u8; 6] = b"SSHSIG";
const KEY_TYPE: &str = "ssh-ed25519";
const HASH: &str = "sha512";
const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// Why a key, a signature or a trusted-signer list was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing key file is not usable.
    #[error("{0}")]
    BadKey(String),
    /// A trusted signer is not an Ed25519 public key.
    #[error("{0}")]
    BadSigner(String),
    /// The signature is malformed, for another namespace, or does not match.
    #[error("{0}")]
    Invalid(String),
    /// The signature is valid but made by a key nobody trusts.
    #[error("the archive is signed by {0}, which is not a trusted signer")]
    Untrusted(String),
}

/// An Ed25519 signing key from an OpenSSH private key file. `Debug` shows only the public key.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_line())
            .finish_non_exhaustive()
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads SSH wire-format fields.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

fn public_blob(key: &ed25519_dalek::VerifyingKey) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, KEY_TYPE.as_bytes());
    put_string(&mut blob, key.as_bytes());
    blob
}

fn fingerprint(blob: &[u8]) -> String {
    let digest = sha2::Sha256::digest(blob);
    let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
    format!("SHA256:{text}")
}

impl SigningKey {
    /// Parses an OpenSSH private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn from_openssh(text: &str) -> Result<Self, SignError> {
        let bad = |why: &str| SignError::BadKey(why.to_owned());
        let body: String = text
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN OPENSSH PRIVATE KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END OPENSSH PRIVATE KEY-----")
            .collect();
        if body.is_empty() {
            return Err(bad(
                "not an OpenSSH private key (expected -----BEGIN OPENSSH PRIVATE KEY-----; \
                 make one with ssh-keygen -t ed25519)",
            ));
        }
        let raw = zeroize::Zeroizing::new(
            B64.decode(body.as_bytes())
                .map_err(|_| bad("the private key is not valid base64"))?,
        );
        let mut wire = Wire(
            raw.strip_prefix(b"openssh-key-v1\0")
                .ok_or_else(|| bad("not an OpenSSH private key (no openssh-key-v1 header)"))?,
        );
        let damaged = || bad("the private key file is damaged");
        let cipher = wire.string().ok_or_else(damaged)?;
        let _kdf = wire.string().ok_or_else(damaged)?;
        let _kdf_options = wire.string().ok_or_else(damaged)?;
        if cipher != b"none" {
            return Err(bad(
                "the private key is protected by a passphrase: --sign needs an unencrypted \
                 key file (ssh-keygen -t ed25519 -N '')",
            ));
        }
        if wire.u32() != Some(1) {
            return Err(bad("the key file must hold exactly one key"));
        }
        let _public = wire.string().ok_or_else(damaged)?;
        let mut private = Wire(wire.string().ok_or_else(damaged)?);
        let (check1, check2) = (private.u32(), private.u32());
        if check1.is_none() || check1 != check2 {
            return Err(damaged());
        }
        let key_type = private.string().ok_or_else(damaged)?;
        if key_type != KEY_TYPE.as_bytes() {
            return Err(bad(&format!(
                "the key is {}, not Ed25519: --sign takes an ssh-ed25519 key",
                String::from_utf8_lossy(key_type)
            )));
        }
        let _public = private.string().ok_or_else(damaged)?;
        let secret = private.string().ok_or_else(damaged)?;
        let seed: [u8; 32] = secret
            .get(..32)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(damaged)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if secret.get(32..) != Some(key.verifying_key().as_bytes().as_slice()) {
            return Err(damaged());
        }
        Ok(Self { key })
    }

    /// The public key as an `authorized_keys` line (`ssh-ed25519 AAAA…`).
    pub fn public_line(&self) -> String {
        format!(
            "{KEY_TYPE} {}",
            B64.encode(public_blob(&self.key.verifying_key()))
        )
    }

    /// The armored signature of a message whose SHA-512 is `digest`.
    pub fn sign_digest(&self, digest: &[u8; 64]) -> String {
        let signature = self.key.sign(&signed_data(digest));
        let mut sig_blob = Vec::new();
        put_string(&mut sig_blob, KEY_TYPE.as_bytes());
        put_string(&mut sig_blob, &signature.to_bytes());
        let mut blob = Vec::new();
        blob.extend_from_slice(MAGIC);
        blob.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut blob, &public_blob(&self.key.verifying_key()));
        put_string(&mut blob, NAMESPACE.as_bytes());
        put_string(&mut blob, b"");
        put_string(&mut blob, HASH.as_bytes());
        put_string(&mut blob, &sig_blob);
        let text = B64.encode(&blob);
        let mut out = String::from(BEGIN);
        out.push('\n');
        for line in text.as_bytes().chunks(70) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
        out
    }
}

/// What is signed: the preamble, namespace, reserved field, hash name and the message hash.
fn signed_data(digest: &[u8; 64]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(MAGIC);
    put_string(&mut data, NAMESPACE.as_bytes());
    put_string(&mut data, b"");
    put_string(&mut data, HASH.as_bytes());
    put_string(&mut data, digest);
    data
}

/// The public keys a restore trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedSigners {
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl TrustedSigners {
    /// Adds every key in `text`: one `ssh-ed25519 AAAA…` key or allowed-signers line per
    /// line; blank lines and `#` comments are skipped. Any other key type is refused.
    pub fn add(&mut self, text: &str) -> Result<(), SignError> {
        let mut found = false;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = fields.iter().position(|f| {
                f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-")
            }) else {
                return Err(SignError::BadSigner(format!(
                    "not an SSH public key: {}",
                    line.chars().take(40).collect::<String>()
                )));
            };
            if fields[at] != KEY_TYPE {
                return Err(SignError::BadSigner(format!(
                    "{} keys are not supported as signers: use ssh-ed25519",
                    fields[at]
                )));
            }
            let blob = fields
                .get(at + 1)
                .and_then(|b| B64.decode(b).ok())
                .ok_or_else(|| {
                    SignError::BadSigner("an ssh-ed25519 key without its base64 part".to_owned())
                })?;
            self.keys.push(parse_public_blob(&blob).ok_or_else(|| {
                SignError::BadSigner("a damaged ssh-ed25519 public key".to_owned())
            })?);
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(SignError::BadSigner("no public key found".to_owned()))
        }
    }

    /// Whether any signer is trusted (with none, signatures are not checked).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks an armored signature over a message whose SHA-512 is `digest`: well formed,
    /// namespace `coldvault`, valid, and by a trusted key.
    pub fn verify(&self, armored: &str, digest: &[u8; 64]) -> Result<(), SignError> {
        let invalid = |why: &str| SignError::Invalid(why.to_owned());
        let body: String = armored
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != BEGIN)
            .skip(1)
            .take_while(|l| *l != END)
            .collect();
        let raw = B64
            .decode(body.as_bytes())
            .map_err(|_| invalid("the signature file is not an SSH signature"))?;
        let mut wire = Wire(&raw);
        if wire.bytes(6) != Some(MAGIC.as_slice()) || wire.u32() != Some(1) {
            return Err(invalid("the signature file is not an SSH signature"));
        }
        let damaged = || invalid("the signature is damaged");
        let public = wire.string().ok_or_else(damaged)?;
        let namespace = wire.string().ok_or_else(damaged)?;
        let _reserved = wire.string().ok_or_else(damaged)?;
        let hash = wire.string().ok_or_else(damaged)?;
        let mut sig = Wire(wire.string().ok_or_else(damaged)?);
        if namespace != NAMESPACE.as_bytes() {
            return Err(SignError::Invalid(format!(
                "the signature is for namespace '{}', not '{NAMESPACE}'",
                String::from_utf8_lossy(namespace)
            )));
        }
        if hash != HASH.as_bytes() {
            return Err(SignError::Invalid(format!(
                "the signature uses hash '{}'; coldvault checks sha512 signatures",
                String::from_utf8_lossy(hash)
            )));
        }
        let key = parse_public_blob(public)
            .ok_or_else(|| invalid("the signature is not by an ssh-ed25519 key"))?;
        if sig.string() != Some(KEY_TYPE.as_bytes()) {
            return Err(invalid("the signature is not an ssh-ed25519 signature"));
        }
        let bytes: [u8; 64] = sig
            .string()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(damaged)?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        key.verify(&signed_data(digest), &signature).map_err(|_| {
            invalid(
                "the signature does not match the archive (the archive was changed or replaced)",
            )
        })?;
        if self.keys.iter().any(|k| k == &key) {
            Ok(())
        } else {
            Err(SignError::Untrusted(fingerprint(public)))
        }
    }
}

fn parse_public_blob(blob: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
    let mut wire = Wire(blob);
    if wire.string()? != KEY_TYPE.as_bytes() {
        return None;
    }
    let bytes: [u8; 32] = wire.string()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

/// A running SHA-512 over everything written through it, for signing a stream.
#[derive(Debug)]
pub struct HashingWriter<W> {
    /// The writer the bytes go on to.
    pub inner: W,
    hasher: Sha512,
}

impl<W> HashingWriter<W> {
    /// Hashes what goes to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha512::new(),
        }
    }

    /// The digest of everything written so far.
    pub fn digest(&self) -> [u8; 64] {
        self.hasher.clone().finalize().into()
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The SHA-512 of everything `reader` yields.
pub fn digest_reader(mut reader: impl std::io::Read) -> std::io::Result<[u8; 64]> {
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
        }
    }

    #[test]
    fn a_signature_verifies_only_for_its_digest_and_a_trusted_key() {
        let key = key();
        let digest: [u8; 64] = Sha512::digest(b"archive").into();
        let signature = key.sign_digest(&digest);
        assert!(signature.starts_with(BEGIN));
        let mut trusted = TrustedSigners::default();
        trusted
            .add(&format!("{} test", key.public_line()))
            .expect("add");
        trusted.verify(&signature, &digest).expect("valid");
        let other: [u8; 64] = Sha512::digest(b"another").into();
        assert!(matches!(
            trusted.verify(&signature, &other),
            Err(SignError::Invalid(_))
        ));
        let mut stranger = TrustedSigners::default();
        let other_key = SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]),
        };
        stranger.add(&other_key.public_line()).expect("add");
        assert!(matches!(
            stranger.verify(&signature, &digest),
            Err(SignError::Untrusted(_))
        ));
        assert!(matches!(
            trusted.verify("garbage", &digest),
            Err(SignError::Invalid(_))
        ));
    }

    #[test]
    fn allowed_signers_lines_and_other_key_types() {
        let mut trusted = TrustedSigners::default();
        trusted
            .add(&format!(
                "# ops\nbackup@example.org {}\n",
                key().public_line()
            ))
            .expect("allowed signers line");
        assert!(!trusted.is_empty());
        assert!(matches!(
            TrustedSigners::default().add("ssh-rsa AAAAB3Nza test"),
            Err(SignError::BadSigner(_))
        ));
        assert!(TrustedSigners::default().add("\n# nothing\n").is_err());
    }

    #[test]
    fn debug_shows_the_public_key_only() {
        let shown = format!("{:?}", key());
        assert!(shown.contains("ssh-ed25519"));
        assert!(!shown.contains(&hex::encode([7u8; 32])));
    }
}
