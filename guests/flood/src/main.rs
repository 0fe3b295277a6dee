//! Writes to the console as fast as it can, forever, 4 KiB per hypercall: tests that
//! the VMM's console rate limit keeps a guest from flooding the host whatever the
//! cost of an exit. Tests end it with a timeout.
#![no_std]
#![no_main]

libos::entry!(main);

const LINE: &[u8] = b"flood: the quick brown fox jumps over the lazy dog, again & again\n";

fn main() {
    let mut chunk = [0u8; 4096];
    for (i, byte) in chunk.iter_mut().enumerate() {
        *byte = LINE[i % LINE.len()];
    }
    loop {
        libos::console::write(&chunk);
    }
}
