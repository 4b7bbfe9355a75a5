//! Generates the archive fixtures under `fixtures/` (described in `fixtures/README.md`):
//! the test-only identity (kept when it exists), a golden format-v1 archive, and the broken
//! archives every reader must refuse. Run with `cargo run --example make_fixtures`.
//!
//! The golden archive is written by `ArchiveWriter`; the hostile ones are assembled here,
//! tar header by tar header, because the writer cannot produce them. Contents are fixed
//! (a seeded generator fills the large blob); only the creation time and age's random file
//! key differ from one run to the next.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use coldvault::archive::keys::RecipientSet;
use coldvault::archive::{
    ArchiveWriter, Attributes, DeletedItem, Destination, Encryption, ItemInfo, Kind, SecretRecord,
    Source,
};
use time::macros::datetime;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The golden archive's canary value: tests check it never shows outside `extract`.
const CANARY: &str = "golden-canary-9c41e7";

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let v1 = root.join("v1");
    let broken = v1.join("broken");
    fs::create_dir_all(&broken)?;

    let identity = load_or_create_identity(&root.join("test-identity.txt"))?;
    make_ssh_keys(&root.join("keys"))?;
    let recipient = identity.to_public().to_string();
    let encrypt_to = |recipient: &str| -> Result<Encryption> {
        let mut set = RecipientSet::new();
        set.add(recipient)?;
        Ok(Encryption::to_recipients(set)?)
    };

    let golden = v1.join("golden.tar.zst.age");
    replace_with(&golden, |path| write_golden(path, &encrypt_to(&recipient)?))?;
    let v2 = root.join("v2");
    fs::create_dir_all(&v2)?;
    replace_with(&v2.join("golden-kv.tar.zst.age"), |path| {
        write_golden_kv(path, &encrypt_to(&recipient)?)
    })?;
    let golden_bytes = fs::read(&golden)?;

    // Cut inside the second 64 KiB age chunk: the last chunk cannot authenticate.
    let header_len = age_header_len(&golden_bytes);
    let cut = header_len + 65_552 + 1_000;
    fs::write(
        broken.join("truncated.tar.zst.age"),
        &golden_bytes[..cut.min(golden_bytes.len() - 1)],
    )?;

    // One flipped bit in the first chunk.
    let mut flipped = golden_bytes.clone();
    flipped[header_len + 4_000] ^= 0x01;
    fs::write(broken.join("flipped-byte.tar.zst.age"), &flipped)?;

    // A valid archive for a recipient whose identity was thrown away.
    let stranger = age::x25519::Identity::generate().to_public().to_string();
    replace_with(&broken.join("wrong-key.tar.zst.age"), |path| {
        write_golden(path, &encrypt_to(&stranger)?)
    })?;

    let seal = |name: &str, tar: Vec<u8>| -> Result<()> {
        let compressed = zstd::encode_all(&tar[..], 19)?;
        let recipient: age::x25519::Recipient = recipient.parse()?;
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))?;
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out)?;
        writer.write_all(&compressed)?;
        writer.finish()?;
        fs::write(broken.join(name), out)?;
        Ok(())
    };
    let marker =
        |version: u32| format!(r#"{{"format":"coldvault-archive","format_version":{version}}}"#);

    // A future format version: refused on the first entry.
    let mut tar = TarBuf::default();
    // Version 3: versions 1 (Key Vault) and 2 (KV mounts) are both known.
    tar.file("coldvault-archive.json", marker(3).as_bytes());
    tar.file("secrets/future/data.bin", b"written by a later coldvault");
    seal("unknown-version.tar.zst.age", tar.finish())?;

    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.raw_file(b"secrets/../../evil.txt", b"escaped\n");
    seal("path-traversal.tar.zst.age", tar.finish())?;

    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.raw_file(b"/tmp/coldvault-evil.txt", b"absolute\n");
    seal("absolute-path.tar.zst.age", tar.finish())?;

    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.symlink("secrets/db/backup.bin", "/etc/passwd");
    seal("symlink.tar.zst.age", tar.finish())?;

    // Declares 65 MiB, one MiB over the per-entry limit (zeros: the file stays small).
    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.file("keys/big/backup.bin", &vec![0u8; 65 << 20]);
    seal("oversized-entry.tar.zst.age", tar.finish())?;

    // 60 MiB of zeros, under the entry limit, from a few kilobytes: the ratio bound trips.
    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.file("keys/bomb/backup.bin", &vec![0u8; 60 << 20]);
    seal("decompression-bomb.tar.zst.age", tar.finish())?;

    // A valid layout whose secret entry was altered after the manifest was computed.
    seal("manifest-mismatch.tar.zst.age", mismatched_tar()?)?;

    // Two secrets whose names differ only in case: Key Vault cannot hold both, and a
    // reader keying items by name would keep one. Manifest and entries agree.
    let api_key = secret_entry("api-key", "00000000000000000000000000000001", "lower");
    let api_key_upper = secret_entry("API-KEY", "00000000000000000000000000000002", "upper");
    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.file(&api_key.0, &api_key.1);
    tar.file(&api_key_upper.0, &api_key_upper.1);
    tar.file("manifest.json", &manifest_for(&[&api_key, &api_key_upper])?);
    seal("case-duplicate-names.tar.zst.age", tar.finish())?;

    // The same entry twice in the tar stream (same bytes), listed once in the manifest.
    let db = secret_entry("db", "00000000000000000000000000000001", "first");
    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.file(&db.0, &db.1);
    tar.file(&db.0, &db.1);
    tar.file("manifest.json", &manifest_for(&[&db])?);
    seal("duplicate-entry.tar.zst.age", tar.finish())?;

    // A complete, consistent archive whose tar stream stops without its two zero blocks.
    let mut tar = TarBuf::default();
    tar.file("coldvault-archive.json", marker(1).as_bytes());
    tar.file(&db.0, &db.1);
    tar.file("manifest.json", &manifest_for(&[&db])?);
    seal("missing-tar-end.tar.zst.age", tar.finish_without_end())?;

    println!("fixtures written under {}", root.display());
    Ok(())
}

