//! seccomp filters for the KVM monitors, one per kind of thread, compiled (with
//! seccompiler) from allow-lists kept in the repository as data:
//! `crates/vmm/seccomp/<thread>.json`, one file per [`ThreadKind`], each call with
//! the reason the monitor makes it. README.md repeats the lists.
//!
//! A KVM guest has the hardware boundary in front of its monitor; these filters
//! are the line behind it. A monitor thread that a guest took over (through a bug
//! in a device, say) can make only the calls its thread makes anyway, and most
//! of them only on the descriptors it was given: its own vCPU, its console, its
//! disk, its tap, its eventfds. Anything else — `open`, `socket`, `execve`,
//! `clone`, `mprotect`, `ptrace`, any other ioctl — kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`): the supervisor of a jailed VM reports that, and
//! the kernel's audit log names the call.
//!
//! A list is data, not code: an entry names calls and, optionally, what their
//! arguments must be — argument 0 one of the descriptors of some classes
//! (`"fds": ["vcpu"]`), one argument one of some values, by number or by name
//! (`"arg": [1, ["KVM_RUN"]]`), or for `mmap`, anonymous and never executable. The
//! descriptors are known only when the VM is built, so filters are compiled then,
//! from [`ThreadFds`]; a class the VM has no descriptor of drops its entry (a VM
//! without a disk may not `pread` at all).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

/// A kind of monitor thread, each with its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The one thread of a unikernel on kvm: vCPU, hypercalls, devices.
    KvmUnikernel,
    /// A vCPU thread of a Linux microVM (and the devices its exits reach).
    LinuxVcpu,
    /// A network receive thread of a Linux microVM.
    LinuxIo,
    /// The main thread of a Linux microVM while the others run.
    LinuxMain,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::KvmUnikernel,
        ThreadKind::LinuxVcpu,
        ThreadKind::LinuxIo,
        ThreadKind::LinuxMain,
    ];

    /// The list's name (its file is `seccomp/<name>.json`).
    pub const fn name(self) -> &'static str {
        match self {
            ThreadKind::KvmUnikernel => "kvm-unikernel",
            ThreadKind::LinuxVcpu => "linux-vcpu",
            ThreadKind::LinuxIo => "linux-io",
            ThreadKind::LinuxMain => "linux-main",
        }
    }

    /// The list, as kept in the repository.
    pub const fn source(self) -> &'static str {
        match self {
            ThreadKind::KvmUnikernel => include_str!("../seccomp/kvm-unikernel.json"),
            ThreadKind::LinuxVcpu => include_str!("../seccomp/linux-vcpu.json"),
            ThreadKind::LinuxIo => include_str!("../seccomp/linux-io.json"),
            ThreadKind::LinuxMain => include_str!("../seccomp/linux-main.json"),
        }
    }

    /// The list, parsed.
    pub fn list(self) -> Result<AllowList, SeccompError> {
        let list: AllowList =
            serde_json::from_str(self.source()).map_err(|e| SeccompError::List {
                thread: self.name(),
                detail: e.to_string(),
            })?;
        if list.thread != self.name() {
            return Err(SeccompError::List {
                thread: self.name(),
                detail: format!("the file names thread {:?}", list.thread),
            });
        }
        Ok(list)
    }
}

/// Why a filter could not be made or put in force. Every variant but `Apply` is
/// a bug in a list or in this module, which the unit tests compile each list to
/// catch.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A list file does not parse, or names another thread.
    #[error("seccomp list {thread}: {detail}")]
    List {
        /// The list.
        thread: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A list names a system call this module has no number for.
    #[error("seccomp list {thread}: unknown system call {name:?}")]
    UnknownCall {
        /// The list.
        thread: &'static str,
        /// The name.
        name: String,
    },
    /// A list names a constant this module does not know.
    #[error("seccomp list {thread}: unknown constant {name:?}")]
    UnknownConstant {
        /// The list.
        thread: &'static str,
        /// The name.
        name: String,
    },
    /// seccompiler refused the rules.
    #[error("building the {thread} seccomp filter: {detail}")]
    Compile {
        /// The list.
        thread: &'static str,
        /// seccompiler's message.
        detail: String,
    },
    /// The kernel refused the filter.
    #[error("installing the seccomp filter: {0}")]
    Apply(String),
}

