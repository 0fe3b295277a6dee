//! The process platform's way in and out of the guest: a few instructions of
//! assembly that switch between the monitor's world and the guest's on one thread.
//!
//! * [`enter`] saves the monitor's callee-saved registers and stack pointer, puts the
//!   guest's stack in `rsp`, clears every other register and jumps to the entry
//!   point: the guest starts in the state the kvm platform gives it.
//! * The **gate** (`lightvm_hypercall_gate`, whose address the boot info carries) is
//!   what the guest calls to make a hypercall. It switches to the monitor's stack,
//!   puts back the monitor's FS base (the guest may have set its own with
//!   `wrfsbase`, and the monitor's Rust and C code keep their thread-locals there)
//!   and its SSE and x87 control words (a guest may unmask FP exceptions), clears the
//!   direction flag, and calls [`hypercall_entry`]. On the way back it restores the
//!   guest's FS and control words — or, when the guest is over, returns from
//!   [`enter`] instead.
//! * When a signal stops the guest (a fault, a `syscall`, the deadline), the signal
//!   handler points the interrupted context at `lightvm_guest_stopped`, which does the
//!   same return from [`enter`].
//!
//! One guest lives in a process at a time (the state here is global, and so is the
//! address range its memory takes): a [`GuestSlot`] is the right to that, held from
//! the shell's creation to the VM's end. The production layout is one guest per
//! process anyway. The guest shares the address space with this code: the gate is a way in,
//! not a wall. The wall is the seccomp filter (`sandbox`).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use lightvm_abi::Hypercall;

use crate::report::VmExit;
use crate::unikernel::core::{Core, Flow};

/// Whether a process-platform guest exists in this process.
static SLOT_TAKEN: AtomicBool = AtomicBool::new(false);

/// The right to the process's one guest: its memory range, the gate and the
/// signal state. Given back on drop.
#[derive(Debug)]
pub struct GuestSlot(());

impl GuestSlot {
    /// Takes the slot, or `None` if another guest of this process holds it.
    pub fn claim() -> Option<Self> {
        SLOT_TAKEN
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(GuestSlot(()))
    }
}

impl Drop for GuestSlot {
    fn drop(&mut self) {
        SLOT_TAKEN.store(false, Ordering::Release);
    }
}

/// What the assembly and the signal handler share. Offsets are fixed (`repr(C)`)
/// and named below for the assembly.
#[repr(C)]
pub struct GateState {
    /// The monitor's `rsp` inside `enter`, 16-byte aligned.
    pub monitor_rsp: u64,
    /// The guest's `rsp` while the gate runs the monitor.
    pub guest_rsp: u64,
    /// The monitor thread's FS base.
    pub monitor_fs: u64,
    /// The guest's FS base while the gate runs the monitor.
    pub guest_fs: u64,
    /// Non-zero when FS must be switched (the CPU and kernel allow `wrfsbase` in user
    /// mode; without that the guest cannot change FS at all).
    pub switch_fs: u64,
    /// Non-zero while guest code runs: the signal handler's test of whose fault it
    /// is (with the thread id).
    pub in_guest: u64,
    /// The guest's MXCSR and x87 control word while the gate runs the monitor.
    pub guest_mxcsr: u32,
    /// See `guest_mxcsr`.
    pub guest_fcw: u16,
    _pad0: u16,
    /// The monitor's MXCSR and x87 control word, put back for it on every entry.
    pub monitor_mxcsr: u32,
    /// See `monitor_mxcsr`.
    pub monitor_fcw: u16,
    _pad1: u16,
    /// The thread that runs the guest.
    pub guest_tid: u64,
    /// Where the guest's `syscall`s go (`Hypercall::SyscallEntry`); 0 while they
    /// end the guest. Copied from the core after every hypercall, for the signal
    /// handler.
    pub syscall_entry: u64,
    /// Where the handler leaves a delivered call's return address (the guest
    /// address, which on this platform is the monitor's address of the same
    /// byte); the core checked it is guest-owned, writable and aligned.
    pub syscall_return_slot: u64,
}