/// Keeps the committed test identity; creates one on the first run.
fn load_or_create_identity(path: &Path) -> Result<age::x25519::Identity> {
    if let Ok(text) = fs::read_to_string(path) {
        for line in text.lines() {
            if line.starts_with("AGE-SECRET-KEY-") {
                return Ok(line.parse()?);
            }
        }
        return Err(format!("{} holds no identity", path.display()).into());
    }
    let identity = age::x25519::Identity::generate();
    let text = format!(
        "# TEST-ONLY IDENTITY for coldvault's fixtures and tests. It is public: never encrypt\n\
         # anything real to it.\n\
         # public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    fs::write(path, text)?;
    Ok(identity)
}

/// Test-only SSH keys for the round-trip tests, made once with `ssh-keygen` and kept.
fn make_ssh_keys(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let keys: [(&str, &[&str], &str); 3] = [
        ("test-ssh-ed25519", &["-t", "ed25519"], ""),
        (
            "test-ssh-ed25519-protected",
            &["-t", "ed25519"],
            "test-only-passphrase",
        ),
        ("test-ssh-rsa", &["-t", "rsa", "-b", "2048"], ""),
    ];
    for (name, kind, passphrase) in keys {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        let status = std::process::Command::new("ssh-keygen")
            .args(kind)
            .args([
                "-q",
                "-N",
                passphrase,
                "-C",
                "coldvault TEST-ONLY key",
                "-f",
            ])
            .arg(&path)
            .status()?;
        if !status.success() {
            return Err(format!("ssh-keygen failed for {name}").into());
        }
    }
    Ok(())
}

/// Writes through the path's absence (the writer never overwrites).
fn replace_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if path.exists() {
        fs::remove_file(path)?;
    }
    write(path)
}

fn attrs(created: time::OffsetDateTime) -> Attributes {
    Attributes {
        enabled: Some(true),
        created: Some(created),
        updated: Some(created),
        ..Attributes::default()
    }
}

/// The golden KV archive's planted value: tests check it never shows outside a restore.
const KV_CANARY: &str = "golden-kv-canary-3b8e";

/// The golden format version 2 archive: a KV mount with every version state, twins that
/// differ only in case, a nested path with a space, custom metadata.
fn write_golden_kv(path: &Path, encryption: &Encryption) -> Result<()> {
    use coldvault::kv::{KvAddress, KvData, KvSecret, KvVersion};
    let address = KvAddress::parse("bao+https://bao.example.com:8200/secret")?;
    let mut writer = ArchiveWriter::create(
        Destination::File(path.to_owned()),
        encryption,
        coldvault::archive::kv::source(&address),
    )?;
    let at = datetime!(2026-01-02 03:04:05.123456789 UTC);
    let data = |pairs: &[(&str, &str)]| {
        KvData(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect(),
        )
    };
    let version = |n: u64, state: &str, value: Option<KvData>| KvVersion {
        version: n,
        created: Some(at),
        deleted: (state == "deleted").then_some(datetime!(2026-01-03 00:00:00 UTC)),
        destroyed: state == "destroyed",
        data: value,
    };
    let secret = |path: &str, custom: &[(&str, &str)], versions: Vec<KvVersion>| KvSecret {
        path: path.to_owned(),
        custom_metadata: custom
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        current_version: versions.last().map_or(0, |v| v.version),
        oldest_version: versions.first().map_or(0, |v| v.version),
        max_versions: 0,
        cas_required: false,
        delete_version_after: "0s".to_owned(),
        created: Some(at),
        updated: Some(at),
        versions,
    };
    for item in [
        secret(
            "app/db",
            &[("owner", "team-a")],
            vec![
                version(1, "live", Some(data(&[("password", "old-password")]))),
                version(2, "deleted", None),
                version(3, "destroyed", None),
                version(
                    4,
                    "live",
                    Some(data(&[("password", KV_CANARY), ("user", "app")])),
                ),
            ],
        ),
        secret(
            "App",
            &[],
            vec![version(1, "live", Some(data(&[("which", "upper")])))],
        ),
        secret(
            "app",
            &[],
            vec![version(1, "live", Some(data(&[("which", "lower")])))],
        ),
        secret(
            "team/with space/x",
            &[],
            vec![version(1, "live", Some(data(&[("k", "it's\nmultiline")])))],
        ),
    ] {
        writer.add_kv_secret(&item)?;
    }
    writer.finish()?;
    Ok(())
}

