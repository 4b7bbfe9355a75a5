//! The archive format end to end: round trips with every kind of age key, interop with
//! Debian's `age`/`zstd`/`tar` both ways, every broken fixture refused with its own error,
//! and the canary check (no secret value in `inspect`/`verify` output).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::{ExposeSecret, SecretString};
use coldvault::archive::keys::{IdentitySet, NoPrompt, Prompt, RecipientSet};
use coldvault::archive::{
    ArchiveError, ArchiveReader, ArchiveWriter, Attributes, Decryption, Destination, Encryption,
    EntryData, ItemInfo, Kind, SecretRecord, Source, VerifyError,
};

/// The golden archive's planted value (see `examples/make_fixtures.rs`).
const GOLDEN_CANARY: &str = "golden-canary-9c41e7";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn test_identity() -> PathBuf {
    fixtures().join("test-identity.txt")
}

fn test_recipient() -> String {
    let text = std::fs::read_to_string(test_identity()).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap_or_default()
        .to_owned()
}

fn coldvault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldvault"))
}

struct Fixed(&'static str);

impl Prompt for Fixed {
    fn passphrase(&self, _description: &str) -> Option<SecretString> {
        Some(SecretString::from(self.0.to_owned()))
    }
}

fn source() -> Source {
    Source {
        vault: "roundtrip".to_owned(),
        url: "https://roundtrip.vault.azure.net/".to_owned(),
    }
}

/// Writes a small archive with a secret (canary value) and a key blob.
fn write_sample(dir: &Path, encryption: &Encryption) -> PathBuf {
    let mut writer = ArchiveWriter::create(Destination::Dir(dir.to_owned()), encryption, source())
        .expect("create");
    writer
        .add_secret_version(&SecretRecord {
            name: "db".to_owned(),
            version: "0123456789abcdef0123456789abcdef".to_owned(),
            value: SecretString::from("roundtrip-canary-51d2".to_owned()),
            content_type: Some("text/plain".to_owned()),
            tags: BTreeMap::from([("team".to_owned(), "ops".to_owned())]),
            attributes: Attributes {
                enabled: Some(true),
                ..Attributes::default()
            },
            current: true,
        })
        .expect("secret");
    let mut key = ItemInfo::new(Kind::Key, "signing");
    key.versions = vec!["aa".to_owned(), "bb".to_owned()];
    writer.add_blob(&key, &[7u8; 3000]).expect("blob");
    writer.record_skipped(Kind::Secret, "off", "SecretDisabled");
    let summary = writer.finish().expect("finish");
    assert_eq!(summary.counts.secrets, 1);
    assert_eq!(summary.counts.keys, 1);
    let path = summary.path.expect("a path");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        name.starts_with("roundtrip-") && name.ends_with("Z.tar.zst.age"),
        "{name}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    path
}

/// Opens the archive and checks every entry's content.
fn check_sample(path: &Path, decryption: &Decryption) {
    let reader = ArchiveReader::open(path, decryption).expect("open");
    assert_eq!(reader.manifest().skipped.len(), 1);
    let mut seen = 0;
    for entry in reader.entries() {
        let entry = entry.expect("entry");
        match entry.data {
            EntryData::Secret(record) => {
                assert_eq!(record.value.expose_secret(), "roundtrip-canary-51d2");
                assert_eq!(record.tags.get("team").map(String::as_str), Some("ops"));
            }
            EntryData::Bytes(bytes) => assert_eq!(bytes, vec![7u8; 3000]),
            EntryData::Private(_) => panic!("no export was written"),
        }
        seen += 1;
    }
    assert_eq!(seen, 2);
}

fn identities(files: &[&str], prompt: &dyn Prompt) -> Decryption {
    let mut set = IdentitySet::new();
    for file in files {
        set.add_file(&fixtures().join(file), prompt)
            .expect("identity");
    }
    Decryption::with_identities(set).expect("decryption")
}

#[test]
fn several_recipients_each_open_the_archive_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut recipients = RecipientSet::new();
    recipients.add(&test_recipient()).expect("x25519");
    for key in [
        "test-ssh-ed25519",
        "test-ssh-ed25519-protected",
        "test-ssh-rsa",
    ] {
        recipients
            .add_file(&fixtures().join("keys").join(format!("{key}.pub")))
            .expect("ssh recipient");
    }
    let path = write_sample(
        dir.path(),
        &Encryption::to_recipients(recipients).expect("enc"),
    );

    check_sample(&path, &identities(&["test-identity.txt"], &NoPrompt));
    check_sample(&path, &identities(&["keys/test-ssh-ed25519"], &NoPrompt));
    check_sample(&path, &identities(&["keys/test-ssh-rsa"], &NoPrompt));
    check_sample(
        &path,
        &identities(
            &["keys/test-ssh-ed25519-protected"],
            &Fixed("test-only-passphrase"),
        ),
    );

    let mut locked = IdentitySet::new();
    let err = locked
        .add_file(
            &fixtures().join("keys/test-ssh-ed25519-protected"),
            &NoPrompt,
        )
        .err();
    assert!(
        matches!(err, Some(ArchiveError::SshKeyLocked(_))),
        "{err:?}"
    );
}