/// The one [`GateState`] of the process.
pub struct SharedState(UnsafeCell<GateState>);

// SAFETY: the state is written by the thread that holds the GuestSlot (before and after
// a run), by the assembly on that thread, and by the signal handler only when it
// interrupted that thread's guest; no two of them run at once.
unsafe impl Sync for SharedState {}

impl SharedState {
    /// A raw pointer for the owner of GUEST_LOCK and the signal handler.
    pub fn get(&self) -> *mut GateState {
        self.0.get()
    }
}

/// The state the assembly reads at fixed offsets.
#[no_mangle]
pub static LIGHTVM_GATE_STATE: SharedState = SharedState(UnsafeCell::new(GateState {
    monitor_rsp: 0,
    guest_rsp: 0,
    monitor_fs: 0,
    guest_fs: 0,
    switch_fs: 0,
    in_guest: 0,
    guest_mxcsr: 0,
    guest_fcw: 0,
    _pad0: 0,
    monitor_mxcsr: 0,
    monitor_fcw: 0,
    _pad1: 0,
    guest_tid: 0,
    syscall_entry: 0,
    syscall_return_slot: 0,
}));

/// `enter`'s result: the guest called `exit` or broke the ABI (the core holds how).
pub const ENDED_BY_HYPERCALL: u64 = 1;
/// `enter`'s result: a signal stopped the guest (`signals` recorded why).
pub const STOPPED_BY_SIGNAL: u64 = 2;

macro_rules! offset {
    ($field:ident) => {
        std::mem::offset_of!(GateState, $field)
    };
}

