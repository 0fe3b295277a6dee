//! x86-64 machine state a monitor writes because its guest cannot: page tables,
//! GDT, registers.
//!
//! A CPL-3 unikernel cannot do kernel-mode work (on our hosts CPL 0 is emulated), so
//! the VMM builds everything a kernel would: identity page tables with per-segment
//! permissions ([`paging`]), a GDT with 64-bit user segments and a TSS ([`gdt`]),
//! and control registers with SSE on ([`cpu`]). A Linux kernel's boot state is
//! built from the same architectural constants ([`regs`]) and segment descriptors
//! ([`segment`]).

pub mod cpu;
pub mod gdt;
pub mod paging;
pub mod regs;
pub mod segment;
