//! What a run tells when the vault cannot be reached or signed in to, end to end with the real
//! binary: a refused connection, a host that does not resolve, an untrusted certificate, a
//! client secret the local Key Vault's issuer refuses, and a service principal missing one
//! variable. Each failure is one `coldvault: error:` line naming the host (or the credential)
//! and the cause, a `hint:` line, exit 1, within the run's `--timeout`; retryable network
//! failures are announced by one warning line at once; a canary client secret never appears.

use std::net::{Ipv4Addr, TcpListener};
use std::process::Output;

use crate::support::{self, TestEmulator};

/// The client secret planted in every run's environment: no output may show it.
const CANARY_SECRET: &str = "canary-client-secret-5f1e9a";

/// A recipient for the archive the run never gets to write.
fn recipient() -> String {
    age::x25519::Identity::generate().to_public().to_string()
}

/// Runs `coldvault` with exactly `env` (and PATH). A run still going after
/// [`support::PATIENCE`] fails the test (and is killed): the runs below use `--timeout` of a
/// few seconds, and the old behaviour retried for two and a half minutes.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(support::PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("coldvault {args:?} still ran after {:?}", support::PATIENCE))
        .expect("coldvault runs")
}

/// A backup of `vault_url` into a fresh folder, with `extra` arguments.
async fn backup(vault_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_string_lossy().into_owned();
    let recipient = recipient();
    let mut args = vec!["backup", "--vault", vault_url, "-r", &recipient, "-o", &out];
    args.extend_from_slice(extra);
    run(&args, env).await
}

/// A service principal whose secret is the canary, for runs that never reach an issuer.
fn principal_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
        ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
        ("AZURE_CLIENT_SECRET", CANARY_SECRET),
    ]
}

/// The `coldvault: error:` line and the `hint:` line of stderr.
fn error_and_hint(output: &Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("coldvault: error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_owned();
    let hint = stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("no hint line in:\n{stderr}"))
        .to_owned();
    (error, hint)
}

fn assert_no_canary(output: &Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !all.contains(CANARY_SECRET),
        "the client secret leaked:\n{all}"
    );
}

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

#[tokio::test]
async fn connection_refused_warns_at_once_and_fails_within_the_timeout() {
    let port = closed_port();
    let host = format!("kv1.vault.localhost:{port}");
    let url = format!("https://{host}/");
    let output = backup(&url, &["--timeout", "3s"], &principal_env()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("coldvault: warning: "))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, not one per retry:\n{stderr}"
    );
    assert!(
        warnings[0].starts_with(&format!(
            "coldvault: warning: {host}: connection refused; retrying until "
        )),
        "{stderr}"
    );
    let (error, hint) = error_and_hint(&output);
    assert_eq!(
        error,
        format!("coldvault: error: {host}: connection refused (gave up after 3 s)")
    );
    assert!(hint.contains("nothing accepts connections"), "{hint}");
    assert!(hint.contains("--timeout"), "{hint}");
    assert_no_canary(&output);
}

#[tokio::test]
async fn a_silent_host_times_out_within_the_timeout() {
    // Accepts connections and never says a word: the TLS handshake never completes.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let host = format!("kv1.vault.localhost:{port}");
    let output = backup(
        &format!("https://{host}/"),
        &["--timeout", "4s"],
        &principal_env(),
    )
    .await;
    silent.abort();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "coldvault: warning: {host}: timed out; retrying until "
        )),
        "{stderr}"
    );
    let (error, hint) = error_and_hint(&output);
    assert_eq!(
        error,
        format!("coldvault: error: {host}: timed out (gave up after 4 s)")
    );
    assert!(hint.contains("no answer in time"), "{hint}");
    assert_no_canary(&output);
}

#[tokio::test]
async fn each_attempt_and_its_wait_is_logged_at_verbose() {
    let port = closed_port();
    let url = format!("https://kv1.vault.localhost:{port}/");
    let output = backup(&url, &["--timeout", "3s", "-v"], &principal_env()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("GET kv1.vault.localhost:{port}/secrets/")),
        "{stderr}"
    );
    assert!(stderr.contains(": attempt 1"), "{stderr}");
    assert!(stderr.contains("after waiting"), "{stderr}");
    assert!(stderr.contains("connection refused after"), "{stderr}");
    assert!(stderr.contains("gave up after 3 s"), "{stderr}");
    // No header or token.
    assert!(!stderr.to_ascii_lowercase().contains("bearer"), "{stderr}");
    assert_no_canary(&output);
}

