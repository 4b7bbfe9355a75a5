//! Where archives go and come from, for the commands: `backup -o` to Blob Storage or S3
//! (a streamed upload committed last, its sidecar and signature), archive arguments that are
//! URLs (`inspect`, `verify`, `diff`, `restore`, `extract` read straight from the store),
//! `--sign` and `--trusted-signer`. The byte-moving lives in [`crate::dest`]; this file turns
//! arguments into it and its errors into [`CliError`]s.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::archive::{
    ArchiveError, ArchiveInput, ArchiveReader, ArchiveSummary, ArchiveWriter, CommitSink,
    Decryption, Encryption, Source, numbered_name,
};
pub use crate::cli::destination::{OutputArgs, SignerArgs};
use crate::dest::download::RemoteReader;
use crate::dest::listing::{SIDECAR_FORMAT, SIDECAR_SUFFIX, SIGNATURE_SUFFIX, Sidecar};
use crate::dest::upload::{RemoteSink, part_size};
use crate::dest::{DestError, ObjectStore, Remote, RemoteOptions, is_remote, open_remote};
use crate::error::CliError;
use crate::signing::{HashingWriter, SignError, SigningKey, TrustedSigners, digest_reader};

/// What `--sign` resolved to.
#[derive(Debug, Clone, Default)]
pub struct Sealing {
    signer: Option<Arc<SigningKey>>,
}

impl OutputArgs {
    /// Reads the signing key; checks the options against the output (`remote`: `-o` is a
    /// URL; `stdout`: `-o -`).
    pub fn resolve(&self, remote: bool, stdout: bool) -> Result<Sealing, CliError> {
        if self.lock_days.is_some() && !remote {
            return Err(CliError::usage(
                "--lock-days needs -o on Blob Storage or S3: a local file cannot be locked",
            )
            .with_hint("use -o az://ACCOUNT/CONTAINER or -o s3://BUCKET, or drop --lock-days"));
        }
        let Some(path) = &self.sign else {
            return Ok(Sealing::default());
        };
        if stdout {
            return Err(CliError::usage("--sign cannot go with -o -")
                .with_hint("the signature is written beside the archive: write it to a folder"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::failed(format!("--sign {}: cannot read it: {e}", path.display()))
        })?;
        let key = SigningKey::from_openssh(&text).map_err(|e| {
            CliError::usage(format!("--sign {}: {e}", path.display()))
                .with_hint("make a key with: ssh-keygen -t ed25519 -N '' -f coldvault-signing")
        })?;
        Ok(Sealing {
            signer: Some(Arc::new(key)),
        })
    }

    fn remote_options(&self) -> RemoteOptions {
        RemoteOptions {
            azure_auth: self.output_auth.clone(),
            ..Default::default()
        }
    }
}

/// A remote `-o`: where, and with what lock.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    remote: Remote,
    lock_days: Option<u32>,
}

/// The archive a remote writer is uploading: its name, and the SHA-512 of its bytes once
/// committed (for the signature).
#[derive(Debug, Clone, Default)]
pub struct UploadHandle {
    name: Arc<Mutex<Option<String>>>,
    digest: Arc<Mutex<Option<[u8; 64]>>>,
}

/// The upload with a running SHA-512, so a signature needs no second read.
struct HashingSink {
    inner: HashingWriter<RemoteSink>,
    digest: Arc<Mutex<Option<[u8; 64]>>>,
}

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CommitSink for HashingSink {
    fn abandon_hook(&self) -> Option<crate::archive::AbandonHook> {
        Some(self.inner.inner.canceller())
    }

    fn commit(self: Box<Self>) -> io::Result<()> {
        let digest = self.inner.digest();
        self.inner.inner.commit().map_err(io::Error::other)?;
        *self.digest.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        Ok(())
    }
}

impl RemoteOutput {
    /// Resolves `-o URL`: parses it and finds credentials (nothing is sent yet).
    pub fn resolve(text: &str, args: &OutputArgs, vaults: usize) -> Result<Self, CliError> {
        let remote = open_remote(text, &args.remote_options()).map_err(dest_error)?;
        if vaults > 1 && remote.object.is_some() {
            return Err(CliError::usage(
                "several --vault values need a folder-like -o (one archive per vault)",
            )
            .with_hint("end -o with / or give a prefix instead of an object name"));
        }
        Ok(Self {
            remote,
            lock_days: args.lock_days,
        })
    }

