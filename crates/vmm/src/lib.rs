//! The lightvm virtual machine monitor.
//!
//! A request flows one way through this crate: [`VmConfig`] (validated user input)
//! → [`Shell`] (KVM VM, memory, vCPU: prepared ahead of time, or cold by
//! [`Vm::build`]) → [`Shell::boot`] (image, page tables, boot info) → [`Vm::run`]
//! (the exit loop: hypercalls, faults, timeout) → [`RunReport`] (how the guest ended,
//! where the time went). Guests are unikernels that run wholly at CPL 3 and speak the
//! hypercall ABI of the `lightvm-abi` crate.

pub mod arch;
pub mod config;
pub mod console;
pub mod devices;
pub mod error;
pub mod hypercall;
pub mod linux;
pub mod loader;
pub mod memory;
pub mod report;
mod shell;
pub mod timer;
pub mod unikernel_devices;
mod vm;

pub use config::{parse_mem_size, ConfigError, VmConfig};
pub use error::VmmError;
pub use linux::{LinuxVm, LinuxVmConfig};
pub use loader::{ImageError, UnikernelImage};
pub use report::{CrashReport, RunReport, Timings, VmExit};
pub use shell::Shell;
pub use unikernel_devices::{DiskConfig, NetConfig};
pub use vm::{BootListener, Vm};
