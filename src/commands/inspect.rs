//! `coldvault inspect`: what an archive holds (kinds, names, versions, sizes, skipped and
//! deleted items), as a table or one `--json` document. Never values: it prints the
//! manifest, which holds none. The archive is fully verified first, so what is shown is
//! what is there.

use serde::Serialize;

use crate::archive::{EntryType, Kind, Manifest, ManifestEntry};
pub use crate::cli::inspect::InspectArgs;
use crate::error::{CliError, ExitCode};
use crate::output::table::{Table, human_bytes};

/// The `--json` document's body.
#[derive(Serialize)]
struct InspectDocument<'a> {
    archive: String,
    bytes: u64,
    manifest: &'a Manifest,
    /// A KV archive's secrets: paths, versions and states, `custom_metadata` keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kv_secrets: Vec<KvSecretView<'a>>,
}

/// One KV secret as `inspect` shows it: never a value, and of `custom_metadata` only the
/// keys.
#[derive(Serialize)]
struct KvSecretView<'a> {
    path: &'a str,
    current_version: u64,
    oldest_version: u64,
    max_versions: u64,
    cas_required: bool,
    versions: Vec<KvVersionView>,
    custom_metadata_keys: Vec<&'a str>,
}

#[derive(Serialize)]
struct KvVersionView {
    version: u64,
    /// `live`, `deleted` or `destroyed`.
    state: &'static str,
}

fn kv_state(version: &crate::kv::KvVersion) -> &'static str {
    if version.destroyed {
        "destroyed"
    } else if version.deleted.is_some() {
        "deleted"
    } else {
        "live"
    }
}

fn kv_views(secrets: &[crate::kv::KvSecret]) -> Vec<KvSecretView<'_>> {
    secrets
        .iter()
        .map(|s| KvSecretView {
            path: &s.path,
            current_version: s.current_version,
            oldest_version: s.oldest_version,
            max_versions: s.max_versions,
            cas_required: s.cas_required,
            versions: s
                .versions
                .iter()
                .map(|v| KvVersionView {
                    version: v.version,
                    state: kv_state(v),
                })
                .collect(),
            custom_metadata_keys: s.custom_metadata.keys().map(String::as_str).collect(),
        })
        .collect()
}

/// Runs `coldvault inspect`.
pub fn run(args: InspectArgs) -> Result<ExitCode, CliError> {
    let archive = super::destination::check_archive(&args.archive)?;
    let decryption = args.keys.resolve()?;
    let reader = archive.open(&decryption)?;
    let manifest = reader.manifest();
    if args.json {
        let body = InspectDocument {
            archive: args.archive.display().to_string(),
            bytes: reader.stats().file_bytes,
            manifest,
            kv_secrets: kv_views(reader.kv_secrets()),
        };
        crate::output::print_json("inspect", &body).map_err(CliError::stdout)?;
    } else {
        let mut text = render(
            &args.archive.display().to_string(),
            reader.stats().file_bytes,
            manifest,
        );
        if manifest.is_kv() {
            text.push_str(&render_kv(reader.kv_secrets()));
        }
        crate::output::stdout::print(&text).map_err(CliError::stdout)?;
    }
    Ok(ExitCode::Ok)
}

