//! Throttling end to end: `coldvault backup` against the local Key Vault in budget mode with
//! random 429s on top (the budget is shared with other clients, so stray 429s are normal), and
//! `--max-rate`. The assertions read what the run reports (items, requests, the pacer's learned
//! rate) and the vault's journal, never the wall clock as an upper bound.

use std::path::Path;

use serde_json::{Value, json};

use crate::backup::{Workspace, backup_into, coldvault};
use crate::support::TestEmulator;
use coldvault::emulator::{EmulatorConfig, VaultSpec};

/// A local Key Vault with one vault `pace` holding `count` small secrets.
async fn emulator_with_secrets(dir: &Path, count: usize) -> TestEmulator {
    let secrets: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("paced-{i:04}"), "value": format!("value-{i:04}")}))
        .collect();
    let seed = dir.join("seed.json");
    std::fs::write(&seed, json!({ "secrets": secrets }).to_string()).expect("seed written");
    TestEmulator::start_with(EmulatorConfig {
        vaults: vec![VaultSpec::new("pace")],
        seed: Some(seed),
        ..EmulatorConfig::default()
    })
    .await
}

/// The `summary` line of a `--json` backup.
fn summary(stdout: &[u8]) -> Value {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {}", String::from_utf8_lossy(stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_429s_under_a_budget_do_not_collapse_the_rate() {
    const SECRETS: usize = 100;
    // About 215 requests (a blob and a value per secret, lists, sign-in) against 120 per 10 s:
    // the budget runs out once, amid the captures (64 in flight), and 5 % of requests get a
    // 429 whatever the budget.
    const BUDGET: u32 = 120;
    let ws = Workspace::new();
    let emulator = emulator_with_secrets(ws.dir.path(), SECRETS).await;
    emulator.settings(json!({ "budget": BUDGET })).await;
    let (status, body) = emulator
        .admin(
            reqwest::Method::POST,
            "/faults",
            Some(json!([{"kind": "throttle", "rate": 0.05, "retry_after": 1}])),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (output, _) = backup_into(&emulator, &ws, "pace", &["--json"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let summary = summary(&output.stdout);
    assert_eq!(summary["counts"]["secrets"], json!(SECRETS), "{summary}");
    assert_eq!(summary["skipped"], json!([]), "{summary}");

    let journal = emulator.journal().await;
    let stray = journal.iter().filter(|e| e["fault"] == "throttle").count();
    let budget = journal.iter().filter(|e| e["fault"] == "budget").count();
    assert!(stray >= 5, "stray 429s were injected: {stray}");
    assert!(budget >= 1, "the budget ran out: {summary}");
    // The old pacer lowered its rate at every stray 429 (a cut per 429, each 10 % or more);
    // the run saw one spent budget, so one cut, or two if the second window runs out too.
    let cuts = summary["rate_cuts"].as_u64().expect("rate_cuts reported");
    assert!(
        (1..=2).contains(&cuts),
        "{cuts} cuts for {stray} stray 429s: {summary}"
    );
    // What it learned is the budget, 12 requests per second, not a collapse below it.
    let learned = summary["lowest_learned_rate"]
        .as_f64()
        .expect("a rate was learned");
    let budget_rate = f64::from(BUDGET) / 10.0;
    assert!(
        learned >= 0.6 * budget_rate && learned <= 1.2 * budget_rate,
        "learned {learned:.1} req/s under a budget of {budget_rate} req/s: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_spaces_a_backups_requests() {
    const SECRETS: usize = 20;
    const RATE: f64 = 25.0;
    let ws = Workspace::new();
    let emulator = emulator_with_secrets(ws.dir.path(), SECRETS).await;
    let (output, _) = backup_into(&emulator, &ws, "pace", &["--json", "--max-rate", "25"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary(&output.stdout);
    assert_eq!(summary["counts"]["secrets"], json!(SECRETS));
    let requests = summary["requests"].as_f64().expect("requests");
    let seconds = summary["seconds"].as_f64().expect("seconds");
    // Slots are booked 1/RATE apart, so the run cannot be shorter than this (a slow machine
    // only makes it longer). Without the cap, these ~45 requests take a fraction of a second.
    let least = (requests - 1.0) / RATE;
    assert!(
        seconds >= least * 0.98,
        "{requests} requests in {seconds:.2} s: faster than {RATE} req/s"
    );
    assert_eq!(summary["rate_cuts"], json!(0));
}

#[tokio::test]
async fn max_rate_must_be_a_positive_number() {
    let emulator = TestEmulator::start().await;
    let ws = Workspace::new();
    for bad in ["0", "-3", "fast", "inf", "NaN"] {
        let flag = format!("--max-rate={bad}");
        let output = coldvault(
            &emulator,
            &[
                "backup",
                "--vault",
                &emulator.vault_url("alpha"),
                "-r",
                &ws.recipient,
                "-o",
                ws.dir.path().to_str().unwrap_or_default(),
                &flag,
            ],
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--max-rate {bad}: {stderr}");
        assert!(stderr.contains("--max-rate"), "{stderr}");
        assert!(stderr.contains("above 0"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    for command in ["backup", "restore", "diff"] {
        let output = coldvault(&emulator, &[command, "--help"]).await;
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("--max-rate <N>"), "{command} --help: {help}");
    }
}
