//! Clocks from the TSC: reading the time costs no VM exit.
//!
//! `rdtsc` is allowed at CPL 3 (the VMM leaves `CR4.TSD` clear) and runs natively,
//! whereas every hypercall costs a VM exit (~18 µs here). The VMM measures the TSC
//! rate and passes it in [`BootInfo::tsc_hz`](crate::abi::BootInfo::tsc_hz), along
//! with the host's wall-clock time at start, so the guest keeps both clocks itself:
//!
//! * [`monotonic`]: time since `_start` ran, from the TSC;
//! * [`wall_clock`]: the host's time at VM start plus [`monotonic`].
//!
//! If the VMM could not learn the TSC rate (`tsc_hz` = 0), `libos` asks the CPU
//! (CPUID leaves 0x15 and 0x16, one VM exit each, once at boot) and, if that fails
//! too, assumes [`FALLBACK_TSC_HZ`]: the clocks then still never go backwards, but
//! their rate is only as good as that guess.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

/// The TSC rate assumed when neither the VMM nor CPUID tells it: 1 GHz, so that one
/// tick counts as one nanosecond.
pub const FALLBACK_TSC_HZ: u64 = 1_000_000_000;

/// TSC when `_start` began.
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per second; never 0 once `init` ran (0 only before, see `ticks_to`).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Host wall-clock time at VM start, ns since the UNIX epoch.
static WALL_AT_BOOT_NS: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `rdtsc` only reads the TSC into edx:eax; it is permitted at CPL 3.
    unsafe {
        core::arch::asm!(
            "rdtsc",
            out("eax") lo,
            out("edx") hi,
            options(nomem, nostack, preserves_flags),
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Sets the clocks up; `boot_tsc` is the TSC read first thing in `_start`.
pub(crate) fn init(boot_tsc: u64, tsc_hz: u64, wall_clock_ns: u64) {
    let hz = if tsc_hz != 0 { tsc_hz } else { cpuid_tsc_hz() };
    BOOT_TSC.store(boot_tsc, Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Relaxed);
    WALL_AT_BOOT_NS.store(wall_clock_ns, Ordering::Relaxed);
}

/// The TSC rate from CPUID: leaf 0x15 (TSC / crystal ratio and crystal rate) if it is
/// complete, else leaf 0x16 (base frequency in MHz, which the TSC runs at on the CPUs
/// that report it), else [`FALLBACK_TSC_HZ`].
fn cpuid_tsc_hz() -> u64 {
    use core::arch::x86_64::__cpuid;
    // CPUID is available on every x86_64 CPU; KVM answers it for the guest.
    #[allow(unused_unsafe)]
    // SAFETY: `cpuid` only reads processor identification into registers.
    let max_leaf = unsafe { __cpuid(0) }.eax;
    if max_leaf >= 0x15 {
        #[allow(unused_unsafe)]
        // SAFETY: as above; leaf 0x15 exists (max_leaf).
        let leaf = unsafe { __cpuid(0x15) };
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            if let Some(hz) = u64::from(leaf.ecx).checked_mul(u64::from(leaf.ebx)) {
                return hz / u64::from(leaf.eax);
            }
        }
    }
    if max_leaf >= 0x16 {
        #[allow(unused_unsafe)]
        // SAFETY: as above; leaf 0x16 exists (max_leaf).
        let mhz = unsafe { __cpuid(0x16) }.eax & 0xffff;
        if mhz != 0 {
            return u64::from(mhz) * 1_000_000;
        }
    }
    FALLBACK_TSC_HZ
}

/// TSC ticks per second, as the clocks use it.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// The TSC when the guest started: [`monotonic`] counts from it.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// The host's wall-clock time at VM start, ns since the UNIX epoch: [`wall_clock`]
/// adds [`monotonic`] to it. With [`boot_tsc`] and [`tsc_hz`], all a copy of these
/// clocks outside this crate needs (the Linux personality's vDSO) to compute the
/// same times.
pub fn wall_at_boot_ns() -> u64 {
    WALL_AT_BOOT_NS.load(Ordering::Relaxed)
}

/// Converts a number of TSC ticks to a duration.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = match tsc_hz() {
        // Before `init` (no application code runs then): count ticks as nanoseconds.
        0 => FALLBACK_TSC_HZ,
        hz => hz,
    };
    let secs = ticks / hz;
    // `rem < hz`, so `rem * 1e9 / hz < 1e9`; u128 keeps the product from overflowing.
    let rem = u128::from(ticks % hz);
    let nanos = (rem * 1_000_000_000 / u128::from(hz)) as u32;
    Duration::new(secs, nanos)
}

/// Time since the guest started (`_start`); never goes backwards.
pub fn monotonic() -> Duration {
    let ticks = rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed));
    ticks_to_duration(ticks)
}

/// Wall-clock time as a duration since the UNIX epoch: the host's clock when the VM
/// started plus [`monotonic`]. It does not follow later changes of the host's clock.
pub fn wall_clock() -> Duration {
    Duration::from_nanos(WALL_AT_BOOT_NS.load(Ordering::Relaxed)).saturating_add(monotonic())
}

/// Waits at least `duration`, blocked in the VMM (`poll`) rather than spinning, so an
/// idle guest leaves the host CPU to others.
pub fn sleep(duration: Duration) {
    let deadline = monotonic().saturating_add(duration);
    loop {
        let now = monotonic();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        // Durations beyond u64 nanoseconds (584 years) wait "forever" per call.
        let timeout_ns = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
        // A device may wake us early; the loop then waits for the rest.
        crate::hypercall::poll(timeout_ns);
    }
}
