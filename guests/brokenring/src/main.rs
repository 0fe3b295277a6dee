//! Breaks the device-ring contract on purpose, to show that the VMM stops the VM
//! with a clear ABI-violation error instead of crashing. Mode on the command line:
//!
//! * `mode=index`: the transmit ring's avail index runs past the ring's size;
//! * `mode=length`: a transmit descriptor's buffer runs past the end of memory;
//! * `mode=loop`: a frame whose MORE chain goes round the whole ring;
//! * `mode=block`: a block request whose buffer lies outside guest memory.
//!
//! Reaching the end of `main` means the VMM accepted the broken ring: exit 1.
#![no_std]
#![no_main]

use libos::abi::devices::{BlockRequest, NetDesc, BLOCK_READ};
use libos::println;

libos::entry!(main);

fn main() -> i32 {
    let mode = libos::cmdline_arg("mode").unwrap_or("index");
    let frame = [0u8; 64];
    let good = NetDesc {
        addr: frame.as_ptr() as u64,
        len: frame.len() as u32,
        flags: 0,
        reserved: 0,
    };
    println!("brokenring: mode {mode}");
    match mode {
        "block" => {
            let Some(mut disk) = libos::block::Disk::open() else {
                println!("brokenring: no disk");
                return 2;
            };
            let request = BlockRequest {
                op: BLOCK_READ,
                sector: 0,
                addr: 0xffff_0000_0000,
                len: 512,
                ..Default::default()
            };
            disk.raw_ring_for_tests(0, request, 1);
        }
        _ => {
            let Some(mut device) = libos::net::NetDevice::open() else {
                println!("brokenring: no network device");
                return 2;
            };
            match mode {
                "index" => device.raw_tx_for_tests(&[good], 100_000),
                "length" => {
                    let bad = NetDesc {
                        len: 1500,
                        addr: libos::boot_info().mem_size - 100,
                        ..good
                    };
                    device.raw_tx_for_tests(&[good, bad], 2);
                }
                "loop" => {
                    let more = NetDesc {
                        flags: libos::net::DESC_MORE,
                        ..good
                    };
                    device.raw_tx_for_tests(&[more; 256], 256);
                }
                _ => {
                    println!("brokenring: unknown mode");
                    return 2;
                }
            }
        }
    }
    println!("brokenring: the VMM accepted a broken ring");
    1
}
