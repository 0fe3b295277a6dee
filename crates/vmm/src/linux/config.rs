//! A validated request to boot one Linux guest: `lightvm run --kernel …`.
//!
//! As with [`crate::VmConfig`], every value is checked here, once; the files
//! themselves (kernel, initrd, disks) are opened and checked when the VM is built.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cpu::CpuFeature;
use super::layout;

/// The command line used when none is given: the console on the first serial
/// port, reboot through the keyboard controller (which ends the VMM), no PCI.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

pub use crate::devices::config::{DiskConfig, NetConfig};

/// Why a [`LinuxVmConfig`] was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinuxConfigError {
    /// `--mem` is out of range or misaligned.
    #[error("memory size {size} bytes is not allowed for a Linux guest: it must be a multiple of 2 MiB between {} MiB and {} GiB", layout::MEM_MIN >> 20, layout::MEM_MAX >> 30)]
    MemRange {
        /// What was asked for.
        size: u64,
    },
    /// `--vcpus` is out of range.
    #[error("{0} vCPUs asked for: a Linux guest has 1 to {max}", max = LinuxVmConfig::MAX_VCPUS)]
    Vcpus(u32),
    /// The command line (with the devices lightvm appends) is too long.
    #[error("the kernel command line would be {len} bytes; at most {} fit", layout::CMDLINE_MAX - 1)]
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
    /// The command line contains a NUL byte.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Too many disks and network devices.
    #[error("{0} virtio devices asked for; at most {max} fit", max = layout::MAX_VIRTIO_DEVICES)]
    TooManyDevices(usize),
    /// A zero timeout.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
}

/// A validated request to boot a Linux kernel.
#[derive(Debug, Clone)]
pub struct LinuxVmConfig {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: String,
    mem_size: u64,
    vcpus: u8,
    cpu_clear: Vec<CpuFeature>,
    disks: Vec<DiskConfig>,
    nets: Vec<NetConfig>,
    timeout: Option<Duration>,
}

/// The parts of a [`LinuxVmConfig`], before validation.
#[derive(Debug, Clone)]
pub struct LinuxVmSpec {
    /// `vmlinux` (ELF, PVH note or not) or `bzImage`.
    pub kernel: PathBuf,
    /// An initramfs or initrd image.
    pub initrd: Option<PathBuf>,
    /// The kernel command line; lightvm appends the virtio-mmio devices.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// CPUID features hidden from the guest.
    pub cpu_clear: Vec<CpuFeature>,
    /// virtio-blk devices, in order (`/dev/vda`, `/dev/vdb`, …).
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices, in order (`eth0`, …).
    pub nets: Vec<NetConfig>,
    /// Stop the VM after this long.
    pub timeout: Option<Duration>,
}

impl LinuxVmConfig {
    /// Default guest memory.
    pub const DEFAULT_MEM: u64 = 128 << 20;
    /// Most vCPUs (the MP table lightvm writes and the kernels it builds).
    pub const MAX_VCPUS: u32 = 8;

    /// Validates a request.
    pub fn new(spec: LinuxVmSpec) -> Result<Self, LinuxConfigError> {
        if !(layout::MEM_MIN..=layout::MEM_MAX).contains(&spec.mem_size)
            || !spec.mem_size.is_multiple_of(layout::MEM_ALIGN)
        {
            return Err(LinuxConfigError::MemRange {
                size: spec.mem_size,
            });
        }
        if !(1..=Self::MAX_VCPUS).contains(&spec.vcpus) {
            return Err(LinuxConfigError::Vcpus(spec.vcpus));
        }
        let devices = spec.disks.len() + spec.nets.len();
        if devices > layout::MAX_VIRTIO_DEVICES {
            return Err(LinuxConfigError::TooManyDevices(devices));
        }
        if spec.timeout == Some(Duration::ZERO) {
            return Err(LinuxConfigError::ZeroTimeout);
        }
        let config = Self {
            kernel: spec.kernel,
            initrd: spec.initrd,
            cmdline: spec.cmdline,
            mem_size: spec.mem_size,
            vcpus: spec.vcpus as u8,
            cpu_clear: spec.cpu_clear,
            disks: spec.disks,
            nets: spec.nets,
            timeout: spec.timeout,
        };
        let full = config.full_cmdline();
        if full.contains('\0') {
            return Err(LinuxConfigError::CmdlineNul);
        }
        if full.len() >= layout::CMDLINE_MAX {
            return Err(LinuxConfigError::CmdlineTooLong { len: full.len() });
        }
        Ok(config)
    }

