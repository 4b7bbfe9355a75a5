//! `coldvault diff`: what differs between an archive and a live vault.
//!
//! Items in scope fall into `missing` (in the archive, neither live nor soft-deleted),
//! `soft-deleted` (in the archive, recoverable in the vault), `changed` (value, content type,
//! tags or attributes differ — compared by digest, values never shown) and `extra` (live, not
//! in the archive). Exit 0 when there is no difference, 1 when there is one.

use std::path::PathBuf;

use serde::Serialize;

use super::connect_args::{ConnectArgs, connect, parse_vault, vault_error};
use super::keys_args::DecryptArgs;
use super::restore::{inspect_all, open_archive};
use super::restore_plan::compare;
use super::scope::{Scope, ScopeArgs};
use crate::archive::Kind;
use crate::error::{CliError, ExitCode};
use crate::output::print_json;
use crate::output::table::Table;

/// Arguments of `coldvault diff`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  coldvault diff prod-kv-20260601T000000Z.tar.zst.age --vault prod-kv -i key.txt
  coldvault diff ARCHIVE --vault prod-kv -i key.txt --include secrets --json

Exit codes: 0 no difference, 1 different (or failed: then an error is printed on stderr), \
2 usage, 4 archive failed verification.")]
pub struct DiffArgs {
    /// The archive to compare (NAME-YYYYMMDDTHHMMSSZ.tar.zst.age).
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,

    /// The vault to compare with: a name (NAME.vault.azure.net) or a full URL.
    #[arg(long = "vault", value_name = "NAME|URL")]
    pub vault: String,

    #[command(flatten)]
    pub decryption: DecryptArgs,

    #[command(flatten)]
    pub signers: super::destination::SignerArgs,

    #[command(flatten)]
    pub scope: ScopeArgs,

    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How an item differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum State {
    Missing,
    SoftDeleted,
    Changed,
    Extra,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Missing => "missing",
            State::SoftDeleted => "soft-deleted",
            State::Changed => "changed",
            State::Extra => "extra",
        }
    }
}

#[derive(Debug, Serialize)]
struct Difference {
    state: State,
    kind: Kind,
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changed: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    missing: u64,
    soft_deleted: u64,
    changed: u64,
    extra: u64,
    identical: u64,
}

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

    let contents = open_archive(&args.archive, &decryption, &scope).await?;
    let vault = connect(&target, &options).await?;
    let listing = super::restore_plan::list_target(&vault, &scope)
        .await
        .map_err(|e| vault_error(&name, &e))?;
    for note in &listing.notes {
        eprintln!("{name}: {note}");
    }
    let views = inspect_all(&vault, &contents, &listing, 32).await;

    let mut report = DiffReport {
        vault: name.clone(),
        url: target.as_str().to_owned(),
        archive: args.archive.clone(),
        source_vault: contents.source_vault.clone(),
        identical: true,
        counts: Counts::default(),
        items: Vec::new(),
    };
    let mut archived = std::collections::HashSet::new();
    for (item, view) in contents.items.iter().zip(&views) {
        let key = (item.kind, item.name.to_ascii_lowercase());
        archived.insert(key.clone());
        let difference = |state, changed, reason| Difference {
            state,
            kind: item.kind,
            name: item.name.clone(),
            changed,
            reason,
        };
        match view {
            Some(Ok(view)) => match compare(item, view) {
                Some(changed) if changed.is_empty() => report.counts.identical += 1,
                Some(changed) => report.items.push(difference(State::Changed, changed, None)),
                None => report.items.push(difference(
                    State::Changed,
                    Vec::new(),
                    Some("the archive holds nothing to compare with".to_owned()),
                )),
            },
            Some(Err(reason)) => report.items.push(difference(
                State::Changed,
                Vec::new(),
                Some(format!("could not be read: {reason}")),
            )),
            None if listing.deleted.contains_key(&key) => {
                report
                    .items
                    .push(difference(State::SoftDeleted, Vec::new(), None))
            }
            None => report
                .items
                .push(difference(State::Missing, Vec::new(), None)),
        }
    }
    let mut extra: Vec<Difference> = listing
        .live
        .iter()
        .filter(|(key, props)| {
            !archived.contains(*key)
                && scope.includes(super::restore_plan::scope_kind(key.0), props.name())
        })
        .map(|((kind, _), props)| Difference {
            state: State::Extra,
            kind: *kind,
            name: props.name().to_owned(),
            changed: Vec::new(),
            reason: None,
        })
        .collect();
    report.items.append(&mut extra);
    report.items.sort_by(|a, b| {
        (a.state, a.kind, a.name.to_ascii_lowercase()).cmp(&(
            b.state,
            b.kind,
            b.name.to_ascii_lowercase(),
        ))
    });
    for item in &report.items {
        match item.state {
            State::Missing => report.counts.missing += 1,
            State::SoftDeleted => report.counts.soft_deleted += 1,
            State::Changed => report.counts.changed += 1,
            State::Extra => report.counts.extra += 1,
        }
    }
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
