//! The VMM's host-side failures. A misbehaving guest is *not* an error: it is a
//! [`crate::VmExit`], because the VMM handled it correctly.

use crate::config::ConfigError;
use crate::kvm::arch::paging::PagingError;
use crate::loader::ImageError;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The request was invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image was refused.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A Linux kernel or initrd was refused.
    #[error(transparent)]
    LinuxImage(#[from] crate::linux::LinuxImageError),
    /// The platform asked for cannot run on this host.
    #[error(transparent)]
    Unavailable(#[from] crate::platform::Unavailable),
    /// KVM could not do what was asked of it.
    #[error(transparent)]
    Kvm(#[from] crate::kvm::KvmError),
    /// Guest memory could not be created.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The monitor's data could not be written into guest memory.
    #[error(transparent)]
    GuestMemory(#[from] crate::memory::MemoryError),
    /// The image could not be put in guest memory.
    #[error(transparent)]
    Boot(#[from] crate::unikernel::boot::BootError),
    /// The deadline timer could not be armed.
    #[error(transparent)]
    Timer(#[from] crate::timer::TimerError),
    /// The page tables could not be built.
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// A host system call failed.
    #[error("{op}: {source}")]
    Host {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// An invariant of the VMM itself was broken (a bug, never guest input).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<HostError> for VmmError {
    fn from(error: HostError) -> Self {
        VmmError::Host {
            op: error.op,
            source: error.source,
        }
    }
}

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
