//! Process calls: identity, limits, the CPU's thread state, signals (recorded),
//! randomness, and the end.

use alloc::format;

use super::SysResult;
use crate::errno::{Errno, EINVAL, ENOSYS, EPERM};
use crate::kernel::kernel;
use crate::uaccess;

/// The process's (and its first thread's) id.
pub const PID: u64 = 1;

/// `exit` / `exit_group`: the VM ends with the program's status.
pub fn exit(status: u64) -> SysResult {
    crate::finish(status as u8)
}

/// `exit` of one thread; the last thread's ends the VM.
pub fn exit_thread(status: u64) -> SysResult {
    crate::thread::exit_thread(status as u8)
}

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SYSVSEM: u64 = 0x40000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_DETACHED: u64 = 0x400000;
const CLONE_CHILD_SETTID: u64 = 0x1000000;
/// The flags of a thread in the same process, which is all `clone` makes here.
const CLONE_THREAD_FLAGS: u64 = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
/// Flags a thread may add that change nothing more here, or are handled below.
const CLONE_THREAD_OPTIONS: u64 = CLONE_FS
    | CLONE_FILES
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_CHILD_SETTID;

/// `clone`: a new thread of this process. A new process (`fork`, `vfork`,
/// `posix_spawn`'s `CLONE_VM | CLONE_VFORK`) is refused as `fork` is.
pub fn clone(
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
    frame: &crate::entry::Frame,
) -> SysResult {
    start_thread(flags & !0xff, stack, parent_tid, child_tid, tls, frame)
}

/// `clone3`: `clone` with its arguments in a structure.
pub fn clone3(args: u64, size: u64, frame: &crate::entry::Frame) -> SysResult {
    // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls.
    const FIRST_VERSION: u64 = 64;
    if size < FIRST_VERSION {
        return Err(EINVAL);
    }
    let [flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls] =
        uaccess::read::<[u64; 8]>(args)?;
    if exit_signal > 64 || (stack == 0) != (stack_size == 0) {
        return Err(EINVAL);
    }
    let top = stack.checked_add(stack_size).ok_or(EINVAL)?;
    start_thread(flags, top, parent_tid, child_tid, tls, frame)
}

fn start_thread(
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
    frame: &crate::entry::Frame,
) -> SysResult {
    if flags & CLONE_THREAD_FLAGS != CLONE_THREAD_FLAGS || flags & CLONE_VFORK != 0 {
        let what = if flags & CLONE_VM == 0 {
            "fork"
        } else {
            "a new process (vfork or posix_spawn)"
        };
        libos::println!(
            "lightvm linux: clone of {what} is not supported: a unikernel runs one program in one process"
        );
        *kernel()
            .unimplemented
            .entry(u64::from(linux_raw_sys::general::__NR_clone))
            .or_insert(0) += 1;
        return Err(ENOSYS);
    }
    if flags & !(CLONE_THREAD_FLAGS | CLONE_THREAD_OPTIONS) != 0 || flags & CLONE_PIDFD != 0 {
        return Err(EINVAL);
    }
    let spec = crate::thread::NewThread {
        stack,
        tls: (flags & CLONE_SETTLS != 0).then_some(tls),
        clear_child_tid: if flags & CLONE_CHILD_CLEARTID != 0 {
            child_tid
        } else {
            0
        },
    };
    let tid = crate::thread::spawn(frame, &spec)?;
    if flags & CLONE_PARENT_SETTID != 0 {
        uaccess::write::<u32>(parent_tid, tid)?;
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        uaccess::write::<u32>(child_tid, tid)?;
    }
    Ok(u64::from(tid))
}

/// `futex`: wait, wake and requeue, private or shared alike (there is one
/// process).
pub fn futex(a: [u64; 6]) -> SysResult {
    const FUTEX_WAIT: u64 = 0;
    const FUTEX_WAKE: u64 = 1;
    const FUTEX_REQUEUE: u64 = 3;
    const FUTEX_CMP_REQUEUE: u64 = 4;
    const FUTEX_WAIT_BITSET: u64 = 9;
    const FUTEX_WAKE_BITSET: u64 = 10;
    const FUTEX_PRIVATE_FLAG: u64 = 128;
    const FUTEX_CLOCK_REALTIME: u64 = 256;
    let [addr, op, value, timeout, addr2, value3] = a;
    let command = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let value32 = value as u32;
    match command {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            if command == FUTEX_WAIT_BITSET && value3 as u32 == 0 {
                return Err(EINVAL);
            }
            let deadline = if timeout == 0 {
                None
            } else {
                let time = crate::sys::time::read_timespec(timeout)?;
                let now = libos::time::monotonic();
                Some(if command == FUTEX_WAIT {
                    now.saturating_add(time)
                } else if op & FUTEX_CLOCK_REALTIME != 0 {
                    now.saturating_add(time.saturating_sub(libos::time::wall_clock()))
                } else {
                    time
                })
            };
            crate::thread::futex_wait(addr, value32, deadline)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => crate::thread::futex_wake(addr, u64::from(value32)),
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if command == FUTEX_CMP_REQUEUE && uaccess::read::<u32>(addr)? != value3 as u32 {
                return Err(crate::errno::EAGAIN);
            }
            // The fourth argument is the count to requeue, not a time.
            crate::thread::futex_requeue(addr, u64::from(value32), timeout, addr2)
        }
        _ => super::unimplemented(u64::from(linux_raw_sys::general::__NR_futex)),
    }
}

