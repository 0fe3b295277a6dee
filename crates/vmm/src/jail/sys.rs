//! The jail's system calls, each in a small function with what it assumes.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many threads the calling process has (`/proc/self/task`).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags and changes only this process's namespaces.
    check(unsafe { libc::unshare(flags) })
}

/// `fork()`: `Some(pid)` in the parent, `None` in the child.
///
/// # Safety
///
/// The process must have one thread: the child then holds a consistent copy of
/// every lock and allocator state, and may go on running any code.
pub unsafe fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller guarantees a single thread.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// A pipe whose ends are closed on exec.
pub fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which is valid.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Closes every descriptor above stderr but those in `keep`: the VM process
/// holds only what its VM needs, never what its parent happened to have open
/// (a shell's, a daemon's sockets).
pub fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 3;
    for fd in keep.into_iter().map(|fd| fd as u32).chain([u32::MAX]) {
        if fd > from {
            // SAFETY: close_range closes descriptors, none of which this process
            // uses afterwards (the caller keeps what it needs); it reads no memory.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

/// Closes a descriptor this module made.
pub fn close(fd: RawFd) {
    // SAFETY: `fd` is a descriptor of this module's (a pipe end), closed once.
    unsafe { libc::close(fd) };
}

/// Asks for SIGKILL when the parent dies, and says whether it is still alive:
/// `alive` is the read end of a pipe whose write end only the parent holds, so it
/// hangs up once the parent is gone (which may have happened before the request,
/// or at a change of credentials, which clears the request).
pub fn die_with_parent(alive: RawFd) -> io::Result<bool> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
    let mut poll = libc::pollfd {
        fd: alive,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut poll, 1, 0) };
    Ok(poll.revents & libc::POLLHUP == 0)
}

/// Writes one message (at most `PIPE_BUF` bytes: it arrives whole) to a pipe.
pub fn write_word(fd: RawFd, word: &[u8]) -> io::Result<()> {
    let word = &word[..word.len().min(libc::PIPE_BUF)];
    // SAFETY: writes from a live slice of its own length.
    let n = unsafe { libc::write(fd, word.as_ptr().cast(), word.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one message written by [`write_word`], waiting for it; empty when the
/// writer closed the pipe first.
pub fn read_word(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut word = vec![0u8; libc::PIPE_BUF];
    loop {
        // SAFETY: reads into a live buffer of its own length.
        let n = unsafe { libc::read(fd, word.as_mut_ptr().cast(), word.len()) };
        if n >= 0 {
            word.truncate(n as usize);
            return Ok(word);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Replaces the root with an empty, read-only tmpfs: the mount namespace must be
/// the process's own. Every mount of the host is gone from the namespace after
/// this (pivot_root, then a lazy unmount of the old root), so no path leads out.
pub fn empty_root() -> io::Result<()> {
    let mount = |source: Option<&CStr>,
                 target: &CStr,
                 fstype: Option<&CStr>,
                 flags: libc::c_ulong,
                 data: Option<&CStr>| {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
        check(unsafe {
            libc::mount(
                ptr(source),
                target.as_ptr(),
                ptr(fstype),
                flags,
                ptr(data).cast(),
            )
        })
    };
    // Nothing below may reach the host's mount table.
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    // A directory to mount the new root on: any will do, the namespace is ours.
    let base = [c"/tmp", c"/mnt", c"/run", c"/var/tmp", c"/dev"]
        .into_iter()
        .find(|dir| std::path::Path::new(dir.to_str().unwrap_or("")).is_dir())
        .ok_or_else(|| io::Error::other("no directory to mount the jail's root on"))?;
    mount(
        Some(c"lightvm"),
        base,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"size=4k,mode=0555"),
    )?;
    // SAFETY: chdir and pivot_root read NUL-terminated paths. pivot_root(".", ".")
    // stacks the old root on the new one; the unmount below takes it away.
    unsafe {
        check(libc::chdir(base.as_ptr()))?;
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    mount(
        None,
        c"/",
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
}

/// The highest descriptor open now, from `/proc/self/fd`.
pub fn highest_fd() -> Option<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        .max()
}

/// Sets a resource limit, soft and hard.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    check(unsafe { libc::setrlimit(resource, &limit) })
}

/// Drops to `uid`/`gid` with no supplementary groups, for good: real, effective
/// and saved ids alike, so no capability is left and none can come back. Then
/// makes the process undumpable, so that other processes of the same uid (other
/// VMs) cannot ptrace it or read its memory.
pub fn drop_to(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: setgroups with a zero count reads nothing; the set*id calls take
    // plain integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three ids into valid locals.
    check(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
    if [r, e, s] != [uid; 3] {
        return Err(io::Error::other(format!(
            "still uid {r}/{e}/{s} after dropping to {uid}"
        )));
    }
    // SAFETY: PR_SET_DUMPABLE takes an integer.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
}

/// `no_new_privs`: nothing this process runs can gain privileges (and seccomp
/// filters may be installed without `CAP_SYS_ADMIN`).
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a forked child and returns its exit status: the child only
    /// makes system calls (the test harness has other threads, whose locks a
    /// forked child must not touch) and ends with `_exit(body())`.
    fn in_child(body: fn() -> i32) -> i32 {
        // SAFETY: the child runs `body` (raw system calls only) and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = body();
            // SAFETY: ends the child without returning into the harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "{status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn open_fd(fd: RawFd) -> bool {
        // SAFETY: F_GETFD reads nothing.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    #[test]
    fn only_the_descriptors_kept_survive() {
        let code = in_child(|| {
            // SAFETY: dup of stderr; plain integers.
            let (a, b, c) = unsafe { (libc::dup(2), libc::dup(2), libc::dup(2)) };
            if close_all_but(&[b]).is_err() {
                return 10;
            }
            match (open_fd(0) && open_fd(2), open_fd(a), open_fd(b), open_fd(c)) {
                (true, false, true, false) => 0,
                _ => 11,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn after_the_empty_root_no_host_path_exists() {
        if !is_root() {
            eprintln!("skipped: a mount namespace needs root");
            return;
        }
        let code = in_child(|| {
            if unshare(libc::CLONE_NEWNS).is_err() || empty_root().is_err() {
                return 10;
            }
            // SAFETY: open and mkdir of constant paths.
            let (etc, made) = unsafe {
                (
                    libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY),
                    libc::mkdir(c"/x".as_ptr(), 0o700),
                )
            };
            // Nothing there, and nothing can be put there (read-only).
            match (etc, made, io::Error::last_os_error().raw_os_error()) {
                (-1, -1, Some(libc::EROFS)) => 0,
                _ => 11,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_dropped_root_cannot_come_back() {
        if !is_root() {
            eprintln!("skipped: dropping privileges needs root");
            return;
        }
        let code = in_child(|| {
            if drop_to(65534, 65534).is_err() {
                return 10;
            }
            // SAFETY: plain id calls.
            let (uid, gid, back) = unsafe { (libc::getuid(), libc::getgid(), libc::setuid(0)) };
            match (uid, gid, back) {
                (65534, 65534, -1) => 0,
                _ => 11,
            }
        });
        assert_eq!(code, 0);
    }
}
