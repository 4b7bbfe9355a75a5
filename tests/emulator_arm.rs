//! The local Key Vault's Azure Resource Manager surface, its tenants, and what a person's own
//! scripts read from it: ARM lists and shapes over raw HTTP, tokens of one tenant refused by a
//! vault of another, the ready line's per-tenant clients and absolute CA path, `--print-env`,
//! and the "Use it from your own code" Rust snippet of `docs/EMULATOR.md`, run as written.

// The SDK's models are `#[non_exhaustive]`: fields are set after `Default::default()`.
#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use coldvault::emulator::{EmulatorConfig, VaultSpec};
use reqwest::Method;
use serde_json::Value;

use crate::support::TestEmulator;

#[path = "../docs/snippets/own_code.rs"]
mod own_code;

const SUB_A: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const SUB_B: &str = "bbbbbbbb-0000-0000-0000-00000000000b";
const TENANT_B: &str = "tenant-b.example";

/// Two tenants: `alpha` (purge protection, tags, its own resource group and location) and
/// `beta` in the first tenant's subscription A, `gamma` in tenant B's subscription B.
async fn two_tenants() -> TestEmulator {
    let mut alpha = VaultSpec::parse(
        "alpha,subscription=aaaaaaaa-0000-0000-0000-00000000000a,resource-group=rg-prod,location=northeurope,purge-protection,retention-days=30",
    )
    .unwrap();
    alpha.tags.insert("env".into(), "prod".into());
    let beta = VaultSpec::parse(&format!("beta,subscription={SUB_A}")).unwrap();
    let gamma = VaultSpec::parse(&format!("gamma,subscription={SUB_B},tenant={TENANT_B}")).unwrap();
    TestEmulator::start_with(EmulatorConfig {
        vaults: vec![alpha, beta, gamma],
        ..EmulatorConfig::default()
    })
    .await
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A token from the issuer's token endpoint (client credentials) for `scope`.
async fn token_for(emu: &TestEmulator, tenant: &str, scope: &str) -> String {
    let client = &emu.ready().tenants[tenant];
    let url = format!("{}/{tenant}/oauth2/v2.0/token", emu.ready().authority_host);
    let response = emu
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
            ("scope", scope),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn arm_token(emu: &TestEmulator, tenant: &str) -> String {
    token_for(emu, tenant, "https://management.core.windows.net//.default").await
}

/// GET on ARM (`https://localhost:PORT` + `path_and_query`): status, `WWW-Authenticate`, body.
async fn arm_get(
    emu: &TestEmulator,
    path_and_query: &str,
    token: Option<&str>,
) -> (u16, String, Value) {
    let url = if path_and_query.starts_with("https://") {
        path_and_query.to_string()
    } else {
        format!(
            "{}{}",
            emu.ready().arm_endpoint.trim_end_matches('/'),
            path_and_query
        )
    };
    let mut request = emu.http.request(Method::GET, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn names(list: &Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn arm_lists_only_the_tokens_tenant_with_azures_shapes() {
    let emu = two_tenants().await;
    let first = emu.ready().tenant_id.clone();
    let token = arm_token(&emu, &first).await;

    let (status, _, subs) =
        arm_get(&emu, "/subscriptions?api-version=2022-12-01", Some(&token)).await;
    assert_eq!(status, 200, "{subs}");
    let subs = subs["value"].as_array().unwrap().clone();
    assert_eq!(
        subs.len(),
        1,
        "tenant B's subscription is not listed: {subs:?}"
    );
    assert_eq!(subs[0]["subscriptionId"], SUB_A);
    assert_eq!(subs[0]["id"], format!("/subscriptions/{SUB_A}"));
    assert_eq!(subs[0]["tenantId"], first.as_str());
    assert_eq!(subs[0]["state"], "Enabled");

    let (status, _, tenants) = arm_get(&emu, "/tenants?api-version=2022-12-01", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(tenants["value"].as_array().unwrap().len(), 1);
    assert_eq!(tenants["value"][0]["tenantId"], first.as_str());
    assert_eq!(tenants["value"][0]["id"], format!("/tenants/{first}"));

    let (status, _, one) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}?api-version=2022-12-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["subscriptionId"], SUB_A);

    let (status, _, resources) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}/resources?$filter=resourceType%20eq%20%27Microsoft.KeyVault%2Fvaults%27&api-version=2015-11-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{resources}");
    assert_eq!(names(&resources), ["alpha", "beta"]);
    assert_eq!(resources["value"][0]["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(resources["value"][0]["location"], "northeurope");
    assert_eq!(resources["value"][0]["tags"]["env"], "prod");

    let (status, _, vaults) = arm_get(
        &emu,
        &format!(
            "/subscriptions/{SUB_A}/providers/Microsoft.KeyVault/vaults?api-version=2026-02-01"
        ),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(&vaults), ["alpha", "beta"]);
    let alpha = &vaults["value"][0];
    assert_eq!(
        alpha["id"],
        format!(
            "/subscriptions/{SUB_A}/resourceGroups/rg-prod/providers/Microsoft.KeyVault/vaults/alpha"
        )
    );
    let props = &alpha["properties"];
    assert_eq!(
        props["vaultUri"],
        format!("https://alpha.vault.localhost:{}/", emu.running.port())
    );
    assert_eq!(props["tenantId"], first.as_str());
    assert_eq!(props["sku"]["name"], "standard");
    assert_eq!(props["sku"]["family"], "A");
    assert_eq!(props["enableSoftDelete"], true);
    assert_eq!(props["softDeleteRetentionInDays"], 30);
    assert_eq!(props["enablePurgeProtection"], true);
    assert_eq!(props["enableRbacAuthorization"], true);
    let beta = &vaults["value"][1];
    assert!(beta["properties"].get("enablePurgeProtection").is_none());
    assert_eq!(beta["location"], "westeurope");
    assert!(
        beta["id"]
            .as_str()
            .unwrap()
            .contains("/resourceGroups/coldvault-local/")
    );

    let (status, _, got) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}/resourceGroups/rg-prod/providers/Microsoft.KeyVault/vaults/alpha?api-version=2024-11-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got, *alpha);
    let (status, _, in_rg) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}/resourceGroups/coldvault-local/providers/Microsoft.KeyVault/vaults?api-version=2024-11-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(&in_rg), ["beta"]);

    let (status, _, missing) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}/resourceGroups/rg-prod/providers/Microsoft.KeyVault/vaults/nope?api-version=2024-11-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "ResourceNotFound");
    let (status, _, no_rg) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}/resourceGroups/rg-none/providers/Microsoft.KeyVault/vaults?api-version=2024-11-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(no_rg["error"]["code"], "ResourceGroupNotFound");

    let (status, _, deleted) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_A}/providers/Microsoft.KeyVault/deletedVaults?api-version=2026-02-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["value"], Value::Array(Vec::new()));

    // Tenant B's subscription, with a token of the first tenant: Azure's 401.
    let (status, challenge, other) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_B}?api-version=2022-12-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(other["error"]["code"], "InvalidAuthenticationTokenTenant");
    assert!(challenge.contains(TENANT_B), "{challenge}");
    let (status, _, unknown) = arm_get(
        &emu,
        "/subscriptions/cccccccc-0000-0000-0000-00000000000c?api-version=2022-12-01",
        Some(&token),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["code"], "SubscriptionNotFound");

    // Tenant B sees its own subscription and vault only.
    let token_b = arm_token(&emu, TENANT_B).await;
    let (_, _, subs_b) = arm_get(
        &emu,
        "/subscriptions?api-version=2022-12-01",
        Some(&token_b),
    )
    .await;
    let ids: Vec<&str> = subs_b["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriptionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [SUB_B]);
    let (_, _, vaults_b) = arm_get(
        &emu,
        &format!(
            "/subscriptions/{SUB_B}/providers/Microsoft.KeyVault/vaults?api-version=2026-02-01"
        ),
        Some(&token_b),
    )
    .await;
    assert_eq!(names(&vaults_b), ["gamma"]);
    assert_eq!(vaults_b["value"][0]["properties"]["tenantId"], TENANT_B);
    emu.running.shutdown().await;
}