std::arch::global_asm!(
    ".pushsection .text.lightvm_gate,\"ax\",@progbits",
    // u64 lightvm_enter_guest(entry: rdi, guest_rsp: rsi, boot_info: rdx)
    ".globl lightvm_enter_guest",
    ".type lightvm_enter_guest,@function",
    ".p2align 4",
    "lightvm_enter_guest:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov [rip + {state} + {monitor_rsp}], rsp",
    "stmxcsr [rip + {state} + {monitor_mxcsr}]",
    "fnstcw [rip + {state} + {monitor_fcw}]",
    "mov qword ptr [rip + {state} + {in_guest}], 1",
    "mov rax, rdi",
    "mov rsp, rsi",
    "mov rdi, rdx",
    "xor ebx, ebx",
    "xor ebp, ebp",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor esi, esi",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "xorps xmm0, xmm0",
    "xorps xmm1, xmm1",
    "xorps xmm2, xmm2",
    "xorps xmm3, xmm3",
    "xorps xmm4, xmm4",
    "xorps xmm5, xmm5",
    "xorps xmm6, xmm6",
    "xorps xmm7, xmm7",
    "xorps xmm8, xmm8",
    "xorps xmm9, xmm9",
    "xorps xmm10, xmm10",
    "xorps xmm11, xmm11",
    "xorps xmm12, xmm12",
    "xorps xmm13, xmm13",
    "xorps xmm14, xmm14",
    "xorps xmm15, xmm15",
    "jmp rax",
    ".size lightvm_enter_guest, . - lightvm_enter_guest",
    //
    // The gate: void gate(call: rdi, arg: rsi), called by the guest.
    ".globl lightvm_hypercall_gate",
    ".type lightvm_hypercall_gate,@function",
    ".p2align 4",
    "lightvm_hypercall_gate:",
    "mov qword ptr [rip + {state} + {in_guest}], 0",
    "mov [rip + {state} + {guest_rsp}], rsp",
    "mov rsp, [rip + {state} + {monitor_rsp}]",
    "cmp qword ptr [rip + {state} + {switch_fs}], 0",
    "je 2f",
    "rdfsbase rax",
    "mov [rip + {state} + {guest_fs}], rax",
    "mov rax, [rip + {state} + {monitor_fs}]",
    "wrfsbase rax",
    "2:",
    "stmxcsr [rip + {state} + {guest_mxcsr}]",
    "fnstcw [rip + {state} + {guest_fcw}]",
    "ldmxcsr [rip + {state} + {monitor_mxcsr}]",
    "fldcw [rip + {state} + {monitor_fcw}]",
    "cld",
    "call {handler}",
    "test rax, rax",
    "jnz 4f",
    "ldmxcsr [rip + {state} + {guest_mxcsr}]",
    "fldcw [rip + {state} + {guest_fcw}]",
    "cmp qword ptr [rip + {state} + {switch_fs}], 0",
    "je 3f",
    "mov rax, [rip + {state} + {guest_fs}]",
    "wrfsbase rax",
    "3:",
    "mov rsp, [rip + {state} + {guest_rsp}]",
    "mov qword ptr [rip + {state} + {in_guest}], 1",
    // The caller-saved registers hold the monitor's pointers: the guest gets none.
    "xor eax, eax",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor esi, esi",
    "xor edi, edi",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "ret",
    // The guest is over: return rax from lightvm_enter_guest.
    "4:",
    "mov rsp, [rip + {state} + {monitor_rsp}]",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size lightvm_hypercall_gate, . - lightvm_hypercall_gate",
    //
    // Where a signal that stopped the guest resumes the thread: the monitor's FS,
    // a clean x87 state and its control words, then the return from enter.
    ".globl lightvm_guest_stopped",
    ".type lightvm_guest_stopped,@function",
    ".p2align 4",
    "lightvm_guest_stopped:",
    "mov rsp, [rip + {state} + {monitor_rsp}]",
    "cmp qword ptr [rip + {state} + {switch_fs}], 0",
    "je 5f",
    "mov rax, [rip + {state} + {monitor_fs}]",
    "wrfsbase rax",
    "5:",
    "fninit",
    "ldmxcsr [rip + {state} + {monitor_mxcsr}]",
    "fldcw [rip + {state} + {monitor_fcw}]",
    "cld",
    "mov eax, {stopped}",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size lightvm_guest_stopped, . - lightvm_guest_stopped",
    ".popsection",
    state = sym LIGHTVM_GATE_STATE,
    handler = sym hypercall_entry,
    stopped = const STOPPED_BY_SIGNAL,
    monitor_rsp = const offset!(monitor_rsp),
    guest_rsp = const offset!(guest_rsp),
    monitor_fs = const offset!(monitor_fs),
    guest_fs = const offset!(guest_fs),
    switch_fs = const offset!(switch_fs),
    in_guest = const offset!(in_guest),
    guest_mxcsr = const offset!(guest_mxcsr),
    guest_fcw = const offset!(guest_fcw),
    monitor_mxcsr = const offset!(monitor_mxcsr),
    monitor_fcw = const offset!(monitor_fcw),
);

extern "C" {
    fn lightvm_enter_guest(entry: u64, guest_rsp: u64, boot_info: u64) -> u64;
    fn lightvm_hypercall_gate();
    fn lightvm_guest_stopped();
}

/// The gate's address: what the boot info tells the guest.
pub fn gate_address() -> u64 {
    lightvm_hypercall_gate as *const () as usize as u64
}

/// Where a stopped guest's context resumes (for the signal handler).
pub fn stopped_address() -> u64 {
    lightvm_guest_stopped as *const () as usize as u64
}

/// The core of the guest the gate serves while [`enter`] runs; null otherwise.
static CURRENT: AtomicPtr<Core> = AtomicPtr::new(std::ptr::null_mut());