    /// Starts the archive's upload: checks the lock settings, picks the first free name
    /// (`-1`, `-2`… as in a folder; a named object that exists is refused) and returns the
    /// writer streaming into it.
    pub async fn writer(
        &self,
        encryption: &Encryption,
        source: Source,
    ) -> Result<(ArchiveWriter, UploadHandle), CliError> {
        let lock_until = match self.lock_days {
            Some(days) => {
                self.remote
                    .store
                    .check_lock_support()
                    .await
                    .map_err(dest_error)?;
                Some(OffsetDateTime::now_utc() + time::Duration::days(i64::from(days)))
            }
            None => None,
        };
        let handle = UploadHandle::default();
        let store = self.remote.store.clone();
        let object = self.remote.object.clone();
        let (name_slot, digest_slot) = (handle.name.clone(), handle.digest.clone());
        let part = part_size();
        // Starting an upload blocks on its thread's first answer.
        let writer = tokio::task::block_in_place(|| {
            ArchiveWriter::create_in_sink(
                |base| {
                    let names: Vec<String> = match &object {
                        Some(name) => vec![name.clone()],
                        None => (0..=99).map(|n| numbered_name(base, n)).collect(),
                    };
                    for name in names {
                        match RemoteSink::start(&store, &name, lock_until, part) {
                            Ok(sink) => {
                                let shown = sink.shown().to_owned();
                                *name_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
                                let sink = HashingSink {
                                    inner: HashingWriter::new(sink),
                                    digest: digest_slot,
                                };
                                return Ok((Box::new(sink) as Box<dyn CommitSink>, shown));
                            }
                            Err(DestError::Exists(_)) if object.is_none() => continue,
                            Err(DestError::Exists(shown)) => {
                                return Err(ArchiveError::OutputExists(PathBuf::from(shown)));
                            }
                            Err(e) => {
                                return Err(ArchiveError::io(
                                    "cannot start the upload",
                                    io::Error::other(e),
                                ));
                            }
                        }
                    }
                    Err(ArchiveError::OutputExists(PathBuf::from(
                        store.display_name(base),
                    )))
                },
                encryption,
                source,
            )
        })?;
        Ok((writer, handle))
    }

    /// The store, for the sidecar and signature.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.remote.store
    }
}

/// After an archive is complete: the sidecar beside a remote one, and the signature beside
/// any (`--sign`). Returns where the signature went. A sidecar that cannot be written is only
/// warned about (`list` then shows no counts); a signature that cannot be is an error.
pub async fn seal(
    remote: Option<(&RemoteOutput, &UploadHandle)>,
    summary: &ArchiveSummary,
    sealing: &Sealing,
    vault: (&str, &str),
    warn: impl Fn(&str),
) -> Result<Option<String>, CliError> {
    match remote {
        Some((output, handle)) => {
            let name = handle
                .name
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            let store = output.store();
            let sidecar = Sidecar {
                format: SIDECAR_FORMAT.to_owned(),
                vault: vault.0.to_owned(),
                url: vault.1.to_owned(),
                created: summary.created,
                bytes: summary.bytes,
                counts: summary.counts,
                signed: sealing.signer.is_some(),
            };
            let json = serde_json::to_vec_pretty(&sidecar).unwrap_or_default();
            if let Err(e) = store
                .put_new(&format!("{name}{SIDECAR_SUFFIX}"), json)
                .await
            {
                warn(&format!(
                    "the archive's summary (sidecar) was not written: {e}"
                ));
            }
            let Some(signer) = &sealing.signer else {
                return Ok(None);
            };
            let digest = (*handle.digest.lock().unwrap_or_else(|e| e.into_inner()))
                .ok_or_else(|| CliError::failed("the archive's digest is missing"))?;
            let sig_name = format!("{name}{SIGNATURE_SUFFIX}");
            store
                .put_new(&sig_name, signer.sign_digest(&digest).into_bytes())
                .await
                .map_err(|e| unsigned(&store.display_name(&name), &e.to_string()))?;
            Ok(Some(store.display_name(&sig_name)))
        }
        None => {
            let (Some(signer), Some(path)) = (&sealing.signer, &summary.path) else {
                return Ok(None);
            };
            let shown = path.display().to_string();
            let file = std::fs::File::open(path).map_err(|e| unsigned(&shown, &e.to_string()))?;
            let digest = digest_reader(file).map_err(|e| unsigned(&shown, &e.to_string()))?;
            let sig_path = signature_path(path);
            crate::atomic_file::write(
                &sig_path,
                signer.sign_digest(&digest).as_bytes(),
                crate::atomic_file::Replace::Never,
            )
            .map_err(|e| unsigned(&shown, &e.to_string()))?;
            Ok(Some(sig_path.display().to_string()))
        }
    }
}

