//! Writes and verifies an archive of 100,000 secret versions and prints the time each step
//! took and the peak memory of the process (VmHWM from /proc/self/status). Memory must stay
//! flat as the archive grows: entry data streams through; only compact manifest metadata is
//! held. Run with `cargo run --release --example archive_bench [ENTRIES]`.

use std::collections::BTreeMap;
use std::time::Instant;

use age::secrecy::SecretString;
use coldvault::archive::keys::{IdentitySet, RecipientSet};
use coldvault::archive::{
    ArchiveReader, ArchiveWriter, Attributes, Decryption, Destination, Encryption, SecretRecord,
    Source,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let count: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let dir = tempfile::tempdir()?;
    let identity = age::x25519::Identity::generate();
    let mut recipients = RecipientSet::new();
    recipients.add(&identity.to_public().to_string())?;
    let encryption = Encryption::to_recipients(recipients)?;
    let mut identities = IdentitySet::new();
    identities.add_x25519(identity);
    let decryption = Decryption::with_identities(identities)?;
    let source = Source {
        vault: "bench-vault".to_owned(),
        url: "https://bench-vault.vault.azure.net/".to_owned(),
    };
    println!("entries: {count}");
    println!("baseline peak memory: {:.1} MiB", peak_mib());

    let start = Instant::now();
    let mut writer =
        ArchiveWriter::create(Destination::Dir(dir.path().to_owned()), &encryption, source)?;
    let created = time::OffsetDateTime::now_utc();
    for i in 0..count {
        let mut tags = BTreeMap::new();
        if i % 2 == 0 {
            tags.insert("env".to_owned(), "prod".to_owned());
        }
        let record = SecretRecord {
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
        };
        writer.add_secret_version(&record)?;
    }
    let summary = writer.finish()?;
    let write_time = start.elapsed();
    println!(
        "write: {:.2} s, {} bytes ({:.1} MiB), peak memory so far {:.1} MiB",
        write_time.as_secs_f64(),
        summary.bytes,
        summary.bytes as f64 / 1_048_576.0,
        peak_mib()
    );

    let path = summary.path.ok_or("the archive has no path")?;
    let start = Instant::now();
    let reader = ArchiveReader::open(&path, &decryption)?;
    println!(
        "verify: {:.2} s, {} entries checked, peak memory so far {:.1} MiB",
        start.elapsed().as_secs_f64(),
        reader.manifest().entries.len(),
        peak_mib()
    );

    let start = Instant::now();
    let mut seen = 0usize;
    for entry in reader.entries() {
        entry?;
        seen += 1;
    }
    println!(
        "read entries: {:.2} s, {seen} entries, peak memory so far {:.1} MiB",
        start.elapsed().as_secs_f64(),
        peak_mib()
    );
    let peak = peak_mib();
    println!("peak memory (VmHWM): {peak:.1} MiB");
    if peak >= 100.0 {
        return Err(format!("peak memory {peak:.1} MiB is over 100 MiB").into());
    }
    Ok(())
}

/// VmHWM (peak resident memory) of this process, in MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
