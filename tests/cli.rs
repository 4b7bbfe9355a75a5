//! The command-line contract of `inspect`, `verify`, `extract` and `keygen`: help text,
//! usage errors with their hints, exit codes, safe file creation, and key material never
//! echoed in messages.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn coldvault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldvault"))
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path)
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_names_the_key_flags() {
    for command in ["inspect", "verify", "extract"] {
        let output = coldvault().args([command, "--help"]).output().expect("run");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success());
        for flag in ["--identity", "--passphrase", "--passphrase-file"] {
            assert!(text.contains(flag), "{command} --help lacks {flag}");
        }
    }
    let output = coldvault()
        .args(["extract", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("dotenv") && text.contains("json") && text.contains("dir"));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let golden = fixture("v1/golden.tar.zst.age");
    let identity = fixture("test-identity.txt");

    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("coldvault: error: no identity given"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pass -i FILE"), "{stderr}");

    let output = coldvault()
        .arg("inspect")
        .arg(&golden)
        .arg("-i")
        .arg(&identity)
        .arg("--passphrase")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("cannot be combined"));

    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .arg("--passphrase")
        .env_remove("COLDVAULT_PASSPHRASE")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("COLDVAULT_PASSPHRASE"));

    let output = coldvault()
        .arg("extract")
        .arg(&golden)
        .arg("-i")
        .arg(&identity)
        .args(["--format", "dir", "-o", "-"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));

    let output = coldvault()
        .args(["extract", "x.age", "--format", "yaml", "-o", "out"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn failures_exit_1_with_a_hint() {
    let golden = fixture("v1/golden.tar.zst.age");
    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .arg("-i")
        .arg(fixture("keys/test-ssh-ed25519.pub"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("not an identity"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");

    let output = coldvault()
        .args(["verify", "/nonexistent/archive.tar.zst.age", "-i"])
        .arg(fixture("test-identity.txt"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_of(&output).contains("/nonexistent/archive.tar.zst.age: archive not found"));

    // A plugin identity goes through age's plugin protocol; a missing plugin is named.
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin_identity = dir.path().join("plugin.txt");
    std::fs::write(&plugin_identity, "AGE-PLUGIN-NOSUCHPLUGIN-1S9DDET\n").expect("write");
    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .arg("-i")
        .arg(&plugin_identity)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("age-plugin-nosuchplugin is not installed"),
        "{stderr}"
    );

    // A passphrase on an archive encrypted to recipients.
    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .arg("--passphrase")
        .env("COLDVAULT_PASSPHRASE", "anything")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_of(&output).contains("hint: open it with -i IDENTITY"));
}

#[test]
fn keygen_writes_a_private_file_and_prints_the_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.txt");
    let output = coldvault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("run");
    assert!(output.status.success());
    let recipient = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let text = std::fs::read_to_string(&key).expect("key file");
    assert!(text.contains(&format!("# public key: {recipient}")));
    assert!(text.contains("AGE-SECRET-KEY-1"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The file is an identity `age` itself accepts.
    let sealed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo hello | age -r {recipient} | age -d -i '{}'",
            key.display()
        ))
        .output()
        .expect("age");
    assert_eq!(String::from_utf8_lossy(&sealed.stdout), "hello\n");

    let again = coldvault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr_of(&again).contains("already exists"));
}

/// Fails when any 16-character window of `secret` shows in `text`: a key must not leak
/// whole, nor in part.
fn assert_no_part_of(secret: &str, text: &str, context: &str) {
    let chars: Vec<char> = secret.chars().filter(|c| !c.is_whitespace()).collect();
    for window in chars.windows(16) {
        let part: String = window.iter().collect();
        // The PEM armour lines are public boilerplate, not key material.
        if part.contains("-----") || part.contains("PRIVATE") {
            continue;
        }
        assert!(!text.contains(&part), "{context}: printed {part:?}: {text}");
    }
}

#[test]
fn private_key_as_recipient_is_refused_and_never_echoed() {
    use age::secrecy::ExposeSecret;
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = age::x25519::Identity::generate();
    let age_key = identity.to_string().expose_secret().to_owned();
    let ssh_key = std::fs::read_to_string(fixture("keys/test-ssh-ed25519")).expect("ssh key");
    let plugin_key = "AGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ7CANARY";
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(
        &identity_file,
        format!(
            "# created: 2026-01-01T00:00:00Z\n# public key: {}\n{age_key}\n",
            identity.to_public()
        ),
    )
    .expect("write");

    let backup = |extra: &[OsString]| {
        coldvault()
            .args(["backup", "--vault", "alpha", "-o"])
            .arg(dir.path())
            .args(extra)
            .output()
            .expect("run")
    };
    let os = |parts: &[&dyn AsRef<std::ffi::OsStr>]| -> Vec<OsString> {
        parts.iter().map(|p| p.as_ref().to_owned()).collect()
    };
    let ssh_file = fixture("keys/test-ssh-ed25519");
    // The lower-case form of an identity is one too (Bech32 ignores case).
    let lowered = age_key.to_ascii_lowercase();
    let cases: [(&str, Vec<OsString>, &str, &str); 8] = [
        (
            "age identity as -r",
            os(&[&"-r", &age_key]),
            &age_key,
            "this recipient is a private key; give its public recipient (age1",
        ),
        (
            "age identity as the second -r",
            os(&[&"-r", &fixture_recipient(), &"-r", &age_key]),
            &age_key,
            "recipient 2 (-r) is a private key",
        ),
        (
            "lower-cased age identity as -r",
            os(&[&"-r", &lowered]),
            &lowered,
            "this recipient is a private key",
        ),
        (
            "plugin identity as -r",
            os(&[&"-r", &plugin_key]),
            plugin_key,
            "this recipient is a private key",
        ),
        (
            "SSH private key as -r",
            os(&[&"--recipient", &ssh_key]),
            &ssh_key,
            "this recipient is a private key",
        ),
        (
            "age identity file as -R",
            os(&[&"-R", &identity_file]),
            &age_key,
            "line 3 is a private key",
        ),
        (
            "SSH private key file as -R",
            os(&[&"-R", &ssh_file]),
            &ssh_key,
            "line 1 is a private key",
        ),
        (
            "age identity as the -R file name",
            os(&[&"-R", &age_key]),
            &age_key,
            "recipients file argument is a key itself",
        ),
    ];
    for (what, args, secret, phrase) in cases {
        let output = backup(&args);
        let stderr = stderr_of(&output);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("coldvault: error: "), "{what}: {stderr}");
        assert!(first.contains(phrase), "{what}: {stderr}");
        assert!(stderr.contains("hint: "), "{what}: {stderr}");
        assert_no_part_of(secret, &stderr, what);
        assert_no_part_of(secret, &stdout, what);
    }

    // An identity pasted where a file name belongs (`-i KEY`) is not echoed either.
    let output = coldvault()
        .arg("verify")
        .arg(fixture("v1/golden.tar.zst.age"))
        .args(["-i", &age_key])
        .output()
        .expect("run");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("identity file argument is a key itself"),
        "{stderr}"
    );
    assert_no_part_of(&age_key, &stderr, "-i KEY");
    let output = backup(&os(&[&"--passphrase-file", &age_key]));
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("passphrase file argument is a key itself"),
        "{stderr}"
    );
    assert_no_part_of(&age_key, &stderr, "--passphrase-file KEY");

    // A malformed recipient shows at most a short prefix, and nothing of what does not
    // even start like a public key.
    let canary = "hunter2-canary-not-a-recipient-5e1b";
    let output = backup(&os(&[&"-r", &canary]));
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid recipient"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let typo = format!("{}XYZ", fixture_recipient());
    let output = backup(&os(&[&"-r", &typo]));
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid recipient \"age1"), "{stderr}");
    assert!(!stderr.contains(&typo[12..]), "{stderr}");
}

