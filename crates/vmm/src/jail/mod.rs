//! The jail every VM process runs in (Firecracker's jailer is the model): one way
//! in for the three kinds of VM — a unikernel on kvm, a unikernel on process, a
//! Linux microVM.
//!
//! It comes in two steps around the building of the VM:
//!
//! 1. [`spawn`], at the start, in the monitor that was asked to run a VM (one
//!    thread, nothing of the VM opened yet): makes the VM's cgroup, and forks the
//!    VM process into a new PID namespace (as root; a user additionally gets a
//!    user namespace to hold the others, where the host allows it). The parent
//!    stays outside as the [`Supervisor`]: it waits for the VM process, stops it
//!    if it is itself interrupted, tells how it ended (its cgroup's OOM killer, its
//!    seccomp filter) and removes the cgroup. The child, a [`Jail`], asks to be
//!    killed if the supervisor dies and moves itself into its cgroup, so that
//!    what the VM allocates is charged there. Moving a whole process waits for an
//!    RCU grace period in the kernel (cgroup_threadgroup_rwsem: ~10 ms on our busy
//!    development VMs, more than the rest of a cold start); a single-threaded
//!    process moving its own thread does not, and that is how it joins cgroup v1
//!    hierarchies. cgroup v2 moves only whole processes: there the supervisor
//!    moves it while it builds its VM, so the wait overlaps the build (what the
//!    build allocated before the move — KVM's VM and vCPU, the image — stays
//!    charged to the supervisor's group; everything the guest makes the VM
//!    allocate comes after).
//! 2. [`Jail::lock_down`], once the VM process has opened everything it needs
//!    (image, `/dev/kvm` and the VM, tap, disk, console and report) and before the
//!    guest runs: it waits for the word that it is in its cgroup, then enters new
//!    mount, IPC, UTS and network namespaces, an empty read-only
//!    root (pivot_root into a tmpfs with nothing in it), resource limits, an
//!    unprivileged uid and gid (when started as root), `no_new_privs`. What it
//!    applied comes back as a [`JailReport`] for the run report.
//!
//! Whatever the host does not allow (no cgroup controller, no user namespaces,
//! not root) is skipped, and the report says what and why; only a failure to
//! drop privileges that root has is an error. The monitor's seccomp filters come
//! after the lock-down, each platform's own.

mod cgroup;
mod config;
mod sys;

use std::io::Write;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

pub use cgroup::{sweep_stale, Cgroup};
pub use config::{
    CgroupReport, CpuMax, CpuSyntax, JailConfig, JailReport, Limits, RlimitReport, DEFAULT_ID,
    MONITOR_OVERHEAD, OVERHEAD_PER_GUEST_MIB, PIDS_SLACK,
};

/// Room left above the descriptors open at lock-down, for the few a run may
/// still make (none today: a VM opens everything before).
const NOFILE_ROOM: u64 = 16;

/// Set once this process has locked itself down (read by the process platform,
/// whose sandbox then has no namespaces left to enter).
static LOCKED_DOWN: AtomicBool = AtomicBool::new(false);

/// Whether this process is a VM process that has locked itself down.
pub fn locked_down() -> bool {
    LOCKED_DOWN.load(Ordering::SeqCst)
}

