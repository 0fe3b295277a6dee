//! Hypercalls: the only way a unikernel talks to the monitor.
//!
//! A hypercall is a call of the monitor's gate, whose address the boot info carries
//! (`lightvm-abi`, "Making a hypercall"): `rdi` selects the call and `rsi` carries the
//! guest address of the call's argument struct. On the kvm platform the gate is a
//! stub that makes an `out` (a VM exit, ~18 µs on the development machines); on the
//! process platform it is a function call into the monitor. Either way the wrappers
//! here batch what they can, and callers should too.
//!
//! The typed wrappers are safe: they build the argument struct on the stack from
//! Rust references, so every address they pass is valid guest memory. [`raw`] is the
//! primitive they share, public for tests and low-level applications that need to
//! hand the monitor arguments no safe wrapper would produce.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{ConsoleWriteArgs, ExitArgs, Hypercall, PollArgs};

/// The gate's address, once `_start` has taken it from the checked boot info; 0
/// before (and when the boot info could not be trusted).
static GATE: AtomicU64 = AtomicU64::new(0);

/// Makes later hypercalls go through the gate at `address`.
///
/// # Safety
///
/// `address` must be the hypercall gate of the boot info the monitor passed.
pub(crate) unsafe fn set_gate(address: u64) {
    GATE.store(address, Ordering::Relaxed);
}

/// Makes hypercall `call` with `arg` as its argument struct (null for calls without
/// one) and returns once the monitor resumes the guest, with any `out` fields
/// written.
///
/// The asm block keeps the default options, so the compiler treats it as reading and
/// writing memory: the struct is fully stored before the call and re-read after it.
/// Before `_start` has found the gate (a boot info it had to refuse) there is no
/// gate to call: the call falls back to the kvm platform's `out`, which reaches a
/// kvm monitor and ends the guest with a crash report anywhere else.
///
/// For tests and low-level applications; everything else should use the typed
/// wrappers in this module.
///
/// # Safety
///
/// `arg` must be null or point to a properly initialised argument struct of the type
/// `call` expects, valid for reads and writes for the duration of the call. Addresses
/// *inside* the struct are checked by the monitor, not by the CPU: a bad one stops
/// the guest with an ABI-violation error instead of returning.
#[inline]
pub unsafe fn raw<T>(call: Hypercall, arg: *mut T) {
    let gate = GATE.load(Ordering::Relaxed);
    if gate == 0 {
        // SAFETY: `out` to a hypercall port only transfers control to a kvm monitor
        // (which writes nothing but the struct's `out` fields) or faults, which ends
        // the guest; the caller vouches for `arg`.
        unsafe {
            core::arch::asm!(
                "out dx, eax",
                in("dx") call.port(),
                in("rax") arg,
            );
        }
        return;
    }
    // SAFETY: the gate is a System V function of two arguments (lightvm-abi), which
    // `clobber_abi` describes; the caller guarantees `arg` is null or a valid
    // argument struct for `call`. Without `nostack` the compiler keeps the stack
    // aligned for the call and out of the red zone.
    unsafe {
        core::arch::asm!(
            "call {gate}",
            gate = in(reg) gate,
            in("rdi") call as u64,
            in("rsi") arg,
            clobber_abi("sysv64"),
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

/// Has every `syscall` the guest executes from now on resume it at `entry`, with
/// the registers as the instruction left them (`rax` the number, `r11` the
/// flags) except `rcx`: the call's return address is left at `return_slot`
/// (guest memory below 2 GiB, 8-aligned). For a guest that runs Linux programs.
/// An `entry` of 0 turns it off. `call_entry`, where the VM has a syscall sled
/// (`BootInfo::flags`), is where sites rewritten into `call *%rax` arrive, with
/// `rcx` their return address.
pub fn syscall_entry(entry: u64, return_slot: u64, call_entry: u64) {
    let mut args = crate::abi::SyscallEntryArgs {
        entry,
        return_slot,
        call_entry,
    };
    // SAFETY: `args` is a live SyscallEntryArgs on our stack; the monitor only
    // reads it, and checks the entry lies in guest memory.
    unsafe { raw(Hypercall::SyscallEntry, &mut args) };
}

/// Tells the VMM that the guest has booted and is about to run the application's
/// `main`: the VMM stamps its boot time here. Called once by `_start`.
pub fn boot_done() {
    // SAFETY: BootDone takes no argument; the monitor ignores it.
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
