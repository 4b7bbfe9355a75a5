//! Fleet benchmark: one `coldvault backup --all-subscriptions` run over a fleet of vaults
//! against the same vaults backed up one `coldvault backup --vault URL` process after the
//! other (the loop a script writes today), on the local Key Vault with latency added to every
//! request; and the peak memory of the fleet run at two fleet sizes, which must stay flat
//! (vaults run `--vault-concurrency` at a time; the fleet's size only adds list entries).
//!
//! ```sh
//! cargo build --release && cargo run --release --example fleet_bench
//! cargo run --release --example fleet_bench -- --vaults 40 --secrets 500 --latency-ms 20
//! ```
//!
//! The fleet: `--vaults` vaults over 3 subscriptions of one tenant, `--secrets` secrets of
//! about 40 bytes each. Every run is checked: each vault's archive must hold every secret, or
//! the benchmark fails. Rows print wall time, requests sent, the peak resident memory of the
//! `coldvault` process (VmHWM, sampled every 10 ms; for the sequential runs, the highest of the
//! 40 processes), and the CPU time of `coldvault` and of the local Key Vault (this process):
//! when both together come near the machine's cores times the wall time, the run is bound by
//! this machine's CPU, not by the vaults' latency.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coldvault::emulator::{self, EmulatorConfig, RunningEmulator, VaultSpec};
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;

use common::SignedIn;

const SUBSCRIPTIONS: [&str; 3] = [
    "11111111-0000-0000-0000-00000000f001",
    "22222222-0000-0000-0000-00000000f002",
    "33333333-0000-0000-0000-00000000f003",
];

struct Options {
    vaults: usize,
    small_fleet: usize,
    secrets: usize,
    latency: Duration,
    vault_concurrency: u16,
    sequential: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        vaults: 40,
        small_fleet: 10,
        secrets: 500,
        latency: Duration::from_millis(20),
        vault_concurrency: 8,
        sequential: true,
    };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, value: Option<String>| -> Result<u64, String> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--vaults" => options.vaults = number(&arg, args.next())? as usize,
            "--small-fleet" => options.small_fleet = number(&arg, args.next())? as usize,
            "--secrets" => options.secrets = number(&arg, args.next())? as usize,
            "--latency-ms" => {
                options.latency = Duration::from_millis(number(&arg, args.next())?);
            }
            "--vault-concurrency" => {
                options.vault_concurrency = u16::try_from(number(&arg, args.next())?)
                    .map_err(|_| "--vault-concurrency is too large".to_owned())?;
            }
            "--skip-sequential" => options.sequential = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.vaults == 0 || options.small_fleet == 0 {
        return Err("--vaults and --small-fleet must be at least 1".into());
    }
    Ok(options)
}

/// One measured run (or the sum of the sequential runs).
struct Run {
    seconds: f64,
    requests: u64,
    peak_rss_kib: u64,
    /// CPU seconds of the `coldvault` process(es).
    client_cpu: f64,
    /// CPU seconds of this process (the local Key Vault) during the run.
    server_cpu: f64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options()?;
    let binary = common::coldvault_binary()?;
    let dir = tempfile::tempdir()?;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    println!(
        "fleet benchmark: {} vaults x {} secrets, {} ms latency per request, --vault-concurrency {}",
        options.vaults,
        options.secrets,
        options.latency.as_millis(),
        options.vault_concurrency
    );

    let fleet = fleet_run(&binary, dir.path(), &recipient, &options, options.vaults).await?;
    let small = fleet_run(
        &binary,
        dir.path(),
        &recipient,
        &options,
        options.small_fleet,
    )
    .await?;
    let sequential = if options.sequential {
        Some(sequential_runs(&binary, dir.path(), &recipient, &options).await?)
    } else {
        None
    };

    println!();
    println!(
        "this machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| run | vaults | wall s | requests | peak RSS (coldvault) | CPU s coldvault / local Key Vault |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    let row = |name: &str, vaults: usize, run: &Run| {
        println!(
            "| {name} | {vaults} | {:.1} | {} | {:.1} MiB | {:.1} / {:.1} |",
            run.seconds,
            run.requests,
            run.peak_rss_kib as f64 / 1024.0,
            run.client_cpu,
            run.server_cpu,
        );
    };

    row(
        "one `backup --all-subscriptions` run",
        options.vaults,
        &fleet,
    );
    row(
        "one `backup --all-subscriptions` run",
        options.small_fleet,
        &small,
    );
    if let Some(sequential) = &sequential {
        row(
            "sequential `backup --vault` runs (highest RSS of one)",
            options.vaults,
            sequential,
        );
        println!();
        println!(
            "fleet run {:.1}x faster than {} sequential runs",
            sequential.seconds / fleet.seconds.max(f64::EPSILON),
            options.vaults
        );
    }
    println!(
        "peak RSS at {} vaults / at {} vaults: {:.2}",
        options.vaults,
        options.small_fleet,
        fleet.peak_rss_kib as f64 / small.peak_rss_kib.max(1) as f64
    );
    Ok(())
}

fn vault_name(i: usize) -> String {
    format!("fleet-kv-{i:03}")
}

