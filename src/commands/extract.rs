//! `coldvault extract`: writes an archive's plain secrets out for use without Azure, the one
//! command that writes values, and only where asked (`-o PATH`, or `-o -` for stdout).
//!
//! For each secret, the version that was current when captured (else the newest by
//! creation time) is written: as a dotenv file, a JSON object, or one file per secret in a
//! folder. Files are created with mode 0600 (folders 0700), through a temporary file and a
//! rename; nothing existing is replaced without `--force`, and even then only regular files
//! (a symbolic link is never written through). Secrets captured only as native backup blobs
//! have no plain value: they are named on stderr and the exit code is 3.

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use age::secrecy::ExposeSecret;
use age::secrecy::zeroize::Zeroizing;

use crate::archive::{EntryData, Kind, SecretRecord};
use crate::atomic_file::{self, AtomicFile, AtomicWriteError, Replace, TEMP_PREFIX, TEMP_SUFFIX};
pub use crate::cli::extract::{ExtractArgs, ExtractFormat};
use crate::error::{CliError, ExitCode};

/// Runs `coldvault extract`.
pub fn run(args: ExtractArgs) -> Result<ExitCode, CliError> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && args.format == ExtractFormat::Dir {
        return Err(CliError::usage("--format dir needs a folder, not -o -")
            .with_hint("use --format dotenv or json to write to standard output"));
    }
    if !to_stdout && !args.force && args.output.symlink_metadata().is_ok() {
        return Err(
            CliError::failed(format!("{} already exists", args.output.display()))
                .with_hint("pass --force to replace it, or choose another -o"),
        );
    }
    let archive = super::destination::check_archive(&args.archive)?;
    let decryption = args.keys.resolve()?;
    let reader = archive.open(&decryption)?;
    if reader.manifest().is_kv() {
        return Err(CliError::failed(format!(
            "{}: a KV archive (format version 2): extract writes Key Vault secrets only",
            args.archive.display()
        ))
        .with_hint(
            "restore it into a KV mount (--vault bao+https://HOST:PORT/MOUNT), or read its \
             documents with age -d | zstd -d | tar -x (docs/FORMAT.md, \"KV archives\")",
        ));
    }

    let mut chosen: BTreeMap<String, SecretRecord> = BTreeMap::new();
    for entry in reader.entries() {
        let entry = entry?;
        if let EntryData::Secret(record) = entry.data {
            let key = record.name.to_ascii_lowercase();
            let replace = match chosen.get(&key) {
                None => true,
                Some(old) => preferred(&record, old),
            };
            if replace {
                chosen.insert(key, record);
            }
        }
    }
    let mut missing: Vec<String> = reader
        .manifest()
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Secret && !chosen.contains_key(&e.name.to_ascii_lowercase()))
        .map(|e| e.name.clone())
        .collect();
    missing.sort_unstable();
    missing.dedup();

    match args.format {
        ExtractFormat::Dir => write_dir(&args.output, &chosen, args.force)?,
        ExtractFormat::Dotenv | ExtractFormat::Json => {
            let text = match args.format {
                ExtractFormat::Dotenv => dotenv(&chosen)?,
                _ => json(&chosen)?,
            };
            if to_stdout {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(CliError::stdout)?;
            } else {
                write_file(&args.output, text.as_bytes(), args.force)?;
            }
        }
    }
    let place = if to_stdout {
        "standard output".to_owned()
    } else {
        args.output.display().to_string()
    };
    eprintln!("coldvault: wrote {} secrets to {place}", chosen.len());
    if missing.is_empty() {
        return Ok(ExitCode::Ok);
    }
    for name in &missing {
        eprintln!(
            "coldvault: warning: secret {name} has only a native backup blob in this archive; no plain value to extract"
        );
    }
    Ok(ExitCode::Partial)
}

/// True when `new` should replace `old`: the current version wins, then the newest.
fn preferred(new: &SecretRecord, old: &SecretRecord) -> bool {
    if new.current != old.current {
        return new.current;
    }
    new.attributes.created >= old.attributes.created
}

