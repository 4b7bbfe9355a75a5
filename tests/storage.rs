//! Archives off the machine, end to end: the real binary backs up the in-process local Key
//! Vault to Azurite (Microsoft's Blob Storage emulator, npm `azurite`) and to moto's S3
//! server (PyPI `moto[server]`), both started here on free loopback ports, then lists,
//! verifies, restores and forgets from there. Faults come from a small TCP proxy in front of
//! the server that cuts or stalls connections. Signatures are checked against OpenSSH's own
//! `ssh-keygen -Y`.
//!
//! The servers are found as `COLDVAULT_AZURITE_BLOB` / `COLDVAULT_MOTO_SERVER`, on `PATH`, or
//! where `.ci/test` installs them (under the target folder). Without them a test says so and
//! passes, except under `CI=true`, where a missing server fails it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::backup::Workspace;
use crate::support::TestEmulator;
use coldvault::dest::ObjectStore;
use coldvault::emulator::{EmulatorConfig, VaultSpec};

/// A value planted in the vault that no output may show.
const CANARY: &str = "CANARY-5d0c2a91-storage-never-print";

/// Azurite's public development account key (Microsoft's docs, Azurite's README).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The server binary, or `None` (a failure under `CI=true`).
fn find_server(var: &str, name: &str, installed: &[&str]) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            let candidates = installed.iter().map(|rel| target_dir().join(rel));
            let on_path = std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            candidates.chain(on_path).find(|p| p.exists())
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed: .ci/test installs it"
        );
        eprintln!("skipped: {name} not found (set {var}; .ci/test installs it)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server process killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not start on port {port}");
}

async fn start_azurite() -> Option<Server> {
    let bin = find_server(
        "COLDVAULT_AZURITE_BLOB",
        "azurite-blob",
        &["tools/azurite/node_modules/.bin/azurite-blob"],
    )?;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = std::process::Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--location", &dir.path().to_string_lossy()])
        // No telemetry (nothing may leave the machine), any API version, quiet.
        .args([
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("azurite starts");
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    wait_for_port(port, "azurite").await;
    Some(server)
}

async fn start_moto() -> Option<Server> {
    let bin = find_server(
        "COLDVAULT_MOTO_SERVER",
        "moto_server",
        &["moto-venv/bin/moto_server"],
    )?;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto starts");
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    wait_for_port(port, "moto").await;
    Some(server)
}

/// How the proxy misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// A connection is cut once `after` bytes from the client went through it, until
    /// `cuts` connections were cut; then everything is forwarded faithfully.
    Cut { after: u64, cuts: usize },
    /// Once `after` bytes went up in all, forward nothing more (and keep connections open).
    Stall { after: u64 },
    /// A connection whose request holds this text is held open, forwarding nothing more;
    /// other connections go through (counted in `cuts`).
    StallOn(&'static str),
}

/// A TCP proxy in front of a server, on its own port.
struct Proxy {
    port: u16,
    sent: Arc<AtomicU64>,
    cuts: Arc<AtomicUsize>,
}

async fn proxy(upstream: u16, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let port = listener.local_addr().expect("addr").port();
    let sent = Arc::new(AtomicU64::new(0));
    let cuts = Arc::new(AtomicUsize::new(0));
    let (sent2, cuts2) = (sent.clone(), cuts.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (sent, cuts) = (sent2.clone(), cuts2.clone());
            tokio::spawn(forward(client, server, fault, sent, cuts));
        }
    });
    Proxy { port, sent, cuts }
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    sent: Arc<AtomicU64>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Answers are cut the same way (a download broken mid-body resumes with a range).
    let down_cuts = cuts.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut mine = 0u64;
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Fault::Cut { after, cuts: most } = fault
                && mine + n as u64 > after
                && take_cut(&down_cuts, most)
            {
                return;
            }
            mine += n as u64;
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let mut mine = 0u64;
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match fault {
            Fault::Cut { after, cuts: most }
                if mine + n as u64 > after && take_cut(&cuts, most) =>
            {
                down.abort();
                return;
            }
            Fault::StallOn(text) if String::from_utf8_lossy(&buf[..n]).contains(text) => {
                cuts.fetch_add(1, Ordering::SeqCst);
                let _ = client_read.read_to_end(&mut Vec::new()).await;
                down.abort();
                return;
            }
            Fault::Stall { after } if sent.load(Ordering::SeqCst) + n as u64 > after => {
                // Hold the connection open, forwarding nothing, until the client goes away.
                let _ = client_read.read_to_end(&mut Vec::new()).await;
                down.abort();
                return;
            }
            _ => {}
        }
        mine += n as u64;
        sent.fetch_add(n as u64, Ordering::SeqCst);
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    let _ = down.await;
}

