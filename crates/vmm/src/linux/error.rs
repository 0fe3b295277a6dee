//! The Linux builder's error: why a Linux microVM could not be built or run.
//!
//! It sits at the top of the Linux room and wraps the small errors of the parts
//! below it (the kernel image, KVM, page tables, guest memory, the host); none of
//! those parts imports it. A guest that crashes or resets is *not* an error: it is
//! a [`crate::VmExit`].

use super::loader::LinuxImageError;
use crate::error::HostError;
use crate::kvm::arch::paging::PagingError;
use crate::kvm::KvmError;
use crate::memory::MemoryError;
use crate::seccomp::SeccompError;

/// Why a Linux VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum LinuxVmError {
    /// The kernel or initrd was refused.
    #[error(transparent)]
    Image(#[from] LinuxImageError),
    /// KVM could not do what was asked of it.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The boot page tables could not be built.
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// The boot data could not be written into guest memory.
    #[error(transparent)]
    GuestMemory(#[from] MemoryError),
    /// A host system call failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A monitor thread's seccomp filter could not be built or put in force.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// An invariant of the VMM itself was broken (a bug, never guest input).
    #[error("internal error: {0}")]
    Internal(&'static str),
}