#[test]
fn passphrase_round_trip_and_wrong_passphrase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let encryption =
        Encryption::with_passphrase(SecretString::from("correct horse".to_owned())).expect("enc");
    let path = write_sample(dir.path(), &encryption);
    let right = Decryption::with_passphrase(SecretString::from("correct horse".to_owned()));
    check_sample(&path, &right.expect("dec"));

    let wrong = Decryption::with_passphrase(SecretString::from("battery staple".to_owned()));
    let err = ArchiveReader::open(&path, &wrong.expect("dec")).err();
    assert!(
        matches!(err, Some(ArchiveError::WrongPassphrase)),
        "{err:?}"
    );

    let err = ArchiveReader::open(&path, &identities(&["test-identity.txt"], &NoPrompt)).err();
    assert!(
        matches!(err, Some(ArchiveError::PassphraseArchive)),
        "{err:?}"
    );
}

#[test]
fn writer_never_replaces_a_file_and_leaves_nothing_when_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut recipients = RecipientSet::new();
    recipients.add(&test_recipient()).expect("x25519");
    let encryption = Encryption::to_recipients(recipients).expect("enc");

    let taken = dir.path().join("taken.tar.zst.age");
    std::fs::write(&taken, b"keep me").expect("write");
    let err = ArchiveWriter::create(Destination::File(taken.clone()), &encryption, source()).err();
    assert!(
        matches!(err, Some(ArchiveError::OutputExists(_))),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&taken).expect("read"), b"keep me");

    let target = dir.path().join("unfinished.tar.zst.age");
    let writer = ArchiveWriter::create(Destination::File(target.clone()), &encryption, source())
        .expect("create");
    drop(writer);
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(left.len(), 1, "only taken.tar.zst.age remains");
    assert!(!target.exists());
}