/// A fresh local Key Vault with `vaults` vaults over [`SUBSCRIPTIONS`], each holding
/// `secrets` secrets.
async fn seeded(
    dir: &Path,
    vaults: usize,
    options: &Options,
) -> Result<RunningEmulator, Box<dyn std::error::Error>> {
    let specs: Vec<VaultSpec> = (0..vaults)
        .map(|i| {
            let mut spec = VaultSpec::new(&vault_name(i));
            spec.subscription = SUBSCRIPTIONS[i % SUBSCRIPTIONS.len()].to_owned();
            spec
        })
        .collect();
    let secrets: Vec<Value> = (0..vaults)
        .flat_map(|v| {
            (0..options.secrets).map(move |i| {
                json!({
                    "vault": vault_name(v),
                    "name": format!("bench-secret-{i:05}"),
                    "value": format!("value-{i:05}-{}", "v".repeat(24)),
                    "content_type": "text/plain",
                })
            })
        })
        .collect();
    let seed = dir.join(format!("seed-{vaults}.json"));
    std::fs::write(&seed, serde_json::to_vec(&json!({ "secrets": secrets }))?)?;
    Ok(emulator::start(EmulatorConfig {
        vaults: specs,
        seed: Some(seed),
        latency: options.latency,
        ..EmulatorConfig::default()
    })
    .await?)
}

fn command(binary: &Path, running: &RunningEmulator) -> tokio::process::Command {
    let ready = running.ready();
    let mut command = tokio::process::Command::new(binary);
    command
        .signed_in(ready)
        .env("COLDVAULT_ARM_ENDPOINT", &ready.arm_endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What one process used.
struct Usage {
    stdout: String,
    seconds: f64,
    peak_rss_kib: u64,
    cpu: f64,
}

/// Runs `command`, sampling its peak memory and CPU time.
async fn measured(
    mut command: tokio::process::Command,
) -> Result<Usage, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let child = command.spawn()?;
    let pid = child.id().ok_or("child has no pid")?;
    let peak = tokio::spawn(sample_usage(pid));
    let output = child.wait_with_output().await?;
    let seconds = started.elapsed().as_secs_f64();
    let (peak_rss_kib, cpu) = peak.await.unwrap_or((0, 0.0));
    if !output.status.success() {
        return Err(format!(
            "backup failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(Usage {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        seconds,
        peak_rss_kib,
        cpu,
    })
}

/// One fleet run over `vaults` vaults; every vault must hold every secret.
async fn fleet_run(
    binary: &Path,
    dir: &Path,
    recipient: &str,
    options: &Options,
    vaults: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    let running = seeded(dir, vaults, options).await?;
    let out = tempfile::tempdir_in(dir)?;
    let mut cmd = command(binary, &running);
    cmd.args(["backup", "--all-subscriptions", "-r", recipient, "--json"])
        .args([
            "--vault-concurrency",
            &options.vault_concurrency.to_string(),
            "-o",
        ])
        .arg(out.path());
    let server_before = cpu_seconds("self");
    let result = measured(cmd).await;
    let server_cpu = cpu_seconds("self") - server_before;
    running.shutdown().await;
    let usage = result?;
    let seconds = usage.seconds;
    let events: Vec<Value> = usage
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = events
        .iter()
        .find(|e| e["type"] == "fleet_summary")
        .ok_or("no fleet summary")?;
    let rows = summary["vaults"].as_array().ok_or("no vaults")?;
    if rows.len() != vaults
        || rows
            .iter()
            .any(|r| r["status"] != "ok" || r["items"].as_u64() != Some(options.secrets as u64))
    {
        return Err(format!("the fleet run missed items: {summary}").into());
    }
    let requests = events
        .iter()
        .filter(|e| e["type"] == "summary")
        .filter_map(|e| e["requests"].as_u64())
        .sum();
    println!("fleet run, {vaults} vaults: {seconds:.1} s");
    Ok(Run {
        seconds,
        requests,
        peak_rss_kib: usage.peak_rss_kib,
        client_cpu: usage.cpu,
        server_cpu,
    })
}

/// One `backup --vault URL` process per vault, one after the other.
async fn sequential_runs(
    binary: &Path,
    dir: &Path,
    recipient: &str,
    options: &Options,
) -> Result<Run, Box<dyn std::error::Error>> {
    let running = seeded(dir, options.vaults, options).await?;
    let out = tempfile::tempdir_in(dir)?;
    let mut total = Run {
        seconds: 0.0,
        requests: 0,
        peak_rss_kib: 0,
        client_cpu: 0.0,
        server_cpu: 0.0,
    };
    let server_before = cpu_seconds("self");
    let started = Instant::now();
    for i in 0..options.vaults {
        let url = running
            .vault_url(&vault_name(i))
            .ok_or("a vault is missing")?;
        let mut cmd = command(binary, &running);
        cmd.args(["backup", "--vault", &url, "-r", recipient, "--json", "-o"])
            .arg(out.path());
        let usage = measured(cmd).await?;
        let summary: Value = usage
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary")
            .ok_or("no summary event")?;
        if summary["counts"]["secrets"].as_u64() != Some(options.secrets as u64) {
            return Err(format!("a sequential run missed items: {summary}").into());
        }
        total.requests += summary["requests"].as_u64().unwrap_or(0);
        total.peak_rss_kib = total.peak_rss_kib.max(usage.peak_rss_kib);
        total.client_cpu += usage.cpu;
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.server_cpu = cpu_seconds("self") - server_before;
    running.shutdown().await;
    println!(
        "sequential runs, {} vaults: {:.1} s",
        options.vaults, total.seconds
    );
    Ok(total)
}

/// The high-water mark of a process's resident memory (KiB) and its CPU time (s), sampled
/// until it exits.
async fn sample_usage(pid: u32) -> (u64, f64) {
    let path = format!("/proc/{pid}/status");
    let mut peak = 0;
    let mut cpu = 0.0f64;
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
        cpu = cpu.max(cpu_seconds(&pid.to_string()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (peak, cpu)
}

/// User plus system CPU seconds of `/proc/{pid}` (`self` for this process), from its `stat`
/// (fields 14 and 15, in clock ticks of 1/100 s, Linux's `USER_HZ` on every architecture it
/// exposes to `/proc`).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After `)`: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
