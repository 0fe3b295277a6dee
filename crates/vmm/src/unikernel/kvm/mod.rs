//! The kvm platform (Solo5's hvt): a KVM VM whose one vCPU runs the guest at CPL 3,
//! with the monitor's GDT, TSS, page tables and gate stub below the guest's memory.
//! Hypercalls are `out` exits, answered by the shared hypercall core.

mod shell;
mod vm;

pub use shell::KvmShell;
pub use vm::KvmVm;
