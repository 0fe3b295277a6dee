//! What the VMM told the guest at boot, checked once and kept for the whole run.
//!
//! The VMM passes a [`BootInfo`] at [`abi::layout::BOOT_INFO_ADDR`], in a page it maps
//! read-only for the lifetime of the VM, so `libos` keeps a pointer to it rather than
//! a copy. `_start` checks every field the library relies on ([`check`]) before
//! anything uses it: a VMM of another ABI version, or a bug on its side, stops the
//! guest with a message naming the problem instead of undefined behaviour later.
//!
//! The accessors use atomics only to have safe statics; there is one vCPU and no
//! interrupt, so `Relaxed` is all the ordering there is to have.

use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::abi::{self, BootInfo};

/// The boot info, once `_start` has checked it; null before.
static BOOT_INFO: AtomicPtr<BootInfo> = AtomicPtr::new(ptr::null_mut());
/// The command line, once `_start` has found it to be UTF-8; empty otherwise.
static CMDLINE_PTR: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static CMDLINE_LEN: AtomicUsize = AtomicUsize::new(0);

/// What [`boot_info`] returns before `_start` has run (all zero: no memory, no clock).
static NO_BOOT_INFO: BootInfo = BootInfo {
    magic: 0,
    abi_version: 0,
    platform: 0,
    mem_size: 0,
    heap_start: 0,
    heap_end: 0,
    stack_bottom: 0,
    stack_top: 0,
    cmdline_addr: 0,
    cmdline_len: 0,
    tsc_hz: 0,
    wall_clock_ns: 0,
    hypercall_gate: 0,
    module_addr: 0,
    module_len: 0,
    flags: 0,
};

/// The boot info the VMM passed, as checked by `_start`.
///
/// Before `_start` has run (which no application code can observe) it is an all-zero
/// `BootInfo` rather than a panic.
pub fn boot_info() -> &'static BootInfo {
    let info = BOOT_INFO.load(Ordering::Relaxed);
    if info.is_null() {
        &NO_BOOT_INFO
    } else {
        // SAFETY: only `record` stores a non-null pointer: the checked boot-info page,
        // which the VMM keeps mapped (read-only, never written) for the whole run.
        unsafe { &*info }
    }
}

/// The command line the VM was started with (`lightvm run --cmdline …`).
///
/// Empty when there is none, and also when it is not valid UTF-8: the VMM passes the
/// bytes through unchecked, and an application that wants to parse its arguments is
/// better served by "no arguments" than by a string it cannot trust.
pub fn cmdline() -> &'static str {
    let ptr = CMDLINE_PTR.load(Ordering::Relaxed);
    if ptr.is_null() {
        return "";
    }
    let len = CMDLINE_LEN.load(Ordering::Relaxed);
    // SAFETY: `record` stored `ptr`/`len` together after `check` placed them inside
    // guest memory and after `from_utf8` accepted those very bytes; the boot-info page
    // that holds them stays mapped read-only for the whole run.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr, len)) }
}

/// The module the monitor loaded with the image (a Linux program's root
/// filesystem archive), read-only; empty if there is none.
pub fn module() -> &'static [u8] {
    let info = boot_info();
    if info.module_addr == 0 || info.module_len == 0 {
        return &[];
    }
    // SAFETY: `check` placed the module inside guest memory; the monitor maps it
    // read-only and never changes it for the whole run. `module_len` fits usize:
    // it is below the 3 GiB of the largest guest memory.
    unsafe { core::slice::from_raw_parts(info.module_addr as *const u8, info.module_len as usize) }
}

/// The value of `key=value` on the command line (words split at spaces), if any;
/// a bare `key` yields `Some("")`.
pub fn cmdline_arg(key: &str) -> Option<&'static str> {
    cmdline()
        .split_ascii_whitespace()
        .find_map(|word| match word.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if word == key => Some(""),
            _ => None,
        })
}

