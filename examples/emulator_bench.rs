//! Benchmark of the local Key Vault: startup time, and secrets GET per second over one
//! connection and over many. Prints figures; asserts nothing about speed.
//!
//! Run: `cargo run --release --example emulator_bench [SECONDS] [CONNECTIONS]`
//! (defaults 3 s per measurement and 16 connections). Traffic goes to 127.0.0.1 only.
//!
//! `cargo build --release && cargo run --release --example emulator_bench -- persistence
//! [SECRETS] [ROUNDS]` compares a `--state-dir` server with an in-memory one instead (defaults
//! 5,000 secrets, 3 rounds): the release `coldvault backup` of the whole vault against each
//! (alternating, median of the rounds; every archive is checked to hold every secret), then
//! SECRETS concurrent PUTs against each, with the saves the write-behind task made, and the
//! cost of one save of the full vault (the copy under the vault's lock, then the write).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coldvault::emulator::{self, EmulatorConfig, VaultSpec};

struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs =
            Box::new(std::iter::once(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
        Box::pin(async move { Ok(addrs) })
    }
}

fn client(ca_pem: &str) -> Result<reqwest::Client, Box<dyn std::error::Error>> {
    coldvault::vault::transport::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        .dns_resolver(Arc::new(Loopback))
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()?)
}

fn config() -> EmulatorConfig {
    EmulatorConfig {
        vaults: vec![VaultSpec::new("bench")],
        ..EmulatorConfig::default()
    }
}