/// `getresuid` / `getresgid`: root.
pub fn getresid(a: u64, b: u64, c: u64) -> SysResult {
    for addr in [a, b, c] {
        uaccess::write::<u32>(addr, 0)?;
    }
    Ok(0)
}

/// `uname`: a Linux 6.1 x86-64 host named lightvm.
pub fn uname(addr: u64) -> SysResult {
    let mut fields = [[0u8; 65]; 6];
    for (field, value) in fields.iter_mut().zip([
        "Linux",
        "lightvm",
        "6.1.0-lightvm",
        "#1 SMP lightvm unikernel",
        "x86_64",
        "(none)",
    ]) {
        field[..value.len()].copy_from_slice(value.as_bytes());
    }
    uaccess::write(addr, fields)?;
    Ok(0)
}

/// `sysinfo`.
pub fn sysinfo(addr: u64) -> SysResult {
    let mut info = [0u64; 14];
    info[0] = libos::time::monotonic().as_secs(); // uptime
    info[4] = libos::boot_info().mem_size; // totalram
    info[5] = libos::heap::stats().free as u64; // freeram
    info[13] = 1; // mem_unit (in the last word with procs; procs = 1 below)
    let mut bytes = [0u8; 112];
    for (i, value) in info.iter().take(8).enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    bytes[80..82].copy_from_slice(&1u16.to_le_bytes()); // procs
    bytes[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    uaccess::write(addr, bytes)?;
    Ok(0)
}

/// `prlimit64` (and `getrlimit`): the limits programs ask about.
pub fn prlimit(resource: u64, new: u64, old: u64) -> SysResult {
    const RLIMIT_STACK: u64 = 3;
    const RLIMIT_NOFILE: u64 = 7;
    let _ = new;
    if old != 0 {
        let limit = match resource {
            RLIMIT_STACK => [8 << 20, u64::MAX],
            RLIMIT_NOFILE => [crate::fd::FD_MAX as u64, crate::fd::FD_MAX as u64],
            0..=15 => [u64::MAX, u64::MAX],
            _ => return Err(EINVAL),
        };
        uaccess::write(old, limit)?;
    }
    Ok(0)
}

/// `getrusage`: the time so far counts as user time.
pub fn getrusage(addr: u64) -> SysResult {
    let mut usage = [0i64; 18];
    let time = libos::time::monotonic();
    usage[0] = time.as_secs() as i64;
    usage[1] = i64::from(time.subsec_micros());
    uaccess::write(addr, usage)?;
    Ok(0)
}

/// `times`.
pub fn times(addr: u64) -> SysResult {
    let ticks = libos::time::monotonic().as_millis() as u64 / 10;
    if addr != 0 {
        uaccess::write(addr, [ticks, 0u64, 0, 0])?;
    }
    Ok(ticks)
}

/// `arch_prctl`: the FS and GS bases, set in the CPU (`wrfsbase`).
pub fn arch_prctl(code: u64, addr: u64) -> SysResult {
    const ARCH_SET_GS: u64 = 0x1001;
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    match code {
        ARCH_SET_FS => crate::cpu::set_fs(addr),
        ARCH_SET_GS => crate::cpu::set_gs(addr),
        ARCH_GET_FS => uaccess::write(addr, crate::cpu::fs())?,
        ARCH_GET_GS => uaccess::write(addr, crate::cpu::gs())?,
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// `prctl`: the options programs use to learn or set what a kernel keeps for
/// them. The thread name is the program's name (`comm`); capabilities are all
/// root's; options that only tune the kernel change nothing and succeed.
pub fn prctl(option: u64, arg: u64) -> SysResult {
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_PDEATHSIG: u64 = 2;
    const PR_GET_DUMPABLE: u64 = 3;
    const PR_SET_DUMPABLE: u64 = 4;
    const PR_GET_KEEPCAPS: u64 = 7;
    const PR_SET_KEEPCAPS: u64 = 8;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_CAPBSET_READ: u64 = 23;
    const PR_SET_TIMERSLACK: u64 = 29;
    const PR_GET_TIMERSLACK: u64 = 30;
    const PR_SET_NO_NEW_PRIVS: u64 = 38;
    const PR_GET_NO_NEW_PRIVS: u64 = 39;
    const PR_SET_THP_DISABLE: u64 = 41;
    const PR_GET_THP_DISABLE: u64 = 42;
    const PR_SET_VMA: u64 = 0x5356_4d41;
    const CAP_LAST_CAP: u64 = 40;
    match option {
        PR_SET_PDEATHSIG | PR_SET_DUMPABLE | PR_SET_KEEPCAPS | PR_SET_NAME => Ok(0),
        PR_SET_NO_NEW_PRIVS | PR_SET_TIMERSLACK | PR_SET_THP_DISABLE | PR_SET_VMA => Ok(0),
        PR_GET_DUMPABLE => Ok(1),
        PR_GET_PDEATHSIG => {
            uaccess::write::<u32>(arg, 0)?;
            Ok(0)
        }
        PR_GET_KEEPCAPS | PR_GET_NO_NEW_PRIVS | PR_GET_THP_DISABLE => Ok(0),
        PR_GET_TIMERSLACK => Ok(50_000),
        PR_GET_NAME => {
            let k = kernel();
            let comm = k.exe.rsplit('/').next().unwrap_or("");
            let mut name = [0u8; 16];
            let len = comm.len().min(15);
            name[..len].copy_from_slice(&comm.as_bytes()[..len]);
            uaccess::write(arg, name)?;
            Ok(0)
        }
        PR_CAPBSET_READ if arg <= CAP_LAST_CAP => Ok(1),
        _ => Err(EINVAL),
    }
}

/// `getrandom`.
pub fn getrandom(buf: u64, len: u64) -> SysResult {
    let out = uaccess::bytes_mut(buf, len.min(1 << 25))?;
    crate::random::fill(out);
    Ok(out.len() as u64)
}

/// `sched_getaffinity`: one CPU.
pub fn sched_getaffinity(len: u64, addr: u64) -> SysResult {
    if len < 8 {
        return Err(EINVAL);
    }
    uaccess::write(addr, 1u64)?;
    Ok(8)
}

/// `rt_sigaction`: dispositions are recorded and given back; no signal is ever
/// delivered (there is no other process to send one, and faults end the VM).
pub fn rt_sigaction(signal: u64, new: u64, old: u64, size: u64) -> SysResult {
    if signal == 0 || signal > 64 || size != 8 {
        return Err(EINVAL);
    }
    let k = kernel();
    if old != 0 {
        let previous = k.signal_actions.get(&signal).copied().unwrap_or([0; 32]);
        uaccess::write(old, previous)?;
    }
    if new != 0 {
        if signal == 9 || signal == 19 {
            return Err(EINVAL);
        }
        let action = uaccess::read::<[u8; 32]>(new)?;
        k.signal_actions.insert(signal, action);
    }
    Ok(0)
}

/// `rt_sigprocmask`: no signal arrives, so the mask is recorded as empty.
pub fn rt_sigprocmask(old: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    if old != 0 {
        uaccess::write(old, 0u64)?;
    }
    Ok(0)
}

/// `kill`, `tkill`, `tgkill`: a signal to itself whose default action ends the
/// process (abort's SIGABRT, say) ends the VM as Linux would end the process; one
/// the program handles or ignores, or signal 0, is accepted.
pub fn kill(number: u32, a: [u64; 6]) -> SysResult {
    let signal = if number == linux_raw_sys::general::__NR_tgkill {
        a[2]
    } else {
        a[1]
    };
    if signal == 0 {
        return Ok(0);
    }
    let handled = kernel()
        .signal_actions
        .get(&signal)
        .is_some_and(|action| action[..8] != [0; 8]);
    // SIGCHLD, SIGCONT, SIGURG, SIGWINCH are ignored by default.
    if handled || matches!(signal, 17 | 18 | 23 | 28) {
        return Ok(0);
    }
    libos::println!("lightvm linux: the program was killed by signal {signal}");
    crate::finish(128u8.wrapping_add(signal as u8))
}

/// `pause`, `rt_sigsuspend`: no signal ever arrives, so the thread sleeps for
/// good (the VM costs no CPU meanwhile; the other threads run on).
pub fn pause() -> SysResult {
    let never = crate::thread::wait_until::<core::convert::Infallible>(None, || None);
    match never {
        Ok(never) => match never {},
        Err(errno) => Err(errno),
    }
}

/// `fork`, `vfork`, `execve`: one program per VM, as in OSv.
pub fn unsupported_process_call(number: u64) -> SysResult {
    libos::println!(
        "lightvm linux: {} is not supported: a unikernel runs one program in one process",
        super::name(number)
    );
    *kernel().unimplemented.entry(number).or_insert(0) += 1;
    Err(ENOSYS)
}

/// `capget`: every capability of root.
pub fn capget(data: u64) -> SysResult {
    if data != 0 {
        uaccess::write(data, [u32::MAX, u32::MAX, 0, u32::MAX, u32::MAX, 0])?;
    }
    Ok(0)
}

/// A call refused for lack of privilege (kept for the handlers to come).
#[allow(dead_code)]
pub fn refused() -> Result<u64, Errno> {
    Err(EPERM)
}

/// A short description of the unimplemented calls, for the end of a trace.
pub fn unimplemented_summary() -> Option<alloc::string::String> {
    let k = kernel();
    if k.unimplemented.is_empty() {
        return None;
    }
    let list: alloc::vec::Vec<_> = k
        .unimplemented
        .iter()
        .map(|(number, count)| format!("{} x{count}", super::name(*number)))
        .collect();
    Some(list.join(", "))
}
