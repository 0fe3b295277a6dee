//! Shell processes: spawning them, and watching and signalling them through pidfds,
//! which cannot be confused by pid reuse and cost one descriptor per VM.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::pool::ShellKind;

/// A freshly spawned shell: its pid, a pidfd, and the daemon's end of its control
/// socket.
pub struct SpawnedShell {
    /// The process id.
    pub pid: u32,
    /// A pidfd for it.
    pub pidfd: OwnedFd,
    /// The control socket.
    pub control: UnixStream,
}

/// Starts `exe shell --platform <platform> --mem <mem_size> [--linux] [--no-jail]`
/// (`--linux`: a shell for Linux programs; `--no-jail`: one without its jail) with the control socket as its stdin, in its
/// own process group (a terminal's Ctrl-C to the daemon does not reach the VMs) and
/// with its stderr appended to `log`.
pub fn spawn_shell(
    exe: &Path,
    platform: lightvm_vmm::Platform,
    kind: ShellKind,
    log: &Path,
    jail: bool,
) -> std::io::Result<SpawnedShell> {
    let (control, child_end) = UnixStream::pair()?;
    let stderr = File::options().create(true).append(true).open(log)?;
    let mut command = Command::new(exe);
    command
        .arg("shell")
        .arg("--platform")
        .arg(platform.name())
        .arg("--mem")
        .arg(kind.mem_size.to_string());
    if kind.linux {
        command.arg("--linux");
    }
    if !jail {
        command.arg("--no-jail");
    }
    let child = command
        .stdin(Stdio::from(OwnedFd::from(child_end)))
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    // The daemon reaps through the pidfd (waitid P_PIDFD); `Child` is not needed.
    drop(child);
    Ok(SpawnedShell {
        pid,
        pidfd: pidfd_open(pid)?,
        control,
    })
}

/// The one thread that starts shell processes.
///
/// The daemon's threads run under a seccomp filter ([`crate::seccomp`]) that allows
/// neither `fork` nor `execve`; a filter also survives `execve`, and a shell needs
/// calls the daemon must never make. So shells are started from this thread,
/// created before the filter is installed and doing nothing but that: it takes
/// requests over a channel (the executable and arguments are the daemon's, never a
/// client's) and hands back each shell as a [`ChildShell`]. A shell whose
/// requester has gone is stopped and reaped here.
#[derive(Debug)]
pub struct Spawner {
    requests: std::sync::mpsc::Sender<Job>,
}

/// One shell to start.
struct SpawnJob {
    exe: PathBuf,
    platform: lightvm_vmm::Platform,
    kind: ShellKind,
    log: PathBuf,
    jail: bool,
    answer: tokio::sync::oneshot::Sender<std::io::Result<(ChildShell, UnixStream)>>,
}

/// What the spawner thread is asked to do.
enum Job {
    /// Start a shell.
    Spawn(SpawnJob),
    /// Run this (the daemon's own code: cgroup work for the shells' jails).
    Run(Box<dyn FnOnce() + Send>),
}

impl Spawner {
    /// Starts the spawner thread; it ends when the spawner is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (requests, jobs) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lightvm-spawner".to_owned())
            .spawn(move || {
                let pid_namespaces = PidNamespaces::open();
                for job in jobs {
                    match job {
                        Job::Spawn(job) => {
                            // Each shell is the first process of a PID namespace
                            // of its own (where the host allows; the shell says
                            // in its jail report when it is not).
                            if let Some(namespaces) = &pid_namespaces {
                                namespaces.next_child(job.jail);
                            }
                            if job.jail {
                                // Such a shell cannot tell which groups are
                                // stale: the groups of shells that ended
                                // without a VM (a shrunk pool) are removed here.
                                lightvm_vmm::jail::sweep_stale(
                                    &crate::shell_main::jail_config(job.kind.mem_size).limits,
                                );
                            }
                            let spawned =
                                spawn_shell(&job.exe, job.platform, job.kind, &job.log, job.jail)
                                    .map(|shell| {
                                        (ChildShell::new(shell.pid, shell.pidfd), shell.control)
                                    });
                            // Not taken: dropped here, which stops and reaps the shell.
                            let _ = job.answer.send(spawned);
                        }
                        Job::Run(run) => run(),
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// Starts a shell of `kind` (see [`spawn_shell`]) on the spawner thread.
    pub async fn spawn(
        &self,
        exe: &Path,
        platform: lightvm_vmm::Platform,
        kind: ShellKind,
        log: &Path,
        jail: bool,
    ) -> std::io::Result<(ChildShell, UnixStream)> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = SpawnJob {
            exe: exe.to_owned(),
            platform,
            kind,
            log: log.to_owned(),
            jail,
            answer,
        };
        self.requests.send(Job::Spawn(job)).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }

    /// Runs `job` on the spawner thread (outside the daemon's seccomp filter)
    /// and returns what it returned.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let run = Box::new(move || {
            let _ = answer.send(job());
        });
        self.requests.send(Job::Run(run)).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())
    }
}

