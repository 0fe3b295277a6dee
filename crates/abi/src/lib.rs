//! The one contract between the lightvm monitor and every unikernel guest.
//!
//! Both sides compile this crate: the monitor (std, host) and `libos` (no_std, in the
//! guest). Anything a guest may rely on — where memory is, how it is mapped, how a
//! hypercall is made and what its arguments look like — is written down here and
//! nowhere else, so the two sides cannot drift apart.
//!
//! # Two platforms, one image
//!
//! The same image runs on either of the monitor's platforms:
//!
//! * **kvm** — a KVM VM whose only vCPU runs the guest in 64-bit user mode (CPL 3);
//! * **process** — a host process that maps the guest at the same addresses and runs
//!   it under a seccomp filter, for hosts without `/dev/kvm`.
//!
//! A guest cannot tell them apart except through [`BootInfo::platform`], and never
//! needs to: it reaches the monitor only through the [hypercall
//! gate](BootInfo::hypercall_gate), whose address the monitor hands it at boot.
//!
//! # Machine state at entry
//!
//! * `rip` = the ELF entry point, `rdi` = [`layout::BOOT_INFO_ADDR`] (a [`BootInfo`]),
//!   `rsp` = [`layout::STACK_TOP`] − 8 (as if `_start` had been called, so the stack
//!   has the alignment the System V ABI promises at function entry);
//! * 64-bit user mode; SSE is usable (code compiled for `x86_64-unknown-linux-gnu`
//!   runs unchanged), the x87 and SSE control words hold their reset values, and
//!   `rdtsc` is allowed;
//! * guest virtual = guest physical addresses, with the permissions of the ELF
//!   segments (text R+X, rodata R, data/bss R+W, heap and stack R+W+NX); the boot
//!   info page is read-only; the guard page below the stack and everything below the
//!   boot info page are *not* accessible;
//! * every byte of guest memory the image does not cover is zero, bss included.
//!
//! There is no interrupt and no exception handler: any CPU exception (a null
//! dereference, `ud2`, `int3`, `hlt`, a `syscall`) ends the guest, and the monitor
//! reports it as a crash with the registers. A `syscall` never reaches the host
//! kernel on either platform.
//!
//! # Making a hypercall
//!
//! Call the gate as a System V function, `gate(call: u64, arg: u64)`: `rdi` = the
//! [`Hypercall`] number, `rsi` = the guest address of the call's argument struct (0
//! for calls without one). The gate preserves what a System V callee preserves
//! (`rbx`, `rbp`, `r12`–`r15`, the stack, the x87 and SSE control words, and FS and
//! GS bases) and clobbers the rest. The struct must lie wholly inside
//! [guest-owned memory](layout::GUEST_OWNED_START); pointers inside it are guest
//! addresses and are bounds-checked by the monitor, and results are only written to
//! memory the guest may write. A call that breaks these rules stops the guest with an
//! error naming the call — a guest can never crash or hang the monitor.
//!
//! On kvm the gate is a stub the monitor places in guest memory: it turns the call
//! into `out dx, eax` with `dx` = [`HYPERCALL_PORT_BASE`] + the number and `eax` =
//! the (32-bit) argument address, a VM exit. On process it is the monitor's own
//! entry point: a function call, with no exit and no host system call.
#![no_std]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub mod devices;

/// Bumped whenever a change to this crate would break an existing guest image.
///
/// Version 2: hypercalls go through [`BootInfo::hypercall_gate`], the boot info
/// moved above 64 KiB (so that an unprivileged process can map it), and
/// [`BootInfo::platform`] replaced `flags`. Version 3: a module (the root
/// filesystem of a Linux program) in guest memory ([`BootInfo::module_addr`]), and
/// [`Hypercall::SyscallEntry`], which makes a guest's `syscall` a call of its own
/// code rather than the end of it, with a return slot and, for rewritten sites, a
/// sled at address 0 ([`BootInfo::flags`], [`layout::SYSCALL_SLED_ADDR`]).
pub const ABI_VERSION: u32 = 3;

/// First I/O port of the hypercall range, used by the kvm platform's gate. Chosen
/// above the legacy PC ports the Linux microVM devices use (serial at 0x3f8 is far
/// away, 0x500 is free on a PC), so one exit handler can tell hypercalls from device
/// I/O by port alone.
pub const HYPERCALL_PORT_BASE: u16 = 0x500;

