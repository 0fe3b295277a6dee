//! What can fail in the KVM machinery itself, for either KVM user.

/// Why KVM could not do what a monitor asked of it.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` is missing or not accessible.
    #[error("{}", open_message(.0))]
    Unavailable(kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM call {op} failed: {source}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// The CPU refused to enter the guest in the state the monitor set up (never
    /// the guest's doing).
    #[error("entering the guest: hardware entry failure reason {reason:#x}")]
    FailEntry {
        /// The hardware's reason code.
        reason: u64,
    },
    /// Guest memory could not be created or registered with KVM.
    #[error("guest memory: {0}")]
    Memory(String),
    /// An invariant of the VMM itself was broken (a bug, never guest input).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

fn open_message(error: &kvm_ioctls::Error) -> String {
    match error.errno() {
        libc::ENOENT => "/dev/kvm does not exist: this host has no KVM (enable hardware virtualization, or load kvm_intel / kvm_amd)".to_owned(),
        libc::EACCES | libc::EPERM => "permission denied opening /dev/kvm: run as root or add your user to the kvm group".to_owned(),
        _ => format!("cannot open /dev/kvm: {error}"),
    }
}

/// Maps a failed ioctl to [`KvmError::Ioctl`] naming it:
/// `.map_err(kvm_op("KVM_RUN"))`.
pub fn kvm_op(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { op, source }
}

/// Opens `/dev/kvm`.
pub fn open() -> Result<kvm_ioctls::Kvm, KvmError> {
    kvm_ioctls::Kvm::new().map_err(KvmError::Unavailable)
}
