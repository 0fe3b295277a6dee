//! Interrupting a running vCPU when its time is up.
//!
//! A guest spinning at CPL 3 never exits to the VMM. A POSIX timer aimed at the vCPU
//! thread (SIGEV_THREAD_ID) delivers a signal whose handler does nothing; the signal
//! alone makes KVM_RUN (or the `poll` hypercall's wait) return EINTR, and the run
//! loop then sees that the deadline passed. The timer re-fires every millisecond
//! after the deadline, so a signal that lands just before KVM_RUN is entered (and is
//! therefore missed) is followed by another. No thread, no shared flag.
//!
//! The signal's handler is not installed here: it is the process platform's
//! (`unikernel::process::signals`), which stops a process-platform guest on the
//! kicked thread and does nothing on any other, so that one handler serves every
//! guest in the process. Each run loop installs it before it arms a timer, and
//! [`DeadlineTimer::arm`] refuses to arm one whose signal would kill the process.

use std::time::Duration;

use vmm_sys_util::signal::SIGRTMIN;

use crate::error::HostError;

/// Why a deadline timer could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// The timer could not be created or set.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Its signal has no handler yet, so it would kill the process (a bug of the
    /// run loop, never guest input).
    #[error("internal error: the deadline timer's signal has no handler")]
    NoHandler,
}

/// Re-fire period after the deadline.
const REPEAT: Duration = Duration::from_millis(1);

/// The real-time signal used to kick the vCPU thread.
pub(crate) fn kick_signal() -> libc::c_int {
    SIGRTMIN() + 1
}

/// An armed per-thread timer; disarmed and deleted on drop.
pub struct DeadlineTimer {
    id: libc::timer_t,
}

impl DeadlineTimer {
    /// Arms a timer that interrupts the *calling* thread after `timeout`. The
    /// kick's handler must be installed (see the module's documentation).
    pub fn arm(timeout: Duration) -> Result<Self, TimerError> {
        if !kick_handled() {
            return Err(TimerError::NoHandler);
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // SAFETY: sigevent is plain data; all-zero is a valid starting value.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        event.sigev_notify_thread_id = tid;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `id` are valid for the call; the kernel writes `id`.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) } != 0 {
            return Err(HostError::last_os_error("timer_create").into());
        }
        let timer = Self { id };
        let spec = libc::itimerspec {
            it_interval: timespec(REPEAT),
            it_value: timespec(timeout),
        };
        // SAFETY: `timer.id` is the timer just created; `spec` is valid.
        if unsafe { libc::timer_settime(timer.id, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(HostError::last_os_error("timer_settime").into());
        }
        Ok(timer)
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        // SAFETY: `self.id` was created by timer_create and is deleted exactly once.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// Whether the kick signal has a handler: its default action would kill the
/// process, and an ignored signal would interrupt nothing.
fn kick_handled() -> bool {
    // SAFETY: sigaction is plain data; all-zero is a valid value to overwrite.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action sigaction only writes the current one into
    // `current`, which is valid for the call.
    let rc = unsafe { libc::sigaction(kick_signal(), std::ptr::null(), &mut current) };
    rc == 0 && current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN
}

fn timespec(duration: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(duration.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(duration.subsec_nanos() as i32),
    }
}

/// Sleeps up to `timeout` (forever if `None`), returning early when a signal — the
/// deadline timer — arrives. The `poll` hypercall waits here; devices will add their
/// file descriptors to this wait.
pub fn wait(timeout: Option<Duration>) -> Result<(), HostError> {
    let spec = timeout.map(timespec);
    let spec_ptr = spec
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const libc::timespec);
    // SAFETY: no descriptors are passed (nfds = 0); the timeout pointer is null or
    // points at `spec`, alive for the call.
    let rc = unsafe { libc::ppoll(std::ptr::null_mut(), 0, spec_ptr, std::ptr::null()) };
    if rc < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(HostError {
                op: "waiting in the poll hypercall",
                source: error,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_timer_interrupts_an_unbounded_wait() {
        crate::unikernel::process::signals::install_kick().unwrap();
        let _timer = DeadlineTimer::arm(Duration::from_millis(20)).unwrap();
        let start = Instant::now();
        wait(None).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn a_bounded_wait_returns_by_itself() {
        wait(Some(Duration::from_millis(1))).unwrap();
    }
}
