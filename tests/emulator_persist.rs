//! The local Key Vault's state directory and request hygiene: writes are saved write-behind
//! (after a bounded delay, at shutdown, on `POST /_emulator/reset`), reads and backups write
//! nothing, a failed save leaves the previous `vaults.json` intact, and a malformed `Host` is a
//! 400 in Azure's envelope, sent over raw TLS because HTTP clients refuse to send one.

use std::path::Path;
use std::sync::Arc;

use coldvault::emulator::EmulatorConfig;
use coldvault::emulator::persist::Persister;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestEmulator, default_vaults};

const API: &str = "api-version=7.6";

fn config(state_dir: &Path) -> EmulatorConfig {
    EmulatorConfig {
        vaults: default_vaults(),
        state_dir: Some(state_dir.to_path_buf()),
        ..EmulatorConfig::default()
    }
}

fn persister(emu: &TestEmulator) -> &Persister {
    emu.running
        .state()
        .persister
        .as_ref()
        .expect("a state directory")
}

/// Sends `method` to `path` on vault `alpha` with a fresh token; answers status and JSON body.
async fn call(emu: &TestEmulator, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let token = emu.token().await;
    let mut request = emu
        .http
        .request(method, emu.url("alpha", &format!("{path}?{API}")))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request answered");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn set_secret(emu: &TestEmulator, name: &str, value: &str) {
    let (status, body) = call(
        emu,
        Method::PUT,
        &format!("/secrets/{name}"),
        Some(json!({ "value": value })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The value of secret `name` in vault `alpha` of the `vaults.json` on disk, if it is there.
fn saved_secret(state_dir: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(state_dir.join("vaults.json")).ok()?;
    let saved: Value = serde_json::from_slice(&bytes).expect("vaults.json is whole JSON");
    let versions = saved["vaults"]["alpha"]["secrets"]["live"][name]["versions"].as_array()?;
    versions.last()?["payload"]["data"]["value"]
        .as_str()
        .map(str::to_string)
}

/// Files in the state directory other than the ones it is meant to hold (a temp file left by a
/// failed save would show here).
fn stray_files(state_dir: &Path) -> Vec<String> {
    let expected = [
        "ca.pem",
        "ca-key.pem",
        "issuer-key.pem",
        "world.key",
        "vaults.json",
    ];
    std::fs::read_dir(state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !expected.contains(&name.as_str()))
        .collect()
}

#[tokio::test]
async fn write_is_saved_after_the_write_behind_delay_and_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let emu = TestEmulator::start_with(config(dir.path())).await;
    let before = persister(&emu).saves();
    set_secret(&emu, "delayed", "saved-later").await;
    // No flush is asked for: the write-behind task alone must save it. The bound is generous
    // so a loaded machine cannot fail it; the delay itself is 250 ms.
    // The save count moves once the renamed file is in place.
    crate::support::wait_until("the write-behind task to save", async || {
        persister(&emu).saves() != before
    })
    .await;
    assert_eq!(
        saved_secret(dir.path(), "delayed").as_deref(),
        Some("saved-later")
    );
    assert!(!persister(&emu).is_pending());
    // Dropped without a shutdown: what the file holds is what comes back.
    drop(emu);

    let emu = TestEmulator::start_with(config(dir.path())).await;
    let (status, body) = call(&emu, Method::GET, "/secrets/delayed", None).await;
    assert_eq!((status, body["value"].as_str()), (200, Some("saved-later")));
    emu.running.shutdown().await;
}

#[tokio::test]
async fn write_is_saved_at_shutdown_without_waiting_for_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let emu = TestEmulator::start_with(config(dir.path())).await;
    set_secret(&emu, "at-shutdown", "kept").await;
    emu.running.shutdown().await;
    assert_eq!(
        saved_secret(dir.path(), "at-shutdown").as_deref(),
        Some("kept")
    );

    let emu = TestEmulator::start_with(config(dir.path())).await;
    let (status, body) = call(&emu, Method::GET, "/secrets/at-shutdown", None).await;
    assert_eq!((status, body["value"].as_str()), (200, Some("kept")));
    emu.running.shutdown().await;
}

#[tokio::test]
async fn reset_saves_before_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let emu = TestEmulator::start_with(config(dir.path())).await;
    set_secret(&emu, "before-reset", "durable").await;
    let (status, _) = emu.admin(Method::POST, "/reset", None).await;
    assert_eq!(status, 204);
    assert!(!persister(&emu).is_pending());
    assert_eq!(
        saved_secret(dir.path(), "before-reset").as_deref(),
        Some("durable")
    );
    emu.running.shutdown().await;
}

