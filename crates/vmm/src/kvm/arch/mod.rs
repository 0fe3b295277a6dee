//! x86-64 machine state for a CPL-3 unikernel: page tables, GDT, registers.
//!
//! The guest cannot do kernel-mode work (on our hosts CPL 0 is emulated), so the VMM
//! builds everything a kernel would: identity page tables with per-segment
//! permissions, a GDT with 64-bit user segments, and control registers with SSE on.

pub mod cpu;
pub mod gdt;
pub mod paging;
