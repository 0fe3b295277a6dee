//! Image builders of lightvm: what `lightvm build` runs.
//!
//! * [`unikernel`]: turns a Rust guest application (a `no_std` binary crate that
//!   links `libos`) into a bootable static ELF, with the target, link flags and
//!   linker script a freestanding unikernel needs.
//! * [`kernel`]: builds Linux kernels from Debian's linux-source with the
//!   project's config fragments (`lightvm kernel build`), cached by config hash.
#![warn(missing_docs)]

pub mod kernel;

pub mod unikernel;

pub use unikernel::{BuildError, BuiltImage, UnikernelBuild};
