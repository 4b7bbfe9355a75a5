//! Vault access against the local Key Vault: signing in through the credential chain, lists
//! that follow `nextLink` across short and empty pages, values, versions, the classification of
//! Azure's failures, native backup and restore, soft-deleted items, and the shared throttle gate
//! with retries of 429, 5xx and dropped connections (checked in the emulator's journal).

use std::collections::{BTreeMap, HashMap};

use age::secrecy::{ExposeSecret, SecretString};
use azure_security_keyvault_keys::models::{CreateKeyParameters, CurveName, KeyType};
use coldvault::vault::{
    Attributes, AuthMethod, AzureVault, CertificateImport, ConflictReason, ConnectOptions,
    EnvSnapshot, ItemKind, NetworkCause, NewSecretVersion, VaultError, VaultReader, VaultUrl,
    VaultWriter,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::support::TestEmulator;

/// The built-in service principal, as a scheduled job's environment would hold it.
fn env_of(emulator: &TestEmulator) -> EnvSnapshot {
    let ready = emulator.ready();
    EnvSnapshot::from_pairs([
        ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
        ("AZURE_CLIENT_ID", ready.client_id.as_str()),
        ("AZURE_CLIENT_SECRET", ready.client_secret.as_str()),
        ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
    ])
}

fn options_for(emulator: &TestEmulator) -> ConnectOptions {
    ConnectOptions {
        ca_cert: Some(emulator.running.ca_cert_path().to_path_buf()),
        env: env_of(emulator),
        ..ConnectOptions::default()
    }
}

async fn connect(emulator: &TestEmulator, vault: &str) -> AzureVault {
    connect_with(emulator, vault, options_for(emulator)).await
}

async fn connect_with(emulator: &TestEmulator, vault: &str, options: ConnectOptions) -> AzureVault {
    let url = VaultUrl::parse(&emulator.vault_url(vault)).expect("emulator URL parses");
    AzureVault::connect(&url, &options)
        .await
        .expect("connects to the emulator")
}

fn plain(value: &str) -> NewSecretVersion {
    NewSecretVersion {
        value: SecretString::from(value),
        content_type: Some("text/plain".into()),
        tags: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
        attributes: Attributes::default(),
    }
}

async fn inject(emulator: &TestEmulator, faults: Value) {
    let (status, body) = emulator
        .admin(reqwest::Method::POST, "/faults", Some(faults))
        .await;
    assert_eq!(status, 200, "faults accepted: {body}");
}

#[tokio::test]
async fn signs_in_with_the_environment_and_lists_across_ragged_pages() {
    let emulator = TestEmulator::start().await;
    emulator.settings(json!({"ragged_pages": true})).await;
    let vault = connect_with(
        &emulator,
        "alpha",
        ConnectOptions {
            page_size: 3,
            ..options_for(&emulator)
        },
    )
    .await;
    let used = vault.signed_in_with().expect("a credential signed in");
    assert_eq!(used.method, AuthMethod::Env);
    assert!(used.detail.contains(&emulator.ready().client_id));

    for i in 0..31 {
        vault
            .set_secret(&format!("s-{i:02}"), &plain(&format!("value-{i}")))
            .await
            .expect("secret set");
    }
    let mut names: Vec<String> = vault
        .list_secrets()
        .map_ok(|p| p.name)
        .try_collect()
        .await
        .expect("list completes");
    names.sort();
    let expected: Vec<String> = (0..31).map(|i| format!("s-{i:02}")).collect();
    assert_eq!(names, expected);

    let lists: Vec<Value> = emulator
        .journal()
        .await
        .into_iter()
        .filter(|e| e["method"] == "GET" && e["path"] == "/secrets")
        .collect();
    assert!(
        lists.len() > 11,
        "31 secrets in pages of at most 3 need more than 11 requests, saw {}",
        lists.len()
    );
    assert!(
        lists.iter().skip(1).all(|e| e["query"]
            .as_str()
            .unwrap_or_default()
            .contains("skiptoken")),
        "every later page follows nextLink"
    );

    let secret = vault.get_secret("s-07", None).await.expect("value read");
    assert_eq!(secret.value.expose_secret(), "value-7");
    assert_eq!(
        secret.properties.content_type.as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        secret.properties.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert!(secret.properties.version.is_some());
    assert!(!format!("{secret:?}").contains("value-7"));

    let stats = vault.stats();
    assert!(stats.requests >= 31 + 12, "{stats:?}");
    assert_eq!(stats.throttled, 0);
}

#[tokio::test]
async fn versions_come_oldest_first_with_their_attributes() {
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    let first = vault.set_secret("rotated", &plain("one")).await.unwrap();
    // The next version is created a second later on the vault's clock: timestamps are seconds.
    emulator.advance_clock_ms(1_000).await;
    let mut second = plain("two");
    second.attributes.expires =
        Some(time::OffsetDateTime::from_unix_timestamp(4_102_444_800).unwrap());
    let second_written = vault.set_secret("rotated", &second).await.unwrap();

    let versions = vault.list_secret_versions("rotated").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].version, first.version);
    assert_eq!(versions[1].version, second_written.version);
    assert_eq!(
        versions[1].attributes.expires.map(|t| t.unix_timestamp()),
        Some(4_102_444_800)
    );
    let old = vault
        .get_secret("rotated", versions[0].version.as_deref())
        .await
        .unwrap();
    assert_eq!(old.value.expose_secret(), "one");
}

