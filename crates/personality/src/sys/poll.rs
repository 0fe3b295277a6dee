//! Waiting for descriptors: `poll`, `ppoll`, `select`, `pselect6` and the epoll
//! calls. Readiness comes from [`crate::objects::readiness`]; waits go through
//! [`crate::thread::wait_until`], which lets other threads run and sleeps in the
//! monitor when nothing can change.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::SysResult;
use crate::epoll;
use crate::errno::{Errno, EBADF, EINVAL};
use crate::fd::{FileRef, Object, OtherKind, FD_MAX};
use crate::kernel::kernel;
use crate::objects::{self, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI};
use crate::uaccess;

const O_CLOEXEC: u64 = 0o2000000;
/// Bytes of a `struct epoll_event` (packed on x86-64).
const EPOLL_EVENT_BYTES: u64 = 12;
/// `POLLIN_SET`, `POLLOUT_SET`, `POLLEX_SET`: what `select` counts as ready.
const SELECT_IN: u32 = POLLIN | 0x40 | 0x80 | POLLHUP | POLLERR;
const SELECT_OUT: u32 = POLLOUT | 0x100 | 0x200 | POLLERR;
const SELECT_EX: u32 = POLLPRI;

/// A deadline from a timeout in milliseconds (negative: none).
fn deadline_ms(timeout: u64) -> Option<Duration> {
    let ms = timeout as i32;
    u64::try_from(ms)
        .ok()
        .and_then(|ms| objects::deadline(Some(Duration::from_millis(ms))))
}

/// A deadline from a `struct timespec` (null: none).
fn deadline_timespec(addr: u64) -> Result<Option<Duration>, Errno> {
    if addr == 0 {
        return Ok(None);
    }
    let timeout = super::time::read_timespec(addr)?;
    Ok(objects::deadline(Some(timeout)))
}

/// Parts of a second in a `timespec`'s second field.
const NANOS: u32 = 1_000_000_000;
/// Parts of a second in a `timeval`'s second field.
const MICROS: u32 = 1_000_000;

/// After a wait that did not fail, writes what remains until `deadline` back
/// over the caller's timeout at `addr`, as the kernel does for `ppoll`,
/// `pselect6` and `select`: seconds, then the rest in `parts_per_second`
/// ([`NANOS`] for a `timespec`, [`MICROS`] for a `timeval`).
fn write_back_remaining(
    addr: u64,
    deadline: Option<Duration>,
    result: SysResult,
    parts_per_second: u32,
) -> SysResult {
    if addr != 0 && result.is_ok() {
        let left = deadline.map_or(Duration::ZERO, |deadline| {
            deadline.saturating_sub(libos::time::monotonic())
        });
        let part = u64::from(left.subsec_nanos()) * u64::from(parts_per_second) / u64::from(NANOS);
        uaccess::write::<[i64; 2]>(addr, [left.as_secs() as i64, part as i64])?;
    }
    result
}

/// A signal mask argument: ignored (signals are not delivered), but its size
/// is checked as Linux checks it.
fn check_sigmask(mask: u64, size: u64) -> Result<(), Errno> {
    if mask != 0 && size != 8 {
        return Err(EINVAL);
    }
    Ok(())
}

/// The readiness bits of descriptor `fd` (`POLLNVAL` if it is not open).
fn fd_mask(fd: i32) -> u32 {
    match kernel().fds.get(fd as u64) {
        Ok(file) => objects::readiness(&file).mask,
        Err(_) => POLLNVAL,
    }
}

fn do_poll(fds: u64, nfds: u64, deadline: Option<Duration>) -> SysResult {
    if nfds > FD_MAX as u64 {
        return Err(EINVAL);
    }
    let wanted: Vec<(i32, u32)> = uaccess::bytes_mut(fds, nfds * 8)?
        .chunks_exact(8)
        .map(|entry| {
            let fd = i32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let events = u32::from(u16::from_ne_bytes([entry[4], entry[5]]));
            (fd, events)
        })
        .collect();
    let check = || {
        let revents: Vec<u32> = wanted
            .iter()
            .map(|&(fd, events)| {
                if fd < 0 {
                    0
                } else {
                    fd_mask(fd) & (events | POLLERR | POLLHUP | POLLNVAL)
                }
            })
            .collect();
        revents.iter().any(|&r| r != 0).then_some(revents)
    };
    let revents =
        crate::thread::wait_until(deadline, check).unwrap_or_else(|_| vec![0; wanted.len()]);
    // Other threads ran meanwhile: the array is looked up again.
    let raw = uaccess::bytes_mut(fds, nfds * 8)?;
    let mut ready = 0;
    for (entry, revents) in raw.chunks_exact_mut(8).zip(&revents) {
        entry[6..8].copy_from_slice(&(*revents as u16).to_ne_bytes());
        ready += u64::from(*revents != 0);
    }
    Ok(ready)
}

