//! `coldvault copy` and `coldvault sync` end to end: the real binary against the in-process
//! local Key Vault with three vaults over two subscriptions and two tenants — `alpha` and
//! `beta` in subscription A of the first tenant, `gamma` in subscription B of tenant B — each
//! side signed in with its own client through `COLDVAULT_FROM_*` / `COLDVAULT_TO_*` (or
//! `COLDVAULT_A_*` / `COLDVAULT_B_*`), no `AZURE_*` identity at all. Every test checks the
//! target item by item, and a canary value planted in the source must never appear in any
//! output or in the sync state file.

use std::collections::BTreeMap;
use std::process::Output;

use age::secrecy::{ExposeSecret, SecretString};
use azure_security_keyvault_keys::models::{CreateKeyParameters, KeyType};
use coldvault::emulator::{EmulatorConfig, VaultSpec};
use coldvault::vault::{
    Attributes, AzureVault, CertificateImport, ConnectOptions, EnvSnapshot, ItemKind,
    NewSecretVersion, VaultReader, VaultUrl, VaultWriter,
};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::TestEmulator;

/// Never to be printed by any command nor written to the state file.
const CANARY: &str = "CANARY-copy-7e21b4-never-print-me";
const SUB_A: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const SUB_B: &str = "bbbbbbbb-0000-0000-0000-00000000000b";
const TENANT_B: &str = "bbbbbbbb-1111-2222-3333-44444444444b";

/// `alpha` and `beta` in subscription A of the first tenant, `gamma` in subscription B of
/// tenant B.
async fn three_vaults() -> TestEmulator {
    let alpha = VaultSpec::parse(&format!("alpha,subscription={SUB_A}")).expect("alpha");
    let beta = VaultSpec::parse(&format!("beta,subscription={SUB_A}")).expect("beta");
    let gamma =
        VaultSpec::parse(&format!("gamma,subscription={SUB_B},tenant={TENANT_B}")).expect("gamma");
    TestEmulator::start_with(EmulatorConfig {
        vaults: vec![alpha, beta, gamma],
        ..EmulatorConfig::default()
    })
    .await
}

/// The tenant a vault belongs to.
fn tenant_of(emulator: &TestEmulator, vault: &str) -> String {
    if vault == "gamma" {
        TENANT_B.to_owned()
    } else {
        emulator.ready().tenant_id.clone()
    }
}

/// A side's own identity: `PREFIX` + TENANT_ID, CLIENT_ID, CLIENT_SECRET of the built-in
/// client of the vault's tenant.
fn side_env(emulator: &TestEmulator, prefix: &str, vault: &str) -> Vec<(String, String)> {
    let tenant = tenant_of(emulator, vault);
    let client = &emulator.ready().tenants[&tenant];
    vec![
        (format!("{prefix}TENANT_ID"), tenant.clone()),
        (format!("{prefix}CLIENT_ID"), client.client_id.clone()),
        (
            format!("{prefix}CLIENT_SECRET"),
            client.client_secret.clone(),
        ),
    ]
}

/// Runs `coldvault` with only the given side variables (no `AZURE_*` identity).
async fn coldvault(emulator: &TestEmulator, args: &[&str], env: &[(String, String)]) -> Output {
    let ready = emulator.ready();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .expect("coldvault runs")
}

/// `coldvault copy --from FROM --to TO ARGS…`, each side with its own client.
async fn copy(emulator: &TestEmulator, from: &str, to: &str, args: &[&str]) -> Output {
    let (from_url, to_url) = (emulator.vault_url(from), emulator.vault_url(to));
    let mut all = vec!["copy", "--from", &from_url, "--to", &to_url];
    all.extend_from_slice(args);
    let mut env = side_env(emulator, "COLDVAULT_FROM_", from);
    env.extend(side_env(emulator, "COLDVAULT_TO_", to));
    let output = coldvault(emulator, &all, &env).await;
    assert_no_canary(&output);
    output
}

