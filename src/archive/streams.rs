//! The layers under the tar reader and writer: byte counting, the decompression bounds, the
//! bound on tar extension headers, and a shared record of which layer failed first, so a tar
//! error caused by a failed decryption is reported as the decryption failure it is.

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

/// Largest GNU long-name or pax extended header. The tar crate reads such a header's data
/// whole into memory before it hands out the entry it describes, with no bound of its own;
/// coldvault's paths are a few hundred bytes, GNU tar's pax headers a few kilobytes.
pub(crate) const MAX_EXTENSION_HEADER: u64 = 1 << 20;

/// Where [`HeaderGuard`] is in the tar stream.
enum GuardState {
    /// Collecting the next 512-byte header block.
    Header {
        block: Box<[u8; 512]>,
        filled: usize,
    },
    /// Skipping this many bytes of entry data (padding included).
    Data { left: u64 },
    /// The stream is not one the guard can follow (a sparse entry, a block that is not a
    /// header): the tar reader above refuses it on its own.
    Off,
}

/// Follows the tar headers passing from the decompressed stream to the tar reader and
/// refuses a long-name or pax header whose data is larger than [`MAX_EXTENSION_HEADER`],
/// before the tar reader takes it into memory. Transparent otherwise.
pub(crate) struct HeaderGuard<R> {
    pub(crate) inner: R,
    failure: FailureSlot,
    state: GuardState,
}

impl<R> HeaderGuard<R> {
    pub(crate) fn new(inner: R, failure: FailureSlot) -> Self {
        Self {
            inner,
            failure,
            state: GuardState::header(),
        }
    }

    /// Advances over `bytes`, the next bytes of the tar stream.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), VerifyError> {
        while !bytes.is_empty() {
            match &mut self.state {
                GuardState::Off => return Ok(()),
                GuardState::Data { left } => {
                    let skip = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *left -= skip as u64;
                    bytes = &bytes[skip..];
                    if *left == 0 {
                        self.state = GuardState::header();
                    }
                }
                GuardState::Header { block, filled } => {
                    let take = (512 - *filled).min(bytes.len());
                    block[*filled..*filled + take].copy_from_slice(&bytes[..take]);
                    *filled += take;
                    bytes = &bytes[take..];
                    if *filled == 512 {
                        self.state = next_state(block)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl GuardState {
    fn header() -> Self {
        GuardState::Header {
            block: Box::new([0; 512]),
            filled: 0,
        }
    }
}

/// What follows a complete header block.
fn next_state(block: &[u8; 512]) -> Result<GuardState, VerifyError> {
    // Zero blocks end the archive (and pad it): what follows is read as headers again.
    if block.iter().all(|&b| b == 0) {
        return Ok(GuardState::header());
    }
    let Some(size) = header_size(block).filter(|_| checksum_matches(block)) else {
        return Ok(GuardState::Off);
    };
    let kind = match block[156] {
        b'L' => "GNU long name",
        b'K' => "GNU long link name",
        b'x' => "pax extended header",
        // A sparse entry's map continues in extension blocks the guard does not follow.
        b'S' => return Ok(GuardState::Off),
        _ => "",
    };
    if !kind.is_empty() && size > MAX_EXTENSION_HEADER {
        return Err(VerifyError::ExtensionHeaderTooLarge {
            kind,
            size,
            limit: MAX_EXTENSION_HEADER,
        });
    }
    let left = size.div_ceil(512).saturating_mul(512);
    Ok(if left == 0 {
        GuardState::header()
    } else {
        GuardState::Data { left }
    })
}

/// The size field: octal digits, or GNU's base-256 form (high bit set) for large sizes.
fn header_size(block: &[u8; 512]) -> Option<u64> {
    let field = &block[124..136];
    if field[0] & 0x80 != 0 {
        let mut size: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            size = size.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(size);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// The header checksum: the sum of the block's bytes with the checksum field read as spaces
/// (unsigned, or signed as some historic writers computed it).
fn checksum_matches(block: &[u8; 512]) -> bool {
    let text = std::str::from_utf8(&block[148..156]).unwrap_or("");
    let Ok(stored) = u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored) == Ok(signed)
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(failure) = self.observe(&buf[..n]) {
            self.state = GuardState::Off;
            return Err(self.failure.record(failure));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Passes `tar` through a guard in reads of `chunk` bytes; returns the refusal, if any.
    fn guard(tar: &[u8], chunk: usize) -> Option<VerifyError> {
        let failure = FailureSlot::default();
        let mut guard = HeaderGuard::new(tar, failure.clone());
        let mut buf = vec![0u8; chunk];
        loop {
            match guard.read(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(_) => return failure.take(),
            }
        }
    }

    fn long_name_tar(name_len: usize) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(name_len as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend(std::iter::repeat_n(b'a', name_len));
        tar.resize(tar.len().div_ceil(512) * 512, 0);
        let mut file = tar::Header::new_gnu();
        file.set_path("a").expect("path");
        file.set_size(3);
        file.set_cksum();
        tar.extend_from_slice(file.as_bytes());
        tar.extend_from_slice(b"abc");
        tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
        tar
    }

    #[test]
    fn header_guard_passes_ordinary_tar_streams_in_any_read_size() {
        let mut builder = tar::Builder::new(Vec::new());
        let long = format!(
            "secrets/{}/versions/{}.json",
            "n".repeat(127),
            "0".repeat(32)
        );
        for path in ["coldvault-archive.json", long.as_str(), "manifest.json"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(700);
            header.set_mode(0o600);
            builder
                .append_data(&mut header, path, &[7u8; 700][..])
                .expect("append");
        }
        let tar = builder.into_inner().expect("tar");
        for chunk in [1, 7, 512, 4096, 1 << 20] {
            assert!(guard(&tar, chunk).is_none(), "chunk {chunk}");
        }
        assert!(guard(&long_name_tar(MAX_EXTENSION_HEADER as usize), 999).is_none());
    }

    /// Before: the tar reader took a long name of any size into memory (a gigabyte from a
    /// few megabytes of archive) before the path checks saw it.
    #[test]
    fn a_long_name_over_the_bound_is_refused_before_the_tar_reader_reads_it() {
        let tar = long_name_tar(MAX_EXTENSION_HEADER as usize + 1);
        for chunk in [1, 512, 8192] {
            let refused = guard(&tar, chunk);
            assert!(
                matches!(
                    refused,
                    Some(VerifyError::ExtensionHeaderTooLarge {
                        kind: "GNU long name",
                        ..
                    })
                ),
                "chunk {chunk}: {refused:?}"
            );
        }
    }

    #[test]
    fn header_fields_parse_octal_and_base_256() {
        let mut block = [0u8; 512];
        block[124..136].copy_from_slice(b"00000001750\0");
        assert_eq!(header_size(&block), Some(1000));
        block[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(header_size(&block), Some(1 << 16));
        let mut header = tar::Header::new_ustar();
        header.set_size(12345);
        header.set_cksum();
        let mut block = [0u8; 512];
        block.copy_from_slice(header.as_bytes());
        assert!(checksum_matches(&block));
        block[0] ^= 1;
        assert!(!checksum_matches(&block));
    }
}
