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
}

/// The stop signals, listened for from the moment [`Interrupts::listen`] returns: from then
/// on they no longer kill the process, and the run decides how to end.
#[derive(Debug)]
pub struct Interrupts {
    #[cfg(unix)]
    signals: [(StopSignal, tokio::signal::unix::Signal); 3],
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
            Ok(Self {
                signals: [
                    listen(SignalKind::interrupt(), StopSignal::Interrupt)?,
                    listen(SignalKind::terminate(), StopSignal::Terminate)?,
                    listen(SignalKind::hangup(), StopSignal::HangUp)?,
                ],
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next stop signal.
    pub async fn recv(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            let [(a, int), (b, term), (c, hup)] = &mut self.signals;
            tokio::select! {
                _ = int.recv() => *a,
                _ = term.recv() => *b,
                _ = hup.recv() => *c,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }
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
