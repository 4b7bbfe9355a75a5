//! Files that appear whole or not at all: the one way coldvault puts a file under its final
//! name. Content goes to a temporary file created new (`O_EXCL`, mode 0600) in the target's
//! own folder, is synced, and is renamed to the final name — refusing an existing name or
//! replacing it, as the caller asks — and the folder is then synced so the rename itself
//! survives a power cut. A crash leaves the previous file or the new one, never a part; a
//! failure before the rename removes the temporary file and leaves the name untouched.
//!
//! The archive writer (which streams into an [`AtomicFile`] for the whole backup), `extract`,
//! `keygen` and the local Key Vault's state directory all write through here. The module
//! imports nothing else of the crate, so every layer may use it.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Temporary files are named `.coldvault-RANDOM.partial` unless the caller names them.
pub const TEMP_PREFIX: &str = ".coldvault-";
/// The suffix of temporary files (see [`TEMP_PREFIX`]).
pub const TEMP_SUFFIX: &str = ".partial";

/// What the final rename does when the name is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Refuse: the rename fails with [`io::ErrorKind::AlreadyExists`] and nothing changes.
    Never,
    /// Replace the existing entry itself (a symlink there is replaced, not followed).
    Existing,
}

/// A temporary file in the folder its final name will be in; dropped without
/// [`AtomicFile::commit`], it is deleted.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
}

/// A commit that did not rename: the temporary file is handed back (so a caller may try
/// another name) together with the cause.
#[derive(Debug)]
pub struct Uncommitted {
    /// The temporary file, still holding everything written.
    pub file: AtomicFile,
    /// Why the rename failed ([`io::ErrorKind::AlreadyExists`] when the name is taken under
    /// [`Replace::Never`]).
    pub error: io::Error,
}