/// Why a jail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The monitor has threads: forking it would copy locks another thread holds.
    #[error("internal error: the jail must be entered by a monitor with one thread (it has {0})")]
    Threads(usize),
    /// A system call the jail cannot do without failed.
    #[error("jail: {op}: {source}")]
    Host {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

fn host(op: &'static str) -> impl FnOnce(std::io::Error) -> JailError {
    move |source| JailError::Host { op, source }
}

/// The two processes [`spawn`] returns in.
pub enum Spawned {
    /// The VM process: build the VM, then [`Jail::lock_down`], then run it.
    Monitor(Jail),
    /// The process that was asked to run the VM: [`Supervisor::wait`] for it.
    Supervisor(Supervisor),
}

/// Makes the VM's cgroup (`lightvm-<pid of this process>`) and forks the VM
/// process into its namespaces. Call it once per process (a process makes one
/// PID namespace for its children), while it has one thread and before anything
/// of the VM is opened. The VM process keeps stdin, stdout, stderr and `keep`
/// (a report file, say) of this process's descriptors, and no other.
pub fn spawn(config: &JailConfig, keep: &[RawFd]) -> Result<Spawned, JailError> {
    let threads = sys::thread_count().map_err(host("counting threads"))?;
    if threads != 1 {
        return Err(JailError::Threads(threads));
    }
    // Anything buffered would be written twice, by both processes.
    let _ = std::io::stdout().flush();
    // SAFETY: geteuid and getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let root = euid == 0;
    let mut skipped = Vec::new();
    let (alive_read, alive_write) = sys::pipe().map_err(host("making a pipe"))?;
    let name = format!("lightvm-{}", std::process::id());
    let cgroup = Cgroup::create(&config.limits, &name);
    if let Ok(cgroup) = &cgroup {
        skipped.extend(cgroup.missing());
    }
    // The PID namespace is the child's (unshare(CLONE_NEWPID) names the
    // namespace of the next child); a user without privileges needs a user
    // namespace to own it and the namespaces to come.
    let mut namespaces = Vec::new();
    let wanted = if root {
        libc::CLONE_NEWPID
    } else {
        libc::CLONE_NEWUSER | libc::CLONE_NEWPID
    };
    match sys::unshare(wanted) {
        Ok(()) => {
            if !root {
                namespaces.push("user");
            }
            namespaces.push("pid");
        }
        Err(e) => skipped.push(format!(
            "namespaces: none ({}): {e}",
            if root {
                "root, but this host refuses them"
            } else {
                "this user cannot make a user namespace here"
            }
        )),
    }
    // SAFETY: the process has one thread (checked above).
    let forked = unsafe { sys::fork() };
    if forked.is_err() {
        if let Ok(cgroup) = &cgroup {
            cgroup.remove();
        }
    }
    match forked.map_err(host("forking the VM process"))? {
        None => {
            let mut kept = keep.to_vec();
            kept.push(alive_read);
            sys::close_all_but(&kept).map_err(host("closing what the VM does not need"))?;
            let mut jail = Jail {
                config: config.clone(),
                started_as: (euid, egid),
                alive: Some(alive_read),
                namespaces,
                cgroup,
                skipped,
            };
            jail.enter()?;
            Ok(Spawned::Monitor(jail))
        }
        Some(pid) => {
            sys::close(alive_read);
            let mut supervisor = Supervisor::start(pid, cgroup.ok(), alive_write);
            supervisor.place();
            Ok(Spawned::Supervisor(supervisor))
        }
    }
}

/// The jail of a VM process that another process started into its own PID
/// namespace and watches itself (the daemon's pooled shells: the daemon is the
/// supervisor, through a pidfd, and a VM must outlive a daemon restart, so there
/// is no dying with the parent). Call it first thing, while the process has one
/// thread and before it allocates its VM: it makes the VM's cgroup
/// `lightvm-<host pid>` with `config`'s limits and moves this process into it
/// (itself: no grace period to wait for on v1), so that the guest memory the
/// prepare phase maps is charged there. [`Jail::lock_down`] then does the rest,
/// once the VM is built. The caller removes the group after the process ended
/// ([`Cgroup::reopen`]). It keeps stdin, stdout, stderr and `keep` of its
/// descriptors and closes the others: what its starter happened to leave open
/// is not the VM's.
pub fn enter_started(config: &JailConfig, keep: &[RawFd]) -> Jail {
    let mut skipped = Vec::new();
    if let Err(e) = sys::close_all_but(keep) {
        skipped.push(format!("closing the descriptors it does not need: {e}"));
    }
    // SAFETY: getpid has no preconditions.
    let in_own_pid_namespace = unsafe { libc::getpid() } == 1;
    let mut namespaces = Vec::new();
    if in_own_pid_namespace {
        namespaces.push("pid");
    } else {
        skipped.push("pid namespace: the process that started this one made none".to_owned());
    }
    // /proc is the host's: its `self` names this process by its pid there.
    let host_pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str().and_then(|s| s.parse::<u32>().ok()))
        .unwrap_or_else(std::process::id);
    let cgroup = Cgroup::create(&config.limits, &format!("lightvm-{host_pid}")).and_then(|group| {
        if let Some(missing) = group.missing() {
            skipped.push(missing);
        }
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        match group.join_v1().and_then(|()| group.attach_v2(me)) {
            Ok(()) => Ok(group),
            Err(e) => {
                group.remove();
                Err(format!("cannot join its cgroup: {e}"))
            }
        }
    });
    // The host's ids: a user namespace shows others.
    // SAFETY: geteuid and getegid have no preconditions.
    let started_as = unsafe { (libc::geteuid(), libc::getegid()) };
    // After the cgroup, which a user may have only in a group delegated to it.
    if started_as.0 != 0 {
        // A user without privileges gets the namespaces [`Jail::lock_down`]
        // makes inside a user namespace of its own, as `lightvm run` does
        // (one thread: the kernel allows it only then).
        match sys::unshare(libc::CLONE_NEWUSER) {
            Ok(()) => namespaces.push("user"),
            Err(e) => skipped.push(format!(
                "namespaces: none (this user cannot make a user namespace here): {e}"
            )),
        }
    }
    Jail {
        config: config.clone(),
        started_as,
        alive: None,
        namespaces,
        cgroup,
        skipped,
    }
}

