//! Fleets end to end: `coldvault vaults` and `coldvault backup --all-subscriptions` (the real
//! binary) against a local Key Vault serving 40 vaults over 3 subscriptions and 2 tenants, some
//! tagged, one the identity may list but not read, one soft-deleted vault and one Managed HSM,
//! discovered through its Azure Resource Manager surface; and that surface's deleted vaults and
//! Managed HSMs over raw HTTP, in Azure's shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::backup::Workspace;
use crate::support::TestEmulator;
use coldvault::emulator::{EmulatorConfig, VaultSpec};

/// A value planted in every vault that no output of the tool may show.
const CANARY: &str = "CANARY-4d1e-fleet-never-print-me";

const SUB_1: &str = "11111111-aaaa-0000-0000-000000000001";
const SUB_2: &str = "22222222-aaaa-0000-0000-000000000002";
const SUB_3: &str = "33333333-bbbb-0000-0000-000000000003";
const TENANT_A: &str = "tenant-a.example";
const TENANT_B: &str = "tenant-b.example";
/// The vault of tenant A its identity may list (ARM) but not read (an empty access policy).
const LOCKED: &str = "locked-kv";
const DELETED: &str = "gone-kv";
const HSM: &str = "hsm-one";

/// One vault of the fleet as the test declares it.
#[derive(Debug, Clone)]
struct Declared {
    name: String,
    subscription: &'static str,
    tenant: &'static str,
    resource_group: String,
    tags: BTreeMap<String, String>,
}

/// The 40 live vaults: 16 in subscription 1 and 14 in subscription 2 (tenant A; `locked-kv`
/// among them), 10 in subscription 3 (tenant B). Every third is tagged `env=prod`, every
/// fifth `team=pay`; resource groups `rg-app` and `rg-data` alternate.
fn fleet() -> Vec<Declared> {
    let mut vaults = Vec::new();
    for i in 0..40 {
        let (subscription, tenant) = match i {
            0..16 => (SUB_1, TENANT_A),
            16..30 => (SUB_2, TENANT_A),
            _ => (SUB_3, TENANT_B),
        };
        let name = if i == 5 {
            LOCKED.to_owned()
        } else if i % 2 == 0 {
            format!("app-kv-{i:02}")
        } else {
            format!("data-kv-{i:02}")
        };
        let mut tags = BTreeMap::new();
        if i % 3 == 0 {
            tags.insert("env".to_owned(), "prod".to_owned());
        }
        if i % 5 == 0 {
            tags.insert("team".to_owned(), "pay".to_owned());
        }
        vaults.push(Declared {
            name,
            subscription,
            tenant,
            resource_group: if i % 2 == 0 { "rg-app" } else { "rg-data" }.to_owned(),
            tags,
        });
    }
    vaults
}

fn spec(d: &Declared) -> VaultSpec {
    let mut spec = VaultSpec::new(&d.name);
    spec.subscription = d.subscription.to_owned();
    spec.tenant = Some(d.tenant.to_owned());
    spec.resource_group = d.resource_group.clone();
    spec.tags = d.tags.clone();
    spec
}

