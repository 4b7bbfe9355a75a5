//! `coldvault restore` and `coldvault diff` end to end: the real binary against the in-process
//! local Key Vault. Each test backs up a small vault with `coldvault backup`, changes or
//! replaces the target, restores, and checks the target item by item (values, version ids where
//! native, tags, content types, attributes, certificate bytes). A canary value planted in the
//! source must never appear in any output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use age::secrecy::{ExposeSecret, SecretString};
use azure_security_keyvault_keys::models::{CreateKeyParameters, KeyType};
use coldvault::emulator::{EmulatorConfig, VaultSpec};
use coldvault::vault::{
    Attributes, AzureVault, CertificateImport, ConnectOptions, EnvSnapshot, NewSecretVersion,
    VaultReader, VaultUrl, VaultWriter,
};
use serde_json::{Value, json};

use crate::backup::{Workspace, coldvault, only_archive};
use crate::support::TestEmulator;

/// Never to be printed by any command.
const CANARY: &str = "CANARY-restore-3f9a1c-never-print-me";

/// Secrets every test seeds: name → values oldest first (the last is current).
fn seeded_secrets() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("db-password", vec!["pw-1", "pw-2", CANARY]),
        ("api-key", vec!["key-1"]),
        ("cache-url", vec!["redis://a", "redis://b"]),
        ("feature-flags", vec!["{\"a\":true}"]),
        ("expired-token", vec!["t-1"]),
    ])
}

fn other_subscription_vault(name: &str) -> VaultSpec {
    let mut spec = VaultSpec::new(name);
    spec.subscription = "22222222-2222-2222-2222-222222222222".into();
    spec
}

async fn start(vaults: Vec<VaultSpec>) -> TestEmulator {
    TestEmulator::start_with(EmulatorConfig {
        vaults,
        ..EmulatorConfig::default()
    })
    .await
}

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

fn expiry() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_600_000_000).expect("time")
}

/// Moves the emulator's clock on by a second: versions written after it are newer by
/// `created` (Azure's timestamps have whole seconds).
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

/// Seeds the secrets (tags, a content type, an expired one) into `target`, one second apart
/// per version.
async fn seed_secrets(emulator: &TestEmulator, target: &AzureVault) {
    for i in 0..3 {
        next_second(emulator).await;
        for (name, values) in seeded_secrets() {
            let Some(value) = values.get(i) else {
                continue;
            };
            let mut attributes = Attributes::default();
            if name == "expired-token" {
                attributes.expires = Some(expiry());
            }
            target
                .set_secret(
                    name,
                    &NewSecretVersion {
                        value: SecretString::from(value.to_string()),
                        content_type: (name != "api-key").then(|| "text/plain".to_owned()),
                        tags: BTreeMap::from([
                            ("app".to_owned(), name.to_owned()),
                            ("n".to_owned(), i.to_string()),
                        ]),
                        attributes,
                    },
                )
                .await
                .expect("secret set");
        }
    }
}

/// A self-signed certificate made by the vault from a policy whose exportable key is kept as
/// PKCS#12 (the archive stores the PFX as binary; a plain restore re-encodes it).
// The SDK's models are `#[non_exhaustive]`: fields are set after `Default::default()`.
#[allow(clippy::field_reassign_with_default)]
async fn create_pfx_certificate(emulator: &TestEmulator, vault: &str, name: &str) {
    use azure_security_keyvault_certificates::models::{
        CertificateClientCreateCertificateOptions, CertificatePolicy, CreateCertificateParameters,
        IssuerParameters, KeyProperties, SecretProperties, X509CertificateProperties,
    };
    let mut x509 = X509CertificateProperties::default();
    x509.subject = Some("CN=pfx.example.test".into());
    x509.validity_in_months = Some(12);
    let mut issuer = IssuerParameters::default();
    issuer.name = Some("Self".into());
    let mut key_props = KeyProperties::default();
    key_props.key_type = Some(azure_security_keyvault_certificates::models::KeyType::Rsa);
    key_props.key_size = Some(2048);
    key_props.exportable = Some(true);
    let mut secret_props = SecretProperties::default();
    secret_props.content_type = Some("application/x-pkcs12".into());
    let mut policy = CertificatePolicy::default();
    policy.x509_certificate_properties = Some(x509);
    policy.issuer_parameters = Some(issuer);
    policy.key_properties = Some(key_props);
    policy.secret_properties = Some(secret_props);
    let mut params = CreateCertificateParameters::default();
    params.certificate_policy = Some(policy);
    emulator
        .certificate_client(vault)
        .begin_create_certificate(
            name,
            params.try_into().expect("params"),
            Some(CertificateClientCreateCertificateOptions {
                method_options: azure_core::http::poller::PollerOptions {
                    frequency: azure_core::time::Duration::seconds(1),
                    ..Default::default()
                },
            }),
        )
        .expect("create starts")
        .await
        .expect("certificate created");
}