/// A way in which the boot info breaks the contract of `lightvm-abi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// `rdi` held 0 or a misaligned address instead of the boot info.
    BadPointer(u64),
    /// The magic number is not [`abi::BOOT_INFO_MAGIC`]: not a lightvm boot.
    BadMagic(u64),
    /// The VMM speaks another ABI version than this guest was built for.
    AbiVersion(u32),
    /// The heap range is reversed, lies outside guest memory, or overlaps the image.
    BadHeap {
        /// `heap_start` as given.
        start: u64,
        /// `heap_end` as given.
        end: u64,
    },
    /// The boot info names no hypercall gate.
    NoGate,
    /// The module lies outside guest memory.
    BadModule {
        /// `module_addr` as given.
        addr: u64,
        /// `module_len` as given.
        len: u64,
    },
    /// The command line lies outside guest memory or is longer than the ABI allows.
    BadCmdline {
        /// `cmdline_addr` as given.
        addr: u64,
        /// `cmdline_len` as given.
        len: u64,
    },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootError::BadPointer(addr) => {
                write!(f, "boot info pointer {addr:#x} is null or misaligned")
            }
            BootError::BadMagic(magic) => write!(
                f,
                "boot info magic is {magic:#018x}, expected {:#018x}: not a lightvm boot",
                abi::BOOT_INFO_MAGIC
            ),
            BootError::AbiVersion(version) => write!(
                f,
                "the VMM speaks ABI version {version}, this guest was built for version {}",
                abi::ABI_VERSION
            ),
            BootError::BadHeap { start, end } => write!(
                f,
                "heap {start:#x}..{end:#x} is reversed, outside guest memory or overlaps the image"
            ),
            BootError::NoGate => write!(f, "boot info names no hypercall gate"),
            BootError::BadModule { addr, len } => write!(
                f,
                "module at {addr:#x} ({len} bytes) lies outside guest memory"
            ),
            BootError::BadCmdline { addr, len } => write!(
                f,
                "command line at {addr:#x} ({len} bytes) is outside guest memory or too long"
            ),
        }
    }
}

/// Checks everything `libos` relies on in `info`; `image_end` is the first address
/// after the loaded image (`__image_end` from the linker script).
pub fn check(info: &BootInfo, image_end: u64) -> Result<(), BootError> {
    if info.magic != abi::BOOT_INFO_MAGIC {
        return Err(BootError::BadMagic(info.magic));
    }
    if info.abi_version != abi::ABI_VERSION {
        return Err(BootError::AbiVersion(info.abi_version));
    }
    if info.hypercall_gate == 0 {
        return Err(BootError::NoGate);
    }
    let mem_end = info.mem_size.min(abi::layout::MEM_MAX);
    if info.heap_start > info.heap_end || info.heap_start < image_end || info.heap_end > mem_end {
        return Err(BootError::BadHeap {
            start: info.heap_start,
            end: info.heap_end,
        });
    }
    let module_ok = info.module_len == 0
        || info
            .module_addr
            .checked_add(info.module_len)
            .is_some_and(|end| info.module_addr >= info.heap_end && end <= mem_end);
    if !module_ok {
        return Err(BootError::BadModule {
            addr: info.module_addr,
            len: info.module_len,
        });
    }
    let cmdline_ok = info.cmdline_len == 0
        || (info.cmdline_addr != 0
            && info.cmdline_len <= abi::limits::CMDLINE_MAX
            && info
                .cmdline_addr
                .checked_add(info.cmdline_len)
                .is_some_and(|end| end <= mem_end));
    if !cmdline_ok {
        return Err(BootError::BadCmdline {
            addr: info.cmdline_addr,
            len: info.cmdline_len,
        });
    }
    Ok(())
}

/// Keeps `info` (already [`check`]ed) for [`boot_info`] and [`cmdline`].
///
/// # Safety
///
/// `info` must point to the boot info the VMM passed, which `check` accepted; it and
/// the command line it names must stay mapped and unchanged for the rest of the run.
pub(crate) unsafe fn record(info: *const BootInfo) {
    BOOT_INFO.store(info.cast_mut(), Ordering::Relaxed);
    // SAFETY: the caller passes the checked, permanently mapped boot info.
    let info = unsafe { &*info };
    // SAFETY: the gate comes from the boot info the monitor passed, checked above.
    unsafe { crate::hypercall::set_gate(info.hypercall_gate) };
    if info.cmdline_len == 0 {
        return;
    }
    let ptr = info.cmdline_addr as *const u8;
    // `check` bounded the length by CMDLINE_MAX, which fits any usize.
    let len = info.cmdline_len as usize;
    // SAFETY: `check` placed `ptr..ptr+len` inside guest memory, which is identity
    // mapped; the VMM keeps the command line there, read-only, for the whole run.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    if core::str::from_utf8(bytes).is_ok() {
        CMDLINE_PTR.store(ptr.cast_mut(), Ordering::Relaxed);
        CMDLINE_LEN.store(len, Ordering::Relaxed);
    }
}
