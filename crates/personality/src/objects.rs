//! Objects behind descriptors that are not files: pipes, sockets, epoll sets and
//! eventfds. Their tables live with their modules; this is the one place that
//! sends a descriptor's read, write and close to the right one.

use crate::errno::{Errno, EBADF};
use crate::fd::{FileRef, Object, OtherKind};

/// Reads from object `index` of `kind`.
pub fn read(
    kind: OtherKind,
    index: usize,
    buf: &mut [u8],
    nonblocking: bool,
) -> Result<usize, Errno> {
    let _ = (kind, index, buf, nonblocking);
    Err(EBADF)
}

/// Writes to object `index` of `kind`.
pub fn write(
    kind: OtherKind,
    index: usize,
    data: &[u8],
    nonblocking: bool,
) -> Result<usize, Errno> {
    let _ = (kind, index, data, nonblocking);
    Err(EBADF)
}

/// Bytes that a read of `file` would return now (`FIONREAD`).
pub fn readable_bytes(file: &FileRef) -> usize {
    let _ = file;
    0
}

/// A descriptor of `file` was closed: the object goes when its last one does.
pub fn closed(file: &FileRef) {
    if alloc::rc::Rc::strong_count(file) > 1 {
        return;
    }
    if let Object::Other(kind, index) = &file.borrow().object {
        let _ = (kind, index);
    }
}
