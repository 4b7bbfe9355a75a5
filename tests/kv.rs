//! The KV v2 client against a real OpenBao dev server ([`TestBao`]), seeded and checked with
//! the official Python client `hvac`, so a misreading of the API in coldvault cannot hide
//! behind the same misreading in the test: listing, versions and their states, check-and-set
//! writes, metadata, AppRole, and every connect failure (bad token, sealed, no mount, KV v1,
//! untrusted certificate) as one line that names no secret. Faults (5xx, 429, a sealed 503, a
//! write applied whose answer was lost, a secret gone between list and read) come from a small
//! HTTP proxy in front of the real server that answers chosen requests itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use age::secrecy::SecretString;
use coldvault::kv::client::{KvAuth, KvClient, KvError, KvErrorKind, KvOptions, MetadataUpdate};
use coldvault::kv::{KvAddress, KvData};
use serde_json::{Value, json};

use crate::support::TestBao;

/// A value no message may show.
const CANARY: &str = "CANARY-7f3e-kv-never-print";

fn options() -> KvOptions {
    KvOptions {
        namespace: None,
        ca_cert: None,
        timeout: Duration::from_secs(30),
    }
}

fn root(bao: &TestBao) -> KvAuth {
    KvAuth::Token(SecretString::from(bao.root_token().to_owned()))
}

async fn connect(bao: &TestBao, mount_and_path: &str) -> KvClient {
    let address = KvAddress::parse(&bao.kv_url(mount_and_path)).expect("address parses");
    KvClient::connect(&address, root(bao), options())
        .await
        .expect("connects")
}

async fn connect_err(bao: &TestBao, mount_and_path: &str, auth: KvAuth) -> KvError {
    let address = KvAddress::parse(&bao.kv_url(mount_and_path)).expect("address parses");
    KvClient::connect(&address, auth, options())
        .await
        .expect_err("connect fails")
}

fn data(pairs: &[(&str, &str)]) -> KvData {
    KvData(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect(),
    )
}

/// One line, and neither the message nor the hint shows `secret`.
fn assert_clean(err: &KvError, secret: &str) {
    let text = format!("{err} {}", err.hint.clone().unwrap_or_default());
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    assert!(!text.contains(secret), "secret shown: {text}");
    assert!(
        !format!("{err:?}").contains(secret),
        "secret in Debug: {err:?}"
    );
}

#[tokio::test]
async fn list_recurses_into_folders_and_keeps_odd_characters() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
for path in ["top", "app/db", "app/my key", "app/deep/er/x", "app/deep/y", "other/z"]:
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": path}, mount_point="secret")
"#,
    )
    .await;
    let whole = connect(&bao, "secret").await;
    assert!(!format!("{whole:?}").contains(bao.root_token()));
    assert_eq!(
        whole.list().await.unwrap(),
        [
            "app/db",
            "app/deep/er/x",
            "app/deep/y",
            "app/my key",
            "other/z",
            "top"
        ]
    );
    // A prefix covers its folder; paths stay relative to the mount.
    let app = connect(&bao, "secret/app").await;
    assert_eq!(
        (app.address().mount(), app.address().prefix()),
        ("secret", "app")
    );
    assert_eq!(
        app.list().await.unwrap(),
        ["app/db", "app/deep/er/x", "app/deep/y", "app/my key"]
    );
    // A prefix naming one secret covers that secret.
    let one = connect(&bao, "secret/app/db").await;
    assert_eq!(one.list().await.unwrap(), ["app/db"]);
    // An empty folder lists nothing.
    let none = connect(&bao, "secret/nothing/here").await;
    assert!(none.list().await.unwrap().is_empty());
    let read = whole
        .read_secret("app/my key")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(
        read.current().and_then(|v| v.data.clone()),
        Some(data(&[("v", "app/my key")]))
    );
}