fn sh(script: &str, dir: &Path) {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn interop_with_age_zstd_and_tar_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = fixtures().join("v1/golden.tar.zst.age");
    let identity = test_identity();
    // coldvault → standard tools.
    sh(
        &format!(
            "age -d -i '{}' '{}' | zstd -d | tar -x",
            identity.display(),
            golden.display()
        ),
        dir.path(),
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("manifest.json")).expect("manifest.json"),
    )
    .expect("json");
    assert_eq!(manifest["format_version"], 1);
    let secret = std::fs::read_to_string(
        dir.path()
            .join("secrets/db-password/versions/a1b2c3d4e5f60718293a4b5c6d7e8f90.json"),
    )
    .expect("secret entry");
    assert!(secret.contains(GOLDEN_CANARY));

    // Standard tools → coldvault, following FORMAT.md's order: marker first, manifest last.
    let assembled = dir.path().join("assembled.tar.zst.age");
    sh(
        &format!(
            "tar -c coldvault-archive.json secrets keys certificates manifest.json | zstd -q | age -r '{}' > '{}'",
            test_recipient(),
            assembled.display()
        ),
        dir.path(),
    );
    let output = coldvault()
        .arg("verify")
        .arg(&assembled)
        .arg("-i")
        .arg(&identity)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_broken_fixture_fails_with_its_own_error() {
    let cases: [(&str, i32, &str); 13] = [
        ("truncated", 4, "truncated"),
        ("flipped-byte", 4, "does not authenticate"),
        ("wrong-key", 1, "no identity matches"),
        ("unknown-version", 4, "unsupported format version 3"),
        ("path-traversal", 4, "parent-directory component"),
        ("absolute-path", 4, "absolute path"),
        ("symlink", 4, "symbolic link"),
        ("oversized-entry", 4, "over the limit of"),
        ("decompression-bomb", 4, "decompression bomb"),
        ("manifest-mismatch", 4, "does not match its SHA-256"),
        (
            "case-duplicate-names",
            4,
            r#"secret names "api-key" and "API-KEY" differ only in case"#,
        ),
        ("duplicate-entry", 4, "appears twice"),
        (
            "missing-tar-end",
            4,
            "ends without its end-of-archive blocks",
        ),
    ];
    let mut first_lines = std::collections::HashSet::new();
    for (name, code, phrase) in cases {
        let path = fixtures().join(format!("v1/broken/{name}.tar.zst.age"));
        let output = coldvault()
            .arg("verify")
            .arg(&path)
            .arg("-i")
            .arg(test_identity())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{name}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("coldvault: error: "), "{name}: {stderr}");
        assert!(first.contains(phrase), "{name}: {first}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.lines().count() <= 2, "{name}: {stderr}");
        assert!(
            first_lines.insert(first.to_owned()),
            "{name}: same error as another fixture"
        );
        assert!(output.stdout.is_empty(), "{name}");
    }
    // A hostile archive never leaves files behind, and `..` never escapes: nothing outside.
    assert!(!Path::new("/tmp/coldvault-evil.txt").exists());
}

#[test]
fn inspect_and_verify_never_print_values_but_extract_does() {
    let golden = fixtures().join("v1/golden.tar.zst.age");
    for args in [
        vec!["inspect"],
        vec!["inspect", "--json"],
        vec!["verify"],
        vec!["verify", "--json"],
        vec!["-vv", "inspect"],
    ] {
        let output = coldvault()
            .args(&args)
            .arg(&golden)
            .arg("-i")
            .arg(test_identity())
            .output()
            .expect("run");
        assert!(output.status.success(), "{args:?}");
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(GOLDEN_CANARY), "{args:?} printed the value");
            assert!(!text.contains("old-password"), "{args:?} printed the value");
        }
        if args.contains(&"--json") {
            let doc: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("one JSON document");
            assert_eq!(doc["schema_version"], 1);
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("secrets.env");
    let output = coldvault()
        .arg("extract")
        .arg(&golden)
        .arg("-i")
        .arg(test_identity())
        .args(["--format", "dotenv", "-o"])
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains(GOLDEN_CANARY));
    let text = std::fs::read_to_string(&out).expect("extracted");
    assert!(
        text.contains(&format!("DB_PASSWORD='{GOLDEN_CANARY}'")),
        "{text}"
    );
    assert!(!text.contains("old-password"), "only the current version");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Round trip of the dotenv quoting through a shell.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(". '{}' && printf %s \"$API_TOKEN\"", out.display()))
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "token with 'quotes' and\nnewline"
    );

    let again = coldvault()
        .arg("extract")
        .arg(&golden)
        .arg("-i")
        .arg(test_identity())
        .args(["--format", "json", "-o"])
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1), "no overwrite without --force");

    let folder = dir.path().join("secrets");
    let output = coldvault()
        .arg("extract")
        .arg(&golden)
        .arg("-i")
        .arg(test_identity())
        .args(["--format", "dir", "-o"])
        .arg(&folder)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = std::fs::read_to_string(folder.join("db-password")).expect("secret file");
    assert_eq!(value, GOLDEN_CANARY);
    let mode = std::fs::metadata(folder.join("db-password"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let output = coldvault()
        .arg("extract")
        .arg(&golden)
        .arg("-i")
        .arg(test_identity())
        .args(["--format", "json", "-o", "-"])
        .output()
        .expect("run");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(doc["db-password"], GOLDEN_CANARY);
    assert_eq!(doc["api-token"], "token with 'quotes' and\nnewline");
}

#[test]
fn the_first_entry_must_be_the_format_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = fixtures().join("v1/golden.tar.zst.age");
    sh(
        &format!(
            "age -d -i '{}' '{}' | zstd -d | tar -x",
            test_identity().display(),
            golden.display()
        ),
        dir.path(),
    );
    let wrong_order = dir.path().join("wrong-order.tar.zst.age");
    sh(
        &format!(
            "tar -c manifest.json coldvault-archive.json secrets | zstd -q | age -r '{}' > '{}'",
            test_recipient(),
            wrong_order.display()
        ),
        dir.path(),
    );
    let reader = ArchiveReader::open(&wrong_order, &identities(&["test-identity.txt"], &NoPrompt));
    assert!(matches!(
        reader.err(),
        Some(ArchiveError::Verify(
            VerifyError::MissingFormatMarker { .. }
        ))
    ),);
}

