//! What both binaries share around the library: the shutdown signals they wait for (the
//! library's tasks stop through a `CancellationToken`), the global allocator and how the process
//! takes memory from the kernel (no transparent huge pages). Only binaries use this.

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

/// Turns transparent huge pages off for this process; call it first thing in `main`. mimalloc is
/// built without asking for them (its `no_thp` feature: no `MADV_HUGEPAGE`), which is enough where
/// the kernel gives them only on request (`enabled = madvise`, Debian's default), from the first
/// allocation on, before `main`. This covers the kernels that give them unasked (`always`) for
/// every page first touched from here on (the few touched before `main` may stay huge); child
/// processes keep the setting. With them, the first touch of any byte of a 2 MiB page zeroes all
/// of it: ~18% of the central's and the agencies' CPU in a profile of the default dataset, and at
/// 10 × 1M bets the central's RSS was 41–45 MiB against 14–20 MiB without them, its
/// acknowledgements' p99 6.6–8.4 ms against 3.9–6.2 ms (README, "Performance"). Best effort: the
/// call fails only on kernels older than 3.15 or under a seccomp filter that forbids it, and huge
/// pages cost speed and memory, never correctness, so an error is ignored.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Declares mimalloc the global allocator, in a binary (`lottery::use_mimalloc!();`): every bet
/// allocates a few small strings on both sides; glibc's malloc was ~15% of the central's and
/// agencies' CPU in the load benchmark's profile (README, "Performance").
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::signal::MiMalloc = $crate::signal::MiMalloc;
    };
}

#[doc(hidden)]
pub use mimalloc::MiMalloc;
