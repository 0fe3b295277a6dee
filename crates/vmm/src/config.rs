//! What a user asks for, checked once, before any KVM work starts.
//!
//! Everything downstream of [`VmConfig`] may assume its values are in range: the
//! builder never re-validates, and a bad flag fails here with one clear message
//! instead of half-way through building a VM.

use std::path::PathBuf;
use std::time::Duration;

use lightvm_abi::{layout, limits};

use crate::devices::config::{DiskConfig, NetConfig};

/// A validated request to run one unikernel.
#[derive(Debug, Clone)]
pub struct VmConfig {
    image: PathBuf,
    mem_size: u64,
    cmdline: String,
    timeout: Option<Duration>,
    net: Option<NetConfig>,
    disk: Option<DiskConfig>,
    module: Option<PathBuf>,
    linux: bool,
}

/// Why a [`VmConfig`] was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--mem` could not be read as a size.
    #[error("invalid memory size {0:?}: expected a number with an optional unit, e.g. 2M, 64MiB, 1G (a bare number means MiB)")]
    MemSyntax(String),
    /// `--mem` is not a multiple of the large-page size, or out of range.
    #[error("memory size {size} bytes is not allowed: it must be a multiple of 2 MiB between {} MiB and {} GiB", layout::MEM_MIN >> 20, layout::MEM_MAX >> 30)]
    MemRange {
        /// The size that was asked for, in bytes.
        size: u64,
    },
    /// The command line does not fit in the boot-info page.
    #[error("command line is {len} bytes; at most {} fit", limits::CMDLINE_MAX)]
    CmdlineTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A zero timeout would kill the VM before it starts.
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
}

impl VmConfig {
    /// The default guest memory: enough for hello-class images, as small as the
    /// page-table layout allows.
    pub const DEFAULT_MEM: u64 = layout::MEM_MIN;

    /// Checks a request; the image file itself is validated when it is loaded.
    pub fn new(
        image: impl Into<PathBuf>,
        mem_size: u64,
        cmdline: impl Into<String>,
        timeout: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        Self::check_mem_size(mem_size)?;
        let cmdline = cmdline.into();
        if cmdline.len() as u64 > limits::CMDLINE_MAX {
            return Err(ConfigError::CmdlineTooLong { len: cmdline.len() });
        }
        if timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(Self {
            image: image.into(),
            mem_size,
            cmdline,
            timeout,
            net: None,
            disk: None,
            module: None,
            linux: false,
        })
    }

    /// Checks a guest memory size on its own (pools of shells are sized before any
    /// request names an image).
    pub fn check_mem_size(mem_size: u64) -> Result<(), ConfigError> {
        if !(layout::MEM_MIN..=layout::MEM_MAX).contains(&mem_size)
            || !mem_size.is_multiple_of(layout::MEM_ALIGN)
        {
            return Err(ConfigError::MemRange { size: mem_size });
        }
        Ok(())
    }

    /// Gives the VM a network interface on a host tap (`--net`).
    pub fn with_net(mut self, net: Option<NetConfig>) -> Self {
        self.net = net;
        self
    }

    /// Gives the VM a disk backed by a raw image file (`--disk`).
    pub fn with_disk(mut self, disk: Option<DiskConfig>) -> Self {
        self.disk = disk;
        self
    }

    /// Loads `module` (a file: the root filesystem archive of a Linux program) at
    /// the end of guest memory, read-only; the boot info says where.
    pub fn with_module(mut self, module: Option<PathBuf>) -> Self {
        self.module = module;
        self
    }

    /// Prepares the VM to run a Linux program beside its image (the Linux
    /// personality): the heap is executable (the program is loaded there), user
    /// mode may set FS and GS bases itself, and the CPU's vector state is the
    /// host's (programs use AVX where the CPU has it).
    pub fn for_linux_programs(mut self, linux: bool) -> Self {
        self.linux = linux;
        self
    }

    /// The module, if any.
    pub fn module(&self) -> Option<&std::path::Path> {
        self.module.as_deref()
    }

    /// Whether the VM runs Linux programs.
    pub fn runs_linux_programs(&self) -> bool {
        self.linux
    }

    /// The network interface, if any.
    pub fn net(&self) -> Option<&NetConfig> {
        self.net.as_ref()
    }

    /// The disk, if any.
    pub fn disk(&self) -> Option<&DiskConfig> {
        self.disk.as_ref()
    }

    /// Path of the unikernel ELF.
    pub fn image(&self) -> &std::path::Path {
        &self.image
    }

    /// Guest memory in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// The command line handed to the guest.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// How long the guest may run before the VMM stops it.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// Parses a memory size the way VMM users write it: `2M`, `64MiB`, `1G`, `4096K`,
/// or a bare number of MiB (as QEMU's `-m` does).
pub fn parse_mem_size(text: &str) -> Result<u64, ConfigError> {
    let syntax = || ConfigError::MemSyntax(text.to_owned());
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| syntax())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 20,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "b" => 0,
        _ => return Err(syntax()),
    };
    number.checked_mul(1 << shift).ok_or_else(syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_mem_size("2"), Ok(2 << 20));
        assert_eq!(parse_mem_size("2M"), Ok(2 << 20));
        assert_eq!(parse_mem_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_mem_size("1G"), Ok(1 << 30));
        assert_eq!(parse_mem_size("4096k"), Ok(4 << 20));
        assert_eq!(parse_mem_size("4194304b"), Ok(4 << 20));
    }

    #[test]
    fn malformed_sizes_are_refused() {
        for bad in ["", "M", "-2M", "2X", "2.5M", "99999999999999999999G"] {
            assert!(
                matches!(parse_mem_size(bad), Err(ConfigError::MemSyntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn memory_must_be_aligned_and_in_range() {
        assert!(VmConfig::new("x", 2 << 20, "", None).is_ok());
        for bad in [0, 1 << 20, 3 << 20, 4 << 30] {
            assert_eq!(
                VmConfig::new("x", bad, "", None).unwrap_err(),
                ConfigError::MemRange { size: bad }
            );
        }
    }

    #[test]
    fn oversized_cmdline_and_zero_timeout_are_refused() {
        let long = "x".repeat(limits::CMDLINE_MAX as usize + 1);
        assert!(matches!(
            VmConfig::new("x", 2 << 20, long, None),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
        assert_eq!(
            VmConfig::new("x", 2 << 20, "", Some(Duration::ZERO)).unwrap_err(),
            ConfigError::ZeroTimeout
        );
    }
}