#[tokio::test]
async fn a_disabled_secret_and_a_missing_one_are_told_apart() {
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    let mut disabled = plain("hidden");
    disabled.attributes.enabled = Some(false);
    vault.set_secret("off", &disabled).await.unwrap();

    let err = vault.get_secret("off", None).await.unwrap_err();
    assert!(err.is_secret_disabled(), "{err:?}");
    assert!(!err.to_string().contains("hidden"));
    let listed: Vec<_> = vault.list_secrets().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attributes.enabled, Some(false));

    let err = vault.get_secret("never-was", None).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = vault.get_secret("../keys", None).await.unwrap_err();
    assert!(matches!(err, VaultError::InvalidName { .. }));
}

#[tokio::test]
async fn secret_backups_restore_in_the_subscription_and_are_refused_elsewhere() {
    let emulator = TestEmulator::start().await;
    let alpha = connect(&emulator, "alpha").await;
    let beta = connect(&emulator, "beta").await;
    let gamma = connect(&emulator, "gamma").await;
    alpha.set_secret("db", &plain("v1")).await.unwrap();
    alpha.set_secret("db", &plain("v2")).await.unwrap();

    let blob = alpha.backup(ItemKind::Secret, "db").await.unwrap();
    assert!(!blob.0.is_empty());
    assert!(!format!("{blob:?}").contains("v1"));

    let err = alpha.restore(ItemKind::Secret, &blob).await.unwrap_err();
    assert_eq!(
        err.conflict_reason(),
        Some(&ConflictReason::Exists),
        "{err:?}"
    );

    let err = gamma.restore(ItemKind::Secret, &blob).await.unwrap_err();
    assert!(err.is_cannot_decrypt_backup(), "{err:?}");

    let restored = beta.restore(ItemKind::Secret, &blob).await.unwrap();
    assert_eq!(restored.name, "db");
    assert_eq!(beta.list_secret_versions("db").await.unwrap().len(), 2);
    assert_eq!(
        beta.get_secret("db", None)
            .await
            .unwrap()
            .value
            .expose_secret(),
        "v2"
    );

    let mut tampered = blob.clone();
    let middle = tampered.0.len() / 2;
    tampered.0[middle] ^= 0x55;
    let err = gamma
        .restore(ItemKind::Secret, &tampered)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::BadRequest { .. }), "{err:?}");
}

#[tokio::test]
async fn soft_deleted_secrets_are_listed_and_recovered() {
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    vault.set_secret("gone", &plain("x")).await.unwrap();
    let blob = vault.backup(ItemKind::Secret, "gone").await.unwrap();
    emulator
        .secret_client("alpha")
        .delete_secret("gone", None)
        .await
        .expect("deleted through the official client");

    let deleted: Vec<_> = vault
        .list_deleted(ItemKind::Secret)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].name, "gone");
    assert!(deleted[0].recovery_id.is_some());
    let item = vault.get_deleted(ItemKind::Secret, "gone").await.unwrap();
    assert_eq!(item.kind, ItemKind::Secret);

    let err = vault.restore(ItemKind::Secret, &blob).await.unwrap_err();
    assert_eq!(
        err.conflict_reason(),
        Some(&ConflictReason::DeletedButRecoverable),
        "{err:?}"
    );

    vault
        .recover_deleted(ItemKind::Secret, "gone")
        .await
        .unwrap();
    // This vault settles at once (no `delete_delay_ms`): the recovered secret reads back now.
    let value = vault.get_secret("gone", None).await.expect("recovered");
    assert_eq!(value.value.expose_secret(), "x");
}

