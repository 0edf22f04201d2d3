//! Stopping training on a signal: Ctrl-C (SIGINT) or SIGTERM sets a flag that the trainer
//! reads after each step, so that it checkpoints that step and returns instead of dying with
//! every step since the last checkpoint.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked training to stop (see [`stop_on_interrupt`]), 0 for none.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// The signal that asked training to stop, if one did: the trainer checkpoints the step it is
/// at and returns.
pub fn requested_by() -> Option<i32> {
    Some(INTERRUPTED.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// Makes Ctrl-C (SIGINT) and SIGTERM stop training cleanly: the step under way finishes, a
/// checkpoint of it is written, and training returns a report whose `interrupted` names the
/// signal (`vaezoo resume` continues bit for bit). A second signal has its default effect
/// (the process ends at once). Unix only; elsewhere the signals keep their default effect (the
/// last checkpoint is kept either way).
pub fn stop_on_interrupt() {
    #[cfg(unix)]
    {
        extern "C" fn on_signal(signal: libc::c_int) {
            INTERRUPTED.store(signal, Ordering::SeqCst);
            // SAFETY: signal() is async-signal-safe; the next one gets the default action.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic and resets the disposition, both
            // async-signal-safe.
            unsafe {
                libc::signal(signal, on_signal as *const () as libc::sighandler_t);
            }
        }
    }
}
