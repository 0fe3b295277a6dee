//! The system calls: number → handler, results, and the trace.
//!
//! Each handler takes the six arguments as the kernel receives them and returns a
//! value or an [`Errno`]; the dispatcher turns an error into `-errno`, counts the
//! calls it does not implement (ENOSYS), and with `--trace-syscalls` prints every
//! call and its result, so a user can see why a program fails.

pub mod fs;
pub mod ipc;
pub mod mem;
pub mod net;
pub mod poll;
pub mod proc;
pub mod time;

use alloc::format;
use alloc::string::String;

use crate::entry::{Frame, TRAMPOLINES};
use crate::errno::{Errno, ENOSYS, EOPNOTSUPP};
use crate::kernel::kernel;
use linux_raw_sys::general as nr;

/// A handler's result.
pub type SysResult = Result<u64, Errno>;

/// Called by the entry with the program's registers: answers the call in `rax`.
#[no_mangle]
pub extern "C" fn lx_syscall_dispatch(frame: &mut Frame) {
    let number = frame.number();
    let k = kernel();
    // The trap proved a `syscall` is there: make the site's next calls cheap.
    TRAMPOLINES.rewrite(frame.rip, number, &k.code);
    let args = frame.args();
    // Data earlier sends left for a later exit goes out if it waited too long.
    crate::socket::flush_due();
    let result = call(number, args, frame);
    if kernel().trace {
        trace(number, &args, result);
    }
    frame.rax = match result {
        Ok(value) => value,
        Err(errno) => errno.to_return(),
    };
    crate::thread::on_return();
}

/// The name of call `number`, for traces and reports.
pub fn name(number: u64) -> String {
    usize::try_from(number)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map_or_else(|| format!("syscall_{number}"), |sysno| sysno.name().into())
}

fn trace(number: u64, args: &[u64; 6], result: SysResult) {
    let shown = match result {
        Ok(value) if value > 0xffff => format!("{value:#x}"),
        Ok(value) => format!("{value}"),
        Err(errno) => format!("-1 {errno}"),
    };
    libos::println!(
        "[lx] {}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {shown}",
        name(number),
        args[0],
        args[1],
        args[2],
        args[3],
        args[4],
        args[5],
    );
}

/// Counts a call answered ENOSYS.
pub fn unimplemented(number: u64) -> SysResult {
    *kernel().unimplemented.entry(number).or_insert(0) += 1;
    Err(ENOSYS)
}

