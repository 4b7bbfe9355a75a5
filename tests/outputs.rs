//! What commands leave behind them: reports cut short by a reader that stops (`| head`),
//! data streams whose reader stops, `extract --format dir` next to planted symlinks, dotenv
//! variable names a shell accepts, and usage errors that never quote a private key.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use age::secrecy::{ExposeSecret, SecretString};
use coldvault::archive::keys::RecipientSet;
use coldvault::archive::{
    ArchiveWriter, Attributes, Destination, Encryption, SecretRecord, Source,
};

use crate::support::TestEmulator;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn test_identity() -> PathBuf {
    fixtures().join("test-identity.txt")
}

fn golden() -> PathBuf {
    fixtures().join("v1/golden.tar.zst.age")
}

fn test_recipient() -> String {
    let text = std::fs::read_to_string(test_identity()).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap_or_default()
        .to_owned()
}

/// `coldvault ARGS`, signed in to `emulator` when there is one.
fn coldvault(args: &[String], emulator: Option<&TestEmulator>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coldvault"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    if let Some(emulator) = emulator {
        let ready = emulator.ready();
        command
            .env("AZURE_TENANT_ID", &ready.tenant_id)
            .env("AZURE_CLIENT_ID", &ready.client_id)
            .env("AZURE_CLIENT_SECRET", &ready.client_secret)
            .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
            .env("COLDVAULT_CA_CERT", &ready.ca_cert);
    }
    command
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Writes an archive (to the test identity) holding one plain secret per `(name, value)`.
fn archive_with(dir: &Path, secrets: &[(String, String)]) -> PathBuf {
    let mut recipients = RecipientSet::new();
    recipients.add(&test_recipient()).expect("recipient");
    let encryption = Encryption::to_recipients(recipients).expect("encryption");
    let source = Source {
        vault: "pipes".to_owned(),
        url: "https://pipes.vault.azure.net/".to_owned(),
    };
    let mut writer = ArchiveWriter::create(Destination::Dir(dir.to_owned()), &encryption, source)
        .expect("create");
    for (name, value) in secrets {
        writer
            .add_secret_version(&SecretRecord {
                name: name.clone(),
                version: "0123456789abcdef0123456789abcdef".to_owned(),
                value: SecretString::from(value.clone()),
                content_type: None,
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
                current: true,
            })
            .expect("secret");
    }
    writer.finish().expect("finish").path.expect("a path")
}

/// 1,500 secrets with long names: every report about them (inspect's table, diff's, the
/// restore plan) is far larger than a pipe's buffer (64 KiB), so its writer is still
/// writing when the reader goes away.
fn large_archive(dir: &Path) -> PathBuf {
    let secrets: Vec<(String, String)> = (0..1500)
        .map(|i| {
            (
                format!("service-{i:04}-connection-string-for-the-reporting-pipeline-{i:04}"),
                format!("value-{i}"),
            )
        })
        .collect();
    archive_with(dir, &secrets)
}

/// Runs `command` with stdout into a pipe that is closed after the first line: its first
/// line (or first 4 KiB) is read, then the reader is dropped while the command still runs.
fn first_line_then_close(mut command: Command) -> (String, Output) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coldvault starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while first.len() < 4096 && stdout.read(&mut byte).unwrap_or(0) == 1 {
        first.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    drop(stdout);
    let output = child.wait_with_output().expect("coldvault ends");
    (String::from_utf8_lossy(&first).into_owned(), output)
}

