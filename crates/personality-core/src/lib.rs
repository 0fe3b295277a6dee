//! The parts of lightvm's Linux personality that read input the program or its
//! user controls — the root filesystem archive ([`cpio`], [`vfs`]), the launch file
//! ([`launch`]), the program's and its loader's ELF headers ([`elf`]), and the
//! arguments of the memory calls ([`mm`]) — kept free of the guest library so
//! that they compile on the host as well as in the guest.
//!
//! The personality (`crates/personality`, a freestanding guest) re-exports these
//! modules and adds what touches guest memory or the monitor; on the host, unit
//! tests and the fuzz targets in `crates/fuzz` run the same code with input no
//! well-behaved program would give. Nothing here may panic on such input: a bad
//! archive, launch file or ELF header is an error for the user, a bad argument an
//! errno for the program.
#![no_std]

extern crate alloc;

pub mod cpio;
pub mod elf;
pub mod errno;
pub mod launch;
pub mod mm;
pub mod vfs;
