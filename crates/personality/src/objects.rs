//! Objects behind descriptors that are not files: pipes, sockets, epoll sets and
//! eventfds. Their tables live with their modules ([`crate::pipe`],
//! [`crate::socket`], [`crate::epoll`], [`crate::eventfd`]); this is the one place
//! that sends a descriptor's read, write, readiness and release to the right one.
//!
//! # Readiness
//!
//! Every object answers [`readiness`]: the `poll` bits that hold now (`POLLIN`,
//! `POLLOUT`, `POLLHUP`…, the values `epoll` uses too) and two generation
//! counters that grow whenever something happened that Linux would wake a
//! waiter for — data arrived (`gen_in`), room appeared after a writer found none
//! (`gen_out`), the state changed (both). Level-triggered waiters look at the
//! bits; edge-triggered `epoll` entries report only when a counter moved or a
//! bit appeared since they last looked.
//!
//! # Lifetime
//!
//! An object lives as long as its open file (see [`crate::fd::OpenFile`]'s
//! `Drop`): the last descriptor's close, a `dup2` over it, or the end of a call
//! that still held it releases it through [`release`].

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{RefCell, UnsafeCell};

use crate::errno::{Errno, EAGAIN, EBADF, EINVAL};
use crate::fd::{FileRef, Object, OtherKind};
use crate::vfs::{Device, Kind};

/// `POLLIN` / `EPOLLIN`.
pub const POLLIN: u32 = 0x1;
/// `POLLPRI` / `EPOLLPRI`.
pub const POLLPRI: u32 = 0x2;
/// `POLLOUT` / `EPOLLOUT`.
pub const POLLOUT: u32 = 0x4;
/// `POLLERR` / `EPOLLERR`.
pub const POLLERR: u32 = 0x8;
/// `POLLHUP` / `EPOLLHUP`.
pub const POLLHUP: u32 = 0x10;
/// `POLLNVAL`.
pub const POLLNVAL: u32 = 0x20;
/// `POLLRDNORM` / `EPOLLRDNORM`.
pub const POLLRDNORM: u32 = 0x40;
/// `POLLWRNORM` / `EPOLLWRNORM`.
pub const POLLWRNORM: u32 = 0x100;
/// `POLLRDHUP` / `EPOLLRDHUP`.
pub const POLLRDHUP: u32 = 0x2000;

/// Readable: `POLLIN | POLLRDNORM`.
pub const READABLE: u32 = POLLIN | POLLRDNORM;
/// Writable: `POLLOUT | POLLWRNORM`.
pub const WRITABLE: u32 = POLLOUT | POLLWRNORM;
/// What a file, a device or anything that never waits reports.
pub const ALWAYS_READY: u32 = READABLE | WRITABLE;

/// What an object's readiness is now (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// The `poll` bits that hold.
    pub mask: u32,
    /// Grows when there is something new to read (or the state changed).
    pub gen_in: u64,
    /// Grows when room appeared for a writer that found none (or the state
    /// changed).
    pub gen_out: u64,
}

impl Ready {
    /// Readiness that never changes.
    pub const fn fixed(mask: u32) -> Ready {
        Ready {
            mask,
            gen_in: 0,
            gen_out: 0,
        }
    }
}

/// A shared object of a module's table.
pub type Shared<T> = Rc<RefCell<T>>;

/// The objects of one kind, by index: what [`Object::Other`] names. Indexes of
/// released objects are reused.
pub struct Table<T> {
    slots: Vec<Option<Shared<T>>>,
    free: Vec<usize>,
}

impl<T> Table<T> {
    /// An empty table.
    pub const fn new() -> Table<T> {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Adds `object`; its index.
    pub fn insert(&mut self, object: T) -> (usize, Shared<T>) {
        let shared = Rc::new(RefCell::new(object));
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some(shared.clone());
        }
        (index, shared)
    }

    /// The object at `index`.
    pub fn get(&self, index: usize) -> Option<Shared<T>> {
        self.slots.get(index).and_then(Clone::clone)
    }

    /// Takes the object at `index` out of the table.
    pub fn remove(&mut self, index: usize) -> Option<Shared<T>> {
        let object = self.slots.get_mut(index).and_then(Option::take);
        if object.is_some() {
            self.free.push(index);
        }
        object
    }

    /// Every object, with its index.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Shared<T>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| slot.as_ref().map(|object| (index, object)))
    }
}

/// A table as a global of the personality (one vCPU; see `crate::kernel`).
pub struct Global<T>(UnsafeCell<Table<T>>);

// SAFETY: one vCPU, and the program's threads run one at a time, switched only
// inside system calls; a table is reached through `Global::table` only for a
// short lookup, insert or remove that calls nothing else and holds no reference
// across a switch.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    /// An empty table.
    pub const fn new() -> Global<T> {
        Global(UnsafeCell::new(Table::new()))
    }

    /// The table, for one short operation (see the `Sync` impl).
    #[allow(clippy::mut_from_ref)]
    pub fn table(&self) -> &mut Table<T> {
        // SAFETY: see the `Sync` impl: nothing else holds a reference into the
        // table while this one is used.
        unsafe { &mut *self.0.get() }
    }

    /// The object at `index`, or EBADF.
    pub fn get(&self, index: usize) -> Result<Shared<T>, Errno> {
        self.table().get(index).ok_or(EBADF)
    }
}