async fn create_key(emulator: &TestEmulator, vault: &str, name: &str, kty: KeyType) {
    let parameters = CreateKeyParameters {
        kty: Some(kty.clone()),
        key_size: matches!(kty, KeyType::Rsa).then_some(2048),
        curve: matches!(kty, KeyType::Ec).then_some(CurveName::P256),
        tags: Some(HashMap::from([("owner".to_owned(), "ops".to_owned())])),
        ..Default::default()
    };
    emulator
        .key_client(vault)
        .create_key(name, parameters.try_into().unwrap(), None)
        .await
        .expect("key created through the official client");
}

#[tokio::test]
async fn keys_are_listed_read_and_backed_up() {
    let emulator = TestEmulator::start().await;
    create_key(&emulator, "alpha", "signing", KeyType::Rsa).await;
    create_key(&emulator, "alpha", "ecdh", KeyType::Ec).await;
    let alpha = connect(&emulator, "alpha").await;

    let mut keys: Vec<_> = alpha.list_keys().try_collect().await.unwrap();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["ecdh", "signing"]
    );
    assert!(keys.iter().all(|k| !k.managed));
    assert_eq!(keys[1].tags.get("owner").map(String::as_str), Some("ops"));

    let key = alpha.get_key("signing", None).await.unwrap();
    assert_eq!(key.jwk["kty"], "RSA");
    assert!(key.jwk.get("n").is_some() && key.jwk.get("e").is_some());
    assert!(key.jwk.get("d").is_none(), "no private material");
    assert!(key.properties.version.is_some());
    let ec = alpha.get_key("ecdh", None).await.unwrap();
    assert_eq!(ec.jwk["crv"], "P-256");

    let policy = alpha.get_key_rotation_policy("signing").await.unwrap();
    assert!(policy.is_none_or(|p| p.is_object()));
    let err = alpha.get_key("absent", None).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    let blob = alpha.backup(ItemKind::Key, "signing").await.unwrap();
    let beta = connect(&emulator, "beta").await;
    let restored = beta.restore(ItemKind::Key, &blob).await.unwrap();
    assert_eq!(restored.name, "signing");
    assert_eq!(
        beta.get_key("signing", None).await.unwrap().jwk["n"],
        key.jwk["n"],
        "the same key material came back"
    );
    let gamma = connect(&emulator, "gamma").await;
    let err = gamma.restore(ItemKind::Key, &blob).await.unwrap_err();
    assert!(err.is_cannot_decrypt_backup(), "{err:?}");
    let err = alpha.restore(ItemKind::Key, &blob).await.unwrap_err();
    assert!(err.conflict_reason().is_some(), "{err:?}");
    // A key blob is not a secret blob.
    let err = beta.restore(ItemKind::Secret, &blob).await.unwrap_err();
    assert!(matches!(err, VaultError::BadRequest { .. }), "{err:?}");
}

#[tokio::test]
async fn deleted_keys_are_listed_and_recovered() {
    let emulator = TestEmulator::start().await;
    create_key(&emulator, "alpha", "old", KeyType::Rsa).await;
    emulator
        .key_client("alpha")
        .delete_key("old", None)
        .await
        .expect("deleted through the official client");
    let vault = connect(&emulator, "alpha").await;
    let deleted: Vec<_> = vault
        .list_deleted(ItemKind::Key)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].name, "old");
    assert_eq!(deleted[0].kind, ItemKind::Key);
    assert_eq!(
        vault.get_deleted(ItemKind::Key, "old").await.unwrap().name,
        "old"
    );
    let recovered = vault.recover_deleted(ItemKind::Key, "old").await.unwrap();
    assert_eq!(recovered.kind, ItemKind::Key);
    assert_eq!(recovered.name, "old");
}

