//! `coldvault diff`: what differs between an archive and a live vault (compared by
//! `crate::engine::diff`; the archive read in one decrypting pass, values reduced to digests).
//!
//! Items in scope fall into `missing` (in the archive, neither live nor soft-deleted),
//! `soft-deleted` (in the archive, recoverable in the vault), `changed` (value, content type,
//! tags or attributes differ — compared by digest, values never shown) and `extra` (live, not
//! in the archive). Exit 0 when there is no difference, 1 when there is one.

use std::path::PathBuf;

use serde::Serialize;

use super::connect_args::{connect, parse_vault, vault_error};
use super::restore::open_archive;
use super::restore_plan::{inspect_all, list_target};
use super::scope::Scope;
pub use crate::cli::diff::DiffArgs;
use crate::engine::diff::{Counts, Difference, differences};
use crate::error::{CliError, ExitCode};
use crate::output::print_json;
use crate::output::table::Table;

#[derive(Debug, Serialize)]
struct DiffReport {
    vault: String,
    url: String,
    archive: PathBuf,
    source_vault: String,
    identical: bool,
    counts: Counts,
    items: Vec<Difference>,
}

/// Runs `coldvault diff`.
pub async fn run(args: DiffArgs) -> Result<ExitCode, CliError> {
    let target = parse_vault(&args.vault)?;
    let archive = super::destination::check_archive(&args.archive)?;
    args.signers.check(&archive)?;
    let decryption = args.decryption.resolve()?;
    let scope = Scope::resolve(&args.scope)?;
    let options = args.connect.options();
    let name = target.name().to_owned();

    let mut contents = open_archive(&args.archive, &decryption, &scope).await?;
    // A diff writes nothing: the manifest and the reader go now.
    contents.release_feed();
    let vault = connect(&target, &options).await?;
    let listing = list_target(&vault, &scope)
        .await
        .map_err(|e| vault_error(&name, &e))?;
    for note in &listing.notes {
        eprintln!("{name}: {note}");
    }
    let views = inspect_all(&vault, &contents.items, &listing, 32).await;

    let mut report = DiffReport {
        vault: name.clone(),
        url: target.as_str().to_owned(),
        archive: args.archive.clone(),
        source_vault: contents.source_vault.clone(),
        identical: true,
        counts: Counts::default(),
        items: Vec::new(),
    };
    let (items, counts) = differences(&contents.items, &views, &listing, &scope);
    report.items = items;
    report.counts = counts;
    report.identical = report.items.is_empty();

    if args.json {
        print_json("diff", &report).map_err(CliError::stdout)?;
    } else {
        if !report.items.is_empty() {
            let mut table = Table::new(["STATE", "KIND", "NAME", "DETAIL"]);
            for item in &report.items {
                let detail = match (&item.reason, item.changed.is_empty()) {
                    (Some(reason), _) => reason.clone(),
                    (None, false) => item.changed.join(", "),
                    (None, true) => String::new(),
                };
                table.row([
                    item.state.as_str().to_owned(),
                    item.kind.as_str().to_owned(),
                    item.name.clone(),
                    detail,
                ]);
            }
            crate::output::stdout::print(&table.render()).map_err(CliError::stdout)?;
        }
        let c = &report.counts;
        eprintln!(
            "{name}: {} missing, {} soft-deleted, {} changed, {} extra, {} identical",
            c.missing, c.soft_deleted, c.changed, c.extra, c.identical
        );
    }
    Ok(if report.identical {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}
