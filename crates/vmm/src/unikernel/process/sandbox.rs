//! The process platform's wall: what the monitor process keeps once the guest may
//! run. The guest shares its address space with the monitor (as in Solo5's spt and
//! Nabla containers), so the boundary between a guest and the host is not the gate
//! but the host kernel's view of the process:
//!
//! * **a seccomp filter**, installed before the first guest instruction, that allows
//!   only the host system calls the hypercall handlers and the monitor's exit path
//!   make ([`ALLOWED`]), each bound to the descriptors opened before it
//!   (the console, the tap, the disk, the wait set) where the arguments allow, and
//!   that answers *any* system call made from guest memory with SIGSYS — the
//!   instruction pointer is checked before the number, so a `syscall` in the guest
//!   never reaches the host kernel, whatever it asks for;
//! * `no_new_privs`, which the filter needs and which keeps a set-uid program from
//!   ever running with more rights;
//! * new user, mount, PID, IPC and UTS namespaces where the host allows (as root,
//!   or as a user where unprivileged user namespaces are enabled);
//! * no core dumps (they would hold guest memory), and no way to open, create or
//!   reach a file, a socket or a process: none of those calls is in the list.
//!
//! What a guest that takes over the monitor's code (it can jump anywhere in the
//! process) can still do is exactly what the list allows: write to its console and
//! its tap, read and write its disk, wait, allocate anonymous memory, and exit. A
//! KVM guest has the hardware boundary in front of the same monitor; a runc
//! container has the whole Linux system-call table behind its own seccomp profile.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::unikernel::devices::DeviceFds;
use crate::unikernel::error::UnikernelError;

/// Which descriptors a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fds {
    /// The tap.
    Tap,
    /// What the monitor writes: stdout, stderr, the policy's descriptors, the tap.
    Output,
    /// The disk image.
    Disk,
    /// The epoll set of the `poll` hypercall.
    Events,
}

/// What a call's arguments must be for the filter to allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Anything.
    Any,
    /// Argument 0 is one of these descriptors (the call is not allowed at all when
    /// the VM has none of them).
    Fd(Fds),
    /// Argument `index` is one of `values`.
    ArgIn(u8, &'static [u64]),
    /// `mmap` of anonymous memory that is never executable.
    AnonymousNoExec,
}

/// Host system calls the sandboxed monitor may make, the bound on their
/// arguments, and what needs them: the filter is built from this list, and
/// README.md repeats it (a test checks every name is there).
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    /// Names and numbers.
    pub calls: &'static [(&'static str, libc::c_long)],
    /// The bound on their arguments.
    pub bound: Bound,
    /// What the monitor makes them for.
    pub purpose: &'static str,
}

/// The whole allow-list.
pub const ALLOWED: &[Allowance] = &[
    Allowance {
        calls: &[("read", libc::SYS_read), ("readv", libc::SYS_readv)],
        bound: Bound::Fd(Fds::Tap),
        purpose: "receiving frames",
    },
    Allowance {
        calls: &[
            ("write", libc::SYS_write),
            ("writev", libc::SYS_writev),
            ("sendto", libc::SYS_sendto),
        ],
        bound: Bound::Fd(Fds::Output),
        purpose: "the console, the report, the daemon's socket, sending frames",
    },
    Allowance {
        calls: &[
            ("pread64", libc::SYS_pread64),
            ("pwrite64", libc::SYS_pwrite64),
            ("fdatasync", libc::SYS_fdatasync),
            ("fsync", libc::SYS_fsync),
        ],
        bound: Bound::Fd(Fds::Disk),
        purpose: "the disk",
    },
    Allowance {
        calls: &[
            ("epoll_wait", libc::SYS_epoll_wait),
            ("epoll_pwait", libc::SYS_epoll_pwait),
            ("epoll_pwait2", libc::SYS_epoll_pwait2),
        ],
        bound: Bound::Fd(Fds::Events),
        purpose: "the poll hypercall's wait",
    },
    Allowance {
        calls: &[("ppoll", libc::SYS_ppoll)],
        bound: Bound::ArgIn(1, &[0]),
        purpose: "a wait with no descriptor (a plain sleep)",
    },
    Allowance {
        calls: &[("mmap", libc::SYS_mmap)],
        bound: Bound::AnonymousNoExec,
        purpose: "the allocator: anonymous memory, never executable",
    },
    Allowance {
        calls: &[
            ("munmap", libc::SYS_munmap),
            ("mremap", libc::SYS_mremap),
            ("brk", libc::SYS_brk),
        ],
        bound: Bound::Any,
        purpose: "the allocator",
    },
    Allowance {
        calls: &[("madvise", libc::SYS_madvise)],
        bound: Bound::ArgIn(2, &[libc::MADV_DONTNEED as u64, libc::MADV_FREE as u64]),
        purpose: "the allocator giving memory back",
    },
    Allowance {
        calls: &[
            ("futex", libc::SYS_futex),
            ("sched_yield", libc::SYS_sched_yield),
        ],
        bound: Bound::Any,
        purpose: "locks",
    },
    Allowance {
        calls: &[
            ("rt_sigreturn", libc::SYS_rt_sigreturn),
            ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
            ("sigaltstack", libc::SYS_sigaltstack),
            ("restart_syscall", libc::SYS_restart_syscall),
        ],
        bound: Bound::Any,
        purpose: "signal delivery (faults, the deadline)",
    },
    Allowance {
        calls: &[("rt_sigaction", libc::SYS_rt_sigaction)],
        bound: Bound::ArgIn(0, &[libc::SIGABRT as u64]),
        purpose: "abort() on a monitor bug: SIGABRT's handler only",
    },
    Allowance {
        calls: &[("tgkill", libc::SYS_tgkill)],
        bound: Bound::ArgIn(2, &[libc::SIGABRT as u64]),
        purpose: "abort() on a monitor bug: SIGABRT only",
    },
    Allowance {
        calls: &[
            ("timer_settime", libc::SYS_timer_settime),
            ("timer_gettime", libc::SYS_timer_gettime),
            ("timer_delete", libc::SYS_timer_delete),
        ],
        bound: Bound::Any,
        purpose: "the deadline timer",
    },
    Allowance {
        calls: &[
            ("clock_gettime", libc::SYS_clock_gettime),
            ("gettimeofday", libc::SYS_gettimeofday),
            ("gettid", libc::SYS_gettid),
            ("getpid", libc::SYS_getpid),
        ],
        bound: Bound::Any,
        purpose: "time and identity",
    },
    Allowance {
        calls: &[
            ("close", libc::SYS_close),
            ("exit", libc::SYS_exit),
            ("exit_group", libc::SYS_exit_group),
        ],
        bound: Bound::Any,
        purpose: "the end of the run",
    },
    Allowance {
        calls: &[("fcntl", libc::SYS_fcntl)],
        bound: Bound::ArgIn(1, &[libc::F_GETFD as u64]),
        purpose: "F_GETFD only: Rust checks a descriptor is open before closing it",
    },
];