/// The local Key Vault serving [`fleet`], a soft-deleted vault in subscription 2 and a
/// Managed HSM in subscription 1, each vault seeded with three secrets (one the canary); the
/// first tenant's client may not read `locked-kv`. ARM pages of 5 make discovery page.
async fn fleet_emulator(ws: &Workspace) -> TestEmulator {
    let declared = fleet();
    let secrets: Vec<Value> = declared
        .iter()
        .flat_map(|d| {
            [
                json!({"vault": d.name, "name": "db-password", "value": format!("pw-{}", d.name)}),
                json!({"vault": d.name, "name": "api-token", "value": CANARY}),
                json!({"vault": d.name, "name": "rotated", "value": "v", "version_count": 3}),
            ]
        })
        .collect();
    let seed = ws.path("seed.json");
    std::fs::write(&seed, json!({ "secrets": secrets }).to_string()).expect("seed written");
    let mut deleted = VaultSpec::new(DELETED);
    deleted.subscription = SUB_2.to_owned();
    deleted.tenant = Some(TENANT_A.to_owned());
    deleted.purge_protection = true;
    deleted.tags.insert("env".to_owned(), "prod".to_owned());
    let mut hsm = VaultSpec::new(HSM);
    hsm.subscription = SUB_1.to_owned();
    hsm.tenant = Some(TENANT_A.to_owned());
    hsm.resource_group = "rg-app".to_owned();
    let emulator = TestEmulator::start_with(EmulatorConfig {
        vaults: declared.iter().map(spec).collect(),
        deleted_vaults: vec![deleted],
        managed_hsms: vec![hsm],
        seed: Some(seed),
        page_size: 5,
        tenant_id: Some(TENANT_A.to_owned()),
        ..EmulatorConfig::default()
    })
    .await;
    let (status, body) = emulator
        .admin(
            reqwest::Method::PUT,
            "/permissions",
            Some(json!({"vault": LOCKED, "secrets": [], "keys": [], "certificates": []})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    emulator
}

/// Runs `coldvault` as `tenant`'s built-in client, with the local ARM endpoint in the
/// environment (`COLDVAULT_ARM_ENDPOINT`) and `extra` variables.
async fn coldvault_as(
    emulator: &TestEmulator,
    tenant: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Output {
    let ready = emulator.ready();
    let client = &ready.tenants[tenant];
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_TENANT_ID", tenant)
        .env("AZURE_CLIENT_ID", &client.client_id)
        .env("AZURE_CLIENT_SECRET", &client.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .env("COLDVAULT_ARM_ENDPOINT", &ready.arm_endpoint);
    for (name, value) in extra {
        command.env(name, value);
    }
    command.output().await.expect("coldvault runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `coldvault vaults --json` as `tenant` with `args`: the document.
async fn listing(emulator: &TestEmulator, tenant: &str, args: &[&str]) -> Value {
    let mut all = vec!["vaults", "--json"];
    all.extend_from_slice(args);
    let output = coldvault_as(emulator, tenant, &all, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

/// The names of the listed resources whose `action` is `action`.
fn named(document: &Value, action: &str) -> BTreeSet<String> {
    document["vaults"]
        .as_array()
        .expect("vaults")
        .iter()
        .filter(|v| v["action"] == action)
        .map(|v| v["name"].as_str().expect("name").to_owned())
        .collect()
}

fn expected(filter: impl Fn(&Declared) -> bool) -> BTreeSet<String> {
    fleet()
        .into_iter()
        .filter(|d| filter(d))
        .map(|d| d.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_every_vault_of_each_tenant_with_its_state() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let a = listing(&emulator, TENANT_A, &["--all-subscriptions"]).await;
    assert_eq!(named(&a, "backup"), expected(|d| d.tenant == TENANT_A));
    assert_eq!(named(&a, "not-supported"), BTreeSet::from([HSM.to_owned()]));
    assert_eq!(named(&a, "not-taken"), BTreeSet::from([DELETED.to_owned()]));
    let subscriptions: BTreeSet<&str> = a["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(subscriptions, BTreeSet::from([SUB_1, SUB_2]));
    assert_eq!(a["found"], 32, "30 vaults, a deleted vault and an HSM: {a}");
    assert!(a["failures"].as_array().unwrap().is_empty());
    let gone = a["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == DELETED)
        .unwrap();
    assert_eq!(gone["purge_protection"], true);
    assert_eq!(gone["kind"], "deleted-vault");
    assert!(gone["deletion_date"].as_str().is_some(), "{gone}");
    assert!(
        gone["id"]
            .as_str()
            .unwrap()
            .ends_with("/providers/Microsoft.KeyVault/vaults/gone-kv")
    );
    let one = a["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "app-kv-00")
        .unwrap();
    assert_eq!(one["soft_delete"], true);
    assert_eq!(one["soft_delete_retention_days"], 90);
    assert_eq!(one["purge_protection"], false);
    assert_eq!(one["resource_group"], "rg-app");
    assert_eq!(one["tags"], json!({"env": "prod", "team": "pay"}));
    assert_eq!(one["url"], emulator.vault_url("app-kv-00"));

    let b = listing(&emulator, TENANT_B, &["--all-subscriptions"]).await;
    assert_eq!(named(&b, "backup"), expected(|d| d.tenant == TENANT_B));
    // The two tenants' listings together are the whole fleet, each vault once.
    let mut union = named(&a, "backup");
    union.extend(named(&b, "backup"));
    assert_eq!(union.len(), 40);

    // The table: one row per resource and what a backup does with it.
    let output = coldvault_as(&emulator, TENANT_A, &["vaults", "--all-subscriptions"], &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(HSM) && l.contains("not supported (Managed HSM)")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(DELETED) && l.contains("not taken")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("30 vaults to back up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_exactly_the_readable_vaults_and_names_the_other() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &["vaults", "--all-subscriptions", "--check", "--json"],
        &[],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(3), "{shown}");
    assert!(!shown.contains(CANARY));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains(&format!("coldvault: error: vaults not readable: {LOCKED}")),
        "{shown}"
    );
    let document: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    let rows = document["vaults"].as_array().unwrap();
    let readable: BTreeSet<String> = rows
        .iter()
        .filter(|v| v["readable"] == true)
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        readable,
        expected(|d| d.tenant == TENANT_A && d.name != LOCKED)
    );
    let locked = rows.iter().find(|v| v["name"] == LOCKED).unwrap();
    assert_eq!(locked["readable"], false);
    assert!(
        locked["read_error"]
            .as_str()
            .unwrap()
            .contains("ForbiddenByPolicy"),
        "{locked}"
    );
    // Neither the HSM nor the deleted vault is checked: there is nothing to read.
    for name in [HSM, DELETED] {
        let row = rows.iter().find(|v| v["name"] == name).unwrap();
        assert!(row.get("readable").is_none(), "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_of_another_tenant_is_a_named_failure() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &["vaults", "--subscription", SUB_1, "--subscription", SUB_3],
        &[],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(3), "{shown}");
    assert!(
        shown.contains(&format!("subscription {SUB_3}"))
            && shown.contains("InvalidAuthenticationTokenTenant"),
        "{shown}"
    );
    assert!(
        shown.contains("hint: the subscription belongs to another tenant"),
        "{shown}"
    );
    // Subscription 1's vaults are still listed.
    assert!(String::from_utf8_lossy(&output.stdout).contains("app-kv-00"));
    // No subscription read at all: exit 1.
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &["vaults", "--subscription", SUB_3],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_group_and_name_filters_select_exactly() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let a = |d: &Declared| d.tenant == TENANT_A;
    let cases: Vec<(Vec<&str>, BTreeSet<String>)> = vec![
        (
            vec!["--vault-tag", "env=prod"],
            expected(|d| a(d) && d.tags.get("env").is_some_and(|v| v == "prod")),
        ),
        (
            vec!["--vault-tag", "env=prod", "--vault-tag", "team=pay"],
            expected(|d| a(d) && d.tags.contains_key("env") && d.tags.contains_key("team")),
        ),
        (
            vec!["--vault-tag", "team"],
            expected(|d| a(d) && d.tags.contains_key("team")),
        ),
        (
            vec!["--resource-group", "RG-DATA"],
            expected(|d| a(d) && d.resource_group == "rg-data"),
        ),
        (
            vec!["--name", "app-*"],
            expected(|d| a(d) && d.name.starts_with("app-")),
        ),
        (
            vec!["--vault-name", "*-kv-1?", "--exclude", "data-*"],
            expected(|d| {
                a(d) && d.name.starts_with("app-kv-1") && d.name.len() == "app-kv-10".len()
            }),
        ),
        (
            vec!["--subscription", SUB_2, "--vault-exclude", "app-*"],
            expected(|d| d.subscription == SUB_2 && !d.name.starts_with("app-")),
        ),
    ];
    for (args, want) in cases {
        let mut all = args.clone();
        if !all.contains(&"--subscription") {
            all.push("--all-subscriptions");
        }
        let document = listing(&emulator, TENANT_A, &all).await;
        assert!(!want.is_empty(), "{args:?} selects something");
        assert_eq!(named(&document, "backup"), want, "{args:?}");
    }
    // The tag filter applies to deleted vaults too: `gone-kv` is tagged env=prod.
    let document = listing(
        &emulator,
        TENANT_A,
        &["--all-subscriptions", "--vault-tag", "env=prod"],
    )
    .await;
    assert_eq!(
        named(&document, "not-taken"),
        BTreeSet::from([DELETED.to_owned()])
    );
    assert!(named(&document, "not-supported").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_one_to_seven_cover_every_vault_exactly_once() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let all: BTreeSet<String> = expected(|_| true);
    for count in 1..=7u32 {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for index in 0..count {
            let shard = format!("{index}/{count}");
            for tenant in [TENANT_A, TENANT_B] {
                let document = listing(
                    &emulator,
                    tenant,
                    &["--all-subscriptions", "--shard", &shard],
                )
                .await;
                assert_eq!(document["shard"], shard.as_str());
                for name in named(&document, "backup") {
                    let before = seen.insert(name.clone(), index);
                    assert_eq!(
                        before, None,
                        "{name} in shards {before:?} and {index} of {count}"
                    );
                }
            }
        }
        let covered: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(covered, all, "{count} shards cover the fleet");
    }
    // --shards N takes the index from JOB_COMPLETION_INDEX, as an Indexed Job sets it.
    let by_flag = listing(
        &emulator,
        TENANT_A,
        &["--all-subscriptions", "--shard", "2/3"],
    )
    .await;
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &["vaults", "--json", "--all-subscriptions", "--shards", "3"],
        &[("JOB_COMPLETION_INDEX", "2")],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let by_index: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(named(&by_index, "backup"), named(&by_flag, "backup"));
    // Without the variable, --shards is a usage error.
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &["vaults", "--all-subscriptions", "--shards", "3"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("JOB_COMPLETION_INDEX"));
}

/// The archives in `dir`, by vault name (the part before the timestamp).
fn archives(dir: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .expect("output folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
        .map(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            let vault = file.rsplit_once('-').map(|(v, _)| v.to_owned()).unwrap();
            (vault, p)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_backup_writes_one_verified_archive_per_readable_vault() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let out = ws.path("fleet");
    std::fs::create_dir_all(&out).unwrap();
    let out_text = out.to_string_lossy().into_owned();
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &[
            "backup",
            "--all-subscriptions",
            "-r",
            &ws.recipient,
            "-o",
            &out_text,
            "--json",
            "--vault-concurrency",
            "6",
        ],
        &[],
    )
    .await;
    let shown = text(&output);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the locked vault fails: {shown}"
    );
    assert!(!shown.contains(CANARY), "the canary leaked: {shown}");
    assert!(
        shown.contains(&format!("fleet backup incomplete: failed: {LOCKED}")),
        "{shown}"
    );
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON Lines"))
        .collect();
    let summary = events
        .iter()
        .find(|e| e["type"] == "fleet_summary")
        .expect("one fleet summary");
    let rows = summary["vaults"].as_array().unwrap();
    assert_eq!(rows.len(), 30, "every readable vault and the locked one");
    for row in rows {
        let name = row["vault"].as_str().unwrap();
        if name == LOCKED {
            assert_eq!(row["status"], "failed");
            assert!(
                row["error"].as_str().unwrap().contains("ForbiddenByPolicy"),
                "{row}"
            );
        } else {
            assert_eq!(row["status"], "ok", "{row}");
            assert_eq!(row["items"], 3, "{row}");
            assert!(row["bytes"].as_u64().unwrap() > 0);
            assert!(row["seconds"].as_f64().is_some());
        }
    }
    assert_eq!(summary["failed"], json!([LOCKED]));
    let discovery = events.iter().find(|e| e["type"] == "discovery").unwrap();
    assert_eq!(discovery["managed_hsms_not_supported"], json!([HSM]));
    assert_eq!(discovery["deleted_vaults_not_taken"], json!([DELETED]));

    // One archive per readable vault of tenant A, each verified and holding its own vault.
    let written = archives(&out);
    let readable = expected(|d| d.tenant == TENANT_A && d.name != LOCKED);
    assert_eq!(written.keys().cloned().collect::<BTreeSet<_>>(), readable);
    let identity = ws.identity_file.to_string_lossy().into_owned();
    for (vault, path) in &written {
        let path_text = path.to_string_lossy().into_owned();
        let verify = coldvault_as(
            &emulator,
            TENANT_A,
            &["verify", &path_text, "-i", &identity],
            &[],
        )
        .await;
        assert_eq!(verify.status.code(), Some(0), "{vault}: {}", text(&verify));
        let inspect = coldvault_as(
            &emulator,
            TENANT_A,
            &["inspect", &path_text, "-i", &identity, "--json"],
            &[],
        )
        .await;
        let body: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
        assert_eq!(
            body["manifest"]["source"]["vault"],
            vault.as_str(),
            "{body}"
        );
    }
    // No temporary file is left behind.
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".tar.zst.age"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_backup_in_text_names_each_vault_in_one_summary() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let out = ws.path("fleet");
    let out_text = out.to_string_lossy().into_owned();
    let output = coldvault_as(
        &emulator,
        TENANT_B,
        &[
            "backup",
            "--subscription",
            SUB_3,
            "--vault-tag",
            "env=prod",
            "-r",
            &ws.recipient,
            "-o",
            &out_text,
            "--mkdir",
        ],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!text(&output).contains(CANARY));
    let want = expected(|d| d.subscription == SUB_3 && d.tags.contains_key("env"));
    assert_eq!(
        archives(&out).keys().cloned().collect::<BTreeSet<_>>(),
        want
    );
    let table_start = stderr.find("VAULT").expect("a summary table");
    let table = &stderr[table_start..];
    for vault in &want {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(vault.as_str()) && l.trim_end().ends_with("ok")),
            "{vault}: {table}"
        );
    }
    assert!(
        stderr.contains(&format!(
            "fleet: {} vaults: {} complete, 0 partial, 0 failed",
            want.len(),
            want.len()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_vault_is_named_and_its_archive_kept() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    // app-kv-02's values cannot be read (no get): its secrets are not captured in full.
    let (status, body) = emulator
        .admin(
            reqwest::Method::PUT,
            "/permissions",
            Some(json!({"vault": "app-kv-02", "secrets": ["list", "backup"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let out = ws.path("fleet");
    let out_text = out.to_string_lossy().into_owned();
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &[
            "backup",
            "--subscription",
            SUB_1,
            "--vault-name",
            "app-kv-0[024]",
            "-r",
            &ws.recipient,
            "-o",
            &out_text,
            "--mkdir",
            "--json",
        ],
        &[],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(3), "{shown}");
    assert!(!shown.contains(CANARY));
    assert!(
        shown.contains("fleet backup incomplete: partial: app-kv-02"),
        "{shown}"
    );
    let summary: Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "fleet_summary")
        .unwrap();
    let statuses: BTreeMap<&str, &str> = summary["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["vault"].as_str().unwrap(), v["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            ("app-kv-00", "ok"),
            ("app-kv-02", "partial"),
            ("app-kv-04", "ok")
        ])
    );
    let partial = &summary["vaults"][1];
    assert!(partial["not_captured"].as_u64().unwrap() > 0, "{partial}");
    // The partial vault's archive is written, as a single-vault run writes it.
    assert_eq!(
        archives(&out).keys().cloned().collect::<Vec<_>>(),
        ["app-kv-00", "app-kv-02", "app-kv-04"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_flags_are_checked_before_any_request() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "backup",
            "--all-subscriptions",
            "-r",
            &ws.recipient,
            "-o",
            "-",
        ],
        vec![
            "backup",
            "--all-subscriptions",
            "--vault",
            "x",
            "-r",
            &ws.recipient,
        ],
        vec!["vaults", "--all-subscriptions", "--subscription", SUB_1],
        vec!["vaults", "--all-subscriptions", "--shard", "3/3"],
        vec!["vaults", "--all-subscriptions", "--vault-tag", "=x"],
        vec![
            "vaults",
            "--all-subscriptions",
            "--arm-endpoint",
            "http://localhost:1/",
        ],
        vec!["vaults"],
    ];
    for args in cases {
        let before = emulator.journal().await.len();
        let output = coldvault_as(&emulator, TENANT_A, &args, &[]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.starts_with("coldvault: error:") || stderr.starts_with("error:"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            emulator.journal().await.len(),
            before,
            "{args:?} sent a request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_resource_manager_is_one_line_and_a_hint() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("https://localhost:{port}/");
    let output = coldvault_as(
        &emulator,
        TENANT_A,
        &["vaults", "--all-subscriptions", "--arm-endpoint", &endpoint],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("coldvault: warning:"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("coldvault: error: listing subscriptions: "),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("hint: check --arm-endpoint"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(output.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_every_vault_and_leaves_no_partial_file() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    // Every list of secrets waits a minute: the vaults' archives are open when the signal comes.
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(
                json!([{"kind": "delay", "method": "GET", "path": "/secrets",
                         "delay_ms": 60_000, "count": 1000}]),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let out = ws.path("fleet");
    std::fs::create_dir_all(&out).unwrap();
    let ready = emulator.ready();
    let client = &ready.tenants[TENANT_A];
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(["backup", "--all-subscriptions", "-r", &ws.recipient, "-o"])
        .arg(&out)
        .args(["--vault-concurrency", "4"])
        .env_clear()
        .env("AZURE_TENANT_ID", TENANT_A)
        .env("AZURE_CLIENT_ID", &client.client_id)
        .env("AZURE_CLIENT_SECRET", &client.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .env("COLDVAULT_ARM_ENDPOINT", &ready.arm_endpoint)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("coldvault starts");
    let pid = child.id().expect("pid").to_string();
    let partials = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                    .count()
            })
            .unwrap_or(0)
    };
    let mut writing = false;
    for _ in 0..1200 {
        if partials(&out) >= 4 {
            writing = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(writing, "four vaults' archives were open");
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().await.expect("coldvault ends");
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(130), "{shown}");
    assert!(shown.contains("interrupted (SIGINT)"), "{shown}");
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

/// A GET on the local ARM with a token of the first tenant for the endpoint's own audience.
async fn arm_get(emulator: &TestEmulator, path_and_query: &str) -> (u16, Value) {
    let ready = emulator.ready();
    let token = emulator
        .token_with(json!({"audience": ready.arm_endpoint}))
        .await;
    let url = format!(
        "{}{}",
        ready.arm_endpoint.trim_end_matches('/'),
        path_and_query
    );
    let response = emulator
        .http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_lists_deleted_vaults_and_managed_hsms_in_azures_shapes() {
    let ws = Workspace::new();
    let emulator = fleet_emulator(&ws).await;
    let v = "api-version=2023-07-01";
    let (status, body) = arm_get(
        &emulator,
        &format!("/subscriptions/{SUB_2}/providers/Microsoft.KeyVault/deletedVaults?{v}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deleted = &body["value"][0];
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert_eq!(
        deleted["id"],
        format!(
            "/subscriptions/{SUB_2}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/{DELETED}"
        )
    );
    assert_eq!(deleted["type"], "Microsoft.KeyVault/deletedVaults");
    assert_eq!(
        deleted["properties"]["vaultId"],
        format!(
            "/subscriptions/{SUB_2}/resourceGroups/coldvault-local/providers/Microsoft.KeyVault/vaults/{DELETED}"
        )
    );
    assert_eq!(deleted["properties"]["purgeProtectionEnabled"], true);
    let deletion = deleted["properties"]["deletionDate"].as_str().unwrap();
    let purge = deleted["properties"]["scheduledPurgeDate"]
        .as_str()
        .unwrap();
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert_eq!(parse(purge) - parse(deletion), time::Duration::days(90));
    // The deleted vault is not among the live ones, and its name serves no vault.
    let (_, live) = arm_get(
        &emulator,
        &format!("/subscriptions/{SUB_2}/providers/Microsoft.KeyVault/vaults?{v}&$top=100"),
    )
    .await;
    assert!(
        live["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["name"] != DELETED),
        "{live}"
    );
    assert!(emulator.running.vault_url(DELETED).is_none());

    for path in [
        format!("/subscriptions/{SUB_1}/providers/Microsoft.KeyVault/managedHSMs?{v}"),
        format!(
            "/subscriptions/{SUB_1}/resourceGroups/rg-app/providers/Microsoft.KeyVault/managedHSMs?{v}"
        ),
    ] {
        let (status, body) = arm_get(&emulator, &path).await;
        assert_eq!(status, 200, "{body}");
        let hsm = &body["value"][0];
        assert_eq!(hsm["type"], "Microsoft.KeyVault/managedHSMs");
        assert_eq!(hsm["name"], HSM);
        assert_eq!(hsm["sku"]["name"], "Standard_B1");
        assert_eq!(
            hsm["properties"]["hsmUri"],
            "https://hsm-one.managedhsm.azure.net/"
        );
        assert_eq!(hsm["properties"]["tenantId"], TENANT_A);
    }
    let (_, body) = arm_get(
        &emulator,
        &format!("/subscriptions/{SUB_1}/resourceGroups/rg-data/providers/Microsoft.KeyVault/managedHSMs?{v}"),
    )
    .await;
    assert!(body["value"].as_array().unwrap().is_empty(), "{body}");
    // The generic resource list shows the HSM under its own type, and filters by it.
    let (_, body) = arm_get(
        &emulator,
        &format!(
            "/subscriptions/{SUB_1}/resources?api-version=2021-04-01&$top=100&$filter=resourceType%20eq%20%27Microsoft.KeyVault%2FmanagedHSMs%27"
        ),
    )
    .await;
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [HSM]);
    // Lists page with nextLink (pages of 5 here) and the endpoint's own audience is taken.
    let (status, body) = arm_get(
        &emulator,
        &format!("/subscriptions/{SUB_1}/providers/Microsoft.KeyVault/vaults?{v}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 5);
    assert!(
        body["nextLink"].as_str().unwrap().contains("skiptoken="),
        "{body}"
    );
}
