//! Breaks the hypercall ABI on purpose: a console write whose argument struct is
//! valid guest memory but whose buffer pointer lies far outside it. The VMM must stop
//! the VM with an ABI-violation error naming the call, and never read that address.
#![no_std]
#![no_main]

use libos::abi::{ConsoleWriteArgs, Hypercall};

libos::entry!(main);

/// Far beyond any guest memory (the ABI caps it at 3 GiB), and not 32-bit either.
const OUTSIDE_GUEST_MEMORY: u64 = 0xdead_0000_0000;

fn main() -> i32 {
    libos::println!("about to pass a bad pointer");
    let mut args = ConsoleWriteArgs {
        buf: OUTSIDE_GUEST_MEMORY,
        len: 16,
    };
    // SAFETY: `args` itself is a valid ConsoleWriteArgs on our stack; the bad `buf`
    // inside it is the point of the test, and the VMM checks such addresses.
    unsafe { libos::hypercall::raw(Hypercall::ConsoleWrite, &mut args) };
    // Only reached if the VMM accepted the call, which it must not.
    libos::println!("the VMM accepted a buffer outside guest memory");
    1
}
