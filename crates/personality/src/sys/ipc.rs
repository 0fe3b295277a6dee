//! Pipes and eventfds: `pipe`, `pipe2`, `eventfd`, `eventfd2`.

use super::SysResult;
use crate::errno::EINVAL;
use crate::fd::{FdTable, Object, OtherKind};
use crate::kernel::kernel;
use crate::objects::trace_note;
use crate::uaccess;

const O_WRONLY: u32 = 1;
const O_RDWR: u32 = 2;
const O_NONBLOCK: u64 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;
/// `O_DIRECT`: a "packet mode" pipe (accepted as a byte pipe).
const O_DIRECT: u64 = 0o40000;
/// `EFD_SEMAPHORE`.
const EFD_SEMAPHORE: u64 = 1;

/// `pipe2` (and `pipe`, with no flags).
pub fn pipe2(fds: u64, flags: u64) -> SysResult {
    if flags & !(O_NONBLOCK | O_CLOEXEC | O_DIRECT) != 0 {
        return Err(EINVAL);
    }
    if flags & O_DIRECT != 0 {
        trace_note(format_args!(
            "pipe2: O_DIRECT (packet mode) is accepted, but the pipe keeps no message boundaries"
        ));
    }
    // Checked first: a pipe the program cannot learn about would be lost.
    uaccess::bytes_mut(fds, 8)?;
    let index = crate::pipe::create();
    let status = (flags & O_NONBLOCK) as u32;
    let cloexec = flags & O_CLOEXEC != 0;
    let reader = FdTable::open_file(Object::Other(OtherKind::PipeRead, index), status);
    let writer = FdTable::open_file(
        Object::Other(OtherKind::PipeWrite, index),
        status | O_WRONLY,
    );
    let k = kernel();
    let read_fd = k.fds.insert(reader, cloexec, 0)?;
    let write_fd = match k.fds.insert(writer, cloexec, 0) {
        Ok(fd) => fd,
        Err(error) => {
            drop(kernel().fds.remove(read_fd as u64));
            return Err(error);
        }
    };
    uaccess::write::<[i32; 2]>(fds, [read_fd as i32, write_fd as i32])?;
    Ok(0)
}

/// `eventfd2` (and `eventfd`, with no flags).
pub fn eventfd2(initial: u64, flags: u64) -> SysResult {
    if flags & !(EFD_SEMAPHORE | O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let index = crate::eventfd::create(initial as u32, flags & EFD_SEMAPHORE != 0);
    let status = O_RDWR | (flags & O_NONBLOCK) as u32;
    let file = FdTable::open_file(Object::Other(OtherKind::EventFd, index), status);
    Ok(kernel().fds.insert(file, flags & O_CLOEXEC != 0, 0)? as u64)
}
