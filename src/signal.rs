//! The shutdown signal both binaries wait for. Only binaries call this: the library's tasks stop
//! through a `CancellationToken`.

use std::io;

/// Completes at the first SIGTERM or Ctrl-C (SIGINT) and names it.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn shutdown_signal() -> io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