/// A self-signed RSA certificate and its key, as PEM text.
fn certificate_pem(subject: &str) -> String {
    let key = crate::support::rsa_key_pair();
    let cert = rcgen::CertificateParams::new(vec![subject.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    format!("{}{}", key.serialize_pem(), cert.pem())
}

fn pem_import(pem: &str) -> CertificateImport {
    CertificateImport {
        value: SecretString::from(pem),
        content_type: "application/x-pem-file".to_owned(),
        password: None,
        policy: Some(json!({
            "key_props": {"exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false},
            "secret_props": {"contentType": "application/x-pem-file"}
        })),
        tags: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        attributes: Attributes::default(),
    }
}

#[tokio::test]
async fn certificates_are_read_with_policy_and_exportable_secret_and_backed_up() {
    let emulator = TestEmulator::start().await;
    let alpha = connect(&emulator, "alpha").await;
    let pem = certificate_pem("web.example.test");
    let imported = alpha
        .import_certificate("web", &pem_import(&pem))
        .await
        .expect("PEM imported");
    assert_eq!(imported.kind, ItemKind::Certificate);

    let certs: Vec<_> = alpha.list_certificates().try_collect().await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].name, "web");
    assert_eq!(certs[0].tags.get("env").map(String::as_str), Some("prod"));

    let bundle = alpha.get_certificate("web", None).await.unwrap();
    assert!(!bundle.cer.is_empty());
    assert!(bundle.key_exportable(), "{:?}", bundle.policy);
    let policy = alpha.get_certificate_policy("web").await.unwrap();
    assert_eq!(policy["key_props"]["exportable"], true);

    // The managed secret and key are listed as managed, and the secret holds the PEM.
    let secrets: Vec<_> = alpha.list_secrets().try_collect().await.unwrap();
    assert!(secrets.iter().all(|s| s.managed), "{secrets:?}");
    let keys: Vec<_> = alpha.list_keys().try_collect().await.unwrap();
    assert!(keys.iter().all(|k| k.managed), "{keys:?}");
    let version = bundle.secret_version().expect("sid names a version");
    let material = alpha.get_secret("web", Some(&version)).await.unwrap();
    assert!(material.properties.managed);
    assert!(material.value.expose_secret().contains("PRIVATE KEY"));
    let err = alpha.backup(ItemKind::Secret, "web").await.unwrap_err();
    assert!(
        err.is_forbidden(),
        "a managed secret is not backed up on its own: {err:?}"
    );

    let blob = alpha.backup(ItemKind::Certificate, "web").await.unwrap();
    let beta = connect(&emulator, "beta").await;
    beta.restore(ItemKind::Certificate, &blob).await.unwrap();
    assert_eq!(
        beta.get_certificate("web", None).await.unwrap().cer,
        bundle.cer
    );
    let gamma = connect(&emulator, "gamma").await;
    let err = gamma
        .restore(ItemKind::Certificate, &blob)
        .await
        .unwrap_err();
    assert!(err.is_cannot_decrypt_backup(), "{err:?}");

    // Another subscription gets the certificate back by import of the exportable material.
    let import = CertificateImport {
        value: material.value.clone(),
        content_type: material
            .properties
            .content_type
            .clone()
            .unwrap_or_else(|| "application/x-pem-file".to_owned()),
        password: None,
        policy: bundle.policy.clone(),
        tags: bundle.properties.tags.clone(),
        attributes: Attributes::default(),
    };
    gamma.import_certificate("web", &import).await.unwrap();
    assert_eq!(
        gamma.get_certificate("web", None).await.unwrap().cer,
        bundle.cer
    );
}

#[tokio::test]
async fn a_lone_throttle_delays_only_its_own_request() {
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    for i in 0..8 {
        vault
            .set_secret(&format!("t-{i}"), &plain("v"))
            .await
            .unwrap();
    }
    inject(
        &emulator,
        json!({"kind": "throttle", "count": 1, "method": "GET", "path": "/secrets/t-0", "retry_after": 1}),
    )
    .await;

    // One worker meets the 429; the others start after the client has seen it.
    let first = tokio::spawn({
        let vault = vault.clone();
        async move { vault.get_secret("t-0", None).await }
    });
    crate::support::wait_until("the client to see the 429", async || {
        vault.stats().throttled > 0
    })
    .await;
    let others: Vec<_> = futures::stream::iter(1..8)
        .map(|i| {
            let vault = vault.clone();
            async move { vault.get_secret(&format!("t-{i}"), None).await }
        })
        .buffer_unordered(7)
        .collect()
        .await;
    assert!(first.await.unwrap().is_ok());
    assert!(others.iter().all(Result::is_ok));
    let stats = vault.stats();
    assert_eq!(stats.throttled, 1);
    // A stray 429 is no evidence of a budget: nothing shared was paused or lowered (the old
    // pacer held every worker for its Retry-After and could cut the rate).
    assert_eq!(stats.rate_cuts, 0);
    assert_eq!(stats.rate_limit, None);

    let journal = emulator.journal().await;
    let throttled_at = journal
        .iter()
        .filter(|e| e["status"] == 429)
        .filter_map(|e| e["at_ms"].as_i64())
        .collect::<Vec<_>>();
    assert_eq!(throttled_at.len(), 1, "one 429 in the journal");
    let retried_at: Vec<i64> = journal
        .iter()
        .filter(|e| {
            e["status"] == 200
                && e["method"] == "GET"
                && e["path"].as_str().unwrap_or_default().trim_end_matches('/') == "/secrets/t-0"
        })
        .filter_map(|e| e["at_ms"].as_i64())
        .collect();
    assert_eq!(retried_at.len(), 1);
    assert!(
        retried_at[0] >= throttled_at[0] + 950,
        "the throttled read waited out its Retry-After after the 429 at {}: {retried_at:?}",
        throttled_at[0]
    );
}

#[tokio::test]
async fn a_throttle_storm_is_ridden_out() {
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    for i in 0..16 {
        vault
            .set_secret(&format!("t-{i}"), &plain("v"))
            .await
            .unwrap();
    }
    inject(
        &emulator,
        json!({"kind": "throttle", "count": 12, "method": "GET", "path": "/secrets/t-", "retry_after": 1}),
    )
    .await;
    let results: Vec<_> = futures::stream::iter(0..16)
        .map(|i| {
            let vault = vault.clone();
            async move { vault.get_secret(&format!("t-{i}"), None).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        results.iter().all(Result::is_ok),
        "every read succeeds after the storm"
    );
    assert_eq!(vault.stats().throttled, 12);
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried() {
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    vault.set_secret("flaky", &plain("steady")).await.unwrap();
    inject(
        &emulator,
        json!([
            {"kind": "internal", "count": 1, "path": "/secrets/flaky"},
            {"kind": "unavailable", "count": 1, "path": "/secrets/flaky", "retry_after": 0},
            {"kind": "drop", "count": 1, "path": "/secrets/flaky"}
        ]),
    )
    .await;
    let secret = vault
        .get_secret("flaky", None)
        .await
        .expect("read after retries");
    assert_eq!(secret.value.expose_secret(), "steady");
    let stats = vault.stats();
    assert!(stats.server_errors >= 2, "{stats:?}");
    assert!(stats.transport_errors >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_rejected_credential_names_every_attempt() {
    let emulator = TestEmulator::start().await;
    let ready = emulator.ready();
    let url = VaultUrl::parse(&emulator.vault_url("alpha")).unwrap();
    let options = ConnectOptions {
        ca_cert: Some(emulator.running.ca_cert_path().to_path_buf()),
        auth: Some(AuthMethod::Env),
        env: EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
            ("AZURE_CLIENT_ID", ready.client_id.as_str()),
            ("AZURE_CLIENT_SECRET", "canary-wrong-secret"),
            ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ]),
        ..ConnectOptions::default()
    };
    let err = AzureVault::connect(&url, &options).await.unwrap_err();
    let VaultError::Authentication(auth) = &err else {
        panic!("expected an authentication failure, got {err:?}");
    };
    assert_eq!(auth.attempts.len(), 1);
    assert_eq!(auth.attempts[0].method, AuthMethod::Env);
    let text = err.to_string();
    assert!(text.contains("env"), "{text}");
    assert!(!text.contains("canary-wrong-secret"));
    assert!(!format!("{err:?}").contains("canary-wrong-secret"));
}

#[tokio::test]
async fn without_the_emulator_root_the_certificate_is_refused() {
    let emulator = TestEmulator::start().await;
    let options = ConnectOptions {
        ca_cert: None,
        ..options_for(&emulator)
    };
    let url = VaultUrl::parse(&emulator.vault_url("alpha")).unwrap();
    let err = AzureVault::connect(&url, &options).await.unwrap_err();
    let VaultError::Network(failure) = &err else {
        panic!("expected a network failure, got {err:?}");
    };
    // Not retried: an untrusted certificate does not get better with time. A failure that
    // was retried until the deadline says how long it kept trying.
    assert_eq!(failure.gave_up_after, None, "{failure:?}");
    assert!(
        matches!(failure.cause, NetworkCause::UntrustedCertificate(_)),
        "{failure:?}"
    );
    assert!(
        err.to_string().contains("TLS certificate is not trusted"),
        "{err}"
    );
}

/// Set in the child process that runs [`managed_identity_child`].
const CHILD_VAULT_URL: &str = "COLDVAULT_TEST_MI_VAULT_URL";
const CHILD_CA: &str = "COLDVAULT_TEST_MI_CA";

#[tokio::test]
async fn managed_identity_signs_in_through_the_identity_endpoint() {
    // azure_identity reads IDENTITY_ENDPOINT from the process environment, which a threaded
    // test binary must not change: this test runs its other half in a child process instead.
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    vault.set_secret("mi-visible", &plain("v")).await.unwrap();
    let exe = std::env::current_exe().expect("test binary path");
    let output = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "vault::managed_identity_child",
            "--ignored",
            "--nocapture",
        ])
        .env("IDENTITY_ENDPOINT", &emulator.ready().identity_endpoint)
        .env("IDENTITY_HEADER", "coldvault-test-header")
        .env(CHILD_VAULT_URL, emulator.vault_url("alpha"))
        .env(CHILD_CA, emulator.running.ca_cert_path())
        .output()
        .await
        .expect("child test runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
#[ignore = "the child half of managed_identity_signs_in_through_the_identity_endpoint"]
async fn managed_identity_child() {
    let url = std::env::var(CHILD_VAULT_URL).expect("run by the parent test");
    let ca = std::env::var(CHILD_CA).expect("run by the parent test");
    let options = ConnectOptions {
        ca_cert: Some(ca.into()),
        auth: Some(AuthMethod::ManagedIdentity),
        env: EnvSnapshot::default(),
        ..ConnectOptions::default()
    };
    let vault = AzureVault::connect(&VaultUrl::parse(&url).unwrap(), &options)
        .await
        .expect("signs in with the managed identity");
    assert_eq!(
        vault.signed_in_with().map(|s| s.method),
        Some(AuthMethod::ManagedIdentity)
    );
    let names: Vec<String> = vault
        .list_secrets()
        .map_ok(|p| p.name)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names, vec!["mi-visible".to_owned()]);
}

/// Prints what the pacing achieves under a throttle budget: run with
/// `cargo test --test integration vault::throttle_budget_figures -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark: prints figures, takes about half a minute"]
async fn throttle_budget_figures() {
    const SECRETS: usize = 300;
    const BUDGET: u64 = 400;
    let emulator = TestEmulator::start().await;
    let seeder = connect(&emulator, "alpha").await;
    futures::stream::iter(0..SECRETS)
        .map(|i| {
            let vault = seeder.clone();
            async move { vault.set_secret(&format!("b-{i:04}"), &plain("v")).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    emulator.settings(json!({"budget": BUDGET})).await;
    let vault = connect(&emulator, "alpha").await;
    let started = std::time::Instant::now();
    let reads: Vec<_> = futures::stream::iter(0..SECRETS * 4)
        .map(|i| {
            let vault = vault.clone();
            async move {
                vault
                    .get_secret(&format!("b-{:04}", i % SECRETS), None)
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = vault.stats();
    let failed = reads.iter().filter(|r| r.is_err()).count();
    println!(
        "budget {BUDGET}/10 s: {} requests in {elapsed:.1} s = {:.0}% of budget, {} throttled, {failed} failed, learned rate {:?}",
        stats.requests,
        100.0 * stats.requests as f64 / elapsed / (BUDGET as f64 / 10.0),
        stats.throttled,
        stats.rate_limit
    );
    assert_eq!(failed, 0);
}

/// Prints how reads fare when a tenth of the vault's answers are random 429, 500 or 503: run
/// with `cargo test --test integration vault::fault_rate_figures -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark: prints figures"]
async fn fault_rate_figures() {
    const SECRETS: usize = 300;
    let emulator = TestEmulator::start().await;
    let vault = connect(&emulator, "alpha").await;
    futures::stream::iter(0..SECRETS)
        .map(|i| {
            let vault = vault.clone();
            async move { vault.set_secret(&format!("f-{i:04}"), &plain("v")).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    emulator.settings(json!({"fault_rate": 0.1})).await;
    let before = vault.stats();
    let started = std::time::Instant::now();
    let reads: Vec<_> = futures::stream::iter(0..SECRETS)
        .map(|i| {
            let vault = vault.clone();
            async move { vault.get_secret(&format!("f-{i:04}"), None).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let stats = vault.stats();
    let failed = reads.iter().filter(|r| r.is_err()).count();
    println!(
        "fault rate 10%: {SECRETS} reads in {:.1} s, {} requests, {} throttled, {} server errors, {failed} failed",
        started.elapsed().as_secs_f64(),
        stats.requests - before.requests,
        stats.throttled - before.throttled,
        stats.server_errors - before.server_errors,
    );
    assert_eq!(failed, 0);
}