#[tokio::test]
async fn arm_lists_page_with_next_link() {
    let vaults = (0..5)
        .map(|i| VaultSpec::parse(&format!("v{i},subscription={SUB_A}")).unwrap())
        .collect();
    let emu = TestEmulator::start_with(EmulatorConfig {
        vaults,
        ..EmulatorConfig::default()
    })
    .await;
    let token = arm_token(&emu, &emu.ready().tenant_id.clone()).await;
    for first_page in [
        format!(
            "/subscriptions/{SUB_A}/providers/Microsoft.KeyVault/vaults?api-version=2026-02-01&$top=2"
        ),
        format!(
            "/subscriptions/{SUB_A}/resources?$filter=resourceType%20eq%20%27Microsoft.KeyVault%2Fvaults%27&$top=2&api-version=2015-11-01"
        ),
    ] {
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut next = Some(first_page);
        while let Some(link) = next {
            let (status, _, page) = arm_get(&emu, &link, Some(&token)).await;
            assert_eq!(status, 200, "{link}: {page}");
            assert!(page["value"].as_array().unwrap().len() <= 2);
            seen.extend(names(&page));
            pages += 1;
            next = page["nextLink"].as_str().map(str::to_string);
            if let Some(n) = &next {
                assert!(
                    n.starts_with(&format!(
                        "https://localhost:{}/subscriptions/",
                        emu.running.port()
                    )),
                    "{n}"
                );
                assert!(n.contains("api-version="), "{n}");
                assert!(n.contains("%24top=2"), "{n}");
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ["v0", "v1", "v2", "v3", "v4"]);
    }
    // Without `$top`, the emulator's page size applies (so `--page-size` forces paging on ARM
    // clients too).
    emu.settings(serde_json::json!({"page_size": 4})).await;
    let (_, _, page) = arm_get(
        &emu,
        &format!(
            "/subscriptions/{SUB_A}/providers/Microsoft.KeyVault/vaults?api-version=2026-02-01"
        ),
        Some(&token),
    )
    .await;
    assert_eq!(names(&page).len(), 4);
    assert!(page["nextLink"].is_string());
    emu.running.shutdown().await;
}

#[tokio::test]
async fn vault_token_is_refused_by_arm_and_arm_token_by_a_vault() {
    let emu = two_tenants().await;
    let first = emu.ready().tenant_id.clone();
    let vault_token = emu.token().await;
    let (status, _, body) = arm_get(
        &emu,
        "/subscriptions?api-version=2022-12-01",
        Some(&vault_token),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
    let (status, challenge, body) =
        arm_get(&emu, "/subscriptions?api-version=2022-12-01", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    assert!(
        challenge.starts_with("Bearer authorization_uri="),
        "{challenge}"
    );

    for scope in [
        "https://management.azure.com/.default",
        "https://management.core.windows.net//.default",
    ] {
        let arm = token_for(&emu, &first, scope).await;
        let response = emu
            .http
            .get(emu.url("alpha", "/secrets?api-version=7.6"))
            .bearer_auth(&arm)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("AKV10022: Invalid audience"),
            "{body}"
        );
        let (status, _, _) =
            arm_get(&emu, "/subscriptions?api-version=2022-12-01", Some(&arm)).await;
        assert_eq!(status, 200, "{scope}");
    }
    emu.running.shutdown().await;
}

#[tokio::test]
async fn arm_api_version_missing_or_unknown_is_400() {
    let emu = two_tenants().await;
    let token = arm_token(&emu, &emu.ready().tenant_id.clone()).await;
    let (status, _, body) = arm_get(&emu, "/subscriptions", Some(&token)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");
    let (status, _, body) = arm_get(&emu, "/subscriptions?api-version=7.6", Some(&token)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2022-12-01")
    );
    let (status, _, body) = arm_get(
        &emu,
        &format!(
            "/subscriptions/{SUB_A}/providers/Microsoft.KeyVault/vaults?api-version=2022-12-01"
        ),
        Some(&token),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "NoRegisteredProviderFound");
    emu.running.shutdown().await;
}

#[tokio::test]
async fn vault_refuses_a_token_of_another_tenant_naming_its_own_tenant() {
    let emu = two_tenants().await;
    let first = emu.ready().tenant_id.clone();
    let port = emu.running.port();
    let scope = format!("https://vault.localhost:{port}/.default");
    let token_a = token_for(&emu, &first, &scope).await;
    let token_b = token_for(&emu, TENANT_B, &scope).await;

    let get = |vault: &'static str, token: String| {
        let url = emu.url(vault, "/secrets?api-version=7.6");
        let http = emu.http.clone();
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, challenge, body)
        }
    };
    assert_eq!(get("alpha", token_a.clone()).await.0, 200);
    assert_eq!(get("gamma", token_b.clone()).await.0, 200);

    let (status, challenge, body) = get("gamma", token_a).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10032: Invalid issuer."),
        "{body}"
    );
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://localhost:{port}/{TENANT_B}\", resource=\"https://vault.localhost:{port}\""
        )
    );
    let (status, challenge, _) = get("alpha", token_b).await;
    assert_eq!(status, 401);
    assert!(challenge.contains(&format!("/{first}\"")), "{challenge}");
    emu.running.shutdown().await;
}

