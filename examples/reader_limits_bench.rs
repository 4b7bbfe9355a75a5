//! Builds hostile archives that cost almost nothing to make and, under loose limits, a lot to
//! open, then measures what `coldvault verify` spends on each before it refuses: peak
//! resident memory and wall time, from `/usr/bin/time -v`. Each archive is opened twice: with
//! the limits raised to the reader's former defaults (1 GiB of manifest, 10 million
//! entries, 64 GiB in all: "before"), and with today's defaults ("after").
//!
//! The archives, written to a temporary folder and removed at the end:
//! - `manifest-1g-spaces`: a `manifest.json` of 1 GiB of spaces (compresses to almost
//!   nothing);
//! - `manifest-1g-records`: a `manifest.json` of 1 GiB of well-formed entry records, each
//!   with its own SHA-256 (about 2.4 million records), the manifest that must be parsed and
//!   held whole;
//! - `entries-10m`: ten million empty entries;
//! - `manifest-64m-versions`: a `manifest.json` of 64 MiB, under the default bound, whose
//!   one entry lists 16 million one-letter versions (random letters, about 6:1 compressed): the costliest manifest per byte (each
//!   4-byte `"a",` becomes a `String`);
//! - `longname-1g`: a GNU long name of 1 GiB, compressing about 60:1 (under the ratio
//!   bound), which the tar crate would read whole into memory before handing out its entry.
//!
//! Run: `cargo build --bin coldvault --example reader_limits_bench && \
//! target/debug/examples/reader_limits_bench [CASE…]` (the `coldvault` binary is looked up
//! beside the example's folder, or in `COLDVAULT_BIN`). Building the archives takes a few
//! minutes and about 300 MB of disk.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use age::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

#[path = "common/mod.rs"]
mod common;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The limits the reader had before they were derived from Key Vault's.
const FORMER_DEFAULTS: [&str; 8] = [
    "--max-manifest-size",
    "1GiB",
    "--max-entries",
    "10000000",
    "--max-entry-size",
    "64MiB",
    "--max-total-size",
    "64GiB",
];

const MARKER: &[u8] = br#"{"format":"coldvault-archive","format_version":1}"#;

const GIB: u64 = 1 << 30;

fn main() -> Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let binary = common::coldvault_binary()?;
    let dir = tempfile::tempdir()?;
    let identity = age::x25519::Identity::generate();
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(
        &identity_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )?;
    let recipient = identity.to_public();

    type Build = fn(&mut dyn Write) -> io::Result<()>;
    let cases: [(&str, Build); 5] = [
        ("manifest-1g-spaces", manifest_of_spaces),
        ("manifest-1g-records", manifest_of_records),
        ("entries-10m", ten_million_entries),
        ("manifest-64m-versions", manifest_of_versions),
        ("longname-1g", long_name),
    ];
    println!("coldvault: {}", binary.display());
    println!(
        "{:<22} {:>10} {:>8} | {:>12} {:>9} | {:>12} {:>9} | refusal (after)",
        "archive", "file", "build", "before RSS", "time", "after RSS", "time"
    );
    for (name, build) in cases {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let path = dir.path().join(format!("{name}.tar.zst.age"));
        let started = Instant::now();
        seal(&path, &recipient, build)?;
        let built = started.elapsed().as_secs_f64();
        let size = std::fs::metadata(&path)?.len();
        let before = measure(&binary, &path, &identity_file, &FORMER_DEFAULTS)?;
        let after = measure(&binary, &path, &identity_file, &[])?;
        println!(
            "{:<22} {:>10} {:>7.1}s | {:>9} MiB {:>8.2}s | {:>9} MiB {:>8.2}s | {}",
            name,
            human(size),
            built,
            before.peak_kib / 1024,
            before.seconds,
            after.peak_kib / 1024,
            after.seconds,
            after.error
        );
        println!("{:<22} before: {}", "", before.error);
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Writes a tar stream through zstd and age into `path`, the writer's layer order.
fn seal(
    path: &Path,
    recipient: &age::x25519::Recipient,
    build: fn(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))?;
    let sealed = encryptor.wrap_output(file)?;
    let mut compressed = zstd::Encoder::new(sealed, 3)?;
    {
        let mut tar = BufWriter::with_capacity(1 << 20, &mut compressed);
        build(&mut tar)?;
        tar.flush()?;
    }
    let sealed = compressed.finish()?;
    sealed.finish()?.flush()?;
    Ok(())
}

fn header(path: &str, size: u64) -> io::Result<[u8; 512]> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut block = [0u8; 512];
    block.copy_from_slice(header.as_bytes());
    Ok(block)
}

/// Writes one entry, its data padded to the block.
fn entry(out: &mut dyn Write, path: &str, data: &[u8]) -> io::Result<()> {
    out.write_all(&header(path, data.len() as u64)?)?;
    out.write_all(data)?;
    pad(out, data.len() as u64)
}

fn pad(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let rest = (512 - size % 512) % 512;
    out.write_all(&vec![0u8; rest as usize])
}

fn end(out: &mut dyn Write) -> io::Result<()> {
    out.write_all(&[0u8; 1024])
}

fn manifest_of_spaces(out: &mut dyn Write) -> io::Result<()> {
    entry(out, "coldvault-archive.json", MARKER)?;
    out.write_all(&header("manifest.json", GIB)?)?;
    out.write_all(b"{")?;
    let spaces = vec![b' '; 1 << 20];
    let mut left = GIB - 2;
    while left > 0 {
        let n = left.min(spaces.len() as u64) as usize;
        out.write_all(&spaces[..n])?;
        left -= n as u64;
    }
    out.write_all(b"}")?;
    end(out)
}