/// The test identity's recipient.
fn fixture_recipient() -> String {
    let text = std::fs::read_to_string(fixture("test-identity.txt")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn keygen_creates_missing_parent_folders_with_mode_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join(".config");
    let key = config.join("coldvault/identity.txt");
    let output = coldvault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&config), 0o700);
    assert_eq!(mode(&config.join("coldvault")), 0o700);
    let recipient = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");

    // The folder now exists and the file too: never overwritten.
    let before = std::fs::read(&key).expect("read");
    let again = coldvault()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr_of(&again).contains("already exists"));
    assert_eq!(std::fs::read(&key).expect("read"), before);

    // An existing folder keeps its own mode.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = coldvault()
        .arg("keygen")
        .arg("-o")
        .arg(shared.join("key.txt"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(mode(&shared), 0o755);
}

#[test]
fn missing_archive_exits_1_not_found_in_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir
        .path()
        .join("nowhere/prod-kv-20260101T000000Z.tar.zst.age");
    let shown = missing.display().to_string();
    let out = dir.path().join("out.env");
    let identity = fixture("test-identity.txt");
    let cases: [(&str, Vec<&std::ffi::OsStr>); 5] = [
        ("inspect", vec![]),
        ("verify", vec![]),
        (
            "extract",
            vec![
                "--format".as_ref(),
                "dotenv".as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
        ),
        ("diff", vec!["--vault".as_ref(), "alpha".as_ref()]),
        ("restore", vec!["--vault".as_ref(), "alpha".as_ref()]),
    ];
    for (command, extra) in cases {
        for archive in [missing.clone(), dir.path().join("absent.tar.zst.age")] {
            let output = coldvault()
                .arg(command)
                .arg(&archive)
                .arg("-i")
                .arg(&identity)
                .args(&extra)
                .output()
                .expect("run");
            let stderr = stderr_of(&output);
            assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 2, "{command}: {stderr}");
            assert_eq!(
                lines[0],
                format!("coldvault: error: {}: archive not found", archive.display()),
                "{command}"
            );
            assert!(
                lines[1].starts_with("hint: check the path"),
                "{command}: {stderr}"
            );
            assert!(output.stdout.is_empty(), "{command}");
        }
        // Checked before any key is loaded: a passphrase is never asked for a missing file.
        let output = coldvault()
            .arg(command)
            .arg(&missing)
            .arg("--passphrase")
            .env_remove("COLDVAULT_PASSPHRASE")
            .args(&extra)
            .output()
            .expect("run");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command}: {}",
            stderr_of(&output)
        );
        assert!(stderr_of(&output).contains(&shown), "{command}");
    }
    assert!(!out.exists());

    // A folder is not an archive: the same exit code, its own message.
    let output = coldvault()
        .arg("verify")
        .arg(dir.path())
        .arg("-i")
        .arg(&identity)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_of(&output).contains("is a folder, not an archive file"));
}

#[test]
fn verify_expect_items_fails_below_n_with_exit_4() {
    let golden = fixture("v1/golden.tar.zst.age");
    let identity = fixture("test-identity.txt");
    // The golden archive holds 4 items: 2 secrets, 1 key, 1 certificate.
    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .arg("-i")
        .arg(&identity)
        .args(["--expect-items", "4"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        !stderr_of(&output).contains("warning"),
        "no warning for an archive with items"
    );
    let output = coldvault()
        .arg("verify")
        .arg(&golden)
        .arg("-i")
        .arg(&identity)
        .args(["--expect-items", "5", "--json"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(4));
    assert!(output.stdout.is_empty(), "no success document");
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("coldvault: error: ")
            && stderr.contains(
                "holds 4 items (2 secrets, 1 key, 1 certificate), fewer than --expect-items 5"
            ),
        "{stderr}"
    );
    assert!(stderr.contains("\nhint: "), "{stderr}");
}

#[test]
fn emulator_fault_flag_refuses_an_unknown_kind() {
    let output = coldvault()
        .args(["emulator", "--fault", "explode,count=1"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("coldvault: error: --fault explode,count=1: unknown fault kind"),
        "{stderr}"
    );
}
