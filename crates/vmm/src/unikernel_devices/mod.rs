//! Devices of unikernel VMs: a network interface on a host tap and a disk on a raw
//! image file, both driven through rings in guest memory (`lightvm_abi::devices`).
//!
//! The exit loop hands the device hypercalls here ([`Devices::hypercall`]) and the
//! `poll` hypercall's wait ([`Devices::poll`]): every device is serviced, and only
//! if none has anything for the guest does the VMM block, in an epoll set of the
//! device descriptors ([`event_loop`]), until one is readable, the timeout passes or
//! the deadline timer's signal arrives.
//!
//! * [`tap`]: opening a tap interface (reusable by any VM kind);
//! * [`ring`]: checked access to guest rings;
//! * [`net`], [`block`]: the two devices;
//! * [`event_loop`]: the wait.

pub mod block;
pub mod event_loop;
pub mod net;
pub mod ring;

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lightvm_abi::devices::{BlockSetupArgs, NetSetupArgs, NotifyArgs, READY_NET};
use lightvm_abi::Hypercall;
use vm_memory::GuestMemoryMmap;

use crate::devices::tap::Tap;
use crate::error::VmmError;
use crate::hypercall::{self, AbiViolation};
use block::BlockDevice;
use event_loop::EventLoop;
use net::NetDevice;
use ring::Guest;

/// The MAC address a NIC gets when `--net` names none (locally administered).
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// `--net tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The host tap interface.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// `--disk PATH[,ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image file.
    pub path: PathBuf,
    /// Refuse the guest's writes.
    pub readonly: bool,
}

/// A `--net` or `--disk` value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceSyntax(String);

impl FromStr for NetConfig {
    type Err = DeviceSyntax;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX]";
        let mut tap = None;
        let mut mac = DEFAULT_MAC;
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("tap", name))
                    if !name.is_empty() && name.len() <= crate::devices::tap::IFNAME_MAX =>
                {
                    tap = Some(name.to_owned());
                }
                Some(("mac", text)) => mac = parse_mac(text)?,
                _ => return Err(DeviceSyntax(format!("--net {text:?}: {usage}"))),
            }
        }
        let tap = tap.ok_or_else(|| DeviceSyntax(format!("--net {text:?}: {usage}")))?;
        Ok(Self { tap, mac })
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6], DeviceSyntax> {
    let bad = || {
        DeviceSyntax(format!(
            "MAC address {text:?}: expected six hex bytes like 52:54:00:12:34:56"
        ))
    };
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(DeviceSyntax(format!(
            "MAC address {text}: a NIC needs a unicast address (first byte even, not all zero)"
        )));
    }
    Ok(mac)
}

impl FromStr for DiskConfig {
    type Err = DeviceSyntax;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (path, readonly) = match text.rsplit_once(',') {
            Some((path, "ro")) => (path, true),
            Some((path, "rw")) => (path, false),
            Some((_, other)) => {
                return Err(DeviceSyntax(format!(
                    "--disk {text:?}: unknown option {other:?}; expected PATH[,ro]"
                )))
            }
            None => (text, false),
        };
        if path.is_empty() {
            return Err(DeviceSyntax(format!("--disk {text:?}: expected PATH[,ro]")));
        }
        Ok(Self {
            path: path.into(),
            readonly,
        })
    }
}

impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mac;
        write!(
            f,
            "tap={},mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            self.tap, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The devices of one VM.
#[derive(Default)]
pub struct Devices {
    net: Option<NetDevice>,
    block: Option<BlockDevice>,
    events: Option<EventLoop>,
}

impl Devices {
    /// Opens the host side of the devices asked for: the tap and the disk image.
    pub fn open(net: Option<&NetConfig>, disk: Option<&DiskConfig>) -> Result<Self, VmmError> {
        let mut devices = Self::default();
        if let Some(config) = net {
            let tap = Tap::open(&config.tap).map_err(|source| VmmError::Host {
                op: "opening the network device (--net)",
                source,
            })?;
            let mut events = EventLoop::new().map_err(|source| VmmError::Host {
                op: "creating the device event loop",
                source,
            })?;
            events
                .add_readable(tap.as_raw_fd(), READY_NET)
                .map_err(|source| VmmError::Host {
                    op: "watching the tap interface",
                    source,
                })?;
            devices.net = Some(NetDevice::new(tap, config.mac));
            devices.events = Some(events);
        }
        if let Some(config) = disk {
            let block =
                BlockDevice::open(&config.path, config.readonly).map_err(|e| VmmError::Host {
                    op: "opening the disk image (--disk)",
                    source: std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", config.path.display()),
                    ),
                })?;
            devices.block = Some(block);
        }
        Ok(devices)
    }

    /// Answers a device hypercall whose argument struct is at `addr`.
    pub fn hypercall(
        &mut self,
        memory: &GuestMemoryMmap,
        call: Hypercall,
        addr: u64,
    ) -> Result<(), AbiViolation> {
        let guest = Guest::new(memory);
        match call {
            Hypercall::NetSetup => {
                let mut args: NetSetupArgs = hypercall::read_args(memory, call, addr)?;
                args.present = 0;
                if let Some(net) = &mut self.net {
                    net.setup(&guest, &mut args)?;
                }
                hypercall::write_args(memory, call, addr, &args)
            }
            Hypercall::BlockSetup => {
                let mut args: BlockSetupArgs = hypercall::read_args(memory, call, addr)?;
                args.present = 0;
                if let Some(block) = &mut self.block {
                    block.setup(&guest, &mut args)?;
                }
                hypercall::write_args(memory, call, addr, &args)
            }
            Hypercall::Notify => {
                let mut args: NotifyArgs = hypercall::read_args(memory, call, addr)?;
                args.ready = self.service(&guest)?;
                hypercall::write_args(memory, call, addr, &args)
            }
            other => Err(AbiViolation(format!(
                "{}: not a device hypercall",
                other.name()
            ))),
        }
    }

    /// The `poll` hypercall: services the devices and, if none has work for the
    /// guest, waits up to `timeout` (`None`: until one has) for one that does.
    /// Returns the `READY_*` bits.
    pub fn poll(
        &mut self,
        memory: &GuestMemoryMmap,
        timeout: Option<Duration>,
    ) -> Result<u64, AbiViolation> {
        let guest = Guest::new(memory);
        let ready = self.service(&guest)?;
        if ready != 0 || timeout == Some(Duration::ZERO) {
            return Ok(ready);
        }
        let can_receive = match &self.net {
            Some(net) => net.can_receive(&guest)?,
            None => false,
        };
        match (&mut self.events, can_receive) {
            (Some(events), true) => {
                let woken = events
                    .wait(timeout)
                    .map_err(|e| AbiViolation(format!("poll: host wait failed: {e}")))?;
                if woken == 0 {
                    return Ok(0);
                }
                self.service(&guest)
            }
            _ => {
                crate::timer::wait(timeout)
                    .map_err(|e| AbiViolation(format!("poll: host wait failed: {e}")))?;
                Ok(0)
            }
        }
    }

    fn service(&mut self, guest: &Guest<'_>) -> Result<u64, AbiViolation> {
        let mut ready = 0;
        if let Some(net) = &mut self.net {
            ready |= net.service(guest)?;
        }
        if let Some(block) = &mut self.block {
            ready |= block.service(guest)?;
        }
        Ok(ready)
    }

    /// The network counters, if the VM has a NIC.
    pub fn net_stats(&self) -> Option<net::NetStats> {
        self.net.as_ref().map(NetDevice::stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_options_parse() {
        let net: NetConfig = "tap=tap0".parse().unwrap();
        assert_eq!(net.tap, "tap0");
        assert_eq!(net.mac, DEFAULT_MAC);
        let net: NetConfig = "tap=lvm1,mac=02:00:00:aa:bb:cc".parse().unwrap();
        assert_eq!(net.mac, [2, 0, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(net.to_string(), "tap=lvm1,mac=02:00:00:aa:bb:cc");
        for bad in [
            "",
            "tap=",
            "mac=02:00:00:00:00:01",
            "tap=x,mac=01:00:00:00:00:01",
            "tap=x,mac=02:00:00:00:00",
            "tap=x,mac=02:00:00:00:00:00:00",
            "tap=x,speed=10",
            "tap=waytoolonginterfacename",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disk_options_parse() {
        let disk: DiskConfig = "/tmp/a.img".parse().unwrap();
        assert!(!disk.readonly);
        let disk: DiskConfig = "/tmp/a,b.img,ro".parse().unwrap();
        assert_eq!(disk.path, PathBuf::from("/tmp/a,b.img"));
        assert!(disk.readonly);
        assert!(",ro".parse::<DiskConfig>().is_err());
        assert!("/x,sync".parse::<DiskConfig>().is_err());
    }
}
