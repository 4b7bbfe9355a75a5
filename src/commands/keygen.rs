//! `coldvault keygen`: a new age X25519 identity, in age-keygen's file format. With `-o
//! FILE` the identity goes to a new file (mode 0600, never replacing one; missing parent
//! folders are created with mode 0700) and the recipient to stdout, ready for `-r`; without
//! it the identity goes to stdout and the recipient to stderr, as `age-keygen` does.

use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use age::secrecy::ExposeSecret;
use age::secrecy::zeroize::Zeroizing;

use crate::atomic_file::{self, AtomicWriteError, Replace};
pub use crate::cli::keygen::KeygenArgs;
use crate::error::{CliError, ExitCode};

/// Runs `coldvault keygen`.
pub fn run(args: KeygenArgs) -> Result<ExitCode, CliError> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let created = created
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| CliError::failed(format!("cannot format the time: {e}")))?;
    let text = Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    ));
    match &args.output {
        Some(path) => {
            let shown = path.display();
            create_parent(path)?;
            // Through a temporary file and a no-clobber rename: a crash never leaves half an
            // identity under the name, and an existing identity is never replaced.
            atomic_file::write(path, text.as_bytes(), Replace::Never).map_err(|e| match e {
                AtomicWriteError::Exists { .. } => {
                    CliError::failed(format!("{shown} already exists"))
                        .with_hint("an identity is never overwritten: choose another -o")
                }
                e => CliError::failed(e.to_string()),
            })?;
            crate::output::stdout::print(&format!("{recipient}\n")).map_err(CliError::stdout)?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(CliError::stdout)?;
            eprintln!("Public key: {recipient}");
        }
    }
    Ok(ExitCode::Ok)
}

/// Creates the folders leading to `path` that do not exist yet, with mode 0700: they will
/// hold a private key (`~/.config/coldvault/` on a fresh machine). Existing folders are
/// left as they are.
fn create_parent(path: &Path) -> Result<(), CliError> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| {
            CliError::failed(format!(
                "cannot create the folder {}: {e}",
                parent.display()
            ))
        })
}