/// The human report: a summary block, the entries, then skipped and deleted items.
fn render(archive: &str, bytes: u64, manifest: &Manifest) -> String {
    let mut out = String::new();
    let counts = manifest.counts;
    let time = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    let mut summary = Table::new(["archive", &format!("{archive} ({})", human_bytes(bytes))]);
    summary.row([
        "format".to_owned(),
        format!(
            "{} v{}, written by {} {}",
            manifest.format, manifest.format_version, manifest.tool.name, manifest.tool.version
        ),
    ]);
    summary.row(["created".to_owned(), time(manifest.created)]);
    if let Some(run) = manifest.run {
        summary.row([
            "run".to_owned(),
            format!("{} to {}", time(run.started), time(run.finished)),
        ]);
    }
    summary.row([
        "source".to_owned(),
        format!("{} ({})", manifest.source.vault, manifest.source.url),
    ]);
    let contents = if manifest.is_kv() {
        format!(
            "{}, {} ({} soft-deleted, {} destroyed: no data) in {} entries",
            plural(counts.kv_secrets, "KV secret"),
            plural(counts.kv_versions, "version"),
            counts.kv_deleted_versions,
            counts.kv_destroyed_versions,
            counts.entries
        )
    } else {
        format!(
            "{}, {}, {} in {} entries; {} skipped, {} deleted",
            plural(counts.secrets, "secret"),
            plural(counts.keys, "key"),
            plural(counts.certificates, "certificate"),
            counts.entries,
            counts.skipped,
            counts.deleted
        )
    };
    summary.row(["contents".to_owned(), contents]);
    out.push_str(&summary.render());

    if !manifest.entries.is_empty() {
        let mut table = Table::new(["KIND", "NAME", "TYPE", "VERSION", "SIZE"]).align_right(4);
        let mut sorted: Vec<&ManifestEntry> = manifest.entries.iter().collect();
        sorted.sort_by(|a, b| (a.kind, &a.name, &a.path).cmp(&(b.kind, &b.name, &b.path)));
        for entry in sorted {
            table.row([
                entry.kind.to_string(),
                entry.name.clone(),
                entry.entry_type.as_str().to_owned(),
                version_cell(entry),
                human_bytes(entry.size),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !manifest.skipped.is_empty() {
        let mut table = Table::new(["SKIPPED", "NAME", "REASON"]);
        for item in &manifest.skipped {
            table.row([
                item.kind.to_string(),
                item.name.clone(),
                item.reason.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !manifest.deleted.is_empty() {
        let mut table = Table::new(["DELETED", "NAME", "DELETED ON", "PURGE"]);
        for item in &manifest.deleted {
            table.row([
                item.kind.to_string(),
                item.name.clone(),
                item.deleted_on.map(time).unwrap_or_default(),
                item.scheduled_purge.map(time).unwrap_or_default(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !manifest.recaptured.is_empty() {
        let mut table = Table::new(["RECAPTURED", "NAME", "FIRST SEEN", "CAPTURED"]);
        for item in &manifest.recaptured {
            table.row([
                item.kind.to_string(),
                item.name.clone(),
                item.first_version.clone(),
                item.captured_version.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

/// A KV archive's secrets: path, versions with their states, `custom_metadata` keys.
fn render_kv(secrets: &[crate::kv::KvSecret]) -> String {
    if secrets.is_empty() {
        return String::new();
    }
    let mut table = Table::new(["KV SECRET", "CURRENT", "VERSIONS", "CUSTOM METADATA KEYS"]);
    for secret in secrets {
        let versions: Vec<String> = secret
            .versions
            .iter()
            .map(|v| match kv_state(v) {
                "live" => v.version.to_string(),
                state => format!("{} {state}", v.version),
            })
            .collect();
        let keys: Vec<&str> = secret.custom_metadata.keys().map(String::as_str).collect();
        table.row([
            secret.path.clone(),
            secret.current_version.to_string(),
            if versions.is_empty() {
                "-".to_owned()
            } else {
                versions.join(", ")
            },
            keys.join(", "),
        ]);
    }
    format!("\n{}", table.render())
}

fn version_cell(entry: &ManifestEntry) -> String {
    let mut cell = match (&entry.version, entry.versions.len()) {
        (_, n) if n > 1 && entry.entry_type == EntryType::Backup => format!("{n} versions"),
        (Some(v), _) => v.clone(),
        (None, 1) => entry.versions[0].clone(),
        (None, _) => "-".to_owned(),
    };
    if entry.current && entry.kind == Kind::Secret {
        cell.push_str(" (current)");
    }
    cell
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