fn unsigned(archive: &str, why: &str) -> CliError {
    CliError::failed(format!(
        "{archive} was written, but its signature could not be: {why}"
    ))
    .with_hint("sign it by hand (ssh-keygen -Y sign -n coldvault -f KEY ARCHIVE) or back up again")
}

fn signature_path(path: &Path) -> PathBuf {
    let mut text = path.as_os_str().to_owned();
    text.push(SIGNATURE_SUFFIX);
    PathBuf::from(text)
}

/// A DestError as the CLI reports it.
pub fn dest_error(err: DestError) -> CliError {
    let message = err.to_string();
    match err {
        DestError::InvalidUrl(_) => CliError::usage(message),
        DestError::Credentials(_) => CliError::failed(message).with_hint(
            "Blob Storage: AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_KEY, \
             AZURE_STORAGE_SAS_TOKEN or --output-auth; S3: AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        ),
        DestError::Exists(_) => CliError::failed(message)
            .with_hint("archives are never overwritten: choose another name or prefix"),
        DestError::NotFound(_) => {
            CliError::failed(message).with_hint("`coldvault list DEST` shows the archives there")
        }
        DestError::Locked { .. } => CliError::failed(message),
        DestError::Unsupported(_) => CliError::failed(message).with_hint(
            "turn on version-level immutability on the container (Azure) or Object Lock on \
             the bucket (S3) — README, \"Keeping copies off-tenant\" — or drop --lock-days",
        ),
        DestError::Http {
            status: 401 | 403, ..
        } => CliError::failed(message).with_hint(
            "the identity lacks permission on the container or bucket: see the README, \
             \"Keeping copies off-tenant\", for the least permissions needed",
        ),
        DestError::Http { .. } | DestError::Network { .. } | DestError::Io { .. } => {
            CliError::failed(message)
        }
    }
}

/// An archive argument: a path, or a URL of an object in Blob Storage or S3.
#[derive(Debug, Clone)]
pub enum ArchiveArg {
    /// A local file.
    File(PathBuf),
    /// An object.
    Remote {
        store: Arc<dyn ObjectStore>,
        name: String,
    },
}

impl ArchiveArg {
    /// Resolves an archive argument, checking that a local file exists (before any key is
    /// loaded) or that a URL names one object.
    pub fn resolve(path: &Path) -> Result<Self, CliError> {
        let text = path.to_string_lossy();
        if !is_remote(&text) {
            ArchiveReader::check_path(path)?;
            return Ok(Self::File(path.to_owned()));
        }
        let options = RemoteOptions {
            azure_auth: std::env::var("COLDVAULT_OUTPUT_AUTH")
                .ok()
                .filter(|v| !v.is_empty()),
            ..Default::default()
        };
        let remote = open_remote(&text, &options).map_err(dest_error)?;
        let Some(name) = remote.object else {
            return Err(CliError::usage(format!(
                "{}: names no archive (the last part must end in .tar.zst.age)",
                crate::dest::redact_url(&text)
            ))
            .with_hint("`coldvault list` shows the archives at a destination"));
        };
        Ok(Self::Remote {
            store: remote.store,
            name,
        })
    }

    /// The input the archive reader reads: a file, or the object streamed (once per pass).
    pub fn input(&self) -> ArchiveInput {
        match self {
            Self::File(path) => ArchiveInput::file(path),
            Self::Remote { store, name } => {
                let store = store.clone();
                let name = name.clone();
                let shown = store.display_name(&name);
                ArchiveInput::stream(
                    shown,
                    Arc::new(move || {
                        let (reader, size) =
                            RemoteReader::open(&store, &name).map_err(|e| match e {
                                DestError::NotFound(_) => {
                                    io::Error::new(io::ErrorKind::NotFound, e.to_string())
                                }
                                other => io::Error::other(other.to_string()),
                            })?;
                        Ok((Box::new(reader) as Box<dyn io::Read + Send>, size))
                    }),
                )
            }
        }
    }

    /// Opens and verifies the archive (blocking).
    pub fn open(&self, decryption: &Decryption) -> Result<ArchiveReader, ArchiveError> {
        ArchiveReader::open_input(self.input(), decryption, decryption.limits())
    }

    /// The SHA-512 of the archive's bytes and its signature's text, if it has one.
    fn digest_and_signature(&self) -> Result<([u8; 64], Option<String>), CliError> {
        match self {
            Self::File(path) => {
                let shown = path.display();
                let file = std::fs::File::open(path)
                    .map_err(|e| CliError::failed(format!("cannot open {shown}: {e}")))?;
                let digest = digest_reader(file)
                    .map_err(|e| CliError::failed(format!("cannot read {shown}: {e}")))?;
                let signature = match std::fs::read_to_string(signature_path(path)) {
                    Ok(text) => Some(text),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => {
                        return Err(CliError::failed(format!(
                            "cannot read {}: {e}",
                            signature_path(path).display()
                        )));
                    }
                };
                Ok((digest, signature))
            }
            Self::Remote { store, name } => {
                let (reader, _) = RemoteReader::open(store, name).map_err(dest_error)?;
                let digest = digest_reader(reader).map_err(|e| {
                    CliError::failed(format!("cannot read {}: {e}", store.display_name(name)))
                })?;
                let sig_name = format!("{name}{SIGNATURE_SUFFIX}");
                let signature = match RemoteReader::open(store, &sig_name) {
                    Ok((reader, _)) => {
                        let mut text = String::new();
                        io::Read::take(reader, 64 * 1024)
                            .read_to_string(&mut text)
                            .map_err(|e| {
                                CliError::failed(format!("cannot read {sig_name}: {e}"))
                            })?;
                        Some(text)
                    }
                    Err(DestError::NotFound(_)) => None,
                    Err(e) => return Err(dest_error(e)),
                };
                Ok((digest, signature))
            }
        }
    }

    fn shown(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Remote { store, name } => store.display_name(name),
        }
    }
}

