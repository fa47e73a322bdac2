//! The shutdown signals the binaries wait for: SIGTERM and Ctrl-C, turned into a
//! `CancellationToken`'s cancel (the library's tasks stop through the token, never a signal).
//! Only binaries use this.

use std::io;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// SIGTERM and SIGINT (Ctrl-C) handlers, installed when this is created, so a signal that
/// arrives before anyone waits for it is not lost (nor does it kill the process).
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a Tokio runtime.
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Cancels `token` at the first signal, logging which. Needs a Tokio runtime.
    pub fn cancel_on_signal(mut self, token: CancellationToken) {
        tokio::spawn(async move {
            let signal = self.recv().await;
            info!(action = "shutdown", result = "in_progress", signal);
            token.cancel();
        });
    }

    /// Completes at the first signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