/// Every command that reads an archive goes through `ArchiveReader`, so each refuses what
/// `verify` refuses, with exit 4 and the same one-line reason, before it writes anything or
/// reaches a vault. (Before: `verify` passed names that differ only in case and a tar stream
/// without its end, `extract` kept one of the two secrets, `diff` called the other changed.)
#[test]
fn case_duplicates_duplicate_entries_and_missing_tar_end_are_refused_by_every_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures_and_reasons = [
        (
            "case-duplicate-names",
            r#"secret names "api-key" and "API-KEY" differ only in case"#,
        ),
        ("duplicate-entry", "appears twice"),
        ("missing-tar-end", "ends without its end-of-archive blocks"),
    ];
    for (name, reason) in fixtures_and_reasons {
        let path = fixtures().join(format!("v1/broken/{name}.tar.zst.age"));
        let out = dir.path().join(format!("{name}.env"));
        let commands: [Vec<&std::ffi::OsStr>; 6] = [
            vec!["verify".as_ref()],
            vec!["inspect".as_ref()],
            vec!["inspect".as_ref(), "--json".as_ref()],
            vec![
                "extract".as_ref(),
                "--format".as_ref(),
                "dotenv".as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            vec!["diff".as_ref(), "--vault".as_ref(), "alpha".as_ref()],
            vec![
                "restore".as_ref(),
                "--vault".as_ref(),
                "alpha".as_ref(),
                "--dry-run".as_ref(),
            ],
        ];
        for command in commands {
            let output = coldvault()
                .arg(command[0])
                .arg(&path)
                .arg("-i")
                .arg(test_identity())
                .args(&command[1..])
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(4),
                "{name} {command:?}: {stderr}"
            );
            let first = stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("coldvault: error: archive failed verification: "),
                "{name} {command:?}: {stderr}"
            );
            assert!(first.contains(reason), "{name} {command:?}: {first}");
            assert!(output.stdout.is_empty(), "{name} {command:?}");
        }
        assert!(!out.exists(), "{name}: extract wrote a file");

        // The library reader refuses it too, with the typed error.
        let err = ArchiveReader::open(&path, &identities(&["test-identity.txt"], &NoPrompt)).err();
        let expected = matches!(
            (name, &err),
            (
                "case-duplicate-names",
                Some(ArchiveError::Verify(VerifyError::NameCaseClash { .. }))
            ) | (
                "duplicate-entry",
                Some(ArchiveError::Verify(VerifyError::DuplicateEntry(_)))
            ) | (
                "missing-tar-end",
                Some(ArchiveError::Verify(VerifyError::MissingTarEnd))
            )
        );
        assert!(expected, "{name}: {err:?}");
    }
}

