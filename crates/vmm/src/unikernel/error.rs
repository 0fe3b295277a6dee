//! The unikernel builder's error: why a unikernel could not be prepared, booted or
//! run, on either platform.
//!
//! It sits at the top of the unikernel room and wraps the small errors of the
//! parts below it (the request, the image, KVM, page tables, guest memory, the
//! timer, the host); none of those parts imports it, so it closes no import circle.
//! A misbehaving guest is *not* an error: it is a [`crate::VmExit`], because the
//! VMM handled it correctly.

use super::boot::BootError;
use crate::config::ConfigError;
use crate::error::HostError;
use crate::kvm::arch::paging::PagingError;
use crate::kvm::KvmError;
use crate::loader::ImageError;
use crate::memory::MemoryError;
use crate::platform::Unavailable;
use crate::seccomp::SeccompError;
use crate::timer::TimerError;

/// Why a unikernel could not be prepared, booted or run.
#[derive(Debug, thiserror::Error)]
pub enum UnikernelError {
    /// The request was invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image was refused.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The platform asked for cannot run on this host.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// KVM could not do what was asked of it (the kvm platform).
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The page tables could not be built (the kvm platform).
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// The monitor's data could not be written into guest memory.
    #[error(transparent)]
    GuestMemory(#[from] MemoryError),
    /// The image could not be put in guest memory.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The deadline timer could not be armed.
    #[error(transparent)]
    Timer(#[from] TimerError),
    /// The monitor's seccomp filter could not be built or put in force (the kvm
    /// platform).
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Guest memory could not be mapped (the process platform).
    #[error("guest memory: {0}")]
    Memory(String),
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

impl From<HostError> for UnikernelError {
    fn from(error: HostError) -> Self {
        UnikernelError::Host {
            op: error.op,
            source: error.source,
        }
    }
}
