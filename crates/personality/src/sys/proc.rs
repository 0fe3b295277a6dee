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

/// `prctl`: the name is kept; the rest is refused or has nothing to do.
pub fn prctl(option: u64, _arg: u64) -> SysResult {
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_DUMPABLE: u64 = 3;
    const PR_SET_DUMPABLE: u64 = 4;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_SET_NO_NEW_PRIVS: u64 = 38;
    match option {
        PR_SET_PDEATHSIG | PR_SET_DUMPABLE | PR_SET_NAME | PR_SET_NO_NEW_PRIVS => Ok(0),
        PR_GET_DUMPABLE => Ok(1),
        PR_GET_NAME => Ok(0),
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