fn manifest_of_records(out: &mut dyn Write) -> io::Result<()> {
    entry(out, "coldvault-archive.json", MARKER)?;
    out.write_all(&header("manifest.json", GIB)?)?;
    let head = br#"{"format":"coldvault-archive","format_version":1,"tool":{"name":"coldvault","version":"0.1.0"},"created":"2026-06-01T00:00:00Z","source":{"vault":"v","url":"https://v.vault.azure.net/"},"counts":{"secrets":0,"keys":0,"certificates":0,"entries":0,"skipped":0,"deleted":0},"entries":["#;
    out.write_all(head)?;
    let mut written = head.len() as u64;
    let tail = b"],\"skipped\":[],\"deleted\":[]}";
    let mut i = 0u64;
    loop {
        let digest = Sha256::digest(i.to_le_bytes());
        let record = format!(
            r#"{}{{"path":"secrets/s{i}/versions/{v}.json","type":"secret-version","kind":"secret","name":"s{i}","version":"{v}","current":true,"attributes":{{"enabled":true,"created":"2026-03-04T05:06:07Z","updated":"2026-03-04T05:06:07Z"}},"tags":{{"env":"prod"}},"content_type":"text/plain","size":259,"sha256":"{h}"}}"#,
            if i == 0 { "" } else { "," },
            v = hex::encode(&digest[..16]),
            h = hex::encode(digest),
        );
        if written + record.len() as u64 + tail.len() as u64 > GIB {
            break;
        }
        out.write_all(record.as_bytes())?;
        written += record.len() as u64;
        i += 1;
    }
    // Spaces up to the declared size: JSON allows them before the closing brackets.
    let fill = GIB - written - tail.len() as u64;
    out.write_all(&vec![b' '; fill as usize])?;
    out.write_all(tail)?;
    end(out)
}

fn manifest_of_versions(out: &mut dyn Write) -> io::Result<()> {
    entry(out, "coldvault-archive.json", MARKER)?;
    let size = 64u64 << 20;
    out.write_all(&header("manifest.json", size)?)?;
    let head = br#"{"format":"coldvault-archive","format_version":1,"tool":{"name":"coldvault","version":"0.1.0"},"created":"2026-06-01T00:00:00Z","source":{"vault":"v","url":"https://v.vault.azure.net/"},"counts":{"secrets":0,"keys":0,"certificates":0,"entries":0,"skipped":0,"deleted":0},"entries":[{"path":"keys/k/backup.bin","type":"backup","kind":"key","name":"k","size":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","versions":["a""#;
    let tail = b"]}],\"skipped\":[],\"deleted\":[]}";
    out.write_all(head)?;
    let mut written = head.len() as u64;
    // Pseudo-random letters keep zstd under the ratio bound.
    let count = (size - written - tail.len() as u64) / 4;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = Vec::with_capacity(4 << 16);
    let mut left = count;
    while left > 0 {
        chunk.clear();
        for _ in 0..left.min(1 << 16) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&[b',', b'"', b'a' + (state % 26) as u8, b'"']);
        }
        out.write_all(&chunk)?;
        left -= (chunk.len() / 4) as u64;
    }
    written += count * 4;
    out.write_all(&vec![b' '; (size - written - tail.len() as u64) as usize])?;
    out.write_all(tail)?;
    end(out)
}

fn ten_million_entries(out: &mut dyn Write) -> io::Result<()> {
    entry(out, "coldvault-archive.json", MARKER)?;
    for i in 0..10_000_000u64 {
        out.write_all(&header(&format!("keys/k{i}/policy.json"), 0)?)?;
    }
    end(out)
}

fn long_name(out: &mut dyn Write) -> io::Result<()> {
    entry(out, "coldvault-archive.json", MARKER)?;
    let mut header = tar::Header::new_gnu();
    header
        .as_gnu_mut()
        .ok_or_else(|| io::Error::other("not gnu"))?
        .name[..13]
        .copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(GIB);
    header.set_mode(0o644);
    header.set_cksum();
    out.write_all(header.as_bytes())?;
    // One pseudo-random letter in every 256 keeps zstd near 60:1, under the ratio bound.
    let mut chunk = vec![b'a'; 1 << 20];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..(GIB >> 20) {
        for i in (0..chunk.len()).step_by(256) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk[i] = b'a' + (state % 26) as u8;
        }
        out.write_all(&chunk)?;
    }
    entry(out, "secrets/x/backup.bin", b"x")?;
    end(out)
}

struct Measured {
    peak_kib: u64,
    seconds: f64,
    error: String,
}

/// Runs `coldvault verify` under `/usr/bin/time -v`.
fn measure(binary: &Path, archive: &Path, identity: &Path, flags: &[&str]) -> Result<Measured> {
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary)
        .arg("verify")
        .arg(archive)
        .arg("-i")
        .arg(identity)
        .args(flags)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let peak_kib = field("Maximum resident set size (kbytes):")
        .and_then(|v| v.parse().ok())
        .ok_or("no peak memory in /usr/bin/time's output")?;
    let elapsed = field("Elapsed (wall clock) time (h:mm:ss or m:ss):").unwrap_or_default();
    let seconds = elapsed.split(':').fold(0.0, |acc, part| {
        acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    });
    let error = stderr
        .lines()
        .find(|l| l.starts_with("coldvault: error: "))
        .map(|l| l.trim_start_matches("coldvault: error: ").to_owned())
        .unwrap_or_else(|| "(opened)".to_owned());
    Ok(Measured {
        peak_kib,
        seconds,
        error,
    })
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
