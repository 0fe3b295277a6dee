//! Exercises what libos provides — the heap, the `mem*` functions, the clocks, the
//! boot info — and prints one line per check. Exits 0 if every check passed, 1 if
//! any failed: an end-to-end test of libos and of the VMM's side of the boot contract.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::hint::black_box;
use core::time::Duration;

use libos::abi;

libos::entry!(main);

/// Counts checks and failures, printing each result.
struct Checks {
    run: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool) {
        self.run += 1;
        if !ok {
            self.failed += 1;
        }
        libos::println!("selftest: {} {name}", if ok { "ok  " } else { "FAIL" });
    }
}

fn main() -> i32 {
    let mut checks = Checks { run: 0, failed: 0 };
    boot_info(&mut checks);
    heap(&mut checks);
    mem(&mut checks);
    clock(&mut checks);
    libos::println!(
        "selftest: {} of {} checks passed",
        checks.run - checks.failed,
        checks.run
    );
    i32::from(checks.failed != 0)
}

fn boot_info(checks: &mut Checks) {
    let info = libos::boot_info();
    checks.check("boot info magic", info.magic == abi::BOOT_INFO_MAGIC);
    checks.check(
        "heap inside guest memory",
        info.heap_start <= info.heap_end && info.heap_end <= info.mem_size,
    );
    checks.check(
        "stack is where the ABI puts it",
        info.stack_top == abi::layout::STACK_TOP,
    );
    let local = 0u8;
    let sp = core::ptr::addr_of!(local) as u64;
    checks.check(
        "running on the stack the boot info names",
        (info.stack_bottom..info.stack_top).contains(&sp),
    );
}

fn heap(checks: &mut Checks) {
    let before = libos::heap::stats();
    checks.check("heap has memory", before.size > 0);

    let squares: Vec<u64> = (0..1000u64).map(|i| i * i).collect();
    checks.check(
        "Vec",
        squares.len() == 1000
            && squares[999] == 998_001
            && squares.iter().sum::<u64>() == 332_833_500,
    );

    let mut text = String::new();
    for word in ["unikernels", "are", "small"] {
        text.push_str(word);
        text.push(' ');
    }
    checks.check("String", text.trim_end() == "unikernels are small");
    checks.check("format!", alloc::format!("{}-{:03}", "vm", 7) == "vm-007");

    let mut map = BTreeMap::new();
    for i in 0..200u32 {
        map.insert(i.wrapping_mul(2_654_435_761) % 1000, i);
    }
    checks.check("BTreeMap", map.len() == 200 && map.keys().is_sorted());

    // Half of what is free, in one block: the allocator must hand out large blocks.
    let big_len = before.free / 2;
    let mut big: Vec<u8> = Vec::with_capacity(big_len);
    big.resize(big_len, 0xa5);
    checks.check(
        "large allocation",
        big.len() == big_len && big.iter().all(|&b| b == 0xa5),
    );
    drop(big);
    drop(squares);
    drop(map);
    drop(text);
    let after = libos::heap::stats();
    checks.check("everything freed", after.used == before.used);
}

fn mem(checks: &mut Checks) {
    let mut buf: [u8; 64] = core::array::from_fn(|i| i as u8);
    // Overlapping moves in both directions (memmove's two paths).
    black_box(&mut buf).copy_within(0..32, 8);
    checks.check(
        "memmove forward overlap",
        buf[8..40].iter().enumerate().all(|(i, &b)| b == i as u8),
    );
    let mut buf: [u8; 64] = core::array::from_fn(|i| i as u8);
    black_box(&mut buf).copy_within(8..40, 0);
    checks.check(
        "memmove backward overlap",
        buf[..32].iter().enumerate().all(|(i, &b)| b == i as u8 + 8),
    );

    let mut filled = [0u8; 300];
    black_box(&mut filled).fill(black_box(0x5a));
    checks.check("memset", filled.iter().all(|&b| b == 0x5a));

    let a = black_box([1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
    let mut b = a;
    checks.check("memcmp equal", black_box(&a[..]) == black_box(&b[..]));
    b[16] = 0;
    checks.check("memcmp differ", black_box(&a[..]) != black_box(&b[..]));
    checks.check(
        "memcmp order",
        black_box(&b[..]).cmp(black_box(&a[..])) == core::cmp::Ordering::Less,
    );
}

fn clock(checks: &mut Checks) {
    checks.check("TSC rate known", libos::time::tsc_hz() > 0);
    let t0 = libos::time::monotonic();
    let t1 = libos::time::monotonic();
    checks.check("monotonic clock does not go back", t1 >= t0);
    // 2020-01-01 in seconds since the epoch: any VMM clock should be later.
    checks.check(
        "wall clock is set",
        libos::time::wall_clock() > Duration::from_secs(1_577_836_800),
    );
    let start = libos::time::monotonic();
    libos::time::sleep(Duration::from_millis(2));
    let slept = libos::time::monotonic() - start;
    checks.check("sleep waits", slept >= Duration::from_millis(2));
    libos::println!("selftest: booted {:?} ago", libos::time::monotonic());
}