#[tokio::test]
async fn a_nested_mount_is_resolved_by_the_server() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
client.sys.enable_secrets_engine("kv", path="team/kv", options={"version": "2"})
client.secrets.kv.v2.create_or_update_secret(path="app/one", secret={"a": "1"}, mount_point="team/kv")
client.secrets.kv.v2.create_or_update_secret(path="two", secret={"a": "2"}, mount_point="team/kv")
"#,
    )
    .await;
    let client = connect(&bao, "team/kv/app").await;
    assert_eq!(client.address().mount(), "team/kv");
    assert_eq!(client.address().prefix(), "app");
    assert_eq!(client.list().await.unwrap(), ["app/one"]);
    let whole = connect(&bao, "team/kv").await;
    assert_eq!(whole.list().await.unwrap(), ["app/one", "two"]);
}

#[tokio::test]
async fn read_secret_reports_deleted_and_destroyed_versions_without_data() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
for i in (1, 2, 3):
    client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"password": "v%d" % i, "n": str(i)}, mount_point="secret")
client.secrets.kv.v2.update_metadata(path="app/db", custom_metadata={"owner": "team-a", "env": "prod"}, mount_point="secret")
client.secrets.kv.v2.delete_secret_versions(path="app/db", versions=[1], mount_point="secret")
client.secrets.kv.v2.destroy_secret_versions(path="app/db", versions=[2], mount_point="secret")
"#,
    )
    .await;
    let client = connect(&bao, "secret").await;
    let secret = client.read_secret("app/db").await.unwrap().expect("found");
    assert_eq!(secret.path, "app/db");
    assert_eq!(secret.current_version, 3);
    assert_eq!(secret.oldest_version, 1);
    assert_eq!(
        secret.custom_metadata,
        BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            ("owner".to_owned(), "team-a".to_owned())
        ])
    );
    assert_eq!(secret.delete_version_after, "0s");
    assert!(secret.created.is_some() && secret.updated.is_some());
    let versions: Vec<u64> = secret.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    let [v1, v2, v3] = &secret.versions[..] else {
        unreachable!()
    };
    assert!(v1.deleted.is_some() && !v1.destroyed && v1.data.is_none());
    assert!(v2.destroyed && v2.deleted.is_none() && v2.data.is_none());
    assert!(v3.is_live());
    assert!(v1.created.unwrap() < v3.created.unwrap());
    assert_eq!(v3.data, Some(data(&[("n", "3"), ("password", "v3")])));
    assert_eq!(secret.current().map(|v| v.version), Some(3));

    assert!(client.read_secret("app/none").await.unwrap().is_none());
}

#[tokio::test]
async fn read_all_reads_every_secret_sorted() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
for i in range(30):
    client.secrets.kv.v2.create_or_update_secret(path="f%d/s%02d" % (i % 4, i), secret={"i": str(i)}, mount_point="secret")
client.secrets.kv.v2.create_or_update_secret(path="f0/s00", secret={"i": "again"}, mount_point="secret")
"#,
    )
    .await;
    let client = connect(&bao, "secret").await;
    let snapshot = client.read_all(6).await.unwrap();
    assert_eq!(snapshot.secrets.len(), 30);
    let paths: Vec<&str> = snapshot.secrets.iter().map(|s| s.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    let first = &snapshot.secrets[0];
    assert_eq!(first.path, "f0/s00");
    assert_eq!(first.versions.len(), 2);
    assert_eq!(first.versions[0].data, Some(data(&[("i", "0")])));
    assert_eq!(first.versions[1].data, Some(data(&[("i", "again")])));
    assert_eq!(snapshot.address.mount(), "secret");
}

