//! [`RemoteReader`]: an object read back as a synchronous `Read`, for the archive reader.
//! The download runs on a thread of its own with a small async runtime and hands chunks over
//! a short channel, so memory stays at a few chunks whatever the object's size. A connection
//! lost mid-way is resumed from the last byte received (an HTTP range request), up to
//! [`super::http::ATTEMPTS`] times in a row.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::{DestError, ObjectStore, http};

enum Msg {
    Data(bytes::Bytes),
    End,
    Failed(String),
}

/// An object's bytes, streamed. See the module documentation.
pub struct RemoteReader {
    rx: Receiver<Msg>,
    current: bytes::Bytes,
    ended: bool,
}

impl std::fmt::Debug for RemoteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteReader").finish_non_exhaustive()
    }
}

impl RemoteReader {
    /// Starts reading `name` and returns once the store answered, with the object's size.
    pub fn open(store: &Arc<dyn ObjectStore>, name: &str) -> Result<(Self, u64), DestError> {
        let store = store.fork();
        let name = name.to_owned();
        let (tx, rx) = sync_channel(8);
        let (first_tx, first_rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("coldvault-download".to_owned())
            .spawn(move || download_thread(store, name, tx, first_tx))
            .map_err(|e| DestError::io("cannot start the download thread", e))?;
        let size = first_rx.recv().map_err(|_| DestError::Network {
            what: "cannot read the archive".to_owned(),
            message: "the download stopped".to_owned(),
        })??;
        Ok((
            Self {
                rx,
                current: bytes::Bytes::new(),
                ended: false,
            },
            size,
        ))
    }
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(bytes)) => self.current = bytes,
                Ok(Msg::End) => self.ended = true,
                Ok(Msg::Failed(message)) => return Err(io::Error::other(message)),
                Err(_) => return Err(io::Error::other("the download stopped")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

fn download_thread(
    store: Arc<dyn ObjectStore>,
    name: String,
    tx: SyncSender<Msg>,
    first: SyncSender<Result<u64, DestError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = first.send(Err(DestError::io("cannot start the download runtime", e)));
            return;
        }
    };
    runtime.block_on(async move {
        let shown = store.display_name(&name);
        let mut offset = 0u64;
        let mut total = None;
        let mut failures = 0u32;
        let mut first = Some(first);
        loop {
            let response = match store.get_from(&name, offset).await {
                Ok(response) => response,
                Err(e) => {
                    match first.take() {
                        Some(first) => {
                            let _ = first.send(Err(e));
                        }
                        None => {
                            let _ = tx.send(Msg::Failed(e.to_string()));
                        }
                    }
                    return;
                }
            };
            if total.is_none() {
                let size = response.content_length().unwrap_or(0);
                total = Some(size);
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(size));
                }
            }
            let mut response = response;
            let mut cut = None;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        offset += chunk.len() as u64;
                        failures = 0;
                        if tx.send(Msg::Data(chunk)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        cut = Some(http::one_line(&e));
                        break;
                    }
                }
            }
            if cut.is_none() && Some(offset) >= total {
                let _ = tx.send(Msg::End);
                return;
            }
            failures += 1;
            if failures >= http::ATTEMPTS {
                let why = cut.unwrap_or_else(|| "the answer ended early".to_owned());
                let _ = tx.send(Msg::Failed(format!(
                    "cannot read {shown}: {why} (after {} tries)",
                    http::ATTEMPTS
                )));
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 << failures.min(4))).await;
        }
    });
}
