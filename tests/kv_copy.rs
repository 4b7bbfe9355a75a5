//! `coldvault copy` and `coldvault sync` between a real OpenBao KV v2 mount ([`TestBao`], seeded
//! and checked with the official Python client `hvac`) and the local Key Vault
//! ([`TestEmulator`], checked through the library's own client): both granularities with their
//! versions in order, `custom_metadata` as tags, reruns that plan nothing, ownership (the
//! `coldvault-source` marker: `--prune` and overwrites touch only what coldvault wrote), name
//! collisions refused before any write, the reverse direction with PEM certificates, sync
//! with a KV side and a concurrent KV change met by check-and-set. A canary value planted in
//! the sources must never appear in any output.

use std::collections::BTreeMap;
use std::process::Output;

use age::secrecy::{ExposeSecret, SecretString};
use coldvault::vault::{
    Attributes, AzureVault, CertificateImport, ConnectOptions, EnvSnapshot, NewSecretVersion,
    VaultReader, VaultUrl, VaultWriter,
};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{TestBao, TestEmulator};

/// Never to be printed by any command.
const CANARY: &str = "CANARY-kvcopy-5d0e9a-never-print-me";

/// The KV address of the dev server's `secret/` mount.
fn mount(bao: &TestBao) -> String {
    bao.kv_url("secret")
}

/// Runs `coldvault ARGS…` with the KV root token in `VAULT_TOKEN` and the emulator's client as
/// the Key Vault identity; checks that no output holds the canary.
async fn coldvault(emulator: &TestEmulator, bao: &TestBao, args: &[&str]) -> Output {
    coldvault_with(emulator, bao.root_token(), args).await
}