/// `poll`.
pub fn poll(fds: u64, nfds: u64, timeout: u64) -> SysResult {
    do_poll(fds, nfds, deadline_ms(timeout))
}

/// `ppoll`.
pub fn ppoll(fds: u64, nfds: u64, timeout: u64, sigmask: u64, sigsetsize: u64) -> SysResult {
    check_sigmask(sigmask, sigsetsize)?;
    let deadline = deadline_timespec(timeout)?;
    write_back_remaining(timeout, deadline, do_poll(fds, nfds, deadline), NANOS)
}

/// The three `fd_set`s of a `select`.
struct FdSets {
    nfds: usize,
    sets: [u64; 3],
}

fn bit(set: &[u8], fd: usize) -> bool {
    set.get(fd / 8)
        .is_some_and(|byte| byte & (1 << (fd % 8)) != 0)
}

fn do_select(sets: FdSets, deadline: Option<Duration>) -> SysResult {
    let bytes = (sets.nfds.div_ceil(64) * 8) as u64;
    let mut wanted: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (which, &addr) in sets.sets.iter().enumerate() {
        if addr != 0 {
            wanted[which] = uaccess::bytes(addr, bytes)?.to_vec();
        }
    }
    // Every descriptor named must be open (EBADF), as Linux checks.
    for fd in 0..sets.nfds {
        if wanted.iter().any(|set| bit(set, fd)) && kernel().fds.get(fd as u64).is_err() {
            return Err(EBADF);
        }
    }
    let check = || {
        let mut out: [Vec<u8>; 3] = [
            vec![0; wanted[0].len()],
            vec![0; wanted[1].len()],
            vec![0; wanted[2].len()],
        ];
        let mut count = 0u64;
        for fd in 0..sets.nfds {
            if !wanted.iter().any(|set| bit(set, fd)) {
                continue;
            }
            let mask = fd_mask(fd as i32);
            for (which, ready) in [SELECT_IN, SELECT_OUT, SELECT_EX].iter().enumerate() {
                if bit(&wanted[which], fd) && mask & ready != 0 {
                    out[which][fd / 8] |= 1 << (fd % 8);
                    count += 1;
                }
            }
        }
        (count > 0).then_some((out, count))
    };
    let (out, count) = crate::thread::wait_until(deadline, check).unwrap_or_else(|_| {
        (
            [
                vec![0; wanted[0].len()],
                vec![0; wanted[1].len()],
                vec![0; wanted[2].len()],
            ],
            0,
        )
    });
    for (which, &addr) in sets.sets.iter().enumerate() {
        if addr != 0 {
            uaccess::copy_out(addr, &out[which])?;
        }
    }
    Ok(count)
}

fn fd_sets(nfds: u64, read: u64, write: u64, except: u64) -> Result<FdSets, Errno> {
    let nfds = usize::try_from(nfds as i32).map_err(|_| EINVAL)?;
    Ok(FdSets {
        nfds: nfds.min(FD_MAX),
        sets: [read, write, except],
    })
}

/// `select`.
pub fn select(nfds: u64, read: u64, write: u64, except: u64, timeout: u64) -> SysResult {
    let sets = fd_sets(nfds, read, write, except)?;
    let deadline = if timeout == 0 {
        None
    } else {
        let [secs, usecs] = uaccess::read::<[i64; 2]>(timeout)?;
        if secs < 0 || !(0..i64::from(MICROS)).contains(&usecs) {
            return Err(EINVAL);
        }
        objects::deadline(Some(Duration::new(secs as u64, usecs as u32 * 1000)))
    };
    write_back_remaining(timeout, deadline, do_select(sets, deadline), MICROS)
}