    /// The kernel image.
    pub fn kernel(&self) -> &Path {
        &self.kernel
    }
    /// The initrd, if any.
    pub fn initrd(&self) -> Option<&Path> {
        self.initrd.as_deref()
    }
    /// The command line as given.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
    /// Guest RAM in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }
    /// Number of vCPUs.
    pub fn vcpus(&self) -> u8 {
        self.vcpus
    }
    /// CPUID features hidden from the guest.
    pub fn cpu_clear(&self) -> &[CpuFeature] {
        &self.cpu_clear
    }
    /// Disks.
    pub fn disks(&self) -> &[DiskConfig] {
        &self.disks
    }
    /// Network devices.
    pub fn nets(&self) -> &[NetConfig] {
        &self.nets
    }
    /// The timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The command line the kernel gets: the user's, then one
    /// `virtio_mmio.device=4K@ADDR:IRQ` per device (disks first, then networks),
    /// the announcement the kernel's virtio-mmio driver reads when there is no
    /// ACPI or device tree.
    pub fn full_cmdline(&self) -> String {
        let mut line = self.cmdline.trim().to_owned();
        for index in 0..self.disks.len() + self.nets.len() {
            let (addr, irq) = virtio_slot(index);
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&format!("virtio_mmio.device=4K@{addr:#x}:{irq}"));
        }
        line
    }
}

/// The MMIO address and interrupt line of the `index`th virtio device.
pub fn virtio_slot(index: usize) -> (u64, u32) {
    (
        layout::VIRTIO_MMIO_BASE + index as u64 * layout::VIRTIO_MMIO_SIZE,
        layout::VIRTIO_FIRST_IRQ + index as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LinuxVmSpec {
        LinuxVmSpec {
            kernel: "vmlinux".into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            mem_size: LinuxVmConfig::DEFAULT_MEM,
            vcpus: 1,
            cpu_clear: vec![],
            disks: vec![],
            nets: vec![],
            timeout: None,
        }
    }

    #[test]
    fn devices_are_announced_on_the_command_line() {
        let config = LinuxVmConfig::new(LinuxVmSpec {
            disks: vec![DiskConfig::parse("root.img,ro").unwrap()],
            nets: vec![NetConfig::parse("tap=tap0", 0).unwrap()],
            ..spec()
        })
        .unwrap();
        assert_eq!(
            config.full_cmdline(),
            format!("{DEFAULT_CMDLINE} virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6")
        );
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let refused = |change: fn(&mut LinuxVmSpec)| {
            let mut s = spec();
            change(&mut s);
            LinuxVmConfig::new(s).unwrap_err()
        };
        assert!(matches!(
            refused(|s| s.mem_size = 16 << 20),
            LinuxConfigError::MemRange { .. }
        ));
        assert!(matches!(
            refused(|s| s.mem_size = 4 << 30),
            LinuxConfigError::MemRange { .. }
        ));
        assert!(matches!(
            refused(|s| s.mem_size = (64 << 20) + 4096),
            LinuxConfigError::MemRange { .. }
        ));
        assert_eq!(refused(|s| s.vcpus = 0), LinuxConfigError::Vcpus(0));
        assert_eq!(refused(|s| s.vcpus = 9), LinuxConfigError::Vcpus(9));
        assert!(matches!(
            refused(|s| s.cmdline = "x".repeat(3000)),
            LinuxConfigError::CmdlineTooLong { .. }
        ));
        assert_eq!(
            refused(|s| s.cmdline = "a\0b".into()),
            LinuxConfigError::CmdlineNul
        );
        assert_eq!(
            refused(|s| s.timeout = Some(Duration::ZERO)),
            LinuxConfigError::ZeroTimeout
        );
        assert!(matches!(
            refused(|s| s.disks = vec![DiskConfig::parse("d").unwrap(); 20]),
            LinuxConfigError::TooManyDevices(20)
        ));
    }

    #[test]
    fn disk_and_net_flags_parse() {
        assert_eq!(
            DiskConfig::parse("/a/b.img,ro").unwrap(),
            DiskConfig {
                path: "/a/b.img".into(),
                read_only: true
            }
        );
        assert!(!DiskConfig::parse("b.img").unwrap().read_only);
        assert!(DiskConfig::parse("b.img,rx").is_err());
        assert!(DiskConfig::parse(",ro").is_err());
        let net = NetConfig::parse("tap=tap0,mac=02:00:00:00:00:01", 0).unwrap();
        assert_eq!(net.tap, "tap0");
        assert_eq!(net.mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(NetConfig::parse("tap=t", 3).unwrap().mac[5], 5);
        assert!(NetConfig::parse("mac=02:00:00:00:00:01", 0).is_err());
        assert!(NetConfig::parse("tap=t,mac=02:00", 0).is_err());
        assert!(NetConfig::parse("tap=waytoolonginterfacename", 0).is_err());
        assert!(NetConfig::parse("bridge=br0", 0).is_err());
    }
}
