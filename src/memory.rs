//! How the process takes memory, set up by each binary first thing: the global allocator
//! (mimalloc, declared with [`use_mimalloc!`](crate::use_mimalloc)) and no transparent huge
//! pages ([`without_huge_pages`]). Only binaries use this.

/// Turns transparent huge pages off for this process; call it first thing in `main`. mimalloc is
/// built without asking for them (its `no_thp` feature: no `MADV_HUGEPAGE`), which is enough where
/// the kernel gives them only on request (`enabled = madvise`, Debian's default), from the first
/// allocation on, before `main`. This covers the kernels that give them unasked (`always`) for
/// every page first touched from here on (the few touched before `main` may stay huge); child
/// processes keep the setting. With them, the first touch of any byte of a 2 MiB page zeroes all
/// of it: ~18% of the central's and the agencies' CPU in a profile of the default dataset, and at
/// 10 × 1M bets the central's RSS was 41–45 MiB against 14–20 MiB without them, its
/// acknowledgements' p99 6.6–8.4 ms against 3.9–6.2 ms (docs/performance.md). Best effort: the
/// call fails only on kernels older than 3.15 or under a seccomp filter that forbids it, and huge
/// pages cost speed and memory, never correctness, so an error is ignored.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Declares mimalloc the global allocator, in a binary (`lottery::use_mimalloc!();`): every bet
/// allocates a few small strings on both sides; glibc's malloc was ~15% of the central's and
/// agencies' CPU in the load benchmark's profile (docs/performance.md).
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::memory::MiMalloc = $crate::memory::MiMalloc;
    };
}

#[doc(hidden)]
pub use mimalloc::MiMalloc;
