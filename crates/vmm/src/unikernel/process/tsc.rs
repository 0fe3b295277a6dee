//! The TSC's frequency, which the boot info must carry (the guest keeps time with
//! `rdtsc` and no exit) and which a process cannot ask the host for: CPUID leaf
//! 0x15 is empty on our virtual machines and Linux exports no `tsc_khz`. So it is
//! measured against `CLOCK_MONOTONIC_RAW`, over the time the monitor spends
//! preparing the guest anyway: [`Calibration::start`] when work on a VM begins,
//! [`Calibration::finish`] just before the boot info is written, waiting out only
//! what is missing of [`MIN_WINDOW`].

use std::time::Duration;

/// The shortest window measured: with the vDSO clock's ~20–50 ns resolution at
/// each end, the frequency is then known to about 0.05 %.
pub const MIN_WINDOW: Duration = Duration::from_micros(150);

/// The first of two samples of (TSC, raw monotonic clock).
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    tsc: u64,
    ns: u64,
}

impl Calibration {
    /// Takes the first sample.
    pub fn start() -> Self {
        let (tsc, ns) = sample();
        Self { tsc, ns }
    }

    /// Takes the second sample, at least [`MIN_WINDOW`] after the first, and
    /// returns ticks per second (0 if the clocks make no sense).
    pub fn finish(&self) -> u64 {
        let min = u64::try_from(MIN_WINDOW.as_nanos()).unwrap_or(u64::MAX);
        loop {
            let (tsc, ns) = sample();
            let elapsed = ns.saturating_sub(self.ns);
            if elapsed >= min {
                let ticks = u128::from(tsc.saturating_sub(self.tsc));
                return u64::try_from(ticks * 1_000_000_000 / u128::from(elapsed)).unwrap_or(0);
            }
            std::hint::spin_loop();
        }
    }
}

fn sample() -> (u64, u64) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: rdtsc only reads the time-stamp counter (user mode may: no CR4.TSD).
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut now) };
    let ns = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0);
    (tsc, ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_frequency_counts_time_like_the_host_clock() {
        let hz = Calibration::start().finish();
        assert!(hz > 100_000_000, "{hz} Hz");
        // Over 20 ms, the TSC at that rate and the host clock agree to 1 %.
        let start = Calibration::start();
        std::thread::sleep(Duration::from_millis(20));
        let (tsc, ns) = sample();
        let tsc_ns = u128::from(tsc - start.tsc) * 1_000_000_000 / u128::from(hz);
        let host_ns = u128::from(ns - start.ns);
        let error = tsc_ns.abs_diff(host_ns) * 100 / host_ns;
        assert!(error < 1, "TSC says {tsc_ns} ns, host {host_ns} ns");
    }
}
