//! Pipes: a byte queue between a read end and a write end (`pipe`, `pipe2`), and
//! the two directions of a `socketpair`.
//!
//! As in Linux: a read of an empty pipe waits while a writer remains and then
//! returns 0 (end of file); a write with no reader left fails with EPIPE (the
//! program gets no `SIGPIPE`: signals are not delivered, and EPIPE is what a
//! program that ignores `SIGPIPE`, as servers do, expects); a blocking write
//! waits for room until all of it is in; writes of at most `PIPE_BUF` bytes are
//! never split.

use alloc::collections::VecDeque;

use crate::errno::{Errno, EAGAIN};
use crate::objects::{Global, Ready, Shared, POLLERR, POLLHUP, READABLE, WRITABLE};

/// Bytes a pipe holds (Linux's default: 16 pages).
pub const CAPACITY: usize = 65536;
/// Writes up to this size are atomic.
pub const PIPE_BUF: usize = 4096;

/// One pipe: the bytes in it and who still holds its ends.
#[derive(Debug)]
pub struct Pipe {
    data: VecDeque<u8>,
    /// Open read ends.
    readers: u32,
    /// Open write ends.
    writers: u32,
    /// A writer found it full since the last read made room.
    writer_blocked: bool,
    gen_in: u64,
    gen_out: u64,
}

impl Pipe {
    /// A pipe with one read end and one write end.
    pub fn new() -> Pipe {
        Pipe {
            data: VecDeque::new(),
            readers: 1,
            writers: 1,
            writer_blocked: false,
            gen_in: 0,
            gen_out: 0,
        }
    }

    /// Bytes waiting to be read.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no write end is left.
    pub fn writers_gone(&self) -> bool {
        self.writers == 0
    }

    /// Whether no read end is left.
    pub fn readers_gone(&self) -> bool {
        self.readers == 0
    }

    /// Reads what there is, up to `buf`'s length.
    pub fn take(&mut self, buf: &mut [u8]) -> usize {
        let count = buf.len().min(self.data.len());
        for (to, from) in buf.iter_mut().zip(self.data.drain(..count)) {
            *to = from;
        }
        if count > 0 && core::mem::take(&mut self.writer_blocked) {
            self.gen_out += 1;
        }
        count
    }

    /// Copies what there is without taking it.
    pub fn peek(&self, buf: &mut [u8]) -> usize {
        let count = buf.len().min(self.data.len());
        for (to, from) in buf.iter_mut().zip(self.data.iter()) {
            *to = *from;
        }
        count
    }

    /// Writes what fits of `data` (nothing if `atomic` and not all of it fits).
    pub fn put(&mut self, data: &[u8], atomic: bool) -> usize {
        let room = CAPACITY - self.data.len().min(CAPACITY);
        let count = if atomic && data.len() > room {
            0
        } else {
            data.len().min(room)
        };
        if count > 0 {
            self.data.extend(&data[..count]);
            self.gen_in += 1;
        }
        if count < data.len() {
            self.writer_blocked = true;
        }
        count
    }

    /// Whether a writer could put a byte in now.
    pub fn has_room(&self) -> bool {
        self.data.len() < CAPACITY
    }

    /// One read end closed.
    pub fn drop_reader(&mut self) {
        self.readers = self.readers.saturating_sub(1);
        self.gen_out += 1;
    }

    /// One write end closed.
    pub fn drop_writer(&mut self) {
        self.writers = self.writers.saturating_sub(1);
        self.gen_in += 1;
    }

    /// What the read end is ready for.
    pub fn read_readiness(&self) -> Ready {
        let mut mask = 0;
        if !self.data.is_empty() {
            mask |= READABLE;
        }
        if self.writers == 0 {
            mask |= POLLHUP;
        }
        Ready {
            mask,
            gen_in: self.gen_in,
            gen_out: self.gen_out,
        }
    }

    /// What the write end is ready for.
    pub fn write_readiness(&self) -> Ready {
        let mut mask = 0;
        if self.has_room() {
            mask |= WRITABLE;
        }
        if self.readers == 0 {
            mask |= POLLERR;
        }
        Ready {
            mask,
            gen_in: self.gen_in,
            gen_out: self.gen_out,
        }
    }
}