/// `NAME='value'` lines that POSIX `sh` sources exactly. Single quotes keep a value
/// literal (newlines included); a value holding a single quote is double-quoted instead,
/// with `\\`, `"`, `$` and `` ` `` escaped by a backslash.
///
/// A value holding a NUL byte is refused, naming the secret: environment variables are C
/// strings, so no shell or dotenv reader can give that value back (`sh` drops or cuts at
/// the NUL, and there is no escape for it that `sh`, Docker's `--env-file`, systemd's
/// `EnvironmentFile` or python-dotenv share). JSON (`\u0000`) and `dir` (raw bytes) carry it.
fn dotenv(secrets: &BTreeMap<String, SecretRecord>) -> Result<Zeroizing<String>, CliError> {
    let with_nul: Vec<&str> = secrets
        .values()
        .filter(|r| r.value.expose_secret().contains('\0'))
        .map(|r| r.name.as_str())
        .collect();
    if !with_nul.is_empty() {
        let (noun, verb) = if with_nul.len() == 1 {
            ("secret", "holds a NUL byte")
        } else {
            ("secrets", "hold NUL bytes")
        };
        return Err(CliError::failed(format!(
            "{noun} {} {verb}, which a dotenv file cannot carry (environment variables end at NUL)",
            with_nul.join(", ")
        ))
        .with_hint(
            "use --format json (NUL written as \\u0000) or --format dir (one raw file per secret)",
        ));
    }
    let mut taken: BTreeMap<String, &str> = BTreeMap::new();
    for record in secrets.values() {
        let key = dotenv_name(&record.name);
        if let Some(first) = taken.insert(key.clone(), &record.name) {
            return Err(CliError::failed(format!(
                "secrets {first} and {} would both be the dotenv variable {key}",
                record.name
            ))
            .with_hint("use --format json or --format dir, which keep every name as it is"));
        }
    }
    let mut out = Zeroizing::new(String::new());
    for record in secrets.values() {
        let key = dotenv_name(&record.name);
        let value = record.value.expose_secret();
        out.push_str(&key);
        out.push('=');
        if !value.contains('\'') {
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        } else {
            out.push('"');
            for c in value.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        out.push('\n');
    }
    Ok(out)
}

/// The shell variable name of a secret: a POSIX name (letters, digits and `_`, not starting
/// with a digit), which `sh`, `docker --env-file` and systemd's `EnvironmentFile` all
/// accept. Key Vault names are `[0-9A-Za-z-]`: upper-cased, `-` becomes `_`, and a leading
/// digit gets a `_` before it. Distinct names can meet (`1x` and `-1x` are both `_1X`);
/// [`dotenv`] refuses those.
fn dotenv_name(name: &str) -> String {
    let mut key = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        key.push('_');
    }
    key.extend(name.chars().map(|c| match c {
        'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_ascii_uppercase(),
        // Only `-` reaches here from a valid Key Vault name; anything else would not be
        // part of a shell name either.
        _ => '_',
    }));
    key
}

fn json(secrets: &BTreeMap<String, SecretRecord>) -> Result<Zeroizing<String>, CliError> {
    let map: BTreeMap<&str, &str> = secrets
        .values()
        .map(|r| (r.name.as_str(), r.value.expose_secret()))
        .collect();
    let mut text = serde_json::to_string_pretty(&map)
        .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
    text.push('\n');
    Ok(Zeroizing::new(text))
}

/// Writes through a 0600 temporary file beside `path`, then renames (no clobber unless
/// `force`) and syncs the folder.
fn write_file(path: &Path, data: &[u8], force: bool) -> Result<(), CliError> {
    let replace = if force {
        Replace::Existing
    } else {
        Replace::Never
    };
    atomic_file::write(path, data, replace).map_err(|e| match e {
        AtomicWriteError::Exists { .. } => CliError::failed(e.to_string())
            .with_hint("pass --force to replace it, or choose another -o"),
        e => CliError::failed(e.to_string()),
    })
}