/// What the monitor must keep while the guest runs, beyond its devices.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// Descriptors it writes: stdout and stderr are always there; add the console
    /// log, a report file or a control socket.
    pub writable: Vec<RawFd>,
    /// Off only in this crate's unit tests, which run guests on test-harness
    /// threads that must go on after the guest.
    pub(crate) enforce: bool,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        Self {
            writable: Vec::new(),
            enforce: true,
        }
    }
}

impl SandboxPolicy {
    /// The policy with `fds` writable as well.
    pub fn writable(fds: impl IntoIterator<Item = RawFd>) -> Self {
        Self {
            writable: fds.into_iter().collect(),
            ..Self::default()
        }
    }

    /// No sandbox: for unit tests only.
    #[cfg(test)]
    pub(crate) fn disabled_for_tests() -> Self {
        Self {
            writable: Vec::new(),
            enforce: false,
        }
    }
}

const NAMESPACES: [(libc::c_int, &str); 5] = [
    (libc::CLONE_NEWUSER, "user"),
    (libc::CLONE_NEWNS, "mount"),
    (libc::CLONE_NEWPID, "pid"),
    (libc::CLONE_NEWIPC, "ipc"),
    (libc::CLONE_NEWUTS, "uts"),
];

/// Builds the filter for a guest whose memory ends at `guest_end`, with these
/// devices and this policy, for [`apply`].
pub fn compile(
    policy: &SandboxPolicy,
    devices: DeviceFds,
    guest_end: u64,
) -> Result<BpfProgram, UnikernelError> {
    let filter = SeccompFilter::new(
        rules(policy, devices)?,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(filter_error)?;
    let rules: BpfProgram = filter.try_into().map_err(filter_error)?;
    let mut program = guest_ip_check(guest_end)?;
    program.extend(rules);
    Ok(program)
}

/// The part of the sandbox that can be built ahead of the guest (a pool shell
/// does it while it is prepared): namespaces, no core dumps, `no_new_privs`.
/// Returns the namespaces entered. Nothing the process had open is closed.
pub fn isolate() -> Result<Vec<&'static str>, UnikernelError> {
    // A jailed VM process has its namespaces already (`crate::jail`).
    let namespaces = if crate::jail::locked_down() {
        Vec::new()
    } else {
        enter_namespaces()
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit; lowering a limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        return Err(host("limiting core dumps"));
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(host("setting no_new_privs"));
    }
    Ok(namespaces)
}

/// Puts `program` in force for the calling thread: the last step before the
/// guest's first instruction. Needs `no_new_privs` ([`isolate`]) unless root.
pub fn apply(program: &BpfProgram) -> Result<(), UnikernelError> {
    seccompiler::apply_filter(program).map_err(filter_error)
}