/// The port the kvm platform's `syscall` stub writes (`out imm8, eax`: no register
/// but `eax`, the call's number, is involved). Below 0x100 so the stub can name it
/// in the instruction itself.
pub const KVM_SYSCALL_PORT: u16 = 0xec;

/// Number of ports reserved for hypercalls, from [`HYPERCALL_PORT_BASE`]. Only these
/// ports are opened to the guest (through the TSS I/O-permission bitmap); any other
/// `in`/`out` faults.
pub const HYPERCALL_PORT_COUNT: u16 = 16;

/// Hypercall numbers: the gate's first argument (on kvm, the port is
/// `HYPERCALL_PORT_BASE + number`).
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypercall {
    /// Write bytes to the console. Argument: [`ConsoleWriteArgs`].
    ConsoleWrite = 1,
    /// End the VM with a status and an optional message. Argument: [`ExitArgs`].
    Exit = 2,
    /// The guest reached its application's `main`: the VMM stamps its boot time here.
    /// No argument (`eax` is ignored).
    BootDone = 3,
    /// Block until a device has work or the timeout passes. Argument: [`PollArgs`].
    /// Before waiting, the VMM services every device as [`Hypercall::Notify`] does.
    Poll = 4,
    /// Attach the network device's rings. Argument: [`devices::NetSetupArgs`].
    NetSetup = 5,
    /// Attach the block device's ring. Argument: [`devices::BlockSetupArgs`].
    BlockSetup = 6,
    /// Service every device once, without waiting: send the transmit ring, run the
    /// block requests, fill the receive ring with what has arrived. One exit per
    /// batch. Argument: [`devices::NotifyArgs`].
    Notify = 7,
    /// From now on, a `syscall` the guest executes is delivered to the guest
    /// itself: the monitor resumes it at [`SyscallEntryArgs::entry`] with every
    /// register as the instruction left it — `rcx` the address after it, `r11` the
    /// flags, `rax` the number, the arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`
    /// and `r9` — and the stack untouched, as a kernel's entry point would find
    /// them. For a guest that runs a Linux program (the Linux personality). An
    /// entry of 0 turns it off: a `syscall` then ends the guest again.
    SyscallEntry = 8,
}

impl Hypercall {
    /// Every hypercall, for code that needs to iterate or map ports back to calls.
    pub const ALL: [Hypercall; 8] = [
        Hypercall::ConsoleWrite,
        Hypercall::Exit,
        Hypercall::BootDone,
        Hypercall::Poll,
        Hypercall::NetSetup,
        Hypercall::BlockSetup,
        Hypercall::Notify,
        Hypercall::SyscallEntry,
    ];

    /// The I/O port a guest writes to make this call.
    pub const fn port(self) -> u16 {
        HYPERCALL_PORT_BASE + self as u16
    }

    /// The call a port belongs to, if any: the kvm platform's dispatch.
    pub fn from_port(port: u16) -> Option<Hypercall> {
        Self::ALL.into_iter().find(|call| call.port() == port)
    }

    /// The call a gate number names, if any: the process platform's dispatch.
    pub fn from_number(number: u64) -> Option<Hypercall> {
        Self::ALL
            .into_iter()
            .find(|call| u64::from(*call as u16) == number)
    }

    /// A stable lower-case name for error messages and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Hypercall::ConsoleWrite => "console_write",
            Hypercall::Exit => "exit",
            Hypercall::BootDone => "boot_done",
            Hypercall::Poll => "poll",
            Hypercall::NetSetup => "net_setup",
            Hypercall::BlockSetup => "block_setup",
            Hypercall::Notify => "notify",
            Hypercall::SyscallEntry => "syscall_entry",
        }
    }
}

/// Argument of [`Hypercall::ConsoleWrite`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ConsoleWriteArgs {
    /// Guest address of the bytes.
    pub buf: u64,
    /// Number of bytes, at most [`limits::CONSOLE_WRITE_MAX`].
    pub len: u64,
}

/// Argument of [`Hypercall::Exit`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExitArgs {
    /// The guest's exit status, `0..=`[`limits::GUEST_STATUS_MAX`]; the VMM's own
    /// outcomes (timeout, crash, ABI violation) use the codes above that range.
    pub status: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Guest address of a UTF-8 message shown with the exit (a panic message), or 0.
    pub msg: u64,
    /// Length of the message, at most [`limits::EXIT_MESSAGE_MAX`].
    pub msg_len: u64,
}

