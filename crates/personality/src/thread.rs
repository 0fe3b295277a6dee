//! The program's threads, scheduled cooperatively on the one vCPU.
//!
//! A thread runs the program's code until it makes a system call; only inside one
//! does the personality switch to another thread: when the call must wait (a
//! futex, a sleep, a socket with nothing to read), when the thread asks
//! (`sched_yield`), or when its time slice is over. Every thread that is not
//! running is therefore inside a system call, on its own kernel stack, and a
//! switch is a handful of register moves ([`lx_switch`]) — no exit, no host call.
//!
//! # Waiting
//!
//! A call that must wait names what it waits for as a condition
//! ([`wait_until`]); the thread checks it, and if it does not hold, passes the
//! vCPU on. When every thread has checked its condition in vain since anything
//! last happened, nothing can change until a device or a clock does, so the
//! personality makes one `poll` exit that sleeps until the network has a frame or
//! the nearest deadline of any thread is due. An idle program costs the host no
//! CPU, whatever its number of threads.
//!
//! # Limits
//!
//! A thread that computes without making system calls keeps the vCPU: threads
//! that never call the kernel cannot be preempted without a timer interrupt, which
//! lightvm guests do not take. Signals are not delivered between threads.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;
use core::time::Duration;

use crate::entry::{Frame, LX_KERNEL_STACK, XSAVE_AREA};
use crate::errno::{Errno, EAGAIN, EINVAL, ETIMEDOUT};

/// Bytes of a thread's kernel stack: the handlers' deepest path (the network
/// stack's) with room to spare.
const KERNEL_STACK_BYTES: usize = 128 << 10;
/// How long a thread runs before a system call passes the vCPU on to another
/// runnable thread.
const TIME_SLICE: Duration = Duration::from_millis(10);
/// Most threads a program may have at once (`RLIMIT_NPROC`).
pub const THREADS_MAX: usize = 4096;

/// The first thread's id, which is also the process's.
pub const MAIN_TID: u32 = 1;

/// One thread of the program.
struct Thread {
    tid: u32,
    /// Its kernel stack pointer while it is switched out.
    context: u64,
    /// Its kernel stack, owned for as long as it runs (the first thread uses the
    /// personality's own).
    _kernel_stack: Option<Vec<u128>>,
    /// The top of its kernel stack, where its calls' frames begin.
    kernel_stack_top: u64,
    /// Its FS and GS bases while it is switched out.
    fs: u64,
    gs: u64,
    /// `set_tid_address` / `CLONE_CHILD_CLEARTID`: cleared and woken at its exit.
    clear_child_tid: u64,
    /// When its wait ends if nothing happens (only while it waits).
    wake_at: Option<Duration>,
    /// Set by a `FUTEX_WAKE` that chose it.
    futex_woken: bool,
}

/// The threads and what they wait for.
struct Scheduler {
    /// Every live thread, in the order they take turns; the running one first.
    threads: VecDeque<Box<Thread>>,
    next_tid: u32,
    /// Checks in vain since anything last happened (see the module docs).
    idle_streak: usize,
    /// When the running thread got the vCPU.
    slice_start: Duration,
    /// Waiters by futex address, in arrival order.
    futexes: BTreeMap<u64, VecDeque<u32>>,
    /// A thread that exited, whose stack is freed once another one runs.
    exited: Option<Box<Thread>>,
}

struct Global(UnsafeCell<Option<Scheduler>>);

// SAFETY: one vCPU; the scheduler is reached only from system calls and
// start-up, one at a time, and no reference to it is held across a switch.
unsafe impl Sync for Global {}

static SCHEDULER: Global = Global(UnsafeCell::new(None));

/// Makes the running code the program's first thread, whose calls use the
/// kernel stack [`LX_KERNEL_STACK`] names now.
pub fn init() {
    let scheduler = Scheduler {
        threads: VecDeque::from([Box::new(Thread {
            tid: MAIN_TID,
            context: 0,
            _kernel_stack: None,
            kernel_stack_top: LX_KERNEL_STACK.load(Ordering::Relaxed),
            fs: 0,
            gs: 0,
            clear_child_tid: 0,
            wake_at: None,
            futex_woken: false,
        })]),
        next_tid: MAIN_TID + 1,
        idle_streak: 0,
        slice_start: libos::time::monotonic(),
        futexes: BTreeMap::new(),
        exited: None,
    };
    // SAFETY: called once at start-up, before the program (and so any system
    // call) runs.
    unsafe { *SCHEDULER.0.get() = Some(scheduler) };
}

#[allow(clippy::mut_from_ref)]
fn scheduler() -> &'static mut Scheduler {
    // SAFETY: see `Global`.
    match unsafe { (*SCHEDULER.0.get()).as_mut() } {
        Some(scheduler) => scheduler,
        None => crate::fatal("a thread was scheduled before start-up"),
    }
}

impl Scheduler {
    fn current(&mut self) -> &mut Thread {
        match self.threads.front_mut() {
            Some(thread) => thread,
            None => crate::fatal("the scheduler lost its running thread"),
        }
    }

