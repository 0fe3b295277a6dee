//! The one error every part below the builders shares: a failed host system call.
//!
//! Each part has its own small error ([`crate::memory::MemoryError`],
//! [`crate::kvm::KvmError`], [`crate::timer::TimerError`], …), and each builder one
//! error at the top of its room that wraps them ([`crate::UnikernelError`],
//! [`crate::LinuxVmError`]). This module imports nothing of the crate, so any part
//! may use it without making an import circle.

/// A host system call failed: what the monitor was doing, and the OS's error.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct HostError {
    /// What was being done.
    pub op: &'static str,
    /// The OS error.
    pub source: std::io::Error,
}

impl HostError {
    /// The error of the system call that just failed (from `errno`).
    pub fn last_os_error(op: &'static str) -> Self {
        Self {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}