/// The end-of-archive rule takes what standard tools write (GNU tar pads to 10 KiB) and
/// refuses a stream cut anywhere before its two zero blocks, even after one of them.
#[test]
fn tar_end_blocks_are_required_and_standard_padding_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = fixtures().join("v1/golden.tar.zst.age");
    sh(
        &format!(
            "age -d -i '{}' '{}' | zstd -d > golden.tar && mkdir x && cd x && tar -xf ../golden.tar \
             && tar -cf ../gnu.tar coldvault-archive.json secrets keys certificates manifest.json",
            test_identity().display(),
            golden.display()
        ),
        dir.path(),
    );
    let tar = std::fs::read(dir.path().join("golden.tar")).expect("golden.tar");
    let gnu = std::fs::read(dir.path().join("gnu.tar")).expect("gnu.tar");
    // coldvault's writer ends with exactly two zero blocks.
    assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));
    let mut content_end = tar.len() - 1024;
    while content_end > 0 && tar[content_end - 1] == 0 {
        content_end -= 1;
    }
    let block_end = content_end.div_ceil(512) * 512;
    let cases: [(&str, &[u8], bool); 5] = [
        ("coldvault's own", &tar, true),
        ("GNU tar's, padded to 10 KiB", &gnu, true),
        ("no end blocks", &tar[..block_end], false),
        ("one end block", &tar[..block_end + 512], false),
        ("a partial second block", &tar[..block_end + 1000], false),
    ];
    for (what, bytes, ok) in cases {
        let path = dir.path().join("case.tar.zst.age");
        let _ = std::fs::remove_file(&path);
        let compressed = zstd::encode_all(bytes, 3).expect("zstd");
        let recipient: age::x25519::Recipient = test_recipient().parse().expect("recipient");
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .expect("encryptor");
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).expect("wrap");
        std::io::Write::write_all(&mut writer, &compressed).expect("write");
        writer.finish().expect("finish");
        std::fs::write(&path, sealed).expect("write");
        let result = ArchiveReader::open(&path, &identities(&["test-identity.txt"], &NoPrompt));
        match (ok, result) {
            (true, Ok(_)) => {}
            (false, Err(ArchiveError::Verify(VerifyError::MissingTarEnd))) => {}
            (_, other) => panic!("{what}: {:?}", other.map(|r| r.stats())),
        }
    }
}

/// A NUL byte cannot live in an environment variable, so no dotenv reader can give it back:
/// `extract --format dotenv` refuses it naming the secret (never the value), writes nothing,
/// and points to the formats that carry it.
#[test]
fn dotenv_refuses_a_nul_byte_naming_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut recipients = RecipientSet::new();
    recipients.add(&test_recipient()).expect("x25519");
    let encryption = Encryption::to_recipients(recipients).expect("enc");
    let mut writer = ArchiveWriter::create(
        Destination::Dir(dir.path().to_owned()),
        &encryption,
        source(),
    )
    .expect("create");
    let value = "before\0after-nul-canary-3c9d";
    for (name, value) in [("plain", "fine"), ("nul-secret", value)] {
        writer
            .add_secret_version(&SecretRecord {
                name: name.to_owned(),
                version: "0123456789abcdef0123456789abcdef".to_owned(),
                value: SecretString::from(value.to_owned()),
                content_type: None,
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
                current: true,
            })
            .expect("secret");
    }
    let archive = writer.finish().expect("finish").path.expect("path");

    let extract = |format: &str, out: &Path| {
        coldvault()
            .arg("extract")
            .arg(&archive)
            .arg("-i")
            .arg(test_identity())
            .args(["--format", format, "-o"])
            .arg(out)
            .output()
            .expect("run")
    };
    for out in [dir.path().join("secrets.env"), PathBuf::from("-")] {
        let output = extract("dotenv", &out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{stderr}");
        assert!(
            lines[0].starts_with("coldvault: error: secret nul-secret holds a NUL byte"),
            "{stderr}"
        );
        assert!(
            lines[1].contains("--format json") && lines[1].contains("--format dir"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("nul-canary") && !stderr.contains("before"),
            "{stderr}"
        );
        assert!(output.stdout.is_empty(), "nothing written to stdout");
        if out != Path::new("-") {
            assert!(!out.exists(), "no dotenv file written");
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        1,
        "no temporary file left beside the archive"
    );

    // JSON and dir carry the NUL exactly.
    let json = dir.path().join("secrets.json");
    assert_eq!(extract("json", &json).status.code(), Some(0));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("parse");
    assert_eq!(doc["nul-secret"], value);
    let folder = dir.path().join("secrets");
    assert_eq!(extract("dir", &folder).status.code(), Some(0));
    assert_eq!(
        std::fs::read(folder.join("nul-secret")).expect("file"),
        value.as_bytes()
    );
}
