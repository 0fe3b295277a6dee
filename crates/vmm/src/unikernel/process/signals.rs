//! Signals on the process platform: how a guest's CPU exceptions, its `syscall`s
//! and its deadline stop it, and how the monitor learns what happened.
//!
//! A guest runs on the monitor's thread, so its faults arrive as signals: SIGSEGV
//! (page faults, #GP from `hlt` or a port), SIGILL (`ud2`), SIGFPE, SIGTRAP
//! (`int3`), SIGBUS, and SIGSYS from the seccomp filter for a `syscall`. The timeout
//! arrives as the deadline timer's kick signal. One handler serves them all, on an
//! alternate stack (the guest's stack may be the very thing that overflowed). When
//! it interrupted the guest, it copies the registers and the fault out of the signal
//! frame into [`StopRecord`] and makes the interrupted context resume at the gate's
//! `lightvm_guest_stopped`, which returns from `gate::enter`; the kernel's
//! `rt_sigreturn` restores the signal mask on the way. When it interrupted the
//! monitor, a kick does nothing (it only ends a wait early, as on kvm) and a fault is
//! the monitor's own: the default action takes over.
//!
//! The handler runs with whatever FS base the guest left, so it touches no
//! thread-local, makes its system calls itself and never allocates or panics.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use super::gate::{self, LIGHTVM_GATE_STATE};
use crate::error::HostError;

/// The signals a guest raises by faulting.
pub const FAULT_SIGNALS: [libc::c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Bytes of each thread's alternate signal stack.
const ALT_STACK_SIZE: usize = 64 << 10;

/// How a signal stopped the guest, copied from the signal frame.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct StopRecord {
    /// The signal.
    pub signal: libc::c_int,
    /// Its `si_code`.
    pub code: libc::c_int,
    /// The CPU exception vector (`REG_TRAPNO`), for the faults that have one.
    pub trapno: u64,
    /// The faulting address (CR2) of a page fault.
    pub cr2: u64,
    /// SIGSYS: the system call number.
    pub syscall: i64,
    /// The general registers, indexed by `libc::REG_*`.
    pub gregs: [i64; 23],
}

struct StopCell(UnsafeCell<StopRecord>);

// SAFETY: written only by the signal handler on the guest's thread while the guest
// runs, read only by that thread after `gate::enter` returned; never both at once.
unsafe impl Sync for StopCell {}

static STOP: StopCell = StopCell(UnsafeCell::new(StopRecord {
    signal: 0,
    code: 0,
    trapno: 0,
    cr2: 0,
    syscall: 0,
    gregs: [0; 23],
}));

/// What the handler recorded when it stopped the last guest.
///
/// # Safety
///
/// Only the thread that ran the guest may call this, after `gate::enter` returned
/// [`gate::STOPPED_BY_SIGNAL`].
pub unsafe fn last_stop() -> StopRecord {
    // SAFETY: the handler wrote it before the guest's context was redirected, and
    // no guest runs now (the caller's guarantee).
    unsafe { *STOP.0.get() }
}

/// The calling thread's id, through the system call itself (no libc errno, which
/// lives in a thread-local).
pub fn gettid() -> u64 {
    let tid: u64;
    // SAFETY: gettid takes no argument and cannot fail; `syscall` clobbers only
    // rcx and r11, declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_gettid as u64 => tid,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    tid
}

/// Installs the handler for the fault signals and the deadline kick (once per
/// process), and an alternate signal stack for the calling thread (once per thread).
pub fn install() -> Result<(), HostError> {
    static INSTALLED: Once = Once::new();
    static INSTALL_ERROR: AtomicI32 = AtomicI32::new(0);
    INSTALLED.call_once(|| {
        for signal in FAULT_SIGNALS
            .into_iter()
            .chain([crate::timer::kick_signal()])
        {
            if let Err(errno) = set_handler(signal) {
                INSTALL_ERROR.store(errno, Ordering::Relaxed);
            }
        }
    });
    let error = INSTALL_ERROR.load(Ordering::Relaxed);
    if error != 0 {
        return Err(HostError {
            op: "installing the process platform's signal handlers",
            source: std::io::Error::from_raw_os_error(error),
        });
    }
    install_alt_stack()
}