#[tokio::test]
async fn writes_use_check_and_set_and_a_concurrent_change_is_a_mismatch() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let client = connect(&bao, "secret").await;
    let first = data(&[("user", "app"), ("password", CANARY)]);
    assert_eq!(client.write("new/one", &first, 0).await.unwrap(), 1);
    let seen = bao
        .hvac(
            r#"
r = client.secrets.kv.v2.read_secret_version(path="new/one", mount_point="secret", raise_on_deleted_version=True)
print(json.dumps(r["data"]["data"], sort_keys=True))
"#,
        )
        .await;
    assert_eq!(
        seen.trim(),
        format!(r#"{{"password": "{CANARY}", "user": "app"}}"#)
    );
    // cas 0 on a path that exists is refused too.
    let again = client.write("new/one", &first, 0).await.unwrap_err();
    assert!(again.is_cas_mismatch(), "{again}");

    // Someone else writes version 2 after coldvault saw version 1.
    bao.hvac(
        r#"
client.secrets.kv.v2.create_or_update_secret(path="new/one", secret={"by": "someone"}, mount_point="secret")
"#,
    )
    .await;
    let err = client
        .write("new/one", &data(&[("password", "mine")]), 1)
        .await
        .unwrap_err();
    assert!(err.is_cas_mismatch(), "{err}");
    assert_eq!(err.kind, KvErrorKind::CasMismatch);
    assert!(err.to_string().contains("secret/new/one"), "{err}");
    assert_clean(&err, CANARY);
    let after = bao
        .hvac(
            r#"
r = client.secrets.kv.v2.read_secret_version(path="new/one", mount_point="secret", raise_on_deleted_version=True)
print(r["data"]["metadata"]["version"], json.dumps(r["data"]["data"]))
"#,
        )
        .await;
    assert_eq!(after.trim(), r#"2 {"by": "someone"}"#, "nothing written");
    // With the right version it goes through.
    assert_eq!(
        client
            .write("new/one", &data(&[("password", "mine")]), 2)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn metadata_and_version_states_are_written() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let client = connect(&bao, "secret").await;
    for (i, cas) in [(1, 0), (2, 1), (3, 2)] {
        let n = i.to_string();
        assert_eq!(
            client
                .write("app/cfg", &data(&[("n", &n)]), cas)
                .await
                .unwrap(),
            i
        );
    }
    client
        .write_metadata(
            "app/cfg",
            &MetadataUpdate {
                custom_metadata: Some(BTreeMap::from([
                    ("owner".to_owned(), "team b".to_owned()),
                    ("coldvault".to_owned(), "copy".to_owned()),
                ])),
                max_versions: Some(7),
                cas_required: Some(true),
                delete_version_after: Some("1h".to_owned()),
            },
        )
        .await
        .unwrap();
    // Metadata for a path with no version yet creates the entry.
    client
        .write_metadata(
            "app/empty",
            &MetadataUpdate {
                custom_metadata: Some(BTreeMap::from([("a".to_owned(), "b".to_owned())])),
                ..MetadataUpdate::default()
            },
        )
        .await
        .unwrap();
    client.delete_versions("app/cfg", &[1, 2]).await.unwrap();
    client.undelete_versions("app/cfg", &[2]).await.unwrap();
    client.destroy_versions("app/cfg", &[3]).await.unwrap();

    let seen: Value = serde_json::from_str(
        &bao.hvac(
            r#"
import datetime
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
m = client.secrets.kv.v2.read_secret_metadata(path="app/cfg", mount_point="secret")["data"]
e = client.secrets.kv.v2.read_secret_metadata(path="app/empty", mount_point="secret")["data"]
print(json.dumps({
    "custom": m["custom_metadata"], "max": m["max_versions"], "cas": m["cas_required"],
    "after": m["delete_version_after"], "empty": e["custom_metadata"],
    # With delete_version_after, a live version carries its future deletion time.
    "versions": {k: [v["deletion_time"] != "" and v["deletion_time"] < now, v["destroyed"]] for k, v in m["versions"].items()},
}))
"#,
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        seen,
        json!({
            "custom": {"owner": "team b", "coldvault": "copy"},
            "max": 7, "cas": true, "after": "1h0m0s", "empty": {"a": "b"},
            "versions": {"1": [true, false], "2": [false, false], "3": [false, true]},
        })
    );
    // coldvault reads back what hvac saw.
    let secret = client.read_secret("app/cfg").await.unwrap().unwrap();
    assert_eq!((secret.max_versions, secret.cas_required), (7, true));
    assert_eq!(secret.delete_version_after, "1h0m0s");
    let live: Vec<u64> = secret
        .versions
        .iter()
        .filter(|v| v.is_live())
        .map(|v| v.version)
        .collect();
    assert_eq!(live, [2]);
    assert!(
        secret.current().is_none(),
        "the newest version is destroyed"
    );

    // A field left out keeps its value; an empty map clears custom_metadata.
    let keep = MetadataUpdate {
        max_versions: Some(9),
        ..MetadataUpdate::default()
    };
    client.write_metadata("app/cfg", &keep).await.unwrap();
    let kept = client.read_secret("app/cfg").await.unwrap().unwrap();
    assert_eq!((kept.max_versions, kept.custom_metadata.len()), (9, 2));
    let clear = MetadataUpdate {
        custom_metadata: Some(BTreeMap::new()),
        ..MetadataUpdate::default()
    };
    client.write_metadata("app/cfg", &clear).await.unwrap();
    let cleared = bao
        .hvac(
            r#"print(json.dumps(client.secrets.kv.v2.read_secret_metadata(path="app/cfg", mount_point="secret")["data"]["custom_metadata"]))"#,
        )
        .await;
    assert_eq!(cleared.trim(), "null");
}

#[tokio::test]
async fn approle_logs_in_and_a_wrong_secret_id_is_refused() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let ids: Value = serde_json::from_str(
        &bao.hvac(
            r#"
client.sys.enable_auth_method("approle")
client.sys.create_or_update_policy("kv-read", 'path "secret/*" { capabilities = ["read", "list"] }')
client.auth.approle.create_or_update_approle("backup", token_policies=["kv-read"])
role_id = client.auth.approle.read_role_id("backup")["data"]["role_id"]
secret_id = client.auth.approle.generate_secret_id("backup")["data"]["secret_id"]
client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"p": "x"}, mount_point="secret")
print(json.dumps({"role_id": role_id, "secret_id": secret_id}))
"#,
        )
        .await,
    )
    .unwrap();
    let role_id = ids["role_id"].as_str().unwrap().to_owned();
    let secret_id = ids["secret_id"].as_str().unwrap().to_owned();
    let env = |name: &str| match name {
        "VAULT_ROLE_ID" => Some(role_id.clone()),
        "BAO_SECRET_ID" => Some(secret_id.clone()),
        _ => None,
    };
    let auth = KvAuth::from_env(env).expect("AppRole from the environment");
    assert!(!format!("{auth:?}").contains(&secret_id));
    let address = KvAddress::parse(&bao.kv_url("secret")).unwrap();
    let client = KvClient::connect(&address, auth, options())
        .await
        .expect("AppRole connects");
    assert_eq!(client.list().await.unwrap(), ["app/db"]);
    let secret = client.read_secret("app/db").await.unwrap().unwrap();
    assert_eq!(secret.current().unwrap().data, Some(data(&[("p", "x")])));
    // The policy grants no write.
    let err = client
        .write("app/db", &data(&[("p", "y")]), 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind, KvErrorKind::PermissionDenied, "{err}");

    let wrong = KvAuth::AppRole {
        role_id: role_id.clone(),
        secret_id: SecretString::from(CANARY.to_owned()),
        mount: "approle".to_owned(),
    };
    let err = connect_err(&bao, "secret", wrong).await;
    assert_eq!(err.kind, KvErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("AppRole"), "{err}");
    assert_clean(&err, CANARY);

    let elsewhere = KvAuth::AppRole {
        role_id,
        secret_id: SecretString::from(secret_id.clone()),
        mount: "nope".to_owned(),
    };
    let err = connect_err(&bao, "secret", elsewhere).await;
    assert_eq!(err.kind, KvErrorKind::NoCredential, "{err}");
    assert!(
        err.to_string()
            .contains("no AppRole auth method at 'auth/nope'"),
        "{err}"
    );
    assert!(err.hint.as_deref().unwrap().contains("VAULT_APPROLE_MOUNT"));
    assert_clean(&err, &secret_id);
}

