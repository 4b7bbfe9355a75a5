//! Benchmark of `coldvault restore` in plain mode: 5,000 secrets into an empty vault of another
//! subscription, with 20 ms of latency per request and a throttle budget of 4,000 requests per
//! 10 s (Azure's figure for secrets). Prints wall time, the request rate achieved against the
//! budget, and the 429s met; asserts nothing about speed.
//!
//! Run: `cargo run --release --example restore_bench [SECRETS] [LATENCY_MS] [BUDGET]`
//! (defaults 5000, 20, 4000). Everything runs in this process against 127.0.0.1: the local Key
//! Vault is started, the source vault seeded from a seed file, the archive made with the
//! library (values read through `AzureVault`, written by `ArchiveWriter`), then restored by the
//! same code path as `coldvault restore --mode plain`.

use std::collections::BTreeMap;
use std::time::Instant;

use age::secrecy::ExposeSecret;
use coldvault::archive::keys::RecipientSet;
use coldvault::archive::{
    ArchiveWriter, Attributes as ArchivedAttributes, Destination, Encryption, SecretRecord, Source,
};
use coldvault::commands::keys_args::DecryptArgs;
use coldvault::commands::restore::{RestoreArgs, RestorePlan, execute};
use coldvault::commands::restore_plan::{Mode, OnConflict};
use coldvault::emulator::{self, EmulatorConfig, VaultSpec};
use coldvault::vault::{AzureVault, ConnectOptions, EnvSnapshot, VaultReader, VaultUrl};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error>;

