//! Backup benchmark: the release `coldvault` binary against the local Key Vault, in the
//! settings the product promises figures for, with the usual sequential script as baseline.
//!
//! ```sh
//! cargo build --release && cargo run --release --example backup_bench
//! cargo run --release --example backup_bench -- --secrets 500 --skip-baseline
//! cargo run --release --example backup_bench -- --throttling-only
//! ```
//!
//! Scenarios (each on a fresh, seeded emulator in this process):
//! - latency-bound: 20 ms added to every request, no budget; the same vault also goes
//!   through `bench/sequential_backup.py` (list, then get each value, one request at a time,
//!   on the official Python SDK) when a Python with the Azure SDK is found
//!   (`target/python-venv`, as `.ci/test` makes it, or `--python`);
//! - budget-bound: 4,000 requests per 10 s per vault, then 429 with `Retry-After`;
//! - memory: the same backup of 500 and of the full count, to show memory stays flat;
//! - throttling: 2,000 secrets (`--throttle-secrets`) at 20 ms latency under a budget of 2,000
//!   requests per 10 s, with 0 %, 1 % and 5 % of requests answered 429 (`Retry-After: 1`) at
//!   random on top, as other clients of a shared budget cause. This local Key Vault persists
//!   to a `--state-dir`, as users run it (`--in-memory`: without one). Each row prints the achieved request rate, the share
//!   of the budget the admitted requests used, the 429s and the items lost (targets: at least
//!   80 % of the budget at 1 %, 60 % at 5 %, nothing lost).
//!
//! Each row prints wall time, requests sent, 429s received, the achieved request rate and the
//! peak resident memory of the `coldvault` process (VmHWM, sampled every 10 ms). Every run is
//! checked: the archive must hold every secret, or the benchmark fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use coldvault::emulator::{self, EmulatorConfig, RunningEmulator, VaultSpec};
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;

use common::SignedIn;