/// Waits for `attempt` to give a result (once only when `nonblocking`: EAGAIN
/// if it gives none); EAGAIN too when `deadline` passes.
pub fn block<T>(
    nonblocking: bool,
    deadline: Option<core::time::Duration>,
    mut attempt: impl FnMut() -> Option<Result<T, Errno>>,
) -> Result<T, Errno> {
    if nonblocking {
        crate::net::poll();
        return attempt().unwrap_or(Err(EAGAIN));
    }
    match crate::thread::wait_until(deadline, attempt) {
        Ok(result) => result,
        Err(_) => Err(EAGAIN),
    }
}

/// The deadline, on the monotonic clock, of a wait of at most `timeout`.
pub fn deadline(timeout: Option<core::time::Duration>) -> Option<core::time::Duration> {
    timeout.map(|timeout| libos::time::monotonic().saturating_add(timeout))
}

/// Reads from object `index` of `kind`.
pub fn read(
    kind: OtherKind,
    index: usize,
    buf: &mut [u8],
    nonblocking: bool,
) -> Result<usize, Errno> {
    match kind {
        OtherKind::PipeRead => crate::pipe::read(index, buf, nonblocking),
        OtherKind::PipeWrite => Err(EBADF),
        OtherKind::EventFd => crate::eventfd::read(index, buf, nonblocking),
        OtherKind::Socket => crate::socket::recv(index, buf, 0, nonblocking).map(|got| got.len),
        OtherKind::Epoll => Err(EINVAL),
    }
}

/// Writes to object `index` of `kind`.
pub fn write(
    kind: OtherKind,
    index: usize,
    data: &[u8],
    nonblocking: bool,
) -> Result<usize, Errno> {
    match kind {
        OtherKind::PipeWrite => crate::pipe::write(index, data, nonblocking),
        OtherKind::PipeRead => Err(EBADF),
        OtherKind::EventFd => crate::eventfd::write(index, data, nonblocking),
        OtherKind::Socket => crate::socket::send(index, data, None, 0, nonblocking),
        OtherKind::Epoll => Err(EINVAL),
    }
}

/// Bytes that a read of `file` would return now (`FIONREAD`).
pub fn readable_bytes(file: &FileRef) -> usize {
    let (kind, index) = match &file.borrow().object {
        Object::Other(kind, index) => (*kind, *index),
        _ => return 0,
    };
    match kind {
        OtherKind::PipeRead => crate::pipe::available(index),
        OtherKind::Socket => crate::socket::available(index),
        _ => 0,
    }
}

/// What `file` is ready for now.
pub fn readiness(file: &FileRef) -> Ready {
    let (kind, index) = match &file.borrow().object {
        Object::Other(kind, index) => (*kind, *index),
        _ => return Ready::fixed(ALWAYS_READY),
    };
    match kind {
        OtherKind::PipeRead => crate::pipe::readiness(index, false),
        OtherKind::PipeWrite => crate::pipe::readiness(index, true),
        OtherKind::EventFd => crate::eventfd::readiness(index),
        OtherKind::Socket => crate::socket::readiness(index),
        OtherKind::Epoll => crate::epoll::readiness(index),
    }
}

/// Whether `file` is something `epoll` can watch: Linux refuses regular files
/// and directories (EPERM), whose readiness never changes.
pub fn pollable(file: &FileRef) -> bool {
    match &file.borrow().object {
        // Of the devices, /dev/null and /dev/zero have no poll in Linux.
        Object::Node { ino, .. } => matches!(
            crate::kernel::kernel()
                .vfs
                .node(*ino)
                .map(|node| &node.kind),
            Some(Kind::Device(Device::Console | Device::Random))
        ),
        Object::Device(_) | Object::Other(..) => true,
    }
}

/// The last open file of object `index` of `kind` went: the object goes (a
/// socket's connection closes, a pipe end's peer sees end-of-file or EPIPE).
pub fn release(kind: OtherKind, index: usize) {
    match kind {
        OtherKind::PipeRead => crate::pipe::release(index, false),
        OtherKind::PipeWrite => crate::pipe::release(index, true),
        OtherKind::EventFd => crate::eventfd::release(index),
        OtherKind::Socket => crate::socket::release(index),
        OtherKind::Epoll => crate::epoll::release(index),
    }
}

/// EPIPE for a write that found no reader. Linux would also send `SIGPIPE`,
/// which ends a program that neither ignores it nor passed `MSG_NOSIGNAL`;
/// signals are not delivered here, so the trace says so in that case.
pub fn broken_pipe(nosignal: bool) -> Errno {
    const SIGPIPE: u64 = 13;
    const SIG_IGN: u64 = 1;
    let handler = crate::kernel::kernel()
        .signal_actions
        .get(&SIGPIPE)
        .map_or(0, |action| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&action[..8]);
            u64::from_ne_bytes(bytes)
        });
    if !nosignal && handler != SIG_IGN {
        trace_note(format_args!(
            "EPIPE without SIGPIPE: signals are not delivered (on Linux the signal would have {})",
            if handler == 0 {
                "ended the program"
            } else {
                "run its handler"
            }
        ));
    }
    crate::errno::EPIPE
}

/// Prints a note in the trace (`--trace-syscalls`): what a call accepted that
/// changes nothing here, or what it refused for lack of support.
pub fn trace_note(args: core::fmt::Arguments<'_>) {
    if crate::kernel::kernel().trace {
        libos::println!("[lx] note: {args}");
    }
}