/// Runs `command` with stdout into a pipe whose reader is gone before it starts, so its
/// very first write meets the closed pipe, however short the output.
fn closed_from_the_start(mut command: Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    command
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("coldvault runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A report cut short by its reader: no panic, no error line, and the exit code the command
/// earns when its whole output is read.
fn assert_quiet_end(what: &str, cut: &Output, full: &Output) {
    let stderr = stderr_of(cut);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error") && !stderr.contains("pipe"),
        "{what}: {stderr}"
    );
    assert_ne!(cut.status.code(), Some(101), "{what} panicked: {stderr}");
    assert_eq!(
        cut.status.code(),
        full.status.code(),
        "{what}: exit code with a closed pipe differs from a full read ({stderr})"
    );
}

/// `inspect`, `verify`, `keygen -o`, `completions` and `man` piped into a reader that stops
/// early used to panic (exit 101, "failed printing to stdout: Broken pipe").
#[test]
fn broken_pipe_ends_offline_reports_quietly_with_their_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let large = large_archive(dir.path());
    let identity = path_arg(&test_identity());

    let inspect = strings(&["inspect", &path_arg(&large), "-i", &identity]);
    let full = coldvault(&inspect, None).output().expect("run");
    assert_eq!(full.status.code(), Some(0), "{}", stderr_of(&full));
    assert!(full.stdout.len() > 100_000, "the table outgrows the pipe");
    let (first, cut) = first_line_then_close(coldvault(&inspect, None));
    assert!(first.starts_with("archive"), "{first}");
    assert_quiet_end("inspect", &cut, &full);

    let mut inspect_json = inspect.clone();
    inspect_json.push("--json".to_owned());
    let full = coldvault(&inspect_json, None).output().expect("run");
    assert!(
        full.stdout.len() > 100_000,
        "the document outgrows the pipe"
    );
    let (first, cut) = first_line_then_close(coldvault(&inspect_json, None));
    assert!(first.starts_with("{\""), "{first}");
    assert_quiet_end("inspect --json", &cut, &full);

    let keygen_file = dir.path().join("new-identity.txt");
    let one_liners = [
        strings(&["verify", &path_arg(&golden()), "-i", &identity]),
        strings(&["verify", &path_arg(&golden()), "-i", &identity, "--json"]),
        strings(&["keygen", "-o", &path_arg(&keygen_file)]),
        strings(&["completions", "bash"]),
        strings(&["man"]),
    ];
    for args in one_liners {
        let cut = closed_from_the_start(coldvault(&args, None));
        let _ = std::fs::remove_file(&keygen_file);
        let full = coldvault(&args, None).output().expect("run");
        assert!(!full.stdout.is_empty(), "{args:?} prints");
        assert_quiet_end(&args.join(" "), &cut, &full);
    }
    // The pipe's reader going away does not undo the work: the identity was written.
    let cut = closed_from_the_start(coldvault(
        &strings(&["keygen", "-o", &path_arg(&dir.path().join("kept.txt"))]),
        None,
    ));
    assert_eq!(cut.status.code(), Some(0));
    assert!(dir.path().join("kept.txt").is_file());

    // A broken archive still exits 4 with its error when no one reads stdout.
    let broken = fixtures().join("v1/broken/flipped-byte.tar.zst.age");
    let cut = closed_from_the_start(coldvault(
        &strings(&["verify", &path_arg(&broken), "-i", &identity]),
        None,
    ));
    assert_eq!(cut.status.code(), Some(4), "{}", stderr_of(&cut));
    assert!(stderr_of(&cut).starts_with("coldvault: error: archive failed verification"));
}

/// `diff` and `restore --dry-run` into a reader that stops early used to panic (exit 101).
/// They keep their exit codes: diff 1 (differences), the dry run what it predicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pipe_ends_diff_and_restore_dry_run_quietly_with_their_exit_code() {
    let emulator = TestEmulator::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let large = large_archive(dir.path());
    let identity = path_arg(&test_identity());
    let url = emulator.vault_url("alpha");
    let cases = [
        (
            "diff",
            strings(&["diff", &path_arg(&large), "--vault", &url, "-i", &identity]),
        ),
        (
            "restore --dry-run",
            strings(&[
                "restore",
                &path_arg(&large),
                "--vault",
                &url,
                "-i",
                &identity,
                "--dry-run",
            ]),
        ),
    ];
    for (what, args) in cases {
        let emulator = &emulator;
        let (full, first, cut) = tokio::task::block_in_place(|| {
            let full = coldvault(&args, Some(emulator)).output().expect("run");
            let (first, cut) = first_line_then_close(coldvault(&args, Some(emulator)));
            (full, first, cut)
        });
        assert!(
            full.stdout.len() > 100_000,
            "{what}: the table outgrows the pipe"
        );
        assert!(!first.is_empty(), "{what}: a first line was read");
        assert_quiet_end(what, &cut, &full);
    }
}