/// A software key and an exportable PEM certificate.
async fn seed_key_and_certificate(emulator: &TestEmulator, target: &AzureVault, vault: &str) {
    let parameters = CreateKeyParameters {
        kty: Some(KeyType::Rsa),
        key_size: Some(2048),
        tags: Some(std::collections::HashMap::from([(
            "owner".to_owned(),
            "ops".to_owned(),
        )])),
        ..Default::default()
    };
    emulator
        .key_client(vault)
        .create_key("signing-key", parameters.try_into().expect("params"), None)
        .await
        .expect("key created");
    let key = crate::support::rsa_key_pair();
    let cert = rcgen::CertificateParams::new(vec!["web.example.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    target
        .import_certificate(
            "web-cert",
            &CertificateImport {
                value: SecretString::from(pem),
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

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the binary and checks that the canary never shows.
async fn run(emulator: &TestEmulator, args: &[&str]) -> Output {
    let output = coldvault(emulator, args).await;
    let shown = text(&output);
    assert!(!shown.contains(CANARY), "the canary leaked: {shown}");
    output
}

/// Backs `vault` up with every version and answers the archive's path.
async fn backup(emulator: &TestEmulator, ws: &Workspace, vault: &str) -> PathBuf {
    let out = ws.path(&format!("out-{vault}"));
    std::fs::create_dir_all(&out).expect("out dir");
    let output = run(
        emulator,
        &[
            "backup",
            "--vault",
            &emulator.vault_url(vault),
            "-r",
            &ws.recipient,
            "-o",
            path_str(&out),
            "--all-versions",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "backup: {}", text(&output));
    only_archive(&out)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// `restore ARCHIVE --vault V -i ID` plus `extra`.
async fn restore(
    emulator: &TestEmulator,
    ws: &Workspace,
    archive: &Path,
    vault: &str,
    extra: &[&str],
) -> Output {
    let url = emulator.vault_url(vault);
    let mut args = vec![
        "restore",
        path_str(archive),
        "--vault",
        &url,
        "-i",
        path_str(&ws.identity_file),
    ];
    args.extend_from_slice(extra);
    run(emulator, &args).await
}

async fn diff(emulator: &TestEmulator, ws: &Workspace, archive: &Path, vault: &str) -> Output {
    let url = emulator.vault_url(vault);
    run(
        emulator,
        &[
            "diff",
            path_str(archive),
            "--vault",
            &url,
            "-i",
            path_str(&ws.identity_file),
            "--json",
        ],
    )
    .await
}

/// One secret's versions in `target`: (version id, value, content type, tags, expires), oldest
/// first.
async fn versions_of(
    target: &AzureVault,
    name: &str,
) -> Vec<(
    String,
    String,
    Option<String>,
    BTreeMap<String, String>,
    Option<i64>,
)> {
    let mut out = Vec::new();
    for props in target.list_secret_versions(name).await.expect("versions") {
        let version = props.version.clone().expect("version id");
        let value = target
            .get_secret(name, Some(&version))
            .await
            .expect("value");
        out.push((
            version,
            value.value.expose_secret().to_owned(),
            value.properties.content_type.clone(),
            value.properties.tags.clone(),
            value
                .properties
                .attributes
                .expires
                .map(|t| t.unix_timestamp()),
        ));
    }
    out
}

/// Checks that `target` holds every seeded secret: each value once (versions written within
/// one second have no order among them), the current one current, with its tags, content type
/// and expiry; answers the sorted version ids per name.
async fn assert_secrets_restored(target: &AzureVault) -> BTreeMap<String, Vec<String>> {
    let mut ids = BTreeMap::new();
    for (name, values) in seeded_secrets() {
        let versions = versions_of(target, name).await;
        let mut got: Vec<&str> = versions.iter().map(|v| v.1.as_str()).collect();
        got.sort();
        let mut want = values.clone();
        want.sort();
        assert_eq!(got, want, "{name}: every value, once");
        let current = target.get_secret(name, None).await.expect("current");
        assert_eq!(
            Some(current.value.expose_secret()),
            values.last().copied(),
            "{name}: the current value"
        );
        let props = &current.properties;
        assert_eq!(
            props.content_type.as_deref(),
            (name != "api-key").then_some("text/plain"),
            "{name}: content type"
        );
        assert_eq!(
            props.tags.get("app").map(String::as_str),
            Some(name),
            "{name}: tags"
        );
        assert_eq!(
            props.tags.get("n").cloned(),
            Some((values.len() - 1).to_string()),
            "{name}: tags of the current version"
        );
        let want_exp = (name == "expired-token").then(|| expiry().unix_timestamp());
        assert_eq!(
            props.attributes.expires.map(|t| t.unix_timestamp()),
            want_exp,
            "{name}: expiry attribute"
        );
        let mut version_ids: Vec<String> = versions.into_iter().map(|v| v.0).collect();
        version_ids.sort();
        ids.insert(name.to_owned(), version_ids);
    }
    ids
}

fn events(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line {l:?}: {e}")))
        .collect()
}

/// Journal entries that change the vault `vault` (backups are reads).
async fn writes_to(emulator: &TestEmulator, vault: &str) -> Vec<Value> {
    emulator
        .journal()
        .await
        .into_iter()
        .filter(|e| e["vault"] == json!(vault))
        .filter(|e| {
            let method = e["method"].as_str().unwrap_or_default();
            let path = e["path"].as_str().unwrap_or_default();
            matches!(method, "PUT" | "PATCH" | "DELETE")
                || (method == "POST" && !path.ends_with("/backup"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accidental_deletion_is_found_by_diff_and_restored() {
    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("main")]).await;
    emulator
        .settings(json!({"delete_delay_ms": 300, "purge_window_ms": 1500}))
        .await;
    let main = vault(&emulator, "main").await;
    seed_secrets(&emulator, &main).await;
    let archive = backup(&emulator, &ws, "main").await;

    let same = diff(&emulator, &ws, &archive, "main").await;
    assert_eq!(same.status.code(), Some(0), "identical: {}", text(&same));

    let secrets = emulator.secret_client("main");
    for name in ["db-password", "cache-url", "api-key"] {
        secrets.delete_secret(name, None).await.expect("deleted");
    }
    // Past the 300 ms in which a deleted item is not yet listed as deleted, on the vault's clock.
    emulator.advance_clock_ms(1_000).await;
    let output = diff(&emulator, &ws, &archive, "main").await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "different: {}",
        text(&output)
    );
    let report = &events(&output)[0];
    assert_eq!(report["type"], json!("diff"));
    assert_eq!(report["counts"]["soft_deleted"], json!(3), "{report}");
    let named: Vec<&str> = report["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["state"] == json!("soft-deleted"))
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(named, ["api-key", "cache-url", "db-password"]);

    // Without --recover-deleted they are conflicts, named, exit 3.
    let output = restore(&emulator, &ws, &archive, "main", &[]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        text(&output).contains("--recover-deleted"),
        "{}",
        text(&output)
    );

    let output = restore(&emulator, &ws, &archive, "main", &["--recover-deleted"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("3 recovered"), "{}", text(&output));
    assert_secrets_restored(&main).await;
    let output = diff(&emulator, &ws, &archive, "main").await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "identical again: {}",
        text(&output)
    );

    // Deleted and purged: the native blobs bring them back, the purge window's 409 waited out.
    let ids = assert_secrets_restored(&main).await;
    for name in ["db-password", "feature-flags"] {
        secrets.delete_secret(name, None).await.expect("deleted");
    }
    // Past the 300 ms in which a deleted item is not yet listed as deleted, on the vault's clock.
    emulator.advance_clock_ms(1_000).await;
    for name in ["db-password", "feature-flags"] {
        secrets
            .purge_deleted_secret(name, None)
            .await
            .expect("purged");
    }
    let output = restore(&emulator, &ws, &archive, "main", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let after = assert_secrets_restored(&main).await;
    assert_eq!(after, ids, "same version ids after a native restore");
    let waited = emulator
        .journal()
        .await
        .into_iter()
        .filter(|e| e["path"] == json!("/secrets/restore") && e["status"] == json!(409))
        .count();
    assert!(waited >= 1, "the purge window's 409 was met and waited out");
}

/// A source vault `alpha` with secrets, a key and a certificate, backed up.
async fn source_with_everything(emulator: &TestEmulator, ws: &Workspace) -> (AzureVault, PathBuf) {
    let alpha = vault(emulator, "alpha").await;
    seed_secrets(emulator, &alpha).await;
    seed_key_and_certificate(emulator, &alpha, "alpha").await;
    create_pfx_certificate(emulator, "alpha", "pfx-cert").await;
    let archive = backup(emulator, ws, "alpha").await;
    (alpha, archive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_vault_of_the_same_subscription_gets_everything_natively() {
    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("alpha"), VaultSpec::new("beta")]).await;
    let (alpha, archive) = source_with_everything(&emulator, &ws).await;
    let source_ids = assert_secrets_restored(&alpha).await;

    let output = restore(
        &emulator,
        &ws,
        &archive,
        "beta",
        &["--mode", "native", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let summary = events(&output)
        .into_iter()
        .find(|e| e["type"] == json!("summary"))
        .expect("summary");
    assert_eq!(summary["native"]["secrets"], json!(5), "{summary}");
    assert_eq!(summary["native"]["keys"], json!(1), "{summary}");
    assert_eq!(summary["native"]["certificates"], json!(2), "{summary}");

    let beta = vault(&emulator, "beta").await;
    assert_eq!(
        assert_secrets_restored(&beta).await,
        source_ids,
        "every version, same ids"
    );
    let key_a = alpha.get_key("signing-key", None).await.expect("key");
    let key_b = beta
        .get_key("signing-key", None)
        .await
        .expect("key restored");
    assert_eq!(key_b.properties.version, key_a.properties.version);
    assert_eq!(key_b.jwk["n"], key_a.jwk["n"]);
    assert_eq!(
        key_b.properties.tags.get("owner").map(String::as_str),
        Some("ops")
    );
    let cert_a = alpha.get_certificate("web-cert", None).await.expect("cert");
    let cert_b = beta
        .get_certificate("web-cert", None)
        .await
        .expect("cert restored");
    assert_eq!(cert_b.cer, cert_a.cer, "certificate bytes");
    assert_eq!(cert_b.properties.version, cert_a.properties.version);
    let pfx_a = alpha.get_certificate("pfx-cert", None).await.expect("cert");
    let pfx_b = beta
        .get_certificate("pfx-cert", None)
        .await
        .expect("cert restored");
    assert_eq!(pfx_b.cer, pfx_a.cer, "PKCS#12 certificate bytes");

    // A rerun changes nothing.
    let before = writes_to(&emulator, "beta").await.len();
    let output = restore(&emulator, &ws, &archive, "beta", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        writes_to(&emulator, "beta").await.len(),
        before,
        "no write on a rerun"
    );

    // A soft-deleted key and certificate: diff names them, --recover-deleted brings them back.
    emulator
        .key_client("beta")
        .delete_key("signing-key", None)
        .await
        .expect("key deleted");
    emulator
        .certificate_client("beta")
        .delete_certificate("web-cert", None)
        .await
        .expect("certificate deleted");
    let output = diff(&emulator, &ws, &archive, "beta").await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(
        events(&output)[0]["counts"]["soft_deleted"],
        json!(2),
        "{}",
        text(&output)
    );
    let output = restore(&emulator, &ws, &archive, "beta", &["--recover-deleted"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("2 recovered"), "{}", text(&output));
    let key_r = beta
        .get_key("signing-key", None)
        .await
        .expect("key recovered");
    assert_eq!(key_r.properties.version, key_a.properties.version);
    let cert_r = beta
        .get_certificate("web-cert", None)
        .await
        .expect("cert recovered");
    assert_eq!(cert_r.cer, cert_a.cer);
    let output = diff(&emulator, &ws, &archive, "beta").await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_subscription_gets_plain_values_and_keys_are_named() {
    let ws = Workspace::new();
    let emulator = start(vec![
        VaultSpec::new("alpha"),
        other_subscription_vault("gamma"),
    ])
    .await;
    let (alpha, archive) = source_with_everything(&emulator, &ws).await;

    let output = restore(&emulator, &ws, &archive, "gamma", &["--mode", "native"]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("another subscription or geography"),
        "{shown}"
    );
    assert!(
        shown.contains("hint:") && shown.contains("--mode plain"),
        "{shown}"
    );
    assert!(
        writes_to(&emulator, "gamma")
            .await
            .iter()
            .all(|e| e["status"] != json!(200))
    );

    let output = restore(&emulator, &ws, &archive, "gamma", &[]).await;
    let shown = text(&output);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the key is not restored: {shown}"
    );
    assert!(
        shown.contains("NOT RESTORED: key signing-key"),
        "the key is named: {shown}"
    );
    assert!(
        shown.contains("plain (by value): 5 secrets, 0 keys, 2 certificates"),
        "{shown}"
    );
    let gamma = vault(&emulator, "gamma").await;
    assert_secrets_restored(&gamma).await;
    let cert_a = alpha.get_certificate("web-cert", None).await.expect("cert");
    let cert_g = gamma
        .get_certificate("web-cert", None)
        .await
        .expect("cert imported");
    assert_eq!(cert_g.cer, cert_a.cer, "certificate bytes");
    assert_eq!(
        cert_g.properties.tags.get("env").map(String::as_str),
        Some("prod")
    );
    assert!(gamma.get_key("signing-key", None).await.is_err(), "no key");
    let pfx_a = alpha.get_certificate("pfx-cert", None).await.expect("cert");
    let pfx_g = gamma
        .get_certificate("pfx-cert", None)
        .await
        .expect("PKCS#12 certificate imported");
    assert_eq!(pfx_g.cer, pfx_a.cer, "PKCS#12 certificate bytes");
    let material = gamma
        .get_secret("pfx-cert", None)
        .await
        .expect("managed secret");
    assert_eq!(
        material.properties.content_type.as_deref(),
        Some("application/x-pkcs12"),
        "imported as PKCS#12"
    );

    // Plain reruns are idempotent too: no new version.
    let output = restore(&emulator, &ws, &archive, "gamma", &["--include", "secrets"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_secrets_restored(&gamma).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_follow_the_policy_and_dry_run_writes_nothing() {
    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("alpha")]).await;
    let alpha = vault(&emulator, "alpha").await;
    seed_secrets(&emulator, &alpha).await;
    let archive = backup(&emulator, &ws, "alpha").await;
    let changed = NewSecretVersion {
        value: SecretString::from("changed-after-backup".to_owned()),
        content_type: None,
        tags: BTreeMap::new(),
        attributes: Attributes::default(),
    };
    alpha
        .set_secret("api-key", &changed)
        .await
        .expect("changed");
    alpha
        .set_secret(
            "not-in-archive",
            &NewSecretVersion {
                value: SecretString::from("extra".to_owned()),
                content_type: None,
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("extra secret");
    let output = diff(&emulator, &ws, &archive, "alpha").await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = &events(&output)[0];
    let states: Vec<(String, String, Value)> = report["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["state"].as_str().unwrap_or_default().to_owned(),
                i["name"].as_str().unwrap_or_default().to_owned(),
                i["changed"].clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (
                "changed".to_owned(),
                "api-key".to_owned(),
                json!(["value", "tags"])
            ),
            ("extra".to_owned(), "not-in-archive".to_owned(), Value::Null),
        ],
        "{report}"
    );
    assert_eq!(report["counts"]["identical"], json!(4), "{report}");
    let writes = writes_to(&emulator, "alpha").await.len();

    let output = restore(&emulator, &ws, &archive, "alpha", &["--dry-run"]).await;
    let plan = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(plan.contains("ACTION"), "{plan}");
    let api_line = plan
        .lines()
        .find(|l| l.contains("api-key"))
        .expect("api-key line");
    assert!(
        api_line.starts_with("skip") && api_line.contains("exists and differs (value"),
        "{api_line}"
    );
    let db_line = plan
        .lines()
        .find(|l| l.contains("db-password"))
        .expect("db line");
    assert!(
        db_line.starts_with("skip") && db_line.contains("identical"),
        "{db_line}"
    );

    let output = restore(
        &emulator,
        &ws,
        &archive,
        "alpha",
        &["--dry-run", "--on-conflict", "overwrite", "--json"],
    )
    .await;
    let plan = events(&output);
    let api = plan
        .iter()
        .find(|e| e["type"] == json!("plan") && e["name"] == json!("api-key"))
        .expect("plan line");
    assert_eq!(api["action"], json!("overwrite"), "{api}");
    assert_eq!(
        writes_to(&emulator, "alpha").await.len(),
        writes,
        "dry runs write nothing"
    );

    let output = restore(
        &emulator,
        &ws,
        &archive,
        "alpha",
        &["--on-conflict", "fail"],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("secret api-key"), "{shown}");
    assert_eq!(
        writes_to(&emulator, "alpha").await.len(),
        writes,
        "fail writes nothing"
    );

    let output = restore(&emulator, &ws, &archive, "alpha", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let current = alpha.get_secret("api-key", None).await.expect("value");
    assert_eq!(
        current.value.expose_secret(),
        "changed-after-backup",
        "skip leaves it"
    );

    let output = restore(
        &emulator,
        &ws,
        &archive,
        "alpha",
        &["--on-conflict", "overwrite"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let versions = versions_of(&alpha, "api-key").await;
    let mut values: Vec<&str> = versions.iter().map(|v| v.1.as_str()).collect();
    values.sort();
    assert_eq!(
        values,
        ["changed-after-backup", "key-1", "key-1"],
        "a new version"
    );
    let current = alpha.get_secret("api-key", None).await.expect("current");
    assert_eq!(current.value.expose_secret(), "key-1");
    assert_eq!(
        current.properties.tags.get("app").map(String::as_str),
        Some("api-key")
    );
    let output = restore(
        &emulator,
        &ws,
        &archive,
        "alpha",
        &["--on-conflict", "overwrite"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        versions_of(&alpha, "api-key").await.len(),
        3,
        "no duplicate on a rerun"
    );
    let before = writes_to(&emulator, "alpha").await.len();
    let output = restore(
        &emulator,
        &ws,
        &archive,
        "alpha",
        &["--name", "db-*", "--dry-run", "--json"],
    )
    .await;
    let plan: Vec<Value> = events(&output)
        .into_iter()
        .filter(|e| e["type"] == json!("plan"))
        .collect();
    assert_eq!(plan.len(), 1, "--name selects one item: {plan:?}");
    assert_eq!(writes_to(&emulator, "alpha").await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_finishes_on_rerun_without_duplicates() {
    let ws = Workspace::new();
    let emulator = start(vec![
        VaultSpec::new("alpha"),
        other_subscription_vault("gamma"),
    ])
    .await;
    let alpha = vault(&emulator, "alpha").await;
    let names: Vec<String> = (0..24).map(|i| format!("svc-{i:02}")).collect();
    for n in 0..3 {
        next_second(&emulator).await;
        for name in &names {
            alpha
                .set_secret(
                    name,
                    &NewSecretVersion {
                        value: SecretString::from(format!("{name}-v{n}")),
                        content_type: None,
                        tags: BTreeMap::new(),
                        attributes: Attributes::default(),
                    },
                )
                .await
                .expect("set");
        }
    }
    let archive = backup(&emulator, &ws, "alpha").await;

    // The run is stopped with one item split for certain: the first version of `svc-07` is
    // written, its second is parked at the local Key Vault when the run is killed.
    let split = "svc-07";
    let park_next_write = json!({"kind": "hold", "vault": "gamma", "method": "PUT",
                                 "path": format!("/secrets/{split}"), "count": 1,
                                 "delay_ms": 600_000});
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(park_next_write.clone()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ready = emulator.ready();
    let url = emulator.vault_url("gamma");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args([
            "restore",
            path_str(&archive),
            "--vault",
            &url,
            "-i",
            path_str(&ws.identity_file),
            "--mode",
            "plain",
            "--concurrency",
            "2",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_TENANT_ID", &ready.tenant_id)
        .env("AZURE_CLIENT_ID", &ready.client_id)
        .env("AZURE_CLIENT_SECRET", &ready.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("restore starts");
    crate::support::wait_until("the first version's write to be parked", async || {
        emulator.held().await == 1
    })
    .await;
    // Park the next write of the item too, then let the first one through.
    let (status, body) = emulator
        .admin(reqwest::Method::POST, "/faults", Some(park_next_write))
        .await;
    assert_eq!(status, 200, "{body}");
    emulator
        .admin(reqwest::Method::POST, "/faults/release", None)
        .await;
    let split_path = format!("/secrets/{split}");
    crate::support::wait_until("the second version's write to be parked", async || {
        let first_written = writes_to(&emulator, "gamma")
            .await
            .iter()
            .any(|e| e["path"] == json!(split_path) && e["status"] == json!(200));
        // The first write left its hold before it ran, so one held now is the second.
        first_written && emulator.held().await == 1
    })
    .await;
    child.kill().await.expect("killed mid-way");
    // Killed before the end for certain: `svc-07` keeps one version of three (checked below),
    // however far the other worker got with the other items meanwhile.

    let gamma = vault(&emulator, "gamma").await;
    let mut partial = 0;
    for name in &names {
        let count = gamma
            .list_secret_versions(name)
            .await
            .map_or(0, |v| v.len());
        if (1..3).contains(&count) {
            partial += 1;
        }
        if name == split {
            assert_eq!(count, 1, "{split} is split: one version of three");
        }
    }
    eprintln!("half-written secrets after the kill: {partial}");
    let output = restore(&emulator, &ws, &archive, "gamma", &["--mode", "plain"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("versions were already present"),
        "{partial} half-written secrets finished: {}",
        text(&output)
    );
    for name in &names {
        let mut values: Vec<String> = versions_of(&gamma, name)
            .await
            .into_iter()
            .map(|v| v.1)
            .collect();
        values.sort();
        let expected: Vec<String> = (0..3).map(|n| format!("{name}-v{n}")).collect();
        assert_eq!(values, expected, "{name}: every version once");
        let current = gamma.get_secret(name, None).await.expect("current");
        assert_eq!(
            current.value.expose_secret(),
            format!("{name}-v2"),
            "{name}: current"
        );
    }
    let succeeded = writes_to(&emulator, "gamma")
        .await
        .into_iter()
        .filter(|e| e["status"] == json!(200))
        .count();
    assert_eq!(
        succeeded,
        names.len() * 3,
        "each version written exactly once across both runs"
    );
}

/// Arms one fault that lets the matching request commit and then drops its answer.
async fn lose_response(emulator: &TestEmulator, method: &str, path: &str) {
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"kind": "lost", "count": 1, "method": method, "path": path})),
        )
        .await;
    assert_eq!(status, 200, "fault armed: {body}");
}

/// How many requests the `lost` fault answered by dropping the connection.
async fn lost_answers(emulator: &TestEmulator) -> usize {
    emulator
        .journal()
        .await
        .iter()
        .filter(|e| e["fault"] == json!("lost") && e["status"] == json!(0))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_secret_set_response_adds_no_duplicate_version() {
    let ws = Workspace::new();
    let emulator = start(vec![
        VaultSpec::new("alpha"),
        VaultSpec::new("beta"),
        VaultSpec::new("delta"),
    ])
    .await;
    let alpha = vault(&emulator, "alpha").await;
    seed_secrets(&emulator, &alpha).await;
    let archive = backup(&emulator, &ws, "alpha").await;

    // The first version of two replayed secrets commits, and its answer is lost.
    lose_response(&emulator, "PUT", "/secrets/db-password").await;
    lose_response(&emulator, "PUT", "/secrets/cache-url").await;
    let output = restore(
        &emulator,
        &ws,
        &archive,
        "beta",
        &["--mode", "plain", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(lost_answers(&emulator).await, 2, "both faults fired");
    let beta = vault(&emulator, "beta").await;
    // Exactly the archive's versions: every value once, none written twice.
    assert_secrets_restored(&beta).await;
    assert_eq!(versions_of(&beta, "db-password").await.len(), 3);
    assert_eq!(versions_of(&beta, "cache-url").await.len(), 2);

    // Nine sets in ten lose their answer: still exactly the archive's versions.
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"kind": "lost", "rate": 0.9, "method": "PUT", "vault": "delta"})),
        )
        .await;
    assert_eq!(status, 200, "fault armed: {body}");
    let output = restore(&emulator, &ws, &archive, "delta", &["--mode", "plain"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(lost_answers(&emulator).await > 2, "the rate fault fired");
    assert_secrets_restored(&vault(&emulator, "delta").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_native_restore_response_is_reported_restored() {
    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("alpha"), VaultSpec::new("beta")]).await;
    let alpha = vault(&emulator, "alpha").await;
    seed_secrets(&emulator, &alpha).await;
    seed_key_and_certificate(&emulator, &alpha, "alpha").await;
    let archive = backup(&emulator, &ws, "alpha").await;

    lose_response(&emulator, "POST", "/keys/restore").await;
    lose_response(&emulator, "POST", "/secrets/restore").await;
    let output = restore(
        &emulator,
        &ws,
        &archive,
        "beta",
        &["--mode", "native", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(lost_answers(&emulator).await, 2, "both faults fired");
    let summary = events(&output)
        .into_iter()
        .find(|e| e["type"] == json!("summary"))
        .expect("summary");
    assert_eq!(summary["native"]["secrets"], json!(5), "{summary}");
    assert_eq!(summary["native"]["keys"], json!(1), "{summary}");
    let beta = vault(&emulator, "beta").await;
    let key_a = alpha.get_key("signing-key", None).await.expect("key");
    let key_b = beta.get_key("signing-key", None).await.expect("restored");
    assert_eq!(key_b.properties.version, key_a.properties.version);
    assert_eq!(
        assert_secrets_restored(&beta).await,
        assert_secrets_restored(&alpha).await,
        "every version, same ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_certificate_import_response_is_reported_done() {
    use futures::TryStreamExt;
    let ws = Workspace::new();
    let emulator = start(vec![
        VaultSpec::new("alpha"),
        other_subscription_vault("gamma"),
    ])
    .await;
    let alpha = vault(&emulator, "alpha").await;
    seed_key_and_certificate(&emulator, &alpha, "alpha").await;
    create_pfx_certificate(&emulator, "alpha", "pfx-cert").await;
    let archive = backup(&emulator, &ws, "alpha").await;

    // Another subscription: certificates come back by import, PEM and PKCS#12 alike.
    lose_response(&emulator, "POST", "/certificates/web-cert/import").await;
    lose_response(&emulator, "POST", "/certificates/pfx-cert/import").await;
    let output = restore(
        &emulator,
        &ws,
        &archive,
        "gamma",
        &["--include", "certificates", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(lost_answers(&emulator).await, 2, "both faults fired");
    let done: Vec<Value> = events(&output)
        .into_iter()
        .filter(|e| e["type"] == json!("item") && e["status"] == json!("created"))
        .collect();
    assert_eq!(done.len(), 2, "both imports reported done: {done:?}");
    let gamma = vault(&emulator, "gamma").await;
    for name in ["web-cert", "pfx-cert"] {
        let source = alpha.get_certificate(name, None).await.expect("source");
        let imported = gamma.get_certificate(name, None).await.expect("imported");
        assert_eq!(imported.cer, source.cer, "{name}: certificate bytes");
        let versions: Vec<_> = emulator
            .certificate_client("gamma")
            .list_certificate_properties_versions(name, None)
            .expect("pager")
            .try_collect()
            .await
            .expect("versions");
        assert_eq!(versions.len(), 1, "{name}: imported once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_recover_response_is_reported_recovered() {
    let ws = Workspace::new();
    // The fault is armed at start, as `coldvault emulator --fault …` arms it.
    let emulator = TestEmulator::start_with(EmulatorConfig {
        vaults: vec![VaultSpec::new("main")],
        faults: vec![
            coldvault::emulator::faults::FaultSpec::parse(
                "lost,count=1,method=POST,path=/deletedsecrets/api-key/recover",
            )
            .expect("fault"),
        ],
        ..EmulatorConfig::default()
    })
    .await;
    let main = vault(&emulator, "main").await;
    seed_secrets(&emulator, &main).await;
    let archive = backup(&emulator, &ws, "main").await;
    emulator
        .secret_client("main")
        .delete_secret("api-key", None)
        .await
        .expect("deleted");

    let output = restore(
        &emulator,
        &ws,
        &archive,
        "main",
        &["--recover-deleted", "--include", "secrets", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(lost_answers(&emulator).await, 1, "the fault fired");
    let item = events(&output)
        .into_iter()
        .find(|e| e["type"] == json!("item") && e["name"] == json!("api-key"))
        .expect("api-key reported");
    assert_eq!(item["status"], json!("recovered"), "{item}");
    assert_secrets_restored(&main).await;
}

/// An imported certificate whose policy keeps the key unexportable: only its native blob can
/// bring it back.
async fn import_locked_certificate(target: &AzureVault, name: &str) {
    let key = crate::support::rsa_key_pair();
    let cert = rcgen::CertificateParams::new(vec!["locked.example.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    target
        .import_certificate(
            name,
            &CertificateImport {
                value: SecretString::from(format!("{}{}", key.serialize_pem(), cert.pem())),
                content_type: "application/x-pem-file".to_owned(),
                password: None,
                policy: Some(json!({
                    "key_props": {"exportable": false, "kty": "RSA", "key_size": 2048, "reuse_key": false},
                    "secret_props": {"contentType": "application/x-pem-file"}
                })),
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("certificate imported");
}

/// Journal entries that changed `vault` (a write answered 2xx).
async fn committed_writes(emulator: &TestEmulator, vault: &str) -> usize {
    writes_to(emulator, vault)
        .await
        .iter()
        .filter(|e| e["status"].as_u64().is_some_and(|s| s < 300))
        .count()
}

/// The summary event of a `--json` run.
fn summary_of(output: &Output) -> Value {
    events(output)
        .into_iter()
        .find(|e| e["type"] == json!("summary"))
        .unwrap_or_else(|| panic!("no summary: {}", text(output)))
}

/// `kind name` of each entry of a summary list (`not_restored`, `unverified`).
fn names_in(summary: &Value, list: &str) -> std::collections::BTreeSet<String> {
    summary[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        i["kind"].as_str().unwrap_or("?"),
                        i["name"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A dry run, then the real run, into `vault`: the dry run writes nothing and answers its exit
/// code, the items it says would (or might) not be restored and what it learnt of native
/// blobs; the real run answers its exit code and the items it did not restore.
async fn dry_then_real(
    emulator: &TestEmulator,
    ws: &Workspace,
    archive: &Path,
    vault: &str,
) -> (
    Option<i32>,
    std::collections::BTreeSet<String>,
    Value,
    Option<i32>,
    std::collections::BTreeSet<String>,
) {
    let before = committed_writes(emulator, vault).await;
    let dry = restore(emulator, ws, archive, vault, &["--dry-run", "--json"]).await;
    assert_eq!(
        committed_writes(emulator, vault).await,
        before,
        "the dry run into {vault} wrote: {}",
        text(&dry)
    );
    let summary = summary_of(&dry);
    let mut predicted = names_in(&summary, "not_restored");
    predicted.extend(names_in(&summary, "unverified"));
    let real = restore(emulator, ws, archive, vault, &["--json"]).await;
    let failed = names_in(&summary_of(&real), "not_restored");
    (
        dry.status.code(),
        predicted,
        summary["native_blobs"].clone(),
        real.status.code(),
        failed,
    )
}

/// `restore --dry-run` into another subscription said "0 impossible" and exited 0; the real
/// run then failed the key and exited 3. The dry run now learns what the real run will meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_predicts_cross_subscription_refusals_and_exits_as_the_real_run() {
    let ws = Workspace::new();
    let emulator = start(vec![
        VaultSpec::new("alpha"),
        VaultSpec::new("beta"),
        VaultSpec::new("epsilon"),
        other_subscription_vault("gamma"),
        other_subscription_vault("delta"),
    ])
    .await;
    let alpha = vault(&emulator, "alpha").await;
    seed_secrets(&emulator, &alpha).await;
    seed_key_and_certificate(&emulator, &alpha, "alpha").await;
    import_locked_certificate(&alpha, "locked-cert").await;
    let archive = backup(&emulator, &ws, "alpha").await;
    let native_only: std::collections::BTreeSet<String> =
        ["certificate locked-cert", "key signing-key"]
            .map(str::to_owned)
            .into();
    let different = NewSecretVersion {
        value: SecretString::from("target-only".to_owned()),
        content_type: None,
        tags: BTreeMap::new(),
        attributes: Attributes::default(),
    };

    // Another subscription, holding an item of the archive: the probe is refused.
    let gamma = vault(&emulator, "gamma").await;
    gamma.set_secret("api-key", &different).await.expect("set");
    let before = committed_writes(&emulator, "gamma").await;
    let native = restore(
        &emulator,
        &ws,
        &archive,
        "gamma",
        &["--dry-run", "--mode", "native"],
    )
    .await;
    let shown = text(&native);
    assert_eq!(native.status.code(), Some(1), "as the real run: {shown}");
    assert!(
        shown.contains("another subscription or geography"),
        "{shown}"
    );
    assert_eq!(committed_writes(&emulator, "gamma").await, before);
    let dry = restore(&emulator, &ws, &archive, "gamma", &["--dry-run"]).await;
    let shown = text(&dry);
    assert!(shown.contains("2 impossible"), "{shown}");
    let key_line = shown
        .lines()
        .find(|l| l.starts_with("impossible") && l.contains("signing-key"))
        .unwrap_or_else(|| panic!("the key is impossible: {shown}"));
    assert!(
        key_line.contains("Cannot decrypt backup blob"),
        "{key_line}"
    );
    let (dry_code, predicted, native, real_code, failed) =
        dry_then_real(&emulator, &ws, &archive, "gamma").await;
    assert_eq!(native["state"], json!("refuses"), "{native}");
    assert_eq!((dry_code, real_code), (Some(3), Some(3)));
    assert_eq!(predicted, native_only);
    assert_eq!(failed, native_only);

    // Another subscription, empty: unverifiable without a write, so the dry run says which
    // items hinge on it and exits 3, as the real run does.
    let (dry_code, predicted, native, real_code, failed) =
        dry_then_real(&emulator, &ws, &archive, "delta").await;
    assert_eq!(native["state"], json!("unverified"), "{native}");
    assert_eq!((dry_code, real_code), (Some(3), Some(3)));
    assert_eq!(predicted, native_only);
    assert_eq!(failed, native_only);

    // The same subscription, holding an item of the archive: the probe's 409 proves the blobs
    // are accepted.
    let beta = vault(&emulator, "beta").await;
    beta.set_secret("api-key", &different).await.expect("set");
    let (dry_code, predicted, native, real_code, failed) =
        dry_then_real(&emulator, &ws, &archive, "beta").await;
    assert_eq!(native["state"], json!("accepts"), "{native}");
    assert!(
        native["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("409"),
        "{native}"
    );
    assert_eq!((dry_code, real_code), (Some(0), Some(0)));
    assert!(
        predicted.is_empty() && failed.is_empty(),
        "{predicted:?} {failed:?}"
    );
    assert!(
        beta.get_key("signing-key", None).await.is_ok(),
        "key restored"
    );

    // The same subscription, empty: the one case a dry run cannot settle. It names the items
    // at stake as unverified (exit 3); the real run then restores them.
    let (dry_code, predicted, native, real_code, failed) =
        dry_then_real(&emulator, &ws, &archive, "epsilon").await;
    assert_eq!(native["state"], json!("unverified"), "{native}");
    assert_eq!(dry_code, Some(3));
    assert_eq!(predicted, native_only);
    assert_eq!(real_code, Some(0));
    assert!(failed.is_empty(), "{failed:?}");
}

/// Key Vault opens a posted blob before it checks the name (the 409 after a purge in Azure's
/// recordings names the version id only the blob holds); the dry run's probe relies on it, so
/// the local Key Vault must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_opens_the_blob_before_it_checks_the_name() {
    let emulator = start(vec![
        VaultSpec::new("alpha"),
        other_subscription_vault("gamma"),
    ])
    .await;
    let alpha = vault(&emulator, "alpha").await;
    let gamma = vault(&emulator, "gamma").await;
    let value = NewSecretVersion {
        value: SecretString::from("v".to_owned()),
        content_type: None,
        tags: BTreeMap::new(),
        attributes: Attributes::default(),
    };
    alpha.set_secret("db", &value).await.expect("set");
    gamma.set_secret("db", &value).await.expect("set");
    let blob = alpha
        .backup(coldvault::vault::ItemKind::Secret, "db")
        .await
        .expect("backup");
    let over_live = alpha
        .restore(coldvault::vault::ItemKind::Secret, &blob)
        .await
        .expect_err("the name is live");
    assert_eq!(
        over_live.conflict_reason(),
        Some(&coldvault::vault::ConflictReason::Exists),
        "{over_live}"
    );
    let elsewhere = gamma
        .restore(coldvault::vault::ItemKind::Secret, &blob)
        .await
        .expect_err("another subscription");
    assert!(elsewhere.is_cannot_decrypt_backup(), "{elsewhere}");
}

/// `restore --name typo` said "nothing to restore" and exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_matching_nothing_is_exit_1_with_the_closest_names() {
    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("alpha")]).await;
    let alpha = vault(&emulator, "alpha").await;
    seed_secrets(&emulator, &alpha).await;
    let archive = backup(&emulator, &ws, "alpha").await;
    let before = writes_to(&emulator, "alpha").await.len();
    let output = restore(&emulator, &ws, &archive, "alpha", &["--name", "db-pasword"]).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("error: --name \"db-pasword\" matches nothing in the archive"),
        "{shown}"
    );
    assert!(
        shown.contains("hint: closest names in the archive: db-password"),
        "{shown}"
    );
    assert!(!shown.contains("nothing to restore"), "{shown}");
    assert_eq!(writes_to(&emulator, "alpha").await.len(), before);

    let url = emulator.vault_url("alpha");
    let output = run(
        &emulator,
        &[
            "diff",
            path_str(&archive),
            "--vault",
            &url,
            "-i",
            path_str(&ws.identity_file),
            "--name",
            "api-kee",
        ],
    )
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("--name \"api-kee\" matches nothing"),
        "{shown}"
    );
    assert!(
        shown.contains("closest names in the archive: api-key"),
        "{shown}"
    );

    // A glob that matches still restores.
    let output = restore(
        &emulator,
        &ws,
        &archive,
        "alpha",
        &["--name", "DB-*", "--dry-run"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_restore_with_exit_143_and_a_rerun_hint() {
    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("alpha"), VaultSpec::new("beta")]).await;
    let alpha = vault(&emulator, "alpha").await;
    alpha
        .set_secret(
            "db-password",
            &NewSecretVersion {
                value: SecretString::from("s3cret"),
                content_type: None,
                tags: BTreeMap::new(),
                attributes: Attributes::default(),
            },
        )
        .await
        .expect("set");
    let archive = backup(&emulator, &ws, "alpha").await;
    // Every write to beta is parked until released, so the signal lands mid-apply for certain.
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(
                json!({"kind": "hold", "vault": "beta", "method": "PUT", "count": 100,
                        "delay_ms": 60_000}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ready = emulator.ready();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(["restore", path_str(&archive), "--vault"])
        .arg(emulator.vault_url("beta"))
        .args(["-i", path_str(&ws.identity_file), "--mode", "plain"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_TENANT_ID", &ready.tenant_id)
        .env("AZURE_CLIENT_ID", &ready.client_id)
        .env("AZURE_CLIENT_SECRET", &ready.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("restore starts");
    crate::support::wait_until("a write to be parked", async || emulator.held().await > 0).await;
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().await.expect("restore ends");
    let (_, _) = emulator
        .admin(reqwest::Method::POST, "/faults/release", None)
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains(
            "beta: interrupted (SIGTERM); run the same command again to finish the restore"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret") && !String::from_utf8_lossy(&output.stdout).contains("s3cret")
    );
}

/// The archive is verified whole before the first write, then read again to apply it. If the
/// file changes in between, the restore stops at the first part that no longer matches with
/// exit 4, naming what was already written; a rerun with the good archive finishes the job
/// without duplicating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_changed_during_a_restore_stops_it_with_exit_4_and_a_rerun_finishes() {
    use futures::TryStreamExt;
    use sha2::Digest;

    let ws = Workspace::new();
    let emulator = start(vec![VaultSpec::new("alpha"), VaultSpec::new("beta")]).await;
    let alpha = vault(&emulator, "alpha").await;
    const SECRETS: usize = 120;
    // Values that do not compress, so the archive is large and the second read is still
    // early in the file when the first write is parked.
    let value = |i: usize| {
        let mut text = format!("{CANARY}-{i}-");
        let mut block = format!("{i}");
        while text.len() < 8000 {
            block = format!("{:x}", sha2::Sha256::digest(block.as_bytes()));
            text.push_str(&block);
        }
        text
    };
    for i in 0..SECRETS {
        alpha
            .set_secret(
                &format!("big-{i:03}"),
                &NewSecretVersion {
                    value: SecretString::from(value(i)),
                    content_type: None,
                    tags: BTreeMap::new(),
                    attributes: Attributes::default(),
                },
            )
            .await
            .expect("set");
    }
    let archive = backup(&emulator, &ws, "alpha").await;
    let good = std::fs::read(&archive).expect("archive");
    // The first write to beta is parked until released.
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(
                json!({"kind": "hold", "vault": "beta", "method": "PUT", "count": 1,
                        "delay_ms": 60_000}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ready = emulator.ready();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(["restore", path_str(&archive), "--vault"])
        .arg(emulator.vault_url("beta"))
        .args(["-i", path_str(&ws.identity_file), "--mode", "plain"])
        .args(["--concurrency", "1"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_TENANT_ID", &ready.tenant_id)
        .env("AZURE_CLIENT_ID", &ready.client_id)
        .env("AZURE_CLIENT_SECRET", &ready.client_secret)
        .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
        .env("COLDVAULT_CA_CERT", &ready.ca_cert)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("restore starts");
    let mut held = 0;
    for _ in 0..1200 {
        let (_, body) = emulator.admin(reqwest::Method::GET, "/faults", None).await;
        held = body["held"].as_u64().unwrap_or(0);
        if held > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(held > 0, "a write is parked");
    // The plan pass is over (writes have begun); the file now changes in its second half,
    // in place, as a damaged disk or a concurrent writer would change it.
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&archive, &damaged).expect("damage the archive");
    let (_, _) = emulator
        .admin(reqwest::Method::POST, "/faults/release", None)
        .await;
    let output = child.wait_with_output().await.expect("restore ends");
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains("failed verification while it was being restored"),
        "{shown}"
    );
    assert!(
        shown.contains("items were written before it stopped"),
        "{shown}"
    );
    assert!(!shown.contains(CANARY), "no value in the output");
    let beta = vault(&emulator, "beta").await;
    let written = beta
        .list_secrets()
        .try_collect::<Vec<_>>()
        .await
        .expect("list");
    assert!(
        !written.is_empty() && written.len() < SECRETS,
        "stopped part-way: {} written",
        written.len()
    );

    // With the good archive back, a rerun writes only what is missing.
    std::fs::write(&archive, &good).expect("restore the archive");
    let output = restore(&emulator, &ws, &archive, "beta", &["--mode", "plain"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for i in 0..SECRETS {
        let versions = versions_of(&beta, &format!("big-{i:03}")).await;
        assert_eq!(versions.len(), 1, "big-{i:03} written once");
        assert_eq!(versions[0].1, value(i));
    }
}
