//! `coldvault list DEST`: the archives at a destination (a folder, a Blob Storage container
//! or an S3 bucket, with a prefix), per vault, newest first, with time, size and item
//! counts — from the names and the small non-secret sidecars, never opening an archive, so
//! no identity is needed.

use std::sync::Arc;

use serde::Serialize;

use std::io::Write;

use super::destination::dest_error;
pub use crate::cli::list::ListArgs;
use crate::dest::listing::{ArchiveListing, format_time, list_archives};
use crate::dest::local::LocalFolder;
use crate::dest::{ObjectStore, RemoteOptions, is_remote, open_remote};
use crate::error::{CliError, ExitCode};
use crate::output::progress::emit_json;
use crate::output::table::human_bytes;

/// Opens a DEST argument: a folder or a remote destination (its prefix; an object name at
/// the end is refused).
pub fn open_dest(dest: &std::path::Path) -> Result<Arc<dyn ObjectStore>, CliError> {
    let text = dest.to_string_lossy();
    if is_remote(&text) {
        let options = RemoteOptions {
            azure_auth: std::env::var("COLDVAULT_OUTPUT_AUTH")
                .ok()
                .filter(|v| !v.is_empty()),
            ..Default::default()
        };
        let remote = open_remote(&text, &options).map_err(dest_error)?;
        if remote.object.is_some() {
            return Err(CliError::usage(format!(
                "{}: names one archive, not a place holding archives",
                crate::dest::redact_url(&text)
            ))
            .with_hint("give the container or bucket, with the prefix the archives are under"));
        }
        return Ok(remote.store);
    }
    if !dest.is_dir() {
        return Err(CliError::failed(format!(
            "{}: no such folder",
            dest.display()
        )));
    }
    Ok(Arc::new(LocalFolder::new(dest)))
}

/// The archives at `store` for the vaults asked (all when none).
pub async fn archives(
    store: &dyn ObjectStore,
    vaults: &[String],
) -> Result<Vec<ArchiveListing>, CliError> {
    let mut found = list_archives(store).await.map_err(dest_error)?;
    if !vaults.is_empty() {
        found.retain(|a| vaults.iter().any(|v| v.eq_ignore_ascii_case(&a.vault)));
    }
    Ok(found)
}

#[derive(Serialize)]
struct ListDocument<'a> {
    destination: String,
    archives: &'a [ArchiveListing],
}

/// Runs `coldvault list`.
pub async fn run(args: ListArgs) -> Result<ExitCode, CliError> {
    let store = open_dest(&args.dest)?;
    let found = archives(store.as_ref(), &args.vaults).await?;
    if args.json {
        emit_json(
            "archives",
            &ListDocument {
                destination: store.display(),
                archives: &found,
            },
        );
        return Ok(ExitCode::Ok);
    }
    if found.is_empty() {
        eprintln!("no archives at {}", store.display());
        return Ok(ExitCode::Ok);
    }
    let mut out = crate::output::stdout::report();
    let mut vault = None;
    for archive in &found {
        if vault != Some(&archive.vault) {
            let _ = writeln!(out, "{}", archive.vault);
            vault = Some(&archive.vault);
        }
        let counts = archive.counts.map_or_else(
            || "-".to_owned(),
            |c| {
                format!(
                    "{} secrets, {} keys, {} certificates",
                    c.secrets, c.keys, c.certificates
                )
            },
        );
        let _ = writeln!(
            out,
            "  {}  {:>10}  {counts}{}  {}",
            format_time(archive.created),
            human_bytes(archive.bytes),
            if archive.signed { "  signed" } else { "" },
            archive.name
        );
    }
    Ok(ExitCode::Ok)
}