#[tokio::test]
async fn issuer_serves_every_tenant_and_keeps_clients_in_their_tenant() {
    let emu = two_tenants().await;
    let ready = emu.ready().clone();
    assert_eq!(ready.tenants.len(), 2);
    assert_eq!(ready.tenants[&ready.tenant_id].client_id, ready.client_id);
    assert_eq!(
        ready.tenants[&ready.tenant_id].client_secret,
        ready.client_secret
    );
    assert_ne!(ready.tenants[TENANT_B].client_id, ready.client_id);
    assert_eq!(
        ready.arm_endpoint,
        format!("https://localhost:{}/", ready.port)
    );

    for tenant in [ready.tenant_id.as_str(), TENANT_B] {
        let config: Value = emu
            .http
            .get(format!(
                "{}/{tenant}/v2.0/.well-known/openid-configuration",
                ready.authority_host
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            config["issuer"],
            format!("{}/{tenant}/v2.0", ready.authority_host)
        );
        let jwks = emu
            .http
            .get(format!(
                "{}/{tenant}/discovery/v2.0/keys",
                ready.authority_host
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(jwks.status().as_u16(), 200);
    }
    let unknown = emu
        .http
        .get(format!(
            "{}/nobody/v2.0/.well-known/openid-configuration",
            ready.authority_host
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 400);

    // Tenant B's client asking the first tenant for a token: not registered there.
    let b = &ready.tenants[TENANT_B];
    let response = emu
        .http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            ready.authority_host, ready.tenant_id
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", b.client_id.as_str()),
            ("client_secret", b.client_secret.as_str()),
            ("scope", "https://vault.azure.net/.default"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700016"),
        "{body}"
    );
    emu.running.shutdown().await;
}

#[tokio::test]
async fn a_subscription_of_two_tenants_is_refused_and_other_tenants_get_their_own() {
    let clash = coldvault::emulator::start(EmulatorConfig {
        vaults: vec![
            VaultSpec::parse(&format!("a,subscription={SUB_A}")).unwrap(),
            VaultSpec::parse(&format!("b,subscription={SUB_A},tenant={TENANT_B}")).unwrap(),
        ],
        ..EmulatorConfig::default()
    })
    .await;
    let err = clash
        .expect_err("a subscription in two tenants is refused")
        .to_string();
    assert!(err.contains("belongs to tenant"), "{err}");

    let emu = TestEmulator::start_with(EmulatorConfig {
        vaults: vec![
            VaultSpec::new("a"),
            VaultSpec::parse(&format!("b,tenant={TENANT_B}")).unwrap(),
        ],
        ..EmulatorConfig::default()
    })
    .await;
    let b = emu.running.state().vault("b").unwrap();
    assert_eq!(
        b.spec.subscription,
        coldvault::emulator::tenant_subscription(TENANT_B)
    );
    assert_ne!(
        b.spec.subscription,
        coldvault::emulator::DEFAULT_SUBSCRIPTION
    );
    emu.running.shutdown().await;
}

#[tokio::test]
async fn seed_file_declares_vault_resource_group_location_tenant_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        format!(
            r#"{{"vaults": [{{"name": "seeded", "subscription": "{SUB_B}", "resource_group": "rg-seed", "location": "eastus", "tenant": "{TENANT_B}", "tags": {{"team": "blue"}}}}]}}"#
        ),
    )
    .unwrap();
    let emu = TestEmulator::start_with(EmulatorConfig {
        seed: Some(seed),
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(emu.ready().tenant_id, TENANT_B);
    let token = arm_token(&emu, TENANT_B).await;
    let (status, _, vault) = arm_get(
        &emu,
        &format!("/subscriptions/{SUB_B}/resourceGroups/rg-seed/providers/Microsoft.KeyVault/vaults/seeded?api-version=2026-02-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{vault}");
    assert_eq!(vault["location"], "eastus");
    assert_eq!(vault["tags"]["team"], "blue");
    assert_eq!(vault["properties"]["tenantId"], TENANT_B);
    emu.running.shutdown().await;
}

/// Starts `coldvault emulator ARGS` in `cwd` and reads stdout up to the line `until` (or the
/// first line when `until` is `None`).
fn run_emulator(
    cwd: &std::path::Path,
    args: &[&str],
    until: Option<&str>,
) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .arg("emulator")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "emulator stopped before its ready output: {out}");
        out.push_str(&line);
        if until.is_none_or(|u| line.trim_end() == u) {
            break;
        }
    }
    (child, out)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn ready_line_ca_cert_is_absolute_for_a_relative_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (child, line) = run_emulator(dir.path(), &["--state-dir", "kv-state"], None);
    stop(child);
    let ready: Value = serde_json::from_str(&line).unwrap();
    let ca = std::path::PathBuf::from(ready["ca_cert"].as_str().unwrap());
    assert!(ca.is_absolute(), "{}", ca.display());
    assert!(ca.exists());
    assert_eq!(
        ca,
        dir.path()
            .canonicalize()
            .unwrap()
            .join("kv-state")
            .join("ca.pem")
    );
}

/// The `export` lines of a `--print-env` output, as a shell that sources them sees them.
fn sourced(env_file: &std::path::Path, names: &[&str]) -> BTreeMap<String, String> {
    let script = names
        .iter()
        .map(|n| format!("printf '%s=%s\\n' {n} \"${n}\""))
        .collect::<Vec<_>>()
        .join("; ");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(". \"$1\"; {script}"))
        .arg("sh")
        .arg(env_file)
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn print_env_exports_credentials_ca_endpoints_and_hosts_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (child, out) = run_emulator(
        dir.path(),
        &[
            "--state-dir",
            "st",
            "--vault",
            "prod",
            "--vault",
            "dr-site",
            "--vault",
            "far,tenant=tenant-b.example",
            "--print-env",
        ],
        Some("#ready"),
    );
    let port = out
        .lines()
        .find_map(|l| l.strip_prefix("export AZURE_AUTHORITY_HOST='https://localhost:"))
        .and_then(|rest| rest.trim_end_matches('\'').parse::<u16>().ok())
        .expect("authority host line");
    let env_file = dir.path().join("kv.env");
    std::fs::write(&env_file, &out).unwrap();
    let env = sourced(
        &env_file,
        &[
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_AUTHORITY_HOST",
            "COLDVAULT_CA_CERT",
            "REQUESTS_CA_BUNDLE",
            "COLDVAULT_EMULATOR_ARM_ENDPOINT",
            "COLDVAULT_EMULATOR_VAULT_PROD",
            "COLDVAULT_EMULATOR_VAULT_DR_SITE",
        ],
    );
    // The secret works: the issuer grants a token for it.
    let ca = std::fs::read(&env["COLDVAULT_CA_CERT"]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        crate::support::http_client(std::str::from_utf8(&ca).unwrap())
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                env["AZURE_AUTHORITY_HOST"], env["AZURE_TENANT_ID"]
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("client_id", env["AZURE_CLIENT_ID"].as_str()),
                ("client_secret", env["AZURE_CLIENT_SECRET"].as_str()),
                ("scope", "https://vault.azure.net/.default"),
            ]))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    stop(child);
    assert_eq!(status, 200);
    assert!(std::path::Path::new(&env["COLDVAULT_CA_CERT"]).is_absolute());
    assert_eq!(env["REQUESTS_CA_BUNDLE"], env["COLDVAULT_CA_CERT"]);
    assert_eq!(
        env["AZURE_AUTHORITY_HOST"],
        format!("https://localhost:{port}")
    );
    assert_eq!(
        env["COLDVAULT_EMULATOR_ARM_ENDPOINT"],
        format!("https://localhost:{port}/")
    );
    assert_eq!(
        env["COLDVAULT_EMULATOR_VAULT_DR_SITE"],
        format!("https://dr-site.vault.localhost:{port}/")
    );
    let hosts: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("#hosts "))
        .collect();
    assert_eq!(
        hosts,
        [
            "127.0.0.1 dr-site.vault.localhost",
            "127.0.0.1 far.vault.localhost",
            "127.0.0.1 prod.vault.localhost"
        ]
    );
    assert!(out.contains("# tenant tenant-b.example: AZURE_TENANT_ID='tenant-b.example'"));
}