/// `coldvault sync A B ARGS…`, each side with its own client.
async fn sync(emulator: &TestEmulator, a: &str, b: &str, args: &[&str]) -> Output {
    let (a_url, b_url) = (emulator.vault_url(a), emulator.vault_url(b));
    let mut all = vec!["sync", &a_url, &b_url];
    all.extend_from_slice(args);
    let mut env = side_env(emulator, "COLDVAULT_A_", a);
    env.extend(side_env(emulator, "COLDVAULT_B_", b));
    let output = coldvault(emulator, &all, &env).await;
    assert_no_canary(&output);
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_no_canary(output: &Output) {
    assert!(
        !text(output).contains(CANARY),
        "canary printed: {}",
        text(output)
    );
}

/// The summary event of a `--json` run.
fn summary(output: &Output) -> Value {
    let all: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    all.into_iter()
        .rev()
        .find(|v| v.get("planned").is_some() || v.get("in_sync").is_some())
        .unwrap_or_else(|| panic!("a summary: {}", text(output)))
}

/// The vault's own client (of its tenant) through the library.
async fn vault(emulator: &TestEmulator, name: &str) -> AzureVault {
    let ready = emulator.ready();
    let tenant = tenant_of(emulator, name);
    let client = &ready.tenants[&tenant];
    let options = ConnectOptions {
        ca_cert: Some(emulator.running.ca_cert_path().to_path_buf()),
        env: EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", tenant.as_str()),
            ("AZURE_CLIENT_ID", client.client_id.as_str()),
            ("AZURE_CLIENT_SECRET", client.client_secret.as_str()),
            ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ]),
        ..ConnectOptions::default()
    };
    let url = VaultUrl::parse(&emulator.vault_url(name)).expect("emulator URL");
    AzureVault::connect(&url, &options).await.expect("connects")
}

/// Moves the emulator's clock on by a second: versions written after it are newer.
async fn next_second(emulator: &TestEmulator) {
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/clock",
            Some(json!({"advance_seconds": 1})),
        )
        .await;
    assert_eq!(status, 200, "clock advanced: {body}");
}

