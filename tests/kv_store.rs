//! The KV store (`coldvault::kv::store::KvStore`: a mount as `VaultReader` + `VaultWriter`)
//! over the real client against a real OpenBao dev server ([`TestBao`]), seeded and checked
//! with the official Python client `hvac`: projected reads, writes with check-and-set, a
//! concurrent change refused as a conflict, soft-delete and recover.

use std::time::Duration;

use age::secrecy::{ExposeSecret, SecretString};
use coldvault::kv::KvAddress;
use coldvault::kv::client::{KvAuth, KvClient, KvOptions};
use coldvault::kv::mapping::{
    CONTENT_TYPE_KEY, Granularity, MARKER_TAG, NO_CONTENT_TYPE, NameTemplate,
};
use coldvault::kv::store::KvStore;
use coldvault::model::ItemKind;
use coldvault::vault::{NewSecretVersion, VaultReader, VaultWriter};
use futures::StreamExt;

use crate::support::TestBao;

/// A value no message may show.
const CANARY: &str = "CANARY-2c9d-kvstore-never-print";

async fn client(bao: &TestBao, mount_and_path: &str) -> KvClient {
    let address = KvAddress::parse(&bao.kv_url(mount_and_path)).expect("address parses");
    KvClient::connect(
        &address,
        KvAuth::Token(SecretString::from(bao.root_token().to_owned())),
        KvOptions {
            namespace: None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
        },
    )
    .await
    .expect("connects")
}

async fn names<V: VaultReader>(store: &V) -> Vec<String> {
    store
        .list_secrets()
        .map(|p| p.expect("listed").name)
        .collect()
        .await
}

fn version(value: &str, tags: &[(&str, &str)]) -> NewSecretVersion {
    NewSecretVersion {
        value: SecretString::from(value.to_owned()),
        content_type: None,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        attributes: Default::default(),
    }
}

#[tokio::test]
async fn a_mount_is_a_store_read_and_written_with_check_and_set() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    bao.hvac(&format!(
        r#"
kv = client.secrets.kv.v2
kv.create_or_update_secret(path="team/db", secret={{"user": "app", "pw": "one"}}, mount_point="secret")
kv.create_or_update_secret(path="team/db", secret={{"user": "app", "pw": "{CANARY}"}}, mount_point="secret")
kv.create_or_update_secret(path="team/app/api", secret={{"value": "tok"}}, mount_point="secret")
kv.update_metadata(path="team/app/api", custom_metadata={{"{CONTENT_TYPE_KEY}": "text/plain", "owner": "ops"}}, mount_point="secret")
kv.create_or_update_secret(path="team/gone", secret={{"k": "v"}}, mount_point="secret")
kv.delete_latest_version_of_secret(path="team/gone", mount_point="secret")
kv.create_or_update_secret(path="elsewhere", secret={{"k": "v"}}, mount_point="secret")
"#
    ))
    .await;

    let store = KvStore::open(
        client(&bao, "secret/team").await,
        Granularity::Secret,
        NameTemplate::default_for(Granularity::Secret),
        4,
    )
    .await
    .expect("opens");
    assert_eq!(store.vault_url().name(), "secret");
    assert_eq!(names(&store).await, ["app--api", "db"]);
    let db = store.get_secret("db", None).await.unwrap();
    assert_eq!(
        db.value.expose_secret(),
        format!(r#"{{"pw":"{CANARY}","user":"app"}}"#)
    );
    assert_eq!(
        db.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(store.list_secret_versions("db").await.unwrap().len(), 2);
    let api = store.get_secret("app--api", None).await.unwrap();
    assert_eq!(api.value.expose_secret(), "tok");
    assert_eq!(api.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        api.properties.tags.get("owner").map(String::as_str),
        Some("ops")
    );
    let deleted: Vec<String> = store
        .list_deleted(ItemKind::Secret)
        .map(|d| d.unwrap().name)
        .collect()
        .await;
    assert_eq!(deleted, ["gone"]);

    // One secret per key, read-only from the same mount.
    let snapshot = client(&bao, "secret/team").await.read_all(4).await.unwrap();
    let keys = KvStore::read_only(
        snapshot,
        Granularity::Key,
        NameTemplate::default_for(Granularity::Key),
    )
    .unwrap();
    assert_eq!(
        names(&keys).await,
        ["app--api--value", "db--pw", "db--user"]
    );
    assert_eq!(
        keys.list_secret_versions("db--user").await.unwrap().len(),
        1
    );

    // A Key Vault name becomes the KV path it spells; tags become custom_metadata.
    store
        .set_secret("db-password", &version("s3cret", &[(MARKER_TAG, "source")]))
        .await
        .unwrap();
    let written = bao
        .hvac(
            r#"
r = client.secrets.kv.v2.read_secret_version(path="team/db-password", mount_point="secret", raise_on_deleted_version=True)
m = client.secrets.kv.v2.read_secret_metadata(path="team/db-password", mount_point="secret")
print(json.dumps(r["data"]["data"], sort_keys=True), json.dumps(m["data"]["custom_metadata"], sort_keys=True))
"#,
        )
        .await;
    assert_eq!(
        written.trim(),
        format!(
            r#"{{"value": "s3cret"}} {{"{CONTENT_TYPE_KEY}": "{NO_CONTENT_TYPE}", "{MARKER_TAG}": "source"}}"#
        )
    );
    assert_eq!(
        store
            .get_secret("db-password", None)
            .await
            .unwrap()
            .value
            .expose_secret(),
        "s3cret"
    );

    // Someone else writes team/db after the store read it: a conflict, theirs stands.
    bao.hvac(
        r#"
client.secrets.kv.v2.create_or_update_secret(path="team/db", secret={"by": "someone"}, mount_point="secret")
"#,
    )
    .await;
    let err = store
        .set_secret("db", &version("mine", &[]))
        .await
        .unwrap_err();
    assert!(err.conflict_reason().is_some(), "{err:?}");
    assert!(err.to_string().contains("concurrent change"), "{err}");
    assert!(!format!("{err} {err:?}").contains(CANARY));
    let theirs = bao
        .hvac(
            r#"
r = client.secrets.kv.v2.read_secret_version(path="team/db", mount_point="secret", raise_on_deleted_version=True)
print(r["data"]["metadata"]["version"], json.dumps(r["data"]["data"]))
"#,
        )
        .await;
    assert_eq!(theirs.trim(), r#"3 {"by": "someone"}"#);

    // Soft-delete, then recover: the version comes back with its data.
    store
        .soft_delete(ItemKind::Secret, "app--api")
        .await
        .unwrap();
    assert_eq!(names(&store).await, ["db", "db-password"]);
    let state = bao
        .hvac(
            r#"
m = client.secrets.kv.v2.read_secret_metadata(path="team/app/api", mount_point="secret")
print("deleted" if m["data"]["versions"]["1"]["deletion_time"] else "live")
"#,
        )
        .await;
    assert_eq!(state.trim(), "deleted");
    store
        .recover_deleted(ItemKind::Secret, "app--api")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_secret("app--api", None)
            .await
            .unwrap()
            .value
            .expose_secret(),
        "tok"
    );
    let state = bao
        .hvac(
            r#"
r = client.secrets.kv.v2.read_secret_version(path="team/app/api", mount_point="secret", raise_on_deleted_version=True)
print(r["data"]["data"]["value"])
"#,
        )
        .await;
    assert_eq!(state.trim(), "tok");
}
