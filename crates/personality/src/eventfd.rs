//! eventfd: a 64-bit counter that `write` adds to and `read` takes (all of it,
//! or one with `EFD_SEMAPHORE`), as in Linux: a read of zero waits (EAGAIN when
//! non-blocking), a write that would pass `u64::MAX - 1` waits for a read.

use crate::errno::{Errno, EINVAL};
use crate::objects::{Global, Ready, Shared, POLLERR, READABLE, WRITABLE};

/// The largest value the counter holds.
const MAX: u64 = u64::MAX - 1;

/// One eventfd.
#[derive(Debug)]
pub struct EventFd {
    count: u64,
    semaphore: bool,
    gen_in: u64,
    gen_out: u64,
}

static EVENTFDS: Global<EventFd> = Global::new();

/// A new eventfd starting at `initial`; its index.
pub fn create(initial: u32, semaphore: bool) -> usize {
    EVENTFDS
        .table()
        .insert(EventFd {
            count: u64::from(initial),
            semaphore,
            gen_in: 0,
            gen_out: 0,
        })
        .0
}

fn get(index: usize) -> Result<Shared<EventFd>, Errno> {
    EVENTFDS.get(index)
}

/// `read`: the counter (or 1), into an 8-byte buffer.
pub fn read(index: usize, buf: &mut [u8], nonblocking: bool) -> Result<usize, Errno> {
    let Some(out) = buf.get_mut(..8) else {
        return Err(EINVAL);
    };
    let event = get(index)?;
    let value = crate::objects::block(nonblocking, None, || {
        let mut event = event.borrow_mut();
        if event.count == 0 {
            return None;
        }
        let value = if event.semaphore { 1 } else { event.count };
        event.count -= value;
        event.gen_out += 1;
        Some(Ok(value))
    })?;
    out.copy_from_slice(&value.to_ne_bytes());
    Ok(8)
}

/// `write`: adds an 8-byte value.
pub fn write(index: usize, data: &[u8], nonblocking: bool) -> Result<usize, Errno> {
    let bytes: [u8; 8] = data
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(EINVAL)?;
    let value = u64::from_ne_bytes(bytes);
    if value == u64::MAX {
        return Err(EINVAL);
    }
    let event = get(index)?;
    crate::objects::block(nonblocking, None, || {
        let mut event = event.borrow_mut();
        if MAX - event.count < value {
            return None;
        }
        event.count += value;
        if value > 0 {
            event.gen_in += 1;
        }
        Some(Ok(8))
    })
}

/// What eventfd `index` is ready for.
pub fn readiness(index: usize) -> Ready {
    let Ok(event) = get(index) else {
        return Ready::fixed(POLLERR);
    };
    let event = event.borrow();
    let mut mask = 0;
    if event.count > 0 {
        mask |= READABLE;
    }
    if event.count < MAX {
        mask |= WRITABLE;
    }
    Ready {
        mask,
        gen_in: event.gen_in,
        gen_out: event.gen_out,
    }
}

/// Its last open file closed.
pub fn release(index: usize) {
    EVENTFDS.table().remove(index);
}