async fn set(vault: &AzureVault, name: &str, value: &str) {
    vault
        .set_secret(
            name,
            &NewSecretVersion {
                value: SecretString::from(value.to_owned()),
                content_type: None,
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("secret set");
}

fn expiry() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time")
}

/// Secrets with versions (the canary among them), tags, a content type and an expiry; a
/// software key; an exportable PEM certificate.
async fn seed_source(emulator: &TestEmulator, name: &str) {
    let source = vault(emulator, name).await;
    let secrets: [(&str, &[&str]); 3] = [
        ("db-password", &["pw-1", "pw-2", CANARY]),
        ("api-key", &["key-1"]),
        ("cache-url", &["redis://a", "redis://b"]),
    ];
    for i in 0..3 {
        next_second(emulator).await;
        for (secret, values) in secrets {
            let Some(value) = values.get(i) else { continue };
            source
                .set_secret(
                    secret,
                    &NewSecretVersion {
                        value: SecretString::from(value.to_string()),
                        content_type: Some("text/plain".to_owned()),
                        tags: BTreeMap::from([("app".to_owned(), secret.to_owned())]),
                        attributes: Attributes {
                            expires: (secret == "api-key").then(expiry),
                            ..Attributes::default()
                        },
                    },
                )
                .await
                .expect("secret set");
        }
    }
    emulator
        .key_client(name)
        .create_key(
            "signing-key",
            CreateKeyParameters {
                kty: Some(KeyType::Rsa),
                key_size: Some(2048),
                ..Default::default()
            }
            .try_into()
            .expect("params"),
            None,
        )
        .await
        .expect("key created");
    let key = crate::support::rsa_key_pair();
    let cert = rcgen::CertificateParams::new(vec!["web.example.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    source
        .import_certificate(
            "web-cert",
            &CertificateImport {
                value: SecretString::from(format!("{}{}", key.serialize_pem(), cert.pem())),
                content_type: "application/x-pem-file".to_owned(),
                password: None,
                policy: Some(json!({
                    "key_props": {"exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false},
                    "secret_props": {"contentType": "application/x-pem-file"}
                })),
                tags: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("certificate imported");
}

/// Every version of a secret: (version id, value), oldest first.
async fn versions_of(vault: &AzureVault, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for props in vault.list_secret_versions(name).await.expect("versions") {
        let version = props.version.expect("version id");
        let value = vault.get_secret(name, Some(&version)).await.expect("value");
        out.push((version, value.value.expose_secret().to_owned()));
    }
    out
}

async fn secret_names(vault: &AzureVault) -> Vec<String> {
    let mut names: Vec<String> = vault
        .list_secrets()
        .filter_map(|p| async move { p.ok().filter(|p| !p.managed).map(|p| p.name) })
        .collect()
        .await;
    names.sort();
    names
}

async fn deleted_secret_names(vault: &AzureVault) -> Vec<String> {
    let mut names: Vec<String> = vault
        .list_deleted(ItemKind::Secret)
        .filter_map(|d| async move { d.ok().filter(|d| !d.managed).map(|d| d.name) })
        .collect()
        .await;
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_within_a_subscription_is_native_with_the_same_version_ids_and_a_rerun_plans_nothing()
{
    let emulator = three_vaults().await;
    seed_source(&emulator, "alpha").await;
    let output = copy(&emulator, "alpha", "beta", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let alpha_client = &emulator.ready().tenants[&emulator.ready().tenant_id].client_id;
    assert!(
        stderr.contains(&format!(
            "from alpha: signed in with env (service principal {alpha_client}"
        )) && stderr.contains("from COLDVAULT_FROM_*")
            && stderr.contains("to beta: signed in with env")
            && stderr.contains("from COLDVAULT_TO_*"),
        "each side says its credential: {stderr}"
    );
    assert!(stderr.contains("5 created (5 native, 0 plain)"), "{stderr}");

    let (alpha, beta) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "beta").await,
    );
    for name in ["db-password", "api-key", "cache-url"] {
        // No value printed on failure: the canary is among them.
        assert!(
            versions_of(&beta, name).await == versions_of(&alpha, name).await,
            "{name}: every version with its id"
        );
        let (a, b) = (
            alpha.get_secret(name, None).await.expect("a"),
            beta.get_secret(name, None).await.expect("b"),
        );
        assert_eq!(b.properties.tags, a.properties.tags);
        assert_eq!(b.properties.content_type, a.properties.content_type);
        assert_eq!(
            b.properties.attributes.expires,
            a.properties.attributes.expires
        );
    }
    let (ka, kb) = (
        alpha.get_key("signing-key", None).await.expect("key a"),
        beta.get_key("signing-key", None).await.expect("key b"),
    );
    assert_eq!(
        kb.properties.version, ka.properties.version,
        "same key version"
    );
    assert_eq!(kb.jwk["n"], ka.jwk["n"], "the same key material");
    let (ca, cb) = (
        alpha
            .get_certificate("web-cert", None)
            .await
            .expect("cert a"),
        beta.get_certificate("web-cert", None)
            .await
            .expect("cert b"),
    );
    assert_eq!(cb.properties.version, ca.properties.version);
    assert_eq!(cb.cer, ca.cer);

    // A rerun plans nothing: every line a skip, nothing written.
    let output = copy(&emulator, "alpha", "beta", &["--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let s = summary(&output);
    assert_eq!(s["planned"]["skip"], 5, "{s}");
    for action in [
        "create",
        "overwrite",
        "recover",
        "delete",
        "conflict",
        "impossible",
    ] {
        assert_eq!(s["planned"][action], 0, "{action}: {s}");
    }
    assert_eq!(s["native_blobs"]["state"], "accepts", "{s}");
    assert_eq!(versions_of(&beta, "db-password").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_across_tenants_is_plain_with_private_keys_and_reports_keys() {
    let emulator = three_vaults().await;
    seed_source(&emulator, "alpha").await;
    let output = copy(&emulator, "alpha", "gamma", &["--all-versions", "--json"]).await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "the key is not copied: {}",
        text(&output)
    );
    let s = summary(&output);
    assert_eq!(s["created"], 4, "{s}");
    assert_eq!(s["plain"], 4, "{s}");
    assert_eq!(s["native"], 0, "{s}");
    let not_copied = s["not_copied"].as_array().expect("not_copied");
    assert_eq!(not_copied.len(), 1, "{s}");
    assert_eq!(not_copied[0]["name"], "signing-key");
    assert!(
        not_copied[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Cannot decrypt backup blob"),
        "Azure's reason: {s}"
    );

    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    for name in ["db-password", "api-key", "cache-url"] {
        // Versions written within one second share `created`, so their listed order is not
        // the write order: compared as multisets (and the current one below). No value is
        // printed on failure: the canary is among them.
        let values = |v: Vec<(String, String)>| {
            let mut values: Vec<String> = v.into_iter().map(|(_, x)| x).collect();
            values.sort();
            values
        };
        assert!(
            values(versions_of(&gamma, name).await) == values(versions_of(&alpha, name).await),
            "{name}: every version by value"
        );
        let (a, g) = (
            alpha.get_secret(name, None).await.expect("a"),
            gamma.get_secret(name, None).await.expect("g"),
        );
        assert!(
            g.value.expose_secret() == a.value.expose_secret(),
            "{name}: the current value"
        );
        assert_eq!(g.properties.tags, a.properties.tags);
        assert_eq!(g.properties.content_type, a.properties.content_type);
        assert_eq!(
            g.properties.attributes.expires,
            a.properties.attributes.expires
        );
        assert_ne!(g.properties.version, a.properties.version, "plain: new ids");
    }
    assert!(
        gamma.get_key("signing-key", None).await.is_err(),
        "no key crosses subscriptions"
    );
    let (ca, cg) = (
        alpha
            .get_certificate("web-cert", None)
            .await
            .expect("cert a"),
        gamma
            .get_certificate("web-cert", None)
            .await
            .expect("cert g"),
    );
    assert_eq!(cg.cer, ca.cer, "the same certificate");
    let secret_version = cg.secret_version().expect("managed secret");
    let private = gamma
        .get_secret("web-cert", Some(&secret_version))
        .await
        .expect("managed secret of the imported certificate");
    assert!(
        private.value.expose_secret().contains("PRIVATE KEY"),
        "the private key came along"
    );

    // A rerun plans nothing but the key, still impossible.
    let output = copy(&emulator, "alpha", "gamma", &["--all-versions", "--json"]).await;
    let s = summary(&output);
    assert_eq!(s["planned"]["skip"], 4, "{s}");
    assert_eq!(s["planned"]["create"], 0, "{s}");
    assert_eq!(s["planned"]["impossible"], 1, "{s}");
    assert_eq!(s["native_blobs"]["state"], "refuses", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_soft_deletes_exactly_the_extraneous_items_of_the_selection() {
    let emulator = three_vaults().await;
    let (alpha, beta) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "beta").await,
    );
    for name in ["app-one", "app-two"] {
        set(&alpha, name, name).await;
    }
    for name in ["app-one", "app-old", "app-stale", "keep-this", "other"] {
        set(&beta, name, "x").await;
    }

    let output = copy(
        &emulator,
        "alpha",
        "beta",
        &["--prune", "--exclude", "keep-*", "--dry-run"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let plan = String::from_utf8_lossy(&output.stdout);
    for name in ["app-old", "app-stale", "other"] {
        assert!(
            plan.lines()
                .any(|l| l.starts_with("delete") && l.contains(name)),
            "{name} planned for deletion: {plan}"
        );
    }
    assert!(!plan.contains("keep-this"), "{plan}");
    assert_eq!(
        secret_names(&beta).await.len(),
        5,
        "a dry run changes nothing"
    );

    // --name narrows the prune too: only app-* items are touched.
    let output = copy(&emulator, "alpha", "beta", &["--prune", "--name", "app-*"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        secret_names(&beta).await,
        ["app-one", "app-two", "keep-this", "other"]
    );
    assert_eq!(deleted_secret_names(&beta).await, ["app-old", "app-stale"]);
    // Skipped as existing and different: --on-conflict skip leaves app-one's value.
    assert_eq!(
        beta.get_secret("app-one", None)
            .await
            .expect("kept")
            .value
            .expose_secret(),
        "x"
    );
    assert_eq!(
        secret_names(&alpha).await,
        ["app-one", "app-two"],
        "source untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_name_in_the_target_is_a_conflict_until_recover_deleted() {
    let emulator = three_vaults().await;
    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    set(&alpha, "db-password", "new-value").await;
    set(&gamma, "db-password", "old-value").await;
    gamma
        .soft_delete(ItemKind::Secret, "db-password")
        .await
        .expect("deleted");

    let output = copy(&emulator, "alpha", "gamma", &[]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        text(&output).contains("NOT COPIED: secret db-password")
            && text(&output).contains("--recover-deleted"),
        "{}",
        text(&output)
    );
    assert_eq!(deleted_secret_names(&gamma).await, ["db-password"]);

    let output = copy(
        &emulator,
        "alpha",
        "gamma",
        &["--recover-deleted", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(summary(&output)["recovered"], 1);
    let values: Vec<String> = versions_of(&gamma, "db-password")
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    // Recovered versions and the new one may share a second: compared as a set, plus the
    // current one.
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["new-value", "old-value"],
        "recovered, then brought up"
    );
    assert_eq!(
        gamma
            .get_secret("db-password", None)
            .await
            .expect("current")
            .value
            .expose_secret(),
        "new-value"
    );
    assert!(deleted_secret_names(&gamma).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_mid_way_finishes_on_rerun_without_duplicate_versions() {
    let emulator = three_vaults().await;
    let alpha = vault(&emulator, "alpha").await;
    let names: Vec<String> = (0..12).map(|i| format!("svc-{i:02}")).collect();
    for n in 0..3 {
        next_second(&emulator).await;
        for name in &names {
            set(&alpha, name, &format!("{name}-v{n}")).await;
        }
    }
    // The chosen request: the first write of svc-07 in gamma is parked; the copy is killed
    // while it waits, then the request is released (the server drops it with its client).
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(
                json!({"kind": "hold", "count": 1, "method": "PUT", "path": "/secrets/svc-07",
                        "vault": "gamma", "delay_ms": 60000}),
            ),
        )
        .await;
    assert_eq!(status, 200, "fault armed: {body}");
    let (from, to) = (emulator.vault_url("alpha"), emulator.vault_url("gamma"));
    let mut env = side_env(&emulator, "COLDVAULT_FROM_", "alpha");
    env.extend(side_env(&emulator, "COLDVAULT_TO_", "gamma"));
    let ready = emulator.ready();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args([
            "copy",
            "--from",
            &from,
            "--to",
            &to,
            "--all-versions",
            "--concurrency",
            "3",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("copy starts");
    crate::support::wait_until("the chosen request to be parked", async || {
        emulator.held().await > 0
    })
    .await;
    child.kill().await.expect("killed mid-way");
    let (status, _) = emulator
        .admin(reqwest::Method::POST, "/faults/release", None)
        .await;
    assert_eq!(status, 200);
    let gamma = vault(&emulator, "gamma").await;
    let mut written = 0;
    for name in &names {
        written += gamma
            .list_secret_versions(name)
            .await
            .map_or(0, |v| v.len());
    }
    assert!(
        written < names.len() * 3,
        "stopped before the end: {written} versions"
    );

    let output = copy(&emulator, "alpha", "gamma", &["--all-versions"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for name in &names {
        let values: Vec<String> = versions_of(&gamma, name)
            .await
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        let expected: Vec<String> = (0..3).map(|n| format!("{name}-v{n}")).collect();
        assert_eq!(sorted, expected, "{name}: every version exactly once");
        assert_eq!(
            gamma
                .get_secret(name, None)
                .await
                .expect("current")
                .value
                .expose_secret(),
            format!("{name}-v2"),
            "{name}: the source's current version is current"
        );
    }
    let output = copy(&emulator, "alpha", "gamma", &["--all-versions", "--json"]).await;
    assert_eq!(summary(&output)["planned"]["skip"], 12, "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refuses_one_vault_on_both_sides_and_names_its_usage() {
    let emulator = three_vaults().await;
    let output = copy(&emulator, "alpha", "alpha", &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("name the same vault"),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_without_a_working_identity_fails_naming_its_side() {
    let emulator = three_vaults().await;
    let (from, to) = (emulator.vault_url("alpha"), emulator.vault_url("gamma"));
    // The target side signs in with the first tenant's client: gamma refuses its token.
    let mut env = side_env(&emulator, "COLDVAULT_FROM_", "alpha");
    env.extend(side_env(&emulator, "COLDVAULT_TO_", "alpha"));
    let output = coldvault(&emulator, &["copy", "--from", &from, "--to", &to], &env).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("coldvault: error: to side: gamma"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

/// Values of a vault's secrets by name.
async fn values(vault: &AzureVault) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in secret_names(vault).await {
        let value = vault.get_secret(&name, None).await.expect("value");
        out.insert(name, value.value.expose_secret().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_copies_new_items_and_versions_both_ways_and_settles_conflicts_as_asked() {
    let emulator = three_vaults().await;
    let ws = tempfile::tempdir().expect("temp dir");
    let state = ws.path().join("pair.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    set(&alpha, "from-a", CANARY).await;
    set(&gamma, "from-g", "g-1").await;

    let output = sync(&emulator, "alpha", "gamma", &["--state", state_arg]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(values(&alpha).await, values(&gamma).await, "a union");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("A alpha: signed in with env") && stderr.contains("COLDVAULT_B_*"),
        "{stderr}"
    );
    let state_text = std::fs::read_to_string(&state).expect("state written");
    assert!(!state_text.contains(CANARY), "no value in the state");

    // A new version on each side becomes a new version on the other.
    next_second(&emulator).await;
    set(&alpha, "from-g", "g-2-from-a").await;
    set(&gamma, "from-a", "a-2-from-g").await;
    let output = sync(
        &emulator,
        "alpha",
        "gamma",
        &["--state", state_arg, "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let s = summary(&output);
    assert_eq!(
        (s["copied_to_a"].as_u64(), s["copied_to_b"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(
        versions_of(&gamma, "from-g").await.len(),
        2,
        "a new version, not a new item"
    );
    assert_eq!(versions_of(&alpha, "from-a").await.len(), 2);
    assert_eq!(values(&alpha).await, values(&gamma).await);

    // Both sides change: a conflict, reported and skipped, then settled by each --prefer.
    for (prefer, winner) in [
        (None, None),
        (Some("a"), Some("alpha")),
        (Some("b"), Some("gamma")),
        (Some("newest"), Some("gamma")),
    ] {
        next_second(&emulator).await;
        set(&alpha, "from-a", "edit-on-alpha").await;
        next_second(&emulator).await;
        set(&gamma, "from-a", "edit-on-gamma").await;
        let mut args = vec!["--state", state_arg];
        if let Some(prefer) = prefer {
            args.extend(["--prefer", prefer]);
        }
        let output = sync(&emulator, "alpha", "gamma", &args).await;
        let (a, g) = (
            values(&alpha).await["from-a"].clone(),
            values(&gamma).await["from-a"].clone(),
        );
        match winner {
            None => {
                assert_eq!(output.status.code(), Some(3), "{}", text(&output));
                assert!(
                    text(&output).contains("CONFLICT: secret from-a"),
                    "{}",
                    text(&output)
                );
                assert_eq!((a.as_str(), g.as_str()), ("edit-on-alpha", "edit-on-gamma"));
                // Settle it before the next case.
                let output = sync(
                    &emulator,
                    "alpha",
                    "gamma",
                    &["--state", state_arg, "--prefer", "a"],
                )
                .await;
                assert_eq!(output.status.code(), Some(0), "{}", text(&output));
            }
            Some(winner) => {
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "{prefer:?}: {}",
                    text(&output)
                );
                let expected = format!("edit-on-{winner}");
                assert_eq!((a, g), (expected.clone(), expected), "{prefer:?}");
            }
        }
    }
    let state_text = std::fs::read_to_string(&state).expect("state written");
    assert!(
        !state_text.contains(CANARY) && !state_text.contains("edit-on"),
        "no value in the state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_propagates_a_deletion_with_state_and_not_without() {
    let emulator = three_vaults().await;
    let ws = tempfile::tempdir().expect("temp dir");
    let state = ws.path().join("pair.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    set(&alpha, "doomed", "d").await;
    set(&alpha, "kept", "k").await;

    // Without state: the first run is a union, and a deletion is undone, not propagated.
    let output = sync(&emulator, "alpha", "gamma", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    gamma
        .soft_delete(ItemKind::Secret, "doomed")
        .await
        .expect("deleted");
    let output = sync(&emulator, "alpha", "gamma", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        secret_names(&gamma).await,
        ["doomed", "kept"],
        "recovered on gamma"
    );
    assert_eq!(secret_names(&alpha).await, ["doomed", "kept"]);

    // With state: the deletion reaches the other side as a soft-delete.
    let output = sync(&emulator, "alpha", "gamma", &["--state", state_arg]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    gamma
        .soft_delete(ItemKind::Secret, "doomed")
        .await
        .expect("deleted");
    let output = sync(
        &emulator,
        "alpha",
        "gamma",
        &["--state", state_arg, "--dry-run"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|l| l.starts_with("delete on a") && l.contains("doomed")),
        "{}",
        text(&output)
    );
    assert_eq!(
        secret_names(&alpha).await,
        ["doomed", "kept"],
        "a dry run changes nothing"
    );
    let output = sync(&emulator, "alpha", "gamma", &["--state", state_arg]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(secret_names(&alpha).await, ["kept"]);
    assert_eq!(
        deleted_secret_names(&alpha).await,
        ["doomed"],
        "soft-deleted, not purged"
    );
    let output = sync(
        &emulator,
        "alpha",
        "gamma",
        &["--state", state_arg, "--json"],
    )
    .await;
    let s = summary(&output);
    assert_eq!(s["in_sync"], 1, "{s}");
    assert_eq!(secret_names(&gamma).await, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_alternating_syncs_with_random_edits_converge() {
    use rand::{Rng, SeedableRng};
    let emulator = three_vaults().await;
    let ws = tempfile::tempdir().expect("temp dir");
    let state = ws.path().join("pair.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let names = ["n0", "n1", "n2", "n3", "n4"];
    for round in 0..10 {
        let side = if round % 2 == 0 { &alpha } else { &gamma };
        for _ in 0..rng.gen_range(1..4) {
            next_second(&emulator).await;
            let name = names[rng.gen_range(0..names.len())];
            let live = secret_names(side).await.contains(&name.to_owned());
            if live && rng.gen_bool(0.3) {
                side.soft_delete(ItemKind::Secret, name)
                    .await
                    .expect("deleted");
            } else if !live && deleted_secret_names(side).await.contains(&name.to_owned()) {
                // A soft-deleted name cannot be set: bring it back first, as a person would.
                side.recover_deleted(ItemKind::Secret, name)
                    .await
                    .expect("recovered");
                crate::support::wait_until("the recovered secret to answer", async || {
                    side.get_secret(name, None).await.is_ok()
                })
                .await;
            } else {
                set(
                    side,
                    name,
                    &format!("{name}-r{round}-{}", rng.r#gen::<u16>()),
                )
                .await;
            }
        }
        let output = sync(
            &emulator,
            "alpha",
            "gamma",
            &["--state", state_arg, "--prefer", "newest"],
        )
        .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "round {round}: {}",
            text(&output)
        );
        assert_eq!(values(&alpha).await, values(&gamma).await, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_overwrite_adds_the_source_state_as_a_new_version_and_native_mode_refuses_another_subscription()
 {
    let emulator = three_vaults().await;
    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    set(&alpha, "db-password", "from-alpha").await;
    set(&gamma, "db-password", "stale").await;

    let output = copy(&emulator, "alpha", "gamma", &["--mode", "native"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Cannot decrypt backup blob") && stderr.contains("hint: use --mode plain"),
        "{stderr}"
    );

    let output = copy(&emulator, "alpha", "gamma", &["--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(summary(&output)["skipped"], 1, "skip is the default");
    next_second(&emulator).await;
    let output = copy(
        &emulator,
        "alpha",
        "gamma",
        &["--on-conflict", "overwrite", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(summary(&output)["overwritten"], 1, "{}", text(&output));
    let values: Vec<String> = versions_of(&gamma, "db-password")
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        values,
        ["stale", "from-alpha"],
        "a new version, nothing deleted"
    );
    let output = copy(&emulator, "alpha", "gamma", &["--on-conflict", "fail"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "identical now: {}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_carries_an_exportable_certificate_and_reports_keys() {
    let emulator = three_vaults().await;
    seed_source(&emulator, "alpha").await;
    let output = sync(&emulator, "alpha", "gamma", &["--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let s = summary(&output);
    assert_eq!(
        s["copied_to_b"], 4,
        "three secrets and the certificate: {s}"
    );
    assert_eq!(s["keys_not_synced"][0]["name"], "signing-key", "{s}");
    assert!(
        s["keys_not_synced"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Cannot decrypt backup blob"),
        "{s}"
    );
    let (alpha, gamma) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "gamma").await,
    );
    let (ca, cg) = (
        alpha.get_certificate("web-cert", None).await.expect("a"),
        gamma.get_certificate("web-cert", None).await.expect("g"),
    );
    assert_eq!(cg.cer, ca.cer, "the same certificate");
    let private = gamma
        .get_secret("web-cert", Some(&cg.secret_version().expect("sid")))
        .await
        .expect("managed secret");
    assert!(private.value.expose_secret().contains("PRIVATE KEY"));
    let output = sync(&emulator, "alpha", "gamma", &["--json"]).await;
    assert_eq!(summary(&output)["in_sync"], 4, "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_within_one_subscription_carries_a_key_natively_and_reports_a_new_key_version() {
    let emulator = three_vaults().await;
    let ws = tempfile::tempdir().expect("temp dir");
    let state = ws.path().join("pair.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let keys = emulator.key_client("alpha");
    let create = || {
        CreateKeyParameters {
            kty: Some(KeyType::Rsa),
            key_size: Some(2048),
            ..Default::default()
        }
        .try_into()
        .expect("params")
    };
    keys.create_key("signing-key", create(), None)
        .await
        .expect("key created");
    let output = sync(
        &emulator,
        "alpha",
        "beta",
        &["--state", state_arg, "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(summary(&output)["copied_to_b"], 1, "{}", text(&output));
    let (alpha, beta) = (
        vault(&emulator, "alpha").await,
        vault(&emulator, "beta").await,
    );
    let (ka, kb) = (
        alpha.get_key("signing-key", None).await.expect("a"),
        beta.get_key("signing-key", None).await.expect("b"),
    );
    assert_eq!(
        kb.properties.version, ka.properties.version,
        "native: same id"
    );
    assert_eq!(kb.jwk["n"], ka.jwk["n"]);
    let output = sync(
        &emulator,
        "alpha",
        "beta",
        &["--state", state_arg, "--json"],
    )
    .await;
    assert_eq!(summary(&output)["in_sync"], 1, "{}", text(&output));

    // A new version of a key that the other side holds cannot travel: reported, not failed.
    next_second(&emulator).await;
    keys.create_key("signing-key", create(), None)
        .await
        .expect("new version");
    let output = sync(
        &emulator,
        "alpha",
        "beta",
        &["--state", state_arg, "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let s = summary(&output);
    assert_eq!(s["keys_not_synced"][0]["name"], "signing-key", "{s}");
    assert!(
        s["keys_not_synced"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("never replaces a live key"),
        "{s}"
    );
}
