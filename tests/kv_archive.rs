//! KV mounts in the archive, end to end against real OpenBao dev servers ([`TestBao`]),
//! seeded and checked with the official Python client `hvac`: `coldvault backup` of a mount
//! (nested paths, a path with a space, upper/lower-case twins, a secret whose history has
//! live, soft-deleted and destroyed versions, one pruned by `max_versions`, custom
//! metadata), `verify`, `inspect`, standard tools listing the entries, `restore` into a fresh
//! mount of another server compared item by item, a rerun that plans nothing, an interrupted
//! restore finished, a conflict; failures (bad token, missing mount, sealed server, mixed
//! `--vault`) as one line with nothing written; a planted value never in any output.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::TestBao;

/// A value no output may show.
const CANARY: &str = "CANARY-kvarchive-5e1d-never-print";

/// The seed: every shape the format must keep. `app/db` ends with versions 1 live, 2
/// soft-deleted, 3 destroyed, 4 live (the canary); `pruned` keeps 2 of its 3 versions.
const SEED: &str = r#"
kv = client.secrets.kv.v2
def put(path, data, mount="secret"):
    kv.create_or_update_secret(path=path, secret=data, mount_point=mount)
for v in ["one", "two", "three"]:
    put("app/db", {"password": v, "user": "app"})
put("app/db", {"password": CANARY_VALUE, "user": "app"})
kv.delete_secret_versions(path="app/db", versions=[2], mount_point="secret")
kv.destroy_secret_versions(path="app/db", versions=[3], mount_point="secret")
kv.update_metadata(path="app/db", max_versions=10,
                   custom_metadata={"owner": "team-a", "env": "prod"}, mount_point="secret")
put("top", {"k": "v", "n": "1"})
put("app/my key", {"spaced": "yes"})
put("Case", {"which": "upper"})
put("case", {"which": "lower"})
put("a/b/c/deep", {"deep": "x"})
kv.update_metadata(path="pruned", max_versions=2, mount_point="secret")
for v in ["p1", "p2", "p3"]:
    put("pruned", {"v": v})
"#;

/// Every secret of a mount, with hvac: metadata, every version's state, live data.
const DUMP: &str = r#"
kv = client.secrets.kv.v2
mount = MOUNT
def walk(prefix):
    try:
        keys = kv.list_secrets(path=prefix, mount_point=mount)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []
    out = []
    for key in keys:
        if key.endswith("/"):
            out += walk(prefix + key)
        else:
            out.append(prefix + key)
    return out
result = {}
for path in sorted(walk("")):
    meta = kv.read_secret_metadata(path=path, mount_point=mount)["data"]
    versions = {}
    for number, state in meta["versions"].items():
        entry = {"deleted": state["deletion_time"] != "", "destroyed": state["destroyed"]}
        if not entry["deleted"] and not entry["destroyed"]:
            entry["data"] = kv.read_secret_version(path=path, version=int(number),
                mount_point=mount, raise_on_deleted_version=True)["data"]["data"]
        versions[number] = entry
    result[path] = {
        "current_version": meta["current_version"],
        "oldest_version": meta["oldest_version"],
        "max_versions": meta["max_versions"],
        "cas_required": meta["cas_required"],
        "custom_metadata": meta["custom_metadata"] or {},
        "versions": versions,
    }
print(json.dumps(result, sort_keys=True))
"#;

async fn seed(bao: &TestBao) {
    bao.hvac(&format!("CANARY_VALUE = {CANARY:?}\n{SEED}"))
        .await;
}

async fn dump(bao: &TestBao, mount: &str) -> Value {
    let out = bao.hvac(&format!("MOUNT = {mount:?}\n{DUMP}")).await;
    serde_json::from_str(&out).expect("dump is JSON")
}