/// A list as its file holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    /// The thread kind's name.
    pub thread: String,
    /// What the thread does, for readers of the file.
    pub about: String,
    /// The allowed calls.
    pub allow: Vec<Entry>,
}

/// Some calls and the bound on their arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// System call names.
    pub calls: Vec<String>,
    /// Argument 0 is a descriptor of one of these classes.
    #[serde(default)]
    pub fds: Vec<FdClass>,
    /// Argument `.0` is one of `.1`.
    #[serde(default)]
    pub arg: Option<(u8, Vec<Value>)>,
    /// The bound on `mmap`'s arguments.
    #[serde(default)]
    pub mmap: Option<MmapBound>,
    /// Why the thread makes them.
    pub why: String,
}

/// A classes of descriptors a thread uses, filled in from [`ThreadFds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdClass {
    /// Its vCPU's descriptor.
    Vcpu,
    /// stdout, stderr and what the monitor was told it writes (console log,
    /// report, daemon socket).
    Output,
    /// The taps.
    Tap,
    /// The disk images.
    Disk,
    /// The epoll set of the unikernel's poll hypercall.
    Events,
    /// eventfds: irqfds, the receive threads' wakers, the stop eventfd.
    Eventfd,
}

/// An argument value: a number, or a name this module knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number.
    Number(u64),
    /// A name: a KVM ioctl, a signal, an `madvise` advice, an `fcntl` command.
    Name(String),
}

/// What `mmap` may map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MmapBound {
    /// Anonymous memory that is not executable.
    AnonymousNoExec,
}

/// The descriptors a thread's filter binds its calls to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadFds {
    /// Its vCPU.
    pub vcpu: Vec<RawFd>,
    /// Written beyond stdout and stderr (which are always allowed).
    pub output: Vec<RawFd>,
    /// Taps.
    pub tap: Vec<RawFd>,
    /// Disk images.
    pub disk: Vec<RawFd>,
    /// The poll hypercall's epoll set.
    pub events: Vec<RawFd>,
    /// eventfds.
    pub eventfd: Vec<RawFd>,
}

impl ThreadFds {
    fn of(&self, class: FdClass) -> Vec<RawFd> {
        match class {
            FdClass::Vcpu => self.vcpu.clone(),
            FdClass::Output => [libc::STDOUT_FILENO, libc::STDERR_FILENO]
                .into_iter()
                .chain(self.output.iter().copied())
                .collect(),
            FdClass::Tap => self.tap.clone(),
            FdClass::Disk => self.disk.clone(),
            FdClass::Events => self.events.clone(),
            FdClass::Eventfd => self.eventfd.clone(),
        }
    }
}

/// Compiles the filter of a `kind` thread bound to `fds`. Calls outside the list
/// kill the process.
pub fn compile(kind: ThreadKind, fds: &ThreadFds) -> Result<BpfProgram, SeccompError> {
    let rules = rules(kind, &kind.list()?, fds)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| compile_error(kind, e))?;
    filter.try_into().map_err(|e| compile_error(kind, e))
}

/// Puts `program` in force for the calling thread (and the threads it starts
/// afterwards), setting `no_new_privs` first as the kernel requires of a process
/// without `CAP_SYS_ADMIN`.
pub fn apply(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Apply(e.to_string()))
}

fn compile_error(kind: ThreadKind, error: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile {
        thread: kind.name(),
        detail: error.to_string(),
    }
}