/// Argument of [`Hypercall::SyscallEntry`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SyscallEntryArgs {
    /// Guest address where a `syscall` resumes the guest; 0 to stop delivering.
    pub entry: u64,
    /// Guest address of 8 bytes of guest-owned, writable memory below 2 GiB,
    /// 8-aligned: where the call's return address (the `rcx` the `syscall` set)
    /// is left for `entry`, whose `rcx` holds nothing of the program's. (On kvm
    /// the call never leaves the VM: a CPL 0 stub stores `rcx` there and returns
    /// to `entry` at CPL 3, using `rcx` on the way.)
    pub return_slot: u64,
    /// Where a `syscall` site the guest rewrote into `call *%rax` goes, with `rcx`
    /// its return address (zpoline's idea): the monitor fills the page at
    /// [`layout::SYSCALL_SLED_ADDR`], where that `call` lands at the call's
    /// number, with `nop`s up to a `pop %rcx` and a jump here. 0, or a VM without
    /// [`BOOT_FLAG_SYSCALL_SLED`]: no sled. The `call` leaves its return address
    /// at -8(%rsp) of the program, inside the red zone — a hazard the guest
    /// accepts by asking for the sled.
    pub call_entry: u64,
}

/// Argument of [`Hypercall::Poll`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PollArgs {
    /// How long to wait at most, in nanoseconds; `u64::MAX` waits until a device is
    /// ready. Relative rather than a deadline so that the guest's TSC clock and the
    /// host's clock never need to agree.
    pub timeout_ns: u64,
    /// Out: a bit per device that has work ([`devices::READY_NET`],
    /// [`devices::READY_BLOCK`]); 0 after a plain timeout.
    pub ready: u64,
}

/// What the VMM tells the guest at boot, at [`layout::BOOT_INFO_ADDR`] (read-only).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`]: lets a guest tell a lightvm boot from garbage.
    pub magic: u64,
    /// The [`ABI_VERSION`] of the monitor; a guest built for another version may
    /// refuse.
    pub abi_version: u32,
    /// Which platform runs the guest: [`PLATFORM_KVM`] or [`PLATFORM_PROCESS`]. For
    /// messages and tests; a guest behaves the same on both.
    pub platform: u32,
    /// Bytes of guest memory, from address 0.
    pub mem_size: u64,
    /// First byte of free memory after the image (page-aligned): the heap.
    pub heap_start: u64,
    /// End of the heap (exclusive) = `mem_size`.
    pub heap_end: u64,
    /// Lowest mapped stack address.
    pub stack_bottom: u64,
    /// One past the highest stack address.
    pub stack_top: u64,
    /// Guest address of the command line (UTF-8, not NUL-terminated).
    pub cmdline_addr: u64,
    /// Length of the command line in bytes.
    pub cmdline_len: u64,
    /// TSC ticks per second, so the guest keeps time with `rdtsc` and no exit;
    /// 0 if the VMM could not learn it.
    pub tsc_hz: u64,
    /// Host wall-clock time (ns since the UNIX epoch) when the VM was started.
    pub wall_clock_ns: u64,
    /// Address of the hypercall gate (see "Making a hypercall" above). On kvm it
    /// lies in guest memory below the boot info; on process it is the monitor's own
    /// code, outside guest memory.
    pub hypercall_gate: u64,
    /// Guest address of the module the monitor loaded with the image (the root
    /// filesystem archive of a Linux program), page-aligned, read-only; 0 if none.
    /// It lies at the end of guest memory: `heap_end` stops below it.
    pub module_addr: u64,
    /// Bytes of the module.
    pub module_len: u64,
    /// [`BOOT_FLAG_SYSCALL_SLED`] where it applies.
    pub flags: u64,
}

/// [`BootInfo::flags`]: the page at [`layout::SYSCALL_SLED_ADDR`] is mapped for
/// the guest (read and execute), and the monitor fills it when the guest registers
/// a [`SyscallEntryArgs::call_entry`]: a VM for Linux programs on kvm, or on the
/// process platform when the monitor could map address 0 (root, or
/// `vm.mmap_min_addr` = 0).
pub const BOOT_FLAG_SYSCALL_SLED: u64 = 1;

/// [`BootInfo::platform`]: a KVM virtual machine.
pub const PLATFORM_KVM: u32 = 1;
/// [`BootInfo::platform`]: a seccomp-sandboxed host process.
pub const PLATFORM_PROCESS: u32 = 2;

/// Value of [`BootInfo::magic`]: "LIGHTVM" followed by the ABI version byte.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"LIGHTVM\x03");

