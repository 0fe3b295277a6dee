//! The benchmark suite's fixed compute kernel as a unikernel: the same serial
//! xorshift64 chain as `crates/bench/baselines/cpu.c` (every step depends on the
//! one before, so no compiler can vectorise or shorten it), timed with the TSC,
//! which costs no VM exit. The checksum proves the guest did the same work as the
//! process baseline.
//!
//! Prints `lightvm-bench cpu iterations=N ns=T checksum=0xHEX`.
#![no_std]
#![no_main]

libos::entry!(main);

/// Steps of the chain; `baselines/cpu.c` uses the same number.
const ITERATIONS: u64 = 20_000_000;

fn kernel(iterations: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut acc: u64 = 0;
    for i in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_add(x.wrapping_mul(i | 1));
    }
    acc ^ x
}

fn main() -> i32 {
    let start = libos::time::monotonic();
    let checksum = kernel(core::hint::black_box(ITERATIONS));
    let elapsed = libos::time::monotonic().saturating_sub(start);
    libos::println!(
        "lightvm-bench cpu iterations={ITERATIONS} ns={} checksum={checksum:#018x}",
        elapsed.as_nanos()
    );
    0
}
