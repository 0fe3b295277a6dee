//! Waiting for device file descriptors: the blocking half of the `poll` hypercall.
//!
//! An epoll set holds the descriptors of the devices that can wake a guest (the tap
//! interface today). The wait uses `epoll_pwait2`, whose timeout has nanosecond
//! resolution (TCP timers of a few hundred microseconds are not rounded up to a
//! millisecond), and falls back to `epoll_wait` on kernels older than 5.11. A signal
//! (the deadline timer's) ends the wait early, as it ends `KVM_RUN`. The loop never
//! spins: an idle guest costs the host nothing.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// An epoll set of device descriptors, each tagged with its device's ready bit.
pub struct EventLoop {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    no_pwait2: bool,
}

impl EventLoop {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
            events: vec![EpollEvent::default(); 8],
            no_pwait2: false,
        })
    }

    /// The epoll descriptor.
    pub fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.epoll.as_raw_fd()
    }

    /// Adds `fd`, to be reported readable as `tag` (a `READY_*` bit).
    pub fn add_readable(&mut self, fd: RawFd, tag: u64) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, tag),
        )
    }

    /// Waits until a descriptor is readable, `timeout` passes (`None`: forever) or a
    /// signal arrives; returns the tags of the readable descriptors, OR-ed (0 after a
    /// timeout or a signal).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<u64> {
        let n = loop {
            let result = if self.no_pwait2 {
                self.wait_ms(timeout)
            } else {
                self.wait_ns(timeout)
            };
            match result {
                Ok(n) => break n,
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) && !self.no_pwait2 => {
                    self.no_pwait2 = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(0),
                Err(e) => return Err(e),
            }
        };
        Ok(self.events[..n].iter().fold(0, |tags, e| tags | e.data()))
    }

    fn wait_ns(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let spec = timeout.map(|t| libc::timespec {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let spec_ptr = spec
            .as_ref()
            .map_or(std::ptr::null(), |s| s as *const libc::timespec);
        // SAFETY: `events` is a live buffer of `len` epoll_events (EpollEvent is
        // repr(transparent) over libc::epoll_event); the timeout pointer is null or
        // points at `spec`, alive for the call; no signal mask is passed.
        let n = unsafe {
            libc::epoll_pwait2(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr().cast::<libc::epoll_event>(),
                self.events.len() as libc::c_int,
                spec_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn wait_ms(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let ms = timeout.map_or(-1, |t| {
            // Round up: waking early would make the guest poll again at once.
            let ms = t.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        self.epoll.wait(ms, &mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Instant;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn a_readable_descriptor_wakes_the_wait_with_its_tag() {
        let mut events = EventLoop::new().unwrap();
        let fd = EventFd::new(0).unwrap();
        events.add_readable(fd.as_raw_fd(), 4).unwrap();
        assert_eq!(events.wait(Some(Duration::from_millis(1))).unwrap(), 0);
        fd.write(1).unwrap();
        assert_eq!(events.wait(None).unwrap(), 4);
    }

    #[test]
    fn sub_millisecond_timeouts_are_honoured() {
        let mut events = EventLoop::new().unwrap();
        let start = Instant::now();
        for _ in 0..10 {
            events.wait(Some(Duration::from_micros(100))).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(1));
    }
}
