//! What both KVM exit loops — the unikernel's and Linux's — do alike with a vCPU:
//! run it to its next exit.

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::error::{kvm_op, VmmError};

/// How one `KVM_RUN` ended.
pub enum Run<'a> {
    /// The guest exited to the monitor, for this reason.
    Exit(VcpuExit<'a>),
    /// A signal interrupted the run before the guest exited (`EINTR`, or `EAGAIN`
    /// when it was pending at entry): the deadline timer's, or a stop request's
    /// kick. The loop checks whether that ended the guest, and otherwise runs it
    /// again.
    Interrupted,
}

/// Runs `vcpu` to its next exit. A hardware entry failure is an error, not an
/// exit: the CPU refused the state the monitor set up, which no guest can cause.
pub fn run(vcpu: &mut VcpuFd) -> Result<Run<'_>, VmmError> {
    match vcpu.run() {
        Ok(VcpuExit::FailEntry(reason, _)) => Err(VmmError::Host {
            op: "entering the guest",
            source: std::io::Error::other(format!("hardware entry failure reason {reason:#x}")),
        }),
        Ok(exit) => Ok(Run::Exit(exit)),
        Err(error) if matches!(error.errno(), libc::EINTR | libc::EAGAIN) => Ok(Run::Interrupted),
        Err(error) => Err(kvm_op("KVM_RUN")(error)),
    }
}