/// The golden archive's content: every entry type, a skipped and a deleted item.
fn write_golden(path: &Path, encryption: &Encryption) -> Result<()> {
    let source = Source {
        vault: "fixture-vault".to_owned(),
        url: "https://fixture-vault.vault.azure.net/".to_owned(),
    };
    let mut writer = ArchiveWriter::create(Destination::File(path.to_owned()), encryption, source)?;
    let secret = |name: &str, version: &str, value: &str, current: bool| SecretRecord {
        name: name.to_owned(),
        version: version.to_owned(),
        value: SecretString::from(value.to_owned()),
        content_type: Some("text/plain".to_owned()),
        tags: BTreeMap::from([("env".to_owned(), "test".to_owned())]),
        attributes: attrs(datetime!(2026-01-02 03:04:05 UTC)),
        current,
    };
    writer.add_secret_version(&secret(
        "db-password",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "old-password",
        false,
    ))?;
    let mut current = secret(
        "db-password",
        "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        CANARY,
        true,
    );
    current.attributes = attrs(datetime!(2026-03-04 05:06:07 UTC));
    writer.add_secret_version(&current)?;
    writer.add_secret_version(&secret(
        "api-token",
        "11112222333344445555666677778888",
        "token with 'quotes' and\nnewline",
        true,
    ))?;
    let mut blob_info = ItemInfo::new(Kind::Secret, "api-token");
    blob_info.version = Some("11112222333344445555666677778888".to_owned());
    blob_info.versions = vec!["11112222333344445555666677778888".to_owned()];
    writer.add_blob(&blob_info, &pseudo_random(7, 2_000))?;

    let mut key = ItemInfo::new(Kind::Key, "signing-key");
    key.version = Some("99990000aaaabbbbccccddddeeeeffff".to_owned());
    key.versions = vec!["99990000aaaabbbbccccddddeeeeffff".to_owned()];
    key.attributes = attrs(datetime!(2026-02-03 04:05:06 UTC));
    writer.add_blob(&key, &pseudo_random(11, 6_000))?;
    writer.add_key_public_jwk(
        "signing-key",
        "99990000aaaabbbbccccddddeeeeffff",
        br#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
    )?;
    writer.add_policy(Kind::Key, "signing-key", br#"{"lifetimeActions":[]}"#)?;

    let mut cert = ItemInfo::new(Kind::Certificate, "web-tls");
    cert.version = Some("cafebabecafebabecafebabecafebabe".to_owned());
    cert.versions = vec!["cafebabecafebabecafebabecafebabe".to_owned()];
    // Large and incompressible, so the archive spans several 64 KiB age chunks.
    writer.add_blob(&cert, &pseudo_random(13, 150_000))?;
    writer.add_certificate_export(
        "web-tls",
        "cafebabecafebabecafebabecafebabe",
        "application/x-pem-file",
        b"-----BEGIN PRIVATE KEY-----\nZml4dHVyZQ==\n-----END PRIVATE KEY-----\n",
    )?;
    writer.add_certificate_public(
        "web-tls",
        "cafebabecafebabecafebabecafebabe",
        &pseudo_random(17, 700),
    )?;
    writer.add_policy(
        Kind::Certificate,
        "web-tls",
        br#"{"keyProps":{"exportable":true}}"#,
    )?;

    writer.record_skipped(
        Kind::Secret,
        "disabled-secret",
        "SecretDisabled: the secret is disabled",
    );
    writer.record_deleted(DeletedItem {
        kind: Kind::Secret,
        name: "old-secret".to_owned(),
        deleted_on: Some(datetime!(2026-05-06 07:08:09 UTC)),
        scheduled_purge: Some(datetime!(2026-08-04 07:08:09 UTC)),
    });
    writer.set_run_window(
        datetime!(2026-06-01 00:00:00 UTC),
        datetime!(2026-06-01 00:00:09 UTC),
    );
    writer.finish()?;
    Ok(())
}

/// A tar stream with a correct manifest and one entry changed afterwards (same size, other
/// bytes): the manifest and the entries disagree.
fn mismatched_tar() -> Result<Vec<u8>> {
    let path = "secrets/db/versions/00000000000000000000000000000001.json";
    let original = br#"{"name":"db","version":"00000000000000000000000000000001","value":"aaaa","current":true}"#;
    let altered = br#"{"name":"db","version":"00000000000000000000000000000001","value":"bbbb","current":true}"#;
    use sha2::Digest;
    let manifest = serde_json::json!({
        "format": "coldvault-archive",
        "format_version": 1,
        "tool": {"name": "coldvault", "version": "0.1.0"},
        "created": "2026-06-01T00:00:00Z",
        "source": {"vault": "fixture-vault", "url": "https://fixture-vault.vault.azure.net/"},
        "counts": {"secrets": 1, "keys": 0, "certificates": 0, "entries": 1, "skipped": 0, "deleted": 0},
        "entries": [{
            "path": path, "type": "secret-version", "kind": "secret", "name": "db",
            "version": "00000000000000000000000000000001", "current": true,
            "size": original.len(), "sha256": hex::encode(sha2::Sha256::digest(original)),
        }],
        "skipped": [], "deleted": []
    });
    let mut tar = TarBuf::default();
    tar.file(
        "coldvault-archive.json",
        br#"{"format":"coldvault-archive","format_version":1}"#,
    );
    tar.file(path, altered);
    tar.file(
        "manifest.json",
        serde_json::to_string(&manifest)?.as_bytes(),
    );
    Ok(tar.finish())
}

/// A secret version entry: its canonical path and content.
fn secret_entry(name: &str, version: &str, value: &str) -> (String, Vec<u8>, String, String) {
    let content = serde_json::json!({
        "name": name, "version": version, "value": value, "current": true,
    });
    (
        format!("secrets/{name}/versions/{version}.json"),
        content.to_string().into_bytes(),
        name.to_owned(),
        version.to_owned(),
    )
}

/// A manifest that lists exactly these secret version entries, with their sizes, digests
/// and the counts `docs/FORMAT.md` defines (items by case-insensitive name).
fn manifest_for(entries: &[&(String, Vec<u8>, String, String)]) -> Result<Vec<u8>> {
    use sha2::Digest;
    let names: std::collections::BTreeSet<String> =
        entries.iter().map(|e| e.2.to_ascii_lowercase()).collect();
    let listed: Vec<serde_json::Value> = entries
        .iter()
        .map(|(path, data, name, version)| {
            serde_json::json!({
                "path": path, "type": "secret-version", "kind": "secret", "name": name,
                "version": version, "current": true,
                "size": data.len(), "sha256": hex::encode(sha2::Sha256::digest(data)),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "format": "coldvault-archive",
        "format_version": 1,
        "tool": {"name": "coldvault", "version": "0.1.0"},
        "created": "2026-06-01T00:00:00Z",
        "source": {"vault": "fixture-vault", "url": "https://fixture-vault.vault.azure.net/"},
        "counts": {"secrets": names.len(), "keys": 0, "certificates": 0,
                   "entries": listed.len(), "skipped": 0, "deleted": 0},
        "entries": listed,
        "skipped": [], "deleted": []
    });
    Ok(serde_json::to_vec(&manifest)?)
}

/// A tar stream assembled header by header, including headers `tar::Builder` refuses.
#[derive(Default)]
struct TarBuf(Vec<u8>);

impl TarBuf {
    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(1_780_000_000);
        header
    }

    fn push(&mut self, mut header: tar::Header, name: &[u8], data: &[u8]) {
        let field = &mut header.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, padding));
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.raw_file(name.as_bytes(), data);
    }

    fn raw_file(&mut self, name: &[u8], data: &[u8]) {
        let header = Self::header(tar::EntryType::Regular, data.len() as u64);
        self.push(header, name, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        let mut header = Self::header(tar::EntryType::Symlink, 0);
        let _ = header.set_link_name(target);
        self.push(header, name.as_bytes(), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }

    /// The stream as an interrupted writer leaves it: no end-of-archive blocks.
    fn finish_without_end(self) -> Vec<u8> {
        self.0
    }
}

/// Deterministic bytes that do not compress (xorshift64*).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Length of the age header plus the 16-byte payload nonce (the header ends with the
/// `--- MAC` line).
fn age_header_len(bytes: &[u8]) -> usize {
    let marker = b"\n--- ";
    let start = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap_or(0);
    let end = bytes[start + 1..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| start + 1 + p + 1)
        .unwrap_or(0);
    end + 16
}
