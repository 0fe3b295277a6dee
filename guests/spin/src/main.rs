//! Prints once and then never ends: tests that the VMM enforces its timeout and can
//! stop a guest that makes no hypercall at all.
#![no_std]
#![no_main]

libos::entry!(main);

fn main() {
    libos::println!("spinning");
    loop {
        core::hint::spin_loop();
    }
}