impl AtomicFile {
    /// Creates `PREFIXrandomSUFFIX` in `dir`, new and with mode 0600 (the rename keeps it).
    pub fn create_in(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(suffix)
            .tempfile_in(dir)?;
        Ok(Self { tmp })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Syncs the content to disk, then renames the temporary file to `path` (which must be in
    /// the folder it was created in) as `replace` says. The folder is not synced here: call
    /// [`sync_folder`] once after the last rename in it.
    pub fn commit(self, path: &Path, replace: Replace) -> Result<(), Uncommitted> {
        if let Err(error) = self.tmp.as_file().sync_all() {
            return Err(Uncommitted { file: self, error });
        }
        let renamed = match replace {
            Replace::Never => self.tmp.persist_noclobber(path),
            Replace::Existing => self.tmp.persist(path),
        };
        renamed.map(drop).map_err(|e| Uncommitted {
            file: Self { tmp: e.file },
            error: e.error,
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Why [`write`] or [`write_with`] failed. Every variant but [`AtomicWriteError::NotDurable`]
/// leaves `path` as it was.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// The temporary file could not be created in the folder.
    #[error("cannot create a file in {}: {source}", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    /// Writing, syncing or renaming the temporary file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// [`Replace::Never`] and the name is taken.
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    /// The file is in place under its name, but its folder could not be synced: a crash may
    /// still take the rename away.
    #[error("{} was written but its folder could not be synced: {source}", path.display())]
    NotDurable { path: PathBuf, source: io::Error },
}

impl From<AtomicWriteError> for io::Error {
    fn from(err: AtomicWriteError) -> Self {
        let kind = match &err {
            AtomicWriteError::Create { source, .. }
            | AtomicWriteError::Write { source, .. }
            | AtomicWriteError::NotDurable { source, .. } => source.kind(),
            AtomicWriteError::Exists { .. } => io::ErrorKind::AlreadyExists,
        };
        io::Error::new(kind, err)
    }
}

/// Writes `bytes` to `path` atomically (see the module documentation).
pub fn write(path: &Path, bytes: &[u8], replace: Replace) -> Result<(), AtomicWriteError> {
    write_with(path, replace, |file| file.write_all(bytes))
}

/// [`write`] with the content written by `fill` into the temporary file; an error from
/// `fill` removes the temporary file and leaves `path` as it was.
pub fn write_with(
    path: &Path,
    replace: Replace,
    fill: impl FnOnce(&mut AtomicFile) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    write_syncing_with(path, replace, fill, sync_folder)
}

/// [`write_with`] with the folder sync given, so tests can make it fail.
fn write_syncing_with(
    path: &Path,
    replace: Replace,
    fill: impl FnOnce(&mut AtomicFile) -> io::Result<()>,
    sync: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), AtomicWriteError> {
    let dir = parent_dir(path);
    let mut file = AtomicFile::create_in(dir, TEMP_PREFIX, TEMP_SUFFIX).map_err(|source| {
        AtomicWriteError::Create {
            dir: dir.to_owned(),
            source,
        }
    })?;
    let write_err = |source| AtomicWriteError::Write {
        path: path.to_owned(),
        source,
    };
    fill(&mut file).map_err(write_err)?;
    file.commit(path, replace).map_err(|e| {
        if replace == Replace::Never && e.error.kind() == io::ErrorKind::AlreadyExists {
            AtomicWriteError::Exists {
                path: path.to_owned(),
            }
        } else {
            write_err(e.error)
        }
    })?;
    sync(dir).map_err(|source| AtomicWriteError::NotDurable {
        path: path.to_owned(),
        source,
    })
}

/// The folder `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Syncs a folder, so that a rename in it survives a crash. As PostgreSQL's `fsync_fname`
/// does, a folder that cannot be opened for reading (a write-only drop folder: EACCES) or a
/// file system that cannot sync folders (EINVAL, EBADF) is no failure: nothing more can be
/// done there. Anything else (EIO, ENOSPC, EROFS…) is reported. Windows has no folder sync
/// (NTFS journals the rename).
pub fn sync_folder(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let folder = match File::open(dir) {
            Ok(folder) => folder,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
            Err(e) => return Err(e),
        };
        match folder.sync_all() {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc_errno::EINVAL | libc_errno::EBADF)
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The two errno values a folder sync may answer on a file system that cannot do it (Linux
/// and the BSDs agree on them).
#[cfg(unix)]
mod libc_errno {
    pub const EBADF: i32 = 9;
    pub const EINVAL: i32 = 22;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replacing_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"one", Replace::Existing).unwrap();
        write(&path, b"two", Replace::Existing).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[cfg(unix)]
    #[test]
    fn written_file_has_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"secret", Replace::Never).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn failed_temp_write_leaves_the_previous_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"previous contents", Replace::Existing).unwrap();
        let err = write_with(&path, Replace::Existing, |file| {
            file.write_all(b"half of the ne")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(
            matches!(&err, AtomicWriteError::Write { source, .. } if source.to_string() == "disk full"),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"previous contents");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[test]
    fn no_clobber_refuses_an_existing_name_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"first", Replace::Never).unwrap();
        let err = write(&path, b"second", Replace::Never).unwrap_err();
        assert!(matches!(err, AtomicWriteError::Exists { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("{} already exists", path.display())
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[test]
    fn refused_commit_hands_the_temporary_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("a");
        std::fs::write(&taken, b"other").unwrap();
        let mut file = AtomicFile::create_in(dir.path(), TEMP_PREFIX, TEMP_SUFFIX).unwrap();
        file.write_all(b"work").unwrap();
        let refused = file.commit(&taken, Replace::Never).unwrap_err();
        assert_eq!(refused.error.kind(), io::ErrorKind::AlreadyExists);
        let free = dir.path().join("b");
        refused.file.commit(&free, Replace::Never).unwrap();
        assert_eq!(std::fs::read(&free).unwrap(), b"work");
        assert_eq!(std::fs::read(&taken).unwrap(), b"other");
        assert_eq!(entries(dir.path()), ["a", "b"]);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AtomicFile::create_in(dir.path(), TEMP_PREFIX, TEMP_SUFFIX).unwrap();
        file.write_all(b"abandoned").unwrap();
        drop(file);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn missing_folder_is_a_create_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f");
        let err = write(&path, b"x", Replace::Never).unwrap_err();
        assert!(matches!(err, AtomicWriteError::Create { .. }), "{err:?}");
    }

    #[test]
    fn failed_folder_sync_is_reported_with_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let err = write_syncing_with(
            &path,
            Replace::Never,
            |file| file.write_all(b"done"),
            |_| Err(io::Error::other("EIO")),
        )
        .unwrap_err();
        assert!(
            matches!(err, AtomicWriteError::NotDurable { .. }),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"done");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::Other);
    }
}
