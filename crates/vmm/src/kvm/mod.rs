//! What every KVM guest needs, unikernel or Linux: guest memory registered with
//! KVM, and the x86-64 machine state (page tables, GDT, control registers) that a
//! monitor writes because the guest cannot.

pub mod arch;
pub mod memory;
