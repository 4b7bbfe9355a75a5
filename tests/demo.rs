//! `coldvault demo` end to end: it runs every step it shows, and its closing state — kept in
//! the folder it names — holds what the story says: prod whole again, the second vault of the
//! same subscription a native copy, the other subscription's vault the plain values and the
//! exportable certificate, without keys.

use std::path::Path;

use serde_json::{Value, json};

use crate::backup::rest;
use crate::support::TestEmulator;
use coldvault::emulator::{EmulatorConfig, VaultSpec};

fn vault(name: &str, subscription: &str) -> VaultSpec {
    let mut spec = VaultSpec::new(name);
    spec.subscription = subscription.to_owned();
    spec.geo = "westeurope".to_owned();
    spec
}

async fn names(emulator: &TestEmulator, vault: &str, kind: &str) -> Vec<String> {
    let (status, body) = rest(
        emulator,
        reqwest::Method::GET,
        vault,
        &format!("/{kind}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut names: Vec<String> = body["value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["managed"] != json!(true))
                // Key lists name items by `kid`, the others by `id`.
                .filter_map(|i| i["id"].as_str().or_else(|| i["kid"].as_str()))
                .filter_map(|id| id.rsplit('/').next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn vec_of(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_leaves_the_vaults_as_it_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("demo");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(["demo", "--dir"])
        .arg(&folder)
        .env_remove("AZURE_CLIENT_SECRET")
        .output()
        .await
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in ["keygen", "backup", "inspect", "verify", "diff", "restore"] {
        assert!(
            stdout.contains(&format!("$ coldvault {step}")),
            "shows {step}"
        );
    }
    assert!(!stdout.contains("demo-db-password-v"), "no value printed");

    // The local vault's state outlives the demo in its folder: look at it again.
    let emulator = TestEmulator::start_with(EmulatorConfig {
        vaults: vec![
            vault("prod", "sub-contoso-prod"),
            vault("prod-dr", "sub-contoso-prod"),
            vault("elsewhere", "sub-fabrikam"),
        ],
        state_dir: Some(folder.join("local-vault")),
        ..EmulatorConfig::default()
    })
    .await;
    let all_secrets = vec_of(&[
        "api-key",
        "db-password",
        "legacy-token",
        "service-config",
        "storage-conn",
    ]);
    let all_keys = vec_of(&["ec-key", "signing-key"]);
    let all_certificates = vec_of(&["internal-mtls", "web-tls"]);
    for vault in ["prod", "prod-dr"] {
        assert_eq!(
            names(&emulator, vault, "secrets").await,
            all_secrets,
            "{vault}"
        );
        assert_eq!(names(&emulator, vault, "keys").await, all_keys, "{vault}");
        assert_eq!(
            names(&emulator, vault, "certificates").await,
            all_certificates,
            "{vault}"
        );
    }
    // Native restore keeps every version and its id.
    let versions = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids = ids
            .into_iter()
            .filter_map(|id| id.rsplit('/').next().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let (_, prod) = rest(
        &emulator,
        reqwest::Method::GET,
        "prod",
        "/secrets/db-password/versions",
        None,
    )
    .await;
    let (_, dr) = rest(
        &emulator,
        reqwest::Method::GET,
        "prod-dr",
        "/secrets/db-password/versions",
        None,
    )
    .await;
    assert_eq!(versions(&prod).len(), 3);
    assert_eq!(versions(&prod), versions(&dr), "same version ids");

    // Another subscription: plain values (not the disabled one), the exportable certificate,
    // no keys.
    assert_eq!(
        names(&emulator, "elsewhere", "secrets").await,
        vec_of(&["api-key", "db-password", "service-config", "storage-conn"])
    );
    assert_eq!(
        names(&emulator, "elsewhere", "keys").await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(&emulator, "elsewhere", "certificates").await,
        vec_of(&["web-tls"])
    );
    let (_, plain) = rest(
        &emulator,
        reqwest::Method::GET,
        "elsewhere",
        "/secrets/db-password/",
        None,
    )
    .await;
    let (_, original) = rest(
        &emulator,
        reqwest::Method::GET,
        "prod",
        "/secrets/db-password/",
        None,
    )
    .await;
    assert_eq!(
        plain["value"], original["value"],
        "the current value travelled"
    );
    assert!(Path::new(&folder.join("demo-identity.txt")).is_file());
}
