//! What the benchmarks share: the `coldvault` binary they run, the Python with the official
//! SDKs their baselines run on, and stray 429s on the local Key Vault. Each benchmark
//! includes this file with `#[path = "common/mod.rs"] mod common;` (a folder without
//! `main.rs` is not an example of its own) and uses the part it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use coldvault::emulator::RunningEmulator;
use coldvault::emulator::faults::{FaultKind, FaultSpec};

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