/// Called by the gate on the monitor's stack, with the monitor's FS: answers the
/// call through the shared core. Returns 0 to resume the guest, anything else when
/// it is over.
extern "C" fn hypercall_entry(number: u64, arg: u64) -> u64 {
    let core = CURRENT.load(Ordering::Acquire);
    if core.is_null() {
        return ENDED_BY_HYPERCALL;
    }
    // A panic must not unwind into the assembly: it ends the guest instead.
    let flow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `enter` stored a pointer to the core it borrows mutably for the
        // whole run and does not touch it until the guest is over; the gate runs on
        // that same thread, so this is the only access.
        let core = unsafe { &mut *core };
        match Hypercall::from_number(number) {
            Some(call) if arg > u64::from(u32::MAX) => Flow::Exit(VmExit::AbiViolation {
                detail: format!(
                    "{}: argument address {arg:#x} is not a 32-bit guest address",
                    call.name()
                ),
            }),
            Some(call) => core.hypercall(call, arg),
            None => Flow::Exit(VmExit::AbiViolation {
                detail: format!("unknown hypercall number {number}"),
            }),
        }
    }));
    match flow {
        Ok(Flow::Continue) => {
            // SAFETY: as above; the state belongs to this thread's guest, and the
            // signal handler reads it only while the guest (not this code) runs.
            unsafe {
                let delivery = (*core).syscall_entry();
                let state = LIGHTVM_GATE_STATE.get();
                (*state).syscall_entry = delivery.map_or(0, |d| d.entry);
                (*state).syscall_return_slot = delivery.map_or(0, |d| d.return_slot);
            }
            0
        }
        Ok(Flow::Exit(exit)) => {
            // SAFETY: as above; the closure's borrow has ended.
            unsafe { (*core).set_exit(exit) };
            ENDED_BY_HYPERCALL
        }
        Err(_) => {
            // SAFETY: as above.
            unsafe {
                (*core).set_exit(VmExit::AbiViolation {
                    detail: "the monitor failed while answering a hypercall".into(),
                })
            };
            ENDED_BY_HYPERCALL
        }
    }
}

/// Runs the guest at `entry` on the stack whose `rsp` is `guest_rsp`, with `rdi` =
/// `boot_info`, on the calling thread (whose id is `guest_tid`, for the signal
/// handler), until it is over; hypercalls go to `core`. Returns
/// [`ENDED_BY_HYPERCALL`] or [`STOPPED_BY_SIGNAL`].
///
/// # Safety
///
/// The caller holds the [`GuestSlot`], has mapped a loaded image whose entry point is
/// `entry` and a stack below `guest_rsp`, and has installed the signal handlers
/// (`signals::install`) with an alternate stack for this thread: a guest that
/// faults is otherwise a monitor crash.
pub unsafe fn enter(
    core: &mut Core,
    entry: u64,
    (guest_rsp, boot_info): (u64, u64),
    guest_tid: u64,
) -> u64 {
    let state = LIGHTVM_GATE_STATE.get();
    // SAFETY: the caller holds the slot, so no other thread uses the state, and
    // no guest runs yet, so neither does the gate or the signal handler.
    unsafe {
        (*state).guest_tid = guest_tid;
        (*state).syscall_entry = 0;
        (*state).syscall_return_slot = 0;
        match read_fs_base() {
            Some(fs) => {
                (*state).monitor_fs = fs;
                (*state).switch_fs = 1;
            }
            None => (*state).switch_fs = 0,
        }
    }
    let core: *mut Core = core;
    CURRENT.store(core, Ordering::Release);
    // SAFETY: the caller's guarantees above; the assembly returns here with the
    // callee-saved registers, stack, FS and control words of this function.
    let result = unsafe { lightvm_enter_guest(entry, guest_rsp, boot_info) };
    CURRENT.store(std::ptr::null_mut(), Ordering::Release);
    // SAFETY: the guest is over; nothing else uses the state.
    unsafe { (*state).in_guest = 0 };
    result
}

/// This thread's FS base, when user mode may read and write it directly
/// (`rdfsbase`/`wrfsbase`; Linux 5.9+ on CPUs with FSGSBASE); `None` otherwise, and
/// then a guest cannot change FS either.
fn read_fs_base() -> Option<u64> {
    const HWCAP2_FSGSBASE: libc::c_ulong = 1 << 1;
    // SAFETY: getauxval reads the auxiliary vector; no preconditions.
    if unsafe { libc::getauxval(libc::AT_HWCAP2) } & HWCAP2_FSGSBASE == 0 {
        return None;
    }
    let fs: u64;
    // SAFETY: the kernel advertised FSGSBASE, so rdfsbase is allowed in user mode;
    // it only reads the FS base into a register.
    unsafe {
        std::arch::asm!("rdfsbase {}", out(reg) fs, options(nomem, nostack, preserves_flags))
    };
    Some(fs)
}
