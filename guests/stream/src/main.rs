//! The benchmark suite's memory-bandwidth kernel as a unikernel: STREAM's copy,
//! scale, add and triad (McCalpin) over three arrays of N doubles, each kernel run
//! NTIMES and the best time kept, exactly as `crates/bench/baselines/stream.c`
//! does. The arrays (3 x 32 MiB) come from the heap: run it with `--mem 128M`.
//!
//! Prints `lightvm-bench stream n=N copy=MB/s scale=MB/s add=MB/s triad=MB/s checksum=X`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use core::time::Duration;

libos::entry!(main);

/// Elements per array; `baselines/stream.c` uses the same number.
const N: usize = 4 * 1024 * 1024;
/// Repetitions of each kernel; the best is reported.
const NTIMES: usize = 5;

/// Megabytes per second for `bytes` moved in `time`.
fn mbps(bytes: f64, time: Duration) -> f64 {
    let ns = time.as_nanos() as f64;
    if ns > 0.0 {
        bytes * 1000.0 / ns
    } else {
        0.0
    }
}

fn main() -> i32 {
    let scalar = core::hint::black_box(3.0f64);
    let mut a = vec![1.0f64; N];
    let mut b = vec![2.0f64; N];
    let mut c = vec![0.0f64; N];
    let mut best = [Duration::MAX; 4];
    for _ in 0..NTIMES {
        let t0 = libos::time::monotonic();
        c.copy_from_slice(&a);
        let t1 = libos::time::monotonic();
        for (b, c) in b.iter_mut().zip(&c) {
            *b = scalar * c;
        }
        let t2 = libos::time::monotonic();
        for ((c, a), b) in c.iter_mut().zip(&a).zip(&b) {
            *c = a + b;
        }
        let t3 = libos::time::monotonic();
        for ((a, b), c) in a.iter_mut().zip(&b).zip(&c) {
            *a = b + scalar * c;
        }
        let t4 = libos::time::monotonic();
        for (best, time) in best.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
            *best = (*best).min(time);
        }
    }
    let mut sum = 0.0f64;
    for ((a, b), c) in a.iter().zip(&b).zip(&c) {
        sum += a + b + c;
    }
    let words = (N * core::mem::size_of::<f64>()) as f64;
    libos::println!(
        "lightvm-bench stream n={N} copy={:.0} scale={:.0} add={:.0} triad={:.0} checksum={sum:.0}",
        mbps(2.0 * words, best[0]),
        mbps(2.0 * words, best[1]),
        mbps(3.0 * words, best[2]),
        mbps(3.0 * words, best[3]),
    );
    0
}