/// The dump of a restored mount as the source's: versions below the source's oldest one
/// (pruned there) must be destroyed placeholders or pruned here too, and are then dropped.
fn as_source_sees_it(restored: &Value, source: &Value) -> Value {
    let mut out = restored.clone();
    for (path, secret) in out.as_object_mut().expect("object") {
        let oldest = source[path]["oldest_version"].as_u64().unwrap_or(0);
        let versions = secret["versions"].as_object_mut().expect("versions");
        let below: Vec<String> = versions
            .keys()
            .filter(|n| n.parse::<u64>().unwrap_or(0) < oldest)
            .cloned()
            .collect();
        for n in below {
            let version = versions.remove(&n).expect("listed");
            assert_eq!(
                version["destroyed"], true,
                "{path} v{n}: a pruned version comes back destroyed"
            );
        }
        secret["oldest_version"] = source[path]["oldest_version"].clone();
    }
    out
}

struct Run {
    dir: tempfile::TempDir,
    identity: PathBuf,
    recipient: String,
}

impl Run {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let path = dir.path().join("key.txt");
        {
            use age::secrecy::ExposeSecret;
            std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret()))
                .expect("identity written");
        }
        Self {
            dir,
            identity: path,
            recipient,
        }
    }

    fn out(&self) -> PathBuf {
        let out = self.dir.path().join("out");
        std::fs::create_dir_all(&out).expect("out");
        out
    }

    fn archives(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.out())
            .expect("out")
            .flatten()
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }
}

