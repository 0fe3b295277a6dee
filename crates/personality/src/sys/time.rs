//! Time calls: clocks from the TSC (no exit), sleeps through the `poll` hypercall.

use core::time::Duration;

use super::SysResult;
use crate::errno::{EFAULT, EINVAL};
use crate::uaccess;

const CLOCK_REALTIME: u64 = 0;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_TAI: u64 = 11;
const CLOCK_REALTIME_ALARM: u64 = 8;
const TIMER_ABSTIME: u64 = 1;

fn now(clock: u64) -> Duration {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE | CLOCK_TAI | CLOCK_REALTIME_ALARM => {
            libos::time::wall_clock()
        }
        _ => libos::time::monotonic(),
    }
}

fn write_timespec(addr: u64, time: Duration) -> SysResult {
    uaccess::write::<[i64; 2]>(
        addr,
        [time.as_secs() as i64, i64::from(time.subsec_nanos())],
    )?;
    Ok(0)
}

/// A `struct timespec` of the program's.
pub fn read_timespec(addr: u64) -> Result<Duration, crate::errno::Errno> {
    let [secs, nanos] = uaccess::read::<[i64; 2]>(addr)?;
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(EINVAL);
    }
    Ok(Duration::new(secs as u64, nanos as u32))
}

/// `clock_gettime`.
pub fn clock_gettime(clock: u64, addr: u64) -> SysResult {
    if clock > 11 && (clock as i64) >= 0 {
        return Err(EINVAL);
    }
    write_timespec(addr, now(clock))
}

/// `clock_getres`: the TSC's resolution, reported as a nanosecond.
pub fn clock_getres(addr: u64) -> SysResult {
    if addr != 0 {
        write_timespec(addr, Duration::from_nanos(1))?;
    }
    Ok(0)
}

/// `gettimeofday`.
pub fn gettimeofday(addr: u64) -> SysResult {
    if addr != 0 {
        let time = libos::time::wall_clock();
        uaccess::write::<[i64; 2]>(
            addr,
            [time.as_secs() as i64, i64::from(time.subsec_micros())],
        )?;
    }
    Ok(0)
}

/// `time`.
pub fn time(addr: u64) -> SysResult {
    let secs = libos::time::wall_clock().as_secs();
    if addr != 0 {
        uaccess::write(addr, secs).map_err(|_| EFAULT)?;
    }
    Ok(secs)
}

/// `nanosleep`.
pub fn nanosleep(addr: u64) -> SysResult {
    let duration = read_timespec(addr)?;
    crate::thread::sleep(duration);
    Ok(0)
}

/// `clock_nanosleep`.
pub fn clock_nanosleep(clock: u64, flags: u64, addr: u64) -> SysResult {
    let request = read_timespec(addr)?;
    let duration = if flags & TIMER_ABSTIME != 0 {
        request.saturating_sub(now(clock))
    } else {
        request
    };
    crate::thread::sleep(duration);
    Ok(0)
}

/// `setitimer`: disarming a timer (what programs do at start) succeeds; arming
/// one is refused as not implemented, since no signal is ever delivered and a
/// program waiting for its `SIGALRM` would wait for good.
pub fn setitimer(which: u64, new: u64, old: u64) -> SysResult {
    if which > 2 {
        return Err(EINVAL);
    }
    if old != 0 {
        uaccess::write::<[i64; 4]>(old, [0; 4])?;
    }
    let value = if new == 0 {
        [0; 4]
    } else {
        uaccess::read::<[i64; 4]>(new)?
    };
    if value[2] != 0 || value[3] != 0 {
        return super::unimplemented(u64::from(linux_raw_sys::general::__NR_setitimer));
    }
    Ok(0)
}

/// `getitimer`: no timer is ever armed.
pub fn getitimer(which: u64, value: u64) -> SysResult {
    if which > 2 {
        return Err(EINVAL);
    }
    uaccess::write::<[i64; 4]>(value, [0; 4])?;
    Ok(0)
}

/// `alarm`: cancelling (0) succeeds and reports no alarm was pending; setting one
/// is refused as not implemented (see `setitimer`).
pub fn alarm(seconds: u64) -> SysResult {
    if seconds == 0 {
        return Ok(0);
    }
    super::unimplemented(u64::from(linux_raw_sys::general::__NR_alarm))
}
