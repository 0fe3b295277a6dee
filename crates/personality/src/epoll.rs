//! epoll sets: which open files a program watches, for what, and which of them
//! `epoll_wait` reports.
//!
//! As in Linux, an entry is keyed by the descriptor number *and* the open file
//! it named when added; it lives as long as that open file does (closing one of
//! several descriptors of a file keeps it; the file's last close removes it).
//! Readiness is checked on each wait, entry by entry (see
//! [`crate::objects::readiness`]):
//!
//! - level-triggered entries report whenever a bit they watch holds;
//! - edge-triggered ones (`EPOLLET`) only when a watched bit appeared since they
//!   last looked, or the object's generation counter for that direction moved
//!   (new data, room after a full buffer, a state change): what Linux's wake-ups
//!   would have queued;
//! - `EPOLLONESHOT` entries are disabled after one report until `EPOLL_CTL_MOD`.
//!
//! `EPOLLERR` and `EPOLLHUP` are always watched. Scans resume where the last
//! full one stopped, so that with `maxevents` smaller than the ready set every
//! entry gets its turn.

use alloc::collections::BTreeMap;
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ops::Bound;

use crate::errno::{Errno, EEXIST, EINVAL, ELOOP, ENOENT, EPERM};
use crate::fd::{FileRef, Object, OpenFile, OtherKind};
use crate::objects::{
    self, Global, Ready, Shared, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLPRI, POLLRDHUP, READABLE,
};

/// `EPOLLET`.
pub const EPOLLET: u32 = 1 << 31;
/// `EPOLLONESHOT`.
pub const EPOLLONESHOT: u32 = 1 << 30;
/// `EPOLLWAKEUP` (accepted, means nothing without suspend).
pub const EPOLLWAKEUP: u32 = 1 << 29;
/// `EPOLLEXCLUSIVE` (accepted: one process, no thundering herd to avoid).
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;

/// `EPOLL_CTL_ADD`.
pub const CTL_ADD: u64 = 1;
/// `EPOLL_CTL_DEL`.
pub const CTL_DEL: u64 = 2;
/// `EPOLL_CTL_MOD`.
pub const CTL_MOD: u64 = 3;

/// How deep epoll sets may nest (Linux's `EP_MAX_NESTS`).
const MAX_NESTING: usize = 4;

/// The bits whose arrival a new `gen_in` stands for.
const IN_CLASS: u32 = POLLIN | POLLPRI | POLLRDHUP | 0x40 | 0x80 | POLLHUP | POLLERR;
/// The bits whose arrival a new `gen_out` stands for.
const OUT_CLASS: u32 = POLLOUT | 0x100 | 0x200 | POLLERR;

/// An entry's key: the descriptor, and the open file it named.
type Key = (i32, usize);

#[derive(Debug)]
struct Entry {
    file: Weak<RefCell<OpenFile>>,
    /// What the program asked for, with its flags.
    events: u32,
    data: u64,
    /// The readiness the entry last saw (its mask limited to what it watches).
    seen: Ready,
    /// A one-shot entry that has reported.
    disabled: bool,
}

impl Entry {
    /// The bits it watches, `EPOLLERR` and `EPOLLHUP` included.
    fn watched(&self) -> u32 {
        (self.events & !(EPOLLET | EPOLLONESHOT | EPOLLWAKEUP | EPOLLEXCLUSIVE)) | POLLERR | POLLHUP
    }

    /// What it would report for `now` (0: nothing).
    fn report(&self, now: &Ready) -> u32 {
        if self.disabled {
            return 0;
        }
        let mask = now.mask & self.watched();
        if mask == 0 || self.events & EPOLLET == 0 {
            return mask;
        }
        let appeared = mask & !self.seen.mask != 0;
        let new_in = now.gen_in != self.seen.gen_in && mask & IN_CLASS != 0;
        let new_out = now.gen_out != self.seen.gen_out && mask & OUT_CLASS != 0;
        if appeared || new_in || new_out {
            mask
        } else {
            0
        }
    }
}

/// One epoll set.
#[derive(Debug, Default)]
pub struct Epoll {
    entries: BTreeMap<Key, Entry>,
    /// Where the last scan that filled the caller's array stopped.
    cursor: Option<Key>,
}

static EPOLLS: Global<Epoll> = Global::new();

/// A new epoll set; its index.
pub fn create() -> usize {
    EPOLLS.table().insert(Epoll::default()).0
}

/// The set at `index`.
pub fn get(index: usize) -> Result<Shared<Epoll>, Errno> {
    EPOLLS.get(index)
}

/// Its last open file closed.
pub fn release(index: usize) {
    EPOLLS.table().remove(index);
}

fn key(fd: i32, file: &FileRef) -> Key {
    (fd, Rc::as_ptr(file) as usize)
}

/// The epoll set behind `file`, if it is one.
fn epoll_of(file: &FileRef) -> Option<Shared<Epoll>> {
    match &file.borrow().object {
        Object::Other(OtherKind::Epoll, index) => get(*index).ok(),
        _ => None,
    }
}