/// GETs `url` in a loop on one connection for `length`; answers the count of 200s.
async fn hammer(
    http: reqwest::Client,
    url: String,
    token: String,
    length: Duration,
) -> Result<u64, String> {
    let until = Instant::now() + length;
    let mut ok = 0u64;
    while Instant::now() < until {
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().as_u16() != 200 {
            return Err(format!("status {}", response.status()));
        }
        response.bytes().await.map_err(|e| e.to_string())?;
        ok += 1;
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("persistence") {
        return persistence::run(std::env::args().skip(2).collect()).await;
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let connections: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let length = Duration::from_secs(seconds);

    // Startup: from `start()` to a served request, five times; then to the first token
    // (the RSA signing key is made in the background).
    let mut startups = Vec::new();
    let mut first_tokens = Vec::new();
    for _ in 0..5 {
        let begun = Instant::now();
        let running = emulator::start(config()).await?;
        let http = client(running.ca_pem())?;
        let ready = http
            .get(format!("{}/ready", running.admin_url()))
            .send()
            .await?;
        assert_eq!(ready.status().as_u16(), 200);
        startups.push(begun.elapsed());
        http.post(format!("{}/tokens", running.admin_url()))
            .json(&serde_json::json!({}))
            .send()
            .await?
            .error_for_status()?;
        first_tokens.push(begun.elapsed());
        running.shutdown().await;
    }
    startups.sort();
    first_tokens.sort();
    println!(
        "startup to first served request: median {:.1} ms (min {:.1}, max {:.1})",
        startups[2].as_secs_f64() * 1e3,
        startups[0].as_secs_f64() * 1e3,
        startups[4].as_secs_f64() * 1e3
    );
    println!(
        "startup to first issued token:   median {:.1} ms",
        first_tokens[2].as_secs_f64() * 1e3
    );

    let running = emulator::start(config()).await?;
    let http = client(running.ca_pem())?;
    let token: serde_json::Value = http
        .post(format!("{}/tokens", running.admin_url()))
        .json(&serde_json::json!({}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .ok_or("no token")?
        .to_string();
    let base = running.vault_url("bench").ok_or("no vault")?;
    http.put(format!("{base}secrets/bench-secret?api-version=7.6"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"value": "benchmark value"}))
        .send()
        .await?
        .error_for_status()?;
    let url = format!("{base}secrets/bench-secret?api-version=7.6");

    // Warm up, then one connection.
    hammer(
        http.clone(),
        url.clone(),
        token.clone(),
        Duration::from_millis(300),
    )
    .await?;
    let one = hammer(http.clone(), url.clone(), token.clone(), length).await?;
    println!(
        "secrets GET, 1 connection:   {:.0} requests/s",
        one as f64 / length.as_secs_f64()
    );

    let mut tasks = Vec::new();
    for _ in 0..connections {
        let http = client(running.ca_pem())?;
        tasks.push(tokio::spawn(hammer(
            http,
            url.clone(),
            token.clone(),
            length,
        )));
    }
    let mut total = 0u64;
    for task in tasks {
        total += task.await??;
    }
    println!(
        "secrets GET, {connections} connections: {:.0} requests/s",
        total as f64 / length.as_secs_f64()
    );
    running.shutdown().await;
    Ok(())
}

/// The persistence comparison: the same work against an in-memory server and a `--state-dir`
/// one.
mod persistence {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use coldvault::emulator::{self, EmulatorConfig, RunningEmulator, VaultSpec};
    use serde_json::{Value, json};

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    pub async fn run(args: Vec<String>) -> Result<()> {
        let secrets: usize = args
            .first()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(5_000);
        let rounds: usize = args
            .get(1)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(3)
            .max(1);
        let binary = coldvault_binary()?;
        let work = tempfile::tempdir()?;
        // Only the public half is needed: the archive is checked through the JSON summary.
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let seed = work.path().join("seed.json");
        let seeded: Vec<Value> = (0..secrets)
            .map(|i| {
                json!({
                    "name": format!("bench-secret-{i:05}"),
                    "value": format!("value-{i:05}-{}", "v".repeat(24)),
                    "content_type": "text/plain",
                    "tags": {"team": format!("team-{}", i % 7)},
                })
            })
            .collect();
        std::fs::write(&seed, serde_json::to_vec(&json!({ "secrets": seeded }))?)?;
        println!(
            "persistence: {secrets} secrets, {rounds} rounds, {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );

        // Backups, alternating so both servers meet the same machine load.
        let mut memory = Vec::new();
        let mut disk = Vec::new();
        for round in 0..rounds {
            for persisted in [false, true] {
                let state_dir = persisted.then(|| work.path().join(format!("state-{round}")));
                let running = start(Some(seed.clone()), state_dir.clone()).await?;
                let saves_before = saves(&running);
                let seconds = backup(&binary, &running, &recipient, work.path(), secrets).await?;
                let saves_during = saves(&running) - saves_before;
                running.shutdown().await;
                println!(
                    "  round {}: backup against {:<10} {seconds:>6.2} s  ({saves_during} saves of vaults.json meanwhile)",
                    round + 1,
                    if persisted { "state-dir" } else { "in-memory" },
                );
                if persisted { &mut disk } else { &mut memory }.push(seconds);
            }
        }
        let (memory, disk) = (median(&mut memory), median(&mut disk));
        println!(
            "backup of {secrets} secrets (median): in-memory {memory:.2} s, state-dir {disk:.2} s, ratio {:.3} (target: within 10 %)",
            disk / memory
        );

        // Writes: SECRETS PUTs, 16 at a time.
        let mut write_times = Vec::new();
        for persisted in [false, true] {
            let state_dir = persisted.then(|| work.path().join("state-writes"));
            let running = start(None, state_dir).await?;
            let begun = Instant::now();
            put_all(&running, secrets, 16).await?;
            let seconds = begun.elapsed().as_secs_f64();
            let saves_during = saves(&running);
            let flush = Instant::now();
            running.shutdown().await;
            println!(
                "{secrets} PUTs (16 at a time) against {:<10} {seconds:>6.2} s ({:.0} req/s); saves meanwhile: {saves_during}; shutdown with final save {:.0} ms",
                if persisted { "state-dir" } else { "in-memory" },
                secrets as f64 / seconds,
                flush.elapsed().as_secs_f64() * 1e3,
            );
            write_times.push(seconds);
        }
        println!(
            "writes ratio state-dir / in-memory: {:.3}",
            write_times[1] / write_times[0]
        );

        // One save of the full vault: the copy held under the vault's lock, then the rest.
        let state_dir = work.path().join("state-save");
        let running = start(Some(seed.clone()), Some(state_dir.clone())).await?;
        let state = running.state().clone();
        let vault = state.vault("bench").ok_or("no bench vault")?;
        let copy = Instant::now();
        let snapshot = vault.lock().clone();
        let copy_ms = copy.elapsed().as_secs_f64() * 1e3;
        drop(snapshot);
        let persister = state.persister.as_ref().ok_or("no persister")?;
        persister.mark_changed();
        let save = Instant::now();
        let wrote = state.save_vaults_if_changed()?;
        let save_ms = save.elapsed().as_secs_f64() * 1e3;
        let size = std::fs::metadata(state_dir.join("vaults.json"))?.len();
        println!(
            "one save of {secrets} secrets: copy under the vault lock {copy_ms:.1} ms; copy, serialize, write, fsync, rename {save_ms:.1} ms ({:.1} MB{})",
            size as f64 / 1e6,
            if wrote { "" } else { ", nothing to write?" }
        );
        running.shutdown().await;
        Ok(())
    }

    fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    fn saves(running: &RunningEmulator) -> u64 {
        running.state().persister.as_ref().map_or(0, |p| p.saves())
    }

    async fn start(seed: Option<PathBuf>, state_dir: Option<PathBuf>) -> Result<RunningEmulator> {
        Ok(emulator::start(EmulatorConfig {
            vaults: vec![VaultSpec::new("bench")],
            seed,
            state_dir,
            ..EmulatorConfig::default()
        })
        .await?)
    }

    /// `target/release/coldvault`, beside this example's folder.
    fn coldvault_binary() -> Result<PathBuf> {
        let exe = std::env::current_exe()?;
        let binary = exe
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("coldvault"))
            .ok_or("cannot locate the target folder")?;
        if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!(
                "{} not found: run `cargo build --release` first",
                binary.display()
            )
            .into())
        }
    }

    /// Runs `coldvault backup` of vault `bench`; answers its wall time after checking that the
    /// archive holds every secret.
    async fn backup(
        binary: &Path,
        running: &RunningEmulator,
        recipient: &str,
        dir: &Path,
        count: usize,
    ) -> Result<f64> {
        let out = tempfile::tempdir_in(dir)?;
        let ready = running.ready().clone();
        let vault = running.vault_url("bench").ok_or("no bench vault")?;
        let begun = Instant::now();
        let output = tokio::process::Command::new(binary)
            .args(["backup", "--vault", &vault, "-r", recipient, "--json", "-o"])
            .arg(out.path())
            .env("AZURE_TENANT_ID", &ready.tenant_id)
            .env("AZURE_CLIENT_ID", &ready.client_id)
            .env("AZURE_CLIENT_SECRET", &ready.client_secret)
            .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
            .env("COLDVAULT_CA_CERT", &ready.ca_cert)
            .output()
            .await?;
        let seconds = begun.elapsed().as_secs_f64();
        if !output.status.success() {
            return Err(format!(
                "backup failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary")
            .ok_or("no summary event")?;
        if summary["counts"]["secrets"].as_u64() != Some(count as u64) {
            return Err(format!(
                "the archive holds {} secrets, not {count}",
                summary["counts"]["secrets"]
            )
            .into());
        }
        Ok(seconds)
    }

    /// PUTs `count` new secrets, `parallel` at a time.
    async fn put_all(running: &RunningEmulator, count: usize, parallel: usize) -> Result<()> {
        let http = super::client(running.ca_pem())?;
        let token: Value = http
            .post(format!("{}/tokens", running.admin_url()))
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let token = token["access_token"]
            .as_str()
            .ok_or("no token")?
            .to_string();
        let base = running.vault_url("bench").ok_or("no vault")?;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let (http, token, base, next) = (
                super::client(running.ca_pem())?,
                token.clone(),
                base.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), String>(());
                    }
                    let response = http
                        .put(format!("{base}secrets/written-{i:05}?api-version=7.6"))
                        .bearer_auth(&token)
                        .json(&json!({"value": format!("value-{i:05}")}))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if !response.status().is_success() {
                        return Err(format!("PUT answered {}", response.status()));
                    }
                    response.bytes().await.map_err(|e| e.to_string())?;
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }
}