    fn thread(&mut self, tid: u32) -> Option<&mut Thread> {
        self.threads
            .iter_mut()
            .find(|thread| thread.tid == tid)
            .map(|thread| &mut **thread)
    }
}

core::arch::global_asm!(
    // lx_switch(save: *mut u64, next: u64): saves the callee-saved registers and
    // the stack pointer of the running thread in *save, and resumes the thread
    // whose stack pointer is `next` where it called lx_switch (or, for a new
    // thread, at lx_syscall_return: see `spawn`).
    ".globl lx_switch",
    ".type lx_switch,@function",
    "lx_switch:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rsp, rsi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size lx_switch, . - lx_switch",
);

extern "C" {
    fn lx_switch(save: *mut u64, next: u64);
}

/// The running thread's id.
pub fn current_tid() -> u32 {
    scheduler().current().tid
}

/// Passes the vCPU to the next thread in turn, if there is one; returns when
/// this thread's turn comes again.
pub fn yield_now() {
    let s = scheduler();
    if s.threads.len() < 2 {
        return;
    }
    let Some(mut from) = s.threads.pop_front() else {
        return;
    };
    from.fs = crate::cpu::fs();
    from.gs = crate::cpu::gs();
    let save: *mut u64 = &mut from.context;
    s.threads.push_back(from);
    switch_to_front(save);
}

/// Resumes the thread at the front of the queue, saving the running one's
/// context at `save`.
fn switch_to_front(save: *mut u64) {
    let s = scheduler();
    let next = s.current();
    LX_KERNEL_STACK.store(next.kernel_stack_top, Ordering::Relaxed);
    crate::cpu::set_fs(next.fs);
    crate::cpu::set_gs(next.gs);
    let context = next.context;
    s.slice_start = libos::time::monotonic();
    // SAFETY: `save` points into a thread that stays alive (in the queue, or as
    // `exited` until another thread runs); `context` is a stack pointer
    // `lx_switch` saved, or the initial frame `spawn` built, on a live stack.
    unsafe { lx_switch(save, context) };
    // Running again, on this thread's stack: a thread that exited can go now.
    scheduler().exited = None;
}

/// Called as every system call returns to the program: the program made
/// progress, and a thread whose slice is over lets the others run.
pub fn on_return() {
    let s = scheduler();
    s.idle_streak = 0;
    if s.threads.len() > 1 && libos::time::monotonic().saturating_sub(s.slice_start) >= TIME_SLICE {
        yield_now();
    }
}

