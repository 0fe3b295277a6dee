//! Boots, says so, and waits forever in the `poll` hypercall: the host thread sleeps
//! in the VMM and the guest uses no CPU. The "idle VM" of density measurements.
#![no_std]
#![no_main]

libos::entry!(main);

fn main() {
    libos::println!("idle: up, waiting");
    loop {
        libos::hypercall::poll(u64::MAX);
    }
}
