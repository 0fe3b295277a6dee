//! The program's threads. For now the program has one; its sleeps wait in the
//! `poll` hypercall.

use core::time::Duration;

/// Sleeps the calling thread.
pub fn sleep(duration: Duration) {
    libos::time::sleep(duration);
}