/// Whether `set` reaches `target` through nested sets (or nests too deep).
fn reaches(set: &Shared<Epoll>, target: &Shared<Epoll>, depth: usize) -> bool {
    if Rc::ptr_eq(set, target) || depth > MAX_NESTING {
        return true;
    }
    let inner: Vec<Shared<Epoll>> = set
        .borrow()
        .entries
        .values()
        .filter_map(|entry| entry.file.upgrade())
        .filter_map(|file| epoll_of(&file))
        .collect();
    inner.iter().any(|inner| reaches(inner, target, depth + 1))
}

/// `epoll_ctl` on set `ep` for descriptor `fd` of `file`; `event` is the
/// program's `(events, data)` (ignored for `EPOLL_CTL_DEL`).
pub fn ctl(
    ep: &Shared<Epoll>,
    op: u64,
    fd: i32,
    file: &FileRef,
    event: (u32, u64),
) -> Result<(), Errno> {
    if !objects::pollable(file) {
        return Err(EPERM);
    }
    let (events, data) = event;
    let key = key(fd, file);
    if op == CTL_ADD {
        if let Some(inner) = epoll_of(file) {
            if Rc::ptr_eq(&inner, ep) {
                return Err(EINVAL);
            }
            if reaches(&inner, ep, 1) {
                return Err(ELOOP);
            }
        }
    }
    let mut set = ep.borrow_mut();
    match op {
        CTL_ADD => {
            if set.entries.contains_key(&key) {
                return Err(EEXIST);
            }
            set.entries.insert(
                key,
                Entry {
                    file: Rc::downgrade(file),
                    events,
                    data,
                    seen: Ready::default(),
                    disabled: false,
                },
            );
        }
        CTL_MOD => {
            if events & EPOLLEXCLUSIVE != 0 {
                return Err(EINVAL);
            }
            let entry = set.entries.get_mut(&key).ok_or(ENOENT)?;
            if entry.events & EPOLLEXCLUSIVE != 0 {
                return Err(EINVAL);
            }
            entry.events = events;
            entry.data = data;
            // Linux checks a modified entry's readiness at once: it reports
            // what holds now, edge-triggered or not.
            entry.seen = Ready::default();
            entry.disabled = false;
        }
        CTL_DEL => {
            set.entries.remove(&key).ok_or(ENOENT)?;
            if set.cursor == Some(key) {
                set.cursor = None;
            }
        }
        _ => return Err(EINVAL),
    }
    Ok(())
}

/// The events set `ep` reports now, at most `max` of them, as `(events, data)`;
/// edge-triggered and one-shot entries take note of what they reported.
pub fn collect(ep: &Shared<Epoll>, max: usize) -> Vec<(u32, u64)> {
    let keys: Vec<Key> = {
        let set = ep.borrow();
        match set.cursor {
            Some(cursor) => set
                .entries
                .range((Bound::Excluded(cursor), Bound::Unbounded))
                .chain(set.entries.range(..=cursor))
                .map(|(key, _)| *key)
                .collect(),
            None => set.entries.keys().copied().collect(),
        }
    };
    let mut out = Vec::new();
    for key in keys {
        let file = ep
            .borrow()
            .entries
            .get(&key)
            .map(|entry| entry.file.upgrade());
        let file = match file {
            None => continue,
            Some(None) => {
                // Its open file is gone: so is the entry.
                ep.borrow_mut().entries.remove(&key);
                continue;
            }
            Some(Some(file)) => file,
        };
        // The set is not borrowed here: the file may be another epoll set.
        let now = objects::readiness(&file);
        drop(file);
        let mut set = ep.borrow_mut();
        let Some(entry) = set.entries.get_mut(&key) else {
            continue;
        };
        let report = entry.report(&now);
        entry.seen = Ready {
            mask: now.mask & entry.watched(),
            ..now
        };
        if report != 0 {
            out.push((report, entry.data));
            if entry.events & EPOLLONESHOT != 0 {
                entry.disabled = true;
            }
            if out.len() >= max {
                set.cursor = Some(key);
                break;
            }
        }
    }
    out
}

/// What set `index` is ready for: readable when a wait would report something.
pub fn readiness(index: usize) -> Ready {
    let Ok(ep) = get(index) else {
        return Ready::fixed(POLLERR);
    };
    let entries: Vec<(FileRef, u32, Ready, bool)> = ep
        .borrow()
        .entries
        .values()
        .filter_map(|entry| {
            entry
                .file
                .upgrade()
                .map(|file| (file, entry.events, entry.seen, entry.disabled))
        })
        .collect();
    let ready = entries.iter().any(|(file, events, seen, disabled)| {
        let probe = Entry {
            file: Weak::new(),
            events: *events,
            data: 0,
            seen: *seen,
            disabled: *disabled,
        };
        probe.report(&objects::readiness(file)) != 0
    });
    Ready::fixed(if ready { READABLE } else { 0 })
}