async fn admin(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, BoxError> {
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let text = request.send().await?.error_for_status()?.text().await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let secrets: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let latency_ms: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let budget: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4000);

    let work = tempfile::tempdir()?;
    let seed: Vec<Value> = (0..secrets)
        .map(|i| {
            json!({
                "vault": "source",
                "name": format!("bench-secret-{i:05}"),
                "value": format!("value-{i}-{}", "x".repeat(i % 40)),
                "content_type": "text/plain",
                "tags": {"team": format!("team-{}", i % 7)},
            })
        })
        .collect();
    let seed_path = work.path().join("seed.json");
    std::fs::write(&seed_path, serde_json::to_vec(&json!({ "secrets": seed }))?)?;
    let mut target = VaultSpec::new("target");
    target.subscription = "33333333-3333-3333-3333-333333333333".into();
    let running = emulator::start(EmulatorConfig {
        vaults: vec![VaultSpec::new("source"), target],
        seed: Some(seed_path),
        ..EmulatorConfig::default()
    })
    .await?;
    coldvault::vault::transport::install_crypto_provider();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(running.ca_pem().as_bytes())?])
        .build()?;
    let admin_url = running.admin_url().to_owned();
    let ready = running.ready().clone();
    let options = ConnectOptions {
        ca_cert: Some(running.ca_cert_path().to_path_buf()),
        env: EnvSnapshot::from_pairs([
            ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
            ("AZURE_CLIENT_ID", ready.client_id.as_str()),
            ("AZURE_CLIENT_SECRET", ready.client_secret.as_str()),
            ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ]),
        ..ConnectOptions::default()
    };

    // The archive: every secret's current value, read from the source vault.
    let made = Instant::now();
    let source_url = VaultUrl::parse(&running.vault_url("source").ok_or("no source vault")?)?;
    let source = AzureVault::connect(&source_url, &options).await?;
    let names: Vec<String> = source
        .list_secrets()
        .map_ok(|p| p.name)
        .try_collect()
        .await?;
    let values: Vec<_> = futures::stream::iter(names.iter())
        .map(|name| source.get_secret(name, None))
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let identity = age::x25519::Identity::generate();
    let mut recipients = RecipientSet::new();
    recipients.add(&identity.to_public().to_string())?;
    let encryption = Encryption::to_recipients(recipients)?;
    let mut writer = ArchiveWriter::create(
        Destination::Dir(work.path().to_owned()),
        &encryption,
        Source {
            vault: "source".to_owned(),
            url: source_url.as_str().to_owned(),
        },
    )?;
    for value in values {
        let p = value.properties;
        writer.add_secret_version(&SecretRecord {
            name: p.name,
            version: p.version.unwrap_or_default(),
            value: value.value,
            content_type: p.content_type,
            tags: p.tags.into_iter().collect::<BTreeMap<_, _>>(),
            attributes: ArchivedAttributes {
                enabled: p.attributes.enabled,
                not_before: p.attributes.not_before,
                expires: p.attributes.expires,
                created: p.attributes.created,
                updated: p.attributes.updated,
            },
            current: true,
        })?;
    }
    let summary = writer.finish()?;
    let archive = summary.path.ok_or("the archive has no path")?;
    let identity_file = work.path().join("bench-identity.txt");
    std::fs::write(
        &identity_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )?;
    println!(
        "archive: {} secrets, {} bytes, made in {:.1} s",
        summary.counts.secrets,
        summary.bytes,
        made.elapsed().as_secs_f64()
    );

    // The restore, under latency and the budget, measured from an empty journal.
    admin(
        &http,
        &admin_url,
        reqwest::Method::PATCH,
        "/settings",
        Some(json!({"latency_ms": latency_ms, "budget": budget})),
    )
    .await?;
    admin(&http, &admin_url, reqwest::Method::DELETE, "/journal", None).await?;
    let target_url = running.vault_url("target").ok_or("no target vault")?;
    let args = RestoreArgs {
        archive: archive.clone(),
        vault: target_url.clone(),
        signers: Default::default(),
        decryption: DecryptArgs {
            identities: vec![identity_file],
            ..DecryptArgs::default()
        },
        mode: Mode::Plain,
        scope: Default::default(),
        on_conflict: OnConflict::Skip,
        recover_deleted: false,
        mapping: Default::default(),
        dry_run: false,
        json: false,
        concurrency: 32,
        connect: Default::default(),
    };
    let plan = RestorePlan::resolve(&args)
        .map_err(|e| e.message)?
        .with_connect_options(options.clone());
    let started = Instant::now();
    let code = execute(&plan).await.map_err(|e| e.message)?;
    let wall = started.elapsed().as_secs_f64();

    let journal = admin(&http, &admin_url, reqwest::Method::GET, "/journal", None).await?;
    let entries = journal["entries"].as_array().cloned().unwrap_or_default();
    let to_target: Vec<&Value> = entries
        .iter()
        .filter(|e| e["vault"] == json!("target"))
        .collect();
    let throttled = to_target
        .iter()
        .filter(|e| e["status"] == json!(429))
        .count();
    let served = to_target.len() - throttled;
    let writes = to_target
        .iter()
        .filter(|e| e["method"] == json!("PUT") && e["status"] == json!(200))
        .count();
    let target = AzureVault::connect(&VaultUrl::parse(&target_url)?, &options).await?;
    let restored = target.list_secrets().try_collect::<Vec<_>>().await?.len();
    let budget_rate = budget as f64 / 10.0;
    let rate = served as f64 / wall;
    println!("restore: exit code {code:?}, {restored} of {secrets} secrets in the target");
    println!(
        "wall time {wall:.2} s; {served} requests served ({writes} writes), {throttled} answered 429"
    );
    println!(
        "achieved {rate:.0} requests/s against a budget of {budget_rate:.0}/s ({budget} per 10 s): \
         {:.0} % of the budget; {:.0} secrets/s; latency {latency_ms} ms",
        100.0 * rate / budget_rate,
        restored as f64 / wall
    );
    // A budget of N per 10 s lets N requests through in each window: anything beyond the
    // first window's N waits for the next one.
    let windows = served.saturating_sub(1) / budget.max(1) as usize;
    println!(
        "floor set by the budget alone: {:.1} s for {served} requests",
        windows as f64 * 10.0
    );

    // The same restore again: everything is planned as identical and nothing is written.
    admin(
        &http,
        &admin_url,
        reqwest::Method::PATCH,
        "/settings",
        Some(json!({"budget": Value::Null})),
    )
    .await?;
    admin(&http, &admin_url, reqwest::Method::DELETE, "/journal", None).await?;
    let again = Instant::now();
    let code = execute(&plan).await.map_err(|e| e.message)?;
    let rerun = again.elapsed().as_secs_f64();
    let journal = admin(&http, &admin_url, reqwest::Method::GET, "/journal", None).await?;
    let entries = journal["entries"].as_array().cloned().unwrap_or_default();
    let rewrites = entries
        .iter()
        .filter(|e| e["vault"] == json!("target") && e["method"] == json!("PUT"))
        .count();
    println!(
        "rerun (no budget, {latency_ms} ms latency): exit code {code:?}, {rerun:.2} s, {} requests, {rewrites} writes",
        entries.len()
    );
    // Where the rerun's time goes: the live list (sequential pages) and the reads that
    // compare each item with the archive.
    let span = |filter: &dyn Fn(&Value) -> bool| {
        let times: Vec<f64> = entries
            .iter()
            .filter(|e| filter(e))
            .filter_map(|e| e["at_ms"].as_f64())
            .collect();
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let last = times.iter().copied().fold(0.0, f64::max);
        (times.len(), (last - first).max(0.0) / 1000.0)
    };
    let (pages, listing) = span(&|e| e["method"] == json!("GET") && e["path"] == json!("/secrets"));
    let (reads, reading) = span(&|e| {
        e["method"] == json!("GET")
            && e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/secrets/"))
    });
    println!(
        "  listing: {pages} pages in {listing:.2} s; comparing: {reads} reads in {reading:.2} s"
    );
    running.shutdown().await;
    Ok(())
}