/// Waits until `ready` gives a value or `deadline` (on the monotonic clock)
/// passes, letting the other threads run meanwhile. `ready` is called with the
/// network stack just polled.
pub fn wait_until<T>(
    deadline: Option<Duration>,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, Errno> {
    loop {
        crate::net::poll();
        if let Some(value) = ready() {
            let s = scheduler();
            s.idle_streak = 0;
            s.current().wake_at = None;
            return Ok(value);
        }
        let now = libos::time::monotonic();
        if deadline.is_some_and(|deadline| now >= deadline) {
            let s = scheduler();
            s.idle_streak = 0;
            s.current().wake_at = None;
            return Err(ETIMEDOUT);
        }
        let s = scheduler();
        s.current().wake_at = deadline;
        s.idle_streak += 1;
        if s.idle_streak >= s.threads.len() {
            // Every thread checked in vain: sleep until something can change.
            let earliest = s.threads.iter().filter_map(|thread| thread.wake_at).min();
            s.idle_streak = 0;
            crate::net::idle(earliest.map(|at| at.saturating_sub(now)));
        }
        yield_now();
    }
}

/// Sleeps the calling thread for `duration`.
pub fn sleep(duration: Duration) {
    let deadline = libos::time::monotonic().saturating_add(duration);
    let _ = wait_until::<()>(Some(deadline), || None);
}

/// What `clone` asks for a new thread.
pub struct NewThread {
    /// Its stack pointer (0: the parent's).
    pub stack: u64,
    /// Its FS base, with `CLONE_SETTLS`.
    pub tls: Option<u64>,
    /// `CLONE_CHILD_CLEARTID`'s address.
    pub clear_child_tid: u64,
}

/// Starts a thread that returns from the parent's system call `frame` with 0,
/// on `spec.stack`; returns its id.
pub fn spawn(frame: &Frame, spec: &NewThread) -> Result<u32, Errno> {
    let s = scheduler();
    if s.threads.len() >= THREADS_MAX {
        return Err(EAGAIN);
    }
    let tid = s.next_tid;
    s.next_tid = s.next_tid.checked_add(1).ok_or(EAGAIN)?;
    let mut stack = vec![0u128; KERNEL_STACK_BYTES / 16];
    let base = stack.as_mut_ptr() as u64;
    let top = (base + KERNEL_STACK_BYTES as u64) & !63;
    // The frame the entry would have saved, as the parent's, returning 0 on the
    // new stack; under it, the parent's vector state; under that, what
    // `lx_switch` pops, with `rbp` the frame and `lx_syscall_return` to return to.
    let mut child = *frame;
    child.rax = 0;
    if spec.stack != 0 {
        child.rsp = spec.stack;
    }
    let frame_at = top - core::mem::size_of::<Frame>() as u64;
    let fx_at = (frame_at - XSAVE_AREA) & !63;
    let parent_fx = ((frame as *const Frame as u64) - XSAVE_AREA) & !63;
    let switch_at = fx_at - 8 * 8;
    let initial = [
        0u64, // r15
        0,    // r14
        0,    // r13
        0,    // r12
        0,    // rbx
        frame_at,
        crate::entry::lx_syscall_return as *const () as usize as u64,
        0,
    ];
    // SAFETY: every address lies in `stack`, which this thread owns and which
    // lives as long as it; `parent_fx` is the parent's saved vector state, in
    // the `XSAVE_AREA` bytes below its frame on its kernel stack (see `entry`),
    // live during this call.
    unsafe {
        core::ptr::write(frame_at as *mut Frame, child);
        core::ptr::copy_nonoverlapping(
            parent_fx as *const u8,
            fx_at as *mut u8,
            XSAVE_AREA as usize - 64,
        );
        core::ptr::write(switch_at as *mut [u64; 8], initial);
    }
    let thread = Thread {
        tid,
        context: switch_at,
        _kernel_stack: Some(stack),
        kernel_stack_top: top,
        fs: spec.tls.unwrap_or_else(crate::cpu::fs),
        gs: crate::cpu::gs(),
        clear_child_tid: spec.clear_child_tid,
        wake_at: None,
        futex_woken: false,
    };
    s.threads.push_back(Box::new(thread));
    Ok(tid)
}

/// `set_tid_address`.
pub fn set_clear_child_tid(addr: u64) -> u32 {
    let current = scheduler().current();
    current.clear_child_tid = addr;
    current.tid
}

/// `exit` of one thread: the last one's ends the program.
pub fn exit_thread(status: u8) -> ! {
    let s = scheduler();
    if s.threads.len() < 2 {
        crate::finish(status);
    }
    let clear = s.current().clear_child_tid;
    if clear != 0 && crate::uaccess::write::<u32>(clear, 0).is_ok() {
        let _ = futex_wake(clear, 1);
    }
    let s = scheduler();
    let Some(mut gone) = s.threads.pop_front() else {
        crate::finish(status);
    };
    let save: *mut u64 = &mut gone.context;
    s.exited = Some(gone);
    s.idle_streak = 0;
    switch_to_front(save);
    crate::fatal("a thread that exited was resumed")
}

/// `FUTEX_WAIT` (and `_BITSET`): sleeps while `*addr == expected`, until a wake
/// or `deadline`.
pub fn futex_wait(addr: u64, expected: u32, deadline: Option<Duration>) -> Result<u64, Errno> {
    if !addr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    if crate::uaccess::read::<u32>(addr)? != expected {
        return Err(EAGAIN);
    }
    let s = scheduler();
    let tid = s.current().tid;
    s.current().futex_woken = false;
    s.futexes.entry(addr).or_default().push_back(tid);
    let result = wait_until(deadline, || {
        let current = scheduler().current();
        core::mem::take(&mut current.futex_woken).then_some(())
    });
    if result.is_err() {
        let s = scheduler();
        if let Some(queue) = s.futexes.get_mut(&addr) {
            queue.retain(|&waiter| waiter != tid);
            if queue.is_empty() {
                s.futexes.remove(&addr);
            }
        }
    }
    result.map(|()| 0)
}

/// `FUTEX_WAKE`: wakes up to `count` waiters on `addr`; returns how many.
pub fn futex_wake(addr: u64, count: u64) -> Result<u64, Errno> {
    let s = scheduler();
    let mut woken = 0;
    while woken < count {
        let Some(queue) = s.futexes.get_mut(&addr) else {
            break;
        };
        let Some(tid) = queue.pop_front() else {
            s.futexes.remove(&addr);
            break;
        };
        if queue.is_empty() {
            s.futexes.remove(&addr);
        }
        if let Some(thread) = s.thread(tid) {
            thread.futex_woken = true;
            woken += 1;
        }
    }
    if woken > 0 {
        s.idle_streak = 0;
    }
    Ok(woken)
}

/// `FUTEX_REQUEUE` / `FUTEX_CMP_REQUEUE`: wakes up to `wake` waiters on `addr`
/// and moves up to `requeue` of the rest to `target`.
pub fn futex_requeue(addr: u64, wake: u64, requeue: u64, target: u64) -> Result<u64, Errno> {
    if !target.is_multiple_of(4) {
        return Err(EINVAL);
    }
    let woken = futex_wake(addr, wake)?;
    let s = scheduler();
    let mut moved = 0;
    while moved < requeue {
        let Some(tid) = s.futexes.get_mut(&addr).and_then(VecDeque::pop_front) else {
            break;
        };
        s.futexes.entry(target).or_default().push_back(tid);
        moved += 1;
    }
    if s.futexes.get(&addr).is_some_and(VecDeque::is_empty) {
        s.futexes.remove(&addr);
    }
    Ok(woken + moved)
}