fn gone() -> std::io::Error {
    std::io::Error::other("the shell spawner thread has stopped")
}

/// The spawner thread's way to start each shell in a new PID namespace.
/// `unshare(CLONE_NEWPID)` names the namespace of the thread's next children
/// and may be made only while that is still the thread's own; so before each
/// shell the thread goes back to its own (`setns`) and makes a new one.
struct PidNamespaces {
    own: OwnedFd,
}

impl PidNamespaces {
    /// `None` where this thread cannot make PID namespaces (not root).
    fn open() -> Option<Self> {
        let own = File::open("/proc/thread-self/ns/pid").ok()?;
        let namespaces = Self { own: own.into() };
        let works = namespaces.back_to_own() && namespaces.new_one();
        // Children are born in the daemon's namespace until a shell asks.
        namespaces.back_to_own();
        works.then_some(namespaces)
    }

    fn back_to_own(&self) -> bool {
        // SAFETY: setns with a namespace descriptor this struct owns: it only
        // changes which PID namespace this thread's next children are born in.
        unsafe { libc::setns(self.own.as_raw_fd(), libc::CLONE_NEWPID) == 0 }
    }

    fn new_one(&self) -> bool {
        // SAFETY: as above, for a new namespace.
        unsafe { libc::unshare(libc::CLONE_NEWPID) == 0 }
    }

    /// Makes the next child the first of a PID namespace of its own (`jailed`)
    /// or one of the daemon's. Each namespace takes one child: once its first
    /// process ends, no other can be born in it.
    fn next_child(&self, jailed: bool) {
        // A failure leaves the next shell in the daemon's namespace, which its
        // jail report then says.
        if self.back_to_own() && jailed {
            self.new_one();
        }
    }
}

/// Opens a pidfd for `pid`.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers a pidfd with the tokio reactor, so a task can await the process's
/// exit (a pidfd turns readable then). Must be called inside the runtime.
pub fn watchable(pidfd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid, open descriptor that it alone closes, and its
    // as_raw_fd never changes, so it stays the same open file description for the
    // whole life of the AsyncFd that now owns it.
    unsafe { tokio::io::unix::AsyncFd::register(pidfd) }.map_err(std::io::Error::from)
}

/// Sends `signal` to the process behind `pidfd`.
pub fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How a process ended, when the daemon is its parent and could reap it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// Not our child (adopted after a restart): no status to be had.
    NotOurs,
}

/// Reaps the exited process behind `pidfd`: call once the pidfd is readable, on a
/// blocking thread. It waits rather than polls (`WNOHANG`) for the process to be
/// reapable, so a pidfd that turns readable a moment before its process can be
/// waited for never leaves a zombie behind.
pub fn reap(pidfd: &OwnedFd) -> Reaped {
    match wait_exited(pidfd) {
        None => Reaped::NotOurs,
        // SAFETY: waitid filled `info` for an exited child (WEXITED).
        Some(info) if info.si_code == libc::CLD_EXITED => Reaped::Code(unsafe { info.si_status() }),
        // SAFETY: as above.
        Some(info) => Reaped::Signal(unsafe { info.si_status() }),
    }
}

/// Kills the process behind `pidfd` and waits for it: for a child that failed and
/// must not stay a zombie. Blocks until it has exited.
pub fn kill_and_reap(pidfd: &OwnedFd) {
    let _ = pidfd_signal(pidfd, libc::SIGKILL);
    wait_exited(pidfd);
}

