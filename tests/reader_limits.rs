//! The reader's limits (`docs/FORMAT.md`, reader rule 6): each one refused with exit 4 by
//! every reading command, naming the flag that raises it; each flag honoured to the byte;
//! the defaults low enough that a hostile archive is refused before it costs memory, and
//! high enough that the golden fixture opens.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use coldvault::archive::keys::IdentitySet;
use coldvault::archive::{ArchiveError, ArchiveReader, Decryption, ReadLimits, VerifyError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn golden() -> PathBuf {
    fixtures().join("v1/golden.tar.zst.age")
}

fn test_identity() -> PathBuf {
    fixtures().join("test-identity.txt")
}

fn coldvault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldvault"))
}

fn identity() -> age::x25519::Identity {
    let text = std::fs::read_to_string(test_identity()).expect("identity");
    let line = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("identity line");
    line.parse().expect("identity")
}

fn decryption() -> Decryption {
    let mut set = IdentitySet::new();
    set.add_x25519(identity());
    Decryption::with_identities(set).expect("decryption")
}

/// The golden archive's decompressed tar stream.
fn golden_tar() -> Vec<u8> {
    let file = std::fs::File::open(golden()).expect("golden");
    let decryptor = age::Decryptor::new(file).expect("age");
    let identity = identity();
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .expect("decrypt");
    let mut compressed = Vec::new();
    reader.read_to_end(&mut compressed).expect("read");
    zstd::decode_all(&compressed[..]).expect("zstd")
}

/// What the golden archive holds, measured the way the reader measures it.
struct Measured {
    manifest: u64,
    largest_entry: u64,
    entries: u64,
    total: u64,
}

fn measure_golden() -> Measured {
    let tar = golden_tar();
    let mut measured = Measured {
        manifest: 0,
        largest_entry: 0,
        entries: 0,
        total: tar.len() as u64,
    };
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        measured.entries += 1;
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        match path.as_str() {
            "manifest.json" => measured.manifest = entry.size(),
            "coldvault-archive.json" => {}
            _ => measured.largest_entry = measured.largest_entry.max(entry.size()),
        }
    }
    measured
}

/// Encrypts a raw tar stream to the test identity.
fn seal(tar: &[u8], path: &Path) {
    let compressed = zstd::encode_all(tar, 3).expect("zstd");
    let recipient = identity().to_public();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .expect("encryptor");
    let mut sealed = Vec::new();
    let mut writer = encryptor.wrap_output(&mut sealed).expect("wrap");
    writer.write_all(&compressed).expect("write");
    writer.finish().expect("finish");
    std::fs::write(path, sealed).expect("write");
}

fn header(path: &str, size: u64) -> [u8; 512] {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).expect("path");
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut block = [0u8; 512];
    block.copy_from_slice(header.as_bytes());
    block
}

/// Each limit flag with a value the golden archive breaks.
const LOWERED: [(&str, &str); 4] = [
    ("--max-manifest-size", "1KiB"),
    ("--max-entries", "3"),
    ("--max-entry-size", "100KiB"),
    ("--max-total-size", "64KiB"),
];

#[test]
fn every_reading_command_refuses_each_limit_with_exit_4_naming_its_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.env");
    for (flag, value) in LOWERED {
        let commands: [Vec<&std::ffi::OsStr>; 5] = [
            vec!["verify".as_ref()],
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
                .arg(golden())
                .arg("-i")
                .arg(test_identity())
                .args(&command[1..])
                .args([flag, value])
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(4),
                "{flag} {command:?}: {stderr}"
            );
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 2, "{flag} {command:?}: {stderr}");
            assert!(
                lines[0].starts_with("coldvault: error: archive failed verification: "),
                "{stderr}"
            );
            assert!(
                lines[0].ends_with(&format!("(the limit set by {flag})")),
                "{stderr}"
            );
            assert!(
                lines[1].starts_with(
                    "hint: if the archive comes from a source you trust, raise the limit: "
                ) && lines[1].contains(flag),
                "{stderr}"
            );
            assert!(output.stdout.is_empty(), "{flag} {command:?}");
            assert!(!out.exists(), "{flag}: extract wrote a file");
        }
    }
}