/// The VM process's side of the jail.
#[derive(Debug)]
pub struct Jail {
    config: JailConfig,
    /// The supervisor's effective uid and gid: what this process was started as.
    started_as: (u32, u32),
    /// The read end of the pipe the supervisor holds open while it lives.
    alive: Option<RawFd>,
    namespaces: Vec<&'static str>,
    cgroup: Result<Cgroup, String>,
    skipped: Vec<String>,
}

impl Jail {
    /// Right after the fork: dies with the supervisor, joins its cgroup's v1
    /// hierarchies.
    fn enter(&mut self) -> Result<(), JailError> {
        if let Some(alive) = self.alive {
            if !sys::die_with_parent(alive).map_err(host("asking to die with the supervisor"))? {
                // The supervisor is gone already: nobody waits for this VM.
                std::process::exit(crate::report::exit_code::LIGHTVM_ERROR.into());
            }
        }
        if let Ok(cgroup) = &self.cgroup {
            if let Err(e) = cgroup.join_v1() {
                self.cgroup = Err(format!("cannot join its cgroup: {e}"));
            }
        }
        Ok(())
    }

    /// Waits for the supervisor's word that this process is in its cgroup (see
    /// [`Supervisor::place`]); a failure's reason becomes the report's.
    fn placed(&mut self) {
        let (Some(alive), Ok(_)) = (self.alive, &self.cgroup) else {
            return;
        };
        let word = sys::read_word(alive);
        match word.as_deref() {
            Ok([PLACED]) => {}
            Ok([NOT_PLACED, reason @ ..]) => {
                self.cgroup = Err(String::from_utf8_lossy(reason).into_owned());
            }
            Ok(_) => {
                self.cgroup = Err("the supervisor ended before it placed the VM".to_owned());
            }
            Err(e) => self.cgroup = Err(format!("waiting to be placed in it: {e}")),
        }
    }

    /// Locks the VM process down: call it when the VM is built and before it
    /// runs. Returns what was applied.
    pub fn lock_down(&mut self) -> Result<JailReport, JailError> {
        self.placed();
        let mut report = JailReport {
            skipped: std::mem::take(&mut self.skipped),
            root: "host".to_owned(),
            ..JailReport::default()
        };
        // The descriptors are counted while /proc can still be read.
        let nofile = self
            .config
            .nofile
            .unwrap_or_else(|| sys::highest_fd().map_or(64, |fd| fd as u64 + 1 + NOFILE_ROOM));
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        if self.config.network_namespace {
            flags |= libc::CLONE_NEWNET;
        }
        match sys::unshare(flags) {
            Ok(()) => {
                self.namespaces.extend(["mount", "ipc", "uts"]);
                if self.config.network_namespace {
                    self.namespaces.push("net");
                }
                match sys::empty_root() {
                    Ok(()) => report.root = "empty".to_owned(),
                    Err(e) => report.skipped.push(format!("an empty root: {e}")),
                }
            }
            Err(e) => report
                .skipped
                .push(format!("mount, ipc, uts and net namespaces: {e}")),
        }
        report.namespaces = self.namespaces.iter().map(|n| (*n).to_owned()).collect();

        let limits = [
            (libc::RLIMIT_NOFILE, Some(nofile), "RLIMIT_NOFILE"),
            (libc::RLIMIT_CORE, Some(0), "RLIMIT_CORE"),
            (libc::RLIMIT_FSIZE, self.config.fsize, "RLIMIT_FSIZE"),
            (libc::RLIMIT_NPROC, self.config.nproc, "RLIMIT_NPROC"),
        ];
        for (resource, value, name) in limits {
            if let Some(value) = value {
                sys::set_rlimit(resource, value)
                    .map_err(|source| JailError::Host { op: name, source })?;
            }
        }
        report.rlimits = RlimitReport {
            nofile,
            core: 0,
            fsize: self.config.fsize,
            nproc: self.config.nproc,
        };

        let (uid, gid) = self.started_as;
        if uid == 0 {
            sys::drop_to(self.config.uid, self.config.gid)
                .map_err(host("dropping to the jail's uid and gid"))?;
            (report.uid, report.gid) = (self.config.uid, self.config.gid);
        } else {
            (report.uid, report.gid) = (uid, gid);
            report.skipped.push(format!(
                "uid and gid: not root, so the VM keeps this user's (uid {uid})"
            ));
        }
        // The request to die with the supervisor did not survive the change of
        // credentials: make it again, and make sure the supervisor is still there.
        if let Some(alive) = self.alive.take() {
            let parent = sys::die_with_parent(alive);
            sys::close(alive);
            if !parent.map_err(host("asking to die with the supervisor"))? {
                std::process::exit(crate::report::exit_code::LIGHTVM_ERROR.into());
            }
        }
        sys::no_new_privs().map_err(host("setting no_new_privs"))?;
        report.cgroup = match &self.cgroup {
            Ok(cgroup) => cgroup.report(),
            Err(reason) => CgroupReport::Skipped {
                skipped: reason.clone(),
            },
        };
        LOCKED_DOWN.store(true, Ordering::SeqCst);
        Ok(report)
    }
}

