//! `libos`: the guest library every lightvm unikernel links.
//!
//! A lightvm unikernel is a `#![no_std] #![no_main]` Rust binary that runs alone in
//! a VM, in 64-bit user mode, with no kernel underneath. This library is the little
//! that stands in for one:
//!
//! * the entry point `_start` ([`start`]), which checks the boot contract, sets up the
//!   heap and the clock and calls the application's `main` (named with [`entry!`]);
//! * a global allocator over the memory the VMM leaves free ([`heap`]), so
//!   `extern crate alloc;` works;
//! * [`print!`] / [`println!`] over the console hypercall ([`console`]);
//! * a monotonic and a wall clock from the TSC, with no VM exit ([`time`]);
//! * [`exit`], [`cmdline`], [`boot_info`], a panic handler that ends the VM with
//!   status 101 and the panic message;
//! * the `mem*` functions the compiler expects from a C library ([`mem`]);
//! * a disk ([`block`]) and, with the `net` feature, a TCP/IP stack on smoltcp with
//!   a small socket API (`net`), both over rings in guest memory;
//! * the [`hypercall`]s themselves, for what the rest does not cover.
//!
//! The contract with the VMM — memory layout, machine state at entry, hypercall
//! numbers and argument structs — lives in the `lightvm-abi` crate, re-exported here
//! as [`abi`].
//!
//! # A complete application
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! libos::entry!(main);
//!
//! fn main() -> i32 {
//!     libos::println!("Hello from a lightvm unikernel!");
//!     0
//! }
//! ```
//!
//! It is built (with the linker script and flags a freestanding image needs) by
//! `lightvm build <app dir>`.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

extern crate alloc;

pub use lightvm_abi as abi;

pub mod block;
pub mod boot;
pub mod console;
mod fmtbuf;
pub mod heap;
pub mod hypercall;
pub mod mem;
#[cfg(feature = "net")]
pub mod net;
mod panic;
pub mod process;
mod ring;
pub mod start;
pub mod time;

pub use boot::{boot_info, cmdline, cmdline_arg};
pub use process::{exit, Termination};