#[tokio::test]
async fn a_bad_token_is_permission_denied_in_one_line() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let err = connect_err(
        &bao,
        "secret",
        KvAuth::Token(SecretString::from(CANARY.to_owned())),
    )
    .await;
    assert_eq!(err.kind, KvErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("refused the token (permission denied)"),
        "{err}"
    );
    assert!(
        err.to_string().contains("OpenBao server at 127.0.0.1:"),
        "{err}"
    );
    assert!(err.hint.as_deref().unwrap().contains("VAULT_TOKEN"));
    assert_clean(&err, CANARY);
    assert_clean(&err, bao.root_token());
}

#[tokio::test]
async fn a_token_without_the_default_policy_still_connects() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    // Such a token cannot look itself up: the mount lookup decides.
    let token = bao
        .hvac(
            r#"
client.sys.create_or_update_policy("kv-read", 'path "secret/*" { capabilities = ["read", "list"] }')
print(client.auth.token.create(policies=["kv-read"], no_default_policy=True)["auth"]["client_token"])
"#,
        )
        .await;
    let address = KvAddress::parse(&bao.kv_url("secret")).unwrap();
    let client = KvClient::connect(
        &address,
        KvAuth::Token(SecretString::from(token.trim().to_owned())),
        options(),
    )
    .await
    .expect("connects");
    assert!(client.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sealed_server_is_reported_as_sealed() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac("client.sys.seal()").await;
    let err = connect_err(&bao, "secret", root(&bao)).await;
    assert_eq!(err.kind, KvErrorKind::Sealed, "{err}");
    assert!(err.to_string().contains("is sealed"), "{err}");
    assert!(err.hint.as_deref().unwrap().contains("bao operator unseal"));
    assert_clean(&err, bao.root_token());
    // The same API as HashiCorp Vault: messages name the product the address names.
    let vault = KvAddress::parse(&format!("vault+{}/secret", bao.addr())).unwrap();
    let err = KvClient::connect(&vault, root(&bao), options())
        .await
        .unwrap_err();
    assert_eq!(err.kind, KvErrorKind::Sealed, "{err}");
    assert!(
        err.to_string()
            .starts_with("the Vault server at 127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.hint
            .as_deref()
            .unwrap()
            .contains("vault operator unseal")
    );
}

#[tokio::test]
async fn a_missing_or_wrong_kind_of_mount_is_no_mount() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
client.sys.enable_secrets_engine("transit", path="tr")
"#,
    )
    .await;
    let missing = connect_err(&bao, "nomount/app", root(&bao)).await;
    assert_eq!(missing.kind, KvErrorKind::NoMount, "{missing}");
    assert!(
        missing.to_string().contains("no KV mount at 'nomount'"),
        "{missing}"
    );
    assert_clean(&missing, bao.root_token());

    let v1 = connect_err(&bao, "kv1", root(&bao)).await;
    assert_eq!(v1.kind, KvErrorKind::NoMount, "{v1}");
    assert!(
        v1.to_string()
            .contains("'kv1' is a KV version 1 mount: coldvault reads KV version 2"),
        "{v1}"
    );

    let transit = connect_err(&bao, "tr", root(&bao)).await;
    assert_eq!(transit.kind, KvErrorKind::NoMount, "{transit}");
    assert!(transit.to_string().contains("transit"), "{transit}");
}