use std::io::Read as _;

impl SignerArgs {
    /// The trusted keys, read from the arguments (files or keys).
    pub fn resolve(&self) -> Result<TrustedSigners, CliError> {
        let mut trusted = TrustedSigners::default();
        for value in &self.trusted_signers {
            let text = if value.trim_start().starts_with("ssh-") {
                value.clone()
            } else {
                std::fs::read_to_string(value).map_err(|e| {
                    CliError::usage(format!("--trusted-signer {value}: cannot read it: {e}"))
                        .with_hint("give an ssh-ed25519 public key or a file of them")
                })?
            };
            trusted
                .add(&text)
                .map_err(|e| CliError::usage(format!("--trusted-signer {value}: {e}")))?;
        }
        Ok(trusted)
    }

    /// With trusted signers, checks the archive's signature before anything is decrypted:
    /// exit 4 when it is missing, malformed, not matching, or by an untrusted key.
    pub fn check(&self, archive: &ArchiveArg) -> Result<(), CliError> {
        let trusted = self.resolve()?;
        if trusted.is_empty() {
            return Ok(());
        }
        let shown = archive.shown();
        let (digest, signature) = archive.digest_and_signature()?;
        let Some(signature) = signature else {
            return Err(CliError::verification(format!(
                "{shown}: not signed (no {shown}{SIGNATURE_SUFFIX}), and --trusted-signer \
                 asks for a signature"
            ))
            .with_hint("only restore archives signed by a trusted key: find a signed copy"));
        };
        trusted.verify(&signature, &digest).map_err(|e| {
            let hint = match e {
                SignError::Untrusted(_) => {
                    "add the signer's public key with --trusted-signer if you trust it"
                }
                _ => "the archive or its signature was changed: use another copy",
            };
            CliError::verification(format!("{shown}: signature refused: {e}")).with_hint(hint)
        })
    }
}

/// Checks an archive argument (a path or an object URL) before any key is loaded.
pub fn check_archive(path: &Path) -> Result<ArchiveArg, CliError> {
    ArchiveArg::resolve(path)
}

/// Opens and verifies the archive an argument names, a file or an object (blocking).
/// Where the archive `path` names is read from (a file, or an object streamed from Blob
/// Storage or S3), for the engine's one-pass readers.
pub fn archive_input(path: &Path) -> Result<ArchiveInput, CliError> {
    ArchiveArg::resolve(path).map(|archive| archive.input())
}

pub fn open_archive(path: &Path, decryption: &Decryption) -> Result<ArchiveReader, ArchiveError> {
    match ArchiveArg::resolve(path) {
        Ok(archive) => archive.open(decryption),
        Err(err) => Err(ArchiveError::io(
            err.message,
            io::Error::new(io::ErrorKind::InvalidInput, "not a readable archive"),
        )),
    }
}
