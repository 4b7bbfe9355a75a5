//! Peak memory of `coldvault restore --dry-run` and `coldvault diff` on a large archive: a
//! 100,000-entry archive (by default 50,000 secrets, each with its native blob of 2 KiB and
//! one plain version of 1 KiB) compared with an empty vault of the local Key Vault; and of
//! `coldvault verify` on the same archive, the floor every reading command shares (the parsed
//! manifest). Each
//! command runs as a child `coldvault` process under `/usr/bin/time -v`, which reports its
//! peak resident set size; the figures go into the README's "Memory" table. Asserts nothing.
//!
//! Run: `cargo build --release --bin coldvault --example restore_memory_bench && \
//! target/release/examples/restore_memory_bench [SECRETS]` (the `coldvault` binary is looked
//! up beside the example's folder, or in `COLDVAULT_BIN`). The local Key Vault runs in this
//! process on a free port; the archive is written to a temporary folder and removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use age::secrecy::{ExposeSecret, SecretString};
use coldvault::archive::keys::RecipientSet;
use coldvault::archive::{
    ArchiveWriter, Attributes, Destination, Encryption, ItemInfo, Kind, SecretRecord, Source,
};
use coldvault::emulator::{self, EmulatorConfig, VaultSpec};
use sha2::{Digest, Sha256};

#[path = "common/mod.rs"]
mod common;

type BoxError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let secrets: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50_000);
    let binary = common::coldvault_binary()?;
    let work = tempfile::tempdir()?;

    let running = emulator::start(EmulatorConfig {
        vaults: vec![VaultSpec::new("target")],
        ..EmulatorConfig::default()
    })
    .await?;
    let ready = running.ready().clone();
    let target = running.vault_url("target").ok_or("no target vault")?;

    let identity = age::x25519::Identity::generate();
    let identity_file = work.path().join("bench-identity.txt");
    std::fs::write(
        &identity_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )?;
    let made = Instant::now();
    let archive = build_archive(work.path(), &identity, secrets)?;
    let size = std::fs::metadata(&archive)?.len();
    println!(
        "coldvault: {}\narchive: {secrets} secrets, {} entries, {:.1} MiB, made in {:.1} s",
        binary.display(),
        2 * secrets,
        size as f64 / f64::from(1 << 20),
        made.elapsed().as_secs_f64()
    );

    let env = [
        ("AZURE_TENANT_ID", ready.tenant_id.as_str()),
        ("AZURE_CLIENT_ID", ready.client_id.as_str()),
        ("AZURE_CLIENT_SECRET", ready.client_secret.as_str()),
        ("AZURE_AUTHORITY_HOST", ready.authority_host.as_str()),
        ("COLDVAULT_CA_CERT", ready.ca_cert.as_str()),
    ];
    let archive_arg = archive.to_str().ok_or("archive path is not UTF-8")?;
    let identity_arg = identity_file.to_str().ok_or("identity path is not UTF-8")?;
    let runs: [(&str, Vec<&str>); 3] = [
        // The floor every reading command shares: the verification pass holds the parsed
        // manifest and a record per entry.
        ("verify", vec!["verify", archive_arg, "-i", identity_arg]),
        (
            "restore --dry-run",
            vec![
                "restore",
                archive_arg,
                "--vault",
                &target,
                "-i",
                identity_arg,
                "--dry-run",
            ],
        ),
        (
            "diff",
            vec!["diff", archive_arg, "--vault", &target, "-i", identity_arg],
        ),
    ];
    println!(
        "{:<20} {:>12} {:>9} {:>5}",
        "command", "peak RSS", "time", "exit"
    );
    for (label, args) in runs {
        let measured = {
            let (binary, env) = (binary.clone(), env.map(|(k, v)| (k, v.to_owned())));
            let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            tokio::task::spawn_blocking(move || measure(&binary, &args, &env)).await??
        };
        println!(
            "{:<20} {:>8} MiB {:>8.2}s {:>5}",
            label,
            measured.peak_kib / 1024,
            measured.seconds,
            measured.exit
        );
    }
    running.shutdown().await;
    Ok(())
}

/// Writes the archive: per secret its native blob (opaque bytes, as Key Vault's are) and one
/// plain version, item by item as `backup` writes them.
fn build_archive(
    dir: &Path,
    identity: &age::x25519::Identity,
    secrets: usize,
) -> Result<PathBuf, BoxError> {
    let mut recipients = RecipientSet::new();
    recipients.add(&identity.to_public().to_string())?;
    let encryption = Encryption::to_recipients(recipients)?;
    let mut writer = ArchiveWriter::create(
        Destination::Dir(dir.to_owned()),
        &encryption,
        Source {
            vault: "source".to_owned(),
            url: "https://source.vault.azure.net/".to_owned(),
        },
    )?;
    for i in 0..secrets {
        let name = format!("bench-secret-{i:06}");
        let version = format!("{:032x}", i);
        // Bytes that do not compress, as Key Vault's encrypted blobs and real values do not.
        let blob = noise(&format!("blob-{i}"), 2048);
        let value = hex(&noise(&format!("value-{i}"), 512));
        let mut info = ItemInfo::new(Kind::Secret, &name);
        info.version = Some(version.clone());
        info.versions = vec![version.clone()];
        info.content_type = Some("text/plain".to_owned());
        writer.add_blob(&info, &blob)?;
        writer.add_secret_version(&SecretRecord {
            name,
            version,
            value: SecretString::from(value),
            content_type: Some("text/plain".to_owned()),
            tags: Default::default(),
            attributes: Attributes::default(),
            current: true,
        })?;
    }
    let summary = writer.finish()?;
    Ok(summary.path.ok_or("the archive has no path")?)
}

/// `len` bytes of a SHA-256 chain seeded by `seed`.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block).into();
    }
    out.truncate(len);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Measured {
    peak_kib: u64,
    seconds: f64,
    exit: i32,
}

/// Runs `coldvault ARGS` under `/usr/bin/time -v`, stdout discarded.
fn measure(
    binary: &Path,
    args: &[String],
    env: &[(&str, String)],
) -> Result<Measured, std::io::Error> {
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let peak_kib = field("Maximum resident set size (kbytes):")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let elapsed = field("Elapsed (wall clock) time (h:mm:ss or m:ss):").unwrap_or_default();
    let seconds = elapsed.split(':').fold(0.0, |acc, part| {
        acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    });
    let exit = field("Exit status:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    if peak_kib == 0 {
        eprintln!("{stderr}");
    }
    Ok(Measured {
        peak_kib,
        seconds,
        exit,
    })
}