/// [`coldvault`] with another KV token.
async fn coldvault_with(emulator: &TestEmulator, token: &str, args: &[&str]) -> Output {
    let ready = emulator.ready();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VAULT_TOKEN", token)
        .env("AZURE_TENANT_ID", &ready.tenant_id)
        .env("AZURE_CLIENT_ID", &ready.client_id)
        .env("AZURE_CLIENT_SECRET", &ready.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .output()
        .await
        .expect("coldvault runs");
    assert!(
        !text(&output).contains(CANARY),
        "canary printed: {}",
        text(&output)
    );
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every JSON Lines event of a `--json` run.
fn events(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The events of one type.
fn of_type(output: &Output, kind: &str) -> Vec<Value> {
    events(output)
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

fn summary(output: &Output) -> Value {
    of_type(output, "summary")
        .pop()
        .unwrap_or_else(|| panic!("a summary: {}", text(output)))
}

/// The library's client for a vault of the emulator.
async fn vault(emulator: &TestEmulator, name: &str) -> AzureVault {
    let ready = emulator.ready();
    let options = ConnectOptions {
        ca_cert: Some(emulator.running.ca_cert_path().to_path_buf()),
        env: EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
            ("AZURE_CLIENT_ID", ready.client_id.as_str()),
            ("AZURE_CLIENT_SECRET", ready.client_secret.as_str()),
            ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ]),
        ..ConnectOptions::default()
    };
    let url = VaultUrl::parse(&emulator.vault_url(name)).expect("emulator URL");
    AzureVault::connect(&url, &options).await.expect("connects")
}

/// Every version of a secret in the order it was written: (value, content type, tags). The
/// order comes from the emulator's own versions list (in write order; Azure's `created` has
/// one-second resolution, so a client sorting by it cannot tell versions written in one
/// second apart), the values through the library's client.
async fn versions_of(
    emulator: &TestEmulator,
    vault: &AzureVault,
    name: &str,
) -> Vec<(String, Option<String>, BTreeMap<String, String>)> {
    let url = vault.vault_url().name().to_owned();
    let listed: Value = emulator
        .http
        .get(emulator.url(&url, &format!("/secrets/{name}/versions?api-version=7.6")))
        .bearer_auth(emulator.token().await)
        .send()
        .await
        .expect("versions listed")
        .json()
        .await
        .expect("JSON");
    let mut out = Vec::new();
    for entry in listed["value"].as_array().expect("a list") {
        let id = entry["id"].as_str().expect("an id");
        let version = id.rsplit('/').next().expect("a version");
        let value = vault.get_secret(name, Some(version)).await.expect("value");
        out.push((
            value.value.expose_secret().to_owned(),
            value.properties.content_type.clone(),
            value.properties.tags.clone(),
        ));
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

async fn set(vault: &AzureVault, name: &str, value: &str, tags: &[(&str, &str)]) {
    vault
        .set_secret(
            name,
            &NewSecretVersion {
                value: SecretString::from(value.to_owned()),
                content_type: None,
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("secret set");
}

/// Seeds `secret/app/db` with three versions (the canary in the last) and custom metadata,
/// and `secret/app/api` with one version.
async fn seed_kv(bao: &TestBao) {
    bao.hvac(&format!(
        "kv = client.secrets.kv.v2\n\
         kv.create_or_update_secret(path='app/db', secret={{'user': 'app', 'password': 'pw-1'}})\n\
         kv.create_or_update_secret(path='app/db', secret={{'user': 'app', 'password': 'pw-2'}})\n\
         kv.create_or_update_secret(path='app/db', secret={{'user': 'app', 'password': '{CANARY}'}})\n\
         kv.update_metadata(path='app/db', custom_metadata={{'team': 'payments', 'env': 'prod'}})\n\
         kv.create_or_update_secret(path='app/api', secret={{'token': 'tok-1'}})\n"
    ))
    .await;
}

fn db_json(password: &str) -> String {
    json!({"password": password, "user": "app"}).to_string()
}

/// The plan lines of a `--json` copy, as (action, name).
fn plan_lines(output: &Output) -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = of_type(output, "plan")
        .into_iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_to_key_vault_carries_every_version_in_order_with_metadata_as_tags_and_a_rerun_plans_nothing()
 {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    seed_kv(&bao).await;
    let from = mount(&bao);
    let marker = from.to_lowercase();

    // Granularity secret (the default) into alpha: one Key Vault secret per KV secret.
    let alpha_url = emulator.vault_url("alpha");
    let args = ["copy", "--from", &from, "--to", &alpha_url, "--json"];
    let output = coldvault(&emulator, &bao, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(summary(&output)["created"], 2, "{}", text(&output));
    // The KV side's requests are counted: the seal status, the token, the mount, the list,
    // two metadata reads and a data read per version at least.
    let requests_from = summary(&output)["requests_from"].as_u64().unwrap_or(0);
    assert!(requests_from >= 9, "{requests_from}: {}", text(&output));
    let alpha = vault(&emulator, "alpha").await;
    assert_eq!(secret_names(&alpha).await, ["app--api", "app--db"]);
    let db = versions_of(&emulator, &alpha, "app--db").await;
    let values: Vec<&str> = db.iter().map(|(v, _, _)| v.as_str()).collect();
    assert_eq!(values, [db_json("pw-1"), db_json("pw-2"), db_json(CANARY)]);
    let (_, content_type, tags) = db.last().expect("a version");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let expected = BTreeMap::from([
        ("coldvault-source".to_owned(), marker.clone()),
        ("env".to_owned(), "prod".to_owned()),
        ("team".to_owned(), "payments".to_owned()),
    ]);
    assert_eq!(tags, &expected);

    let rerun = coldvault(&emulator, &bao, &args).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let lines = plan_lines(&rerun);
    assert_eq!(lines.len(), 2, "{}", text(&rerun));
    assert!(
        lines.iter().all(|(action, _)| action == "skip"),
        "a rerun plans nothing: {lines:?}"
    );

    // A new KV version is carried as one new Key Vault version.
    bao.hvac(
        "client.secrets.kv.v2.create_or_update_secret(path='app/db', \
         secret={'user': 'app', 'password': 'pw-4'})",
    )
    .await;
    let output = coldvault(&emulator, &bao, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let values: Vec<String> = versions_of(&emulator, &alpha, "app--db")
        .await
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    assert_eq!(values.len(), 4, "one version added");
    assert_eq!(values[3], db_json("pw-4"));

    // Granularity key into beta: one Key Vault secret per key, versions where the key
    // changed.
    let beta_url = emulator.vault_url("beta");
    let args = [
        "copy",
        "--from",
        &from,
        "--to",
        &beta_url,
        "--granularity",
        "key",
        "--json",
    ];
    let output = coldvault(&emulator, &bao, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let beta = vault(&emulator, "beta").await;
    assert_eq!(
        secret_names(&beta).await,
        ["app--api--token", "app--db--password", "app--db--user"]
    );
    let password: Vec<String> = versions_of(&emulator, &beta, "app--db--password")
        .await
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    assert_eq!(password, ["pw-1", "pw-2", CANARY, "pw-4"]);
    let user = versions_of(&emulator, &beta, "app--db--user").await;
    assert_eq!(user.len(), 1, "the user never changed: one version");
    assert_eq!(user[0].2, expected);
    let rerun = coldvault(&emulator, &bao, &args).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let lines = plan_lines(&rerun);
    assert_eq!(lines.len(), 3, "{}", text(&rerun));
    assert!(
        lines.iter().all(|(action, _)| action == "skip"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_owned_items_and_a_hand_made_item_at_a_mapped_name_is_a_conflict() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    seed_kv(&bao).await;
    bao.hvac("client.secrets.kv.v2.create_or_update_secret(path='old', secret={'a': '1'})")
        .await;
    let from = mount(&bao);
    let to = emulator.vault_url("alpha");
    let alpha = vault(&emulator, "alpha").await;
    // Made by a person: one at a name the copy maps to, one with a similar name.
    set(&alpha, "app--api", "by-hand", &[("owner", "ops")]).await;
    set(&alpha, "old-2", "by-hand", &[]).await;

    let output = coldvault(
        &emulator,
        &bao,
        &["copy", "--from", &from, "--to", &to, "--json"],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "a conflict: {}",
        text(&output)
    );
    let conflict = of_type(&output, "plan")
        .into_iter()
        .find(|e| e["name"] == "app--api")
        .expect("a line for app--api");
    assert_eq!(conflict["action"], "conflict", "{conflict}");
    assert!(
        conflict["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("was not created by coldvault from"),
        "{conflict}"
    );
    let api = versions_of(&emulator, &alpha, "app--api").await;
    assert_eq!(api.len(), 1, "left as it is");
    assert_eq!(api[0].0, "by-hand");
    // `--on-conflict overwrite` does not change that.
    let output = coldvault(
        &emulator,
        &bao,
        &[
            "copy",
            "--from",
            &from,
            "--to",
            &to,
            "--on-conflict",
            "overwrite",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert_eq!(versions_of(&emulator, &alpha, "app--api").await.len(), 1);

    bao.hvac("client.secrets.kv.v2.delete_metadata_and_all_versions(path='old')")
        .await;
    let output = coldvault(
        &emulator,
        &bao,
        &["copy", "--from", &from, "--to", &to, "--prune", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let deletes: Vec<String> = of_type(&output, "plan")
        .into_iter()
        .filter(|e| e["action"] == "delete")
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(deletes, ["old"], "only the owned item: {}", text(&output));
    assert_eq!(secret_names(&alpha).await, ["app--api", "app--db", "old-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_collision_is_refused_before_anything_is_written() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    bao.hvac(&format!(
        "kv = client.secrets.kv.v2\n\
         kv.create_or_update_secret(path='a-first', secret={{'v': '1'}})\n\
         kv.create_or_update_secret(path='App', secret={{'v': '{CANARY}'}})\n\
         kv.create_or_update_secret(path='app', secret={{'v': '2'}})\n"
    ))
    .await;
    let from = mount(&bao);
    let to = emulator.vault_url("alpha");
    let output = coldvault(&emulator, &bao, &["copy", "--from", &from, "--to", &to]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("'App'") && stderr.contains("'app'"),
        "names the colliding paths: {stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    let alpha = vault(&emulator, "alpha").await;
    assert!(secret_names(&alpha).await.is_empty(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_to_kv_carries_secrets_with_content_type_and_tags_and_pem_certificates() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    let alpha = vault(&emulator, "alpha").await;
    alpha
        .set_secret(
            "db-password",
            &NewSecretVersion {
                value: SecretString::from(CANARY.to_owned()),
                content_type: Some("text/plain".to_owned()),
                tags: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("secret set");
    let key = crate::support::rsa_key_pair();
    let cert = rcgen::CertificateParams::new(vec!["web.example.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    alpha
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
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("certificate imported");
    let from = emulator.vault_url("alpha");
    let to = mount(&bao);
    let args = ["copy", "--from", &from, "--to", &to, "--json"];
    let output = coldvault(&emulator, &bao, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    let read = bao
        .hvac(
            "kv = client.secrets.kv.v2\n\
             out = {}\n\
             for path in ['db-password', 'web-cert']:\n\
             \x20   data = kv.read_secret_version(path=path, raise_on_deleted_version=True)['data']['data']\n\
             \x20   meta = kv.read_secret_metadata(path=path)['data']['custom_metadata']\n\
             \x20   out[path] = {'keys': sorted(data), 'meta': meta}\n\
             print(json.dumps(out))",
        )
        .await;
    let read: Value = serde_json::from_str(read.trim()).expect("hvac JSON");
    assert_eq!(read["db-password"]["keys"], json!(["value"]));
    let meta = &read["db-password"]["meta"];
    assert_eq!(meta["team"], "payments", "{read}");
    assert_eq!(meta["coldvault-content-type"], "text/plain", "{read}");
    assert_eq!(
        meta["coldvault-source"],
        from.to_lowercase(),
        "the Key Vault's URL is the marker: {read}"
    );
    // The value itself, compared inside Python so it is never printed.
    let same = bao
        .hvac(&format!(
            "d = client.secrets.kv.v2.read_secret_version(path='db-password', raise_on_deleted_version=True)\n\
             print(d['data']['data']['value'] == '{CANARY}')"
        ))
        .await;
    assert_eq!(same.trim(), "True");
    let pem = bao
        .hvac(
            "d = client.secrets.kv.v2.read_secret_version(path='web-cert', raise_on_deleted_version=True)\n\
             v = d['data']['data']['value']\n\
             print('BEGIN CERTIFICATE' in v and 'PRIVATE KEY' in v)",
        )
        .await;
    assert_eq!(pem.trim(), "True", "the certificate as PEM with its key");

    let rerun = coldvault(&emulator, &bao, &args).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let lines = plan_lines(&rerun);
    assert_eq!(lines.len(), 2, "{}", text(&rerun));
    assert!(
        lines.iter().all(|(action, _)| action == "skip"),
        "{lines:?}"
    );
    let versions = bao
        .hvac(
            "print(client.secrets.kv.v2.read_secret_metadata(path='db-password')\
             ['data']['current_version'])",
        )
        .await;
    assert_eq!(versions.trim(), "1", "nothing written again");

    // `--prune` into the mount: only what this vault's copy wrote, and the certificate (a
    // secret in KV) is not taken for an extra item.
    bao.hvac("client.secrets.kv.v2.create_or_update_secret(path='by-hand', secret={'a': '1'})")
        .await;
    alpha
        .soft_delete(coldvault::vault::ItemKind::Secret, "db-password")
        .await
        .expect("deleted in the source");
    let output = coldvault(
        &emulator,
        &bao,
        &["copy", "--from", &from, "--to", &to, "--prune", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let deletes: Vec<String> = of_type(&output, "plan")
        .into_iter()
        .filter(|e| e["action"] == "delete")
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(deletes, ["db-password"], "{}", text(&output));
    let states = bao
        .hvac(
            "kv = client.secrets.kv.v2\n\
             out = {}\n\
             for path in ['db-password', 'web-cert', 'by-hand']:\n\
             \x20   m = kv.read_secret_metadata(path=path)['data']\n\
             \x20   out[path] = m['versions'][str(m['current_version'])]['deletion_time'] != ''\n\
             print(json.dumps(out))",
        )
        .await;
    let states: Value = serde_json::from_str(states.trim()).expect("hvac JSON");
    assert_eq!(
        states,
        json!({"db-password": true, "web-cert": false, "by-hand": false}),
        "soft-deleted only the pruned secret"
    );
}

/// The plan lines of a `--json` sync, by name: (action, reason).
fn sync_lines(output: &Output) -> BTreeMap<String, (String, String)> {
    of_type(output, "plan")
        .into_iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                (
                    e["action"].as_str().unwrap_or_default().to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_a_kv_side_carries_changes_both_ways_and_touches_only_what_it_wrote() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    bao.hvac(&format!(
        "kv = client.secrets.kv.v2\n\
         kv.create_or_update_secret(path='app/db', secret={{'password': '{CANARY}'}})\n\
         kv.create_or_update_secret(path='shared', secret={{'v': 'from-kv'}})\n"
    ))
    .await;
    let alpha = vault(&emulator, "alpha").await;
    set(&alpha, "made-by-hand", "kv-1", &[("team", "ops")]).await;
    // Made by a person on the Key Vault side at the name KV's `shared` maps to.
    set(&alpha, "shared", "by-hand", &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("pair.json");
    let state = state.to_str().expect("UTF-8 path");
    let (a, b) = (mount(&bao), emulator.vault_url("alpha"));
    let args = ["sync", &a, &b, "--state", state, "--json"];

    let first = coldvault(&emulator, &bao, &args).await;
    // Both sides hold a different `shared` and nothing says which is newer: a conflict.
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    let lines = sync_lines(&first);
    assert_eq!(lines["app--db"].0, "copy", "{lines:?}");
    assert_eq!(lines["made-by-hand"].0, "copy", "{lines:?}");
    assert_eq!(lines["shared"].0, "conflict", "{lines:?}");
    let db = alpha.get_secret("app--db", None).await.expect("copied");
    assert_eq!(
        db.properties.tags.get("coldvault-source"),
        Some(&a.to_lowercase()),
        "marked as written from the mount"
    );
    let read = bao
        .hvac(
            "kv = client.secrets.kv.v2\n\
             d = kv.read_secret_version(path='made-by-hand', raise_on_deleted_version=True)\n\
             m = kv.read_secret_metadata(path='made-by-hand')['data']['custom_metadata']\n\
             print(json.dumps({'value': d['data']['data']['value'], 'meta': m}))",
        )
        .await;
    let read: Value = serde_json::from_str(read.trim()).expect("hvac JSON");
    assert_eq!(read["value"], "kv-1");
    assert_eq!(read["meta"]["team"], "ops", "{read} {}", text(&first));
    assert_eq!(read["meta"]["coldvault-source"], b.to_lowercase());

    // Settling the conflict in favour of the mount still leaves the hand-made item alone.
    let prefer = coldvault(
        &emulator,
        &bao,
        &["sync", &a, &b, "--state", state, "--json", "--prefer", "a"],
    )
    .await;
    assert_eq!(prefer.status.code(), Some(3), "{}", text(&prefer));
    let (action, reason) = &sync_lines(&prefer)["shared"];
    assert_eq!(action, "conflict");
    assert!(
        reason.contains("was not created by coldvault from"),
        "{reason}"
    );
    let shared = alpha.get_secret("shared", None).await.expect("still there");
    assert_eq!(shared.value.expose_secret(), "by-hand");

    // A change on each side goes across; nothing else moves.
    bao.hvac(
        "client.secrets.kv.v2.create_or_update_secret(path='app/db', secret={'password': 'pw-2'})",
    )
    .await;
    // A tag KV cannot hold (an empty value) is left out there, and no reason to copy again.
    set(
        &alpha,
        "made-by-hand",
        "kv-2",
        &[("team", "ops"), ("note", "")],
    )
    .await;
    let second = coldvault(
        &emulator,
        &bao,
        &[
            "sync",
            &a,
            &b,
            "--state",
            state,
            "--json",
            "--name",
            "app--db",
            "--name",
            "made-by-hand",
        ],
    )
    .await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let lines = sync_lines(&second);
    assert_eq!(lines["app--db"].0, "copy", "{lines:?}");
    assert_eq!(lines["made-by-hand"].0, "copy", "{lines:?}");
    let db = alpha.get_secret("app--db", None).await.expect("updated");
    assert_eq!(
        db.value.expose_secret(),
        &json!({"password": "pw-2"}).to_string()
    );
    let value = bao
        .hvac(
            "print(client.secrets.kv.v2.read_secret_version(path='made-by-hand', \
             raise_on_deleted_version=True)['data']['data']['value'])",
        )
        .await;
    assert_eq!(value.trim(), "kv-2");
    let rerun = coldvault(
        &emulator,
        &bao,
        &[
            "sync",
            &a,
            &b,
            "--state",
            state,
            "--json",
            "--name",
            "app--db",
            "--name",
            "made-by-hand",
        ],
    )
    .await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let lines = sync_lines(&rerun);
    assert!(
        lines.values().all(|(action, _)| action == "in-sync"),
        "a rerun moves nothing: {lines:?}"
    );

    // A deletion in the mount is carried to the item sync wrote.
    bao.hvac("client.secrets.kv.v2.delete_metadata_and_all_versions(path='app/db')")
        .await;
    let third = coldvault(
        &emulator,
        &bao,
        &[
            "sync",
            &a,
            &b,
            "--state",
            state,
            "--json",
            "--name",
            "app--db",
            "--name",
            "made-by-hand",
        ],
    )
    .await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert_eq!(sync_lines(&third)["app--db"].0, "delete");
    assert_eq!(secret_names(&alpha).await, ["made-by-hand", "shared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_change_in_the_mount_is_a_conflict_not_a_lost_update() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    let alpha = vault(&emulator, "alpha").await;
    set(&alpha, "db-password", CANARY, &[]).await;
    // The copy's read of the source secret is parked until the mount has changed.
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"kind": "hold", "count": 1, "method": "GET",
                        "path": "/secrets/db-password", "vault": "alpha", "delay_ms": 60000})),
        )
        .await;
    assert_eq!(status, 200, "fault armed: {body}");
    let (from, to) = (emulator.vault_url("alpha"), mount(&bao));
    let ready = emulator.ready();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(["copy", "--from", &from, "--to", &to, "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VAULT_TOKEN", bao.root_token())
        .env("AZURE_TENANT_ID", &ready.tenant_id)
        .env("AZURE_CLIENT_ID", &ready.client_id)
        .env("AZURE_CLIENT_SECRET", &ready.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("copy starts");
    crate::support::wait_until("the source read to be parked", async || {
        emulator.held().await > 0
    })
    .await;
    bao.hvac(
        "client.secrets.kv.v2.create_or_update_secret(path='db-password', \
         secret={'value': 'written-meanwhile'})",
    )
    .await;
    let (status, _) = emulator
        .admin(reqwest::Method::POST, "/faults/release", None)
        .await;
    assert_eq!(status, 200);
    let output = child.wait_with_output().await.expect("copy ends");
    assert!(!text(&output).contains(CANARY), "{}", text(&output));
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let item = of_type(&output, "item")
        .into_iter()
        .find(|e| e["name"] == "db-password")
        .expect("an item event");
    assert_eq!(item["status"], "not-copied", "{item}");
    assert!(
        item["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("changed in the mount since it was read"),
        "{item}"
    );
    let value = bao
        .hvac(
            "m = client.secrets.kv.v2.read_secret_metadata(path='db-password')['data']\n\
             d = client.secrets.kv.v2.read_secret_version(path='db-password', \
             raise_on_deleted_version=True)['data']['data']['value']\n\
             print(m['current_version'], d)",
        )
        .await;
    assert_eq!(
        value.trim(),
        "1 written-meanwhile",
        "the concurrent write stands alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_archive_restores_into_a_key_vault_through_the_name_mapping() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    seed_kv(&bao).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = age::x25519::Identity::generate();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("{}\n", identity.to_string().expose_secret())).expect("key");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let from = mount(&bao);
    let recipient = identity.to_public().to_string();
    let backup = coldvault(
        &emulator,
        &bao,
        &[
            "backup",
            "--vault",
            &from,
            "-r",
            &recipient,
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(backup.status.code(), Some(0), "{}", text(&backup));
    // The mount changes after the backup: the restore brings back what the archive holds.
    bao.hvac("client.secrets.kv.v2.delete_metadata_and_all_versions(path='app/db')")
        .await;
    let archive = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".age"))
        .expect("an archive");
    let to = emulator.vault_url("alpha");
    let args = [
        "restore",
        archive.to_str().unwrap(),
        "--vault",
        &to,
        "-i",
        key.to_str().unwrap(),
        "--granularity",
        "key",
        "--json",
    ];
    let output = coldvault(&emulator, &bao, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let alpha = vault(&emulator, "alpha").await;
    assert_eq!(
        secret_names(&alpha).await,
        ["app--api--token", "app--db--password", "app--db--user"]
    );
    let password: Vec<String> = versions_of(&emulator, &alpha, "app--db--password")
        .await
        .into_iter()
        .map(|(v, _, _)| v)
        .collect();
    assert_eq!(
        password,
        ["pw-1", "pw-2", CANARY],
        "every version, in order"
    );
    let user = versions_of(&emulator, &alpha, "app--db--user").await;
    assert_eq!(user[0].2["team"], "payments");
    assert_eq!(user[0].2["coldvault-source"], from.to_lowercase());
    let rerun = coldvault(&emulator, &bao, &args).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let lines = plan_lines(&rerun);
    assert_eq!(lines.len(), 3, "{}", text(&rerun));
    assert!(
        lines.iter().all(|(action, _)| action == "skip"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_metadata_over_key_vaults_tag_limit_is_named_and_counted() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    bao.hvac(
        "kv = client.secrets.kv.v2\n\
         kv.create_or_update_secret(path='wide', secret={'v': '1'})\n\
         kv.update_metadata(path='wide', custom_metadata={f'k{i:02}': 'x' for i in range(16)})\n\
         kv.create_or_update_secret(path='narrow', secret={'v': '2'})\n",
    )
    .await;
    let (from, to) = (mount(&bao), emulator.vault_url("alpha"));
    let output = coldvault(
        &emulator,
        &bao,
        &["copy", "--from", &from, "--to", &to, "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(summary(&output)["tags_cut"], 1, "{}", text(&output));
    let item = of_type(&output, "item")
        .into_iter()
        .find(|e| e["name"] == "wide")
        .expect("an item event");
    let reason = item["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("2 custom_metadata entries not copied") && reason.contains("k14, k15"),
        "{item}"
    );
    let alpha = vault(&emulator, "alpha").await;
    let tags = alpha
        .get_secret("wide", None)
        .await
        .expect("copied")
        .properties
        .tags;
    assert_eq!(tags.len(), 15, "{tags:?}");
    assert_eq!(tags["coldvault-source"], from.to_lowercase());
    assert!(
        !tags.contains_key("k14") && tags.contains_key("k13"),
        "{tags:?}"
    );
    // Without --json the entries left out are named on stderr.
    let output = coldvault(
        &emulator,
        &bao,
        &["copy", "--from", &from, "--to", &emulator.vault_url("beta")],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("secret wide: 2 custom_metadata entries not copied"),
        "{stderr}"
    );
}

/// The README's KV policies for copy (`# copy from the mount: …` and `# copy into the mount
/// …` in its `hcl` block), read from the README itself so the document is what is tested.
fn readme_copy_policies() -> (String, String) {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    let start = readme
        .find("# copy from the mount:")
        .expect("the copy policies");
    let block = &readme[start..];
    let block = &block[..block.find("```").expect("the block ends")];
    let split = block
        .find("# copy into the mount")
        .expect("a target policy");
    (block[..split].to_owned(), block[split..].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_policies_are_enough_to_copy_each_way() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    seed_kv(&bao).await;
    let (from_policy, into_policy) = readme_copy_policies();
    let token_for = |name: &str, policy: String| {
        format!(
            "client.sys.create_or_update_policy(name='{name}', policy={policy:?})\n\
             print(client.auth.token.create(policies=['{name}'])['auth']['client_token'])"
        )
    };
    let reader = bao.hvac(&token_for("copy-from", from_policy)).await;
    let writer = bao.hvac(&token_for("copy-into", into_policy)).await;
    let mount = mount(&bao);
    let (alpha, beta) = (emulator.vault_url("alpha"), emulator.vault_url("beta"));

    let out = coldvault_with(
        &emulator,
        reader.trim(),
        &["copy", "--from", &mount, "--to", &alpha],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let beta_vault = vault(&emulator, "beta").await;
    set(&beta_vault, "api-key", "k-1", &[]).await;
    let into = ["copy", "--from", &beta, "--to", &mount, "--prune", "--json"];
    let out = coldvault_with(&emulator, writer.trim(), &into).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    beta_vault
        .soft_delete(coldvault::vault::ItemKind::Secret, "api-key")
        .await
        .expect("deleted in the source");
    let out = coldvault_with(&emulator, writer.trim(), &into).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(summary(&out)["deleted"], 1, "{}", text(&out));
    // The reader's token may not write: the item is not copied, and says why.
    set(&beta_vault, "fresh", "f-1", &[]).await;
    let out = coldvault_with(
        &emulator,
        reader.trim(),
        &["copy", "--from", &beta, "--to", &mount, "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let item = of_type(&out, "item")
        .into_iter()
        .find(|e| e["name"] == "fresh")
        .expect("an item event");
    assert_eq!(item["status"], "not-copied", "{item}");
    assert!(
        item["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("PermissionDenied"),
        "{item}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_copies_into_another_mount_with_its_data_and_metadata() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    seed_kv(&bao).await;
    bao.hvac("client.sys.enable_secrets_engine('kv', path='copy', options={'version': '2'})")
        .await;
    let (from, to) = (mount(&bao), bao.kv_url("copy"));
    let args = ["copy", "--from", &from, "--to", &to, "--json"];
    let output = coldvault(&emulator, &bao, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let read = bao
        .hvac(
            "kv = client.secrets.kv.v2\n\
             def data(path, mount):\n\
             \x20   return kv.read_secret_version(path=path, mount_point=mount, \
             raise_on_deleted_version=True)['data']['data']\n\
             out = {}\n\
             for path in ['app/db', 'app/api']:\n\
             \x20   a, b = data(path, 'secret'), data(path, 'copy')\n\
             \x20   m = kv.read_secret_metadata(path=path, mount_point='copy')['data']\n\
             \x20   out[path] = {'same': a == b, 'versions': m['current_version'], \
             'meta': m['custom_metadata']}\n\
             print(json.dumps(out))",
        )
        .await;
    let read: Value = serde_json::from_str(read.trim()).expect("hvac JSON");
    assert_eq!(read["app/db"]["same"], true, "{read}");
    assert_eq!(read["app/db"]["versions"], 3, "every version: {read}");
    assert_eq!(read["app/db"]["meta"]["team"], "payments", "{read}");
    assert_eq!(
        read["app/db"]["meta"]["coldvault-source"],
        from.to_lowercase()
    );
    assert_eq!(read["app/api"]["same"], true, "{read}");
    let rerun = coldvault(&emulator, &bao, &args).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let lines = plan_lines(&rerun);
    assert_eq!(lines.len(), 2, "{}", text(&rerun));
    assert!(
        lines.iter().all(|(action, _)| action == "skip"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_or_a_missing_mount_is_one_line_naming_the_side() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let emulator = TestEmulator::start().await;
    let to = emulator.vault_url("alpha");
    let one_line = |output: &Output, side: &str, what: &str| {
        assert_eq!(output.status.code(), Some(1), "{}", text(output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("coldvault: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].starts_with(&format!("coldvault: error: {side} side: bao+")),
            "{stderr}"
        );
        assert!(errors[0].contains(what), "{what}: {stderr}");
        assert!(stderr.contains("hint:"), "{stderr}");
    };
    let bad_token = coldvault_with(
        &emulator,
        "not-a-token",
        &["copy", "--from", &mount(&bao), "--to", &to],
    )
    .await;
    one_line(&bad_token, "from", "refused the token");
    let missing = coldvault(
        &emulator,
        &bao,
        &["copy", "--from", &to, "--to", &bao.kv_url("nothing-here")],
    )
    .await;
    one_line(&missing, "to", "nothing-here");
    let alpha = vault(&emulator, "alpha").await;
    assert!(secret_names(&alpha).await.is_empty(), "nothing written");
}
