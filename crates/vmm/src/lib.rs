//! The lightvm virtual machine monitor.
//!
//! * [`unikernel`]: unikernel images on two platforms — [`Platform::Kvm`] (a KVM
//!   VM) and [`Platform::Process`] (a seccomp-sandboxed host process) — over one
//!   hypercall core and one set of device backends;
//! * [`linux`]: Linux microVMs on KVM;
//! * [`kvm`]: the KVM machinery both KVM users share (memory slots, page tables,
//!   GDT, registers, the vCPU run step and crash dump);
//! * [`devices`]: the Linux guests' devices and the host tap and disk both kinds use;
//! * [`seccomp`]: the KVM monitors' per-thread filters, from lists kept as data;
//! * [`jail`]: the namespaces, root, uid, limits and cgroup every VM process runs in.
//!
//! Each part below the builders fails with its own small error; each builder with
//! one error at the top of its room that wraps them: [`UnikernelError`] and
//! [`LinuxVmError`]. No part imports an error that imports it back.
//!
//! A request flows one way: [`VmConfig`] (validated user input) → a [`Shell`]
//! (prepared ahead of time, or cold by [`Vm::build`]) → [`Shell::boot`] (image, boot
//! state) → [`Vm::run`] (hypercalls, faults, timeout) → [`RunReport`] (how the guest
//! ended, where the time went).

pub mod config;
pub mod console;
pub mod devices;
pub mod error;
pub mod jail;
pub mod kvm;
pub mod linux;
pub mod loader;
pub mod memory;
pub mod platform;
pub mod report;
pub mod seccomp;
pub mod timer;
pub mod unikernel;

pub use config::{parse_mem_size, ConfigError, VmConfig};
pub use error::HostError;
pub use linux::{LinuxVm, LinuxVmConfig, LinuxVmError};
pub use loader::{ImageError, UnikernelImage};
pub use platform::{Platform, Unavailable};
pub use report::{CrashReport, RunReport, Timings, VmExit};
pub use unikernel::devices::{DiskConfig, NetConfig};
pub use unikernel::{BootListener, SandboxPolicy, Shell, UnikernelError, Vm};