/// The snippets `docs/EMULATOR.md` shows under "Use it from your own code" are the files the
/// suites run, word for word.
#[test]
fn own_code_snippets_in_the_docs_are_the_files_the_suite_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/EMULATOR.md")).unwrap();
    for snippet in ["own_code.rs", "own_code.py", "own_code_az.sh"] {
        let text = std::fs::read_to_string(format!("{root}/docs/snippets/{snippet}")).unwrap();
        assert!(
            doc.contains(text.trim_end()),
            "docs/EMULATOR.md does not show docs/snippets/{snippet} as it is"
        );
    }
}

/// The Rust snippet of the docs, run as written against an emulator, configured from the
/// variables `--print-env` exports.
#[tokio::test]
async fn own_code_rust_snippet_reads_a_secret() {
    let emu = TestEmulator::start_with(EmulatorConfig {
        vaults: vec![VaultSpec::new("prod")],
        ..EmulatorConfig::default()
    })
    .await;
    let ready = emu.ready().clone();
    // Set a secret through the official crate, read it back through the snippet.
    let mut params = azure_security_keyvault_secrets::models::SetSecretParameters::default();
    params.value = Some("from-the-snippet".into());
    emu.secret_client("prod")
        .set_secret("db-password", params.try_into().unwrap(), None)
        .await
        .unwrap();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("AZURE_TENANT_ID".into(), ready.tenant_id.clone());
    env.insert("AZURE_CLIENT_ID".into(), ready.client_id.clone());
    env.insert("AZURE_CLIENT_SECRET".into(), ready.client_secret.clone());
    env.insert("AZURE_AUTHORITY_HOST".into(), ready.authority_host.clone());
    env.insert("COLDVAULT_CA_CERT".into(), ready.ca_cert.clone());
    let value = own_code::read_secret(
        |name| env.get(name).cloned(),
        &ready.vaults["prod"],
        "db-password",
    )
    .await
    .unwrap();
    assert_eq!(value, "from-the-snippet");
    emu.running.shutdown().await;
}