/// Data on stdout whose reader stops is incomplete: the command fails with one line and a
/// hint saying so (exit 1), never a panic. (These failed before, but with a bare
/// "Broken pipe (os error 32)".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pipe_fails_data_streams_saying_they_are_incomplete() {
    let emulator = TestEmulator::start().await;
    let identity = path_arg(&test_identity());
    let cases = [
        strings(&[
            "extract",
            &path_arg(&golden()),
            "-i",
            &identity,
            "--format",
            "dotenv",
            "-o",
            "-",
        ]),
        strings(&["keygen"]),
        strings(&[
            "backup",
            "--vault",
            &emulator.vault_url("alpha"),
            "-r",
            &test_recipient(),
            "-o",
            "-",
        ]),
    ];
    for args in cases {
        let emulator = &emulator;
        let cut =
            tokio::task::block_in_place(|| closed_from_the_start(coldvault(&args, Some(emulator))));
        let stderr = stderr_of(&cut);
        assert_eq!(cut.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("coldvault: error: "))
            .unwrap_or_default();
        assert!(error.contains("standard output"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("\nhint: the program reading coldvault's output stopped early"),
            "{args:?}: {stderr}"
        );
    }
}

/// `extract --format dir --force` opened each file in place, so a symlink planted in the
/// folder sent a secret through it to wherever it pointed.
#[test]
fn extract_dir_force_never_follows_a_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = archive_with(
        dir.path(),
        &[
            ("db-password".to_owned(), "symlink-canary-77e1".to_owned()),
            ("api-key".to_owned(), "new-api-key".to_owned()),
        ],
    );
    let folder = dir.path().join("secrets");
    std::fs::create_dir(&folder).expect("folder");
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "outside, untouched").expect("outside file");
    std::os::unix::fs::symlink(&outside, folder.join("db-password")).expect("symlink");
    let dangling = dir.path().join("dangling-target");
    std::fs::write(folder.join("api-key"), "old").expect("regular file");

    let extract = |extra: &[&str]| {
        let mut args = strings(&["extract", &path_arg(&archive), "-i"]);
        args.push(path_arg(&test_identity()));
        args.extend(strings(&["--format", "dir", "-o", &path_arg(&folder)]));
        args.extend(strings(extra));
        coldvault(&args, None).output().expect("run")
    };
    let output = extract(&["--force"]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("coldvault: error: ")
            && stderr.contains("db-password is a symbolic link"),
        "{stderr}"
    );
    assert!(!stderr.contains("canary"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&outside).expect("outside"),
        "outside, untouched"
    );
    // Refused before anything was written: the regular file is as it was.
    assert_eq!(
        std::fs::read_to_string(folder.join("api-key")).expect("api-key"),
        "old"
    );
    assert!(
        folder
            .join("db-password")
            .symlink_metadata()
            .expect("link")
            .is_symlink()
    );

    // A dangling link would have created a file outside.
    std::fs::remove_file(folder.join("db-password")).expect("unlink");
    std::os::unix::fs::symlink(&dangling, folder.join("db-password")).expect("symlink");
    assert_eq!(extract(&["--force"]).status.code(), Some(1));
    assert!(
        !dangling.exists(),
        "nothing created through a dangling link"
    );

    // With the link gone, --force replaces the regular file through a rename: a new file,
    // mode 0600, and no temporary file left.
    std::fs::remove_file(folder.join("db-password")).expect("unlink");
    let old_inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(folder.join("api-key")).expect("meta"),
    );
    let output = extract(&["--force"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let meta = std::fs::symlink_metadata(folder.join("api-key")).expect("meta");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_ne!(std::os::unix::fs::MetadataExt::ino(&meta), old_inode);
    assert_eq!(
        std::fs::read_to_string(folder.join("api-key")).expect("api-key"),
        "new-api-key"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("db-password")).expect("db-password"),
        "symlink-canary-77e1"
    );
    let names: Vec<String> = std::fs::read_dir(&folder)
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// clap quoted a stray argument in full, so a private key pasted in the wrong place was
/// printed in "unexpected argument '…' found".
#[test]
fn clap_errors_never_echo_a_private_key() {
    let canary = age::x25519::Identity::generate()
        .to_string()
        .expose_secret()
        .to_owned();
    let recipient = test_recipient();
    let golden = path_arg(&golden());
    let identity = path_arg(&test_identity());
    let (canary, recipient, golden, identity) = (
        canary.as_str(),
        recipient.as_str(),
        golden.as_str(),
        identity.as_str(),
    );
    let attempts: [Vec<&str>; 8] = [
        vec!["backup", "--vault", "v", "-r", recipient, canary],
        vec!["restore", golden, "--vault", "v", "-i", identity, canary],
        vec!["diff", golden, "--vault", "v", "-i", identity, canary],
        vec!["inspect", golden, "-i", identity, canary],
        vec!["verify", golden, canary],
        vec!["extract", golden, "--format", "json", "-o", "x", canary],
        vec!["keygen", canary],
        vec![canary],
    ];
    let lower = canary.to_ascii_lowercase();
    let tail = &canary[canary.len() - 20..];
    for args in attempts {
        let output = coldvault(&strings(&args), None).output().expect("run");
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{}: {shown}", args[0]);
        assert!(
            !shown.contains(tail) && !shown.to_ascii_lowercase().contains(&lower),
            "the key leaked: {shown}"
        );
        assert!(shown.starts_with("error: "), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(shown.contains("--help"), "clap's pointer kept: {shown}");
    }
}

/// A secret named `1password` became the dotenv line `1PASSWORD=…`, which `sh` rejects.
#[test]
fn dotenv_names_are_posix_shell_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = archive_with(
        dir.path(),
        &[
            ("1password".to_owned(), "one pass".to_owned()),
            ("db-password".to_owned(), "it's $HOME".to_owned()),
            ("-leading-dash".to_owned(), "dash".to_owned()),
        ],
    );
    let env = dir.path().join("secrets.env");
    let mut args = strings(&["extract", &path_arg(&archive), "-i"]);
    args.push(path_arg(&test_identity()));
    args.extend(strings(&["--format", "dotenv", "-o", &path_arg(&env)]));
    let output = coldvault(&args, None).output().expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = std::fs::read_to_string(&env).expect("dotenv");
    assert!(text.contains("_1PASSWORD='one pass'\n"), "{text}");
    assert!(text.contains("_LEADING_DASH='dash'\n"), "{text}");
    let script = format!(
        "set -eu; . '{}'; printf '%s|%s|%s' \"$_1PASSWORD\" \"$DB_PASSWORD\" \"$_LEADING_DASH\"",
        env.display()
    );
    let sourced = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh runs");
    assert!(sourced.status.success(), "{}", stderr_of(&sourced));
    assert_eq!(
        String::from_utf8_lossy(&sourced.stdout),
        "one pass|it's $HOME|dash"
    );
}

/// Two secrets that map to one variable (`1x` and `-1x` are both `_1X`) would make the
/// later one silently win: refused, both named, nothing written.
#[test]
fn dotenv_refuses_two_secrets_with_one_variable_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = archive_with(
        dir.path(),
        &[
            ("1x".to_owned(), "clash-canary-a".to_owned()),
            ("-1x".to_owned(), "clash-canary-b".to_owned()),
        ],
    );
    let env = dir.path().join("secrets.env");
    for out in [path_arg(&env), "-".to_owned()] {
        let mut args = strings(&["extract", &path_arg(&archive), "-i"]);
        args.push(path_arg(&test_identity()));
        args.extend(strings(&["--format", "dotenv", "-o", &out]));
        let output = coldvault(&args, None).output().expect("run");
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some("coldvault: error: secrets -1x and 1x would both be the dotenv variable _1X"),
            "{stderr}"
        );
        assert!(
            lines.get(1).is_some_and(|l| l.starts_with("hint: ")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("canary") && output.stdout.is_empty(),
            "{stderr}"
        );
    }
    assert!(!env.exists());
}
