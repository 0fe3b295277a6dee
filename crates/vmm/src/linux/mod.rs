//! Linux microVMs: a `vmlinux` or bzImage, an initrd, a command line, serial,
//! i8042, boot timer and virtio-mmio devices, one or more vCPUs.
//!
//! Flow: [`LinuxVmConfig`] (validated) → [`LinuxVm::build`] (KVM VM with in-kernel
//! irqchip and PIT, memory, kernel and initrd, boot parameters, vCPUs, devices) →
//! [`LinuxVm::run`] (one thread per vCPU; ends on a guest reset, a crash, a host
//! error or the timeout) → [`crate::RunReport`]. Both fail with a
//! [`LinuxVmError`].

pub mod boot_params;
pub mod config;
pub mod cpu;
pub mod error;
pub mod layout;
pub mod loader;
pub mod mptable;
mod vm;

pub use config::{
    DiskConfig, LinuxConfigError, LinuxVmConfig, LinuxVmSpec, NetConfig, DEFAULT_CMDLINE,
};
pub use cpu::{BootEntry, CpuFeature, UnknownCpuFeature};
pub use error::LinuxVmError;
pub use loader::LinuxImageError;
pub use vm::LinuxVm;
