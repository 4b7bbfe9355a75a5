//! Stopping a long run cleanly on a signal. Ctrl-C (SIGINT), SIGTERM (what Kubernetes,
//! systemd, CI runners and `timeout` send) and SIGHUP (a closed terminal or SSH session) all
//! end the run the same way: the work in flight is dropped, the temporary file is deleted,
//! and the process exits 128 + the signal's number (130, 143, 129), as a shell reports a
//! process that the signal killed.

use crate::error::{CliError, ExitCode};

/// The signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C): exit 130.
    Interrupt,
    /// SIGTERM: exit 143.
    Terminate,
    /// SIGHUP: exit 129.
    HangUp,
}

impl StopSignal {
    /// `SIGINT`, `SIGTERM` or `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::HangUp => "SIGHUP",
        }
    }

    /// The documented exit code: 128 + the signal's number.
    pub fn exit_code(self) -> ExitCode {
        match self {
            StopSignal::Interrupt => ExitCode::Interrupted,
            StopSignal::Terminate => ExitCode::Terminated,
            StopSignal::HangUp => ExitCode::HungUp,
        }
    }

    /// The error a stopped run reports: `what` says what became of the work.
    pub fn error(self, subject: &str, what: &str) -> CliError {
        CliError {
            code: self.exit_code(),
            message: format!("{subject}: interrupted ({}); {what}", self.name()),
            hint: None,
        }
    }

    /// The signal's number (POSIX).
    pub fn number(self) -> u32 {
        match self {
            StopSignal::HangUp => 1,
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }
}

/// The stop signals, listened for from the moment [`Interrupts::listen`] returns: from then
/// on they no longer kill the process, and the run decides how to end. SIGHUP stays ignored
/// when the process was started with it ignored: `nohup coldvault backup …` asks for the run
/// to survive the end of the session. (SIGINT and SIGTERM are always caught, as Ctrl-C always
/// was: a shell ignores SIGINT in background jobs, and a run should still clean up after
/// `kill -INT`.)
#[derive(Debug)]
pub struct Interrupts {
    #[cfg(unix)]
    signals: Vec<(StopSignal, tokio::signal::unix::Signal)>,
}

impl Interrupts {
    /// Installs the handlers. Must run inside the async runtime.
    pub fn listen() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, stop: StopSignal| {
                signal(kind).map(|s| (stop, s)).map_err(|e| {
                    CliError::failed(format!("cannot listen for {}: {e}", stop.name()))
                })
            };
            let ignored = ignored_at_start();
            let mut signals = Vec::new();
            for (kind, stop) in [
                (SignalKind::interrupt(), StopSignal::Interrupt),
                (SignalKind::terminate(), StopSignal::Terminate),
                (SignalKind::hangup(), StopSignal::HangUp),
            ] {
                let left_ignored =
                    stop == StopSignal::HangUp && ignored & (1u64 << (stop.number() - 1)) != 0;
                if !left_ignored {
                    signals.push(listen(kind, stop)?);
                }
            }
            Ok(Self { signals })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next stop signal (forever when every one is ignored).
    pub async fn recv(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            let waits = self.signals.iter_mut().map(|(stop, signal)| {
                Box::pin(async move {
                    signal.recv().await;
                    *stop
                })
            });
            let waits: Vec<_> = waits.collect();
            if waits.is_empty() {
                return std::future::pending().await;
            }
            futures::future::select_all(waits).await.0
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }
}

/// The signals this process was started with ignored, as a mask (bit N-1 for signal N), read
/// from Linux's `/proc/self/status` (`SigIgn`); none elsewhere. Read before any handler is
/// installed, so it is the disposition inherited from whoever started us.
fn ignored_at_start() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal_number() {
        assert_eq!(StopSignal::Interrupt.exit_code() as u8, 128 + 2);
        assert_eq!(StopSignal::HangUp.exit_code() as u8, 128 + 1);
        assert_eq!(StopSignal::Terminate.exit_code() as u8, 128 + 15);
        let err = StopSignal::Terminate.error("kv", "no archive was written");
        assert_eq!(
            err.message,
            "kv: interrupted (SIGTERM); no archive was written"
        );
    }
}