/// One 0600 file per secret in a 0700 folder, each written through a temporary file in that
/// folder and renamed into place.
///
/// Nothing in the folder is followed. Before any file is written, each secret's place is
/// checked: without `force` any existing entry is refused; with `force` only a regular file is
/// replaced, and a symlink (or a folder, a socket…) in a secret's place is refused, naming it.
/// Writing through a symlink would put the secret wherever it points, outside the folder;
/// replacing it silently would change what other programs read through a link someone made on
/// purpose, so the user decides. The temporary file is created new (`O_EXCL`, which never
/// opens through a symlink) and the rename replaces the folder's entry itself, so a link
/// planted between the check and the rename is replaced, not followed. The folder itself is
/// the one named by `-o`, as given.
fn write_dir(
    path: &Path,
    secrets: &BTreeMap<String, SecretRecord>,
    force: bool,
) -> Result<(), CliError> {
    let shown = path.display();
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && force && path.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::failed(format!("{shown} already exists"))
                .with_hint("pass --force to write into an existing folder, or choose another -o"));
        }
        Err(e) => return Err(CliError::failed(format!("cannot create {shown}: {e}"))),
    }
    // Names are 1-127 characters of [0-9A-Za-z-] (checked by the reader): safe file names.
    for record in secrets.values() {
        let file = path.join(&record.name);
        let existing = match file.symlink_metadata() {
            Ok(meta) => meta.file_type(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CliError::failed(format!(
                    "cannot check {}: {e}",
                    file.display()
                )));
            }
        };
        if !force {
            return Err(
                CliError::failed(format!("{} already exists", file.display()))
                    .with_hint("pass --force to replace it, or choose another -o"),
            );
        }
        if !existing.is_file() {
            let what = if existing.is_symlink() {
                "a symbolic link"
            } else if existing.is_dir() {
                "a folder"
            } else {
                "not a regular file"
            };
            return Err(CliError::failed(format!(
                "{} is {what}; --force replaces only regular files",
                file.display()
            ))
            .with_hint("remove it or choose another -o: extract never writes through a link"));
        }
    }
    for record in secrets.values() {
        let file = path.join(&record.name);
        let write_failed =
            |e: std::io::Error| CliError::failed(format!("cannot write {}: {e}", file.display()));
        // Created new with mode 0600 (O_EXCL); the rename keeps the mode.
        let mut tmp = AtomicFile::create_in(path, TEMP_PREFIX, TEMP_SUFFIX)
            .map_err(|e| CliError::failed(format!("cannot create a file in {shown}: {e}")))?;
        tmp.write_all(record.value.expose_secret().as_bytes())
            .map_err(write_failed)?;
        let replace = if force {
            Replace::Existing
        } else {
            Replace::Never
        };
        tmp.commit(&file, replace)
            .map_err(|e| write_failed(e.error))?;
    }
    // The renames are durable only once the folder itself is synced (once, after them all).
    atomic_file::sync_folder(path)
        .map_err(|e| CliError::failed(format!("cannot sync {shown}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::SecretString;

    fn record(name: &str, value: &str) -> SecretRecord {
        SecretRecord {
            name: name.to_owned(),
            version: "v1".to_owned(),
            value: SecretString::from(value.to_owned()),
            content_type: None,
            tags: BTreeMap::new(),
            attributes: Default::default(),
            current: true,
        }
    }

    #[test]
    fn dotenv_refuses_nul_naming_every_such_secret() {
        let mut map = BTreeMap::new();
        map.insert("a".into(), record("fine", "ok"));
        map.insert("b".into(), record("nul-one", "x\0canary-a"));
        map.insert("c".into(), record("nul-two", "\0canary-b"));
        let err = dotenv(&map).err();
        let message = err.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert_eq!(
            message,
            "secrets nul-one, nul-two hold NUL bytes, which a dotenv file cannot carry (environment variables end at NUL)"
        );
        assert_eq!(err.map(|e| e.code), Some(ExitCode::Failed));
    }

    #[test]
    fn dotenv_names_are_shell_names() {
        for (name, key) in [
            ("db-password", "DB_PASSWORD"),
            ("1password", "_1PASSWORD"),
            ("-x", "_X"),
            ("a1-2", "A1_2"),
        ] {
            assert_eq!(dotenv_name(name), key);
        }
        let mut map = BTreeMap::new();
        map.insert("1x".into(), record("1x", "a"));
        map.insert("-1x".into(), record("-1x", "b"));
        let err = dotenv(&map).err();
        assert_eq!(
            err.as_ref().map(|e| e.message.as_str()),
            Some("secrets -1x and 1x would both be the dotenv variable _1X")
        );
        assert_eq!(err.map(|e| e.code), Some(ExitCode::Failed));
    }

    #[test]
    fn dotenv_quoting() {
        let mut map = BTreeMap::new();
        map.insert("a".into(), record("db-password", "p@ss $HOME"));
        map.insert("b".into(), record("multi", "it's\nline \"2\" $X"));
        let text = dotenv(&map).map(|t| t.to_string()).unwrap_or_default();
        assert_eq!(
            text,
            "DB_PASSWORD='p@ss $HOME'\nMULTI=\"it's\nline \\\"2\\\" \\$X\"\n"
        );
    }
}
