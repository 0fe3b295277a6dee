//! `_start`: where the VMM enters the guest, and the road from there to `main`.
//!
//! The VMM starts the vCPU at the ELF entry point in 64-bit user mode with
//! `rdi` = the [`BootInfo`] address and `rsp` = stack top − 8 (the alignment of a
//! freshly called function), with all memory identity-mapped. It also zeroes every
//! byte of guest memory the image does not cover — `.bss` included — so `_start`
//! relies on that contract (`lightvm-abi`, "Machine state at entry") and does not
//! zero `.bss` again: that would only touch, and so fault in, pages for nothing.
//!
//! In order, `_start`:
//! 1. reads the TSC (the clock's zero);
//! 2. checks the boot info ([`boot::check`]) and ends the VM with
//!    [`CONTRACT_ERROR`](crate::process::CONTRACT_ERROR) and a message if it is
//!    unusable;
//! 3. keeps the boot info, sets up the clocks and the heap;
//! 4. makes the `boot_done` hypercall, so the VMM can time the boot;
//! 5. calls the application's `main` (see [`entry!`](crate::entry)) and exits with its
//!    status.

use crate::abi::{limits::GUEST_STATUS_MAX, BootInfo};
use crate::{boot, heap, hypercall, process, time};

extern "Rust" {
    /// The application's entry, defined by [`entry!`](crate::entry).
    fn __libos_main() -> i32;
    /// Whether the application initialises the heap and reports boot-done itself
    /// (`entry!(main, manual_start)`), defined by [`entry!`](crate::entry).
    static __libos_manual_start: bool;
}

extern "C" {
    /// First byte after the image, page-aligned (defined by the linker script).
    static __image_end: u8;
}

/// The guest's entry point (the ELF entry): sets the library up and runs `main`.
///
/// Placed in `.text.start`, which the linker script puts first in the image.
///
/// # Safety
///
/// Only the VMM may call this, once, in the machine state `lightvm-abi` describes,
/// with `boot_info` pointing to the boot info.
#[no_mangle]
#[link_section = ".text.start"]
pub unsafe extern "C" fn _start(boot_info: *const BootInfo) -> ! {
    let boot_tsc = time::rdtsc();
    if boot_info.is_null() || !boot_info.is_aligned() {
        process::exit_with_message(
            GUEST_STATUS_MAX,
            format_args!("libos: {}", boot::BootError::BadPointer(boot_info as u64)),
        );
    }
    // SAFETY: the VMM passes the address of the boot-info page, mapped read-only for
    // the whole run (non-null and aligned, checked above); every bit pattern is a
    // valid BootInfo, so reading it is sound whatever the VMM wrote.
    let info = unsafe { &*boot_info };
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    if let Err(err) = boot::check(info, image_end) {
        process::exit_with_message(GUEST_STATUS_MAX, format_args!("libos: {err}"));
    }
    // SAFETY: `info` is the checked boot info, which stays mapped and unchanged.
    unsafe { boot::record(boot_info) };
    time::init(boot_tsc, info.tsc_hz, info.wall_clock_ns);
    // SAFETY: `entry!` defines the flag as a plain bool.
    let manual_start = unsafe { __libos_manual_start };
    if !manual_start {
        // SAFETY: `check` placed the heap between the image's end and the end of
        // guest memory, which the VMM maps writable and leaves to the guest; this
        // is the one call, before any allocation. With `entry!(main, manual_start)`
        // the application makes it, on the part of the heap it chooses.
        unsafe { heap::init(info.heap_start, info.heap_end) };
        hypercall::boot_done();
    }
    // SAFETY: `__libos_main` is the safe Rust function `entry!` defines.
    let status = unsafe { __libos_main() };
    process::exit(status)
}