/// The rules of one list: for each call, `None` when it is allowed whatever its
/// arguments, else the alternatives (any one matching allows it).
fn rules(
    kind: ThreadKind,
    list: &AllowList,
    fds: &ThreadFds,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut merged: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for entry in &list.allow {
        let Some(alternatives) = alternatives(kind, entry, fds)? else {
            continue; // bound to descriptors this VM has none of
        };
        for name in &entry.calls {
            let number = syscall_number(name).ok_or_else(|| SeccompError::UnknownCall {
                thread: kind.name(),
                name: name.clone(),
            })?;
            let slot = merged.entry(number).or_insert_with(|| Some(Vec::new()));
            match (slot.as_mut(), &alternatives) {
                // Already allowed unconditionally, or now becomes so.
                (None, _) => {}
                (Some(_), None) => *slot = None,
                (Some(rules), Some(more)) => rules.extend(more.iter().cloned()),
            }
        }
    }
    // seccompiler reads an empty rule list as "allowed whatever the arguments".
    Ok(merged
        .into_iter()
        .map(|(number, rules)| (number, rules.unwrap_or_default()))
        .collect())
}

/// The alternatives an entry allows: `Some(None)` for any arguments,
/// `Some(Some(rules))` for these, `None` when the entry allows nothing here (its
/// descriptor classes are empty).
#[allow(clippy::type_complexity)]
fn alternatives(
    kind: ThreadKind,
    entry: &Entry,
    fds: &ThreadFds,
) -> Result<Option<Option<Vec<SeccompRule>>>, SeccompError> {
    let fds: Vec<RawFd> = entry.fds.iter().flat_map(|&class| fds.of(class)).collect();
    if !entry.fds.is_empty() && fds.is_empty() {
        return Ok(None);
    }
    let values = match &entry.arg {
        Some((index, values)) => Some((
            *index,
            values
                .iter()
                .map(|value| constant(kind, value))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        None => None,
    };
    let mmap = match entry.mmap {
        Some(MmapBound::AnonymousNoExec) => vec![
            (2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0),
            (
                3,
                SeccompCmpOp::MaskedEq(libc::MAP_ANONYMOUS as u64),
                libc::MAP_ANONYMOUS as u64,
            ),
        ],
        None => Vec::new(),
    };
    if fds.is_empty() && values.is_none() && mmap.is_empty() {
        return Ok(Some(None));
    }
    // Every combination of one descriptor and one value, each with the mmap bound.
    let fd_choices: Vec<Option<RawFd>> = if fds.is_empty() {
        vec![None]
    } else {
        fds.into_iter().map(Some).collect()
    };
    let value_choices: Vec<Option<(u8, u64)>> = match &values {
        None => vec![None],
        Some((index, values)) => values.iter().map(|&v| Some((*index, v))).collect(),
    };
    let mut rules = Vec::new();
    for fd in &fd_choices {
        for value in &value_choices {
            let mut conditions = mmap.clone();
            if let Some(fd) = fd {
                conditions.push((0, SeccompCmpOp::Eq, *fd as u64));
            }
            if let Some((index, value)) = value {
                conditions.push((*index, SeccompCmpOp::Eq, *value));
            }
            rules.push(rule(kind, &conditions)?);
        }
    }
    Ok(Some(Some(rules)))
}

/// One rule: all of `conditions` (argument index, comparison, value) hold.
fn rule(
    kind: ThreadKind,
    conditions: &[(u8, SeccompCmpOp, u64)],
) -> Result<SeccompRule, SeccompError> {
    let conditions = conditions
        .iter()
        .map(|(arg, op, value)| {
            SeccompCondition::new(*arg, SeccompCmpArgLen::Dword, op.clone(), *value)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| compile_error(kind, e))?;
    SeccompRule::new(conditions).map_err(|e| compile_error(kind, e))
}

// The KVM ioctls the lists name, as kvm-ioctls defines them (its own are private).
const KVMIO: u32 = 0xAE;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_bindings::kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
ioctl_iow_nr!(KVM_SET_SREGS, KVMIO, 0x84, kvm_bindings::kvm_sregs);
ioctl_ior_nr!(
    KVM_GET_VCPU_EVENTS,
    KVMIO,
    0x9f,
    kvm_bindings::kvm_vcpu_events
);

/// The value of a named constant.
fn constant(kind: ThreadKind, value: &Value) -> Result<u64, SeccompError> {
    let name = match value {
        Value::Number(number) => return Ok(*number),
        Value::Name(name) => name.as_str(),
    };
    let known = match name {
        "KVM_RUN" => KVM_RUN(),
        "KVM_GET_REGS" => KVM_GET_REGS(),
        "KVM_SET_REGS" => KVM_SET_REGS(),
        "KVM_GET_SREGS" => KVM_GET_SREGS(),
        "KVM_SET_SREGS" => KVM_SET_SREGS(),
        "KVM_GET_VCPU_EVENTS" => KVM_GET_VCPU_EVENTS(),
        "SIGABRT" => libc::SIGABRT as u64,
        // The signal that kicks a vCPU out of KVM_RUN (see `crate::timer`).
        "KICK" => crate::timer::kick_signal() as u64,
        "MADV_DONTNEED" => libc::MADV_DONTNEED as u64,
        "MADV_FREE" => libc::MADV_FREE as u64,
        "F_GETFD" => libc::F_GETFD as u64,
        _ => {
            return Err(SeccompError::UnknownConstant {
                thread: kind.name(),
                name: name.to_owned(),
            })
        }
    };
    Ok(known)
}

/// The x86-64 number of a system call the lists may name.
fn syscall_number(name: &str) -> Option<i64> {
    Some(match name {
        "read" => libc::SYS_read,
        "readv" => libc::SYS_readv,
        "write" => libc::SYS_write,
        "writev" => libc::SYS_writev,
        "sendto" => libc::SYS_sendto,
        "pread64" => libc::SYS_pread64,
        "pwrite64" => libc::SYS_pwrite64,
        "fdatasync" => libc::SYS_fdatasync,
        "fsync" => libc::SYS_fsync,
        "ioctl" => libc::SYS_ioctl,
        "epoll_wait" => libc::SYS_epoll_wait,
        "epoll_pwait" => libc::SYS_epoll_pwait,
        "epoll_pwait2" => libc::SYS_epoll_pwait2,
        "poll" => libc::SYS_poll,
        "ppoll" => libc::SYS_ppoll,
        "mmap" => libc::SYS_mmap,
        "munmap" => libc::SYS_munmap,
        "mremap" => libc::SYS_mremap,
        "brk" => libc::SYS_brk,
        "madvise" => libc::SYS_madvise,
        "futex" => libc::SYS_futex,
        "sched_yield" => libc::SYS_sched_yield,
        "nanosleep" => libc::SYS_nanosleep,
        "clock_nanosleep" => libc::SYS_clock_nanosleep,
        "rt_sigreturn" => libc::SYS_rt_sigreturn,
        "rt_sigprocmask" => libc::SYS_rt_sigprocmask,
        "rt_sigaction" => libc::SYS_rt_sigaction,
        "sigaltstack" => libc::SYS_sigaltstack,
        "restart_syscall" => libc::SYS_restart_syscall,
        "tgkill" => libc::SYS_tgkill,
        "timer_settime" => libc::SYS_timer_settime,
        "timer_gettime" => libc::SYS_timer_gettime,
        "timer_delete" => libc::SYS_timer_delete,
        "clock_gettime" => libc::SYS_clock_gettime,
        "gettimeofday" => libc::SYS_gettimeofday,
        "gettid" => libc::SYS_gettid,
        "getpid" => libc::SYS_getpid,
        "close" => libc::SYS_close,
        "exit" => libc::SYS_exit,
        "exit_group" => libc::SYS_exit_group,
        "fcntl" => libc::SYS_fcntl,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptors for every class, so that every entry of every list compiles.
    fn every_class() -> ThreadFds {
        ThreadFds {
            vcpu: vec![10],
            output: vec![11],
            tap: vec![12],
            disk: vec![13, 14],
            events: vec![15],
            eventfd: vec![16, 17],
        }
    }

    #[test]
    fn every_list_parses_names_its_thread_and_compiles() {
        for kind in ThreadKind::ALL {
            let list = kind.list().unwrap();
            assert!(!list.about.is_empty() && !list.allow.is_empty());
            for entry in &list.allow {
                assert!(!entry.why.is_empty(), "{}: {:?}", kind.name(), entry.calls);
            }
            let program = compile(kind, &every_class()).unwrap();
            assert!(
                program.len() > 20,
                "{}: {} instructions",
                kind.name(),
                program.len()
            );
            compile(kind, &ThreadFds::default()).unwrap();
        }
    }

    #[test]
    fn the_readme_lists_every_call_of_every_list() {
        let readme = include_str!("../../../README.md");
        for kind in ThreadKind::ALL {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}`", kind.name())))
                .unwrap_or_else(|| panic!("README.md has no row for {}", kind.name()));
            let list = kind.list().unwrap();
            let mut calls: Vec<&str> = list
                .allow
                .iter()
                .flat_map(|e| e.calls.iter().map(String::as_str))
                .collect();
            calls.sort_unstable();
            calls.dedup();
            for call in &calls {
                assert!(
                    row.contains(&format!("`{call}`")),
                    "README.md's {} row does not list {call}",
                    kind.name()
                );
            }
            assert!(
                row.contains(&format!("({} calls)", calls.len())),
                "README.md's {} row miscounts its {} calls",
                kind.name(),
                calls.len()
            );
        }
    }

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // From <linux/kvm.h>: _IO(KVMIO, 0x80), _IOR(KVMIO, 0x81, struct kvm_regs)…
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_SET_REGS(), 0x4090_ae82);
        assert_eq!(KVM_GET_SREGS(), 0x8138_ae83);
        assert_eq!(KVM_SET_SREGS(), 0x4138_ae84);
        assert_eq!(KVM_GET_VCPU_EVENTS(), 0x8040_ae9f);
    }

    #[test]
    fn a_class_without_descriptors_allows_nothing_and_any_wins_over_bounds() {
        let list: AllowList = serde_json::from_str(
            r#"{"thread": "t", "about": "a", "allow": [
                {"calls": ["pread64"], "fds": ["disk"], "why": "w"},
                {"calls": ["write"], "fds": ["output"], "why": "w"},
                {"calls": ["write"], "why": "w"},
                {"calls": ["tgkill"], "arg": [2, ["SIGABRT", 9]], "why": "w"}
            ]}"#,
        )
        .unwrap();
        let rules = rules(ThreadKind::LinuxIo, &list, &ThreadFds::default()).unwrap();
        assert!(!rules.contains_key(&libc::SYS_pread64));
        assert_eq!(rules[&libc::SYS_write].len(), 0, "unconditional");
        assert_eq!(rules[&libc::SYS_tgkill].len(), 2);
    }

    #[test]
    fn unknown_names_are_errors() {
        let list: AllowList = serde_json::from_str(
            r#"{"thread": "t", "about": "a", "allow": [{"calls": ["openat"], "why": "w"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            rules(ThreadKind::LinuxIo, &list, &ThreadFds::default()),
            Err(SeccompError::UnknownCall { .. })
        ));
        let list: AllowList = serde_json::from_str(
            r#"{"thread": "t", "about": "a", "allow": [{"calls": ["ioctl"], "arg": [1, ["TUNSETIFF"]], "why": "w"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            rules(ThreadKind::LinuxIo, &list, &ThreadFds::default()),
            Err(SeccompError::UnknownConstant { .. })
        ));
        assert!(serde_json::from_str::<AllowList>(
            r#"{"thread": "t", "about": "a", "allow": [{"calls": [], "fds": ["socket"], "why": "w"}]}"#
        )
        .is_err());
    }

    /// How a forked child that installed `kind`'s filter ended after `attempt`.
    fn in_child(kind: ThreadKind, fds: &ThreadFds, attempt: fn()) -> libc::c_int {
        let program = compile(kind, fds).unwrap();
        // SAFETY: fork in a test process; the child only makes raw system calls
        // (prctl, seccomp, the attempt) and leaves with _exit, never returning into
        // the test harness or touching its locks.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // `apply` makes only prctl and seccomp calls, with the filter built
            // before the fork.
            if apply(&program).is_err() {
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(99) };
            }
            attempt();
            // SAFETY: ends the (single-threaded) child with the thread's own exit,
            // which every list allows, without running anything of the harness.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid int.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    fn killed_by_sigsys(status: libc::c_int) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    #[test]
    fn a_call_outside_the_list_kills_the_monitor() {
        let fds = ThreadFds {
            vcpu: vec![100],
            ..ThreadFds::default()
        };
        // Opening a host file, making a socket, starting a process, another
        // ioctl on the vCPU: none is in any list.
        let forbidden: [fn(); 4] = [
            || {
                // SAFETY: a raw openat of a constant, NUL-terminated path.
                unsafe {
                    libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/etc/passwd".as_ptr(), 0)
                };
            },
            || {
                // SAFETY: a raw socket call with constant arguments.
                unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
            },
            || {
                // SAFETY: fork's raw form; never reached past the filter.
                unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
            },
            || {
                // SAFETY: an ioctl on a descriptor number with a null argument.
                unsafe { libc::syscall(libc::SYS_ioctl, 100, 0xae41u64, 0) }; // KVM_CREATE_VCPU
            },
        ];
        for kind in ThreadKind::ALL {
            for attempt in forbidden {
                let status = in_child(kind, &fds, attempt);
                assert!(
                    killed_by_sigsys(status),
                    "{}: status {status:#x}",
                    kind.name()
                );
            }
        }
    }

    #[test]
    fn the_vcpu_filter_binds_its_calls_to_its_descriptors() {
        let fds = ThreadFds {
            vcpu: vec![100],
            disk: vec![101],
            ..ThreadFds::default()
        };
        // Allowed: KVM_RUN on its own vCPU (EBADF here: no such descriptor), a
        // write to stderr, a pread of its disk.
        let status = in_child(ThreadKind::LinuxVcpu, &fds, || {
            // SAFETY: raw calls on descriptor numbers this child does not hold or
            // with empty buffers: each fails or writes nothing, none touches memory.
            unsafe {
                libc::syscall(libc::SYS_ioctl, 100, 0xae80u64, 0);
                libc::syscall(libc::SYS_write, 2, c"".as_ptr(), 0);
                libc::syscall(libc::SYS_pread64, 101, std::ptr::null_mut::<u8>(), 0, 0);
            }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
        // KVM_RUN on another vCPU's descriptor, a pread of another file: killed.
        let other_vcpu = in_child(ThreadKind::LinuxVcpu, &fds, || {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_ioctl, 7, 0xae80u64, 0) };
        });
        assert!(killed_by_sigsys(other_vcpu), "{other_vcpu:#x}");
        let other_file = in_child(ThreadKind::LinuxVcpu, &fds, || {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_pread64, 5, std::ptr::null_mut::<u8>(), 0, 0) };
        });
        assert!(killed_by_sigsys(other_file), "{other_file:#x}");
        // Executable memory: killed.
        let exec = in_child(ThreadKind::LinuxVcpu, &fds, || {
            // SAFETY: an anonymous mapping request; it never returns here.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
        });
        assert!(killed_by_sigsys(exec), "{exec:#x}");
    }
}