#[tokio::test]
async fn https_needs_the_servers_ca_in_vault_cacert() {
    let Some(bao) = TestBao::start_tls().await else {
        return;
    };
    assert!(bao.kv_url("secret").starts_with("bao+https://"));
    bao.hvac(
        r#"client.secrets.kv.v2.create_or_update_secret(path="tls/one", secret={"a": "b"}, mount_point="secret")"#,
    )
    .await;
    let address = KvAddress::parse(&bao.kv_url("secret")).unwrap();
    let ca = bao.ca_cert().unwrap().to_string_lossy().into_owned();
    let env = |name: &str| (name == "VAULT_CACERT").then(|| ca.clone());
    let with_ca = KvOptions::from_env(env, Duration::from_secs(30));
    let client = KvClient::connect(&address, root(&bao), with_ca)
        .await
        .expect("connects over https");
    assert_eq!(client.list().await.unwrap(), ["tls/one"]);

    // Without the CA the certificate is refused at once, not retried until the deadline.
    let err = KvClient::connect(&address, root(&bao), options())
        .await
        .unwrap_err();
    assert_eq!(err.kind, KvErrorKind::Network, "{err}");
    assert!(err.to_string().contains("not trusted"), "{err}");
    assert!(err.hint.as_deref().unwrap().contains("VAULT_CACERT"));
}

