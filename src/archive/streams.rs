//! The layers under the tar reader and writer: byte counting, the decompression bounds, and
//! a shared record of which layer failed first, so a tar error caused by a failed decryption
//! is reported as the decryption failure it is.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use super::error::{ArchiveError, VerifyError};

/// The first failure of a layer under the tar reader.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailureSlot(Arc<Mutex<Option<VerifyError>>>);

impl FailureSlot {
    /// Records `failure` unless an earlier one is recorded; returns an io::Error for the
    /// layer above.
    fn record(&self, failure: VerifyError) -> io::Error {
        let message = failure.to_string();
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(failure);
        }
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    /// Takes the recorded failure, if any.
    pub(crate) fn take(&self) -> Option<VerifyError> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Turns an error seen by the top layer into the most precise archive error: a recorded
    /// lower-layer failure first, else `fallback`.
    pub(crate) fn explain(&self, fallback: impl FnOnce() -> ArchiveError) -> ArchiveError {
        match self.take() {
            Some(failure) => failure.into(),
            None => fallback(),
        }
    }
}

/// Position and end-of-file state of the raw file, shared with the layers above.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawState(Arc<Mutex<(u64, bool)>>);

impl RawState {
    fn get(&self) -> (u64, bool) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The raw archive file, counting bytes and noting end of file.
pub(crate) struct RawReader<R> {
    inner: R,
    state: RawState,
}

impl<R: Read> RawReader<R> {
    pub(crate) fn new(inner: R) -> (Self, RawState) {
        let state = RawState::default();
        (
            Self {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: Read> Read for RawReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += n as u64;
        if n == 0 && !buf.is_empty() {
            state.1 = true;
        }
        Ok(n)
    }
}

/// The decrypted (still compressed) stream: classifies age's errors and counts bytes for
/// the compression-ratio bound.
pub(crate) struct DecryptedReader<R> {
    pub(crate) inner: R,
    pub(crate) raw: RawState,
    pub(crate) failure: FailureSlot,
    pub(crate) consumed: Arc<Mutex<u64>>,
}

impl<R: Read> Read for DecryptedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                *self.consumed.lock().unwrap_or_else(PoisonError::into_inner) += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let (offset, eof) = self.raw.get();
                // age authenticates every 64 KiB chunk and marks the last one: a failure once
                // the file is exhausted means it ends early (or its end is damaged).
                let failure = if e.kind() == io::ErrorKind::UnexpectedEof || eof {
                    VerifyError::Truncated
                } else if e.kind() == io::ErrorKind::InvalidData {
                    VerifyError::Damaged { offset }
                } else {
                    return Err(e);
                };
                Err(self.failure.record(failure))
            }
        }
    }
}

/// Bounds on the decompressed stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamBounds {
    pub(crate) max_total: u64,
    pub(crate) max_ratio: u64,
    pub(crate) ratio_after: u64,
}

/// The decompressed tar stream: classifies zstd's errors and enforces the bounds.
pub(crate) struct DecompressedReader<R> {
    pub(crate) inner: R,
    pub(crate) failure: FailureSlot,
    pub(crate) consumed: Arc<Mutex<u64>>,
    pub(crate) produced: u64,
    pub(crate) bounds: StreamBounds,
}

impl<R: Read> Read for DecompressedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.failure.record(VerifyError::NotZstd(e.to_string()))),
        };
        self.produced += n as u64;
        if self.produced > self.bounds.max_total {
            return Err(self.failure.record(VerifyError::TotalTooLarge {
                limit: self.bounds.max_total,
            }));
        }
        if self.produced > self.bounds.ratio_after {
            let compressed = (*self.consumed.lock().unwrap_or_else(PoisonError::into_inner)).max(1);
            if self.produced / compressed > self.bounds.max_ratio {
                return Err(self.failure.record(VerifyError::CompressionRatio {
                    decompressed: self.produced,
                    compressed,
                    limit: self.bounds.max_ratio,
                }));
            }
        }
        Ok(n)
    }
}

/// The bottom of the writer chain: a file or stdout, counting bytes written.
pub(crate) struct CountingWriter<W> {
    pub(crate) inner: W,
    pub(crate) written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
