//! Ctrl-C and SIGTERM while a run is in progress: noted here, so that the run stops what
//! it started before it exits (the local executor tells its stages to stop, the Slurm one
//! cancels the jobs it submitted) and the cache closes cleanly.

use std::sync::atomic::{AtomicBool, Ordering};

static RECEIVED: AtomicBool = AtomicBool::new(false);

extern "C" fn note(_signal: libc::c_int) {
    RECEIVED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM until the returned guard drops (then they kill again).
pub struct Interrupts(());

impl Interrupts {
    pub fn catch() -> Interrupts {
        RECEIVED.store(false, Ordering::SeqCst);
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, note as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, note as *const () as libc::sighandler_t);
        }
        Interrupts(())
    }

    /// Whether SIGINT or SIGTERM arrived.
    pub fn received(&self) -> bool {
        RECEIVED.load(Ordering::SeqCst)
    }

    /// Lets the next SIGINT or SIGTERM kill again (a second Ctrl-C stops at once), while
    /// [`Self::received`] still says the first arrived.
    pub fn release(&self) {
        restore_defaults();
    }
}

fn restore_defaults() {
    // SAFETY: restoring the default disposition.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        restore_defaults();
    }
}
