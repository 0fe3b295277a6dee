//! Randomness for `getrandom`, `/dev/urandom` and `AT_RANDOM`: the CPU's RDRAND
//! (allowed in user mode, no exit), or where the CPU lacks it a generator seeded
//! from the TSC at boot and the wall clock.

use core::sync::atomic::{AtomicU64, Ordering};

static STATE: AtomicU64 = AtomicU64::new(0);

fn has_rdrand() -> bool {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    ecx & (1 << 30) != 0
}

fn rdrand() -> Option<u64> {
    for _ in 0..10 {
        let mut value = 0u64;
        // SAFETY: called only when CPUID says RDRAND exists.
        if unsafe { core::arch::x86_64::_rdrand64_step(&mut value) } == 1 {
            return Some(value);
        }
    }
    None
}

fn splitmix() -> u64 {
    let mut state = STATE.load(Ordering::Relaxed);
    if state == 0 {
        state = libos::time::rdtsc() ^ (libos::time::wall_clock().as_nanos() as u64);
    }
    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    STATE.store(state, Ordering::Relaxed);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    let hardware = has_rdrand();
    for chunk in buf.chunks_mut(8) {
        let value = if hardware {
            rdrand().unwrap_or_else(splitmix)
        } else {
            splitmix()
        };
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
}