/// Waits for the child behind `pidfd` to exit and reaps it; `None` if it is not
/// this process's child (adopted after a restart) or was reaped already.
fn wait_exited(pidfd: &OwnedFd) -> Option<libc::siginfo_t> {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on a pidfd we own, writing into `info`; it returns once
        // the process has exited, or at once with an error if it is not our child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if rc == 0 {
            return Some(info);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// A shell process this daemon started and has not yet handed to a VM's entry.
/// Dropped, it is killed and reaped off the runtime thread: neither a cancelled
/// create nor a shrunk pool leaves a process, or a zombie, behind.
#[derive(Debug)]
pub struct ChildShell {
    /// Its process id.
    pub pid: u32,
    pidfd: Option<OwnedFd>,
}

impl ChildShell {
    /// The shell behind `pidfd`, a child of this process.
    pub fn new(pid: u32, pidfd: OwnedFd) -> Self {
        Self {
            pid,
            pidfd: Some(pidfd),
        }
    }

    /// Sends `signal` to it.
    pub fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        match &self.pidfd {
            Some(pidfd) => pidfd_signal(pidfd, signal),
            None => Ok(()),
        }
    }

    /// Kills the process and waits until it is reaped: blocking, for a thread
    /// that may block.
    pub fn stop(mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            kill_and_reap(&pidfd);
        }
    }

    /// Hands the process over to be watched through its pidfd, registered with
    /// the runtime (call inside it): no longer stopped when this is dropped. If it
    /// cannot be registered, the process is stopped and reaped, and the error is
    /// returned.
    pub fn into_watchable(mut self) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
        let pidfd = self
            .pidfd
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the shell was handed over already"))?
            .try_clone()?;
        let watched = watchable(pidfd)?;
        // The watcher reaps it now; this descriptor only closes.
        drop(self.pidfd.take());
        Ok(watched)
    }
}

impl Drop for ChildShell {
    fn drop(&mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            retire(pidfd);
        }
    }
}

/// Kills the child behind `pidfd` and reaps it: on a blocking thread when called
/// inside the runtime (its exit can take milliseconds: a VM is torn down), here
/// otherwise.
pub fn retire(pidfd: OwnedFd) {
    let _ = pidfd_signal(&pidfd, libc::SIGKILL);
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || kill_and_reap(&pidfd));
        }
        Err(_) => kill_and_reap(&pidfd),
    }
}

/// Checks that `pid` is one of this daemon's shells — a VM record found after a
/// restart names it — and returns a pidfd for it. It must be the process that
/// started at `start_time` (not a later one with the same pid), run `exe` (the
/// lightvm binary, or the file it was before an upgrade replaced it) and have the
/// command line of a shell of `kind`. The pidfd is opened
/// first and checked to be alive last, so what was read from /proc is that
/// process's. Otherwise says why not: such a process is never signalled.
pub fn check_shell(
    pid: u32,
    start: u64,
    exe: &Path,
    kind: ShellKind,
) -> Result<OwnedFd, NotAShell> {
    if pid <= 1 {
        return Err(NotAShell::Other(format!("pid {pid} is no shell's")));
    }
    let pidfd = pidfd_open(pid).map_err(|_| NotAShell::Gone)?;
    match start_time(pid) {
        Some(found) if found == start => {}
        Some(found) => {
            return Err(NotAShell::Other(format!(
            "pid {pid} is another process now (started at tick {found}, the record says {start})"
        )))
        }
        None => return Err(NotAShell::Gone),
    }
    check_identity(pid, exe, kind).map_err(NotAShell::Other)?;
    pidfd_signal(&pidfd, 0).map_err(|_| NotAShell::Gone)?;
    Ok(pidfd)
}

/// Why a recorded process is not taken for a VM's shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAShell {
    /// It has ended (the VM is lost).
    #[error("the process has ended")]
    Gone,
    /// A process runs there, and it is not the VM's shell.
    #[error("{0}")]
    Other(String),
}

