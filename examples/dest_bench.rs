//! Writes the same archive of 100,000 secret versions to local disk, to Azurite (Blob
//! Storage) and to moto (S3) over loopback, and prints the time each took, its ratio to
//! local disk, and the peak memory (VmHWM) of the process that wrote it — each destination in
//! a process of its own, so the peaks do not mix. The upload streams (8 MiB parts): memory
//! must stay near the local figure whatever the archive's size.
//!
//! `cargo run --release --example dest_bench [ENTRIES]`. Azurite and moto are started on free
//! loopback ports from `COLDVAULT_AZURITE_BLOB` / `COLDVAULT_MOTO_SERVER` (as `.ci/test`
//! installs them) or from `PATH`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use age::secrecy::SecretString;
use coldvault::archive::keys::RecipientSet;
use coldvault::archive::{
    ArchiveWriter, Attributes, CommitSink, Destination, Encryption, SecretRecord, Source,
};
use coldvault::dest::upload::{RemoteSink, part_size};
use coldvault::dest::{RemoteOptions, open_remote};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Azurite's public development key (Microsoft's docs).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--one") {
        return one(&args[2], args[3].parse()?);
    }
    let count: usize = args
        .get(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let azurite_bin = server("COLDVAULT_AZURITE_BLOB", "azurite-blob")?;
    let moto_bin = server("COLDVAULT_MOTO_SERVER", "moto_server")?;
    let data = tempfile::tempdir()?;
    let blob_port = free_port()?;
    let s3_port = free_port()?;
    let _azurite = Guard(
        Command::new(azurite_bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &blob_port.to_string(),
            ])
            .args(["--location", &data.path().to_string_lossy()])
            .args([
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let _moto = Guard(
        Command::new(moto_bin)
            .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for(blob_port)?;
    wait_for(s3_port)?;
    println!("entries: {count}, part size {} MiB", part_size() >> 20);
    let me = std::env::current_exe()?;
    let mut local_seconds = None;
    for (label, target) in [
        ("local disk", "local".to_owned()),
        ("Azurite", format!("azure:{blob_port}")),
        ("moto (S3)", format!("s3:{s3_port}")),
    ] {
        let out = Command::new(&me)
            .args(["--one", &target, &count.to_string()])
            .output()?;
        if !out.status.success() {
            return Err(format!("{label}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace();
        let seconds: f64 = fields.next().ok_or("no time")?.parse()?;
        let bytes: u64 = fields.next().ok_or("no size")?.parse()?;
        let peak: f64 = fields.next().ok_or("no peak")?.parse()?;
        let ratio = match local_seconds {
            None => {
                local_seconds = Some(seconds);
                1.0
            }
            Some(local) => seconds / local,
        };
        println!(
            "{label:<12} {seconds:>6.2} s  {:>6.1} MiB archive  {ratio:>5.2}x local  peak RSS {peak:.1} MiB",
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

/// One run in this process: writes the archive to `target` and prints seconds, bytes, peak.
fn one(target: &str, count: usize) -> Result<()> {
    let identity = age::x25519::Identity::generate();
    let mut recipients = RecipientSet::new();
    recipients.add(&identity.to_public().to_string())?;
    let encryption = Encryption::to_recipients(recipients)?;
    let source = Source {
        vault: "bench-vault".to_owned(),
        url: "https://bench-vault.vault.azure.net/".to_owned(),
    };
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut writer = match target.split_once(':') {
        None => {
            ArchiveWriter::create(Destination::Dir(dir.path().to_owned()), &encryption, source)?
        }
        Some((kind, port)) => {
            let (url, vars) = match kind {
                "azure" => (
                    "az://devstoreaccount1/bench".to_owned(),
                    vec![(
                        "AZURE_STORAGE_CONNECTION_STRING",
                        format!(
                            "AccountName=devstoreaccount1;AccountKey={DEV_KEY};\
                             BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1"
                        ),
                    )],
                ),
                _ => (
                    "s3://bench".to_owned(),
                    vec![
                        ("AWS_ACCESS_KEY_ID", "bench".to_owned()),
                        ("AWS_SECRET_ACCESS_KEY", "bench-secret".to_owned()),
                        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
                    ],
                ),
            };
            let options = RemoteOptions {
                vars: Some(vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
                ..RemoteOptions::default()
            };
            let store = open_remote(&url, &options)?.store;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(store.create(false))?;
            ArchiveWriter::create_in_sink(
                |name| {
                    let sink = RemoteSink::start(&store, name, None, part_size()).map_err(|e| {
                        coldvault::archive::ArchiveError::io("upload", std::io::Error::other(e))
                    })?;
                    let shown = sink.shown().to_owned();
                    Ok((Box::new(sink) as Box<dyn CommitSink>, shown))
                },
                &encryption,
                source,
            )?
        }
    };
    let created = time::OffsetDateTime::now_utc();
    for i in 0..count {
        let mut tags = BTreeMap::new();
        if i % 2 == 0 {
            tags.insert("env".to_owned(), "prod".to_owned());
        }
        writer.add_secret_version(&SecretRecord {
            name: format!("secret-{i:06}"),
            version: format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            ),
            value: SecretString::from(format!(
                "value-{i:06}-{:016x}",
                (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)
            )),
            content_type: Some("text/plain".to_owned()),
            tags,
            attributes: Attributes {
                enabled: Some(true),
                created: Some(created),
                updated: Some(created),
                ..Attributes::default()
            },
            current: true,
        })?;
    }
    let summary = writer.finish()?;
    println!(
        "{:.3} {} {:.1}",
        started.elapsed().as_secs_f64(),
        summary.bytes,
        peak_mib()
    );
    Ok(())
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(var: &str, name: &str) -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .ok_or_else(|| format!("{name} not found: set {var}").into())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for(port: u16) -> Result<()> {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no server on port {port}").into())
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
