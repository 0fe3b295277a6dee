//! Disk test through the block ring. Modes (command line):
//!
//! * `write` (default): writes a pattern to sectors 0..64 (and one multi-request
//!   transfer of 2 MiB when the disk is big enough), flushes, prints `flushed`, reads it
//!   all back and checks it; then checks the error paths (past the end, unaligned).
//!   With `hold` it then sleeps, so the test can kill the VMM right after `flushed`.
//! * `verify`: reads sectors 0..64 and checks the pattern.
//! * `readonly`: expects a write to fail with the read-only error.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use libos::block::{BlockError, Disk};
use libos::println;

libos::entry!(main);

fn pattern(sector: u64, i: usize) -> u8 {
    (sector as usize * 31 + i * 7 + 1) as u8
}

fn main() -> i32 {
    let Some(mut disk) = Disk::open() else {
        println!("blocktest: no disk (run with --disk PATH)");
        return 1;
    };
    println!(
        "blocktest: disk of {} sectors{}",
        disk.sectors(),
        if disk.readonly() { ", read-only" } else { "" }
    );
    let mode = if libos::cmdline_arg("verify").is_some() {
        "verify"
    } else if libos::cmdline_arg("readonly").is_some() {
        "readonly"
    } else {
        "write"
    };
    let sectors = 64u64.min(disk.sectors());
    let mut data = vec![0u8; sectors as usize * 512];
    for s in 0..sectors {
        for i in 0..512 {
            data[s as usize * 512 + i] = pattern(s, i);
        }
    }
    match mode {
        "readonly" => {
            let result = disk.write(0, &data[..512]);
            if result != Err(BlockError::ReadOnly) {
                println!("blocktest: FAIL: write to a read-only disk gave {result:?}");
                return 1;
            }
            println!("blocktest: read-only refused the write");
            0
        }
        "verify" => {
            let mut back = vec![0u8; data.len()];
            if let Err(e) = disk.read(0, &mut back) {
                println!("blocktest: FAIL: read: {e}");
                return 1;
            }
            if back != data {
                println!("blocktest: FAIL: data differs");
                return 1;
            }
            println!("blocktest: verified {sectors} sectors");
            0
        }
        _ => {
            if let Err(e) = disk.write(0, &data) {
                println!("blocktest: FAIL: write: {e}");
                return 1;
            }
            if let Err(e) = disk.flush() {
                println!("blocktest: FAIL: flush: {e}");
                return 1;
            }
            println!("blocktest: flushed {sectors} sectors");
            if libos::cmdline_arg("hold").is_some() {
                libos::time::sleep(core::time::Duration::from_secs(60));
            }
            let mut back = vec![0u8; data.len()];
            if disk.read(0, &mut back).is_err() || back != data {
                println!("blocktest: FAIL: read back differs");
                return 1;
            }
            // A transfer of several requests in one batch.
            let big = 4096u64;
            if disk.sectors() >= sectors + big {
                let buf: alloc::vec::Vec<u8> = (0..big as usize * 512)
                    .map(|i| (i / 512) as u8 ^ (i as u8))
                    .collect();
                let mut back = vec![0u8; buf.len()];
                if disk.write(sectors, &buf).is_err()
                    || disk.read(sectors, &mut back).is_err()
                    || back != buf
                {
                    println!("blocktest: FAIL: 2 MiB transfer");
                    return 1;
                }
            }
            let end = disk.sectors();
            if disk.read(end, &mut back[..512]) != Err(BlockError::OutOfRange) {
                println!("blocktest: FAIL: a read past the end was not refused");
                return 1;
            }
            if disk.read(0, &mut back[..100]) != Err(BlockError::Unaligned) {
                println!("blocktest: FAIL: a partial sector was not refused");
                return 1;
            }
            println!("blocktest: ok");
            0
        }
    }
}