/// Runs `coldvault` with only `VAULT_TOKEN` (and `PATH`) in its environment.
async fn coldvault(token: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VAULT_TOKEN", token)
        .output()
        .await
        .expect("coldvault runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_code(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
}

/// JSON Lines events of one kind.
fn events(output: &Output, kind: &str) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

async fn backup(bao: &TestBao, run: &Run, extra: &[&str]) -> Output {
    let url = bao.kv_url("secret");
    let out = run.out();
    let mut args = vec![
        "backup",
        "--vault",
        &url,
        "-r",
        &run.recipient,
        "-o",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    coldvault(bao.root_token(), &args).await
}

async fn restore(bao: &TestBao, run: &Run, archive: &Path, mount: &str, extra: &[&str]) -> Output {
    let url = bao.kv_url(mount);
    let mut args = vec![
        "restore",
        archive.to_str().expect("utf-8"),
        "--vault",
        &url,
        "-i",
        run.identity.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    coldvault(bao.root_token(), &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_is_backed_up_verified_and_restored_into_a_fresh_mount_item_by_item() {
    let Some(source) = TestBao::start().await else {
        return;
    };
    let Some(target) = TestBao::start().await else {
        return;
    };
    seed(&source).await;
    let before = dump(&source, "secret").await;
    assert_eq!(before["pruned"]["oldest_version"], 2, "{before}");
    let run = Run::new();
    let mut outputs = Vec::new();

    let backed = backup(&source, &run, &["--json"]).await;
    assert_code(&backed, 0);
    let archives = run.archives();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let archive = archives[0].clone();
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("secret-") && name.ends_with(".tar.zst.age"),
        "{name}"
    );
    let summary = &events(&backed, "summary")[0];
    assert_eq!(summary["counts"]["kv_secrets"], 7, "{summary}");
    assert_eq!(summary["counts"]["kv_deleted_versions"], 1, "{summary}");
    assert_eq!(summary["counts"]["kv_destroyed_versions"], 1, "{summary}");
    assert_eq!(summary["url"], source.kv_url("secret"));
    assert_eq!(events(&backed, "item").len(), 7);
    outputs.push(backed);

    let identity = run.identity.to_str().unwrap();
    let archive_arg = archive.to_str().unwrap();
    let verified = coldvault("", &["verify", archive_arg, "-i", identity]).await;
    assert_code(&verified, 0);
    assert!(
        text(&verified).contains("7 KV secrets"),
        "{}",
        text(&verified)
    );
    outputs.push(verified);

    // inspect lists paths, versions with their states and custom_metadata keys.
    let inspected = coldvault("", &["inspect", archive_arg, "-i", identity]).await;
    assert_code(&inspected, 0);
    let shown = text(&inspected);
    for want in [
        "app/my key",
        "2 deleted",
        "3 destroyed",
        "env, owner",
        "Case",
        "case",
    ] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    assert!(
        !shown.contains("team-a"),
        "custom_metadata values stay out: {shown}"
    );
    outputs.push(inspected);
    let inspected = coldvault("", &["inspect", archive_arg, "-i", identity, "--json"]).await;
    assert_code(&inspected, 0);
    let body: Value = serde_json::from_slice(&inspected.stdout).expect("inspect JSON");
    let db = body["kv_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "app/db")
        .cloned()
        .unwrap();
    assert_eq!(
        db["versions"],
        serde_json::json!([
            {"version": 1, "state": "live"}, {"version": 2, "state": "deleted"},
            {"version": 3, "state": "destroyed"}, {"version": 4, "state": "live"}
        ])
    );
    outputs.push(inspected);

    // Standard tools list the entries: one folder per secret, live versions only.
    let listed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{identity}' '{archive_arg}' | zstd -d -q | tar -t"
        ))
        .output()
        .expect("sh runs");
    assert!(listed.status.success(), "{}", text(&listed));
    let entries = String::from_utf8_lossy(&listed.stdout);
    for want in [
        "coldvault-archive.json",
        "kv/app%2Fdb/metadata.json",
        "kv/app%2Fdb/versions/1.json",
        "kv/app%2Fdb/versions/4.json",
        "kv/app%2Fmy%20key/metadata.json",
        "kv/Case/versions/1.json",
        "kv/case/versions/1.json",
        "kv/a%2Fb%2Fc%2Fdeep/metadata.json",
        "kv/pruned/versions/3.json",
        "manifest.json",
    ] {
        assert!(entries.lines().any(|l| l == want), "{want}: {entries}");
    }
    for never in ["kv/app%2Fdb/versions/2.json", "kv/app%2Fdb/versions/3.json"] {
        assert!(
            !entries.contains(never),
            "deleted or destroyed data: {never}"
        );
    }

    // A dry run into a fresh mount of another server plans every secret and writes nothing.
    target
        .hvac("client.sys.enable_secrets_engine('kv', path='fresh', options={'version': '2'})")
        .await;
    let planned = restore(&target, &run, &archive, "fresh", &["--dry-run"]).await;
    assert_code(&planned, 0);
    assert!(text(&planned).contains("7 to create"), "{}", text(&planned));
    assert_eq!(dump(&target, "fresh").await, serde_json::json!({}));
    outputs.push(planned);

    let restored = restore(&target, &run, &archive, "fresh", &["--json"]).await;
    assert_code(&restored, 0);
    assert_eq!(events(&restored, "summary")[0]["created"], 7);
    outputs.push(restored);
    // Item by item: values, version numbers and order, states, custom_metadata.
    let after = dump(&target, "fresh").await;
    assert_eq!(as_source_sees_it(&after, &before), before);

    // A rerun plans nothing.
    let again = restore(&target, &run, &archive, "fresh", &["--json"]).await;
    assert_code(&again, 0);
    let plan = events(&again, "plan");
    assert_eq!(plan.len(), 7);
    assert!(plan.iter().all(|l| l["action"] == "skip"), "{plan:?}");
    assert_eq!(events(&again, "summary")[0]["created"], 0);
    assert_eq!(events(&again, "summary")[0]["skipped"], 7);
    let items = events(&again, "item");
    assert_eq!(items.len(), 7);
    assert!(items.iter().all(|i| i["status"] == "skipped"), "{items:?}");
    outputs.push(again);

    // A later change in the target is a conflict: skipped by default, refused with fail.
    target
        .hvac(
            "client.secrets.kv.v2.create_or_update_secret(path='top', secret={'k': 'theirs'}, \
             mount_point='fresh')",
        )
        .await;
    let skipped = restore(&target, &run, &archive, "fresh", &["--dry-run"]).await;
    assert_code(&skipped, 0);
    assert!(
        text(&skipped).contains("beyond the archive's 1"),
        "{}",
        text(&skipped)
    );
    let refused = restore(&target, &run, &archive, "fresh", &["--on-conflict", "fail"]).await;
    assert_code(&refused, 1);
    assert!(
        text(&refused).contains("nothing restored"),
        "{}",
        text(&refused)
    );
    assert_eq!(dump(&target, "fresh").await["top"]["current_version"], 2);
    // Overwrite appends the archive's data as a new version, once: a rerun skips it.
    let overwritten = restore(
        &target,
        &run,
        &archive,
        "fresh",
        &["--on-conflict", "overwrite"],
    )
    .await;
    assert_code(&overwritten, 0);
    assert!(
        text(&overwritten).contains("1 overwritten"),
        "{}",
        text(&overwritten)
    );
    let top = &dump(&target, "fresh").await["top"];
    assert_eq!(top["current_version"], 3, "{top}");
    assert_eq!(top["versions"]["2"]["data"]["k"], "theirs", "{top}");
    assert_eq!(
        top["versions"]["3"]["data"],
        before["top"]["versions"]["1"]["data"]
    );
    let rerun = restore(
        &target,
        &run,
        &archive,
        "fresh",
        &["--on-conflict", "overwrite"],
    )
    .await;
    assert_code(&rerun, 0);
    assert!(text(&rerun).contains("0 overwritten"), "{}", text(&rerun));
    outputs.extend([skipped, refused, overwritten, rerun]);

    for output in &outputs {
        assert!(
            !text(output).contains(CANARY),
            "canary shown: {}",
            text(output)
        );
        assert!(!text(output).contains(source.root_token()));
    }
    let bytes = std::fs::read(&archive).expect("archive");
    assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_is_finished_from_where_it_stopped() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    seed(&bao).await;
    let run = Run::new();
    assert_code(&backup(&bao, &run, &[]).await, 0);
    let archive = run.archives().remove(0);
    let before = dump(&bao, "secret").await;
    // What a restore stopped midway leaves: `app/db` up to version 2's placeholder (written,
    // not yet deleted), `top` complete but its metadata not written, nothing else.
    bao.hvac(
        r#"
client.sys.enable_secrets_engine('kv', path='again', options={'version': '2'})
kv = client.secrets.kv.v2
kv.create_or_update_secret(path="app/db", secret={"password": "one", "user": "app"}, mount_point="again")
kv.create_or_update_secret(path="app/db", secret={}, mount_point="again")
kv.create_or_update_secret(path="top", secret={"k": "v", "n": "1"}, mount_point="again")
"#,
    )
    .await;
    let planned = restore(&bao, &run, &archive, "again", &["--dry-run", "--json"]).await;
    assert_code(&planned, 0);
    let plan = events(&planned, "plan");
    let line = |name: &str| plan.iter().find(|l| l["name"] == name).cloned().unwrap();
    assert_eq!(line("app/db")["action"], "create");
    assert_eq!(line("app/db")["from_version"], 2);
    assert_eq!(line("app/db")["placeholder_written"], true);
    assert_eq!(line("top")["action"], "skip");
    let restored = restore(&bao, &run, &archive, "again", &[]).await;
    assert_code(&restored, 0);
    let after = dump(&bao, "again").await;
    assert_eq!(as_source_sees_it(&after, &before), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_failures_are_one_line_and_write_nothing() {
    let Some(bao) = TestBao::start().await else {
        return;
    };
    seed(&bao).await;
    let run = Run::new();
    let url = bao.kv_url("secret");
    let out = run.out();
    let out = out.to_str().unwrap();
    let one_line = |output: &Output, want: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("coldvault: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(want), "{want}: {stderr}");
        assert!(stderr.lines().any(|l| l.starts_with("hint: ")), "{stderr}");
        assert!(!stderr.contains(bao.root_token()), "{stderr}");
    };

    let bad = coldvault(
        "not-the-token",
        &["backup", "--vault", &url, "-r", &run.recipient, "-o", out],
    )
    .await;
    assert_code(&bad, 1);
    one_line(&bad, "permission denied");
    assert!(!text(&bad).contains("not-the-token"));

    let nowhere = bao.kv_url("nosuch");
    let missing = coldvault(
        bao.root_token(),
        &[
            "backup",
            "--vault",
            &nowhere,
            "-r",
            &run.recipient,
            "-o",
            out,
        ],
    )
    .await;
    assert_code(&missing, 1);
    one_line(&missing, "nosuch");

    let mixed = coldvault(
        bao.root_token(),
        &[
            "backup",
            "--vault",
            &url,
            "--vault",
            "myvault",
            "-r",
            &run.recipient,
            "-o",
            out,
        ],
    )
    .await;
    assert_code(&mixed, 2);

    // A KV archive restored into a Key Vault goes through the name mapping: see
    // `kv_copy::a_kv_archive_restores_into_a_key_vault_through_the_name_mapping`.

    bao.hvac("client.sys.seal()").await;
    let sealed = coldvault(
        bao.root_token(),
        &["backup", "--vault", &url, "-r", &run.recipient, "-o", out],
    )
    .await;
    assert_code(&sealed, 1);
    one_line(&sealed, "sealed");
    assert!(run.archives().is_empty(), "{:?}", run.archives());
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The golden format version 2 archive (`fixtures/v2/golden-kv.tar.zst.age`, written by
/// `examples/make_fixtures.rs`) reads with coldvault (verify, inspect, the library's
/// snapshot) and with standard tools, and its planted value shows nowhere but in the data.
#[test]
fn the_golden_kv_archive_reads_with_coldvault_and_standard_tools() {
    const KV_CANARY: &str = "golden-kv-canary-3b8e";
    let golden = fixtures().join("v2/golden-kv.tar.zst.age");
    let identity = fixtures().join("test-identity.txt");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
            .args(args)
            .output()
            .expect("coldvault runs")
    };
    let (g, i) = (golden.to_str().unwrap(), identity.to_str().unwrap());
    let verified = run(&["verify", g, "-i", i]);
    assert_code(&verified, 0);
    assert!(
        text(&verified).contains("4 KV secrets, 7 versions: 1 soft-deleted, 1 destroyed"),
        "{}",
        text(&verified)
    );
    let inspected = run(&["inspect", g, "-i", i, "--json"]);
    assert_code(&inspected, 0);
    for output in [&verified, &inspected] {
        assert!(!text(output).contains(KV_CANARY), "{}", text(output));
    }

    let mut identities = coldvault::archive::keys::IdentitySet::new();
    let key = std::fs::read_to_string(&identity).expect("identity");
    identities.add_x25519(
        key.lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("a key")
            .parse()
            .expect("X25519"),
    );
    let decryption = coldvault::archive::Decryption::with_identities(identities).expect("keys");
    let archive = coldvault::archive::kv::read_snapshot(
        coldvault::archive::ArchiveInput::file(&golden),
        &decryption,
    )
    .expect("reads");
    let paths: Vec<&str> = archive
        .snapshot
        .secrets
        .iter()
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(paths, ["App", "app", "app/db", "team/with space/x"]);
    let db = &archive.snapshot.secrets[2];
    let states: Vec<(u64, bool, bool, bool)> = db
        .versions
        .iter()
        .map(|v| {
            (
                v.version,
                v.deleted.is_some(),
                v.destroyed,
                v.data.is_some(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, false, false, true),
            (2, true, false, false),
            (3, false, true, false),
            (4, false, false, true)
        ]
    );
    assert_eq!(
        db.current().unwrap().data.as_ref().unwrap().0["password"],
        KV_CANARY
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let unpacked = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("age -d -i '{i}' '{g}' | zstd -d -q | tar -x"))
        .current_dir(dir.path())
        .output()
        .expect("sh runs");
    assert!(unpacked.status.success(), "{}", text(&unpacked));
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("kv/app%2Fdb/metadata.json")).expect("metadata"),
    )
    .expect("JSON");
    assert_eq!(metadata["path"], "app/db");
    assert_eq!(metadata["versions"][1]["destroyed"], false);
    assert_eq!(metadata["versions"][2]["destroyed"], true);
    assert!(
        dir.path()
            .join("kv/team%2Fwith%20space%2Fx/versions/1.json")
            .is_file()
    );
    assert!(!dir.path().join("kv/app%2Fdb/versions/2.json").exists());
}

/// The two policies of the README's KV runbook (`# backup: …` and `# restore: …` in its
/// `hcl` block), read from the README itself so the document is what is tested.
fn readme_policies() -> (String, String) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("# backup: list and read")
        .expect("the KV runbook's policies");
    let block = &readme[start..];
    let block = &block[..block.find("```").expect("the block ends")];
    let split = block.find("# restore:").expect("a restore policy");
    (block[..split].to_owned(), block[split..].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_policies_are_enough_for_backup_and_restore() {
    let Some(source) = TestBao::start().await else {
        return;
    };
    let Some(target) = TestBao::start().await else {
        return;
    };
    seed(&source).await;
    let (backup_policy, restore_policy) = readme_policies();
    // A token holding only the policy (and the default one every token has).
    let token_for = |policy: String| {
        format!(
            "client.sys.create_or_update_policy(name='coldvault', policy={policy:?})\n\
             print(client.auth.token.create(policies=['coldvault'])['auth']['client_token'])"
        )
    };
    let backup_token = source.hvac(&token_for(backup_policy)).await;
    let restore_token = target.hvac(&token_for(restore_policy)).await;
    let run = Run::new();
    let out = run.out();
    let url = source.kv_url("secret");
    let backed = coldvault(
        backup_token.trim(),
        &[
            "backup",
            "--vault",
            &url,
            "-r",
            &run.recipient,
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert_code(&backed, 0);
    let archive = run.archives().remove(0);
    let target_url = target.kv_url("secret");
    let restored = coldvault(
        restore_token.trim(),
        &[
            "restore",
            archive.to_str().unwrap(),
            "--vault",
            &target_url,
            "-i",
            run.identity.to_str().unwrap(),
        ],
    )
    .await;
    assert_code(&restored, 0);
    let before = dump(&source, "secret").await;
    let after = dump(&target, "secret").await;
    assert_eq!(as_source_sees_it(&after, &before), before);
}

/// A proxy in front of a [`TestBao`] that, on the first data write to one secret, writes a
/// version of its own first (another client's concurrent change), then forwards the write.
struct RacingProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RacingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct RaceState {
    upstream: String,
    token: String,
    /// `/v1/MOUNT/data/PATH` of the secret to race on; emptied once raced.
    race: std::sync::Mutex<String>,
    http: reqwest::Client,
}

impl RacingProxy {
    async fn start(bao: &TestBao, data_path: &str) -> Self {
        let state = std::sync::Arc::new(RaceState {
            upstream: bao.addr(),
            token: bao.root_token().to_owned(),
            race: std::sync::Mutex::new(data_path.to_owned()),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(race_forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("bound").port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy serves");
        });
        Self { port, task }
    }
}

async fn race_forward(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<RaceState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let method = request.method().clone();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let races = matches!(method.as_str(), "POST" | "PUT") && {
        let mut race = state.race.lock().expect("lock");
        let hit = !race.is_empty() && *race == path_and_query;
        if hit {
            race.clear();
        }
        hit
    };
    if races {
        let concurrent = state
            .http
            .post(format!("{}{path_and_query}", state.upstream))
            .header("x-vault-token", &state.token)
            .json(&serde_json::json!({"data": {"k": "concurrent"}}))
            .send()
            .await
            .expect("the concurrent write");
        assert!(concurrent.status().is_success(), "{}", concurrent.status());
    }
    let mut upstream = state.http.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method"),
        format!("{}{path_and_query}", state.upstream),
    );
    for name in ["x-vault-token", "x-vault-namespace", "content-type"] {
        if let Some(value) = request.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .expect("body");
    let answer = upstream.body(body).send().await.expect("upstream answers");
    let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let text = answer.text().await.expect("text");
    (status, [("content-type", "application/json")], text).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_change_during_restore_is_reported_never_lost() {
    let Some(source) = TestBao::start().await else {
        return;
    };
    let Some(target) = TestBao::start().await else {
        return;
    };
    seed(&source).await;
    let run = Run::new();
    assert_code(&backup(&source, &run, &[]).await, 0);
    let archive = run.archives().remove(0);
    let proxy = RacingProxy::start(&target, "/v1/secret/data/top").await;
    let url = format!("bao+http://127.0.0.1:{}/secret", proxy.port);
    let restored = coldvault(
        target.root_token(),
        &[
            "restore",
            archive.to_str().unwrap(),
            "--vault",
            &url,
            "-i",
            run.identity.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_code(&restored, 3);
    let summary = &events(&restored, "summary")[0];
    assert_eq!(summary["created"], 6, "{summary}");
    let not_restored = summary["not_restored"].as_array().expect("a list");
    assert_eq!(not_restored.len(), 1, "{summary}");
    assert_eq!(not_restored[0]["name"], "top");
    assert!(
        not_restored[0]["reason"]
            .as_str()
            .unwrap()
            .contains("check-and-set"),
        "{summary}"
    );
    // The other client's version is kept, nothing written over it.
    let top = &dump(&target, "secret").await["top"];
    assert_eq!(top["current_version"], 1, "{top}");
    assert_eq!(top["versions"]["1"]["data"]["k"], "concurrent", "{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_is_backed_up_with_its_ca_from_vault_cacert_or_ca_cert() {
    let Some(bao) = TestBao::start_tls().await else {
        return;
    };
    bao.hvac(
        "client.secrets.kv.v2.create_or_update_secret(path='tls/x', secret={'k': 'v'}, \
         mount_point='secret')",
    )
    .await;
    let run = Run::new();
    let url = bao.kv_url("secret");
    assert!(url.starts_with("bao+https://"), "{url}");
    let out = run.out();
    let args = [
        "backup",
        "--vault",
        &url,
        "-r",
        &run.recipient,
        "-o",
        out.to_str().unwrap(),
    ];
    // Without the dev CA the certificate is not trusted: one line, nothing written.
    let untrusted = coldvault(bao.root_token(), &args).await;
    assert_code(&untrusted, 1);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("coldvault: error:"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(run.archives().is_empty());
    let ca = bao.ca_cert().expect("a TLS server has a CA").to_owned();
    let with_cacert = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
        .args(args)
        .env_clear()
        .env("VAULT_TOKEN", bao.root_token())
        .env("VAULT_CACERT", &ca)
        .output()
        .await
        .expect("coldvault runs");
    assert_code(&with_cacert, 0);
    let mut with_flag: Vec<&str> = args.to_vec();
    let ca_text = ca.to_str().unwrap().to_owned();
    with_flag.extend(["--ca-cert", &ca_text]);
    let by_flag = coldvault(bao.root_token(), &with_flag).await;
    assert_code(&by_flag, 0);
    assert_eq!(run.archives().len(), 2);
}
