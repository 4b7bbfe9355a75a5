//! Standard output for reports: tables, `--json` documents, JSON Lines events, the man page
//! and completion scripts. Every report a command prints goes through [`Report`].
//!
//! A reader that stops early (`coldvault inspect … | head -3`) closes the pipe. Rust ignores
//! `SIGPIPE`, so the next write fails with `EPIPE`, and `println!` turns that into a panic
//! (exit 101, a panic message on stderr). [`Report`] treats a closed pipe as the reader's
//! choice, as ripgrep does: the rest of the report is dropped without a word, and the
//! command goes on to the exit code it earned. That code means what the command found
//! (`diff` 1 on differences, `verify` 4, `restore` 3), which is what a script under
//! `set -o pipefail` tests; a reader that has seen enough is no failure of coldvault's.
//! Any other write error (a full disk behind `>`) is returned to the caller.
//!
//! Data streams do not go through here: an archive on stdout (`backup -o -`), secrets on
//! stdout (`extract -o -`) and an identity (`keygen` without `-o`) are incomplete when their
//! reader stops, so there a closed pipe fails the command (exit 1).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output has met a closed pipe: later reports are dropped
/// without a system call.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// A writer for report text that drops everything once its reader has closed the pipe.
/// See the module documentation for why this is not an error.
#[derive(Debug)]
pub struct Report<W> {
    inner: W,
    closed: &'static AtomicBool,
}

/// Standard output (locked for the handle's lifetime) as a [`Report`].
pub fn report() -> Report<io::StdoutLock<'static>> {
    Report {
        inner: io::stdout().lock(),
        closed: &STDOUT_CLOSED,
    }
}

/// Writes `text` to standard output as a report and flushes it. A closed pipe is not an
/// error (see the module documentation); any other write error is returned.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = report();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// True once standard output's reader has gone: a command may skip rendering what no one
/// will read.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

impl<W: Write> Report<W> {
    /// `inner` as a report whose closed state is kept in `closed` (one flag per stream).
    pub fn new(inner: W, closed: &'static AtomicBool) -> Self {
        Self { inner, closed }
    }

    /// Turns a broken pipe into "closed from now on"; passes every other outcome through.
    fn absorb<T>(&self, outcome: io::Result<T>, done: T) -> io::Result<T> {
        match outcome {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed.store(true, Ordering::Relaxed);
                Ok(done)
            }
            other => other,
        }
    }
}

impl<W: Write> Write for Report<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        let outcome = self.inner.write(buf);
        self.absorb(outcome, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let outcome = self.inner.flush();
        self.absorb(outcome, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then fails every write with `kind`.
    struct Pipe {
        room: usize,
        kind: io::ErrorKind,
        attempts: usize,
        taken: Vec<u8>,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_drops_the_rest_quietly() {
        static CLOSED: AtomicBool = AtomicBool::new(false);
        let pipe = Pipe {
            room: 6,
            kind: io::ErrorKind::BrokenPipe,
            attempts: 0,
            taken: Vec::new(),
        };
        let mut report = Report::new(pipe, &CLOSED);
        for _ in 0..100 {
            assert!(writeln!(report, "line one").is_ok());
        }
        assert!(report.flush().is_ok());
        assert!(CLOSED.load(Ordering::Relaxed));
        assert_eq!(report.inner.taken, b"line o");
        // Once closed, the pipe is not written to again.
        assert_eq!(report.inner.attempts, 2);
    }

    #[test]
    fn other_write_errors_are_returned() {
        static CLOSED: AtomicBool = AtomicBool::new(false);
        let pipe = Pipe {
            room: 0,
            kind: io::ErrorKind::StorageFull,
            attempts: 0,
            taken: Vec::new(),
        };
        let mut report = Report::new(pipe, &CLOSED);
        let err = writeln!(report, "x").err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::StorageFull));
        assert!(!CLOSED.load(Ordering::Relaxed));
    }
}