/// Each flag sets its limit exactly: at what the archive holds it opens, one below it is
/// refused with that limit's error.
#[test]
fn each_limit_flag_opens_the_archive_at_its_size_and_refuses_it_one_below() {
    let measured = measure_golden();
    let cases = [
        ("--max-manifest-size", measured.manifest),
        ("--max-entries", measured.entries),
        ("--max-entry-size", measured.largest_entry),
        ("--max-total-size", measured.total),
    ];
    for (flag, exact) in cases {
        let output = coldvault()
            .arg("verify")
            .arg(golden())
            .arg("-i")
            .arg(test_identity())
            .args([flag, &exact.to_string()])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{flag} {exact}: {stderr}");

        let output = coldvault()
            .arg("verify")
            .arg(golden())
            .arg("-i")
            .arg(test_identity())
            .args([flag, &(exact - 1).to_string()])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(4),
            "{flag} {}: {stderr}",
            exact - 1
        );
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[test]
fn golden_fixture_opens_with_the_default_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.env");
    let commands: [Vec<&std::ffi::OsStr>; 3] = [
        vec!["verify".as_ref()],
        vec!["inspect".as_ref()],
        vec![
            "extract".as_ref(),
            "--format".as_ref(),
            "dotenv".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
    ];
    for command in commands {
        let output = coldvault()
            .arg(command[0])
            .arg(golden())
            .arg("-i")
            .arg(test_identity())
            .args(&command[1..])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{command:?}: {stderr}");
    }
    let reader = ArchiveReader::open(&golden(), &decryption()).expect("golden opens");
    assert_eq!(reader.manifest().counts.secrets, 2);
}

/// Issue 11: the default limits let a 1 GiB manifest through, so the reader set out to
/// read and parse it. Now a manifest declared at 1 GiB is refused on its tar header, before
/// a byte of it is read: the archive here holds only 10 bytes of it, and the error is the
/// limit, not the stream ending early.
#[test]
fn a_gigabyte_manifest_is_refused_by_default_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = br#"{"format":"coldvault-archive","format_version":1}"#;
    let mut tar = Vec::new();
    tar.extend_from_slice(&header("coldvault-archive.json", marker.len() as u64));
    tar.extend_from_slice(marker);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&header("manifest.json", 1 << 30));
    tar.extend_from_slice(b"{        ");
    let path = dir.path().join("big-manifest.tar.zst.age");
    seal(&tar, &path);

    let err = ArchiveReader::open(&path, &decryption()).err();
    assert!(
        matches!(
            err,
            Some(ArchiveError::Verify(VerifyError::ManifestTooLarge {
                size: 1073741824,
                ..
            }))
        ),
        "{err:?}"
    );
    let output = coldvault()
        .arg("verify")
        .arg(&path)
        .arg("-i")
        .arg(test_identity())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("manifest.json is 1073741824 bytes, over the limit of 268435456 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("raise the limit: --max-manifest-size 1GiB"),
        "{stderr}"
    );
}

/// Issue 11: the default let 10 million entries through, each adding to the verification
/// pass's table. The pass stops at the first entry over the limit: with the limit at 1,000
/// an archive of 5,000 entries is refused, as one of 10 million is by default.
#[test]
fn ten_million_entries_are_refused_by_default_as_soon_as_the_count_passes_the_limit() {
    assert!(ReadLimits::default().max_entries < 10_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = br#"{"format":"coldvault-archive","format_version":1}"#;
    let mut tar = Vec::new();
    tar.extend_from_slice(&header("coldvault-archive.json", marker.len() as u64));
    tar.extend_from_slice(marker);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    for i in 0..5_000 {
        tar.extend_from_slice(&header(&format!("keys/k{i}/policy.json"), 0));
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let path = dir.path().join("many.tar.zst.age");
    seal(&tar, &path);

    let limits = ReadLimits {
        max_entries: 1_000,
        ..ReadLimits::default()
    };
    let err = ArchiveReader::open(&path, &decryption().with_limits(limits)).err();
    assert!(
        matches!(
            err,
            Some(ArchiveError::Verify(VerifyError::TooManyEntries {
                limit: 1_000
            }))
        ),
        "{err:?}"
    );
    // Raised above the count, the same archive gets past the limit to the next rule it
    // breaks (it has no manifest).
    let limits = ReadLimits {
        max_entries: 10_000,
        ..ReadLimits::default()
    };
    let err = ArchiveReader::open(&path, &decryption().with_limits(limits)).err();
    assert!(
        matches!(
            err,
            Some(ArchiveError::Verify(VerifyError::MissingManifest))
        ),
        "{err:?}"
    );
}

#[test]
fn help_of_every_reading_command_lists_the_limit_flags_with_their_defaults() {
    for command in ["verify", "inspect", "extract", "diff", "restore"] {
        let output = coldvault().args([command, "--help"]).output().expect("run");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command}");
        let limits = text
            .split("Archive limits (raise only for archives you trust):")
            .nth(1)
            .unwrap_or_else(|| panic!("{command} --help has no limits section:\n{text}"));
        // Wrapped lines joined: a default may fall on the next line.
        let limits = limits.split_whitespace().collect::<Vec<_>>().join(" ");
        for (flag, default) in [
            ("--max-manifest-size", "256MiB"),
            ("--max-entries", "1000000"),
            ("--max-entry-size", "64MiB"),
            ("--max-total-size", "16GiB"),
        ] {
            let at = limits
                .find(flag)
                .unwrap_or_else(|| panic!("{command} --help lacks {flag}"));
            let described = limits[at..].split(" --max-").next().unwrap_or_default();
            let described = described.split(']').next().unwrap_or_default();
            assert!(
                described.ends_with(&format!("[default: {default}")),
                "{command}: {described}"
            );
        }
    }
}
