//! The daemon's seccomp filter: the system calls its threads may make.
//!
//! The allow-list is data, [`seccomp/daemon.json`](../../seccomp/daemon.json) in
//! seccompiler's JSON form, each call with the reason it is there; the README
//! lists the same calls (a test keeps the two in step). It holds two filters,
//! both installed:
//!
//! * `daemon`: the allow-list; any other call kills the daemon (its VMs run on,
//!   and a restarted daemon adopts them). `clone` only with `CLONE_THREAD`:
//!   threads, never a new process; `ioctl` only with the requests the daemon
//!   makes; no `execve`, `fork`, `ptrace`, `mount`, `setuid`, `kill`, `bpf` …
//! * `daemon_clone3`: `clone3` answered `ENOSYS`. Its flags are in memory, where a
//!   filter cannot look, so glibc is made to fall back to `clone`, whose flags the
//!   first filter checks.
//!
//! The filter is installed on the runtime's thread before it serves (and before it
//! starts any thread: every thread it starts inherits the filter). The one thread
//! that is not under it is the [`Spawner`](crate::process::Spawner), started
//! before, which only starts shells: a filter survives `execve`, and a shell needs
//! calls the daemon must not make.

use seccompiler::{BpfProgram, TargetArch};

/// The filters' source.
pub const FILTERS: &str = include_str!("../seccomp/daemon.json");

/// Why the filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The JSON did not compile.
    #[error("the daemon's seccomp filter does not compile: {0}")]
    Compile(String),
    /// A filter named in the code is not in the JSON.
    #[error("the daemon's seccomp filters lack {0:?}")]
    Missing(&'static str),
    /// The kernel refused it.
    #[error("installing the daemon's seccomp filter: {0}")]
    Install(String),
    /// Threads other than this one and the spawner exist: they would escape it.
    #[error("the daemon has {0} threads before its seccomp filter is installed (2 expected: this one and the shell spawner); the others would run without it")]
    Threads(usize),
}

/// The compiled filters, in the order they are installed: `daemon_clone3` first,
/// so that installing the allow-list needs no `seccomp` call on it.
pub fn compile() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut filters = seccompiler::compile_from_json(FILTERS.as_bytes(), TargetArch::x86_64)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    ["daemon_clone3", "daemon"]
        .into_iter()
        .map(|name| filters.remove(name).ok_or(SeccompError::Missing(name)))
        .collect()
}

/// Installs `filters` on the calling thread (and so on every thread it starts
/// from now on).
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

/// Installs the daemon's filters on the calling thread, which must be the only
/// thread of the process besides the shell spawner.
pub fn install_for_daemon() -> Result<(), SeccompError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads != 2 {
        return Err(SeccompError::Threads(threads));
    }
    install(&compile()?)
}

/// The names of the calls the allow-list has, for documentation and tests.
pub fn allowed_calls() -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(FILTERS).unwrap_or_default();
    let mut calls: Vec<String> = json["daemon"]["filter"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|rule| rule["syscall"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    calls.sort();
    calls.dedup();
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a forked child under the daemon's filters; how it ended.
    /// The filters are compiled before the fork; the child makes raw system calls
    /// only (it is the child of a multi-threaded test process).
    fn in_filtered_child(body: fn() -> i32) -> libc::c_int {
        let filters = compile().expect("the filters compile");
        // SAFETY: the child only installs the prepared filters, makes raw system
        // calls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match install(&filters) {
                Ok(()) => body(),
                Err(_) => 100,
            };
            // SAFETY: ending the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn calls_on_the_list_are_allowed() {
        let status = in_filtered_child(|| {
            // SAFETY: raw calls on the list, with arguments the list allows: a Unix
            // socket (the kind if_nametoindex opens), a non-blocking switch on it,
            // and its close.
            unsafe {
                let fd = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
                let mut on: libc::c_int = 1;
                if fd < 0
                    || libc::syscall(libc::SYS_geteuid) < 0
                    || libc::syscall(libc::SYS_ioctl, fd, libc::FIONBIO, &raw mut on) != 0
                    || libc::syscall(libc::SYS_close, fd) != 0
                {
                    return 1;
                }
            }
            0
        });
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn calls_off_the_list_kill_the_process() {
        // A new process, a program, a signal to another process, a tracer, a TCP
        // socket, an ioctl request not on the list, a change of filter.
        for body in [
            (|| {
                // SAFETY: fork without CLONE_THREAD: refused before it happens.
                unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
                0
            }) as fn() -> i32,
            || {
                let path = c"/bin/true";
                let argv = [path.as_ptr(), std::ptr::null()];
                // SAFETY: execve of a NUL-terminated path with a NULL-ended argv.
                unsafe {
                    libc::syscall(libc::SYS_execve, path.as_ptr(), argv.as_ptr(), 0);
                }
                0
            },
            || {
                // SAFETY: kill(2) of pid 1 with signal 0 (a probe).
                unsafe { libc::syscall(libc::SYS_kill, 1, 0) };
                0
            },
            || {
                // SAFETY: ptrace(PTRACE_TRACEME).
                unsafe { libc::syscall(libc::SYS_ptrace, 0, 0, 0, 0) };
                0
            },
            || {
                // SAFETY: a TCP socket: socket is on the list for AF_UNIX only.
                unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
                0
            },
            || {
                // SAFETY: an ioctl request off the list (TIOCSTI: type into a
                // terminal) on stdin.
                let byte = 0u8;
                unsafe { libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSTI, &raw const byte) };
                0
            },
            || {
                // SAFETY: a third filter: seccomp is not on the list.
                unsafe { libc::syscall(libc::SYS_seccomp, 0, 0, 0) };
                0
            },
        ] {
            let status = in_filtered_child(body);
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
                "killed by SIGSYS, not {status:#x}"
            );
        }
    }

    #[test]
    fn clone3_is_answered_enosys() {
        let status = in_filtered_child(|| {
            // SAFETY: clone3 with no arguments: refused before it is looked at.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            if rc != -1 || errno != Some(libc::ENOSYS) {
                return 1;
            }
            0
        });
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn the_readme_lists_every_allowed_call() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("The daemon's own seccomp filter")
            .nth(1)
            .expect("the README's daemon seccomp paragraph");
        let calls = allowed_calls();
        assert!(calls.len() > 20, "{calls:?}");
        for call in calls {
            assert!(
                section.contains(&format!("`{call}`")),
                "the README does not list `{call}`"
            );
        }
    }
}
