//! The x86-64 architectural constants a monitor writes into a vCPU: control-register
//! and EFER bits, RFLAGS, the MSRs it sets, and the FPU's reset values.
//!
//! One set, named as the Intel SDM names them, for every KVM guest: the unikernel's
//! CPL-3 state ([`super::cpu`]) and a Linux kernel's boot state
//! (`crate::linux::cpu`) pick from the same bits, so a fix to one is a fix to both.

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP: `wait`/`fwait` honour CR0.TS (set with SSE, as a kernel would).
pub const CR0_MP: u64 = 1 << 1;
/// CR0.ET: an x87 is present (hard-wired to 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: x87 errors are reported as #MF, not through the legacy IRQ 13.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP: read-only pages are read-only for supervisor writes too.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;

/// CR4.PAE: 64-bit page-table entries (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR: the OS saves SSE state with FXSAVE; SSE instructions are allowed.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: SIMD floating-point exceptions raise #XM, not #UD.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.FSGSBASE: user mode may read and write FS and GS bases (`wrfsbase`).
pub const CR4_FSGSBASE: u64 = 1 << 16;
/// CR4.OSXSAVE: `xgetbv`/`xsave` and the AVX state the XCR0 register enables.
pub const CR4_OSXSAVE: u64 = 1 << 18;

/// EFER.LME: long mode enabled.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (KVM wants it set along with LME and CR0.PG).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: the no-execute bit of page-table entries is honoured.
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.SCE: `syscall` enters CPL 0 at LSTAR (it raises #UD without it on a
/// stock KVM; our nested one ignores the bit).
pub const EFER_SCE: u64 = 1 << 0;

/// RFLAGS bit 1, reserved and always set; with it alone: IOPL 0, interrupts off.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// x87 control word after FNINIT: all exceptions masked, 64-bit precision.
pub const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR reset value: all SSE exceptions masked.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// The time-stamp counter.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `sysenter`'s code segment.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// `sysenter`'s stack pointer.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// `sysenter`'s entry point.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// Miscellaneous feature enables (fast strings, among others).
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// MISC_ENABLE bit 0: fast string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// `syscall`/`sysret` segment selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// Where a 64-bit `syscall` enters.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// Where a compatibility-mode `syscall` enters.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// RFLAGS bits `syscall` clears.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// The GS base `swapgs` swaps in.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
