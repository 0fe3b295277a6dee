//! Panics on purpose, so tests can check that a panic ends the VM with status 101
//! and that the VMM shows the panic message.
#![no_std]
#![no_main]

libos::entry!(main);

fn main() {
    panic!("deliberate panic for testing");
}