/// Takes one of the `most` cuts the proxy may make; false once all are used.
fn take_cut(cuts: &AtomicUsize, most: usize) -> bool {
    cuts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
        (c < most).then_some(c + 1)
    })
    .is_ok()
}

/// The environment naming the storage servers (and the vault's service principal).
struct StorageEnv {
    vars: Vec<(String, String)>,
}

impl StorageEnv {
    fn new(emulator: &TestEmulator, blob_port: Option<u16>, s3_port: Option<u16>) -> Self {
        let ready = emulator.ready();
        let mut vars = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("AZURE_TENANT_ID".to_owned(), ready.tenant_id.clone()),
            ("AZURE_CLIENT_ID".to_owned(), ready.client_id.clone()),
            (
                "AZURE_CLIENT_SECRET".to_owned(),
                ready.client_secret.clone(),
            ),
            (
                "AZURE_AUTHORITY_HOST".to_owned(),
                ready.authority_host.clone(),
            ),
            ("COLDVAULT_CA_CERT".to_owned(), ready.ca_cert.clone()),
        ];
        if let Some(port) = blob_port {
            vars.push((
                "AZURE_STORAGE_CONNECTION_STRING".to_owned(),
                format!(
                    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};\
                     BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                ),
            ));
        }
        if let Some(port) = s3_port {
            for (k, v) in [
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
                ("AWS_REGION", "us-east-1"),
            ] {
                vars.push((k.to_owned(), v.to_owned()));
            }
            vars.push((
                "AWS_ENDPOINT_URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ));
        }
        Self { vars }
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.to_owned(), value.to_owned()));
        self
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coldvault"));
        command
            .args(args)
            .env_clear()
            .envs(self.vars.iter().cloned());
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("coldvault runs")
    }

    /// A store of the library over the same servers and credentials.
    fn store(&self, url: &str) -> Arc<dyn ObjectStore> {
        let options = coldvault::dest::RemoteOptions {
            vars: Some(self.vars.iter().cloned().collect()),
            ..Default::default()
        };
        coldvault::dest::open_remote(url, &options)
            .expect("store opens")
            .store
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}): {}",
        output.status.code(),
        text(output)
    );
}

/// An emulator whose vault `alpha` holds `count` secrets with incompressible values (so the
/// archive spans several upload parts) and the canary; `beta` is empty.
async fn seeded(ws: &Workspace, count: usize) -> TestEmulator {
    use sha2::Digest;
    let mut secrets: Vec<Value> = (0..count)
        .map(|i| {
            // 1,024 hex digits of distinct hashes: zstd cannot shrink them much.
            let value: String = (0..8)
                .map(|k| hex::encode(sha2::Sha512::digest(format!("value-{i}-{k}"))))
                .collect();
            json!({"name": format!("app-secret-{i:04}"), "versions": [{"value": value}]})
        })
        .collect();
    secrets.push(json!({"name": "canary", "versions": [{"value": CANARY}]}));
    let seed = ws.path("seed.json");
    std::fs::write(
        &seed,
        serde_json::to_vec(&json!({"secrets": secrets})).expect("json"),
    )
    .expect("seed written");
    TestEmulator::start_with(EmulatorConfig {
        vaults: vec![VaultSpec::new("alpha"), VaultSpec::new("beta")],
        seed: Some(seed),
        ..EmulatorConfig::default()
    })
    .await
}

