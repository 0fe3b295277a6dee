//! Writes to address 0, which is never mapped: tests that the VMM turns a guest CPU
//! exception into a crash report (a page fault, with the faulting instruction).
#![no_std]
#![no_main]

libos::entry!(main);

fn main() -> i32 {
    libos::println!("about to fault");
    // Inline assembly rather than `write_volatile` on a null pointer: the latter is
    // undefined behaviour, and debug builds catch it as a panic before it faults.
    // SAFETY: deliberately not safe: the store faults and the VM ends right here.
    unsafe { core::arch::asm!("mov byte ptr [0], 1", options(nostack)) };
    libos::println!("the write to address 0 did not fault");
    1
}