#[tokio::test]
async fn an_unresolvable_vault_asks_whether_its_name_is_right() {
    // RFC 6761 §6.4: names under .invalid never resolve.
    let url = "https://kv1.vault.invalid/";
    let output = backup(url, &["--timeout", "3s"], &principal_env()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("coldvault: warning: kv1.vault.invalid does not resolve; retrying until "),
        "{stderr}"
    );
    let (error, hint) = error_and_hint(&output);
    assert_eq!(
        error,
        "coldvault: error: kv1.vault.invalid does not resolve: is the vault name right? \
         (gave up after 3 s)"
    );
    assert!(hint.contains("https://NAME.vault.azure.net/"), "{hint}");
    assert!(!stderr.contains("non-transport error"), "{stderr}");
    assert_no_canary(&output);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_at_once_naming_ca_cert() {
    let emulator = TestEmulator::start().await;
    let url = emulator.vault_url("alpha");
    let host = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    // The emulator's issuer and variables, but not its root: COLDVAULT_CA_CERT is not set.
    let ready = emulator.ready();
    let env = [
        ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
        ("AZURE_CLIENT_ID", ready.client_id.as_str()),
        ("AZURE_CLIENT_SECRET", CANARY_SECRET),
        ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
    ];
    let output = backup(&url, &["--timeout", "30s"], &env).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // Final at once: nothing to retry, so no "retrying" warning.
    assert!(!stderr.contains("retrying"), "{stderr}");
    let (error, hint) = error_and_hint(&output);
    assert_eq!(
        error,
        format!(
            "coldvault: error: {host}: its TLS certificate is not trusted \
             (issued by an unknown authority)"
        )
    );
    assert!(hint.contains("--ca-cert"), "{hint}");
    assert!(hint.contains("COLDVAULT_CA_CERT"), "{hint}");
    assert_no_canary(&output);
}

#[tokio::test]
async fn a_wrong_client_secret_names_the_credential_and_the_issuers_answer() {
    let emulator = TestEmulator::start().await;
    let ready = emulator.ready();
    let env = [
        ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
        ("AZURE_CLIENT_ID", ready.client_id.as_str()),
        ("AZURE_CLIENT_SECRET", CANARY_SECRET),
        ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ("COLDVAULT_CA_CERT", ready.ca_cert.as_str()),
    ];
    let output = backup(&emulator.vault_url("alpha"), &["--timeout", "20s"], &env).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let (error, hint) = error_and_hint(&output);
    assert!(
        error.contains(&format!(
            "env: service principal (AZURE_CLIENT_ID={}, AZURE_TENANT_ID={}): \
             the issuer refused the client secret: invalid_client (AADSTS7000215",
            ready.client_id, ready.tenant_id
        )),
        "{error}"
    );
    assert!(
        hint.starts_with("hint: check AZURE_CLIENT_SECRET"),
        "{hint}"
    );
    // Every variable is set: the hint must not ask to set any.
    assert!(!hint.contains("set AZURE_"), "{hint}");
    assert_no_canary(&output);
}

#[tokio::test]
async fn a_missing_client_id_is_named_with_the_variables_that_are_set() {
    let emulator = TestEmulator::start().await;
    let ready = emulator.ready();
    let env = [
        ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
        ("AZURE_CLIENT_SECRET", CANARY_SECRET),
        ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ("COLDVAULT_CA_CERT", ready.ca_cert.as_str()),
    ];
    let output = backup(&emulator.vault_url("alpha"), &["--timeout", "20s"], &env).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let (error, hint) = error_and_hint(&output);
    assert!(
        error.contains(
            "env: AZURE_TENANT_ID and AZURE_CLIENT_SECRET are set but AZURE_CLIENT_ID is not"
        ),
        "{error}"
    );
    assert_eq!(hint, "hint: set AZURE_CLIENT_ID too");
    assert_no_canary(&output);
}
