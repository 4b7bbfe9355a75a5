//! The command-line contract of `inspect`, `verify`, `extract` and `keygen`: help text,
//! usage errors with their hints, exit codes, and safe file creation.

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
    assert!(stderr_of(&output).contains("cannot open /nonexistent/archive.tar.zst.age"));

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