struct Options {
    secrets: usize,
    baseline: bool,
    python: Option<PathBuf>,
    throttle_secrets: usize,
    throttling_only: bool,
    /// Run the throttling scenarios on an in-memory local Key Vault instead.
    in_memory: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        secrets: 5_000,
        baseline: true,
        python: None,
        throttle_secrets: 2_000,
        throttling_only: false,
        in_memory: false,
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
            "--throttling-only" => options.throttling_only = true,
            "--in-memory" => options.in_memory = true,
            "--throttle-secrets" => {
                options.throttle_secrets = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--throttle-secrets needs a number")?;
            }
            "--python" => options.python = args.next().map(PathBuf::from),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// One measured run of `coldvault backup`.
struct Run {
    seconds: f64,
    requests: u64,
    throttled: u64,
    peak_rss_kib: u64,
    /// Secrets in the archive.
    captured: u64,
}

/// The local Key Vault a scenario runs against.
#[derive(Clone, Copy, Default)]
struct Setup {
    latency: Duration,
    /// Requests per 10 s per vault.
    budget: Option<u32>,
    /// Share of requests answered 429 at random, on top of the budget.
    stray_429: f64,
    /// Persist to a state directory, as `coldvault emulator --state-dir` does.
    state_dir: bool,
}

impl Setup {
    fn latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    fn budget(budget: u32) -> Self {
        Self {
            budget: Some(budget),
            ..Self::default()
        }
    }
}

/// Fails unless the archive holds all `count` secrets.
fn complete(run: Run, count: usize) -> Result<Run, Box<dyn std::error::Error>> {
    if run.captured == count as u64 {
        Ok(run)
    } else {
        Err(format!("the archive holds {} secrets, not {count}", run.captured).into())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options()?;
    let binary = common::coldvault_binary()?;
    let work = tempfile::tempdir()?;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let identity_file = work.path().join("bench-identity.txt");
    std::fs::write(&identity_file, identity.to_string().expose_secret())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    println!(
        "coldvault backup benchmark: {} secrets, {} cores",
        options.secrets,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if !options.throttling_only {
        general(&options, &runtime, &binary, work.path(), &recipient)?;
    }
    throttling(&options, &runtime, &binary, work.path(), &recipient)
}

/// The latency-bound, budget-bound and memory scenarios.
fn general(
    options: &Options,
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    work: &Path,
    recipient: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:<34} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "scenario", "wall s", "requests", "429s", "req/s", "peak RSS"
    );

    let latency = Duration::from_millis(20);
    let n = options.secrets;
    let latency_run = complete(
        runtime.block_on(scenario(
            binary,
            work,
            recipient,
            n,
            Setup::latency(latency),
        ))?,
        n,
    )?;
    print_row("latency-bound (20 ms, no budget)", &latency_run);

    if options.baseline {
        match common::python(options.python.as_deref()) {
            Some(python) => {
                let seconds = runtime.block_on(baseline(&python, work, n, latency))?;
                println!(
                    "{:<34} {:>9.1} {:>9} {:>7} {:>10} {:>10}",
                    "  sequential Python SDK script", seconds, "-", "-", "-", "-"
                );
                println!(
                    "  speed-up: {:.1}x (target: at least 20x)",
                    seconds / latency_run.seconds
                );
            }
            None => println!(
                "  sequential baseline skipped: no Python with the Azure SDK \
                 (run `bash .ci/test` once, or pass --python)"
            ),
        }
    }

    let budget = 4_000;
    let budget_run = complete(
        runtime.block_on(scenario(binary, work, recipient, n, Setup::budget(budget)))?,
        n,
    )?;
    print_row("budget-bound (4,000 per 10 s)", &budget_run);
    let allowed = f64::from(budget) / 10.0;
    println!(
        "  achieved rate: {:.0} req/s = {:.0} % of the budget's {allowed:.0} req/s \
         (target: at least 80 %); 429s: {}",
        budget_run.requests as f64 / budget_run.seconds,
        100.0 * budget_run.requests as f64 / budget_run.seconds / allowed,
        budget_run.throttled
    );

    let small = (n / 10).max(1);
    let small_run = complete(
        runtime.block_on(scenario(binary, work, recipient, small, Setup::default()))?,
        small,
    )?;
    print_row(&format!("memory: {small} secrets"), &small_run);
    let large_run = complete(
        runtime.block_on(scenario(binary, work, recipient, n, Setup::default()))?,
        n,
    )?;
    print_row(&format!("memory: {n} secrets"), &large_run);
    println!(
        "  peak memory grows {:.2}x for {:.0}x the secrets",
        large_run.peak_rss_kib as f64 / small_run.peak_rss_kib.max(1) as f64,
        n as f64 / small as f64
    );
    Ok(())
}

/// 2,000 secrets at 20 ms under 2,000 requests per 10 s, with 0 %, 1 % and 5 % stray 429s.
fn throttling(
    options: &Options,
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    work: &Path,
    recipient: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    const BUDGET: u32 = 2_000;
    let n = options.throttle_secrets;
    let allowed = f64::from(BUDGET) / 10.0;
    println!();
    println!(
        "throttling: {n} secrets, 20 ms latency, budget {BUDGET} requests per 10 s \
         ({allowed:.0} req/s), local Key Vault {}",
        if options.in_memory {
            "in memory"
        } else {
            "with --state-dir"
        }
    );
    println!(
        "{:<12} {:>8} {:>9} {:>6} {:>8} {:>15} {:>10}",
        "stray 429s", "wall s", "requests", "429s", "req/s", "share of budget", "items lost"
    );
    for stray in [0.0, 0.01, 0.05] {
        let setup = Setup {
            latency: Duration::from_millis(20),
            budget: Some(BUDGET),
            stray_429: stray,
            state_dir: !options.in_memory,
        };
        let run = runtime.block_on(scenario(binary, work, recipient, n, setup))?;
        // The budget counts what the vault admitted: every request that was not refused.
        let admitted = run.requests.saturating_sub(run.throttled) as f64 / run.seconds;
        println!(
            "{:<12} {:>8.1} {:>9} {:>6} {:>8.0} {:>14.0}% {:>10}",
            format!("{:.0} %", stray * 100.0),
            run.seconds,
            run.requests,
            run.throttled,
            run.requests as f64 / run.seconds,
            100.0 * admitted / allowed,
            (n as u64).saturating_sub(run.captured)
        );
    }
    println!("  targets: at least 80 % of the budget at 1 %, 60 % at 5 %, no item lost");
    Ok(())
}

fn print_row(label: &str, run: &Run) {
    println!(
        "{label:<34} {:>9.2} {:>9} {:>7} {:>10.0} {:>7.1} MB",
        run.seconds,
        run.requests,
        run.throttled,
        run.requests as f64 / run.seconds,
        run.peak_rss_kib as f64 / 1024.0
    );
}

/// A fresh emulator with `count` secrets of about 40 bytes, one vault `bench`.
async fn seeded(
    dir: &Path,
    count: usize,
    setup: Setup,
) -> Result<RunningEmulator, Box<dyn std::error::Error>> {
    let secrets: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "name": format!("bench-secret-{i:05}"),
                "value": format!("value-{i:05}-{}", "v".repeat(24)),
                "content_type": "text/plain",
                "tags": {"team": format!("team-{}", i % 7)},
            })
        })
        .collect();
    let seed = dir.join(format!("seed-{count}.json"));
    std::fs::write(&seed, serde_json::to_vec(&json!({ "secrets": secrets }))?)?;
    let state_dir = if setup.state_dir {
        let state = dir.join(format!("state-{count}-{}", std::process::id()));
        if state.exists() {
            std::fs::remove_dir_all(&state)?;
        }
        Some(state)
    } else {
        None
    };
    let running = emulator::start(EmulatorConfig {
        vaults: vec![VaultSpec::new("bench")],
        seed: Some(seed),
        latency: setup.latency,
        budget: setup.budget,
        state_dir,
        ..EmulatorConfig::default()
    })
    .await?;
    common::stray_429s(&running, setup.stray_429);
    Ok(running)
}

