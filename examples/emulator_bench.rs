//! Benchmark of the local Key Vault: startup time, and secrets GET per second over one
//! connection and over many. Prints figures; asserts nothing about speed.
//!
//! Run: `cargo run --release --example emulator_bench [SECONDS] [CONNECTIONS]`
//! (defaults 3 s per measurement and 16 connections). Traffic goes to 127.0.0.1 only.

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