impl Default for Pipe {
    fn default() -> Pipe {
        Pipe::new()
    }
}

/// The pipes that descriptors name (`OtherKind::PipeRead` / `PipeWrite`).
static PIPES: Global<Pipe> = Global::new();

/// A new pipe: the index both its ends name.
pub fn create() -> usize {
    PIPES.table().insert(Pipe::new()).0
}

fn get(index: usize) -> Result<Shared<Pipe>, Errno> {
    PIPES.get(index)
}

/// Reads from `pipe` into `buf`: waits while it is empty and has a writer, unless
/// `nonblocking`; 0 at end of file. `peek` leaves the bytes there.
pub fn read_from(
    pipe: &Shared<Pipe>,
    buf: &mut [u8],
    nonblocking: bool,
    peek: bool,
) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    let attempt = || {
        let mut pipe = pipe.borrow_mut();
        if pipe.len() > 0 {
            Some(Ok(if peek { pipe.peek(buf) } else { pipe.take(buf) }))
        } else if pipe.writers_gone() {
            Some(Ok(0))
        } else {
            None
        }
    };
    crate::objects::block(nonblocking, None, attempt)
}

/// Writes `data` into `pipe`: all of it when blocking (waiting for room), what
/// fits when `nonblocking` (EAGAIN if nothing does); EPIPE once no reader is left.
pub fn write_to(
    pipe: &Shared<Pipe>,
    data: &[u8],
    nonblocking: bool,
    deadline: Option<core::time::Duration>,
    nosignal: bool,
) -> Result<usize, Errno> {
    if data.is_empty() {
        return Ok(0);
    }
    let atomic = data.len() <= PIPE_BUF;
    let mut written = 0;
    loop {
        let step = {
            let mut pipe = pipe.borrow_mut();
            if pipe.readers_gone() {
                return if written > 0 {
                    Ok(written)
                } else {
                    Err(crate::objects::broken_pipe(nosignal))
                };
            }
            pipe.put(&data[written..], atomic)
        };
        written += step;
        if written == data.len() {
            return Ok(written);
        }
        if nonblocking {
            return if written > 0 {
                Ok(written)
            } else {
                Err(EAGAIN)
            };
        }
        let room = crate::thread::wait_until(deadline, || {
            let pipe = pipe.borrow();
            (pipe.readers_gone() || pipe.has_room()).then_some(())
        });
        if room.is_err() {
            return if written > 0 {
                Ok(written)
            } else {
                Err(EAGAIN)
            };
        }
    }
}

/// `read` of a pipe's read end.
pub fn read(index: usize, buf: &mut [u8], nonblocking: bool) -> Result<usize, Errno> {
    read_from(&get(index)?, buf, nonblocking, false)
}

/// `write` of a pipe's write end.
pub fn write(index: usize, data: &[u8], nonblocking: bool) -> Result<usize, Errno> {
    write_to(&get(index)?, data, nonblocking, None, false)
}

/// Bytes a read would return now (`FIONREAD`).
pub fn available(index: usize) -> usize {
    get(index).map_or(0, |pipe| pipe.borrow().len())
}

/// What one end of pipe `index` is ready for.
pub fn readiness(index: usize, write_end: bool) -> Ready {
    match get(index) {
        Ok(pipe) if write_end => pipe.borrow().write_readiness(),
        Ok(pipe) => pipe.borrow().read_readiness(),
        Err(_) => Ready::fixed(POLLERR),
    }
}

/// One end of pipe `index` closed; the pipe goes with its last end.
pub fn release(index: usize, write_end: bool) {
    let Ok(pipe) = get(index) else {
        return;
    };
    let gone = {
        let mut pipe = pipe.borrow_mut();
        if write_end {
            pipe.drop_writer();
        } else {
            pipe.drop_reader();
        }
        pipe.readers_gone() && pipe.writers_gone()
    };
    if gone {
        PIPES.table().remove(index);
    }
}
