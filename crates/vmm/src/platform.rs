//! Where a unikernel runs: the two platforms, and which of them this host has.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A way to run a unikernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// A KVM virtual machine: hardware isolation; needs `/dev/kvm`.
    Kvm,
    /// A seccomp-sandboxed host process: runs on any Linux host.
    Process,
}

/// Why a platform cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {platform} platform is not available: {reason}")]
pub struct Unavailable {
    /// The platform.
    pub platform: Platform,
    /// What about this host prevents it.
    pub reason: String,
}

impl Platform {
    /// Both platforms, kvm first (the default where it is available).
    pub const ALL: [Platform; 2] = [Platform::Kvm, Platform::Process];

    /// The name users type (`--platform kvm`) and reports show.
    pub const fn name(self) -> &'static str {
        match self {
            Platform::Kvm => "kvm",
            Platform::Process => "process",
        }
    }

    /// Whether this host can run guests on this platform, and if not why, in words
    /// that describe this host.
    pub fn check(self) -> Result<(), Unavailable> {
        let reason = match self {
            Platform::Kvm => kvm_unavailable(),
            Platform::Process => process_unavailable(),
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(Unavailable {
                platform: self,
                reason,
            }),
        }
    }

    /// The platforms this host can run, in [`Platform::ALL`]'s order.
    pub fn available() -> Vec<Platform> {
        Self::ALL
            .into_iter()
            .filter(|p| p.check().is_ok())
            .collect()
    }

    /// The platform to use when the user named none: kvm where `/dev/kvm` is usable,
    /// else the process platform. With the choice comes why kvm was passed over,
    /// for the one line that tells the user.
    pub fn choose() -> Result<(Platform, Option<Unavailable>), Unavailable> {
        match Platform::Kvm.check() {
            Ok(()) => Ok((Platform::Kvm, None)),
            Err(no_kvm) => {
                Platform::Process.check()?;
                Ok((Platform::Process, Some(no_kvm)))
            }
        }
    }
}

fn kvm_unavailable() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(match e.raw_os_error() {
            Some(libc::ENOENT) => "no /dev/kvm on this host".to_owned(),
            Some(libc::EACCES | libc::EPERM) => {
                "/dev/kvm is not accessible to this user (run as root or join the kvm group)"
                    .to_owned()
            }
            _ => format!("/dev/kvm cannot be opened: {e}"),
        }),
    }
}

fn process_unavailable() -> Option<String> {
    let min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    (min > lightvm_abi::layout::BOOT_INFO_ADDR).then(|| {
        format!(
            "vm.mmap_min_addr is {min:#x}, above the guest's lowest address {:#x}",
            lightvm_abi::layout::BOOT_INFO_ADDR
        )
    })
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--platform` names no platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?}: expected kvm or process")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| UnknownPlatform(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for platform in Platform::ALL {
            assert_eq!(platform.name().parse(), Ok(platform));
            assert_eq!(
                serde_json::to_string(&platform).unwrap(),
                format!("\"{platform}\"")
            );
        }
        assert!("xen".parse::<Platform>().is_err());
    }

    #[test]
    fn the_choice_is_kvm_exactly_when_kvm_is_available() {
        let (chosen, passed_over) = Platform::choose().unwrap();
        assert_eq!(chosen == Platform::Kvm, Platform::Kvm.check().is_ok());
        assert_eq!(passed_over.is_some(), chosen == Platform::Process);
        assert!(Platform::available().contains(&chosen));
    }
}