/// Guest memory layout. Everything below [`layout::BOOT_INFO_ADDR`] belongs to the
/// monitor (on kvm: the GDT, the gate stub and the page tables; on process: nothing
/// is mapped there), and a guest may only hand the monitor addresses from
/// [`layout::GUEST_OWNED_START`] up.
///
/// ```text
/// 0x0000_0000  syscall sled             Linux VMs where mapped, user R+X
/// 0x0000_1000  GDT and TSS              kvm only, supervisor
/// 0x0000_2000  hypercall gate stub      kvm only, user R+X
/// 0x0000_3000  page tables …            kvm only, never mapped
/// 0x000b_e000  boot info, command line  R
/// 0x000b_f000  stack guard page         no access
/// 0x000c_0000  stack (256 KiB)          R+W+NX
/// 0x0010_0000  image segments, then the heap up to the end of memory
/// ```
pub mod layout {
    /// The granule of mapping and permissions.
    pub const PAGE_SIZE: u64 = 4096;
    /// The large-page size used for memory beyond the image.
    pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
    /// The GDT (kvm: mapped supervisor-only, so the CPU reads it and the guest
    /// cannot write it).
    pub const GDT_ADDR: u64 = 0x1000;
    /// The kvm platform's hypercall gate: a stub that makes the `out`.
    pub const KVM_GATE_ADDR: u64 = 0x2000;
    /// The kvm platform's `syscall` entry (LSTAR), in the gate's page: a CPL 0
    /// stub that reports the `syscall` to the monitor with `out` to
    /// [`KVM_SYSCALL_PORT`](super::KVM_SYSCALL_PORT), changing no register, or,
    /// once the guest registered an entry (`Hypercall::SyscallEntry`), one that
    /// hands the call to that entry without leaving the VM.
    pub const KVM_SYSCALL_STUB_ADDR: u64 = KVM_GATE_ADDR + 0x100;
    /// Bytes reserved for the stub at [`KVM_SYSCALL_STUB_ADDR`].
    pub const KVM_SYSCALL_STUB_BYTES: u64 = 64;
    /// The syscall sled of a VM for Linux programs (see
    /// [`BOOT_FLAG_SYSCALL_SLED`](super::BOOT_FLAG_SYSCALL_SLED)): one page at
    /// address 0, so that `call *%rax` with the call's number in `rax` lands in it.
    pub const SYSCALL_SLED_ADDR: u64 = 0;
    /// Bytes of the sled page.
    pub const SYSCALL_SLED_BYTES: u64 = PAGE_SIZE;
    /// Where the sled's `nop`s for the system calls end (every Linux x86-64
    /// number lies below), and its `pop %rcx; jmp *entry` (15 bytes) begins: a
    /// call slides over at most this many `nop`s. A second run of `nop`s after it
    /// leads numbers from `SYSCALL_SLED_REACH + 15` up to the page's last 16
    /// bytes to a second copy at the page's end, so that they reach the entry
    /// (which answers ENOSYS) too; the 15 numbers inside the first copy, and
    /// those beyond the page, have no meaning at a rewritten site.
    pub const SYSCALL_SLED_REACH: u64 = 512;
    /// First page-table page (kvm); tables grow upward from here and are never
    /// mapped.
    pub const PAGE_TABLES_ADDR: u64 = 0x3000;
    /// One past the last address page tables may use.
    pub const PAGE_TABLES_END: u64 = BOOT_INFO_ADDR;
    /// The [`BootInfo`](super::BootInfo) page (user read-only): the lowest address a
    /// guest sees. It lies above 64 KiB, the `vm.mmap_min_addr` of a stock Debian,
    /// so that an unprivileged process can map it on the process platform.
    pub const BOOT_INFO_ADDR: u64 = STACK_BOTTOM - 2 * PAGE_SIZE;
    /// The command line, in the boot-info page after the struct.
    pub const CMDLINE_ADDR: u64 = BOOT_INFO_ADDR + 0x400;
    /// Bytes of stack.
    pub const STACK_SIZE: u64 = 256 << 10;
    /// One past the top of the stack; `rsp` starts 8 below.
    pub const STACK_TOP: u64 = IMAGE_MIN_ADDR;
    /// Lowest stack address; the page below is an unmapped guard.
    pub const STACK_BOTTOM: u64 = STACK_TOP - STACK_SIZE;
    /// The first address of memory the guest owns (its stack, image and heap, up to
    /// the end of memory): every address a guest hands the monitor must lie at or
    /// above it, and the monitor writes on the guest's behalf only there.
    pub const GUEST_OWNED_START: u64 = STACK_BOTTOM;
    /// The lowest address an image segment may load at (the linker scripts use it).
    pub const IMAGE_MIN_ADDR: u64 = 0x10_0000;
    /// Guest memory must be a multiple of this (the large-page size).
    pub const MEM_ALIGN: u64 = LARGE_PAGE_SIZE;
    /// Smallest guest memory.
    pub const MEM_MIN: u64 = 2 << 20;
    /// Largest guest memory: hypercall arguments are passed as 32-bit addresses.
    pub const MEM_MAX: u64 = 3 << 30;
    /// GDT selector of the 64-bit user code segment (RPL 3).
    pub const USER_CODE_SELECTOR: u16 = 0x23;
    /// GDT selector of the user data segment (RPL 3).
    pub const USER_DATA_SELECTOR: u16 = 0x1b;
}

