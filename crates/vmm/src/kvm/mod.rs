//! What every KVM guest needs, unikernel or Linux: guest memory registered with
//! KVM ([`memory`]), the x86-64 machine state (page tables, GDT, control
//! registers) that a monitor writes because the guest cannot ([`arch`]), and the
//! part of an exit loop that does not depend on the guest ([`vcpu`]). What fails
//! here fails as a [`KvmError`].

pub mod arch;
mod error;
pub mod memory;
pub mod vcpu;

pub use error::{kvm_op, open, KvmError};