/// The supervisor's word to the VM process: in its cgroup, or not (then the
/// reason follows).
const PLACED: u8 = b'+';
const NOT_PLACED: u8 = b'-';

/// The VM process's pid and the signal that interrupted the supervisor, for the
/// supervisor's signal handler (which may only touch atomics).
static CHILD: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn stop_the_vm(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; `pid` is the supervisor's child,
        // which it has not reaped yet (it reaps only after this can run).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// The parent's side: waits for the VM process and cleans up after it.
#[derive(Debug)]
pub struct Supervisor {
    pid: libc::pid_t,
    cgroup: Option<Cgroup>,
    alive: RawFd,
}

/// How a VM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code (the code `lightvm run` exits with).
    Exited(u8),
    /// A signal killed it.
    Killed {
        /// The signal.
        signal: i32,
        /// Its cgroup's OOM killer did it; the limit it had.
        out_of_memory: Option<u64>,
        /// The supervisor stopped it because this signal interrupted the
        /// supervisor (a Ctrl-C).
        interrupted: Option<i32>,
    },
}

impl Supervisor {
    fn start(pid: libc::pid_t, cgroup: Option<Cgroup>, alive: RawFd) -> Self {
        CHILD.store(pid, Ordering::SeqCst);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: sigaction is plain data; all-zero is a valid start. The
            // handler only loads atomics and calls kill, which are
            // async-signal-safe.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = stop_the_vm as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        Self { pid, cgroup, alive }
    }

    /// The VM process's pid (in the supervisor's namespace).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Moves the VM process into its cgroup's v2 part, if it has one (while the
    /// VM process builds its VM), and tells it so through the pipe it watches; a
    /// group it could not be moved into is removed at once.
    fn place(&mut self) {
        let Some(cgroup) = &self.cgroup else {
            return;
        };
        let word = match cgroup.attach_v2(self.pid) {
            Ok(()) => vec![PLACED],
            Err(e) => {
                cgroup.remove();
                self.cgroup = None;
                let mut word = vec![NOT_PLACED];
                word.extend_from_slice(
                    format!("cannot move the VM process into its cgroup: {e}").as_bytes(),
                );
                word
            }
        };
        // The VM process may have ended already (it failed to build): nobody reads.
        let _ = sys::write_word(self.alive, &word);
    }

    /// Waits for the VM process to end, removes its cgroup, and says how it ended.
    pub fn wait(self) -> Result<Ended, JailError> {
        let mut status = 0;
        loop {
            // SAFETY: waits for this supervisor's own child; `status` is valid.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(JailError::Host {
                    op: "waiting for the VM process",
                    source: error,
                });
            }
        }
        CHILD.store(0, Ordering::SeqCst);
        sys::close(self.alive);
        let ended = if libc::WIFEXITED(status) {
            Ended::Exited(u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(u8::MAX))
        } else {
            let signal = libc::WTERMSIG(status);
            let interrupted = INTERRUPTED.load(Ordering::SeqCst);
            let oom = self
                .cgroup
                .as_ref()
                .filter(|c| signal == libc::SIGKILL && c.oom_killed())
                .and_then(Cgroup::memory_max);
            Ended::Killed {
                signal,
                out_of_memory: oom,
                interrupted: (interrupted != 0).then_some(interrupted),
            }
        };
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove();
        }
        Ok(ended)
    }
}
