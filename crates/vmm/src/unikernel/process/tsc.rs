//! The TSC's frequency, which the boot info must carry (the guest keeps time with
//! `rdtsc` and no exit) and which a process cannot ask the host for: CPUID leaf
//! 0x15 is empty on our virtual machines and Linux exports no `tsc_khz`. So it is
//! measured against `CLOCK_MONOTONIC_RAW`, once per boot of the host over
//! [`PRECISE_WINDOW`], and kept in a small file ([`host_hz`]) that later VMs read
//! (a file read instead of a wait). Where no such file can be kept, each VM
//! measures over the time the monitor spends preparing the guest anyway:
//! [`Calibration::start`] when work on a VM begins, [`Calibration::finish`] just
//! before the boot info is written, waiting out only what is missing of
//! [`MIN_WINDOW`].

use std::path::PathBuf;
use std::time::Duration;

/// The window of the measurement that is kept for the host's boot: the vDSO
/// clock's resolution at each end then costs a few parts per million, close to
/// the kHz KVM reports on the kvm platform.
pub const PRECISE_WINDOW: Duration = Duration::from_millis(10);

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
        self.finish_after(MIN_WINDOW)
    }

    fn finish_after(&self, window: Duration) -> u64 {
        let min = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
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

/// The TSC frequency of this host for this boot: from the file a monitor left
/// since the host booted, or measured now over [`PRECISE_WINDOW`] and left there.
/// `None` where no file can be kept (an unprivileged user without
/// `XDG_RUNTIME_DIR`): the caller then measures over its own set-up time.
pub fn host_hz() -> Option<u64> {
    let path = cache_path()?;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot_id = boot_id.trim();
    if let Some(hz) = std::fs::read_to_string(&path).ok().and_then(|text| {
        let (id, hz) = text.trim().split_once(' ')?;
        (id == boot_id).then(|| hz.parse::<u64>().ok()).flatten()
    }) {
        return Some(hz);
    }
    // Two measurements that must agree to 0.05 % before one is kept for the whole
    // boot: a host too busy to measure gets a fresh measurement next time.
    let hz = Calibration::start().finish_after(PRECISE_WINDOW);
    let again = Calibration::start().finish_after(PRECISE_WINDOW);
    if hz == 0 || hz.abs_diff(again) > hz / 2000 {
        return None;
    }
    // Written whole under another name, then renamed: a reader never sees half.
    let temporary = path.with_extension(format!("{}", std::process::id()));
    let written = std::fs::create_dir_all(path.parent()?)
        .and_then(|()| std::fs::write(&temporary, format!("{boot_id} {hz}\n")))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    Some(hz)
}

/// Where the measurement is kept: `/run/lightvm` for root, the user's runtime
/// directory otherwise (never a directory other users can write).
fn cache_path() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let dir = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/run/lightvm")
    } else {
        PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("lightvm")
    };
    Some(dir.join("tsc-hz"))
}

/// One (TSC, raw monotonic ns) pair. The clock read is bracketed by two TSC reads,
/// and of a few tries the tightest bracket wins, its midpoint standing for the
/// clock's instant: a thread preempted between the two reads (the host is busy)
/// would otherwise pair a TSC value with a clock value from milliseconds later.
fn sample() -> (u64, u64) {
    const TRIES: usize = 5;
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..TRIES {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: rdtsc only reads the time-stamp counter (user mode may: no CR4.TSD).
        let before = unsafe { core::arch::x86_64::_rdtsc() };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut now) };
        // SAFETY: as above.
        let after = unsafe { core::arch::x86_64::_rdtsc() };
        let width = after.wrapping_sub(before);
        if width < best.0 {
            let ns = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(now.tv_nsec).unwrap_or(0);
            best = (width, before + width / 2, ns);
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_frequency_is_read_back_as_measured() {
        let Some(first) = host_hz() else {
            return;
        };
        assert_eq!(host_hz(), Some(first));
        let quick = Calibration::start().finish();
        let difference = quick.abs_diff(first) * 1000 / first;
        assert!(difference < 10, "kept {first} Hz, measured now {quick} Hz");
    }

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
