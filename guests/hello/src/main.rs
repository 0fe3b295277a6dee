//! The smallest useful unikernel: a greeting, and the command line if there is one.
#![no_std]
#![no_main]

libos::entry!(main);

fn main() -> i32 {
    libos::println!("Hello from a lightvm unikernel!");
    let cmdline = libos::cmdline();
    if !cmdline.is_empty() {
        libos::println!("cmdline: {cmdline}");
    }
    0
}