/// Whether the running `pid` is the lightvm binary run as a shell of `kind`.
fn check_identity(pid: u32, exe: &Path, kind: ShellKind) -> Result<(), String> {
    let proc_exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let link = std::fs::read_link(&proc_exe).map_err(|e| format!("pid {pid}'s executable: {e}"))?;
    let same_file = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    };
    let replaced = {
        let mut name = exe.as_os_str().to_owned();
        name.push(" (deleted)");
        name
    };
    if !(same_file(&proc_exe, exe) || link == exe || link.as_os_str() == replaced) {
        return Err(format!(
            "pid {pid} runs {}, not lightvm ({})",
            link.display(),
            exe.display()
        ));
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| format!("pid {pid}'s command line: {e}"))?;
    if !is_shell_cmdline(&cmdline, kind) {
        return Err(format!(
            "pid {pid} runs lightvm, but not as the shell of a VM of {} bytes{}",
            kind.mem_size,
            if kind.linux {
                " for Linux programs"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// Whether a /proc cmdline is what [`spawn_shell`] runs for `kind`.
fn is_shell_cmdline(cmdline: &[u8], kind: ShellKind) -> bool {
    let args: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .split(|&b| b == 0)
        .collect();
    let mem = kind.mem_size.to_string();
    let args = match args.split_last() {
        Some((last, rest)) if *last == b"--no-jail" => rest,
        _ => args.as_slice(),
    };
    let (args, linux) = match args.split_last() {
        Some((last, rest)) if *last == b"--linux" => (rest, true),
        _ => (args, false),
    };
    match args {
        [_, shell, platform_flag, platform, mem_flag, size] => {
            *shell == b"shell"
                && *platform_flag == b"--platform"
                && lightvm_vmm::Platform::ALL
                    .iter()
                    .any(|p| p.name().as_bytes() == *platform)
                && *mem_flag == b"--mem"
                && *size == mem.as_bytes()
                && linux == kind.linux
        }
        _ => false,
    }
}

/// The start time of `pid` (clock ticks since boot), from /proc: with the pid, it
/// names one process for good, even across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: ShellKind = ShellKind {
        mem_size: 2 << 20,
        linux: false,
    };

    #[test]
    fn only_a_shells_command_line_is_a_shells() {
        let unikernel = SMALL;
        let linux = ShellKind {
            linux: true,
            ..unikernel
        };
        assert!(is_shell_cmdline(
            b"/usr/bin/lightvm\x00shell\x00--platform\x00process\x00--mem\x002097152\x00",
            unikernel
        ));
        assert!(is_shell_cmdline(
            b"/usr/bin/lightvm\x00shell\x00--platform\x00kvm\x00--mem\x002097152\x00--linux\x00",
            linux
        ));
        assert!(is_shell_cmdline(
            b"/usr/bin/lightvm\x00shell\x00--platform\x00kvm\x00--mem\x002097152\x00--linux\x00--no-jail\x00",
            linux
        ));
        for other in [
            &b"/usr/bin/lightvm\x00shell\x00--platform\x00process\x00--mem\x004194304\x00"[..],
            b"/usr/bin/lightvm\x00daemon\x00",
            b"/bin/sleep\x00100\x00",
            b"/usr/bin/lightvm\x00shell\x00--platform\x00xen\x00--mem\x002097152\x00",
            b"/usr/bin/lightvm\x00shell\x00--platform\x00kvm\x00--mem\x002097152\x00--linux\x00",
            b"",
        ] {
            assert!(!is_shell_cmdline(other, unikernel), "{other:?}");
        }
        assert!(!is_shell_cmdline(
            b"/usr/bin/lightvm\x00shell\x00--platform\x00kvm\x00--mem\x002097152\x00",
            linux
        ));
    }

    #[test]
    fn a_process_that_is_no_shell_is_not_taken_for_one() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        let exe = std::env::current_exe().unwrap();
        let error = check_shell(pid, start, &exe, SMALL).unwrap_err();
        assert!(error.to_string().contains("not lightvm"), "{error}");
        let error = check_shell(pid, start + 1, &exe, SMALL).unwrap_err();
        assert!(error.to_string().contains("another process"), "{error}");
        // This test binary is its own executable, but its command line is no shell's.
        let me = std::process::id();
        let error = check_shell(me, start_time(me).unwrap(), &exe, SMALL).unwrap_err();
        assert!(error.to_string().contains("not as the shell"), "{error}");
        assert!(check_shell(1, 0, &exe, SMALL).is_err());
        assert!(matches!(
            check_shell(u32::MAX, 0, &exe, SMALL),
            Err(NotAShell::Gone)
        ));
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "the process was not touched"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_dropped_child_shell_is_killed_and_reaped() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let shell = ChildShell::new(pid, pidfd_open(pid).unwrap());
        drop(child);
        drop(shell);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "neither running nor a zombie"
        );
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let pid = std::process::id();
        let first = start_time(pid).unwrap();
        assert_eq!(start_time(pid), Some(first));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    #[expect(
        clippy::zombie_processes,
        reason = "the child is reaped through its pidfd, which is what is under test"
    )]
    fn a_child_is_signalled_and_reaped_through_its_pidfd() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = pidfd_open(child.id()).unwrap();
        pidfd_signal(&pidfd, libc::SIGKILL).unwrap();
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 10_000) }, 1);
        assert_eq!(reap(&pidfd), Reaped::Signal(libc::SIGKILL));
    }
}
