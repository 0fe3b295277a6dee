//! Hypercalls: the only way a unikernel talks to the VMM.
//!
//! The guest runs at CPL 3 and the VMM's TSS I/O bitmap opens the hypercall ports to
//! it, so a hypercall is a single `out dx, eax`: `dx` selects the call ([`Hypercall::port`]) and `eax` carries the
//! 32-bit guest address of the call's argument struct (see the `lightvm-abi` crate).
//! Every hypercall is a VM exit (~18 µs on the development machines), so the wrappers
//! here batch what they can and callers should too.
//!
//! The typed wrappers are safe: they build the argument struct on the stack from
//! Rust references, so every address they pass is valid guest memory. [`raw`] is the
//! primitive they share, public for tests and low-level applications that need to
//! hand the VMM arguments no safe wrapper would produce.

use crate::abi::{ConsoleWriteArgs, ExitArgs, Hypercall, PollArgs};

/// Makes hypercall `call` with `arg` as its argument struct (null for calls without
/// one) and returns once the VMM resumes the guest, with any `out` fields written.
///
/// The pointer travels in `rax` (its provenance intact); `out dx, eax` hands the VMM
/// its low 32 bits, which is the whole address because guest memory ends below
/// [`crate::abi::layout::MEM_MAX`] ≤ 4 GiB. The `asm!` block keeps the default options, so
/// the compiler treats it as reading and writing memory: the struct is fully stored
/// before the exit and re-read after it.
///
/// For tests and low-level applications; everything else should use the typed
/// wrappers in this module.
///
/// # Safety
///
/// `arg` must be null or point to a properly initialised argument struct of the type
/// `call` expects, valid for reads and writes for the duration of the call. Addresses
/// *inside* the struct are checked by the VMM, not by the CPU: a bad one stops the VM
/// with an ABI-violation error instead of returning.
#[inline]
pub unsafe fn raw<T>(call: Hypercall, arg: *mut T) {
    // SAFETY: the caller guarantees `arg` is null or a valid argument struct for
    // `call`; `out` to a hypercall port is permitted at CPL 3 (the TSS I/O bitmap opens these ports) and only
    // transfers control to the VMM, which writes nothing but the struct's `out` fields.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") call.port(),
            in("rax") arg,
        );
    }
}

/// Writes `bytes` to the console, in as few hypercalls as the ABI's
/// [`crate::abi::limits::CONSOLE_WRITE_MAX`] allows (one, for anything shorter).
pub fn console_write(bytes: &[u8]) {
    // `CONSOLE_WRITE_MAX` is 64 KiB: it fits any usize.
    for chunk in bytes.chunks(crate::abi::limits::CONSOLE_WRITE_MAX as usize) {
        let mut args = ConsoleWriteArgs {
            buf: chunk.as_ptr() as u64,
            len: chunk.len() as u64,
        };
        // SAFETY: `args` is a live ConsoleWriteArgs on our stack, and `buf..buf+len`
        // is the borrowed `chunk`, readable guest memory for the whole call.
        unsafe { raw(Hypercall::ConsoleWrite, &mut args) };
    }
}

/// Ends the VM with `status` and an optional message shown with it (a panic message;
/// the VMM cuts it at [`crate::abi::limits::EXIT_MESSAGE_MAX`] bytes). Never returns.
///
/// `status` should lie in `0..=`[`crate::abi::limits::GUEST_STATUS_MAX`]; the VMM decides what
/// to make of anything else, which is why applications call [`crate::exit`] instead,
/// which enforces that range.
pub fn exit(status: u32, msg: &str) -> ! {
    let mut args = ExitArgs {
        status,
        reserved: 0,
        msg: if msg.is_empty() {
            0
        } else {
            msg.as_ptr() as u64
        },
        msg_len: msg.len() as u64,
    };
    // SAFETY: `args` is a live ExitArgs on our stack; `msg` is a borrowed, readable
    // UTF-8 string (or absent, with address 0 and length 0).
    unsafe { raw(Hypercall::Exit, &mut args) };
    // The VMM never resumes a guest after `exit`. Should one ever do so, crash on an
    // invalid opcode (the VMM reports it) rather than return into code that believes
    // it ended, or spin where nobody would notice.
    // SAFETY: `ud2` only raises #UD, which ends the VM; it touches no memory.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// Tells the VMM that the guest has booted and is about to run the application's
/// `main`: the VMM stamps its boot time here. Called once by `_start`.
pub fn boot_done() {
    // SAFETY: BootDone takes no argument; the VMM ignores `eax`.
    unsafe { raw(Hypercall::BootDone, core::ptr::null_mut::<u8>()) };
}

/// Blocks until a device has work or `timeout_ns` nanoseconds pass (`u64::MAX`: no
/// timeout) and returns the bit set of ready devices (0 after a plain timeout).
///
/// Blocking in the VMM rather than spinning on the clock leaves the host CPU to other
/// VMs, which is what makes many idle guests per host cheap.
pub fn poll(timeout_ns: u64) -> u64 {
    let mut args = PollArgs {
        timeout_ns,
        ready: 0,
    };
    // SAFETY: `args` is a live PollArgs on our stack; the VMM writes only `ready`.
    unsafe { raw(Hypercall::Poll, &mut args) };
    args.ready
}

/// Services every device once without waiting (`notify`): the VMM sends what the
/// transmit ring holds, runs the queued block requests and fills the receive ring.
/// Returns the `READY_*` bits of `crate::abi::devices`. One exit, whatever the batch.
pub fn notify() -> u64 {
    let mut args = crate::abi::devices::NotifyArgs { ready: 0 };
    // SAFETY: `args` is a live NotifyArgs on our stack; the VMM writes only `ready`.
    unsafe { raw(Hypercall::Notify, &mut args) };
    args.ready
}
