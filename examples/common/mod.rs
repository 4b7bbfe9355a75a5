//! What the benchmarks share: the `coldvault` binary they run and its sign-in to the local Key
//! Vault, the `summary` of a `--json` run, the Python their baselines run on and what a
//! baseline printed, and stray 429s on the local Key Vault. Each benchmark
//! includes this file with `#[path = "common/mod.rs"] mod common;` (a folder without
//! `main.rs` is not an example of its own) and uses the part it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use coldvault::emulator::faults::{FaultKind, FaultSpec};
use coldvault::emulator::{Ready, RunningEmulator};
use serde_json::Value;

/// The `coldvault` binary: `COLDVAULT_BIN`, else the one beside this example's folder (the
/// release build for `cargo run --release --example …`).
pub fn coldvault_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("COLDVAULT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("coldvault"))
        .ok_or("cannot locate the build folder")?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release` (or the profile the benchmark runs in) \
             first, or set COLDVAULT_BIN",
            binary.display()
        ))
    }
}

/// `CARGO_TARGET_DIR`, else `target`.
pub fn target_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned()))
}

/// A Python for a baseline script: `explicit` (`--python`), else the virtualenv `.ci/test`
/// makes under the target folder (the official Azure SDK, and `hvac`); `None` when neither is
/// there.
pub fn python(explicit: Option<&Path>) -> Option<PathBuf> {
    [
        explicit.map(Path::to_path_buf),
        Some(target_dir().join("python-venv/bin/python")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

/// Answers `rate` of all requests (0.01: one in a hundred) with 429 and `Retry-After: 1`, on
/// top of any budget: the stray throttling real vaults show.
pub fn stray_429s(running: &RunningEmulator, rate: f64) {
    if rate > 0.0 {
        running.state().faults.inject(FaultSpec {
            kind: FaultKind::Throttle,
            count: None,
            rate: Some(rate),
            method: None,
            path: None,
            vault: None,
            retry_after: Some(1),
            delay_ms: None,
        });
    }
}

/// Signs a `coldvault` command in to the local Key Vault as its ready line says: the service
/// principal in `AZURE_*`, the local issuer, the local CA.
pub trait SignedIn {
    /// Adds the environment; returns the command for chaining.
    fn signed_in(&mut self, ready: &Ready) -> &mut Self;
}

impl SignedIn for tokio::process::Command {
    fn signed_in(&mut self, ready: &Ready) -> &mut Self {
        self.env("AZURE_TENANT_ID", &ready.tenant_id)
            .env("AZURE_CLIENT_ID", &ready.client_id)
            .env("AZURE_CLIENT_SECRET", &ready.client_secret)
            .env("AZURE_AUTHORITY_HOST", &ready.authority_host)
            .env("COLDVAULT_CA_CERT", &ready.ca_cert)
    }
}

/// The `summary` event of a `--json` run that succeeded; the run's stderr when it failed.
pub fn summary(output: &Output, what: &str) -> Result<Value, String> {
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .ok_or_else(|| format!("{what}: no summary event"))
}

/// The seconds a baseline script printed (`{"secrets": N, "seconds": S}`), checked to have
/// handled `count` secrets.
pub fn baseline_seconds(output: &Output, count: usize) -> Result<f64, String> {
    if !output.status.success() {
        return Err(format!(
            "baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let result: Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    if result["secrets"].as_u64() != Some(count as u64) {
        return Err(format!(
            "baseline handled {} secrets, not {count}",
            result["secrets"]
        ));
    }
    result["seconds"]
        .as_f64()
        .ok_or_else(|| "baseline printed no time".to_owned())
}

/// Runs `command` (a `coldvault copy … --json` into the vault `dst` of `running`), shuts
/// `running` down, and checks that `dst` holds `count` secrets and the summary says as many
/// were created. Returns the wall seconds and the summary.
pub async fn timed_copy(
    running: RunningEmulator,
    command: &mut tokio::process::Command,
    count: usize,
) -> Result<(f64, Value), String> {
    let started = std::time::Instant::now();
    let output = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("cannot run coldvault: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let held = running
        .state()
        .vault("dst")
        .map(|v| v.lock().secrets.live.len());
    running.shutdown().await;
    let summary = summary(&output, "copy")?;
    let created = summary["created"].as_u64().unwrap_or(0);
    if created != count as u64 || held != Some(count) {
        return Err(format!(
            "the target holds {held:?} secrets, {created} created, not {count}"
        ));
    }
    Ok((seconds, summary))
}