/// New namespaces, as many as the host allows: all of them where user namespaces
/// may be made; without a user namespace (they are disabled, or the process has
/// threads), the others as root.
fn enter_namespaces() -> Vec<&'static str> {
    let all = NAMESPACES.iter().fold(0, |flags, (flag, _)| flags | flag);
    let without_user = all & !libc::CLONE_NEWUSER;
    for flags in [all, without_user] {
        // SAFETY: unshare takes flags and changes only this process's namespaces.
        if unsafe { libc::unshare(flags) } == 0 {
            return NAMESPACES
                .iter()
                .filter(|(flag, _)| flags & flag != 0)
                .map(|(_, name)| *name)
                .collect();
        }
    }
    Vec::new()
}

/// BPF that answers every system call made from guest memory (`0..guest_end`)
/// with SIGSYS, before the number is even looked at: seccomp_data's
/// `instruction_pointer` is the address after the `syscall`.
fn guest_ip_check(guest_end: u64) -> Result<BpfProgram, UnikernelError> {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const IP_LOW: u32 = 8;
    const IP_HIGH: u32 = 12;
    let end =
        u32::try_from(guest_end).map_err(|_| UnikernelError::Internal("guest end above 4 GiB"))?;
    let insn = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    Ok(vec![
        insn(BPF_LD_W_ABS, 0, 0, IP_HIGH),
        // High half not zero: far above the guest; go on to the rules.
        insn(BPF_JEQ_K, 0, 3, 0),
        insn(BPF_LD_W_ABS, 0, 0, IP_LOW),
        // At or above the guest's end: go on to the rules.
        insn(BPF_JGE_K, 1, 0, end),
        insn(BPF_RET_K, 0, 0, u32::from(SeccompAction::Trap)),
    ])
}

fn rules(
    policy: &SandboxPolicy,
    devices: DeviceFds,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, UnikernelError> {
    let fds = |which: Fds| -> Vec<RawFd> {
        match which {
            Fds::Tap => devices.tap.into_iter().collect(),
            Fds::Output => [libc::STDOUT_FILENO, libc::STDERR_FILENO]
                .into_iter()
                .chain(policy.writable.iter().copied())
                .chain(devices.tap)
                .collect(),
            Fds::Disk => devices.disk.into_iter().collect(),
            Fds::Events => devices.events.into_iter().collect(),
        }
    };
    let mut rules = BTreeMap::new();
    for allowance in ALLOWED {
        let chain = match allowance.bound {
            Bound::Any => Vec::new(),
            Bound::Fd(which) => {
                let fds = fds(which);
                if fds.is_empty() {
                    continue;
                }
                fds.iter()
                    .map(|&fd| rule(&[(0, SeccompCmpOp::Eq, fd as u64)]))
                    .collect::<Result<_, _>>()?
            }
            Bound::ArgIn(index, values) => values
                .iter()
                .map(|&value| rule(&[(index, SeccompCmpOp::Eq, value)]))
                .collect::<Result<_, _>>()?,
            Bound::AnonymousNoExec => vec![rule(&[
                (2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0),
                (
                    3,
                    SeccompCmpOp::MaskedEq(libc::MAP_ANONYMOUS as u64),
                    libc::MAP_ANONYMOUS as u64,
                ),
            ])?],
        };
        for &(_, number) in allowance.calls {
            rules.insert(number, chain.clone());
        }
    }
    Ok(rules)
}

/// One rule: all of `conditions` (argument index, comparison, value) hold.
fn rule(conditions: &[(u8, SeccompCmpOp, u64)]) -> Result<SeccompRule, UnikernelError> {
    let conditions = conditions
        .iter()
        .map(|(arg, op, value)| {
            SeccompCondition::new(*arg, SeccompCmpArgLen::Dword, op.clone(), *value)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(filter_error)?;
    SeccompRule::new(conditions).map_err(filter_error)
}

fn filter_error(error: impl std::fmt::Display) -> UnikernelError {
    UnikernelError::Host {
        op: "building the seccomp filter",
        source: std::io::Error::other(error.to_string()),
    }
}

fn host(op: &'static str) -> UnikernelError {
    UnikernelError::Host {
        op,
        source: std::io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_for_every_device_set() {
        let policy = SandboxPolicy::writable([5]);
        for devices in [
            DeviceFds::default(),
            DeviceFds {
                tap: Some(7),
                disk: Some(8),
                events: Some(9),
            },
        ] {
            let program = compile(&policy, devices, 2 << 20).unwrap();
            assert!(program.len() > 20, "{} instructions", program.len());
        }
    }

    #[test]
    fn the_readme_lists_every_allowed_call() {
        let readme = include_str!("../../../../../README.md");
        for allowance in ALLOWED {
            for (name, _) in allowance.calls {
                assert!(
                    readme.contains(&format!("`{name}`")),
                    "README.md does not list {name}"
                );
            }
        }
    }

    #[test]
    fn the_guest_check_traps_below_the_guest_end_only() {
        let program = guest_ip_check(2 << 20).unwrap();
        assert_eq!(program.len(), 5);
        assert_eq!(program[3].k, 2 << 20);
        assert_eq!(program[4].k, u32::from(SeccompAction::Trap));
        assert!(guest_ip_check(1 << 40).is_err());
    }
}