/// Bounds the VMM enforces so that no guest can exhaust it.
pub mod limits {
    use super::layout;
    /// Largest single console write; more is an ABI violation (split it).
    pub const CONSOLE_WRITE_MAX: u64 = 64 << 10;
    /// Console bytes per second a guest may emit; beyond it output is dropped (and the
    /// drop is reported), so a flooding guest cannot fill the host's disk or terminal.
    pub const CONSOLE_BYTES_PER_SEC: u64 = 1 << 20;
    /// Largest exit message; longer ones are cut.
    pub const EXIT_MESSAGE_MAX: u64 = 4 << 10;
    /// Largest command line.
    pub const CMDLINE_MAX: u64 =
        layout::PAGE_SIZE - (layout::CMDLINE_ADDR - layout::BOOT_INFO_ADDR);
    /// Highest exit status a guest may use.
    pub const GUEST_STATUS_MAX: u32 = 123;
    /// The status libos exits with when the application panics (as Rust's std does).
    pub const PANIC_STATUS: u32 = 101;
}

// The layout's invariants, checked when the crate compiles: a change that breaks one
// cannot build, on either side of the contract.
const _: () = {
    use layout::*;
    assert!(BOOT_INFO_ADDR + core::mem::size_of::<BootInfo>() as u64 <= CMDLINE_ADDR);
    assert!(CMDLINE_ADDR + limits::CMDLINE_MAX == BOOT_INFO_ADDR + PAGE_SIZE);
    assert!(GDT_ADDR + PAGE_SIZE <= KVM_GATE_ADDR);
    assert!(KVM_GATE_ADDR + PAGE_SIZE <= PAGE_TABLES_ADDR);
    assert!(KVM_SYSCALL_STUB_ADDR + KVM_SYSCALL_STUB_BYTES <= KVM_GATE_ADDR + PAGE_SIZE);
    assert!(KVM_SYSCALL_PORT < 0x100);
    assert!(PAGE_TABLES_ADDR < PAGE_TABLES_END);
    assert!(PAGE_TABLES_END <= BOOT_INFO_ADDR);
    // Mappable by an unprivileged process under Debian's vm.mmap_min_addr.
    assert!(BOOT_INFO_ADDR >= 0x10000);
    // The guard page sits between the boot info and the stack.
    assert!(BOOT_INFO_ADDR + 2 * PAGE_SIZE == STACK_BOTTOM);
    assert!(GUEST_OWNED_START == STACK_BOTTOM);
    assert!(STACK_TOP <= IMAGE_MIN_ADDR);
    assert!(MEM_MAX <= u32::MAX as u64 + 1);
    assert!(MEM_MIN.is_multiple_of(MEM_ALIGN));
    assert!(BOOT_INFO_MAGIC >> 56 == ABI_VERSION as u64);
    let mut i = 0;
    while i < Hypercall::ALL.len() {
        assert!((Hypercall::ALL[i] as u16) < HYPERCALL_PORT_COUNT);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_maps_back_to_its_call() {
        for call in Hypercall::ALL {
            assert_eq!(Hypercall::from_number(call as u16 as u64), Some(call));
        }
        assert_eq!(Hypercall::from_number(0), None);
        assert_eq!(Hypercall::from_number(u64::MAX), None);
        assert_eq!(Hypercall::from_number(1 << 16 | 1), None);
    }

    #[test]
    fn every_port_maps_back_to_its_call() {
        for call in Hypercall::ALL {
            assert_eq!(Hypercall::from_port(call.port()), Some(call));
        }
        assert_eq!(Hypercall::from_port(HYPERCALL_PORT_BASE), None);
        assert_eq!(Hypercall::from_port(0x3f8), None);
    }
}