fn call(number: u64, a: [u64; 6], frame: &mut Frame) -> SysResult {
    let n = u32::try_from(number).unwrap_or(u32::MAX);
    match n {
        // Files.
        nr::__NR_read => fs::read(a[0], a[1], a[2]),
        nr::__NR_write => fs::write(a[0], a[1], a[2]),
        nr::__NR_readv => fs::readv(a[0], a[1], a[2]),
        nr::__NR_writev => fs::writev(a[0], a[1], a[2]),
        nr::__NR_pread64 => fs::pread(a[0], a[1], a[2], a[3]),
        nr::__NR_pwrite64 => fs::pwrite(a[0], a[1], a[2], a[3]),
        nr::__NR_open => fs::openat(fs::AT_FDCWD, a[0], a[1], a[2]),
        nr::__NR_openat => fs::openat(a[0], a[1], a[2], a[3]),
        nr::__NR_creat => fs::openat(fs::AT_FDCWD, a[0], 0o1101, a[1]),
        nr::__NR_close => fs::close(a[0]),
        nr::__NR_lseek => fs::lseek(a[0], a[1], a[2]),
        nr::__NR_fstat => fs::fstat(a[0], a[1]),
        nr::__NR_stat => fs::fstatat(fs::AT_FDCWD, a[0], a[1], 0),
        nr::__NR_lstat => fs::fstatat(fs::AT_FDCWD, a[0], a[1], fs::AT_SYMLINK_NOFOLLOW),
        nr::__NR_newfstatat => fs::fstatat(a[0], a[1], a[2], a[3]),
        nr::__NR_statx => fs::statx(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_getdents64 => fs::getdents64(a[0], a[1], a[2]),
        nr::__NR_readlink => fs::readlinkat(fs::AT_FDCWD, a[0], a[1], a[2]),
        nr::__NR_readlinkat => fs::readlinkat(a[0], a[1], a[2], a[3]),
        nr::__NR_access => fs::faccessat(fs::AT_FDCWD, a[0], a[1]),
        nr::__NR_faccessat | nr::__NR_faccessat2 => fs::faccessat(a[0], a[1], a[2]),
        nr::__NR_ioctl => fs::ioctl(a[0], a[1], a[2]),
        nr::__NR_fcntl => fs::fcntl(a[0], a[1], a[2]),
        nr::__NR_dup => fs::dup(a[0]),
        nr::__NR_dup2 => fs::dup3(a[0], a[1], 0, true),
        nr::__NR_dup3 => fs::dup3(a[0], a[1], a[2], false),
        nr::__NR_mkdir => fs::mkdirat(fs::AT_FDCWD, a[0], a[1]),
        nr::__NR_mkdirat => fs::mkdirat(a[0], a[1], a[2]),
        nr::__NR_unlink => fs::unlinkat(fs::AT_FDCWD, a[0], 0),
        nr::__NR_rmdir => fs::unlinkat(fs::AT_FDCWD, a[0], fs::AT_REMOVEDIR),
        nr::__NR_unlinkat => fs::unlinkat(a[0], a[1], a[2]),
        nr::__NR_rename => fs::renameat(fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1]),
        nr::__NR_renameat | nr::__NR_renameat2 => fs::renameat(a[0], a[1], a[2], a[3]),
        nr::__NR_link => fs::linkat(fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1]),
        nr::__NR_linkat => fs::linkat(a[0], a[1], a[2], a[3]),
        nr::__NR_symlink => fs::symlinkat(a[0], fs::AT_FDCWD, a[1]),
        nr::__NR_symlinkat => fs::symlinkat(a[0], a[1], a[2]),
        nr::__NR_chmod | nr::__NR_fchmod | nr::__NR_fchmodat => fs::chmod(n, a),
        nr::__NR_chown | nr::__NR_fchown | nr::__NR_lchown | nr::__NR_fchownat => Ok(0),
        nr::__NR_utimensat | nr::__NR_utime | nr::__NR_utimes | nr::__NR_futimesat => Ok(0),
        nr::__NR_ftruncate => fs::ftruncate(a[0], a[1]),
        nr::__NR_truncate => fs::truncate(a[0], a[1]),
        nr::__NR_fsync | nr::__NR_fdatasync | nr::__NR_sync | nr::__NR_syncfs => Ok(0),
        nr::__NR_statfs | nr::__NR_fstatfs => fs::statfs(a[1]),
        nr::__NR_getcwd => fs::getcwd(a[0], a[1]),
        nr::__NR_chdir => fs::chdir(a[0]),
        nr::__NR_fchdir => fs::fchdir(a[0]),
        nr::__NR_umask => fs::umask(a[0]),
        nr::__NR_sendfile => fs::sendfile(a[0], a[1], a[2], a[3]),
        nr::__NR_fadvise64 | nr::__NR_readahead => Ok(0),
        // The file system keeps no extended attributes, as one mounted without them.
        nr::__NR_getxattr | nr::__NR_lgetxattr | nr::__NR_fgetxattr => Err(EOPNOTSUPP),
        nr::__NR_setxattr | nr::__NR_lsetxattr | nr::__NR_fsetxattr => Err(EOPNOTSUPP),
        nr::__NR_listxattr | nr::__NR_llistxattr | nr::__NR_flistxattr => Err(EOPNOTSUPP),
        nr::__NR_removexattr | nr::__NR_lremovexattr | nr::__NR_fremovexattr => Err(EOPNOTSUPP),
        // Pipes and eventfds.
        nr::__NR_pipe => ipc::pipe2(a[0], 0),
        nr::__NR_pipe2 => ipc::pipe2(a[0], a[1]),
        nr::__NR_eventfd => ipc::eventfd2(a[0], 0),
        nr::__NR_eventfd2 => ipc::eventfd2(a[0], a[1]),
        // Sockets.
        nr::__NR_socket => net::socket(a[0], a[1], a[2]),
        nr::__NR_socketpair => net::socketpair(a[0], a[1], a[2], a[3]),
        nr::__NR_bind => net::bind(a[0], a[1], a[2]),
        nr::__NR_listen => net::listen(a[0], a[1]),
        nr::__NR_accept => net::accept4(a[0], a[1], a[2], 0),
        nr::__NR_accept4 => net::accept4(a[0], a[1], a[2], a[3]),
        nr::__NR_connect => net::connect(a[0], a[1], a[2]),
        nr::__NR_getsockname => net::getsockname(a[0], a[1], a[2]),
        nr::__NR_getpeername => net::getpeername(a[0], a[1], a[2]),
        nr::__NR_sendto => net::sendto(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_recvfrom => net::recvfrom(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_sendmsg => net::sendmsg(a[0], a[1], a[2]),
        nr::__NR_recvmsg => net::recvmsg(a[0], a[1], a[2]),
        nr::__NR_sendmmsg => net::sendmmsg(a[0], a[1], a[2], a[3]),
        nr::__NR_recvmmsg => net::recvmmsg(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_shutdown => net::shutdown(a[0], a[1]),
        nr::__NR_setsockopt => net::setsockopt(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_getsockopt => net::getsockopt(a[0], a[1], a[2], a[3], a[4]),
        // Waiting for descriptors.
        nr::__NR_poll => poll::poll(a[0], a[1], a[2]),
        nr::__NR_ppoll => poll::ppoll(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_select => poll::select(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_pselect6 => poll::pselect6(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_epoll_create => poll::epoll_create(a[0]),
        nr::__NR_epoll_create1 => poll::epoll_create1(a[0]),
        nr::__NR_epoll_ctl => poll::epoll_ctl(a[0], a[1], a[2], a[3]),
        nr::__NR_epoll_wait => poll::epoll_wait(a[0], a[1], a[2], a[3]),
        nr::__NR_epoll_pwait => poll::epoll_pwait(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_epoll_pwait2 => poll::epoll_pwait2(a[0], a[1], a[2], a[3], a[4], a[5]),
        // Memory.
        nr::__NR_brk => mem::brk(a[0]),
        nr::__NR_mmap => mem::mmap(a[0], a[1], a[2], a[3], a[4], a[5]),
        nr::__NR_munmap => mem::munmap(a[0], a[1]),
        nr::__NR_mprotect => mem::mprotect(a[0], a[1], a[2]),
        nr::__NR_mremap => mem::mremap(a[0], a[1], a[2], a[3], a[4]),
        nr::__NR_madvise => mem::madvise(a[0], a[1], a[2]),
        nr::__NR_msync | nr::__NR_mlock | nr::__NR_munlock => Ok(0),
        nr::__NR_mlockall | nr::__NR_munlockall | nr::__NR_mincore => Ok(0),
        // The process.
        nr::__NR_exit => proc::exit_thread(a[0]),
        nr::__NR_exit_group => proc::exit(a[0]),
        nr::__NR_getpid => Ok(proc::PID),
        nr::__NR_gettid => Ok(u64::from(crate::thread::current_tid())),
        nr::__NR_getppid => Ok(0),
        nr::__NR_getuid | nr::__NR_geteuid | nr::__NR_getgid | nr::__NR_getegid => Ok(0),
        nr::__NR_setuid | nr::__NR_setgid | nr::__NR_setreuid | nr::__NR_setregid => Ok(0),
        nr::__NR_setresuid | nr::__NR_setresgid | nr::__NR_setgroups => Ok(0),
        nr::__NR_getresuid | nr::__NR_getresgid => proc::getresid(a[0], a[1], a[2]),
        nr::__NR_getgroups => Ok(0),
        nr::__NR_getpgrp | nr::__NR_getpgid | nr::__NR_getsid => Ok(proc::PID),
        nr::__NR_setsid | nr::__NR_setpgid => Ok(proc::PID),
        nr::__NR_uname => proc::uname(a[0]),
        nr::__NR_sysinfo => proc::sysinfo(a[0]),
        nr::__NR_prlimit64 => proc::prlimit(a[1], a[2], a[3]),
        nr::__NR_getrlimit => proc::prlimit(a[0], 0, a[1]),
        nr::__NR_setrlimit => Ok(0),
        nr::__NR_getrusage => proc::getrusage(a[1]),
        nr::__NR_times => proc::times(a[0]),
        nr::__NR_set_tid_address => Ok(u64::from(crate::thread::set_clear_child_tid(a[0]))),
        nr::__NR_clone => proc::clone(a[0], a[1], a[2], a[3], a[4], frame),
        nr::__NR_clone3 => proc::clone3(a[0], a[1], frame),
        nr::__NR_futex => proc::futex(a),
        nr::__NR_set_robust_list => Ok(0),
        nr::__NR_arch_prctl => proc::arch_prctl(a[0], a[1]),
        nr::__NR_prctl => proc::prctl(a[0], a[1]),
        nr::__NR_getrandom => proc::getrandom(a[0], a[1]),
        nr::__NR_sched_getaffinity => proc::sched_getaffinity(a[1], a[2]),
        nr::__NR_sched_setaffinity => Ok(0),
        nr::__NR_sched_yield => {
            crate::thread::yield_now();
            Ok(0)
        }
        nr::__NR_getpriority => Ok(20),
        nr::__NR_setpriority => Ok(0),
        nr::__NR_sched_getparam | nr::__NR_sched_getscheduler => Ok(0),
        nr::__NR_rt_sigaction => proc::rt_sigaction(a[0], a[1], a[2], a[3]),
        nr::__NR_rt_sigprocmask => proc::rt_sigprocmask(a[2], a[3]),
        nr::__NR_sigaltstack => Ok(0),
        nr::__NR_pause | nr::__NR_rt_sigsuspend => proc::pause(),
        nr::__NR_kill | nr::__NR_tkill | nr::__NR_tgkill => proc::kill(n, a),
        nr::__NR_fork | nr::__NR_vfork | nr::__NR_execve | nr::__NR_execveat => {
            proc::unsupported_process_call(number)
        }
        nr::__NR_wait4 | nr::__NR_waitid => Err(crate::errno::ECHILD),
        nr::__NR_capget => proc::capget(a[1]),
        nr::__NR_personality => Ok(0),
        // Time.
        nr::__NR_clock_gettime => time::clock_gettime(a[0], a[1]),
        nr::__NR_clock_getres => time::clock_getres(a[1]),
        nr::__NR_gettimeofday => time::gettimeofday(a[0]),
        nr::__NR_time => time::time(a[0]),
        nr::__NR_nanosleep => time::nanosleep(a[0]),
        nr::__NR_clock_nanosleep => time::clock_nanosleep(a[0], a[1], a[2]),
        nr::__NR_setitimer => time::setitimer(a[0], a[1], a[2]),
        nr::__NR_getitimer => time::getitimer(a[0], a[1]),
        nr::__NR_alarm => time::alarm(a[0]),
        _ => unimplemented(number),
    }
}