#[tokio::test]
async fn get_list_and_backup_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let emu = TestEmulator::start_with(config(dir.path())).await;
    set_secret(&emu, "read-me", "v1").await;
    let (status, flushed) = emu.admin(Method::POST, "/persist", None).await;
    assert_eq!(status, 200, "{flushed}");
    assert_eq!(flushed["pending"], false);
    let saves = persister(&emu).saves();
    let file = dir.path().join("vaults.json");
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let contents = std::fs::read(&file).unwrap();

    let (status, _) = call(&emu, Method::GET, "/secrets/read-me", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&emu, Method::GET, "/secrets", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&emu, Method::GET, "/secrets/read-me/versions", None).await;
    assert_eq!(status, 200);
    let (status, blob) = call(&emu, Method::POST, "/secrets/read-me/backup", None).await;
    assert_eq!(status, 200);
    assert!(blob["value"].is_string());
    // A failed write changes nothing either.
    let (status, _) = call(
        &emu,
        Method::PUT,
        "/secrets/bad_name",
        Some(json!({"value": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    assert!(
        !persister(&emu).is_pending(),
        "a read or a backup marked the state changed"
    );
    let (status, flushed) = emu.admin(Method::POST, "/persist", None).await;
    assert_eq!(status, 200);
    assert_eq!(flushed["saves"].as_u64(), Some(saves));
    assert_eq!(persister(&emu).saves(), saves, "nothing was written");
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(std::fs::read(&file).unwrap(), contents);
    emu.running.shutdown().await;
}

#[tokio::test]
async fn failed_save_leaves_the_previous_vaults_json_intact_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let emu = TestEmulator::start_with(config(dir.path())).await;
    set_secret(&emu, "first", "one").await;
    let (status, _) = emu.admin(Method::POST, "/persist", None).await;
    assert_eq!(status, 200);
    let previous = std::fs::read(dir.path().join("vaults.json")).unwrap();

    // Every save now dies halfway through its temporary file, as in a crash or a full disk.
    persister(&emu).fail_next_saves(u32::MAX);
    set_secret(&emu, "second", "two").await;
    let (status, body) = emu.admin(Method::POST, "/persist", None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        std::fs::read(dir.path().join("vaults.json")).unwrap(),
        previous
    );
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
    assert!(persister(&emu).is_pending());

    // A second emulator started on the directory now (as after a crash) reads the old state.
    let after_crash = TestEmulator::start_with(config(dir.path())).await;
    let (status, _) = call(&after_crash, Method::GET, "/secrets/first", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&after_crash, Method::GET, "/secrets/second", None).await;
    assert_eq!(status, 404);
    drop(after_crash);

    // Once the disk recovers, the pending change is saved.
    persister(&emu).fail_next_saves(0);
    let (status, _) = emu.admin(Method::POST, "/persist", None).await;
    assert_eq!(status, 200);
    assert_eq!(saved_secret(dir.path(), "second").as_deref(), Some("two"));
    assert_eq!(saved_secret(dir.path(), "first").as_deref(), Some("one"));
    emu.running.shutdown().await;
}

/// Sends `request` as raw bytes over TLS to the emulator and reads the whole answer (the
/// request asks the server to close the connection).
async fn raw_tls(emu: &TestEmulator, request: &[u8]) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut emu.running.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", emu.running.port()))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    // A server that closes without close_notify is still an answer here.
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn request_with_host(path: &str, host: &[u8]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: ").into_bytes();
    request.extend_from_slice(host);
    request.extend_from_slice(b"\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n");
    request
}

#[tokio::test]
async fn malformed_host_header_is_400_in_azures_envelope_never_a_panic() {
    let emu = TestEmulator::start().await;
    let long = "a".repeat(10 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unclosed bracket", b"[x".to_vec()),
        ("empty", Vec::new()),
        ("10 KB", long.into_bytes()),
        ("not UTF-8", b"\xff\xfe.vault.localhost".to_vec()),
        ("bad port", b"localhost:99999".to_vec()),
    ];
    for path in [format!("/secrets?{API}"), "/_emulator/ready".to_string()] {
        for (what, host) in &cases {
            let (status, body) = raw_tls(&emu, &request_with_host(&path, host)).await;
            assert_eq!(status, 400, "{what} on {path}: {body}");
            assert_eq!(body["error"]["code"], "BadParameter", "{what}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Invalid Hostname")),
                "{what}: {body}"
            );
        }
    }
    let twice = format!(
        "GET /secrets?{API} HTTP/1.1\r\nHost: localhost\r\nHost: alpha.vault.localhost\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = raw_tls(&emu, twice.as_bytes()).await;
    assert_eq!(status, 400, "two Host headers");

    // The server is still up and a well-formed host still reaches its vault.
    let (status, body) = raw_tls(
        &emu,
        &request_with_host(&format!("/secrets?{API}"), b"alpha.vault.localhost"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (status, _) = raw_tls(&emu, &request_with_host("/_emulator/ready", b"[::1]:1")).await;
    assert_eq!(status, 200);
    emu.running.shutdown().await;
}
