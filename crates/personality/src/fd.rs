//! File descriptors: numbers the program holds, each naming an open object.
//!
//! An open file (an "open file description" in POSIX's words) is shared by the
//! descriptors `dup` makes and by threads: it holds the offset and the status
//! flags. The descriptor itself holds only close-on-exec.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::errno::{Errno, EBADF, EMFILE};
use crate::vfs::{Device, Ino};

/// Most descriptors a program may hold (`RLIMIT_NOFILE`).
pub const FD_MAX: usize = 65536;

/// What an open file is.
#[derive(Debug)]
pub enum Object {
    /// A node of the file system (file, directory, device, generated file).
    Node {
        /// The node.
        ino: Ino,
        /// The path it was opened by (for `/proc/self/fd` and traces).
        path: String,
        /// A generated file's contents, made when it was opened.
        generated: Option<Vec<u8>>,
    },
    /// A device that is not in the tree (the standard streams).
    Device(Device),
    /// Something the other modules own (a pipe end, a socket, an epoll set, an
    /// eventfd), by its index in their tables.
    Other(OtherKind, usize),
}

/// The kinds of [`Object::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherKind {
    /// The read end of a pipe.
    PipeRead,
    /// The write end of a pipe.
    PipeWrite,
    /// A socket.
    Socket,
    /// An epoll set.
    Epoll,
    /// An eventfd counter.
    EventFd,
}

/// An open file: the object, the offset, the status flags.
#[derive(Debug)]
pub struct OpenFile {
    /// What is open.
    pub object: Object,
    /// The file offset.
    pub offset: u64,
    /// `O_*` status flags (`O_APPEND`, `O_NONBLOCK`, the access mode).
    pub flags: u32,
}

impl Drop for OpenFile {
    /// The last reference to an open file went (its last descriptor closed, or
    /// a call that still used it returned): a pipe end, socket, epoll set or
    /// eventfd goes with it.
    fn drop(&mut self) {
        if let Object::Other(kind, index) = self.object {
            crate::objects::release(kind, index);
        }
    }
}

/// A shared open file.
pub type FileRef = Rc<RefCell<OpenFile>>;

/// One descriptor: its file and close-on-exec.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The open file.
    pub file: FileRef,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
}

/// The descriptor table of the process (threads share it).
#[derive(Debug, Default)]
pub struct FdTable {
    slots: Vec<Option<Slot>>,
}

impl FdTable {
    /// A new open file of `object` with `flags`.
    pub fn open_file(object: Object, flags: u32) -> FileRef {
        Rc::new(RefCell::new(OpenFile {
            object,
            offset: 0,
            flags,
        }))
    }

    /// Puts `file` at the lowest free descriptor from `min` up.
    pub fn insert(&mut self, file: FileRef, cloexec: bool, min: usize) -> Result<usize, Errno> {
        let free = (min..FD_MAX).find(|&fd| self.slots.get(fd).is_none_or(Option::is_none));
        let fd = free.ok_or(EMFILE)?;
        if self.slots.len() <= fd {
            self.slots.resize(fd + 1, None);
        }
        if let Some(slot) = self.slots.get_mut(fd) {
            *slot = Some(Slot { file, cloexec });
        }
        Ok(fd)
    }

    /// Puts `file` at exactly `fd`, closing what was there (`dup2`).
    pub fn insert_at(
        &mut self,
        fd: usize,
        file: FileRef,
        cloexec: bool,
    ) -> Result<Option<Slot>, Errno> {
        if fd >= FD_MAX {
            return Err(EBADF);
        }
        if self.slots.len() <= fd {
            self.slots.resize(fd + 1, None);
        }
        let slot = self.slots.get_mut(fd).ok_or(EBADF)?;
        Ok(slot.replace(Slot { file, cloexec }))
    }

    /// The file behind `fd`.
    pub fn get(&self, fd: u64) -> Result<FileRef, Errno> {
        self.slot(fd).map(|slot| slot.file.clone())
    }

    /// The slot of `fd`.
    pub fn slot(&self, fd: u64) -> Result<&Slot, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.slots.get(fd))
            .and_then(Option::as_ref)
            .ok_or(EBADF)
    }

    /// The slot of `fd`, to change.
    pub fn slot_mut(&mut self, fd: u64) -> Result<&mut Slot, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.slots.get_mut(fd))
            .and_then(Option::as_mut)
            .ok_or(EBADF)
    }

    /// Closes `fd`: its slot, which the caller may still need (a socket's last
    /// close).
    pub fn remove(&mut self, fd: u64) -> Result<Slot, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.slots.get_mut(fd))
            .and_then(Option::take)
            .ok_or(EBADF)
    }
}