#[test]
fn plain_http_to_a_non_loopback_host_is_refused() {
    let err = KvAddress::parse("bao+http://192.0.2.10:8200/secret").unwrap_err();
    assert!(err.to_string().contains("plain http"), "{err}");
    assert!(KvAddress::parse("bao+http://127.0.0.1:8200/secret").is_ok());
}

/// What the proxy does with a matching request.
#[derive(Clone, Copy)]
enum Fault {
    /// Answers this status and body without asking the server.
    Answer(u16, &'static str),
    /// Forwards the request (the server applies it), then answers this status instead of the
    /// server's answer: a response lost on the way back.
    LoseAnswer(u16),
    /// Never answers (until the test ends).
    Stall,
}

/// A fault for the next `times` requests whose method and path (with query) match.
struct Rule {
    method: &'static str,
    path_and_query: String,
    fault: Fault,
    times: u32,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    /// `METHOD /v1/…?query` of every request, in order.
    seen: Mutex<Vec<String>>,
}

/// An HTTP proxy in front of a [`TestBao`], on its own loopback port.
struct FaultProxy {
    port: u16,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    async fn start(bao: &TestBao) -> Self {
        let state = Arc::new(ProxyState {
            upstream: bao.addr(),
            http: reqwest::Client::new(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { port, state, task }
    }

    fn kv_url(&self, mount: &str) -> String {
        format!("bao+http://127.0.0.1:{}/{mount}", self.port)
    }

    fn add(&self, method: &'static str, path_and_query: &str, fault: Fault, times: u32) {
        self.state.rules.lock().unwrap().push(Rule {
            method,
            path_and_query: path_and_query.to_owned(),
            fault,
            times,
        });
    }

    /// How many requests `METHOD path?query` the proxy saw.
    fn count(&self, what: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == what)
            .count()
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let method = request.method().as_str().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    state
        .seen
        .lock()
        .unwrap()
        .push(format!("{method} {path_and_query}"));
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && r.path_and_query == path_and_query)
            .map(|r| {
                r.times -= 1;
                r.fault
            })
    };
    if let Some(Fault::Stall) = fault {
        std::future::pending::<()>().await;
    }
    if let Some(Fault::Answer(status, body)) = fault {
        let status = axum::http::StatusCode::from_u16(status).unwrap();
        return (status, [("retry-after", "0")], body.to_owned()).into_response();
    }
    let mut upstream = state.http.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path_and_query}", state.upstream),
    );
    for name in ["x-vault-token", "x-vault-namespace", "content-type"] {
        if let Some(value) = request.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer = upstream.body(body).send().await.unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    if let Some(Fault::LoseAnswer(lost)) = fault {
        let status = axum::http::StatusCode::from_u16(lost).unwrap();
        return (status, "upstream answer lost").into_response();
    }
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    (status, [("content-type", "application/json")], text).into_response()
}

async fn connect_via(
    proxy: &FaultProxy,
    bao: &TestBao,
    mount: &str,
    timeout: Duration,
) -> KvClient {
    let address = KvAddress::parse(&proxy.kv_url(mount)).unwrap();
    KvClient::connect(
        &address,
        root(bao),
        KvOptions {
            timeout,
            ..options()
        },
    )
    .await
    .expect("connects through the proxy")
}

#[tokio::test]
async fn transient_answers_are_retried_and_a_sealed_503_is_not() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"client.secrets.kv.v2.create_or_update_secret(path="app/db", secret={"p": "x"}, mount_point="secret")"#,
    )
    .await;
    let proxy = FaultProxy::start(&bao).await;
    let client = connect_via(&proxy, &bao, "secret", Duration::from_secs(30)).await;
    let path = "/v1/secret/metadata/app/db";
    proxy.add("GET", path, Fault::Answer(502, "bad gateway"), 1);
    proxy.add(
        "GET",
        path,
        Fault::Answer(500, r#"{"errors":["internal"]}"#),
        1,
    );
    proxy.add(
        "GET",
        path,
        Fault::Answer(429, r#"{"errors":["rate limited"]}"#),
        1,
    );
    proxy.add("GET", path, Fault::Answer(504, "gateway timeout"), 1);
    let secret = client.read_secret("app/db").await.unwrap().expect("read");
    assert_eq!(secret.current().unwrap().data, Some(data(&[("p", "x")])));
    assert_eq!(
        proxy.count(&format!("GET {path}")),
        5,
        "four faults, one success"
    );

    proxy.add(
        "GET",
        path,
        Fault::Answer(503, r#"{"errors":["Vault is sealed"]}"#),
        1,
    );
    let err = client.read_secret("app/db").await.unwrap_err();
    assert_eq!(err.kind, KvErrorKind::Sealed, "{err}");
    assert_eq!(
        proxy.count(&format!("GET {path}")),
        6,
        "a 503 is not retried"
    );

    proxy.add(
        "GET",
        path,
        Fault::Answer(503, r#"{"errors":["node is in standby"]}"#),
        1,
    );
    let err = client.read_secret("app/db").await.unwrap_err();
    assert_eq!(
        (err.kind, err.status),
        (KvErrorKind::Other, Some(503)),
        "{err}"
    );
    assert_eq!(proxy.count(&format!("GET {path}")), 7);
}

#[tokio::test]
async fn retries_end_at_the_time_limit_with_the_last_answer() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let proxy = FaultProxy::start(&bao).await;
    // Short, for the failures below to end soon; long enough for a loaded machine to answer
    // the connect's own requests.
    let client = connect_via(&proxy, &bao, "secret", Duration::from_secs(4)).await;
    let path = "/v1/secret/metadata/always";
    proxy.add(
        "GET",
        path,
        Fault::Answer(500, r#"{"errors":["storage backend down"]}"#),
        u32::MAX,
    );
    let err = client.read_secret("always").await.unwrap_err();
    assert_eq!(
        (err.kind, err.status),
        (KvErrorKind::Other, Some(500)),
        "{err}"
    );
    assert!(err.to_string().contains("storage backend down"), "{err}");
    assert!(proxy.count(&format!("GET {path}")) >= 2, "retried");

    // A server that never answers: timed out at the limit.
    let stalled = "/v1/secret/metadata/stalled";
    proxy.add("GET", stalled, Fault::Stall, u32::MAX);
    let err = client.read_secret("stalled").await.unwrap_err();
    assert_eq!(err.kind, KvErrorKind::Network, "{err}");
    assert!(
        err.to_string().contains("timed out (gave up after"),
        "{err}"
    );

    // Nothing listening: refused until the limit, then one line naming the host.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let address = KvAddress::parse(&format!("bao+http://127.0.0.1:{port}/secret")).unwrap();
    let err = KvClient::connect(
        &address,
        root(&bao),
        KvOptions {
            timeout: Duration::from_secs(1),
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, KvErrorKind::Network, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("OpenBao server at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(err.to_string().contains("gave up after"), "{err}");
    assert_clean(&err, bao.root_token());
}

#[tokio::test]
async fn a_write_applied_whose_answer_was_lost_is_not_written_twice() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    let proxy = FaultProxy::start(&bao).await;
    let client = connect_via(&proxy, &bao, "secret", Duration::from_secs(30)).await;
    let path = "/v1/secret/data/app/new";
    proxy.add("POST", path, Fault::LoseAnswer(504), 1);
    let value = data(&[("password", CANARY)]);
    assert_eq!(client.write("app/new", &value, 0).await.unwrap(), 1);
    assert_eq!(proxy.count(&format!("POST {path}")), 2, "sent again");
    let versions = bao
        .hvac(
            r#"print(client.secrets.kv.v2.read_secret_metadata(path="app/new", mount_point="secret")["data"]["current_version"])"#,
        )
        .await;
    assert_eq!(versions.trim(), "1", "no second version");

    // Lost again: version 2 was applied, the retry finds it and reports it done.
    proxy.add("POST", path, Fault::LoseAnswer(502), 1);
    let mine = data(&[("password", "mine")]);
    assert_eq!(client.write("app/new", &mine, 1).await.unwrap(), 2);

    // A first try that failed (502, not applied) while another writer made version 3: the
    // retry's mismatch is read back, finds the other writer's data, and stays a conflict.
    bao.hvac(
        r#"client.secrets.kv.v2.create_or_update_secret(path="app/new", secret={"password": "other"}, mount_point="secret")"#,
    )
    .await;
    proxy.add("POST", path, Fault::Answer(502, "bad gateway"), 1);
    let err = client
        .write("app/new", &data(&[("password", "late")]), 2)
        .await
        .unwrap_err();
    assert!(err.is_cas_mismatch(), "a stale cas is a conflict: {err}");
    assert_clean(&err, CANARY);
}

#[tokio::test]
async fn a_secret_deleted_between_list_and_read_is_left_out() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
for path in ("a", "b", "c"):
    client.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": path}, mount_point="secret")
"#,
    )
    .await;
    let proxy = FaultProxy::start(&bao).await;
    let client = connect_via(&proxy, &bao, "secret", Duration::from_secs(30)).await;
    proxy.add(
        "GET",
        "/v1/secret/metadata/b",
        Fault::Answer(404, r#"{"errors":[]}"#),
        1,
    );
    let snapshot = client.read_all(4).await.unwrap();
    let paths: Vec<&str> = snapshot.secrets.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["a", "c"]);
}

#[tokio::test]
async fn a_namespace_is_sent_with_every_request() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(
        r#"
client.sys.create_namespace(path="team")
ns = hvac.Client(url=os.environ["BAO_TEST_ADDR"], token=os.environ["BAO_TEST_TOKEN"], namespace="team")
ns.sys.enable_secrets_engine("kv", path="kvns", options={"version": "2"})
ns.secrets.kv.v2.create_or_update_secret(path="in/ns", secret={"a": "1"}, mount_point="kvns")
"#,
    )
    .await;
    let address = KvAddress::parse(&bao.kv_url("kvns")).unwrap();
    let env = |name: &str| (name == "BAO_NAMESPACE").then(|| "team".to_owned());
    let client = KvClient::connect(
        &address,
        root(&bao),
        KvOptions::from_env(env, Duration::from_secs(30)),
    )
    .await
    .expect("connects in the namespace");
    assert_eq!(client.list().await.unwrap(), ["in/ns"]);
    let secret = client.read_secret("in/ns").await.unwrap().unwrap();
    assert_eq!(secret.current().unwrap().data, Some(data(&[("a", "1")])));
    assert_eq!(
        client
            .write("in/ns", &data(&[("a", "2")]), 1)
            .await
            .unwrap(),
        2
    );
    // Outside the namespace there is no such mount.
    let err = connect_err(&bao, "kvns", root(&bao)).await;
    assert_eq!(err.kind, KvErrorKind::NoMount, "{err}");
}
