//! Shell processes: spawning them, and watching and signalling them through pidfds,
//! which cannot be confused by pid reuse and cost one descriptor per VM.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

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

/// Starts `exe shell --platform <platform> --mem <mem_size>` with the control socket
/// as its stdin, in its
/// own process group (a terminal's Ctrl-C to the daemon does not reach the VMs) and
/// with its stderr appended to `log`.
pub fn spawn_shell(
    exe: &Path,
    platform: lightvm_vmm::Platform,
    mem_size: u64,
    log: &Path,
) -> std::io::Result<SpawnedShell> {
    let (control, child_end) = UnixStream::pair()?;
    let stderr = File::options().create(true).append(true).open(log)?;
    let child = Command::new(exe)
        .arg("shell")
        .arg("--platform")
        .arg(platform.name())
        .arg("--mem")
        .arg(mem_size.to_string())
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

/// Reaps the exited process behind `pidfd`. Call once the pidfd is readable.
pub fn reap(pidfd: &OwnedFd) -> Reaped {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on a pidfd we own, writing into `info`.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc != 0 {
        return Reaped::NotOurs;
    }
    // SAFETY: waitid filled `info` for an exited child (WEXITED).
    let status = unsafe { info.si_status() };
    if info.si_code == libc::CLD_EXITED {
        Reaped::Code(status)
    } else {
        Reaped::Signal(status)
    }
}

/// Kills the process behind `pidfd` and waits for it: for a child that failed and
/// must not stay a zombie. Blocks until it has exited.
pub fn kill_and_reap(pidfd: &OwnedFd) {
    let _ = pidfd_signal(pidfd, libc::SIGKILL);
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on a pidfd we own, writing into `info`; it returns once the
    // process has exited (or at once with an error if it is not our child).
    unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        )
    };
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
