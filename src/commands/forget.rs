//! `coldvault forget DEST --keep-…`: drops the archives a retention policy does not keep,
//! with restic's semantics ([`crate::dest::retention`]), per vault. `--dry-run` prints the
//! decision and changes nothing. An archive under a retention lock or legal hold is
//! reported and left alone, never forced. An archive goes with its sidecar and signature.

use std::io::Write;

use serde::Serialize;

use super::destination::dest_error;
use super::list::{archives, open_dest};
pub use crate::cli::forget::ForgetArgs;
use crate::dest::listing::{SIDECAR_SUFFIX, SIGNATURE_SUFFIX, format_time};
use crate::dest::retention::{Policy, apply};
use crate::dest::{DestError, ObjectStore};
use crate::error::{CliError, ExitCode};
use crate::output::progress::emit_json;

/// One archive's fate.
#[derive(Debug, Serialize)]
struct Fate {
    vault: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created: time::OffsetDateTime,
    /// `keep`, `remove` (done, or to do under --dry-run), `locked` (kept: a lock refused
    /// removal), `failed`.
    action: &'static str,
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct ForgetDocument<'a> {
    destination: String,
    dry_run: bool,
    archives: &'a [Fate],
}

/// Runs `coldvault forget`.
pub async fn run(args: ForgetArgs) -> Result<ExitCode, CliError> {
    let policy = Policy {
        last: args.keep_last.unwrap_or(0),
        hourly: args.keep_hourly.unwrap_or(0),
        daily: args.keep_daily.unwrap_or(0),
        weekly: args.keep_weekly.unwrap_or(0),
        monthly: args.keep_monthly.unwrap_or(0),
        yearly: args.keep_yearly.unwrap_or(0),
    };
    if policy.is_empty() {
        return Err(
            CliError::usage("no policy: forget needs at least one --keep-* option").with_hint(
                "e.g. --keep-daily 7 --keep-weekly 4 --keep-monthly 12 (--dry-run first)",
            ),
        );
    }
    let store = open_dest(&args.dest)?;
    let found = archives(store.as_ref(), &args.vaults).await?;
    let mut fates = Vec::new();
    let mut start = 0;
    // `archives` groups by vault, newest first.
    while start < found.len() {
        let vault = &found[start].vault;
        let end = start
            + found[start..]
                .iter()
                .take_while(|a| &a.vault == vault)
                .count();
        let group = &found[start..end];
        let times: Vec<_> = group.iter().map(|a| a.created).collect();
        for decision in apply(&times, &policy) {
            let archive = &group[decision.index];
            let mut fate = Fate {
                vault: archive.vault.clone(),
                name: archive.name.clone(),
                created: archive.created,
                action: if decision.keep { "keep" } else { "remove" },
                reasons: decision.reasons,
            };
            if !decision.keep {
                remove(store.as_ref(), &archive.name, args.dry_run, &mut fate).await?;
            }
            fates.push(fate);
        }
        start = end;
    }
    let failed = fates.iter().filter(|f| f.action == "failed").count();
    if args.json {
        emit_json(
            "forget",
            &ForgetDocument {
                destination: store.display(),
                dry_run: args.dry_run,
                archives: &fates,
            },
        );
    } else {
        print_human(&fates, args.dry_run, &store.display());
    }
    if failed > 0 {
        eprintln!("coldvault: {failed} archives could not be removed (named above)");
        return Ok(ExitCode::Partial);
    }
    Ok(ExitCode::Ok)
}

/// Removes one archive (unless `dry_run`) and its sidecar and signature, checking its lock
/// first: a locked archive is kept and reported.
async fn remove(
    store: &dyn ObjectStore,
    name: &str,
    dry_run: bool,
    fate: &mut Fate,
) -> Result<(), CliError> {
    match store.locked_until(name).await {
        Ok(Some(until)) => {
            fate.action = "locked";
            fate.reasons
                .push(format!("locked until {until}: not removed"));
            return Ok(());
        }
        Ok(None) => {}
        Err(DestError::Http { status: 403, .. }) => {}
        Err(e) => return Err(dest_error(e)),
    }
    if dry_run {
        return Ok(());
    }
    match store.delete(name).await {
        Ok(()) => {
            for extra in [SIDECAR_SUFFIX, SIGNATURE_SUFFIX] {
                let _ = store.delete(&format!("{name}{extra}")).await;
            }
        }
        Err(DestError::Locked { until, .. }) => {
            fate.action = "locked";
            fate.reasons.push(format!(
                "locked{}: not removed",
                until.map(|u| format!(" until {u}")).unwrap_or_default()
            ));
        }
        Err(e) => {
            fate.action = "failed";
            fate.reasons.push(e.to_string());
        }
    }
    Ok(())
}

fn print_human(fates: &[Fate], dry_run: bool, destination: &str) {
    let mut out = crate::output::stdout::report();
    if fates.is_empty() {
        eprintln!("no archives at {destination}");
        return;
    }
    let mut vault = None;
    for fate in fates {
        if vault != Some(&fate.vault) {
            let group: Vec<&Fate> = fates.iter().filter(|f| f.vault == fate.vault).collect();
            let kept = group.iter().filter(|f| f.action != "remove").count();
            let removed = group.len() - kept;
            let verb = if dry_run { "would remove" } else { "removed" };
            let _ = writeln!(out, "{}: keep {kept}, {verb} {removed}", fate.vault);
            vault = Some(&fate.vault);
        }
        let action = match (fate.action, dry_run) {
            ("remove", true) => "would remove",
            ("remove", false) => "removed",
            (other, _) => other,
        };
        let why = if fate.reasons.is_empty() {
            String::new()
        } else {
            format!("  ({})", fate.reasons.join(", "))
        };
        let _ = writeln!(
            out,
            "  {action:<12}  {}  {}{why}",
            format_time(fate.created),
            fate.name
        );
    }
}
