//! The one contract between the lightvm VMM and every unikernel guest.
//!
//! Both sides compile this crate: the VMM (std, host) and `libos` (no_std, in the
//! guest). Anything a guest may rely on — where memory is, how it is mapped, how a
//! hypercall is made and what its arguments look like — is written down here and
//! nowhere else, so the two sides cannot drift apart.
//!
//! # Machine state at entry
//!
//! A unikernel runs entirely in **64-bit user mode (CPL 3)**. On the development
//! machines guest kernel-mode code is emulated instruction by instruction while
//! user-mode code runs natively, so the VMM does all kernel-mode work itself (paging,
//! GDT, control registers) and starts the guest straight at CPL 3:
//!
//! * `rip` = the ELF entry point, `rdi` = [`layout::BOOT_INFO_ADDR`] (a [`BootInfo`]),
//!   `rsp` = [`layout::STACK_TOP`] − 8 (as if `_start` had been called, so the stack
//!   has the alignment the System V ABI promises at function entry);
//! * `cs` = [`layout::USER_CODE_SELECTOR`], `ss`/`ds`/`es` = [`layout::USER_DATA_SELECTOR`];
//! * the TSS I/O-permission bitmap opens exactly the hypercall ports to CPL 3 (IOPL
//!   stays 0), so `out` to them works and every other port faults;
//! * SSE is enabled (`CR4.OSFXSR`), so code compiled for `x86_64-unknown-linux-gnu`
//!   runs unchanged; `rdtsc` is allowed (no `CR4.TSD`);
//! * memory is identity-mapped (guest virtual = guest physical) with the permissions
//!   of the ELF segments (text R+X, rodata R, data/bss R+W, heap and stack R+W+NX);
//!   page 0, the page tables and a guard page below the stack are *not* mapped;
//! * every byte of guest memory the image does not cover is zero, bss included.
//!
//! There is no IDT and no interrupt: any CPU exception (a null dereference, `ud2`, a
//! `syscall`, `hlt`) ends the VM, and the VMM reports it as a crash with the registers.
//!
//! # Making a hypercall
//!
//! `out dx, eax` with `dx` = [`HYPERCALL_PORT_BASE`] + the [`Hypercall`] number and
//! `eax` = the guest address of the call's argument struct (0 for calls without one).
//! The struct must lie wholly inside guest memory; pointers inside it are guest
//! addresses and are bounds-checked by the VMM. A call that breaks these rules stops
//! the VM with an error naming the call — a guest can never crash or hang the VMM.
//! The VMM writes results (the `out`-marked fields) back into the struct before the
//! guest resumes.
#![no_std]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub mod devices;

/// Bumped whenever a change to this crate would break an existing guest image.
pub const ABI_VERSION: u32 = 1;

/// First I/O port of the hypercall range. Chosen above the legacy PC ports the Linux
/// microVM devices use (serial at 0x3f8 is far away, 0x500 is free on a PC), so one
/// VMM exit handler can tell hypercalls from device I/O by port alone.
pub const HYPERCALL_PORT_BASE: u16 = 0x500;

/// Number of ports reserved for hypercalls, from [`HYPERCALL_PORT_BASE`]. Only these
/// ports are opened to the guest (through the TSS I/O-permission bitmap); any other
/// `in`/`out` faults.
pub const HYPERCALL_PORT_COUNT: u16 = 16;

/// Hypercall numbers; the port is `HYPERCALL_PORT_BASE + number`.
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
}

impl Hypercall {
    /// Every hypercall, for code that needs to iterate or map ports back to calls.
    pub const ALL: [Hypercall; 7] = [
        Hypercall::ConsoleWrite,
        Hypercall::Exit,
        Hypercall::BootDone,
        Hypercall::Poll,
        Hypercall::NetSetup,
        Hypercall::BlockSetup,
        Hypercall::Notify,
    ];

    /// The I/O port a guest writes to make this call.
    pub const fn port(self) -> u16 {
        HYPERCALL_PORT_BASE + self as u16
    }

    /// The call a port belongs to, if any: the VMM's dispatch.
    pub fn from_port(port: u16) -> Option<Hypercall> {
        Self::ALL.into_iter().find(|call| call.port() == port)
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
    /// The [`ABI_VERSION`] of the VMM; a guest built for another version may refuse.
    pub abi_version: u32,
    /// Reserved, zero.
    pub flags: u32,
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
}

/// Value of [`BootInfo::magic`]: "LIGHTVM" followed by the ABI version byte.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"LIGHTVM\x01");

/// Guest-physical memory layout. Everything below [`layout::IMAGE_MIN_ADDR`] belongs
/// to the VMM; an image may only load at or above it.
pub mod layout {
    /// The granule of mapping and permissions.
    pub const PAGE_SIZE: u64 = 4096;
    /// The large-page size used for memory beyond the image.
    pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
    /// The GDT (mapped supervisor-only: the CPU reads it, the guest cannot write it).
    pub const GDT_ADDR: u64 = 0x1000;
    /// The [`BootInfo`](super::BootInfo) page (user read-only).
    pub const BOOT_INFO_ADDR: u64 = 0x2000;
    /// The command line, in the boot-info page after the struct.
    pub const CMDLINE_ADDR: u64 = BOOT_INFO_ADDR + 0x400;
    /// First page-table page; tables grow upward from here and are never mapped.
    pub const PAGE_TABLES_ADDR: u64 = 0x3000;
    /// One past the last address page tables may use (the stack guard page starts here).
    pub const PAGE_TABLES_END: u64 = STACK_BOTTOM - PAGE_SIZE;
    /// Bytes of stack.
    pub const STACK_SIZE: u64 = 256 << 10;
    /// One past the top of the stack; `rsp` starts 8 below.
    pub const STACK_TOP: u64 = IMAGE_MIN_ADDR;
    /// Lowest stack address; the page below is an unmapped guard.
    pub const STACK_BOTTOM: u64 = STACK_TOP - STACK_SIZE;
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
    assert!(GDT_ADDR + PAGE_SIZE <= BOOT_INFO_ADDR);
    assert!(BOOT_INFO_ADDR + PAGE_SIZE <= PAGE_TABLES_ADDR);
    assert!(PAGE_TABLES_ADDR < PAGE_TABLES_END);
    assert!(PAGE_TABLES_END < STACK_BOTTOM);
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
    fn every_port_maps_back_to_its_call() {
        for call in Hypercall::ALL {
            assert_eq!(Hypercall::from_port(call.port()), Some(call));
        }
        assert_eq!(Hypercall::from_port(HYPERCALL_PORT_BASE), None);
        assert_eq!(Hypercall::from_port(0x3f8), None);
    }
}