/// `pselect6`.
pub fn pselect6(
    nfds: u64,
    read: u64,
    write: u64,
    except: u64,
    timeout: u64,
    sig: u64,
) -> SysResult {
    let sets = fd_sets(nfds, read, write, except)?;
    if sig != 0 {
        let [mask, size] = uaccess::read::<[u64; 2]>(sig)?;
        check_sigmask(mask, size)?;
    }
    let deadline = deadline_timespec(timeout)?;
    write_back_remaining(timeout, deadline, do_select(sets, deadline), NANOS)
}

/// `epoll_create1` (and `epoll_create`, whose size must be positive).
pub fn epoll_create1(flags: u64) -> SysResult {
    if flags & !O_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let index = epoll::create();
    let file = crate::fd::FdTable::open_file(Object::Other(OtherKind::Epoll, index), 2);
    Ok(kernel().fds.insert(file, flags & O_CLOEXEC != 0, 0)? as u64)
}

/// `epoll_create`.
pub fn epoll_create(size: u64) -> SysResult {
    if (size as i32) <= 0 {
        return Err(EINVAL);
    }
    epoll_create1(0)
}

/// The epoll set behind `epfd`, with its open file (held for the call).
fn epoll_of(epfd: u64) -> Result<(FileRef, objects::Shared<epoll::Epoll>), Errno> {
    let file = kernel().fds.get(epfd)?;
    let index = match file.borrow().object {
        Object::Other(OtherKind::Epoll, index) => index,
        _ => return Err(EINVAL),
    };
    let set = epoll::get(index)?;
    Ok((file, set))
}

/// `epoll_ctl`.
pub fn epoll_ctl(epfd: u64, op: u64, fd: u64, event: u64) -> SysResult {
    let (_epoll_file, set) = epoll_of(epfd)?;
    let file = kernel().fds.get(fd)?;
    if fd == epfd {
        return Err(EINVAL);
    }
    if !matches!(op, epoll::CTL_ADD | epoll::CTL_MOD | epoll::CTL_DEL) {
        return Err(EINVAL);
    }
    let wanted = if op == epoll::CTL_DEL {
        (0, 0)
    } else {
        let raw = uaccess::read::<[u8; 12]>(event)?;
        let events = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mut data = [0u8; 8];
        data.copy_from_slice(&raw[4..12]);
        (events, u64::from_ne_bytes(data))
    };
    epoll::ctl(&set, op, fd as i32, &file, wanted)?;
    Ok(0)
}

fn do_epoll_wait(epfd: u64, events: u64, max: u64, deadline: Option<Duration>) -> SysResult {
    let max = max as i32;
    if max <= 0 || max as u64 > i32::MAX as u64 / EPOLL_EVENT_BYTES {
        return Err(EINVAL);
    }
    let max = max as usize;
    uaccess::bytes_mut(events, max as u64 * EPOLL_EVENT_BYTES)?;
    let (_epoll_file, set) = epoll_of(epfd)?;
    let ready = crate::thread::wait_until(deadline, || {
        let ready = epoll::collect(&set, max);
        (!ready.is_empty()).then_some(ready)
    })
    .unwrap_or_default();
    for (i, (mask, data)) in ready.iter().enumerate() {
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&mask.to_ne_bytes());
        raw[4..].copy_from_slice(&data.to_ne_bytes());
        uaccess::copy_out(events + i as u64 * EPOLL_EVENT_BYTES, &raw)?;
    }
    Ok(ready.len() as u64)
}

/// `epoll_wait`.
pub fn epoll_wait(epfd: u64, events: u64, max: u64, timeout: u64) -> SysResult {
    do_epoll_wait(epfd, events, max, deadline_ms(timeout))
}

/// `epoll_pwait`.
pub fn epoll_pwait(
    epfd: u64,
    events: u64,
    max: u64,
    timeout: u64,
    mask: u64,
    size: u64,
) -> SysResult {
    check_sigmask(mask, size)?;
    do_epoll_wait(epfd, events, max, deadline_ms(timeout))
}

/// `epoll_pwait2`: the timeout is a `struct timespec` (null: none).
pub fn epoll_pwait2(
    epfd: u64,
    events: u64,
    max: u64,
    timeout: u64,
    mask: u64,
    size: u64,
) -> SysResult {
    check_sigmask(mask, size)?;
    let deadline = deadline_timespec(timeout)?;
    do_epoll_wait(epfd, events, max, deadline)
}
