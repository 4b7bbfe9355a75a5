//! Copy benchmark: the release `coldvault copy` against the local Key Vault, with the usual
//! get-then-set script as baseline in the same run.
//!
//! ```sh
//! cargo build --release && cargo run --release --example copy_bench
//! cargo run --release --example copy_bench -- --secrets 500 --skip-baseline
//! ```
//!
//! Scenarios (each on a fresh emulator in this process, run as users run it: with
//! `--state-dir`, every write persisted; `src` seeded with the secrets, `dst` empty and in
//! another subscription, so every secret is written by value as the script does):
//! - latency-bound: 20 ms added to every request, no budget; the same copy also goes through
//!   `bench/sequential_copy.py` (list, then get each value and set it in the target, one
//!   request at a time, on the official Python SDK: the algorithm of
//!   `CopySecretsToAnotherVault.ps1`) when a Python with the Azure SDK is found
//!   (`$CARGO_TARGET_DIR/python-venv`, `target/python-venv`, or `--python`);
//! - same subscription: the same at 20 ms, `dst` in `src`'s subscription (native blobs);
//! - budget-bound: 4,000 requests per 10 s per vault, then 429 with `Retry-After`, and 1 %
//!   stray 429s on top (`Retry-After: 1`); the row prints each vault's admitted request rate
//!   as a share of its budget.
//!
//! Each row prints wall time, requests to each vault, 429s and secrets in the target. Every
//! run is checked: the target must hold every secret, or the benchmark fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coldvault::emulator::{self, EmulatorConfig, RunningEmulator, VaultSpec};
use serde_json::{Value, json};

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

/// One measured run of `coldvault copy`.
struct Run {
    seconds: f64,
    requests_from: u64,
    requests_to: u64,
    throttled: u64,
    created: u64,
}

#[derive(Clone, Copy, Default)]
struct Setup {
    latency: Duration,
    stray_429: f64,
    budget: Option<u32>,
    same_subscription: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options()?;
    let binary = common::coldvault_binary()?;
    let work = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let n = options.secrets;
    println!(
        "coldvault copy benchmark: {n} secrets, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<40} {:>8} {:>10} {:>10} {:>6} {:>8}",
        "scenario", "wall s", "req from", "req to", "429s", "copied"
    );
    let latency = Duration::from_millis(20);
    let plain = runtime.block_on(scenario(
        &binary,
        work.path(),
        n,
        Setup {
            latency,
            ..Setup::default()
        },
    ))?;
    print_row("latency-bound, plain (20 ms, no budget)", &plain);
    if options.baseline {
        match common::python(options.python.as_deref()) {
            Some(python) => {
                let seconds = runtime.block_on(baseline(&python, work.path(), n, latency))?;
                println!(
                    "{:<40} {:>8.1} {:>10} {:>10} {:>6} {:>8}",
                    "  sequential get-then-set (Python SDK)", seconds, "-", "-", "-", n
                );
                println!("  speed-up: {:.1}x", seconds / plain.seconds);
            }
            None => println!(
                "  sequential baseline skipped: no Python with the Azure SDK (run `bash \
                 .ci/test` once, or pass --python)"
            ),
        }
    }
    let native = runtime.block_on(scenario(
        &binary,
        work.path(),
        n,
        Setup {
            latency,
            same_subscription: true,
            ..Setup::default()
        },
    ))?;
    print_row("latency-bound, native (same subscription)", &native);

    let budget = 4_000;
    let budgeted = runtime.block_on(scenario(
        &binary,
        work.path(),
        n,
        Setup {
            budget: Some(budget),
            stray_429: 0.01,
            ..Setup::default()
        },
    ))?;
    print_row("budget-bound, plain (4,000/10 s, 1 % 429s)", &budgeted);
    let allowed = f64::from(budget) / 10.0;
    let share = |requests: u64| 100.0 * requests as f64 / budgeted.seconds / allowed;
    println!(
        "  achieved share of each vault's budget ({allowed:.0} req/s): source {:.0} %, \
         target {:.0} %; 429s: {}",
        share(budgeted.requests_from),
        share(budgeted.requests_to),
        budgeted.throttled
    );
    Ok(())
}

fn print_row(label: &str, run: &Run) {
    println!(
        "{label:<40} {:>8.2} {:>10} {:>10} {:>6} {:>8}",
        run.seconds, run.requests_from, run.requests_to, run.throttled, run.created
    );
}

/// A fresh emulator: `src` with `count` secrets of about 40 bytes, `dst` empty, in another
/// subscription unless `same_subscription`.
async fn seeded(
    dir: &Path,
    count: usize,
    setup: Setup,
) -> Result<RunningEmulator, Box<dyn std::error::Error>> {
    let secrets: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "vault": "src",
                "name": format!("bench-secret-{i:05}"),
                "value": format!("value-{i:05}-{}", "v".repeat(24)),
                "content_type": "text/plain",
                "tags": {"team": format!("team-{}", i % 7)},
            })
        })
        .collect();
    let seed = dir.join(format!("copy-seed-{count}.json"));
    std::fs::write(&seed, serde_json::to_vec(&json!({ "secrets": secrets }))?)?;
    let mut dst = VaultSpec::new("dst");
    if !setup.same_subscription {
        dst.subscription = "22222222-2222-2222-2222-222222222222".into();
    }
    let state = dir.join(format!("copy-state-{}", std::process::id()));
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let running = emulator::start(EmulatorConfig {
        vaults: vec![VaultSpec::new("src"), dst],
        seed: Some(seed),
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
    dir: &Path,
    count: usize,
    setup: Setup,
) -> Result<Run, Box<dyn std::error::Error>> {
    let running = seeded(dir, count, setup).await?;
    let ready = running.ready().clone();
    let from = running.vault_url("src").ok_or("no src vault")?;
    let to = running.vault_url("dst").ok_or("no dst vault")?;
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["copy", "--from", &from, "--to", &to, "--json"])
        .signed_in(&ready);
    let (seconds, summary) = common::timed_copy(running, &mut command, count).await?;
    Ok(Run {
        seconds,
        requests_from: summary["requests_from"].as_u64().unwrap_or(0),
        requests_to: summary["requests_to"].as_u64().unwrap_or(0),
        throttled: summary["throttled"].as_u64().unwrap_or(0),
        created: count as u64,
    })
}

async fn baseline(
    python: &Path,
    dir: &Path,
    count: usize,
    latency: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let running = seeded(
        dir,
        count,
        Setup {
            latency,
            ..Setup::default()
        },
    )
    .await?;
    let ready = serde_json::to_string(running.ready())?;
    let output = tokio::process::Command::new(python)
        .arg("bench/sequential_copy.py")
        .args([&ready, "src", "dst"])
        .output()
        .await?;
    running.shutdown().await;
    Ok(common::baseline_seconds(&output, count)?)
}