async fn scenario(
    binary: &Path,
    dir: &Path,
    recipient: &str,
    count: usize,
    setup: Setup,
) -> Result<Run, Box<dyn std::error::Error>> {
    let running = seeded(dir, count, setup).await?;
    let out = tempfile::tempdir_in(dir)?;
    let ready = running.ready().clone();
    let vault = running.vault_url("bench").ok_or("no bench vault")?;
    let started = Instant::now();
    let child = tokio::process::Command::new(binary)
        .args(["backup", "--vault", &vault, "-r", recipient, "--json", "-o"])
        .arg(out.path())
        .signed_in(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().ok_or("child has no pid")?;
    let peak = tokio::spawn(sample_peak_rss(pid));
    let output = child.wait_with_output().await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kib = peak.await.unwrap_or(0);
    running.shutdown().await;
    // Exit 3 is a partial archive: its missing items are counted by the caller.
    if !output.status.success() && output.status.code() != Some(3) {
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
    Ok(Run {
        seconds,
        requests: summary["requests"].as_u64().unwrap_or(0),
        throttled: summary["throttled"].as_u64().unwrap_or(0),
        peak_rss_kib,
        captured: summary["counts"]["secrets"].as_u64().unwrap_or(0),
    })
}

/// The high-water mark of a process's resident memory, sampled until it exits.
async fn sample_peak_rss(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let mut peak = 0;
    while let Ok(status) = tokio::fs::read_to_string(&path).await {
        if status.contains("State:\tZ") {
            break;
        }
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    peak
}

async fn baseline(
    python: &Path,
    dir: &Path,
    count: usize,
    latency: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let running = seeded(dir, count, Setup::latency(latency)).await?;
    let ready = serde_json::to_string(running.ready())?;
    let output = tokio::process::Command::new(python)
        .arg("bench/sequential_backup.py")
        .arg(&ready)
        .output()
        .await?;
    running.shutdown().await;
    Ok(common::baseline_seconds(&output, count)?)
}
