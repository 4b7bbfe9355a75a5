//! [`RemoteSink`]: the archive writer's byte stream sent up as an upload that is committed
//! last. The writer is synchronous (a `Write` chain on its own thread); the upload runs on a
//! thread of its own with a small async runtime, fed whole parts through a channel of one.
//! Memory is bounded by about three parts (the one filling, the one queued, the one in
//! flight), whatever the archive's size; nothing is staged on disk. Each part is retried on
//! a lost connection ([`super::http`]). The object appears only at [`RemoteSink::commit`];
//! a sink dropped before that aborts the upload, so a failed or interrupted run leaves no
//! object.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use time::OffsetDateTime;

use super::{DestError, ObjectStore, UploadState};

/// The part size unless `COLDVAULT_PART_SIZE` says otherwise: 8 MiB, above S3's 5 MiB minimum
/// and a tenth of a 100,000-secret archive, so progress is steady and memory small.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// The part size in force: `COLDVAULT_PART_SIZE` (bytes, at least 64 KiB) or the default.
pub fn part_size() -> usize {
    std::env::var("COLDVAULT_PART_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(|n| n.max(64 << 10))
        .unwrap_or(DEFAULT_PART_SIZE)
}

enum Msg {
    Part(bytes::Bytes),
    Commit(SyncSender<Result<(), DestError>>),
}

/// A streaming upload of one object. See the module documentation.
pub struct RemoteSink {
    shown: String,
    /// Told when the sink is dropped uncommitted: the part in flight is given up.
    cancel: Arc<tokio::sync::Notify>,
    buffer: Vec<u8>,
    part_size: usize,
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<(), DestError>>>,
}

impl std::fmt::Debug for RemoteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSink")
            .field("object", &self.shown)
            .finish_non_exhaustive()
    }
}

impl RemoteSink {
    /// Starts the upload of `name` (refused when it exists) and returns once the store
    /// accepted it. Blocks: call it off the async runtime's worker threads.
    pub fn start(
        store: &Arc<dyn ObjectStore>,
        name: &str,
        lock_until: Option<OffsetDateTime>,
        part_size: usize,
    ) -> Result<Self, DestError> {
        let store = store.fork();
        let shown = store.display_name(name);
        let (tx, rx) = sync_channel::<Msg>(1);
        let (started_tx, started_rx) = sync_channel::<Result<(), DestError>>(1);
        let name = name.to_owned();
        let cancel = Arc::new(tokio::sync::Notify::new());
        let cancelled = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("coldvault-upload".to_owned())
            .spawn(move || upload_thread(store, name, lock_until, rx, started_tx, cancelled))
            .map_err(|e| DestError::io("cannot start the upload thread", e))?;
        let mut sink = Self {
            shown,
            cancel,
            buffer: Vec::with_capacity(part_size),
            part_size,
            tx: Some(tx),
            thread: Some(thread),
        };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(sink),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sink.thread_error()),
        }
    }

    /// A handle that stops the upload from another thread: the part in flight is given up,
    /// the upload aborted, and the next write fails. For a run being interrupted.
    pub fn canceller(&self) -> crate::archive::AbandonHook {
        let cancel = self.cancel.clone();
        Arc::new(move || cancel.notify_one())
    }

    /// Where the object goes, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Sends the last part and commits: the object appears whole under its name, or the
    /// upload is aborted and the error returned.
    pub fn commit(mut self) -> Result<(), DestError> {
        self.send_part()?;
        let (reply_tx, reply_rx) = sync_channel(1);
        let tx = self.tx.take().ok_or_else(|| self.thread_error())?;
        if tx.send(Msg::Commit(reply_tx)).is_err() {
            return Err(self.thread_error());
        }
        drop(tx);
        let result = reply_rx.recv().map_err(|_| self.thread_error());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result?
    }

    fn send_part(&mut self) -> Result<(), DestError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let part = bytes::Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(self.part_size),
        ));
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Part(part)).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.thread_error())
        }
    }

    /// The upload thread stopped: its error.
    fn thread_error(&mut self) -> DestError {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => DestError::Network {
                what: format!("cannot upload {}", self.shown),
                message: "the upload stopped".to_owned(),
            },
        }
    }
}

impl Write for RemoteSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buffer.len();
        let taken = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..taken]);
        if self.buffer.len() == self.part_size {
            self.send_part().map_err(io::Error::other)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RemoteSink {
    fn drop(&mut self) {
        // Closing the channel without a commit makes the thread abort the upload; the part
        // in flight (perhaps stuck on a dead connection) is given up at once. Wait for the
        // abort (bounded by ABORT_TIME), so the process never exits with it unsent.
        self.cancel.notify_one();
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long an abort may take before the run exits anyway (S3 then expires the parts by its
/// lifecycle rule; Blob Storage discards uncommitted blocks by itself).
const ABORT_TIME: std::time::Duration = std::time::Duration::from_secs(10);

async fn abort(store: &Arc<dyn ObjectStore>, name: &str, state: &UploadState) {
    let _ = tokio::time::timeout(ABORT_TIME, store.abort_upload(name, state)).await;
}

fn upload_thread(
    store: Arc<dyn ObjectStore>,
    name: String,
    lock_until: Option<OffsetDateTime>,
    rx: Receiver<Msg>,
    started: SyncSender<Result<(), DestError>>,
    cancel: Arc<tokio::sync::Notify>,
) -> Result<(), DestError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DestError::io("cannot start the upload runtime", e))?;
    runtime.block_on(async move {
        let mut state: UploadState = match store.start_upload(&name, lock_until).await {
            Ok(state) => {
                let _ = started.send(Ok(()));
                state
            }
            Err(e) => {
                let _ = started.send(Err(e));
                return Ok(());
            }
        };
        let mut size = 0u64;
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Part(bytes) => {
                    let len = bytes.len() as u64;
                    let sent = tokio::select! {
                        sent = store.put_part(&name, &state, state.parts.len(), bytes) => sent,
                        () = cancel.notified() => {
                            abort(&store, &name, &state).await;
                            return Ok(());
                        }
                    };
                    match sent {
                        Ok(id) => {
                            state.parts.push(id);
                            size += len;
                        }
                        Err(e) => {
                            abort(&store, &name, &state).await;
                            return Err(e);
                        }
                    }
                }
                Msg::Commit(reply) => {
                    let result = store.commit_upload(&name, &state, size, lock_until).await;
                    if result.is_err() {
                        abort(&store, &name, &state).await;
                    }
                    let _ = reply.send(result);
                    return Ok(());
                }
            }
        }
        // The writer went away without committing: nothing may appear.
        abort(&store, &name, &state).await;
        Ok(())
    })
}

impl crate::archive::CommitSink for RemoteSink {
    fn commit(self: Box<Self>) -> io::Result<()> {
        RemoteSink::commit(*self).map_err(io::Error::other)
    }

    fn abandon_hook(&self) -> Option<crate::archive::AbandonHook> {
        Some(self.canceller())
    }
}
