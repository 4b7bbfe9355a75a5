//! `coldvault verify`: decrypts the whole archive offline and checks every rule of
//! `docs/FORMAT.md`. Exit 0 when all hold; exit 4 naming the first broken one, or when the
//! archive holds fewer items than `--expect-items`; exit 1 when the archive cannot be checked
//! at all (no matching identity, unreadable file). An archive without a single item is
//! valid (an empty vault's true copy) but is warned about on stderr: a nightly job that
//! stores nothing must not pass unnoticed.

use serde::Serialize;

use crate::archive::Counts;
pub use crate::cli::verify::VerifyArgs;
use crate::error::{CliError, ExitCode};
use crate::output::table::human_bytes;

/// The `--json` document's body.
#[derive(Serialize)]
struct VerifyDocument {
    archive: String,
    ok: bool,
    format_version: u64,
    bytes: u64,
    entry_bytes: u64,
    counts: Counts,
}

/// Runs `coldvault verify`.
pub fn run(args: VerifyArgs) -> Result<ExitCode, CliError> {
    let archive = super::destination::check_archive(&args.archive)?;
    args.signers.check(&archive)?;
    let decryption = args.keys.resolve()?;
    let reader = archive.open(&decryption)?;
    let manifest = reader.manifest();
    let stats = reader.stats();
    let c = manifest.counts;
    if manifest.is_kv() {
        return report_kv(&args, manifest, stats);
    }
    let items = c.secrets + c.keys + c.certificates;
    if let Some(expected) = args.expect_items
        && items < expected
    {
        return Err(CliError::verification(format!(
            "{}: holds {} ({}, {}, {}), fewer than --expect-items {expected}",
            args.archive.display(),
            plural(items, "item"),
            plural(c.secrets, "secret"),
            plural(c.keys, "key"),
            plural(c.certificates, "certificate"),
        ))
        .with_hint(
            "the backup captured less than expected: read its summary, or \
             `coldvault inspect` the archive for the items not captured and why",
        ));
    }
    if items == 0 {
        eprintln!(
            "coldvault: warning: {}: the archive holds no item (0 secrets, 0 keys, 0 certificates{})",
            args.archive.display(),
            if c.skipped > 0 {
                format!("; {} not captured, named in the manifest", c.skipped)
            } else {
                String::new()
            }
        );
    }
    if args.json {
        let body = VerifyDocument {
            archive: args.archive.display().to_string(),
            ok: true,
            format_version: manifest.format_version,
            bytes: stats.file_bytes,
            entry_bytes: stats.entry_bytes,
            counts: manifest.counts,
        };
        crate::output::print_json("verify", &body).map_err(CliError::stdout)?;
    } else {
        let line = format!(
            "ok: {}: {} entries ({}, {}, {}), {} of entry data checked against format v{}\n",
            args.archive.display(),
            c.entries,
            plural(c.secrets, "secret"),
            plural(c.keys, "key"),
            plural(c.certificates, "certificate"),
            human_bytes(stats.entry_bytes),
            manifest.format_version
        );
        crate::output::stdout::print(&line).map_err(CliError::stdout)?;
    }
    Ok(ExitCode::Ok)
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `verify`'s answer for a KV archive (format version 2): the same checks were made (every
/// entry's size and SHA-256, every document's schema, live versions with data and deleted
/// and destroyed ones without); the counts are KV secrets and their versions.
fn report_kv(
    args: &VerifyArgs,
    manifest: &crate::archive::Manifest,
    stats: crate::archive::ReadStats,
) -> Result<ExitCode, CliError> {
    let c = manifest.counts;
    if let Some(expected) = args.expect_items
        && c.kv_secrets < expected
    {
        return Err(CliError::verification(format!(
            "{}: holds {}, fewer than --expect-items {expected}",
            args.archive.display(),
            plural(c.kv_secrets, "KV secret"),
        ))
        .with_hint("the backup captured less than expected: `coldvault inspect` the archive"));
    }
    if c.kv_secrets == 0 {
        eprintln!(
            "coldvault: warning: {}: the archive holds no KV secret",
            args.archive.display()
        );
    }
    if args.json {
        let body = VerifyDocument {
            archive: args.archive.display().to_string(),
            ok: true,
            format_version: manifest.format_version,
            bytes: stats.file_bytes,
            entry_bytes: stats.entry_bytes,
            counts: c,
        };
        crate::output::print_json("verify", &body).map_err(CliError::stdout)?;
    } else {
        let line = format!(
            "ok: {}: {} entries ({}, {}: {} soft-deleted, {} destroyed), {} of entry data \
             checked against format v{}\n",
            args.archive.display(),
            c.entries,
            plural(c.kv_secrets, "KV secret"),
            plural(c.kv_versions, "version"),
            c.kv_deleted_versions,
            c.kv_destroyed_versions,
            human_bytes(stats.entry_bytes),
            manifest.format_version
        );
        crate::output::stdout::print(&line).map_err(CliError::stdout)?;
    }
    Ok(ExitCode::Ok)
}