/// Installs the handler for the deadline kick alone: what a kvm run needs (the
/// signal only has to interrupt `KVM_RUN` or a wait).
pub fn install_kick() -> Result<(), HostError> {
    static INSTALLED: Once = Once::new();
    static INSTALL_ERROR: AtomicI32 = AtomicI32::new(0);
    INSTALLED.call_once(|| {
        if let Err(errno) = set_handler(crate::timer::kick_signal()) {
            INSTALL_ERROR.store(errno, Ordering::Relaxed);
        }
    });
    match INSTALL_ERROR.load(Ordering::Relaxed) {
        0 => Ok(()),
        errno => Err(HostError {
            op: "installing the vCPU kick signal handler",
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}

fn set_handler(signal: libc::c_int) -> Result<(), libc::c_int> {
    // SAFETY: sigaction is plain data; all-zero is a valid start.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid sigset to fill: every signal is blocked while the
    // handler runs, so it never nests.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    // SAFETY: installs a handler that is async-signal-safe (see the module docs).
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(())
}

fn install_alt_stack() -> Result<(), HostError> {
    thread_local! {
        static HAS_ALT_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if HAS_ALT_STACK.with(std::cell::Cell::get) {
        return Ok(());
    }
    // SAFETY: a new private anonymous mapping; touches no existing memory.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(HostError {
            op: "mapping the signal stack",
            source: std::io::Error::last_os_error(),
        });
    }
    let alt = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK_SIZE,
    };
    // SAFETY: `alt` describes the mapping just made, which is never unmapped (one
    // per thread that runs guests, for the life of the process).
    if unsafe { libc::sigaltstack(&alt, std::ptr::null_mut()) } != 0 {
        return Err(HostError {
            op: "installing the signal stack",
            source: std::io::Error::last_os_error(),
        });
    }
    HAS_ALT_STACK.with(|has| has.set(true));
    Ok(())
}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` (x86-64): after `si_signo`,
/// `si_errno`, `si_code`, padding and `si_call_addr`.
const SI_SYSCALL_OFFSET: usize = 24;
/// Offset of `si_addr` in a fault's `siginfo_t`.
const SI_ADDR_OFFSET: usize = 16;
/// RFLAGS.DF.
const RFLAGS_DF: i64 = 1 << 10;

extern "C" fn on_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let state = LIGHTVM_GATE_STATE.get();
    // SAFETY: the gate state is plain data; reading it from a handler is what it is
    // for (volatile: the interrupted code may be mid-update).
    let (in_guest, guest_tid, monitor_rsp, syscall_entry, return_slot) = unsafe {
        (
            std::ptr::read_volatile(&(*state).in_guest) != 0,
            std::ptr::read_volatile(&(*state).guest_tid),
            std::ptr::read_volatile(&(*state).monitor_rsp),
            std::ptr::read_volatile(&(*state).syscall_entry),
            std::ptr::read_volatile(&(*state).syscall_return_slot),
        )
    };
    if info.is_null() || context.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let context = unsafe { &mut *context.cast::<libc::ucontext_t>() };
    // SAFETY: `info` is the kernel's siginfo for this signal; the fields read at
    // these offsets exist for SIGSYS and the fault signals respectively.
    let (syscall, si_addr) = unsafe {
        let base = info.cast::<u8>();
        (
            i64::from(std::ptr::read_unaligned(
                base.add(SI_SYSCALL_OFFSET).cast::<i32>(),
            )),
            std::ptr::read_unaligned(base.add(SI_ADDR_OFFSET).cast::<u64>()),
        )
    };
    if !in_guest || gettid() != guest_tid {
        monitor_signal(signal, syscall, context);
        return;
    }
    let gregs = &mut context.uc_mcontext.gregs;
    if signal == libc::SIGSYS && syscall_entry != 0 {
        // The guest handles its own system calls (a Linux personality): resume it
        // at its entry as a kernel would find the call — rax the number (the
        // kernel put -ENOSYS there), r11 as the `syscall` set it, and the return
        // address (rcx) in its slot, as the ABI says for both platforms.
        // SAFETY: the core checked the slot is 8 aligned bytes of guest-owned,
        // writable memory, which this platform maps at the guest's own addresses
        // for as long as the guest runs; the guest is stopped in this handler.
        unsafe {
            std::ptr::write_volatile(
                return_slot as *mut u64,
                gregs[libc::REG_RCX as usize] as u64,
            );
        }
        gregs[libc::REG_RAX as usize] = syscall;
        gregs[libc::REG_RIP as usize] = syscall_entry as i64;
        return;
    }
    let record = StopRecord {
        signal,
        // SAFETY: `si_code` is common to every siginfo.
        code: unsafe { (*info).si_code },
        trapno: gregs[libc::REG_TRAPNO as usize] as u64,
        cr2: if signal == libc::SIGSEGV || signal == libc::SIGBUS {
            si_addr
        } else {
            gregs[libc::REG_CR2 as usize] as u64
        },
        syscall,
        gregs: *gregs,
    };
    // SAFETY: only this handler writes the record, on the guest's thread, while the
    // guest (not the monitor) runs; see StopCell.
    unsafe { *STOP.0.get() = record };
    // SAFETY: see above; the guest is over from here on.
    unsafe { std::ptr::write_volatile(&mut (*state).in_guest, 0) };
    gregs[libc::REG_RIP as usize] = gate::stopped_address() as i64;
    gregs[libc::REG_RSP as usize] = monitor_rsp as i64;
    gregs[libc::REG_EFL as usize] &= !RFLAGS_DF;
}

/// A signal that interrupted the monitor rather than a guest.
fn monitor_signal(signal: libc::c_int, syscall: i64, context: &mut libc::ucontext_t) {
    if signal == crate::timer::kick_signal() {
        // Its only job was to interrupt a wait or KVM_RUN.
        return;
    }
    if signal == libc::SIGSYS {
        // The sandbox refused one of the monitor's own calls: say which, and let the
        // call fail with EPERM rather than kill a process that may still report.
        write_refusal(syscall);
        context.uc_mcontext.gregs[libc::REG_RAX as usize] = -i64::from(libc::EPERM);
        return;
    }
    // A fault of the monitor itself: take the default action (a core dump) when the
    // faulting instruction runs again.
    // SAFETY: sigaction is plain data; SIG_DFL needs no handler.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_DFL;
    // SAFETY: restores the default disposition of one signal.
    unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
}

/// "lightvm: the sandbox refused system call N of the monitor" on stderr, without
/// allocating.
fn write_refusal(number: i64) {
    let mut line =
        *b"lightvm: the process sandbox refused the monitor's system call                    \n";
    let prefix = b"lightvm: the process sandbox refused the monitor's system call ".len();
    let mut digits = [0u8; 20];
    let mut n = number.unsigned_abs();
    let mut len = 0;
    loop {
        if let Some(digit) = digits.get_mut(len) {
            *digit = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    for i in 0..len {
        if let (Some(slot), Some(&digit)) = (line.get_mut(prefix + i), digits.get(len - 1 - i)) {
            *slot = digit;
        }
    }
    let end = (prefix + len).min(line.len() - 1);
    if let Some(newline) = line.get_mut(end) {
        *newline = b'\n';
    }
    // SAFETY: write(2, line, end + 1): a buffer on our stack, valid for the call.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_write => _,
            in("rdi") 2,
            in("rsi") line.as_ptr(),
            in("rdx") end + 1,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
}