/// Every output must be free of the canary.
fn assert_no_canary(outputs: &[&Output]) {
    for output in outputs {
        assert!(
            !text(output).contains(CANARY),
            "canary leaked: {}",
            text(output)
        );
    }
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Backs up `alpha` to `dest`, lists it, verifies and restores (plain) into `beta` from the
/// URL the listing names, and checks `beta` got the canary secret back.
async fn round_trip(emulator: &TestEmulator, env: &StorageEnv, ws: &Workspace, dest: &str) {
    let alpha = emulator.vault_url("alpha");
    let beta = emulator.vault_url("beta");
    let identity = ws.identity_file.to_string_lossy().into_owned();
    let backup = env
        .run(&[
            "backup",
            "--vault",
            &alpha,
            "-r",
            &ws.recipient,
            "-o",
            dest,
            "--json",
        ])
        .await;
    assert_ok(&backup, "backup");
    let summary = json_lines(&backup)
        .into_iter()
        .find(|v| v["type"] == "summary")
        .expect("summary line");
    let path = summary["path"].as_str().expect("path").to_owned();
    assert!(
        path.starts_with(dest.trim_end_matches('/')),
        "{path} under {dest}"
    );

    let list = env.run(&["list", dest, "--json"]).await;
    assert_ok(&list, "list");
    let listed = &json_lines(&list)[0];
    let archives = listed["archives"].as_array().expect("archives");
    assert_eq!(archives.len(), 1, "{listed}");
    assert_eq!(archives[0]["vault"], "alpha");
    assert_eq!(
        archives[0]["counts"]["secrets"],
        summary["counts"]["secrets"]
    );
    assert_eq!(archives[0]["bytes"], summary["bytes"]);
    let url = format!(
        "{}/{}",
        dest.trim_end_matches('/'),
        archives[0]["name"].as_str().expect("name")
    );

    let verify = env.run(&["verify", &url, "-i", &identity, "--json"]).await;
    assert_ok(&verify, "verify from the store");
    let inspect = env.run(&["inspect", &url, "-i", &identity]).await;
    assert_ok(&inspect, "inspect from the store");
    let restore = env
        .run(&[
            "restore", &url, "--vault", &beta, "-i", &identity, "--mode", "plain",
        ])
        .await;
    assert_ok(&restore, "restore from the store");
    let restored = emulator
        .secret_client("beta")
        .get_secret("canary", None)
        .await
        .expect("restored secret")
        .into_model()
        .expect("secret body");
    assert_eq!(restored.value.as_deref(), Some(CANARY));
    let diff = env
        .run(&["diff", &url, "--vault", &alpha, "-i", &identity])
        .await;
    assert_ok(&diff, "diff from the store (the source vault is unchanged)");
    let extracted = ws.path("extracted.json");
    let extract = env
        .run(&[
            "extract",
            &url,
            "-i",
            &identity,
            "--format",
            "json",
            "-o",
            &extracted.to_string_lossy(),
        ])
        .await;
    assert_ok(&extract, "extract from the store");
    let plain = std::fs::read_to_string(&extracted).expect("extracted file");
    assert!(
        plain.contains(CANARY),
        "the extracted file holds the values"
    );
    std::fs::remove_file(&extracted).expect("extracted file removed");
    assert_no_canary(&[&backup, &list, &verify, &inspect, &restore, &diff, &extract]);
    for output in [&backup, &list, &verify, &inspect, &restore, &diff, &extract] {
        for secret in [DEV_KEY, "testing-secret"] {
            assert!(
                !text(output).contains(secret),
                "a storage key leaked: {}",
                text(output)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_azurite_lists_verifies_and_restores_in_several_blocks() {
    let Some(azurite) = start_azurite().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 300).await;
    // 64 KiB blocks: the archive (~300 KiB of incompressible values) takes several.
    let env =
        StorageEnv::new(&emulator, Some(azurite.port), None).with("COLDVAULT_PART_SIZE", "65536");
    env.store("az://devstoreaccount1/cold")
        .create(false)
        .await
        .expect("container");
    round_trip(&emulator, &env, &ws, "az://devstoreaccount1/cold/nightly").await;
    // The https form with an explicit (path-style) endpoint reads the same place.
    let list = env
        .run(&[
            "list",
            &format!(
                "http://127.0.0.1:{}/devstoreaccount1/cold/nightly",
                azurite.port
            ),
        ])
        .await;
    assert_ok(&list, "list by URL");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("alpha"),
        "{}",
        text(&list)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_moto_lists_verifies_and_restores() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 50).await;
    let env = StorageEnv::new(&emulator, None, Some(moto.port));
    env.store("s3://cold-copies")
        .create(false)
        .await
        .expect("bucket");
    round_trip(&emulator, &env, &ws, "s3://cold-copies/vaults/prod").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_during_upload_are_retried_and_the_archive_verifies() {
    let Some(azurite) = start_azurite().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 300).await;
    // Four connections are cut after 40 KiB each: 64 KiB blocks die mid-body and are sent
    // again on a new connection.
    let cutter = proxy(
        azurite.port,
        Fault::Cut {
            after: 40 << 10,
            cuts: 4,
        },
    )
    .await;
    let env =
        StorageEnv::new(&emulator, Some(cutter.port), None).with("COLDVAULT_PART_SIZE", "65536");
    let direct = StorageEnv::new(&emulator, Some(azurite.port), None);
    direct
        .store("az://devstoreaccount1/faults")
        .create(false)
        .await
        .expect("container");
    let alpha = emulator.vault_url("alpha");
    let dest = "az://devstoreaccount1/faults";
    let backup = env
        .run(&["backup", "--vault", &alpha, "-r", &ws.recipient, "-o", dest])
        .await;
    assert_ok(&backup, "backup through a cutting proxy");
    assert_eq!(
        cutter.cuts.load(Ordering::SeqCst),
        4,
        "the proxy cut fewer connections than planned"
    );
    let objects = direct.store(dest).list().await.expect("list");
    let archive = objects
        .iter()
        .find(|o| o.name.ends_with(".tar.zst.age"))
        .expect("archive object");
    let url = format!("{dest}/{}", archive.name);
    let identity = ws.identity_file.to_string_lossy().into_owned();
    // Read back through a fresh cutting proxy: downloads broken mid-body resume where they
    // broke (each of the verifier's two passes reads the ~300 KiB archive).
    let reader_cutter = proxy(
        azurite.port,
        Fault::Cut {
            after: 100 << 10,
            cuts: 3,
        },
    )
    .await;
    let read_env = StorageEnv::new(&emulator, Some(reader_cutter.port), None);
    let verify = read_env.run(&["verify", &url, "-i", &identity]).await;
    assert_ok(&verify, "verify through a cutting proxy");
    assert_eq!(
        reader_cutter.cuts.load(Ordering::SeqCst),
        3,
        "no download was cut"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_killed_mid_way_leaves_no_object() {
    let Some(azurite) = start_azurite().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 300).await;
    // The proxy lets 150 KiB through, then holds every connection: the run hangs mid-upload.
    let staller = proxy(azurite.port, Fault::Stall { after: 150 << 10 }).await;
    let env =
        StorageEnv::new(&emulator, Some(staller.port), None).with("COLDVAULT_PART_SIZE", "65536");
    let direct = StorageEnv::new(&emulator, Some(azurite.port), None);
    let dest = "az://devstoreaccount1/killed";
    let store = direct.store(dest);
    store.create(false).await.expect("container");
    let alpha = emulator.vault_url("alpha");
    let mut child = env
        .command(&["backup", "--vault", &alpha, "-r", &ws.recipient, "-o", dest])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("backup starts");
    // Wait until the upload has sent blocks (and is stuck), then kill it outright.
    for _ in 0..600 {
        if staller.sent.load(Ordering::SeqCst) >= 100 << 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        staller.sent.load(Ordering::SeqCst) >= 100 << 10,
        "no upload started"
    );
    child.start_kill().expect("kill");
    let status = child.wait().await.expect("wait");
    assert!(!status.success());
    assert!(
        store.list().await.expect("list").is_empty(),
        "a killed upload left an object"
    );
    let list = direct.run(&["list", dest, "--json"]).await;
    assert_ok(&list, "list");
    assert_eq!(json_lines(&list)[0]["archives"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_object_is_never_overwritten() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 5).await;
    let env = StorageEnv::new(&emulator, None, Some(moto.port));
    let store = env.store("s3://keep-me");
    store.create(false).await.expect("bucket");
    let name = "alpha-20260101T000000Z.tar.zst.age";
    store
        .put_new(name, b"earlier archive".to_vec())
        .await
        .expect("planted");
    assert!(matches!(
        store.put_new(name, b"again".to_vec()).await,
        Err(coldvault::dest::DestError::Exists(_))
    ));
    let alpha = emulator.vault_url("alpha");
    let url = format!("s3://keep-me/{name}");
    let backup = env
        .run(&["backup", "--vault", &alpha, "-r", &ws.recipient, "-o", &url])
        .await;
    assert_eq!(backup.status.code(), Some(1), "{}", text(&backup));
    assert!(
        text(&backup).contains("already exists"),
        "{}",
        text(&backup)
    );
    assert_eq!(store.head(name).await.expect("head"), Some(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_days_sets_object_lock_on_moto_and_is_refused_where_unsupported() {
    let (Some(moto), Some(azurite)) = (start_moto().await, start_azurite().await) else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 5).await;
    let env = StorageEnv::new(&emulator, Some(azurite.port), Some(moto.port));
    let alpha = emulator.vault_url("alpha");
    let backup = |dest: &'static str| {
        let env = &env;
        let alpha = alpha.clone();
        let recipient = ws.recipient.clone();
        async move {
            env.run(&[
                "backup",
                "--vault",
                &alpha,
                "-r",
                &recipient,
                "-o",
                dest,
                "--lock-days",
                "2",
            ])
            .await
        }
    };
    // Azurite reports no version-level immutability: refused before any work.
    env.store("az://devstoreaccount1/unlockable")
        .create(false)
        .await
        .expect("container");
    let refused = backup("az://devstoreaccount1/unlockable").await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("version-level immutability"),
        "{}",
        text(&refused)
    );
    // A bucket without Object Lock: refused too.
    env.store("s3://plain-bucket")
        .create(false)
        .await
        .expect("bucket");
    let refused = backup("s3://plain-bucket").await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("Object Lock"), "{}", text(&refused));
    // With Object Lock: the archive carries a retain-until date, and forget leaves it.
    let store = env.store("s3://locked-bucket");
    store.create(true).await.expect("bucket");
    let locked = backup("s3://locked-bucket").await;
    assert_ok(&locked, "backup with --lock-days");
    let objects = store.list().await.expect("list");
    let archive = objects
        .iter()
        .find(|o| o.name.ends_with(".tar.zst.age"))
        .expect("archive");
    let until = store.locked_until(&archive.name).await.expect("retention");
    assert!(until.is_some(), "no retention on {}", archive.name);
    // A second locked archive, and an unlocked one of an older time, planted: forget
    // --keep-last 1 keeps the newest, removes the unlocked one and reports the locked one
    // it would have removed, leaving it in place.
    let again = backup("s3://locked-bucket").await;
    assert_ok(&again, "second backup with --lock-days");
    let older = "alpha-20200101T000000Z.tar.zst.age";
    store
        .put_new(older, b"old".to_vec())
        .await
        .expect("planted");
    let forget = env
        .run(&["forget", "s3://locked-bucket", "--keep-last", "1", "--json"])
        .await;
    assert_ok(&forget, "forget");
    let fates = json_lines(&forget)[0]["archives"].clone();
    let actions: Vec<(String, String)> = fates
        .as_array()
        .expect("fates")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(actions.len(), 3, "{fates}");
    assert_eq!(actions[0].1, "keep", "{fates}");
    assert_eq!(actions[1].1, "locked", "{fates}");
    assert_eq!(
        actions[2],
        (older.to_owned(), "remove".to_owned()),
        "{fates}"
    );
    assert_eq!(store.head(older).await.expect("head"), None);
    for (name, _) in &actions[..2] {
        assert!(
            store.head(name).await.expect("head").is_some(),
            "{name} removed"
        );
    }
    assert!(store.head(&archive.name).await.expect("head").is_some());
}

fn ssh_keygen(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen runs")
}

/// The archives of a folder, oldest name first.
fn archives_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_archives_verify_with_ssh_keygen_and_unsigned_or_swapped_ones_are_refused() {
    if find_server("COLDVAULT_SSH_KEYGEN", "ssh-keygen", &[]).is_none() {
        return;
    }
    let ws = Workspace::new();
    let emulator = seeded(&ws, 5).await;
    let env = StorageEnv::new(&emulator, None, None);
    let key = ws.path("signing");
    let key_text = key.to_string_lossy().into_owned();
    assert!(
        ssh_keygen(&[
            "-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", &key_text
        ])
        .status
        .success()
    );
    let public = std::fs::read_to_string(ws.path("signing.pub")).expect("public key");
    let public_file = ws.path("signing.pub").to_string_lossy().into_owned();
    let out = ws.path("out");
    std::fs::create_dir_all(&out).expect("out");
    let out_text = out.to_string_lossy().into_owned();
    let alpha = emulator.vault_url("alpha");
    let identity = ws.identity_file.to_string_lossy().into_owned();

    let signed = env
        .run(&[
            "backup",
            "--vault",
            &alpha,
            "-r",
            &ws.recipient,
            "-o",
            &out_text,
            "--sign",
            &key_text,
        ])
        .await;
    assert_ok(&signed, "signed backup");
    let unsigned = env
        .run(&[
            "backup",
            "--vault",
            &alpha,
            "-r",
            &ws.recipient,
            "-o",
            &out_text,
        ])
        .await;
    assert_ok(&unsigned, "unsigned backup");
    let archives = archives_in(&out);
    assert_eq!(archives.len(), 2, "{archives:?}");
    let sig_of = |p: &Path| PathBuf::from(format!("{}.sig", p.display()));
    let (signed_archive, unsigned_archive) = if sig_of(&archives[0]).exists() {
        (archives[0].clone(), archives[1].clone())
    } else {
        (archives[1].clone(), archives[0].clone())
    };
    assert!(sig_of(&signed_archive).exists());
    assert!(!sig_of(&unsigned_archive).exists());

    // OpenSSH alone checks coldvault's signature.
    let allowed = ws.path("allowed_signers");
    std::fs::write(&allowed, format!("ops {public}")).expect("allowed signers");
    let check = std::process::Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-f",
            &allowed.to_string_lossy(),
            "-I",
            "ops",
            "-n",
            "coldvault",
        ])
        .args(["-s", &sig_of(&signed_archive).to_string_lossy()])
        .stdin(std::fs::File::open(&signed_archive).expect("archive"))
        .output()
        .expect("ssh-keygen runs");
    assert!(
        check.status.success(),
        "ssh-keygen -Y verify: {}",
        text(&check)
    );

    let verify = |archive: &Path, signer: &str| {
        let archive = archive.to_string_lossy().into_owned();
        let signer = signer.to_owned();
        let identity = identity.clone();
        let env = &env;
        async move {
            env.run(&[
                "verify",
                &archive,
                "-i",
                &identity,
                "--trusted-signer",
                &signer,
            ])
            .await
        }
    };
    assert_ok(
        &verify(&signed_archive, &public_file).await,
        "verify, signer file",
    );
    assert_ok(
        &verify(&signed_archive, public.trim()).await,
        "verify, signer key",
    );

    // Unsigned: refused with exit 4 when a signer is trusted, accepted when none is.
    let refused = verify(&unsigned_archive, &public_file).await;
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(text(&refused).contains("not signed"), "{}", text(&refused));
    let plain = env
        .run(&[
            "verify",
            &unsigned_archive.to_string_lossy(),
            "-i",
            &identity,
        ])
        .await;
    assert_ok(&plain, "verify without a trusted signer");

    // A signature moved onto another archive (a swap, or a re-encrypted copy): refused.
    std::fs::copy(sig_of(&signed_archive), sig_of(&unsigned_archive)).expect("sig copied");
    let swapped = verify(&unsigned_archive, &public_file).await;
    assert_eq!(swapped.status.code(), Some(4), "{}", text(&swapped));
    assert!(
        text(&swapped).contains("does not match"),
        "{}",
        text(&swapped)
    );
    std::fs::remove_file(sig_of(&unsigned_archive)).expect("sig removed");

    // Signed by a key nobody trusts: refused.
    let other = ws.path("other");
    assert!(
        ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &other.to_string_lossy()
        ])
        .status
        .success()
    );
    let stranger = verify(&signed_archive, &ws.path("other.pub").to_string_lossy()).await;
    assert_eq!(stranger.status.code(), Some(4), "{}", text(&stranger));
    assert!(
        text(&stranger).contains("not a trusted signer"),
        "{}",
        text(&stranger)
    );

    // The other way round: a signature ssh-keygen makes is accepted by coldvault.
    let by_openssh = ssh_keygen(&[
        "-Y",
        "sign",
        "-f",
        &key_text,
        "-n",
        "coldvault",
        &unsigned_archive.to_string_lossy(),
    ]);
    assert!(
        by_openssh.status.success(),
        "ssh-keygen -Y sign: {}",
        text(&by_openssh)
    );
    assert_ok(
        &verify(&unsigned_archive, &public_file).await,
        "verify an ssh-keygen signature",
    );

    // restore and diff refuse an unsigned archive before touching the vault.
    let third = env
        .run(&[
            "backup",
            "--vault",
            &alpha,
            "-r",
            &ws.recipient,
            "-o",
            &out_text,
        ])
        .await;
    assert_ok(&third, "third backup");
    let unsigned_again = archives_in(&out)
        .into_iter()
        .find(|p| !sig_of(p).exists())
        .expect("an unsigned archive");
    let beta = emulator.vault_url("beta");
    for verb in ["restore", "diff"] {
        let refused = env
            .run(&[
                verb,
                &unsigned_again.to_string_lossy(),
                "--vault",
                &beta,
                "-i",
                &identity,
                "--trusted-signer",
                &public_file,
            ])
            .await;
        assert_eq!(refused.status.code(), Some(4), "{verb}: {}", text(&refused));
    }
    let listed = emulator
        .secret_client("beta")
        .list_secret_properties(None)
        .expect("pager");
    use futures::TryStreamExt;
    let names: Vec<_> = listed.try_collect().await.expect("listed");
    assert!(names.is_empty(), "restore wrote to beta");
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_on_a_folder_keeps_restics_daily_choice_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = [
        "kv-20260101T010000Z.tar.zst.age",
        "kv-20260102T010000Z.tar.zst.age",
        "kv-20260103T010000Z.tar.zst.age",
        "kv-20260104T010000Z.tar.zst.age",
        "kv-20260105T010000Z.tar.zst.age",
        "kv-20260105T020000Z.tar.zst.age",
        "other-20250101T000000Z.tar.zst.age",
    ];
    for name in names {
        std::fs::write(dir.path().join(name), b"archive").expect("file");
    }
    std::fs::write(
        dir.path().join("kv-20260102T010000Z.tar.zst.age.json"),
        b"{}",
    )
    .expect("sidecar");
    std::fs::write(dir.path().join("notes.txt"), b"not an archive").expect("other file");
    let folder = dir.path().to_string_lossy().into_owned();
    let run = |args: Vec<&str>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coldvault"))
            .args(args)
            .output()
            .expect("coldvault runs")
    };
    let none = run(vec!["forget", &folder]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    let dry = run(vec![
        "forget",
        &folder,
        "--keep-daily",
        "3",
        "--vault",
        "kv",
        "--dry-run",
    ]);
    assert_ok(&dry, "dry run");
    let shown = String::from_utf8_lossy(&dry.stdout);
    assert!(shown.contains("kv: keep 3, would remove 3"), "{shown}");
    assert!(shown.contains("daily snapshot"), "{shown}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 9);
    let done = run(vec![
        "forget",
        &folder,
        "--keep-daily",
        "3",
        "--vault",
        "kv",
        "--json",
    ]);
    assert_ok(&done, "forget");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "kv-20260103T010000Z.tar.zst.age",
            "kv-20260104T010000Z.tar.zst.age",
            "kv-20260105T020000Z.tar.zst.age",
            "notes.txt",
            "other-20250101T000000Z.tar.zst.age",
        ]
    );
    let listed = run(vec!["list", &folder, "--json"]);
    assert_ok(&listed, "list");
    let doc = &json_lines(&listed)[0];
    let vaults: Vec<&str> = doc["archives"]
        .as_array()
        .expect("archives")
        .iter()
        .filter_map(|a| a["vault"].as_str())
        .collect();
    assert_eq!(vaults, ["kv", "kv", "kv", "other"]);
    assert_eq!(
        doc["archives"][0]["name"],
        "kv-20260105T020000Z.tar.zst.age"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_upload_to_s3_is_aborted_and_leaves_no_object() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 300).await;
    // The second part's upload never gets through: the run hangs there until interrupted.
    let staller = proxy(moto.port, Fault::StallOn("partNumber=2")).await;
    let env =
        StorageEnv::new(&emulator, None, Some(staller.port)).with("COLDVAULT_PART_SIZE", "65536");
    let direct = StorageEnv::new(&emulator, None, Some(moto.port));
    let store = direct.store("s3://interrupted");
    store.create(false).await.expect("bucket");
    let alpha = emulator.vault_url("alpha");
    let child = env
        .command(&[
            "backup",
            "--vault",
            &alpha,
            "-r",
            &ws.recipient,
            "-o",
            "s3://interrupted",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("backup starts");
    for _ in 0..600 {
        if staller.cuts.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        staller.cuts.load(Ordering::SeqCst) > 0,
        "the upload never reached part 2"
    );
    assert_eq!(
        store.unfinished_uploads().await.expect("uploads").len(),
        1,
        "the upload is under way"
    );
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs")
            .success()
    );
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run stops on SIGINT")
        .expect("output");
    assert_eq!(output.status.code(), Some(130), "{}", text(&output));
    assert!(
        text(&output).contains("no archive was written"),
        "{}",
        text(&output)
    );
    assert!(
        store.list().await.expect("list").is_empty(),
        "an object appeared"
    );
    assert!(
        store
            .unfinished_uploads()
            .await
            .expect("uploads")
            .is_empty(),
        "the multipart upload was not aborted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_signs_in_with_a_web_identity_token_through_sts() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let ws = Workspace::new();
    let emulator = seeded(&ws, 3).await;
    let keys = StorageEnv::new(&emulator, None, Some(moto.port));
    let store = keys.store("s3://federated");
    store.create(false).await.expect("bucket");
    store
        .put_new("alpha-20260101T000000Z.tar.zst.age", b"archive".to_vec())
        .await
        .expect("planted");
    let token = ws.path("web-identity-token");
    std::fs::write(&token, "eyJ.test-only-oidc-token.sig").expect("token");
    // No keys at all: only the token file and the role, as on EKS or in GitHub Actions.
    let federated = StorageEnv {
        vars: keys
            .vars
            .iter()
            .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET"))
            .cloned()
            .collect(),
    }
    .with("AWS_WEB_IDENTITY_TOKEN_FILE", &token.to_string_lossy())
    .with(
        "AWS_ROLE_ARN",
        "arn:aws:iam::123456789012:role/vault-backups",
    );
    let list = federated.run(&["list", "s3://federated", "--json"]).await;
    assert_ok(&list, "list with a web identity");
    assert_eq!(json_lines(&list)[0]["archives"][0]["vault"], "alpha");
    assert!(
        !text(&list).contains("test-only-oidc-token"),
        "{}",
        text(&list)
    );
}
